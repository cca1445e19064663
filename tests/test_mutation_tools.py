"""Tier 1: the mutation-testing tables stay true to the code (tools/mutate.py, docs/testing.md)."""

from __future__ import annotations

import os
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
mutate = pytest.importorskip("mutate")


def test_every_recorded_equivalent_mutant_still_matches_its_line():
    """An entry whose original line was rewritten, or whose `file:N` line moved, silently applies to nothing
    (two pl011.c entries had: their survivors were counted again); it must be updated with the file."""
    assert mutate.stale_equivalents(mutate.load_equivalent()) == []


def test_a_moved_or_rewritten_line_is_reported():
    rel = "csrc/dev/pl011.c"
    src = mutate.read_text(os.path.join(ROOT, rel)).splitlines()
    line = next(i for i, ln in enumerate(src, 1) if ln.strip() == "pl011_destroy(u);")
    stale = mutate.stale_equivalents(
        {
            (rel, line + 1, "pl011_destroy(u);", "/*pl011_destroy(u);*/"),
            (rel, 0, "no such line;", "x"),
            (rel, line, "pl011_destroy(u);", "/*pl011_destroy(u);*/"),
        }
    )
    assert stale == [f"{rel}: no line `no such line;`",
                     f"{rel}:{line + 1} does not hold `pl011_destroy(u);` (it is on line {line})"]  # fmt: skip


def test_every_mapped_file_and_test_exists():
    from mutation_map import TARGETS

    for rel, tests in TARGETS.items():
        assert os.path.exists(os.path.join(ROOT, rel)), rel
        for t in tests:
            if t.startswith("tests/"):
                assert os.path.exists(os.path.join(ROOT, t.split("::")[0])), (rel, t)


def test_a_mutant_runs_the_tests_that_reach_its_line_fastest_first():
    cov = dict(exec=[10, 11, 12], full=[12], tests={"10": ["slow", "fast"]}, time={"slow": 2.0, "fast": 0.5})
    every = ["tests/test_a.py", "-k", "x"]
    assert mutate.selection_for(cov, 10, every) == (["fast", "slow"], 2.5)
    assert mutate.selection_for(cov, 11, every) == (None, 0.0)  # code no test runs: a survivor, unrun
    assert mutate.selection_for(cov, 12, every) == (every, 0.0)  # run at import: every test reaches it
    assert mutate.selection_for(cov, 13, every) == (every, 0.0)  # no code of its own (a table, a declaration)
    assert mutate.selection_for(None, 10, every) == (every, 0.0)


def test_the_ledger_keeps_each_files_marks_for_its_version(tmp_path, monkeypatch):
    monkeypatch.setattr(mutate, "LEDGER", str(tmp_path / "ledger.txt"))
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={0: "k", 3: "s"})])
    mutate.update_ledger([dict(file="csrc/b.c", version="w1", population=2, marks={1: "b"})])
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={3: "k", 4: "u"})])
    assert mutate.load_ledger() == {"csrc/a.c": ("v1", "k..ku"), "csrc/b.c": ("w1", ".b")}
    # a survival from a run with older tests (another worktree) does not undo a kill of the same version
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={0: "s", 3: "u", 4: "k"})])
    assert mutate.load_ledger()["csrc/a.c"] == ("v1", "k..kk")
    # nor a reviewed equivalent (the survival was recorded before the review); a same-code one can go
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={1: "q", 2: "e"})])
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={1: "s", 2: "u"})])
    assert mutate.load_ledger()["csrc/a.c"] == ("v1", "kqukk")
    # a new version of the file starts again: the old marks are of mutants that no longer exist
    mutate.update_ledger([dict(file="csrc/a.c", version="v2", population=3, marks={2: "e"})])
    assert mutate.load_ledger()["csrc/a.c"] == ("v2", "..e")


def test_the_ledger_reuses_kills_only_of_the_current_version(tmp_path, monkeypatch):
    rel = "csrc/net/pcap.c"
    version = mutate.version_of(os.path.join(ROOT, rel), mutate.RULES)
    monkeypatch.setattr(mutate, "LEDGER", str(tmp_path / "ledger.txt"))
    mutate.update_ledger([dict(file=rel, version=version, population=6, marks={0: "k", 1: "s", 2: "u", 3: "e",
                                                                                4: "q", 5: "b"})])  # fmt: skip
    mutate.update_ledger([dict(file="csrc/arm/psci.c", version="old", population=1, marks={0: "k"})])
    assert mutate.ledger_earlier(mutate.RULES) == {
        (rel, version, "pcap.mutant.0.c"): "killed",
    }  # survivors, equivalents and stillborn mutants are looked at again (a compile is cheap; a header may change)
    # --unrun: the survivors keep their outcome too (only undecided mutants run), marked as the ledger's so that
    # --resume's survivors (from results.jsonl) still run again
    assert mutate.ledger_earlier(mutate.RULES, survivors=True) == {
        (rel, version, "pcap.mutant.0.c"): "killed",
        (rel, version, "pcap.mutant.1.c"): "ledger-survived",
        (rel, version, "pcap.mutant.2.c"): "ledger-uncovered",
    }


