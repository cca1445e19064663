"""VM-exit latency: HVC (PSCI_VERSION and SMCCC function IDs nobody implements), MMIO to a device register
and to the GIC distributor and redistributor, trapped system registers (timer, GIC CPU interface); and, with no
target, an SVC round trip (not an exit: the cost of an exception the soft backend delivers itself).

Runs guest/build/bench_exits.elf on vmmpy and on qemu-system-aarch64 (TCG, same ELF) in one run, with each
CPU model of --cpu-models (the default, cortex-a72, and `max`: rows of `max` are named NAME@max), prints ns
per exit side by side with the ratio, and writes bench/results/exit_latency.json.
The guest times each loop with CNTVCT; the empty-loop cost is subtracted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BASE = ["hvc", "hvc_unknown32", "hvc_unknown64", "mmio_write", "mmio_read", "gicd_typer", "gicd_isenabler",
        "gicd_ipriorityr_write", "gicr_typer", "gicr_isenabler0", "sysreg_cntv_ctl", "sysreg_cntvct",
        "sysreg_icc_pmr", "sysreg_icc_pmr_write", "sysreg_icc_eoir1_spurious", "svc"]  # fmt: skip
DEFAULT_MODEL = "cortex-a72"  # vmmpy's default CPU model, and QEMU's -cpu for it
MODELS = [DEFAULT_MODEL, "max"]
# issue 14: every exit row <= 0.8x QEMU TCG, HVC and MMIO rows (GIC registers included) <= 0.6x
FAST = [n for n in BASE if n.startswith(("hvc", "mmio", "gicd", "gicr"))]


def row_name(base: str, model: str) -> str:
    return base if model == DEFAULT_MODEL else f"{base}@{model}"


ORDER = [row_name(n, m) for m in MODELS for n in BASE]
# `svc` is the guest's own exception (an SVC at EL1 and its ERET through the runtime's vectors), not an exit on
# any VMM: what the soft backend adds per exception it delivers (issue 14's targets are for exits), no target
NO_TARGET = ["svc"]
TARGETS: dict[str, float | None] = {row_name(n, m): 0.6 for m in MODELS for n in FAST}
TARGETS.update({row_name(n, m): None for m in MODELS for n in NO_TARGET})
TARGET_OTHER = 0.8


def net(results: dict[str, float], model: str = DEFAULT_MODEL, base: float | None = None) -> dict[str, float]:
    """One guest run's ns per exit, the empty loop (base: the fastest of the peer's runs) subtracted, named for
    its CPU model."""
    base = results.get("loop", 0.0) if base is None else base
    return {row_name(k, model): max(v - base, 0.0) for k, v in results.items() if k != "loop"}


def per_model(run: dict) -> dict[str, dict[str, float]]:
    if run and all(isinstance(v, dict) for v in run.values()):
        return run
    return {DEFAULT_MODEL: run}


def loops(runs: list[dict]) -> dict[str, float]:
    """The fastest empty loop of each CPU model over a peer's runs. Subtracting each run's own made the
    minimum flatter: one run whose empty loop ran slow (6.4 ns against 1.8) gave HVC 2.0 ns against 6.6."""
    out: dict[str, float] = {}
    for run in runs:
        for model, res in per_model(run).items():
            if "loop" in res:
                out[model] = min(out.get(model, res["loop"]), res["loop"])
    return out


def merged(run: dict, base: dict[str, float] | None = None) -> dict[str, float]:
    return {k: v for model, res in per_model(run).items() for k, v in net(res, model, (base or {}).get(model)).items()}


def build(runs: dict[str, list[dict[str, float]]], config: dict | None = None) -> dict:
    """The record from each whole-guest run's raw ns/iteration per peer ("vmmpy", "qemu"). A run is one guest's
    results, or {MODEL: results} for a run of each CPU model."""
    nets = {p: [merged(r, loops(rs)) for r in rs] for p, rs in runs.items()}
    rows = common.peer_rows(nets, ORDER, TARGETS, TARGET_OTHER)
    return common.record(
        "exit_latency",
        "VM-exit latency, ns per exit (empty loop subtracted; svc: an exception round trip, not an exit)",
        rows,
        config=config,
        extra={"raw_ns_per_iter": runs},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 5, not 3: the two GIC write rows run in one of two speeds per VM instance on this 2-core host, on both
    # sides (ours 33-38 or 74-78 ns, QEMU's 58-64 or 103-111 ns), whatever the load; the same binary flips
    # between VMs of one process, so it is where the code lands, not the code. Each run is ~1 s per side.
    ap.add_argument("--runs", type=int, default=5, help="whole-guest runs per VMM (the minimum is kept)")
    ap.add_argument("--cpu-models", default=",".join(MODELS), help="comma-separated CPU models (default: %(default)s)")
    args = ap.parse_args()
    models = [m for m in args.cpu_models.split(",") if m]
    elf = common.guest("bench_exits")
    peers = {
        "vmmpy": lambda elf, model: common.run_vmmpy(elf, cpu_model=model),
        "qemu": lambda elf, model: common.run_qemu(elf, cpu=model),
    }
    runs: dict[str, list[dict]] = {name: [] for name in peers}
    t0 = time.monotonic()
    for _ in range(args.runs):  # interleave the peers so machine noise hits both alike
        for name, fn in peers.items():
            runs[name].append({model: common.parse(fn(elf, model)) for model in models})
    rec = build(runs, {"runs": args.runs, "cpu_models": models})
    print(f"exit latency, ns per exit (empty loop subtracted; min of {args.runs} runs; {time.monotonic() - t0:.1f} s)")
    print(common.table(common.rows_of(rec, [n for n in ORDER if n.partition("@")[2] in ("", *models)])))
    print(common.targets_line(rec))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
