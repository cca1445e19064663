"""Packaging (slow tier): `python -m build` makes an sdist with every header and a wheel built from it; the wheel
installs into a fresh venv (no system packages, no source tree) where the CLI, the API and the pytest plugin work.
Needs the package index (pip) for build, cffi, unicorn, Pillow and pytest; skipped when it cannot be reached."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from .conftest import GUEST_DIR, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]  # --dist loadgroup: one build

SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md", "include", "csrc", "vmmpy"]


def _run(args, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VMMPY_ROOT", "PYTEST_ADDOPTS")}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, **kw)


def _venv(path, system_site: bool = False) -> str:
    args = [sys.executable, "-m", "venv", str(path)]
    if system_site:
        args.insert(3, "--system-site-packages")
    subprocess.run(args, check=True)
    return str(path / "bin" / "python")


def _pip(py: str, *args: str) -> None:
    p = _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args])
    if p.returncode != 0:
        pytest.skip(f"pip install {' '.join(args)} failed here (no package index?): {p.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel) built by `python -m build` from a copy of the source files (nothing written to the tree)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o", "_vmm.c", "*.egg-info")
    src.mkdir()
    for name in SOURCES:
        s = os.path.join(ROOT, name)
        if os.path.isdir(s):
            shutil.copytree(s, src / name, ignore=ignore)
        else:
            shutil.copy2(s, src / name)
    py = _venv(tmp / "buildenv", system_site=True)
    _pip(py, "build")
    p = _run([py, "-m", "build", "--outdir", str(tmp / "dist"), str(src)])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (sdist,) = glob.glob(str(tmp / "dist" / "*.tar.gz"))
    (wheel,) = glob.glob(str(tmp / "dist" / "*.whl"))
    return sdist, wheel


def test_the_sdist_has_every_header_the_license_and_py_typed(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    headers = {os.path.relpath(h, ROOT) for h in glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True)}
    headers.add("include/vmm.h")
    assert headers <= names, sorted(headers - names)
    sources = {os.path.relpath(c, ROOT) for c in glob.glob(os.path.join(ROOT, "csrc", "*", "*.c"))}
    assert sources <= names, sorted(sources - names)
    assert {"LICENSE", "vmmpy/py.typed", "vmmpy/_version.py", "MANIFEST.in"} <= names


def test_the_wheel_metadata(dists):
    from vmmpy import __version__

    _, wheel = dists
    assert f"vmmpy-{__version__}-" in os.path.basename(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"vmmpy-{__version__}.dist-info/METADATA").decode()
        entry = z.read(f"vmmpy-{__version__}.dist-info/entry_points.txt").decode()
    assert "vmmpy/py.typed" in names and any(n.startswith("vmmpy/_vmm") and n.endswith(".so") for n in names)
    assert any(n.endswith("LICENSE") for n in names)
    assert "Classifier: Framework :: Pytest" in meta and "License: MIT" in meta
    assert "Classifier: License :: OSI Approved :: MIT License" in meta
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert f.readline().strip() == "MIT License"
    requires = set(re.findall(r"^Requires-Dist: ([^;\n]+)$", meta, re.M))
    assert {"unicorn==2.1.4", "cffi>=1.15"} <= requires and any(r.startswith("Pillow") for r in requires)
    assert "[pytest11]\nvmmpy = vmmpy.pytest_plugin" in entry


def test_the_wheel_works_in_a_fresh_venv(dists, tmp_path):
    _, wheel = dists
    py = _venv(tmp_path / "venv")
    _pip(py, wheel, "pytest")
    hello = os.path.join(GUEST_DIR, "hello.elf")
    work = tmp_path / "work"  # not the source tree: the installed package must be what runs
    work.mkdir()
    from vmmpy import __version__

    p = _run([py, "-m", "vmmpy", "--version"], cwd=work)
    assert p.returncode == 0 and p.stdout.strip() == f"vmmpy {__version__}", p.stderr
    p = _run([str(tmp_path / "venv" / "bin" / "vmmpy"), "run", hello, "--ram", "64"], cwd=work)
    assert p.returncode == 0 and "Hello from vmmpy guest!" in p.stdout, p.stderr
    venv = os.path.realpath(tmp_path / "venv")
    probe = (
        "import vmmpy, os\n"
        f"assert os.path.realpath(vmmpy.__file__).startswith({venv!r}), vmmpy.__file__\n"
        f"with vmmpy.Machine({hello!r}, ram=64) as m:\n"
        "    m.serial.expect('Hello from vmmpy guest!')\n"
        "    assert m.wait(timeout=10).ok\n"
        "print('ok')\n"
    )
    p = _run([py, "-c", probe], cwd=work)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    (work / "test_smoke.py").write_text(
        f"def test_boot(vmmpy_machine):\n"
        f"    m = vmmpy_machine({hello!r})\n"
        f"    m.serial.expect('Hello from vmmpy guest!')\n"
        f"    assert m.wait(timeout=10).ok\n"
    )
    p = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_smoke.py"], cwd=work)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr
