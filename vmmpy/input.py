"""Keyboard and tablet: the virtio-input devices of a Machine (``Machine(..., input=True)``).

Events are Linux evdev events; each key or pointer action is followed by a SYN_REPORT. They may be
sent before the machine starts (they wait in the library, up to 4096 events per device, oldest
complete reports dropped beyond that and counted in ``stats().dropped``) and while it runs, from any
thread.

>>> m = Machine("guest.elf", gpu=True, input=True)
>>> m.keyboard.type("ls -l\\n")
>>> m.keyboard.tap("ctrl+alt+delete")
>>> m.tablet.click(100, 200)            # screen pixels, scaled to the tablet's 0..32767 axes
>>> m.keyboard.leds                     # {"capslock"} once the guest has set it

Deterministic mode (``Machine(deterministic=True)``): every method takes ``at_ns=``, the virtual time
at which its events enter the device (all of one call at the same time, in order). Without it they are
due at ``m.input_time_ns``: the virtual clock where the VM was last seen standing still (not running,
or parked by ``m.screen.wait_frame(n, pause=True)``), which is exact and so reproducible. Sent while
the VM runs freely, that time is already past: the events enter at the next round, wherever the loop
is then, which is not reproducible (a warning says so, once). In real-time mode ``at_ns`` is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from vmmpy import artifacts, errors
from vmmpy._ffi import ffi, lib

if TYPE_CHECKING:
    from vmmpy.machine import Machine

EV_SYN, EV_KEY, EV_REL, EV_ABS = 0, 1, 2, 3
SYN_REPORT = 0
REL_HWHEEL, REL_WHEEL = 6, 8
ABS_X, ABS_Y = 0, 1
ABS_MAX = 32767
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE = 0x110, 0x111, 0x112
KEY_LEFTSHIFT = 42

# evdev key codes by name (linux/input-event-codes.h)
KEYS: dict[str, int] = {
    "esc": 1,
    "minus": 12,
    "equal": 13,
    "backspace": 14,
    "tab": 15,
    "leftbrace": 26,
    "rightbrace": 27,
    "enter": 28,
    "leftctrl": 29,
    "semicolon": 39,
    "apostrophe": 40,
    "grave": 41,
    "leftshift": 42,
    "backslash": 43,
    "comma": 51,
    "dot": 52,
    "slash": 53,
    "rightshift": 54,
    "leftalt": 56,
    "space": 57,
    "capslock": 58,
    "numlock": 69,
    "scrolllock": 70,
    "rightctrl": 97,
    "rightalt": 100,
    "home": 102,
    "up": 103,
    "pageup": 104,
    "left": 105,
    "right": 106,
    "end": 107,
    "down": 108,
    "pagedown": 109,
    "insert": 110,
    "delete": 111,
    "leftmeta": 125,
    "rightmeta": 126,
    "f11": 87,
    "f12": 88,
}
KEYS.update({f"f{i}": 58 + i for i in range(1, 11)})  # F1 59 .. F10 68
KEYS.update({str(d): 1 + d for d in range(1, 10)})  # "1" 2 .. "9" 10
KEYS["0"] = 11
for _row, _first in (("qwertyuiop", 16), ("asdfghjkl", 30), ("zxcvbnm", 44)):
    KEYS.update({c: _first + i for i, c in enumerate(_row)})
ALIASES = {
    "escape": "esc",
    "return": "enter",
    "ctrl": "leftctrl",
    "control": "leftctrl",
    "shift": "leftshift",
    "alt": "leftalt",
    "altgr": "rightalt",
    "meta": "leftmeta",
    "super": "leftmeta",
    "win": "leftmeta",
    "del": "delete",
    "pgup": "pageup",
    "pgdn": "pagedown",
    "ins": "insert",
}

# US layout: character -> (key name, shift)
_UNSHIFTED = {
    "\n": "enter",
    "\t": "tab",
    " ": "space",
    "\b": "backspace",
    "\x1b": "esc",
    "-": "minus",
    "=": "equal",
    "[": "leftbrace",
    "]": "rightbrace",
    ";": "semicolon",
    "'": "apostrophe",
    "`": "grave",
    "\\": "backslash",
    ",": "comma",
    ".": "dot",
    "/": "slash",
}
_SHIFTED = dict(zip('!@#$%^&*()_+{}:"~|<>?', "1234567890-=[];'`\\,./"))
KEYMAP: dict[str, tuple[int, bool]] = {}
for _c in "abcdefghijklmnopqrstuvwxyz0123456789":
    KEYMAP[_c] = (KEYS[_c], False)
for _c in "abcdefghijklmnopqrstuvwxyz":
    KEYMAP[_c.upper()] = (KEYS[_c], True)
for _c, _n in _UNSHIFTED.items():
    KEYMAP[_c] = (KEYS[_n], False)
for _c, _base in _SHIFTED.items():
    KEYMAP[_c] = (KEYMAP[_base][0], True)

LED_NAMES = {0: "numlock", 1: "capslock", 2: "scrolllock"}
BUTTONS = {"left": BTN_LEFT, "right": BTN_RIGHT, "middle": BTN_MIDDLE}

Key = Union[str, int]


def key_code(key: Key) -> tuple[int, bool]:
    """(evdev code, needs shift) for a key name ("enter", "ctrl", "f5"), a character, or a code."""
    if isinstance(key, int):
        return key, False
    if len(key) == 1 and key in KEYMAP:
        return KEYMAP[key]
    name = ALIASES.get(key.lower(), key.lower())
    if name in KEYS:
        return KEYS[name], False
    raise errors.InvalidArgument(f"unknown key {key!r}", lib.VMM_EINVAL, "VMM_EINVAL")


@dataclass(frozen=True)
class InputStats:
    delivered: int  # events the guest has received
    pending: int  # events waiting for guest buffers
    dropped: int  # events dropped because the pending queue was full


class _InputDevice:
    _index = 0

    def __init__(self, machine: Machine):
        self._m = machine

    @artifacts.recorded(".event")
    def event(self, type: int, code: int, value: int, at_ns: int | None = None) -> None:
        """Send one raw evdev event (no SYN_REPORT is added); `at_ns`: see the module's docstring."""
        at = self._m._input_at(at_ns)
        if at is None:
            self._m._checked(lib.vmm_input_event, self._index, type, code, value)
        else:
            self._m._checked(lib.vmm_input_event_at, self._index, at, type, code, value)

    def _at(self, at_ns: int | None) -> int | None:
        """The time for all the events of one call, fixed once.

        Deterministic mode: with an exact time (``at_ns``, or sent while the VM stands still) the events of
        one call enter together between two rounds (unless the device's queue is full: then whole reports
        wait for later rounds, never dropped). Sent while the VM runs freely, they may straddle a round
        boundary; in real-time mode every event goes to the device at once.
        """
        return self._m._input_at(at_ns)

    @artifacts.recorded(".sync")
    def sync(self, at_ns: int | None = None) -> None:
        self.event(EV_SYN, SYN_REPORT, 0, at_ns)

    def stats(self) -> InputStats:
        d, p, x = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
        self._m._checked(lib.vmm_input_stats, self._index, d, p, x)
        return InputStats(int(d[0]), int(p[0]), int(x[0]))


