"""Tier 1: the GICv3 model's edges (Arm IHI0069), through MMIO and the ICC_* system registers.

test_gic.py covers the common paths; these pin the corners a changed comparison or a lost mask would move: in
the CPU interface (§12.2) an EOI's INTID range, the priority drop of priority 0, which group each of a register
pair reads and writes, the SGI target fields and writes that must be ignored; in the distributor (§12.9) where
each access width ends.
"""

from __future__ import annotations

import logging

import pytest

import vmmpy
from tests import test_gic
from tests.test_gic import (
    CBPR,
    EOIMODE,
    GICD,
    GICD_IROUTER,
    GICR_CTLR,
    GICR_WAKER,
    ICFGR,
    IDLE,
    IGROUPR,
    IPRIORITYR,
    ISACTIVER,
    ISENABLER,
    ISPENDR,
    SPURIOUS,
    WAKER_PROCESSOR_SLEEP,
    configure,
    guest_errors,
    is_set,
    pulse,
    rd,
    sgi,
    unmask,
)

LPI_END = 1 << 16  # GICD_TYPER.IDbits = 15: INTIDs below 2^16 (§12.9.38)


def sgir(intid: int, targets: int, *, rs: int = 0, aff1: int = 0, irm: bool = False) -> int:
    """An ICC_SGI{0,1}R_EL1 value (§12.2.21): TargetList, Aff1, INTID, IRM, RS."""
    return targets | aff1 << 16 | intid << 24 | int(irm) << 40 | rs << 44


m = test_gic.m  # a 1-vCPU machine


@pytest.fixture
def m2():
    with vmmpy.Machine(cpus=2) as mach:
        yield mach


def group_1_sgi(m, intid: int) -> None:
    """Make SGI `intid` Group 1 on both vCPUs (SGIs reset to Group 0, §12.11)."""
    for cpu in (0, 1):
        configure(m, intid, group=1, cpu=cpu, edge=True)


def activate(m, intid: int, prio: int) -> None:
    """Make `intid` (an edge SPI of Group 1) active at `prio` through ICC_IAR1_EL1."""
    configure(m, intid, prio=prio, edge=True)
    pulse(m, intid)
    assert m.sysreg_read("ICC_IAR1_EL1") == intid


# ---- ICC_EOIR{0,1}_EL1 (§12.2.9, §12.2.10) ----------------------------------------------------------------------


@pytest.mark.parametrize("intid", [LPI_END, LPI_END + 1, 0xFF_FFFF])
def test_an_eoi_past_the_last_lpi_intid_drops_nothing_and_is_a_guest_error(m, caplog, intid):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    unmask(m)
    activate(m, 40, 0x80)
    before = guest_errors(m)
    m.sysreg_write("ICC_EOIR1_EL1", intid)
    assert guest_errors(m) == before + 1
    assert f"EOI of unimplemented INTID {intid}: ignored" in caplog.text
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80 and is_set(m, ISACTIVER, 40)
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE


@pytest.mark.parametrize("intid", [1020, 1023, 1024, 8191])
def test_an_eoi_of_a_special_or_reserved_intid_is_ignored_without_a_guest_error(m, intid):
    """§2.2.1: 1020-1023 are special and 1024-8191 reserved; an EOI of one changes nothing."""
    unmask(m)
    activate(m, 40, 0x80)
    before = guest_errors(m)
    m.sysreg_write("ICC_EOIR1_EL1", intid)
    assert guest_errors(m) == before
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80 and is_set(m, ISACTIVER, 40)


def test_the_priority_drop_of_priority_0_leaves_the_preempted_priority_running(m):
    """ICC_AP1R0_EL1 bit n is priority n << 3 (5 bits): the drop clears bit 0 only, not the preempted bit 16."""
    unmask(m)
    activate(m, 40, 0x80)
    activate(m, 41, 0x00)
    assert m.sysreg_read("ICC_AP1R0_EL1") == 1 << 16 | 1
    m.sysreg_write("ICC_EOIR1_EL1", 41)
    assert m.sysreg_read("ICC_AP1R0_EL1") == 1 << 16
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80


