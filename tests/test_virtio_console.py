"""Tier 1: the virtio console (virtio 1.2 §5.3, one port), driven over virtio-mmio."""

from __future__ import annotations

import pytest

import vmmpy
from tests.virtio_driver import DESC_F_NEXT, ID_CONSOLE, VirtioMMIO, find_devices
from vmmpy import cli, errors

F_SIZE, F_MULTIPORT, F_EMERG_WRITE = 1 << 0, 1 << 1, 1 << 2
RX, TX = 0, 1


def open_console(m: vmmpy.Machine):
    slots = [s for s, d in find_devices(m) if d == ID_CONSOLE]
    assert len(slots) == 1, find_devices(m)
    dev = VirtioMMIO(m, slots[0])
    rx, tx = dev.init(queues=2)
    return dev, rx, tx


def guest_errors(m) -> int:
    return m.stats()["guest_errors"]


def test_features_and_config_space():
    with vmmpy.Machine(virtio_console=True) as m:
        dev, _, _ = open_console(m)
        f = dev.device_features()
        assert f & F_SIZE and f & F_EMERG_WRITE and not f & F_MULTIPORT
        assert dev.config_read(0, 2) == 80 and dev.config_read(2, 2) == 24  # cols, rows
        assert dev.config_read(4, 4) == 1  # max_nr_ports
        before = guest_errors(m)
        dev.config_read(12, 4)  # beyond the 12 bytes
        dev.config_write(0, 100, 2)  # cols is read-only
        assert guest_errors(m) == before + 2 and not dev.needs_reset()


def test_transmit_joins_the_console_stream():
    with vmmpy.Machine(virtio_console=True) as m:
        _, _, tx = open_console(m)
        for chunks in ([b"hello "], [b"from ", b"hvc0", b"\n"], [b""]):
            head = tx.add(chunks, [])
            tx.notify()
            assert tx.get_used() == [(head, 0)]  # nothing written back
        assert m.serial.data == b"hello from hvc0\n"
        # a buffer larger than the device's copy piece (4 KiB), and a writable part that is ignored
        big = bytes(range(256)) * 64 + b"end"
        head = tx.add([big], [16])
        tx.notify()
        assert tx.get_used() == [(head, 0)]
        assert m.serial.data.endswith(big)


def test_emergency_write_prints_a_byte():
    with vmmpy.Machine(virtio_console=True) as m:
        dev, _, _ = open_console(m)
        for ch in b"SOS":
            dev.config_write(8, ch, 4)
        assert m.serial.data == b"SOS"


def test_receive_delivers_host_input_apart_from_serial():
    with vmmpy.Machine(virtio_console=True) as m:
        _, rx, _ = open_console(m)
        m.serial.write(b"for the uart")  # the PL011's queue: never reaches hvc0
        m.hvc.write(b"abcdefgh")
        head = rx.add([], [3])  # a short buffer takes what fits
        rx.notify()
        assert rx.get_used() == [(head, 3)] and rx.chain_data(head) == b"abc"
        head = rx.add([], [2, 64])  # the rest, over two writable buffers
        rx.notify()
        assert rx.get_used() == [(head, 5)] and rx.chain_data(head)[:5] == b"defgh"
        # a posted buffer waits for input, which fills it at once
        head = rx.add([], [16])
        rx.notify()
        assert rx.get_used() == []
        m.hvc.type("ls\n")
        assert rx.get_used() == [(head, 3)] and rx.chain_data(head)[:3] == b"ls\r"
        assert m.serial.data == b""  # input is not echoed by the host


def test_input_without_a_virtio_console_is_refused():
    with vmmpy.Machine() as m, pytest.raises(errors.NotSupported, match="no virtio console"):
        m.hvc.write(b"x")


def test_only_one_virtio_console():
    one_line = r"^the VM has a virtio console already \(one is supported\)$"
    with vmmpy.Machine(virtio_console=True) as m, pytest.raises(errors.NotSupported, match=one_line):
        m._add_virtio_console()


def test_receive_chain_without_writable_bytes_needs_reset():
    with vmmpy.Machine(virtio_console=True) as m:
        dev, rx, _ = open_console(m)
        m.hvc.write(b"x")
        before = guest_errors(m)
        head = rx.add([b"readable only"], [])
        rx.notify()
        assert rx.get_used() == [(head, 0)]
        assert dev.needs_reset() and guest_errors(m) > before
        # reset recovers; the byte was not consumed and reaches the next good buffer
        rx, _ = dev.init(queues=2)
        head = rx.add([], [8])
        rx.notify()
        assert rx.get_used() == [(head, 1)] and rx.chain_data(head)[:1] == b"x"


def test_hostile_transmit_chain_needs_reset():
    with vmmpy.Machine(virtio_console=True) as m:
        dev, _, tx = open_console(m)
        before = guest_errors(m)
        # a descriptor loop: 0 -> 1 -> 0
        b = tx.buf(8)
        tx.write_desc(0, b, 8, DESC_F_NEXT, 1)
        tx.write_desc(1, b, 8, DESC_F_NEXT, 0)
        tx.publish(0)
        tx.notify()
        assert dev.needs_reset() and guest_errors(m) > before
        assert tx.get_used() == []
        # ... and a buffer outside RAM after a reset
        _, tx = dev.init(queues=2)
        tx.write_desc(0, 0x1000, 8)
        tx.publish(0)
        tx.notify()
        assert dev.needs_reset()
        _, tx = dev.init(queues=2)
        head = tx.add([b"ok"], [])
        tx.notify()
        assert tx.get_used() == [(head, 0)] and m.serial.data == b"ok"


def test_reset_clears_the_device_and_keeps_queued_input():
    with vmmpy.Machine(virtio_console=True) as m:
        dev, rx, tx = open_console(m)
        head = rx.add([], [8])  # posted, then the device is reset before input comes
        rx.notify()
        dev.reset()
        assert dev.status() == 0 and dev.interrupt_status() == 0
        m.hvc.write(b"late")  # no live queue: it waits
        rx, tx = dev.init(queues=2)
        head = rx.add([], [8])
        rx.notify()
        assert rx.get_used() == [(head, 4)] and rx.chain_data(head)[:4] == b"late"


def test_deterministic_input_enters_at_its_time(guest):
    """Input with at_ns waits for the virtual clock, like serial input: between rounds, never before."""
    with vmmpy.Machine(guest("idle_notick"), virtio_console=True, deterministic=True) as m:
        _, rx, _ = open_console(m)
        head = rx.add([], [8])
        rx.notify()
        m.hvc.write(b"tick", at_ns=2_000_000)
        m.stop_at(1_000_000)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        assert rx.get_used() == []  # not due yet
        m.stop_at(3_000_000)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        assert rx.get_used() == [(head, 4)] and rx.chain_data(head)[:4] == b"tick"


def test_cli_option():
    assert cli.build_parser().parse_args(["run", "k.elf", "--virtio-console"]).virtio_console is True
    assert cli.build_parser().parse_args(["run", "k.elf"]).virtio_console is False
