"""Seed inputs for the fuzzers.

`python fuzz/make_corpus.py` writes the small committed seeds: fuzz/corpus/p9/ (fuzz_p9.c: a few valid
9P2000.L messages each, fid 0 is the attached root), fuzz/corpus/gpu/ (fuzz_gpu.c: command
sequences in its encoding) and fuzz/corpus/its/ (fuzz_its.c: table setups and ITS command queues).
`python fuzz/make_corpus.py --loader DIR` writes fuzz_loader.c's seeds,
made at run time from the test guests (guest/build/*.elf, *.bin): ELFs, arm64 Images raw and gzipped,
raw binaries with a load address, each with and without an initrd (tools/fuzz.sh does this).
`python fuzz/make_corpus.py --snapshot DIR` writes fuzz_snapshot.c's: snapshots of small guests.
"""

from __future__ import annotations

import os
import struct
import sys


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<H", len(b)) + b


def m(type_: int, body: bytes, tag: int = 1) -> bytes:
    return struct.pack("<IBH", 7 + len(body), type_, tag) + body


SEEDS = {
    "walk_read": [
        m(110, struct.pack("<IIH", 0, 1, 1) + s("hello.txt")),
        m(12, struct.pack("<II", 1, 0)),
        m(116, struct.pack("<IQI", 1, 0, 100)),
        m(24, struct.pack("<IQ", 1, 0x3FFF)),
        m(120, struct.pack("<I", 1)),
    ],
    "create_write": [
        m(110, struct.pack("<IIH", 0, 1, 0)),
        m(14, struct.pack("<I", 1) + s("new") + struct.pack("<III", 2, 0o644, 0)),
        m(118, struct.pack("<IQI", 1, 0, 5) + b"hello"),
        m(50, struct.pack("<II", 1, 0)),
        m(26, struct.pack("<IIIIIQQQQQ", 1, 0x8, 0, 0, 0, 2, 0, 0, 0, 0)),
        m(120, struct.pack("<I", 1)),
        m(76, struct.pack("<I", 0) + s("new") + struct.pack("<I", 0)),
    ],
    "dirs": [
        m(72, struct.pack("<I", 0) + s("d") + struct.pack("<II", 0o755, 0)),
        m(16, struct.pack("<I", 0) + s("l") + s("../..") + struct.pack("<I", 0)),
        m(110, struct.pack("<IIH", 0, 2, 1) + s("l")),
        m(22, struct.pack("<I", 2)),
        m(74, struct.pack("<I", 0) + s("d") + struct.pack("<I", 0) + s("e")),
        m(110, struct.pack("<IIH", 0, 3, 0)),
        m(12, struct.pack("<II", 3, 0)),
        m(40, struct.pack("<IQI", 3, 0, 200)),
        m(76, struct.pack("<I", 0) + s("e") + struct.pack("<I", 0x200)),
        m(76, struct.pack("<I", 0) + s("l") + struct.pack("<I", 0)),
    ],
    "escape": [
        m(110, struct.pack("<IIH", 0, 1, 4) + s("..") + s("up") + s("..") + s("outside")),
        m(110, struct.pack("<IIH", 0, 2, 2) + s("up") + s("sentinel")),
        m(110, struct.pack("<IIH", 0, 3, 2) + s("sub") + s("..")),
        m(70, struct.pack("<II", 3, 0) + s("x")),
        m(20, struct.pack("<II", 3, 0) + s("y")),
        m(122, struct.pack("<I", 3)),
    ],
    "misc": [
        m(8, struct.pack("<I", 0)),
        m(52, struct.pack("<IBIQQI", 0, 1, 0, 0, 0, 1) + s("c")),
        m(54, struct.pack("<IBQQI", 0, 1, 0, 0, 1) + s("c")),
        m(30, struct.pack("<II", 0, 1) + s("user.x")),
        m(108, struct.pack("<H", 1)),
        m(18, struct.pack("<I", 0) + s("fifo") + struct.pack("<IIII", 0o10644, 0, 0, 0)),
        m(100, struct.pack("<I", 8192) + s("9P2000.L")),
    ],
}


