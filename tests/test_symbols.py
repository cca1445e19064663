"""Tier 1: libvmm's global symbols are prefixed.

Rules, checked on every csrc/*/*.c compiled here into an object (with the extension's own flags from
vmmpy/_build_ffi.py; -fvisibility=hidden hides them from the .so's dynamic table, not from `nm` on an object):
- every global symbol an object defines starts with ``vmm__`` (internal) or ``vmm_`` (public); the files
  of the 9p server (``p9_*.c``) may also use ``p9_``;
- a public ``vmm_`` name (one underscore) is declared in include/vmm.h, the one public header;
- the Hypervisor.framework simulator (csrc/backend/hvfsim/, built on Linux only) defines the names of the API
  it simulates (``hv_*``, ``mach_absolute_time``, ``mach_timebase_info``, ``os_release``) and ``hvfsim__``
  internals: hidden like the rest, and only there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.environ.get("VMMPY_ROOT", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NM = shutil.which("nm")
CC = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()

pytestmark = pytest.mark.skipif(NM is None, reason="needs nm (binutils)")


def _build_module():
    """vmmpy/_build_ffi.py of the source tree (its sources() and cflags(), not a copy's)."""
    spec = importlib.util.spec_from_file_location("_vmm_build_ffi", os.path.join(ROOT, "vmmpy", "_build_ffi.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _compile(src: str, out: str, flags: list[str]) -> None:
    r = subprocess.run([*CC, *flags, "-c", src, "-o", out], capture_output=True, text=True)
    assert r.returncode == 0, f"{src} does not compile:\n{r.stderr}"


def _globals(obj: str) -> list[str]:
    out = subprocess.run([NM, "-g", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


HVFSIM_API = re.compile(r"(hv_\w+|hvfsim__\w+|mach_absolute_time|mach_timebase_info|os_release)$")


def violations(src: str, symbols: list[str], public: set[str]) -> list[str]:
    """What is wrong with the global `symbols` of the file `src` (empty: nothing)."""
    p9 = re.match(r"p9_.*\.c$", os.path.basename(src)) is not None
    hvfsim = os.path.basename(os.path.dirname(src)) == "hvfsim"
    bad = []
    for s in symbols:
        if s.startswith("vmm__") or (p9 and s.startswith("p9_")) or (hvfsim and HVFSIM_API.match(s)):
            continue
        if s.startswith("vmm_"):
            if s not in public:
                bad.append(f"{s}: a public name (vmm_) that include/vmm.h does not declare (internal: vmm__)")
            continue
        bad.append(f"{s}: a global without the vmm__ prefix (make it static, or name it vmm__...)")
    return bad


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    b = _build_module()
    # the extension's flags; -O0 -g0 only to compile faster (the set of globals does not depend on them)
    flags = [*b.cflags(), "-O0", "-g0", *(f"-I{d}" for d in b.include_dirs())]
    with open(os.path.join(ROOT, "include", "vmm.h"), encoding="utf-8") as f:
        public = set(re.findall(r"\b(vmm_[a-z0-9]\w*)\s*\(", f.read()))
    return b, flags, public, tmp_path_factory.mktemp("objs")


@pytest.fixture(scope="module")
def symbols(build) -> dict[str, list[str]]:
    b, flags, _, tmp = build
    srcs = b.sources()
    assert len(srcs) > 20, f"no libvmm sources under {ROOT}/csrc"
    objs = [str(tmp / (os.path.relpath(s, ROOT).replace(os.sep, "_") + ".o")) for s in srcs]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
        list(ex.map(_compile, srcs, objs, [flags] * len(srcs)))
    return {os.path.relpath(s, ROOT): _globals(o) for s, o in zip(srcs, objs)}


def _check(symbols: dict[str, list[str]], public: set[str]) -> None:
    bad = [f"{src}: {v}" for src, syms in symbols.items() for v in violations(src, syms, public)]
    assert not bad, "unprefixed global symbols in libvmm:\n" + "\n".join(bad)


def _is_p9(src: str) -> bool:
    return os.path.basename(src).startswith("p9_")


def test_globals_are_prefixed(symbols, build):
    _check({src: syms for src, syms in symbols.items() if not _is_p9(src)}, build[2])


def test_p9_globals_are_prefixed(symbols, build):
    _check({src: syms for src, syms in symbols.items() if _is_p9(src)}, build[2])


def test_the_public_api_is_there(symbols):
    every = {s for syms in symbols.values() for s in syms}
    assert {"vmm_create", "vmm_run", "vmm_cpu_model_name"} <= every


def test_the_check_catches_an_unprefixed_global(build, tmp_path):
    """The rule itself: a plain global is reported, a static one is not, p9_ only in p9_*.c."""
    _, flags, public, _ = build
    src = tmp_path / "bad.c"
    src.write_text(
        "".join(
            f"{decl};\n{decl} {{ return 0; }}\n"
            for decl in (
                "int fid_get(void)",
                "static int quiet(void)",
                "int p9_x(void)",
                "int vmm__ok(void)",
                "int vmm_not_in_header(void)",
            )
        )
        + "int vmm__use(void) { return quiet(); }\n"
    )
    obj = str(tmp_path / "bad.o")
    _compile(str(src), obj, flags)
    syms = _globals(obj)
    bad = violations("csrc/dev/bad.c", syms, public)
    assert {b.split(":")[0] for b in bad} == {"fid_get", "p9_x", "vmm_not_in_header"}, bad
    assert {b.split(":")[0] for b in violations("csrc/dev/p9_bad.c", syms, public)} == {"fid_get", "vmm_not_in_header"}


def test_framework_names_only_in_the_simulator():
    """hv_* may be defined by the simulator's files (csrc/backend/hvfsim/), by no other file."""
    assert violations("csrc/backend/hvfsim/hvfsim.c", ["hv_vcpu_run", "mach_absolute_time"], set()) == []
    assert violations("csrc/backend/hvf.c", ["hv_vcpu_run"], set())
    assert violations("csrc/backend/hvfsim/hvfsim.c", ["helper"], set())
