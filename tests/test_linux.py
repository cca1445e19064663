"""Tier 3: Debian's unmodified arm64 kernel on the soft backend."""

from __future__ import annotations

import os
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import fetch_debian  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def debian_kernel() -> str:
    try:
        return fetch_debian.kernel()
    except fetch_debian.FetchError as e:
        pytest.fail(f"cannot fetch Debian's arm64 kernel: {e}")


def test_debian_kernel_prints_its_banner(debian_kernel, machine):
    m = machine(debian_kernel, ram="256M", cmdline="earlycon=pl011,0x09000000 console=ttyAMA0")
    m.serial.expect(r"Booting Linux on physical CPU 0x0+", timeout=120)
    m.serial.expect(r"Linux version \d+\.\d+\.\d+-\d+-arm64 .*Debian", timeout=60)
    m.serial.expect(r"Machine model: vmmpy aarch64 virt", timeout=60)
    m.serial.expect(r"psci: PSCIv1.1 detected in firmware", timeout=60)
    m.serial.expect(r"Kernel command line: earlycon=pl011,0x09000000 console=ttyAMA0", timeout=60)
    m.stop()
    assert m.stats()["exceptions"] >= 0
