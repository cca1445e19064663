"""Ad-hoc code signing with the Hypervisor.framework entitlement (macOS): `python -m vmmpy sign-python`.

On macOS a process may create a VM with Hypervisor.framework only if its executable is signed with the
``com.apple.security.hypervisor`` entitlement (otherwise hv_vm_create fails with HV_DENIED). The "hvf"
backend runs inside the Python interpreter (or the static ``vmmrun``), so that executable is what gets
signed: ad hoc (``codesign --sign -``), with ``vmmpy/hvf.entitlements``. Signing the interpreter of a
virtual environment changes the file the venv points at (often a Homebrew or python.org binary shared by
other venvs); ``--copy DEST`` signs a copy instead and leaves the original alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ENTITLEMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hvf.entitlements")


class SignError(Exception):
    """Signing is impossible here, or codesign failed (one line for the user)."""


def sign(binary: str | None = None, copy_to: str | None = None, platform: str = sys.platform) -> str:
    """Sign `binary` (default: this interpreter, resolved through symlinks), or a copy of it at `copy_to`.

    Returns the path that was signed. Raises SignError with one line on any other platform than macOS,
    for a missing file, or when codesign fails.
    """
    if platform != "darwin":
        raise SignError(
            "sign-python is for macOS: it gives an executable the com.apple.security.hypervisor entitlement "
            f"that Hypervisor.framework (backend 'hvf') requires; this is {platform}, where there is nothing to sign"
        )
    target = os.path.realpath(binary or sys.executable)
    if not os.path.isfile(target):
        raise SignError(f"{target}: no such file")
    if copy_to:
        shutil.copy2(target, copy_to)
        target = os.path.abspath(copy_to)
    codesign = shutil.which("codesign")
    if codesign is None:
        raise SignError("codesign not found (install the Xcode command line tools: xcode-select --install)")
    cmd = [codesign, "--sign", "-", "--force", "--entitlements", ENTITLEMENTS, target]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SignError(f"codesign failed for {target}: {(p.stderr or p.stdout).strip()}")
    return target
