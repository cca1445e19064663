"""Reverse execution's costs (docs/gdb.md "Reverse execution"), beside QEMU's record/replay:

1. Keeping history while a debugger is attached: a deterministic guest's wall time without a GDB server and
   with a debugger attached that only continued (checkpoints: only the first, as with an hour's interval;
   every 50 ms of guest time; every 10 ms, the default; every 1 ms, where the cap of 10% of host time on
   checkpointing decides), against QEMU TCG without and with
   `-icount shift=0,rr=record` (what QEMU needs to be able to replay; its reverse debugging also needs a
   qcow2 image for its snapshots).
2. One reverse-stepi and one reverse-continue (to the previous breakpoint hit), timed from packet to stop
   reply, after the guest ran --run-s seconds: vmmpy (deterministic, default checkpoints) and QEMU
   replaying a recording of the same guest (snapshot at its start only, QEMU's `rrsnapshot=init`).

The debugger is a raw protocol client, so gdb's own start-up is not measured.

    python bench/gdb_reverse.py [--guest guest/build/bench_irq.elf] [--cpus 1] [--repeat 3] [--run-s 0.3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

QEMU_BASE = ["-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-m", "256M", "-nographic", "-semihosting",
             "-monitor", "none", "-serial", "stdio", "-net", "none"]  # fmt: skip


def packet(p: bytes) -> bytes:
    return b"$" + p + b"#" + b"%02x" % (sum(p) & 0xFF)


class Client:
    """A minimal gdb: one request, one reply (acks left on)."""

    def __init__(self, host: str, port: int):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.s = socket.create_connection((host, port), timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""

    def reply(self) -> bytes:
        while True:
            m = re.search(rb"\$([^#]*)#..", self.buf)
            if m:
                self.buf = self.buf[m.end() :]
                self.s.sendall(b"+")
                return m.group(1)
            data = self.s.recv(65536)
            if not data:
                raise EOFError("the stub closed the connection")
            self.buf += data

    def ask(self, p: bytes) -> bytes:
        self.s.sendall(packet(p))
        return self.reply()

    def send(self, p: bytes) -> None:
        self.s.sendall(packet(p))

    def close(self) -> None:
        self.s.close()


def wait_exit(c: Client) -> None:
    while not re.match(rb"[WX]", c.reply()):
        pass
    c.close()


def cpu_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def vmmpy_run(elf: str, cpus: int, interval_ms: int | None) -> tuple[float, float]:
    """Wall and CPU seconds (the VM runs in this process: its run thread and the GDB server's)."""
    import vmmpy

    c0 = cpu_s(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with vmmpy.Machine(elf, cpus=cpus, deterministic=True, gdb=0 if interval_ms else None, gdb_wait=True) as m:
        if not interval_ms:
            res = m.run(timeout=300)
        else:
            m.start()
            host, port = m.gdb_address.rsplit(":", 1)
            c = Client(host, int(port))
            c.ask(b"?")
            c.ask(b"qRcmd," + f"reverse interval {interval_ms}".encode().hex().encode())
            c.send(b"c")
            res = m.wait(timeout=300)
            wait_exit(c)
        assert res.reason.name == "POWEROFF", res
    return time.perf_counter() - t0, cpu_s(resource.RUSAGE_SELF) - c0


def qemu_run(elf: str, cpus: int, record: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        cmd = [common.qemu_binary(), *QEMU_BASE, "-smp", str(cpus), "-kernel", elf]
        if record:
            cmd += ["-icount", f"shift=0,rr=record,rrfile={d}/rr.bin"]
        c0 = cpu_s(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=300)
        return time.perf_counter() - t0, cpu_s(resource.RUSAGE_CHILDREN) - c0


def symbol(elf: str, name: str) -> int:
    out = subprocess.run(["nm", elf], capture_output=True, text=True, check=True).stdout
    return int(next(ln.split()[0] for ln in out.splitlines() if ln.endswith(" " + name)), 16)


def reverse_latency(c: Client, tick: int, run_s: float) -> tuple[float, float, str]:
    """Run run_s seconds, ^C, then time one bs and one bc (breakpoint on gdb_tick): seconds each."""
    c.send(b"c")
    time.sleep(run_s)
    c.s.sendall(b"\x03")
    c.reply()
    assert c.ask(b"Z0,%x,4" % tick) == b"OK"
    c.send(b"c")
    c.reply()  # at a gdb_tick entry
    t0 = time.perf_counter()
    st = c.ask(b"bs")
    t_bs = time.perf_counter() - t0
    assert st.startswith(b"T05"), st
    t0 = time.perf_counter()
    st = c.ask(b"bc")
    t_bc = time.perf_counter() - t0
    assert st.startswith(b"T05"), st
    pc = c.ask(b"p20")
    return t_bs, t_bc, pc.decode()


def vmmpy_reverse(elf: str, run_s: float) -> tuple[float, float]:
    import vmmpy

    with vmmpy.Machine(elf, deterministic=True, gdb=0, gdb_wait=True, timeout=300) as m:
        m.start()
        host, port = m.gdb_address.rsplit(":", 1)
        c = Client(host, int(port))
        c.ask(b"?")
        t_bs, t_bc, pc = reverse_latency(c, symbol(elf, "gdb_tick"), run_s)
        assert int.from_bytes(bytes.fromhex(pc), "little") == symbol(elf, "gdb_tick"), pc
        c.send(b"k")
        c.close()
        m.wait(timeout=30)
    return t_bs, t_bc


def qemu_reverse(elf: str, run_s: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/rr.qcow2", "1M"], check=True)
        rr = [*QEMU_BASE, "-kernel", elf, "-drive", f"file={d}/rr.qcow2,if=none,id=rr"]
        icount = f"shift=auto,rrfile={d}/rr.bin,rrsnapshot=init"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
        rec = subprocess.Popen([common.qemu_binary(), *rr, "-icount", "rr=record," + icount], **quiet)
        time.sleep(3 * run_s + 1)  # a recording longer than the replay below goes
        rec.terminate()
        rec.wait(timeout=30)
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        gdb = ["-S", "-gdb", f"tcp:127.0.0.1:{port}"]
        rep = subprocess.Popen([common.qemu_binary(), *rr, "-icount", "rr=replay," + icount, *gdb], **quiet)
        try:
            c = Client("127.0.0.1", port)
            c.ask(b"?")
            t_bs, t_bc, _ = reverse_latency(c, symbol(elf, "gdb_tick"), run_s)
            c.send(b"k")
            c.close()
        finally:
            rep.kill()
            rep.wait()
    return t_bs, t_bc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", default=os.path.join(common.ROOT, "guest", "build", "bench_irq.elf"))
    ap.add_argument("--cpus", type=int, default=1)  # QEMU 7.2 records one vCPU only
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--run-s", type=float, default=0.3)
    args = ap.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeat):  # interleaved: the machine's load hits every variant alike
        for name, iv in (("no gdb", None), ("attached, 1st checkpoint only", 3600000),
                         ("attached, checkpoint/50 ms", 50), ("attached, checkpoint/10 ms", 10),
                         ("attached, checkpoint/1 ms", 1)):  # fmt: skip
            rows.setdefault(f"vmmpy det., {name}", []).append(vmmpy_run(args.guest, args.cpus, iv))
        for rec in (False, True):
            rows.setdefault(f"QEMU TCG{', icount rr=record' if rec else ''}", []).append(
                qemu_run(args.guest, args.cpus, rec)
            )
    base, qbase = min(rows["vmmpy det., no gdb"]), min(rows["QEMU TCG"])
    cbase, cqbase = (min(c for _, c in rows[k]) for k in ("vmmpy det., no gdb", "QEMU TCG"))
    print(f"{os.path.basename(args.guest)}, {args.cpus} vCPU(s), min of {args.repeat} (wall and CPU seconds)")
    print(f"{'variant':40} {'wall s':>7} {'vs base':>8} {'vs QEMU':>8} {'CPU s':>7} {'vs base':>8} {'vs QEMU':>8}")
    for name, ts in rows.items():
        w, c = min(t for t, _ in ts), min(c for _, c in ts)
        rw, rc = (qbase[0], cqbase) if name.startswith("QEMU") else (base[0], cbase)
        print(f"{name:40} {w:7.3f} {w / rw:7.2f}x {w / qbase[0]:7.2f}x {c:7.3f} {c / rc:7.2f}x {c / cqbase:7.2f}x")

    target = os.path.join(common.ROOT, "guest", "build", "gdb_target.elf")
    lat: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        lat.setdefault("vmmpy", []).append(vmmpy_reverse(target, args.run_s))
        lat.setdefault("QEMU replay", []).append(qemu_reverse(target, args.run_s))
    print(f"\ngdb_target.elf, 1 vCPU, after {args.run_s} s of running, min of {args.repeat}")
    print(f"{'target':14} {'reverse-stepi ms':>17} {'reverse-continue ms':>20}")
    for name, v in lat.items():
        print(f"{name:14} {1e3 * min(a for a, _ in v):17.1f} {1e3 * min(b for _, b in v):20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
