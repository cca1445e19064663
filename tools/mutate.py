#!/usr/bin/env python3
"""Mutation testing of libvmm's C core (`make mutate`, `make mutate-ci`).

For each file in tools/mutation_map.py, universalmutator (PyPI; regex rules for C, no compiler plugin)
writes mutants: one small change each (an operator, a constant, a condition, a deleted statement). Each
mutant is compiled alone into a private copy of the extension (build/mutate/pkg/vmmpy/_vmm.abi3.so:
the other objects are built once, so a mutant costs one compile, one link and its tests) and the tests
the map names for its file run against it. A mutant is

  killed      the tests failed (or ran over their time limit: a hang is caught too),
  survived    they passed: a change to guest-visible behaviour no test noticed, or an equivalent mutant,
  equivalent  its object code is the original's (trivial compiler equivalence: the compiler proved the
              change meaningless), or it is recorded in tools/mutation_equivalent.txt after a review,
  stillborn   it does not compile (not counted).

The kill rate is killed / (killed + survived). Survivors are listed with their line and change; results
go to build/mutate/results.jsonl as they come (a long run can be watched, or stopped and read).

    python tools/mutate.py                      # every mutant of every mapped file (hours)
    python tools/mutate.py --sample 40          # 40 random mutants per file (seeded: repeatable)
    python tools/mutate.py --file csrc/arm/psci.c --sample 100
    python tools/mutate.py --budget 300         # 300 s shared by file, at least one mutant each (CI)
    python tools/mutate.py --file csrc/core/run.c --tsan   # ThreadSanitizer: a lock deleted is a race
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import difflib
import hashlib
import importlib.metadata
import json
import math
import os
import queue
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "mutate")  # build/mutate-asan with --asan, build/mutate-tsan with --tsan (main)
MUTANTS = os.path.join(ROOT, "build", "mutate", "mutants")
SAN_EXIT = 86  # the sanitizers' exit status under --asan
# the sanitizer libvmm and each mutant are built with (set by main): "" none; "address" (--asan:
# -fsanitize=address,undefined, leaks checked) or "thread" (--tsan: ThreadSanitizer, data races and misused locks)
SANITIZER = ""
SANITIZER_NAMES = {"address": "ASan+UBSan", "thread": "ThreadSanitizer"}
sys.path.insert(0, os.path.join(ROOT, "vmmpy"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import _build_ffi  # noqa: E402
from mutate_cov import gcov_lines  # noqa: E402
from mutation_map import TARGETS  # noqa: E402

CC = os.environ.get("CC", "cc")
EQUIVALENT = os.path.join(ROOT, "tools", "mutation_equivalent.txt")
RULES = os.path.join(ROOT, "tools", "mutation.rules")


class MutateError(Exception):
    pass


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


# -- building ------------------------------------------------------------------------------------


def compile_flags() -> list[str]:
    """libvmm's flags without -g (objects compare byte for byte). -Werror stays: a mutant our build refuses
    (arguments swapped across types, a variable left unused) is stillborn, not a bug a test must catch."""
    flags = [f for f in _build_ffi.cflags(sanitize=SANITIZER) if f != "-g"]
    return flags + ["-fPIC"] + [f"-I{d}" for d in _build_ffi.include_dirs()]


def obj_name(src: str) -> str:
    rel = os.path.relpath(src, os.path.join(ROOT, "csrc"))
    return rel.replace(os.sep, "_")[:-2] + ".o"


def compile_c(src: str, out: str, quote_dir: str | None = None) -> subprocess.CompletedProcess:
    """Compile src from its own directory by its base name, so the object records the same file name
    whether it is the original or a mutant (trivial-equivalence check by bytes)."""
    extra = [f"-iquote{quote_dir}"] if quote_dir else []
    return subprocess.run(
        [CC, *compile_flags(), *extra, "-c", os.path.basename(src), "-o", out],
        cwd=os.path.dirname(src),
        capture_output=True,
        text=True,
    )


def build_base() -> None:
    """Objects of every source and of the cffi glue, and a package directory that imports them."""
    objdir = os.path.join(BUILD, "obj")
    os.makedirs(objdir, exist_ok=True)
    srcs = _build_ffi.sources()

    def one(src: str) -> None:
        out = os.path.join(objdir, obj_name(src))
        if os.path.exists(out) and os.path.getmtime(out) > max(
            [os.path.getmtime(src)] + [os.path.getmtime(h) for h in _build_ffi.headers()]
        ):
            return
        p = compile_c(src, out)
        if p.returncode:
            raise MutateError(f"{src} does not compile:\n{p.stderr}")

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        list(ex.map(one, srcs))
    glue = os.path.join(BUILD, "_vmm.c")
    _build_ffi.make_ffi(absolute=True).emit_c_code(glue)
    py_inc = sysconfig.get_paths()["include"]
    p = subprocess.run(
        [CC, *compile_flags(), "-Wno-error", f"-I{py_inc}", "-c", glue, "-o", os.path.join(BUILD, "_vmm.o")],
        capture_output=True,
        text=True,
    )
    if p.returncode:
        raise MutateError(f"the cffi glue does not compile:\n{p.stderr}")
    # the tests run from build/mutate/pkg, whose vmmpy/ (first on sys.path) has the mutant's extension
    make_pkg(os.path.join(BUILD, "pkg"))


def link(replace: dict[str, str] | None = None, pkg: str | None = None, extra: tuple = (), gcov=False) -> None:
    """Link the extension into a private package (pkg, default build/mutate/pkg), with some objects replaced
    (by a mutant's, or by instrumented ones plus `extra` objects and libgcov for the coverage run)."""
    objdir = os.path.join(BUILD, "obj")
    objs = [(replace or {}).get(obj_name(s), os.path.join(objdir, obj_name(s))) for s in _build_ffi.sources()]
    ud = _build_ffi.unicorn_dir()
    out = os.path.join(pkg or os.path.join(BUILD, "pkg"), "vmmpy", "_vmm.abi3.so")
    p = subprocess.run(
        [
            CC,
            "-shared",
            *_build_ffi.sanitizer_ldflags(SANITIZER),
            *(["--coverage"] if gcov else []),
            "-o",
            out + ".tmp",
            os.path.join(BUILD, "_vmm.o"),
            *objs,
            *extra,
            "-lfdt",
            "-lz",
            "-lpthread",
            *(f"-l{lib}" for lib in _build_ffi.slirp()[1]),  # user networking, when built with libslirp
            os.path.join(ud, "lib", _build_ffi.unicorn_lib_name()),
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    if p.returncode:
        raise MutateError(f"link failed:\n{p.stderr}")
    os.replace(out + ".tmp", out)


def make_pkg(pkg: str) -> None:
    """A package directory the tests run from: vmmpy/'s Python files (its extension is linked in by link())
    and a copy of tests/ beside it."""
    os.makedirs(os.path.join(pkg, "vmmpy"), exist_ok=True)
    for f in os.listdir(os.path.join(ROOT, "vmmpy")):
        if f.endswith((".py", ".typed")):
            shutil.copy(os.path.join(ROOT, "vmmpy", f), os.path.join(pkg, "vmmpy", f))
    tests = os.path.join(pkg, "tests")
    shutil.rmtree(tests, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "tests"), tests, ignore=shutil.ignore_patterns("__pycache__"))


# -- running tests -------------------------------------------------------------------------------


def sanitizer_env(env: dict, where: str, sanitizer: str = "") -> str:
    """The environment of tools/asan.sh (with leak checking on) or tools/tsan.sh, for SANITIZER (or
    `sanitizer`); returns the reports' path prefix (in where). The runtime is preloaded into sys.executable,
    the interpreter itself (never a wrapper script: pyenv's shim crashes under ThreadSanitizer's)."""
    sanitizer = sanitizer or SANITIZER
    logs = os.path.join(where, "sanitizer")
    gcc = lambda lib: subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    if sanitizer == "thread":
        env["LD_PRELOAD"] = gcc("libtsan.so")
        # the run ends at the first report, as under ASan (a deleted lock that leaves a thread spinning or
        # waiting would otherwise take the run to its time limit: 10 minutes for run.c's, against seconds), with
        # exit status 0 there and at exit: pytest's JUnit report (not written when halted) and the reports decide
        env["TSAN_OPTIONS"] = f"halt_on_error=1:exitcode=0:second_deadlock_stack=1:log_path={logs}"
    else:
        env["LD_PRELOAD"] = f"{gcc('libasan.so')} {gcc('libubsan.so')}"
        # no abort_on_error, and exit status 0 after a report: the interpreter's own leaks at exit would fail every
        # run, and every Python a test starts (a test that checks a child's exit status); the reports decide
        env["ASAN_OPTIONS"] = f"detect_leaks=1:exitcode=0:allocator_may_return_null=1:log_path={logs}"
        env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={logs}"
    # either runtime owns malloc and maps shadow memory: no address-space cap, no malloc statistics or shims
    env["VMMPY_EXPECT_SANITIZED"] = "1"
    for f in os.listdir(where):
        if f.startswith("sanitizer."):
            os.unlink(os.path.join(where, f))
    return logs


def sanitizer_found(logs: str) -> bool:
    """A memory error or undefined behaviour anywhere, or a leak of memory libvmm allocated (the Python
    interpreter's own unfreed memory at exit is not ours: a leak counts when a frame of its allocation
    stack is in the extension); or a ThreadSanitizer report (a data race, a mutex unlocked that was not
    locked, ...) with a frame in the extension (the interpreter and the programs a test starts run with the
    runtime preloaded too, uninstrumented: what their interceptors see of them is not ours)."""
    return bool(sanitizer_reports(logs))


def sanitizer_summaries(logs: str) -> list[str]:
    """The SUMMARY lines of the reports that count (sanitizer_found), one per report file: for the record."""
    out = []
    for f in sanitizer_reports(logs):
        found = re.findall(r"^SUMMARY: (.*)$", read_text(f), re.M)
        out.append(found[0] if found else os.path.basename(f))
    return out


def sanitizer_reports(logs: str) -> list[str]:
    """The report files (of the prefix `logs`) with a report that counts (sanitizer_found)."""
    d, prefix = os.path.split(logs)
    out = []
    for f in sorted(os.listdir(d)):
        if not f.startswith(prefix + "."):
            continue
        text = read_text(os.path.join(d, f))
        if re.search(r"ERROR: AddressSanitizer|runtime error", text):
            out.append(os.path.join(d, f))
            continue
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak|WARNING: ThreadSanitizer:)", text)[1:]:
            # a leak's allocation stack ends at a blank line; a ThreadSanitizer report (blank lines between its
            # stacks) at its closing row of `=`
            tsan = block.startswith("WARNING: ThreadSanitizer:")
            if "_vmm.abi3.so" in block.split("\n=====" if tsan else "\n\n")[0]:
                out.append(os.path.join(d, f))
                break
    return out


def kill_group(pgid: int) -> bool:
    """SIGKILL the process group the tests ran in (start_new_session made it): True if it still existed."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "vmmpy.pytest_plugin", "--rootdir=.", "-m", "not slow"]


def run_tests(args: list[str], timeout: float, pkg: str | None = None, env: dict | None = None) -> tuple[str, float]:
    """'pass', 'fail' or 'timeout', and the time taken: pytest on args, from the package directory pkg
    (default build/mutate/pkg) whose extension is the one under test; env adds to the environment."""
    pkg = pkg or os.path.join(BUILD, "pkg")
    # no plugin autoloading (pytest-benchmark's import alone is 0.5 s of each run here): ours only
    env = {**os.environ, "PYTHONPATH": pkg, "VMMPY_ROOT": ROOT, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})}  # fmt: skip
    logs = sanitizer_env(env, os.path.dirname(pkg)) if SANITIZER else ""
    junit = os.path.join(os.path.dirname(pkg), "junit.xml")
    if SANITIZER:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(junit)
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *([f"--junit-xml={junit}"] if SANITIZER else []), *args]
    t = time.monotonic()
    p = subprocess.Popen(
        cmd,
        cwd=pkg,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a process in its own session may hold the pipes
            p.communicate(timeout=10)
        return "timeout", time.monotonic() - t
    finally:
        kill_group(p.pid)  # what the tests started (a QEMU, a vmmrun, a hung mutant's helper) goes with them
    if not SANITIZER:
        return outcome(p.returncode), time.monotonic() - t
    # under ASan, the interpreter's own leaks at exit turn every exit status into SAN_EXIT, a failed test's
    # too: pytest's JUnit report says whether the tests passed, the sanitizers' reports whether ours erred
    # (ThreadSanitizer's exit status is the tests' own: the same reading does for it)
    if sanitizer_found(logs):
        return "fail", time.monotonic() - t
    d, prefix = os.path.split(logs)
    if not os.path.exists(junit) and any(f.startswith(prefix + ".") for f in os.listdir(d)):
        # ThreadSanitizer halts at its first report (halt_on_error): one that does not count (no frame of ours,
        # e.g. the interpreter's) ended the tests before they could pass or fail, which says nothing
        return "error", time.monotonic() - t
    ok = p.returncode in (0, SAN_EXIT) and junit_passed(junit)
    return ("pass" if ok else "fail"), time.monotonic() - t


def outcome(rc: int) -> str:
    """pytest's exit status as a verdict: 0 passed; 1 (tests failed), 2 (interrupted: a test's KeyboardInterrupt)
    or a signal (a crash, or SIGALRM at a test's own time limit: a hang) failed; anything else (3 internal error,
    4 usage error, 5 no tests collected, 99 pytest.main raised) says nothing about the mutant: `error`."""
    if rc == 0:
        return "pass"
    return "fail" if rc in (1, 2) or rc < 0 else "error"


def junit_passed(path: str) -> bool:
    """Whether pytest's JUnit XML report exists and counts no failure and no error."""
    import xml.etree.ElementTree as ET

    try:
        suites = list(ET.parse(path).getroot().iter("testsuite"))
    except (OSError, ET.ParseError):
        return False
    return bool(suites) and all(s.get("errors") == "0" and s.get("failures") == "0" for s in suites)


