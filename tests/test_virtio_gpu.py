"""Tier 1: the virtio-gpu 2D device (virtio 1.2 §5.7) driven over virtio-mmio, and the screen API."""

from __future__ import annotations

import struct
import time

import pytest

import vmmpy
from tests.conftest import RAM_BASE, WFI, b_back, code
from tests.virtio_driver import ID_GPU, VirtioMMIO, find_devices
from vmmpy._ffi import ffi, lib

GPU_ID = ID_GPU
F_EDID = 1 << 1

# command and response types (§5.7.6.7)
GET_DISPLAY_INFO, CREATE_2D, UNREF, SET_SCANOUT, FLUSH, TRANSFER, ATTACH, DETACH = range(0x100, 0x108)
GET_EDID = 0x10A
CTX_CREATE, CTX_DESTROY, SUBMIT_3D = 0x200, 0x201, 0x207
UPDATE_CURSOR, MOVE_CURSOR = 0x300, 0x301
OK_NODATA, OK_DISPLAY_INFO, OK_EDID = 0x1100, 0x1101, 0x1104
ERR_UNSPEC, ERR_OUT_OF_MEMORY, ERR_INVALID_SCANOUT_ID = 0x1200, 0x1201, 0x1202
ERR_INVALID_RESOURCE_ID, ERR_INVALID_CONTEXT_ID, ERR_INVALID_PARAMETER = 0x1203, 0x1204, 0x1205
FLAG_FENCE = 1

# format -> byte order in memory (X: ignored byte)
FORMATS = {1: "BGRA", 2: "BGRX", 3: "ARGB", 4: "XRGB", 67: "RGBA", 68: "XBGR", 121: "ABGR", 134: "RGBX"}
BGRX = 2


def hdr(type_: int, flags: int = 0, fence: int = 0, ctx: int = 0) -> bytes:
    return struct.pack("<IIQIB3x", type_, flags, fence, ctx, 0)


def rect(x: int, y: int, w: int, h: int) -> bytes:
    return struct.pack("<4I", x, y, w, h)


