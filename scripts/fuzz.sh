#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/Package.swift) into .build-fuzz and runs each of them.
#   scripts/fuzz.sh [SECONDS]        every harness for SECONDS (default 600), one at a time
#   scripts/fuzz.sh --smoke          replay corpora and regressions, then fuzz each harness 5 s (CI)
#   scripts/fuzz.sh --build          build only
#   FUZZ_TARGETS="onnx zip" scripts/fuzz.sh 60    only these harnesses
#   FUZZ_NO_BUILD=1 ...              skip the build (e.g. a second queue beside a running one)
# A crash leaves its input in fuzz/findings/<harness>/ (git-ignored) and fails the script: make it a
# regression input under fuzz/regressions/<harness>/ and fix the parser.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL="safetensors onnx pickle zip tensorflow tensorrt textproto manifest chunkrecord recipe range pipeline config routes auth signature hashstates"
TARGETS=${FUZZ_TARGETS:-$ALL}
MODE=run
SECONDS_EACH=600
case "${1:-}" in
  --smoke) MODE=smoke; SECONDS_EACH=${FUZZ_SMOKE_SECONDS:-5} ;;
  --build) MODE=build ;;
  "") ;;
  *) SECONDS_EACH=$1 ;;
esac

# Every module (dependencies too) is instrumented for coverage and AddressSanitizer; testing is
# enabled so the harnesses can reach internal parsers with @testable import.
# FUZZ_NO_BUILD=1 reuses the binary (a second queue of harnesses beside a first one).
[ -n "${FUZZ_NO_BUILD:-}" ] || ( cd fuzz && swift build --scratch-path "$ROOT/.build-fuzz" -c debug \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -enable-testing 2>&1 \
    | grep -v "Cannot export local symbol" ) || true
BIN=$ROOT/.build-fuzz/debug/DepotFuzz
[ -x "$BIN" ] || { echo "fuzz build failed" >&2; exit 1; }
[ "$MODE" = build ] && exit 0

# The Swift runtime's crash backtracer trips AddressSanitizer (and can hang) while it prints.
export SWIFT_BACKTRACE=enable=no

status=0
for t in $TARGETS; do
  corpus=fuzz/corpus/$t
  work=.build-fuzz/corpus/$t          # new inputs the fuzzer finds stay out of git
  findings=fuzz/findings/$t
  mkdir -p "$corpus" "$work" "$findings"
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    # Replays every past crash: a regression fails here before any fuzzing.
    if ! FUZZ_TARGET=$t "$BIN" -runs=0 "fuzz/regressions/$t"/* > ".build-fuzz/$t.regressions.log" 2>&1; then
      echo "$t: a regression input fails again (.build-fuzz/$t.regressions.log)" >&2
      status=1
      continue
    fi
  fi
  log=.build-fuzz/$t.log
  echo "== $t: ${SECONDS_EACH}s"
  if FUZZ_TARGET=$t "$BIN" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$findings/" "$work" "$corpus" > "$log" 2>&1; then
    grep -E "^#[0-9]+.*(DONE|pulse)" "$log" | tail -1 || true
    grep -E "stat::number_of_executed_units" "$log" || true
  else
    echo "$t: FOUND A CRASH (see $log and $findings/)" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
