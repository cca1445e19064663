"""Tier 2: what is particular to the Hypervisor.framework backend ("hvf"), here over the framework simulator.

The guest table (tests/guests.py) runs on hvf in tests/test_irq_guests.py and tests/test_guests.py; these are the
backend's own rules: the framework's one VM per process, what the backend cannot do, and that the one VM is
released for the next.
"""

from __future__ import annotations

import pytest

import vmmpy
from vmmpy import RunReason

BACKEND = "hvf"


def test_one_vm_per_process_then_the_next(guest):
    hello = guest("hello")
    with vmmpy.Machine(hello, backend="hvf") as first:
        with pytest.raises(vmmpy.errors.Busy, match="one VM per process"):
            vmmpy.Machine(hello, backend="hvf")
        assert first.run(timeout=30).reason == RunReason.POWEROFF
    # the framework's VM went with the first machine: a new one can be made
    with vmmpy.Machine(hello, backend="hvf") as again:
        assert again.run(timeout=30).ok


def test_deterministic_mode_is_refused(guest):
    with pytest.raises(vmmpy.errors.VmmError, match="deterministic"):
        vmmpy.Machine(guest("hello"), backend="hvf", deterministic=True)


def test_snapshot_is_not_supported(guest, tmp_path):
    with vmmpy.Machine(guest("uart_irq"), backend="hvf") as m:
        m.serial.expect("uart_irq: ready", timeout=30)
        with pytest.raises(vmmpy.errors.NotSupported):
            m.snapshot(tmp_path / "hvf.snap")


def test_stop_and_resume_keep_the_vcpu_threads(guest):
    """A vCPU belongs to the thread that created it: runs after a stop go on with the same vCPUs (the backend's
    own owner threads), on 2 vCPUs."""
    with vmmpy.Machine(guest("uart_irq"), backend=BACKEND, cpus=2) as m:
        m.serial.expect("uart_irq: ready", timeout=30)
        m.stop()
        m.start()  # a new run of the same VM
        m.serial.write(b"q")
        m.serial.expect("PASS uart_irq", timeout=30)
        assert m.wait(timeout=30).ok
