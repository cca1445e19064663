"""Tier 1: LPIs and the GICv3 ITS (Arm IHI0069 §5.1-5.3), through MMIO, guest RAM, the ICC_* registers and MSIs.

The machines have ``its=True`` (vmm_config.its; without it the GIC has neither, see the first tests).

Each test lays the LPI configuration and pending tables, the ITS command queue and its device and collection
tables out in guest RAM, programs the registers over MMIO and issues commands by writing them to the queue and
moving GITS_CWRITER, as a driver does. MSIs come from ``Machine.msi`` (a device's write to GITS_TRANSLATER with
its DeviceID) or from an MMIO write to GITS_TRANSLATER (DeviceID 0). Command errors stall the queue
(GITS_CREADR.Stalled; GITS_TYPER.SEIS = 0): see csrc/arm/gic_its.c.
"""

from __future__ import annotations

import os
import struct

import pytest

import vmmpy

from .conftest import heap_growth, run_with_shim
from .holding import a_thread_inside
from .test_gic import GICD, GICD_CTLR, configure, rd, unmask

GITS = 0x0808_0000
GITS_CTLR, GITS_IIDR, GITS_TYPER = 0x0000, 0x0004, 0x0008
GITS_CBASER, GITS_CWRITER, GITS_CREADR, GITS_BASER = 0x0080, 0x0088, 0x0090, 0x0100
TRANSLATER = GITS + 0x1_0040
GICR_CTLR, GICR_PROPBASER, GICR_PENDBASER = 0x0000, 0x0070, 0x0078

RAM = 0x4000_0000
# the tables sit 128 MiB into RAM, clear of the virtio test drivers' buffers (virtio_driver.GuestAlloc: 16-80 MiB)
PROP = RAM + 0x0900_0000  # LPI configuration table: one byte per LPI from 8192
PEND = RAM + 0x0910_0000  # pending tables: 64 KiB apart, one per CPU
CMDQ = RAM + 0x0920_0000  # command queue: 1 page
DEVT = RAM + 0x0930_0000  # device table
COLLT = RAM + 0x0940_0000  # collection table
ITT = RAM + 0x0950_0000  # ITTs: 4 KiB apart, one per device
L2 = RAM + 0x0960_0000  # level-2 pages of a two-level device table

LPI = 8192
VALID = 1 << 63
IDBITS = 15  # PROPBASER.IDbits: 16-bit INTIDs

MOVI, INT, CLEAR, SYNC, MAPD, MAPC, MAPTI, MAPI, INV, INVALL, MOVALL, DISCARD = (
    0x01, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
)  # fmt: skip


def cmd(op: int, devid: int = 0, dw1: int = 0, dw2: int = 0, dw3: int = 0) -> bytes:
    return struct.pack("<4Q", op | devid << 32, dw1, dw2, dw3)


def mapd(devid: int, itt: int, size: int = 7, valid: bool = True) -> bytes:
    return cmd(MAPD, devid, size, itt | (VALID if valid else 0))


def mapc(icid: int, cpu: int, valid: bool = True) -> bytes:
    return cmd(MAPC, 0, 0, icid | cpu << 16 | (VALID if valid else 0))


def mapti(devid: int, event: int, intid: int, icid: int = 0) -> bytes:
    return cmd(MAPTI, devid, event | intid << 32, icid)


def mapi(devid: int, event: int, icid: int = 0) -> bytes:
    return cmd(MAPI, devid, event, icid)


def ev(op: int, devid: int, event: int) -> bytes:
    """INT, CLEAR, DISCARD, INV: (DeviceID, EventID)."""
    return cmd(op, devid, event)


class Its:
    """A driver for the ITS of a Machine: tables in RAM, commands through the queue."""

    def __init__(self, m, *, cpus: int = 1, dev_pages: int = 1, indirect: bool = False, page_size: int = 0):
        self.m = m
        self.wr = 0  # our GITS_CWRITER offset
        self.queue_bytes = 4096
        m.write_memory(CMDQ, bytes(self.queue_bytes))
        m.write_memory(DEVT, bytes(4096 * dev_pages))
        m.write_memory(COLLT, bytes(4096))
        self.devt = DEVT | (1 << 62 if indirect else 0) | page_size << 8 | (dev_pages - 1)
        m.mmio_write(GITS + GITS_BASER, VALID | self.devt, size=8)
        m.mmio_write(GITS + GITS_BASER + 8, VALID | COLLT, size=8)
        m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ | 0, size=8)  # one 4 KiB page
        m.mmio_write(GITS + GITS_CWRITER, 0, size=8)
        m.mmio_write(GITS + GITS_CTLR, 1)
        for cpu in range(cpus):
            self.enable_lpis(cpu)

    def enable_lpis(self, cpu: int, *, idbits: int = IDBITS, prop: int = PROP) -> None:
        self.m.mmio_write(rd(cpu, GICR_PROPBASER), prop | idbits, size=8)
        self.m.mmio_write(rd(cpu, GICR_PENDBASER), PEND + cpu * 0x1_0000, size=8)
        self.m.mmio_write(rd(cpu, GICR_CTLR), 1)

    def config(self, intid: int, prio: int = 0xA0, enable: bool = True) -> None:
        """An LPI's configuration byte (§5.1.1); takes effect after INV/INVALL or at EnableLPIs."""
        self.m.write_memory(PROP + intid - LPI, bytes([prio | int(enable)]))

    def send(self, *cmds: bytes) -> None:
        for c in cmds:
            self.m.write_memory(CMDQ + self.wr, c)
            self.wr = (self.wr + 32) % self.queue_bytes
        self.m.mmio_write(GITS + GITS_CWRITER, self.wr, size=8)

    def creadr(self) -> int:
        return self.m.mmio_read(GITS + GITS_CREADR, size=8)

    def stalled(self) -> bool:
        return bool(self.creadr() & 1)

    def map_event(self, devid: int, event: int, intid: int, *, icid: int = 0, cpu: int = 0, prio=0xA0) -> None:
        """Everything to take `intid` for (devid, event): its configuration, MAPD, MAPC, MAPTI, INV, SYNC."""
        self.config(intid, prio)
        self.send(
            mapd(devid, ITT + devid * 0x1000),
            mapc(icid, cpu),
            mapti(devid, event, intid, icid),
            ev(INV, devid, event),
            cmd(SYNC, 0, 0, cpu << 16),
        )
        assert not self.stalled(), "setting up the mapping stalled the queue"


def ack(m, cpu: int = 0) -> int:
    return m.sysreg_read("ICC_IAR1_EL1", cpu)


def eoi(m, intid: int, cpu: int = 0) -> None:
    m.sysreg_write("ICC_EOIR1_EL1", intid, cpu)


def take(m, cpu: int = 0) -> int:
    """Acknowledge and EOI the highest priority pending interrupt; its INTID (1023 if none)."""
    intid = ack(m, cpu)
    if intid != 1023:
        eoi(m, intid, cpu)
    return intid


def guest_errors(m) -> int:
    return m.stats()["guest_errors"]


@pytest.fixture
def m():
    with vmmpy.Machine(its=True) as mach:
        unmask(mach)
        yield mach


@pytest.fixture
def m2():
    with vmmpy.Machine(cpus=2, its=True) as mach:
        unmask(mach, 0)
        unmask(mach, 1)
        yield mach


# ---- with and without (vmm_config.its) ------------------------------------------------------------------------


def test_lpis_and_the_its_are_advertised_with_its(m):
    typer = m.mmio_read(GICD + 0x0004)
    assert typer & (1 << 17)  # LPIS
    assert (typer >> 19) & 0x1F == 15  # IDbits: 16-bit INTIDs (LPIs 8192..65535)
    assert (typer >> 11) & 0x1F == 0  # num_LPIs: IDbits bounds them
    assert m.mmio_read(rd(0, 0x0008), size=8) & 1  # GICR_TYPER.PLPIS
    m.mmio_write(rd(0, GICR_CTLR), 0xFFFF_FFFF)  # EnableLPIs is the only writable bit; RWP, UWP, DPG* read 0
    assert m.mmio_read(rd(0, GICR_CTLR)) == 1
    assert guest_errors(m) == 0