# -- mutants -------------------------------------------------------------------------------------


def version_of(src: str, rules: str) -> str:
    """A digest of the source and the rule set: mutants (and their results) of one version are reusable."""
    return digest_of(read_bytes(src), rules)


def digest_of(data: bytes, rules: str) -> str:
    """version_of for a source's bytes (an older version, from git: tools/mutate_migrate.py)."""
    h = hashlib.sha256(data)
    h.update(rules.encode() if rules == "universal" else read_bytes(rules))
    with contextlib.suppress(Exception):  # the generator numbers the mutants: its version is part of theirs
        h.update(importlib.metadata.version("universalmutator").encode())
    return h.hexdigest()[:16]


def generate(src: str, rules: str) -> list[str]:
    """universalmutator's mutants of src with the rule set (cached under build/mutate/mutants/<file>/):
    tools/mutation.rules (operators, constants, conditions, deleted statements) or "universal" (the
    tool's own C rules, universal.rules + c_like.rules)."""
    out = os.path.join(MUTANTS, obj_name(src)[:-2])
    stamp = os.path.join(out, ".version")
    digest = version_of(src, rules)
    if not (os.path.exists(stamp) and read_text(stamp) == digest):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        run_mutator(src, rules, out)
        with open(stamp, "w") as f:
            f.write(digest)
    return mutants_in(out)


