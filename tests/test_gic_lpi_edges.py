"""Tier 1: the redistributors' LPI side at its edges (Arm IHI0069 §5.1, §12.10): GICR_PROPBASER, GICR_PENDBASER,
GICR_CTLR.EnableLPIs, the LPI configuration and pending tables and the highest priority pending LPI
(csrc/arm/gic_lpi.c).

These tests pin what mutation testing of gic_lpi.c found unchecked (docs/testing.md). The driver (``Its``), the
table layout and the fixtures are test_gic_its.py's.
"""

from __future__ import annotations

import logging
import os
import struct

import pytest

import vmmpy

from . import test_gic_its
from .conftest import run_with_shim
from .test_gic import GICR_WAKER, WAKER_CHILDREN_ASLEEP, WAKER_PROCESSOR_SLEEP, rd, unmask
from .test_gic_its import (
    CLEAR,
    FAIL_CALLOC_C,
    GICR_CTLR,
    GICR_PENDBASER,
    GICR_PROPBASER,
    IDBITS,
    INV,
    ITT,
    LPI,
    MOVALL,
    MOVI,
    PEND,
    PROP,
    RAM,
    SYNC,
    VALID,
    Its,
    cmd,
    ev,
    guest_errors,
    mapc,
    take,
)

m, m2 = test_gic_its.m, test_gic_its.m2  # its fixtures: one machine with its=True, and one with 2 CPUs

RAM_END = RAM + (256 << 20)  # the fixtures' 256 MiB

# RD_base offsets after GICR_PENDBASER (§12.10): GICR_INVLPIR, GICR_INVALLR and GICR_SYNCR (DirectLPI, which this
# model does not have: GICR_TYPER.DirectLPI = 0), and reserved ones; and reserved ones before GICR_PROPBASER
AFTER_PENDBASER = [0x0080, 0x00A0, 0x00B0, 0x00C0, 0x0100, 0xFF00]
BEFORE_PROPBASER = [0x0018, 0x0040, 0x0068]


@pytest.mark.parametrize("off", AFTER_PENDBASER + BEFORE_PROPBASER)
def test_a_write_to_another_rd_base_offset_does_not_reach_propbaser_or_pendbaser(m, off):
    """Only 0x70 (PROPBASER) and 0x78 (PENDBASER) hold the LPI tables' addresses (§12.10.24, §12.10.29); a write
    to any other RD_base offset, before or after them (reserved, or the DirectLPI registers this model lacks), is
    a guest error and changes neither."""
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), PEND, size=8)
    before = guest_errors(m)
    m.mmio_write(rd(0, off), 0xFFFF_FFFF)
    assert guest_errors(m) == before + 1
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == PROP | IDBITS
    assert m.mmio_read(rd(0, GICR_PENDBASER), size=8) == PEND
    assert m.mmio_read(rd(0, GICR_CTLR)) == 0


