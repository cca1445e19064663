"""cffi API-mode build of libvmm: compiles csrc/ into the vmmpy._vmm extension."""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import re
import subprocess
import sys
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INCLUDE = os.path.join(ROOT, "include")


def unicorn_dir() -> str:
    spec = importlib.util.find_spec("unicorn")
    if spec is None or spec.origin is None:
        raise RuntimeError("the 'unicorn' package (2.1.x) is needed to build vmmpy: pip install unicorn==2.1.4")
    return os.path.dirname(spec.origin)


def cdef_from_header(path: str) -> str:
    """Turn include/vmm.h into something cffi's cdef accepts.

    Drops preprocessor lines, the export macro and the error X-macro (whose
    values we spell out from the same macro text), so the header stays the
    single source of truth.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    errs = re.findall(r"XX\((\w+),\s*(-?\d+),", text)
    # remove the X-macro block and the enum built from it
    text = re.sub(r"#define VMM_ERRNO_MAP\(XX\).*?\n(?=\n)", "", text, flags=re.S)
    text = re.sub(r"enum vmm_errno \{.*?\};", "", text, flags=re.S)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    lines = []
    skip = False
    for line in text.splitlines():
        s = line.strip()
        if skip:
            skip = s.endswith("\\")
            continue
        if s.startswith("#"):
            skip = s.endswith("\\")
            continue
        lines.append(line.replace("VMM_EXPORT ", "").replace('__attribute__((visibility("default")))', ""))
    body = "\n".join(lines)
    enum = "enum vmm_errno {\n    VMM_OK = 0,\n" + "".join(f"    VMM_E{n} = {c},\n" for n, c in errs) + "};\n"
    consts = "#define VMM_MAX_CPUS 8\n"
    callbacks = 'extern "Python" void _vmm_log_cb(void *, int, const char *, const char *);\n'
    return enum + consts + body + callbacks


def unicorn_lib_name() -> str:
    """The file name (and soname) of the shared libunicorn in the unicorn wheel's lib/."""
    return "libunicorn.2.dylib" if sys.platform == "darwin" else "libunicorn.so.2"


# The portable host layer (csrc/host/host_posix.c): POSIX.1-2008 + XSI and nothing else. glibc then
# hides every GNU/BSD/Linux extension, so one that sneaks back into csrc/ fails to compile.
# -std=gnu11 stays: it selects compiler extensions (typeof, statement expressions), not library ones.
PORTABLE_CFLAGS = ["-DVMM_HOST_POSIX", "-D_XOPEN_SOURCE=700", "-DVMM_HAVE_KVM=0"]


# The Hypervisor.framework backend (csrc/backend/hvf.c): on macOS it links the framework; elsewhere it is
# built against the framework simulator (csrc/backend/hvfsim/, over Unicorn), so that the suite runs it.
# The simulator's directory holds its Hypervisor/Hypervisor.h and mach/mach_time.h.
HVFSIM = os.path.join(ROOT, "csrc", "backend", "hvfsim")


def hvf_simulated() -> bool:
    """Whether this build runs hvf.c over the simulator (every platform but macOS)."""
    return sys.platform != "darwin"


