"""Tier 1: the virtio-mmio v2 transport and split virtqueues (virtio 1.2 §2, §4.2.2), with the dummy test device.

The test device (csrc/dev/virtio_dummy.c, id 0xfff0) has two queues of 16: queue 0 echoes each
chain's readable bytes reversed into its writable part, queue 1 consumes chains. Its config space:
magic (RO), scratch (RW), trigger (a write is a config change), chains (echoed since reset).
"""

from __future__ import annotations

import logging
import random
import struct

import libfdt
import pytest

import vmmpy

from .conftest import heap_growth
from .holding import a_thread_inside
from .test_fdt import cells, props, strings
from .test_snapshot import sections
from .virtio_driver import (
    ACKNOWLEDGE,
    CONFIG_GENERATION,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DRIVER,
    DRIVER_FEATURES,
    DRIVER_FEATURES_SEL,
    DRIVER_OK,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    FEATURES_OK,
    ID_DUMMY,
    INT_CONFIG,
    INT_VRING,
    INTERRUPT_STATUS,
    MAGIC,
    MAGIC_VALUE,
    NEEDS_RESET,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_RESET,
    QUEUE_SEL,
    RAM_BASE,
    SHM_BASE_HIGH,
    SHM_BASE_LOW,
    SHM_LEN_HIGH,
    SHM_LEN_LOW,
    SHM_SEL,
    STATUS,
    VERSION,
    VirtioMMIO,
    find_devices,
    slot_base,
)

DUMMY_ID = ID_DUMMY
F_A, F_B = 1 << 0, 1 << 1
CFG_MAGIC, CFG_SCRATCH, CFG_TRIGGER, CFG_CHAINS = 0, 4, 8, 12
QMAX = 16
RAM_SIZE = 256 << 20
RAM_END = RAM_BASE + RAM_SIZE


@pytest.fixture
def m():
    with vmmpy.Machine(virtio_test_devices=1, ram=f"{RAM_SIZE}B") as mach:
        yield mach


@pytest.fixture
def dev(m):
    d = VirtioMMIO(m, 0)
    d.enable_irq()
    return d


def guest_errors(m) -> int:
    return m.stats()["guest_errors"]


def check_line(d: VirtioMMIO) -> int:
    """InterruptStatus, asserting that the SPI (through the GIC) follows it."""
    isr = d.interrupt_status()
    assert d.irq_line() == (isr != 0), f"InterruptStatus={isr:#x} but the IRQ line is {d.irq_line()}"
    return isr


# -- identification and registers -------------------------------------------------------------


def test_identification_registers(dev):
    assert dev.magic == MAGIC_VALUE
    assert dev.version == 2  # never legacy (1)
    assert dev.device_id == DUMMY_ID
    assert dev.vendor_id == 0x554D4551
    assert find_devices(dev.m) == [(0, DUMMY_ID)]


def test_each_device_gets_the_next_slot():
    with vmmpy.Machine(virtio_test_devices=3) as m:
        assert find_devices(m) == [(0, DUMMY_ID), (1, DUMMY_ID), (2, DUMMY_ID)]
        # an empty slot answers like QEMU's: magic, version 2, DeviceID 0 (no device), the rest RAZ/WI
        empty = VirtioMMIO(m, 3)
        assert (empty.magic, empty.version, empty.device_id) == (MAGIC_VALUE, 2, 0)
        empty.set_status(ACKNOWLEDGE)
        assert empty.status() == 0


def test_more_devices_than_slots_is_an_error():
    with pytest.raises(vmmpy.VmmError, match="slots"):
        vmmpy.Machine(virtio_test_devices=33)


def test_no_shared_memory_regions(dev):
    for sel in (0, 1, 7):
        dev.write(SHM_SEL, sel)
        assert [dev.read(r) for r in (SHM_LEN_LOW, SHM_LEN_HIGH)] == [0xFFFF_FFFF] * 2  # length -1: none
        assert [dev.read(r) for r in (SHM_BASE_LOW, SHM_BASE_HIGH)] == [0xFFFF_FFFF] * 2


def test_registers_are_32_bit_only(dev):
    before = guest_errors(dev.m)
    assert dev.read(MAGIC, size=2) == 0
    assert dev.read(MAGIC, size=1) == 0
    dev.write(STATUS, ACKNOWLEDGE, size=2)
    assert dev.status() == 0
    assert guest_errors(dev.m) == before + 3


def test_read_only_and_write_only_registers(dev):
    before = guest_errors(dev.m)
    dev.write(MAGIC, 0)
    dev.write(VERSION, 1)
    assert dev.magic == MAGIC_VALUE and dev.version == 2
    assert dev.read(DEVICE_FEATURES_SEL) == 0  # write-only: logged, reads 0
    assert guest_errors(dev.m) == before + 3


# -- feature negotiation ----------------------------------------------------------------------


def test_device_features(dev):
    f = dev.device_features()
    assert f == F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX | F_A | F_B
    dev.write(DEVICE_FEATURES_SEL, 2)
    assert dev.read(DEVICE_FEATURES) == 0


def test_feature_negotiation_accepts_a_subset(dev):
    assert dev.negotiate(F_VERSION_1 | F_A)
    assert dev.status() == ACKNOWLEDGE | DRIVER | FEATURES_OK


def test_legacy_driver_is_refused(dev):
    before = guest_errors(dev.m)
    assert not dev.negotiate(F_INDIRECT_DESC | F_A)  # no VERSION_1
    assert dev.status() == ACKNOWLEDGE | DRIVER
    assert guest_errors(dev.m) == before + 1


