"""Sentinels for Serial.expect() pattern lists: list them to get a timeout or the end of output back as an
outcome instead of an exception (as pexpect's TIMEOUT and EOF). Kept apart: importing them loads nothing else."""

from __future__ import annotations


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return f"vmmpy.{self._name}"

    def __reduce__(self):
        return self._name


TIMEOUT = _Sentinel("TIMEOUT")
"""In an expect() list: the timeout expired (instead of raising SerialTimeout)."""

EOF = _Sentinel("EOF")
"""In an expect() list: the guest's output ended (the VM stopped) before any pattern matched (instead of SerialEOF)."""
