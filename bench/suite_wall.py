"""Wall time of the test suite's fast tier against the number of pytest-xdist workers.

    python bench/suite_wall.py                      # 1 and 2 workers, once each
    python bench/suite_wall.py --workers 1,2,4 --repeat 3
    python bench/suite_wall.py --marker "not slow" --pytest-args "-x"

1 worker is a plain `pytest` run (no xdist); N > 1 is `pytest -n N`. Every run must pass (a failure is an
error here: a time for a red run means nothing). Prints a table and writes bench/results/suite_wall.json
(the schema of bench/common.py; there is no QEMU peer: the rows are plain figures).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def command(workers: int, marker: str, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", os.path.join(common.ROOT, "tests"), "-q", "-p", "no:cacheprovider"]
    cmd += ["-m", marker] if marker else []
    cmd += ["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]
    return cmd + extra


def measure(workers: int, marker: str, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": common.ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("VMMPY_ROOT", common.ROOT)
    t = time.monotonic()
    p = subprocess.run(command(workers, marker, extra), cwd=common.ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        tail = p.stdout[-3000:] + p.stderr[-2000:]
        sys.exit(f"suite_wall: {workers} worker(s): pytest exited {p.returncode}:\n{tail}")
    last = p.stdout.strip().splitlines()[-1:] or [""]
    print(f"  {workers} worker(s): {wall:6.1f} s   {last[0]}", flush=True)
    return wall


def build(walls: dict[int, list[float]], marker: str) -> dict:
    """The record: one row per worker count (seconds, best run), and each count's speedup over 1 worker."""
    rows = [common.row(f"workers_{n}", "s", ws, stat="min") for n, ws in sorted(walls.items())]
    if 1 in walls:
        one = min(walls[1])
        for n, ws in sorted(walls.items()):
            if n > 1:
                rows.append(common.row(f"speedup_{n}", "x", [one / w for w in ws], direction="higher", stat="max"))
    config = {"marker": marker, "workers": sorted(walls), "cores": os.cpu_count()}
    return common.record("suite_wall", "Test suite wall time vs pytest-xdist workers", rows, config=config)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count (default 1)")
    ap.add_argument("--marker", default="not slow", help='pytest -m expression (default "not slow": the fast tier)')
    ap.add_argument("--pytest-args", default="", help="more pytest arguments, one string")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    extra = args.pytest_args.split()
    print(f"suite wall time ({os.cpu_count()} cores, -m {args.marker!r}):")
    walls: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.repeat):
        for n in counts:
            walls[n].append(measure(n, args.marker, extra))
    rec = build(walls, args.marker)
    for r in rec["rows"]:
        print(f"{r['name']:<12} {common.value(r):8.2f} {r['unit']}")
    print(f"wrote {common.save(rec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