def test_features_not_offered_are_refused(dev):
    dev.reset()
    dev.set_status(ACKNOWLEDGE | DRIVER)
    dev.set_driver_features(F_VERSION_1 | (1 << 5))
    dev.add_status(FEATURES_OK)
    assert not dev.status() & FEATURES_OK


def test_device_refuses_a_feature_combination(dev):
    assert not dev.negotiate(F_VERSION_1 | F_B)  # B depends on A
    assert dev.negotiate(F_VERSION_1 | F_A | F_B)


def test_driver_features_are_frozen_after_features_ok(dev):
    assert dev.negotiate(F_VERSION_1)
    before = guest_errors(dev.m)
    dev.set_driver_features(F_VERSION_1 | F_A)
    assert guest_errors(dev.m) > before
    assert dev.features == F_VERSION_1


# -- status state machine ---------------------------------------------------------------------


def test_status_sequence_and_reset(dev):
    assert dev.status() == 0
    dev.set_status(ACKNOWLEDGE)
    dev.add_status(DRIVER)
    assert dev.status() == ACKNOWLEDGE | DRIVER
    dev.init(queues=2)
    assert dev.status() == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    dev.set_status(0)
    assert dev.status() == 0
    assert dev.device_features() & F_VERSION_1  # offered features survive a reset
    dev.write(QUEUE_SEL, 0)
    assert dev.read(QUEUE_READY) == 0


def test_driver_ok_without_features_ok_is_refused(dev):
    dev.reset()
    before = guest_errors(dev.m)
    dev.set_status(ACKNOWLEDGE | DRIVER | DRIVER_OK)
    assert dev.status() == ACKNOWLEDGE | DRIVER
    assert guest_errors(dev.m) == before + 1


def test_driver_cannot_set_or_clear_needs_reset(dev):
    dev.init()
    dev.set_status(dev.status() | NEEDS_RESET)
    assert not dev.needs_reset()


# -- queue setup ------------------------------------------------------------------------------


def test_queue_registers(dev):
    dev.negotiate()
    for qi in (0, 1):
        dev.write(QUEUE_SEL, qi)
        assert dev.read(QUEUE_NUM_MAX) == QMAX
        assert dev.read(QUEUE_NUM) == QMAX
        assert dev.read(QUEUE_READY) == 0
    dev.write(QUEUE_SEL, 2)  # no such queue
    assert dev.read(QUEUE_NUM_MAX) == 0 and dev.read(QUEUE_READY) == 0
    dev.write(QUEUE_SEL, 1)
    dev.write(QUEUE_NUM, 8)
    dev.write(QUEUE_DESC_LOW, 0x4010_0000)
    dev.write(QUEUE_DESC_HIGH, 0)
    assert dev.read(QUEUE_NUM) == 8 and dev.read(QUEUE_DESC_LOW) == 0x4010_0000


RING_REGS = (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH)
QUEUE_REGS = (QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY, *RING_REGS)


def test_a_queue_selector_beyond_the_devices_queues_reads_0_and_takes_no_setup(dev):
    """§4.2.2: QueueNumMax reads 0 for a queue that is not available; so do that queue's other registers, and
    writes to them (QueueNum, the six ring address halves, QueueReady) are guest errors that change nothing,
    QueueReset of it does nothing: for selectors up to 2^32 - 1, never a look outside the device's two queues."""
    dev.negotiate()
    for sel in (2, 3, 0x100, 0xFFFF, 0x1_0000, 0x8000_0000, 0xFFFF_FFFF):
        dev.write(QUEUE_SEL, sel)
        assert {reg: dev.read(reg) for reg in QUEUE_REGS} == dict.fromkeys(QUEUE_REGS, 0), hex(sel)
        before = guest_errors(dev.m)
        dev.write(QUEUE_NUM, 8)
        for reg in RING_REGS:
            dev.write(reg, 0x4010_0000)
        dev.write(QUEUE_READY, 1)
        dev.write(QUEUE_RESET, 1)
        assert guest_errors(dev.m) == before + 2 + len(RING_REGS), hex(sel)
        assert {reg: dev.read(reg) for reg in QUEUE_REGS} == dict.fromkeys(QUEUE_REGS, 0), hex(sel)
    for qi in (0, 1):
        dev.write(QUEUE_SEL, qi)
        regs = {reg: dev.read(reg) for reg in QUEUE_REGS}
        assert regs == {**dict.fromkeys(QUEUE_REGS, 0), QUEUE_NUM_MAX: QMAX, QUEUE_NUM: QMAX}, qi
    q0, _ = dev.init(queues=2)
    head = q0.add([b"ok"], [2])
    q0.notify()
    assert q0.get_used() == [(head, 2)]


def test_each_ring_address_register_reads_back_its_own_half(dev):
    """QueueDesc, QueueDriver and QueueDevice are 64-bit addresses in Low/High register pairs: each of the six
    reads back the 32 bits written to it (the high halves differ from the low ones)."""
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    regs = {QUEUE_DESC_LOW: 0x4010_0000, QUEUE_DESC_HIGH: 0x1, QUEUE_DRIVER_LOW: 0x4011_0000,
            QUEUE_DRIVER_HIGH: 0x2, QUEUE_DEVICE_LOW: 0x4012_0000, QUEUE_DEVICE_HIGH: 0x3}  # fmt: skip
    for reg, val in regs.items():
        dev.write(reg, val)
    assert {reg: dev.read(reg) for reg in regs} == regs
    assert guest_errors(dev.m) == 0


