#!/usr/bin/env bash
# tagproof-anchor against the HTTP ledger (tagproof-devledger), end to end: leaves appended in
# commit order with roots equal to `tagproof merkle root` of the same records, signed
# checkpoints, anchors confirmed on the ledger; a standby taking over within seconds of a
# kill -9 of the leader; kill -9 between sending an anchor and recording it, and in the middle of
# an append, losing nothing and anchoring nothing twice; the ledger down for three cycles, then
# every leaf anchored once it is back, one ledger entry per anchored checkpoint.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/anchor_lib.sh"
e2e_env
export TAGPROOF_ANCHOR_INTERVAL_S=1
export TAGPROOF_LEDGER=http
export TAGPROOF_LEDGER_URL=http://$TAGPROOF_DEVLEDGER_LISTEN
anchor_db "anchor_http_$$"
ledger_file=$TAGPROOF_DATA_DIR/devledger.jsonl

start_ledger() {
  e2e_start tagproof-devledger
  ledger_pid=$last_pid
  stack_wait_http "$TAGPROOF_LEDGER_URL/v1/health" 30
}
latest_confirmed() { osql "SELECT coalesce(max(checkpoint_size), 0) FROM anchors WHERE state = 'confirmed'"; }
leaves() { osql "SELECT count(*) FROM log_entries"; }
# The checkpoint of SIZE has the root `tagproof merkle root` computes over the same records.
check_root() {
  check "checkpoint $1's root equals tagproof merkle root of the first $1 records" \
    test "$(osql "SELECT encode(root, 'hex') FROM checkpoints WHERE size = $1")" = "$(merkle_root_of "$1")"
}
# Every log entry is a leaf, in id order, and each complete subtree is stored exactly once.
check_log_whole() {
  check "$1: leaf indexes follow id order with no gap" \
    test "$(osql "SELECT count(*) FROM (SELECT leaf_index, row_number() OVER (ORDER BY id) - 1 AS rn
                                          FROM log_entries) x WHERE leaf_index IS DISTINCT FROM rn")" = 0
  check "$1: merkle_nodes holds every complete subtree, nothing more" \
    test "$(osql "SELECT count(*) FROM merkle_nodes")" = \
         "$(osql "SELECT sum(($(leaves)::bigint >> l)) FROM generate_series(0, 62) l")"
}

start_ledger

# 1. Seven leaves, appended in batches of three.
add_tags 7
start_anchor a TAGPROOF_TEST_ANCHOR_BATCH=3
a_pid=$last_pid a_addr=$last_addr
check "seven leaves are checkpointed and anchored" wait_sql "SELECT string_agg(checkpoint_size || ':' || state, ',') FROM anchors" "7:confirmed" 30
check_root 7
check_log_whole "after 7"
note=$(osql "SELECT note FROM checkpoints WHERE size = 7")
root64=$(osql "SELECT encode(root, 'base64') FROM checkpoints WHERE size = 7")
check "the checkpoint note is origin, size, base64 root, a blank line and a signature by the log's key" \
  test "$(printf '%s\n' "$note" | head -4 | tr '\n' '|')" = "tagproof.local/log|7|$root64||"
check "…signed with the key recorded in log_keys" \
  bash -c "printf '%s\n' \"\$1\" | tail -1 | grep -q '^— tagproof.local/log '" _ "$note"
check "log_keys holds the verifier key" \
  test "$(osql "SELECT count(*) FROM log_keys WHERE vkey LIKE 'tagproof.local/log+%'")" = 1
ref=$(osql "SELECT ledger_ref FROM anchors WHERE checkpoint_size = 7")
check "the anchor's ledger_ref is the devledger entry holding size 7 and the root" \
  bash -c "curl -fs '$TAGPROOF_LEDGER_URL/v1/anchors/$ref' | jq -e '.size == 7 and .root == \"$(osql "SELECT encode(root, 'hex') FROM checkpoints WHERE size = 7")\"'"
