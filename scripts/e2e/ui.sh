#!/usr/bin/env bash
# The web UI in a real browser (docs/UI.md): starts `depot serve` with authentication on and a
# one-stage pipeline on a loopback port, then drives headless Chromium through it with selenium
# (Tests/e2e/ui/browser_test.py). Screenshots of every page land in $UI_SCREENSHOTS (default:
# .build/ui-screenshots). Needs: chromium and chromium-driver (Debian), selenium and requests
# (PyPI); scripts/install-deps.sh --test installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPOT="${DEPOT_CLI:-$PWD/.build/debug/depot}"
[[ -x "$DEPOT" ]] || swift build --product depot
SHOTS="${UI_SCREENSHOTS:-$PWD/.build/ui-screenshots}"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$work/pipelines"
cat > "$work/pipelines/package.yaml" <<'YAML'
name: ui-package
trigger: {repositories: [team/pipe], tags: ['v*']}
stages:
  package:
    exec: [sh, -c, 'cp -R "$DEPOT_INPUT_DIR"/. "$DEPOT_OUTPUT_DIR"/ && echo packaged > "$DEPOT_OUTPUT_DIR/PACKAGED" && echo packaged']
    tag: '{{tag}}-packaged'
    timeout: 2m
YAML
cat > "$work/depot.yaml" <<YAML
server: {listen: 127.0.0.1:$port, log_level: info}
storage: {root: $work/storage}
auth: {enabled: true}
pipelines: {directory: $work/pipelines, runner: {work_dir: $work/runner}}
YAML
admin="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
DEPOT_ADMIN_TOKEN="$admin" "$DEPOT" serve --config "$work/depot.yaml" > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done
mkdir -p "$work/data"
if ! UI_REGISTRY="http://127.0.0.1:$port" UI_ADMIN_TOKEN="$admin" UI_DEPOT="$DEPOT" UI_WORK="$work/data" UI_SCREENSHOTS="$SHOTS" \
  python3 Tests/e2e/ui/browser_test.py; then
  echo "--- server log (last 40 lines)"; tail -n 40 "$work/server.log"
  exit 1
fi
