"""Input scripts (vmmpy/events.py, `python -m vmmpy run --events FILE`) and deterministic input scheduling,
against guest/input_echo.c (it echoes every virtio-input event, shows a frame after each batch and draws a
white 5x5 square where the tablet clicks)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

import vmmpy
from tests.conftest import ROOT
from tests.test_virtio_input import BTN_LEFT, EV_ABS, EV_KEY, EV_SYN, echo_events, expected_typing
from vmmpy import events

SIZE = (320, 240)
GUEST = f"{ROOT}/guest/build/input_echo.elf"


def vmmpy_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmmpy", "run", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


# ---- parsing ----


def test_parse_a_script():
    s = events.parse(
        """
        # a comment, then blank lines

        wait 1 frames
        wait frame 2         # the other spelling
        type Hi, "you"!\\n   # escapes; the quotes are typed
        type "  spaced # not a comment  "
        key ctrl+alt+delete
        wait 200ms
        wait 1.5 s
        wait serial "PASS \\"x\\"" 5s
        move 10 20
        click 1 2 right
        drag 0 0 100 50.5
        scroll -3
        capture 4 out.png
        quit
        """
    )
    assert [(c.name, c.args) for c in s.commands] == [
        ("wait_frame", (1,)),
        ("wait_frame", (2,)),
        ("type", ('Hi, "you"!\n',)),
        ("type", ("  spaced # not a comment  ",)),
        ("key", ("ctrl+alt+delete",)),
        ("wait_time", (0.2,)),
        ("wait_time", (1.5,)),
        ("wait_serial", ('PASS "x"', 5.0)),
        ("move", (10, 20)),
        ("click", (1, 2, "right")),
        ("drag", (0, 0, 100, 50.5)),
        ("scroll", (-3,)),
        ("capture", (4, "out.png")),
        ("quit", ()),
    ]
    assert s.commands[0].line == 4 and s.needs_gpu and s.captures == {4: "out.png"}
    assert not events.parse("type a\nkey esc\nwait 1s").needs_gpu


@pytest.mark.parametrize(
    "line, message",
    [
        ("clik 1 2", "unknown command 'clik' (expected wait, type, key, move, click, drag, scroll, capture, quit)"),
        ("wait", "expected 'wait N frames', 'wait frame N', 'wait Nms', 'wait N s' or 'wait serial \"text\"'"),
        ("wait soon", "not 'wait soon'"),
        ("wait 3 fps", "not 'wait 3 fps'"),
        ("wait 0 frames", "frames are counted from 1"),
        ("wait frame x", "not a frame number: 'x'"),
        ("wait serial PASS", 'expected a "quoted text"'),
        ('wait serial "PASS', "no closing"),
        ('wait serial ""', "the text is empty"),
        ('wait serial "PASS" soon', "expected a timeout like 5s"),
        ("type", "type: nothing to type"),
        ("type a\\qb", "unknown escape '\\q'"),
        ("type ab\\", "a lone '\\'"),
        ("type café", "type: no key for 'é' on a US layout"),
        ('type "a" b', "unexpected 'b' after the quoted text"),
        ("key", "expected 'key COMBO'"),
        ("key ctrl+a b", "expected 'key COMBO'"),
        ("key ctrl+bogus", "key: unknown key 'bogus'"),
        ("move 1", "expected 'move X Y'"),
        ("move 1 -2", "not a pixel position: '-2'"),
        ("click 1", "expected 'click X Y [left|right|middle]'"),
        ("click 1 2 top", "unknown button 'top'"),
        ("drag 1 2 3", "expected 'drag X0 Y0 X1 Y1'"),
        ("scroll 0", "expected 'scroll N'"),
        ("scroll up", "expected 'scroll N'"),
        ("capture 3", "expected 'capture N PATH' or 'capture PATH'"),
        ("capture", "expected 'capture N PATH' or 'capture PATH'"),
        ("capture /no/such/dir/a.png", "capture: directory '/no/such/dir' does not exist"),
        ("capture /tmp", "capture: '/tmp' is a directory"),
        ("capture 0 a.png", "frames are counted from 1"),
        ("capture 1 /no/such/dir/a.png", "capture: directory '/no/such/dir' does not exist"),
        ("quit now", "quit takes no arguments"),
        # values that parse must also run: bounded here, not an overflow in the executor
        ("scroll 3000000000", "scroll: 3000000000 steps is out of range"),
        ("scroll -2147483649", "out of range"),
        ("wait 99999999999999999999 s", "the wait is longer than 1e+06 s"),
        ("wait 1000001s", "the wait is longer than 1e+06 s"),
        ('wait serial "x" 99999999999 s', "wait serial: the timeout is longer than 1e+06 s"),
        ("wait 99999999999999999999 frames", "is beyond the last one (2147483647)"),
        ("wait frame 2147483648", "is beyond the last one (2147483647)"),
        ("capture 2147483648 a.png", "is beyond the last one"),
        ("capture 1 /tmp", "capture: '/tmp' is a directory"),
        ("capture 1 shots/", "is a directory"),
        ("move 1 " + "9" * 400, "is too large (at most 1000000)"),
        ("click 2000000 1", "is too large"),
    ],
)
def test_parse_errors(line, message):
    with pytest.raises(events.EventsSyntaxError) as e:
        events.parse(f"# first\n\n{line}\n", "ev.txt")
    text = str(e.value)
    assert text.startswith("ev.txt:3: ") and message in text, text
    assert "\n" not in text
    assert isinstance(e.value, vmmpy.InvalidArgument)


def test_any_whitespace_after_the_command():
    s = events.parse("type\tabc\nwait\t2 frames\nkey\t esc\nscroll\t-1\nquit\t")
    assert [(c.name, c.args) for c in s.commands] == [
        ("type", ("abc",)),
        ("wait_frame", (2,)),
        ("key", ("esc",)),
        ("scroll", (-1,)),
        ("quit", ()),
    ]


def test_the_largest_values_run(guest):
    """The bounds of the parser are values the executor takes (no OverflowError at int32 / uint64)."""
    with vmmpy.Machine(guest("input_echo"), input=True, deterministic=True) as m:
        script = events.parse(f"scroll {2**31 - 1}\nscroll {-(2**31)}\nwait 1000000 s\nmove 1000000 0")
        runner = events.Runner(script, m)
        runner.prepare()
        assert runner._cursor == 10**15


def test_capture_now_parses_as_its_own_command(tmp_path):
    s = events.parse(f"capture {tmp_path}/x a.png\ncapture 2 {tmp_path}/b.png")
    assert [(c.name, c.args) for c in s.commands] == [
        ("capture_now", (f"{tmp_path}/x a.png",)),
        ("capture", (2, f"{tmp_path}/b.png")),
    ]
    assert s.captures == {2: f"{tmp_path}/b.png"}  # only numbered frames are held
    assert events.parse(f"capture {tmp_path}/now.png").needs_gpu


def test_too_many_captures():
    with pytest.raises(events.EventsSyntaxError, match="at most 64 frames"):
        events.parse("\n".join(f"capture {n} f{n}.png" for n in range(1, 66)))


def test_cli_syntax_error_is_one_line_and_exit_2(tmp_path, guest):
    f = tmp_path / "events.txt"
    f.write_text("wait 1 frames\n\nclik 10 10\n")
    p = vmmpy_run(guest("input_echo"), "--events", str(f))
    assert p.returncode == 2
    assert p.stderr.decode() == (
        f"vmmpy: {f}:3: unknown command 'clik' (expected wait, type, key, move, click, drag, scroll, capture, quit)\n"
    )
    assert p.stdout == b""  # nothing ran

    p = vmmpy_run(guest("input_echo"), "--events", str(tmp_path / "missing.txt"))
    assert p.returncode == 2 and p.stderr.decode() == f"vmmpy: {tmp_path / 'missing.txt'}: No such file or directory\n"

    f.write_text("capture 2 x.png\n")
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--no-gpu")
    assert p.returncode == 2 and p.stderr.decode() == f"vmmpy: {f}:1: capture 2 x.png: needs the GPU: drop --no-gpu\n"


# ---- running ----

SCRIPT = """\
wait 1 frames                # "input_echo: ready" and the black frame 1
type Hi, "You"!\\n
click 100 50
capture 2 {png}
wait serial "code=272 value=0"
key ctrl+c
key esc                      # input_echo prints PASS and powers off
"""


def check_echo(text: str) -> None:
    kbd = echo_events(text, "kbd")
    typed = expected_typing('Hi, "You"!\n')
    assert kbd[: len(typed)] == typed  # shifted characters: shift down, key, key up, shift up
    ctrl_c = [(EV_KEY, 29, 1), (EV_SYN, 0, 0), (EV_KEY, 46, 1), (EV_SYN, 0, 0)]
    ctrl_c += [(EV_KEY, 46, 0), (EV_SYN, 0, 0), (EV_KEY, 29, 0), (EV_SYN, 0, 0)]
    # the guest ends at KEY_ESC: in real time its SYN_REPORT may come after the guest has looked
    assert kbd[len(typed) : len(typed) + 9] == ctrl_c + [(EV_KEY, 1, 1)]
    x, y = round(100 * 32767 / 319), round(50 * 32767 / 239)
    assert echo_events(text, "tab") == [
        (EV_ABS, 0, x),
        (EV_ABS, 1, y),
        (EV_SYN, 0, 0),
        (EV_KEY, BTN_LEFT, 1),
        (EV_SYN, 0, 0),
        (EV_KEY, BTN_LEFT, 0),
        (EV_SYN, 0, 0),
    ]
    assert "PASS input_echo" in text


def check_png(path) -> None:
    im = Image.open(path).convert("RGB")
    assert im.size == SIZE
    # the 5x5 white square of the click, on black, under the green XOR crosshair of the pointer
    assert im.getbbox() == (94, 44, 107, 57)
    assert im.getpixel((98, 48)) == im.getpixel((102, 52)) == (255, 255, 255)
    assert im.getpixel((100, 50)) == (255, 0, 255)  # white XOR green
    assert im.getpixel((94, 50)) == im.getpixel((100, 56)) == (0, 255, 0)


# Real time: how many frames the typing and the click make depends on when the guest drains its queues
# (frame 2 was the typing alone under ASan), so the capture waits for the guest to print the frame it drew
# after the click's release, and saves the screen as it is then.
SCRIPT_REALTIME = """\
wait 1 frames
type Hi, "You"!\\n
click 100 50
wait serial "code=272 value=0"
wait serial "input_echo: frame"
capture {png}
key ctrl+c
key esc
"""


@pytest.mark.parametrize("mode", ["realtime", "deterministic"])
def test_cli_events_end_to_end(tmp_path, guest, mode):
    png = tmp_path / "click.png"
    f = tmp_path / "events.txt"
    f.write_text((SCRIPT_REALTIME if mode == "realtime" else SCRIPT).format(png=png))
    extra = ["--deterministic"] if mode == "deterministic" else []
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--gpu-size", "320x240", "--timeout", "30", *extra)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, (out[-2000:], err)
    check_echo(out)
    check_png(png)
    if mode == "realtime":
        assert f"vmmpy: the screen now (320x240) -> {png}" in err
    else:
        assert f"vmmpy: frame 2 (320x240) -> {png}" in err


def test_cli_input_flag_and_quit(tmp_path, guest):
    f = tmp_path / "events.txt"
    f.write_text('wait serial "input_echo: ready"\ntype q\nwait serial "code=16 value=0"\nquit\n')
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--timeout", "30")
    assert p.returncode == 0, p.stderr  # stopped by the script: a clean end
    # the press, its SYN and the release (quit may stop the guest before it echoes the last SYN)
    assert echo_events(p.stdout.decode(), "kbd")[:3] == expected_typing("q")[:3]
    assert "PASS" not in p.stdout.decode()
    # --input alone gives the guest its keyboard and tablet (without them input_echo fails at once)
    p = vmmpy_run(guest("input_echo"), "--input", "--timeout", "0.5")
    assert b"input_echo: ready" in p.stdout and p.returncode == 124


def test_cli_events_timeout_is_reported(tmp_path, guest):
    f = tmp_path / "events.txt"
    f.write_text('wait serial "never printed" 200ms\nkey esc\n')
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--timeout", "30")
    err = p.stderr.decode()
    assert p.returncode == 1
    assert err.startswith(f'vmmpy: error: {f}:1: wait serial "never printed" 200ms: not seen within 0.2 s')
    assert err.count("\n") == 1


def test_cli_events_failing_because_of_timeout_exits_124(tmp_path, guest):
    """A wait ended by --timeout: one error line and 124, like --capture (README's exit codes)."""
    f = tmp_path / "events.txt"
    f.write_text('wait serial "never printed" 100s\n')
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--timeout", "0.5")
    err = p.stderr.decode()
    assert p.returncode == 124, err
    assert (
        err
        == f'vmmpy: error: {f}:1: wait serial "never printed" 100s: the guest ended (TIMEOUT) first; '
        + (err.split("first; ", 1)[1])
    )
    assert err.count("\n") == 1


def test_the_guest_error_message_is_in_the_error_line():
    m = type("M", (), {"deterministic": False})()
    m.result = vmmpy.RunResult(vmmpy.RunReason.GUEST_ERROR, 0, 0, "vCPU 0: every vCPU is off")
    assert events.Runner(events.parse("quit"), m)._ended() == (
        "the guest ended (GUEST_ERROR: vCPU 0: every vCPU is off) first"
    )


@pytest.mark.parametrize("det", [[], ["--deterministic"]])
def test_cli_capture_that_cannot_be_saved_is_one_error_line(tmp_path, guest, det):
    """An OSError while saving (here: /proc takes no new files) ends the run with one line, exit 1, promptly."""
    f = tmp_path / "events.txt"
    f.write_text("capture 1 /proc/vmmpy-no-such.png\nkey esc\n")
    p = vmmpy_run(guest("input_echo"), "--events", str(f), "--gpu-size", "320x240", "--timeout", "30", *det)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.startswith(f"vmmpy: error: {f}:1: capture 1 /proc/vmmpy-no-such.png: cannot save "), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "PASS" not in p.stdout.decode()  # the VM was stopped, not left to the esc


def test_an_unexpected_exception_in_the_executor_is_one_error_line(guest, monkeypatch):
    """Whatever goes wrong in the script's thread: self.error names the command, the VM stops, no traceback."""
    with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=SIZE, input=True) as m:
        runner = events.Runner(events.parse("wait 1 frames\ntype a\nkey esc"), m, log=lambda msg: None)

        def boom(c, at):
            raise RuntimeError("boom")

        monkeypatch.setattr(runner, "_input", boom)
        runner.prepare()
        m.start(timeout=30)
        runner.run()  # never raises
        assert runner.error == "<events>:2: type a: RuntimeError: boom"
        assert runner.done.is_set() and not m.running and m.result.reason == vmmpy.RunReason.STOPPED


