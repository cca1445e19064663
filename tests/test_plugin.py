"""The pytest plugin: namespaced names, nothing heavy imported at load, configuration (ini, marker), and
coexistence with pytest-golden (which has --update-goldens and a `golden` fixture too)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

# imported before pytester's in-process runs, which drop the modules first imported inside them: vmmpy's are
# imported lazily, and later tests would see two copies of each class
import vmmpy.golden  # noqa: F401
import vmmpy.machine  # noqa: F401

from .conftest import GUEST_DIR, ROOT

pytest_plugins = ["pytester"]

HELLO = os.path.join(GUEST_DIR, "hello.elf")


@pytest.fixture(autouse=True)
def only_our_plugin(monkeypatch):
    """Inner pytest runs load just this plugin (-p): with vmmpy installed, its entry point would register the
    same module a second time (pytest refuses that); other installed plugins slow each run down."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_the_plugin_imports_neither_the_extension_nor_unicorn_nor_pillow():
    probe = (
        "import sys, vmmpy.pytest_plugin, vmmpy\n"
        "assert vmmpy.TIMEOUT and vmmpy.__version__\n"
        "names = ('vmmpy._vmm', 'vmmpy._ffi', 'vmmpy.machine', 'unicorn', 'PIL', 'cffi')\n"
        "heavy = [n for n in names if n in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_broken_build_does_not_break_other_test_runs(tmp_path):
    """vmmpy._vmm and unicorn fail to import: an unrelated suite still runs; only the test making a machine fails."""
    (tmp_path / "test_other.py").write_text(
        "def test_unrelated():\n    assert 1 + 1 == 2\n\n"
        "def test_uses_vmmpy(vmmpy_machine):\n    vmmpy_machine('x.elf')\n"
    )
    driver = textwrap.dedent(
        f"""
        import sys
        sys.modules['vmmpy._vmm'] = None   # import vmmpy._vmm raises ImportError: a broken build
        sys.modules['unicorn'] = None
        import pytest
        sys.exit(pytest.main(['-p', 'vmmpy.pytest_plugin', '-p', 'no:cacheprovider', '-q', {str(tmp_path)!r}]))
        """
    )
    out = subprocess.run([sys.executable, "-c", driver], env=_env(), capture_output=True, text=True, cwd=tmp_path)
    assert "1 failed, 1 passed" in out.stdout, out.stdout + out.stderr
    assert "FAILED test_other.py::test_uses_vmmpy - ImportError" in out.stdout


def test_only_namespaced_options_fixtures_and_ini_keys(pytester):
    pytester.makepyfile("def test_x(): pass")
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "--help")
    out = r.stdout.str()
    for name in ("--vmmpy-update-goldens", "--vmmpy-golden-out", "vmmpy_backend", "vmmpy_timeout", "vmmpy_kernel"):
        assert name in out
    assert "--update-goldens " not in out and "--golden-out" not in out.replace("--vmmpy-golden-out", "")
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "--fixtures")
    fixtures = r.stdout.str()
    assert "vmmpy_machine" in fixtures and "vmmpy_golden" in fixtures
    assert "\ngolden" not in fixtures and "\nmachine" not in fixtures
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "--markers")
    r.stdout.fnmatch_lines(["@pytest.mark.vmmpy(**kwargs)*"])