class Gpu:
    """A driver for the GPU on `m` built on tests/virtio_driver.py."""

    def __init__(self, m: vmmpy.Machine, features: int | None = None):
        self.m = m
        slots = [s for s, dev_id in find_devices(m) if dev_id == GPU_ID]
        assert len(slots) == 1, find_devices(m)
        self.dev = VirtioMMIO(m, slots[0])
        self.ctrl, self.cursor = self.dev.init(queues=2, features=features)

    def raw(self, out: list[bytes], resp: int = 24, q=None) -> tuple[int, bytes]:
        """Send a chain, return (used length, response bytes)."""
        q = q or self.ctrl
        head = q.add(out, [resp] if resp else [])
        q.notify()
        used = q.get_used()
        assert [u[0] for u in used] == [head], "the device must complete each request at once, in order"
        return used[0][1], q.chain_data(head)

    def cmd(self, type_: int, body: bytes = b"", resp: int = 24, q=None, **kw) -> int:
        n, data = self.raw([hdr(type_, **kw) + body], resp, q)
        assert n >= 24
        return struct.unpack_from("<I", data)[0]

    # -- 2D helpers: each asserts success --------------------------------------
    def create(self, rid: int, w: int, h: int, fmt: int = BGRX) -> None:
        assert self.cmd(CREATE_2D, struct.pack("<4I", rid, fmt, w, h)) == OK_NODATA

    def attach(self, rid: int, entries: list[tuple[int, int]]) -> int:
        body = struct.pack("<II", rid, len(entries)) + b"".join(struct.pack("<QII", a, n, 0) for a, n in entries)
        return self.cmd(ATTACH, body)

    def backing(self, rid: int, data: bytes, pieces: int = 3) -> list[tuple[int, int]]:
        """Put `data` in guest RAM as `pieces` scattered entries (gaps between them) and attach them."""
        step = -(-len(data) // pieces)
        entries = []
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            gpa = self.ctrl.buf(len(chunk) + 64)
            self.m.write_memory(gpa, chunk)
            entries.append((gpa, len(chunk)))
        assert self.attach(rid, entries) == OK_NODATA
        return entries

    def set_scanout(self, rid: int, r: tuple[int, int, int, int], scanout: int = 0) -> int:
        return self.cmd(SET_SCANOUT, rect(*r) + struct.pack("<II", scanout, rid))

    def transfer(self, rid: int, r: tuple[int, int, int, int], offset: int = 0) -> int:
        return self.cmd(TRANSFER, rect(*r) + struct.pack("<QII", offset, rid, 0))

    def flush(self, rid: int, r: tuple[int, int, int, int]) -> int:
        return self.cmd(FLUSH, rect(*r) + struct.pack("<II", rid, 0))

    def show(self, rid: int, w: int, h: int, pixels: bytes, fmt: int = BGRX) -> None:
        """create, attach, set_scanout, transfer and flush a whole w x h resource."""
        self.create(rid, w, h, fmt)
        self.backing(rid, pixels)
        assert self.set_scanout(rid, (0, 0, w, h)) == OK_NODATA
        assert self.transfer(rid, (0, 0, w, h)) == OK_NODATA
        assert self.flush(rid, (0, 0, w, h)) == OK_NODATA


def encode(rgb: list[tuple[int, int, int]], fmt: int) -> bytes:
    """RGB pixels in a guest format; alpha and X bytes get junk the screen must ignore."""
    order = FORMATS[fmt]
    out = bytearray()
    for r, g, b in rgb:
        val = {"R": r, "G": g, "B": b, "A": 0x37, "X": 0xA5}
        out += bytes(val[c] for c in order)
    return bytes(out)


def pattern(w: int, h: int, seed: int = 0) -> list[tuple[int, int, int]]:
    return [
        ((x * 37 + seed) & 255, (y * 59 + seed * 3) & 255, (x * y + seed * 7) & 255) for y in range(h) for x in range(w)
    ]


def pixels(img) -> list[tuple[int, int, int]]:
    assert img.mode == "RGB"
    b = img.tobytes()
    return [tuple(b[i : i + 3]) for i in range(0, len(b), 3)]


@pytest.fixture
def gpu_machine():
    made = []

    def make(**kw):
        kw.setdefault("gpu", True)
        m = vmmpy.Machine(**kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def gpu(gpu_machine):
    return Gpu(gpu_machine(gpu_size=(640, 480)))


# -- discovery, config space, display info, EDID --------------------------------


def test_device_id_features_and_config_space(gpu):
    dev = gpu.dev
    assert dev.device_id == GPU_ID
    assert dev.device_features() & F_EDID
    assert not dev.device_features() & 1, "no VIRGL"
    assert [dev.config_read(o) for o in (0, 4, 8, 12)] == [0, 0, 1, 0]  # events_read/clear, 1 scanout, 0 capsets
    dev.config_write(4, 0xFFFF_FFFF)  # events_clear: accepted, nothing pending
    assert dev.config_read(0) == 0
    assert not dev.needs_reset()


def test_display_info_reports_one_enabled_scanout_at_the_configured_size(gpu):
    n, data = gpu.raw([hdr(GET_DISPLAY_INFO)], 408)
    assert n == 408
    assert struct.unpack_from("<I", data)[0] == OK_DISPLAY_INFO
    modes = [struct.unpack_from("<6I", data, 24 + 24 * i) for i in range(16)]
    assert modes[0] == (0, 0, 640, 480, 1, 0)
    assert all(mo == (0,) * 6 for mo in modes[1:])


def test_edid_is_a_valid_block_with_the_mode_as_preferred_timing(gpu):
    n, data = gpu.raw([hdr(GET_EDID) + struct.pack("<II", 0, 0)], 1056)
    assert n == 1056
    typ, size = struct.unpack_from("<I", data)[0], struct.unpack_from("<I", data, 24)[0]
    assert (typ, size) == (OK_EDID, 128)
    e = data[32:160]
    assert e[:8] == bytes([0, 255, 255, 255, 255, 255, 255, 0])
    assert sum(e) % 256 == 0, "checksum"
    assert (e[18], e[19]) == (1, 4)
    assert e[24] & 2, "the first detailed timing is the preferred mode"
    d = e[54:72]
    assert d[0] | d[1] << 8, "a detailed timing, not a display descriptor"
    assert d[2] | (d[4] >> 4) << 8 == 640
    assert d[5] | (d[7] >> 4) << 8 == 480
    assert any(e[i : i + 5] == bytes([0, 0, 0, 0xFC, 0]) for i in (72, 90, 108)), "a monitor name"


def test_edid_needs_the_feature_and_scanout_0(gpu_machine):
    g = Gpu(gpu_machine(), features=1 << 32)  # VERSION_1 only: EDID not negotiated
    assert g.cmd(GET_EDID, struct.pack("<II", 0, 0), 1056) == ERR_UNSPEC
    g = Gpu(g.m)
    assert g.cmd(GET_EDID, struct.pack("<II", 1, 0), 1056) == ERR_INVALID_SCANOUT_ID


def test_edid_for_the_default_mode(gpu_machine):
    g = Gpu(gpu_machine())
    _, data = g.raw([hdr(GET_EDID) + struct.pack("<II", 0, 0)], 1056)
    e = data[32:160]
    assert sum(e) % 256 == 0
    assert (e[56] | (e[58] >> 4) << 8, e[59] | (e[61] >> 4) << 8) == (1280, 800)


def test_a_mode_the_edid_cannot_describe_is_refused():
    with pytest.raises(vmmpy.InvalidArgument, match="GPU mode"):
        vmmpy.Machine(gpu=True, gpu_size=(5000, 600))


# -- pixels: what the guest wrote is what a capture shows ----------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS), ids=[FORMATS[f] for f in sorted(FORMATS)])
def test_capture_shows_exactly_the_guest_pixels(gpu, fmt):
    w, h = 13, 7
    rgb = pattern(w, h, fmt)
    gpu.show(5, w, h, encode(rgb, fmt), fmt)
    assert gpu.m.screen.size == (w, h)
    assert gpu.m.screen.frames == 1
    img = gpu.m.screen.capture()
    assert img.size == (w, h)
    assert pixels(img) == rgb
    w_, h_, raw = gpu.m.screen.capture_rgba()
    assert raw[3::4] == b"\xff" * (w * h), "a scanout is opaque: alpha bytes are ignored"


def test_scanout_rectangle_shows_part_of_a_larger_resource(gpu):
    w, h = 20, 10
    rgb = pattern(w, h, 1)
    gpu.create(1, w, h)
    gpu.backing(1, encode(rgb, BGRX))
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert gpu.set_scanout(1, (4, 3, 8, 5)) == OK_NODATA
    assert gpu.m.screen.size == (8, 5)
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA
    want = [rgb[y * w + x] for y in range(3, 8) for x in range(4, 12)]
    assert pixels(gpu.m.screen.capture()) == want


def test_partial_transfer_reads_rows_from_offset_plus_stride(gpu):
    w, h = 16, 8
    gpu.create(2, w, h)
    old, new = pattern(w, h, 2), pattern(w, h, 9)
    entries = gpu.backing(2, encode(old, BGRX), pieces=4)
    assert gpu.set_scanout(2, (0, 0, w, h)) == OK_NODATA
    assert gpu.transfer(2, (0, 0, w, h)) == OK_NODATA
    # rewrite the whole backing, then transfer only a 5x3 rectangle at (6, 2)
    data = encode(new, BGRX)
    at = 0
    for gpa, n in entries:
        gpu.m.write_memory(gpa, data[at : at + n])
        at += n
    x0, y0, rw, rh = 6, 2, 5, 3
    assert gpu.transfer(2, (x0, y0, rw, rh), offset=(y0 * w + x0) * 4) == OK_NODATA
    assert gpu.flush(2, (0, 0, w, h)) == OK_NODATA
    inside = {(x, y) for x in range(x0, x0 + rw) for y in range(y0, y0 + rh)}
    want = [(new if (x, y) in inside else old)[y * w + x] for y in range(h) for x in range(w)]
    assert pixels(gpu.m.screen.capture()) == want


def test_transfer_offset_is_independent_of_the_rectangle(gpu):
    """The offset says where row 0 starts in the backing: a packed 3x2 upload into (10, 4)."""
    w, h = 16, 8
    gpu.create(3, w, h)
    blob = encode(pattern(w, h, 0), BGRX)
    gpu.backing(3, blob, pieces=2)
    assert gpu.set_scanout(3, (0, 0, w, h)) == OK_NODATA
    assert gpu.transfer(3, (10, 4, 3, 2), offset=8) == OK_NODATA
    assert gpu.flush(3, (10, 4, 3, 2)) == OK_NODATA
    img = gpu.m.screen.capture()
    src = pattern(w, h, 0)
    for r in range(2):
        for c in range(3):
            k = (8 + r * w * 4) // 4 + c
            assert img.getpixel((10 + c, 4 + r)) == src[k]
    assert img.getpixel((0, 0)) == (0, 0, 0), "never transferred: black"


def test_a_flush_presents_only_its_rectangle(gpu):
    w, h = 8, 8
    gpu.show(1, w, h, encode(pattern(w, h, 1), BGRX))
    first = pixels(gpu.m.screen.capture())
    second = pattern(w, h, 5)
    gpu.cmd(DETACH, struct.pack("<II", 1, 0))
    gpu.backing(1, encode(second, BGRX))
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert pixels(gpu.m.screen.capture()) == first, "a transfer alone shows nothing"
    assert gpu.flush(1, (0, 0, 4, 8)) == OK_NODATA
    want = [(second if x < 4 else first)[y * w + x] for y in range(h) for x in range(w)]
    assert pixels(gpu.m.screen.capture()) == want


def test_a_frame_nobody_looked_at_survives_later_transfers(gpu):
    """A flush is converted only when someone looks: transfers after it (full ones write a second
    buffer, partial ones convert the pending flush first) must not change what it shows."""
    w, h = 8, 6
    s = gpu.m.screen
    imgs = [pattern(w, h, i) for i in range(4)]
    gpu.create(1, w, h)
    gpu.backing(1, encode(imgs[0], BGRX), pieces=1)
    assert gpu.set_scanout(1, (0, 0, w, h)) == OK_NODATA

    def load(i: int) -> None:  # new backing content, transferred whole
        gpu.cmd(DETACH, struct.pack("<II", 1, 0))
        gpu.backing(1, encode(imgs[i], BGRX), pieces=2)

    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA  # frame 1 = imgs[0], not converted yet
    load(1)
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA  # full: into the spare buffer
    assert pixels(s.capture()) == imgs[0], "a transfer alone shows nothing"
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA  # frame 2 = imgs[1]
    load(2)
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA  # full again: the buffers swap back
    load(3)
    assert gpu.transfer(1, (2, 1, 3, 2), offset=(1 * w + 2) * 4) == OK_NODATA  # partial, over pixels of frame 2
    assert pixels(s.capture()) == imgs[1]
    assert gpu.flush(1, (0, 0, 4, 3)) == OK_NODATA  # frame 3: imgs[2] with imgs[3] in (2..4, 1..2)
    s.hold(4)
    assert gpu.flush(1, (4, 3, 4, 3)) == OK_NODATA  # frame 4 adds the bottom-right quarter
    held = pixels(s.capture(4))

    def frame3(x: int, y: int):
        return imgs[3 if 2 <= x < 5 and 1 <= y < 3 else 2][y * w + x]

    want = [(frame3(x, y) if x < 4 and y < 3 else frame3(x, y) if x >= 4 and y >= 3 else imgs[1][y * w + x])
            for y in range(h) for x in range(w)]  # fmt: skip
    assert held == want
    assert pixels(s.capture()) == want
    assert gpu.cmd(UNREF, struct.pack("<II", 1, 0)) == OK_NODATA
    assert s.size == (0, 0)


def test_a_flush_nobody_looks_at_converts_nothing(gpu):
    """Flushes cost no conversion until someone looks (vmm_screen_info's `converted`): a flush that covers the
    pending one drops it unconverted; the first capture converts the latest frame once, a second one nothing."""
    w, h = 16, 8
    s = gpu.m.screen
    gpu.create(1, w, h)
    gpu.backing(1, encode(pattern(w, h, 0), BGRX), pieces=2)
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert gpu.set_scanout(1, (0, 0, w, h)) == OK_NODATA  # shows the resource at once: one conversion
    base = s.info().converted
    assert base == w * h
    for _ in range(5):  # full frames: each covers the one before, which is never converted
        assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
        assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA
    assert s.info().converted == base, "a full flush nobody looked at was converted"
    assert gpu.flush(1, (2, 2, 4, 4)) == OK_NODATA  # does not cover the pending frame: that one is converted
    assert s.info().converted == base + w * h
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA  # covers the partial one, which is never converted
    assert s.info().converted == base + w * h
    assert pixels(s.capture()) == pattern(w, h, 0)
    assert s.info().converted == base + 2 * w * h, "the first look converts the latest frame, once"
    s.capture()
    assert s.info().converted == base + 2 * w * h, "a second look converts nothing"


def test_transfer_over_adjacent_backing_entries(gpu):
    """Entries that continue one another (split mid-row, as a driver's pages split a frame) and entries
    out of order (not joined): full-width bands, a full frame and a partial rectangle all read the right
    bytes."""
    w, h = 24, 10
    gpu.create(1, w, h)
    data = encode(pattern(w, h, 3), BGRX)
    cuts = [0, 100, 101, 96 * 3 + 7, 500, 700, len(data)]  # pieces of odd sizes
    pieces = list(zip(cuts, cuts[1:], strict=False))
    (a0, a1), (b0, b1) = pieces[-2:]
    base = gpu.ctrl.buf(len(data) + 64)
    # in memory: the pieces before A adjacent to one another, then B, then A
    gpu.m.write_memory(base, data[:a0] + data[b0:b1] + data[a0:a1])
    entries = [(base + p0, p1 - p0) for p0, p1 in pieces[:-2]]
    entries += [(base + a0 + (b1 - b0), a1 - a0), (base + a0, b1 - b0)]
    assert gpu.attach(1, entries) == OK_NODATA
    assert gpu.set_scanout(1, (0, 0, w, h)) == OK_NODATA
    src = pattern(w, h, 3)
    assert gpu.transfer(1, (0, 3, w, 4), offset=3 * w * 4) == OK_NODATA  # a full-width band
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA
    want = [src[y * w + x] if 3 <= y < 7 else (0, 0, 0) for y in range(h) for x in range(w)]
    assert pixels(gpu.m.screen.capture()) == want
    assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert gpu.transfer(1, (5, 1, 7, 6), offset=0) == OK_NODATA  # rows of 7 from offset k * stride
    assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA
    inside = {(x, y) for x in range(5, 12) for y in range(1, 7)}
    want = [src[(y - 1) * w + x - 5] if (x, y) in inside else src[y * w + x] for y in range(h) for x in range(w)]
    assert pixels(gpu.m.screen.capture()) == want


# -- frames, hold, capture of an exact frame ------------------------------------------


def test_frames_count_flushes_that_touch_scanout_0(gpu):
    s = gpu.m.screen
    assert (s.size, s.frames) == ((0, 0), 0)
    gpu.create(1, 32, 32)
    gpu.create(2, 8, 8)
    gpu.backing(1, bytes(32 * 32 * 4))
    assert gpu.set_scanout(1, (8, 8, 16, 16)) == OK_NODATA
    assert s.frames == 0, "set_scanout is not a frame"
    assert gpu.flush(1, (0, 0, 8, 8)) == OK_NODATA and s.frames == 0, "outside the scanout rectangle"
    assert gpu.flush(1, (24, 0, 8, 32)) == OK_NODATA and s.frames == 0
    assert gpu.flush(2, (0, 0, 8, 8)) == OK_NODATA and s.frames == 0, "not the scanout's resource"
    assert gpu.flush(1, (7, 7, 2, 2)) == OK_NODATA and s.frames == 1, "touches one pixel of it"
    assert gpu.flush(1, (0, 0, 32, 32)) == OK_NODATA and s.frames == 2
    assert s.wait_frame(2, timeout=0) == 2
    assert s.info() == vmmpy.ScreenInfo(
        16, 16, 2, converted=16 * 16
    )  # set_scanout showed the resource; no flush converted


def test_hold_keeps_exactly_that_frame(gpu):
    w, h = 6, 4
    s = gpu.m.screen
    gpu.create(1, w, h)
    images = [pattern(w, h, i) for i in range(5)]
    entries = gpu.backing(1, encode(images[0], BGRX), pieces=1)
    assert gpu.set_scanout(1, (0, 0, w, h)) == OK_NODATA
    s.hold(2)
    s.hold(4)
    s.hold(4)  # twice is fine
    for i in range(5):
        gpu.m.write_memory(entries[0][0], encode(images[i], BGRX))
        assert gpu.transfer(1, (0, 0, w, h)) == OK_NODATA
        assert gpu.flush(1, (0, 0, w, h)) == OK_NODATA
        if i == 0:
            s.hold(1)  # the latest frame, unchanged since: still holdable
    assert s.frames == 5
    assert pixels(s.capture(frame=1)) == images[0]
    assert pixels(s.capture(frame=2)) == images[1]
    assert pixels(s.capture(frame=4)) == images[3]
    assert pixels(s.capture()) == images[4]
    with pytest.raises(vmmpy.StateError, match="not held"):
        s.capture(frame=3)
    with pytest.raises(vmmpy.StateError, match="already been shown"):
        s.hold(3)
    with pytest.raises(vmmpy.StateError, match="frame 9 was not held or has not been shown yet"):
        s.capture(frame=9)  # held? no; happened? no
    s.hold(9)
    with pytest.raises(vmmpy.StateError, match="not been shown yet"):
        s.capture(frame=9)


def test_held_frames_are_limited_to_64_pending(gpu):
    s = gpu.m.screen
    for n in range(1, 65):
        s.hold(n)
    with pytest.raises(vmmpy.StateError, match="64"):
        s.hold(65)
    with pytest.raises(vmmpy.InvalidArgument, match="frames are numbered from 1"):
        s.hold(0)


def test_save_writes_a_png(gpu, tmp_path):
    rgb = pattern(5, 3, 4)
    gpu.show(1, 5, 3, encode(rgb, 67), 67)
    gpu.m.screen.save(tmp_path / "f.png")
    from PIL import Image

    with Image.open(tmp_path / "f.png") as img:
        assert img.size == (5, 3)
        assert pixels(img.convert("RGB")) == rgb


def test_disabling_the_scanout_empties_the_screen(gpu):
    gpu.show(1, 4, 4, bytes(64))
    assert gpu.set_scanout(0, (0, 0, 0, 0)) == OK_NODATA
    assert gpu.m.screen.size == (0, 0)
    with pytest.raises(vmmpy.StateError, match="shows nothing"):
        gpu.m.screen.capture()
    assert gpu.set_scanout(1, (0, 0, 4, 4)) == OK_NODATA
    assert gpu.cmd(UNREF, struct.pack("<II", 1, 0)) == OK_NODATA
    assert gpu.m.screen.size == (0, 0), "unref of the scanout's resource disables it"


def test_capture_of_1280x800_is_one_copy(gpu_machine):
    """The capture's target (< 2 ms) is measured by bench/gpu.py; a timed test keeps only a bound 12x above
    it, which a loaded 2-core host under ASan holds and an extra pass over the frame per capture breaks."""
    g = Gpu(gpu_machine())
    w, h = 1280, 800
    g.create(1, w, h)
    blob = bytes(range(256)) * (w * h * 4 // 256)
    gpa = g.ctrl.buf(len(blob), 4096)
    g.m.write_memory(gpa, blob)
    assert g.attach(1, [(gpa, len(blob))]) == OK_NODATA
    assert g.set_scanout(1, (0, 0, w, h)) == OK_NODATA
    assert g.transfer(1, (0, 0, w, h)) == OK_NODATA
    assert g.flush(1, (0, 0, w, h)) == OK_NODATA
    buf = ffi.new("uint8_t[]", w * h * 4)
    pw, ph, fo = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint64_t *")
    times = []
    for _ in range(15):
        t = time.perf_counter()
        assert lib.vmm_screen_capture(g.m._vm, 0, buf, w * h * 4, pw, ph, fo) == 0
        times.append(time.perf_counter() - t)
    assert (pw[0], ph[0], fo[0]) == (w, h, 1)
    assert sorted(times)[len(times) // 2] < 0.025, f"median {sorted(times)[len(times) // 2] * 1e3:.2f} ms"
    # BGRX 00 01 02 03 -> R=02 G=01 B=00
    assert bytes(buf[0:8]) == bytes([2, 1, 0, 255, 6, 5, 4, 255])


# -- wait_frame against a running VM --------------------------------------------------------


def test_wait_frame_times_out_then_reports_the_end_of_the_run(gpu_machine, raw_guest):
    m = gpu_machine()
    m.load_kernel(raw_guest(code(WFI, b_back(1))), format="raw", load_addr=RAM_BASE, entry=RAM_BASE)
    t = time.monotonic()
    with pytest.raises(vmmpy.ScreenTimeout, match="frame 1"):
        m.screen.wait_frame(1, timeout=0.3)  # starts the machine
    assert 0.25 < time.monotonic() - t < 5
    assert m.running
    m.stop()
    with pytest.raises(vmmpy.ScreenEOF, match="STOPPED"):
        m.screen.wait_frame(1, timeout=5)


def test_screen_without_a_gpu_raises_not_supported():
    with vmmpy.Machine() as m:
        assert not [d for d in find_devices(m) if d[1] == GPU_ID]
        with pytest.raises(vmmpy.NotSupported, match="no GPU"):
            m.screen.info()
        with pytest.raises(vmmpy.NotSupported, match="no GPU"):
            m.screen.capture()


# -- cursor queue ------------------------------------------------------------------


def test_cursor_commands_are_accepted_on_the_cursor_queue(gpu):
    gpu.create(9, 64, 64, 1)
    upd = struct.pack("<4I4I", 0, 10, 20, 0, 9, 3, 4, 0)
    assert gpu.cmd(UPDATE_CURSOR, upd, q=gpu.cursor) == OK_NODATA
    assert gpu.cmd(MOVE_CURSOR, struct.pack("<4I4I", 0, 30, 40, 0, 0, 0, 0, 0), q=gpu.cursor) == OK_NODATA
    # Linux gives cursor commands no response buffer: used length 0
    n, _ = gpu.raw([hdr(MOVE_CURSOR) + struct.pack("<8I", 0, 1, 2, 0, 0, 0, 0, 0)], 0, q=gpu.cursor)
    assert n == 0
    assert gpu.cmd(UPDATE_CURSOR, struct.pack("<8I", 1, 0, 0, 0, 9, 0, 0, 0), q=gpu.cursor) == ERR_INVALID_SCANOUT_ID
    bad = struct.pack("<8I", 0, 0, 0, 0, 77, 0, 0, 0)
    assert gpu.cmd(UPDATE_CURSOR, bad, q=gpu.cursor) == ERR_INVALID_RESOURCE_ID
    assert gpu.cmd(UPDATE_CURSOR, struct.pack("<8I", 0, 0, 0, 0, 0, 0, 0, 0), q=gpu.cursor) == OK_NODATA  # hide
    # each queue takes only its own commands
    assert gpu.cmd(GET_DISPLAY_INFO, q=gpu.cursor) == ERR_UNSPEC
    assert gpu.cmd(MOVE_CURSOR, struct.pack("<8I", 0, 0, 0, 0, 0, 0, 0, 0)) == ERR_UNSPEC
    assert not gpu.dev.needs_reset()


# -- fences -------------------------------------------------------------------------


def test_fenced_commands_echo_fence_id_and_ctx_id(gpu):
    n, data = gpu.raw([hdr(CREATE_2D, FLAG_FENCE, 0x1122334455667788, 7) + struct.pack("<4I", 1, BGRX, 4, 4)])
    assert n == 24
    assert struct.unpack("<IIQIB3x", data) == (OK_NODATA, FLAG_FENCE, 0x1122334455667788, 7, 0)
    n, data = gpu.raw([hdr(UNREF, FLAG_FENCE, 5, 0) + struct.pack("<II", 99, 0)])
    assert struct.unpack("<IIQIB3x", data)[:3] == (ERR_INVALID_RESOURCE_ID, FLAG_FENCE, 5)
    _, data = gpu.raw([hdr(UNREF) + struct.pack("<II", 1, 0)])
    assert struct.unpack("<IIQIB3x", data) == (OK_NODATA, 0, 0, 0, 0)


# -- malformed and hostile requests: the spec's error, never a crash ---------------------


def test_unknown_short_and_3d_commands(gpu):
    assert gpu.cmd(0x1FF) == ERR_UNSPEC
    assert gpu.cmd(0xDEADBEEF) == ERR_UNSPEC
    assert gpu.cmd(CTX_CREATE, bytes(80)) == ERR_UNSPEC
    assert gpu.cmd(CTX_DESTROY, bytes(8), ctx=3) == ERR_INVALID_CONTEXT_ID
    assert gpu.cmd(SUBMIT_3D, bytes(8), ctx=1) == ERR_INVALID_CONTEXT_ID
    # shorter than the header, and header without the command's body
    n, data = gpu.raw([b"\x00\x01\x00\x00"])
    assert (n, struct.unpack_from("<I", data)[0]) == (24, ERR_UNSPEC)
    assert gpu.cmd(CREATE_2D, struct.pack("<3I", 1, BGRX, 4)) == ERR_UNSPEC
    assert gpu.cmd(TRANSFER, bytes(20)) == ERR_UNSPEC
    # a response buffer too small for display info
    n, data = gpu.raw([hdr(GET_DISPLAY_INFO)], 100)
    assert (n, struct.unpack_from("<I", data)[0]) == (24, ERR_UNSPEC)
    n, _ = gpu.raw([hdr(GET_DISPLAY_INFO)], 8)
    assert n == 0
    # a request split over several descriptors is fine
    n, data = gpu.raw(
        [hdr(CREATE_2D)[:10], hdr(CREATE_2D)[10:] + struct.pack("<2I", 1, BGRX), struct.pack("<2I", 2, 2)]
    )
    assert struct.unpack_from("<I", data)[0] == OK_NODATA
    # trailing bytes after a command are ignored
    assert gpu.cmd(UNREF, struct.pack("<II", 1, 0) + bytes(40)) == OK_NODATA
    assert not gpu.dev.needs_reset()


def test_bad_resource_ids(gpu):
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 0, BGRX, 4, 4)) == ERR_INVALID_RESOURCE_ID
    gpu.create(1, 4, 4)
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 1, BGRX, 4, 4)) == ERR_INVALID_RESOURCE_ID, "duplicate"
    assert gpu.cmd(UNREF, struct.pack("<II", 2, 0)) == ERR_INVALID_RESOURCE_ID
    assert gpu.attach(2, [(RAM_BASE + (32 << 20), 64)]) == ERR_INVALID_RESOURCE_ID
    assert gpu.cmd(DETACH, struct.pack("<II", 2, 0)) == ERR_INVALID_RESOURCE_ID
    assert gpu.set_scanout(2, (0, 0, 4, 4)) == ERR_INVALID_RESOURCE_ID
    assert gpu.transfer(2, (0, 0, 4, 4)) == ERR_INVALID_RESOURCE_ID
    assert gpu.flush(2, (0, 0, 4, 4)) == ERR_INVALID_RESOURCE_ID
    assert gpu.set_scanout(1, (0, 0, 4, 4), scanout=1) == ERR_INVALID_SCANOUT_ID
    assert gpu.set_scanout(1, (0, 0, 4, 4), scanout=16) == ERR_INVALID_SCANOUT_ID


