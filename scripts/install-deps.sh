#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs to build Depot and run its tests.
# Idempotent: skips what is already there. Used by scripts/serve.sh, scripts/test.sh and CI.
set -euo pipefail
need=()
for pkg in pkg-config libzstd-dev libsqlite3-dev libssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
