#!/usr/bin/env bash
# End to end, with real parts: a scikit-learn model pushed to Depot goes through the seed pipeline
# (config/pipelines/sklearn-to-triton.yaml: convert -> optimize -> package, run by the embedded
# runner with the built-in hooks), the Triton bundle is pulled and served by a real Triton server
# (nvidia-pytriton's tritonserver 2.51, python backend running the ONNX through onnxruntime), its
# answers match the original model, and the bundle's lineage walks back to the pushed model with
# the job ids. A replayed tag starts nothing new; a model the converter cannot handle fails
# permanently with its reason and publishes nothing; a malicious pickle runs nothing and its job
# fails before any runner receives it.
#
#   scripts/e2e/pipeline.sh        (after `swift build --product depot`; builds it if missing)
#
# Starts and stops everything it needs (by PID), prints one line per check, exits 0 only when
# every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
DEPOT="${DEPOT_BIN:-$ROOT/.build/debug/depot}"
[[ -x "$DEPOT" ]] || swift build --product depot >&2 || { echo "FAIL: cannot build depot"; exit 1; }

VENV="$(scripts/e2e/python-env.sh | tail -n 1)" || { echo "FAIL: cannot prepare the Python environment"; exit 1; }
PY="$VENV/bin/python"
T="$(mktemp -d /tmp/depot-e2e-pipeline.XXXXXX)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DEPOT_REGISTRY="http://127.0.0.1:$PORT"
SERVER_PID=""
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failed=1; }
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  if [[ -n "${OTLP_PID:-}" ]]; then kill "$OTLP_PID" 2>/dev/null; wait "$OTLP_PID" 2>/dev/null; fi
  if [[ "$failed" == 0 ]]; then rm -rf "$T"; else echo "(kept $T for inspection: server.log, jobs)"; fi
}
trap cleanup EXIT

# Traces go to a collector (scripts/e2e/otlp_receiver.py: OTLP/HTTP, decoded with the
# OpenTelemetry project's protobuf classes); the end checks that pushes, pulls and jobs are in them.
OTLP_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$PY" scripts/e2e/otlp_receiver.py "$OTLP_PORT" "$T/spans.jsonl" > "$T/otlp.log" 2>&1 &
OTLP_PID=$!
cat > "$T/depot.yaml" <<EOF
server: {listen: 127.0.0.1:$PORT, log_level: info}
storage: {root: $T/storage}
auth: {enabled: true}
tracing: {enabled: true, endpoint: "http://127.0.0.1:$OTLP_PORT/v1/traces"}
# Only what the pipeline built and signed may reach production (a Python-backend bundle runs its
# model.py on every node).
deploy_policy:
  production: {signed_by: [pipeline], python_backend_signed_by: [pipeline]}
pipelines:
  directory: $ROOT/config/pipelines
  runner: {python: $PY, hooks_dir: $ROOT/hooks/builtin, work_dir: $T/runner}
EOF
# Authentication is on: CI pushes with a writer token for models/**, an operator reads jobs and
# deployments with a maintainer token; the embedded runner has its own credential.
ADMIN="$(openssl rand -hex 32)"
DEPOT_ADMIN_TOKEN="$ADMIN" "$DEPOT" serve --config "$T/depot.yaml" > "$T/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "$DEPOT_REGISTRY/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$DEPOT_REGISTRY/healthz" >/dev/null || { bad "depot serve did not start (see $T/server.log)"; exit 1; }
secret() { DEPOT_TOKEN="$ADMIN" "$DEPOT" admin token create "$@" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["secret"])'; }
CI="$(secret --name ci --role writer --repositories 'models/**')"
OPS="$(secret --name ops --role maintainer)"
export DEPOT_TOKEN="$OPS"
out="$(DEPOT_TOKEN= "$DEPOT" jobs list 2>&1)" && bad "anonymous jobs list answered" || ok "anonymous callers are refused: ${out#error: }"
sleep 0.5   # the scheduler registers its event cursor on its first tick

