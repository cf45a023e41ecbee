#!/usr/bin/env bash
# Creates (idempotently) the Python environment the pipeline hooks and the end-to-end tests use:
#   - a venv at $DEPOT_E2E_VENV (default ~/.cache/depot/e2e-venv) from `python3`, with
#     nvidia-pytriton (a real Triton 2.51 server + Python backend), onnxruntime, onnx, skl2onnx,
#     scikit-learn, numpy<2, requests, tritonclient[http], skops (convert loads .skops models), mypy
#     (scripts/test-hooks.sh type-checks the hooks with it, against these libraries), and the pickle
#     scanners picklescan, modelscan and fickling (hooks/tests/test_pickle_policy.py compares Depot's
#     pickle policy with them), and opentelemetry-proto (scripts/e2e/otlp_receiver.py decodes the
#     traces Depot exports with the OpenTelemetry project's own classes);
#   - the Triton server folder copied to $DEPOT_E2E_VENV/triton-server/ with the Python-backend
#     stub that matches the venv's Python (docs: shared notes "triton-on-cpu");
#   - Debian's libpython3.<minor> (the stub links it), installed only when missing.
# Fast when already done: a marker file holds the requirement list; same list -> nothing to do.
# The last line of stdout is the venv path.
#
#   scripts/e2e/python-env.sh            create or verify
#   scripts/e2e/python-env.sh --force    rebuild the venv from scratch
set -euo pipefail

VENV="${DEPOT_E2E_VENV:-$HOME/.cache/depot/e2e-venv}"
PYTHON="${DEPOT_E2E_PYTHON:-python3}"
REQUIREMENTS=(
  "nvidia-pytriton==0.7.0"
  "numpy<2"
  "onnx"
  "onnxruntime"
  "skl2onnx"
  "scikit-learn"
  "requests"
  "tritonclient[http]"
  "mypy"
  "skops"
  "picklescan"
  "modelscan"
  "fickling"
  "opentelemetry-proto"
)
# The marker also records the layout version of triton-server/ so a change here re-copies it.
LAYOUT="triton-server/1"
MARKER="$VENV/.depot-e2e-requirements"
wanted="$(printf '%s\n' "${REQUIREMENTS[@]}" "$LAYOUT")"

log() { echo "python-env: $*" >&2; }

if [[ "${1:-}" == "--force" ]]; then
  log "removing $VENV"
  rm -rf "$VENV"
fi

# Fast path: everything already in place.
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$wanted" && -x "$VENV/bin/python" \
      && -x "$VENV/triton-server/bin/tritonserver" \
      && -x "$VENV/triton-server/backends/python/triton_python_backend_stub" ]]; then
  py_minor="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  if ldconfig -p 2>/dev/null | grep -q "libpython${py_minor}\.so\.1\.0"; then
    echo "$VENV"
    exit 0
  fi
fi

start=$(date +%s)
command -v "$PYTHON" >/dev/null || { echo "python-env: $PYTHON not found on PATH" >&2; exit 1; }
py_minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# The Python-backend stub is linked against the system libpython (Debian's), not the pyenv one.
if ! ldconfig -p 2>/dev/null | grep -q "libpython${py_minor}\.so\.1\.0"; then
  pkg="libpython${py_minor}"
  log "installing Debian package $pkg (the Triton Python-backend stub links libpython${py_minor}.so.1.0)"
  SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >/dev/null
  fi
  ldconfig -p 2>/dev/null | grep -q "libpython${py_minor}\.so\.1\.0" \
    || { echo "python-env: libpython${py_minor}.so.1.0 is still missing after installing $pkg" >&2; exit 1; }
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV from $(command -v "$PYTHON") (Python $py_minor)"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
venv_minor="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

log "pip install ${REQUIREMENTS[*]}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" 2>&1 \
  | grep -v "Running pip as the 'root' user" >&2 || true
"$VENV/bin/python" -c 'import numpy, onnx, onnxruntime, skl2onnx, sklearn, requests, tritonclient.http, pytriton, mypy, skops' \
  || { echo "python-env: the venv at $VENV is missing a module after pip install" >&2; exit 1; }

SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SRC="$SP/pytriton/tritonserver"
STUB="$SRC/python_backend_stubs/$venv_minor/triton_python_backend_stub"
[[ -x "$SRC/bin/tritonserver" ]] || { echo "python-env: $SRC/bin/tritonserver not found in nvidia-pytriton" >&2; exit 1; }
[[ -f "$STUB" ]] || { echo "python-env: no Python-backend stub for Python $venv_minor in $SRC/python_backend_stubs" >&2; exit 1; }

log "copying the Triton server to $VENV/triton-server (stub for Python $venv_minor)"
rm -rf "$VENV/triton-server.tmp"
cp -r "$SRC" "$VENV/triton-server.tmp"
rm -rf "$VENV/triton-server.tmp/python_backend_stubs"
cp "$STUB" "$VENV/triton-server.tmp/backends/python/triton_python_backend_stub"
chmod +x "$VENV/triton-server.tmp/backends/python/triton_python_backend_stub" "$VENV/triton-server.tmp/bin/tritonserver"
# Where the bundled libraries live (the binary's RPATH points at them relative to the wheel,
# which the copy no longer is): triton_node.py reads this file for LD_LIBRARY_PATH.
echo "$SP/nvidia_pytriton.libs" > "$VENV/triton-server.tmp/LIBS_PATH"
rm -rf "$VENV/triton-server"
mv "$VENV/triton-server.tmp" "$VENV/triton-server"

# The binary must resolve every library (catches a missing Debian package early).
missing="$(LD_LIBRARY_PATH="$SP/nvidia_pytriton.libs" ldd "$VENV/triton-server/bin/tritonserver" \
            "$VENV/triton-server/backends/python/triton_python_backend_stub" 2>/dev/null | grep 'not found' || true)"
if [[ -n "$missing" ]]; then
  echo "python-env: unresolved libraries for tritonserver/stub:" >&2
  echo "$missing" >&2
  exit 1
fi

printf '%s\n' "$wanted" > "$MARKER"
log "done in $(( $(date +%s) - start )) s"
echo "$VENV"
