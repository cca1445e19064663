"""Tier 1: parallel runs (pytest-xdist). A user's suite with the plugin runs under `pytest -n 2`, and the
suite itself writes nothing to fixed paths that two workers (or two checkouts) would share.

The suite proves itself under `make test PYTEST_ARGS="-n auto --dist loadgroup"` (.ci/run); these checks are the
cheap guard that runs in every tier."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import GUEST_DIR, ROOT

HELLO = os.path.join(GUEST_DIR, "hello.elf")

USER_SUITE = {
    "test_par.py": f"""
        import os
        import pytest
        from PIL import Image

        @pytest.mark.parametrize("i", range(4))
        def test_boot_and_golden(vmmpy_machine, vmmpy_golden, tmp_path, i):
            m = vmmpy_machine({HELLO!r})
            m.serial.expect("Hello from vmmpy guest!", timeout=30)
            assert m.wait(timeout=30).ok
            (tmp_path / "mine").write_text(os.environ["PYTEST_XDIST_WORKER"])  # per-worker basetemp
            vmmpy_golden.check(Image.new("RGB", (4, 4), (i, 0, 0)), f"g{{i}}")
    """,
}


def test_a_users_suite_runs_on_two_workers(tmp_path):
    pytest.importorskip("xdist")
    for name, text in USER_SUITE.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # only these plugins, however vmmpy is installed here
    }
    args = [sys.executable, "-m", "pytest", "-p", "vmmpy.pytest_plugin", "-p", "xdist.plugin", "-p", "no:cacheprovider"]
    args += ["-n", "2", "-q", "-rA", "--basetemp", str(tmp_path / "bt"), str(tmp_path)]
    out = subprocess.run([*args, "--vmmpy-update-goldens"], cwd=tmp_path, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "4 passed" in text, text
    # both workers ran tests, each under its own basetemp
    assert {p.read_text() for p in (tmp_path / "bt").glob("popen-gw*/*/mine")} == {"gw0", "gw1"}, text
    # the goldens the workers wrote are listed by the controller's summary
    summary = text[text.index("vmmpy goldens") :]
    for i in range(4):
        assert f"created {tmp_path / 'goldens' / f'g{i}.png'}" in summary, summary
    # and compare green on the next parallel run
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "4 passed" in out.stdout, out.stdout + out.stderr


# String constants in tests/*.py that name fixed places outside tmp_path, and why each is safe in parallel.
FIXED_PATHS_ALLOWED = {
    "/tmp": "test_events: a capture path that is a directory (an error case; nothing is written)",
    "/tmp/.X11-unix/X": "test_window: the socket of the Xvfb this test started (-displayfd picked its number)",
}


def test_the_suite_writes_no_fixed_temp_paths():
    """No test names a fixed file under /tmp (pytest-xdist workers would share it): tmp_path instead."""
    found = []
    for path in sorted(Path(ROOT, "tests").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for line in node.value.splitlines() or [""]:
                    for word in line.split():
                        word = word.strip("\"'()")
                        if word.startswith("/tmp") and word not in FIXED_PATHS_ALLOWED:
                            found.append(f"{path.name}:{node.lineno}: {word}")
    # test_linux's guest scripts write /tmp inside the guest (its own initramfs), not on the host
    assert [f for f in found if not f.startswith("test_linux.py:")] == []


def test_the_suite_wall_benchmark_builds_a_valid_record():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import common
    import suite_wall

    rec = suite_wall.build({1: [100.0, 104.0], 2: [60.0, 55.0]}, "not slow")
    common.validate(rec)
    assert {r["name"]: common.value(r) for r in rec["rows"]} == {
        "workers_1": 100.0,
        "workers_2": 55.0,
        "speedup_2": pytest.approx(100.0 / 55.0),
    }
    assert suite_wall.command(1, "not slow", [])[-2:] == ["-p", "no:xdist"]
    assert suite_wall.command(2, "not slow", ["-x"])[-3:] == ["-n", "2", "-x"]