def test_run_events_from_python(tmp_path, guest):
    with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=SIZE, input=True) as m:
        with pytest.raises(events.EventsSyntaxError, match=r"<events>:2: unknown command 'clik'"):
            m.run_events("wait 1 frames\nclik 1 1\n")
        assert not m.running  # parsed before anything ran
        # real time: how many frames the typing and the click make depends on timing (SCRIPT_REALTIME)
        s = m.run_events(
            f'wait 1 frames\ntype Hi, "You"!\\n\nclick 100 50\nwait serial "code=272 value=0"\n'
            f'wait serial "input_echo: frame"\ncapture {tmp_path / "c.png"}'
        )
        assert s.captured == [str(tmp_path / "c.png")]
        m.run_events("key ctrl+c\nkey esc\n")
        assert m.wait(timeout=30).ok
        check_echo(m.serial.text)
        check_png(tmp_path / "c.png")
        with pytest.raises(events.EventsFailed, match=r"<events>:1: wait 99 frames: the guest ended \(POWEROFF\)"):
            m.run_events("wait 99 frames")


# ---- deterministic scheduling ----

FRAME_RE = re.compile(r"^input_echo: frame (\d+) at (\d+) us", re.M)


def scheduled_run(deterministic: bool) -> bytes:
    """Key and tablet events at fixed virtual times, sent before the VM starts."""
    with vmmpy.Machine(GUEST, gpu=True, gpu_size=SIZE, input=True, deterministic=deterministic) as m:
        m.keyboard.type("Ab", at_ns=2_000_000)
        m.tablet.click(10, 20, at_ns=3_000_000)
        m.tablet.scroll(2, at_ns=3_000_000)
        m.keyboard.tap("shift+x", at_ns=5_000_000)
        m.keyboard.tap("esc", at_ns=7_000_000)
        res = m.run(timeout=30)
        assert res.ok, (res, m.serial.text[-1000:])
        return m.serial.data


