"""The guest's consoles: the PL011 serial port (``Machine.serial``) and the virtio console (``Machine.hvc``)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from vmmpy import artifacts, errors
from vmmpy._ffi import ffi, lib
from vmmpy._outcomes import EOF, TIMEOUT, _Sentinel
from vmmpy.errors import _check

if TYPE_CHECKING:
    from vmmpy.machine import Machine

DEFAULT_SERIAL_BUFFER = 16 << 20  # Serial's window of output (Machine(serial_buffer=))
MIN_SERIAL_BUFFER = 64 << 10

Pattern = Union[str, bytes, "re.Pattern"]


def _compile(pattern: Pattern) -> re.Pattern:
    """A bytes regex from a str, bytes or compiled pattern (str: UTF-8; the flags are kept)."""
    if isinstance(pattern, str):
        return re.compile(pattern.encode())
    if isinstance(pattern, bytes):
        return re.compile(pattern)
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, str):
            return re.compile(pattern.pattern.encode(), pattern.flags & ~re.UNICODE)
        return pattern
    raise TypeError(f"a pattern is a str, bytes or re.Pattern, not {type(pattern).__name__}")


@dataclass(frozen=True)
class ExpectResult:
    """What ``Serial.expect([p0, p1, ...])`` returns: which entry of the list matched.

    ``index`` and ``pattern`` name the entry (``vmmpy.TIMEOUT`` / ``vmmpy.EOF`` when listed and it came to
    that); ``match`` is its re.Match on the output's bytes (None for TIMEOUT and EOF); ``before`` the output
    between the previous match and this one (bytes). ``text`` is the matched text decoded.
    """

    index: int
    pattern: object
    match: re.Match | None
    before: bytes = b""

    @property
    def text(self) -> str:
        return self.match.group(0).decode(errors="replace") if self.match else ""

    def __iter__(self):  # idx, m = serial.expect([...]) unpacks as (index, match)
        return iter((self.index, self.match))


class Serial:
    """The guest's PL011 console: its latest output (a bounded window), and input to it.

    Output is kept in a window of the latest ``buffer_size`` bytes (``Machine(serial_buffer=)``, 16 MiB by
    default); older bytes are let go and counted in ``dropped``. Positions (``read()``, ``expect()``, the
    input scripts' ``wait serial``) are offsets in the whole stream: what they still need is in the window
    unless they fell more than ``buffer_size`` behind, and then they go on from the window's start.
    """

    def __init__(self, machine: Machine, buffer_size: int = DEFAULT_SERIAL_BUFFER):
        self._m = machine
        self.buffer_size = buffer_size
        # the window's bytes, plus up to half a window of slack: trimming then copies amortized O(1) a byte,
        # and a bytearray is never cut in place (a Match from expect() keeps pointing at what it matched)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._read_pos = 0  # for read(): a stream offset
        self._expect_pos = 0  # for expect(): a stream offset
        self._lost_reported = 0  # read(): the stream offset up to which lost output was logged
        # one pull from libvmm takes at most a quarter window: a reader that reads after each pull
        # (vmmpy's CLI) never falls out of the window
        self._chunk = min(65536, buffer_size // 4)
        self._lock = threading.Lock()
        self._pull_lock = threading.Lock()  # one reader of libvmm at a time: chunks stay in order

    @property
    def dropped(self) -> int:
        """Bytes of output no longer kept (before the window's start)."""
        with self._lock:
            return self._start()

    def _end(self) -> int:  # lock held
        return self._base + len(self._buf)

    def _start(self) -> int:  # lock held: the stream offset where the window starts
        return max(self._base, self._end() - self.buffer_size)

    def _append(self, data: bytes) -> None:  # lock held
        self._buf += data
        if len(self._buf) > self.buffer_size + self.buffer_size // 2:
            cut = len(self._buf) - self.buffer_size
            self._buf = self._buf[cut:]  # a new object: older Matches keep theirs
            self._base += cut

    def _pull(self, timeout: float) -> bool:
        """Move output from libvmm into our buffer; False at end of stream (or once the machine is closed)."""
        return self._pull_some(timeout) >= 0

    def _drain(self) -> None:
        """Pull everything libvmm holds now (a quarter window at a time), without waiting."""
        while self._pull_some(0) >= self.buffer_size // 4:
            pass

    def _pull_some(self, timeout: float) -> int:
        """_pull(): the bytes pulled (at most a quarter window), -1 at end of stream or once closed."""
        with self._pull_lock:
            try:
                vm = self._m._enter()
            except errors.StateError:
                return -1
            try:
                return self._pull_locked(vm, timeout)
            finally:
                self._m._leave()

    def _pull_locked(self, vm, timeout: float) -> int:
        size = self._chunk
        chunk = ffi.new("char[]", size)
        # bounded slices: Machine.close() waits for calls inside libvmm to return
        ns = max(0, int(min(timeout, 0.5) * 1e9))
        n = lib.vmm_console_read(vm, chunk, size, ns)
        if n == lib.VMM_EEOF:
            return -1
        _check(n, vm)
        self._got(ffi.buffer(chunk, n)[:])
        # drain whatever else is already there without waiting, up to a quarter window
        total = n
        while n == size and total < self.buffer_size // 4:
            n = lib.vmm_console_read(vm, chunk, size, 0)
            if n <= 0:
                break
            total += n
            self._got(ffi.buffer(chunk, n)[:])
        return total

    def _got(self, data: bytes) -> None:  # pull lock held: chunks arrive in order
        with self._lock:
            self._append(data)
        if (rec := self._m._record) is not None:  # a test records its machines: serial.log gets everything
            rec.serial_data(data)

    def _window(self) -> bytes:  # lock held
        return bytes(self._buf[self._start() - self._base :])

    @property
    def data(self) -> bytes:
        """The retained output (the latest ``buffer_size`` bytes at most), as bytes."""
        self._drain()
        with self._lock:
            return self._window()

    @property
    def text(self) -> str:
        """The retained output (the latest ``buffer_size`` bytes at most), decoded (invalid UTF-8 replaced)."""
        return self.data.decode(errors="replace")

    def read(self) -> str:
        """Output printed since the previous read() (from the window's start if it fell behind it)."""
        self._pull(0)
        with self._lock:
            start = self._start()
            lost = start - max(self._read_pos, self._lost_reported)
            if lost > 0:
                self._lost_reported = start
                self._m._log.warning(
                    "serial: %d bytes of output were dropped before read() got them (serial_buffer=%d)",
                    lost,
                    self.buffer_size,
                )
            out = bytes(self._buf[max(self._read_pos, start) - self._base :])
            self._read_pos = self._end()
        return out.decode(errors="replace")

    def _find(self, data: bytes, start: int) -> int:
        """The stream offset of `data` at or after the stream offset `start` in the window, or -1."""
        with self._lock:
            i = self._buf.find(data, max(start, self._start()) - self._base)
            return -1 if i < 0 else self._base + i

    @artifacts.recorded("serial.write")
    def write(self, data: bytes | str, at_ns: int | None = None) -> None:
        """Queue input for the guest's serial port.

        In deterministic mode `at_ns` delivers it at that virtual time (see ``Machine.clock_ns``),
        which keeps runs with input bit-identical; without it the input arrives at the next quantum.
        """
        if isinstance(data, str):
            data = data.encode()
        if at_ns is None:
            self._m._checked(lib.vmm_console_write, data, len(data))
        else:
            self._m._checked(lib.vmm_console_write_at, at_ns, data, len(data))

    @artifacts.recorded("serial.type")
    def type(self, text: str, at_ns: int | None = None) -> None:
        """Type text into the serial port (newlines become carriage returns, as a terminal sends)."""
        self.write(text.replace("\n", "\r"), at_ns)

    def expect(
        self,
        pattern: Pattern | Sequence[Pattern | _Sentinel],
        timeout: float = 10.0,
        *,
        fail_on: Pattern | Sequence[Pattern] = (),
    ):
        """Wait until the output (after the previous match) matches `pattern`.

        Starts the machine if it is not running yet. Patterns are regular expressions, str or bytes (or
        compiled); they are matched against the output's bytes (a str pattern is encoded as UTF-8).

        - One pattern: returns its ``re.Match``. Raises SerialTimeout or, if the guest stops first,
          SerialEOF; both carry the output's tail.
        - A list ``[p0, p1, ...]``: returns an ExpectResult ``(index, pattern, match)`` for the pattern
          that matches earliest in the output (the lowest index on a tie), as pexpect does. List
          ``vmmpy.TIMEOUT`` and/or ``vmmpy.EOF`` to get those back as outcomes (``match`` None) instead
          of the exceptions.
        - ``fail_on``: a pattern or a list (e.g. ``["Kernel panic", "Oops", "Call trace"]``); if one
          matches before (or where) what is expected does, SerialFailure (an AssertionError) is raised at
          once, with the transcript.

        The output is matched as it arrives, so a pattern ending in a repetition (``\\w+``, ``.*``) may
        match a partly arrived word, as with pexpect: end patterns on a delimiter (a space, ``\\r\\n``).
        The Match's positions are offsets in the retained window (``m.string``), not in the whole stream.
        """
        __tracebackhide__ = True  # a failing expect points at the test's line
        single = not isinstance(pattern, (list, tuple))
        wanted = [pattern] if single else list(pattern)
        if not wanted:
            raise ValueError("expect() needs at least one pattern")
        on_timeout = on_eof = None
        rxs: list[tuple[int, re.Pattern]] = []
        for i, p in enumerate(wanted):
            if single and isinstance(p, _Sentinel):
                raise TypeError(f"{p!r} is an outcome for pattern lists: expect([..., {p!r}])")
            if p is TIMEOUT:
                on_timeout = i if on_timeout is None else on_timeout
            elif p is EOF:
                on_eof = i if on_eof is None else on_eof
            else:
                rxs.append((i, _compile(p)))
        if not rxs and on_eof is None:
            raise ValueError("expect() needs a pattern (or vmmpy.EOF) to wait for, not only vmmpy.TIMEOUT")
        fails = [_compile(p) for p in ([fail_on] if isinstance(fail_on, (str, bytes, re.Pattern)) else fail_on)]
        if not self._m.running and self._m.result is None:
            self._m.start()
        self._m.resume()  # a run parked at a screen pause prints nothing
        what = " or ".join(repr(rx.pattern) for _, rx in rxs) or "the end of the output"
        deadline = time.monotonic() + timeout
        while True:
            if (got := self._search(rxs, fails, wanted, single)) is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                if on_timeout is not None:
                    return self._outcome(on_timeout, TIMEOUT, consume=False)
                raise errors.SerialTimeout(
                    f"no match for {what} within {timeout:g} s; output ends with:\n{self._tail()}"
                )
            if not self._pull(min(left, 0.5)):
                if (got := self._search(rxs, fails, wanted, single)) is not None:
                    return got
                if on_eof is not None:
                    return self._outcome(on_eof, EOF, consume=True)
                res = self._m._final_result()
                why = f"the VM ended ({res.reason.name})" if res else "the VM is not running"
                raise errors.SerialEOF(f"{why} before {what} appeared; output ends with:\n{self._tail()}")

    def _search(self, rxs, fails, wanted, single):
        """The earliest match of `rxs` in the window from the expect position (moving the position past it),
        or None; SerialFailure if a `fails` pattern matches at or before it."""
        __tracebackhide__ = True
        with self._lock:
            pos = max(self._expect_pos, self._start()) - self._base
            best: tuple[int, re.Match] | None = None
            for i, rx in rxs:
                m = rx.search(self._buf, pos)
                if m and (best is None or m.start() < best[1].start()):
                    best = (i, m)
            for rx in fails:
                # a failure counts if it lies before the wanted match's end: a panic message that
                # contains the expected text still fails
                m = rx.search(self._buf, pos, len(self._buf) if best is None else best[1].end())
                if m:
                    self._expect_pos = self._base + m.end()
                    transcript = bytes(self._buf[self._start() - self._base : m.end() + 2000])
                    tail = transcript[-4000:].decode(errors="replace")
                    raise errors.SerialFailure(
                        f"{rx.pattern!r} appeared in the serial output (fail_on); output up to it:\n{tail}",
                        pattern=rx.pattern,
                        match=m,
                        transcript=transcript.decode(errors="replace"),
                    )
            if best is None:
                return None
            i, m = best
            before = bytes(self._buf[pos : m.start()])
            self._expect_pos = self._base + m.end()
        return m if single else ExpectResult(i, wanted[i], m, before)

    def _outcome(self, index: int, sentinel: _Sentinel, consume: bool) -> ExpectResult:
        """TIMEOUT / EOF listed in expect(): `before` is the output not matched (consumed at EOF)."""
        with self._lock:
            pos = max(self._expect_pos, self._start()) - self._base
            before = bytes(self._buf[pos:])
            if consume:
                self._expect_pos = self._end()
        return ExpectResult(index, sentinel, None, before)

    def _tail_bytes(self, n: int) -> bytes:
        with self._lock:
            return bytes(self._buf[-n:])

    def _tail(self, n: int = 2000) -> str:
        return self._tail_bytes(n).decode(errors="replace")

    def _offset(self) -> int:
        """The stream offset of the end of the output pulled so far."""
        with self._lock:
            return self._end()


class VirtioConsole:
    """Input to the guest's virtio console (``Machine(virtio_console=True)``, Linux's hvc0).

    Its output joins the one console stream: read it with ``m.serial`` (``expect``, ``read``, ``text``).
    Input has its own queue (port VMM_CONSOLE_VIRTIO), apart from the serial port's.
    """

    def __init__(self, machine: Machine):
        self._m = machine

    @artifacts.recorded("hvc.write")
    def write(self, data: bytes | str, at_ns: int | None = None) -> None:
        """Queue input for the virtio console; `at_ns` as for ``Serial.write`` (deterministic mode).

        Raises NotSupported without ``virtio_console=True``.
        """
        if isinstance(data, str):
            data = data.encode()
        self._m._checked(lib.vmm_console_write_port, lib.VMM_CONSOLE_VIRTIO, at_ns or 0, data, len(data))

    @artifacts.recorded("hvc.type")
    def type(self, text: str, at_ns: int | None = None) -> None:
        """Type text (newlines become carriage returns, as a terminal sends)."""
        self.write(text.replace("\n", "\r"), at_ns)
