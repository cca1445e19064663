"""The run loop's host errors (csrc/core/run.c run_one): the backend fails the reset of a vCPU that PSCI CPU_ON
powered on, or fails while running a vCPU (an exit of kind VMM_EXIT_HOST_ERROR). Either ends the run at once with
VMM_RUN_HOST_ERROR, exit status 0 and vmm_last_error() saying what failed; the failed vCPU does not enter the guest
again; the VM has ended (include/vmm.h: a VM that failed cannot run again, VMM_ESTATE); no thread is left behind.
On each of the three loops that call run_one: one thread in real time, deterministic, and a thread per vCPU.

Unicorn does not fail on its own: an LD_PRELOAD shim (tests/conftest.py run_with_shim) interposes the two calls the
soft backend makes through libvmm's PLT, armed by an environment variable the script sets once the machine is built:
- uc_reg_write of VMPIDR_EL2 = 0x80000001: the last system-register write of vmm__soft_boot_state (soft_exc.c) for
  vCPU 1, which only a CPU_ON makes; it fails, and soft_vcpu_reset with it;
- uc_emu_start on the second engine the run enters (vCPU 1's first run: vCPU 0 ran to make the CPU_ON) fails with
  UC_ERR_EXCEPTION, which soft_vcpu_run reports as VMM_EXIT_HOST_ERROR ("stopped with ...").
The guest is smp on 2 vCPUs, which otherwise brings vCPU 1 online and powers off
(test_the_shim_unarmed_changes_nothing): a run that goes on after the failure ends with POWEROFF, not HOST_ERROR,
within a second.

Thread creation (run.c vmm_run, run_loop_threaded), with a second shim (FAIL_THREAD_C) that fails libvmm's
pthread_create once with EAGAIN and checks libvmm's pthread_join calls: a vCPU thread that cannot start ends the run
as a host error (the threads already started are joined, no further one is started); a clock thread that cannot
start is one warning, and the run goes on without it (its timeout and real-time timers) and never joins it.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os

import pytest

from . import guests as table
from .conftest import run_with_shim

# the loops that call run_one; a thread per vCPU needs the patched Unicorn (its parallel translation)
LOOPS = [
    pytest.param({"vcpu_threads": "one"}, id="one-thread"),
    pytest.param({"deterministic": True}, id="deterministic"),
    pytest.param(
        {"vcpu_threads": "per-vcpu"},
        id="vcpu-threads",
        marks=pytest.mark.skipif(not table.parallel_engine(), reason="the patched Unicorn is not built"),
    ),
]

# Fails Unicorn calls libvmm makes, once each, armed at call time by the environment:
# - FAIL_RESET: uc_reg_write of VMPIDR_EL2 with the value FAIL_RESET (vCPU 1's: 0x80000001);
# - FAIL_RUN_ENGINE=N: uc_emu_start on the N-th engine entered since it was set, at its first entry.
# Either failure returns UC_ERR_EXCEPTION without calling Unicorn. shim_report() says what happened: which failure,
# on which thread, at which pc, and how often the failed engine was entered afterwards. The real functions are found
# with RTLD_NEXT, else in the libunicorn vmmpy loaded (dlopen'd after start-up: not in RTLD_NEXT's search list).
FAIL_UNICORN_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "@UNICORN@/include/unicorn/unicorn.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uc_engine *failed, *seen[16];
static unsigned nseen;
static int resets_failed, runs_failed;
static long entered_after;
static uint64_t failed_pc;
static char failed_thread[16];
static char report[256];

static void *real(const char *name)
{
    void *h, *p = dlsym(RTLD_NEXT, name);
    if (!p && (h = dlopen("libunicorn.so.2", RTLD_LAZY | RTLD_NOLOAD)))
        p = dlsym(h, name);
    if (!p)
        abort();
    return p;
}

static long env(const char *name)
{
    const char *s = getenv(name);
    return s ? strtol(s, NULL, 0) : -1;
}

uc_err uc_reg_write(uc_engine *uc, int regid, const void *value)
{
    static uc_err (*fn)(uc_engine *, int, const void *);
    const uc_arm64_cp_reg *c = value;
    long want = env("FAIL_RESET");
    int fail = 0;

    if (!fn)
        fn = real("uc_reg_write");
    if (want >= 0 && regid == UC_ARM64_REG_CP_REG && c->op0 == 3 && c->op1 == 4 && c->crn == 0 && c->crm == 0 &&
        c->op2 == 5 && c->val == (uint64_t)want) {
        pthread_mutex_lock(&lock);
        if (!failed) {
            failed = uc;
            pthread_getname_np(pthread_self(), failed_thread, sizeof failed_thread);
            resets_failed++;
            fail = 1;
        }
        pthread_mutex_unlock(&lock);
    }
    return fail ? UC_ERR_EXCEPTION : fn(uc, regid, value);
}

uc_err uc_emu_start(uc_engine *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count)
{
    static uc_err (*fn)(uc_engine *, uint64_t, uint64_t, uint64_t, size_t);
    long nth = env("FAIL_RUN_ENGINE");
    int fail = 0;
    unsigned i;

    if (!fn)
        fn = real("uc_emu_start");
    pthread_mutex_lock(&lock);
    if (failed && uc == failed)
        entered_after++;
    if (nth > 0 && !failed) {
        for (i = 0; i < nseen && seen[i] != uc; i++)
            ;
        if (i == nseen && nseen < 16)
            seen[nseen++] = uc;
        if (i + 1 == (unsigned long)nth) {
            failed = uc;
            pthread_getname_np(pthread_self(), failed_thread, sizeof failed_thread);
            failed_pc = begin;
            runs_failed++;
            fail = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return fail ? UC_ERR_EXCEPTION : fn(uc, begin, until, timeout, count);
}

const char *shim_report(void)
{
    const char *(*str)(uc_err) = real("uc_strerror");
    pthread_mutex_lock(&lock);
    snprintf(report, sizeof report,
             "{\"resets_failed\": %d, \"runs_failed\": %d, \"entered_after\": %ld, \"pc\": %llu, \"thread\": \"%s\", "
             "\"strerror\": \"%s\"}",
             resets_failed, runs_failed, entered_after, (unsigned long long)failed_pc, failed_thread,
             str(UC_ERR_EXCEPTION));
    pthread_mutex_unlock(&lock);
    return report;
}
"""

