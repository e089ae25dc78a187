#!/usr/bin/env bash
# CSV uploads (SPEC §6) against the real tagproof-factory, PostgreSQL, Redis and tagproof-scan:
# the happy path with every accepted quirk of the format, rows in tags and the one log entry
# that queues their leaves (the exact leaf record), the Redis cache and a first scan that hits it, progress while a slow
# client sends, all-or-nothing and skip-invalid with line-numbered errors, tags registered by
# this or another factory, every kind of bad input (counting rows to prove nothing was
# imported), 413 before the body, Idempotency-Key, truncated bodies, roles and tenants.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"
e2e_env
# Generous deadlines for an ASan build on a busy machine; polling must not hit the rate limit.
export TAGPROOF_PG_TIMEOUT_MS=5000 TAGPROOF_REDIS_TIMEOUT_MS=2000
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
export TAGPROOF_UPLOAD_MAX_MB=2
owner=$TAGPROOF_TEST_PG_OWNER_URL
factory_up
e2e_start tagproof-scan
scan_pid=$last_pid
stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
host=${TAGPROOF_FACTORY_LISTEN%:*}
port=${TAGPROOF_FACTORY_LISTEN##*:}

uuid() { cat /proc/sys/kernel/random/uuid; }
# csv_of N FILE — a CSV of N random tags.
csv_of() { python3 -c 'import sys, uuid; print("tag_id"); [print(uuid.uuid4()) for _ in range(int(sys.argv[1]))]' "$1" >"$2"; }
sql() { psql "$owner" -qAt -v ON_ERROR_STOP=1 -c "$1"; }

# A factory with a product and a batch, made as the schema owner (the catalog endpoints are
# not this test's subject), and an API key of the given role: sets F_<name>, B_<name>,
# P_<name> and K_<name>.
make_factory() {
  local name=$1 f p b
  f=$(uuid) p=$(uuid) b=$(uuid)
  sql "INSERT INTO factories (id, name) VALUES ('$f', 'Upload $name $f');
       INSERT INTO products (id, factory_id, sku, name) VALUES ('$p', '$f', 'SKU-$name', 'Shoe $name');
       INSERT INTO batches (id, factory_id, product_id, code) VALUES ('$b', '$f', '$p', 'B-$name')"
  printf -v "F_$name" %s "$f"
  printf -v "P_$name" %s "$p"
  printf -v "B_$name" %s "$b"
  json_post /v1/api-keys "$admin_key" "{\"factory_id\": \"$f\", \"role\": \"factory_user\", \"name\": \"$name\"}"
  printf -v "K_$name" %s "$(jq_body .key)"
}
make_factory a
make_factory b
json_post /v1/api-keys "$admin_key" "{\"factory_id\": \"$F_a\", \"role\": \"viewer\", \"name\": \"viewer\"}"
viewer_key=$(jq_body .key)
check "keys for two factories and a viewer" test -n "$K_a" -a -n "$K_b" -a -n "$viewer_key"

# upload KEY BATCH FILE [curl args...] — POST the file as text/csv; status, body, headers.
upload() {
  local key=$1 batch=$2 file=$3
  shift 3
  api POST "/v1/batches/$batch/tags${UPLOAD_QUERY:-}" -H "X-Api-Key: $key" -H 'Content-Type: text/csv' \
    --data-binary "@$file" "$@"
}

# wait_done KEY ID — polls the upload until it leaves processing; its JSON in $work/body.
wait_done() {
  local key=$1 id=$2
  for _ in $(seq 1 300); do
    api GET "/v1/uploads/$id" -H "X-Api-Key: $key"
    [ "$(jq_body .status)" != processing ] && return 0
    sleep 0.2
  done
  return 1
}

# run_upload KEY BATCH FILE [curl args...] — upload and wait: $up_id, $up_status, final JSON.
run_upload() {
  local key=$1
  upload "$@"
  up_id=$(jq_body .id)
  up_code=$status
  if [ "$status" = 202 ]; then wait_done "$key" "$up_id"; fi
  up_status=$(jq_body .status)
}

tags_of_upload() { sql "SELECT count(*) FROM tags WHERE upload_id = '$1'"; }
# Entries queued for the batch (an anchor another test runs may expand uploads into leaves of
# kind tag meanwhile; those are not counted).
leaves_of_batch() { sql "SELECT count(*) FROM log_entries WHERE batch_id = '$1' AND kind <> 'tag'"; }
tags_of_batch() { sql "SELECT count(*) FROM tags WHERE batch_id = '$1'"; }

# --- the happy path: BOM, CRLF and LF, blank lines, upper case, serials (UTF-8, a backslash, none)
t1=$(uuid) t2=$(uuid) t3=$(uuid)
T1=$(tr 'a-f' 'A-F' <<<"$t1")
printf '\xef\xbb\xbfserial,tag_id,colour\r\nNº 1 ✓,%s,red\r\n\r\nSN-\\2,%s,"blue, dark"\n\n,%s,\r\n\r\n\n' \
  "$T1" "$t2" "$t3" >"$work/happy.csv"
upload "$K_a" "$B_a" "$work/happy.csv"
check "an upload answers 202 (got $status)" test "$status" = 202
id=$(jq_body .id)
check "…with Location: /v1/uploads/{id}" grep -qi "^location: /v1/uploads/$id" "$work/headers"
check "…and the upload resource" jq -e --arg b "$B_a" '.batch_id == $b and (.status == "processing" or .status == "completed") and .rows_total == 3 and .mode == "all-or-nothing" and .errors == []' "$work/body"
check "the upload completes" wait_done "$K_a" "$id"
check "…with its counts" jq -e '.status == "completed" and .rows_total == 3 and .rows_accepted == 3 and .rows_rejected == 0 and .errors == [] and (.finished_at | length) > 0' "$work/body"
check "3 rows in tags for the upload" test "$(tags_of_upload "$id")" = 3
check "…stored lower case, with their serials" test "$(sql "SELECT string_agg(serial, '|' ORDER BY serial NULLS LAST) || '/' || bool_and(tag_id::text = lower(tag_id::text)) FROM tags WHERE tag_id IN ('$t1', '$t2', '$t3')")" = 'Nº 1 ✓|SN-\2/true'
check "…of the batch's factory and product" test "$(sql "SELECT count(*) FROM tags WHERE upload_id = '$id' AND factory_id = '$F_a' AND product_id = '$P_a' AND batch_id = '$B_a'")" = 3
happy_id=$id
check "one log entry queues the upload's leaves" test "$(sql "SELECT count(*) FROM log_entries WHERE kind = 'upload' AND upload_id = '$id' AND batch_id = '$B_a' AND factory_id = '$F_a'")" = 1
check "…and no leaf of them exists before the anchor expands it (or all three, if an anchor another test runs did)" \
  test "$(sql "SELECT count(*) FILTER (WHERE e.kind = 'tag') = CASE WHEN bool_or(e.appended_at IS NOT NULL) FILTER (WHERE e.kind = 'upload') THEN 3 ELSE 0 END FROM log_entries e WHERE e.upload_id = '$id' OR e.tag_id IN ('$t1', '$t2', '$t3')")" = t
api GET "/v1/tags/$t1" -H "X-Api-Key: $K_a"
check "the tag's anchoring stage is queued, not unlogged (or further on, if an anchor ran)" \
  jq -e '.anchor.status == "pending" and (.anchor.stage == "queued" and .anchor.leaf_index == null and (.anchor.queued_at | length) > 0 or (.anchor.stage | IN("appended", "checkpointed")))' "$work/body"
api GET "/v1/proofs/$t1" -H "X-Api-Key: $K_a"
check "…and its proof is pending (202) at the same stage (got $status)" \
  bash -c "[ '$status' = 202 ] && jq -e '.status == \"pending\" and (.stage | IN(\"queued\", \"appended\"))' '$work/body' >/dev/null"
epoch=$(sql "SELECT extract(epoch FROM registered_at)::bigint FROM tags WHERE tag_id = '$t1'")
want=$(printf 'tagproof/tag/v1\n%s\n%s\n%s\n%s\n%s\n' "$t1" "$F_a" "$B_a" "$P_a" \
  "$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" | od -An -tx1 | tr -d ' \n')
got=$(sql "SELECT encode(tagproof_tag_record(t), 'hex') FROM tags t WHERE tag_id = '$t1'")
check "the leaf record the anchor will append is SPEC §7's text, byte for byte" test "$got" = "$want"
rkey="tp:t:$t1"
check "the new tag is in the Redis cache" test "$(redis-cli -u "$TAGPROOF_TEST_REDIS_URL" HGET "$rkey" b)" = "$B_a"
check "…described as the scan service describes it" bash -c "redis-cli -u '$TAGPROOF_TEST_REDIS_URL' HGET '$rkey' d | jq -e --arg p '$P_a' --arg f '$F_a' '.product.id == \$p and .product.sku == \"SKU-a\" and .batch.code == \"B-a\" and .factory.id == \$f' >/dev/null"
ttl=$(redis-cli -u "$TAGPROOF_TEST_REDIS_URL" TTL "$rkey")
check "…with the cache TTL ($ttl s)" test "$ttl" -gt 600000 -a "$ttl" -le 604800
code=$(curl -s -o "$work/scan" -w '%{http_code}' -A 'Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0' "http://$TAGPROOF_SCAN_LISTEN/v1/scan/$T1")
check "a first scan of a new tag answers 200 (got $code)" test "$code" = 200
check "…authentic, from the cache, first scan" jq -e --arg t "$t1" '.tag_id == $t and .verdict == "authentic" and .source == "cache" and .first_scan == true and .product.sku == "SKU-a"' "$work/scan"

# An admin may upload to any factory's batch.
ta=$(uuid)
printf 'tag_id\n%s\n' "$ta" >"$work/admin.csv"
run_upload "$admin_key" "$B_a" "$work/admin.csv"
check "an admin uploads to a factory's batch" test "$up_status" = completed
check "…registered to that factory" test "$(sql "SELECT factory_id FROM tags WHERE tag_id = '$ta'")" = "$F_a"

# --- all-or-nothing: line-numbered errors, nothing imported --------------------------------
tb=$(uuid)
printf 'tag_id\n%s\n' "$tb" >"$work/b.csv"
run_upload "$K_b" "$B_b" "$work/b.csv"
check "factory b registers a tag" test "$up_status" = completed
before=$(tags_of_batch "$B_a")
leaves_before=$(leaves_of_batch "$B_a")
d=$(uuid) n1=$(uuid) n2=$(uuid)
{
  echo tag_id
  echo "$n1"              # line 2
  echo "not-a-uuid"       # line 3
  echo "$d"               # line 4
  echo "$t2"              # line 5: registered by this factory
  echo "$d"               # line 6: the duplicate of line 4
  echo "$tb"              # line 7: registered by factory b
  echo "{$n2}"            # line 8
} >"$work/bad.csv"
run_upload "$K_a" "$B_a" "$work/bad.csv"
check "a file with bad rows fails (all-or-nothing)" test "$up_status" = failed
check "…with the validator's errors by line" jq -e '[.errors[] | select(.code == "invalid_uuid") | .line] == [3, 8]' "$work/body"
check "…the duplicate names both lines" jq -e '.errors[] | select(.code == "duplicate_tag_id") | .line == 6 and (.message | test("line 4"))' "$work/body"
check "…and its counts" jq -e '.rows_total == 7 and .rows_accepted == 0 and .rows_rejected == 3' "$work/body"
check "nothing of it was imported" test "$(tags_of_upload "$up_id")/$(tags_of_batch "$B_a")/$(leaves_of_batch "$B_a")" = "0/$before/$leaves_before"

{
  echo tag_id
  echo "$n1"
  echo "$t2"
  echo "$(uuid)"
  echo "$tb"
} >"$work/taken.csv"
run_upload "$K_a" "$B_a" "$work/taken.csv"
check "tags already registered fail the upload" test "$up_status" = failed
check "…reported by line: this factory's and another factory's" jq -e --arg t2 "$t2" --arg tb "$tb" '[.errors[] | select(.code == "already_registered") | [.line, (.message | contains($t2) or contains($tb))]] == [[3, true], [5, true]]' "$work/body"
check "…without naming the other factory" bash -c "! grep -q '$F_b' '$work/body'"
check "…counted as rejected rows" jq -e '.rows_total == 4 and .rows_accepted == 0 and .rows_rejected == 2' "$work/body"
check "nothing of it was imported" test "$(tags_of_upload "$up_id")/$(tags_of_batch "$B_a")/$(leaves_of_batch "$B_a")" = "0/$before/$leaves_before"
check "factory b's tag is still factory b's" test "$(sql "SELECT factory_id FROM tags WHERE tag_id = '$tb'")" = "$F_b"

# --- skip-invalid: the valid rows are imported, the rest reported ---------------------------
UPLOAD_QUERY='?mode=skip-invalid' run_upload "$K_a" "$B_a" "$work/bad.csv"
check "skip-invalid imports the valid rows" test "$up_status" = completed
check "…reports the others" jq -e '.mode == "skip-invalid" and .rows_total == 7 and .rows_accepted == 2 and .rows_rejected == 5 and ([.errors[].line] == [3, 5, 6, 7, 8])' "$work/body"
check "…and imported exactly the two new tags" test "$(sql "SELECT string_agg(tag_id::text, ',' ORDER BY tag_id) FROM tags WHERE upload_id = '$up_id'")" = "$(printf '%s\n' "$n1" "$d" | sort | paste -sd,)"
check "…with their leaves queued" test "$(sql "SELECT count(*) FROM log_entries WHERE kind = 'upload' AND upload_id = '$up_id'")" = 1
check "…and cached them" test "$(redis-cli -u "$TAGPROOF_TEST_REDIS_URL" EXISTS "tp:t:$n1" "tp:t:$d")" = 2
check "factory b's tag is not cached as factory a's" bash -c "[ \"\$(redis-cli -u '$TAGPROOF_TEST_REDIS_URL' HGET 'tp:t:$tb' b)\" != '$B_a' ]"
printf 'tag_id\nnot-a-uuid\n{%s}\n' "$(uuid)" >"$work/allbad.csv"
UPLOAD_QUERY='?mode=skip-invalid' run_upload "$K_a" "$B_a" "$work/allbad.csv"
check "skip-invalid without one valid row completes (an empty COPY)" test "$up_status" = completed
check "…importing and queuing nothing" test "$(jq -c '[.rows_total, .rows_accepted, .rows_rejected]' "$work/body")/$(tags_of_upload "$up_id")/$(sql "SELECT count(*) FROM log_entries WHERE upload_id = '$up_id'")" = "[2,0,2]/0/0"
api POST "/v1/batches/$B_a/tags?mode=all" -H "X-Api-Key: $K_a" -H 'Content-Type: text/csv' --data-binary "@$work/b.csv"
check "an unknown mode answers 400 (got $status)" test "$status" = 400

# --- bad input: each a clear failure, nothing imported --------------------------------------
# bad_input NAME FILE CODE — the upload fails with CODE, and no row of the batch is added.
bad_input() {
  local name=$1 file=$2 code=$3 b t l
  b=$(tags_of_batch "$B_a")
  l=$(leaves_of_batch "$B_a")
  run_upload "$K_a" "$B_a" "$file"
  if [ "$up_code" = 202 ] && [ "$up_status" = failed ] && jq -e --arg c "$code" '.errors[0].code == $c and (.errors[0].message | length) > 10' "$work/body" >/dev/null; then
    ok "$name: a failed upload with a reason ($code)"
  else
    not_ok "$name: expected a failed upload with $code (got $up_code $(head -c 300 "$work/body"))"
  fi
  t=$(tags_of_batch "$B_a")
  check "$name: nothing imported ($b → $t tags, $l → $(leaves_of_batch "$B_a") leaves)" test "$t/$(leaves_of_batch "$B_a")" = "$b/$l"
}
: >"$work/empty.csv"
bad_input "an empty file" "$work/empty.csv" empty_file
printf 'serial,code\nA,1\n' >"$work/nocol.csv"
bad_input "no tag_id column" "$work/nocol.csv" no_tag_id_column
printf 'tag_id\n%s\n"%s\n%s\n' "$(uuid)" "$(uuid)" "$(uuid)" >"$work/quotes.csv"
bad_input "unbalanced quotes" "$work/quotes.csv" unbalanced_quotes
{ printf 'tag_id\n%s\n' "$(uuid)"; head -c 4096 /dev/urandom; } >"$work/garbage.csv"
run_upload "$K_a" "$B_a" "$work/garbage.csv"
check "binary garbage: a failed upload with a reason" jq -e '.status == "failed" and (.errors[0].code | IN("invalid_utf8", "nul_byte", "unexpected_quote", "field_count", "invalid_uuid", "unbalanced_quotes", "text_after_quote", "line_too_long"))' "$work/body"
check "binary garbage: nothing imported" test "$(tags_of_upload "$up_id")" = 0
{ printf 'tag_id\n%s\n' "$(uuid)"; head -c 1048576 /dev/zero | tr '\0' 'a'; printf '\n%s\n' "$(uuid)"; } >"$work/long.csv"
bad_input "a 1 MB line" "$work/long.csv" line_too_long
printf 'tag_id\n' >"$work/header.csv"
bad_input "a header and no rows" "$work/header.csv" no_rows

# --- the limit: 413 before the body is sent -------------------------------------------------
cat >"$work/raw.py" <<'PY'
# raw.py HOST PORT PATH KEY MODE [FILE [EXTRA_HEADER]] — one POST over a raw socket.
#   nobody: declare 3 MiB and send nothing; print the status line.
#   short:  send the file under a Content-Length 1000 bytes larger, then close the write side.
#   slow:   send half the file, touch FILE.half, wait for FILE.go, send the rest; print the
#           status line and the body.
import os, socket, sys, time
host, port, path, key, mode = sys.argv[1:6]
body = open(sys.argv[6], "rb").read() if len(sys.argv) > 6 else b""
extra = sys.argv[7] + "\r\n" if len(sys.argv) > 7 else ""
length = {"nobody": 3 << 20, "short": len(body) + 1000}.get(mode, len(body))
head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {key}\r\n"
        f"Content-Type: text/csv\r\nContent-Length: {length}\r\n{extra}\r\n")
