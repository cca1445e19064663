"""Reverse execution in the GDB server (docs/gdb.md "Reverse execution"): gdb-multiarch in batch mode runs
reverse-stepi and reverse-continue against a deterministic guest; what it shows must be what a forward run
shows at the same place, and a run that went back and forth must end exactly as one that did not."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess

import pytest

import vmmpy

from .test_gdb import GDB, TOOL_ENV, needs_gdb

REGS = "info registers x0 x1 x2 x19 x29 x30 sp pc cpsr fpsr\nx/1gx &gdb_counter\nmonitor info\necho @END_\\n\n"


def blocks(out: str) -> dict[str, str]:
    """The text gdb printed after each `echo @NAME` marker up to the next marker, by NAME (@END_ only ends one)."""
    parts = re.split(r"^@(\w+)$", out, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def x0(block: str) -> int:
    m = re.search(r"^x0\s+0x[0-9a-f]+\s+(\d+)", block, re.M)
    assert m, block
    return int(m.group(1))


def run_gdb(elf: str, script: str, tmp_path, timeout: float = 120) -> str:
    """gdb's stdout and stderr as one stream, in order (`monitor` answers go to stderr)."""
    path = tmp_path / "session.gdb"
    path.write_text(script)
    r = subprocess.run(
        [GDB, "-nx", "-batch", "-x", str(path), elf],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=TOOL_ENV,
    )
    return r.stdout


def session(elf: str, script: str, tmp_path, cpus: int = 1):
    with vmmpy.Machine(elf, cpus=cpus, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path, timeout=120)
        res = m.wait(timeout=60)
        return out, (res.reason, res.exit_status, m.serial.text, m.clock_ns, res.pc)


@needs_gdb
def test_reverse_step_and_continue_replay_the_forward_run(guest, tmp_path):
    """reverse-stepi shows the registers, memory and clock a forward stepi showed at each place; reverse-continue
    lands on the previous breakpoint hit (across checkpoint segments, back to main), a watchpoint finds the last
    store, the start of history is gdb's "No more reverse-execution history"; then going forward again ends
    the run exactly as a session that never went back (serial output shown once, same clock and count)."""
    elf = guest("gdb_target")
    steps = "".join(f"echo @F{k}\\n\n{REGS}stepi\n" for k in range(5)) + f"echo @F5\\n\n{REGS}"
    back = "".join(f"reverse-stepi\necho @R{k}\\n\n{REGS}" for k in range(4, -1, -1))
    script = f"""
set pagination off
set confirm off
target remote {{addr}}
monitor reverse interval 1
break gdb_tick
ignore 1 400
continue
{steps}{back}reverse-continue
echo @BC1\\n
info registers x0 pc
reverse-continue
echo @BC2\\n
info registers x0 pc
continue
echo @C\\n
info registers x0 pc
stepi
reverse-continue
echo @C2\\n
info registers x0 pc
delete
watch *(unsigned long *)&gdb_counter
reverse-continue
echo @W\\n
info registers x0 pc
x/1gx &gdb_counter
delete
break main
reverse-continue
echo @MAIN\\n
info registers pc
monitor reverse
delete
reverse-continue
echo @BEGIN\\n
info registers pc
break gdb_tick
ignore $bpnum 399
continue
echo @END\\n
info registers x0
delete
set var *(int *)&gdb_release = 1
continue
"""
    out, got = session(elf, script, tmp_path)
    b = blocks(out)
    assert x0(b["F0"]) == 401, out
    for k in range(5):
        assert b[f"R{k}"] == b[f"F{k}"], (k, b[f"R{k}"], b[f"F{k}"])
    assert b["F0"] != b["F1"] != b["F2"]
    assert "Breakpoint 1, " in b["BC1"] and x0(b["BC1"]) == 400, out
    assert x0(b["BC2"]) == 399 and x0(b["C"]) == 400, out
    assert x0_pc(b["C2"]) == x0_pc(b["C"]), out  # one instruction past a breakpoint: back to that very hit
    # going backwards gdb stops before the store and reports the change as it undoes it
    assert re.search(r"Old value = 399\s+New value = 398", out), out
    assert x0(b["W"]) == 399 and re.search(r"<gdb_counter>:\s+0x000000000000018e", b["W"]), b["W"]
    assert re.search(r"pc\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <main(\+\d+)?>", b["MAIN"]), b["MAIN"]
    n = int(re.search(r"reverse execution: (\d+) checkpoint", b["MAIN"]).group(1))
    # the scan back to main crossed checkpoint segments. Not on the portable host layer: without
    # /proc/self/pagemap a checkpoint reads all of RAM (~65 ms), and at most a tenth of host time goes to
    # checkpoints, so this short run gets only its first one there
    assert n >= (1 if os.environ.get("VMMPY_EXPECT_HOST") == "posix" else 2), b["MAIN"]
    assert "No more reverse-execution history." in out and "<_start>" in b["BEGIN"], b["BEGIN"]
    assert x0(b["END"]) == 400 and "exited with code 03" in out, out

    reference = """
set pagination off
set confirm off
target remote {addr}
break gdb_tick
ignore 1 399
continue
delete
set var *(int *)&gdb_release = 1
continue
"""
    _, want = session(elf, reference, tmp_path)
    assert got == want
    assert got[2].count("cpu(s) ready") == 1 and "released at 400" in got[2], got[2]


