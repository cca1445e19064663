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


# PSCI's tests also run deterministic: the soft backend then takes an HVC/SMC as an exception (soft.c do_hvc,
# as with several vCPUs on one thread), reading only the argument registers the function has
# (vmm__psci_nargs), not through the engine's in-block call hook, which hands over x0-x3
PSCI_BACKENDS = [*BACKENDS, "deterministic"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def vm_kw(backend: str) -> dict:
    return dict(backend="soft", deterministic=True) if backend == "deterministic" else dict(backend=backend)


def run_guest(machine, path, backend, **kw):
    m = machine(path, **vm_kw(backend), **kw)
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


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_queries(machine, guest, backend, caplog):
    caplog.set_level(logging.DEBUG, logger="vmmpy")
    m, res = run_guest(machine, guest("psci"), backend, log_level=logging.DEBUG)
    assert "psci version 1.1" in m.serial.text
    assert "ALL PASS" in m.serial.text and "FAIL" not in m.serial.text
    assert "smccc version 0x10001" in m.serial.text
    assert res.ok
    text = m.serial.text.replace("\r", "")
    if backend != "kvm":  # our PSCI (arm/psci.c): KVM's does not check the entry point
        assert "cpu_on(no such cpu) = -2\n" in text
        assert "cpu_on(misaligned entry) = -9\n" in text
        assert "cpu_on(entry outside RAM) = -9\n" in text
        # a function we do not implement is answered NOT_SUPPORTED and logged by its ID, once per call (the
        # guest calls 0x8400ffff twice and 0xc400ffff once; features() of it is a question, answered unlogged)
        assert caplog.text.count("vCPU 0: unsupported function 0x8400ffff") == 2
        assert caplog.text.count("vCPU 0: unsupported function 0xc400ffff") == 1
    assert "cpu_on(already on) = -4\n" in text


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
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
@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_affinity_info_reads_the_target_from_x1(raw_guest, backend, movk_w0):
    """AFFINITY_INFO (SMC32 and SMC64, DEN0022 §5.7): x1 = target affinity, x2 = lowest affinity level 0. On a 2-CPU
    machine CPU 0 asks about itself (ON = 0) and about CPU 1, never started (OFF = 1), then about an MPIDR no
    vCPU has (5) and about itself at affinity level 1: both INVALID_PARAMETERS (-2, §5.7.2: levels above 0 are
    not reported, each vCPU being its own cluster). The results go to RAM."""
    blob = code(
        0x10000386,  # adr x6, results
        0x52800080, movk_w0, 0xD2800001, 0xD2800002, 0xD4000002,  # AFFINITY_INFO(0, 0)
        0xF90000C0,  # str x0, [x6]
        0x52800080, movk_w0, 0xD2800021, 0xD2800002, 0xD4000002,  # AFFINITY_INFO(1, 0)
        0xF90004C0,  # str x0, [x6, #8]
        0x52800080, movk_w0, 0xD28000A1, 0xD2800002, 0xD4000002,  # AFFINITY_INFO(5, 0)
        0xF90008C0,  # str x0, [x6, #16]
        0x52800080, movk_w0, 0xD2800001, 0xD2800022, 0xD4000002,  # AFFINITY_INFO(0, 1)
        0xF9000CC0,  # str x0, [x6, #24]
        *SYSTEM_OFF,
    )  # fmt: skip
    blob = blob.ljust(112, b"\0") + b"\xff" * 32  # results: not yet written
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, **vm_kw(backend)) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        got = struct.unpack("<4Q", m.read_memory(RAM_BASE + 112, 32))
    invalid = (1 << 64) - 2
    if backend == "kvm":  # KVM answers for itself: ON/OFF only
        got = got[:2]
    assert got == (0, 1, invalid, invalid)[: len(got)], [hex(v) for v in got]


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_an_mpidr_past_the_last_of_eight_vcpus_is_invalid(raw_guest, backend):
    """AFFINITY_INFO_64 and CPU_ON_64 for MPIDR 8 on the largest machine (8 vCPUs, MPIDRs 0-7):
    INVALID_PARAMETERS (-2) both. The lookup must stop at the last vCPU: a step further reads past the
    vCPU array, which the sanitizer build's bounds check (make test-asan) reports."""
    blob = code(
        0x10000306,  # adr x6, results (RAM_BASE + 0x60)
        0x52800080, 0x72B88000, 0xD2800101, 0xD2800002, 0xD4000002,  # AFFINITY_INFO_64(8, 0)
        0xF90000C0,  # str x0, [x6]
        0x52800060, 0x72B88000, 0xD2800101, 0x10000002, 0xD2800003,  # CPU_ON_64(8, here, 0)
        0xD4000002, 0xF90004C0,  # hvc #0; str x0, [x6, #8]
        *SYSTEM_OFF,
    )  # fmt: skip
    assert len(blob) <= 0x60
    blob = blob.ljust(0x60, b"\0") + b"\xff" * 16
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=8, **vm_kw(backend)) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        got = struct.unpack("<2Q", m.read_memory(RAM_BASE + 0x60, 16))
    assert got == ((1 << 64) - 2, (1 << 64) - 2), [hex(v) for v in got]


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_cpu_on_at_the_end_of_ram_is_an_invalid_address(raw_guest, backend):
    """CPU_ON_64 with the entry point at the first byte past RAM (256 MiB from 0x4000_0000): no instruction fits
    there, so INVALID_ADDRESS (-9, DEN0022 §5.6.2), and CPU 1 stays off."""
    blob = code(
        0x10000186,  # adr x6, result
        0x52800060, 0x72B88000, 0xD2800021, 0xD2AA0002, 0xD2800003,  # CPU_ON_64(1, 0x5000_0000, 0)
        0xD4000002, 0xF90000C0,  # hvc #0; str x0, [x6]
        *SYSTEM_OFF,
    )  # fmt: skip
    blob = blob.ljust(48, b"\0") + b"\xff" * 8
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, ram="256M", **vm_kw(backend)) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        (got,) = struct.unpack("<Q", m.read_memory(RAM_BASE + 48, 8))
    if backend != "kvm":  # KVM does not check the entry point
        assert got == (1 << 64) - 9, hex(got)


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_cpu_on_32_migrate_info_and_smccc_arch_features(raw_guest, backend, caplog):
    """CPU 0 of two asks MIGRATE_INFO_TYPE (2: no Trusted OS, DEN0022 §5.9), SMCCC_ARCH_FEATURES for
    SMCCC_ARCH_WORKAROUND_1 (NOT_SUPPORTED: no workarounds, DEN0028 §7.4), CPU_ON_64 with an entry point 1 byte
    off alignment (INVALID_ADDRESS, §5.6.2), then CPU_ON_32 with junk in the top halves of x1 and x3 (SMC32 reads
    w1..w3). CPU 1 stores its x0 (the 32-bit context id) and powers off once CPU 0 has stored its results."""
    caplog.set_level(logging.DEBUG, logger="vmmpy")
    blob = code(
        0x100004C6,  # adr x6, results
        0x528000C0, 0x72B08000, 0xD4000002, 0xF90000C0,  # MIGRATE_INFO_TYPE; str x0, [x6]
        0x52800020, 0x72B00000, 0x52900001, 0x72B00001,  # w0 = SMCCC_ARCH_FEATURES, w1 = 0x80008000
        0xD4000002, 0xF90004C0,  # hvc #0; str x0, [x6, #8]
        0x52800060, 0x72B88000, 0xD2800021, 0x10000222, 0x91000442,  # CPU_ON_64(1, secondary + 1)
        0xD4000002, 0xF90008C0,  # hvc #0; str x0, [x6, #16]
        0x52800060, 0x72B08000, 0xD2800021, 0xF2DFFFE1, 0x10000122,  # CPU_ON_32(0xffff_0000_0001, secondary,
        0xD28ACF03, 0xF2A24683, 0xF2DBD5A3,  # 0xdead_1234_5678)
        0xD4000002, 0xF9000CC0,  # hvc #0; str x0, [x6, #24]
        0x52800027, 0xB90028C7, 0x14000000,  # w7 = 1; str w7, [x6, #40] (go); b .
        # secondary (0x7c):
        0x100000E6, 0xF90010C0,  # adr x6, results; str x0, [x6, #32]
        0xB94028C7, 0x34FFFFE7,  # 1: ldr w7, [x6, #40]; cbz w7, 1b
        *SYSTEM_OFF,
    )  # fmt: skip
    assert len(blob) == 0x98
    blob += b"\xff" * 40 + b"\0" * 8  # results (0x98): 5 not-yet-written words, then the go flag
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, **vm_kw(backend), log_level=logging.DEBUG) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        got = struct.unpack("<5Q", m.read_memory(RAM_BASE + 0x98, 40))
    neg = lambda v: v & (1 << 64) - 1  # noqa: E731
    migrate, arch_features, misaligned, cpu_on, context = got
    assert migrate == 2
    if backend != "kvm":  # KVM answers for its own workarounds and does not check the entry point
        assert arch_features == neg(-1)
        assert misaligned == neg(-9)
        # answered without falling through to the unknown-function path (which logs it)
        assert "CPU_ON vCPU 1 at 0x4000007c" in caplog.text
        assert "unsupported function" not in caplog.text
    assert cpu_on == 0
    assert context == 0x1234_5678


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_cpu_on_64_passes_the_whole_64_bit_context_id(raw_guest, backend):
    """CPU_ON_64's context id (x3, DEN0022 §5.6) reaches the started CPU's x0 whole, all 64 bits of it:
    CPU 1 stores its x0 and powers off."""
    blob = code(
        0x52800060, 0x72B88000, 0xD2800021, 0x100000C2,  # w0 = CPU_ON_64, x1 = 1, adr x2, secondary
        0xD28ACF03, 0xF2A24683, 0xF2FFDDA3,  # x3 = 0xfeed_0000_1234_5678
        0xD4000002, 0x14000000,  # hvc #0; b .
        # secondary (0x24):
        0x100000A6, 0xF90000C0,  # adr x6, result; str x0, [x6]
        *SYSTEM_OFF,
    )  # fmt: skip
    assert len(blob) == 0x38
    blob += b"\xff" * 8  # result (0x38)
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", cpus=2, **vm_kw(backend)) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        (context,) = struct.unpack("<Q", m.read_memory(RAM_BASE + 0x38, 8))
    assert context == 0xFEED_0000_1234_5678, hex(context)


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_cpu_suspend_returns_success_in_x0_on_wake_up(raw_guest, backend):
    """CPU_SUSPEND (every power state taken as standby) waits like WFI and returns SUCCESS (0) in x0 (DEN0022
    §5.4): with SPI 40 already asserted (IRQs masked in PSTATE, so not taken) the wait ends at once, and the
    CPU stores its x0 and powers off."""
    from .test_gic import configure, unmask

    blob = code(
        0x52800020, 0x72B08000, 0xD2800001, 0xD4000002,  # CPU_SUSPEND(power state 0): hvc #0
        0x100000A6, 0xF90000C0,  # adr x6, result; str x0, [x6]
        *SYSTEM_OFF,
    )  # fmt: skip
    assert len(blob) == 0x24
    blob += b"\xff" * 8  # result (0x24)
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", **vm_kw(backend)) as m:
        configure(m, 40)
        unmask(m)
        m.irq_set(40, 1)
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        (x0,) = struct.unpack("<Q", m.read_memory(RAM_BASE + 0x24, 8))
    assert x0 == 0, hex(x0)