s = socket.create_connection((host, int(port)))
s.settimeout(30)
s.sendall(head.encode())
if mode == "short":
    s.sendall(body)
    s.shutdown(socket.SHUT_WR)
elif mode == "slow":
    half = len(body) // 2
    s.sendall(body[:half])
    open(sys.argv[6] + ".half", "w").close()
    while not os.path.exists(sys.argv[6] + ".go"):
        time.sleep(0.05)
    s.sendall(body[half:])
resp = b""
try:
    while b"\r\n\r\n" not in resp or (mode == "slow" and not resp.rstrip().endswith(b"}")):
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
except OSError:
    pass
print(resp.split(b"\r\n", 1)[0].decode(errors="replace"))
if mode == "slow":
    print(resp.split(b"\r\n\r\n", 1)[-1].decode(errors="replace"))
PY
line=$(python3 "$work/raw.py" "$host" "$port" "/v1/batches/$B_a/tags" "$K_a" nobody)
check "a body over TAGPROOF_UPLOAD_MAX_MB answers 413 before it is sent ($line)" grep -q '^HTTP/1.1 413' <<<"$line"
head -c $((2 * 1024 * 1024 + 1)) /dev/zero >"$work/big.csv"
upload "$K_a" "$B_a" "$work/big.csv"
check "curl sending a body over the limit gets 413 (got $status)" test "$status" = 413
check "…as problem+json" jq -e '.status == 413' "$work/body"

