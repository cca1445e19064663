"""Needles (vmmpy/needle.py): a PNG plus match / exclude / search areas, Screen.wait_for, and the plugin's
vmmpy_golden.wait_for with --vmmpy-update-goldens. Synthetic images for the rules; guest/input_echo.c (a green
XOR crosshair at the tablet's position, on black) for waiting on a real screen."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from PIL import Image, ImageDraw

import vmmpy
from vmmpy import golden as g
from vmmpy import needle as nd
from vmmpy.needle import Area, Needle, NeedleError, NeedleMismatch

pytest_plugins = ["pytester"]

W, H = 96, 64
SIZE = (320, 240)  # input_echo's screen
GREEN = (0, 255, 0)


def scene(box=(60, 20), color=(200, 40, 40)) -> Image.Image:
    """Grey background, a 'title bar' strip, a 6x4 'button' at `box`."""
    im = Image.new("RGB", (W, H), (90, 90, 90))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, W - 1, 7), fill=(10, 10, 120))
    x, y = box
    d.rectangle((x, y, x + 5, y + 3), fill=color)
    d.point((x + 2, y + 1), fill=(255, 255, 255))
    return im


def cross(cx, cy, size=SIZE) -> Image.Image:
    """What input_echo shows with the tablet at (cx, cy) and nothing clicked."""
    im = Image.new("RGB", size)
    d = ImageDraw.Draw(im)
    d.line((cx - 6, cy, cx + 6, cy), fill=GREEN)
    d.line((cx, cy - 6, cx, cy + 6), fill=GREEN)
    return im


def clicked(cx, cy, size=SIZE) -> Image.Image:
    """input_echo after a click at (cx, cy): a 5x5 white dot under the XORed crosshair."""
    im = Image.new("RGB", size)
    ImageDraw.Draw(im).rectangle((cx - 2, cy - 2, cx + 2, cy + 2), fill=(255, 255, 255))
    for x, y in [(cx + d, cy) for d in range(-6, 7)] + [(cx, cy + d) for d in range(-6, 7) if d]:
        r, g_, b = im.getpixel((x, y))
        im.putpixel((x, y), (r, g_ ^ 255, b))
    return im


def move(m, x, y):
    """Move the tablet and wait for the frame that shows it: a needle that matches the screen already (the
    crosshair where it was) would otherwise be found at once."""
    n = m.screen.frames
    m.tablet.move(x, y)
    m.screen.wait_frame(n + 1, pause=m.deterministic, timeout=30)


CROSS_AREA = Area("search", (44, 44, 13, 13))  # the crosshair of cross(50, 50)


# -- matching one image ----------------------------------------------------------------------------------------


def test_default_needle_is_an_exact_golden():
    n = Needle.from_image(scene())
    assert n.match(scene()).ok and n.match(scene()).score == 1.0
    r = n.match(scene(color=(201, 40, 40)))
    assert not r.ok and r.areas[0].differing == 23 and "23 of 6144 pixels differ" in r.describe()


@pytest.mark.parametrize(
    "threshold, max_fraction, passes",
    [(0, 0.0, False), (4, 0.0, False), (5, 0.0, True), (0, 23 / 48, True), (0, 22 / 48, False)],
)
def test_match_area_tolerance(threshold, max_fraction, passes):
    """The area around the button (8x6 = 48 pixels, 23 of them the button's, 5 brighter in the frame)."""
    frame = scene(color=(205, 45, 45))
    n = Needle(scene(), [Area("match", (59, 19, 8, 6), threshold, max_fraction)])
    r = n.match(frame)
    assert r.ok is passes
    assert (r.areas[0].compared, r.areas[0].allowed) == (48, int(max_fraction * 48))


def test_only_match_areas_count_and_each_has_its_own_tolerance():
    frame = scene(color=(205, 45, 45))
    frame.paste((0, 0, 0), (0, 40, 10, 50))  # outside every area: ignored
    n = Needle(scene(), [Area("match", (0, 0, W, 8)), Area("match", (59, 19, 8, 6), threshold=5)])
    assert n.match(frame).ok
    n = Needle(scene(), [Area("match", (0, 0, W, 8)), Area("match", (59, 19, 8, 6), threshold=4)])
    r = n.match(frame)
    assert not r.ok and [a.ok for a in r.areas] == [True, False]
    assert r.score == pytest.approx(1 - 23 / 48)


def test_exclude_areas_are_never_compared():
    frame = scene(color=(0, 0, 0))
    whole = Area("match", (0, 0, W, H))
    assert not Needle(scene(), [whole]).match(frame).ok
    assert Needle(scene(), [whole, Area("exclude", (60, 20, 6, 4))]).match(frame).ok
    r = Needle(scene(), [whole, Area("exclude", (60, 20, 6, 3))]).match(frame)  # one row short
    assert not r.ok and r.areas[0].differing == 6 and r.areas[0].compared == W * H - 18


def test_search_finds_the_template_anywhere_and_returns_its_position():
    n = Needle(scene(), [Area("search", (60, 20, 6, 4))])
    for x, y in [(60, 20), (0, 50), (90, 60), (33, 9)]:
        r = n.match(scene(box=(x, y)))
        assert r.ok and r.position == (x, y) and r.center == (x + 3, y + 2), (x, y)
    assert not n.match(Image.new("RGB", (W, H), (90, 90, 90))).ok


def test_search_region_limits_where_to_look():
    n = Needle(scene(), [Area("search", (60, 20, 6, 4), region=[40, 10, 56, 30])])
    assert n.match(scene(box=(45, 30))).position == (45, 30)
    r = n.match(scene(box=(10, 30)))
    assert not r.ok and "differ everywhere in the region" in r.describe()
    # a region partly off the frame is clipped
    assert Needle(scene(), [Area("search", (60, 20, 6, 4), region=[80, 50, 100, 100])]).match(scene(box=(90, 60))).ok


def test_search_tolerance_and_excluded_template_pixels():
    frame = scene(box=(30, 40))
    frame.putpixel((32, 41), (250, 0, 0))  # the white dot in the button is red here
    area = Area("search", (60, 20, 6, 4))
    r = Needle(scene(), [area]).match(frame)
    assert not r.ok and r.areas[0].differing == 1  # a lower bound: no position comes closer
    assert Needle(scene(), [Area("search", (60, 20, 6, 4), max_fraction=1 / 24)]).match(frame).position == (30, 40)
    assert Needle(scene(), [area, Area("exclude", (62, 21, 1, 1))]).match(frame).position == (30, 40)
    # and the match areas are still checked beside it
    n = Needle(scene(), [area, Area("exclude", (62, 21, 1, 1)), Area("match", (0, 0, W, 8))])
    frame.paste((0, 0, 0), (0, 0, 4, 4))
    assert not n.match(frame).ok


def test_search_ambiguity_picks_the_nearest_best_position():
    frame = scene(box=(10, 30))
    ImageDraw.Draw(frame).rectangle((70, 30, 75, 33), fill=(200, 40, 40))
    frame.putpixel((72, 31), (255, 255, 255))  # two identical buttons: the one nearer (60, 20) wins
    assert Needle(scene(), [Area("search", (60, 20, 6, 4))]).match(frame).position == (70, 30)


def test_search_for_the_crosshair_on_a_large_screen_is_quick():
    import time

    n = Needle(cross(50, 50, (1280, 800)), [CROSS_AREA])
    t = time.monotonic()
    r = n.match(cross(1000, 700, (1280, 800)))
    assert r.ok and r.center == (1000, 700)
    assert time.monotonic() - t < 2.0


def test_size_mismatch():
    r = Needle.from_image(scene()).match(Image.new("RGB", (10, 10)))
    assert not r.ok and r.score == 0.0 and r.describe() == f"size differs: frame 10x10, needle {W}x{H}"


# -- files ----------------------------------------------------------------------------------------------------


def test_load_png_with_and_without_json(tmp_path):
    scene().save(tmp_path / "b.png")
    n = Needle.load(tmp_path / "b")
    assert n.name == "b" and n.areas == [Area("match", (0, 0, W, H))]
    areas = [
        {"type": "match", "x": 0, "y": 0, "width": W, "height": 8, "threshold": 3, "max_fraction": 0.5},
        {"type": "exclude", "x": 1, "y": 1, "width": 2, "height": 2},
        {"type": "search", "x": 60, "y": 20, "width": 6, "height": 4, "region": [0, 8, W, H - 8], "name": "button"},
    ]
    (tmp_path / "b.json").write_text(json.dumps({"areas": areas, "comment": "a button"}))
    for p in ("b.png", "b.json", "b"):
        n = Needle.load(tmp_path / p)
        assert [a.to_json() for a in n.areas] == areas
    r = n.match(scene(box=(5, 50)))
    assert r.ok and r.area("button").position == (5, 50)
    assert json.loads(n.json_text()) == {"areas": areas}


@pytest.mark.parametrize(
    "doc, message",
    [
        ("[]", 'a list "areas"'),
        ('{"areas": [], "x": 1}', "unknown key(s) ['x']"),
        ('{"areas": [{"type": "match", "x": 0, "y": 0, "width": 4}]}', "area 0: missing key(s) ['height']"),
        ('{"areas": [{"type": "mtach", "x": 0, "y": 0, "width": 4, "height": 4}]}', "type is one of"),
        ('{"areas": [{"type": "match", "x": 0, "y": 0, "width": 0, "height": 4}]}', "width, height > 0"),
        ('{"areas": [{"type": "match", "x": 0, "y": 0, "width": 4, "height": 4, "threshold": 300}]}', "0..255"),
        ('{"areas": [{"type": "match", "x": 0, "y": 0, "width": 4, "height": 4, "xpos": 1}]}', "unknown key"),
        ('{"areas": [{"type": "match", "x": 90, "y": 0, "width": 10, "height": 4}]}', "goes beyond the 96x64"),
        ('{"areas": [{"type": "exclude", "x": 0, "y": 0, "width": 4, "height": 4}]}', "no match or search area"),
        ('{"areas": [{"type": "match", "x": 0, "y": 0, "width": 4, "height": 4, "region": [0,0,4,4]}]}', "only"),
        ("{nope", "not valid JSON"),
    ],
)
def test_bad_json_is_a_clear_error(tmp_path, doc, message):
    scene().save(tmp_path / "b.png")
    (tmp_path / "b.json").write_text(doc)
    with pytest.raises(NeedleError) as e:
        Needle.load(tmp_path / "b.png")
    assert message in str(e.value)


def test_search_tolerance_is_bounded():
    with pytest.raises(NeedleError, match="at most 254"):
        Needle(scene(), [Area("search", (0, 0, W, H), max_fraction=0.5)])


def test_write_creates_refreshes_and_keeps_the_areas(tmp_path):
    p = tmp_path / "n" / "b.png"
    assert nd.write(p, scene()) == ("created", str(p))
    assert json.loads((tmp_path / "n" / "b.json").read_text()) == {
        "areas": [{"type": "match", "x": 0, "y": 0, "width": W, "height": H}]
    }
    assert nd.write(p, scene()) == ("unchanged", str(p))
    custom = '{"areas": [{"type": "search", "x": 60, "y": 20, "width": 6, "height": 4}]}\n'
    (tmp_path / "n" / "b.json").write_text(custom)
    assert nd.write(p, scene(box=(10, 30))) == ("updated", str(p))
    assert (tmp_path / "n" / "b.json").read_text() == custom  # the areas are kept
    assert g.compare(g.load(p), scene(box=(10, 30))).differing == 0
    with pytest.raises(NeedleError, match="goes beyond"):  # areas that no longer fit the new image
        nd.write(p, Image.new("RGB", (32, 16)))


# -- Screen.wait_for on input_echo ------------------------------------------------------------------------


@pytest.fixture
def echo(guest):
    made = []

    def start(deterministic=False):
        m = vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=SIZE, input=True, deterministic=deterministic)
        made.append(m)
        m.screen.wait_frame(1, pause=deterministic, timeout=30)
        return m

    yield start
    for m in made:
        m.close()


