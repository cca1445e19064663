"""run.c from run_one to the park point, as the API sees it: the status each way of ending a run reports, the vCPU
entries counted, the vCPU that the one-thread loop marks as running (vm->current: a line raised for another vCPU
while it runs ends its slice, and nothing is marked between slices), which vCPUs count as on, the one-thread loop's
slices, first timer update and idle hold for a debugger, the threaded loop's wait and wake-ups, and the deterministic
pause at a frame (park_point, vmm__park_arm, vmm__park_wait)."""

from __future__ import annotations

import threading
import time

import pytest

import vmmpy
from vmmpy import RunReason, errors

from .conftest import B_SELF, PRINT_X, RAM_BASE, ROOT, SYSTEM_OFF, SYSTEM_RESET, WFI, b_back, code, enable_ppi

NS_PER_TICK = 16  # 62.5 MHz
SPIN = (0x910004A5, b_back(1))  # 1: add x5, x5, #1; b 1b
CPU_OFF = (0x52800040, 0x72B08000, 0xD4000002)  # mov w0, #2; movk w0, #0x8400, lsl 16; hvc #0
UDF = 0x00000000  # an undefined instruction; with VBAR_EL1 0 its exception has no handler: a guest error


def _machine(raw_guest, *insns, **kw) -> vmmpy.Machine:
    return vmmpy.Machine(raw_guest(code(*insns)), kernel_format="raw", **kw)


# the three loops: deterministic, real time on one thread, a thread per vCPU (Unicorn's own and our GIC's)
BACKENDS = [
    pytest.param({"deterministic": True}, id="deterministic"),
    pytest.param({"vcpu_threads": "one"}, id="one-thread"),
    pytest.param({"vcpu_threads": "per-vcpu"}, id="per-vcpu"),
    pytest.param({"backend": "soft-threaded"}, id="threaded"),
]


@pytest.mark.parametrize("kw", BACKENDS)
@pytest.mark.parametrize(
    ("insns", "reason"),
    [
        pytest.param(SYSTEM_RESET, RunReason.RESET, id="reset"),
        pytest.param((UDF,), RunReason.GUEST_ERROR, id="guest-error"),
        pytest.param(CPU_OFF, RunReason.GUEST_ERROR, id="every-vcpu-off"),
    ],
)
def test_an_ending_of_the_guests_own_reports_status_0(raw_guest, kw, insns, reason):
    """A reset, a guest error and the last vCPU's CPU_OFF end the run with exit status 0 (only a power-off carries
    the guest's status)."""
    with _machine(raw_guest, *insns, B_SELF, **kw) as m:
        res = m.run(timeout=30)
    assert (res.reason, res.exit_status) == (reason, 0), res


@pytest.mark.parametrize("kw", BACKENDS)
def test_a_stop_reports_status_0(raw_guest, kw):
    """A stop requested while the guest spins ends the run (check_end): STOPPED, status 0."""
    with _machine(raw_guest, *SPIN, **kw) as m:
        m.start(timeout=None)
        res = m.stop()
    assert res is not None and (res.reason, res.exit_status) == (RunReason.STOPPED, 0), res


@pytest.mark.parametrize("kw", BACKENDS)
def test_a_timeout_reports_status_0(raw_guest, kw):
    with _machine(raw_guest, *SPIN, **kw) as m:
        res = m.run(timeout=0.05)
    assert (res.reason, res.exit_status) == (RunReason.TIMEOUT, 0), res


def test_every_entry_into_the_guest_is_counted(raw_guest):
    """Deterministic, one vCPU spinning until a stop time: the loop enters the guest at least once per quantum
    (stats' vcpu_runs), and a second equal stretch of time takes as many entries as the first. Each entry ends
    with nothing to serve (VMM_EXIT_NONE): no MMIO is dispatched for it."""
    with _machine(raw_guest, *SPIN, deterministic=True) as m:
        m.stop_at(1_000_000)
        assert m.run(timeout=None).reason == RunReason.STOPPED
        first = m.stats()["vcpu_runs"]
        assert first >= 1
        m.stop_at(2_000_000)
        assert m.run(timeout=None).reason == RunReason.STOPPED
        st = m.stats()
        assert st["vcpu_runs"] == 2 * first
        # an entry that ends with nothing to serve (its quantum over) is no device access
        assert (st["mmio_exits"], st["guest_errors"]) == (0, 0)


