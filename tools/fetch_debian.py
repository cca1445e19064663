"""Fetch Debian's arm64 kernel (and busybox-static) with apt-get download, unpacked into a cache.

    python tools/fetch_debian.py            # prints the kernel path
    python tools/fetch_debian.py --busybox  # prints the busybox path
    python tools/fetch_debian.py --modules  # prints the kernel's /lib/modules/<version> directory
    python tools/fetch_debian.py --config   # prints the kernel's /boot/config-<version> path
    python tools/fetch_debian.py --sysroot DIR libfdt-dev zlib1g-dev   # arm64 -dev packages into DIR

Needs `dpkg --add-architecture arm64` (done here when run as root) and Debian's package index.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import shutil
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
    if _run(["dpkg", "--print-architecture"]).strip() == "arm64":
        return  # an arm64 host: its own architecture
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


def _move_into(src: str, dst: str) -> None:
    """Move the tree `src` to `dst`, merging with what is there already."""
    if not os.path.isdir(dst) or not os.path.isdir(src):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        os.replace(src, dst)
        return
    for name in os.listdir(src):
        _move_into(os.path.join(src, name), os.path.join(dst, name))


def fetch(pkg: str, pattern: str, member: str) -> str:
    """Download `pkg` for arm64 and unpack only `member` (e.g. ./boot) from it.

    Under an flock on the cache: parallel callers (pytest -n workers) download once and never race
    for apt's own lock in `apt-get update`."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(pkg, pattern, member)


def _fetch(pkg: str, pattern: str, member: str) -> str:
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
        # unpack beside the cache entry, then move into place: an interrupted unpack leaves no half tree
        stage = tempfile.mkdtemp(prefix=".unpack-", dir=dest)
        try:
            _run(["tar", "-xf", tar, "-C", stage, member])
            _move_into(os.path.join(stage, member), os.path.join(dest, member))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    hits = glob.glob(os.path.join(dest, pattern))
    if not hits:
        raise FetchError(f"{real}: no {pattern} inside the package")
    return hits[0]


def kernel() -> str:
    return fetch("linux-image-arm64", "boot/vmlinuz-*", "./boot")


def busybox() -> str:
    return fetch("busybox-static", "bin/busybox", "./bin")


def kernel_config() -> str:
    """/boot/config-<version> of the same package as kernel()."""
    return fetch("linux-image-arm64", "boot/config-*", "./boot")


def modules() -> str:
    """The kernel's module tree, lib/modules/<version> (unpacked beside ./boot on first use).

    Debian's package holds the .ko files, modules.order and modules.builtin but no modules.dep
    (depmod makes it on install): tools/initramfs.py reads dependencies from each module's .modinfo.
    """
    order = fetch("linux-image-arm64", "lib/modules/*/modules.order", "./lib/modules")
    return os.path.dirname(order)


def sysroot(dest: str, pkgs: list[str]) -> str:
    """Download the arm64 builds of `pkgs` and unpack them all (dpkg -x) into `dest`, a cross sysroot.

    For `make aarch64`: libvmm's static link needs libfdt.a and libz.a (from the -dev packages) and
    their headers. The unpack goes to a sibling directory first, so an interrupted run leaves no half tree.
    """
    ensure_arm64()
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    names = [p if ":" in p else f"{p}:arm64" for p in pkgs]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # so apt's sandbox user may write there
        try:
            _run(["apt-get", "download", "-qq", *names], cwd=tmp)
        except FetchError:
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", "-qq", *names], cwd=tmp)
        debs = sorted(glob.glob(os.path.join(tmp, "*.deb")))
        if len(debs) < len(names):
            raise FetchError(f"apt-get download {' '.join(names)} produced only {len(debs)} .deb files")
        stage = tempfile.mkdtemp(prefix=".sysroot-", dir=os.path.dirname(dest))
        try:
            for deb in debs:
                _run(["dpkg", "-x", deb, stage])
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(stage, dest)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--busybox", action="store_true", help="fetch busybox-static:arm64 instead of the kernel")
    what.add_argument("--modules", action="store_true", help="unpack the kernel's modules; print their directory")
    what.add_argument("--config", action="store_true", help="print the path of the kernel's build configuration")
    what.add_argument("--sysroot", metavar="DIR", help="unpack the arm64 packages PKG... into DIR")
    ap.add_argument("pkgs", nargs="*", metavar="PKG", help="with --sysroot: Debian package names (arm64 builds)")
    args = ap.parse_args()
    if bool(args.pkgs) != bool(args.sysroot):
        ap.error("package names go with --sysroot DIR, and --sysroot needs some")
    try:
        if args.sysroot:
            print(sysroot(args.sysroot, args.pkgs))
        elif args.busybox:
            print(busybox())
        elif args.modules:
            print(modules())
        elif args.config:
            print(kernel_config())
        else:
            print(kernel())
    except FetchError as e:
        print(f"fetch_debian: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
