"""pytest plugin (registered as an entry point): the `machine` factory fixture and golden frames.

    def test_boots(machine):
        m = machine("kernel.elf", ram="128M")
        m.serial.expect("login:", timeout=30)

    def test_draws_logo(machine, golden):
        m = machine("kernel.elf", gpu=True)
        m.screen.hold(3)
        m.screen.wait_frame(3, timeout=30)
        golden.check(m, "logo", frame=3, masks=[(0, 780, 1280, 20)])

Every machine made through the fixture is stopped and freed after the test, and
a failing test gets each machine's serial transcript attached to its report.

Goldens are `goldens/<name>.png` beside the test file. `pytest --update-goldens` writes them
instead of comparing; on a mismatch `<name>.obtained.png` and `<name>.diff.png` go to
`--golden-out` (default `<rootdir>/.pytest-goldens`), under the test file's path. The image
logic lives in vmmpy/golden.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from vmmpy.machine import Machine

_KEY = pytest.StashKey[list]()
_WRITTEN = pytest.StashKey[list]()  # (action, golden path) written by --update-goldens

GOLDEN_DIR = "goldens"
DEFAULT_OUT = ".pytest-goldens"


def pytest_addoption(parser):
    group = parser.getgroup("vmmpy", "vmmpy golden frames")
    group.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="write goldens/<name>.png from what the tests obtain instead of comparing (the checks then pass)",
    )
    group.addoption(
        "--golden-out",
        metavar="DIR",
        default=None,
        help=f"where failing golden checks write <name>.obtained/.diff.png (default: <rootdir>/{DEFAULT_OUT})",
    )


def pytest_configure(config):
    config.stash[_WRITTEN] = []


@pytest.fixture
def machine(request):
    made: list[Machine] = []
    request.node.stash[_KEY] = made

    def factory(*args, **kwargs) -> Machine:
        m = Machine(*args, **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "golden"


class Golden:
    """The `golden` fixture: compare images (or a machine's screen) with goldens/<name>.png."""

    def __init__(self, request: pytest.FixtureRequest):
        self._request = request
        config = request.config
        self.update: bool = config.getoption("update_goldens")
        self.dir = Path(request.path).parent / GOLDEN_DIR
        out = config.getoption("golden_out")
        out_root = Path(out) if out else Path(config.rootpath) / DEFAULT_OUT
        try:
            rel = Path(request.path).relative_to(config.rootpath).with_suffix("")
        except ValueError:
            rel = Path(Path(request.path).stem)
        self.out_dir = out_root / rel
        self._default_uses = 0

    def _name(self, name: str | None) -> str:
        if name is None:
            self._default_uses += 1
            base = _safe_name(self._request.node.name)
            return base if self._default_uses == 1 else f"{base}-{self._default_uses}"
        if name.endswith(".png"):
            name = name[: -len(".png")]
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts) or os.path.isabs(name):
            raise ValueError(f"a golden name is a relative path without '..', not {name!r}")
        return name

    def path(self, name: str | None = None) -> Path:
        """Where the golden called `name` lives (goldens/<name>.png beside the test file)."""
        return self.dir / f"{self._name(name) if name is not None else _safe_name(self._request.node.name)}.png"

    def check(
        self,
        image,
        name: str | None = None,
        *,
        frame: int = 0,
        threshold: int = 0,
        max_fraction: float = 0.0,
        masks: Iterable[Sequence[int]] = (),
    ):
        """Compare `image` (a PIL image, or a machine: its screen's `frame`, 0 = latest) with the golden
        `name` (default: the test's name, then `<test>-2`, ...). `threshold`: channel difference (0..255)
        a pixel may have and still match; `max_fraction`: fraction of the unmasked pixels that may differ
        by more; `masks`: (x, y, w, h) rectangles to ignore. Returns a vmmpy.golden.Outcome."""
        __tracebackhide__ = True
        from vmmpy import golden as g  # Pillow is only needed by tests that use goldens

        if hasattr(image, "screen"):
            image = image.screen.capture(frame=frame)
        name = self._name(name)
        outcome = g.check(
            image,
            self.dir / f"{name}.png",
            out_dir=self.out_dir,
            name=name,
            threshold=threshold,
            max_fraction=max_fraction,
            masks=masks,
            update=self.update,
            update_hint=f"pytest --update-goldens {self._request.node.nodeid}",
        )
        if outcome.action in ("created", "updated"):
            self._request.config.stash[_WRITTEN].append((outcome.action, outcome.golden))
        return outcome


@pytest.fixture
def golden(request) -> Golden:
    """golden.check(image_or_machine, name=None, *, frame=0, threshold=0, max_fraction=0.0, masks=())"""
    return Golden(request)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = config.stash.get(_WRITTEN, [])
    if not config.getoption("update_goldens"):
        return
    terminalreporter.section("vmmpy goldens")
    if not written:
        terminalreporter.write_line("--update-goldens: no golden needed writing")
    for action, path in written:
        terminalreporter.write_line(f"{action} {path}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for i, m in enumerate(item.stash.get(_KEY, [])):
        try:
            text = m.serial.text if m._vm is not None else ""
        except Exception as e:  # the VM may be gone; say so rather than hide the failure
            text = f"<serial unavailable: {e}>"
        report.sections.append((f"vmmpy serial: machine {i} ({m.name})", text[-20000:] or "<no output>"))