def test_bad_create_parameters(gpu):
    for fmt in (0, 5, 66, 0xFFFF_FFFF):
        assert gpu.cmd(CREATE_2D, struct.pack("<4I", 1, fmt, 4, 4)) == ERR_INVALID_PARAMETER
    for w, h in ((0, 4), (4, 0), (16385, 1), (1, 0xFFFF_FFFF), (0xFFFF_FFFF, 0xFFFF_FFFF)):
        assert gpu.cmd(CREATE_2D, struct.pack("<4I", 1, BGRX, w, h)) == ERR_INVALID_PARAMETER


def test_rectangles_outside_the_resource(gpu):
    gpu.create(1, 16, 8)
    gpu.backing(1, bytes(16 * 8 * 4))
    for r in ((0, 0, 17, 8), (0, 1, 16, 8), (16, 0, 1, 1), (1, 1, 0xFFFF_FFFF, 1), (0xFFFF_FFF0, 0, 0x20, 1)):
        assert gpu.set_scanout(1, r) == ERR_INVALID_PARAMETER, r
        assert gpu.transfer(1, r) == ERR_INVALID_PARAMETER, r
        assert gpu.flush(1, r) == ERR_INVALID_PARAMETER, r
    assert gpu.m.screen.frames == 0


def test_transfers_never_read_outside_the_backing(gpu):
    gpu.create(1, 16, 8)
    entries = gpu.backing(1, bytes(16 * 8 * 4 - 4), pieces=3)  # one pixel short
    assert sum(n for _, n in entries) == 508
    assert gpu.transfer(1, (0, 0, 16, 8)) == ERR_INVALID_PARAMETER
    assert gpu.transfer(1, (0, 0, 16, 7)) == OK_NODATA
    assert gpu.transfer(1, (0, 0, 15, 8)) == OK_NODATA, "the last row is one pixel narrower"
    assert gpu.transfer(1, (0, 7, 16, 1), offset=7 * 64) == ERR_INVALID_PARAMETER
    assert gpu.transfer(1, (0, 0, 1, 1), offset=508) == ERR_INVALID_PARAMETER
    assert gpu.transfer(1, (0, 0, 1, 1), offset=504) == OK_NODATA
    assert gpu.transfer(1, (0, 0, 1, 1), offset=0xFFFF_FFFF_FFFF_FFFC) == ERR_INVALID_PARAMETER


