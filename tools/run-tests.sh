#!/usr/bin/env bash
# run-tests.sh — the whole test suite: a release build and an ASan+UBSan build, each under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

run() { # name, cmake flags...
  local dir=$1; shift
  cmake -S . -B "$dir" -DRINGBEAT_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure --timeout 600)
}

echo "== release build (gcc, jemalloc) =="
run build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== ASan+UBSan build =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run build-asan -DCMAKE_BUILD_TYPE=Debug -DRINGBEAT_SANITIZE=ON -DRINGBEAT_BENCH=OFF
echo "all test builds passed"
