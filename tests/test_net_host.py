"""Tier 1: the host side of vmmpy's networking: packet captures (pcap files, pipes, size caps), the switch's
counters, and the I/O thread's poll set. Split from test_virtio_net.py, whose drivers and helpers it uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

import vmmpy
from tests.conftest import run_with_shim
from tests.test_virtio_net import BCAST, HDR, Nic, arp_request, frame, tcpdump_lines, wait_received
from tests.virtio_driver import DESC_F_NEXT
from vmmpy import errors


def test_captures_parse_with_tcpdump(tmp_path):
    sw_pcap, nic_pcap = tmp_path / "switch.pcap", tmp_path / "nic.pcap"
    net = vmmpy.Network(capture=sw_pcap)
    with vmmpy.Machine(net=net, net_capture=nic_pcap) as ma, vmmpy.Machine(net=net) as mb:
        a, b = Nic(ma), Nic(mb)
        a.send(arp_request(a.mac, "10.0.0.1", "10.0.0.2"))
        b.post([256])
        b.received()
        b.send(frame(a.mac, b.mac, b"answer"))
        a.post([256])
        wait_received(a)
    sw, nic = tcpdump_lines(sw_pcap), tcpdump_lines(nic_pcap)
    assert len(sw) == 2 and len(nic) == 2
    assert "52:54:00:12:35:00 > ff:ff:ff:ff:ff:ff" in sw[0] and "Request who-has 10.0.0.2 tell 10.0.0.1" in sw[0]
    assert "52:54:00:12:35:01 > 52:54:00:12:35:00" in nic[1]


CAPTURE_LIMITED = """
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
import vmmpy
from tests.test_virtio_net import Nic, frame
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over RLIMIT_FSIZE a write is short, then fails (EFBIG)
limit = 24 + (16 + 100) + 50  # the file header, one whole record, the next one's header and part of its frame
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
net = vmmpy.Network(capture=sys.argv[1])
with vmmpy.Machine(net=net) as ma, vmmpy.Machine(net=net) as mb:
    a, b = Nic(ma), Nic(mb)
    for i in range(4):
        a.send(frame(b.mac, a.mac, bytes([i]) * 86))  # 100-byte frames
    print(net.forwarded, net.capture_dropped, mb.net_stats().rx_queued)
"""


def test_a_capture_that_cannot_grow_stops_whole_and_counts_what_it_missed(tmp_path):
    """The file size limit cuts the second frame's record short: that frame counts as missed, and so does
    every later one (nothing more is written after a torn record), while the switch goes on forwarding."""
    path = tmp_path / "limited.pcap"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", CAPTURE_LIMITED, str(path), root], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4", "3", "4"]
    data = path.read_bytes()
    assert len(data) == 24 + 16 + 100 + 50 and data[24 + 16 + 14 : 24 + 16 + 100] == bytes(86)


CAPTURE_NO_STDIN = """
import os, sys
sys.path.insert(0, sys.argv[2])
os.close(0)  # a daemon's closed stdin: the capture's open gets descriptor 0
import vmmpy
from tests.conftest import run_with_shim
from tests.test_virtio_net import BCAST, Nic, frame
net = vmmpy.Network(capture=sys.argv[1])
assert os.readlink("/proc/self/fd/0") == sys.argv[1]
with vmmpy.Machine(net=net) as m:
    Nic(m).send(frame(BCAST, bytes(6), bytes(86)))
    print(net.forwarded, net.capture_dropped)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_capture_on_descriptor_zero_works(tmp_path):
    path = tmp_path / "fd0.pcap"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", CAPTURE_NO_STDIN, str(path), root], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "0"]
    assert path.stat().st_size == 24 + 16 + 100


