"""MSI latency through the GICv3 ITS: a virtio-rng-pci request's notify write to the guest's LPI handler.

Runs guest/build/bench_msi.elf on vmmpy (Machine(transport="pci", rng=True): the host bridge, the ITS) and
on qemu-system-aarch64 (TCG, -M virt,gic-version=3,highmem=off -device virtio-rng-pci,disable-legacy=on;
virt has an ITS) in one run, prints ns side by side with the ratio, and writes bench/results/msi.json.
The guest maps the function's requester ID and an EventID to an LPI (MAPD/MAPC/MAPTI), points MSI-X
vector 0 at GITS_TRANSLATER and times with CNTVCT_EL0 (16 ns a tick) from just before the queue's
notify write:
- msi_spin: to the first instruction of the LPI handler (IRQs unmasked, polling a flag);
- msi_wfi: the same, waiting in WFI (IRQs masked, unmasked once woken);
- used_poll: to the used element, polled with the vector masked (the device's part: the notify exit,
  the request; msi_spin - used_poll is what the MSI write, the ITS translation and the LPI add).
Each value is the mean over the guest's N requests, the minimum over its 5 repeats and --runs runs per VMM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ORDER = ["msi_spin", "msi_wfi", "used_poll"]
QEMU_PCI = ["-M", "virt,highmem=off", "-nic", "none", "-device", "virtio-rng-pci,disable-legacy=on"]


def build(runs: dict[str, list[dict[str, float]]], config: dict | None = None) -> dict:
    """The record from each whole-guest run's ns per request, per peer ("vmmpy", "qemu")."""
    rows = [
        common.row(
            k,
            "ns",
            [r[k] for r in runs.get("vmmpy", []) if k in r],
            {"qemu": [r[k] for r in runs.get("qemu", []) if k in r]},
        )  # fmt: skip
        for k in ORDER
    ]
    return common.record("msi", "MSI-X through the ITS: notify write to LPI handler, ns", rows,
                         config=config or {}, extra={"raw_ns_per_request": runs})  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-guest runs per VMM (the minimum is kept)")
    args = ap.parse_args()
    elf = common.guest("bench_msi")
    peers = {
        "vmmpy": lambda: common.run_vmmpy(elf, transport="pci", rng=True),
        "qemu": lambda: common.run_qemu(elf, extra=QEMU_PCI),
    }
    runs: dict[str, list[dict]] = {name: [] for name in peers}
    t0 = time.monotonic()
    for _ in range(max(args.runs, 1)):  # interleaved: machine noise hits both alike
        for name, fn in peers.items():
            out = fn()
            if b"PASS bench_msi" not in out:
                raise SystemExit(f"bench_msi failed on {name}:\n{out.decode(errors='replace')[-1500:]}")
            runs[name].append(common.parse(out))
    rec = build(runs, {"runs": args.runs})
    print(f"MSI-X through the ITS, ns per request (virtio-rng-pci; min of {args.runs} runs; "
          f"{time.monotonic() - t0:.1f} s)")  # fmt: skip
    print(common.table(common.rows_of(rec, ORDER)))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