def test_the_first_intid_past_propbaser_idbits_is_not_an_lpi_even_after_an_hppi_was_computed(m):
    """PROPBASER.IDbits = 13: INTIDs of 14 bits, LPIs 8192..16383 (§5.1.1). 16384 is one past the last: an MSI
    for it is dropped, also when it comes with a higher priority than the LPI pending (16383) after the
    redistributor worked out its highest priority pending LPI."""
    its = Its(m, cpus=0)
    its.enable_lpis(0, idbits=13)
    its.map_event(1, 0, LPI + 8191, prio=0xA0)
    its.map_event(1, 1, LPI + 8192, prio=0x20)  # mappable (the ITS allows 16 bits)
    m.msi(0, device=1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 8191
    m.msi(1, device=1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 8191
    assert [take(m) for _ in range(2)] == [LPI + 8191, 1023]


def test_enable_lpis_on_a_second_cpu_offers_its_pending_lpi_and_disabling_withdraws_it(m2):
    """EnableLPIs 0 -> 1 on CPU 1 reads its pending table (§5.1.2): an LPI pending there becomes CPU 1's highest
    priority pending interrupt at once (ICC_HPPIR1_EL1, its IRQ line); EnableLPIs 1 -> 0 takes it away again,
    with no other event in between to make CPU 1 look again."""
    its = Its(m2, cpus=0)
    its.config(LPI + 9)
    m2.write_memory(PEND + 0x1_0000 + 1024 + 1, bytes([1 << 1]))  # LPI 8192 + 9 pending in CPU 1's table
    its.enable_lpis(1)
    assert m2.sysreg_read("ICC_HPPIR1_EL1", 1) == LPI + 9
    assert m2.irq_line(1) and not m2.irq_line(0)
    m2.mmio_write(rd(1, GICR_CTLR), 0)
    assert m2.sysreg_read("ICC_HPPIR1_EL1", 1) == 1023
    assert not m2.irq_line(1)


def test_an_inv_reads_the_last_byte_of_a_configuration_table_that_ends_at_the_end_of_ram(m):
    """INV (§5.3.9) re-reads one LPI's configuration byte, and only that byte: with IDbits = 13 a table that ends
    where RAM ends holds LPI 16383's byte last; enabled there after EnableLPIs and invalidated, the LPI is
    delivered."""
    prop = RAM_END - 8192
    its = Its(m, cpus=0)
    m.write_memory(prop, bytes(8192))
    its.enable_lpis(0, idbits=13, prop=prop)
    its.map_event(1, 0, LPI + 8191)  # its configuration byte goes to PROP, not this table
    m.write_memory(RAM_END - 1, bytes([0xA0 | 1]))
    before = guest_errors(m)
    its.send(ev(INV, 1, 0), cmd(SYNC))
    assert not its.stalled()
    m.msi(0, device=1)
    assert [take(m) for _ in range(2)] == [LPI + 8191, 1023]
    assert guest_errors(m) == before


def test_an_inv_with_the_configuration_table_outside_ram_is_not_another_guest_error(m):
    """PROPBASER outside RAM is one guest error, at EnableLPIs, which leaves every LPI disabled. An INV of an LPI
    then reads its byte alone (not in RAM either: the LPI stays disabled); it does not read the whole table again
    and report it a second time. The last LPI of 16 ID bits, 65535, is the one invalidated."""
    its = Its(m, cpus=0)
    its.enable_lpis(0, prop=0x1_0000_0000)  # 4 GiB: beyond the 256 MiB of RAM at 1 GiB
    its.map_event(1, 0, 0xFFFF)
    before = guest_errors(m)
    its.send(ev(INV, 1, 0), cmd(SYNC))
    m.msi(0, device=1)
    assert guest_errors(m) == before
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    assert take(m) == 1023


@pytest.mark.parametrize("intid", [8191, 5, 0x1_0000, 0xFFFF_FFFF])
def test_an_inv_of_an_itt_entry_naming_no_lpi_changes_nothing(m, intid):
    """The ITT is guest RAM (§5.2): a guest can write an entry whose INTID is no LPI (below 8192, or beyond the
    16 bits of GICD_TYPER.IDbits). INV and INT of that event do nothing (no configuration byte is read for it, no
    pending bit set) and the queue goes on; the LPIs that are mapped still work."""
    its = Its(m)
    its.map_event(1, 0, LPI)
    its.map_event(1, 1, LPI + 1)
    m.write_memory(ITT + 0x1000, struct.pack("<Q", VALID | intid))  # event 0 of device 1: `intid` on ICID 0
    its.send(ev(INV, 1, 0), cmd(SYNC))
    m.msi(0, device=1)
    assert not its.stalled()
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    m.msi(1, device=1)
    assert [take(m) for _ in range(2)] == [LPI + 1, 1023]


def test_a_configuration_table_moved_outside_ram_keeps_nothing_of_the_last_one(m):
    """EnableLPIs reads the whole configuration table (§5.1.1); one outside RAM is read as all LPIs disabled,
    whatever the previous table (read at an earlier EnableLPIs) said: an LPI pending in the pending table is not
    offered."""
    its = Its(m, cpus=0)
    its.config(LPI + 9)
    its.enable_lpis(0)
    m.mmio_write(rd(0, GICR_CTLR), 0)
    m.write_memory(PEND + 1024 + 1, bytes([1 << 1]))  # LPI 8192 + 9 pending
    its.enable_lpis(0, prop=0x1_0000_0000)  # 4 GiB: beyond the 256 MiB of RAM at 1 GiB
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    m.mmio_write(rd(0, GICR_CTLR), 0)
    its.enable_lpis(0)  # and back: the LPI was pending all along
    assert [take(m) for _ in range(2)] == [LPI + 9, 1023]


def test_ptz_at_a_second_enable_drops_what_was_pending_before(m):
    """PTZ (§12.10.29) at EnableLPIs 0 -> 1 says the pending table is zero: LPIs left pending at the previous
    EnableLPIs 1 -> 0 (8195 near the table's start, 65535 its last bit) are not pending any more. Another LPI of
    lower priority made pending after comes out alone."""
    its = Its(m)
    its.map_event(1, 0, LPI + 3, prio=0x20)
    its.map_event(1, 1, LPI + 40, prio=0xA0)
    its.map_event(1, 2, 0xFFFF, prio=0x20)  # the last LPI: the last bit of the table
    m.msi(0, device=1)
    m.msi(2, device=1)
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 1024, 1) == bytes([1 << 3])
    assert m.read_memory(PEND + 8191, 1) == bytes([1 << 7])
    m.mmio_write(rd(0, GICR_PENDBASER), PEND | 1 << 62, size=8)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    m.msi(1, device=1)
    assert [take(m) for _ in range(2)] == [LPI + 40, 1023]


def test_a_pending_table_outside_ram_is_read_as_zero(m):
    """PENDBASER outside RAM: EnableLPIs cannot read the pending table, a guest error, and takes it as zero (no LPI
    pending, as with PTZ): of two enabled LPIs, only the one an MSI makes pending then comes out. EnableLPIs 1 -> 0
    then writes nothing back."""
    its = Its(m, cpus=0)
    its.config(LPI, prio=0x20)  # enabled, of the highest priority
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), 0x1_0000_0000, size=8)  # 4 GiB: beyond the 256 MiB of RAM at 1 GiB
    before = guest_errors(m)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    assert guest_errors(m) == before + 1
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    its.map_event(1, 0, 0xFFFF, prio=0xA0)
    m.msi(0, device=1)
    assert [take(m) for _ in range(2)] == [0xFFFF, 1023]
    m.msi(0, device=1)
    m.mmio_write(rd(0, GICR_CTLR), 0)  # the write-back at EnableLPIs 1 -> 0 has nowhere to go: nothing written
    assert m.mmio_read(rd(0, GICR_CTLR)) == 0
    assert m.read_memory(RAM_END - 8, 8) == bytes(8)


