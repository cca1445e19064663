"""Tier 1: the 9p server's fid table and its host descriptor budget (csrc/dev/p9_fid.c), from a guest's side.

The fid table is a hash of 1024 buckets over 4096 slots; every fid is charged two host descriptors (its node and
its directory) and an open one a third, against one budget per process: (RLIMIT_NOFILE - 256) / 2, or a quarter
of a limit of 512 or less, with the limit counted as at most 2^24. Budget tests run in a child process with a
limit of their own (the budget is set once per process, when the first share is made).
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys

import pytest

import vmmpy

from . import test_p9
from .conftest import heap_growth
from .test_p9 import (
    P9,
    QTDIR,
    TGETATTR,
    TLCREATE,
    TLINK,
    TMKDIR,
    TMKNOD,
    TRENAMEAT,
    TSYMLINK,
    TUNLINKAT,
    TWALK,
    s,
)
from .test_snapshot_devices import rebind
from .virtio_driver import ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, ID_9P, VirtioMMIO, find_devices

# test_p9's fixtures: tree (the share: hello.txt, sub/inner.txt; a sibling outside it) and p9 (a client, fid 0 attached)
tree, p9 = test_p9.tree, test_p9.p9

# the directory that holds this tests/ and the vmmpy/ it imports (mutation runs copy both): what a child imports
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the hash chains ----------------------------------------------------------------------------------


def assert_fids(p9: P9, live: dict[int, int], gone: set[int]) -> None:
    """Every live fid answers Tgetattr with its object's inode; every clunked one is EBADF."""
    for fid, ino in live.items():
        assert p9.getattr(fid)["qid"][2] == ino, fid
    for fid in gone:
        assert p9.err(TGETATTR, struct.pack("<IQ", fid, 0x7FF)) == errno.EBADF, fid


def test_clunk_unlinks_a_fid_behind_a_newer_one_in_a_lower_slot(p9, tree):
    """Fids 1, 1025 and 2049 share bucket 1. Slots are taken lowest first and a clunked slot is reused first,
    so a chain's newest fid can sit in a lower slot than an older one, and a neighbour in the slot table can
    belong to another bucket: clunking fid 1 must unlink exactly it, whatever the slot numbers around it."""
    share, _ = tree
    ino = {name: os.stat(share / name).st_ino for name in ("hello.txt", "sub")}
    p9.walk(0, 2, "sub")  # slot 2 (the root fid 0 has slot 1)
    p9.walk(0, 1, "hello.txt")  # slot 3
    p9.walk(0, 3, "sub")  # slot 4, alone in bucket 3
    p9.clunk(2)  # slot 2 free again
    p9.walk(0, 1025, "sub")  # slot 2: bucket 1 is now slot 2 (1025), slot 3 (1)
    p9.walk(0, 2049, "hello.txt")  # slot 5: bucket 1 is 5 (2049), 2 (1025), 3 (1)
    p9.clunk(1)
    live = {0: os.stat(share).st_ino, 3: ino["sub"], 1025: ino["sub"], 2049: ino["hello.txt"]}
    assert_fids(p9, live, {1, 2})
    p9.walk(0, 1, "sub")  # slot 3 again, first in bucket 1
    live[1] = ino["sub"]
    for fid in (1025, 2049, 3, 1):
        p9.clunk(fid)
        del live[fid]
        assert_fids(p9, live, {1, 2, 3, 1025, 2049} - set(live))


# -- dead fids (restored from a snapshot whose paths vanished) ----------------------------------------


def test_a_dead_fid_number_can_be_attached_or_walked_to_without_a_clunk(guest, tmp_path):
    """A fid restored dead (its path vanished) answers ESTALE to every request that names it first, but Tattach
    and Twalk's newfid may take its number without a clunk: only a live fid makes them fail with EEXIST, and the
    new fid replaces the dead one."""
    share, snap = tmp_path / "share", tmp_path / "s.snap"
    share.mkdir()
    (share / "keep.txt").write_bytes(b"kept")
    for name in ("gone1", "gone2"):
        (share / name).write_bytes(b"")
    with vmmpy.Machine(guest("idle"), share=[(str(share), "snap")]) as m:
        m.boot_info()
        c = P9(m)
        c.version(8192)
        c.attach(0)
        c.walk(0, 1, "gone1")
        c.walk(0, 2, "gone2")
        m.snapshot(snap)
    for name in ("gone1", "gone2"):
        (share / name).unlink()
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, c)
        assert c.err(TGETATTR, struct.pack("<IQ", 1, 0x7FF)) == errno.ESTALE  # dead: not clunked
        assert c.attach(1) == (QTDIR, 0, os.stat(share).st_ino)
        assert c.walk(0, 2, "keep.txt") == [(0, 0, os.stat(share / "keep.txt").st_ino)]
        c.lopen(2)
        assert c.read(2) == b"kept"
        assert c.walk(1, 3, "keep.txt") == c.walk(0, 4, "keep.txt")


