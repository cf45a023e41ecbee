#!/usr/bin/env bash
# Scale-out end to end: one PostgreSQL (a throwaway cluster, scripts/postgres.sh), one S3 endpoint
# (moto_server, an emulator: no cloud here), three `depot serve` replicas sharing both, and
# haproxy in front of them on loopback (round robin, no stickiness: consecutive requests of one
# upload land on different replicas). Authentication is on. Then:
#   (a) skopeo pushes an image, containerd (ctr) pulls and unpacks it, oras-py pushes (monolithic
#       and chunked uploads) and pulls, all through the balancer;
#   (b) `depot push` of a model, then of a fine-tune: the second sends only the chunks the first
#       lacks, whichever replicas answer; `depot pull` reads both back bit for bit;
#   (c) a chunked upload (POST, PATCH, PATCH, PUT) whose requests go to three different replicas;
#   (d) kill -9 of a replica in the middle of a push: the client's retry succeeds through the
#       other two, and the artifact reads back intact;
#   (e) kill -9 of the leader: another replica takes over within seconds (its log and /metrics
#       `depot_leader` say so) and runs the garbage collector;
#   (f) afterwards `depot fsck --deep` finds nothing acknowledged missing.
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
MOTO="$(command -v moto_server || echo "$VENV/bin/moto_server")"
[[ -x "$MOTO" ]] || { echo "FAIL: moto_server is not installed (scripts/install-deps.sh --test)"; exit 1; }
T="$(mktemp -d /tmp/depot-e2e-scale.XXXXXX)"
chmod 755 "$T" # the PostgreSQL cluster below runs as the postgres user
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
REPLICA_PIDS=()
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failed=1; }
cleanup() {
  for pid in "${REPLICA_PIDS[@]}" "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${REPLICA_PIDS[@]}" "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  scripts/postgres.sh stop "$T/pg" >/dev/null 2>&1
  if [[ "$failed" == 0 ]]; then rm -rf "$T"; else echo "(kept $T for inspection: *.log)"; fi
}
trap cleanup EXIT
json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_for() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  while (( $(date +%s) < deadline )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  bad "timed out after waiting for $what"; return 1
}

# PostgreSQL and the S3 endpoint.
PG_PORT="$(free_port)"
CATALOG="$(scripts/postgres.sh start "$T/pg" "$PG_PORT" | tail -n 1)" || { bad "PostgreSQL did not start"; exit 1; }
S3_PORT="$(free_port)"
"$MOTO" -H 127.0.0.1 -p "$S3_PORT" > "$T/moto.log" 2>&1 & PIDS+=($!)
wait_for 30 "the S3 endpoint" curl -sf -X PUT "http://127.0.0.1:$S3_PORT/depot-scale" || exit 1
ok "PostgreSQL at ${CATALOG%%\?*} and an S3 bucket (moto) at 127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=scale-key AWS_SECRET_ACCESS_KEY=scale-secret

# Three replicas: the same catalog schema, bucket and token signing key; each its own root (the
# staging copies of packs being uploaded) and port.
ADMIN="$(openssl rand -hex 32)"
openssl ecparam -name prime256v1 -genkey -noout -out "$T/token-key.pem" 2>/dev/null && chmod 600 "$T/token-key.pem"
RPORT=()
config() { # config N ROOT PORT
  cat <<EOF
server: {listen: 127.0.0.1:$3, log_level: debug} # debug: one line per request (which replica served what)
catalog: {driver: postgres, url: "$CATALOG", schema: depot_scale}
storage:
  root: $2
  backend: s3
  gc_interval_hours: 0.0025
  s3: {endpoint: "http://127.0.0.1:$S3_PORT", bucket: depot-scale, region: us-east-1, prefix: scale/}
auth: {enabled: true, signing_key_file: $T/token-key.pem}
pipelines: {directory: ""}
signing: {enabled: false}
EOF
}
start_replica() { # start_replica N
  DEPOT_ADMIN_TOKEN="$ADMIN" "$DEPOT" serve --config "$T/r$1.yaml" >> "$T/r$1.log" 2>&1 &
  REPLICA_PIDS[$1]=$!
}
for n in 1 2 3; do
  RPORT[$n]="$(free_port)"
  config "$n" "$T/r$n" "${RPORT[$n]}" > "$T/r$n.yaml"
