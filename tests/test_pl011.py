"""Tier 1: the PL011 model, driven register by register through the MMIO bus (Arm DDI 0183G)."""

from __future__ import annotations

import logging

import pytest

import vmmpy

from .conftest import UART

DR, RSR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR = (
    0x00, 0x04, 0x18, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44, 0x48,
)  # fmt: skip
TXFE, RXFE = 1 << 7, 1 << 4
RXIS, TXIS = 1 << 4, 1 << 5


@pytest.fixture
def m():
    with vmmpy.Machine() as mach:
        yield mach


def test_identification_registers(m):
    ids = [m.mmio_read(UART + 0xFE0 + 4 * i) for i in range(8)]
    assert ids == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]


def test_reset_values(m):
    assert m.mmio_read(UART + CR) == 0x300
    assert m.mmio_read(UART + IFLS) == 0x12
    assert m.mmio_read(UART + IMSC) == 0
    assert m.mmio_read(UART + FR) == TXFE | RXFE


def test_transmit_goes_to_the_serial_buffer(m):
    for ch in b"ok\n":
        m.mmio_write(UART + DR, ch)
    m.mmio_write(UART + DR, ord("!"), size=1)
    assert m.serial.read() == "ok\n!"


def test_receive_is_polled_from_queued_input(m):
    assert m.mmio_read(UART + DR) == 0  # nothing queued: reads 0
    m.serial.write(b"ab")
    assert m.mmio_read(UART + FR) & RXFE == 0
    assert m.mmio_read(UART + RIS) & RXIS
    assert m.mmio_read(UART + DR) == ord("a")
    assert m.mmio_read(UART + DR, size=1) == ord("b")
    assert m.mmio_read(UART + FR) & RXFE
    assert not m.mmio_read(UART + RIS) & RXIS


@pytest.mark.parametrize(
    "reg, written, readback",
    [
        (IBRD, 0x12345, 0x2345),
        (FBRD, 0xFF, 0x3F),
        (LCR_H, 0x1FF, 0xFF),
        (CR, 0xFFFF, 0xFF87),
        (IFLS, 0xFF, 0x3F),
        (ILPR, 0x1AB, 0xAB),
        (DMACR, 0xF, 0x7),
        (IMSC, 0xFFFF, 0x7FF),
    ],
)
def test_register_widths(m, reg, written, readback):
    m.mmio_write(UART + reg, written)
    assert m.mmio_read(UART + reg) == readback


def test_masked_interrupt_status(m):
    assert m.mmio_read(UART + RIS) & TXIS  # the transmitter never backs up
    assert m.mmio_read(UART + MIS) == 0
    m.mmio_write(UART + IMSC, TXIS)
    assert m.mmio_read(UART + MIS) == TXIS
    m.mmio_write(UART + ICR, 0x7FF)
    assert m.mmio_read(UART + MIS) == TXIS  # TX condition still holds after a clear


def test_byte_and_halfword_reads_of_a_register(m):
    m.mmio_write(UART + IBRD, 0xBEEF)
    assert m.mmio_read(UART + IBRD, size=1) == 0xEF
    assert m.mmio_read(UART + IBRD + 1, size=1) == 0xBE
    assert m.mmio_read(UART + IBRD, size=2) == 0xBEEF


def test_bad_guest_accesses_are_logged_and_ignored(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(UART + 0x800) == 0
    m.mmio_write(UART + 0x800, 1)
    m.mmio_write(UART + FR, 0)  # read-only
    assert m.mmio_read(UART + DR, size=8) == 0
    m.mmio_write(UART + DR + 1, 0x41, size=1)  # not the low byte of a register
    assert m.serial.read() == ""
    text = caplog.text
    assert "guest error: read of unknown register 0x800" in text
    assert "write to read-only register 0x018" in text
    assert "bad 8-byte read" in text
    assert m.stats()["guest_errors"] == 5


def test_direct_mmio_api_checks_its_arguments(m):
    with pytest.raises(vmmpy.InvalidArgument, match="size 3"):
        m.mmio_read(UART, size=3)
    with pytest.raises(vmmpy.InvalidArgument, match="aligned"):
        m.mmio_read(UART + 2, size=4)
    with pytest.raises(vmmpy.InvalidArgument, match="device-window"):
        m.mmio_read(0x4000_0000)


def test_unclaimed_device_window_reads_zero_and_logs(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(0x0C00_0000) == 0
    m.mmio_write(0x0C00_0000, 5)
    assert "unclaimed address 0xc000000" in caplog.text