# --- truncated bodies: the upload fails, nothing imported, the key may be used again --------
csv_of 500 "$work/t500.csv"
key=trunc-$(uuid)
before=$(tags_of_batch "$B_a")
python3 "$work/raw.py" "$host" "$port" "/v1/batches/$B_a/tags" "$K_a" short "$work/t500.csv" "Idempotency-Key: $key" >/dev/null
tid=""
for _ in $(seq 1 100); do
  tid=$(sql "SELECT id FROM uploads WHERE idempotency_key = '$key' AND status = 'failed'")
  [ -n "$tid" ] && break
  sleep 0.1
done
check "a body shorter than its Content-Length fails the upload" test -n "$tid"
api GET "/v1/uploads/$tid" -H "X-Api-Key: $K_a"
check "…reported as body_truncated" jq -e '.status == "failed" and .errors[0].code == "body_truncated" and .errors[0].line == null' "$work/body"
check "…and nothing imported" test "$(tags_of_upload "$tid")/$(tags_of_batch "$B_a")" = "0/$before"
run_upload "$K_a" "$B_a" "$work/t500.csv" -H "Idempotency-Key: $key"
check "the same key and the whole body then make a new upload" test "$up_status/$([ "$up_id" != "$tid" ] && echo new)" = completed/new
check "…of 500 tags" test "$(tags_of_upload "$up_id")" = 500