def test_the_dtb_has_an_msi_controller_under_the_gic(guest):
    import libfdt

    with vmmpy.Machine(guest("hello"), its=True) as mach:
        fdt = libfdt.Fdt(mach.dtb())
    node = fdt.path_offset("/intc@8000000/its@8080000")
    assert fdt.getprop(node, "compatible").as_str() == "arm,gic-v3-its"
    assert fdt.getprop(node, "msi-controller") is not None
    assert fdt.getprop(node, "#msi-cells").as_uint32() == 1
    assert struct.unpack(">4I", bytes(fdt.getprop(node, "reg"))) == (0, GITS, 0, 0x2_0000)
    assert fdt.get_phandle(node) == 3  # FDT_PH_ITS: a host bridge's msi-map names it
    gic = fdt.path_offset("/intc@8000000")
    assert fdt.getprop(gic, "#address-cells").as_uint32() == 2 and fdt.getprop(gic, "ranges") is not None


def test_without_its_there_is_no_its(guest):
    with vmmpy.Machine(guest("hello")) as mach:
        assert b"its@" not in mach.dtb()
        assert mach.mmio_read(GITS + GITS_TYPER) == 0  # unclaimed: RAZ with a guest error
        assert mach.mmio_read(rd(0, 0x0008), size=8) & 1 == 0  # GICR_TYPER.PLPIS
        with pytest.raises(vmmpy.errors.NotSupported, match="has no ITS"):
            mach.msi(0)


# ---- registers ------------------------------------------------------------------------------------------------


def test_gits_typer_iidr_and_ctlr(m):
    typer = m.mmio_read(GITS + GITS_TYPER, size=8)
    assert typer & 1  # Physical
    assert (typer >> 4) & 0xF == 7  # ITT_entry_size: 8 bytes
    assert (typer >> 8) & 0x1F == 15  # ID_bits: 16-bit EventIDs
    assert (typer >> 13) & 0x1F == 15  # Devbits: 16-bit DeviceIDs
    assert not typer & (1 << 18)  # SEIS: command errors do not raise an SError
    assert not typer & (1 << 19)  # PTA: RDbase is a processor number
    assert (typer >> 24) & 0xFF == 0  # HCC: every collection is in the table
    assert not typer & (1 << 36)  # CIL: 16-bit ICIDs
    assert m.mmio_read(GITS + GITS_TYPER) == typer & 0xFFFF_FFFF
    assert m.mmio_read(GITS + GITS_TYPER + 4) == typer >> 32
    assert m.mmio_read(GITS + GITS_IIDR) == 0x43B
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31  # Quiescent, disabled
    m.mmio_write(GITS + GITS_CTLR, 0xFFFF_FFFF)
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31 | 1
    assert m.mmio_read(GITS + 0xFFE8) == 0x3B  # PIDR2: GICv3
    assert m.mmio_read(GITS + 0xFFE0) == 0x94  # PIDR0 tells the ITS frame apart
    assert guest_errors(m) == 0


def test_gits_baser_types_and_entry_sizes_are_read_only(m):
    dev, coll = (m.mmio_read(GITS + GITS_BASER + 8 * n, size=8) for n in range(2))
    assert (dev >> 56) & 7 == 1 and (coll >> 56) & 7 == 4  # Devices, Collections
    assert (dev >> 48) & 0x1F == 7 and (coll >> 48) & 0x1F == 7  # 8-byte entries
    m.mmio_write(GITS + GITS_BASER, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    got = m.mmio_read(GITS + GITS_BASER, size=8)
    assert (got >> 56) & 7 == 1 and (got >> 48) & 0x1F == 7
    assert got & (1 << 63) and got & (1 << 62)  # Valid, Indirect: writable
    assert (got >> 8) & 3 == 2  # Page_Size 0b11 (reserved) reads as 64 KiB
    for n in range(2, 8):  # no other tables: RAZ/WI
        m.mmio_write(GITS + GITS_BASER + 8 * n, 0xFFFF_FFFF_FFFF_FFFF, size=8)
        assert m.mmio_read(GITS + GITS_BASER + 8 * n, size=8) == 0
    assert guest_errors(m) == 0


def test_64_bit_its_registers_take_32_bit_halves(m):
    m.mmio_write(GITS + GITS_CBASER, CMDQ, size=4)
    m.mmio_write(GITS + GITS_CBASER + 4, 1 << 31, size=4)
    assert m.mmio_read(GITS + GITS_CBASER, size=8) == VALID | CMDQ


def test_base_registers_are_frozen_while_the_its_is_enabled(m):
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    m.mmio_write(GITS + GITS_CBASER, 0, size=8)
    m.mmio_write(GITS + GITS_BASER, VALID | DEVT, size=8)
    assert m.mmio_read(GITS + GITS_CBASER, size=8) == VALID | CMDQ
    assert m.mmio_read(GITS + GITS_BASER, size=8) & VALID == 0
    assert guest_errors(m) == 2


def test_creadr_and_typer_are_read_only(m):
    m.mmio_write(GITS + GITS_CREADR, 0x20, size=8)
    m.mmio_write(GITS + GITS_TYPER, 0, size=8)
    assert m.mmio_read(GITS + GITS_CREADR, size=8) == 0
    assert guest_errors(m) == 2


def test_redistributor_lpi_base_registers_take_32_bit_halves(m):
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=4)
    m.mmio_write(rd(0, GICR_PROPBASER + 4), 0x0000_0123, size=4)
    m.mmio_write(rd(0, GICR_PENDBASER + 4), 0x0000_0045, size=4)
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == 0x123 << 32 | PROP | IDBITS
    assert m.mmio_read(rd(0, GICR_PENDBASER + 4)) == 0x45


@pytest.mark.parametrize(
    "reg",
    [rd(0, GICR_PROPBASER), rd(0, GICR_PENDBASER), GITS + GITS_CBASER, GITS + GITS_BASER, GITS + GITS_BASER + 8],
    ids=["GICR_PROPBASER", "GICR_PENDBASER", "GITS_CBASER", "GITS_BASER0", "GITS_BASER1"],
)
def test_a_32_bit_write_replaces_its_half_and_keeps_the_other(m, reg):
    """IHI0069 §12.1.3: a 32-bit access to a 64-bit register reaches one half. Written over a value with bits set
    in both halves, a half must take exactly the new word (not OR into it) and leave the other alone: the register
    reads as a 64-bit write of the merged value leaves it (read-only fields, such as GITS_BASER's Type, kept)."""

    def written(value: int, size: int = 8, at: int = 0) -> int:
        m.mmio_write(reg, 0xFFFF_FFFF_FFFF_FFFF, size=8)
        m.mmio_write(reg + at, value, size=size)
        return m.mmio_read(reg, size=8)

    full = written(0xFFFF_FFFF_FFFF_FFFF)
    low, high = written(0xFFFF_FFFF), written(0xFFFF_FFFF << 32)
    assert low != full and high != full  # writable bits in both halves
    assert written(0, size=4, at=4) == low
    assert written(0, size=4) == high
    assert guest_errors(m) == 0


def test_redistributor_lpi_base_registers(m):
    m.mmio_write(rd(0, GICR_PROPBASER), 0xFFFF_FFFF_FFFF_FFFF, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), 0xFFFF_FFFF_FFFF_FFFF, size=8)
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == 0x070F_FFFF_FFFF_FF9F
    assert m.mmio_read(rd(0, GICR_PENDBASER), size=8) == 0x070F_FFFF_FFFF_0F80  # PTZ reads 0
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), PEND, size=8)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    m.mmio_write(rd(0, GICR_PROPBASER), 0, size=8)  # UNPREDICTABLE with EnableLPIs set: ignored
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == PROP | IDBITS
    assert guest_errors(m) == 1


# ---- the whole path: MAPD, MAPC, MAPTI, an MSI, the LPI through the CPU interface ------------------------------


def test_msi_becomes_an_lpi_acknowledged_through_iar1(m):
    its = Its(m)
    its.map_event(devid=5, event=3, intid=LPI + 100)
    assert not m.irq_line()
    m.msi(3, device=5)
    assert m.irq_line()
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 100
    assert ack(m) == LPI + 100
    assert not m.irq_line()
    assert m.sysreg_read("ICC_RPR_EL1") == 0xA0  # running at the LPI's priority
    eoi(m, LPI + 100)
    assert m.sysreg_read("ICC_RPR_EL1") == 0xFF
    assert take(m) == 1023
    assert its.creadr() == its.wr  # every command consumed
    assert guest_errors(m) == 0


