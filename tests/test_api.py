"""Tier 1: the public C API surface — error codes, header/binding agreement, configuration checks."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

import vmmpy
from vmmpy._ffi import ffi, lib

from .conftest import HOST_HAS_KVM, ROOT


def test_every_exported_function_is_bound():
    header = Path(ROOT, "include", "vmm.h").read_text()
    names = re.findall(r"VMM_EXPORT[^;]*?\b(vmm_\w+)\s*\(", header)
    assert len(names) >= 20
    for n in names:
        assert hasattr(lib, n), f"{n} is in vmm.h but not in the cffi bindings"


def test_error_names_and_texts_come_from_one_table():
    header = Path(ROOT, "include", "vmm.h").read_text()
    table = re.findall(r"XX\((\w+),\s*(-?\d+),\s*\"([^\"]+)\"\)", header)
    assert table
    for name, code, text in table:
        assert ffi.string(lib.vmm_err_name(int(code))).decode() == f"VMM_E{name}"
        assert ffi.string(lib.vmm_strerror(int(code))).decode() == text
        assert getattr(lib, f"VMM_E{name}") == int(code)
    assert ffi.string(lib.vmm_strerror(0)) == b"success"
    assert ffi.string(lib.vmm_strerror(-999)) == b"unknown error"


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"cpus": 9}, vmmpy.InvalidArgument, "at most 8"),
        ({"cpus": 0}, vmmpy.InvalidArgument, "at least 1"),
        ({"ram": "3M"}, vmmpy.InvalidArgument, "multiple of 2 MiB"),
        ({"ram": "256T"}, vmmpy.InvalidArgument, "multiple of 2 MiB between"),
        ({"ram": 0x1_0000_0000_0000}, vmmpy.InvalidArgument, "out of range"),  # an int is MiB
        ({"ram": "lots"}, vmmpy.InvalidArgument, "cannot parse size"),
        ({"backend": "warp"}, vmmpy.BackendUnavailable, "unknown backend 'warp'"),
        # on x86 the library has no KVM backend; on an arm64 host without /dev/kvm it cannot open it
        pytest.param(
            {"backend": "kvm"},
            vmmpy.BackendUnavailable,
            "not built" if os.uname().machine not in ("aarch64", "arm64") else "cannot open /dev/kvm",
            marks=pytest.mark.skipif(HOST_HAS_KVM, reason="this host has a working /dev/kvm"),
        ),
        ({"cpu_model": "cortex-x9"}, vmmpy.InvalidArgument, "unknown CPU model"),
    ],
)
def test_bad_configuration_is_refused_with_a_reason(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        vmmpy.Machine(**kwargs)


def test_cpu_models_come_from_libvmm_s_table():
    from vmmpy.machine import cpu_models

    names = cpu_models()
    assert names[0] == "cortex-a72" and set(names) == {"cortex-a72", "cortex-a57", "cortex-a53", "max"}
    assert lib.vmm_cpu_model_name(len(names)) == ffi.NULL and lib.vmm_cpu_model_name(2**32 - 1) == ffi.NULL
    with pytest.raises(vmmpy.InvalidArgument) as e:
        vmmpy.Machine(cpu_model="cortex-x9")
    assert str(e.value) == f"unknown CPU model 'cortex-x9' ({', '.join(names)})"
    for name in names:
        with vmmpy.Machine(cpu_model=name) as m:
            assert m.backend == "soft"


def test_create_defaults_and_backend_name():
    with vmmpy.Machine() as m:
        assert m.backend == "soft"  # the suite's VMMPY_BACKEND (conftest.py)
    with vmmpy.Machine(backend="auto") as m:
        assert m.backend == ("kvm" if HOST_HAS_KVM else "soft")
    with vmmpy.Machine(backend="auto", deterministic=True) as m:
        assert m.backend == "soft"  # deterministic mode counts instructions: only soft can


def test_size_parsing():
    assert vmmpy.parse_size("256M") == 256 << 20
    assert vmmpy.parse_size("1G") == 1 << 30
    assert vmmpy.parse_size("512MiB") == 512 << 20
    assert vmmpy.parse_size(4096) == 4096


def test_run_without_kernel_is_a_state_error():
    with vmmpy.Machine() as m, pytest.raises(vmmpy.StateError, match="no kernel loaded"):
        m.run(timeout=1)


def test_sanitized_build_is_in_use_when_expected():
    # tools/asan.sh sets this; it proves the ASan run does not silently test the normal build
    if os.environ.get("VMMPY_EXPECT_SANITIZED") != "1":
        pytest.skip("not the sanitizer run")
    import vmmpy._vmm as ext

    assert "build/asan" in ext.__file__


# -- failure contracts of the public API that nothing else exercises --------------------------------


def test_load_kernel_mem_boots_an_image_from_memory(guest):
    """vmm_load_kernel_mem: the same loader as a file (auto-detected ELF), named in messages; bad bytes
    are refused with that name."""
    from .conftest import SYSTEM_OFF, c_vm, code

    with c_vm() as vm:
        junk = b"not a kernel at all" * 4
        assert lib.vmm_load_kernel_mem(vm, junk, len(junk), b"junk.bin", ffi.NULL) == lib.VMM_EFORMAT
        assert ffi.string(lib.vmm_last_error(vm)).decode().startswith("junk.bin: ")
        elf = Path(guest("hello")).read_bytes()
        assert lib.vmm_load_kernel_mem(vm, elf, len(elf), b"hello (in memory)", ffi.NULL) == 0
        res = ffi.new("struct vmm_run_result *", {"size": ffi.sizeof("struct vmm_run_result")})
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert res.reason == lib.VMM_RUN_POWEROFF, res.reason
        buf = ffi.new("char[4096]")
        n = lib.vmm_console_read(vm, buf, 4096, 0)
        assert n > 0 and b"Hello from vmmpy guest!" in ffi.buffer(buf, n)[:]
        # raw: format, load address and entry from the options
        raw = code(*SYSTEM_OFF)
        with c_vm() as vm2:
            opts = ffi.new(
                "struct vmm_kernel_opts *",
                {"size": ffi.sizeof("struct vmm_kernel_opts"), "format": lib.VMM_KERNEL_RAW, "load_addr": 0x4008_0000},
            )
            assert lib.vmm_load_kernel_mem(vm2, raw, len(raw), b"raw", opts) == 0
            assert lib.vmm_run(vm2, 30 * 10**9, res) == 0 and res.reason == lib.VMM_RUN_POWEROFF
            assert res.pc == 0x4008_0000 + len(raw)  # it ran there: stopped after its HVC


def test_a_second_start_is_busy_and_wait_bounds_hold(guest):
    with vmmpy.Machine(guest("idle_notick")) as m:
        m.start(timeout=30)
        with pytest.raises(vmmpy.Busy, match="already running"):
            m.start(timeout=30)
        t = time.monotonic()
        with pytest.raises(vmmpy.SerialTimeout, match=r"no match for b'never' within 0.3 s"):
            m.serial.expect("never", timeout=0.3)
        assert time.monotonic() - t < 3  # its bound, with room for a loaded host
        m.stop()
    with vmmpy.Machine(guest("hello")) as m:
        t = time.monotonic()
        with pytest.raises(vmmpy.SerialEOF, match=r"the VM ended \(POWEROFF\) before b'never' appeared"):
            m.serial.expect("never", timeout=30)  # the guest powers off first: at once, not after 30 s
        assert time.monotonic() - t < 10


def test_vmm_run_on_a_running_vm_is_ebusy_and_leaves_it_usable(guest):
    """The C API's own check (Machine.start refuses first in Python): vmm_run on a VM another thread runs
    returns VMM_EBUSY with its message, and the VM can still be stopped and waited for (nothing is left
    locked: a stop from a helper thread must finish within its generous bound)."""
    with vmmpy.Machine(guest("idle_notick")) as m:
        m.start(timeout=30)
        m.serial.expect("idle: ready, no timer", timeout=20)  # vmm_run is under way on the Machine's thread
        res = ffi.new("struct vmm_run_result *", {"size": ffi.sizeof("struct vmm_run_result")})
        assert m._checked(lib.vmm_run, 10**9, res, allow=(lib.VMM_EBUSY,)) == lib.VMM_EBUSY
        assert "already running" in ffi.string(lib.vmm_last_error(m._vm)).decode()
        stopper = threading.Thread(target=lambda: (m.stop(), m.wait(10)), daemon=True)
        stopper.start()
        stopper.join(20)
        assert not stopper.is_alive(), "stop() did not return: the VM lock was left held"
        assert (m.result.reason, m.result.exit_status) == (vmmpy.RunReason.STOPPED, 0)
