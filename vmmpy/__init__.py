"""vmmpy: boot, watch and test aarch64 guests from Python.

Names are imported on first use (PEP 562): ``import vmmpy`` alone (as the pytest plugin does in every run
of an environment where vmmpy is installed) loads neither the C extension nor libunicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vmmpy._outcomes import EOF, TIMEOUT
from vmmpy._version import __version__

_LAZY = {
    **dict.fromkeys(
        [
            "ArchError",
            "BackendError",
            "BackendUnavailable",
            "Busy",
            "DoesNotFit",
            "FormatError",
            "InvalidArgument",
            "KernelNotFound",
            "NotSupported",
            "ScreenEOF",
            "ScreenTimeout",
            "SerialEOF",
            "SerialFailure",
            "SerialTimeout",
            "StateError",
            "VmmError",
        ],
        "vmmpy.errors",
    ),
    **dict.fromkeys(
        ["BootInfo", "ExpectResult", "Machine", "RunReason", "RunResult", "Serial", "parse_size"], "vmmpy.machine"
    ),
    **dict.fromkeys(["Screen", "ScreenInfo"], "vmmpy.screen"),
    **dict.fromkeys(["Network", "NetStats"], "vmmpy.net"),
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from vmmpy.errors import (
        ArchError,
        BackendError,
        BackendUnavailable,
        Busy,
        DoesNotFit,
        FormatError,
        InvalidArgument,
        KernelNotFound,
        NotSupported,
        ScreenEOF,
        ScreenTimeout,
        SerialEOF,
        SerialFailure,
        SerialTimeout,
        StateError,
        VmmError,
    )
    from vmmpy.machine import BootInfo, ExpectResult, Machine, RunReason, RunResult, Serial, parse_size
    from vmmpy.net import NetStats, Network
    from vmmpy.screen import Screen, ScreenInfo


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vmmpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArchError",
    "BackendError",
    "BackendUnavailable",
    "BootInfo",
    "Busy",
    "DoesNotFit",
    "EOF",
    "ExpectResult",
    "FormatError",
    "InvalidArgument",
    "KernelNotFound",
    "Machine",
    "NetStats",
    "Network",
    "NotSupported",
    "RunReason",
    "RunResult",
    "Screen",
    "ScreenEOF",
    "ScreenInfo",
    "ScreenTimeout",
    "Serial",
    "SerialEOF",
    "SerialFailure",
    "SerialTimeout",
    "StateError",
    "TIMEOUT",
    "VmmError",
    "__version__",
    "parse_size",
]
