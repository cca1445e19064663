"""cffi API-mode build of libvmm: compiles csrc/ into the vmmpy._vmm extension."""

from __future__ import annotations

import glob
import importlib.util
import os
import re

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


def sources() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.c")))


def include_dirs() -> list[str]:
    return [INCLUDE, os.path.join(unicorn_dir(), "include")]


def cflags(sanitize: bool = False) -> list[str]:
    """The flags libvmm's sources are compiled with (also used by tests/test_symbols.py)."""
    flags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-DVMM_BUILDING"]
    if sanitize:
        flags += ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    return flags


def make_ffi(sanitize: bool = False, absolute: bool = False) -> FFI:
    ud = unicorn_dir()
    ffi = FFI()
    ffi.cdef(cdef_from_header(os.path.join(INCLUDE, "vmm.h")))
    ldflags = []
    if sanitize:
        ldflags += ["-fsanitize=address,undefined"]
    ffi.set_source(
        "vmmpy._vmm",
        '#include "vmm.h"\n',
        sources=sources() if absolute else [os.path.relpath(s, ROOT) for s in sources()],
        include_dirs=include_dirs(),
        libraries=["fdt", "z", "pthread"],
        # libunicorn is loaded by vmmpy._ffi before the extension: link by soname only,
        # so no build-time path is baked into the extension.
        extra_link_args=[os.path.join(ud, "lib", "libunicorn.so.2"), "-Wl,--disable-new-dtags", *ldflags],
        extra_compile_args=cflags(sanitize),
    )
    return ffi


ffibuilder = make_ffi(sanitize=os.environ.get("VMMPY_SANITIZE") == "1")

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