def test_backing_must_be_guest_ram(gpu):
    gpu.create(1, 4, 4)
    ram_end = RAM_BASE + (256 << 20)
    for addr, n in ((0x0900_0000, 64), (ram_end - 32, 64), (ram_end, 4), (0xFFFF_FFFF_FFFF_FFF0, 0x20)):
        assert gpu.attach(1, [(RAM_BASE + (20 << 20), 32), (addr, n)]) == ERR_INVALID_PARAMETER, hex(addr)
    assert gpu.transfer(1, (0, 0, 1, 1)) == ERR_UNSPEC, "nothing attached: no backing"
    assert gpu.attach(1, []) == ERR_INVALID_PARAMETER
    # more entries announced than the request carries
    body = struct.pack("<II", 1, 3) + struct.pack("<QII", RAM_BASE + (20 << 20), 64, 0)
    assert gpu.cmd(ATTACH, body) == ERR_UNSPEC
    body = struct.pack("<II", 1, 0xFFFF_FFFF) + struct.pack("<QII", RAM_BASE + (20 << 20), 64, 0)
    assert gpu.cmd(ATTACH, body) == ERR_INVALID_PARAMETER
    assert gpu.attach(1, [(RAM_BASE + (20 << 20), 64)]) == OK_NODATA
    assert gpu.attach(1, [(RAM_BASE + (20 << 20), 64)]) == ERR_UNSPEC, "already attached"
    assert gpu.cmd(DETACH, struct.pack("<II", 1, 0)) == OK_NODATA
    assert gpu.cmd(DETACH, struct.pack("<II", 1, 0)) == ERR_UNSPEC, "nothing attached"
    assert gpu.transfer(1, (0, 0, 1, 1)) == ERR_UNSPEC


