#!/usr/bin/env bash
# Build libvmm with ThreadSanitizer into build/tsan/ and run the run loop's tests against it: the selection
# tools/mutation_map.py's RUN_LOOP names (vmm_run, the vCPU threads, the clock thread, the waits, the
# debugger's hold), on 2 pytest-xdist workers. Any ThreadSanitizer report fails the run.
set -euo pipefail
PYTHON=${1:-python3}
cd "$(dirname "$0")/.."
out=build/tsan
mkdir -p "$out/vmmpy"
cp vmmpy/*.py vmmpy/*.entitlements vmmpy/py.typed "$out/vmmpy/"
rm -rf "$out/tests" && cp -r tests "$out/tests"
echo "==> building libvmm with -fsanitize=thread"
VMMPY_SANITIZE=thread "$PYTHON" -c "
import sys; sys.path.insert(0, 'vmmpy')
import _build_ffi
_build_ffi.make_ffi(sanitize='thread', absolute=True).compile(tmpdir='$out', verbose=False)
" >/dev/null
mapfile -t selection < <("$PYTHON" -c "
import sys; sys.path.insert(0, 'tools')
from mutation_map import RUN_LOOP
print('\n'.join(RUN_LOOP))
")
# The runtime is preloaded into the interpreter itself, never into a wrapper: pyenv's `python` shim (a bash
# script) crashes under it. So LD_PRELOAD is given to the real interpreter's command only (and what it starts).
py=$("$PYTHON" -c 'import sys; print(sys.executable)')
tsan=$(gcc -print-file-name=libtsan.so)
# reports go to files (sanitizer.<pid>): pytest captures stderr, and an xdist worker's is not shown at all.
# Each report is read from them, so the exit status stays the tests' own (exitcode=0) and a run goes on
# after a report to find the others (halt_on_error=0).
logs="$PWD/$out/sanitizer"
rm -f "$logs".*
export TSAN_OPTIONS="halt_on_error=0:exitcode=0:second_deadlock_stack=1:log_path=$logs"
export PYTHONPATH="$PWD/$out"
export VMMPY_EXPECT_SANITIZED=1  # a sanitizer's runtime owns malloc and maps shadow memory: no address-space cap
export VMMPY_ROOT="$PWD"
cd "$out"
LD_PRELOAD="$tsan" "$py" -c "import vmmpy._ffi, vmmpy._vmm as e; assert '$out/vmmpy/' in e.__file__, e.__file__"
status=0
LD_PRELOAD="$tsan" "$py" -m pytest -q -n 2 -m "not slow" -p no:cacheprovider --rootdir=. "${selection[@]}" || status=$?
# the reports that count are mutate.py's (a frame in libvmm): one about the interpreter alone is not ours
VMMPY_ROOT="$VMMPY_ROOT" "$PYTHON" -c "
import sys; sys.path.insert(0, '$VMMPY_ROOT/tools')
import mutate
print('\n'.join(mutate.sanitizer_reports('$logs')))
" > "$PWD/tsan-counted.txt" || { echo "==> cannot read the ThreadSanitizer reports" >&2; exit 1; }
mapfile -t counted < "$PWD/tsan-counted.txt"
reports=0
for f in "${counted[@]}"; do
  [ -e "$f" ] || continue
  reports=$((reports + 1))
  echo "==> ThreadSanitizer report $f:" >&2
  head -60 "$f" >&2
  [ "$status" != 0 ] || status=1
done
[ "$reports" = 0 ] || echo "==> $reports process(es) with ThreadSanitizer reports (SUMMARY lines: grep SUMMARY $logs.*)" >&2
exit "$status"