def run_mutator(src: str, rules: str, out: str) -> None:
    """universalmutator on src (C, the rule set), its mutants written to the directory out."""
    tool = shutil.which("mutate")
    if not tool:
        raise MutateError("universalmutator's `mutate` is not installed: pip install universalmutator")
    ruleargs = [] if rules == "universal" else ["--only", rules]
    p = subprocess.run([tool, src, "c", *ruleargs, "--noCheck", "--mutantDir", out], capture_output=True, text=True)
    if p.returncode:
        raise MutateError(f"mutate {src} failed:\n{p.stderr[-2000:]}")


def mutants_in(out: str) -> list[str]:
    """The mutant files in out, in the generator's order."""
    names = [n for n in os.listdir(out) if ".mutant." in n]
    return sorted((os.path.join(out, n) for n in names), key=lambda p: int(p.rsplit(".", 2)[-2]))


def change_of(src_lines: list[str], mutant: str) -> tuple[int, str, str]:
    """(line number, original line, mutated line) of a one-line mutant."""
    mut = read_text(mutant).splitlines()
    for i, (a, b) in enumerate(zip(src_lines, mut)):
        if a != b:
            return i + 1, a.strip(), b.strip()
    diff = list(difflib.unified_diff(src_lines, mut, lineterm="", n=0))
    return 0, "", " / ".join(diff[2:4])


def load_equivalent() -> set[tuple[str, int, str, str]]:
    """tools/mutation_equivalent.txt: `file | original line | mutated line | why` per reviewed mutant, or
    `file:N | ...` for the mutant of line N only (when the same text occurs on lines where the change is
    not equivalent). A ` | ` inside a line of code is written ` \\| ` (a C bitwise or, as in
    `a << 8 \\| b`), and one that ends the line (a continued expression) ` \\|`. Line 0 in the set stands
    for "any line"."""

    def unescape(field: str) -> str:
        field = field.strip().replace(" \\| ", " | ")
        return field[:-3] + " |" if field.endswith(" \\|") else field

    out = set()
    if os.path.exists(EQUIVALENT):
        for line in read_text(EQUIVALENT).splitlines():
            if line.strip() and not line.startswith("#"):
                parts = [unescape(p) for p in line.split(" | ")]
                if len(parts) >= 3:
                    name, _, num = parts[0].partition(":")
                    out.add((name, int(num) if num else 0, parts[1], parts[2]))
    return out


def stale_equivalents(equivalent: set[tuple[str, int, str, str]]) -> list[str]:
    """Entries of tools/mutation_equivalent.txt that match no mutant any more: the file no longer has the
    original line (it was rewritten), or a `file:N` entry's line N holds something else (the file moved)."""
    out, lines = [], {}
    for rel, num, before, _ in sorted(equivalent):
        if rel not in lines:
            path = os.path.join(ROOT, rel)
            lines[rel] = [ln.strip() for ln in read_text(path).splitlines()] if os.path.exists(path) else []
        src = lines[rel]
        if before not in src:
            out.append(f"{rel}: no line `{before}`")
        elif num and (num > len(src) or src[num - 1] != before):
            found = ", ".join(str(i + 1) for i, ln in enumerate(src) if ln == before)
            out.append(f"{rel}:{num} does not hold `{before}` (it is on line {found})")
    return out


_BASELINES: dict[tuple[str, ...], float] = {}


def baseline(tests: list[str]) -> float:
    """The selection's time on the unmutated build (once per selection: the GIC files share one); it must
    pass, or every mutant would look killed."""
    key = tuple(tests)
    if key not in _BASELINES:
        link()
        status, t = run_tests(tests, timeout=600)
        if status != "pass":  # once more: a loaded host can fail a real-time test once (then say so)
            print(f"mutate: the selection failed once without a mutant ({status}{unmutated_failures()}), trying "
                  f"again: {' '.join(tests)}{unmutated_reports()}", flush=True)  # fmt: skip
            status, t = run_tests(tests, timeout=600)
        if status != "pass":
            raise MutateError(
                f"these tests fail without a mutant ({status}{unmutated_failures()}): {' '.join(tests)}"
                f"{unmutated_reports()}"
            )
        _BASELINES[key] = t
    return _BASELINES[key]