def test_gits_translater_write_is_deviceid_0(m):
    its = Its(m)
    its.map_event(devid=0, event=7, intid=LPI + 1)
    m.mmio_write(TRANSLATER, 7)
    assert take(m) == LPI + 1
    m.mmio_write(TRANSLATER, 7, size=2)  # 16-bit writes too
    assert take(m) == LPI + 1
    assert m.mmio_read(TRANSLATER) == 0  # write-only


def test_lpi_priority_comes_from_the_configuration_table(m):
    its = Its(m)
    its.map_event(1, 0, LPI + 10, prio=0xC0)
    its.map_event(1, 1, LPI + 20, prio=0x40)
    its.map_event(1, 2, LPI + 30, prio=0x40)
    for e in range(3):
        m.msi(e, device=1)
    assert [take(m) for _ in range(4)] == [LPI + 20, LPI + 30, LPI + 10, 1023]  # then the lower INTID on a tie


def test_lpis_and_spis_compete_by_priority(m):
    from .test_gic import configure

    its = Its(m)
    its.map_event(1, 0, LPI, prio=0x80)
    configure(m, 40, prio=0x90)
    m.irq_set(40, 1)
    m.msi(0, device=1)
    assert ack(m) == LPI
    assert ack(m) == 1023  # the SPI cannot preempt
    eoi(m, LPI)
    assert take(m) == 40


def test_an_lpi_preempts_a_lower_priority_one(m):
    its = Its(m)
    its.map_event(1, 0, LPI + 1, prio=0xC0)
    its.map_event(1, 1, LPI + 2, prio=0x40)
    m.msi(0, device=1)
    assert ack(m) == LPI + 1
    m.msi(1, device=1)
    assert m.irq_line()
    assert ack(m) == LPI + 2
    eoi(m, LPI + 2)
    eoi(m, LPI + 1)
    assert m.sysreg_read("ICC_RPR_EL1") == 0xFF


def test_lpis_are_group_1(m):
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.msi(0, device=1)
    assert m.sysreg_read("ICC_IAR0_EL1") == 1023
    m.sysreg_write("ICC_IGRPEN1_EL1", 0)
    assert not m.irq_line()
    m.sysreg_write("ICC_IGRPEN1_EL1", 1)
    m.mmio_write(GICD + GICD_CTLR, 1)  # Group 0 only
    assert not m.irq_line()
    m.mmio_write(GICD + GICD_CTLR, 3)
    assert take(m) == LPI


def test_a_disabled_lpi_stays_pending_until_enabled_and_invalidated(m):
    its = Its(m)
    its.map_event(2, 0, LPI + 5)
    its.config(LPI + 5, enable=False)  # the cached configuration still says enabled
    m.msi(0, device=2)
    assert take(m) == LPI + 5
    its.send(ev(INV, 2, 0))
    m.msi(0, device=2)
    assert take(m) == 1023  # disabled: pending, not delivered
    its.config(LPI + 5, prio=0x20)
    assert take(m) == 1023  # not before INV
    its.send(ev(INV, 2, 0))
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 5
    assert ack(m) == LPI + 5
    assert m.sysreg_read("ICC_RPR_EL1") == 0x20  # the new priority


def test_invall_rereads_every_configuration_byte(m):
    its = Its(m)
    its.map_event(2, 0, LPI + 5)
    its.map_event(2, 1, LPI + 6)
    its.config(LPI + 5, enable=False)
    its.config(LPI + 6, enable=False)
    its.send(cmd(INVALL, 0, 0, 0))
    m.msi(0, device=2)
    m.msi(1, device=2)
    assert take(m) == 1023
    its.config(LPI + 5)
    its.config(LPI + 6)
    its.send(cmd(INVALL, 0, 0, 0))
    assert [take(m) for _ in range(3)] == [LPI + 5, LPI + 6, 1023]


def test_int_clear_and_discard(m):
    its = Its(m)
    its.map_event(3, 9, LPI + 50)
    its.send(ev(INT, 3, 9))
    assert take(m) == LPI + 50
    its.send(ev(INT, 3, 9), ev(CLEAR, 3, 9))
    assert take(m) == 1023
    its.send(ev(INT, 3, 9), ev(DISCARD, 3, 9))
    assert take(m) == 1023
    errors = guest_errors(m)
    m.msi(9, device=3)  # the mapping is gone: dropped, as a guest error
    assert take(m) == 1023
    assert guest_errors(m) == errors + 1
    assert not its.stalled()


def test_mapi_uses_the_eventid_as_the_lpi(m):
    its = Its(m)
    its.send(mapd(4, ITT + 0x4000, size=15), mapc(0, 0), mapi(4, LPI + 77))
    its.config(LPI + 77)
    its.send(cmd(INVALL, 0, 0, 0))
    m.msi(LPI + 77, device=4)
    assert take(m) == LPI + 77


def test_mapd_valid_0_unmaps_the_device(m):
    its = Its(m)
    its.map_event(6, 0, LPI)
    assert m.read_memory(DEVT, 4096) != bytes(4096)
    its.send(mapd(6, 0, valid=False))
    assert m.read_memory(DEVT, 4096) == bytes(4096)  # the device table entry is cleared, not left valid
    m.msi(0, device=6)
    assert take(m) == 1023
    assert guest_errors(m) == 1


def test_msi_while_the_its_is_disabled_is_dropped(m):
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.msi(0, device=1)
    assert take(m) == 1023
    assert guest_errors(m) == 1


def test_msi_to_another_doorbell_is_dropped(m):
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.msi(0, device=1, doorbell=GITS + 0x40)
    assert take(m) == 1023
    assert guest_errors(m) == 1


def test_movi_moves_a_pending_lpi_to_the_new_collection(m2):
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3, icid=0, cpu=0)
    its.send(mapc(1, 1))
    m2.msi(0, device=1)
    assert m2.irq_line(0) and not m2.irq_line(1)
    its.send(cmd(MOVI, 1, 0, 1))  # to collection 1 (CPU 1)
    assert not m2.irq_line(0) and m2.irq_line(1)
    assert take(m2, 1) == LPI + 3
    m2.msi(0, device=1)  # the mapping moved too
    assert take(m2, 0) == 1023
    assert take(m2, 1) == LPI + 3


def test_movi_moves_a_pending_lpi_of_any_pending_word(m2):
    """MOVI looks at the moved LPI's own pending bit: LPI 8192 + 40 (the second 32-bit word, bit 8) pending while
    8192 + 8 (the first word's bit 8) is not moves to CPU 1."""
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 40, icid=0, cpu=0)
    its.send(mapc(1, 1))
    m2.msi(0, device=1)
    its.send(cmd(MOVI, 1, 0, 1))
    assert (take(m2, 0), take(m2, 1), take(m2, 1)) == (1023, LPI + 40, 1023)


def test_movall_moves_every_pending_lpi(m2):
    its = Its(m2, cpus=2)
    for e in range(3):  # adjacent LPIs: one word of pending bits
        its.map_event(1, e, LPI + e)
        m2.msi(e, device=1)
    its.map_event(1, 3, LPI + 5)
    its.send(cmd(MOVALL, 0, 0, 0 << 16, 1 << 16))
    assert take(m2, 0) == 1023
    assert [take(m2, 1) for _ in range(4)] == [LPI, LPI + 1, LPI + 2, 1023]
    m2.msi(3, device=1)  # CPU 0's collection still: CPU 0 now offers that one alone
    assert [take(m2, 0) for _ in range(2)] == [LPI + 5, 1023]


def test_movall_moves_the_highest_lpis(m2):
    """The last word of pending bits moves too: LPIs 65535 and 65500 (16-bit INTIDs on both CPUs: 1792 words)."""
    its = Its(m2, cpus=2)
    for e, intid in enumerate((65500, 65535)):
        its.map_event(1, e, intid)
        m2.msi(e, device=1)
    its.send(cmd(MOVALL, 0, 0, 0 << 16, 1 << 16))
    assert take(m2, 0) == 1023
    assert [take(m2, 1) for _ in range(3)] == [65500, 65535, 1023]


def test_msi_returns_0_through_the_c_api(m):
    """vmm_irq_msi returns 0, also for an MSI the GIC drops (another doorbell: a guest error, not a host one);
    Machine.msi raises only for a negative code, so it would not notice another value."""
    from vmmpy._ffi import lib

    its = Its(m)
    its.map_event(1, 0, LPI)
    assert lib.vmm_irq_msi(m._vm, GITS + 0x40, 0, 1) == 0
    assert guest_errors(m) == 1
    assert lib.vmm_irq_msi(m._vm, TRANSLATER, 0, 1) == 0
    assert take(m) == LPI