@pytest.mark.parametrize("deterministic", [False, True], ids=["realtime", "deterministic"])
def test_wait_for_finds_the_crosshair_where_the_tablet_is(echo, deterministic):
    m = echo(deterministic)
    n = Needle(cross(50, 50), [CROSS_AREA], name="cross")
    for x, y in [(200, 100), (7, 233), (160, 120)]:
        move(m, x, y)
        r = m.screen.wait_for(n, timeout=30)
        assert r.ok and r.center == (x, y) and r.position == (x - 6, y - 6) and r.frame >= 2
        assert m.paused is deterministic  # deterministic: parked where it matched
        m.tablet.click(*r.center)  # click what was found, and wait for the dot the click leaves
        r = m.screen.wait_for(Needle(clicked(x, y), [Area("match", (x - 6, y - 6, 13, 13))]), timeout=30)
        assert r.ok


def test_wait_for_checks_the_image_shown_now_first(echo):
    m = echo(deterministic=True)
    m.tablet.move(100, 80)
    m.screen.wait_frame(2, pause=True, timeout=30)
    frames = m.screen.frames
    r = m.screen.wait_for(Needle(cross(100, 80), [CROSS_AREA]), timeout=30)
    assert r.frame == frames == m.screen.frames  # no new frame was needed
    assert m.screen.wait_for(cross(100, 80), timeout=30).ok  # a PIL image: an exact golden of the screen


