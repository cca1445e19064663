"""Tier 2: the live window of `python -m vmmpy run` (vmmpy/window.py) under Xvfb, driven by xdotool.

The window test starts its own X server (Xvfb picks a free display number: -displayfd), so it runs in CI with no
display; it needs Xvfb and xdotool (Debian: xvfb, xdotool; `make test` installs them) and Pillow with
XCB support (ImageGrab). The screenshot of the window is saved as build/window-test.png.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import vmmpy
from vmmpy.window import evdev_code

from .conftest import ROOT

GPU_SIZE = (1280, 800)
ECHO_RE = re.compile(r"^input: (kbd|tab) type=(\d+) code=(\d+) value=(-?\d+)\r?$", re.M)
EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
KEY_LEFTSHIFT, BTN_LEFT = 42, 0x110


def events(text: str, dev: str) -> list[tuple[int, int, int]]:
    return [(int(t), int(c), int(v)) for d, t, c, v in ECHO_RE.findall(text) if d == dev]


def wait_for(cond, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# ---- fast: no window ----
def test_evdev_codes():
    assert evdev_code(38, "a", x11=True) == 30  # X keycode - 8
    assert evdev_code(50, "Shift_L", x11=True) == KEY_LEFTSHIFT
    assert evdev_code(0, "A", x11=False) == 30  # elsewhere: from the keysym
    assert evdev_code(0, "exclam", x11=False) == 2
    assert evdev_code(0, "Return", x11=False) == 28
    assert evdev_code(0, "F5", x11=False) == 63
    assert evdev_code(0, "XF86AudioMute", x11=False) is None


def test_wake_after_close_never_writes_into_a_reused_fd():
    """Window.run closes its wake-up pipe under a lock: a watcher still running writes nothing afterwards,
    even when the fd numbers have been reused by then (no display needed)."""
    import threading

    from vmmpy.window import Window

    w = Window.__new__(Window)
    w._pipe_lock = threading.Lock()
    w._rfd, w._wfd = os.pipe()
    w._wake()
    assert os.read(w._rfd, 10) == b"!"
    w._close_pipe()
    r, wr = os.pipe()  # most likely the same numbers again
    try:
        os.set_blocking(r, False)
        w._wake()
        w._close_pipe()  # twice is harmless
        with pytest.raises(BlockingIOError):
            os.read(r, 10)
    finally:
        os.close(r)
        os.close(wr)


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmmpy", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_headless_and_no_display_run_without_a_window(guest):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = run_cli(guest("hello"), "--gpu", env=env)  # no display: quietly headless
    assert (p.returncode, p.stderr) == (0, ""), p.stderr
    assert "Hello from vmmpy guest!" in p.stdout
    p = run_cli(guest("hello"), "--gpu", "-v", env=env)  # -v: one note
    assert p.returncode == 0, p.stderr
    assert [line for line in p.stderr.splitlines() if "window" in line] == [
        "vmmpy: INFO: no window: no display ($DISPLAY / $WAYLAND_DISPLAY unset)"
    ]
    # --headless: no window even with a display (an unreachable one here: trying it would print a note)
    p = run_cli(guest("hello"), "--gpu", "--headless", env={**env, "DISPLAY": ":4242"})
    assert (p.returncode, p.stderr) == (0, ""), p.stderr
    # an unreachable display: one note, then headless
    p = run_cli(guest("hello"), "--gpu", env={**env, "DISPLAY": ":4242"})
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("vmmpy: no window: "), p.stderr


# ---- the window under Xvfb ----
def tool_env(display: str) -> dict:
    """For Xvfb and xdotool: not our code, so without the sanitizers tools/asan.sh preloads."""
    return {**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, "DISPLAY": display}


@pytest.fixture
def xvfb():
    """An Xvfb server of its own; yields its DISPLAY (":N")."""
    missing = [t for t in ("Xvfb", "xdotool") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian: apt-get install xvfb xdotool; make test does it)")
    try:
        import tkinter  # noqa: F401

        from PIL import ImageTk  # noqa: F401
    except ImportError as e:
        pytest.skip(f"no Tk for the window: {e} (Debian: python3-tk; make test installs it)")
    from PIL import features

    if not features.check("xcb"):
        pytest.skip("Pillow without XCB support: no ImageGrab of an X display")
    # -displayfd: Xvfb takes the first free display number itself (atomically, by its lock file) and
    # writes it to the pipe, so parallel runs (pytest -n, several checkouts) never race for one number.
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tool_env(""),
        pass_fds=(wfd,),
    )
    os.close(wfd)
    with os.fdopen(rfd) as r:
        number = r.readline().strip()  # "" if Xvfb died before choosing
    if not number.isdigit():
        proc.wait(timeout=10)
        pytest.fail(f"Xvfb -displayfd reported no display (exit {proc.returncode})")
    n = int(number)
    display = f":{n}"
    env = tool_env(display)

    def ready():
        if proc.poll() is not None:
            pytest.fail(f"Xvfb {display} exited with {proc.returncode}")
        if not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return False
        r = subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True, timeout=10)
        return r.returncode == 0

    try:
        wait_for(ready, 20, f"Xvfb on {display}", poll=0.05)
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def send_wm_delete(display: str, window: int) -> None:
    """What a window manager's close button does: a WM_PROTOCOLS / WM_DELETE_WINDOW client message."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):  # XClientMessageEvent, padded to sizeof(XEvent)
        _fields_ = [
            ("type", ctypes.c_int),
            ("serial", ctypes.c_ulong),
            ("send_event", ctypes.c_int),
            ("display", ctypes.c_void_p),
            ("window", ctypes.c_ulong),
            ("message_type", ctypes.c_ulong),
            ("format", ctypes.c_int),
            ("data", ctypes.c_long * 5),
            ("pad", ctypes.c_long * 24),
        ]

    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open {display}"
    try:
        ev = ClientMessage(type=33, window=window, format=32)  # 33: ClientMessage
        ev.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        ev.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        assert x11.XSendEvent(dpy, window, 0, 0, ctypes.byref(ev))
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