def test_unrun_without_the_ledger_is_one_clear_error(capsys):
    assert mutate.main(["--unrun", "--file", "csrc/net/pcap.c"]) == 2
    assert capsys.readouterr().err == "mutate: --unrun needs --ledger (the ledger holds the outcomes it skips)\n"


@pytest.mark.slow
def test_the_coverage_run_finds_the_tests_that_reach_each_line(tmp_path, monkeypatch):
    """A real coverage run (the library built in tmp_path, pl011.c with gcov, tests/test_pl011.py a test
    at a time): a mutant of a line runs only the tests the map names for it, so the map must hold."""
    monkeypatch.setattr(mutate, "BUILD", str(tmp_path))
    monkeypatch.setattr(mutate, "_COVERAGE", {})
    mutate.build_base()
    rel = "csrc/dev/pl011.c"
    cov = mutate.coverage([rel], ["tests/test_pl011.py"])[rel]
    src = mutate.read_text(os.path.join(ROOT, rel)).splitlines()

    def line(text: str) -> int:
        return next(i for i, ln in enumerate(src, 1) if ln.strip() == text)

    reach = lambda text: set(cov["tests"].get(str(line(text)), []))  # noqa: E731
    tx = reach("u->ris |= INT_TX; /* the FIFO drained through its trigger level */")
    assert "tests/test_pl011.py::test_transmit_goes_to_the_serial_buffer" in tx
    assert "tests/test_pl011.py::test_identification_registers" not in tx
    refused = reach('vmm__snap_fail(s, "register %u holds 0x%x", i, *regs[i]);')
    assert refused == {"tests/test_pl011.py::test_a_snapshot_register_outside_what_a_guest_can_write_is_refused"}
    assert len(reach("free(u);")) > 20  # every test's machine is destroyed inside it (gc at each test's end)
    assert (
        line("static const uint8_t pl011_id[8] = { 0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1 };")
        not in cov["exec"]
    )
    assert all(t.startswith("tests/test_pl011.py::") and s >= 0 for t, s in cov["time"].items())
    # cached: a second call (as for a second file of the same selection) does not run the tests again
    assert mutate.coverage([rel], ["tests/test_pl011.py"])[rel] == cov


def test_a_slots_runner_runs_each_selection_in_a_fresh_child_and_times_it_out(tmp_path, monkeypatch):
    """tools/mutate_server.py forks a child per run: each child imports the extension from the slot's
    package as it is then (a mutant's), passes or fails as pytest does, and is killed at its time limit."""
    import glob
    import json
    import shutil
    import time

    monkeypatch.setattr(mutate, "BUILD", str(tmp_path))
    slot = mutate.Slot(0)
    shutil.copy(glob.glob(os.path.join(ROOT, "vmmpy", "_vmm*.so"))[0], os.path.join(slot.pkg, "vmmpy"))
    probe = tmp_path / "probe.jsonl"
    with open(os.path.join(slot.pkg, "tests", "test_zz_probe.py"), "w") as f:
        f.write(
            "import json, os, time\n"
            "def test_loads():\n"
            "    from vmmpy import _ffi, _vmm\n"
            f"    with open({str(probe)!r}, 'a') as f:\n"
            "        f.write(json.dumps([os.getpid(), _vmm.__file__]) + '\\n')\n"
            "def test_fails():\n"
            "    assert False\n"
            "def test_hangs():\n"
            "    time.sleep(60)\n"
            "def test_hangs_in_c():\n"
            "    import ctypes\n"
            "    ctypes.CDLL(None).sleep(60)\n"
        )
    try:
        assert slot.run_tests(["tests/test_zz_probe.py::test_loads"], 30) == "pass"
        assert slot.run_tests(["tests/test_zz_probe.py::test_loads"], 30) == "pass"
        assert slot.run_tests(["tests/test_zz_probe.py::test_fails"], 30) == "fail"
        assert slot.run_tests(["tests/test_zz_probe.py::test_hangs"], 1) == "timeout"
        # a test past its own limit ends the run (SIGALRM's default action, also inside a C call)
        t = time.monotonic()
        hung = ["tests/test_zz_probe.py::test_loads", "tests/test_zz_probe.py::test_hangs_in_c"]
        assert slot.run_tests(hung, 50, limits={hung[1]: 1.0}) == "fail"
        assert time.monotonic() - t < 20
        assert slot.run_tests(["tests/test_zz_probe.py::test_loads"], 30) == "pass"  # the runner goes on
    finally:
        slot.close()
    runs = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(runs) == 4 and len({pid for pid, _ in runs}) == 4
    assert all(path.startswith(slot.pkg) for _, path in runs)


