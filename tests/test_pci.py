"""Tier 1: the PCIe host bridge (ECAM, the MMIO window, the device tree) and the virtio-pci transport
(capabilities, common config, notify, ISR, INTx, MSI-X table and PBA), through the public API.

MSI-X messages go to the irqchip (vmm__irq_msi). A PCI machine has a GICv3 ITS (vmm_config.its is
implied by the PCI transport): the tests map requester 00:01.0 (DeviceID 8) and the EventID they program
into the MSI-X entry onto an LPI through the ITS's command queue (test_gic_its.Its), and what a message
delivered is the LPIs the CPU interface then acknowledges.
"""

from __future__ import annotations

import logging
import os
import struct

import pytest

import vmmpy

from .pci_driver import (
    CAP_MSIX,
    CAP_VNDR,
    CMD_INTX_DISABLE,
    CMD_MEM,
    COMMAND,
    COMMON,
    CONFIG_GENERATION,
    DEVICE_CFG,
    ECAM,
    GF,
    GFSELECT,
    INT_PIN,
    ISR,
    MMIO_WINDOW,
    MSIX_CONFIG,
    NO_VECTOR,
    NOTIFY,
    NUM_QUEUES,
    Q_DESC,
    Q_DEVICE,
    Q_DRIVER,
    Q_ENABLE,
    Q_MSIX,
    Q_RESET,
    Q_SELECT,
    Q_SIZE,
    STATUS,
    STATUS_INTX,
    VirtioPCI,
    caps,
    cfg_addr,
    cfg_read,
    cfg_write,
    find_functions,
)
from .test_gic import unmask
from .test_gic_its import LPI, Its, take

ITS_TRANSLATER = 0x0809_0040
RNG, BLK, GPU = 0x1044, 0x1042, 0x1050


def guest_errors(m) -> int:
    return m.stats()["guest_errors"]


@pytest.fixture
def rng(machine, guest):
    """A PCI machine with a virtio-rng at 00:01.0, its BAR placed, memory decoding on."""
    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    return m, dev


def entropy(dev: VirtioPCI, q, n: int = 16) -> None:
    q.add([], [n])
    q.notify()


# ---- the host bridge --------------------------------------------------------------------------


def test_bus0_has_the_host_bridge_then_the_devices_in_order(machine):
    m = machine(transport="pci", disk=None, rng=True, gpu=True)
    assert find_functions(m) == [(0, 0x1B36, 0x0008), (1, 0x1AF4, GPU), (2, 0x1AF4, RNG)]
    assert cfg_read(m, 0, 0x08) >> 8 == 0x060000  # class: host bridge
    assert cfg_read(m, 0, 0x2C) == 0x1100_1B36  # the bridge's subsystem IDs: vendor 1b36, device 0x1100
    assert cfg_read(m, 2, 0x08) == 0x00FF0001  # unclassified, revision 1 (modern only, §4.1.2.1)
    assert cfg_read(m, 2, 0x2C) == 0x1100_1AF4  # subsystem vendor 1af4
    assert cfg_read(m, 2, 0x0E, 1) == 0  # type 0 header, single function
    m = machine(transport="pci", disk=None, net=vmmpy.Network())
    assert find_functions(m)[1] == (1, 0x1AF4, 0x1041) and cfg_read(m, 1, 0x08) >> 8 == 0x020000  # Ethernet


def test_absent_functions_and_buses_read_all_ones(machine):
    m = machine(transport="pci", rng=True)
    assert cfg_read(m, 5, 0) == 0xFFFFFFFF
    assert cfg_read(m, 5, 0, 2) == 0xFFFF and cfg_read(m, 5, 0, 1) == 0xFF
    assert cfg_read(m, 2, 0) == 0xFFFFFFFF  # the slot just past the last function (the bridge and the rng)
    assert m.mmio_read(cfg_addr(1, 0, bus=1)) == 0xFFFFFFFF  # bus 1: nothing behind
    for fn in range(1, 8):  # functions 1-7 of slot 1 (each of the 3 function bits decodes)
        assert m.mmio_read(cfg_addr(1, 0) + (fn << 12)) == 0xFFFFFFFF, fn
    cfg_write(m, 5, 0x10, 0x1234_0000)  # dropped, not a crash
    for off in (0x100, 0x104, 0xFFC):  # extended config space: nothing there (no capabilities), whatever is written
        cfg_write(m, 1, off, 0xFFFFFFFF)
        assert cfg_read(m, 1, off) == 0
    assert guest_errors(m) == 0


def test_ecam_rejects_unaligned_and_wide_accesses(machine):
    m = machine(transport="pci", rng=True)
    assert m.mmio_read(ECAM + (1 << 15), 8) == 0  # 8-byte config access
    m.mmio_write(ECAM + (1 << 15) + 0x10, 0xFFFFFFFF, 8)
    assert cfg_read(m, 1, 0x10) == 0  # the BAR did not change
    assert guest_errors(m) == 2


def test_device_tree_node(machine, guest):
    import libfdt

    m = machine(guest("hello"), transport="pci", rng=True)
    fdt = libfdt.Fdt(m.dtb())
    node = fdt.path_offset("/pcie@10000000")

    def prop(name: str) -> bytes:
        return bytes(fdt.getprop(node, name))

    def cells(name: str) -> list[int]:
        b = prop(name)
        return list(struct.unpack(f">{len(b) // 4}I", b))

    assert prop("compatible") == b"pci-host-ecam-generic\0"
    assert prop("device_type") == b"pci\0"
    # PCI bus binding: 3 address cells (phys.hi, mid, lo), 2 size cells, one interrupt cell (the pin)
    assert cells("#address-cells") == [3] and cells("#size-cells") == [2] and cells("#interrupt-cells") == [1]
    assert cells("linux,pci-domain") == [0]
    assert prop("dma-coherent") == b""  # present, empty: the devices' DMA is cache-coherent
    assert struct.unpack(">2Q", prop("reg")) == (0x3F00_0000, 0x0100_0000)
    assert cells("bus-range") == [0, 15]
    assert cells("ranges") == [0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2EFF_0000]
    assert cells("interrupt-map-mask") == [0x1800, 0, 0, 7]
    imap = cells("interrupt-map")
    assert len(imap) == 16 * 10
    gic = fdt.get_phandle(fdt.path_offset("/intc@8000000"))
    for e in range(16):
        slot, pin = e // 4, e % 4 + 1
        entry = imap[10 * e : 10 * e + 10]
        # child (3 address cells + pin), GIC phandle, parent address (2), SPI (slot + pin - 1) % 4 + 3, level
        assert entry == [slot << 11, 0, 0, pin, gic, 0, 0, 0, 3 + (slot + pin - 1) % 4, 4], e
    # the PCI transport brings the ITS: requester ID = ITS DeviceID
    its = fdt.path_offset("/intc@8000000/its@8080000")
    assert cells("msi-map") == [0, fdt.get_phandle(its), 0, 0x10000]


