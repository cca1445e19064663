"""Tier 1: the generic timer (Arm ARM D11) driven register by register on a virtual clock.

Deterministic VMs have a clock that only moves when told (``clock_advance``), so every expectation
here is exact; no test sleeps.
"""

from __future__ import annotations

import logging
import re
import time

import pytest

import vmmpy
from tests.conftest import B_SELF, HVC0, SYSTEM_OFF, WFI, b_back, code, enable_ppi, timer_irq_spinner
from vmmpy import RunReason

NS_PER_TICK = 16  # 62.5 MHz
ENABLE, IMASK, ISTATUS = 1, 2, 4
GICD, GICR = 0x0800_0000, 0x080A_0000
PPI_VIRT, PPI_PHYS = 27, 30


@pytest.fixture
def vm():
    m = vmmpy.Machine(deterministic=True, cpus=2)
    yield m
    m.close()


def test_frequency_is_62_5_mhz(vm):
    assert vm.sysreg_read("CNTFRQ_EL0") == 62_500_000
    vm.sysreg_write("CNTFRQ_EL0", 1)  # writable only at the highest EL: ignored
    assert vm.sysreg_read("CNTFRQ_EL0") == 62_500_000


def test_counters_follow_the_virtual_clock(vm):
    assert vm.clock_ns == 0
    assert vm.sysreg_read("CNTVCT_EL0") == 0
    vm.clock_advance(16 * 1000 + 15)
    assert vm.clock_ns == 16_015
    assert vm.sysreg_read("CNTVCT_EL0") == 1000
    assert vm.sysreg_read("CNTPCT_EL0") == 1000  # CNTVOFF is 0
    assert vm.sysreg_read("CNTVCT_EL0", cpu=1) == 1000  # one system counter for all CPUs


def test_deterministic_counter_counts_the_instructions_run(guest):
    """CNTVCT read 2*K instructions apart moves by exactly 2*K ns (1 ns an instruction, 16 ns a tick),
    within a quantum and across quantum boundaries (100,000 instructions each), in a running guest."""
    with vmmpy.Machine(guest("clockstep"), deterministic=True) as m:
        assert m.run(timeout=60).ok
        got = dict(re.findall(r"clockstep k=(\d+) ticks=(\d+)", m.serial.text))
    assert {int(k): int(t) for k, t in got.items()} == {k: 2 * k // 16 for k in (8, 800, 8000, 80000, 800000, 8000008)}


def test_clock_cannot_move_in_real_time_mode():
    with vmmpy.Machine() as m:
        with pytest.raises(vmmpy.StateError, match="the clock can only be moved in deterministic mode"):
            m.clock_advance(1)
        a = m.sysreg_read("CNTVCT_EL0")
        t0 = time.monotonic()
        while m.sysreg_read("CNTVCT_EL0") == a:  # real time: the counter moves with the host's clock
            assert time.monotonic() - t0 < 5, "CNTVCT_EL0 is frozen in real-time mode"
        assert m.sysreg_read("CNTVCT_EL0") > a


@pytest.mark.parametrize("t", ["CNTV", "CNTP"])
def test_tval_is_signed_distance_to_cval(vm, t):
    vm.clock_advance(100 * NS_PER_TICK)
    vm.sysreg_write(f"{t}_TVAL_EL0", 50)
    assert vm.sysreg_read(f"{t}_CVAL_EL0") == 150
    vm.clock_advance(20 * NS_PER_TICK)
    assert vm.sysreg_read(f"{t}_TVAL_EL0") == 30
    vm.clock_advance(40 * NS_PER_TICK)
    assert vm.sysreg_read(f"{t}_TVAL_EL0") == (-10) & 0xFFFF_FFFF
    # a negative TVAL write sets CVAL in the past
    vm.sysreg_write(f"{t}_TVAL_EL0", (-5) & 0xFFFF_FFFF)
    assert vm.sysreg_read(f"{t}_CVAL_EL0") == 160 - 5


@pytest.mark.parametrize("t", ["CNTV", "CNTP"])
def test_reading_tval_leaves_a_far_cval_alone(vm, t):
    """A TVAL read is a read: with CVAL 2^31 + 5 ticks ahead, TVAL reads 0x80000005 (the low 32 bits of the
    distance, D11.2.4) and CVAL stays where it was (written back through TVAL's sign extension it would land
    2^31 ticks in the past and fire)."""
    vm.sysreg_write(f"{t}_CVAL_EL0", (1 << 31) + 5)
    assert vm.sysreg_read(f"{t}_TVAL_EL0") == 0x8000_0005
    assert vm.sysreg_read(f"{t}_CVAL_EL0") == (1 << 31) + 5
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE)
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE  # not fired


def test_clock_advance_returns_0():
    """The C API's vmm_clock_advance returns 0 on success (Machine.clock_advance raises only for a negative
    code, so it would not notice another value)."""
    from vmmpy._ffi import lib

    with vmmpy.Machine(deterministic=True) as m:
        assert lib.vmm_clock_advance(m._vm, 1600) == 0
        assert m.clock_ns == 1600