def pcap_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(seconds, nanoseconds, frame) of each record of a nanosecond pcap file."""
    assert struct.unpack_from("<I", data)[0] == 0xA1B23C4D
    out, at = [], 24
    while at < len(data):
        sec, ns, caplen, _ = struct.unpack_from("<4I", data, at)
        out.append((sec, ns, data[at + 16 : at + 16 + caplen]))
        at += 16 + caplen
    return out


def test_capture_timestamps_are_the_vms_clock(tmp_path, guest):
    """A deterministic VM stamps its frames with its own clock: seconds and nanoseconds of clock_ns."""
    path = tmp_path / "det.pcap"
    net = vmmpy.Network()
    with vmmpy.Machine(guest("timer"), net=net, deterministic=True, net_capture=path) as m:
        m.stop_at(1_234_567)
        m.start()
        assert m.wait(60).reason == vmmpy.RunReason.STOPPED
        m.clock_advance(5 * 10**9)  # past whole seconds: both fields count
        now = m.clock_ns
        assert now >= 5_001_234_567
        nic = Nic(m)
        f = frame(BCAST, nic.mac, b"stamped")
        nic.send(f)
    assert pcap_records(path.read_bytes()) == [(now // 10**9, now % 10**9, f)]


def test_capture_timestamps_just_past_a_whole_second(tmp_path, guest):
    """The seconds field is clock_ns // 10^9 exactly: 3 ns past the 7th second is second 7, not 6."""
    path = tmp_path / "det.pcap"
    with vmmpy.Machine(guest("timer"), net=vmmpy.Network(), deterministic=True, net_capture=path) as m:
        m.stop_at(1_234_567)
        m.start()
        assert m.wait(60).reason == vmmpy.RunReason.STOPPED
        m.clock_advance(7 * 10**9 + 3 - m.clock_ns)
        assert m.clock_ns == 7 * 10**9 + 3
        nic = Nic(m)
        f = frame(BCAST, nic.mac, b"on the second")
        nic.send(f)
    assert pcap_records(path.read_bytes()) == [(7, 3, f)]


def test_capture_timestamps_just_below_a_whole_second(tmp_path, guest):
    """3 ns before the 7th second is second 6 and 999,999,997 ns: the seconds field divides by 10^9 exactly."""
    path = tmp_path / "det.pcap"
    with vmmpy.Machine(guest("timer"), net=vmmpy.Network(), deterministic=True, net_capture=path) as m:
        m.stop_at(1_234_567)
        m.start()
        assert m.wait(60).reason == vmmpy.RunReason.STOPPED
        m.clock_advance(7 * 10**9 - 3 - m.clock_ns)
        nic = Nic(m)
        f = frame(BCAST, nic.mac, b"not yet")
        nic.send(f)
    assert pcap_records(path.read_bytes()) == [(6, 999_999_997, f)]


@pytest.mark.vmmpy_no_artifacts
@pytest.mark.parametrize("kind", ["opened", "unopenable"])
def test_a_capture_frees_its_state_when_it_closes_or_cannot_open(tmp_path, kind):
    """A switch's capture, made and dropped 100 times a call (a file that opens, or a path in a directory that
    does not exist), keeps nothing (a lost free would keep ~64 bytes a capture)."""
    from .conftest import heap_growth

    path = str(tmp_path / "sw.pcap") if kind == "opened" else str(tmp_path / "missing" / "sw.pcap")

    def make():
        for _ in range(100):
            if kind == "opened":
                vmmpy.Network(capture=path)
            else:
                with pytest.raises(errors.VmmError, match="No such file or directory"):
                    vmmpy.Network(capture=path)

    growth = heap_growth(make)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 1024, f"{growth:.0f} bytes kept per 100 captures"


@pytest.mark.vmmpy_no_artifacts
def test_a_capture_that_fails_to_start_frees_what_it_allocated():
    """A capture file whose header cannot be written (/dev/full) is closed and its state freed: 100 refused
    captures a call keep nothing (a lost free would keep ~8 KiB a call)."""
    from .conftest import heap_growth

    def make():
        for _ in range(100):
            with pytest.raises(errors.VmmError, match="No space left on device"):
                vmmpy.Network(capture="/dev/full")

    growth = heap_growth(make)
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 1024, f"{growth:.0f} bytes kept per 100 refused captures"


def test_capture_files_are_made_like_any_other_file(tmp_path):
    """Mode 0644 less the umask; a capture that cannot even take its header fails without leaking its fd."""
    path = tmp_path / "m.pcap"
    vmmpy.Network(capture=path)
    # the file header: nanosecond magic, version 2.4, zone 0, sigfigs 0, snaplen 256 KiB, Ethernet
    assert path.read_bytes() == struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(errors.VmmError, match="/dev/full: cannot write a capture: No space left on device"):
            vmmpy.Network(capture="/dev/full")
    assert len(os.listdir("/proc/self/fd")) == fds


