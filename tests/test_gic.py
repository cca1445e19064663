"""Tier 1: the GICv3 model register by register (Arm IHI0069), through MMIO and the ICC_* system registers.

The model: one Security state (GICD_CTLR.DS = 1), affinity routing always on, 96 SPIs, 5 priority bits, no LPIs.
Group 1 interrupts drive a vCPU's IRQ line (``Machine.irq_line``); Group 0 would be FIQ, which is not wired.
Most tests program the distributor and redistributors over MMIO first and unmask the CPU interface last.
"""

from __future__ import annotations

import logging
import threading

import pytest

import vmmpy
from vmmpy import errors

# memory map (layout.h)
GICD = 0x0800_0000
GICR = 0x080A_0000
GICR_STRIDE = 0x2_0000
SGI_BASE = 0x1_0000

# distributor (§12.9) and SGI_base frame (§12.11) offsets
GICD_CTLR, GICD_TYPER, GICD_IIDR, GICD_TYPER2 = 0x0000, 0x0004, 0x0008, 0x000C
IGROUPR, ISENABLER, ICENABLER, ISPENDR, ICPENDR, ISACTIVER, ICACTIVER = (
    0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380,
)  # fmt: skip
IPRIORITYR, ITARGETSR, ICFGR, IGRPMODR, NSACR = 0x400, 0x800, 0xC00, 0xD00, 0xE00
GICD_SGIR, GICD_CPENDSGIR, GICD_SPENDSGIR = 0xF00, 0xF10, 0xF20
GICD_IROUTER = 0x6000
PIDR2, CIDR0 = 0xFFE8, 0xFFF0
# redistributor RD_base frame (§12.10)
GICR_CTLR, GICR_IIDR, GICR_TYPER, GICR_WAKER = 0x0000, 0x0004, 0x0008, 0x0014

CTLR_EN_GRP0, CTLR_EN_GRP1, CTLR_ARE, CTLR_DS = 1 << 0, 1 << 1, 1 << 4, 1 << 6
IRM = 1 << 31
WAKER_PROCESSOR_SLEEP, WAKER_CHILDREN_ASLEEP = 1 << 1, 1 << 2
EOIMODE, CBPR = 1 << 1, 1 << 0
SPURIOUS = 1023
IDLE = 0xFF


def rd(cpu: int, off: int) -> int:
    return GICR + cpu * GICR_STRIDE + off


def sgi(cpu: int, off: int) -> int:
    return GICR + cpu * GICR_STRIDE + SGI_BASE + off


def frame(intid: int, cpu: int = 0) -> int:
    """The base address holding `intid`'s registers: the redistributor's SGI frame below 32, else the distributor."""
    return sgi(cpu, 0) if intid < 32 else GICD