class Keyboard(_InputDevice):
    """The virtio keyboard (US layout for characters)."""

    _index = 0

    def _key(self, code: int, value: int, at: int | None) -> None:
        self.event(EV_KEY, code, value, at)
        self.sync(at)

    @artifacts.recorded(".press")
    def press(self, key: Key, at_ns: int | None = None) -> None:
        """Press a key (name, character or evdev code); a shifted character presses shift first."""
        code, shift = key_code(key)
        at = self._at(at_ns)
        if shift:
            self._key(KEY_LEFTSHIFT, 1, at)
        self._key(code, 1, at)

    @artifacts.recorded(".release")
    def release(self, key: Key, at_ns: int | None = None) -> None:
        """Release a key; a shifted character releases shift after it."""
        code, shift = key_code(key)
        at = self._at(at_ns)
        self._key(code, 0, at)
        if shift:
            self._key(KEY_LEFTSHIFT, 0, at)

    @staticmethod
    def combo_keys(combo: str) -> list[str]:
        """The keys of a combination: "ctrl+alt+delete" -> ["ctrl", "alt", "delete"] ("+" alone: the plus key)."""
        keys = [k for k in combo.split("+") if k] if combo != "+" else ["+"]
        if not keys:
            raise errors.InvalidArgument(f"no keys in {combo!r}", lib.VMM_EINVAL, "VMM_EINVAL")
        for k in keys:
            key_code(k)
        return keys

    @artifacts.recorded(".tap")
    def tap(self, combo: str, at_ns: int | None = None) -> None:
        """Press the '+'-separated keys in order and release them in reverse: "ctrl+alt+delete", "shift+a"."""
        keys = self.combo_keys(combo)
        at = self._at(at_ns)
        for k in keys:
            self.press(k, at)
        for k in reversed(keys):
            self.release(k, at)

    @staticmethod
    def check_text(text: str) -> None:
        """InvalidArgument if a character of `text` has no key on a US layout."""
        for ch in text:
            if ch not in KEYMAP:
                raise errors.InvalidArgument(f"no key for {ch!r} on a US layout", lib.VMM_EINVAL, "VMM_EINVAL")

    @artifacts.recorded(".type")
    def type(self, text: str, at_ns: int | None = None) -> None:
        """Type text on a US layout: each character is pressed and released (with shift when needed)."""
        self.check_text(text)
        at = self._at(at_ns)
        for ch in text:
            self.press(ch, at)
            self.release(ch, at)

    @property
    def leds(self) -> set[str]:
        """The LEDs the guest has lit: a subset of {"numlock", "capslock", "scrolllock"}."""
        v = ffi.new("uint32_t *")
        self._m._checked(lib.vmm_input_leds, v)
        return {name for bit, name in LED_NAMES.items() if v[0] >> bit & 1}


