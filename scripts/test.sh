#!/usr/bin/env bash
# Runs every test: installs build dependencies, builds the depot executable (the crash tests
# run it as a child process), then the whole Swift test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
swift build --product depot
swift test --disable-xctest "$@"