# For the scripts below: the run's threads still there (libvmm names them: vmm-clock, vmm-vcpuN), and what a further
# run says.
RUN_THREADS = r"""
def run_threads():
    names = []
    for t in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{t}/comm') as f:
                names.append(f.read().strip())
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(n for n in names if n.startswith(('vmm-clock', 'vmm-vcpu')))

def run_again(m):  # what a further run says: 'ran', or the error of a VM that has ended
    try:
        m.run(timeout=1)
        return 'ran'
    except vmmpy.StateError as e:
        return str(e)
"""

# Builds the machine, arms the shim (ARM: name=value, or nothing), runs it and prints one JSON line: the result, the
# shim's report, the serial output, the run's threads still there after it (libvmm names them: vmm-clock, vmm-vcpuN)
# and what a further run says.
SCRIPT = r"""
import ctypes, json, os, vmmpy

@RUN_THREADS@

with vmmpy.Machine(@GUEST@, cpus=2, backend='soft', **@KWARGS@) as m:
    if @ARM@:
        os.environ.update([@ARM@.split('=', 1)])
    r = m.run(timeout=30)
    os.environ.pop('FAIL_RESET', None)
    os.environ.pop('FAIL_RUN_ENGINE', None)
    left = run_threads()
    again = run_again(m)
    report = ctypes.CDLL(None).shim_report
    report.restype = ctypes.c_char_p
    print(json.dumps({
        'reason': r.reason.name, 'exit_status': r.exit_status, 'message': r.message,
        'shim': json.loads(report()), 'serial': m.serial.text, 'left': left,
        'again': again,
    }))
"""

ENDED = "the VM has ended (powered off, reset or failed); create a new one"


def _unicorn_dir() -> str:
    spec = importlib.util.find_spec("unicorn")  # (finds, without importing it)
    assert spec is not None and spec.origin is not None, "vmmpy needs the unicorn package"
    return os.path.dirname(spec.origin)


def run_armed(tmp_path, guest, kwargs: dict, arm: str | None) -> dict:
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts the process's threads in /proc/self/task")
    shim = FAIL_UNICORN_C.replace("@UNICORN@", _unicorn_dir())
    script = (
        SCRIPT.replace("@RUN_THREADS@", RUN_THREADS)
        .replace("@GUEST@", repr(guest("smp")))
        .replace("@KWARGS@", repr(kwargs))
        .replace("@ARM@", repr(arm))
    )
    r = run_with_shim(tmp_path, shim, script)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # whatever happened, the run ended every thread it started (the clock thread, the vCPU threads)
    assert out["left"] == [], out
    return out


