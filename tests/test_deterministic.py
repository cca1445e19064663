"""Tier 2: deterministic mode. The same guest with the same inputs gives the same serial bytes.

The SMP guests print what depends on timing and interleaving (round-trip times read from the
generic timer, the order in which CPUs took a lock); in deterministic mode virtual time comes from
instructions retired, so those bytes repeat exactly. (A real-time control run, asserting that the
transcripts differ, depended on the host's timing and was dropped: that the comparison can fail is
shown by the guests' own output, which prints measured times.)
"""

from __future__ import annotations

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import WFI, b_back, code

RUNS = 5


def transcript(machine, path: str, cpus: int, deterministic: bool, inputs=()) -> bytes:
    m = machine(path, cpus=cpus, deterministic=deterministic)
    for at_ns, data in inputs:
        m.serial.write(data, at_ns=at_ns)
    res = m.run(timeout=120)
    assert res.ok, f"{res}: {m.serial.text[-2000:]}"
    data = m.serial.data
    m.close()  # its engines go now, not at the end of the test (each vCPU maps ~1.1 GiB)
    return data


@pytest.mark.parametrize(("name", "cpus"), [("sgi", 2), ("smp", 4), ("timer", 1)])
def test_same_guest_same_bytes(machine, guest, name, cpus):
    outs = {transcript(machine, guest(name), cpus, True) for _ in range(RUNS)}
    assert len(outs) == 1, "deterministic runs differ:\n" + "\n---\n".join(o.decode(errors="replace") for o in outs)
    assert f"PASS {name}".encode() in outs.pop()


def test_serial_input_at_virtual_times(machine, guest):
    """Input scheduled in virtual time arrives at the same point of the guest's execution every run."""
    inputs = [(2_000_000, b"hi"), (3_000_000, b"!\t"), (50_000_000, b"q")]
    outs = {transcript(machine, guest("uart_irq"), 1, True, inputs) for _ in range(3)}
    assert len(outs) == 1
    text = outs.pop().decode()
    assert "echo: h" in text and "echo: 0x09" in text and "PASS uart_irq" in text


def test_virtual_clock_jumps_over_idle_time(machine, guest):
    """A guest that sleeps in WFI for 0.5 s of virtual time does not wait for it on the host."""
    m = machine(guest("timer"), deterministic=True)
    res = m.run(timeout=60)
    assert res.ok
    st = m.stats()
    assert st["clock_ns"] >= 500_000_000  # 50 ticks at 100 Hz
    assert st["insns"] < st["clock_ns"]  # most of it was skipped, not executed


def test_the_clock_moves_on_while_scheduled_input_waits_for_room(raw_guest):
    """Serial input queued beyond the console's 1 MiB waits for room: it is due but cannot enter, so the
    idle jump cannot land on it; the virtual clock still moves on (by 1 ns a round) and reaches vmm_stop_at()."""
    with vmmpy.Machine(raw_guest(code(WFI, b_back(1))), kernel_format="raw", deterministic=True) as m:
        m.serial.write(b"x" * (1 << 20), at_ns=0)  # fills the queue: the guest never reads
        m.stop_at(500)
        assert m.run(timeout=10).reason == RunReason.STOPPED
        m.serial.write(b"y", at_ns=1000)
        m.stop_at(2000)
        res = m.run(timeout=10)
        assert res.reason == RunReason.STOPPED, res
        assert m.clock_ns == 2000


def test_a_running_guest_stops_at_the_stop_time_exactly_past_the_first_quantum(raw_guest):
    """vmm_stop_at() 2.5 quanta ahead of a spinning guest: the last round is cut to the half quantum left."""
    with vmmpy.Machine(raw_guest(code(0x91000463, b_back(1))), kernel_format="raw", deterministic=True) as m:
        m.stop_at(250_000)  # add x3, x3, #1; b .-4: never idle
        assert m.run(timeout=30).reason == RunReason.STOPPED
        assert m.clock_ns == 250_000


def test_a_round_that_ends_in_wfi_moves_the_clock_by_the_instructions_run(raw_guest):
    """Every vCPU stopped in WFI before the quantum's end: the round moves the clock by the instructions the
    longest-running vCPU retired (1 ns each), not by nothing and not by a whole quantum. vCPU 0 counts down
    from 1000 (1 + 2 * 1000 instructions) and waits with no timer armed; vCPU 1 is off. The run ends at its
    timeout with the clock where the round left it."""
    mov_x0_1000, subs_x0_1, b_ne_back_1 = 0xD2807D00, 0xF1000400, 0x54FFFFE1
    blob = code(mov_x0_1000, subs_x0_1, b_ne_back_1, WFI, b_back(1))
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", deterministic=True, cpus=2) as m:
        assert m.run(timeout=0.3).reason == RunReason.TIMEOUT
        assert m.stats()["insns"] == 2002  # the WFI too
        assert m.clock_ns == 2002


