"""Which libunicorn vmmpy loads: our patched build (third_party/unicorn/) or the unicorn wheel's.

tools/build_unicorn.py builds the patched library into build/unicorn/<key>/, where the key is a
hash of the Unicorn version and the patch files, so a changed patch is a new build and a clean clone
builds once. VMMPY_UNICORN selects: ``auto`` (the default: patched when built, else the wheel's),
``wheel`` or ``patched`` (an error when it is not built). libvmm finds out at run time which one it
got (csrc/backend/soft_engine.c), so one extension runs on both.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

VERSION = "2.1.4"
# the source tree (tools/asan.sh and portable.sh run a copy of vmmpy from build/ with VMMPY_ROOT set)
ROOT = os.environ.get("VMMPY_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH_DIR = os.path.join(ROOT, "third_party", "unicorn")
LIB_NAME = "libunicorn.2.dylib" if sys.platform == "darwin" else "libunicorn.so.2"
CHOICES = ("auto", "wheel", "patched")


def patches() -> list[str]:
    """The patch files, in the order they are applied."""
    if not os.path.isdir(PATCH_DIR):
        return []
    return sorted(os.path.join(PATCH_DIR, f) for f in os.listdir(PATCH_DIR) if f.endswith(".patch"))


def key() -> str:
    h = hashlib.sha256(VERSION.encode())
    for p in patches():
        with open(p, "rb") as f:
            h.update(os.path.basename(p).encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def patched_dir() -> str:
    return os.path.join(ROOT, "build", "unicorn", key())


def patched_lib() -> str | None:
    """The patched library if it is built for the current patch files, else None."""
    path = os.path.join(patched_dir(), LIB_NAME)
    return path if patches() and os.path.exists(path) else None


def wheel_lib() -> str:
    spec = importlib.util.find_spec("unicorn")
    if spec is None or spec.origin is None:
        raise ImportError(f"vmmpy needs the 'unicorn' package (pip install unicorn=={VERSION})")
    path = os.path.join(os.path.dirname(spec.origin), "lib", LIB_NAME)
    if not os.path.exists(path):
        raise ImportError(f"the unicorn package has no {path}; reinstall unicorn=={VERSION}")
    return path


def choose() -> tuple[str, str]:
    """(which, path): the library VMMPY_UNICORN selects, "patched" or "wheel"."""
    want = os.environ.get("VMMPY_UNICORN", "auto") or "auto"
    if want not in CHOICES:
        raise ImportError(f"VMMPY_UNICORN={want!r}: expected one of {', '.join(CHOICES)}")
    patched = patched_lib() if want != "wheel" else None
    if want == "patched" and patched is None:
        raise ImportError(
            f"VMMPY_UNICORN=patched but the patched Unicorn is not built in {patched_dir()}: "
            "run python tools/build_unicorn.py (or make unicorn)"
        )
    return ("patched", patched) if patched else ("wheel", wheel_lib())
