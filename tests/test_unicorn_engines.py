"""The two Unicorn engines: our patched build (third_party/unicorn/) and the unicorn wheel's.

What the patch adds is tested on the library itself, through the unicorn Python binding pointed at it
(LIBUNICORN_PATH, in a child process): a kick from another thread never runs an access twice, the
engine's instruction count, and hooked MRS/MSR of registers QEMU lacks that go on without a PC write.
The fallback is tested by running guests on the wheel's library in a child process, and deterministic
mode by comparing the two engines byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vmmpy import _unicorn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_patched = pytest.mark.skipif(
    _unicorn.patched_lib() is None and os.environ.get("VMMPY_UNICORN") != "patched",
    reason="the patched Unicorn is not built (python tools/build_unicorn.py; `make test` builds it)",
)


def child(script: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run a Python script in a fresh process (the library is chosen once per process); its stdout."""
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


# The binding on the patched library, and its additions through ctypes.
PRELUDE = """
import ctypes, json, os, struct, threading
from unicorn import Uc, UC_ARCH_ARM64, UC_MODE_ARM, UC_HOOK_INTR, UC_HOOK_INSN
from unicorn.arm64_const import *
from vmmpy import _unicorn
lib = ctypes.CDLL(_unicorn.patched_lib())
lib.uc_vmmpy_features.restype = ctypes.c_uint32
h = lambda uc: uc._uch
def insns(uc):
    n = ctypes.c_uint64()
    assert lib.uc_vmmpy_insns(h(uc), ctypes.byref(n)) == 0
    return n.value
def asm(*words):
    return b"".join(struct.pack("<I", w) for w in words)
CODE, DATA = 0x10000, 0x100000
"""


def patched_env() -> dict[str, str]:
    return {"LIBUNICORN_PATH": os.path.dirname(_unicorn.patched_lib() or "")}


KICK_GUEST = """
N = 20000
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
uc.mem_map(CODE, 0x1000)
uc.mem_map(DATA, 0x100000)
MMIO = 0x200000
# a cyclic chain of 64 pointers in a device's registers, and a table of N words in RAM read in order
chain = [MMIO + 8 * ((i * 37 + 11) % 64) for i in range(64)]
reads = []
def mmio_read(uc, offset, size, data):  # Unicorn splits an 8-byte device read in two halves
    half = (offset % 8) // 4
    if half:
        reads.append(offset)
        if len(reads) % 7 == 0:
            KICK(h(uc))  # inside the access: the exit must wait for the next block
    return (chain[offset // 8] >> (32 * half)) & 0xFFFFFFFF
uc.mmio_map(MMIO, 0x1000, mmio_read, None, None, None)
table = [(i * 2654435761) % 2**32 for i in range(N)]
uc.mem_write(DATA, b"".join(struct.pack("<Q", t) for t in table))
code = asm(
    0xF9400021,  # loop: ldr x1, [x1]
    0x91000442,  # add x2, x2, #1
    0xF8408483,  # ldr x3, [x4], #8
    0x8B0300A5,  # add x5, x5, x3
    0xF2401CFF,  # tst x7, #0xff
    0x54000041,  # b.ne skip
    0xD4000001,  # svc #0 (every 256th pass)
    0xF10004E7,  # skip: subs x7, x7, #1
    0x54FFFF01,  # b.ne loop
    0xD503201F,  # nop (the end)
)
uc.mem_write(CODE, code)
end = CODE + 4 * 9
svcs = []
def on_intr(uc, intno, data):
    svcs.append(intno)
    uc.reg_write(UC_ARM64_REG_PC, uc.reg_read(UC_ARM64_REG_PC))  # a hook's PC write, as libvmm's
uc.hook_add(UC_HOOK_INTR, on_intr)
uc.reg_write(UC_ARM64_REG_X1, MMIO)
uc.reg_write(UC_ARM64_REG_X4, DATA)
uc.reg_write(UC_ARM64_REG_X7, N)
stop = threading.Event()
def kicker():  # not back to back: a kick pending at uc_emu_start ends it before its first block
    while not stop.wait(0.0002):
        KICK(h(uc))
t = threading.Thread(target=kicker)
t.start()
pc, entries = CODE, 0
while pc != end and entries < 10 * N:
    uc.emu_start(pc, end)
    pc = uc.reg_read(UC_ARM64_REG_PC)
    entries += 1
stop.set()
t.join()
x1 = MMIO
for _ in range(N):
    x1 = chain[(x1 - MMIO) // 8]
r = [uc.reg_read(x) for x in (UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X4, UC_ARM64_REG_X5)]
print(json.dumps({"got": r, "want": [x1, N, DATA + 8 * N, sum(table) % 2**64], "svcs": len(svcs), "reads": len(reads),
                  "entries": entries, "features": lib.uc_vmmpy_features()}))
"""


