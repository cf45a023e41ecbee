#!/usr/bin/env bash
# End to end, with real servers: two real Triton nodes (nvidia-pytriton's tritonserver 2.51), each
# with a `depot triton-sync` agent; a real Prometheus (Debian) scraping their metrics; a bounded
# load generator on loopback. Then:
#   (a) a healthy new version rolls through 1% -> 10% -> 50% -> 100% and becomes stable;
#   (b) a failing version (its model raises) is rolled back at its first analysis: the alias
#       history shows the rollback with the metric values, and both nodes return to the stable one;
#   (c) a slow version (its model sleeps) is rolled back on latency relative to the stable one;
#   (d) a version that cannot load is rolled back on the nodes' reports;
#   (e) signatures: production's deploy policy refuses an unsigned bundle; nodes verify with their
#       own copy of the release key, so a manifest replaced after signing, rolled out by a
#       registry that lost its policy, is refused by triton-sync and rolled back.
# Analysis windows are seconds here (15 minutes by default).
#
#   scripts/e2e/canary.sh        (after `swift build --product depot`; builds it if missing)
#
# Starts and stops everything it needs (by PID), prints one line per check, exits 0 only when
# every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
# DEPOT_E2E_REPLICAS=3: the registry is three replicas on PostgreSQL and an S3 emulator behind
# haproxy (scripts/e2e/replicas.sh), and the leader running the canary controller is killed
# mid-rollout in (a); (c)-(e) are left to the single-server run.
REPLICAS="${DEPOT_E2E_REPLICAS:-1}"
ROOT="$PWD"
DEPOT="${DEPOT_BIN:-$ROOT/.build/debug/depot}"
[[ -x "$DEPOT" ]] || swift build --product depot >&2 || { echo "FAIL: cannot build depot"; exit 1; }
command -v prometheus >/dev/null || { echo "FAIL: prometheus is not installed (scripts/install-deps.sh --test)"; exit 1; }
VENV="$(scripts/e2e/python-env.sh | tail -n 1)" || { echo "FAIL: cannot prepare the Python environment"; exit 1; }
PY="$VENV/bin/python"
T="$(mktemp -d /tmp/depot-e2e-canary.XXXXXX)"
# A free loopback port that is none of the arguments (two binds to port 0 in a row can get the same one).
free_port() {
  "$PY" -c 'import socket, sys
taken = set(sys.argv[1:])
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = str(s.getsockname()[1]); s.close()
    if p not in taken: print(p); break' "$@"
}
PORT="$(free_port)"
export DEPOT_REGISTRY="http://127.0.0.1:$PORT"
PIDS=()
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failed=1; }
cleanup() {
  declare -F replicas_cleanup > /dev/null && replicas_cleanup
  for pid in "${PIDS[@]}" ${OTLP_PID:-}; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}" ${OTLP_PID:-}; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  if [[ "$failed" == 0 ]]; then rm -rf "$T"; else echo "(kept $T for inspection: *.log)"; fi
}
trap cleanup EXIT
json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls until the command succeeds
wait_for() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  while (( $(date +%s) < deadline )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  bad "timed out after waiting for $what"; return 1
}
MODEL=adder
REPO=demo/adder
status() { "$DEPOT" rollout status "$REPO" production --json; }

# Bundles: v1 and v2 healthy (v2 differs only by a comment), v3 raises, v4 sleeps 300 ms a request,
# v5 cannot even be loaded (its model.py raises at import), v6 healthy but never signed.
for v in 1 2 3 4 5 6; do
  case $v in 1|2|5|6) b=ok;; 3) b=fail;; 4) b=slow;; esac
  "$PY" Tests/e2e/make_bundle.py "$T/b$v" --model-name "$MODEL" --behaviour "$b" --delay-ms 300 >/dev/null || { bad "make_bundle v$v"; exit 1; }
  echo "# bundle v$v" >> "$T/b$v/$MODEL/1/model.py"
done
printf 'raise RuntimeError("v5 cannot start: missing weights")\n' | cat - "$T/b5/$MODEL/1/model.py" > "$T/m5" && mv "$T/m5" "$T/b5/$MODEL/1/model.py"

