"""Tier 1: the edges of the split virtqueues (virtio 1.2 §2.7) and of the virtio-mmio transport (§4.2).

Each test pins a boundary the broader suites (tests/test_virtio_mmio.py, tests/test_virtio_net.py) pass on
either side of: the smallest queue, a ring part one element short of the end of RAM, a queue that goes live a
second time, the first used buffer after it does, the exact limits of a chain's walk, copies that cross buffer
boundaries, the descriptors a chain takes from the ring as virtio-net counts them, the device lock held across a
chain's return, a snapshot's queue and transport state, and the register file's sizes, halves and empty slots.
The guest is hostile: what it gets wrong ends with NEEDS_RESET and a counted guest error, never with the device
taking the chain.
"""

from __future__ import annotations

import logging
import struct
import threading

import pytest

import vmmpy
from vmmpy import errors

from . import test_virtio_mmio
from .holding import a_thread_inside
from .test_p9 import P9
from .test_snapshot import sections
from .test_snapshot_devices import with_section_crc
from .test_virtio_console import open_console
from .test_virtio_gpu import GET_DISPLAY_INFO, OK_DISPLAY_INFO, Gpu, hdr
from .test_virtio_mmio import (
    CFG_MAGIC,
    CFG_SCRATCH,
    QMAX,
    RAM_END,
    check_line,
    expect_broken,
    guest_errors,
)
from .test_virtio_net import Nic, frame
from .virtio_driver import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    DRIVER_FEATURES_SEL,
    F_EVENT_IDX,
    INT_VRING,
    MAGIC,
    MAGIC_VALUE,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_RESET,
    QUEUE_SEL,
    SHM_SEL,
    STATUS,
    VENDOR_ID,
    VERSION,
    VirtioMMIO,
    slot_base,
)

# test_virtio_mmio's fixtures: m (a machine with one virtio test device), dev (its driver, interrupts on) and
# live (the device driven live with two queues: dev, queue 0 and the guest errors so far)
m, dev, live = test_virtio_mmio.m, test_virtio_mmio.dev, test_virtio_mmio.live


def disable(dev: VirtioMMIO, index: int) -> None:
    """QueueReady = 0 (§4.2.3.2): the driver takes the queue back; its registers may be rewritten."""
    dev.write(QUEUE_SEL, index)
    dev.write(QUEUE_READY, 0)
    assert dev.read(QUEUE_READY) == 0


def try_queue(dev: VirtioMMIO, num: int, desc: int, avail: int, used: int) -> bool:
    """Set up queue 0 by hand and write QueueReady = 1: did it go live?"""
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    dev.write(QUEUE_NUM, num)
    for reg, val in ((QUEUE_DESC_LOW, desc), (QUEUE_DRIVER_LOW, avail), (QUEUE_DEVICE_LOW, used)):
        dev.write(reg, val & 0xFFFF_FFFF)
        dev.write(reg + 4, val >> 32)
    dev.write(QUEUE_READY, 1)
    return dev.read(QUEUE_READY) == 1


# -- the queue's size and place (§2.7: a power of 2 no larger than QueueNumMax; every part in RAM) -------------


def test_a_queue_of_one_entry_is_a_queue(dev):
    """1 = 2**0 is a power of 2: a one-entry queue goes live and every chain (its one descriptor: an indirect
    table) goes through ring entry 0."""
    q0, _ = dev.init(queues=2, sizes=[1, QMAX])
    dev.write(QUEUE_SEL, 0)
    assert dev.read(QUEUE_NUM) == 1 and dev.read(QUEUE_READY) == 1
    for i in range(3):
        head = q0.add([bytes([i, 0x61])], [2], indirect=True)
        q0.notify()
        assert q0.get_used() == [(head, 2)] and q0.chain_data(head) == bytes([0x61, i])
    assert q0.used_idx() == 3 and not dev.needs_reset()