def kick_guest(kick: str) -> dict:
    out = child(PRELUDE + KICK_GUEST.replace("KICK(", kick + "("), patched_env())
    return json.loads(out.strip().splitlines()[-1])


@needs_patched
def test_a_kick_never_runs_an_access_twice():
    """Loads that overwrite their own base register (pointer chasing through a device's registers,
    post-index writeback) and an SVC whose hook writes PC, kicked from inside every 7th device read
    (where a stop is taken after the access and runs it again) and from another thread every 0.2 ms. Each
    kick ends uc_emu_start, which resumes where it stopped. A load run twice gives other
    values, and a stale PC after the hook's write (the skip_sync_pc_on_exit fix) repeats a block."""
    res = kick_guest("lib.uc_vmmpy_kick")
    assert res["features"] == 127
    assert res["got"] == res["want"]
    assert res["reads"] == 20000 and res["svcs"] == 20000 // 256
    assert res["entries"] >= 20000 // 7, res  # every kick from a read ended a run


@needs_patched
def test_the_kick_test_fails_with_unicorns_own_stop():
    """The test above can fail: uc_emu_stop in the same places runs accesses twice."""
    res = kick_guest("lib.uc_emu_stop")
    assert res["got"] != res["want"] or res["reads"] != 20000


@needs_patched
def test_the_engine_counts_the_instructions_of_the_blocks_entered():
    out = child(
        PRELUDE
        + """
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
uc.mem_map(CODE, 0x1000)
uc.mem_write(CODE, asm(
    0xD2800140,  # mov x0, #10
    0x91000421,  # loop: add x1, x1, #1
    0xF1000400,  # subs x0, x0, #1
    0x54FFFFC1,  # b.ne loop
    0xD503201F,  # nop
))
before = insns(uc)
uc.emu_start(CODE, CODE + 16)
print(json.dumps({"n": insns(uc) - before, "x1": uc.reg_read(UC_ARM64_REG_X1)}))
""",
        patched_env(),
    )
    res = json.loads(out.strip().splitlines()[-1])
    # the first block: mov + the loop body (4 instructions), then the loop's block 9 more times (3), and the
    # block at the until address, which Unicorn enters to stop (libvmm's runs have no until address)
    assert res == {"n": 4 + 9 * 3 + 1, "x1": 10}


@needs_patched
@pytest.mark.parametrize("on", [True, False])
def test_a_hooked_register_qemu_lacks_goes_on_without_a_pc_write(on):
    """ICC_PMR_EL1 is not in QEMU's CPU without its GIC. With sys_continue the hook's MRS/MSR complete
    and the block goes on; without it, Unicorn stops at the instruction and runs it again after the
    hook (the hook would have to write PC: libvmm's finish_lacked)."""
    out = child(
        PRELUDE
        + f"""
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
assert lib.uc_vmmpy_sys_continue(h(uc), {on}) == 0
uc.mem_map(CODE, 0x1000)
uc.mem_write(CODE, asm(
    0xD518460A,  # msr icc_pmr_el1, x10
    0xD538460B,  # mrs x11, icc_pmr_el1
    0x9100056C,  # add x12, x11, #1
    0xD503201F,  # nop
))
seen = []
def on_sys(uc, reg, cp, data):
    seen.append((reg, cp.val))
    if reg == UC_ARM64_REG_X11:
        uc.reg_write(reg, 0xF0)
    return 1
uc.hook_add(UC_HOOK_INSN, on_sys, None, 1, 0, UC_ARM64_INS_MRS)
uc.hook_add(UC_HOOK_INSN, on_sys, None, 1, 0, UC_ARM64_INS_MSR)
uc.reg_write(UC_ARM64_REG_X10, 0x80)
uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, as libvmm's guests run
uc.emu_start(CODE, CODE + 12, count=50)
print(json.dumps({{"x12": uc.reg_read(UC_ARM64_REG_X12), "hooks": len(seen), "pc": uc.reg_read(UC_ARM64_REG_PC)}}))
""",
        patched_env(),
    )
    res = json.loads(out.strip().splitlines()[-1])
    if on:
        assert res == {"x12": 0xF1, "hooks": 2, "pc": 0x10000 + 12}
    else:  # the MSR hook runs again and again: the instruction never completes
        assert res["x12"] == 0 and res["hooks"] > 2