# Prometheus scrapes both Triton metrics ports (chosen now, used by the nodes below).
MA="$(free_port "$PORT")"; MB="$(free_port "$PORT" "$MA")"; PROM_PORT="$(free_port "$PORT" "$MA" "$MB")"
# The release manager's signing key; the registry and the nodes trust its public half.
"$DEPOT" key generate --out "$T/release.pem" > "$T/release.pub" && ok "release signing key created" || { bad "depot key generate"; exit 1; }
# Traces go to a collector (scripts/e2e/otlp_receiver.py); the end checks the rollouts' spans.
OTLP_PORT="$(free_port "$PORT" "$MA" "$MB" "$PROM_PORT")"
# (Not in PIDS: PIDS[0] is the registry, which scenario (e) restarts.)
"$PY" scripts/e2e/otlp_receiver.py "$OTLP_PORT" "$T/spans.jsonl" > "$T/otlp.log" 2>&1 & OTLP_PID=$!
cat > "$T/depot.yaml" <<EOF
server: {listen: 127.0.0.1:$PORT, log_level: info}
storage: {root: $T/storage}
pipelines: {directory: ""}
tracing: {enabled: true, endpoint: "http://127.0.0.1:$OTLP_PORT/v1/traces"}
auth: {enabled: true}
signing: {trusted_keys: {release: $T/release.pub}}
deploy_policy:
  production: {signed_by: [release]}
canary:
  prometheus_url: http://127.0.0.1:$PROM_PORT
  steps: [1, 10, 50, 100]
  analysis_interval: 8s
  node_ttl: 30s
  checks:
    - name: error-rate
      query: 'sum(rate(nv_inference_request_failure{model="{{model}}",version="{{version}}"}[{{window}}])) / (sum(rate(nv_inference_request_success{model="{{model}}",version="{{version}}"}[{{window}}])) + sum(rate(nv_inference_request_failure{model="{{model}}",version="{{version}}"}[{{window}}])))'
      max: 0.01
      pause_above: 0.005
    # Loopback latencies of a tiny model are ~0.5 ms, and two nodes on two busy cores differ by up
    # to ~7x (measured while a build ran): wide ratios here. The slow bundle is ~600x.
    - name: latency
      query: 'sum(rate(nv_inference_request_duration_us{model="{{model}}",version="{{version}}"}[{{window}}])) / sum(rate(nv_inference_request_success{model="{{model}}",version="{{version}}"}[{{window}}]))'
      max_ratio: 50
      pause_ratio: 20
EOF
# Authentication is on: each actor has the least it needs. CI pushes, a release manager (deployer)
# drives rollouts, each Triton agent has a node token for production only, an auditor reads.
ADMIN="$(openssl rand -hex 32)"
if (( REPLICAS > 1 )); then
  # Scaled out (scripts/e2e/replicas.sh): the same configuration on every replica, plus the shared
  # PostgreSQL catalog and S3 bucket; everything below talks to the balancer.
  source scripts/e2e/replicas.sh
  replicas_backends || exit 1
  for n in $(seq 1 "$REPLICAS"); do replicas_configure "$n" "$T/depot.yaml"; done
  for n in $(seq 1 "$REPLICAS"); do replicas_start "$n"; done
  for n in $(seq 1 "$REPLICAS"); do replicas_ready "$n" || exit 1; done
  replicas_balancer "$REPLICAS" || exit 1
  export DEPOT_REGISTRY="http://$LB"
else
  DEPOT_ADMIN_TOKEN="$ADMIN" "$DEPOT" serve --config "$T/depot.yaml" > "$T/depot.log" 2>&1 & PIDS+=($!)
  wait_for 20 "depot serve" curl -sf "$DEPOT_REGISTRY/healthz" || exit 1
fi
secret() { DEPOT_TOKEN="$ADMIN" "$DEPOT" admin token create "$@" --json | json 'd["secret"]'; }
CI="$(secret --name ci --role writer --repositories 'demo/**')"
RELEASE="$(secret --name release --role deployer --repositories 'demo/**')"
NODE="$(secret --name triton-nodes --role node --deployments "$REPO/production")"
AUDITOR="$(secret --name auditor --role auditor)"
[[ "$CI" == dpt_* && "$RELEASE" == dpt_* && "$NODE" == dpt_* && "$AUDITOR" == dpt_* ]] && ok "tokens for CI, release, nodes and audit" || { bad "token creation"; exit 1; }
export DEPOT_TOKEN="$RELEASE"
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$DEPOT_REGISTRY/depot/v1/repositories/$REPO/deployments/production/rollout")"
[[ "$code" == 401 ]] && ok "an anonymous rollout is refused (401)" || bad "anonymous rollout answered $code"

