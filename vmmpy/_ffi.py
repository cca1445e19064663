"""Loads the compiled libvmm extension (after the libunicorn it links against)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys


def _preload_unicorn() -> None:
    # The extension names libunicorn by soname only; load the copy that the
    # 'unicorn' wheel ships first so the dynamic linker finds it already mapped.
    spec = importlib.util.find_spec("unicorn")
    if spec is None or spec.origin is None:
        raise ImportError("vmmpy needs the 'unicorn' package (pip install unicorn==2.1.4)")
    name = "libunicorn.2.dylib" if sys.platform == "darwin" else "libunicorn.so.2"  # _build_ffi.unicorn_lib_name()
    path = os.path.join(os.path.dirname(spec.origin), "lib", name)
    if not os.path.exists(path):
        raise ImportError(f"the unicorn package has no {path}; reinstall unicorn==2.1.4")
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_preload_unicorn()

from vmmpy._vmm import ffi, lib  # noqa: E402

__all__ = ["ffi", "lib"]
