"""Tier 1: edges of a PCI function's configuration space (csrc/dev/pci_cfg.c) that tests/test_pci.py,
tests/test_pci_regs.py and tests/test_pci_edges.py leave open: writes past the 256 bytes of conventional
config space, sub-register (1-byte) writes of the registers whose bits re-evaluate INTA# (COMMAND's
Interrupt Disable, MSI-X Message Control's Enable), and the host bridge's snapshot section, through the
public API (ECAM config space over mmio_read/mmio_write, the vCPU's IRQ line, snapshots)."""

from __future__ import annotations

import struct

from .pci_driver import (
    CMD_INTX_DISABLE,
    COMMAND,
    DEVICE,
    INT_LINE,
    MSIX_ENABLE,
    STATUS,
    STATUS_INTX,
    VENDOR,
    cfg_read,
    cfg_write,
)
from .test_pci import entropy, rng  # noqa: F401 (fixtures)


def test_writes_to_extended_config_space_change_nothing(machine):
    """ECAM gives each function 4 KiB of config space; ours model the conventional 256 bytes (PCI Local Bus
    3.0 §6.1) and the rest reads 0 (no extended capabilities). Writes there, right past the end, are dropped:
    they neither show up in the extended space nor change any register of the header, whose Vendor ID and
    Device ID stay read-only, and the writable ones keep taking writes."""
    m = machine(transport="pci", rng=True)
    header = [cfg_read(m, 1, off) for off in range(0, 256, 4)]
    for off in (0x100, 0x104):
        cfg_write(m, 1, off, 0xFFFF_FFFF)
    cfg_write(m, 1, 0x100, 0xFFFF, 2)
    cfg_write(m, 1, 0x101, 0xFF, 1)
    assert [cfg_read(m, 1, off) for off in (0x100, 0x104)] == [0, 0]
    assert [cfg_read(m, 1, off) for off in range(0, 256, 4)] == header
    # Vendor ID and Device ID take no write, a byte at a time or all four bytes at once
    cfg_write(m, 1, VENDOR + 1, 0xFF, 1)
    cfg_write(m, 1, DEVICE + 1, 0xFF, 1)
    cfg_write(m, 1, VENDOR, 0xFFFF_FFFF)
    assert cfg_read(m, 1, VENDOR, 2) == 0x1AF4
    assert cfg_read(m, 1, VENDOR) == header[0]
    # while the header's writable registers take writes as before: Interrupt Line, firmware's scratch byte
    cfg_write(m, 1, INT_LINE, 0x5A, 1)
    assert cfg_read(m, 1, INT_LINE, 1) == 0x5A


def test_interrupt_disable_written_as_a_single_byte_takes_effect(rng):  # noqa: F811
    """Interrupt Disable is bit 10 of COMMAND, in its high byte (offset 5): a 1-byte write of that byte alone
    (config accesses may be 1, 2 or 4 bytes) holds INTA# back at once and setting it back releases it, while
    Interrupt Status keeps showing the function's own state (PCI Local Bus 3.0 §6.2.2, §6.2.3)."""
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    entropy(dev, q)
    assert q.get_used() and m.irq_line(0)
    high = cfg_read(m, 1, COMMAND + 1, 1)
    cfg_write(m, 1, COMMAND + 1, high | CMD_INTX_DISABLE >> 8, 1)
    assert not m.irq_line(0)
    assert cfg_read(m, 1, COMMAND, 2) & CMD_INTX_DISABLE
    assert cfg_read(m, 1, STATUS, 2) & STATUS_INTX
    cfg_write(m, 1, COMMAND + 1, high & ~(CMD_INTX_DISABLE >> 8), 1)
    assert m.irq_line(0)
    assert dev.isr() == 1 and not m.irq_line(0)


def test_msix_enable_written_as_a_single_byte_replaces_intx(rng):  # noqa: F811
    """MSI-X Enable is bit 15 of Message Control, in the byte at cap + 3: a 1-byte write of it turns INTA# off
    at once (a function with MSI-X enabled does not use INTx, PCI Local Bus 3.0 §6.8.2.3), and clearing it
    the same way gives the line back while the function still has its interrupt."""
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    entropy(dev, q)
    assert q.get_used() and m.irq_line(0)
    at = dev.msix_cap + 3
    high = cfg_read(m, 1, at, 1)
    cfg_write(m, 1, at, high | MSIX_ENABLE >> 8, 1)
    assert cfg_read(m, 1, dev.msix_cap + 2, 2) & MSIX_ENABLE
    assert not m.irq_line(0)
    cfg_write(m, 1, at, high & ~(MSIX_ENABLE >> 8), 1)
    assert m.irq_line(0)
    assert dev.isr() == 1 and not m.irq_line(0)


def test_host_bridge_section_holds_its_config_and_intx_level_only(machine, guest, tmp_path):
    """The pci-host section (format version 1) is the bus's function count (u32), the bridge's 256 config
    bytes and its INTx level flag (one byte), nothing more: the bridge has no MSI-X capability, so no MSI-X
    state is written for it; a file of this layout, as earlier libvmm of this version wrote it, must keep
    restoring."""
    from .test_snapshot import sections

    m = machine(guest("hello"), transport="pci", rng=True)
    m.dtb()
    bridge = b"".join(struct.pack("<I", cfg_read(m, 0, off)) for off in range(0, 256, 4))
    m.snapshot(tmp_path / "s.snap")
    data = (tmp_path / "s.snap").read_bytes()
    ((off, plen),) = [(o, n) for name, o, n in sections(data) if name.startswith("pci-host")]
    assert plen == 4 + 256 + 1
    assert struct.unpack_from("<I", data, off)[0] == 2
    assert data[off + 4 : off + 260] == bridge
    assert data[off + 260] == 0
