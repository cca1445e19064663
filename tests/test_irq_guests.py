"""Tier 2: the interrupt guests (GICv3, generic timer, PSCI SMP) on vmmpy, and the same ELFs on QEMU.

Each guest (guest/README.md) prints progress, one `FAIL <guest>: ...` line per failed check and a final
`PASS <guest>` or `FAIL <guest>: N check(s) failed`, then powers off with status 0 (pass) or 1.

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

from . import guests as table

# every guest on one CPU where it needs no more, the SMP ones on several; verdicts in tests/guests.py
IRQ_RUNS = table.select(groups=("irq",))
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
    return pytest.mark.parametrize("run", [r for r in IRQ_RUNS if r.applies(peer)], ids=lambda r: r.id)


# ---- vmmpy ----------------------------------------------------------------------------------------


@runs_for("soft")
def test_irq_guest(machine, guest, run):
    m = machine(guest(run.guest), cpus=run.cpus)
    res = m.run(timeout=TIMEOUT)
    text = m.serial.text
    assert_verdict(text, run.guest)
    table.assert_ok(run, text)
    assert res.ok, res


def test_uart_rx_interrupt_echo(machine, guest):
    m = machine(guest("uart_irq"))
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


def qemu_command(elf: str, cpus: int) -> list[str]:
    """The machine vmmpy models; the PL011 on stdin/stdout, semihosting for the exit status."""
    return [QEMU, "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-smp", str(cpus), "-m", "256M",
            "-nographic", "-monitor", "none", "-serial", "stdio", "-semihosting", "-no-reboot",
            "-kernel", elf]  # fmt: skip


class QemuRun:
    """qemu-system-aarch64 in the background: its output collected by a thread, input written on demand."""

    def __init__(self, elf: str, cpus: int):
        self.proc = subprocess.Popen(
            qemu_command(elf, cpus), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
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

    def start(elf: str, cpus: int = 1) -> QemuRun:
        r = QemuRun(elf, cpus)
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
def test_irq_guest_on_qemu(qemu_run, guest, run):
    r = qemu_run(guest(run.guest), run.cpus)
    r.proc.stdin.close()  # no input: the guests that need none must not wait for it
    rc = r.wait(TIMEOUT)
    assert_verdict(r.text, run.guest)
    table.assert_ok(run, r.text)
    assert rc == run.status, f"QEMU exit status {rc} (semihosting exit status of the guest)"


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