@needs_patched
@pytest.mark.parametrize("sysres", [True, False])
def test_a_hooks_mrs_value_is_written_by_the_engine(sysres):
    """uc_vmmpy_sys_result: the engine writes the value to the MRS's destination when the hook returns
    nonzero (X11 and X30 here; nothing for XZR, nothing when the hook returns 0, nothing for an MSR), and
    uc_vmmpy_sys_el says the instruction's EL. Without the call the hook's uc_reg_write does it, as before."""
    out = child(
        PRELUDE
        + f"""
lib.uc_vmmpy_sys_el.restype = ctypes.c_uint
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
assert lib.uc_vmmpy_sys_continue(h(uc), True) == 0
uc.mem_map(CODE, 0x1000)
uc.mem_write(CODE, asm(
    0xD538460B,  # mrs x11, icc_pmr_el1
    0xD538461E,  # mrs x30, icc_pmr_el1
    0xD538461F,  # mrs xzr, icc_pmr_el1
    0xD53BE220,  # mrs x0, cntp_ctl_el0 (the hook returns 0: QEMU's own read)
    0xD518460A,  # msr icc_pmr_el1, x10
    0xD503201F,  # nop
))
seen = []
def on_sys(uc, reg, cp, data):
    seen.append((reg, lib.uc_vmmpy_sys_el(h(uc))))
    value = 0xA0 + len(seen)
    if cp.crn == 14:
        lib.uc_vmmpy_sys_result(h(uc), ctypes.c_uint64(0xDEAD))
        return 0
    if reg == UC_ARM64_REG_X10:  # the MSR: a result it is given is not written
        lib.uc_vmmpy_sys_result(h(uc), ctypes.c_uint64(0xBEEF))
        return 1
    if {sysres}:
        lib.uc_vmmpy_sys_result(h(uc), ctypes.c_uint64(value))
    elif reg != UC_ARM64_REG_XZR:
        uc.reg_write(reg, value)
    return 1
uc.hook_add(UC_HOOK_INSN, on_sys, None, 1, 0, UC_ARM64_INS_MRS)
uc.hook_add(UC_HOOK_INSN, on_sys, None, 1, 0, UC_ARM64_INS_MSR)
uc.reg_write(UC_ARM64_REG_X10, 0x80)
uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, as libvmm's guests run
uc.emu_start(CODE, CODE + 20, count=50)
r = [uc.reg_read(x) for x in (UC_ARM64_REG_X0, UC_ARM64_REG_X10, UC_ARM64_REG_X11, UC_ARM64_REG_X30)]
print(json.dumps({{"regs": r, "seen": seen}}))
""",
        patched_env(),
    )
    res = json.loads(out.strip().splitlines()[-1])
    assert res["regs"] == [0, 0x80, 0xA1, 0xA2]
    assert [el for _, el in res["seen"]] == [1] * 5


CALL_GUEST = """
U64P = ctypes.POINTER(ctypes.c_uint64)
CB = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, U64P, ctypes.c_void_p)
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
calls, intrs = [], []
@CB
def on_call(handle, excp, x, data):
    calls.append([excp] + [x[i] for i in range(4)])
    if x[0] == 0x84000000:  # served: new x0-x3
        for i in range(4):
            x[i] = 0x100 + i
        return 1
    return 0
assert lib.uc_vmmpy_call_hook(h(uc), on_call, None) == 0
def on_intr(uc, intno, data):
    intrs.append((intno, uc.reg_read(UC_ARM64_REG_PC)))
    if intno == 1:  # UNDEF, PC at the instruction: end there
        uc.reg_write(UC_ARM64_REG_PC, CODE + 20)
uc.hook_add(UC_HOOK_INTR, on_intr)
uc.mem_map(CODE, 0x1000)
uc.mem_write(CODE, asm(
    0xD4000002,  # hvc #0 (served)
    0x9100040C,  # add x12, x0, #1
    0xD2801000,  # mov x0, #0x80
    0xD4000022,  # hvc #1 (declined)
    0x9100040D,  # add x13, x0, #1
    0xD503201F,  # nop
))
X = [getattr(arm64_const, f"UC_ARM64_REG_X{i}") for i in range(18)]
for i, reg in enumerate(X):
    uc.reg_write(reg, 0x84000000 if i == 0 else 0x1000 + i)
uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, as libvmm's guests run
# SCR_EL3: NS, RW and HCE (HVC enabled) as libvmm sets it (soft_exc.c); without HCE, HVC is UNDEFINED
uc.reg_write(UC_ARM64_REG_CP_REG, (1, 1, 3, 6, 0, 0x401 | (0x100 if HCE else 0)))
pc, runs = CODE, 0
while pc != CODE + 20 and runs < 20:
    uc.emu_start(pc, CODE + 20, count=1 if STEP else 0)
    pc = uc.reg_read(UC_ARM64_REG_PC)
    runs += 1
print(json.dumps({"calls": calls, "intrs": intrs, "regs": [uc.reg_read(r) for r in X], "runs": runs,
                  "x12": uc.reg_read(UC_ARM64_REG_X12), "x13": uc.reg_read(UC_ARM64_REG_X13)}))
"""