def test_a_priority_drop_with_eoimode_1_lets_a_waiting_interrupt_signal(m):
    """EOImode = 1: ICC_EOIR1_EL1 only drops the priority; a pending interrupt that could not preempt the
    running one now raises the line, although the first stays active until ICC_DIR_EL1."""
    configure(m, 40, prio=0x40, edge=True)
    configure(m, 41, prio=0x80, edge=True)
    unmask(m)
    m.sysreg_write("ICC_CTLR_EL1", EOIMODE)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    pulse(m, 41)
    assert not m.irq_line()
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.irq_line() and is_set(m, ISACTIVER, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 41


# ---- register pairs: each group's own copy (§12.2.1, §12.2.12, §12.2.13, §12.2.15) -------------------------------


def test_each_group_enable_reads_its_own_bit(m):
    m.sysreg_write("ICC_IGRPEN1_EL1", 1)
    assert (m.sysreg_read("ICC_IGRPEN0_EL1"), m.sysreg_read("ICC_IGRPEN1_EL1")) == (0, 1)
    m.sysreg_write("ICC_IGRPEN1_EL1", 0)
    m.sysreg_write("ICC_IGRPEN0_EL1", 1)
    assert (m.sysreg_read("ICC_IGRPEN0_EL1"), m.sysreg_read("ICC_IGRPEN1_EL1")) == (1, 0)


@pytest.mark.parametrize("reg", ["ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1"])
def test_a_group_enable_keeps_only_bit_0(m, reg):
    """§12.2.15/16: bit 0 is Enable, bits [63:1] are RES0; a write of 2 leaves the group disabled."""
    m.sysreg_write(reg, 2)
    assert m.sysreg_read(reg) == 0
    m.sysreg_write(reg, 3)
    assert m.sysreg_read(reg) == 1


def test_hppir0_does_not_show_a_group_1_interrupt(m):
    configure(m, 40, prio=0x80, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 40
    assert m.sysreg_read("ICC_HPPIR0_EL1") == SPURIOUS


def test_each_group_active_priorities_register_is_its_own(m):
    m.sysreg_write("ICC_AP0R0_EL1", 1 << 3)
    m.sysreg_write("ICC_AP1R0_EL1", 1 << 20)
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (1 << 3, 1 << 20)


# ---- writes that keep only their field, or are ignored (§12.2.5, §12.2.6, §12.2.20) -----------------------------


def test_binary_point_writes_keep_only_the_3_bit_field(m):
    m.sysreg_write("ICC_BPR0_EL1", 0x18 | 3)
    m.sysreg_write("ICC_BPR1_EL1", 0x18 | 5)
    assert (m.sysreg_read("ICC_BPR0_EL1"), m.sysreg_read("ICC_BPR1_EL1")) == (3, 5)


def test_bpr1_writes_while_cbpr_is_set_are_ignored(m):
    """§12.2.6: with ICC_CTLR_EL1.CBPR = 1 a write to ICC_BPR1_EL1 is ignored; the old value returns with CBPR 0."""
    m.sysreg_write("ICC_BPR1_EL1", 4)
    m.sysreg_write("ICC_CTLR_EL1", CBPR)
    m.sysreg_write("ICC_BPR1_EL1", 6)
    m.sysreg_write("ICC_CTLR_EL1", 0)
    assert m.sysreg_read("ICC_BPR1_EL1") == 4


@pytest.mark.parametrize(("enable", "sre"), [(1, 0), (0, 7)])
def test_an_sre_write_changes_no_group_enable(m, enable, sre):
    """ICC_SRE_EL1 is RAO/WI here: a write, whatever its value, leaves ICC_IGRPEN0_EL1 as it was."""
    m.sysreg_write("ICC_IGRPEN0_EL1", enable)
    m.sysreg_write("ICC_SRE_EL1", sre)
    assert m.sysreg_read("ICC_IGRPEN0_EL1") == enable
    assert m.sysreg_read("ICC_SRE_EL1") == 7


# ---- SGI generation (§12.2.21, §12.2.22) ------------------------------------------------------------------------


def test_an_sgi_for_range_selector_1_reaches_no_cpu_of_the_first_16(m2):
    """RS = 1 names Aff0 16-31: with TargetList bit 0 that is Aff0 16, which no vCPU has."""
    m = m2
    group_1_sgi(m, 3)
    m.sysreg_write("ICC_SGI1R_EL1", sgir(3, 0b11, rs=1))
    assert not is_set(m, ISPENDR, 3, cpu=0) and not is_set(m, ISPENDR, 3, cpu=1)
    m.sysreg_write("ICC_SGI1R_EL1", sgir(3, 0b10))
    assert not is_set(m, ISPENDR, 3, cpu=0) and is_set(m, ISPENDR, 3, cpu=1)


def test_targetlist_bit_15_does_not_leak_into_the_aff1_field(m2):
    """TargetList is bits [15:0] and Aff1 bits [23:16]: bit 15 set with Aff1 = 0 still targets cluster 0."""
    m = m2
    group_1_sgi(m, 5)
    m.sysreg_write("ICC_SGI1R_EL1", sgir(5, 1 << 15 | 1))
    assert is_set(m, ISPENDR, 5, cpu=0) and not is_set(m, ISPENDR, 5, cpu=1)


def test_an_sgi_for_another_aff1_cluster_reaches_nobody(m2):
    m = m2
    group_1_sgi(m, 5)
    m.sysreg_write("ICC_SGI1R_EL1", sgir(5, 0b11, aff1=1))
    assert not is_set(m, ISPENDR, 5, cpu=0) and not is_set(m, ISPENDR, 5, cpu=1)


@pytest.mark.parametrize(("reg", "group"), [("ICC_SGI0R_EL1", 0), ("ICC_ASGI1R_EL1", 0), ("ICC_SGI1R_EL1", 1)])
def test_an_sgi_reaches_only_targets_whose_copy_is_in_the_registers_group(m2, reg, group):
    """§12.2.21: the SGI becomes pending on a target only if that target's copy is configured for the group
    the register generates (SGI0R and ASGI1R: Group 0 with DS = 1; SGI1R: Group 1)."""
    m = m2
    configure(m, 7, group=group, cpu=0, edge=True)
    configure(m, 7, group=1 - group, cpu=1, edge=True)
    m.sysreg_write(reg, sgir(7, 0b11))
    assert is_set(m, ISPENDR, 7, cpu=0) and not is_set(m, ISPENDR, 7, cpu=1)
    m.mmio_write(0x080A_0000 + 0x1_0000 + 0x280, 1 << 7)  # GICR_ICPENDR0 of vCPU 0
    m.sysreg_write(reg, sgir(7, 0, irm=True), cpu=1)  # IRM: every CPU but the sender, vCPU 0
    assert is_set(m, ISPENDR, 7, cpu=0)


# ---- distributor access widths (§12.1.3) ------------------------------------------------------------------------


def test_gicd_icfgr_is_32_bit_only_from_its_first_byte(m, caplog):
    """GICD_IPRIORITYR and GICD_ITARGETSR take byte accesses; GICD_ICFGR, right after them, does not."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(GICD + ICFGR - 1, size=1) == 0  # ITARGETSR255: byte-accessible, RAZ/WI
    assert guest_errors(m) == 0
    assert m.mmio_read(GICD + ICFGR, size=1) == 0
    assert "distributor: 1-byte read at offset 0x0c00: unsupported access size" in caplog.text
    assert guest_errors(m) == 1


def test_a_64_bit_access_to_irouter0_is_refused_as_reserved_not_for_its_size(m, caplog):
    """GICD_IROUTER<n> for n < 32 is reserved, but the IROUTER range takes 64-bit accesses from its start."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(GICD + GICD_IROUTER, size=8) == 0
    assert "distributor: 8-byte read at reserved or read-only offset 0x6000" in caplog.text
    assert "unsupported access size" not in caplog.text


# ---- redistributor (§12.10, §12.11) ------------------------------------------------------------------------------


def test_sgi_frame_writes_that_land_are_no_guest_error(m2):
    """IGROUPR0, ICFGR1 (the PPIs' configuration) and IPRIORITYR writes to a redistributor are implemented
    registers: none is logged as a reserved offset."""
    m2.mmio_write(sgi(1, IGROUPR), 0xFFFF_FFFF)
    m2.mmio_write(sgi(1, ICFGR + 4), 0xAAAA_0000)
    m2.mmio_write(sgi(1, IPRIORITYR + 28), 0x80, size=1)
    assert guest_errors(m2) == 0
    assert m2.mmio_read(sgi(1, IGROUPR)) == 0xFFFF_FFFF
    assert m2.mmio_read(sgi(1, ICFGR + 4)) == 0xAAAA_0000


def test_an_enable_written_to_the_second_redistributor_raises_that_cpus_line(m2):
    """A write to vCPU 1's SGI frame re-evaluates vCPU 1: a pending PPI it enables there raises its line."""
    configure(m2, 27, cpu=1, enable=False)
    unmask(m2, cpu=1)
    m2.irq_set(27, 1, 1)
    assert not m2.irq_line(1)
    m2.mmio_write(sgi(1, ISENABLER), 1 << 27)
    assert m2.irq_line(1) and not m2.irq_line(0)


@pytest.mark.parametrize("off", [IGROUPR, IPRIORITYR + 32])
def test_byte_access_in_the_sgi_frame_is_for_ipriorityr_only(m, caplog, off):
    """§12.1.3: of the SGI frame, only GICR_IPRIORITYR<n> (bytes 0x400-0x41f) takes byte accesses."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.mmio_write(sgi(0, IGROUPR), 0xFFFF_FFFF)
    assert m.mmio_read(sgi(0, off), size=1) == 0
    assert f"redistributor: 1-byte read at offset 0x{0x10000 + off:04x}: unsupported access size" in caplog.text


def test_a_gicr_ctlr_write_leaves_waker_alone(m):
    """Without LPIs GICR_CTLR is RAZ/WI (EnableLPIs and the rest): a write of ProcessorSleep's bit there is not
    a GICR_WAKER write."""
    m.mmio_write(rd(0, GICR_WAKER), 0)
    m.mmio_write(rd(0, GICR_CTLR), WAKER_PROCESSOR_SLEEP)
    assert m.mmio_read(rd(0, GICR_WAKER)) == 0
    assert m.mmio_read(rd(0, GICR_CTLR)) == 0


def test_redistributor_guest_errors_name_the_direction(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(rd(0, 0x0100)) == 0  # reserved in RD_base
    m.mmio_write(rd(0, GICR_CTLR), 0, size=1)  # GICR_CTLR is 32-bit only
    assert "redistributor: 4-byte read at reserved or read-only offset 0x0100" in caplog.text
    assert "redistributor: 1-byte write at offset 0x0000: unsupported access size" in caplog.text


def test_ipriorityr_past_the_last_spi_reads_zero_whatever_the_routing_holds(m):
    """INTID 128 is the first unimplemented one (GICD_TYPER.ITLinesNumber = 3): its priority byte is RAZ/WI,
    also with the first SPI's GICD_IROUTER (the state stored after the priorities) non-zero."""
    m.mmio_write(GICD + GICD_IROUTER + 8 * 32, 0x55, size=8)
    m.mmio_write(GICD + IPRIORITYR + 128, 0xFF, size=1)
    assert m.mmio_read(GICD + IPRIORITYR + 128, size=1) == 0
    assert m.mmio_read(GICD + IPRIORITYR + 128) == 0
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 32, size=8) == 0x55


def test_the_last_icfgr_configures_spis_112_to_127(m):
    """GICD_ICFGR7 (0xc1c) holds INTIDs 112-127, two bits each: SPI 120's edge bit is bit 17."""
    configure(m, 120, edge=True)
    assert m.mmio_read(GICD + ICFGR + 28) == 2 << 16
    assert m.mmio_read(GICD + ICFGR + 24) == 0


@pytest.mark.parametrize(("off", "reserved"), [(0xD7C, False), (0xD80, True), (0xDFC, True), (0xE00, False)])
def test_igrpmodr_and_nsacr_are_raz_wi_and_the_gap_between_them_is_reserved(m, off, reserved):
    """GICD_IGRPMODR<n> (0xd00-0xd7c) and GICD_NSACR<n> (0xe00-0xefc) are RAZ/WI with DS = 1; 0xd80-0xdfc is
    reserved (a guest error)."""
    assert m.mmio_read(GICD + off) == 0
    assert guest_errors(m) == int(reserved)


def test_the_word_after_the_last_irouter_is_reserved(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(GICD + 0x7FDC) == 0  # the upper half of GICD_IROUTER1019
    assert guest_errors(m) == 0
    assert m.mmio_read(GICD + 0x7FE0) == 0
    assert "distributor: 4-byte read at reserved or read-only offset 0x7fe0" in caplog.text


def test_irouter_of_intid_31_and_128_read_zero_whatever_lies_around_them(m):
    """GICD_IROUTER<n> exists for the SPIs only (n = 32-127 implemented, §12.9.22): n = 31 is reserved and n = 128
    unimplemented (RAZ/WI). Neither shows the SPI priorities stored before the routing table or the CPU
    interface state stored after it."""
    for intid in range(88, 96):
        configure(m, intid, prio=0x80)
    m.mmio_write(sgi(0, IGROUPR), 0xFFFF_FFFF)
    m.mmio_write(sgi(0, ISENABLER), 0xFFFF_FFFF)
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 31, size=8) == 0
    assert guest_errors(m) == 1  # reserved
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 128, size=8) == 0
    assert guest_errors(m) == 1


