"""Command line: python -m vmmpy run kernel.elf [options]."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import math
import os
import re
import signal
import sys
import threading

from vmmpy import _files, errors
from vmmpy._outcomes import EOF
from vmmpy._version import __version__
from vmmpy.events import CliEvents
from vmmpy.events import cli_prepare as events_cli_prepare
from vmmpy.machine import MAX_CPUS, Machine, RunReason, cpu_models, parse_ram

# exit codes (documented in docs/exit-codes.md): a clean power-off gives the guest's status
EXIT_USAGE = 2
EXIT_RESET = 120
EXIT_GUEST_ERROR = 121
EXIT_HOST_ERROR = 122
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

ESCAPE = b"\x1d"  # Ctrl-] ends an interactive session

# The GPU is off unless asked for (--gpu, --gpu-size) or needed (--capture) while it matures;
# set this to True to turn it on by default (--no-gpu still turns it off).
GPU_DEFAULT = False
MAX_GPU_SIDE = 16384
MAX_CAPTURES = 64  # frames libvmm can hold (vmm_screen_hold)
MAX_TIMEOUT = 1e6  # seconds (--timeout), as the input scripts' waits


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"vmmpy: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _short(text: str, n: int = 40) -> str:
    """`text` quoted, cut to about `n` characters (error lines echo what the user typed, not megabytes)."""
    return repr(text if len(text) <= n else text[:n] + "…")


def _ram(text: str) -> int:
    """--ram: bytes; a bare number is MiB (--ram 512 is 512 MiB, as QEMU's -m 512); 0 is refused."""
    try:
        return parse_ram(text)
    except errors.VmmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_short(text)}") from None


def _address(text: str) -> int:
    """--load-addr, --entry: 0 .. 2**64-1, decimal or 0x hex."""
    v = _int(text)
    if not 0 <= v <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"{_short(text)} is not an address (0 to 0xffffffffffffffff)")
    return v


def _cpus(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"at least 1 vCPU, not {_short(text)}")
    if v > MAX_CPUS:
        raise argparse.ArgumentTypeError(f"{_short(text)} vCPUs requested, at most {MAX_CPUS} are supported")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {_short(text)}") from None
    if math.isnan(v):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {_short(text)}")
    if v <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    if v > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"the timeout must be at most {MAX_TIMEOUT:g} s (leave it out for none)")
    return v


def _disk(text: str) -> tuple[str, str]:
    """--disk FILE[:ro]: a trailing ":ro" (or ":rw") is the mode, the rest the image path."""
    path, sep, mode = text.rpartition(":")
    if not sep or mode not in ("ro", "rw"):
        path, mode = text, "rw"
    if not path:
        raise argparse.ArgumentTypeError(f"expected FILE or FILE:ro, not {text!r}")
    return path, mode


def _share(text: str) -> tuple[str, str | None, bool]:
    """--share DIR[:ro][:tag=NAME]: trailing ":ro"/":rw" and ":tag=NAME" (either order), the rest is DIR."""
    path, tag, ro = text, None, False
    while True:
        head, sep, opt = path.rpartition(":")
        if not sep or not head:
            break
        if opt in ("ro", "rw"):
            ro = opt == "ro"
        elif opt.startswith("tag=") and tag is None:
            tag = opt[4:]
        else:
            break
        path = head
    if not path or tag == "":
        raise argparse.ArgumentTypeError(f"expected DIR[:ro][:tag=NAME], not {text!r}")
    return path, tag, ro


def _net(text: str) -> tuple[str, list[str]]:
    """--net user[,hostfwd=RULE...] | tap=NAME -> (back-end spec, hostfwd rules)."""
    head, *opts = text.split(",")
    if head == "user":
        rules = []
        for o in opts:
            if not o.startswith("hostfwd=") or len(o) == len("hostfwd="):
                raise argparse.ArgumentTypeError(
                    f"{text!r}: user takes hostfwd=PROTO:[HOST]:HPORT-[GUEST]:GPORT options"
                )
            rules.append(o[len("hostfwd=") :])
        return "user", rules
    if head.startswith("tap=") and len(head) > 4 and not opts:
        return head, []
    raise argparse.ArgumentTypeError(f"{text!r}: expected user[,hostfwd=tcp:127.0.0.1:8080-:80...] or tap=NAME")


