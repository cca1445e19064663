"""tools/mutate.py's test runner for one slot: a Python that has imported pytest and vmmpy's Python modules
(never the C extension) once, and forks a child per mutant that runs pytest.main() on the tests asked for.

A fresh `python -m pytest` costs ~0.55 s here before the first test runs (interpreter, pytest, our plugin,
collection); a fork of this process ~0.15 s, and most killed mutants need one test of a few tens of ms.
The child imports vmmpy._vmm itself, from this slot's package, so it loads the mutant's library as it is
on disk then. Started with its slot's package as the working directory and first on PYTHONPATH.

Protocol (a JSON line each way): mutate.py writes {"args": [pytest arguments], "limits": {node id: seconds}};
the server answers {"pid": child} at once (its own session, for the run's time limit) and {"rc": exit
status} when it ends. A test that runs past its own limit (a hung mutant) ends the child by SIGALRM, whose
default action ends the process whichever thread is stuck: vCPU threads block it (run.c), so the kernel
delivers it to the test's thread. A run of many tests then costs the hung test's limit, not the run's.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

import vmmpy  # noqa: F401  (the Python side only: vmmpy imports its extension lazily)
import vmmpy.pytest_plugin  # noqa: F401

if "vmmpy._vmm" in sys.modules:  # the children would all share the unmutated library
    sys.exit("mutate_server: vmmpy._vmm was imported before the fork")


class Watchdog:
    """Each test's own time limit (an interval timer; SIGALRM left at its default action)."""

    def __init__(self, limits: dict[str, float]):
        self.limits = limits

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        limit = self.limits.get(item.nodeid)
        if limit:
            signal.setitimer(signal.ITIMER_REAL, limit)
        yield
        signal.setitimer(signal.ITIMER_REAL, 0)


def child(args: list[str], limits: dict[str, float]) -> None:
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        rc = int(pytest.main(args, plugins=[Watchdog(limits)]))
    except BaseException:
        rc = 99
    os._exit(rc)


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(req["args"], req.get("limits", {}))
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
