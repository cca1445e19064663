"""Tier 1: the benchmark result schema (bench/common.py) and the report (bench/report.py).

Every benchmark's record-building code path is fed synthetic measurements and its record validated; the
result files a `make bench` left in bench/results (if any) are validated too; a report is rendered from
fixture records and a two-run history in a temporary directory; --compare flags a regression beyond the
noise and nothing within it. The cheapest real benchmark (exit_latency, 1 run) checks a file written end to end.
"""

from __future__ import annotations

import copy
import glob
import importlib
import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import GUEST_DIR, ROOT

BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(ROOT, "tools"))
common = importlib.import_module("common")


def bench(name: str):
    return importlib.import_module(name)


def per_run(names, base: float, n: int = 3) -> list[dict[str, float]]:
    """n runs of raw ns/iteration for names (plus the empty loop), slightly different each time."""
    return [{"loop": 2.0, **{k: base * (1 + i) + 0.5 * j for i, k in enumerate(names)}} for j in range(n)]


def fixture_records() -> dict[str, dict]:
    """One record per benchmark, each through its own build()."""
    el, irq, fb, gpu, idle = (bench(n) for n in ("exit_latency", "irq_latency", "first_byte", "gpu", "idle"))
    inp, lb, fs, kvm, msi = (bench(n) for n in ("input_latency", "linux_boot", "fs", "kvm_exits", "msi"))
    raw_irq = ["timer_wfi", "timer_wfi_wake", "timer_spin", "ipi_wfi", "ipi_spin", "sgi_ack_eoi", "ack_loop",
               "ts_counter", "ts_sgi", "ts_iar", "ts_eoi"]  # fmt: skip
    idle_run = {"cpu_pct": 0.5, "window_s": 5.0, "ticks_per_s": 100.0, "exit_code": 124, "process_cpu_s": 0.1}
    boot = {"first_byte": 0.01, "smp_up": 0.5, "run_init": 1.5, "init_marker": 1.9, "poweroff": 2.0}
    fsrun = {"blk_write": 50.0, "blk_read": 80.0, "p9_write": 40.0, "p9_read": 60.0, "p9_create": 900.0,
             "p9_stat": 3000.0, "p9_delete": 5000.0}  # fmt: skip
    recs = [
        el.build({"vmmpy": per_run(el.ORDER, 30), "qemu": per_run(el.ORDER, 40)}, {"runs": 3}),
        irq.build({"vmmpy": per_run(raw_irq, 100), "qemu": per_run(raw_irq, 120)}, {"runs": 3}),
        fb.build([2.1, 2.3, 2.0], [36.0, 38.0, 37.0], 3400.0, {"runs": 3}),
        gpu.build(
            {p: per_run(gpu.ORDER, 1e5 * f) for p, f in (("vmmpy", 2), ("qemu", 1))},
            {"gpu_transfer_flush": 1280 * 800 * 4, "gpu_small_flush": 64 * 64 * 4},
            {"capture_ms": [0.4, 0.5, 0.45], "capture_rgba_ms": [0.2] * 3, "c_copy_ms": [0.1] * 3},
            {"screendump_pil_ms": [40.0] * 3, "qmp_screendump_png_ms": [30.0] * 3, "qmp_screendump_ppm_ms": [9.0] * 3},
        ),
        idle.build({label: {"vmmpy": [idle_run] * 3, "qemu": [idle_run] * 3} for label in idle.GUESTS}),
        inp.build([20.0, 25.0, 30.0], [600.0, 700.0, 650.0], {"events": 3}),
        lb.build([boot] * 3, [boot] * 3, 1),
        lb.build([boot] * 3, [boot] * 3, 2),
        lb.build([{**boot, "modules_loaded": 1.8}] * 3, [{**boot, "modules_loaded": 1.8}] * 3, 1, boot="modules"),
        lb.build([{**boot, "modules_loaded": 1.8}] * 3, [{**boot, "modules_loaded": 1.8}] * 3, 2, boot="modules"),
        fs.build([fsrun] * 3, [fsrun] * 3),
        kvm.build(per_run(kvm.PAIRED + kvm.VMMPY_ONLY, 1e5), per_run(kvm.PAIRED, 8e4)),
        msi.build({"vmmpy": per_run(msi.ORDER, 3000), "qemu": per_run(msi.ORDER, 8000)}, {"runs": 3}),
    ]
    return {r["name"]: r for r in recs}


