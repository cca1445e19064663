"""pytest plugin (registered as a pytest11 entry point): the `vmmpy_machine` factory fixture, golden frames.

    def test_boots(vmmpy_machine):
        m = vmmpy_machine("kernel.elf", ram="128M")
        m.serial.expect("login:", timeout=30)

    @pytest.mark.vmmpy(cpus=2, ram="512M")       # defaults for this test's machines
    def test_smp(vmmpy_machine):
        m = vmmpy_machine()                      # the kernel from the marker or the vmmpy_kernel ini option
        ...

    def test_draws_logo(vmmpy_machine, vmmpy_golden):
        m = vmmpy_machine("kernel.elf", gpu=True)
        m.screen.hold(3)
        m.screen.wait_frame(3, timeout=30)
        vmmpy_golden.check(m, "logo", frame=3, masks=[(0, 780, 1280, 20)])

Every machine made through the fixture is stopped and freed after the test, and
a failing test gets each machine's serial transcript attached to its report.

Failure artifacts (vmmpy/artifacts.py, docs/pytest.md): every Machine created while a test runs (through the
fixture or directly) is recorded; when the test fails, each leaves serial.log (the whole output),
frame-last.png and the held frames, events.jsonl (input sent), result.json and reproduce.sh under
`--vmmpy-artifacts DIR` (default `<basetemp>/vmmpy-artifacts`) / `<test node id>/<index>-<machine>/`; the
report names the directory. `--vmmpy-keep-artifacts` keeps them for passing tests too.

Everything this plugin registers is namespaced (`--vmmpy-*` options, `vmmpy_*` fixtures and ini keys,
the `vmmpy` marker): it is loaded in every pytest run of an environment where vmmpy is installed, so it must
not collide with other plugins (pytest-golden has `--update-goldens` and a `golden` fixture). For the same
reason it imports nothing of vmmpy's C extension (nor libunicorn, nor Pillow) until a fixture is used.

Machine defaults, lowest priority first: the ini options `vmmpy_backend`, `vmmpy_timeout` (seconds a run
may last: Machine(timeout=)) and `vmmpy_kernel` (relative to the ini file's directory), then the
`@pytest.mark.vmmpy(...)` keywords (any Machine keyword, and `kernel`), then the factory call's arguments.

Goldens are `goldens/<name>.png` beside the test file. `pytest --vmmpy-update-goldens` writes them
instead of comparing; on a mismatch `<name>.obtained.png` and `<name>.diff.png` go to
`--vmmpy-golden-out` (default `<rootdir>/.pytest-goldens`), under the test file's path. The image
logic lives in vmmpy/golden.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vmmpy.machine import Machine

_KEY = pytest.StashKey[list]()
_WRITTEN = pytest.StashKey[list]()  # (action, golden path) written by --vmmpy-update-goldens
_ARTIFACTS = pytest.StashKey[object]()  # the test's vmmpy.artifacts.TestArtifacts
_ARTIFACT_ROOT = pytest.StashKey[Path]()
ARTIFACTS_DIR = "vmmpy-artifacts"  # under pytest's basetemp unless --vmmpy-artifacts says where

GOLDEN_DIR = "goldens"
DEFAULT_OUT = ".pytest-goldens"
MARKER = "vmmpy"


def pytest_addoption(parser):
    group = parser.getgroup("vmmpy", "vmmpy (aarch64 VMs: machines, golden frames)")
    group.addoption(
        "--vmmpy-update-goldens",
        action="store_true",
        default=False,
        dest="vmmpy_update_goldens",
        help="write goldens/<name>.png from what the tests obtain instead of comparing (the checks then pass)",
    )
    group.addoption(
        "--vmmpy-golden-out",
        metavar="DIR",
        default=None,
        dest="vmmpy_golden_out",
        help=f"where failing golden checks write <name>.obtained/.diff.png (default: <rootdir>/{DEFAULT_OUT})",
    )
    group.addoption(
        "--vmmpy-artifacts",
        metavar="DIR",
        default=None,
        dest="vmmpy_artifacts",
        help="where a failing test's machines leave their artifacts (serial log, frames, input, result, command "
        f"line), in DIR/<test>/<machine>/ (default: <basetemp>/{ARTIFACTS_DIR})",
    )
    group.addoption(
        "--vmmpy-keep-artifacts",
        action="store_true",
        default=False,
        dest="vmmpy_keep_artifacts",
        help="keep the machines' artifacts of passing tests too",
    )
    parser.addini("vmmpy_backend", "vmmpy: default backend of vmmpy_machine's machines (soft, kvm, auto)", default="")
    parser.addini(
        "vmmpy_timeout", "vmmpy: seconds a run of vmmpy_machine's machines may last (Machine(timeout=))", default=""
    )
    parser.addini(
        "vmmpy_kernel", "vmmpy: default kernel of vmmpy_machine() (relative to the ini file's directory)", default=""
    )


def pytest_configure(config):
    config.stash[_WRITTEN] = []
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): defaults for the machines vmmpy_machine() makes in this test "
        "(any vmmpy.Machine keyword, e.g. cpus=2, ram='512M', and kernel=)",
    )
    config.addinivalue_line(
        "markers",
        "vmmpy_no_artifacts: record no failure artifacts for this test's machines (a test that makes "
        "hundreds of them, e.g. a soak, whose every close would otherwise write a directory)",
    )


def _ini_defaults(config) -> dict:
    """vmmpy_backend / vmmpy_timeout / vmmpy_kernel as Machine keywords (only those that are set)."""
    out: dict = {}
    backend = str(config.getini("vmmpy_backend")).strip()
    if backend:
        out["backend"] = backend
    timeout = str(config.getini("vmmpy_timeout")).strip()
    if timeout:
        try:
            out["timeout"] = float(timeout)
        except ValueError:
            pytest.fail(f"ini option vmmpy_timeout: not a number of seconds: {timeout!r}", pytrace=False)
    kernel = str(config.getini("vmmpy_kernel")).strip()
    if kernel:
        base = config.inipath.parent if config.inipath else config.rootpath
        out["kernel"] = str(base / os.path.expanduser(kernel))
    return out


def _marker_defaults(node) -> dict:
    """The keywords of the vmmpy markers on the test (the closest one wins: function over class over module)."""
    out: dict = {}
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            pytest.fail(f"@pytest.mark.{MARKER}() takes keywords only (e.g. cpus=2), not {mark.args!r}", pytrace=False)
        out.update(mark.kwargs)
    return out


@pytest.fixture
def vmmpy_machine(request):
    """vmmpy_machine(kernel=None, **kwargs) -> a vmmpy.Machine, closed after the test.

    Defaults come from the ini options (vmmpy_backend, vmmpy_timeout, vmmpy_kernel), then the test's
    @pytest.mark.vmmpy(...) keywords; the call's own arguments win.
    """
    made: list[Machine] = []
    request.node.stash[_KEY] = made
    defaults = {**_ini_defaults(request.config), **_marker_defaults(request.node)}

    def factory(kernel=None, **kwargs) -> Machine:
        __tracebackhide__ = True
        from vmmpy.machine import Machine  # here, not at import: the plugin must load without the extension

        kw = {**defaults, **kwargs}
        if kernel is None:
            kernel = kw.pop("kernel", None)
        else:
            kw.pop("kernel", None)
        m = Machine(kernel, **kw)
        made.append(m)
        return m

    yield factory
    # a failing test's artifacts were collected by pytest_runtest_makereport, before this teardown
    for m in made:
        m.close()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "golden"


class Golden:
    """The `vmmpy_golden` fixture: compare images (or a machine's screen) with goldens/<name>.png."""

    def __init__(self, request: pytest.FixtureRequest):
        self._request = request
        config = request.config
        self.update: bool = config.getoption("vmmpy_update_goldens")
        self.dir = Path(request.path).parent / GOLDEN_DIR
        out = config.getoption("vmmpy_golden_out")
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
            update_hint=f"pytest --vmmpy-update-goldens {self._request.node.nodeid}",
        )
        if outcome.action in ("created", "updated"):
            self._request.config.stash[_WRITTEN].append((outcome.action, outcome.golden))
        return outcome

    def wait_for(self, machine, name: str, *, timeout: float = 10.0, frame: int | None = None):
        """``machine.screen.wait_for(goldens/<name>.png + .json, timeout)`` (a needle: vmmpy/needle.py), with
        the obtained/diff PNGs in the golden output directory. Returns the vmmpy.needle.NeedleMatch.

        With --vmmpy-update-goldens: an existing needle that matches within `timeout` is left alone; one that
        does not, or a missing one, gets its PNG from the screen (the latest image once `timeout` has passed,
        or once frame `frame` exists if given; after a mismatch, the latest image) and keeps its JSON (a new
        needle gets one match area over the whole screen)."""
        __tracebackhide__ = True
        import contextlib

        from vmmpy import errors
        from vmmpy import needle as nd

        name = self._name(name)
        png = self.dir / f"{name}.png"
        hint = f"pytest --vmmpy-update-goldens {self._request.node.nodeid}"
        if not self.update:
            if not png.exists():
                raise nd.NeedleMismatch(f"needle {name!r} does not exist: {png}\n  to create it: {hint}")
            try:
                return machine.screen.wait_for(png, timeout, out_dir=self.out_dir, name=name)
            except nd.NeedleMismatch as e:
                raise nd.NeedleMismatch(f"{e}\n  if the new screen is right: {hint}", e.closest, e.files) from None
        if png.exists():
            try:
                return machine.screen.wait_for(png, timeout, out_dir=self.out_dir, name=name)
            except nd.NeedleMismatch:
                pass
        else:
            with contextlib.suppress(errors.ScreenTimeout, errors.ScreenEOF):
                machine.screen.wait_frame(frame or 2**62, timeout=timeout)
        image = machine.screen.capture()
        action, path = nd.write(png, image)
        if action != "unchanged":
            self._request.config.stash[_WRITTEN].append((action, path))
        return nd.Needle.load(png).match(image, frame=machine.screen._captured_frame)