done
# All three at once, as a Deployment starts them: they migrate, bootstrap and elect together.
for n in 1 2 3; do start_replica "$n"; done
for n in 1 2 3; do wait_for 60 "replica $n to be ready" curl -sf "http://127.0.0.1:${RPORT[$n]}/readyz" || exit 1; done
ok "three replicas ready (/readyz: catalog and bucket reachable)"
leaders() { for n in 1 2 3; do curl -s -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:${RPORT[$n]}/metrics" | grep -q '^depot_leader 1' && echo "$n"; done; }
one_leader() { [[ "$(leaders | wc -l)" == 1 ]]; }
wait_for 20 "exactly one leader" one_leader && LEADER="$(leaders)" && ok "exactly one leader: replica $LEADER (depot_leader in /metrics)"

# The balancer: round robin, health checks on /healthz, a connection refused is retried elsewhere.
LB_PORT="$(free_port)"
cat > "$T/haproxy.cfg" <<EOF
global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 2
  option redispatch
frontend registry
  bind 127.0.0.1:$LB_PORT
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /healthz
  default-server check inter 500ms fall 2 rise 2
  server r1 127.0.0.1:${RPORT[1]}
  server r2 127.0.0.1:${RPORT[2]}
  server r3 127.0.0.1:${RPORT[3]}
EOF
haproxy -f "$T/haproxy.cfg" -db > "$T/haproxy.log" 2>&1 & PIDS+=($!)
LB="127.0.0.1:$LB_PORT"
export DEPOT_REGISTRY="http://$LB"
wait_for 20 "the balancer" curl -sf "http://$LB/healthz" || exit 1
ok "haproxy round robin at $LB"

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
start_replica "$VICTIM"
wait_for 60 "replica $VICTIM to come back" curl -sf "http://127.0.0.1:${RPORT[$VICTIM]}/readyz"

# (e) kill -9 of the leader: another replica takes over and runs GC.
kill -9 "${REPLICA_PIDS[$LEADER]}" 2>/dev/null
KILLED_AT=$(date +%s)
new_leader() { local l; l="$(leaders)"; [[ -n "$l" && "$l" != "$LEADER" && "$(echo "$l" | wc -l)" == 1 ]]; }
if wait_for 30 "a new leader" new_leader; then
  NEW="$(leaders)"
  ok "replica $NEW became the leader $(( $(date +%s) - KILLED_AT )) s after replica $LEADER was killed"
  grep -q "leader: this replica now runs" "$T/r$NEW.log" && ok "its log says so: $(grep -m1 "leader: this replica now runs" "$T/r$NEW.log" | sed 's/.*leader: /leader: /' | cut -c1-160)" \
    || bad "no leadership line in replica $NEW's log"
  gc_ran() { grep -q "^.*gc: deleted" "$T/r$NEW.log"; }
  wait_for 40 "GC on the new leader" gc_ran && ok "the new leader ran GC: $(grep -m1 "gc: deleted" "$T/r$NEW.log" | sed 's/.*gc: /gc: /' | cut -c1-160)"
fi
start_replica "$LEADER"
wait_for 60 "replica $LEADER to come back" curl -sf "http://127.0.0.1:${RPORT[$LEADER]}/readyz"
wait_for 10 "exactly one leader after the restart" one_leader && ok "one leader with all three replicas back"

# (f) Stop the replicas; fsck reads the catalog and the bucket.
for n in 1 2 3; do kill "${REPLICA_PIDS[$n]}" 2>/dev/null; done
for n in 1 2 3; do for _ in $(seq 1 100); do kill -0 "${REPLICA_PIDS[$n]}" 2>/dev/null || break; sleep 0.1; done; done

if "$DEPOT" fsck --config "$T/r1.yaml" --catalog "$CATALOG" --catalog-schema depot_scale --deep > "$T/fsck.log" 2>&1; then
  ok "depot fsck --deep: clean ($(tail -n 1 "$T/fsck.log" | cut -c1-120))"
else
  bad "fsck: $(tail -n 5 "$T/fsck.log")"
fi
[[ "$failed" == 0 ]] && echo "scale: all checks passed" || echo "scale: FAILED"
exit "$failed"
