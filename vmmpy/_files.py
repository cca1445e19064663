"""Files the user names (input scripts, screenshots, goldens): regular files only, opened without blocking.

A FIFO would block ``open()`` until a peer shows up and a device such as ``/dev/zero`` never ends, so
paths are opened with ``O_NONBLOCK`` (a FIFO then opens at once or fails with ENXIO), checked with
``fstat`` on the open descriptor (no race with a rename), and refused unless they are regular files.
Reads are capped. Errors are ``OSError`` with a readable ``strerror`` and the path as ``filename``.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _regular(fd: int, path: str) -> os.stat_result:
    """fstat(fd); OSError unless it is a regular file (fd is closed then)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
        raise OSError(code, f"not a regular file ({_kind(st.st_mode)})", path)
    os.set_blocking(fd, True)
    return st


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The contents of the regular file `path`, at most `limit` bytes (OSError "too large" beyond)."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | _FLAGS)
    st = _regular(fd, path)
    too_large = OSError(errno.EFBIG, f"too large ({st.st_size} bytes, at most {_size(limit)})", path)
    if st.st_size > limit:
        os.close(fd)
        raise too_large
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)  # the file may have grown since fstat
    if len(data) > limit:
        raise too_large
    return data


def open_output(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for writing (created, or truncated if it is a regular file); refuses anything else."""
    path = os.fspath(path)
    try:  # no O_TRUNC before the type is known
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _FLAGS, 0o666)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO without a reader
            check_output(path)
        raise
    _regular(fd, path)
    try:
        os.ftruncate(fd, 0)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def check_output(path: str | os.PathLike) -> None:
    """For early checks (before a run): OSError if `path` exists and is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", os.fspath(path))
