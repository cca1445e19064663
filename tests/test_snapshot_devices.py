"""Snapshots of the virtio devices (docs/snapshots.md, "Devices") through the public API.

Tier 1: a machine with a bare-metal guest that is prepared but idle, its devices driven from the test
through tests/virtio_driver.py, is saved and restored; the driver objects then talk to the restored
machine (its RAM holds the same rings) and every queue goes on where it stopped. Tier 2: guests that
use virtio-gpu and virtio-input, saved mid-run in deterministic mode, continue exactly.
Also: a changed disk is refused with one line naming it, a 9p path that vanished gives ESTALE to its
fid (not a crash), and damaged device sections fail cleanly.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib

import pytest

import vmmpy
from vmmpy import errors

from .conftest import ROOT
from .test_p9 import P9, P9Error
from .test_snapshot import sections
from .test_virtio_input import KBD, TAB, Input
from .virtio_driver import (
    ACKNOWLEDGE,
    DRIVER,
    DRIVER_OK,
    FEATURES_OK,
    ID_BLOCK,
    ID_DUMMY,
    INT_VRING,
    GuestAlloc,
    VirtioMMIO,
    find_devices,
)


def rebind(r: vmmpy.Machine, *drivers) -> None:
    """Point driver objects (clients, VirtioMMIO, their queues and allocator) at restored machine r."""
    seen = set()

    def visit(o):
        if o is None or id(o) in seen:
            return
        seen.add(id(o))
        if hasattr(o, "m"):
            o.m = r
        if isinstance(o, GuestAlloc):
            GuestAlloc._per_machine[r] = o
        for attr in ("dev", "q", "alloc", "eventq", "statusq"):
            visit(getattr(o, attr, None))
        for q in getattr(o, "queues", []) or []:
            visit(q)

    for d in drivers:
        if isinstance(d, (list, tuple)):
            for x in d:
                visit(x)
        else:
            visit(d)


def slot_of(m, dev_id: int, nth: int = 0) -> int:
    return [s for s, d in find_devices(m) if d == dev_id][nth]


# ---- the virtio core and the transport ---------------------------------------------------------


def transport_state(dev) -> dict:
    """What the driver reads back from a virtio-mmio slot (queue 1 and feature word 1 selected)."""
    return {
        "status": dev.status(),
        "isr": dev.interrupt_status(),
        "features1": dev.read(0x010),
        "qnum": dev.read(0x038),
        "ready": dev.read(0x044),
        "qdesc": dev.read(0x080),  # QueueDescLow: queue 1's, not queue 0's (QueueSel survives)
        "scratch": dev.config_read(4, 4),
        "chains": dev.config_read(12, 4),
        "generation": dev.config_generation(),
    }


def test_core_and_transport_state_survive_and_queues_continue(guest, tmp_path):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1) as m:
        m.boot_info()
        dev = VirtioMMIO(m, slot_of(m, ID_DUMMY))
        dev.enable_irq()
        q0, q1 = dev.init(queues=2)
        for i in range(3):
            h = q0.add([bytes([i, 1, 2])], [3])
            q0.notify()
            assert q0.get_used() == [(h, 3)]
        dev.config_write(4, 0x5CA7C4, 4)  # scratch
        dev.write(0x014, 1)  # DeviceFeaturesSel: word 1
        dev.write(0x030, 1)  # QueueSel: queue 1
        before = transport_state(dev)
        assert before["isr"] & INT_VRING and dev.irq_line()
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, dev, q0, q1)
        after = transport_state(dev)
        assert after == before
        assert dev.irq_line()  # the level the ISR drives
        dev.ack()
        assert not dev.irq_line()
        h = q0.add([b"abc"], [3])
        q0.notify()
        assert q0.get_used() == [(h, 3)] and q0.chain_data(h) == b"cba"
        assert q0.used_idx() == 4  # the used index went on from 3
        assert dev.config_read(12, 4) == 4


def test_a_status_bit_cleared_without_a_reset_stays_set_and_the_vm_still_snapshots(guest, tmp_path):
    """virtio 1.2 §2.1.2: the driver must not clear a status bit; only a reset (status 0) does. A driver that
    writes DRIVER_OK without the FEATURES_OK it had set is logged and the bit stays: a device live without its
    negotiated features is a state restore refuses (DRIVER_OK without FEATURES_OK), so the guest could otherwise
    make its own snapshot unrestorable. The device keeps working on the features it negotiated."""
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1) as m:
        m.boot_info()
        dev = VirtioMMIO(m, slot_of(m, ID_DUMMY))
        (q0,) = dev.init(queues=1)
        live = dev.status()
        assert live == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
        before = m.stats()["guest_errors"]
        dev.set_status(ACKNOWLEDGE | DRIVER | DRIVER_OK)
        assert m.stats()["guest_errors"] == before + 1
        assert dev.status() == live
        h = q0.add([b"ab"], [2])
        q0.notify()
        assert q0.get_used() == [(h, 2)] and q0.chain_data(h) == b"ba"
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, dev, q0)
        assert dev.status() == live
        h = q0.add([b"xyz"], [3])
        q0.notify()
        assert q0.get_used() == [(h, 3)] and q0.chain_data(h) == b"zyx"


# ---- virtio-blk ---------------------------------------------------------------------------------


def blk_request(q, type_: int, sector: int, out: bytes = b"", data_in: int = 0) -> tuple[int, bytes]:
    h = q.add([struct.pack("<IIQ", type_, 0, sector) + out], ([data_in] if data_in else []) + [1])
    q.notify()
    ((head, _),) = q.get_used()
    assert head == h
    data = q.chain_data(h)
    return data[-1], data[:-1]


def make_disk(tmp_path, name="d.img", size=1 << 20, byte=0):
    p = tmp_path / name
    p.write_bytes(bytes([byte]) * size)
    return p


def test_blk_continues_after_restore(guest, tmp_path):
    disk, snap = make_disk(tmp_path), tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), disk=str(disk)) as m:
        m.boot_info()
        dev = VirtioMMIO(m, slot_of(m, ID_BLOCK))
        (q,) = dev.init(queues=1)
        assert blk_request(q, 1, 3, b"A" * 512) == (0, b"")  # write sector 3
        m.snapshot(snap)  # flushes the disk
    assert disk.read_bytes()[3 * 512 : 4 * 512] == b"A" * 512
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, dev, q)
        assert blk_request(q, 0, 3, data_in=512) == (0, b"A" * 512)  # read back through the restored queue
        assert blk_request(q, 1, 5, b"B" * 512) == (0, b"")
    assert disk.read_bytes()[5 * 512 : 6 * 512] == b"B" * 512


def snapshot_after_a_write(guest, tmp_path, sector: int, byte: bytes):
    """A VM whose driver (the test) wrote one sector of a fresh disk, saved: the disk and snapshot paths, and
    the driver's device and queue (rebind() them to a restored VM)."""
    disk, snap = make_disk(tmp_path), tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), disk=str(disk)) as m:
        m.boot_info()
        dev = VirtioMMIO(m, slot_of(m, ID_BLOCK))
        (q,) = dev.init(queues=1)
        assert blk_request(q, 1, sector, byte * 512)[0] == 0
        m.snapshot(snap)
    return disk, snap, dev, q


