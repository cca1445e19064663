"""Tier 2: guest/gpu_demo.c (virtio-mmio v2 + virtio-gpu 2D) on QEMU, the reference, and on vmmpy.

The guest draws a test picture at the size GET_DISPLAY_INFO reports (default 1280x800), then animates
FRAMES frames, one TRANSFER_TO_HOST_2D + RESOURCE_FLUSH each, printing `gpu_demo: frame N` (N from 1,
like vmmpy's frame numbers). After frame HOLD it prints `gpu_demo: holding frame HOLD ...` and waits for
a UART byte (10 s at most), so QEMU's screendump (QMP) sees exactly that frame; on vmmpy
m.screen.hold(HOLD) keeps it. Frame N's pixels depend only on N and the display size, so the two
screens must be identical.

The layout below mirrors guest/gpu_demo.c; the text is checked pixel for pixel against the glyph table
in guest/rt/font.c.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest
from PIL import Image, ImageChops

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import qemu_ref  # noqa: E402

FRAMES = 30
HOLD = 10
HOLD_RE = rf"gpu_demo: holding frame {HOLD}\b"
W, H = 1280, 800  # virtio-gpu's default mode, on QEMU and vmmpy
TIMEOUT = 120

# ---- guest/gpu_demo.c's layout ----
TITLE_H, TITLE_SCALE = 72, 6
BAR_Y, BAR_H = 96, H // 5
CIRCLE_R = H // 10
CIRCLE_Y = BAR_Y + BAR_H + 40 + CIRCLE_R
FAN_X, FAN_L = W * 4 // 5, H // 8
BAND_Y = H - 232
BOX = 64
COUNTER_SCALE = 5
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
TITLE_BG, TRACK, OUTLINE = (32, 32, 32), (48, 48, 64), (255, 255, 0)
BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0)]
CIRCLES = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def circle_x(i: int) -> int:
    return W * (2 * i + 1) // 10


def box_x(n: int) -> int:
    return 24 + (n - 1) * (W - 48 - BOX) // (FRAMES - 1)


def box_color(n: int) -> tuple[int, int, int]:
    return (255, (n * 8) & 0xFF, 64)


def background(x: int, y: int) -> tuple[int, int, int]:
    return (16 + x * 64 // W, 32, 64 + y * 128 // H)


def font() -> dict[str, list[str]]:
    """guest/rt/font.c's glyphs: char -> 7 rows of 5 '#'/'.' columns."""
    with open(os.path.join(ROOT, "guest", "rt", "font.c")) as f:
        src = f.read()
    rows = re.findall(r'\{ ((?:"[.#]{5}", ){6}"[.#]{5}") \}', src)
    assert len(rows) == 95, f"font.c: {len(rows)} glyphs, expected 95 (ASCII 32..126)"
    return {chr(32 + i): re.findall(r"[.#]{5}", r) for i, r in enumerate(rows)}


def check_text(img: Image.Image, x: int, y: int, scale: int, s: str, fg, bg) -> None:
    """Every glyph pixel of `s` drawn at (x, y) is fg; the cell pixels around them are bg(px, py) (not fg)."""
    glyphs = font()
    px = img.load()
    for k, ch in enumerate(s):
        cx = x + k * 6 * scale
        for r, row in enumerate(glyphs[ch]):
            for c, bit in enumerate(row):
                # the centre of each scale x scale block
                gx, gy = cx + c * scale + scale // 2, y + r * scale + scale // 2
                want = fg if bit == "#" else bg(gx, gy)
                assert px[gx, gy] == want, f"text {s!r}: char {ch!r} at ({gx}, {gy}) is {px[gx, gy]}, expected {want}"


