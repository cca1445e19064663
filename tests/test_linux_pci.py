"""Tier 3: Debian's kernel finds every virtio device on PCI (Machine(transport="pci")).

One boot with a disk, a 9p share, an entropy source, a GPU, input and a virtio console, all on bus 0
of the generic-ECAM host bridge, driven by Debian's virtio_pci module. The guest lists
/sys/bus/pci/devices (no lspci), writes to the disk (the bytes must land in the image), mounts the
share, reads /dev/hwrng, checks fbcon on virtio-gpu-pci and gets a DHCP lease on virtio-net-pci
(user networking). Interrupts are MSI-X through the GICv3 ITS: /proc/interrupts must list every virtio
device's vectors on Linux 6.1's "ITS-MSI" chip (QEMU's virt prints the same), none on the GIC's INTx
SPIs.
"""

from __future__ import annotations

import re

import pytest

from .test_linux import (  # noqa: F401
    CMDLINE,
    CPUS,
    QEMU_BOOT_TIMEOUT,
    VMMPY_BOOT_TIMEOUT,
    _initramfs,
    assert_console_text,
    debian_kernel,
    qemu_ref,
)
from .test_linux_net import UDHCPC_SCRIPT

pytestmark = pytest.mark.slow

BLK_TEXT = b"VMMPY-PCI blk payload 0123456789"
PCI_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
for d in /sys/bus/pci/devices/*; do
    drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
    id="$(cat $d/vendor):$(cat $d/device)"
    echo "VMMPY-PCI dev $(basename $d) $id class=$(cat $d/class) irq=$(cat $d/irq) driver=$drv"
done
for v in /sys/bus/virtio/devices/*; do
    echo "VMMPY-PCI virtio $(basename $v) device=$(cat $v/device) on $(basename $(readlink -f $v/..))"
done
echo "VMMPY-PCI vda size=$(cat /sys/block/vda/size)"
printf '@BLK@' | dd of=/dev/vda bs=512 seek=3 conv=sync,fsync 2>/dev/null && echo "VMMPY-PCI dd ok"
mkdir -p /mnt/s
mount -t 9p -o trans=virtio,version=9p2000.L share /mnt/s && echo "VMMPY-PCI 9p $(cat /mnt/s/hello.txt)"
echo "written over PCI" > /mnt/s/from-guest.txt; sync
echo "VMMPY-PCI hwrng $(cat /sys/class/misc/hw_random/rng_current) $(hexdump -n 32 -v -e '/1 "%02x"' /dev/hwrng)"
[ -e /dev/fb0 ] && echo "VMMPY-PCI fb0=$(cat /sys/class/graphics/fb0/name)" || echo "VMMPY-PCI fb0=none"
echo "VMMPY fbcon test line: The quick brown fox jumps over the lazy dog" > /dev/tty1
udhcpc -i eth0 -s /etc/vmmpy/udhcpc.script -q -n -t 5 -T 2 2>/dev/null | grep '^VMMPY-DHCP' | sed 's/^/VMMPY-PCI /'
echo "VMMPY-PCI interrupts"
grep -iE 'virtio|msi|pci' /proc/interrupts | sed 's/^/VMMPY-PCI irq /'
echo "VMMPY-PCI-READY"
read x
poweroff -f
""".replace("@BLK@", BLK_TEXT.decode())

MODULES = ["virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "virtio-rng", "virtio-gpu", "virtio_input",
           "virtio_console", "virtio_net"]  # fmt: skip
# /proc/interrupts: "<irq>: <count per CPU> <chip> <hwirq> <type> <name>"
IRQ_LINE = re.compile(r"^VMMPY-PCI irq +\d+:((?: +\d+)+) +(\S+) +(\d+) +(\S+) +(virtio\d+)(?:-(\S+))?$")


@pytest.fixture(scope="session")
def pci_initramfs() -> str:
    return _initramfs(init_script=PCI_INIT, modules=MODULES, extra_files={"/etc/vmmpy/udhcpc.script": UDHCPC_SCRIPT})


def make_files(tmp_path):
    disk, share = tmp_path / "disk.img", tmp_path / "share"
    disk.write_bytes(bytes(1 << 20))
    share.mkdir()
    (share / "hello.txt").write_text("hello from the host")
    return disk, share


def check_guest_side(text: str) -> None:
    """What the guest printed: every device bound by virtio-pci, blk, 9p, hwrng and fb0 working."""
    devs = [ln for ln in text.splitlines() if ln.startswith("VMMPY-PCI dev ")]
    # gpu, input (keyboard, tablet), disk, rng, console, share, net: modern device IDs 0x1040 + type
    want = {"0x1050": 1, "0x1052": 2, "0x1042": 1, "0x1044": 1, "0x1043": 1, "0x1049": 1, "0x1041": 1}
    for dev_id, n in want.items():
        bound = [d for d in devs if f"0x1af4:{dev_id}" in d and "driver=virtio-pci" in d]
        assert len(bound) == n, (dev_id, devs)
    virtio = [ln for ln in text.splitlines() if ln.startswith("VMMPY-PCI virtio ")]
    assert len(virtio) == 8 and all(" on 0000:00:" in v for v in virtio), virtio
    for line in ("vda size=2048", "dd ok", "9p hello from the host", "hwrng virtio_rng", "fb0=virtio_gpudrmfb"):
        assert f"VMMPY-PCI {line}" in text, line
    assert "VMMPY-PCI VMMPY-DHCP eth0 ip=10.0.2.15 router=10.0.2.2" in text
    check_msix_through_its(text, {v.split()[2] for v in virtio})


def check_msix_through_its(text: str, devices: set[str]) -> None:
    """Every virtio device's interrupts are MSI-X vectors on the ITS (Linux 6.1 names the chip "ITS-MSI";
    per-device domains of later kernels "ITS-PCI-MSI-<bdf>"); none is an INTx SPI; the used ones fired."""
    irqs = [m for ln in text.splitlines() if (m := IRQ_LINE.match(ln))]
    assert irqs, [ln for ln in text.splitlines() if ln.startswith("VMMPY-PCI irq")]
    not_its = [m.group(0) for m in irqs if not m.group(2).startswith("ITS-")]
    assert not not_its, not_its
    assert {m.group(5) for m in irqs} == devices, irqs
    counts: dict[str, int] = {}
    for m in irqs:
        counts[m.group(0)] = counts.get(m.group(0), 0) + sum(int(c) for c in m.group(1).split())
    assert sum(counts.values()) > 0, counts


def check_host_side(disk, share) -> None:
    assert disk.read_bytes()[3 * 512 : 3 * 512 + len(BLK_TEXT)] == BLK_TEXT
    assert (share / "from-guest.txt").read_text() == "written over PCI\n"


def test_every_virtio_device_on_pci(debian_kernel, pci_initramfs, machine, tmp_path):  # noqa: F811
    """virtio_pci binds all seven device types; blk, 9p, rng, fbcon and DHCP work over them (MSI-X, ITS)."""
    disk, share = make_files(tmp_path)
    m = machine(
        debian_kernel,
        cpus=CPUS,
        ram="512M",
        initrd=pci_initramfs,
        cmdline=CMDLINE,
        transport="pci",
        disk=disk,
        share=(share, "share"),
        rng=True,
        gpu=True,
        input=True,
        virtio_console=True,
        net="user",
    )
    m.serial.expect(rb"VMMPY-MODULE virtio_pci ok", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-PCI-READY", timeout=120)
    text = m.serial.text
    check_guest_side(text)
    assert "VMMPY-PCI dev 0000:00:00.0 0x1b36:0x0008" in text  # the host bridge, as QEMU's
    assert_console_text(m)
    m.serial.write(b"\r")
    assert m.wait(timeout=60).ok
    m.close()
    check_host_side(disk, share)


@pytest.mark.skipif(not qemu_ref.binary(), reason="qemu-system-aarch64 is not installed: no reference boot")
def test_every_virtio_device_on_pci_on_qemu(debian_kernel, pci_initramfs, tmp_path):  # noqa: F811
    """The reference: the same kernel, initramfs and checks on QEMU's modern-only virtio-*-pci devices."""
    disk, share = make_files(tmp_path)
    dev = "disable-legacy=on"
    cmd = qemu_ref.command(debian_kernel, pci_initramfs, cpus=CPUS, ram="512", cmdline=CMDLINE) + [
        "-netdev", "user,id=n0", "-device", f"virtio-net-pci,netdev=n0,{dev}",
        "-device", f"virtio-gpu-pci,{dev}", "-device", f"virtio-keyboard-pci,{dev}",
        "-device", f"virtio-tablet-pci,{dev}",
        "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", f"virtio-blk-pci,drive=d0,{dev}",
        "-device", f"virtio-rng-pci,{dev}", "-device", f"virtio-serial-pci,{dev}", "-device", "virtconsole",
        "-fsdev", f"local,id=f0,path={share},security_model=none",
        "-device", f"virtio-9p-pci,fsdev=f0,mount_tag=share,{dev}",
    ]  # fmt: skip
    with qemu_ref.QemuConsole(cmd) as q:
        q.expect(rb"VMMPY-PCI-READY", QEMU_BOOT_TIMEOUT)
        check_guest_side(q.text)
        q.write(b"\r")
        assert q.wait(60) == 0
    check_host_side(disk, share)
