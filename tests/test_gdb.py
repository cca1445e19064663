"""The GDB stub (docs/gdb.md): gdb-multiarch in batch mode against guest/gdb_target.c, on vmmpy and, with the
same script, on QEMU's gdbstub (-gdb tcp:... -S) as the reference; the protocol's error paths over a raw
socket; deterministic-mode reproducibility; the guest's clock standing still while held."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import vmmpy
from vmmpy import errors

from .conftest import ROOT

GDB = shutil.which("gdb-multiarch")
QEMU = shutil.which("qemu-system-aarch64")
# gdb and QEMU are not ours: the sanitizer run's LD_PRELOAD (tools/asan.sh) is not for them
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
needs_gdb = pytest.mark.skipif(not GDB, reason="gdb-multiarch is not installed (apt-get install gdb-multiarch)")

# The session of issue 18: break at a symbol, registers, memory, stepi, a watchpoint on a guest store,
# info threads on 2 vCPUs, then the guest released with a status the debugger chose, reported as the
# inferior's exit. The guest has no debug info: its variables are read through casts. All-stop: vCPU 1's
# spin counter (gdb_spins[1]) does not move while the VM is held, nor while vCPU 0 alone steps
# (scheduler-locking: gdb sends vCont;s:1), and the guest's clock stands still while held (check_clock). The
# same script runs on every target: only {addr} differs
# (tests/test_kvm_nested.py runs it against KVM in a nested VM).
SESSION = """
set pagination off
set confirm off
set remotetimeout 120
target remote {addr}
info registers pc
break gdb_tick
continue
info registers x0 pc
x/1gx &gdb_tick
set scheduler-locking step
x/1gx (char *)&gdb_spins + 8
shell sleep 1
x/1gx (char *)&gdb_spins + 8
stepi
info registers pc
x/1gx (char *)&gdb_spins + 8
delete
watch *(unsigned long *)&gdb_counter
continue
info threads
delete
x/1gx &gdb_counter
set var *(int *)&gdb_status = 5
set var *(int *)&gdb_release = 1
continue
"""


# Ctrl-C (SIGINT to gdb once the guest says it is ready) of a running SMP guest, each vCPU's registers, then a
# detach: the guest runs on to its end (exit 0).
INTERRUPT_SESSION = """
set pagination off
set remotetimeout 120
target remote {addr}
continue
info threads
set var *(int *)&gdb_status = 0
set var *(int *)&gdb_release = 1
detach
"""
READY = "gdb_target: 2 cpu(s) ready"

# A hardware breakpoint (Z1), then kill ends the VM (vmmrun: "the debugger killed the VM"; Machine:
# RunReason.STOPPED, and it cannot run again).
KILL_SESSION = """
set pagination off
set confirm off
set remotetimeout 120
target remote {addr}
hbreak gdb_tick
continue
info registers x0
kill
"""


def check_clock(serial: str) -> None:
    """SESSION held the VM over a second inside gdb_tick(1): the guest's virtual counter saw much less of it."""
    m = re.search(r"the last gdb_tick took (\d+) ticks at (\d+) Hz", serial)
    assert m, serial
    assert int(m.group(1)) < int(m.group(2)) // 2, m.group(0)  # under half the second it was held


def check_interrupt(out: str) -> None:
    assert "received signal SIGINT" in out, out
    pcs = re.findall(r"Thread (?:1\.)?\d \(.*?\) (0x[0-9a-f]+)", out)
    assert len(pcs) == 2 and pcs[0] != pcs[1], out  # each vCPU's own registers (gdb_tick/main and spinner)
    assert "detached" in out.lower(), out


def check_kill(out: str) -> None:
    assert "Hardware assisted breakpoint 1 at" in out, out
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in gdb_tick", out), out
    assert re.search(r"x0\s+0x1\s", out), out
    assert "[Inferior 1 (Remote target) killed]" in out, out