check "submitted_at and confirmed_at are set, attempts is 1" \
  test "$(osql "SELECT submitted_at IS NOT NULL AND confirmed_at IS NOT NULL AND attempts = 1 FROM anchors WHERE checkpoint_size = 7")" = t
check "metrics: checkpoint size 7" test "$(metric_of "$a_addr" tagproof_checkpoint_size)" = 7
check "metrics: anchors by state" test "$(metric_of "$a_addr" 'tagproof_anchors{state="confirmed"}')" = 1
check "metrics: no anchoring lag once every leaf is covered" test "$(metric_of "$a_addr" tagproof_anchor_lag_seconds)" = 0
check "metrics: this instance leads" test "$(metric_of "$a_addr" tagproof_anchor_leader)" = 1

# 2. The log grows: a second checkpoint, consistent with the first.
add_tags 5
check "twelve leaves are anchored" wait_sql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'" 12 20
check_root 7
check_root 12
check_log_whole "after 12"

# 3. Leader failover: a standby waits, and takes over within seconds of a kill -9.
start_anchor b
b_pid=$last_pid b_addr=$last_addr
sleep 1.5
check "the second instance waits as a standby" test "$(metric_of "$b_addr" tagproof_anchor_leader)" = 0
kill -KILL "$a_pid"
killed_at=$(date +%s%N)
add_tags 4
check "the standby leads within 5 s of the leader's kill -9" \
  bash -c "for i in \$(seq 50); do [ \"\$(curl -fs http://$b_addr/metrics | awk '\$1 == \"tagproof_anchor_leader\" {print \$2}')\" = 1 ] && exit 0; sleep 0.1; done; exit 1"
check "…and anchors the new leaves" wait_sql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'" 16 20
echo "# takeover and anchoring took $((($(date +%s%N) - killed_at) / 1000000)) ms"
check_root 16
check "anchor_leader names the new leader" test "$(osql "SELECT holder FROM anchor_leader")" = "$(hostname)-$b_pid"
e2e_stop b "$b_pid"

# 4. kill -9 between sending an anchor and recording it: reconciled at the next start, the
#    ledger holds one entry for it.
add_tags 3
start_anchor c TAGPROOF_TEST_CRASH_AT=after_send
c_pid=$last_pid
rc=0; e2e_wait_exit "$c_pid" 30 || rc=$?
check "the instance crashes right after sending (SIGKILL, exit $rc)" test "$rc" = 137
check "…leaving the anchor of 19 pending" test "$(osql "SELECT state FROM anchors WHERE checkpoint_size = 19")" = pending
entries_of() { jq -s "map(select(.size == $1)) | length" "$ledger_file"; }
check "…while the ledger already has it" test "$(entries_of 19)" = 1
start_anchor d
d_pid=$last_pid
check "after a restart the anchor of 19 is confirmed" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 19" confirmed 20
check "…with the ledger's entry, still only one" test "$(entries_of 19)" = 1
check "…whose id the row records" test "$(osql "SELECT ledger_ref FROM anchors WHERE checkpoint_size = 19")" = \
  "$(jq -r 'select(.size == 19) | .id' "$ledger_file")"
e2e_stop d "$d_pid"

# 5. kill -9 in the middle of an append (batches of two): before a batch's commit nothing of
#    it is kept; after it the batch is whole; the next leader goes on from there.
add_tags 5
start_anchor e TAGPROOF_TEST_ANCHOR_BATCH=2 TAGPROOF_TEST_CRASH_AT=append_before_commit
rc=0; e2e_wait_exit "$last_pid" 30 || rc=$?
check "crash before a batch's commit (exit $rc)" test "$rc" = 137
check "…appended nothing of it" test "$(osql "SELECT count(leaf_index) FROM log_entries")" = 19
start_anchor f TAGPROOF_TEST_ANCHOR_BATCH=2 TAGPROOF_TEST_CRASH_AT=append_after_commit
rc=0; e2e_wait_exit "$last_pid" 30 || rc=$?
check "crash after a batch's commit (exit $rc)" test "$rc" = 137
check "…kept exactly that batch" test "$(osql "SELECT count(leaf_index) FROM log_entries")" = 21
check "…with its subtrees" test "$(osql "SELECT count(*) FROM merkle_nodes")" = \
  "$(osql "SELECT sum((21::bigint >> l)) FROM generate_series(0, 62) l")"