def test_the_clock_does_not_move_while_the_vm_runs(guest):
    """vmm_clock_advance on a deterministic VM that is running is refused (Busy, naming why), and the
    clock stays where the run has it; stopped, the same call moves it."""
    with vmmpy.Machine(guest("idle_notick"), deterministic=True) as m:
        m.start(timeout=30)
        try:
            m.serial.expect(r"idle: ready, no timer", timeout=30)
            with pytest.raises(vmmpy.errors.Busy, match="the clock cannot be moved while the VM runs$"):
                m.clock_advance(1 << 40)
        finally:
            m.stop()
        assert m.clock_ns < 1 << 40
        before = m.clock_ns
        m.clock_advance(1600)
        assert m.clock_ns == before + 1600


def test_the_clock_calls_refuse_a_null_vm():
    """vmm_clock_ns(NULL) is 0 (the time of no VM), and vmm_clock_advance(NULL, n) is VMM_EINVAL."""
    from vmmpy._ffi import ffi, lib

    assert lib.vmm_clock_ns(ffi.NULL) == 0
    assert lib.vmm_clock_advance(ffi.NULL, 1) == lib.VMM_EINVAL


@pytest.mark.parametrize("op1", [0, 1, 2])
def test_timer_encodings_with_another_op1_are_not_timer_registers(vm, op1):
    """The EL0 timer registers are op0 3, op1 3, CRn 14 (CNTP_CTL_EL0 is S3_3_C14_C2_1): the same CRn, CRm and
    op2 with op1 0-2 name no register, so an access is refused (an UNDEFINED one for a guest), not served as
    CNTP_CTL_EL0."""
    vm.sysreg_write("CNTP_CTL_EL0", ENABLE)
    with pytest.raises(
        vmmpy.errors.NotSupported, match=rf"^S3_{op1}_C14_C2_1 is not a system register libvmm emulates$"
    ):
        vm.sysreg_read(3 << 14 | op1 << 11 | 14 << 7 | 2 << 3 | 1)


@pytest.mark.parametrize("t", ["CNTV", "CNTP"])
def test_istatus_enable_and_imask(vm, t):
    vm.sysreg_write(f"{t}_CVAL_EL0", 10)
    assert vm.sysreg_read(f"{t}_CTL_EL0") == 0  # disabled: no ISTATUS
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE | ISTATUS)  # ISTATUS is read-only
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE
    vm.clock_advance(10 * NS_PER_TICK - 1)
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE
    vm.clock_advance(1)
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE | ISTATUS
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE | IMASK)
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE | IMASK | ISTATUS
    vm.sysreg_write(f"{t}_CVAL_EL0", 1000)  # moving CVAL ahead clears the condition
    assert vm.sysreg_read(f"{t}_CTL_EL0") == ENABLE | IMASK


@pytest.mark.parametrize(("t", "ppi"), [("CNTV", PPI_VIRT), ("CNTP", PPI_PHYS)])
def test_timer_raises_its_ppi_level_sensitive(vm, t, ppi):
    enable_ppi(vm, ppi)
    vm.sysreg_write(f"{t}_CVAL_EL0", 100)
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE)
    assert not vm.irq_line(0)
    vm.clock_advance(100 * NS_PER_TICK)
    assert vm.irq_line(0)
    assert not vm.irq_line(1)  # the PPI is cpu 0's own
    assert vm.sysreg_read("ICC_IAR1_EL1") == ppi
    vm.sysreg_write("ICC_EOIR1_EL1", ppi)
    assert vm.irq_line(0)  # level: still asserted while the condition holds
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE | IMASK)  # masking drops the output
    assert not vm.irq_line(0)
    vm.sysreg_write(f"{t}_CTL_EL0", ENABLE)
    assert vm.irq_line(0)
    vm.sysreg_write(f"{t}_TVAL_EL0", 1000)  # re-arming drops it
    assert not vm.irq_line(0)
    vm.sysreg_write(f"{t}_CTL_EL0", 0)
    vm.clock_advance(2000 * NS_PER_TICK)
    assert not vm.irq_line(0)  # disabled timers never fire


def test_timers_are_per_cpu(vm):
    enable_ppi(vm, PPI_VIRT, cpu=0)
    enable_ppi(vm, PPI_VIRT, cpu=1)
    vm.sysreg_write("CNTV_CVAL_EL0", 10, cpu=0)
    vm.sysreg_write("CNTV_CTL_EL0", ENABLE, cpu=0)
    vm.sysreg_write("CNTV_CVAL_EL0", 20, cpu=1)
    vm.sysreg_write("CNTV_CTL_EL0", ENABLE, cpu=1)
    assert vm.sysreg_read("CNTV_CVAL_EL0", cpu=1) == 20
    vm.clock_advance(10 * NS_PER_TICK)
    assert vm.irq_line(0) and not vm.irq_line(1)
    vm.clock_advance(10 * NS_PER_TICK)
    assert vm.irq_line(0) and vm.irq_line(1)


