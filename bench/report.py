"""Benchmark report: bench/results/*.json -> bench/results/report.html (self-contained) + one PNG per family.

    python bench/report.py                      # report.html and NAME.png for every result file
    python bench/report.py --last 20            # history plots over the last 20 runs (default 10)
    python bench/report.py --compare REV        # every ratio now vs the run of git rev REV (history.jsonl)
    python bench/report.py --compare OLD NEW    # OLD, NEW: git revs, NAME.json files, .jsonl histories or dirs

Every file is a record of the schema in bench/common.py, so a new benchmark joins the report by calling
common.save(common.record(...)). Each family's PNG shows, per row: vmmpy, QEMU TCG (and bare KVM where
measured) side by side with the spread of the runs (bar: the row's figure, min or median as the row says;
whiskers min..max; diamond: median), the ratio vmmpy/peer against the row's target, and the ratio over the
last N runs of history.jsonl measured on the same machine (hostname + CPU model + core count): runs from
other machines are never compared, and the plot says how many were left out.
"""

from __future__ import annotations

import argparse
import base64
import glob
import html
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLORS = {"vmmpy": "#1f77b4", "qemu": "#ff7f0e", "kvm": "#2ca02c"}
LABELS = {"vmmpy": "vmmpy", "qemu": "QEMU TCG", "kvm": "bare KVM"}
# a change smaller than this is never flagged, however tight the runs (one run or identical runs have spread 0,
# and the load of a shared machine drifts between sessions by a few % that no single run sees)
MIN_NOISE = 0.05
MET, MISSED, NONE = "#2ca02c", "#d62728", "#7f7f7f"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- loading -------------------------------------------------------------------------------------------


def load_dir(path: str, warn=print) -> list[dict]:
    """Every valid record NAME.json in a directory, by name."""
    out = []
    for p in sorted(glob.glob(os.path.join(path, "*.json"))):
        try:
            out.append(common.load(p))
        except (OSError, ValueError) as e:  # json.JSONDecodeError and SchemaError are ValueErrors
            warn(f"report: skipping {p}: {e}")
    return out


