"""The run loop's clock thread (run.c clock_main): it ends a run at its timeout and, in real time, kicks a vCPU
out of guest code when a timer deadline passes (the loop then raises the timer's interrupt). The guests here
spin with no exit of their own, so only that kick delivers a timer interrupt; the timer is armed from the host
(vmm_sysreg_write) at a chosen host time, or re-armed by the guest's own IRQ handler."""

from __future__ import annotations

import time

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import SYSTEM_OFF, b_back, code, enable_ppi

NS_PER_TICK = 16  # 62.5 MHz
ENABLE = 1
PPI_VIRT = 27

_ADR_X0_VECTORS = 0x10004000  # adr x0, .+0x800
_MSR_VBAR_X0 = 0xD518C000  # msr vbar_el1, x0
_MSR_DAIFCLR_I = 0xD50342FF  # msr daifclr, #2
_ADD_X5_1 = 0x910004A5  # add x5, x5, #1
SPIN = (_ADD_X5_1, b_back(1))


def _with_vectors(body: bytes, irq: bytes) -> bytes:
    """`body` at RAM_BASE, its vector table at +0x800 (VBAR set by the body): `irq` is the IRQ vector (current EL,
    SP_ELx)."""
    return body.ljust(0x800 + 0x280, b"\0") + irq


# Unmasks IRQs and spins; its IRQ vector powers off. Armed from the host (CNTV, PPI 27 enabled), it powers off
# only if the clock thread kicks it out of guest code at the timer's deadline before the run's timeout.
IRQ_OFF = _with_vectors(code(_ADR_X0_VECTORS, _MSR_VBAR_X0, _MSR_DAIFCLR_I, *SPIN), code(*SYSTEM_OFF, 0x14000000))

# Arms CNTV 2812 ticks (45 us: inside the clock thread's 50 us polling window) ahead and spins with IRQs unmasked;
# its IRQ handler counts in x3 and re-arms CNTV 45 us ahead, 1000 times, then powers off. Every tick is a deadline
# the clock thread finds less than 50 us away, and only its kick (at or after the deadline) delivers it.
#   start: adr x0, vectors; msr vbar_el1, x0; mrs x1, cntvct_el0; add x0, x1, #2812; msr cntv_cval_el0, x0
#          mov x0, #1; msr cntv_ctl_el0, x0; msr daifclr, #2; 1: add x5, x5, #1; b 1b
#   irq:   add x3, x3, #1; cmp x3, #1000; b.eq 2f; mrs x1, cntvct_el0; add x0, x1, #2812; msr cntv_cval_el0, x0
#          eret; 2: SYSTEM_OFF; b .
NEAR_TICKS = 1000
REARM_NEAR = _with_vectors(
    code(0x10004000, 0xD518C000, 0xD53BE041, 0x912BF020, 0xD51BE340, 0xD2800020, 0xD51BE320, 0xD50342FF, *SPIN),
    code(0x91000463, 0xF10FA07F, 0x540000A0, 0xD53BE041, 0x912BF020, 0xD51BE340, 0xD69F03E0, *SYSTEM_OFF, 0x14000000),
)  # fmt: skip


def _clock_base_ns(m: vmmpy.Machine) -> int:
    """Real time: the guest clock is CLOCK_MONOTONIC (Python's time.monotonic_ns) less the VM's base."""
    before = time.monotonic_ns()
    clock = m.clock_ns
    after = time.monotonic_ns()
    return (before + after) // 2 - clock