def run_gdb(elf: str, script: str, tmp_path, timeout: float = 60) -> str:
    path = tmp_path / "session.gdb"
    path.write_text(script)
    r = subprocess.run(
        [GDB, "-nx", "-batch", "-x", str(path), elf], capture_output=True, text=True, timeout=timeout, env=TOOL_ENV
    )
    return r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Qemu:
    """The reference: QEMU's virt board with its gdbstub, the guest held before its first instruction."""

    def __init__(self, elf: str, cpus: int = 2):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        cmd = [QEMU, "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-smp", str(cpus), "-m", "256",
               "-nographic", "-semihosting", "-kernel", elf, "-gdb", f"tcp:{self.addr}", "-S"]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=TOOL_ENV
        )

    def read_until(self, marker: bytes) -> str:
        self._seen = b""
        while marker not in self._seen:
            line = self.proc.stdout.readline()
            if not line:
                break
            self._seen += line
        return ""

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (getattr(self, "_seen", b"") + out).decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_session(out: str) -> None:
    """What the same script must show on every target."""
    assert re.search(r"pc\s+0x40080000\s.*<_start>", out), out  # held before the first instruction
    assert re.search(r"hit Breakpoint 1, 0x[0-9a-f]+ in gdb_tick", out), out
    assert re.search(r"x0\s+0x1\s", out), out  # gdb_tick(1)
    assert re.search(r"pc\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <gdb_tick\+4>", out), out  # stepi: one instruction
    assert "Hardware watchpoint 2: *(unsigned long *)&gdb_counter" in out, out
    assert re.search(r"Old value = 0\s+New value = 1", out), out  # the store after the stepi fired it
    # vmmpy: "Thread 2 (vCPU 1)"; QEMU (multiprocess): "Thread 1.2 (CPU#1 [running])"
    assert re.search(r"\* 1\s+Thread (1\.)?1 ", out) and re.search(r"\n\s+2\s+Thread (1\.)?2 ", out), out
    assert re.search(r"<gdb_counter>:\s+0x0000000000000001", out), out
    spins = re.findall(r"<gdb_spins\+8>:\s+(0x[0-9a-f]+)", out)
    assert len(spins) == 3 and len(set(spins)) == 1, out  # held, then vCPU 0 alone stepped: vCPU 1 stood still
    assert "exited with code 05" in out, out


# The backends a debugger can attach to here: one run loop, and a thread per vCPU (all-stop parks them all).
LOCAL_BACKENDS = ["soft", "soft-threaded"]


@needs_gdb
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_gdb_session_on_vmmpy(guest, tmp_path, backend):
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, cpus=2, gdb=0, gdb_wait=True, timeout=120, backend=backend) as m:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", m.gdb_address)
        m.start()
        out = run_gdb(elf, SESSION.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=30)
    check_session(out)
    assert res.reason == vmmpy.RunReason.POWEROFF and res.exit_status == 5
    assert "gdb_target: released at 1, exit 5" in m.serial.text
    check_clock(m.serial.text)


# A breakpoint on the HVC in smccc_hvc (its first call, guest/psci.c's unknown function ID), a stepi over it, then
# the guest runs to its end. On one vCPU in real time the fast engine serves the call inside the block
# (uc_vmmpy_call_hook): the step still ends past the call with SMCCC's NOT_SUPPORTED in x0, x1 as it was.
HVC_SESSION = """
set pagination off
set confirm off
set remotetimeout 120
target remote {addr}
break *((char *)&smccc_hvc + 4)
continue
info registers x0 x1 pc
stepi
info registers x0 x1 pc
delete
continue
"""


@needs_gdb
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_gdb_steps_over_an_hvc(guest, tmp_path, backend):
    elf = guest("psci")
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, timeout=120, backend=backend) as m:
        m.start()
        out = run_gdb(elf, HVC_SESSION.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=30)
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in smccc_hvc", out), out
    regs = re.findall(r"x0\s+(0x[0-9a-f]+).*?\n\s*x1\s+(0x[0-9a-f]+).*?\n\s*pc\s+(0x[0-9a-f]+)", out)
    assert len(regs) == 2, out
    (x0a, x1a, pca), (x0b, x1b, pcb) = regs
    assert x0a == "0x8400ffff" and x0b == "0xffffffffffffffff" and x1b == x1a, out  # NOT_SUPPORTED; x1 kept
    assert int(pcb, 16) == int(pca, 16) + 4, out  # one instruction: past the call
    assert res.reason == vmmpy.RunReason.POWEROFF and "ALL PASS" in m.serial.text