def load_history(path: str, warn=print) -> list[dict]:
    """Every valid line of a history.jsonl, in file order (oldest first)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(common.validate(json.loads(line)))
            except ValueError as e:
                warn(f"report: {path}:{i}: skipped: {e}")
    return out


def history_of(history: list[dict], rec: dict, last: int) -> tuple[list[dict], int]:
    """The last `last` runs of rec's family on rec's machine (oldest first), and how many runs of that
    family from other machines were left out."""
    same = [h for h in history if h["name"] == rec["name"] and h["machine"]["id"] == rec["machine"]["id"]]
    others = sum(1 for h in history if h["name"] == rec["name"] and h["machine"]["id"] != rec["machine"]["id"])
    same.sort(key=lambda h: h["date"])
    return same[-last:] if last > 0 else same, others


def latest(records: list[dict]) -> dict[str, dict]:
    """The newest record of each family."""
    out: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["date"]):
        out[r["name"]] = r
    return out


def resolve(spec: str, history: list[dict], machine_id: str | None = None) -> tuple[dict[str, dict], str]:
    """A comparison side: a NAME.json, a .jsonl history, a directory of results, or a git rev whose runs
    are in `history` (the newest run of each family at that commit). Records by family, and a label.
    With machine_id, runs of a history (or of a rev) on that machine are preferred when there are any."""

    def mine(recs: list[dict]) -> list[dict]:
        same = [r for r in recs if r["machine"]["id"] == machine_id]
        return same or recs

    if os.path.isdir(spec):
        return latest(load_dir(spec)), spec
    if os.path.isfile(spec):
        recs = load_history(spec) if spec.endswith(".jsonl") else [common.load(spec)]
        return latest(mine(recs)), spec
    sha = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"], cwd=common.ROOT,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    if not sha:
        raise SystemExit(f"report: {spec!r} is neither a file, a directory nor a git revision")
    recs = [h for h in history if h["commit"] == sha]
    if not recs:
        raise SystemExit(f"report: no run of commit {sha[:12]} ({spec}) in the history")
    return latest(mine(recs)), f"{spec} ({sha[:10]})"


# ---- figures of a row ----------------------------------------------------------------------------------


def sides(rec: dict, row: dict) -> list[tuple[str, list[float]]]:
    """(peer, values) for vmmpy and every peer measured, in a fixed order."""
    return [("vmmpy", row["runs"])] + [(p, row["peers"][p]) for p in common.PEERS if p in row["peers"]]


def metric(rec: dict, row: dict) -> tuple[float | None, float]:
    """What a comparison follows: the ratio to the baseline when there is one, else the value; and its
    run-to-run noise (relative spread of vmmpy's runs, plus the baseline's for a ratio)."""
    r = common.ratio(rec, row)
    if r is not None:
        return r, common.spread(row["runs"], row["stat"]) + common.spread(row["peers"][rec["baseline"]], row["stat"])
    return common.value(row), common.spread(row["runs"], row["stat"])


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    a = abs(v)
    s = f"{v:.3g}" if a < 100 else f"{v:.0f}"
    return f"{s} {unit}".strip()


def nice(text: str) -> str:
    return text.replace("<=", "≤").replace(">=", "≥")


def short(rec: dict) -> str:
    return rec["commit"][:10] + ("+dirty" if rec.get("dirty") else "")


# ---- the family plot -----------------------------------------------------------------------------------


def ratio_axis(axis, lo: float, hi: float) -> None:
    """A log axis of ratios from lo to hi labelled 0.5×, 1×, 2× ... (no 10^0 notation; fewer ticks when
    it spans decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(hi, 1e-12) / max(lo, 1e-12))
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1.2 else (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    axis.set_minor_formatter(NullFormatter())


def plot_family(rec: dict, hist: list[dict], others: int, path: str, dpi: int = 100) -> str:
    plt = _plt()
    rows = rec["rows"]
    n = len(rows)
    fig = plt.figure(figsize=(14, 2.2 + 0.55 * n + 3.6), dpi=dpi)
    top = 0.55 * n + 1.0
    gs = fig.add_gridspec(2, 2, height_ratios=[top, 3.2], width_ratios=[1.25, 1], hspace=0.45, wspace=0.32)
    ax_v, ax_r, ax_h = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    base = LABELS[rec["baseline"]]

    # values: one group of bars per row, the bar at the row's figure, whiskers min..max, diamond the median
    ys = list(range(n))[::-1]
    present = [p for p in ("vmmpy", *common.PEERS) if p == "vmmpy" or any(p in r["peers"] for r in rows)]
    h = 0.8 / len(present)
    allv = [v for r in rows for _, vs in sides(rec, r) for v in vs if v > 0]
    logx = bool(allv) and max(allv) / min(allv) > 50
    for k, p in enumerate(present):
        for y, r in zip(ys, rows):
            vs = dict(sides(rec, r)).get(p)
            if not vs:
                continue
            yy = y + 0.4 - h * (k + 0.5)
            v = common.summarize(vs, r["stat"])
            med = common.summarize(vs, "median")
            ax_v.barh(yy, v, height=h * 0.9, color=COLORS[p], alpha=0.85, label=LABELS[p] if y == ys[0] else None)
            ax_v.errorbar(v, yy, xerr=[[v - min(vs)], [max(vs) - v]], fmt="none", ecolor="black", capsize=2, lw=0.8)
            ax_v.plot(med, yy, marker="D", ms=3.5, color="white", mec="black", mew=0.6, ls="none")
            ax_v.annotate(fmt(v, r["unit"]), (max(vs), yy), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize=7)  # fmt: skip
    handles, labels = ax_v.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    ax_v.legend(seen.values(), seen.keys(), fontsize=8, loc="best", framealpha=0.9)
    ax_v.set_yticks(ys)
    ax_v.set_yticklabels(
        [f"{r['name']} [{r['unit']}] {r['stat']}" + (" (higher=better)" if r["direction"] == "higher" else "")
         for r in rows],
        fontsize=8,
    )  # fmt: skip
    if logx:
        ax_v.set_xscale("log")
    ax_v.set_xlim(right=ax_v.get_xlim()[1] * (3 if logx else 1.25))
    ax_v.set_title(f"values (runs: vmmpy {len(rows[0]['runs'])}): bar = figure, whiskers min..max, ◆ median",
                   fontsize=9)  # fmt: skip
    ax_v.grid(axis="x", alpha=0.3)

    # ratios: vmmpy / baseline, the target as a black bar, green when met, red when not
    ratios = [common.ratio(rec, r) for r in rows]
    shown = [x for x in ratios if x] + [r["target"]["ratio"] for r in rows if r["target"] and "ratio" in r["target"]]
    ax_r.axvline(1.0, color="black", lw=0.8, ls="--")
    for y, r, x in zip(ys, rows, ratios):
        met = common.target_met(rec, r)
        color = NONE if met is None else MET if met else MISSED
        t = r["target"]
        if x is not None:
            ax_r.plot(x, y, "o", color=color, ms=8)
            tag = f"{x:.2f}×"
            if t and "ratio" in t:
                ax_r.plot(t["ratio"], y, "|", color="black", ms=18, mew=2.5)
                tag += f"  target {nice(common.target_text(r))}"
            if r["direction"] == "higher":
                tag += "  (higher=better)"
            ax_r.annotate(tag, (x, y), xytext=(7, 5), textcoords="offset points", fontsize=7, color=color)
        else:
            ax_r.annotate(f"no {base}", (1.0, y), xytext=(6, 0), textcoords="offset points", fontsize=7,
                          color=NONE, va="center")  # fmt: skip
        if t and "value" in t:
            ax_r.annotate(f"vmmpy {fmt(common.value(r), r['unit'])}, target {nice(common.target_text(r))}",
                          (1.0, y), xytext=(6, -9), textcoords="offset points", fontsize=7, color=color)  # fmt: skip
    ax_r.set_xscale("log")
    lo, hi = min(shown + [1.0]) / 1.8, max(shown + [1.0]) * 3
    ax_r.set_xlim(lo, hi)
    ratio_axis(ax_r.xaxis, lo, hi)
    ax_r.set_ylim(-0.6, n - 0.4)
    ax_r.set_yticks(ys)
    ax_r.set_yticklabels([r["name"] for r in rows], fontsize=8)
    ax_r.set_title(f"ratio vmmpy / {base} (log; dashed = parity, | = target; green met, red missed)", fontsize=9)
    ax_r.grid(axis="x", alpha=0.3, which="both")

    # history: each ratio over the last runs of this family on this machine
    xs = list(range(len(hist)))
    plotted = 0
    for r in rows:
        pts = []
        for i, hrec in enumerate(hist):
            hr = next((x for x in hrec["rows"] if x["name"] == r["name"]), None)
            q = common.ratio(hrec, hr) if hr else None
            if q is not None:
                pts.append((i, q))
        if pts:
            ax_h.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, lw=1.2, label=r["name"])
            plotted += 1
    ax_h.axhline(1.0, color="black", lw=0.8, ls="--")
    ax_h.set_xticks(xs)
    ax_h.set_xticklabels([f"{short(x)[:7]}{'+' if x.get('dirty') else ''}\n{x['date'][5:16].replace('T', ' ')}"
                          for x in hist], fontsize=7)  # fmt: skip
    if hist:
        ax_h.set_xlim(-0.5, max(len(hist) - 0.5, 1.5))
    ax_h.set_ylabel(f"vmmpy / {base}", fontsize=8)
    if plotted:
        ax_h.set_yscale("log")
        ax_h.margins(y=0.12)
        lo, hi = ax_h.get_ylim()
        ratio_axis(ax_h.yaxis, lo, hi)
        ax_h.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    note = f"{len(hist)} run(s) on this machine only; results are compared only when measured on the same machine"
    if others:
        note += f" ({others} run(s) from other machines not shown)"
    ax_h.set_title(f"history: ratio per run, oldest left (a regression is a step up, or down when higher is "
                   f"better)\n{note}", fontsize=9)  # fmt: skip
    ax_h.grid(alpha=0.3, which="both")

    height = fig.get_size_inches()[1]
    fig.subplots_adjust(top=1 - 1.0 / height, bottom=0.6 / height)
    fig.suptitle(f"{rec['name']}: {rec['title']}", fontsize=12, x=0.01, ha="left", y=1 - 0.1 / height)
    cfg = ", ".join(f"{k}={v}" for k, v in rec["config"].items())
    fig.text(0.01, 1 - 0.4 / height, f"machine {rec['machine']['id']} · commit {short(rec)} · {rec['date']}"
             + (f" · {cfg}" if cfg else ""), fontsize=8, color="#444")  # fmt: skip
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ---- comparison ----------------------------------------------------------------------------------------