@pytest.mark.parametrize("change", ["contents", "size", "touch"])
def test_a_changed_disk_is_refused_with_one_line(guest, tmp_path, change):
    disk, snap, _, _ = snapshot_after_a_write(guest, tmp_path, 0, b"Z")
    if change == "contents":  # what the guest wrote, changed behind its back (mtime kept)
        st = disk.stat()
        with open(disk, "r+b") as f:
            f.write(b"Y")
        os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "size":
        with open(disk, "ab") as f:
            f.write(b"\0" * 512)
    else:
        st = disk.stat()
        os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(errors.VmmError) as e:
        vmmpy.Machine.restore(snap).close()
    msg = str(e.value)
    assert "\n" not in msg and str(disk) in msg, msg
    assert "changed since the snapshot" in msg if change != "size" else ("sectors" in msg or "size" in msg), msg


def test_an_unchanged_copy_with_its_mtime_restores(guest, tmp_path):
    """The restore may point a writable disk elsewhere: a copy that kept contents and mtime is the same disk."""
    disk, snap, dev, q = snapshot_after_a_write(guest, tmp_path, 7, b"C")
    copy = tmp_path / "copy.img"
    copy.write_bytes(disk.read_bytes())
    st = disk.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    with vmmpy.Machine.restore(snap, disk=str(copy)) as r:
        rebind(r, dev, q)
        assert blk_request(q, 0, 7, data_in=512) == (0, b"C" * 512)