# (0) v1 is the first deployment: stable at once.
for v in 1 2 3 4 5 6; do DEPOT_TOKEN="$CI" "$DEPOT" push "$REPO:v$v" "$T/b$v" --quiet >/dev/null || { bad "push v$v"; exit 1; }; done
# Releases v1-v5 are signed with the release key (pushing the signature referrer needs push rights).
for v in 1 2 3 4 5; do DEPOT_TOKEN="$CI" "$DEPOT" sign "$REPO:v$v" --key "$T/release.pem" --signer release-manager >/dev/null || bad "sign v$v"; done
"$DEPOT" verify "$REPO:v1" --key "release=$T/release.pub" > "$T/verify1.txt" && grep -q "verified by release" "$T/verify1.txt" \
  && ok "v1 verifies locally against the release key: $(sed -n 2p "$T/verify1.txt" | cut -c1-120)" || bad "verify v1: $(cat "$T/verify1.txt")"
out="$("$DEPOT" verify "$REPO:v6" --key "release=$T/release.pub" 2>&1)" && bad "unsigned v6 verified" || ok "unsigned v6 does not verify: ${out##*error: }"
out="$("$DEPOT" rollout start "$REPO" production v6 2>&1)" && bad "an unsigned bundle was rolled out to production" \
  || { [[ "$out" == *"deploy policy"*"release"* ]] && ok "production refuses the unsigned v6: ${out#Error: }" || bad "unsigned rollout refused for another reason: $out"; }
"$DEPOT" inspect "$REPO:v6" | grep -q "policy production: refused" && ok "depot inspect shows the policy verdict" || bad "inspect v6: $("$DEPOT" inspect "$REPO:v6" | tail -n 4)"
out="$("$DEPOT" push "$REPO:sneaky" "$T/b1" --quiet 2>&1)" && bad "a deployer pushed" || ok "a deployer token cannot push: ${out#error: }"
out="$(DEPOT_TOKEN="$CI" "$DEPOT" rollout start "$REPO" production v2 2>&1)" && bad "CI started a rollout" || ok "a CI token cannot start a rollout"
V1="$("$DEPOT" inspect "$REPO:v1" --json | json 'd["digest"]')"
V2="$("$DEPOT" inspect "$REPO:v2" --json | json 'd["digest"]')"
V3="$("$DEPOT" inspect "$REPO:v3" --json | json 'd["digest"]')"
V4="$("$DEPOT" inspect "$REPO:v4" --json | json 'd["digest"]')"
"$DEPOT" rollout start "$REPO" production v1 --json > "$T/start1.json" || { bad "first deployment"; exit 1; }
[[ "$(json 'd["deployment"]["stable"]' < "$T/start1.json")" == "$V1" ]] && ok "v1 is the first deployment: stable at once" || bad "first deployment: $(cat "$T/start1.json")"
out="$("$DEPOT" rollout start "$REPO" staging v1 2>&1)"; echo "$out" | grep -q "" # (staging gets nothing)
notbundle="$(DEPOT_TOKEN="$CI" "$DEPOT" push demo/plain:v1 "$T/depot.yaml" --quiet >/dev/null; "$DEPOT" rollout start demo/plain production v1 2>&1)"
[[ "$notbundle" == *"is not a Triton bundle"* ]] && ok "a digest that is not a Triton bundle is refused: ${notbundle#Error: }" || bad "non-bundle rollout: $notbundle"

# Two Triton nodes, each with its agent.
for n in A B; do
  mport=$([[ $n == A ]] && echo "$MA" || echo "$MB")
  mkdir -p "$T/repo$n"
  "$PY" Tests/e2e/triton_node.py serve "$T/repo$n" --mode explicit --metrics-port "$mport" > "$T/triton$n.out" 2> "$T/triton$n.log" & PIDS+=($!)
