"""Tier 2: every run of tests/guests.py on vmmpy's soft backend, and the same ELFs on QEMU.

The interrupt guests (GICv3, generic timer, PSCI SMP) print progress, one `FAIL <guest>: ...` line per
failed check and a final `PASS <guest>` or `FAIL <guest>: N check(s) failed`, then power off with
status 0 (pass) or 1; the others have their own lines (the table says what must appear). The same
table drives the KVM backend (tests/test_kvm_nested.py).

The QEMU tests run the same ELF on qemu-system-aarch64 (-M virt,gic-version=3, TCG), the reference: a
guest that fails there is a guest bug; one that passes there but not on vmmpy is a VMM bug.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time

import pytest

import vmmpy

from . import guests as table
from .conftest import HOST_HAS_KVM

# every guest on one CPU where it needs no more, the SMP ones on several; verdicts in tests/guests.py
# (uart_irq, which must be typed at once it is ready, has its own tests below)
RUNS = [r for r in table.RUNS if "irq-input" not in r.groups]
UART_RUN = table.BY_ID["uart_irq"]
UART_INPUT = table.UART_INPUT
UART_ECHO = table.UART_ECHO
TIMEOUT = 120  # seconds of host time for one guest run


def lines(text: str) -> list[str]:
    return table.lines(text)


def assert_verdict(text: str, name: str) -> None:
    """`PASS name` and no FAIL line; the message shows the FAIL lines (or the output's end)."""
    ls = lines(text)
    fails = [line for line in ls if line.startswith("FAIL")]
    assert not fails, "\n".join(fails)
    assert f"PASS {name}" in ls, f"no 'PASS {name}' line; output ends with:\n" + "\n".join(ls[-30:])


def runs_for(peer: str):
    return pytest.mark.parametrize("run", [r for r in RUNS if r.applies(peer)], ids=lambda r: r.id)


# ---- vmmpy ----------------------------------------------------------------------------------------


# soft always, and soft-threaded (the threaded loop with our GIC/timers/PSCI: what an HVF backend
# needs) for 1-vCPU runs; KVM too on an arm64 host with a working /dev/kvm (here: tests/test_kvm_nested.py)
# hvf: the Hypervisor.framework backend over the framework simulator (csrc/backend/hvfsim) on Linux
# soft-1thread: soft with every vCPU on one thread (vcpu_threads="one"), for the SMP runs: soft itself runs
# them with a thread per vCPU when the patched Unicorn is built
BACKENDS = ["soft", "soft-1thread", "soft-threaded", "hvf", *(["kvm"] if HOST_HAS_KVM else [])]


@pytest.mark.parametrize("backend", BACKENDS)
@runs_for("soft")
def test_guest_on_vmmpy(machine, run, backend):
    if not run.applies(backend):
        pytest.skip(f"{run.id} does not apply to {backend}")
    one = backend == "soft-1thread"
    m = machine(
        table.elf(run),
        cpus=run.cpus,
        ram=run.ram or "256M",
        gpu=run.gpu,
        rng=run.rng,
        transport=run.transport,
        backend="soft" if one else backend,
        vcpu_threads="one" if one else None,
        cpu_model=run.cpu_model,
        its=run.its,
    )
    if run.stdin:
        m.serial.write(run.stdin)
    res = m.run(timeout=run.timeout if run.end == "timeout" else TIMEOUT)
    table.assert_ok(run, m.serial.text)
    want = {"poweroff": vmmpy.RunReason.POWEROFF, "reset": vmmpy.RunReason.RESET, "timeout": vmmpy.RunReason.TIMEOUT}
    assert res.reason == want[run.end], res
    if run.end == "poweroff":
        assert res.exit_status == run.status, res


@pytest.mark.parametrize("backend", ["soft", "soft-threaded", "hvf"])
def test_uart_rx_interrupt_echo(machine, guest, backend):
    m = machine(guest("uart_irq"), backend=backend)
    m.serial.expect(r"uart_irq: ready", timeout=30)
    m.serial.write(UART_INPUT)
    for echo in UART_ECHO:
        m.serial.expect(re.escape(echo) + r"\r\n", timeout=30)
    m.serial.expect(r"PASS uart_irq", timeout=30)
    assert m.wait(timeout=30).ok
    assert_verdict(m.serial.text, "uart_irq")
    table.assert_ok(UART_RUN, m.serial.text)


# ---- QEMU, the reference ----------------------------------------------------------------------------

QEMU = shutil.which("qemu-system-aarch64")
needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)"
)