def test_disabling_lpis_writes_every_byte_of_each_pending_word_back(m):
    """EnableLPIs 1 -> 0 writes the pending bits to the pending table (§5.1.2) little-endian, bit n of byte k
    being LPI 8192 + 8k + n: the first and last bit of each of the four bytes of a 32-bit word come back."""
    its = Its(m, cpus=0)
    m.write_memory(PEND + 1024, bytes([0x81, 0x81, 0x81, 0x81]))
    its.enable_lpis(0)
    m.write_memory(PEND + 1024, bytes(4))
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 1024, 4) == bytes([0x81, 0x81, 0x81, 0x81])


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
@pytest.mark.parametrize("size", [65536 - LPI, (65536 - LPI) // 8], ids=["configuration", "pending"])
def test_lpi_tables_that_cannot_be_allocated_are_logged_and_keep_no_memory(tmp_path, size):
    """When one of the two LPI tables (the 56 KiB configuration copy, the 7 KiB pending bitmap) cannot be
    allocated at EnableLPIs, the other one, allocated, is given back: attempt after attempt, the process keeps no
    memory (conftest.heap_growth, in the shimmed interpreter); and each attempt is an error in the log."""
    script = (
        "import logging\n"
        "import vmmpy\n"
        "from tests.conftest import heap_growth\n"
        "logging.basicConfig(level=logging.ERROR)\n"
        "with vmmpy.Machine(its=True) as m:\n"
        f"    m.mmio_write({rd(0, GICR_PROPBASER)}, {PROP | IDBITS}, size=8)\n"
        f"    m.mmio_write({rd(0, GICR_PENDBASER)}, {PEND}, size=8)\n"
        "    def attempt():\n"
        f"        m.mmio_write({rd(0, GICR_CTLR)}, 1)\n"
        f"        assert m.mmio_read({rd(0, GICR_CTLR)}) == 0\n"
        "    growth = heap_growth(attempt)\n"
        "    print('growth', 'unknown' if growth is None else int(growth))\n"
    )
    r = run_with_shim(tmp_path, FAIL_CALLOC_C, script, FAIL_CALLOC_SIZE=str(size))
    assert r.returncode == 0, r.stderr
    growth = r.stdout.split()[-1]
    if growth == "unknown":
        pytest.skip("no glibc malloc statistics here")
    assert int(growth) < 64, f"{growth} bytes kept per attempt"
    message = "out of memory for redistributor 0's LPIs: they stay off"
    assert r.stderr.count(message) == 3 + 3 * 10  # heap_growth's calls


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_a_snapshot_with_lpis_on_is_refused_when_their_tables_cannot_be_allocated(guest, tmp_path):
    """Restoring a redistributor with EnableLPIs set allocates its LPI tables: when that fails, the restore fails
    with VMM_ENOMEM's message (it does not go on to load the pending bits into no table)."""
    path = tmp_path / "lpis-on.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()  # prepared: snapshots need it
        its = Its(mach)
        its.map_event(1, 0, LPI + 5)
        mach.msi(0, device=1)
        mach.snapshot(path)
    script = (
        "import vmmpy\n"
        "from vmmpy.errors import OutOfMemory\n"
        "try:\n"
        f"    vmmpy.Machine.restore({str(path)!r}).close()\n"
        "except OutOfMemory as e:\n"
        "    print('refused:', e)\n"
    )
    r = run_with_shim(tmp_path, FAIL_CALLOC_C, script, FAIL_CALLOC_SIZE=str(65536 - LPI))
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "redistributor 0: no memory for its LPIs" in r.stdout, r.stdout


@pytest.mark.parametrize("off", AFTER_PENDBASER + BEFORE_PROPBASER)
def test_a_read_of_another_rd_base_offset_is_not_taken_for_an_lpi_register(m, off):
    """With LPIs, the RD_base frame's LPI registers are GICR_CTLR, PROPBASER and PENDBASER only: a read of a
    reserved offset (or of the DirectLPI registers this model lacks) is a guest error and reads as zero, as without
    LPIs (§12.10)."""
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    before = guest_errors(m)
    assert m.mmio_read(rd(0, off)) == 0
    assert guest_errors(m) == before + 1


def test_gicr_waker_works_beside_the_lpi_registers(m):
    """GICR_WAKER (§12.10.40), between GICR_CTLR and PROPBASER, is not an LPI register: with LPIs its
    ProcessorSleep is written and read back (ChildrenAsleep following it), and clears again."""
    m.mmio_write(rd(0, GICR_WAKER), WAKER_PROCESSOR_SLEEP)
    assert m.mmio_read(rd(0, GICR_WAKER)) == WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
    m.mmio_write(rd(0, GICR_WAKER), 0)
    assert m.mmio_read(rd(0, GICR_WAKER)) == 0
    assert guest_errors(m) == 0


def test_enable_lpis_written_again_with_its_value_changes_nothing(m):
    """GICR_CTLR.EnableLPIs (§12.10.4) written 1 while it is 1 keeps LPIs on (a pending LPI stays offered), and
    written 0 while it is 0 does nothing either: the pending table the guest cleared after the first 1 -> 0 is not
    written again."""
    its = Its(m)
    its.map_event(1, 0, LPI + 5)
    m.msi(0, device=1)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    assert m.mmio_read(rd(0, GICR_CTLR)) == 1
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 5
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 1024, 1) == bytes([1 << 5])
    m.write_memory(PEND + 1024, bytes(1))
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.mmio_read(rd(0, GICR_CTLR)) == 0
    assert m.read_memory(PEND + 1024, 1) == bytes(1)


def test_ptz_counts_for_one_enable_lpis_write_only(m):
    """PENDBASER.PTZ (§12.10.29) reads 0 and says the pending table is zero for the EnableLPIs 0 -> 1 it comes
    with; the next one, PENDBASER not written again, reads the table (where EnableLPIs 1 -> 0 left an LPI)."""
    its = Its(m, cpus=0)
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), PEND | 1 << 62, size=8)
    m.write_memory(PEND + 1024, bytes([1 << 2]))  # ignored under PTZ
    m.mmio_write(rd(0, GICR_CTLR), 1)
    its.map_event(1, 0, LPI + 5)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    m.msi(0, device=1)
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 1024, 1) == bytes([1 << 5])
    m.mmio_write(rd(0, GICR_CTLR), 1)
    assert [take(m) for _ in range(2)] == [LPI + 5, 1023]


