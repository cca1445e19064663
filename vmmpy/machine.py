"""Machine: one aarch64 VM, its serial console and its run result."""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Union

from vmmpy import artifacts, errors, events, sysregs
from vmmpy import net as net_
from vmmpy._ffi import ffi, lib
from vmmpy.errors import _check
from vmmpy.input import Keyboard, Tablet
from vmmpy.screen import Screen

# re-exported: vmmpy.machine was their home
from vmmpy.serial import DEFAULT_SERIAL_BUFFER, MIN_SERIAL_BUFFER, ExpectResult, Pattern, Serial, VirtioConsole  # noqa: F401

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

_SIZE_RE = re.compile(r"^\s*(\d{1,40})\s*([kmgt]?)(i?b)?\s*$", re.I)
_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}

MAX_CPUS = lib.VMM_MAX_CPUS
# where virtio devices sit (Machine(transport=)): a virtio-mmio slot each, or a PCI function each
TRANSPORTS = {"mmio": lib.VMM_TRANSPORT_MMIO, "pci": lib.VMM_TRANSPORT_PCI}
# vCPUs and host threads (vmm_config.vcpu_threads): auto (soft: a thread per vCPU for a real-time SMP VM when
# the patched Unicorn is built, else one), one (every vCPU on one thread, round-robin), per-vcpu
VCPU_THREADS = {
    "auto": lib.VMM_VCPU_THREADS_AUTO,
    "one": lib.VMM_VCPU_THREADS_ONE,
    "per-vcpu": lib.VMM_VCPU_THREADS_PER_VCPU,
}
RAM_BASE = 0x4000_0000  # where guest RAM starts (docs/ARCHITECTURE.md: the memory map)
U64 = 2**64 - 1