# jobs_json [filter args] -> the job list as JSON
jobs_json() { "$DEPOT" jobs list --json --limit 1000 "$@"; }
# wait_jobs N TIMEOUT: waits until no job is queued/leased/running and either N jobs exist or one failed
wait_jobs() {
  local want=$1 deadline=$(( $(date +%s) + $2 ))
  while (( $(date +%s) < deadline )); do
    if jobs_json | "$PY" -c '
import json, sys
jobs = json.load(sys.stdin)["jobs"]
final = all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs)
sys.exit(0 if jobs and final and (len(jobs) >= int(sys.argv[1]) or any(j["state"] != "succeeded" for j in jobs)) else 1)' "$want"
    then return 0; fi
    sleep 0.5
  done
  return 1
}

# 1. A real scikit-learn model, pushed as a user would.
"$PY" Tests/e2e/make_sklearn_model.py "$T/src" >/dev/null || { bad "cannot make the scikit-learn model"; exit 1; }
INPUT="$(DEPOT_TOKEN="$CI" "$DEPOT" push models/iris:v1 "$T/src/model.pkl" "$T/src/sample_inputs.npy" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["digest"])')"
[[ "$INPUT" == sha256:* ]] && ok "pushed models/iris:v1 ($INPUT)" || { bad "push of models/iris:v1"; exit 1; }

# 2. The pipeline runs: convert -> optimize -> package -> deploy (canary; the first deployment is stable at once).
if wait_jobs 4 300; then ok "four jobs finished"; else bad "jobs did not finish in 300 s"; fi
"$DEPOT" jobs list
jobs_json > "$T/jobs.json"
states="$("$PY" -c 'import json,sys; print(" ".join(j["stage"] + "=" + j["state"] for j in sorted(json.load(open(sys.argv[1]))["jobs"], key=lambda j: j["id"])))' "$T/jobs.json")"
if [[ "$states" == "convert=succeeded optimize=succeeded package=succeeded deploy=succeeded" ]]; then ok "stages succeeded: $states"
else
  bad "stages: $states"
  for id in $("$PY" -c 'import json,sys; print(" ".join(str(j["id"]) for j in json.load(open(sys.argv[1]))["jobs"] if j["state"] != "succeeded"))' "$T/jobs.json"); do
    "$DEPOT" jobs show "$id"
  done
  exit 1
fi

# 2b. The stages ran in the bubblewrap sandbox, and their logs say so.
sandboxed=0
for id in $("$PY" -c 'import json,sys; print(" ".join(str(j["id"]) for j in json.load(open(sys.argv[1]))["jobs"] if j["stage"] != "deploy"))' "$T/jobs.json"); do
  "$DEPOT" jobs show "$id" | grep -q "sandbox: bubblewrap" && sandboxed=$((sandboxed + 1))
done
[[ "$sandboxed" == 3 ]] && ok "convert, optimize and package ran in the bubblewrap sandbox (their logs say so)" || bad "sandboxed stages: $sandboxed of 3"

# 3. Outputs: types, recorded checks.
"$DEPOT" inspect models/iris:v1-onnx --json > "$T/onnx.json" 2>&1
"$PY" - "$T/onnx.json" <<'EOF' && ok "v1-onnx is an ONNX artifact with its verification recorded (max_abs_diff, tolerance)" || bad "v1-onnx metadata: $(head -c 600 "$T/onnx.json")"
import json, sys
m = json.load(open(sys.argv[1]))
text = json.dumps(m)
assert "application/vnd.depot.onnx.v1" in text, "artifactType"
assert "dev.depot.metric.max_abs_diff" in text and "dev.depot.convert.tolerance" in text, "annotations"
EOF
"$DEPOT" inspect models/iris:v1-optimized --json > "$T/opt.json" 2>&1
grep -q "dev.depot.metric.latency_before_ms" "$T/opt.json" && grep -q "dev.depot.metric.accuracy_delta" "$T/opt.json" \
  && ok "v1-optimized records latency before/after and the accuracy delta" || bad "v1-optimized metadata"
