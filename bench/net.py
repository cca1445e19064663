"""Network throughput and latency of a Debian Linux guest: vmmpy's virtio-net vs QEMU TCG, in one run.

Same kernel, same BusyBox initramfs (tools/initramfs.py --shell with virtio_mmio and virtio_net), one
vCPU, 256 MiB, both sides booted in this run. User networking is libslirp on both (QEMU's
`-netdev user`, vmmpy's `net="user"`); VM to VM is a vmmpy.Network switch against two QEMUs joined by
`-netdev socket` (listen/connect on 127.0.0.1: QEMU's in-tree way to wire two VMs without root).

  user_host_to_guest  guest `wget -O /dev/null` of a BLOB_MIB MiB file from a host HTTP server on
                      127.0.0.1 through 10.0.2.2: MB/s from the moment the host server accepts the
                      request to the guest's "done" line on the serial console
  user_guest_to_host  the host downloads a BLOB_MIB MiB file from the guest's BusyBox httpd through a
                      port forward (hostfwd): MB/s of the host's urllib read, request to last byte
  user_ping_rtt       guest `ping -c PINGS 10.0.2.2` (slirp answers with the host's ICMP socket): the
                      average RTT BusyBox prints, ms
  switch_vm_to_vm     VM a `wget -O /dev/null` of a BLOB_MIB MiB file from VM b's httpd: MB/s from the
                      command to a's "done" line
  switch_ping_rtt     VM a `ping -c PINGS` VM b: average RTT, ms

Every figure is measured RUNS times in the same boots (default 3) and the best run is kept (max for
rates, min for times); vmmpy/qemu is the ratio (above 1 for MB/s and below 1 for ms: vmmpy is better).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402
import qemu_ref  # noqa: E402

BLOB_MIB = 16
PINGS = 10
CMDLINE = qemu_ref.CMDLINE
UDHCPC_SCRIPT = b"""#!/bin/sh
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
    echo "NETBENCH-DHCP ip=$ip"
    ;;
