"""Loads the compiled libvmm extension (after the libunicorn it links against)."""

from __future__ import annotations

import ctypes

from vmmpy import _unicorn


def _preload_unicorn() -> str:
    # The extension names libunicorn by soname only; load the copy VMMPY_UNICORN selects first (our
    # patched build when present, else the unicorn wheel's) so the dynamic linker finds it mapped.
    which, path = _unicorn.choose()
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return which


UNICORN = _preload_unicorn()  # "patched" or "wheel"

try:
    from vmmpy._vmm import ffi, lib
except ImportError as e:  # one clear line for a missing or broken build, whatever the import machinery said
    raise ImportError(f"vmmpy's compiled libvmm (vmmpy._vmm) cannot be loaded: {e}") from e

__all__ = ["UNICORN", "ffi", "lib"]
