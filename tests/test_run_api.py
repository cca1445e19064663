"""Tier 1: vmm_run()'s, vmm_run_pending()'s and vmm_request_stop()'s C contract (run.c), through cffi.

The result struct is size-versioned: the caller's `size` says how much it has room for; vmm_run writes at most
that (and at most its own struct), sets `size` to what it wrote, and refuses a struct too small to hold `size`.
A run that ends in a guest or host error ends the VM, as a power-off does: only a stop or a timeout pauses it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

import pytest

import vmmpy
from vmmpy import RunReason
from vmmpy._ffi import ffi, lib

from .conftest import HVC0, MOVK_W0_8400, c_vm, code, wait_for_stat

RESULT = "struct vmm_run_result"


def c_stats(vm) -> dict[str, int]:
    st = ffi.new("struct vmm_stats *", {"size": ffi.sizeof("struct vmm_stats")})
    assert lib.vmm_get_stats(vm, st) == 0
    return {f: getattr(st, f) for f, _ in ffi.typeof("struct vmm_stats").fields}


def hello_vm(stack, guest):
    vm = stack.enter_context(c_vm())
    elf = Path(guest("hello")).read_bytes()
    assert lib.vmm_load_kernel_mem(vm, elf, len(elf), b"hello", ffi.NULL) == 0
    return vm


def test_null_arguments_and_a_result_too_small_for_its_size_are_einval(guest):
    with contextlib.ExitStack() as stack:
        vm = hello_vm(stack, guest)
        res = ffi.new(f"{RESULT} *", {"size": ffi.sizeof(RESULT)})
        assert lib.vmm_run(ffi.NULL, 0, res) == lib.VMM_EINVAL
        assert lib.vmm_run(vm, 0, ffi.NULL) == lib.VMM_EINVAL
        for size in (0, 1, 3):
            res.size = size
            assert lib.vmm_run(vm, 0, res) == lib.VMM_EINVAL, size
        assert lib.vmm_run_pending(ffi.NULL) == lib.VMM_EINVAL
        assert lib.vmm_request_stop(ffi.NULL) == lib.VMM_EINVAL


def test_a_result_of_only_its_size_field_is_filled_to_that(guest):
    with contextlib.ExitStack() as stack:
        vm = hello_vm(stack, guest)
        buf = ffi.new("uint8_t[64]", b"\xaa" * 64)
        res = ffi.cast(f"{RESULT} *", buf)
        res.size = 4
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert res.size == 4
        assert bytes(buf[4:64]) == b"\xaa" * 60  # nothing past the size field


def test_a_result_larger_than_ours_is_filled_to_ours_and_says_so(guest):
    """A newer caller's bigger struct: vmm_run writes its own fields only and sets size to their extent; the
    caller's newer fields are left as they were."""
    ours = ffi.sizeof(RESULT)
    with contextlib.ExitStack() as stack:
        vm = hello_vm(stack, guest)
        buf = ffi.new(f"uint8_t[{ours + 32}]", b"\xaa" * (ours + 32))
        res = ffi.cast(f"{RESULT} *", buf)
        res.size = ours + 32
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert res.size == ours and res.reason == lib.VMM_RUN_POWEROFF
        assert bytes(buf[ours : ours + 32]) == b"\xaa" * 32


def test_run_pending_is_0_and_a_stop_requested_before_the_run_is_honoured(guest):
    with contextlib.ExitStack() as stack:
        vm = hello_vm(stack, guest)
        assert lib.vmm_run_pending(vm) == 0
        assert lib.vmm_request_stop(vm) == 0
        res = ffi.new(f"{RESULT} *", {"size": ffi.sizeof(RESULT)})
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert res.reason == lib.VMM_RUN_STOPPED  # at once: the guest never printed
        assert lib.vmm_run(vm, 30 * 10**9, res) == 0
        assert res.reason == lib.VMM_RUN_POWEROFF  # the request was used up by the stopped run


MOV_W0_2 = 0x52800040  # mov w0, #2: PSCI CPU_OFF (0x84000002)


