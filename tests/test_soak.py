"""Soak: many VMs created, run, stopped mid-I/O and destroyed in one process, in sequence and in
threads, with random input; afterwards the process holds no more fds, threads or mappings than
before, and its RSS has not grown beyond a bound.

Each VM is one of the test guests with a random mix of devices (a GPU, a keyboard and tablet, a
virtio-blk disk on a temp image, a 9p share of a temp dir, virtio-rng) and a random stimulus while it
runs (serial bytes, key taps, tablet moves, frame waits and holds), stopped after a random delay —
usually while output is still streaming, frames being flushed or events being delivered — then
closed. (The guests do not drive blk, 9p or rng themselves: those devices are set up, attached and
torn down with their host fds and memory; the guest I/O in flight is serial, input and GPU.)

Measured: open fds (/proc/self/fd), Python threads and OS threads (/proc/self/task), mappings
(/proc/self/maps lines), RSS (VmRSS). A warm-up round runs first so that one-time costs (the
allocator's per-thread arenas, Unicorn's code caches, imported modules, the logging tree) are in the
baseline; then rounds run until SOAK_SECONDS (default 60) have passed, at least 2.

Bounds, and why:
- fds and threads: exactly the baseline: every VM's disk, share and wake-up fds and its run
  thread must be gone once it is closed;
- mappings: baseline + 64 lines: glibc makes one malloc arena per thread that ever allocated (up to
  8 x cores) and keeps it, and ASan/Unicorn map on demand; a leak per VM would be hundreds of lines
  (guest RAM is one mapping per VM, Unicorn's TB cache several);
- RSS: baseline + 64 MiB: freed memory is not always given back to the kernel (arenas, fragments),
  while a leaked VM keeps its touched guest RAM and 32 MiB of Unicorn translation cache, so a leak of
  a VM every few rounds shows well above it.
Against an ASan build (tools/asan.sh's environment, VMMPY_EXPECT_SANITIZED=1) RSS may grow by ASan's
quarantine of freed memory (256 MiB by default) besides: 20 s of soak there ended 106 MiB up, with no report.
The before/after counts are printed (run with -s to see them; `make soak` does).
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time

import pytest

from tests.conftest import GUEST_DIR
from vmmpy import Machine, errors

# slow tier; no failure artifacts: this test makes hundreds of machines, and what it measures is libvmm's and
# Machine's own resources (with recording on, each close writes a directory and encodes PNGs: +30 MiB of
# allocator growth over 570 machines here, none of it held)
pytestmark = [pytest.mark.slow, pytest.mark.vmmpy_no_artifacts]

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
THREADS = 4
FD_SLACK, THREAD_SLACK, MAPS_SLACK, RSS_SLACK_MIB = 0, 0, 64, 64
if os.environ.get("VMMPY_EXPECT_SANITIZED"):
    RSS_SLACK_MIB += 256  # ASan's quarantine


def counts() -> dict[str, int]:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
        "maps": maps,
        "rss_kib": rss,
    }


def elf(name: str) -> str:
    p = os.path.join(GUEST_DIR, f"{name}.elf")
    if not os.path.exists(p):
        pytest.fail(f"{p} is missing: run `make guests`")
    return p


KEYS = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["space", "enter", "tab", "shift+a", "ctrl+c"]


def one_vm(rng: random.Random, tmp: str, stats: dict[str, int]) -> None:
    """Create a VM with random devices, run it with random input, stop it after a random delay, close it."""
    guest = rng.choice(["hello", "gpu_demo", "input_echo", "input_echo", "timer", "idle", "smp"])
    kw: dict = {"ram": "64M", "log_level": 40}  # ERROR: guest errors from random input are expected
    if guest == "smp":
        kw["cpus"] = 2
    if guest == "gpu_demo" or (guest == "input_echo" and rng.random() < 0.5) or rng.random() < 0.2:
        kw["gpu"] = True
        kw["gpu_size"] = rng.choice([(320, 200), (640, 480)])
    if guest == "input_echo" or rng.random() < 0.3:
        kw["input"] = True
    if rng.random() < 0.4:
        img = os.path.join(tmp, f"disk{rng.randrange(1 << 30)}.img")
        with open(img, "wb") as f:
            f.truncate(1 << 20)
        kw["disk"] = img if rng.random() < 0.7 else (img, "ro")
    if rng.random() < 0.4:
        d = os.path.join(tmp, "share")
        os.makedirs(d, exist_ok=True)
        kw["share"] = d
    if rng.random() < 0.4:
        kw["rng"] = True
    with Machine(elf(guest), **kw) as m:
        if kw.get("gpu") and rng.random() < 0.5:
            m.screen.hold(rng.randrange(1, 4))
        m.start(timeout=20)
        deadline = time.monotonic() + rng.uniform(0.0, 0.6)
        while time.monotonic() < deadline and m.running:
            what = rng.random()
            try:
                if what < 0.3:
                    m.serial.write(bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 64))))
                elif what < 0.6 and kw.get("input"):
                    m.keyboard.tap(rng.choice(KEYS))
                elif what < 0.7 and kw.get("input"):
                    m.tablet.move(rng.randrange(0, 320), rng.randrange(0, 200))
                elif what < 0.8 and kw.get("gpu"):
                    m.screen.wait_frame(m.screen.frames + 1, timeout=0.05)
                else:
                    m.serial.read()
            except (errors.ScreenTimeout, errors.ScreenEOF, errors.SerialEOF, errors.StateError):
                pass
            time.sleep(rng.uniform(0, 0.02))
        if rng.random() < 0.8:
            m.stop()  # mid-run: usually the guest is still printing, flushing or taking events
            stats["stopped"] += 1
        # else: closed while running (close() stops it)
        stats[guest] += 1


def worker(seed: int, n: int, tmp: str, stats: dict[str, int], failures: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        for _ in range(n):
            one_vm(rng, tmp, stats)
    except BaseException as e:  # reported by the main thread
        failures.append(e)


def round_(seed: int, tmp: str, stats: dict[str, int]) -> None:
    """A few VMs in sequence, then THREADS threads with a few VMs each at once."""
    failures: list[BaseException] = []
    worker(seed, 3, tmp, stats, failures)
    threads = [
        threading.Thread(target=worker, args=(seed * 100 + i, 3, tmp, stats, failures), name=f"soak-{i}")
        for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def test_soak(tmp_path):
    from collections import Counter

    stats: Counter = Counter()
    seed = int(os.environ.get("SOAK_SEED", "1"))
    round_(seed, str(tmp_path), stats)  # warm-up
    gc.collect()
    before = counts()
    t0 = time.monotonic()
    rounds = 0
    while rounds < 2 or time.monotonic() - t0 < SECONDS:
        rounds += 1
        round_(seed + rounds, str(tmp_path), stats)
    gc.collect()
    after = counts()
    vms = sum(v for k, v in stats.items() if k != "stopped")
    print(
        f"\nsoak: {rounds} rounds after the warm-up, {vms} VMs in all ({stats['stopped']} stopped mid-run), "
        f"{time.monotonic() - t0:.0f} s; by guest: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k != "stopped")
    )
    for k in before:
        print(f"soak: {k:8} before {before[k]:8} after {after[k]:8} ({after[k] - before[k]:+d})")
    assert after["fds"] <= before["fds"] + FD_SLACK, (before, after)
    assert after["threads"] <= before["threads"] + THREAD_SLACK, (before, after)
    assert after["tasks"] <= before["tasks"] + THREAD_SLACK, (before, after)
    assert after["maps"] <= before["maps"] + MAPS_SLACK, (before, after)
    assert after["rss_kib"] <= before["rss_kib"] + RSS_SLACK_MIB * 1024, (before, after)
