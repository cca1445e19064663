"""Tier 2: the run loop — power off, reset, stop from another thread, timeout, idle WFI, many VMs."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import (
    B_SELF,
    PRINT_X,
    RAM_BASE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    WFI,
    b_back,
    code,
    enable_ppi,
    timer_irq_spinner,
)


def raw_machine(raw_guest, *insns, **kw) -> vmmpy.Machine:
    return vmmpy.Machine(raw_guest(code(*insns)), kernel_format="raw", **kw)


def test_poweroff_and_serial(raw_guest):
    with raw_machine(raw_guest, *PRINT_X, *SYSTEM_OFF) as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF and res.exit_status == 0 and res.ok
        assert m.serial.text == "X"
        assert res.pc == RAM_BASE + 4 * 6  # just past the HVC
        st = m.stats()
        assert st["mmio_exits"] == 1 and st["hvc_exits"] == 1


def test_reset(raw_guest):
    with raw_machine(raw_guest, *SYSTEM_RESET) as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.RESET
        assert res.exit_status == 0  # only a power-off carries the guest's status


def test_run_after_the_end_is_refused(raw_guest):
    with raw_machine(raw_guest, *SYSTEM_OFF) as m:
        m.run(timeout=10)
        with pytest.raises(vmmpy.StateError, match="has ended"):
            m.run(timeout=1)


def test_a_run_refused_before_it_starts_leaves_the_vm_usable(raw_guest):
    """vmm_run with no kernel loaded fails ("no kernel loaded") before the run starts and releases the VM: its
    console is at the end of its stream again (vmm_run_pending, which Machine.run calls first, is undone), and
    a kernel loaded afterwards runs to its power-off."""
    from vmmpy._ffi import ffi, lib

    with vmmpy.Machine() as m:
        with pytest.raises(vmmpy.StateError, match="^no kernel loaded$"):
            m.run(timeout=1)
        buf = ffi.new("char[]", 16)
        assert lib.vmm_console_read(m._vm, buf, 16, 500_000_000) == lib.VMM_EEOF  # not 0 after waiting 0.5 s
        m.load_kernel(raw_guest(code(*PRINT_X, *SYSTEM_OFF)), format="raw")
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF and m.serial.text == "X"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux thread attribute")
def test_a_run_gives_the_calling_thread_its_timer_slack_back(raw_guest):
    """vmm_run sets its calling thread's timer slack to 1 ns for the run (deadlines, not "about then") and
    puts the thread's own value back when it returns."""
    import ctypes

    from vmmpy._ffi import ffi, lib

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_timerslack, pr_get_timerslack = 29, 30
    assert libc.prctl(pr_set_timerslack, 70_000, 0, 0, 0) == 0
    try:
        with raw_machine(raw_guest, *SYSTEM_OFF) as m:
            res = ffi.new("struct vmm_run_result *")
            res.size = ffi.sizeof("struct vmm_run_result")
            assert lib.vmm_run(m._vm, 10_000_000_000, res) == 0  # on this thread
            assert res.reason == RunReason.POWEROFF
        assert libc.prctl(pr_get_timerslack, 0, 0, 0, 0) == 70_000
    finally:
        libc.prctl(pr_set_timerslack, 0, 0, 0, 0)  # 0: back to the thread's default


def test_timeout_on_a_spinning_guest(raw_guest):
    with raw_machine(raw_guest, B_SELF) as m:
        res = m.run(timeout=0.2)
        assert res.reason == RunReason.TIMEOUT
        assert res.pc == RAM_BASE


def test_stop_from_another_thread_then_resume(raw_guest):
    # prints X forever
    with raw_machine(raw_guest, *PRINT_X, b_back(1)) as m:
        m.start()
        m.serial.expect("X{1000}", timeout=30)
        res = m.stop()
        assert res is not None and res.reason == RunReason.STOPPED
        n = len(m.serial.data)
        res = m.run(timeout=0.1)  # resumes where it stopped
        assert res.reason == RunReason.TIMEOUT
        assert len(m.serial.data) > n
        assert set(m.serial.text) == {"X"}


def test_stop_before_run_is_honoured(raw_guest):
    with raw_machine(raw_guest, B_SELF) as m:
        m.stop()
        assert m.run(timeout=30).reason == RunReason.STOPPED


