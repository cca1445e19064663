"""Shared fixtures: built guests, small raw programs, and ELF/Image builders for loader tests."""

from __future__ import annotations

import contextlib
import os
import struct

import pytest

# the source tree (tools/asan.sh runs a copy of the tests from build/asan/)
ROOT = os.environ.get("VMMPY_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_DIR = os.path.join(ROOT, "guest", "build")
RAM_BASE = 0x4000_0000
UART = 0x0900_0000

# The CLI opens a live window when a display exists and the guest has a GPU; the suite's CLI runs
# must behave the same on a developer's desktop as in CI (tests/test_window.py starts its own Xvfb).
for _var in ("DISPLAY", "WAYLAND_DISPLAY"):
    os.environ.pop(_var, None)

# The suite tests the soft backend's models (GIC, timer, sysregs, deterministic mode): machines created
# without backend= use it even on an arm64 host with KVM (where `auto` would pick KVM), unless the run
# says otherwise (VMMPY_BACKEND=...). KVM runs the guest table on such hosts: tests/test_irq_guests.py.
os.environ.setdefault("VMMPY_BACKEND", "soft")
HOST_HAS_KVM = os.uname().machine in ("aarch64", "arm64") and os.access("/dev/kvm", os.R_OK | os.W_OK)

# a few A64 instructions for hand-made raw guests
WFI = 0xD503207F
B_SELF = 0x14000000  # b .


def b_back(n: int) -> int:
    """b -n instructions"""
    return 0x14000000 | ((-n) & 0x3FFFFFF)


def code(*insns: int) -> bytes:
    return b"".join(struct.pack("<I", i) for i in insns)


# Each test runs under an address-space cap (RLIMIT_AS) of what the process maps when it starts plus
# this headroom, so that an overflow in a size computation fails the test with ENOMEM instead of
# reserving (and maybe touching) many GiB of the CI host. Measured here: a vCPU's Unicorn engine maps
# ~1.1 GiB (its translation buffer), an 8-vCPU 1 GiB VM 9.3 GiB. VMMPY_TEST_AS_HEADROOM_GIB=0 turns it
# off; ASan runs (VMMPY_EXPECT_SANITIZED) skip it, as ASan reserves terabytes of shadow memory.
AS_HEADROOM = int(float(os.environ.get("VMMPY_TEST_AS_HEADROOM_GIB", "12")) * (1 << 30))


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(autouse=True)
def _address_space_cap():
    import resource

    if AS_HEADROOM <= 0 or os.environ.get("VMMPY_EXPECT_SANITIZED") or not os.path.exists("/proc/self/status"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped_bytes() + AS_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def c_vm():
    """A VM made with the C API's defaults (vmm_create), destroyed on exit: for tests of calls the Python
    Machine makes for you."""
    from vmmpy._ffi import ffi, lib

    cfg = ffi.new("struct vmm_config *", {"size": ffi.sizeof("struct vmm_config"), "backend": ffi.NULL})
    out = ffi.new("vmm_vm **")
    err = ffi.new("char[256]")
    assert lib.vmm_create(cfg, out, err, 256) == 0, ffi.string(err)
    try:
        yield out[0]
    finally:
        lib.vmm_destroy(out[0])


@pytest.fixture
def machine(vmmpy_machine):
    """The suite's short name for the plugin's vmmpy_machine factory (the plugin itself only registers
    namespaced names; a project may alias it like this in its own conftest.py)."""
    return vmmpy_machine


@pytest.fixture(scope="session")
def guest():
    """guest('hello') -> path of guest/build/hello.elf (built by `make guests`)."""

    def path(name: str) -> str:
        p = os.path.join(GUEST_DIR, f"{name}.elf")
        if not os.path.exists(p):
            pytest.fail(f"{p} is missing: run `make guests` (make test does it)")
        return p

    return path


@pytest.fixture
def raw_guest(tmp_path):
    """raw_guest(bytes) -> path of a flat binary to load with format='raw' at RAM_BASE."""

    def make(blob: bytes, name: str = "raw.bin") -> str:
        p = tmp_path / name
        p.write_bytes(blob)
        return str(p)

    return make


def make_elf(
    segments: list[tuple[int, bytes, int]],
    entry: int,
    *,
    machine: int = 183,
    cls: int = 2,
    data: int = 1,
    etype: int = 2,
) -> bytes:
    """A minimal ELF64 with one PT_LOAD per (paddr, bytes, memsz) segment; vaddr == paddr."""
    ehsize, phentsize = 64, 56
    phoff = ehsize
    off = phoff + phentsize * len(segments)
    phdrs, blobs = b"", b""
    for paddr, blob, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off + len(blobs), paddr, paddr, len(blob), memsz, 0x1000)
        blobs += blob
    ident = b"\x7fELF" + bytes([cls, data, 1, 0]) + b"\0" * 8
    eh = ident + struct.pack(
        "<HHIQQQIHHHHHH", etype, machine, 1, entry, phoff, 0, 0, ehsize, phentsize, len(segments), 64, 0, 0
    )
    return eh + phdrs + blobs


def make_image(body: bytes, *, text_offset: int = 0, image_size: int | None = None, flags: int = 0, mz=True) -> bytes:
    """A synthetic arm64 Image: 64-byte header + body (code0 is an 'MZ' EFI stub if mz)."""
    code0 = 0xFA405A4D if mz else 0x14000010  # "MZ@\xfa"  /  b +0x40
    size = image_size if image_size is not None else 64 + len(body)
    hdr = struct.pack("<IIQQQQQQII", code0, 0x14000010, text_offset, size, flags, 0, 0, 0, 0x644D5241, 0)
    return hdr + body


# hand-assembled snippets (clang --target=aarch64-none-elf, checked with llvm-objdump)
MOV_X5_UART = 0xD2A12005  # mov x5, #0x09000000
MOV_W1_X = 0x52800B01  # mov w1, #'X'
STRB_W1_X5 = 0x390000A1  # strb w1, [x5]
MOV_W0_8 = 0x52800100  # mov w0, #8
MOV_W0_9 = 0x52800120  # mov w0, #9
MOVK_W0_8400 = 0x72B08000  # movk w0, #0x8400, lsl #16
HVC0 = 0xD4000002  # hvc #0
MRS_IMPDEF = 0xD538F000  # mrs x0, S3_0_C15_C0_0

PRINT_X = (MOV_X5_UART, MOV_W1_X, STRB_W1_X5)
SYSTEM_OFF = (MOV_W0_8, MOVK_W0_8400, HVC0)
SYSTEM_RESET = (MOV_W0_9, MOVK_W0_8400, HVC0)


# a raw guest that takes its virtual timer's IRQ while it spins (no WFI): it arms CNTV 2^32 ticks (69 s)
# ahead, loops 2^20 times (a clock thread settles on that deadline), re-arms it 2^20 ticks (16.8 ms)
# ahead and spins; its IRQ vector powers off. With enable_ppi(m, 27) it powers off only if the run loop
# notices the new, earlier deadline while the vCPU executes.
_MRS_X1_CNTVCT = 0xD53BE041  # mrs x1, cntvct_el0
_ADR_X0_VECTORS = 0x10004000  # adr x0, .+0x800
_MSR_VBAR_X0 = 0xD518C000  # msr vbar_el1, x0
_MSR_DAIFCLR_I = 0xD50342FF  # msr daifclr, #2
_MOVZ_X2_1_LSL32 = 0xD2C00022  # movz x2, #1, lsl #32
_ADD_X0_X1_X2 = 0x8B020020  # add x0, x1, x2
_MSR_CNTV_CVAL_X0 = 0xD51BE340  # msr cntv_cval_el0, x0
_MOVZ_X0_1 = 0xD2800020  # movz x0, #1
_MSR_CNTV_CTL_X0 = 0xD51BE320  # msr cntv_ctl_el0, x0
_MOVZ_X4_1M = 0xD2A00204  # movz x4, #0x10, lsl #16
_SUBS_X4_1 = 0xF1000484  # subs x4, x4, #1
_BNE_BACK1 = 0x54FFFFE1  # b.ne .-4
_ADD_X0_X1_16MS = 0x91440020  # add x0, x1, #0x100, lsl #12
_ADD_X3_1 = 0x91000463  # add x3, x3, #1


def timer_irq_spinner() -> bytes:
    body = code(
        _ADR_X0_VECTORS, _MSR_VBAR_X0, _MSR_DAIFCLR_I,
        _MRS_X1_CNTVCT, _MOVZ_X2_1_LSL32, _ADD_X0_X1_X2, _MSR_CNTV_CVAL_X0, _MOVZ_X0_1, _MSR_CNTV_CTL_X0,
        _MOVZ_X4_1M, _SUBS_X4_1, _BNE_BACK1,
        _MRS_X1_CNTVCT, _ADD_X0_X1_16MS, _MSR_CNTV_CVAL_X0,
        _ADD_X3_1, b_back(1),
    )  # fmt: skip
    return body.ljust(0x800 + 0x280, b"\0") + code(*SYSTEM_OFF, B_SELF)  # IRQ, current EL with SP_ELx


def enable_ppi(m, intid: int, cpu: int = 0) -> None:
    """Route PPI `intid` of `cpu` to its IRQ line: distributor, redistributor, CPU interface."""
    gicd, gicr = 0x0800_0000, 0x080A_0000 + cpu * 0x20000
    sgi = gicr + 0x10000
    m.mmio_write(gicd, 0x12)  # ARE | EnableGrp1
    m.mmio_write(gicr + 0x14, 0)  # GICR_WAKER: awake
    m.mmio_write(sgi + 0x80, m.mmio_read(sgi + 0x80) | 1 << intid)  # IGROUPR0: group 1
    m.mmio_write(sgi + 0x100, 1 << intid)  # ISENABLER0
    m.sysreg_write("ICC_PMR_EL1", 0xFF, cpu=cpu)
    m.sysreg_write("ICC_IGRPEN1_EL1", 1, cpu=cpu)


def wait_for_stat(stats, name: str, least: int, timeout: float = 30.0) -> None:
    """Until the counter `name` of stats() (vmm_stats as a mapping) reaches `least`, while the run goes on: the
    counter is the event waited for."""
    import time

    end = time.monotonic() + timeout
    while stats()[name] < least:
        assert time.monotonic() < end, stats()
        time.sleep(0.001)


def heap_growth(make, calls: int = 10, batches: int = 3) -> float | None:
    """The bytes of malloc'd memory the process keeps per call of `make` (which builds something and closes
    it): the least over `batches` batches of `calls`, after a warm-up. A leak grows every batch; what the
    interpreter caches settles (measured here: 0-56 bytes a batch-averaged call once warm). glibc's mallinfo2
    counts in-use bytes, mmapped blocks included. None where that count is not ours to read: not glibc, or an
    ASan run (its allocator replaces malloc; its leak checker covers the same ground)."""
    import ctypes
    import gc

    if os.environ.get("VMMPY_EXPECT_SANITIZED"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                         "fordblks", "keepcost")
        ]  # fmt: skip

    mallinfo2.restype = Mallinfo2

    def in_use() -> int:
        gc.collect()
        m = mallinfo2()
        return m.uordblks + m.hblkhd

    for _ in range(3):
        make()
    growth = []
    for _ in range(batches):
        before = in_use()
        for _ in range(calls):
            make()
        growth.append((in_use() - before) / calls)
    return min(growth)