def test_queue_goes_live_and_its_registers_freeze(dev):
    dev.negotiate()
    q = dev.setup_queue(0, 8)
    assert dev.read(QUEUE_READY) == 1
    before = guest_errors(dev.m)
    dev.write(QUEUE_NUM, 4)
    dev.write(QUEUE_DESC_LOW, 0)
    assert dev.read(QUEUE_NUM) == 8 and dev.read(QUEUE_DESC_LOW) == q.desc & 0xFFFF_FFFF
    assert guest_errors(dev.m) == before + 2
    dev.write(QUEUE_READY, 0)  # stop using it: registers writable again
    assert dev.read(QUEUE_READY) == 0
    dev.write(QUEUE_NUM, 4)
    assert dev.read(QUEUE_NUM) == 4


def test_queue_reset_register(dev):
    dev.negotiate()
    dev.setup_queue(1, 4)
    dev.write(QUEUE_RESET, 1)
    assert dev.read(QUEUE_RESET) == 0
    assert dev.read(QUEUE_READY) == 0 and dev.read(QUEUE_NUM) == QMAX and dev.read(QUEUE_DESC_LOW) == 0


@pytest.mark.parametrize(
    "num, desc, avail, used",
    [
        (3, 0x4100_0000, 0x4100_1000, 0x4100_2000),  # not a power of 2
        (32, 0x4100_0000, 0x4100_1000, 0x4100_2000),  # above QueueNumMax
        (8, 0x4100_0008, 0x4100_1000, 0x4100_2000),  # descriptors not 16-aligned
        (8, 0x4100_0000, 0x4100_1001, 0x4100_2000),  # avail not 2-aligned
        (8, 0x4100_0000, 0x4100_1000, 0x4100_2002),  # used not 4-aligned
        (8, 0x4100_0000, 0x4100_1000, 0x4100_2001),  # used not 4-aligned (bit 0)
        (8, 0x4100_0001, 0x4100_1000, 0x4100_2000),  # descriptors not 16-aligned (bit 0)
        (8, 0x1000, 0x4100_1000, 0x4100_2000),  # below RAM
        (8, 0x4100_0000, 0x4100_1000, RAM_END - 8),  # used ring runs past the end of RAM
        (8, 0x4100_0000, RAM_END - 20, 0x4100_2000),  # avail: 6 + 2 * 8 bytes, 2 past the end
        (8, 0x4100_0000, 0x4100_1000, RAM_END - 68),  # used: 6 + 8 * 8 bytes, 2 past the end
        (8, RAM_END - 112, 0x4100_1000, 0x4100_2000),  # descriptors: 16 * 8 bytes, 16 past the end
    ],
)
def test_bad_queue_setup_needs_reset(dev, num, desc, avail, used, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    dev.write(QUEUE_NUM, num)
    for reg, val in ((QUEUE_DESC_LOW, desc), (QUEUE_DRIVER_LOW, avail), (QUEUE_DEVICE_LOW, used)):
        dev.write(reg, val & 0xFFFF_FFFF)
        dev.write(reg + 4, val >> 32)
    before = guest_errors(dev.m)
    dev.write(QUEUE_READY, 1)
    assert dev.read(QUEUE_READY) == 0
    assert dev.needs_reset()
    assert guest_errors(dev.m) == before + 1
    why = (
        "QueueNum is not a power of 2 no larger than QueueNumMax"
        if num in (3, 32)
        else "a ring part is misaligned (descriptors: 16, driver area: 2, device area: 4 bytes)"
        if (desc & 15) or (avail & 1) or (used & 3)
        else "a ring part lies outside guest RAM"
    )
    assert why in caplog.text
    dev.init(queues=2)  # a reset recovers
    assert not dev.needs_reset()


@pytest.mark.parametrize(
    "desc, avail, used",
    [
        (RAM_END - 128, 0x4100_1000, 0x4100_2000),
        (0x4100_0000, RAM_END - 22, 0x4100_2000),
        (0x4100_0000, 0x4100_1000, RAM_END - 72),
    ],
    ids=["descriptors", "avail", "used"],
)
def test_ring_parts_may_end_exactly_at_the_end_of_ram(dev, desc, avail, used):
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    dev.write(QUEUE_NUM, 8)
    for reg, val in ((QUEUE_DESC_LOW, desc), (QUEUE_DRIVER_LOW, avail), (QUEUE_DEVICE_LOW, used)):
        dev.write(reg, val & 0xFFFF_FFFF)
        dev.write(reg + 4, val >> 32)
    dev.write(QUEUE_READY, 1)
    assert dev.read(QUEUE_READY) == 1 and not dev.needs_reset()


# -- the data path and the interrupt ------------------------------------------------------------


def test_echo_used_buffer_and_interrupt(dev):
    q0, _ = dev.init(queues=2)
    assert check_line(dev) == 0
    head = q0.add([b"hello, virtio"], [13])
    q0.notify()
    assert q0.get_used() == [(head, 13)]
    assert q0.chain_data(head) == b"oitriv ,olleh"
    assert check_line(dev) == INT_VRING
    dev.ack(INT_VRING)
    assert check_line(dev) == 0
    assert dev.config_read(CFG_CHAINS) == 1


def test_chain_with_several_buffers_each_way(dev):
    q0, _ = dev.init(queues=2)
    head = q0.add([b"ab", b"", b"cde"], [2, 0, 1, 4])
    q0.notify()
    assert q0.get_used() == [(head, 5)]
    assert q0.chain_data(head) == b"edcba" + b"\0" * 2


def test_short_writable_part_limits_the_written_length(dev):
    q0, _ = dev.init(queues=2)
    head = q0.add([b"0123456789"], [4])
    q0.notify()
    assert q0.get_used() == [(head, 4)]
    assert q0.chain_data(head) == b"9876"


def test_sink_queue_returns_chains_with_length_0(dev):
    _, q1 = dev.init(queues=2)
    heads = [q1.add([b"x" * 10], []), q1.add([b"y"], [8])]
    q1.notify()
    assert q1.get_used() == [(heads[0], 0), (heads[1], 0)]


def test_many_chains_wrap_the_rings(dev):
    q0, _ = dev.init(queues=2, sizes=[4, 4])
    for i in range(40):  # 10 times round a 4-entry ring
        head = q0.add([bytes([i, i + 1])], [2])
        q0.notify()
        assert q0.get_used() == [(head, 2)]
        assert q0.chain_data(head) == bytes([i + 1, i])
    assert q0.used_idx() == 40


def test_buffers_made_available_before_driver_ok_are_used_after_it(dev):
    assert dev.negotiate()
    q0 = dev.setup_queue(0)
    head = q0.add([b"early"], [5])
    q0.notify()  # ignored: not DRIVER_OK yet
    assert q0.get_used() == []
    dev.add_status(DRIVER_OK)
    assert q0.get_used() == [(head, 5)]


def test_only_the_status_write_that_sets_driver_ok_looks_at_the_queues(dev):
    """DRIVER_OK makes the device look at buffers made available before it; a later status write (the same
    value again) is not a notify: a chain added without one waits for the QueueNotify."""
    q0, _ = dev.init(queues=2)
    head = q0.add([b"late"], [4])
    dev.set_status(dev.status())
    assert q0.get_used() == []
    q0.notify()
    assert q0.get_used() == [(head, 4)]


def test_a_queue_going_live_starts_its_used_ring_from_zero(dev):
    """QueueReady = 1 makes the device area the device's: its flags (bit 0: VIRTQ_USED_F_NO_NOTIFY) and index
    start at 0 whatever the driver left there, so the driver is not told to hold back its notifications."""
    q0, _ = dev.init(queues=2)
    dev.write(QUEUE_SEL, 0)
    dev.write(QUEUE_READY, 0)
    dev.m.write_memory(q0.used, struct.pack("<HH", 0xFFFF, 0x1234))  # flags, idx: junk
    dev.write(QUEUE_READY, 1)
    assert struct.unpack("<HH", dev.m.read_memory(q0.used, 4)) == (0, 0)


def test_notify_of_a_missing_queue_is_a_guest_error(dev):
    dev.init(queues=2)
    before = guest_errors(dev.m)
    dev.write(0x050, 5)
    assert guest_errors(dev.m) == before + 1 and not dev.needs_reset()


def test_no_interrupt_flag_suppresses_the_interrupt(dev):
    q0, _ = dev.init(queues=2, features=~F_EVENT_IDX)
    q0.set_avail_flags(1)  # VIRTQ_AVAIL_F_NO_INTERRUPT
    head = q0.add([b"a"], [1])
    q0.notify()
    assert q0.get_used() == [(head, 1)]
    assert check_line(dev) == 0
    q0.set_avail_flags(0)
    q0.add([b"b"], [1])
    q0.notify()
    assert check_line(dev) == INT_VRING


def test_event_idx_suppresses_interrupts_until_used_event(dev):
    q0, _ = dev.init(queues=2)
    assert dev.features & F_EVENT_IDX
    q0.add([b"1"], [1])
    q0.notify()
    assert check_line(dev) == INT_VRING  # the first one always interrupts
    assert q0.avail_event() == 1  # the device asks to be notified of the next entry
    dev.ack()
    q0.set_used_event(3)  # interrupt me once used.idx passes 3
    for n in (2, 3):
        q0.add([b"x"], [1])
        q0.notify()
        assert q0.used_idx() == n and check_line(dev) == 0
    q0.add([b"x"], [1])
    q0.notify()
    assert q0.used_idx() == 4 and check_line(dev) == INT_VRING
    assert q0.avail_event() == 4
    dev.ack()
    for n in (5, 6):  # used_event 3 was passed (and signalled) at 4: no more until the driver moves it
        q0.add([b"x"], [1])
        q0.notify()
        assert q0.used_idx() == n and check_line(dev) == 0
    q0.set_used_event(6)  # the entry just used: the next one passes it
    q0.add([b"x"], [1])
    q0.notify()
    assert q0.used_idx() == 7 and check_line(dev) == INT_VRING


def test_indirect_descriptors(dev):
    q0, _ = dev.init(queues=2)
    head = q0.add([b"in", b"direct"], [3, 5], indirect=True)
    q0.notify()
    assert q0.get_used() == [(head, 8)]
    assert q0.chain_data(head) == b"tceridni"


def test_each_slot_drives_its_own_spi():
    with vmmpy.Machine(virtio_test_devices=2) as m:
        d0, d1 = VirtioMMIO(m, 0), VirtioMMIO(m, 1)
        assert (d0.intid, d1.intid) == (48, 49)
        d1.enable_irq()  # only INTID 49 reaches the CPU
        q0, _ = d0.init(queues=2)
        (q1, _) = d1.init(queues=2)
        q0.add([b"a"], [1])
        q0.notify()
        assert d0.interrupt_status() == INT_VRING and not m.irq_line(0)
        q1.add([b"b"], [1])
        q1.notify()
        assert d1.interrupt_status() == INT_VRING and m.irq_line(0)
        d1.ack()
        assert not m.irq_line(0)


# -- config space ----------------------------------------------------------------------------


def test_config_space_access_sizes(dev):
    assert dev.config_read(CFG_MAGIC) == 0x796D7564
    assert dev.config_read(CFG_MAGIC, 1) == 0x64
    assert dev.config_read(CFG_MAGIC + 2, 2) == 0x796D
    dev.config_write(CFG_SCRATCH, 0xDEADBEEF)
    assert dev.config_read(CFG_SCRATCH) == 0xDEADBEEF
    dev.config_write(CFG_SCRATCH + 1, 0x55, 1)
    assert dev.config_read(CFG_SCRATCH) == 0xDEAD55EF
    assert dev.config_read(CFG_MAGIC, 8) == 0xDEAD55EF_796D7564
    dev.config_write(CFG_MAGIC, 0)  # read-only field
    assert dev.config_read(CFG_MAGIC) == 0x796D7564


def test_a_queue_that_needs_reset_takes_no_more_chains(dev):
    q0, _ = dev.init(queues=2)
    bad = q0.add([b"x"], [4])
    q0.write_desc(bad, RAM_END + 0x1000, 1)  # its buffer outside RAM: the device needs reset
    q0.notify()
    assert dev.needs_reset() and q0.used_idx() == 0
    q0.add([b"fine"], [4])
    q0.notify()  # a broken device takes nothing until it is reset
    assert q0.used_idx() == 0 and dev.needs_reset()


def test_config_space_bounds(dev):
    q0, _ = dev.init(queues=2)
    q0.add([b"\xff" * 64], [64])  # the device's state after its config space is no longer all zero
    q0.notify()
    assert q0.get_used()
    before = guest_errors(dev.m)
    assert dev.config_read(16) == 0
    assert dev.config_read(16, 1) == 0
    assert dev.config_read(0xF8, 8) == 0  # the last bytes of the slot
    dev.config_write(0x80, 1)
    assert guest_errors(dev.m) == before + 4
    assert [dev.config_read(off) for off in range(16, 0x100, 4)] == [0] * 60
    assert guest_errors(dev.m) == before + 64


def test_config_change_bumps_generation_and_interrupts(dev):
    dev.init(queues=2)
    gen = dev.read(CONFIG_GENERATION)
    dev.config_write(CFG_TRIGGER, 1)
    assert dev.read(CONFIG_GENERATION) == gen + 1
    assert dev.config_read(CFG_TRIGGER) == 1
    assert check_line(dev) == INT_CONFIG
    dev.ack(INT_VRING)  # acknowledging the other bit leaves it
    assert check_line(dev) == INT_CONFIG
    dev.ack(INT_CONFIG)
    assert check_line(dev) == 0


def test_config_change_before_driver_ok_does_not_interrupt(dev):
    dev.reset()
    gen = dev.read(CONFIG_GENERATION)
    dev.config_write(CFG_TRIGGER, 1)
    assert dev.read(CONFIG_GENERATION) == gen + 1
    assert check_line(dev) == 0


def test_device_reset_clears_queues_and_interrupt(dev):
    q0, _ = dev.init(queues=2)
    q0.add([b"abc"], [3])
    q0.notify()
    dev.config_write(CFG_TRIGGER, 1)
    assert check_line(dev) == INT_VRING | INT_CONFIG
    dev.set_status(0)
    assert check_line(dev) == 0
    assert dev.read(INTERRUPT_STATUS) == 0
    assert dev.config_read(CFG_CHAINS) == 0
    for qi in (0, 1):
        dev.write(QUEUE_SEL, qi)
        assert dev.read(QUEUE_READY) == 0 and dev.read(QUEUE_NUM) == QMAX and dev.read(QUEUE_DESC_LOW) == 0
    q0, _ = dev.init(queues=2)  # and it works again from scratch
    head = q0.add([b"xy"], [2])
    q0.notify()
    assert q0.get_used() == [(head, 2)]


def test_a_reset_selects_feature_word_0_and_queue_0_again(dev):
    """A device reset (§2.4) puts the transport's selectors back to 0: DeviceFeatures, DriverFeatures and the
    queue registers address word 0 and queue 0 until the driver selects again."""
    dev.init(queues=2)
    for sel in (DEVICE_FEATURES_SEL, DRIVER_FEATURES_SEL, QUEUE_SEL, SHM_SEL):
        dev.write(sel, 1)
    dev.set_status(0)
    assert dev.read(DEVICE_FEATURES) == (F_INDIRECT_DESC | F_EVENT_IDX | F_A | F_B) & 0xFFFF_FFFF
    dev.write(QUEUE_NUM, 8)  # queue 0's
    dev.write(QUEUE_SEL, 1)
    assert dev.read(QUEUE_NUM) == QMAX
    dev.write(QUEUE_SEL, 0)
    assert dev.read(QUEUE_NUM) == 8
    dev.add_status(ACKNOWLEDGE | DRIVER)
    dev.write(DRIVER_FEATURES, 1)  # word 0: feature A, without VERSION_1 (word 1's bit 0): a legacy driver
    dev.add_status(FEATURES_OK)
    assert not dev.status() & FEATURES_OK


def test_a_reset_device_saves_the_state_of_an_untouched_one(guest, tmp_path):
    """A reset returns the device to its initial state (§2.4): after the driver set it up, moved chains through
    a queue, selected other words and queues and reset it, its snapshot section (the core's status, features,
    ISR and generation, each queue's registers and ring indices, the transport's selectors, the device's own
    state) is byte for byte the one saved before the driver touched it."""
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1, ram="64MiB") as m:
        m.boot_info()

        def section() -> bytes:
            p = tmp_path / "s.snap"
            m.snapshot(p)
            data = p.read_bytes()
            ((off, plen),) = [(o, n) for name, o, n in sections(data) if name == "virtio-dummy.0"]
            return data[off : off + plen]

        fresh = section()
        d = VirtioMMIO(m, 0)
        q0, q1 = d.init(queues=2)
        for _ in range(3):
            q0.add([b"abc"], [3])
            q1.add([b"x"], [])
        q0.notify()
        q1.notify()
        assert len(q0.get_used()) == 3 and len(q1.get_used()) == 3
        for sel in (DEVICE_FEATURES_SEL, DRIVER_FEATURES_SEL, QUEUE_SEL, SHM_SEL):
            d.write(sel, 1)
        d.set_status(0)
        assert section() == fresh


