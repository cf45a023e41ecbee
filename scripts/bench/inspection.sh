#!/usr/bin/env bash
# What inspecting each hostile input of BudgetTests costs (wall time, CPU time of the inspecting
# thread, peak heap added), measured with that suite running alone so that the heap figure is the
# inspection's and not its neighbours'. The tests assert what is described; this prints the cost.
#   scripts/bench/inspection.sh            debug build (what `swift test` runs)
#   scripts/bench/inspection.sh release    release build (what `depot serve` runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
config=debug
if [ "${1:-}" = release ]; then config=release; fi
swift build -c "$config" --build-tests >/dev/null
swift test -c "$config" --skip-build --disable-xctest --filter 'BudgetTests' 2>&1 | grep -E 'inspection budget:|passed|failed' | sed 's/^.*inspection budget: /  /'
