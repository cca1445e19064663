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

Not reachable here: run_one's `r < 0` branch after ops->vcpu_run. No backend's vcpu_run returns a negative code
(soft, hvf and kvm report their failures as a VMM_EXIT_HOST_ERROR exit and return 0), so no test can take it.
"""

from __future__ import annotations

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

# Builds the machine, arms the shim (ARM: name=value, or nothing), runs it and prints one JSON line: the result, the
# shim's report, the serial output, the run's threads still there after it (libvmm names them: vmm-clock, vmm-vcpuN)
# and what a further run says.
SCRIPT = r"""
import ctypes, json, os, vmmpy

def run_threads():
    names = []
    for t in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{t}/comm') as f:
                names.append(f.read().strip())
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(n for n in names if n.startswith(('vmm-clock', 'vmm-vcpu')))

with vmmpy.Machine(@GUEST@, cpus=2, backend='soft', **@KWARGS@) as m:
    if @ARM@:
        os.environ.update([@ARM@.split('=', 1)])
    r = m.run(timeout=30)
    os.environ.pop('FAIL_RESET', None)
    os.environ.pop('FAIL_RUN_ENGINE', None)
    left = run_threads()
    try:
        m.run(timeout=1)
        again = 'ran'
    except vmmpy.StateError as e:
        again = str(e)
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
    script = SCRIPT.replace("@GUEST@", repr(guest("smp"))).replace("@KWARGS@", repr(kwargs)).replace("@ARM@", repr(arm))
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
