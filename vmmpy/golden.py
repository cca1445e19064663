"""Golden-image comparison: is a captured frame the picture we expect? Pure Pillow, no pytest.

    from vmmpy import golden
    golden.assert_matches(m.screen.capture(), "tests/goldens/boot.png", out_dir="out", masks=[(0, 780, 1280, 20)])

Images are compared as RGB (alpha is ignored). A pixel *differs* when one of its channels differs
from the golden by more than `threshold` (0..255); the images *match* when at most `max_fraction`
of the pixels outside the `masks` differ. A mask is an `(x, y, w, h)` rectangle of ignored pixels.
On a mismatch, `<name>.obtained.png` (what we got) and `<name>.diff.png` (the golden dimmed, differing
pixels red, differences within the tolerance orange, masks outlined in blue) go to `out_dir`.
The pytest plugin's `golden` fixture (vmmpy/pytest_plugin.py) is a thin user of this module.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

from vmmpy import _files

Mask = tuple[int, int, int, int]  # x, y, width, height

RED = (255, 0, 0)  # differs by more than the threshold
ORANGE = (255, 160, 0)  # differs, but within the threshold
BLUE = (0, 128, 255)  # outline of a masked rectangle


class GoldenMismatch(AssertionError):
    """The image does not match its golden (or the golden is missing)."""


@dataclass(frozen=True)
class Comparison:
    """What compare() found. `bbox` is (left, top, right, bottom), right/bottom exclusive, or None."""

    size: tuple[int, int]  # of the obtained image
    golden_size: tuple[int, int]
    differing: int = 0  # pixels over the threshold, outside the masks
    compared: int = 0  # pixels outside the masks
    max_diff: int = 0  # largest channel difference outside the masks
    bbox: tuple[int, int, int, int] | None = None
    allowed: int = 0  # differing pixels tolerated (max_fraction of `compared`)

    @property
    def size_mismatch(self) -> bool:
        return self.size != self.golden_size

    @property
    def fraction(self) -> float:
        return self.differing / self.compared if self.compared else 0.0

    @property
    def ok(self) -> bool:
        return not self.size_mismatch and self.differing <= self.allowed

    def describe(self, threshold: int = 0, max_fraction: float = 0.0) -> str:
        """One line: how the images differ."""
        if self.size_mismatch:
            w, h = self.size
            gw, gh = self.golden_size
            return f"size differs: obtained {w}x{h}, golden {gw}x{gh}"
        if self.differing == 0:
            return f"no pixel differs by more than {threshold} (max channel difference {self.max_diff})"
        text = (
            f"{self.differing} of {self.compared} pixels ({self.fraction:.4%}) differ by more than {threshold}"
            f" (allowed: {self.allowed}, max_fraction={max_fraction:g}); max channel difference {self.max_diff}"
        )
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            text += f"; differences within x={x0}..{x1 - 1}, y={y0}..{y1 - 1} ({x1 - x0}x{y1 - y0} at ({x0}, {y0}))"
        return text


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_options(threshold: int, max_fraction: float, masks: Iterable[Sequence[int]]) -> list[Mask]:
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be 0..255 (a channel difference), not {threshold!r}")
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be 0.0..1.0, not {max_fraction!r}")
    out = []
    for m in masks:
        if len(m) != 4 or m[2] < 0 or m[3] < 0:
            raise ValueError(f"a mask is (x, y, width, height) with width, height >= 0, not {m!r}")
        out.append((int(m[0]), int(m[1]), int(m[2]), int(m[3])))
    return out


def _unmasked(size: tuple[int, int], masks: list[Mask]) -> Image.Image:
    """'L' image: 255 where pixels are compared, 0 under a mask."""
    keep = Image.new("L", size, 255)
    for x, y, w, h in masks:
        if w and h:
            keep.paste(0, (x, y, x + w, y + h))  # Pillow clips to the image
    return keep


def _channel_max(a: Image.Image, b: Image.Image) -> Image.Image:
    """'L' image: per pixel, the largest channel difference between a and b."""
    r, g, bl = ImageChops.difference(a, b).split()
    return ImageChops.lighter(ImageChops.lighter(r, g), bl)


def compare(
    obtained: Image.Image,
    golden: Image.Image,
    *,
    threshold: int = 0,
    max_fraction: float = 0.0,
    masks: Iterable[Sequence[int]] = (),
) -> Comparison:
    """Compare two images; see the module docstring for the rules."""
    mask_list = _check_options(threshold, max_fraction, masks)
    obtained, golden = _rgb(obtained), _rgb(golden)
    if obtained.size != golden.size:
        return Comparison(obtained.size, golden.size)
    keep = _unmasked(obtained.size, mask_list)
    compared = keep.histogram()[255]
    diff = ImageChops.multiply(_channel_max(obtained, golden), keep)  # masked pixels -> 0
    over = diff.point(lambda v: 255 if v > threshold else 0)
    differing = over.histogram()[255]
    return Comparison(
        size=obtained.size,
        golden_size=golden.size,
        differing=differing,
        compared=compared,
        max_diff=diff.getextrema()[1],
        bbox=over.getbbox() if differing else None,
        allowed=int(max_fraction * compared),
    )


def diff_image(
    obtained: Image.Image, golden: Image.Image, *, threshold: int = 0, masks: Iterable[Sequence[int]] = ()
) -> Image.Image:
    """The golden dimmed to grey; pixels over the threshold red, within it orange; masks outlined blue."""
    mask_list = _check_options(threshold, 0.0, masks)
    obtained, golden = _rgb(obtained), _rgb(golden)
    if obtained.size != golden.size:
        raise ValueError(f"sizes differ: {obtained.size} and {golden.size}")
    keep = _unmasked(obtained.size, mask_list)
    diff = ImageChops.multiply(_channel_max(obtained, golden), keep)
    out = golden.convert("L").point(lambda v: 48 + v // 4).convert("RGB")
    out.paste(ORANGE, mask=diff.point(lambda v: 255 if 0 < v <= threshold else 0))
    out.paste(RED, mask=diff.point(lambda v: 255 if v > threshold else 0))
    draw = ImageDraw.Draw(out)
    for x, y, w, h in mask_list:
        if w and h:
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=BLUE)
    return out


@dataclass(frozen=True)
class Outcome:
    """What check() did: 'match', 'created', 'updated' or 'unchanged' (update mode)."""

    action: str
    golden: str
    comparison: Comparison | None = None


MAX_GOLDEN_FILE = 64 << 20  # bytes: a golden PNG larger than this is refused


def load(path: str | os.PathLike) -> Image.Image:
    """A golden: a regular file (never a FIFO's blocking open) of at most MAX_GOLDEN_FILE bytes."""
    with Image.open(io.BytesIO(_files.read_regular(path, MAX_GOLDEN_FILE))) as im:
        im.load()
        return im.copy()


def save_png(image: Image.Image, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with _files.open_output(path) as f:  # a regular file, created or truncated
        image.save(f, format="PNG")
    return path


def _artifact_paths(out_dir: str | os.PathLike, name: str) -> tuple[str, str]:
    base = os.path.join(os.fspath(out_dir), name)
    return base + ".obtained.png", base + ".diff.png"


def check(
    image: Image.Image,
    golden_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    name: str | None = None,
    threshold: int = 0,
    max_fraction: float = 0.0,
    masks: Iterable[Sequence[int]] = (),
    update: bool = False,
    update_hint: str = "",
) -> Outcome:
    """Compare `image` with the PNG at `golden_path` or, with update=True, (re)write that PNG.

    Update mode writes the golden when it is missing or any pixel differs (it ignores the tolerance
    and masks, so tolerated noise does not churn the file) and never fails. Compare mode raises
    GoldenMismatch on a mismatch or a missing golden, after writing `<name>.obtained.png` (and, if the
    sizes agree, `<name>.diff.png`) into `out_dir`; stale copies of those from an earlier run are
    removed first. `update_hint` ends the message: how to (re)create the golden.
    """
    __tracebackhide__ = True
    golden_path = os.fspath(golden_path)
    name = name or os.path.splitext(os.path.basename(golden_path))[0]
    masks = _check_options(threshold, max_fraction, masks)
    image = _rgb(image)
    obtained_path, diff_path = _artifact_paths(out_dir, name)
    for stale in (obtained_path, diff_path):
        if os.path.exists(stale):
            os.remove(stale)
    exists = os.path.exists(golden_path)

    if update:
        if exists:
            old = load(golden_path)
            if old.size == image.size and compare(image, old).differing == 0:
                return Outcome("unchanged", golden_path)
        save_png(image, golden_path)
        return Outcome("updated" if exists else "created", golden_path)

    hint = f"\n  to create it: {update_hint}" if update_hint else ""
    if not exists:
        save_png(image, obtained_path)
        raise GoldenMismatch(
            f"golden {name!r} does not exist: {golden_path}\n  obtained: {obtained_path}"
            f" ({image.width}x{image.height}){hint}"
        )
    expected = load(golden_path)
    result = compare(image, expected, threshold=threshold, max_fraction=max_fraction, masks=masks)
    if result.ok:
        return Outcome("match", golden_path, result)
    save_png(image, obtained_path)
    files = f"\n  golden:   {golden_path}\n  obtained: {obtained_path}"
    if not result.size_mismatch:
        save_png(diff_image(image, expected, threshold=threshold, masks=masks), diff_path)
        files += f"\n  diff:     {diff_path} (red: differs, orange: within threshold, blue: masks)"
    raise GoldenMismatch(
        f"golden {name!r} does not match: {result.describe(threshold, max_fraction)}{files}"
        + (f"\n  if the new image is right: {update_hint}" if update_hint else "")
    )


def assert_matches(
    image: Image.Image,
    golden_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    threshold: int = 0,
    max_fraction: float = 0.0,
    masks: Iterable[Sequence[int]] = (),
) -> Comparison:
    """check() without update mode, for scripts: artifacts go to out_dir (default: beside the golden)."""
    __tracebackhide__ = True
    golden_path = os.fspath(golden_path)
    out = check(
        image,
        golden_path,
        out_dir=out_dir if out_dir is not None else (os.path.dirname(golden_path) or "."),
        threshold=threshold,
        max_fraction=max_fraction,
        masks=masks,
    )
    assert out.comparison is not None
    return out.comparison
