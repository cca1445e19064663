"""Tier 1: the edges of virtio-net (virtio 1.2 §5.1) that tests/test_virtio_net.py passes on either side of.

The layout of the config space with the link down, a frame of exactly the maximum size, a receive buffer of
exactly header + frame, csum_start past 255, DATA_VALID only when GUEST_CSUM was negotiated, receive interrupts
only for used buffers, a receive queue never set up, receive chains the device cannot walk or that are too
small for the header (nothing written into them), a driver that publishes a chain again while the device holds
it (a frame never takes more descriptors than the ring has), the host memory a card costs, and the capture
timestamp of a frame a guest's vCPU sends in deterministic mode. The guest side is played by the Nic driver of
tests/test_virtio_net.py, or by a few raw aarch64 instructions.
"""

from __future__ import annotations

import logging
import os
import struct

import pytest

import vmmpy
from vmmpy import errors

from .conftest import WFI, b_back, code, run_with_shim
from .test_net_host import FAIL_MALLOC_C, pcap_records
from .test_virtio_net import (
    BCAST,
    DATA_VALID,
    F_GUEST_CSUM,
    F_MRG_RXBUF,
    HDR,
    NEEDS_CSUM,
    Nic,
    arp_request,
    frame,
    ones_sum,
    udp_frame,
    wait_received,
)
from .virtio_driver import (
    DESC_F_NEXT,
    DESC_F_WRITE,
    DRIVER_OK,
    ID_NET,
    INT_CONFIG,
    INT_VRING,
    QUEUE_NOTIFY,
    QUEUE_NUM_MAX,
    QUEUE_SEL,
    VIRTIO_BASE,
    VIRTIO_STRIDE,
    VirtioMMIO,
    find_devices,
)

FRAME_MAX = 65553  # VMM_NET_FRAME_MAX


# ---- config space (§5.1.4) ----


def test_a_link_down_reads_status_0_and_leaves_max_virtqueue_pairs_at_1():
    """§5.1.4: mac (6 bytes), status (le16 at 6), max_virtqueue_pairs (le16 at 8). With the link down status is 0
    and the next field still 1: a status field moved by a byte would read the link state at 6 and 0 at 8."""
    with vmmpy.Machine(net=vmmpy.Network()) as m:
        nic = Nic(m)
        m.set_link(False)
        assert (nic.dev.config_read(6, 2), nic.dev.config_read(8, 2)) == (0, 1)
        m.set_link(True)
        assert (nic.dev.config_read(6, 2), nic.dev.config_read(8, 2)) == (1, 1)


# ---- sizes ----


def test_a_frame_of_the_maximum_size_reaches_the_other_guest_whole():
    """VMM_NET_FRAME_MAX bytes is a frame: the sender transmits it and the receiver queues and delivers it
    (spread over mergeable buffers, §5.1.6.3.2), where one byte more is refused."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        big = frame(b.mac, a.mac, bytes(i & 0xFF for i in range(FRAME_MAX - 14)))
        a.send(big)
        st = mb.net_stats()
        assert (ma.net_stats().tx_frames, st.rx_queued, st.rx_dropped) == (1, 1, 0)
        b.post([8192] * 9)  # 12 + 65553 bytes: 9 buffers
        assert b.received() == [(9, big)]
        assert mb.net_stats().rx_bytes == FRAME_MAX


def test_without_mrg_rxbuf_a_buffer_of_exactly_header_and_frame_takes_it():
    """§5.1.6.3.1: without VIRTIO_NET_F_MRG_RXBUF one buffer holds header and frame; exactly that many bytes is
    enough."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, features=~F_MRG_RXBUF)
        f = frame(b.mac, a.mac, b"exactly this long")
        a.send(f)
        (head,) = b.post([HDR + len(f)])
        assert b.rx.get_used() == [(head, HDR + len(f))]
        assert b.rx.chain_data(head)[HDR:] == f
        st = mb.net_stats()
        assert (st.rx_frames, st.rx_dropped, st.rx_queued) == (1, 0, 0)