esac
"""
RTT_RE = rb"round-trip min/avg/max = [\d.]+/([\d.]+)/[\d.]+ ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """A booted shell on vmmpy or QEMU behind one sh() call."""

    def __init__(self, runner: str, kernel: str, cpio: str, *, net=None, hostfwd=None, qemu_net=(), timeout=600):
        self.runner = runner
        self.m = self.q = None
        if runner == "vmmpy":
            import vmmpy

            self.m = vmmpy.Machine(kernel, cpus=1, ram="256M", initrd=cpio, cmdline=CMDLINE, net=net, hostfwd=hostfwd)
            self.m.serial.expect(initramfs.PROMPT_RE, timeout=timeout)
        else:
            cmd = qemu_ref.command(kernel, cpio, cpus=1, ram="256", cmdline=CMDLINE) + list(qemu_net)
            self.q = qemu_ref.QemuConsole(cmd)
            self.q.expect(initramfs.PROMPT_RE, timeout=timeout)

    def sh(self, cmd: str, pattern: bytes, timeout: float = 300) -> re.Match:
        if self.m is not None:
            self.m.serial.write(cmd + "\n")
            return self.m.serial.expect(pattern, timeout=timeout)
        self.q.write(cmd + "\n")
        return self.q.expect(pattern, timeout)

    def close(self) -> None:
        if self.m is not None:
            self.m.close()
        if self.q is not None:
            self.q.close()


class _Blob(http.server.SimpleHTTPRequestHandler):
    started: list[float]

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.started.append(time.perf_counter())
        super().do_GET()

    def log_message(self, *a):
        pass


@contextlib.contextmanager
def host_server(directory: str):
    started: list[float] = []
    handler = functools.partial(type("H", (_Blob,), {"started": started}), directory=directory)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1], started
    finally:
        srv.shutdown()
        srv.server_close()


def make_blob(g: Guest, path: str = "/www/blob") -> None:
    g.sh(
        f"mkdir -p /www && dd if=/dev/urandom of={path} bs=1048576 count={BLOB_MIB} 2>/dev/null && echo blob-$((3*5))",
        rb"blob-15",
    )


def user_runs(runner: str, kernel: str, cpio: str, runs: int, work: str) -> dict[str, list[float]]:
    hp = free_port()
    qnet = ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{hp}-:80", "-device", "virtio-net-device,netdev=n0"]
    out: dict[str, list[float]] = {"user_host_to_guest": [], "user_guest_to_host": [], "user_ping_rtt": []}
    with open(os.path.join(work, "blob"), "wb") as f:
        f.write(os.urandom(BLOB_MIB << 20))
    g = Guest(runner, kernel, cpio, net="user", hostfwd=[f"tcp:127.0.0.1:{hp}-:80"], qemu_net=qnet)
    try:
        g.sh("udhcpc -i eth0 -s /etc/vmmpy/udhcpc.script -q -n -t 5", rb"NETBENCH-DHCP ip=10.0.2.15")
        make_blob(g)
        g.sh("httpd -p 80 -h /www && echo httpd-$((2*4))", rb"httpd-8")
        with host_server(work) as (port, started):
            for _ in range(runs):
                started.clear()
                g.sh(f"wget -q -O /dev/null http://10.0.2.2:{port}/blob && echo got-$((7*6))", rb"got-42")
                out["user_host_to_guest"].append((BLOB_MIB << 20) / 1e6 / (time.perf_counter() - started[0]))
        for _ in range(runs):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{hp}/blob", timeout=300) as r:
                n = len(r.read())
            assert n == BLOB_MIB << 20, n
            out["user_guest_to_host"].append(n / 1e6 / (time.perf_counter() - t0))
        for _ in range(runs):
            m = g.sh(f"ping -c {PINGS} -i 0.2 10.0.2.2", RTT_RE, timeout=120)
            out["user_ping_rtt"].append(float(m[1]))
    finally:
        g.close()
    return out


def switch_runs(runner: str, kernel: str, cpio: str, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"switch_vm_to_vm": [], "switch_ping_rtt": []}
    if runner == "vmmpy":
        import vmmpy

        net = vmmpy.Network()
        qa = qb = None
    else:
        net, port = None, free_port()
        qb = [
            "-netdev",
            f"socket,id=n0,listen=127.0.0.1:{port}",
            "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:12:35:01",
        ]
        qa = [
            "-netdev",
            f"socket,id=n0,connect=127.0.0.1:{port}",
            "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:12:35:00",
        ]
    b = Guest(runner, kernel, cpio, net=net, qemu_net=qb or ())
    a = None
    try:
        a = Guest(runner, kernel, cpio, net=net, qemu_net=qa or ())
        a.sh("ifconfig eth0 192.168.77.1 netmask 255.255.255.0 up && echo up-$((2*3))", rb"up-6")
        b.sh("ifconfig eth0 192.168.77.2 netmask 255.255.255.0 up && echo up-$((2*3))", rb"up-6")
        make_blob(b)
        b.sh("httpd -p 8080 -h /www && echo httpd-$((2*4))", rb"httpd-8")
        a.sh("ping -c 1 -W 5 192.168.77.2 >/dev/null && echo arp-$((3*3))", rb"arp-9")
        for _ in range(runs):
            t0 = time.perf_counter()
            a.sh("wget -q -O /dev/null http://192.168.77.2:8080/blob && echo got-$((7*6))", rb"got-42")
            out["switch_vm_to_vm"].append((BLOB_MIB << 20) / 1e6 / (time.perf_counter() - t0))
        for _ in range(runs):
            m = a.sh(f"ping -c {PINGS} -i 0.2 192.168.77.2", RTT_RE, timeout=120)
            out["switch_ping_rtt"].append(float(m[1]))
    finally:
        if a:
            a.close()
        b.close()
    return out


ROWS = [
    ("user_host_to_guest", "MB/s", "higher"),
    ("user_guest_to_host", "MB/s", "higher"),
    ("user_ping_rtt", "ms", "lower"),
    ("switch_vm_to_vm", "MB/s", "higher"),
    ("switch_ping_rtt", "ms", "lower"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="measurements of each figure per boot (default 3)")
    ap.add_argument("--no-qemu", action="store_true", help="vmmpy only")
    args = ap.parse_args()
    kernel = fetch_debian.kernel()
    cpio = initramfs.cached(
        shell=True, modules=["virtio_mmio", "virtio_net"], extra_files={"/etc/vmmpy/udhcpc.script": UDHCPC_SCRIPT}
    )
    runners = ["vmmpy"] + ([] if args.no_qemu or not qemu_ref.binary() else ["qemu"])
    res: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="netbench-") as work:
        for r in runners:
            res[r] = {**user_runs(r, kernel, cpio, args.runs, work), **switch_runs(r, kernel, cpio, args.runs)}
    best = {r: {k: (max(v) if d == "higher" else min(v)) for k, _, d in ROWS if (v := res[r].get(k))} for r in res}
    print(f"\nLinux guest networking, best of {args.runs} (MB/s: higher is better; ms: lower is better)")
    print(common.table([(f"{k} {u}", best["vmmpy"].get(k), best.get("qemu", {}).get(k)) for k, u, _ in ROWS], unit=""))
    rows = [
        common.row(k, u, res["vmmpy"][k], {"qemu": res.get("qemu", {}).get(k, [])}, direction=d,
                   stat="max" if d == "higher" else "min")
        for k, u, d in ROWS
    ]  # fmt: skip
    config = {"runs": args.runs, "blob_mib": BLOB_MIB, "pings": PINGS, "cpus": 1, "ram_mib": 256}
    rec = common.record("net", "Linux guest network throughput and latency, vmmpy vs QEMU TCG", rows, config=config)
    print(f"wrote {os.path.relpath(common.save(rec), common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