def test_a_descriptor_table_must_fit_whole_in_ram(dev, caplog):
    """16 descriptors of 16 bytes: a table 256 bytes before the end of RAM fits, one 240 bytes before it (room for
    15 of them, 16-aligned) does not."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert try_queue(dev, 16, RAM_END - 256, 0x4100_1000, 0x4100_2000)
    before = guest_errors(dev.m)
    assert not try_queue(dev, 16, RAM_END - 240, 0x4100_1000, 0x4100_2000)
    assert dev.needs_reset() and guest_errors(dev.m) == before + 1
    assert "queue 0 cannot go live: a ring part lies outside guest RAM" in caplog.text


# -- a queue that goes live again (QueueReady 0 then 1) --------------------------------------------------------


def test_a_queue_that_goes_live_again_starts_from_ring_entry_0(live):
    """The driver disables a queue that moved chains and sets it up on fresh rings (avail.idx 0): the device
    starts over too, taking the next chain from avail ring entry 0 and writing used ring entry 0."""
    dev, q0, before = live
    for _ in range(3):
        q0.add([b"ab"], [2])
    q0.notify()
    assert len(q0.get_used()) == 3
    disable(dev, 0)
    q = dev.setup_queue(0)
    head = q.add([b"xyz"], [3])
    q.notify()
    assert q.get_used() == [(head, 3)] and q.chain_data(head) == b"zyx"
    assert q.used_idx() == 1 and not dev.needs_reset() and guest_errors(dev.m) == before


def test_the_first_used_buffer_after_a_queue_goes_live_always_interrupts(live):
    """EVENT_IDX (§2.7.10): the device has not told the driver anything on this queue yet, so its first used
    buffer interrupts whatever used_event holds; later ones only when used.idx passes used_event. The same
    holds again when the queue goes live a second time."""
    dev, q0, _ = live
    assert dev.features & F_EVENT_IDX
    q0.set_used_event(5)
    q0.add([b"a"], [1])
    q0.notify()
    assert q0.used_idx() == 1 and check_line(dev) == INT_VRING
    dev.ack()
    q0.add([b"b"], [1])
    q0.notify()
    assert q0.used_idx() == 2 and check_line(dev) == 0  # used_event 5 not passed
    disable(dev, 0)
    q = dev.setup_queue(0)
    q.set_used_event(5)
    q.add([b"c"], [1])
    q.notify()
    assert q.used_idx() == 1 and check_line(dev) == INT_VRING
    dev.ack()
    q.add([b"d"], [1])
    q.notify()
    assert q.used_idx() == 2 and check_line(dev) == 0


# -- walking a chain (§2.7.5.3, §2.7.4.2) ---------------------------------------------------------------------


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_a_looping_chain_is_refused_at_its_first_revisit(live, caplog, indirect):
    """A chain visits at most as many descriptors as its table holds (the queue's 16, or an indirect table's own
    16): a 16-descriptor loop (one readable buffer, then 15 writable ones, the last pointing back at the first) is
    refused as a loop at the 17th visit, before the device looks at the revisited descriptor (which would be a
    readable buffer after writable ones)."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev, q, before = live
    buf, table = q.buf(QMAX), q.buf(16 * QMAX) if indirect else None
    q.write_desc(0, buf, 1, DESC_F_NEXT, 1, table=table)
    for i in range(1, QMAX):
        q.write_desc(i, buf + i, 1, DESC_F_WRITE | DESC_F_NEXT, (i + 1) % QMAX, table=table)
    if indirect:
        q.write_desc(0, table, 16 * QMAX, DESC_F_INDIRECT)
    q.publish(0)
    q.notify()
    assert dev.needs_reset() and guest_errors(dev.m) == before + 1 and q.get_used() == []
    assert "queue 0: descriptor chain at head 0 loops or is longer than its table (16)" in caplog.text
    assert "readable buffer after a writable one" not in caplog.text