def test_each_network_card_costs_its_frame_buffers_in_host_memory():
    """host_mem_bytes counts a card's state: a transmit buffer of one maximum frame and the receive queue's
    table, under 96 KiB a card, the same for the second card as for the first."""
    with vmmpy.Machine() as m:
        none = m.stats()["host_mem_bytes"]
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as m:
        one = m.stats()["host_mem_bytes"]
    with vmmpy.Machine(net=[net, net]) as m:
        two = m.stats()["host_mem_bytes"]
    assert two - one == one - none
    assert FRAME_MAX < one - none < 96 << 10


# ---- checksums (§5.1.6.2, §5.1.6.4) ----


def test_checksum_offload_with_csum_start_past_255():
    """csum_start is a 16-bit field (§5.1.6.2): a checksum over a range that starts 0x110 bytes into the frame
    goes to csum_start + csum_offset, and the range then sums to 0xffff; the bytes before it are untouched."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        payload = bytearray((5 * i + 3) & 0xFF for i in range(600))
        start, off = 0x110, 6
        payload[start - 14 + off : start - 14 + off + 2] = b"\0\0"
        sent = frame(b.mac, a.mac, bytes(payload))
        a.send(sent, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, start, off, 0))
        b.post([1024])
        ((_, got),) = b.received()
        at = start + off
        assert got[:at] == sent[:at] and got[at + 2 :] == sent[at + 2 :]
        assert got[at : at + 2] != b"\0\0" and ones_sum(got[start:]) == 0xFFFF


def test_data_valid_is_set_only_when_guest_csum_was_negotiated():
    """§5.1.6.4: DATA_VALID may be set only if VIRTIO_NET_F_GUEST_CSUM was negotiated. User networking's frames
    have good checksums, but a driver that did not accept the feature gets flags 0."""
    with vmmpy.Machine(net="user") as m:
        nic = Nic(m, features=~F_GUEST_CSUM)
        assert not nic.dev.features & F_GUEST_CSUM
        nic.post([2048])
        nic.send(arp_request(nic.mac, "10.0.2.15", "10.0.2.2"))
        ((_, reply),) = wait_received(nic, flags=0)
        assert reply[12:14] == b"\x08\x06"


# ---- receive interrupts and a receive queue that is not there ----


def test_a_receive_look_that_uses_no_buffer_raises_no_interrupt():
    """§2.7.7 / §5.1.6.3: the device notifies the driver of used buffers. Looking at the receive queue with nothing
    to deliver (a notify with no frame waiting, or a frame waiting for buffers) raises no interrupt; the look that
    delivers one does."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        b.rx.notify()  # no frame, no buffer
        b.post([256])  # a buffer, no frame
        assert not b.dev.interrupt_status() & INT_VRING
        b.received()
        big = frame(b.mac, a.mac, bytes(600))
        a.send(big)  # needs three 256-byte buffers: one is posted
        b.rx.notify()
        assert b.rx.used_idx() == 0 and not b.dev.interrupt_status() & INT_VRING
        b.post([256, 256])
        assert b.received() == [(3, big)]
        assert b.dev.interrupt_status() & INT_VRING


