"""Tier 1: virtio-net (virtio 1.2 §5.1) driven over virtio-mmio, two VMs on a vmmpy.Network, and slirp.

The VMs do not run: tests/virtio_driver.py plays the guest drivers through the public test calls,
and the frames cross the real in-process switch (or real libslirp) between them.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

import vmmpy
from tests.virtio_driver import F_EVENT_IDX, ID_NET, INT_CONFIG, VirtioMMIO, find_devices
from vmmpy import cli, errors

F_CSUM, F_GUEST_CSUM, F_MAC, F_MRG_RXBUF, F_STATUS = 1 << 0, 1 << 1, 1 << 5, 1 << 15, 1 << 16
NEEDS_CSUM, DATA_VALID = 1, 2
F_VERSION_1 = 1 << 32
HDR = 12
BCAST = b"\xff" * 6
RXQ_FRAMES = 256


def frame(dst: bytes, src: bytes, payload: bytes, ethertype: int = 0x88B5) -> bytes:
    """An Ethernet frame (0x88B5: the IEEE local experimental EtherType)."""
    return dst + src + struct.pack(">H", ethertype) + payload


class Nic:
    """A virtio-net driver on tests/virtio_driver.py: queue 0 receives, queue 1 transmits."""

    def __init__(self, m: vmmpy.Machine, features: int | None = None, sizes: list[int] | None = None):
        self.m = m
        (slot,) = [s for s, dev_id in find_devices(m) if dev_id == ID_NET]
        self.dev = VirtioMMIO(m, slot)
        self.rx, self.tx = self.dev.init(queues=2, features=features, sizes=sizes)

    @property
    def mac(self) -> bytes:
        return bytes(self.dev.config_read(i, 1) for i in range(6))

    def send(self, data: bytes, hdr: bytes = bytes(HDR), notify: bool = True) -> int:
        head = self.tx.add([hdr, data], [])
        if notify:
            self.tx.notify()
        return head

    def post(self, sizes: list[int]) -> list[int]:
        heads = [self.rx.add([], [n]) for n in sizes]
        self.rx.notify()
        return heads

    def received(self, flags: int = 0) -> list[tuple[int, bytes]]:
        """(num_buffers, frame) of each frame the device put in the receive buffers since the last call;
        every header's flags must be `flags`."""
        out, pending = [], []
        for head, n in self.rx.get_used():
            pending.append(self.rx.chain_data(head)[:n])
        while pending:
            first = pending.pop(0)
            (nbuf,) = struct.unpack_from("<H", first, 10)
            assert first[0] == flags and first[1:10] == bytes(9), "flags as expected; no GSO: gso and csum fields 0"
            data = first[HDR:] + b"".join(pending[: nbuf - 1])
            del pending[: nbuf - 1]
            out.append((nbuf, data))
        return out


@pytest.fixture
def pair():
    """Two VMs on one switch, each with a driver: (a, b, net)."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        yield Nic(ma), Nic(mb), net


def test_features_config_and_default_macs(pair):
    a, b, _ = pair
    f = a.dev.device_features()
    want = F_CSUM | F_GUEST_CSUM | F_MAC | F_MRG_RXBUF | F_STATUS | F_VERSION_1
    assert f & want == want
    assert f & 0x7F80 == 0, "no segmentation offload (bits 7-14) is offered"
    # switch ports: 52:54:00:12:35:<port>, in plug order
    assert a.mac.hex(":") == "52:54:00:12:35:00" and b.mac.hex(":") == "52:54:00:12:35:01"
    assert a.dev.config_read(6, 2) == 1  # status: VIRTIO_NET_S_LINK_UP
    assert a.dev.config_read(8, 2) == 1  # max_virtqueue_pairs: one pair (no VIRTIO_NET_F_MQ)
    assert a.m.net_stats().mac == "52:54:00:12:35:00"


def test_user_nic_default_mac_and_configured_mac():
    with vmmpy.Machine(net=["user", "user"], mac=[None, "02:00:00:aa:bb:cc"]) as m:
        assert m.net_stats(0).mac == "52:54:00:12:34:56"
        assert m.net_stats(1).mac == "02:00:00:aa:bb:cc"
    with vmmpy.Machine(net=["user", "user"]) as m:  # each default MAC is the base plus the NIC's index
        assert [m.net_stats(i).mac for i in (0, 1)] == ["52:54:00:12:34:56", "52:54:00:12:34:57"]
    with pytest.raises(errors.InvalidArgument, match="^MAC 01:00:5e:00:00:01 is a multicast address$"):
        vmmpy.Machine(net="user", mac="01:00:5e:00:00:01")
    with pytest.raises(errors.InvalidArgument, match="six hex bytes"):
        vmmpy.Machine(net="user", mac="52:54:00:12:34")


def test_frame_crosses_the_switch_both_ways(pair):
    a, b, net = pair
    f1 = frame(b.mac, a.mac, b"hello b" * 10)
    a.send(f1)
    assert a.tx.get_used() and b.m.net_stats().rx_queued == 1
    b.post([2048, 2048])
    assert b.received() == [(1, f1)]
    f2 = frame(a.mac, b.mac, b"hello a")
    a.post([2048])
    b.send(f2)  # the answer lands at once: a posted buffers first (the I/O thread or the send delivers it)
    assert wait_received(a) == [(1, f2)]
    sa, sb = a.m.net_stats(), b.m.net_stats()
    assert (sa.tx_frames, sa.tx_bytes, sa.rx_frames, sa.rx_bytes) == (1, len(f1), 1, len(f2))
    assert (sb.tx_frames, sb.rx_frames, sb.rx_dropped, sb.tx_malformed) == (1, 1, 0, 0)
    assert net.forwarded == 2


def wait_received(nic: Nic, timeout: float = 5.0, flags: int = 0):
    """Frames delivered by the receiver's I/O thread (asynchronous): wait for the used ring to move."""
    deadline = time.monotonic() + timeout
    while nic.rx.used_idx() == nic.rx.last_used and time.monotonic() < deadline:
        time.sleep(0.001)
    return nic.received(flags)