def call_guest(step: bool, hce: bool = True) -> dict:
    script = PRELUDE + "from unicorn import arm64_const\n" + CALL_GUEST.replace("STEP", str(step))
    return json.loads(child(script.replace("HCE", str(hce)), patched_env()).strip().splitlines()[-1])


@needs_patched
@pytest.mark.parametrize("step", [False, True])
def test_an_hvc_is_served_in_the_block_by_the_call_hook(step):
    """uc_vmmpy_call_hook: the callback gets x0-x3 and its x0-x3 go back to the registers (x4 and up as they
    were), PC goes on past the call; a call it declines is the exception Unicorn raised before (UC_HOOK_INTR,
    EXCP_HVC 11, PC past the call). Unicorn's own stepping (count=1, one instruction a run) steps over it."""
    res = call_guest(step)
    assert res["calls"] == [[11, 0x84000000, 0x1001, 0x1002, 0x1003], [11, 0x80, 0x101, 0x102, 0x103]]
    assert res["x12"] == 0x101 and res["x13"] == 0x81
    assert res["intrs"] == [[11, 0x10000 + 16]]
    want = [0x80, 0x101, 0x102, 0x103] + [0x1000 + i for i in range(4, 18)]
    want[12], want[13] = 0x101, 0x81  # the adds'
    assert res["regs"] == want
    assert res["runs"] == (5 if step else 1)


@needs_patched
def test_qemus_checks_come_before_the_call_hook():
    """An HVC that QEMU's checks refuse (SCR_EL3.HCE clear) is UNDEFINED as before: no callback."""
    res = call_guest(False, hce=False)
    assert res["calls"] == [] and res["intrs"] == [[1, 0x10000]]


