"""vmm_config.vcpu_threads on the soft backend: a real-time SMP VM runs a thread per vCPU by default.

With the patched Unicorn (its parallel translation makes the guest's atomics atomic between threads)
`vcpu_threads="auto"` runs a real-time VM of 2 or more vCPUs on run.c's threaded loop, still under the
name "soft"; `"one"` keeps every vCPU on the caller's thread, round-robin; deterministic mode always
does. The guest table runs the SMP guests both ways (tests/test_irq_guests.py, peers "soft" and
"soft-1thread"): smp on 8 vCPUs checks the atomics, smp_ic the synchronous cross-vCPU IC IVAU.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time

import pytest

import vmmpy
from vmmpy import RunReason

from . import guests as table

needs_patched = pytest.mark.skipif(not table.parallel_engine(), reason="the patched Unicorn is not built")
# the threads are told apart by name (vmm-vcpuN); the portable host layer names none (POSIX has no
# pthread_setname_np), where "no vCPU thread seen" would pass for the wrong reason
needs_thread_names = pytest.mark.skipif(
    os.environ.get("VMMPY_EXPECT_HOST") == "posix", reason="the portable host layer names no threads"
)


def vcpu_thread_names() -> set[str]:
    names = set()
    for f in glob.glob("/proc/self/task/*/comm"):
        with contextlib.suppress(OSError), open(f) as fh:  # a thread that ended meanwhile
            names.add(fh.read().strip())
    return {n for n in names if n.startswith("vmm-vcpu")}


def run_smp(m) -> vmmpy.RunResult:
    m.start()
    m.serial.expect(r"cpu 1 online", timeout=60)
    return m.wait(timeout=120)


BOTH = {"vmm-vcpu0", "vmm-vcpu1"}


def threads_while_running(machine, guest, **kwargs) -> set[str]:
    """The vCPU threads of a 2-vCPU VM, read while it provably runs.

    idle_notick never ends by itself, so the VM is still running when the names are read (asserted):
    neither "seen" nor "not seen" can come from a run that already ended. Every vCPU gets its thread for
    the whole run (run.c starts them all, off or not), and each names itself first thing: vCPU 0's has
    done so before the guest's first line, vCPU 1's may not have been scheduled yet, hence the wait for
    both (which only a per-vCPU run can satisfy; the one-thread runs see none at all).
    """
    m = machine(guest("idle_notick"), cpus=2, **kwargs)
    m.start()
    m.serial.expect(r"idle: ready", timeout=60)
    seen, deadline = vcpu_thread_names(), time.monotonic() + 10
    while seen and not seen >= BOTH and time.monotonic() < deadline:
        time.sleep(0.005)
        seen = vcpu_thread_names()
    assert m.running, m.result
    res = m.stop()
    assert res is not None and res.reason == RunReason.STOPPED, res
    return seen


@needs_patched
@needs_thread_names
def test_real_time_smp_runs_a_thread_per_vcpu(machine, guest):
    seen = threads_while_running(machine, guest, backend="soft")
    assert seen >= BOTH, seen
    m = machine(guest("smp"), cpus=2, backend="soft")
    assert run_smp(m).ok, m.result
    assert m.backend == "soft"  # same backend, same snapshots
    assert m.stats()["spin_yields"] == 0  # the one-thread spin detector is not in the way


@needs_thread_names
def test_one_thread_when_asked(machine, guest):
    assert not threads_while_running(machine, guest, backend="soft", vcpu_threads="one")
    assert run_smp(machine(guest("smp"), cpus=2, backend="soft", vcpu_threads="one")).ok


@needs_thread_names
def test_deterministic_smp_stays_on_one_thread(machine, guest):
    assert not threads_while_running(machine, guest, backend="soft", deterministic=True)
    assert run_smp(machine(guest("smp"), cpus=2, backend="soft", deterministic=True)).ok


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"vcpu_threads": "two"}, "vcpu_threads must be one of"),
        ({"vcpu_threads": "one", "backend": "soft-threaded"}, "runs a thread per vCPU"),
        ({"vcpu_threads": "per-vcpu", "deterministic": True}, "deterministic mode runs every vCPU on one thread"),
    ],
)
def test_impossible_choices_are_refused_in_one_line(guest, kwargs, words):
    with pytest.raises(vmmpy.VmmError) as e:
        vmmpy.Machine(guest("hello"), cpus=2, **{"backend": "soft", **kwargs}).close()
    assert words in str(e.value)
    assert "\n" not in str(e.value)


@needs_patched
def test_per_vcpu_on_one_vcpu(machine, guest):
    m = machine(guest("hello"), backend="soft", vcpu_threads="per-vcpu")
    assert m.run(timeout=60).reason == RunReason.POWEROFF
