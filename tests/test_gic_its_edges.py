"""Tier 1: edges of the GICv3 ITS (Arm IHI0069 chapter 6 and the commands of §5.3) that mutation testing of
csrc/arm/gic_its.c found untested: table bounds, register halves, command fields and error paths.

The helpers (the ``Its`` driver, the command encoders, the fixtures) are test_gic_its.py's.
"""

from __future__ import annotations

import logging
import struct

import pytest

import vmmpy

from . import test_gic_its
from .test_gic_its import (
    CMDQ,
    COLLT,
    DEVT,
    DISCARD,
    GITS,
    GITS_BASER,
    GITS_CBASER,
    GITS_CREADR,
    GITS_CTLR,
    GITS_CWRITER,
    INT,
    INV,
    ITT,
    L2,
    LPI,
    MAPC,
    MAPD,
    MOVALL,
    MOVI,
    RAM,
    SYNC,
    VALID,
    Its,
    cmd,
    ev,
    guest_errors,
    mapc,
    mapd,
    mapi,
    mapti,
    take,
)

m, m2 = test_gic_its.m, test_gic_its.m2  # the fixtures: a machine with the ITS, one with two CPUs

RAM_END = RAM + (256 << 20)  # the default 256 MiB


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    return caplog


# ---- the register map -----------------------------------------------------------------------------------------


def test_the_offset_after_gits_baser7_is_reserved(m):
    """IHI0069 §12.19: GITS_BASER<n> are 0x0100-0x0138; 0x0140 is reserved (RAZ/WI with a guest error) and takes
    no 64-bit access."""
    before = guest_errors(m)
    assert m.mmio_read(GITS + 0x0140) == 0
    assert guest_errors(m) == before + 1
    m.mmio_write(GITS + 0x0140, 0xFFFF_FFFF)
    assert guest_errors(m) == before + 2
    assert m.mmio_read(GITS + 0x0140, size=8) == 0
    assert guest_errors(m) == before + 3
    assert m.mmio_read(GITS + GITS_BASER + 0x38, size=8) == 0  # GITS_BASER7: RAZ, 64-bit, no error
    assert guest_errors(m) == before + 3