@needs_patched
def test_the_engine_reads_the_counter_from_the_embedders_clock():
    """uc_vmmpy_counter: CNTVCT_EL0 and CNTPCT_EL0 are (held ? held - 1 : CLOCK_MONOTONIC - base) / ns_per_tick,
    the two words read at each access (a debugger's hold, then a changed base); no MRS hook runs for them
    (CNTV_CTL_EL0's does); XZR takes nothing; EL0 gets the same as EL1 where CNTKCTL_EL1 allows it
    (EL0VCTEN, EL0PCTEN), and an UNDEF with x0 untouched where it does not (QEMU's gt_*_access check)."""
    out = child(
        PRELUDE
        + """
import time
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
held, base = ctypes.c_uint64(1 + 16 * 1000 + 15), ctypes.c_uint64(0)
assert lib.uc_vmmpy_counter(h(uc), ctypes.byref(held), ctypes.byref(base), 16) == 0
uc.mem_map(CODE, 0x1000)
uc.mem_write(CODE, asm(
    0xD53BE040,  # mrs x0, cntvct_el0
    0xD53BE021,  # mrs x1, cntpct_el0
    0xD53BE05F,  # mrs xzr, cntvct_el0
    0xD53BE322,  # mrs x2, cntv_ctl_el0 (hooked)
    0xD503201F,  # nop
))
hooked = []
def on_sys(uc, reg, cp, data):
    hooked.append((cp.crn, cp.crm, cp.op2))
    uc.reg_write(reg, 7)
    return 1
uc.hook_add(UC_HOOK_INSN, on_sys, None, 1, 0, UC_ARM64_INS_MRS)
out = {}
CNTKCTL = 14, 1, 3, 0, 0  # CRn, CRm, op0, op1, op2
for name, ps in (("el1", 0x3C5), ("el0", 0x0)):
    uc.reg_write(UC_ARM64_REG_PSTATE, ps)
    # EL0 may read both counters; a CP_REG write also rebuilds the cached translation flags, which a PSTATE
    # write alone leaves at the last EL (the EL0 pass would run EL1's translation)
    uc.reg_write(UC_ARM64_REG_CP_REG, (*CNTKCTL, 0b11))
    held.value = 1 + 16 * 1000 + 15
    uc.emu_start(CODE, CODE + 16)
    r = [uc.reg_read(x) for x in (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2)]
    held.value, base.value = 0, time.monotonic_ns() - 16 * 5000
    t0 = time.monotonic_ns()
    uc.emu_start(CODE, CODE + 4)
    t1 = time.monotonic_ns()
    out[name] = {"held": r, "live": [uc.reg_read(UC_ARM64_REG_X0), (t0 - base.value) // 16, (t1 - base.value) // 16]}
intrs = []
uc.hook_add(UC_HOOK_INTR, lambda uc, n, d: (intrs.append(n), uc.emu_stop()))
denied = []
for insn in (0xD53BE040, 0xD53BE020):  # mrs x0, cntvct_el0; mrs x0, cntpct_el0
    uc.mem_write(CODE, asm(insn, 0xD503201F))
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x0)
    uc.reg_write(UC_ARM64_REG_CP_REG, (*CNTKCTL, 0))
    uc.reg_write(UC_ARM64_REG_X0, 0x5A)
    uc.emu_start(CODE, CODE + 4)
    denied.append(uc.reg_read(UC_ARM64_REG_X0))
print(json.dumps({"out": out, "hooked": hooked, "denied": [denied, intrs]}))
""",
        patched_env(),
    )
    res = json.loads(out.strip().splitlines()[-1])
    for el in ("el1", "el0"):
        assert res["out"][el]["held"] == [1000, 1000, 7], res
        got, lo, hi = res["out"][el]["live"]
        assert lo <= got <= hi and lo >= 5000, res
    assert res["hooked"] == [[14, 3, 1], [14, 3, 1]]
    assert res["denied"] == [[0x5A, 0x5A], [1, 1]], res  # EXCP_UDEF, the register not written


SYS_FILTER_GUEST = """
def sysreg(read, op0, op1, crn, crm, op2, rt):  # MRS (L = 1) / MSR (register), Arm ARM C5.2
    return 0xD5000000 | read << 21 | op0 << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt
SP_EL0, TPIDR_EL1, CNTV_CTL = (3, 0, 4, 1, 0), (3, 0, 13, 0, 4), (3, 3, 14, 3, 1)
FILTER = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, *[ctypes.c_uint32] * 5, ctypes.c_bool)
asked = []
@FILTER
def only_tpidr(opaque, op0, op1, crn, crm, op2, isread):
    asked.append([op0, op1, crn, crm, op2, bool(isread)])
    return (op0, op1, crn, crm, op2) == TPIDR_EL1
out = {}
for filtered in (False, True):
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    if filtered:
        assert lib.uc_vmmpy_sys_filter(h(uc), only_tpidr, None) == 0
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(CODE, asm(
        sysreg(1, *SP_EL0, 0),     # mrs x0, sp_el0
        sysreg(1, *TPIDR_EL1, 1),  # mrs x1, tpidr_el1
        sysreg(0, *TPIDR_EL1, 2),  # msr tpidr_el1, x2
        sysreg(1, *CNTV_CTL, 3),   # mrs x3, cntv_ctl_el0
        sysreg(1, *TPIDR_EL1, 4),  # mrs x4, tpidr_el1
        0xD503201F,                # nop
    ))
    hooked = []
    def on_sys(uc, reg, cp, data):  # declines: QEMU performs every one
        hooked.append([data, cp.crn, cp.crm, cp.op2])
        return 0
    uc.hook_add(UC_HOOK_INSN, on_sys, "r", 1, 0, UC_ARM64_INS_MRS)
    uc.hook_add(UC_HOOK_INSN, on_sys, "w", 1, 0, UC_ARM64_INS_MSR)
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h
    uc.reg_write(UC_ARM64_REG_SP_EL0, 0x5E0)
    uc.reg_write(UC_ARM64_REG_TPIDR_EL1, 0x7D1)
    uc.reg_write(UC_ARM64_REG_X2, 0x7D2)
    uc.emu_start(CODE, CODE + 20)
    regs = [uc.reg_read(r) for r in (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X4)]
    uc.emu_start(CODE, CODE + 20)  # again: the same hooks (Unicorn retranslates the block holding `until`)
    out[str(filtered)] = {"hooked": hooked, "regs": regs}
out["asked"] = asked
print(json.dumps(out))
"""


