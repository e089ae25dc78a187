# shellcheck shell=bash disable=SC2154,SC2034 # state variables come from dr_load; the users of these names source this file
# lib.sh — what scripts/dr/up, drill, failback and down share: where the drill environment
# lives, its state file, and the precondition checks. Source it after scripts/lib/stack.sh.
#
# An environment is one directory (DR_DIR): pg-a/ and pg-b/ (PostgreSQL clusters, one primary
# and one standby), redis-1/ and redis-2/ (Redis master and replica, in either role),
# sentinel-1..3/, run/ (pid files), logs/, data/, env (the services' settings, for `. env`)
# and state (ports, mode and roles, as shell assignments). TAGPROOF_DR_DIR names it; else
# .tagproof/dr-current, written by scripts/dr/up, does.

dr_pgcluster=$stack_root/scripts/lib/pgcluster
dr_programs=(tagproof-devledger tagproof-anchor tagproof-factory tagproof-scan)
dr_master_name=tagproof

dr_log() {
  echo "$(date -u +%H:%M:%S) $(basename "$0"): $*" >&2
}

# The time now, UTC with milliseconds (what reports use).
dr_now() {
  date -u +%Y-%m-%dT%H:%M:%S.%3NZ
}

# Sets DR_DIR to the environment's directory; 1 when there is none.
dr_find() {
  DR_DIR=${TAGPROOF_DR_DIR:-}
  if [ -z "$DR_DIR" ] && [ -f "$stack_root/.tagproof/dr-current" ]; then
    DR_DIR=$(cat "$stack_root/.tagproof/dr-current")
  fi
  [ -n "$DR_DIR" ] && [ -f "$DR_DIR/state" ]
}

# Loads the state file into the shell (mode, ports, primary, ...).
dr_load() {
  # shellcheck source=/dev/null
  . "$DR_DIR/state"
}

# dr_set NAME VALUE — records a state variable (and sets it in this shell).
dr_set() {
  local f=$DR_DIR/state
  touch "$f"
  grep -v "^$1=" "$f" >"$f.new" || true
  printf '%s=%q\n' "$1" "$2" >>"$f.new"
  mv "$f.new" "$f"
  printf -v "$1" '%s' "$2"
}

# dr_pg_port NODE — the port of PostgreSQL node a or b.
dr_pg_port() {
  local v=pg_${1}_port
  echo "${!v}"
}

# dr_psql NODE SQL — one statement as the superuser on node a or b; unaligned tuples out.
dr_psql() {
  PGCLUSTER_DB=${DR_DB:-tagproof} "$dr_pgcluster" psql "$DR_DIR/pg-$1" "$(dr_pg_port "$1")" -tA -c "$2"
}

# dr_other NODE — the other PostgreSQL node.
dr_other() {
  if [ "$1" = a ]; then echo b; else echo a; fi
}

# dr_redis_port N — the port of Redis server 1 or 2.
dr_redis_port() {
  local v=redis_${1}_port
  echo "${!v}"
}

# The Redis server the sentinels call master now ("" if they disagree or cannot say).
dr_redis_master_port() {
  local s p seen=""
  for s in "$sentinel_1_port" "$sentinel_2_port" "$sentinel_3_port"; do
    p=$(redis-cli -p "$s" SENTINEL get-master-addr-by-name "$dr_master_name" 2>/dev/null | sed -n 2p) || true
    [ -n "$p" ] || continue
    if [ -z "$seen" ]; then seen=$p; elif [ "$seen" != "$p" ]; then return 0; fi
  done
  echo "$seen"
}

# dr_wait SECONDS COMMAND... — until the command succeeds; 1 when it never did.
dr_wait() { stack_wait "$@"; }

# The standby (node $standby) streams from the primary, as both of them see it.
dr_standby_streaming() {
  [ -n "${standby:-}" ] || return 1
  [ "$(dr_psql "$primary" "SELECT state FROM pg_stat_replication WHERE application_name = 'node_$standby'")" = streaming ] &&
    [ "$(dr_psql "$standby" "SELECT status FROM pg_stat_wal_receiver")" = streaming ]
}

# In sync mode the standby is the synchronous one; in async mode none is required.
dr_standby_sync_ok() {
  local st
  st=$(dr_psql "$primary" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node_$standby'")
  if [ "$mode" = sync ]; then [ "$st" = sync ]; else [ "$st" = async ]; fi
}

# Every replica of the Redis master has finished its first sync: a replica that has not would
# be promoted empty.
dr_redis_replicas_up() {
  local m info n i
  m=$(dr_redis_master_port)
  [ -n "$m" ] || return 1
  info=$(redis-cli -p "$m" INFO replication 2>/dev/null | tr -d '\r')
  n=$(sed -n 's/^connected_slaves://p' <<<"$info")
  [ "${n:-0}" -ge 1 ] || return 1
  for i in $(seq 0 $((n - 1))); do
    local port
    port=$(sed -n "s/^slave$i:.*port=\\([0-9]*\\).*/\\1/p" <<<"$info")
    redis-cli -p "$port" INFO replication 2>/dev/null | tr -d '\r' | grep -qx 'master_link_status:up' || return 1
  done
}

# Every sentinel knows the master, the replica and the two other sentinels, and quorum holds.
dr_sentinels_ok() {
  local s
  for s in "$sentinel_1_port" "$sentinel_2_port" "$sentinel_3_port"; do
    redis-cli -p "$s" SENTINEL ckquorum "$dr_master_name" 2>/dev/null | grep -q '^OK' || return 1
    [ "$(redis-cli -p "$s" SENTINEL master "$dr_master_name" | sed -n '/^num-other-sentinels$/{n;p}')" = 2 ] || return 1
    [ "$(redis-cli -p "$s" SENTINEL master "$dr_master_name" | sed -n '/^num-slaves$/{n;p}')" -ge 1 ] || return 1
  done
}

dr_services_ready() {
  local l
  for l in "$scan_listen" "$factory_listen"; do
    curl -fsS -o /dev/null --max-time 2 "http://$l/v1/ready" || return 1
  done
  curl -fsS -o /dev/null --max-time 2 "http://$anchor_listen/v1/health" || return 1
}

# dr_preconditions — checks what must hold before a fault can be survived, printing each
# check; 0 when all hold. With FILE, also writes them as JSON there.
dr_preconditions() {
  local out=${1:-} rc=0 name json="{}"
  for name in standby_streaming standby_sync_ok redis_replicas_up sentinels_ok services_ready; do
    if "dr_$name"; then
      json=$(jq -c --arg n "$name" '.[$n] = true' <<<"$json")
    else
      json=$(jq -c --arg n "$name" '.[$n] = false' <<<"$json")
      dr_log "precondition not met: $name"
      rc=1
    fi
  done
  [ -n "$out" ] && echo "$json" >"$out"
  return $rc
}