def word(reg: int, intid: int, cpu: int = 0) -> tuple[int, int]:
    """(address, bit) of `intid` in a one-bit-per-interrupt register."""
    return frame(intid, cpu) + reg + 4 * (intid // 32), 1 << (intid % 32)


def set_bit(m, reg: int, intid: int, cpu: int = 0) -> None:
    addr, bit = word(reg, intid, cpu)
    m.mmio_write(addr, bit)


def is_set(m, reg: int, intid: int, cpu: int = 0) -> bool:
    addr, bit = word(reg, intid, cpu)
    return bool(m.mmio_read(addr) & bit)


def configure(m, intid: int, *, prio=0x80, group=1, edge=False, cpu=0, route=None, enable=True) -> None:
    """Program one interrupt over MMIO (CPU interfaces still masked). SPIs are routed to `route` (default `cpu`)."""
    base = frame(intid, cpu)
    addr, bit = word(IGROUPR, intid, cpu)
    groups = m.mmio_read(addr)
    m.mmio_write(addr, groups | bit if group else groups & ~bit)
    m.mmio_write(base + IPRIORITYR + intid, prio, size=1)
    if intid >= 16:
        cfg = base + ICFGR + 4 * (intid // 16)
        field = 2 << (2 * (intid % 16))
        m.mmio_write(cfg, m.mmio_read(cfg) | field if edge else m.mmio_read(cfg) & ~field)
    if intid >= 32:
        m.mmio_write(GICD + GICD_IROUTER + 8 * intid, cpu if route is None else route, size=8)
    if enable:
        set_bit(m, ISENABLER, intid, cpu)


def unmask(m, cpu: int = 0, *, pmr=0xFF, group=1) -> None:
    """Enable both groups in the distributor (MMIO), then the CPU interface (system registers)."""
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP0 | CTLR_EN_GRP1)
    m.sysreg_write(f"ICC_IGRPEN{group}_EL1", 1, cpu)
    m.sysreg_write("ICC_PMR_EL1", pmr, cpu)


def pulse(m, intid: int, cpu: int = 0) -> None:
    m.irq_set(intid, 1, cpu)
    m.irq_set(intid, 0, cpu)


def guest_errors(m) -> int:
    return m.stats()["guest_errors"]


@pytest.fixture
def m():
    with vmmpy.Machine() as mach:
        yield mach


@pytest.fixture
def machine():
    """machine(cpus) -> a Machine, closed after the test."""
    made = []

    def make(cpus: int):
        made.append(vmmpy.Machine(cpus=cpus))
        return made[-1]

    yield make
    for mach in made:
        mach.close()


# ---- distributor identification (§12.9.4, §12.9.38, §12.9.16, §12.1.4) ----------------------------------------


def test_gicd_ctlr_are_and_ds_read_as_one_and_group_enables_are_writable(m):
    assert m.mmio_read(GICD + GICD_CTLR) == CTLR_ARE | CTLR_DS
    m.mmio_write(GICD + GICD_CTLR, 0xFFFF_FFFF)
    assert m.mmio_read(GICD + GICD_CTLR) == CTLR_ARE | CTLR_DS | CTLR_EN_GRP0 | CTLR_EN_GRP1  # RWP reads 0
    m.mmio_write(GICD + GICD_CTLR, 0)
    assert m.mmio_read(GICD + GICD_CTLR) == CTLR_ARE | CTLR_DS


@pytest.mark.parametrize("cpus", [1, 4])
def test_gicd_typer_describes_128_intids_and_no_lpis(machine, cpus):
    typer = machine(cpus).mmio_read(GICD + GICD_TYPER)
    assert typer & 0x1F == 3  # ITLinesNumber: 32 * (3 + 1) INTIDs
    assert (typer >> 5) & 7 == cpus - 1  # CPUNumber
    assert (typer >> 19) & 0x1F == 9  # IDbits: 10-bit INTIDs
    assert not typer & (1 << 10)  # SecurityExtn
    assert not typer & (1 << 16)  # MBIS
    assert not typer & (1 << 17)  # LPIS: only with an ITS (Machine(its=True), tests/test_gic_its.py)
    assert not typer & (1 << 25)  # No1N = 0: 1-of-N routing supported


def test_implementer_and_architecture_revision(m):
    for base, iidr in [(GICD, GICD_IIDR), (rd(0, 0), GICR_IIDR)]:
        assert m.mmio_read(base + iidr) == 0x43B  # Arm, product 0, r0p0
        assert (m.mmio_read(base + PIDR2) >> 4) & 0xF == 3  # ArchRev: GICv3
        assert [m.mmio_read(base + CIDR0 + 4 * i) for i in range(4)] == [0x0D, 0xF0, 0x05, 0xB1]


@pytest.mark.parametrize(("base", "pidr0"), [(GICD, 0x92), (GICR, 0x93)], ids=["gicd", "gicr"])
def test_every_identification_register(m, base, pidr0):
    """PIDR4..7, PIDR0..3, CIDR0..3 at 0xFFD0..0xFFFC (§12.1.4): only PIDR0 tells the frames apart."""
    want = [0x44, 0, 0, 0, pidr0, 0xB4, 0x3B, 0, 0x0D, 0xF0, 0x05, 0xB1]
    assert [m.mmio_read(base + 0xFFD0 + 4 * i) for i in range(12)] == want
    assert guest_errors(m) == 0


def test_gicd_typer2_reads_zero_without_a_guest_error(m):
    assert m.mmio_read(GICD + GICD_TYPER2) == 0
    assert guest_errors(m) == 0


def test_writes_to_read_only_identification_registers_are_ignored_and_logged(m):
    typer = m.mmio_read(GICD + GICD_TYPER)
    m.mmio_write(GICD + GICD_TYPER, 0)
    m.mmio_write(GICD + GICD_IIDR, 0)
    assert m.mmio_read(GICD + GICD_TYPER) == typer
    assert m.mmio_read(GICD + GICD_IIDR) == 0x43B
    assert guest_errors(m) == 2


# ---- redistributors (§12.10) ---------------------------------------------------------------------------------


def test_gicr_typer_gives_affinity_processor_number_and_last(machine):
    m = machine(3)
    for cpu in range(3):
        typer = m.mmio_read(rd(cpu, GICR_TYPER), size=8)
        assert typer >> 32 == cpu  # Affinity_Value: Aff0 = vCPU index, Aff1..3 = 0
        assert (typer >> 8) & 0xFFFF == cpu  # Processor_Number
        assert bool(typer & (1 << 4)) == (cpu == 2)  # Last
        assert typer & 1 == 0  # PLPIS
        assert m.mmio_read(rd(cpu, GICR_TYPER)) == typer & 0xFFFF_FFFF
        assert m.mmio_read(rd(cpu, GICR_TYPER + 4)) == typer >> 32
    assert guest_errors(m) == 0


def test_gicr_typer_is_read_only(m):
    typer = m.mmio_read(rd(0, GICR_TYPER), size=8)
    m.mmio_write(rd(0, GICR_TYPER), 0xFFFF, size=8)
    assert m.mmio_read(rd(0, GICR_TYPER), size=8) == typer
    assert guest_errors(m) == 1


def test_gicr_waker_processor_sleep_and_children_asleep(m):
    assert m.mmio_read(rd(0, GICR_WAKER)) == WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP  # reset: asleep
    m.mmio_write(rd(0, GICR_WAKER), 0)  # what Linux does to wake its redistributor
    assert m.mmio_read(rd(0, GICR_WAKER)) == 0
    m.mmio_write(rd(0, GICR_WAKER), WAKER_CHILDREN_ASLEEP)  # ChildrenAsleep is read-only
    assert m.mmio_read(rd(0, GICR_WAKER)) == 0
    m.mmio_write(rd(0, GICR_WAKER), WAKER_PROCESSOR_SLEEP)
    assert m.mmio_read(rd(0, GICR_WAKER)) == WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
    assert guest_errors(m) == 0


def test_gicr_ctlr_reads_zero_without_lpis(m):
    m.mmio_write(rd(0, GICR_CTLR), 1)  # EnableLPIs: RAZ/WI, GICR_TYPER.PLPIS = 0 (without an ITS)
    assert m.mmio_read(rd(0, GICR_CTLR)) == 0
    assert m.mmio_read(rd(0, GICR_IIDR)) == 0x43B


# ---- the set/clear registers (§12.9.15-12.9.24, §12.11) ------------------------------------------------------

INTIDS = pytest.mark.parametrize("intid", [3, 27, 33, 127], ids=["SGI3", "PPI27", "SPI33", "SPI127"])


@INTIDS
@pytest.mark.parametrize(
    "setreg, clrreg",
    [(ISENABLER, ICENABLER), (ISPENDR, ICPENDR), (ISACTIVER, ICACTIVER)],
    ids=["enable", "pend", "act"],
)
def test_set_and_clear_registers(m, intid, setreg, clrreg):
    addr_set, bit = word(setreg, intid)
    addr_clr, _ = word(clrreg, intid)
    assert m.mmio_read(addr_set) & bit == 0
    m.mmio_write(addr_set, bit)
    assert m.mmio_read(addr_set) & bit and m.mmio_read(addr_clr) & bit  # both read the state
    m.mmio_write(addr_set, 0)  # writing 0 changes nothing
    m.mmio_write(addr_clr, 0)
    assert m.mmio_read(addr_set) & bit
    m.mmio_write(addr_clr, bit)
    assert m.mmio_read(addr_set) & bit == 0 and m.mmio_read(addr_clr) & bit == 0


@INTIDS
def test_igroupr_is_read_write(m, intid):
    addr, bit = word(IGROUPR, intid)
    assert m.mmio_read(addr) == 0  # reset: Group 0
    m.mmio_write(addr, bit)
    assert m.mmio_read(addr) == bit
    m.mmio_write(addr, 0)
    assert m.mmio_read(addr) == 0


@pytest.mark.parametrize("reg", [IGROUPR, ISENABLER, ISPENDR, ISACTIVER])
def test_distributor_copies_of_sgi_and_ppi_registers_are_raz_wi(m, reg):
    m.mmio_write(GICD + reg, 0xFFFF_FFFF)  # with ARE = 1 SGIs and PPIs live in the redistributors
    assert m.mmio_read(GICD + reg) == 0
    assert m.mmio_read(sgi(0, reg)) == 0
    assert guest_errors(m) == 0


def test_registers_of_unimplemented_intids_are_raz_wi(m):
    for addr, size in [
        (GICD + ISENABLER + 4 * 4, 4),  # INTIDs 128-159
        (GICD + IGROUPR + 4 * 31, 4),
        (GICD + IPRIORITYR + 128, 1),
        (GICD + ICFGR + 4 * 8, 4),
        (GICD + GICD_IROUTER + 8 * 128, 8),
    ]:
        m.mmio_write(addr, 0xFF, size=size)
        assert m.mmio_read(addr, size=size) == 0
    assert guest_errors(m) == 0


# ---- priorities (§12.9.18, §4.8) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "intid", [0, 8, 20, 28, 32, 64, 124], ids=["SGI0", "SGI", "PPI", "PPI28", "SPI32", "SPI", "SPI124"]
)
def test_ipriorityr_is_byte_and_word_accessible(m, intid):
    base = frame(intid) + IPRIORITYR + intid  # intid is a multiple of 4: one whole word
    m.mmio_write(base, 0x40302010)
    assert m.mmio_read(base) == 0x40302010
    assert [m.mmio_read(base + i, size=1) for i in range(4)] == [0x10, 0x20, 0x30, 0x40]
    m.mmio_write(base + 2, 0xA8, size=1)
    assert m.mmio_read(base) == 0x40A82010


def test_five_priority_bits_are_implemented_everywhere(m):
    m.mmio_write(GICD + IPRIORITYR + 40, 0xFF, size=1)
    assert m.mmio_read(GICD + IPRIORITYR + 40, size=1) == 0xF8  # bits [2:0] RAZ/WI
    m.sysreg_write("ICC_PMR_EL1", 0xFF)
    assert m.sysreg_read("ICC_PMR_EL1") == 0xF8
    assert (m.sysreg_read("ICC_CTLR_EL1") >> 8) & 7 == 4  # PRIbits: 5 bits
    # the minimum binary points follow: group priority [7:3] in both groups
    m.sysreg_write("ICC_BPR0_EL1", 0)
    m.sysreg_write("ICC_BPR1_EL1", 0)
    assert (m.sysreg_read("ICC_BPR0_EL1"), m.sysreg_read("ICC_BPR1_EL1")) == (2, 3)
    # 32 preemption levels: all of them fit ICC_AP1R0_EL1; bit 31 is priority 0xF8
    m.sysreg_write("ICC_AP1R0_EL1", 1 << 31)
    assert m.sysreg_read("ICC_RPR_EL1") == 0xF8


def test_distributor_priorities_of_sgis_and_ppis_are_raz_wi(m):
    """INTIDs 0-31's bytes of GICD_IPRIORITYR, from the first (the register's own offset) to the last, are RAZ/WI
    with ARE = 1, silently: they are implemented registers, not reserved offsets."""
    for off, size in ((0, 4), (0, 1), (16, 4), (31, 1)):
        m.mmio_write(GICD + IPRIORITYR + off, 0x80808080 & (1 << 8 * size) - 1, size=size)
        assert m.mmio_read(GICD + IPRIORITYR + off, size=size) == 0
        assert m.mmio_read(sgi(0, IPRIORITYR + off), size=size) == 0
    assert guest_errors(m) == 0


