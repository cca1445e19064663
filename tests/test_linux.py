"""Tier 3: Debian's unmodified arm64 kernel on the soft backend, beside the same boot on QEMU.

Every boot test runs twice from one body: on vmmpy (`[vmmpy]`) and on qemu-system-aarch64 TCG
(`[qemu]`, the reference). Both boot the same kernel and the same BusyBox initramfs
(tools/initramfs.py), so a failure on both points at the initramfs or the test, one on vmmpy only
at the VMM. Timeouts for vmmpy scale with VMMPY_LINUX_TIMEOUT (seconds for the whole boot, 300).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import stat
import struct
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402
import qemu_ref  # noqa: E402

pytestmark = pytest.mark.slow

CMDLINE = "console=ttyAMA0 earlycon=pl011,0x09000000 panic=-1"
CPUS = 2
VMMPY_BOOT_TIMEOUT = float(os.environ.get("VMMPY_LINUX_TIMEOUT", "300"))
QEMU_BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def debian_kernel() -> str:
    try:
        return fetch_debian.kernel()
    except fetch_debian.FetchError as e:
        pytest.fail(f"cannot fetch Debian's arm64 kernel: {e}")


def _initramfs(**kw) -> str:
    try:
        return initramfs.cached(**kw)  # built once per distinct input, kept in .cache/initramfs/
    except (fetch_debian.FetchError, initramfs.InitramfsError) as e:
        pytest.fail(f"cannot build the initramfs: {e}")


@pytest.fixture(scope="session")
def test_initramfs() -> str:
    """/init prints VMMPY-INIT-OK cpus=N ... and powers off."""
    return _initramfs()


@pytest.fixture(scope="session")
def shell_initramfs() -> str:
    """/init runs an interactive shell (prompt 'vmmpy# ') and powers off when it exits."""
    return _initramfs(shell=True)


class Booted:
    """One running guest, on vmmpy or QEMU, behind the same expect/write/poweroff calls."""

    def __init__(self, runner: str, kernel: str, initrd: str, machine=None, qemu_args: tuple[str, ...] = ()):
        self.runner = runner
        self.timeout = VMMPY_BOOT_TIMEOUT if runner == "vmmpy" else QEMU_BOOT_TIMEOUT
        if runner == "vmmpy":
            # with an ITS, as QEMU's virt has one (test_boots_to_init_on_two_cpus_and_powers_off checks the probe)
            self.m = machine(kernel, cpus=CPUS, ram="512M", initrd=initrd, cmdline=CMDLINE, its=True)
            self.q = None
        else:
            cmd = qemu_ref.command(kernel, initrd, cpus=CPUS, ram="512", cmdline=CMDLINE) + list(qemu_args)
            self.q = qemu_ref.QemuConsole(cmd)
            self.m = None

    def expect(self, pattern: bytes | str, timeout: float) -> re.Match:
        if self.m is not None:
            return self.m.serial.expect(pattern, timeout=timeout)
        return self.q.expect(pattern, timeout)

    def write(self, data: str) -> None:
        if self.m is not None:
            self.m.serial.write(data)
        else:
            self.q.write(data)

    @property
    def text(self) -> str:
        return self.m.serial.text if self.m is not None else self.q.text

    def assert_powered_off(self, timeout: float = 60) -> None:
        """The guest powered itself off (PSCI SYSTEM_OFF), status 0."""
        if self.m is not None:
            res = self.m.wait(timeout=timeout)
            assert res.ok, f"vmmpy run ended with {res}; output ends with:\n{self.text[-2000:]}"
        else:
            rc = self.q.wait(timeout)
            assert rc == 0, f"QEMU exited with {rc}; output ends with:\n{self.text[-2000:]}"
        assert "reboot: Power down" in self.text

    def close(self) -> None:
        if self.q is not None:
            self.q.close()


@pytest.fixture(params=["vmmpy", "qemu"])
def boot(request, machine, debian_kernel):
    """boot(initrd, *qemu_args) -> Booted on the parameter's runner (vmmpy machines come from `machine`)."""
    runner = request.param
    if runner == "qemu" and not qemu_ref.binary():
        pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm): no reference boot")
    made: list[Booted] = []

    def start(initrd: str, *qemu_args: str) -> Booted:
        b = Booted(runner, debian_kernel, initrd, machine, qemu_args)
        made.append(b)
        return b

    yield start
    for b in made:
        b.close()