@pytest.mark.parametrize(("off", "reserved"), [(0xD80, True), (0xE00, False), (0xF2C, False), (0xF30, True)])
def test_writes_around_the_raz_wi_ranges(m, caplog, off, reserved):
    """Writes to GICD_IGRPMODR/NSACR (DS = 1) and GICD_CPENDSGIR/SPENDSGIR (ARE = 1) are ignored silently; the
    reserved words just past them are ignored and logged, as writes."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.mmio_write(GICD + off, 0xFFFF_FFFF)
    assert guest_errors(m) == int(reserved)
    assert (f"distributor: 4-byte write at reserved or read-only offset 0x{off:04x}" in caplog.text) == reserved


def test_irouter_writes_outside_the_spis_change_nothing_around_them(m, caplog):
    """A 64-bit write to GICD_IROUTER31 (reserved) or GICD_IROUTER128 (unimplemented, RAZ/WI) or the word after
    the last IROUTER (reserved) stores nothing: not into the SPI priorities stored before the routing table,
    nor the CPU interface state after it."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    for intid in range(88, 96):
        configure(m, intid, prio=0x80, enable=False)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 31, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 128, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    m.mmio_write(GICD + 0x7FE0, 0xFFFF_FFFF)
    assert [m.mmio_read(GICD + IPRIORITYR + i, size=1) for i in range(88, 96)] == [0x80] * 8
    assert m.mmio_read(sgi(0, IGROUPR)) == 0 and m.mmio_read(sgi(0, ISENABLER)) == 0  # vCPU 0 at reset
    assert guest_errors(m) == 2  # IROUTER31 and 0x7fe0; IROUTER128 is RAZ/WI
    assert "distributor: 4-byte write at reserved or read-only offset 0x7fe0" in caplog.text