def test_mmio_transport_default_has_no_pci(machine, guest):
    m = machine(guest("hello"), rng=True)
    assert m.mmio_read(ECAM) == 0  # unclaimed device window: RAZ
    assert b"pci-host-ecam-generic" not in m.dtb()


def test_unknown_transport_is_one_clear_error():
    with pytest.raises(vmmpy.errors.InvalidArgument, match="transport must be one of mmio, pci"):
        vmmpy.Machine(transport="usb")


def test_device_types_outside_virtio_pci_range_are_refused(machine):
    with pytest.raises(vmmpy.errors.NotSupported, match="has no virtio-pci device ID"):
        machine(transport="pci", virtio_test_devices=1)


def test_snapshot_keeps_bars_vectors_and_msix_state(machine, guest, tmp_path):
    """A restored VM has the function as the guest left it: BAR, command, vectors, MSI-X table and PBA,
    and the ITS mapping its message goes through."""
    m = machine(guest("hello"), transport="pci", rng=True)
    unmask(m)
    Its(m).map_event(RNG_DEVID, 0x33, LPI + 0x33)
    dev = VirtioPCI(m, 1)
    dev.place_bars(MMIO_WINDOW + 0x20_0000)
    dev.msix_enable(True)
    (q,) = dev.init(queues=1, vectors=[1])
    dev.common_write(MSIX_CONFIG, 0, 2)
    dev.msix_entry(1, ITS_TRANSLATER, 0x33, masked=True)
    entropy(dev, q)
    assert q.get_used() and dev.msix_pending(1)
    m.dtb()  # prepared: a snapshot can be taken
    m.snapshot(tmp_path / "s.snap")
    r = vmmpy.Machine.restore(tmp_path / "s.snap")
    try:
        d2 = VirtioPCI(r, 1)
        d2.bar_addr = dict(dev.bar_addr)
        assert cfg_read(r, 1, 0x10) == MMIO_WINDOW + 0x20_0000
        assert cfg_read(r, 1, COMMAND, 2) & CMD_MEM
        assert d2.common_read(MSIX_CONFIG, 2) == 0
        d2.common_write(Q_SELECT, 0, 2)
        assert d2.common_read(Q_MSIX, 2) == 1
        assert d2.msix_pending(1)
        assert r.mmio_read(d2.msix_table() + 16 + 8) == 0x33
        assert lpis_taken(r) == []
        d2.msix_mask(1, False)  # the pending message goes out from the restored VM, through its ITS
        assert not d2.msix_pending(1)
        assert lpis_taken(r) == [LPI + 0x33]
    finally:
        r.close()


def test_snapshot_keeps_intx_asserted_and_the_isr_read_lowers_it(machine, guest, tmp_path):
    """INTA# raised by a request and not yet acknowledged: the restored VM drives it as loaded, and reading
    the ISR there lowers it."""
    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    entropy(dev, q)
    assert q.get_used() and m.irq_line(0)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    r = vmmpy.Machine.restore(tmp_path / "s.snap")
    try:
        d2 = VirtioPCI(r, 1)
        d2.bar_addr = dict(dev.bar_addr)
        assert r.irq_line(0) and cfg_read(r, 1, STATUS, 2) & STATUS_INTX
        assert d2.isr() == 1
        assert not r.irq_line(0) and not cfg_read(r, 1, STATUS, 2) & STATUS_INTX
    finally:
        r.close()


# ---- BARs -------------------------------------------------------------------------------------


def test_bar_sizing_and_read_only_bits(machine):
    m = machine(transport="pci", rng=True)
    cfg_write(m, 1, 0x10, 0xFFFFFFFF)
    assert cfg_read(m, 1, 0x10) == 0xFFFF_8000  # 32 KiB, 32-bit memory, not prefetchable
    cfg_write(m, 1, 0x10, 0x1234_567F)
    assert cfg_read(m, 1, 0x10) == 0x1234_0000  # size alignment and the flag bits are read-only
    for bar in range(1, 6):  # unimplemented BARs read 0 whatever is written
        cfg_write(m, 1, 0x10 + 4 * bar, 0xFFFFFFFF)
        assert cfg_read(m, 1, 0x10 + 4 * bar) == 0
    cfg_write(m, 1, 0x00, 0xFFFFFFFF)  # IDs are read-only
    assert cfg_read(m, 1, 0x00) == 0x1044_1AF4
    cfg_write(m, 1, COMMAND, 0xFFFF, 2)
    assert cfg_read(m, 1, COMMAND, 2) == 0x0406  # memory, bus master, Interrupt Disable; no I/O space
    assert cfg_read(m, 1, INT_PIN, 1) == 1  # INTA#


