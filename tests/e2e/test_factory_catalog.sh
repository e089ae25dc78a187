#!/usr/bin/env bash
# The factory API's catalog against the real programs: products and batches (statuses,
# validation, pagination across pages), two factories that never see each other's rows, a
# tag's anchoring stages, batch statistics from the events the scan service's sink stored,
# and recalls — scans answer revoked within a second, one revocation leaf, and the reconciler
# re-marks a recall that Redis missed while it was down or lost afterwards.
#
# It runs in a database and a Redis of its own (made on the test stack's PostgreSQL cluster,
# and on a free port), so the log's leaf indices and checkpoints, the scan-event stream and
# the Redis restart here touch no other test.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

: "${TAGPROOF_TEST_PG_DIR:?run the end-to-end tests through scripts/test}"
# Its Redis keeps an append-only file: its data outlive the restart below.
private_stack "catalog_e2e_$$_$RANDOM" --appendonly yes

e2e_env
export TAGPROOF_REDIS_TIMEOUT_MS=2000 TAGPROOF_PG_TIMEOUT_MS=5000
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
owner_sql() { psql "$TAGPROOF_TEST_PG_OWNER_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }
rcli() { redis-cli -p "$redis_port" "$@"; }
factory_up
check "tagproof-factory is ready" curl -fs "$FACTORY_DIRECT_URL/v1/ready"

# as KEY METHOD PATH [JSON] — a request with an API key (and a JSON body when given).
as() {
  local key=$1 method=$2 path=$3
  if [ $# -ge 4 ]; then
    api "$method" "$path" -H "X-Api-Key: $key" -H 'Content-Type: application/json' --data-binary "$4"
  else
    api "$method" "$path" -H "X-Api-Key: $key"
  fi
}
# expect STATUS WHAT — checks the last status (and problem+json for errors).
expect() {
  if [ "$status" = "$1" ]; then ok "$2 ($1)"; else not_ok "$2: $status, not $1: $(body | head -c 300)"; fi
  if [ "$1" -ge 400 ] && ! grep -qi '^content-type: application/problem+json' "$work/headers"; then
    not_ok "…$2 answers problem+json"
  fi
}
new_key() { # FACTORY ROLE → the key
  as "$admin_key" POST /v1/api-keys "{\"factory_id\":\"$1\",\"role\":\"$2\",\"name\":\"e2e $2\"}"
  [ "$status" = 201 ] || { echo "cannot make a $2 key: $status $(body)" >&2; exit 1; }
  jq_body .key
}
uuid() { cat /proc/sys/kernel/random/uuid; }

# --- two factories, a writer and a viewer each ------------------------------------------------
as "$admin_key" POST /v1/factories '{"name":"Catalog A"}'
fa=$(jq_body .id)
as "$admin_key" POST /v1/factories '{"name":"Catalog B"}'
fb=$(jq_body .id)
ua=$(new_key "$fa" factory_user)
va=$(new_key "$fa" viewer)
ub=$(new_key "$fb" factory_user)
vb=$(new_key "$fb" viewer)

# --- products ----------------------------------------------------------------------------------
as "$ua" POST /v1/products '{"sku":"A-1","name":"Trail boot"}'
expect 201 "a factory user creates a product"
pa=$(jq_body .id)
check "…in its own factory, with the fields sent" jq -e --arg f "$fa" \
  '.factory_id == $f and .sku == "A-1" and .name == "Trail boot" and (.id|length) == 36 and .created_at' "$work/body"
check "…and a UUIDv7 id" grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-7' <<<"$pa"
as "$ua" POST /v1/products '{"sku":"A-1","name":"Another"}'
expect 409 "the same SKU twice in one factory"
as "$admin_key" POST /v1/products "{\"sku\":\"B-1\",\"name\":\"Road shoe\",\"factory_id\":\"$fb\"}"
expect 201 "an admin creates a product naming the factory"
pb=$(jq_body .id)
check "…in that factory" jq -e --arg f "$fb" '.factory_id == $f' "$work/body"
as "$ub" POST /v1/products '{"sku":"A-1","name":"Same SKU elsewhere"}'
expect 201 "another factory may use the same SKU"
as "$admin_key" POST /v1/products '{"sku":"X-1","name":"Nowhere"}'
expect 422 "an admin must name the factory"
as "$admin_key" POST /v1/products "{\"sku\":\"X-1\",\"name\":\"Nowhere\",\"factory_id\":\"$(uuid)\"}"
expect 404 "a factory that does not exist"
as "$ua" POST /v1/products "{\"sku\":\"X-2\",\"name\":\"Elsewhere\",\"factory_id\":\"$fb\"}"
expect 404 "a factory user naming another factory"
as "$va" POST /v1/products '{"sku":"V-1","name":"Viewer"}'
expect 403 "a viewer cannot create a product"
api POST /v1/products -H "X-Api-Key: $ua" -H 'Content-Type: text/plain' --data-binary '{"sku":"T","name":"T"}'
expect 415 "a body that is not application/json"
# Bytes a proxy would not pass on as they are (it parses JSON): straight to the service.
api_direct POST /v1/products -H "X-Api-Key: $ua" -H 'Content-Type: application/json' --data-binary '{"sku":"T","name":'
expect 400 "malformed JSON"
api_direct POST /v1/products -H "X-Api-Key: $ua" -H 'Content-Type: application/json' --data-binary '{"sku":"T","sku":"U","name":"dup"}'
expect 400 "a duplicate key"
as "$ua" POST /v1/products '["sku"]'
expect 400 "a body that is not an object"
as "$ua" POST /v1/products '{"sku":"T"}'
expect 422 "a missing name"
as "$ua" POST /v1/products '{"sku":"","name":"Empty SKU"}'
expect 422 "an empty SKU"
as "$ua" POST /v1/products '{"sku":7,"name":"Number"}'
expect 422 "a SKU that is not a string"
as "$ua" POST /v1/products "{\"sku\":\"$(head -c 101 /dev/zero | tr '\0' 'S')\",\"name\":\"Long\"}"
expect 422 "a SKU of 101 characters"
as "$ua" POST /v1/products '{"sku":"N\u0000UL","name":"NUL"}'
expect 400 "a SKU with a NUL character (refused with the body)"
as "$ua" POST /v1/products "{\"sku\":\"$(printf 'é%.0s' $(seq 1 100))\",\"name\":\"Accents\"}"
expect 201 "a SKU of 100 two-byte characters (characters, not bytes, are counted)"
as "$ua" POST /v1/products "{\"sku\":\"P\",\"name\":\"X\",\"factory_id\":\"not-a-uuid\"}"
expect 422 "a factory_id that is not a UUID"
api POST /v1/products -H 'Content-Type: application/json' --data-binary '{"sku":"T","name":"T"}'
expect 401 "no credentials"

as "$ua" GET "/v1/products/$pa"
expect 200 "the factory user reads its product"
check "…the same product" jq -e --arg id "$pa" '.id == $id and .sku == "A-1"' "$work/body"
as "$va" GET "/v1/products/$pa"
expect 200 "its viewer reads it"
as "$admin_key" GET "/v1/products/$pa"
expect 200 "an admin reads it"
as "$ua" GET "/v1/products/$(tr a-f A-F <<<"$pa")"
expect 200 "an upper-case id is the same product"
as "$ua" GET "/v1/products/$(uuid)"
expect 404 "a product that does not exist"
as "$ua" GET /v1/products/not-a-uuid
expect 400 "a product id that is not a UUID"

# --- lists and their pages ---------------------------------------------------------------------
for i in 1 2 3 4 5; do
  as "$ua" POST /v1/products "{\"sku\":\"PAGE-$i\",\"name\":\"Paged $i\"}"
  [ "$status" = 201 ] || not_ok "paged product $i: $status"
done
# walk KEY PATH LIMIT → every page's items into $work/all, the page count in $pages
walk() {
  local key=$1 path=$2 limit=$3 cursor="" sep
  : >"$work/all"
  pages=0
  while :; do
    case $path in *\?*) sep='&' ;; *) sep='?' ;; esac
    as "$key" GET "$path${sep}limit=$limit${cursor:+&cursor=$cursor}"
    [ "$status" = 200 ] || { not_ok "page $pages of $path: $status"; return; }
    pages=$((pages + 1))
    jq -c '.items[]' "$work/body" >>"$work/all"
    [ "$(jq '.items | length' "$work/body")" -le "$limit" ] || not_ok "a page longer than $limit"
    cursor=$(jq_body '.next_cursor // empty')
    [ -n "$cursor" ] || break
    [ "$pages" -lt 50 ] || { not_ok "pagination does not end"; return; }
  done
}
walk "$ua" /v1/products 2
check "7 products over pages of 2 take 4 pages (got $pages)" test "$pages" = 4
check "…each product once, in id (creation) order" bash -c "jq -r .id '$work/all' | sort -c && [ \$(jq -r .id '$work/all' | sort -u | wc -l) = 7 ]"
check "…none of them another factory's" bash -c "[ \$(jq -r .factory_id '$work/all' | sort -u) = '$fa' ]"
walk "$va" /v1/products 5
check "the viewer sees the same 7 in 2 pages" bash -c "[ $pages = 2 ] && [ \$(wc -l <'$work/all') = 7 ]"
walk "$ub" /v1/products 100
check "factory B sees only its 2 products" bash -c "[ \$(wc -l <'$work/all') = 2 ] && [ \$(jq -r .factory_id '$work/all' | sort -u) = '$fb' ]"
walk "$admin_key" /v1/products 3
check "an admin sees both factories' 9 products" bash -c "[ \$(wc -l <'$work/all') = 9 ]"
walk "$admin_key" "/v1/products?factory_id=$fb" 3
check "…or one factory's with ?factory_id=" bash -c "[ \$(wc -l <'$work/all') = 2 ]"
walk "$ua" "/v1/products?factory_id=$fb" 3
check "a factory user asking for another factory's list gets nothing" bash -c "[ \$(wc -l <'$work/all') = 0 ]"
as "$ua" GET "/v1/products?limit=0"
expect 400 "limit=0"
as "$ua" GET "/v1/products?limit=1001"
expect 400 "limit=1001"
as "$ua" GET "/v1/products?limit=two"
expect 400 "limit=two"
as "$ua" GET "/v1/products?cursor=nope"
expect 400 "a cursor the API never gave"
as "$ua" GET "/v1/products?factory_id=nope"
expect 400 "a factory_id filter that is not a UUID"

