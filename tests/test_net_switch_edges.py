"""Tier 1: edges of the in-process switch (csrc/net/net_switch.c), a learning bridge (IEEE 802.1D): a frame
teaches the switch that its source MAC lives behind the sending port; a frame to a learned unicast MAC goes to
that port only, and a group address (bit 0 of the first octet set) or an unknown unicast one is flooded to every
other port. The table holds 256 addresses, the oldest replaced first. The guests are played by the driver of
tests/test_virtio_net.py; a frame's arrival at a port is counted in its NIC's rx_queued and rx_dropped (a receive
queue keeps at most 256 frames for a guest that posts no buffers, and counts the rest as dropped).
"""

from __future__ import annotations

import pytest

import vmmpy
from tests.test_virtio_net import BCAST, HDR, Nic, frame
from vmmpy import errors
from vmmpy._ffi import ffi, lib

FDB = 256  # the switch's address table (SW_FDB)


def arrived(nic: Nic) -> int:
    """Frames the switch delivered to this NIC (none of its buffers are posted: each is queued or dropped)."""
    st = nic.m.net_stats()
    return st.rx_queued + st.rx_dropped


def station(i: int) -> bytes:
    """A locally administered unicast MAC (first octet 0x02: bit 0 clear) numbered i."""
    return bytes([0x02, 0, 0, 0xAA, i >> 8, i & 0xFF])


def send(nic: Nic, data: bytes, hdr: bytes = bytes(HDR)) -> None:
    nic.send(data, hdr=hdr)
    assert len(nic.tx.get_used()) == 1  # taken by the device (and not refused: see tx_malformed below)


@pytest.fixture
def three():
    """Three VMs on one switch, each with a driver: (a, b, c, net)."""
    net = vmmpy.Network()
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as mc:
        a, b, c = Nic(ma), Nic(mb), Nic(mc)
        yield a, b, c, net
        assert all(n.m.net_stats().tx_malformed == 0 for n in (a, b, c))


def test_a_frame_to_an_address_behind_its_own_port_goes_nowhere(three):
    """A learned destination behind the sending port: the frame is not sent back out of that port (802.1D
    filters it), nor to anyone else."""
    a, b, c, net = three
    behind_a = station(1)
    send(a, frame(BCAST, behind_a, b"a bridge in a's guest"))  # flooded to b and c; behind_a learned at a
    send(a, frame(behind_a, a.mac, b"to the station behind a"))
    assert (arrived(a), arrived(b), arrived(c)) == (0, 1, 1)
    assert net.forwarded == 2


def test_the_transmit_headers_num_buffers_does_not_steer_the_frame(three):
    """The byte before the frame in the device's transmit buffer is the high byte of the header's num_buffers,
    which the device does not check on transmit (only flags and gso_type): with it 1, a frame to b's learned
    address still goes to b alone. (Catches a lookup that reads the group bit one byte too early.)"""
    a, b, c, _ = three
    send(b, frame(BCAST, b.mac, b"b is here"))  # to a and c
    hdr = bytes(HDR - 1) + b"\x01"  # num_buffers = 0x0100 (little-endian)
    send(a, frame(b.mac, a.mac, b"for b only"), hdr=hdr)
    assert (arrived(a), arrived(b), arrived(c)) == (1, 1, 1)


def test_the_table_holds_256_addresses_and_replaces_the_oldest(three):
    """b's address is learned first; a then sends from 255 more addresses, one of them twice (a repeated source
    keeps its one entry) and from a group address (never learned: it is not a station). The table is then full
    with b's address still in it; the next new address replaces b's, the oldest, and a frame to b is flooded."""
    a, b, c, _ = three
    send(b, frame(BCAST, b.mac, b"b first"))  # entry 0; a and c get it
    send(a, frame(b.mac, station(1), b"filler"))  # entry 1
    send(a, frame(b.mac, station(1), b"the same source again"))  # still entry 1
    for i in range(2, FDB):  # entries 2..255: the table is full
        send(a, frame(b.mac, station(i), b"filler"))
    assert (arrived(b), arrived(c)) == (FDB, 1), "every frame went to b alone: b's address was still known"
    send(a, frame(b.mac, bytes.fromhex("01005e000001"), b"from a group address"))  # learns nothing
    assert (arrived(b), arrived(c)) == (FDB + 1, 1)
    send(a, frame(b.mac, station(FDB), b"one address too many"))  # replaces entry 0, b's
    assert (arrived(a), arrived(b), arrived(c)) == (1, FDB + 2, 2), "b forgotten: flooded to b and c"