def test_deterministic_receiver_takes_frames_only_at_its_own_points():
    """In deterministic mode the I/O thread never fills a guest's buffers: frames wait for a round
    boundary (or the guest's own notify), so when they enter depends on the receiver's run alone.
    A real-time VM on the same switch is the control: its I/O thread delivers the same broadcast."""
    net = vmmpy.Network()
    with (
        vmmpy.Machine(net=net) as ma,
        vmmpy.Machine(net=net, deterministic=True) as mb,
        vmmpy.Machine(net=net) as mc,
    ):
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        b.post([512])
        c.post([512])
        f = frame(BCAST, a.mac, b"to everyone")
        a.send(f)
        assert wait_received(c) == [(1, f)]  # the real-time VM: its I/O thread filled the buffer
        assert b.rx.used_idx() == 0 and mb.net_stats().rx_queued == 1
        b.rx.notify()  # the deterministic guest's own access: delivered now
        assert b.received() == [(1, f)]


def udp_frame(dst: bytes, src: bytes, payload: bytes, csum: int = 0) -> bytes:
    """An IPv4/UDP frame 10.0.0.1:1000 -> 10.0.0.2:2000 whose UDP checksum field holds `csum`."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))  # fmt: skip
    udp = struct.pack(">HHHH", 1000, 2000, 8 + len(payload), csum)
    return frame(dst, src, ip + udp + payload, 0x0800)


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_checksum_offload_completes_the_guests_partial_checksum(pair):
    """NEEDS_CSUM (§5.1.6.2): the field holds the pseudo-header sum; the device finishes the checksum."""
    a, b, _ = pair
    payload = b"odd-length payload!"
    pseudo = ones_sum(bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + struct.pack(">H", 8 + len(payload)))
    partial = udp_frame(b.mac, a.mac, payload, csum=pseudo)
    csum_start = 14 + 20
    a.send(partial, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, csum_start, 6, 0))
    b.post([512])
    ((_, got),) = b.received()  # from a switch: no DATA_VALID, the receiver checks for itself
    udp = got[csum_start:]
    assert got[: csum_start + 6] == partial[: csum_start + 6] and udp[8:] == payload
    assert udp[6:8] != struct.pack(">H", pseudo)
    # a complete UDP checksum: pseudo-header + UDP header + data sum to 0xffff
    assert ones_sum(bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + struct.pack(">H", len(udp)) + udp) == 0xFFFF


def test_checksum_offload_folds_every_carry(pair):
    """A payload chosen so that the 32-bit sum is 0x1ffff: folding it once gives 0x10000, which carries again."""
    a, b, _ = pair
    pseudo = ones_sum(bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + struct.pack(">H", 8 + 4))
    others = 1000 + 2000 + (8 + 4) + pseudo  # the UDP header's words (the checksum field holds the pseudo sum)
    payload = struct.pack(">HH", 0xFFFF, 0x1FFFF - others - 0xFFFF)
    udp = struct.pack(">HHHH", 1000, 2000, 12, pseudo) + payload
    total = sum(struct.unpack(">6H", udp))
    assert total == 0x1FFFF and (total & 0xFFFF) + (total >> 16) > 0xFFFF  # the case this test is about
    a.send(udp_frame(b.mac, a.mac, payload, csum=pseudo), hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 34, 6, 0))
    b.post([256])
    ((_, got),) = b.received()
    udp = got[34:]
    assert ones_sum(bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + struct.pack(">H", len(udp)) + udp) == 0xFFFF
    assert udp[6:8] == b"\xff\xfe"  # 0x1ffff -> 0x10000 -> 0x0001, complemented (one fold alone: 0xffff)


def test_checksum_offload_at_an_offset_past_255(pair):
    """csum_start and csum_offset are 16-bit fields: a checksum 0x12c bytes into the summed range lands there,
    and the range's ones' complement sum (the field included) then comes to 0xffff."""
    a, b, _ = pair
    payload = bytearray((7 * i) & 0xFF for i in range(600))
    payload[0x12C : 0x12C + 2] = b"\0\0"  # the field starts at 0 (no pseudo-header)
    sent = frame(b.mac, a.mac, bytes(payload))
    a.send(sent, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 14, 0x12C, 0))
    b.post([1024])
    ((_, got),) = b.received()
    at = 14 + 0x12C
    assert len(got) == len(sent) and got[:at] == sent[:at] and got[at + 2 :] == sent[at + 2 :]
    assert ones_sum(got[14:]) == 0xFFFF


def test_checksum_offload_needs_negotiation():
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma, features=~F_CSUM), Nic(mb)
        a.send(udp_frame(b.mac, a.mac, b"x"), hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 34, 6, 0))
        assert ma.net_stats().tx_malformed == 1 and mb.net_stats().rx_queued == 0


def test_learning_switch_does_not_send_a_known_unicast_elsewhere():
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as mc:
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        b.send(frame(BCAST, b.mac, b"I am b"))  # broadcast: a and c get it; the switch learns b's port
        a.send(frame(b.mac, a.mac, b"for b only"))
        assert mb.net_stats().rx_queued == 1 and mc.net_stats().rx_queued == 1 and ma.net_stats().rx_queued == 1
        c.post([256, 256])
        assert [d for _, d in c.received()] == [frame(BCAST, b.mac, b"I am b")]
        c.send(frame(a.mac, c.mac, b"for a only"))  # a was the second address learned: found as well
        assert (ma.net_stats().rx_queued, mb.net_stats().rx_queued) == (2, 1)


def test_a_station_that_moves_is_followed_to_its_new_port():
    """The switch learns a source address once and moves it when it shows up behind another port. The
    address has an odd second byte: only the first byte's low bit makes a group address."""
    moving = bytes.fromhex("020100aabb01")
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as mc:
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        b.send(frame(BCAST, moving, b"here at b"))  # the first address the switch learns
        for _ in range(2):
            a.send(frame(moving, a.mac, b"for the station"))  # to b alone, both times
        assert (mb.net_stats().rx_queued, mc.net_stats().rx_queued) == (2, 1)
        c.send(frame(BCAST, moving, b"now at c"))  # the station moved
        a.send(frame(moving, a.mac, b"follow it"))
        assert (mb.net_stats().rx_queued, mc.net_stats().rx_queued) == (3, 2)
        c.post([256] * 2)
        assert [d for _, d in c.received()][-1] == frame(moving, a.mac, b"follow it")