# --- batches -----------------------------------------------------------------------------------
as "$ua" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"LOT-1\"}"
expect 201 "a factory user creates a batch"
ba=$(jq_body .id)
check "…of its product and factory, not recalled" jq -e --arg f "$fa" --arg p "$pa" \
  '.factory_id == $f and .product_id == $p and .code == "LOT-1" and .revoked_at == null' "$work/body"
as "$ua" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"LOT-1\"}"
expect 409 "the same batch code twice"
as "$ua" POST /v1/batches "{\"product_id\":\"$pb\",\"code\":\"LOT-X\"}"
expect 404 "a batch of another factory's product"
as "$ua" POST /v1/batches "{\"product_id\":\"$(uuid)\",\"code\":\"LOT-X\"}"
expect 404 "a batch of a product that does not exist"
as "$ua" POST /v1/batches '{"product_id":"12345","code":"LOT-X"}'
expect 422 "a product_id that is not a UUID"
as "$ua" POST /v1/batches "{\"product_id\":\"$pa\"}"
expect 422 "a batch without a code"
as "$ua" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"$(head -c 101 /dev/zero | tr '\0' 'C')\"}"
expect 422 "a code of 101 characters"
as "$va" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"LOT-V\"}"
expect 403 "a viewer cannot create a batch"
as "$ub" POST /v1/batches "{\"product_id\":\"$pb\",\"code\":\"LOT-1\"}"
expect 201 "factory B makes its batch (the same code is fine there)"
bb=$(jq_body .id)
as "$admin_key" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"LOT-2\"}"
expect 201 "an admin creates a batch for any factory's product"
ba2=$(jq_body .id)
check "…in the product's factory" jq -e --arg f "$fa" '.factory_id == $f' "$work/body"
for i in 3 4 5; do as "$ua" POST /v1/batches "{\"product_id\":\"$pa\",\"code\":\"LOT-$i\"}"; done
ba5=$(jq_body .id)
walk "$ua" /v1/batches 2
check "5 batches over pages of 2 take 3 pages (got $pages)" bash -c "[ $pages = 3 ] && [ \$(jq -r .id '$work/all' | sort -u | wc -l) = 5 ]"
check "…none of them B's" bash -c "! grep -q '$bb' '$work/all'"
walk "$admin_key" "/v1/batches?product_id=$pb" 10
check "?product_id= lists that product's batches" bash -c "[ \$(wc -l <'$work/all') = 1 ] && grep -q '$bb' '$work/all'"
as "$va" GET "/v1/batches/$ba"
expect 200 "a viewer reads its factory's batch"
check "…with its product and recall state" jq -e --arg p "$pa" \
  '.product.id == $p and .product.sku == "A-1" and .revoked_at == null' "$work/body"