# --- Idempotency-Key ------------------------------------------------------------------------
key=idem-$(uuid)
first=$up_id
run_upload "$K_a" "$B_a" "$work/happy.csv" -H "Idempotency-Key: $key"
# happy.csv's tags are registered: the first upload with this key fails, deterministically.
idem_id=$up_id
check "an upload with a key (already registered tags: failed)" test "$up_status" = failed
upload "$K_a" "$B_a" "$work/happy.csv" -H "Idempotency-Key: $key"
check "the same key and body answer the same upload" test "$status/$(jq_body .id)" = "202/$idem_id"
check "…marked as a replay" grep -qi '^idempotent-replayed: true' "$work/headers"
check "…with its Location" grep -qi "^location: /v1/uploads/$idem_id" "$work/headers"
upload "$K_a" "$B_a" "$work/b.csv" -H "Idempotency-Key: $key"
check "the same key with another body answers 422 (got $status)" test "$status" = 422
UPLOAD_QUERY='?mode=skip-invalid' upload "$K_a" "$B_a" "$work/happy.csv" -H "Idempotency-Key: $key"
check "the same key in another mode answers 422 (got $status)" test "$status" = 422
upload "$K_b" "$B_b" "$work/happy.csv" -H "Idempotency-Key: $key"
check "keys are per factory: factory b's first use is its own upload (got $status)" test "$status" = 202 -a "$(jq_body .id)" != "$idem_id"
api POST "/v1/batches/$B_a/tags" -H "X-Api-Key: $K_a" -H 'Idempotency-Key: has space' --data-binary "@$work/b.csv" -H 'Content-Type: text/csv'
check "a malformed key answers 400 (got $status)" test "$status" = 400

