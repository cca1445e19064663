"""Tier 1: the PL011 model, driven register by register through the MMIO bus (Arm DDI 0183G)."""

from __future__ import annotations

import logging
import struct
import threading

import pytest

import vmmpy

from .conftest import UART

DR, RSR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR = (
    0x00, 0x04, 0x18, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44, 0x48,
)  # fmt: skip
TXFE, RXFE = 1 << 7, 1 << 4
RXIS, TXIS, RTIS = 1 << 4, 1 << 5, 1 << 6


@pytest.fixture
def m():
    with vmmpy.Machine() as mach:
        yield mach


def test_identification_registers(m):
    ids = [m.mmio_read(UART + 0xFE0 + 4 * i) for i in range(8)]
    assert ids == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]


def test_reset_values(m):
    assert m.mmio_read(UART + CR) == 0x300
    assert m.mmio_read(UART + IFLS) == 0x12
    assert m.mmio_read(UART + IMSC) == 0
    assert m.mmio_read(UART + FR) == TXFE | RXFE


def test_transmit_goes_to_the_serial_buffer(m):
    for ch in b"ok\n":
        m.mmio_write(UART + DR, ch)
    m.mmio_write(UART + DR, ord("!"), size=1)
    assert m.serial.read() == "ok\n!"


def test_receive_is_polled_from_queued_input(m):
    assert m.mmio_read(UART + DR) == 0  # nothing queued: reads 0
    m.serial.write(b"ab")
    assert m.mmio_read(UART + FR) & RXFE == 0
    assert m.mmio_read(UART + RIS) & RXIS
    assert m.mmio_read(UART + DR) == ord("a")
    assert m.mmio_read(UART + DR, size=1) == ord("b")
    assert m.mmio_read(UART + FR) & RXFE
    assert not m.mmio_read(UART + RIS) & RXIS


@pytest.mark.parametrize(
    "reg, written, readback",
    [
        (IBRD, 0x12345, 0x2345),
        (FBRD, 0xFF, 0x3F),
        (LCR_H, 0x1FF, 0xFF),
        (CR, 0xFFFF, 0xFF87),
        (IFLS, 0xFF, 0x3F),
        (ILPR, 0x1AB, 0xAB),
        (DMACR, 0xF, 0x7),
        (IMSC, 0xFFFF, 0x7FF),
    ],
)
def test_register_widths(m, reg, written, readback):
    m.mmio_write(UART + reg, written)
    assert m.mmio_read(UART + reg) == readback


def test_tx_interrupt_is_latched_cleared_by_icr_and_raised_by_each_write(m):
    assert m.mmio_read(UART + RIS) == TXIS  # the transmit FIFO is empty at reset
    assert m.mmio_read(UART + MIS) == 0
    m.mmio_write(UART + IMSC, TXIS)
    assert m.mmio_read(UART + MIS) == TXIS
    m.mmio_write(UART + ICR, TXIS)
    assert m.mmio_read(UART + RIS) == 0
    assert m.mmio_read(UART + MIS) == 0
    m.mmio_write(UART + DR, ord("x"))  # the byte leaves at once: the FIFO drains through its trigger level
    assert m.mmio_read(UART + RIS) == TXIS
    assert m.mmio_read(UART + MIS) == TXIS


def test_icr_clears_only_the_bits_written(m):
    m.mmio_write(UART + ICR, RXIS | RTIS | 0xF)  # what Linux writes: TX stays
    assert m.mmio_read(UART + RIS) == TXIS
    m.mmio_write(UART + ICR, 0)
    assert m.mmio_read(UART + RIS) == TXIS


def test_rx_and_rx_timeout_are_levels_while_input_is_queued(m):
    m.mmio_write(UART + ICR, 0x7FF)
    assert m.mmio_read(UART + RIS) == 0
    m.serial.write(b"ab")
    assert m.mmio_read(UART + RIS) == RXIS | RTIS
    m.mmio_write(UART + ICR, 0x7FF)  # cannot clear a level: the data is still there
    assert m.mmio_read(UART + RIS) == RXIS | RTIS
    assert m.mmio_read(UART + DR) == ord("a")
    assert m.mmio_read(UART + RIS) == RXIS | RTIS
    assert m.mmio_read(UART + DR) == ord("b")
    assert m.mmio_read(UART + RIS) == 0


def test_imsc_masks_the_raw_status(m):
    m.serial.write(b"z")
    assert m.mmio_read(UART + RIS) == RXIS | RTIS | TXIS
    for imsc in (0, RXIS, RTIS, TXIS, RXIS | RTIS, 0x7FF):
        m.mmio_write(UART + IMSC, imsc)
        assert m.mmio_read(UART + MIS) == (RXIS | RTIS | TXIS) & imsc


