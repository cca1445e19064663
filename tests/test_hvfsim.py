"""Tier 1: the Hypervisor.framework simulator (csrc/backend/hvfsim) through its C API alone.

tests/hvfsim/probe.c runs single instructions on a fresh vCPU and prints what the simulated framework
reported. The expected syndromes are written from the Arm ARM (D17.2.37, ESR_EL2: ISS for a Data Abort,
for a trapped MSR/MRS, for HVC/SMC and WFx), not from the simulator's output: the hvf backend decodes
exactly these fields on a Mac, so a simulator that got one wrong would make hvf.c wrong there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest

from .conftest import ROOT


def _build_ffi():
    """The repository's vmmpy/_build_ffi.py (not the installed package's copy: test-portable runs this from
    build/portable, which has no include/ beside it)."""
    spec = importlib.util.spec_from_file_location("_vmmpy_build_ffi", os.path.join(ROOT, "vmmpy", "_build_ffi.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_bf = _build_ffi()
HVFSIM, unicorn_dir, unicorn_lib_name = _bf.HVFSIM, _bf.unicorn_dir, _bf.unicorn_lib_name

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")

HV_BAD_ARGUMENT = 0xFAE94003
HV_BUSY = 0xFAE94002
CANCELED, EXCEPTION, VTIMER_ACTIVATED = 0, 1, 2


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hvfsim") / "probe")
    lib = os.path.join(unicorn_dir(), "lib")
    srcs = [os.path.join(ROOT, "tests", "hvfsim", "probe.c")]
    srcs += sorted(os.path.join(HVFSIM, f) for f in os.listdir(HVFSIM) if f.endswith(".c"))
    srcs.append(os.path.join(ROOT, "csrc", "arm", "watchpoint.c"))  # its watchpoints' decoder, shared with soft
    srcs.append(os.path.join(ROOT, "csrc", "backend", "soft_syndrome.c"))  # the syndrome's place, likewise
    cmd = [CC, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{HVFSIM}", f"-I{unicorn_dir()}/include",
           *srcs, os.path.join(lib, unicorn_lib_name()), f"-Wl,-rpath,{lib}", "-lpthread", "-o", out]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)

    def run(*args: str) -> list[dict[str, int]]:
        p = subprocess.run([out, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = []
        for line in p.stdout.splitlines():
            row = {}
            for word in line.split():
                k, _, v = word.partition("=")
                row[k] = int(v, 0) if v else 0
            rows.append(row)
        return rows

    return run


def exit_of(probe, *insns: int) -> dict[str, int]:
    (row,) = probe("insn", *(f"{i:08x}" for i in insns))
    assert row["reason"] == EXCEPTION, row
    return row


def dabt(isv, sas=0, sse=0, srt=0, sf=0, ar=0, wnr=0):
    """The data-abort syndrome from a lower EL: EC 0x24, IL, and a stage-2 translation fault (DFSC 0b0001xx)."""
    iss = (isv << 24 | sas << 22 | sse << 21 | srt << 16 | sf << 15 | ar << 14 | wnr << 6) if isv else wnr << 6
    return 0x24 << 26 | 1 << 25 | iss


BASE = 0x0900_0000  # x1 in the probe: nothing is mapped there; x2 = 8
# (encoding from llvm-mc, assembly, expected syndrome without DFSC, expected address)
LDST = [
    (0x39400023, "ldrb w3, [x1]", dabt(1, 0, 0, 3, 0), BASE),
    (0x79400424, "ldrh w4, [x1, #2]", dabt(1, 1, 0, 4, 0), BASE + 2),
    (0xB9400425, "ldr w5, [x1, #4]", dabt(1, 2, 0, 5, 0), BASE + 4),
    (0xF9400426, "ldr x6, [x1, #8]", dabt(1, 3, 0, 6, 1), BASE + 8),
    (0x39C00027, "ldrsb w7, [x1]", dabt(1, 0, 1, 7, 0), BASE),
    (0x39800028, "ldrsb x8, [x1]", dabt(1, 0, 1, 8, 1), BASE),
    (0x79C00029, "ldrsh w9, [x1]", dabt(1, 1, 1, 9, 0), BASE),
    (0x7980002A, "ldrsh x10, [x1]", dabt(1, 1, 1, 10, 1), BASE),
    (0xB980002B, "ldrsw x11, [x1]", dabt(1, 2, 1, 11, 1), BASE),
    (0x3900002C, "strb w12, [x1]", dabt(1, 0, 0, 12, 0, wnr=1), BASE),
    (0x7900002D, "strh w13, [x1]", dabt(1, 1, 0, 13, 0, wnr=1), BASE),
    (0xB900002E, "str w14, [x1]", dabt(1, 2, 0, 14, 0, wnr=1), BASE),
    (0xF900002F, "str x15, [x1]", dabt(1, 3, 0, 15, 1, wnr=1), BASE),
    (0xF900003F, "str xzr, [x1]", dabt(1, 3, 0, 31, 1, wnr=1), BASE),
    (0xB85FC030, "ldur w16, [x1, #-4]", dabt(1, 2, 0, 16, 0), BASE - 4),
    (0xF8626831, "ldr x17, [x1, x2]", dabt(1, 3, 0, 17, 1), BASE + 8),
    (0xB8625832, "ldr w18, [x1, w2, uxtw #2]", dabt(1, 2, 0, 18, 0), BASE + 32),
    (0x88DFFC33, "ldar w19, [x1]", dabt(1, 2, 0, 19, 0, ar=1), BASE),
    (0xC89FFC34, "stlr x20, [x1]", dabt(1, 3, 0, 20, 1, ar=1, wnr=1), BASE),
    (0xF8400835, "ldtr x21, [x1]", dabt(1, 3, 0, 21, 1), BASE),
    # no syndrome the hypervisor could emulate from (ISV=0): pair, writeback, SIMD&FP, exclusive
    (0xA9401023, "ldp x3, x4, [x1]", dabt(0), BASE),
    (0xF8408423, "ldr x3, [x1], #8", dabt(0), BASE),
    (0xF8408C23, "ldr x3, [x1, #8]!", dabt(0), BASE + 8),
    (0x3DC00020, "ldr q0, [x1]", dabt(0), BASE),
    (0xC85F7C23, "ldxr x3, [x1]", dabt(0), BASE),
]


@pytest.mark.parametrize("insn,asm,esr,addr", LDST, ids=[a for _, a, _, _ in LDST])
def test_data_abort_syndrome(probe, insn, asm, esr, addr):
    row = exit_of(probe, insn)
    assert row["esr"] & ~0x3F == esr, f"{asm}: ESR 0x{row['esr']:x}, want 0x{esr:x} | DFSC"
    assert row["esr"] & 0x3C == 0x04, f"{asm}: DFSC 0x{row['esr'] & 0x3F:x} is not a translation fault"
    assert row["va"] == addr and row["pa"] == addr  # MMU off: the IPA is the address
    assert row["pc"] == 0  # at the instruction: the hypervisor emulates it and steps past


def sysreg_iss(op0, op1, crn, crm, op2, rt, read):
    return op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | int(read)


SYSREGS = [
    (0xD538CC05, "mrs x5, ICC_IAR1_EL1", sysreg_iss(3, 0, 12, 12, 0, 5, True)),
    (0xD518CC27, "msr ICC_EOIR1_EL1, x7", sysreg_iss(3, 0, 12, 12, 1, 7, False)),
    (0xD53BE029, "mrs x9, CNTPCT_EL0", sysreg_iss(3, 3, 14, 0, 1, 9, True)),
    (0xD51BE22A, "msr CNTP_CTL_EL0, x10", sysreg_iss(3, 3, 14, 2, 1, 10, False)),
]


@pytest.mark.parametrize("insn,asm,iss", SYSREGS, ids=[a for _, a, _ in SYSREGS])
def test_sysreg_trap_syndrome(probe, insn, asm, iss):
    row = exit_of(probe, insn)
    assert row["esr"] == 0x18 << 26 | 1 << 25 | iss, f"{asm}: 0x{row['esr']:x}"
    assert row["pc"] == 0  # trapped before it executes


def test_hvc_returns_past_the_call(probe):
    row = exit_of(probe, 0xD4024682)  # hvc #0x1234
    assert row["esr"] == 0x16 << 26 | 1 << 25 | 0x1234
    assert row["pc"] == 4  # the preferred return address of an HVC is the next instruction


def test_guest_watchpoint_enters_its_el1_without_an_exit(probe):
    # the hardware's watchpoints (Unicorn has none: the simulator's decoder, csrc/arm/watchpoint.c)
    (row,) = probe("watch")
    assert row["esr"] == 0x16 << 26 | 1 << 25 | 1, f"exit 0x{row['esr']:x}: not the vector's HVC #1"
    assert row["esr1"] == 0x35 << 26 | 1 << 25 | 1 << 6 | 0x22  # watchpoint, same EL, WnR, debug
    assert row["far"] == 0x1000 and row["elr"] == 6 * 4  # the address; ELR at the STR
    assert row["mem"] == 0  # the store was not made


def test_smc_traps_at_the_call(probe):
    row = exit_of(probe, 0xD4000AC3)  # smc #0x56
    assert row["esr"] == 0x17 << 26 | 1 << 25 | 0x56
    assert row["pc"] == 0  # trapped (HCR_EL2.TSC) before it executes: the hypervisor steps past


@pytest.mark.parametrize("insn,ti", [(0xD503207F, 0), (0xD503205F, 1)], ids=["wfi", "wfe"])
def test_wfx_traps_at_the_instruction(probe, insn, ti):
    row = exit_of(probe, insn)
    assert row["esr"] == 0x01 << 26 | 1 << 25 | ti
    assert row["pc"] == 0


def test_vtimer_exit_masks_it_until_cleared(probe):
    rows = probe("vtimer")
    assert rows[0] == {"first": 0, "reason": VTIMER_ACTIVATED, "masked": 1, "ctl": 5}  # ENABLE | ISTATUS
    assert rows[1]["reason"] == CANCELED  # masked: only hv_vcpus_exit ends the run, though still pending
    assert rows[2]["reason"] == VTIMER_ACTIVATED  # unmasked while pending: at once again
    assert rows[3]["reason"] == CANCELED  # CNTV_CTL.IMASK keeps the output low


def test_vcpu_belongs_to_its_thread_and_cancel_works_from_any(probe):
    rows = probe("threads")
    assert rows[0]["other_thread_get_reg"] == HV_BAD_ARGUMENT
    assert rows[1]["reason"] == CANCELED  # an exit requested before the run: the run returns at once
    assert rows[2]["reason"] == CANCELED


def test_one_vm_per_process_and_map_checks(probe):
    rows = {k: v for row in probe("vm") for k, v in row.items()}
    assert rows["second_vm"] == HV_BUSY
    assert rows["max"] >= rows["default"] == 36
    assert rows["map_beyond_ipa"] == rows["map_unaligned"] == rows["map_overlap"] == HV_BAD_ARGUMENT
    assert rows["destroy_with_vcpu"] == HV_BUSY and rows["destroy"] == 0