@pytest.mark.parametrize(
    ("off", "ones"),
    [
        # Valid, InnerCache [61:59], OuterCache [55:53], PA [51:12], Shareability [11:10], Size [7:0]
        (GITS_CBASER, 0xB8EF_FFFF_FFFF_FCFF),
        # Valid, Indirect, InnerCache, Type 1 (RO), OuterCache, Entry_Size 7 (RO), PA [47:12], Shareability,
        # Page_Size (0b11 reads as 0b10), Size
        (GITS_BASER, 0xF9E7_FFFF_FFFF_FEFF),
        (GITS_BASER + 8, 0xFCE7_FFFF_FFFF_FEFF),  # Type 4: collections
    ],
    ids=["CBASER", "BASER0", "BASER1"],
)
def test_all_ones_written_to_a_base_register_read_back_as_its_fields(m, off, ones):
    """§12.19.5 GITS_CBASER and §12.19.1 GITS_BASER<n>: the RES0 bits read 0, the read-only fields keep their value,
    every other bit is written."""
    m.mmio_write(GITS + off, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    assert m.mmio_read(GITS + off, size=8) == ones


def test_the_id_registers_are_the_last_48_bytes_of_the_control_frame(m):
    """§12.1.4: GITS_PIDR4 is at 0xffd0, the first ID register; 0xffcc before it is reserved (a guest error)."""
    before = guest_errors(m)
    assert m.mmio_read(GITS + 0xFFD0) == 0x44  # PIDR4
    assert m.mmio_read(GITS + 0xFFFC) == 0xB1  # CIDR3
    assert guest_errors(m) == before
    assert m.mmio_read(GITS + 0xFFCC) == 0
    assert guest_errors(m) == before + 1


def test_gits_translater_reads_as_zero_without_an_error_and_takes_no_byte_or_64_bit_access(m):
    """§12.19.21 GITS_TRANSLATER is write-only, 16 or 32 bits: a read is RAZ (not an error); a byte or 64-bit
    access is not a doorbell write (a guest error, no MSI)."""
    its = Its(m)
    its.map_event(0, 7, LPI + 1)
    before = guest_errors(m)
    assert m.mmio_read(GITS + 0x1_0040) == 0
    assert guest_errors(m) == before
    m.mmio_write(GITS + 0x1_0040, 7, size=1)
    m.mmio_write(GITS + 0x1_0040, 7, size=8)
    assert guest_errors(m) == before + 2
    assert take(m) == 1023
    m.mmio_write(GITS + 0x1_0040, 7, size=2)
    assert take(m) == LPI + 1


@pytest.mark.parametrize("off", [0x0008, 0x0080, 0x0088, 0x0090, 0x0100, 0x0138])
def test_the_64_bit_registers_take_64_bit_accesses(m, off):
    """§12.1.3: GITS_TYPER, CBASER, CWRITER, CREADR and BASER<n> are 64-bit registers: a 64-bit access is no
    error."""
    before = guest_errors(m)
    m.mmio_read(GITS + off, size=8)
    assert guest_errors(m) == before


@pytest.mark.parametrize("off", [0x0010, 0x0078, 0x0140])
def test_a_64_bit_access_beside_the_64_bit_registers_is_an_unsupported_size(m, log, off):
    """The offsets just after GITS_TYPER, before GITS_CBASER and after GITS_BASER7 are reserved 32-bit words: a
    64-bit access there is refused for its size."""
    m.mmio_read(GITS + off, size=8)
    assert f"8-byte read at offset 0x{off:04x}: unsupported access size" in log.text


def test_cwriter_and_creadr_take_32_bit_accesses(m):
    """§12.1.3: a driver may move GITS_CWRITER with a 32-bit write to its low half (the high half is RES0) and
    poll GITS_CREADR's halves."""
    its = Its(m)
    its.config(LPI)
    m.write_memory(CMDQ, mapd(1, ITT) + mapc(0, 0) + mapti(1, 0, LPI) + ev(INV, 1, 0))
    m.mmio_write(GITS + GITS_CWRITER, 0x80, size=4)
    assert m.mmio_read(GITS + GITS_CWRITER, size=8) == 0x80
    assert m.mmio_read(GITS + GITS_CREADR, size=4) == 0x80
    assert m.mmio_read(GITS + GITS_CREADR + 4, size=4) == 0
    m.mmio_write(GITS + GITS_CWRITER + 4, 0xFFFF_FFFF, size=4)  # RES0: ignored, the low half kept
    assert m.mmio_read(GITS + GITS_CWRITER, size=8) == 0x80
    m.msi(0, device=1)
    assert take(m) == LPI


def test_retry_by_a_32_bit_cwriter_write(m):
    """GITS_CWRITER.Retry (bit 0) works in a 32-bit write too: the stalled command runs again."""
    its = Its(m)
    its.send(mapti(1, 0, LPI))  # device 1 not mapped
    assert its.stalled()
    m.write_memory(CMDQ, cmd(SYNC))
    m.mmio_write(GITS + GITS_CWRITER, its.wr | 1, size=4)
    assert its.creadr() == its.wr


def test_gits_ctlr_quiescent_and_enabled(m):
    """§12.19.4 GITS_CTLR: Enabled is bit 0, the only writable bit; Quiescent (bit 31) is 1 while no command waits
    to run: before the queue is live, after it drained, and while it is stalled (nothing runs)."""
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0xFFFF_FFFE)
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31
    m.mmio_write(GITS + GITS_CTLR, 1)
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31 | 1
    its.send(cmd(0x02))
    assert its.stalled()
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31 | 1


def test_a_cbaser_write_while_enabled_keeps_the_queue_where_it_is(m):
    """GITS_CBASER is frozen while Enabled (§12.19.5: UNPREDICTABLE, ignored here): CREADR and a stall stay."""
    its = Its(m)
    its.send(cmd(SYNC), cmd(0x02))
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ, size=8)
    assert its.creadr() == 0x20 | 1


# ---- guest memory: entries are bounds-checked ------------------------------------------------------------------