# A write watchpoint on gdb_atomic, which gdb_atomics() sets to 1 by LDXR/STXR, 2 by CAS and 3 by LDADD (cpu
# model max has LSE): each store stops in gdb_atomics, then the guest is released.
ATOMICS_SESSION = """
set pagination off
set confirm off
set remotetimeout 120
target remote {addr}
watch *(unsigned long *)&gdb_atomic
continue
continue
continue
delete
set var *(int *)&gdb_status = 6
set var *(int *)&gdb_release = 1
continue
"""


@needs_gdb
@pytest.mark.parametrize("vcpu_threads", ["per-vcpu", "one"])
def test_gdb_watchpoint_on_atomics(guest, tmp_path, vcpu_threads):
    """With a thread per vCPU, exclusives, CAS and LSE atomics take the engine's atomic path
    (third_party/unicorn/parallel.patch), which must call the memory hooks a watchpoint uses; on one thread
    they are plain accesses. Either way each of the three stores stops in gdb_atomics."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, cpus=2, cpu_model="max", gdb=0, gdb_wait=True, timeout=120,
                       vcpu_threads=vcpu_threads) as m:  # fmt: skip
        m.start()
        out = run_gdb(elf, ATOMICS_SESSION.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=30)
    stops = re.findall(r"Old value = (\d+)\s+New value = (\d+)\s+(?:0x[0-9a-f]+ in )?(\w+)", out)
    assert stops == [("0", "1", "gdb_atomics"), ("1", "2", "gdb_atomics"), ("2", "3", "gdb_atomics")], out
    assert res.reason == vmmpy.RunReason.POWEROFF and res.exit_status == 6, out
    assert "gdb_target: 2 cpu(s) ready, atomic 3" in m.serial.text


@needs_gdb
@pytest.mark.skipif(not QEMU, reason="qemu-system-aarch64 is not installed")
def test_gdb_session_on_qemu_reference(guest, tmp_path):
    elf = guest("gdb_target")
    q = Qemu(elf)
    try:
        out = run_gdb(elf, SESSION.format(addr=q.addr), tmp_path)
        rc, console = q.wait()
    finally:
        q.close()
    check_session(out)
    assert rc == 5 and "gdb_target: released at 1, exit 5" in console
    check_clock(console)


@needs_gdb
def test_gdb_system_registers_and_physical_memory(guest, tmp_path):
    """The system-register feature and the monitor commands (vmmpy's own: QEMU 7.2 has neither for this CPU)."""
    elf = guest("gdb_target")
    script = """
set pagination off
target remote {addr}
break gdb_tick
continue
p/x $sctlr_el1
p/x $tcr_el1
p/x $vbar_el1
monitor translate 0x40080000
monitor phys on
x/1wx 0x40080000
monitor phys off
monitor info
monitor bogus
x/1wx 0x40080000
delete
hbreak gdb_tick
set debug remote 1
continue
set debug remote 0
kill
"""
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=30)
        insn = int.from_bytes(m.read_memory(0x40080000, 4), "little")
    sctlr = int(re.search(r"\$1 = (0x[0-9a-f]+)", out).group(1), 16)
    assert sctlr & 1, out  # the guest turned its MMU on: memory reads below went through the walk
    assert re.search(r"0x40080000 -> physical 0x40080000 \(vCPU 0\)", out), out
    assert out.count(f"0x40080000 <_start>:\t0x{insn:08x}") == 2, out  # physical and virtual agree
    assert "backend soft, real-time mode" in out, out
    assert "unknown command 'bogus'" in out, out
    assert re.search(r"Breakpoint 2, 0x[0-9a-f]+ in gdb_tick", out), out  # hbreak: a hardware breakpoint
    assert "Packet received: T05hwbreak:;thread:1;" in out, out  # and reported as one
    # kill ends the VM: the run stops and the VM cannot run again
    assert res.reason == vmmpy.RunReason.STOPPED
    with pytest.raises(errors.VmmError):
        m.run(timeout=1)