def test_readonly_disk_is_reattached_by_path_but_keeps_its_size(guest, tmp_path):
    disk, snap = make_disk(tmp_path, byte=1), tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), disk=[(str(disk), "ro")]) as m:
        m.boot_info()
        m.snapshot(snap)
    other = make_disk(tmp_path, "other.img", byte=2)
    with vmmpy.Machine.restore(snap, disk=str(other)) as r:
        dev = VirtioMMIO(r, slot_of(r, ID_BLOCK))
        (q,) = dev.init(queues=1)
        assert blk_request(q, 0, 0, data_in=512) == (0, b"\2" * 512)
    small = make_disk(tmp_path, "small.img", size=1 << 19)
    with pytest.raises(errors.VmmError, match="sectors") as e:
        vmmpy.Machine.restore(snap, disk=str(small)).close()
    assert "\n" not in str(e.value)


# ---- virtio-9p ----------------------------------------------------------------------------------


def test_9p_fids_are_rewalked_and_a_vanished_path_gives_estale(guest, tmp_path):
    share, snap = tmp_path / "share", tmp_path / "s.snap"
    share.mkdir()
    (share / "keep.txt").write_bytes(b"kept")
    (share / "gone.txt").write_bytes(b"gone")
    (share / "sub").mkdir()
    (share / "sub" / "moved.txt").write_bytes(b"moved")
    with vmmpy.Machine(guest("idle"), share=[(str(share), "snap")]) as m:
        m.boot_info()
        c = P9(m)
        c.version(8192)
        c.attach(0)
        c.walk(0, 1, "keep.txt")
        c.lopen(1)
        c.walk(0, 2, "gone.txt")
        c.lopen(2)
        c.walk(0, 3, "sub")
        c.walk(3, 4, "moved.txt")  # not open
        c.walk(0, 5, "sub")
        c.lopen(5)  # a directory open for readdir
        assert c.read(1) == b"kept"
        # the host renames behind the server's back before the save: the path is found at save time
        os.rename(share / "sub" / "moved.txt", share / "sub" / "renamed.txt")
        os.rename(share / "sub" / "renamed.txt", share / "sub" / "moved.txt")
        m.snapshot(snap)
    (share / "gone.txt").unlink()
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, c)
        assert c.read(1) == b"kept"
        with pytest.raises(P9Error) as e:
            c.read(2)
        assert e.value.errno == errno.ESTALE
        c.clunk(2)  # a dead fid can be clunked, and its number reused
        c.walk(0, 2, "keep.txt")
        c.lopen(2)
        assert c.read(2) == b"kept"
        c.walk(4, 6)  # a fid that was not open: walked again, usable
        c.lopen(6)
        assert c.read(6) == b"moved"
        assert sorted(c.listdir(5)) == [".", "..", "moved.txt"]


# ---- virtio-input ------------------------------------------------------------------------------


def test_input_pending_leds_and_schedule_survive(guest, tmp_path):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), input=True, deterministic=True) as m:
        m.boot_info()
        kbd, tab = Input(m, KBD), Input(m, TAB)
        kbd.statusq.add([struct.pack("<HHI", 0x11, 1, 1)], [])  # the driver lights CAPSL
        kbd.statusq.notify()
        m.stop_at(1_000_000)
        m.keyboard.press("a", at_ns=500_000)  # due before the stop: pending (no buffers posted)
        m.keyboard.release("a", at_ns=500_000)
        m.tablet.move(1, 1, at_ns=3_000_000)  # due after the stop: still scheduled
        res = m.run(timeout=60)
        assert res.reason == vmmpy.RunReason.STOPPED and m.clock_ns == 1_000_000
        assert m.keyboard.stats().pending == 4 and m.keyboard.leds == {"capslock"}
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, kbd, tab)
        assert r.keyboard.leds == {"capslock"} and r.keyboard.stats().pending == 4
        kbd.post(8)
        assert [e[:2] for e in kbd.events()] == [(1, 30), (0, 0), (1, 30), (0, 0)]
        tab.post(8)
        assert tab.events() == []  # its time has not come
        r.stop_at(4_000_000)
        assert r.run(timeout=60).reason == vmmpy.RunReason.STOPPED
        assert tab.events()[-1] == (0, 0, 0)  # the report arrived after its time


