"""Tier 1: register-level details of the PCIe host bridge and config space that tests/test_pci.py does not
reach, through the public API (ECAM and the GIC's registers over vmm_mmio_read/write, vmm_irq_set)."""

from __future__ import annotations

import logging
import struct

import pytest

import vmmpy

from .pci_driver import (
    CMD_INTX_DISABLE,
    CMD_MEM,
    COMMAND,
    DFSELECT,
    GFSELECT,
    INT_PIN,
    MMIO_WINDOW,
    MSIX_CONFIG,
    Q_DESC,
    Q_DEVICE,
    Q_DRIVER,
    Q_MSIX,
    Q_NOTIFY_OFF,
    Q_SELECT,
    STATUS,
    STATUS_CAPS,
    STATUS_INTX,
    VirtioPCI,
    cfg_read,
    cfg_write,
    find_functions,
)
from .test_gic import ISPENDR, is_set
from .test_pci import guest_errors, pci_cfg_window

RNG, NET = 0x1044, 0x1041
Q_NOTIF_DATA = 0x38  # queue_notif_config_data (§4.1.4.3)


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


@pytest.fixture
def rng(machine, guest):
    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    return m, dev


def test_each_dword_of_each_queue_address_is_its_own(rng):
    """§4.1.3.1: the 64-bit queue fields may be written as two DWORDs; each DWORD write changes its own half
    of its own field only. Every half of each field written alone, and every field read back after each."""
    m, dev = rng
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    fields = (Q_DESC, Q_DRIVER, Q_DEVICE)
    want = {f: 0 for f in fields}
    for f in fields:
        dev.common_write(f, 0, 8)
    for n, (f, half) in enumerate((f, h) for f in fields for h in (0, 4)):
        val = 0x1000 * (n + 1) | 0x10 * (n + 1)
        dev.common_write(f + half, val, 4)
        want[f] = want[f] & ~(0xFFFF_FFFF << 8 * half) | val << 8 * half
        assert {g: dev.common_read(g, 8) for g in fields} == want, (hex(f), half)
    # queue_notify_off and queue_notif_config_data (0x38) read the queue's index, not an address
    assert dev.common_read(Q_NOTIFY_OFF, 2) == 0 and dev.common_read(Q_NOTIF_DATA, 2) == 0
    assert guest_errors(m) == 0


def test_pci_cfg_data_keeps_the_bytes_a_narrow_access_does_not_cover(rng):
    """pci_cfg_data is four bytes of config space; a 2-byte write into it stores those two bytes and
    leaves the others as they were (only cap.length bytes reach the BAR; reading refreshes only those)."""
    m, dev = rng
    at = pci_cfg_window(m, 1)
    cfg_write(m, 1, at + 4, 0, 1)  # bar 0
    cfg_write(m, 1, at + 8, Q_SELECT)
    cfg_write(m, 1, at + 12, 2)
    cfg_write(m, 1, at + 16, 0xABCD_0003)
    assert dev.common_read(Q_SELECT, 2) == 3
    cfg_write(m, 1, at + 16, 0, 2)
    assert dev.common_read(Q_SELECT, 2) == 0
    assert cfg_read(m, 1, at + 16) == 0xABCD_0000
    cfg_write(m, 1, at + 18, 0x1234, 2)  # the bytes past cap.length: stored, nothing reaches the BAR
    assert cfg_read(m, 1, at + 16) == 0x1234_0000 and dev.common_read(Q_SELECT, 2) == 0


def test_pci_cfg_window_passes_only_its_length_of_pci_cfg_data(rng):
    """A window of length 2 onto queue_msix_vector: the upper two bytes of a 4-byte pci_cfg_data write are
    not the vector's (0xFFFF_0001 selects vector 1, not an out-of-range one that would read NO_VECTOR)."""
    m, dev = rng
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    at = pci_cfg_window(m, 1)
    cfg_write(m, 1, at + 4, 0, 1)
    cfg_write(m, 1, at + 8, Q_MSIX)
    cfg_write(m, 1, at + 12, 2)
    cfg_write(m, 1, at + 16, 0xFFFF_0001)
    assert dev.common_read(Q_MSIX, 2) == 1
    cfg_write(m, 1, at + 16, 0xFFFF_0000)
    assert dev.common_read(Q_MSIX, 2) == 0 and guest_errors(m) == 0


