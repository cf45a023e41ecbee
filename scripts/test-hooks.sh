#!/usr/bin/env bash
# Type-checks and tests the built-in pipeline hooks (hooks/builtin/*.py): mypy with hooks/mypy.ini,
# then the unit tests under hooks/tests/ (unittest), among them test_vocabulary.py, which checks the
# words the hooks share with Sources/DepotAPI/Vocabulary.swift and the runner. Takes about 30 s.
#
# Runs with the e2e venv's Python (scripts/e2e/python-env.sh, where the hooks run in the e2e tests;
# `scripts/install-deps.sh --test` makes it and installs mypy into it). DEPOT_HOOKS_PYTHON picks
# another interpreter, e.g. one with torch: the PyTorch conversion tests skip where torch is absent,
# as in the e2e venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${DEPOT_HOOKS_PYTHON:-}" ]]; then
  PY="$DEPOT_HOOKS_PYTHON"
else
  PY="$(scripts/e2e/python-env.sh | tail -n 1)/bin/python"
fi
"$PY" -c 'import mypy' 2>/dev/null || { echo "test-hooks: mypy is not installed for $PY (scripts/install-deps.sh --test)" >&2; exit 1; }
echo "test-hooks: mypy"
"$PY" -m mypy --config-file hooks/mypy.ini hooks/builtin hooks/tests
echo "test-hooks: unit tests"
"$PY" -m unittest discover -s hooks/tests -t hooks/tests