@needs_gdb
@pytest.mark.parametrize("target", [*LOCAL_BACKENDS, "qemu"])
def test_gdb_interrupt_and_detach(guest, tmp_path, target):
    """Ctrl-C (SIGINT to gdb, which sends ^C) stops a running guest; after a detach the guest runs on."""
    if target == "qemu" and not QEMU:
        pytest.skip("qemu-system-aarch64 is not installed")
    elf = guest("gdb_target")
    m = q = None
    if target != "qemu":
        m = vmmpy.Machine(elf, cpus=2, gdb=0, gdb_wait=True, timeout=120, backend=target)
        m.start()
        addr = m.gdb_address
    else:
        q = Qemu(elf)
        addr = q.addr
    script = tmp_path / "s.gdb"
    script.write_text(INTERRUPT_SESSION.format(addr=addr))
    try:
        p = subprocess.Popen([GDB, "-nx", "-batch", "-x", str(script), elf], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=TOOL_ENV)  # fmt: skip
        assert p.stdout
        # gdb continued when the guest speaks (gdb's own output to a pipe is not flushed line by line)
        if m:
            m.serial.expect("gdb_target: 2 cpu\\(s\\) ready", timeout=60)
            seen = ""
        else:
            seen = q.read_until(b"ready")
        p.send_signal(signal.SIGINT)
        out = seen + p.communicate(timeout=60)[0]
        check_interrupt(out)
        if m:
            res = m.wait(timeout=30)  # detached: the guest ran on to its end
            assert res.reason == vmmpy.RunReason.POWEROFF and res.exit_status == 0
            assert "gdb_target: released" in m.serial.text
        else:
            rc, console = q.wait()
            assert rc == 0 and "gdb_target: released" in console
    finally:
        if m:
            m.close()
        if q:
            q.close()


@needs_gdb
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_gdb_kill_session(guest, tmp_path, backend):
    """KILL_SESSION (also run against KVM in tests/test_kvm_nested.py): kill ends the run for good."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, cpus=2, gdb=0, gdb_wait=True, timeout=120, backend=backend) as m:
        m.start()
        out = run_gdb(elf, KILL_SESSION.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=30)
        check_kill(out)
        assert res.reason == vmmpy.RunReason.STOPPED
        with pytest.raises(errors.VmmError):
            m.run(timeout=1)


def raw_packet(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + b"%02x" % (sum(payload) & 0xFF)


class RawGdb:
    """A socket speaking the protocol byte for byte: the error paths gdb itself never takes."""

    def __init__(self, addr: str):
        if addr.startswith("unix:"):
            self.s = socket.socket(socket.AF_UNIX)
            self.s.connect(addr[5:])
        else:
            host, port = addr.rsplit(":", 1)
            self.s = socket.create_connection((host, int(port)))
        self.s.settimeout(20)
        self.buf = b""

    def send(self, raw: bytes) -> None:
        self.s.sendall(raw)

    def reply(self) -> bytes:
        """The next packet's payload (acks skipped)."""
        while True:
            m = re.match(rb"[+-]*\$([^#]*)#[0-9a-f]{2}", self.buf)
            if m:
                self.buf = self.buf[m.end() :]
                return m.group(1)
            data = self.s.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data

    def ask(self, payload: bytes) -> bytes:
        self.send(raw_packet(payload))
        return self.reply()

    def close(self) -> None:
        self.s.close()


