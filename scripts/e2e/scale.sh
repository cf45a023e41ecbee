#!/usr/bin/env bash
# Scale-out end to end: one PostgreSQL (a throwaway cluster, scripts/postgres.sh), one S3 endpoint
# (moto_server, an emulator: no cloud here), three `depot serve` replicas sharing both, and
# haproxy in front of them on loopback (round robin, no stickiness: consecutive requests of one
# upload land on different replicas). Authentication is on. Then:
#   (a) skopeo pushes an image, containerd (ctr) pulls and unpacks it, oras-py pushes (monolithic
#       and chunked uploads) and pulls, all through the balancer;
#   (b) `depot push` of a model, then of a fine-tune: the second sends only the chunks the first
#       lacks, whichever replicas answer; `depot pull` reads both back bit for bit; an fp32
#       checkpoint and its fp16 cast (numpy): the leader's GC stores the fp16 chunks as casts of
#       the fp32 ones in the bucket, and the fp16 file pulls back bit for bit;
#   (c) a chunked upload (POST, PATCH, PATCH, PUT) whose requests go to three different replicas;
#   (d) kill -9 of a replica in the middle of a push: the client's retry succeeds through the
#       other two, and the artifact reads back intact;
#   (e) kill -9 of the leader: another replica takes over within seconds (its log and /metrics
#       `depot_leader` say so) and runs the garbage collector;
#   (f) afterwards `depot fsck --deep` finds nothing acknowledged missing;
#   (g) the canary scenario (scripts/e2e/canary.sh) on three replicas of its own, with the leader
#       running the canary controller killed mid-rollout: the rollout completes on the new leader.
#
#   scripts/e2e/scale.sh        (after `swift build --product depot`; builds it if missing)
#
# Starts and stops everything it needs (by PID), prints one line per check, exits 0 only when
# every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
DEPOT="${DEPOT_BIN:-$ROOT/.build/debug/depot}"
[[ -x "$DEPOT" ]] || swift build --product depot >&2 || { echo "FAIL: cannot build depot"; exit 1; }
command -v haproxy >/dev/null || { echo "FAIL: haproxy is not installed (scripts/install-deps.sh --test)"; exit 1; }
VENV="$(scripts/e2e/python-env.sh | tail -n 1)" || { echo "FAIL: cannot prepare the Python environment"; exit 1; }
PY="$VENV/bin/python"
T="$(mktemp -d /tmp/depot-e2e-scale.XXXXXX)"
# A free loopback port that is none of the arguments (two binds to port 0 in a row can get the same one).
free_port() {
  "$PY" -c 'import socket, sys
taken = set(sys.argv[1:])
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = str(s.getsockname()[1]); s.close()
    if p not in taken: print(p); break' "$@"
}
PIDS=()
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failed=1; }
wait_for() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  while (( $(date +%s) < deadline )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  bad "timed out after waiting for $what"; return 1
}
source scripts/e2e/replicas.sh
cleanup() {
  replicas_cleanup
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  if [[ "$failed" == 0 ]]; then rm -rf "$T"; else echo "(kept $T for inspection: *.log)"; fi
}
trap cleanup EXIT
json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

replicas_backends || exit 1
# Three replicas: the same catalog schema, bucket and token signing key; each its own scratch
# root and port. All three start at once, as a Deployment starts them: they migrate, bootstrap
# the admin token and elect a leader together.
ADMIN="$(openssl rand -hex 32)"
cat > "$T/base.yaml" <<EOF
auth: {enabled: true}
pipelines: {directory: ""}
signing: {enabled: false}
EOF
for n in 1 2 3; do replicas_configure "$n" "$T/base.yaml"; done
for n in 1 2 3; do replicas_start "$n"; done
for n in 1 2 3; do replicas_ready "$n" || exit 1; done
ok "three replicas ready (/readyz: catalog and bucket reachable)"
wait_for 20 "exactly one leader" replicas_one_leader && LEADER="$(replicas_leaders)" && ok "exactly one leader: replica $LEADER (depot_leader in /metrics)"
replicas_balancer 3 || exit 1
export DEPOT_REGISTRY="http://$LB"