def test_ini_options_and_marker_reach_the_machines(pytester):
    pytester.makeini(
        f"""
        [pytest]
        vmmpy_backend = soft
        vmmpy_timeout = 7.5
        vmmpy_kernel = {HELLO}
        """
    )
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            import vmmpy

            def test_ini(vmmpy_machine):
                m = vmmpy_machine()                       # the kernel from vmmpy_kernel
                assert m.backend == "soft" and m.timeout == 7.5
                m.serial.expect("Hello from vmmpy guest!", timeout=10)
                assert m.wait(timeout=10).ok

            @pytest.mark.vmmpy(ram="64M", timeout=3)
            def test_marker(vmmpy_machine):
                m = vmmpy_machine()
                assert m.boot_info().ram_size == 64 << 20 and m.timeout == 3
                # the call's own arguments win over the marker's
                assert vmmpy_machine(ram=32).boot_info().ram_size == 32 << 20

            @pytest.mark.vmmpy(cpus=9)
            def test_marker_keywords_are_machine_keywords(vmmpy_machine):
                with pytest.raises(vmmpy.InvalidArgument, match="at most"):
                    vmmpy_machine()

            @pytest.mark.vmmpy(kernel="no/such/kernel.elf")
            class TestClass:
                @pytest.mark.vmmpy(ram="128M")
                def test_closest_marker_wins_per_keyword(self, vmmpy_machine):
                    with pytest.raises(vmmpy.KernelNotFound):
                        vmmpy_machine()

            @pytest.mark.vmmpy("positional")
            def test_positional_marker_arguments_are_refused(vmmpy_machine):
                vmmpy_machine()
            """
        )
    )
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "-v")
    r.assert_outcomes(passed=4, errors=1)
    r.stdout.fnmatch_lines(["*takes keywords only*"])


def test_a_run_timeout_from_the_ini_ends_a_hung_guest(pytester, raw_guest):
    from .conftest import B_SELF, code

    blob = raw_guest(code(B_SELF))
    pytester.makeini("[pytest]\nvmmpy_timeout = 0.5\n")
    pytester.makepyfile(
        f"""
        import vmmpy

        def test_hang(vmmpy_machine):
            m = vmmpy_machine({blob!r}, kernel_format="raw")
            r = m.serial.expect(["never", vmmpy.EOF], timeout=30)
            assert r.pattern is vmmpy.EOF and m.wait().reason == vmmpy.RunReason.TIMEOUT
        """
    )
    t0 = time.monotonic()
    pytester.runpytest("-p", "vmmpy.pytest_plugin").assert_outcomes(passed=1)
    assert time.monotonic() - t0 < 20


def test_a_bad_ini_timeout_is_one_line(pytester):
    pytester.makeini("[pytest]\nvmmpy_timeout = soon\n")
    pytester.makepyfile("def test_t(vmmpy_machine):\n    vmmpy_machine()\n")
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin")
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines(["*ini option vmmpy_timeout: not a number of seconds: 'soon'*"])


GOLDEN_SUITE = {
    "pytest.ini": "[pytest]\nenable_assertion_pass_hook = true\n",
    "greet.yml": "input: hi\noutput: HI\n",
    "test_both.py": textwrap.dedent(
        f"""
        import pytest
        from PIL import Image

        @pytest.mark.golden_test("greet.yml")
        def test_pytest_golden(golden):                       # pytest-golden's fixture
            assert golden.out["output"] == golden["input"].upper()

        def test_vmmpy(vmmpy_machine, vmmpy_golden, request):   # vmmpy's
            m = vmmpy_machine({HELLO!r})
            m.serial.expect("Hello from vmmpy guest!", timeout=10)
            assert m.wait(timeout=10).ok
            vmmpy_golden.check(Image.new("RGB", (4, 4), (9, 9, 9)), "tiny")

        def test_options(request):
            assert request.config.getoption("--update-goldens") is request.config.getoption("vmmpy_update_goldens")
        """
    ),
}


def test_coexists_with_pytest_golden_in_a_fresh_venv(tmp_path):
    """A venv with pytest-golden from the package index and vmmpy's plugin registered through a pytest11 entry
    point, as an installed vmmpy has it: pytest starts, and both plugins' fixtures and options work."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest-golden"],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install pytest-golden here: {pip.stderr.strip().splitlines()[-1:]}")
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # vmmpy's entry point, as `pip install vmmpy` writes it; the package itself comes from this tree
    dist = os.path.join(site, "vmmpy_plugin_probe-0.dist-info")
    os.makedirs(dist)
    with open(os.path.join(dist, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: vmmpy-plugin-probe\nVersion: 0\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as f:
        f.write("[pytest11]\nvmmpy = vmmpy.pytest_plugin\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in GOLDEN_SUITE.items():
        (suite / name).write_text(text)
    args = [py, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite)]
    env = _env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="")
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    out = subprocess.run(
        [*args, "--update-goldens", "--vmmpy-update-goldens"], env=env, cwd=suite, text=True, capture_output=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout
    assert (suite / "goldens" / "tiny.png").exists()
    plugins = subprocess.run(
        [py, "-m", "pytest", "--trace-config", "--co", "-q", str(suite)],
        env=env,
        cwd=suite,
        text=True,
        capture_output=True,
    ).stdout
    assert "pytest_golden" in plugins and "vmmpy.pytest_plugin" in plugins
    out = subprocess.run(args, env=env, cwd=suite, text=True, capture_output=True)  # compare, not write
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout + out.stderr