def test_debian_kernel_prints_its_banner(debian_kernel, machine):
    m = machine(debian_kernel, ram="256M", cmdline="earlycon=pl011,0x09000000 console=ttyAMA0")
    m.serial.expect(r"Booting Linux on physical CPU 0x0+", timeout=120)
    m.serial.expect(r"Linux version \d+\.\d+\.\d+-\d+-arm64 .*Debian", timeout=60)
    m.serial.expect(r"Machine model: vmmpy aarch64 virt", timeout=60)
    m.serial.expect(r"psci: PSCIv1.1 detected in firmware", timeout=60)
    m.serial.expect(r"Kernel command line: earlycon=pl011,0x09000000 console=ttyAMA0", timeout=60)
    m.stop()
    st = m.stats()
    # what printing those lines cost: earlycon writes each byte to the PL011 (MMIO), PSCI was probed
    # over HVC/SMC, the kernel ran millions of instructions and read the counter (CNTVCT: a sysreg
    # that QEMU serves itself, so not counted); a counter that stopped counting shows here
    assert st["mmio_exits"] >= len(m.serial.text.encode()), st
    assert st["hvc_exits"] >= 2 and st["insns"] > 10_000_000, st
    assert st["guest_errors"] == 0, st


def test_boots_to_init_on_two_cpus_and_powers_off(boot, test_initramfs):
    g = boot(test_initramfs)
    t = g.timeout
    # the GICv3 driver probes the ITS of the DTB's intc node (its@8080000) and allocates its tables
    g.expect(rb"ITS \[mem 0x08080000-0x0809ffff\]", timeout=t * 0.4)
    g.expect(rb"ITS@0x0000000008080000: allocated \d+ Devices", timeout=t * 0.2)
    g.expect(rb"smp: Brought up \d+ nodes?, 2 CPUs", timeout=t * 0.6)
    # the guest's own debug registers and the DT's arm,armv8-pmuv3 PMU (csrc/arm/pmu.c on vmmpy)
    g.expect(rb"hw-breakpoint: found \d+ breakpoint and \d+ watchpoint registers", timeout=t * 0.2)
    g.expect(rb"hw perfevents: enabled with armv8_pmuv3 PMU driver, \d+ counters available", timeout=t * 0.2)
    g.expect(rb"Run /init as init process", timeout=t * 0.4)
    m = g.expect(initramfs.MARKER_RE, timeout=60)
    assert int(m.group(1)) == CPUS, m.group(0)
    assert m.group(2) == b"0-1", m.group(0)
    assert "VMMPY-INIT-FAIL" not in g.text
    g.assert_powered_off()


def test_boots_to_init_on_soft_threaded(debian_kernel, test_initramfs, machine):
    """1 vCPU on its own thread with our GIC, timers and PSCI (the Hypervisor.framework combination)."""
    m = machine(debian_kernel, cpus=1, ram="512M", initrd=test_initramfs, cmdline=CMDLINE, backend="soft-threaded")
    res = m.run(timeout=VMMPY_BOOT_TIMEOUT)
    assert res.ok, f"{res}: {m.serial.text[-2000:]}"
    assert "Run /init as init process" in m.serial.text
    match = re.search(initramfs.MARKER_RE, m.serial.data)
    assert match and int(match.group(1)) == 1, m.serial.text[-2000:]
    assert "VMMPY-INIT-FAIL" not in m.serial.text
    assert "reboot: Power down" in m.serial.text
    st = m.stats()
    assert st["irqs"] > 0 and st["sysreg_exits"] > 0, st  # our GIC took interrupts, our timers were used


