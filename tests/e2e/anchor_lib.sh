# anchor_lib.sh — what the anchoring end-to-end tests share: a private database and Redis for
# the test (the Merkle log is one per database, and tagproof-anchor writes that log's state into
# the scan cache of its Redis, so tests running side by side must share neither), log
# entries inserted as the schema owner the way registrations and recalls insert them, and
# reading the anchor service's state. Source it after lib.sh.

# anchor_db NAME — creates database NAME (owned by the schema owner), migrates it, and points
# TAGPROOF_PG_URL at it; sets $owner_url and $svc_url. Also starts a Redis of the test's own and
# points TAGPROOF_REDIS_URL at it ($adb_redis_port). Both go when the test exits.
anchor_db() {
  adb_name=$1
  adb_redis_port=$(stack_free_port)
  stack_redis_start "$work/anchor-redis" "$adb_redis_port" --appendonly no
  export TAGPROOF_REDIS_URL="redis://127.0.0.1:$adb_redis_port/0"
  owner_url=${TAGPROOF_TEST_PG_OWNER_URL%/*}/$adb_name
  svc_url=${TAGPROOF_TEST_PG_URL%/*}/$adb_name
  anchor_su "DROP DATABASE IF EXISTS $adb_name WITH (FORCE)"
  anchor_su "CREATE DATABASE $adb_name OWNER tagproof"
  TAGPROOF_PG_MIGRATE_URL=$owner_url "$bin/tagproof" migrate >/dev/null
  export TAGPROOF_PG_URL=$svc_url
  trap 'stack_redis_stop "$work/anchor-redis"; e2e_cleanup; anchor_su "DROP DATABASE IF EXISTS $adb_name WITH (FORCE)" 2>/dev/null || true' EXIT
  # One factory, product and batch that the tags belong to.
  osql "INSERT INTO factories (id, name) VALUES ('11111111-1111-4111-8111-111111111111', 'f');
        INSERT INTO products (id, factory_id, sku, name)
          VALUES ('22222222-2222-4222-8222-222222222222', '11111111-1111-4111-8111-111111111111', 's', 'p');
        INSERT INTO batches (id, factory_id, product_id, code)
          VALUES ('33333333-3333-4333-8333-333333333333', '11111111-1111-4111-8111-111111111111',
                  '22222222-2222-4222-8222-222222222222', 'b');" >/dev/null
}

# anchor_su SQL — as the cluster's superuser.
anchor_su() {
  PGOPTIONS="-c client_min_messages=warning" "$stack_root/scripts/lib/pgcluster" psql "$TAGPROOF_TEST_PG_DIR" "$TAGPROOF_TEST_PG_PORT" -c "$1" >/dev/null
}

# osql SQL — as the schema owner, unaligned, tuples only.
osql() { psql -X -q -At -v ON_ERROR_STOP=1 "$owner_url" -c "$1"; }

# add_tags N — registers N tags with their log entries (SPEC §7 records) in one transaction.
add_tags() {
  osql "WITH t AS (
          INSERT INTO tags (tag_id, factory_id, batch_id, product_id)
          SELECT gen_random_uuid(), '11111111-1111-4111-8111-111111111111',
                 '33333333-3333-4333-8333-333333333333', '22222222-2222-4222-8222-222222222222'
            FROM generate_series(1, $1)
          RETURNING tag_id, factory_id, batch_id, product_id, registered_at)
        INSERT INTO log_entries (kind, factory_id, tag_id, batch_id, record)
        SELECT 'tag', factory_id, tag_id, batch_id,
               convert_to(format(E'tagproof/tag/v1\n%s\n%s\n%s\n%s\n%s\n', tag_id, factory_id,
                                 batch_id, product_id,
                                 to_char(registered_at AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')), 'UTF8')
          FROM t" >/dev/null
}

# wait_sql SQL EXPECTED SECONDS — until the query answers EXPECTED.
wait_sql() {
  local sql=$1 want=$2 secs=$3
  for _ in $(seq 1 $((secs * 5))); do
    [ "$(osql "$sql" 2>/dev/null)" = "$want" ] && return 0
    sleep 0.2
  done
  echo "# wait_sql: '$sql' is '$(osql "$sql" 2>&1)', not '$want' after ${secs}s" >&2
  return 1
}

# The root `tagproof merkle root` computes over the first N appended records, in leaf order.
merkle_root_of() {
  osql "SELECT encode(record, 'hex') FROM log_entries WHERE leaf_index < $1 ORDER BY leaf_index" |
    "$bin/tagproof" merkle root
}

# start_anchor NAME [VAR=VALUE...] — a tagproof-anchor with its own listen port and extra
# environment; pid in $last_pid, address in $last_addr, log in $work/NAME.log.
start_anchor() {
  local name=$1
  shift
  last_addr=127.0.0.1:$(stack_free_port)
  env TAGPROOF_ANCHOR_LISTEN=$last_addr "$@" "$bin/tagproof-anchor" 2>>"$work/$name.log" &
  last_pid=$!
  pids+=("$last_pid")
  # Until it answers, or has died (an instance told to crash may die first).
  for _ in $(seq 300); do
    curl -fs -o /dev/null --max-time 1 "http://$last_addr/v1/health" 2>/dev/null && return 0
    kill -0 "$last_pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "# $name did not come up" >&2
}

# metric_of ADDR NAME — a metric's value (NAME with its labels, as /metrics writes it).
metric_of() {
  curl -fs "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