def run_with_shim(tmp_path, shim_c: str, script: str, **env: str):
    """Run `script` in a fresh interpreter with `shim_c` (an allocator shim's C source) built and preloaded, and
    `env` added to its environment: for failures a test cannot cause from Python (an allocation that fails).
    Skips without a C compiler, and in the sanitizer run (tools/asan.sh): its runtime must come first in
    LD_PRELOAD, and it intercepts malloc, open, read and more itself, so a shim there would never be called."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("cc"):
        pytest.skip("needs a C compiler for the allocation-failure shim")
    if os.environ.get("VMMPY_EXPECT_SANITIZED") == "1":
        pytest.skip("the sanitizer run's runtime comes first in LD_PRELOAD and owns the calls a shim replaces")
    src, shim = tmp_path / "shim.c", tmp_path / "shim.so"
    src.write_text(shim_c)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the sources' include/ on the path: a shim may include a csrc/ header (under ROOT) for a sizeof
    cmd = ["cc", "-shared", "-fPIC", "-O1", "-I", os.path.join(ROOT, "include"), "-o", str(shim), str(src), "-ldl"]
    subprocess.run(cmd, check=True, timeout=60)
    env = dict(os.environ, LD_PRELOAD=str(shim), PYTHONPATH=root, **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=root)