# ---- fuzz_gpu.c: flags, holds, then per command: opcode, mode, fields (see command() there) ----
NOTIFY = 0x04


def create(rid: int, w: int, h: int, fmt: int = 0, mode: int = 0) -> bytes:
    return bytes([1, mode, rid, fmt]) + gdim(w) + gdim(h)


def attach(rid: int, entries: list[tuple[int, int]], mode: int = 0) -> bytes:
    """entries: (page of 256 bytes into the pixel area, length in 256-byte units)"""
    out = bytes([6, mode, len(entries), rid])
    for page, units in entries:
        out += b"\x00" + struct.pack("<HB", page, units)
    return out


def gdim(v: int) -> bytes:
    return bytes([v - 1]) if 1 <= v <= 64 else b"\xf0" + struct.pack("<H", v)


def rect_cmd(op: int, x: int, y: int, w: int, h: int, tail: bytes, mode: int = 0) -> bytes:
    return bytes([op, mode, x, y]) + gdim(w) + gdim(h) + tail


GPU_SEEDS = {
    "frame": b"\x01\x01"
    + create(1, 64, 64)
    + attach(1, [(0, 64)])
    + rect_cmd(3, 0, 0, 64, 64, bytes([0, 1]))  # set_scanout 0 -> 1
    + rect_cmd(5, 0, 0, 64, 64, bytes([0, 1]))  # transfer, offset 0
    + rect_cmd(4, 0, 0, 64, 64, bytes([1]), NOTIFY)  # flush
    + bytes([9, 0, 3, 4, 1, 0, 0])  # update cursor
    + bytes([10, 0, 5, 6, 0, 0, 0])  # move cursor
    + bytes([0, 0])  # display info
    + bytes([8, 0, 0])  # edid
    + bytes([7, 0, 1])  # detach
    + bytes([2, NOTIFY, 1]),  # unref while shown
    "two": b"\x03\x00"
    + create(1, 32, 16, 4)
    + create(2, 16, 32, 5, 0x08)
    + attach(1, [(0, 4), (100, 4)], 0x01)  # split request
    + attach(2, [(200, 8)], 0x02)  # split response
    + rect_cmd(5, 8, 0, 16, 8, bytes([1, 1]))
    + rect_cmd(3, 0, 0, 16, 16, bytes([0, 2]), NOTIFY)
    + rect_cmd(4, 0, 0, 16, 32, bytes([2]))
    + rect_cmd(3, 0, 0, 32, 16, bytes([0, 1]))
    + rect_cmd(4, 4, 4, 8, 8, bytes([1]), 0x40 | NOTIFY)  # 24-byte response
    + bytes([7, 0, 2, 2, 0, 2, 2, 0, 1]),
    "big": b"\x00\x05"
    + create(1, 640, 480)
    + attach(1, [(0, 255)] * 5)
    + rect_cmd(3, 0, 0, 640, 480, bytes([0, 1]))
    + rect_cmd(4, 0, 0, 640, 480, bytes([1]), NOTIFY)
    + rect_cmd(4, 0, 0, 64, 64, bytes([1]), NOTIFY)
    + rect_cmd(4, 0, 0, 64, 64, bytes([1]), NOTIFY),
    "long_backing": b"\x00\x00"
    + create(1, 1, 1)
    + create(2, 1, 1)
    + bytes([6, NOTIFY, 0xFC, 1])
    + bytes(64)  # 2^18 entries: 16 inline (zero-length), the rest zeros
    + bytes([6, NOTIFY, 0xFC, 2])
    + bytes(64)
    + bytes([7, 0, 1])
    + bytes([6, NOTIFY, 0xF0, 0x00, 0x10, 1]),  # 64 << 2 entries
    "wrong_queue": b"\x00\x00" + bytes([9, 0x20, 0, 0, 0, 0, 0, 0, 0x23, 0x00, 0x03]),
}


# ---- fuzz_its.c: flags, device table Size, PROPBASER.IDbits, MSI count; 32-byte commands; 8-byte MSIs ----
def its_cmd(op: int, devid: int = 0, dw1: int = 0, dw2: int = 0, dw3: int = 0) -> bytes:
    return struct.pack("<4Q", op | devid << 32, dw1, dw2, dw3)