def unmutated_failures() -> str:
    """Under a sanitizer, the tests that failed in the unmutated build's run (its JUnit report), for the message."""
    import xml.etree.ElementTree as ET

    if not SANITIZER:
        return ""
    try:
        cases = list(ET.parse(os.path.join(BUILD, "junit.xml")).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return ": no JUnit report (the run was ended, or crashed)"
    failed = [f"{c.get('classname')}.{c.get('name')}" for c in cases if c.find("failure") is not None
              or c.find("error") is not None]  # fmt: skip
    return f": {', '.join(failed)}" if failed else ""


def unmutated_reports() -> str:
    """What the sanitizer reported of the unmutated build's run (its reports are in BUILD until the next run), for
    the error that stops a --asan or --tsan run: a report there would kill every mutant."""
    found = sanitizer_reports(os.path.join(BUILD, "sanitizer")) if SANITIZER else []
    if not found:
        return ""
    summaries = sorted(set(sanitizer_summaries(os.path.join(BUILD, "sanitizer"))))
    return (f"\n{SANITIZER_NAMES[SANITIZER]} reports on the unmutated build (every mutant would look killed): "
            f"{len(found)} file(s) such as {found[0]}\n  " + "\n  ".join(summaries))  # fmt: skip


# -- coverage: which tests reach which line ------------------------------------------------------------

GCOV_FLUSH = """/* tools/mutate.py's coverage run: write the gcov counters gathered so far and clear them */
extern void __gcov_dump(void);
extern void __gcov_reset(void);
__attribute__((visibility("default"))) void vmm_mutate_gcov_flush(void) { __gcov_dump(); __gcov_reset(); }
"""


def tests_digest() -> str:
    """A digest of tests/ (a changed test can reach other lines)."""
    h = hashlib.sha256()
    for d, _, names in sorted(os.walk(os.path.join(ROOT, "tests"))):
        for n in sorted(names):
            if n.endswith(".py"):
                h.update(n.encode() + read_bytes(os.path.join(d, n)))
    return h.hexdigest()[:16]


_COVERAGE: dict[tuple[str, ...], dict] = {}


def coverage(files: list[str], tests: list[str]) -> dict[str, dict]:
    """Run the selection once on an extension whose `files` are built with gcov (-O0: a line's code stays
    its own), a test at a time (tools/mutate_cov.py). Per file: `exec`, the lines that have code (and are
    run by some test or by none); `tests`, line -> the node ids of the tests that run it; `time`, node id ->
    seconds; `full`, lines run while the tests were collected (every test reaches them). Cached in
    build/mutate/coverage/ by the files' versions, the selection and tests/."""
    key = tuple(tests)
    if key in _COVERAGE:
        return _COVERAGE[key]
    h = hashlib.sha256(json.dumps([tests, tests_digest(), compile_flags()]).encode())
    h.update(read_bytes(os.path.join(ROOT, "tools", "mutate_cov.py")))
    for rel in files:
        h.update(rel.encode() + read_bytes(os.path.join(ROOT, rel)))
    cache = os.path.join(BUILD, "coverage", h.hexdigest()[:16] + ".json")
    if os.path.exists(cache):
        _COVERAGE[key] = json.loads(read_text(cache))
        return _COVERAGE[key]
    covdir = os.path.join(BUILD, "cov")
    shutil.rmtree(covdir, ignore_errors=True)
    os.makedirs(os.path.join(covdir, "obj"))
    flags = [f for f in compile_flags() if f != "-O2"] + ["-O0", "--coverage", "-fprofile-update=atomic"]
    replace, gcda = {}, []
    for rel in files:
        src = os.path.join(ROOT, rel)
        out = os.path.join(covdir, "obj", obj_name(src))
        p = subprocess.run([CC, *flags, "-c", os.path.basename(src), "-o", out], cwd=os.path.dirname(src),
                           capture_output=True, text=True)  # fmt: skip
        if p.returncode:
            raise MutateError(f"{rel} does not compile with --coverage:\n{p.stderr}")
        replace[obj_name(src)] = out
        gcda.append(f"{out[:-2]}.gcda={rel}")
    flush_c = os.path.join(covdir, "gcov_flush.c")
    with open(flush_c, "w") as f:
        f.write(GCOV_FLUSH)
    p = subprocess.run([CC, "-fPIC", "-c", flush_c, "-o", flush_c[:-2] + ".o"], capture_output=True, text=True)
    if p.returncode:
        raise MutateError(f"gcov_flush.c:\n{p.stderr}")
    pkg = os.path.join(covdir, "pkg")
    make_pkg(pkg)
    link(replace, pkg=pkg, extra=(flush_c[:-2] + ".o",), gcov=True)
    out = os.path.join(covdir, "tests.jsonl")
    env = {"VMMPY_MUTATE_COV": out, "VMMPY_MUTATE_GCDA": os.pathsep.join(gcda),
           "PYTHONPATH": pkg + os.pathsep + os.path.join(ROOT, "tools")}  # fmt: skip
    status, _ = run_tests(["-p", "mutate_cov", *tests], timeout=1800, pkg=pkg, env=env)
    if status != "pass":  # once, as baseline(): a CI run's virtio.c selection failed once and passed on every rerun
        print(f"mutate: the selection failed once on the coverage build, trying again: {' '.join(tests)}", flush=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        status, _ = run_tests(["-p", "mutate_cov", *tests], timeout=1800, pkg=pkg, env=env)
    if status != "pass":
        raise MutateError(f"these tests fail on the coverage build: {' '.join(tests)}")
    res = {rel: dict(exec=set(), tests={}, time={}, full=set()) for rel in files}
    for line in read_text(out).splitlines():
        rec = json.loads(line)
        for rel, lines in rec["lines"].items():
            r = res[rel]
            if not rec["test"]:
                r["full"].update(lines)
                continue
            r["time"][rec["test"]] = rec["time"]
            for n in lines:
                r["tests"].setdefault(n, []).append(rec["test"])
    for rel in files:  # the lines with code: what gcov lists for the object, run or not
        src = os.path.join(ROOT, rel)
        gcno = os.path.join(covdir, "obj", obj_name(src)[:-2] + ".gcno")
        res[rel]["exec"].update(gcov_lines(gcno, os.path.basename(rel), run_only=False))
    for r in res.values():
        r["exec"], r["full"] = sorted(r["exec"]), sorted(r["full"])
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(cache + ".tmp", cache)  # whole or absent: a run stopped here leaves no half file
    _COVERAGE[key] = json.loads(json.dumps(res))  # as read back from the cache (string keys)
    return _COVERAGE[key]


class Slot:
    """A worker's own package directory, mutant object and source copy: mutants run side by side."""

    def __init__(self, n: int):
        self.dir = os.path.join(BUILD, f"slot{n}")
        self.pkg = os.path.join(self.dir, "pkg")
        self.obj = os.path.join(self.dir, "mutant.o")
        make_pkg(self.pkg)

    server: subprocess.Popen | None = None
    reports: list[str] = []  # under a sanitizer: the last run's reports (their SUMMARY lines)
    buf = b""
    child = 0  # the test run under way (its own session), for close() to end

    def _line(self, timeout: float | None) -> dict | None:
        """The server's next JSON line, or None when `timeout` seconds pass first."""
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.server.stdout], [], [], left)[0]:
                return None
            data = os.read(self.server.stdout.fileno(), 65536)
            if not data:
                raise MutateError(f"the test runner of {self.dir} ended (exit status {self.server.wait()})")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def run_tests(self, args: list[str], timeout: float, limits: dict[str, float] | None = None) -> str:
        """As run_tests(), in a child forked from this slot's runner (tools/mutate_server.py): ~0.4 s less
        a run. Under --asan or --tsan a fresh process each time (the sanitizer's runtime is preloaded at exec).
        limits: node id -> seconds for a test of its own (the runner ends a child stuck in one)."""
        if SANITIZER:
            result = run_tests(args, timeout, pkg=self.pkg)[0]
            self.reports = sanitizer_summaries(os.path.join(self.dir, "sanitizer"))
            return result
        if self.server is None or self.server.poll() is not None:
            env = {**os.environ, "PYTHONPATH": self.pkg, "VMMPY_ROOT": ROOT, "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # fmt: skip
            server = os.path.join(ROOT, "tools", "mutate_server.py")
            self.server = subprocess.Popen([sys.executable, server], cwd=self.pkg, env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE)  # fmt: skip
            self.buf = b""
        # its own --basetemp, wiped by pytest at each start: a child ends by os._exit, so pytest's own clean-up
        # of /tmp/pytest-of-<user> never runs (thousands of directories over a long run)
        basetemp = f"--basetemp={os.path.join(self.dir, 'tmp')}"
        req = {"args": [*PYTEST_ARGS, basetemp, *args], "limits": limits or {}}
        self.server.stdin.write(json.dumps(req).encode() + b"\n")
        self.server.stdin.flush()
        pid = self.child = self._line(60)["pid"]
        done = self._line(timeout)
        kill_group(pid)  # the run's leftovers (a QEMU, a helper), or the run itself at its time limit
        self.child = 0
        if done is None:
            self._line(60)  # the server reaps the killed child
            return "timeout"
        return outcome(done["rc"])

    def close(self) -> None:
        """End the runner, and a test run still under way (a stopped mutate.py left one spinning for hours)."""
        if self.child:
            kill_group(self.child)
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait()

    def copy_of(self, rel: str) -> str:
        d = os.path.join(self.dir, "src", os.path.dirname(rel))
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, os.path.basename(rel))