as "$va" GET "/v1/batches/$ba/stats"
expect 200 "a viewer reads its batch's statistics"
check "…all zero before any tag" jq -e '.tags == 0 and .scanned_tags == 0 and .scans == 0 and .suspicious_scans == 0 and (.scans_per_day | length) == 30' "$work/body"
as "$ua" GET "/v1/batches/$(uuid)"
expect 404 "a batch that does not exist"
as "$ua" GET "/v1/batches/x"
expect 400 "a batch id that is not a UUID"

# --- tags, registered as the upload service would (the owner writes them here) -----------------
mapfile -t ta < <(owner_sql -v b="$ba" -v f="$fa" -v p="$pa" <<'SQL'
INSERT INTO tags (tag_id, factory_id, batch_id, product_id, serial)
  SELECT gen_random_uuid(), :'f', :'b', :'p', 'SN-' || n FROM generate_series(1, 5) n;
SELECT tag_id FROM tags WHERE batch_id = :'b' ORDER BY serial;
SQL
)
mapfile -t tb < <(owner_sql -v b="$bb" -v f="$fb" -v p="$pb" <<'SQL'
INSERT INTO tags (tag_id, factory_id, batch_id, product_id)
  SELECT gen_random_uuid(), :'f', :'b', :'p' FROM generate_series(1, 3);
SELECT tag_id FROM tags WHERE batch_id = :'b' ORDER BY tag_id;
SQL
)
check "5 tags in A's batch and 3 in B's" bash -c "[ ${#ta[@]} = 5 ] && [ ${#tb[@]} = 3 ]"
# Log entries: ta[0] none, ta[1] queued, ta[2..4] leaves 0, 1, 2.
owner_sql -v f="$fa" -v b="$ba" -v t1="${ta[1]}" -v t2="${ta[2]}" -v t3="${ta[3]}" -v t4="${ta[4]}" <<'SQL'
INSERT INTO log_entries (kind, factory_id, tag_id, batch_id, record, leaf_index, leaf_hash, appended_at)
SELECT 'tag', :'f', t.id::uuid, :'b', convert_to('tagproof/tag/v1' || E'\n' || t.id || E'\n', 'UTF8'),
       t.leaf, CASE WHEN t.leaf IS NOT NULL THEN sha256(convert_to(t.id, 'UTF8')) END,
       CASE WHEN t.leaf IS NOT NULL THEN now() END
  FROM (VALUES (:'t1', NULL::bigint), (:'t2', 0), (:'t3', 1), (:'t4', 2)) t(id, leaf);