def test_wait_for_timeout_names_the_closest_frame_and_saves_obtained_and_diff(echo, tmp_path):
    m = echo()
    m.tablet.move(30, 30)
    m.screen.wait_frame(2, timeout=30)
    expected = cross(200, 200)
    expected.save(tmp_path / "far.png")
    (tmp_path / "far.json").write_text(
        json.dumps({"areas": [{"type": "match", "x": 180, "y": 180, "width": 40, "height": 40}]})
    )
    with pytest.raises(NeedleMismatch) as e:
        m.screen.wait_for(tmp_path / "far.png", timeout=0.5)
    text = str(e.value)
    assert isinstance(e.value, AssertionError)
    assert text.startswith("needle 'far' not found: no frame matched within 0.5 s")
    assert "closest: frame 2, score 0.9844" in text  # 25 of the 1600 pixels: the crosshair that is not there
    assert "match area 40x40 at (180, 180) does not match: 25 of 1600 pixels differ by more than 0" in text
    obtained, diff = tmp_path / "far.obtained.png", tmp_path / "far.diff.png"
    assert f"obtained: {obtained} (frame 2)" in text and f"diff:     {diff}" in text
    assert e.value.files == (str(obtained), str(diff)) and e.value.closest.frame == 2
    assert g.compare(g.load(obtained), cross(30, 30)).differing == 0
    im = g.load(diff)
    assert im.getpixel((200, 200)) == g.RED and im.getpixel((180, 180)) == nd.GREEN  # outline of the area
    # out_dir and name; stale files go once it matches
    move(m, 200, 200)
    r = m.screen.wait_for(tmp_path / "far.png", timeout=30)
    assert r.ok and not obtained.exists() and not diff.exists()
    move(m, 1, 1)
    with pytest.raises(NeedleMismatch):
        m.screen.wait_for(Needle(cross(50, 50), [CROSS_AREA]), timeout=0.3, out_dir=tmp_path / "o", name="x")
    assert sorted(os.listdir(tmp_path / "o")) == ["x.diff.png", "x.obtained.png"]


