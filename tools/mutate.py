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
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import difflib
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "mutate")  # build/mutate-asan with --asan (set by main)
MUTANTS = os.path.join(ROOT, "build", "mutate", "mutants")
SAN_EXIT = 86  # the sanitizers' exit status under --asan
ASAN = False  # --asan: libvmm and each mutant built with -fsanitize=address,undefined, leaks checked
sys.path.insert(0, os.path.join(ROOT, "vmmpy"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import _build_ffi  # noqa: E402
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
    flags = [f for f in _build_ffi.cflags(sanitize=ASAN) if f != "-g"]
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
    pkg = os.path.join(BUILD, "pkg", "vmmpy")
    os.makedirs(pkg, exist_ok=True)
    for f in os.listdir(os.path.join(ROOT, "vmmpy")):
        if f.endswith((".py", ".typed")):
            shutil.copy(os.path.join(ROOT, "vmmpy", f), os.path.join(pkg, f))
    tests = os.path.join(BUILD, "pkg", "tests")
    shutil.rmtree(tests, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "tests"), tests, ignore=shutil.ignore_patterns("__pycache__"))


def link(replace: dict[str, str] | None = None) -> None:
    """Link the extension into the private package, with some objects replaced (by a mutant's)."""
    objdir = os.path.join(BUILD, "obj")
    objs = [(replace or {}).get(obj_name(s), os.path.join(objdir, obj_name(s))) for s in _build_ffi.sources()]
    ud = _build_ffi.unicorn_dir()
    out = os.path.join(BUILD, "pkg", "vmmpy", "_vmm.abi3.so")
    p = subprocess.run(
        [
            CC,
            "-shared",
            *(["-fsanitize=address,undefined"] if ASAN else []),
            "-o",
            out + ".tmp",
            os.path.join(BUILD, "_vmm.o"),
            *objs,
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


# -- running tests -------------------------------------------------------------------------------


def sanitizer_env(env: dict) -> str:
    """tools/asan.sh's environment, with leak checking on; returns the reports' path prefix."""
    logs = os.path.join(BUILD, "sanitizer")
    gcc = lambda lib: subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    env["LD_PRELOAD"] = f"{gcc('libasan.so')} {gcc('libubsan.so')}"
    # no abort_on_error: the interpreter's own leaks at exit would abort every run; a sanitizer's exit
    # status (86) then says "look at the reports", which decide
    env["ASAN_OPTIONS"] = f"detect_leaks=1:exitcode={SAN_EXIT}:allocator_may_return_null=1:log_path={logs}"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={logs}"
    env["VMMPY_EXPECT_SANITIZED"] = "1"
    for f in os.listdir(BUILD):
        if f.startswith("sanitizer."):
            os.unlink(os.path.join(BUILD, f))
    return logs


def sanitizer_found(logs: str) -> bool:
    """A memory error or undefined behaviour anywhere, or a leak of memory libvmm allocated (the Python
    interpreter's own unfreed memory at exit is not ours: a leak counts when a frame of its allocation
    stack is in the extension)."""
    d, prefix = os.path.split(logs)
    for f in os.listdir(d):
        if not f.startswith(prefix + "."):
            continue
        text = read_text(os.path.join(d, f))
        if re.search(r"ERROR: AddressSanitizer|runtime error", text):
            return True
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak)", text)[1:]:
            if "_vmm.abi3.so" in block.split("\n\n")[0]:
                return True
    return False


def kill_group(pgid: int) -> bool:
    """SIGKILL the process group the tests ran in (start_new_session made it): True if it still existed."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def run_tests(args: list[str], timeout: float) -> tuple[str, float]:
    """'pass', 'fail' or 'timeout', and the time taken."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, "pkg"), VMMPY_ROOT=ROOT, PYTHONDONTWRITEBYTECODE="1")
    logs = sanitizer_env(env) if ASAN else ""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--rootdir=.", "-m", "not slow", *args]
    t = time.monotonic()
    p = subprocess.Popen(
        cmd,
        cwd=os.path.join(BUILD, "pkg"),
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
    # under ASan, a leak report alone changes the exit status: what decides is whether one is ours
    ok = (p.returncode in (0, SAN_EXIT) if ASAN else p.returncode == 0) and not (ASAN and sanitizer_found(logs))
    return ("pass" if ok else "fail"), time.monotonic() - t


# -- mutants -------------------------------------------------------------------------------------


def version_of(src: str, rules: str) -> str:
    """A digest of the source and the rule set: mutants (and their results) of one version are reusable."""
    h = hashlib.sha256(read_bytes(src))
    h.update(rules.encode() if rules == "universal" else read_bytes(rules))
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
        tool = shutil.which("mutate")
        if not tool:
            raise MutateError("universalmutator's `mutate` is not installed: pip install universalmutator")
        ruleargs = [] if rules == "universal" else ["--only", rules]
        p = subprocess.run([tool, src, "c", *ruleargs, "--noCheck", "--mutantDir", out], capture_output=True, text=True)
        if p.returncode:
            raise MutateError(f"mutate {src} failed:\n{p.stderr[-2000:]}")
        with open(stamp, "w") as f:
            f.write(digest)
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
    `a << 8 \\| b`). Line 0 in the set stands for "any line"."""
    out = set()
    if os.path.exists(EQUIVALENT):
        for line in read_text(EQUIVALENT).splitlines():
            if line.strip() and not line.startswith("#"):
                parts = [p.strip().replace(" \\| ", " | ") for p in line.split(" | ")]
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
            print(f"mutate: the selection failed once without a mutant, trying again: {' '.join(tests)}", flush=True)
            status, t = run_tests(tests, timeout=600)
        if status != "pass":
            raise MutateError(f"these tests fail without a mutant: {' '.join(tests)}")
        _BASELINES[key] = t
    return _BASELINES[key]


def mutate_file(rel: str, tests: list[str], a, equivalent, share: float, log, earlier: dict) -> dict:
    src = os.path.join(ROOT, rel)
    src_lines = read_text(src).splitlines()
    mutants = generate(src, a.rules)
    version = version_of(src, a.rules)
    population = len(mutants)
    if a.sample and a.sample < len(mutants):
        mutants = random.Random(f"{a.seed}:{rel}").sample(mutants, a.sample)
    base_obj = os.path.join(BUILD, "obj", obj_name(src))
    base_bytes = read_bytes(base_obj)
    limit = 0.0
    # this file's part of the budget, its baseline's time included; the first mutant that needs its tests
    # runs even past it, so that a budgeted run (make mutate-ci) samples every file however loaded the host
    deadline = time.monotonic() + share
    tested = False
    counts = dict(killed=0, survived=0, equivalent=0, stillborn=0, skipped=0, reused=0)
    survivors = []
    workdir = os.path.join(BUILD, "work", os.path.dirname(rel))
    os.makedirs(workdir, exist_ok=True)
    for m in mutants:
        if tested and time.monotonic() > deadline:
            counts["skipped"] += 1
            continue
        line, before, after = change_of(src_lines, m)
        # --resume: a mutant of this very file version that was killed or did not compile stays so (tests
        # are only added); survivors and equivalents are looked at again
        prev = earlier.get((rel, version, os.path.basename(m)))
        copy = os.path.join(workdir, os.path.basename(src))
        obj = os.path.join(BUILD, "mutant.o")
        if prev in ("killed", "stillborn"):
            status = prev
            counts["reused"] += 1
        else:
            shutil.copy(m, copy)
            p = compile_c(copy, obj, quote_dir=os.path.dirname(src))
            if p.returncode:
                status = "stillborn"
            elif read_bytes(obj) == base_bytes:
                status = "equivalent"  # the compiler produced the original's code
            elif (rel, 0, before, after) in equivalent or (rel, line, before, after) in equivalent:
                status = "equivalent"
            else:
                if not limit:
                    limit = max(30.0, 5 * baseline(tests))
                link({obj_name(src): obj})
                result, _ = run_tests(tests, timeout=limit)
                status = "survived" if result == "pass" else "killed"
                tested = True
        counts[status] += 1
        rec = dict(
            file=rel, version=version, mutant=os.path.basename(m), line=line, before=before, after=after,
            status=status, asan=ASAN, population=population,
        )  # fmt: skip
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if status == "survived":
            survivors.append(rec)
        if a.verbose:
            print(f"  {status:10} {rel}:{line}: {after}", flush=True)
    link()  # the private package back to the original
    return dict(file=rel, total=len(mutants), population=population, survivors=survivors, **counts)


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
        note = f"  ({r['skipped']} not run: budget)" if r["skipped"] else ""
        note += f"  ({r['reused']} from the last run)" if r["reused"] else ""
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
            print(f"  {x['file']}:{x['line']}: {x['before']}  ->  {x['after']}")
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
                 killed=0, survived=0, equivalent=0, stillborn=0),
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
            if "version" in r and r.get("asan", False) == ASAN:
                out[(r["file"], r["version"], r["mutant"])] = r["status"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", action="append", help="only this mapped file (repeatable)")
    ap.add_argument("--sample", type=int, default=0, help="random mutants per file (0: all)")
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
    ap.add_argument(
        "--asan",
        action="store_true",
        help="build libvmm and each mutant with -fsanitize=address,undefined (build/mutate-asan/): a memory "
        "error, undefined behaviour or a leak of libvmm's memory kills the mutant (slower: ~3x)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the last run's killed and stillborn mutants of the same file version (survivors run again); "
        "the results of files not in this run are kept",
    )
    ap.add_argument(
        "--workdir",
        help="build and results directory (default build/mutate, build/mutate-asan with --asan): runs on "
        "different files in different directories go on side by side (the mutants are shared)",
    )
    ap.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS",
        help="print the table of these results.jsonl files (the last line per mutant wins) and run nothing",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="a line per mutant")
    a = ap.parse_args(argv)
    global ASAN, BUILD
    if a.asan:
        ASAN, BUILD = True, os.path.join(ROOT, "build", "mutate-asan")
    if a.workdir:
        BUILD = os.path.abspath(a.workdir)
    if a.report:
        return 1 if report(results_of(a.report)) < a.min_rate else 0
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
    start = time.monotonic()
    try:
        print(f"==> building the objects once ({os.path.relpath(BUILD, ROOT)}/)", flush=True)
        build_base()
        equivalent = load_equivalent()
        for stale in stale_equivalents(equivalent):
            print(f"mutate: tools/mutation_equivalent.txt applies to nothing: {stale}", file=sys.stderr, flush=True)
        results = []
        os.makedirs(BUILD, exist_ok=True)
        path = os.path.join(BUILD, "results.jsonl")
        earlier = load_earlier(path) if a.resume else {}
        # --resume keeps the records of the files this run does not touch (one results file, many runs)
        kept = [] if not a.resume or not os.path.exists(path) else [
            line for line in read_text(path).splitlines() if line.strip() and json.loads(line)["file"] not in files
        ]  # fmt: skip
        with open(path, "w") as log:
            log.writelines(line + "\n" for line in kept)
            for i, rel in enumerate(files):
                # the budget is shared out: each file gets an equal part of what is left (and at least one
                # tested mutant: mutate_file)
                left = a.budget - (time.monotonic() - start)
                share = max(0.0, left) / (len(files) - i) if a.budget else float("inf")
                print(f"==> {rel}: {' '.join(TARGETS[rel])}", flush=True)
                results.append(mutate_file(rel, TARGETS[rel], a, equivalent, share, log, earlier))
    except MutateError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    rate = report(results)
    return 1 if rate < a.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