def test_resources_are_capped_by_gpu_memory(gpu):
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 1, BGRX, 16384, 16384)) == ERR_OUT_OF_MEMORY  # 1 GiB > 256 MiB
    # 256 MiB less 32 KiB: the rest is less than the 64 KiB below
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 1, BGRX, 8192, 8191)) == OK_NODATA
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 2, BGRX, 128, 128)) == ERR_OUT_OF_MEMORY  # 64 KiB > 32 KiB
    assert gpu.cmd(UNREF, struct.pack("<II", 1, 0)) == OK_NODATA
    assert gpu.cmd(CREATE_2D, struct.pack("<4I", 2, BGRX, 1, 1)) == OK_NODATA, "unref gives the memory back"


def test_backing_tables_count_against_the_memory_cap(gpu_machine):
    """A 1 x 1 resource with 2^18 backing entries keeps a 6 MiB table: it counts (issue 15 #2)."""
    m = gpu_machine(gpu_max_mem=17 << 20)
    g = Gpu(m)
    base = m.stats()["host_mem_bytes"]
    entry = struct.pack("<QII", RAM_BASE, 1, 0)
    results = []
    for rid in range(1, 5):
        g.create(rid, 1, 1)
        results.append(g.cmd(ATTACH, struct.pack("<II", rid, 1 << 18) + entry * (1 << 18)))
    # 4 MiB of request copy + 6 MiB of table each: a third does not fit under 17 MiB
    assert results == [OK_NODATA, OK_NODATA, ERR_OUT_OF_MEMORY, ERR_OUT_OF_MEMORY]
    grown = m.stats()["host_mem_bytes"] - base
    assert 12 << 20 <= grown <= 17 << 20, grown
    assert g.cmd(DETACH, struct.pack("<II", 1, 0)) == OK_NODATA
    assert m.stats()["host_mem_bytes"] - base <= grown - (6 << 20), "detaching gives the table back"
    assert g.cmd(ATTACH, struct.pack("<II", 3, 1 << 18) + entry * (1 << 18)) == OK_NODATA


