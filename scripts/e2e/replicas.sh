# Sourced by the end-to-end scenarios that run Depot scaled out (scale.sh, and canary.sh with
# DEPOT_E2E_REPLICAS=3): a throwaway PostgreSQL cluster for the catalog, moto_server as the S3
# endpoint (an emulator: no cloud here), N `depot serve` replicas sharing both, and haproxy in
# front of them on loopback (round robin, no stickiness, health checks on /healthz).
#
# The caller defines: T (its temp dir), DEPOT, PY, PIDS (array), ok, bad, wait_for, and
# free_port [TAKEN...] (a free loopback port that is none of its arguments).
# It gets: CATALOG, S3_PORT, RPORT[n], REPLICA_PIDS[n], LB (host:port), and the functions below;
# replicas_cleanup stops what was started here (call it from the caller's cleanup).

REPLICA_PIDS=()
RPORT=()
REPLICA_SCHEMA=depot_scale

# Starts PostgreSQL and the S3 endpoint with a bucket; sets CATALOG and S3_PORT.
replicas_backends() {
  local moto
  moto="$(command -v moto_server || echo "$(dirname "$PY")/moto_server")"
  [[ -x "$moto" ]] || { bad "moto_server is not installed (scripts/install-deps.sh --test)"; return 1; }
  command -v haproxy >/dev/null || { bad "haproxy is not installed (scripts/install-deps.sh --test)"; return 1; }
  chmod 755 "$T" # the PostgreSQL cluster runs as the postgres user
  local pg_port
  pg_port="$(free_port)"
  CATALOG="$(scripts/postgres.sh start "$T/pg" "$pg_port" | tail -n 1)" || { bad "PostgreSQL did not start"; return 1; }
  S3_PORT="$(free_port "$pg_port")"
  "$moto" -H 127.0.0.1 -p "$S3_PORT" > "$T/moto.log" 2>&1 & PIDS+=($!)
  wait_for 30 "the S3 endpoint" curl -sf -X PUT "http://127.0.0.1:$S3_PORT/depot-scale" || return 1
  export AWS_ACCESS_KEY_ID=scale-key AWS_SECRET_ACCESS_KEY=scale-secret
  ok "PostgreSQL at ${CATALOG%%\?*} and an S3 bucket (moto) at 127.0.0.1:$S3_PORT"
}

# replicas_configure N BASE: writes $T/rN.yaml, the config file BASE with its own `server:` and
# `storage:` lines replaced (each replica: its port, its scratch root) and the shared catalog,
# bucket and token signing key added. BASE must not have `catalog:` or `auth.signing_key_file`.
replicas_configure() {
  local n=$1 base=$2
  [[ -f "$T/token-key.pem" ]] || { openssl ecparam -name prime256v1 -genkey -noout -out "$T/token-key.pem" 2>/dev/null && chmod 600 "$T/token-key.pem"; }
  RPORT[$n]="$(free_port "$S3_PORT" "${RPORT[@]}")"
  {
    grep -v -e '^server:' -e '^storage:' "$base" | sed "s|^auth: {enabled: true|auth: {enabled: true, signing_key_file: $T/token-key.pem|"
    cat <<EOF
server: {listen: 127.0.0.1:${RPORT[$n]}, log_level: debug} # debug: one line per request (which replica served what)
catalog: {driver: postgres, url: "$CATALOG", schema: $REPLICA_SCHEMA}
storage:
  root: $T/r$n
  backend: s3
  gc_interval_hours: 0.0025
  s3: {endpoint: "http://127.0.0.1:$S3_PORT", bucket: depot-scale, region: us-east-1, prefix: scale/}
EOF
  } > "$T/r$n.yaml"
}

# replicas_start N: starts replica N (DEPOT_ADMIN_TOKEN from the caller's environment or $ADMIN).
replicas_start() {
  DEPOT_ADMIN_TOKEN="${ADMIN:-}" "$DEPOT" serve --config "$T/r$1.yaml" >> "$T/r$1.log" 2>&1 &
  REPLICA_PIDS[$1]=$!
}

replicas_ready() { wait_for 60 "replica $1 to be ready" curl -sf "http://127.0.0.1:${RPORT[$1]}/readyz"; }

# Starts haproxy over replicas 1..N; sets LB.
replicas_balancer() {
  local count=$1 lb_port n
  lb_port="$(free_port "$S3_PORT" "${RPORT[@]}")"
  {
    cat <<EOF
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
  bind 127.0.0.1:$lb_port
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /healthz
  default-server check inter 500ms fall 2 rise 2
EOF
    for n in $(seq 1 "$count"); do echo "  server r$n 127.0.0.1:${RPORT[$n]}"; done
  } > "$T/haproxy.cfg"
  haproxy -f "$T/haproxy.cfg" -db > "$T/haproxy.log" 2>&1 & PIDS+=($!)
  LB="127.0.0.1:$lb_port"
  wait_for 20 "the balancer" curl -sf "http://$LB/healthz" || return 1
  ok "haproxy round robin over $count replicas at $LB"
}

# The replicas whose /metrics say depot_leader 1 (one per line).
replicas_leaders() {
  local n
  for n in "${!RPORT[@]}"; do
    kill -0 "${REPLICA_PIDS[$n]}" 2>/dev/null || continue
    curl -s -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:${RPORT[$n]}/metrics" | grep -q '^depot_leader 1' && echo "$n"
  done
  return 0
}
replicas_one_leader() { [[ "$(replicas_leaders | wc -l)" == 1 ]]; }

# replicas_fail_over: kill -9 the leader, wait for another replica to lead, restart the old one.
# Sets OLD_LEADER and NEW_LEADER.
replicas_fail_over() {
  OLD_LEADER="$(replicas_leaders)"
  [[ "$(echo "$OLD_LEADER" | wc -l)" == 1 && -n "$OLD_LEADER" ]] || { bad "no single leader to kill: '$OLD_LEADER'"; return 1; }
  kill -9 "${REPLICA_PIDS[$OLD_LEADER]}" 2>/dev/null
  wait "${REPLICA_PIDS[$OLD_LEADER]}" 2>/dev/null
  local killed_at
  killed_at=$(date +%s)
  new_leader() { local l; l="$(replicas_leaders)"; [[ -n "$l" && "$l" != "$OLD_LEADER" && "$(echo "$l" | wc -l)" == 1 ]]; }
  wait_for 30 "a new leader after killing replica $OLD_LEADER" new_leader || return 1
  NEW_LEADER="$(replicas_leaders)"
  ok "kill -9 of the leader (replica $OLD_LEADER): replica $NEW_LEADER leads $(( $(date +%s) - killed_at )) s later"
  grep -q "leader: this replica now runs" "$T/r$NEW_LEADER.log" \
    && ok "its log says so: $(grep -m1 "leader: this replica now runs" "$T/r$NEW_LEADER.log" | sed 's/.*leader: /leader: /' | cut -c1-120)" \
    || bad "no leadership line in replica $NEW_LEADER's log"
  replicas_start "$OLD_LEADER"
  replicas_ready "$OLD_LEADER"
}

replicas_stop() {
  local n
  for n in "${!REPLICA_PIDS[@]}"; do kill "${REPLICA_PIDS[$n]}" 2>/dev/null; done
  for n in "${!REPLICA_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "${REPLICA_PIDS[$n]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${REPLICA_PIDS[$n]}" 2>/dev/null
  done
}

replicas_cleanup() {
  replicas_stop
  [[ -d "$T/pg" ]] && scripts/postgres.sh stop "$T/pg" >/dev/null 2>&1
  return 0
}