# CPU 0 starts CPU 1 (PSCI CPU_ON) and powers itself off (CPU_OFF); CPU 1 counts x8 down from 0x1000 and powers the
# machine off with status 0. The run goes on while CPU 1 alone is on.
#   cpu0: mov w0, #3; movk w0, #0xc400, lsl 16; mov x1, #1; adr x2, cpu1 (+28); mov x3, #0; hvc #0; CPU_OFF; b .
#   cpu1: mov x8, #0x1000; 1: subs x8, x8, #1; b.ne 1b; SYSTEM_OFF
OFF_THEN_OTHER = (
    0x52800060, 0x72B88000, 0xD2800021, 0x100000E2, 0xD2800003, 0xD4000002, *CPU_OFF, B_SELF,
    0xD2820008, 0xF1000508, 0x54FFFFE1, *SYSTEM_OFF,
)  # fmt: skip


@pytest.mark.parametrize("kw", BACKENDS)
def test_the_run_goes_on_while_a_vcpu_other_than_0_is_on(raw_guest, kw):
    """count_on looks at every vCPU: with CPU 0 off and CPU 1 on the run goes on to CPU 1's power-off."""
    with _machine(raw_guest, *OFF_THEN_OTHER, cpus=2, **kw) as m:
        res = m.run(timeout=30)
    assert res.ok, res


def _clock_base_ns(m: vmmpy.Machine) -> int:
    before = time.monotonic_ns()
    clock = m.clock_ns
    after = time.monotonic_ns()
    return (before + after) // 2 - clock