def test_a_snapshot_waits_for_a_register_access_under_way(guest, tmp_path):
    """A snapshot saves each virtio device with its lock held, as every register access holds it: while another
    thread is inside the device (its guest error for a write to the read-only Magic register being logged, the
    log handler blocked), the snapshot waits, and completes once that thread leaves."""
    import threading

    with vmmpy.Machine(guest("idle"), virtio_test_devices=1, ram="64MiB") as m:
        m.boot_info()
        d = VirtioMMIO(m, 0)
        saver = threading.Thread(target=m.snapshot, args=(tmp_path / "s.snap",))
        with a_thread_inside("read-only or unknown register", d.write, MAGIC, 0):
            saver.start()
            saver.join(0.5)
            waited = saver.is_alive()
        saver.join(10)
        assert waited, "the snapshot saved the device while another thread was inside it"
        assert not saver.is_alive() and (tmp_path / "s.snap").stat().st_size > 0


# -- a hostile driver: NEEDS_RESET, a counted guest error, never a crash ----------------------


def expect_broken(dev: VirtioMMIO, q, before: int) -> None:
    chains = dev.config_read(CFG_CHAINS)
    q.notify()
    assert dev.needs_reset()
    assert dev.config_read(CFG_CHAINS) == chains  # the refused chain never reached the device
    assert guest_errors(dev.m) >= before + 1
    assert q.get_used() == []
    assert check_line(dev) & INT_CONFIG  # §2.1.2: a config change notification tells the driver
    # the device stays broken until reset: further notifies are ignored
    q.notify()
    assert q.get_used() == []
    # and a reset brings it back
    q0, _ = dev.init(queues=2)
    head = q0.add([b"ok"], [2])
    q0.notify()
    assert q0.get_used() == [(head, 2)] and q0.chain_data(head) == b"ko"