@pytest.mark.parametrize("sanitizer", ["address", "thread"])
def test_a_sanitizer_run_only_adds_its_kills_to_the_ledger(tmp_path, monkeypatch, sanitizer):
    """--asan and --tsan alike: a kill only a sanitizer sees is `a`."""
    monkeypatch.setattr(mutate, "LEDGER", str(tmp_path / "ledger.txt"))
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={0: "k", 1: "s", 2: "u", 3: "e"})])
    san = dict(file="csrc/a.c", version="v1", population=5, marks={0: "s", 1: "k", 2: "s", 3: "k", 4: "k"})
    mutate.update_ledger([san], sanitizer=sanitizer)
    # a kill under the sanitizers marks a survivor or an unrun mutant `a`; its survivals change nothing
    assert mutate.load_ledger() == {"csrc/a.c": ("v1", "kauea")}
    # and a plain run's survival does not take it back (the sanitizers still catch it)
    mutate.update_ledger([dict(file="csrc/a.c", version="v1", population=5, marks={1: "s", 4: "u"})])
    assert mutate.load_ledger() == {"csrc/a.c": ("v1", "kauea")}
    assert "a killed under a sanitizer only (--asan or --tsan)" in (tmp_path / "ledger.txt").read_text()


def test_ledger_add_reads_each_records_sanitizer_and_an_older_records_asan_flag(tmp_path, monkeypatch):
    """results.jsonl records say which sanitizer ran (`sanitizer`); those written before --tsan say `asan`."""
    import json

    monkeypatch.setattr(mutate, "LEDGER", str(tmp_path / "ledger.txt"))
    rel = "csrc/dev/pl011.c"
    version = mutate.version_of(os.path.join(ROOT, rel), mutate.RULES)
    rec = lambda i, status, **kw: dict(file=rel, version=version, mutant=f"pl011.mutant.{i}.c", status=status,  # noqa: E731
                                       population=4, **kw)  # fmt: skip
    recs = [
        rec(0, "survived", sanitizer=""), rec(1, "survived", sanitizer=""), rec(2, "survived"),  # plain runs
        rec(0, "killed", asan=True),  # an --asan record written before --tsan
        rec(1, "killed", sanitizer="thread"), rec(2, "survived", sanitizer="thread"),
    ]  # fmt: skip
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    mutate.ledger_add([str(p)])
    assert mutate.load_ledger() == {rel: (version, "aas.")}
    assert [mutate.sanitizer_of(r) for r in recs] == ["", "", "", "address", "thread", "thread"]


TSAN_REPORT = """==================
WARNING: ThreadSanitizer: {kind} (pid=4242)
  Write of size 1 at 0x7b0c00001234 by thread T3:
    #0 clock_main /work/main/csrc/core/run.c:130 ({module}+0x4c1a2)

  Previous read of size 1 at 0x7b0c00001234 by thread T1 (mutexes: write M0):
    #0 vcpu_main /work/main/csrc/core/run.c:300 ({module}+0x4d001)

SUMMARY: ThreadSanitizer: {kind} /work/main/csrc/core/run.c:130 in clock_main
==================
"""


def test_a_thread_sanitizer_report_kills_when_a_frame_is_libvmms(tmp_path):
    """The interpreter and the programs a test starts run with the runtime preloaded but uninstrumented: only a
    report with a frame in the extension counts (the blank lines between its stacks do not end it)."""
    logs = str(tmp_path / "sanitizer")
    (tmp_path / "sanitizer.1").write_text(TSAN_REPORT.format(kind="signal handler spoils errno", module="python3.11"))
    assert not mutate.sanitizer_found(logs)
    (tmp_path / "sanitizer.2").write_text(TSAN_REPORT.format(kind="data race", module="_vmm.abi3.so"))
    assert mutate.sanitizer_found(logs)
    summary = "ThreadSanitizer: data race /work/main/csrc/core/run.c:130 in clock_main"
    assert mutate.sanitizer_summaries(logs) == [summary]


