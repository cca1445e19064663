"""Tier 1: the deterministic clock across run boundaries.

A deterministic run may end in the middle of a round (a timeout or a stop request): the instructions the
vCPU ran in that partial round are virtual time (1 ns each) and stay on the clock, so that CNTVCT never
moves backwards when the next run starts or the host moves the clock (vmm_clock_advance).
"""

from __future__ import annotations

import vmmpy
from tests.conftest import code
from vmmpy import RunReason

NS_PER_TICK = 16
QUANTUM = 100_000  # instructions per vCPU per deterministic round (csrc/core/run.c)

# A guest that reads CNTVCT in a loop, counts every read lower than the one before at [x5] and keeps the
# last read at [x5 + 8] (x5 = the blob's start + 0x100):
#   adr x5, .+0x100; loop: mrs x1, cntvct_el0; cmp x1, x2; b.hs 1f; add x3, x3, #1; str x3, [x5]
#   1: mov x2, x1; str x2, [x5, #8]; b loop
CNTVCT_WATCHER = code(
    0x10000805, 0xD53BE041, 0xEB02003F, 0x54000062, 0x91000463, 0xF90000A3, 0xAA0103E2, 0xF90004A2, 0x17FFFFF9
)  # fmt: skip
DATA_OFFSET = 0x100


def _session(path: str, steps) -> list[tuple]:
    """Run `steps` (("timeout", s), ("stop", s), ("stop_at", ns) or ("advance", ns)) on one vCPU; after each,
    check the clock against the instructions run and record what the host and the guest see."""
    seen = []
    with vmmpy.Machine(path, kernel_format="raw", deterministic=True) as m:
        data = m.boot_info().entry + DATA_OFFSET
        advanced = 0
        last_cntvct = 0
        for kind, arg in steps:
            if kind == "advance":
                m.clock_advance(arg)
                advanced += arg
            elif kind == "stop_at":
                m.stop_at(arg)
                assert m.run(timeout=30).reason == RunReason.STOPPED
            elif kind == "stop":
                m.start(timeout=30)
                # wait (without sleeping) until the guest has run: its last CNTVCT read moves
                while m.running and int.from_bytes(m.read_memory(data + 8, 8), "little") <= last_cntvct:
                    pass
                assert m.stop().reason == RunReason.STOPPED
            else:
                assert m.run(timeout=arg).reason == RunReason.TIMEOUT
            insns = m.stats()["insns"]
            # virtual time is the instructions actually run (1 ns each) plus what the host added, less what
            # vCPU 0 overshot each quantum by: a block that starts before the budget's end runs whole (the
            # loop's blocks are at most 8 instructions long). A dropped partial round lagged by up to 100,000.
            lag = insns + advanced - m.clock_ns
            assert 0 <= lag <= 7 * (insns // QUANTUM + 1), (kind, arg, lag)
            cntvct = m.sysreg_read("CNTVCT_EL0")
            assert cntvct == m.clock_ns // NS_PER_TICK
            assert cntvct >= last_cntvct, f"CNTVCT moved backwards after {kind} {arg}: {last_cntvct} -> {cntvct}"
            last_cntvct = cntvct
            backwards, guest_last = (int.from_bytes(m.read_memory(data + o, 8), "little") for o in (0, 8))
            assert backwards == 0, f"the guest saw CNTVCT move backwards {backwards} times"
            assert guest_last <= cntvct
            seen.append((m.clock_ns, insns, cntvct, guest_last))
    return seen


def test_cntvct_is_monotonic_across_runs_that_end_mid_round(raw_guest):
    """Short timeouts and stop requests end runs partway through a 100,000-instruction round; between runs
    the host moves the clock. Before the fix the partial round was dropped from the clock and the guest's
    CNTVCT went back by up to a quantum (~3,500 ticks seen) at the next run or clock_advance."""
    path = raw_guest(CNTVCT_WATCHER)
    steps = [("timeout", 0.02), ("advance", 16), ("timeout", 0.01), ("stop", 0), ("advance", 1600)]
    steps += [("stop", 0), ("timeout", 0.03), ("timeout", 0.01), ("advance", 5)]
    _session(path, steps)


def test_identical_deterministic_sessions_see_identical_clocks(raw_guest):
    """The same runs (vmm_stop_at at times that are not quantum multiples, clock moves between) give the
    same clock, instruction count and guest-observed CNTVCT in two sessions."""
    path = raw_guest(CNTVCT_WATCHER)
    steps = [("stop_at", 123_457), ("advance", 16), ("stop_at", 250_001), ("advance", 1601), ("stop_at", 777_777)]
    a = _session(path, steps)
    assert a == _session(path, steps)
    assert a[-1][0] == 777_777