def test_bar_decodes_only_with_memory_enable_and_moves_when_reprogrammed(rng):
    m, dev = rng
    old = dev.bar_addr[0]
    assert dev.common_read(NUM_QUEUES, 2) == 1
    cfg_write(m, 1, COMMAND, 0, 2)  # memory space off: the BAR no longer decodes
    assert m.mmio_read(old + NUM_QUEUES, 2) == 0
    errors = guest_errors(m)
    new = MMIO_WINDOW + 0x0100_8000  # 32 KiB-aligned: bit 15 is the BAR's lowest address bit
    cfg_write(m, 1, 0x10, new)
    cfg_write(m, 1, COMMAND, CMD_MEM, 2)
    dev.bar_addr[0] = new
    assert dev.common_read(NUM_QUEUES, 2) == 1  # answers at the new address
    assert m.mmio_read(old + NUM_QUEUES, 2) == 0  # and no longer at the old one
    assert guest_errors(m) == errors + 1  # that read hit no BAR


def test_capabilities_start_at_0x40_and_follow_each_other(machine):
    """The capability list starts right after the type 0 header (0x40) and each capability follows the last,
    4-aligned: common, notify (20 bytes), ISR, device (if the device has a config space), pci_cfg window
    (20 bytes), MSI-X (12 bytes)."""
    m = machine(transport="pci", rng=True, gpu=True)
    assert cfg_read(m, 0, 0x34, 1) == 0 and not cfg_read(m, 0, STATUS, 2) & 0x10  # the bridge: no capabilities
    assert cfg_read(m, 1, 0x34, 1) == 0x40  # gpu: a device config space
    assert caps(m, 1) == [(0x40, CAP_VNDR), (0x50, CAP_VNDR), (0x64, CAP_VNDR), (0x74, CAP_VNDR),
                          (0x84, CAP_VNDR), (0x98, CAP_MSIX)]  # fmt: skip
    assert caps(m, 2) == [(0x40, CAP_VNDR), (0x50, CAP_VNDR), (0x64, CAP_VNDR), (0x74, CAP_VNDR),
                          (0x88, CAP_MSIX)]  # fmt: skip


def test_adjacent_bars_each_end_where_the_next_begins(machine):
    """A BAR covers [base, base + size): the first byte after it belongs to the next function's BAR."""
    m = machine(transport="pci", rng=True, gpu=True)
    first, second = VirtioPCI(m, 1), VirtioPCI(m, 2)
    first.place_bars()
    second.place_bars(first.bar_addr[0] + 0x8000)
    assert second.bar_addr[0] == first.bar_addr[0] + 0x8000 and second.caps[COMMON][1] == 0  # common config at 0
    second.common_write(0, 1, 4)  # device_feature_select, at the second BAR's first byte
    first.common_write(0, 0, 4)
    assert second.common_read(0, 4) == 1 and first.common_read(0, 4) == 0
    assert second.device_features() >> 32 & 1  # VERSION_1, read through the select written above
    assert guest_errors(m) == 0


# ---- capabilities and the common configuration ------------------------------------------------


def test_capabilities_describe_the_bar(machine):
    m = machine(transport="pci", disk=None, rng=True, gpu=True)
    dev = VirtioPCI(m, 1)  # the GPU: it has device config
    ids = [cid for _, cid in caps(m, 1)]
    assert ids == [CAP_VNDR] * 5 + [CAP_MSIX]
    assert cfg_read(m, 1, STATUS, 2) & 0x10  # capabilities list
    assert dev.caps[COMMON] == (0, 0x0000, 0x3C)
    assert dev.caps[NOTIFY] == (0, 0x3000, 4 * 2)  # two queues, multiplier 4
    assert dev.notify_mult == 4
    assert dev.caps[ISR] == (0, 0x1000, 1)
    assert dev.caps[DEVICE_CFG][:2] == (0, 0x2000)
    assert dev.msix_size == 3  # a vector per queue and one for configuration changes
    assert cfg_read(m, 1, dev.msix_cap + 4) == 0x4000 and cfg_read(m, 1, dev.msix_cap + 8) == 0x5000
    assert VirtioPCI(m, 2).caps.get(DEVICE_CFG) is None  # virtio-rng has no device config
    off = caps(m, 1)[0][0]
    cfg_write(m, 1, off + 8, 0xFFFFFFFF)  # capabilities are read-only
    assert cfg_read(m, 1, off + 8) == dev.caps[COMMON][1]


def pci_cfg_window(m, slot: int) -> int:
    """The config-space offset of the VIRTIO_PCI_CAP_PCI_CFG capability (cfg_type 5)."""
    return next(o for o, cid in caps(m, slot) if cid == CAP_VNDR and cfg_read(m, slot, o + 3, 1) == 5)


