"""The reference: the same kernel and initramfs on qemu-system-aarch64 (TCG), driven through pipes.

    python tools/qemu_ref.py            # boot the test initramfs, print the time to the marker
    python tools/qemu_ref.py --shell    # boot the shell initramfs, type a command, show the answer
    python tools/qemu_ref.py --screenshot out.png   # guest/build/gpu_demo.elf's held frame as a PNG

`QemuConsole` is a small expect-style wrapper (no pexpect needed): a thread drains QEMU's stdout
into a buffer; `expect()` searches it from the end of the previous match, like vmmpy's Serial.
`QemuGpu` adds a virtio-gpu (virtio-mmio, non-legacy) and a QMP socket for `screendump`;
`gpu_screenshot()` boots a bare-metal guest with it and returns the screen after a serial marker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

CMDLINE = "console=ttyAMA0 earlycon=pl011,0x09000000 panic=-1"


class QemuError(RuntimeError):
    pass


def binary() -> str | None:
    return shutil.which("qemu-system-aarch64")


def command(
    kernel: str, initrd: str | None = None, *, cpus: int = 2, ram: str = "512", cmdline: str = CMDLINE
) -> list[str]:
    """QEMU's virt board with a GICv3 and Cortex-A72s: the machine vmmpy models."""
    q = binary()
    if not q:
        raise QemuError("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    cmd = [q, "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-smp", str(cpus), "-m", ram, "-nographic",
           "-kernel", kernel]  # fmt: skip
    if initrd:
        cmd += ["-initrd", initrd]
    return [*cmd, "-append", cmdline, "-no-reboot"]


class QemuConsole:
    """A running QEMU whose serial console is its stdin/stdout (-nographic)."""

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._drain, name="qemu-stdout", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += chunk
                self._cond.notify_all()

    @property
    def data(self) -> bytes:
        with self._cond:
            return bytes(self._buf)

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def expect(self, pattern: str | bytes, timeout: float = 60.0) -> re.Match:
        """Wait for `pattern` after the previous match; raise QemuError with the output's tail if it does not come."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._buf, self._pos)
                if m:
                    self._pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "QEMU exited" if self._eof else f"no match within {timeout:g} s"
                    tail = bytes(self._buf[-2000:]).decode(errors="replace")
                    raise QemuError(f"{why} waiting for {rx.pattern!r}; output ends with:\n{tail}")
                self._cond.wait(left)

    def elapsed(self) -> float:
        """Seconds since the process was started."""
        return time.perf_counter() - self.t0

    def write(self, data: bytes | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60.0) -> int:
        """QEMU's exit status (0 after the guest's PSCI SYSTEM_OFF); kills it after `timeout`."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise QemuError(f"QEMU still running after {timeout:g} s; output ends with:\n{self.text[-2000:]}") from None
        self._reader.join(5)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                with contextlib.suppress(OSError):  # broken pipe on flush
                    f.close()

    def __enter__(self) -> QemuConsole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- virtio-gpu guests: QMP screendump ------------------------------------------------------------