MOVN_X0_0 = 0x92800000  # mov x0, #-1
LSR_X0_4 = 0xD344FC00  # lsr x0, x0, #4  (x0 = 2^60 - 1: 16 ns ticks, 2^64 - 16 ns)
MOVZ_X0_1 = 0xD2800020  # movz x0, #1
MSR_CNTV_CVAL_X0 = 0xD51BE340  # msr cntv_cval_el0, x0
MSR_CNTV_CTL_X0 = 0xD51BE320  # msr cntv_ctl_el0, x0


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_far_deadline_does_not_spin_the_host(raw_guest, deterministic):
    """CNTV_CVAL just below 2^60 (issue 15 #5): the idle guest must cost ~0 CPU, not a wrapped, past deadline."""
    blob = raw_guest(code(MOVN_X0_0, LSR_X0_4, MSR_CNTV_CVAL_X0, MOVZ_X0_1, MSR_CNTV_CTL_X0, WFI, b_back(1)))
    with vmmpy.Machine(blob, kernel_format="raw", deterministic=deterministic) as m:
        cpu0 = time.process_time()
        res = m.run(timeout=1.0)
        cpu = time.process_time() - cpu0
        assert res.reason == RunReason.TIMEOUT
        assert cpu < 0.3, f"{cpu:.2f} s of host CPU in a 1 s idle run"
        assert m.sysreg_read("CNTV_CVAL_EL0") == (1 << 60) - 1


def test_deterministic_timer_interrupts_at_its_deadline(guest):
    """Deterministic mode takes a timer interrupt at its deadline, on a vCPU that spins (its instruction
    budget is cut there) and on one asleep in WFI (the clock stops at the round's last instruction and
    jumps to the deadline): guest/bench_irq.c measures at most 80 ns (5 ticks: the exception entry and
    the handler's counter read) every time, where either fault would show tens of microseconds."""
    with vmmpy.Machine(guest("bench_irq"), deterministic=True) as m:
        assert m.run(timeout=120).ok
        text = m.serial.text
    for name in ("timer_spin", "timer_wfi"):
        got = re.findall(rf"irq: {name} min (\d+) ns max (\d+) ns early (\d+)", text)
        assert len(got) == 3, (name, text[-2000:])
        assert all(int(hi) <= 80 and early == "0" for _, hi, early in got), (name, got)


def test_a_deadline_beyond_the_horizon_is_never_in_deterministic_time(raw_guest):
    """CNTV_CVAL = 2^60 - 1 (2^64 - 16 ns, past VMM_CLOCK_HORIZON_NS): no deadline at all, so a deterministic
    guest asleep in WFI waits for input or the run's end with its clock where it fell asleep. Taken as a
    deadline, the clock would jump to ~584 years (or its instruction budget wrap)."""
    blob = raw_guest(code(MOVN_X0_0, LSR_X0_4, MSR_CNTV_CVAL_X0, MOVZ_X0_1, MSR_CNTV_CTL_X0, WFI, b_back(1)))
    with vmmpy.Machine(blob, kernel_format="raw", deterministic=True) as m:
        assert m.run(timeout=0.2).reason == RunReason.TIMEOUT
        # the clock moved by the instructions run before WFI, 1 ns each (the round was cut short: only as far
        # as they went), and no further
        assert m.clock_ns == m.stats()["insns"] == 6


@pytest.mark.parametrize("past", [0, 1], ids=["at", "past"])
def test_the_last_deadline_before_the_horizon_is_taken(raw_guest, past):
    """CNTV_CVAL = 2^58 ticks is 2^62 ns, VMM_CLOCK_HORIZON_NS itself: still a deadline, so the idle
    deterministic clock jumps there; one tick more is beyond it and no deadline (the clock stays)."""
    movz_x0_2_58, movk_x0_1 = 0xD2E08000, 0xF2800020  # x0 = 1 << 58; x0 |= 1
    insns = [movz_x0_2_58, *([movk_x0_1] if past else []), MSR_CNTV_CVAL_X0, MOVZ_X0_1, MSR_CNTV_CTL_X0, WFI]
    blob = raw_guest(code(*insns, b_back(1)))
    with vmmpy.Machine(blob, kernel_format="raw", deterministic=True) as m:
        assert m.run(timeout=1.0).reason == RunReason.TIMEOUT
        assert m.sysreg_read("CNTV_CVAL_EL0") == (1 << 58) + past
        assert m.clock_ns == (m.stats()["insns"] if past else 1 << 62)