class Tablet(_InputDevice):
    """The virtio tablet: absolute pointer in screen pixels, scaled to its 0..32767 axes.

    ``screen_size`` is the machine's GPU mode (``gpu_size``); set it if the guest shows another size.
    """

    _index = 1

    def __init__(self, machine: Machine, screen_size: tuple[int, int]):
        super().__init__(machine)
        self.screen_size = screen_size

    def _scale(self, v: float, extent: int) -> int:
        if extent <= 1:
            return 0
        return max(0, min(ABS_MAX, round(v * ABS_MAX / (extent - 1))))

    @artifacts.recorded(".move")
    def move(self, x: float, y: float, at_ns: int | None = None) -> None:
        w, h = self.screen_size
        at = self._at(at_ns)
        self.event(EV_ABS, ABS_X, self._scale(x, w), at)
        self.event(EV_ABS, ABS_Y, self._scale(y, h), at)
        self.sync(at)

    def _button(self, button: str | int, value: int, at: int | None) -> None:
        code = button if isinstance(button, int) else BUTTONS.get(button)
        if code is None:
            raise errors.InvalidArgument(
                f"unknown button {button!r} (left, right, middle)", lib.VMM_EINVAL, "VMM_EINVAL"
            )
        self.event(EV_KEY, code, value, at)
        self.sync(at)

    @artifacts.recorded(".press")
    def press(self, button: str | int = "left", at_ns: int | None = None) -> None:
        self._button(button, 1, self._at(at_ns))

    @artifacts.recorded(".release")
    def release(self, button: str | int = "left", at_ns: int | None = None) -> None:
        self._button(button, 0, self._at(at_ns))

    @artifacts.recorded(".click")
    def click(self, x: float, y: float, button: str | int = "left", at_ns: int | None = None) -> None:
        at = self._at(at_ns)
        self.move(x, y, at)
        self.press(button, at)
        self.release(button, at)

    @artifacts.recorded(".drag")
    def drag(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        steps: int = 10,
        button: str | int = "left",
        at_ns: int | None = None,
    ) -> None:
        """Press at (x0, y0), move in `steps` equal steps to (x1, y1), release there."""
        at = self._at(at_ns)
        self.move(x0, y0, at)
        self.press(button, at)
        n = max(1, steps)
        for i in range(1, n + 1):
            self.move(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n, at)
        self.release(button, at)

    @artifacts.recorded(".scroll")
    def scroll(self, dy: int, dx: int = 0, at_ns: int | None = None) -> None:
        """Wheel clicks: dy > 0 scrolls up (REL_WHEEL), dx > 0 right (REL_HWHEEL)."""
        at = self._at(at_ns)
        if dy:
            self.event(EV_REL, REL_WHEEL, dy, at)
        if dx:
            self.event(EV_REL, REL_HWHEEL, dx, at)
        if dy or dx:
            self.sync(at)
