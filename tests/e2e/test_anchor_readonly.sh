#!/usr/bin/env bash
# tagproof-anchor on a PostgreSQL server that turns read-only while the anchor holds a
# connection to it (a primary demoted or made read-only by an operator; a killed primary closes
# its connections, this one does not): the anchor leaves that server instead of failing every
# cycle there, looks for a writable host (target_session_attrs=read-write refuses this one
# meanwhile), and leads and anchors again as soon as one is writable. A private cluster of its
# own, since the whole server turns read-only.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/anchor_lib.sh"
e2e_env
export TAGPROOF_ANCHOR_INTERVAL_S=1
export TAGPROOF_LEDGER=http

pg_dir=$work/pg
pg_port=$(stack_free_port)
pw=$(stack_secret)
PGCLUSTER_FAST=1 stack_pg_start "$pg_dir" "$pg_port" "$pw" >/dev/null
export TAGPROOF_TEST_PG_DIR=$pg_dir TAGPROOF_TEST_PG_PORT=$pg_port
export TAGPROOF_TEST_PG_OWNER_URL="postgresql://tagproof:$pw@127.0.0.1:$pg_port/tagproof"
export TAGPROOF_TEST_PG_URL="postgresql://tagproof_svc:$pw@127.0.0.1:$pg_port/tagproof"
stack_pg_migrate "$bin" "$TAGPROOF_TEST_PG_OWNER_URL" >/dev/null
stack_pg_service_role "$pg_dir" "$pg_port" "$pw" >/dev/null
anchor_db "anchor_ro"
trap 'stack_redis_stop "$work/anchor-redis"; "$stack_root/scripts/lib/pgcluster" kill "$pg_dir" "$pg_port" >/dev/null 2>&1; e2e_cleanup' EXIT
export TAGPROOF_PG_URL="$svc_url?target_session_attrs=read-write"
read_only() { # on|off — the whole server, existing sessions included (a reload)
  anchor_su "ALTER SYSTEM SET default_transaction_read_only = $1"
  anchor_su "SELECT pg_reload_conf()"
}

e2e_start tagproof-devledger
ledger_pid=$last_pid
stack_wait_http "$TAGPROOF_LEDGER_URL/v1/health" 30
add_tags 3
start_anchor a
a_pid=$last_pid a_addr=$last_addr
check "three leaves are anchored" wait_sql "SELECT string_agg(checkpoint_size || ':' || state, ',') FROM anchors" "3:confirmed" 30
check "the anchor leads" test "$(metric_of "$a_addr" tagproof_anchor_leader)" = 1

read_only on
check "the server is read-only now" test "$(osql "SHOW default_transaction_read_only")" = on
check "the anchor leaves the read-only server within 10 s" \
  wait_for 10 grep -q 'PostgreSQL server is read-only' "$work/a.log"
check "…and no longer leads there" wait_for 10 bash -c "[ \"\$(curl -fs http://$a_addr/metrics | awk '\$1 == \"tagproof_anchor_leader\" { print \$2 }')\" = 0 ]"
check "…nor connects again while no host is writable" \
  wait_for 10 grep -q 'cannot connect to PostgreSQL' "$work/a.log"

read_only off
add_tags 2
check "once the server is writable again the anchor leads and anchors the new leaves within 20 s" \
  wait_sql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'" 5 20
check "…leading again" test "$(metric_of "$a_addr" tagproof_anchor_leader)" = 1
check "…nothing anchored twice" test "$(osql "SELECT count(*) FROM anchors")" = \
  "$(osql "SELECT count(DISTINCT checkpoint_size) FROM anchors")"

e2e_stop a "$a_pid"
e2e_stop tagproof-devledger "$ledger_pid"
e2e_done