def test_an_indirect_descriptor_after_a_readable_buffer_is_refused(live, caplog):
    """One indirect table per chain, and nothing but it: a chain of a direct readable buffer and then an indirect
    descriptor is refused, as one with a writable buffer before the indirect descriptor is."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev, q, before = live
    table = q.buf(16)
    q.write_desc(0, q.buf(4), 4, DESC_F_WRITE, table=table)
    q.write_desc(0, q.buf(4), 4, DESC_F_NEXT, 1)
    q.write_desc(1, table, 16, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)
    assert "queue 0: indirect descriptor after direct buffers" in caplog.text


def test_indirect_tables_of_any_whole_number_of_descriptors_from_any_head(live):
    """§2.7.5.3: an indirect table's length is a multiple of 16 (1 to 5 descriptors here, each length's bits
    different), and its walk starts at its entry 0 whichever ring descriptor (head 0 to 4) points at it."""
    dev, q, before = live
    for n in range(1, 6):
        out = [bytes([0x30 + n, 0x40 + i]) for i in range(n - 1)] if n > 1 else []
        head = q.add(out, [2 * n], indirect=True)
        q.notify()
        assert head == n - 1
        want = b"".join(out)[::-1]
        assert q.get_used() == [(head, len(want))] and q.chain_data(head)[: len(want)] == want
    assert not dev.needs_reset() and guest_errors(dev.m) == before


@pytest.mark.parametrize("entries", [2, 16])
def test_a_next_index_past_an_indirect_table_is_refused(live, caplog, entries):
    """The walk of an indirect table stays inside its len / 16 entries: a NEXT to entry `entries` is out of range,
    even with a well-formed descriptor in the RAM right after the table."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev, q, before = live
    table, buf = q.buf(16 * (entries + 1)), q.buf(entries + 1)
    for i in range(entries + 1):
        q.write_desc(i, buf + i, 1, DESC_F_NEXT if i < entries else 0, i + 1 if i < entries else 0, table=table)
    q.write_desc(0, table, 16 * entries, DESC_F_INDIRECT)
    q.publish(0)
    expect_broken(dev, q, before)
    assert f"queue 0: descriptor index {entries} out of range (table of {entries})" in caplog.text


def test_a_zero_length_buffer_is_not_looked_up(live):
    """A buffer of 0 bytes holds nothing to read or write: its address is never used, so one outside RAM (at 0)
    in the middle of a chain is no error, and the chain's data and lengths are those of its other buffers."""
    dev, q, before = live
    src, dst = q.buf(3), q.buf(3)
    dev.m.write_memory(src, b"abc")
    q.write_desc(0, src, 3, DESC_F_NEXT, 1)
    q.write_desc(1, 0, 0, DESC_F_NEXT, 2)
    q.write_desc(2, 0, 0, DESC_F_WRITE | DESC_F_NEXT, 3)
    q.write_desc(3, dst, 3, DESC_F_WRITE)
    q.publish(0)
    q.notify()
    assert q.get_used() == [(0, 3)] and dev.m.read_memory(dst, 3) == b"cba"
    assert not dev.needs_reset() and guest_errors(dev.m) == before