def test_boots_to_init_on_hvf_two_cpus(debian_kernel, test_initramfs, machine):
    """The Hypervisor.framework backend (here over the framework simulator, csrc/backend/hvfsim): 2 vCPUs,
    each on a thread of its own, our GIC (its CPU interface trapped), the framework's virtual timer."""
    m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=test_initramfs, cmdline=CMDLINE, backend="hvf")
    res = m.run(timeout=VMMPY_BOOT_TIMEOUT)
    assert res.ok, f"{res}: {m.serial.text[-2000:]}"
    assert re.search(r"smp: Brought up \d+ nodes?, 2 CPUs", m.serial.text), m.serial.text[-2000:]
    assert "Run /init as init process" in m.serial.text
    match = re.search(initramfs.MARKER_RE, m.serial.data)
    assert match and int(match.group(1)) == CPUS and match.group(2) == b"0-1", m.serial.text[-2000:]
    assert "VMMPY-INIT-FAIL" not in m.serial.text
    assert "reboot: Power down" in m.serial.text
    st = m.stats()
    assert st["irqs"] > 0 and st["sysreg_exits"] > 0 and st["mmio_exits"] > 0, st


def test_deterministic_smp_boot_is_bit_identical(debian_kernel, test_initramfs, machine):
    """Deterministic mode: Linux on 2 vCPUs, printk timestamps included, gives the same bytes twice."""
    outs = []
    for _ in range(2):
        m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=test_initramfs, cmdline=CMDLINE, deterministic=True)
        res = m.run(timeout=VMMPY_BOOT_TIMEOUT)
        assert res.ok, f"{res}: {m.serial.text[-2000:]}"
        assert re.search(rb"VMMPY-INIT-OK cpus=2", m.serial.data)
        assert re.search(rb"\[ +[1-9]\d*\.\d{6}\]|\[ +0\.[0-9]*[1-9][0-9]*\]", m.serial.data)  # time moved
        outs.append(m.serial.data)
        m.close()
    assert outs[0] == outs[1]


def test_interactive_shell(boot, shell_initramfs):
    g = boot(shell_initramfs)
    g.expect(initramfs.SHELL_READY + r" cpus=2", timeout=g.timeout)
    g.expect(initramfs.PROMPT_RE, timeout=30)
    g.write("echo hi; uname -m\r")  # a terminal sends CR for Enter
    g.expect(rb"\nhi\r?\naarch64\r?\n", timeout=30)
    g.expect(initramfs.PROMPT_RE, timeout=30)
    g.write("tty; echo $((6 * 7))\r")  # job control needs the console as controlling terminal
    g.expect(rb"\n/dev/ttyAMA0\r?\n42\r?\n", timeout=30)
    g.expect(initramfs.PROMPT_RE, timeout=30)
    g.write("exit\r")
    g.expect(rb"VMMPY-SHELL-EXIT", timeout=30)
    g.assert_powered_off()


@pytest.mark.qemu
def test_modules_load_in_dependency_order_on_qemu(debian_kernel):
    """The module path for later virtio work, checked on the reference: virtio_mmio + virtio-rng + 9p."""
    if not qemu_ref.binary():
        pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    cpio = _initramfs(modules=["virtio_mmio", "virtio-rng", "9p", "virtio"])  # virtio is built in: skipped
    cmd = qemu_ref.command(debian_kernel, cpio, cpus=CPUS, cmdline=CMDLINE) + ["-device", "virtio-rng-device"]
    with qemu_ref.QemuConsole(cmd) as q:
        q.expect(initramfs.MARKER_RE, QEMU_BOOT_TIMEOUT)
        assert q.wait(60) == 0
        loaded = re.findall(r"VMMPY-MODULE (\S+) ok", q.text)
        assert "FAIL" not in q.text
    assert sorted(loaded) == sorted(["virtio_mmio", "virtio_rng", "9pnet", "netfs", "fscache", "9p"]), loaded
    for dep, user in (("9pnet", "9p"), ("netfs", "fscache"), ("fscache", "9p")):
        assert loaded.index(dep) < loaded.index(user), loaded


def test_initramfs_contents(test_initramfs, shell_initramfs):
    files = initramfs.read_cpio(pathlib.Path(test_initramfs).read_bytes())
    assert stat.S_ISCHR(files["dev/console"][0]) and files["dev/console"][2] == (5, 1)
    assert stat.S_ISCHR(files["dev/ttyAMA0"][0]) and files["dev/ttyAMA0"][2] == (204, 64)
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc"):
        assert stat.S_ISDIR(files[d][0]), d
    for applet in initramfs.REQUIRED_APPLETS:
        mode, target, _ = files[f"bin/{applet}"]
        assert stat.S_ISLNK(mode) and target == b"busybox", applet
    mode, init, _ = files["init"]
    assert mode & 0o111 and init.startswith(b"#!/bin/sh\n") and b"poweroff -f" in init
    assert files["bin/busybox"][1][:4] == b"\x7fELF"
    shell = initramfs.read_cpio(pathlib.Path(shell_initramfs).read_bytes())
    assert b"cttyhack" in shell["init"][1]