# A slow client: half the body, a pause, the rest. Meanwhile the upload shows its progress
# and the same key answers 409.
csv_of 20000 "$work/slow.csv"
key=slow-$(uuid)
python3 "$work/raw.py" "$host" "$port" "/v1/batches/$B_a/tags" "$K_a" slow "$work/slow.csv" "Idempotency-Key: $key" >"$work/slow.out" &
slow_pid=$!
for _ in $(seq 1 100); do [ -e "$work/slow.csv.half" ] && break; sleep 0.1; done
sleep 2.5 # more than the one-second progress period
sid=$(sql "SELECT id FROM uploads WHERE idempotency_key = '$key'")
api GET "/v1/uploads/$sid" -H "X-Api-Key: $viewer_key"
check "while the body arrives, a viewer reads the upload processing" jq -e '.status == "processing"' "$work/body"
check "…with its progress so far ($(jq -c '[.rows_total, .rows_accepted, .rows_rejected]' "$work/body"))" jq -e '.rows_total > 1000 and .rows_total < 20000 and .rows_accepted == .rows_total and .rows_rejected == 0' "$work/body"
upload "$K_a" "$B_a" "$work/slow.csv" -H "Idempotency-Key: $key"
check "the same key while it runs answers 409 (got $status)" test "$status" = 409
check "…its transaction holds the upload's liveness lock" \
  test "$(sql "SELECT pg_try_advisory_xact_lock_shared(1953525868, hashtext('$sid'))")" = f