# -- a device used from power-on ------------------------------------------------------------------------


class PowerOnP9(P9):
    """A driver that brings the device up from power-on without first writing status 0 (virtio 1.2 §3.1.1
    step 1 asks for the reset, but nothing obliges a guest to do it) and sends no Tversion before Tattach."""

    def __init__(self, m: vmmpy.Machine):
        (slot,) = [sl for sl, dev_id in find_devices(m) if dev_id == ID_9P]
        self.m, self.dev, self.tag = m, VirtioMMIO(m, slot), 0
        self.dev.add_status(ACKNOWLEDGE)
        self.dev.add_status(DRIVER)
        self.dev.set_driver_features(self.dev.device_features())
        self.dev.add_status(FEATURES_OK)
        self.q = self.dev.setup_queue(0)
        self.dev.add_status(DRIVER_OK)


def test_the_server_is_ready_before_any_reset_or_tversion(tree):
    """A new server has its whole fid table free and takes messages up to its maximum msize (512 KiB)."""
    share, _ = tree
    with vmmpy.Machine(share=share) as m:
        c = PowerOnP9(m)
        assert c.attach(0) == (QTDIR, 0, os.stat(share).st_ino)
        c.walk(0, 1)
        c.lcreate(1, "big.bin")
        data = bytes(range(256)) * 1024  # 256 KiB: one message far above any Tversion's minimum
        assert c.write(1, data) == len(data)
        assert c.read(1, 0, len(data)) == data


# -- names ----------------------------------------------------------------------------------------------


def test_a_name_of_65535_bytes_is_refused_before_it_is_copied(p9, tree):
    """A 9P string is up to 65535 bytes; a path component at most 255 (NAME_MAX). Every message that carries a
    name refuses a longer one with ENAMETOOLONG before copying it into its 256-byte buffer."""
    share, _ = tree
    name = s("n" * 65535)
    p9.walk(0, 1, "hello.txt")
    for t, body in (
        (TWALK, struct.pack("<IIH", 0, 2, 1) + name),
        (TWALK, struct.pack("<IIH", 0, 2, 2) + s("sub") + name),
        (TMKDIR, struct.pack("<I", 0) + name + struct.pack("<II", 0o755, 0)),
        (TLCREATE, struct.pack("<I", 0) + name + struct.pack("<III", 2, 0o644, 0)),
        (TSYMLINK, struct.pack("<I", 0) + name + s("t") + struct.pack("<I", 0)),
        (TMKNOD, struct.pack("<I", 0) + name + struct.pack("<IIII", 0o10644, 0, 0, 0)),
        (TLINK, struct.pack("<II", 0, 1) + name),
        (TUNLINKAT, struct.pack("<I", 0) + name + struct.pack("<I", 0)),
        (TRENAMEAT, struct.pack("<I", 0) + s("hello.txt") + struct.pack("<I", 0) + name),
    ):
        assert p9.err(t, body) == errno.ENAMETOOLONG, t
    assert sorted(os.listdir(share)) == ["hello.txt", "sub"]


# -- the server's memory --------------------------------------------------------------------------------


def test_closing_a_machine_frees_its_9p_server(tree):
    """The server's fid table (~1.3 MiB) goes with the machine: made and closed over and over, a machine with a
    share keeps next to nothing (under pytest, the artifact recorder keeps ~800 bytes of each machine's log)."""
    share, _ = tree
    growth = heap_growth(lambda: vmmpy.Machine(share=[(share, "s")]).close())
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 16384, f"{growth:.0f} bytes kept per machine"


# -- the descriptor budget (child processes) ------------------------------------------------------------

CHILD = r"""
import errno, resource, sys
nofile = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
sys.path.insert(0, sys.argv[1])
import vmmpy
from tests.test_p9 import P9, P9Error
share = sys.argv[2]

def tried(fn, *args):
    try:
        fn(*args)
        return "ok"
    except P9Error as e:
        return errno.errorcode[e.errno]

def client(m):
    c = P9(m)
    c.version()
    print("attach", tried(c.attach, 0))
    return c
"""