def _arm_cntv_at(m: vmmpy.Machine, host_ns: int, cpu: int = 0) -> None:
    """Arm vCPU `cpu`'s virtual timer to fire at host time `host_ns` (CLOCK_MONOTONIC)."""
    ticks = -(-(host_ns - _clock_base_ns(m)) // NS_PER_TICK)
    m.sysreg_write("CNTV_CVAL_EL0", ticks, cpu=cpu)
    m.sysreg_write("CNTV_CTL_EL0", ENABLE, cpu=cpu)


# (timeout's phase within its second, the deadline's offset from the timeout in s, the least timeout in s, result)
TIMEOUT_VS_DEADLINE = [
    # 6 s later but earlier in its second (x.7 timeout, x+6.1 deadline): the timeout comes first
    pytest.param(0.7, 5.4, 0.3, RunReason.TIMEOUT, id="deadline-seconds-later-smaller-nsec"),
    # later in the same second (x.05, x.95)
    pytest.param(0.05, 0.9, 0.3, RunReason.TIMEOUT, id="deadline-later-same-second"),
    # earlier in the same second (x.8, x.3): the clock thread wakes for the deadline and kicks
    pytest.param(0.8, -0.5, 0.8, RunReason.POWEROFF, id="deadline-earlier-same-second"),
    # in the second before, later in it (x.2, x-1.7)
    pytest.param(0.2, -0.5, 0.8, RunReason.POWEROFF, id="deadline-second-before-larger-nsec"),
]


@pytest.mark.parametrize(("phase", "offset", "least", "reason"), TIMEOUT_VS_DEADLINE)
def test_the_clock_thread_wakes_for_whichever_of_deadline_and_timeout_comes_first(
    raw_guest, phase, offset, least, reason
):
    """One vCPU on one thread spins with IRQs unmasked; its virtual timer, armed from the host, powers it off
    only through the clock thread's kick at the deadline. The clock thread sleeps until the earlier of the
    run's timeout and that deadline, compared as host timespecs (run.c ts_before: seconds, then nanoseconds
    within the same second). The timeout is chosen to fall at `phase` within its host second, and the
    deadline `offset` s from it, so each case puts the two in a known order of seconds and nanoseconds: a
    deadline after the timeout must not be taken for an earlier one (the run would go on until the deadline,
    whose kick raises the timer's interrupt, and end then: timed out, or in the guest's power-off), and one
    before it must not be missed (the run would time out). Margins are 0.2 s or more on either side; the line
    is read back at once after a timeout, 0.9 s or more before the deadline."""
    with vmmpy.Machine(raw_guest(IRQ_OFF), kernel_format="raw", vcpu_threads="one") as m:
        enable_ppi(m, PPI_VIRT)
        t0 = time.monotonic()
        timeout = least + (phase - (t0 + least)) % 1.0
        _arm_cntv_at(m, int((t0 + timeout + offset) * 1e9))
        res = m.run(timeout=timeout)
        assert res.reason == reason, (res, timeout)
        if reason == RunReason.TIMEOUT:  # ended before the deadline: no kick for it raised the timer's PPI
            assert not m.irq_line(0), timeout


@pytest.mark.parametrize(
    "kwargs", [{"vcpu_threads": "one"}, {"backend": "soft-threaded"}], ids=["one-thread", "thread"]
)
def test_a_deadline_less_than_50us_away_is_polled_for_and_kicked_at_or_after_it(raw_guest, kwargs):
    """REARM_NEAR takes 1000 timer interrupts, each re-armed 45 us ahead while it spins: the clock thread finds
    each deadline inside its 50 us polling window and spins until the clock reaches it before it kicks. A kick
    that came before the deadline would find the timer not yet fired, and on one thread (which kicks once per
    deadline) that tick would never come: the guest would spin until the timeout."""
    with vmmpy.Machine(raw_guest(REARM_NEAR), kernel_format="raw", **kwargs) as m:
        enable_ppi(m, PPI_VIRT)
        res = m.run(timeout=60)
        assert res.reason == RunReason.POWEROFF, res
        st = m.stats()
        assert st["irqs"] == 0  # the handler takes them without acknowledging: the timer's level drops
        assert_polled_once_per_deadline(st)


def assert_polled_once_per_deadline(st: dict, deadlines: int = NEAR_TICKS) -> None:
    """The clock thread finds each of REARM_NEAR's deadlines less than 50 us away while the vCPU executes guest
    code, so it spins to it (vmm_stats.clock_polls), once: after its kick the deadline counts as served. Waking
    late (a loaded host) still polls, for a deadline already passed; the vCPU serves its timer only after the
    kick (it has no exit of its own). So every deadline is polled for: half is a margin, not a measured loss. A
    clock thread that slept instead (it took the vCPU for idle, or for asleep) polls for none; one that kicked
    a served deadline again polls for it again and again until the vCPU's thread re-arms it."""
    assert NEAR_TICKS // 2 <= st["clock_polls"] <= deadlines + 10, st


# REARM_NEAR after 20 WFIs (IRQs still masked), each for a deadline 45 us (2812 ticks) or 3.1 ms (0x30000 ticks)
# away: on a vCPU thread the first are spun to inside vmm__run_vcpu_wait (until the halt-poll window has grown past
# 45 us: its hits then leave `awake` as the last spin set it), the second slept for. 20, not 1: the clock thread's
# kick for a 45 us deadline may meet the WFI itself, which then does not wait.
#   mov x4, #20; 1: mrs x1, cntvct_el0; add x0, x1, #2812 | add x0, x1, #0x30, lsl #12; msr cntv_cval_el0, x0
#   mov x0, #1; msr cntv_ctl_el0, x0; wfi; subs x4, x4, #1; b.ne 1b; then REARM_NEAR's start from its mrs
WFI_ROUNDS = 20


def _wfi_first(add_insn: int) -> bytes:
    rounds = (0xD2800284, 0xD53BE041, add_insn, 0xD51BE340, 0xD2800020, 0xD51BE320, 0xD503207F, 0xF1000484, 0x54FFFF21)
    return _with_vectors(
        code(0x10004000, 0xD518C000, *rounds, 0xD53BE041, 0x912BF020, 0xD51BE340, 0xD2800020, 0xD51BE320, 0xD50342FF,
             *SPIN),
        REARM_NEAR[0x800 + 0x280 :],
    )  # fmt: skip


@pytest.mark.parametrize("add_insn", [0x912BF020, 0x9140C020], ids=["spun-to", "slept"])
@pytest.mark.parametrize(
    "kwargs", [{"vcpu_threads": "one"}, {"backend": "soft-threaded"}], ids=["one-thread", "thread"]
)
def test_a_vcpu_that_waited_in_wfi_is_awake_again_for_the_clock_thread(raw_guest, kwargs, add_insn):
    """REARM_NEAR after 20 WFIs, for deadlines spun to (45 us away) or slept for (3.1 ms). On a vCPU thread
    the wait clears the vCPU's `awake` while it may sleep, and sets it again before the thread goes back to
    guest code (run_wait.c): the clock thread polls for the near deadlines of awake vCPUs only, so a vCPU left
    marked asleep would have every later deadline slept for (clock_polls 0) and kicked a futex wake-up late."""
    with vmmpy.Machine(raw_guest(_wfi_first(add_insn)), kernel_format="raw", **kwargs) as m:
        enable_ppi(m, PPI_VIRT)
        res = m.run(timeout=60)
        assert res.reason == RunReason.POWEROFF, res
        st = m.stats()
        assert 1 <= st["wfi_exits"] <= WFI_ROUNDS, st  # fewer when the clock thread's kick meets the WFI
        # a WFI's 45 us deadline is polled for too while the vCPU is still on its way into the WFI
        assert_polled_once_per_deadline(st, NEAR_TICKS + WFI_ROUNDS)


def test_a_vcpus_deadline_kicks_only_that_vcpu(raw_guest):
    """Two vCPUs on their own threads: vCPU 0 spins (no exit of its own); vCPU 1 stays off with its virtual
    timer armed from the host 0.5 s into a 2 s run. The clock thread watches each vCPU's own deadline and kicks
    only the vCPU whose deadline passed (run.c kick_expired): vCPU 0 enters guest code once, and only the
    timeout ends that entry. Kicking every vCPU at any deadline would end it early (a second entry)."""
    with vmmpy.Machine(raw_guest(code(*SPIN)), kernel_format="raw", cpus=2) as m:
        _arm_cntv_at(m, time.monotonic_ns() + 500_000_000, cpu=1)
        res = m.run(timeout=2)
        assert res.reason == RunReason.TIMEOUT, res
        assert m.sysreg_read("CNTV_CTL_EL0", cpu=1) & 4  # ISTATUS: the deadline passed during the run
        assert m.stats()["vcpu_runs"] == 1


def test_a_stop_at_a_virtual_time_leaves_no_kick_for_the_next_run(raw_guest):
    """Deterministic, one vCPU spinning: vmm_stop_at ends the run at a round boundary without kicking anyone
    (run.c end_run kicks only with vCPU threads), so the next run's first entry into the guest runs guest
    code: two equal stretches of virtual time take the same number of entries."""
    with vmmpy.Machine(raw_guest(code(*SPIN)), kernel_format="raw", deterministic=True) as m:
        m.stop_at(1_000_000)
        assert m.run(timeout=None).reason == RunReason.STOPPED
        first = m.stats()["vcpu_runs"]
        m.stop_at(2_000_000)
        assert m.run(timeout=None).reason == RunReason.STOPPED
        assert m.clock_ns == 2_000_000
        assert m.stats()["vcpu_runs"] - first == first


# Arms CNTV 0x30000 ticks (3.1 ms) ahead, then moves it 2^30 ticks (17 s) ahead, and spins (IRQs masked): timer
# register writes are served inside the vCPU (no exit), and moving a deadline later leaves the one-thread loop's
# earliest deadline (vm->next_deadline_ns) at the first one until the next timer update.
#   mrs x1, cntvct_el0; add x0, x1, #0x30, lsl #12; msr cntv_cval_el0, x0; mov x0, #1; msr cntv_ctl_el0, x0
#   mov x2, #0x40000000; add x0, x1, x2; msr cntv_cval_el0, x0; 1: add x5, x5, #1; b 1b
MOVED_LATER = code(
    0xD53BE041, 0x9140C020, 0xD51BE340, 0xD2800020, 0xD51BE320, 0xD2A80002, 0x8B020020, 0xD51BE340, *SPIN
)


def test_a_deadline_moved_later_does_not_hold_off_the_timeout(raw_guest):
    """One vCPU on one thread moves its timer deadline from 3 ms to 17 s ahead and spins. The clock thread wakes
    for the stale 3 ms deadline, kicks and marks it served (one kick per deadline, run.c `fired`): the loop's
    timer update then finds the 17 s one, and the 0.5 s timeout ends the run. Kicking only vCPUs whose own
    deadline passed there, without marking it served, would find nothing to kick and poll the stale deadline
    again and again, never looking at the timeout: the run would end only when the 17 s deadline passed."""
    with vmmpy.Machine(raw_guest(MOVED_LATER), kernel_format="raw", vcpu_threads="one") as m:
        start = time.monotonic()
        res = m.run(timeout=0.5)
        elapsed = time.monotonic() - start
        assert res.reason == RunReason.TIMEOUT, res
        assert elapsed < 10, elapsed
        assert not m.sysreg_read("CNTV_CTL_EL0") & 4  # the 17 s deadline is still ahead


def test_a_restored_timer_reaches_a_spinning_vcpu_on_its_own_thread(raw_guest, tmp_path):
    """IRQ_OFF on a vCPU thread, its virtual timer armed from the host 50 ms ahead, saved to a snapshot and
    restored. A restore loads the timer's registers as they were, without working out the vCPU's deadline (a
    register write would): the vCPU's thread does that before it first enters the guest (run.c
    vcpu_thread_main), so the clock thread knows the deadline and kicks the spinning vCPU there, and the guest
    powers off. Unknown, no kick would come (the vCPU has no exit of its own) and the run would time out."""
    snap = tmp_path / "armed.snap"
    with vmmpy.Machine(raw_guest(IRQ_OFF), kernel_format="raw", backend="soft-threaded") as m:
        enable_ppi(m, PPI_VIRT)
        assert m.run(timeout=0.01).reason == RunReason.TIMEOUT  # spinning with IRQs unmasked
        _arm_cntv_at(m, time.monotonic_ns() + 50_000_000)
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res