@pytest.fixture
def vmmpy_golden(request) -> Golden:
    """vmmpy_golden.check(image_or_machine, name=None, *, frame=0, threshold=0, max_fraction=0.0, masks=());
    vmmpy_golden.wait_for(machine, name, *, timeout=10.0, frame=None) (needles)"""
    return Golden(request)


# pytest-xdist (`pytest -n`): the goldens are written by the workers, the summary is printed by the controller.
# Each worker hands its list over in `config.workeroutput`, which xdist sends back when the worker finishes.
def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)  # set on xdist workers only
    if workeroutput is not None:
        workeroutput["vmmpy_goldens_written"] = [(a, str(p)) for a, p in session.config.stash.get(_WRITTEN, [])]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and never called) without pytest-xdist
def pytest_testnodedown(node, error):
    written = getattr(node, "workeroutput", {}).get("vmmpy_goldens_written", [])
    node.config.stash.setdefault(_WRITTEN, []).extend((a, Path(p)) for a, p in written)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = config.stash.get(_WRITTEN, [])
    if not config.getoption("vmmpy_update_goldens"):
        return
    terminalreporter.section("vmmpy goldens")
    if not written:
        terminalreporter.write_line("--vmmpy-update-goldens: no golden needed writing")
    for action, path in written:
        terminalreporter.write_line(f"{action} {path}")


