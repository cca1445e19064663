"""Carry tools/mutation_ledger.txt's marks over to a new version of a mapped file (`mutate.py --ledger-migrate`).

A file's marks are of one version of it (its source and the rule set). A fix to one function would otherwise
throw away the outcome of every mutant of the file, and run.c takes over an hour to run again. The ledger's
version of the file is found in git's history (the blob whose digest it is); a mutant of the new version keeps
the mark of the old version's mutant that makes the same change to the same line, where that line is one the
two versions share (difflib's matching blocks). Mutants of changed or new lines get `.` (not run), for a
`--ledger --unrun` run to decide.

What a carried mark assumes: a change elsewhere in the file does not change whether the tests see this mutant.
A survivor carried over is run again by the next `--ledger` run anyway; a kill carried over could in principle
have been lost by the change (as one could by a change to another file, which the ledger never sees). A full
`make mutate` run (without --ledger) checks every mark afresh.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import tempfile


def old_source(root: str, rel: str, version: str, digest, depth: int = 200) -> bytes | None:
    """The source of rel whose digest (digest(bytes), mutate.digest_of) is `version`, from git's history (the
    work tree's first), or None."""
    path = os.path.join(root, rel)
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
        if digest(data) == version:
            return data
    log = subprocess.run(
        ["git", "-C", root, "log", f"-{depth}", "--format=%H", "--", rel], capture_output=True, text=True
    )
    for commit in log.stdout.split():
        show = subprocess.run(["git", "-C", root, "show", f"{commit}:{rel}"], capture_output=True)
        if show.returncode == 0 and digest(show.stdout) == version:
            return show.stdout
    return None


def changes(src_lines: list[str], mutants: list[str], change_of) -> list[tuple[int, str, str]]:
    return [change_of(src_lines, m) for m in mutants]


def shared_lines(old_lines: list[str], new_lines: list[str]) -> dict[int, int]:
    """New line number -> old line number (1-based), for the lines both versions share."""
    line_map: dict[int, int] = {}
    sm = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for a, b, size in sm.get_matching_blocks():
        for k in range(size):
            line_map[b + k + 1] = a + k + 1
    return line_map


def _holds(lines: list[str], n: int, text: str) -> bool:
    return 0 < n <= len(lines) and lines[n - 1].strip() == text


def renumber_equivalents(path: str, rel: str, old_lines: list[str], new_lines: list[str]) -> int:
    """Move tools/mutation_equivalent.txt's `rel:N` entries to their line's new number (a line both versions
    share); how many moved. Only an entry whose original line is the old version's line N moves (one already
    numbered for the new version stays); one on a changed line stays, for mutate.stale_equivalents to report."""
    new_of = {old: new for new, old in shared_lines(old_lines, new_lines).items()}
    moved = 0
    out = []
    with open(path) as f:
        lines = f.read().splitlines(True)
    for text in lines:
        head, sep, rest = text.partition(" | ")
        name, colon, num = head.partition(":")
        if sep and colon and name == rel and num.isdigit():
            n = int(num)
            original = re.split(r"(?<!\\) \| ", rest, maxsplit=1)[0].replace("\\|", "|").strip()
            if n in new_of and new_of[n] != n and _holds(old_lines, n, original) and not _holds(new_lines, n, original):
                text = f"{rel}:{new_of[n]}{sep}{rest}"
                moved += 1
        out.append(text)
    if moved:
        with open(path + ".tmp", "w") as f:
            f.write("".join(out))
        os.replace(path + ".tmp", path)
    return moved


def carry(old_lines: list[str], old_changes, old_marks: str, new_lines: list[str], new_changes) -> str:
    """The new version's marks: a new mutant takes the mark of the old one with the same change on the line it
    came from (the n-th such mutant of that line to the n-th, as the generator numbers them in order)."""
    line_map = shared_lines(old_lines, new_lines)
    by_change: dict[tuple[int, str, str], list[int]] = {}
    for i, key in enumerate(old_changes):
        by_change.setdefault(key, []).append(i)
    out = []
    for line, before, after in new_changes:
        old_line = line_map.get(line)
        queue = by_change.get((old_line, before, after)) if old_line else None
        out.append(old_marks[queue.pop(0)] if queue else ".")
    return "".join(out)


def generate_old(m, data: bytes, rel: str) -> tuple[str, list[str]]:
    """universalmutator's mutants of an old version (named as the current file's are), in a temporary
    directory: the directory (the caller removes it) and their paths, in the generator's order."""
    tmp = tempfile.mkdtemp(prefix="mutate-migrate-")
    src = os.path.join(tmp, os.path.basename(rel))
    with open(src, "wb") as f:
        f.write(data)
    out = os.path.join(tmp, "mutants")
    os.makedirs(out)
    try:
        m.run_mutator(src, m.RULES, out)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, m.mutants_in(out)


def migrate(m, files: list[str] | None = None, log=print) -> dict[str, tuple[int, int]]:
    """Carry the ledger's marks of each mapped file (all, or `files`) whose current version differs from the
    ledger's over to the current version, under the ledger's lock. m is tools/mutate.py's module. Returns
    {file: (carried, not run)} for the files migrated; a file whose old version git does not have is left as
    it is (its marks stay unused until a run of the file replaces them)."""
    done = {}
    with m.ledger_locked():
        ledger = m.load_ledger()
        for rel, (version, marks) in sorted(ledger.items()):
            src = os.path.join(m.ROOT, rel)
            if (files and rel not in files) or rel not in m.TARGETS or not os.path.exists(src):
                continue
            current = m.version_of(src, m.RULES)
            if current == version:
                continue
            data = old_source(m.ROOT, rel, version, lambda b: m.digest_of(b, m.RULES))
            if data is None:
                log(f"mutate: {rel}: the ledger's version {version} is not in git's recent history; not migrated")
                continue
            tmp, old_mutants = generate_old(m, data, rel)
            try:
                if len(old_mutants) != len(marks):
                    log(f"mutate: {rel}: {len(old_mutants)} old mutants, {len(marks)} marks; not migrated")
                    continue
                old_lines = data.decode().splitlines()
                new_lines = m.read_text(src).splitlines()
                new_mutants = m.generate(src, m.RULES)
                new = carry(
                    old_lines,
                    changes(old_lines, old_mutants, m.change_of),
                    marks,
                    new_lines,
                    changes(new_lines, new_mutants, m.change_of),
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            renumber_equivalents(m.EQUIVALENT, rel, old_lines, new_lines)
            ledger[rel] = (current, new)
            done[rel] = (len(new) - new.count("."), new.count("."))
            log(f"mutate: {rel}: {done[rel][0]} marks carried to version {current}, {done[rel][1]} mutants to run")
        if done:
            m.write_ledger(ledger)
    return done