# -- the interrupt output through the GICv3 (UART SPI 1 = INTID 33) -------------------------
GICD, GICR = 0x0800_0000, 0x080A_0000
UART_INTID = 33


@pytest.fixture
def gm(m):
    """A machine whose GIC forwards INTID 33 to vCPU 0's IRQ line (affinity routing, group 1)."""
    m.mmio_write(GICD + 0x0000, 0x12)  # GICD_CTLR: ARE | EnableGrp1
    m.mmio_write(GICD + 0x0084, 1 << (UART_INTID - 32))  # GICD_IGROUPR1
    m.mmio_write(GICD + 0x0104, 1 << (UART_INTID - 32))  # GICD_ISENABLER1
    m.mmio_write(GICD + 0x6000 + 8 * UART_INTID, 0)  # GICD_IROUTER33: affinity 0.0.0.0 (vCPU 0)
    m.mmio_write(GICD + 0x6000 + 8 * UART_INTID + 4, 0)
    m.mmio_write(GICR + 0x0014, 0)  # GICR_WAKER: wake the redistributor
    m.sysreg_write("ICC_PMR_EL1", 0xFF)
    m.sysreg_write("ICC_IGRPEN1_EL1", 1)
    m.mmio_write(UART + ICR, 0x7FF)
    return m


def line_follows_mis(m) -> bool:
    mis = m.mmio_read(UART + MIS)
    assert m.irq_line(0) == (mis != 0), f"UARTMIS={mis:#x} but the IRQ line is {m.irq_line(0)}"
    return mis != 0


def test_rx_interrupt_is_raised_by_input_and_dropped_by_draining(gm):
    gm.mmio_write(UART + IMSC, RXIS | RTIS)  # what Linux's amba-pl011 enables
    assert not line_follows_mis(gm)
    gm.serial.write(b"hi")  # no guest access: the console's input callback raises it
    assert gm.irq_line(0)
    assert line_follows_mis(gm)
    assert gm.mmio_read(UART + DR) == ord("h")
    assert line_follows_mis(gm)  # one byte left
    assert gm.mmio_read(UART + DR) == ord("i")
    assert not gm.irq_line(0)
    assert not line_follows_mis(gm)


def test_rx_interrupt_is_masked_by_imsc(gm):
    gm.serial.write(b"q")
    assert not line_follows_mis(gm)
    gm.mmio_write(UART + IMSC, RXIS)
    assert line_follows_mis(gm)
    gm.mmio_write(UART + IMSC, 0)
    assert not line_follows_mis(gm)
    gm.mmio_write(UART + IMSC, RTIS)  # the timeout interrupt alone also reports queued data
    assert line_follows_mis(gm)
    gm.mmio_read(UART + DR)
    assert not line_follows_mis(gm)


def test_tx_interrupt_on_the_line(gm):
    gm.mmio_write(UART + IMSC, TXIS)
    assert not line_follows_mis(gm)  # cleared by the fixture's ICR write
    gm.mmio_write(UART + DR, ord("."))
    assert gm.irq_line(0)
    assert line_follows_mis(gm)
    gm.mmio_write(UART + ICR, TXIS)
    assert not line_follows_mis(gm)
    gm.mmio_write(UART + DR, ord("."))
    assert line_follows_mis(gm)
    gm.mmio_write(UART + IMSC, 0)
    assert not line_follows_mis(gm)


def test_linux_amba_pl011_sequence(gm):
    """The register traffic of Linux's amba-pl011 driver (startup, RX and TX interrupts) on the line."""
    # pl011_hwinit / pl011_enable_interrupts: clear errors and RX, unmask RX | RT
    gm.mmio_write(UART + ICR, 0xF | RXIS | RTIS)
    gm.mmio_write(UART + IMSC, RXIS | RTIS)
    # pl011_start_tx_pio writes until UARTFR.TXFF, which never sets: the buffer empties, TXIM stays off
    for ch in b"login: ":
        assert not gm.mmio_read(UART + FR) & (1 << 5)
        gm.mmio_write(UART + DR, ch)
    assert not line_follows_mis(gm)
    # input: pl011_int reads MIS, clears all but TX/RT/RX, reads DR until RXFE
    gm.serial.write(b"root\r")
    assert line_follows_mis(gm)
    got = b""
    while status := gm.mmio_read(UART + MIS):
        gm.mmio_write(UART + ICR, status & ~(TXIS | RTIS | RXIS))
        while not gm.mmio_read(UART + FR) & RXFE:
            got += bytes([gm.mmio_read(UART + DR) & 0xFF])
    assert got == b"root\r"
    assert not gm.irq_line(0)
    # TX with data left over: TXIM on, the handler refills, then masks TXIM when the buffer is empty
    gm.mmio_write(UART + IMSC, RXIS | RTIS | TXIS)
    assert line_follows_mis(gm)
    gm.mmio_write(UART + DR, ord("#"))
    assert line_follows_mis(gm)
    gm.mmio_write(UART + IMSC, RXIS | RTIS)
    assert not line_follows_mis(gm)
    assert gm.serial.read() == "login: #"