ITS_ITT = 0x4018_0000  # inside the harness's zeroed region
ITS_V = 1 << 63
ITS_MAP = (
    its_cmd(0x08, 1, 4, ITS_ITT | ITS_V)  # MAPD device 1, 32 events
    + its_cmd(0x09, 0, 0, 0 | 0 << 16 | ITS_V)  # MAPC 0 -> CPU 0
    + its_cmd(0x09, 0, 0, 1 | 1 << 16 | ITS_V)  # MAPC 1 -> CPU 1
    + its_cmd(0x0A, 1, 0 | 8192 << 32, 0)  # MAPTI event 0 -> LPI 8192
    + its_cmd(0x0A, 1, 1 | 8200 << 32, 1)  # MAPTI event 1 -> LPI 8200, collection 1
    + its_cmd(0x0D, 0, 0, 0)  # INVALL
)
ITS_SEEDS = {
    "map_int_msi": bytes([0x10, 0, 15, 2])
    + ITS_MAP
    + its_cmd(0x03, 1, 0)  # INT
    + its_cmd(0x05, 0, 0, 0)  # SYNC
    + struct.pack("<II", 1, 0)
    + struct.pack("<II", 1, 1),
    "move_clear_discard": bytes([0x10, 0, 15, 1])
    + ITS_MAP
    + its_cmd(0x03, 1, 1)
    + its_cmd(0x01, 1, 1, 0)  # MOVI event 1 to collection 0
    + its_cmd(0x0E, 0, 0, 0, 1 << 16)  # MOVALL CPU 0 -> CPU 1
    + its_cmd(0x04, 1, 1)  # CLEAR
    + its_cmd(0x0C, 1, 0)  # INV
    + its_cmd(0x0F, 1, 0)  # DISCARD
    + its_cmd(0x0B, 1, 8195, 0)  # MAPI: EventID 8195 beyond 32 events
    + struct.pack("<II", 1, 0),
    "two_level": bytes([0x01 | 0x04 | 0x10, 0, 13, 1])  # indirect, 64 KiB pages, 14 ID bits
    + ITS_MAP
    + struct.pack("<II", 1, 0),
    "errors": bytes([0, 0, 15, 0]) + its_cmd(0x0A, 9, 0, 0) + its_cmd(0x25) + its_cmd(0x08, 1, 31, ITS_V),
}


# ---- fuzz_loader.c: 12-byte header (see there), kernel, initrd ----
def loader_header(
    fmt: int, gz: bool = False, initrd: int = 0, cmdline: bool = False, load: int = 0, entry: int = 0
) -> bytes:
    flags = fmt | (4 if gz else 0) | (8 if initrd else 0) | (16 if cmdline else 0)
    n = initrd
    return bytes([flags]) + struct.pack("<II", load, entry) + bytes([n & 255, n >> 8 & 255, n >> 16 & 255])


def image_of(flat: bytes, text_offset: int = 0x80000) -> bytes:
    """An arm64 Image: the 64-byte header (booting.rst), then the flat binary."""
    body = flat
    hdr = struct.pack("<IIQQQQQQII", 0x14000010, 0, text_offset, 64 + len(body), 0xA, 0, 0, 0, 0x644D5241, 0)
    return hdr + body