def test_gdb_malformed_and_oversized_packets(guest, tmp_path):
    sock = tmp_path / "gdb.sock"
    with vmmpy.Machine(guest("gdb_target"), gdb=f"unix:{sock}", gdb_wait=True, timeout=120) as m:
        assert m.gdb_address == f"unix:{sock}"
        m.start()
        g = RawGdb(m.gdb_address)
        assert g.ask(b"?").startswith(b"T05thread:1;")
        g.send(b"$g#00")  # wrong checksum: a '-' asks for it again
        assert g.s.recv(1) == b"-"
        assert g.ask(b"G" + b"z" * 40) == b"E01"
        assert g.ask(b"m40080000") == b"E01"
        assert g.ask(b"mffffffffffffffffff,4") == b"E01"  # 18 hex digits
        assert g.ask(b"m0,4") == b"E14"  # not RAM (the MMU is still off: flat)
        assert g.ask(b"p9999") == b"E01"
        assert g.ask(b"Z9,0,4") == b"E01"
        assert g.ask(b"Z2,40000000,0") == b"E22"
        assert g.ask(b"Z2,fffffffffffffff0,20") == b"E22"  # wraps past 2^64: never matches
        assert g.ask(b"vCont;x") == b"E01"
        assert g.ask(b"Hg9") == b"E22"  # no vCPU 8
        assert g.ask(b"Hg99") == b"E01"  # beyond any thread id
        assert g.ask(b"qRcmd,4") == b"E01"
        assert g.ask(b"qXfer:features:read:other.xml:0,10") == b"E00"
        assert g.ask(b"unknown") == b""
        g.send(raw_packet(b"m" + b"0" * 20000))  # longer than PacketSize
        assert g.reply() == b"E22"
        xml = b""
        while True:
            r = g.ask(b"qXfer:features:read:target.xml:%x,400" % len(xml))
            xml += r[1:]
            if r[:1] == b"l":
                break
        assert b"org.gnu.gdb.aarch64.core" in xml and b"org.gnu.gdb.aarch64.fpu" in xml
        assert b'name="esr_el1"' in xml and b'name="ttbr1_el1"' in xml and xml.endswith(b"</target>")
        assert g.ask(b"qfThreadInfo") == b"m1" and g.ask(b"qsThreadInfo") == b"l"
        pc = g.ask(b"p20")
        assert int.from_bytes(bytes.fromhex(pc.decode()), "little") == 0x40080000
        assert g.ask(b"D") == b"OK"  # detach: the guest runs on
        g.close()
        m.serial.expect("gdb_target: 1 cpu\\(s\\) ready", timeout=30)


def test_gdb_access_marks_the_vm_busy(guest, tmp_path):
    """While the debugger reads a stopped VM's vCPUs, the host's calls that touch them get VMM_EBUSY (they
    would race the server thread); once it is quiet they go through."""
    with vmmpy.Machine(guest("gdb_target"), gdb=f"unix:{tmp_path / 'g.sock'}", gdb_wait=True, timeout=120) as m:
        m.start()
        g = RawGdb(m.gdb_address)
        assert g.ask(b"?").startswith(b"T05")
        m.stop()  # paused by the host, the debugger still attached: it may read the vCPUs
        done = threading.Event()
        regs = []

        def hammer():
            while not done.is_set():
                regs.append(g.ask(b"g"))

        t = threading.Thread(target=hammer)
        t.start()
        busy, ok, deadline = 0, 0, time.monotonic() + 20
        try:
            while not busy and time.monotonic() < deadline:
                try:
                    m.sysreg_read("CNTV_CTL_EL0")
                    ok += 1
                except errors.Busy as e:
                    assert "while the debugger accesses the VM" in str(e)
                    busy += 1
        finally:
            done.set()
            t.join()
        assert busy, (ok, len(regs))
        assert len(set(regs)) == 1 and len(regs[0]) == 2 * (31 * 8 + 8 + 8 + 4 + 32 * 16 + 4 + 4), regs[:2]
        m.sysreg_read("CNTV_CTL_EL0")  # the debugger is quiet: the host's call goes through
        g.close()


def test_gdb_refused_on_hvf(guest):
    """hvf lets only a vCPU's own thread touch its registers (docs/gdb.md): one clear error, not a hang."""
    with pytest.raises(errors.VmmError, match="the hvf backend cannot be debugged yet"):
        vmmpy.Machine(guest("hello"), backend="hvf", gdb=0)


def test_gdb_bad_addresses_are_one_clear_error(guest):
    with pytest.raises(errors.InvalidArgument, match="not \\[HOST:\\]PORT"):
        vmmpy.Machine(guest("hello"), gdb="nonsense")
    with pytest.raises(errors.InvalidArgument, match="gdb must be"):
        vmmpy.Machine(guest("hello"), gdb=1.5)