"$DEPOT" inspect models/iris:v1-triton --json > "$T/bundle.json" 2>&1
grep -q "application/vnd.depot.triton.bundle.v1" "$T/bundle.json" && ok "v1-triton is a Triton bundle" || bad "v1-triton artifact type"

# 4. The bundle, pulled into a model repository, served by a real Triton: answers match the original model.
"$DEPOT" pull models/iris:v1-triton -o "$T/bundle" --quiet && ok "pulled models/iris:v1-triton" || bad "pull of the bundle"
if "$PY" Tests/e2e/check_bundle.py --bundle "$T/bundle" --model-name iris --original "$T/src/model.pkl" \
     --samples "$T/src/sample_inputs.npy"; then ok "a real Triton serves the bundle and agrees with the scikit-learn model"
else bad "Triton check of the bundle"; fi

# 5. Lineage of the served bundle walks back to the pushed model through the three jobs.
"$DEPOT" lineage models/iris:v1-triton --json > "$T/lineage.json"
"$PY" - "$T/lineage.json" "$T/jobs.json" "$INPUT" <<'EOF' && ok "lineage: bundle -packaged-from-> optimized -quantized/compiled-from-> onnx -converted-from-> v1, each edge with its job id" || bad "lineage: $(head -c 800 "$T/lineage.json")"
import json, sys
lineage, jobs, pushed = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["jobs"], sys.argv[3]
nodes = lineage.get("nodes") or lineage.get("ancestors") or []
edges = [n.get("edge", n) for n in nodes]
typed = [e for e in edges if e.get("relation") != "subject"]
by_stage = {j["stage"]: j for j in jobs}
want = [("packaged-from", "package"), (None, "optimize"), ("converted-from", "convert")]
assert len(typed) == 3, typed
for e, (rel, stage) in zip(typed, want):
    j = by_stage[stage]
    assert e["job"] == str(j["id"]), (e, j["id"])
    assert e["parent"] == j["input"]["digest"], (e, j)
    if rel: assert e["relation"] == rel, e
assert typed[1]["relation"] in ("quantized-from", "compiled-from"), typed[1]
assert typed[-1]["parent"] == pushed, (typed[-1], pushed)
EOF

# 6. The deploy stage made the bundle the stable version of models/iris:production (first deployment).
BUNDLE="$("$DEPOT" inspect models/iris:v1-triton --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["digest"])')"
stable="$("$DEPOT" rollout status models/iris production --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["deployment"].get("stable", ""))')"
[[ "$stable" == "$BUNDLE" ]] && ok "the deploy stage made v1-triton the stable version of production" || bad "production stable: $stable, bundle $BUNDLE"

# 6b. Trust: every stage output is signed by the registry's pipeline key; a holder of the public key
# verifies it without trusting the registry; the edges the runner wrote under its leases are
# verified; a hand-made copy of the bundle (unsigned) cannot be rolled out to production.
"$DEPOT" key show --out "$T/pipeline.pub" >/dev/null 2>&1 && ok "fetched the pipeline's public key" || bad "depot key show"
for tag in v1-onnx v1-optimized v1-triton; do
  "$DEPOT" verify "models/iris:$tag" --key "pipeline=$T/pipeline.pub" > "$T/verify.txt" 2>&1 && grep -q "verified by pipeline  job" "$T/verify.txt" \
    && ok "$tag is signed by the pipeline key: $(sed -n 2p "$T/verify.txt" | cut -c1-110)" || bad "verify $tag: $(cat "$T/verify.txt")"
