"""Tier 1: where the GICv3 model sends an SPI (Arm IHI0069 §12.9.22 GICD_IROUTER<n>) and which bank and
priority byte each INTID uses, at the edges a changed shift, divisor or comparison would move: Aff3's field,
1-of-N routing by the interrupt's group in every SPI word, and the first SPI (INTID 32).
"""

from __future__ import annotations

import pytest

import vmmpy
from tests import test_gic
from tests.test_gic import (
    EOIMODE,
    GICD,
    GICD_IROUTER,
    ICFGR,
    IGROUPR,
    IPRIORITYR,
    ISACTIVER,
    ISENABLER,
    ISPENDR,
    configure,
    is_set,
    rd,
    unmask,
)

IRM = 1 << 31  # GICD_IROUTER.Interrupt_Routing_Mode: 1 of N
SPI_END = 128  # GICD_TYPER.ITLinesNumber = 3: SPIs 32-127

m = test_gic.m  # a 1-vCPU machine
machine = test_gic.machine  # machine(cpus)


def lines(m, n: int) -> list[bool]:
    return [m.irq_line(c) for c in range(n)]


@pytest.mark.parametrize("aff3", [1, 0x80])
def test_a_route_with_aff3_set_reaches_no_cpu(machine, aff3):
    """Every vCPU's affinity is 0.0.0.i: a route with Aff3 != 0 matches none of them (IRM = 0), whatever Aff2..0
    hold. The SPI stays pending, and reaches vCPU 2 once routed there."""
    m = machine(3)
    for cpu in range(3):
        unmask(m, cpu)
    for aff0 in (0, 2):
        route = aff3 << 32 | aff0
        configure(m, 40, route=route)
        assert m.mmio_read(GICD + GICD_IROUTER + 8 * 40, size=8) == route
        m.irq_set(40, 1)
        assert lines(m, 3) == [False, False, False], f"IROUTER {route:#x}"
        assert is_set(m, ISPENDR, 40)
        m.irq_set(40, 0)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 40, 2, size=8)
    m.irq_set(40, 1)
    assert lines(m, 3) == [False, False, True]


def only_group(m, cpu: int, group: int) -> None:
    """vCPU `cpu`'s interface has only `group` enabled (both groups are enabled in GICD_CTLR)."""
    unmask(m, cpu, group=group)
    m.sysreg_write(f"ICC_IGRPEN{1 - group}_EL1", 0, cpu)


