"""pytest plugin for tools/mutate.py's coverage run (`-p mutate_cov`): the lines of the instrumented C files
each test runs, so that a mutant is tried only against the tests that reach its line.

The extension under test is linked with gcov (`--coverage`) and with vmm_mutate_gcov_flush(), which writes
the counters gathered since its last call to the .gcda files and clears them. Around each test (its setup
and teardown included) this plugin flushes, reads the .gcda files with `gcov -j -t` (JSON on stdout) and
deletes them, and writes one JSON line per test:

    {"test": node id, "time": seconds, "lines": {"csrc/arm/psci.c": [executed line numbers]}}

and, before the first test, a line {"test": "", ...} for what ran while the tests were collected (a line
that only runs then, at import, is reached by every test). Environment: VMMPY_MUTATE_COV (the output
file) and VMMPY_MUTATE_GCDA (`path.gcda=csrc/file.c` pairs separated by os.pathsep).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import time

import pytest

_state: dict = {}


def _gcda() -> list[tuple[str, str]]:
    pairs = [p.split("=", 1) for p in os.environ["VMMPY_MUTATE_GCDA"].split(os.pathsep) if p]
    return [(g, rel) for g, rel in pairs]


def _flush() -> None:
    if "flush" not in _state:
        from vmmpy import (
            _ffi,  # noqa: F401  (libunicorn first: the extension links against it)
            _vmm,  # the instrumented extension the tests load
        )

        _state["flush"] = ctypes.CDLL(_vmm.__file__).vmm_mutate_gcov_flush
    _state["flush"]()


def gcov_lines(path: str, name: str, run_only: bool) -> set[int]:
    """The lines of source file `name` that gcov lists for `path` (a .gcda, or a .gcno: none run): those
    with code, or (run_only) those that ran."""
    p = subprocess.run(["gcov", "-j", "-t", path], cwd=os.path.dirname(path), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"gcov {path}: {p.stderr.strip()}")
    lines: set[int] = set()
    for doc in p.stdout.splitlines():  # one JSON document per line
        for f in json.loads(doc)["files"]:
            if os.path.basename(f["file"]) == name:
                lines.update(ln["line_number"] for ln in f["lines"] if ln["count"] or not run_only)
    return lines


def _executed() -> dict[str, list[int]]:
    """The lines each instrumented file ran since the last flush (and the .gcda files gone)."""
    out: dict[str, list[int]] = {}
    for gcda, rel in _gcda():
        if not os.path.exists(gcda):
            out[rel] = []
            continue
        try:
            out[rel] = sorted(gcov_lines(gcda, os.path.basename(rel), run_only=True))
        finally:
            os.unlink(gcda)
    return out


def _write(rec: dict) -> None:
    with open(os.environ["VMMPY_MUTATE_COV"], "a") as f:
        f.write(json.dumps(rec) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    gc.collect()  # the last test's machines are destroyed now, not inside this one
    _flush()
    startup = _executed()  # collection's (the first time) or what ran between two tests
    if not _state.get("started"):
        _state["started"] = True
        _write({"test": "", "time": 0.0, "lines": startup})
    _state["skipped"] = False
    t = time.monotonic()
    yield
    gc.collect()
    _flush()
    lines = _executed()
    if _state["skipped"]:  # a skipped test reaches nothing (what ran meanwhile was another thread's)
        lines = {rel: [] for rel in lines}
    _write({"test": item.nodeid, "time": time.monotonic() - t, "lines": lines})


def pytest_runtest_logreport(report):
    if report.skipped:
        _state["skipped"] = True
