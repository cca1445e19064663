"""The tier-2 guests in one table: what each run is, where it applies and what counts as passing.

One `Run` per (guest, vCPU count). Its verdict is read from the serial output, never from a
semihosting exit (KVM has no semihosting: there the guest runtime falls back to PSCI SYSTEM_OFF),
so the same check serves every peer:

- "soft": vmmpy's Unicorn backend, in-process (tests/test_irq_guests.py, every run);
  On SMP it runs a thread per vCPU when the patched Unicorn is built (the default, vcpu_threads="auto");
- "soft-1thread": soft with vcpu_threads="one", every vCPU on one thread, round-robin (SMP runs only);
- "soft-threaded": the same engines driven by the threaded run loop (a thread per vCPU) with our GIC,
  timers and PSCI: the combination a Hypervisor.framework backend will be (test vehicle; SMP runs
  only with the patched Unicorn; see "Backends and capabilities" in docs/ARCHITECTURE.md);
- "hvf": the Hypervisor.framework backend (csrc/backend/hvf.c), here over the framework simulator
  (csrc/backend/hvfsim/, Unicorn engines on a thread per vCPU under one lock), SMP included
  (tests/test_irq_guests.py, tests/test_guests.py);
- "kvm": build/aarch64/vmmrun --backend kvm inside a nested arm64 Linux (tests/test_kvm_nested.py,
  tools/nested.py);
- "qemu": qemu-system-aarch64 TCG, the reference (tests/test_irq_guests.py, every run).

`check(run, text)` lists what is wrong with an output (empty: pass). `expect` are regexes that must
each match somewhere (multiline, carriage returns removed); `reject` ones must not. The exit status
is checked separately, per peer, against `status` / `end` (a runner that cannot carry a status,
such as QEMU without semihosting, skips that).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

from .locks import exclusive

PEERS = ("soft", "soft-threaded", "hvf", "kvm", "qemu")
SMP_ITERS = 2000  # guest/smp.c ITERS
UART_INPUT = b"hi!\tq"  # echoed as h, i, !, 0x09, q; 'q' ends the guest
UART_ECHO = ["echo: h", "echo: i", "echo: !", "echo: 0x09", "echo: q"]

# the guests that report through rt/check.c: a FAIL line per failed check, one verdict line
CHECK_REJECT = (r"^FAIL",)
# exceptions, psci, badmmio: PASS/FAIL lines, then ALL PASS or SOME FAILED
SUITE_REJECT = (r"^FAIL", r"^SOME FAILED$")


@dataclass(frozen=True)
class Run:
    id: str  # unique, used as the pytest id and the nested harness's marker name
    guest: str  # guest/build/<guest>.elf
    cpus: int = 1
    ram: str | None = None  # e.g. "256M"; None: the VMM's default (256 MiB)
    expect: tuple[str, ...] = ()
    reject: tuple[str, ...] = CHECK_REJECT
    end: str = "poweroff"  # how the run ends: poweroff, reset or timeout
    status: int = 0  # the power-off status (end == "poweroff")
    stdin: bytes = b""  # written to the serial port (vmmrun --stdin)
    gpu: bool = False  # a virtio-gpu (Machine(gpu=True), vmmrun --gpu, QEMU -device virtio-gpu-device)
    cpu_model: str | None = None  # Machine(cpu_model=), QEMU -cpu (default cortex-a72); KVM: the host's CPU
    rng: bool = False  # a virtio-rng (Machine(rng=True), vmmrun --rng, QEMU -device virtio-rng-{device,pci})
    # where virtio devices sit: "mmio" or "pci" (Machine(transport=), vmmrun --transport; QEMU: its
    # virtio-*-pci devices, modern only, with highmem=off so the ECAM is the low one at 0x3F000000)
    transport: str = "mmio"
    its: bool = False  # a GICv3 ITS (Machine(its=True), vmmrun --its; QEMU's virt always has one)
    make_vars: tuple[str, ...] = ()  # a smaller build of the guest: `make -C guest B=... VAR=value`
    timeout: float = 120.0  # seconds of host time; for end == "timeout" how long to let it run
    peers: tuple[str, ...] = PEERS
    why_not: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # peer -> why not there
    groups: tuple[str, ...] = ()  # which test modules pick it up ("irq", "basic", "bench", "idle")

    @property
    def vmmrun_rc(self) -> int:
        """vmmrun's exit status for this run (see runner/vmmrun.c)."""
        return {"poweroff": self.status & 0xFF, "reset": 3, "timeout": 124}[self.end]

    def applies(self, peer: str) -> bool:
        if peer == "soft-1thread":  # soft with every vCPU on one thread: only differs from soft on SMP
            return self.cpus > 1 and "soft" in self.peers
        if peer == "soft-threaded" and self.cpus > 1 and not parallel_engine():
            return False  # the wheel's engines on separate threads: exclusives are not atomic between them
        return peer in self.peers