def statement_start(src: list[str], line: int) -> int:
    """The first line of the expression that `line` (1-based) is part of: while the line before ends with an
    operator, a comma or an open parenthesis (a condition continued after `&&`, an argument list), that line
    (clang-format breaks after binary operators, so a line that ends with `)` ends its condition)."""
    while line > 1:
        prev = re.sub(r"/\*.*?\*/|//.*$", "", src[line - 2]).strip()
        here = src[line - 1].strip()
        # clang-format breaks after binary operators but before a ternary's `?` and `:`
        if not prev.endswith(("&", "|", ",", "(", "+", "-", "*", "/", "%", "^", "?", "=", "<", ">", "!", "~")) and (
            not here.startswith(("?", ":", "&&", "||", "|")) or prev.endswith((";", "{", "}"))
        ):
            break
        line -= 1
    return line


def selection_for(
    cov: dict | None, line: int, tests: list[str], text: str = "", src: list[str] | None = None
) -> tuple[list[str] | None, float]:
    """The tests a mutant of `line` runs, and their time on the unmutated build (0: unknown): with a coverage
    map, the tests that reach the line, fastest first (None: no test reaches it); without one, or for a line
    with no code of its own (a declaration, a table, a statement's continuation) or run at import, all. A line
    that continues a statement runs the tests of every line of it from its first: gcov gives a condition's
    terms to the lines it likes (run_wait.c's `!(vcpu && ...)` on a second line counted only the tests where
    vcpu was not NULL, so a mutant that dereferenced NULL there never met the test that passes NULL). A branch
    of an if-else chain runs the tests of the whole chain from its `if`: a mutant that makes `} else if` an `if`
    is reached by the inputs of the branches before it too."""
    # a case label's value decides which inputs reach the lines after it: the tests that reach the label are
    # not all the tests the changed value affects (gcov gives an untaken `case 3:` a count of its own)
    if cov is None or line not in cov["exec"] or line in cov["full"] or re.match(r"(case\b|default\s*:)", text):
        return tests, 0.0
    first = statement_start(src, line) if src else line
    if src and re.match(r"(\}\s*)?else\b", text):  # `else if` made `if`: every earlier branch's inputs reach it
        indent = len(src[line - 1]) - len(src[line - 1].lstrip())
        while first > 1 and not (
            src[first - 1].lstrip().startswith("if ") and len(src[first - 1]) - len(src[first - 1].lstrip()) == indent
        ):
            first -= 1
    reach = [t for n in range(first, line + 1) for t in cov["tests"].get(str(n), [])]
    reach = list(dict.fromkeys(reach))
    if not reach:
        return None, 0.0
    reach = sorted(reach, key=lambda t: cov["time"][t])
    return list(dict.fromkeys(map(runnable_id, reach))), sum(cov["time"][t] for t in reach)


def runnable_id(nodeid: str) -> str:
    """A node id pytest finds again when given it: a parametrized id that holds a backslash (pytest escapes
    one in a parameter, as in a regex `\\(`) is not found from the command line (exit status 4), so its test
    function runs whole instead, every parameter (more tests: never fewer)."""
    return nodeid.split("[", 1)[0] if "\\" in nodeid else nodeid


def is_reviewed(eq, rel: str, line: int, before: str, after: str) -> bool:
    """Whether tools/mutation_equivalent.txt records this change, for any line of the file or for this one."""
    return (rel, 0, before, after) in eq or (rel, line, before, after) in eq


def try_mutant(rel: str, m: str, slot: Slot, ctx: dict) -> dict:
    """One mutant: compile (stillborn, or equivalent by its object code or by review), then the tests."""
    line, before, after = change_of(ctx["src_lines"], m)
    rec = dict(file=rel, version=ctx["version"], mutant=os.path.basename(m), line=line, before=before, after=after)
    prev = ctx["earlier"].get((rel, ctx["version"], os.path.basename(m)))
    if prev in ("killed", "stillborn"):  # --resume: tests are only added, so a kill stays a kill
        return dict(rec, status=prev, reused=True, was=prev)
    reviewed = is_reviewed(ctx["equivalent"], rel, line, before, after)
    if prev in ("ledger-survived", "ledger-uncovered") and not reviewed:  # --unrun
        return dict(rec, status="survived", uncovered=prev == "ledger-uncovered", reused=True, was="survived")
    copy = slot.copy_of(rel)
    shutil.copy(m, copy)
    p = compile_c(copy, slot.obj, quote_dir=os.path.dirname(os.path.join(ROOT, rel)))
    if p.returncode:
        return dict(rec, status="stillborn")
    if read_bytes(slot.obj) == ctx["base_bytes"]:
        return dict(rec, status="equivalent")  # the compiler produced the original's code
    if reviewed:
        return dict(rec, status="equivalent", reviewed=True)
    run, known = selection_for(ctx["cov"], line, ctx["tests"], before, ctx["src_lines"])
    if run is None:
        return dict(rec, status="survived", uncovered=True, tests=0)
    limit = max(30.0, 5 * known + 10) if known else ctx["limit"]
    # each test's own limit: a hang in the first of many tests costs its limit, not the whole run's
    per_test = {t: 10 + 10 * ctx["cov"]["time"][t] for t in run if t in ctx["cov"]["time"]} if known else {}
    link({obj_name(rel): slot.obj}, pkg=slot.pkg)
    result = slot.run_tests(run, timeout=limit, limits=per_test)
    reports = slot.reports
    ntests = len(run) if known else -1
    if result == "pass":
        return dict(rec, status="survived", tests=ntests)
    if result == "error":
        return dict(rec, status="error", tests=ntests, why="pytest could not run the tests")
    # a kill counts only if the same tests, in the same order, pass without the mutant (once per distinct run)
    if not unmutated_passes(rel, run, slot, limit, per_test, ctx):
        return dict(rec, status="error", tests=ntests, why="these tests fail without the mutant too")
    if reports:  # what the sanitizer saw (a kill by its report alone has passing tests)
        return dict(rec, status="killed", tests=ntests, how=result, report=reports[0])
    return dict(rec, status="killed", tests=ntests, how=result)


_CONFIRMED: dict[tuple, bool] = {}
_CONFIRM_LOCK = threading.Lock()


def unmutated_passes(rel: str, run: list[str], slot: Slot, limit: float, per_test: dict, ctx: dict) -> bool:
    """Whether `run` passes on the unmutated library in this slot (cached per run: a line's mutants share one)."""
    key = (rel, tuple(run))
    with _CONFIRM_LOCK:
        if key in _CONFIRMED:
            return _CONFIRMED[key]
    link(pkg=slot.pkg)
    ok = slot.run_tests(run, timeout=limit, limits=per_test) == "pass"
    with _CONFIRM_LOCK:
        _CONFIRMED[key] = ok
    return ok


