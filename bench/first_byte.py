"""Time to first serial byte and host memory per VM: vmmpy in-process vs a QEMU TCG process, same ELF.

vmmpy: Machine() creation + load + run until the guest's first PL011 byte reaches Python.
QEMU: process start until its first stdout byte (QEMU cannot be created in-process).
Memory: resident-set growth per idle VM beyond the guest RAM it touched (the kernel image).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def vmmpy_first_byte(elf: str) -> float:
    import vmmpy

    t0 = time.perf_counter()
    with vmmpy.Machine(elf) as m:
        m.serial.expect(".", timeout=30)
        t = time.perf_counter() - t0
        m.wait(timeout=30)
    return t


def qemu_first_byte(elf: str) -> float:
    cmd = [common.qemu_binary(), "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-m", "256M", "-nographic",
           "-semihosting", "-monitor", "none", "-serial", "stdio", "-kernel", elf]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.read(1)
    t = time.perf_counter() - t0
    p.wait(timeout=30)
    return t


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def vmmpy_mem_per_vm(elf: str, n: int = 10) -> float:
    import vmmpy

    warm = vmmpy.Machine(elf)  # first-use costs (code pages, allocator arenas) out of the way
    warm.run(timeout=30)
    before = rss_kib()
    vms = [vmmpy.Machine(elf) for _ in range(n)]
    for m in vms:
        m.run(timeout=30)
    per_vm = (rss_kib() - before) / n
    kernel_kib = (vms[0].boot_info().kernel_end - vms[0].boot_info().kernel_start) / 1024
    for m in [warm, *vms]:
        m.close()
    return per_vm - kernel_kib


FIRST_BYTE_TARGET_MS = 20.0


def build(vmmpy_ms: list[float], qemu_ms: list[float], mem_kib: float | None, config: dict | None = None) -> dict:
    rows = [
        common.row(
            "first_byte",
            "ms",
            vmmpy_ms,
            {"qemu": qemu_ms},
            stat="median",
            target={"value": FIRST_BYTE_TARGET_MS},
            note="vmmpy: Machine() to first byte in Python; QEMU: process start to first stdout byte",
        )
    ]
    if mem_kib is not None:
        rows.append(
            common.row(
                "mem_per_vm",
                "KiB",
                [mem_kib],
                stat="median",
                note="resident-set growth per idle VM beyond the guest RAM it touched",
            )
        )
    return common.record(
        "first_byte", "Time to first serial byte (hello.elf) and host memory per VM", rows, config=config
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    elf = common.guest("hello")
    v, q = [], []
    for _ in range(args.runs):
        v.append(vmmpy_first_byte(elf) * 1e3)
        q.append(qemu_first_byte(elf) * 1e3)
    mem = vmmpy_mem_per_vm(elf)
    print(f"time to first serial byte, ms (median of {args.runs}; min in brackets)")
    print(common.table([("first_byte", statistics.median(v), statistics.median(q))], unit="ms"))
    print(f"  min: vmmpy {min(v):.2f} ms, qemu {min(q):.2f} ms")
    print(f"host memory per VM beyond guest RAM (soft backend, idle after hello): {mem:.0f} KiB")
    rec = build(v, q, mem, {"runs": args.runs})
    print(common.targets_line(rec))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
