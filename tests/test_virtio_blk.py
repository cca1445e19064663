"""Tier 1: virtio-blk (virtio 1.2 §5.2) over a raw image file, driven over virtio-mmio."""

from __future__ import annotations

import os
import struct

import pytest

import vmmpy
from tests.virtio_driver import DESC_F_NEXT, DESC_F_WRITE, ID_BLOCK, VirtioMMIO, find_devices
from vmmpy import cli, errors

BLK_ID = ID_BLOCK
F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_DISCARD, F_WRITE_ZEROES = (1 << b for b in (2, 5, 6, 9, 13, 14))
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
SECTOR = 512


def make_image(path, sectors: int = 64, seed: int = 1) -> bytes:
    data = bytes((i * 7 + seed + i // SECTOR) & 0xFF for i in range(sectors * SECTOR))
    path.write_bytes(data)
    return data


class Blk:
    """A virtio-blk driver on tests/virtio_driver.py."""

    def __init__(self, m: vmmpy.Machine, index: int = 0, features: int | None = None):
        self.m = m
        slots = [s for s, dev_id in find_devices(m) if dev_id == BLK_ID]
        self.dev = VirtioMMIO(m, slots[index])
        (self.q,) = self.dev.init(queues=1, features=features)

    def request(self, type_: int, sector: int = 0, out: bytes = b"", in_len: int = 0, split: int = 1):
        """Send one request; returns (status, data read, used length). `split` spreads the data over buffers."""
        hdr = struct.pack("<IIQ", type_, 0, sector)
        outs = [hdr] + _split(out, split) if out else [hdr]
        ins = _sizes(in_len, split) + [1]
        head = self.q.add(outs, ins)
        self.q.notify()
        used = self.q.get_used()
        assert [u[0] for u in used] == [head]
        data = self.q.chain_data(head)
        return data[-1], data[:-1], used[0][1]

    def read(self, sector: int, n: int, **kw) -> tuple[int, bytes]:
        st, data, used = self.request(T_IN, sector, in_len=n * SECTOR, **kw)
        if st == S_OK:
            assert used == n * SECTOR + 1
        return st, data

    def write(self, sector: int, data: bytes, **kw) -> int:
        st, _, used = self.request(T_OUT, sector, out=data, **kw)
        assert used == 1
        return st

    def config(self, off: int, size: int) -> int:
        return self.dev.config_read(off, size)


def _split(data: bytes, n: int) -> list[bytes]:
    step = max(1, -(-len(data) // n))
    return [data[i : i + step] for i in range(0, len(data), step)]


def _sizes(total: int, n: int) -> list[int]:
    if not total:
        return []
    step = max(1, -(-total // n))
    return [min(step, total - i) for i in range(0, total, step)]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    return path, make_image(path)


def test_config_and_features(image):
    path, _ = image
    with vmmpy.Machine(disk=path) as m:
        assert [d for _, d in find_devices(m)] == [BLK_ID]
        b = Blk(m)
        f = b.dev.features
        assert f & F_SEG_MAX and f & F_BLK_SIZE and f & F_FLUSH and f & F_DISCARD and f & F_WRITE_ZEROES
        assert not f & F_RO
        assert b.config(0, 8) == 64  # capacity in sectors
        assert 1 <= b.config(12, 4) <= 254  # seg_max
        assert b.config(20, 4) == 512  # blk_size
        assert b.config(36, 4) > 0 and b.config(40, 4) >= 1  # max_discard_sectors, max_discard_seg
        assert b.config(48, 4) > 0 and b.config(52, 4) >= 1  # max_write_zeroes_sectors, _seg


def test_read(image):
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        assert b.read(0, 1) == (S_OK, data[:SECTOR])
        assert b.read(5, 3, split=4) == (S_OK, data[5 * SECTOR : 8 * SECTOR])
        assert b.read(63, 1) == (S_OK, data[63 * SECTOR :])
        assert b.read(0, 64, split=7) == (S_OK, data)


def test_write_lands_in_the_file_byte_exact(image):
    path, data = image
    new = os.urandom(3 * SECTOR)
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        assert b.write(10, new, split=5) == S_OK
        assert b.read(9, 5) == (S_OK, data[9 * SECTOR : 10 * SECTOR] + new + data[13 * SECTOR : 14 * SECTOR])
        assert b.request(T_FLUSH)[0] == S_OK
        assert path.read_bytes() == data[: 10 * SECTOR] + new + data[13 * SECTOR :]
        assert b.write(63, b"\xaa" * SECTOR) == S_OK  # the last sector, not flushed: destroy syncs
    assert path.read_bytes() == data[: 10 * SECTOR] + new + data[13 * SECTOR : 63 * SECTOR] + b"\xaa" * SECTOR


def test_get_id(image):
    path, _ = image
    with vmmpy.Machine(disk=path) as m:
        st, data, used = Blk(m).request(T_GET_ID, in_len=20)
        assert st == S_OK and used == 21
        assert data == b"disk.img".ljust(20, b"\0")


def test_out_of_range_sectors(image):
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        assert b.read(64, 1)[0] == S_IOERR
        assert b.read(63, 2)[0] == S_IOERR
        assert b.read(2**64 - 1, 1)[0] == S_IOERR  # sector + count overflows
        assert b.read(2**55, 1)[0] == S_IOERR  # sector * 512 overflows
        assert b.write(64, bytes(SECTOR)) == S_IOERR
        assert b.write(2**64 - 1, bytes(SECTOR)) == S_IOERR
        assert b.read(0, 1)[0] == S_OK  # the device still works
    assert path.read_bytes() == data


def test_partial_sector_is_an_error(image):
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        assert b.request(T_IN, 0, in_len=100)[0] == S_IOERR
        assert b.write(0, b"x" * 700) == S_IOERR
    assert path.read_bytes() == data


def test_readonly_disk(image):
    path, data = image
    with vmmpy.Machine(disk=[(path, "ro")]) as m:
        b = Blk(m)
        f = b.dev.features
        assert f & F_RO and not f & F_DISCARD and not f & F_WRITE_ZEROES
        assert b.read(1, 2) == (S_OK, data[SECTOR : 3 * SECTOR])
        assert b.write(1, bytes(SECTOR)) == S_IOERR
        assert b.request(T_FLUSH)[0] == S_OK
        hdr = struct.pack("<IIQ", T_WRITE_ZEROES, 0, 0)
        head = b.q.add([hdr, struct.pack("<QII", 0, 8, 0)], [1])
        b.q.notify()
        b.q.get_used()
        assert b.q.chain_data(head) == bytes([S_IOERR])
    assert path.read_bytes() == data


_RO_CHECK = """
import sys, vmmpy
from vmmpy import errors
path = sys.argv[1]
try:
    vmmpy.Machine(disk=path)
    print("opened read-write")
except errors.VmmError as e:
    print("refused:", e)
with vmmpy.Machine(disk=[(path, "ro")]):
    print("ro ok")
"""


def test_readonly_file_needs_ro(tmp_path):
    path = tmp_path / "ro.img"
    make_image(path, 2)
    path.chmod(0o444)
    if os.geteuid() != 0:
        with pytest.raises(errors.VmmError, match="permission denied"):
            vmmpy.Machine(disk=path)
        with vmmpy.Machine(disk=[(path, "ro")]):
            pass
        return
    # root ignores file permissions: check as an unprivileged user (nobody) in a child process
    import pwd
    import subprocess
    import sys

    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:  # the image must be reachable (pytest's tmp dirs are 0700)
        if parent == parent.parent or not str(parent).startswith(("/tmp", os.environ.get("TMPDIR", "/tmp"))):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        p = subprocess.run(
            [sys.executable, "-c", _RO_CHECK, str(path)],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except PermissionError as e:  # the interpreter lives where nobody cannot go (e.g. /root/.pyenv)
        pytest.skip(f"nobody cannot run {sys.executable}: {e.strerror}")
    if p.returncode != 0 and "Permission denied" in p.stderr and "vmmpy" not in p.stdout:
        pytest.skip(f"nobody cannot reach the build from here: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "permission denied" in p.stdout.lower(), p.stdout
    assert "ro ok" in p.stdout


def test_unsupported_type(image):
    path, _ = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        assert b.request(99)[0] == S_UNSUPP
        assert b.request(10, in_len=48)[0] == S_UNSUPP  # GET_LIFETIME: not offered
        assert b.read(0, 1)[0] == S_OK


def test_discard_and_write_zeroes(image):
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)

        def dwz(type_, *segs):
            body = b"".join(struct.pack("<QII", *s) for s in segs)
            return b.request(type_, out=body)[0]

        assert dwz(T_WRITE_ZEROES, (8, 8, 0), (32, 2, 1)) == S_OK  # plain, and with UNMAP
        assert b.read(8, 8) == (S_OK, bytes(8 * SECTOR))
        assert b.read(32, 2) == (S_OK, bytes(2 * SECTOR))
        assert dwz(T_WRITE_ZEROES, (60, 8, 0)) == S_IOERR  # past the end
        assert dwz(T_WRITE_ZEROES, (0, 1, 2)) == S_UNSUPP  # reserved flag
        assert dwz(T_DISCARD, (16, 8, 1)) == S_UNSUPP  # UNMAP is reserved for discard
        assert dwz(T_DISCARD, (16, 8, 0)) == S_OK
        assert dwz(T_DISCARD, (2**64 - 4, 8, 0)) == S_IOERR
        assert b.request(T_WRITE_ZEROES, out=b"short")[0] == S_UNSUPP  # not whole segments
        assert b.request(T_FLUSH)[0] == S_OK
    got = path.read_bytes()
    assert len(got) == len(data)
    assert got[8 * SECTOR : 16 * SECTOR] == bytes(8 * SECTOR) and got[32 * SECTOR : 34 * SECTOR] == bytes(2 * SECTOR)
    assert got[: 8 * SECTOR] == data[: 8 * SECTOR] and got[34 * SECTOR :] == data[34 * SECTOR :]
    assert got[24 * SECTOR : 32 * SECTOR] == data[24 * SECTOR : 32 * SECTOR]


def test_malformed_requests(image):
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        q = b.q
        # a header shorter than 16 bytes, with a status byte: IOERR
        head = q.add([b"\0" * 8], [1])
        q.notify()
        assert q.get_used() == [(head, 1)] and q.chain_data(head) == bytes([S_IOERR])
        # a header and data but no writable byte at all: nothing to report the status in
        errs = m.stats()["guest_errors"]
        q.add([struct.pack("<IIQ", T_OUT, 0, 0), b"\xff" * SECTOR], [])
        q.notify()
        assert b.dev.needs_reset()
        assert m.stats()["guest_errors"] > errs
        # after a reset the device works again
        b2 = Blk(m)
        assert b2.read(0, 1) == (S_OK, data[:SECTOR])
    assert path.read_bytes() == data


def test_raw_chain_status_in_last_writable_byte(image):
    """Data and status in one writable descriptor: the status is its last byte."""
    path, data = image
    with vmmpy.Machine(disk=path) as m:
        b = Blk(m)
        q = b.q
        hdr = q.buf(16)
        m.write_memory(hdr, struct.pack("<IIQ", T_IN, 0, 2))
        buf = q.buf(SECTOR + 1)
        q.write_desc(0, hdr, 16, DESC_F_NEXT, 1)
        q.write_desc(1, buf, SECTOR + 1, DESC_F_WRITE)
        q.publish(0)
        q.notify()
        assert q.get_used() == [(0, SECTOR + 1)]
        got = m.read_memory(buf, SECTOR + 1)
        assert got[:SECTOR] == data[2 * SECTOR : 3 * SECTOR] and got[SECTOR] == S_OK


def test_several_disks(tmp_path):
    a, bpath = tmp_path / "a.img", tmp_path / "b.img"
    da, db = make_image(a, 4, seed=3), make_image(bpath, 8, seed=9)
    with vmmpy.Machine(disk=[a, (bpath, "ro")]) as m:
        assert [d for _, d in find_devices(m)] == [BLK_ID, BLK_ID]
        d0, d1 = Blk(m, 0), Blk(m, 1)
        assert d0.config(0, 8) == 4 and d1.config(0, 8) == 8
        assert d0.read(0, 4) == (S_OK, da) and d1.read(0, 8) == (S_OK, db)


def test_add_disk_errors(tmp_path):
    with pytest.raises(errors.VmmError, match="no such disk image"):
        vmmpy.Machine(disk=tmp_path / "missing.img")
    with pytest.raises(errors.VmmError, match="regular file"):
        vmmpy.Machine(disk=tmp_path)
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 1000)
    with pytest.raises(errors.VmmError, match="multiple of 512"):
        vmmpy.Machine(disk=odd)
    with pytest.raises(errors.VmmError, match="mode"):
        vmmpy.Machine(disk=[(odd, "rx")])


def test_image_is_locked_while_in_use(image):
    path, _ = image
    with vmmpy.Machine(disk=path), pytest.raises(errors.VmmError, match="in use"):
        vmmpy.Machine(disk=path)
    with vmmpy.Machine(disk=path):  # released on close
        pass


def test_cli_disk_syntax():
    assert cli._disk("a.img") == ("a.img", "rw")
    assert cli._disk("a.img:ro") == ("a.img", "ro")
    assert cli._disk("dir:x/a.img") == ("dir:x/a.img", "rw")
    args = cli.build_parser().parse_args(["run", "k.elf", "--disk", "a.img", "--disk", "b.img:ro", "--rng"])
    assert args.disk == [("a.img", "rw"), ("b.img", "ro")] and args.rng
