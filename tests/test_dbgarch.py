"""Tier 2, soft backend: the guest's own debug architecture and PMU beyond what the guest table judges.

The table (tests/guests.py: dbgexc, pmu, idregs) runs the same checks on vmmpy and QEMU. Here: what
QEMU 7.2 does not do (the OS lock holding off debug exceptions), what only vmmpy promises (the cycle
counter in deterministic mode), and that the watchpoint machinery leaves no trace once disarmed.
"""

from __future__ import annotations

import re

import pytest

from . import guests as table

BACKENDS = ["soft", "soft-threaded"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_os_lock_and_unprivileged_watchpoints(machine, backend):
    # what dbgexc reports without judging (QEMU 7.2 or nested KVM differ), judged for vmmpy:
    # Arm ARM D2.5 (AArch64.GenerateDebugExceptionsFrom): no breakpoint exception while OSLSR_EL1.OSLK is set
    m = machine(table.elf(table.BY_ID["dbgexc"]), backend=backend)
    res = m.run(timeout=60)
    assert res.ok, m.serial.text
    text = m.serial.text.replace("\r", "")
    assert "dbgexc: OS lock: breakpoint held off" in text
    # an unprivileged store at EL1 matches an EL0-only watchpoint (Arm ARM D2.10.4; QEMU TCG agrees)
    assert "dbgexc: sttr at EL1: EL0 watchpoint taken" in text
    # and the OS lock is set after a cold reset (OSLSR_EL1.OSLK, OSLM 0b10): no debug exception until the OS clears it
    assert "dbgexc: OSLSR_EL1 0xa at reset" in text


def cycles_line(text: str) -> int:
    m = re.search(r"^pmu: 1000 loop iterations took (\d+) cycles$", text.replace("\r", ""), re.M)
    assert m, text
    return int(m.group(1))


@pytest.mark.parametrize("model", [None, "max"])
def test_cycle_counter_is_deterministic(machine, model):
    # the cycle counter counts instructions retired: the same guest gives the same counts, run after run
    texts = []
    for _ in range(2):
        m = machine(table.elf(table.BY_ID["pmu"]), deterministic=True, cpu_model=model)
        res = m.run(timeout=60)
        assert res.ok, m.serial.text
        texts.append(m.serial.text)
    assert texts[0] == texts[1]
    # spin(1000): a volatile counter's load, add, store, compare and branch per iteration
    assert 1000 * 4 <= cycles_line(texts[0]) <= 1000 * 20