def loader_seeds(out: str) -> None:
    gdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guest", "build")
    os.makedirs(out, exist_ok=True)
    seeds: dict[str, bytes] = {}
    initrd = b"070701" + bytes(250)  # the start of a cpio, and zeros
    for name in ("hello", "timer", "smp"):
        path = os.path.join(gdir, name + ".elf")
        if os.path.exists(path):
            with open(path, "rb") as f:
                elf = f.read()
            seeds[f"{name}_elf"] = loader_header(1) + elf
            seeds[f"{name}_auto_initrd"] = loader_header(0, initrd=len(initrd), cmdline=True) + elf + initrd
    flat_path = os.path.join(gdir, "hello.bin")
    flat = bytes(4096)
    if os.path.exists(flat_path):
        with open(flat_path, "rb") as f:
            flat = f.read()
    seeds["image"] = loader_header(2) + image_of(flat)
    seeds["image_gz"] = loader_header(2, gz=True) + image_of(flat)
    seeds["image_auto_initrd"] = loader_header(0, initrd=len(initrd), cmdline=True) + image_of(flat) + initrd
    seeds["image_old"] = loader_header(2) + image_of(flat, 0)[:16] + bytes(8) + image_of(flat, 0)[24:]
    seeds["raw"] = loader_header(3, load=0x80000, entry=0x40) + flat
    seeds["raw_initrd"] = loader_header(3, initrd=1 << 20) + flat
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def snapshot_seeds(out: str) -> None:
    """fuzz_snapshot.c's seeds: snapshots of small guests (one flags byte first: 1 = fix the CRCs, 3 = and run)."""
    import vmmpy

    gdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guest", "build")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "tmp.snap")
    for name, cpus, ram, at in (("hello", 1, "4M", 0), ("smp", 2, "4M", 100_000), ("uart_irq", 1, "4M", 50_000)):
        with vmmpy.Machine(os.path.join(gdir, name + ".elf"), cpus=cpus, ram=ram, deterministic=True) as m:
            if name == "uart_irq":
                m.serial.write(b"hi", at_ns=200_000)
            if at:
                m.stop_at(at)
                m.run(timeout=60)
            else:
                m.boot_info()
            m.snapshot(path)
        with open(path, "rb") as f:
            data = f.read()
        for flags in (1, 3):
            with open(os.path.join(out, f"{name}_{flags}"), "wb") as f:
                f.write(bytes([flags]) + data)
    device_seed(gdir, path)
    with open(path, "rb") as f:
        data = f.read()
    for flags in (1, 3):
        with open(os.path.join(out, f"devices_{flags}"), "wb") as f:
            f.write(bytes([flags]) + data)
    os.unlink(path)


def device_seed(gdir: str, path: str) -> None:
    """A snapshot with every virtio device that needs no host file, each live (its queues set up), a
    GPU resource shown and flushed, keyboard events pending: the device loaders' sections as seeds."""
    import vmmpy

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.virtio_driver import ID_GPU, VirtioMMIO, find_devices

    with vmmpy.Machine(
        os.path.join(gdir, "idle.elf"),
        ram="32M",
        deterministic=True,
        gpu=True,
        gpu_size=(32, 16),
        input=True,
        rng=True,
        virtio_console=True,
        virtio_test_devices=1,
    ) as m:
        m.boot_info()
        for slot, dev_id in find_devices(m):
            qs = VirtioMMIO(m, slot).init(queues=2 if dev_id != 4 else 1)
            if dev_id == ID_GPU:
                cq = qs[0]

                def cmd(type_: int, *body: int, q=cq) -> None:
                    hdr = struct.pack("<IIQI4x", type_, 0, 0, 0)
                    q.add([hdr + struct.pack(f"<{len(body)}I", *body)], [24])
                    q.notify()

                pix = 0x40000000 + (24 << 20)
                m.write_memory(pix, bytes(range(256)) * (32 * 16 * 4 // 256))
                cmd(0x0101, 1, 1, 32, 16)
                cmd(0x0106, 1, 1, pix & 0xFFFFFFFF, pix >> 32, 32 * 16 * 4, 0)
                cmd(0x0105, 0, 0, 32, 16, 0, 0, 1, 0)
                cmd(0x0103, 0, 0, 32, 16, 0, 1)
                cmd(0x0104, 0, 0, 32, 16, 1, 0)
        m.keyboard.press("a", at_ns=0)
        m.keyboard.release("a", at_ns=1_000_000)
        m.snapshot(path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--loader":
        loader_seeds(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--snapshot":
        snapshot_seeds(sys.argv[2])
        sys.exit(0)
    here = os.path.dirname(os.path.abspath(__file__))
    for sub, seeds in (("p9", {k: b"".join(v) for k, v in SEEDS.items()}), ("gpu", GPU_SEEDS), ("its", ITS_SEEDS)):
        out = os.path.join(here, "corpus", sub)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