touch "$work/slow.csv.go"
wait "$slow_pid"
check "the slow client gets 202 at the end of its body" grep -q '^HTTP/1.1 202' "$work/slow.out"
check "the slow upload completes with all 20000 rows" wait_done "$K_a" "$sid"
check "…counted" jq -e '.status == "completed" and .rows_total == 20000 and .rows_accepted == 20000' "$work/body"
check "…imported" test "$(tags_of_upload "$sid")" = 20000

# --- roles, tenants, types ------------------------------------------------------------------
upload "$viewer_key" "$B_a" "$work/b.csv"
check "a viewer may not upload (got $status)" test "$status" = 403
upload "$K_b" "$B_a" "$work/b.csv"
check "another factory's batch answers 404 (got $status)" test "$status" = 404
upload "$K_a" "$(uuid)" "$work/b.csv"
check "an unknown batch answers 404 (got $status)" test "$status" = 404
api GET "/v1/uploads/$sid" -H "X-Api-Key: $K_b"
check "another factory's upload answers 404 (got $status)" test "$status" = 404
api GET "/v1/uploads/$(uuid)" -H "X-Api-Key: $K_a"
check "an unknown upload answers 404 (got $status)" test "$status" = 404
api GET "/v1/uploads/$sid"
check "no credential answers 401 (got $status)" test "$status" = 401
api POST "/v1/batches/$B_a/tags" -H "X-Api-Key: $K_a" -H 'Content-Type: application/json' --data-binary '{"tag_id": 1}'
check "a JSON body answers 415 (got $status)" test "$status" = 415
sql "UPDATE batches SET revoked_at = now() WHERE id = '$B_b'"
upload "$K_b" "$B_b" "$work/t500.csv"
check "a recalled batch answers 409 (got $status)" test "$status" = 409

# --- a process that died mid-upload ---------------------------------------------------------
dead=$(uuid)
sql "INSERT INTO uploads (id, factory_id, batch_id, status, idempotency_key, updated_at)
     VALUES ('$dead', '$F_a', '$B_a', 'processing', 'dead-$dead', now() - interval '10 minutes')"
