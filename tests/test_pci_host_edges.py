"""Tier 1: edges of the PCIe host bridge (csrc/dev/pci_host.c) that tests/test_pci.py, tests/test_pci_regs.py
and tests/test_pci_edges.py leave open, through the public API: the shape of its device-tree node, the message of
an access no BAR decodes, INTx lines of functions on different SPIs, what the board logs about each function, the
host bridge's snapshot section (format version, function count) and its allocation failing."""

from __future__ import annotations

import logging
import os
import struct

import pytest

import vmmpy

from .pci_driver import MMIO_WINDOW, STATUS, STATUS_INTX, VirtioPCI, cfg_read, find_functions
from .test_pci import guest_errors

BLK = 0x1042
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


def fdt_tree(dtb: bytes) -> list[tuple[int, str]]:
    """(depth, name) of every node of the structure block, in order, checking that each node the block opens
    is closed, the root last, right before FDT_END (devicetree spec 0.4 §5.4)."""
    off_struct, size_struct = (struct.unpack_from(">I", dtb, o)[0] for o in (8, 36))
    at, end, depth, nodes = off_struct, off_struct + size_struct, 0, []
    while True:
        assert at < end, "the structure block ends without FDT_END"
        (tok,) = struct.unpack_from(">I", dtb, at)
        at += 4
        if tok == FDT_BEGIN_NODE:
            name = dtb[at : dtb.index(b"\0", at)]
            at = (at + len(name) + 1 + 3) & ~3
            depth += 1
            nodes.append((depth, name.decode()))
        elif tok == FDT_END_NODE:
            assert depth > 0, "FDT_END_NODE with no node open"
            depth -= 1
        elif tok == FDT_PROP:
            length, _ = struct.unpack_from(">II", dtb, at)
            at = (at + 8 + length + 3) & ~3
        elif tok == FDT_NOP:
            pass
        else:
            assert tok == FDT_END, f"token {tok} at {at - 4}"
            break
    assert depth == 0, f"{depth} node(s) left open at FDT_END"
    assert at == end
    return nodes


def test_device_tree_node_is_closed_and_a_child_of_the_root(machine, guest):
    """The pcie node (with its msi-map: the PCI transport brings the ITS) is closed where it ends: a child of the
    root, the root closed last. A node left open would make the root's end close it instead, and the blob end
    with the root still open."""
    m = machine(guest("hello"), transport="pci", rng=True)
    dtb = m.dtb()
    assert b"msi-map" in dtb
    nodes = fdt_tree(dtb)
    assert nodes[0] == (1, "") and (2, "pcie@10000000") in nodes


def test_accesses_nothing_decodes_are_guest_errors_that_say_read_or_write(machine, caplog):
    """The MMIO window with no BAR placed there: a read gives 0, a write is dropped, each a guest error that says
    which it was, how wide, and where."""
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m = machine(transport="pci", rng=True)
    errors = guest_errors(m)
    m.mmio_write(MMIO_WINDOW + 0x40, 0x1234_5678)
    assert "write of 4 bytes at 0x10000040: no BAR there" in caplog.text
    assert "read of" not in caplog.text
    assert m.mmio_read(MMIO_WINDOW + 0x80, 2) == 0
    assert "read of 2 bytes at 0x10000080: no BAR there" in caplog.text
    assert guest_errors(m) == errors + 2


def _blk_pair(machine, tmp_path):
    """A PCI machine with two virtio-blk functions at 00:01.0 and 00:02.0 (INTA# on INTIDs 36 and 37), their BARs
    placed apart, each with a ready queue 0 and INTx (no MSI-X)."""
    disks = []
    for name in ("a.img", "b.img"):
        p = tmp_path / name
        p.write_bytes(bytes(4096))
        disks.append(str(p))
    m = machine(transport="pci", disk=disks)
    assert [(s, d) for s, _, d in find_functions(m)] == [(0, 0x0008), (1, BLK), (2, BLK)]
    devs = []
    for slot in (1, 2):
        dev = VirtioPCI(m, slot)
        dev.place_bars(MMIO_WINDOW + (slot << 20))
        (q,) = dev.init(queues=1)
        devs.append((dev, q))
    return m, devs


def _raise_intx(dev: VirtioPCI, q) -> None:
    """A GET_ID request (virtio 1.2 §5.2.6): served at once, and its used buffer raises the function's INTA#."""
    q.add([struct.pack("<IIQ", 8, 0, 0)], [20, 1])
    q.notify()
    assert q.get_used()
    assert cfg_read(dev.m, dev.slot, STATUS, 2) & STATUS_INTX


