"""Golden-frame comparison: vmmpy.golden (pure image logic) and the pytest plugin's `vmmpy_golden` fixture.

Synthetic Pillow images stand in for captured frames: no VM is needed.
"""

from __future__ import annotations

import textwrap

import pytest
from PIL import Image, ImageDraw

from vmmpy import golden as g

pytest_plugins = ["pytester"]

W, H = 64, 48
BOX = (40, 30, 10, 10)  # x, y, w, h of the region the tests alter


def scene() -> Image.Image:
    im = Image.new("RGB", (W, H), (20, 40, 60))
    ImageDraw.Draw(im).rectangle((8, 8, 23, 23), fill=(200, 200, 0))
    return im


def altered(delta: int = 100) -> Image.Image:
    im = scene()
    x, y, w, h = BOX
    r, gr, b = im.getpixel((x, y))
    im.paste((r + delta, gr + delta, b + delta), (x, y, x + w, y + h))
    return im


INNER = """
    from PIL import Image, ImageDraw

    def scene():
        im = Image.new("RGB", ({W}, {H}), (20, 40, 60))
        ImageDraw.Draw(im).rectangle((8, 8, 23, 23), fill=(200, 200, 0))
        return im

    def test_scene(vmmpy_golden):
        vmmpy_golden.check(scene(), "scene"{kwargs})
"""


