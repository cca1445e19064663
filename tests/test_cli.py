"""Tier 2: `python -m vmmpy run` — streaming, exit codes, one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import B_SELF, PRINT_X, SYSTEM_OFF, SYSTEM_RESET, code


def vmmpy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmmpy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return lines[0]


def test_hello_prints_and_exits_zero(guest):
    p = vmmpy("run", guest("hello"))
    assert p.returncode == 0, p.stderr
    assert "Hello from vmmpy guest!" in p.stdout
    assert p.stderr == ""


def test_semihosting_exit_status_becomes_the_exit_code(guest):
    p = vmmpy("run", guest("exit_code"))
    assert "exiting with 7" in p.stdout
    assert p.returncode == 7


def test_raw_guest_and_reset(raw_guest):
    p = vmmpy("run", raw_guest(code(*PRINT_X, *SYSTEM_OFF)), "--format", "raw")
    assert (p.returncode, p.stdout) == (0, "X")
    p = vmmpy("run", raw_guest(code(*SYSTEM_RESET), "reset.bin"), "--format", "raw")
    assert p.returncode == 120
    assert "reset" in one_error_line(p)


def test_timeout_exit_code(raw_guest):
    p = vmmpy("run", raw_guest(code(B_SELF)), "--format", "raw", "--timeout", "0.3")
    assert p.returncode == 124
    assert "timed out after 0.3 s" in one_error_line(p)


@pytest.mark.parametrize(
    "args, code_, text",
    [
        (["run", "/nonexistent.elf"], 2, "/nonexistent.elf: cannot open kernel: no such file or directory"),
        (["run", "/etc/hostname"], 1, "not an ELF, arm64 Image or gzip"),
        (["run", sys.executable], 1, "not an aarch64 ELF"),
        (["run", "K", "--ram", "lots"], 2, "argument --ram: cannot parse size"),
        (["run", "K", "--cpus", "99"], 2, "at most 8 are supported"),
        (["run", "K", "--backend", "kvm"], 1, "not built into this library"),
        (["run", "K", "--timeout", "-1"], 2, "the timeout must be positive"),
        (["run", "K", "--entry", "0x40000000"], 2, "need --format raw"),
        (["run", "K", "--initrd", "/nonexistent.cpio"], 2, "cannot open initrd"),
        (["run"], 2, "required: kernel"),
        (["fly"], 2, "invalid choice"),
    ],
)
def test_bad_input_gives_one_clear_line(guest, args, code_, text):
    args = [guest("hello") if a == "K" else a for a in args]
    p = vmmpy(*args)
    line = one_error_line(p)
    assert line.startswith("vmmpy: error: ")
    assert text in line
    assert p.returncode == code_