def test_module_dependencies_come_first():
    tree = initramfs.ModuleTree()
    names = [m.name for m in tree.resolve(["9p", "virtio-gpu", "virtio_blk", "virtio"])]
    assert "virtio" not in names  # built in
    for dep, user in (("9pnet", "9p"), ("netfs", "fscache"), ("fscache", "9p"), ("drm", "virtio_gpu")):
        assert names.index(dep) < names.index(user), names
    with pytest.raises(initramfs.InitramfsError, match="no module"):
        tree.resolve(["no_such_module"])


def test_cli_shell_through_a_terminal(debian_kernel, shell_initramfs):
    """`python -m vmmpy run <Image> --initrd <cpio>` on a terminal: what you type reaches BusyBox."""
    import pty
    import select
    import time

    argv = [sys.executable, "-m", "vmmpy", "run", debian_kernel, "--initrd", shell_initramfs, "--cpus", "2"]
    argv += ["--ram", "512M", "--cmdline", "console=ttyAMA0", "--timeout", str(int(VMMPY_BOOT_TIMEOUT))]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pty as its terminal
        os.execv(sys.executable, argv)
    out = b""

    def until(pattern: bytes, timeout: float) -> bool:
        nonlocal out
        end = time.monotonic() + timeout
        while pattern not in out and time.monotonic() < end:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
        return pattern in out

    try:
        assert until(b"vmmpy# ", VMMPY_BOOT_TIMEOUT), out[-2000:]
        os.write(fd, b"echo $((40+2)); uname -m\r")
        assert until(b"42\r\naarch64", 60), out[-2000:]
        os.write(fd, b"exit\r")
        assert until(b"reboot: Power down", 60), out[-2000:]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