def test_a_frame_that_arrives_before_the_receive_queue_is_set_up_waits_for_it():
    """A driver that has made only the transmit queue live (DRIVER_OK set, §3.1.1): a frame for it is kept, not
    dropped as too big for a ring of no descriptors, also when a transmit notify looks at the receive side; once
    queue 0 is set up the frame is delivered."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a = Nic(ma)
        (slot,) = [s for s, dev_id in find_devices(mb) if dev_id == ID_NET]
        dev = VirtioMMIO(mb, slot)
        assert dev.negotiate()
        tx = dev.setup_queue(1)
        dev.add_status(DRIVER_OK)
        mac = mb.net_stats().mac
        f = frame(bytes.fromhex(mac.replace(":", "")), a.mac, b"early")
        a.send(f)
        tx.notify()  # looks at the receive side too
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_dropped, st.rx_frames) == (1, 0, 0)
        assert mb.stats()["guest_errors"] == 0 and not dev.needs_reset()
        rx = dev.setup_queue(0)
        head = rx.add([], [256])
        rx.notify()
        assert rx.get_used() == [(head, HDR + len(f))] and rx.chain_data(head)[HDR : HDR + len(f)] == f


# ---- receive chains the device refuses (§2.7.5, §5.1.6.3.1): nothing is written, the frame stays ----


def test_a_receive_chain_that_cannot_be_walked_is_not_written_and_the_frame_stays():
    """A writable buffer whose next descriptor lies outside the table: the device needs a reset (§2.1.2), writes
    nothing into the buffer it did resolve and keeps the frame (not delivered, not dropped)."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        a.send(frame(b.mac, a.mac, b"waiting"))
        buf = b.rx.buf(1024)
        mb.write_memory(buf, b"\xaa" * 1024)
        head = b.rx.free.pop(0)
        b.rx.write_desc(head, buf, 1024, DESC_F_WRITE | DESC_F_NEXT, 999)  # the table has 256 entries
        b.rx.publish(head)
        b.rx.notify()
        assert b.dev.needs_reset()
        assert mb.read_memory(buf, 1024) == b"\xaa" * 1024 and b.rx.used_idx() == 0
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_frames, st.rx_dropped) == (1, 0, 0)