def net_kwargs(args: argparse.Namespace) -> dict:
    """Machine(net=..., hostfwd=..., net_capture=...) from --net and --net-dump."""
    nets = getattr(args, "net", None) or []
    out: dict = {}
    if nets:
        out["net"] = [spec for spec, _ in nets]
        rules = [r for _, rs in nets for r in rs]
        if rules:
            out["hostfwd"] = rules
    dump = getattr(args, "net_dump", None)
    if dump:
        if not nets:
            raise errors.InvalidArgument("--net-dump needs --net")
        out["net_capture"] = [dump] + [None] * (len(nets) - 1) if len(nets) > 1 else dump
    return out


def _shares(specs: list[tuple[str, str | None, bool]]) -> list[tuple[str, str, bool]] | None:
    """Untagged shares are "share", then "share1", "share2", ... (mount -t 9p -o trans=virtio TAG DIR)."""
    out, n = [], 0
    for path, tag, ro in specs:
        if tag is None:
            tag, n = ("share" if n == 0 else f"share{n}"), n + 1
        out.append((path, tag, ro))
    return out or None


def _gpu_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = None
    if not sep or size is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x800, not {text!r}")
    if not all(1 <= v <= MAX_GPU_SIDE for v in size):
        raise argparse.ArgumentTypeError(f"width and height must be 1..{MAX_GPU_SIDE}, not {text!r}")
    return size


def _capture_frames(text: str) -> list[int]:
    """'5' -> [5]; '1,10,30' -> [1, 10, 30] (sorted, without repeats)."""
    frames = []
    for part in text.split(","):
        try:
            n = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a frame number: {part.strip()!r} (expected N or N,M,... with frames counted from 1)"
            ) from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"frames are counted from 1, not {n}")
        frames.append(n)
    return sorted(set(frames))


def capture_paths(frames: list[int], path: str, multiple: bool) -> dict[int, str]:
    """One frame: PATH itself; several: PATH-NNN.png for each (PATH is then a prefix)."""
    if not multiple:
        return {frames[0]: path}
    return {n: f"{path}-{n:03d}.png" for n in frames}