def test_a_device_entry_just_past_the_end_of_ram_is_not_read(m, log):
    """§5.2 tables live in guest memory: a flat device table in the last page of RAM with two pages puts DeviceID
    512's entry at the end of RAM exactly. An MSI from it is dropped as "not in RAM", and nothing past RAM is read
    (what is there is not a device entry)."""
    Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.write_memory(RAM_END - 4096, bytes(4096))
    m.mmio_write(GITS + GITS_BASER, VALID | (RAM_END - 4096) | 1, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    m.msi(0, device=512)
    assert "MSI from DeviceID 512, EventID 0 dropped: a table entry is not in RAM" in log.text


def q(value: int) -> bytes:
    return struct.pack("<Q", value)


def set_baser(m, n: int, value: int) -> None:
    """GITS_BASER<n> = value (it is writable while the ITS is disabled)."""
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.mmio_write(GITS + GITS_BASER + 8 * n, value, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)


# ---- table sizes and levels (§6.2 GITS_BASER<n>: Page_Size, Size, Indirect) ---------------------------------------


@pytest.mark.parametrize(("page_size", "pages"), [(0, 8), (1, 1), (1, 8)], ids=["8x4K", "1x16K", "8x16K"])
def test_a_flat_device_table_holds_size_times_page_size_over_8_devices(m, page_size, pages):
    """IHI0069 §12.19.1 GITS_BASER<n>: a flat table is Size + 1 pages of Page_Size (4, 16 or 64 KiB) bytes, 8-byte
    entries here: DeviceID pages * page / 8 - 1 is the last one in it, the next one is out of range (MAPD stalls)."""
    its = Its(m, dev_pages=pages, page_size=page_size)
    last = pages * (4096 << 2 * page_size) // 8 - 1
    its.send(mapd(last, ITT))
    assert not its.stalled()
    assert m.read_memory(DEVT + 8 * last, 8) == q(VALID | ITT | 7)
    its.send(mapd(last + 1, ITT))
    assert its.stalled()


@pytest.mark.parametrize(("page_size", "pages"), [(0, 1), (1, 1), (0, 8)], ids=["1x4K", "1x16K", "8x4K"])
def test_a_flat_collection_table_holds_size_times_page_size_over_8_collections(m, log, page_size, pages):
    """The same bound for the collection table (GITS_BASER1): ICID pages * page / 8 - 1 is in it, the next ICID is
    out of range for MAPC."""
    its = Its(m)
    set_baser(m, 1, VALID | COLLT | page_size << 8 | (pages - 1))
    last = pages * (4096 << 2 * page_size) // 8 - 1
    its.send(mapc(last, 0))
    assert not its.stalled()
    assert m.read_memory(COLLT + 8 * last, 8) == q(VALID | 0)
    its.send(mapc(last + 1, 0))
    assert its.stalled()
    assert "ICID out of range" in log.text


@pytest.mark.parametrize("page_size, bit", [(1, 0x4000), (2, 0x1_0000)], ids=["16k-bit14", "64k-bit16"])
def test_a_table_base_keeps_the_pa_bits_of_its_page_size(m, page_size, bit):
    """§12.19.1: only with 64 KiB pages do GITS_BASER bits [15:12] hold PA [51:48]. A 16 KiB page table at an
    address with bit 14 set (16 KiB-aligned) lies there, in RAM; with 64 KiB pages bit 16 up are PA [47:16] as
    written, so a table at an address with bit 16 set is there."""
    base = DEVT + bit
    its = Its(m, page_size=page_size)
    set_baser(m, 0, VALID | base | page_size << 8)
    its.send(mapd(3, ITT))
    assert not its.stalled()
    assert m.read_memory(base + 8 * 3, 8) == q(VALID | ITT | 7)


def test_a_two_level_table_with_16k_pages_has_2048_entries_a_page(m):
    """§12.19.1, Indirect = 1: the level-1 table's entries each name a level-2 page of Page_Size bytes; with 16 KiB
    pages DeviceID n is entry n % 2048 of the page level-1 entry n / 2048 names."""
    its = Its(m, indirect=True, page_size=1)
    m.write_memory(DEVT, bytes(16384))
    m.write_memory(L2, bytes(16384))
    m.write_memory(DEVT + 8 * 3, q(VALID | L2))
    its.send(mapd(3 * 2048 + 5, ITT))
    assert not its.stalled()
    assert m.read_memory(L2 + 8 * 5, 8) == q(VALID | ITT | 7)
    its.send(mapd(2 * 2048 + 5, ITT))  # level-1 entry 2 is not valid
    assert its.stalled()


def test_a_two_level_collection_table(m, log):
    """Indirect collection tables too (GITS_BASER1.Indirect is writable): ICID 515 is entry 3 of the 4 KiB page
    level-1 entry 1 names; ICID 5, under an invalid level-1 entry, is out of range."""
    its = Its(m)
    set_baser(m, 1, VALID | 1 << 62 | COLLT)
    m.write_memory(L2, bytes(4096))
    m.write_memory(COLLT + 8, q(VALID | L2))
    its.send(mapc(515, 0))
    assert not its.stalled()
    assert m.read_memory(L2 + 8 * 3, 8) == q(VALID | 0)
    its.send(mapc(5, 0))
    assert its.stalled()
    assert "ICID out of range" in log.text


# ---- entries the guest wrote itself: only their defined fields count ---------------------------------------------


def test_a_collection_entry_naming_no_cpu_drops_the_msi_and_stalls_int(m, log):
    """A collection table entry the guest wrote with a target processor that does not exist (MAPC would have
    refused it, §5.3.9): the event's MSI is dropped and INT stalls the queue, both naming RDbase."""
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.write_memory(COLLT, q(VALID | 1))  # processor 1 of a one-CPU machine
    m.msi(0, device=1)
    assert "MSI from DeviceID 1, EventID 0 dropped: RDbase names no redistributor" in log.text
    assert take(m) == 1023
    its.send(ev(INT, 1, 0))
    assert its.stalled()


def test_a_collection_entry_targets_the_processor_in_bits_15_0(m2):
    """Collection table entry: Valid [63], processor [15:0]; the bits between are not the processor number."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI)
    m2.write_memory(COLLT, q(VALID | 0x7FFF_0000 | 1))
    m2.msi(0, device=1)
    assert take(m2, 0) == 1023
    assert take(m2, 1) == LPI


def test_an_itt_entry_is_valid_icid_and_pintid_and_nothing_else(m2):
    """ITT entry: Valid [63], ICID [47:32], pINTID [31:0]: bits 62:48, written by the guest, change neither the
    collection (odd ICID 1, on CPU 1) nor the LPI (odd INTID 8193)."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 1, icid=1, cpu=1)
    m2.write_memory(ITT + 0x1000, q(VALID | 0x7FFF << 48 | 1 << 32 | LPI + 1))
    m2.msi(0, device=1)
    assert take(m2, 0) == 1023
    assert take(m2, 1) == LPI + 1


def test_a_device_entry_is_valid_itt_and_size_and_nothing_else(m, log):
    """Device table entry: Valid [63], ITT address [51:8], EventID bits - 1 [4:0]: bits 7:5, written by the guest,
    are neither part of the size nor of the address."""
    its = Its(m)
    its.map_event(1, 200, LPI + 2)
    m.write_memory(DEVT + 8, q(VALID | ITT + 0x1000 | 0xE0 | 7))
    m.msi(200, device=1)
    assert take(m) == LPI + 2
    m.msi(256, device=1)  # Size 7: 256 EventIDs
    assert "MSI from DeviceID 1, EventID 256 dropped: EventID out of range for the device" in log.text


# ---- command fields (§5.3) ----------------------------------------------------------------------------------------


def test_mapc_reads_rdbase_from_bits_51_16_only(m2):
    """§5.3.9 MAPC: DW2 holds ICID [15:0], RDbase [51:16] and V [63]; RES0 bits 62:52 do not make RDbase another
    (non-existent) processor."""
    its = Its(m2, cpus=2)
    its.send(cmd(MAPC, 0, 0, VALID | 0x7FF << 52 | 1 << 16 | 3))
    assert not its.stalled()
    assert m2.read_memory(COLLT + 8 * 3, 8) == q(VALID | 1)


def test_mapc_with_v_0_unmaps_whatever_rdbase_says(m):
    """§5.3.9 MAPC with V = 0 removes the mapping; RDbase is not checked then (only a valid mapping needs it)."""
    its = Its(m)
    its.send(mapc(2, 0), mapc(2, 7, valid=False))
    assert not its.stalled()
    assert m.read_memory(COLLT + 8 * 2, 8) == bytes(8)


def test_mapd_takes_size_15_and_event_65535(m):
    """§5.3.8 MAPD: Size is EventID bits - 1, at most GITS_TYPER.ID_bits (15): Size 15 maps a device whose
    EventIDs reach 65535."""
    its = Its(m)
    its.config(LPI)
    its.send(mapd(1, ITT, size=15), mapc(0, 0), mapti(1, 65535, LPI), ev(SYNC, 0, 0))
    assert not its.stalled()
    assert m.read_memory(DEVT + 8, 8) == q(VALID | ITT | 15)
    assert m.read_memory(ITT + 8 * 65535, 8) == q(VALID | LPI)


def test_mapd_with_v_0_takes_any_size(m):
    """§5.3.8 MAPD with V = 0 unmaps the device; its Size field is not checked (no ITT follows)."""
    its = Its(m)
    its.send(mapd(1, ITT), mapd(1, ITT, size=31, valid=False))
    assert not its.stalled()
    assert m.read_memory(DEVT + 8, 8) == bytes(8)


def test_mapd_ignores_the_res0_bits_around_size_and_itt_addr(m):
    """MAPD's Size is DW1 [4:0] and ITT_addr DW2 [51:8]: bits 7:5 of DW1 and 7:0 of DW2 are not part of them."""
    its = Its(m)
    its.send(cmd(MAPD, 1, 0xE0 | 7, VALID | ITT | 0xFF))
    assert not its.stalled()
    assert m.read_memory(DEVT + 8, 8) == q(VALID | ITT | 7)


@pytest.mark.parametrize(
    ("intid", "ok"),
    [(LPI - 1, False), (LPI, True), (65535, True), (65536, False), (0x1_0001, False), (0xFFFF_FFFF, False)],
)
def test_mapti_takes_the_lpis_8192_to_65535(m, intid, ok):
    """§5.3.11 MAPTI: pINTID must be an LPI the ITS supports (8192 .. 2^16 - 1 with 16 ID bits)."""
    its = Its(m)
    its.send(mapd(1, ITT), mapti(1, 0, intid))
    assert its.stalled() != ok
    assert m.read_memory(ITT, 8) == (q(VALID | intid) if ok else bytes(8))


def test_mapi_maps_the_eventid_as_the_lpi(m):
    """§5.3.10 MAPI: pINTID = EventID; an EventID below 8192 is no LPI (an error)."""
    its = Its(m)
    its.send(mapd(1, ITT, size=15), mapi(1, LPI + 9, icid=2))
    assert not its.stalled()
    assert m.read_memory(ITT + 8 * (LPI + 9), 8) == q(VALID | 2 << 32 | LPI + 9)
    its.send(mapi(1, 9))
    assert its.stalled()


def test_mapti_needs_the_icid_in_the_collection_table_not_mapped(m, log):
    """§5.3.11 MAPTI: ICID beyond the collection table is an error, an unmapped collection is not (it may be mapped
    later)."""
    its = Its(m)
    its.send(mapd(1, ITT), mapti(1, 0, LPI, icid=511))
    assert not its.stalled()
    its.send(mapti(1, 1, LPI, icid=512))
    assert its.stalled()
    assert "ICID out of range" in log.text


def test_movall_checks_rdbase1_too(m):
    """§5.3.13 MOVALL: RDbase1 (DW2) naming no redistributor is an error, as RDbase2 (DW3) is."""
    its = Its(m)
    its.send(cmd(MOVALL, 0, 0, 4 << 16, 0))
    assert its.stalled()


def test_movi_rewrites_the_itt_entry_with_the_new_icid(m):
    """§5.3.14 MOVI: the event's ITT entry names the new collection afterwards (its pINTID kept)."""
    its = Its(m)
    its.map_event(1, 0, LPI + 3)
    its.send(mapc(6, 0), cmd(MOVI, 1, 0, 6))
    assert not its.stalled()
    assert m.read_memory(ITT + 0x1000, 8) == q(VALID | 6 << 32 | LPI + 3)


# ---- the queue ------------------------------------------------------------------------------------------------------


def test_the_command_queue_wraps_at_its_end(m):
    """§6.2 GITS_CREADR: the queue is circular: after the last 32 bytes of the CBASER.Size pages CREADR goes on at
    offset 0."""
    its = Its(m)
    its.send(*[cmd(SYNC)] * 127)
    assert its.creadr() == 127 * 32
    its.map_event(1, 0, LPI)  # five commands: the last 32 bytes of the page, then 0..0x80
    assert its.creadr() == 4 * 32
    m.msi(0, device=1)
    assert take(m) == LPI


def test_a_queue_whose_last_command_leaves_ram_stalls_there(m, log):
    """A command queue in the last page of RAM but two pages long: the command at offset 0x1000 is not in RAM; the
    queue stalls there with "not in RAM" (the commands before it ran)."""
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.write_memory(RAM_END - 4096, cmd(SYNC) * 128)
    m.mmio_write(GITS + GITS_CBASER, VALID | (RAM_END - 4096) | 1, size=8)
    m.mmio_write(GITS + GITS_CWRITER, 0x1020, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    assert its.creadr() == 0x1000 | 1
    assert "command 0x00 at queue offset 0x01000 (DeviceID 0, EventID 0): the command queue is not in RAM" in log.text


# ---- snapshots: the ITS record (gic_its.c vmm__gic_its_snap) -------------------------------------------------------

# the ITS record: Enabled and Stalled (a byte each), then these u64s
RECORD = ("CBASER", "CWRITER", "CREADR", "BASER0", "BASER1", "last error")


def its_record(mach, data: bytes) -> int:
    """Where the machine's ITS record's CBASER starts in snapshot `data` (located by the registers' values)."""
    from .test_snapshot import sections

    regs = [mach.mmio_read(GITS + off, size=8) for off in (GITS_CBASER, GITS_CWRITER, GITS_CREADR)]
    regs[2] &= ~1  # Stalled is a flag of its own
    regs += [mach.mmio_read(GITS + GITS_BASER + 8 * n, size=8) for n in range(2)]
    ((off, plen),) = [(o, n) for name, o, n in sections(data) if name == "irqchip"]
    at = data.find(struct.pack("<5Q", *regs), off, off + plen)
    assert at >= 0
    return at


def last_error(mach, path) -> int:
    mach.snapshot(path)
    data = path.read_bytes()
    return struct.unpack_from("<Q", data, its_record(mach, data) + 40)[0]


def test_a_snapshot_keeps_the_last_its_error(guest, tmp_path):
    """The ITS record ends with the last command or translation error (enum its_error in gic_its.c: 5 "device not
    mapped", 3 "unknown command", 15 "the ITS is disabled"); 0 before any. A restored machine keeps it."""
    path = tmp_path / "its.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()
        its = Its(mach)
        assert last_error(mach, path) == 0
        mach.msi(0, device=3)
        assert last_error(mach, path) == 5
        its.send(cmd(0x02))
        assert last_error(mach, path) == 3
        mach.mmio_write(GITS + GITS_CTLR, 0)
        mach.msi(0, device=3)
        assert last_error(mach, path) == 15
    with vmmpy.Machine.restore(path) as r:
        assert last_error(r, tmp_path / "again.snap") == 15


def patched_snapshot(guest, tmp_path, field: str, value: int):
    """A snapshot of a machine with a one-page command queue whose ITS record's `field` holds `value`."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    path = tmp_path / "its.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()
        its = Its(mach)
        its.send(cmd(SYNC), cmd(SYNC))
        mach.snapshot(path)
        data = bytearray(path.read_bytes())
        at = its_record(mach, bytes(data)) + 8 * RECORD.index(field)
    struct.pack_into("<Q", data, at, value)
    ((off, plen),) = [(o, n) for name, o, n in sections(bytes(data)) if name == "irqchip"]
    with_section_crc(data, off, plen)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("CWRITER", 0x40 | 1, False),  # Retry is not kept
        ("CWRITER", 1 << 20, False),  # beyond Offset [19:5]
        ("CREADR", 0x40 | 1 << 4, False),
        ("CREADR", 0xFE0, True),  # the last command of the one-page queue
        ("CREADR", 0x1000, False),  # past the queue
        ("BASER1", VALID | COLLT | 4 << 56 | 7 << 48 | 3 << 8, False),  # Page_Size 3 (reserved) is stored as 2
        ("BASER1", VALID | COLLT | 4 << 56 | 7 << 48 | 2 << 8, True),
        ("BASER1", VALID | COLLT | 4 << 56 | 3 << 48, False),  # Entry_Size is read-only: 8 bytes
        ("last error", 15, True),
        ("last error", 16, False),
    ],
)
def test_a_snapshot_restores_only_its_records_the_registers_can_hold(guest, tmp_path, field, value, ok):
    """A restored ITS record must be one the registers could hold (§6.2: CWRITER and CREADR are offsets [19:5]
    inside the queue; GITS_BASER's Type and Entry_Size are read-only, Page_Size 3 reads as 2) and name a known
    error."""
    path = patched_snapshot(guest, tmp_path, field, value)
    if not ok:
        with pytest.raises(vmmpy.errors.VmmError, match="ITS command queue registers|GITS_BASER1 0x"):
            vmmpy.Machine.restore(path).close()
        return
    with vmmpy.Machine.restore(path) as r:
        if field == "last error":
            assert last_error(r, tmp_path / "again.snap") == value
        else:
            reg = {"CREADR": GITS_CREADR, "BASER1": GITS_BASER + 8}[field]
            assert r.mmio_read(GITS + reg, size=8) & ~1 == value  # CREADR: the zeros at 0xfe0 stall the queue


@pytest.mark.parametrize("cwriter", [0x1000, 0x2000])
def test_cwriter_at_or_past_the_queue_size_runs_nothing(m, log, cwriter):
    """§12.19.6 GITS_CWRITER: an offset equal to the queue's size (CBASER.Size + 1 pages) or past it is beyond the
    queue: the queue stalls with CREADR where it was (one guest error) and runs none of the commands in it."""
    its = Its(m)
    m.write_memory(CMDQ, mapd(1, ITT))
    before = guest_errors(m)
    m.mmio_write(GITS + GITS_CWRITER, cwriter, size=8)
    assert its.creadr() == 0 | 1
    assert "at queue offset 0x00000 (DeviceID 0, EventID 0): GITS_CWRITER is beyond the command queue" in log.text
    assert guest_errors(m) == before + 1
    assert m.read_memory(DEVT + 8, 8) == bytes(8)


def test_the_opcode_is_dw0_bits_7_0(m):
    """§5.3: a command's opcode is DW0 [7:0]; bits 31:8 of DW0 are RES0, not part of it: SYNC with them set is SYNC."""
    its = Its(m)
    its.send(cmd(SYNC | 0xFF_FF00))
    assert not its.stalled()
    assert its.creadr() == 32


def test_the_collection_table_takes_all_16_icid_bits(m):
    """GITS_TYPER.CIL = 0: ICIDs have 16 bits. A collection table of 8 64 KiB pages holds 65536 entries: ICID 65535
    maps, and an event on it is delivered."""
    its = Its(m)
    set_baser(m, 1, VALID | COLLT | 2 << 8 | 7)
    its.map_event(1, 0, LPI + 5, icid=0xFFFF)
    assert m.read_memory(COLLT + 8 * 0xFFFF, 8) == q(VALID | 0)
    m.msi(0, device=1)
    assert take(m) == LPI + 5
    its.send(ev(INT, 1, 0))
    assert take(m) == LPI + 5


def test_a_device_id_past_65536_is_out_of_range_inside_a_larger_table(m, log):
    """GITS_TYPER.Devbits = 15 (16-bit DeviceIDs): with a flat device table of 129 4 KiB pages (66048 entries) a
    DeviceID of 65537, inside the table, is still out of range, for an MSI (dropped) as for MAPD (stalls)."""
    its = Its(m, dev_pages=129)
    m.msi(0, device=65537)
    assert "MSI from DeviceID 65537, EventID 0 dropped: DeviceID out of range" in log.text
    its.send(mapd(65537, ITT))
    assert its.stalled()
    assert "(DeviceID 65537, EventID 7): DeviceID out of range" in log.text


@pytest.mark.parametrize("n", [0, 1])
def test_a_table_whose_baser_is_not_valid_is_absent(m, log, n):
    """§12.19.1 GITS_BASER<n>.Valid = 0: no table. A command that needs it stalls the queue, an MSI through it is
    dropped, both naming the invalid GITS_BASER (nothing is written to the address the register holds)."""
    its = Its(m)
    its.map_event(1, 0, LPI)
    baser = m.mmio_read(GITS + GITS_BASER + 8 * n, size=8)
    set_baser(m, n, baser & ~VALID)
    m.msi(0, device=1)
    assert "MSI from DeviceID 1, EventID 0 dropped: the table's GITS_BASER is not valid" in log.text
    assert take(m) == 1023
    its.send(mapd(2, ITT) if n == 0 else mapc(2, 0))
    assert its.stalled()
    assert m.read_memory((DEVT, COLLT)[n] + 8 * 2, 8) == bytes(8)


def test_only_inv_and_invall_reread_the_configuration(m):
    """§5.1.1: a redistributor may cache LPI configuration; this one re-reads a byte at INV, INVALL or EnableLPIs
    only. A batch of other commands (SYNC, MAPC) leaves a disabled-in-memory LPI enabled in the cache."""
    its = Its(m)
    its.map_event(1, 0, LPI + 4)
    its.config(LPI + 4, enable=False)
    its.send(cmd(SYNC), mapc(3, 0), cmd(SYNC))
    m.msi(0, device=1)
    assert take(m) == LPI + 4


def test_mapti_names_its_own_error_for_an_unmapped_device_or_an_event_past_the_itt(m, log):
    """§5.3.11 MAPTI's first checks: the device must be mapped and EventID inside its ITT (Size 7: 256 events);
    each stalls the queue with its own reason and writes no ITT entry."""
    its = Its(m)
    its.send(mapd(1, ITT), mapti(3, 0, LPI))
    assert "command 0x0a at queue offset 0x00020 (DeviceID 3, EventID 0): device not mapped" in log.text
    its.send(mapti(1, 256, LPI))
    m.write_memory(CMDQ + 0x20, cmd(SYNC))
    m.mmio_write(GITS + GITS_CWRITER, its.wr | 1, size=8)  # Retry
    assert "command 0x0a at queue offset 0x00040 (DeviceID 1, EventID 256): EventID out of range" in log.text
    assert m.read_memory(ITT + 8 * 256, 8) == bytes(8)


def test_discard_clears_the_itt_entry(m):
    """§5.3.5 DISCARD removes the event's mapping: its ITT entry in guest memory reads all zeros afterwards (as MAPD
    V = 0 clears a device entry), not a non-zero "invalid" value."""
    its = Its(m)
    its.map_event(1, 3, LPI + 2)
    assert m.read_memory(ITT + 0x1000 + 8 * 3, 8) == q(VALID | LPI + 2)
    its.send(ev(DISCARD, 1, 3))
    assert not its.stalled()
    assert m.read_memory(ITT + 0x1000 + 8 * 3, 8) == bytes(8)


def test_movi_moves_a_pending_lpi_to_a_lower_numbered_cpu(m2):
    """§5.3.14 MOVI: a pending LPI moves with its event whichever way: here from CPU 1's collection to CPU 0's."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 7, icid=1, cpu=1)
    its.send(mapc(0, 0), ev(INT, 1, 0), cmd(MOVI, 1, 0, 0))
    assert not its.stalled()
    assert take(m2, 1) == 1023
    assert take(m2, 0) == LPI + 7


def test_sync_leaves_pending_lpis_where_they_are(m2):
    """§5.3.19 SYNC only waits for earlier commands: an LPI pending on the redistributor SYNC names stays there."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 7, icid=1, cpu=1)
    its.send(ev(INT, 1, 0), cmd(SYNC, 0, 0, 1 << 16))
    assert not its.stalled()
    assert take(m2, 0) == 1023
    assert take(m2, 1) == LPI + 7


@pytest.mark.parametrize("doorbell", [GITS + 0x1_0044, GITS + 0x2_0040])
def test_an_msi_to_an_address_above_gits_translater_is_dropped(m, log, doorbell):
    """§5.2: only a write to GITS_TRANSLATER is translated: an MSI to an address past it (the next word, the next
    64 KiB frame) is dropped with a guest error naming the address."""
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.msi(0, device=1, doorbell=doorbell)
    assert f"MSI from DeviceID 1 to 0x{doorbell:x}, which is not GITS_TRANSLATER: dropped" in log.text
    assert take(m) == 1023


def test_a_wrapped_queue_with_commands_left_is_not_quiescent(m):
    """§12.19.4 GITS_CTLR.Quiescent is 0 while commands remain, also when the queue has wrapped (CWRITER below
    CREADR): 700 SYNCs from offset 1400 x 32 of a 2048-command queue end at 52 x 32; a CTLR read runs a batch of 256
    (CREADR at 1912 x 32) and reads busy."""
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.write_memory(CMDQ, cmd(SYNC) * 2048)
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ | 15, size=8)  # 16 pages
    m.mmio_write(GITS + GITS_CWRITER, 0, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    m.mmio_write(GITS + GITS_CWRITER, 1400 * 32, size=8)
    assert [its.creadr() for _ in range(5)][-1] == 1400 * 32  # 256 a poll
    m.mmio_write(GITS + GITS_CWRITER, 52 * 32, size=8)
    assert m.mmio_read(GITS + GITS_CTLR) == 1
    assert its.creadr() == 52 * 32
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31 | 1


@pytest.mark.parametrize("off", [0x0010, 0x0040, 0x007C, 0x0098, 0x00FC])
def test_the_reserved_words_between_the_registers_read_as_zero_with_an_error(m, off):
    """§12.19: 0x0010-0x007c (between GITS_TYPER and GITS_CBASER) and 0x0098-0x00fc (between GITS_CREADR and
    GITS_BASER0) are reserved: RAZ/WI with a guest error, not an alias of a neighbour."""
    Its(m)  # CBASER, CWRITER, BASER hold non-zero values
    before = guest_errors(m)
    assert m.mmio_read(GITS + off) == 0
    assert guest_errors(m) == before + 1
    m.mmio_write(GITS + off, 0xFFFF_FFFF)
    assert guest_errors(m) == before + 2
    assert m.mmio_read(GITS + GITS_CBASER, size=8) == VALID | CMDQ
    assert m.mmio_read(GITS + GITS_BASER, size=8) & 0xFFFF_FFFF == DEVT


def test_gits_baser2_reads_zero_after_an_its_error(m):
    """§12.19.1: GITS_BASER2..7 are unimplemented (Type 0: RAZ/WI) whatever state the ITS holds, here after a
    translation error and a command error were recorded."""
    its = Its(m)
    m.msi(0, device=3)  # device 3 is not mapped
    its.send(cmd(0x02))
    assert its.stalled()
    assert [m.mmio_read(GITS + GITS_BASER + 8 * n, size=8) for n in range(2, 8)] == [0] * 6
