"""The board (csrc/core/board.c): one way to add a device, its order, its limits and its hooks."""

from __future__ import annotations

import pytest

import vmmpy
from tests.test_virtio_gpu import Gpu
from tests.virtio_driver import find_devices
from vmmpy._ffi import ffi, lib

GPU, INPUT, RNG, DUMMY = 16, 18, 4, 0xFFF0


def test_devices_take_slots_in_the_order_they_are_added(tmp_path):
    with vmmpy.Machine(gpu=True, input=True, virtio_test_devices=1, rng=True, share=str(tmp_path)) as m:
        assert [dev for _, dev in find_devices(m)] == [GPU, INPUT, INPUT, DUMMY, RNG, 9]


def test_the_device_tree_lists_every_device_the_board_has(guest):
    fdt = pytest.importorskip("libfdt")
    with vmmpy.Machine(guest("hello"), rng=True, virtio_test_devices=2) as m:
        blob = fdt.Fdt(m.dtb())
        names = []
        node = blob.first_subnode(0)
        while True:
            names.append(blob.get_name(node))
            try:
                node = blob.next_subnode(node)
            except fdt.FdtException:
                break
        virtio = [n for n in names if n.startswith("virtio_mmio@")]
        assert virtio == ["virtio_mmio@a000000", "virtio_mmio@a000200", "virtio_mmio@a000400"]
        assert "pl011@9000000" in names
        chosen = blob.path_offset("/chosen")
        assert blob.getprop(chosen, "stdout-path").as_str() == "/pl011@9000000"


def _raw_vm():
    cfg = ffi.new("struct vmm_config *")
    cfg.size = ffi.sizeof("struct vmm_config")
    cfg.backend = keep = ffi.new("char[]", b"soft")
    out = ffi.new("vmm_vm **")
    assert lib.vmm_create(cfg, out, ffi.NULL, 0) == 0
    return out[0], keep


def test_one_gpu_and_one_input_pair_per_vm():
    vm, _keep = _raw_vm()
    try:
        assert lib.vmm_add_gpu(vm, ffi.NULL) == 0
        assert lib.vmm_add_gpu(vm, ffi.NULL) == lib.VMM_ESTATE
        assert b"already has a GPU" in ffi.string(lib.vmm_last_error(vm))
        assert lib.vmm_add_input(vm) == 0
        assert lib.vmm_add_input(vm) == lib.VMM_ESTATE
    finally:
        lib.vmm_destroy(vm)


def test_a_gpu_config_with_a_bad_size_field_is_refused():
    vm, _keep = _raw_vm()
    try:
        c = ffi.new("struct vmm_gpu_config *")
        c.size = 2  # shorter than the size field itself
        assert lib.vmm_add_gpu(vm, c) == lib.VMM_EINVAL
        c.size = ffi.sizeof("struct vmm_gpu_config")
        c.width, c.height = 640, 0
        assert lib.vmm_add_gpu(vm, c) == lib.VMM_EINVAL
        assert b"640x0" in ffi.string(lib.vmm_last_error(vm))
    finally:
        lib.vmm_destroy(vm)


def test_devices_cannot_join_a_prepared_vm(guest):
    with vmmpy.Machine(guest("hello")) as m:
        m.dtb()  # prepares the VM
        for add in (lib.vmm_add_rng, lib.vmm_add_input, lib.vmm_add_test_device):
            assert add(m._vm) == lib.VMM_ESTATE
            assert b"before the VM is prepared" in ffi.string(lib.vmm_last_error(m._vm))


def test_the_gpu_reports_its_host_memory_in_the_stats():
    with vmmpy.Machine(gpu=True, gpu_size=(640, 480)) as m:
        before = m.stats()["host_mem_bytes"]
        g = Gpu(m)
        g.create(1, 1024, 1024)
        after = m.stats()["host_mem_bytes"]
        assert after - before >= 1024 * 1024 * 4
