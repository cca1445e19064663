"""Tier 1: the virtio-9p device (9P2000.L, csrc/dev/p9_server.c) driven over virtio-mmio with hand-made messages.

Confinement is the point of most of these: nothing a guest sends may reach outside the shared directory.
"""

from __future__ import annotations

import errno
import os
import resource
import struct
import subprocess
import sys

import pytest

import vmmpy
from tests.virtio_driver import ID_9P, VirtioMMIO, find_devices

P9_ID = ID_9P
F_MOUNT_TAG = 1 << 0
NOTAG, NOFID = 0xFFFF, 0xFFFFFFFF
MAX_MSIZE = 512 * 1024

# 9P2000.L message types (T; R = T + 1)
RLERROR = 7
TSTATFS, TLOPEN, TLCREATE, TSYMLINK, TMKNOD, TRENAME, TREADLINK, TGETATTR, TSETATTR = 8, 12, 14, 16, 18, 20, 22, 24, 26
TXATTRWALK, TXATTRCREATE, TREADDIR, TFSYNC, TLOCK, TGETLOCK = 30, 32, 40, 50, 52, 54
TLINK, TMKDIR, TRENAMEAT, TUNLINKAT = 70, 72, 74, 76
TVERSION, TAUTH, TATTACH, TFLUSH, TWALK, TOPEN, TREAD, TWRITE, TCLUNK, TREMOVE = (
    100,
    102,
    104,
    108,
    110,
    112,
    116,
    118,
    120,
    122,
)
O_RDONLY, O_WRONLY, O_RDWR, O_TRUNC = 0, 1, 2, 0o1000  # Linux dotl flags
QTDIR, QTSYMLINK = 0x80, 0x02


def s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<H", len(b)) + b


def msg(type_: int, body: bytes, tag: int = 1) -> bytes:
    return struct.pack("<IBH", 7 + len(body), type_, tag) + body


def qid(data: bytes, off: int = 0) -> tuple[int, int, int]:
    return struct.unpack_from("<BIQ", data, off)


class P9Error(Exception):
    def __init__(self, code: int):
        super().__init__(f"Rlerror {code} ({errno.errorcode.get(code, '?')})")
        self.errno = code


class P9:
    """A 9P2000.L client over the device's request queue (one request at a time)."""

    def __init__(self, m: vmmpy.Machine, index: int = 0):
        slots = [sl for sl, dev_id in find_devices(m) if dev_id == P9_ID]
        self.m = m
        self.dev = VirtioMMIO(m, slots[index])
        (self.q,) = self.dev.init(queues=1)
        self.tag = 0

    def mount_tag(self) -> bytes:
        n = self.dev.config_read(0, 2)
        return bytes(self.dev.config_read(2 + i, 1) for i in range(n))

    def raw(self, out: list[bytes], resp: list[int] | int = 8192) -> bytes:
        head = self.q.add(out, [resp] if isinstance(resp, int) else resp)
        self.q.notify()
        used = self.q.get_used()
        assert [u[0] for u in used] == [head], "each request is answered at once"
        data = self.q.chain_data(head)[: used[0][1]]
        if data:
            assert struct.unpack_from("<I", data)[0] == len(data), "size field == bytes written"
        return data

    def call(self, type_: int, body: bytes, resp: int = 8192) -> bytes:
        self.tag = (self.tag + 1) % 0xFFFF
        data = self.raw([msg(type_, body, self.tag)], resp)
        size, rtype, tag = struct.unpack_from("<IBH", data)
        assert tag == self.tag
        if rtype == RLERROR:
            raise P9Error(struct.unpack_from("<I", data, 7)[0])
        assert rtype == type_ + 1, (type_, rtype)
        return data[7:]

    def err(self, type_: int, body: bytes) -> int:
        with pytest.raises(P9Error) as ei:
            self.call(type_, body)
        return ei.value.errno

    # -- the usual requests ---------------------------------------------------
    def version(self, msize: int = MAX_MSIZE, version: str = "9P2000.L") -> tuple[int, str]:
        r = self.call(TVERSION, struct.pack("<I", msize) + s(version))
        (n,) = struct.unpack_from("<H", r, 4)
        return struct.unpack_from("<I", r)[0], r[6 : 6 + n].decode()

    def attach(self, fid: int = 0) -> tuple:
        return qid(self.call(TATTACH, struct.pack("<II", fid, NOFID) + s("root") + s("") + struct.pack("<I", 0)))

    def walk(self, fid: int, newfid: int, *names: str | bytes) -> list[tuple]:
        r = self.call(TWALK, struct.pack("<IIH", fid, newfid, len(names)) + b"".join(s(n) for n in names))
        (n,) = struct.unpack_from("<H", r)
        return [qid(r, 2 + 13 * i) for i in range(n)]

    def blocked(self, fid: int, newfid: int, *names: str) -> list[tuple]:
        """A walk that must stop early: a partial Rwalk (or Rlerror), and newfid is not created."""
        try:
            qs = self.walk(fid, newfid, *names)
        except P9Error:
            qs = []
        assert len(qs) < len(names), names
        assert self.err(TCLUNK, struct.pack("<I", newfid)) == errno.EBADF
        return qs

    def lopen(self, fid: int, flags: int = O_RDONLY) -> tuple:
        return qid(self.call(TLOPEN, struct.pack("<II", fid, flags)))

    def lcreate(self, fid: int, name: str, flags: int = O_RDWR, mode: int = 0o644) -> tuple:
        return qid(self.call(TLCREATE, struct.pack("<I", fid) + s(name) + struct.pack("<III", flags, mode, 0)))

    def read(self, fid: int, off: int = 0, count: int = 4096) -> bytes:
        r = self.call(TREAD, struct.pack("<IQI", fid, off, count), resp=count + 64)
        (n,) = struct.unpack_from("<I", r)
        return r[4 : 4 + n]

    def write(self, fid: int, data: bytes, off: int = 0) -> int:
        return struct.unpack("<I", self.call(TWRITE, struct.pack("<IQI", fid, off, len(data)) + data))[0]

    def clunk(self, fid: int) -> None:
        self.call(TCLUNK, struct.pack("<I", fid))

    def getattr(self, fid: int) -> dict:
        r = self.call(TGETATTR, struct.pack("<IQ", fid, 0x3FFF))
        (valid,) = struct.unpack_from("<Q", r)
        mode, uid, gid, nlink, rdev, size = struct.unpack_from("<IIIQQQ", r, 8 + 13)
        return {"valid": valid, "qid": qid(r, 8), "mode": mode, "nlink": nlink, "size": size}

    def readdir(self, fid: int, off: int = 0, count: int = 4096) -> list[tuple[str, int]]:
        r = self.call(TREADDIR, struct.pack("<IQI", fid, off, count))
        (n,) = struct.unpack_from("<I", r)
        out, at = [], 4
        while at < 4 + n:
            nxt, _t, ln = struct.unpack_from("<QBH", r, at + 13)
            out.append((r[at + 24 : at + 24 + ln].decode(), nxt))
            at += 24 + ln
        assert at == 4 + n
        return out

    def listdir(self, fid: int, count: int = 4096) -> list[str]:
        names, off = [], 0
        while True:
            ents = self.readdir(fid, off, count)
            if not ents:
                return names
            names += [n for n, _ in ents]
            off = ents[-1][1]

    def mkdir(self, fid: int, name: str, mode: int = 0o755) -> tuple:
        return qid(self.call(TMKDIR, struct.pack("<I", fid) + s(name) + struct.pack("<II", mode, 0)))

    def symlink(self, fid: int, name: str, target: str) -> tuple:
        return qid(self.call(TSYMLINK, struct.pack("<I", fid) + s(name) + s(target) + struct.pack("<I", 0)))

    def readlink(self, fid: int) -> str:
        r = self.call(TREADLINK, struct.pack("<I", fid))
        return r[2:].decode()

    def unlinkat(self, fid: int, name: str, flags: int = 0) -> None:
        self.call(TUNLINKAT, struct.pack("<I", fid) + s(name) + struct.pack("<I", flags))

    def renameat(self, ofid: int, oname: str, nfid: int, nname: str) -> None:
        self.call(TRENAMEAT, struct.pack("<I", ofid) + s(oname) + struct.pack("<I", nfid) + s(nname))


