"""Tier 1: register-level details of the PCIe host bridge and config space that tests/test_pci.py does not
reach, through the public API (ECAM and the GIC's registers over vmm_mmio_read/write, vmm_irq_set)."""

from __future__ import annotations

import vmmpy

from .pci_driver import (
    CMD_INTX_DISABLE,
    CMD_MEM,
    COMMAND,
    INT_PIN,
    MMIO_WINDOW,
    STATUS,
    STATUS_INTX,
    VirtioPCI,
    cfg_read,
    cfg_write,
    find_functions,
)
from .test_gic import ISPENDR, is_set

RNG, NET = 0x1044, 0x1041


def test_a_command_write_that_changes_no_intx_state_leaves_the_line_alone(machine):
    """A function drives its INTx SPI only when what it drives changes: a Command write that neither
    disables nor enables a pending INTx (the rng has none) must not touch the line. The SPI held high
    through the API shows a stray drive (a function that re-drove its own low level would lower it); the
    host bridge has no INTx pin at all."""
    m = machine(transport="pci", rng=True)
    assert cfg_read(m, 0, INT_PIN, 1) == 0 and cfg_read(m, 1, INT_PIN, 1) == 1  # the bridge: none; rng: INTA#
    spi = VirtioPCI(m, 1).intx_intid
    m.irq_set(spi, True)
    assert is_set(m, ISPENDR, spi)  # level-sensitive: pending while high
    for slot in (0, 1):
        for val in (CMD_MEM, CMD_MEM | CMD_INTX_DISABLE, 0):
            cfg_write(m, slot, COMMAND, val, 2)
            assert is_set(m, ISPENDR, spi), (slot, val)
    m.irq_set(spi, False)
    assert not is_set(m, ISPENDR, spi)  # the check above can fail


def test_functions_sharing_an_intx_line_hold_it_until_both_let_go(machine, tmp_path):
    """INTx lines are shared and level-triggered (wired-OR, PCI Local Bus 3.0 §2.2.6; the host swizzles slots s
    and s + 4 onto one SPI): the SPI stays high while any function on it asserts, whichever lets go first."""
    shares = [tmp_path / "a", tmp_path / "b"]
    for d in shares:
        d.mkdir()
    net = vmmpy.Network()
    m = machine(transport="pci", disk=None, rng=True, virtio_console=True, share=[str(d) for d in shares], net=net)
    assert [s for s, _, dev in find_functions(m) if dev in (RNG, NET)] == [1, 5]  # both on SPI 36
    rng, nic = VirtioPCI(m, 1), VirtioPCI(m, 5)
    rng.place_bars(MMIO_WINDOW)
    nic.place_bars(MMIO_WINDOW + 0x10_0000)
    assert rng.intx_intid == nic.intx_intid
    rng.enable_intx()
    (q,) = rng.init(queues=1)
    nic.init(queues=2)
    for first, second in ((rng, nic), (nic, rng)):  # whichever lets go first
        q.add([], [16])
        q.notify()
        assert q.get_used() and m.irq_line(0)  # the rng asserts (its queue bit)
        m.set_link(not m.net_stats().link_up)  # the NIC asserts too (its configuration bit)
        assert all(cfg_read(m, d.slot, STATUS, 2) & STATUS_INTX for d in (rng, nic))
        assert first.isr() in (1, 2)  # read-to-clear: that function lets go
        assert m.irq_line(0), "the other function still asserts INTA#"
        assert second.isr() in (1, 2)
        assert not m.irq_line(0)
