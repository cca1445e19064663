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

from vmmpy._vmm import ffi, lib  # noqa: E402

__all__ = ["UNICORN", "ffi", "lib"]