done
for n in A B; do wait_for 60 "Triton $n" grep -q '"http"' "$T/triton$n.out" || exit 1; done
URL_A="$(head -n 1 "$T/tritonA.out" | json 'd["http"]')"; URL_B="$(head -n 1 "$T/tritonB.out" | json 'd["http"]')"
for n in A B; do
  url=$([[ $n == A ]] && echo "$URL_A" || echo "$URL_B")
  DEPOT_TOKEN="$NODE" "$DEPOT" triton-sync --deployment "$REPO:production" --model-repository "$T/repo$n" --node "node-$n" --triton "$url" --interval 1 \
    --trusted-key "release=$T/release.pub" \
    > "$T/sync$n.log" 2>&1 & PIDS+=($!)
done
nodes_on() {  # nodes_on DIGEST: both nodes report serving it, ready
  status | "$PY" -c 'import json,sys; d=json.load(sys.stdin); n=[x for x in d["nodes"] if x.get("state")=="ready" and x.get("digest")==sys.argv[1]]; sys.exit(0 if len(n)==2 else 1)' "$1"
}
wait_for 60 "both nodes serving v1" nodes_on "$V1" && ok "both Triton nodes serve v1 (version 1), reported READY by triton-sync"
ls "$T/repoA/$MODEL" | grep -qx 1 && ok "node A's model repository holds $MODEL/1" || bad "node A layout: $(ls -R "$T/repoA" | head)"

# Prometheus and the load generator.
"$PY" Tests/e2e/prometheus_node.py serve --target "127.0.0.1:$MA" --target "127.0.0.1:$MB" --port "$PROM_PORT" > "$T/prom.out" 2>&1 & PIDS+=($!)
wait_for 30 "Prometheus" curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" || exit 1
"$PY" Tests/e2e/loadgen.py --targets "$URL_A,$URL_B" --model "$MODEL" --duration 240 --rate 20 --out "$T/load.json" > "$T/load.log" 2>&1 & PIDS+=($!)
LOADGEN_PID=$!
sleep 8   # Prometheus's first scrapes and some stable traffic

rollout_state() { status | json 'd.get("rollout", {}).get("state", "")'; }
rollout_is() { [[ "$(rollout_state)" == "$1" ]]; }
# (a) a healthy version rolls through every step and becomes stable.
"$DEPOT" rollout start "$REPO" production v2 > /dev/null && ok "rollout of v2 started" || bad "rollout start v2"
conflict="$("$DEPOT" rollout start "$REPO" production v3 2>&1)"
[[ "$conflict" == *"promote, abort or wait"* ]] && ok "a second rollout during one is refused: ${conflict#Error: }" || bad "concurrent rollout: $conflict"
if (( REPLICAS > 1 )); then
  # The canary controller runs on the leader: kill it once the rollout has taken its first step.
  advanced() { status | "$PY" -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["rollout"]["decisions"]) >= 2 else 1)'; }
  wait_for 60 "v2's first step" advanced && replicas_fail_over
fi
wait_for 180 "v2 to be promoted" rollout_is promoted
status > "$T/a.json"
"$DEPOT" rollout status "$REPO" production
"$PY" - "$T/a.json" "$V2" <<'EOF' && ok "v2 went 1% -> 10% -> 50% -> 100% on passing checks and is stable" || bad "scenario (a): $(head -c 1500 "$T/a.json")"
import json, sys
d = json.load(open(sys.argv[1])); r = d["rollout"]
assert d["deployment"]["stable"] == sys.argv[2] and "canary" not in d["deployment"], d["deployment"]
assert [e["decision"] for e in r["decisions"]] == ["start", "advance", "advance", "advance", "promote"], r["decisions"]
assert [e["weight"] for e in r["decisions"]] == [1, 10, 50, 100, 100], r["decisions"]
for e in r["decisions"][1:]:
    ms = {m["check"]: m for m in e["measurements"]["measurements"]}
    assert ms["error-rate"]["outcome"] == "pass" and ms["error-rate"]["canary"] == 0, ms
EOF
# The web UI's rollout page with these real measurements (its chart of the checks), in a real
# browser; the README's rollout screenshot is this page.
shot="${UI_SCREENSHOTS:-$PWD/.build/ui-screenshots}/rollout-canary.png"
mkdir -p "$(dirname "$shot")"
python3 Tests/e2e/ui/screenshot.py "$DEPOT_REGISTRY" "$RELEASE" "/ui/repositories/$REPO/-/deployments/production" "$shot" \
  "Checks over time" "error-rate" "promoted" "advance" \
  && ok "the web UI's rollout page shows the decisions and a chart of the measured checks ($shot)" \
  || bad "the web UI's rollout page (see $shot)"
