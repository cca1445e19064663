"""Tier 1: a distributor change that can move or unblock an SPI re-evaluates every CPU's IRQ line at once (gic.c
vmm__gic_dirty_all): the line follows GICD_CTLR, GICD_IROUTER and GICD_IPRIORITYR writes made over MMIO, with no
access by a CPU to trigger it."""

from __future__ import annotations

import pytest

import vmmpy

from .test_gic import CTLR_EN_GRP0, CTLR_EN_GRP1, GICD, GICD_CTLR, GICD_IROUTER, IPRIORITYR, configure, unmask


@pytest.fixture
def m2():
    with vmmpy.Machine(cpus=2) as m:
        yield m


def test_enabling_the_distributor_raises_the_line_of_a_pending_spi(m2):
    configure(m2, 40)
    m2.sysreg_write("ICC_IGRPEN1_EL1", 1)
    m2.sysreg_write("ICC_PMR_EL1", 0xFF)
    m2.irq_set(40, 1)
    assert not m2.irq_line(0)  # GICD_CTLR's group enables are still 0
    m2.mmio_write(GICD + GICD_CTLR, CTLR_EN_GRP0 | CTLR_EN_GRP1)
    assert m2.irq_line(0)
    m2.mmio_write(GICD + GICD_CTLR, 0)
    assert not m2.irq_line(0)


def test_rerouting_a_pending_spi_moves_the_line(m2):
    configure(m2, 40, route=0)
    unmask(m2, 0)
    unmask(m2, 1)
    m2.irq_set(40, 1)
    assert (m2.irq_line(0), m2.irq_line(1)) == (True, False)
    m2.mmio_write(GICD + GICD_IROUTER + 8 * 40, 1, size=8)
    assert (m2.irq_line(0), m2.irq_line(1)) == (False, True)


def test_a_priority_change_past_the_mask_drops_and_raises_the_line(m2):
    configure(m2, 40, prio=0x80)
    unmask(m2, 0, pmr=0x90)
    m2.irq_set(40, 1)
    assert m2.irq_line(0)
    m2.mmio_write(GICD + IPRIORITYR + 40, 0xA0, size=1)  # no longer above PMR 0x90
    assert not m2.irq_line(0)
    m2.mmio_write(GICD + IPRIORITYR + 40, 0x10, size=1)
    assert m2.irq_line(0)