def _invalid(msg: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(msg, lib.VMM_EINVAL, "VMM_EINVAL")


def parse_size(value: Size, bare_unit: str = "") -> int:
    """'256M', '1G', '512MiB', '4096B' or a byte count -> bytes.

    A number without a unit is in `bare_unit` ("" bytes, "M" MiB, ...): ``parse_size("512", "M")`` is 512 MiB.
    Ints are taken as they are (bytes). Sizes from 2**64 up are refused.
    """
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise _invalid(f"cannot parse size {str(value)[:40]!r} (try 256M or 1G)")
        unit = m.group(2).lower() or ("" if m.group(3) else bare_unit.lower())
        n = int(m.group(1)) << _SHIFTS[unit]
    if not 0 <= n <= U64:
        raise _invalid(f"size {str(value)[:40]!r} is out of range")
    return n


def parse_ram(value: Size) -> int:
    """Guest RAM as Machine(ram=) and --ram take it: a bare number is MiB (as QEMU's -m), 0 is refused.

    ``512``, ``"512"`` and ``"512M"`` are 512 MiB; bytes need a unit (``"536870912B"``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid(f"ram must be a size such as 512 (MiB) or '1G', not {value!r}")
    n = parse_size(f"{value}M" if isinstance(value, int) and value >= 0 else value, bare_unit="M")
    if n == 0:
        raise _invalid("the RAM size must be more than 0")
    return n


def cpu_models() -> list[str]:
    """The names ``Machine(cpu_model=)`` accepts (libvmm's table), the default first."""
    names = []
    while (p := lib.vmm_cpu_model_name(len(names))) != ffi.NULL:
        names.append(ffi.string(p).decode())
    return names


def _log_level(level: int) -> int:
    """A logging level as libvmm's (messages above it are dropped in C)."""
    return {
        logging.DEBUG: lib.VMM_LOG_DEBUG,
        logging.INFO: lib.VMM_LOG_INFO,
        logging.WARNING: lib.VMM_LOG_WARN,
    }.get(level, lib.VMM_LOG_ERROR if level > logging.WARNING else lib.VMM_LOG_DEBUG)


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
        transport: str = "mmio",
        its: bool = False,
        vcpu_threads: str | None = None,
        virtio_test_devices: int = 0,
        gpu: bool = False,
        gpu_size: tuple[int, int] = (1280, 800),
        gpu_max_mem: Size = "256M",
        input: bool = False,
        disk: DiskSpec | list[DiskSpec] | None = None,
        rng: bool = False,
        virtio_console: bool = False,
        share: ShareSpec | list[ShareSpec] | None = None,
        net: net_.NetSpec | list[net_.NetSpec] | None = None,
        hostfwd: str | list[str] | None = None,
        net_capture: str | os.PathLike | list | None = None,
        mac: str | list | None = None,
        serial_buffer: Size = DEFAULT_SERIAL_BUFFER,
        timeout: float | None = None,
        gdb: str | int | None = None,
        gdb_wait: bool = False,
    ):
        config = {k: v for k, v in locals().items() if k != "self"}  # the arguments, for failure artifacts
        self._init_host_side(name or (os.path.basename(os.fspath(kernel)) if kernel else "vm"), timeout)
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise _invalid(f"cpus must be at least 1 (got {cpus!r})")
        if cpus > MAX_CPUS:
            raise _invalid(f"{cpus} vCPUs requested, at most {MAX_CPUS} are supported")
        buffer_size = parse_size(serial_buffer)
        if buffer_size < MIN_SERIAL_BUFFER:
            raise _invalid(f"serial_buffer must be at least {MIN_SERIAL_BUFFER} bytes (got {buffer_size})")
        cfg = ffi.new("struct vmm_config *")
        cfg.size = ffi.sizeof("struct vmm_config")
        cfg.ncpus = cpus
        cfg.ram_size = parse_ram(ram)
        # None: $VMMPY_BACKEND, else auto (KVM where it works, else soft)
        backend = backend or os.environ.get("VMMPY_BACKEND") or "auto"
        keep = [ffi.new("char[]", backend.encode())]
        cfg.backend = keep[0]
        if cpu_model:
            keep.append(ffi.new("char[]", cpu_model.encode()))
            cfg.cpu_model = keep[-1]
        cfg.deterministic = 1 if deterministic else 0
        if transport not in TRANSPORTS:
            raise _invalid(f"transport must be one of {', '.join(TRANSPORTS)} (got {transport!r})")
        cfg.transport = TRANSPORTS[transport]
        cfg.its = 1 if its else 0
        # None: $VMMPY_VCPU_THREADS, else auto
        vcpu_threads = vcpu_threads or os.environ.get("VMMPY_VCPU_THREADS") or "auto"
        if vcpu_threads not in VCPU_THREADS:
            raise _invalid(f"vcpu_threads must be one of {', '.join(VCPU_THREADS)} (got {vcpu_threads!r})")
        cfg.vcpu_threads = VCPU_THREADS[vcpu_threads]
        cfg.log_fn = lib._vmm_log_cb
        cfg.log_opaque = self._handle
        cfg.log_level = _log_level(log_level)
        out = ffi.new("vmm_vm **")
        err = ffi.new("char[]", 512)
        rc = lib.vmm_create(cfg, out, err, 512)
        if rc < 0:
            name_ = ffi.string(lib.vmm_err_name(rc)).decode()
            raise errors.BY_NAME.get(name_, errors.VmmError)(ffi.string(err).decode(), rc, name_)
        self._attach(out[0], buffer_size, gpu_size)
        try:
            # devices take virtio-mmio slots in this order
            if gpu:  # m.screen; without it every m.screen call raises NotSupported
                gcfg = ffi.new("struct vmm_gpu_config *")
                gcfg.size = ffi.sizeof("struct vmm_gpu_config")
                gcfg.width, gcfg.height = gpu_size
                gcfg.max_mem = parse_size(gpu_max_mem)
                self._checked(lib.vmm_add_gpu, gcfg)
            if input:  # m.keyboard, m.tablet (off unless asked for, even with a GPU: it adds two slots)
                self._checked(lib.vmm_add_input)
            for _ in range(virtio_test_devices):  # tests only: the transport conformance device (id 0xfff0)
                self._checked(lib.vmm_add_test_device)
            self._add_disks_and_rng(disk, rng)
            if virtio_console:
                self._add_virtio_console()
            self._add_shares(share)
            net_.add_nets(self, net, hostfwd, net_capture, mac)  # docs/devices.md#network
            if kernel is not None:
                self.load_kernel(kernel, format=kernel_format, load_addr=load_addr, entry=entry)
            if initrd is not None:
                self.load_initrd(initrd)
            if cmdline is not None:
                self.set_cmdline(cmdline)
            if gdb is not None:
                self._gdb_listen(gdb, gdb_wait)
        except BaseException:
            self.close()
            raise
        # sizes in bytes: the artifacts' command line needs no parsing of its own
        config.update(ram=cfg.ram_size, gpu_max_mem=parse_size(gpu_max_mem), serial_buffer=buffer_size)
        self._record = artifacts.machine_created(self, config)

    def _gdb_listen(self, gdb: str | int, wait: bool) -> None:
        """Start the GDB server: a port (0: a free one), "HOST:PORT" or "unix:PATH" (docs/gdb.md)."""
        if isinstance(gdb, bool) or not isinstance(gdb, (str, int)):
            raise _invalid(f"gdb must be a port, 'HOST:PORT' or 'unix:PATH' (got {gdb!r})")
        self._checked(lib.vmm_gdb_listen, str(gdb).encode(), 1 if wait else 0)

    @property
    def gdb_address(self) -> str | None:
        """Where the GDB server listens ("127.0.0.1:40123", "unix:/path"), or None without one."""
        buf = ffi.new("char[]", 256)
        vm = self._enter()
        try:
            if lib.vmm_gdb_address(vm, buf, 256) < 0:
                return None
        finally:
            self._leave()
        return ffi.string(buf).decode()

    def _init_host_side(self, name: str, timeout: float | None) -> None:
        """The Python-side state every Machine has, before its VM exists."""
        self._record: artifacts.MachineRecord | None = None  # set while a pytest test records its machines
        self.name = name
        self._log = log.getChild(self.name.replace(".", "_"))
        self._handle = ffi.new_handle(self._on_log)
        self._thread: threading.Thread | None = None
        self._result: RunResult | None = None
        self._run_error: BaseException | None = None
        self._done = threading.Event()
        self._vm = ffi.NULL
        # the guard (_enter/_leave): calls into libvmm in flight, and whether close() has begun
        self._guard = threading.Condition(threading.Lock())
        self._users = 0
        self._closing = False
        self._close_lock = threading.Lock()
        self._parked = False  # deterministic: the run loop waits at a screen pause (Screen.wait_frame(pause=True))
        self._warned_input = False
        # runs started without a timeout (start(), run(), and the start that expect() / wait_frame() make)
        # end after this many seconds with RunReason.TIMEOUT; None: no limit
        self.timeout = self._seconds(timeout)

    def _attach(self, vm, buffer_size: int, gpu_size: tuple[int, int]) -> None:
        """Take ownership of a created (or restored) VM and build the host-side objects on it."""
        self._vm = vm
        self.deterministic = bool(lib.vmm_is_deterministic(vm))
        self.serial = Serial(self, buffer_size)
        self.hvc = VirtioConsole(self)
        self.screen = Screen(self)
        self.keyboard = Keyboard(self)
        self.tablet = Tablet(self, gpu_size)
        self.backend = self._call(lambda vm: ffi.string(lib.vmm_backend_name(vm)).decode())

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike,
        *,
        share: str | os.PathLike | list[str | os.PathLike | None] | None = None,
        disk: str | os.PathLike | list[str | os.PathLike | None] | None = None,
        backend: str | None = None,
        log_level: int = logging.INFO,
        name: str | None = None,
        serial_buffer: Size = DEFAULT_SERIAL_BUFFER,
        timeout: float | None = None,
        gpu_size: tuple[int, int] = (1280, 800),
    ) -> Machine:
        """A new machine from a snapshot (:meth:`snapshot`), paused where the saved one stood.

        It has the saved machine's devices, state and RAM (mapped copy-on-write from the file, which
        must stay in place while the machine exists); ``start()``/``run()`` continue the guest, and
        ``serial``, ``screen``, ``keyboard`` work as on the original. ``share``/``disk``: host paths
        that replace the recorded ones, by index among shares/disks (one path for the first, or a
        list; ``None`` entries keep the recorded path). ``backend``: refuse a snapshot of another
        backend (None: the snapshot's). ``gpu_size``: the screen size the tablet scales to.
        A bad file raises the library's one-line error (``FormatError``, ``NotSupported``, ...).
        """
        m = cls.__new__(cls)
        m._init_host_side(name or os.path.basename(os.fspath(path)), timeout)
        buffer_size = parse_size(serial_buffer)
        if buffer_size < MIN_SERIAL_BUFFER:
            raise _invalid(f"serial_buffer must be at least {MIN_SERIAL_BUFFER} bytes (got {buffer_size})")
        rc = ffi.new("struct vmm_restore_config *")
        rc.size = ffi.sizeof("struct vmm_restore_config")
        rc.log_fn = lib._vmm_log_cb
        rc.log_opaque = m._handle
        rc.log_level = _log_level(log_level)
        keep: list = []

        def strings(value) -> tuple:
            items = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
            arr = ffi.new("char *[]", max(1, len(items)))
            for i, v in enumerate(items):
                if v is not None:
                    keep.append(ffi.new("char[]", os.fsencode(v)))
                    arr[i] = keep[-1]
            keep.append(arr)
            return arr, len(items)

        rc.disk_paths, rc.ndisk_paths = strings(disk)
        rc.share_paths, rc.nshare_paths = strings(share)
        if backend:
            keep.append(ffi.new("char[]", backend.encode()))
            rc.backend = keep[-1]
        out = ffi.new("vmm_vm **")
        err = ffi.new("char[]", 1024)
        code = lib.vmm_snapshot_restore(os.fsencode(path), rc, out, err, 1024)
        if code < 0:
            name_ = ffi.string(lib.vmm_err_name(code)).decode()
            raise errors.BY_NAME.get(name_, errors.VmmError)(ffi.string(err).decode(errors="replace"), code, name_)
        m._attach(out[0], buffer_size, gpu_size)
        return m

    def snapshot(self, path: str | os.PathLike) -> None:
        """Save the whole machine to ``path`` (see :meth:`restore`); the machine stays paused.

        A running machine is stopped first (like :meth:`stop`: where it stops depends on the host's
        timing; for an exact virtual time in deterministic mode use ``stop_at(t)`` and ``wait()``
        first). Continue it with ``start()``. Raises ``StateError`` before the machine was prepared
        (it never ran: call ``boot_info()`` or run it) and after it ended.
        """
        if self.running:
            self.stop()
        self._checked(lib.vmm_snapshot_save, os.fsencode(path))

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
            self._checked(lib.vmm_add_disk, os.fsencode(path), 1 if mode == "ro" else 0)
        if rng:
            self._checked(lib.vmm_add_rng)

    def _add_virtio_console(self) -> None:
        """The virtio console (hvc0): its output joins m.serial's stream, its input is m.hvc."""
        self._checked(lib.vmm_add_virtio_console)

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
        self._checked(lib.vmm_add_share, os.fsencode(host_dir), tag.encode(), 1 if readonly else 0)
        if self._record is not None:
            self._record.configured(share=(host_dir, tag, readonly))

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
        # libvmm reads 0 as "left out"; an explicit 0 is an address below guest RAM: say so
        for what, v in (("load_addr", load_addr), ("entry", entry)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64):
                raise _invalid(f"{what} must be an address from 0 to 2**64-1 (got {v!r})")
        if load_addr == 0:
            raise _invalid(f"load address 0x0 lies outside guest RAM (which starts at {RAM_BASE:#x})")
        if entry == 0:
            raise _invalid(f"entry 0x0 lies outside guest RAM (which starts at {RAM_BASE:#x})")
        opts.load_addr = load_addr or 0
        opts.entry = entry or 0
        self._checked(lib.vmm_load_kernel, os.fsencode(path), opts)
        if self._record is not None:
            self._record.configured(kernel=path, kernel_format=format, load_addr=load_addr, entry=entry)

    def load_initrd(self, path: str | os.PathLike) -> None:
        self._checked(lib.vmm_load_initrd, os.fsencode(path))
        if self._record is not None:
            self._record.configured(initrd=path)

    def set_cmdline(self, cmdline: str) -> None:
        self._checked(lib.vmm_set_cmdline, cmdline.encode())
        if self._record is not None:
            self._record.configured(cmdline=cmdline)

    # -- inspection ------------------------------------------------------
    def boot_info(self) -> BootInfo:
        bi = ffi.new("struct vmm_boot_info *")
        bi.size = ffi.sizeof("struct vmm_boot_info")
        self._checked(lib.vmm_boot_info, bi)
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
        self._checked(lib.vmm_get_dtb, ffi.NULL, 0, n)
        buf = ffi.new("char[]", n[0])
        self._checked(lib.vmm_get_dtb, buf, n[0], n)
        return ffi.buffer(buf, n[0])[:]

    def stats(self) -> dict[str, int]:
        st = ffi.new("struct vmm_stats *")
        st.size = ffi.sizeof("struct vmm_stats")
        self._checked(lib.vmm_get_stats, st)
        return {f: getattr(st, f) for f, _ in ffi.typeof("struct vmm_stats").fields if f != "size"}

    def net_stats(self, nic: int = 0) -> net_.NetStats:
        """Counters of network card `nic` (frames and bytes each way, drops, MAC, link)."""
        return net_.net_stats(self, nic)

    def set_link(self, up: bool, nic: int = 0) -> None:
        """Link status of network card `nic` as the guest sees it (down: frames dropped both ways)."""
        self._checked(lib.vmm_net_set_link, nic, 1 if up else 0)

    def read_memory(self, gpa: int, length: int) -> bytes:
        buf = ffi.new("char[]", length)
        self._checked(lib.vmm_mem_read, gpa, buf, length)
        return ffi.buffer(buf, length)[:]

    def write_memory(self, gpa: int, data: bytes) -> None:
        self._checked(lib.vmm_mem_write, gpa, data, len(data))

    def mmio_read(self, gpa: int, size: int = 4) -> int:
        """Read a device register as a vCPU would (device-level tests)."""
        val = ffi.new("uint64_t *")
        self._checked(lib.vmm_mmio_read, gpa, size, val)
        return int(val[0])

    def mmio_write(self, gpa: int, value: int, size: int = 4) -> None:
        self._checked(lib.vmm_mmio_write, gpa, size, value)

    # -- interrupts, system registers, clock (device-level tests) ----------
    def irq_set(self, intid: int, level: bool | int, cpu: int = 0) -> None:
        """Drive GIC input `intid` (SGI/PPI of `cpu` below 32, SPI otherwise) high or low."""
        self._checked(lib.vmm_irq_set, cpu, intid, 1 if level else 0)

    def msi(self, event: int, device: int = 0, doorbell: int = 0x0809_0040) -> None:
        """Send an MSI as device `device` would: EventID `event` written to `doorbell` (the ITS's GITS_TRANSLATER)."""
        self._checked(lib.vmm_irq_msi, doorbell, event, device)

    def irq_line(self, cpu: int = 0) -> bool:
        """Whether the GIC asserts vCPU `cpu`'s IRQ line."""
        return bool(self._checked(lib.vmm_irq_line, cpu))

    def sysreg_read(self, reg: str | int, cpu: int = 0) -> int:
        """MRS of a trapped system register (``"ICC_IAR1_EL1"``, ``"CNTV_CTL_EL0"``...) as vCPU `cpu`."""
        val = ffi.new("uint64_t *")
        self._checked(lib.vmm_sysreg_read, cpu, sysregs.encode(reg), val)
        return int(val[0])

    def sysreg_write(self, reg: str | int, value: int, cpu: int = 0) -> None:
        """MSR of a trapped system register as vCPU `cpu`."""
        self._checked(lib.vmm_sysreg_write, cpu, sysregs.encode(reg), value)

    @property
    def clock_ns(self) -> int:
        """The guest clock in ns (virtual in deterministic mode)."""
        return int(self._call(lib.vmm_clock_ns))

    def run_events(self, path_or_text: str | os.PathLike, timeout: float = 30.0):
        """Run an input script (see vmmpy.events: wait, type, key, click, capture, ...) in this thread.

        Starts the machine if it never ran; returns when the script is done (the VM goes on). Raises
        EventsSyntaxError before anything happens for a bad script, EventsFailed if a wait times out or
        the guest ends first. Each wait on the guest gives up after `timeout` seconds.
        """
        __tracebackhide__ = True
        return events.run_events(self, path_or_text, timeout)

    def clock_advance(self, ns: int) -> None:
        """Deterministic mode, VM not running: move virtual time forward, firing due timers."""
        self._checked(lib.vmm_clock_advance, ns)

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
        self._checked(lib.vmm_stop_at, int(at_ns))

    def resume(self) -> None:
        """Let a run parked at a screen pause go on (nothing if it is not parked)."""
        if self._parked:
            self._parked = False
            self._checked(lib.vmm_screen_resume)

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

    def _final_result(self) -> RunResult | None:
        """The run's result once libvmm said the run is over (end of serial output, a frame wait that
        cannot be met): the run thread stores it just after, so wait for that (bounded) rather than
        race it, and a message can name how the run ended."""
        if self._thread is not None:
            self._done.wait(2.0)
        return self._result

    # -- the guard: close() waits for every call into libvmm in flight and refuses new ones ----------
    def _enter(self):
        """Count a call into libvmm in flight and return the VM; StateError once close() has begun."""
        with self._guard:
            if self._closing or self._vm == ffi.NULL:
                raise errors.StateError("the machine is closed", lib.VMM_ESTATE, "VMM_ESTATE")
            self._users += 1
            return self._vm

    def _leave(self) -> None:
        with self._guard:
            self._users -= 1
            if not self._users:
                self._guard.notify_all()

    def _call(self, fn, *args):
        """fn(vm, *args) with the VM held open (see close())."""
        vm = self._enter()
        try:
            return fn(vm, *args)
        finally:
            self._leave()

    def _checked(self, fn, *args, allow: tuple[int, ...] = ()) -> int:
        """fn(vm, *args) with the VM held open; a negative code (not in `allow`) raises its VmmError."""
        vm = self._enter()
        try:
            rc = fn(vm, *args)
            return rc if rc in allow else _check(rc, vm)
        finally:
            self._leave()

    @staticmethod
    def _seconds(timeout: float | None) -> float | None:
        """A run or wait timeout: None (or inf, or beyond 2**64 ns) is none; NaN and negatives are refused."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
            raise _invalid(f"timeout must be a number of seconds >= 0 or None (got {timeout!r})")
        return None if timeout * 1e9 >= U64 else float(timeout)

    def _run_blocking(self, timeout: float | None) -> RunResult:
        res = ffi.new("struct vmm_run_result *")
        res.size = ffi.sizeof("struct vmm_run_result")
        ns = 0 if timeout is None else max(1, int(timeout * 1e9))

        def run(vm) -> str:
            _check(lib.vmm_run(vm, ns, res), vm)
            if res.reason in (RunReason.GUEST_ERROR, RunReason.HOST_ERROR):
                return ffi.string(lib.vmm_last_error(vm)).decode(errors="replace")
            return ""

        msg = self._call(run)
        return RunResult(RunReason(res.reason), res.exit_status, res.pc, msg)

    def _thread_main(self, timeout: float | None) -> None:
        try:
            self._result = self._run_blocking(timeout)
        except BaseException as e:  # re-raised by wait()
            self._run_error = e
        finally:
            self._parked = False
            self._done.set()

    def start(self, timeout: float | None = None) -> None:
        """Run the VM in a background thread; wait() collects the result.

        `timeout` (seconds) ends the run with RunReason.TIMEOUT; left out, it is ``Machine(timeout=)``.
        """
        if self.running:
            raise errors.Busy("the machine is already running", lib.VMM_EBUSY, "VMM_EBUSY")
        timeout = self.timeout if timeout is None else self._seconds(timeout)
        self._call(lib.vmm_run_pending)  # serial readers now wait for output rather than see EOF
        self._result = None
        self._run_error = None
        self._done.clear()
        self._thread = threading.Thread(target=self._thread_main, args=(timeout,), name=f"vmm-{self.name}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the background run to end. On timeout, stop it and return TIMEOUT."""
        __tracebackhide__ = True
        if self._thread is None:
            raise errors.StateError("the machine was not started", lib.VMM_ESTATE, "VMM_ESTATE")
        timeout = self._seconds(timeout)
        with contextlib.suppress(errors.StateError):  # closed: the run has ended
            self.resume()
        if not self._done.wait(timeout):
            with contextlib.suppress(errors.StateError):
                self._call(lib.vmm_request_stop)
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
        self._parked = False  # a stop ends the pause too
        try:
            self._call(lib.vmm_request_stop)
        except errors.StateError:  # closed (or closing): close() stops the run
            return self._result
        if self._thread is not None:
            return self.wait()
        return None

    def close(self) -> None:
        """Stop the VM if it runs and free it. Safe to call twice, and from any thread.

        Calls from other threads are fenced off: from here on they raise StateError ("the machine is
        closed"), and the VM is freed only once the calls already inside libvmm have returned (the run is
        stopped first; blocking waits return within half a second). Not from a log handler of this machine.
        """
        with self._close_lock:
            if (rec := self._record) is not None and self._vm != ffi.NULL and not self._closing:
                with contextlib.suppress(Exception):  # artifacts never keep a machine from closing
                    rec.on_close(self)
            with self._guard:
                if self._vm == ffi.NULL:
                    return
                self._closing = True
                vm = self._vm
            lib.vmm_request_stop(vm)  # also wakes serial and screen waiters once the run ends
            if self._thread is not None:
                self._done.wait()
                self._thread.join()
            with self._guard:
                while self._users:
                    self._guard.wait()
                self._vm = ffi.NULL
            lib.vmm_destroy(vm)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()
