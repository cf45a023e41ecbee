#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs. Idempotent: skips what is already there.
#   scripts/install-deps.sh          build dependencies (C libraries Depot links: zstd, SQLite,
#                                    OpenSSL, libpq for a PostgreSQL catalog), and
#                                    bubblewrap + util-linux (setpriv): runners confine stages
#                                    with them (docs/PIPELINES.md, "The sandbox")
#   scripts/install-deps.sh --test   also the real peers the tests run: skopeo, containerd,
#                                    docker-registry (CNCF distribution), PostgreSQL (the suite
#                                    runs again on it), haproxy (the scale-out scenario), curl
#                                    (Debian), chromium + chromium-driver (the web UI's
#                                    browser test, scripts/e2e/ui.sh) and
#                                    oras-py, requests, onnx, numpy, selenium, moto[server] (PyPI), and the e2e
#                                    Python environment (scripts/e2e/python-env.sh: a real
#                                    Triton server, onnxruntime, skl2onnx, scikit-learn, skops,
#                                    mypy for scripts/test-hooks.sh, and the pickle scanners
#                                    picklescan, modelscan and fickling its pickle-policy test
#                                    compares with)
set -euo pipefail
packages=(pkg-config libzstd-dev libsqlite3-dev libssl-dev libpq-dev bubblewrap util-linux)
python_modules=()
if [[ "${1:-}" == "--test" ]]; then
  packages+=(skopeo containerd docker-registry curl tar gzip python3-pip prometheus openssl postgresql haproxy chromium chromium-driver)
  python_modules+=(oras requests onnx numpy selenium)
fi
need=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ((${#need[@]})); then
  echo "apt: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
for module in "${python_modules[@]}"; do
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "pip: installing $module"
    python3 -m pip install --quiet --disable-pip-version-check "$module" 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import $module"
  fi
done
if [[ "${1:-}" == "--test" ]]; then
  # moto[server]: the S3 emulator the object-storage tests start on loopback (moto_server on
  # PATH; DepotObjectStoreTests skip, saying so, without it). Not an importable module name, so
  # not in the list above.
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "pip: installing moto[server]"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]" 2>&1 | grep -v "Running pip as the 'root' user" || true
    command -v moto_server >/dev/null
  fi
  "$(dirname "$0")/e2e/python-env.sh" >/dev/null
fi
