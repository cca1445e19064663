"""Tier 1: the deterministic loop's rounds as the guest clock shows them (run.c run_loop_deterministic,
close_partial_round, round_length).

One vCPU that never waits moves the deterministic clock by exactly its instructions: 1 ns each, whole quanta
while the run goes on, and the part of the last round it ran when the run ends partway (a timeout, a stop).
A clock that lost or invented time at that cut would show at the next run as a CNTVCT that went back or jumped.
"""

from __future__ import annotations

import re

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import WFI, b_back, code


@pytest.mark.parametrize("timeout", [0.2, 0.5])
def test_one_spinning_vcpu_clock_is_its_instruction_count_after_a_timeout(machine, guest, timeout):
    m = machine(guest("spin"), deterministic=True)
    res = m.run(timeout=timeout)
    assert res.reason == RunReason.TIMEOUT, res
    st = m.stats()
    assert st["insns"] > 100_000, st  # more than one quantum: whole rounds and a partial one
    assert st["clock_ns"] == st["insns"] == m.clock_ns, st


def test_the_clock_goes_on_from_the_cut_at_the_next_run(machine, guest):
    m = machine(guest("spin"), deterministic=True)
    m.start()
    m.serial.expect(r"spin: 1 cpus spinning", timeout=30)
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    first = m.stats()
    assert first["clock_ns"] == first["insns"], first
    res = m.run(timeout=0.2)
    assert res.reason == RunReason.TIMEOUT, res
    st = m.stats()
    assert st["insns"] > first["insns"] and st["clock_ns"] == st["insns"], (first, st)


def test_a_run_stopped_at_a_virtual_time_reports_status_0(machine, guest):
    """vmm_run_result.exit_status is the guest's status for POWEROFF and 0 for every other ending: here a
    vmm_stop_at() time reached mid-round, a host stop and a timeout."""
    m = machine(guest("spin"), deterministic=True)
    m.stop_at(250_000)  # 2.5 quanta: the last round is cut
    res = m.run(timeout=30)
    assert (res.reason, res.exit_status) == (RunReason.STOPPED, 0), res
    assert m.clock_ns == 250_000
    res = m.run(timeout=0.05)
    assert (res.reason, res.exit_status) == (RunReason.TIMEOUT, 0), res


def test_an_idle_guest_with_nothing_scheduled_keeps_its_clock_across_runs(machine, guest):
    """idle_notick waits in WFI with no timer: in deterministic mode nothing is due, so the clock stands
    still however long the host waits, and a run cut while everyone waits adds no time either."""
    m = machine(guest("idle_notick"), deterministic=True)
    m.start()
    m.serial.expect(r"idle: ready, no timer", timeout=30)
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    # the stop may land between the UART write and the WFI: one more run lets the guest reach its WFI
    assert m.run(timeout=0.2).reason == RunReason.TIMEOUT
    at = m.clock_ns
    for _ in range(3):
        res = m.run(timeout=0.05)
        assert res.reason == RunReason.TIMEOUT, res
        assert m.clock_ns == at


def test_stop_times_closer_than_a_vcpus_lead_are_reached_exactly(machine, guest):
    """A spinning vCPU's last block runs a few instructions past a vmm_stop_at() cut (its lead: 2 here). Stop
    times 1, 1, 2, 3, 5, 8 and 100 ns on make rounds shorter than that lead: the vCPU has run them already, the
    round passes on its lead alone (run.c: `ran |= ... >= quantum`), and each run stops exactly at its time."""
    m = machine(guest("spin"), deterministic=True)
    m.stop_at(250_000)
    assert m.run(timeout=30).reason == RunReason.STOPPED
    assert m.stats()["insns"] > m.clock_ns == 250_000  # the lead this test is about
    for step in (1, 1, 2, 3, 5, 8, 100):
        at = m.clock_ns + step
        m.stop_at(at)
        res = m.run(timeout=10)
        assert res.reason == RunReason.STOPPED, (step, res)
        assert m.clock_ns == at, step


@pytest.mark.parametrize("stops", [(501, 1001), (3, 4, 7)])
def test_a_clock_stuck_on_due_input_moves_by_1_ns_a_round_to_any_stop_time(raw_guest, stops):
    """Serial input due but unable to enter (the console's queue is full, the guest never reads) leaves the idle
    jump nowhere to land; the clock then moves 1 ns a round, so every stop time is reached exactly, odd ones too."""
    with vmmpy.Machine(raw_guest(code(WFI, b_back(1))), kernel_format="raw", deterministic=True) as m:
        m.serial.write(b"x" * (1 << 20), at_ns=0)
        for at in stops:
            m.stop_at(at)
            res = m.run(timeout=10)
            assert res.reason == RunReason.STOPPED, (at, res)
            assert m.clock_ns == at


