"""Tier 3: Debian's arm64 kernel with its virtio_net module on vmmpy's virtio-net.

User networking (libslirp): udhcpc gets a lease, the guest fetches a file from an HTTP server on the
host's 127.0.0.1 through 10.0.2.2, and the host reaches the guest's httpd through a port forward. Two VMs
on a vmmpy.Network ping each other and move a file over TCP; the switch's pcap shows ARP, ICMP and TCP.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

import vmmpy

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402

pytestmark = pytest.mark.slow

CMDLINE = "console=ttyAMA0 earlycon=pl011,0x09000000 panic=-1"
BOOT_TIMEOUT = float(os.environ.get("VMMPY_LINUX_TIMEOUT", "300"))

# udhcpc runs this on a lease (BusyBox has no default script in our initramfs)
UDHCPC_SCRIPT = b"""#!/bin/sh
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "VMMPY-DHCP $interface ip=$ip router=$router dns=$dns"
    ;;
esac
"""


@pytest.fixture(scope="session")
def net_kernel() -> str:
    try:
        return fetch_debian.kernel()
    except fetch_debian.FetchError as e:
        pytest.fail(f"cannot fetch Debian's arm64 kernel: {e}")


@pytest.fixture(scope="session")
def net_initramfs() -> str:
    """A BusyBox shell with virtio_mmio and virtio_net loaded, and a udhcpc script."""
    try:
        return initramfs.cached(
            shell=True, modules=["virtio_mmio", "virtio_net"], extra_files={"/etc/vmmpy/udhcpc.script": UDHCPC_SCRIPT}
        )
    except (fetch_debian.FetchError, initramfs.InitramfsError) as e:
        pytest.fail(f"cannot build the initramfs: {e}")


def boot(machine, kernel: str, initrd: str, **kw) -> vmmpy.Machine:
    m = machine(kernel, cpus=1, ram="256M", initrd=initrd, cmdline=CMDLINE, **kw)
    m.serial.expect(rb"VMMPY-MODULE virtio_net ok", timeout=BOOT_TIMEOUT, fail_on=["Kernel panic", "FAIL"])
    m.serial.expect(initramfs.PROMPT_RE, timeout=120)
    return m


def sh(m: vmmpy.Machine, cmd: str, expect: bytes | str, timeout: float = 120) -> re.Match:
    """Type a command; wait for `expect` (write markers so that the echoed command cannot match)."""
    m.serial.write(cmd + "\n")
    return m.serial.expect(expect, timeout=timeout, fail_on=["Kernel panic"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def tcpdump(path) -> str:
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    r = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_user_networking_dhcp_wget_from_the_host_and_port_forward(net_kernel, net_initramfs, machine, tmp_path):
    (tmp_path / "www").mkdir()
    payload = os.urandom(24).hex()
    (tmp_path / "www" / "hello.txt").write_text(f"host-file {payload}\n")
    hp = free_port()
    pcap = tmp_path / "user.pcap"
    with http_server(tmp_path / "www") as port:
        m = boot(machine, net_kernel, net_initramfs, net="user", hostfwd=[f"tcp:127.0.0.1:{hp}-:80"], net_capture=pcap)
        sh(
            m,
            "udhcpc -i eth0 -s /etc/vmmpy/udhcpc.script -q -n -t 5",
            rb"VMMPY-DHCP eth0 ip=10.0.2.15 router=10.0.2.2 dns=10.0.2.3",
        )
        sh(m, f"wget -q -O - http://10.0.2.2:{port}/hello.txt", f"host-file {payload}")
        sh(
            m,
            "mkdir -p /www && echo guest-page-$((6*7)) > /www/index.html && httpd -p 80 -h /www && echo httpd-$((1+1))",
            "httpd-2",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{hp}/index.html", timeout=120) as r:
            assert r.read() == b"guest-page-42\n"
    st = m.net_stats()
    assert st.rx_frames > 4 and st.tx_frames > 4 and st.tx_malformed == 0
    m.serial.write("exit\n")
    assert m.wait(timeout=60).ok
    text = tcpdump(pcap)
    assert "BOOTP/DHCP, Request" in text and "BOOTP/DHCP, Reply" in text
    assert f"10.0.2.2.{port}" in text and "10.0.2.15.80 > " in text  # the wget and the forwarded connection


def test_two_vms_on_a_switch_ping_and_transfer_a_file(net_kernel, net_initramfs, machine, tmp_path):
    pcap = tmp_path / "switch.pcap"
    net = vmmpy.Network(capture=pcap)
    a = boot(machine, net_kernel, net_initramfs, net=net)
    b = boot(machine, net_kernel, net_initramfs, net=net)
    assert a.net_stats().mac != b.net_stats().mac
    sh(a, "ifconfig eth0 192.168.77.1 netmask 255.255.255.0 up && echo up-$((2*3))", "up-6")
    sh(b, "ifconfig eth0 192.168.77.2 netmask 255.255.255.0 up && echo up-$((2*3))", "up-6")
    sh(a, "ping -c 3 192.168.77.2", rb"3 packets transmitted, 3 packets received")
    mb = sh(
        b,
        "mkdir -p /www && dd if=/dev/urandom of=/www/blob bs=1024 count=512 2>/dev/null && "
        "httpd -p 8080 -h /www && md5sum /www/blob | sed 's/^/SUM-B /'",
        rb"SUM-B ([0-9a-f]{32})",
    )
    ma = sh(
        a,
        "wget -q -O /root/blob http://192.168.77.2:8080/blob && md5sum /root/blob | sed 's/^/SUM-A /'",
        rb"SUM-A ([0-9a-f]{32})",
    )
    assert ma[1] == mb[1], "the file arrived intact over TCP"
    for m in (a, b):
        m.serial.write("exit\n")
        assert m.wait(timeout=60).ok
    text = tcpdump(pcap)
    assert "ARP, Request who-has 192.168.77.2" in text and "ARP, Reply 192.168.77.2 is-at" in text
    assert "ICMP echo request" in text and "ICMP echo reply" in text
    assert "192.168.77.1." in text and "192.168.77.2.8080: Flags [S]" in text
    assert net.forwarded > 512 * 1024 // 1514


def test_deterministic_vm_gets_a_lease_and_fetches_from_the_host(net_kernel, net_initramfs, machine, tmp_path):
    """Deterministic mode: frames enter between rounds and slirp's timers run on the guest's virtual clock."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "d.txt").write_text("deterministic-fetch\n")
    with http_server(tmp_path / "www") as port:
        m = boot(machine, net_kernel, net_initramfs, net="user", deterministic=True)
        sh(m, "udhcpc -i eth0 -s /etc/vmmpy/udhcpc.script -q -n -t 5", rb"VMMPY-DHCP eth0 ip=10.0.2.15")
        sh(m, f"wget -q -O - http://10.0.2.2:{port}/d.txt", "deterministic-fetch")
    m.serial.write("exit\n")
    assert m.wait(timeout=60).ok