SQL
# stage_of KEY TAG → "<status> <stage> <checkpoint_size or null>"
stage_of() {
  as "$1" GET "/v1/tags/$2"
  jq -r '"\(.anchor.status) \(.anchor.stage) \(.anchor.checkpoint_size)"' "$work/body"
}
as "$ua" GET "/v1/tags/${ta[0]}"
expect 200 "a factory user reads its tag"
check "…with factory, batch, product, serial and times" jq -e --arg f "$fa" --arg b "$ba" --arg p "$pa" \
  '.factory_id == $f and .batch_id == $b and .product_id == $p and .serial == "SN-1" and .registered_at and .first_scanned_at == null and .batch.code == "LOT-1" and .product.sku == "A-1"' "$work/body"
check "a tag with no log entry is pending, unlogged" test "$(stage_of "$va" "${ta[0]}")" = "pending unlogged null"
check "a queued entry is pending, queued" test "$(stage_of "$ua" "${ta[1]}")" = "pending queued null"
check "a leaf no checkpoint covers is pending, appended" test "$(stage_of "$ua" "${ta[2]}")" = "pending appended null"
owner_sql <<'SQL'
INSERT INTO checkpoints (size, root, note) VALUES (2, decode(repeat('ab', 32), 'hex'), 'e2e checkpoint 2');
INSERT INTO anchors (checkpoint_size, ledger, state, ledger_ref) VALUES (2, 'http', 'submitted', 'e2e-1');
SQL
check "a leaf under a checkpoint not yet anchored is pending, checkpointed" test "$(stage_of "$ua" "${ta[3]}")" = "pending checkpointed 2"
check "…and the leaf after it still appended" test "$(stage_of "$ua" "${ta[4]}")" = "pending appended null"
owner_sql -c "UPDATE anchors SET state = 'confirmed', confirmed_at = now() WHERE checkpoint_size = 2"
check "a leaf under a confirmed anchor is anchored" test "$(stage_of "$admin_key" "${ta[2]}")" = "anchored anchored 2"
check "…with its leaf index and the ledger's reference" jq -e '.anchor.leaf_index == 0 and .anchor.ledger == "http" and .anchor.ledger_tx == "e2e-1" and .anchor.anchored_at' "$work/body"
check "…as is leaf 1" test "$(stage_of "$ua" "${ta[3]}")" = "anchored anchored 2"
check "…but not leaf 2" test "$(stage_of "$ua" "${ta[4]}")" = "pending appended null"
as "$ua" GET "/v1/tags/$(uuid)"
expect 404 "a tag that is not registered"
as "$ua" GET "/v1/tags/${ta[0]:0:35}"
expect 400 "a tag id that is not a UUID"
as "$ua" GET "/v1/batches/$ba/stats"
check "the batch statistics count its 5 tags" jq -e '.tags == 5 and .scanned_tags == 0' "$work/body"