def test_idle_wfi_guest_uses_no_cpu(raw_guest):
    with raw_machine(raw_guest, WFI, b_back(1)) as m:
        before = resource.getrusage(resource.RUSAGE_SELF)
        res = m.run(timeout=0.5)
        after = resource.getrusage(resource.RUSAGE_SELF)
        assert res.reason == RunReason.TIMEOUT
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 0.15, f"an idle guest used {cpu:.3f} s of CPU in 0.5 s"
        assert m.stats()["wfi_exits"] >= 1


def test_idle_wfi_guest_without_a_timeout_uses_no_cpu(raw_guest):
    """As above with no run timeout and no timer armed: the clock thread, with no deadline at all, waits untimed
    (a wait for a deadline it does not have returned at once, and it spun for the whole run). A stop from another
    thread 0.5 s in ends the run."""
    with raw_machine(raw_guest, WFI, b_back(1)) as m:
        guard = threading.Timer(0.5, m.stop)
        before = resource.getrusage(resource.RUSAGE_SELF)
        guard.start()
        try:
            res = m.run()
        finally:
            guard.cancel()
        after = resource.getrusage(resource.RUSAGE_SELF)
        assert res.reason == RunReason.STOPPED
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 0.15, f"an idle guest used {cpu:.3f} s of CPU in 0.5 s"


def test_many_vms_in_one_process(raw_guest):
    blob = raw_guest(code(*PRINT_X, *SYSTEM_OFF))
    machines = [vmmpy.Machine(blob, kernel_format="raw", ram="16M") for _ in range(12)]
    try:
        for m in machines:
            m.start(timeout=30)
        for m in machines:
            assert m.wait().ok
            assert m.serial.text == "X"
    finally:
        for m in machines:
            m.close()


def test_close_while_running_does_not_hang(raw_guest):
    m = raw_machine(raw_guest, B_SELF)
    m.start()
    t0 = time.monotonic()
    m.close()
    assert time.monotonic() - t0 < 5
    m.close()  # twice is fine


def test_no_fd_or_thread_leak_across_vms(raw_guest):
    blob = raw_guest(code(*SYSTEM_OFF))
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    for _ in range(20):
        with vmmpy.Machine(blob, kernel_format="raw", ram="8M") as m:
            assert m.run(timeout=10).ok
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    assert threading.active_count() <= threads


def test_expect_starts_the_machine_without_a_race(raw_guest):
    # expect() right after creation must wait for the run, not report end-of-stream
    blob = raw_guest(code(*PRINT_X, *SYSTEM_OFF))
    for _ in range(20):
        with vmmpy.Machine(blob, kernel_format="raw", ram="8M") as m:
            m.serial.expect("X", timeout=10)
            assert m.wait(timeout=10).ok


def test_memory_accessors_are_bounds_checked(raw_guest):
    with raw_machine(raw_guest, B_SELF, ram="8M") as m:
        m.write_memory(RAM_BASE + (8 << 20) - 4, b"abcd")
        assert m.read_memory(RAM_BASE + (8 << 20) - 4, 4) == b"abcd"
        for gpa, n in [(RAM_BASE + (8 << 20) - 3, 4), (RAM_BASE - 1, 2), (0, 4), (2**64 - 2, 4)]:
            with pytest.raises(vmmpy.DoesNotFit, match="is not guest RAM"):
                m.read_memory(gpa, n)
            with pytest.raises(vmmpy.DoesNotFit, match="is not guest RAM"):
                m.write_memory(gpa, b"x" * n)


def test_the_address_space_cap_turns_a_huge_allocation_into_an_error():
    """tests/conftest.py's address-space cap is in force: reserving more than its headroom fails at once."""
    import mmap

    from tests.conftest import AS_HEADROOM

    if AS_HEADROOM <= 0 or os.environ.get("VMMPY_EXPECT_SANITIZED"):
        pytest.skip("no address-space cap in this run")
    with pytest.raises((OSError, MemoryError)):
        mmap.mmap(-1, AS_HEADROOM + (4 << 30))


def test_a_run_without_timeout_still_kicks_a_spinning_vcpu_at_its_timer_deadline(raw_guest):
    """Real time, no timeout: the clock thread still runs, for the timers (a vCPU that executes, not in
    WFI, only sees its deadline pass when kicked). Bounded from Python: wait() stops the run after 10 s."""
    with vmmpy.Machine(raw_guest(timer_irq_spinner()), kernel_format="raw") as m:
        enable_ppi(m, 27)  # the virtual timer's PPI
        m.start(timeout=None)
        res = m.wait(10)
        assert res.reason == RunReason.POWEROFF, res