@pytest.mark.parametrize("n", [256, 257])
def test_a_chain_holds_at_most_256_buffers(live, caplog, n):
    """The device takes chains of up to VIRTQ_MAX_SEGS = 256 buffers (here in one indirect table, readable 1-byte
    buffers: queue 0 echoes nothing back); one more is refused and named in the log."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    dev, q, before = live
    table, buf = q.buf(16 * n), q.buf(n)
    for i in range(n):
        q.write_desc(i, buf + i, 1, DESC_F_NEXT if i + 1 < n else 0, i + 1 if i + 1 < n else 0, table=table)
    q.write_desc(0, table, 16 * n, DESC_F_INDIRECT)
    q.publish(0)
    if n == 256:
        q.notify()
        assert q.get_used() == [(0, 0)] and not dev.needs_reset() and guest_errors(dev.m) == before
    else:
        expect_broken(dev, q, before)
        assert "queue 0: chain at head 0 has more than 256 buffers" in caplog.text


def test_the_device_writes_nothing_past_its_device_area(dev):
    """The device area of a 16-entry queue is 6 + 8 * 16 bytes (flags, idx, ring, avail_event, §2.7.8): chains
    through every used ring entry, the last one included, leave the two bytes right after it as the driver
    wrote them."""
    q0, _ = dev.init(queues=2, sizes=[QMAX, QMAX])
    end = q0.used + 6 + 8 * QMAX
    dev.m.write_memory(end, b"\xaa\x55")
    for i in range(QMAX + 1):
        head = q0.add([bytes([i])], [1])
        q0.notify()
        assert q0.get_used() == [(head, 1)]
    assert q0.used_idx() == QMAX + 1 and dev.m.read_memory(end, 2) == b"\xaa\x55"


def test_virtio_gpu_serves_each_command_of_a_notify():
    """virtio-gpu serves chains while vmm__virtq_pop returns exactly 1 ("a chain"): two GET_DISPLAY_INFO commands
    made available before one notify are both answered, in order, with their full 408-byte responses."""
    with vmmpy.Machine(gpu=True, gpu_size=(640, 480)) as mach:
        g = Gpu(mach)
        heads = [g.ctrl.add([hdr(GET_DISPLAY_INFO)], [408]) for _ in range(2)]
        g.ctrl.notify()
        assert g.ctrl.get_used() == [(h, 408) for h in heads]
        for h in heads:
            assert struct.unpack_from("<I", g.ctrl.chain_data(h))[0] == OK_DISPLAY_INFO


def waits_for_the_device(dev: VirtioMMIO) -> tuple[bool, threading.Thread]:
    """Read DeviceFeatures from another thread: was it still waiting (for the device lock) 1 s after it started
    the read? The thread is returned to be joined once the lock holder has been let go. (Counting from the
    thread's start, not from Thread.start(), keeps a loaded host's slow thread start from passing as a wait.)"""
    started = threading.Event()

    def read() -> None:
        started.set()
        dev.read(DEVICE_FEATURES)

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(10), "the reader thread did not start"
    reader.join(1.0)
    waited = reader.is_alive()
    return waited, reader


def test_the_device_lock_stays_held_after_a_chain_is_returned(tmp_path):
    """virtio-9p serves the chains of one notify under the device lock: returning the first one (the used ring
    push) keeps the lock, so while the second one's guest error is logged (the log handler blocked), a register
    read from another thread waits."""
    (tmp_path / "f").write_bytes(b"f")
    with vmmpy.Machine(share=[(str(tmp_path), "t")]) as mach:
        c = P9(mach)
        c.q.add([b"abc"], [64])  # shorter than a 9P header (7 bytes): a guest error, the chain is returned
        c.q.add([b"abcde"], [64])
        with a_thread_inside("request chain with 5 readable", c.q.notify):
            waited, reader = waits_for_the_device(c.dev)
        reader.join(10)
        assert waited, "a register read went through while the device was serving a chain"
        assert [n for _, n in c.q.get_used()] == [
            11,
            11,
        ]  # each answered with an Rlerror (size[4] type[1] tag[2] ecode[4])


def test_the_device_lock_stays_held_after_receive_chains_are_given_back():
    """virtio-net gives back (unpops) the chains of a frame the whole receive ring cannot hold, then logs the drop,
    still under the device lock: while that guest error is logged (the handler blocked), a register read from
    another thread waits."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, sizes=[4, 16])
        for _ in range(4):
            b.rx.add([], [20])  # 80 bytes in the whole ring
        big = frame(b.mac, a.mac, bytes(200))

        def arrive():
            a.send(big)
            b.rx.notify()

        with a_thread_inside("does not fit in the receive buffers of the whole ring", arrive):
            waited, reader = waits_for_the_device(b.dev)
        reader.join(10)
        assert waited, "a register read went through while the device was dropping a frame"
        assert mb.net_stats().rx_dropped == 1


def scattered(q, sizes: list[int], flags: int, fill: bytes = b"") -> tuple[int, list[int]]:
    """A direct chain of buffers of `sizes` with `flags` (readable: holding consecutive bytes of `fill`), each
    followed in RAM by 64 bytes of 0xEE that belong to no buffer; returns (head, buffer addresses)."""
    gpas, at = [], 0
    for i, n in enumerate(sizes):
        gpa = q.buf(n + 64)
        q.m.write_memory(gpa, (fill[at : at + n] if fill else bytes(n)) + b"\xee" * 64)
        at += n
        last = i + 1 == len(sizes)
        q.write_desc(i, gpa, n, flags | (0 if last else DESC_F_NEXT), 0 if last else i + 1)
        gpas.append(gpa)
    q.publish(0)
    return 0, gpas


