"""Failure artifacts (issue 19, item 1): what the machines of a failing test leave behind, and where.

Inner pytest runs go through pytester in-process, as tests/test_plugin.py's do (vmmpy's modules are imported
here first: pytester drops the modules first imported inside its runs).
"""

from __future__ import annotations

import gc
import json
import os
import shlex
import subprocess
import textwrap

import pytest
from PIL import Image

import vmmpy
import vmmpy.golden  # noqa: F401
import vmmpy.machine  # noqa: F401
from vmmpy import artifacts, cli

from .conftest import GUEST_DIR
from .test_serial_window import CHUNK, spam_guest

pytest_plugins = ["pytester"]

HELLO = os.path.join(GUEST_DIR, "hello.elf")
ECHO = os.path.join(GUEST_DIR, "input_echo.elf")


@pytest.fixture(autouse=True)
def only_our_plugin(monkeypatch):
    """Inner runs load just this plugin (-p), as in tests/test_plugin.py."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


FAILING = textwrap.dedent(
    f"""
    import vmmpy

    def test_fails(vmmpy_machine):
        m = vmmpy_machine({ECHO!r}, gpu=True, gpu_size=(320, 200), input=True, cmdline="quiet")
        m.screen.hold(2)
        m.start()
        m.serial.expect("input_echo: ready", timeout=30)
        m.keyboard.tap("a")
        m.serial.write("hi\\n")
        m.screen.wait_frame(2, timeout=30)
        m.serial.expect("input: kbd type=1 code=30 value=0", timeout=30)
        with vmmpy.Machine({HELLO!r}, ram=64) as other:      # made directly, closed before the failure
            other.serial.expect("Hello from vmmpy guest!", timeout=30)
            other.wait(timeout=30)
        assert False, "deliberately"
    """
)


def _files(d) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_a_failing_test_leaves_every_artifact(pytester):
    pytester.makepyfile(test_inner=FAILING)
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    root = pytester.path.parent / "basetemp" / "vmmpy-artifacts"  # pytester passes --basetemp
    (test_dir,) = root.iterdir()
    assert test_dir.name == "test_inner.py__test_fails"
    out = r.stdout.str()
    assert "vmmpy artifacts" in out and str(test_dir) in out  # the report names the directory
    first, second = sorted(test_dir.iterdir())
    assert first.name == "0-input_echo.elf" and second.name == "1-hello.elf"

    assert {"serial.log", "events.jsonl", "result.json", "reproduce.sh", "frame-last.png", "frame-000002.png"} <= (
        _files(first)
    )
    log = (first / "serial.log").read_text()
    assert "input_echo: ready" in log and "input: kbd type=1 code=30 value=1" in log
    for name in ("frame-last.png", "frame-000002.png"):
        with Image.open(first / name) as im:
            im.load()
            assert im.size == (320, 200)
    events = [json.loads(line) for line in (first / "events.jsonl").read_text().splitlines()]
    assert [(e["call"], e["args"]) for e in events] == [("keyboard.tap", ["a"]), ("serial.write", ["hi\n"])]
    assert all(e["t"] >= 0 and e["time"] > 0 for e in events)
    res = json.loads((first / "result.json").read_text())
    assert res["running"] and res["result"] is None  # the fixture had not closed it yet
    assert res["stats"]["mmio_exits"] > 0 and res["stats"]["clock_ns"] > 0
    assert res["screen"]["frames"] >= 2 and res["held_frames"] == [2]
    assert res["frames"]["frame-000002.png"] == "ok" and res["test"].endswith("test_inner.py::test_fails")
    argv = shlex.split((first / "reproduce.sh").read_text().splitlines()[-1])
    assert argv[0] == "exec" and argv[2:5] == ["-m", "vmmpy", "run"] and argv[5] == ECHO
    assert res["command"] == argv[1:-1]  # without the trailing "$@"
    for flag in ("--gpu", "--input", "--headless"):
        assert flag in argv
    assert argv[argv.index("--gpu-size") + 1] == "320x200" and argv[argv.index("--cmdline") + 1] == "quiet"

    # the machine closed inside the test: written at close
    assert {"serial.log", "events.jsonl", "result.json", "reproduce.sh"} <= _files(second)
    assert "Hello from vmmpy guest!" in (second / "serial.log").read_text()
    res2 = json.loads((second / "result.json").read_text())
    assert res2["result"]["reason"] == "POWEROFF" and res2["result"]["ok"] and res2["stats"] is not None
    assert "frame-last.png" not in _files(second)  # no GPU, no frames

    # the command line runs: the same guest boots from the shell (stopped by an added --timeout)
    run = subprocess.run(
        ["sh", str(first / "reproduce.sh"), "--timeout", "3"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 124 and "input_echo: ready" in run.stdout, run.stdout + run.stderr


PASSING = textwrap.dedent(
    f"""
    def test_passes(vmmpy_machine):
        m = vmmpy_machine({HELLO!r})
        m.serial.expect("Hello from vmmpy guest!", timeout=30)
        assert m.wait(timeout=30).ok
    """
)


def test_a_passing_test_leaves_nothing_unless_kept(pytester):
    pytester.makepyfile(test_ok=PASSING)
    pytester.runpytest("-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    root = pytester.path.parent / "basetemp" / "vmmpy-artifacts"  # pytester passes --basetemp
    assert not root.exists() or not any(root.iterdir())
    out = pytester.path / "arts"  # a relative --vmmpy-artifacts is relative to where pytest runs
    r = pytester.runpytest(
        "-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider", "--vmmpy-keep-artifacts", "--vmmpy-artifacts=arts"
    )
    r.assert_outcomes(passed=1)
    assert "vmmpy artifacts" not in r.stdout.str()
    (machine_dir,) = (out / "test_ok.py__test_passes").iterdir()
    assert {"serial.log", "events.jsonl", "result.json", "reproduce.sh"} <= _files(machine_dir)
    assert json.loads((machine_dir / "result.json").read_text())["result"]["ok"]


def test_serial_log_is_the_whole_output_beyond_the_window(pytester, tmp_path):
    """Serial keeps a 64 KiB window here; serial.log has all 3 MiB."""
    blob = spam_guest(tmp_path / "spam.bin", 3)
    pytester.makepyfile(
        test_spam=f"""
        def test_spam(vmmpy_machine):
            m = vmmpy_machine({blob!r}, kernel_format="raw", serial_buffer="64K")
            m.serial.expect("END", timeout=60)
            assert m.serial.dropped > 0
            assert False
        """
    )
    out = tmp_path / "arts"
    pytester.runpytest("-p", "vmmpy.pytest_plugin", f"--vmmpy-artifacts={out}").assert_outcomes(failed=1)
    (machine_dir,) = (out / "test_spam.py__test_spam").iterdir()
    log = (machine_dir / "serial.log").read_bytes()
    assert len(log) == 3 * CHUNK + 4 and log.endswith(b"A" * 100 + b"END\n")
    res = json.loads((machine_dir / "result.json").read_text())
    assert res["serial_window_dropped"] > 0 and not res["serial_log"]["truncated"]
    assert "serial_buffer=" in " ".join(res["command_notes"])


def test_directory_names():
    assert artifacts.safe_name("tests/test_x.py::TestC::test_y") == "tests_test_x.py__TestC__test_y"
    a, b = artifacts.safe_name("t.py::test[a b]"), artifacts.safe_name("t.py::test[a_b]")
    assert a.startswith("t.py__test_a_b-") and a != b
    assert len(artifacts.safe_name("t.py::test_" + "x" * 500)) <= 130


def test_serial_log_cap_truncates_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "SERIAL_LOG_CAP", 10)

    class Fake:
        name = "fake"

    rec = artifacts.MachineRecord(Fake(), {}, tmp_path / "m", 0)
    rec.serial_data(b"0123456")
    rec.serial_data(b"789abcdef")
    rec.serial_data(b"more")
    rec.detach()
    log = (tmp_path / "m" / "serial.log").read_bytes()
    assert log.startswith(b"0123456789\n[vmmpy: serial.log truncated here: 10 bytes") and b"more" not in log
    assert rec.serial_truncated and rec.serial_bytes == 10


def test_a_failure_points_at_the_tests_line(pytester):
    pytester.makepyfile(
        test_tb=f"""
        def test_expect(vmmpy_machine):
            m = vmmpy_machine({HELLO!r})
            m.serial.expect("never printed", timeout=10)

        def test_fail_on(vmmpy_machine):
            m = vmmpy_machine({HELLO!r})
            m.serial.expect("never printed", timeout=10, fail_on="Hello")

        def test_screen(vmmpy_machine):
            m = vmmpy_machine({HELLO!r}, gpu=True)
            m.screen.wait_frame(1, timeout=10)
        """
    )
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider", "--show-capture=no")
    r.assert_outcomes(failed=3)
    out = r.stdout.str()
    assert "vmmpy/machine.py" not in out and "vmmpy/screen.py" not in out and "vmmpy/artifacts.py" not in out
    r.stdout.fnmatch_lines(
        [
            "test_tb.py:3: SerialEOF",
            "test_tb.py:7: SerialFailure",
            "test_tb.py:11: ScreenEOF",
        ],
        consecutive=False,
    )


def test_records_hold_machines_weakly_and_end_detaches(tmp_path):
    outer = artifacts._current  # this very test is recorded by the outer session's plugin
    ta = artifacts.begin(tmp_path / "t", "t::x")
    try:
        m = vmmpy.Machine(HELLO)
        kept = vmmpy.Machine(HELLO, name="kept")
        rec = m._record
        assert rec is not None and kept._record is not None and len(ta.records) == 2
        del m
        gc.collect()
        assert rec._machine() is None  # the record did not keep it alive
    finally:
        artifacts.end(ta, keep=False)
    assert kept._record is None and not (tmp_path / "t").exists()
    kept.close()
    assert artifacts._current is outer  # nested recorders (pytester runs) stack


def test_the_command_line_is_one_the_cli_accepts(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * 512)
    config = {
        "kernel": "k.elf",
        "cpus": 2,
        "ram": 1 << 30,
        "cmdline": "console=ttyAMA0 root=/dev/vda",
        "initrd": "rd.cpio.gz",
        "kernel_format": "raw",
        "load_addr": 0x4008_0000,
        "entry": 0x4008_0000,
        "deterministic": True,
        "gpu": True,
        "gpu_size": (640, 480),
        "input": True,
        "disk": [str(disk), (str(disk), "ro")],
        "rng": True,
        "virtio_console": True,
        "share": [str(tmp_path), (str(tmp_path), "data", True)],
        "timeout": 12.5,
        "cpu_model": "cortex-a53",
        "transport": "pci",
    }
    argv, notes = artifacts.command_line(config, "soft")
    assert argv[1:4] == ["-m", "vmmpy", "run"] and not notes
    args = cli.build_parser().parse_args(argv[3:])
    assert args.kernel == os.path.abspath("k.elf") and args.cpus == 2 and args.ram == 1 << 30
    assert args.cmdline == config["cmdline"] and args.initrd == os.path.abspath("rd.cpio.gz")
    assert (args.format, args.load_addr, args.entry) == ("raw", 0x4008_0000, 0x4008_0000)
    assert args.deterministic and args.gpu and args.gpu_size == (640, 480) and args.input and args.headless
    assert args.disk == [(str(disk), "rw"), (str(disk), "ro")] and args.rng and args.virtio_console
    assert cli._shares(args.share) == [(str(tmp_path), "share", False), (str(tmp_path), "data", True)]
    assert args.timeout == 12.5 and args.backend == "soft" and args.cpu_model == "cortex-a53"
    assert args.transport == "pci"
    net = {"kernel": "k", "net": ["user", "tap=tap0"], "hostfwd": ["tcp::8080-:80"], "net_capture": "n.pcap"}
    argv, notes = artifacts.command_line(net, None)
    args = cli.build_parser().parse_args(argv[3:])
    assert cli.net_kwargs(args) == {
        "net": ["user", "tap=tap0"],
        "hostfwd": ["tcp::8080-:80"],
        "net_capture": [os.path.abspath("n.pcap"), None],
    }
    argv, notes = artifacts.command_line({"kernel": "k", "net": object()}, None)
    assert "--net" not in argv and "in-process switch" in notes[0]
    argv, notes = artifacts.command_line({"kernel": "k", "ram": 300 << 20, "gpu": True, "gpu_max_mem": 64 << 20}, None)
    assert "--ram" in argv and argv[argv.index("--ram") + 1] == "300M" and "gpu_max_mem" in notes[0]


def test_a_teardown_failure_gets_what_the_machines_kept_at_close(pytester):
    """The fixture closes the machine first (it was set up last), then another fixture's teardown fails: the
    artifacts come from what the machine kept when it closed, frames included."""
    pytester.makepyfile(
        test_td=f"""
        import pytest

        @pytest.fixture
        def broken():
            yield
            raise RuntimeError("teardown breaks")

        def test_td(broken, vmmpy_machine):
            m = vmmpy_machine({ECHO!r}, gpu=True, gpu_size=(160, 100), input=True)
            m.serial.expect("input_echo: ready", timeout=30)
            m.screen.wait_frame(1, timeout=30)
            m.keyboard.type("x")
        """
    )
    r = pytester.runpytest("-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, errors=1)
    assert "vmmpy artifacts" in r.stdout.str()
    (machine_dir,) = (pytester.path.parent / "basetemp" / "vmmpy-artifacts" / "test_td.py__test_td").iterdir()
    res = json.loads((machine_dir / "result.json").read_text())
    assert res["result"]["reason"] == "STOPPED" and not res["running"] and res["screen"]["frames"] >= 1
    with Image.open(machine_dir / "frame-last.png") as im:
        assert im.size == (160, 100)
    assert "input_echo: ready" in (machine_dir / "serial.log").read_text()
    events = [json.loads(line) for line in (machine_dir / "events.jsonl").read_text().splitlines()]
    assert [e["call"] for e in events] == ["keyboard.type"]