def test_pci_cfg_capability_reaches_the_bar_through_config_space(rng, caplog):
    """§4.1.4.9: cap.bar/offset/length select a BAR location; pci_cfg_data reads and writes it."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, dev = rng
    at = pci_cfg_window(m, 1)
    assert cfg_read(m, 1, at + 2, 1) == 20  # cap_len: the capability and pci_cfg_data

    def window(off: int, length: int) -> None:
        cfg_write(m, 1, at + 4, 0, 1)  # bar 0
        cfg_write(m, 1, at + 8, off)
        cfg_write(m, 1, at + 12, length)

    window(NUM_QUEUES, 2)
    assert cfg_read(m, 1, at + 16) == 1  # num_queues, through config space
    window(0x14, 1)  # device_status
    cfg_write(m, 1, at + 16, 1, 1)  # ACKNOWLEDGE
    assert dev.status() == 1
    window(0x4000 + 8, 4)  # MSI-X table entry 0, Message Data
    cfg_write(m, 1, at + 16, 0x3CA5_5A5A)  # all four bytes of pci_cfg_data
    assert m.mmio_read(dev.msix_table() + 8) == 0x3CA5_5A5A
    cfg_write(m, 1, COMMAND, 0, 2)  # it works with memory decoding off too: it is a config access
    assert cfg_read(m, 1, at + 16) == 0x3CA5_5A5A
    errors = guest_errors(m)
    window(0x12, 3)  # length must be 1, 2 or 4
    cfg_read(m, 1, at + 16)
    assert "PCI config window: bar 0 offset 0x12 length 3" in caplog.text
    window(0x13, 2)  # and the offset aligned to it
    cfg_read(m, 1, at + 16)
    window(0x1_8000, 4)  # inside the BAR
    cfg_write(m, 1, at + 16, 1)
    assert "PCI config window: bar 0 offset 0x18000 length 4" in caplog.text
    cfg_write(m, 1, at + 4, 1, 1)  # cap.bar is the driver's to write: BAR 1, which this function lacks
    assert cfg_read(m, 1, at + 4, 1) == 1
    window(NUM_QUEUES, 2)
    cfg_write(m, 1, at + 4, 1, 1)
    cfg_read(m, 1, at + 16)
    assert guest_errors(m) == errors + 4


def test_common_config_queue_registers(rng, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, dev = rng
    dev.common_write(NUM_QUEUES, 5, 2)
    assert "write of 0x5 to read-only common config field 0x12" in caplog.text
    dev.common_write(GFSELECT, 1, 4)  # driver_feature_select reads back
    assert dev.common_read(GFSELECT, 4) == 1
    dev.common_write(GFSELECT, 0, 4)  # driver_feature reads back the word selected (before FEATURES_OK)
    dev.common_write(GF, 1 << 28, 4)
    dev.common_write(GFSELECT, 1, 4)
    dev.common_write(GF, 1, 4)
    assert dev.common_read(GF, 4) == 1
    dev.common_write(GFSELECT, 0, 4)
    assert dev.common_read(GF, 4) == 1 << 28
    dev.common_write(GFSELECT, 2, 4)  # there are two words
    assert dev.common_read(GF, 4) == 0
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    assert dev.common_read(Q_SIZE, 2) > 0
    dev.common_write(Q_SELECT, 7, 2)  # no such queue: size 0, vector NO_VECTOR
    assert dev.common_read(Q_SIZE, 2) == 0
    assert dev.common_read(Q_MSIX, 2) == NO_VECTOR
    dev.common_write(Q_MSIX, 0, 2)
    assert guest_errors(m) == 2  # with the num_queues write
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, 1, 2)
    assert dev.common_read(Q_MSIX, 2) == 1
    dev.common_write(Q_MSIX, 2, 2)  # beyond the table (2 vectors): NO_VECTOR reads back (§4.1.4.3)
    assert dev.common_read(Q_MSIX, 2) == NO_VECTOR
    dev.common_write(MSIX_CONFIG, 0, 2)
    assert dev.common_read(MSIX_CONFIG, 2) == 0
    dev.set_status(0)  # a device reset puts the vectors back
    assert dev.common_read(MSIX_CONFIG, 2) == NO_VECTOR
    dev.common_write(Q_DESC, 0x0000_0001_2345_6000, 8)  # a 64-bit field: one QWORD, or two DWORDs
    assert dev.common_read(Q_DESC, 8) == 0x0000_0001_2345_6000
    assert (dev.common_read(Q_DESC, 4), dev.common_read(Q_DESC + 4, 4)) == (0x2345_6000, 1)
    dev.common_write(Q_DRIVER, 0x0000_0002_3456_7000, 8)  # each 64-bit field's DWORDs are its own
    dev.common_write(Q_DEVICE, 0x0000_0003_4567_8000, 8)
    for off, val in ((Q_DESC, 0x0000_0001_2345_6000), (Q_DRIVER, 0x0000_0002_3456_7000), (Q_DEVICE, 0x3_4567_8000)):
        assert (dev.common_read(off, 4), dev.common_read(off + 4, 4)) == (val & 0xFFFF_FFFF, val >> 32)
    dev.common_write(Q_DRIVER + 4, 5, 4)  # a DWORD write changes its own half only: the high one
    dev.common_write(Q_DEVICE, 0x4567_9000, 4)  # and the low one
    assert (dev.common_read(Q_DRIVER, 8), dev.common_read(Q_DEVICE, 8)) == (0x5_3456_7000, 0x3_4567_9000)
    errors = guest_errors(m)
    assert dev.common_read(Q_SIZE + 1, 1) == 0  # half a field
    m.mmio_write(dev.addr(NOTIFY, 2), 0, 2)  # between two queues' notify offsets
    m.mmio_write(dev.addr(NOTIFY, 4 * 5), 0, 2)  # a queue that does not exist
    m.mmio_write(dev.addr(ISR), 1, 1)  # the ISR is read-only: between it and the device config, nothing
    assert guest_errors(m) == errors + 4
    assert "1-byte write at BAR offset 0x1000" in caplog.text


def test_queue_reset_writes_one_to_reset_and_the_range_past_common_config_is_refused(rng):
    """§4.1.4.3: writing 1 to queue_reset resets the selected queue (disabled, its addresses cleared, its
    size back to the maximum), 0 changes nothing; common config ends at queue_reset (0x3c): the rest of its
    page is nothing, each access a guest error."""
    m, dev = rng
    (q,) = dev.init(1)
    dev.common_write(Q_SELECT, 0, 2)
    errors = guest_errors(m)
    dev.common_write(Q_RESET, 0, 2)
    assert (dev.common_read(Q_ENABLE, 2), dev.common_read(Q_DESC, 8)) == (1, q.desc)
    dev.common_write(Q_SIZE, 0, 2)  # not while enabled (§4.1.4.3.2): the size stays
    size = dev.common_read(Q_SIZE, 2)
    dev.common_write(Q_RESET, 1, 2)
    assert (dev.common_read(Q_ENABLE, 2), dev.common_read(Q_DESC, 8), dev.common_read(Q_RESET, 2)) == (0, 0, 0)
    assert dev.common_read(Q_SIZE, 2) == size
    assert guest_errors(m) == errors + 1  # the queue_size write while enabled
    for off in (0x3C, 0x3E, 0x40, 0xFFE):
        assert dev.common_read(off, 2) == 0
        dev.common_write(off, 0xFFFF, 2)
    assert guest_errors(m) == errors + 9
    for reg, addr in ((Q_DESC, q.desc), (Q_DRIVER, q.avail), (Q_DEVICE, q.used)):  # ready to go live again
        dev.common_write(reg, addr, 8)
    dev.common_write(Q_ENABLE, 0, 2)  # only 1 may be written (§4.1.4.3.2): refused, the queue stays off
    assert dev.common_read(Q_ENABLE, 2) == 0 and guest_errors(m) == errors + 10
    dev.common_write(Q_ENABLE, 1, 2)
    assert dev.common_read(Q_ENABLE, 2) == 1 and guest_errors(m) == errors + 10


def test_pci_cfg_window_writes_the_whole_field_it_selects(rng):
    """A 1- or 2-byte pci_cfg_data write reaches the BAR with all of its bits (and only those)."""
    m, dev = rng
    at = pci_cfg_window(m, 1)
    cfg_write(m, 1, at + 4, 0, 1)  # bar 0
    cfg_write(m, 1, at + 8, Q_SELECT)
    cfg_write(m, 1, at + 12, 2)
    cfg_write(m, 1, at + 16, 0xFFFF_8401)  # a 4-byte write of the data field: its low 2 bytes go
    assert dev.common_read(Q_SELECT, 2) == 0x8401
    cfg_write(m, 1, at + 8, 0x14)  # device_status, one byte
    cfg_write(m, 1, at + 12, 1)
    cfg_write(m, 1, at + 16, 0x1_01, 2)  # ACKNOWLEDGE, and a byte beyond the field's
    assert dev.status() == 1 and guest_errors(m) == 0


def test_bar_reads_wait_for_the_device_lock(machine, tmp_path):
    """A BAR read takes the device's lock, as the device's own work does: while a NIC's transmit blocks in
    its capture write (a full FIFO nobody reads), a read of its common config waits, and completes once
    the FIFO is drained."""
    import fcntl
    import threading

    from .test_net_host import read_while_a_capture_blocks

    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: the capture's open does not wait
    try:
        m = machine(transport="pci", disk=None, net=vmmpy.Network(), net_capture=fifo)
        dev = VirtioPCI(m, 1)
        dev.place_bars()
        _, tx = dev.init(2)
        size = fcntl.fcntl(rfd, 1032)  # F_GETPIPE_SZ
        sender = threading.Thread(target=lambda: (tx.add([bytes(12), b"\xff" * 6 + bytes(8 + size)], []), tx.notify()))
        # the frame alone is larger than the pipe: its write blocks, the device's lock held
        waited, got = read_while_a_capture_blocks(rfd, sender, lambda: dev.common_read(NUM_QUEUES, 2))
        assert waited, "the BAR was read while the device was busy"
        assert got == [2]
    finally:
        os.close(rfd)


# ---- interrupts: INTx -------------------------------------------------------------------------


def test_request_raises_intx_until_the_isr_is_read(rng):
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    entropy(dev, q)
    assert q.get_used() and m.irq_line(0)
    assert cfg_read(m, 1, STATUS, 2) & STATUS_INTX
    assert dev.isr() == 1  # the queue bit; reading clears it (§4.1.4.5)
    assert not m.irq_line(0)
    assert not cfg_read(m, 1, STATUS, 2) & STATUS_INTX
    assert dev.isr() == 0


def test_interrupt_disable_holds_intx_back(rng):
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    cfg_write(m, 1, COMMAND, cfg_read(m, 1, COMMAND, 2) | CMD_INTX_DISABLE, 2)
    entropy(dev, q)
    assert q.get_used() and not m.irq_line(0)
    assert cfg_read(m, 1, STATUS, 2) & STATUS_INTX  # the function's own state still shows
    cfg_write(m, 1, COMMAND, cfg_read(m, 1, COMMAND, 2) & ~CMD_INTX_DISABLE, 2)
    assert m.irq_line(0)


def test_intx_swizzle_by_slot(machine):
    """INTA# of slot s is SPI 3 + s % 4: slots 1 and 5 share INTID 36."""
    m = machine(transport="pci", disk=None, input=True, rng=True, virtio_console=True, gpu=True)
    slots = [s for s, _, _ in find_functions(m)][1:]
    assert [VirtioPCI(m, s).intx_intid for s in slots] == [35 + s % 4 for s in slots]