@pytest.fixture
def live(dev):
    q0, _ = dev.init(queues=2)
    return dev, q0, guest_errors(dev.m)


def test_descriptor_loop(live):
    dev, q, before = live
    buf = q.buf(16)
    q.write_desc(0, buf, 4, DESC_F_NEXT, 1)
    q.write_desc(1, buf, 4, DESC_F_NEXT, 2)
    q.write_desc(2, buf, 4, DESC_F_NEXT, 0)
    q.publish(0)
    expect_broken(dev, q, before)


def test_self_loop(live):
    dev, q, before = live
    q.write_desc(5, q.buf(4), 4, DESC_F_NEXT, 5)
    q.publish(5)
    expect_broken(dev, q, before)


def test_chain_as_long_as_the_queue_is_fine_longer_is_not(live):
    dev, q, before = live
    buf = q.buf(QMAX)
    for i in range(QMAX):
        last = i == QMAX - 1
        q.write_desc(i, buf + i, 1, 0 if last else DESC_F_NEXT, 0 if last else i + 1)
    dev.m.write_memory(buf, bytes(range(QMAX)))
    q.publish(0)
    q.notify()
    assert q.get_used() == [(0, 0)]  # all readable: nothing to echo into
    assert not dev.needs_reset()
    # the same chain with NEXT on its last descriptor: it would go on past QMAX descriptors
    q.write_desc(QMAX - 1, buf, 1, DESC_F_NEXT, 0)
    q.publish(0)
    expect_broken(dev, q, before)