api GET "/v1/uploads/$dead" -H "X-Api-Key: $K_a"
check "an upload whose heartbeat stopped reads as failed (interrupted)" jq -e '.status == "failed" and .errors[0].code == "interrupted"' "$work/body"
check "…and is recorded so" test "$(sql "SELECT status FROM uploads WHERE id = '$dead'")" = failed
run_upload "$K_a" "$B_a" "$work/b.csv" -H "Idempotency-Key: dead-$dead"
check "…and its key may be used again" test "$up_code/$([ "$up_id" != "$dead" ] && echo new)" = 202/new
# A transaction that died with its connection (a crash, a failover) frees the upload's lock at
# once: its heartbeat need only be a few seconds old, not two minutes.
dead=$(uuid)
sql "INSERT INTO uploads (id, factory_id, batch_id, status, idempotency_key, updated_at)
     VALUES ('$dead', '$F_a', '$B_a', 'processing', 'dead-$dead', now() - interval '10 seconds')"
run_upload "$K_a" "$B_a" "$work/b.csv" -H "Idempotency-Key: dead-$dead"
check "an upload whose transaction is gone gives its key back after seconds" test "$up_code/$([ "$up_id" != "$dead" ] && echo new)" = 202/new
check "…recorded as interrupted" test "$(sql "SELECT status || '/' || (errors->0->>'code') FROM uploads WHERE id = '$dead'")" = failed/interrupted

# A start slower than the liveness grace (a saturated pool, a failing-over database: here a test
# delay between the upload's BEGIN and its lock): a reader meanwhile takes it for dead, and the
# upload then stops at once, visibly, instead of importing into a transaction that cannot end.
csv_of 100 "$work/slowstart.csv"
key=slowstart-$(uuid)
TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port) TAGPROOF_TEST_UPLOAD_START_DELAY_MS=7000 \
  factory_start factory-slowstart
ss_url=$last_url ss_pid=$last_pid
curl -s -o "$work/ss.body" -w '%{http_code}' -H "X-Api-Key: $K_a" -H 'Content-Type: text/csv' \
  -H "Idempotency-Key: $key" --data-binary "@$work/slowstart.csv" "$ss_url/v1/batches/$B_a/tags" >"$work/ss.code" &
ss_curl=$!
sleep 6
ss_id=$(sql "SELECT id FROM uploads WHERE idempotency_key = '$key'")
api GET "/v1/uploads/$ss_id" -H "X-Api-Key: $K_a"
check "an upload whose start outlasts the grace, its lock not yet taken, reads as interrupted" jq -e '.status == "failed" and .errors[0].code == "interrupted"' "$work/body"
wait "$ss_curl"
check "…and the upload then stops visibly instead of importing ($(cat "$work/ss.code"))" \
  bash -c "[ \"\$(cat '$work/ss.code')\" = 503 ] || jq -e '.status == \"failed\"' '$work/ss.body'"
check "…said in its log" grep -q 'taken for dead before it started' "$work/factory-slowstart.log"
check "…nothing imported" test "$(tags_of_upload "$ss_id")" = 0
e2e_stop factory-slowstart "$ss_pid"

