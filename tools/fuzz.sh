#!/usr/bin/env bash
# Build and run the libFuzzer targets in fuzz/ for FUZZ_SECONDS each (default 60). Usage: tools/fuzz.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
SECS=${FUZZ_SECONDS:-60}
UD=$($PY -c "import os, unicorn; print(os.path.dirname(unicorn.__file__))")
CC=${CC_FUZZ:-clang}
out=build/fuzz
mkdir -p "$out"
srcs=$(ls csrc/*/*.c)
for f in fuzz/fuzz_*.c; do
  name=$(basename "$f" .c)
  echo "==> building $name"
  $CC -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -DVMM_BUILDING -Iinclude -I"$UD/include" "$f" $srcs -o "$out/$name" \
      "$UD/lib/libunicorn.so.2" -Wl,-rpath,"$UD/lib" -lfdt -lz -lpthread
  corpus="fuzz/corpus/${name#fuzz_}"
  mkdir -p "$corpus"
  work="$out/corpus-${name#fuzz_}"
  rm -rf "$work" && mkdir -p "$work"
  echo "==> running $name for ${SECS}s"
  "$out/$name" -max_total_time="$SECS" -print_final_stats=1 -detect_leaks=0 -artifact_prefix="$out/$name-" "$work" "$corpus" 2>&1 | tail -4
done