def test_deterministic_scheduled_input_is_reproducible():
    runs = [scheduled_run(True) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2], [hashlib.sha1(r).hexdigest() for r in runs]
    text = runs[0].decode()
    # each batch arrives at its virtual time: the frame after it is drawn shortly after that time
    times = [int(t) for _, t in FRAME_RE.findall(text)]
    assert times[0] < 2000, times  # frame 1 (ready); then the batches at 2, 3, 5 and 7 ms
    dues = (2000, 3000, 5000, 7000)
    assert all(any(d <= t < d + 200 for t in times) for d in dues), times
    assert all(any(d <= t < d + 200 for d in dues) for t in times[1:]), times
    assert echo_events(text, "kbd")[:12] == expected_typing("Ab")


def test_realtime_control_differs():
    """The control: without deterministic mode the same schedule gives different output (frame times)."""
    runs = [scheduled_run(False) for _ in range(2)]
    assert runs[0] != runs[1]
    assert [echo_events(r.decode(), "kbd") for r in runs][0] == echo_events(runs[1].decode(), "kbd")


def paused_run() -> tuple[bytes, list[int]]:
    """wait_frame(pause=True), then input at the (exact) paused clock, then again."""
    with vmmpy.Machine(GUEST, gpu=True, gpu_size=SIZE, input=True, deterministic=True) as m:
        m.screen.wait_frame(1, pause=True)
        assert m.paused
        clocks = [m.clock_ns, m.input_time_ns]
        m.keyboard.type("hi")  # due at m.input_time_ns
        m.screen.wait_frame(2, pause=True)
        clocks.append(m.clock_ns)
        m.tablet.click(5, 5)
        m.keyboard.tap("esc", at_ns=m.clock_ns + 1_000_000)
        assert m.wait(timeout=30).ok
        return m.serial.data, clocks