def test_under_asan_the_junit_report_decides_whether_the_tests_passed(tmp_path):
    """The interpreter's leaks at exit give every --asan run the sanitizers' exit status, a failed test's
    too (every mutant survived the sanitizer runs until the report was read)."""
    p = tmp_path / "junit.xml"
    assert not mutate.junit_passed(str(p))  # no report: pytest did not get that far
    suite = (
        '<testsuites><testsuite name="pytest" errors="{}" failures="{}" skipped="0" tests="3"></testsuite></testsuites>'
    )
    for errors, failures, ok in ((0, 0, True), (0, 1, False), (1, 0, False)):
        p.write_text(suite.format(errors, failures))
        assert mutate.junit_passed(str(p)) == ok


def test_only_a_failing_test_or_a_crash_kills():
    """pytest's exit status: 1 (failed), 2 (interrupted) or a signal (a crash, or SIGALRM at a test's own time
    limit) kill; 3 (internal error), 4 (usage error: an unknown node id), 5 (no tests ran) and 99 (pytest.main
    raised) decide nothing."""
    assert mutate.outcome(0) == "pass"
    assert [mutate.outcome(rc) for rc in (1, 2, -14, -11, -9)] == ["fail"] * 5
    assert [mutate.outcome(rc) for rc in (3, 4, 5, 99)] == ["error"] * 4


def test_a_case_label_runs_the_whole_selection():
    cov = dict(exec=[10, 11], full=[], tests={"10": ["t"], "11": ["t"]}, time={"t": 1.0})
    every = ["tests/test_a.py"]
    assert mutate.selection_for(cov, 10, every, "case GIC_ICFGR:") == (every, 0.0)
    assert mutate.selection_for(cov, 11, every, "default:") == (every, 0.0)
    assert mutate.selection_for(cov, 11, every, "x = 1;") == (["t"], 1.0)


def test_a_parametrized_id_pytest_cannot_find_again_runs_its_whole_function():
    """pytest escapes a backslash in a parameter's id (test_elf_header_checks' regex texts), and such an id given
    back on the command line is not found (exit status 4, which an early version counted as a kill)."""
    t1 = "tests/test_loader.py::test_elf_header_checks[k-ArchError-not an aarch64 ELF \\\\(e_machine 62\\\\)]"
    t2 = "tests/test_loader.py::test_elf_header_checks[k2-ArchError-not an aarch64 ELF \\\\(e_machine 243\\\\)]"
    cov = dict(exec=[5], full=[], tests={"5": [t1, "tests/test_loader.py::test_x[a]", t2]},
               time={t1: 0.1, t2: 0.2, "tests/test_loader.py::test_x[a]": 0.3})  # fmt: skip
    run, known = mutate.selection_for(cov, 5, ["tests/test_loader.py"])
    assert run == ["tests/test_loader.py::test_elf_header_checks", "tests/test_loader.py::test_x[a]"]
    assert known == pytest.approx(0.6)


def test_the_report_of_results_files_counts_undecided_mutants(tmp_path, capsys):
    """--report reads results.jsonl files: a record of a mutant the tests could not decide ("error") is counted
    apart, neither killed nor survived."""
    import json

    recs = [dict(file="csrc/a.c", mutant=f"a.mutant.{i}.c", line=i, before="x", after="y", status=st, population=4)
            for i, st in enumerate(("killed", "survived", "error", "stillborn"))]  # fmt: skip
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (r,) = mutate.results_of([str(p)])
    assert (r["killed"], r["survived"], r["error"], r["stillborn"]) == (1, 1, 1, 1)
    assert mutate.report([r]) == 50.0
    assert "1 undecided" in capsys.readouterr().out


def test_a_bitwise_or_inside_or_at_the_end_of_a_line_is_read_back_unescaped(tmp_path, monkeypatch):
    """` | ` separates the fields, so an or in the code is written ` \\| `, and one that ends a continued line
    ` \\|` (gic_redist.c's GICR_TYPER expression): both read back as the line's own text."""
    eq = tmp_path / "eq.txt"
    eq.write_text("# a comment\nf.c:7 | a \\| b \\| | a \\| c \\| | why\nf.c | x \\| y; | x & y; | why\n")
    monkeypatch.setattr(mutate, "EQUIVALENT", str(eq))
    assert mutate.load_equivalent() == {("f.c", 7, "a | b |", "a | c |"), ("f.c", 0, "x | y;", "x & y;")}