def test_a_later_round_that_ends_in_wfi_moves_the_clock_by_its_longest_vcpu(raw_guest):
    """As above with two vCPUs running past the first round: vCPU 0 starts vCPU 1 (PSCI CPU_ON), counts down from
    60,000 and waits; vCPU 1 counts down from 55,000 and waits. Each runs a whole quantum (100,000) in the first
    round, and in the second vCPU 0 (20,009 left) outlasts vCPU 1 (10,003 left): the clock ends at vCPU 0's
    120,009 instructions, whichever vCPU the round looked at last. (The nops make each vCPU's count reach the
    quantum at a block boundary, where the soft backend stops exactly.)"""
    nop = 0xD503201F
    blob = code(
        0x52800060, 0x72B88000, 0xD2800021, 0x10000122, 0xD2800003,  # CPU_ON_64(1, secondary, 0)
        0xD4000002, nop,  # hvc #0
        0xD29D4C00, 0xF1000400, 0x54FFFFE1, WFI, b_back(1),  # x0 = 60000; 1: subs x0, x0, #1; b.ne 1b; wfi
        # secondary (0x30):
        nop, 0xD29ADB00, 0xF1000400, 0x54FFFFE1, WFI, b_back(1),  # x0 = 55000; the same
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", deterministic=True, cpus=2) as m:
        assert m.run(timeout=1.0).reason == RunReason.TIMEOUT
        assert m.stats()["insns"] == 120_009 + 110_003
        assert m.clock_ns == 120_009


def test_a_round_a_block_overshoots_moves_the_clock_past_the_quantum(raw_guest):
    """As above without the nops: vCPU 0's two-instruction loop block starts one instruction before the
    quantum's end and runs whole (the soft backend stops only at block starts), so vCPU 0 retires 100,001
    instructions in the first round. The clock must cover them, or vCPU 0's CNTVCT (the clock plus what it
    ran this round) steps back by 1 ns when the next round starts: it ends at vCPU 0's 120,008 instructions,
    not 120,007."""
    blob = code(
        0x52800060, 0x72B88000, 0xD2800021, 0x10000102, 0xD2800003,  # CPU_ON_64(1, secondary at 0x2c, 0)
        0xD4000002,  # hvc #0
        0xD29D4C00, 0xF1000400, 0x54FFFFE1, WFI, b_back(1),  # x0 = 60000; 1: subs x0, x0, #1; b.ne 1b; wfi
        # secondary (0x2c):
        0xD29ADB00, 0xF1000400, 0x54FFFFE1, WFI, b_back(1),  # x0 = 55000; the same
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", deterministic=True, cpus=2) as m:
        assert m.run(timeout=1.0).reason == RunReason.TIMEOUT
        assert m.stats()["insns"] == 120_008 + 110_002
        assert m.clock_ns == 120_008


@pytest.mark.parametrize("resume", ["run", "clock_advance", "snapshot"])
def test_a_vcpus_lead_past_the_quantum_survives_the_end_of_a_run(raw_guest, tmp_path, resume):
    """One vCPU counts down from 60,000 in two-instruction blocks that start at odd counts, so the block
    at 99,999 runs to 100,001: at vmm_stop_at(100_000) the vCPU's clock is 1 ns ahead of the VM's. That
    lead must outlast the run, a vmm_clock_advance(0) and a snapshot (it is the vCPU's quantum_start):
    dropped, the vCPU's CNTVCT steps back and the clock ends at 120,000, not at its 120,002 instructions.
    The next stop, 1 ns on, gives a quantum the lead already covers: the round passes without running
    the vCPU (a loop that waited for it to run never moved the clock)."""
    blob = code(0xD29D4C00, 0xF1000400, 0x54FFFFE1, WFI, b_back(1))  # x0 = 60000; subs; b.ne; wfi
    m = vmmpy.Machine(raw_guest(blob), kernel_format="raw", deterministic=True)
    try:
        m.stop_at(100_000)
        assert m.run(timeout=10).reason == RunReason.STOPPED
        assert (m.clock_ns, m.stats()["insns"]) == (100_000, 100_001)
        if resume == "clock_advance":
            m.clock_advance(0)
        elif resume == "snapshot":
            m.snapshot(tmp_path / "lead.snap")
            m.close()
            m = vmmpy.Machine.restore(tmp_path / "lead.snap")
        m.stop_at(100_001)
        assert m.run(timeout=10).reason == RunReason.STOPPED
        assert m.clock_ns == 100_001
        assert m.run(timeout=1.0).reason == RunReason.TIMEOUT
        assert m.clock_ns == 120_002
    finally:
        m.close()
