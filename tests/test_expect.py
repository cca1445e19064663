"""Tier 2: Serial.expect like pexpect — pattern lists, fail_on, TIMEOUT / EOF as outcomes, str and bytes."""

from __future__ import annotations

import re

import pytest

import vmmpy

from .conftest import B_SELF, PRINT_X, SYSTEM_OFF, code

HELLO = "Hello from vmmpy guest!"


def test_a_list_returns_which_pattern_matched_and_the_match(machine, guest):
    m = machine(guest("hello"))
    # a pattern ending in \w+ would match "v" of a partly arrived "vmmpy" (as with pexpect): end it on a space
    r = m.serial.expect([r"never printed", rb"Hello from (\w+) "], timeout=10)
    assert isinstance(r, vmmpy.ExpectResult)
    assert r.index == 1 and r.pattern == rb"Hello from (\w+) "
    assert r.match.group(1) == b"vmmpy" and r.text == "Hello from vmmpy "
    idx, match = r  # unpacks as (index, match)
    assert idx == 1 and match is r.match
    # the next expect goes on after the match; `before` is what came between
    r2 = m.serial.expect([re.compile(r"DTB=0X([0-9A-F]+)", re.I), vmmpy.EOF], timeout=10)
    assert r2.index == 0 and r2.before == b"guest!\r\n"


def test_the_earliest_match_in_the_output_wins_then_the_lowest_index(machine, guest):
    m2 = machine(guest("hello"))
    r = m2.serial.expect(["dtb=", "guest!", "Hello"], timeout=10)
    assert r.index == 2  # "Hello" comes first in the output although listed last
    m3 = machine(guest("hello"))
    r = m3.serial.expect(["Hel", "Hello"], timeout=10)
    assert r.index == 0  # same start: the first listed


def test_eof_listed_is_an_outcome(machine, guest):
    m = machine(guest("hello"))
    r = m.serial.expect(["never printed", vmmpy.EOF], timeout=10)
    assert r.index == 1 and r.pattern is vmmpy.EOF and r.match is None and r.text == ""
    assert HELLO.encode() in r.before
    assert m.wait(timeout=10).ok
    # the output was consumed: a further EOF expect sees nothing new
    assert m.serial.expect([vmmpy.EOF, "x"], timeout=1).before == b""


def test_timeout_listed_is_an_outcome(machine, raw_guest):
    m = machine(raw_guest(code(*PRINT_X, B_SELF)), kernel_format="raw")
    r = m.serial.expect(["never printed", vmmpy.TIMEOUT], timeout=0.3)
    assert r.index == 1 and r.pattern is vmmpy.TIMEOUT and r.match is None and r.before == b"X"
    assert m.serial.expect("X", timeout=5).group() == b"X"  # a timeout consumes nothing


def test_unlisted_timeout_and_eof_still_raise(machine, guest, raw_guest):
    m = machine(raw_guest(code(*PRINT_X, B_SELF)), kernel_format="raw")
    with pytest.raises(vmmpy.SerialTimeout, match=r"no match for b'a' or b'b' within 0.2 s"):
        m.serial.expect(["a", "b", vmmpy.EOF], timeout=0.2)
    h = machine(guest("hello"))
    with pytest.raises(vmmpy.SerialEOF, match=r"before b'never' appeared"):
        h.serial.expect(["never", vmmpy.TIMEOUT], timeout=10)


def test_fail_on_fails_at_once_with_the_transcript(machine, guest):
    m = machine(guest("hello"))
    with pytest.raises(vmmpy.SerialFailure) as ei:
        m.serial.expect("dtb=", timeout=10, fail_on=["Kernel panic", r"vmmpy g\w+!"])  # ends on "!": whole word
    e = ei.value
    assert isinstance(e, AssertionError)  # a test fails (not errors)
    assert e.pattern == rb"vmmpy g\w+!" and e.match.group() == b"vmmpy guest!"
    assert HELLO in e.transcript and "(fail_on)" in str(e) and HELLO in str(e)


def test_fail_on_does_not_fire_when_the_expected_text_comes_first(machine, guest):
    m = machine(guest("hello"))
    assert m.serial.expect("Hello", timeout=10, fail_on="dtb=").group() == b"Hello"
    with pytest.raises(vmmpy.SerialFailure):
        m.serial.expect([vmmpy.EOF], timeout=10, fail_on=b"dtb=")


def test_fail_on_containing_the_expected_text_still_fails(machine, guest):
    m = machine(guest("hello"))
    with pytest.raises(vmmpy.SerialFailure):
        m.serial.expect("guest", timeout=10, fail_on="Hello from vmmpy guest")


def test_str_bytes_and_compiled_patterns(machine, guest):
    m = machine(guest("hello"))
    assert m.serial.expect("Hello", timeout=10).group() == b"Hello"  # single: a re.Match, as before
    assert m.serial.expect(b"vmmpy", timeout=10).group() == b"vmmpy"
    assert m.serial.expect(re.compile("GUEST", re.I), timeout=10).group() == b"guest"
    assert m.serial.expect([re.compile(rb"dtb=0x[0-9a-f]+")], timeout=10).index == 0


def test_pattern_list_mistakes(machine, raw_guest):
    m = machine(raw_guest(code(*SYSTEM_OFF)), kernel_format="raw")
    with pytest.raises(ValueError, match="at least one pattern"):
        m.serial.expect([])
    with pytest.raises(ValueError, match="not only vmmpy.TIMEOUT"):
        m.serial.expect([vmmpy.TIMEOUT])
    with pytest.raises(TypeError, match="pattern lists"):
        m.serial.expect(vmmpy.EOF)
    with pytest.raises(TypeError, match="not int"):
        m.serial.expect([1])
    assert repr(vmmpy.TIMEOUT) == "vmmpy.TIMEOUT"