done
"$DEPOT" lineage models/iris:v1-triton --json > "$T/lineage-v.json"
"$PY" - "$T/lineage-v.json" <<'EOF' && ok "the pipeline's lineage edges are verified (job ids), not merely declared" || bad "verified lineage: $(head -c 600 "$T/lineage-v.json")"
import json, sys
d = json.load(open(sys.argv[1]))
nodes = d.get("nodes") or d.get("ancestors") or []
typed = [n["edge"] for n in nodes if n["edge"]["relation"] != "subject"]
assert typed and all(e.get("verified_job") for e in typed), typed
EOF
cp -r "$T/bundle" "$T/handmade" && echo "# edited by hand" >> "$(find "$T/handmade" -name model.py | head -n 1)"
DEPOT_TOKEN="$CI" "$DEPOT" push models/iris:handmade "$T/handmade" --quiet >/dev/null || bad "push of the hand-made bundle"
REL="$(secret --name release --role deployer --repositories 'models/**')"
out="$(DEPOT_TOKEN="$REL" "$DEPOT" rollout start models/iris production handmade 2>&1)" && bad "an unsigned bundle reached production" \
  || { [[ "$out" == *"deploy policy"*"pipeline key"* ]] && ok "production refuses the unsigned hand-made bundle: ${out#Error: }" || bad "hand-made rollout: $out"; }

# 7. A replayed trigger (a second tag on the same digest) starts nothing new.
DEPOT_TOKEN="$CI" "$DEPOT" tag models/iris:v1 v1-again >/dev/null
sleep 2
n="$(jobs_json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')"
[[ "$n" == 4 ]] && ok "a second tag on the same digest started no job (still 4)" || bad "jobs after the replay: $n"

# 8. A model the converter cannot handle (a clean pickle of plain data, not a model): the job fails
# permanently with its reason, nothing is published.
"$PY" -c 'import pickle, sys; open(sys.argv[1], "wb").write(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))' "$T/broken.pkl"
DEPOT_TOKEN="$CI" "$DEPOT" push models/broken:v1 "$T/broken.pkl" --quiet >/dev/null
wait_jobs 5 120 || true
broken="$(jobs_json --pipeline sklearn-to-triton | "$PY" -c '
import json, sys
j = [j for j in json.load(sys.stdin)["jobs"] if j["input"]["repository"] == "models/broken"][0]
print(j["state"], j["attempt"], j.get("reason", "").replace("\n", " ")[:300])')"
case "$broken" in
  "failed 1 "*"status 78"*) ok "unconvertible model: failed at once (no retry): ${broken#failed 1 }";;
  *) bad "unconvertible model: $broken";;
esac
tags="$("$DEPOT" ls -q models/broken | tr '\n' ' ')"
[[ "$tags" == "v1 " ]] && ok "nothing published for it (tags: $tags)" || bad "tags of models/broken: $tags"

# 9. A malicious pickle: pushed to models/x:v1, it runs no code (the marker stays absent) and its job
# fails before any runner receives it, saying which import and how to opt in (docs/SECURITY.md).
MARKER="$T/pwned"
"$PY" - "$T/evil.pkl" "$MARKER" <<'PYEOF'
import os, pickle, sys
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[2]}",))
open(sys.argv[1], "wb").write(pickle.dumps(Payload(), protocol=4))
PYEOF
DEPOT_TOKEN="$CI" "$DEPOT" push models/x:v1 "$T/evil.pkl" --quiet >/dev/null || bad "push of models/x:v1"
deadline=$(( $(date +%s) + 60 )); evil=""
while (( $(date +%s) < deadline )); do
  evil="$(jobs_json --pipeline sklearn-to-triton | "$PY" -c '
import json, sys
jobs = [j for j in json.load(sys.stdin)["jobs"] if j["input"]["repository"] == "models/x"]
print(" ".join([jobs[0]["state"], str(jobs[0]["attempt"]), jobs[0].get("reason", "").replace("\n", " ")]) if jobs else "")')"
  [[ "$evil" == failed* ]] && break
  sleep 0.5
done
case "$evil" in
  "failed 0 "*"evil.pkl imports "*"system (runs code)"*"pipelines.trust_pickle"*) ok "malicious pickle: job failed before any runner: ${evil:9:160}…";;
  *) bad "malicious pickle: $evil";;