def test_a_port_that_leaves_does_not_take_the_other_ports_out_of_the_flood():
    """A closed machine's port leaves the switch alone: broadcasts still reach every port that remains. Ports
    that leave are made first and last (their host structures below and above the others')."""
    net = vmmpy.Network()
    first = vmmpy.Machine(net=net)
    with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb, vmmpy.Machine(net=net) as mc:
        last = vmmpy.Machine(net=net)
        nics = [Nic(ma), Nic(mb), Nic(mc)]
        first.close()
        last.close()
        for n in nics:
            send(n, frame(BCAST, n.mac, b"hello all"))
        assert [arrived(n) for n in nics] == [2, 2, 2]


@pytest.mark.vmmpy_no_artifacts  # the records of the machines made would be memory kept
def test_a_port_that_leaves_frees_its_host_memory():
    from .conftest import heap_growth

    net = vmmpy.Network()

    def attach_and_leave():
        for _ in range(8):
            vmmpy.Machine(ram="2M", net=net).close()

    growth = heap_growth(attach_and_leave, calls=5)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    # a lost port is a 32-byte malloc chunk: 256 bytes a call, against heap_growth's 0-56 bytes of noise
    assert growth < 8 * 24, f"{growth:.0f} bytes kept per 8 machines (a port is 24 bytes)"


@pytest.mark.vmmpy_no_artifacts
def test_a_port_refused_by_a_full_switch_frees_its_host_memory():
    from .conftest import heap_growth

    net = vmmpy.Network()
    machines = []
    try:
        for _ in range(64):
            machines.append(vmmpy.Machine(ram="2M", net=net))

        def refused():
            for _ in range(8):
                with pytest.raises(errors.VmmError, match="64 ports, all in use"):
                    vmmpy.Machine(ram="2M", net=net)

        growth = heap_growth(refused, calls=4)
    finally:
        for m in machines:
            m.close()
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 8 * 24, f"{growth:.0f} bytes kept per 8 refused machines (a port is 24 bytes)"


def test_switch_create_returns_0_and_clears_out_on_failure(tmp_path):
    """The C API's convention (include/vmm.h): 0 on success; on failure a negative code, and *out is NULL."""
    out = ffi.new("vmm_net_switch **")
    assert lib.vmm_net_switch_create(out, ffi.NULL, ffi.NULL, 0) == 0
    assert out[0] != ffi.NULL
    lib.vmm_net_switch_release(out[0])
    stale = ffi.new("char[]", 1)
    out[0] = ffi.cast("vmm_net_switch *", stale)  # what the caller's variable held before
    err = ffi.new("char[]", 256)
    bad = str(tmp_path / "no-such-dir" / "sw.pcap").encode()
    assert lib.vmm_net_switch_create(out, bad, err, 256) == lib.VMM_EIO
    assert out[0] == ffi.NULL
    assert ffi.string(err).decode().startswith(f"{bad.decode()}: cannot write a capture: ")


def test_switch_release_of_null_does_nothing():
    """vmm_net_switch_release(NULL) is a no-op, like free(NULL)."""
    lib.vmm_net_switch_release(ffi.NULL)
    out = ffi.new("vmm_net_switch **")
    assert lib.vmm_net_switch_create(out, ffi.NULL, ffi.NULL, 0) == 0  # the library still works
    lib.vmm_net_switch_release(out[0])