# ---- tier 2: guests -----------------------------------------------------------------------------


def test_gpu_capture_after_restore_equals_the_one_before_save(guest, tmp_path):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("gpu_demo"), gpu=True, deterministic=True) as m:
        m.screen.hold(2)
        m.screen.hold(5)  # pending: taken after the restore
        m.start()
        m.screen.wait_frame(3, pause=True, timeout=120)
        m.snapshot(snap)  # before anyone looked at frame 3 (a capture may be what converts it)
        before, held = m.screen.capture_rgba(), m.screen.capture_rgba(2)
        frames = m.screen.frames
        assert frames == 3
    with vmmpy.Machine.restore(snap) as r:
        assert r.screen.capture_rgba() == before  # the same size and pixels, as shown
        assert r.screen.capture_rgba(2) == held and r.screen.frames == frames
        r.start()
        r.screen.wait_frame(frames + 2, timeout=120)
        r.serial.expect(f"gpu_demo: frame {frames + 2}", timeout=60)
        assert r.screen.capture_rgba(5)[:2] == before[:2]


def test_input_echo_continues_exactly_with_typing_after_the_restore(guest, tmp_path):
    """Deterministic: saved at T, keys scheduled after T arrive identically; output = the uninterrupted run."""
    t_save, keys = 20_000_000, [(30_000_000, "h"), (31_000_000, "i")]

    def typing(m):
        for at, k in keys:
            m.keyboard.press(k, at_ns=at)
            m.keyboard.release(k, at_ns=at + 100_000)

    def run_to(m, t):
        m.stop_at(t)
        res = m.run(timeout=120)
        assert res.reason == vmmpy.RunReason.STOPPED, res

    with vmmpy.Machine(guest("input_echo"), input=True, deterministic=True) as m:
        typing(m)
        run_to(m, 60_000_000)
        full = m.serial.data
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("input_echo"), input=True, deterministic=True) as m:
        run_to(m, t_save)
        before = m.serial.data
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        typing(r)
        run_to(r, 60_000_000)
        after = r.serial.data
    assert before + after == full
    assert after  # the typing was echoed after the restore


# ---- damaged device sections ------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_snapshot(tmp_path_factory):
    d = tmp_path_factory.mktemp("devsnap")
    disk = make_disk(d)
    share = d / "share"
    share.mkdir()
    (share / "f").write_bytes(b"f")
    guest_dir = os.path.join(ROOT, "guest", "build")
    snap = d / "dev.snap"
    with vmmpy.Machine(
        os.path.join(guest_dir, "idle.elf"),
        disk=str(disk),
        share=[(str(share), "t")],
        rng=True,
        input=True,
        gpu=True,
        virtio_console=True,
        virtio_test_devices=1,
    ) as m:
        m.boot_info()
        for slot, _ in find_devices(m):
            VirtioMMIO(m, slot).init(queues=1)
        c = P9.__new__(P9)
        c.m, c.tag = m, 0
        c.dev = VirtioMMIO(m, slot_of(m, 9))
        (c.q,) = c.dev.init(queues=1)
        c.version(8192)
        c.attach(0)
        c.walk(0, 1, "f")
        c.lopen(1)
        m.snapshot(snap)
    return snap.read_bytes()


DEVICE_PREFIXES = (
    "virtio-blk",
    "virtio-9p",
    "virtio-rng",
    "virtio-input",
    "virtio-gpu",
    "virtio-console",
    "virtio-dummy",
)


def test_every_virtio_device_has_a_section(device_snapshot):
    names = {n for n, _, _ in sections(device_snapshot)}
    for want in (
        "virtio-blk.0",
        "virtio-9p.0",
        "virtio-rng.0",
        "virtio-input.0",
        "virtio-input.1",
        "virtio-gpu.0",
        "virtio-console.0",
        "virtio-dummy.0",
    ):
        assert want in names, names


def with_section_crc(data: bytearray, off: int, plen: int) -> None:
    struct.pack_into("<I", data, off - 8, zlib.crc32(bytes(data[off : off + plen])))