def test_a_chain_is_read_and_written_in_pieces_that_do_not_line_up_with_its_buffers():
    """virtio-console copies a chain in pieces of 4 KiB, from offsets 0, 4096 and 8192: with buffers of 3000
    bytes each such piece starts inside or past a buffer and ends in another. A transmit chain's bytes reach the
    console in order, none from the RAM between its buffers; a receive chain gets the input in the same order,
    and the RAM between its buffers stays the driver's."""
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(9000))
    with vmmpy.Machine(virtio_console=True) as mach:
        _, rx, tx = open_console(mach)
        head, _ = scattered(tx, [3000, 3000, 3000], 0, data)
        tx.notify()
        assert tx.get_used() == [(head, 0)] and mach.serial.data == data
        mach.hvc.write(data[::-1])
        head, gpas = scattered(rx, [3000, 3000, 3000], DESC_F_WRITE)
        rx.notify()
        assert rx.get_used() == [(head, 9000)]
        got = [mach.read_memory(g, 3064) for g in gpas]
        assert b"".join(b[:3000] for b in got) == data[::-1]
        assert [b[3000:] for b in got] == [b"\xee" * 64] * 3


def test_a_write_longer_than_the_writable_part_stops_at_its_end(live):
    """The test device echoes all of a chain's readable bytes into its writable part, as much as fits (§2.7.4: the
    device writes only the chain's writable buffers). A first chain of three buffers, then a chain of 10 readable
    bytes and one 4-byte writable buffer: 4 bytes are written, and the first chain's buffers are not touched
    again."""
    dev, q, before = live
    first = q.add([b"1"], [1, 8], fill=0x11)
    q.notify()
    assert q.get_used() == [(first, 1)]
    assert q.chain_data(first) == b"1" + b"\x11" * 8
    head = q.add([b"0123456789"], [4])
    q.notify()
    assert q.get_used() == [(head, 4)] and q.chain_data(head) == b"9876"
    assert q.chain_data(first) == b"1" + b"\x11" * 8
    assert not dev.needs_reset() and guest_errors(dev.m) == before


# -- the ring descriptors virtio-net counts (§5.1.6.3: a frame may not wait for buffers the ring cannot hold) ---


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_each_receive_chain_counts_the_ring_descriptors_it_takes(indirect):
    """A receive ring of 4 descriptors, a frame that needs three 64-byte buffers (MRG_RXBUF). Two chains of one
    ring descriptor each (a buffer, or an indirect table of two 32-byte buffers) take 2 of the 4: the frame waits
    for more, and a third chain takes it. Counting more than the ring descriptors a chain takes (an indirect
    table's own entries, or the last frame's chains again) would drop the frame as too big for the whole ring."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, sizes=[4, 16])
        big = frame(b.mac, a.mac, bytes(range(136)))  # 150 bytes: 12 + 150 = 162 > 2 * 64
        a.send(big)
        per_chain = [32, 32] if indirect else [64]
        for _ in range(2):
            b.rx.add([], per_chain, indirect=indirect)
        b.rx.notify()
        assert b.received() == []
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_dropped, st.rx_frames) == (1, 0, 0)
        b.rx.add([], per_chain, indirect=indirect)
        b.rx.notify()
        assert b.received() == [(3, big)]
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_dropped, st.rx_frames) == (0, 0, 1)
        assert mb.stats()["guest_errors"] == 0 and not b.dev.needs_reset()


def test_a_frame_that_arrives_while_the_receive_queue_is_disabled_waits_for_it():
    """The receive queue taken back (QueueReady = 0) while the device is live: a frame that arrives meanwhile is
    kept (not dropped as too big for a ring of no descriptors), also when a transmit notify looks at the receive
    side; once the queue is live again on fresh rings, it is delivered."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        disable(b.dev, 0)
        f = frame(b.mac, a.mac, b"while disabled")
        a.send(f)
        b.tx.notify()  # the device looks at the receive queue after each transmit notify
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_dropped, st.rx_frames) == (1, 0, 0)
        assert mb.stats()["guest_errors"] == 0 and not b.dev.needs_reset()
        b.rx = b.dev.setup_queue(0)
        b.post([256])
        assert b.received() == [(1, f)]
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_dropped, st.rx_frames) == (0, 0, 1)