def grab_window(display: str, wid: str):
    """Screenshot of the window's client area (its geometry from xdotool; Xvfb has no decorations)."""
    from PIL import ImageGrab

    out = subprocess.run(
        ["xdotool", "getwindowgeometry", "--shell", wid],
        env=tool_env(display),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    g = dict(line.split("=", 1) for line in out.split())
    x, y, w, h = (int(g[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    return ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display)


class WindowRun:
    """`python -m vmmpy run ELF --gpu` with its window on `display`; stdout/stderr go to files."""

    def __init__(self, elf: str, display: str, tmp_path):
        env = {**os.environ, "DISPLAY": display, "PYTHONUNBUFFERED": "1"}
        env.pop("WAYLAND_DISPLAY", None)
        self.display = display
        self.out_path, self.err_path = tmp_path / "stdout", tmp_path / "stderr"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmmpy", "run", elf, "--gpu", "--timeout", "100"],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        title = f"vmmpy: {os.path.basename(elf)}"
        self.wid = self.xdo("search", "--sync", "--name", f"^{re.escape(title)}$", timeout=30).split()[0]

    def xdo(self, *args: str, timeout: float = 20) -> str:
        env = tool_env(self.display)
        return subprocess.run(
            ["xdotool", *args], env=env, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout

    def serial(self) -> str:
        return self.out_path.read_text(errors="replace")

    def show_matches(self, reference, save_as: str) -> None:
        """The window's client area equals `reference` pixel for pixel (polled: it presents within ms)."""
        shot = None

        def matches():
            nonlocal shot
            shot = grab_window(self.display, self.wid).convert("RGB")
            return shot.size == reference.size and shot.tobytes() == reference.tobytes()

        try:
            wait_for(matches, 10, "the window to show the guest's frame", poll=0.1)
        finally:
            if shot is not None:
                os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
                saved = os.path.join(ROOT, "build", save_as)
                shot.save(saved)
                print(f"window screenshot: {saved}")

    def close(self) -> float:
        """Close the window as a close button does; the run must end promptly with exit 0."""
        t = time.monotonic()
        send_wm_delete(self.display, int(self.wid))
        rc = self.proc.wait(timeout=10)
        took = time.monotonic() - t
        assert rc == 0, self.err_path.read_text()
        assert took < 3, f"exit {took:.1f} s after closing the window"
        assert self.err_path.read_text() == ""
        return took

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_window_shows_the_screen_and_forwards_keyboard_and_mouse(guest, xvfb, tmp_path):
    t_start = time.monotonic()
    run = WindowRun(guest("input_echo"), xvfb, tmp_path)
    serial, xdo, wid = run.serial, run.xdo, run.wid
    try:
        wait_for(lambda: "input_echo: frame 1" in serial(), 30, "the guest's first frame")

        # keyboard: the window has the focus, xdotool types through XTEST like a real keyboard
        xdo("windowfocus", "--sync", wid)
        xdo("type", "--delay", "30", "aZ!")
        wait_for(lambda: len([e for e in events(serial(), "kbd") if e[0] == EV_KEY]) >= 10, 20, "10 key events")
        keys = [(c, v) for t, c, v in events(serial(), "kbd") if t == EV_KEY]
        a, z, one = 30, 44, 2
        assert keys[:2] == [(a, 1), (a, 0)], keys
        # "Z" and "!" are shift + z and shift + 1: shift goes down before the key
        assert keys[2:4] == [(KEY_LEFTSHIFT, 1), (z, 1)], keys
        assert set(keys[4:6]) == {(KEY_LEFTSHIFT, 0), (z, 0)}, keys
        assert keys[6:8] == [(KEY_LEFTSHIFT, 1), (one, 1)], keys
        assert set(keys[8:10]) == {(KEY_LEFTSHIFT, 0), (one, 0)}, keys
        assert events(serial(), "kbd")[1] == (EV_SYN, 0, 0)  # each event followed by SYN_REPORT

        # mouse: window pixel (300, 200) is screen pixel (300, 200) at 1:1; the guest draws a 5x5 dot there
        frames_before = serial().count("input_echo: frame ")
        xdo("mousemove", "--window", wid, "300", "200")
        xdo("click", "1")
        x_abs, y_abs = round(300 * 32767 / (GPU_SIZE[0] - 1)), round(200 * 32767 / (GPU_SIZE[1] - 1))
        want = [(EV_ABS, 0, x_abs), (EV_ABS, 1, y_abs), (EV_SYN, 0, 0), (EV_KEY, BTN_LEFT, 1)]
        wait_for(lambda: (EV_KEY, BTN_LEFT, 0) in events(serial(), "tab"), 20, "the button release")
        tab = events(serial(), "tab")
        i = tab.index((EV_KEY, BTN_LEFT, 1))
        assert tab[i - 3 : i + 1] == want, tab
        assert (EV_ABS, 0, x_abs) in tab and (EV_ABS, 1, y_abs) in tab
        wait_for(lambda: serial().count("input_echo: frame ") > frames_before, 20, "a frame after the click")

        # the same frame from vmmpy: the guest run in-process with the same input, captured by m.screen
        with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=GPU_SIZE, input=True) as m:
            m.serial.expect(r"input_echo: frame 1\b", timeout=30)
            m.tablet.click(300, 200)
            m.serial.expect(r"input_echo: frame 2\b", timeout=30)
            reference = m.screen.capture()
        assert reference.getpixel((298, 198)) == (255, 255, 255)  # the click's dot
        assert reference.getpixel((294, 200)) == (0, 255, 0)  # the pointer's crosshair

        run.show_matches(reference, "window-test-input.png")  # the window shows it pixel for pixel

        # closing the window (WM_DELETE_WINDOW, as a close button) powers the guest off: exit 0, promptly
        took = run.close()
        print(f"closed -> exit in {took:.2f} s; whole test {time.monotonic() - t_start:.1f} s")
    finally:
        run.kill()


def test_window_shows_the_gpu_demo_frame_exactly(guest, xvfb, tmp_path):
    """A colourful frame (gradient, colour bars, text): gpu_demo holds frame 10 until a serial byte comes."""
    hold = 10
    run = WindowRun(guest("gpu_demo"), xvfb, tmp_path)
    try:
        wait_for(lambda: f"gpu_demo: holding frame {hold}" in run.serial(), 60, f"gpu_demo's frame {hold}")
        with vmmpy.Machine(guest("gpu_demo"), gpu=True, gpu_size=GPU_SIZE) as m:
            m.screen.hold(hold)
            m.serial.expect(rf"gpu_demo: holding frame {hold}\b", timeout=60)
            reference = m.screen.capture(frame=hold)
        run.show_matches(reference, "window-test.png")  # for the docs: build/window-test.png
        run.close()
    finally:
        run.kill()


DET_SCRIPT = """\
wait 1 frames
type a
capture 2 {dir}/c2.png
type b
wait 3 frames
click 10 10
capture 4 {dir}/c4.png
type c
wait 5 frames
wait 2 frames
wait 3ms
type d
wait 6 frames
key esc
"""


def test_window_leaves_a_deterministic_script_reproducible(guest, xvfb, tmp_path):
    """--deterministic --events with the window open: the window's frame watcher only watches (it used
    to resume the VM parked at a frame sync, so input landed at host-dependent times)."""
    env = {**os.environ, "DISPLAY": xvfb, "PYTHONUNBUFFERED": "1"}
    env.pop("WAYLAND_DISPLAY", None)
    runs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        f = d / "events.txt"
        f.write_text(DET_SCRIPT.format(dir=d))
        args = ("--gpu-size", "320x240", "--deterministic", "--events", str(f), "--timeout", "60")
        p = run_cli(guest("input_echo"), *args, env=env)
        assert p.returncode == 0, p.stderr
        assert "no window" not in p.stderr and "PASS input_echo" in p.stdout, p.stderr
        runs.append((p.stdout, (d / "c2.png").read_bytes(), (d / "c4.png").read_bytes()))
    assert runs[0] == runs[1]