@needs_patched
def test_the_sys_filter_decides_which_system_registers_reach_the_hook():
    """uc_vmmpy_sys_filter (vmmpy_sysfilter.patch): the MRS/MSR hook is called only for the encodings the
    filter accepts, asked when an instruction is translated (with the access's direction);
    the others are QEMU's alone and read and write the same values. Without a filter every one is hooked,
    as Unicorn does: the first half shows the test sees the difference."""
    res = json.loads(child(PRELUDE + SYS_FILTER_GUEST, patched_env()).strip().splitlines()[-1])
    tpidr_r, tpidr_w = ["r", 13, 0, 4], ["w", 13, 0, 4]
    assert res["False"]["hooked"] == [["r", 4, 1, 0], tpidr_r, tpidr_w, ["r", 14, 3, 1], tpidr_r] * 2, res
    assert res["True"]["hooked"] == [tpidr_r, tpidr_w, tpidr_r] * 2, res  # the second run's too
    for filtered in ("False", "True"):
        assert res[filtered]["regs"] == [0x5E0, 0x7D1, 0x7D2], res
    # asked at each translation of the instruction (one may be translated more than once)
    assert {tuple(a) for a in res["asked"]} == {
        (3, 0, 4, 1, 0, True), (3, 0, 13, 0, 4, True), (3, 0, 13, 0, 4, False), (3, 3, 14, 3, 1, True),
    }, res  # fmt: skip


MMIO_GUEST = """
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
uc.mem_map(CODE, 0x1000)
MMIO = 0x200000
calls = []
def mmio_read(uc, offset, size, data):
    calls.append(("r", offset, size))
    return 0x1122334455667788 + offset  # more than the access's bytes: the engine masks
def mmio_write(uc, offset, size, value, data):
    calls.append(("w", offset, size, value))
uc.mmio_map(MMIO, 0x1000, mmio_read, None, mmio_write, None)
if HOOKED:
    hooked = []
    uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, lambda uc, t, a, s, v, d: hooked.append((a, s)))
uc.mem_write(CODE, asm(
    0xB9401001,  # ldr w1, [x0, #16]
    0x39404002,  # ldrb w2, [x0, #16]
    0x79402003,  # ldrh w3, [x0, #16]
    0xF9401004,  # ldr x4, [x0, #32]
    0xB9800805,  # ldrsw x5, [x0, #8]
    0xB9002806,  # str w6, [x0, #40]
    0xF9001807,  # str x7, [x0, #48]
    0x39003806,  # strb w6, [x0, #14]
    0xD503201F,  # nop
))
uc.reg_write(UC_ARM64_REG_X0, MMIO)
uc.reg_write(UC_ARM64_REG_X6, 0xCAFEF00DBEEF0102)
uc.reg_write(UC_ARM64_REG_X7, 0x0123456789ABCDEF)
uc.emu_start(CODE, CODE + 32)
r = [uc.reg_read(getattr(arm64_const, f"UC_ARM64_REG_X{i}")) for i in range(1, 6)]
print(json.dumps({"regs": r, "calls": calls, "hooked": len(hooked) if HOOKED else None}))
"""


@needs_patched
@pytest.mark.parametrize("hooked", [False, True])
def test_device_accesses_reach_the_callback_once_as_unicorn_made_them(hooked):
    """The patch's MMIO fast path (no memory hook) and Unicorn's own path (with one) make the same callback
    calls: each access once, an 8-byte one as two 4-byte ones (low word first), values masked to the size."""
    out = child(
        PRELUDE
        + "from unicorn import arm64_const, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE\n"
        + MMIO_GUEST.replace("HOOKED", str(hooked)),
        patched_env(),
    )
    res = json.loads(out.strip().splitlines()[-1])
    base = 0x1122334455667788
    assert res["calls"] == [
        ["r", 16, 4],
        ["r", 16, 1],
        ["r", 16, 2],
        ["r", 32, 4],
        ["r", 36, 4],
        ["r", 8, 4],
        ["w", 40, 4, 0xBEEF0102],
        ["w", 48, 4, 0x89ABCDEF],
        ["w", 52, 4, 0x01234567],
        ["w", 14, 1, 0x02],
    ]

    def lo(off, n):
        return (base + off) & ((1 << (8 * n)) - 1)

    ldrsw = lo(8, 4) | (0xFFFFFFFF00000000 if lo(8, 4) & 0x80000000 else 0)
    assert res["regs"] == [lo(16, 4), lo(16, 1), lo(16, 2), lo(36, 4) << 32 | lo(32, 4), ldrsw]
    if hooked:  # Unicorn's path: its hooks see every access (an 8-byte one once)
        assert res["hooked"] == 8


