"""Snapshots (docs/snapshots.md) through the public API: save, restore, continue.

Tier 1-2: bare-metal guests. A deterministic run stopped at virtual time T, saved, restored and run on
prints exactly the bytes of the run that was never interrupted; a damaged or foreign file gives one
line of error, never a crash.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib

import pytest

import vmmpy
from vmmpy import errors
from vmmpy._ffi import ffi, lib

from .conftest import ROOT

HDR = 4096  # the section stream starts here
SECT_HDR = 4 + 32 + 4 + 8 + 4 + 4


def full_run(guest, name: str, cpus: int, inputs=()) -> bytes:
    with vmmpy.Machine(guest(name), cpus=cpus, deterministic=True) as m:
        for at, data in inputs:
            m.serial.write(data, at_ns=at)
        res = m.run(timeout=120)
        assert res.ok, res
        return m.serial.data


def saved_at(guest, name: str, cpus: int, t_ns: int, path, inputs=()) -> bytes:
    """Run to virtual time t_ns, save to path; returns the output so far."""
    with vmmpy.Machine(guest(name), cpus=cpus, deterministic=True) as m:
        for at, data in inputs:
            m.serial.write(data, at_ns=at)
        m.stop_at(t_ns)
        m.start()
        res = m.wait(60)
        assert res.reason == vmmpy.RunReason.STOPPED, res
        assert m.clock_ns == t_ns
        before = m.serial.data
        m.snapshot(path)
        return before


@pytest.mark.parametrize(
    ("name", "cpus", "t_ns"),
    # pmu: saved with the cycle counter counting (60 us) and after the overflow interrupt (69 us)
    [("smp", 4, 300_000), ("sgi", 2, 200_000), ("timer", 1, 200_000_000), ("pmu", 1, 60_000), ("pmu", 1, 69_000)],
)
def test_deterministic_continuation_is_byte_identical(guest, tmp_path, name, cpus, t_ns):
    snap = tmp_path / "s.snap"
    before = saved_at(guest, name, cpus, t_ns, snap)
    with vmmpy.Machine.restore(snap) as m:
        assert m.deterministic and m.clock_ns == t_ns  # guest time continues, not jumps
        res = m.run(timeout=120)
        assert res.ok, res
        after = m.serial.data
    assert before + after == full_run(guest, name, cpus)
    assert f"PASS {name}".encode() in after


def test_scheduled_input_after_the_snapshot(guest, tmp_path):
    """Input scheduled for after T travels in the snapshot and arrives at the same virtual time."""
    inputs = [(2_000_000, b"hi"), (3_000_000, b"!\t"), (50_000_000, b"q")]
    snap = tmp_path / "s.snap"
    before = saved_at(guest, "uart_irq", 1, 2_500_000, snap, inputs)
    with vmmpy.Machine.restore(snap) as m:
        res = m.run(timeout=60)
        assert res.ok, res
        after = m.serial.data
    assert before + after == full_run(guest, "uart_irq", 1, inputs)
    assert b"echo: 0x09" in after and b"PASS uart_irq" in after


@pytest.mark.parametrize("backend", ["soft", "soft-threaded"])
def test_real_time_clock_continues_from_the_saved_value(guest, tmp_path, backend):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("timer"), backend=backend) as m:
        m.start()
        m.serial.expect("TVAL one-shot", timeout=60)
        m.stop()
        saved = m.clock_ns
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as m:
        assert m.backend == backend
        now = m.clock_ns
        assert saved <= now < saved + 5_000_000_000  # not since the host's boot nor from zero
        res = m.run(timeout=60)
        assert res.ok, res
        assert b"PASS timer" in m.serial.data


def test_snapshot_needs_a_prepared_vm_that_is_not_running(guest, tmp_path):
    with vmmpy.Machine(guest("idle")) as m:
        with pytest.raises(errors.StateError, match="not prepared"):
            m.snapshot(tmp_path / "a.snap")
        m.start()
        m.serial.expect("idle", timeout=30)
        rc = m._call(lambda vm: lib.vmm_snapshot_save(vm, str(tmp_path / "b.snap").encode()))
        assert rc == lib.VMM_EBUSY
        assert not (tmp_path / "b.snap").exists()
        m.snapshot(tmp_path / "c.snap")  # Machine.snapshot stops a running machine first
        assert not m.running and (tmp_path / "c.snap").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]  # no temporary file is left


def test_snapshot_after_power_off_is_refused(guest, tmp_path):
    with vmmpy.Machine(guest("hello")) as m:
        assert m.run(timeout=30).ok
        with pytest.raises(errors.StateError, match="ended"):
            m.snapshot(tmp_path / "a.snap")


def test_restore_keeps_the_recorded_devices_and_overrides_paths(guest, tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * 4096)
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("idle"), disk=str(disk), rng=True, share=str(tmp_path)) as m:
        m.boot_info()  # prepared: snapshots need it
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as m:
        assert m.backend == "soft"
    with pytest.raises(errors.VmmError, match="nowhere.img") as e:
        vmmpy.Machine.restore(snap, disk=str(tmp_path / "nowhere.img"))
    assert "\n" not in str(e.value)
    with pytest.raises(errors.VmmError, match="nowhere-dir"):
        vmmpy.Machine.restore(snap, share=[str(tmp_path / "nowhere-dir")])


def test_restore_on_another_backend_is_refused(guest, tmp_path):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("hello")) as m:
        m.boot_info()
        m.snapshot(snap)
    with pytest.raises(errors.VmmError, match="made on the soft backend; it cannot be restored on kvm"):
        vmmpy.Machine.restore(snap, backend="kvm")


def test_restored_dtb_and_boot_info_are_the_saved_ones(guest, tmp_path):
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(guest("hello"), cpus=2, ram="64M") as m:
        info, dtb = m.boot_info(), m.dtb()
        m.snapshot(snap)
    with vmmpy.Machine.restore(snap) as m:
        assert m.boot_info() == info and m.dtb() == dtb
        assert m.run(timeout=30).ok
        assert b"Hello" in m.serial.data


def test_writer_version_matches_vmmpy():
    with open(os.path.join(ROOT, "csrc", "core", "snapshot.c")) as f:
        src = f.read()
    assert f'#define SNAP_WRITER "libvmm {vmmpy.__version__}"' in src


# ---- bad snapshots: one line each, never a crash -------------------------------------------------


@pytest.fixture(scope="module")
def good_snapshot(tmp_path_factory, guest):
    path = tmp_path_factory.mktemp("snap") / "good.snap"
    with vmmpy.Machine(guest("smp"), cpus=2, deterministic=True, rng=True) as m:
        m.stop_at(200_000)
        m.run(timeout=60)
        m.snapshot(path)
    return path.read_bytes()


def sections(data: bytes) -> list[tuple[str, int, int]]:
    """(name, payload offset, payload length) of every section of the stream."""
    stream_len = struct.unpack_from("<Q", data, 112)[0]
    out, at = [], HDR
    while at < HDR + stream_len:
        name = data[at + 4 : at + 36].rstrip(b"\0").decode()
        plen = struct.unpack_from("<Q", data, at + 40)[0]
        out.append((name, at + SECT_HDR, plen))
        at += SECT_HDR + plen
    return out


def fix_header_crc(b: bytearray) -> None:
    struct.pack_into("<I", b, 148, zlib.crc32(bytes(b[:148])))


def restore_error(tmp_path, data: bytes, **kw) -> errors.VmmError:
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    with pytest.raises(errors.VmmError) as e:
        vmmpy.Machine.restore(p, **kw).close()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)), msg
    return e.value


def test_the_good_snapshot_restores(tmp_path, good_snapshot):
    p = tmp_path / "ok.snap"
    p.write_bytes(good_snapshot)
    with vmmpy.Machine.restore(p) as m:
        assert m.run(timeout=60).ok
    names = [n for n, _, _ in sections(good_snapshot)]
    for want in ("machine", "boot", "clock", "irqchip", "vcpu.0", "vcpu.1", "console", "pl011.0"):
        assert want in names


def test_not_a_snapshot(tmp_path):
    for data in (b"", b"hello", os.urandom(10000), b"\x7fELF" + bytes(8000)):
        assert isinstance(restore_error(tmp_path, data), errors.FormatError)


def test_truncated(tmp_path, good_snapshot):
    n = len(good_snapshot)
    for cut in (100, 151, 152, 4096, 4200, n // 2, n - 4096, n - 1):
        e = restore_error(tmp_path, good_snapshot[:cut])
        assert isinstance(e, errors.FormatError), (cut, e)


def test_corrupt_byte_in_every_section(tmp_path, good_snapshot):
    for name, off, plen in sections(good_snapshot):
        for at in {off, off + plen // 2, off + plen - 1}:
            b = bytearray(good_snapshot)
            b[at] ^= 0x5A
            e = restore_error(tmp_path, bytes(b))
            assert isinstance(e, errors.FormatError) and name in str(e) and "checksum" in str(e), (name, e)


def test_corrupt_header_and_extent_list(tmp_path, good_snapshot):
    for at in (10, 60, 90, 140):  # header fields: the header's own checksum
        b = bytearray(good_snapshot)
        b[at] ^= 1
        assert "header is corrupt" in str(restore_error(tmp_path, bytes(b)))
    ext = struct.unpack_from("<Q", good_snapshot, 120)[0]
    b = bytearray(good_snapshot)
    b[ext + 3] ^= 1
    assert "extent list is corrupt" in str(restore_error(tmp_path, bytes(b)))


def test_wrong_format_version(tmp_path, good_snapshot):
    b = bytearray(good_snapshot)
    struct.pack_into("<I", b, 8, 99)
    fix_header_crc(b)
    e = restore_error(tmp_path, bytes(b))
    assert isinstance(e, errors.NotSupported) and "format version 99" in str(e)


def test_wrong_architecture(tmp_path, good_snapshot):
    b = bytearray(good_snapshot)
    b[48:64] = b"x86_64".ljust(16, b"\0")
    fix_header_crc(b)
    e = restore_error(tmp_path, bytes(b))
    assert isinstance(e, errors.ArchError) and "x86_64" in str(e)


def test_ram_beyond_the_end_of_the_file(tmp_path, good_snapshot):
    ext = struct.unpack_from("<Q", good_snapshot, 120)[0]
    n = struct.unpack_from("<I", good_snapshot, 100)[0]
    assert n >= 1
    b = bytearray(good_snapshot)
    struct.pack_into("<Q", b, ext + 16, len(good_snapshot) + (1 << 20))  # the first run's file offset
    struct.pack_into("<I", b, 144, zlib.crc32(bytes(b[ext : ext + 24 * n])))
    fix_header_crc(b)
    assert "beyond the end of the file" in str(restore_error(tmp_path, bytes(b)))
    b = bytearray(good_snapshot)
    struct.pack_into("<Q", b, 136, len(good_snapshot) + 4096)  # the header claims more than there is
    fix_header_crc(b)
    assert "truncated" in str(restore_error(tmp_path, bytes(b)))


def test_ram_outside_guest_ram(tmp_path, good_snapshot):
    ext = struct.unpack_from("<Q", good_snapshot, 120)[0]
    n = struct.unpack_from("<I", good_snapshot, 100)[0]
    b = bytearray(good_snapshot)
    struct.pack_into("<Q", b, ext + 8, 1 << 40)  # the first run's length
    struct.pack_into("<I", b, 144, zlib.crc32(bytes(b[ext : ext + 24 * n])))
    fix_header_crc(b)
    assert "not inside guest RAM" in str(restore_error(tmp_path, bytes(b)))


def test_a_vcpu_clock_lead_beyond_a_quantum_is_refused(tmp_path, good_snapshot):
    """A vCPU's section keeps its instruction count and quantum start: their difference is how far its
    clock leads the VM's (a block past a quantum's end, never a whole quantum of 100,000 ns). A file that
    claims more, or a quantum starting after the count, is refused naming the vCPU section."""
    ((off, plen),) = [(o, n) for name, o, n in sections(good_snapshot) if name == "vcpu.1"]
    at = off + 3 + 3 * 8 + 2 * (8 + 8 + 1)  # on, idle, reset_pending; entry, x0, mpidr; two timers
    insns, start = struct.unpack_from("<QQ", good_snapshot, at)
    assert insns > 100_000 and insns - start <= 100_000
    for bad, want in ((insns - 100_001, "clock leads the VM's by more than a quantum"), (insns + 1, "starts after")):
        b = bytearray(good_snapshot)
        struct.pack_into("<Q", b, at + 8, bad)
        struct.pack_into("<I", b, off - 8, zlib.crc32(bytes(b[off : off + plen])))
        e = restore_error(tmp_path, bytes(b))
        assert isinstance(e, errors.FormatError) and "vcpu.1" in str(e) and want in str(e), e


def test_a_vcpu_off_and_in_wfi_is_refused(tmp_path, good_snapshot):
    """No run leaves a vCPU off and in WFI (CPU_OFF clears WFI; creation leaves both clear), and CPU_ON
    relies on it: a file that claims it is refused naming the vCPU."""
    ((off, plen),) = [(o, n) for name, o, n in sections(good_snapshot) if name == "vcpu.1"]
    for on, idle, ok in ((0, 1, False), (0, 0, True), (1, 1, True)):
        b = bytearray(good_snapshot)
        b[off], b[off + 1] = on, idle
        struct.pack_into("<I", b, off - 8, zlib.crc32(bytes(b[off : off + plen])))
        p = tmp_path / "state.snap"
        p.write_bytes(bytes(b))
        if ok:
            vmmpy.Machine.restore(p).close()
        else:
            e = restore_error(tmp_path, bytes(b))
            assert isinstance(e, errors.FormatError) and "vcpu.1" in str(e) and "vCPU 1 is off and in WFI" in str(e), e


def test_a_directory_is_not_a_snapshot(tmp_path):
    with pytest.raises(errors.VmmError) as e:
        vmmpy.Machine.restore(tmp_path)
    assert "\n" not in str(e.value)


# ---- RAM sharing ------------------------------------------------------------------------------------


def pss_kib() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))


def measure_sharing(idle: str, tmp: str) -> tuple[int, int, int]:
    """PSS growth (KiB) of 10 VMs restored from one snapshot, 10 that wrote the same RAM, 10 without
    data. Run in a fresh process (test_restored_vms_share_ram_pages): in a long pytest process the
    allocator's reuse of earlier tests' memory moved the figures by tens of MiB."""
    import pathlib

    tmp_path = pathlib.Path(tmp)
    size = 16 << 20
    blob = (bytes(range(256)) * (size // 256))[:size]
    snap = tmp_path / "s.snap"
    with vmmpy.Machine(idle, ram="64M") as m:
        m.boot_info()
        m.write_memory(0x4100_0000, blob)
        m.snapshot(snap)

    def grow(make) -> int:
        before, ms = pss_kib(), []
        for _ in range(10):
            m = make()
            assert m.read_memory(0x4100_0000, size) == blob  # every page touched
            ms.append(m)
        after = pss_kib()
        for m in ms:
            m.close()
        return after - before

    def booted():
        m = vmmpy.Machine(idle, ram="64M")
        m.write_memory(0x4100_0000, blob)
        return m

    def empty():
        m = vmmpy.Machine(idle, ram="64M")
        m.read_memory(0x4100_0000, size)  # reads of untouched RAM allocate nothing
        return m

    base = grow_empty = 0
    restored = grow(lambda: vmmpy.Machine.restore(snap))
    fresh = grow(booted)
    before, ms = pss_kib(), [empty() for _ in range(10)]
    grow_empty = pss_kib() - before
    for m in ms:
        m.close()
    base = grow_empty  # the VMs themselves (engines, buffers), without guest data
    return restored, fresh, base


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PSS is Linux's /proc/self/smaps_rollup")
@pytest.mark.skipif(bool(os.environ.get("VMMPY_EXPECT_SANITIZED")), reason="ASan's shadow: PSS says nothing")
def test_restored_vms_share_ram_pages(guest, tmp_path):
    """10 VMs restored from one snapshot hold its RAM once (page cache, copy-on-write); 10 VMs that
    wrote the same RAM themselves hold it 10 times."""
    import subprocess

    args = f"{guest('idle')!r}, {str(tmp_path)!r}"
    code = f"from tests.test_snapshot import measure_sharing; print(*measure_sharing({args}))"
    p = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    restored, fresh, base = map(int, p.stdout.split()[-3:])
    print(f"PSS growth for 10 VMs (16 MiB of guest data each): restored {restored} KiB, written {fresh} KiB, "
          f"no data {base} KiB")  # fmt: skip
    assert fresh - base > 10 * 16 * 1024 * 0.8
    assert restored - base < (fresh - base) / 4


def test_cffi_binding_exists():
    assert hasattr(lib, "vmm_snapshot_save") and ffi.sizeof("struct vmm_restore_config") > 8