def test_taking_a_snapshot_changes_nothing_the_guest_sees(rng, tmp_path):
    """INTx asserted, then MSI-X enabled (which holds INTx back but leaves the function's Interrupt Status):
    saving a snapshot must leave Status, the ISR and the line as they were."""
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    q.add([], [16])
    q.notify()
    assert q.get_used() and m.irq_line(0)
    dev.msix_enable(True)
    before = (cfg_read(m, 1, STATUS, 2), m.irq_line(0))
    assert before == (STATUS_CAPS | STATUS_INTX, False)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    assert (cfg_read(m, 1, STATUS, 2), m.irq_line(0)) == before
    assert dev.isr() == 1


@pytest.mark.parametrize(
    "config, queue, match",
    [
        (2, 0, "config vector 2 of 2"),  # the rng has 2 vectors: config and queue 0
        (0xFFFF, 2, "queue 0 vector 2 of 2"),
        (0xFFFE, 0xFFFF, "config vector 65534 of 2"),
    ],
)
def test_a_snapshot_with_a_vector_past_the_msix_table_is_refused(rng, tmp_path, config, queue, match):
    """The transport's saved config and queue vectors are checked as a write of them is: NO_VECTOR or below
    the table's size (§4.1.4.3); anything else refuses the snapshot, naming the function."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m, dev = rng
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, 0, 2)
    dev.common_write(MSIX_CONFIG, 1, 2)
    dev.common_write(DFSELECT, 0x1357_2468, 4)  # markers to find the transport's registers by
    dev.common_write(GFSELECT, 0x2468_ACE0, 4)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    regs = struct.pack("<IIHHH", 0x1357_2468, 0x2468_ACE0, 0, 1, 0)
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if regs in good[o : o + n]]
    at = good.index(regs, off)
    assert off + plen - at == len(regs)  # the section ends with them: one vector for each of the rng's 1 queue
    vmmpy.Machine.restore(tmp_path / "s.snap").close()  # as saved: fine
    data = bytearray(good)
    struct.pack_into("<HH", data, at + 10, config, queue)
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match=r"virtio-rng.*: " + match):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_byte_writes_reach_the_byte_they_name(rng):
    """A 1-byte config write at an odd offset changes that byte: Interrupt Disable is bit 2 of Command's
    high byte (0x05); Memory Space, in the low byte, stays as it was."""
    m, dev = rng
    assert cfg_read(m, 1, COMMAND, 2) & CMD_MEM
    cfg_write(m, 1, COMMAND + 1, CMD_INTX_DISABLE >> 8, 1)
    assert cfg_read(m, 1, COMMAND, 2) & (CMD_MEM | CMD_INTX_DISABLE) == CMD_MEM | CMD_INTX_DISABLE
    cfg_write(m, 1, COMMAND + 1, 0, 1)
    assert cfg_read(m, 1, COMMAND, 2) & (CMD_MEM | CMD_INTX_DISABLE) == CMD_MEM


def test_the_bar_past_the_pba_is_not_msix(rng, caplog):
    """MSI-X owns its table and its one-QWORD PBA only: the BAR past the PBA's end (up to the next region) is
    the transport's, where nothing is: each access there is a guest error naming the BAR offset, reads 0."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, dev = rng
    end = dev.msix_pba() + 8
    errors = guest_errors(m)
    for at in (end, end + 8, end + 0x800):
        assert m.mmio_read(at) == 0 and m.mmio_read(at, 8) == 0
        m.mmio_write(at, 0xFFFF_FFFF)
        off = at - dev.bar_addr[0]
        assert f"4-byte read at BAR offset 0x{off:04x}" in caplog.text, hex(off)
        assert f"4-byte write at BAR offset 0x{off:04x}" in caplog.text, hex(off)
    assert guest_errors(m) == errors + 9