@pytest.mark.parametrize("reg", ["PROPBASER", "PENDBASER"])
def test_a_base_register_written_with_enable_lpis_set_is_named_in_the_guest_error(m, reg, caplog):
    """Writing GICR_PROPBASER or GICR_PENDBASER while EnableLPIs is 1 is UNPREDICTABLE (§12.10.24, §12.10.29):
    ignored, with a guest error that names the register written."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    Its(m)
    off = {"PROPBASER": GICR_PROPBASER, "PENDBASER": GICR_PENDBASER}[reg]
    m.mmio_write(rd(0, off), 0, size=8)
    assert f"redistributor 0: GICR_{reg} written with EnableLPIs set: ignored" in caplog.text
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == PROP | IDBITS
    assert m.mmio_read(rd(0, GICR_PENDBASER), size=8) == PEND


def test_a_new_pending_lpi_of_lower_priority_does_not_displace_the_highest_one(m):
    """The highest priority pending LPI is the one with the lowest priority value (§4.8); a lower INTID wins only
    a tie. LPI 8202 at 0x20 pending, then 8197 at 0xA0: HPPIR1 still shows 8202 (also when the redistributor had
    just worked its answer out, before either MSI)."""
    its = Its(m)
    its.map_event(1, 0, LPI + 10, prio=0x20)
    its.map_event(1, 1, LPI + 5, prio=0xA0)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    m.msi(0, device=1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 10
    m.msi(1, device=1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 10
    assert [take(m) for _ in range(3)] == [LPI + 10, LPI + 5, 1023]


def test_clear_on_a_second_cpu_withdraws_its_pending_lpi_at_once(m2):
    """CLEAR (§5.3.3) of an LPI pending on CPU 1 takes it away there: CPU 1's HPPIR1 reads 1023 and its IRQ
    line drops, with nothing else happening to CPU 1."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3, cpu=1)
    m2.msi(0, device=1)
    assert m2.sysreg_read("ICC_HPPIR1_EL1", 1) == LPI + 3
    assert m2.irq_line(1)
    its.send(ev(CLEAR, 1, 0))
    assert m2.sysreg_read("ICC_HPPIR1_EL1", 1) == 1023
    assert not m2.irq_line(1)