# -- snapshots: a queue's description must be the device's --------------------------------------------------


@pytest.mark.parametrize("num_max", [8, 32, 0])
def test_a_snapshot_of_a_queue_with_another_maximum_size_is_refused(guest, tmp_path, num_max):
    """Each queue's section starts with the QueueNumMax it was saved with: a snapshot whose queue 0 had a smaller
    or a larger maximum than the device offers is refused, naming both (the queue's own size, 16, is valid)."""
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1, ram="64MiB") as mach:
        mach.boot_info()
        VirtioMMIO(mach, 0).init(queues=2)
        p = tmp_path / "s.snap"
        mach.snapshot(p)
    data = bytearray(p.read_bytes())
    ((off, plen),) = [(o, n) for name, o, n in sections(data) if name == "virtio-dummy.0"]
    qoff = off + 36  # the core's 36 bytes, then queue 0: num_max (2), num (2), ready (1), ...
    assert struct.unpack_from("<HH?", data, qoff) == (QMAX, QMAX, True)
    struct.pack_into("<H", data, qoff, num_max)
    with_section_crc(data, off, plen)
    p.write_bytes(data)
    want = rf"virtio-dummy\.0.*queue 0: its maximum size was {num_max}, this device offers {QMAX}"
    with pytest.raises(errors.VmmError, match=want):
        vmmpy.Machine.restore(p).close()


# -- the virtio-mmio register file (§4.2.2) ---------------------------------------------------------------------


def test_a_ring_address_half_written_again_replaces_only_that_half(dev):
    """A driver may write a ring address's halves in any order and more than once: each write of a Low register
    replaces the low 32 bits (no bit of the earlier value stays) and leaves the High half alone."""
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    pairs = ((QUEUE_DESC_LOW, QUEUE_DESC_HIGH), (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH),
             (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH))  # fmt: skip
    for i, (low, high) in enumerate(pairs):
        dev.write(high, 0x10 + i)
        dev.write(low, 0x1234_5671)
        dev.write(low, 0x4000_0000 + 0x100 * i)
    assert [(dev.read(low), dev.read(high)) for low, high in pairs] == [
        (0x4000_0000 + 0x100 * i, 0x10 + i) for i in range(3)
    ]
    assert guest_errors(dev.m) == 0


def test_queue_num_max_is_the_devices_whatever_queue_num_says(dev):
    """QueueNumMax reads the largest size the device takes (16), not the size the driver chose (§4.2.2)."""
    dev.negotiate()
    for qi in (0, 1):
        dev.write(QUEUE_SEL, qi)
        dev.write(QUEUE_NUM, 4)
        assert (dev.read(QUEUE_NUM_MAX), dev.read(QUEUE_NUM)) == (QMAX, 4)


def test_only_1_written_to_queue_reset_resets_the_queue(dev):
    """§4.2.2 QueueReset: writing 1 resets the selected queue (and it reads 0 again at once); 0 or 2 do nothing."""
    dev.negotiate()
    q = dev.setup_queue(1, 4)
    for val in (0, 2, 0xFFFF_FFFF):
        dev.write(QUEUE_RESET, val)
        assert (dev.read(QUEUE_READY), dev.read(QUEUE_NUM), dev.read(QUEUE_DESC_LOW)) == (1, 4, q.desc), val
    dev.write(QUEUE_RESET, 1)
    assert (dev.read(QUEUE_READY), dev.read(QUEUE_NUM), dev.read(QUEUE_DESC_LOW)) == (0, QMAX, 0)
    assert guest_errors(dev.m) == 0