def test_a_bad_width_write_to_the_distributor_is_logged_as_a_write(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.mmio_write(GICD, 0, size=1)
    assert "distributor: 1-byte write at offset 0x0000: unsupported access size" in caplog.text


def test_an_spi_reconfigured_from_level_to_edge_while_its_input_is_high_stops_signalling(m):
    """The model re-evaluates every CPU after a GICD_ICFGR write: a level SPI held pending by its input is, as an
    edge one, pending only after a new rising edge (§4.1.1), so the line drops. (Changing an enabled
    interrupt's configuration is UNPREDICTABLE in the architecture; this is the model's answer.)"""
    configure(m, 40)
    unmask(m)
    m.irq_set(40, 1)
    assert m.irq_line()
    m.mmio_write(GICD + ICFGR + 8, 2 << 16)  # ICFGR2: INTIDs 32-47, INTID 40 edge
    assert not m.irq_line()


@pytest.mark.parametrize(
    ("reg", "val", "read"), [("ICC_PMR_EL1", 1020, 0xF8), ("ICC_BPR1_EL1", 1020, 4), ("ICC_IGRPEN1_EL1", 1021, 1)]
)
def test_a_write_that_looks_like_a_special_intid_is_still_a_write(m, reg, val, read):
    """Only ICC_EOIR{0,1}_EL1 writes of INTIDs 1020-8191 are skipped early: any other register written with such
    a value takes it (PMR keeps the 5 priority bits of 1020's low byte, 0xf8; BPR1 bits [2:0], 4; IGRPEN1 bit 0 of
    1021, 1). PMR's encoding is below EOIR0's and BPR1's and IGRPEN1's above EOIR1's."""
    m.sysreg_write(reg, val)
    assert m.sysreg_read(reg) == read


def test_a_refused_sysreg_read_leaves_the_callers_value_alone(m):
    """vmm_sysreg_read of a write-only ICC register (ICC_EOIR1_EL1) is VMM_ENOTSUP, and *val is not written."""
    from vmmpy._vmm import ffi, lib

    from vmmpy import sysregs

    val = ffi.new("uint64_t *", 0x1234)
    assert lib.vmm_sysreg_read(m._vm, 0, sysregs.encode("ICC_EOIR1_EL1"), val) == lib.VMM_ENOTSUP
    assert val[0] == 0x1234