def _artifact_root(config) -> Path:
    root = config.stash.get(_ARTIFACT_ROOT, None)
    if root is None:
        out = config.getoption("vmmpy_artifacts")
        if out:
            root = Path(config.invocation_params.dir, os.path.expanduser(out))  # relative: to where pytest ran
        else:
            factory = getattr(config, "_tmp_path_factory", None)  # pytest's tmp_path_factory (basetemp)
            root = (factory.getbasetemp() if factory is not None else Path(config.rootpath)) / ARTIFACTS_DIR
        config.stash[_ARTIFACT_ROOT] = root
    return root


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Record the Machines created from the test's setup to its teardown (vmmpy.artifacts)."""
    from vmmpy import artifacts  # light: no extension, no Pillow

    if item.get_closest_marker("vmmpy_no_artifacts"):
        yield
        return
    ta = artifacts.begin(_artifact_root(item.config) / artifacts.safe_name(item.nodeid), item.nodeid)
    item.stash[_ARTIFACTS] = ta
    try:
        yield
    finally:
        del item.stash[_ARTIFACTS]
        artifacts.end(ta, keep=ta.collected)


def _collect_artifacts(item, report) -> None:
    """Write the test's machines' artifacts now (the fixture has not closed them yet) and name them in the
    report; for a teardown failure, from what each machine kept when it closed."""
    ta = item.stash.get(_ARTIFACTS, None)
    if ta is None or not ta.records:
        return
    lines = ta.collect()
    if report.failed:
        report.sections.append(("vmmpy artifacts", f"{ta.dir}\n" + "\n".join(lines)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    ta = item.stash.get(_ARTIFACTS, None)
    keep = report.when == "call" and item.config.getoption("vmmpy_keep_artifacts")
    if ta is not None and not ta.collected and (report.failed or keep):
        _collect_artifacts(item, report)
    if report.when != "call" or not report.failed:
        return
    for i, m in enumerate(item.stash.get(_KEY, [])):
        try:
            text = m.serial.text if m._vm is not None else ""
        except Exception as e:  # the VM may be gone; say so rather than hide the failure
            text = f"<serial unavailable: {e}>"
        report.sections.append((f"vmmpy serial: machine {i} ({m.name})", text[-20000:] or "<no output>"))
