"""virtio-input (virtio 1.2 §5.8): tier 1 drives the keyboard and tablet over virtio-mmio with
tests/virtio_driver.py; tier 2 runs guest/input_echo.c and checks the events it prints."""

from __future__ import annotations

import re
import struct
import time

import pytest

import vmmpy
from tests.virtio_driver import ID_GPU, ID_INPUT, VirtioMMIO, find_devices
from vmmpy.input import KEYMAP, KEYS

INPUT_ID, GPU_ID = ID_INPUT, ID_GPU
ID_NAME, ID_SERIAL, ID_DEVIDS, PROP_BITS, EV_BITS, ABS_INFO = 1, 2, 3, 0x10, 0x11, 0x12
EV_SYN, EV_KEY, EV_REL, EV_ABS, EV_LED, EV_REP = 0, 1, 2, 3, 0x11, 0x14
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE = 0x110, 0x111, 0x112
KBD, TAB = 0, 1


class Input:
    """One virtio-input device on `m`, driven from the test."""

    def __init__(self, m: vmmpy.Machine, which: int, init: bool = True):
        slots = [s for s, dev_id in find_devices(m) if dev_id == INPUT_ID]
        assert len(slots) == 2, find_devices(m)
        self.dev = VirtioMMIO(m, slots[which])
        if init:
            self.eventq, self.statusq = self.dev.init(queues=2)

    def select(self, sel: int, subsel: int = 0) -> bytes:
        self.dev.config_write(0, sel, 1)
        self.dev.config_write(1, subsel, 1)
        size = self.dev.config_read(2, 1)
        assert size <= 128
        return bytes(self.dev.config_read(8 + i, 1) for i in range(size))

    def bits(self, type_: int) -> set[int]:
        bm = self.select(EV_BITS, type_)
        return {8 * i + b for i, byte in enumerate(bm) for b in range(8) if byte >> b & 1}

    def post(self, n: int) -> list[int]:
        heads = [self.eventq.add([], [8]) for _ in range(n)]
        self.eventq.notify()
        return heads

    def events(self) -> list[tuple[int, int, int]]:
        out = []
        for head, length in self.eventq.get_used():
            assert length == 8
            out.append(struct.unpack("<HHi", self.eventq.chain_data(head)))
        return out


def test_devices_follow_the_gpu():
    with vmmpy.Machine(gpu=True, input=True) as m:
        assert [d for _, d in find_devices(m)] == [GPU_ID, INPUT_ID, INPUT_ID]
    with vmmpy.Machine() as m:
        assert find_devices(m) == []
        with pytest.raises(vmmpy.NotSupported, match=r"the VM has no input devices \(vmm_add_input\)"):
            m.keyboard.press("a")


def test_config_space_identity():
    with vmmpy.Machine(input=True) as m:
        kbd, tab = Input(m, KBD, init=False), Input(m, TAB, init=False)
        assert kbd.dev.device_features() >> 32 & 1  # VERSION_1
        assert kbd.select(ID_NAME) == b"vmmpy keyboard"
        assert tab.select(ID_NAME) == b"vmmpy tablet"
        assert kbd.select(ID_SERIAL) == b"vmmpy-kbd-0"
        assert tab.select(ID_SERIAL) == b"vmmpy-tablet-0"
        assert struct.unpack("<4H", kbd.select(ID_DEVIDS)) == (6, 0x766D, 1, 1)
        assert struct.unpack("<4H", tab.select(ID_DEVIDS)) == (6, 0x766D, 2, 1)
        assert kbd.select(PROP_BITS) == b"" and tab.select(PROP_BITS) == b""
        assert kbd.select(0) == b"" and kbd.select(0x7F) == b""  # UNSET, unknown
        assert kbd.select(ID_NAME, 1) == b""  # subsel must be 0
        # the driver cannot write size or u
        kbd.select(ID_NAME)
        kbd.dev.config_write(2, 0, 1)
        kbd.dev.config_write(8, 0x41424344, 4)
        assert kbd.dev.config_read(2, 1) == 14 and kbd.dev.config_read(8, 1) == ord("v")


