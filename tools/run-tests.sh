#!/usr/bin/env bash
# run-tests.sh — the whole test suite: release, ASan+UBSan and TSan builds, each under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

run() { # build dir, ctest filter ("" for all), ctest exclusion ("" for none), cmake flags...
  local dir=$1 filter=$2 exclude=$3; shift 3
  cmake -S . -B "$dir" -DRINGBEAT_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure --timeout 600 ${filter:+-R "$filter"} ${exclude:+-E "$exclude"})
}

# The sanitizer build skips the long timing-only scenarios (minutes of NAT timeouts, a browser
# ramp): they drive the same code paths the other integration tests already run under ASan, and
# together they would take the suite past CI's 30 minutes. The release build runs them.
asan_skip="integration_test_(client_nat|ws_browser)"

echo "== release build (gcc, jemalloc) =="
run build-test "" "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== ASan+UBSan build =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run build-asan "" "$asan_skip" -DCMAKE_BUILD_TYPE=Debug -DRINGBEAT_SANITIZE=ON -DRINGBEAT_BENCH=OFF
echo "== TSan build: the multi-worker integration tests (two workers, cross-thread stats, presence threads, the client helper thread) =="
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  run build-tsan "integration_test_(scale|daemon|ops|metrics_http|redis|client_thread)" "" -DCMAKE_BUILD_TYPE=Debug \
  -DRINGBEAT_TSAN=ON -DRINGBEAT_BENCH=OFF
echo "== libFuzzer (clang, ASan+UBSan): every parser of network bytes =="
fuzz_s=${RINGBEAT_FUZZ_SECONDS:-20}
fuzz_targets="frame hello ws_frame ws_http tls_record tls_hs proxy token client"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DRINGBEAT_FUZZ=ON -DRINGBEAT_BENCH=OFF \
  -DRINGBEAT_TESTS=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build build-fuzz -j"$jobs" --target $(printf 'fuzz_%s ' $fuzz_targets) fuzz_corpus
for t in $fuzz_targets; do
  mkdir -p "build-fuzz/work-$t" "build-fuzz/tests/fuzz/corpus/$t"
  if ! build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$fuzz_s" -print_final_stats=1 \
      "build-fuzz/work-$t" "build-fuzz/tests/fuzz/corpus/$t" >"build-fuzz/fuzz_$t.log" 2>&1; then
    tail -n 60 "build-fuzz/fuzz_$t.log"
    echo "fuzz_$t found a crash"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|Done" "build-fuzz/fuzz_$t.log" | sed "s/^/fuzz_$t: /"
done
echo "all test builds passed"