@pytest.mark.parametrize("backend", PSCI_BACKENDS)
def test_psci_cpu_on_accepts_an_entry_point_in_the_last_word_of_ram(raw_guest, backend):
    """CPU_ON checks that the 4 bytes of the entry instruction are RAM (DEN0022 §5.6.2 INVALID_ADDRESS otherwise),
    no more: on a 16 MiB machine CPU 0 writes `b second` to RAM's last word (0x40fffffc) and starts CPU 1 there.
    CPU 0 stores CPU_ON's result (and powers off itself if it failed); CPU 1 powers off once it is stored."""
    blob = code(
        0x100002A6, 0x18000268,  # adr x6, results; ldr w8, branch
        0xD2A81FE2, 0xF29FFF82, 0xB9000048,  # x2 = 0x40fffffc; str w8, [x2]
        0x52800060, 0x72B88000, 0xD2800021, 0xD2800003, 0xD4000002,  # CPU_ON_64(1, x2, 0)
        0xF90000C0, 0xB50000C0, 0x14000000,  # str x0, [x6]; cbnz x0, off; b .
        0x10000106, 0xF94000C9, 0xB100053F, 0x54FFFFC0,  # second (0x34): adr x6, results; until [x6] != -1
        *SYSTEM_OFF,  # off (0x44)
        0x17C0000E,  # branch: b 0x40000034 from 0x40fffffc
    )  # fmt: skip
    blob += b"\xff" * 8  # results (0x54)
    with vmmpy.Machine(raw_guest(blob), kernel_format="raw", ram="16M", cpus=2, **vm_kw(backend)) as m:
        assert m.run(timeout=30).reason == RunReason.POWEROFF
        (got,) = struct.unpack("<Q", m.read_memory(RAM_BASE + 0x54, 8))
    assert got == 0
