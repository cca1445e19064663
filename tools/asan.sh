#!/usr/bin/env bash
# Build libvmm with ASan+UBSan into build/asan/ and run the fast test tiers against it.
set -euo pipefail
PYTHON=${1:-python3}
cd "$(dirname "$0")/.."
out=build/asan
mkdir -p "$out/vmmpy"
cp vmmpy/*.py vmmpy/*.entitlements vmmpy/py.typed "$out/vmmpy/"
rm -rf "$out/tests" && cp -r tests "$out/tests"
echo "==> building libvmm with -fsanitize=address,undefined"
VMMPY_SANITIZE=1 "$PYTHON" -c "
import sys; sys.path.insert(0, 'vmmpy')
import _build_ffi
_build_ffi.make_ffi(sanitize=True, absolute=True).compile(tmpdir='$out', verbose=False)
" >/dev/null
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# reports go to files as well: pytest captures stderr, and an aborting process takes that capture with it
logs="$PWD/$out/sanitizer"
rm -f "$logs".*
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$logs
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$logs
export PYTHONPATH="$PWD/$out"
export VMMPY_EXPECT_SANITIZED=1
export VMMPY_ROOT="$PWD"
cd "$out"
status=0
"$PYTHON" -m pytest tests/ -q -m "not slow" -p no:cacheprovider --rootdir=. || status=$?
for f in "$logs".*; do  # (warnings alone, e.g. about swapcontext in child processes, are no failure)
  [ -e "$f" ] && grep -qE "ERROR: |runtime error" "$f" || continue
  echo "==> sanitizer report $f:" >&2
  head -60 "$f" >&2
  [ "$status" != 0 ] || status=1
done
exit "$status"