FB_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
[ -e /dev/fb0 ] && echo "VMMPY-FB fb0=$(cat /sys/class/graphics/fb0/name)" || echo "VMMPY-FB none"
echo "VMMPY fbcon test line: The quick brown fox jumps over the lazy dog" > /dev/tty1
echo "VMMPY-FB-READY"
read x
poweroff -f
"""


@pytest.fixture(scope="session")
def fbcon_initramfs() -> str:
    return _initramfs(init_script=FB_INIT, modules=["virtio_mmio", "virtio-gpu"])


def text_rows(img) -> int:
    """Rows of the image's top-left 640x200 holding pixels unlike the background (fbcon's text)."""
    crop = img.convert("RGB").crop((0, 0, min(640, img.width), min(200, img.height)))
    bg = max(crop.getcolors(1 << 20), key=lambda c: c[0])[1]
    w, h = crop.size
    px = crop.load()
    return sum(1 for y in range(h) if any(px[x, y] != bg for x in range(0, w, 2)))


def assert_console_text(m, want: int = 8) -> None:
    """fbcon shows at least `want` rows of text: each new frame is looked at until it does (fbcon flushes
    from a worker, so the text comes a few frames after the console appears)."""
    rows = 0
    for _ in range(100):
        n = m.screen.frames
        rows = text_rows(m.screen.capture())
        if rows >= want:
            return
        m.screen.wait_frame(n + 1, timeout=30)
    raise AssertionError(f"only {rows} rows of text-like pixels in the captured frame")


def test_fbcon_text_is_drawn_on_virtio_gpu(debian_kernel, fbcon_initramfs, machine):
    """virtio_mmio + virtio-gpu modules: Linux's fbcon draws text that a captured frame shows."""
    m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=fbcon_initramfs, cmdline=CMDLINE, gpu=True)
    m.serial.expect(rb"VMMPY-MODULE virtio_gpu ok", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-FB fb0=virtio_gpudrmfb", timeout=60)
    m.serial.expect(rb"VMMPY-FB-READY", timeout=60)
    assert_console_text(m)
    m.serial.write(b"\r")
    assert m.wait(timeout=60).ok


BLK_LINES = 1024  # 16 bytes each: 32 sectors
BLK_SEEK = 8  # sectors
BLK_RO_TEXT = b"VMMPY read-only disk contents"
BLK_INIT = (
    """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
mkdir -p /tmp
for d in vda vdb; do
    echo "VMMPY-BLK $d size=$(cat /sys/block/$d/size) ro=$(cat /sys/block/$d/ro) serial=$(cat /sys/block/$d/serial)"
done
i=0
while [ $i -lt @LINES@ ]; do printf 'blk line %06d\\n' $i; i=$((i+1)); done > /tmp/pattern
dd if=/tmp/pattern of=/dev/vda bs=512 seek=@SEEK@ conv=fsync 2>/dev/null && echo "VMMPY-BLK dd ok"
sync
echo "VMMPY-BLK ro-read=$(head -c @ROLEN@ /dev/vdb)"
if dd if=/tmp/pattern of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; then
    echo "VMMPY-BLK ro-write accepted"
else
    echo "VMMPY-BLK ro-write refused"
fi
echo "VMMPY-BLK-DONE"
poweroff -f
""".replace("@LINES@", str(BLK_LINES))
    .replace("@SEEK@", str(BLK_SEEK))
    .replace("@ROLEN@", str(len(BLK_RO_TEXT)))
)


@pytest.fixture(scope="session")
def blk_initramfs() -> str:
    return _initramfs(init_script=BLK_INIT, modules=["virtio_mmio", "virtio_blk"])


def test_virtio_blk_guest_writes_land_in_the_image(debian_kernel, blk_initramfs, machine, tmp_path):
    """virtio_mmio + virtio_blk modules: dd to /dev/vda lands byte-exact in the image; /dev/vdb is read-only."""
    rw, ro = tmp_path / "rw.img", tmp_path / "ro.img"
    before = bytes((i * 13) & 0xFF for i in range(1 << 20))
    rw.write_bytes(before)
    ro.write_bytes(BLK_RO_TEXT.ljust(64 << 10, b"\0"))
    m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=blk_initramfs, cmdline=CMDLINE, disk=[rw, (ro, "ro")])
    m.serial.expect(rb"VMMPY-MODULE virtio_blk ok", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-BLK vda size=2048 ro=0 serial=rw.img", timeout=60)
    m.serial.expect(rb"VMMPY-BLK vdb size=128 ro=1 serial=ro.img", timeout=60)
    m.serial.expect(rb"VMMPY-BLK dd ok", timeout=120)
    m.serial.expect(b"VMMPY-BLK ro-read=" + BLK_RO_TEXT, timeout=60)
    m.serial.expect(rb"VMMPY-BLK ro-write refused", timeout=60)
    m.serial.expect(rb"VMMPY-BLK-DONE", timeout=60)
    assert m.wait(timeout=60).ok
    m.close()
    pattern = b"".join(b"blk line %06d\n" % i for i in range(BLK_LINES))
    at = BLK_SEEK * 512
    assert rw.read_bytes() == before[:at] + pattern + before[at + len(pattern) :]
    assert ro.read_bytes() == BLK_RO_TEXT.ljust(64 << 10, b"\0")


RNG_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
echo "VMMPY-RNG current=$(cat /sys/class/misc/hw_random/rng_current)"
for n in 1 2; do echo "VMMPY-RNG-DATA $(hexdump -n 64 -v -e '/1 "%02x"' /dev/hwrng)"; done
poweroff -f
"""


@pytest.fixture(scope="session")
def rng_initramfs() -> str:
    return _initramfs(init_script=RNG_INIT, modules=["virtio_mmio", "virtio-rng"])


def test_virtio_rng_feeds_dev_hwrng(debian_kernel, rng_initramfs, machine):
    """virtio_mmio + virtio-rng modules: /dev/hwrng reads random bytes from the device."""
    m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=rng_initramfs, cmdline=CMDLINE, rng=True)
    m.serial.expect(rb"VMMPY-MODULE virtio_rng ok", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-RNG current=virtio_rng", timeout=60)
    samples = [bytes.fromhex(m.serial.expect(rb"VMMPY-RNG-DATA ([0-9a-f]{128})\r?\n", timeout=60)[1].decode())]
    samples.append(bytes.fromhex(m.serial.expect(rb"VMMPY-RNG-DATA ([0-9a-f]{128})\r?\n", timeout=60)[1].decode()))
    assert all(len(set(s)) > 16 for s in samples), samples  # not constant
    assert samples[0] != samples[1]
    assert m.wait(timeout=60).ok


P9_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
mkdir -p /mnt/s /mnt/ro
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/s || echo "VMMPY-9P-FAIL mount"
mount -t 9p -o trans=virtio,version=9p2000.L readonly /mnt/ro || echo "VMMPY-9P-FAIL mount ro"
cd /mnt/s
echo "VMMPY-9P host says: $(cat from-host.txt)"
i=0; while [ $i -lt 2000 ]; do echo "line $i of the guest's file"; i=$((i+1)); done > big.txt
mkdir -p dir/sub && echo nested > dir/sub/n.txt
echo "to be renamed" > old.txt && mv old.txt new.txt
echo "to be removed" > gone.txt && rm gone.txt
ln -s new.txt link-to-new
rmdir emptydir 2>/dev/null; mkdir emptydir && rmdir emptydir
ls -la /mnt/s > /dev/null
cat link-to-new > via-link.txt
sync
echo "escape" > /mnt/ro/nope.txt 2>/dev/null && echo "VMMPY-9P-FAIL ro write allowed"
ls ../.. > /dev/null
echo "VMMPY-9P-DONE $(wc -l < big.txt)"
cd /; umount /mnt/s; umount /mnt/ro
poweroff -f
"""


@pytest.fixture(scope="session")
def p9_initramfs() -> str:
    return _initramfs(init_script=P9_INIT, modules=["virtio_mmio", "9pnet_virtio", "9p"])


def test_virtio_9p_share_from_linux(debian_kernel, p9_initramfs, machine, tmp_path):
    """Linux's v9fs mounts the share; creates, writes, renames, links and removes show on the host byte-exact."""
    share, ro = tmp_path / "share", tmp_path / "ro"
    share.mkdir()
    ro.mkdir()
    (share / "from-host.txt").write_text("hello from the host\n")
    (ro / "keep.txt").write_text("read only\n")
    m = machine(
        debian_kernel,
        cpus=CPUS,
        ram="512M",
        initrd=p9_initramfs,
        cmdline=CMDLINE,
        share=[(share, "share"), (ro, "readonly", True)],
    )
    m.serial.expect(rb"VMMPY-9P host says: hello from the host", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-9P-DONE 2000", timeout=120)
    assert m.wait(timeout=60).ok
    assert "VMMPY-9P-FAIL" not in m.serial.text, m.serial.text[-3000:]
    expected = "".join(f"line {i} of the guest's file\n" for i in range(2000))
    assert (share / "big.txt").read_text() == expected
    assert (share / "dir" / "sub" / "n.txt").read_text() == "nested\n"
    assert (share / "new.txt").read_text() == "to be renamed\n" and not (share / "old.txt").exists()
    assert not (share / "gone.txt").exists() and not (share / "emptydir").exists()
    assert os.readlink(share / "link-to-new") == "new.txt"
    assert (share / "via-link.txt").read_text() == "to be renamed\n"
    assert sorted(p.name for p in ro.iterdir()) == ["keep.txt"]


INPUT_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
for d in /sys/class/input/event*; do echo "VMMPY-INPUT-DEV $(basename $d) $(cat $d/device/name)"; done
kbd=$(grep -l "vmmpy keyboard" /sys/class/input/event*/device/name | head -1 | cut -d/ -f5)
tab=$(grep -l "vmmpy tablet" /sys/class/input/event*/device/name | head -1 | cut -d/ -f5)
hexdump -v -C -n 96 /dev/input/$kbd > /tmp/kbd.hex &
hexdump -v -C -n 72 /dev/input/$tab > /tmp/tab.hex &
sleep 1
echo "VMMPY-INPUT-READY"
wait
echo "VMMPY-KBD"; cat /tmp/kbd.hex
echo "VMMPY-TAB"; cat /tmp/tab.hex
echo "VMMPY-INPUT-DONE"
poweroff -f
"""


@pytest.fixture(scope="session")
def input_initramfs() -> str:
    return _initramfs(init_script=INPUT_INIT, modules=["virtio_mmio", "virtio_input", "evdev"])


def _events(hexdump: str) -> list[tuple[int, int, int]]:
    """(type, code, value) of each 24-byte arm64 struct input_event in `hexdump -C` output. Other lines are
    skipped: the kernel may print to the same console meanwhile (a loaded host once made it report
    "hrtimer: interrupt took 165834928 ns" between two lines of the dump)."""
    data = bytearray()
    for line in hexdump.splitlines():
        if not re.match(r"[0-9a-f]{8}  ", line):
            continue
        parts = line.split("|")[0].split()[1:]
        data += bytes(int(p, 16) for p in parts if len(p) == 2)
    return [struct.unpack_from("<HHi", data, off + 16) for off in range(0, len(data) - 23, 24)]


def test_linux_evdev_reads_keyboard_and_tablet(debian_kernel, input_initramfs, machine):
    """virtio_input + evdev: Linux sees both devices and reads the events the host injects."""
    m = machine(debian_kernel, cpus=CPUS, ram="512M", initrd=input_initramfs, cmdline=CMDLINE, input=True)
    m.serial.expect(rb"VMMPY-INPUT-DEV event\d vmmpy keyboard", timeout=VMMPY_BOOT_TIMEOUT)
    m.serial.expect(rb"VMMPY-INPUT-READY", timeout=60)
    m.keyboard.type("a")  # KEY_A press, SYN, release, SYN: 4 events
    m.tablet.move(640, 400)  # ABS_X, ABS_Y, SYN: 3 events (Linux drops unchanged axes, so not 0, 0)
    m.serial.expect(rb"VMMPY-INPUT-DONE", timeout=60)
    assert m.wait(timeout=60).ok
    text = m.serial.text.replace("\r", "")
    kbd = text.split("VMMPY-KBD\n")[1].split("VMMPY-TAB")[0]
    tab = text.split("VMMPY-TAB\n")[1].split("VMMPY-INPUT-DONE")[0]
    assert _events(kbd) == [(1, 30, 1), (0, 0, 0), (1, 30, 0), (0, 0, 0)]
    (tx, ty, syn) = _events(tab)
    assert tx[:2] == (3, 0) and ty[:2] == (3, 1) and syn == (0, 0, 0)
    assert 16000 < tx[2] < 16800 and 16000 < ty[2] < 16800  # the middle of 0..32767


HVC_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
/etc/vmmpy/load-modules
# console=hvc0: the kernel had no console to give /init; there is one now that the driver is bound
exec </dev/console >/dev/console 2>&1
echo "<4>VMMPY-HVC-KMSG after the driver bound" > /dev/kmsg
echo "VMMPY-HVC init on $(cat /sys/class/tty/console/active)"
read -r line
echo "VMMPY-HVC read [$line]"
poweroff -f
"""


@pytest.fixture(scope="session")
def hvc_initramfs() -> str:
    return _initramfs(init_script=HVC_INIT, modules=["virtio_mmio", "virtio_console"])


def test_linux_console_on_hvc0(debian_kernel, hvc_initramfs, machine):
    """virtio_console module, console=hvc0: kernel messages once the driver binds and /init's output and
    input all go through the virtio console (no PL011 console, no earlycon: nothing else prints)."""
    m = machine(
        debian_kernel, cpus=CPUS, ram="512M", initrd=hvc_initramfs, cmdline="console=hvc0 panic=-1", virtio_console=True
    )
    m.serial.expect(rb"VMMPY-HVC-KMSG after the driver bound", timeout=VMMPY_BOOT_TIMEOUT)  # the kernel's printk
    m.serial.expect(rb"VMMPY-HVC init on hvc0", timeout=60)
    m.hvc.type("ping\n")
    m.serial.expect(rb"VMMPY-HVC read \[ping\]", timeout=60)
    assert m.wait(timeout=60).ok
    assert "Booting Linux" not in m.serial.text  # Debian's driver does not replay earlier messages