def mutate_file(rel: str, tests: list[str], a, equivalent, share: float, log, earlier: dict, slots: list[Slot],
                cov: dict | None) -> dict:  # fmt: skip
    src = os.path.join(ROOT, rel)
    mutants = generate(src, a.rules)
    population = len(mutants)
    if a.sample and a.sample < len(mutants):
        mutants = random.Random(f"{a.seed}:{rel}").sample(mutants, a.sample)
    src_lines = read_text(src).splitlines()
    if a.line:
        mutants = [m for m in mutants if change_of(src_lines, m)[0] in a.line]
    ctx = dict(
        src_lines=src_lines, version=version_of(src, a.rules), earlier=earlier, tests=tests,
        base_bytes=read_bytes(os.path.join(BUILD, "obj", obj_name(src))), equivalent=equivalent, cov=cov,
        limit=max(30.0, 5 * baseline(tests)) if cov is None else 0.0,
    )  # fmt: skip
    # this file's part of the budget, its baseline's time included; the first mutant that needs its tests
    # runs even past it, so that a budgeted run (make mutate-ci) samples every file however loaded the host
    deadline = time.monotonic() + share
    counts = dict(killed=0, survived=0, equivalent=0, stillborn=0, skipped=0, reused=0, uncovered=0, error=0)
    survivors = []
    marks: dict[int, str] = {}
    free = queue.Queue()
    for s in slots:
        free.put(s)
    lock = threading.Lock()
    tested = threading.Event()

    def one(m: str) -> None:
        if tested.is_set() and time.monotonic() > deadline:
            with lock:
                counts["skipped"] += 1
            return
        slot = free.get()
        try:
            line, before, _ = change_of(ctx["src_lines"], m)
            run, known = selection_for(cov, line, tests, before, ctx["src_lines"])
            if run is not None and not known and not ctx["limit"]:
                with lock:  # a line the coverage map cannot place runs the whole selection: time it once
                    ctx["limit"] = ctx["limit"] or max(30.0, 5 * baseline(tests))
            t = time.monotonic()
            rec = try_mutant(rel, m, slot, ctx)
            rec["secs"] = round(time.monotonic() - t, 2)
        finally:
            free.put(slot)
        with lock:
            if rec.get("tests"):
                tested.set()
            counts[rec["status"]] += 1
            counts["reused"] += bool(rec.pop("reused", False))
            counts["uncovered"] += bool(rec.get("uncovered"))
            rec.update(sanitizer=SANITIZER, population=population)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if rec["status"] == "survived":
                survivors.append(rec)
            if rec["status"] != "error" and not rec.get("was"):  # a reused outcome keeps its ledger mark
                marks[index_of(m)] = mark_of(rec)
            if a.verbose:
                how = " (no test reaches the line)" if rec.get("uncovered") else ""
                how += f" ({rec['report']})" if rec.get("report") else ""
                print(f"  {rec['status']:10} {rel}:{rec['line']}: {rec['after']}{how}", flush=True)

    with concurrent.futures.ThreadPoolExecutor(len(slots)) as ex:
        try:
            for f in [ex.submit(one, m) for m in mutants]:
                f.result()
        except KeyboardInterrupt:  # the mutants under way end, the queued ones do not start
            ex.shutdown(cancel_futures=True)
            raise
    survivors.sort(key=lambda r: (r["line"], r["mutant"]))
    return dict(file=rel, total=len(mutants), population=population, survivors=survivors, marks=marks,
                version=ctx["version"], **counts)  # fmt: skip


# -- the ledger: a full run, kept across runs ---------------------------------------------------------

LEDGER = os.path.join(ROOT, "tools", "mutation_ledger.txt")
LEDGER_MARK = dict(
    killed="k", survived="s", uncovered="u", equivalent="e", reviewed="q", stillborn="b", skipped=".", error="."
)
LEDGER_STATUS = dict(k="killed", a="killed", s="survived", u="survived", e="equivalent", q="equivalent", b="stillborn")


def index_of(mutant: str) -> int:
    return int(os.path.basename(mutant).rsplit(".", 2)[-2])


def load_ledger() -> dict[str, tuple[str, str]]:
    """tools/mutation_ledger.txt: per file, `file version marks`, a mark per mutant in universalmutator's
    order (k killed, s survived, u survived on a line no test runs, e equivalent by object code, q
    equivalent by review, b stillborn, . not run)."""
    out = {}
    if os.path.exists(LEDGER):
        for line in read_text(LEDGER).splitlines():
            if line.strip() and not line.startswith("#"):
                rel, version, marks = line.split()
                out[rel] = (version, marks)
    return out


def mark_of(rec: dict) -> str:
    return LEDGER_MARK["uncovered" if rec.get("uncovered") else "reviewed" if rec.get("reviewed") else rec["status"]]


def ledger_add(paths: list[str]) -> None:
    """Record the outcomes in results.jsonl files (a run stopped half-way, or run in another --workdir)
    for the files whose version they are of."""
    by_file: dict[tuple[str, str], dict] = {}
    for path in paths:
        for line in read_text(path).splitlines():
            with contextlib.suppress(ValueError, KeyError):
                rec = json.loads(line)
                src = os.path.join(ROOT, rec["file"])
                if not os.path.exists(src) or rec["version"] != version_of(src, RULES):
                    continue
                new = dict(file=rec["file"], version=rec["version"], marks={}, population=rec["population"])
                r = by_file.setdefault((rec["file"], sanitizer_of(rec)), new)
                r["marks"][index_of(rec["mutant"])] = mark_of(rec)
    for san in ("", *SANITIZER_NAMES):  # the plain run's first: a sanitizer's kills only add to its marks
        update_ledger([r for (_, s), r in by_file.items() if s == san], sanitizer=san)


def sanitizer_of(rec: dict) -> str:
    """The sanitizer a results.jsonl record's run was built with: its `sanitizer` ("", "address" or "thread"),
    or, in a record written before --tsan, its `asan` flag."""
    return rec["sanitizer"] if "sanitizer" in rec else "address" if rec.get("asan") else ""