def test_a_collection_entry_in_the_last_8_bytes_of_ram_is_read():
    """ITS table entries are 8 bytes: one that ends exactly at the end of RAM is in RAM. The collection table
    is the last 4 KiB page of RAM; collection 511's entry is its last 8 bytes."""
    with vmmpy.Machine(its=True, ram="256M") as m:
        unmask(m)
        ram_end = RAM + (256 << 20)
        its = Its(m)
        m.write_memory(ram_end - 4096, bytes(4096))
        m.mmio_write(GITS + GITS_CTLR, 0)  # the base registers are frozen while the ITS is enabled
        m.mmio_write(GITS + GITS_BASER + 8, VALID | (ram_end - 4096), size=8)
        m.mmio_write(GITS + GITS_CTLR, 1)
        its.map_event(1, 0, LPI + 7, icid=511)
        m.msi(0, device=1)
        assert take(m) == LPI + 7
        assert guest_errors(m) == 0


def test_movi_of_an_lpi_that_is_not_pending_moves_only_the_mapping(m2):
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3)
    its.map_event(1, 1, LPI + 4)
    its.send(mapc(1, 1))
    m2.msi(1, device=1)  # LPI + 4 pending on CPU 0, LPI + 3 not
    its.send(cmd(MOVI, 1, 0, 1))
    assert take(m2, 1) == 1023
    assert [take(m2, 0) for _ in range(2)] == [LPI + 4, 1023]


def test_collections_route_to_their_cpu(m2):
    its = Its(m2, cpus=2)
    its.map_event(1, 0, LPI + 3, icid=5, cpu=1)
    m2.msi(0, device=1)
    assert not m2.irq_line(0)
    assert take(m2, 1) == LPI + 3


def test_lpis_need_enable_lpis_on_the_target(m2):
    its = Its(m2, cpus=1)  # only CPU 0 enables LPIs
    its.map_event(1, 0, LPI, cpu=1)
    m2.msi(0, device=1)
    assert take(m2, 1) == 1023


def test_propbaser_idbits_bound_the_lpis(m):
    its = Its(m, cpus=0)
    its.enable_lpis(0, idbits=13)  # 14-bit INTIDs: LPIs 8192..16383
    its.map_event(1, 0, LPI + 8191)
    its.map_event(1, 1, LPI + 8192)  # mappable (the ITS allows 16 bits), not delivered
    m.msi(0, device=1)
    m.msi(1, device=1)
    assert [take(m) for _ in range(2)] == [LPI + 8191, 1023]


@pytest.mark.parametrize("idbits", [16, 31])
def test_propbaser_idbits_beyond_the_models_16_bits_are_taken_as_16(m, idbits):
    """PROPBASER.IDbits above 15 asks for more INTID bits than the model has (GICD_TYPER.IDbits: 16): the
    redistributor uses 16, so its configuration table is 57,344 bytes (LPIs 8192..65535). One that ends exactly
    at the end of RAM is all in RAM (no guest error), and its last LPI is delivered."""
    last = 0xFFFF
    prop = RAM + (256 << 20) - (1 << 16) + LPI  # the byte of LPI 65535 is RAM's last
    its = Its(m, cpus=0)
    m.write_memory(prop + last - LPI, bytes([0xA0 | 1]))
    before = guest_errors(m)
    its.enable_lpis(0, idbits=idbits, prop=prop)
    assert guest_errors(m) == before
    its.send(mapd(1, ITT + 0x1000), mapc(0, 0), mapti(1, 0, last), cmd(SYNC))
    assert not its.stalled()
    m.msi(0, device=1)
    assert take(m) == last
    assert guest_errors(m) == before


def test_an_spi_of_higher_priority_comes_before_a_pending_lpi_and_the_lpi_after(m):
    """The HPPI is the highest priority among SPIs, PPIs, SGIs and LPIs alike: SPI 40 at 0x40 is taken before a
    pending LPI at 0xA0, the LPI once 40 is done; and an LPI at 0x20 before SPI 41 at 0x40."""
    its = Its(m)
    its.map_event(1, 0, LPI, prio=0xA0)
    its.map_event(1, 1, LPI + 1, prio=0x20)
    configure(m, 40, prio=0x40, edge=True)
    configure(m, 41, prio=0x40, edge=True)
    m.msi(0, device=1)
    m.irq_set(40, 1)
    m.irq_set(40, 0)
    assert [take(m) for _ in range(3)] == [40, LPI, 1023]
    m.irq_set(41, 1)
    m.irq_set(41, 0)
    m.msi(1, device=1)
    assert [take(m) for _ in range(3)] == [LPI + 1, 41, 1023]


def test_propbaser_below_14_bits_means_no_lpis(m):
    its = Its(m, cpus=0)
    its.enable_lpis(0, idbits=12)
    its.map_event(1, 0, LPI)
    m.msi(0, device=1)
    assert take(m) == 1023


def test_pending_table_is_read_at_enable_and_written_back_at_disable(m):
    its = Its(m, cpus=0)
    its.config(LPI + 9)
    m.write_memory(PEND + 1024 + 1, bytes([1 << 1]))  # LPI 8192 + 9 pending in memory
    its.enable_lpis(0)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == LPI + 9
    its.map_event(1, 0, LPI + 17)
    m.msi(0, device=1)
    assert ack(m) == LPI + 9
    eoi(m, LPI + 9)
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 1024, 3) == bytes([0, 0, 1 << 1])  # LPI 8192 + 17 still pending
    assert take(m) == 1023


def test_ptz_ignores_the_pending_table(m):
    its = Its(m, cpus=0)
    its.config(LPI + 9)
    m.write_memory(PEND + 1024 + 1, bytes([1 << 1]))
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), PEND | 1 << 62, size=8)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    assert take(m) == 1023


def test_a_two_level_device_table(m):
    its = Its(m, indirect=True)  # one 4 KiB level-1 page: 512 level-2 pages of 512 devices
    m.write_memory(L2, bytes(4096))
    m.write_memory(DEVT + 8 * 2, struct.pack("<Q", VALID | L2))  # devices 1024..1535
    its.map_event(1030, 2, LPI + 4)
    assert m.read_memory(L2 + 8 * 6, 8) != bytes(8)
    m.msi(2, device=1030)
    assert take(m) == LPI + 4
    its.send(mapd(5, ITT))  # its level-2 page is not valid: an error
    assert its.stalled()


def test_a_level_1_entry_without_valid_names_no_page_whatever_address_it_holds(m, caplog):
    """IHI0069 §5.2.1: a level-1 entry's Valid bit says whether its level-2 page exists; an address in an
    entry whose Valid is clear (a driver that unmapped the page) is not used: MAPD is out of range."""
    import logging

    caplog.set_level(logging.WARNING, logger="vmmpy")
    its = Its(m, indirect=True)
    m.write_memory(L2, bytes(4096))
    m.write_memory(DEVT + 8 * 2, struct.pack("<Q", L2))  # devices 1024..1535: page at L2, Valid clear
    its.send(mapd(1030, ITT))
    assert its.stalled()
    assert "DeviceID out of range" in caplog.text
    assert m.read_memory(L2, 4096) == bytes(4096)  # nothing written into the page


def test_a_64k_page_device_table(m):
    its = Its(m, page_size=2)
    m.write_memory(DEVT, bytes(0x10000))
    its.map_event(8191, 0, LPI)  # the last of 64 KiB / 8 entries
    m.msi(0, device=8191)
    assert take(m) == LPI
    its.send(mapd(8192, ITT))
    assert its.stalled()


def test_a_device_id_beyond_16_bits_is_refused_even_inside_the_device_table(m, caplog):
    """GITS_TYPER.Devbits says 16: a flat device table of 129 pages holds 66048 entries, yet DeviceID 65536 is
    out of range for MAPD (the queue stalls) and for an MSI (dropped), while 65535 works."""
    import logging

    caplog.set_level(logging.WARNING, logger="vmmpy")
    its = Its(m, dev_pages=129)
    its.config(LPI)
    its.send(mapd(65535, ITT), mapc(0, 0), mapti(65535, 0, LPI), ev(INV, 65535, 0), cmd(SYNC))
    assert not its.stalled()
    m.msi(0, device=65535)
    assert take(m) == LPI
    m.msi(0, device=65536)
    assert "MSI from DeviceID 65536, EventID 0 dropped: DeviceID out of range" in caplog.text
    its.send(mapd(65536, ITT))
    assert its.stalled()
    assert "command 0x08 at queue offset 0x000a0 (DeviceID 65536, EventID 7): DeviceID out of range" in caplog.text