def test_a_continued_condition_runs_the_tests_of_its_whole_statement():
    """gcov gave run_wait.c's `!(vcpu && atomic_load(&vcpu->irq)))`, the second line of a while condition, only
    the tests where vcpu was not NULL: a mutant there runs the tests of the statement's first line too."""
    src = ["static void f(void)", "{", "    while (a() &&", "           !(v && v->irq))", "        x();", "}"]
    cov = dict(exec=[3, 4, 5], full=[], tests={"3": ["t1", "t2"], "4": ["t2"], "5": ["t1"]}, time={"t1": 1, "t2": 2})
    assert mutate.statement_start(src, 4) == 3 and mutate.statement_start(src, 5) == 5
    assert mutate.selection_for(cov, 4, ["all"], src[3].strip(), src) == (["t1", "t2"], 3)
    assert mutate.selection_for(cov, 5, ["all"], src[4].strip(), src) == (["t1"], 1)


def test_a_branch_of_an_if_else_chain_runs_the_tests_of_the_whole_chain():
    """gic_redist.c's `} else if (off == GIC_ICFGR ...)` made `}  if` returns false for the writes of the branches
    before it, which never reach its line unmutated: the mutant runs the tests of the chain's `if` line on."""
    src = ["    if (a) {", "        x();", "    } else if (b) {", "        y();", "    } else {", "        z();"]
    cov = dict(exec=[1, 2, 3, 4, 6], full=[], tests={"1": ["ta", "tb"], "2": ["ta"], "3": ["tb"], "4": ["tb"]},
               time={"ta": 1, "tb": 2})  # fmt: skip
    assert mutate.selection_for(cov, 3, ["all"], src[2].strip(), src) == (["ta", "tb"], 3)
    assert mutate.selection_for(cov, 4, ["all"], src[3].strip(), src) == (["tb"], 2)


def test_a_ternary_continued_before_its_operator_and_a_bare_else_widen_too():
    """clang-format breaks a ternary before `?` and `:` (virtio.c's transport choice), and a chain may be written
    without braces (`else if` on a line of its own): both widen as the forms above."""
    src = ["    rc = pci ? f()", "             : g();", "    if (a)", "        x();", "    else if (b)", "        y();"]
    cov = dict(exec=[1, 2, 3, 4, 5, 6], full=[], tests={"1": ["ta", "tb"], "2": ["tb"], "3": ["tc", "td"], "5": ["td"]},
               time={"ta": 1, "tb": 1, "tc": 1, "td": 1})  # fmt: skip
    assert mutate.statement_start(src, 2) == 1 and mutate.statement_start(src, 3) == 3
    assert mutate.selection_for(cov, 2, ["all"], src[1].strip(), src)[0] == ["ta", "tb"]
    assert mutate.selection_for(cov, 5, ["all"], src[4].strip(), src)[0] == ["tc", "td"]


def test_the_report_reads_the_ledgers_reviews_against_the_equivalents_file(tmp_path, monkeypatch):
    """A survivor reviewed since its mark was written counts as an equivalent, and a review withdrawn since
    counts as a survivor, without running the file again."""
    rel = "csrc/net/pcap.c"
    src = os.path.join(ROOT, rel)
    mutants = mutate.generate(src, mutate.RULES)
    lines = mutate.read_text(src).splitlines()
    eq = mutate.load_equivalent()
    reviewed = next(mutate.index_of(m) for m in mutants if mutate.is_reviewed(eq, rel, *mutate.change_of(lines, m)))
    marks = ["k"] * len(mutants)
    marks[reviewed] = "s"
    monkeypatch.setattr(mutate, "LEDGER", str(tmp_path / "ledger.txt"))
    with open(mutate.LEDGER, "w") as f:
        f.write(f"{rel} {mutate.version_of(src, mutate.RULES)} {''.join(marks)}\n")
    (r,) = mutate.ledger_results(mutate.RULES)
    assert (r["survived"], r["equivalent"], r["survivors"]) == (0, 1, [])
    monkeypatch.setattr(mutate, "load_equivalent", lambda: set())
    marks[reviewed] = "q"
    with open(mutate.LEDGER, "w") as f:
        f.write(f"{rel} {mutate.version_of(src, mutate.RULES)} {''.join(marks)}\n")
    (r,) = mutate.ledger_results(mutate.RULES)
    assert (r["survived"], r["equivalent"], len(r["survivors"])) == (1, 0, 1)
