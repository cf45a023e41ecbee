#!/usr/bin/env bash
# Builds Depot (release) and starts the registry on its embedded default:
# SQLite catalog + packs under storage/, listening on 127.0.0.1:5000. Extra arguments go to `depot serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product depot
exec .build/release/depot serve --config config/depot.yaml "$@"
