#!/usr/bin/env bash
# The anchoring state in scan verdicts (SPEC §5) across the whole stack, on a private database
# and a private Redis this test may stop: tags uploaded with `tagproof upload` scan as
# "pending"; once tagproof-anchor (dev ledger, every 2 s) has confirmed a checkpoint covering
# them, a cache hit answers "anchored" with the leaf index of log_entries and the checkpoint
# size and ledger reference of the newest confirmed anchor, and so does the database when the
# cache entry is gone or Redis is stopped; the /t/ page shows it; a recalled tag keeps it.
# Redis frozen while the anchor appends never stops anchoring, and the next cycle after Redis
# returns brings the cache up to date.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

private_stack "scan_anchor_e2e_$$_$RANDOM"
e2e_env
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
export TAGPROOF_ANCHOR_INTERVAL_S=2 TAGPROOF_LEDGER=http
export TAGPROOF_LEDGER_URL="http://$TAGPROOF_DEVLEDGER_LISTEN"
# Generous deadlines: an ASan build on a busy 2-core machine.
export TAGPROOF_REDIS_TIMEOUT_MS=2000 TAGPROOF_PG_TIMEOUT_MS=5000
rcli() { redis-cli -p "$redis_port" "$@"; }
osql() { psql -X -q -At -v ON_ERROR_STOP=1 "$TAGPROOF_TEST_PG_OWNER_URL" -c "$1"; }

e2e_start tagproof-devledger
ledger_pid=$last_pid
check "tagproof-devledger is up" stack_wait_http "$TAGPROOF_LEDGER_URL/v1/health" 10
factory_up
e2e_start tagproof-scan
scan_pid=$last_pid
check "tagproof-scan is up" stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
direct="http://$TAGPROOF_SCAN_LISTEN"
base=$direct
# As in test_scan.sh: with SCAN_PRISM=1 the scans are checked against docs/openapi.yaml.
if [ "${SCAN_PRISM:-0}" = 1 ]; then
  . "$stack_root/tests/openapi/prism_lib.sh"
  prism_start "$direct" && base=$prism_url
fi
ua='Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1'

# scan PATH [-H header...] → status in $code, body in $work/body
scan() {
  local path=$1
  shift
  code=$(curl -gsS -A "$ua" -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@" "$base$path")
  if [ "$base" != "$direct" ]; then prism_verdict "GET $path" "$code" "$work/headers"; fi
}

as "$admin_key" POST /v1/factories '{"name":"Scan anchor"}'
fid=$(jq_body .id)
as "$admin_key" POST /v1/api-keys "{\"factory_id\":\"$fid\",\"role\":\"factory_user\",\"name\":\"e2e\"}"
user_key=$(jq_body .key)
as "$user_key" POST /v1/products '{"sku":"SA-1","name":"Scan anchor"}'
product=$(jq_body .id)
as "$user_key" POST /v1/batches "{\"product_id\":\"$product\",\"code\":\"SA-B1\"}"
batch=$(jq_body .id)

upload() { upload_tags "$1" "$2" "$user_key" "$batch"; }
leaf_of() { osql "SELECT leaf_index FROM log_entries WHERE tag_id = '$1' AND kind = 'tag'"; }
# The newest confirmed anchor as "size ref", as the scan service must show it.
newest_anchor() {
  osql "SELECT checkpoint_size || ' ' || ledger_ref FROM anchors WHERE state = 'confirmed'
        ORDER BY checkpoint_size DESC, ledger DESC LIMIT 1"
}
# covered TAG — a confirmed anchor covers the tag's leaf.
covered() {
  [ "$(osql "SELECT count(*) FROM log_entries e JOIN anchors a ON a.state = 'confirmed'
               AND a.checkpoint_size > e.leaf_index WHERE e.tag_id = '$1' AND e.kind = 'tag'")" -gt 0 ]
}
# anchored_as TAG SOURCE — the body says anchored, from SOURCE, with the database's numbers.
anchored_as() {
  local want
  want=$(newest_anchor)
  jq -e --arg src "$2" --argjson leaf "$(leaf_of "$1")" --argjson size "${want%% *}" \
    --arg tx "${want#* }" '.source == $src and .anchor == {status: "anchored", leaf_index: $leaf,
      checkpoint_size: $size, ledger_tx: $tx}' "$work/body"
}
scan_anchored() { # TAG SOURCE — scans until the answer is anchored from SOURCE
  scan "/v1/scan/$1" && anchored_as "$1" "$2"
}

# --- before anchoring: pending ---------------------------------------------------------------
if upload "$work/first.csv" 30; then ok "30 tags uploaded with tagproof upload"; else
  not_ok "tagproof upload failed: $(cat "$work/upload.out")"