def test_descriptor_index_out_of_range(live):
    dev, q, before = live
    q.write_desc(0, q.buf(4), 4, DESC_F_NEXT, QMAX)
    q.publish(0)
    expect_broken(dev, q, before)


def test_head_index_out_of_range(live):
    dev, q, before = live
    q.publish(QMAX + 3)
    expect_broken(dev, q, before)


@pytest.mark.parametrize(
    "addr, length",
    [
        (0x1000, 16),  # below RAM
        (0x0900_0000, 4),  # a device
        (RAM_END - 8, 16),  # runs past the end of RAM
        (RAM_END, 1),  # just past it
        (0xFFFF_FFFF_FFFF_FFF0, 0x20),  # address + length wraps around
        (RAM_BASE, 0xFFFF_FFFF),  # longer than RAM
    ],
)
def test_buffer_outside_ram(live, addr, length):
    dev, q, before = live
    q.write_desc(0, q.buf(4), 4, DESC_F_NEXT, 1)
    q.write_desc(1, addr, length, DESC_F_WRITE)
    q.publish(0)
    expect_broken(dev, q, before)


def test_writable_before_readable(live):
    dev, q, before = live
    q.write_desc(0, q.buf(4), 4, DESC_F_WRITE | DESC_F_NEXT, 1)
    q.write_desc(1, q.buf(4), 4, 0)
    q.publish(0)
    expect_broken(dev, q, before)


@pytest.mark.parametrize("ahead", [QMAX + 1, 100, 0x8000, 0xFFFF])
def test_bogus_avail_index(live, ahead):
    dev, q, before = live
    q.set_avail_idx(ahead)
    expect_broken(dev, q, before)


def test_avail_index_exactly_a_queue_ahead_is_fine(live):
    dev, q, _ = live
    heads = [q.add([b"z"], []) for _ in range(QMAX)]
    q.notify()
    assert [h for h, _ in q.get_used()] == heads
    assert not dev.needs_reset()


