"""A live window on the guest's screen (``python -m vmmpy run``): Tk, on the main thread.

It shows the virtio-gpu scanout as the guest flushes it and forwards the host keyboard and mouse to the
guest's virtio-input keyboard and tablet. A watcher thread waits for new frames (``vmm_screen_wait_frame``,
no polling; it only watches: it never resumes a VM parked at a deterministic pause), captures the latest
one at most ``max_fps`` times a second and wakes Tk through a pipe; Tk presents it (Pillow's ImageTk:
about 7-9 ms for 1280x800, see docs/window.md). Keys are sent as Linux evdev codes: on X11 (and XWayland)
the X keycode minus 8, which is exact whatever the host's layout; elsewhere from the key's name. Closing
the window ends the run (``closed`` is then True). Input typed into the window reaches a deterministic VM
at whatever round comes next: it is never reproducible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from vmmpy import errors

if TYPE_CHECKING:
    from vmmpy.machine import Machine

log = logging.getLogger("vmmpy")

MAX_FPS = 60
X11_KEYCODE_OFFSET = 8  # X keycode = evdev code + 8 (xkb "evdev" rules: Xorg, Xvfb, XWayland)

# Tk keysym -> vmmpy key name (see vmmpy.input.KEYS), for windowing systems other than X11
_KEYSYMS = {
    "Escape": "esc",
    "Return": "enter",
    "KP_Enter": "enter",
    "BackSpace": "backspace",
    "Tab": "tab",
    "ISO_Left_Tab": "tab",
    "space": "space",
    "minus": "minus",
    "equal": "equal",
    "bracketleft": "leftbrace",
    "bracketright": "rightbrace",
    "semicolon": "semicolon",
    "apostrophe": "apostrophe",
    "grave": "grave",
    "backslash": "backslash",
    "comma": "comma",
    "period": "dot",
    "slash": "slash",
    "Shift_L": "leftshift",
    "Shift_R": "rightshift",
    "Control_L": "leftctrl",
    "Control_R": "rightctrl",
    "Alt_L": "leftalt",
    "Alt_R": "rightalt",
    "Meta_L": "leftmeta",
    "Meta_R": "rightmeta",
    "Super_L": "leftmeta",
    "Super_R": "rightmeta",
    "Caps_Lock": "capslock",
    "Num_Lock": "numlock",
    "Scroll_Lock": "scrolllock",
    "Home": "home",
    "End": "end",
    "Prior": "pageup",
    "Next": "pagedown",
    "Insert": "insert",
    "Delete": "delete",
    "Up": "up",
    "Down": "down",
    "Left": "left",
    "Right": "right",
}
_SHIFTED_KEYSYMS = {  # the unshifted key of a shifted keysym (US layout)
    "exclam": "1",
    "at": "2",
    "numbersign": "3",
    "dollar": "4",
    "percent": "5",
    "asciicircum": "6",
    "ampersand": "7",
    "asterisk": "8",
    "parenleft": "9",
    "parenright": "0",
    "underscore": "minus",
    "plus": "equal",
    "braceleft": "leftbrace",
    "braceright": "rightbrace",
    "colon": "semicolon",
    "quotedbl": "apostrophe",
    "asciitilde": "grave",
    "bar": "backslash",
    "less": "comma",
    "greater": "dot",
    "question": "slash",
}


def unavailable(gpu: bool) -> str | None:
    """Why there can be no window (None: there can be one). Quiet reasons start with '-'."""
    if not gpu:
        return "-the guest has no GPU"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "-no display ($DISPLAY / $WAYLAND_DISPLAY unset)"
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return "tkinter is not installed (Debian: python3-tk)"
    try:
        from PIL import ImageTk  # noqa: F401
    except ImportError:
        return "Pillow with Tk support is not installed (pip install Pillow)"
    return None


def evdev_code(keycode: int, keysym: str, x11: bool) -> int | None:
    """The evdev code of a Tk key event: X keycode - 8 on X11, else from the keysym (US layout)."""
    from vmmpy.input import KEYS, key_code

    if x11 and keycode > X11_KEYCODE_OFFSET:
        return keycode - X11_KEYCODE_OFFSET
    name = _KEYSYMS.get(keysym) or _SHIFTED_KEYSYMS.get(keysym)
    if name:
        return KEYS[name]
    if len(keysym) == 1:
        with contextlib.suppress(errors.VmmError):
            return key_code(keysym.lower() if keysym.isalpha() else keysym)[0]
    if keysym.startswith("F") and keysym[1:].isdigit() and keysym.lower() in KEYS:
        return KEYS[keysym.lower()]
    return None


class Window:
    """The window; create it (and call run()) on the main thread. Raises RuntimeError if Tk cannot start."""

    def __init__(self, machine: Machine, title: str = "vmmpy", max_fps: float = MAX_FPS):
        import tkinter as tk

        from PIL import ImageTk

        self.m = machine
        self.closed = False  # the user closed the window
        self._period = 1.0 / max_fps
        try:
            self._root = tk.Tk(className="vmmpy")
        except tk.TclError as e:
            raise RuntimeError(str(e)) from None
        root = self._root
        root.title(title)
        root.configure(background="black")
        self._x11 = root.tk.call("tk", "windowingsystem") == "x11"
        w, h = self.m.tablet.screen_size
        sw, sh = root.winfo_screenwidth(), root.winfo_screenheight()
        fit = min(1.0, 0.95 * sw / w, 0.9 * sh / h)  # a screen larger than the display is scaled down
        self._size = (w, h)  # of the guest's screen
        self._scale = fit
        vw, vh = max(1, round(w * fit)), max(1, round(h * fit))
        self._photo = ImageTk.PhotoImage("RGB", (vw, vh))
        self._view = tk.Label(root, image=self._photo, borderwidth=0, highlightthickness=0, anchor="nw", bg="black")
        self._view.pack(fill="both", expand=True)
        root.geometry(f"{vw}x{vh}")
        root.protocol("WM_DELETE_WINDOW", self._on_close)
        self._last_image = None  # the latest frame (PIL image at guest size), to rescale on resize
        self._down: set[int] = set()  # evdev keys we pressed in the guest
        self._held_release: tuple[int, int, str] | None = None  # (evdev code, X time, after job)
        for seq, fn in (
            ("<KeyPress>", self._on_key_press),
            ("<KeyRelease>", self._on_key_release),
            ("<FocusOut>", self._on_focus_out),
        ):
            root.bind(seq, fn)
        root.bind("<Destroy>", self._on_destroyed, add=True)
        for seq, fn in (
            ("<Motion>", self._on_motion),
            ("<ButtonPress>", self._on_button_press),
            ("<ButtonRelease>", self._on_button_release),
            ("<MouseWheel>", self._on_wheel),
            ("<Configure>", self._on_configure),
        ):
            self._view.bind(seq, fn)
        self._pending: tuple[int, int, bytes] | None = None
        self._lock = threading.Lock()
        self._ended = threading.Event()  # the VM ended (or `until` was set): close the window
        self._stop = threading.Event()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._pipe_lock = threading.Lock()  # the pipe is closed under it: no write into a reused fd
        self._tk = root.tk
        self._tk.createfilehandler(self._rfd, tk.READABLE, self._on_wake)
        root.update_idletasks()

    # -- the frame watcher (its own thread) ------------------------------------
    def _wake(self) -> None:
        with self._pipe_lock:
            if self._wfd < 0:  # closed: the window is gone
                return
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wfd, b"!")

    def _close_pipe(self) -> None:
        with self._pipe_lock:
            rfd, wfd = self._rfd, self._wfd
            self._rfd = self._wfd = -1
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)

    def _watch(self, until: threading.Event | None) -> None:
        screen = self.m.screen
        shown, last = 0, 0.0
        try:
            while not self._stop.is_set() and not (until is not None and until.is_set()):
                try:
                    # resume=False: a deterministic run parked by an --events script stays parked
                    n = screen.wait_frame(shown + 1, timeout=0.25, resume=False)
                except errors.ScreenTimeout:
                    continue
                delay = last + self._period - time.monotonic()
                if delay > 0 and self._stop.wait(delay):  # at most max_fps; later frames coalesce
                    return
                shown = max(n, screen.frames)
                w, h, data = screen.capture_rgba(0)  # the latest image
                last = time.monotonic()
                if w and h:
                    with self._lock:
                        self._pending = (w, h, data)
                    self._wake()
        except errors.VmmError:  # ScreenEOF: the VM ended
            pass
        finally:
            if not self._stop.is_set():
                self._ended.set()
                self._wake()

    # -- Tk side (main thread) ---------------------------------------------------
    def _on_wake(self, fd, mask) -> None:
        with contextlib.suppress(OSError):
            os.read(fd, 4096)
        with self._lock:
            frame, self._pending = self._pending, None
        if frame is not None:
            self._present(*frame)
        if self._ended.is_set():
            self._destroy()

    def _present(self, w: int, h: int, data: bytes) -> None:
        from PIL import Image

        image = Image.frombuffer("RGB", (w, h), data, "raw", "RGBX", 0, 1)
        if (w, h) != self._size:  # the guest changed mode: the tablet's pixels follow
            self._size = (w, h)
            self.m.tablet.screen_size = (w, h)
            self._last_image = image
            self._on_configure(None)
            return
        self._last_image = image
        self._paste(image)

    def _paste(self, image) -> None:
        pw, ph = self._photo.width(), self._photo.height()
        if image.size != (pw, ph):
            from PIL import Image

            image = image.resize((pw, ph), Image.BILINEAR)
        self._photo.paste(image)

    def _on_configure(self, event) -> None:
        """Fit the guest's screen into the view (keeping its aspect ratio); 1:1 when it fits exactly."""
        from PIL import ImageTk

        vw, vh = self._view.winfo_width(), self._view.winfo_height()
        if vw <= 1 or vh <= 1:
            return
        w, h = self._size
        scale = min(vw / w, vh / h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        self._scale = scale
        if size != (self._photo.width(), self._photo.height()):
            self._photo = ImageTk.PhotoImage("RGB", size)
            self._view.configure(image=self._photo)
        if self._last_image is not None:
            self._paste(self._last_image)

    def _guest_xy(self, x: int, y: int) -> tuple[float, float]:
        w, h = self._size
        return (min(max(x / self._scale, 0), w - 1), min(max(y / self._scale, 0), h - 1))

    def _send(self, fn, *args) -> None:
        try:
            fn(*args)
        except errors.VmmError as e:  # e.g. the VM is going away
            log.debug("window: input not sent: %s", e)

    def _on_key_press(self, event) -> None:
        code = evdev_code(event.keycode, event.keysym, self._x11)
        if code is None:
            return
        held = self._held_release
        if held is not None and held[0] == code and held[1] == event.time:
            # X autorepeat: a release and a press with the same time; the guest repeats by itself
            self._root.after_cancel(held[2])
            self._held_release = None
            return
        self._flush_release()  # events reach the guest in the order they happened
        if code in self._down:
            return
        self._down.add(code)
        self._send(self.m.keyboard.press, code)

    def _on_key_release(self, event) -> None:
        code = evdev_code(event.keycode, event.keysym, self._x11)
        self._flush_release()
        if code is None or code not in self._down:
            return
        # held back until the next event (or 20 ms): an autorepeat's press follows at once and cancels it
        self._held_release = (code, event.time, self._root.after(20, self._flush_release))

    def _flush_release(self) -> None:
        held, self._held_release = self._held_release, None
        if held is None:
            return
        with contextlib.suppress(Exception):
            self._root.after_cancel(held[2])
        self._release(held[0])

    def _release(self, code: int) -> None:
        if code in self._down:
            self._down.discard(code)
            self._send(self.m.keyboard.release, code)

    def _on_focus_out(self, event) -> None:
        self._flush_release()
        for code in list(self._down):  # no keys stuck down in the guest
            self._release(code)

    def _on_motion(self, event) -> None:
        self._send(self.m.tablet.move, *self._guest_xy(event.x, event.y))

    _BUTTONS = {1: "left", 2: "middle", 3: "right"}
    _WHEEL = {4: (1, 0), 5: (-1, 0), 6: (0, -1), 7: (0, 1)}  # X11 buttons: (dy, dx)

    def _on_button_press(self, event) -> None:
        if event.num in self._WHEEL:
            self._send(self.m.tablet.scroll, *self._WHEEL[event.num])
        elif event.num in self._BUTTONS:
            self._send(self.m.tablet.move, *self._guest_xy(event.x, event.y))
            self._send(self.m.tablet.press, self._BUTTONS[event.num])

    def _on_button_release(self, event) -> None:
        if event.num in self._BUTTONS:
            self._send(self.m.tablet.move, *self._guest_xy(event.x, event.y))
            self._send(self.m.tablet.release, self._BUTTONS[event.num])

    def _on_wheel(self, event) -> None:  # Windows, macOS (X11 uses buttons 4 and 5)
        steps = int(event.delta / 120) or (1 if event.delta > 0 else -1)
        self._send(self.m.tablet.scroll, steps)

    def _on_close(self) -> None:
        self.closed = True
        self._destroy()

    def _on_destroyed(self, event) -> None:  # the window went away under us (e.g. destroyed by another client)
        if self._root is not None and event.widget is self._root:
            self.closed = True
            self._root = None

    def _destroy(self) -> None:
        if self._root is not None:
            with contextlib.suppress(Exception):
                self._root.destroy()
            self._root = None

    # -- running -----------------------------------------------------------------
    def run(self, until: threading.Event | None = None) -> bool:
        """Show the screen until the window is closed (returns True), the VM ends or `until` is set (False).

        The VM must be started. Signals (Ctrl-C) wake the loop through the same pipe as new frames.
        """
        watcher = threading.Thread(target=self._watch, args=(until,), name="vmmpy-window", daemon=True)
        watcher.start()
        old_fd = None
        with contextlib.suppress(ValueError):  # not the main thread: signals wait for the next event
            old_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        try:
            while self._root is not None:
                self._root.tk.dooneevent(0)  # blocks (GIL released) until an event, a frame or a signal
        finally:
            if old_fd is not None:
                signal.set_wakeup_fd(old_fd)
            self._stop.set()
            self._destroy()
            # the watcher looks at _stop at least every 0.25 s; whatever it does after this, _wake() writes
            # nothing once the pipe is closed (under _pipe_lock), so a reused fd number is never touched
            watcher.join(timeout=5)
            if watcher.is_alive():
                log.warning("window: the frame watcher did not end")
            with contextlib.suppress(Exception):
                self._tk.deletefilehandler(self._rfd)
            self._close_pipe()
        return self.closed