def test_every_benchmark_builds_a_valid_record():
    recs = fixture_records()
    assert set(recs) == {"exit_latency", "irq_latency", "first_byte", "gpu", "idle", "input_latency",
                         "linux_boot_1cpu", "linux_boot_2cpu", "linux_boot_modules_1cpu", "linux_boot_modules_2cpu",
                         "fs", "kvm_exits", "msi"}  # fmt: skip
    for rec in recs.values():
        common.validate(json.loads(json.dumps(rec)))  # survives JSON
        assert all(len(r["runs"]) >= 1 for r in rec["rows"])
    targets = {n: {r["name"]: r["target"] for r in rec["rows"]} for n, rec in recs.items()}
    assert targets["exit_latency"]["hvc"] == {"ratio": 0.6} and targets["exit_latency"]["mmio_read"] == {"ratio": 0.6}
    assert targets["exit_latency"]["sysreg_icc_pmr"] == {"ratio": 0.8}
    assert targets["exit_latency"]["svc"] is None and targets["exit_latency"]["svc@max"] is None  # not an exit
    assert targets["irq_latency"]["ipi_spin"] == {"ratio": 2.0}
    assert targets["linux_boot_1cpu"]["init_marker"] == {"ratio": 1.0}
    assert targets["linux_boot_2cpu"]["init_marker"] == {"ratio": 1.3}
    assert targets["linux_boot_modules_2cpu"]["init_marker"] == {"ratio": 1.3}
    assert "modules_loaded" in targets["linux_boot_modules_1cpu"]
    assert targets["gpu"]["gpu_transfer_flush_us"] == {"ratio": 1.0}
    assert targets["gpu"]["capture_pil"] == {"value": 2.0}
    assert targets["first_byte"]["first_byte"] == {"value": 20.0}
    assert all(r["direction"] == "higher" for r in recs["fs"]["rows"])
    assert recs["kvm_exits"]["baseline"] == "kvm"
    # every measured value is kept, not just the best one
    hvc = next(r for r in recs["exit_latency"]["rows"] if r["name"] == "hvc")
    assert hvc["runs"] == [28.0, 28.5, 29.0] and common.value(hvc) == 28.0
    assert common.ratio(recs["exit_latency"], hvc) == pytest.approx(28.0 / 38.0)


@pytest.mark.parametrize(
    "path, bad",
    [
        ((), {"schema": 99}),
        ((), {"machine": {}}),
        ((), {"date": "yesterday"}),
        ((), {"baseline": "bochs"}),
        ((), {"rows": []}),
        (("rows", 0), {"direction": "faster"}),
        (("rows", 0), {"stat": "mean"}),
        (("rows", 0), {"runs": []}),
        (("rows", 0), {"runs": [1.0, math.nan]}),
        (("rows", 0), {"runs": [True]}),
        (("rows", 0), {"peers": {"bochs": [1.0]}}),
        (("rows", 0), {"peers": {"qemu": []}}),
        (("rows", 0), {"target": {"ratio": "0.8"}}),
        (("rows", 0), {"target": {"ratio": 0.8, "value": 2}}),
        (("rows", 1), {"name": "hvc"}),
    ],
)
def test_schema_rejects(path, bad):
    rec = copy.deepcopy(fixture_records()["exit_latency"])
    where = rec
    for k in path:
        where = where[k]
    where.update(bad)
    with pytest.raises(common.SchemaError):
        common.validate(rec)


def test_schema_rejects_missing_keys():
    rec = fixture_records()["exit_latency"]
    for key in sorted(common.RECORD_KEYS):
        with pytest.raises(common.SchemaError, match="missing"):
            common.validate({k: v for k, v in rec.items() if k != key})
    for key in sorted(common.ROW_KEYS):
        r = copy.deepcopy(rec)
        del r["rows"][0][key]
        with pytest.raises(common.SchemaError):
            common.validate(r)


def test_result_files_in_the_tree_match_the_schema():
    """What `make bench` wrote here (results are per machine, not committed: skipped on a fresh tree)."""
    files = glob.glob(os.path.join(BENCH, "results", "*.json"))
    hist = os.path.join(BENCH, "results", common.HISTORY)
    if not files and not os.path.exists(hist):
        pytest.skip("no bench/results here (run `make bench`)")
    for p in files:
        common.load(p)
    if os.path.exists(hist):
        with open(hist) as f:
            for line in f:
                common.validate(json.loads(line))


