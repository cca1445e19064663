#!/usr/bin/env bash
# Build libvmm with the portable POSIX host layer (csrc/host/host_posix.c, -D_XOPEN_SOURCE=700, no
# _GNU_SOURCE, no KVM) into build/portable/ and run the fast test tiers (every 9p escape test) against it.
set -euo pipefail
PYTHON=${1:-python3}
cd "$(dirname "$0")/.."
out=build/portable
mkdir -p "$out/vmmpy"
cp vmmpy/*.py vmmpy/*.entitlements vmmpy/py.typed "$out/vmmpy/"
rm -rf "$out/tests" && cp -r tests "$out/tests"
echo "==> building libvmm with the POSIX host layer (VMM_HOST_POSIX)"
"$PYTHON" -c "
import sys; sys.path.insert(0, 'vmmpy')
import _build_ffi
_build_ffi.make_ffi(portable=True, absolute=True).compile(tmpdir='$out', verbose=False)
" >/dev/null
export PYTHONPATH="$PWD/$out"
export VMMPY_EXPECT_HOST=posix
export VMMPY_ROOT="$PWD"
cd "$out"
"$PYTHON" -m pytest tests/ -q -m "not slow" -p no:cacheprovider --rootdir=.