@contextlib.contextmanager
def ledger_locked():
    """The ledger is read, changed and written under an exclusive lock (runs side by side in --workdirs)."""
    import fcntl

    with open(LEDGER + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def update_ledger(results: list[dict], sanitizer: str = "") -> None:
    with ledger_locked():
        _update_ledger(results, sanitizer)


def _update_ledger(results: list[dict], sanitizer: str = "") -> None:
    """Record this run's outcomes for the files' current versions (an older version's marks go). A run under a
    sanitizer (--asan or --tsan: `sanitizer` "address" or "thread") only adds its kills (`a`) to mutants not yet
    killed: the suite also runs under the sanitizers (make test-asan, make test-tsan), so what they catch is
    caught, and what they do not is decided by the plain run. A survival
    does not undo a kill of the same version either: tests are only added, so a survival comes from an older
    set of them (a run in another --workdir or worktree that started before the test that kills it). Nor does it
    undo a reviewed equivalent (q): a survival recorded before the review. A review withdrawn since counts as a
    survivor all the same: ledger_results checks every q against tools/mutation_equivalent.txt. (An e can go:
    a changed header can make the object code differ.)"""
    ledger = load_ledger()
    for r in results:
        version, marks = ledger.get(r["file"], ("", ""))
        old = list(marks) if version == r["version"] and len(marks) == r["population"] else ["."] * r["population"]
        for i, mark in r["marks"].items():
            if sanitizer:
                if mark == "k" and old[i] in "su.":
                    old[i] = "a"
            elif mark != "." and not (old[i] in "kaq" and mark in "su"):  # what was caught, is still caught
                old[i] = mark
        ledger[r["file"]] = (r["version"], "".join(old))
    write_ledger(ledger)


def write_ledger(ledger: dict[str, tuple[str, str]]) -> None:
    """Replace tools/mutation_ledger.txt with these marks (under ledger_locked)."""
    head = (
        "# tools/mutate.py --ledger: the outcome of every mutant of each mapped file's current version, in\n"
        "# universalmutator's order: k killed, a killed under a sanitizer only (--asan or --tsan), s survived, u\n"
        "# survived on a line no test runs, e equivalent (same object code), q equivalent\n"
        "# (tools/mutation_equivalent.txt), b stillborn, . not run yet. A run with --ledger reuses k and a (tests\n"
        "# are only added) and writes back here.\n"
    )
    tmp = f"{LEDGER}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(head + "".join(f"{k} {v} {m}\n" for k, (v, m) in sorted(ledger.items())))
    os.replace(tmp, LEDGER)


def ledger_earlier(rules: str, survivors: bool = False) -> dict:
    """The ledger's reusable outcomes (kills; with `survivors`, --unrun, survivals too) of the files' current
    versions, in load_earlier's form."""
    out = {}
    keep = "kasu" if survivors else "ka"
    for rel, (version, marks) in load_ledger().items():
        src = os.path.join(ROOT, rel)
        if rel not in TARGETS or not os.path.exists(src) or version_of(src, rules) != version:
            continue
        base = os.path.basename(rel)[:-2]
        for i, mark in enumerate(marks):
            if mark in keep:  # stillborn and equivalent mutants are compiled again (cheap: a header may change)
                status = (
                    LEDGER_STATUS[mark] if mark in "ka" else "ledger-" + ("uncovered" if mark == "u" else "survived")
                )
                out[(rel, version, f"{base}.mutant.{i}.c")] = status
    return out


def ledger_results(rules: str) -> list[dict]:
    """Per-file results (for report()) from the ledger's marks of the files' current versions."""
    out = []
    eq = load_equivalent()
    for rel, (version, marks) in sorted(load_ledger().items()):
        src = os.path.join(ROOT, rel)
        if rel not in TARGETS or not os.path.exists(src) or version_of(src, rules) != version:
            print(f"mutate: the ledger's {rel} is of another version of it (not counted)", file=sys.stderr)
            continue
        mutants = {index_of(m): m for m in generate(src, rules)}
        lines = read_text(src).splitlines()
        survivors = []
        marks = list(marks)
        for i, mark in enumerate(marks):
            # tools/mutation_equivalent.txt decides, both ways: a review withdrawn since the mark was written is a
            # survivor again, and a survivor reviewed since is an equivalent, without running the file again
            if mark in "qsu":
                line, before, after = change_of(lines, mutants[i])
                if mark == "q" and not is_reviewed(eq, rel, line, before, after):
                    marks[i] = "s"
                elif mark in "su" and is_reviewed(eq, rel, line, before, after):
                    marks[i] = "q"
        marks = "".join(marks)
        for i, mark in enumerate(marks):
            if mark in "su":
                line, before, after = change_of(lines, mutants[i])
                survivors.append(dict(file=rel, line=line, before=before, after=after, uncovered=mark == "u"))
        n = marks.count
        r = dict(file=rel, total=len(marks), population=len(marks), survivors=survivors, reused=0, ledger=True,
                 uncovered=n("u"), killed=n("k") + n("a"), survived=n("s") + n("u"), equivalent=n("e") + n("q"),
                 stillborn=n("b"), skipped=n("."))  # fmt: skip
        out.append(r)
    return out


def interval(r: dict) -> tuple[float, float]:
    """95 % interval for the file's kill rate over all its mutants, from a sample: Wilson's score interval
    for killed of killed + survived, with the finite-population correction (the sample is drawn without
    replacement from the file's mutants: its variance shrinks by (N - n) / (N - 1), i.e. Wilson's formula with
    n / fpc^2 as the sample size; a full run has no sampling error). Percent."""
    k, n = r["killed"], r["killed"] + r["survived"]
    if not n:
        return 0.0, 100.0
    z = 1.96
    p = k / n
    run = r["total"] - r["skipped"]
    # the file's countable mutants (neither stillborn nor equivalent), estimated from the sample's share
    big_n = max(n, round(r["population"] * n / run)) if run else n
    fpc2 = (big_n - n) / (big_n - 1) if big_n > 1 else 0.0
    if fpc2 <= 0:
        return 100 * p, 100 * p
    m = n / fpc2
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def report(results: list[dict]) -> float:
    print(
        f"\n{'file':28} {'mutants':>11} {'killed':>6} {'survived':>8} {'equiv':>5} {'stillborn':>9} "
        f"{'kill rate':>9} {'95 % CI':>11}"
    )
    k = s = 0
    for r in results:
        n = r["killed"] + r["survived"]
        rate = f"{100 * r['killed'] / n:.0f} %" if n else "-"
        lo, hi = interval(r)
        ci = f"{lo:.0f}-{hi:.0f} %" if n else "-"
        why = "yet" if r.get("ledger") else "(budget)"
        note = f"  ({r['skipped']} not run {why})" if r["skipped"] else ""
        note += f"  ({r['reused']} from the last run)" if r["reused"] else ""
        note += f"  ({r['uncovered']} survivors on lines no test runs)" if r.get("uncovered") else ""
        note += (
            f"  ({r['error']} undecided: the tests could not run, or failed without the mutant)"
            if r.get("error")
            else ""
        )
        size = f"{r['total']}/{r['population']}"
        print(
            f"{r['file']:28} {size:>11} {r['killed']:6} {r['survived']:8} {r['equivalent']:5} "
            f"{r['stillborn']:9} {rate:>9} {ci:>11}{note}"
        )
        k, s = k + r["killed"], s + r["survived"]
    total = 100 * k / (k + s) if k + s else 100.0
    print(f"{'all':28} {'':11} {k:6} {s:8} {'':5} {'':9} {total:7.0f} %")
    surv = [x for r in results for x in r["survivors"]]
    if surv:
        print("\nsurvivors (a test that notices the change kills each; an equivalent one goes into "
              "tools/mutation_equivalent.txt with why):")  # fmt: skip
        for x in surv:
            how = "  (no test of the selection runs this line)" if x.get("uncovered") else ""
            print(f"  {x['file']}:{x['line']}: {x['before']}  ->  {x['after']}{how}")
    return total


def results_of(paths: list[str]) -> list[dict]:
    """Per-file results (as mutate_file returns them) from results.jsonl files: for `--report`."""
    recs: dict[tuple[str, str], dict] = {}
    for path in paths:
        for line in read_text(path).splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            recs[(r["file"], r["mutant"])] = r
    out: dict[str, dict] = {}
    for r in recs.values():
        f = out.setdefault(
            r["file"],
            dict(file=r["file"], total=0, population=r.get("population", 0), survivors=[], skipped=0, reused=0,
                 killed=0, survived=0, equivalent=0, stillborn=0, error=0),
        )  # fmt: skip
        f["total"] += 1
        f[r["status"]] += 1
        if r["status"] == "survived":
            f["survivors"].append(r)
    for f in out.values():
        if not f["population"]:  # results written before records carried it: the cached mutants' count
            d = os.path.join(MUTANTS, obj_name(os.path.join(ROOT, f["file"]))[:-2])
            if os.path.isdir(d):
                f["population"] = sum(".mutant." in n for n in os.listdir(d))
        f["population"] = max(f["population"], f["total"])
    return [out[k] for k in sorted(out)]


def load_earlier(path: str) -> dict:
    out = {}
    if os.path.exists(path):
        for line in read_text(path).splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "version" in r and sanitizer_of(r) == SANITIZER:
                out[(r["file"], r["version"], r["mutant"])] = r["status"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", action="append", help="only this mapped file (repeatable)")
    ap.add_argument("--sample", type=int, default=0, help="random mutants per file (0: all)")
    ap.add_argument(
        "--line", type=int, action="append", help="only the mutants of this line (repeatable; with one --file)"
    )
    ap.add_argument("--seed", default="vmmpy", help="sampling seed (the same seed picks the same mutants)")
    ap.add_argument(
        "--budget",
        type=float,
        default=0,
        help="seconds for the run: each file gets an equal part of what is left when it starts (its baseline "
        "included), and at least one mutant that runs its tests",
    )
    ap.add_argument("--min-rate", type=float, default=0, help="exit 1 if the kill rate is below this percent")
    ap.add_argument(
        "--rules",
        default=RULES,
        help="universalmutator rule file (default tools/mutation.rules: operators, constants, conditions, "
        "deleted statements), or `universal` for the tool's own C rules (~3x the mutants, most stillborn)",
    )
    san = ap.add_mutually_exclusive_group()
    san.add_argument(
        "--asan",
        action="store_true",
        help="build libvmm and each mutant with -fsanitize=address,undefined (build/mutate-asan/): a memory "
        "error, undefined behaviour or a leak of libvmm's memory kills the mutant (slower: ~3x)",
    )
    san.add_argument(
        "--tsan",
        action="store_true",
        help="build libvmm and each mutant with -fsanitize=thread (build/mutate-tsan/): a ThreadSanitizer report "
        "(a data race, a mutex unlocked that was not locked) in libvmm kills the mutant (slower: ~5-10x)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the last run's killed and stillborn mutants of the same file version (survivors run again); "
        "the results of files not in this run are kept",
    )
    ap.add_argument(
        "--workdir",
        help="build and results directory (default build/mutate; build/mutate-asan with --asan, build/mutate-tsan "
        "with --tsan): runs on different files in different directories go on side by side (the mutants are shared)",
    )
    ap.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS",
        help="print the table of these results.jsonl files (the last line per mutant wins) and run nothing",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="mutants tried side by side (default 2; each in its own copy of the package)",
    )
    ap.add_argument(
        "--no-coverage",
        action="store_true",
        help="run each mutant against its file's whole selection, not only the tests that reach its line",
    )
    ap.add_argument(
        "--ledger",
        action="store_true",
        help="reuse tools/mutation_ledger.txt's killed, equivalent and stillborn mutants of the files' current "
        "versions and record this run's outcomes there (`make mutate`: a full run can be done in parts)",
    )
    ap.add_argument(
        "--unrun",
        action="store_true",
        help="with --ledger: run only the mutants the ledger has no outcome for (its survivors are not run "
        "again; a plain --ledger run tries them against new tests)",
    )
    ap.add_argument(
        "--ledger-report",
        action="store_true",
        help="print the table of tools/mutation_ledger.txt (the files' current versions) and run nothing",
    )
    ap.add_argument(
        "--ledger-add",
        nargs="+",
        metavar="RESULTS",
        help="record these results.jsonl files' outcomes in tools/mutation_ledger.txt and run nothing",
    )
    ap.add_argument(
        "--ledger-migrate",
        action="store_true",
        help="carry the ledger's marks of changed files (or --file's) to their current versions, mutant by "
        "mutant on the lines the versions share (tools/mutate_migrate.py), and run nothing; a --ledger run "
        "does this first",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="a line per mutant")
    a = ap.parse_args(argv)
    global SANITIZER, BUILD
    if a.asan or a.tsan:
        SANITIZER = "address" if a.asan else "thread"
        BUILD = os.path.join(ROOT, "build", "mutate-" + ("asan" if a.asan else "tsan"))
    if a.workdir:
        BUILD = os.path.abspath(a.workdir)
    if a.unrun and not a.ledger:
        print("mutate: --unrun needs --ledger (the ledger holds the outcomes it skips)", file=sys.stderr)
        return 2
    if a.report:
        return 1 if report(results_of(a.report)) < a.min_rate else 0
    if a.ledger_add:
        ledger_add(a.ledger_add)
        return 0
    if a.ledger_migrate:
        import mutate_migrate

        mutate_migrate.migrate(sys.modules[__name__], a.file)
        return 0
    if a.ledger_report:
        rules = os.path.abspath(a.rules) if a.rules != "universal" else a.rules
        return 1 if report(ledger_results(rules)) < a.min_rate else 0
    if a.rules != "universal":
        a.rules = os.path.abspath(a.rules)
        if not os.path.exists(a.rules):
            print(f"mutate: no rule file {a.rules}", file=sys.stderr)
            return 2
    files = a.file or list(TARGETS)
    unknown = [f for f in files if f not in TARGETS]
    if unknown:
        print(f"mutate: not in tools/mutation_map.py: {', '.join(unknown)}", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM stop a run with what ran recorded (a background job's shell leaves SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    start = time.monotonic()
    slots: list[Slot] = []
    try:
        print(f"==> building the objects once ({os.path.relpath(BUILD, ROOT)}/)", flush=True)
        build_base()
        if a.ledger and a.rules == RULES:  # a file changed since its marks: they follow their lines
            import mutate_migrate

            mutate_migrate.migrate(sys.modules[__name__], files)
        equivalent = load_equivalent()
        for stale in stale_equivalents(equivalent):
            print(f"mutate: tools/mutation_equivalent.txt applies to nothing: {stale}", file=sys.stderr, flush=True)
        results = []
        os.makedirs(BUILD, exist_ok=True)
        path = os.path.join(BUILD, "results.jsonl")
        earlier = load_earlier(path) if a.resume else {}
        if a.ledger:
            earlier.update(ledger_earlier(a.rules, survivors=a.unrun))
        # --resume keeps the records of the files this run does not touch (one results file, many runs)
        kept = [] if not a.resume or not os.path.exists(path) else [
            line for line in read_text(path).splitlines() if line.strip() and json.loads(line)["file"] not in files
        ]  # fmt: skip
        slots = [Slot(n) for n in range(max(1, a.jobs))]
        with open(path, "w") as log:
            log.writelines(line + "\n" for line in kept)
            for i, rel in enumerate(files):
                # the budget is shared out: each file gets an equal part of what is left (and at least one
                # tested mutant: mutate_file)
                left = a.budget - (time.monotonic() - start)
                share = max(0.0, left) / (len(files) - i) if a.budget else float("inf")
                print(f"==> {rel}: {' '.join(TARGETS[rel])}", flush=True)
                cov = None
                if not (a.no_coverage or SANITIZER):  # one coverage run for the files that share the selection
                    print("    which tests reach which line (a run of the selection with gcov)", flush=True)
                    cov = coverage([f for f in files if TARGETS[f] == TARGETS[rel]], TARGETS[rel])[rel]
                results.append(mutate_file(rel, TARGETS[rel], a, equivalent, share, log, earlier, slots, cov))
                if a.ledger:
                    update_ledger(results[-1:], sanitizer=SANITIZER)
    except MutateError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if a.ledger:  # what ran is not lost: the ledger takes the half-done file's outcomes too
            ledger_add([path])
            print("mutate: stopped; the outcomes so far are in tools/mutation_ledger.txt", file=sys.stderr)
        return 130
    finally:
        for s in slots:
            with contextlib.suppress(Exception):
                s.close()
    rate = report(results)
    return 1 if rate < a.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
