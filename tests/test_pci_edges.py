"""Tier 1: edges of the PCIe host bridge, config space, MSI-X and the virtio-pci transport that
tests/test_pci.py and tests/test_pci_regs.py leave open, through the public API (ECAM config space and
the BARs over vmm_mmio_read/write, the guest-error count and messages)."""

from __future__ import annotations

import logging

import pytest

import vmmpy

from .pci_driver import (
    CONFIG_GENERATION,
    DEVICE_CFG,
    DFSELECT,
    FEATURES_OK,
    GFSELECT,
    MSIX_CONFIG,
    NO_VECTOR,
    NOTIFY,
    Q_DESC,
    Q_DEVICE,
    Q_DRIVER,
    Q_ENABLE,
    Q_MSIX,
    Q_RESET,
    Q_SELECT,
    STATUS,
    STATUS_CAPS,
    STATUS_INTX,
    VirtioPCI,
    caps,
    cfg_read,
    cfg_write,
    find_functions,
)
from .test_pci import assert_sent, entropy, guest_errors, msix, pci_cfg_window, rng  # noqa: F401 (fixtures)

BLK, CONSOLE, RNG, P9, GPU, INPUT, NET = 0x1042, 0x1043, 0x1044, 0x1049, 0x1050, 0x1052, 0x1041


def test_each_device_type_has_the_pci_class_qemu_gives_it(machine, tmp_path):
    """The class code (PCI Local Bus 3.0 §6.2.1, Appendix D) of each virtio-pci function, as QEMU's
    virtio-*-pci devices have it: a driver binds by vendor and device ID (virtio 1.2 §4.1.2.1), but lspci
    and firmware read the class."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(65536))
    share = tmp_path / "share"
    share.mkdir()
    m = machine(transport="pci", disk=str(disk), rng=True, gpu=True, input=True, virtio_console=True,
                share=[str(share)], net=vmmpy.Network())  # fmt: skip
    want = {BLK: 0x0100, CONSOLE: 0x0780, RNG: 0x00FF, P9: 0x0280, GPU: 0x0380, INPUT: 0x0980, NET: 0x0200}
    got = {dev: cfg_read(m, slot, 0x08) for slot, _, dev in find_functions(m)[1:]}
    assert got == {dev: cls << 16 | 1 for dev, cls in want.items()}  # revision 1: modern only


def test_each_virtio_capability_states_its_own_length(machine):
    """struct virtio_pci_cap (virtio 1.2 §4.1.4): cap_len is the capability's length, 16 bytes, 20 for the
    notify capability (notify_off_multiplier follows) and the PCI config window (pci_cfg_data follows); the
    capability's BAR is 0, its three padding bytes 0."""
    m = machine(transport="pci", gpu=True)
    vndr = [o for o, cid in caps(m, 1) if cid == 0x09]
    assert [(cfg_read(m, 1, o + 3, 1), cfg_read(m, 1, o + 2, 1)) for o in vndr] == [
        (1, 16), (2, 20), (3, 16), (4, 16), (5, 20)]  # fmt: skip
    assert all(cfg_read(m, 1, o + 4) == 0 for o in vndr)
    m = machine(transport="pci", input=True)  # a device configuration of 136 bytes (virtio 1.2 §5.8.4)
    assert VirtioPCI(m, 1).caps[DEVICE_CFG] == (0, 0x2000, 136)


def writable_bits(m, slot: int) -> dict[int, int]:
    """Each config byte's bits that take a write (writing all ones, then all zeros, then the old value)."""
    out = {}
    for off in range(256):
        old = cfg_read(m, slot, off, 1)
        cfg_write(m, slot, off, 0xFF, 1)
        ones = cfg_read(m, slot, off, 1)
        cfg_write(m, slot, off, 0, 1)
        zeros = cfg_read(m, slot, off, 1)
        cfg_write(m, slot, off, old, 1)
        if ones != zeros:
            out[off] = ones ^ zeros
    return out


