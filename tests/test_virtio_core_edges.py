"""Tier 1: edges of the virtio core (csrc/dev/virtio.c; virtio 1.2 §2, §3) that the transport suite does not pin.

Status, feature negotiation and its guest errors, queues going live twice, notifications of queues that do not
exist, and the ISR's read-to-clear, through the dummy test device on virtio-mmio (tests/test_virtio_mmio.py) and a
virtio-rng on virtio-pci (tests/test_pci.py).
"""

from __future__ import annotations

import logging
import struct

import pytest

import vmmpy
from vmmpy import errors as vmm_errors

from .pci_driver import VirtioPCI
from .test_snapshot import sections
from .test_snapshot_devices import device_snapshot, rebind, slot_of, with_section_crc  # noqa: F401  (a fixture)
from .test_virtio_blk import make_image
from .test_virtio_mmio import CFG_CHAINS, F_A, F_B, QMAX, RAM_SIZE, check_line, guest_errors
from .virtio_driver import (
    ACKNOWLEDGE,
    DRIVER,
    DRIVER_FEATURES,
    DRIVER_FEATURES_SEL,
    DRIVER_OK,
    F_EVENT_IDX,
    F_VERSION_1,
    FEATURES_OK,
    ID_DUMMY,
    INT_CONFIG,
    NEEDS_RESET,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_READY,
    QUEUE_SEL,
    VirtioMMIO,
    find_devices,
)

SETUP = ACKNOWLEDGE | DRIVER


@pytest.fixture
def dev():
    with vmmpy.Machine(virtio_test_devices=1, ram=f"{RAM_SIZE}B") as m:
        d = VirtioMMIO(m, 0)
        d.enable_irq()
        yield d


def start(dev) -> None:
    dev.reset()
    dev.add_status(SETUP)


# -- feature negotiation (§2.2, §3.1.1, §6.1) -----------------------------------------------------------


def test_writing_a_driver_feature_word_before_features_ok_is_no_error(dev):
    # §3.1.1 step 4: the driver writes the features it accepts; words 0 and 1 are known, with any bits in them
    start(dev)
    dev.set_driver_features(F_VERSION_1 | F_A)
    dev.write(DRIVER_FEATURES_SEL, 0)
    dev.write(DRIVER_FEATURES, 0xFFFF_FFFF)  # not offered: refused at FEATURES_OK, not at the write
    dev.write(DRIVER_FEATURES, F_A)
    dev.write(DRIVER_FEATURES_SEL, 2)
    dev.write(DRIVER_FEATURES, 0)  # a word we know nothing of, written 0 (as Linux does): no error either
    assert guest_errors(dev.m) == 0
    dev.write(DRIVER_FEATURES_SEL, 0)
    dev.add_status(FEATURES_OK)
    assert dev.status() == SETUP | FEATURES_OK
    dev.write(DRIVER_FEATURES, F_A | F_B)  # after FEATURES_OK: one error, nothing else
    assert guest_errors(dev.m) == 1


def test_a_driver_feature_word_written_again_keeps_no_bit_of_the_first(dev):
    """§4.2.2: DriverFeatures sets all 32 bits of the selected word. VERSION_1 | A | B, then word 0 = B: B without A,
    which the dummy refuses; the other way round A | B reads as accepted."""
    for first, second, accepted in ((F_A | F_B, F_B, False), (F_B, F_A | F_B, True)):
        start(dev)
        dev.set_driver_features(F_VERSION_1 | first)
        dev.write(DRIVER_FEATURES_SEL, 0)
        dev.write(DRIVER_FEATURES, second)
        dev.add_status(FEATURES_OK)
        assert dev.status() == (SETUP | FEATURES_OK if accepted else SETUP), (first, second)
    assert guest_errors(dev.m) == 0


def test_driver_features_written_after_features_ok_are_not_the_negotiated_ones(dev):
    """§2.2.1: the features are fixed once FEATURES_OK is set; a later DriverFeatures write is a guest error and
    changes nothing. Here it would withdraw EVENT_IDX, which the device shows by writing avail_event (§2.7.10)."""
    assert dev.negotiate()
    assert dev.features & F_EVENT_IDX
    dev.write(DRIVER_FEATURES_SEL, 0)
    dev.write(DRIVER_FEATURES, 0)  # EVENT_IDX, INDIRECT_DESC and the device's bits withdrawn: ignored
    assert guest_errors(dev.m) == 1
    q0 = dev.setup_queue(0)
    dev.add_status(DRIVER_OK)
    assert dev.status() == SETUP | FEATURES_OK | DRIVER_OK
    head = q0.add([b"e"], [1])
    q0.notify()
    assert q0.get_used() == [(head, 1)]
    assert q0.avail_event() == 1  # EVENT_IDX still negotiated: "notify me past entry 1"
    assert guest_errors(dev.m) == 1


