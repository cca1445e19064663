"""Fetch Debian's arm64 kernel (and busybox-static) with apt-get download, unpacked into a cache.

    python tools/fetch_debian.py            # prints the kernel path
    python tools/fetch_debian.py --busybox  # prints the busybox path

Needs `dpkg --add-architecture arm64` (done here when run as root) and Debian's package index.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("VMMPY_CACHE", os.path.join(ROOT, ".cache", "debian"))


class FetchError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: str | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise FetchError(f"{' '.join(cmd)} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout


def ensure_arm64() -> None:
    if "arm64" in _run(["dpkg", "--print-foreign-architectures"]).split():
        return
    if os.geteuid() != 0:
        raise FetchError("run 'sudo dpkg --add-architecture arm64 && sudo apt-get update' first")
    _run(["dpkg", "--add-architecture", "arm64"])
    _run(["apt-get", "update", "-qq"])


def resolve(pkg: str) -> str:
    """linux-image-arm64 is a metapackage: follow it to the versioned image package."""
    out = _run(["apt-cache", "depends", f"{pkg}:arm64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-") and line.split()[1][len("linux-image-") :][:1].isdigit():
            return line.split()[1]
    return f"{pkg}:arm64"


def fetch(pkg: str, pattern: str, member: str) -> str:
    """Download `pkg` for arm64 and unpack only `member` (e.g. ./boot) from it."""
    ensure_arm64()
    real = resolve(pkg)
    dest = os.path.join(CACHE, real.replace(":", "_"))
    hits = glob.glob(os.path.join(dest, pattern))
    if hits:
        return hits[0]
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # so apt's sandbox user may write there
        try:
            _run(["apt-get", "download", "-qq", real], cwd=tmp)
        except FetchError:
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", "-qq", real], cwd=tmp)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if not debs:
            raise FetchError(f"apt-get download {real} produced no .deb")
        tar = os.path.join(tmp, "data.tar")
        with open(tar, "wb") as f:
            p = subprocess.run(["dpkg-deb", "--fsys-tarfile", debs[0]], stdout=f, stderr=subprocess.PIPE)
        if p.returncode:
            raise FetchError(f"dpkg-deb --fsys-tarfile {debs[0]}: {p.stderr.decode(errors='replace').strip()}")
        _run(["tar", "-xf", tar, "-C", dest, member])
    hits = glob.glob(os.path.join(dest, pattern))
    if not hits:
        raise FetchError(f"{real}: no {pattern} inside the package")
    return hits[0]


def kernel() -> str:
    return fetch("linux-image-arm64", "boot/vmlinuz-*", "./boot")


def busybox() -> str:
    return fetch("busybox-static", "bin/busybox", "./bin")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busybox", action="store_true", help="fetch busybox-static:arm64 instead of the kernel")
    args = ap.parse_args()
    try:
        print(busybox() if args.busybox else kernel())
    except FetchError as e:
        print(f"fetch_debian: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