def test_user_networking_reserves_its_sockets_in_the_io_threads_poll_round():
    """Each user NIC may hold 128 host sockets (and one per hostfwd rule): a VM's I/O thread polls at most
    1023 fds, so an eighth is refused with a reason rather than left with sockets nobody polls."""
    with vmmpy.Machine(net=["user"] * 7) as m:
        assert m.net_stats(6).link_up
    with pytest.raises(errors.OutOfMemory, match=r"^user networking needs up to 128 host fds polled, and the VM's "
                       r"I/O thread polls at most 1023 \(the VM's other back-ends hold 896\)$"):  # fmt: skip
        vmmpy.Machine(net=["user"] * 8)
    net = vmmpy.Network()  # a switch port polls nothing: any number of them fits beside
    with vmmpy.Machine(net=["user"] * 7 + [net] * 4) as m:
        assert m.net_stats(10).link_up


def test_a_refused_network_card_leaves_the_io_thread_as_it_was():
    """A card refused after it joined the I/O thread (an eighth user NIC: its sockets would not fit) leaves it
    again: thirty refusals in a row take none of the thread's 32 entries (7 user NICs hold 14), and a switch
    port still joins afterwards."""
    from vmmpy.net import add_nets

    with vmmpy.Machine(net=["user"] * 7) as m:
        for _ in range(30):
            with pytest.raises(errors.OutOfMemory, match="^user networking needs up to 128 host fds polled"):
                add_nets(m, "user", None, None, None)
        net = vmmpy.Network()
        add_nets(m, net, None, None, None)
        assert m.net_stats(7).link_up


