"""Tier 2: bare-metal guests from guest/ on every available backend, each checking one feature over serial."""

from __future__ import annotations

import logging
import struct

import pytest

import vmmpy
from vmmpy import RunReason

from .conftest import RAM_BASE, SYSTEM_OFF, code

# soft-threaded: the threaded run loop with our GIC, timers and PSCI (the Hypervisor.framework combination)
# hvf: the Hypervisor.framework backend over the framework simulator (csrc/backend/hvfsim) on Linux
BACKENDS = ["soft", "soft-threaded", "hvf"]  # the KVM backend joins when it exists and /dev/kvm is present


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def run_guest(machine, path, backend, **kw):
    m = machine(path, backend=backend, **kw)
    res = m.run(timeout=60)
    return m, res


def test_hello(machine, guest, backend):
    m, res = run_guest(machine, guest("hello"), backend)
    assert res.ok, res
    lines = m.serial.text.replace("\r", "").splitlines()
    assert lines[0] == "Hello from vmmpy guest!"
    assert lines[1] == f"dtb=0x{m.boot_info().dtb_addr:x}"


def test_exceptions_and_mmu(machine, guest, backend, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, res = run_guest(machine, guest("exceptions"), backend)
    text = m.serial.text
    assert "ALL PASS" in text, text
    for name in ["svc at EL1", "udf at EL1", "brk at EL1", "MMU on", "data abort", "EL0 svc",
                 "EL0 reading an EL1 register is UNDEFINED", "unknown sysreg is UNDEFINED"]:  # fmt: skip
        assert f"PASS {name}\n" in text.replace("\r", "")
    assert res.ok
    # hvf: the hardware enters the guest's own exceptions; the VMM sees only those it injects
    assert m.stats()["exceptions"] >= (1 if backend == "hvf" else 10)
    # the unknown register is a logged guest error; the EL0 access to SCTLR_EL1 is not "unknown"
    assert "unknown system register S3_1_C15_C15_7: UNDEFINED" in caplog.text
    assert caplog.text.count("unknown system register") == 1


def test_psci_queries(machine, guest, backend):
    m, res = run_guest(machine, guest("psci"), backend)
    assert "psci version 1.1" in m.serial.text
    assert "ALL PASS" in m.serial.text and "FAIL" not in m.serial.text
    assert "smccc version 0x10001" in m.serial.text
    assert res.ok
    text = m.serial.text.replace("\r", "")
    if backend != "kvm":  # our PSCI (arm/psci.c): KVM's does not check the entry point
        assert "cpu_on(no such cpu) = -2\n" in text
        assert "cpu_on(misaligned entry) = -9\n" in text
        assert "cpu_on(entry outside RAM) = -9\n" in text
    assert "cpu_on(already on) = -4\n" in text


def test_psci_system_reset(machine, guest, backend):
    m, res = run_guest(machine, guest("psci_reset"), backend)
    assert res.reason == RunReason.RESET
    assert m.serial.text.endswith("resetting\r\n")


def test_unmapped_accesses(machine, guest, backend, caplog):
    caplog.set_level(logging.WARNING, logger="vmmpy")
    m, res = run_guest(machine, guest("badmmio"), backend)
    text = m.serial.text
    assert "unmapped read 0x0" in text  # the empty device window reads as zero
    assert "external abort ok esr=0x96000450" in text  # EC 0x25, FnV, WnR, DFSC 0x10
    assert "ALL PASS" in text and res.ok
    assert "unclaimed address 0xc000000" in caplog.text
    assert "4-byte read at unmapped address 0x100000000" in caplog.text
    assert "4-byte write at unmapped address 0x100000000" in caplog.text


def test_semihosting_exit_status(machine, guest, backend):
    m, res = run_guest(machine, guest("exit_code"), backend)
    assert res.reason == RunReason.POWEROFF and res.exit_status == 7 and not res.ok


def test_exception_without_vectors_is_a_guest_error(machine, raw_guest, backend):
    from .conftest import code

    # "svc #0" with VBAR_EL1 still 0: nothing executable there
    m = machine(raw_guest(code(0xD4000001)), kernel_format="raw", backend=backend)
    res = m.run(timeout=10)
    assert res.reason == RunReason.GUEST_ERROR
    assert "no executable vector table" in res.message
    assert "ESR 0x56000000" in res.message


def test_jump_outside_ram_is_an_abort_then_a_guest_error(machine, raw_guest, backend):
    from .conftest import code

    # br to 0x1_0000_0000 (above RAM) with no vectors: instruction abort, then no handler
    m = machine(
        raw_guest(code(0xD2C00021, 0xD61F0020)),  # mov x1, #0x100000000 ; br x1
        kernel_format="raw",
        backend=backend,
    )
    res = m.run(timeout=10)
    assert res.reason == RunReason.GUEST_ERROR
    assert "ESR 0x86000410" in res.message  # EC 0x21 instruction abort, FnV, external


def test_bench_guest_reports_every_measurement(machine, guest, backend):
    import re

    m, res = run_guest(machine, guest("bench_exits"), backend)
    assert res.ok
    names = re.findall(r"BENCH name=(\w+) iters=100000 ticks=(\d+) freq=(\d+)", m.serial.text)
    assert {n for n, _, _ in names} >= {"loop", "hvc", "mmio_write", "mmio_read", "sysreg_cntv_ctl"}
    assert all(int(t) > 0 and int(f) > 0 for _, t, f in names)
    assert m.stats()["hvc_exits"] >= 3 * 100000


def test_mmio_loads_extend_as_the_instruction_says(raw_guest, backend):
    """Byte loads from a device register whose value has its top bit set (PL011 UARTPCellID1 = 0xF0): LDRSB to a W
    register sign-extends to 32 bits and clears the upper half, to an X register to 64 bits, LDRB zero-extends (on
    hvf this is the data abort's SSE, SF and SAS at work, hvf_exits.c)."""
    blob = code(
        0xD2A12001, 0x913FD021,  # x1 = 0x09000ff4
        0x10000206,  # adr x6, results (RAM_BASE + 72)
        0x92800003, 0x92800004, 0x92800005,  # x3 = x4 = x5 = ~0
        0x39C00023, 0x39800024, 0x39400025,  # ldrsb w3, [x1]; ldrsb x4, [x1]; ldrb w5, [x1]
        0xF90000C3, 0xF90004C4, 0xF90008C5,  # str x3, [x6]; str x4, [x6, #8]; str x5, [x6, #16]
        *SYSTEM_OFF,
    )  # fmt: skip
    blob = blob.ljust(72, b"\0") + b"\xaa" * 24
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", backend=backend) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        got = struct.unpack("<QQQ", m.read_memory(RAM_BASE + 72, 24))
    assert got == (0xFFFF_FFF0, 0xFFFF_FFFF_FFFF_FFF0, 0xF0), [hex(v) for v in got]


@pytest.mark.parametrize("movk_w0", [0x72B08000, 0x72B88000], ids=["smc32", "smc64"])  # 0x8400 / 0xc400 << 16
def test_psci_affinity_info_reads_the_target_from_x1(raw_guest, backend, movk_w0):
    """AFFINITY_INFO (SMC32 and SMC64, DEN0022 §5.7): x1 = target affinity, x2 = lowest affinity level 0. On a 2-CPU
    machine CPU 0 asks about itself (ON = 0) and about CPU 1, never started (OFF = 1); the results go to RAM."""
    blob = code(
        0x10000206,  # adr x6, results
        0x52800080, movk_w0, 0xD2800001, 0xD2800002, 0xD4000002,  # AFFINITY_INFO(0, 0)
        0xF90000C0,  # str x0, [x6]
        0x52800080, movk_w0, 0xD2800021, 0xD2800002, 0xD4000002,  # AFFINITY_INFO(1, 0)
        0xF90004C0,  # str x0, [x6, #8]
        *SYSTEM_OFF,
    )  # fmt: skip
    blob = blob.ljust(64, b"\0") + b"\xff" * 16  # results: not yet written
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, backend=backend) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        on, off = struct.unpack("<QQ", m.read_memory(RAM_BASE + 64, 16))
    assert (on, off) == (0, 1)