# --- integrity without per-row foreign keys (migrations/0003, 0009) ---------------------------
# sql_state SQL — the SQLSTATE the statement fails with, as the schema owner ("ok" if none).
sql_state() {
  psql "$owner" -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate -c "$1" >/dev/null 2>"$work/sqlerr" && echo ok && return
  sed -n 's/^ERROR: *//p' "$work/sqlerr" | head -1
}
# Refused by the insert policy of tags: 42501, new row violates row-level security policy.
check "a tag of a batch that does not exist is refused" test "$(sql_state "INSERT INTO tags (tag_id, factory_id, batch_id, product_id) VALUES ('$(uuid)', '$F_a', '$(uuid)', '$P_a')")" = 42501
check "…and a tag whose factory is not its batch's" test "$(sql_state "INSERT INTO tags (tag_id, factory_id, batch_id, product_id) VALUES ('$(uuid)', '$F_b', '$B_a', '$P_a')")" = 42501
check "…and a tag whose product is not its batch's" test "$(sql_state "INSERT INTO tags (tag_id, factory_id, batch_id, product_id) VALUES ('$(uuid)', '$F_a', '$B_a', '$P_b')")" = 42501
check "…and a tag of an upload that does not exist" test "$(sql_state "INSERT INTO tags (tag_id, factory_id, batch_id, product_id, upload_id) VALUES ('$(uuid)', '$F_a', '$B_a', '$P_a', '$(uuid)')")" = 42501
check "…and a leaf of another factory's batch" test "$(sql_state "INSERT INTO log_entries (kind, factory_id, batch_id, record) VALUES ('revoke', '$F_b', '$B_a', 'x')")" = 23503
# svc_state SQL — the same as the services' role, with every tenant visible.
svc_state() {
  PGOPTIONS='-c tagproof.tenant=all' psql "$TAGPROOF_TEST_PG_URL" -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate -c "$1" >/dev/null 2>"$work/sqlerr" && echo ok && return
  sed -n 's/^ERROR: *//p' "$work/sqlerr" | head -1
}
# The bulk path: a transaction declares the upload whose tags it inserts (migrations/0009).
open_up=$(uuid)
sql "INSERT INTO uploads (id, factory_id, batch_id, status) VALUES ('$open_up', '$F_a', '$B_a', 'processing')"
declare_up() { echo "SELECT set_config('tagproof.upload', '$1', true);"; }
ins_tag() { echo "INSERT INTO tags (tag_id, factory_id, batch_id, product_id, upload_id) VALUES ('$(uuid)', '$F_a', '$B_a', '$1', '$2')"; }
check "a services' tag of its declared upload is accepted (rolled back)" test "$(svc_state "BEGIN; $(declare_up "$open_up") $(ins_tag "$P_a" "$open_up"); ROLLBACK")" = ok
check "…one whose product is not its batch's is refused" test "$(svc_state "$(declare_up "$open_up") $(ins_tag "$P_b" "$open_up")")" = 42501
check "…and no tag joins an upload that has completed (its log entry stands for a fixed set)" test "$(svc_state "$(declare_up "$happy_id") $(ins_tag "$P_a" "$happy_id")")" = 42501
check "…declared or not" test "$(svc_state "$(ins_tag "$P_a" "$happy_id")")" = 42501
# scope_as TENANT — the upload tagproof_upload_scope() finds for open_up under that tenant.
scope_as() {
  PGOPTIONS="-c tagproof.tenant=$1 -c tagproof.upload=$open_up" psql "$TAGPROOF_TEST_PG_URL" -qAt \
    -c "SELECT coalesce((tagproof_upload_scope()).upload_id::text, 'none')"
}
check "a tenant may declare its own upload" test "$(scope_as "$F_a")" = "$open_up"
check "…and another factory's tenant may not" test "$(scope_as "$F_b")" = none
sql "UPDATE uploads SET status = 'failed' WHERE id = '$open_up'"
check "the services may not change a tag's registration (its leaf is read from it later)" test "$(svc_state "UPDATE tags SET batch_id = batch_id WHERE tag_id = '$t1'")" = 42501
check "…nor delete a tag" test "$(svc_state "DELETE FROM tags WHERE tag_id = '$t1'")" = 42501
check "…but record its first scan" test "$(svc_state "UPDATE tags SET first_scanned_at = first_scanned_at WHERE tag_id = '$t1'")" = ok
check "an upload's log entry cannot be turned to another upload" test "$(sql_state "UPDATE log_entries SET upload_id = '$(uuid)' WHERE kind = 'upload' AND upload_id = '$happy_id'")" = 23000
check "a batch with tags cannot be deleted" test "$(sql_state "DELETE FROM batches WHERE id = '$B_a'")" = 23503
empty_batch=$(uuid)
sql "INSERT INTO batches (id, factory_id, product_id, code) VALUES ('$empty_batch', '$F_a', '$P_a', 'B-empty')"
check "…one without tags can" test "$(sql_state "DELETE FROM batches WHERE id = '$empty_batch'")" = ok

curl -s "$FACTORY_DIRECT_URL/metrics" >"$work/metrics"
check "/metrics counts uploads by result" bash -c "grep -q '^tagproof_uploads_total{result=\"completed\"} [1-9]' '$work/metrics' && grep -q '^tagproof_uploads_total{result=\"failed\"} [1-9]' '$work/metrics'"
check "…and their rows" grep -q '^tagproof_upload_rows_total{result="imported"} [1-9]' "$work/metrics"

e2e_stop tagproof-scan "$scan_pid"
e2e_stop tagproof-factory "$factory_pid"
e2e_done