def test_config_space_event_bits():
    with vmmpy.Machine(input=True) as m:
        kbd, tab = Input(m, KBD, init=False), Input(m, TAB, init=False)
        assert kbd.bits(EV_SYN) == {0} and tab.bits(EV_SYN) == {0}
        keys = kbd.bits(EV_KEY)
        assert keys == set(range(1, 249))
        assert {c for c, _ in KEYMAP.values()} | set(KEYS.values()) <= keys  # everything vmmpy.input can send
        assert kbd.bits(EV_LED) == {0, 1, 2}
        assert kbd.select(EV_BITS, EV_REP) == b"\0"  # supported (size 1), no codes
        assert kbd.select(EV_BITS, EV_ABS) == b"" and kbd.select(EV_BITS, EV_REL) == b""
        assert tab.bits(EV_KEY) == {BTN_LEFT, BTN_RIGHT, BTN_MIDDLE}
        assert tab.bits(EV_REL) == {6, 8}
        assert tab.bits(EV_ABS) == {0, 1}
        assert tab.select(EV_BITS, EV_LED) == b"" and tab.select(EV_BITS, EV_REP) == b""
        for axis in (0, 1):
            assert struct.unpack("<5I", tab.select(ABS_INFO, axis)) == (0, 32767, 0, 0, 0)
        assert tab.select(ABS_INFO, 2) == b"" and kbd.select(ABS_INFO, 0) == b""


def test_events_are_delivered_into_posted_buffers():
    with vmmpy.Machine(input=True) as m:
        kbd = Input(m, KBD)
        kbd.dev.enable_irq()
        kbd.post(8)
        m.keyboard.press("a")
        assert kbd.events() == [(EV_KEY, 30, 1), (EV_SYN, 0, 0)]
        assert kbd.dev.interrupt_status() & 1 and m.irq_line(0)
        kbd.dev.ack()
        m.keyboard.release("A")  # a shifted character: a up, then shift up
        assert kbd.events() == [(EV_KEY, 30, 0), (EV_SYN, 0, 0), (EV_KEY, 42, 0), (EV_SYN, 0, 0)]
        assert m.keyboard.stats() == vmmpy.input.InputStats(delivered=6, pending=0, dropped=0)

        tab = Input(m, TAB)
        tab.post(16)
        m.tablet.screen_size = (1281, 801)
        m.tablet.click(640, 800)
        assert tab.events() == [
            (EV_ABS, 0, 16384),
            (EV_ABS, 1, 32767),
            (EV_SYN, 0, 0),
            (EV_KEY, BTN_LEFT, 1),
            (EV_SYN, 0, 0),
            (EV_KEY, BTN_LEFT, 0),
            (EV_SYN, 0, 0),
        ]
        m.tablet.scroll(-2)
        assert tab.events() == [(EV_REL, 8, -2), (EV_SYN, 0, 0)]


def test_a_report_waits_for_its_syn_and_for_buffers():
    with vmmpy.Machine(input=True) as m:
        m.keyboard.type("x")  # before the driver exists: queued
        assert m.keyboard.stats().pending == 4
        kbd = Input(m, KBD)  # DRIVER_OK with no buffers yet
        kbd.post(3)
        assert kbd.events() == [(EV_KEY, 45, 1), (EV_SYN, 0, 0), (EV_KEY, 45, 0)]
        assert m.keyboard.stats().pending == 1
        kbd.post(1)
        assert kbd.events() == [(EV_SYN, 0, 0)]
        m.keyboard.event(EV_KEY, 31, 1)  # no SYN: not delivered yet
        kbd.post(2)
        assert kbd.events() == []
        m.keyboard.sync()
        assert kbd.events() == [(EV_KEY, 31, 1), (EV_SYN, 0, 0)]


