"""The run loop's treatment of vCPUs among themselves and of the host process: a vCPU that spins waiting for
another yields to it (vCPU 0 included), and a vCPU thread takes none of the application's signals."""

from __future__ import annotations

import errno
import os
import signal
import struct
import time

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import RAM_BASE, code

# CPU 0 starts CPU 1 (PSCI CPU_ON), counts x8 down from 0x40000 (two instructions a turn: ~524k instructions,
# ~6 deterministic quanta) and sets `flag`. CPU 1 spins on the flag with YIELD in its loop, counting its
# turns in x7; when the flag is set it stores x7 at `count` and powers off.
#   cpu0: mov w0, #3; movk w0, #0xc400, lsl 16 (CPU_ON, SMC64); mov x1, #1; adr x2, cpu1; mov x3, #0; hvc #0
#         mov x8, #0x40000; 1: subs x8, x8, #1; b.ne 1b; adr x6, flag; mov w5, #1; str w5, [x6]; 2: wfi; b 2b
#   cpu1: adr x6, flag; mov x7, #0; 3: add x7, x7, #1; ldr w5, [x6]; cbnz w5, 4f; yield; b 3b
#      4: adr x9, count; str x7, [x9]; SYSTEM_OFF
#   flag: .word 0 (at 0x68); count: .quad 0 (at 0x70)
YIELD_SPIN = code(
    0x52800060, 0x72B88000, 0xD2800021, 0x10000162, 0xD2800003, 0xD4000002,
    0xD2A00088, 0xF1000508, 0x54FFFFE1, 0x10000226, 0x52800025, 0xB90000C5, 0xD503207F, 0x17FFFFFF,
    0x10000186, 0xD2800007, 0x910004E7, 0xB94000C5, 0x35000065, 0xD503203F, 0x17FFFFFC,
    0x100000E9, 0xF9000127, 0x52800100, 0x72B08000, 0xD4000002,
    0, 0, 0, 0,
)  # fmt: skip
COUNT_AT = RAM_BASE + 0x70


def test_a_spinning_vcpu_yields_to_vcpu_0(raw_guest):
    """Deterministic, 2 vCPUs on one thread: CPU 1's spin loop (a block ending in YIELD) ends its turn while
    another vCPU can run (pause-loop exiting, soft.c), so it spins about once per quantum, not for whole
    quanta. The vCPU it waits for is vCPU 0: vmm__others_runnable must look at every vCPU but the caller.
    Measured: 6 turns (one per round while CPU 0 counts); without the yield ~100000 (a quantum's worth each
    round)."""
    with vmmpy.Machine(raw_guest(YIELD_SPIN), kernel_format="raw", cpus=2, deterministic=True) as m:
        res = m.run(timeout=30)
        assert res.reason == RunReason.POWEROFF, res
        turns = struct.unpack("<Q", m.read_memory(COUNT_AT, 8))[0]
    assert 1 <= turns <= 20, f"CPU 1 spun {turns} times waiting for CPU 0"


# CPU 0 starts CPU 1, which waits in WFI for good (its line never rises); CPU 0 then runs a YIELD loop 4096 times and
# powers the machine off. SPIN_ALONE is the same loop without the CPU_ON: CPU 1 stays off.
#   cpu0: mov w0, #3; movk w0, #0xc400, lsl 16; mov x1, #1; adr x2, cpu1; mov x3, #0; hvc #0
#         mov x8, #0x1000; 1: subs x8, x8, #1; b.eq 2f; yield; b 1b; 2: SYSTEM_OFF
#   cpu1: wfi; b cpu1
SPIN_BESIDE_WFI = code(
    0x52800060, 0x72B88000, 0xD2800021, 0x10000162, 0xD2800003, 0xD4000002,
    0xD2820008, 0xF1000508, 0x54000060, 0xD503203F, 0x17FFFFFD, 0x52800100, 0x72B08000, 0xD4000002,
    0xD503207F, 0x17FFFFFF,
)  # fmt: skip
SPIN_ALONE = SPIN_BESIDE_WFI[6 * 4 : 14 * 4]