# ---- interrupts: MSI-X ------------------------------------------------------------------------


def has_its(m) -> bool:
    return b"arm,gic-v3-its" in m.dtb()


MSI_DATA = 0x21  # the EventID the tests program into vector 0
RNG_DEVID = 8  # requester ID of 00:01.0 (devfn 8): the ITS DeviceID (msi-map is the identity)


def lpis_taken(m) -> list[int]:
    """Acknowledge (and EOI) every pending interrupt of CPU 0: the INTIDs, in order."""
    got = []
    while (intid := take(m)) != 1023:
        got.append(intid)
    return got


def assert_sent(m, n: int) -> None:
    """`n` MSIs of vector 0 reached the GIC through the ITS since the last call: one LPI (it does not queue)."""
    assert lpis_taken(m) == ([LPI + MSI_DATA] if n else [])


@pytest.fixture
def msix(rng):
    """MSI-X on, queue 0 on vector 0 (doorbell: the ITS's GITS_TRANSLATER, data 0x21), entry masked."""
    m, dev = rng
    assert has_its(m)  # the PCI transport brings the ITS
    unmask(m)
    Its(m).map_event(RNG_DEVID, MSI_DATA, LPI + MSI_DATA)
    dev.msix_enable(True)
    (q,) = dev.init(queues=1, vectors=[0])
    dev.msix_entry(0, ITS_TRANSLATER, MSI_DATA, masked=True)
    return m, dev, q


