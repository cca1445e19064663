"""Exceptions raised by vmmpy; each libvmm error code has its own class. _check() maps return codes to them."""

from __future__ import annotations

from vmmpy._ffi import ffi, lib


class VmmError(Exception):
    """A libvmm call failed. `code` is the VMM_E* value, `name` its name."""

    code = 0
    name = "VMM_E?"

    def __init__(self, message: str, code: int | None = None, name: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if name is not None:
            self.name = name


class InvalidArgument(VmmError, ValueError):
    pass


class OutOfMemory(VmmError, MemoryError):
    pass


class KernelNotFound(VmmError, FileNotFoundError):
    pass


class VmmIOError(VmmError, OSError):
    pass


class FormatError(VmmError, ValueError):
    """The kernel or initrd file is not in a format we understand, or is corrupt."""


class ArchError(FormatError):
    """The file is for another architecture."""


class DoesNotFit(VmmError, ValueError):
    """Something does not fit in guest memory."""


class BackendUnavailable(VmmError):
    pass


class BackendError(VmmError):
    pass


class StateError(VmmError):
    """The call is not allowed in the VM's current state."""


class Busy(StateError):
    pass


class NotSupported(VmmError):
    pass


class SerialTimeout(VmmError, TimeoutError):
    """serial.expect() did not see its pattern in time."""


class SerialEOF(VmmError, EOFError):
    """The VM stopped before serial.expect() saw its pattern."""


class SerialFailure(VmmError, AssertionError):
    """serial.expect() saw one of its ``fail_on`` patterns (e.g. ``Kernel panic``) first.

    ``pattern`` is the fail_on pattern that matched, ``match`` its re.Match, ``transcript`` the output
    from the start of the window up to a little past the match (str). An AssertionError: a test fails.
    """

    def __init__(self, message: str, pattern=None, match=None, transcript: str = ""):
        super().__init__(message)
        self.pattern = pattern
        self.match = match
        self.transcript = transcript


class ScreenTimeout(VmmError, TimeoutError):
    """screen.wait_frame() did not see its frame in time."""


class ScreenEOF(VmmError, EOFError):
    """The VM stopped before screen.wait_frame() saw its frame."""


BY_NAME: dict[str, type[VmmError]] = {
    "VMM_EINVAL": InvalidArgument,
    "VMM_ENOMEM": OutOfMemory,
    "VMM_ENOENT": KernelNotFound,
    "VMM_EIO": VmmIOError,
    "VMM_EFORMAT": FormatError,
    "VMM_EARCH": ArchError,
    "VMM_ERANGE": DoesNotFit,
    "VMM_ENOBACKEND": BackendUnavailable,
    "VMM_EBACKEND": BackendError,
    "VMM_ESTATE": StateError,
    "VMM_EBUSY": Busy,
    "VMM_ENOTSUP": NotSupported,
}

# each class carries its code by default: errors.InvalidArgument("...") is a VMM_EINVAL
for _name, _cls in BY_NAME.items():
    _cls.code, _cls.name = getattr(lib, _name), _name
del _name, _cls


def _check(rc: int, vm=None) -> int:
    """Map a negative libvmm return code to the matching exception (with `vm`'s last error message)."""
    if rc >= 0:
        return rc
    name = ffi.string(lib.vmm_err_name(rc)).decode()
    detail = ffi.string(lib.vmm_last_error(vm)).decode(errors="replace") if vm is not None else ""
    msg = detail or ffi.string(lib.vmm_strerror(rc)).decode()
    raise BY_NAME.get(name, VmmError)(msg, rc, name)
