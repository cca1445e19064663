"""The host-OS layer (csrc/host/): Linux-only calls live in host_linux.c (and the KVM backend) only.

make test-portable compiles everything else against POSIX.1-2008 + XSI alone, which catches most
Linux-only calls; this scan also catches those glibc declares whatever the feature macros say
(getrandom, prctl, statfs, ...) and Linux-only flags and paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("VMMPY_ROOT") or Path(__file__).resolve().parent.parent)
CSRC = ROOT / "csrc"
ALLOWED = {
    "host/host_linux.c",
    "backend/kvm.c",
    "backend/kvm.h",
    "backend/kvm_debug.c",
    "backend/kvm_vgic.c",
}  # KVM: Linux
# flock(2) is 4.2BSD, not POSIX, but on every host the POSIX layer targets (host.h says why not fcntl locks)
ALLOWED_IN = {"host/host_posix.c": {"flock", "LOCK_EX", "LOCK_SH", "<sys/file.h>"}}

# Linux/GNU-only identifiers and headers (whole words), and paths (substrings of the code).
LINUX_ONLY = """
O_PATH AT_EMPTY_PATH O_DIRECT O_TMPFILE O_NOATIME O_LARGEFILE
getrandom prctl PR_SET_TIMERSLACK fallocate FALLOC_FL_PUNCH_HOLE FALLOC_FL_ZERO_RANGE FALLOC_FL_KEEP_SIZE
pthread_condattr_setclock pthread_setname_np pthread_getname_np pthread_setaffinity_np
pthread_tryjoin_np pthread_timedjoin_np _GNU_SOURCE
renameat2 memfd_create eventfd epoll_create epoll_create1 epoll_ctl epoll_wait signalfd
timerfd_create inotify_init statx SEEK_HOLE SEEK_DATA sync_file_range copy_file_range sendfile splice
MAP_NORESERVE MAP_ANONYMOUS MAP_ANON MAP_POPULATE MAP_HUGETLB mremap madvise
statfs fstatfs f_namelen pipe2 accept4 dup3 ppoll gettid syscall sched_getcpu sched_setaffinity
CLOCK_MONOTONIC_RAW CLOCK_BOOTTIME d_type DT_DIR DT_LNK DT_REG flock LOCK_EX LOCK_SH
asprintf vasprintf qsort_r strerror_r memrchr mempcpy strchrnul reallocarray explicit_bzero strlcpy
off64_t loff_t lseek64 TEMP_FAILURE_RETRY
""".split()  # noqa: SIM905 (a word list reads better as text)
LINUX_PATHS = ["/proc/", "/sys/", "<linux/", "<sys/prctl.h>", "<sys/random.h>", "<sys/statfs.h>", "<sys/file.h>"]
# host.h declares the portable accessors; its comments are stripped, but these names are fine anywhere
_IDENT = re.compile(r"\b(" + "|".join(map(re.escape, LINUX_ONLY)) + r")\b")


def strip_comments(text: str) -> str:
    """C source without its comments (string literals are kept: a path or name in one counts)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))  # keep line numbers
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def linux_only_uses(text: str) -> list[tuple[int, str]]:
    """(line, what) for every Linux-only identifier or path in C source text."""
    found = []
    for no, line in enumerate(strip_comments(text).splitlines(), 1):
        found += [(no, m.group(1)) for m in _IDENT.finditer(line)]
        found += [(no, p) for p in LINUX_PATHS if p in line]
    return found


def test_scanner_finds_what_it_must():
    src = 'int x = getrandom(b, 4, 0); /* O_PATH in a comment */\nint fd = open("/proc/self/fd/3", O_RDONLY);\n'
    assert linux_only_uses(src) == [(1, "getrandom"), (2, "/proc/")]
    assert linux_only_uses("#define _GNU_SOURCE\n#include <sys/prctl.h>\n") == [
        (1, "_GNU_SOURCE"),
        (2, "prctl"),
        (2, "<sys/prctl.h>"),
    ]
    assert linux_only_uses("// flock(fd)\nint my_flock_count; /* prctl */\n") == []
    assert linux_only_uses('char *s = "x \\" y", c = \'"\'; int O_PATH;') == [(1, "O_PATH")]


def test_linux_only_calls_stay_in_the_linux_host_layer():
    files = sorted(p for p in CSRC.rglob("*") if p.suffix in (".c", ".h"))
    assert any(p.parent.name == "host" for p in files), "csrc/host/ is missing"
    bad = []
    for p in files:
        rel = p.relative_to(CSRC).as_posix()
        if rel in ALLOWED:
            continue
        ok = ALLOWED_IN.get(rel, set())
        text = p.read_text(encoding="utf-8")
        bad += [f"csrc/{rel}:{no}: {what}" for no, what in linux_only_uses(text) if what not in ok]
    assert not bad, "Linux-only code outside csrc/host/host_linux.c (move it behind csrc/host/host.h):\n" + "\n".join(
        bad
    )


def test_p9_globals_are_prefixed():
    # issue 12: every non-static function defined in csrc/dev/p9_*.c starts with p9_ or vmm__
    defn = re.compile(r"^(?!static\b)[A-Za-z_][\w \*]*?\b(\w+)\(", re.M)
    bad = []
    for p in sorted((CSRC / "dev").glob("p9_*.c")):
        for name in defn.findall(strip_comments(p.read_text(encoding="utf-8"))):
            if not name.startswith(("p9_", "vmm__")):
                bad.append(f"{p.name}: {name}")
    assert not bad, bad


def test_portable_build_is_in_use_when_expected():
    # tools/portable.sh sets this; it proves make test-portable does not silently test the normal build
    if os.environ.get("VMMPY_EXPECT_HOST") != "posix":
        pytest.skip("not the portable run")
    import vmmpy._vmm as ext

    assert "build/portable" in ext.__file__
    data = Path(ext.__file__).read_bytes()
    assert b"/dev/urandom" in data  # host_posix.c's random source
    assert b"/proc/self/fd" not in data  # host_linux.c's reopen path
