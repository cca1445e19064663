"""Run guests on the KVM backend inside a nested arm64 Linux: qemu-system-aarch64 with virtualization=on.

    python tools/nested.py                       # every tier-2 guest that applies to KVM (tests/guests.py)
    python tools/nested.py --guest timer-smp1 --guest hello   # only these runs (ids from tests/guests.py)
    python tools/nested.py --raw 10000           # also bench/kvm_raw (10000 raw-ioctl MMIO exits each way)
    python tools/nested.py --linux               # also Debian's kernel + test initramfs on vmmrun --backend kvm
    python tools/nested.py --snapshots           # also the KVM snapshot round trips (SNAP_RUNS) and soft-on-KVM
    python tools/nested.py --shell               # the same VM, then a BusyBox shell on the console
    python tools/nested.py --list                # the runs and whether they apply to KVM

The VM is QEMU's virt board emulating EL2 (TCG, `-cpu max`, GICv3) booting Debian's arm64 kernel
(tools/fetch_debian.py), so that kernel's KVM initialises at EL2 and /dev/kvm exists inside. Its
initramfs (tools/initramfs.py, cached in .cache/initramfs/) holds BusyBox, the static
build/aarch64/vmmrun (`make aarch64`), the guest ELFs under /guests/ and an /init that prints

    @@@ KVM present|absent
    @@@ DMESG <the kernel's kvm lines>
    @@@ BEGIN <id>
    <the guest's serial output, from vmmrun>
    @@@ END <id> rc=<vmmrun's exit status> t=<seconds>
    @@@ STDERR <id> <each line vmmrun wrote on stderr>
    @@@ ALL-DONE

and powers off. `boot()` returns that parsed (`Nested`). Everything inside runs under TCG, so
absolute times are slow; nothing here needs root or /dev/kvm on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
sys.path.insert(0, ROOT)
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402

from tests import guests as table  # noqa: E402

VMMRUN = os.path.join(ROOT, "build", "aarch64", "vmmrun")
KVM_RAW = os.path.join(ROOT, "build", "aarch64", "kvm_raw")
GUEST_DIR = os.path.join(ROOT, "guest", "build")
APPEND = "console=ttyAMA0 panic=-1 quiet"
BOOT_OVERHEAD = 120.0  # seconds allowed for the nested kernel's boot and power-off

MARK = "@@@"
BEGIN_RE = re.compile(r"^@@@ BEGIN (\S+)\r?$", re.M)
END_RE = re.compile(r"\n@@@ END (\S+) rc=(\d+) t=([\d.]+)-([\d.]+)\r?$", re.M)


class NestedError(RuntimeError):
    pass


@dataclass
class Result:
    id: str
    output: str = ""  # the guest's serial output (what vmmrun wrote on stdout)
    rc: int | None = None  # vmmrun's exit status; None if the run never finished
    seconds: float | None = None  # guest-side wall time of the run (the nested VM's clock)
    stderr: list[str] = field(default_factory=list)


@dataclass
class Nested:
    console: str  # everything the nested VM printed
    qemu_rc: int | None
    wall: float  # host seconds from starting QEMU to its exit
    kvm: bool  # /dev/kvm existed inside
    dmesg: list[str]  # the kernel's kvm lines (mode, GIC, IPA size)
    results: dict[str, Result]
    done: bool  # the init reached its end (ALL-DONE)
    gdb: dict[str, str] = field(default_factory=dict)  # what each debugger session printed (the caller's watchers)

    @property
    def kvm_mode(self) -> str | None:
        """'VHE' or 'Hyp' (nVHE) when KVM initialised, from dmesg."""
        for line in self.dmesg:
            m = re.search(r"kvm \[\d+\]: (VHE|Hyp|Protected nVHE) mode initialized", line)
            if m:
                return m.group(1)
        return None


# -- what goes in the initramfs ---------------------------------------------------------------


def runs_by_id(ids: Iterable[str] | None) -> list[table.Run]:
    if not ids:
        return table.select("kvm")
    out = []
    for i in ids:
        if i not in table.BY_ID:
            # a bare guest name: every run of it
            hits = [r for r in table.RUNS if r.guest == i]
            if not hits:
                raise NestedError(f"no run {i!r} in tests/guests.py (known: {', '.join(table.BY_ID)})")
            out += hits
        else:
            out.append(table.BY_ID[i])
    return out


def guest_elf(run: table.Run) -> str:
    """The ELF for `run` (tests/guests.py builds the smaller variants)."""
    try:
        return table.elf(run)
    except (OSError, RuntimeError) as e:
        raise NestedError(str(e)) from None


def _sh(s: str | bytes) -> str:
    """A shell word for printf '%b': bytes as octal escapes."""
    if isinstance(s, str):
        s = s.encode()
    return "'" + "".join(f"\\0{b:03o}" for b in s) + "'"


def init_script(runs: list[table.Run], elves: dict[str, str], *, raw: int = 0, shell: bool = False,
                backend: str = "kvm", extra: Iterable[str] = ()) -> str:  # fmt: skip
    """The nested VM's /init: report KVM, run each guest between markers, power off (or a shell)."""
    out = [initramfs.PRELUDE, "dmesg -n 1  # kernel messages off the console: they would split guest output\n"]
    out.append(f'echo "{MARK} KVM $([ -c /dev/kvm ] && echo present || echo absent)"\n')
    out.append(f"dmesg | grep -E 'kvm \\[|All CPU\\(s\\) started' | sed 's/^/{MARK} DMESG /'\n")
    for r in runs:
        args = ["/vmmrun", "--backend", backend, "--timeout", f"{r.timeout:g}", "--cpus", str(r.cpus), "--stats"]
        if r.ram:
            args += ["--ram", r.ram]
        if r.stdin:
            args.append("--stdin")
        if r.gpu:
            args.append("--gpu")
        if r.rng:
            args.append("--rng")
        if r.transport != "mmio":
            args += ["--transport", r.transport]
        if r.its:
            args.append("--its")
        args.append(f"/guests/{os.path.basename(elves[r.id])}")
        cmd = " ".join(shlex.quote(a) for a in args)
        feed = f"printf '%b' {_sh(r.stdin)} | " if r.stdin else ""
        tail = "" if r.stdin else " </dev/null"
        out.append(
            f'echo "{MARK} BEGIN {r.id}"\n'
            f"read t0 _ </proc/uptime\n"
            f"{feed}{cmd} 2>/tmp/err{tail}\n"
            f"rc=$?\n"
            f"read t1 _ </proc/uptime\n"
            f'printf "\\n{MARK} END %s rc=%d t=%s-%s\\n" {r.id} $rc $t0 $t1\n'
            f"sed 's/^/{MARK} STDERR {r.id} /' /tmp/err\n"
        )
    if raw:
        out.append(
            f'echo "{MARK} BEGIN kvm_raw"\nread t0 _ </proc/uptime\n/kvm_raw {int(raw)} 2>&1\nrc=$?\n'
            f'read t1 _ </proc/uptime\nprintf "\\n{MARK} END kvm_raw rc=%d t=%s-%s\\n" $rc $t0 $t1\n'
        )
    out += [f"{line}\n" for line in extra]
    out.append(f'echo "{MARK} ALL-DONE"\n')
    if shell:
        out.append("export PS1='nested# '\nsetsid cttyhack sh -i || sh -i\n")
    out.append("sync\npoweroff -f\n")
    return "".join(out)


