"""Write fuzz/corpus/p9/: seed inputs for fuzz_p9.c, each a few valid 9P2000.L messages (fid 0 is the attached root)."""

from __future__ import annotations

import os
import struct


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

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "p9")
    os.makedirs(out, exist_ok=True)
    for name, msgs in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(msgs))
