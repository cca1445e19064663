"""Needles: a reference PNG plus areas (a JSON sidecar), matched against screens. Pure Pillow, no pytest.

A needle is ``name.png`` and, beside it, ``name.json``::

    {"areas": [
        {"type": "match",   "x": 0,   "y": 0,   "width": 640, "height": 40, "threshold": 8, "max_fraction": 0.01},
        {"type": "exclude", "x": 560, "y": 10,  "width": 70,  "height": 20},
        {"type": "search",  "x": 300, "y": 200, "width": 13,  "height": 13, "region": [0, 40, 640, 440]}
    ]}

* ``match``: the frame's pixels in the area must equal the PNG's, within the area's tolerance
  (``threshold``: channel difference 0..255 a pixel may have and still be equal; ``max_fraction``: fraction
  of the compared pixels that may differ by more; both 0 by default: the rules of vmmpy.golden).
* ``exclude``: pixels never compared (in match areas and in search templates).
* ``search``: the PNG's content in the area is a *template* that may appear anywhere in the frame, or within
  ``region`` ([x, y, width, height], in frame pixels); the match reports where it was found (the best
  position: fewest differing pixels, then nearest to the area's own position). Same tolerance keys.

A PNG without a JSON is a needle with one match area over the whole image (an exact golden). A frame
matches when its size is the PNG's and every match and search area matches. ``Screen.wait_for`` waits for
such a frame; ``match()`` checks one image.

Search cost: the template's pixels are taken rarest colour first; each one is one Pillow pass (a few C
operations over the candidate grid, about 1 ms for a 640x480 region) that counts, per candidate position,
how many template pixels differ; once at most 32 positions can still match they are compared fully (one
crop and compare each). A distinctive template (a cursor, an icon, a word on a plain background) is found in
a handful of passes; a template that matches almost everywhere (a flat colour) costs one pass per template
pixel. A search area may tolerate at most 254 differing pixels (its max_fraction times its pixel count).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional, Union

from PIL import Image, ImageChops, ImageDraw

from vmmpy import _files
from vmmpy import golden as g

Rect = tuple[int, int, int, int]  # x, y, width, height

AREA_TYPES = ("match", "exclude", "search")
AREA_KEYS = {"type", "x", "y", "width", "height", "threshold", "max_fraction", "region", "name"}
MAX_JSON_FILE = 1 << 20
MAX_SEARCH_ALLOWED = 254  # differing pixels a search area may tolerate (counts are 8-bit Pillow images)
VERIFY_LIMIT = 32  # candidate positions compared one by one

GREEN = (0, 200, 0)  # outline of a match area in the diff image
YELLOW = (255, 255, 0)  # outline of a search region
CYAN = (0, 255, 255)  # outline of the best position of a search template


class NeedleError(ValueError):
    """A needle's files are wrong (bad JSON, an area outside the image, an unknown key...)."""


class NeedleMismatch(AssertionError):
    """No frame matched the needle (Screen.wait_for timed out, or the VM ended first)."""

    def __init__(self, message: str, closest: NeedleMatch | None = None, files: tuple[str, ...] = ()):
        super().__init__(message)
        self.closest = closest
        self.files = files


def _rect(value, what: str) -> Rect:
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(isinstance(v, int) for v in value):
        raise NeedleError(f"{what} is [x, y, width, height] (integers), not {value!r}")
    x, y, w, h = value
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise NeedleError(f"{what} needs x, y >= 0 and width, height > 0, not {list(value)!r}")
    return (x, y, w, h)


def _intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