def test_overflow_drops_the_oldest_reports_and_counts_them():
    with vmmpy.Machine(input=True) as m:
        for i in range(2100):  # 4200 events: the first 52 reports (104 events) go
            m.keyboard.event(EV_KEY, 2 + i % 10, 1)
            m.keyboard.sync()
        st = m.keyboard.stats()
        assert (st.delivered, st.pending, st.dropped) == (0, 4096, 104)
        kbd = Input(m, KBD)
        kbd.post(2)
        assert kbd.events() == [(EV_KEY, 2 + 52 % 10, 1), (EV_SYN, 0, 0)]


def test_invalid_events_are_refused():
    with vmmpy.Machine(input=True) as m:
        with pytest.raises(vmmpy.InvalidArgument, match="keyboard: event type 1 code 272 is not supported"):
            m.keyboard.event(EV_KEY, BTN_LEFT, 1)  # not a keyboard key
        with pytest.raises(vmmpy.InvalidArgument, match="tablet: event type 1 code 30 is not supported"):
            m.tablet.event(EV_KEY, 30, 1)
        with pytest.raises(vmmpy.InvalidArgument, match=r"tablet: absolute value 40000 outside 0\.\.32767"):
            m.tablet.event(EV_ABS, 0, 40000)
        with pytest.raises(vmmpy.InvalidArgument, match="keyboard: event type 17 code 0 is not supported"):
            m.keyboard.event(EV_LED, 0, 1)
        with pytest.raises(vmmpy.InvalidArgument, match="no key for 'é' on a US layout"):
            m.keyboard.type("é")
        assert m.keyboard.stats().pending == 0


def test_leds_from_the_status_queue():
    with vmmpy.Machine(input=True) as m:
        kbd = Input(m, KBD)
        assert m.keyboard.leds == set()
        kbd.statusq.add([struct.pack("<HHi", EV_LED, 1, 1)], [])
        kbd.statusq.add([struct.pack("<HHi", EV_LED, 0, 1)], [])
        kbd.statusq.notify()
        assert len(kbd.statusq.get_used()) == 2
        assert m.keyboard.leds == {"capslock", "numlock"}
        kbd.statusq.add([struct.pack("<HHi", EV_LED, 0, 0)], [])
        kbd.statusq.notify()
        assert m.keyboard.leds == {"capslock"}
        kbd.dev.reset()
        assert m.keyboard.leds == set()


def test_short_event_buffer_needs_reset():
    with vmmpy.Machine(input=True) as m:
        kbd = Input(m, KBD)
        kbd.eventq.add([], [4])
        kbd.eventq.notify()
        m.keyboard.press("a")
        assert kbd.dev.needs_reset()
        assert m.keyboard.stats().pending == 2  # nothing lost


# ---- tier 2: guest/input_echo.c ----
ECHO_RE = re.compile(r"^input: (kbd|tab) type=(\d+) code=(\d+) value=(-?\d+)\r?$", re.M)


def echo_events(text: str, dev: str) -> list[tuple[int, int, int]]:
    return [(int(t), int(c), int(v)) for d, t, c, v in ECHO_RE.findall(text) if d == dev]


def expected_typing(text: str) -> list[tuple[int, int, int]]:
    out = []
    for ch in text:
        code, shift = KEYMAP[ch]
        seq = [(42, 1), (code, 1), (code, 0), (42, 0)] if shift else [(code, 1), (code, 0)]
        for c, v in seq:
            out += [(EV_KEY, c, v), (EV_SYN, 0, 0)]
    return out


