#!/usr/bin/env bash
# Build libvmm with ASan+UBSan into build/asan/ and run the fast test tiers against it.
set -euo pipefail
PYTHON=${1:-python3}
cd "$(dirname "$0")/.."
out=build/asan
mkdir -p "$out/vmmpy"
cp vmmpy/*.py "$out/vmmpy/"
rm -rf "$out/tests" && cp -r tests "$out/tests"
echo "==> building libvmm with -fsanitize=address,undefined"
VMMPY_SANITIZE=1 "$PYTHON" -c "
import sys; sys.path.insert(0, 'vmmpy')
import _build_ffi
_build_ffi.make_ffi(sanitize=True, absolute=True).compile(tmpdir='$out', verbose=False)
" >/dev/null
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$PWD/$out"
export VMMPY_EXPECT_SANITIZED=1
export VMMPY_ROOT="$PWD"
cd "$out"
"$PYTHON" -m pytest tests/ -q -m "not slow" -p no:cacheprovider --rootdir=.