# Code written through a second, non-executable mapping of its page (tb.patch). A write entry is filled
# without TLB_NOTDIRTY while its page holds no translation; the page's first translation must put the flag
# back on every entry that maps it, or a later store through the alias skips the self-modifying-code check.
ALIAS_GUEST = """
uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
PT, FN, ALIAS = 0x80000, 0x30000, 0x40000
uc.mem_map(0, 0x200000)
page = lambda pa, xn: pa | (1 << 10) | (3 << 8) | 3 | ((3 << 53) if xn else 0)  # AF, inner shareable, attr 0
uc.mem_write(PT, struct.pack("<Q", (PT + 0x1000) | 3))  # level 1 -> level 2
uc.mem_write(PT + 0x1000, struct.pack("<Q", (PT + 0x2000) | 3))  # level 2 -> level 3
for va, pa, xn in ((CODE, CODE, False), (FN, FN, False), (ALIAS, FN, True)):
    uc.mem_write(PT + 0x2000 + 8 * (va >> 12), struct.pack("<Q", page(pa, xn)))
uc.mem_write(FN, asm(0xD2800020, 0xD65F03C0))  # mov x0, #1; ret
code = asm(
    0xD518A20A, 0xD518204B, 0xD518200C, 0xD5033FDF,  # msr mair_el1, x10; msr tcr_el1, x11; msr ttbr0_el1, x12; isb
    0xD5381000, 0xB2400000, 0xD5181000, 0xD5033FDF,  # mrs x0, sctlr_el1; orr x0, x0, #1; msr sctlr_el1, x0; isb
    0xB90001CD,  # str w13, [x14]: a store through the alias before anything in the page is translated
    0xD63F01E0, 0xAA0003F4,  # blr x15 (translates the page); mov x20, x0
    0xB9000230,  # str w16, [x17]: the function's first instruction becomes mov x0, #2, through the alias
    0xD50B7B31, 0xD5033B9F, 0xD50B752F, 0xD5033B9F, 0xD5033FDF,  # dc cvau, x17; dsb ish; ic ivau, x15; dsb ish; isb
    0xD63F01E0, 0xAA0003F5,  # blr x15; mov x21, x0
    0xD503201F,  # nop (the end)
)
uc.mem_write(CODE, code)
tcr = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23)  # 39-bit VA, 4 KiB granule, write-back, TTBR1 walks off
regs = {UC_ARM64_REG_X10: 0xFF, UC_ARM64_REG_X11: tcr, UC_ARM64_REG_X12: PT, UC_ARM64_REG_X13: 0x5A5A5A5A,
        UC_ARM64_REG_X14: ALIAS + 0x100, UC_ARM64_REG_X15: FN, UC_ARM64_REG_X16: 0xD2800040, UC_ARM64_REG_X17: ALIAS}
for r, v in regs.items():
    uc.reg_write(r, v)
uc.cpr_write(3, 6, 1, 1, 0, (1 << 0) | (1 << 8) | (1 << 10))  # SCR_EL3: NS, HCE, RW (Unicorn resets it to 0)
uc.cpr_write(3, 4, 1, 1, 0, 1 << 31)  # HCR_EL2.RW: EL1 is AArch64, so its stage 1 walks the A64 tables
uc.emu_start(CODE, CODE + len(code) - 4)
print(json.dumps([uc.reg_read(UC_ARM64_REG_X20), uc.reg_read(UC_ARM64_REG_X21),
                  struct.unpack("<I", uc.mem_read(FN + 0x100, 4))[0]]))
"""