# --- A never reaches B ---------------------------------------------------------------------------
for key in "$ua" "$va"; do
  who=$([ "$key" = "$ua" ] && echo "A's factory user" || echo "A's viewer")
  as "$key" GET "/v1/products/$pb"; expect 404 "$who: B's product"
  as "$key" GET "/v1/batches/$bb"; expect 404 "$who: B's batch"
  as "$key" GET "/v1/tags/${tb[0]}"; expect 404 "$who: B's tag"
  as "$key" GET "/v1/batches/$bb/stats"; expect 404 "$who: B's batch statistics"
done
as "$ua" POST "/v1/batches/$bb/revoke"; expect 404 "A's factory user: recalling B's batch"
as "$va" POST "/v1/batches/$bb/revoke"; expect 403 "A's viewer: recalling anything"
as "$ub" GET "/v1/tags/${ta[0]}"; expect 404 "B's factory user: A's tag"
walk "$ua" /v1/batches 100
check "A's lists never show B's batch" bash -c "! grep -q '$bb' '$work/all'"
check "B's batch is untouched" bash -c "[ \"\$(psql '$TAGPROOF_TEST_PG_OWNER_URL' -Atc \"SELECT revoked_at IS NULL FROM batches WHERE id = '$bb'\")\" = t ]"

# --- scans, and the statistics the sink's events make -------------------------------------------
e2e_start tagproof-scan
scan_pid=$last_pid
stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
scan_base="http://$TAGPROOF_SCAN_LISTEN"
ua_str='Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1'
scans=0
suspicious=0
# scan TAG DEVICE [curl args...] → the body in $work/scan; counts A's scans
scan() {
  local tag=$1 dev=$2
  shift 2
  code=$(curl -sS -A "$ua_str" -H "X-Device-Id: $dev" -o "$work/scan" -w '%{http_code}' "$@" "$scan_base/v1/scan/$tag")
}
count_a() {
  scans=$((scans + 1))
  [ "$(jq -r .verdict "$work/scan")" = suspicious ] && suspicious=$((suspicious + 1))
  return 0
}
scan "${ta[0]}" phone-1; count_a
check "A's first tag scans authentic" jq -e '.verdict == "authentic" and .first_scan == true' "$work/scan"
scan "${ta[0]}" phone-2; count_a
scan "${ta[1]}" phone-1; count_a
for i in $(seq 1 12); do scan "${ta[2]}" "bot-$i" -A ''; count_a; done
check "a burst of bot scans makes at least one suspicious ($suspicious)" test "$suspicious" -ge 1
stats_ok=0
for _ in $(seq 1 100); do
  as "$va" GET "/v1/batches/$ba/stats"
  if [ "$status" = 200 ] && jq -e --argjson n "$scans" '.scans == $n and .scanned_tags == 3' "$work/body" >/dev/null; then
    stats_ok=1
    break
  fi
  sleep 0.2