# ---- command errors stall the queue ---------------------------------------------------------------------------

ERRORS = {
    "unknown command": cmd(0x02),
    "GICv4 VSYNC": cmd(0x25),
    "MAPD DeviceID beyond the table": mapd(512, ITT),  # one 4 KiB page: 512 devices
    "MAPD DeviceID far beyond the table": mapd(5000, ITT),  # not only the first one past its end
    "MAPD Size beyond 16 bits": mapd(1, ITT, size=16),
    "MAPC RDbase beyond the CPUs": mapc(0, 1),
    "MAPC ICID beyond the table": mapc(512, 0),
    "MAPC ICID far beyond the table": mapc(5000, 0),
    "MAPTI unmapped device": mapti(3, 0, LPI),
    "MAPTI EventID beyond the ITT": mapti(1, 256, LPI),  # Size 7: 256 events
    "MAPTI pINTID below 8192": mapti(1, 0, 1023),
    "MAPTI pINTID beyond 16 bits": mapti(1, 0, 1 << 16),
    "INT unmapped event": ev(INT, 1, 1),
    "INT unmapped collection": mapti(1, 2, LPI, icid=9) + ev(INT, 1, 2),
    "MOVI unmapped collection": cmd(MOVI, 1, 0, 9),
    "INVALL unmapped collection": cmd(INVALL, 0, 0, 9),
    "SYNC RDbase beyond the CPUs": cmd(SYNC, 0, 0, 3 << 16),
    "MOVALL RDbase2 beyond the CPUs": cmd(MOVALL, 0, 0, 0, 4 << 16),
}


@pytest.mark.parametrize("bad", list(ERRORS.values()), ids=list(ERRORS))
def test_a_command_error_stalls_the_queue_at_the_command(m, bad):
    its = Its(m)
    its.map_event(1, 0, LPI)
    ncmds = len(bad) // 32
    start = its.wr
    errors = guest_errors(m)
    its.send(*(bad[32 * i : 32 * i + 32] for i in range(ncmds)), ev(INT, 1, 0))
    assert its.stalled()
    assert its.creadr() & ~1 == start + 32 * (ncmds - 1)  # at the failing command
    assert guest_errors(m) == errors + 1
    assert take(m) == 1023  # the INT after it did not run
    its.send()  # a new CWRITER write without Retry: still stalled, the command not run again
    assert its.stalled()
    assert guest_errors(m) == errors + 1
    # remove the cause: overwrite the failing command with a SYNC, then Retry
    m.write_memory(CMDQ + start + 32 * (ncmds - 1), cmd(SYNC))
    m.mmio_write(GITS + GITS_CWRITER, its.wr | 1, size=8)
    assert not its.stalled()
    assert its.creadr() == its.wr
    assert take(m) == LPI  # the INT ran


def test_retry_runs_the_failing_command_again(m):
    its = Its(m)
    its.send(mapti(1, 0, LPI))  # device 1 not mapped
    assert its.stalled()
    m.mmio_write(GITS + GITS_CWRITER, its.wr | 1, size=8)
    assert its.stalled()
    assert guest_errors(m) == 2


