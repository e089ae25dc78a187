#!/usr/bin/env bash
# Proofs against the real programs (SPEC §6, §7): a signed log of 1,000 tags built in the
# database as tagproof-anchor builds it (tagproof-mklog), its checkpoint anchored on a running
# tagproof-devledger; a tag's bundle fetched through the factory API verifies with
# `tagproof verify` and with an independent Python verifier, ledger included; any changed byte
# is refused by both; bundles come from the Redis cache the second time and never cross
# tenants; 202 while a leaf is not in a checkpoint; a second checkpoint's consistency proof
# verifies; POST /v1/proofs/verify, the log's checkpoint and key, anchors and their pages.
#
# A database and a Redis of its own (the log's leaf indices and the cache's newest-size key
# are global), made on the test stack's PostgreSQL cluster and on a free port.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

: "${TAGPROOF_TEST_PG_DIR:?run the end-to-end tests through scripts/test}"
verifier=$stack_root/tests/verifier
mklog=$bin/../tests/tagproof-mklog
private_stack "proofs_e2e_$$_$RANDOM"

e2e_env
export TAGPROOF_REDIS_TIMEOUT_MS=2000 TAGPROOF_PG_TIMEOUT_MS=5000 TAGPROOF_ANCHOR_INTERVAL_S=7
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
owner_sql() { psql "$TAGPROOF_TEST_PG_OWNER_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }
ledger_url="http://$TAGPROOF_DEVLEDGER_LISTEN"
e2e_start tagproof-devledger
ledger_pid=$last_pid
factory_up
check "tagproof-factory is ready" curl -fs "$FACTORY_DIRECT_URL/v1/ready"
check "tagproof-devledger is up" stack_wait_http "$ledger_url/v1/health" 10

as() { # KEY METHOD PATH [JSON]
  local key=$1 method=$2 path=$3
  if [ $# -ge 4 ]; then
    api "$method" "$path" -H "X-Api-Key: $key" -H 'Content-Type: application/json' --data-binary "$4"
  else
    api "$method" "$path" -H "X-Api-Key: $key"
  fi
}
expect() { # STATUS WHAT
  if [ "$status" = "$1" ]; then ok "$2 ($1)"; else not_ok "$2: $status, not $1: $(body | head -c 300)"; fi
  if [ "$1" -ge 400 ] && ! grep -qi '^content-type: application/problem+json' "$work/headers"; then
    not_ok "…$2 answers problem+json"
  fi
}
new_key() { # FACTORY ROLE
  as "$admin_key" POST /v1/api-keys "{\"factory_id\":\"$1\",\"role\":\"$2\",\"name\":\"e2e $2\"}"
  [ "$status" = 201 ] || { echo "cannot make a $2 key: $status $(body)" >&2; exit 1; }
  jq_body .key
}
cache_hits() {
  curl -s "$FACTORY_DIRECT_URL/metrics" | awk '/^tagproof_proof_cache_total\{result="hit"\}/ {print $2}' | grep . || echo 0
}
verify_cli() { "$bin/tagproof" verify "$@" >"$work/verify.out" 2>&1; }
verify_py() { python3 "$verifier/verify_bundle.py" "$@" >"$work/verify.out" 2>&1; }

# --- a signed log of 1,000 tags, anchored -------------------------------------------------------
log=$("$mklog" --url "$TAGPROOF_TEST_PG_OWNER_URL" --key-file "$work/log.pem" --leaves 1000 \
  --tags-out "$work/tags1")
vkey=$(jq -r .vkey <<<"$log")
root1=$(jq -r .root <<<"$log")
batch=$(jq -r .batch_id <<<"$log")
fa=$(jq -r .factory_id <<<"$log")
check "the log has 1,000 leaves and a checkpoint" test "$(jq -r .size <<<"$log")" = 1000
note1=$(owner_sql -c "SELECT note FROM checkpoints WHERE size = 1000")
# The root again, by an independent recursion over the records as the database holds them.
owner_sql -c "SELECT encode(record, 'hex') FROM log_entries ORDER BY leaf_index" >"$work/records"
check "an independent RFC 9162 recursion over the records gives the checkpoint's root" \
  test "$(python3 -c '
import hashlib, sys
def mth(d):
    if len(d) == 1: return hashlib.sha256(b"\0" + d[0]).digest()
    k = 1
    while k * 2 < len(d): k *= 2
    return hashlib.sha256(b"\1" + mth(d[:k]) + mth(d[k:])).digest()
print(mth([bytes.fromhex(l.strip()) for l in open(sys.argv[1])]).hex())' "$work/records")" = "$root1"
check "…and so does tagproof merkle root" test "$("$bin/tagproof" merkle root <"$work/records")" = "$root1"

jq -n --arg c "$note1" --arg r "$root1" '{origin: "tagproof.local/log", size: 1000, root: $r, checkpoint: ($c + "\n")}' \
  >"$work/anchor.json"
ledger_id=$(curl -fsS -XPOST "$ledger_url/v1/anchors" --data-binary @"$work/anchor.json" | jq -r .id)
check "the checkpoint is on the dev ledger" test -n "$ledger_id"
owner_sql -c "INSERT INTO anchors (checkpoint_size, ledger, state, ledger_ref, submitted_at, confirmed_at)
  VALUES (1000, 'http', 'confirmed', '$ledger_id', now(), now())"

# --- the log's key and checkpoint -------------------------------------------------------------
as "$admin_key" GET /v1/log/key
expect 200 "GET /v1/log/key"
check "…is the signer's key, one line" test "$(body)" = "$vkey"
check "…as text/plain" grep -qi '^content-type: text/plain' "$work/headers"
as "$admin_key" GET /v1/log/checkpoint
expect 200 "GET /v1/log/checkpoint"
check "…is the newest signed note" test "$(body)" = "$note1"

# --- a bundle, verified twice, ledger included --------------------------------------------------
tag=$(shuf -n 1 "$work/tags1")
tag_index=${tag#* }
tag=${tag% *}
as "$admin_key" GET "/v1/proofs/$tag"
expect 200 "an admin fetches a tag's bundle"
cp "$work/body" "$work/bundle1.json"
check "…in SPEC §7's shape" jq -e --arg t "$tag" --argjson i "$tag_index" --arg k "$vkey" --arg id "$ledger_id" \
  '.version == 1 and .tag_id == $t and .leaf.index == $i and (.leaf.hash | test("^[0-9a-f]{64}$"))
   and (.leaf.record | startswith("tagproof/tag/v1\n" + $t + "\n"))
   and .checkpoint.size == 1000 and .checkpoint.origin == "tagproof.local/log"
   and (.inclusion | length) == 10 and .log_key == $k
   and .anchor == {ledger: "http", status: "confirmed", id: $id}
   and (keys_unsorted == ["version","tag_id","leaf","checkpoint","inclusion","anchor","log_key"])' \
  "$work/bundle1.json"
check "…compact: not one byte that a change would not matter in" \
  bash -c "! grep -q '[[:space:]]\$' '$work/bundle1.json' && [ \$(wc -l <'$work/bundle1.json') = 0 ]"
# Both verifiers, ledger included, and any one changed byte refused by both.
while read -r line; do
  case $line in ok*) ok "${line#ok - }" ;; *) not_ok "${line#not ok - }" ;; esac
done < <("$verifier/check_bundle.sh" "$work/bundle1.json" "$vkey" "$bin/tagproof" "$ledger_url")
verify_cli "$work/bundle1.json" --key "$vkey" --ledger-url "$ledger_url" || true
check "tagproof verify prints each check" test "$(grep -cE '^ok +(record|leaf_hash|inclusion|checkpoint_signature|checkpoint_body|log_key|ledger) ' "$work/verify.out")" = 7
check "tagproof verify with the key from a file (@FILE)" bash -c "echo '$vkey' >'$work/vkey' && '$bin/tagproof' verify '$work/bundle1.json' --key @'$work/vkey' >/dev/null"

# --- the CLI's refusals -----------------------------------------------------------------------
other_key=$(python3 -c '
import base64, hashlib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
blob = b"\x01" + Ed25519PrivateKey.generate().public_key().public_bytes(*raw)
name = "tagproof.local/log"
print(name + "+" + hashlib.sha256(name.encode() + b"\n" + blob).digest()[:4].hex() + "+" +
      base64.b64encode(blob).decode())')
verify_cli "$work/bundle1.json" --key "$other_key" && rc=0 || rc=$?
check "another log's key: exit 1" test "$rc" = 1
check "…the signature and key checks fail" test "$(grep -cE '^FAIL +(checkpoint_signature|checkpoint_body|log_key) ' "$work/verify.out")" = 3
verify_cli "$work/bundle1.json" --key "$vkey" --ledger-url "http://127.0.0.1:$(stack_free_port)" && rc=0 || rc=$?
check "a ledger that does not answer: exit 1" test "$rc" = 1
jq '.anchor.id = "0000"' "$work/bundle1.json" >"$work/noentry.json"
verify_cli "$work/noentry.json" --key "$vkey" --ledger-url "$ledger_url" && rc=0 || rc=$?
check "an anchor id the ledger does not have: exit 1" bash -c "[ $rc = 1 ] && grep -q 'FAIL  ledger' '$work/verify.out'"
for args in "" "$work/bundle1.json" "--key $vkey" "$work/bundle1.json --key nonsense" \
  "$work/nope.json --key $vkey" "$work/records --key $vkey" "$work/bundle1.json --key $vkey --bogus"; do
  # shellcheck disable=SC2086
  "$bin/tagproof" verify $args >/dev/null 2>&1 && rc=0 || rc=$?
  check "tagproof verify ${args:-(no arguments)}: exit 2" test "$rc" = 2
done
echo '{"version":1}' | "$bin/tagproof" verify - --key "$vkey" >/dev/null 2>&1 && rc=0 || rc=$?
check "a JSON document that is not a bundle on standard input: exit 2" test "$rc" = 2

# --- the cache and the tenants -------------------------------------------------------------------
hits=$(cache_hits)
as "$admin_key" GET "/v1/proofs/$tag"
expect 200 "the same bundle again"
check "…the same bytes" cmp -s "$work/body" "$work/bundle1.json"
check "…from the Redis cache" test "$(cache_hits)" -gt "$hits"
ua=$(new_key "$fa" factory_user)
va=$(new_key "$fa" viewer)
as "$admin_key" POST /v1/factories '{"name":"Proofs other"}'
fb=$(jq_body .id)
ub=$(new_key "$fb" factory_user)
as "$ua" GET "/v1/proofs/$tag"
expect 200 "the owning factory's user fetches it"
check "…the same bytes" cmp -s "$work/body" "$work/bundle1.json"
as "$va" GET "/v1/proofs/$tag"
expect 200 "the owning factory's viewer fetches it"
as "$ub" GET "/v1/proofs/$tag"
expect 404 "another factory's user: not found, also with the bundle cached"
redis-cli -p "$redis_port" FLUSHALL >/dev/null
as "$ub" GET "/v1/proofs/$tag"
expect 404 "another factory's user: not found from the database either"
as "$admin_key" GET "/v1/proofs/$(cat /proc/sys/kernel/random/uuid)"
expect 404 "a tag that does not exist"
as "$admin_key" GET "/v1/proofs/not-a-uuid"
expect 400 "a tag id that is not a UUID"
api GET "/v1/proofs/$tag"
expect 401 "no credentials"
as "$admin_key" GET "/v1/proofs/$(tr a-f A-F <<<"$tag")"
expect 200 "an upper-case tag id is the same tag"
check "…the same bundle" cmp -s "$work/body" "$work/bundle1.json"

# --- pending: 202 ----------------------------------------------------------------------------------
"$mklog" --url "$TAGPROOF_TEST_PG_OWNER_URL" --key-file "$work/log.pem" --batch "$batch" \
  --leaves 3 --queued 2 --no-checkpoint --tags-out "$work/tags2" >/dev/null
appended=$(awk '$2 != "-" {print $1; exit}' "$work/tags2")
queued=$(awk '$2 == "-" {print $1; exit}' "$work/tags2")
as "$ua" GET "/v1/proofs/$appended"
expect 202 "a tag whose leaf is appended but in no checkpoint yet"
check "…says so" jq -e --arg t "$appended" '.tag_id == $t and .status == "pending" and .stage == "appended" and .leaf_index == 1000 and .checkpoint_size == 1000' "$work/body"
check "…with Retry-After, the anchor interval" grep -qi '^retry-after: 7' "$work/headers"
as "$ua" GET "/v1/proofs/$queued"
expect 202 "a tag whose log entry is queued"
check "…stage queued, no leaf yet" jq -e '.stage == "queued" and .leaf_index == null' "$work/body"
unlogged=$(cat /proc/sys/kernel/random/uuid)
owner_sql -c "INSERT INTO tags (tag_id, factory_id, batch_id, product_id)
  SELECT '$unlogged', factory_id, id, product_id FROM batches WHERE id = '$batch'"
as "$ua" GET "/v1/proofs/$unlogged"
expect 202 "a tag without a log entry"
check "…stage unlogged" jq -e '.stage == "unlogged"' "$work/body"
as "$ub" GET "/v1/proofs/$appended"
expect 404 "another factory's pending tag: not found"

# --- a second checkpoint: consistency -----------------------------------------------------------
log2=$("$mklog" --url "$TAGPROOF_TEST_PG_OWNER_URL" --key-file "$work/log.pem" --batch "$batch" \
  --leaves 500 --tags-out "$work/tags3")
root2=$(jq -r .root <<<"$log2")
check "the second checkpoint has 1,503 leaves" test "$(jq -r .size <<<"$log2")" = 1503
as "$admin_key" GET "/v1/log/consistency?from=1000&to=1503"
expect 200 "GET /v1/log/consistency?from=1000&to=1503"
cp "$work/body" "$work/consistency.json"
check "…{from, to, proof}" jq -e '.from == 1000 and .to == 1503 and (.proof | length) > 0 and (keys == ["from","proof","to"])' "$work/consistency.json"
if python3 "$verifier/verify_bundle.py" consistency --size1 1000 --size2 1503 --root1 "$root1" \
  --root2 "$root2" <"$work/consistency.json" >/dev/null; then
  ok "the independent verifier: the checkpoints are consistent"
else not_ok "the independent verifier finds the checkpoints inconsistent"; fi
check "…and so does tagproof merkle verify-consistency" bash -c "jq -r '.proof[]' '$work/consistency.json' |
  '$bin/tagproof' merkle verify-consistency --size1 1000 --size2 1503 --root1 $root1 --root2 $root2"
bad=$(jq -c '.proof[0] |= (.[0:63] + (if .[63:64] == "0" then "1" else "0" end))' "$work/consistency.json")
python3 "$verifier/verify_bundle.py" consistency --size1 1000 --size2 1503 --root1 "$root1" \
  --root2 "$root2" <<<"$bad" >/dev/null && rc=0 || rc=$?
check "…a changed proof hash is inconsistent" test "$rc" = 1
python3 "$verifier/verify_bundle.py" consistency --size1 1000 --size2 1503 --root1 "$root2" \
  --root2 "$root2" <"$work/consistency.json" >/dev/null && rc=0 || rc=$?
check "…so is another old root" test "$rc" = 1
for q in "from=1503&to=1503" "from=1&to=1503" "from=1003&to=1503"; do
  as "$admin_key" GET "/v1/log/consistency?$q"
  f=${q%%&*}; f=${f#from=}
  r1=$(python3 -c '
import hashlib, sys
def mth(d):
    if len(d) == 1: return hashlib.sha256(b"\0" + d[0]).digest()
    k = 1
    while k * 2 < len(d): k *= 2
    return hashlib.sha256(b"\1" + mth(d[:k]) + mth(d[k:])).digest()
print(mth([bytes.fromhex(l.strip()) for l in open(sys.argv[1])][:int(sys.argv[2])]).hex())' "$work/records" "$f" 2>/dev/null || true)
  if [ "$f" -le 1000 ]; then
    python3 "$verifier/verify_bundle.py" consistency --size1 "$f" --size2 1503 --root1 "$r1" \
      --root2 "$root2" <"$work/body" >/dev/null && rc=0 || rc=$?
    check "consistency $q verifies" test "$rc" = 0
  else
    expect 200 "consistency $q"
  fi
done
for q in "" "from=1000" "to=1503" "from=0&to=1503" "from=1503&to=1000" "from=1e3&to=1503" \
  "from=+5&to=1503" "from=010&to=1503" "from=-1&to=1503" "from=1&to=99999999999999999999"; do
  as "$admin_key" GET "/v1/log/consistency?$q"
  expect 400 "consistency with ${q:-no parameters}"
done
as "$admin_key" GET "/v1/log/consistency?from=1000&to=1504"
expect 404 "consistency to a size beyond the newest checkpoint"
as "$ua" GET "/v1/log/consistency?from=1000&to=1503"
expect 403 "a factory user may not read the log's consistency"

# The newest checkpoint is served once the cache's newest size has expired (2 s at most).
for _ in $(seq 1 40); do
  as "$admin_key" GET "/v1/proofs/$tag"
  [ "$(jq_body .checkpoint.size)" = 1503 ] && break
  sleep 0.2
done
check "an old tag's bundle moves to the newest checkpoint" jq -e '.checkpoint.size == 1503 and .anchor == null' "$work/body"
cp "$work/body" "$work/bundle2.json"
check "…which verifies" "$bin/tagproof" verify "$work/bundle2.json" --key "$vkey"
as "$ua" GET "/v1/proofs/$appended"
expect 200 "the tag that was pending has its bundle now"
check "…of leaf 1000" jq -e '.leaf.index == 1000 and .checkpoint.size == 1503' "$work/body"
cp "$work/body" "$work/bundle3.json"
check "…which both verifiers accept" bash -c "'$bin/tagproof' verify '$work/bundle3.json' --key '$vkey' >/dev/null &&
  python3 '$verifier/verify_bundle.py' '$work/bundle3.json' --key '$vkey' >/dev/null"

# --- POST /v1/proofs/verify ------------------------------------------------------------------------
verify_api() { api POST /v1/proofs/verify -H "X-Api-Key: $admin_key" -H 'Content-Type: application/json' --data-binary @"$1"; }
# Bodies that are not bundles by docs/openapi.yaml's schema: Prism would answer them itself.
verify_direct() { api_direct POST /v1/proofs/verify -H "X-Api-Key: $admin_key" -H 'Content-Type: application/json' --data-binary @"$1"; }
verify_api "$work/bundle1.json"
expect 200 "POST /v1/proofs/verify with the first bundle"
check "…valid, every check named and passed, consistency with the newer checkpoint included" jq -e \
  '.valid == true and ([.checks[].name] == ["record","leaf_hash","inclusion","checkpoint_signature","checkpoint_body","log_key","anchor","consistency"]) and all(.checks[]; .ok)' "$work/body"
check "…the consistency check says the newer checkpoint extends it" jq -e '.checks[] | select(.name == "consistency") | .detail | test("1503 leaves extends")' "$work/body"
verify_api "$work/bundle2.json"
check "the newest bundle is valid too" jq -e '.valid == true' "$work/body"
jq -c '.leaf.index = 999' "$work/bundle1.json" >"$work/t1.json"
verify_api "$work/t1.json"
check "another leaf index: valid false, inclusion fails" jq -e '.valid == false and ([.checks[] | select(.ok | not) | .name] == ["inclusion"])' "$work/body"
jq -c '.anchor.id = "feed"' "$work/bundle1.json" >"$work/t2.json"
verify_api "$work/t2.json"
check "another ledger id: the anchor check fails" jq -e '.valid == false and ([.checks[] | select(.ok | not) | .name] == ["anchor"])' "$work/body"
jq -c --arg k "$other_key" '.log_key = $k' "$work/bundle1.json" >"$work/t3.json"
verify_api "$work/t3.json"
check "another key named: the log_key check fails" jq -e '.valid == false and ([.checks[] | select(.ok | not) | .name] == ["log_key"])' "$work/body"
# A checkpoint the log never signed: made with the log's key over a forged tree (a new log of
# one leaf in another database would do; here the note of size 1000 with another root).
python3 - "$work/bundle1.json" "$work/t4.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
b["checkpoint"]["size"] = 1504
json.dump(b, open(sys.argv[2], "w"), separators=(",", ":"))
PY
verify_api "$work/t4.json"
check "a checkpoint larger than the log's: consistency (and more) fails" jq -e '.valid == false and any(.checks[]; .name == "consistency" and (.ok | not))' "$work/body"
printf 'not json' >"$work/t5.json"
verify_direct "$work/t5.json"
expect 400 "a body that is not JSON"
printf '{"version":1,"tag_id":"\xff\xfe"}' >"$work/t8.json"
verify_direct "$work/t8.json"
expect 400 "a body that is not UTF-8"
printf '{"version":1,"tag_id":"a\\\xca\xa7"}' >"$work/t9.json" # jansson quotes the bad bytes
verify_direct "$work/t9.json"
expect 400 "an escape of a byte that is not UTF-8 (the reason quoted safely)"
echo '{"version":1}' >"$work/t6.json"
verify_direct "$work/t6.json"
expect 422 "JSON that is not a bundle"
check "…saying why" jq -e '.detail | startswith("not a proof bundle")' "$work/body"
jq -c '.inclusion[0] |= ascii_upcase' "$work/bundle1.json" >"$work/t7.json"
verify_direct "$work/t7.json"
expect 422 "an upper-case hash"
api POST /v1/proofs/verify -H "X-Api-Key: $admin_key" -H 'Content-Type: text/plain' --data-binary @"$work/bundle1.json"
expect 415 "a bundle that is not sent as JSON"
api POST /v1/proofs/verify -H "X-Api-Key: $ua" -H 'Content-Type: application/json' --data-binary @"$work/bundle1.json"
expect 403 "a factory user may not use POST /v1/proofs/verify"

# --- anchors ---------------------------------------------------------------------------------------
owner_sql -c "INSERT INTO anchors (checkpoint_size, ledger, state, attempts, last_error)
  VALUES (1503, 'http', 'failed', 3, 'the ledger is down'), (1000, 'ethereum', 'submitted', 1, NULL)"
owner_sql -c "INSERT INTO anchors (checkpoint_size, ledger, state, ledger_ref, chain_id, block_number, block_hash, confirmed_at)
  VALUES (1503, 'ethereum', 'confirmed', '0x$(printf 'AB%.0s' $(seq 32))', 1337, 12, '0x$(printf '1%.0s' $(seq 64))', now())"
as "$admin_key" GET /v1/anchors
expect 200 "GET /v1/anchors"
check "…four anchors, oldest first" jq -e '(.items | length) == 4 and ([.items[].id] | . == sort) and .next_cursor == null' "$work/body"
check "…each with its checkpoint's root" jq -e --arg r "$root1" '.items[0] | .checkpoint_size == 1000 and .root == $r and .state == "confirmed" and .ledger == "http"' "$work/body"
as "$admin_key" GET "/v1/anchors?limit=3"
c=$(jq_body .next_cursor)
check "a page of three has a next cursor" jq -e '(.items | length) == 3 and (.next_cursor | type) == "string"' "$work/body"
as "$admin_key" GET "/v1/anchors?limit=3&cursor=$c"
check "…whose page holds the newest" jq -e '(.items | length) == 1 and .items[0].checkpoint_size == 1503 and .items[0].ledger == "ethereum" and .next_cursor == null' "$work/body"
as "$admin_key" GET "/v1/anchors?state=failed"
check "?state=failed" jq -e '(.items | length) == 1 and .items[0].last_error == "the ledger is down" and .items[0].attempts == 3' "$work/body"
id=$(jq_body '.items[0].id')
as "$admin_key" GET "/v1/anchors/$id"
expect 200 "GET /v1/anchors/{id}"
check "…that anchor" jq -e --argjson id "$id" '.id == $id and .state == "failed" and .checkpoint_size == 1503' "$work/body"
for bad in "limit=0" "limit=1001" "limit=x" "cursor=abc" "cursor=0" "state=done"; do
  as "$admin_key" GET "/v1/anchors?$bad"
  expect 400 "anchors ?$bad"
done
as "$admin_key" GET "/v1/anchors/99999999"
expect 404 "an anchor that does not exist"
as "$admin_key" GET "/v1/anchors/x1"
expect 400 "an anchor id that is not a number"
as "$ua" GET /v1/anchors
expect 403 "a factory user may not list anchors"
as "$ua" GET /v1/log/key
expect 403 "…nor read the log's key"

# The confirmed Ethereum anchor is the one a fresh bundle of the newest checkpoint shows.
fresh=$(awk 'NR == 7 {print $1}' "$work/tags3")
as "$admin_key" GET "/v1/proofs/$fresh"
check "a bundle shows the checkpoint's confirmed anchor: Ethereum, lower-case tx, block, chain" jq -e \
  --arg tx "0x$(printf 'ab%.0s' $(seq 32))" '.anchor == {ledger: "ethereum", status: "confirmed", tx: $tx, block: 12, chain_id: 1337}' "$work/body"
cp "$work/body" "$work/bundle4.json"
check "…and verifies offline" "$bin/tagproof" verify "$work/bundle4.json" --key "$vkey"
verify_api "$work/bundle4.json"
check "…and through the API, anchor included" jq -e '.valid == true' "$work/body"

# A newer key in log_keys (a rotation) did not sign the newest checkpoint: bundles still name,
# and verify with, the key that did.
owner_sql -c "INSERT INTO log_keys (vkey, origin, last_used_at) VALUES ('$other_key', 'tagproof.local/log', now() + interval '1 hour')"
as "$admin_key" GET /v1/log/key
check "after a rotation GET /v1/log/key names the newest key" test "$(body)" = "$other_key"
fresh=$(awk 'NR == 9 {print $1}' "$work/tags3")
as "$admin_key" GET "/v1/proofs/$fresh"
expect 200 "a bundle after the rotation"
check "…names the key that signed its checkpoint" jq -e --arg k "$vkey" '.log_key == $k' "$work/body"
check "…and verifies with it" "$bin/tagproof" verify "$work/body" --key "$vkey"

e2e_stop tagproof-factory "$factory_pid"
e2e_stop tagproof-devledger "$ledger_pid"
e2e_done
