"""VM-exit latency: HVC, MMIO write/read to a user-space device register, trapped system-register reads.

Runs guest/build/bench_exits.elf on vmmpy and on qemu-system-aarch64 (TCG, same ELF) in one run,
prints ns per exit side by side with the ratio, and writes bench/results/exit_latency.json.
The guest times each loop with CNTVCT; the empty-loop cost is subtracted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ORDER = ["hvc", "mmio_write", "mmio_read", "sysreg_cntv_ctl", "sysreg_icc_pmr"]
# issue 14: every exit row <= 0.8x QEMU TCG, HVC and MMIO rows <= 0.6x
TARGETS = {"hvc": 0.6, "mmio_write": 0.6, "mmio_read": 0.6}
TARGET_OTHER = 0.8


def net(results: dict[str, float]) -> dict[str, float]:
    base = results.get("loop", 0.0)
    return {k: max(v - base, 0.0) for k, v in results.items() if k != "loop"}


def build(runs: dict[str, list[dict[str, float]]], config: dict | None = None) -> dict:
    """The record from each whole-guest run's raw ns/iteration per peer ("vmmpy", "qemu")."""
    nets = {p: [net(r) for r in rs] for p, rs in runs.items()}
    rows = common.peer_rows(nets, ORDER, TARGETS, TARGET_OTHER)
    return common.record(
        "exit_latency",
        "VM-exit latency, ns per exit (empty loop subtracted)",
        rows,
        config=config,
        extra={"raw_ns_per_iter": runs},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-guest runs per VMM (the minimum is kept)")
    args = ap.parse_args()
    elf = common.guest("bench_exits")
    peers = {"vmmpy": common.run_vmmpy, "qemu": common.run_qemu}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    t0 = time.monotonic()
    for _ in range(args.runs):  # interleave the peers so machine noise hits both alike
        for name, fn in peers.items():
            runs[name].append(common.parse(fn(elf)))
    rec = build(runs, {"runs": args.runs})
    print(f"exit latency, ns per exit (empty loop subtracted; min of {args.runs} runs; {time.monotonic() - t0:.1f} s)")
    print(common.table(common.rows_of(rec, ORDER)))
    print(common.targets_line(rec))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