def test_a_station_that_moves_is_followed_wherever_it_is_in_the_table():
    """As above with the station's address learned second: the move updates that entry, whatever its place."""
    moving = bytes.fromhex("020100aabb02")
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as mc:
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        a.send(frame(BCAST, a.mac, b"a first"))
        b.send(frame(BCAST, moving, b"here at b"))
        c.send(frame(BCAST, moving, b"now at c"))
        a.send(frame(moving, a.mac, b"follow it"))
        assert (mb.net_stats().rx_queued, mc.net_stats().rx_queued) == (2, 3)


def test_mergeable_rx_buffers_spread_a_frame(pair):
    a, b, _ = pair
    assert b.dev.features & F_MRG_RXBUF
    big = frame(b.mac, a.mac, bytes(range(256)) * 12)  # 3086 bytes + 12 header = 3 buffers of 1200
    a.send(big)
    b.post([1200] * 4)
    assert b.received() == [(3, big)]
    assert b.m.net_stats().rx_frames == 1


def test_without_mrg_rxbuf_a_frame_too_big_for_the_buffer_is_dropped():
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, features=~F_MRG_RXBUF)
        assert not b.dev.features & F_MRG_RXBUF
        big, small = frame(b.mac, a.mac, bytes(1000)), frame(b.mac, a.mac, b"fits")
        first = frame(b.mac, a.mac, b"first")
        a.send(first)
        b.post([200])
        assert b.received() == [(1, first)]  # that buffer is the driver's again
        a.send(big)
        a.send(small)
        (head,) = b.post([200])  # the big one cannot fit: dropped; this buffer (only) stays for the small one
        assert b.rx.get_used() == [(head, HDR + len(small))]
        assert b.rx.chain_data(head)[HDR : HDR + len(small)] == small
        assert mb.net_stats().rx_dropped == 1 and mb.net_stats().rx_frames == 2


