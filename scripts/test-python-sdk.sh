#!/usr/bin/env bash
# The Python SDK (clients/python, docs/PYTHON.md), tested as a user installs it:
#   1. a fresh venv, `pip install ./clients/python` (which builds and bundles the depot executable;
#      here the debug build scripts/test.sh made, DEPOT_SDK_CONFIGURATION=debug), then the SDK tests
#      and the examples against a live `depot serve` with authentication on;
#   2. the integrations (transformers, PyTorch Lightning, MLflow) with the real libraries, each
#      training a tiny model on the CPU, in a venv cached at $DEPOT_SDK_VENV (default
#      ~/.cache/depot/sdk-venv; torch's CPU wheel is large: installed once, reused while the
#      requirement list below is unchanged) into which the package is installed afresh;
#   3. mypy --strict on the package (its cache beside the venv: the first run reads torch, mlflow
#      and transformers, about two minutes; later runs take seconds).
#
#   scripts/test-python-sdk.sh            (after `swift build --product depot`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
[[ -x .build/debug/depot ]] || swift build --product depot
export DEPOT_SDK_CONFIGURATION=debug
T="$(mktemp -d /tmp/depot-sdk-test.XXXXXX)"
trap 'rm -rf "$T"' EXIT
log() { echo "test-python-sdk: $*" >&2; }
# pip's own exit status counts (pipefail); only its root-user warning is dropped.
quiet_pip() { "$@" 2>&1 | { grep -v "Running pip as the 'root' user" || true; }; }

log "fresh venv: pip install ./clients/python"
python3 -m venv "$T/venv"
quiet_pip "$T/venv/bin/pip" install --quiet --disable-pip-version-check ./clients/python pytest
"$T/venv/bin/python" -c 'import depot, depot._engine as e; print("bundled:", e.find_executable())'
(cd clients/python/tests && "$T/venv/bin/python" -m pytest -q -p no:cacheprovider test_registry.py test_examples.py)

VENV="${DEPOT_SDK_VENV:-$HOME/.cache/depot/sdk-venv}"
# torch's CPU-only wheel (a tenth of the CUDA one's size): on this machine kind it comes from the
# local wheel directory pip.conf names (find-links /opt/wheels); elsewhere add PyTorch's index,
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
REQUIREMENTS=(
  "torch==2.13.0+cpu"
  "transformers==5.24.0"
  "accelerate==1.16.0"
  "pytorch-lightning==2.6.6"
  "mlflow==3.17.2"
  "pytest"
  "mypy"
)
wanted="$(printf '%s\n' "${REQUIREMENTS[@]}")"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.depot-sdk-requirements" 2>/dev/null)" != "$wanted" ]]; then
  log "creating $VENV (torch, transformers, lightning, mlflow: a few minutes, once)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  quiet_pip "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "$wanted" > "$VENV/.depot-sdk-requirements"
fi
log "integrations: transformers, PyTorch Lightning, MLflow"
quiet_pip "$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python
# DEPOT_SDK_REQUIRE_INTEGRATIONS: a library missing from the venv fails the test instead of
# skipping it (a skip here would be a silent pass).
(cd clients/python/tests && DEPOT_SDK_REQUIRE_INTEGRATIONS=1 "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider \
  -W ignore::DeprecationWarning test_integrations.py)
log "mypy --strict"
(cd clients/python && "$VENV/bin/mypy" --strict --cache-dir "$VENV/.mypy-cache" src/depot)
log "ok"
