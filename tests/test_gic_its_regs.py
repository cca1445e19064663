"""Tier 1: the GITS register decode of csrc/arm/gic_its.c (Arm IHI0069 §12.19) that mutation testing found untested:
which offsets are GITS_TRANSLATER, which access widths each offset takes, the direction a refused access is
reported with, and the ITS snapshot record's range checks.

A refused access is RAZ/WI with one guest error either way; what tells the cases apart is the guest error's text
(the ``vmmpy`` logger) and whether a write became a doorbell write (an LPI). The helpers are test_gic_its.py's
and test_gic_its_edges.py's.
"""

from __future__ import annotations

import logging

import pytest

import vmmpy

from . import test_gic_its
from .test_gic_its import GITS, LPI, TRANSLATER, Its, guest_errors, take
from .test_gic_its_edges import patched_snapshot

m = test_gic_its.m  # the fixture: a machine with the ITS

DOORBELL_EVENT = 7  # the EventID the tests write; DeviceID 0 (a CPU's write) maps it to LPI + 1


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    return caplog


def mapped(m) -> Its:
    """An ITS whose DeviceID 0 (the one a CPU's GITS_TRANSLATER write carries) maps EventID 7 to LPI + 1."""
    its = Its(m)
    its.map_event(0, DOORBELL_EVENT, LPI + 1)
    return its


# ---- only GITS_TRANSLATER is a doorbell -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "off",
    [0x0004, 0x0008, 0x000C, 0x0010, 0x0090, 0xFFD0, 0x1_0000, 0x1_003C, 0x1_0044, 0x1_FFFC],
    ids=["IIDR", "TYPER", "TYPER-hi", "reserved", "CREADR", "PIDR4", "frame1", "before", "after", "last"],
)
def test_a_write_to_a_read_only_or_reserved_offset_is_no_doorbell_write(m, log, off):
    """§12.19.21: a write to GITS_TRANSLATER (0x10040) alone is translated. A write of an EventID the ITS maps to a
    read-only register (IIDR, TYPER, CREADR, an ID register) or a reserved word, below GITS_TRANSLATER or above it
    in the translation frame, is ignored as a write to a reserved or read-only offset: no LPI."""
    mapped(m)
    before = guest_errors(m)
    m.mmio_write(GITS + off, DOORBELL_EVENT)
    assert take(m) == 1023
    assert guest_errors(m) == before + 1
    assert f"4-byte write at reserved or read-only offset 0x{off:04x}: ignored" in log.text
    m.mmio_write(TRANSLATER, DOORBELL_EVENT)  # the same write to GITS_TRANSLATER is translated
    assert take(m) == LPI + 1
    assert guest_errors(m) == before + 1


# ---- access widths ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("off", [0x1_0042, 0x1_0044, 0x1_0046, 0x1_FFFE])
def test_16_bit_accesses_are_gits_translaters_only(m, log, off):
    """§12.19.21: GITS_TRANSLATER takes 16-bit writes; the words around it in the translation frame are reserved
    32-bit words: a 16-bit access there is refused for its size (not taken and then found reserved), and is no
    doorbell write."""
    mapped(m)
    before = guest_errors(m)
    m.mmio_write(GITS + off, DOORBELL_EVENT, size=2)
    assert f"2-byte write at offset 0x{off:04x}: unsupported access size" in log.text
    assert m.mmio_read(GITS + off, size=2) == 0
    assert f"2-byte read at offset 0x{off:04x}: unsupported access size" in log.text
    assert "reserved or read-only" not in log.text
    assert guest_errors(m) == before + 2
    assert take(m) == 1023


# ---- the direction in a refused access's report ----------------------------------------------------------------


def test_a_read_of_a_reserved_offset_is_reported_as_a_read(m, log):
    """A read of a reserved word is RAZ with a guest error that says "read"."""
    assert m.mmio_read(GITS + 0x0010) == 0
    assert "4-byte read at reserved or read-only offset 0x0010: ignored" in log.text
    assert "write" not in log.text


def test_a_write_to_a_read_only_register_is_reported_as_a_write(m, log):
    """A write to GITS_TYPER (read-only) is ignored with a guest error that says "write"; the register keeps its
    value."""
    typer = m.mmio_read(GITS + 0x0008, size=8)
    m.mmio_write(GITS + 0x0008, 0, size=8)
    assert "8-byte write at reserved or read-only offset 0x0008: ignored" in log.text
    assert " read " not in log.text
    assert m.mmio_read(GITS + 0x0008, size=8) == typer


@pytest.mark.parametrize(("off", "size"), [(0x0000, 1), (0x0000, 8), (0x0004, 2), (0x1_0040, 8)])
def test_a_write_of_an_unsupported_size_is_reported_as_a_write(m, log, off, size):
    """GITS_CTLR and GITS_IIDR take 32-bit accesses only, GITS_TRANSLATER 16 or 32 bits: a byte, halfword or 64-bit
    write there is refused for its size with a guest error that says "write", and changes nothing (GITS_CTLR keeps
    Enabled = 0)."""
    before = guest_errors(m)
    m.mmio_write(GITS + off, 1, size=size)
    assert f"{size}-byte write at offset 0x{off:04x}: unsupported access size" in log.text
    assert " read " not in log.text
    assert guest_errors(m) == before + 1
    assert m.mmio_read(GITS + 0x0000) & 1 == 0


# ---- snapshots: the queue registers and the last error must be in range ----------------------------------------


@pytest.mark.parametrize("creadr", [0x2000, 0xF_FFE0])
def test_a_snapshot_with_creadr_past_the_end_of_the_queue_is_refused(guest, tmp_path, creadr):
    """§12.19.7 GITS_CREADR is an offset inside the queue (CBASER.Size + 1 pages: 0x1000 bytes here): a record with
    CREADR beyond the queue's end, not only at it, is refused."""
    path = patched_snapshot(guest, tmp_path, "CREADR", creadr)
    with pytest.raises(vmmpy.errors.VmmError, match="ITS command queue registers out of range"):
        vmmpy.Machine.restore(path).close()


@pytest.mark.parametrize("error", [17, 0xFFFF_FFFF])
def test_a_snapshot_with_an_unknown_its_error_past_the_last_one_is_refused(guest, tmp_path, error):
    """The record's last error must be one of enum its_error (0..15): 16 is refused (test_gic_its_edges.py), and so
    is every value above it."""
    path = patched_snapshot(guest, tmp_path, "last error", error)
    with pytest.raises(vmmpy.errors.VmmError, match="ITS command queue registers out of range"):
        vmmpy.Machine.restore(path).close()