fi
tag_a=$(sed -n 2p "$work/first.csv")
tag_b=$(sed -n 12p "$work/first.csv")
tag_c=$(sed -n 22p "$work/first.csv")
scan "/v1/scan/$tag_a"
check "before any anchor a scan answers pending ($code)" jq -e '.anchor == {status: "pending"}' "$work/body"
scan "/v1/scan/$tag_a"
check "…also from the cache" jq -e '.source == "cache" and .anchor == {status: "pending"}' "$work/body"
scan "/t/$tag_a"
check "the page says the record is being sealed" grep -q 'Being sealed in the public log' "$work/body"

# --- anchored: the cache path --------------------------------------------------------------
e2e_start tagproof-anchor
anchor_pid=$last_pid
check "a confirmed anchor covers the tags within 30 s" wait_for 30 covered "$tag_a"
check "a cache hit answers anchored with the leaf index and the newest confirmed anchor within 10 s" \
  wait_for 10 scan_anchored "$tag_a" cache
check "…the leaf index is log_entries.leaf_index ($(leaf_of "$tag_a"))" \
  jq -e --argjson l "$(leaf_of "$tag_a")" '.anchor.leaf_index == $l' "$work/body"
ledger_tx=$(jq -r .anchor.ledger_tx "$work/body")
as "$admin_key" GET "/v1/proofs/$tag_a"
check "…the ledger reference is the proof bundle's anchor id" \
  jq -e --arg tx "$ledger_tx" '.anchor.status == "confirmed" and .anchor.id == $tx' "$work/body"
check "…and the devledger has that entry" curl -fs "$TAGPROOF_LEDGER_URL/v1/anchors/$ledger_tx"
scan "/t/$tag_a"
leaf_a=$(leaf_of "$tag_a")
size=$(newest_anchor)
size=${size%% *}
check "the page shows the record sealed, its entry and the ledger transaction" \
  grep -q "Sealed in the public log.*Entry $leaf_a of $size\..*Ledger transaction <code>$ledger_tx</code>" "$work/body"

# --- the database path: a deleted cache entry, then Redis stopped --------------------------
rcli DEL "tp:t:$tag_b" >/dev/null
scan "/v1/scan/$tag_b"
check "with its cache entry deleted the database answers anchored, the same numbers" anchored_as "$tag_b" database
check "…and the refilled entry holds the leaf index" test "$(rcli HGET "tp:t:$tag_b" i)" = "$(leaf_of "$tag_b")"
scan "/v1/scan/$tag_b"
check "…so the next scan is a cache hit, anchored" anchored_as "$tag_b" cache

e2e_stop tagproof-anchor "$anchor_pid"
redis_pid=$(cat "$redis_dir/redis.pid")
rcli shutdown nosave >/dev/null 2>&1 || true
check "Redis stopped" wait_for 10 bash -c "! kill -0 $redis_pid"
scan "/v1/scan/$tag_c"
check "with Redis stopped the database answers anchored, the same numbers" anchored_as "$tag_c" database
scan "/t/$tag_c"
check "…and so does the page" grep -q "Sealed in the public log.*Entry $(leaf_of "$tag_c") of $size\." "$work/body"
stack_redis_start "$redis_dir" "$redis_port" --appendonly no
check "Redis is back" rcli ping

# --- Redis frozen while the anchor appends: anchoring goes on, the cache catches up --------
if upload "$work/second.csv" 10; then ok "10 more tags uploaded, the anchor stopped"; else
  not_ok "the second upload failed: $(cat "$work/upload.out")"
fi
tag_d=$(sed -n 5p "$work/second.csv")
tag_e=$(sed -n 8p "$work/second.csv")
# The loader's fill is best effort (Redis was just restarted, its client may still be waiting
# to reconnect): a scan from the database fills the entry otherwise.
pending_from_cache() {
  scan "/v1/scan/$1" && jq -e '.source == "cache" and .anchor == {status: "pending"}' "$work/body"
}
check "the new tag answers pending from the cache" wait_for 15 pending_from_cache "$tag_d"
rcli DEL "tp:t:$tag_e" >/dev/null
redis_pid=$(cat "$redis_dir/redis.pid")
kill -STOP "$redis_pid"
e2e_start tagproof-anchor
anchor_pid=$last_pid
check "with Redis frozen the anchor still appends, signs and confirms within 40 s" wait_for 40 covered "$tag_d"
check "…says the scan cache is behind" wait_for 10 grep -q 'the scan cache is behind the log' "$work/tagproof-anchor.log"
check "…and has not moved its watermark past the new leaves" \
  test "$(osql "SELECT coalesce((SELECT leaves_pushed FROM scan_cache_sync), 0)")" -le "$(leaf_of "$tag_d")"