def test_a_new_cbaser_restarts_a_stalled_queue(m):
    its = Its(m)
    its.send(cmd(0x02))
    assert its.stalled()
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ, size=8)
    assert m.mmio_read(GITS + GITS_CREADR, size=8) == 0
    m.mmio_write(GITS + GITS_CWRITER, 0, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    its.wr = 0
    its.map_event(1, 0, LPI)
    m.msi(0, device=1)
    assert take(m) == LPI


def test_a_queue_outside_ram_stalls(m):
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.mmio_write(GITS + GITS_CBASER, VALID | 0x1000_0000 | 0xFF, size=8)  # 1 MiB below RAM
    m.mmio_write(GITS + GITS_CWRITER, 0x40, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    assert its.stalled()
    assert its.creadr() == 1


def test_cwriter_beyond_the_queue_stalls(m):
    its = Its(m)
    m.mmio_write(GITS + GITS_CWRITER, 0x2000, size=8)  # the queue is 4 KiB
    assert its.stalled()


def test_tables_outside_ram_stall(m):
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    ram_end = RAM + 256 * 2**20
    m.mmio_write(GITS + GITS_BASER, VALID | (ram_end - 0x1000) | 1, size=8)  # 2 pages, the 2nd beyond RAM
    m.mmio_write(GITS + GITS_CTLR, 1)
    its.send(mapd(511, ITT))
    assert not its.stalled()
    its.send(mapd(512, ITT))
    assert its.stalled()


def test_an_itt_outside_ram_drops_the_msi(m):
    its = Its(m)
    its.send(mapd(1, 0x3000_0000), mapc(0, 0))  # an ITT below RAM
    assert not its.stalled()
    its.send(mapti(1, 0, LPI))
    assert its.stalled()
    m.msi(0, device=1)
    assert take(m) == 1023


def test_an_itt_address_uses_all_52_bits(m):
    its = Its(m)
    its.send(mapd(1, ITT | 1 << 48), mapc(0, 0))  # PA bit 48: far above RAM, not a wrapped address in it
    its.send(mapti(1, 0, LPI))
    assert its.stalled()


def test_msis_from_many_threads(m):
    import threading

    its = Its(m)
    for e in range(8):
        its.map_event(1, e, LPI + e)

    def fire(e):
        for _ in range(200):
            m.msi(e, device=1)

    threads = [threading.Thread(target=fire, args=(e,)) for e in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [take(m) for _ in range(9)] == [*(LPI + e for e in range(8)), 1023]  # each pending once


def test_an_msi_waits_while_another_thread_is_inside_the_gic(m):
    """vmm_msi takes the GIC's lock, as every register access does: while a thread is inside the GIC (its ITS
    command error being logged, the log handler blocked), an MSI from another thread waits, and is delivered
    once the first thread leaves."""
    import threading

    its = Its(m)
    its.map_event(1, 0, LPI)
    sender = threading.Thread(target=m.msi, args=(0,), kwargs={"device": 1})
    with a_thread_inside("unknown command", its.send, cmd(0x02)):  # an unknown command: logged under the lock
        sender.start()
        sender.join(0.5)
        waited = sender.is_alive()
    sender.join(10)
    assert waited, "the MSI went into the GIC while another thread was inside it"
    assert take(m) == LPI


GICD_ISENABLER1 = GICD + 0x104
GICR_SGI_ISENABLER0 = rd(0, 0x1_0100)
GICR_RD_WAKER = rd(0, 0x0014)

# every way into the GIC's lock, one entry point each: (name, the access)
GIC_ENTRIES = [
    ("gicd_read", lambda m: m.mmio_read(GICD_ISENABLER1)),
    ("gicd_write", lambda m: m.mmio_write(GICD_ISENABLER1, 1 << 8)),  # enables SPI 40
    ("gicr_sgi_read", lambda m: m.mmio_read(GICR_SGI_ISENABLER0)),
    ("gicr_sgi_write", lambda m: m.mmio_write(GICR_SGI_ISENABLER0, 1 << 5)),  # enables SGI 5
    ("gicr_rd_read", lambda m: m.mmio_read(GICR_RD_WAKER)),
    ("gicr_rd_write", lambda m: m.mmio_write(GICR_RD_WAKER, 0)),
    ("icc_read", lambda m: m.sysreg_read("ICC_RPR_EL1")),
    ("icc_write", lambda m: m.sysreg_write("ICC_AP1R0_EL1", 0)),
    ("irq_set", lambda m: m.irq_set(40, 1)),
    ("irq_line", lambda m: m.irq_line(0)),
    ("gits_read", lambda m: m.mmio_read(GITS + GITS_TYPER, size=8)),
    ("gits_write", lambda m: m.mmio_write(GITS + GITS_BASER + 16, 0, size=8)),  # BASER2: RAZ/WI
]


# the constant registers and the CPU interface's own ones, read without the lock
GIC_LOCK_FREE = [
    ("gicr_typer", lambda m: m.mmio_read(rd(0, 0x0008), size=8)),
    ("gicr_iidr", lambda m: m.mmio_read(rd(0, 0x0004))),
    ("gicr_pidr2", lambda m: m.mmio_read(rd(0, 0xFFE8))),
    ("gicd_typer", lambda m: m.mmio_read(GICD + 0x0004)),
    ("gicd_pidr2", lambda m: m.mmio_read(GICD + 0xFFE8)),
    ("icc_pmr", lambda m: m.sysreg_read("ICC_PMR_EL1")),
]


def test_every_gic_entry_point_waits_while_another_thread_is_inside_the_gic(m):
    """Each entry point (distributor, both redistributor frames, the CPU interface's locked registers, an input
    line, the IRQ line, the ITS registers) takes the GIC's lock: while a thread is inside the GIC (an ITS command
    error being logged, the log handler blocked), an access from each of a dozen other threads waits, and all
    complete once the first thread leaves. The identification registers and ICC_PMR_EL1 (read in every
    local_irq_save() of a pseudo-NMI Linux) are read without it: those complete meanwhile. (One entry point
    without the lock would also release the lock it did not take, letting others in: the message lists every
    access that did not wait.)"""
    import threading

    its = Its(m)
    others = [threading.Thread(target=access, args=(m,), name=name) for name, access in GIC_ENTRIES]
    with a_thread_inside("unknown command", its.send, cmd(0x02)):  # an unknown command: logged under the lock
        free = [threading.Thread(target=access, args=(m,), name=name) for name, access in GIC_LOCK_FREE]
        for t in free:
            t.start()
            t.join(10)
        waited_free = [t.name for t in free if t.is_alive()]
        for t in others:
            t.start()
        others[-1].join(0.3)
        went_in = [t.name for t in others if not t.is_alive()]
    for t in others:
        t.join(10)
    assert not went_in, f"went into the GIC while another thread was inside it: {went_in}"
    assert not waited_free, f"waited for the lock though they read constants or the CPU's own state: {waited_free}"
    assert m.mmio_read(GICD_ISENABLER1) & 1 << 8 and m.mmio_read(GICR_SGI_ISENABLER0) & 1 << 5
    assert m.mmio_read(GICD + 0x204) & 1 << 8  # GICD_ISPENDR1: SPI 40's input is high


# ---- snapshots ------------------------------------------------------------------------------------------------


def test_snapshot_keeps_the_its_and_pending_lpis(guest, tmp_path):
    path = tmp_path / "its.snap"
    with vmmpy.Machine(guest("hello"), cpus=2, its=True) as mach:
        mach.boot_info()  # prepared: snapshots need it
        unmask(mach, 1)
        its = Its(mach, cpus=2)
        its.map_event(1, 0, LPI + 3, cpu=1)
        its.map_event(1, 1, LPI + 4, cpu=1, prio=0x40)
        mach.msi(0, device=1)
        its.send(cmd(0x02))  # stalled, too
        mach.snapshot(path)
    with vmmpy.Machine.restore(path) as r:
        assert r.mmio_read(GITS + GITS_CREADR, size=8) == its.wr - 32 | 1
        assert r.mmio_read(rd(1, GICR_PROPBASER), size=8) == PROP | IDBITS
        assert r.mmio_read(GITS + GITS_BASER, size=8) & ~(0x7FF << 48) == VALID | DEVT
        assert r.irq_line(1)
        r.msi(1, device=1)  # translation through the restored tables; the configuration re-read
        assert [take(r, 1) for _ in range(3)] == [LPI + 4, LPI + 3, 1023]
        r.write_memory(CMDQ + its.wr - 32, cmd(SYNC))
        r.mmio_write(GITS + GITS_CWRITER, its.wr | 1, size=8)
        assert r.mmio_read(GITS + GITS_CREADR, size=8) == its.wr


def test_commands_wait_for_the_its_to_be_enabled_and_cbaser_valid(m):
    its = Its(m)
    m.mmio_write(GITS + GITS_CTLR, 0)
    its.config(LPI)
    its.send(mapd(1, ITT), mapc(0, 0), mapti(1, 0, LPI), cmd(INVALL, 0, 0, 0))
    assert its.creadr() == 0  # disabled: nothing consumed
    m.mmio_write(GITS + GITS_CBASER, CMDQ, size=8)  # CBASER not valid
    m.mmio_write(GITS + GITS_CTLR, 1)
    m.mmio_write(GITS + GITS_CWRITER, its.wr, size=8)
    assert its.creadr() == 0
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ, size=8)
    m.mmio_write(GITS + GITS_CWRITER, its.wr, size=8)
    assert its.creadr() == 0
    m.mmio_write(GITS + GITS_CTLR, 1)  # enabling runs what was queued
    assert its.creadr() == its.wr
    m.msi(0, device=1)
    assert take(m) == LPI


def test_command_errors_are_named_in_the_log(m, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="vmmpy")
    its = Its(m)
    its.send(mapd(1, ITT), mapti(1, 0, LPI, icid=7), ev(INT, 1, 0))
    assert "command 0x03 at queue offset 0x00040 (DeviceID 1, EventID 0): collection not mapped" in caplog.text


def test_inv_on_eight_cpus(guest):
    """INV and INVALL reach every redistributor: with 8 vCPUs, the last of the array (ASan builds check the bound)."""
    with vmmpy.Machine(cpus=8, its=True) as mach:
        unmask(mach, 7)
        its = Its(mach, cpus=8)
        its.map_event(1, 0, LPI + 1, cpu=7)
        mach.msi(0, device=1)
        assert take(mach, 7) == LPI + 1
        assert guest_errors(mach) == 0


def test_an_sgi_broadcast_on_eight_cpus_reaches_the_seven_others_only(guest):
    """ICC_SGI0R_EL1 with IRM from CPU 0 of 8 (SGIs reset to group 0): SGI 3 becomes pending on CPUs 1-7 and
    nowhere else: not on the sender, and nothing past the last CPU (the ITS registers, which follow the CPUs in
    the model, keep their values)."""
    with vmmpy.Machine(cpus=8, its=True) as mach:
        before = [mach.mmio_read(GITS + off, size=8) for off in (GITS_CBASER, GITS_CWRITER, GITS_CREADR)]
        mach.sysreg_write("ICC_SGI0R_EL1", 1 << 40 | 3 << 24, 0)
        pending = [bool(mach.mmio_read(rd(c, 0x1_0200)) & 1 << 3) for c in range(8)]  # GICR_ISPENDR0
        assert pending == [False] + [True] * 7
        assert [mach.mmio_read(GITS + off, size=8) for off in (GITS_CBASER, GITS_CWRITER, GITS_CREADR)] == before
        assert guest_errors(mach) == 0


def _its_snapshot(guest, tmp_path):
    path = tmp_path / "its.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()
        Its(mach)
        mach.snapshot(path)
    return bytearray(path.read_bytes())


@pytest.mark.parametrize(
    ("what", "value", "flip", "message"),
    [
        ("BASER0", VALID | DEVT | 1 << 56 | 7 << 48, 3 << 56, "GITS_BASER0 0x"),  # its Type changed to 2
        ("CBASER", VALID | CMDQ, 1 << 62, "ITS command queue registers out of range"),  # a reserved bit set
        # a reserved bit in one of the two, the other one valid
        ("PROPBASER", PROP | IDBITS, 1 << 5, "redistributor 0: GICR_PROPBASER/PENDBASER have reserved bits"),
        ("PENDBASER", PEND, 1 << 0, "redistributor 0: GICR_PROPBASER/PENDBASER have reserved bits"),
    ],
)
def test_a_snapshot_with_impossible_its_registers_is_refused(guest, tmp_path, what, value, flip, message):
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    data = _its_snapshot(guest, tmp_path)
    ((off, plen),) = [(o, n) for name, o, n in sections(bytes(data)) if name == "irqchip"]
    at = bytes(data[off : off + plen]).find(struct.pack("<Q", value))
    assert at >= 0
    struct.pack_into("<Q", data, off + at, value ^ flip)
    with_section_crc(data, off, plen)
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match=message):
        vmmpy.Machine.restore(p).close()


@pytest.mark.parametrize("cpus", [1, 8])
def test_a_snapshot_holds_one_lpi_record_per_redistributor(guest, tmp_path, cpus):
    """With the ITS the irqchip section grows by one LPI record per redistributor (GICR_PROPBASER and
    GICR_PENDBASER, u64 each, and EnableLPIs, one byte; LPIs off, so no pending bits) and the ITS registers
    (two flags, five u64, the last command error as a u64): not by a record for a redistributor past the
    last (with 8 vCPUs, one read from beyond the array). The last redistributor's record is restored."""
    from .test_snapshot import sections

    size = {}
    for its in (False, True):
        path = tmp_path / f"its{int(its)}.snap"
        with vmmpy.Machine(guest("hello"), cpus=cpus, its=its) as mach:
            mach.boot_info()
            if its:
                mach.mmio_write(rd(cpus - 1, GICR_PROPBASER), PROP | IDBITS, size=8)
            mach.snapshot(path)
        ((plen,),) = [(n,) for name, _, n in sections(path.read_bytes()) if name == "irqchip"]
        size[its] = plen
    assert size[True] - size[False] == cpus * (8 + 8 + 1) + (1 + 1 + 5 * 8 + 8)
    with vmmpy.Machine.restore(path) as r:
        assert r.mmio_read(rd(cpus - 1, GICR_PROPBASER), size=8) == PROP | IDBITS


def test_writes_to_gits_baser2_to_7_change_no_saved_state(guest, tmp_path):
    """GITS_BASER2..7 are unimplemented (RAZ/WI): writing all ones to them leaves the irqchip section of a snapshot
    byte for byte as without the writes (the model keeps two BASERs; a third would land on its other state, here
    the last command error, and the restore would refuse it), and the snapshot restores."""
    from .test_snapshot import sections

    payload = {}
    for wrote in (False, True):
        path = tmp_path / f"baser{int(wrote)}.snap"
        with vmmpy.Machine(guest("hello"), its=True) as mach:
            mach.boot_info()
            for n in range(2, 8) if wrote else ():
                mach.mmio_write(GITS + GITS_BASER + 8 * n, 0xFFFF_FFFF_FFFF_FFFF, size=8)
            mach.snapshot(path)
        data = path.read_bytes()
        ((off, plen),) = [(o, n) for name, o, n in sections(data) if name == "irqchip"]
        payload[wrote] = data[off : off + plen]
    assert payload[True] == payload[False]
    with vmmpy.Machine.restore(path) as r:
        assert r.mmio_read(GITS + GITS_BASER + 16, size=8) == 0


def test_a_long_queue_runs_in_batches_as_creadr_is_polled(m):
    """A CWRITER write runs 256 commands; each GITS_CREADR (or GITS_CTLR) read runs the next 256."""
    its = Its(m)
    its.map_event(1, 0, LPI)
    m.mmio_write(GITS + GITS_CTLR, 0)
    m.write_memory(CMDQ, bytes(0x10000))
    m.mmio_write(GITS + GITS_CBASER, VALID | CMDQ | 15, size=8)  # 16 pages: 2048 commands
    m.mmio_write(GITS + GITS_CWRITER, 0, size=8)
    m.mmio_write(GITS + GITS_CTLR, 1)
    m.write_memory(CMDQ, cmd(SYNC) * 1000 + ev(INT, 1, 0))
    m.mmio_write(GITS + GITS_CWRITER, 1001 * 32, size=8)
    assert m.mmio_read(GITS + GITS_CTLR) == 1  # busy: not Quiescent (this read ran commands 256-511)
    assert take(m) == 1023
    for reg, size in [(GITS_TYPER, 8), (GITS_CWRITER, 8), (GITS_CBASER, 8), (GITS_BASER, 8), (GITS_IIDR, 4)]:
        m.mmio_read(GITS + reg, size=size)  # reads of the other registers run nothing
    polls = [m.mmio_read(GITS + GITS_CREADR, size=8) for _ in range(4)]
    assert polls == [768 * 32, 1001 * 32, 1001 * 32, 1001 * 32]
    assert m.mmio_read(GITS + GITS_CTLR) == 1 << 31 | 1
    assert take(m) == LPI


# ---- the LPI side's edges (mutation testing survivors) -------------------------------------------------------------


def test_nothing_is_pending_before_lpis_are_enabled(m):
    """A redistributor whose LPIs were never enabled has no LPI to offer: 1023 in both groups' registers, not a
    stale INTID 0 (which, SGI 0 being group 0 after reset, would show in the group 0 ones)."""
    assert [m.sysreg_read(f"ICC_HPPIR{g}_EL1") for g in (0, 1)] == [1023, 1023]
    assert [m.sysreg_read(f"ICC_IAR{g}_EL1") for g in (0, 1)] == [1023, 1023]


def test_the_pending_table_is_read_in_every_byte_of_a_word(m):
    """EnableLPIs reads the pending table little-endian (bit n of byte k is LPI 8192 + 8k + n, §5.1.2): the first
    and last bit of each byte of the first 32-bit word, each with its own priority, come out in priority order."""
    its = Its(m, cpus=0)
    lpis = [LPI + n for n in (0, 7, 8, 15, 16, 23, 24, 31)]
    for i, intid in enumerate(lpis):
        its.config(intid, prio=0x10 + 0x10 * i)
    m.write_memory(PEND + 1024, bytes([0x81, 0x81, 0x81, 0x81]))
    its.enable_lpis(0)
    assert [take(m) for _ in range(len(lpis) + 1)] == [*lpis, 1023]


def test_the_pending_table_is_read_byte_for_byte_to_the_last_lpi(m):
    """Each byte of a pending-table word is its own eight LPIs (bytes 0x01, 0x80, 0x02, 0x40: LPIs 8192 + 0, 15,
    17 and 30, no byte read in another's place), and the table is read to its end: with 16 ID bits the last
    LPI, 65535, is bit 7 of byte 7167 after the first 1 KiB."""
    its = Its(m, cpus=0)
    lpis = [LPI + 0, LPI + 15, LPI + 17, LPI + 30, 65535]
    for i, intid in enumerate(lpis):
        its.config(intid, prio=0x10 + 0x10 * i)
    m.write_memory(PEND + 1024, bytes([0x01, 0x80, 0x02, 0x40]))
    m.write_memory(PEND + 1024 + (65535 - LPI) // 8, bytes([0x80]))
    its.enable_lpis(0)
    assert [take(m) for _ in range(len(lpis) + 1)] == [*lpis, 1023]


def test_disabling_lpis_writes_the_pending_table_back_and_not_a_byte_past_it(m):
    """With 16 ID bits the pending table is 8 KiB (its first 1 KiB for INTIDs below 8192): EnableLPIs 1 -> 0
    writes LPI 65504 (bit 0 of the last word) back into byte 8188, and the guest's byte after the table keeps
    its value."""
    its = Its(m, cpus=0)
    its.config(65504)
    m.write_memory(PEND + 8188, bytes([0x01]))
    m.write_memory(PEND + 8192, bytes([0xAA]))
    its.enable_lpis(0)
    m.write_memory(PEND + 8188, bytes(4))
    m.mmio_write(rd(0, GICR_CTLR), 0)
    assert m.read_memory(PEND + 8188, 5) == bytes([0x01, 0, 0, 0, 0xAA])


def test_an_msi_from_a_device_whose_entry_is_not_valid_is_dropped_as_unmapped(m, caplog):
    """A device table entry without Valid (MAPD with V = 0 after a mapping) means no device: the MSI is dropped
    with that reason (not translated through the stale ITT address)."""
    import logging

    caplog.set_level(logging.WARNING, logger="vmmpy")
    its = Its(m)
    its.map_event(1, 0, LPI)
    its.send(mapd(1, ITT, valid=False))
    m.msi(0, device=1)
    assert "MSI from DeviceID 1, EventID 0 dropped: device not mapped" in caplog.text
    assert take(m) == 1023


def test_a_64k_page_table_takes_pa_bits_51_48_from_baser_bits_15_12(m):
    """With 64 KiB pages GITS_BASER bits [15:12] are PA [51:48]: a device table whose bit 12 is set lies 2^48
    above DEVT, outside RAM, so a MAPD there is an error that stalls the queue."""
    its = Its(m, page_size=2)
    m.mmio_write(GITS + GITS_CTLR, 0)  # GITS_BASER is writable while the ITS is disabled
    m.mmio_write(GITS + GITS_BASER, VALID | DEVT | 1 << 12 | 2 << 8, size=8)
    assert m.mmio_read(GITS + GITS_BASER, size=8) & 0xFFFF_F000 == DEVT | 1 << 12
    m.mmio_write(GITS + GITS_CTLR, 1)
    its.send(mapd(1, ITT))
    assert its.stalled()


def test_a_configuration_table_outside_ram_disables_every_lpi(m):
    """PROPBASER outside RAM: EnableLPIs reads no configuration, so every LPI is disabled (a guest error), and a
    pending one stays pending but is not signalled; an INV of one LPI (its byte not in RAM either) disables it."""
    its = Its(m, cpus=0)
    m.write_memory(PEND + 1024 + 1, bytes([1 << 1]))  # LPI 8192 + 9 pending in memory
    before = guest_errors(m)
    its.enable_lpis(0, prop=0x1_0000_0000)  # 4 GiB: beyond the 256 MiB of RAM at 1 GiB
    assert guest_errors(m) == before + 1
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023
    its.map_event(1, 0, LPI + 3)  # its INV reads LPI 8195's byte at 4 GiB + 3
    m.msi(0, device=1)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 1023  # (HPPIR ignores the PMR: any priority would show)
    assert take(m) == 1023


def test_ptz_starts_with_no_lpi_pending_at_all(m):
    """PTZ: the pending table is taken as zero. With two LPIs enabled and one made pending, only that one is
    offered, then none (the other, of higher priority, was never pending)."""
    its = Its(m, cpus=0)
    its.config(LPI + 1, prio=0x40)
    m.write_memory(PEND + 1024, b"\xff" * 8)  # ignored under PTZ
    m.mmio_write(rd(0, GICR_PROPBASER), PROP | IDBITS, size=8)
    m.mmio_write(rd(0, GICR_PENDBASER), PEND | 1 << 62, size=8)
    m.mmio_write(rd(0, GICR_CTLR), 1)
    its.map_event(1, 0, LPI, prio=0x80)
    m.msi(0, device=1)
    assert [take(m) for _ in range(2)] == [LPI, 1023]


def test_a_snapshot_after_lpis_were_disabled_restores(guest, tmp_path):
    """EnableLPIs 1 then 0: the redistributor's state is saved without its pending bits (they went to the
    pending table in RAM), and the restored VM reads them from there at the next EnableLPIs."""
    path = tmp_path / "lpis-off.snap"
    with vmmpy.Machine(guest("hello"), its=True) as mach:
        mach.boot_info()  # prepared: snapshots need it
        unmask(mach)
        its = Its(mach)
        its.map_event(1, 0, LPI + 5)
        mach.msi(0, device=1)
        mach.mmio_write(rd(0, GICR_CTLR), 0)
        assert mach.read_memory(PEND + 1024, 1) == bytes([1 << 5])
        mach.snapshot(path)
    with vmmpy.Machine.restore(path) as r:
        assert r.mmio_read(rd(0, GICR_CTLR)) == 0
        assert r.mmio_read(rd(0, GICR_PROPBASER), size=8) == PROP | IDBITS
        assert r.sysreg_read("ICC_HPPIR1_EL1") == 1023
        r.mmio_write(rd(0, GICR_CTLR), 1)
        assert [take(r) for _ in range(2)] == [LPI + 5, 1023]


def test_the_its_frame_ends_at_64_kib(m):
    """The ID registers are the control frame's last 48 bytes (0xffd0-0xffff); 0x10000 is the translation frame's
    start, where only GITS_TRANSLATER (0x10040) exists: RAZ with a guest error."""
    assert m.mmio_read(GITS + 0xFFE8) == 0x3B  # GITS_PIDR2: ArchRev 3 (GICv3), JEDEC, DES_1 3
    before = guest_errors(m)
    assert m.mmio_read(GITS + 0x1_0000) == 0
    assert guest_errors(m) == before + 1


def test_a_bad_width_its_access_reads_as_zero(m):
    """GITS_CTLR takes 32-bit accesses only: a 16- or 64-bit read is RAZ and a 64-bit write WI (with a guest error
    each), whatever the register holds."""
    Its(m)  # GITS_CTLR.Enabled = 1
    assert m.mmio_read(GITS + GITS_CTLR) & 1
    before = guest_errors(m)
    assert m.mmio_read(GITS + GITS_CTLR, size=2) == 0
    assert guest_errors(m) == before + 1
    # nor 64-bit ones (only TYPER and CBASER..BASER7 take them): read as zero, written ignored
    assert m.mmio_read(GITS + GITS_CTLR, size=8) == 0
    m.mmio_write(GITS + GITS_CTLR, 0, size=8)
    assert m.mmio_read(GITS + GITS_CTLR) & 1
    assert guest_errors(m) == before + 3


def test_only_typer_propbaser_and_pendbaser_take_64_bit_accesses(m):
    """With LPIs the redistributor has three 64-bit registers (TYPER, PROPBASER, PENDBASER); a 64-bit access to
    any other (GICR_CTLR, before them in the map; ISENABLER0 in the SGI frame, past them) is RAZ/WI with a guest
    error."""
    before = guest_errors(m)
    assert m.mmio_read(rd(0, GICR_CTLR), size=8) == 0
    assert guest_errors(m) == before + 1
    isenabler0 = rd(0, 0x1_0100)
    m.mmio_write(isenabler0, 1 << 3)
    assert m.mmio_read(isenabler0) & 1 << 3
    before = guest_errors(m)
    assert m.mmio_read(isenabler0, size=8) == 0
    assert guest_errors(m) == before + 1
    assert m.mmio_read(rd(0, GICR_PROPBASER), size=8) == 0  # 64-bit and in place: no guest error
    assert guest_errors(m) == before + 1


@pytest.mark.vmmpy_no_artifacts  # the records of ~30 machines would be memory kept
def test_closing_a_machine_frees_every_redistributors_lpi_tables():
    """A two-CPU machine whose redistributors both enable LPIs (each then holds a 56 KiB configuration copy
    and a 7 KiB pending bitmap), made and closed over and over, leaves no memory behind."""

    def make():
        with vmmpy.Machine(cpus=2, its=True) as m:
            for cpu in (0, 1):
                m.mmio_write(rd(cpu, GICR_PROPBASER), PROP | IDBITS, size=8)
                m.mmio_write(rd(cpu, GICR_PENDBASER), PEND + cpu * 0x1_0000, size=8)
                m.mmio_write(rd(cpu, GICR_CTLR), 1)
                assert m.mmio_read(rd(cpu, GICR_CTLR)) & 1

    growth = heap_growth(make)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 64, f"{growth:.0f} bytes kept per machine"


# calloc of FAIL_CALLOC_SIZE bytes called from libvmm's extension fails; every other one is glibc's
FAIL_CALLOC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_calloc(size_t, size_t);
void *calloc(size_t n, size_t size)
{
    static size_t fail;
    if (!fail) {
        const char *e = getenv("FAIL_CALLOC_SIZE");
        fail = e ? strtoul(e, NULL, 0) : (size_t)-1;
    }
    Dl_info di;
    if (n * size == fail && dladdr(__builtin_return_address(0), &di) && di.dli_fname && strstr(di.dli_fname, "_vmm"))
        return NULL;
    return __libc_calloc(n, size);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
@pytest.mark.parametrize("size", [65536 - LPI, (65536 - LPI) // 8], ids=["configuration", "pending"])
def test_lpi_tables_that_cannot_be_allocated_leave_lpis_off_at_every_attempt(tmp_path, size):
    """The 56 KiB configuration copy and the 7 KiB pending bitmap are allocated at the first EnableLPIs: when
    either fails, LPIs stay off (EnableLPIs reads 0), and a second attempt fails the same way instead of using
    what the first freed."""
    script = (
        "import vmmpy\n"
        "with vmmpy.Machine(its=True) as m:\n"
        f"    m.mmio_write({rd(0, GICR_PROPBASER)}, {PROP | IDBITS}, size=8)\n"
        f"    m.mmio_write({rd(0, GICR_PENDBASER)}, {PEND}, size=8)\n"
        "    for _ in range(2):\n"
        f"        m.mmio_write({rd(0, GICR_CTLR)}, 1)\n"
        f"        print(m.mmio_read({rd(0, GICR_CTLR)}) & 1)\n"
    )
    r = run_with_shim(tmp_path, FAIL_CALLOC_C, script, FAIL_CALLOC_SIZE=str(size))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]