@pytest.mark.parametrize("intid", [32, 40, 62, 63, 64, 95, 96, 127])
@pytest.mark.parametrize("group", [0, 1])
def test_1_of_n_routing_reads_the_group_of_the_interrupt_itself(machine, intid, group):
    """IRM = 1: the lowest vCPU whose interface has the interrupt's group enabled. Every other SPI is made the
    other group, so reading another interrupt's IGROUPR bit (a neighbour, another word) picks the wrong vCPU.
    A Group 0 SPI raises no IRQ line (it is an FIQ), so it is seen through ICC_HPPIR0_EL1."""
    m = machine(2)
    for w in range(1, SPI_END // 32):
        m.mmio_write(GICD + IGROUPR + 4 * w, 0 if group else 0xFFFF_FFFF)
    configure(m, intid, group=group, route=IRM)
    only_group(m, 0, 1 - group)
    only_group(m, 1, group)
    m.irq_set(intid, 1)
    hppir = [m.sysreg_read(f"ICC_HPPIR{group}_EL1", cpu=c) for c in range(2)]
    assert hppir == [1023, intid]
    assert lines(m, 2) == [False, group == 1]


def test_the_first_spi_goes_to_its_route_not_to_the_cpu_that_raised_it(machine):
    """INTID 32 is an SPI: the line rises on the vCPU IROUTER names (1), not on the one irq_set was given (0)."""
    m = machine(2)
    for cpu in range(2):
        unmask(m, cpu)
    configure(m, 32, route=1)
    m.irq_set(32, 1, 0)
    assert lines(m, 2) == [False, True]
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 32


@pytest.mark.parametrize("intid", [32, 33, 62, 63, 64, 94, 95, 96, 126, 127])
def test_each_spi_has_its_own_pending_bit(m, intid):
    """An SPI sets its own bit of GICD_ISPENDR and no other (the bank is INTID / 32, the bit INTID % 32)."""
    m.irq_set(intid, 1)
    pending = [i for i in range(32, SPI_END) if is_set(m, ISPENDR, i)]
    assert pending == [intid]


@pytest.mark.parametrize("first", [32, 33])
def test_the_first_spis_priority_is_its_own_byte(m, first):
    """SPI 32's priority is GICD_IPRIORITYR's byte 32, not a private one: of SPIs 32 and 33, the one with the
    higher priority (lower value) is acknowledged first, and ICC_RPR_EL1 then reads its priority."""
    unmask(m)
    other = 65 - first
    configure(m, first, prio=0x40)
    configure(m, other, prio=0x80)
    m.irq_set(first, 1)
    m.irq_set(other, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == first
    assert m.sysreg_read("ICC_RPR_EL1") == 0x40


def test_an_spi_wins_a_priority_tie_with_an_lpi():
    """Ties go to the lowest INTID (gic.c update_hppi), also between an SPI and an LPI (INTID 8192 and up)."""
    from tests.test_gic_its import LPI, Its, take

    with vmmpy.Machine(its=True) as mach:
        unmask(mach)
        Its(mach).map_event(1, 0, LPI, prio=0x80)
        configure(mach, 40, prio=0x80, edge=True)
        mach.msi(0, device=1)
        mach.irq_set(40, 1)
        mach.irq_set(40, 0)
        assert [take(mach) for _ in range(3)] == [40, LPI, 1023]


def test_acknowledging_on_the_second_vcpu_lowers_its_line_and_its_hppir(machine):
    """An IAR on vCPU 1 makes its interrupt active (§12.2.15): vCPU 1's HPPI is computed again, so its line drops
    and ICC_HPPIR1_EL1 reads 1023 while the interrupt is active; after the EOI the next one shows."""
    m = machine(2)
    for cpu in range(2):
        unmask(m, cpu)
    for intid in (40, 41):
        configure(m, intid, route=1, edge=True, prio=0x80 if intid == 40 else 0x90)
        m.irq_set(intid, 1)
        m.irq_set(intid, 0)
    assert lines(m, 2) == [False, True]
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 40
    assert lines(m, 2) == [False, False]  # 41 cannot preempt 40
    assert m.sysreg_read("ICC_HPPIR1_EL1", cpu=1) == 41
    m.sysreg_write("ICC_EOIR1_EL1", 40, cpu=1)
    assert lines(m, 2) == [False, True]
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 41
    assert m.sysreg_read("ICC_HPPIR1_EL1", cpu=1) == 1023


def distributor_state(m) -> list[int]:
    """Every SPI's group, enable, pending, active, priority, configuration and route, and vCPU 0's private ones."""
    words = [GICD + reg + 4 * w for reg in (IGROUPR, ISENABLER, ISPENDR, ISACTIVER) for w in range(SPI_END // 32)]
    words += [GICD + IPRIORITYR + 4 * w for w in range(SPI_END // 4)]
    words += [GICD + ICFGR + 4 * w for w in range(SPI_END // 16)]
    state = [m.mmio_read(a) for a in words]
    state += [m.mmio_read(GICD + GICD_IROUTER + 8 * i, size=8) for i in range(32, SPI_END)]
    return state + [m.mmio_read(rd(0, 0x1_0000) + off) for off in (IGROUPR, ISENABLER, ISPENDR, ISACTIVER)]


@pytest.mark.parametrize("intid", [128, 129, 160, 1019])
def test_an_input_past_the_last_spi_changes_nothing(m, intid):
    """INTIDs 128-1019 are not implemented (GICD_TYPER.ITLinesNumber = 3): raising one goes nowhere, as on
    hardware, and leaves every register of the distributor and the redistributor as it was."""
    unmask(m)
    for i in range(32, SPI_END):
        m.mmio_write(GICD + IPRIORITYR + i, 0x80, size=1)
    before = distributor_state(m)
    m.irq_set(intid, 1)
    assert distributor_state(m) == before
    assert not m.irq_line()


def test_an_icfgr_read_shows_only_its_own_16_interrupts(m):
    """GICD_ICFGR2 holds SPIs 32-47 (§12.9.9): with SPI 48 (the next register's first) edge-triggered and SPI 32
    level-sensitive, its bit 1 (SPI 32's Int_config[1]) reads 0, and SPI 48's reads 1 in GICD_ICFGR3."""
    configure(m, 32)
    configure(m, 48, edge=True)
    assert m.mmio_read(GICD + ICFGR + 4 * 2) & 0b10 == 0
    assert m.mmio_read(GICD + ICFGR + 4 * 3) & 0b10 == 0b10


@pytest.mark.parametrize("intid", [31, 63, 95, 127])
def test_the_last_interrupt_of_each_word_is_acknowledged_and_deactivated(m, intid):
    """Bit 31 of a 32-interrupt word: PPI 31 and SPIs 63, 95 and 127 become active when acknowledged (GICD_ISACTIVER /
    GICR_ISACTIVER0 bit 31) and inactive again at the EOI, with EOImode 0 and with EOImode 1 (ICC_DIR_EL1)."""
    unmask(m)
    for eoimode in (0, 1):
        m.sysreg_write("ICC_CTLR_EL1", EOIMODE if eoimode else 0)
        configure(m, intid, edge=True)
        m.irq_set(intid, 1)
        m.irq_set(intid, 0)
        assert m.sysreg_read("ICC_IAR1_EL1") == intid
        assert is_set(m, ISACTIVER, intid)
        m.sysreg_write("ICC_EOIR1_EL1", intid)
        if eoimode:
            assert is_set(m, ISACTIVER, intid)  # the priority drop only
            m.sysreg_write("ICC_DIR_EL1", intid)
        assert not is_set(m, ISACTIVER, intid)


def test_on_eight_vcpus_a_route_to_no_vcpu_and_1_of_n_with_no_group_enabled_reach_nobody():
    """With VMM_MAX_CPUS (8) vCPUs, an SPI routed to Aff0 8 (no such vCPU) and a 1-of-N SPI while no interface has
    its group enabled stay pending and raise no line; once vCPU 7 enables Group 1, the 1-of-N one reaches it. (The
    model's per-vCPU state is an 8-entry array: a loop one past the last vCPU would read outside it, which
    `make test-asan` reports.)"""
    with vmmpy.Machine(cpus=8) as mach:
        mach.mmio_write(GICD, 0b11)  # GICD_CTLR: both groups
        configure(mach, 40, route=8)
        configure(mach, 41, route=IRM)
        for intid in (40, 41):
            mach.irq_set(intid, 1)
            assert is_set(mach, ISPENDR, intid)
        assert lines(mach, 8) == [False] * 8
        unmask(mach, 7)
        assert lines(mach, 8) == [False] * 7 + [True]
        assert mach.sysreg_read("ICC_IAR1_EL1", cpu=7) == 41