wait_for 60 "both nodes serving v2" nodes_on "$V2" && ok "both nodes serve v2 after promotion"
[[ "$("$DEPOT" resolve "$REPO" production 2>/dev/null | tail -n 1)" == *"$V2"* ]] && ok "production resolves to v2" || bad "production alias: $("$DEPOT" resolve "$REPO" production 2>&1)"

# (b) a failing version is rolled back at its first analysis.
"$DEPOT" rollout start "$REPO" production v3 > /dev/null && ok "rollout of v3 (raises) started" || bad "rollout start v3"
wait_for 60 "v3 to be rolled back" rollout_is rolled-back
status > "$T/b.json"
"$DEPOT" rollout status "$REPO" production
"$PY" - "$T/b.json" "$V2" <<'EOF' && ok "v3 rolled back at its first analysis on error-rate, values recorded" || bad "scenario (b): $(head -c 1500 "$T/b.json")"
import json, sys
d = json.load(open(sys.argv[1])); r = d["rollout"]
assert d["deployment"]["stable"] == sys.argv[2] and "canary" not in d["deployment"], d["deployment"]
assert [e["decision"] for e in r["decisions"]] == ["start", "rollback"], r["decisions"]
ms = {m["check"]: m for m in r["decisions"][1]["measurements"]["measurements"]}
assert ms["error-rate"]["outcome"] == "fail" and ms["error-rate"]["canary"] > 0.5, ms
assert "error-rate" in r["reason"], r["reason"]
EOF
"$DEPOT" history "$REPO" production > "$T/history.txt"
tail -n 1 "$T/history.txt" | grep -q "error-rate" && ok "alias history shows the rollback with its values: $(tail -n 1 "$T/history.txt" | cut -c1-220)" \
  || bad "alias history: $(cat "$T/history.txt")"
wait_for 60 "both nodes back on v2" nodes_on "$V2" && ok "both nodes are back on the stable v2"

# Scaled out, (c) to (e) add nothing about replicas: they run in the single-server scenario.
if (( REPLICAS == 1 )); then
# (c) a slow version is rolled back on latency relative to the stable one.
"$DEPOT" rollout start "$REPO" production v4 > /dev/null && ok "rollout of v4 (300 ms a request) started" || bad "rollout start v4"
wait_for 60 "v4 to be rolled back" rollout_is rolled-back
status > "$T/c.json"
"$PY" - "$T/c.json" <<'EOF' && ok "v4 rolled back on latency: $(json 'd["rollout"]["reason"]' < "$T/c.json" | cut -c1-200)" || bad "scenario (c): $(head -c 1500 "$T/c.json")"
import json, sys
r = json.load(open(sys.argv[1]))["rollout"]
assert [e["decision"] for e in r["decisions"]] == ["start", "rollback"], r["decisions"]
assert "latency" in r["reason"], r["reason"]
EOF
wait_for 60 "both nodes back on v2" nodes_on "$V2" && ok "both nodes are back on v2 again"

# (d) a version a node cannot load: triton-sync keeps serving v2, reports the failure, and the rollout is rolled back.
"$DEPOT" rollout start "$REPO" production v5 > /dev/null && ok "rollout of v5 (fails to load) started" || bad "rollout start v5"
wait_for 60 "v5 to be rolled back" rollout_is rolled-back
status > "$T/d.json"
"$PY" - "$T/d.json" <<'EOF' && ok "v5 rolled back: $(json 'd["rollout"]["reason"]' < "$T/d.json" | cut -c1-220)" || bad "scenario (d): $(head -c 1500 "$T/d.json")"
import json, sys
r = json.load(open(sys.argv[1]))["rollout"]
assert [e["decision"] for e in r["decisions"]] == ["start", "rollback"], r["decisions"]
assert "v5 cannot start" in r["reason"], r["reason"]
EOF
grep -q "failed to load" "$T"/sync?.log && ok "triton-sync logged the load failure and restored the previous version" || bad "triton-sync logs: $(tail -n 5 "$T"/sync?.log)"
wait_for 60 "both nodes on v2" nodes_on "$V2" && ok "both nodes serve v2"