CLI_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
dmesg -n 1
/etc/vmmpy/load-modules
udhcpc -i eth0 -s /etc/vmmpy/udhcpc.script -q -n -t 5
mkdir -p /www && echo "served by the guest" > /www/index.html
httpd -p 80 -h /www && echo "VMMPY-HTTPD-READY"
while :; do sleep 3600; done
"""


def test_cli_user_networking_with_a_port_forward_and_a_dump(net_kernel, tmp_path):
    """The README's command: `vmmpy run ... --net user,hostfwd=tcp:127.0.0.1:PORT-:80 --net-dump FILE`, then a
    request from the host."""
    cpio = initramfs.cached(
        init_script=CLI_INIT,
        modules=["virtio_mmio", "virtio_net"],
        extra_files={"/etc/vmmpy/udhcpc.script": UDHCPC_SCRIPT},
    )
    hp, dump = free_port(), tmp_path / "cli.pcap"
    cmd = [sys.executable, "-m", "vmmpy", "run", net_kernel, "--initrd", cpio, "--cmdline", CMDLINE, "--headless",
           "--net", f"user,hostfwd=tcp:127.0.0.1:{hp}-:80", "--net-dump", str(dump)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out = b""
        while b"VMMPY-HTTPD-READY" not in out:
            chunk = p.stdout.read1(65536)
            assert chunk, f"the run ended before httpd started:\n{out[-3000:].decode(errors='replace')}"
            out += chunk
        with urllib.request.urlopen(f"http://127.0.0.1:{hp}/", timeout=120) as r:
            assert r.read() == b"served by the guest\n"
    finally:
        p.send_signal(2)  # SIGINT: the CLI stops the guest and exits
        p.communicate(timeout=60)
    text = tcpdump(dump)
    assert "BOOTP/DHCP, Reply" in text and "10.0.2.15.80 > " in text