@pytest.mark.parametrize("ctl", [0, IMASK, ENABLE | IMASK], ids=["disabled", "masked-disabled", "masked"])
def test_a_timer_that_cannot_fire_is_no_deadline_in_deterministic_time(raw_guest, ctl):
    """CNTV_CVAL 65.5 us ahead (4096 ticks), but the timer disabled or masked (its output cannot rise,
    Arm ARM D11.2.4): no deadline, so a deterministic guest asleep in WFI keeps its clock where it fell
    asleep. Taken as a deadline, the idle clock would jump there."""
    movz_x0_4096, movz_x0_ctl = 0xD2820000, 0xD2800000 | ctl << 5
    blob = raw_guest(code(movz_x0_4096, MSR_CNTV_CVAL_X0, movz_x0_ctl, MSR_CNTV_CTL_X0, WFI, b_back(1)))
    with vmmpy.Machine(blob, kernel_format="raw", deterministic=True) as m:
        assert m.run(timeout=0.5).reason == RunReason.TIMEOUT
        assert m.clock_ns == m.stats()["insns"] == 5
        assert m.sysreg_read("CNTV_CTL_EL0") & 3 == ctl


def test_clock_advance_on_eight_cpus_touches_only_their_state():
    """vmm_clock_advance starts a new quantum on each of the VM's vCPUs and on nothing past them: with the most
    vCPUs (8) the vCPU array is full, and a ninth write would land in the board's device table (with 16
    virtio devices, a device pointer copied over the next: a double free when the VM is destroyed). Run in a
    child process, so that a crash fails this test only."""
    import subprocess
    import sys

    script = (
        "import vmmpy\n"
        "with vmmpy.Machine(cpus=8, deterministic=True, virtio_test_devices=16) as m:\n"
        "    m.clock_advance(1600)\n"
        "    assert [m.sysreg_read('CNTVCT_EL0', cpu=c) for c in range(8)] == [100] * 8\n"
        "print('closed')\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "closed\n", p.stderr[-2000:]


def test_a_far_timer_deadline_does_not_stretch_the_quantum(raw_guest):
    """Deterministic: a deadline cuts a vCPU's instruction budget only when it comes before the budget's end.
    A guest that arms its virtual timer 2^40 ticks ahead and spins must still stop at a vmm_stop_at() time
    exactly (the budget is the quantum shortened to the stop time; raising it to the far deadline ran the
    guest past it)."""
    blob = code(0xD2C02000, 0xD51BE340, 0xD2800020, 0xD51BE320, B_SELF)  # CVAL = 1 << 40; CTL = ENABLE; b .
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", deterministic=True) as m:
        m.stop_at(250_123)
        res = m.run(timeout=10)
        assert res.reason == RunReason.STOPPED, res
        assert m.clock_ns == 250_123
        assert m.sysreg_read("CNTVCT_EL0") == 250_123 // NS_PER_TICK


@pytest.mark.parametrize("cpus", [1, 2])
def test_clock_advance_puts_every_cpus_counter_on_the_vm_clock(raw_guest, cpus):
    """Deterministic mode: after a run that ends in the middle of a quantum (the guest spins: each vCPU's
    counter is then ahead of the VM clock by the instructions it ran in that quantum), vmm_clock_advance starts
    a new quantum on every vCPU (CPU 0 included): the VM clock moves by exactly the amount and each vCPU's
    CNTVCT reads that clock."""
    with vmmpy.Machine(raw_guest(code(B_SELF)), kernel_format="raw", cpus=cpus, deterministic=True) as m:
        assert m.run(timeout=0.1).reason == RunReason.TIMEOUT
        t0 = m.clock_ns
        assert t0 > 0
        m.clock_advance(1600)
        assert m.clock_ns == t0 + 1600
        assert [m.sysreg_read("CNTVCT_EL0", cpu=c) for c in range(cpus)] == [(t0 + 1600) // NS_PER_TICK] * cpus


@pytest.mark.parametrize("backend", ["soft", "soft-threaded"])
def test_a_sooner_deadline_kicks_a_spinning_vcpu(raw_guest, backend):
    """The clock thread sleeps until the deadline it knows; a guest that arms its timer 69 s ahead, then
    re-arms it 17 ms ahead and spins (no WFI: its own thread does not wait on the deadline) must be kicked at
    the new deadline: timer_changed wakes the clock thread for any new deadline with vCPU threads
    (soft-threaded), and for an earlier one, which it stores as the VM's next deadline, with one run loop
    (soft). Its IRQ handler powers off."""
    blob = timer_irq_spinner()
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", backend=backend) as m:
        enable_ppi(m, PPI_VIRT)
        res = m.run(timeout=10)  # the mutant that skips the wake-up times out here (the clock waits 69 s)
        assert res.reason == RunReason.POWEROFF, res


# 20 times: the virtual timer armed 2500 ticks (40 us) ahead, then WFI (IRQs masked: the line wakes it, no handler
# runs; re-arming lowers the line); then SYSTEM_OFF.
#   mov x3, #20; 1: mrs x1, cntvct_el0; add x0, x1, #2500; msr cntv_cval_el0, x0; mov x0, #1; msr cntv_ctl_el0, x0
#   wfi; subs x3, x3, #1; b.ne 1b
_NEAR_DEADLINES = code(
    0xD2800283, 0xD53BE041, 0x91271020, 0xD51BE340, 0xD2800020, 0xD51BE320, WFI, 0xF1000463, 0x54FFFF21,
    *SYSTEM_OFF,
)  # fmt: skip


def test_an_idle_vm_polls_for_a_deadline_nearer_than_a_wake_up(raw_guest):
    """One run loop, real time: with every vCPU in WFI and the next deadline less than HALT_POLL_NS (50 us) away,
    the loop polls for it instead of sleeping (run_wait.c vmm__run_wait_idle), with the VM's lock released (the
    clock thread and the run's end take it). 20 deadlines 40 us ahead: the guest wakes at each and powers off."""
    with vmmpy.Machine(raw_guest(_NEAR_DEADLINES), kernel_format="raw", backend="soft") as m:
        enable_ppi(m, PPI_VIRT)
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res


# CPU 0: vectors at +0x800, IRQs unmasked, CPU_ON(CPU 1, +0x400, 0), its virtual timer armed 2^20 ticks (16.8 ms)
# ahead, then WFI; CPU 1 (at +0x400): WFI with no timer. The IRQ vector powers off.
_TWO_CPUS_ONE_TIMER = code(
    0x10004000, 0xD518C000, 0xD50342FF,  # adr x0, .+0x800; msr vbar_el1, x0; msr daifclr, #2
    0xD2800060, 0xF2B88000, 0xD2800021, 0x10001F42, 0xD2800003, HVC0,  # x0 = CPU_ON64, x1 = 1, x2 = +0x400, x3 = 0
    0xD53BE041, 0x91440020, 0xD51BE340, 0xD2800020, 0xD51BE320,  # CNTV_CVAL = CNTVCT + 2^20; CNTV_CTL = ENABLE
    WFI, b_back(1),
)  # fmt: skip


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_vcpu_without_a_timer_does_not_hide_another_vcpus_deadline(raw_guest, deterministic):
    """The VM's next deadline is the earliest of its powered-on vCPUs' (timer.c vmm__timers_update): CPU 0 asleep
    in WFI until its timer and CPU 1 asleep with none must wake at CPU 0's deadline, wherever CPU 1 comes in the
    scan. Deterministic mode takes the interrupt at the deadline exactly (the clock jumps there, and the handler's
    first instructions run)."""
    blob = _TWO_CPUS_ONE_TIMER.ljust(0x400, b"\0") + code(WFI, b_back(1))
    blob = blob.ljust(0x800 + 0x280, b"\0") + code(*SYSTEM_OFF, B_SELF)  # IRQ, current EL with SP_ELx
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, deterministic=deterministic) as m:
        enable_ppi(m, PPI_VIRT)
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res
        assert m.stats()["hvc_exits"] == 2  # CPU_ON, SYSTEM_OFF
        if deterministic:
            deadline = (1 << 20) * NS_PER_TICK
            assert deadline < m.clock_ns < deadline + 100, m.clock_ns


def test_the_timer_drives_its_ppi_only_when_its_output_changes(vm):
    """The timer drives its PPI when its output changes (Arm ARM D11.2.4: the output is a level), not at every
    recomputation: a level driven on the same INTID by another source (vmm_irq_set) stays through updates that
    leave the timer's output as it was (clock_advance recomputes every timer, a CTL write the written one), and
    goes when the timer's output itself rises and falls."""
    enable_ppi(vm, PPI_VIRT)
    vm.irq_set(PPI_VIRT, True)
    vm.clock_advance(NS_PER_TICK)  # every timer recomputed: CNTV is disabled, its output low as before
    vm.sysreg_write("CNTV_CTL_EL0", 0)  # disabled, as it was: the output stays low
    assert vm.irq_line(0)
    vm.sysreg_write("CNTV_CTL_EL0", ENABLE)  # CVAL 0: the condition holds, the output rises
    assert vm.irq_line(0)
    vm.sysreg_write("CNTV_CTL_EL0", 0)  # and falls: the timer drives its PPI low
    assert not vm.irq_line(0)


def _mrs(rt: int, op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """MRS Xt, S<op0>_<op1>_C<crn>_C<crm>_<op2>"""
    return 0xD5300000 | (op0 - 2) << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt


def _msr(rt: int, op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """MSR S<op0>_<op1>_C<crn>_C<crm>_<op2>, Xt: the MRS encoding with L (bit 21) clear"""
    return _mrs(rt, op0, op1, crn, crm, op2) & ~(1 << 21)


def _adr(rd: int, offset: int) -> int:
    """ADR Xd, .+offset"""
    return 0x10000000 | (offset & 3) << 29 | (offset >> 2 & 0x7FFFF) << 5 | rd


def _movz(rd: int, imm16: int) -> int:
    return 0xD2800000 | imm16 << 5 | rd


CNTP_CVAL, CNTP_CTL = (3, 3, 14, 2, 2), (3, 3, 14, 2, 1)
MSR_DAIFSET_I = 0xD50342DF  # msr daifset, #2
ADD_X0_X1_2400 = 0x91258020  # add x0, x1, #2400
ADD_X0_X1_2_20 = 0x91440020  # add x0, x1, #0x100, lsl #12
SUBS_X4_1, BNE_BACK1 = 0xF1000484, 0x54FFFFE1  # subs x4, x4, #1; b.ne .-4


def test_hvf_wakes_a_vcpu_in_wfi_at_its_physical_timers_deadline(raw_guest):
    """hvf (the framework simulator): the EL1 physical timer is ours (CNTP_* trap, hvf_exits.c phys_timer), and
    with the PMU on the VM's clock its overflow is another deadline of the vCPU's, the earlier of the two kept
    (no PMU counter runs here: the timer's). A guest that arms CNTP 100 us ahead (2400 ticks of the framework's
    24 MHz counter) and waits in WFI, IRQs masked, wakes when the PPI rises there and powers off."""
    blob = code(
        MSR_DAIFSET_I, _mrs(1, 3, 3, 14, 0, 1), ADD_X0_X1_2400, _msr(0, *CNTP_CVAL), MOVZ_X0_1, _msr(0, *CNTP_CTL),
        WFI, *SYSTEM_OFF,
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", backend="hvf") as m:
        enable_ppi(m, PPI_PHYS)
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res
        assert m.sysreg_read("CNTP_CTL_EL0") == ENABLE | ISTATUS


def test_a_real_time_deadline_does_not_cut_a_vcpu_threads_budget(raw_guest):
    """Only deterministic mode counts instructions as time (1 ns each): there a deadline cuts the vCPU's
    instruction budget so that it stops at it. A vCPU thread (soft-threaded, real time) sets its budget to
    unlimited once and keeps it. The guest arms CNTP 2^20 ticks (16.8 ms) and then CNTV 2^16 ticks (1 ms) ahead,
    IRQs masked, and runs 2^24 loop iterations (2^25 instructions, tens of ms) before it powers off: the clock
    thread's kick at CNTV's deadline ends a run while CNTP's is ahead, which, taken as a budget, would be ~16 M
    instructions, after which the vCPU would stop for good."""
    add_x0_x1_2_16, movz_x4_16m = 0x91404020, 0xD2A02004  # add x0, x1, #16, lsl #12; movz x4, #0x100, lsl #16
    blob = code(
        MSR_DAIFSET_I, _mrs(1, 3, 3, 14, 0, 2), ADD_X0_X1_2_20, _msr(0, *CNTP_CVAL), MOVZ_X0_1, _msr(0, *CNTP_CTL),
        add_x0_x1_2_16, MSR_CNTV_CVAL_X0, MOVZ_X0_1, MSR_CNTV_CTL_X0, movz_x4_16m, SUBS_X4_1, BNE_BACK1, *SYSTEM_OFF,
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", backend="soft-threaded") as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res
        assert m.stats()["insns"] > 1 << 25
        assert m.sysreg_read("CNTV_CTL_EL0") == m.sysreg_read("CNTP_CTL_EL0") == ENABLE | ISTATUS


# Encodings beside the timer's that name no register the VMM or the engine has: op1 0-2 and 4-7, CRn 10 and 15,
# CRm 1, op2 3, op0 2 (the debug registers' space). Each is UNDEFINED.
_NOT_TIMER_REGS = [(3, 2, 14, 2, 1), (3, 6, 14, 2, 1), (3, 3, 10, 2, 0), (3, 3, 15, 2, 0), (3, 3, 14, 1, 0),
                   (3, 3, 14, 2, 3), (2, 3, 14, 2, 0)]  # fmt: skip


def test_encodings_beside_the_timers_are_one_unknown_register_access_each(raw_guest, caplog):
    """An EL1 MRS of an encoding one field away from the timer registers' (op0 3, op1 3, CRn 14, CRm 0, 2 or 3,
    op2 0-2) names no register, so it is UNDEFINED, and it reaches the VMM once: the engine's UNDEF is offered to
    the core (one trapped access, one "unknown system register" guest error). The soft backend's MRS hook offers
    it the timer's encodings only; one it claimed would be offered (and counted, logged) twice. The sync handler
    skips the instruction and counts it; the guest then stores the count and powers off."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    handler = code(0xD5384029, 0x91001129, 0xD5184029, 0x9100054A, 0xD69F03E0)  # ELR_EL1 += 4; x10++; eret
    body = [_adr(0, 0x800), 0xD518C000, _movz(10, 0)]  # vbar_el1 = .+0x800; x10 = 0
    body += [_mrs(0, *enc) for enc in _NOT_TIMER_REGS]
    body += [_adr(11, 0x1000 - 4 * len(body)), 0xF900016A, *SYSTEM_OFF]  # str x10, [.+0x1000]
    blob = code(*body).ljust(0x800 + 0x200, b"\0") + handler
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", backend="soft") as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res
        assert m.read_memory(m.boot_info().kernel_start + 0x1000, 8) == len(_NOT_TIMER_REGS).to_bytes(8, "little")
        assert m.stats()["sysreg_exits"] == len(_NOT_TIMER_REGS)
    for enc in _NOT_TIMER_REGS:
        name = "S{}_{}_C{}_C{}_{}".format(*enc)
        assert caplog.text.count(f"unknown system register {name}: UNDEFINED") == 1, name


KCTL_EL0PCTEN, KCTL_EL0VCTEN, KCTL_EL0VTEN, KCTL_EL0PTEN = 1 << 0, 1 << 1, 1 << 8, 1 << 9
EC_SVC64, EC_SYSREG = 0x15, 0x18
_CNTFRQ, _CNTPCT, _CNTVCT = (3, 3, 14, 0, 0), (3, 3, 14, 0, 1), (3, 3, 14, 0, 2)


def _esr(ec: int, iss: int = 0) -> int:
    return ec << 26 | 1 << 25 | iss  # IL: a 32-bit instruction


def _sysreg_iss(enc: tuple, rt: int, read: bool) -> int:
    """ISS of a trapped MSR/MRS (Arm ARM D17.2.37, EC 0x18): Op0, Op2, Op1, CRn, Rt, CRm, Direction."""
    op0, op1, crn, crm, op2 = enc
    return op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | read


def _el0_guest(kctl: int, el0: list[int]) -> bytes:
    """EL1 sets CNTKCTL_EL1 = kctl and erets to `el0` at EL0, which ends with SVC; the EL1 sync vector for a lower
    EL (and the one for EL1, for a fault there) stores ESR_EL1 and x2 at +0x1000 and powers off."""
    start = [_adr(0, 0x800), 0xD518C000, _movz(0, kctl), _msr(0, 3, 0, 14, 1, 0)]  # vbar_el1; cntkctl_el1 = kctl
    start += [0xD518401F, _adr(0, 0x200 - 4 * (len(start) + 1)), 0xD5184020, 0xD69F03E0]  # spsr 0; elr .+0x200; eret
    blob = code(*start).ljust(0x200, b"\0") + code(*el0, 0xD4000001)  # ...; svc #0
    for vector in (0xA00, 0xC00):  # VBAR + 0x200, + 0x400: x1 = esr_el1; adr x3, +0x1000; stp x1, x2, [x3]; off
        blob = blob.ljust(vector, b"\0") + code(0xD5385201, _adr(3, 0x1000 - vector - 4), 0xA9000861, *SYSTEM_OFF)
    return blob


# (what EL0 does, CNTKCTL_EL1, the ESR at EL1, x2 after it, libvmm's trapped accesses). CNTFRQ_EL0 is readable with
# EL0PCTEN or EL0VCTEN, CNTPCT_EL0 with EL0PCTEN, CNTVCT_EL0 with EL0VCTEN, CNTP_* with EL0PTEN (Arm ARM D13.11's
# "Accessibility"); an access they allow is ours (counted), one they deny traps to EL1 (EC 0x18) before it.
_EL0_ACCESSES = {
    "cntfrq-vcten": ([_mrs(2, *_CNTFRQ)], KCTL_EL0VCTEN, _esr(EC_SVC64), 62_500_000, 1),
    "cntfrq-pcten": ([_mrs(2, *_CNTFRQ)], KCTL_EL0PCTEN, _esr(EC_SVC64), 62_500_000, 1),
    "cntpct-pcten": ([_mrs(2, *_CNTPCT)], KCTL_EL0PCTEN, _esr(EC_SVC64), 1000, 1),
    "cntpct-vcten": ([_mrs(2, *_CNTPCT)], KCTL_EL0VCTEN, _esr(EC_SYSREG, _sysreg_iss(_CNTPCT, 2, True)), 0, 0),
    "cntvct-vcten": ([_mrs(2, *_CNTVCT)], KCTL_EL0VCTEN, _esr(EC_SVC64), 1000, 1),
    "cntvct-pcten": ([_mrs(2, *_CNTVCT)], KCTL_EL0PCTEN, _esr(EC_SYSREG, _sysreg_iss(_CNTVCT, 2, True)), 0, 0),
    "cntp_cval-pten": ([_movz(2, 0x1234), _msr(2, *CNTP_CVAL)], KCTL_EL0PTEN, _esr(EC_SVC64), 0x1234, 1),
    "cntp_cval-vten": (
        [_movz(2, 0x1234), _msr(2, *CNTP_CVAL)], KCTL_EL0VTEN, _esr(EC_SYSREG, _sysreg_iss(CNTP_CVAL, 2, False)),
        0x1234, 0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", _EL0_ACCESSES)
def test_el0_timer_access_follows_cntkctl(raw_guest, case):
    """Deterministic mode (every counter read is ours, no engine shortcut), the clock at 1000 ticks: EL0 reads
    a counter as libvmm's timer has it (1000, the few instructions before are less than a tick), CNTFRQ_EL0 as
    62.5 MHz, and a CNTP_CVAL_EL0 it may write is the timer's CVAL afterwards; what CNTKCTL_EL1 denies traps."""
    el0, kctl, esr, x2, served = _EL0_ACCESSES[case]
    with vmmpy.Machine(raw_guest(_el0_guest(kctl, el0)), kernel_format="raw", deterministic=True) as m:
        m.clock_advance(1000 * NS_PER_TICK)
        assert m.run(timeout=10).reason == RunReason.POWEROFF
        got = m.read_memory(m.boot_info().kernel_start + 0x1000, 16)
        assert (int.from_bytes(got[:8], "little"), int.from_bytes(got[8:], "little")) == (esr, x2)
        assert m.stats()["sysreg_exits"] == served
        assert m.sysreg_read("CNTP_CVAL_EL0") == (0x1234 if case == "cntp_cval-pten" else 0)


_CNTV_CVAL, _CNTV_CTL = (3, 3, 14, 3, 2), (3, 3, 14, 3, 1)


@pytest.mark.parametrize("backend", ["deterministic", "soft", "soft-threaded"])
def test_the_second_timers_interrupt_reaches_a_spinning_vcpu(raw_guest, backend):
    """A guest arms CNTP 2^20 ticks (16.8 ms) ahead and CNTV 2^16 ticks (1 ms) ahead, then spins with IRQs
    unmasked (`b .`); its handler disables CNTV on INTID 27 and powers off on INTID 30. CNTP's deadline becomes
    the vCPU's next one only when CNTV's has fired and the timers are updated after the slice, not through a
    timer register write: the clock thread, which after its kick for CNTV waits for the deadline to change, must
    be woken for it (it was not: the run timed out in real time with CNTP_CTL.ISTATUS set)."""
    blob = code(
        _adr(0, 0x800), 0xD518C000, _mrs(1, 3, 3, 14, 0, 2),  # vbar_el1 = .+0x800; x1 = CNTVCT
        ADD_X0_X1_2_20, _msr(0, *CNTP_CVAL), MOVZ_X0_1, _msr(0, *CNTP_CTL),  # CNTP: x1 + 2^20, enabled
        0x91404020, _msr(0, *_CNTV_CVAL), MOVZ_X0_1, _msr(0, *_CNTV_CTL),  # CNTV: x1 + 2^16, enabled
        0xD50342FF, B_SELF,  # msr daifclr, #2; b .
    )  # fmt: skip
    # IRQ, current EL with SP_ELx: x0 = ICC_IAR1_EL1; INTID 30: power off; else CNTV_CTL = 0, EOI, eret
    irq = code(0xD538CC00, 0xF100781F, 0x54000080, 0xD51BE33F, 0xD518CC20, 0xD69F03E0, *SYSTEM_OFF)
    kw = {"deterministic": True} if backend == "deterministic" else {"backend": backend}
    with vmmpy.Machine(raw_guest(blob.ljust(0x800 + 0x280, b"\0") + irq), kernel_format="raw", **kw) as m:
        enable_ppi(m, 27)
        enable_ppi(m, 30)
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, (res, m.sysreg_read("CNTP_CTL_EL0"), m.stats()["irqs"])
        assert m.stats()["irqs"] == 2


@pytest.mark.parametrize("backend", ["soft", "soft-threaded", "hvf"])
def test_a_timer_rearmed_later_in_its_handler_fires_again_for_a_spinning_vcpu(raw_guest, backend):
    """A periodic tick: the guest arms CNTP 2400 ticks ahead and spins with IRQs unmasked (`b .`); its handler
    moves CNTP_CVAL 2400 ticks on (a deadline later than the one that fired) and powers off on the third
    interrupt. With vCPU threads only the clock thread's kick ends a spinning vCPU's run on hvf (no instruction
    budget): after its kick for the old deadline it must re-arm for each later one."""
    blob = code(
        _adr(0, 0x800), 0xD518C000, 0xD2800005, _mrs(1, 3, 3, 14, 0, 1),  # vbar_el1; x5 = 0; x1 = CNTPCT
        ADD_X0_X1_2400, _msr(0, *CNTP_CVAL), MOVZ_X0_1, _msr(0, *CNTP_CTL), 0xD50342FF, B_SELF,  # daifclr; b .
    )  # fmt: skip
    # IRQ: x0 = IAR1; CNTP_CVAL += 2400; EOI; x5 += 1; x5 == 3: power off; else eret
    irq = code(0xD538CC00, 0xD53BE241, 0x91258021, 0xD51BE241, 0xD518CC20, 0x910004A5, 0xF1000CBF, 0x54000040,
               0xD69F03E0, *SYSTEM_OFF)  # fmt: skip
    with vmmpy.Machine(raw_guest(blob.ljust(0x800 + 0x280, b"\0") + irq), kernel_format="raw", backend=backend) as m:
        enable_ppi(m, PPI_PHYS)
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, (res, m.sysreg_read("CNTP_CTL_EL0"), m.stats()["irqs"])
        assert m.stats()["irqs"] == 3