def test_rounds_are_as_long_as_a_spinning_secondarys_while_cpu_0_waits(machine, guest):
    """spin_idle0 on 2 vCPUs: CPU 0 waits in WFI for ever and CPU 1 spins, so every round is CPU 1's quantum
    (round_length: a runnable vCPU makes the round whole, however short the idle one's was). A stop time
    several quanta and a part ahead is reached exactly."""
    m = machine(guest("spin_idle0"), cpus=2, deterministic=True)
    m.stop_at(1_234_567)
    res = m.run(timeout=20)
    assert res.reason == RunReason.STOPPED, res
    assert m.clock_ns == 1_234_567


def test_a_cut_mid_round_moves_the_clock_as_far_as_the_vcpu_that_ran_longest(machine, guest):
    """spin_idle0 on 3 vCPUs: CPU 0 waits, CPUs 1 and 2 spin in turn. A timeout cuts a round partway, after
    CPU 1 ran its whole quantum and while CPU 2 is in its own: close_partial_round moves the clock to CPU 1's
    point (the longest), so every vCPU's counter reads the same at the cut. Moved less far, or by another
    vCPU's instructions, CPU 1 would keep a lead and read ahead of the others."""
    m = machine(guest("spin_idle0"), cpus=3, deterministic=True)
    m.start()
    m.serial.expect(r"spin_idle0: 3 cpus spinning, cpu 0 waits", timeout=30)
    assert m.stop().reason == RunReason.STOPPED
    freq = m.sysreg_read("CNTFRQ_EL0")
    for timeout in (0.1, 0.2, 0.3):
        res = m.run(timeout=timeout)
        assert res.reason == RunReason.TIMEOUT, res
        counts = [m.sysreg_read("CNTVCT_EL0", cpu=c) for c in range(3)]
        assert counts == [m.clock_ns * freq // 10**9] * 3, (counts, m.clock_ns)


def test_a_stop_while_parked_at_a_frame_closes_the_round_at_the_vcpus_point(machine, guest):
    """input_echo parked at its first frame (deterministic: the loop stands still at a round boundary; the vCPU's
    last block ran a few instructions past it, a lead). A host stop then ends the run before anything runs in
    the new round: the partial round it closes moves the clock by that lead and no more, so the one vCPU's
    clock is its instruction count, as after any cut, and the next run goes on from there."""
    m = machine(guest("input_echo"), gpu=True, gpu_size=(320, 240), input=True, deterministic=True)
    m.screen.wait_frame(1, pause=True)
    assert m.paused
    at, insns = m.clock_ns, m.stats()["insns"]
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    assert m.stats()["insns"] == insns and m.clock_ns == insns >= at, (at, insns, m.clock_ns)


QUANTUM_TICKS = 100_000 // 16  # VMM_QUANTUM_INSNS (ns) in 62.5 MHz ticks


@pytest.mark.parametrize("cpus", [2, 3])
def test_a_waiting_cpu_0_takes_its_timer_in_the_first_round_past_the_deadline(machine, guest, cpus):
    """spin_timer0: CPU 0 waits in WFI for its virtual timer 20 times, 1.007 ms apart (the deadline's phase in
    the 100 us quantum moves 7 us a tick, so every phase is met), while the secondaries spin. An idle vCPU's clock
    stands at the round's start, so its deadline is seen at the first round boundary past it: the update at the
    top of each round raises CPU 0's timer, and CPU 0, first in the round, takes it there, less than a quantum
    after the deadline (measured: 135 to 5,948 ticks of 6,250). Seen only by a secondary's update during its
    turn, the interrupt would wait for the next round: a quantum later than that, at every phase."""
    m = machine(guest("spin_timer0"), cpus=cpus, deterministic=True)
    res = m.run(timeout=60)
    assert res.ok, (res, m.serial.text)
    found = re.search(rf"spin_timer0: {cpus} cpus, latest (\d+) ticks", m.serial.text)
    assert found, m.serial.text
    assert 0 < int(found[1]) < QUANTUM_TICKS + 100, found[0]