secret() { DEPOT_TOKEN="$ADMIN" "$DEPOT" admin token create "$@" --json | json 'd["secret"]'; }
CI="$(secret --name ci --role writer --repositories '**')"
MAINTAINER="$(secret --name oras --role maintainer --repositories 'interop/**')" # oras-py deletes a tag
[[ "$CI" == dpt_* && "$MAINTAINER" == dpt_* ]] && ok "tokens created through the balancer" || { bad "token creation: $CI"; exit 1; }
export DEPOT_TOKEN="$CI"

# (a) Real OCI clients through the balancer.
mkdir -p "$T/layout/blobs/sha256"
"$PY" - "$T/layout" <<'EOF'
import hashlib, json, os, sys, tarfile, io
root = sys.argv[1]
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(data)
    return {"digest": f"sha256:{d}", "size": len(data)}
import gzip
tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w") as t:
    payload = os.urandom(3 << 20)
    info = tarfile.TarInfo("weights.bin"); info.size = len(payload); t.addfile(info, io.BytesIO(payload))
diff_id = "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()
layer = blob(gzip.compress(tar.getvalue())) | {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
image = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
config = blob(json.dumps(image).encode()) | {"mediaType": "application/vnd.oci.image.config.v1+json"}
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": [layer]}).encode()
m = blob(manifest) | {"mediaType": "application/vnd.oci.image.manifest.v1+json", "annotations": {"org.opencontainers.image.ref.name": "v1"}}
json.dump({"schemaVersion": 2, "manifests": [m]}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
EOF
if skopeo copy --dest-tls-verify=false --dest-creds "ci:$CI" "oci:$T/layout:v1" "docker://$LB/scale/image:v1" > "$T/skopeo.log" 2>&1; then
  ok "skopeo pushed an image through the balancer (POST, PATCH and PUT on whichever replica)"
else
  bad "skopeo push: $(tail -n 3 "$T/skopeo.log")"
fi
mkdir -p "$T/ctr"
cat > "$T/ctr/config.toml" <<EOF
version = 2
root = "$T/ctr/root"
state = "$T/ctr/state"
[grpc]
  address = "$T/ctr/containerd.sock"
EOF
containerd --config "$T/ctr/config.toml" > "$T/containerd.log" 2>&1 & PIDS+=($!)
wait_for 20 "containerd" test -S "$T/ctr/containerd.sock"
if ctr --address "$T/ctr/containerd.sock" images pull --plain-http --user "ci:$CI" "$LB/scale/image:v1" > "$T/ctr.log" 2>&1 \
  && grep -q unpacking "$T/ctr.log"; then
  ok "containerd pulled and unpacked it"
else
  bad "ctr pull: $(tail -n 3 "$T/ctr.log")"
fi
# oras-py is installed for the system Python (scripts/install-deps.sh --test), as the interop tests use it.
if ORAS_USER=oras ORAS_PASSWORD="$MAINTAINER" python3 Tests/interop/oras_roundtrip.py "$LB" "$T/oras" > "$T/oras.log" 2>&1; then
  ok "oras-py pushed (monolithic and 512 KiB chunked uploads) and pulled back"
else
  bad "oras: $(tail -n 3 "$T/oras.log")"
fi

# (b) depot push of a model and of a fine-tune of it.
mkdir -p "$T/base" "$T/tuned"
head -c $((48 << 20)) /dev/urandom > "$T/base/model.bin"
cp "$T/base/model.bin" "$T/tuned/model.bin"
# The fine-tune changes 1 MiB in the middle.
head -c $((1 << 20)) /dev/urandom | dd of="$T/tuned/model.bin" bs=1M seek=20 conv=notrunc status=none
"$DEPOT" push scale/model:base "$T/base" --json > "$T/push-base.json" 2> "$T/push-base.log" || bad "depot push base: $(tail -n 2 "$T/push-base.log")"
"$DEPOT" push scale/model:tuned "$T/tuned" --from scale/model:base --relation fine-tuned-from --json > "$T/push-tuned.json" 2> "$T/push-tuned.log" \
  || bad "depot push tuned: $(tail -n 2 "$T/push-tuned.log")"
SENT="$(json 'd["bytes_sent"]' < "$T/push-tuned.json" 2>/dev/null || echo -1)"
if [[ "$SENT" =~ ^[0-9]+$ ]] && (( SENT > 0 && SENT < 8 << 20 )); then
  ok "the fine-tune sent $SENT bytes of 48 MiB (only missing chunks, whichever replica answered)"
else
  bad "fine-tune push sent '$SENT' bytes: $(cat "$T/push-tuned.json")"
fi
"$DEPOT" pull scale/model:tuned -o "$T/pulled-tuned" --quiet > /dev/null 2>&1 && cmp -s "$T/tuned/model.bin" "$T/pulled-tuned/model.bin" \
  && ok "depot pull read the fine-tune back bit for bit" || bad "depot pull of the fine-tune"

# (b2) Cast-aware deduplication: an fp32 checkpoint and its fp16 cast, made by numpy.
mkdir -p "$T/fp32" "$T/fp16"
"$PY" - "$T" <<'EOF' || bad "making the fp32/fp16 checkpoints"
import json, sys
import numpy as np
t = sys.argv[1]
rng = np.random.default_rng(7)
weights = {f"layer.{i}.weight": rng.standard_normal((512, 512), dtype=np.float32) * np.float32(0.02) for i in range(4)}
def save(path, arrays, dtype):
    header, offset, data = {}, 0, []
    for name in sorted(arrays):
        b = arrays[name].tobytes()
        header[name] = {"dtype": dtype, "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        data.append(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(data))
save(f"{t}/fp32/model.safetensors", weights, "F32")
save(f"{t}/fp16/model.safetensors", {k: v.astype(np.float16) for k, v in weights.items()}, "F16")
EOF
"$DEPOT" push scale/cast:fp32 "$T/fp32" --quiet > "$T/push-fp32.log" 2>&1 && "$DEPOT" push scale/cast:fp16 "$T/fp16" --quiet > "$T/push-fp16.log" 2>&1 \
  || bad "depot push of the fp32/fp16 checkpoints: $(tail -n 2 "$T"/push-fp*.log)"
casts_made() { grep -hE "cast-aware dedup scanned [0-9]+ blob\(s\): [1-9][0-9]* chunk" "$T"/r[123].log; }
wait_for 40 "the leader's GC to store the fp16 chunks as casts" casts_made \
  && ok "the leader's GC stored the fp16 file's chunks as casts of the fp32 ones: $(casts_made | head -n 1 | sed 's/.*gc: //' | cut -c1-140)"
"$DEPOT" pull scale/cast:fp16 -o "$T/pulled-fp16" --quiet > /dev/null 2>&1 && cmp -s "$T/fp16/model.safetensors" "$T/pulled-fp16/model.safetensors" \
  && ok "depot pull read the fp16 file back bit for bit from its casts" || bad "depot pull of the fp16 file"

# (c) One chunked upload, each request through the balancer (three replicas in turn).
"$PY" - "$LB" "$CI" > "$T/chunked.log" 2>&1 <<'EOF' && ok "a chunked upload spread over the replicas completed: $(tail -n 1 "$T/chunked.log")" || bad "chunked upload: $(tail -n 3 "$T/chunked.log")"
import base64, hashlib, json, os, sys, urllib.request
lb, token = sys.argv[1], sys.argv[2]
auth = "Basic " + base64.b64encode(f"ci:{token}".encode()).decode()
def req(method, path, body=None, headers={}):
    r = urllib.request.Request(f"http://{lb}{path}", data=body, method=method, headers={"Authorization": auth, **headers})
    with urllib.request.urlopen(r) as resp:
        return resp.status, resp.headers
data = os.urandom(5 << 20)
status, h = req("POST", "/v2/scale/chunked/blobs/uploads/")
location = h["Location"]
parts = [data[: 2 << 20], data[2 << 20 : 4 << 20]]
offset = 0
for p in parts:
    status, h = req("PATCH", location, p, {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(p) - 1}"})
    assert status == 202, status
    offset += len(p)
    assert h["Range"] == f"0-{offset - 1}", h["Range"]
digest = "sha256:" + hashlib.sha256(data).hexdigest()
status, h = req("PUT", f"{location}?digest={digest}", data[offset:], {"Content-Type": "application/octet-stream"})
assert status == 201, status
r = urllib.request.Request(f"http://{lb}/v2/scale/chunked/blobs/{digest}", headers={"Authorization": auth})
assert hashlib.sha256(urllib.request.urlopen(r).read()).hexdigest() == digest[7:]
print(f"5 MiB in 4 requests, digest verified on read")
EOF
grep -hc "blobs/uploads" "$T"/r[123].log | tr '\n' ' ' > "$T/upload-counts"
spread=0; for c in $(cat "$T/upload-counts"); do (( c > 0 )) && spread=$((spread + 1)); done
(( spread == 3 )) && ok "upload requests were served by all three replicas (per replica: $(cat "$T/upload-counts"))" \
  || bad "upload requests reached only $spread replica(s): $(cat "$T/upload-counts")"

# (d) kill -9 of a replica in the middle of a push; the retry goes through the other two.
VICTIM=$(( LEADER % 3 + 1 )) # not the leader: that is (e)
mkdir -p "$T/big"
head -c $((160 << 20)) /dev/urandom > "$T/big/weights.bin"
"$DEPOT" push scale/big:v1 "$T/big" --quiet > "$T/push-big.log" 2>&1 & PUSH=$!
sleep 1.5
kill -9 "${REPLICA_PIDS[$VICTIM]}" 2>/dev/null
if wait "$PUSH"; then
  ok "kill -9 of replica $VICTIM mid-push: the push completed (the client retries a failed request; haproxy sends it to the other two)"
else
  "$DEPOT" push scale/big:v1 "$T/big" --quiet > "$T/push-big-retry.log" 2>&1 \
    && ok "kill -9 of replica $VICTIM mid-push failed the push; the retry succeeded through the other two" \
    || bad "the retry after killing replica $VICTIM: $(tail -n 2 "$T/push-big-retry.log")"
fi
"$DEPOT" pull scale/big:v1 -o "$T/pulled-big" --quiet > /dev/null 2>&1 && cmp -s "$T/big/weights.bin" "$T/pulled-big/weights.bin" \
  && ok "the artifact reads back intact" || bad "pull after the kill"
replicas_start "$VICTIM"
replicas_ready "$VICTIM"

# (e) kill -9 of the leader: another replica takes over and runs GC.
if replicas_fail_over; then
  gc_ran() { grep -q "gc: deleted" "$T/r$NEW_LEADER.log"; }
  wait_for 40 "GC on the new leader" gc_ran && ok "the new leader ran GC: $(grep -m1 "gc: deleted" "$T/r$NEW_LEADER.log" | sed 's/.*gc: /gc: /' | cut -c1-160)"
fi
wait_for 10 "exactly one leader after the restart" replicas_one_leader && ok "one leader with all three replicas back"

# (f) Stop the replicas; fsck reads the catalog and the bucket.
replicas_stop

if "$DEPOT" fsck --config "$T/r1.yaml" --catalog "$CATALOG" --catalog-schema "$REPLICA_SCHEMA" --deep > "$T/fsck.log" 2>&1; then
  ok "depot fsck --deep: clean ($(tail -n 1 "$T/fsck.log" | cut -c1-120))"
else
  bad "fsck: $(tail -n 5 "$T/fsck.log")"
fi
# (g) The canary scenario on three replicas of its own: real Triton nodes and Prometheus, the
# leader running the canary controller killed after the rollout's first step.
echo "(g) scripts/e2e/canary.sh with DEPOT_E2E_REPLICAS=3:"
if DEPOT_E2E_REPLICAS=3 scripts/e2e/canary.sh > "$T/canary.log" 2>&1; then
  grep -E "^ok: (kill -9|v2 went|v3 rolled back|audit chain)" "$T/canary.log" | sed 's/^ok: /ok: canary: /'
else
  bad "the canary scenario on replicas: $(grep -E "^FAIL" "$T/canary.log" | head -n 5)"
fi
[[ "$failed" == 0 ]] && echo "scale: all checks passed" || echo "scale: FAILED"
exit "$failed"