def test_a_receive_buffer_smaller_than_the_header_is_not_written_and_the_frame_stays():
    """§5.1.6.3.1: every receive buffer holds at least a header. An 8-byte one makes the device need a reset;
    it writes none of the header into it, and the frame stays queued."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        a.send(frame(b.mac, a.mac, b"waiting"))
        head = b.rx.add([], [8], fill=0xAA)
        ((gpa, _),) = b.rx.chains[head]
        b.rx.notify()
        assert b.dev.needs_reset()
        assert mb.read_memory(gpa, 8) == b"\xaa" * 8 and b.rx.used_idx() == 0
        st = mb.net_stats()
        assert (st.rx_queued, st.rx_frames, st.rx_dropped) == (1, 0, 0)


# ---- a driver that publishes a chain again while the device holds it ----


def republish_after(b: Nic, per_chain: list[int], chains: int) -> None:
    """Add `chains` receive chains of `per_chain` buffers, then put the first one's head in the avail ring again
    (a driver bug: it is not the driver's until it comes back used, §2.7.13), and notify."""
    heads = [b.rx.add([], per_chain) for _ in range(chains)]
    b.rx.publish(heads[0])
    b.rx.notify()


def test_a_frame_never_takes_more_chains_than_the_ring_has_descriptors():
    """16 descriptors in chains of two 10-byte buffers hold 160 bytes; a 166-byte frame does not fit and is
    dropped (a guest error). The ninth avail entry names the first chain again: taking it would put the frame
    in 9 buffers, the first one twice."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, sizes=[16, 16])
        f = frame(b.mac, a.mac, bytes(140))  # 154 + 12 = 166
        a.send(f)
        republish_after(b, [12, 8], 8)
        assert b.rx.used_idx() == 0
        st = mb.net_stats()
        assert (st.rx_dropped, st.rx_frames, st.rx_queued) == (1, 0, 0)
        assert mb.stats()["guest_errors"] == 1 and not b.dev.needs_reset()


def test_a_frame_is_dropped_once_its_chains_have_taken_more_than_the_ring():
    """Five chains of three descriptors (15 of 16), then the first one's head again: the device has taken 18
    descriptors' worth and the 126-byte frame still needs more. No buffer can come back before these are used,
    so it is dropped (a guest error), not kept waiting."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb, sizes=[16, 16])
        a.send(frame(b.mac, a.mac, bytes(100)))  # 114 + 12 = 126 > 6 * 20
        republish_after(b, [12, 4, 4], 5)
        assert b.rx.used_idx() == 0
        st = mb.net_stats()
        assert (st.rx_dropped, st.rx_frames, st.rx_queued) == (1, 0, 0)
        assert mb.stats()["guest_errors"] == 1


# ---- the clock of a capture ----


def notify_after_a_loop(addr: int, n: int) -> bytes:
    """x1 = addr; count x2 down from n; write 1 (the transmit queue) to [x1]; then WFI for good."""
    return code(
        0xD2800001 | (addr & 0xFFFF) << 5,  # movz x1, #lo
        0xF2A00001 | (addr >> 16) << 5,  # movk x1, #hi, lsl 16
        0xD2800002 | n << 5,  # movz x2, #n
        0xF1000442,  # subs x2, x2, #1
        0x54FFFFE1,  # b.ne .-4
        0x52800023,  # movz w3, #1
        0xB9000023,  # str w3, [x1]
        WFI,
        b_back(1),
    )


def test_a_frame_the_guest_sends_is_stamped_with_its_vcpus_clock(raw_guest, tmp_path):
    """Deterministic mode: a frame sent by the vCPU's notify is stamped with that vCPU's clock, the round's start
    plus the instructions it has run in this round (about 2 per loop turn before the notify), not the round's
    start (0 here)."""
    turns, path = 1000, tmp_path / "g.pcap"
    with vmmpy.Machine(raw_guest(code(WFI)), kernel_format="raw", net=vmmpy.Network()) as m:
        (slot,) = [s for s, dev_id in find_devices(m) if dev_id == ID_NET]
    notify = VIRTIO_BASE + slot * VIRTIO_STRIDE + QUEUE_NOTIFY
    blob = raw_guest(notify_after_a_loop(notify, turns), "notify.bin")
    with vmmpy.Machine(blob, kernel_format="raw", deterministic=True, net=vmmpy.Network(), net_capture=path) as m:
        nic = Nic(m)
        f = frame(BCAST, nic.mac, b"from the vCPU")
        nic.send(f, notify=False)
        m.stop_at(1_000_000)
        assert m.run(timeout=60).reason == vmmpy.RunReason.STOPPED
        assert m.net_stats().tx_frames == 1
    ((sec, ns, got),) = pcap_records(path.read_bytes())
    assert got == f and sec == 0 and 2 * turns <= ns <= 2 * turns + 16


@pytest.mark.parametrize(
    ("length", "off"),
    [(24, 22), (21, 6), (22, 4)],
    ids=["field-at-the-end", "odd-range-1-mod-4", "even-range-2-mod-4"],
)
def test_checksum_offload_over_ranges_of_every_parity(length, off):
    """§5.1.6.2: the checksum of frame[csum_start..end) goes at csum_start + csum_offset. A field that ends exactly
    where the frame does is inside it; an odd range's last byte is summed as a high byte padded with 0, an even
    range has no such byte (whatever the range's length mod 4)."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        data = bytearray((0x9D + 37 * i) & 0xFF for i in range(length))
        data[off : off + 2] = b"\0\0"
        sent = frame(b.mac, a.mac, bytes(data))
        a.send(sent, hdr=struct.pack("<BBHHHHH", NEEDS_CSUM, 0, 0, 0, 14, off, 0))
        assert ma.net_stats().tx_malformed == 0
        b.post([256])
        ((_, got),) = b.received()
        at = 14 + off
        assert got[:at] == sent[:at] and got[at + 2 :] == sent[at + 2 :]
        assert ones_sum(got[14:]) == 0xFFFF


# ---- the transmit side's header and interrupts (§5.1.6.2) ----


@pytest.mark.parametrize("flags", [DATA_VALID, NEEDS_CSUM | DATA_VALID, 4], ids=["data-valid", "both", "rsc-info"])
def test_a_transmit_header_with_a_receive_only_flag_is_refused(flags, caplog):
    """§5.1.6.2.1: the driver sets no flag but NEEDS_CSUM on transmit (DATA_VALID and RSC_INFO are the device's):
    such a header is refused and counted, even with VIRTIO_NET_F_CSUM negotiated."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        sent = udp_frame(b.mac, a.mac, b"x")
        a.send(sent, hdr=struct.pack("<BBHHHHH", flags, 0, 0, 0, 34, 6, 0))
        st = ma.net_stats()
        assert (st.tx_malformed, st.tx_frames, mb.net_stats().rx_queued) == (1, 0, 0)
        assert ma.stats()["guest_errors"] == 1
        assert f"transmit header asks for an offload not negotiated (flags {flags:#x}, gso_type 0)" in caplog.text


def test_a_transmit_chain_waits_for_the_transmit_queues_notify():
    """§5.1.6.2: the driver notifies the transmit queue to send; a notify of the receive queue looks at the
    receive side only, and the posted transmit chain stays available until the transmit notify."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        f = frame(b.mac, a.mac, b"when told")
        a.send(f, notify=False)
        a.post([256])
        assert a.tx.used_idx() == 0 and ma.net_stats().tx_frames == 0 and mb.net_stats().rx_queued == 0
        a.tx.notify()
        assert len(a.tx.get_used()) == 1 and mb.net_stats().rx_queued == 1


def test_a_transmit_notify_interrupts_only_when_it_used_a_chain():
    """§2.7.7: a used buffer notification follows chains put in the used ring. A notify with nothing posted uses
    none and raises no interrupt (there is nothing to receive either); the one that sends a frame does."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        a.tx.notify()
        assert not a.dev.interrupt_status() & INT_VRING
        a.send(frame(b.mac, a.mac, b"one"))
        assert len(a.tx.get_used()) == 1 and a.dev.interrupt_status() & INT_VRING


# ---- config writes, the link, and the calls' arguments ----


def test_a_write_to_the_config_space_is_a_guest_error_and_changes_nothing(caplog):
    """§5.1.4: without VIRTIO_NET_F_CTRL_MAC_ADDR (not offered) every field is read-only for the driver."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    with vmmpy.Machine(net=vmmpy.Network()) as m:
        nic = Nic(m)
        mac = nic.mac
        nic.dev.config_write(0, 0x02, 1)
        assert nic.mac == mac and m.stats()["guest_errors"] == 1
        assert "1-byte write to read-only config field at 0x0" in caplog.text


def test_setting_the_link_to_what_it_already_is_signals_nothing():
    """§5.1.4.2: a configuration change notification when status changes, and only then: set_link(True) on a link
    that is up (or False on one that is down) leaves config_generation and the interrupt status alone."""
    with vmmpy.Machine(net=vmmpy.Network()) as m:
        nic = Nic(m)
        gen = nic.dev.config_generation()
        m.set_link(True)
        assert nic.dev.config_generation() == gen and not nic.dev.interrupt_status() & INT_CONFIG
        m.set_link(False)
        gen = nic.dev.config_generation()
        nic.dev.ack()
        m.set_link(False)
        assert nic.dev.config_generation() == gen and not nic.dev.interrupt_status() & INT_CONFIG
        assert not m.net_stats().link_up
        m.set_link(True)  # a change: signalled
        assert nic.dev.config_generation() != gen and nic.dev.interrupt_status() & INT_CONFIG
        from vmmpy._ffi import lib

        gen = nic.dev.config_generation()
        nic.dev.ack()
        assert m._checked(lib.vmm_net_set_link, 0, -1) == 0  # any non-zero `up` is up: no change
        assert nic.dev.config_generation() == gen and not nic.dev.interrupt_status() & INT_CONFIG


def test_the_network_calls_check_their_arguments(raw_guest):
    """include/vmm.h: a NULL VM, a NULL or too-short struct, or a card the VM does not have is VMM_EINVAL (with the
    reason for the card); a card added once the VM was prepared (it ran) is VMM_ESTATE."""
    from vmmpy._ffi import ffi, lib

    path = raw_guest(code(WFI, b_back(1)))
    with vmmpy.Machine(path, kernel_format="raw", net=vmmpy.Network(), deterministic=True) as m:
        st = ffi.new("struct vmm_net_stats *", {"size": ffi.sizeof("struct vmm_net_stats")})
        assert lib.vmm_net_stats(m._vm, 0, st) == 0 and ffi.string(lib.vmm_last_error(m._vm)) == b""
        short = ffi.new("struct vmm_net_stats *", {"size": 4, "link_up": 7})  # the size field alone
        assert lib.vmm_net_stats(m._vm, 0, short) == 0 and short.size == 4 and short.link_up == 7
        st.size = 3
        assert lib.vmm_net_stats(m._vm, 0, st) == lib.VMM_EINVAL and st.tx_frames == 0
        st.size = ffi.sizeof("struct vmm_net_stats")
        assert lib.vmm_net_stats(ffi.NULL, 0, st) == lib.VMM_EINVAL
        assert lib.vmm_net_stats(m._vm, 0, ffi.NULL) == lib.VMM_EINVAL
        assert lib.vmm_net_stats(m._vm, 0, st) == 0 and st.link_up == 1
        with pytest.raises(errors.InvalidArgument, match="^the VM has no network card 1$"):
            m._checked(lib.vmm_net_stats, 1, st)
        assert lib.vmm_net_set_link(ffi.NULL, 0, 0) == lib.VMM_EINVAL
        with pytest.raises(errors.InvalidArgument, match="^the VM has no network card 1$"):
            m._checked(lib.vmm_net_set_link, 1, 0)
        assert m.net_stats().link_up
        cfg = ffi.new("struct vmm_net_config *", {"size": ffi.sizeof("struct vmm_net_config"), "backend": 1})
        assert lib.vmm_add_net(ffi.NULL, cfg) == lib.VMM_EINVAL
        assert lib.vmm_add_net(m._vm, cfg) == 0  # 0 on success (include/vmm.h), a second card
        assert m.net_stats(1).mac == "52:54:00:12:34:57"
        with pytest.raises(errors.InvalidArgument, match=r"^vmm_add_net: cfg->size must be sizeof"):
            m._checked(lib.vmm_add_net, ffi.NULL)
        cfg.size = ffi.offsetof("struct vmm_net_config", "capture")
        with pytest.raises(errors.InvalidArgument, match=r"^vmm_add_net: cfg->size must be sizeof"):
            m._checked(lib.vmm_add_net, cfg)
        m.stop_at(1000)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        cfg.size = ffi.sizeof("struct vmm_net_config")
        with pytest.raises(errors.VmmError, match="^virtio-net: devices must be added before the VM is prepared$"):
            m._checked(lib.vmm_add_net, cfg)


# ---- deterministic mode: frames enter at round boundaries ----


def test_a_deterministic_guest_gets_a_waiting_frame_at_the_next_round_boundary(raw_guest):
    """A frame for a deterministic VM waits for the run (no I/O thread fills its buffers); a run that only sleeps
    in WFI takes it in at its first round boundary: the buffer posted before is used when the run stops."""
    net = vmmpy.Network()
    with (
        vmmpy.Machine(net=net) as ma,
        vmmpy.Machine(raw_guest(code(WFI, b_back(1))), kernel_format="raw", net=net, deterministic=True) as mb,
    ):
        a, b = Nic(ma), Nic(mb)
        b.post([256])
        f = frame(b.mac, a.mac, b"at a boundary")
        a.send(f)
        assert b.rx.used_idx() == 0 and mb.net_stats().rx_queued == 1
        mb.stop_at(1_000_000)
        assert mb.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        assert b.received() == [(1, f)]


# ---- MACs and back-ends ----


@pytest.mark.vmmpy_no_artifacts  # 258 machines
def test_switch_port_numbers_past_255_carry_into_the_fifth_mac_byte():
    """A switch card's default MAC is 52:54:00:12:35:00 plus its port number, which is never reused: port 256
    (the 257th card plugged in) is 52:54:00:12:36:00. A configured MAC is kept on a switch too."""
    net = vmmpy.Network()
    for _ in range(256):
        vmmpy.Machine(ram="2M", net=net).close()
    with vmmpy.Machine(ram="2M", net=net) as m:
        assert m.net_stats().mac == "52:54:00:12:36:00"
    with vmmpy.Machine(net=net, mac="02:00:00:00:01:07") as m:
        assert m.net_stats().mac == "02:00:00:00:01:07"
        assert Nic(m).mac == bytes.fromhex("020000000107")


def test_an_unknown_network_back_end_is_refused_by_name():
    from vmmpy._ffi import ffi, lib

    cfg = ffi.new("struct vmm_net_config *", {"size": ffi.sizeof("struct vmm_net_config"), "backend": 9})
    with vmmpy.Machine() as m:
        unknown = r"^network back-end 9 is unknown \(user 1, tap 2, switch 3\)$"
        with pytest.raises(errors.InvalidArgument, match=unknown):
            m._checked(lib.vmm_add_net, cfg)
        assert ID_NET not in [dev_id for _, dev_id in find_devices(m)]


def test_closing_a_machine_closes_its_cards_capture(tmp_path):
    """A card's capture (net_capture) is the card's: the machine's close closes its file, complete."""
    path = tmp_path / "nic.pcap"

    def open_on_capture() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))

    with vmmpy.Machine(net=vmmpy.Network(), net_capture=path) as m:
        nic = Nic(m)
        f = frame(BCAST, nic.mac, b"captured")
        nic.send(f)
        assert open_on_capture() == 1
    assert open_on_capture() == 0
    assert [r[2] for r in pcap_records(path.read_bytes())] == [f]