def test_the_device_writes_only_the_bytes_it_reports(pair):
    """A receive buffer larger than header + frame: the bytes past the used length stay the driver's."""
    a, b, _ = pair
    f = frame(b.mac, a.mac, b"short frame" * 5)
    a.send(f)
    head = b.rx.add([], [1024], fill=0xAA)  # the frame is waiting: the device may take the chain at once
    ((gpa, n),) = b.rx.chains[head]
    b.rx.notify()
    ((used_head, length),) = b.rx.get_used()
    assert (used_head, length) == (head, HDR + len(f))
    data = b.m.read_memory(gpa, n)
    assert data[HDR:length] == f and data[length:] == b"\xaa" * (n - length)


def test_not_enough_buffers_keeps_the_frame_until_more_are_posted(pair):
    a, b, _ = pair
    big = frame(b.mac, a.mac, bytes(3000))
    a.send(big)
    b.post([1024])  # 3026 bytes need three
    assert b.received() == [] and b.m.net_stats().rx_queued == 1
    b.post([1024, 1024])
    assert b.received() == [(3, big)]


@pytest.mark.parametrize("per_chain", [[20], [12, 8]], ids=["one-descriptor", "two-descriptor"])
def test_a_frame_the_whole_ring_cannot_hold_is_dropped_not_waited_for(per_chain):
    """With MRG_RXBUF a frame may span chains, but when the chains of every descriptor of the ring hold
    less than it, no buffer can come before some are used: the frame is dropped (counted), the next fits."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, sizes=[16, 16])
        big, small = frame(b.mac, a.mac, bytes(400)), frame(b.mac, a.mac, b"fits")
        a.send(big)
        a.send(small)
        for _ in range(16 // len(per_chain)):  # the whole ring: 320 bytes, 12 + 414 needed
            b.rx.add([], per_chain)
        b.rx.notify()
        assert b.received() == [(-(-(HDR + len(small)) // 20), small)]
        st = mb.net_stats()
        assert (st.rx_dropped, st.rx_frames, st.rx_queued) == (1, 1, 0)
        assert mb.stats()["guest_errors"] == 1 and not b.dev.needs_reset()


def test_a_frame_waiting_for_buffers_asks_to_hear_of_the_next_one(pair):
    """EVENT_IDX (§2.7.10): a frame needs more buffers than are posted, so the device gives the chains
    back; avail_event must then name the next entry the driver adds (the avail index), or a driver that
    honours it (vring_need_event) never notifies again and the frame waits for good."""
    a, b, _ = pair
    assert b.dev.features & F_EVENT_IDX
    big = frame(b.mac, a.mac, bytes(3000))
    a.send(big)
    b.post([1024])  # 3042 bytes need three
    assert b.received() == [] and b.rx.avail_event() == 1
    old, new = 1, 3  # the driver adds two more: does it notify?
    assert (new - b.rx.avail_event() - 1) & 0xFFFF < (new - old) & 0xFFFF
    b.post([1024, 1024])
    assert b.received() == [(3, big)]


def test_each_received_frame_moves_avail_event_past_its_buffer(pair):
    """EVENT_IDX (§2.7.10): the device takes a receive buffer per frame, and each take sets avail_event to the
    next entry, with buffers still posted (so no empty look at the ring sets it instead)."""
    a, b, _ = pair
    assert b.dev.features & F_EVENT_IDX
    b.post([2048] * 4)
    assert b.rx.avail_event() == 0
    for n in (1, 2):
        a.send(frame(b.mac, a.mac, bytes([n]) * 60))
        assert wait_received(b) == [(1, frame(b.mac, a.mac, bytes([n]) * 60))]
        assert b.rx.avail_event() == n


def test_receive_buffer_smaller_than_the_header_needs_reset(pair):
    a, b, _ = pair
    a.send(frame(b.mac, a.mac, b"x" * 20))
    b.post([8])
    assert b.dev.needs_reset()
    assert b.dev.interrupt_status() & INT_CONFIG


def test_malformed_transmit_chains_are_refused_and_counted(pair, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    a, b, net = pair
    good = frame(b.mac, a.mac, b"payload")
    a.send(good, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, len(good), 0, 0))  # checksum starts at the end
    a.send(good, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, len(good) + 100, 0, 0))  # starts beyond it
    a.send(good, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 14, len(good) - 14 - 1, 0))  # its last byte only
    a.send(good, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 300, 400, 0))  # both past 255: 16-bit fields
    a.send(good, hdr=b"\x00\x01" + bytes(HDR - 2))  # GSO_TCPV4: not offered
    a.send(b"short", hdr=bytes(HDR))  # shorter than an Ethernet header
    a.send(b"", hdr=bytes(6))  # not even a header
    a.send(frame(b.mac, a.mac, bytes(65535 + 10)))  # longer than any frame
    head = a.tx.add([], [64])  # a transmit chain with only a writable buffer
    a.tx.notify()
    used = a.tx.get_used()
    assert len(used) == 9 and all(n == 0 for _, n in used) and head in [u for u, _ in used]
    st = a.m.net_stats()
    assert (st.tx_malformed, st.tx_frames) == (9, 0)
    assert net.forwarded == 0 and b.m.net_stats().rx_queued == 0
    assert a.m.stats()["guest_errors"] >= 9
    for msg in (
        "transmit checksum at 21+0 lies outside the 21-byte frame",
        "transmit checksum at 121+0 lies outside the 21-byte frame",
        "transmit checksum at 14+6 lies outside the 21-byte frame",
        "transmit checksum at 300+400 lies outside the 21-byte frame",
        f"transmit chain of {HDR + 5} readable bytes (header {HDR}, frame 14..65553)",
    ):
        assert msg in caplog.text
    # each names the device and what was wrong (the log is rate-limited: the first ones are there)
    assert "net@virtio-mmio.0: " in caplog.text
    assert "transmit header asks for an offload not negotiated (flags 0x0, gso_type 1)" in caplog.text
    assert not a.dev.needs_reset(), "a bad frame is dropped, the queue goes on"
    a.send(good)
    assert b.m.net_stats().rx_queued == 1
    a.send(frame(b.mac, a.mac, b""))  # an Ethernet header alone is the shortest frame
    st = a.m.net_stats()
    assert (st.tx_malformed, st.tx_frames, net.forwarded, b.m.net_stats().rx_queued) == (9, 2, 2, 2)


def test_transmit_flood_leaves_memory_bounded_and_counts_drops(pair):
    a, b, _ = pair
    before = b.m.stats()["host_mem_bytes"]
    payload = bytes(1400)
    sent = 0
    for _ in range(20):  # 2000 frames the receiver never takes (100 chains of 2 descriptors at a time)
        for _ in range(100):
            a.send(frame(b.mac, a.mac, payload), notify=False)
        a.tx.notify()
        sent += len(a.tx.get_used())
    st = b.m.net_stats()
    assert sent == 2000 and a.m.net_stats().tx_frames == 2000
    assert st.rx_queued == RXQ_FRAMES and st.rx_dropped == 2000 - RXQ_FRAMES
    grown = b.m.stats()["host_mem_bytes"] - before
    assert grown <= RXQ_FRAMES * (len(payload) + 14) + 4096, f"the receiver's queue grew by {grown} bytes"


def test_queued_frames_are_counted_in_host_memory_until_delivered(pair):
    a, b, _ = pair
    before = b.m.stats()["host_mem_bytes"]
    f1, f2 = frame(b.mac, a.mac, bytes(86)), frame(b.mac, a.mac, bytes(136))  # 100 and 150 bytes
    a.send(f1)
    a.send(f2)
    assert b.m.stats()["host_mem_bytes"] == before + 250
    b.post([256, 256])
    assert [d for _, d in b.received()] == [f1, f2]
    assert b.m.stats()["host_mem_bytes"] == before


def test_link_down_drops_both_ways_and_signals_a_config_change(pair):
    a, b, _ = pair
    gen = a.dev.config_generation()
    a.m.set_link(False)
    assert a.dev.config_read(6, 2) == 0 and a.dev.config_generation() != gen
    assert a.dev.interrupt_status() & INT_CONFIG
    a.send(frame(b.mac, a.mac, b"while down"))
    b.send(frame(a.mac, b.mac, b"to a down link"))
    assert a.m.net_stats().tx_dropped == 1 and a.m.net_stats().rx_dropped == 1
    assert a.m.net_stats().rx_queued == 0 and b.m.net_stats().rx_queued == 0  # neither frame kept
    a.m.set_link(True)
    assert a.dev.config_read(6, 2) == 1 and a.m.net_stats().link_up
    from vmmpy._ffi import lib

    for up in (0, 0, 1, 1):  # 0 whether the state changes or not, as every call on success
        assert a.m._checked(lib.vmm_net_set_link, 0, up) == 0
    a.post([256])  # the frame sent while down is gone; the next one arrives (through a's I/O thread)
    after = frame(a.mac, b.mac, b"link is back")
    b.send(after)
    assert wait_received(a) == [(1, after)]


@pytest.mark.vmmpy_no_artifacts  # the records of ~40 machines would be memory kept
def test_closing_a_machine_frees_the_frames_queued_for_its_guest():
    """Frames queued for a guest that posted no buffers (copies in host memory) are freed with its machine:
    a receiver made, sent eight 1400-byte frames and closed, over and over, leaves nothing behind."""
    from .conftest import heap_growth

    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma:
        a = Nic(ma)

        def receiver():
            with vmmpy.Machine(net=net) as mb:
                b = Nic(mb)
                for _ in range(8):
                    a.send(frame(b.mac, a.mac, bytes(1400)))
                assert len(a.tx.get_used()) == 8 and mb.net_stats().rx_queued == 8  # a's chains back

        growth = heap_growth(receiver)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 1024, f"{growth:.0f} bytes kept per machine (8 frames: 11 KiB)"


def test_switch_outlives_its_python_object():
    net = vmmpy.Network()
    ma, mb = vmmpy.Machine(net=net), vmmpy.Machine(net=net)
    del net  # each NIC holds a reference
    try:
        a, b = Nic(ma), Nic(mb)
        a.send(frame(b.mac, a.mac, b"still wired"))
        b.post([128])
        assert [d for _, d in b.received()] == [frame(b.mac, a.mac, b"still wired")]
    finally:
        ma.close()
        mb.close()


def test_switch_outlives_the_machines_attached_to_it(tmp_path):
    """The application's reference keeps the switch (its counts and its capture) when every port is gone:
    machines attached later use the same one."""
    path = tmp_path / "sw.pcap"
    net = vmmpy.Network(capture=path)
    sent = []
    for text in (b"first pair", b"second pair"):
        with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
            a, b = Nic(ma), Nic(mb)
            sent.append(frame(b.mac, a.mac, text))
            a.send(sent[-1])
            b.post([128])
            assert [d for _, d in b.received()] == [sent[-1]]
        assert (net.forwarded, net.capture_dropped) == (len(sent), 0)
    del net
    data = path.read_bytes()
    assert len(data) == 24 + sum(16 + len(f) for f in sent)
    assert data[24 + 16 : 24 + 16 + len(sent[0])] == sent[0] and data.endswith(sent[1])


def test_a_closed_machines_address_is_forgotten():
    """A port that goes takes its learned addresses with it, wherever they are in the table: a frame to a
    closed machine's MAC is flooded to the ports that remain."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mc:
        a = Nic(ma)
        Nic(mc)  # c's driver up: it receives
        a.send(frame(BCAST, a.mac, b"a first"))  # the table's first entry
        with vmmpy.Machine(net=net) as mb:
            b = Nic(mb)
            b.send(frame(BCAST, b.mac, b"then b"))  # its second
            gone = b.mac
        a.send(frame(gone, a.mac, b"to the departed"))
        assert mc.net_stats().rx_queued == 3  # a's and b's broadcasts, then the flooded frame