GPU_ARGS = ["-global", "virtio-mmio.force-legacy=false", "-device", "virtio-gpu-device"]  # version 2, as ours


def qemu_command(
    elf: str,
    cpus: int,
    ram: str | None = None,
    gpu: bool = False,
    rng: bool = False,
    transport: str = "mmio",
    cpu: str | None = None,
) -> list[str]:
    """The machine vmmpy models; the PL011 on stdin/stdout, semihosting for the exit status."""
    pci = transport == "pci"
    # PCI: highmem=off puts the ECAM at 0x3F000000 as ours; no default NIC; modern-only devices
    board = "virt,gic-version=3" + (",highmem=off" if pci else "")
    rng_args = ["-device", "virtio-rng-pci,disable-legacy=on" if pci else "virtio-rng-device"] if rng else []
    gpu_args = (["-device", "virtio-gpu-pci,disable-legacy=on"] if pci else GPU_ARGS) if gpu else []
    return [QEMU, "-M", board, "-cpu", cpu or "cortex-a72", "-smp", str(cpus), "-m", ram or "256M",
            "-nographic", "-monitor", "none", "-serial", "stdio", "-semihosting", "-no-reboot",
            *(["-nic", "none"] if pci else []), *gpu_args, *rng_args,
            "-kernel", elf]  # fmt: skip


class QemuRun:
    """qemu-system-aarch64 in the background: its output collected by a thread, input written on demand."""

    def __init__(self, elf: str, cpus: int, **kw):
        self.proc = subprocess.Popen(
            qemu_command(elf, cpus, **kw), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            with self._cond:
                self._buf += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return self._buf.decode(errors="replace")

    def expect(self, needle: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while needle not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"QEMU: no {needle!r}; output:\n{self._buf.decode(errors='replace')}")
                self._cond.wait(min(left, 0.5))

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"QEMU did not finish within {timeout} s; output:\n{self.text}") from None
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def qemu_run():
    runs: list[QemuRun] = []

    def start(elf: str, cpus: int = 1, **kw) -> QemuRun:
        r = QemuRun(elf, cpus, **kw)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.kill()
        for f in (r.proc.stdin, r.proc.stdout):
            if f:
                f.close()


@needs_qemu
@pytest.mark.qemu
@runs_for("qemu")
def test_guest_on_qemu(qemu_run, run):
    r = qemu_run(
        table.elf(run), run.cpus, ram=run.ram, gpu=run.gpu, rng=run.rng, transport=run.transport, cpu=run.cpu_model
    )
    if run.stdin:
        r.write(run.stdin)
    r.proc.stdin.close()  # no more input: the guests that need none must not wait for it
    if run.end == "timeout":  # it must still be running then
        with pytest.raises(subprocess.TimeoutExpired):
            r.proc.wait(timeout=run.timeout)
        r.kill()
        r._reader.join(5)
        table.assert_ok(run, r.text)
        return
    rc = r.wait(TIMEOUT)
    table.assert_ok(run, r.text)
    # -no-reboot: a reset ends QEMU with status 0; a power-off gives the semihosting exit status
    assert rc == (run.status if run.end == "poweroff" else 0), f"QEMU exit status {rc}"


@needs_qemu
@pytest.mark.qemu
def test_uart_rx_interrupt_echo_on_qemu(qemu_run, guest):
    r = qemu_run(guest("uart_irq"))
    r.expect(b"uart_irq: ready", timeout=30)
    r.write(UART_INPUT)
    r.expect(b"PASS uart_irq", timeout=30)
    assert r.wait(30) == 0
    ls = lines(r.text)
    assert [line for line in ls if line.startswith("echo: ")] == UART_ECHO
    assert_verdict(r.text, "uart_irq")
    table.assert_ok(UART_RUN, r.text)