def test_a_register_is_read_and_written_only_with_a_32_bit_access(dev):
    """Registers are 32-bit (§4.2.2): a 64-bit read of MagicValue reads 0, a 64-bit write of QueueSel selects
    nothing; each is a guest error."""
    dev.negotiate()
    dev.write(QUEUE_SEL, 0)
    before = guest_errors(dev.m)
    assert dev.read(MAGIC, size=8) == 0
    dev.write(QUEUE_SEL, 1, size=8)
    assert guest_errors(dev.m) == before + 2
    dev.write(QUEUE_NUM, 4)  # queue 0's, still selected
    assert dev.read(QUEUE_NUM) == 4
    dev.write(QUEUE_SEL, 1)
    assert dev.read(QUEUE_NUM) == QMAX


def test_the_config_space_starts_at_0x100(dev):
    """Offset 0x100 is the first byte of the device's config space (§4.2.2), for any access size: a write there
    of its read-only magic is ignored without an error, and an 8-byte one also fills the scratch field after
    it."""
    dev.config_write(CFG_MAGIC, 0x12, 1)
    dev.config_write(CFG_MAGIC, 0x1234_5678)
    dev.config_write(CFG_MAGIC, 0xCAFE_F00D_0000_0000, 8)
    assert guest_errors(dev.m) == 0
    assert (dev.config_read(CFG_MAGIC), dev.config_read(CFG_SCRATCH)) == (0x796D7564, 0xCAFE_F00D)


def test_the_transport_saves_each_selector_as_written(guest, tmp_path):
    """SHMSel is a register like the other selectors (§4.2.2; there are no shared memory regions, so it selects
    none): writing it is no error, and a snapshot saves the slot and the four selectors as the driver left them."""
    with vmmpy.Machine(guest("idle"), virtio_test_devices=1, ram="64MiB") as mach:
        mach.boot_info()
        d = VirtioMMIO(mach, 0)
        d.negotiate()
        for reg, val in ((DEVICE_FEATURES_SEL, 5), (DRIVER_FEATURES_SEL, 6), (QUEUE_SEL, 1), (SHM_SEL, 7)):
            d.write(reg, val)
        assert guest_errors(mach) == 0
        p = tmp_path / "s.snap"
        mach.snapshot(p)
    data = p.read_bytes()
    ((off, _),) = [(o, n) for name, o, n in sections(data) if name == "virtio-dummy.0"]
    # the core (36 bytes) and its two queues (36 each), then the transport: slot and four selectors (u32 each)
    assert struct.unpack_from("<5I", data, off + 36 + 2 * 36) == (0, 5, 6, 1, 7)


def test_an_empty_slot_answers_32_bit_reads_like_qemus_and_nothing_else():
    """A slot without a device (§4.2.3.1.1: DeviceID 0) reads, as QEMU's: MagicValue, Version 2 and VendorID
    with 32-bit reads, 0 for every other register; a read of any other size is 0 everywhere."""
    with vmmpy.Machine(virtio_test_devices=1) as mach:
        empty = slot_base(3)
        assert [mach.mmio_read(empty + reg) for reg in (MAGIC, VERSION, DEVICE_ID, VENDOR_ID, STATUS)] == [
            MAGIC_VALUE,
            2,
            0,
            0x554D4551,
            0,
        ]
        for size in (1, 2):
            assert [mach.mmio_read(empty + reg, size) for reg in (MAGIC, VERSION, VENDOR_ID)] == [0, 0, 0], size
        assert mach.mmio_read(empty + MAGIC, 8) == 0  # accesses are naturally aligned: Magic is the 8-byte one


def test_a_guest_error_names_the_device_and_its_slot(caplog):
    """Each device's guest errors name it and the virtio-mmio slot it is on."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    with vmmpy.Machine(virtio_test_devices=2) as mach:
        for slot in (0, 1):
            d = VirtioMMIO(mach, slot)
            d.init(queues=2)
            d.write(QUEUE_NOTIFY, 5)
        assert guest_errors(mach) == 2
    for slot in (0, 1):
        assert f"dummy@virtio-mmio.{slot}: notify of queue 5, which does not exist" in caplog.text