FAIL_MALLOC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_malloc(size_t);
/* malloc of FAIL_MALLOC_SIZE bytes called from libvmm's extension fails; every other one is glibc's */
void *malloc(size_t n)
{
    static size_t fail;
    if (!fail) {
        const char *e = getenv("FAIL_MALLOC_SIZE");
        fail = e ? strtoul(e, NULL, 0) : (size_t)-1;
    }
    Dl_info di;
    if (n == fail && dladdr(__builtin_return_address(0), &di) && di.dli_fname && strstr(di.dli_fname, "_vmm"))
        return NULL;
    return __libc_malloc(n);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_the_io_threads_poll_set_failing_to_allocate_is_an_error(tmp_path):
    """The I/O thread's poll set (1024 fds of 8 bytes and a count: 8196 bytes) comes from malloc when
    the thread is made: its failure is vmm_add_net's error, not a thread that exits and polls nothing."""
    script = "import vmmpy\ntry:\n    vmmpy.Machine(net='user')\nexcept vmmpy.errors.OutOfMemory as e:\n    print(e)\n"
    r = run_with_shim(tmp_path, FAIL_MALLOC_C, script, FAIL_MALLOC_SIZE="8196")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "out of memory for the I/O thread"


def test_capture_of_maximum_size_frames_counts_the_bytes_it_writes(tmp_path):
    """The 1 GiB limit is on the bytes written (16-byte record headers and frames): 1040 frames of the
    maximum size (68 MB) are all in the file. One frame buffer in guest RAM, sent 1040 times."""
    path = tmp_path / "big.pcap"
    net = vmmpy.Network(capture=path)
    with vmmpy.Machine(net=net) as m:
        a = Nic(m)
        f = frame(BCAST, a.mac, bytes(65553 - 14))  # VMM_NET_FRAME_MAX
        hdr, data = a.tx.buf(HDR), a.tx.buf(len(f))
        m.write_memory(data, f)
        for _ in range(1040):
            a.tx.write_desc(0, hdr, HDR, DESC_F_NEXT, 1)
            a.tx.write_desc(1, data, len(f))
            a.tx.publish(0)
            a.tx.notify()
        assert (net.forwarded, net.capture_dropped, m.net_stats().tx_malformed) == (1040, 0, 0)
    assert path.stat().st_size == 24 + 1040 * (16 + len(f))
    path.unlink()


@pytest.mark.parametrize("room", [34, 33])
def test_a_capture_stops_at_exactly_one_gib(room):
    """The cap (VMM_PCAP_MAX_BYTES, 1 GiB) is on the bytes written, record headers included: with 34 bytes
    left, a record of an 18-byte frame (16 + 18) ends at 1 GiB exactly and is written; with 33 it is not.
    Either way the next is missed, on the NIC's capture and the switch's. The files are /dev/null, which
    takes every write, so nothing reaches a disk (a frame costs a copy: 1 GiB in under a second)."""
    cap, rec = 1 << 30, 16  # the cap, a record header
    big = frame(BCAST, bytes(6), bytes(65553 - 14))  # VMM_NET_FRAME_MAX
    n = (cap - 24) // (rec + len(big))
    fill = frame(BCAST, bytes(6), bytes(cap - 24 - n * (rec + len(big)) - rec - room - 14))
    small = frame(BCAST, bytes(6), b"tiny")
    assert len(small) == 18
    net = vmmpy.Network(capture="/dev/null")
    with vmmpy.Machine(net=net, net_capture="/dev/null") as m:
        a = Nic(m)
        hdr, data = a.tx.buf(HDR), a.tx.buf(len(big))

        def send(f: bytes, times: int = 1) -> None:
            m.write_memory(data, f)
            for _ in range(times):
                a.tx.write_desc(0, hdr, HDR, DESC_F_NEXT, 1)
                a.tx.write_desc(1, data, len(f))
                a.tx.publish(0)
                a.tx.notify()

        send(big, n)
        send(fill)  # the file is now 1 GiB less `room` bytes
        assert (net.capture_dropped, m.net_stats().capture_dropped) == (0, 0)
        send(small, 2)
        missed = 1 if room >= rec + len(small) else 2
        assert (net.forwarded, m.net_stats().tx_malformed) == (n + 3, 0)
        assert (net.capture_dropped, m.net_stats().capture_dropped) == (missed, missed)


CAPTURE_FIFO = """
import fcntl, os, signal, struct, sys, termios, threading, time
sys.path.insert(0, sys.argv[2])
import vmmpy
from tests.conftest import run_with_shim
from tests.test_virtio_net import BCAST, Nic, frame

signal.signal(signal.SIGUSR1, lambda *a: None)
signal.siginterrupt(signal.SIGUSR1, True)  # no SA_RESTART: a write(2) it interrupts returns EINTR
sender = threading.get_native_id()
got = []


def blocked(fd, n, deadline):
    # until the pipe is full and the sender sleeps in write(2) (syscall 1, state S); False if it has
    # not by the deadline (it gave up writing)
    while time.monotonic() < deadline:
        fcntl.ioctl(fd, termios.FIONREAD, n)
        with open(f"/proc/self/task/{sender}/syscall") as f:
            in_write = f.read().split()[0] == "1"
        with open(f"/proc/self/task/{sender}/stat") as f:
            asleep = f.read().rsplit(")", 1)[1].split()[0] == "S"
        if in_write and asleep and struct.unpack("i", n)[0] > 32768:
            return True
    return False


def reader():
    fd = os.open(sys.argv[1], os.O_RDONLY)
    n = bytearray(4)
    assert blocked(fd, n, time.monotonic() + 30)
    for _ in range(10):  # interrupt the blocked write again and again: each time it must retry
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        if not blocked(fd, n, time.monotonic() + 1):
            break
    while chunk := os.read(fd, 1 << 16):
        got.append(chunk)


t = threading.Thread(target=reader)
t.start()
net = vmmpy.Network(capture=sys.argv[1])  # opening a FIFO waits for its reader
with vmmpy.Machine(net=net) as m:
    a = Nic(m)
    for i in range(40):  # 4000-byte frames: at most PIPE_BUF, so a blocked write has written nothing yet
        a.send(frame(BCAST, a.mac, bytes([i]) * 3986))
    print(net.forwarded, net.capture_dropped)
del net  # the last reference: the capture closes, the reader sees its end
t.join()
print(len(b"".join(got)))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc/<pid>/task/<tid>/syscall")
def test_a_capture_into_a_pipe_survives_a_signal_while_blocked(tmp_path):
    """A capture may be a FIFO (a live tcpdump): a full pipe blocks the sender in write(2), and a signal
    then interrupts it (EINTR): the write is retried, no frame is missed."""
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", CAPTURE_FIFO, str(fifo), root], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["40", "0", str(24 + 40 * (16 + 4000))]


CAPTURE_FIFO_PARTIAL = """
import fcntl, os, signal, struct, sys, termios, threading, time
sys.path.insert(0, sys.argv[2])
import vmmpy
from tests.conftest import run_with_shim
from tests.test_virtio_net import BCAST, Nic, frame

signal.signal(signal.SIGUSR1, lambda *a: None)
signal.siginterrupt(signal.SIGUSR1, True)
sender = threading.get_native_id()
FIRST = 14 * 4096 + 4079  # 15 pipe pages, the last with 17 bytes free: the file header and record had a page
WANT = 24 + 16 + FIRST + 16 + 1  # and then the second record and one byte of the second frame
got = []


def reader():
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.fcntl(fd, 1031, 65536)  # F_SETPIPE_SZ: 16 pages
    n = bytearray(4)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the sender sleeps in write(2) with that one byte written
        fcntl.ioctl(fd, termios.FIONREAD, n)
        with open(f"/proc/self/task/{sender}/syscall") as f:
            in_write = f.read().split()[0] == "1"
        with open(f"/proc/self/task/{sender}/stat") as f:
            asleep = f.read().rsplit(")", 1)[1].split()[0] == "S"
        if in_write and asleep and struct.unpack("i", n)[0] == WANT:
            break
    got.append(struct.unpack("i", n)[0])
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # write(2) returns 1
    while chunk := os.read(fd, 1 << 16):
        got.append(len(chunk))


t = threading.Thread(target=reader)
t.start()
net = vmmpy.Network(capture=sys.argv[1])
with vmmpy.Machine(net=net) as m:
    a = Nic(m)
    a.send(frame(BCAST, a.mac, bytes(FIRST - 14)))
    a.send(frame(BCAST, a.mac, bytes(4097 - 14)))  # its write merges 1 byte into the last page, then blocks
    print(net.forwarded, net.capture_dropped)
del net
t.join(30)
print(got[0], sum(got[1:]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc/self/task")
def test_a_capture_write_cut_short_by_a_signal_goes_on_where_it_stopped(tmp_path):
    """A signal that interrupts a blocked write(2) to a FIFO after it wrote something makes it return that
    count, here a single byte (a frame of 4097 bytes: 1 into the pipe's last page, then it waits for a
    page): the capture writes the rest, and the file is whole."""
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", CAPTURE_FIFO_PARTIAL, str(fifo), root], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = 14 * 4096 + 4079
    assert r.stdout.split() == ["2", "0", str(24 + 16 + first + 16 + 1), str(24 + 16 + first + 16 + 4097)]


def read_while_a_capture_blocks(rfd: int, sender, read):
    """Start `sender` (a thread whose frame alone is larger than the FIFO `rfd` reads, so its capture write
    blocks with a lock held), wait until that frame's record reaches the FIFO, then call `read` on another
    thread: whether it was still waiting after 0.5 s, and what it returned once the FIFO was drained."""
    import threading

    sender.start()
    n = bytearray(4)
    deadline = time.monotonic() + 30
    while struct.unpack("i", n)[0] <= 24 and time.monotonic() < deadline:
        fcntl.ioctl(rfd, termios.FIONREAD, n)  # beyond the file header: the writer is in its write
        select.select([], [], [], 0.001)
    assert struct.unpack("i", n)[0] > 24, "the frame's record did not reach the FIFO"
    got = []
    reader = threading.Thread(target=lambda: got.append(read()))
    reader.start()
    reader.join(0.5)
    waited = reader.is_alive()
    while sender.is_alive():  # drain the FIFO: the frame's write completes
        select.select([rfd], [], [], 0.1)
        with contextlib.suppress(BlockingIOError):
            os.read(rfd, 1 << 16)
    reader.join(30)
    return waited, got


def test_switch_counts_wait_for_the_frame_being_forwarded(tmp_path):
    """The switch's counters are read under its lock, so they never show half a forwarding: while a frame's
    capture write blocks (a FIFO nobody reads, full), vmm_net_switch_counts waits; once the reader drains
    the FIFO, it returns the count with that frame."""
    import fcntl
    import threading

    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: the capture's open does not wait
    try:
        net = vmmpy.Network(capture=fifo)
        size = fcntl.fcntl(rfd, 1032)  # F_GETPIPE_SZ
        with vmmpy.Machine(net=net) as m:
            a = Nic(m)
            sender = threading.Thread(target=a.send, args=(frame(BCAST, a.mac, bytes(size)),))
            # the frame alone is larger than the pipe: its write blocks, the switch's lock held
            waited, counted = read_while_a_capture_blocks(rfd, sender, lambda: net.forwarded)
            assert waited, "the counters were read while a frame was being forwarded"
            assert counted == [1]
    finally:
        os.close(rfd)


def test_switch_counts_checks_its_arguments():
    from vmmpy._ffi import ffi, lib

    assert lib.vmm_net_switch_counts(ffi.NULL, ffi.NULL, ffi.NULL) == lib.VMM_EINVAL
    net = vmmpy.Network()
    assert lib.vmm_net_switch_counts(net._sw, ffi.NULL, ffi.NULL) == 0  # either count may be left out
    assert lib.vmm_net_switch_create(ffi.NULL, ffi.NULL, ffi.NULL, 0) == lib.VMM_EINVAL  # nowhere to put it
    assert vmmpy.Network().capture_dropped == 0
    cfg = ffi.new(
        "struct vmm_net_config *", {"size": ffi.sizeof("struct vmm_net_config"), "backend": lib.VMM_NET_SWITCH}
    )
    with vmmpy.Machine() as m, pytest.raises(errors.InvalidArgument, match="^network switch: no switch given$"):
        m._checked(lib.vmm_add_net, cfg)  # a switch port without a switch


# calloc called from vmm_net_switch_create fails; every other one is glibc's
FAIL_SWITCH_CALLOC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_calloc(size_t, size_t);
void *calloc(size_t n, size_t size)
{
    Dl_info di;
    if (dladdr(__builtin_return_address(0), &di) && di.dli_sname && !strcmp(di.dli_sname, "vmm_net_switch_create"))
        return NULL;
    return __libc_calloc(n, size);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_a_switch_that_cannot_be_allocated_is_out_of_memory_with_or_without_an_error_buffer(tmp_path):
    """VMM_ENOMEM and its reason in errbuf; errbuf may be NULL (include/vmm.h: the reason goes to errbuf if not
    NULL), whatever errlen says."""
    script = """
import vmmpy
from vmmpy._ffi import ffi, lib
try:
    vmmpy.Network()
except vmmpy.errors.OutOfMemory as e:
    print(e)
out = ffi.new("vmm_net_switch **")
print(lib.vmm_net_switch_create(out, ffi.NULL, ffi.NULL, 64) == lib.VMM_ENOMEM, out[0] == ffi.NULL)
"""
    # and a capture that cannot be opened, without the shim: VMM_EIO, nothing written through a NULL errbuf
    from vmmpy._ffi import ffi, lib

    out = ffi.new("vmm_net_switch **")
    bad = str(tmp_path / "no" / "such.pcap").encode()
    assert lib.vmm_net_switch_create(out, bad, ffi.NULL, 64) == lib.VMM_EIO and out[0] == ffi.NULL
    r = run_with_shim(tmp_path, FAIL_SWITCH_CALLOC_C, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["out of memory for a network switch", "True True"]


def test_capture_path_errors_are_one_line(tmp_path):
    with pytest.raises(errors.VmmError, match="dir.pcap: cannot write a capture: No such file or directory$"):
        vmmpy.Network(capture=tmp_path / "no" / "such" / "dir.pcap")
    with pytest.raises(errors.VmmError, match="cannot write a capture"):
        vmmpy.Machine(net="user", net_capture=tmp_path / "missing" / "x.pcap")