def child(script: str, share, nofile: int) -> list[str]:
    """CHILD + script in a fresh interpreter with RLIMIT_NOFILE at nofile (soft and hard): its output lines."""
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < nofile:
        pytest.skip(f"the hard open-file limit is below {nofile}")
    r = subprocess.run([sys.executable, "-c", CHILD + script, HERE, str(share), str(nofile)],
                       capture_output=True, text=True, timeout=120, cwd=HERE)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.splitlines()


def test_an_open_file_needs_a_descriptor_of_the_budget_left(tree):
    """With RLIMIT_NOFILE 64 the budget is 16: the root fid's 2 and seven walked fids' 14 spend it, so the
    eighth walk and then any Tlopen (one descriptor more) fail with ENFILE; a clunk gives 2 back, enough for two
    open files."""
    share, _ = tree
    script = """
with vmmpy.Machine(share=[(share, "s")]) as m:
    c = client(m)
    print("walk", *[tried(c.walk, 0, fid, "hello.txt") for fid in range(1, 9)])
    print("lopen", tried(c.lopen, 1))
    c.clunk(7)
    print("lopen", *[tried(c.lopen, fid) for fid in (1, 2, 3)])
    print("read", c.read(1), c.read(2))
"""
    assert child(script, share, 64) == [
        "attach ok",
        "walk " + "ok " * 7 + "ENFILE",
        "lopen ENFILE",
        "lopen ok ok ENFILE",
        "read b'hello, 9p\\n' b'hello, 9p\\n'",
    ]


def test_every_end_of_a_session_gives_its_descriptors_back(tree):
    """A session that ends with fids walked and a file open gives the budget all of them back, whichever way
    it ends: a new Tversion, a device reset (a new driver), the machine's close. Budget 16: the root fid 2, an
    open file 3, then five walked fids."""
    share, _ = tree
    script = """
def fill(c):
    print("open", tried(c.walk, 0, 1, "hello.txt"), tried(c.lopen, 1))
    n = 0
    while tried(c.walk, 0, 2 + n, "sub") == "ok":
        n += 1
    print("walked", n)
with vmmpy.Machine(share=[(share, "s")]) as m:
    c = client(m)
    fill(c)
    c.version()
    print("attach", tried(c.attach, 0))
    fill(c)
    c = client(m)
    fill(c)
with vmmpy.Machine(share=[(share, "s")]) as m:
    fill(client(m))
"""
    assert child(script, share, 64) == ["attach ok", "open ok ok", "walked 5"] * 4


# -- the root of the share against a directory with its inode number on another device -----------------

MOUNTS = r"""
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import vmmpy
from tests.test_p9 import P9
base = sys.argv[2]
roots = [os.path.join(base, name) for name in ("a", "b")]
for r in roots:
    os.mkdir(r)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", r], check=True)
roots.sort(key=lambda r: os.stat(r).st_dev)
pairs = [(roots[0], roots[1]), (roots[1], roots[0])]  # (share, the tmpfs bound inside it as in/)
for share, _ in pairs:
    os.mkdir(os.path.join(share, "in"))
    open(os.path.join(share, "top-of-" + os.path.basename(share)), "w").close()  # in this root only
for share, inner in pairs:  # a plain bind: each root without the other's mount inside it
    subprocess.run(["mount", "--bind", inner, os.path.join(share, "in")], check=True)
for share, _ in pairs:
    st, inner = os.stat(share), os.stat(os.path.join(share, "in"))
    print("same inode", inner.st_ino == st.st_ino, "lower device", inner.st_dev < st.st_dev)
    top = "top-of-" + os.path.basename(share)
    with vmmpy.Machine(share=[(share, "s")]) as m:
        c = P9(m)
        c.version()
        c.attach(0)
        names = {st.st_ino: "root", os.stat(os.path.join(share, top)).st_ino: "top"}
        print(*[(hex(q[0]), q[1], names.get(q[2], q[2])) for q in c.walk(0, 1, "in", "..", top)])
"""


