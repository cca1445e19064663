"""Command line: python -m vmmpy run kernel.elf [options]."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from vmmpy import errors
from vmmpy.machine import Machine, RunReason, parse_size

# exit codes (documented in README.md): a clean power-off gives the guest's status
EXIT_USAGE = 2
EXIT_RESET = 120
EXIT_GUEST_ERROR = 121
EXIT_HOST_ERROR = 122
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

ESCAPE = b"\x1d"  # Ctrl-] ends an interactive session


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"vmmpy: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except errors.VmmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vmmpy", description="Run aarch64 guests.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    r = sub.add_parser("run", help="boot a kernel and stream its serial console")
    r.error = p.error  # type: ignore[method-assign]
    r.add_argument("kernel", help="ELF, arm64 Image (raw or gzip) or, with --format raw, a flat binary")
    r.add_argument("--ram", type=_size, default="256M", help="guest RAM, e.g. 256M or 1G (default 256M)")
    r.add_argument("--cpus", type=int, default=1, help="number of vCPUs (default 1)")
    r.add_argument("--cmdline", help="kernel command line")
    r.add_argument("--initrd", help="initial ramdisk file")
    r.add_argument("--timeout", type=_seconds, help="stop the guest after this many seconds")
    r.add_argument("--backend", default="auto", help="soft, kvm or auto (default)")
    r.add_argument("--cpu-model", help="soft backend CPU: cortex-a72 (default), cortex-a57, cortex-a53, max")
    r.add_argument("--format", choices=["auto", "elf", "image", "raw"], default="auto", help="kernel format")
    r.add_argument("--load-addr", type=_int, help="raw format: guest physical load address")
    r.add_argument("--entry", type=_int, help="raw format: entry point")
    r.add_argument(
        "--deterministic",
        action="store_true",
        help="virtual time from instructions retired: the same inputs give the same output, run after run",
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    return p


class _StdinForwarder:
    """Forwards the terminal to the guest's serial port; Ctrl-] stops the guest."""

    def __init__(self, machine: Machine):
        self.m = machine
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
                self.m.serial.write(data)

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


def cmd_run(args: argparse.Namespace) -> int:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="vmmpy: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.format != "raw" and (args.load_addr is not None or args.entry is not None):
        raise errors.InvalidArgument("--load-addr and --entry need --format raw")
    m = Machine(
        args.kernel,
        ram=args.ram,
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
    )
    out = sys.stdout.buffer
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        m.stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with m, _StdinForwarder(m) as fwd:
            m.start(timeout=args.timeout)
            while True:  # stream until the run ends and the buffer is drained
                chunk = m.serial.read()
                if chunk:
                    out.write(chunk.encode(errors="replace") if isinstance(chunk, str) else chunk)
                    out.flush()
                if not m.running:
                    rest = m.serial.read()
                    if rest:
                        out.write(rest.encode(errors="replace"))
                        out.flush()
                    break
                m.serial._pull(0.2)  # waits for output or the end of the run
            res = m.wait()
            interrupted = interrupted or fwd.interrupted
    finally:
        signal.signal(signal.SIGINT, old)
    if res.reason in (RunReason.GUEST_ERROR, RunReason.HOST_ERROR):
        sys.stderr.write(f"vmmpy: {res.reason.name.lower().replace('_', ' ')}: {res.message}\n")
    elif res.reason == RunReason.TIMEOUT:
        sys.stderr.write(f"vmmpy: timed out after {args.timeout:g} s\n")
    elif res.reason == RunReason.RESET:
        sys.stderr.write("vmmpy: the guest requested a reset\n")
    if interrupted and res.reason == RunReason.STOPPED:
        return EXIT_INTERRUPTED
    return _exit_code(res.reason, res.exit_status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
    except errors.VmmError as e:
        sys.stderr.write(f"vmmpy: error: {e}\n")
        return EXIT_USAGE if isinstance(e, (errors.InvalidArgument, errors.KernelNotFound)) else 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