@needs_gdb
def test_reverse_on_two_vcpus_leaves_the_run_unchanged(guest, tmp_path):
    """smp.elf on 2 vCPUs: breakpoint hits on both vCPUs, reverse-continue and reverse-stepi, then forward to
    the end: the same serial bytes (the order its CPUs took a lock), exit and clock as a run without gdb."""
    elf = guest("smp")
    with vmmpy.Machine(elf, cpus=2, deterministic=True, timeout=120) as plain:
        res = plain.run(timeout=120)
        want = (res.reason, res.exit_status, plain.serial.text, plain.clock_ns, res.pc)
    script = """
set pagination off
set confirm off
target remote {addr}
monitor reverse interval 1
break spin_lock
continue
echo @HIT1\\n
info registers pc x0
thread
echo @END_\\n
continue
echo @HIT2\\n
info registers pc x0
thread
echo @END_\\n
continue
echo @THIRD\\n
info registers pc x0
thread
echo @END_\\n
reverse-continue
echo @BACK2\\n
info registers pc x0
thread
echo @END_\\n
reverse-continue
echo @BACK1\\n
info registers pc x0
thread
echo @END_\\n
continue
continue
echo @AGAIN\\n
info registers pc x0
thread
echo @END_\\n
stepi
stepi
echo @S2\\n
info registers pc x0 x1 sp
echo @END_\\n
stepi
reverse-stepi
echo @RS\\n
info registers pc x0 x1 sp
echo @END_\\n
delete
continue
"""
    out, got = session(elf, script, tmp_path, cpus=2)
    b = blocks(out)
    assert "thread is 2 " in b["HIT2"] and "thread is 1 " in b["THIRD"], out  # both vCPUs hit
    assert b["BACK2"] == b["HIT2"] and b["BACK1"] == b["HIT1"] and b["AGAIN"] == b["THIRD"], out
    assert b["RS"] == b["S2"], out
    assert "exited normally" in out, out
    assert got == want


@needs_gdb
def test_reverse_is_refused_clearly_outside_deterministic_mode(guest, tmp_path):
    """Real-time mode: qSupported does not offer reverse execution (gdb refuses by itself), a raw bs packet
    gets an E.reason reply, and `monitor reverse` says why."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, timeout=120) as m:
        m.start()
        cmds = ["set pagination off", f"target remote {m.gdb_address}", "reverse-stepi", "maint packet bs",
                "maint packet bc", "monitor reverse", "kill"]  # fmt: skip
        argv = [GDB, "-nx", "-batch"] + [a for c in cmds for a in ("-ex", c)] + [elf]  # -ex goes on after an error
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                             env=TOOL_ENV).stdout  # fmt: skip
    assert "Target remote does not support this command." in out, out
    assert out.count('received: "E.reverse execution needs deterministic mode') == 2, out
    assert "reverse execution needs deterministic mode (--deterministic" in out, out


@needs_gdb
def test_reverse_history_is_kept_within_its_budget(guest, tmp_path):
    """A checkpoint a millisecond of guest time under a 3 MiB budget: the history is thinned to fit (the first
    checkpoint kept), and reverse-continue still finds the previous hit; reverse-finish and reverse-nexti. A
    second of host time at the first tick: checkpoints come at most every nine times the last one's host cost,
    and on a loaded host a fast deterministic run to the 1201st tick could otherwise take only the first."""
    elf = guest("gdb_target")
    script = """