def _resolve_gpu(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    """Check --gpu/--gpu-size/--capture together; sets args.gpu (bool) and args.captures ({frame: path})."""
    args.captures = {}
    if args.capture is not None:
        spec, path = args.capture
        try:
            frames = _capture_frames(spec)
        except argparse.ArgumentTypeError as e:
            p.error(f"argument --capture: {e}")
        out_dir = os.path.dirname(path) or "."
        if len(frames) > MAX_CAPTURES:
            p.error(f"argument --capture: at most {MAX_CAPTURES} frames")
        if not os.path.isdir(out_dir):
            p.error(f"argument --capture: directory {out_dir!r} does not exist")
        args.captures = capture_paths(frames, path, "," in spec)
        for out in args.captures.values():
            try:
                _files.check_output(out)
            except OSError as e:
                p.error(f"argument --capture: {out}: {e.strerror}")
    explicit = args.gpu
    if explicit is None:
        args.gpu = bool(args.captures) or args.gpu_size is not None or GPU_DEFAULT
    elif not explicit and args.captures:
        p.error("--capture needs the GPU: drop --no-gpu")
    elif not explicit and args.gpu_size is not None:
        p.error("--gpu-size needs the GPU: drop --no-gpu")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vmmpy", description="Run aarch64 guests.")
    p.add_argument("--version", action="version", version=f"vmmpy {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    r = sub.add_parser("run", help="boot a kernel and stream its serial console")
    r.error = p.error  # type: ignore[method-assign]
    r.add_argument("kernel", help="ELF, arm64 Image (raw or gzip) or, with --format raw, a flat binary")
    r.add_argument(
        "--ram", type=_ram, default="256M", help="guest RAM, e.g. 256M or 1G; a bare number is MiB (default 256M)"
    )
    r.add_argument("--cpus", type=_cpus, default=1, help=f"number of vCPUs, at most {MAX_CPUS} (default 1)")
    r.add_argument("--cmdline", help="kernel command line")
    r.add_argument("--initrd", help="initial ramdisk file")
    r.add_argument("--timeout", type=_seconds, help="stop the guest after this many seconds")
    r.add_argument(
        "--backend", help="soft, kvm, hvf or auto (default: $VMMPY_BACKEND, else auto: KVM or HVF where it works)"
    )
    models = cpu_models()
    r.add_argument(
        "--cpu-model", choices=models, help=f"soft backend CPU: {models[0]} (default), {', '.join(models[1:])}"
    )
    r.add_argument("--format", choices=["auto", "elf", "image", "raw"], default="auto", help="kernel format")
    r.add_argument("--load-addr", type=_address, help="raw format: guest physical load address")
    r.add_argument("--entry", type=_address, help="raw format: entry point")
    r.add_argument(
        "--deterministic",
        action="store_true",
        help="virtual time from instructions retired: the same inputs give the same output, run after run",
    )
    r.add_argument(
        "--transport",
        choices=["mmio", "pci"],
        default="mmio",
        help="where virtio devices sit: mmio (default: a virtio-mmio slot each) or pci (PCIe, generic ECAM)",
    )
    r.add_argument(
        "--its",
        action="store_true",
        help="a GICv3 ITS at 0x08080000 with LPIs (an MSI controller; implied by --transport pci)",
    )
    r.add_argument(
        "--vcpu-threads",
        choices=["auto", "one", "per-vcpu"],
        default=None,
        help="host threads for vCPUs: auto (default, $VMMPY_VCPU_THREADS: soft runs a real-time SMP VM with a "
        "thread per vCPU when the patched Unicorn is built), one (all on one thread) or per-vcpu",
    )
    r.add_argument(
        "--gdb",
        metavar="[HOST:]PORT|unix:PATH",
        help="serve the GDB remote protocol there (HOST defaults to 127.0.0.1; docs/gdb.md)",
    )
    r.add_argument(
        "--gdb-wait", action="store_true", help="with --gdb: the guest waits for gdb before its first instruction"
    )
    r.add_argument(
        "--gpu",
        action="store_true",
        default=None,
        help="give the guest a virtio-gpu screen (default: on with --capture or --gpu-size, otherwise off)",
    )
    r.add_argument("--no-gpu", dest="gpu", action="store_false", help="no GPU")
    r.add_argument("--gpu-size", type=_gpu_size, metavar="WxH", help="screen size (default 1280x800); implies --gpu")
    r.add_argument(
        "--capture",
        nargs=2,
        metavar=("N[,M...]", "PATH"),
        help="save frame N as the PNG PATH, or frames N,M,... as PATH-NNN.png, then stop the guest (implies --gpu)",
    )
    r.add_argument(
        "--headless",
        action="store_true",
        help="no window (default: a window shows the GPU screen and takes keyboard and mouse when there is a "
        "display and a GPU)",
    )
    r.add_argument(
        "--disk",
        type=_disk,
        action="append",
        default=[],
        metavar="FILE[:ro]",
        help="a virtio-blk disk over the raw image FILE (size a multiple of 512), read-only with :ro; repeatable",
    )
    r.add_argument("--rng", action="store_true", help="give the guest a virtio-rng entropy source (/dev/hwrng)")
    r.add_argument(
        "--virtio-console",
        action="store_true",
        help="give the guest a virtio console (hvc0; Linux: console=hvc0); typing goes to it, not to serial",
    )
    r.add_argument(
        "--share",
        type=_share,
        action="append",
        default=[],
        metavar="DIR[:ro][:tag=NAME]",
        help="share the host directory DIR over virtio-9p (9P2000.L), read-only with :ro, mount tag NAME (default "
        '"share", then "share1", ...); in the guest: mount -t 9p -o trans=virtio NAME /mnt; repeatable',
    )
    r.add_argument(
        "--net",
        type=_net,
        action="append",
        default=[],
        metavar="user[,hostfwd=...]|tap=NAME",
        help="a virtio-net card: user networking (NAT; guest 10.0.2.15, host 10.0.2.2; hostfwd=tcp:127.0.0.1:"
        "8080-:80 forwards a host port) or the host tap interface NAME; repeatable",
    )
    r.add_argument("--net-dump", metavar="FILE", help="write the (first) network card's frames to the pcap FILE")
    r.add_argument("--input", action="store_true", help="give the guest a virtio-input keyboard and tablet")
    r.add_argument(
        "--events",
        metavar="FILE",
        help="run the input script FILE beside the guest (wait, type, key, click, capture, quit; see docs/cli.md); "
        "implies --input, and --gpu when it waits for frames",
    )
    r.add_argument(
        "--result-json",
        metavar="FILE",
        help="write how the run ended to FILE as JSON (reason, status, pc, message, stats, exit_code, error): "
        "guest exit statuses 1, 2 and 120-130 look like vmmpy's own exit codes, this tells them apart",
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    _snapshot_options(r)
    g = sub.add_parser("sign-python", help="macOS: sign this Python (or --binary) for Hypervisor.framework (hvf)")
    g.add_argument("--binary", metavar="FILE", help="sign FILE (e.g. build/vmmrun) instead of this interpreter")
    g.add_argument("--copy", metavar="DEST", help="sign a copy at DEST and leave the original unchanged")
    s = sub.add_parser("restore", help="continue a VM from a snapshot (run --snapshot-out) and stream its console")
    s.error = p.error  # type: ignore[method-assign]
    s.add_argument("snapshot", help="a snapshot file written by run --snapshot-out (or Machine.snapshot)")
    s.add_argument("--timeout", type=_seconds, help="stop the guest after this many seconds")
    s.add_argument("--backend", help="refuse the snapshot unless it was made on this backend")
    s.add_argument(
        "--disk", action="append", default=[], metavar="FILE", help="use FILE for the next recorded disk; repeatable"
    )
    s.add_argument(
        "--share", action="append", default=[], metavar="DIR", help="share DIR as the next recorded share; repeatable"
    )
    s.add_argument("--headless", action="store_true", help="no window (default: a window when the VM has a GPU)")
    s.add_argument("--result-json", metavar="FILE", help="write how the run ended to FILE as JSON (as for run)")
    s.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    _snapshot_options(s)
    return p


def _snapshot_options(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--snapshot-at",
        metavar="PATTERN",
        help="when the serial output matches the regular expression PATTERN, save a snapshot (--snapshot-out) and "
        "stop the guest",
    )
    r.add_argument("--snapshot-out", metavar="FILE", help="where --snapshot-at writes the snapshot")


class _StdinForwarder:
    """Forwards the terminal to the guest's serial port (its virtio console if it has one); Ctrl-] stops it."""

    def __init__(self, machine: Machine, to_hvc: bool = False):
        self.m = machine
        self._port = machine.hvc if to_hvc else machine.serial
        self.interrupted = False
        self._saved = None
        self._fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else -1

    def __enter__(self):
        if self._fd < 0:
            return self
        import termios
        import tty

        self._saved = termios.tcgetattr(self._fd)
        tty.setraw(self._fd)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        # from before the guest starts (input queues) until __exit__: not `while running`, which is
        # still false when this thread starts
        import select

        while not self._done.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self._fd, 1024)
            except OSError:
                return
            if not data:
                return
            if ESCAPE in data:
                self.interrupted = True
                self.m.stop()
                return
            with contextlib.suppress(errors.VmmError):
                self._port.write(data)

    def __exit__(self, *exc):
        if self._saved is not None:
            import termios

            self._done.set()
            self._thread.join(timeout=1)
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


def _exit_code(reason: RunReason, status: int) -> int:
    if reason == RunReason.POWEROFF:
        return status & 0xFF
    return {
        RunReason.RESET: EXIT_RESET,
        RunReason.TIMEOUT: EXIT_TIMEOUT,
        RunReason.STOPPED: EXIT_INTERRUPTED,
        RunReason.GUEST_ERROR: EXIT_GUEST_ERROR,
        RunReason.HOST_ERROR: EXIT_HOST_ERROR,
    }[reason]


def _gpu_kwargs(args: argparse.Namespace) -> dict:
    """Machine(...) arguments for the GPU; a clear error while this build has no screen API."""
    if not args.gpu:
        return {}
    if "gpu" not in inspect.signature(Machine).parameters:
        raise errors.NotSupported(
            "the GPU (--gpu, --gpu-size, --capture) needs vmmpy's screen API, which this build does not have yet"
        )
    kwargs: dict = {"gpu": True}
    if args.gpu_size is not None:
        kwargs["gpu_size"] = args.gpu_size
    return kwargs


class _FrameWaiter:
    """Waits, on its own thread, for the screen to reach a frame while the main thread streams serial."""

    FOREVER = 1e7  # seconds: the VM's end (its --timeout, a power-off, Ctrl-C) ends the wait first

    def __init__(self, machine: Machine, frame: int):
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._args = (machine, frame)
        threading.Thread(target=self._main, name="vmmpy-frames", daemon=True).start()

    def _main(self) -> None:
        machine, frame = self._args
        try:
            machine.screen.wait_frame(frame, self.FOREVER)  # whether it got there: see _save_captures
        except BaseException as e:  # e.g. the VM ended first
            self.error = e
        finally:
            self.done.set()


def _save_captures(m: Machine, captures: dict[int, str]) -> list[str]:
    """Save each held frame; returns the problems (frames that did not happen)."""
    problems = []
    for n, path in sorted(captures.items()):
        try:
            image = m.screen.save(path, frame=n, format="PNG")
        except errors.VmmError as e:
            problems.append(f"frame {n} ({e})")
            continue
        except OSError as e:
            problems.append(f"frame {n} (cannot save {path}: {e.strerror or e})")
            continue
        sys.stderr.write(f"vmmpy: frame {n} ({image.width}x{image.height}) -> {path}\n")
    return problems


def _stream(m: Machine, out, until: threading.Event | None) -> None:
    """Copy serial output to `out` until the run ends (or `until` is set), then drain it."""
    while True:
        ended = not m.running or (until is not None and until.is_set())  # before the read: nothing is lost
        chunk = m.serial.read()
        if chunk:
            out.write(chunk.encode(errors="replace"))
            out.flush()
        if ended:
            return
        m.serial._pull(0.2)  # waits for output or the end of the run


def _want_window(args: argparse.Namespace) -> bool:
    """The window (vmmpy/window.py): on with a GPU and a display unless --headless; it implies input devices."""
    if args.headless:
        return False
    from vmmpy.window import unavailable

    why = unavailable(args.gpu)
    if why is None:
        args.input = True
        return True
    if why.startswith("-"):
        logging.getLogger("vmmpy").info("no window: %s", why[1:])
    else:
        sys.stderr.write(f"vmmpy: no window: {why}; running headless\n")
    return False


def _open_window(m: Machine, title: str):
    from vmmpy.window import Window

    try:
        return Window(m, title=f"vmmpy: {title}")
    except RuntimeError as e:  # e.g. the display refused the connection
        sys.stderr.write(f"vmmpy: no window: {e}; running headless\n")
        return None


def _stream_beside_window(m: Machine, out, window, until: threading.Event | None) -> bool:
    """Serial to `out` on a thread while the window runs on this one; True if the user closed the window."""
    t = threading.Thread(target=_stream, args=(m, out, until), name="vmmpy-serial", daemon=True)
    t.start()
    closed = window.run(until)
    if closed and m.running:
        m.stop()
    t.join()
    return closed


def _snapshot_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--snapshot-at and --snapshot-out come together; the pattern compiles; the file can be written."""
    at, out = getattr(args, "snapshot_at", None), getattr(args, "snapshot_out", None)
    if (at is None) != (out is None):
        parser.error("--snapshot-at and --snapshot-out go together")
    if at is None:
        return
    try:
        re.compile(at)
    except re.error as e:
        parser.error(f"argument --snapshot-at: not a regular expression: {e}")
    if not os.path.isdir(os.path.dirname(out) or "."):
        parser.error(f"argument --snapshot-out: directory {os.path.dirname(out)!r} does not exist")


class _Snapshotter:
    """--snapshot-at: a thread waits for the pattern on the serial output, then saves and stops the guest."""

    def __init__(self, m: Machine, args: argparse.Namespace):
        self.m, self.pattern, self.path = m, getattr(args, "snapshot_at", None), getattr(args, "snapshot_out", None)
        self.done = False
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.pattern is not None:
            self._thread = threading.Thread(target=self._main, name="vmmpy-snapshot", daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            if self.m.serial.expect([self.pattern, EOF], timeout=1e9).index != 0:
                return  # the guest ended first
            self.m.snapshot(self.path)
            self.done = True
            sys.stderr.write(f"vmmpy: snapshot saved to {self.path}\n")
        except errors.VmmError as e:
            self.error = str(e)

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()


def cmd_run(args: argparse.Namespace, report: dict | None = None) -> int:
    """Run the guest; fills `report` (--result-json) with the run's result and stats."""
    report = {} if report is None else report
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="vmmpy: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.format != "raw" and (args.load_addr is not None or args.entry is not None):
        raise errors.InvalidArgument("--load-addr and --entry need --format raw")
    args.input = getattr(args, "input", False)
    window = _want_window(args)
    if args.gdb_wait and args.gdb is None:
        raise errors.InvalidArgument("--gdb-wait needs --gdb")
    m = Machine(
        args.kernel,
        ram=f"{args.ram}B",
        cpus=args.cpus,
        backend=args.backend,
        cpu_model=args.cpu_model,
        cmdline=args.cmdline,
        initrd=args.initrd,
        kernel_format=args.format,
        load_addr=args.load_addr,
        entry=args.entry,
        log_level=level,
        deterministic=args.deterministic,
        transport=args.transport,
        its=args.its,
        vcpu_threads=args.vcpu_threads,
        **_gpu_kwargs(args),
        disk=args.disk,
        rng=args.rng,
        virtio_console=args.virtio_console,
        share=_shares(args.share),
        input=args.input,
        **net_kwargs(args),
        gdb=args.gdb,
        gdb_wait=args.gdb_wait,
    )
    if args.gdb is not None:
        wait = " (the guest waits for it)" if args.gdb_wait else ""
        print(f"vmmpy: gdb server on {m.gdb_address}{wait}", file=sys.stderr, flush=True)
    return _drive(m, args, report, window, os.path.basename(args.kernel))


def cmd_restore(args: argparse.Namespace, report: dict | None = None) -> int:
    """Continue a snapshot (the restore command): the same console, window and result handling as run."""
    report = {} if report is None else report
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="vmmpy: %(levelname)s: %(message)s", stream=sys.stderr)
    m = Machine.restore(
        args.snapshot, disk=args.disk or None, share=args.share or None, backend=args.backend, log_level=level
    )
    # what run's options would have said: from the restored machine
    try:
        m.screen.info()
        args.gpu = True
    except errors.NotSupported:
        args.gpu = False
    args.captures, args.virtio_console = {}, False
    args.input = False
    window = _want_window(args)
    return _drive(m, args, report, window, os.path.basename(args.snapshot))


def _drive(m: Machine, args: argparse.Namespace, report: dict, window: bool, title: str) -> int:
    """Run a created or restored machine with the console, window, captures, events and snapshot options."""
    events = CliEvents(args, m)  # --events
    snap = _Snapshotter(m, args)  # --snapshot-at
    out = sys.stdout.buffer
    interrupted = False
    captures: dict[int, str] = args.captures
    problems: list[str] = []
    waiter: _FrameWaiter | None = None
    closed = False  # the user closed the window

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        m.stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with m, _StdinForwarder(m, to_hvc=args.virtio_console) as fwd:
            for n in captures:
                m.screen.hold(n)
            events.prepare()
            m.start(timeout=args.timeout)
            events.start()
            snap.start()
            waiter = _FrameWaiter(m, max(captures)) if captures else None
            win = _open_window(m, title) if window else None
            if win is not None:
                closed = _stream_beside_window(m, out, win, waiter.done if waiter else None)
            else:
                _stream(m, out, waiter.done if waiter else None)
            if m.running:  # the last frame to capture has happened
                m.stop()
                _stream(m, out, None)
            res = m.wait()
            snap.finish()
            report.update(
                reason=res.reason.name, status=res.exit_status, pc=res.pc, message=res.message, stats=m.stats()
            )
            events.finish()
            interrupted = interrupted or fwd.interrupted
            if captures:
                problems = _save_captures(m, captures)
    finally:
        signal.signal(signal.SIGINT, old)
    if interrupted and res.reason == RunReason.STOPPED:
        return EXIT_INTERRUPTED
    if snap.error is not None:
        report["error"] = f"--snapshot-at: {snap.error}"
        sys.stderr.write(f"vmmpy: error: {report['error']}\n")
        return 1
    if snap.pattern is not None and not snap.done:
        sys.stderr.write(f"vmmpy: --snapshot-at: {snap.pattern!r} never appeared; no snapshot written\n")
    if events.error:  # like --capture: the run's own code if it ended by itself with one (124 on --timeout)
        report["error"] = str(events.error)
        sys.stderr.write(f"vmmpy: error: {events.error}\n")
        code = _exit_code(res.reason, res.exit_status)
        return code if code != 0 and res.reason != RunReason.STOPPED else 1
    if problems:  # one line: how the run ended and which frames are missing
        why = _ending(res, args.timeout)
        if waiter is not None and waiter.error is not None and not isinstance(waiter.error, errors.VmmError):
            why += f" (waiting for frames: {type(waiter.error).__name__}: {waiter.error})"
        report["error"] = f"{why}; not captured: {'; '.join(problems)}"
        sys.stderr.write(f"vmmpy: error: {report['error']}\n")
        code = _exit_code(res.reason, res.exit_status)
        return code if code != 0 and res.reason != RunReason.STOPPED else 1
    if res.reason in (RunReason.GUEST_ERROR, RunReason.HOST_ERROR, RunReason.TIMEOUT, RunReason.RESET):
        sys.stderr.write(f"vmmpy: {_ending(res, args.timeout)}\n")
    if (captures or closed or events.quit or snap.done) and res.reason == RunReason.STOPPED:
        return 0  # stopped by us after the last capture, or the window was closed
    return _exit_code(res.reason, res.exit_status)


def _ending(res, timeout: float | None) -> str:
    if res.reason in (RunReason.GUEST_ERROR, RunReason.HOST_ERROR):
        return f"{res.reason.name.lower().replace('_', ' ')}: {res.message}"
    if res.reason == RunReason.TIMEOUT:
        return f"timed out after {timeout:g} s"
    if res.reason == RunReason.RESET:
        return "the guest requested a reset"
    if res.reason == RunReason.POWEROFF:
        return f"the guest powered off (status {res.exit_status})"
    return "the guest was stopped"


def _result_json_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    path = getattr(args, "result_json", None)
    if path is None:
        return
    if not os.path.isdir(os.path.dirname(path) or "."):
        parser.error(f"argument --result-json: directory {os.path.dirname(path)!r} does not exist")
    try:
        _files.check_output(path)
    except OSError as e:
        parser.error(f"argument --result-json: {path}: {e.strerror}")


def _write_result_json(path: str, report: dict, code: int) -> None:
    """--result-json: the run's result (reason/status/pc/message/stats; reason ERROR when vmmpy failed before or
    without a run), vmmpy's exit code and its error line (null when it printed none)."""
    import json

    doc = {
        "reason": report.get("reason", "ERROR"),
        "status": report.get("status"),
        "pc": report.get("pc"),
        "message": report.get("message", ""),
        "stats": report.get("stats", {}),
        "exit_code": code,
        "error": report.get("error"),
    }
    try:
        with _files.open_output(path) as f:
            f.write((json.dumps(doc, indent=2) + "\n").encode())
    except OSError as e:
        sys.stderr.write(f"vmmpy: error: --result-json: cannot write {path}: {e.strerror or e}\n")


def cmd_sign(args) -> int:
    from vmmpy.sign import SignError, sign

    try:
        path = sign(args.binary, args.copy)
    except SignError as e:
        sys.stderr.write(f"vmmpy: {e}\n")
        return EXIT_USAGE
    print(f"signed {path} with com.apple.security.hypervisor")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    report: dict = {}
    code: int | None = EXIT_USAGE
    json_path = None  # set once --result-json FILE is known to be writable
    try:
        if args.command == "run":
            _result_json_check(args, parser)
            json_path = args.result_json
            if (code := events_cli_prepare(args)) is not None:
                report["error"] = "a mistake in the --events script"
                return code
            _resolve_gpu(args, parser)
            _snapshot_check(args, parser)
            code = cmd_run(args, report)
            return code
        if args.command == "sign-python":
            return cmd_sign(args)
        if args.command == "restore":
            _result_json_check(args, parser)
            _snapshot_check(args, parser)
            json_path = args.result_json
            code = cmd_restore(args, report)
            return code
    except errors.VmmError as e:
        sys.stderr.write(f"vmmpy: error: {e}\n")
        report["error"] = str(e)
        code = EXIT_USAGE if isinstance(e, (errors.InvalidArgument, errors.KernelNotFound)) else 1
        return code
    except KeyboardInterrupt:
        report.setdefault("error", "interrupted")
        code = EXIT_INTERRUPTED
        return code
    except SystemExit as e:  # parser.error() after parsing (--capture, --gpu...): its one line is printed
        report["error"] = "bad command line"
        code = e.code if isinstance(e.code, int) else EXIT_USAGE
        raise
    finally:
        if json_path is not None:
            _write_result_json(json_path, report, code)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