def test_msix_table_resets_masked_and_reads_back(rng):
    m, dev = rng
    for vec in range(dev.msix_size):
        assert m.mmio_read(dev.msix_table() + 16 * vec + 12) == 1  # masked after reset (§6.8.2.9)
    for w in range(4 * dev.msix_size):  # address and data 0 after reset, control 1
        assert m.mmio_read(dev.msix_table() + 4 * w) == (1 if w % 4 == 3 else 0), w
    dev.msix_entry(1, 0x7_2345_6780, 0xBEEF, masked=False)
    at = dev.msix_table() + 16
    assert m.mmio_read(at, 8) == 0x7_2345_6780  # a QWORD read: the high word from the same entry
    assert dev.common_read(CONFIG_GENERATION, 1) == 0  # nothing changed the device's configuration yet
    assert m.mmio_read(at + 8) == 0xBEEF and m.mmio_read(at + 12) == 0
    m.mmio_write(at + 12, 0xFFFFFFFF)
    assert m.mmio_read(at + 12) == 1  # reserved vector-control bits stay 0
    errors = guest_errors(m)
    m.mmio_write(at + 8, 0x1111, 2)  # §6.8.2: DWORD or QWORD only
    assert m.mmio_read(at + 8) == 0xBEEF
    m.mmio_write(dev.msix_pba(), 1)  # the PBA is read-only
    assert not dev.msix_pending(0)
    assert guest_errors(m) == errors + 2


def test_msix_qword_and_dword_writes_touch_only_their_words(rng):
    """A QWORD write fills two DWORDs of the entry (address low/high, or data/control); a DWORD write
    changes its own word only."""
    m, dev = rng
    at = dev.msix_table() + 16
    m.mmio_write(at, 0x0000_0012_3456_7800, 8)
    m.mmio_write(at + 8, 0x0000_0000_0000_BEEF, 8)  # data 0xbeef, control 0 (unmasked; MSI-X is off)
    assert [m.mmio_read(at + 4 * w) for w in range(4)] == [0x3456_7800, 0x12, 0xBEEF, 0]
    m.mmio_write(at + 8, 0x0000_0001_0000_F00D, 8)  # masked again
    assert [m.mmio_read(at + 4 * w) for w in range(4)] == [0x3456_7800, 0x12, 0xF00D, 1]
    m.mmio_write(at, 0x9999_0000)  # the low address alone: the high word stays
    m.mmio_write(at + 8, 0xCAFE)  # the data alone: still masked
    assert [m.mmio_read(at + 4 * w) for w in range(4)] == [0x9999_0000, 0x12, 0xCAFE, 1]
    assert m.mmio_read(at - 16 + 12) == 1 and m.mmio_read(at + 16) == 0  # the neighbours untouched


def test_msix_accesses_past_the_table_and_into_the_pba_are_refused(rng):
    """The table is nvec entries long: the DWORD after it is not an entry; the PBA's words are read-only."""
    m, dev = rng
    end = dev.msix_table() + 16 * dev.msix_size
    errors = guest_errors(m)
    m.mmio_write(end, 0x1234)
    assert m.mmio_read(end) == 0 and guest_errors(m) == errors + 2
    table = [m.mmio_read(dev.msix_table() + 4 * w) for w in range(4 * dev.msix_size)]
    for off in (0, 4):  # both DWORDs of the first PBA QWORD
        m.mmio_write(dev.msix_pba() + off, 0xFFFF_FFFF)
    assert m.mmio_read(dev.msix_pba(), 8) == 0 and guest_errors(m) == errors + 4
    assert [m.mmio_read(dev.msix_table() + 4 * w) for w in range(4 * dev.msix_size)] == table
    dev.msix_entry(0, 0xFFFF_FFFC, 0xFFFF_FFFF, masked=True)
    for at in (dev.msix_table(), dev.msix_table() + 2, dev.msix_pba()):  # WORD and BYTE accesses: refused, 0
        assert m.mmio_read(at, 2) == 0 and m.mmio_read(at, 1) == 0
    assert guest_errors(m) == errors + 10


def _msix_snapshot(machine, guest, tmp_path, vec: int, data: int):
    """A snapshot of a PCI rng whose MSI-X vector `vec` is programmed (masked) with `data`: the function, the
    file's bytes, the offset and length of the section holding its MSI-X table, and the entry's offset."""
    from .test_snapshot import sections

    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.msix_entry(vec, ITS_TRANSLATER, data, masked=True)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    entry = struct.pack("<IIII", ITS_TRANSLATER, 0, data, 1)
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if entry in good[o : o + n]]
    return dev, good, off, plen, good.index(entry, off)