def test_save_writes_the_file_and_appends_history(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", str(tmp_path))
    rec = fixture_records()["first_byte"]
    for _ in range(2):
        path = common.save(rec)
    assert common.load(path) == rec
    lines = (tmp_path / common.HISTORY).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [rec, rec]
    assert rec["machine"]["id"] == common.machine()["id"] and rec["commit"]


def write_fixture_results(d, monkeypatch) -> dict[str, dict]:
    """Two runs of every family on this machine (the second 1 % slower) and one from another machine."""
    monkeypatch.setattr(common, "RESULTS", str(d))
    recs = fixture_records()
    for name, rec in recs.items():
        first = copy.deepcopy(rec)
        first["date"], first["commit"] = "2026-01-01T00:00:00+00:00", "a" * 40
        common.save(first)
        elsewhere = copy.deepcopy(first)
        elsewhere["machine"] = {**first["machine"], "id": "other / CPU / 64 cores"}
        common.save(elsewhere)
        second = copy.deepcopy(rec)
        second["date"], second["commit"] = "2026-01-02T00:00:00+00:00", "b" * 40
        for r in second["rows"]:
            r["runs"] = [v * 1.01 for v in r["runs"]]
        common.save(second)
        recs[name] = second
    return recs


def test_report_renders_from_fixture_data(tmp_path, monkeypatch):
    from PIL import Image

    report = bench("report")
    recs = write_fixture_results(tmp_path, monkeypatch)
    res = report.report(str(tmp_path), str(tmp_path / "out"))
    html = (tmp_path / "out" / "report.html").read_text()
    assert res["html"] == str(tmp_path / "out" / "report.html")
    assert set(res["pngs"]) == set(recs)
    assert html.count("data:image/png;base64,") == len(recs) and '<img src="data:' in html
    assert "http" not in html.replace("http-equiv", "")  # self-contained
    for name, p in res["pngs"].items():
        with Image.open(p) as im:
            im.load()
            assert im.size[0] > 800 and im.size[1] > 400, (name, im.size)
        assert name in html
    # the history plot of each family has both runs of this machine, not the other machine's
    assert res["history_runs"] == {name: 2 for name in recs}
    assert "vm / " in html or recs["gpu"]["machine"]["id"] in html


def test_compare_flags_regressions_beyond_the_noise(tmp_path, monkeypatch):
    report = bench("report")
    write_fixture_results(tmp_path, monkeypatch)
    hist = report.load_history(str(tmp_path / common.HISTORY))
    old, _ = report.resolve(str(tmp_path / common.HISTORY), [])  # newest of each family: the second run
    # first run's records by family (commit aaa...), on this machine
    first = {h["name"]: h for h in hist if h["commit"] == "a" * 40 and h["machine"]["id"] == common.machine()["id"]}
    changes, skipped = report.compare(first, old)
    assert changes and not skipped
    assert all(c["verdict"] == "within noise" for c in changes), [c for c in changes if c["verdict"] != "within noise"]
    # make exit_latency's hvc twice as slow, with tight runs: a regression; fs rates halved: one too
    new = copy.deepcopy(old)
    hvc = next(r for r in new["exit_latency"]["rows"] if r["name"] == "hvc")
    hvc["runs"] = [v * 2 for v in hvc["runs"]]
    p9 = next(r for r in new["fs"]["rows"] if r["name"] == "p9_read")
    p9["runs"] = [v / 2 for v in p9["runs"]]
    changes, _ = report.compare(old, new)
    bad = {(c["family"], c["row"]) for c in changes if c["verdict"] == "REGRESSION"}
    assert bad == {("exit_latency", "hvc"), ("fs", "p9_read")}
    text = report.print_compare(changes, [], "old", "new")
    assert "2 regression(s)" in text
    one = tmp_path / "one"  # a results directory with this family only (quicker to render)
    one.mkdir()
    with open(one / "exit_latency.json", "w") as f:
        json.dump(new["exit_latency"], f)
    # noisy runs hide the same change
    hvc["runs"] = [v * 0.5 for v in hvc["runs"]] + [hvc["runs"][0] * 3]
    changes, _ = report.compare(old, new)
    assert next(c for c in changes if c["row"] == "hvc")["verdict"] == "within noise"
    # another machine: not compared
    other = copy.deepcopy(new)
    other["exit_latency"]["machine"] = {**other["exit_latency"]["machine"], "id": "elsewhere"}
    changes, skipped = report.compare(old, {"exit_latency": other["exit_latency"]})
    assert not changes and "exit_latency" in skipped[0]
    # the CLI: --compare the history with a file, plot written, exit 1 on a regression
    assert report.main(["--results", str(one), "--out", str(tmp_path / "o"), "--compare",
                        str(tmp_path / common.HISTORY)]) == 1  # fmt: skip
    assert (tmp_path / "o" / "compare.png").stat().st_size > 1000


@pytest.mark.qemu
def test_exit_latency_writes_a_valid_file(tmp_path):
    """End to end on the cheapest benchmark (1 run each side, about a second)."""
    if not common.qemu_binary() or not os.path.exists(os.path.join(GUEST_DIR, "bench_exits.elf")):
        pytest.skip("needs qemu-system-aarch64 and guest/build/bench_exits.elf")
    env = {**os.environ, "VMMPY_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, os.path.join(BENCH, "exit_latency.py"), "--runs", "1"], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    rec = common.load(str(tmp_path / "exit_latency.json"))
    assert {r["name"] for r in rec["rows"]} == set(bench("exit_latency").ORDER)
    assert len((tmp_path / common.HISTORY).read_text().splitlines()) == 1