@pytest.fixture(autouse=True)
def only_our_plugin(monkeypatch):
    """Inner pytest runs load just this plugin (other installed plugins slow each run down)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester, *args):
    return pytester.runpytest("-p", "vmmpy.pytest_plugin", *args)


@pytest.fixture
def inner(pytester):
    """inner(**check_kwargs): a test module whose test checks scene() against goldens/scene.png."""

    def make(**kwargs):
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        pytester.makepyfile(test_scene=textwrap.dedent(INNER.format(W=W, H=H, kwargs=extra)))
        return pytester

    return make


def golden_file(pytester, name="scene"):
    return pytester.path / "goldens" / f"{name}.png"


def out_file(pytester, kind, name="scene"):
    return pytester.path / ".pytest-goldens" / "test_scene" / f"{name}.{kind}.png"


def failure_text(result) -> str:
    return "\n".join(result.outlines)


# -- the plugin ----------------------------------------------------------------------------------------------


def test_update_goldens_creates_the_golden_then_the_test_passes(inner):
    p = inner()
    r = run(p, "--vmmpy-update-goldens")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*vmmpy goldens*", f"created {golden_file(p)}"])
    assert g.compare(g.load(golden_file(p)), scene()).differing == 0
    run(p).assert_outcomes(passed=1)
    r = run(p, "--vmmpy-update-goldens")  # identical pixels: the file is left alone
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*no golden needed writing*"])


def test_missing_golden_fails_and_says_how_to_create_it(inner):
    p = inner()
    r = run(p)
    r.assert_outcomes(failed=1)
    text = failure_text(r)
    assert f"golden 'scene' does not exist: {golden_file(p)}" in text
    assert "to create it: pytest --vmmpy-update-goldens test_scene.py::test_scene" in text
    assert out_file(p, "obtained").exists()


def test_changed_region_fails_and_the_diff_shows_it_in_red(inner):
    p = inner()
    golden_file(p).parent.mkdir()
    altered().save(golden_file(p))
    r = run(p)
    r.assert_outcomes(failed=1)
    text = failure_text(r)
    obtained, diff = out_file(p, "obtained"), out_file(p, "diff")
    assert f"obtained: {obtained}" in text
    assert f"diff:     {diff}" in text
    assert f"100 of {W * H} pixels" in text
    assert "max channel difference 100" in text
    assert "x=40..49, y=30..39 (10x10 at (40, 30))" in text
    assert "if the new image is right: pytest --vmmpy-update-goldens test_scene.py::test_scene" in text
    assert g.compare(g.load(obtained), scene()).differing == 0
    im = g.load(diff)
    assert im.size == (W, H)
    x0, y0, w, h = BOX
    red = {(x, y) for y in range(H) for x in range(W) if im.getpixel((x, y)) == g.RED}
    assert red == {(x, y) for y in range(y0, y0 + h) for x in range(x0, x0 + w)}
    # once the test passes again, the stale artifacts go away
    scene().save(golden_file(p))
    run(p).assert_outcomes(passed=1)
    assert not obtained.exists() and not diff.exists()


def test_update_goldens_overwrites_a_differing_golden(inner):
    p = inner()
    golden_file(p).parent.mkdir()
    altered().save(golden_file(p))
    r = run(p, "--vmmpy-update-goldens")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines([f"updated {golden_file(p)}"])
    run(p).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "kwargs, passes",
    [
        ({"masks": [BOX]}, True),
        ({"masks": [(38, 28, 20, 20)]}, True),  # larger than the change, clipped at the edge
        ({"masks": [(40, 30, 10, 9)]}, False),  # one row short
        ({"masks": [(0, 0, 10, 10)]}, False),
    ],
)
def test_masks_ignore_a_region(inner, kwargs, passes):
    p = inner(**kwargs)
    golden_file(p).parent.mkdir()
    altered().save(golden_file(p))
    r = run(p)
    r.assert_outcomes(**({"passed": 1} if passes else {"failed": 1}))
    if not passes:
        im = g.load(out_file(p, "diff"))
        x, y, w, h = kwargs["masks"][0]
        assert im.getpixel((x, y)) == g.BLUE  # masks are outlined


@pytest.mark.parametrize(
    "delta, kwargs, passes",
    [
        (5, {}, False),
        (5, {"threshold": 4}, False),
        (5, {"threshold": 5}, True),
        (100, {"max_fraction": 100 / (W * H)}, True),  # exactly the 100 changed pixels allowed
        (100, {"max_fraction": 99 / (W * H)}, False),
        (100, {"threshold": 99, "max_fraction": 0.0}, False),
    ],
)
def test_tolerance(inner, delta, kwargs, passes):
    p = inner(**kwargs)
    golden_file(p).parent.mkdir()
    altered(delta).save(golden_file(p))
    r = run(p)
    r.assert_outcomes(**({"passed": 1} if passes else {"failed": 1}))


def test_size_mismatch_fails_clearly(inner):
    p = inner()
    golden_file(p).parent.mkdir()
    Image.new("RGB", (32, 32)).save(golden_file(p))
    r = run(p)
    r.assert_outcomes(failed=1)
    assert f"size differs: obtained {W}x{H}, golden 32x32" in failure_text(r)
    assert out_file(p, "obtained").exists()
    assert not out_file(p, "diff").exists()


def test_default_names_output_dir_and_machines(pytester):
    pytester.makepyfile(
        test_names="""
        import pytest
        from PIL import Image

        class FakeScreen:
            def capture(self, frame=0):
                return Image.new("RGB", (8, 8), (frame, 0, 0))

        class FakeMachine:
            screen = FakeScreen()

        @pytest.mark.parametrize("n", [1])
        def test_default(vmmpy_golden, n):
            vmmpy_golden.check(Image.new("RGB", (8, 8)))
            vmmpy_golden.check(Image.new("RGB", (8, 8), (1, 2, 3)))
            vmmpy_golden.check(FakeMachine(), "sub/frame7", frame=7)
        """
    )
    r = run(pytester, "--vmmpy-update-goldens")
    r.assert_outcomes(passed=1)
    d = pytester.path / "goldens"
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*.png")) == [
        "sub/frame7.png",
        "test_default_1-2.png",
        "test_default_1.png",
    ]
    assert g.load(d / "sub" / "frame7.png").getpixel((0, 0)) == (7, 0, 0)
    (d / "sub" / "frame7.png").unlink()
    Image.new("RGB", (8, 8)).save(d / "sub" / "frame7.png")
    out = pytester.path / "artifacts"
    r = run(pytester, "--vmmpy-golden-out", str(out))
    r.assert_outcomes(failed=1)
    assert (out / "test_names" / "sub" / "frame7.diff.png").exists()


def test_bad_name_is_an_error(pytester):
    pytester.makepyfile(
        test_bad="""
        import pytest
        from PIL import Image

        def test_bad(vmmpy_golden):
            with pytest.raises(ValueError, match="relative path"):
                vmmpy_golden.check(Image.new("RGB", (8, 8)), "../escape")
        """
    )
    run(pytester).assert_outcomes(passed=1)


# -- vmmpy.golden, directly ----------------------------------------------------------------------------------


def test_compare_reports_counts_max_and_bbox():
    c = g.compare(altered(30), scene())
    assert (c.differing, c.compared, c.max_diff, c.bbox) == (100, W * H, 30, (40, 30, 50, 40))
    assert not c.ok
    c = g.compare(altered(30), scene(), masks=[(40, 30, 5, 10)])
    assert (c.differing, c.compared, c.bbox) == (50, W * H - 50, (45, 30, 50, 40))


def test_compare_ignores_alpha_and_mode():
    rgba = scene().convert("RGBA")
    rgba.putalpha(10)
    assert g.compare(rgba, scene()).ok


def test_assert_matches_outside_pytest(tmp_path):
    path = tmp_path / "x.png"
    scene().save(path)
    assert g.assert_matches(scene(), path).ok
    with pytest.raises(g.GoldenMismatch, match="100 of"):
        g.assert_matches(altered(), path, out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "x.diff.png").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 256}, r"threshold must be 0\.\.255 \(a channel difference\), not 256"),
        ({"threshold": -1}, r"threshold must be 0\.\.255 .*, not -1"),
        ({"max_fraction": 1.5}, r"max_fraction must be 0\.0\.\.1\.0, not 1\.5"),
        ({"masks": [(0, 0, -1, 4)]}, r"a mask is \(x, y, width, height\) with width, height >= 0, not \(0, 0, -1, 4\)"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        g.compare(scene(), scene(), **kwargs)


# -- end to end: a real frame of the GPU demo guest --------------------------------------------------------


def test_gpu_demo_frame_matches_its_golden(machine, vmmpy_golden, guest):
    """tests/goldens/gpu_demo-frame3.png was written by `pytest --vmmpy-update-goldens` from this test: after a
    change to what guest/gpu_demo.c draws, rewrite it the same way (and look at it)."""
    m = machine(guest("gpu_demo"), gpu=True, gpu_size=(640, 480), ram="64M")
    m.screen.hold(3)
    m.screen.wait_frame(3, timeout=60)
    vmmpy_golden.check(m, "gpu_demo-frame3", frame=3)