def parallel_engine() -> bool:
    """Whether the soft backend can run SMP with a thread per vCPU: the patched Unicorn (parallel.patch)."""
    try:
        from vmmpy import _ffi
    except ImportError:
        return False
    return _ffi.UNICORN == "patched"


def lines(text: str) -> list[str]:
    return text.replace("\r", "").splitlines()


def check(run: Run, text: str) -> list[str]:
    """What is wrong with `text` as `run`'s serial output: one message per problem, [] if it passes."""
    clean = text.replace("\r", "")
    problems = []
    for pat in run.reject:
        bad = [m.group(0) for m in re.finditer(f"{pat}.*$" if not pat.endswith("$") else pat, clean, re.M)]
        if bad:
            problems.append("unexpected line(s):\n" + "\n".join(bad[:20]))
    for pat in run.expect:
        if not re.search(pat, clean, re.M):
            problems.append(f"no line matching {pat!r}")
    if problems:
        tail = "\n".join(lines(text)[-30:])
        problems.append(f"output ends with:\n{tail}")
    return problems


def assert_ok(run: Run, text: str) -> None:
    problems = check(run, text)
    assert not problems, f"{run.id}: " + "\n".join(problems)


def _verdict(name: str) -> str:
    return rf"^PASS {re.escape(name)}$"


def _irq(name: str, cpus: int, *details: str, **kw) -> Run:
    return Run(f"{name}-smp{cpus}", name, cpus, expect=(_verdict(name), *details), groups=("irq",), **kw)


def _smp(cpus: int) -> Run:
    want = cpus * SMP_ITERS
    details = [rf"^smp: counter {want} \(expected {want}\), atomic {want}$"]
    details += [rf"^cpu {c} online: mpidr 0x" for c in range(cpus)]
    if cpus > 1:
        details.append(r"^cpu 1 restarted$")
    return _irq("smp", cpus, *details)


def _sgi(cpus: int) -> Run:
    return _irq("sgi", cpus, rf"sgi: {cpus} cpus", r"^sgi: 256 round trips")


def _its(trigger: str = "translater") -> Run:
    """guest/its.c; with INT commands instead of GITS_TRANSLATER writes, which KVM's ITS ignores from a CPU."""
    details = (
        rf"^its: {'INT' if trigger == 'int' else 'GITS_TRANSLATER'} event 2 -> LPI 8194 taken$",
        r"^its: priority order 8195 8193 8192 8194$",
        r"^its: INT, CLEAR, MOVI, DISCARD ok$",
        r"^its: command error: (queue stalled, resumed by Retry|command ignored)$",  # IHI0069 allows both
    )
    if trigger == "int":
        expect = (_verdict("its"), *details)
        return Run("its_int-smp1", "its", expect=expect, groups=("irq",), make_vars=("ITS_INT=1",), its=True)
    why = "KVM's in-kernel ITS ignores a CPU's GITS_TRANSLATER writes (its_int-smp1 runs there)"
    return _irq("its", 1, *details, peers=tuple(p for p in PEERS if p != "kvm"), why_not={"kvm": why}, its=True)


# Not in the table: bench_gpu and input_echo (they need frames held or input injected, which only
# vmmpy's Machine can do: tests/test_bench_guests.py, tests/test_virtio_input.py and test_events.py).