@pytest.fixture
def tree(tmp_path):
    """tmp/share (the share: hello.txt, sub/inner.txt) next to tmp/outside (secret.txt)."""
    share, outside = tmp_path / "share", tmp_path / "outside"
    share.mkdir()
    outside.mkdir()
    (share / "hello.txt").write_bytes(b"hello, 9p\n")
    (share / "sub").mkdir()
    (share / "sub" / "inner.txt").write_bytes(b"inner")
    (outside / "secret.txt").write_bytes(b"SECRET")
    (tmp_path / "secret.txt").write_bytes(b"SECRET")
    return share, outside


@pytest.fixture
def p9(tree):
    share, _ = tree
    with vmmpy.Machine(share=[(share, "hostshare")]) as m:
        c = P9(m)
        assert c.version() == (MAX_MSIZE, "9P2000.L")
        c.attach(0)
        yield c


# -- the device -------------------------------------------------------------------------------


def test_device_id_features_and_mount_tag(tree):
    share, _ = tree
    with vmmpy.Machine(share=[(share, "hostshare"), (share, "second", True)]) as m:
        assert [d for _, d in find_devices(m)] == [P9_ID, P9_ID]
        a, b = P9(m, 0), P9(m, 1)
        assert a.dev.device_features() & F_MOUNT_TAG
        assert a.mount_tag() == b"hostshare" and b.mount_tag() == b"second"


def test_machine_share_arguments(tmp_path):
    with vmmpy.Machine(share=str(tmp_path)) as m:
        assert P9(m).mount_tag() == b"share"
    with pytest.raises(FileNotFoundError, match="no such directory"):
        vmmpy.Machine(share=str(tmp_path / "missing"))
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(vmmpy.errors.InvalidArgument, match="not a directory"):
        vmmpy.Machine(share=str(tmp_path / "f"))
    for bad in ("", "a" * 65, "has space"):
        with pytest.raises(vmmpy.errors.InvalidArgument, match="tag"):
            vmmpy.Machine(share=[(tmp_path, bad)])


def test_version_negotiation(tree):
    share, _ = tree
    with vmmpy.Machine(share=share) as m:
        c = P9(m)
        assert c.version(1 << 20) == (MAX_MSIZE, "9P2000.L")  # clamped to ours
        assert c.version(8192) == (8192, "9P2000.L")
        assert c.version(8192, "9P2000") == (8192, "unknown")
        assert c.version(8192, "9P2000.u") == (8192, "unknown")
        assert c.err(TVERSION, struct.pack("<I", 100) + s("9P2000.L")) == errno.EINVAL


# -- round trips ------------------------------------------------------------------------------


def test_walk_open_read_write_clunk(p9, tree):
    share, _ = tree
    root = p9.walk(0, 1)  # clone
    assert root == []
    (q,) = p9.walk(0, 2, "hello.txt")
    assert q == (0, 0, os.stat(share / "hello.txt").st_ino)  # QTFILE, version 0 (not tracked), the inode
    assert p9.lopen(2) == q
    assert p9.read(2) == b"hello, 9p\n"
    assert p9.read(2, 7, 2) == b"9p"
    assert p9.read(2, 100) == b""
    assert p9.getattr(2)["size"] == 10
    p9.clunk(2)
    assert p9.err(TCLUNK, struct.pack("<I", 2)) == errno.EBADF

    qs = p9.walk(0, 3, "sub", "inner.txt")
    assert qs[0][0] == QTDIR and len(qs) == 2
    p9.lcreate(1, "new.txt")  # fid 1 (the root clone) becomes the new file, open read-write
    assert p9.write(1, b"0123456789") == 10
    assert p9.write(1, b"AB", 3) == 2
    p9.call(TFSYNC, struct.pack("<II", 1, 0))
    assert p9.read(1) == b"012AB56789"
    p9.clunk(1)
    assert (share / "new.txt").read_bytes() == b"012AB56789"