def test_no_vcpu_is_marked_running_between_slices(raw_guest):
    """One thread, real time: CPU 0 spins; CPU 1 stays off with its virtual timer armed from the host (PPI 27 routed
    to its line) 0.2 s into a run that times out. The loop raises CPU 1's line after one of CPU 0's slices (its
    timer update), when no vCPU runs: no slice is ended for it (ipi_yields stays 0). A vCPU left marked as running
    after its slice would be told to yield for that line."""
    with _machine(raw_guest, *SPIN, cpus=2, vcpu_threads="one") as m:
        enable_ppi(m, 27, cpu=1)
        ticks = -(-(time.monotonic_ns() + 200_000_000 - _clock_base_ns(m)) // NS_PER_TICK)
        m.sysreg_write("CNTV_CVAL_EL0", ticks, cpu=1)
        m.sysreg_write("CNTV_CTL_EL0", 1, cpu=1)
        res = m.run(timeout=1.5)
        assert res.reason == RunReason.TIMEOUT, res
        assert m.sysreg_read("CNTV_CTL_EL0", cpu=1) & 4  # ISTATUS: the deadline passed during the run
        assert m.stats()["ipi_yields"] == 0


def adr(rd: int, at: int, to: int) -> int:
    """adr x<rd>, from instruction index `at` to index `to` (forward, under 1 MiB)."""
    off = (to - at) * 4
    return 0x10000000 | (off & 3) << 29 | (off >> 2) << 5 | rd


CPU_ON_1 = (0x52800060, 0x72B88000, 0xD2800021)  # mov w0, #3; movk w0, #0xc400, lsl 16 (CPU_ON); mov x1, #1


def _slices_program() -> bytes:
    """CPU 0 starts CPU 1, counts x8 down from 0x100000 (~2M instructions, no memory access), then reads `flag`
    once: set, it powers off; clear, it spins at `b .` for good. CPU 1 sets `flag` and waits in WFI."""
    return code(
        *CPU_ON_1, adr(2, 3, 16), 0xD2800003, 0xD4000002,  # 0-5: x2 = cpu1; mov x3, #0; hvc #0
        0xD2A00208, 0xF1000508, 0x54FFFFE1,  # 6-8: mov x8, #0x100000; 1: subs x8, x8, #1; b.ne 1b
        adr(6, 9, 21), 0xB94000C5, 0x35000045, B_SELF,  # 9-12: adr x6, flag; ldr w5, [x6]; cbnz w5, +2; b .
        *SYSTEM_OFF,  # 13-15
        adr(6, 16, 21), 0x52800025, 0xB90000C5, 0xD503207F, b_back(1),  # 16-20 cpu1: flag = 1; 2: wfi; b 2b
        0,  # 21: flag
    )  # fmt: skip


def test_one_thread_real_time_smp_runs_each_vcpu_a_slice_at_a_time(raw_guest):
    """Real time, 2 vCPUs on one thread: a vCPU runs at most SLICE_INSNS (50,000) instructions per turn, so CPU 1
    runs (and sets the flag) while CPU 0 is still counting. A turn without that limit would let CPU 0 finish its
    count first and find the flag clear (it then spins until the timeout)."""
    with vmmpy.Machine(raw_guest(_slices_program()), kernel_format="raw", cpus=2, vcpu_threads="one") as m:
        res = m.run(timeout=60)
    assert res.ok, res


def test_one_thread_real_time_up_runs_its_vcpu_without_slices(raw_guest):
    """Real time, 1 vCPU: no slice limit (nothing else to run): a spinning guest enters the guest once, and only the
    timeout's kick ends that entry."""
    with _machine(raw_guest, *SPIN) as m:
        res = m.run(timeout=0.3)
        assert res.reason == RunReason.TIMEOUT, res
        assert m.stats()["vcpu_runs"] == 1


def test_a_vcpu_that_powered_itself_off_is_not_in_wfi(raw_guest, tmp_path):
    """Deterministic: CPU 0 starts CPU 1, which powers itself off (CPU_OFF) while CPU 0 spins. CPU_OFF leaves the
    vCPU off and not in WFI (a snapshot that claims both is refused): the paused VM's snapshot restores and runs on."""
    prog = code(*CPU_ON_1, adr(2, 3, 8), 0xD2800003, 0xD4000002, *SPIN, *CPU_OFF, B_SELF)
    snap = tmp_path / "off.snap"
    with vmmpy.Machine(raw_guest(prog), kernel_format="raw", cpus=2, deterministic=True) as m:
        m.stop_at(2_000_000)
        assert m.run(timeout=None).reason == RunReason.STOPPED
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as again:
        again.stop_at(4_000_000)
        assert again.run(timeout=None).reason == RunReason.STOPPED


def test_the_threaded_loop_waits_for_the_end_without_kicking(raw_guest):
    """vCPU threads: CPU 0 counts x8 down from 0x1000000 (tens of ms: the run's own thread waits on vm->cond by
    then), then starts CPU 1 (PSCI CPU_ON broadcasts vm->cond) and spins; CPU 1 counts down from 0x400000 and powers
    off. The run's thread goes on waiting through that broadcast: each vCPU enters the guest once (vcpu_runs 2; CPU
    1's entry shows that it started). Leaving the wait at any wake-up would kick both vCPUs out of the guest (an
    entry more each)."""
    countdown = (0xF1000508, 0x54FFFFE1)  # 1: subs x8, x8, #1; b.ne 1b
    prog = code(
        0xD2A02008, *countdown, *CPU_ON_1, adr(2, 6, 11), 0xD2800003, 0xD4000002, *SPIN,  # mov x8, #0x1000000
        0xD2A00808, *countdown, *SYSTEM_OFF,  # cpu1: mov x8, #0x400000
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(prog), kernel_format="raw", cpus=2, backend="soft-threaded") as m:
        res = m.run(timeout=60)
        assert res.ok, res
        assert m.stats()["vcpu_runs"] == 2


# Unmasks IRQs and counts in x5, storing each count at `count` (RAM_BASE + 32); its IRQ vector (VBAR_EL1 =
# RAM_BASE + 0x800, IRQ at +0x280) powers off.
#   adr x0, .+0x800; msr vbar_el1, x0; adr x6, count; msr daifclr, #2; 1: add x5, x5, #1; str x5, [x6]; b 1b
IRQ_OFF = code(0x10004000, 0xD518C000, adr(6, 2, 8), 0xD50342FF, 0x910004A5, 0xF90000C5, b_back(2), 0, 0, 0).ljust(
    0x800 + 0x280, b"\0"
) + code(*SYSTEM_OFF, B_SELF)


def test_a_timer_that_fired_before_the_run_interrupts_its_first_entry(raw_guest):
    """Real time on one thread: the virtual timer armed from the host 100 us ahead (PPI 27 routed), and the run
    started once its deadline has passed (the host polls CNTVCT): nothing has raised the line yet (the write found
    the deadline ahead). The loop updates the timers before its first entry, so the guest enters with its line up
    and takes the interrupt as soon as it unmasks it, before its loop counts once. Without that update the line
    rises only after the clock thread's kick ends the first entry, while the guest counts."""
    with vmmpy.Machine(raw_guest(IRQ_OFF), kernel_format="raw") as m:
        enable_ppi(m, 27)
        cval = m.sysreg_read("CNTVCT_EL0") + 6250  # 100 us at 62.5 MHz
        m.sysreg_write("CNTV_CVAL_EL0", cval)
        m.sysreg_write("CNTV_CTL_EL0", 1)
        while m.sysreg_read("CNTVCT_EL0") <= cval:
            pass
        res = m.run(timeout=30)
        assert res.ok, res
        assert m.read_memory(RAM_BASE + 32, 8) == bytes(8)


# CPU 0 starts CPU 1 and waits in WFI, then powers off. CPU 1 counts x8 down from 0x400000 (CPU 0's thread is asleep
# by then) and sends SGI 1 to CPU 0 (ICC_SGI1R_EL1: INTID 1, TargetList CPU 0), then waits in WFI.
#   cpu0: CPU_ON(1, cpu1); wfi; SYSTEM_OFF; b .
#   cpu1: mov x8, #0x400000; 1: subs x8, x8, #1; b.ne 1b; mov x0, #0x1000000; movk x0, #1; msr icc_sgi1r_el1, x0
#         2: wfi; b 2b
SGI_TO_SLEEPER = code(
    *CPU_ON_1, adr(2, 3, 11), 0xD2800003, 0xD4000002, 0xD503207F, *SYSTEM_OFF, B_SELF,
    0xD2A00808, 0xF1000508, 0x54FFFFE1, 0xD2A02000, 0xF2800020, 0xD518CBA0, 0xD503207F, b_back(1),
)  # fmt: skip


@pytest.mark.parametrize("kw", BACKENDS[2:])
def test_a_vcpu_thread_wakes_another_that_sleeps_in_wfi(raw_guest, kw):
    """vCPU threads: the SGI that CPU 1's thread raises for CPU 0, asleep in WFI with no deadline, wakes CPU 0's
    thread (irq.c: only a line raised on the target's own thread, or for a vCPU awake, needs no wake-up)."""
    with vmmpy.Machine(raw_guest(SGI_TO_SLEEPER), kernel_format="raw", cpus=2, **kw) as m:
        enable_ppi(m, 1)
        res = m.run(timeout=30)
    assert res.ok, res


def test_a_debuggers_interrupt_holds_a_one_thread_vm_whose_every_vcpu_waits(raw_guest, tmp_path):
    """Real time on one thread, the debugger attached: the guest prints X and waits in WFI for good (no timer). The
    debugger continues it, then interrupts (^C): with every vCPU idle nothing enters run_one, and the round's own
    hold at its top (woken by the request) stops the VM and reports SIGINT."""
    from .test_gdb import RawGdb, raw_packet

    sock = tmp_path / "gdb.sock"
    with _machine(raw_guest, *PRINT_X, WFI, b_back(1), gdb=f"unix:{sock}", gdb_wait=True, timeout=60) as m:
        m.start()
        g = RawGdb(m.gdb_address)
        try:
            assert g.ask(b"?").startswith(b"T05")
            g.send(raw_packet(b"c"))
            m.serial.expect("X", timeout=30)  # then a WFI: the vCPU waits
            g.send(b"\x03")
            assert g.reply().startswith(b"T02"), "no stop for the interrupt"
            assert g.ask(b"D") == b"OK"
        finally:
            g.close()
        res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res


GICD = 0x0800_0000


def test_a_line_raised_for_another_vcpu_in_the_running_ones_mmio_ends_its_slice(raw_guest):
    """One thread, real time, 2 vCPUs (CPU 1 off, SPI 40 routed to it): CPU 0 makes SPI 40 pending with a GICD write
    (ISPENDR1) and powers off after a short count. The write raises CPU 1's line inside CPU 0's MMIO access, while
    CPU 0 is the vCPU marked as running (vm->current), so CPU 0's slice is ended at its next block for the other to
    run (stats' ipi_yields: once). Without the mark nothing ends it."""
    #   mov x1, #0x08000000; mov w2, #0x100; str w2, [x1, #0x204]; mov x8, #0x1000; 1: subs x8, x8, #1; b.ne 1b
    prog = code(0xD2A10001, 0x52802002, 0xB9020422, 0xD2820008, 0xF1000508, 0x54FFFFE1, *SYSTEM_OFF)
    with vmmpy.Machine(raw_guest(prog), kernel_format="raw", cpus=2, vcpu_threads="one") as m:
        enable_ppi(m, 27, cpu=1)  # distributor on, redistributor 1 awake, CPU 1's interface open
        m.mmio_write(GICD + 0x84, m.mmio_read(GICD + 0x84) | 1 << 8)  # IGROUPR1: INTID 40 in group 1
        m.mmio_write(GICD + 0x104, 1 << 8)  # ISENABLER1: INTID 40
        m.mmio_write(GICD + 0x6000 + 8 * 40, 1, size=8)  # IROUTER40: CPU 1
        res = m.run(timeout=30)
        assert res.ok, res
        assert m.irq_line(cpu=1)
        assert m.stats()["ipi_yields"] == 1


# -- the park point (deterministic pause at a frame): run.c park_point, vmm__park_arm, vmm__park_wait ----------------

PAUSE_GUEST = f"{ROOT}/guest/build/input_echo.elf"  # draws a frame at start and one per input event


def _pause_machine(**kw) -> vmmpy.Machine:
    return vmmpy.Machine(PAUSE_GUEST, gpu=True, gpu_size=(320, 240), input=True, **kw)


def test_a_pause_needs_deterministic_mode():
    """vmm_screen_pause_at on a real-time VM: StateError (the loop that parks is the deterministic one)."""
    with _pause_machine() as m, pytest.raises(vmmpy.StateError):
        m.screen.pause_at(1)


def test_a_pause_armed_at_a_frame_already_passed_parks_at_the_next_round():
    """Parked at frame 2, a pause armed at frame 1 (already flushed) parks the loop again at its next round: the
    frame count reached the target (>=), it need not equal it."""
    with _pause_machine(deterministic=True) as m:
        m.screen.wait_frame(1, pause=True)
        m.keyboard.type("hi")  # the guest draws a frame for input
        m.screen.wait_frame(2, pause=True)
        assert m.paused and m.screen.frames == 2
        m.screen.pause_at(1)
        m.resume()
        assert m.screen.wait_paused(timeout=10)
        m.stop()


def test_a_stop_while_parked_leaves_the_vm_not_parked():
    """A stop ends a parked run: afterwards the VM is neither running nor parked, so waiting for a pause is
    ScreenEOF at once (not a pause that the ended run claims to stand at)."""
    with _pause_machine(deterministic=True) as m:
        m.screen.wait_frame(1, pause=True)
        assert m.paused
        res = m.stop()
        assert res is not None and res.reason == RunReason.STOPPED
        with pytest.raises(errors.ScreenEOF):
            m.screen.wait_paused(timeout=1)


def _pause_wait(timeout_ns: int, stop_after: float) -> tuple[int, float]:
    """vmm_screen_pause_wait(timeout_ns) for a frame the guest does not reach, a stop `stop_after` s on: (its
    result, the seconds it took)."""
    from vmmpy._vmm import lib

    with _pause_machine(deterministic=True) as m:
        assert m._checked(lib.vmm_screen_pause_at, 1_000_000) == 0
        m.start()
        guard = threading.Timer(stop_after, m.stop)
        guard.start()
        t = time.monotonic()
        try:
            rc = m._checked(lib.vmm_screen_pause_wait, timeout_ns, allow=(lib.VMM_EEOF,))
        finally:
            guard.cancel()
        return rc, time.monotonic() - t


def test_a_pause_wait_of_1_2_s_times_out_after_it():
    """A wait of 1.2 s (under the year that longer waits are cut to) ends at its own timeout with 1, long before
    the stop 20 s on."""
    rc, took = _pause_wait(1_200_000_000, 20.0)
    assert (rc, took >= 1.2) == (1, True)


def test_a_pause_wait_beyond_a_year_outlasts_a_second():
    """A wait of UINT64_MAX ns is cut to a year, not to a second: it goes on until the stop 1.5 s on (VMM_EEOF)."""
    from vmmpy._vmm import lib

    rc, took = _pause_wait(2**64 - 1, 1.5)
    assert (rc, took >= 1.4) == (lib.VMM_EEOF, True)


def test_a_pause_wakes_its_waiter_at_once():
    """A pause armed before the run: vmm_screen_pause_wait (20 s allowed) returns 0 as soon as the loop parks at
    frame 1 (park_point broadcasts), not at the end of its timeout."""
    from vmmpy._vmm import lib

    with _pause_machine(deterministic=True) as m:
        m.screen.pause_at(1)
        m.start()
        t = time.monotonic()
        rc = m._checked(lib.vmm_screen_pause_wait, 20_000_000_000, allow=(lib.VMM_EEOF,))
        took = time.monotonic() - t
        assert (rc, took < 10) == (0, True), took
        m.stop()


def test_a_parked_run_stays_parked_through_input_until_resumed():
    """Parked at frame 1, input sent meanwhile (which wakes the run loop) does not release the pause: no frame is
    drawn for it until the run is resumed."""
    with _pause_machine(deterministic=True) as m:
        m.screen.wait_frame(1, pause=True)
        m.keyboard.type("h")
        with pytest.raises(errors.ScreenTimeout):
            m.screen.wait_frame(2, timeout=1.0, resume=False)
        m.resume()
        m.screen.wait_frame(2, timeout=30)
        m.stop()


def test_a_pause_wait_on_a_vm_that_is_not_running_says_why():
    """vmm_screen_pause_wait on a VM that never started: VMM_EEOF at once, with vmm_last_error saying why."""
    from vmmpy._vmm import lib

    from vmmpy._ffi import ffi

    with _pause_machine(deterministic=True) as m:
        m.screen.pause_at(1)
        rc = m._checked(lib.vmm_screen_pause_wait, 0, allow=(lib.VMM_EEOF,))
        why: list[str] = []
        m._checked(lambda vm: why.append(ffi.string(lib.vmm_last_error(vm)).decode()) or 0)
    assert (rc, why) == (lib.VMM_EEOF, ["the VM is not running: it cannot reach the pause"])
