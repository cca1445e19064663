"""Tier 1: carrying the mutation ledger's marks to a new version of a file (tools/mutate_migrate.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
migrate = pytest.importorskip("mutate_migrate")


def test_a_mark_follows_its_line_and_a_changed_line_is_run_again():
    old = ["a = 1;", "b = 2;", "c = 3;"]
    new = ["x = 0;", "a = 1;", "b = 20;", "c = 3;"]  # a line added above, b's line rewritten
    old_changes = [(1, "a = 1;", "a = 0;"), (2, "b = 2;", "b = 0;"), (3, "c = 3;", "c = 0;"), (3, "c = 3;", "/**/")]
    new_changes = [
        (1, "x = 0;", "x = 1;"),  # new line: not run
        (2, "a = 1;", "a = 0;"),  # old line 1
        (3, "b = 20;", "b = 0;"),  # changed line: not run
        (4, "c = 3;", "/**/"),  # old line 3, its second mutant
        (4, "c = 3;", "c = 0;"),
    ]
    assert migrate.carry(old, old_changes, "ksqe", new, new_changes) == ".k.eq"


def test_the_same_change_twice_on_a_line_maps_in_order():
    lines = ["if (a < b && c < d)"]
    changes = [(1, lines[0], "if (a <= b && c < d)"), (1, lines[0], "if (a <= b && c < d)")]
    assert migrate.carry(lines, changes, "ks", lines, changes) == "ks"
    assert migrate.carry(lines, changes, "ks", lines, changes[:1]) == "k"


def test_renumbering_moves_only_the_files_numbered_entries_of_the_old_version(tmp_path):
    eq = tmp_path / "eq.txt"
    eq.write_text(
        "# header | not an entry\n"
        "csrc/x.c:3 | c = 3; | c = 0; | why\n"
        "csrc/x.c | a = 1; | a = 0; | any line\n"
        "csrc/y.c:3 | c = 3; | c = 0; | another file\n"
        "csrc/x.c:2 | b = 2; | b = 0; | its line changed: left for the stale check\n"
        "csrc/x.c:2 | a = 1; | a = 0; | numbered for the new version already: stays\n"
        "csrc/x.c:1 | a \\| 1; | a; | an escaped bar: moves\n"
    )
    old = ["a | 1;", "b = 2;", "c = 3;"]
    new = ["x = 0;", "a = 1;", "b = 20;", "c = 3;"]
    assert migrate.shared_lines(old, new) == {4: 3}
    old[0] = "a = 1;"
    assert migrate.shared_lines(old, new) == {2: 1, 4: 3}
    old[0] = "a | 1;"
    new[1] = "a | 1;"
    assert migrate.renumber_equivalents(str(eq), "csrc/x.c", old, new) == 2
    assert eq.read_text().splitlines()[1:] == [
        "csrc/x.c:4 | c = 3; | c = 0; | why",
        "csrc/x.c | a = 1; | a = 0; | any line",
        "csrc/y.c:3 | c = 3; | c = 0; | another file",
        "csrc/x.c:2 | b = 2; | b = 0; | its line changed: left for the stale check",
        "csrc/x.c:2 | a = 1; | a = 0; | numbered for the new version already: stays",
        "csrc/x.c:2 | a \\| 1; | a; | an escaped bar: moves",
    ]
    assert migrate.renumber_equivalents(str(eq), "csrc/x.c", old, new) == 0  # again: nothing moves twice


def test_the_old_version_is_found_in_git_by_its_digest(tmp_path):
    """old_source walks the file's history for the blob whose digest the ledger holds."""
    repo = tmp_path / "r"
    (repo / "csrc").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    src = repo / "csrc" / "f.c"
    for text in ("int a;\n", "int b;\n", "int c;\n"):
        src.write_text(text)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", text], check=True)

    def digest(data: bytes) -> str:
        return data.decode().strip()

    assert migrate.old_source(str(repo), "csrc/f.c", "int b;", digest) == b"int b;\n"
    assert migrate.old_source(str(repo), "csrc/f.c", "int c;", digest) == b"int c;\n"  # the work tree's
    assert migrate.old_source(str(repo), "csrc/f.c", "int z;", digest) is None