start_anchor g TAGPROOF_TEST_ANCHOR_BATCH=2
g_pid=$last_pid g_addr=$last_addr
check "the next leader appends the rest and anchors 24" wait_sql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'" 24 20
check_root 24
check_log_whole "after the crashes"

# 6. The ledger down for three cycles: each cycle's checkpoint fails after its tries; once the
#    ledger is back every leaf is anchored, one ledger entry per anchored checkpoint.
kill -KILL "$ledger_pid"
wait "$ledger_pid" 2>/dev/null || true
for round in 1 2 3; do
  add_tags 2
  size=$((24 + 2 * round))
  check "ledger down, cycle $round: checkpoint $size is tried 3 times and fails" \
    wait_sql "SELECT attempts >= 3 AND last_error LIKE 'POST to the ledger:%' FROM anchors WHERE checkpoint_size = $size" t 20
done
tries26=$(osql "SELECT attempts FROM anchors WHERE checkpoint_size = 26")
check "superseded checkpoints are failed and no longer tried" \
  test "$(osql "SELECT string_agg(state, ',' ORDER BY checkpoint_size) FROM anchors WHERE checkpoint_size IN (26, 28)")" = failed,failed
lag=$(metric_of "$g_addr" tagproof_anchor_lag_seconds)
check "metrics: the anchoring lag grows while the ledger is down ($lag s)" awk -v l="$lag" 'BEGIN { exit !(l > 1) }'
check "metrics: ledger errors are counted" \
  bash -c "curl -fs http://$g_addr/metrics | grep -q '^tagproof_ledger_errors_total{ledger=\"http\",call=\"submit\"} [1-9]'"
start_ledger
check "the ledger back: every leaf is anchored" wait_sql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'" "$(leaves)" 20
check "…one ledger entry per confirmed anchor" test "$(wc -l <"$ledger_file")" = "$(osql "SELECT count(*) FROM anchors WHERE state = 'confirmed'")"
check "…and no checkpoint twice on the ledger" test "$(jq -r .size "$ledger_file" | sort | uniq -d | wc -l)" = 0
check "…the superseded ones stay failed, with no more tries" test "$(osql "SELECT attempts FROM anchors WHERE checkpoint_size = 26")" = "$tries26"
check "…exactly those" test "$(osql "SELECT string_agg(checkpoint_size::text, ',' ORDER BY checkpoint_size) FROM anchors WHERE state = 'failed'")" = "26,28"
sleep 1.2
check "metrics: the lag is back to 0" test "$(metric_of "$g_addr" tagproof_anchor_lag_seconds)" = 0
check_root 30

# 7. The log never signs a tree inconsistent with its last signed checkpoint: a stored subtree
#    of the signed tree altered behind its back stops the signing (the leaves are still kept).
osql "UPDATE merkle_nodes SET hash = sha256('tampered') WHERE level = 4 AND idx = 0" >/dev/null
add_tags 2
check "after tampering, the new leaves are appended" wait_sql "SELECT count(leaf_index) FROM log_entries" 32 20
sleep 2.5
check "…but no checkpoint is signed for them" test "$(osql "SELECT max(size) FROM checkpoints")" = 30
check "…and the log says why" grep -q 'refusing to sign: the tree of 32 leaves is not consistent with the signed checkpoint of 30' "$work/g.log"
e2e_stop g "$g_pid"
for n in a c e f; do
  check "instance $n's log has no sanitizer report" bash -c "! grep -q Sanitizer '$work/$n.log'"
done
e2e_stop tagproof-devledger "$ledger_pid"
e2e_done
