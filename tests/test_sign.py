"""Tier 1: `python -m vmmpy sign-python`, the ad-hoc signing that Hypervisor.framework's entitlement needs (macOS).

Here (Linux) the command says in one line that it is for macOS. The macOS path is checked against a stand-in
`codesign` on PATH that records its arguments (the real one exists only on macOS): what is signed, ad hoc,
with the package's entitlements file, and that --copy leaves the original untouched.
"""

from __future__ import annotations

import plistlib
import subprocess
import sys

import pytest

from vmmpy.sign import ENTITLEMENTS, SignError, sign


def test_the_command_says_it_is_for_macos(tmp_path):
    p = subprocess.run([sys.executable, "-m", "vmmpy", "sign-python"], capture_output=True, text=True)
    if sys.platform == "darwin":
        pytest.skip("on macOS the command signs for real")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "sign-python is for macOS" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_entitlements_file_grants_the_hypervisor():
    with open(ENTITLEMENTS, "rb") as f:
        assert plistlib.load(f) == {"com.apple.security.hypervisor": True}


@pytest.fixture
def fake_codesign(tmp_path, monkeypatch):
    log = tmp_path / "codesign.log"
    tool = tmp_path / "bin" / "codesign"
    tool.parent.mkdir()
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")
    return log


def test_signs_ad_hoc_with_the_entitlements(tmp_path, fake_codesign):
    exe = tmp_path / "python3"
    exe.write_bytes(b"\x7fELF not really")
    assert sign(str(exe), platform="darwin") == str(exe)
    assert fake_codesign.read_text().split("\n")[:-1] == ["--sign", "-", "--force", "--entitlements", ENTITLEMENTS,
                                                          str(exe)]  # fmt: skip


def test_copy_is_signed_and_the_original_left_alone(tmp_path, fake_codesign):
    exe = tmp_path / "python3"
    exe.write_bytes(b"interpreter")
    dest = tmp_path / "python3-hvf"
    assert sign(str(exe), copy_to=str(dest), platform="darwin") == str(dest)
    assert dest.read_bytes() == b"interpreter"
    assert fake_codesign.read_text().split("\n")[-2] == str(dest)


def test_a_missing_binary_is_one_clear_error(tmp_path):
    with pytest.raises(SignError, match="no such file"):
        sign(str(tmp_path / "nope"), platform="darwin")