def test_the_device_has_exactly_one_receive_and_one_transmit_queue():
    """§5.1.2: without VIRTIO_NET_F_MQ and VIRTIO_NET_F_CTRL_VQ (neither offered) the queues are receiveq1 (0) and
    transmitq1 (1); queue 2 does not exist: QueueNumMax reads 0 (§4.2.3.2)."""
    with vmmpy.Machine(net=vmmpy.Network()) as m:
        (slot,) = [s for s, dev_id in find_devices(m) if dev_id == ID_NET]
        dev = VirtioMMIO(m, slot)
        dev.negotiate()
        maxes = []
        for q in range(3):
            dev.write(QUEUE_SEL, q)
            maxes.append(dev.read(QUEUE_NUM_MAX))
        assert maxes == [256, 256, 0]


def test_three_cards_get_three_indexes():
    """Each card's default MAC is the base plus its index among the VM's cards: 56, 57, 58; each answers to its own
    number."""
    with vmmpy.Machine(net=["user"] * 3) as m:
        assert [m.net_stats(i).mac for i in range(3)] == [f"52:54:00:12:34:5{i}" for i in (6, 7, 8)]


def test_a_multicast_mac_is_refused_naming_every_byte():
    with pytest.raises(errors.InvalidArgument, match="^MAC 03:11:22:33:44:55 is a multicast address$"):
        vmmpy.Machine(net="user", mac="03:11:22:33:44:55")


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_a_switch_card_whose_io_thread_cannot_be_made_is_refused(tmp_path):
    """A switch port needs no host socket, but the card's receive work runs on the VM's I/O thread: when that
    thread's poll set cannot be allocated, the card is refused with the reason (not added without it)."""
    script = (
        "import vmmpy\ntry:\n    vmmpy.Machine(net=vmmpy.Network())\n    print('made')\n"
        "except vmmpy.errors.OutOfMemory as e:\n    print(e)\n"
    )
    r = run_with_shim(tmp_path, FAIL_MALLOC_C, script, FAIL_MALLOC_SIZE="8196")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "out of memory for the I/O thread"