def test_a_64_bit_access_past_the_last_irouter_is_refused_as_a_width_error(m, caplog):
    """GICD_IROUTER<n> (n = 32..1019, 0x6100-0x7fd8) takes 64-bit accesses; 0x7fe0 on is reserved and 32-bit only:
    a 64-bit access there is refused for its size (RAZ/WI), while the last IROUTER (of an unimplemented INTID)
    takes it silently."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(GICD + 0x7FD8, size=8) == 0
    assert guest_errors(m) == 0
    assert m.mmio_read(GICD + 0x7FE0, size=8) == 0
    assert "distributor: 8-byte read at offset 0x7fe0: unsupported access size, RAZ/WI" in caplog.text


# ---- configuration (§12.9.9, §12.11.7) -----------------------------------------------------------------------


def test_icfgr0_sgis_are_always_edge_triggered(m):
    assert m.mmio_read(sgi(0, ICFGR)) == 0xAAAA_AAAA
    m.mmio_write(sgi(0, ICFGR), 0)
    assert m.mmio_read(sgi(0, ICFGR)) == 0xAAAA_AAAA
    m.mmio_write(sgi(0, ICFGR + 4), 0)  # the PPIs' ICFGR1: leaves the SGIs alone
    assert m.mmio_read(sgi(0, ICFGR)) == 0xAAAA_AAAA


def test_icfgr1_ppis_are_configurable(m):
    assert m.mmio_read(sgi(0, ICFGR + 4)) == 0  # reset: level-sensitive
    m.mmio_write(sgi(0, ICFGR + 4), 0xFFFF_FFFF)
    assert m.mmio_read(sgi(0, ICFGR + 4)) == 0xAAAA_AAAA  # bit 2n is RES0
    m.mmio_write(sgi(0, ICFGR + 4), 2 << 22)  # PPI 27 edge, the others level
    assert m.mmio_read(sgi(0, ICFGR + 4)) == 2 << 22


def test_gicd_icfgr_configures_spis_only(m):
    m.mmio_write(GICD + ICFGR + 4 * 2, 0xFFFF_FFFF)  # INTIDs 32-47
    assert m.mmio_read(GICD + ICFGR + 4 * 2) == 0xAAAA_AAAA
    assert m.mmio_read(GICD + ICFGR + 4 * 3) == 0
    m.mmio_write(GICD + ICFGR + 4 * 3, 0x8000_0002)  # an odd word: INTIDs 48 and 63 edge
    assert m.mmio_read(GICD + ICFGR + 4 * 3) == 0x8000_0002
    assert m.mmio_read(GICD + ICFGR + 4 * 2) == 0xAAAA_AAAA
    m.mmio_write(GICD + ICFGR + 4 * 2, 0)
    assert m.mmio_read(GICD + ICFGR + 4 * 3) == 0x8000_0002
    for n in (0, 1):  # SGIs and PPIs: RAZ/WI here
        m.mmio_write(GICD + ICFGR + 4 * n, 0xFFFF_FFFF)
        assert m.mmio_read(GICD + ICFGR + 4 * n) == 0


@pytest.mark.parametrize(
    "off",
    [
        ITARGETSR,
        ITARGETSR + 32,
        ICFGR - 4,
        IGRPMODR,
        IGRPMODR + 4,
        NSACR + 8,
        GICD_SGIR,
        GICD_CPENDSGIR,
        GICD_SPENDSGIR,
    ],
    ids=[
        "ITARGETSR0",
        "ITARGETSR8",
        "ITARGETSR255",
        "IGRPMODR0",
        "IGRPMODR1",
        "NSACR",
        "SGIR",
        "CPENDSGIR",
        "SPENDSGIR",
    ],
)
def test_registers_disabled_by_are_or_ds_are_raz_wi_without_error(m, off):
    m.mmio_write(GICD + off, 0xFFFF_FFFF)
    assert m.mmio_read(GICD + off) == 0
    assert guest_errors(m) == 0


def test_ipriorityr_past_the_last_spi_is_raz_wi(machine):
    """IPRIORITYR bytes for INTIDs 128 and up (none implemented) read 0 and ignore writes, without touching
    the registers that follow SPI 127's priority in the model (SPI 32's IROUTER)."""
    m = machine(2)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 32, 1, size=8)  # SPI 32 to CPU 1
    m.mmio_write(GICD + IPRIORITYR + 127, 0xA0, size=1)
    for intid in (128, 129, 131, 1019):
        assert m.mmio_read(GICD + IPRIORITYR + intid, size=1) == 0
        m.mmio_write(GICD + IPRIORITYR + intid, 0xF8, size=1)
        assert m.mmio_read(GICD + IPRIORITYR + intid, size=1) == 0
    assert m.mmio_read(GICD + IPRIORITYR + 128) == 0
    assert m.mmio_read(GICD + IPRIORITYR + 124) == 0xA0 << 24
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 32, size=8) == 1
    assert guest_errors(m) == 0


def test_every_writable_cpu_interface_register_write_returns_0(m):
    """vmm_sysreg_write of each writable ICC_* register returns 0 (Machine.sysreg_write raises only for a
    negative code, so it would not notice another value); a write of a read-only one is VMM_ENOTSUP."""
    from vmmpy import sysregs
    from vmmpy._ffi import lib

    unmask(m)
    for reg, val in [("ICC_PMR_EL1", 0xF0), ("ICC_BPR0_EL1", 3), ("ICC_BPR1_EL1", 4), ("ICC_AP0R0_EL1", 0),
                     ("ICC_AP1R0_EL1", 0), ("ICC_CTLR_EL1", 0), ("ICC_SRE_EL1", 7), ("ICC_IGRPEN0_EL1", 1),
                     ("ICC_IGRPEN1_EL1", 1), ("ICC_SGI0R_EL1", 1 << 24 | 1), ("ICC_SGI1R_EL1", 2 << 24 | 1),
                     ("ICC_ASGI1R_EL1", 3 << 24 | 1), ("ICC_EOIR0_EL1", SPURIOUS), ("ICC_EOIR1_EL1", SPURIOUS),
                     ("ICC_DIR_EL1", 40)]:  # fmt: skip
        assert lib.vmm_sysreg_write(m._vm, 0, sysregs.encode(reg), val) == 0, reg
    assert lib.vmm_sysreg_write(m._vm, 0, sysregs.encode("ICC_IAR1_EL1"), 0) == lib.VMM_ENOTSUP


def test_itargetsr_is_byte_accessible(m):
    m.mmio_write(GICD + ITARGETSR + 33, 0xFF, size=1)
    assert m.mmio_read(GICD + ITARGETSR + 33, size=1) == 0
    assert guest_errors(m) == 0


def test_redistributor_igrpmodr0_and_nsacr_are_raz_wi(m):
    for off in (IGRPMODR, NSACR):
        m.mmio_write(sgi(0, off), 0xFFFF_FFFF)
        assert m.mmio_read(sgi(0, off)) == 0
    assert guest_errors(m) == 0


# ---- routing (§12.9.22) ------------------------------------------------------------------------------------


def test_irouter_is_64_bit_with_32_bit_halves(m):
    reg = GICD + GICD_IROUTER + 8 * 40
    assert m.mmio_read(reg, size=8) == 0  # reset: Aff 0.0.0.0, IRM = 0
    m.mmio_write(reg, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    assert m.mmio_read(reg, size=8) == 0x0000_00FF_80FF_FFFF  # Aff3, IRM, Aff2..0; the rest RES0
    m.mmio_write(reg + 4, 0x12)
    m.mmio_write(reg, 0x0003_0201)
    assert m.mmio_read(reg, size=8) == 0x12_0003_0201
    assert (m.mmio_read(reg), m.mmio_read(reg + 4)) == (0x0003_0201, 0x12)


def test_irouter_of_sgis_and_ppis_is_reserved(m):
    m.mmio_write(GICD + GICD_IROUTER + 8 * 27, 1, size=8)
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 27, size=8) == 0
    assert guest_errors(m) == 2


def test_spi_routed_to_cpu1_asserts_only_cpu1s_line(machine):
    m = machine(2)
    configure(m, 40, route=1)
    unmask(m, 0)
    unmask(m, 1)
    m.irq_set(40, 1)
    assert (m.irq_line(0), m.irq_line(1)) == (False, True)
    assert m.sysreg_read("ICC_HPPIR1_EL1", cpu=0) == SPURIOUS
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 40


@pytest.mark.parametrize(
    "route",
    [5, 1 << 8, 1 << 16, 1 << 32, 1 << 32 | 1],
    ids=["aff0=5", "aff1=1", "aff2=1", "aff3=1", "aff3=1.aff0=1"],
)
def test_spi_routed_to_an_absent_cpu_reaches_nobody(machine, route):
    """The vCPUs are 0.0.0.0 and 0.0.0.1: a nonzero Aff1, Aff2 or Aff3 (IROUTER bits 8-23, 32-39) matches neither."""
    m = machine(2)
    configure(m, 40, route=route)
    assert m.mmio_read(GICD + GICD_IROUTER + 8 * 40, size=8) == route
    unmask(m, 0)
    unmask(m, 1)
    m.irq_set(40, 1)
    assert is_set(m, ISPENDR, 40)
    assert not m.irq_line(0) and not m.irq_line(1)


def test_1_of_n_routing_picks_the_lowest_cpu_with_the_group_enabled(machine):
    m = machine(3)
    configure(m, 40, route=IRM)
    unmask(m, 1)
    unmask(m, 2)  # CPU 0's interface stays disabled
    m.irq_set(40, 1)
    assert [m.irq_line(c) for c in range(3)] == [False, True, False]
    m.sysreg_write("ICC_IGRPEN1_EL1", 1, cpu=0)
    m.sysreg_write("ICC_PMR_EL1", 0xFF, cpu=0)
    assert [m.irq_line(c) for c in range(3)] == [True, False, False]


def test_ppi_reaches_only_its_own_cpu(machine):
    m = machine(2)
    for cpu in (0, 1):
        configure(m, 27, cpu=cpu)
        unmask(m, cpu)
    m.irq_set(27, 1, cpu=1)
    assert (m.irq_line(0), m.irq_line(1)) == (False, True)
    assert is_set(m, ISPENDR, 27, cpu=1) and not is_set(m, ISPENDR, 27, cpu=0)
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 27


# ---- signalling and acknowledging (§4.1, §4.8, §12.2) ------------------------------------------------------

MISSING = ["nothing", "GICD_CTLR.EnableGrp1", "ISENABLER", "IGROUPR", "ICC_IGRPEN1_EL1", "ICC_PMR_EL1"]


@pytest.mark.parametrize("missing", MISSING)
def test_the_line_needs_every_enable(m, missing):
    configure(m, 40, group=0 if missing == "IGROUPR" else 1, enable=missing != "ISENABLER")
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP0 | (0 if missing == "GICD_CTLR.EnableGrp1" else CTLR_EN_GRP1))
    if missing != "ICC_IGRPEN1_EL1":
        m.sysreg_write("ICC_IGRPEN1_EL1", 1)
    if missing != "ICC_PMR_EL1":
        m.sysreg_write("ICC_PMR_EL1", 0xFF)
    m.irq_set(40, 1)
    assert m.irq_line() == (missing == "nothing")


def test_nothing_pending_acknowledges_as_spurious(m):
    unmask(m)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == SPURIOUS
    assert m.sysreg_read("ICC_IAR1_EL1") == SPURIOUS
    assert m.sysreg_read("ICC_IAR0_EL1") == SPURIOUS
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE
    assert m.stats()["irqs"] == 0


def test_acknowledge_makes_active_and_clears_edge_pending(m):
    configure(m, 40, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.irq_line() and is_set(m, ISPENDR, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    assert is_set(m, ISACTIVER, 40) and not is_set(m, ISPENDR, 40)
    assert not m.irq_line()
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert not is_set(m, ISACTIVER, 40)
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE
    assert m.stats()["irqs"] == 1


def test_highest_priority_first_then_lowest_intid(m):
    for intid, prio in [(40, 0x80), (41, 0x40), (42, 0x80), (36, 0xA0)]:
        configure(m, intid, prio=prio, edge=True)
    unmask(m)
    for intid in (40, 41, 42, 36):
        pulse(m, intid)
    order = []
    for _ in range(4):
        intid = m.sysreg_read("ICC_IAR1_EL1")
        m.sysreg_write("ICC_EOIR1_EL1", intid)
        order.append(intid)
    assert order == [41, 40, 42, 36]
    assert m.sysreg_read("ICC_IAR1_EL1") == SPURIOUS
    assert not m.irq_line()


def test_nested_preemption_through_the_running_priority(m):
    configure(m, 40, prio=0xA0, edge=True)
    configure(m, 41, prio=0x40, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    assert (m.sysreg_read("ICC_RPR_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (0xA0, 1 << (0xA0 >> 3))
    pulse(m, 41)
    assert m.irq_line()  # 0x40 preempts a running 0xA0
    assert m.sysreg_read("ICC_IAR1_EL1") == 41
    assert m.sysreg_read("ICC_RPR_EL1") == 0x40
    assert m.sysreg_read("ICC_AP1R0_EL1") == (1 << (0xA0 >> 3)) | (1 << (0x40 >> 3))
    m.sysreg_write("ICC_EOIR1_EL1", 41)
    assert m.sysreg_read("ICC_RPR_EL1") == 0xA0
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE
    assert m.sysreg_read("ICC_AP1R0_EL1") == 0


@pytest.mark.parametrize("second_prio", [0x80, 0xC0])
def test_equal_or_lower_priority_does_not_preempt(m, second_prio):
    configure(m, 40, prio=0x80, edge=True)
    configure(m, 41, prio=second_prio, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    pulse(m, 41)
    assert not m.irq_line()
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 41  # HPPIR ignores the running priority
    assert m.sysreg_read("ICC_IAR1_EL1") == SPURIOUS
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.irq_line()


@pytest.mark.parametrize(
    "bpr1, running, preempts", [(3, 0x90, True), (4, 0x90, True), (5, 0x80, False), (7, 0x80, False)]
)
def test_binary_point_groups_priorities_for_preemption(m, bpr1, running, preempts):
    """BPR1 = n: group priority bits [7:n]. 0x80 preempts 0x90 only if they differ there."""
    configure(m, 40, prio=0x90, edge=True)
    configure(m, 41, prio=0x80, edge=True)
    unmask(m)
    m.sysreg_write("ICC_BPR1_EL1", bpr1)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    assert m.sysreg_read("ICC_RPR_EL1") == running  # the group priority of the active interrupt
    assert m.sysreg_read("ICC_AP1R0_EL1") == 1 << (running >> 3)
    pulse(m, 41)
    assert m.irq_line() == preempts
    assert m.sysreg_read("ICC_IAR1_EL1") == (41 if preempts else SPURIOUS)


def test_cbpr_makes_group1_use_bpr0(m):
    m.sysreg_write("ICC_BPR0_EL1", 4)
    m.sysreg_write("ICC_CTLR_EL1", CBPR)
    assert m.sysreg_read("ICC_CTLR_EL1") & CBPR
    assert m.sysreg_read("ICC_BPR1_EL1") == 5  # BPR0 + 1
    m.sysreg_write("ICC_BPR1_EL1", 3)  # ignored
    assert m.sysreg_read("ICC_BPR1_EL1") == 5
    configure(m, 40, prio=0x90, edge=True)
    configure(m, 41, prio=0x80, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    pulse(m, 41)
    assert not m.irq_line()  # BPR0 = 4: group priority [7:5], 0x80 and 0x90 are one group
    m.sysreg_write("ICC_BPR0_EL1", 7)
    assert m.sysreg_read("ICC_BPR1_EL1") == 7  # saturates
    m.sysreg_write("ICC_CTLR_EL1", 0)
    assert m.sysreg_read("ICC_BPR1_EL1") == 3  # BPR1 kept its own value


@pytest.mark.parametrize("group", [0, 1])
def test_bpr0_at_its_minimum_keeps_every_priority_bit_for_group0_and_for_group1_with_cbpr(m, group):
    """BPR0 = 2 (its minimum and reset value) splits at [7:3]: the group priority is all 5 priority bits. It
    applies to Group 0, and to Group 1 with CBPR (BPR1 itself, at 7, would make 0x80 and 0x88 one group): an
    active 0x88 runs at 0x88 (AP bit 17), and 0x80 preempts it."""
    configure(m, 40, prio=0x88, group=group, edge=True)
    configure(m, 41, prio=0x80, group=group, edge=True)
    unmask(m, group=group)
    m.sysreg_write("ICC_BPR0_EL1", 2)
    if group:
        m.sysreg_write("ICC_BPR1_EL1", 7)
        m.sysreg_write("ICC_CTLR_EL1", CBPR)
    iar = f"ICC_IAR{group}_EL1"
    pulse(m, 40)
    assert m.sysreg_read(iar) == 40
    assert m.sysreg_read("ICC_RPR_EL1") == 0x88
    assert m.sysreg_read(f"ICC_AP{group}R0_EL1") == 1 << (0x88 >> 3)
    pulse(m, 41)
    assert m.sysreg_read(iar) == 41  # a higher group priority: preempts
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80


@pytest.mark.parametrize("group", [0, 1])
@pytest.mark.parametrize("intid", [0, 32, 64, 96])
def test_the_first_intid_of_each_32_interrupt_word_is_signalled(m, intid, group):
    """Bit 0 of each word of pending bits (SGI 0, SPIs 32, 64 and 96) counts like any other, in either group:
    not while its group is disabled (in the distributor, in the CPU interface, or both), then as the HPPI."""
    configure(m, intid, group=group, edge=True)
    set_bit(m, ISPENDR, intid)
    assert m.sysreg_read(f"ICC_HPPIR{group}_EL1") == SPURIOUS
    m.sysreg_write(f"ICC_IGRPEN{group}_EL1", 1)  # the CPU interface's enable alone
    assert m.sysreg_read(f"ICC_HPPIR{group}_EL1") == SPURIOUS
    m.sysreg_write(f"ICC_IGRPEN{group}_EL1", 0)
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP0 | CTLR_EN_GRP1)  # the distributor's alone
    assert m.sysreg_read(f"ICC_HPPIR{group}_EL1") == SPURIOUS
    unmask(m, group=group)
    assert m.sysreg_read(f"ICC_HPPIR{group}_EL1") == intid
    assert m.sysreg_read(f"ICC_IAR{group}_EL1") == intid


def test_pmr_masks_the_line_and_acknowledge(m):
    configure(m, 40, prio=0x80)
    unmask(m, pmr=0x80)
    m.irq_set(40, 1)
    assert not m.irq_line()  # priority must be strictly higher than the mask
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 40  # HPPIR ignores the mask
    assert m.sysreg_read("ICC_IAR1_EL1") == SPURIOUS
    m.sysreg_write("ICC_PMR_EL1", 0x88)
    assert m.irq_line()
    m.sysreg_write("ICC_PMR_EL1", 0x00)
    assert not m.irq_line()
    m.sysreg_write("ICC_PMR_EL1", 0x88)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40


def test_preemption_registers_update_the_line_of_the_cpu_written_for(machine):
    """ICC_PMR_EL1, ICC_AP1R0_EL1 and ICC_BPR1_EL1 decide whether the pending interrupt can preempt (IHI0069
    §4.8): a write to one of them on CPU 1 moves CPU 1's line at once, and nobody else's."""
    m = machine(2)
    configure(m, 40, prio=0x80, route=1)
    unmask(m, 1, pmr=0x80)
    m.irq_set(40, 1)
    lines = lambda: (m.irq_line(0), m.irq_line(1))  # noqa: E731
    assert lines() == (False, False)  # the mask must be strictly lower in priority
    m.sysreg_write("ICC_PMR_EL1", 0x88, cpu=1)
    assert lines() == (False, True)
    m.sysreg_write("ICC_PMR_EL1", 0x00, cpu=1)
    assert lines() == (False, False)
    m.sysreg_write("ICC_PMR_EL1", 0xFF, cpu=1)
    # an active priority of 0x88 (ICC_AP1R0_EL1 bit 0x88 >> 3): 0x80 is higher in a group priority of 5 bits
    m.sysreg_write("ICC_AP1R0_EL1", 1 << (0x88 >> 3), cpu=1)
    assert lines() == (False, True)
    m.sysreg_write("ICC_BPR1_EL1", 4, cpu=1)  # Group 1 priority bits [7:4]: 0x80 and 0x88 are both 0x80
    assert lines() == (False, False)
    m.sysreg_write("ICC_BPR1_EL1", 3, cpu=1)
    assert lines() == (False, True)
    m.sysreg_write("ICC_AP1R0_EL1", 1 << (0x80 >> 3), cpu=1)  # running priority 0x80: no preemption
    assert lines() == (False, False)
    m.sysreg_write("ICC_AP1R0_EL1", 0, cpu=1)
    assert lines() == (False, True)
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 40


def test_eoimode1_splits_priority_drop_and_deactivation(m):
    configure(m, 40)  # level-sensitive, input kept high
    unmask(m)
    m.sysreg_write("ICC_CTLR_EL1", EOIMODE)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE  # priority dropped
    assert is_set(m, ISACTIVER, 40)  # still active: not signalled again
    assert not m.irq_line()
    m.sysreg_write("ICC_DIR_EL1", 40)
    assert not is_set(m, ISACTIVER, 40)
    assert m.irq_line()  # the input is still high


def test_dir_is_ignored_with_eoimode0(m):
    configure(m, 40, edge=True)
    unmask(m)
    pulse(m, 40)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.sysreg_write("ICC_DIR_EL1", 40)
    assert is_set(m, ISACTIVER, 40)
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert not is_set(m, ISACTIVER, 40)


def test_eoi_without_an_active_interrupt_is_a_guest_error(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.sysreg_write("ICC_EOIR1_EL1", 41)
    assert guest_errors(m) == 1
    assert "vCPU 0: EOI of INTID 41 with no active interrupt: ignored" in caplog.text
    for special in (1020, 1021, 1022, SPURIOUS):  # special INTIDs are ignored silently
        m.sysreg_write("ICC_EOIR1_EL1", special)
    assert guest_errors(m) == 1
    # INTIDs the GIC does not implement (past the SPIs, past the LPIs): named as written, bits [63:24] RES0
    for written, intid in ((128, 128), (1 << 32 | 70000, 70000), (0xFF12_3456, 0x12_3456)):
        m.sysreg_write("ICC_EOIR1_EL1", written)
        assert f"vCPU 0: EOI of unimplemented INTID {intid}: ignored" in caplog.text
    assert guest_errors(m) == 4


def test_group0_uses_iar0_and_does_not_raise_the_irq_line(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    configure(m, 40, group=0, prio=0x80, edge=True)
    configure(m, 41, group=1, prio=0xA0, edge=True)
    unmask(m, group=0)
    m.sysreg_write("ICC_IGRPEN1_EL1", 1)
    pulse(m, 40)
    pulse(m, 41)
    assert not m.irq_line()  # the HPPI is Group 0: an FIQ, not wired to the vCPU
    assert m.sysreg_read("ICC_HPPIR0_EL1") == 40
    assert m.sysreg_read("ICC_HPPIR1_EL1") == SPURIOUS  # the HPPI is not Group 1
    assert m.sysreg_read("ICC_IAR1_EL1") == SPURIOUS
    assert m.sysreg_read("ICC_IAR0_EL1") == 40
    assert m.sysreg_read("ICC_AP0R0_EL1") == 1 << (0x80 >> 3)
    m.sysreg_write("ICC_EOIR1_EL1", 40)  # wrong group: ignored
    assert guest_errors(m) == 1 and is_set(m, ISACTIVER, 40)
    assert "vCPU 0: EOI of INTID 40 through the other group's EOIR: ignored" in caplog.text
    m.sysreg_write("ICC_EOIR0_EL1", 40)
    assert not is_set(m, ISACTIVER, 40)
    assert m.irq_line()  # now the Group 1 interrupt is the HPPI
    assert m.sysreg_read("ICC_IAR1_EL1") == 41


def test_level_interrupt_stays_pending_after_eoi_while_its_input_is_high(m):
    configure(m, 40)
    unmask(m)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    assert is_set(m, ISPENDR, 40) and is_set(m, ISACTIVER, 40)  # active and pending
    assert not m.irq_line()  # an active interrupt is not signalled again
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.irq_line()
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.irq_set(40, 0)
    assert not is_set(m, ISPENDR, 40)
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert not m.irq_line()


def test_icpendr_does_not_clear_a_level_interrupt_whose_input_is_high(m):
    configure(m, 40)
    unmask(m)
    m.irq_set(40, 1)
    set_bit(m, ICPENDR, 40)
    assert is_set(m, ISPENDR, 40) and m.irq_line()


def test_edge_interrupt_needs_a_new_rising_edge(m):
    configure(m, 40, edge=True)
    unmask(m)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert not is_set(m, ISPENDR, 40) and not m.irq_line()  # input still high, but no new edge
    m.irq_set(40, 1)  # already high: not an edge
    assert not m.irq_line()
    m.irq_set(40, 0)
    m.irq_set(40, 1)  # rising edge
    assert m.irq_line()


def test_ispendr_latches_a_level_interrupt(m):
    configure(m, 40)
    m.sysreg_write("ICC_IGRPEN1_EL1", 1)  # PMR still 0: nothing can be signalled yet
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP1)
    set_bit(m, ISPENDR, 40)
    assert is_set(m, ISPENDR, 40)
    assert m.sysreg_read("ICC_HPPIR1_EL1") == 40
    set_bit(m, ICPENDR, 40)
    assert not is_set(m, ISPENDR, 40)
    set_bit(m, ISPENDR, 40)
    m.sysreg_write("ICC_PMR_EL1", 0xFF)
    assert m.irq_line()
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    assert not is_set(m, ISPENDR, 40)  # acknowledge cleared the latch; the input is low
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert not m.irq_line()


def test_disabling_a_pending_interrupt_lowers_the_line(m):
    configure(m, 40)
    unmask(m)
    m.irq_set(40, 1)
    assert m.irq_line()
    set_bit(m, ICENABLER, 40)
    assert not m.irq_line()
    assert is_set(m, ISPENDR, 40)  # still pending, just not forwarded


def test_acknowledged_interrupts_are_counted(m):
    configure(m, 40, edge=True)
    unmask(m)
    for _ in range(3):
        pulse(m, 40)
        assert m.sysreg_read("ICC_IAR1_EL1") == 40
        m.sysreg_write("ICC_EOIR1_EL1", 40)
    m.sysreg_read("ICC_IAR1_EL1")  # spurious: not counted
    assert m.stats()["irqs"] == 3


# ---- SGIs (§12.2.21) --------------------------------------------------------------------------------------


def sgi1r(intid: int, targets: int = 0, *, aff1=0, irm=False) -> int:
    return (intid << 24) | (aff1 << 16) | targets | (int(irm) << 40)


@pytest.fixture
def m3(machine):
    """Three vCPUs whose SGIs are Group 1, enabled, and whose interfaces are unmasked."""
    m = machine(3)
    for cpu in range(3):
        m.mmio_write(sgi(cpu, IGROUPR), 0xFFFF_FFFF)
        m.mmio_write(sgi(cpu, ISENABLER), 0xFFFF)
    for cpu in range(3):
        unmask(m, cpu)
    return m


def sgi_pending(m, cpu: int) -> int:
    return m.mmio_read(sgi(cpu, ISPENDR)) & 0xFFFF


def test_sgi1r_target_list(m3):
    m3.sysreg_write("ICC_SGI1R_EL1", sgi1r(5, 0b101), cpu=1)
    assert [sgi_pending(m3, c) for c in range(3)] == [1 << 5, 0, 1 << 5]
    assert [m3.irq_line(c) for c in range(3)] == [True, False, True]
    assert m3.sysreg_read("ICC_IAR1_EL1", cpu=2) == 5  # no source CPU ID in GICv3
    m3.sysreg_write("ICC_EOIR1_EL1", 5, cpu=2)
    assert not m3.irq_line(2)


def test_sgi1r_can_target_the_sender(m3):
    m3.sysreg_write("ICC_SGI1R_EL1", sgi1r(2, 0b001), cpu=0)
    assert [sgi_pending(m3, c) for c in range(3)] == [1 << 2, 0, 0]


def test_sgi1r_irm_broadcasts_to_all_but_self(m3):
    m3.sysreg_write("ICC_SGI1R_EL1", sgi1r(7, 0b001, irm=True), cpu=1)  # TargetList ignored
    assert [sgi_pending(m3, c) for c in range(3)] == [1 << 7, 0, 1 << 7]


@pytest.mark.parametrize(
    "aff", [1 << 16, 1 << 32, 1 << 39, 1 << 48, 1 << 55], ids=["aff1", "aff2", "aff2.7", "aff3", "aff3.7"]
)
def test_sgi1r_to_another_affinity_reaches_nobody(m3, aff):
    """The vCPUs are 0.0.0.{0,1,2}: an SGI for Aff3.Aff2.Aff1 other than 0.0.0 (bits 16-23, 32-39, 48-55 of
    ICC_SGI1R_EL1, §12.2.21) reaches none of them."""
    m3.sysreg_write("ICC_SGI1R_EL1", sgi1r(1, 0b111) | aff)
    assert [sgi_pending(m3, c) for c in range(3)] == [0, 0, 0]


def test_sgi_is_forwarded_only_to_targets_with_the_matching_group(m3):
    m3.mmio_write(sgi(1, IGROUPR), 0xFFFF_FFFF & ~(1 << 6))  # vCPU 1's SGI 6 is Group 0
    m3.sysreg_write("ICC_SGI1R_EL1", sgi1r(6, 0b110))
    assert [sgi_pending(m3, c) for c in range(3)] == [0, 0, 1 << 6]
    m3.sysreg_write("ICC_SGI0R_EL1", sgi1r(6, 0b110))
    assert [sgi_pending(m3, c) for c in range(3)] == [0, 1 << 6, 1 << 6]
    m3.mmio_write(sgi(1, ICPENDR), 1 << 6)
    m3.sysreg_write("ICC_ASGI1R_EL1", sgi1r(6, 0b110))  # Secure Group 1 = Group 0 with DS = 1
    assert [sgi_pending(m3, c) for c in range(3)] == [0, 1 << 6, 1 << 6]


# ---- CPU interface registers (§12.2) ------------------------------------------------------------------------


def test_icc_sre_reads_sre_dfb_dib_and_ignores_writes(m):
    assert m.sysreg_read("ICC_SRE_EL1") == 0x7
    m.sysreg_write("ICC_SRE_EL1", 0)
    assert m.sysreg_read("ICC_SRE_EL1") == 0x7


def test_icc_ctlr_fields(m):
    ctlr = m.sysreg_read("ICC_CTLR_EL1")
    assert ctlr == 4 << 8  # PRIbits = 4 (5 bits), IDbits = 0 (16), A3V = RSS = SEIS = 0, CBPR = EOImode = 0
    m.sysreg_write("ICC_CTLR_EL1", 0xFFFF_FFFF)
    assert m.sysreg_read("ICC_CTLR_EL1") == (4 << 8) | EOIMODE | CBPR


def test_icc_igrpen_and_reset_values(m):
    for reg, reset in [("ICC_IGRPEN0_EL1", 0), ("ICC_IGRPEN1_EL1", 0), ("ICC_PMR_EL1", 0), ("ICC_AP0R0_EL1", 0)]:
        assert m.sysreg_read(reg) == reset
    m.sysreg_write("ICC_IGRPEN1_EL1", 0xFF)
    assert m.sysreg_read("ICC_IGRPEN1_EL1") == 1
    assert (m.sysreg_read("ICC_BPR0_EL1"), m.sysreg_read("ICC_BPR1_EL1")) == (2, 3)


def test_active_priority_registers_set_the_running_priority(m):
    configure(m, 40, prio=0x40, edge=True)
    unmask(m)
    m.sysreg_write("ICC_AP1R0_EL1", 1 << 4)  # as if priority 0x20 were active
    assert m.sysreg_read("ICC_RPR_EL1") == 0x20
    pulse(m, 40)
    assert not m.irq_line()
    m.sysreg_write("ICC_AP1R0_EL1", 0)
    assert m.irq_line()


@pytest.mark.parametrize("reg", ["ICC_EOIR1_EL1", "ICC_EOIR0_EL1", "ICC_DIR_EL1", "ICC_SGI1R_EL1", "ICC_SGI0R_EL1"])
def test_reading_a_write_only_register_is_undefined(m, reg):
    with pytest.raises(errors.NotSupported):
        m.sysreg_read(reg)


@pytest.mark.parametrize("reg", ["ICC_IAR1_EL1", "ICC_IAR0_EL1", "ICC_HPPIR1_EL1", "ICC_RPR_EL1"])
def test_writing_a_read_only_register_is_undefined(m, reg):
    with pytest.raises(errors.NotSupported):
        m.sysreg_write(reg, 0)


def test_unimplemented_active_priority_registers_are_undefined(m):
    with pytest.raises(errors.NotSupported):
        m.sysreg_read("S3_0_C12_C9_1")  # ICC_AP1R1_EL1: only with more than 5 priority bits


# ---- reserved offsets and access sizes (§12.1.3) --------------------------------------------------------------

RESERVED = {
    "GICD_STATUSR": GICD + 0x0010,
    "GICD_SETSPI_NSR": GICD + 0x0040,
    "GICD_INMIR": GICD + 0x0F80,
    "GICD_IGROUPRnE": GICD + 0x1000,
    "GICD_IROUTER0": GICD + GICD_IROUTER,
    "GICD_IMPDEF": GICD + 0xC000,
    "GICR_STATUSR": rd(0, 0x0010),
    "GICR_PROPBASER": rd(0, 0x0070),  # no LPIs without an ITS
    "GICR_IGROUPR1E": sgi(0, 0x0084),
    "GICR_ICFGR2E": sgi(0, 0x0C08),
    "GICR_IPRIORITYR8": sgi(0, IPRIORITYR + 32),  # just past the 32 private INTIDs' priorities
    "SGI_base ID space": sgi(0, PIDR2),
}


def test_guest_errors_name_the_block_and_the_offset_in_it(machine, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(2)
    m.mmio_read(GICD + 0x0010)
    m.mmio_write(rd(1, 0x0070), 1)
    m.mmio_read(sgi(1, ICFGR + 4), size=1)
    assert "distributor: 4-byte read at reserved or read-only offset 0x0010: ignored" in caplog.text
    assert "redistributor: 4-byte write at reserved or read-only offset 0x20070: ignored" in caplog.text
    assert "redistributor: 1-byte read at offset 0x30c04: unsupported access size, RAZ/WI" in caplog.text


@pytest.mark.parametrize("addr", list(RESERVED.values()), ids=list(RESERVED))
def test_reserved_offsets_are_raz_wi_with_a_guest_error(m, addr):
    assert m.mmio_read(addr) == 0
    assert guest_errors(m) == 1
    m.mmio_write(addr, 0xFFFF_FFFF)
    assert guest_errors(m) == 2
    assert m.mmio_read(addr) == 0


BAD_SIZES = {
    "GICD_CTLR 64-bit": (GICD + GICD_CTLR, 8),
    "GICD_CTLR byte": (GICD + GICD_CTLR, 1),
    "GICD_ISENABLER1 byte": (GICD + ISENABLER + 4, 1),
    "GICD_IPRIORITYR halfword": (GICD + IPRIORITYR + 40, 2),
    "GICD_IROUTER byte": (GICD + GICD_IROUTER + 8 * 40, 1),
    "GICR_WAKER halfword": (rd(0, GICR_WAKER), 2),
    "GICR_ISENABLER0 64-bit": (sgi(0, ISENABLER), 8),
    "GICR_ICFGR1 byte": (sgi(0, ICFGR + 4), 1),  # byte access ends with IPRIORITYR7
    "GICR_IGRPMODR0 byte": (sgi(0, IGRPMODR), 1),
}


@pytest.mark.parametrize("addr, size", list(BAD_SIZES.values()), ids=list(BAD_SIZES))
def test_unsupported_access_sizes_are_raz_wi_with_a_guest_error(m, addr, size):
    before = m.mmio_read(addr - addr % 4)
    assert m.mmio_read(addr, size=size) == 0
    m.mmio_write(addr, (1 << (8 * size)) - 1, size=size)
    assert guest_errors(m) == 2
    assert m.mmio_read(addr - addr % 4) == before


def test_supported_access_sizes_do_not_log(m):
    m.mmio_read(GICD + GICD_IROUTER + 8 * 40, size=8)
    m.mmio_read(rd(0, GICR_TYPER), size=8)
    m.mmio_read(GICD + IPRIORITYR + 41, size=1)
    m.mmio_read(sgi(0, IPRIORITYR + 3), size=1)
    m.mmio_read(GICD + ITARGETSR + 41, size=1)
    assert guest_errors(m) == 0


# ---- threads -------------------------------------------------------------------------------------------------


def test_inputs_driven_from_many_threads(machine):
    m = machine(2)
    intids = list(range(32, 40))
    for intid in intids:
        configure(m, intid, route=intid % 2)
    unmask(m, 0)
    unmask(m, 1)

    def toggle(intid: int) -> None:
        for _ in range(500):
            m.irq_set(intid, 1)
            m.irq_set(intid, 0)

    threads = [threading.Thread(target=toggle, args=(i,)) for i in intids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not m.irq_line(0) and not m.irq_line(1)
    m.irq_set(35, 1)
    assert (m.irq_line(0), m.irq_line(1)) == (False, True)


def test_an_mmio_write_may_raise_a_line(machine):
    """Register writes that make an interrupt deliverable raise the line at once (and do not deadlock on vm->lock)."""
    m = machine(2)
    configure(m, 40, route=1, enable=False)
    unmask(m, 1)
    set_bit(m, ISPENDR, 40)
    assert not m.irq_line(1)
    set_bit(m, ISENABLER, 40)
    assert m.irq_line(1)
    set_bit(m, ICENABLER, 40)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 40, 0, size=8)  # to vCPU 0, whose interface is masked
    set_bit(m, ISENABLER, 40)
    assert not m.irq_line(1) and not m.irq_line(0)
    m.mmio_write(GICD + GICD_IROUTER + 8 * 40, 1, size=8)
    assert m.irq_line(1)
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP0)
    assert not m.irq_line(1)
    m.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP1)
    assert m.irq_line(1)
    m.irq_set(40, 1)  # the (level) input is high too
    m.sysreg_write("ICC_CTLR_EL1", EOIMODE, cpu=1)
    assert m.sysreg_read("ICC_IAR1_EL1", cpu=1) == 40
    m.sysreg_write("ICC_EOIR1_EL1", 40, cpu=1)  # priority drop only
    assert not m.irq_line(1)  # active and pending
    set_bit(m, ICACTIVER, 40)  # deactivated through the distributor instead of ICC_DIR_EL1
    assert m.irq_line(1)


def test_a_redistributor_priority_write_reorders_pending_ppis_on_its_cpu_only():
    """IPRIORITYR in a redistributor's SGI frame changes which pending PPI is the highest at once, on that
    CPU, without losing a change pending on another CPU (each CPU's cached answer is recomputed when its own
    state changed)."""
    with vmmpy.Machine(cpus=2) as m:
        for cpu in (0, 1):
            configure(m, 20, prio=0x80, cpu=cpu)
            configure(m, 21, prio=0x90, cpu=cpu)
            unmask(m, cpu)
            m.irq_set(20, 1, cpu)
        assert [m.sysreg_read("ICC_HPPIR1_EL1", cpu) for cpu in (0, 1)] == [20, 20]
        m.irq_set(21, 1, 0)
        m.irq_set(21, 1, 1)
        m.irq_set(20, 0, 1)  # CPU 1 changes (20 no longer pending) ...
        m.mmio_write(frame(21, 0) + IPRIORITYR + 21, 0x40, size=1)  # ... then CPU 0's PPI 21 goes first
        assert [m.sysreg_read("ICC_HPPIR1_EL1", cpu) for cpu in (0, 1)] == [21, 21]


def test_gicr_ctlr_without_lpis_is_raz_wi_and_no_guest_error(m):
    """Without LPIs (no ITS) GICR_CTLR has no writable bit: it reads 0, a write of EnableLPIs is ignored, and
    neither access is a guest error (the register exists)."""
    m.mmio_write(rd(0, 0x0000), 1)
    assert m.mmio_read(rd(0, 0x0000)) == 0
    assert guest_errors(m) == 0


def test_dir_deactivates_exactly_the_intid_it_names(m):
    """EOImode 1: ICC_DIR_EL1 with an odd INTID deactivates that one (all 24 INTID bits count), not a neighbour."""
    configure(m, 41)
    configure(m, 40)
    unmask(m)
    m.sysreg_write("ICC_CTLR_EL1", EOIMODE)
    m.irq_set(41, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 41
    m.sysreg_write("ICC_EOIR1_EL1", 41)
    m.sysreg_write("ICC_DIR_EL1", 41)
    assert not is_set(m, ISACTIVER, 41)


def test_dir_ignores_the_res0_bits_above_the_intid(m):
    """ICC_DIR_EL1 bits [63:24] are RES0: a write with some of them set deactivates INTID [23:0] all the same."""
    configure(m, 40)
    unmask(m)
    m.sysreg_write("ICC_CTLR_EL1", EOIMODE)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    m.sysreg_write("ICC_DIR_EL1", 1 << 24 | 1 << 40 | 40)
    assert not is_set(m, ISACTIVER, 40)


def test_an_eoi_of_the_wrong_group_leaves_the_active_priorities(m):
    """Group 1 SPI 40 (0x80) is active when group 0 SPI 41 (0x40) preempts it. An EOIR1 now names the wrong group
    (the highest active priority is group 0's): ignored, a guest error. EOIR0 then drops to 40's priority, and
    EOIR1 to idle."""
    configure(m, 40, prio=0x80)
    configure(m, 41, prio=0x40, group=0)
    unmask(m, group=0)
    unmask(m)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.irq_set(41, 1)
    assert m.sysreg_read("ICC_IAR0_EL1") == 41
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert guest_errors(m) == 1
    assert m.sysreg_read("ICC_RPR_EL1") == 0x40
    m.sysreg_write("ICC_EOIR0_EL1", 41)
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.sysreg_read("ICC_RPR_EL1") == IDLE


def test_an_eoir0_while_group_1_is_highest_active_is_ignored(m, caplog):
    """The mirror of the test above: group 0 SPI 41 (0x80) is active when group 1 SPI 40 (0x40) preempts it. An
    EOIR0 now names the wrong group: ignored, a guest error, 41 stays active with its priority bit. EOIR1 then
    drops to 41's priority, and EOIR0 to idle, deactivating 41."""
    configure(m, 41, prio=0x80, group=0)
    configure(m, 40, prio=0x40)
    unmask(m, group=0)
    unmask(m)
    m.irq_set(41, 1)
    assert m.sysreg_read("ICC_IAR0_EL1") == 41
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.sysreg_write("ICC_EOIR0_EL1", 41)
    assert guest_errors(m) == 1
    assert "vCPU 0: EOI of INTID 41 through the other group's EOIR: ignored" in caplog.text
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_RPR_EL1")) == (1 << (0x80 >> 3), 0x40)
    assert is_set(m, ISACTIVER, 41)
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80
    m.sysreg_write("ICC_EOIR0_EL1", 41)
    assert (m.sysreg_read("ICC_RPR_EL1"), is_set(m, ISACTIVER, 41), guest_errors(m)) == (IDLE, False, 1)


def test_active_priority_registers_are_per_group(m):
    """ICC_AP0R0_EL1 and ICC_AP1R0_EL1 are separate: a bit written to one reads back there only (group 0 active
    at 0x40, group 1 at 0x80: the running priority is 0x40), and clearing one leaves the other."""
    m.sysreg_write("ICC_AP0R0_EL1", 1 << (0x40 >> 3))
    m.sysreg_write("ICC_AP1R0_EL1", 1 << (0x80 >> 3))
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (1 << 8, 1 << 16)
    assert m.sysreg_read("ICC_RPR_EL1") == 0x40
    m.sysreg_write("ICC_AP0R0_EL1", 0)
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (0, 1 << 16)
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80


def test_a_tie_between_the_groups_active_priorities_is_group_0s(m):
    """Group 0 and group 1 active at the same priority (0x40): preemption cannot make that state (an interrupt
    must have a higher group priority than the running one), only ICC_AP0R0/AP1R0_EL1 writes can, and IHI0069
    leaves it UNPREDICTABLE. We resolve it as QEMU does: the highest active group is group 0. So an EOIR1 names
    the wrong group (ignored, a guest error, both bits kept), an EOIR0 drops group 0's bit, then EOIR1 group 1's."""
    m.sysreg_write("ICC_AP0R0_EL1", 1 << (0x40 >> 3))
    m.sysreg_write("ICC_AP1R0_EL1", 1 << (0x40 >> 3))
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert guest_errors(m) == 1
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (1 << 8, 1 << 8)
    m.sysreg_write("ICC_EOIR0_EL1", 41)
    assert (m.sysreg_read("ICC_AP0R0_EL1"), m.sysreg_read("ICC_AP1R0_EL1")) == (0, 1 << 8)
    assert m.sysreg_read("ICC_RPR_EL1") == 0x40
    m.sysreg_write("ICC_EOIR1_EL1", 40)
    assert (m.sysreg_read("ICC_AP1R0_EL1"), m.sysreg_read("ICC_RPR_EL1"), guest_errors(m)) == (0, IDLE, 1)


def test_the_offset_after_gicd_spendsgir_is_reserved(m):
    """GICD_CPENDSGIR/SPENDSGIR end at 0xF2F (RAZ/WI with ARE = 1, no error); 0xF30 is reserved: a guest error."""
    m.mmio_read(GICD + GICD_SPENDSGIR + 0xC)
    assert guest_errors(m) == 0
    assert m.mmio_read(GICD + GICD_SPENDSGIR + 0x10) == 0
    assert guest_errors(m) == 1


def test_an_eoi_of_an_unimplemented_intid_drops_nothing(m):
    """INTID 1019 (the last below the special 1020-1023, beyond our 128): an EOIR1 of it is out of range, a
    guest error, and leaves the active interrupt's priority in place."""
    configure(m, 40, prio=0x80)
    unmask(m)
    m.irq_set(40, 1)
    assert m.sysreg_read("ICC_IAR1_EL1") == 40
    m.sysreg_write("ICC_EOIR1_EL1", 1019)
    assert guest_errors(m) == 1
    assert m.sysreg_read("ICC_RPR_EL1") == 0x80