def test_only_the_registers_a_driver_owns_take_its_writes(machine, caplog):
    """Every other bit of config space is read-only (PCI Local Bus 3.0 §6.1, §6.2): of the header, Command's
    Memory Space, Bus Master and Interrupt Disable, the cache line size, BAR 0's address bits above its 32 KiB
    and the Interrupt Line; of the capabilities, the PCI config window's bar, offset, length and pci_cfg_data
    (virtio 1.2 §4.1.4.9) and MSI-X Enable and Function Mask (§6.8.2.3). The host bridge: the same header
    registers, no BAR."""
    caplog.set_level(logging.ERROR, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    assert cfg_read(m, 0, STATUS, 2) == 0 and cfg_read(m, 1, STATUS, 2) == STATUS_CAPS  # no INTx pending at reset
    header = {0x04: 0x06, 0x05: 0x04, 0x0C: 0xFF, 0x3C: 0xFF}
    assert writable_bits(m, 0) == header
    at = pci_cfg_window(m, 1)
    cap = VirtioPCI(m, 1).msix_cap
    want = header | {0x11: 0x80, 0x12: 0xFF, 0x13: 0xFF, at + 4: 0xFF, cap + 3: 0xC0}
    want |= {at + i: 0xFF for i in range(8, 20)}
    assert writable_bits(m, 1) == want


def test_a_queue_vector_for_the_queue_just_past_the_last_is_refused(machine, caplog):
    """queue_msix_vector is the selected queue's (virtio 1.2 §4.1.4.3): with queue_select = num_queues there
    is none, a write is a guest error and the register reads NO_VECTOR."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    errors = guest_errors(m)
    dev.common_write(Q_SELECT, 1, 2)  # the rng has queue 0 only
    dev.common_write(Q_MSIX, 0, 2)
    assert dev.common_read(Q_MSIX, 2) == NO_VECTOR
    assert guest_errors(m) == errors + 1 and "MSI-X vector for queue 1, which does not exist" in caplog.text
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, 1, 2)  # the last vector: the table has two
    assert dev.common_read(Q_MSIX, 2) == 1 and guest_errors(m) == errors + 1


def test_queue_enable_and_queue_reset_act_on_one_only(machine):
    """§4.1.4.3.2: the driver writes 1 to queue_enable, 1 to queue_reset; another value (2 here) neither
    enables (a guest error) nor resets the queue."""
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    (q,) = dev.init(1)
    dev.common_write(Q_SELECT, 0, 2)
    errors = guest_errors(m)
    dev.common_write(Q_RESET, 2, 2)
    assert dev.common_read(Q_ENABLE, 2) == 1 and guest_errors(m) == errors
    dev.common_write(Q_RESET, 1, 2)
    assert dev.common_read(Q_ENABLE, 2) == 0
    for reg, addr in ((Q_DESC, q.desc), (Q_DRIVER, q.avail), (Q_DEVICE, q.used)):  # ready to go live again
        dev.common_write(reg, addr, 8)
    dev.common_write(Q_ENABLE, 2, 2)
    assert dev.common_read(Q_ENABLE, 2) == 0 and guest_errors(m) == errors + 1
    dev.common_write(Q_ENABLE, 1, 2)
    assert dev.common_read(Q_ENABLE, 2) == 1 and guest_errors(m) == errors + 1


def test_a_device_reset_puts_the_transport_registers_back(machine):
    """A device reset (status 0, virtio 1.2 §2.4) returns the transport's own registers to their initial
    values: the feature selectors and queue_select 0, every vector NO_VECTOR (§4.1.4.3)."""
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    dev.common_write(Q_MSIX, 1, 2)
    dev.common_write(MSIX_CONFIG, 0, 2)
    dev.common_write(DFSELECT, 1, 4)
    dev.common_write(GFSELECT, 1, 4)
    dev.common_write(Q_SELECT, 3, 2)
    regs = ((DFSELECT, 4), (GFSELECT, 4), (Q_SELECT, 2), (MSIX_CONFIG, 2))
    assert [dev.common_read(o, n) for o, n in regs] == [1, 1, 3, 0]
    dev.set_status(0)
    assert [dev.common_read(o, n) for o, n in regs] == [0, 0, 0, NO_VECTOR]
    assert dev.common_read(Q_MSIX, 2) == NO_VECTOR  # queue 0's, selected again by the reset


def test_notifications_take_up_to_four_bytes_at_an_existing_queue(machine, caplog):
    """§4.1.4.4: queue q's notification address is cap.offset + queue_notify_off * multiplier (4 here); a
    driver writes it with 16 or 32 bits (§4.1.5.2). A wider write, or one at the offset of the queue just
    past the last, is a guest error that kicks nothing."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    (q,) = dev.init(1)
    errors = guest_errors(m)
    q.add([], [16])
    m.mmio_write(dev.addr(NOTIFY, 0), 0, 8)
    m.mmio_write(dev.addr(NOTIFY, 4), 1, 4)  # queue 1: the rng has none
    m.mmio_write(dev.addr(NOTIFY, 8), 2, 2)  # nor queue 2
    assert not q.get_used() and guest_errors(m) == errors + 3
    notify = dev.caps[NOTIFY][1]
    assert f"8-byte notification at BAR offset 0x{notify:04x}" in caplog.text
    assert f"4-byte notification at BAR offset 0x{notify + 4:04x}" in caplog.text
    assert f"2-byte notification at BAR offset 0x{notify + 8:04x}" in caplog.text
    m.mmio_write(dev.addr(NOTIFY, 0), 0, 4)
    assert q.get_used() and guest_errors(m) == errors + 3


def test_the_bus_holds_32_functions_and_refuses_the_next(machine, tmp_path):
    """Bus 0 has 32 device numbers (ECAM's 5 device bits, PCIe 5.0 §7.2.2.1): the host bridge and 31 devices
    fill it; a 32nd device is refused (out of memory, naming the bus), not put on a slot that does not
    exist."""
    shares = []
    for i in range(31):
        (tmp_path / str(i)).mkdir()
        shares.append(str(tmp_path / str(i)))
    m = machine(transport="pci", share=shares)
    assert [s for s, _, _ in find_functions(m)] == list(range(32))
    m.close()
    with pytest.raises(vmmpy.errors.OutOfMemory, match="virtio-pci: all 32 slots of PCI bus 0 are in use"):
        machine(transport="pci", rng=True, share=shares)


def test_config_generation_reads_its_low_byte(machine):
    """config_generation is one byte of common config (virtio 1.2 §4.1.4.3) that changes with each
    configuration change: after 257 link changes of a NIC it reads 1, as 257 does modulo 256."""
    m = machine(transport="pci", disk=None, net=vmmpy.Network())
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    gen = dev.common_read(CONFIG_GENERATION, 1)
    for n in range(1, 258):
        m.set_link(not m.net_stats().link_up)
        if n in (1, 2, 255, 256, 257):
            assert dev.common_read(CONFIG_GENERATION, 1) == (gen + n) & 0xFF, n


def window(m, slot: int, bar: int, off: int, length: int) -> int:
    """Point the PCI config window (virtio 1.2 §4.1.4.9) of `slot` at BAR `bar`, `off`, `length` bytes."""
    at = pci_cfg_window(m, slot)
    cfg_write(m, slot, at + 4, bar, 1)
    cfg_write(m, slot, at + 8, off)
    cfg_write(m, slot, at + 12, length)
    return at + 16


def test_the_pci_config_window_ends_with_the_bar(machine, caplog):
    """§4.1.4.9: cap.offset must lie inside the BAR (32 KiB here): its last DWORD is reached (the MSI-X PBA's
    region: nothing, a BAR-offset guest error), the offset of its end is refused as a window error naming the
    offset, each of the offset's four bytes counting; a length other than 1, 2 or 4 is refused too."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    data = window(m, 1, 0, 0x7FFC, 4)
    assert cfg_read(m, 1, data) == 0
    assert "4-byte read at BAR offset 0x7ffc" in caplog.text and "PCI config window" not in caplog.text
    for off in (0x8000, 0x0100_0000, 0x0100_0012):
        data = window(m, 1, 0, off, 2)
        cfg_read(m, 1, data)
        assert f"PCI config window: bar 0 offset {off:#x} length 2" in caplog.text
    data = window(m, 1, 0, 0, 8)  # a length past 4, at an offset aligned to it: refused as well
    cfg_read(m, 1, data)
    assert "PCI config window: bar 0 offset 0x0 length 8" in caplog.text and "common config read" not in caplog.text
    data = window(m, 1, 0, 0x12, 0x0100_0002)  # num_queues with a length's high byte set: refused
    assert cfg_read(m, 1, data) == 0
    assert "PCI config window: bar 0 offset 0x12 length 16777218" in caplog.text


def did_not_wait(m, table: int, entries: dict) -> list[str]:
    """Run each of `entries` in a thread while another thread is inside m's PCI host lock (its refused 2-byte
    write of MSI-X table entry 0's data being logged, PCI Local Bus 3.0 §6.8.2, the log handler blocked): the
    names of those that completed meanwhile. All have completed when it returns."""
    import threading

    from .holding import a_thread_inside

    threads = {name: threading.Thread(target=f) for name, f in entries.items()}
    with a_thread_inside("2-byte MSI-X write", m.mmio_write, table + 8, 0x1111, 2):
        for t in threads.values():
            t.start()
        for t in threads.values():
            t.join(0.5 / len(threads))
        early = [name for name, t in threads.items() if not t.is_alive()]
    for t in threads.values():
        t.join(10)
    return early


def test_every_way_into_the_host_waits_while_another_thread_is_inside_it(machine, guest, tmp_path):
    """One lock guards the bus's config spaces, BAR decoding and MSI-X state (pci.h): while a thread is inside
    it, a config read and write, a BAR access, an MSI-X table read, a device's interrupt (a NIC's link change,
    not through the BAR) and a snapshot (of another machine: a NIC's cannot be taken) each wait, and all
    complete once it leaves. (An entry point without the lock would also release the lock it did not take:
    the message lists every access that did not wait.)"""
    m = machine(transport="pci", net=vmmpy.Network())
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.enable_intx()
    dev.init(queues=2)
    assert not m.irq_line(0)
    table = dev.msix_table()
    early = did_not_wait(m, table, {
        "config read": lambda: cfg_read(m, 1, 0),
        "config write": lambda: cfg_write(m, 1, 0x3C, 5, 1),
        "BAR read": lambda: dev.common_read(Q_SELECT, 2),
        "MSI-X table read": lambda: m.mmio_read(table + 12),
        "interrupt": lambda: m.set_link(not m.net_stats().link_up),  # a configuration change (§4.1.5.3)
    })  # fmt: skip
    assert m.irq_line(0) and cfg_read(m, 1, 0x3C, 1) == 5
    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    m.dtb()
    early += did_not_wait(m, dev.msix_table(), {"snapshot": lambda: m.snapshot(tmp_path / "s.snap")})
    assert not early, f"these went into the PCI host while another thread was inside it: {early}"
    assert (tmp_path / "s.snap").exists()


def test_acknowledging_the_isr_sends_no_message_on_the_queue_vector(msix):  # noqa: F811
    """With MSI-X on, a used buffer sends the queue's vector (virtio 1.2 §4.1.5.1.3); the driver reading the ISR
    (§4.1.4.5) or resetting the device lowers the device's interrupt state, which is no notification: nothing
    is sent on queue 0's vector, unmasked."""
    m, dev, q = msix
    dev.msix_mask(0, False)
    entropy(dev, q)
    assert q.get_used()
    assert_sent(m, 1)
    assert dev.isr() == 1
    assert_sent(m, 0)
    dev.set_status(0)
    assert_sent(m, 0)


def test_an_isr_read_under_msix_leaves_no_intx_to_come_back(rng):  # noqa: F811
    """INTA# asserted, then MSI-X enabled: INTx is held back (PCI Local Bus 3.0 §6.8.2), Interrupt Status still
    shows. Reading the ISR then clears the device's interrupt (virtio 1.2 §4.1.4.5): Interrupt Status clears, and
    disabling MSI-X again finds nothing to assert."""
    m, dev = rng
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    entropy(dev, q)
    assert q.get_used() and m.irq_line(0)
    dev.msix_enable(True)
    assert not m.irq_line(0) and cfg_read(m, 1, STATUS, 2) & STATUS_INTX
    assert dev.isr() == 1
    assert not cfg_read(m, 1, STATUS, 2) & STATUS_INTX
    dev.msix_enable(False)
    assert not m.irq_line(0) and not cfg_read(m, 1, STATUS, 2) & STATUS_INTX


def test_a_snapshot_keeps_the_vector_of_every_queue(machine, guest, tmp_path):
    """The transport's registers are the device's state too (virtio 1.2 §4.1.4.3): a restored virtio-input
    (two queues, three vectors) has each queue's MSI-X vector and the config vector as the driver set them."""
    m = machine(guest("hello"), transport="pci", input=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    vectors = {0: 2, 1: 0}
    for q, vec in vectors.items():
        dev.common_write(Q_SELECT, q, 2)
        dev.common_write(Q_MSIX, vec, 2)
    dev.common_write(MSIX_CONFIG, 1, 2)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    r = vmmpy.Machine.restore(tmp_path / "s.snap")
    try:
        d2 = VirtioPCI(r, 1)
        d2.bar_addr = dict(dev.bar_addr)
        got = {}
        for q in vectors:
            d2.common_write(Q_SELECT, q, 2)
            got[q] = d2.common_read(Q_MSIX, 2)
        assert got == vectors and d2.common_read(MSIX_CONFIG, 2) == 1
    finally:
        r.close()


def test_a_pending_vector_waits_while_msix_is_disabled(msix):  # noqa: F811
    """A function with MSI-X Enable clear sends no MSI-X message (PCI Local Bus 3.0 §6.8.2.3): a vector left
    pending stays pending when it is unmasked or Message Control is written with MSI-X off, and goes out
    once MSI-X is enabled again (§6.8.2.9)."""
    m, dev, q = msix
    entropy(dev, q)
    assert q.get_used() and dev.msix_pending(0)
    dev.msix_enable(False)
    dev.msix_mask(0, False)
    dev.msix_enable(False, mask_all=True)
    dev.msix_enable(False)
    assert dev.msix_pending(0)
    assert_sent(m, 0)
    dev.msix_enable(True)
    assert not dev.msix_pending(0)
    assert_sent(m, 1)


def test_a_snapshot_with_any_queue_vector_past_the_table_is_refused(machine, guest, tmp_path):
    """Each saved queue vector is checked as a write of it is (virtio 1.2 §4.1.4.3: NO_VECTOR or one the MSI-X
    table has): a virtio-input's second queue with vector 3 of 3, or either queue with 0x7fff, refuses the
    snapshot naming the queue."""
    import struct

    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", input=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    dev.common_write(DFSELECT, 0x1357_2468, 4)  # markers to find the transport's registers by
    dev.common_write(GFSELECT, 0x2468_ACE0, 4)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    regs = struct.pack("<IIHHHH", 0x1357_2468, 0x2468_ACE0, 0, NO_VECTOR, NO_VECTOR, NO_VECTOR)
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if regs in good[o : o + n]]
    at = good.index(regs, off) + 12  # queue 0's vector
    for q, vec in ((1, 3), (1, 0x7FFF), (0, 0x7FFF)):
        data = bytearray(good)
        struct.pack_into("<H", data, at + 2 * q, vec)
        with_section_crc(data, off, plen)
        (tmp_path / "bad.snap").write_bytes(data)
        with pytest.raises(vmmpy.errors.VmmError, match=f"virtio-input.*: queue {q} vector {vec} of 3"):
            vmmpy.Machine.restore(tmp_path / "bad.snap").close()


def test_the_device_configuration_starts_at_its_capabilitys_offset(machine):
    """§4.1.4.6: the device-specific configuration is at the device capability's offset: a write of its first
    byte is the device's (virtio-input's select, §5.8.4: ID_NAME makes size non-zero), not a guest error."""
    m = machine(transport="pci", input=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    errors = guest_errors(m)
    assert m.mmio_read(dev.addr(DEVICE_CFG, 2), 1) == 0  # select 0: nothing
    m.mmio_write(dev.addr(DEVICE_CFG, 0), 1, 1)  # VIRTIO_INPUT_CFG_ID_NAME
    assert m.mmio_read(dev.addr(DEVICE_CFG, 0), 1) == 1
    assert m.mmio_read(dev.addr(DEVICE_CFG, 2), 1) > 0 and guest_errors(m) == errors


def test_a_queue_select_past_every_queue_reads_an_absent_queue(machine):
    """§4.1.4.3: for a queue_select naming no queue, queue_size reads 0 (and queue_msix_vector NO_VECTOR), up
    to the largest selector; writing the vector is a guest error."""
    from .pci_driver import Q_SIZE

    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    errors = guest_errors(m)
    for sel in (63, 64, 65, 0xFFFF):
        dev.common_write(Q_SELECT, sel, 2)
        assert dev.common_read(Q_SELECT, 2) == sel
        assert (dev.common_read(Q_SIZE, 2), dev.common_read(Q_MSIX, 2), dev.common_read(Q_ENABLE, 2)) == (
            0, NO_VECTOR, 0), sel  # fmt: skip
        dev.common_write(Q_MSIX, 0, 2)
        assert dev.common_read(Q_MSIX, 2) == NO_VECTOR
    assert guest_errors(m) == errors + 4


# struct virtio_pci_common_cfg (virtio 1.2 §4.1.4.3): each field's offset and width
COMMON_FIELDS = {0x00: 4, 0x04: 4, 0x08: 4, 0x0C: 4, 0x10: 2, 0x12: 2, 0x14: 1, 0x15: 1, 0x16: 2, 0x18: 2,
                 0x1A: 2, 0x1C: 2, 0x1E: 2, 0x20: 8, 0x28: 8, 0x30: 8, 0x38: 2, 0x3A: 2}  # fmt: skip


def test_each_common_config_field_takes_accesses_of_its_own_width_only(machine):
    """§4.1.3.1: the driver accesses each common configuration field with its own width, the 64-bit ones also
    as two 32-bit halves. Any other aligned access at a field's offset (narrower, or wider spanning the next
    fields) is a guest error that reads 0 or writes nothing; the field's own width reads without one."""
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    errors, refused = guest_errors(m), 0
    for off, width in COMMON_FIELDS.items():
        dev.common_read(off, width)
        if width == 8:
            dev.common_read(off, 4), dev.common_read(off + 4, 4)
        assert guest_errors(m) == errors + refused, hex(off)
        for size in (1, 2, 4, 8):
            if size != width and not off % size and not (width == 8 and size == 4):
                assert dev.common_read(off, size) == 0, (hex(off), size)
                dev.common_write(off, 0, size)
                refused += 2
                assert guest_errors(m) == errors + refused, (hex(off), size)
    assert dev.status() & FEATURES_OK  # no write reached status (0 would have reset the device)


@pytest.mark.vmmpy_no_artifacts  # the records of the machines would be memory kept
def test_a_device_refused_for_want_of_a_slot_leaves_no_memory_behind(tmp_path):
    """A 32nd device finds every slot of bus 0 taken (out of memory): its transport, built before it asked for a
    slot, is freed with the refusal. Machines whose 32nd disk is refused, made over and over, keep nothing."""
    from .conftest import heap_growth

    disks = []
    for i in range(32):
        (tmp_path / f"{i}.img").write_bytes(bytes(4096))
        disks.append(str(tmp_path / f"{i}.img"))

    def make():
        with pytest.raises(vmmpy.errors.OutOfMemory, match="all 32 slots of PCI bus 0 are in use"):
            vmmpy.Machine(transport="pci", disk=disks)

    growth = heap_growth(make, calls=5, batches=2)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 256, f"{growth:.0f} bytes kept per machine"


def test_each_half_of_a_queue_address_keeps_every_bit_of_the_other(machine):
    """§4.1.3.1: a 64-bit queue field written as two 32-bit halves: each write replaces all 32 bits of its half
    (odd bits included: the device checks alignment only when the queue goes live) and none of the other's."""
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.negotiate()
    dev.common_write(Q_SELECT, 0, 2)
    for reg in (Q_DESC, Q_DRIVER, Q_DEVICE):
        dev.common_write(reg, 0xFFFF_FFFF, 4)
        dev.common_write(reg + 4, 0xFFFF_FFFF, 4)
        assert dev.common_read(reg, 8) == 0xFFFF_FFFF_FFFF_FFFF
        dev.common_write(reg + 4, 0x8000_0001, 4)
        assert dev.common_read(reg, 8) == 0x8000_0001_FFFF_FFFF
        dev.common_write(reg, 0, 4)
        assert dev.common_read(reg, 8) == 0x8000_0001_0000_0000
        dev.common_write(reg, 0x7FFF_FFFF, 4)
        assert dev.common_read(reg, 8) == 0x8000_0001_7FFF_FFFF
        dev.common_write(reg, 0x8000_0000, 4)
        assert dev.common_read(reg, 8) == 0x8000_0001_8000_0000, hex(reg)
    assert guest_errors(m) == 0


def test_a_snapshot_keeps_every_word_of_every_msix_entry(machine, guest, tmp_path):
    """The MSI-X table is the function's state (PCI Local Bus 3.0 §6.8.2.6-9): a restored function has each
    entry's address, upper address, data and Vector Control (unmasked here, masked after reset) as the guest
    left them, and Message Control's Enable and Function Mask."""
    from .pci_driver import MSIX_ENABLE, MSIX_MASKALL

    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.msix_enable(True, mask_all=True)
    dev.msix_entry(0, 0x1_2345_6788, 0x55, masked=False)
    dev.msix_entry(1, 0x2_3456_789C, 0x66, masked=True)
    table = [m.mmio_read(dev.msix_table() + 4 * w) for w in range(8)]
    assert table == [0x2345_6788, 1, 0x55, 0, 0x3456_789C, 2, 0x66, 1]
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    r = vmmpy.Machine.restore(tmp_path / "s.snap")
    try:
        assert [r.mmio_read(dev.msix_table() + 4 * w) for w in range(8)] == table
        assert cfg_read(r, 1, dev.msix_cap + 2, 2) & (MSIX_ENABLE | MSIX_MASKALL) == MSIX_ENABLE | MSIX_MASKALL
    finally:
        r.close()


@pytest.mark.vmmpy_no_artifacts  # the records of the machines would be memory kept
def test_closing_a_machine_frees_the_host_bridge_and_every_function():
    """Closing a PCI machine releases each function's owner (its virtio device and transport) and the host
    bridge itself: machines with four virtio-pci devices, made and closed over and over, keep nothing."""
    from .conftest import heap_growth

    def make():
        with vmmpy.Machine(transport="pci", rng=True, input=True, gpu=True) as m:
            assert len(find_functions(m)) == 5  # the bridge, the GPU, a keyboard, a tablet, the rng

    growth = heap_growth(make, calls=5, batches=2)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 256, f"{growth:.0f} bytes kept per machine"


def test_the_pci_config_window_waits_for_the_device(machine):
    """The PCI config window (virtio 1.2 §4.1.4.9) is the device's register, served under its lock like a BAR
    access: while another thread is inside the device (its read of the notification region being logged, the
    log handler blocked), a window access, even one onto the MSI-X table that needs nothing else of the device,
    waits; it completes once the other thread leaves."""
    import threading

    from .holding import a_thread_inside

    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.msix_entry(0, 0, 0x5A5A, masked=True)
    data = window(m, 1, 0, dev.msix_table() - dev.bar_addr[0] + 8, 4)  # entry 0's Message Data
    got = []
    reader = threading.Thread(target=lambda: got.append(cfg_read(m, 1, data)))
    with a_thread_inside("read at BAR offset", m.mmio_read, dev.addr(NOTIFY, 0)):
        reader.start()
        reader.join(0.5)
        waited = reader.is_alive()
    reader.join(10)
    assert waited, "the window was read while another thread was inside the device"
    assert got == [0x5A5A]
    other = threading.Thread(target=lambda: got.append(dev.common_read(Q_SELECT, 2)))
    other.start()  # and the window access left the device: another thread gets in
    other.join(5)
    assert not other.is_alive() and got == [0x5A5A, 0], "the window access kept the device's lock"


def test_a_narrow_read_of_pci_cfg_data_reads_the_bar_and_gives_its_own_bytes(machine, caplog):
    """§4.1.4.9: each read of pci_cfg_data, of any of its bytes, reads cap.length bytes of the BAR at cap.offset
    afresh; the access then answers with the bytes it covers, and no others. A guest error about the window
    names the function it concerns."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    entry = dev.msix_table() + 8  # MSI-X entry 0's Message Data: a DWORD the test sets at will
    data = window(m, 1, 0, entry - dev.bar_addr[0], 4)
    for val in (0x1122_3344, 0x5566_7788, 0x99AA_BBCC, 0xDDEE_F00F):
        for off, size in ((3, 1), (2, 1), (1, 1), (0, 1), (2, 2), (0, 2), (0, 4)):
            m.mmio_write(entry, val)
            assert cfg_read(m, 1, data + off, size) == val >> 8 * off & (1 << 8 * size) - 1, (hex(val), off, size)
            m.mmio_write(entry, ~val & 0xFFFF_FFFF)  # the next read must see the BAR again
    window(m, 1, 0, 0x8000, 4)
    cfg_read(m, 1, data)
    assert "rng@virtio-pci.00:01.0: PCI config window: bar 0 offset 0x8000 length 4" in caplog.text


def test_a_new_device_starts_with_no_vectors(machine):
    """Before the driver writes anything, not even a reset, msix_config and every queue_msix_vector read
    NO_VECTOR (virtio 1.2 §4.1.4.3, §4.1.5.1.2): a device from power-on is a reset device."""
    m = machine(transport="pci", input=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.common_read(MSIX_CONFIG, 2) == NO_VECTOR
    got = []
    for q in (0, 1):
        dev.common_write(Q_SELECT, q, 2)
        got.append(dev.common_read(Q_MSIX, 2))
    assert got == [NO_VECTOR, NO_VECTOR]


def test_an_msix_message_goes_to_the_whole_64_bit_address(msix, caplog):  # noqa: F811
    """PCI Local Bus 3.0 §6.8.2.4-5: a message is a write to Message Upper Address << 32 | Message Address. With
    the low word GITS_TRANSLATER's and the upper word 0x20, it goes to 0x20_0809_0040, where no ITS answers: the
    GIC drops it naming that address (and the function's requester ID, 00:01.0 = 8); no LPI."""
    from .test_pci import ITS_TRANSLATER, MSI_DATA, lpis_taken

    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, dev, q = msix
    dev.msix_entry(0, 0x20 << 32 | ITS_TRANSLATER, MSI_DATA, masked=False)
    entropy(dev, q)
    assert q.get_used() and lpis_taken(m) == []
    assert "MSI from DeviceID 8 to 0x2008090040, which is not GITS_TRANSLATER" in caplog.text


def test_unmasking_a_vector_sends_only_its_own_pending_message(rng):  # noqa: F811
    """§6.8.2.9-10: each vector has its own pending bit. With vector 1 pending (masked) and vector 0 unmasked
    with nothing pending, clearing the Function Mask or writing vector 0's control sends nothing; unmasking
    vector 1 sends its message, once."""
    from .test_gic import unmask
    from .test_gic_its import LPI, Its
    from .test_pci import ITS_TRANSLATER, RNG_DEVID, lpis_taken

    m, dev = rng
    unmask(m)
    its = Its(m)
    for event in (0x30, 0x31):
        its.map_event(RNG_DEVID, event, LPI + event)
    dev.msix_enable(True, mask_all=True)
    (q,) = dev.init(queues=1, vectors=[1])
    dev.msix_entry(0, ITS_TRANSLATER, 0x30, masked=False)
    dev.msix_entry(1, ITS_TRANSLATER, 0x31, masked=True)
    entropy(dev, q)
    assert q.get_used() and dev.msix_pending(1) and not dev.msix_pending(0)
    dev.msix_enable(True, mask_all=False)
    dev.msix_mask(0, False)
    assert lpis_taken(m) == [] and dev.msix_pending(1) and not dev.msix_pending(0)
    dev.msix_mask(1, False)
    assert lpis_taken(m) == [LPI + 0x31] and not dev.msix_pending(1)


def test_a_pba_of_three_vectors_is_one_qword(machine, caplog):
    """The PBA holds one bit per vector in QWORDs (PCI Local Bus 3.0 §6.8.2.10): three vectors (a virtio-input)
    take one QWORD; any access from the next one on is the transport's (nothing: a guest error naming the BAR
    offset), whatever its size, not an MSI-X access."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", input=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    assert dev.msix_size == 3
    end = dev.msix_pba() + 8
    for size in (1, 2, 4, 8):
        assert m.mmio_read(end, size) == 0
        assert f"{size}-byte read at BAR offset 0x{end - dev.bar_addr[0]:04x}" in caplog.text, size
    assert "MSI-X read" not in caplog.text
    errors = guest_errors(m)
    assert m.mmio_read(end - 4) == 0 and guest_errors(m) == errors  # the PBA's high DWORD: MSI-X's, no error
    m.mmio_write(end - 4, 0)
    assert "write to the MSI-X PBA (read-only)" in caplog.text
    assert m.mmio_read(end - 7, 1) == 0 and "1-byte MSI-X read" in caplog.text  # DWORD/QWORD only (§6.8.2)


def test_a_qword_read_of_an_entrys_second_half_gives_data_and_control(machine):
    """PCI Local Bus 3.0 §6.8.2: software may read a table entry as QWORDs: the one at +8 is Message Data
    (low DWORD) and Vector Control (high DWORD), of the same entry."""
    m = machine(transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.msix_entry(0, 0x11_2222_3330, 0x4444_5555, masked=True)
    dev.msix_entry(1, 0x66_7777_8880, 0x9999_AAAA, masked=False)
    t = dev.msix_table()
    assert [m.mmio_read(t + off, 8) for off in (0, 8, 16, 24)] == [
        0x11_2222_3330, 1 << 32 | 0x4444_5555, 0x66_7777_8880, 0x9999_AAAA]  # fmt: skip


def test_a_snapshot_checks_every_msix_entry_and_holds_one_pba_qword_for_three_vectors(machine, guest, tmp_path):
    """A function's MSI-X state in its device's section: the vector count, each entry's four DWORDs, then the
    PBA, one QWORD for up to 64 vectors (PCI Local Bus 3.0 §6.8.2.10), right before the transport's registers.
    Loading checks each entry, the first included: reserved Vector Control bits in vector 0 are refused."""
    import struct

    from .test_pci import ITS_TRANSLATER
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    m = machine(guest("hello"), transport="pci", input=True)  # three vectors
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    for vec in range(3):
        dev.msix_entry(vec, ITS_TRANSLATER, 0x7A00 + vec, masked=True)
    assert dev.negotiate()
    dev.common_write(DFSELECT, 0x1357_2468, 4)  # a marker: the transport's first register
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    good = (tmp_path / "s.snap").read_bytes()
    first = struct.pack("<IIII", ITS_TRANSLATER, 0, 0x7A00, 1)
    ((off, plen),) = [(o, n) for _, o, n in sections(good) if first in good[o : o + n]]
    at = good.index(first, off)
    assert struct.unpack_from("<I", good, at - 4)[0] == 3  # the vector count precedes the table
    assert good[at + 48 : at + 56] == bytes(8)  # the PBA: one QWORD, nothing pending
    assert struct.unpack_from("<I", good, at + 56)[0] == 0x1357_2468
    data = bytearray(good)
    struct.pack_into("<I", data, at + 12, 3)  # vector 0's Vector Control with a reserved bit
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match="MSI-X vector 0 control 0x3 has reserved bits"):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()