def compare(old: dict[str, dict], new: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """Every row in both sides: the change of its ratio (its value without a peer), and whether that is
    beyond the run-to-run noise of the two runs (the larger of their relative spreads, at least MIN_NOISE).
    Families measured on different machines are not compared; they are named in the second list."""
    out, skipped = [], []
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        if a["machine"]["id"] != b["machine"]["id"]:
            skipped.append(f"{name}: measured on {a['machine']['id']!r} and {b['machine']['id']!r}")
            continue
        rows_a = {r["name"]: r for r in a["rows"]}
        for rb in b["rows"]:
            ra = rows_a.get(rb["name"])
            if ra is None:
                continue
            (ma, na), (mb, nb) = metric(a, ra), metric(b, rb)
            is_ratio = common.ratio(a, ra) is not None and common.ratio(b, rb) is not None
            if not is_ratio:
                ma, na = common.value(ra), common.spread(ra["runs"], ra["stat"])
                mb, nb = common.value(rb), common.spread(rb["runs"], rb["stat"])
            if not ma:
                continue
            change = mb / ma - 1
            noise = max(na, nb, MIN_NOISE)
            worse = change > 0 if rb["direction"] == "lower" else change < 0
            verdict = "within noise" if abs(change) <= noise else "REGRESSION" if worse else "improved"
            out.append({"family": name, "row": rb["name"], "kind": "ratio" if is_ratio else rb["unit"],
                        "old": ma, "new": mb, "change": change, "noise": noise, "verdict": verdict,
                        "direction": rb["direction"]})  # fmt: skip
    return out, skipped


def print_compare(changes: list[dict], skipped: list[str], old_label: str, new_label: str) -> str:
    lines = [f"change of every ratio (vmmpy/peer; the value where there is no peer): {old_label} -> {new_label}",
             "noise: the larger run-to-run spread of the two (vmmpy's + the peer's, common.spread: best vs "
             f"second-best run for min rows, interquartile range for medians), at least {MIN_NOISE:.0%}",
             f"{'family/row':<36} {'old':>9} {'new':>9} {'change':>8} {'noise':>7}  verdict"]  # fmt: skip
    for c in changes:
        k = "x" if c["kind"] == "ratio" else f" {c['kind']}"
        lines.append(f"{c['family'] + '/' + c['row']:<36} {fmt(c['old']) + k:>9} {fmt(c['new']) + k:>9} "
                     f"{c['change']:+8.1%} {c['noise']:7.1%}  {c['verdict']}")  # fmt: skip
    for s in skipped:
        lines.append(f"not compared (different machines): {s}")
    n = sum(c["verdict"] == "REGRESSION" for c in changes)
    lines.append(f"{n} regression(s) beyond the noise" if n else "no regression beyond the noise")
    return "\n".join(lines)


def plot_compare(changes: list[dict], old_label: str, new_label: str, path: str, dpi: int = 100) -> str:
    plt = _plt()
    n = max(len(changes), 1)
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.3 * n), dpi=dpi)
    ys = list(range(len(changes)))[::-1]
    for y, c in zip(ys, changes):
        bad = c["change"] if c["direction"] == "lower" else -c["change"]  # > 0: worse
        color = {"REGRESSION": MISSED, "improved": MET}.get(c["verdict"], NONE)
        ax.barh(y, bad * 100, color=color, height=0.7)
        ax.barh(y, 2 * c["noise"] * 100, left=-c["noise"] * 100, color="black", alpha=0.12, height=0.9)
        ax.annotate(f"{fmt(c['old'])} → {fmt(c['new'])}" + ("×" if c["kind"] == "ratio" else f" {c['kind']}"),
                    (bad * 100, y), xytext=(4 if bad >= 0 else -4, 0), textcoords="offset points", fontsize=7,
                    va="center", ha="left" if bad >= 0 else "right")  # fmt: skip
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{c['family']}/{c['row']}" for c in changes], fontsize=7)
    ax.set_xlabel("% worse (right, red when beyond the noise) or better (left, green); grey band: run-to-run noise")
    ax.set_title(f"change of each ratio: {old_label} → {new_label} (same machine only)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    lim = max([abs(c["change"]) * 100 for c in changes] + [c["noise"] * 100 for c in changes] + [5]) * 1.4
    ax.set_xlim(-lim, lim)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ---- HTML ----------------------------------------------------------------------------------------------


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(os.path.basename(path))}">'