# (e) The nodes do not take the registry's word. The registry restarts without its deploy policy (a
# misconfigured or compromised registry), and v2's tag is re-pushed with a changed model.py after v2
# was signed: production would roll out a digest nobody signed. triton-sync verifies it against its
# own copy of the release key, refuses to load it, reports the failure, and the rollout rolls back.
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null
grep -v -e '^deploy_policy:' -e '^  production: {signed_by' "$T/depot.yaml" > "$T/depot-nopolicy.yaml"
DEPOT_ADMIN_TOKEN="$ADMIN" "$DEPOT" serve --config "$T/depot-nopolicy.yaml" > "$T/depot2.log" 2>&1 & PIDS[0]=$!
wait_for 20 "depot serve (restarted without a deploy policy)" curl -sf "$DEPOT_REGISTRY/healthz" || exit 1
echo "# replaced after signing" >> "$T/b2/$MODEL/1/model.py"
DEPOT_TOKEN="$CI" "$DEPOT" push "$REPO:v2" "$T/b2" --quiet >/dev/null || bad "re-push of v2"
V2X="$("$DEPOT" inspect "$REPO:v2" --json | json 'd["digest"]')"
[[ "$V2X" != "$V2" ]] && ok "v2's tag now names a replaced manifest ($V2X)" || bad "v2 was not replaced"
"$DEPOT" rollout start "$REPO" production v2 > /dev/null && ok "the policy-less registry starts a rollout of the replaced v2" || bad "rollout start of replaced v2"
wait_for 60 "the replaced v2 to be rolled back" rollout_is rolled-back
status > "$T/e.json"
"$PY" - "$T/e.json" <<'EOF' && ok "replaced v2 rolled back: $(json 'd["rollout"]["reason"]' < "$T/e.json" | cut -c1-220)" || bad "scenario (e): $(head -c 1500 "$T/e.json")"
import json, sys
r = json.load(open(sys.argv[1]))["rollout"]
assert [e["decision"] for e in r["decisions"]] == ["start", "rollback"], r["decisions"]
assert "no signature by a trusted key" in r["reason"], r["reason"]
EOF
grep -q "refusing to load" "$T"/sync?.log && ok "triton-sync refused to load the unsigned digest" || bad "triton-sync logs: $(tail -n 5 "$T"/sync?.log)"
wait_for 60 "both nodes on v2" nodes_on "$V2" && ok "both nodes still serve the signed v2"

fi

# The served facts and the audit journal.
served="$(curl -sf -H "Authorization: Bearer $AUDITOR" "$DEPOT_REGISTRY/depot/v1/lineage/$V3/served")"
echo "$served" | "$PY" -c 'import json,sys; s=json.load(sys.stdin)["served"]; sys.exit(0 if any(x["role"]=="canary" and x["weight"]==1 and "to" in x for x in s) else 1)' \
  && ok "lineage-visible fact: v3 served 1% of production from its start to its rollback" || bad "served: $served"
DEPOT_TOKEN="$AUDITOR" "$DEPOT" audit log --action canary.rollback --json | grep -q "$V3" && ok "the rollback is in the audit journal" || bad "audit"
DEPOT_TOKEN="$AUDITOR" "$DEPOT" audit log --action canary.start --json | grep -q '"token:release"' && ok "rollouts are recorded under the authenticated principal (token:release)" || bad "audit actor: $(DEPOT_TOKEN="$AUDITOR" "$DEPOT" audit log --json | head -c 600)"
DEPOT_TOKEN="$AUDITOR" "$DEPOT" audit verify >/dev/null && ok "audit chain intact" || bad "audit verify"
out="$(DEPOT_TOKEN="$NODE" "$DEPOT" rollout abort "$REPO" production 2>&1)" && bad "a node token drove a rollout" || ok "a node token cannot drive rollouts"

kill "$LOADGEN_PID" 2>/dev/null
# Spans are exported in batches every few seconds: wait for the last analyses to arrive.
traces_ok() { "$PY" scripts/e2e/check_traces.py canary "$T/spans.jsonl" > "$T/trace-summary.txt" 2>&1; }
wait_for 30 "the rollouts' spans" traces_ok && ok "traces: $(tail -n 1 "$T/trace-summary.txt")" \
  || bad "traces (see $T/spans.jsonl): $(cat "$T/trace-summary.txt")"
if [[ "$failed" == 0 ]]; then echo "canary e2e: all checks passed"; else echo "canary e2e: FAILED"; fi
exit "$failed"