@needs_gdb
def test_gdb_deterministic_sessions_repeat_exactly(guest, tmp_path):
    """Deterministic mode: the same commands give the same stops, registers and guest clock, run after run."""
    elf = guest("gdb_target")
    script = """
set pagination off
target remote {addr}
break gdb_tick
continue
continue
stepi
stepi
monitor info
info registers x0 x1 pc sp
delete
watch *(unsigned long *)&gdb_counter
continue
monitor info
kill
"""
    outs = []
    for _ in range(2):
        with vmmpy.Machine(elf, cpus=2, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
            m.start()
            out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
            m.wait(timeout=30)
        outs.append(re.sub(r"127\.0\.0\.1:\d+", "ADDR", out))
    assert "deterministic mode, guest clock" in outs[0], outs[0]
    assert outs[0] == outs[1]


@needs_gdb
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_gdb_guest_clock_stands_still_while_held(guest, tmp_path, backend):
    elf = guest("gdb_target")
    script = """
set pagination off
target remote {addr}
break gdb_tick
continue
monitor info
shell sleep 1
monitor info
kill
"""
    with vmmpy.Machine(elf, cpus=2, gdb=0, gdb_wait=True, timeout=120, backend=backend) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
    clocks = [int(c) for c in re.findall(r"guest clock (\d+) ns", out)]
    assert len(clocks) == 2, out
    assert clocks[1] - clocks[0] < 200_000_000, clocks  # a second of host time held: the guest saw almost none


@needs_gdb
def test_gdb_readme_commands(guest, tmp_path):
    """The README's two commands (port 0 for 1234): the CLI prints where it listens and waits; gdb attaches,
    breaks at gdb_tick and kills the VM, which ends the CLI."""
    readme = Path(ROOT, "README.md").read_text()
    block = readme[readme.index("### Debug it with gdb") :]
    run_line = next(ln for ln in block.splitlines() if ln.startswith("python -m vmmpy run"))
    gdb_line = next(ln for ln in block.splitlines() if ln.startswith("gdb-multiarch"))
    argv = run_line.split("#")[0].split()[3:]
    argv[argv.index("--gdb") + 1] = "0"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # this vmmpy
    cli = subprocess.Popen(
        [sys.executable, "-m", "vmmpy", *argv, "--headless"],
        cwd=ROOT,  # the README's paths are relative to the tree
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert cli.stderr
        line = cli.stderr.readline()
        while line and not line.startswith("vmmpy:"):  # a sanitizer run's warnings come first
            line = cli.stderr.readline()
        m = re.match(r"vmmpy: gdb server on (127\.0\.0\.1:\d+) \(the guest waits for it\)", line)
        assert m, line
        args = gdb_line.replace(":1234", m.group(1)).split(" -ex ")
        cmd = [GDB, "-nx", "-batch", args[0].split()[1]]
        for a in args[1:]:
            cmd += ["-ex", a.strip('"')]
        cmd += ["-ex", "info registers x0", "-ex", "kill"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=TOOL_ENV, cwd=ROOT).stdout
        assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in gdb_tick", out), out  # one thread: no "Thread 1 hit"
        assert re.search(r"x0\s+0x1\s", out), out
        rc = cli.wait(timeout=30)
        assert rc != 0  # killed by the debugger: the CLI reports a stopped run
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@needs_gdb
def test_gdb_deterministic_session_leaves_the_run_unchanged(guest, tmp_path):
    """Deterministic mode: breakpoints hit on both vCPUs, steps, then a continue to the end give the same serial
    bytes (smp.elf prints the order in which its CPUs took a lock) and the same final clock as a run without
    a debugger: stops inside a block take back what did not run, and holds leave the schedule alone."""
    elf = guest("smp")
    with vmmpy.Machine(elf, cpus=2, deterministic=True, timeout=120) as plain:
        res = plain.run(timeout=120)
        want = (res.reason, res.exit_status, plain.serial.text, plain.clock_ns)
    script = """
set pagination off
target remote {addr}
break spin_lock
continue
continue
stepi
stepi
info threads
delete
continue
"""
    with vmmpy.Machine(elf, cpus=2, deterministic=True, gdb=0, gdb_wait=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=120)
        got = (res.reason, res.exit_status, m.serial.text, m.clock_ns)
    assert out.count("Breakpoint 1, ") == 2 and "exited normally" in out, out
    assert got == want