def test_the_scanout_and_held_frames_count_against_the_memory_cap(gpu_machine):
    m = gpu_machine(gpu_max_mem=3 << 20)
    g = Gpu(m)
    base = m.stats()["host_mem_bytes"]
    g.create(1, 1024, 512)  # 2 MiB
    assert g.set_scanout(1, (0, 0, 1024, 512)) == ERR_OUT_OF_MEMORY, "a 2 MiB screen image does not fit"
    assert g.set_scanout(1, (0, 0, 512, 256)) == OK_NODATA  # 0.5 MiB
    m.screen.hold(1)
    assert g.flush(1, (0, 0, 512, 256)) == OK_NODATA  # frame 1: its 0.5 MiB copy does not fit
    with pytest.raises(vmmpy.errors.OutOfMemory, match="out of memory copying held frame 1"):
        m.screen.capture(1)
    assert m.stats()["host_mem_bytes"] - base <= 3 << 20


def test_the_device_survives_garbage_and_resets_clean(gpu):
    import random

    rnd = random.Random(1234)
    gpu.create(1, 8, 8)
    gpu.backing(1, bytes(256))
    for _ in range(300):
        typ = rnd.choice([*range(0x100, 0x10D), 0x200, 0x207, 0x300, 0x301, rnd.getrandbits(32)])
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 4, 8, 16, 24, 32, 40, 64])))
        q = gpu.cursor if typ in (0x300, 0x301) else gpu.ctrl
        n, data = gpu.raw([hdr(typ) + body], rnd.choice([0, 24, 408, 1056]), q=q)
        assert n in (0, 24, 408, 1056)
    assert not gpu.dev.needs_reset()
    assert gpu.cmd(GET_DISPLAY_INFO, resp=408) == OK_DISPLAY_INFO
    # a device reset drops every resource and the scanout
    gpu.show(2, 4, 4, bytes(64))
    g2 = Gpu(gpu.m)
    assert g2.transfer(2, (0, 0, 1, 1)) == ERR_INVALID_RESOURCE_ID
    assert gpu.m.screen.size == (0, 0)
    assert gpu.m.screen.frames == 1, "frames count for the VM's life"