def check_frame(img: Image.Image, n: int) -> None:
    """The picture of frame n (guest/gpu_demo.c) at 1280x800."""
    assert img.size == (W, H), f"screen is {img.size}, expected {(W, H)}"
    img = img.convert("RGB")
    px = img.load()

    def at(x, y, want, what):
        assert px[x, y] == want, f"{what}: pixel ({x}, {y}) is {px[x, y]}, expected {want}"

    # background gradient where nothing is drawn
    for x, y in [(W - 8, BAR_Y - 8), (W // 2 + 60, CIRCLE_Y + CIRCLE_R + 40), (8, BAND_Y - 12), (W - 4, H - 4)]:
        at(x, y, background(x, y), "background")
    # title bar and title
    at(W - 8, 8, TITLE_BG, "title bar")
    check_text(img, 24, (TITLE_H - 7 * TITLE_SCALE) // 2, TITLE_SCALE, "vmmpy GPU demo", WHITE, lambda x, y: TITLE_BG)
    # colour bars
    for i, c in enumerate(BARS):
        at(i * W // 8 + W // 16, BAR_Y + BAR_H // 2, c, f"colour bar {i}")
        at(i * W // 8 + 2, BAR_Y + 2, c, f"colour bar {i} (corner)")
    # circles: colour inside, white centre dot, background just outside
    for i, c in enumerate(CIRCLES):
        cx = circle_x(i)
        at(cx, CIRCLE_Y, WHITE, f"circle {i} centre dot")
        at(cx + CIRCLE_R // 2, CIRCLE_Y, c, f"circle {i}")
        at(cx, CIRCLE_Y - CIRCLE_R + 2, c, f"circle {i} (top)")
        at(cx + CIRCLE_R - 20, CIRCLE_Y - CIRCLE_R + 20, background(cx + CIRCLE_R - 20, CIRCLE_Y - CIRCLE_R + 20),
           f"outside circle {i}")  # fmt: skip
    # the fan of lines in its yellow frame: the frame, and line pixels (white or cyan) inside
    at(FAN_X - FAN_L - 8 + 1, CIRCLE_Y, OUTLINE, "fan frame (left)")
    at(FAN_X, CIRCLE_Y - FAN_L - 8 + 1, OUTLINE, "fan frame (top)")
    region = img.crop((FAN_X - FAN_L, CIRCLE_Y - FAN_L, FAN_X + FAN_L + 1, CIRCLE_Y + FAN_L + 1))
    colors = dict((c, k) for k, c in region.getcolors(1 << 16))
    assert colors.get(WHITE, 0) > 2000 and colors.get((0, 255, 255), 0) > 2000, "fan lines missing"
    # the animated band: the track, the box at frame n's place and colour, the counter
    at(W - 24, BAND_Y + 20, TRACK, "track")
    bx = box_x(n)
    at(bx + BOX // 2, BAND_Y + 24 + BOX // 2, box_color(n), f"box of frame {n}")
    at(bx, BAND_Y + 24 + BOX // 2, BLACK, f"box of frame {n} (outline)")
    other = box_x(n + 1 if n < FRAMES else n - 1)
    other_x = other + BOX // 2 + (BOX if other > bx else -BOX)
    at(other_x, BAND_Y + 24 + BOX // 2, TRACK, f"track beside the box of frame {n}")
    check_text(img, 24, BAND_Y + 112, COUNTER_SCALE, f"frame {n:02d}/{FRAMES}", WHITE, background)
    # footer lines
    check_text(img, 24, H - 28, 2, f"virtio-gpu 2D {W}x{H} B8G8R8X8", WHITE, background)
    check_text(img, 24, H - 52, 2, "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz", WHITE, background)


def assert_pass(text: str) -> None:
    lines = text.replace("\r", "").splitlines()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert not fails, "\n".join(fails)
    assert "PASS gpu_demo" in lines, "no 'PASS gpu_demo'; output ends with:\n" + "\n".join(lines[-30:])
    frames = [int(m) for m in re.findall(r"^gpu_demo: frame (\d+)$", "\n".join(lines), re.M)]
    assert frames == list(range(1, FRAMES + 1)), f"frames flushed: {frames}"
    assert f"virtio-gpu: scanout 0: {W}x{H}" in lines


# ---- QEMU, the reference ----------------------------------------------------------------------------

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-aarch64") is None,
    reason="qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)",
)


def qemu_frame(elf: str) -> Image.Image:
    """Frame HOLD on QEMU (screendump while the guest holds it), after checking the whole run passed."""
    img, text = qemu_ref.gpu_screenshot(elf, HOLD_RE, finish=r"PASS gpu_demo", timeout=TIMEOUT)
    assert_pass(text)
    return img


@needs_qemu
@pytest.mark.qemu
def test_gpu_demo_on_qemu(guest):
    check_frame(qemu_frame(guest("gpu_demo")), HOLD)


# ---- vmmpy ----------------------------------------------------------------------------------------


def vmmpy_run(machine, elf: str, transport: str = "mmio") -> tuple[Image.Image, Image.Image]:
    """Frame HOLD (kept by m.screen.hold) and the last frame of a vmmpy run that must pass."""
    m = machine(elf, gpu=True, transport=transport)
    m.screen.hold(HOLD)
    m.serial.expect(HOLD_RE, timeout=TIMEOUT)  # starts the VM
    m.serial.write(b"c")  # the guest goes on at once
    m.serial.expect(r"PASS gpu_demo", timeout=TIMEOUT)
    res = m.wait(timeout=TIMEOUT)
    assert_pass(m.serial.text)
    assert res.ok, res
    return m.screen.capture(frame=HOLD).convert("RGB"), m.screen.capture(frame=0).convert("RGB")


def test_gpu_demo(machine, guest):
    held, last = vmmpy_run(machine, guest("gpu_demo"))
    check_frame(held, HOLD)
    check_frame(last, FRAMES)


def test_gpu_demo_on_pci_draws_the_same_frames(machine, guest):
    """The same demo driving virtio-gpu-pci (found by walking ECAM): frames identical to virtio-mmio's."""
    elf = guest("gpu_demo")
    held, last = vmmpy_run(machine, elf, transport="pci")
    check_frame(held, HOLD)
    check_frame(last, FRAMES)
    assert ImageChops.difference(held, vmmpy_run(machine, elf)[0]).getbbox() is None


@needs_qemu
@pytest.mark.qemu
def test_gpu_demo_matches_qemu(machine, guest):
    elf = guest("gpu_demo")
    ref = qemu_frame(elf)
    held, _ = vmmpy_run(machine, elf)
    assert held.size == ref.size
    diff = ImageChops.difference(held, ref)
    bbox = diff.getbbox()
    if bbox is not None:
        worst = max(hi for _, hi in diff.getextrema())
        changed = sum(1 for p in diff.getdata() if p != (0, 0, 0))
        raise AssertionError(
            f"vmmpy's frame {HOLD} differs from QEMU's in {changed} pixels within {bbox}, by up to {worst}"
        )
