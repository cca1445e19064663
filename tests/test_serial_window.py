"""Tier 2: serial output is kept in bounded buffers (issue 15, item 6).

libvmm keeps at most 64 MiB of unread output in a ring (the oldest is dropped in O(1), counted in
``stats()["serial_dropped"]``), and ``Serial`` keeps a window of the latest output (``serial_buffer=``,
16 MiB by default) with the bytes it let go counted in ``m.serial.dropped``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

import vmmpy

MIB = 1 << 20
CHUNK = MIB - 1  # bytes one SYS_WRITE0 prints (the semihosting host reads at most 1 MiB per call)


def _adr(rd: int, off: int) -> int:
    return 0x10000000 | ((off & 3) << 29) | (((off >> 2) & 0x7FFFF) << 5) | rd


def spam_guest(path, calls: int) -> str:
    """A raw guest: `calls` x CHUNK bytes of 'A' with semihosting SYS_WRITE0, then "END\\n", then power-off."""
    assert calls < 1 << 16
    end, msg = 48, 56
    insns = [
        0xD2800003 | (calls << 5),  # 0:  mov x3, #calls
        _adr(1, msg - 4),  # 4:  loop: adr x1, msg
        0xD2800080,  # 8:  mov x0, #4 (SYS_WRITE0)
        0xD45E0000,  # 12: hlt #0xf000
        0xF1000463,  # 16: subs x3, x3, #1
        0x54000001 | ((-4 & 0x7FFFF) << 5),  # 20: b.ne loop
        _adr(1, end - 24),  # 24: adr x1, end
        0xD2800080,  # 28: mov x0, #4
        0xD45E0000,  # 32: hlt #0xf000
        0x52800100,  # 36: mov w0, #8
        0x72B08000,  # 40: movk w0, #0x8400, lsl #16 (PSCI SYSTEM_OFF)
        0xD4000002,  # 44: hvc #0
    ]
    blob = b"".join(struct.pack("<I", i) for i in insns) + b"END\n\0\0\0\0" + b"A" * CHUNK + b"\0"
    with open(path, "wb") as f:
        f.write(blob)
    return str(path)


def test_libvmm_drops_unread_output_in_constant_time(tmp_path):
    """Nobody reads while the guest prints 80 MiB: the run stays fast, 64 MiB are kept, the rest counted."""
    calls = 80
    with vmmpy.Machine(spam_guest(tmp_path / "spam.bin", calls), kernel_format="raw") as m:
        t = time.monotonic()
        res = m.run(timeout=30)
        took = time.monotonic() - t
        assert res.ok, res
        assert took < 20, f"printing {calls} MiB with nobody reading took {took:.1f} s"
        total = calls * CHUNK + 4
        kept = 64 * MIB
        assert m.stats()["serial_dropped"] == total - kept
        data = m.serial.data  # what Serial keeps of the 64 MiB: its window
        assert data.endswith(b"A" * 1000 + b"END\n")
        assert len(data) == 16 * MIB and m.serial.dropped == kept - 16 * MIB


def test_serial_keeps_a_window_and_expect_still_works(tmp_path):
    calls = 6
    with vmmpy.Machine(spam_guest(tmp_path / "spam.bin", calls), kernel_format="raw", serial_buffer="1M") as m:
        assert m.serial.buffer_size == MIB
        m.serial.expect("END\n", timeout=30)
        assert m.wait(timeout=30).ok
        data = m.serial.data
        assert len(data) <= MIB and data.endswith(b"AEND\n")
        assert m.serial.dropped + len(data) == calls * CHUNK + 4
        assert m.serial.text == data.decode()
        out = m.serial.read()  # from where read() stood (0), only the window is left
        assert out == data.decode()
        assert m.serial.read() == ""
        with pytest.raises(vmmpy.SerialEOF):  # the match consumed everything
            m.serial.expect("A", timeout=1)


def test_serial_buffer_is_checked():
    with pytest.raises(vmmpy.InvalidArgument, match="serial_buffer"):
        vmmpy.Machine(serial_buffer=100)


@pytest.mark.skipif(
    bool(os.environ.get("VMMPY_EXPECT_SANITIZED")), reason="ASan's quarantine holds freed memory: RSS says nothing"
)
def test_cli_memory_stays_bounded_while_a_guest_prints(tmp_path):
    """The CLI streams 1200 MiB of output to stdout; its RSS stays far below that (it used to keep it all)."""
    spam = spam_guest(tmp_path / "spam.bin", 1200)
    p = subprocess.Popen(
        [sys.executable, "-m", "vmmpy", "run", spam, "--format", "raw", "--timeout", "120"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.returncode == 0, err
    rss_mib = usage.ru_maxrss / 1024
    # at most libvmm's 64 MiB ring (full when the reader lags), Python's 16 MiB window (x1.5) and the
    # interpreter, Unicorn and guest pages (~150 MiB): 141-194 MiB on a quiet host or beside six busy loops,
    # but 443 MiB once and 650 MiB once (streaming 800 MiB) on a 2-core host running CI and another test run
    # (not reproduced since; the cause is not known). Keeping the whole stream
    # needs 1200 MiB more than the baseline, so 850 MiB still tells the two apart.
    assert rss_mib < 850, f"the CLI grew to {rss_mib:.0f} MiB streaming 1200 MiB of output"