esac
sleep 2   # a runner that had received it would have run it by now
[[ ! -e "$MARKER" ]] && ok "malicious pickle: no code ran (marker absent)" || bad "malicious pickle: the payload ran ($MARKER exists)"
"$DEPOT" jobs list --pipeline sklearn-to-triton | grep -q "refused before any stage ran" \
  && ok "depot jobs list shows why" || bad "depot jobs list does not show the refusal"
"$DEPOT" audit log --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
entries = d["entries"] if isinstance(d, dict) else d
assert any(e["action"] == "pipeline.pickle_refused" and e.get("repository") == "models/x" for e in entries)' \
  && ok "the refusal is audited" || bad "no pipeline.pickle_refused audit entry"

# Outputs were pushed by the embedded runner under its own identity, not by CI.
"$DEPOT" audit log --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
entries = d["entries"] if isinstance(d, dict) else d
actors = {e["actor"] for e in entries if (e.get("tag") or "").startswith("v1-")}
assert "token:embedded-runner" in actors, actors' && ok "stage outputs are recorded under the runner's identity" || bad "audit actors of outputs"
out="$(DEPOT_TOKEN="$CI" "$DEPOT" alias set models/iris production v1-triton 2>&1)" && bad "CI moved production" || ok "a CI token cannot move production"

# An online backup while it serves: the copy is a registry of its own, with the same users,
# tokens, tags and signing key (checked after the original stops, below).
if "$DEPOT" backup --storage "$T/storage" "$T/backup" --verify > "$T/backup.txt" 2>&1; then
  ok "backed up while serving: $(tr '\n' ' ' < "$T/backup.txt" | cut -c1-160)"
else
  bad "depot backup (see $T/backup.txt)"
fi

kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
# A registry restored from the backup (authentication on, no bootstrap token: its users and
# tokens came with the catalog) serves the same bundle to the operator's token, refuses anonymous
# callers, and its audit journal's hash chain verifies.
cat > "$T/restored.yaml" <<EOF
server: {listen: 127.0.0.1:$PORT, log_level: info}
storage: {root: $T/backup}
auth: {enabled: true}
EOF
"$DEPOT" serve --config "$T/restored.yaml" > "$T/restored.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "$DEPOT_REGISTRY/healthz" >/dev/null && break; sleep 0.1; done
restored="$("$DEPOT" inspect models/iris:v1-triton --json 2>>"$T/restored.log" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["digest"])')"
[[ -n "$restored" && "$restored" == "$BUNDLE" ]] && ok "the restored registry serves the same bundle ($restored)" \
  || bad "restored registry: bundle $restored, expected $BUNDLE (see $T/restored.log)"
DEPOT_TOKEN= "$DEPOT" inspect models/iris:v1-triton >/dev/null 2>&1 && bad "the restored registry answered an anonymous caller" \
  || ok "the restored registry refuses anonymous callers"
"$DEPOT" audit verify >/dev/null 2>&1 && ok "the restored audit chain verifies" || bad "audit verify on the restored registry"
"$DEPOT" pull models/iris:v1-triton -o "$T/restored-bundle" --quiet \
  && ok "pulled the bundle from the restored registry (each file checked against its digest)" || bad "pull from the restored registry"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
# The server flushed its spans on the way down (graceful shutdown of the exporter).
"$PY" scripts/e2e/check_traces.py pipeline "$T/spans.jsonl" > "$T/trace-summary.txt" 2>&1 \
  && ok "traces: $(tail -n 1 "$T/trace-summary.txt")" || bad "traces (see $T/spans.jsonl): $(cat "$T/trace-summary.txt")"
if "$DEPOT" fsck --storage "$T/storage" >/dev/null; then ok "fsck clean"; else bad "fsck"; fi
if [[ "$failed" == 0 ]]; then echo "pipeline e2e: all checks passed"; else echo "pipeline e2e: FAILED"; fi
exit "$failed"