def build_initramfs(runs: list[table.Run], *, raw: int = 0, shell: bool = False, backend: str = "kvm",
                    extra: Iterable[str] = (), files: dict[str, str] | None = None,
                    vmmrun: str = VMMRUN, modules: Iterable[str] = ()) -> str:  # fmt: skip
    """The cached initramfs for these runs (rebuilt when vmmrun, a guest or the script changes).

    `extra` are more shell lines for /init after the runs, `files` more {path inside: host path},
    `modules` kernel modules the init loads first (with their dependencies).
    """
    if not os.path.exists(vmmrun):
        raise NestedError(f"{vmmrun} is missing: run `make aarch64`")
    elves = {r.id: guest_elf(r) for r in runs}
    files = {**(files or {}), "/vmmrun": vmmrun}
    for r in runs:
        dst = f"/guests/{os.path.basename(elves[r.id])}"
        if files.get(dst, elves[r.id]) != elves[r.id]:  # two builds of one guest: keep both
            elves[r.id] = elves[r.id][:-4] + "-" + "-".join(v.replace("=", "") for v in r.make_vars) + ".elf"
            shutil.copyfile(guest_elf(r), elves[r.id])
            dst = f"/guests/{os.path.basename(elves[r.id])}"
        files[dst] = elves[r.id]
    if raw:
        if not os.path.exists(KVM_RAW):
            raise NestedError(f"{KVM_RAW} is missing: run `make aarch64`")
        files["/kvm_raw"] = KVM_RAW
    script = init_script(runs, elves, raw=raw, shell=shell, backend=backend, extra=extra)
    path = initramfs.cached(init_script=script, extra_files=files, modules=modules)
    _forget_old(path)
    return path


