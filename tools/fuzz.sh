#!/usr/bin/env bash
# Build and run the libFuzzer targets in fuzz/ for FUZZ_SECONDS each (default 60), then print one
# table: total execs and execs/s per target. Usage: tools/fuzz.sh [PYTHON]
# FUZZ_TARGETS="p9 gpu" runs a subset. libvmm is compiled once (ASan+UBSan, fuzzer coverage) into
# build/fuzz/libvmm-fuzz.a and every target links against it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
SECS=${FUZZ_SECONDS:-60}
UD=$($PY -c "import os, unicorn; print(os.path.dirname(unicorn.__file__))")
CC=${CC_FUZZ:-clang}
out=build/fuzz
tmp=${TMPDIR:-/tmp}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -std=gnu11 -DVMM_BUILDING -Iinclude -I$UD/include"
mkdir -p "$out/obj"

t0=$(date +%s)
echo "==> building libvmm for fuzzing ($out/libvmm-fuzz.a)"
rm -f "$out"/obj/*.o "$out/libvmm-fuzz.a"
export CC CFLAGS SAN out
ls csrc/*/*.c | xargs -P "$(nproc)" -I{} sh -c \
  'o="$out/obj/$(echo {} | sed "s|^csrc/||; s|/|_|g; s|\.c$|.o|")"; $CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -c {} -o "$o"'
ar rcs "$out/libvmm-fuzz.a" "$out"/obj/*.o
echo "    $(( $(date +%s) - t0 ))s"

targets=()
for f in fuzz/fuzz_*.c; do
  name=$(basename "$f" .c)
  if [ -n "${FUZZ_TARGETS:-}" ] && ! [[ " $FUZZ_TARGETS " == *" ${name#fuzz_} "* ]]; then continue; fi
  targets+=("$name")
done

# scratch directories the targets make in $TMPDIR must be gone afterwards
before=$(ls -d "$tmp"/fuzz_* 2>/dev/null | sort || true)
rows=()
fail=0
for name in "${targets[@]}"; do
  t=$(date +%s)
  echo "==> building $name"
  $CC $CFLAGS $SAN -fsanitize=fuzzer "fuzz/$name.c" "$out/libvmm-fuzz.a" -o "$out/$name" \
      "$UD/lib/libunicorn.so.2" -Wl,-rpath,"$UD/lib" -lfdt -lz -lpthread
  bt=$(( $(date +%s) - t ))
  corpus="fuzz/corpus/${name#fuzz_}"
  mkdir -p "$corpus"
  work="$out/corpus-${name#fuzz_}"
  rm -rf "$work" && mkdir -p "$work"
  seeds=("$corpus")
  # fuzz_loader's seeds also come from the guests (valid ELFs, Images made from them) at run time
  if [ "$name" = fuzz_loader ] && [ -f fuzz/make_corpus.py ]; then
    rm -rf "$out/seeds-loader" && $PY fuzz/make_corpus.py --loader "$out/seeds-loader" && seeds+=("$out/seeds-loader")
  fi
  # fuzz_snapshot's: snapshots of the guests, made with this tree's vmmpy
  if [ "$name" = fuzz_snapshot ]; then
    rm -rf "$out/seeds-snapshot" && PYTHONPATH="$PWD" VMMPY_ROOT="$PWD" $PY fuzz/make_corpus.py --snapshot \
      "$out/seeds-snapshot" && seeds+=("$out/seeds-snapshot")
  fi
  echo "==> running $name for ${SECS}s"
  rc=0
  "$out/$name" -max_total_time="$SECS" -print_final_stats=1 -detect_leaks=0 -artifact_prefix="$out/$name-" \
      "$work" "${seeds[@]}" >"$out/$name.log" 2>&1 || rc=$?
  (grep -v '^stat::' "$out/$name.log" || true) | tail -3
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$name.log" | tail -1 || true)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out/$name.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/$name.log" | tail -1)
  cov=$( (grep -o 'cov: [0-9]*' "$out/$name.log" || true) | tail -1 | cut -d' ' -f2)
  status=ok
  if [ "$rc" != 0 ]; then status="FAIL($rc, see $out/$name.log)"; fail=1; fi
  rows+=("$(printf '%-14s %6ss %6s %12s %10s %6s  %s' "$name" "$bt" "${secs:-?}" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$status")")
done

after=$(ls -d "$tmp"/fuzz_* 2>/dev/null | sort || true)
left=$(comm -13 <(echo "$before") <(echo "$after") | grep . || true)

echo
echo "==> fuzzing summary (FUZZ_SECONDS=$SECS; libvmm build included in the total)"
printf '%-14s %7s %6s %12s %10s %6s  %s\n' target build secs execs execs/s cov status
for r in "${rows[@]}"; do echo "$r"; done
echo "total time: $(( $(date +%s) - t0 ))s"
if [ -n "$left" ]; then
  echo "FAIL: scratch left in $tmp:"; echo "$left"; fail=1
fi
exit $fail