def _spread_cell(vs: list[float] | None) -> str:
    if not vs:
        return "-"
    med = common.summarize(vs, "median")
    return f"{fmt(min(vs))} / {fmt(med)} / {fmt(max(vs))} <small>(n={len(vs)})</small>"


def family_table(rec: dict) -> str:
    cols = ["row", "unit", "better", "figure", "vmmpy min / median / max", "QEMU TCG min / median / max",
            "bare KVM min / median / max", "ratio", "target", ""]  # fmt: skip
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
    out = [head]
    for r in rec["rows"]:
        met = common.target_met(rec, r)
        status = "" if met is None else '<b class="ok">met</b>' if met else '<b class="bad">missed</b>'
        x = common.ratio(rec, r)
        out.append(
            f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['unit'])}</td><td>{r['direction']}</td>"
            f"<td>{r['stat']}</td><td>{_spread_cell(r['runs'])}</td><td>{_spread_cell(r['peers'].get('qemu'))}</td>"
            f"<td>{_spread_cell(r['peers'].get('kvm'))}</td><td>{f'{x:.2f}×' if x is not None else '-'}</td>"
            f"<td>{html.escape(common.target_text(r))}</td><td>{status}</td></tr>"
        )
    return "<table>" + "\n".join(out) + "</table>"