@pytest.mark.parametrize("n", [31, 64])
def test_movi_finds_the_pending_bit_of_the_last_lpi_of_a_word_and_the_first_of_the_third(m2, n):
    """MOVI moves a pending LPI (§5.3.13): its pending bit is bit n % 32 of 32-bit word n / 32 (LPI 8192 + n),
    here the last bit of word 0 and the first of word 2, each pending alone."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + n, icid=0, cpu=0)
    its.send(mapc(1, 1))
    m2.msi(0, device=1)
    its.send(cmd(MOVI, 1, 0, 1))  # to collection 1 (CPU 1)
    assert (take(m2, 0), take(m2, 1), take(m2, 1)) == (1023, LPI + n, 1023)


def test_movall_from_a_higher_cpu_to_a_lower_one(m2):
    """MOVALL (§5.3.12) moves every pending LPI from one redistributor to another in either direction: from CPU 1
    to CPU 0 here."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3, icid=1, cpu=1)
    m2.msi(0, device=1)
    its.send(cmd(MOVALL, 0, 0, 1 << 16, 0 << 16))
    assert not its.stalled()
    assert take(m2, 1) == 1023
    assert [take(m2, 0) for _ in range(2)] == [LPI + 3, 1023]


def test_movall_from_a_redistributor_whose_lpis_were_disabled_moves_nothing(m2):
    """EnableLPIs 1 -> 0 on CPU 1 wrote its pending LPI to its pending table (§5.1.2): a MOVALL from CPU 1 then
    has nothing to move, and CPU 0 gets nothing."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3, icid=1, cpu=1)
    m2.msi(0, device=1)
    m2.mmio_write(rd(1, GICR_CTLR), 0)
    assert m2.read_memory(PEND + 0x1_0000 + 1024, 1) == bytes([1 << 3])
    its.send(cmd(MOVALL, 0, 0, 1 << 16, 0 << 16))
    assert not its.stalled()
    assert take(m2, 0) == 1023


def test_movall_to_a_redistributor_whose_lpis_were_never_enabled_drops_the_lpis(m2):
    """A redistributor that never had EnableLPIs set has no LPIs (§5.1): a MOVALL to it drops what it moves, as an
    MSI to it would be dropped, and the source has nothing pending any more."""
    its = Its(m2, cpus=1)  # only CPU 0 enables LPIs
    its.map_event(1, 0, LPI + 3)
    m2.msi(0, device=1)
    its.send(cmd(MOVALL, 0, 0, 0 << 16, 1 << 16))
    assert not its.stalled()
    assert take(m2, 1) == 1023
    assert take(m2, 0) == 1023


def test_movall_onto_a_redistributor_with_a_pending_lpi_keeps_both(m2):
    """MOVALL (§5.3.12) adds the moved LPIs to those already pending on the target: CPU 1, with LPI 8193 pending,
    gets 8195 from CPU 0 and offers both, in priority order."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 1, icid=1, cpu=1, prio=0x20)
    its.map_event(1, 1, LPI + 3, icid=0, cpu=0, prio=0x40)
    m2.msi(0, device=1)
    m2.msi(1, device=1)
    its.send(cmd(MOVALL, 0, 0, 0 << 16, 1 << 16))
    assert take(m2, 0) == 1023
    assert [take(m2, 1) for _ in range(3)] == [LPI + 1, LPI + 3, 1023]