@dataclass(frozen=True)
class Area:
    type: str  # match, exclude, search
    rect: Rect  # x, y, width, height in the needle's image
    threshold: int = 0
    max_fraction: float = 0.0
    region: Rect | None = None  # search only: where to look (default: the whole frame)
    name: str = ""

    def __post_init__(self):
        if self.type not in AREA_TYPES:
            raise NeedleError(f"an area's type is one of {', '.join(AREA_TYPES)}, not {self.type!r}")
        _rect(list(self.rect), "an area")
        try:
            g._check_options(self.threshold, self.max_fraction, ())
        except ValueError as e:
            raise NeedleError(str(e)) from None
        if self.region is not None:
            if self.type != "search":
                raise NeedleError(f"only search areas have a region, not {self.type} areas")
            _rect(list(self.region), "a search region")

    @property
    def label(self) -> str:
        x, y, w, h = self.rect
        return f"{self.type} area {self.name + ' ' if self.name else ''}{w}x{h} at ({x}, {y})"

    def to_json(self) -> dict:
        x, y, w, h = self.rect
        d: dict = {"type": self.type, "x": x, "y": y, "width": w, "height": h}
        if self.name:
            d["name"] = self.name
        if self.type != "exclude":
            if self.threshold:
                d["threshold"] = self.threshold
            if self.max_fraction:
                d["max_fraction"] = self.max_fraction
        if self.region is not None:
            d["region"] = list(self.region)
        return d

    @classmethod
    def from_json(cls, d, where: str) -> Area:
        if not isinstance(d, dict):
            raise NeedleError(f"{where}: an area is an object, not {d!r}")
        unknown = set(d) - AREA_KEYS
        if unknown:
            raise NeedleError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(AREA_KEYS)})")
        missing = {"type", "x", "y", "width", "height"} - set(d)
        if missing:
            raise NeedleError(f"{where}: missing key(s) {sorted(missing)}")
        try:
            thr = d.get("threshold", 0)
            frac = d.get("max_fraction", 0.0)
            if not isinstance(thr, int) or isinstance(thr, bool) or not isinstance(frac, (int, float)):
                raise NeedleError("threshold is an integer and max_fraction a number")
            return cls(
                type=d["type"],
                rect=_rect([d["x"], d["y"], d["width"], d["height"]], "the area"),
                threshold=thr,
                max_fraction=float(frac),
                region=_rect(d["region"], "region") if d.get("region") is not None else None,
                name=str(d.get("name", "")),
            )
        except NeedleError as e:
            raise NeedleError(f"{where}: {e}") from None


