"""What the guest's own debug and PMU features cost on the soft backend: on, and after they are turned off.

Runs guest/build/bench_dbg.elf (a load/add/store loop timed with CNTVCT; one doubleword per page) on vmmpy and
on qemu-system-aarch64 (TCG, same ELF) in one run, --runs whole-guest runs each (the minimum is kept), and
prints ns per iteration side by side with the ratio:

    plain               nothing enabled
    watchpoint_armed    a watchpoint enabled on another page (MDSCR_EL1.MDE|KDE, PSTATE.D clear): on vmmpy
                        every instruction then passes the decode hook (csrc/backend/soft_dbgarch.c)
    watchpoint_off      disabled again: the hooks are gone, so this must be plain's figure
    pmu_counting        the cycle counter and an event counter counting (no per-instruction cost on vmmpy)

and the overheads (armed / plain, off / plain, pmu / plain) for vmmpy. Writes bench/results/dbgarch.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ORDER = ["plain", "watchpoint_armed", "watchpoint_off", "pmu_counting"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-guest runs per VMM (the minimum is kept)")
    args = ap.parse_args()
    elf = common.guest("bench_dbg")
    runs: dict[str, list[dict[str, float]]] = {"vmmpy": [], "qemu": []}
    t0 = time.monotonic()
    for _ in range(args.runs):  # interleaved, so machine noise hits both alike
        runs["vmmpy"].append(common.parse(common.run_vmmpy(elf)))
        runs["qemu"].append(common.parse(common.run_qemu(elf)))
    best = {k: min(r[k] for r in runs["vmmpy"]) for k in ORDER}
    extra = {f"{k}_over_plain": best[k] / best["plain"] for k in ORDER[1:]}
    # the figures that matter are vmmpy's own ratios to plain (extra), not QEMU's: no ratio targets
    rows = [common.row(k, "ns", [r[k] for r in runs["vmmpy"]], {"qemu": [r[k] for r in runs["qemu"]]}) for k in ORDER]
    rec = common.record(
        "dbgarch",
        "Guest debug features: load/store loop, ns per iteration",
        rows,
        config={"runs": args.runs},
        extra={"overhead_vs_plain": extra, "raw_ns_per_iter": runs},
    )
    print(f"guest debug features, ns per iteration (min of {args.runs} runs; {time.monotonic() - t0:.1f} s)")
    print(common.table(common.rows_of(rec, ORDER)))
    print("vmmpy overhead vs plain: " + ", ".join(f"{k} {v:.2f}x" for k, v in extra.items()))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
