"""runner/vmmrun.c, the C runner over the public API, built natively against the soft backend.

The same runner, cross-built, is what tests/test_kvm_nested.py runs under KVM; here its options,
exit codes and error lines are checked on this host (`make build/vmmrun`).
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from . import locks
from .conftest import GUEST_DIR, HOST_HAS_KVM, ROOT

VMMRUN = os.path.join(ROOT, "build", "vmmrun")


@pytest.fixture(scope="module")
def vmmrun() -> str:
    p = locks.make("-s", "-C", ROOT, "build/vmmrun", lock="vmmrun")  # pytest -n: one worker builds it
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return VMMRUN


def run(vmmrun: str, *args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([vmmrun, *args], input=stdin, capture_output=True, timeout=timeout)


def elf(name: str) -> str:
    return os.path.join(GUEST_DIR, f"{name}.elf")


def test_boots_a_guest_and_streams_its_serial_output(vmmrun):
    p = run(vmmrun, "--stats", elf("hello"))
    assert p.returncode == 0, p.stderr
    assert b"Hello from vmmpy guest!" in p.stdout
    stats = p.stderr.decode()
    assert "vmmrun: stats: backend=soft" in stats and "mmio_exits=" in stats and "peak_rss_kib=" in stats


def test_exit_status_reset_and_timeout(vmmrun):
    assert run(vmmrun, elf("exit_code")).returncode == 7
    p = run(vmmrun, elf("psci_reset"))
    assert p.returncode == 3, p.stderr
    p = run(vmmrun, "--timeout", "0.3", elf("idle_notick"))
    assert p.returncode == 124
    assert p.stderr.decode().startswith("vmmrun: timeout: the guest ran for 0.3 s")


def test_stdin_smp_and_gpu(vmmrun):
    p = run(vmmrun, "--stdin", "--cpus", "2", elf("uart_irq"), stdin=b"hi!\tq")
    assert p.returncode == 0, p.stderr
    assert b"PASS uart_irq" in p.stdout
    p = run(vmmrun, "--gpu=320x240", "--stdin", elf("gpu_demo"), stdin=b"x")
    assert p.returncode == 0, p.stderr
    assert b"gpu_demo: 320x240 framebuffer" in p.stdout and b"PASS gpu_demo" in p.stdout


def test_sigint_stops_the_guest(vmmrun):
    proc = subprocess.Popen([vmmrun, elf("idle")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the guest is running once it has printed
    assert b"idle: ready" in line, line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"vmmrun: stopped by signal 2" in err


@pytest.mark.parametrize(
    "args, text",
    [
        ([], "no kernel given"),
        (["--cpus", "9", "K"], "--cpus wants a number from 1 to 8"),
        (["--ram", "lots", "K"], "bad size 'lots'"),
        (["--timeout", "-1", "K"], "--timeout wants a positive number"),
        (["--gpu=32x", "K"], "--gpu wants WIDTHxHEIGHT"),
        (["--backend", "warp", "K"], "unknown backend 'warp'"),
        (["--bogus", "K"], "unknown option"),
        (["/nonexistent.elf"], "/nonexistent.elf"),
        pytest.param(
            ["--backend", "kvm", "K"],
            "backend 'kvm' is not",
            marks=pytest.mark.skipif(HOST_HAS_KVM, reason="this host has a working /dev/kvm"),
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(vmmrun, args, text):
    args = [elf("hello") if a == "K" else a for a in args]
    p = run(vmmrun, *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmmrun: "), lines
    assert text in lines[0], lines
