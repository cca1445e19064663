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
    python tools/mutate.py --budget 300         # stop starting mutants after 300 s (CI)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "mutate")
sys.path.insert(0, os.path.join(ROOT, "vmmpy"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import _build_ffi  # noqa: E402
from mutation_map import TARGETS  # noqa: E402

CC = os.environ.get("CC", "cc")
EQUIVALENT = os.path.join(ROOT, "tools", "mutation_equivalent.txt")


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
    flags = [f for f in _build_ffi.cflags() if f != "-g"]
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


def run_tests(args: list[str], timeout: float) -> tuple[str, float]:
    """'pass', 'fail' or 'timeout', and the time taken."""
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, "pkg"), VMMPY_ROOT=ROOT, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--rootdir=.", "-m", "not slow", *args]
    t = time.monotonic()
    try:
        p = subprocess.run(
            cmd, cwd=os.path.join(BUILD, "pkg"), env=env, capture_output=True, timeout=timeout, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t
    return ("pass" if p.returncode == 0 else "fail"), time.monotonic() - t


# -- mutants -------------------------------------------------------------------------------------


def generate(src: str) -> list[str]:
    """universalmutator's mutants of src (cached under build/mutate/mutants/<file>/)."""
    out = os.path.join(BUILD, "mutants", obj_name(src)[:-2])
    stamp = os.path.join(out, ".source-sha256")
    digest = hashlib.sha256(read_bytes(src)).hexdigest()
    if not (os.path.exists(stamp) and read_text(stamp) == digest):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        tool = shutil.which("mutate")
        if not tool:
            raise MutateError("universalmutator's `mutate` is not installed: pip install universalmutator")
        p = subprocess.run([tool, src, "c", "--noCheck", "--mutantDir", out], capture_output=True, text=True)
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
    not equivalent). Line 0 in the set stands for "any line"."""
    out = set()
    if os.path.exists(EQUIVALENT):
        for line in read_text(EQUIVALENT).splitlines():
            if line.strip() and not line.startswith("#"):
                parts = [p.strip() for p in line.split(" | ")]
                if len(parts) >= 3:
                    name, _, num = parts[0].partition(":")
                    out.add((name, int(num) if num else 0, parts[1], parts[2]))
    return out


_BASELINES: dict[tuple[str, ...], float] = {}


def baseline(tests: list[str]) -> float:
    """The selection's time on the unmutated build (once per selection: the GIC files share one); it must
    pass, or every mutant would look killed."""
    key = tuple(tests)
    if key not in _BASELINES:
        link()
        status, t = run_tests(tests, timeout=600)
        if status != "pass":
            raise MutateError(f"these tests fail without a mutant: {' '.join(tests)}")
        _BASELINES[key] = t
    return _BASELINES[key]


def mutate_file(rel: str, tests: list[str], a, equivalent, share: float, log) -> dict:
    src = os.path.join(ROOT, rel)
    src_lines = read_text(src).splitlines()
    mutants = generate(src)
    if a.sample and a.sample < len(mutants):
        mutants = random.Random(f"{a.seed}:{rel}").sample(mutants, a.sample)
    base_obj = os.path.join(BUILD, "obj", obj_name(src))
    base_bytes = read_bytes(base_obj)
    base_t = baseline(tests)
    limit = max(30.0, 5 * base_t)
    deadline = time.monotonic() + share  # this file's part of the budget starts once its baseline is known
    counts = dict(killed=0, survived=0, equivalent=0, stillborn=0, skipped=0)
    survivors = []
    workdir = os.path.join(BUILD, "work", os.path.dirname(rel))
    os.makedirs(workdir, exist_ok=True)
    for m in mutants:
        if time.monotonic() > deadline:
            counts["skipped"] += 1
            continue
        line, before, after = change_of(src_lines, m)
        copy = os.path.join(workdir, os.path.basename(src))
        shutil.copy(m, copy)
        obj = os.path.join(BUILD, "mutant.o")
        p = compile_c(copy, obj, quote_dir=os.path.dirname(src))
        if p.returncode:
            status = "stillborn"
        elif read_bytes(obj) == base_bytes:
            status = "equivalent"  # the compiler produced the original's code
        elif (rel, 0, before, after) in equivalent or (rel, line, before, after) in equivalent:
            status = "equivalent"
        else:
            link({obj_name(src): obj})
            result, _ = run_tests(tests, timeout=limit)
            status = "survived" if result == "pass" else "killed"
        counts[status] += 1
        rec = dict(file=rel, mutant=os.path.basename(m), line=line, before=before, after=after, status=status)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if status == "survived":
            survivors.append(rec)
        if a.verbose:
            print(f"  {status:10} {rel}:{line}: {after}", flush=True)
    link()  # the private package back to the original
    return dict(file=rel, total=len(mutants), survivors=survivors, **counts)


def report(results: list[dict]) -> float:
    print(f"\n{'file':32} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv':>5} {'stillborn':>9} {'kill rate':>9}")
    k = s = 0
    for r in results:
        n = r["killed"] + r["survived"]
        rate = f"{100 * r['killed'] / n:.0f} %" if n else "-"
        note = f"  ({r['skipped']} not run: budget)" if r["skipped"] else ""
        print(
            f"{r['file']:32} {r['total']:7} {r['killed']:6} {r['survived']:8} {r['equivalent']:5} "
            f"{r['stillborn']:9} {rate:>9}{note}"
        )
        k, s = k + r["killed"], s + r["survived"]
    total = 100 * k / (k + s) if k + s else 100.0
    print(f"{'all':32} {'':7} {k:6} {s:8} {'':5} {'':9} {total:7.0f} %")
    surv = [x for r in results for x in r["survivors"]]
    if surv:
        print("\nsurvivors (a test that notices the change kills each; an equivalent one goes into "
              "tools/mutation_equivalent.txt with why):")  # fmt: skip
        for x in surv:
            print(f"  {x['file']}:{x['line']}: {x['before']}  ->  {x['after']}")
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", action="append", help="only this mapped file (repeatable)")
    ap.add_argument("--sample", type=int, default=0, help="random mutants per file (0: all)")
    ap.add_argument("--seed", default="vmmpy", help="sampling seed (the same seed picks the same mutants)")
    ap.add_argument(
        "--budget", type=float, default=0, help="seconds for the run, shared among the files (then no new mutant)"
    )
    ap.add_argument("--min-rate", type=float, default=0, help="exit 1 if the kill rate is below this percent")
    ap.add_argument("-v", "--verbose", action="store_true", help="a line per mutant")
    a = ap.parse_args(argv)
    files = a.file or list(TARGETS)
    unknown = [f for f in files if f not in TARGETS]
    if unknown:
        print(f"mutate: not in tools/mutation_map.py: {', '.join(unknown)}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        print("==> building the objects once (build/mutate/)", flush=True)
        build_base()
        equivalent = load_equivalent()
        results = []
        os.makedirs(BUILD, exist_ok=True)
        with open(os.path.join(BUILD, "results.jsonl"), "w") as log:
            for i, rel in enumerate(files):
                # the budget is shared out: each file gets an equal part of what is left
                left = a.budget - (time.monotonic() - start)
                share = max(0.0, left) / (len(files) - i) if a.budget else float("inf")
                print(f"==> {rel}: {' '.join(TARGETS[rel])}", flush=True)
                results.append(mutate_file(rel, TARGETS[rel], a, equivalent, share, log))
    except MutateError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    rate = report(results)
    return 1 if rate < a.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