RUNS: list[Run] = [
    # -- the interrupt guests (tests/test_irq_guests.py) -----------------------------------------
    _irq("timer", 1, r"^timer: 50 ticks at 100 Hz", re.escape("timer: physical timer (PPI 30) fired")),
    _irq(
        "prio",
        1,
        r"^prio: nested preemption: 8\+ 9\+ 46\+ 46- 9- 8-$",
        r"^prio: equal and lower priority wait: 8\+ 8- 10\+ 10- 11\+ 11-$",
    ),
    _irq("spi", 1, r"taken 5 times until masked$"),
    # LPIs through the ITS without PCI: MAPD/MAPC/MAPTI, GITS_TRANSLATER writes, INV, INT, CLEAR, MOVI, DISCARD
    _its(),
    _its("int"),
    _sgi(2),
    _sgi(4),
    _smp(1),
    _smp(2),
    _smp(4),
    _smp(8),
    # another vCPU's engine must drop its translation of code patched here (IC IVAU / IALLUIS)
    _irq("smp_ic", 2, r"^smp_ic: 400 rounds, 6408 calls, 0 stale$"),
    # vCPUs spinning with no exit of their own take their own out-of-phase timer ticks (the host's kick per vCPU)
    _irq("spin_tick", 3, r"^spin_tick: 3 cpus, 20 ticks each$"),
    # secondaries off with their timer armed and expired: the VM still idles and ends
    _irq("off_timer", 3, r"^off_timer: 2 cpus off, timers armed$"),
    # a secondary powered on and off 200 times, waiting in WFI for three 40 us timer ticks each time
    _irq("offon", 2, r"^offon: 200 cycles of 3 ticks$"),
    # CPU 1 woken from WFI by 100 SGIs, 1 ms apart, beside two CPUs that stay off
    _irq("wake_one", 4, r"^wake_one: 100 wake-ups, 2 cpus off$"),
    # WFI waits of 300 us and 30 us: the halt-poll window closing and opening again, 50 times
    _irq("halt_window", 1, r"^halt_window: 50 cycles$"),
    _irq("halt_window_cap", 1, r"^halt_window: 50 cycles$"),
    Run(
        "uart_irq",
        "uart_irq",
        expect=(r"^uart_irq: ready", _verdict("uart_irq"), "^" + "\n".join(re.escape(e) for e in UART_ECHO) + "$"),
        stdin=UART_INPUT,
        groups=("irq-input",),
    ),
    # -- the basic guests (tests/test_guests.py has the backend-specific checks) ----------------
    Run("hello", "hello", expect=(r"^Hello from vmmpy guest!$", r"^dtb=0x[0-9a-f]+$"), groups=("basic",)),
    Run(
        "exceptions",
        "exceptions",
        expect=(
            r"^ALL PASS$",
            r"^PASS MMU on$",
            r"^PASS EL1 fetch from a PXN page$",
            r"^PASS EL1 fetch from a PXN page just written$",
            r"^PASS EL0 svc$",
            r"^PASS unknown sysreg is UNDEFINED$",
            # CNTKCTL_EL1's EL0 controls: the counter the engine serves itself (uc_vmmpy_counter) included
            *(
                rf"^PASS EL0 {r} {what} when CNTKCTL_EL1 {how} it$"
                for r in ("CNTVCT_EL0", "CNTPCT_EL0", "CNTFRQ_EL0", "CNTV_CTL_EL0", "CNTP_CTL_EL0")
                for what, how in (("traps", "denies"), ("reads", "allows"))
            ),
        ),
        reject=SUITE_REJECT,
        groups=("basic",),
    ),
    Run(
        "wxn",
        "wxn",
        expect=(
            r"^ALL PASS$",
            r"^PASS WXN: a read-only page runs$",
            r"^PASS WXN: a writable page is an instruction abort$",
            r"^PASS WXN: a page just written is an instruction abort$",
        ),
        reject=SUITE_REJECT,
        groups=("basic",),
    ),
    Run("psci", "psci", expect=(r"^psci version 1\.\d+$", r"^ALL PASS$"), reject=SUITE_REJECT, groups=("basic",)),
    Run(
        "psci_reset",
        "psci_reset",
        expect=(r"^ALL PASS$", r"resetting\n?\Z"),
        reject=SUITE_REJECT,
        end="reset",
        groups=("basic",),
    ),
    Run(
        "badmmio",
        "badmmio",
        expect=(r"^ALL PASS$", r"^external abort ok esr=0x"),
        reject=SUITE_REJECT,
        groups=("basic",),
    ),
    # a non-zero status without semihosting: on KVM the runtime's fallback, SYSTEM_OFF with x1 = 7
    Run("exit_code", "exit_code", expect=(r"^exiting with 7$",), status=7, groups=("basic",)),
    # -- the guest's own debug architecture and PMU (issue 18): each on the default CPU and on "max"
    # (QEMU -cpu max); dbgexc's OS-lock line is judged for vmmpy only (QEMU 7.2 ignores the lock)
    *(
        Run(
            f"dbgexc{suffix}",
            "dbgexc",
            cpu_model=model,
            expect=(_verdict("dbgexc"), r"^dbgexc: software step done$"),
            groups=("debug",),
        )
        for suffix, model in (("", None), ("-max", "max"))
    ),
    *(
        Run(
            f"pmu{suffix}",
            "pmu",
            cpu_model=model,
            expect=(_verdict("pmu"), r"^pmu: software increment, overflow, interrupt$"),
            groups=("debug",),
            peers=("soft", "soft-threaded", "hvf", "qemu"),
            # KVM gives its vCPUs the host kernel's PMU (KVM_ARM_VCPU_PMU_V3); nested (Linux 6.1's KVM on QEMU
            # 7.2 TCG) two of the guest's checks fail there, so tests/test_kvm_nested.py checks the rest
            why_not={
                "kvm": "nested KVM's PMU raises no cycle-counter overflow interrupt and traps an EL0 PMCCNTR_EL0 "
                "read that PMUSERENR_EL0.EN allows (test_pmu_on_kvm checks the rest)"
            },
        )
        for suffix, model in (("", None), ("-max", "max"))
    ),
    # every feature the ID registers advertise is exercised (max: dozens; cortex-a72: the crypto ones)
    *(
        Run(f"idregs{suffix}", "idregs", cpu_model=model, expect=(_verdict("idregs"),), groups=("debug",))
        for suffix, model in (("", None), ("-max", "max"))
    ),
    # -- idle and benchmark guests: they must keep running / report every measurement ----------
    Run("idle", "idle", expect=(r"^idle: ready, 100 Hz tick$",), end="timeout", timeout=3, groups=("idle",)),
    Run("idle_notick", "idle_notick", expect=(r"^idle: ready, no timer$",), end="timeout", timeout=3, groups=("idle",)),
    Run(
        "bench_exits",
        "bench_exits",
        expect=tuple(rf"^BENCH name={n} iters=\d+ ticks=\d+ freq=\d+$" for n in ("loop", "hvc", "mmio_write"))
        + (r"^BENCH done$",),
        groups=("bench",),
        make_vars=("N=2000",),
    ),
    # -- virtio: a virtio-gpu driver (virtqueues, DMA, the used-buffer interrupt) drawing 30 frames;
    # the byte lets it go on at once where it holds frame 10 for a screenshot
    Run(
        "gpu_demo",
        "gpu_demo",
        expect=(r"^gpu_demo: 1280x800 framebuffer", r"^gpu_demo: frame 30$", _verdict("gpu_demo")),
        stdin=b"x",
        gpu=True,
        groups=("virtio",),
    ),
    # -- PCI: walk ECAM, size and place BARs, find the virtio capabilities, drive virtio-rng-pci
    # over INTx (interrupt status, Interrupt Disable, a moved BAR). MSI-X needs the ITS: a stage of its own
    Run(
        "pci_enum",
        "pci_enum",
        expect=(
            r"^pci: 00:00\.0 1b36:0008 class 060000 header 0$",
            r"^pci: 00:0[12]\.0 1af4:1044 class 00ff00 header 0$",
            r"^pci: entropy over INTx: 16 bytes, isr 0x1$",
            r"^pci: interrupt disable: held back, delivered when cleared$",
            r"^pci: BAR moved, entropy over INTx: 16 bytes$",
            _verdict("pci_enum"),
        ),
        rng=True,
        transport="pci",
        groups=("virtio",),
    ),
    # MSI-X through the ITS: no INTx, a masked vector's PBA bit, delivery on unmask; the message goes to
    # GITS_TRANSLATER, the guest's MAPD/MAPTI for the rng's requester ID make it an LPI, taken in the handler
    # (on KVM: KVM_SIGNAL_MSI to the in-kernel ITS)
    Run(
        "pci_msix",
        "pci_msix",
        expect=(
            r"^pci_msix: 2 vectors, table BAR\d, PBA BAR\d$",
            r"^pci_msix: ITS maps DeviceID 0x8 EventID 5 -> LPI 8229$",
            r"^pci_msix: masked vector pending, delivered on unmask$",
            r"^pci_msix: function mask holds, clearing it delivers$",
            r"^pci_msix: request completion -> LPI 8229 taken through the ITS$",
            _verdict("pci_msix"),
        ),
        rng=True,
        transport="pci",
        groups=("virtio",),
    ),
    # the same demo on virtio-gpu-pci (found on PCI bus 0 when no virtio-mmio slot has a GPU)
    Run(
        "gpu_demo_pci",
        "gpu_demo",
        expect=(
            r"^virtio-gpu: PCI 00:01\.0, ",
            r"^gpu_demo: 1280x800 framebuffer",
            r"^gpu_demo: frame 30$",
            _verdict("gpu_demo"),
        ),
        stdin=b"x",
        gpu=True,
        transport="pci",
        groups=("virtio",),
    ),
    Run(
        "bench_dbg",
        "bench_dbg",
        expect=tuple(
            rf"^BENCH name={n} iters=\d+ ticks=\d+ freq=\d+$"
            for n in ("plain", "watchpoint_armed", "watchpoint_off", "pmu_counting")
        )
        + (r"^BENCH done$",),
        groups=("bench",),
        make_vars=("DBG_N=2000",),
    ),
    Run(
        "bench_irq",
        "bench_irq",
        cpus=2,
        expect=(r"^irq: 2 cpus", r"^BENCH name=ipi_wfi ", r"^BENCH done$"),
        reject=(r"^BENCH skip",),
        groups=("bench",),
        make_vars=("IRQ_N=20",),
    ),
]

