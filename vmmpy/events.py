"""Input scripts: ``python -m vmmpy run guest.elf --events events.txt`` or ``m.run_events(path_or_text)``.

One command a line; ``#`` starts a comment (outside quotes), blank lines are ignored::

    wait 1 frames              # until frame 1 exists (absolute frame number); also: wait frame 1
    type Hello, World!\\n       # US layout; escapes \\n \\t \\r \\b \\e \\\\ \\" \\0
    type "  spaced  "          # a text that starts with " is quoted (keeps its spaces)
    key ctrl+alt+delete        # a key combination: pressed in order, released in reverse
    wait 200ms                 # or: wait 2 s, wait 1.5s
    click 100 200 right        # move there, press and release (left, right or middle; default left)
    move 10 10
    drag 10 10 200 150
    scroll -3                  # wheel clicks, > 0 up
    wait serial "PASS"         # until the serial output (since the script started) contains the text;
                               # a trailing duration sets the timeout (default 30 s): wait serial "x" 5s
    capture 3 shot.png         # wait for frame 3 and save it as a PNG (it is held from the start)
    capture now.png            # save the screen as it is now (the latest frame; in real time, after a
                               # wait serial that proves the guest drew it, this is the robust form)
    quit                       # stop the guest and end the run

The whole script is parsed before anything runs; a mistake is an :class:`EventsSyntaxError` naming the
file and line. Positions are screen pixels of the tablet (``m.tablet.screen_size``).

Deterministic machines: input commands are scheduled in virtual time, never at a host-dependent moment.
A script keeps a cursor, starting at the virtual clock where the script starts (0 before the VM runs):
input is due at the cursor, ``wait N ms`` / ``wait N s`` move it on by that much virtual time (no host
time passes), and ``wait N frames`` / ``capture N ...`` park the VM at the end of the round that flushed
frame N (``m.screen.wait_frame(n, pause=True)``) and move the cursor to that exact time; a frame that
already exists while the VM is parked leaves it parked and the cursor where it is. ``quit`` ends the run
exactly when the virtual clock reaches the cursor (``m.stop_at``, whether the guest is busy or idle). The
same script then gives the same guest output, run after run, whatever the host does (a window open beside
it only watches). What is not reproducible: ``wait serial`` (the text is seen at a host-dependent point,
so the cursor moves to wherever the clock is then, and everything after it in the script inherits that;
use frames for exact syncs), input typed into the window or sent from another thread while the VM runs
freely, and ``--timeout`` (host seconds).

Values are bounded so that a script that parses also runs: frame numbers up to 2**31-1, durations up to
10**6 s, scroll steps in int32, pixel positions up to 10**6 (the tablet clamps them to the screen).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmmpy import _files, errors
from vmmpy.input import BUTTONS, Keyboard

if TYPE_CHECKING:
    from vmmpy.machine import Machine

COMMANDS = ("wait", "type", "key", "move", "click", "drag", "scroll", "capture", "quit")
DEFAULT_TIMEOUT = 30.0  # seconds for each wait on the guest (frames, serial, captures)
MAX_FRAME = 2**31 - 1
MAX_SECONDS = 1e6  # durations: wait N s, wait serial timeouts
MAX_POSITION = 1_000_000  # pixels
INT32 = (-(2**31), 2**31 - 1)
MAX_SCRIPT = 16 << 20  # bytes: a script file larger than this is refused (a device or FIFO always is)
MAX_ECHO = 40  # characters of the user's text quoted in an error message (then "…")
MAX_MESSAGE = 300  # characters of an error message, at most
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "e": "\x1b", "\\": "\\", '"': '"', "0": "\0"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s)$")
_INT = re.compile(r"[+-]?[0-9]+")
_NUM = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_FRAME = re.compile(r"[0-9]+")


def _int(digits: str) -> int:
    """int() of ASCII digits, any length (Python refuses int() of more than 4300 digits)."""
    d = digits.lstrip("+-").lstrip("0") or "0"
    v = int(d) if len(d) <= 20 else 10**20
    return -v if digits.startswith("-") else v


def _q(text: str, n: int = MAX_ECHO) -> str:
    """`text` quoted for a message, cut to `n` characters with "…"."""
    return repr(text if len(text) <= n else text[:n] + "…")


def _clip(msg: str, n: int = MAX_MESSAGE) -> str:
    return msg if len(msg) <= n else msg[:n] + "…"


class EventsSyntaxError(errors.InvalidArgument):
    """A script that cannot be parsed: ``str(e)`` is ``FILE:LINE: what is wrong``."""


class EventsFailed(errors.VmmError):
    """A script that stopped half-way: a wait timed out or the guest ended first."""


@dataclass(frozen=True)
class Command:
    line: int
    name: str  # wait_frame, wait_time, wait_serial, type, key, move, click, drag, scroll, capture, capture_now, quit
    args: tuple = ()
    text: str = ""  # the line as written, for messages

    @property
    def is_frame_sync(self) -> bool:
        return self.name in ("wait_frame", "capture")

    @property
    def is_input(self) -> bool:
        return self.name in ("type", "key", "move", "click", "drag", "scroll")


@dataclass
class Script:
    commands: list[Command]
    name: str = "<events>"
    timeout: float = DEFAULT_TIMEOUT
    captured: list[str] = field(default_factory=list)  # paths written

    @property
    def needs_gpu(self) -> bool:
        return any(c.is_frame_sync or c.name == "capture_now" for c in self.commands)

    @property
    def captures(self) -> dict[int, str]:
        return {c.args[0]: c.args[1] for c in self.commands if c.name == "capture"}


# ---- parsing ----------------------------------------------------------------------------------------


def _unescape(s: str, err) -> str:
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            if i + 1 >= len(s):
                raise err("a lone '\\' at the end (write '\\\\' for a backslash)")
            esc = s[i + 1]
            if esc not in _ESCAPES:
                raise err(f"unknown escape '\\{esc}' (known: \\n \\t \\r \\b \\e \\\\ \\\" \\0)")
            out.append(_ESCAPES[esc])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _strip_comment(line: str) -> str:
    """Cut a '#' comment that is outside double quotes (and not escaped)."""
    quoted, i = False, 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
        i += 1
    return line


def _quoted(rest: str, err) -> tuple[str, str]:
    """A leading "double-quoted string" (with escapes) -> (text, what follows)."""
    if not rest.startswith('"'):
        raise err(f'expected a "quoted text", not {_q(rest)}')
    i = 1
    while i < len(rest):
        if rest[i] == "\\":
            i += 2
            continue
        if rest[i] == '"':
            return _unescape(rest[1:i], err), rest[i + 1 :].strip()
        i += 1
    raise err("the quoted text has no closing '\"'")


def _duration(text: str) -> float | None:
    m = _DURATION.match(text.strip())
    if not m:
        return None
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v


def _parse_wait(rest: str, err) -> tuple[str, tuple]:
    words = rest.split()
    usage = "expected 'wait N frames', 'wait frame N', 'wait Nms', 'wait N s' or 'wait serial \"text\"'"
    if words and words[0] == "serial":
        text, after = _quoted(rest[len("serial") :].strip(), err)
        if not text:
            raise err("wait serial: the text is empty")
        timeout = None
        if after:
            timeout = _duration(after)
            if timeout is None or timeout <= 0:
                raise err(f"wait serial: expected a timeout like 5s or 500ms after the text, not {_q(after)}")
            if timeout > MAX_SECONDS:
                raise err(f"wait serial: the timeout is longer than {MAX_SECONDS:g} s")
        return "wait_serial", (text, timeout)
    n = None
    if len(words) == 2 and words[0] == "frame":
        n = words[1]
    elif len(words) == 2 and words[1] in ("frame", "frames"):
        n = words[0]
    if n is not None:
        if not _FRAME.fullmatch(n):
            raise err(f"not a frame number: {_q(n)}")
        return "wait_frame", (_frame(n, err),)
    d = _duration(rest)
    if d is not None:
        if d > MAX_SECONDS:
            raise err(f"the wait is longer than {MAX_SECONDS:g} s")
        return "wait_time", (d,)
    raise err(f"{usage}, not {_q('wait ' + rest)}" if rest else usage)


def _frame(n: str, err) -> int:
    v = _int(n)
    if v < 1:
        raise err("frames are counted from 1")
    if v > MAX_FRAME:
        raise err(f"frame {_q(n)} is beyond the last one ({MAX_FRAME})")
    return v


def _numbers(words: list[str], count: int, usage: str, err) -> tuple[float, ...]:
    if len(words) < count:
        raise err(f"expected '{usage}'")
    out = []
    for w in words[:count]:
        if not _NUM.fullmatch(w):
            raise err(f"not a pixel position: {_q(w)} (expected '{usage}')")
        v = float(w)
        if v > MAX_POSITION:
            raise err(f"pixel position {_q(w)} is too large (at most {MAX_POSITION})")
        out.append(int(v) if v.is_integer() else v)
    return tuple(out)


def _parse_line(cmd: str, rest: str, err) -> tuple[str, tuple]:
    words = rest.split()
    if cmd == "wait":
        return _parse_wait(rest, err)
    if cmd == "type":
        if not rest:
            raise err("type: nothing to type")
        if rest.startswith('"'):  # a quoted text: keeps leading and trailing spaces
            text, after = _quoted(rest, err)
            if after:
                raise err(f"type: unexpected {_q(after)} after the quoted text")
        else:
            text = _unescape(rest, err)
        try:
            Keyboard.check_text(text)
        except errors.InvalidArgument as e:
            raise err(f"type: {e}") from None
        return "type", (text,)
    if cmd == "key":
        if len(words) != 1:
            raise err("expected 'key COMBO', e.g. 'key enter' or 'key ctrl+alt+delete'")
        try:
            Keyboard.combo_keys(words[0])
        except errors.InvalidArgument as e:
            raise err(f"key: {e}") from None
        return "key", (words[0],)
    if cmd == "move":
        if len(words) != 2:
            raise err("expected 'move X Y'")
        return "move", _numbers(words, 2, "move X Y", err)
    if cmd == "click":
        if len(words) not in (2, 3):
            raise err("expected 'click X Y [left|right|middle]'")
        xy = _numbers(words, 2, "click X Y [left|right|middle]", err)
        button = words[2] if len(words) == 3 else "left"
        if button not in BUTTONS:
            raise err(f"unknown button {_q(button)} (left, right or middle)")
        return "click", (*xy, button)
    if cmd == "drag":
        if len(words) != 4:
            raise err("expected 'drag X0 Y0 X1 Y1'")
        return "drag", _numbers(words, 4, "drag X0 Y0 X1 Y1", err)
    if cmd == "scroll":
        if len(words) != 1 or not _INT.fullmatch(words[0]) or _int(words[0]) == 0:
            raise err("expected 'scroll N' with N a non-zero whole number (> 0 scrolls up)")
        if not INT32[0] <= _int(words[0]) <= INT32[1]:
            raise err(f"scroll: {words[0][:20]} steps is out of range ({INT32[0]} .. {INT32[1]})")
        return "scroll", (_int(words[0]),)
    if cmd == "capture":
        parts = rest.split(None, 1)
        if len(parts) == 2 and _FRAME.fullmatch(parts[0]):
            n, path = _frame(parts[0], err), parts[1].strip()
        elif len(parts) >= 1 and not _FRAME.fullmatch(parts[0]):
            n, path = 0, rest.strip()  # the screen as it is now
        else:
            raise err("expected 'capture N PATH' or 'capture PATH'")
        if os.path.isdir(path) or path.endswith(os.sep):
            raise err(f"capture: {_q(path)} is a directory (expected a file name, e.g. {path.rstrip(os.sep)}/shot.png)")
        if not os.path.isdir(os.path.dirname(path) or "."):
            raise err(f"capture: directory {_q(os.path.dirname(path))} does not exist")
        try:
            _files.check_output(path)
        except OSError as e:
            raise err(f"capture: {_q(path)}: {e.strerror}") from None
        return ("capture", (n, path)) if n else ("capture_now", (path,))
    if cmd == "quit":
        if rest:
            raise err("quit takes no arguments")
        return "quit", ()
    raise err(f"unknown command {_q(cmd)} (expected {', '.join(COMMANDS)})")


def parse(text: str, name: str = "<events>", timeout: float = DEFAULT_TIMEOUT) -> Script:
    """Parse a whole script; EventsSyntaxError("NAME:LINE: ...") at the first mistake."""
    commands = []
    for lineno, raw in enumerate(text.splitlines(), 1):

        def err(msg: str, _lineno: int = lineno) -> EventsSyntaxError:
            return EventsSyntaxError(f"{name}:{_lineno}: {_clip(msg)}")

        line = _strip_comment(raw).strip()
        if not line:
            continue
        cmd, *rest = line.split(None, 1)  # any whitespace after the command's name
        kind, args = _parse_line(cmd, rest[0].strip() if rest else "", err)
        commands.append(Command(lineno, kind, args, _clip(line, 80)))
    holds = [c for c in commands if c.name == "capture"]
    if len({c.args[0] for c in holds}) > 64:
        raise EventsSyntaxError(f"{name}: at most 64 frames can be captured")
    return Script(commands, name, timeout)


def load(path_or_text: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> Script:
    """A script from a file (a path, or a str naming an existing file) or from the text itself."""
    is_path = isinstance(path_or_text, os.PathLike) or (
        "\n" not in path_or_text and os.path.isfile(path_or_text)  # type: ignore[operator]
    )
    if not is_path:
        return parse(str(path_or_text), "<events>", timeout)
    return load_file(os.fspath(path_or_text), timeout)


def load_file(path: str, timeout: float = DEFAULT_TIMEOUT) -> Script:
    """A script from the file `path` (a missing file is an error, never taken for a script's text).

    Only a regular file of at most MAX_SCRIPT bytes: a FIFO or a device is refused without blocking.
    """
    try:
        text = _files.read_regular(path, MAX_SCRIPT).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EventsSyntaxError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, path, timeout)


# ---- running ----------------------------------------------------------------------------------------


class Runner:
    """Runs a Script against a Machine: ``prepare()`` before the VM starts, then ``run()`` (any thread)."""

    def __init__(self, script: Script, m: Machine, log=None):
        self.s = script
        self.m = m
        self.det = m.deterministic
        self.log = log or (lambda msg: sys.stderr.write(f"vmmpy: {msg}\n"))
        self.error: str | None = None
        self.quit = False
        self.done = threading.Event()
        self._i = 0  # next command
        self._cursor = 0  # deterministic: virtual time of the next input
        self._armed = False  # deterministic: the pause of command _i is armed
        self._serial_from = 0
        self._prepared = False
        self._cancel = threading.Event()  # cancel(): input commands are skipped from then on
        self._current: Command | None = None  # the command being run (for error lines)

    def _fail(self, c: Command, msg: str) -> None:
        raise EventsFailed(f"{self.s.name}:{c.line}: {c.text}: {msg}")

    def _where(self) -> str:
        c = self._current
        return f"{self.s.name}:{c.line}: {c.text}" if c else self.s.name

    @staticmethod
    def _describe(e: BaseException) -> str:
        if isinstance(e, errors.VmmError):
            return str(e)
        if isinstance(e, OSError) and e.strerror:
            return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
        return f"{type(e).__name__}: {e}"

    def prepare(self) -> None:
        """Hold the captured frames and, deterministic, schedule what comes before the first sync.

        EventsFailed (one line, naming the command) if that fails, e.g. too much input scheduled.
        """
        m = self.m
        try:
            for n in self.s.captures:
                m.screen.hold(n)
            self._serial_from = m.serial._offset()
            if self.det:
                self._cursor = m.clock_ns
                self._segment()
        except EventsFailed:
            raise
        except Exception as e:
            raise EventsFailed(f"{self._where()}: {self._describe(e)}") from None
        self._prepared = True

    def cancel(self) -> None:
        """Skip the script's input from now on (a text being typed stops within 256 characters).

        Waits and captures still run: once the VM has ended they fail or finish at once."""
        self._cancel.set()

    def _standing_still(self) -> bool:
        """Deterministic: the VM is where a script left it (parked, or not started): its state is exact."""
        return self.m.paused or not self.m.running

    def _segment(self) -> None:
        """Deterministic, VM standing still: schedule input up to the next sync; arm a frame sync's pause."""
        while self._i < len(self.s.commands):
            c = self._current = self.s.commands[self._i]
            if c.is_input:
                if not self._cancel.is_set():
                    self._input(c, self._cursor)
            elif c.name == "wait_time":
                self._cursor += round(c.args[0] * 1e9)
            else:
                if c.is_frame_sync and self.m.screen.frames < c.args[0]:
                    self.m.screen.pause_at(c.args[0])
                    self._armed = True
                return
            self._i += 1

    def _input(self, c: Command, at: int | None) -> None:
        kb, tab = self.m.keyboard, self.m.tablet
        a = c.args
        if c.name == "type":
            for i in range(0, len(a[0]), 256):  # in pieces: cancel() stops a long text
                if self._cancel.is_set():
                    return
                kb.type(a[0][i : i + 256], at_ns=at)
        elif c.name == "key":
            kb.tap(a[0], at_ns=at)
        elif c.name == "move":
            tab.move(a[0], a[1], at_ns=at)
        elif c.name == "click":
            tab.click(a[0], a[1], a[2], at_ns=at)
        elif c.name == "drag":
            tab.drag(*a, at_ns=at)
        elif c.name == "scroll":
            tab.scroll(a[0], at_ns=at)

    def run(self) -> None:
        """Execute the rest of the script; returns when it is done, failed (self.error) or the VM ended.

        Never raises: whatever goes wrong is one line in self.error, and the VM is stopped.
        """
        try:
            if not self._prepared:
                self.prepare()
            while self._i < len(self.s.commands):
                c = self._current = self.s.commands[self._i]
                self._i += 1
                self._step(c)
                if self.quit:
                    break
                if self.det:
                    self._segment()
            if self.det and self.m.paused:
                self.m.resume()
        except EventsFailed as e:
            self.error = _clip(str(e))
        except Exception as e:  # a bug or a host problem: one line, never a traceback in a thread
            self.error = _clip(f"{self._where()}: {self._describe(e)}")
        finally:
            if self.error is not None:
                try:
                    if self.m.running:
                        self.m.stop()
                except Exception as e:  # noqa: BLE001 - the error line above is what matters
                    self.log(f"cannot stop the VM: {self._describe(e)}")
            self.done.set()

    def _ended(self) -> str:
        res = self.m.result
        if res is None:
            return "the VM is not running"
        why = f"{res.reason.name}: {res.message}" if res.message else res.reason.name
        return f"the guest ended ({why}) first"

    def _step(self, c: Command) -> None:
        m, a = self.m, c.args
        if c.is_input:  # real time (deterministic input was scheduled by _segment)
            if not self._cancel.is_set():
                self._input(c, None)
        elif c.name == "wait_time":  # real time only: deterministic waits move the cursor
            if m._done.wait(a[0]):
                self._fail(c, self._ended())
        elif c.is_frame_sync:
            self._wait_frame(c, a[0])
            if c.name == "capture":
                try:
                    image = m.screen.save(a[1], frame=a[0], format="PNG")
                except OSError as e:
                    self._fail(c, f"cannot save {a[1]}: {e.strerror or e}")
                self.s.captured.append(a[1])
                self.log(f"frame {a[0]} ({image.width}x{image.height}) -> {a[1]}")
        elif c.name == "capture_now":
            try:
                image = m.screen.save(a[0], format="PNG")
            except OSError as e:
                self._fail(c, f"cannot save {a[0]}: {e.strerror or e}")
            self.s.captured.append(a[0])
            self.log(f"the screen now ({image.width}x{image.height}) -> {a[0]}")
        elif c.name == "wait_serial":
            self._wait_serial(c, a[0], a[1] or self.s.timeout)
        elif c.name == "quit":
            self.quit = True
            if self.det and m.running:  # exactly at the cursor, busy guest or idle: the run loop stops there
                m.stop_at(self._cursor)
                m.resume()
                m._done.wait()
            elif m.running:
                m.stop()

    def _wait_frame(self, c: Command, n: int) -> None:
        m = self.m
        if self.det and not self._armed and self._standing_still() and m.screen.frames >= n:
            return  # there already, and the VM stands still: it stays parked, the cursor stays
        if not self.det or not self._armed:  # real time, or the frame was there while the VM ran freely
            try:
                m.screen.wait_frame(n, timeout=self.s.timeout, resume=False)
            except errors.ScreenTimeout:
                self._fail(c, f"frame {n} did not come within {self.s.timeout:g} s ({m.screen.frames} so far)")
            except errors.ScreenEOF:
                self._fail(c, f"{self._ended()}, after {m.screen.frames} frames")
            if self.det:
                self._cursor = max(self._cursor, m.clock_ns)
            return
        self._armed = False
        m.resume()  # parked at the previous sync (or not yet parked): go on to this one
        try:
            parked = m.screen.wait_paused(self.s.timeout)
        except errors.ScreenEOF:
            self._fail(c, f"{self._ended()}, after {m.screen.frames} frames")
        if not parked:
            m.screen.pause_at(0)
            self._fail(c, f"frame {n} did not come within {self.s.timeout:g} s ({m.screen.frames} so far)")
        self._cursor = max(self._cursor, m.clock_ns)

    def _wait_serial(self, c: Command, text: str, timeout: float) -> None:
        m, want = self.m, text.encode()
        if self.det:
            m.resume()
        deadline = time.monotonic() + timeout
        while True:
            m.serial._pull(0)
            found = m.serial._find(want, self._serial_from)
            if found >= 0:
                self._serial_from = found + len(want)
                if self.det:
                    self._cursor = max(self._cursor, m.clock_ns)
                return
            if not m.running:
                self._fail(c, f"{self._ended()}; the output ends with {m.serial._tail_bytes(200)!r}")
            if time.monotonic() >= deadline:
                self._fail(c, f"not seen within {timeout:g} s; the output ends with {m.serial._tail_bytes(200)!r}")
            m.serial._pull(min(0.05, max(0.0, deadline - time.monotonic())))


def run_events(m: Machine, path_or_text, timeout: float = DEFAULT_TIMEOUT) -> Script:
    """Run a script against `m` in this thread (starting it if it never ran); EventsFailed if it stops half-way.

    The script is parsed before anything happens. Returns the Script (``.captured``: the PNGs written).
    """
    script = load(path_or_text, timeout)
    runner = Runner(script, m, log=lambda msg: m._log.info("%s", msg))
    if not m.running and m.result is None:
        runner.prepare()
        m.start()
    runner.run()
    if runner.error:
        raise EventsFailed(runner.error)
    return script


# ---- the command line (vmmpy/cli.py) ------------------------------------------------------------------


def cli_prepare(args) -> int | None:
    """--events FILE: parse it now (exit code 2 and one line on a mistake) and turn on what it needs."""
    args.events_script = None
    path = getattr(args, "events", None)
    if path is None:
        return None
    try:
        script = load_file(path)
    except EventsSyntaxError as e:
        sys.stderr.write(f"vmmpy: {e}\n")
        return 2
    args.input = True
    if script.needs_gpu:
        if args.gpu is False:
            c = next(c for c in script.commands if c.is_frame_sync)
            sys.stderr.write(f"vmmpy: {script.name}:{c.line}: {c.text}: needs the GPU: drop --no-gpu\n")
            return 2
        args.gpu = True
    args.events_script = script
    return None


class CliEvents:
    """The --events runner beside cmd_run's serial loop: prepare() before m.start(), start() after it."""

    def __init__(self, args, m: Machine):
        self.script: Script | None = getattr(args, "events_script", None)
        self.runner = Runner(self.script, m) if self.script else None
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        if self.runner:
            self.runner.prepare()

    def start(self) -> None:
        if self.runner:
            self._thread = threading.Thread(target=self.runner.run, name="vmmpy-events", daemon=True)
            self._thread.start()

    def finish(self) -> None:
        """After the run: end the script thread and wait for it, before the machine is closed.

        The VM has ended: the script's input would go nowhere, so it is cancelled; its waits fail at once
        (the guest ended first) and captures of frames that exist are still saved. Then the thread is
        joined without a timeout, so no thread is inside libvmm when the machine is closed.
        """
        if self._thread is not None:
            self.runner.cancel()
            self._thread.join()

    @property
    def quit(self) -> bool:
        return bool(self.runner and self.runner.quit)

    @property
    def error(self) -> str | None:
        return self.runner.error if self.runner else None