def _forget_old(path: str, keep: int = 8) -> None:
    """Delete the archives of earlier builds beyond the last `keep`: each new vmmrun makes a new one."""
    log = os.path.join(ROOT, "build", "nested", "initramfs.list")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    try:
        with open(log) as f:
            seen = [line.strip() for line in f if line.strip() and line.strip() != path]
    except FileNotFoundError:
        seen = []
    seen.append(path)
    for old in seen[:-keep]:
        with contextlib.suppress(OSError):
            os.unlink(old)
    with open(log, "w") as f:
        f.write("".join(f"{p}\n" for p in seen[-keep:]))


def linux(cpus: int = 2, ram: str = "512M", timeout: float = 300) -> tuple[dict[str, str], list[str]]:
    """(files, extra) for boot(): Debian's kernel with the test initramfs on vmmrun --backend auto, as run "linux".

    auto must pick KVM there (the run's --stats line names the backend).

    Its output should hold `VMMPY-INIT-OK cpus=<cpus>` (initramfs.MARKER_RE) and `reboot: Power down`.
    """
    files = {"/linux/vmlinuz": fetch_debian.kernel(), "/linux/initrd": initramfs.cached()}
    cmd = (f"/vmmrun --backend auto --cpus {cpus} --ram {ram} --timeout {timeout:g} --stats --initrd /linux/initrd "
           f"--cmdline 'console=ttyAMA0 panic=-1' /linux/vmlinuz")  # fmt: skip
    extra = [
        f'echo "{MARK} BEGIN linux"',
        "read t0 _ </proc/uptime",
        f"{cmd} 2>/tmp/err </dev/null",
        "rc=$?",
        "read t1 _ </proc/uptime",
        f'printf "\\n{MARK} END linux rc=%d t=%s-%s\\n" $rc $t0 $t1',
        f"sed 's/^/{MARK} STDERR linux /' /tmp/err",
    ]
    return files, extra


def without_kvm(guest_elf: str = "/guests/hello.elf") -> list[str]:
    """Extra init lines for boot(): vmmrun with /dev/kvm moved away (then put back), as runs "nokvm-kvm"
    (--backend kvm: must fail with one clear line, exit 2) and "nokvm-auto" (--backend auto: the same,
    since this build has no soft backend)."""
    out = ["mv /dev/kvm /dev/kvm.off"]
    for backend in ("kvm", "auto"):
        rid = f"nokvm-{backend}"
        out += [
            f'echo "{MARK} BEGIN {rid}"',
            f"/vmmrun --backend {backend} --timeout 10 {guest_elf} 2>/tmp/err </dev/null",
            "rc=$?",
            f'printf "\\n{MARK} END {rid} rc=%d t=0-0\\n" $rc',
            f"sed 's/^/{MARK} STDERR {rid} /' /tmp/err",
        ]
    return out + ["mv /dev/kvm.off /dev/kvm"]