def test_nested_indirect_table(live):
    dev, q, before = live
    inner = q.buf(16)
    q.write_desc(0, q.buf(4), 4, 0, table=inner)
    outer = q.buf(16)
    q.write_desc(0, inner, 16, DESC_F_INDIRECT, table=outer)
    q.write_desc(0, outer, 16, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)


def test_indirect_with_next(live):
    dev, q, before = live
    table = q.buf(16)
    q.write_desc(0, q.buf(4), 4, 0, table=table)
    q.write_desc(0, table, 16, DESC_F_INDIRECT | DESC_F_NEXT, 1)
    q.write_desc(1, q.buf(4), 4, DESC_F_WRITE)
    q.publish(0)
    expect_broken(dev, q, before)


@pytest.mark.parametrize("length", [0, 15, 24])
def test_indirect_table_of_bad_length(live, length):
    dev, q, before = live
    q.write_desc(0, q.buf(32), length, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)


def test_indirect_table_outside_ram(live):
    dev, q, before = live
    q.write_desc(0, 0xFFFF_FFFF_FFFF_FFF0, 32, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)


def test_loop_inside_an_indirect_table(live):
    dev, q, before = live
    table = q.buf(64)
    buf = q.buf(4)
    for i in range(4):
        q.write_desc(i, buf, 4, DESC_F_NEXT, (i + 1) % 4, table=table)
    q.write_desc(0, table, 64, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)


def test_indirect_without_the_feature(dev):
    q0, _ = dev.init(queues=2, features=~F_INDIRECT_DESC)
    before = guest_errors(dev.m)
    q0.add([b"abc"], [3], indirect=True)
    expect_broken(dev, q0, before)