def _load_print_and_off(vm) -> bytes:
    """Load PRINT_X + SYSTEM_OFF as a raw image at RAM_BASE through the C API; the image."""
    from vmmpy._vmm import ffi, lib

    raw = code(*PRINT_X, *SYSTEM_OFF)
    opts = ffi.new(
        "struct vmm_kernel_opts *",
        {"size": ffi.sizeof("struct vmm_kernel_opts"), "format": lib.VMM_KERNEL_RAW, "load_addr": RAM_BASE},
    )
    assert lib.vmm_load_kernel_mem(vm, raw, len(raw), b"raw", opts) == 0
    return raw


def test_the_run_result_counts_the_instructions_retired(raw_guest):
    """vmm_run_result.insns (C API; the soft backend counts per translation block): the 6 instructions of
    PRINT_X + SYSTEM_OFF, the same as vmm_get_stats()."""
    from vmmpy._vmm import ffi, lib

    from .conftest import c_vm

    with c_vm() as vm:
        raw = _load_print_and_off(vm)
        res = ffi.new("struct vmm_run_result *", {"size": ffi.sizeof("struct vmm_run_result")})
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0 and res.reason == lib.VMM_RUN_POWEROFF
        st = ffi.new("struct vmm_stats *", {"size": ffi.sizeof("struct vmm_stats")})
        assert lib.vmm_get_stats(vm, st) == 0
        assert res.insns == len(raw) // 4 == st.insns
        assert res.size == ffi.sizeof("struct vmm_run_result")  # what the caller said it has, kept


def test_a_smaller_run_result_gets_only_its_fields(raw_guest):
    """A caller built against an older, shorter struct vmm_run_result (size = 12: size, reason, exit_status)
    gets those fields, its size kept, and nothing written past them."""
    from vmmpy._vmm import ffi, lib

    from .conftest import c_vm

    with c_vm() as vm:
        _load_print_and_off(vm)
        res = ffi.new("struct vmm_run_result *", {"size": 12, "pc": 0x5A5A, "insns": 0xA5A5})
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert (res.size, res.reason, res.exit_status) == (12, lib.VMM_RUN_POWEROFF, 0)
        assert (res.pc, res.insns) == (0x5A5A, 0xA5A5)


def test_real_time_smp_slices_share_one_thread_between_busy_vcpus(raw_guest):
    """Real time, 2 vCPUs on one thread (soft): CPU 0 starts CPU 1 (PSCI CPU_ON) and busy-waits, counting, for
    a flag CPU 1 sets; no timer runs. Only the round-robin slice (SLICE_INSNS) hands the thread to CPU 1."""
    blob = code(
        0x52800060, 0x72B88000,  # mov w0, #0xc4000003 (CPU_ON, SMC64)
        0xD2800021,  # mov x1, #1 (target MPIDR)
        0x10000142,  # adr x2, cpu1 (entry)
        0xD2800003,  # mov x3, #0 (context)
        0xD4000002,  # hvc #0
        0x10000186,  # adr x6, flag
        0x910004E7, 0xB94000C5, 0x34FFFFC5,  # 1: add x7, x7, #1; ldr w5, [x6]; cbz w5, 1b
        *SYSTEM_OFF,
        0x100000A6, 0x52800025, 0xB90000C5, WFI, b_back(1),  # cpu1: adr x6, flag; str #1 to it; wfi loop
        0,  # flag
    )  # fmt: skip
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2) as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.POWEROFF, res


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_run_ends_when_every_vcpu_is_off(raw_guest, cpus):
    """PSCI CPU_OFF (0x84000002) on the only vCPU that is on (CPU 1 of two never started): nothing can run
    again, and nothing can power a vCPU on, so the run ends at once as a guest error, not as an idle VM that
    waits for its timeout."""
    with raw_machine(raw_guest, 0x52800040, 0x72B08000, 0xD4000002, B_SELF, cpus=cpus) as m:
        res = m.run(timeout=10)
    assert res.reason == RunReason.GUEST_ERROR, res
    assert res.message.endswith("every vCPU is off"), res.message


def test_waiting_for_a_screen_pause_of_a_vm_that_is_not_running_fails_at_once(raw_guest):
    """vmm_screen_pause_wait() on a VM that never started: ScreenEOF now, not a timeout 30 s later."""
    with vmmpy.Machine(raw_guest(code(B_SELF)), kernel_format="raw", deterministic=True, gpu=True) as m:
        m.screen.pause_at(1)
        t0 = time.monotonic()
        with pytest.raises(vmmpy.errors.ScreenEOF, match="not running"):
            m.screen.wait_paused(30)
        assert time.monotonic() - t0 < 20