# Snapshots on KVM: a guest saved at a serial pattern by one vmmrun and run on by another (vmmrun
# --snapshot-at/--snapshot-out, then --restore), whose two outputs together must be what the
# uninterrupted run of the same guest prints (its run in tests/guests.py, in the same boot); and a
# snapshot made on the soft backend (here, with the Python API) that KVM must refuse with one line.
SNAP_RUNS = {  # name -> (run id in tests/guests.py, the serial pattern to save at)
    # then 50 virtual-timer ticks (the vGIC's PPI, the timer's CVAL/CTL), a one-shot and the physical timer
    "timer": ("timer-smp1", "timer: TVAL"),
    # both vCPUs on: then they contend for a lock, CPU_OFF, CPU_ON of cpu 1 again
    "smp2": ("smp-smp2", "cpu 1 online"),
    # cpu 1 off (KVM_MP_STATE_STOPPED): then CPU_ON brings it back from the restored power state
    "smp2-off": ("smp-smp2", "smp: secondaries off"),
    # LPIs enabled, the ITS's tables and mappings made: the restore brings them back (ITS_SAVE/RESTORE_TABLES)
    "its": ("its_int-smp1", "its: LPIs on, ITS enabled"),
}
SOFT_SNAP = os.path.join(ROOT, "build", "nested", "soft.snap")


