"""Machine: one aarch64 VM, its serial console and its run result."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Union

from vmmpy import errors, events, sysregs
from vmmpy._ffi import ffi, lib
from vmmpy.errors import _check
from vmmpy.input import Keyboard, Tablet
from vmmpy.screen import Screen

log = logging.getLogger("vmmpy")

_LEVELS = {
    lib.VMM_LOG_ERROR: logging.ERROR,
    lib.VMM_LOG_WARN: logging.WARNING,
    lib.VMM_LOG_INFO: logging.INFO,
    lib.VMM_LOG_DEBUG: logging.DEBUG,
}

Size = Union[int, str]
# a virtio-blk disk: an image path (read-write), or (path, "ro") / (path, "rw")
DiskSpec = Union[str, os.PathLike, tuple]
# a virtio-9p share: a host directory (tag "share"), or (dir, tag) / (dir, tag, readonly)
ShareSpec = Union[str, os.PathLike, tuple]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.I)


def parse_size(value: Size) -> int:
    """'256M', '1G', '512MiB' or a byte count -> bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise errors.InvalidArgument(f"cannot parse size {value!r} (try 256M or 1G)", lib.VMM_EINVAL, "VMM_EINVAL")
    shift = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    return int(m.group(1)) << shift


def cpu_models() -> list[str]:
    """The names ``Machine(cpu_model=)`` accepts (libvmm's table), the default first."""
    names = []
    while (p := lib.vmm_cpu_model_name(len(names))) != ffi.NULL:
        names.append(ffi.string(p).decode())
    return names


@ffi.def_extern()
def _vmm_log_cb(opaque, level, subsys, msg):  # called from the thread running the VM
    try:
        machine_log = ffi.from_handle(opaque)
        machine_log(level, ffi.string(subsys).decode(errors="replace"), ffi.string(msg).decode(errors="replace"))
    except Exception:  # a logging failure must never unwind into C
        pass


class RunReason(enum.IntEnum):
    POWEROFF = 1
    RESET = 2
    STOPPED = 3
    TIMEOUT = 4
    GUEST_ERROR = 5
    HOST_ERROR = 6


@dataclass(frozen=True)
class RunResult:
    reason: RunReason
    exit_status: int
    pc: int
    message: str = ""

    @property
    def ok(self) -> bool:
        """The guest powered off with status 0."""
        return self.reason == RunReason.POWEROFF and self.exit_status == 0


@dataclass(frozen=True)
class BootInfo:
    entry: int
    kernel_start: int
    kernel_end: int
    initrd_start: int
    initrd_end: int
    dtb_addr: int
    dtb_size: int
    ram_base: int
    ram_size: int


