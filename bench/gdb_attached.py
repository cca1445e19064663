"""The cost of an attached debugger with no breakpoints: a guest's wall time on vmmpy without a GDB server,
with one listening, and with a debugger attached that only continued (min of --repeat runs each), beside
QEMU TCG without and with its gdbstub attached the same way. The debugger here is a raw protocol client
(attach, '?', 'c', then the exit reply), so gdb's own start-up is not measured.

    python bench/gdb_attached.py [--guest guest/build/smp.elf] [--cpus 2] [--repeat 3] [--backend soft-threaded]

--backend soft-threaded measures the all-stop machinery of backends with a thread per vCPU (every vCPU
thread checks for a hold before each run) on this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def packet(p: bytes) -> bytes:
    return b"$" + p + b"#" + b"%02x" % (sum(p) & 0xFF)


def attach_and_continue(host: str, port: int) -> socket.socket:
    """Attach, take the stop reply, continue: the debugger then only waits for the exit."""
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection((host, port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    s.sendall(packet(b"?"))
    buf = b""
    while not re.search(rb"\$[ST][^#]*#", buf):
        buf += s.recv(4096)
    s.sendall(b"+" + packet(b"c"))
    return s


def wait_exit(s: socket.socket) -> None:
    buf = b""
    while not re.search(rb"\$[WX][^#]*#", buf):
        data = s.recv(4096)
        if not data:
            return
        buf += data
    s.close()


def vmmpy_run(elf: str, cpus: int, mode: str, backend: str = "soft") -> float:
    import vmmpy

    t0 = time.perf_counter()
    gdb = 0 if mode != "none" else None
    with vmmpy.Machine(elf, cpus=cpus, gdb=gdb, gdb_wait=mode == "attached", backend=backend) as m:
        if mode == "attached":
            m.start()
            host, port = m.gdb_address.rsplit(":", 1)
            s = attach_and_continue(host, int(port))
        res = m.wait(timeout=120) if mode == "attached" else m.run(timeout=120)
        if mode == "attached":
            wait_exit(s)
        assert res.reason.name == "POWEROFF", res
    return time.perf_counter() - t0


def qemu_run(elf: str, cpus: int, attached: bool) -> float:
    port = 0
    cmd = [common.qemu_binary(), "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-smp", str(cpus), "-m", "256M",
           "-nographic", "-semihosting", "-monitor", "none", "-serial", "stdio", "-kernel", elf]  # fmt: skip
    if attached:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        cmd += ["-gdb", f"tcp:127.0.0.1:{port}", "-S"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    if attached:
        s = attach_and_continue("127.0.0.1", port)
        wait_exit(s)
    p.wait(timeout=120)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", default=os.path.join(common.ROOT, "guest", "build", "smp.elf"))
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="soft", help="vmmpy's backend (default soft; soft-threaded)")
    args = ap.parse_args()
    rows = {}
    for _ in range(args.repeat):  # interleaved, so that the machine's load hits every variant alike
        for mode in ("none", "listening", "attached"):
            rows.setdefault(f"vmmpy, gdb {mode}", []).append(vmmpy_run(args.guest, args.cpus, mode, args.backend))
        for attached in (False, True):
            rows.setdefault(f"QEMU TCG, gdbstub {'attached' if attached else 'none'}", []).append(
                qemu_run(args.guest, args.cpus, attached)
            )
    base = min(rows["vmmpy, gdb none"])
    qbase = min(rows["QEMU TCG, gdbstub none"])
    print(f"{os.path.basename(args.guest)}, {args.cpus} vCPU(s), backend {args.backend}, min of {args.repeat}")
    print(f"{'variant':32} {'min s':>8} {'vs no debugger':>15} {'vs QEMU':>8}")
    for name, ts in rows.items():
        ref = qbase if name.startswith("QEMU") else base
        print(f"{name:32} {min(ts):8.3f} {min(ts) / ref:14.3f}x {min(ts) / qbase:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
