"""VM-exit latency: HVC, MMIO write/read to a user-space device register, trapped system-register reads.

Runs guest/build/bench_exits.elf on vmmpy and on qemu-system-aarch64 (TCG, same ELF) in one run,
prints ns per exit side by side with the ratio, and writes bench/results/exit_latency.json.
The guest times each loop with CNTVCT; the empty-loop cost is subtracted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ORDER = ["hvc", "mmio_write", "mmio_read", "sysreg_cntv_ctl", "sysreg_icc_pmr"]


def net(results: dict[str, float]) -> dict[str, float]:
    base = results.get("loop", 0.0)
    return {k: max(v - base, 0.0) for k, v in results.items() if k != "loop"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-guest runs per VMM (the minimum is kept)")
    args = ap.parse_args()
    elf = common.guest("bench_exits")
    peers = {"vmmpy": common.run_vmmpy, "qemu-tcg": common.run_qemu}
    raw: dict[str, dict[str, float]] = {}
    t0 = time.monotonic()
    for _ in range(args.runs):  # interleave the peers so machine noise hits both alike
        for name, fn in peers.items():
            res = common.parse(fn(elf))
            for k, v in res.items():
                raw.setdefault(name, {})[k] = min(raw.get(name, {}).get(k, float("inf")), v)
    nets = {k: net(v) for k, v in raw.items()}
    rows = [(k, nets["vmmpy"].get(k), nets["qemu-tcg"].get(k)) for k in ORDER]
    print(f"exit latency, ns per exit (empty loop subtracted; min of {args.runs} runs; {time.monotonic() - t0:.1f} s)")
    print(common.table(rows))
    path = common.save(
        "exit_latency",
        {"host": platform.node(), "machine": platform.machine(), "raw_ns_per_iter": raw, "net_ns_per_exit": nets},
    )
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