class Serial:
    """The guest's PL011 console: everything it printed, and input to it."""

    def __init__(self, machine: Machine):
        self._m = machine
        self._buf = bytearray()
        self._read_pos = 0  # for read()
        self._expect_pos = 0  # for expect()
        self._lock = threading.Lock()
        self._pull_lock = threading.Lock()  # one reader of libvmm at a time: chunks stay in order

    def _pull(self, timeout: float) -> bool:
        """Move output from libvmm into our buffer; False at end of stream."""
        with self._pull_lock:
            return self._pull_locked(timeout)

    def _pull_locked(self, timeout: float) -> bool:
        chunk = ffi.new("char[]", 65536)
        ns = max(0, int(timeout * 1e9))
        n = lib.vmm_console_read(self._m._vm, chunk, 65536, ns)
        if n == lib.VMM_EEOF:
            return False
        _check(n, self._m._vm)
        with self._lock:
            self._buf += ffi.buffer(chunk, n)[:]
        # drain whatever else is already there without waiting
        while n == 65536:
            n = lib.vmm_console_read(self._m._vm, chunk, 65536, 0)
            if n <= 0:
                break
            with self._lock:
                self._buf += ffi.buffer(chunk, n)[:]
        return True

    @property
    def data(self) -> bytes:
        """Everything the guest printed so far, as bytes."""
        self._pull(0)
        with self._lock:
            return bytes(self._buf)

    @property
    def text(self) -> str:
        """Everything the guest printed so far, decoded (invalid UTF-8 replaced)."""
        return self.data.decode(errors="replace")

    def read(self) -> str:
        """Output printed since the previous read()."""
        self._pull(0)
        with self._lock:
            out = bytes(self._buf[self._read_pos :])
            self._read_pos = len(self._buf)
        return out.decode(errors="replace")

    def write(self, data: bytes | str, at_ns: int | None = None) -> None:
        """Queue input for the guest's serial port.

        In deterministic mode `at_ns` delivers it at that virtual time (see ``Machine.clock_ns``),
        which keeps runs with input bit-identical; without it the input arrives at the next quantum.
        """
        if isinstance(data, str):
            data = data.encode()
        if at_ns is None:
            _check(lib.vmm_console_write(self._m._vm, data, len(data)), self._m._vm)
        else:
            _check(lib.vmm_console_write_at(self._m._vm, at_ns, data, len(data)), self._m._vm)

    def type(self, text: str, at_ns: int | None = None) -> None:
        """Type text into the serial port (newlines become carriage returns, as a terminal sends)."""
        self.write(text.replace("\n", "\r"), at_ns)

    def expect(self, pattern: str | bytes | re.Pattern, timeout: float = 10.0) -> re.Match:
        """Wait until the output (after the previous match) matches `pattern`.

        Starts the machine if it is not running yet. Raises SerialTimeout or,
        if the guest stops first, SerialEOF; both carry the output's tail.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        if isinstance(rx.pattern, str):
            rx = re.compile(rx.pattern.encode(), rx.flags & ~re.UNICODE)
        if not self._m.running and self._m.result is None:
            self._m.start()
        self._m.resume()  # a run parked at a screen pause prints nothing
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                m = rx.search(self._buf, self._expect_pos)
                if m:
                    self._expect_pos = m.end()
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.SerialTimeout(
                    f"no match for {rx.pattern!r} within {timeout:g} s; output ends with:\n{self._tail()}"
                )
            if not self._pull(min(left, 0.5)):
                with self._lock:
                    m = rx.search(self._buf, self._expect_pos)
                if m:
                    self._expect_pos = m.end()
                    return m
                res = self._m.result
                why = f"the VM ended ({res.reason.name})" if res else "the VM is not running"
                raise errors.SerialEOF(f"{why} before {rx.pattern!r} appeared; output ends with:\n{self._tail()}")

    def _tail(self, n: int = 2000) -> str:
        with self._lock:
            return bytes(self._buf[-n:]).decode(errors="replace")


class VirtioConsole:
    """Input to the guest's virtio console (``Machine(virtio_console=True)``, Linux's hvc0).

    Its output joins the one console stream: read it with ``m.serial`` (``expect``, ``read``, ``text``).
    Input has its own queue (port VMM_CONSOLE_VIRTIO), apart from the serial port's.
    """

    def __init__(self, machine: Machine):
        self._m = machine

    def write(self, data: bytes | str, at_ns: int | None = None) -> None:
        """Queue input for the virtio console; `at_ns` as for ``Serial.write`` (deterministic mode).

        Raises NotSupported without ``virtio_console=True``.
        """
        if isinstance(data, str):
            data = data.encode()
        _check(
            lib.vmm_console_write_port(self._m._vm, lib.VMM_CONSOLE_VIRTIO, at_ns or 0, data, len(data)), self._m._vm
        )

    def type(self, text: str, at_ns: int | None = None) -> None:
        """Type text (newlines become carriage returns, as a terminal sends)."""
        self.write(text.replace("\n", "\r"), at_ns)


class Machine:
    """One aarch64 VM.

    >>> with Machine("guest/build/hello.elf") as m:
    ...     m.serial.expect("Hello")
    ...     assert m.wait(timeout=10).ok
    """

    def __init__(
        self,
        kernel: str | os.PathLike | None = None,
        *,
        ram: Size = "256M",
        cpus: int = 1,
        backend: str | None = None,
        cpu_model: str | None = None,
        cmdline: str | None = None,
        initrd: str | os.PathLike | None = None,
        kernel_format: str = "auto",
        load_addr: int | None = None,
        entry: int | None = None,
        log_level: int = logging.INFO,
        name: str | None = None,
        deterministic: bool = False,
        virtio_test_devices: int = 0,
        gpu: bool = False,
        gpu_size: tuple[int, int] = (1280, 800),
        gpu_max_mem: Size = "256M",
        input: bool = False,
        disk: DiskSpec | list[DiskSpec] | None = None,
        rng: bool = False,
        virtio_console: bool = False,
        share: ShareSpec | list[ShareSpec] | None = None,
    ):
        self.name = name or (os.path.basename(os.fspath(kernel)) if kernel else "vm")
        self._log = log.getChild(self.name.replace(".", "_"))
        self._handle = ffi.new_handle(self._on_log)
        self._thread: threading.Thread | None = None
        self._result: RunResult | None = None
        self._run_error: BaseException | None = None
        self._done = threading.Event()
        self._vm = ffi.NULL
        self._parked = False  # deterministic: the run loop waits at a screen pause (Screen.wait_frame(pause=True))
        self._warned_input = False
        cfg = ffi.new("struct vmm_config *")
        cfg.size = ffi.sizeof("struct vmm_config")
        cfg.ncpus = cpus
        cfg.ram_size = parse_size(ram)
        # None: $VMMPY_BACKEND, else auto (KVM where it works, else soft)
        backend = backend or os.environ.get("VMMPY_BACKEND") or "auto"
        keep = [ffi.new("char[]", backend.encode())]
        cfg.backend = keep[0]
        if cpu_model:
            keep.append(ffi.new("char[]", cpu_model.encode()))
            cfg.cpu_model = keep[-1]
        cfg.deterministic = 1 if deterministic else 0
        self.deterministic = bool(deterministic)
        cfg.log_fn = lib._vmm_log_cb
        cfg.log_opaque = self._handle
        cfg.log_level = {
            logging.DEBUG: lib.VMM_LOG_DEBUG,
            logging.INFO: lib.VMM_LOG_INFO,
            logging.WARNING: lib.VMM_LOG_WARN,
        }.get(log_level, lib.VMM_LOG_ERROR if log_level > logging.WARNING else lib.VMM_LOG_DEBUG)
        if cpus < 1:
            raise errors.InvalidArgument(f"cpus must be at least 1 (got {cpus})", lib.VMM_EINVAL, "VMM_EINVAL")
        out = ffi.new("vmm_vm **")
        err = ffi.new("char[]", 512)
        rc = lib.vmm_create(cfg, out, err, 512)
        if rc < 0:
            name_ = ffi.string(lib.vmm_err_name(rc)).decode()
            raise errors.BY_NAME.get(name_, errors.VmmError)(ffi.string(err).decode(), rc, name_)
        self._vm = out[0]
        self.serial = Serial(self)
        self.hvc = VirtioConsole(self)
        self.screen = Screen(self)
        self.keyboard = Keyboard(self)
        self.tablet = Tablet(self, gpu_size)
        self.backend = ffi.string(lib.vmm_backend_name(self._vm)).decode()
        try:
            # devices take virtio-mmio slots in this order
            if gpu:  # m.screen; without it every m.screen call raises NotSupported
                gcfg = ffi.new("struct vmm_gpu_config *")
                gcfg.size = ffi.sizeof("struct vmm_gpu_config")
                gcfg.width, gcfg.height = gpu_size
                gcfg.max_mem = parse_size(gpu_max_mem)
                _check(lib.vmm_add_gpu(self._vm, gcfg), self._vm)
            if input:  # m.keyboard, m.tablet (off unless asked for, even with a GPU: it adds two slots)
                _check(lib.vmm_add_input(self._vm), self._vm)
            for _ in range(virtio_test_devices):  # tests only: the transport conformance device (id 0xfff0)
                _check(lib.vmm_add_test_device(self._vm), self._vm)
            self._add_disks_and_rng(disk, rng)
            if virtio_console:
                self._add_virtio_console()
            self._add_shares(share)
            if kernel is not None:
                self.load_kernel(kernel, format=kernel_format, load_addr=load_addr, entry=entry)
            if initrd is not None:
                self.load_initrd(initrd)
            if cmdline is not None:
                self.set_cmdline(cmdline)
        except BaseException:
            self.close()
            raise

    # -- configuration -------------------------------------------------
    def _add_disks_and_rng(self, disk: DiskSpec | list[DiskSpec] | None, rng: bool) -> None:
        """virtio-blk disks (path, or (path, "ro")) and virtio-rng, before anything runs."""
        disks = [] if disk is None else list(disk) if isinstance(disk, list) else [disk]
        for d in disks:
            path, mode = (d, "rw") if isinstance(d, (str, os.PathLike)) else d
            if mode not in ("ro", "rw"):
                raise errors.InvalidArgument(
                    f"disk {os.fspath(path)!r}: mode must be 'ro' or 'rw' (got {mode!r})", lib.VMM_EINVAL, "VMM_EINVAL"
                )
            _check(lib.vmm_add_disk(self._vm, os.fsencode(path), 1 if mode == "ro" else 0), self._vm)
        if rng:
            _check(lib.vmm_add_rng(self._vm), self._vm)

    def _add_virtio_console(self) -> None:
        """The virtio console (hvc0): its output joins m.serial's stream, its input is m.hvc."""
        _check(lib.vmm_add_virtio_console(self._vm), self._vm)

    def _add_shares(self, share: ShareSpec | list[ShareSpec] | None) -> None:
        """virtio-9p shares: a directory (tag "share", read-write), or (dir, tag) / (dir, tag, readonly)."""
        shares = [] if share is None else list(share) if isinstance(share, list) else [share]
        for sh in shares:
            sh = (sh,) if isinstance(sh, (str, os.PathLike)) else tuple(sh)
            if not 1 <= len(sh) <= 3:
                raise errors.InvalidArgument(
                    f"share {sh!r}: expected dir, (dir, tag) or (dir, tag, readonly)", lib.VMM_EINVAL, "VMM_EINVAL"
                )
            d, tag, ro = sh + ("share", False)[len(sh) - 1 :]
            self.add_share(d, tag, readonly=bool(ro))

    def add_share(self, host_dir: str | os.PathLike, tag: str = "share", *, readonly: bool = False) -> None:
        """Export host_dir to the guest over virtio-9p (9P2000.L; in Linux: mount -t 9p -o trans=virtio TAG DIR)."""
        _check(lib.vmm_add_share(self._vm, os.fsencode(host_dir), tag.encode(), 1 if readonly else 0), self._vm)

    def _on_log(self, level: int, subsys: str, msg: str) -> None:
        self._log.log(_LEVELS.get(level, logging.INFO), "%s: %s", subsys, msg)

    def load_kernel(
        self, path: str | os.PathLike, *, format: str = "auto", load_addr: int | None = None, entry: int | None = None
    ) -> None:
        formats = {"auto": 0, "elf": 1, "image": 2, "raw": 3}
        if format not in formats:
            raise errors.InvalidArgument(
                f"unknown kernel format {format!r} (auto, elf, image, raw)", lib.VMM_EINVAL, "VMM_EINVAL"
            )
        opts = ffi.new("struct vmm_kernel_opts *")
        opts.size = ffi.sizeof("struct vmm_kernel_opts")
        opts.format = formats[format]
        opts.load_addr = load_addr or 0
        opts.entry = entry or 0
        _check(lib.vmm_load_kernel(self._vm, os.fsencode(path), opts), self._vm)

    def load_initrd(self, path: str | os.PathLike) -> None:
        _check(lib.vmm_load_initrd(self._vm, os.fsencode(path)), self._vm)

    def set_cmdline(self, cmdline: str) -> None:
        _check(lib.vmm_set_cmdline(self._vm, cmdline.encode()), self._vm)

    # -- inspection ------------------------------------------------------
    def boot_info(self) -> BootInfo:
        bi = ffi.new("struct vmm_boot_info *")
        bi.size = ffi.sizeof("struct vmm_boot_info")
        _check(lib.vmm_boot_info(self._vm, bi), self._vm)
        return BootInfo(
            bi.entry,
            bi.kernel_start,
            bi.kernel_end,
            bi.initrd_start,
            bi.initrd_end,
            bi.dtb_addr,
            bi.dtb_size,
            bi.ram_base,
            bi.ram_size,
        )

    def dtb(self) -> bytes:
        """The flattened device tree the guest boots with."""
        n = ffi.new("size_t *")
        _check(lib.vmm_get_dtb(self._vm, ffi.NULL, 0, n), self._vm)
        buf = ffi.new("char[]", n[0])
        _check(lib.vmm_get_dtb(self._vm, buf, n[0], n), self._vm)
        return ffi.buffer(buf, n[0])[:]

    def stats(self) -> dict[str, int]:
        st = ffi.new("struct vmm_stats *")
        st.size = ffi.sizeof("struct vmm_stats")
        _check(lib.vmm_get_stats(self._vm, st), self._vm)
        return {f: getattr(st, f) for f, _ in ffi.typeof("struct vmm_stats").fields if f != "size"}

    def read_memory(self, gpa: int, length: int) -> bytes:
        buf = ffi.new("char[]", length)
        _check(lib.vmm_mem_read(self._vm, gpa, buf, length), self._vm)
        return ffi.buffer(buf, length)[:]

    def write_memory(self, gpa: int, data: bytes) -> None:
        _check(lib.vmm_mem_write(self._vm, gpa, data, len(data)), self._vm)

    def mmio_read(self, gpa: int, size: int = 4) -> int:
        """Read a device register as a vCPU would (device-level tests)."""
        val = ffi.new("uint64_t *")
        _check(lib.vmm_mmio_read(self._vm, gpa, size, val), self._vm)
        return int(val[0])

    def mmio_write(self, gpa: int, value: int, size: int = 4) -> None:
        _check(lib.vmm_mmio_write(self._vm, gpa, size, value), self._vm)

    # -- interrupts, system registers, clock (device-level tests) ----------
    def irq_set(self, intid: int, level: bool | int, cpu: int = 0) -> None:
        """Drive GIC input `intid` (SGI/PPI of `cpu` below 32, SPI otherwise) high or low."""
        _check(lib.vmm_irq_set(self._vm, cpu, intid, 1 if level else 0), self._vm)

    def irq_line(self, cpu: int = 0) -> bool:
        """Whether the GIC asserts vCPU `cpu`'s IRQ line."""
        return bool(_check(lib.vmm_irq_line(self._vm, cpu), self._vm))

    def sysreg_read(self, reg: str | int, cpu: int = 0) -> int:
        """MRS of a trapped system register (``"ICC_IAR1_EL1"``, ``"CNTV_CTL_EL0"``...) as vCPU `cpu`."""
        val = ffi.new("uint64_t *")
        _check(lib.vmm_sysreg_read(self._vm, cpu, sysregs.encode(reg), val), self._vm)
        return int(val[0])

    def sysreg_write(self, reg: str | int, value: int, cpu: int = 0) -> None:
        """MSR of a trapped system register as vCPU `cpu`."""
        _check(lib.vmm_sysreg_write(self._vm, cpu, sysregs.encode(reg), value), self._vm)

    @property
    def clock_ns(self) -> int:
        """The guest clock in ns (virtual in deterministic mode)."""
        return int(lib.vmm_clock_ns(self._vm))

    def run_events(self, path_or_text: str | os.PathLike, timeout: float = 30.0):
        """Run an input script (see vmmpy.events: wait, type, key, click, capture, ...) in this thread.

        Starts the machine if it never ran; returns when the script is done (the VM goes on). Raises
        EventsSyntaxError before anything happens for a bad script, EventsFailed if a wait times out or
        the guest ends first. Each wait on the guest gives up after `timeout` seconds.
        """
        return events.run_events(self, path_or_text, timeout)

    def clock_advance(self, ns: int) -> None:
        """Deterministic mode, VM not running: move virtual time forward, firing due timers."""
        _check(lib.vmm_clock_advance(self._vm, ns), self._vm)

    @property
    def paused(self) -> bool:
        """Deterministic mode: the run loop is parked by ``m.screen.wait_frame(n, pause=True)``."""
        return self._parked and self.running

    @property
    def input_time_ns(self) -> int:
        """Deterministic mode: when keyboard/tablet events sent without ``at_ns`` are due.

        The virtual clock, which is exact (the same every run) while the VM stands still: before it
        starts, after it stopped, or parked at a screen pause. While it runs freely the clock is
        wherever the loop happens to be: input sent then is not reproducible (logged once).
        """
        if self.running and not self._parked and not self._warned_input:
            self._warned_input = True
            self._log.warning(
                "deterministic mode: input sent while the VM runs freely enters at the next round, which is "
                "not reproducible; pass at_ns= or pause first (m.screen.wait_frame(n, pause=True))"
            )
        return self.clock_ns

    def _input_at(self, at_ns: int | None) -> int | None:
        """The virtual time for input: at_ns, m.input_time_ns by default, None in real-time mode."""
        if at_ns is not None:
            if at_ns < 0:
                raise errors.InvalidArgument(f"at_ns must be >= 0 (got {at_ns})", lib.VMM_EINVAL, "VMM_EINVAL")
            return int(at_ns)
        return self.input_time_ns if self.deterministic else None

    def stop_at(self, at_ns: int) -> None:
        """Deterministic mode: end the run (reason STOPPED) exactly when the virtual clock reaches `at_ns`.

        The stop point is host-independent when set while the VM stands still (before it starts, or
        parked by ``m.screen.wait_frame(n, pause=True)``): the run ends with ``m.clock_ns == at_ns``,
        before input due at that time enters; an idle guest's clock jumps there. A time already past stops
        at the next round. It does not resume a parked VM (``m.wait()`` does). StateError in real-time mode.
        """
        if not 0 <= at_ns < 2**64 - 1:
            raise errors.InvalidArgument(f"at_ns out of range: {at_ns}", lib.VMM_EINVAL, "VMM_EINVAL")
        _check(lib.vmm_stop_at(self._vm, int(at_ns)), self._vm)

    def resume(self) -> None:
        """Let a run parked at a screen pause go on (nothing if it is not parked)."""
        if self._parked:
            self._parked = False
            _check(lib.vmm_screen_resume(self._vm), self._vm)

    # -- running -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def result(self) -> RunResult | None:
        """How the last run ended, or None while running / before the first run."""
        return self._result

    @property
    def exit_status(self) -> int | None:
        return self._result.exit_status if self._result else None

    def _run_blocking(self, timeout: float | None) -> RunResult:
        res = ffi.new("struct vmm_run_result *")
        res.size = ffi.sizeof("struct vmm_run_result")
        ns = 0 if timeout is None else max(1, int(timeout * 1e9))
        _check(lib.vmm_run(self._vm, ns, res), self._vm)
        reason = RunReason(res.reason)
        msg = ""
        if reason in (RunReason.GUEST_ERROR, RunReason.HOST_ERROR):
            msg = ffi.string(lib.vmm_last_error(self._vm)).decode(errors="replace")
        return RunResult(reason, res.exit_status, res.pc, msg)

    def _thread_main(self, timeout: float | None) -> None:
        try:
            self._result = self._run_blocking(timeout)
        except BaseException as e:  # re-raised by wait()
            self._run_error = e
        finally:
            self._parked = False
            self._done.set()

    def start(self, timeout: float | None = None) -> None:
        """Run the VM in a background thread; wait() collects the result."""
        if self.running:
            raise errors.Busy("the machine is already running", lib.VMM_EBUSY, "VMM_EBUSY")
        self._result = None
        self._run_error = None
        self._done.clear()
        lib.vmm_run_pending(self._vm)  # serial readers now wait for output rather than see EOF
        self._thread = threading.Thread(target=self._thread_main, args=(timeout,), name=f"vmm-{self.name}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the background run to end. On timeout, stop it and return TIMEOUT."""
        if self._thread is None:
            raise errors.StateError("the machine was not started", lib.VMM_ESTATE, "VMM_ESTATE")
        self.resume()
        if not self._done.wait(timeout):
            lib.vmm_request_stop(self._vm)
            self._done.wait()
            self._thread.join()
            if self._result is not None and self._result.reason == RunReason.STOPPED:
                self._result = RunResult(RunReason.TIMEOUT, 0, self._result.pc)
        self._thread.join()
        if self._run_error is not None:
            raise self._run_error
        assert self._result is not None
        return self._result

    def run(self, timeout: float | None = None) -> RunResult:
        """Run until the guest powers off or resets, or `timeout` seconds pass."""
        if self.running:
            return self.wait(timeout)
        self.start(timeout)
        return self.wait()

    def stop(self) -> RunResult | None:
        """Ask a running VM to stop and wait for it; returns the run result."""
        if self._vm == ffi.NULL:
            return None
        self._parked = False  # a stop ends the pause too
        lib.vmm_request_stop(self._vm)
        if self._thread is not None:
            return self.wait()
        return None

    def close(self) -> None:
        """Stop the VM if it runs and free it. Safe to call twice."""
        if self._vm == ffi.NULL:
            return
        if self.running:
            lib.vmm_request_stop(self._vm)
            self._done.wait()
        if self._thread is not None:
            self._thread.join()
        lib.vmm_destroy(self._vm)
        self._vm = ffi.NULL

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()