def test_deterministic_pause_at_frame_then_inject_is_reproducible():
    runs = [paused_run() for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    data, clocks = runs[0]
    assert clocks[0] == clocks[1] and clocks[2] > clocks[0]
    assert echo_events(data.decode(), "kbd")[:8] == expected_typing("hi")


def test_pause_needs_deterministic_mode():
    with vmmpy.Machine(GUEST, gpu=True, input=True) as m, pytest.raises(vmmpy.StateError):
        m.screen.wait_frame(1, pause=True)


def test_the_docs_example_parses():
    with open(f"{ROOT}/docs/cli.md") as f:
        readme = f.read()
    block = readme.split("## Input scripts", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    s = events.parse(block, "docs/cli.md")
    assert [c.name for c in s.commands][:3] == ["wait_frame", "type", "wait_serial"] and s.commands[-1].name == "quit"


def det_cli_run(tmp_path, script: str, elf: str, *extra: str, runs: int = 3) -> list[tuple[int, bytes, bytes]]:
    """The same deterministic --events run `runs` times: [(exit code, stdout, bytes of every capture)]."""
    out = []
    for i in range(runs):
        d = tmp_path / f"run{i}"
        d.mkdir()
        f = d / "events.txt"
        f.write_text(script.format(dir=d))
        p = vmmpy_run(elf, "--headless", "--deterministic", "--events", str(f), "--timeout", "30", *extra)
        assert p.returncode == 0, p.stderr.decode()
        pngs = b"".join(png.read_bytes() for png in sorted(d.glob("*.png")))
        out.append((p.returncode, p.stdout, pngs))
    return out


def test_deterministic_sync_on_a_frame_that_exists_stays_parked(tmp_path, guest):
    """`capture 1` / `wait 1 frames` while parked at frame 2: the VM stays parked, the cursor stays (it
    used to resume the VM and take the clock wherever it ran to: a different run each time)."""
    script = (
        "wait 1 frames\ntype a\nwait 2 frames\ncapture 1 {dir}/c1.png\nwait 1 frames\ntype b\n"
        "wait 3 frames\ncapture 2 {dir}/c2.png\ntype c\nwait 4 frames\nkey esc\n"
    )
    runs = det_cli_run(tmp_path, script, guest("input_echo"), "--gpu-size", "320x240")
    assert runs[0] == runs[1] == runs[2]
    text = runs[0][1].decode()
    assert echo_events(text, "kbd")[:12] == expected_typing("abc") and "PASS input_echo" in text


def test_deterministic_quit_on_an_idle_guest_without_a_timer(tmp_path, guest):
    """`quit` stops exactly at the cursor via vmm_stop_at: an idle guest with no timer jumps there."""
    runs = det_cli_run(tmp_path, "wait 5ms\nquit\n", guest("idle_notick"), runs=2)
    assert runs[0] == runs[1]
    assert b"idle: ready, no timer" in runs[0][1]


def test_deterministic_quit_stops_at_the_cursor_exactly(guest):
    """From Python: the run ends with the virtual clock at the cursor, for a busy guest too."""
    clocks = []
    typed = "wait 1 frames\ntype a\nwait 3ms\nquit"
    for script in ("wait 1 frames\nquit", typed, typed):
        with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=SIZE, input=True, deterministic=True) as m:
            m.run_events(script)
            assert m.result.reason == vmmpy.RunReason.STOPPED
            clocks.append((m.clock_ns, m.serial.data))
    frame1 = clocks[0][0]  # the cursor after "wait 1 frames": the end of the round that flushed frame 1
    assert frame1 > 0
    assert clocks[1][0] == frame1 + 3_000_000  # quit stopped the clock exactly at the cursor
    assert clocks[1] == clocks[2]
    assert b"type=1 code=30 value=1" in clocks[1][1]  # the 'a' arrived within the 3 ms


def test_drag_presses_moves_in_steps_and_releases(guest):
    """Tablet.drag: press at the start, `steps` equal moves, release at the end (deterministic, so the
    whole gesture arrives in one round and in order)."""
    with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=SIZE, input=True, deterministic=True) as m:
        m.screen.wait_frame(1, timeout=30)
        m.tablet.drag(10, 20, 50, 60, steps=4, at_ns=m.clock_ns)
        m.keyboard.tap("esc", at_ns=m.clock_ns + 1_000_000)
        assert m.wait(timeout=30).ok
        got = echo_events(m.serial.text, "tab")

    def at(x, y):
        return [(EV_ABS, 0, round(x * 32767 / 319)), (EV_ABS, 1, round(y * 32767 / 239)), (EV_SYN, 0, 0)]

    want = at(10, 20) + [(EV_KEY, BTN_LEFT, 1), (EV_SYN, 0, 0)]
    for x, y in ((20, 30), (30, 40), (40, 50), (50, 60)):
        want += at(x, y)
    want += [(EV_KEY, BTN_LEFT, 0), (EV_SYN, 0, 0)]
    assert got == want


