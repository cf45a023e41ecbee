#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes/ (scripts/check_kubernetes.py) and tests the
# checker itself (scripts/test_check_kubernetes.py: each mistake it exists to catch, made in a copy,
# must fail it). Takes about 20 s.
#
# Runs in a venv at ~/.cache/depot/deploy-venv with PyYAML and kubernetes-validate (the Kubernetes
# OpenAPI schemas, bundled: validation needs no cluster and no network). Where that venv cannot be
# made (no PyPI), it runs with python3 and PyYAML only, and the checker's last line says that only
# the structural checks ran.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$HOME/.cache/depot/deploy-venv"
REQUIREMENTS=("pyyaml" "kubernetes-validate==1.35.0")
MARKER="$VENV/.depot-deploy-requirements"
wanted="$(printf '%s\n' "${REQUIREMENTS[@]}")"
PY=python3
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$wanted" && -x "$VENV/bin/python" ]]; then
  PY="$VENV/bin/python"
else
  echo "test-deploy: making $VENV (${REQUIREMENTS[*]})"
  { python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"; } 2>&1 \
    | grep -v "Running pip as the 'root' user" >&2 || true
  if "$VENV/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
    printf '%s\n' "$wanted" > "$MARKER"
    PY="$VENV/bin/python"
  else
    echo "test-deploy: could not install kubernetes-validate: structural checks only" >&2
    python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
  fi
fi
echo "test-deploy: checker tests"
"$PY" scripts/test_check_kubernetes.py
"$PY" scripts/check_kubernetes.py