@dataclass(frozen=True)
class AreaResult:
    """How one match or search area fared. `position`: where a search template was found (its top-left in
    the frame), or its best position if it was not; None when no position came close enough to be compared."""

    area: Area
    ok: bool
    differing: int  # pixels over the threshold (at the best position, for search areas)
    compared: int
    allowed: int
    position: tuple[int, int] | None = None
    note: str = ""

    @property
    def score(self) -> float:
        """1.0: every compared pixel equal; 0.0: all differ."""
        return 1.0 - self.differing / self.compared if self.compared else 1.0

    @property
    def center(self) -> tuple[int, int] | None:
        if self.position is None:
            return None
        _, _, w, h = self.area.rect
        return (self.position[0] + w // 2, self.position[1] + h // 2)

    def describe(self) -> str:
        a = self.area
        where = ""
        if a.type == "search":
            where = f" found at {self.position}" if self.ok else (f" best at {self.position}" if self.position else "")
        verdict = "matches" if self.ok else "does not match"
        text = (
            f"{a.label} {verdict}{where}: {self.differing} of {self.compared} pixels differ by more than"
            f" {a.threshold} (allowed {self.allowed})"
        )
        return text + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class NeedleMatch:
    """The result of matching a needle against one image (``frame``: its number, 0 if unknown)."""

    needle: Needle
    ok: bool
    areas: tuple[AreaResult, ...] = ()
    frame: int = 0
    size: tuple[int, int] = (0, 0)  # of the image
    note: str = ""  # why nothing was compared (size mismatch)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def score(self) -> float:
        """The worst area's score (0.0 when the sizes differ): how close this image came."""
        if self.note:
            return 0.0
        return min((r.score for r in self.areas), default=1.0)

    @property
    def position(self) -> tuple[int, int] | None:
        """Top-left of the first search area's template in the frame (None without search areas)."""
        for r in self.areas:
            if r.area.type == "search":
                return r.position
        return None

    @property
    def center(self) -> tuple[int, int] | None:
        """Centre of the first search area's template in the frame: where to click it."""
        for r in self.areas:
            if r.area.type == "search":
                return r.center
        return None

    def area(self, name: str) -> AreaResult:
        for r in self.areas:
            if r.area.name == name:
                return r
        raise KeyError(name)

    def describe(self) -> str:
        if self.note:
            return self.note
        return "; ".join(r.describe() for r in self.areas) or "no match or search area"


@dataclass
class Needle:
    image: Image.Image  # RGB
    areas: list[Area] = field(default_factory=list)
    path: Optional[str] = None  # noqa: UP045 (py39: dataclass fields are evaluated)
    name: str = "needle"

    def __post_init__(self):
        self.image = g._rgb(self.image)
        self.validate()

    def validate(self) -> None:
        w, h = self.image.size
        for a in self.areas:
            x, y, aw, ah = a.rect
            if x + aw > w or y + ah > h:
                raise NeedleError(f"needle {self.name!r}: {a.label} goes beyond the {w}x{h} image")
            if a.type == "search":
                allowed = int(a.max_fraction * aw * ah)
                if allowed > MAX_SEARCH_ALLOWED:
                    raise NeedleError(
                        f"needle {self.name!r}: {a.label} tolerates {allowed} differing pixels; a search area"
                        f" tolerates at most {MAX_SEARCH_ALLOWED} (lower max_fraction or use a smaller template)"
                    )
        if not any(a.type in ("match", "search") for a in self.areas):
            raise NeedleError(f"needle {self.name!r} has no match or search area")

    @classmethod
    def from_image(cls, image: Image.Image, *, threshold: int = 0, max_fraction: float = 0.0, name="image") -> Needle:
        """An exact golden as a needle: one match area over the whole image."""
        image = g._rgb(image)
        return cls(image, [whole_area(image.size, threshold, max_fraction)], None, name)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Needle:
        """`path`: the PNG (``name.png``), its JSON (``name.json``) or the name without extension."""
        png, js = paths(path)
        name = os.path.basename(png)[: -len(".png")]
        image = g.load(png)
        if not os.path.exists(js):
            return cls(image, [whole_area(image.size)], png, name)
        return cls(image, load_areas(js), png, name)

    def json_text(self) -> str:
        return json_text(self.areas)

    def match(self, image: Image.Image, frame: int = 0) -> NeedleMatch:
        """Match `image` (e.g. ``m.screen.capture()``) against this needle."""
        image = g._rgb(image)
        if image.size != self.image.size:
            (w, h), (nw, nh) = image.size, self.image.size
            return NeedleMatch(self, False, (), frame, image.size, f"size differs: frame {w}x{h}, needle {nw}x{nh}")
        excludes = [a.rect for a in self.areas if a.type == "exclude"]
        results = []
        for a in self.areas:
            if a.type == "match":
                results.append(self._match_area(image, a, excludes))
            elif a.type == "search":
                results.append(self._search_area(image, a, excludes))
        return NeedleMatch(self, all(r.ok for r in results), tuple(results), frame, image.size)

    def _masks(self, rect: Rect, excludes: list[Rect]) -> list[Rect]:
        """Exclude areas that overlap `rect`, relative to its top-left."""
        out = []
        for e in excludes:
            i = _intersect(rect, e)
            if i is not None:
                out.append((i[0] - rect[0], i[1] - rect[1], i[2], i[3]))
        return out

    def _match_area(self, image: Image.Image, a: Area, excludes: list[Rect]) -> AreaResult:
        x, y, w, h = a.rect
        box = (x, y, x + w, y + h)
        masks = self._masks(a.rect, excludes)
        c = g.compare(
            image.crop(box), self.image.crop(box), threshold=a.threshold, max_fraction=a.max_fraction, masks=masks
        )
        return AreaResult(a, c.ok, c.differing, c.compared, c.allowed, None)

    def _search_area(self, image: Image.Image, a: Area, excludes: list[Rect]) -> AreaResult:
        x, y, w, h = a.rect
        template = self.image.crop((x, y, x + w, y + h))
        masks = self._masks(a.rect, excludes)
        keep = g._unmasked((w, h), masks)
        compared = keep.histogram()[255]
        allowed = int(a.max_fraction * compared)
        fw, fh = image.size
        region = _intersect(a.region, (0, 0, fw, fh)) if a.region is not None else (0, 0, fw, fh)
        if region is None or region[2] < w or region[3] < h:
            return AreaResult(
                a, False, compared, compared, allowed, None, "the search region is smaller than the template"
            )
        rx, ry, rw, rh = region
        found = search(image.crop((rx, ry, rx + rw, ry + rh)), template, keep, a.threshold, allowed, (x - rx, y - ry))
        if found.position is None:
            note = f"no position: at least {found.differing} pixels differ everywhere in the region"
            return AreaResult(a, False, found.differing, compared, allowed, None, note)
        px, py = found.position
        return AreaResult(a, found.differing <= allowed, found.differing, compared, allowed, (px + rx, py + ry))


def whole_area(size: tuple[int, int], threshold: int = 0, max_fraction: float = 0.0) -> Area:
    return Area("match", (0, 0, size[0], size[1]), threshold, max_fraction)


def paths(path: str | os.PathLike) -> tuple[str, str]:
    """(PNG path, JSON path) of the needle named by `path` (``x.png``, ``x.json`` or ``x``)."""
    base = os.fspath(path)
    for ext in (".png", ".json"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + ".png", base + ".json"


def load_areas(json_path: str | os.PathLike) -> list[Area]:
    json_path = os.fspath(json_path)
    try:
        doc = json.loads(_files.read_regular(json_path, MAX_JSON_FILE).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise NeedleError(f"{json_path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("areas"), list):
        raise NeedleError(f'{json_path}: a needle\'s JSON is an object with a list "areas"')
    unknown = set(doc) - {"areas", "comment", "tags"}
    if unknown:
        raise NeedleError(f"{json_path}: unknown key(s) {sorted(unknown)} (known: areas, comment, tags)")
    return [Area.from_json(d, f"{json_path}: area {i}") for i, d in enumerate(doc["areas"])]


def json_text(areas: list[Area]) -> str:
    lines = ",\n".join("    " + json.dumps(a.to_json()) for a in areas)
    return '{\n  "areas": [\n' + lines + "\n  ]\n}\n"


# -- search -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    position: tuple[int, int] | None  # in the region
    differing: int  # at that position; or, without one, a lower bound of the differing pixels anywhere


def _positions(alive: Image.Image) -> list[tuple[int, int]]:
    """Coordinates of the 255 pixels of an 'L' image, in raster order."""
    data, w = alive.tobytes(), alive.width
    out, i = [], data.find(b"\xff")
    while i >= 0:
        out.append((i % w, i // w))
        i = data.find(b"\xff", i + 1)
    return out


def search(
    region: Image.Image, template: Image.Image, keep: Image.Image, threshold: int, allowed: int, home: tuple[int, int]
) -> _Found:
    """Where in `region` does `template` appear (its pixels where `keep` is 255; at most `allowed` of them differing
    by more than `threshold`)? The best position: fewest differing, then nearest to `home`."""
    tw, th = template.size
    rw, rh = region.size
    cw, ch = rw - tw + 1, rh - th + 1  # the grid of candidate top-left positions
    tdata, kdata = template.tobytes(), keep.tobytes()
    colors = region.getcolors(rw * rh) or []
    frequency = {c: n for n, c in colors}
    pixels = [(tx, ty) for ty in range(th) for tx in range(tw) if kdata[ty * tw + tx]]
    if not pixels:
        return _Found(home if 0 <= home[0] < cw and 0 <= home[1] < ch else (0, 0), 0)

    def color(p):
        i = 3 * (p[1] * tw + p[0])
        return (tdata[i], tdata[i + 1], tdata[i + 2])

    pixels.sort(key=lambda p: frequency.get(color(p), 0))  # rarest colour first: it rules out most positions
    over = [0] * (threshold + 1) + [1] * (255 - threshold)  # channel difference -> differs (1) or not (0)
    alive_lut = [255 if v <= allowed else 0 for v in range(256)]
    differs_cache: dict = {}
    counts = Image.new("L", (cw, ch), 0)
    done = 0
    for p in pixels:
        c = color(p)
        differs = differs_cache.get(c)
        if differs is None:
            differs = g._channel_max(region, Image.new("RGB", region.size, c)).point(over)
            differs_cache[c] = differs
        counts = ImageChops.add(counts, differs.crop((p[0], p[1], p[0] + cw, p[1] + ch)))
        done += 1
        if done <= allowed:
            continue  # nothing can be ruled out yet
        alive = counts.point(alive_lut)
        n = alive.histogram()[255]
        if n == 0:
            return _Found(None, counts.getextrema()[0])
        if n <= VERIFY_LIMIT and done < len(pixels):
            return _best(region, template, keep, threshold, _positions(alive), home)
    low = counts.getextrema()[0]  # every pixel counted: exact (below 255)
    best = _positions(counts.point([255 if v == low else 0 for v in range(256)]))
    if low > allowed:
        return _Found(best[0] if best else None, low) if low < 255 else _Found(None, low)
    return _Found(min(best, key=lambda q: (q[0] - home[0]) ** 2 + (q[1] - home[1]) ** 2), low)


def _best(region, template, keep, threshold, candidates, home) -> _Found:
    tw, th = template.size
    best = None
    for x, y in candidates:
        diff = g._channel_max(region.crop((x, y, x + tw, y + th)), template)
        diff = ImageChops.multiply(diff, keep)
        n = diff.point(lambda v, t=threshold: 255 if v > t else 0).histogram()[255]
        key = (n, (x - home[0]) ** 2 + (y - home[1]) ** 2)
        if best is None or key < best[0]:
            best = (key, (x, y))
    assert best is not None
    return _Found(best[1], best[0][0])


# -- the diff picture ---------------------------------------------------------------------------------------


def diff_image(result: NeedleMatch, image: Image.Image) -> Image.Image | None:
    """vmmpy.golden's diff picture (needle dimmed, red/orange differences, exclude areas outlined blue) over
    the match areas, with match areas outlined green, search regions yellow and best template positions cyan.
    None when the sizes differ."""
    needle = result.needle
    image = g._rgb(image)
    if image.size != needle.image.size:
        return None
    thresholds = [a.threshold for a in needle.areas if a.type == "match"]
    excludes = [a.rect for a in needle.areas if a.type == "exclude"]
    # compare only inside match areas: everything else is masked (and not outlined)
    outside = Image.new("L", image.size, 255)
    for a in needle.areas:
        if a.type == "match":
            x, y, w, h = a.rect
            outside.paste(0, (x, y, x + w, y + h))
    masked = Image.composite(needle.image, image, outside)  # equal where not compared
    out = g.diff_image(masked, needle.image, threshold=min(thresholds, default=0), masks=excludes)
    draw = ImageDraw.Draw(out)
    fw, fh = image.size
    for r in result.areas:
        x, y, w, h = r.area.rect
        if r.area.type == "match":
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=GREEN)
        else:
            rx, ry, rw, rh = r.area.region or (0, 0, fw, fh)
            draw.rectangle((rx, ry, min(rx + rw, fw) - 1, min(ry + rh, fh) - 1), outline=YELLOW)
            if r.position is not None:
                px, py = r.position
                draw.rectangle((px, py, px + w - 1, py + h - 1), outline=CYAN)
    return out


def save_artifacts(result: NeedleMatch, image: Image.Image, out_dir: str | os.PathLike, name: str) -> tuple[str, ...]:
    """`<name>.obtained.png` and (same size) `<name>.diff.png` in out_dir (vmmpy.golden's names); their paths."""
    obtained_path, diff_path = g._artifact_paths(out_dir, name)
    files = [g.save_png(image, obtained_path)]
    diff = diff_image(result, image)
    if diff is not None:
        files.append(g.save_png(diff, diff_path))
    return tuple(files)


def remove_artifacts(out_dir: str | os.PathLike, name: str) -> None:
    for stale in g._artifact_paths(out_dir, name):
        if os.path.exists(stale):
            os.remove(stale)


NeedleLike = Union[Needle, str, os.PathLike, Image.Image]


def as_needle(target: NeedleLike) -> Needle:
    if isinstance(target, Needle):
        return target
    if isinstance(target, Image.Image):
        return Needle.from_image(target)
    return Needle.load(target)


def write(needle_path: str | os.PathLike, image: Image.Image) -> tuple[str, str]:
    """Update mode: (re)write the needle's PNG from `image`, keeping its JSON or, without one, creating the
    default (one match area over the whole image). Returns the action ('created', 'updated', 'unchanged')
    and the PNG's path. An existing JSON whose areas do not fit the new image raises NeedleError."""
    png, js = paths(needle_path)
    image = g._rgb(image)
    exists = os.path.exists(png)
    if os.path.exists(js):
        Needle(image, load_areas(js), png, os.path.basename(png)[:-4])  # the areas still fit
    if exists:
        old = g.load(png)
        if old.size == image.size and g.compare(image, old).differing == 0 and os.path.exists(js):
            return "unchanged", png
    g.save_png(image, png)
    if not os.path.exists(js):
        with _files.open_output(js) as f:
            f.write(json_text([whole_area(image.size)]).encode())
    return ("updated" if exists else "created"), png
