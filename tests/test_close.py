"""Tier 2: Machine.close() fences off every other thread's call into libvmm (issue 15, item 7).

close() marks the machine closing (new calls raise StateError), stops the run, waits for the calls
already inside libvmm to return, and only then frees the VM: no thread ever uses a freed VM. A crash
would kill the interpreter, so the races run in a child process.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest

import vmmpy

ROOT = os.environ.get("VMMPY_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAMMER = textwrap.dedent(
    """
    import random, sys, threading, time
    import vmmpy

    kernel, iterations = sys.argv[1], int(sys.argv[2])
    outcomes = {"closed": 0}
    for i in range(iterations):
        m = vmmpy.Machine(kernel, input=True, gpu=True, gpu_size=(64, 48))
        if i % 2:
            m.start()
        go = threading.Event()

        def hammer(m=m):
            go.set()
            try:
                while True:
                    m.keyboard.tap("a")
                    m.tablet.move(3, 4)
                    m.serial.write(b"x")
                    m.serial.read()
                    m.screen.info()
                    m.stats()
                    m.clock_ns
            except vmmpy.StateError as e:
                assert "closed" in str(e), e
                outcomes["closed"] += 1

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(random.random() * 0.004)
        m.close()
        for t in threads:
            t.join()
    print("ok", outcomes["closed"])
    """
)


def test_close_while_other_threads_call_into_libvmm(guest):
    p = subprocess.run(
        [sys.executable, "-c", HAMMER, guest("hello"), "150"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    assert p.stdout.split() == ["ok", "300"], p.stdout


def test_calls_after_close_raise_state_error(guest):
    m = vmmpy.Machine(guest("hello"), input=True)
    m.close()
    for call in (lambda: m.keyboard.tap("a"), lambda: m.serial.write(b"x"), m.stats, lambda: m.clock_ns, m.start):
        with pytest.raises(vmmpy.StateError, match="closed"):
            call()
    assert m.serial.text == "" and m.stop() is None
    m.close()  # twice is fine


def test_every_libvmm_call_with_the_vm_goes_through_the_guard():
    """In the binding modules, `._vm` is read only by Machine's guard (_call, _checked), create (and restore:
    _init_host_side, _attach) and close."""
    allowed = {"__init__", "_init_host_side", "_attach", "close", "_call", "_checked", "_enter"}
    for mod in ("machine", "screen", "input"):
        path = os.path.join(ROOT, "vmmpy", f"{mod}.py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        bad = []

        def visit(node, func, mod=mod, bad=bad):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = node.name
            if isinstance(node, ast.Attribute) and node.attr == "_vm" and func not in allowed:
                bad.append(f"vmmpy/{mod}.py:{node.lineno} in {func}()")
            for child in ast.iter_child_nodes(node):
                visit(child, func)

        visit(tree, None)
        assert not bad, "libvmm called outside Machine._call/_checked: " + ", ".join(bad)


def test_cli_events_typing_while_the_guest_powers_off(tmp_path, guest):
    """The scenario of the issue: a long `type` line still running when the guest ends and the CLI exits."""
    script = tmp_path / "ev.txt"
    script.write_text("type " + "a" * 2_000_000 + "\n")
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-m", "vmmpy", "run", guest("hello"), "--events", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        assert "Traceback" not in p.stderr and p.stderr == "", p.stderr[-3000:]