kill -CONT "$redis_pid"
check "after Redis returns a cycle writes the leaf index into the tag's entry within 15 s" \
  wait_for 15 bash -c "[ \"\$(redis-cli -p $redis_port HGET tp:t:$tag_d i)\" = '$(leaf_of "$tag_d")' ]"
check "…and tp:anchor is the newest confirmed anchor" \
  wait_for 10 bash -c "[ \"\$(redis-cli -p $redis_port GET tp:anchor)\" = '$(newest_anchor)' ]"
check "…so the tag scans anchored from the cache" wait_for 10 scan_anchored "$tag_d" cache
check "…and the watermark covers the log" \
  wait_for 10 bash -c "[ \"\$(psql -X -q -At '$TAGPROOF_TEST_PG_OWNER_URL' -c 'SELECT leaves_pushed FROM scan_cache_sync')\" = \"\$(psql -X -q -At '$TAGPROOF_TEST_PG_OWNER_URL' -c 'SELECT max(leaf_index) + 1 FROM log_entries')\" ]"
check "…and the anchor says the cache is in step again" grep -q '"msg":"scan cache updated"' "$work/tagproof-anchor.log"
check "an entry the anchor made holds only the leaf index, with the cache's lifetime" \
  bash -c "[ \"\$(redis-cli -p $redis_port HKEYS tp:t:$tag_e)\" = i ] && ttl=\$(redis-cli -p $redis_port TTL tp:t:$tag_e) && [ \"\$ttl\" -gt 600000 ] && [ \"\$ttl\" -le 604800 ]"
scan "/v1/scan/$tag_e"
check "…it is a miss: the database answers anchored and fills it" anchored_as "$tag_e" database
scan "/v1/scan/$tag_e"
check "…and the next scan is a cache hit, anchored" anchored_as "$tag_e" cache

# --- Redis back from an older snapshot: its own marker says so, the leaves are pushed again ---
check "Redis's marker is the watermark" \
  wait_for 10 bash -c "[ \"\$(redis-cli -p $redis_port GET tp:anchor:pushed)\" = \"\$(psql -X -q -At '$TAGPROOF_TEST_PG_OWNER_URL' -c 'SELECT leaves_pushed FROM scan_cache_sync')\" ]"
# What a snapshot taken before tag_d's leaf was pushed holds: its entry without i, a lower marker.
rcli HDEL "tp:t:$tag_d" i >/dev/null
rcli SET tp:anchor:pushed "$(leaf_of "$tag_d")" >/dev/null
check "an older Redis gets the leaf indexes since its marker again within 15 s" \
  wait_for 15 bash -c "[ \"\$(redis-cli -p $redis_port HGET tp:t:$tag_d i)\" = '$(leaf_of "$tag_d")' ]"
check "…says so" grep -q 'Redis holds fewer leaf indexes than it acknowledged' "$work/tagproof-anchor.log"
check "…and its marker is the watermark again" \
  wait_for 10 bash -c "[ \"\$(redis-cli -p $redis_port GET tp:anchor:pushed)\" = \"\$(psql -X -q -At '$TAGPROOF_TEST_PG_OWNER_URL' -c 'SELECT leaves_pushed FROM scan_cache_sync')\" ]"
check "…so the tag scans anchored from the cache again" wait_for 10 scan_anchored "$tag_d" cache
# An empty Redis has no marker: entries come back from the database with their index, nothing
# is pushed again.
rcli DEL tp:anchor:pushed >/dev/null
check "an empty Redis's marker is set to the watermark, nothing pushed again" \
  wait_for 15 bash -c "[ \"\$(redis-cli -p $redis_port GET tp:anchor:pushed)\" = \"\$(psql -X -q -At '$TAGPROOF_TEST_PG_OWNER_URL' -c 'SELECT leaves_pushed FROM scan_cache_sync')\" ]"

# --- a recalled tag keeps its anchor block -------------------------------------------------
as "$user_key" POST "/v1/batches/$batch/revoke"
check "the batch is recalled ($status)" test "$status" = 200
scan "/v1/scan/$tag_a"
check "a recalled tag answers revoked with its anchor block (from the $(jq -r .source "$work/body"))" \
  jq -e --argjson l "$leaf_a" '.verdict == "revoked" and .anchor.status == "anchored" and .anchor.leaf_index == $l' "$work/body"
scan "/v1/scan/$tag_a"
check "…and from the cache" \
  jq -e --argjson l "$leaf_a" '.source == "cache" and .verdict == "revoked" and .anchor.status == "anchored" and .anchor.leaf_index == $l' "$work/body"

e2e_stop tagproof-anchor "$anchor_pid"
e2e_stop tagproof-scan "$scan_pid"
e2e_stop tagproof-factory "$factory_pid"
e2e_stop tagproof-devledger "$ledger_pid"
e2e_done
