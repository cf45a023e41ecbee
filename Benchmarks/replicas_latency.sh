#!/usr/bin/env bash
# Manifest GET through replicas (issue 16's "latency through replicas"), side by side in one run,
# all with authentication on (a bearer token on every request):
#   1. one `depot serve` on the embedded default (SQLite, local packs);
#   2. one replica of three on PostgreSQL and S3 (moto), asked directly;
#   3. the same three replicas behind haproxy (round robin), as a load balancer spreads a fleet.
# wrk -t2 -c32 for SECONDS (default 10) on GET /v2/<repo>/manifests/<tag>, and a runner's job
# lease poll on an empty queue (POST /depot/v1/jobs/lease; curl, sequential) the same three ways.
#
#   Benchmarks/replicas_latency.sh [SECONDS]     (after `swift build -c release --product depot`)
#
# CONNECTIONS (default 32): wrk's connections; POOL_SIZE (default 16, the default of
# catalog.pool_size): each replica's PostgreSQL connections.
# Everything runs on this machine's cores: the replicas, PostgreSQL, moto, haproxy and wrk share
# them, so (3) shows what the balancer and the shared catalog cost a request, not how a fleet of
# machines scales. Needs: wrk, haproxy, curl, openssl (apt); the e2e Python environment (moto).
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
DEPOT="${DEPOT_BIN:-$PWD/.build/release/depot}"
[[ -x "$DEPOT" ]] || { echo "build first: swift build -c release --product depot"; exit 1; }
for tool in wrk haproxy curl openssl; do command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install $tool)"; exit 1; }; done
VENV="$(scripts/e2e/python-env.sh | tail -n 1)" || { echo "cannot prepare the Python environment"; exit 1; }
PY="$VENV/bin/python"
T="$(mktemp -d /tmp/depot-bench-replicas.XXXXXX)"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
ok() { echo "# $*"; }
bad() { echo "FAIL: $*"; }
wait_for() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  while (( $(date +%s) < deadline )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  bad "timed out waiting for $what"; return 1
}
source scripts/e2e/replicas.sh
cleanup() {
  replicas_cleanup
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
ADMIN="$(openssl rand -hex 32)"
export DEPOT_TOKEN="$ADMIN"
MANIFEST_ACCEPT="application/vnd.oci.image.manifest.v1+json"

# A small model pushed through `base`, so that repository `bench/model:v1` has a manifest.
# Also a runner token (only runner tokens lease jobs) in RUNNER.
push_model() {
  mkdir -p "$T/model" && head -c 262144 /dev/urandom > "$T/model/weights.bin"
  DEPOT_REGISTRY="http://$1" "$DEPOT" push bench/model:v1 "$T/model" > "$T/push.log" 2>&1 || { cat "$T/push.log"; return 1; }
  RUNNER="$(DEPOT_REGISTRY="http://$1" "$DEPOT" admin token create --name "bench-runner-$RANDOM" --role runner --labels cpu --json \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["secret"])')" || return 1
}

# measure LABEL HOST:PORT: wrk on the manifest, then 500 sequential lease polls.
measure() {
  local label=$1 base=$2 out rps p50 p99 lease
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -H "Authorization: Bearer $ADMIN" -H "Accept: $MANIFEST_ACCEPT" \
    "http://$base/v2/bench/model/manifests/v1")"
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
  p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
  if echo "$out" | grep -q "Non-2xx"; then echo "FAIL: $label: $(echo "$out" | grep Non-2xx)"; fi
  lease="$("$PY" - "$base" "$RUNNER" <<'EOF'
import http.client, json, sys, time
host, port = sys.argv[1].split(":")
c = http.client.HTTPConnection(host, int(port))
body = json.dumps({"runner": "bench", "labels": ["cpu"]})
times = []
for _ in range(500):
    t = time.perf_counter()
    c.request("POST", "/depot/v1/jobs/lease", body, {"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    times.append((time.perf_counter() - t) * 1000)
    if r.status not in (200, 204): raise SystemExit(f"lease answered {r.status}")
times.sort()
print(f"{times[len(times) // 2]:.2f}ms {times[int(len(times) * 0.99)]:.2f}ms")
EOF
)" || lease="failed"
  printf '%-44s %10s req/s   p50 %8s   p99 %8s   lease poll p50/p99 %s\n' "$label" "$rps" "$p50" "$p99" "$lease"
}

echo "manifest GET by tag: wrk -t2 -c$CONNECTIONS -d${SECONDS_EACH}s, authentication on; lease: 500 sequential polls of an empty queue"
# 1. The embedded default.
SPORT="$(free_port)"
cat > "$T/single.yaml" <<EOF
server: {listen: 127.0.0.1:$SPORT}
auth: {enabled: true}
pipelines: {directory: $PWD/config/pipelines}
signing: {enabled: false}
storage: {root: $T/single}
EOF
DEPOT_ADMIN_TOKEN="$ADMIN" "$DEPOT" serve --config "$T/single.yaml" > "$T/single.log" 2>&1 & SINGLE_PID=$!
PIDS+=("$SINGLE_PID")
wait_for 60 "the single server" curl -sf "http://127.0.0.1:$SPORT/readyz" || exit 1
push_model "127.0.0.1:$SPORT" || exit 1
measure "1. one server, SQLite + local packs" "127.0.0.1:$SPORT"
kill "$SINGLE_PID"; wait "$SINGLE_PID" 2>/dev/null

# 2 and 3. Three replicas on PostgreSQL + S3.
replicas_backends > "$T/backends.log" || { cat "$T/backends.log"; exit 1; }
cat > "$T/base.yaml" <<EOF
auth: {enabled: true}
pipelines: {directory: $PWD/config/pipelines}
signing: {enabled: false}
EOF
for n in 1 2 3; do replicas_configure "$n" "$T/base.yaml"; done
# Info-level logs (the e2e scenarios' debug level writes a line per request), and GC at its
# default interval (the scenarios run it every 9 s).
for n in 1 2 3; do
  sed -i -e 's/log_level: debug/log_level: info/' -e 's/gc_interval_hours: 0.0025/gc_interval_hours: 24/' \
    -e "s/schema: $REPLICA_SCHEMA}/schema: $REPLICA_SCHEMA, pool_size: ${POOL_SIZE:-16}}/" "$T/r$n.yaml"
  replicas_start "$n"
done
for n in 1 2 3; do replicas_ready "$n" || exit 1; done
replicas_balancer 3 > "$T/balancer.log" || { cat "$T/balancer.log"; exit 1; }
push_model "$LB" || exit 1
measure "2. one replica of three, PostgreSQL + S3" "127.0.0.1:${RPORT[1]}"
measure "3. three replicas behind haproxy" "$LB"