def test_more_buffers_than_the_device_takes(live, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev, q, before = live
    n = 300  # > VIRTQ_MAX_SEGS (256), in one indirect table
    table, buf = q.buf(16 * n), q.buf(n)
    for i in range(n):
        q.write_desc(i, buf + i, 1, DESC_F_NEXT if i + 1 < n else 0, i + 1 if i + 1 < n else 0, table=table)
    q.write_desc(0, table, 16 * n, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)
    assert "queue 0: chain at head 0 has more than 256 buffers" in caplog.text  # the log names the cause


def test_random_rings_never_crash_the_host(dev):
    """Random descriptor tables and avail rings: every round ends either with the device broken (NEEDS_RESET,
    the config-change interrupt, the error counted, nothing more used) or with only well-formed used entries;
    the next reset always brings it back."""
    rng = random.Random(1234)
    broken = 0
    for rnd in range(40):
        wild = rnd % 2 == 0  # else well-formed single-descriptor chains in the pool, read or write
        before = guest_errors(dev.m)
        q0, q1 = dev.init(queues=2, sizes=[8, 8])
        assert not dev.needs_reset() and guest_errors(dev.m) == before  # the reset cleared the last round
        for q in (q0, q1):
            table = q.buf(16 * 8)
            pool = q.buf(256)
            for t in (None, table):
                for i in range(8):
                    if wild:
                        addr = rng.choice([pool + rng.randrange(256), table, rng.getrandbits(64), RAM_END - 4])
                        q.write_desc(i, addr, rng.choice([0, 1, 16, 64, 300, 0xFFFF_FFFF]), rng.randrange(8),
                                     rng.randrange(10), table=t)  # fmt: skip
                    else:
                        n = rng.choice([1, 16, 64])
                        q.write_desc(i, pool + rng.randrange(256 - n), n, rng.choice([0, DESC_F_WRITE]), 0, table=t)
            for _ in range(rng.randrange(1, 9)):
                q.publish(rng.randrange(9) if wild else rng.randrange(8))
            q.notify()
        used = q0.get_used() + q1.get_used()
        for uid, ulen in used:  # virtio 1.2 §2.7.8: the id of a head the driver made available
            assert 0 <= uid < 8 and ulen <= 8 * 300, (uid, ulen)
        if dev.needs_reset():
            assert wild, "a well-formed round broke the device"
            broken += 1
            assert guest_errors(dev.m) > before
            assert check_line(dev) & INT_CONFIG
            q0.notify()
            assert q0.get_used() == []  # broken until reset
        else:
            assert guest_errors(dev.m) == before, "an error was counted but the device carries on"
        if not wild:
            assert used, "well-formed chains were not used"
    assert broken >= 15, broken  # nearly every wild round holds an address outside RAM or a bad index


# -- device tree -------------------------------------------------------------------------------


def test_device_tree_has_a_node_per_slot(guest):
    with vmmpy.Machine(guest("hello"), virtio_test_devices=2) as m:
        fdt = libfdt.Fdt(m.dtb())
        gic = fdt.get_phandle(fdt.path_offset("/intc@8000000"))
        for slot in (0, 1):
            base = slot_base(slot)
            p = props(fdt, f"/virtio_mmio@{base:x}")
            assert strings(p["compatible"]) == ["virtio,mmio"]
            assert struct.unpack(">QQ", p["reg"]) == (base, 0x200)
            assert cells(p["interrupts"]) == [0, 16 + slot, 4]  # GIC_SPI, level high
            assert p["dma-coherent"] == b""
        assert cells(props(fdt, "/")["interrupt-parent"]) == [gic]
        with pytest.raises(libfdt.FdtException):
            fdt.path_offset(f"/virtio_mmio@{slot_base(2):x}")


def test_without_event_idx_the_avail_event_field_is_left_alone(dev):
    # avail_event (after the used ring) belongs to the device only with VIRTIO_F_EVENT_IDX
    q0, _ = dev.init(queues=2, features=~F_EVENT_IDX)
    dev.m.write_memory(q0.used + 4 + 8 * q0.size, struct.pack("<H", 0xBEEF))
    head = q0.add([b"ab"], [2])
    q0.notify()
    assert q0.get_used() == [(head, 2)]
    q0.notify()  # nothing pending
    assert q0.avail_event() == 0xBEEF


def test_with_event_idx_a_notify_that_finds_nothing_asks_for_the_next_entry(dev):
    """With VIRTIO_F_EVENT_IDX the device keeps avail_event at the next entry it will take (§2.7.10), also
    when a notify finds the queue empty: whatever the field held, it now names entry 0, then entry 1."""
    q0, _ = dev.init(queues=2)
    assert dev.features & F_EVENT_IDX
    dev.m.write_memory(q0.used + 4 + 8 * q0.size, struct.pack("<H", 0xBEEF))
    q0.notify()  # nothing pending
    assert q0.avail_event() == 0
    head = q0.add([b"ab"], [2])
    q0.notify()
    assert q0.get_used() == [(head, 2)]
    assert q0.avail_event() == 1


@pytest.mark.parametrize("access", ["write", "read"])
def test_register_accesses_wait_for_the_device_lock(tmp_path, access):
    """Register accesses take the device's lock, as the device's own work does: while a NIC's transmit (started
    by a QueueNotify write) blocks in its capture write (a full FIFO nobody reads), a write of
    DeviceFeaturesSel or a read of DeviceFeatures from another thread waits, and completes once the FIFO is
    drained."""
    import fcntl
    import os
    import threading

    from .test_net_host import read_while_a_capture_blocks
    from .test_virtio_net import BCAST, Nic, frame

    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: the capture's open does not wait
    try:
        with vmmpy.Machine(net=vmmpy.Network(), net_capture=fifo) as m:
            nic = Nic(m)
            nic.dev.write(DEVICE_FEATURES_SEL, 0)
            size = fcntl.fcntl(rfd, 1032)  # F_GETPIPE_SZ
            sender = threading.Thread(target=nic.send, args=(frame(BCAST, nic.mac, bytes(size)),))
            if access == "write":
                touch = lambda: nic.dev.write(DEVICE_FEATURES_SEL, 1)  # noqa: E731
            else:
                touch = lambda: nic.dev.read(DEVICE_FEATURES)  # noqa: E731
            # the frame alone is larger than the pipe: its write blocks, the device's lock held
            waited, got = read_while_a_capture_blocks(rfd, sender, touch)
            assert waited, f"a register {access} went through while the device was busy"
            if access == "write":
                assert nic.dev.read(DEVICE_FEATURES) & 1  # the high word: VIRTIO_F_VERSION_1 (bit 32)
            else:
                assert got == [nic.dev.read(DEVICE_FEATURES)]  # the low word, as without the wait
    finally:
        os.close(rfd)


def test_features_written_after_a_reset_start_from_none(dev):
    # a driver that writes only the high word after a reset accepts nothing in the low one
    dev.init(queues=2)
    dev.reset()
    dev.add_status(ACKNOWLEDGE | DRIVER)
    dev.write(DRIVER_FEATURES_SEL, 1)
    dev.write(DRIVER_FEATURES, F_VERSION_1 >> 32)  # VERSION_1 only
    dev.add_status(FEATURES_OK)
    assert dev.status() & FEATURES_OK


def test_a_feature_word_written_again_replaces_the_first(dev):
    """§4.2.2.1: a DriverFeatures write sets the selected word's 32 bits. A word written twice holds the second
    value, not both: B alone (the device refuses B without A), VERSION_1 withdrawn (a legacy driver)."""
    for word, first, second in ((0, F_VERSION_1 | F_A | F_B, F_B), (1, F_VERSION_1 | F_A, F_A)):
        dev.reset()
        dev.add_status(ACKNOWLEDGE | DRIVER)
        dev.set_driver_features(first)
        dev.write(DRIVER_FEATURES_SEL, word)
        dev.write(DRIVER_FEATURES, second >> 32 * word & 0xFFFF_FFFF)
        dev.add_status(FEATURES_OK)
        assert not dev.status() & FEATURES_OK, word
    dev.reset()
    dev.add_status(ACKNOWLEDGE | DRIVER)
    dev.set_driver_features(F_VERSION_1 | F_B)
    dev.write(DRIVER_FEATURES_SEL, 0)
    dev.write(DRIVER_FEATURES, F_A | F_B)  # now with A: accepted
    dev.add_status(FEATURES_OK)
    assert dev.status() & FEATURES_OK


def test_a_feature_word_beyond_the_second_may_be_written_0(dev):
    # Linux writes 0 to words it has no features in: no complaint; a bit there is a guest error
    dev.write(DRIVER_FEATURES_SEL, 2)
    dev.write(DRIVER_FEATURES, 0)
    assert guest_errors(dev.m) == 0
    dev.write(DRIVER_FEATURES, 1)
    assert guest_errors(dev.m) == 1


def test_a_device_added_after_the_vm_is_prepared_is_refused(guest, tmp_path):
    with vmmpy.Machine(guest("idle")) as m:
        m.boot_info()
        with pytest.raises(vmmpy.StateError, match="virtio-9p: devices must be added before the VM is prepared"):
            m.add_share(tmp_path, "late")


@pytest.mark.vmmpy_no_artifacts  # the records of ~30 machines would be memory kept
def test_closing_a_machine_frees_its_virtio_devices():
    """A machine with four virtio test devices, made and closed over and over, leaves no memory behind: each
    device's virtio core, queues and transport state go with it (leaked, they were ~400 bytes a device)."""
    growth = heap_growth(lambda: vmmpy.Machine(virtio_test_devices=4).close())
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 64, f"{growth:.0f} bytes kept per machine"