set pagination off
set confirm off
target remote {addr}
monitor reverse interval 1
monitor reverse budget 3
monitor reverse budget 0
break gdb_tick
continue
shell sleep 1
ignore 1 1199
continue
echo @AT\\n
info registers x0
monitor reverse
reverse-continue
echo @BACK\\n
info registers x0 x30
delete
stepi
reverse-finish
echo @FINISH\\n
info registers pc
reverse-nexti
echo @NEXTI\\n
info registers pc
kill
"""
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path, timeout=120)
    b = blocks(out)
    assert "usage: monitor reverse" in out, out  # budget 0 is refused
    m = re.search(r"reverse execution: (\d+) checkpoint\(s\), ([\d.]+) MiB of 3 MiB, one every 1 ms", b["AT"])
    assert m, b["AT"]
    assert int(m.group(1)) >= 2 and float(m.group(2)) <= 3.0, b["AT"]
    assert x0(b["AT"]) == 1201 and x0(b["BACK"]) == 1200, out
    # gdb's reverse-finish and reverse-nexti are made of the same packets: back to the call, then before it
    lr = int(re.search(r"^x30\s+(0x[0-9a-f]+)", b["BACK"], re.M).group(1), 16)
    pcs = [int(re.search(r"^pc\s+(0x[0-9a-f]+)", b[k], re.M).group(1), 16) for k in ("FINISH", "NEXTI")]
    assert pcs == [lr - 4, lr - 8], (hex(lr), out)


@needs_gdb
def test_reverse_history_starts_again_after_the_debugger_writes(guest, tmp_path):
    """A write of guest memory by gdb changes the run: no replay could reproduce it, so bs/bc are refused
    until history starts again, and reverse-continue then works within the new history."""
    elf = guest("gdb_target")
    script = """
set pagination off
set confirm off
target remote {addr}
break gdb_tick
continue
continue
set var *(int *)&gdb_status = 4
maint packet bs
ignore 1 30
continue
continue
echo @AT\\n
info registers x0
reverse-continue
echo @BACK\\n
info registers x0 x30
delete
stepi
reverse-finish
echo @FINISH\\n
info registers pc
reverse-nexti
echo @NEXTI\\n
info registers pc
kill
"""
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
    b = blocks(out)
    assert 'received: "E.no execution history: the debugger changed the guest' in out, out
    assert x0(b["AT"]) == 34 and x0(b["BACK"]) == 33, out


@needs_gdb
def test_output_after_a_debugger_write_in_the_past_is_shown(guest, tmp_path):
    """Output a replay repeats is shown once, but once gdb changes the guest in the past the run is a new one:
    what it prints from there is shown even where it stands below what the old run printed."""
    elf = guest("gdb_target")
    script = """
set pagination off
set confirm off
target remote {addr}
break *printf
continue
finish
reverse-continue
echo @BACK\\n
info registers pc
set var $x1 = 7
delete
break gdb_tick
continue
delete
set var *(unsigned *)&gdb_release = 1
set var *(unsigned *)&gdb_status = 4
continue
"""
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
        m.start()
        out = run_gdb(elf, script.format(addr=m.gdb_address), tmp_path)
        res = m.wait(timeout=60)
        text = m.serial.text
    assert "exited with code 04" in out, out
    assert res.exit_status == 4, res
    assert "printf" in blocks(out)["BACK"], out  # back before the first line was printed
    # the first run's line, then the changed run's (below the old high-water mark, shown all the same)
    assert re.findall(r"gdb_target: (\d+) cpu\(s\) ready", text) == ["1", "7"], text
    assert re.search(r"released at \d+, exit 4;", text), text


def test_reverse_packets_over_a_raw_socket(guest):
    """bs/bc before any history exists and with a bad thread: one E.reason reply each, the stub stays up."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=60) as m:
        host, port = m.gdb_address.rsplit(":", 1)
        m.start()
        with socket.create_connection((host, int(port)), timeout=10) as s:

            def xfer(payload: str) -> str:
                s.sendall(f"${payload}#{sum(payload.encode()) % 256:02x}".encode())
                data = b""
                while not re.search(rb"\$[^#]*#..", data):
                    data += s.recv(4096)
                return re.search(rb"\$([^#]*)#", data).group(1).decode()

            assert "ReverseStep+;ReverseContinue+" in xfer("qSupported")
            assert xfer("?").startswith("T05")
            # held before the first instruction: the first round has not run, so there is no history yet
            assert xfer("bs") == "E.no execution history yet (it starts when the VM runs)"
            assert xfer("bx") == ""
            assert xfer("vKill;1") == "OK"