done
check "the batch statistics count the $scans scans once the sink stored them" test "$stats_ok" = 1
check "…5 tags, 3 of them scanned, $suspicious suspicious scans" jq -e --argjson s "$suspicious" \
  '.tags == 5 and .scanned_tags == 3 and .suspicious_scans == $s and .revoked_scans == 0' "$work/body"
today=$(date -u +%F)
check "…30 days of scans ending today, today's holding all of them" jq -e --arg d "$today" --argjson n "$scans" \
  '(.scans_per_day | length) == 30 and .scans_per_day[-1].date == $d and .scans_per_day[-1].scans == $n and ([.scans_per_day[].scans] | add) == $n and .scans_per_day[0].scans == 0' "$work/body"
as "$ua" GET "/v1/tags/${ta[0]}"
check "a scanned tag shows its first scan" jq -e '.first_scanned_at != null' "$work/body"

# --- recall: the scan path answers revoked within a second ---------------------------------------
scan "${tb[0]}" shopper
scan "${tb[0]}" shopper
check "B's tag answers authentic from a warm cache" jq -e '.verdict == "authentic" and .source == "cache"' "$work/scan"
as "$vb" POST "/v1/batches/$bb/revoke"
expect 403 "B's viewer cannot recall"
as "$ub" POST "/v1/batches/$bb/revoke"
expect 200 "B's factory user recalls its batch"
check "…the first recall, with a log entry" jq -e '.recall.first == true and (.recall.log_entry_id|type) == "number" and .revoked_at != null' "$work/body"
revoked_at=$(jq_body .revoked_at)
# The recall answers once Redis holds the mark: from then on, within one second.
t0=$(date +%s%N)
revoked=0
while :; do
  scan "${tb[0]}" shopper
  took_ms=$((($(date +%s%N) - t0) / 1000000))
  if jq -e '.verdict == "revoked"' "$work/scan" >/dev/null; then revoked=1; break; fi
  [ "$took_ms" -lt 1000 ] || break
  sleep 0.05
done
check "a scan within one second of the recall answers revoked (${took_ms} ms)" bash -c "[ $revoked = 1 ] && [ $took_ms -le 1000 ]"
check "…from the cache, with the reason revoked" jq -e '.source == "cache" and (.risk.reasons | index("revoked"))' "$work/scan"
scan "${tb[1]}" shopper
check "an uncached tag of the batch answers revoked too" jq -e '.verdict == "revoked"' "$work/scan"
as "$ub" POST "/v1/batches/$bb/revoke"
expect 200 "recalling again"
check "…keeps the first time and appends nothing" jq -e --arg t "$revoked_at" '.recall.first == false and .recall.log_entry_id == null and .revoked_at == $t' "$work/body"
as "$admin_key" POST "/v1/batches/$bb/revoke"
expect 200 "an admin may recall too (again a no-op)"
leaves=$(owner_sql -c "SELECT count(*) FROM log_entries WHERE kind = 'revoke' AND batch_id = '$bb'")
check "exactly one revocation leaf for the batch (got $leaves)" test "$leaves" = 1
stamp=$(date -u -d "$revoked_at" +%Y-%m-%dT%H:%M:%SZ)
want=$(printf 'tagproof/revoke/v1\n%s\n%s\n%s\n' "$bb" "$fb" "$stamp" | od -An -tx1 | tr -d ' \n')
got=$(owner_sql -c "SELECT encode(record, 'hex') FROM log_entries WHERE kind = 'revoke' AND batch_id = '$bb'")
check "…whose record is exactly tagproof/revoke/v1, batch, factory, time ($stamp)" test "$got" = "$want"
check "…of factory B, without a tag" test "$(owner_sql -c "SELECT factory_id = '$fb' AND tag_id IS NULL FROM log_entries WHERE kind = 'revoke' AND batch_id = '$bb'")" = t
as "$ub" GET "/v1/batches/$bb"
check "the batch shows its recall time" jq -e --arg t "$revoked_at" '.revoked_at == $t' "$work/body"
as "$ub" GET "/v1/tags/${tb[0]}"
check "…and so does its tag" jq -e --arg t "$revoked_at" '.batch.revoked_at == $t' "$work/body"
as "$ub" GET "/v1/batches/$bb/stats"
check "B's statistics count its revoked scans" bash -c "for i in \$(seq 1 50); do curl -s -H 'X-Api-Key: $ub' '$FACTORY_URL/v1/batches/$bb/stats' | jq -e '.revoked_scans >= 2 and .scans >= 4' >/dev/null && exit 0; sleep 0.2; done; exit 1"
as "$ua" GET "/v1/batches/$ba"
check "A's batch is not recalled" jq -e '.revoked_at == null' "$work/body"

