"""Build the patched Unicorn (third_party/unicorn/*.patch) into build/unicorn/<key>/, once.

Fetches the unicorn 2.1.4 source distribution from PyPI with pip (or takes --sdist), checks its
SHA-256, applies the patches, and builds only the aarch64 target with cmake. The key hashes the
version and the patch files (vmmpy/_unicorn.py), so a build is reused until a patch changes. About
50 s of two cores on the development machine. Prints the library's path.

    python tools/build_unicorn.py [--sdist FILE] [--jobs N] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmmpy import _unicorn  # noqa: E402

SDIST = f"unicorn-{_unicorn.VERSION}.tar.gz"
SDIST_SHA256 = "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"  # PyPI's file for 2.1.4
CACHE = os.path.join(_unicorn.ROOT, "build", "unicorn")


class BuildError(Exception):
    pass


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(given: str | None) -> str:
    """The source distribution: the one given, the cached download, or a new one from PyPI."""
    path = given or os.path.join(CACHE, "dl", SDIST)
    if not given and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", f"unicorn=={_unicorn.VERSION}"]
        cmd += ["--no-binary", ":all:", "--no-deps", "-d", os.path.dirname(path)]
        if subprocess.run(cmd).returncode != 0 or not os.path.exists(path):
            raise BuildError(f"could not download {SDIST} from PyPI (pip download failed)")
    if not os.path.exists(path):
        raise BuildError(f"{path}: no such file")
    got = sha256(path)
    if got != SDIST_SHA256:
        raise BuildError(f"{path}: SHA-256 {got}, expected {SDIST_SHA256} (PyPI's unicorn {_unicorn.VERSION})")
    return path


def run(cmd: list[str], cwd: str, log) -> None:
    r = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log.name}")


def build(sdist: str, out: str, jobs: int) -> None:
    cmake = shutil.which("cmake")
    if not cmake:
        raise BuildError("cmake is needed to build the patched Unicorn (Debian: apt-get install cmake)")
    if not shutil.which("patch"):
        raise BuildError("patch is needed to build the patched Unicorn (Debian: apt-get install patch)")
    os.makedirs(CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="tmp-") as tmp:
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.12+, and 3.8-3.11 security releases
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        src = os.path.join(tmp, f"unicorn-{_unicorn.VERSION}", "src")
        log_path = os.path.join(CACHE, "build.log")
        with open(log_path, "w") as log:
            for p in _unicorn.patches():
                with open(p, "rb") as f:
                    r = subprocess.run(["patch", "-p1", "--quiet", "--batch"], cwd=src, stdin=f, stdout=log, stderr=log)
                if r.returncode != 0:
                    raise BuildError(f"{p} does not apply to unicorn {_unicorn.VERSION}; see {log_path}")
            bld = os.path.join(tmp, "build")
            flags = ["-DCMAKE_BUILD_TYPE=Release", "-DUNICORN_ARCH=aarch64", "-DUNICORN_BUILD_TESTS=OFF"]
            flags += ["-DUNICORN_INSTALL=OFF", "-DUNICORN_LEGACY_STATIC_ARCHIVE=OFF", "-DBUILD_SHARED_LIBS=ON"]
            if not os.environ.get("CC") and shutil.which("clang"):
                # clang 14's build ran a 1-vCPU Linux boot in 3-7 % less CPU than GCC 12's (both -O3)
                flags += ["-DCMAKE_C_COMPILER=clang"]
            run([cmake, "-S", src, "-B", bld, *flags], tmp, log)
            run([cmake, "--build", bld, f"-j{jobs}"], tmp, log)
        staging = out + ".new"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        shutil.copy2(os.path.join(bld, _unicorn.LIB_NAME), staging)
        shutil.copytree(os.path.join(src, "include", "unicorn"), os.path.join(staging, "include", "unicorn"))
        os.replace(staging, out)  # the library appears complete or not at all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", help=f"a local {SDIST} instead of downloading it")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    ap.add_argument("--force", action="store_true", help="rebuild even if this key is built")
    args = ap.parse_args(argv)
    out = _unicorn.patched_dir()
    lib = os.path.join(out, _unicorn.LIB_NAME)
    if os.path.exists(lib) and not args.force:
        print(lib)
        return 0
    if args.force:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    try:
        build(fetch_sdist(args.sdist), out, max(1, args.jobs))
    except BuildError as e:
        print(f"build_unicorn: {e}", file=sys.stderr)
        return 1
    print(f"==> patched Unicorn built in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