def test_dotdot_leaves_a_directory_with_the_roots_inode_number_on_another_device(tmp_path):
    """The share's root is its (device, inode) pair (p9_fid.c p9_is_root): a tmpfs root has inode 1, so a tmpfs
    mounted inside a tmpfs share has the share root's inode number on another device, and ".." from it goes up
    to the share (the host's ".." crosses the mount) instead of staying as at the root. Both ways round: the
    inner device numbered below and above the share's. As root, in a mount namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs root, unshare(1) and mount(8)")
    cmd = ["unshare", "--mount", "--propagation", "private"]
    if subprocess.run([*cmd, "true"], capture_output=True).returncode:
        pytest.skip("no mount namespace here (CAP_SYS_ADMIN)")
    r = subprocess.run([*cmd, sys.executable, "-c", MOUNTS, HERE, str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=HERE)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    walk = "('0x80', 0, 'root') ('0x80', 0, 'root') ('0x0', 0, 'top')"  # in/ (inode 1 too), the share, the file
    assert r.stdout.splitlines() == [
        "same inode True lower device False",
        walk,
        "same inode True lower device True",
        walk,
    ]


# -- host events a shim stages (tests/conftest.py run_with_shim) ----------------------------------------

# closedir(3) of a stream on a directory below $SHARE: right after it, /dev/null is opened on the number it
# closed (as another thread's open() would take the lowest free number), and that number goes to $REUSED_LOG
CLOSEDIR_REUSE_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int closedir(DIR *d)
{
    const char *share = getenv("SHARE");
    char link[64], path[4096];
    int fd = dirfd(d), r, n;
    ssize_t len;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof path - 1);
    r = ((int (*)(DIR *))dlsym(RTLD_NEXT, "closedir"))(d);
    if (len > 0 && share && !strncmp(path, share, strlen(share))) {
        FILE *f;
        if ((n = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
        if ((f = fopen(getenv("REUSED_LOG"), "a"))) {
            fprintf(f, "%d\n", fd);
            fclose(f);
        }
    }
    return r;
}
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_read_directory_is_closed_once(tree, tmp_path):
    """A directory fid that was read owns its descriptor through its directory stream: its clunk (and a new
    session's Tversion) closes the stream and with it the descriptor, once. A second close() of that number
    would close what the process opened there in the meantime (another thread's file): the shim opens
    /dev/null on the number as soon as closedir() has freed it, and that stays open."""
    from .conftest import run_with_shim

    share, _ = tree
    log = tmp_path / "reused.log"
    script = f"""
import os, vmmpy
from tests.test_p9 import P9
def reused():
    with open({str(log)!r}) as f:
        fd = int(f.read().split()[-1])
    return os.readlink(f"/proc/self/fd/{{fd}}") if os.path.exists(f"/proc/self/fd/{{fd}}") else "closed"
with vmmpy.Machine(share=[({str(share)!r}, "s")]) as m:
    c = P9(m)
    c.version()
    c.attach(0)
    for end in ("clunk", "version"):
        c.walk(0, 1, "sub")
        c.lopen(1)
        c.listdir(1)
        if end == "clunk":
            c.clunk(1)
        else:
            c.version()
        print(end, reused())
"""
    r = run_with_shim(tmp_path, CLOSEDIR_REUSE_C, script, SHARE=str(share), REUSED_LOG=str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["clunk /dev/null", "version /dev/null"]


# fstatat(2) of a name that starts with $VANISH fails with ENOENT: the host removed it the moment after it was made
VANISH_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
int fstatat(int dirfd, const char *name, struct stat *st, int flags)
{
    const char *vanish = getenv("VANISH");
    if (vanish && !strncmp(name, vanish, strlen(vanish))) {
        errno = ENOENT;
        return -1;
    }
    return ((int (*)(int, const char *, struct stat *, int))dlsym(RTLD_NEXT, "fstatat"))(dirfd, name, st, flags);
}
"""


def test_a_name_gone_before_its_qid_is_read_answers_enoent(tree, tmp_path):
    """Tmkdir, Tsymlink and Tmknod answer the qid of what the name is once made (a look at it on the host). If
    the host removed it in between (a shim's fstatat fails for it), the answer is Rlerror ENOENT, never a qid
    read from memory that no stat filled."""
    from .conftest import run_with_shim

    share, _ = tree
    script = f"""
import errno, struct, vmmpy
from tests.test_p9 import P9, TMKDIR, TMKNOD, TSYMLINK, s
with vmmpy.Machine(share=[({str(share)!r}, "s")]) as m:
    c = P9(m)
    c.version()
    c.attach(0)
    for t, name, rest in ((TMKDIR, "gone-dir", struct.pack("<II", 0o755, 0)),
                          (TSYMLINK, "gone-link", s("t") + struct.pack("<I", 0)),
                          (TMKNOD, "gone-fifo", struct.pack("<IIII", 0o10644, 0, 0, 0))):
        print(name, errno.errorcode[c.err(t, struct.pack("<I", 0) + s(name) + rest)])
"""
    r = run_with_shim(tmp_path, VANISH_C, script, VANISH="gone-")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["gone-dir ENOENT", "gone-link ENOENT", "gone-fifo ENOENT"]
    assert sorted(os.listdir(share)) == ["gone-dir", "gone-fifo", "gone-link", "hello.txt", "sub"]  # made
