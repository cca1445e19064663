"""Tier 3: snapshots of Debian Linux (2 vCPUs, the BusyBox shell initramfs) on the soft backend.

A deterministic boot is stopped at its shell prompt and saved; the original and a VM restored from the
file are then fed the same typed line at the same virtual time and run to the same virtual time: their
output is byte-identical, and the shell answers.
"""

from __future__ import annotations

import pytest

import vmmpy

from .test_linux import CMDLINE, CPUS, VMMPY_BOOT_TIMEOUT, _initramfs, fetch_debian, initramfs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shell_snapshot(tmp_path_factory):
    try:
        kernel = fetch_debian.kernel()
    except fetch_debian.FetchError as e:
        pytest.fail(f"cannot fetch Debian's arm64 kernel: {e}")
    path = tmp_path_factory.mktemp("linux-snap") / "shell.snap"
    m = vmmpy.Machine(kernel, cpus=CPUS, ram="512M", initrd=_initramfs(shell=True), cmdline=CMDLINE, deterministic=True)
    m.serial.expect(initramfs.PROMPT_RE, timeout=VMMPY_BOOT_TIMEOUT)
    m.stop()
    t = m.clock_ns
    m.snapshot(path)
    yield m, t, path
    m.close()


def continue_typing(m, t_ns: int) -> bytes:
    """Type a line 1 ms (virtual) after t_ns and run to t_ns + 400 ms; the output of that stretch."""
    m.serial.read()
    start = len(m.serial.data)
    m.serial.write(b"echo snap-$((6 * 7)); uname -m\r", at_ns=t_ns + 1_000_000)
    m.stop_at(t_ns + 400_000_000)
    m.start()
    res = m.wait(120)
    assert res.reason == vmmpy.RunReason.STOPPED, res
    assert m.clock_ns == t_ns + 400_000_000
    return m.serial.data[start:]


def test_restored_linux_continues_bit_identically(shell_snapshot):
    original, t, path = shell_snapshot
    with vmmpy.Machine.restore(path) as r:
        assert r.clock_ns == t
        restored = continue_typing(r, t)
    assert continue_typing(original, t) == restored
    assert b"snap-42" in restored and b"aarch64" in restored


def test_restored_linux_shell_answers_in_real_time_too(tmp_path):
    kernel = fetch_debian.kernel()
    path = tmp_path / "rt.snap"
    with vmmpy.Machine(kernel, cpus=CPUS, ram="512M", initrd=_initramfs(shell=True), cmdline=CMDLINE) as m:
        m.serial.expect(initramfs.PROMPT_RE, timeout=VMMPY_BOOT_TIMEOUT)
        m.snapshot(path)
    for _ in range(2):  # two VMs from one file
        with vmmpy.Machine.restore(path) as r:
            r.start()
            r.serial.type("echo snap-$((6 * 7)); grep -c ^processor /proc/cpuinfo\n")
            r.serial.expect(rb"snap-42\r?\n2\r?\n", timeout=60)
