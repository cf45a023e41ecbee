#!/usr/bin/env bash
# Builds Depot (release) and starts the registry on its embedded default:
# SQLite catalog + packs under storage/, listening on 127.0.0.1:5000. Extra arguments go to `depot serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The seed pipeline's built-in hooks run with a Python that has onnx, onnxruntime, skl2onnx and
# scikit-learn (the same venv the end-to-end tests use; made once, then reused).
DEPOT_HOOKS_PYTHON="$(scripts/e2e/python-env.sh | tail -n 1)/bin/python"
export DEPOT_HOOKS_PYTHON
swift build -c release --product depot
exec .build/release/depot serve --config config/depot.yaml "$@"