def homebrew_prefix(formula: str) -> str | None:
    """macOS: where Homebrew installed `formula` (libfdt comes with `dtc`), or None."""
    if sys.platform != "darwin":
        return None
    try:
        out = subprocess.run(["brew", "--prefix", formula], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    p = out.stdout.strip()
    return p if out.returncode == 0 and os.path.isdir(p) else None


def slirp() -> tuple[list[str], list[str]]:
    """(compile flags, libraries) for libslirp, the user-networking back-end, or ([], []) without it.

    Debian's libslirp-dev ships slirp.pc, which requires glib-2.0.pc (libglib2.0-dev) although the
    header needs no glib: pkg-config first, else the header and library where Debian puts them.
    Set VMMPY_NO_SLIRP=1 to build without it (user networking then fails with VMM_ENOTSUP).
    """
    if os.environ.get("VMMPY_NO_SLIRP") == "1":
        return [], []
    try:
        out = subprocess.run(["pkg-config", "--cflags", "slirp"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return ["-DVMM_HAVE_SLIRP=1", *out.stdout.split()], ["slirp"]
    except OSError:
        pass
    if os.path.exists("/usr/include/slirp/libslirp.h") and glob.glob("/usr/lib/*/libslirp.so*") + glob.glob(
        "/usr/lib/libslirp.so*"
    ):
        return ["-DVMM_HAVE_SLIRP=1"], ["slirp"]
    return [], []


def include_dirs() -> list[str]:
    dirs = [INCLUDE, os.path.join(unicorn_dir(), "include")] + ([HVFSIM] if hvf_simulated() else [])
    dtc = homebrew_prefix("dtc")
    return dirs + ([os.path.join(dtc, "include")] if dtc else [])


def library_dirs() -> list[str]:
    dtc = homebrew_prefix("dtc")
    return [os.path.join(dtc, "lib")] if dtc else []


def sanitizer(sanitize: bool | str) -> str:
    """The sanitizer a build asks for: "" (none), "address" (ASan+UBSan: True, "1" or "address", as
    tools/asan.sh builds) or "thread" (ThreadSanitizer, tools/tsan.sh)."""
    if sanitize in (False, None, "", "0"):
        return ""
    if sanitize in (True, "1", "address"):
        return "address"
    if sanitize == "thread":
        return "thread"
    raise ValueError(f"unknown sanitizer {sanitize!r} (address or thread)")


def compiler_is_gcc() -> bool:
    """Whether the C compiler (CC, else Python's) is GCC: only GCC knows -Wtsan (clang refuses it)."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "clang" not in out.lower() and ("gcc" in out.lower() or "free software foundation" in out.lower())


def sanitizer_ldflags(sanitize: bool | str) -> list[str]:
    """The link flags of a sanitized build (its runtime comes from LD_PRELOAD: the interpreter is not built with it)."""
    return {"": [], "address": ["-fsanitize=address,undefined"], "thread": ["-fsanitize=thread"]}[sanitizer(sanitize)]


def cflags(sanitize: bool | str = False, portable: bool = False) -> list[str]:
    """The flags libvmm's sources are compiled with (also used by tests/test_symbols.py). sanitize: True or
    "address" for ASan+UBSan, "thread" for ThreadSanitizer."""
    flags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-DVMM_BUILDING"]
    san = sanitizer(sanitize)
    if san == "address":
        flags += ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    elif san == "thread":
        flags += ["-O1", "-fsanitize=thread", "-fno-omit-frame-pointer"]
        # GCC 12 warns that TSan does not model atomic_thread_fence (virtq.c's fences order guest memory
        # against the guest's vCPU threads): a note about the tool, not about the code, and -Werror makes it fatal
        if compiler_is_gcc():
            flags += ["-Wno-tsan"]
    if portable:
        flags += PORTABLE_CFLAGS
    if hvf_simulated():
        flags += ["-DVMM_HAVE_HVF=1"]
    return flags + slirp()[0]


def sources(portable: bool = False) -> list[str]:
    srcs = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.c")))
    if hvf_simulated():
        srcs += sorted(glob.glob(os.path.join(HVFSIM, "*.c")))
    if portable:  # KVM is Linux's: a POSIX host has its own backend file
        srcs = [s for s in srcs if not os.path.basename(s).startswith("kvm")]
    return srcs


def headers() -> list[str]:
    return (
        sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.h")))
        + sorted(glob.glob(os.path.join(HVFSIM, "**", "*.h"), recursive=True))
        + [os.path.join(INCLUDE, "vmm.h")]
    )


def make_ffi(sanitize: bool | str = False, absolute: bool = False, portable: bool = False) -> FFI:
    """The cffi builder. sanitize: as cflags(). portable: the POSIX host layer (VMM_HOST_POSIX) instead of
    host_linux.c."""
    ud = unicorn_dir()
    ffi = FFI()
    ffi.cdef(cdef_from_header(os.path.join(INCLUDE, "vmm.h")))
    ldflags = []
    if sys.platform.startswith("linux"):
        # GNU ld: RPATH, not RUNPATH, in case a path is ever added (ld(1) --disable-new-dtags)
        ldflags += ["-Wl,--disable-new-dtags"]
    if sys.platform == "darwin" and platform.machine() == "arm64":
        ldflags += ["-framework", "Hypervisor"]
    ldflags += sanitizer_ldflags(sanitize)
    ffi.set_source(
        "vmmpy._vmm",
        '#include "vmm.h"\n',
        sources=[s if absolute else os.path.relpath(s, ROOT) for s in sources(portable)],
        include_dirs=include_dirs(),
        library_dirs=library_dirs(),
        libraries=["fdt", "z", "pthread", *slirp()[1]],
        # libunicorn is loaded by vmmpy._ffi before the extension: link by soname only,
        # so no build-time path is baked into the extension.
        extra_link_args=[os.path.join(ud, "lib", unicorn_lib_name()), *ldflags],
        extra_compile_args=cflags(sanitize, portable),
        # headers too: setuptools rebuilds only when a dependency is newer than the extension, and a
        # header-only change (a struct's layout) must not leave objects compiled against the old one
        depends=[h if absolute else os.path.relpath(h, ROOT) for h in headers()],
    )
    return ffi


# VMMPY_SANITIZE=1 (or address): ASan+UBSan; VMMPY_SANITIZE=thread: ThreadSanitizer
ffibuilder = make_ffi(sanitize=os.environ.get("VMMPY_SANITIZE", ""), portable=os.environ.get("VMMPY_HOST_POSIX") == "1")

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