def test_pause_wait_with_a_timeout_beyond_a_year_still_waits():
    """A vmm_screen_pause_wait timeout past a year (here UINT64_MAX ns) is cut to a year, not to nothing: the
    wait goes on until a stop 0.3 s later ends it with VMM_EEOF."""
    from vmmpy._vmm import lib

    with vmmpy.Machine(GUEST, gpu=True, gpu_size=SIZE, input=True, deterministic=True) as m:
        assert m._checked(lib.vmm_screen_pause_at, 1_000_000) == 0  # a frame this guest does not reach
        m.start()
        guard = threading.Timer(0.3, m.stop)
        guard.start()
        t = time.monotonic()
        try:
            rc = m._checked(lib.vmm_screen_pause_wait, 2**64 - 1, allow=(lib.VMM_EEOF,))
        finally:
            guard.cancel()
        assert (rc, time.monotonic() - t >= 0.25) == (lib.VMM_EEOF, True)


def test_pause_wait_waits_its_timeout_for_a_frame_that_does_not_come():
    """vmm_screen_pause_wait (C API; wait_paused() calls it in 0.5 s slices) blocks until the pause or its
    timeout: 1 after at least the 0.3 s asked for (not a longer wait: a stop 10 s on ends one that ignores it,
    with VMM_EEOF), the pause still armed, the VM still running. A wake-up of the run loop meanwhile (a
    vmm_stop_at 0.1 s in, for a time the run does not reach) does not end the wait."""
    from vmmpy._vmm import lib

    with vmmpy.Machine(GUEST, gpu=True, gpu_size=SIZE, input=True, deterministic=True) as m:
        assert m._checked(lib.vmm_screen_pause_at, 1_000_000) == 0  # a frame this guest does not reach
        m.start()
        guard = threading.Timer(10.0, m.stop)
        guard.start()
        threading.Timer(0.1, m.stop_at, args=(10**15,)).start()  # 11 days of virtual time
        t = time.monotonic()
        try:
            rc = m._checked(lib.vmm_screen_pause_wait, 300_000_000, allow=(lib.VMM_EEOF,))
        finally:
            guard.cancel()
        assert (rc, time.monotonic() - t >= 0.3) == (1, True)
        assert m.running and not m.paused
        m.screen.pause_at(0)
        m.stop()
