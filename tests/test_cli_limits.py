"""Tier 2: what the user names on the command line is range-checked and special files are refused.

Issue 15, items 8 and 9: every argument out of range, and every path that is a FIFO, a device or too
large, ends the run with one `vmmpy: error: ...` line on stderr (never a traceback, never a hang, never
gigabytes of memory) and exit code 2 (bad command line) or 1 (a file that cannot be loaded).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import PRINT_X, SYSTEM_OFF, code


def vmmpy(*args: str, timeout: float = 30, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmmpy", *args], capture_output=True, text=True, timeout=timeout, stdin=stdin
    )


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{p.stderr[:3000]}"
    assert "Traceback" not in p.stderr
    assert len(lines[0]) < 400, lines[0][:500]
    return lines[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


# -- item 9: numbers out of range ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, text",
    [
        (["--timeout", "inf"], "argument --timeout"),
        (["--timeout", "nan"], "argument --timeout"),
        (["--timeout", "1e300"], "argument --timeout"),
        (["--timeout", "0"], "the timeout must be positive"),
        (["--cpus", "-1"], "argument --cpus"),
        (["--cpus", "0"], "argument --cpus"),
        (["--cpus", str(2**32)], "argument --cpus"),
        (["--cpus", "9"], "at most 8"),
        (["--ram", "99999999999T"], "argument --ram"),
        (["--ram", "0"], "argument --ram"),
        (["--ram", "0M"], "argument --ram"),
        (["--format", "raw", "--entry", "-1"], "argument --entry"),
        (["--format", "raw", "--load-addr", str(2**64)], "argument --load-addr"),
        (["--format", "raw", "--load-addr", "-0x10"], "argument --load-addr"),
    ],
)
def test_out_of_range_arguments_are_one_line(guest, args, text):
    p = vmmpy("run", guest("hello"), *args)
    line = one_error_line(p)
    assert line.startswith("vmmpy: error: ") and text in line, line
    assert p.returncode == 2


def test_a_bare_ram_number_is_mib(raw_guest):
    """--ram 512 is 512 MiB, as QEMU's -m 512 (issue 19); 512B would be bytes (and too small)."""
    from vmmpy.cli import build_parser

    assert build_parser().parse_args(["run", "k", "--ram", "512"]).ram == 512 << 20
    assert build_parser().parse_args(["run", "k", "--ram", "4194304B"]).ram == 4 << 20
    p = vmmpy("run", raw_guest(code(*PRINT_X, *SYSTEM_OFF)), "--format", "raw", "--ram", "64")
    assert (p.returncode, p.stdout, p.stderr) == (0, "X", "")


def test_load_addr_0_is_an_address_not_the_default(raw_guest):
    """0 is not "left out": it lies below guest RAM (which starts at 0x40000000), so it is refused."""
    p = vmmpy("run", raw_guest(code(*PRINT_X, *SYSTEM_OFF)), "--format", "raw", "--load-addr", "0")
    line = one_error_line(p)
    assert "0x0" in line and "outside guest RAM" in line, line
    assert p.returncode == 2
    p = vmmpy("run", raw_guest(code(*PRINT_X, *SYSTEM_OFF)), "--format", "raw", "--entry", "0")
    assert "outside" in one_error_line(p)
    assert p.returncode == 2


def test_events_error_does_not_echo_a_huge_line(tmp_path, guest):
    script = tmp_path / "ev.txt"
    script.write_text("wait 1s\n" + "x" * (1 << 20) + " y\n")
    p = vmmpy("run", guest("hello"), "--events", str(script))
    line = one_error_line(p)
    assert "ev.txt:2: unknown command" in line and "…" in line, line
    assert p.returncode == 2
    script.write_text("type " + "a" * (1 << 20) + "\\q\n")
    p = vmmpy("run", guest("hello"), "--events", str(script))
    assert "unknown escape" in one_error_line(p)
    script.write_text("wait " + "9" * 5000 + " frames\n")
    p = vmmpy("run", guest("hello"), "--events", str(script))
    assert "ev.txt:1:" in one_error_line(p)
    assert p.returncode == 2


# -- item 8: special files ----------------------------------------------------------------------------


def test_kernel_fifo_is_refused_at_once(fifo):
    p = vmmpy("run", fifo, timeout=15)
    line = one_error_line(p)
    assert "not a regular file" in line, line
    assert p.returncode == 1


def test_initrd_fifo_is_refused_at_once(guest, fifo):
    p = vmmpy("run", guest("hello"), "--initrd", fifo, timeout=15)
    assert "not a regular file" in one_error_line(p)
    assert p.returncode == 1


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null", "dir"])
def test_events_special_file_is_refused_at_once(guest, fifo, tmp_path, special):
    path = {"fifo": fifo, "dir": str(tmp_path)}.get(special, special)
    p = vmmpy("run", guest("hello"), "--events", path, timeout=15)
    line = one_error_line(p)
    assert "not a regular file" in line or "directory" in line.lower(), line
    assert p.returncode == 2


def test_events_file_too_large(guest, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: costs no disk
    p = vmmpy("run", guest("hello"), "--events", str(big), timeout=15)
    assert "too large" in one_error_line(p)
    assert p.returncode == 2


def test_kernel_larger_than_ram_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(65 << 20)
    p = vmmpy("run", str(big), "--format", "raw", "--ram", "64M", timeout=15)
    line = one_error_line(p)
    assert "larger than guest RAM" in line, line
    assert p.returncode == 1


def test_capture_path_that_is_not_a_regular_file(guest, fifo, tmp_path):
    p = vmmpy("run", guest("hello"), "--capture", "1", fifo, timeout=15)
    assert "not a regular file" in one_error_line(p)
    assert p.returncode == 2
    script = tmp_path / "ev.txt"
    script.write_text(f"capture 1 {fifo}\n")
    p = vmmpy("run", guest("hello"), "--events", str(script), timeout=15)
    assert "not a regular file" in one_error_line(p)
    assert p.returncode == 2


def test_regular_file_helpers(tmp_path, fifo):
    """The Python side's one way to read or write a file the user names (events, captures, goldens)."""
    from vmmpy import _files

    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"abc")
    assert _files.read_regular(str(ok), 10) == b"abc"
    for bad in (fifo, "/dev/zero", str(tmp_path)):
        with pytest.raises(OSError, match="not a regular file|directory"):
            _files.read_regular(bad, 10)
    with pytest.raises(OSError, match="too large"):
        _files.read_regular(str(ok), 2)
    with pytest.raises(OSError, match="not a regular file"):
        _files.open_output(fifo)
    with _files.open_output(str(ok)) as f:  # truncates a regular file
        f.write(b"x")
    assert ok.read_bytes() == b"x"


def test_machine_ram_in_mib_and_0_refused(guest):
    import vmmpy

    with pytest.raises(vmmpy.InvalidArgument, match="more than 0"):
        vmmpy.Machine(ram=0)
    with pytest.raises(vmmpy.InvalidArgument, match="more than 0"):
        vmmpy.Machine(ram="0M")
    for ram in (64, "64", "64M", f"{64 << 20}B"):
        with vmmpy.Machine(guest("hello"), ram=ram) as m:
            assert m.boot_info().ram_size == 64 << 20
