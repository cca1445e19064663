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