def test_snapshot_with_reserved_msix_control_bits_is_refused(machine, guest, tmp_path):
    from .test_snapshot_devices import with_section_crc

    dev, good, off, plen, at = _msix_snapshot(machine, guest, tmp_path, 1, 0x5A5A)
    ctrl = at + 12
    for bad, match in ((3, "MSI-X vector 1 control 0x3 has reserved bits"),):
        data = bytearray(good)
        struct.pack_into("<I", data, ctrl, bad)
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        with pytest.raises(vmmpy.errors.VmmError, match=match):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()
    pba = ctrl + 4 + 16 * (dev.msix_size - 2)  # the PBA's first word follows the table
    data = bytearray(good)
    struct.pack_into("<Q", data, pba, 1 << dev.msix_size)  # the bit of a vector the function does not have
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match=f"MSI-X pending bits beyond vector {dev.msix_size - 1}$"):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_snapshot_with_another_function_count_is_refused(machine, guest, tmp_path):
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", rng=True)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    data = bytearray((tmp_path / "s.snap").read_bytes())
    ((off, plen),) = [(o, n) for name, o, n in sections(bytes(data)) if name.startswith("pci-host")]
    assert struct.unpack_from("<I", data, off)[0] == 2  # the bridge and the rng
    struct.pack_into("<I", data, off, 3)
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match="3 PCI functions saved, this bus has 2"):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_device_config_reads_through_the_bar(machine):
    m = machine(transport="pci", gpu=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    # virtio-gpu's configuration (§5.7.4): events_read, events_clear, num_scanouts, num_capsets
    assert m.mmio_read(dev.addr(DEVICE_CFG, 8)) == 1  # one scanout
    assert m.mmio_read(dev.addr(DEVICE_CFG, 0)) == 0 and guest_errors(m) == 0
    m.mmio_write(dev.addr(DEVICE_CFG, 4), 1)  # events_clear, past the start of the device's window
    assert guest_errors(m) == 0


def test_msix_masked_vector_sets_its_pending_bit_and_unmasking_delivers(msix):
    m, dev, q = msix
    entropy(dev, q)
    assert q.get_used()
    assert dev.msix_pending(0)
    # a DWORD read of the PBA gives its own half of the QWORD: vector 0's bit in the low one (§6.8.2.10)
    assert [m.mmio_read(dev.msix_pba() + off) for off in (0, 4)] == [1, 0]
    assert not m.irq_line(0)  # MSI-X on: INTx is not used, and the masked vector sent nothing
    assert_sent(m, 0)
    dev.msix_mask(0, False)
    assert not dev.msix_pending(0)
    # the message as the guest programmed it (EventID MSI_DATA), from requester 00:01.0: the mapped LPI
    assert m.irq_line(0)
    assert_sent(m, 1)


def test_msix_function_mask_releases_a_vector_past_the_first(rng):
    """Clearing the function mask sends every pending unmasked vector: queue 0 on vector 1 here."""
    m, dev = rng
    unmask(m)
    Its(m).map_event(RNG_DEVID, MSI_DATA, LPI + MSI_DATA)
    dev.msix_enable(True, mask_all=True)
    (q,) = dev.init(queues=1, vectors=[1])
    dev.msix_entry(1, ITS_TRANSLATER, MSI_DATA, masked=False)
    entropy(dev, q)
    assert q.get_used() and dev.msix_pending(1) and not dev.msix_pending(0)
    assert_sent(m, 0)
    dev.msix_enable(True, mask_all=False)
    assert not dev.msix_pending(1)
    assert_sent(m, 1)


def test_msix_function_mask_holds_every_vector(msix):
    m, dev, q = msix
    dev.msix_mask(0, False)
    dev.msix_enable(True, mask_all=True)
    entropy(dev, q)
    assert q.get_used() and dev.msix_pending(0)
    assert_sent(m, 0)
    dev.msix_enable(True, mask_all=False)
    assert not dev.msix_pending(0)
    assert_sent(m, 1)


def test_msix_unmasking_sends_only_what_is_pending(msix):
    """Unmasking (a vector, or the whole function through Message Control) sends the vectors whose pending
    bit is set, and nothing for one that has nothing pending."""
    m, dev, q = msix
    dev.msix_mask(0, False)
    dev.msix_enable(True, mask_all=True)
    dev.msix_enable(True, mask_all=False)
    dev.msix_enable(True)
    assert not dev.msix_pending(0)
    assert_sent(m, 0)


def test_msix_no_vector_sends_nothing(msix):
    m, dev, q = msix
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, NO_VECTOR, 2)
    dev.msix_mask(0, False)
    entropy(dev, q)
    assert q.get_used() and not dev.msix_pending(0) and not m.irq_line(0)
    assert_sent(m, 0)


def test_msix_config_vector_carries_config_changes_only(msix):
    """With MSI-X on, a queue interrupt goes to its vector (here none), a configuration change (NEEDS_RESET) to
    the config vector, and an ISR read (the device lowering its state) sends nothing; INTx stays idle
    throughout, the Status register's Interrupt Status bit included."""
    m, dev, q = msix
    dev.common_write(MSIX_CONFIG, 0, 2)
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, NO_VECTOR, 2)
    dev.msix_mask(0, False)
    entropy(dev, q)
    assert q.get_used() and not dev.msix_pending(0)
    assert not cfg_read(m, 1, STATUS, 2) & STATUS_INTX and not m.irq_line(0)
    assert dev.isr() == 1  # the queue bit, read and cleared: nothing to send
    assert_sent(m, 0)
    buf = q.buf(16)
    q.write_desc(0, buf, 16, flags=1 | 2, next=0)  # NEXT | WRITE, chained to itself: a loop
    q.publish(0)
    q.notify()
    assert dev.status() & 64  # NEEDS_RESET
    assert_sent(m, 1)  # the configuration change, on the config vector
    assert not cfg_read(m, 1, STATUS, 2) & STATUS_INTX and not m.irq_line(0)


def test_msix_message_to_an_unmapped_event_is_dropped(msix):
    """An EventID the ITS has no mapping for is dropped there (IHI0069 §5.3: no LPI), not raised."""
    m, dev, q = msix
    dev.msix_entry(0, ITS_TRANSLATER, MSI_DATA + 1, masked=False)
    entropy(dev, q)
    assert q.get_used() and not dev.msix_pending(0)
    assert not m.irq_line(0) and lpis_taken(m) == []


def test_msix_message_address_uses_both_words(msix):
    """The doorbell is Message Upper Address << 32 | Message Address: with an upper word set, a low word that
    alone would be the ITS's GITS_TRANSLATER names an address where nothing answers (no LPI)."""
    m, dev, q = msix
    dev.msix_entry(0, (0x20 << 32) | (ITS_TRANSLATER - 0x40), MSI_DATA, masked=False)
    entropy(dev, q)
    assert q.get_used() and not dev.msix_pending(0)
    assert lpis_taken(m) == []