def soft_snapshot(path: str = SOFT_SNAP) -> str:
    """A snapshot of guest `timer` made on the soft backend on this host (vmmpy.Machine), cached."""
    elf = guest_elf(table.BY_ID["timer-smp1"])
    inputs = [elf] + [os.path.join(ROOT, "vmmpy", f) for f in os.listdir(os.path.join(ROOT, "vmmpy")) if ".so" in f]
    if os.path.exists(path) and all(os.path.getmtime(path) >= os.path.getmtime(f) for f in inputs):
        return path  # made by this build of libvmm (a new one may write another format version)
    try:
        import vmmpy
    except ImportError as e:
        raise NestedError(f"the soft snapshot needs vmmpy built here (python setup.py build_ext --inplace): {e}") from e
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with vmmpy.Machine(elf, backend="soft", deterministic=True) as m:
        m.stop_at(1_000_000)
        m.run(timeout=60)
        m.snapshot(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def _run_lines(rid: str, cmd: str) -> list[str]:
    return [
        f'echo "{MARK} BEGIN {rid}"',
        "read t0 _ </proc/uptime",
        f"{cmd} 2>/tmp/err </dev/null",
        "rc=$?",
        "read t1 _ </proc/uptime",
        f'printf "\\n{MARK} END {rid} rc=%d t=%s-%s\\n" $rc $t0 $t1',
        f"sed 's/^/{MARK} STDERR {rid} /' /tmp/err",
    ]


def snapshots(snap_runs: dict[str, tuple[str, str]] | None = None) -> tuple[dict[str, str], list[str]]:
    """(files, extra) for boot(): for each name in `snap_runs` (default SNAP_RUNS), runs "snap-save-<name>"
    (vmmrun --snapshot-at PATTERN, exits 0 once saved) and "snap-restore-<name>" (vmmrun --restore, in a
    new process), and "snap-soft-on-kvm" (a soft snapshot restored with --backend kvm: exit 2, one line).
    Check them with snap_problems()."""
    snap_runs = SNAP_RUNS if snap_runs is None else snap_runs
    files = {"/snap/soft.snap": soft_snapshot()}
    extra: list[str] = []
    for name, (rid, pattern) in snap_runs.items():
        r = table.BY_ID[rid]
        elf = guest_elf(r)
        inside = f"/guests/{os.path.basename(elf)}"
        files[inside] = elf
        snap = f"/tmp/{name}.snap"
        common = f"/vmmrun --backend kvm --timeout {r.timeout:g} --stats"
        its = " --its" if r.its else ""
        extra += _run_lines(f"snap-save-{name}", f"{common} --cpus {r.cpus}{its} --snapshot-at {shlex.quote(pattern)} "
                                                 f"--snapshot-out {snap} {inside}")  # fmt: skip
        extra += _run_lines(f"snap-restore-{name}", f"{common} --restore {snap}")
        extra.append(f"rm -f {snap}")
    extra += _run_lines("snap-soft-on-kvm", "/vmmrun --backend kvm --timeout 30 --restore /snap/soft.snap")
    return files, extra


def _shape(text: str) -> list[str]:
    """The output's lines with every number masked (timings differ from run to run), sorted (two vCPUs'
    lines interleave differently)."""
    return sorted(re.sub(r"0x[0-9a-f]+|-?\d+", "N", line) for line in table.lines(text))


def snap_problems(n: Nested, name: str, snap_runs: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """What is wrong with the snapshot round trip `name` (of SNAP_RUNS) in `n`: [] if it passed."""
    rid, pattern = (SNAP_RUNS if snap_runs is None else snap_runs)[name]
    run = table.BY_ID[rid]
    save, rest, plain = n.results.get(f"snap-save-{name}"), n.results.get(f"snap-restore-{name}"), n.results.get(rid)
    out = []
    for what, res, want in (("save", save, 0), ("restore", rest, run.vmmrun_rc)):
        if res is None or res.rc is None:
            return out + [f"the {what} run of {name} did not {'start' if res is None else 'finish'}"]
        if res.rc != want:
            out.append(f"{what}: vmmrun exit status {res.rc}, want {want}: " + " | ".join(res.stderr))
    if out:
        return out + [f"save output:\n{save.output[-2000:]}", f"restore output:\n{rest.output[-2000:]}"]
    if not any(line.startswith("vmmrun: snapshot saved to ") for line in save.stderr):
        out.append(f"save: no 'snapshot saved' line: {save.stderr}")
    if pattern not in save.output:
        out.append(f"save: the output does not hold {pattern!r}:\n{save.output[-2000:]}")
    if any(line.startswith("PASS ") for line in table.lines(save.output)):
        out.append(f"save: the guest finished before the snapshot:\n{save.output[-2000:]}")
    if not any("backend=kvm" in line for line in rest.stderr):
        out.append(f"restore: not on kvm: {rest.stderr}")
    whole = save.output + rest.output
    out += [f"save + restore: {p}" for p in table.check(run, whole)]
    plain_ok = plain is not None and plain.rc is not None and not table.check(run, plain.output)
    if plain_ok and _shape(whole) != _shape(plain.output):
        out.append(f"save + restore printed other lines than the uninterrupted run:\n--- uninterrupted:\n"
                   f"{plain.output}\n--- save:\n{save.output}\n--- restore:\n{rest.output}")  # fmt: skip
    return out


def soft_on_kvm_problems(res: Result) -> list[str]:
    """A soft snapshot restored with --backend kvm: refused, exit 2, one line saying why."""
    out = []
    if res.rc != 2:
        out.append(f"exit status {res.rc}, want 2")
    if len(res.stderr) != 1 or not res.stderr[0].startswith("vmmrun: "):
        out.append(f"want one 'vmmrun: ...' line on stderr, got {res.stderr}")
    elif "made on the soft backend; it cannot be restored on kvm" not in res.stderr[0]:
        out.append(f"the line does not say soft vs kvm: {res.stderr[0]}")
    if res.output.strip():
        out.append(f"the guest printed something: {res.output[:500]!r}")
    return out


# A debugger on the host against vmmrun --gdb inside: the nested VM gets QEMU's user network (a virtio-net
# NIC, the Debian kernel's virtio_net module) with host port -> GDB_PORT forwarded; its init brings eth0
# up, starts each run's vmmrun in the background and, once vmmrun prints where its server listens, says
# "@@@ GDB-READY <id>" on the console: boot()'s watchers start gdb-multiarch on the host then.
GDB_PORT = 1234
GDB_MODULES = ("virtio_mmio", "virtio_net")


def gdb_runs(
    runs: dict[str, str], elf: str, *, cpus: int = 2, timeout: float = 300
) -> tuple[dict[str, str], list[str]]:
    """(files, extra) for boot(): for each {id: vmmrun options}, vmmrun --backend kvm --gdb 0.0.0.0:GDB_PORT
    `options` on `elf` as run `id`, announced by "@@@ GDB-READY <id>". Pass modules=GDB_MODULES and
    gdb_port= to boot()."""
    inside = f"/guests/{os.path.basename(elf)}"
    extra = [
        "ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up || ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up",
    ]
    for rid, opts in runs.items():
        extra += [
            f'echo "{MARK} BEGIN {rid}"',
            "read t0 _ </proc/uptime",
            "rm -f /tmp/err",
            f"/vmmrun --backend kvm --cpus {cpus} --timeout {timeout:g} --gdb 0.0.0.0:{GDB_PORT} {opts} {inside} "
            "2>/tmp/err </dev/null &",
            "pid=$!",
            "n=0; while ! grep -q 'gdb server on' /tmp/err 2>/dev/null && kill -0 $pid 2>/dev/null && [ $n -lt 120 ]; "
            "do sleep 1; n=$((n+1)); done",
            f'echo "{MARK} GDB-READY {rid}"',
            "wait $pid",
            "rc=$?",
            "read t1 _ </proc/uptime",
            f'printf "\\n{MARK} END {rid} rc=%d t=%s-%s\\n" $rc $t0 $t1',
            f"sed 's/^/{MARK} STDERR {rid} /' /tmp/err",
        ]
    return {inside: elf}, extra


class Console:
    """The nested console as it arrives, for watchers running beside boot() (thread-safe)."""

    def __init__(self):
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.closed = False

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, pattern: bytes, start: int = 0, timeout: float = 600) -> int:
        """The offset just past the first `pattern` at or after `start`; -1 on timeout or the end of the boot."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                i = self._buf.find(pattern, start)
                if i >= 0:
                    return i + len(pattern)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return -1
                self._cond.wait(left)


# -- booting ----------------------------------------------------------------------------------


def qemu_command(kernel: str, initrd: str, *, smp: int = 2, mem: int = 1024, append: str = APPEND,
                 gdb_port: int = 0) -> list[str]:  # fmt: skip
    """`gdb_port`: a host port forwarded (user networking, 127.0.0.1 only) to GDB_PORT inside."""
    q = shutil.which("qemu-system-aarch64")
    if not q:
        raise NestedError("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    net = []
    if gdb_port:
        net = ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{gdb_port}-:{GDB_PORT}",
               "-device", "virtio-net-device,netdev=n0"]  # fmt: skip
    return [q, "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max,pauth-impdef=on", "-smp", str(smp),
            "-m", str(mem), "-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
            "-append", append, *net]  # fmt: skip


def parse(console: str) -> tuple[bool, list[str], dict[str, Result], bool]:
    # the nested console is a tty with ONLCR: every "\n" written inside arrives as "\r\n"; undo that
    # so each run's output holds the bytes its guest wrote ("\r\n" from the guest came as "\r\r\n")
    console = console.replace("\r\n", "\n")
    kvm = f"{MARK} KVM present" in console
    dmesg = [m.group(1) for m in re.finditer(r"^@@@ DMESG (.*?)\r?$", console, re.M)]
    results: dict[str, Result] = {}
    for b in BEGIN_RE.finditer(console):
        rid = b.group(1)
        start = b.end() + 1  # past the newline
        res = Result(rid)
        end = END_RE.search(console, b.end())
        nxt = BEGIN_RE.search(console, b.end())
        if end and end.group(1) == rid and (nxt is None or end.start() < nxt.start()):
            res.output = console[start : end.start()]  # END_RE's leading "\n" is the init's, not the guest's
            res.rc = int(end.group(2))
            res.seconds = max(float(end.group(4)) - float(end.group(3)), 0.0)
        else:
            res.output = console[start : nxt.start() if nxt else len(console)]
        res.stderr = [m.group(1) for m in re.finditer(rf"^@@@ STDERR {re.escape(rid)} (.*?)\r?$", console, re.M)]
        results[rid] = res
    return kvm, dmesg, results, f"{MARK} ALL-DONE" in console


def boot(runs: list[table.Run] | None = None, *, raw: int = 0, smp: int = 2, mem: int = 1024,
         timeout: float | None = None, backend: str = "kvm", extra: Iterable[str] = (),
         files: dict[str, str] | None = None, echo: bool = False, modules: Iterable[str] = (),
         gdb_port: int = 0, watchers: Iterable[Callable[[Console], None]] = ()) -> Nested:  # fmt: skip
    """Boot the nested VM once with all `runs` (default: every run that applies to KVM) and parse its console.

    Each of `watchers` runs on a thread of its own beside the boot with the console as it arrives (to drive
    a debugger); boot() waits for them before it returns."""
    runs = table.select("kvm") if runs is None else runs
    kernel = fetch_debian.kernel()
    initrd = build_initramfs(runs, raw=raw, backend=backend, extra=extra, files=files, modules=modules)
    if timeout is None:
        timeout = BOOT_OVERHEAD + sum(r.timeout + 10 for r in runs) + (30 + raw * 0.003 if raw else 0)
    cmd = qemu_command(kernel, initrd, smp=smp, mem=mem, gdb_port=gdb_port)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    live = Console()
    threads = [threading.Thread(target=w, args=(live,), daemon=True) for w in watchers]
    for t in threads:
        t.start()
    buf = bytearray()
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    rc = None
    try:
        while True:
            try:
                chunk = os.read(proc.stdout.fileno(), 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                buf += chunk
                live.feed(chunk)
                if echo:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                continue
            if chunk == b"" or proc.poll() is not None:
                rest = proc.stdout.read() or b""
                buf += rest
                if echo and rest:
                    sys.stdout.write(rest.decode(errors="replace"))
                break
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
        proc.stdout.close()
        live.close()
        for t in threads:
            t.join()
    wall = time.monotonic() - t0
    console = buf.decode(errors="replace")
    kvm, dmesg, results, done = parse(console)
    console = console.replace("\r\n", "\n")
    return Nested(console, rc if done else None, wall, kvm, dmesg, results, done)


def shell(runs: list[table.Run], *, raw: int = 0, smp: int = 2, mem: int = 1024, backend: str = "kvm") -> int:
    """The same VM with the console on this terminal and a shell after the runs (exit: `poweroff -f`)."""
    initrd = build_initramfs(runs, raw=raw, shell=True, backend=backend)
    print(f"nested: {initrd}; Ctrl-A X quits QEMU", file=sys.stderr)
    return subprocess.call(qemu_command(fetch_debian.kernel(), initrd, smp=smp, mem=mem))


# -- the command line -------------------------------------------------------------------------


def report(n: Nested, runs: list[table.Run], verbose: bool) -> int:
    print(f"nested boot: {n.wall:.1f} s wall, /dev/kvm {'present' if n.kvm else 'ABSENT'}, "
          f"KVM mode {n.kvm_mode or 'not initialised'}, init {'finished' if n.done else 'did NOT finish'}")  # fmt: skip
    for line in n.dmesg:
        print(f"  dmesg: {line.strip()}")
    bad = 0
    for r in runs:
        res = n.results.get(r.id)
        if res is None or res.rc is None:
            verdict, problems = "NOT RUN" if res is None else "NO END", []
        else:
            problems = table.check(r, res.output)
            if res.rc != r.vmmrun_rc:
                problems.insert(0, f"vmmrun exit status {res.rc}, want {r.vmmrun_rc}")
            verdict = "ok" if not problems else "FAIL"
        bad += verdict != "ok"
        secs = f"{res.seconds:6.2f} s" if res and res.seconds is not None else "   -    "
        rc = res.rc if res and res.rc is not None else "-"
        print(f"{r.id:<14} {verdict:<8} rc={rc!s:<4} {secs}")
        if res:
            for line in res.stderr:
                print(f"    stderr: {line}")
        if verdict != "ok" or verbose:
            for p in problems:
                print("    " + p.replace("\n", "\n    "))
            if res and (verbose or not problems):
                print("    " + res.output.replace("\r", "").rstrip().replace("\n", "\n    "))
    lx = n.results.get("linux")
    if lx:
        ok = lx.rc == 0 and re.search(initramfs.MARKER_RE.decode(), lx.output) and "reboot: Power down" in lx.output
        bad += not ok
        secs = f"{lx.seconds:6.2f} s" if lx.seconds is not None else ""
        print(f"{'linux':<14} {'ok' if ok else 'FAIL':<8} rc={lx.rc!s:<4} {secs}")
        for line in lx.stderr:
            print(f"    stderr: {line}")
        if not ok or verbose:
            print("    " + "\n    ".join(lx.output.replace("\r", "").splitlines()[-40:]))
    for name in SNAP_RUNS:
        if f"snap-save-{name}" not in n.results:
            continue
        problems = snap_problems(n, name)
        bad += bool(problems)
        times = [n.results[f"snap-{k}-{name}"].seconds for k in ("save", "restore") if f"snap-{k}-{name}" in n.results]
        print(f"{'snap ' + name:<22} {'FAIL' if problems else 'ok':<8} "
              + " + ".join(f"{t:.2f} s" for t in times if t is not None))  # fmt: skip
        for p in problems:
            print("    " + p.replace("\n", "\n    "))
        if verbose:
            for k in ("save", "restore"):
                res = n.results[f"snap-{k}-{name}"]
                print(f"    {k}: " + " | ".join(res.stderr))
                print("    " + res.output.replace("\r", "").rstrip().replace("\n", "\n    "))
    soft = n.results.get("snap-soft-on-kvm")
    if soft:
        problems = soft_on_kvm_problems(soft)
        bad += bool(problems)
        print(f"{'snap soft-on-kvm':<22} {'FAIL' if problems else 'ok':<8} " + " | ".join(soft.stderr))
        for p in problems:
            print("    " + p)
    raw = n.results.get("kvm_raw")
    if raw:
        print("kvm_raw:\n    " + raw.output.replace("\r", "").rstrip().replace("\n", "\n    "))
    if not n.done:
        print("console ends with:\n" + "\n".join(n.console.replace("\r", "").splitlines()[-40:]))
    return 1 if bad or not n.done or not n.kvm else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", "-g", action="append", metavar="ID", help="a run id or guest name (repeatable)")
    ap.add_argument("--shell", action="store_true", help="console on this terminal, a shell after the runs")
    ap.add_argument("--raw", type=int, default=0, metavar="N", help="also run bench/kvm_raw N (N MMIO exits each way)")
    ap.add_argument("--linux", action="store_true", help="also boot Debian's kernel on vmmrun --backend kvm")
    ap.add_argument(
        "--snapshots",
        action="store_true",
        help="also the KVM snapshot round trips (SNAP_RUNS) and a soft snapshot restored on KVM",
    )
    ap.add_argument("--backend", default="kvm", help="vmmrun --backend inside (default kvm)")
    ap.add_argument("--smp", type=int, default=2, help="CPUs of the nested VM (default 2)")
    ap.add_argument("--mem", type=int, default=1024, help="MiB of the nested VM (default 1024)")
    ap.add_argument("--timeout", type=float, help="host seconds for the whole boot (default: from the runs)")
    ap.add_argument("--echo", action="store_true", help="copy the console here as it arrives")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every run's output")
    ap.add_argument("--list", action="store_true", help="list the runs of tests/guests.py and exit")
    args = ap.parse_args()
    if args.list:
        for r in table.RUNS:
            where = "kvm" if r.applies("kvm") else f"not on kvm: {r.why_not.get('kvm', '')}"
            print(f"{r.id:<14} cpus={r.cpus} end={r.end} status={r.status} {where}")
        return 0
    try:
        runs = runs_by_id(args.guest)
        if args.shell:
            return shell(runs, raw=args.raw, smp=args.smp, mem=args.mem, backend=args.backend)
        files, extra = linux() if args.linux else ({}, [])
        if args.snapshots:
            f2, e2 = snapshots()
            files, extra = {**files, **f2}, extra + e2
        timeout = args.timeout or (
            BOOT_OVERHEAD
            + sum(r.timeout + 10 for r in runs)
            + (30 + args.raw * 0.003) * bool(args.raw)
            + 300 * args.linux
            + sum(2 * table.BY_ID[rid].timeout + 20 for rid, _ in SNAP_RUNS.values()) * args.snapshots
        )
        n = boot(runs, raw=args.raw, smp=args.smp, mem=args.mem + 1024 * args.linux, timeout=timeout,
                 backend=args.backend, extra=extra, files=files, echo=args.echo)  # fmt: skip
    except (NestedError, fetch_debian.FetchError, initramfs.InitramfsError) as e:
        print(f"nested: {e}", file=sys.stderr)
        return 2
    return report(n, runs, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
