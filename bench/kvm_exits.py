"""MMIO exit cost on the KVM backend relative to bare KVM ioctls, measured in the nested VM of tools/nested.py.

    python bench/kvm_exits.py [--n 10000] [--runs 1]

One nested boot runs `vmmrun --backend kvm bench_exits.elf` (guest/bench_exits.c built with N=--n:
MMIO writes and reads of the PL011's IBRD, HVC, trapped system registers; timed in the guest with
CNTVCT, empty loop subtracted) and `kvm_raw --n` (bench/kvm_raw.c: a bare KVM_RUN loop answering
each KVM_EXIT_MMIO with nothing else, timed on the host side). The ratio vmmpy/raw for the MMIO
exits is the cost of libvmm's exit path (vCPU thread, bus dispatch, device model) over KVM's own.

Everything runs under TCG emulating EL2, so absolute numbers are far slower than on hardware (an
exit costs ~100 µs here); the ratio is the result. HVC (PSCI) and the timer / GIC system registers are
handled inside KVM on this backend, so they are shown for vmmpy only. Writes
bench/results/kvm_exits.json.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import common  # noqa: E402
import nested  # noqa: E402

from tests import guests as table  # noqa: E402

RAW_RE = re.compile(r"KVMRAW name=(\w+) iters=(\d+) exits=(\d+) ns=(\d+) ns_per_iter=([\d.]+)")
PAIRED = ["mmio_write", "mmio_read"]
VMMPY_ONLY = ["hvc", "sysreg_cntv_ctl", "sysreg_icc_pmr"]


def raw_results(text: str) -> dict[str, float]:
    return {m.group(1): int(m.group(4)) / int(m.group(2)) for m in RAW_RE.finditer(text)}


def net(results: dict[str, float]) -> dict[str, float]:
    base = results.get("loop", 0.0)
    return {k: max(v - base, 0.0) for k, v in results.items() if k != "loop"}


def build(vm_runs: list[dict[str, float]], raw_runs: list[dict[str, float]], config: dict | None = None) -> dict:
    """Each nested boot's ns/iteration through libvmm (vmmrun) and through bare ioctls (kvm_raw)."""
    vm, raw = [net(r) for r in vm_runs], [net(r) for r in raw_runs]
    rows = [
        common.row(k, "ns", [r[k] for r in vm if k in r], {"kvm": [r[k] for r in raw if k in r]})
        for k in PAIRED + VMMPY_ONLY
    ]
    return common.record(
        "kvm_exits",
        "MMIO exit cost through libvmm's KVM backend vs bare KVM ioctls (nested VM)",
        rows,
        baseline="kvm",
        config={"nested": True, **(config or {})},
        extra={"vmmpy_ns_per_iter": vm_runs, "raw_ns_per_iter": raw_runs},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="exits per measurement (bench_exits N, kvm_raw N)")
    ap.add_argument("--runs", type=int, default=1, help="nested boots (the minimum of each is kept)")
    args = ap.parse_args()
    run = table.Run(
        f"bench_exits-n{args.n}",
        "bench_exits",
        expect=(r"^BENCH done$",),
        make_vars=(f"N={args.n}",),
        timeout=60 + args.n * 0.01,
    )
    vm_best: dict[str, float] = {}
    raw_best: dict[str, float] = {}
    vm_runs: list[dict[str, float]] = []
    raw_runs: list[dict[str, float]] = []
    walls = []
    for _ in range(args.runs):
        try:
            n = nested.boot([run], raw=args.n)
        except nested.NestedError as e:
            print(f"kvm_exits: {e}", file=sys.stderr)
            return 2
        walls.append(n.wall)
        res, raw = n.results.get(run.id), n.results.get("kvm_raw")
        if not n.kvm:
            print("kvm_exits: no /dev/kvm in the nested VM", file=sys.stderr)
            return 2
        if res is None or res.rc != 0 or table.check(run, res.output):
            out = res.output[-2000:] if res else n.console[-2000:]
            err = "\n".join(res.stderr) if res else ""
            rc = res.rc if res else None
            print(f"kvm_exits: vmmrun bench_exits failed (rc {rc}):\n{err}\n{out}", file=sys.stderr)
            return 1
        if raw is None or raw.rc != 0:
            print(f"kvm_exits: kvm_raw failed:\n{raw.output if raw else n.console[-2000:]}", file=sys.stderr)
            return 1
        vm_runs.append(common.parse(res.output.encode()))
        raw_runs.append(raw_results(raw.output))
        for k, v in common.parse(res.output.encode()).items():
            vm_best[k] = min(vm_best.get(k, float("inf")), v)
        for k, v in raw_results(raw.output).items():
            raw_best[k] = min(raw_best.get(k, float("inf")), v)
    vm_net, raw_net = net(vm_best), net(raw_best)
    print(f"MMIO exit cost in the nested VM, ns per exit (empty loop subtracted; N={args.n}; "
          f"min of {args.runs} boot(s), {sum(walls):.1f} s)")  # fmt: skip
    print(f"{'measurement':<18} {'vmmpy-kvm':>14} {'raw ioctl':>14} {'vmmpy/raw':>10}")
    ratios = {}
    for k in PAIRED + VMMPY_ONLY:
        a, b = vm_net.get(k), raw_net.get(k)
        fa = f"{a:11.0f} ns" if a is not None else f"{'-':>14}"
        fb = f"{b:11.0f} ns" if b is not None else f"{'-':>14}"
        if a is not None and b:
            ratios[k] = a / b
        fr = f"{ratios[k]:9.2f}x" if k in ratios else f"{'-':>10}"
        print(f"{k:<18} {fa} {fb} {fr}")
    path = common.save(build(vm_runs, raw_runs, {"n": args.n, "runs": args.runs}))
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