def test_snapshot_with_a_changed_read_only_config_byte_is_refused(machine, guest, tmp_path):
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", rng=True)
    VirtioPCI(m, 1).place_bars()
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    ids = struct.pack("<HH", 0x1AF4, RNG)  # the rng's vendor and device IDs open its config space
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if ids in good[o : o + n]]
    at = good.index(ids, off)
    # the device ID's low byte, the vendor ID's (the first byte of config space) and the last byte's
    for byte, was in ((0x02, 0x44), (0x00, 0xF4), (0xFF, 0x00)):
        data = bytearray(good)
        data[at + byte] ^= 0x01
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        match = f"config byte {byte:#04x} is {was ^ 1:#04x}, its read-only bits say {was:#04x}"
        with pytest.raises(vmmpy.errors.VmmError, match=match):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()
    (tmp_path / "bad.snap").write_bytes(good)  # and the file as saved restores
    vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_snapshot_with_another_msix_vector_count_is_refused(machine, guest, tmp_path):
    from .test_snapshot_devices import with_section_crc

    dev, good, off, plen, at = _msix_snapshot(machine, guest, tmp_path, 0, 0x7B7B)
    count = at - 4  # the vector count precedes the table
    assert struct.unpack_from("<I", good, count)[0] == dev.msix_size
    for saved in (dev.msix_size + 1, dev.msix_size - 1):  # more or fewer
        data = bytearray(good)
        struct.pack_into("<I", data, count, saved)
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        with pytest.raises(
            vmmpy.errors.VmmError, match=f"{saved} MSI-X vectors saved, this function has {dev.msix_size}"
        ):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_snapshot_with_a_pending_vector_nothing_masks_is_refused(machine, guest, tmp_path):
    """A live function sends a pending vector as soon as nothing masks it: a snapshot holding one pending with
    MSI-X on and neither the vector nor the function masked is refused; pending and masked loads."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.msix_enable(True)
    dev.msix_entry(1, ITS_TRANSLATER, 0x6B6B, masked=True)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    entry = struct.pack("<IIII", ITS_TRANSLATER, 0, 0x6B6B, 1)
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if entry in good[o : o + n]]
    ctrl = good.index(entry, off) + 12
    pba = ctrl + 4 + 16 * (dev.msix_size - 2)  # the PBA's first word follows the table
    for masked, refused in ((1, False), (0, True)):
        data = bytearray(good)
        struct.pack_into("<I", data, ctrl, masked)
        struct.pack_into("<Q", data, pba, 1 << 1)
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        if not refused:
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()
            continue
        with pytest.raises(vmmpy.errors.VmmError, match="MSI-X vector 1 is pending with neither it nor the function"):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_reads_of_the_notification_region_are_guest_errors_naming_the_bar_offset(machine, caplog):
    """§4.1.4.4: the notification structure is for the driver's writes; a read there (its first byte included,
    right after the device configuration's window) answers 0 and is a guest error naming the BAR offset, not a
    device configuration access."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", gpu=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    notify = dev.caps[NOTIFY][1]
    errors = guest_errors(m)
    for off, size in ((0, 4), (0, 1), (4, 2)):
        assert m.mmio_read(dev.addr(NOTIFY, off), size) == 0
        assert f"{size}-byte read at BAR offset 0x{notify + off:04x}" in caplog.text
    assert guest_errors(m) == errors + 3 and "config space access" not in caplog.text


def test_snapshot_with_a_bad_intx_level_flag_is_refused(machine, guest, tmp_path):
    """A function's section: its 256 bytes of config space, then INTA#'s level as a one-byte flag, then the
    MSI-X vector count. A flag other than 0 or 1 is refused (1 restores: the line is then driven as the
    device's ISR says)."""
    from .test_snapshot_devices import with_section_crc

    dev, good, off, plen, at = _msix_snapshot(machine, guest, tmp_path, 0, 0x7C7C)
    ids = struct.pack("<HH", 0x1AF4, RNG)
    cfg = good.index(ids, off)
    flag = cfg + 256
    assert good[flag] == 0 and struct.unpack_from("<I", good, flag + 1)[0] == dev.msix_size == 2
    assert flag + 5 == at  # the table follows the count
    for value, refused in ((1, False), (2, True), (0xFF, True)):
        data = bytearray(good)
        data[flag] = value
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        if not refused:
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()
            continue
        with pytest.raises(vmmpy.errors.VmmError, match=f"a flag is {value}"):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_snapshot_errors_about_the_host_bridge_name_it(machine, guest, tmp_path):
    """The host bridge is function 00:00.0 of the bus, named pci-host.00:00.0 in what is said about it: a changed
    read-only byte of its config space (its device ID, 0x0008) is refused naming it."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", rng=True)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    ids = struct.pack("<HH", 0x1B36, 0x0008)  # the bridge's vendor and device IDs open its config space
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if ids in good[o : o + n]]
    data = bytearray(good)
    data[good.index(ids, off) + 2] ^= 0x01
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(
        vmmpy.errors.VmmError, match=r"pci-host\.00:00\.0: config byte 0x02 is 0x09, its read-only bits say 0x08"
    ):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()


# One allocation of virtio_create failing: calloc of the queue array (a virtq's size taken from csrc/dev/virtq.h).
FAIL_QUEUES_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include "@ROOT@/csrc/dev/virtq.h"
extern void *__libc_calloc(size_t, size_t);
void *calloc(size_t n, size_t size)
{
    static int failed;
    Dl_info di;
    if (!failed && size == sizeof(struct vmm_virtq) && dladdr(__builtin_return_address(0), &di) && di.dli_fname &&
        strstr(di.dli_fname, "_vmm")) {
        failed = 1;
        return NULL;
    }
    return __libc_calloc(n, size);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_a_device_that_fails_after_taking_its_slot_gives_the_slot_back(tmp_path):
    """virtio-pci takes a slot of bus 0 before the virtio core allocates the device's queues: when that fails
    (ENOMEM), the slot is given back, so the next device gets 00:01.0 and 00:02.0 stays empty (all ones)."""
    from .conftest import ROOT, run_with_shim

    script = (
        "from vmmpy._ffi import ffi, lib\n"
        "cfg = ffi.new('struct vmm_config *')\n"
        "cfg.size = ffi.sizeof('struct vmm_config')\n"
        "cfg.transport = lib.VMM_TRANSPORT_PCI\n"
        "out, val = ffi.new('vmm_vm **'), ffi.new('uint64_t *')\n"
        "assert lib.vmm_create(cfg, out, ffi.NULL, 0) == 0\n"
        "print(lib.vmm_add_rng(out[0]) == lib.VMM_ENOMEM, lib.vmm_add_rng(out[0]))\n"
        "for slot in (1, 2):\n"
        f"    assert lib.vmm_mmio_read(out[0], {ECAM} + (slot << 15), 4, val) == 0\n"
        "    print(hex(val[0]))\n"
        "lib.vmm_destroy(out[0])\n"
    )
    r = run_with_shim(tmp_path, FAIL_QUEUES_C.replace("@ROOT@", str(ROOT)), script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "0", hex(0x1040 + 4 << 16 | 0x1AF4), "0xffffffff"]
