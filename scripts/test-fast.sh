#!/usr/bin/env bash
# The fast lane: builds, then runs the unit test targets only — each tests one module directly,
# without HTTP servers or child processes. The whole suite (`swift test`) adds DepotServerTests.
# Usage: scripts/test-fast.sh [extra `swift test` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(DepotAPITests DepotAuthTests DepotStoreTests DepotFormatsTests DepotRegistryTests DepotDeployTests DepotPipelinesTests DepotClientTests DepotCatalogTests)
# Only the targets that exist in this checkout (DepotCatalogTests may not yet).
present=()
for t in "${targets[@]}"; do
    if [ -d "Tests/$t" ]; then present+=("$t"); fi
done
filter="^($(IFS='|'; echo "${present[*]}"))\\."

start=$(date +%s)
swift build --build-tests
built=$(date +%s)
swift test --skip-build --disable-xctest --filter "$filter" "$@"
end=$(date +%s)
echo "test-fast: ${present[*]}"
echo "test-fast: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s"
