"""vmmpy: boot, watch and test aarch64 guests from Python."""

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
    SerialTimeout,
    StateError,
    VmmError,
)
from vmmpy.machine import BootInfo, Machine, RunReason, RunResult, Serial, parse_size
from vmmpy.screen import Screen, ScreenInfo

__version__ = "0.1.0"

__all__ = [
    "ArchError",
    "BackendError",
    "BackendUnavailable",
    "BootInfo",
    "Busy",
    "DoesNotFit",
    "FormatError",
    "InvalidArgument",
    "KernelNotFound",
    "Machine",
    "NotSupported",
    "RunReason",
    "RunResult",
    "Screen",
    "ScreenEOF",
    "ScreenInfo",
    "ScreenTimeout",
    "Serial",
    "SerialEOF",
    "SerialTimeout",
    "StateError",
    "VmmError",
    "parse_size",
]