def test_a_snapshot_restores_pending_lpis_past_the_first_word_to_the_last(guest, tmp_path):
    """A restored redistributor with EnableLPIs set counts its pending bits over the whole bitmap: LPIs 8232
    (the second 32-bit word) and 65535 (the last bit of the last word), pending alone, are offered after the
    restore."""
    path = tmp_path / "lpis.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()  # prepared: snapshots need it
        its = Its(mach)
        its.map_event(1, 0, LPI + 40, prio=0x20)
        its.map_event(1, 1, 0xFFFF, prio=0x40)
        mach.msi(0, device=1)
        mach.msi(1, device=1)
        mach.snapshot(path)
    with vmmpy.Machine.restore(path) as r:
        unmask(r)
        assert [take(r) for _ in range(3)] == [LPI + 40, 0xFFFF, 1023]


def test_a_snapshot_refused_for_reserved_propbaser_bits_does_not_enable_lpis_on_the_way(guest, tmp_path, caplog):
    """A saved GICR_PROPBASER with a reserved bit set refuses the restore at that record: the redistributor is not
    enabled from it first (its configuration table, outside RAM here, is not read: no guest error about it)."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    caplog.set_level(logging.WARNING, logger="vmmpy")
    prop = 0x1_0000_0000 | IDBITS  # 4 GiB: beyond the 256 MiB of RAM at 1 GiB
    path = tmp_path / "lpis.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()
        Its(mach, cpus=0).enable_lpis(0, prop=prop & ~IDBITS)
        mach.snapshot(path)
    data = bytearray(path.read_bytes())
    ((off, plen),) = [(o, n) for name, o, n in sections(bytes(data)) if name == "irqchip"]
    at = bytes(data[off : off + plen]).find(struct.pack("<Q", prop))
    assert at >= 0
    struct.pack_into("<Q", data, off + at, prop | 1 << 5)
    with_section_crc(data, off, plen)
    path.write_bytes(data)
    caplog.clear()
    with pytest.raises(vmmpy.errors.VmmError, match="redistributor 0: GICR_PROPBASER/PENDBASER have reserved bits"):
        vmmpy.Machine.restore(path).close()
    assert "LPI configuration table" not in caplog.text


def test_the_write_back_reaches_a_pending_table_in_the_last_64_kib_of_ram(m):
    """A pending table (64 KiB aligned, §12.10.29) in RAM's last 64 KiB: with 16 ID bits its 8 KiB are in RAM,
    so EnableLPIs 1 -> 0 writes the pending LPIs back there (LPI 65535: bit 7 of byte 8191)."""
    pend = RAM_END - 0x1_0000
    its = Its(m, cpus=0)
    m.write_memory(pend, bytes(8192))
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), pend, size=8)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    its.map_event(1, 0, 0xFFFF)
    m.msi(0, device=1)
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(pend + 8191, 1) == bytes([0x80])


def test_enable_lpis_with_no_lpi_configured_offers_no_interrupt():
    """EnableLPIs with PROPBASER at its reset value (IDbits 0: no LPI INTIDs, §12.11.28) makes nothing pending:
    both HPPIRs read 1023 and the line stays low (no cached "highest pending LPI" left from before, such as INTID 0
    at priority 0)."""
    with vmmpy.Machine(its=True) as mach:
        mach.mmio_write(rd(0, GICR_CTLR), 1)
        unmask(mach)
        mach.mmio_write(rd(0, 0x1_0000 + 0x80), 1)  # GICR_IGROUPR0: SGI 0 Group 1 (not pending either)
        assert [mach.sysreg_read(f"ICC_HPPIR{g}_EL1") for g in (0, 1)] == [1023, 1023]
        assert not mach.irq_line()
        assert mach.sysreg_read("ICC_IAR1_EL1") == 1023