def test_wait_for_fails_at_once_when_the_vm_ends(echo):
    m = echo()
    m.keyboard.tap("esc")  # input_echo powers off
    with pytest.raises(NeedleMismatch, match=r"no frame matched before the VM ended \(POWEROFF\)"):
        m.screen.wait_for(Needle(cross(50, 50), [CROSS_AREA]), timeout=30, out_dir=os.devnull + ".d")


# -- the plugin: vmmpy_golden.wait_for and --vmmpy-update-goldens ------------------------------------------

INNER = """
    import vmmpy

    def test_cross(vmmpy_golden):
        with vmmpy.Machine({elf!r}, gpu=True, gpu_size={size!r}, input=True) as m:
            m.screen.wait_frame(1, timeout=30)
            m.tablet.move({x}, {y})
            r = vmmpy_golden.wait_for(m, "ui/cross", timeout={timeout}, frame=2)
            print("CENTER", r.center)
"""


@pytest.fixture
def inner(pytester, guest, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def make(x, y, timeout=5):
        src = INNER.format(elf=guest("input_echo"), size=SIZE, x=x, y=y, timeout=timeout)
        pytester.makepyfile(test_cross=textwrap.dedent(src))
        return pytester

    return make


def run(pytester, *args):
    return pytester.runpytest("-p", "vmmpy.pytest_plugin", "-s", *args)


def test_update_mode_creates_then_refreshes_needles_keeping_their_areas(inner):
    p = inner(100, 100)
    png, js = p.path / "goldens" / "ui" / "cross.png", p.path / "goldens" / "ui" / "cross.json"
    r = run(p)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*needle 'ui/cross' does not exist*", "*to create it: pytest --vmmpy-update-goldens*"])
    r = run(p, "--vmmpy-update-goldens")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines([f"created {png}"])
    assert g.compare(g.load(png), cross(100, 100)).differing == 0
    assert json.loads(js.read_text())["areas"] == [{"type": "match", "x": 0, "y": 0, "width": 320, "height": 240}]
    run(p).assert_outcomes(passed=1)
    # the user turns it into a search for the crosshair: it is found wherever the tablet puts it
    js.write_text('{"areas": [{"type": "search", "x": 94, "y": 94, "width": 13, "height": 13}]}\n')
    p = inner(250, 40)
    r = run(p)
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*CENTER (250, 40)*"])
    r = run(p, "--vmmpy-update-goldens")  # it matches: nothing is written
    r.stdout.fnmatch_lines(["*no golden needed writing*"])
    # a screen the needle does not match: the failure keeps obtained/diff and says how to refresh it
    p.path.joinpath("goldens/ui/cross.json").write_text(
        '{"areas": [{"type": "match", "x": 90, "y": 90, "width": 20, "height": 20}]}\n'
    )
    p = inner(250, 40, timeout=0.5)
    r = run(p)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*needle 'ui/cross' not found*", "*if the new screen is right: pytest --vmmpy-update*"])
    assert (p.path / ".pytest-goldens" / "test_cross" / "ui" / "cross.diff.png").exists()
    r = run(p, "--vmmpy-update-goldens")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines([f"updated {png}"])
    assert g.compare(g.load(png), cross(250, 40)).differing == 0
    assert json.loads(js.read_text())["areas"][0]["x"] == 90  # the areas are kept
    run(p).assert_outcomes(passed=1)