def wait_leds(m: vmmpy.Machine, want: set[str], timeout: float = 10.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while m.keyboard.leds != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return m.keyboard.leds


def test_input_echo_round_trip(guest):
    with vmmpy.Machine(guest("input_echo"), gpu=True, gpu_size=(1024, 768), input=True) as m:
        m.keyboard.type("Hel")  # before the start: queued until the guest posts buffers
        m.start()
        m.serial.expect(r"input_echo: ready", timeout=30)
        assert wait_leds(m, {"capslock"}) == {"capslock"}  # set by the guest through statusq
        m.keyboard.type("lo, World!\n")
        m.tablet.move(1023, 0)
        m.tablet.click(512, 384)
        m.keyboard.tap("esc")
        m.serial.expect(r"PASS input_echo", timeout=30)
        res = m.wait(timeout=30)
        assert res.ok, res
        text = m.serial.text
        assert m.keyboard.stats().dropped == 0 and m.tablet.stats() == vmmpy.input.InputStats(10, 0, 0)
    kbd = echo_events(text, "kbd")
    typed = expected_typing("Hello, World!\n")
    assert kbd[: len(typed)] == typed
    # "H": shift down, h down, h up, shift up, each followed by SYN_REPORT
    assert kbd[:8:2] == [(EV_KEY, 42, 1), (EV_KEY, 35, 1), (EV_KEY, 35, 0), (EV_KEY, 42, 0)]
    assert (EV_KEY, 2, 1) in kbd and kbd[kbd.index((EV_KEY, 2, 1)) - 2] == (EV_KEY, 42, 1)  # "!" is shift+1
    assert kbd[len(typed) : len(typed) + 2] == [(EV_KEY, 1, 1), (EV_SYN, 0, 0)]  # KEY_ESC ends it
    x, y = round(512 * 32767 / 1023), round(384 * 32767 / 767)
    assert echo_events(text, "tab") == [
        (EV_ABS, 0, 32767),
        (EV_ABS, 1, 0),
        (EV_SYN, 0, 0),
        (EV_ABS, 0, x),
        (EV_ABS, 1, y),
        (EV_SYN, 0, 0),
        (EV_KEY, BTN_LEFT, 1),
        (EV_SYN, 0, 0),
        (EV_KEY, BTN_LEFT, 0),
        (EV_SYN, 0, 0),
    ]


@pytest.mark.parametrize("deterministic", [False, True])
def test_wait_frame_then_inject_reaches_the_guest(guest, deterministic):
    """No race between a frame and input sent right after waiting for it."""
    kw = {"gpu": True, "gpu_size": (320, 240), "input": True, "deterministic": deterministic}
    with vmmpy.Machine(guest("input_echo"), **kw) as m:
        m.screen.wait_frame(1, timeout=30)
        m.keyboard.tap("z", at_ns=m.clock_ns if deterministic else None)
        m.serial.expect(r"code=44 value=0", timeout=30)
        n = m.screen.wait_frame(2, timeout=30)
        m.tablet.click(1, 1)
        m.serial.expect(r"code=272 value=0", timeout=30)
        m.screen.wait_frame(n + 1, timeout=30)
        m.keyboard.tap("esc")
        assert m.wait(timeout=30).ok


def test_input_event_at_in_real_time_is_immediate():
    with vmmpy.Machine(input=True) as m:
        m.keyboard.press("a", at_ns=10**15)  # ignored in real-time mode: queued now
        assert m.keyboard.stats().pending == 2
        with pytest.raises(vmmpy.InvalidArgument, match=r"at_ns must be >= 0 \(got -1\)"):
            m.keyboard.press("a", at_ns=-1)


def test_deterministic_events_wait_for_their_time(guest):
    """vmm_input_event_at: a deterministic VM keeps events until its clock reaches their time, then delivers
    them in the order sent (the guest only sleeps in WFI; the test is the driver)."""
    with vmmpy.Machine(guest("idle_notick"), input=True, deterministic=True) as m:
        kbd = Input(m, KBD)
        kbd.post(8)
        m.keyboard.press("b", at_ns=2_000_000)
        m.keyboard.press("a", at_ns=1_000_000)
        m.keyboard.release("a", at_ns=1_000_000)  # same time: after the press, in the order sent
        assert kbd.events() == [] and m.keyboard.stats().pending == 0  # scheduled, not pending yet
        with pytest.raises(vmmpy.InvalidArgument, match="at_ns"):
            m.keyboard.press("a", at_ns=-1)
        # the clock moves (a stop at a round boundary; input due at that time enters in the next round)
        m.stop_at(1_000_000)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED and m.clock_ns == 1_000_000
        assert kbd.events() == []  # not before its time
        m.stop_at(1_000_001)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        ev_key, key_a, key_b, syn = 1, 30, 48, (0, 0, 0)
        assert kbd.events() == [(ev_key, key_a, 1), syn, (ev_key, key_a, 0), syn]  # at 1 ms, in the order sent; not "b"
        m.stop_at(2_000_000)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        assert kbd.events() == []
        m.stop_at(2_000_001)
        assert m.run(timeout=30).reason == vmmpy.RunReason.STOPPED
        assert kbd.events() == [(ev_key, key_b, 1), syn]


def test_deterministic_schedule_is_bounded():
    with vmmpy.Machine(input=True, deterministic=True) as m:
        for i in range(65536):
            m.tablet.event(EV_REL, 8, 1, at_ns=i)
        with pytest.raises(vmmpy.errors.OutOfMemory, match="65536 events scheduled"):
            m.tablet.event(EV_REL, 8, 1, at_ns=0)


def test_deterministic_input_beyond_the_queue_is_never_dropped(guest):
    """1100 characters due at once (4400 events, more than the 4096-event queue): whole reports that do
    not fit wait for later rounds instead of pushing older ones out; the run is reproducible."""
    runs = []
    for _ in range(2):
        with vmmpy.Machine(guest("input_echo"), input=True, deterministic=True) as m:
            m.keyboard.type("a" * 1100, at_ns=1_000_000)
            m.keyboard.tap("esc", at_ns=1_000_000)
            res = m.run(timeout=60)
            assert res.ok, (res, m.serial.text[-500:])
            st = m.keyboard.stats()
            assert st.dropped == 0 and st.pending == 0
            assert st.delivered == 1100 * 4 + 2 or st.delivered == 1100 * 4 + 4, st
            runs.append(m.serial.data)
    assert runs[0] == runs[1]
    kbd = echo_events(runs[0].decode(), "kbd")
    assert kbd[: 1100 * 4] == expected_typing("a" * 1100)
    assert kbd[1100 * 4] == (EV_KEY, 1, 1)  # then esc


def test_stop_at_ends_the_run_exactly_there(guest):
    """vmm_stop_at: STOPPED with the virtual clock exactly at the time, for an idle guest with no timer
    (the clock jumps there) and for a busy one (the last round is cut short)."""
    for name, at in (("idle_notick", 5_000_000), ("input_echo", 3_000_123)):
        with vmmpy.Machine(guest(name), input=True, deterministic=True) as m:
            m.stop_at(at)
            res = m.run(timeout=30)
            assert res.reason == vmmpy.RunReason.STOPPED and m.clock_ns == at, (name, res, m.clock_ns)
            m.start(timeout=0.5)  # disarmed once reached: the next run goes on until its timeout
            assert m.wait().reason == vmmpy.RunReason.TIMEOUT
    with vmmpy.Machine(guest("hello")) as m, pytest.raises(vmmpy.StateError, match="needs deterministic mode"):
        m.stop_at(1000)  # real time: vmm_request_stop() / m.stop() instead


def test_stop_at_wakes_an_idle_loop(guest):
    """Set while the deterministic loop sleeps (idle guest, nothing scheduled): it wakes and jumps there."""
    with vmmpy.Machine(guest("idle_notick"), deterministic=True) as m:
        m.start(timeout=30)
        m.serial.expect("idle: ready, no timer", timeout=30)
        at = m.clock_ns + 1_000_000
        m.stop_at(at)
        assert m.wait(timeout=10).reason == vmmpy.RunReason.STOPPED and m.clock_ns == at