CSS = """body{font-family:sans-serif;margin:2em;max-width:1500px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}.ok{color:#2ca02c}.bad{color:#d62728}.meta{color:#555;font-size:13px}
img{max-width:100%;border:1px solid #ddd}pre{background:#f7f7f7;padding:8px;font-size:12px}"""

HOW = """<p>One section per benchmark family (one file of <code>bench/results/</code>). The table gives every row:
which way is better, the figure the row keeps (<i>min</i> or <i>median</i> of the runs), the spread of the runs
(min / median / max and how many) on vmmpy and on each peer, the ratio vmmpy / peer and the target.
In the plot: <b>left</b>, the figures side by side (bar = the row's figure, whiskers = min..max of the runs,
diamond = median); <b>right</b>, the ratio on a log scale against parity (dashed) and the target (black bar),
green when the target is met, red when not (for rows whose target is a value, e.g. time to first byte, the value
and its target are written under the dot); <b>bottom</b>, each ratio over the last runs in
<code>history.jsonl</code> measured on this same machine: a regression shows as a step. Runs on other machines
(another hostname, CPU model or core count) are never compared.</p>"""


def write_html(records: list[dict], pngs: dict[str, str], out: str, compare_block: str = "") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vmmpy benchmarks</title><style>{CSS}</style>"
             "</head><body><h1>vmmpy benchmarks</h1>", HOW]  # fmt: skip
    machines = sorted({r["machine"]["id"] for r in records})
    parts.append(f"<p class='meta'>machine(s): {html.escape(', '.join(machines))}</p>")
    if compare_block:
        parts.append(compare_block)
    parts.append("<ul>" + "".join(f"<li><a href='#{r['name']}'>{html.escape(r['name'])}</a>: "
                                  f"{html.escape(r['title'])}</li>" for r in records) + "</ul>")  # fmt: skip
    for r in records:
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        parts.append(f"<h2 id='{r['name']}'>{html.escape(r['name'])}: {html.escape(r['title'])}</h2>")
        parts.append(f"<p class='meta'>machine {html.escape(r['machine']['id'])} · commit {short(r)} · "
                     f"{r['date']} · ratios against {LABELS[r['baseline']]}"
                     + (f" · {html.escape(cfg)}" if cfg else "") + "</p>")  # fmt: skip
        parts.append(family_table(r))
        notes = [f"<li>{html.escape(x['name'])}: {html.escape(x['note'])}</li>" for x in r["rows"] if x.get("note")]
        if notes:
            parts.append("<ul class='meta'>" + "".join(notes) + "</ul>")
        parts.append(_img(pngs[r["name"]]))
    parts.append("</body></html>")
    with open(out, "w") as f:
        f.write("\n".join(parts))
    return out


