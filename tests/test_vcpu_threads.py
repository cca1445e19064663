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


def run_seeing_threads(m) -> tuple[vmmpy.RunResult, set[str]]:
    """Run to the end, noting the vCPU threads the process had while the guest ran."""
    seen: set[str] = set()
    m.start()
    m.serial.expect(r"cpu 1 online", timeout=60)
    seen |= vcpu_thread_names()
    return m.wait(timeout=120), seen


@needs_patched
@needs_thread_names
def test_real_time_smp_runs_a_thread_per_vcpu(machine, guest):
    m = machine(guest("smp"), cpus=2, backend="soft")
    res, seen = run_seeing_threads(m)
    assert res.ok, res
    assert m.backend == "soft"  # same backend, same snapshots
    assert {"vmm-vcpu0", "vmm-vcpu1"} <= seen, seen
    assert m.stats()["spin_yields"] == 0  # the one-thread spin detector is not in the way


@needs_thread_names
def test_one_thread_when_asked(machine, guest):
    m = machine(guest("smp"), cpus=2, backend="soft", vcpu_threads="one")
    res, seen = run_seeing_threads(m)
    assert res.ok, res
    assert not seen, seen


@needs_thread_names
def test_deterministic_smp_stays_on_one_thread(machine, guest):
    m = machine(guest("smp"), cpus=2, backend="soft", deterministic=True)
    res, seen = run_seeing_threads(m)
    assert res.ok, res
    assert not seen, seen


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