def test_a_driver_without_version_1_is_told_it_is_legacy_whatever_else_it_accepts(dev, caplog):
    # §6.1: VERSION_1 (bit 32) is the first check; a bit above it (33, not offered) does not stand in for it
    caplog.set_level(logging.WARNING, logger="vmmpy")
    start(dev)
    dev.set_driver_features(1 << 33)
    dev.add_status(FEATURES_OK)
    assert dev.status() == SETUP  # FEATURES_OK reads back clear (§3.1.1 step 6)
    assert guest_errors(dev.m) == 1
    assert "did not accept VIRTIO_F_VERSION_1" in caplog.text
    assert "not offered" not in caplog.text


def test_features_not_offered_are_named_exactly(dev, caplog):
    # §2.2.1: the driver accepts only offered features; the error names the ones that were not (bit 5 here)
    caplog.set_level(logging.WARNING, logger="vmmpy")
    start(dev)
    dev.set_driver_features(F_VERSION_1 | F_A | 1 << 5)
    dev.add_status(FEATURES_OK)
    assert dev.status() == SETUP
    assert guest_errors(dev.m) == 1
    assert "driver accepted features 0x20 that were not offered" in caplog.text


# -- DRIVER_OK and the queues (§3.1.1 step 8, §2.6) ------------------------------------------------------


def test_driver_ok_looks_at_every_live_queue_not_only_the_first(dev):
    # buffers made available on queue 1 (the sink) before DRIVER_OK are used once it is set
    assert dev.negotiate()
    q0, q1 = dev.setup_queue(0), dev.setup_queue(1)
    h1 = q1.add([b"sink"], [])
    q1.notify()  # not DRIVER_OK yet: ignored
    assert q1.get_used() == []
    dev.add_status(DRIVER_OK)
    assert q1.get_used() == [(h1, 0)]
    assert q0.get_used() == []


def test_queue_ready_written_1_again_does_not_restart_a_live_queue(dev):
    # §4.2.2: QueueReady = 1 makes a queue live; writing 1 to a live queue is not a new start: the chains it
    # used are not served again (the dummy counts the chains it echoed in its config space)
    q0, _ = dev.init(queues=2)
    h0 = q0.add([b"ab"], [2])
    q0.notify()
    assert q0.get_used() == [(h0, 2)]
    dev.write(QUEUE_SEL, 0)
    dev.write(QUEUE_READY, 1)
    assert dev.read(QUEUE_READY) == 1
    assert q0.used_idx() == 1
    h1 = q0.add([b"cd"], [2])
    q0.notify()
    assert q0.get_used() == [(h1, 2)]
    assert q0.used_idx() == 2
    assert dev.config_read(CFG_CHAINS) == 2
    assert guest_errors(dev.m) == 0


@pytest.mark.parametrize("q", [2, 0xFFFF_FFFF])
def test_notify_of_the_first_queue_past_the_last_or_the_last_index_is_a_guest_error(dev, q):
    # §4.2.2 QueueNotify: the dummy has queues 0 and 1; neither 2 nor 2^32 - 1 is one of them
    q0, _ = dev.init(queues=2)
    dev.write(QUEUE_NOTIFY, q)
    assert guest_errors(dev.m) == 1
    assert dev.status() == SETUP | FEATURES_OK | DRIVER_OK  # not NEEDS_RESET
    head = q0.add([b"x"], [1])
    q0.notify()
    assert q0.get_used() == [(head, 1)]


# -- NEEDS_RESET (§2.1.2) --------------------------------------------------------------------------------


def bad_queue_1(dev) -> None:
    """Queue 1 set up with a size that is not a power of 2: going live fails and the device needs a reset."""
    dev.write(QUEUE_SEL, 1)
    dev.write(QUEUE_NUM, 3)
    for reg, val in ((QUEUE_DESC_LOW, 0x4100_0000), (QUEUE_DRIVER_LOW, 0x4100_1000), (QUEUE_DEVICE_LOW, 0x4100_2000)):
        dev.write(reg, val)
    for reg in (QUEUE_DESC_HIGH, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_HIGH):
        dev.write(reg, 0)


def test_a_second_reason_to_reset_is_logged_but_not_notified_again(dev):
    """§2.1.2: the device sets NEEDS_RESET and sends a configuration change notification, once. A second failure
    while the bit is set is a guest error, with no new notification the driver would have to acknowledge."""
    dev.init(queues=1)
    bad_queue_1(dev)
    dev.write(QUEUE_READY, 1)
    assert dev.status() == SETUP | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    assert check_line(dev) == INT_CONFIG
    assert guest_errors(dev.m) == 1
    dev.ack(INT_CONFIG)
    assert check_line(dev) == 0
    dev.write(QUEUE_READY, 1)  # queue 1 did not go live: it fails again
    assert dev.read(QUEUE_READY) == 0
    assert guest_errors(dev.m) == 2
    assert dev.status() == SETUP | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    assert check_line(dev) == 0