def host_open_flags(path) -> list[int]:
    """The flags of this process's descriptors open on `path` (/proc/self/fdinfo: the 9p server is ours)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    out.append(int(next(ln for ln in f if ln.startswith("flags:")).split()[1], 8))
        except (FileNotFoundError, StopIteration):
            continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs /proc/self/fdinfo")
def test_lopen_flags_reach_the_host_file(p9, tree):
    """Tlopen's dotl flags become the host open's: O_SYNC (04000000), O_DSYNC (010000), O_APPEND."""
    share, _ = tree
    cases = [(0o4000000, os.O_SYNC), (0o10000, os.O_DSYNC), (0o2000, os.O_APPEND), (0, 0)]
    for fid, (dotl, host) in enumerate(cases, 1):
        p9.walk(0, fid, "hello.txt")
        p9.lopen(fid, O_RDWR | dotl)
        (flags,) = [f for f in host_open_flags(share / "hello.txt") if not f & os.O_PATH]  # the walk's O_PATH aside
        assert flags & (os.O_SYNC | os.O_DSYNC | os.O_APPEND) == host, (oct(dotl), oct(flags))
        p9.clunk(fid)


def test_lopen_truncates_only_when_asked_and_o_directory_needs_a_directory(p9, tree):
    share, _ = tree
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1, O_RDWR)  # no O_TRUNC: the contents stay
    assert p9.read(1) == b"hello, 9p\n"
    p9.clunk(1)
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1, O_WRONLY | O_TRUNC)
    p9.clunk(1)
    assert (share / "hello.txt").read_bytes() == b""
    p9.walk(0, 1, "hello.txt")  # O_DIRECTORY (0200000) on a file: the host's open refuses it
    assert p9.err(TLOPEN, struct.pack("<II", 1, O_RDONLY | 0o200000)) == errno.ENOTDIR
    p9.walk(0, 2, "sub")
    p9.lopen(2, O_RDONLY | 0o200000)
    assert {".", "..", "inner.txt"} <= set(p9.listdir(2))


FD0_SCRIPT = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import vmmpy
from tests.test_p9 import P9
with vmmpy.Machine(share=[(sys.argv[2], "s")]) as m:
    c = P9(m)
    c.version()
    c.attach(0)
    c.walk(0, 1, "hello.txt")
    os.close(0)  # a daemon's closed stdin: the open below gets descriptor 0
    c.lopen(1)
    print(os.readlink("/proc/self/fd/0") == os.path.join(sys.argv[2], "hello.txt"), c.read(1))
    c.clunk(1)
    print(os.path.exists("/proc/self/fd/0"))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_an_open_file_on_descriptor_zero_is_closed_by_clunk(tree):
    share, _ = tree
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", FD0_SCRIPT, root, str(share)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["True b'hello, 9p\\n'", "False"]


FD_BUDGET_SCRIPT = r"""
import os, resource, sys
soft, hard = int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
sys.path.insert(0, sys.argv[1])
import vmmpy
from tests.test_p9 import P9, P9Error
with vmmpy.Machine(share=[(sys.argv[2], "s")]) as m:
    c = P9(m)
    c.version()
    c.attach(0)
    walked = opened = 0
    try:
        while True:
            c.walk(0, 1 + walked, "hello.txt")
            walked += 1
    except P9Error as e:
        assert "ENFILE" in str(e), e
    for i in range(1, walked + 1):
        c.clunk(i)
    c.walk(0, 1, "hello.txt")
    try:
        while True:
            c.walk(0, 2 + opened, "hello.txt")
            c.lopen(2 + opened)
            opened += 1
    except P9Error as e:
        assert "ENFILE" in str(e), e
    for i in range(1, opened + 2):
        c.clunk(i)
    try:  # the fid the budget stopped: walked but not opened, or not made at all
        c.clunk(opened + 2)
    except P9Error:
        pass
    # a file opened on descriptor 0 (a closed stdin) gives its descriptor back to the budget when clunked
    os.close(0)
    for i in range(3 * walked):
        c.walk(0, 1, "hello.txt")
        c.lopen(1)
        assert os.path.exists("/proc/self/fd/0")
        c.clunk(1)
    print(walked, opened, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("soft, hard", [(64, 64), (600, 600), (64, 600)])
def test_host_descriptor_budget_follows_the_process_limit(tree, soft, hard):
    """9p's host descriptors (p9_fid.c) come from a budget of half what the open-file limit leaves above 256
    for libvmm and the application ((limit - 256) / 2), or a quarter of a limit of 512 or less; the soft limit
    is first raised to the hard one. Each fid holds 2 (its node and directory), an open file 1 more, and the
    attach's root fid 2: so 64 gives 16, 7 walked fids or 4 open files; 600 gives 172, 85 or 56. Run in a
    fresh process (the budget is set once per process), which also checks that a file opened on descriptor 0
    gives it back when clunked (three times the budget's worth of opens and clunks)."""
    share, _ = tree
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        pytest.skip(f"the hard open-file limit is below {hard}")
    r = subprocess.run([sys.executable, "-c", FD_BUDGET_SCRIPT, root, str(share), str(soft), str(hard)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    budget = (hard - 256) // 2 if hard > 512 else hard // 4
    assert r.stdout.split() == [str((budget - 2) // 2), str((budget - 4) // 3), str(hard)], r.stdout


def test_large_read_and_write_in_pieces(p9, tree):
    """Linux's zero-copy path: the header and the payload in separate buffers, both ways."""
    share, _ = tree
    data = os.urandom(200_000)
    p9.walk(0, 1)
    p9.lcreate(1, "big.bin")
    hdr = struct.pack("<IBHIQI", 7 + 16 + len(data), TWRITE, 9, 1, 0, len(data))
    r = p9.raw([hdr, data[:100_000], data[100_000:]], [7, 4])
    assert r == struct.pack("<IBHI", 11, TWRITE + 1, 9, len(data))
    r = p9.raw([msg(TREAD, struct.pack("<IQI", 1, 0, len(data)), 10)], [11, 150_000, 60_000])
    assert struct.unpack_from("<IBHI", r) == (11 + len(data), TREAD + 1, 10, len(data))
    assert r[11:] == data
    assert (share / "big.bin").read_bytes() == data


def test_directories_links_and_renames(p9, tree):
    share, _ = tree
    p9.walk(0, 1)
    assert p9.mkdir(0, "d")[0] == QTDIR
    assert p9.symlink(0, "ln", "hello.txt")[0] == QTSYMLINK
    assert os.readlink(share / "ln") == "hello.txt"
    (q,) = p9.walk(0, 2, "ln")
    assert q[0] == QTSYMLINK
    assert p9.readlink(2) == "hello.txt"
    assert p9.err(TLOPEN, struct.pack("<II", 2, O_RDONLY)) == errno.ELOOP  # never followed on the host
    p9.walk(0, 3, "hello.txt")
    p9.walk(0, 4, "d")
    p9.call(TLINK, struct.pack("<II", 4, 3) + s("hard"))
    assert os.stat(share / "d" / "hard").st_ino == os.stat(share / "hello.txt").st_ino
    p9.renameat(4, "hard", 0, "moved")
    assert (share / "moved").read_bytes() == b"hello, 9p\n"
    p9.unlinkat(0, "moved")
    p9.unlinkat(0, "ln")
    assert p9.err(TUNLINKAT, struct.pack("<I", 0) + s("sub") + struct.pack("<I", 0)) == errno.EISDIR
    p9.unlinkat(0, "d", 0x200)
    assert sorted(os.listdir(share)) == ["hello.txt", "sub"]
    p9.lopen(1)
    assert sorted(p9.listdir(1)) == [".", "..", "hello.txt", "sub"]
    # setattr: mode, size
    p9.call(TSETATTR, struct.pack("<IIIIIQQQQQ", 3, 0x1 | 0x8, 0o600, 0, 0, 5, 0, 0, 0, 0))
    st = os.stat(share / "hello.txt")
    assert st.st_mode & 0o777 == 0o600 and st.st_size == 5
    r = p9.call(TSTATFS, struct.pack("<I", 0))
    assert len(r) == 4 + 4 + 8 * 6 + 4
    p9.call(TREMOVE, struct.pack("<I", 3))
    assert not (share / "hello.txt").exists()
    assert p9.err(TCLUNK, struct.pack("<I", 3)) == errno.EBADF  # Tremove clunks


def test_readdir_in_small_pieces(p9, tree):
    share, _ = tree
    names = {f"file-{i:03d}-" + "x" * 40 for i in range(150)}
    for n in names:
        (share / "sub" / n).write_bytes(b"")
    p9.walk(0, 1, "sub")
    p9.lopen(1)
    got = p9.listdir(1, count=300)  # a few entries per reply
    assert len(got) == len(set(got)) == 153
    assert set(got) == names | {".", "..", "inner.txt"}


def test_locks_xattrs_flush_and_unknown_messages(p9):
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1)
    r = p9.call(TLOCK, struct.pack("<IBIQQI", 1, 1, 0, 0, 0, 42) + s("client"))
    assert r == b"\x00"
    r = p9.call(TGETLOCK, struct.pack("<IBQQI", 1, 1, 0, 10, 42) + s("client"))
    assert r[0] == 2  # unlocked
    assert p9.err(TXATTRWALK, struct.pack("<II", 1, 5) + s("user.x")) == errno.EOPNOTSUPP
    p9.call(TFLUSH, struct.pack("<H", 3))
    assert p9.err(TAUTH, struct.pack("<I", 9) + s("u") + s("") + struct.pack("<I", 0)) == errno.EOPNOTSUPP
    assert p9.err(TOPEN, struct.pack("<IB", 1, 0)) == errno.EOPNOTSUPP  # 9P2000 legacy
    assert p9.err(TVERSION + 1, b"") == errno.EOPNOTSUPP  # an R-message


# -- malformed messages and bad fids ----------------------------------------------------------


def lerror(data: bytes) -> tuple[int, int]:
    size, t, tag, e = struct.unpack("<IBHI", data)
    assert size == 11 and t == RLERROR
    return tag, e


def test_truncated_and_oversized_messages(p9):
    assert lerror(p9.raw([b"\x05\x00"])) == (NOTAG, errno.EPROTO)
    assert p9.raw([b"\x07\x00\x00\x00"], [1]) == b""  # no room for any answer
    # the size field claims more than the chain holds
    m = msg(TWALK, struct.pack("<IIH", 0, 1, 1) + s("hello.txt"), 5)
    assert lerror(p9.raw([m[:-3]])) == (5, errno.EPROTO)
    assert lerror(p9.raw([struct.pack("<IBH", 3, TCLUNK, 6)])) == (6, errno.EPROTO)
    # fields cut short inside a consistent size field
    for body in (b"", struct.pack("<I", 0), struct.pack("<IIH", 0, 1, 2) + s("a") + b"\x09\x00ab"):
        assert lerror(p9.raw([msg(TWALK, body, 7)])) == (7, errno.EPROTO)
    assert lerror(p9.raw([msg(TWRITE, struct.pack("<IQI", 0, 0, 1000) + b"short", 8)])) == (8, errno.EPROTO)
    assert lerror(p9.raw([msg(TREAD, b"\x00" * 15, 8)])) == (8, errno.EPROTO)
    # every message type cut at every length: Rlerror, never a crash
    full = {
        TWALK: struct.pack("<IIH", 0, 1, 1) + s("sub"),
        TLCREATE: struct.pack("<I", 0) + s("x") + struct.pack("<III", 2, 0o644, 0),
        TSETATTR: struct.pack("<IIIIIQQQQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        TRENAMEAT: struct.pack("<I", 0) + s("a") + struct.pack("<I", 0) + s("b"),
        TGETLOCK: struct.pack("<IBQQI", 0, 1, 0, 0, 1) + s("c"),
        TSYMLINK: struct.pack("<I", 0) + s("a") + s("b") + struct.pack("<I", 0),
    }
    for t, body in full.items():
        for n in range(len(body)):
            assert lerror(p9.raw([msg(t, body[:n], 11)])) == (11, errno.EPROTO), (t, n)
    # larger than the negotiated msize
    assert p9.version(4096) == (4096, "9P2000.L")
    p9.attach(0)
    big = msg(TWRITE, struct.pack("<IQI", 0, 0, 5000) + bytes(5000), 12)
    assert lerror(p9.raw([big])) == (12, errno.EMSGSIZE)
    # a reply never exceeds msize even if the buffer allows it
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1)
    r = p9.raw([msg(TREAD, struct.pack("<IQI", 1, 0, 100000), 13)], 100000)
    assert len(r) == 11 + 10


def test_bad_fids(p9):
    assert p9.err(TCLUNK, struct.pack("<I", 77)) == errno.EBADF
    assert p9.err(TWALK, struct.pack("<IIH", 77, 78, 0)) == errno.EBADF
    assert p9.err(TREAD, struct.pack("<IQI", 0, 0, 10)) == errno.EBADF  # not open
    assert p9.err(TWRITE, struct.pack("<IQI", 0, 0, 1) + b"x") == errno.EBADF
    assert p9.err(TATTACH, struct.pack("<II", 0, NOFID) + s("") + s("") + struct.pack("<I", 0)) == errno.EEXIST
    p9.walk(0, 1)
    assert p9.err(TWALK, struct.pack("<IIH", 0, 1, 0)) == errno.EEXIST  # newfid in use
    assert p9.err(TGETATTR, struct.pack("<IQ", 12345, 0)) == errno.EBADF
    # a failing first component creates nothing; a later one gives a partial Rwalk
    assert p9.err(TWALK, struct.pack("<IIH", 0, 2, 1) + s("nope")) == errno.ENOENT
    assert len(p9.walk(0, 2, "sub", "nope")) == 1
    assert p9.err(TCLUNK, struct.pack("<I", 2)) == errno.EBADF
    p9.lopen(1)
    assert p9.err(TLOPEN, struct.pack("<II", 1, 0)) == errno.EBADF  # already open
    # Tversion starts a new session: every fid is gone
    p9.version()
    assert p9.err(TCLUNK, struct.pack("<I", 0)) == errno.EBADF


def test_device_reset_drops_fids(tree):
    share, _ = tree
    with vmmpy.Machine(share=share) as m:
        c = P9(m)
        c.version()
        c.attach(0)
        c.dev.reset()
        c = P9(m)
        assert c.err(TCLUNK, struct.pack("<I", 0)) == errno.EBADF


def test_device_reset_forgets_the_negotiated_msize(tree):
    """A reset ends the session: the msize a Tversion negotiated is forgotten with the fids, so until the next
    Tversion the server takes (and answers) messages up to its own maximum again, not the old session's limit."""
    share, _ = tree
    with vmmpy.Machine(share=share) as m:
        c = P9(m)
        assert c.version(4096) == (4096, "9P2000.L")
        c.attach(0)
        c.walk(0, 1)
        c.lcreate(1, "big.bin")
        assert lerror(c.raw([msg(TWRITE, struct.pack("<IQI", 1, 0, 5000) + bytes(5000), 9)])) == (9, errno.EMSGSIZE)
        c.dev.reset()
        c = P9(m)
        c.attach(0)
        c.walk(0, 1, "big.bin")
        c.lopen(1, O_RDWR)
        data = bytes(range(256)) * 24  # 6144 bytes: more than the old session's 4096
        assert c.write(1, data) == len(data)
        assert c.read(1, 0, 8000) == data  # a reply larger than 4096 too
        assert (share / "big.bin").read_bytes() == data


def test_fid_table_limit(p9):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and (hard - 256) // 2 < 2 * 4096:
        pytest.skip(f"RLIMIT_NOFILE {hard}: the descriptor budget, not the fid table, is the limit here")
    for i in range(1, 4096):
        p9.walk(0, i)
    assert p9.err(TWALK, struct.pack("<IIH", 0, 5000, 0)) == errno.ENFILE
    p9.clunk(17)
    p9.walk(0, 5000)


# -- confinement --------------------------------------------------------------------------------


def test_bad_names(p9):
    for bad, e in (
        ("a/b", errno.EINVAL),
        ("/etc", errno.EINVAL),
        ("", errno.EINVAL),
        (b"a\x00b", errno.EINVAL),
        ("x" * 256, errno.ENAMETOOLONG),
    ):
        assert p9.err(TWALK, struct.pack("<IIH", 0, 1, 1) + s(bad)) == e, bad
        assert p9.err(TMKDIR, struct.pack("<I", 0) + s(bad) + struct.pack("<II", 0o755, 0)) == e, bad
    for dots in (".", ".."):
        assert p9.err(TMKDIR, struct.pack("<I", 0) + s(dots) + struct.pack("<II", 0o755, 0)) == errno.EINVAL
        assert p9.err(TUNLINKAT, struct.pack("<I", 0) + s(dots) + struct.pack("<I", 0x200)) == errno.EINVAL
        assert p9.err(TRENAMEAT, struct.pack("<I", 0) + s("sub") + struct.pack("<I", 0) + s(dots)) == errno.EINVAL
    assert p9.err(TWALK, struct.pack("<IIH", 0, 1, 17) + s("sub") * 17) == errno.EINVAL
    assert len(p9.walk(0, 1, *(["sub", ".."] * 8))) == 16  # 16 names is fine
    # a name of NAME_MAX (255) bytes is a name: the walk reaches the host (no such file), the mkdir makes it
    assert p9.err(TWALK, struct.pack("<IIH", 0, 2, 1) + s("y" * 255)) == errno.ENOENT
    p9.call(TMKDIR, struct.pack("<I", 0) + s("y" * 255) + struct.pack("<II", 0o755, 0))
    assert len(p9.walk(0, 2, "y" * 255)) == 1


def test_dotdot_below_the_share_goes_up_whatever_the_inode_numbers(tmp_path):
    """The share's root is known by its device and inode (p9_fid.c is_root), compared for equality: a
    directory inside it with a smaller inode number (made before the share and moved in) is not the root,
    so ".." from it goes up to the root, and ".." from the root stays."""
    older = tmp_path / "older"
    older.mkdir()
    share = tmp_path / "share"
    share.mkdir()
    (older).rename(share / "older")
    assert os.stat(share / "older").st_ino < os.stat(share).st_ino
    with vmmpy.Machine(share=[(share, "s")]) as m:
        c = P9(m)
        c.version()
        root = c.attach(0)
        up = c.walk(0, 1, "older", "..")
        assert up[0][2] == os.stat(share / "older").st_ino and up[1] == root
        assert c.walk(1, 2, "..") == [root]


def test_a_share_whose_directory_is_descriptor_0_works(tree):
    """The share's root directory opened on descriptor 0 (a daemon's closed stdin) is a valid descriptor."""
    share, _ = tree
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = FD0_SCRIPT.replace("os.close(0)  # a daemon", "# os.close(0)  # a daemon")
    script = script.replace("with vmmpy.Machine(", "os.close(0)\nwith vmmpy.Machine(")
    script = script.replace("    c = P9(m)\n", "    c = P9(m)\n    print(os.readlink('/proc/self/fd/0'))\n")
    r = subprocess.run([sys.executable, "-c", script, root, str(share)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    # descriptor 0 is the share's directory, and a file in it reads as ever
    assert r.stdout.split("\n")[:2] == [str(share), "False b'hello, 9p\\n'"], r.stdout


def test_dotdot_stays_inside(p9, tree):
    share, _ = tree
    root = p9.attach(9)
    qs = p9.walk(0, 1, "..", "..", "..")
    assert all(q == root for q in qs)
    # a partial walk (the ".." is answered, the name above the share is not there) creates no fid
    for name in ("secret.txt", "outside", "share"):
        assert p9.walk(0, 2, "..", name) == [root]
        assert p9.err(TCLUNK, struct.pack("<I", 2)) == errno.EBADF
    qs = p9.walk(0, 2, "sub", "..", "..", "sub", "inner.txt")
    assert qs[-1][2] == os.stat(share / "sub" / "inner.txt").st_ino
    p9.walk(1, 3, "sub")
    assert p9.walk(3, 4, "..", "..")[-1] == root


def test_symlinks_are_never_followed(p9, tree):
    share, outside = tree
    os.symlink("/", share / "toroot")
    os.symlink("../..", share / "up")
    os.symlink(str(outside), share / "out")
    os.symlink(str(outside / "secret.txt"), share / "secretlink")
    for link in ("toroot", "up", "out"):
        assert p9.walk(0, 1, link)[0][0] == QTSYMLINK
        assert p9.err(TWALK, struct.pack("<IIH", 1, 2, 1) + s("secret.txt")) == errno.ENOTDIR
        assert p9.blocked(0, 2, link, "etc")[0][0] == QTSYMLINK
        assert p9.blocked(0, 2, link, "secret.txt")[0][0] == QTSYMLINK
        assert p9.err(TLOPEN, struct.pack("<II", 1, O_RDONLY)) == errno.ELOOP
        assert p9.err(TREADDIR, struct.pack("<IQI", 1, 0, 1000)) == errno.EBADF
        # creating "through" it
        assert p9.err(TMKDIR, struct.pack("<I", 1) + s("x") + struct.pack("<II", 0o755, 0)) == errno.ENOTDIR
        assert p9.err(TLCREATE, struct.pack("<I", 1) + s("x") + struct.pack("<III", 2, 0o644, 0)) == errno.ENOTDIR
        p9.clunk(1)
    p9.walk(0, 1, "secretlink")
    assert p9.readlink(1) == str(outside / "secret.txt")
    assert p9.err(TLOPEN, struct.pack("<II", 1, O_RDONLY)) == errno.ELOOP
    # setattr on a symlink must not reach its target
    assert p9.err(TSETATTR, struct.pack("<IIIIIQQQQQ", 1, 0x1, 0o777, 0, 0, 0, 0, 0, 0, 0)) == errno.EOPNOTSUPP
    assert p9.err(TSETATTR, struct.pack("<IIIIIQQQQQ", 1, 0x8, 0, 0, 0, 0, 0, 0, 0, 0)) == errno.EINVAL
    # O_CREAT onto an existing symlink does not follow it
    p9.walk(0, 2)
    assert p9.err(TLCREATE, struct.pack("<I", 2) + s("secretlink") + struct.pack("<III", 1 | O_TRUNC, 0o644, 0)) in (
        errno.ELOOP,
        errno.EEXIST,
    )
    assert (outside / "secret.txt").read_bytes() == b"SECRET"
    assert oct((outside / "secret.txt").stat().st_mode & 0o777) != oct(0o777)


def test_symlink_swapped_in_between_walks(p9, tree):
    share, outside = tree
    p9.walk(0, 1, "sub")  # fid 1 holds the directory itself
    os.rename(share / "sub", share / "sub.old")
    os.symlink(str(outside), share / "sub")  # the name now points outside
    assert p9.blocked(0, 2, "sub", "secret.txt")[0][0] == QTSYMLINK
    # the old fid still names the directory it walked to (now sub.old), inside the share
    (q,) = p9.walk(1, 2, "inner.txt")
    assert q[2] == os.stat(share / "sub.old" / "inner.txt").st_ino
    assert p9.err(TWALK, struct.pack("<IIH", 1, 3, 1) + s("secret.txt")) == errno.ENOENT
    p9.lopen(2)
    assert p9.read(2) == b"inner"
    # a directory replaced by a symlink under an open walk target: creating in it stays in the old dir
    p9.mkdir(1, "made")
    assert (share / "sub.old" / "made").is_dir() and not (outside / "made").exists()
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def _try(p9, type_, body):
    """The request's result: None if it succeeded, else its errno."""
    try:
        p9.call(type_, body)
        return None
    except P9Error as e:
        return e.errno


@pytest.mark.parametrize("swap", ["symlink", "fifo", "file"])
def test_file_swapped_after_the_walk(p9, tree, swap):
    # A fid names the object it walked to. The host layers keep that differently (Linux: an O_PATH fd that
    # follows the object; POSIX: the name in its directory, checked against st_dev/st_ino), so a swapped
    # name either still reaches the original file or fails: never the symlink's target, never a blocked open.
    share, outside = tree
    secret = outside / "secret.txt"
    before = secret.stat()
    p9.walk(0, 1, "hello.txt")
    p9.walk(0, 4, "sub")
    os.rename(share / "hello.txt", share / "hello.old")
    if swap == "symlink":
        os.symlink(str(secret), share / "hello.txt")
    elif swap == "fifo":
        os.mkfifo(share / "hello.txt")
    else:
        (share / "hello.txt").write_bytes(b"another")
    original = os.stat(share / "hello.old").st_ino
    for flags in (O_RDONLY, O_WRONLY, O_RDWR | O_TRUNC):
        p9.walk(1, 2)
        e = _try(p9, TLOPEN, struct.pack("<II", 2, flags))
        if e is None:
            assert flags != O_RDONLY or p9.read(2) == b"hello, 9p\n"
        else:
            assert e in (errno.ENOENT, errno.ELOOP, errno.ENXIO), errno.errorcode[e]
        p9.clunk(2)
    e = _try(p9, TGETATTR, struct.pack("<IQ", 1, 0x3FFF))
    assert e in (None, errno.ENOENT)
    if e is None:
        assert p9.getattr(1)["qid"][2] == original
    for valid, mode, size in ((0x1, 0o777, 0), (0x8, 0, 0), (0x30, 0, 0)):  # chmod, truncate, times now
        e = _try(p9, TSETATTR, struct.pack("<IIIIIQQQQQ", 1, valid, mode, 0, 0, size, 0, 0, 0, 0))
        assert e in (None, errno.ENOENT), errno.errorcode[e]
    e = _try(p9, TLINK, struct.pack("<II", 4, 1) + s("linked"))
    assert e in (None, errno.ENOENT)
    if e is None:
        assert os.stat(share / "sub" / "linked").st_ino == original
    after = secret.stat()
    assert secret.read_bytes() == b"SECRET"
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == (before.st_mode, before.st_mtime_ns, 1)
    if swap == "file":
        assert (share / "hello.txt").read_bytes() == b"another"


def test_fids_follow_a_rename(p9, tree):
    share, _ = tree
    p9.walk(0, 1, "hello.txt")
    p9.walk(0, 2, "hello.txt")
    ino = os.stat(share / "hello.txt").st_ino
    p9.renameat(0, "hello.txt", 0, "renamed.txt")
    p9.walk(0, 3, "sub")
    p9.call(TRENAME, struct.pack("<II", 2, 3) + s("moved.txt"))  # fid 2 moves it again, into sub/
    assert p9.getattr(1)["qid"][2] == ino
    p9.lopen(1)
    assert p9.read(1) == b"hello, 9p\n"
    p9.call(TREMOVE, struct.pack("<I", 2))
    assert not (share / "sub" / "moved.txt").exists() and not (share / "renamed.txt").exists()


def test_read_only_share(tree):
    share, _ = tree
    before = sorted(os.listdir(share))
    with vmmpy.Machine(share=[(share, "ro", True)]) as m:
        c = P9(m)
        c.version()
        c.attach(0)
        c.walk(0, 1, "hello.txt")
        c.walk(0, 2)
        for t, body in (
            (TLOPEN, struct.pack("<II", 1, O_WRONLY)),
            (TLOPEN, struct.pack("<II", 1, O_RDONLY | O_TRUNC)),
            (TLCREATE, struct.pack("<I", 2) + s("x") + struct.pack("<III", 2, 0o644, 0)),
            (TMKDIR, struct.pack("<I", 0) + s("x") + struct.pack("<II", 0o755, 0)),
            (TSYMLINK, struct.pack("<I", 0) + s("x") + s("y") + struct.pack("<I", 0)),
            (TMKNOD, struct.pack("<I", 0) + s("x") + struct.pack("<IIII", 0o10644, 0, 0, 0)),
            (TUNLINKAT, struct.pack("<I", 0) + s("hello.txt") + struct.pack("<I", 0)),
            (TRENAMEAT, struct.pack("<I", 0) + s("hello.txt") + struct.pack("<I", 0) + s("z")),
            (TLINK, struct.pack("<II", 0, 1) + s("z")),
            (TRENAME, struct.pack("<II", 1, 0) + s("z")),
            (TSETATTR, struct.pack("<IIIIIQQQQQ", 1, 0x8, 0, 0, 0, 0, 0, 0, 0, 0)),
            (TXATTRCREATE, struct.pack("<I", 1) + s("user.a") + struct.pack("<QI", 1, 0)),
        ):
            assert c.err(t, body) == errno.EROFS, t
        c.lopen(1)
        assert c.read(1) == b"hello, 9p\n"
        assert c.err(TWRITE, struct.pack("<IQI", 1, 0, 1) + b"x") == errno.EROFS
        assert c.err(TREMOVE, struct.pack("<I", 1)) == errno.EROFS
    assert sorted(os.listdir(share)) == before
    assert (share / "hello.txt").read_bytes() == b"hello, 9p\n"


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_share_option(tmp_path, guest):
    from vmmpy.cli import _share, _shares

    assert _share("/a/b") == ("/a/b", None, False)
    assert _share("/a/b:ro:tag=x") == _share("/a/b:tag=x:ro") == ("/a/b", "x", True)
    assert _share("/a:b:rw") == ("/a:b", None, False)
    assert _shares([_share("/a"), _share("/b:ro"), _share("/c:tag=z")]) == [
        ("/a", "share", False),
        ("/b", "share1", True),
        ("/c", "z", False),
    ]
    run = [sys.executable, "-m", "vmmpy", "run", guest("hello")]
    p = subprocess.run([*run, "--share", f"{tmp_path}:ro:tag=host"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*run, "--share", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "missing: no such directory" in p.stderr and "Traceback" not in p.stderr


# -- hardening (issue 15): what a hostile guest may not do to the host ------------------------------


def _setattr(fid: int, valid: int, mode: int = 0, uid: int = 0, gid: int = 0) -> bytes:
    return struct.pack("<IIIIIQQQQQ", fid, valid, mode, uid, gid, 0, 0, 0, 0, 0)


def test_lcreate_never_opens_an_existing_fifo_or_device_node(p9, tree):
    """Tlcreate without EXCL of an existing FIFO used to block in open() forever (vCPU thread, lock held)."""
    share, _ = tree
    p9.call(TMKNOD, struct.pack("<I", 0) + s("fifo") + struct.pack("<IIII", 0o10644, 0, 0, 0))
    assert os.path.exists(share / "fifo")
    for flags in (O_RDONLY, O_WRONLY, O_RDWR):
        p9.walk(0, 1)
        assert p9.err(TLCREATE, struct.pack("<I", 1) + s("fifo") + struct.pack("<III", flags, 0o644, 0)) in (
            errno.ENXIO,
            errno.EINVAL,
        )
        p9.clunk(1)
    if os.geteuid() != 0:
        pytest.skip("creating a device node in the share needs root")
    os.mknod(share / "zero", 0o20666, os.makedev(1, 5))  # a host device node inside the share (a rootfs's dev/)
    p9.walk(0, 2)
    assert p9.err(TLCREATE, struct.pack("<I", 2) + s("zero") + struct.pack("<III", O_RDWR, 0o644, 0)) == errno.ENXIO
    p9.walk(0, 3, "zero")
    assert p9.err(TLOPEN, struct.pack("<II", 3, O_RDONLY)) in (errno.ENXIO, errno.EINVAL, errno.EPERM)


def test_no_setuid_or_setgid_bits_and_no_ownership_changes(p9, tree):
    """With the VMM as root, a guest must not plant a root-owned 6755 file on the host."""
    share, _ = tree
    p9.walk(0, 1)
    p9.lcreate(1, "planted", mode=0o6755)
    assert os.stat(share / "planted").st_mode & 0o7777 == 0o755
    assert p9.call(TSETATTR, _setattr(1, 0x1, mode=0o4755)) == b""
    assert os.stat(share / "planted").st_mode & 0o7777 == 0o755
    p9.mkdir(0, "dir", mode=0o3775)
    mode = os.stat(share / "dir").st_mode
    assert not mode & 0o6000 and mode & 0o1000, "sticky stays, set-group-ID goes"
    st = os.stat(share / "planted")
    assert p9.err(TSETATTR, _setattr(1, 0x2, uid=st.st_uid + 12345)) == errno.EPERM
    assert p9.err(TSETATTR, _setattr(1, 0x4, gid=st.st_gid + 12345)) == errno.EPERM
    assert p9.call(TSETATTR, _setattr(1, 0x2 | 0x4, uid=st.st_uid, gid=st.st_gid)) == b"", "a no-op change is fine"
    assert (os.stat(share / "planted").st_uid, os.stat(share / "planted").st_gid) == (st.st_uid, st.st_gid)


FD_SCRIPT = r"""
import errno, resource, sys
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
sys.path.insert(0, sys.argv[1])
import vmmpy
from tests.test_p9 import P9, P9Error
share, kernel = sys.argv[2], sys.argv[3]
with vmmpy.Machine(share=[(share, "s")]) as m:
    c = P9(m)
    c.version()
    c.attach(0)
    got, err = 0, None
    for fid in range(1, 4000):
        try:
            c.walk(0, fid, "hello.txt")
            c.lopen(fid)
        except P9Error as e:
            err = e.errno
            break
        got += 1
    # clunking gives every descriptor back: as many files open again
    for fid in range(1, got + 1):
        c.clunk(fid)
    try:
        c.clunk(got + 1)  # walked if its open failed, not if its walk did
    except P9Error:
        pass
    again = 0
    for fid in range(1, 4000):
        try:
            c.walk(0, fid, "hello.txt")
            c.lopen(fid)
        except P9Error:
            break
        again += 1
    # the VMM still opens files: a second VM loads a kernel
    with vmmpy.Machine(kernel) as m2:
        pass
    print(got, err, again)
"""


def run_fd_script(share, kernel: str, nofile: int) -> subprocess.CompletedProcess:
    """FD_SCRIPT in a child process with RLIMIT_NOFILE at `nofile`; it prints the open fids and the errno."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(
        [sys.executable, "-c", FD_SCRIPT, root, str(share), kernel, str(nofile)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.mark.parametrize("nofile, budget", [(400, 100), (600, 172)])
def test_a_guest_cannot_exhaust_the_vmms_file_descriptors(tree, guest, nofile, budget):
    """Fids cost host fds: a guest gets ENFILE at the share's budget, and libvmm's own opens still work.
    Below twice the reserve of 256 fds, 9p gets a quarter of the limit (400: 100, not (400 - 256) / 2 = 72);
    from there, half of what the reserve leaves (600: 172, not 150)."""
    share, _ = tree
    p = run_fd_script(share, guest("hello"), nofile)
    got, err, again = p.stdout.split()
    assert err == str(errno.ENFILE) and again == got, p.stdout
    assert budget // 3 - 1 <= int(got) <= budget // 3  # 3 fds an open fid, less what the share itself holds


def test_clunk_unlinks_a_fid_deep_in_its_hash_chain(p9):
    # fids 1, 1025 and 2049 share a bucket of the fid table (1024 buckets); the newest is first in it.
    # Clunking the oldest (third in the chain) must leave the other two reachable.
    for f in (1, 1025, 2049):
        p9.walk(0, f, "sub")
    p9.clunk(1)
    assert p9.err(TCLUNK, struct.pack("<I", 1)) == errno.EBADF
    for f in (1025, 2049):
        assert len(p9.walk(f, f + 1, "inner.txt")) == 1
        p9.clunk(f + 1)
        p9.clunk(f)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_clunking_an_open_file_closes_its_host_descriptor(p9):
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1)
    p9.clunk(1)
    before = _open_fds()
    for _ in range(20):
        p9.walk(0, 1, "hello.txt")
        p9.lopen(1)
        assert p9.read(1) == b"hello, 9p\n"
        p9.clunk(1)
    assert _open_fds() == before


def test_clunking_a_read_directory_frees_its_directory_stream(p9):
    """A directory fid that was read holds a host directory stream (fdopendir: glibc's is a 32 KiB buffer
    around the descriptor); its clunk closes the stream, not only the descriptor. Measured as the heap a
    walk-open-readdir-clunk round keeps (a lost stream keeps ~32 KiB a round)."""
    from .conftest import heap_growth

    def round_trip():
        p9.walk(0, 1, "sub")
        p9.lopen(1)
        assert sorted(p9.listdir(1)) == [".", "..", "inner.txt"]
        p9.clunk(1)

    growth = heap_growth(round_trip)
    if growth is None:
        pytest.skip("needs glibc's mallinfo2 (and no sanitizer)")
    assert growth < 4096, f"{growth:.0f} bytes kept a directory read and clunked"


def test_the_descriptor_budget_is_half_of_what_the_reserve_leaves(tree, guest):
    # RLIMIT_NOFILE 1024: 9p may use (1024 - 256) / 2 = 384 fds; the root fid costs 2, an open fid 3
    share, _ = tree
    p = run_fd_script(share, guest("hello"), 1024)
    assert p.stdout.split() == [str((384 - 2) // 3), str(errno.ENFILE), str((384 - 2) // 3)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_new_session_closes_every_fid(p9):
    # Tversion drops every fid, whatever slot of the table it is in: their host descriptors close
    p9.version()
    before = _open_fds()
    p9.attach(0)
    for fid, path in ((1, "hello.txt"), (2, "sub")):
        p9.walk(0, fid, path)
        p9.lopen(fid)
    p9.version()
    assert _open_fds() == before
    p9.attach(0)  # and the table has all its slots again
    p9.walk(0, 1, "hello.txt")
    p9.lopen(1)
    assert p9.read(1) == b"hello, 9p\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_closing_the_machine_closes_every_descriptor_of_the_share(tree):
    # the share's root, the fids a guest walked and the files it opened: none outlives the machine
    share, _ = tree

    def session(floor):
        with vmmpy.Machine(share=[(share, "hostshare")]) as m:
            c = P9(m)
            c.version()
            c.attach(0)
            for fid, path in ((1, "hello.txt"), (2, "sub")):
                c.walk(0, fid, path)
                c.lopen(fid)
            assert _open_fds() >= floor + 5  # the root, two fids and their two open files

    session(_open_fds())
    before = _open_fds()
    for _ in range(3):
        session(before)
    assert _open_fds() == before


# fsync(2) logs the path of its descriptor (to $FSYNC_LOG), or that it is none, before doing its work
FSYNC_LOG_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int fsync(int fd)
{
    char link[64], path[4096];
    ssize_t n;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    FILE *f = fopen(getenv("FSYNC_LOG"), "a");
    if ((n = readlink(link, path, sizeof path - 1)) < 0)
        n = snprintf(path, sizeof path, "not a descriptor: %d", fd);
    path[n] = 0;
    if (f) {
        fprintf(f, "%s\n", path);
        fclose(f);
    }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_files_a_session_leaves_open_are_synced_when_it_ends(tree, tmp_path):
    """What the guest wrote reaches the disk when its session ends with files still open: a new Tversion, a
    device reset and the machine's close each fsync every open file (written or not; one on descriptor 0), and
    only those: a fid only walked has no descriptor to sync."""
    from tests.conftest import run_with_shim

    share, _ = tree
    log = tmp_path / "fsync.log"
    script = f"""
import os, struct, vmmpy
from tests.test_p9 import P9, O_RDONLY
def mark(what):
    with open({str(log)!r}, "a") as f:
        f.write("-- " + what + "\\n")
def session(m, created, on_fd_0=False):
    c = P9(m)
    c.version()
    c.attach(0)
    c.walk(0, 1)
    c.lcreate(1, created)
    c.write(1, b"data")
    c.walk(0, 2, "sub")  # walked, never opened
    c.walk(0, 3, "hello.txt")
    if on_fd_0:
        os.close(0)  # a daemon's closed stdin: the open gets descriptor 0
    c.lopen(3, O_RDONLY)
    if on_fd_0:
        assert os.readlink("/proc/self/fd/0").endswith("hello.txt")
    return c
with vmmpy.Machine(share=[({str(share)!r}, "hostshare")]) as m:
    c = session(m, "a.txt", on_fd_0=True)
    mark("version")
    c.version()
    c = session(m, "b.txt")
    mark("reset")
    c.dev.reset()
    session(m, "c.txt")
    mark("close")
mark("closed")
"""
    r = run_with_shim(tmp_path, FSYNC_LOG_C, script, FSYNC_LOG=str(log))
    assert r.returncode == 0, r.stderr
    phases, cur = {}, None
    for line in log.read_text().splitlines():
        if line.startswith("-- "):
            cur = phases.setdefault(line[3:], [])
        else:
            assert cur is not None, f"fsync before the session ended: {line}"
            cur.append(line)
    hello = str(share / "hello.txt")
    assert {k: sorted(v) for k, v in phases.items()} == {
        "version": sorted([str(share / "a.txt"), hello]),
        "reset": sorted([str(share / "b.txt"), hello]),
        "close": sorted([str(share / "c.txt"), hello]),
        "closed": [],
    }
    assert (share / "c.txt").read_bytes() == b"data"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.skipif(
    bool(os.environ.get("VMMPY_EXPECT_SANITIZED")), reason="an address-space limit: ASan maps its shadow memory"
)
def test_a_share_refused_for_want_of_memory_leaves_no_descriptor_open(tree):
    """When the 9p server's tables cannot be allocated (the fid table is ~1 MiB: an mmap of its own), the share is
    refused as out of memory and the directory descriptor it had opened is closed. In a child whose address space
    leaves no room for the tables."""
    import subprocess
    import sys

    share, _ = tree
    prog = f"""
import os, resource, vmmpy
def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
m = vmmpy.Machine()
before = len(os.listdir("/proc/self/fd"))
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
# 512 KiB of room: below the ~1 MiB fid table, above a malloc arena's or the interpreter's small mappings
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 512 * 1024, hard))
try:
    m.add_share({str(share)!r}, "s")
except vmmpy.VmmError as e:
    print(type(e).__name__, e)
resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
print("descriptors", len(os.listdir("/proc/self/fd")) - before)
"""
    env = dict(os.environ, VMMPY_TEST_AS_HEADROOM_GIB="0")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"OutOfMemory out of memory for share {share}", "descriptors 0"], r.stdout