def gpu_command(
    kernel: str, qmp_path: str, *, cpus: int = 1, ram: str = "256M", xres: int | None = None, yres: int | None = None
) -> list[str]:
    """A bare-metal guest on QEMU's virt board with a virtio-gpu-device on a version 2 (non-legacy)
    virtio-mmio transport, the PL011 on stdin/stdout, semihosting, and QMP on the unix socket `qmp_path`."""
    q = binary()
    if not q:
        raise QemuError("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    gpu = "virtio-gpu-device"
    if xres:
        gpu += f",xres={xres}"
    if yres:
        gpu += f",yres={yres}"
    return [q, "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-smp", str(cpus), "-m", ram,
            "-nographic", "-monitor", "none", "-serial", "stdio", "-semihosting", "-no-reboot",
            "-global", "virtio-mmio.force-legacy=false", "-device", gpu,
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-kernel", kernel]  # fmt: skip


class Qmp:
    """A minimal QMP client (one command at a time; asynchronous events are skipped)."""

    def __init__(self, path: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QemuError(f"QMP socket {path}: {e}") from None
                time.sleep(0.05)
        self._rd = self.sock.makefile("rb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise QemuError(f"QMP: unexpected greeting {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self._rd.readline()
        if not line:
            raise QemuError("QMP: connection closed")
        return json.loads(line)

    def execute(self, command: str, **arguments) -> object:
        msg: dict = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise QemuError(f"QMP {command}: {r['error'].get('class')}: {r['error'].get('desc')}")
            # {"event": ...}: not ours

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._rd.close()
            self.sock.close()


class QemuGpu(QemuConsole):
    """A bare-metal guest with a virtio-gpu on QEMU: serial through QemuConsole, `screendump()` through QMP."""

    def __init__(self, kernel: str, **kw):
        self._dir = tempfile.mkdtemp(prefix="vmmpy-qemu-")
        self.qmp_path = os.path.join(self._dir, "qmp.sock")
        self._qmp: Qmp | None = None
        super().__init__(gpu_command(kernel, self.qmp_path, **kw))

    @property
    def qmp(self) -> Qmp:
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_path)
        return self._qmp

    def screendump(self):
        """The guest's screen now, as an RGB PIL image (PNG from QEMU >= 7.1, PPM before)."""
        from PIL import Image  # only the screenshot helpers need Pillow

        path = os.path.join(self._dir, "screen")
        try:
            self.qmp.execute("screendump", filename=path + ".png", format="png")
            path += ".png"
        except QemuError as e:
            if "format" not in str(e) and "png" not in str(e).lower():
                raise
            self.qmp.execute("screendump", filename=path + ".ppm")  # older QEMU: PPM only
            path += ".ppm"
        with Image.open(path) as im:
            img = im.convert("RGB")
        os.unlink(path)
        return img

    def close(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        super().close()
        shutil.rmtree(self._dir, ignore_errors=True)


def gpu_screenshot(
    kernel: str,
    marker: str | bytes,
    *,
    resume: bytes | None = b"c",
    finish: str | bytes | None = None,
    timeout: float = 60.0,
    **kw,
) -> tuple[object, str]:
    """Boot `kernel` on QEMU with a virtio-gpu, wait for `marker` (a regex) on the serial port, take a
    screendump, then send `resume` (if not None: e.g. the byte a guest holding its frame waits for), wait
    for `finish` (a regex) if given and for QEMU to exit. Returns (PIL RGB image, serial output).
    Guests hold their frame by themselves (guest/gpu_demo.c: after `gpu_demo: holding frame N` it waits
    for a UART byte), so the screenshot is of a known frame."""
    with QemuGpu(kernel, **kw) as q:
        q.expect(marker, timeout)
        img = q.screendump()
        if resume is not None:
            q.write(resume)
        if finish is not None:
            q.expect(finish, timeout)
            rc = q.wait(timeout)
            if rc != 0:
                raise QemuError(f"QEMU exited with {rc}; output ends with:\n{q.text[-2000:]}")
        return img, q.text


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fetch_debian
    import initramfs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shell", action="store_true", help="boot the shell initramfs and run a command in it")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("-m", "--module", action="append", default=[], metavar="NAME", help="add a kernel module (+deps)")
    ap.add_argument("--screenshot", metavar="PNG", help="run guest/build/gpu_demo.elf, save its held frame")
    args = ap.parse_args()
    if args.screenshot:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        elf = os.path.join(root, "guest", "build", "gpu_demo.elf")
        img, text = gpu_screenshot(elf, r"gpu_demo: holding frame \d+", finish=r"PASS gpu_demo")
        img.save(args.screenshot)
        print(f"{img.width}x{img.height} -> {args.screenshot}")
        return 0
    kernel = fetch_debian.kernel()
    cpio = initramfs.cached(shell=args.shell, modules=args.module)
    cmd = command(kernel, cpio, cpus=args.cpus)
    print(" ".join(cmd))
    for _ in range(args.runs):
        with QemuConsole(cmd) as q:
            if args.shell:
                q.expect(initramfs.SHELL_READY, 120)
                q.expect(initramfs.PROMPT_RE, 30)
                t = q.elapsed()
                q.write("echo hi; uname -m\r")
                m = q.expect(rb"\nhi\r?\n(\w+)\r?\n", 30)
                print(f"prompt after {t:.2f} s; `echo hi; uname -m` -> hi, {m.group(1).decode()}")
                q.expect(initramfs.PROMPT_RE, 30)
                q.write("exit\r")
            else:
                m = q.expect(initramfs.MARKER_RE, 120)
                print(f"{m.group(0).decode().strip()} after {q.elapsed():.2f} s")
            rc = q.wait(60)
            print(f"QEMU exited with {rc} after {q.elapsed():.2f} s")
            if rc != 0 or b"reboot: Power down" not in q.data:
                print(q.text[-3000:])
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