@needs_patched
def test_code_written_through_an_alias_runs_new():
    """The function runs once (1), is rewritten through a non-executable alias of its page with the cache
    maintenance the architecture asks for, and runs again: 2. QEMU's IC IVAU does nothing, so only the engine's
    self-modifying-code check sees the store. Unpatched Unicorn runs the old translation (1): the alias's entry
    lost its flag at the first store and only the executing address's entry got it back."""
    out = child(PRELUDE + ALIAS_GUEST, patched_env())
    assert json.loads(out.strip().splitlines()[-1]) == [1, 2, 0x5A5A5A5A]


def test_vmmpy_unicorn_selects_the_library(tmp_path):
    """VMMPY_UNICORN=wheel loads the wheel's library; a bad value or a missing patched build is one clear
    error, not a fallback the user did not ask for."""
    out = child("import vmmpy._ffi as f, sys; print(sys.modules['vmmpy._ffi'].UNICORN)", {"VMMPY_UNICORN": "wheel"})
    assert out.strip() == "wheel"
    p = subprocess.run(
        [sys.executable, "-c", "import vmmpy.machine"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, "VMMPY_UNICORN": "fast"},
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "VMMPY_UNICORN='fast': expected one of auto, wheel, patched" in p.stderr


def test_patched_build_key_follows_the_patch_files(tmp_path, monkeypatch):
    """A changed patch is a new build: the key hashes the version and every patch file."""
    (tmp_path / "a.patch").write_text("one")
    monkeypatch.setattr(_unicorn, "PATCH_DIR", str(tmp_path))
    k1 = _unicorn.key()
    (tmp_path / "a.patch").write_text("two")
    k2 = _unicorn.key()
    assert k1 != k2 and len(k1) == 16
    assert _unicorn.patched_lib() is None  # nothing is built for this key
    monkeypatch.setenv("VMMPY_UNICORN", "patched")
    with pytest.raises(ImportError, match="VMMPY_UNICORN=patched but the patched Unicorn is not built"):
        _unicorn.choose()


@needs_patched
def test_default_loads_the_patched_engine_when_built():
    out = child("import vmmpy.machine, sys; print(sys.modules['vmmpy._ffi'].UNICORN)", {"VMMPY_UNICORN": "auto"})
    assert out.strip() == "patched"


# A deterministic SMP guest with GIC system-register traffic, and real-time guests: the same bytes and
# instruction counts on both engines in deterministic mode (virtual time must not depend on the engine).
RUN_GUESTS = """
import json, os, sys
import vmmpy, vmmpy.machine
guest_path = lambda name: os.path.join("guest", "build", name + ".elf")
out = {"engine": sys.modules["vmmpy._ffi"].UNICORN}
for name, cpus in (("sgi", 2), ("smp", 4), ("timer", 1)):
    with vmmpy.Machine(guest_path(name), cpus=cpus, deterministic=True) as m:
        res = m.run(timeout=120)
        out[name] = [res.reason.name, m.serial.text, m.stats()["insns"], m.stats()["clock_ns"]]
from tests.guests import BY_ID, check, elf
for rid in ("timer-smp1", "prio-smp1", "spi-smp1", "sgi-smp2", "smp-smp2", "uart_irq", "hello", "exceptions", "psci",
            "badmmio"):
    run = BY_ID[rid]
    with vmmpy.Machine(elf(run), cpus=run.cpus) as m:
        if run.stdin:
            m.serial.write(run.stdin)
        res = m.run(timeout=run.timeout)
        out["rt_" + rid] = [res.reason.name, check(run, m.serial.text), m.stats()["insns"]]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_guests_on_both_engines_and_deterministic_mode_is_the_same_on_both():
    engines = ["wheel"] + (["patched"] if _unicorn.patched_lib() else [])
    runs = {e: json.loads(child(RUN_GUESTS, {"VMMPY_UNICORN": e}, 600).strip().splitlines()[-1]) for e in engines}
    for e, r in runs.items():
        assert r.pop("engine") == e
        for name in ("sgi", "smp", "timer"):
            assert r[name][0] == "POWEROFF" and f"PASS {name}" in r[name][1], (e, name, r[name][1][-500:])
        for name in [k for k in r if k.startswith("rt_")]:  # the guest table's checks, on this engine
            assert r[name][0] == "POWEROFF" and r[name][1] == [] and r[name][2] > 0, (e, name, r[name])
    if len(runs) == 2:
        for name in ("sgi", "smp", "timer"):
            assert runs["wheel"][name] == runs["patched"][name], name