def _on_vcpu_thread(out: dict, kwargs: dict) -> None:
    """The failure happened on vCPU 1's thread with a thread per vCPU, else on the one thread that runs them all
    (the portable host layer names no threads: nothing to tell apart there)."""
    if os.environ.get("VMMPY_EXPECT_HOST") == "posix":
        return
    thread = out["shim"]["thread"]
    if kwargs.get("vcpu_threads") == "per-vcpu":
        assert thread == "vmm-vcpu1", out
    else:
        assert not thread.startswith("vmm-"), out


@pytest.mark.parametrize("kwargs", LOOPS)
def test_the_shim_unarmed_changes_nothing(tmp_path, guest, kwargs):
    """The baseline the other tests differ from: with the shim loaded but not armed, smp brings vCPU 1 online and
    powers off, so a run that went on past a failure would not end as a host error. (Its verdict, PASS smp with
    status 0, is not asserted: its waits are bounded in guest time, which a loaded host stretches in real time.)"""
    out = run_armed(tmp_path, guest, kwargs, None)
    assert out["reason"] == "POWEROFF", out
    assert "cpu 1 online" in out["serial"], out["serial"]
    assert out["shim"]["resets_failed"] == out["shim"]["runs_failed"] == 0, out
    assert out["again"] == ENDED


@pytest.mark.parametrize("kwargs", LOOPS)
def test_a_cpu_on_whose_reset_fails_ends_the_run_as_a_host_error(tmp_path, guest, kwargs):
    """vCPU 0 powers vCPU 1 on; vCPU 1's reset (run_one, on the thread that runs vCPU 1) fails in the backend. The
    run ends at once: HOST_ERROR, exit status exactly 0, the backend's message; vCPU 1 never enters the guest with
    its half-set state (its engine is not entered again: on one thread it would run a slice); the VM has ended."""
    out = run_armed(tmp_path, guest, kwargs, "FAIL_RESET=0x80000001")
    assert out["shim"]["resets_failed"] == 1, out
    assert (out["reason"], out["exit_status"], out["message"]) == (
        "HOST_ERROR",
        0,
        "soft: cannot set the boot CPU state",
    ), out
    assert out["shim"]["entered_after"] == 0, out
    assert "cpu 1 online" not in out["serial"], out["serial"]
    _on_vcpu_thread(out, kwargs)
    assert out["again"] == ENDED


@pytest.mark.parametrize("kwargs", LOOPS)
def test_an_engine_that_fails_a_run_ends_the_run_as_a_host_error(tmp_path, guest, kwargs):
    """vCPU 1's first entry into the guest (after vCPU 0's CPU_ON) fails in Unicorn: the backend's exit is a host
    error (VMM_EXIT_HOST_ERROR), and the run ends with it at once: HOST_ERROR, exit status exactly 0, a message
    naming the vCPU, Unicorn's error and the pc it was to start at; the failed engine is not entered again (the
    run does not go on to smp's power-off); the VM has ended."""
    out = run_armed(tmp_path, guest, kwargs, "FAIL_RUN_ENGINE=2")
    shim = out["shim"]
    assert shim["runs_failed"] == 1 and shim["pc"], out
    assert (out["reason"], out["exit_status"], out["message"]) == (
        "HOST_ERROR",
        0,
        f"soft: vCPU 1 stopped with '{shim['strerror']}' at pc {shim['pc']:#x}",
    ), out
    assert shim["strerror"] == "Unhandled CPU exception (UC_ERR_EXCEPTION)"
    assert shim["entered_after"] == 0, out
    assert "cpu 1 online" not in out["serial"], out["serial"]
    _on_vcpu_thread(out, kwargs)
    assert out["again"] == ENDED