BY_ID = {r.id: r for r in RUNS}
assert len(BY_ID) == len(RUNS), "duplicate run ids"


def select(peer: str | None = None, groups: tuple[str, ...] | None = None) -> list[Run]:
    """The runs that apply to `peer` (any if None), in table order, optionally only these groups."""
    return [
        r for r in RUNS if (peer is None or r.applies(peer)) and (groups is None or any(g in groups for g in r.groups))
    ]


# the source tree (tools/asan.sh runs a copy of the tests from build/asan/ with VMMPY_ROOT set)
ROOT = os.environ.get("VMMPY_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_DIR = os.path.join(ROOT, "guest")
SMALL_GUESTS = os.path.join(os.path.dirname(GUEST_DIR), "build", "guests-small")  # builds with make_vars


def elf(run: Run) -> str:
    """The ELF for `run`: guest/build/<guest>.elf, or a smaller build (built now) when the run has make_vars."""
    if not run.make_vars:
        p = os.path.join(GUEST_DIR, "build", f"{run.guest}.elf")
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} is missing: run `make guests`")
        return p
    b = os.path.join(SMALL_GUESTS, "-".join(v.replace("=", "") for v in run.make_vars))
    out = os.path.join(b, f"{run.guest}.elf")
    # one build dir per make_vars, shared by pytest-xdist workers: one of them builds, the others wait
    with exclusive(f"guests-small-{os.path.basename(b)}"):
        cmd = ["make", "-s", "-C", GUEST_DIR, f"B={b}", *run.make_vars, out]
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # make's shells crash under TSan's runtime
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"building {out}: {(p.stderr or p.stdout)[-1000:]}")
    return out
