"""Shared helpers for benchmarks: run a guest on vmmpy and on QEMU TCG, parse BENCH lines, print tables,
and the one result schema every benchmark writes (record(), validate(), save(); read by bench/report.py).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guest", "build")
# where save() writes NAME.json and appends history.jsonl (VMMPY_BENCH_RESULTS moves it, e.g. for tests)
RESULTS = os.environ.get("VMMPY_BENCH_RESULTS", os.path.join(ROOT, "bench", "results"))
HISTORY = "history.jsonl"

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


# ---- the result schema ------------------------------------------------------------------------------
#
# One JSON object per benchmark family (bench/results/NAME.json, and one line of history.jsonl per run):
#
#   schema     SCHEMA (an int; bumped on incompatible changes)
#   name       the family, e.g. "exit_latency" (also the file name)
#   title      one line saying what is measured
#   machine    {"id", "hostname", "cpu", "cores", "arch"}: results are compared only when "id" is equal
#   commit     git commit of the tree measured ("unknown" outside git); dirty: uncommitted changes in it
#   date       UTC, ISO 8601 (seconds)
#   baseline   the peer ratios are taken against ("qemu" = QEMU TCG, "kvm" = bare KVM ioctls)
#   config     free-form parameters of the run (runs, vCPUs, sizes ...)
#   rows       the figures, each:
#     name       unique in the family
#     unit       "ns", "us", "ms", "MB/s", "ops/s", "%", "KiB" ...
#     direction  "lower" or "higher": which is better
#     stat       "min", "max" or "median": how the runs are summarised into the row's value (the best run is
#                "min" for "lower" rows, "max" for "higher" ones)
#     runs       every value measured on vmmpy (one per whole-guest run, or per sample), in order
#     peers      {"qemu": [...], "kvm": [...]}: every value measured on each peer, same unit ({} if none)
#     target     null, {"ratio": R} (vmmpy/baseline <= R for "lower", >= R for "higher") or
#                {"value": V} (vmmpy's value <= V for "lower", >= V for "higher")
#     note       optional text
#   extra      optional: anything else the benchmark wants to keep (not read by the report)
#
# value(row) = stat(runs); ratio(record, row) = value / stat(peers[baseline]); both None when absent.

SCHEMA = 1
DIRECTIONS = ("lower", "higher")
STATS = ("min", "max", "median")
PEERS = ("qemu", "kvm")
RECORD_KEYS = {"schema", "name", "title", "machine", "commit", "dirty", "date", "baseline", "config", "rows"}
ROW_KEYS = {"name", "unit", "direction", "stat", "runs", "peers", "target"}


class SchemaError(ValueError):
    pass


def _sh(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and val.strip():
                    return val.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """This host: hostname + CPU model + core count make its id (results are compared only within one id)."""
    host, cpu, cores = socket.gethostname(), cpu_model(), os.cpu_count() or 0
    return {
        "id": f"{host} / {cpu} / {cores} cores",
        "hostname": host,
        "cpu": cpu,
        "cores": cores,
        "arch": platform.machine(),
    }


def git_commit() -> tuple[str, bool]:
    """(HEAD's commit, whether the tree has uncommitted changes outside bench/results)."""
    sha = _sh(["git", "rev-parse", "HEAD"]) or "unknown"
    status = _sh(["git", "status", "--porcelain", "--untracked-files=no"])
    return sha, bool(status)


_AT_START = git_commit()  # the tree a benchmark measures is the one it started in


def row(
    name: str,
    unit: str,
    runs: list[float],
    peers: dict[str, list[float]] | None = None,
    *,
    direction: str = "lower",
    stat: str = "min",
    target: dict | None = None,
    note: str | None = None,
) -> dict:
    """One figure of a record; peers without values are left out."""
    r = {
        "name": name,
        "unit": unit,
        "direction": direction,
        "stat": stat,
        "runs": [float(v) for v in runs],
        "peers": {k: [float(v) for v in vs] for k, vs in (peers or {}).items() if vs},
        "target": target,
    }
    if note:
        r["note"] = note
    return r


def record(
    name: str,
    title: str,
    rows: list[dict],
    *,
    config: dict | None = None,
    baseline: str = "qemu",
    extra: dict | None = None,
) -> dict:
    """A validated record of this run: the rows plus machine, commit and date."""
    sha, dirty = _AT_START
    rec = {
        "schema": SCHEMA,
        "name": name,
        "title": title,
        "machine": machine(),
        "commit": sha,
        "dirty": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "baseline": baseline,
        "config": config or {},
        "rows": [r for r in rows if r["runs"]],
    }
    if extra:
        rec["extra"] = extra
    validate(rec)
    return rec


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(rec) -> dict:
    """Raise SchemaError naming the first problem; return rec."""

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise SchemaError(f"{rec.get('name', '?') if isinstance(rec, dict) else '?'}: {what}")

    need(isinstance(rec, dict), "a record is a JSON object")
    need(not (RECORD_KEYS - rec.keys()), f"missing keys {sorted(RECORD_KEYS - rec.keys())}")
    need(rec["schema"] == SCHEMA, f"schema {rec['schema']!r}, expected {SCHEMA}")
    need(isinstance(rec["name"], str) and re.fullmatch(r"[A-Za-z0-9_.-]+", rec["name"]) is not None, "bad name")
    need(isinstance(rec["title"], str), "title is not a string")
    m = rec["machine"]
    need(isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"], "machine has no id")
    need(isinstance(rec["commit"], str) and rec["commit"], "no commit")
    need(isinstance(rec["dirty"], bool), "dirty is not a bool")
    try:
        datetime.datetime.fromisoformat(rec["date"])
    except (TypeError, ValueError):
        need(False, f"date {rec['date']!r} is not ISO 8601")
    need(rec["baseline"] in PEERS, f"baseline {rec['baseline']!r} not one of {PEERS}")
    need(isinstance(rec["config"], dict), "config is not an object")
    need(isinstance(rec["rows"], list) and rec["rows"], "no rows")
    seen = set()
    for r in rec["rows"]:
        need(isinstance(r, dict) and not (ROW_KEYS - r.keys()), f"row {r!r:.60} misses {sorted(ROW_KEYS - set(r))}")
        n = r["name"]
        need(isinstance(n, str) and n and n not in seen, f"row name {n!r} empty or repeated")
        seen.add(n)
        need(isinstance(r["unit"], str), f"{n}: unit is not a string")
        need(r["direction"] in DIRECTIONS, f"{n}: direction {r['direction']!r} not one of {DIRECTIONS}")
        need(r["stat"] in STATS, f"{n}: stat {r['stat']!r} not one of {STATS}")
        need(isinstance(r["runs"], list) and r["runs"] and all(map(_num, r["runs"])), f"{n}: runs must be numbers")
        need(isinstance(r["peers"], dict), f"{n}: peers is not an object")
        for p, vs in r["peers"].items():
            need(p in PEERS, f"{n}: unknown peer {p!r}")
            need(isinstance(vs, list) and vs and all(map(_num, vs)), f"{n}: peer {p} values must be numbers")
        t = r["target"]
        need(
            t is None
            or (
                isinstance(t, dict)
                and len(t) == 1
                and next(iter(t)) in ("ratio", "value")
                and _num(next(iter(t.values())))
            ),
            f"{n}: target {t!r}",
        )
    return rec


def summarize(values: list[float], stat: str) -> float:
    if stat == "min":
        return min(values)
    return max(values) if stat == "max" else statistics.median(values)


def value(r: dict) -> float:
    return summarize(r["runs"], r["stat"])


def peer_value(r: dict, peer: str) -> float | None:
    vs = r["peers"].get(peer)
    return summarize(vs, r["stat"]) if vs else None


def ratio(rec: dict, r: dict) -> float | None:
    """vmmpy / baseline peer (both by the row's stat); None without that peer."""
    b = peer_value(r, rec["baseline"])
    return value(r) / b if b else None


def target_met(rec: dict, r: dict) -> bool | None:
    t = r["target"]
    if not t:
        return None
    got = ratio(rec, r) if "ratio" in t else value(r)
    if got is None:
        return None
    limit = t.get("ratio", t.get("value"))
    return got <= limit if r["direction"] == "lower" else got >= limit


def spread(values: list[float], stat: str = "median") -> float:
    """Run-to-run noise of a row's figure, relative to it. For "min" rows, how far the second-best run is
    from the best ((s[1] - s[0]) / s[0]: a reproducible minimum has runs close to it), "max" likewise from
    the top; for "median" rows, the middle half of the runs over the median ((p75 - p25) / median; with 3
    runs, the whole range). 0 with fewer than 2 runs."""
    s = sorted(values)
    n = len(s)
    if n < 2:
        return 0.0
    if stat == "min":
        return (s[1] - s[0]) / s[0] if s[0] else 0.0
    if stat == "max":
        return (s[-1] - s[-2]) / s[-1] if s[-1] else 0.0
    c = statistics.median(s)
    lo, hi = s[n // 4], s[(3 * n - 1) // 4] if n > 3 else s[-1]
    return (hi - lo) / c if c else 0.0


def rows_of(rec: dict, names: list[str] | None = None, peer: str | None = None) -> list[tuple]:
    """(name, vmmpy value, peer value) per row, for table(); names: these rows in this order (missing: -)."""
    by = {r["name"]: r for r in rec["rows"]}
    peer = peer or rec["baseline"]
    return [
        (n, value(by[n]) if n in by else None, peer_value(by[n], peer) if n in by else None)
        for n in (names if names is not None else list(by))
    ]


def targets_line(rec: dict) -> str:
    """One line: each row with a target, its figure and whether it is met."""
    out = []
    for r in rec["rows"]:
        met = target_met(rec, r)
        if met is None:
            continue
        got = ratio(rec, r) if "ratio" in r["target"] else value(r)
        shown = f"{got:.2f}x" if "ratio" in r["target"] else f"{got:.3g} {r['unit']}"
        out.append(f"{r['name']} {shown} ({target_text(r)}: {'met' if met else 'NOT met'})")
    return "targets: " + "; ".join(out) if out else ""


def target_text(r: dict) -> str:
    t = r["target"]
    if not t:
        return ""
    op = "<=" if r["direction"] == "lower" else ">="
    return f"{op} {t['ratio']:g}x" if "ratio" in t else f"{op} {t['value']:g} {r['unit']}"


def load(path: str) -> dict:
    with open(path) as f:
        return validate(json.load(f))


def save(rec: dict) -> str:
    """Write a record as RESULTS/NAME.json and append it to RESULTS/history.jsonl (one line per run)."""
    validate(rec)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{rec['name']}.json")
    with open(path, "w") as f:
        json.dump(rec, f, indent=2, sort_keys=True)
    with open(os.path.join(RESULTS, HISTORY), "a") as f:
        f.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")
    return path


def peer_rows(
    runs: dict[str, list[dict[str, float]]], order: list[str], targets: dict[str, float | None], other: float
) -> list[dict]:
    """Rows in ns of measurements per whole-guest run and peer ("vmmpy", "qemu"): every run kept, a ratio
    target per row (`other` for rows not in `targets`; none for a row whose target there is None)."""
    return [
        row(
            k,
            "ns",
            [r[k] for r in runs.get("vmmpy", []) if k in r],
            {"qemu": [r[k] for r in runs.get("qemu", []) if k in r]},
            target=None if k in targets and targets[k] is None else {"ratio": targets.get(k, other)},
        )
        for k in order
    ]