def test_a_host_write_starts_history_again(guest):
    """The host program writing guest memory while gdb holds the VM changes the run as a gdb write does:
    bs is refused until the VM has run again."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=60) as m:
        host, port = m.gdb_address.rsplit(":", 1)
        m.start()
        with socket.create_connection((host, int(port)), timeout=10) as s:

            def xfer(payload: str) -> str:
                s.sendall(f"${payload}#{sum(payload.encode()) % 256:02x}".encode())
                data = b""
                while not re.search(rb"\$[^#]*#..", data):
                    data += s.recv(4096)
                return re.search(rb"\$([^#]*)#", data).group(1).decode()

            xfer("qSupported")
            assert xfer("?").startswith("T05")
            assert xfer("s").startswith("T05")  # one instruction: history begins
            assert xfer("bs").startswith("T05")  # and can be gone back over
            m.write_memory(m.boot_info().ram_base + 0x100000, b"\x01")
            assert xfer("bs").startswith("E.no execution history"), "a host write must start history again"
            assert xfer("vKill;1") == "OK"


QEMU = shutil.which("qemu-system-aarch64")
QEMU_IMG = shutil.which("qemu-img")

# gdb's session on both targets: breakpoint hits, steps, reverse-stepi, reverse-continue to the hits before.
# (QEMU 7.2's reverse-continue from one instruction past a breakpoint sometimes misses that hit and lands on
# the one before it, about one run in five here: the session leaves that case out.)
REFERENCE_SESSION = """
set pagination off
set confirm off
target remote {addr}
break gdb_tick
continue
continue
continue
info registers x0 pc
stepi
stepi
info registers x0 pc
reverse-stepi
info registers x0 pc
continue
info registers x0 pc
reverse-continue
info registers x0 pc
reverse-continue
info registers x0 pc
kill
"""


def x0_pc(out: str) -> list[str]:
    return re.findall(r"^(?:x0|pc)\s+\S+", out, re.M)


@needs_gdb
@pytest.mark.skipif(not (QEMU and QEMU_IMG), reason="qemu-system-aarch64 and qemu-img are needed")
def test_reverse_matches_qemu_record_replay(guest, tmp_path):
    """QEMU's reverse debugging (-icount rr=record, then rr=replay with its gdbstub, a qcow2 image for its
    snapshot) as the reference: the same gdb session stops at the same places with the same x0 on both."""
    elf = guest("gdb_target")
    with vmmpy.Machine(elf, gdb=0, gdb_wait=True, deterministic=True, timeout=120) as m:
        m.start()
        ours = run_gdb(elf, REFERENCE_SESSION.format(addr=m.gdb_address), tmp_path)
    # not under the sanitizer run's LD_PRELOAD: qemu-img hung there
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "qcow2", str(tmp_path / "rr.qcow2"), "1M"],
        check=True,
        env=TOOL_ENV,
        timeout=60,
    )
    common = ["-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-m", "256M", "-nographic", "-semihosting",
              "-monitor", "none", "-serial", "stdio", "-net", "none", "-kernel", elf,
              "-drive", f"file={tmp_path / 'rr.qcow2'},if=none,id=rr"]  # fmt: skip
    icount = f"shift=7,rrfile={tmp_path / 'rr.bin'},rrsnapshot=init"
    rec = subprocess.Popen([QEMU, *common, "-icount", "rr=record," + icount], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=TOOL_ENV)  # fmt: skip
    try:
        assert rec.stdout and b"cpu(s) ready" in rec.stdout.readline()  # the recording is past the ticks used
    finally:
        rec.terminate()
        rec.wait(timeout=30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rep = subprocess.Popen([QEMU, *common, "-icount", "rr=replay," + icount, "-S", "-gdb", f"tcp:127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           env=TOOL_ENV)  # fmt: skip
    try:
        theirs = run_gdb(elf, REFERENCE_SESSION.format(addr=f"127.0.0.1:{port}"), tmp_path)
    finally:
        rep.kill()
        rep.wait()
    assert len(x0_pc(theirs)) == 12, theirs
    assert x0_pc(ours) == x0_pc(theirs), (ours, theirs)
    assert [x.split()[1] for x in x0_pc(ours)[::2]] == ["0x3", "0x3", "0x3", "0x4", "0x3", "0x2"], ours