# Thread creation (run.c): vmm_run starts the clock thread (clock_main, "vmm-clock") when the run has a timeout or
# is in real time, then the threaded loop (run_loop_threaded) a thread per vCPU (vcpu_thread_main, "vmm-vcpuN"), in
# vCPU order. Neither function is exported (dladdr sees dynamic symbols only), so the shim tells them apart by what
# it can see robustly: the call comes from libvmm (the object the caller's code lies in exports vmm_run), and its
# start routine. FAIL_THREAD, read at each call (a script sets it just before the run), fails with EAGAIN, once:
# - FAIL_THREAD=first: the first libvmm pthread_create since it was set: the clock thread, vmm_run's first thread;
# - FAIL_THREAD=repeat: the first libvmm pthread_create since it was set whose start routine an earlier one since then
#   had: vCPU 1's thread (vCPU 0's ran the same routine; the clock thread's routine is another, and it is started
#   once), whatever the order of the clock thread and the vCPU threads.
# The shim also interposes libvmm's pthread_join: a join of a thread id no libvmm pthread_create returned (one that
# failed, or one joined already) is counted and answered ESRCH, not passed on (glibc would crash on it). Every other
# caller's calls go straight to libc. thread_report() lists libvmm's creates in order: the start routine (numbered
# by first appearance), whether FAIL_THREAD was set, the error (0: started) and how often the thread was joined.
FAIL_THREAD_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX 64
typedef int create_fn(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
typedef int join_fn(pthread_t, void **);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *(*routines[MAX])(void *);
static unsigned nroutines, nmade;
static struct made {
    unsigned routine;
    int armed, err, joins; /* err: -1 while the real pthread_create runs */
    pthread_t thread;
} made[MAX];
static int failed, unknown_joins;
static char report[8192];

/* whether `caller` lies in libvmm: the object it lies in exports vmm_run (the Python module links libvmm in) */
static int from_libvmm(const void *caller)
{
    Dl_info at, run;
    void *h, *sym;
    int yes = 0;

    if (!dladdr(caller, &at) || !at.dli_fname || !*at.dli_fname)
        return 0;
    if ((h = dlopen(at.dli_fname, RTLD_LAZY | RTLD_NOLOAD))) {
        yes = (sym = dlsym(h, "vmm_run")) && dladdr(sym, &run) && run.dli_fbase == at.dli_fbase;
        dlclose(h);
    }
    return yes;
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static create_fn *real;
    const char *arm = getenv("FAIL_THREAD");
    struct made *m = NULL;
    unsigned r, i;
    int err = -1, again = 0;

    if (!real)
        real = (create_fn *)dlsym(RTLD_NEXT, "pthread_create");
    if (!from_libvmm(__builtin_return_address(0)))
        return real(thread, attr, fn, arg);
    pthread_mutex_lock(&lock);
    for (r = 0; r < nroutines && routines[r] != fn; r++)
        ;
    if (r == nroutines && nroutines < MAX)
        routines[nroutines++] = fn;
    for (i = 0; i < nmade; i++)
        again |= made[i].armed && made[i].routine == r;
    if (nmade < MAX) {
        m = &made[nmade++];
        *m = (struct made){ .routine = r, .armed = arm != NULL, .err = -1 };
    }
    if (arm && !failed && (!strcmp(arm, "first") || (!strcmp(arm, "repeat") && again))) {
        failed = 1;
        err = EAGAIN; /* what glibc says when a thread cannot be had (RLIMIT_NPROC, no memory for its stack) */
    }
    pthread_mutex_unlock(&lock);
    if (err < 0)
        err = real(thread, attr, fn, arg);
    pthread_mutex_lock(&lock);
    if (m) {
        m->err = err;
        if (!err)
            m->thread = *thread;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

int pthread_join(pthread_t thread, void **ret)
{
    static join_fn *real;
    int i, found = -1;

    if (!real)
        real = (join_fn *)dlsym(RTLD_NEXT, "pthread_join");
    if (!from_libvmm(__builtin_return_address(0)))
        return real(thread, ret);
    pthread_mutex_lock(&lock);
    for (i = (int)nmade - 1; i >= 0 && found < 0; i--) /* the newest first: glibc reuses the ids of joined threads */
        if (made[i].err == 0 && made[i].thread == thread && !made[i].joins)
            found = i;
    if (found >= 0)
        made[found].joins++;
    else
        unknown_joins++;
    pthread_mutex_unlock(&lock);
    return found >= 0 ? real(thread, ret) : ESRCH;
}

const char *thread_report(void)
{
    size_t n;
    unsigned i;

    pthread_mutex_lock(&lock);
    n = (size_t)snprintf(report, sizeof report, "{\"unknown_joins\": %d, \"made\": [", unknown_joins);
    for (i = 0; i < nmade && n < sizeof report; i++)
        n += (size_t)snprintf(report + n, sizeof report - n, "%s[%u, %d, %d, %d]", i ? ", " : "", made[i].routine,
                              made[i].armed, made[i].err, made[i].joins);
    if (n < sizeof report)
        snprintf(report + n, sizeof report - n, "]}");
    pthread_mutex_unlock(&lock);
    return report;
}
"""

# Builds the machine and makes its runs: RUNS is [(FAIL_THREAD or None, a vmm_stop_at time or None), ...]. Prints one
# JSON line: each run's result, virtual clock, the run's threads still there after it and serial output so far; the
# warnings the machine logged (libvmm's log reaches Python's logging through Machine's log callback, as "subsys:
# message"); the shim's report; and, after a run that ended the VM, what a further run says. A run that hangs ends
# the process (faulthandler, every thread's stack on stderr) well before run_with_shim's 60 s.
THREAD_SCRIPT = r"""
import ctypes, faulthandler, json, logging, os, vmmpy

faulthandler.dump_traceback_later(20, exit=True)

class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())

warnings = Warnings()
logging.getLogger('vmmpy').addHandler(warnings)

@RUN_THREADS@

runs = []
again = None
with vmmpy.Machine(@GUEST@, **@KWARGS@) as m:
    for arm, stop_at in @RUNS@:
        if arm:
            os.environ['FAIL_THREAD'] = arm
        if stop_at is not None:
            m.stop_at(stop_at)
        r = m.run(timeout=@TIMEOUT@)
        os.environ.pop('FAIL_THREAD', None)
        runs.append({
            'reason': r.reason.name, 'exit_status': r.exit_status, 'message': r.message, 'clock_ns': m.clock_ns,
            'left': run_threads(), 'serial': m.serial.text.replace('\r', ''),
        })
    if runs[-1]['reason'] not in ('STOPPED', 'TIMEOUT'):
        again = run_again(m)
report = ctypes.CDLL(None).thread_report
report.restype = ctypes.c_char_p
print(json.dumps({'runs': runs, 'warnings': warnings.seen, 'shim': json.loads(report()), 'again': again}))
"""

NO_CLOCK = "core: cannot start the clock thread; running without timeout or timers"
EAGAIN = errno.EAGAIN


def run_threads_failing(tmp_path, guest: str, kwargs: dict, runs: list, timeout: float = 5) -> dict:
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts the process's threads in /proc/self/task")
    script = (
        THREAD_SCRIPT.replace("@RUN_THREADS@", RUN_THREADS)
        .replace("@GUEST@", repr(guest))
        .replace("@KWARGS@", repr(kwargs))
        .replace("@RUNS@", repr(runs))
        .replace("@TIMEOUT@", repr(timeout))
    )
    r = run_with_shim(tmp_path, FAIL_THREAD_C, script)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # whatever failed to start, every thread that did start was joined: none is left, none joined twice, and no
    # join was of a thread that never started
    for run in out["runs"]:
        assert run["left"] == [], out
    assert out["shim"]["unknown_joins"] == 0, out
    return out


@pytest.mark.skipif(not table.parallel_engine(), reason="soft-threaded on 2+ vCPUs needs the patched Unicorn")
def test_a_vcpu_thread_that_cannot_start_ends_the_run_and_joins_the_started_ones(tmp_path, guest):
    """run_loop_threaded on 3 vCPUs (soft-threaded): vCPU 1's thread cannot be created (EAGAIN). The run ends at once
    as a host error: HOST_ERROR, exit status 0, "cannot start a thread for vCPU 1: <strerror(EAGAIN)>"; the VM has
    ended. The guest (idle) would run until the timeout: an error that did not end the run shows as TIMEOUT.

    What libvmm started, in order, exactly: the clock thread and vCPU 0's (each joined once), vCPU 1's attempt that
    failed (never joined); no attempt for vCPU 2 and no other join. This is what catches a loop that goes on after
    the failure (the `break` gone): it would start vCPU 2's thread (a fourth create) and join vCPU 1's, which never
    started (an unknown join here; a crash or undefined behaviour in glibc without the shim). 3 vCPUs, not 2, so
    the fourth create shows too: with 2 the loop ends at the failed vCPU anyway."""
    out = run_threads_failing(
        tmp_path, guest("idle"), {"cpus": 3, "backend": "soft-threaded"}, [("repeat", None)], timeout=5
    )
    (run,) = out["runs"]
    assert (run["reason"], run["exit_status"], run["message"]) == (
        "HOST_ERROR",
        0,
        f"cannot start a thread for vCPU 1: {os.strerror(EAGAIN)}",
    ), out
    # [start routine, armed, error, joins]: routine 0 is clock_main, 1 vcpu_thread_main
    assert out["shim"]["made"] == [[0, 1, 0, 1], [1, 1, 0, 1], [1, 1, EAGAIN, 0]], out
    assert out["warnings"] == [], out
    assert out["again"] == ENDED


# the loops a run without its clock thread goes on in; hello powers off with no timer, so each can end on its own
CLOCK_LOOPS = [
    pytest.param({"backend": "soft", "vcpu_threads": "one"}, id="one-thread"),
    pytest.param({"backend": "soft", "deterministic": True}, id="deterministic"),
    pytest.param({"backend": "soft-threaded"}, id="vcpu-threads"),  # 1 vCPU: no patched Unicorn needed
]


@pytest.mark.parametrize("kwargs", CLOCK_LOOPS)
def test_a_run_whose_clock_thread_cannot_start_goes_on_without_it(tmp_path, guest, kwargs):
    """vmm_run cannot create the clock thread (EAGAIN) for a run with a timeout: the run goes on without it (no
    timeout, no real-time timer deadlines) and says so in exactly one warning; hello still powers off (POWEROFF,
    exit status 0) and the VM has ended as after any power-off. The thread that never started is not joined (an
    unknown join here; glibc would crash on the id), and the run started nothing else but, on the threaded loop,
    vCPU 0's thread, joined once. A failure that ended the run instead shows as HOST_ERROR."""
    out = run_threads_failing(tmp_path, guest("hello"), kwargs, [("first", None)], timeout=5)
    (run,) = out["runs"]
    assert (run["reason"], run["exit_status"]) == ("POWEROFF", 0), out
    assert run["serial"].startswith("Hello from vmmpy guest!\n"), out
    assert out["warnings"] == [NO_CLOCK], out
    vcpus = [[1, 1, 0, 1]] if kwargs["backend"] == "soft-threaded" else []
    assert out["shim"]["made"] == [[0, 1, EAGAIN, 0], *vcpus], out
    assert out["again"] == ENDED


def test_a_deterministic_run_without_its_clock_thread_keeps_its_timers_and_stop_point(tmp_path, guest):
    """Deterministic mode keeps time itself: the clock thread only watches the run's timeout. Without it (its
    creation fails), idle's 100 Hz tick still fires (200 ticks by 2.05 s of virtual time) and vmm_stop_at() ends the
    run exactly there (STOPPED, the clock at the stop point), after one warning. The VM is paused, not ended: the
    next run (nothing failing) has its clock thread again, started and joined once, and ticks on to its own stop;
    the thread that never started is never joined, by either run."""
    runs = [("first", 2_050_000_000), (None, 3_050_000_000)]
    out = run_threads_failing(tmp_path, guest("idle"), {"backend": "soft", "deterministic": True}, runs, timeout=5)
    first, second = out["runs"]
    assert (first["reason"], first["clock_ns"]) == ("STOPPED", 2_050_000_000), out
    assert "idle: 200 ticks\n" in first["serial"] and "idle: 300 ticks" not in first["serial"], out
    assert (second["reason"], second["clock_ns"]) == ("STOPPED", 3_050_000_000), out
    assert "idle: 300 ticks\n" in second["serial"], out
    assert out["warnings"] == [NO_CLOCK], out
    assert out["shim"]["made"] == [[0, 1, EAGAIN, 0], [0, 0, 0, 1]], out


def test_a_deterministic_run_without_a_timeout_starts_and_joins_no_clock_thread(tmp_path, guest):
    """Deterministic mode without a timeout needs no clock thread (the loop keeps time, vmm_stop_at ends the run):
    vmm_run creates none, and so joins none (an unknown join here; glibc's pthread_join of a thread id that was
    never set is undefined behaviour)."""
    out = run_threads_failing(
        tmp_path, guest("idle"), {"backend": "soft", "deterministic": True}, [(None, 50_000_000)], timeout=None
    )
    (run,) = out["runs"]
    assert (run["reason"], run["clock_ns"]) == ("STOPPED", 50_000_000), out
    assert out["shim"]["made"] == [] and out["warnings"] == [], out