# Ten recalls of one batch at once: one of them recalls it, all report the same time.
racers=()
for i in $(seq 1 10); do
  curl -s -o "$work/recall-$i" -w '%{http_code}' -X POST -H "X-Api-Key: $ua" \
    "$FACTORY_URL/v1/batches/$ba5/revoke" >"$work/recall-code-$i" &
  racers+=($!)
done
wait "${racers[@]}"
check "ten concurrent recalls all answer 200" bash -c "[ \"\$(cat '$work'/recall-code-* | tr -d '\n')\" = \"\$(printf '200%.0s' \$(seq 1 10))\" ]"
check "…exactly one of them is the first" test "$(cat "$work"/recall-[0-9]* | jq -s '[.[] | select(.recall.first)] | length')" = 1
check "…all with the same recall time" test "$(cat "$work"/recall-[0-9]* | jq -r .revoked_at | sort -u | wc -l)" = 1
check "…and one revocation leaf" test "$(owner_sql -c "SELECT count(*) FROM log_entries WHERE kind = 'revoke' AND batch_id = '$ba5'")" = 1

# --- the reconciler ------------------------------------------------------------------------------
rcli DEL "tp:rv:$bb" >/dev/null
back=0
for _ in $(seq 1 80); do
  [ "$(rcli EXISTS "tp:rv:$bb")" = 1 ] && { back=1; break; }
  sleep 0.1
done
check "a recall mark Redis lost is back within the reconciler's 5 s" test "$back" = 1

# Redis down at the moment of a recall: the recall holds, the mark follows when Redis returns.
scan "${ta[3]}" shopper
scan "${ta[3]}" shopper
check "A's tag answers authentic from a warm cache" jq -e '.verdict == "authentic" and .source == "cache"' "$work/scan"
stack_redis_stop "$redis_dir"
as "$ua" POST "/v1/batches/$ba/revoke"
expect 200 "a recall while Redis is down still succeeds"
check "…and is stored" test "$(owner_sql -c "SELECT revoked_at IS NOT NULL FROM batches WHERE id = '$ba'")" = t
curl -s "$FACTORY_DIRECT_URL/metrics" >"$work/metrics"
check "…its own Redis mark failed (metrics)" grep -Eq '^tagproof_recall_marks_total\{writer="recall",result="failed"\} [1-9]' "$work/metrics"
stack_redis_start "$redis_dir" "$redis_port"
check "Redis is back with its data (the warm tag is still cached)" test "$(rcli EXISTS "tp:t:${ta[3]}")" = 1
back=0
for _ in $(seq 1 150); do
  [ "$(rcli EXISTS "tp:rv:$ba")" = 1 ] && { back=1; break; }
  sleep 0.1
done
check "the reconciler marks the recalled batch within seconds of Redis returning" test "$back" = 1
curl -s "$FACTORY_DIRECT_URL/metrics" >"$work/metrics"
check "…as its metrics say" grep -Eq '^tagproof_recall_marks_total\{writer="reconciler",result="ok"\} [1-9]' "$work/metrics"
revoked=0
for _ in $(seq 1 50); do
  scan "${ta[3]}" shopper
  if jq -e '.verdict == "revoked" and .source == "cache"' "$work/scan" >/dev/null; then revoked=1; break; fi
  sleep 0.2
done
check "the warm tag now answers revoked from the cache" test "$revoked" = 1

e2e_stop tagproof-scan "$scan_pid"
e2e_stop tagproof-factory "$factory_pid"
e2e_done