def test_concurrent_input_and_draining_leave_the_line_consistent(gm):
    """Input queued from one thread while another drains UARTDR: the last level driven is the right one."""
    gm.mmio_write(UART + IMSC, RXIS | RTIS)
    n = 3000

    def feed():
        for i in range(n):
            gm.serial.write(bytes([i & 0xFF]))

    t = threading.Thread(target=feed)
    t.start()
    got = []
    while len(got) < n:
        if not gm.mmio_read(UART + FR) & RXFE:
            got.append(gm.mmio_read(UART + DR))
    t.join()
    assert got == [i & 0xFF for i in range(n)]
    assert not line_follows_mis(gm)


def test_byte_and_halfword_reads_of_a_register(m):
    m.mmio_write(UART + IBRD, 0xBEEF)
    assert m.mmio_read(UART + IBRD, size=1) == 0xEF
    assert m.mmio_read(UART + IBRD + 1, size=1) == 0xBE
    assert m.mmio_read(UART + IBRD, size=2) == 0xBEEF


def test_bad_guest_accesses_are_logged_and_ignored(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(UART + 0x800) == 0
    m.mmio_write(UART + 0x800, 1)
    m.mmio_write(UART + FR, 0)  # read-only
    assert m.mmio_read(UART + DR, size=8) == 0
    m.mmio_write(UART + DR + 1, 0x41, size=1)  # not the low byte of a register
    m.mmio_write(UART + DR, 0x42, size=8)  # registers are 32 bits wide: no byte leaves
    assert m.serial.read() == ""
    text = caplog.text
    assert "guest error: read of unknown register 0x800" in text
    assert "write to read-only register 0x018" in text
    assert "write to unknown register 0x800" in text and "read-only register 0x800" not in text
    assert "bad 8-byte read" in text and "bad 8-byte write at offset 0x0" in text
    assert m.stats()["guest_errors"] == 6


def test_direct_mmio_api_checks_its_arguments(m):
    with pytest.raises(vmmpy.InvalidArgument, match="size 3"):
        m.mmio_read(UART, size=3)
    with pytest.raises(vmmpy.InvalidArgument, match="aligned"):
        m.mmio_read(UART + 2, size=4)
    with pytest.raises(vmmpy.InvalidArgument, match="device-window"):
        m.mmio_read(0x4000_0000)


def test_unclaimed_device_window_reads_zero_and_logs(m, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    assert m.mmio_read(0x0C00_0000) == 0
    m.mmio_write(0x0C00_0000, 5)
    assert "unclaimed address 0xc000000" in caplog.text


def test_receive_status_register_reads_zero_without_a_guest_error(m):
    assert m.mmio_read(UART + RSR) == 0
    m.mmio_write(UART + RSR, 0xF)  # UARTECR: clears the (never set) errors
    assert m.stats()["guest_errors"] == 0


def test_registers_survive_a_snapshot(guest, tmp_path):
    regs = {ILPR: 0x5A, IBRD: 0x1234, FBRD: 0x2A, LCR_H: 0x70, CR: 0x301, IFLS: 0x09, IMSC: RXIS | RTIS, DMACR: 5}
    snap = tmp_path / "u.snap"
    with vmmpy.Machine(guest("idle")) as mach:
        mach.boot_info()
        for reg, val in regs.items():
            mach.mmio_write(UART + reg, val)
        mach.mmio_write(UART + ICR, TXIS)  # TX acknowledged: the latched bit is part of the state
        mach.snapshot(snap)
    with vmmpy.Machine.restore(snap) as r:
        assert {reg: r.mmio_read(UART + reg) for reg in regs} == regs
        assert r.mmio_read(UART + RIS) == 0


def test_a_snapshot_register_outside_what_a_guest_can_write_is_refused(guest, tmp_path):
    """Each register of the pl011.0 section is checked against the bits a guest write can leave in it: one bit
    beyond them is refused naming the register, every allowed bit set loads."""
    from .test_snapshot import sections
    from .test_snapshot_devices import with_section_crc

    # ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, DMACR, RIS (pl011.c pl011_sync): what a write keeps of each
    masks = [0xFF, 0xFFFF, 0x3F, 0xFF, 0xFF87, 0x3F, 0x7FF, 7, TXIS]
    snap = tmp_path / "u.snap"
    with vmmpy.Machine(guest("idle")) as mach:
        mach.boot_info()
        mach.snapshot(snap)
    good = snap.read_bytes()
    ((off, plen),) = [(o, n) for name, o, n in sections(good) if name == "pl011.0"]
    bad = tmp_path / "bad.snap"
    for i, mask in enumerate(masks):
        for val, ok in ((mask, True), (~mask & -~mask & 0xFFFF_FFFF, False)):
            data = bytearray(good)
            struct.pack_into("<I", data, off + 4 * i, val)
            with_section_crc(data, off, plen)
            bad.write_bytes(data)
            if ok:
                vmmpy.Machine.restore(bad).close()
                continue
            with pytest.raises(vmmpy.errors.VmmError, match=rf"pl011\.0.*register {i} holds {val:#x}\b"):
                vmmpy.Machine.restore(bad).close()


def test_flag_register_with_input_queued_reads_only_txfe(m):
    """UARTFR (§3.3.3): input queued clears RXFE and sets nothing else; CTS, DSR, DCD and BUSY read 0."""
    m.serial.write(b"x")
    assert m.mmio_read(UART + FR) == TXFE


def test_narrow_reads_take_the_lanes_of_the_register_they_fall_in(m):
    """A byte or halfword read returns its lanes of the 32-bit register (UARTCR resets to 0x300, UARTIFLS to
    0x12): nothing of a neighbouring byte leaks in, and a read of the upper half is no guest error."""
    m.mmio_write(UART + IBRD, 0xBEEF)
    assert m.mmio_read(UART + CR, size=1) == 0x00
    assert m.mmio_read(UART + CR + 1, size=1) == 0x03
    assert m.mmio_read(UART + IFLS + 2, size=1) == 0
    assert m.mmio_read(UART + IBRD + 2, size=2) == 0
    assert m.stats()["guest_errors"] == 0


@pytest.mark.parametrize(("off", "size"), [(CR + 1, 1), (CR + 2, 2), (CR + 3, 1)])
def test_a_write_off_a_register_boundary_is_refused_as_misaligned(m, caplog, off, size):
    """Registers are written whole or by their low byte (DR): a write inside a register is refused as such, and
    the register keeps its value."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m.mmio_write(UART + off, 0xFF, size=size)
    assert f"bad {size}-byte write at offset {off:#x}" in caplog.text
    assert "unknown register" not in caplog.text
    assert m.mmio_read(UART + CR) == 0x300
    assert m.stats()["guest_errors"] == 1


def test_the_pl011_section_is_format_version_1_and_a_newer_one_is_refused(guest, tmp_path):
    """The pl011.0 section's layout is version 1 (snap_stream.c: the version follows the 32-byte name); a
    snapshot whose section claims a newer one is refused naming both."""
    from .test_snapshot import SECT_HDR, restore_error, sections

    snap = tmp_path / "u.snap"
    with vmmpy.Machine(guest("idle")) as mach:
        mach.boot_info()
        mach.snapshot(snap)
    data = bytearray(snap.read_bytes())
    ((off, _),) = [(o, n) for name, o, n in sections(data) if name == "pl011.0"]
    version_at = off - SECT_HDR + 4 + 32
    assert struct.unpack_from("<I", data, version_at)[0] == 1
    struct.pack_into("<I", data, version_at, 2)
    err = restore_error(tmp_path, bytes(data))
    assert "pl011.0" in str(err) and "format version 2 is newer than this libvmm reads (1)" in str(err)


@pytest.mark.vmmpy_no_artifacts  # the records of ~30 machines would be memory kept
def test_closing_a_machine_frees_its_uart():
    """A machine made and closed over and over leaves no memory behind: the PL011's state (~150 bytes, its
    lock and condition variable) goes with it."""
    from .conftest import heap_growth

    growth = heap_growth(lambda: vmmpy.Machine().close())
    if growth is None:
        pytest.skip("no glibc malloc statistics here (or ASan, whose leak checker covers this)")
    assert growth < 128, f"{growth:.0f} bytes kept per machine"  # a lost PL011 is a 160-byte chunk; noise 0-56