def test_corrupted_device_sections_fail_cleanly(tmp_path, device_snapshot):
    """Bytes of every device section changed (CRC fixed so the device's loader sees them): never a crash."""
    p = tmp_path / "bad.snap"
    failures = 0
    for name, off, plen in sections(device_snapshot):
        if not name.startswith(DEVICE_PREFIXES):
            continue
        for pos in sorted({0, 4, 8, 12, 16, 20, 24, 28, 33, 40, 48, 57, 64, plen // 2, plen - 9, plen - 1}):
            if pos >= plen:
                continue
            data = bytearray(device_snapshot)
            data[off + pos] ^= 0xFF
            with_section_crc(data, off, plen)
            p.write_bytes(data)
            try:
                vmmpy.Machine.restore(p).close()
            except errors.VmmError as e:
                assert "\n" not in str(e) and str(e), (name, pos)
                failures += 1
    assert failures > 20


def test_a_bad_queue_size_is_refused_naming_the_device(tmp_path, device_snapshot):
    data = bytearray(device_snapshot)
    ((off, plen),) = [(o, n) for name, o, n in sections(device_snapshot) if name == "virtio-rng.0"]
    # the core's fields: device id, queues, offered (8), status, isr, generation, driver features (8);
    # then queue 0: num_max (2), num (2), ...
    qoff = off + 4 + 4 + 8 + 4 + 4 + 4 + 8
    assert struct.unpack_from("<HH?", data, qoff)[2] is True  # the queue is live
    struct.pack_into("<H", data, qoff + 2, 3)
    with_section_crc(data, off, plen)
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    with pytest.raises(errors.VmmError, match=r"virtio-rng\.0.*queue 0 is live but QueueNum is not a power of 2") as e:
        vmmpy.Machine.restore(p).close()
    assert "\n" not in str(e.value)
    struct.pack_into("<H", data, qoff + 2, 64)
    struct.pack_into("<Q", data, qoff + 5, 0x7000_0000_0000)  # descriptor area far outside RAM
    with_section_crc(data, off, plen)
    p.write_bytes(data)
    with pytest.raises(errors.VmmError, match="outside guest RAM"):
        vmmpy.Machine.restore(p).close()


def test_a_device_restored_on_another_slot_is_refused_naming_both(tmp_path, device_snapshot):
    """The virtio-mmio transport's part of a device section starts with the slot the device was on: a
    snapshot is refused if its device is now on another slot, a higher one or a lower one."""
    ((off, plen),) = [(o, n) for name, o, n in sections(device_snapshot) if name == "virtio-rng.0"]
    # the core (36 bytes) and its one queue (36), then the transport: slot and four selectors (u32 each)
    assert plen == 36 + 36 + 20
    (slot,) = struct.unpack_from("<I", device_snapshot, off + 72)
    assert slot >= 1
    p = tmp_path / "moved.snap"
    for other in (slot - 1, slot + 1):
        data = bytearray(device_snapshot)
        struct.pack_into("<I", data, off + 72, other)
        with_section_crc(data, off, plen)
        p.write_bytes(data)
        want = rf"virtio-rng\.0.*the device was on virtio-mmio slot {other}, it is now on slot {slot}"
        with pytest.raises(errors.VmmError, match=want):
            vmmpy.Machine.restore(p).close()


def test_features_the_device_refuses_are_refused_at_restore(tmp_path, device_snapshot):
    """The virtio core checks a restored FEATURES_OK against the device's own rule, as a driver's write of
    FEATURES_OK is: the test device refuses feature B (bit 1) without A (bit 0)."""
    ((off, plen),) = [(o, n) for name, o, n in sections(device_snapshot) if name == "virtio-dummy.0"]
    # the core's fields: device id, queues, offered (8), status, isr, generation, driver features (8)
    status, driver = struct.unpack_from("<I", device_snapshot, off + 16)[0], off + 28
    assert status & 8  # FEATURES_OK
    data = bytearray(device_snapshot)
    struct.pack_into("<Q", data, driver, 1 << 32 | 1 << 1)  # VERSION_1 and B, without A
    with_section_crc(data, off, plen)
    p = tmp_path / "refused.snap"
    p.write_bytes(data)
    with pytest.raises(
        errors.VmmError, match=r"virtio-dummy\.0.*the device refuses the negotiated features 0x100000002"
    ):
        vmmpy.Machine.restore(p).close()
    # before FEATURES_OK the driver may still be choosing: the same features are restored as written
    struct.pack_into("<I", data, off + 16, 1 | 2)  # ACKNOWLEDGE | DRIVER
    with_section_crc(data, off, plen)
    p.write_bytes(data)
    vmmpy.Machine.restore(p).close()


@pytest.mark.parametrize(
    ("field", "fmt", "value", "message"),
    [
        # the core's fields: device id (0), queues (4), offered (8), status (16), isr (20), generation (24),
        # driver features (28): each check refuses a state the register file cannot reach
        (0, "<I", 99, r"saved virtio device 99 with 2 queues, this one is \d+ with 2"),
        (4, "<I", 3, r"saved virtio device \d+ with 3 queues, this one is \d+ with 2"),
        (8, "<Q", 1 << 32, r"saved features 0x100000000 differ from the 0x[0-9a-f]+ this device offers"),
        (16, "<I", 0x10F, r"device status 0x10f is not a byte"),
        (20, "<I", 4, r"interrupt status 0x4 has unknown bits"),
        (16, "<I", 1 | 2 | 4, r"device status 0x7: DRIVER_OK without FEATURES_OK"),
        (28, "<Q", 1 << 32 | 1 << 7, r"negotiated features 0x100000080 were not offered"),
        (28, "<Q", 1, r"negotiated features 0x1 were not offered"),  # no VERSION_1
    ],
    ids=["device", "queues", "offered", "status", "isr", "driver_ok", "not-offered", "legacy"],
)
def test_a_virtio_core_state_the_registers_cannot_reach_is_refused(
    tmp_path, device_snapshot, field, fmt, value, message
):
    ((off, plen),) = [(o, n) for name, o, n in sections(device_snapshot) if name == "virtio-dummy.0"]
    assert struct.unpack_from("<I", device_snapshot, off + 16)[0] == 1 | 2 | 4 | 8  # live
    data = bytearray(device_snapshot)
    struct.pack_into(fmt, data, off + field, value)
    with_section_crc(data, off, plen)
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    with pytest.raises(errors.VmmError, match=r"virtio-dummy\.0.*" + message):
        vmmpy.Machine.restore(p).close()


# ---- tier 3: Linux -----------------------------------------------------------------------------


@pytest.mark.slow
def test_linux_with_disk_and_share_continues_after_restore(tmp_path):
    """Debian's shell with virtio-blk and a mounted 9p share (a file held open by the shell) is saved at its
    prompt; the restored VM reads the disk, reads on through the open fid, and writes into the share."""
    from .test_linux import CMDLINE, CPUS, VMMPY_BOOT_TIMEOUT, _initramfs, fetch_debian, initramfs

    try:
        kernel = fetch_debian.kernel()
    except fetch_debian.FetchError as e:
        pytest.fail(f"cannot fetch Debian's arm64 kernel: {e}")
    initrd = _initramfs(shell=True, modules=["virtio_mmio", "virtio_blk", "9pnet_virtio", "9p"])
    disk, share, snap = tmp_path / "d.img", tmp_path / "share", tmp_path / "linux.snap"
    disk.write_bytes(b"VMMPY-DISK-MAGIC".ljust(1 << 20, b"\0"))
    share.mkdir()
    (share / "held.txt").write_bytes(b"line one\nline two\n")
    with vmmpy.Machine(
        kernel,
        cpus=CPUS,
        ram="512M",
        initrd=initrd,
        cmdline=CMDLINE,
        deterministic=True,
        disk=str(disk),
        share=[(str(share), "share")],
    ) as m:
        m.serial.expect(initramfs.PROMPT_RE, timeout=VMMPY_BOOT_TIMEOUT)
        m.serial.write(
            b"mkdir -p /mnt/s && mount -t 9p -o trans=virtio,version=9p2000.L share /mnt/s && exec 3</mnt/s/held.txt"
            b" && read -r first <&3 && echo got-[$first]-$((40+2))\r"
        )
        m.serial.expect(rb"got-\[line one\]-42", timeout=120)
        m.serial.expect(initramfs.PROMPT_RE, timeout=60)
        m.stop()
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        r.serial.read()
        r.serial.write(
            b"head -c 16 /dev/vda; echo; read -r second <&3; echo next-[$second]; echo from-guest > /mnt/s/new.txt;"
            b" sync; echo DONE-$((6*7))\r"
        )
        r.serial.expect(rb"DONE-42", timeout=120)
        out = r.serial.text
    assert "VMMPY-DISK-MAGIC" in out and "next-[line two]" in out, out[-2000:]
    assert (share / "new.txt").read_text() == "from-guest\n"