# -- the ISR over virtio-pci: reading clears it (§4.1.4.5) ------------------------------------------------


def test_a_pci_isr_read_returns_the_bits_and_clears_them(machine, guest):
    m = machine(guest("hello"), transport="pci", rng=True)
    dev = VirtioPCI(m, 1)
    dev.place_bars()
    dev.enable_intx()
    (q,) = dev.init(queues=1)
    assert dev.isr() == 0  # nothing yet: the read clears nothing
    q.add([], [8])
    q.notify()
    assert len(q.get_used()) == 1 and m.irq_line(0)
    assert dev.isr() == 1  # the queue bit
    assert not m.irq_line(0)
    assert dev.isr() == 0  # cleared by the first read


def test_a_device_that_breaks_while_serving_a_notify_does_not_interrupt_for_the_chains_before(dev):
    """§2.1.2: once NEEDS_RESET is set the device is not live: the chain it used before the bad one is in the used
    ring, but the interrupt the driver gets is the configuration change alone, not a used-buffer one."""
    q0, _ = dev.init(queues=2)
    head = q0.add([b"ok"], [2])
    q0.publish(QMAX + 3)  # a head index past the queue: the device needs a reset at it
    q0.notify()
    assert q0.get_used() == [(head, 2)]
    assert dev.status() == SETUP | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    assert guest_errors(dev.m) == 1
    assert check_line(dev) == INT_CONFIG


def test_a_write_to_the_config_space_of_a_device_without_writable_fields_is_a_guest_error(tmp_path):
    # virtio-blk's config space (§5.2.4) has no field our device lets the driver write
    path = tmp_path / "disk.img"
    make_image(path)
    with vmmpy.Machine(disk=path) as m:
        ((slot, _),) = find_devices(m)
        blk = VirtioMMIO(m, slot)
        blk.init(queues=1)
        capacity = blk.config_read(0)
        blk.config_write(0, 0x1234)
        assert guest_errors(m) == 1
        assert blk.config_read(0) == capacity == 64
        assert not blk.needs_reset()


# -- snapshots of a device part-way through negotiation (§3.1.1) ------------------------------------------


def test_features_written_without_features_ok_do_not_stop_a_restore(guest, tmp_path):
    """The driver wrote features the device does not offer and has not set FEATURES_OK (§3.1.1 step 4-5): a
    state the registers reach. The snapshot restores it; FEATURES_OK is then refused for those same features."""
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1) as m:
        m.boot_info()
        dev = VirtioMMIO(m, slot_of(m, ID_DUMMY))
        start(dev)
        dev.set_driver_features(F_VERSION_1 | F_A | 1 << 5)  # bit 5: not offered
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        rebind(r, dev)
        assert dev.status() == SETUP
        errors = guest_errors(r)
        dev.add_status(FEATURES_OK)
        assert dev.status() == SETUP
        assert guest_errors(r) == errors + 1


@pytest.mark.parametrize(
    ("field", "fmt", "value", "message"),
    [
        # the other side of tests/test_snapshot_devices.py's cases: a saved device id, queue count or offered
        # feature set that is larger / smaller than this device's is as foreign as one on the other side
        (0, "<I", 0xFFFF, r"saved virtio device 65535 with 2 queues, this one is 65520 with 2"),
        (4, "<I", 1, r"saved virtio device 65520 with 1 queues, this one is 65520 with 2"),
        (8, "<Q", None, r"saved features 0x[0-9a-f]+ differ from the 0x[0-9a-f]+ this device offers"),
    ],
    ids=["higher-device-id", "fewer-queues", "more-features"],
)
def test_a_foreign_saved_device_is_refused_either_way(tmp_path, device_snapshot, field, fmt, value, message):  # noqa: F811
    ((off, plen),) = [(o, n) for name, o, n in sections(device_snapshot) if name == "virtio-dummy.0"]
    data = bytearray(device_snapshot)
    if value is None:  # every feature offered, and bit 5 besides
        value = struct.unpack_from(fmt, data, off + field)[0] | 1 << 5
    struct.pack_into(fmt, data, off + field, value)
    with_section_crc(data, off, plen)
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    with pytest.raises(vmm_errors.VmmError, match=r"virtio-dummy\.0.*" + message):
        vmmpy.Machine.restore(p).close()


# -- adding a device (the board, then the transport) ------------------------------------------------------


def test_a_device_added_after_the_vm_is_prepared_is_refused_on_pci_too(guest, tmp_path):
    # the board refuses it first; the virtio-pci transport must not be asked to add it anyway
    with vmmpy.Machine(guest("idle"), transport="pci") as m:
        m.boot_info()
        with pytest.raises(vmmpy.StateError, match="virtio-9p: devices must be added before the VM is prepared"):
            m.add_share(tmp_path, "late")