@pytest.mark.parametrize(
    ("program", "yields"), [(SPIN_ALONE, 0), (SPIN_BESIDE_WFI, 1)], ids=["cpu1-off", "cpu1-in-wfi"]
)
def test_a_spinning_vcpu_yields_only_to_a_vcpu_that_can_run(raw_guest, program, yields):
    """Deterministic, 2 vCPUs on one thread: a YIELD loop ends its turn only while another vCPU can run
    (vmm__others_runnable): never while CPU 1 is off; once, to let the CPU 1 just started run to its WFI, and
    not again while it waits there with its line low. Ending the turn anyway would count a yield for each of
    the 4096 turns; not yielding to the started CPU 1 would leave it never run (no WFI exit)."""
    with vmmpy.Machine(raw_guest(program), kernel_format="raw", cpus=2, deterministic=True) as m:
        res = m.run(timeout=30)
        assert res.reason == RunReason.POWEROFF, res
        st = m.stats()
        assert (st["spin_yields"], st["wfi_exits"]) == (yields, yields)


def _vcpu_threads_blocked_signals() -> dict[str, int]:
    """SigBlk of this process's vCPU threads (named vmm-vcpuN), from /proc/self/task."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            if not name.startswith("vmm-vcpu"):
                continue
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("SigBlk:"):
                        out[name] = int(line.split()[1], 16)
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc/<pid>/task")
@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_HOST") == "posix", reason="the portable host layer names no threads")
def test_vcpu_threads_take_none_of_the_applications_signals(machine, guest):
    """A thread per vCPU (soft-threaded): each blocks every signal (run.c vcpu_thread_main), so a signal sent
    to the process (Ctrl-C, SIGTERM, a child's SIGCHLD, the application's SIGUSR1 or SIGALRM) goes to one of
    the application's own threads, not to a vCPU thread, where it would interrupt the emulation and never
    reach a handler that expects to run on the application's threads. The thread that called vmm_run does
    not block them (Python's threads do not), so the vCPU threads' mask is their own."""
    m = machine(guest("idle_notick"), backend="soft-threaded")
    m.start(timeout=30)
    m.serial.expect(r"idle: ready, no timer", timeout=30)
    try:
        masks = _vcpu_threads_blocked_signals()
    finally:
        res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    assert list(masks) == ["vmm-vcpu0"], masks
    blocked = masks["vmm-vcpu0"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD, signal.SIGALRM, signal.SIGPIPE):
        assert blocked >> (sig - 1) & 1, f"vmm-vcpu0 does not block {sig.name}: SigBlk {blocked:x}"


# pthread_create(3) called by libvmm fails with EAGAIN on the $FAIL_THREAD_AT-th call counted from when that variable
# is first seen set (read at each call, so a script sets it just before the run), counting only the calls made on
# the thread that made the first of them (the run's: the engine's own threads, started on the vCPU threads as the
# scheduler has it, are not counted); every other call is libc's
FAIL_THREAD_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    typedef int create_fn(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    static create_fn *real;
    static long calls;
    static pid_t counting;
    const char *at = getenv("FAIL_THREAD_AT");
    Dl_info di;
    if (!real)
        real = (create_fn *)dlsym(RTLD_NEXT, "pthread_create");
    if (at && dladdr(__builtin_return_address(0), &di) && di.dli_fname && strstr(di.dli_fname, "_vmm")) {
        if (!counting)
            counting = gettid();
        if (gettid() == counting && ++calls == strtol(at, NULL, 0))
            return EAGAIN;
    }
    return real(t, a, fn, arg);
}
"""


def test_a_vcpu_thread_that_cannot_start_ends_the_run_as_a_host_error(tmp_path, guest):
    """A thread per vCPU, 2 vCPUs: when vCPU 1's thread cannot be created (the run's third thread, after the clock
    thread and vCPU 0's), the run ends at once (vCPU 0's thread joined) as a host error with exit status 0 and a
    message naming the vCPU and the reason. The guest idles for ever, so nothing else can end the run first."""
    from .conftest import run_with_shim

    script = (
        "import os, vmmpy\n"
        f"with vmmpy.Machine({guest('idle')!r}, cpus=2, vcpu_threads='per-vcpu') as m:\n"
        "    os.environ['FAIL_THREAD_AT'] = '3'\n"
        "    r = m.run(timeout=30)\n"
        "    print(r.reason.name, r.exit_status, r.message)\n"
    )
    r = run_with_shim(tmp_path, FAIL_THREAD_C, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"HOST_ERROR 0 cannot start a thread for vCPU 1: {os.strerror(errno.EAGAIN)}"


def test_a_clock_thread_that_cannot_start_is_one_warning_and_the_run_goes_on(tmp_path, guest):
    """The clock thread (the run's first thread: timeout and real-time timer deadlines) cannot be created: the run
    goes on without it, says so in one warning, and the guest still runs to its power-off."""
    from .conftest import run_with_shim

    script = (
        "import logging, os, vmmpy\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        f"with vmmpy.Machine({guest('hello')!r}) as m:\n"
        "    os.environ['FAIL_THREAD_AT'] = '1'\n"
        "    r = m.run(timeout=30)\n"
        "    print(r.reason.name, r.exit_status)\n"
    )
    r = run_with_shim(tmp_path, FAIL_THREAD_C, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "POWEROFF 0"
    assert r.stderr.splitlines() == ["WARNING core: cannot start the clock thread; running without timeout or timers"]


# spin: every vCPU spins in guest code forever, with no exit of its own; only a kick from the host ends a run.
SPIN_LOOPS = [
    pytest.param({"backend": "soft"}, id="vcpu-threads"),
    pytest.param({"backend": "soft", "vcpu_threads": "one"}, id="one-thread"),
    pytest.param({"backend": "soft", "deterministic": True}, id="deterministic"),
]


@pytest.mark.parametrize("kwargs", SPIN_LOOPS)
@pytest.mark.parametrize("cpus", [2, 8])  # 8: VMM_MAX_CPUS, every slot in use
def test_a_stop_ends_a_run_whose_every_vcpu_spins(machine, guest, kwargs, cpus):
    """m.stop() kicks every vCPU out of the guest, not only the first: a spinning vCPU left in would keep
    the run (and stop(), which joins it) going forever."""
    m = machine(guest("spin"), cpus=cpus, **kwargs)
    m.start()
    m.serial.expect(rf"spin: {cpus} cpus spinning", timeout=30)
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    assert not m.running


@pytest.mark.parametrize("kwargs", SPIN_LOOPS)
def test_the_timeout_ends_a_run_whose_every_vcpu_spins(machine, guest, kwargs):
    m = machine(guest("spin"), cpus=3, **kwargs)
    m.start(timeout=1.0)
    m.serial.expect(r"spin: 3 cpus spinning", timeout=30)  # (SerialEOF if the timeout came first)
    res = m.wait(timeout=60)
    assert res.reason == RunReason.TIMEOUT, res


@pytest.mark.parametrize("kwargs", SPIN_LOOPS)
@pytest.mark.parametrize("cpus", [2, 3, 8])
def test_every_spinning_vcpu_takes_its_own_timer_ticks(machine, guest, kwargs, cpus):
    """spin_tick: vCPUs 1.. each run a 1 kHz virtual timer while spinning with IRQs unmasked (no exit of their
    own); vCPU 0 has no timer. Each must take 20 ticks: on vCPU threads only the clock thread's kick at that
    vCPU's own deadline brings it out of the guest (run.c's vcpu_deadlines and kick_expired), so every vCPU's
    deadline must be watched and kicked, not only the first's."""
    m = machine(guest("spin_tick"), cpus=cpus, **kwargs)
    res = m.run(timeout=60)
    assert res.ok, (res, m.serial.text)
    assert f"spin_tick: {cpus} cpus, 20 ticks each" in m.serial.text, m.serial.text


@pytest.mark.parametrize("kwargs", SPIN_LOOPS)
@pytest.mark.parametrize("cpus", [2, 8])
def test_a_vcpu_powering_off_ends_the_run_while_the_others_spin(machine, guest, kwargs, cpus):
    """spin_off: vCPU 0 powers the VM off while every other vCPU spins with no exit of its own. The run ends
    with POWEROFF at once: the ending vCPU's thread kicks the others out of the guest (run.c end_run), and so
    does the run's own thread when end_run's broadcast wakes it. Without either kick only the run's timeout
    (60 s here) would get them out; 30 s is far beyond any loaded host's delay."""
    m = machine(guest("spin_off"), cpus=cpus, **kwargs)
    t0 = time.monotonic()
    res = m.run(timeout=60)
    took = time.monotonic() - t0
    assert res.reason == RunReason.POWEROFF and res.ok, res
    assert f"spin_off: {cpus} cpus spinning, powering off" in m.serial.text
    assert took < 30, took


def _vm_size_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmSize:")))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process size from /proc")
@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan's allocator maps as it goes")
def test_runs_on_vcpu_threads_leave_no_thread_behind(machine, guest):
    """Every vCPU thread a run starts is joined when it ends: a thread left unjoined keeps its stack mapped
    (8 MiB by default), so ten 8-vCPU runs would grow the process by ~560 MiB. Two runs first, for what the
    first runs map once (glibc's stack cache, the engine's code buffers)."""
    for i in range(12):
        if i == 2:
            before = _vm_size_kib()
        m = machine(guest("spin_off"), cpus=8, backend="soft")
        assert m.run(timeout=60).reason == RunReason.POWEROFF
        m.close()
    grown = _vm_size_kib() - before
    assert grown < 64 * 1024, f"the process grew by {grown} KiB over ten runs"


def clock_threads() -> int:
    import contextlib
    import glob

    n = 0
    for f in glob.glob("/proc/self/task/*/comm"):
        with contextlib.suppress(OSError), open(f) as fh:  # a thread that ended meanwhile
            n += fh.read().strip() == "vmm-clock"
    return n


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_HOST") == "posix", reason="the portable host layer names no threads")
@pytest.mark.parametrize(
    "kwargs, timeout, expected",
    [
        pytest.param({"deterministic": True}, None, 0, id="deterministic-no-timeout"),
        pytest.param({"deterministic": True}, 60, 1, id="deterministic-timeout"),
        pytest.param({"vcpu_threads": "one"}, None, 1, id="real-time-no-timeout"),
    ],
)
def test_a_run_has_a_clock_thread_only_for_a_timeout_or_real_time(machine, guest, kwargs, timeout, expected):
    """vmm_run starts its clock thread ("vmm-clock") for a timeout or for real-time timer deadlines; a
    deterministic run without a timeout has none (its clock is the instruction count), and ends cleanly
    without one to join. idle_notick never ends by itself: the count is read while the run provably goes on."""
    m = machine(guest("idle_notick"), **kwargs)
    m.start(timeout=timeout)
    m.serial.expect(r"idle: ready, no timer", timeout=30)
    # it names itself when first scheduled: up to 10 s for one to show, and 0.3 s of looking for none to
    seen, deadline = clock_threads(), time.monotonic() + (10 if expected else 0.3)
    while seen <= expected and time.monotonic() < deadline:
        if seen == expected and expected:
            break
        time.sleep(0.005)
        seen = clock_threads()
    assert m.running, m.result
    assert seen == expected
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    assert clock_threads() == 0  # joined