def tcpdump_lines(path) -> list[str]:
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    r = subprocess.run(["tcpdump", "-nn", "-e", "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if not line[:1].isspace()]  # no hex dump lines


def arp_request(src_mac: bytes, src_ip: str, dst_ip: str) -> bytes:
    ip = lambda s: bytes(int(x) for x in s.split("."))  # noqa: E731
    body = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + src_mac + ip(src_ip) + bytes(6) + ip(dst_ip)
    return frame(BCAST, src_mac, body, 0x0806)


def test_user_networking_answers_arp_for_the_host(tmp_path):
    """Real libslirp: an ARP request for 10.0.2.2 (the host) gets slirp's reply."""
    with vmmpy.Machine(net="user", net_capture=tmp_path / "u.pcap") as m:
        nic = Nic(m)
        nic.post([2048])
        nic.send(arp_request(nic.mac, "10.0.2.15", "10.0.2.2"))
        ((n, reply),) = wait_received(nic, flags=DATA_VALID)  # slirp's frames carry good checksums
        assert reply[:6] == nic.mac and struct.unpack(">H", reply[12:14])[0] == 0x0806
        assert struct.unpack(">H", reply[20:22])[0] == 2  # ARP reply
        assert reply[28:32] == bytes([10, 0, 2, 2])
    lines = tcpdump_lines(tmp_path / "u.pcap")
    assert "Reply 10.0.2.2 is-at" in lines[1]


def test_hostfwd_rules_are_checked():
    with pytest.raises(errors.InvalidArgument, match="expected tcp|udp"):
        vmmpy.Machine(net="user", hostfwd=["tcp:8080:80"])
    with pytest.raises(errors.InvalidArgument, match="needs user networking"):
        vmmpy.Machine(net=vmmpy.Network(), hostfwd=["tcp::8080-:80"])
    with vmmpy.Machine(net="user", hostfwd=["tcp:127.0.0.1:0-:80", "udp::0-10.0.2.15:53"]) as m:
        assert m.net_stats().link_up


def test_bad_network_specs():
    with pytest.raises(errors.InvalidArgument, match="expected 'user', 'tap=NAME'"):
        vmmpy.Machine(net="bridge")
    with pytest.raises(errors.InvalidArgument, match="need a network card"):
        vmmpy.Machine(hostfwd=["tcp::8080-:80"])


def test_snapshot_is_refused_with_a_reason(guest, tmp_path):
    with vmmpy.Machine(guest("timer"), net="user", deterministic=True) as m:
        m.stop_at(1_000_000)
        m.start()
        assert m.wait(60).reason == vmmpy.RunReason.STOPPED
        refused = r"^snapshot: section virtio-net\.0: a VM with a network card \(virtio-net on user\) cannot be"
        with pytest.raises(errors.NotSupported, match=refused):
            m.snapshot(tmp_path / "s.snap")


def test_cli_net_options():
    p = cli.build_parser()
    a = p.parse_args(["run", "k.elf", "--net", "user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::53-:53"])
    assert cli.net_kwargs(a) == {"net": ["user"], "hostfwd": ["tcp:127.0.0.1:8080-:80", "udp::53-:53"]}
    a = p.parse_args(["run", "k.elf", "--net", "tap=tap0", "--net-dump", "x.pcap"])
    assert cli.net_kwargs(a) == {"net": ["tap=tap0"], "net_capture": "x.pcap"}
    with pytest.raises(SystemExit):
        p.parse_args(["run", "k.elf", "--net", "user,bogus=1"])


# ---- tap: a tap interface the test makes, moved into a network namespace of its own ----


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tap_in_netns():
    """(tap name, netns name): a tap interface; the VM attaches to it, then tap_up() moves it into the netns."""
    if os.environ.get("VMMPY_EXPECT_HOST") == "posix":
        pytest.skip("the portable host layer has no tap devices (test_tap_on_the_portable_host_layer checks its error)")
    if not shutil.which("ip"):
        pytest.skip("iproute2 is not installed (apt-get install iproute2): no tap test")
    suffix = os.urandom(3).hex()
    tap, ns = f"vmt{suffix}", f"vmmpy-net-{suffix}"
    r = _ip("tuntap", "add", "dev", tap, "mode", "tap")
    if r.returncode:
        pytest.skip(f"cannot create a tap interface (needs root / CAP_NET_ADMIN and /dev/net/tun): {r.stderr.strip()}")
    r = _ip("netns", "add", ns)
    if r.returncode:
        _ip("link", "del", tap)
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        yield tap, ns
    finally:
        _ip("netns", "exec", ns, "ip", "link", "del", tap)
        _ip("link", "del", tap)
        _ip("netns", "del", ns)


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_HOST") != "posix", reason="the portable host layer's run only")
def test_tap_on_the_portable_host_layer_is_one_clear_error():
    """csrc/host/host_posix.c has no tap devices: asking for one is NotSupported, named, before anything runs."""
    with pytest.raises(vmmpy.errors.NotSupported, match=r"tap vmt0: this host has no tap devices"):
        vmmpy.Machine(net="tap=vmt0")


def test_tap_frames_reach_the_host_kernel_and_back(tap_in_netns):
    """The host's own stack (in a netns of the test's) answers the guest's ARP, and its ping reaches the guest."""
    tap, ns = tap_in_netns
    with vmmpy.Machine(net=f"tap={tap}") as m:
        nic = Nic(m)
        for args in (
            ("link", "set", tap, "netns", ns),  # the open fd keeps the device across namespaces
            ("netns", "exec", ns, "ip", "addr", "add", "192.168.213.1/24", "dev", tap),
            ("netns", "exec", ns, "ip", "link", "set", tap, "up"),
        ):
            r = _ip(*args)
            assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"
        nic.post([2048] * 8)
        nic.send(arp_request(nic.mac, "192.168.213.2", "192.168.213.1"))
        deadline = time.monotonic() + 10
        replies = []
        while time.monotonic() < deadline and not replies:
            replies = [
                f for _, f in wait_received(nic, 1.0, DATA_VALID) if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02"
            ]
        assert replies, "no ARP reply from the host's stack"
        assert replies[0][:6] == nic.mac and replies[0][28:32] == bytes([192, 168, 213, 1])
        # host -> guest: a UDP datagram from the namespace (it learnt the guest's MAC from the ARP request)
        send = "import socket as s; s.socket(s.AF_INET, s.SOCK_DGRAM).sendto(b'hello-guest', ('192.168.213.2', 9))"
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", send], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        got = []
        while time.monotonic() < deadline and not got:
            got = [f for _, f in wait_received(nic, 1.0, DATA_VALID) if f.endswith(b"hello-guest")]
        assert got and got[0][:6] == nic.mac and got[0][12:14] == b"\x08\x00"
        assert m.net_stats().tx_frames == 1


def test_tap_that_cannot_be_opened_is_one_clear_error():
    with pytest.raises(errors.VmmError, match=r"tap x{20}: "):
        vmmpy.Machine(net="tap=" + "x" * 20)  # longer than IFNAMSIZ


def test_a_closed_vm_leaves_the_switch_and_the_others_go_on():
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mc:
        mb = vmmpy.Machine(net=net)  # port 1, between the others
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        b.send(frame(BCAST, b.mac, b"b was here"))  # the switch learns b's port
        c.post([256])
        assert [d for _, d in c.received()] == [frame(BCAST, b.mac, b"b was here")]
        b_mac = b.mac
        mb.close()
        a.send(frame(BCAST, a.mac, b"after b left"))
        a.send(frame(b_mac, a.mac, b"to b's old MAC: flooded to who is left"))
        c.post([256, 256])
        assert [d for _, d in c.received()] == [
            frame(BCAST, a.mac, b"after b left"),
            frame(b_mac, a.mac, b"to b's old MAC: flooded to who is left"),
        ]
        assert ma.net_stats().rx_queued == 1  # b's broadcast; never its own frames


def test_a_port_that_leaves_takes_only_its_own_addresses_out_of_the_table():
    """When a port detaches, the switch forgets the addresses learned behind it, and only those: a, b and d,
    learned before and after, still get their unicast frames alone (nothing flooded to the third). Ports that
    leave are made first and last (their host structures below and above the others')."""
    net = vmmpy.Network()
    first = vmmpy.Machine(net=net)
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as md:
        last = vmmpy.Machine(net=net)
        nics = {"a": Nic(ma), "b": Nic(mb), "d": Nic(md)}
        for leaving in (Nic(first), Nic(last)):
            leaving.send(frame(BCAST, leaving.mac, b"learn me"))
        for n in nics.values():
            n.send(frame(BCAST, n.mac, b"learn me"))
        queued = {k: n.m.net_stats().rx_queued for k, n in nics.items()}
        last.close()
        first.close()
        for src, dst in (("a", "b"), ("b", "d"), ("d", "a")):
            nics[src].send(frame(nics[dst].mac, nics[src].mac, b"unicast"))
            queued[dst] += 1
            assert {k: n.m.net_stats().rx_queued for k, n in nics.items()} == queued, (src, dst)


def test_a_switch_has_64_ports():
    net = vmmpy.Network()
    machines = []
    try:
        for _ in range(64):
            machines.append(vmmpy.Machine(ram="2M", net=net))
        with pytest.raises(errors.VmmError, match="64 ports, all in use"):
            vmmpy.Machine(ram="2M", net=net)
        machines.pop().close()  # a port comes free
        machines.append(vmmpy.Machine(ram="2M", net=net))
        assert machines[-1].net_stats().mac == "52:54:00:12:35:40"  # port numbers are not reused: the 65th
    finally:
        for m in machines:
            m.close()


def test_net_stats_fill_only_the_callers_struct():
    """A caller built against an older, shorter struct vmm_net_stats gets that much and its size back."""
    from vmmpy._ffi import ffi, lib

    with vmmpy.Machine(net="user") as m:
        st = ffi.new("struct vmm_net_stats *")
        short = ffi.offsetof("struct vmm_net_stats", "rx_frames")
        st.size = short
        st.rx_frames = 12345
        assert m._checked(lib.vmm_net_stats, 0, st) == 0
        assert st.size == short and st.rx_frames == 12345


def tcp_syn(src_mac: bytes, dst_mac: bytes, sport: int, dport: int) -> bytes:
    """An IPv4 TCP SYN 10.0.2.15:sport -> 10.0.2.2:dport (slirp's host address), checksums filled in."""
    src, dst = bytes([10, 0, 2, 15]), bytes([10, 0, 2, 2])
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack(">H", ~ones_sum(pseudo + tcp) & 0xFFFF) + tcp[18:]
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack(">H", ~ones_sum(ip) & 0xFFFF) + ip[12:]
    return frame(dst_mac, src_mac, ip + tcp, 0x0800)


def test_user_networking_caps_the_host_sockets_a_guest_opens():
    """Each guest connection is a host socket in libslirp: past 128 new ones are refused (guest errors), so a
    guest cannot take the process's file descriptors. The first ones do reach the host's listener."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1024)
        ls.setblocking(False)
        port = ls.getsockname()[1]
        with vmmpy.Machine(net="user") as m:
            nic = Nic(m)
            fds = len(os.listdir("/proc/self/fd"))
            errors_before = m.stats()["guest_errors"]
            for batch in range(4):  # 400 SYNs from distinct ports, 100 chains at a time
                for i in range(100):
                    nic.send(tcp_syn(nic.mac, b"\x52\x55\x0a\x00\x02\x02", 20000 + 100 * batch + i, port), notify=False)
                nic.tx.notify()
                nic.tx.get_used()
            accepted = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(accepted) < 128:
                try:
                    accepted.append(ls.accept()[0])
                except BlockingIOError:  # done once a second passes with no new connection after the first 100
                    if not select.select([ls], [], [], 1.0)[0] and len(accepted) >= 100:
                        break
            try:
                grown = len(os.listdir("/proc/self/fd")) - fds
                assert 100 <= len(accepted) <= 128, len(accepted)
                assert grown <= 128 + len(accepted) + 8, f"{grown} more fds for 400 guest connections"
                assert m.stats()["guest_errors"] > errors_before
            finally:
                for s in accepted:
                    s.close()