def test_a_run_ended_by_a_guest_error_ends_the_vm(raw_guest):
    """The only vCPU calls PSCI CPU_OFF: every vCPU is off, a guest error; the VM has ended, as after a
    power-off, and a further run is refused in one line."""
    with vmmpy.Machine(raw_guest(code(MOV_W0_2, MOVK_W0_8400, HVC0)), kernel_format="raw") as m:
        res = m.run(timeout=10)
        assert res.reason == RunReason.GUEST_ERROR, res
        with pytest.raises(vmmpy.StateError, match="has ended"):
            m.run(timeout=1)


def test_stop_at_is_0_in_deterministic_mode_einval_without_a_vm_and_estate_otherwise(guest):
    """vmm_stop_at's C contract: 0 when armed (the run then stops there), VMM_EINVAL for a NULL VM, and
    VMM_ESTATE with a one-line reason in real time, where no virtual time exists to stop at."""
    assert lib.vmm_stop_at(ffi.NULL, 1000) == lib.VMM_EINVAL
    with contextlib.ExitStack() as stack:
        vm = hello_vm(stack, guest)
        assert lib.vmm_stop_at(vm, 1000) == lib.VMM_ESTATE
        assert "needs deterministic mode" in ffi.string(lib.vmm_last_error(vm)).decode()
    with vmmpy.Machine(guest("idle_notick"), deterministic=True) as m:
        vm = m._enter()
        try:
            assert lib.vmm_stop_at(vm, 5_000_000) == 0
        finally:
            m._leave()
        res = m.run(timeout=30)
        assert res.reason == RunReason.STOPPED, res
        assert m.clock_ns == 5_000_000


def test_the_results_insns_add_up_every_vcpus_instructions(machine, guest):
    """vmm_run_result.insns is every vCPU's instruction count added up, as vmm_stats' `insns` is: `spin` on 2
    vCPUs in deterministic mode runs both for the whole of a 1 ms stop time, about 1,000,000 instructions each
    (one per ns). A sum of vCPU 0's alone would be half."""
    m = machine(guest("spin"), cpus=2, deterministic=True)
    m.stop_at(1_000_000)
    res = ffi.new(f"{RESULT} *", {"size": ffi.sizeof(RESULT)})
    assert lib.vmm_run(m._vm, 30 * 10**9, res) == 0
    assert res.reason == lib.VMM_RUN_STOPPED
    assert res.insns == m.stats()["insns"] and res.insns >= 1_900_000, res.insns


def test_a_run_started_without_run_pending_counts_as_running_for_readers(guest):
    """vmm_run marks the VM running itself (vmm_run_pending only announces it early): a reader on another thread
    that finds nothing new while the run goes on waits out its timeout (0) instead of being told end-of-stream,
    and is told so once the run has ended. idle_notick prints a line, then sleeps in WFI with no timer."""
    with contextlib.ExitStack() as stack:
        vm = stack.enter_context(c_vm())
        elf = Path(guest("idle_notick")).read_bytes()
        assert lib.vmm_load_kernel_mem(vm, elf, len(elf), b"idle_notick", ffi.NULL) == 0
        res = ffi.new(f"{RESULT} *", {"size": ffi.sizeof(RESULT)})
        runner = threading.Thread(target=lib.vmm_run, args=(vm, 30 * 10**9, res))
        runner.start()
        try:
            # the run has begun (it marks the VM running before it enters the guest)
            wait_for_stat(lambda: c_stats(vm), "vcpu_runs", 1)
            buf, got = ffi.new("char[256]"), b""
            while not re.search(rb"no timer\r?\n", got):  # the whole line: nothing of it left to read
                n = lib.vmm_console_read(vm, buf, 256, 10 * 10**9)
                assert n > 0, (n, got)
                got += ffi.buffer(buf, n)[:]
            assert lib.vmm_console_read(vm, buf, 256, 50_000_000) == 0  # running, nothing new: the timeout
        finally:
            assert lib.vmm_request_stop(vm) == 0
            runner.join()
        assert res.reason == lib.VMM_RUN_STOPPED
        assert lib.vmm_console_read(vm, buf, 256, 0) == lib.VMM_EEOF
