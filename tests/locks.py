"""Cross-process locks for the few things the suite builds into the shared source tree.

Under pytest-xdist (`pytest -n auto`) several workers may need the same `make` target at once (a
module-scoped fixture runs once per worker, not once per run). make is not safe against itself on the
same output files, so such builds run under an flock on build/.locks/NAME.lock: the first worker builds,
the others wait and then find it up to date. No pytest import: tools/nested.py imports tests/guests.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess

ROOT = os.environ.get("VMMPY_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def exclusive(name: str):
    """Hold build/.locks/<name>.lock (an flock: released even if the holder dies)."""
    d = os.path.join(ROOT, "build", ".locks")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make(*args: str, lock: str, **kw) -> subprocess.CompletedProcess:
    """subprocess.run(["make", *args], capture_output=True, text=True, **kw) under exclusive(lock)."""
    with exclusive(lock):
        return subprocess.run(["make", *args], capture_output=True, text=True, **kw)