@pytest.mark.parametrize("lowered", [0, 1])
def test_a_function_lowering_its_line_is_not_held_up_by_another_line(machine, tmp_path, lowered):
    """INTx lines are wired-OR among the functions that share one SPI (slots equal mod 4) only: with 00:01.0 on
    INTID 36 and 00:02.0 on INTID 37 both asserting, one function acknowledging its interrupt (reading its ISR)
    lowers its own SPI, whatever the other function's line does, above or below it."""
    m, devs = _blk_pair(machine, tmp_path)
    dev, q = devs[lowered]
    other, oq = devs[1 - lowered]
    assert (dev.intx_intid, other.intx_intid) == ((36, 37) if lowered == 0 else (37, 36))
    dev.enable_intx()  # only the line that is lowered reaches the CPU
    _raise_intx(other, oq)
    assert not m.irq_line(0)
    _raise_intx(dev, q)
    assert m.irq_line(0)
    assert dev.isr() == 1
    assert not m.irq_line(0)
    assert cfg_read(m, other.slot, STATUS, 2) & STATUS_INTX  # the other still asserts its own
    assert other.isr() == 1 and not m.irq_line(0)


def test_the_board_logs_each_function_with_its_slot_and_intx_line(machine, caplog):
    """At debug level each function added to bus 0 is named with its slot and INTA#'s INTID (slot s: 35 + s % 4)."""
    caplog.set_level(logging.DEBUG, logger="vmmpy")
    machine(transport="pci", disk=None, rng=True, gpu=True, log_level=logging.DEBUG)
    assert "virtio-pci on 00:01.0, INTA# = INTID 36" in caplog.text
    assert "virtio-pci on 00:02.0, INTA# = INTID 37" in caplog.text


def _host_section(machine, guest, tmp_path):
    from .test_snapshot import sections

    m = machine(guest("hello"), transport="pci", rng=True)
    m.dtb()
    m.snapshot(tmp_path / "s.snap")
    data = bytearray((tmp_path / "s.snap").read_bytes())
    ((off, plen),) = [(o, n) for name, o, n in sections(bytes(data)) if name.startswith("pci-host")]
    return data, off, plen


def test_host_bridge_section_is_format_version_1_and_a_newer_one_is_refused(machine, guest, tmp_path):
    """The pci-host section's header (magic, 32-byte name, version, length, CRC, reserved) says format version 1,
    the layout this libvmm writes and reads; a file whose section says 2 is from a newer libvmm and is refused
    naming both versions."""
    data, off, plen = _host_section(machine, guest, tmp_path)
    version_at = off - 20  # version, then the 8-byte length, the 4-byte CRC and 4 reserved bytes
    assert struct.unpack_from("<I", data, version_at)[0] == 1
    assert struct.unpack_from("<Q", data, version_at + 4)[0] == plen
    struct.pack_into("<I", data, version_at, 2)
    (tmp_path / "v.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match=r"format version 2 is newer than this libvmm reads \(1\)"):
        vmmpy.Machine.restore(tmp_path / "v.snap").close()


def test_snapshot_with_fewer_functions_than_the_bus_has_is_refused(machine, guest, tmp_path):
    """The function count must match both ways: a file that saved the bridge alone does not restore onto a bus with
    the bridge and an rng (test_pci.py covers a count above the bus's)."""
    from .test_snapshot_devices import with_section_crc

    data, off, plen = _host_section(machine, guest, tmp_path)
    assert struct.unpack_from("<I", data, off)[0] == 2
    struct.pack_into("<I", data, off, 1)
    with_section_crc(data, off, plen)
    (tmp_path / "bad.snap").write_bytes(data)
    with pytest.raises(vmmpy.errors.VmmError, match="1 PCI functions saved, this bus has 2"):
        vmmpy.Machine.restore(tmp_path / "bad.snap").close()


# The host bridge's one allocation failing: calloc of struct vmm_pci_host (its layout as in csrc/dev/pci_host.c).
FAIL_HOST_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "@ROOT@/csrc/dev/pci.h"
struct host_copy {
    void *vm;
    pthread_mutex_t lock;
    struct vmm_pci_func *slot[PCI_SLOTS];
    unsigned nslots;
    struct vmm_pci_func bridge;
};
extern void *__libc_calloc(size_t, size_t);
void *calloc(size_t n, size_t size)
{
    static int failed;
    Dl_info di;
    if (!failed && n == 1 && size == sizeof(struct host_copy) && dladdr(__builtin_return_address(0), &di) &&
        di.dli_fname && strstr(di.dli_fname, "_vmm")) {
        failed = 1;
        return NULL;
    }
    return __libc_calloc(n, size);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan owns malloc in that run")
def test_the_host_bridge_allocation_failing_is_enomem(tmp_path):
    """A PCI machine whose host bridge cannot be allocated is not created: ENOMEM, saying what ran out."""
    from .conftest import ROOT, run_with_shim

    script = (
        "from vmmpy._ffi import ffi, lib\n"
        "cfg = ffi.new('struct vmm_config *')\n"
        "cfg.size = ffi.sizeof('struct vmm_config')\n"
        "cfg.transport = lib.VMM_TRANSPORT_PCI\n"
        "out, err = ffi.new('vmm_vm **'), ffi.new('char[256]')\n"
        "print(lib.vmm_create(cfg, out, err, 256) == lib.VMM_ENOMEM, out[0] == ffi.NULL)\n"
        "print(ffi.string(err).decode())\n"
    )
    r = run_with_shim(tmp_path, FAIL_HOST_C.replace("@ROOT@", str(ROOT)), script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "True True" and "out of memory for the PCI host bridge" in lines[1], r.stdout
