"""Shared helpers for benchmarks: run a guest on vmmpy and on QEMU TCG, parse BENCH lines, print tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guest", "build")
RESULTS = os.path.join(ROOT, "bench", "results")

# bytes= (optional): what one iteration moved, for throughput figures (bench_gpu)
BENCH_RE = re.compile(rb"BENCH name=(\w+) iters=(\d+) ticks=(\d+) freq=(\d+)(?: bytes=(\d+))?")


@dataclass
class Sample:
    name: str
    iters: int
    ticks: int
    freq: int
    bytes: int = 0  # per iteration; 0 when the line has no bytes=

    @property
    def ns_per_iter(self) -> float:
        return self.ticks * 1e9 / self.freq / self.iters

    @property
    def mb_per_s(self) -> float | None:
        """Throughput in MB/s (10^6 bytes), None without bytes= or ticks."""
        return self.bytes * 1e3 / self.ns_per_iter if self.bytes and self.ticks else None


def samples(output: bytes) -> list[Sample]:
    """Every BENCH line, in order."""
    return [Sample(m.group(1).decode(), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5) or 0))
            for m in BENCH_RE.finditer(output)]  # fmt: skip


def parse(output: bytes) -> dict[str, float]:
    """Minimum ns/iteration per measurement name."""
    best: dict[str, float] = {}
    for s in samples(output):
        best[s.name] = min(best.get(s.name, float("inf")), s.ns_per_iter)
    return best


def parse_bytes(output: bytes) -> dict[str, int]:
    """Bytes per iteration per measurement name, for the lines that carry bytes=."""
    return {s.name: s.bytes for s in samples(output) if s.bytes}


def guest(name: str) -> str:
    p = os.path.join(GUESTS, f"{name}.elf")
    if not os.path.exists(p):
        raise SystemExit(f"{p} is missing: run `make guests`")
    return p


def run_vmmpy(elf: str, timeout: float = 300, cpus: int = 1, **machine_kw) -> bytes:
    """The guest's serial output; `machine_kw` go to vmmpy.Machine (e.g. gpu=True, gpu_size=(w, h))."""
    import vmmpy

    with vmmpy.Machine(elf, cpus=cpus, **machine_kw) as m:
        res = m.run(timeout=timeout)
        if not res.ok:
            raise SystemExit(f"vmmpy run of {elf} ended with {res.reason.name}: {res.message}")
        return m.serial.data


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-aarch64")


def qemu_command(elf: str, cpu: str = "cortex-a72", cpus: int = 1, extra: list[str] | None = None) -> list[str]:
    """`extra`: more QEMU arguments (devices), before -kernel."""
    q = qemu_binary()
    if not q:
        raise SystemExit("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    return [q, "-M", "virt,gic-version=3", "-cpu", cpu, "-smp", str(cpus), "-m", "256M", "-nographic",
            "-semihosting", "-monitor", "none", "-serial", "stdio", *(extra or []), "-kernel", elf]  # fmt: skip


def run_qemu(
    elf: str, timeout: float = 300, cpu: str = "cortex-a72", cpus: int = 1, extra: list[str] | None = None
) -> bytes:
    cmd = qemu_command(elf, cpu, cpus, extra)
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise SystemExit(f"qemu failed ({p.returncode}): {p.stderr.decode(errors='replace')[-500:]}")
    return p.stdout


def table(rows: list[tuple[str, float | None, float | None]], unit: str = "ns", digits: int = 1) -> str:
    out = [f"{'measurement':<22} {'vmmpy':>12} {'qemu-tcg':>12} {'vmmpy/qemu':>11}"]
    for name, a, b in rows:
        fa = f"{a:10.{digits}f} {unit}" if a is not None else f"{'-':>12}"
        fb = f"{b:10.{digits}f} {unit}" if b is not None else f"{'-':>12}"
        ratio = f"{a / b:10.2f}x" if a is not None and b else f"{'-':>11}"
        out.append(f"{name:<22} {fa} {fb} {ratio}")
    return "\n".join(out)


def save(name: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    return path