# ---- main ----------------------------------------------------------------------------------------------


def report(results: str, out: str, last: int = 10, compare_to: list[str] | None = None, dpi: int = 100) -> dict:
    """Write report.html and the PNGs. Returns {"html": path, "pngs": {family: path}, "compare": text or None,
    "history_runs": {family: runs in its history plot}}."""
    os.makedirs(out, exist_ok=True)
    history = load_history(os.path.join(results, common.HISTORY))
    records = sorted(latest(load_dir(results)).values(), key=lambda r: r["name"])
    if not records:
        raise SystemExit(f"report: no result files in {results} (run `make bench` first)")
    pngs, runs = {}, {}
    for rec in records:
        hist, others = history_of(history, rec, last)
        if not any(h["date"] == rec["date"] and h["commit"] == rec["commit"] for h in hist):
            hist = (hist + [rec])[-last:]  # a result file whose run is not in the history yet
        runs[rec["name"]] = len(hist)
        pngs[rec["name"]] = plot_family(rec, hist, others, os.path.join(out, f"{rec['name']}.png"), dpi)
    block, text = "", None
    if compare_to:
        here = records[0]["machine"]["id"]
        if len(compare_to) > 1:
            new, new_label = resolve(compare_to[1], history, here)
        else:
            new, new_label = {r["name"]: r for r in records}, f"{os.path.relpath(results)} (now)"
        ids = {r["machine"]["id"] for r in new.values()}
        old, old_label = resolve(compare_to[0], history, ids.pop() if len(ids) == 1 else here)
        changes, skipped = compare(old, new)
        text = print_compare(changes, skipped, old_label, new_label)
        cpath = plot_compare(changes, old_label, new_label, os.path.join(out, "compare.png"), dpi)
        pngs["compare"] = cpath
        block = f"<h2>Comparison</h2><pre>{html.escape(text)}</pre>{_img(cpath)}"
    path = write_html(records, pngs, os.path.join(out, "report.html"), block)
    return {"html": path, "pngs": pngs, "compare": text, "history_runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=common.RESULTS, help="where the NAME.json files and history.jsonl are")
    ap.add_argument("--out", help="where report.html and the PNGs go (default: --results)")
    ap.add_argument("--last", type=int, default=10, help="runs shown in the history plots (default 10)")
    ap.add_argument("--compare", nargs="+", metavar="OLD [NEW]",
                    help="compare OLD with NEW (default: the current results): git revs found in history.jsonl, "
                         "NAME.json files, .jsonl histories or result directories")  # fmt: skip
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)
    if args.compare and len(args.compare) > 2:
        ap.error("--compare takes OLD and at most one NEW")
    res = report(args.results, args.out or args.results, args.last, args.compare, args.dpi)
    if res["compare"]:
        print(res["compare"])
    for p in res["pngs"].values():
        print(f"wrote {os.path.relpath(p)}")
    print(f"wrote {os.path.relpath(res['html'])}")
    regressions = res["compare"] and "REGRESSION" in res["compare"]
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
