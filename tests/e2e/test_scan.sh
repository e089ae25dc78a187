#!/usr/bin/env bash
# The scan API against real PostgreSQL and Redis: every status of SPEC §5, hostile ids, the
# verdict JSON, the cache, first scans under concurrency, recalls, anti-fraud rules, scan
# events, the consumer page's status codes, and metrics.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/scan_fixtures.sh"
e2e_env
# Generous deadlines: an ASan build on a busy 2-core machine; degradation has its own test.
export TAGPROOF_REDIS_TIMEOUT_MS=2000 TAGPROOF_PG_TIMEOUT_MS=5000
ulimit -n 4096 2>/dev/null || true
fixture_tags "$TAGPROOF_TEST_PG_OWNER_URL" 20
tags=("${fixture[@]}")
check "20 fixture tags registered" test "${#tags[@]}" = 20
batch=$fixture_batch

e2e_start tagproof-scan
scan_pid=$last_pid
stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
base="http://$TAGPROOF_SCAN_LISTEN"
direct=$base
# --- contract check (prism) ---
# With SCAN_PRISM=1 (scripts/test sets it) the scans go through a Prism proxy that checks
# each exchange against docs/openapi.yaml (tests/openapi/prism_lib.sh); scans whose point is
# a missing header (Prism would add its own User-Agent) and the hostile clients at the end
# talk to the service directly.
if [ "${SCAN_PRISM:-0}" = 1 ]; then
  . "$(dirname "$0")/../openapi/prism_lib.sh"
  prism_start "$direct" && base=$prism_url
fi
ua='Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1'

# scan URL [curl args...] → status in $code, body in $work/body
scan() {
  local url=$1
  shift
  code=$(curl -gsS -A "$ua" -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@" "$url")
  if [ -n "${prism_url:-}" ] && [ "${url#"$prism_url"}" != "$url" ]; then
    prism_verdict "GET ${url#"$prism_url"}" "$code" "$work/headers"
  fi
}

tag=${tags[0]}
scan "$base/v1/scan/$tag?lat=48.8566&lon=2.3522"
check "a registered tag answers 200 (got $code)" test "$code" = 200
check "…authentic, first scan, from the database on a cold cache" \
  jq -e '.verdict == "authentic" and .first_scan == true and .source == "database"' "$work/body"
check "…with the verdict JSON of SPEC §5" jq -e '(.tag_id|length) == 36 and .product.id and .product.sku and .product.name and .batch.id and .batch.code and .factory.id and .factory.name and (.first_scanned_at|test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$")) and .scan_count == 1 and .risk.score == 0 and .risk.reasons == [] and .anchor.status == "pending"' "$work/body"
check "…and an X-Request-Id" grep -qi '^x-request-id: ' "$work/headers"
scan "$base/v1/scan/$tag"
check "the second scan comes from the cache" jq -e '.source == "cache" and .first_scan == false and .scan_count == 2' "$work/body"
upper=$(tr 'a-f' 'A-F' <<<"$tag")
scan "$base/v1/scan/$upper"
check "an upper-case id is the same tag" jq -e --arg t "$tag" '.tag_id == $t and .verdict == "authentic"' "$work/body"

scan "$base/v1/scan/7c9e6679-7425-40de-944b-e07fc1f90ae7"
check "an unregistered UUID answers 404 (got $code)" test "$code" = 404
check "…as problem+json with verdict unknown" bash -c "grep -qi '^content-type: application/problem+json' '$work/headers' && jq -e '.verdict == \"unknown\" and .status == 404 and .request_id' '$work/body' >/dev/null"

long=$(head -c 10000 /dev/zero | tr '\0' 'a')
for bad in "{$tag}" "${tag//-/}" "%20$tag" "$tag%20" "${tag:0:35}" "${tag}0" "${tag:0:8}%00${tag:9}" \
  "%E2%9C%93${tag:1}" "${tag:0:35}%C3%A9" "not-a-uuid" "$long" "${tag:0:8}_${tag:9}" "../../etc/passwd"; do
  scan "$base/v1/scan/$bad"
  if [ "$code" = 400 ] || { [ "$code" = 414 ] && [ ${#bad} -gt 8000 ]; } || { [ "$code" = 404 ] && [ "$bad" = "../../etc/passwd" ]; }; then
    ok "malformed id ${bad:0:40} answers $code"
  else
    not_ok "malformed id ${bad:0:40} answers $code"
  fi
  grep -qi 'content-type: application/problem+json' "$work/headers" || not_ok "…${bad:0:20} as problem+json"
done
scan "$base/v1/scan/$tag?lat=91&lon=0"
check "a latitude out of range answers 400 (got $code)" test "$code" = 400
scan "$base/v1/scan/$tag?lat=10"
check "a latitude without longitude answers 400 (got $code)" test "$code" = 400

# 50 concurrent first scans of one tag: exactly one says first_scan: true.
tag=${tags[1]}
racers=()
for i in $(seq 1 50); do
  curl -sS -A "$ua" -H "X-Device-Id: racer-$i" "$base/v1/scan/$tag" -o "$work/race-$i" &
  racers+=($!)
done
wait "${racers[@]}"
firsts=$(cat "$work"/race-* | jq -s '[.[] | select(.first_scan == true)] | length')
answered=$(cat "$work"/race-* | jq -s --arg t "$tag" '[.[] | select(.tag_id == $t)] | length')
check "50 concurrent scans all answer (got $answered)" test "$answered" = 50
check "…exactly one of them is the first scan (got $firsts)" test "$firsts" = 1
flagged=$(cat "$work"/race-* | jq -s '[.[] | select(.verdict == "suspicious")] | length')
check "…and 50 devices within a second end up flagged suspicious ($flagged)" test "$flagged" -gt 0
stamps=$(cat "$work"/race-* | jq -r .first_scanned_at | sort -u | wc -l)
check "…and all report the same first-scan time" test "$stamps" = 1
sleep 0.3
db_first=$(psql "$TAGPROOF_TEST_PG_OWNER_URL" -Atc "SELECT first_scanned_at IS NOT NULL FROM tags WHERE tag_id = '$tag'")
check "the first scan is recorded in PostgreSQL" test "$db_first" = t

# Concurrent database lookups (uncached tags and unregistered ids) go to PostgreSQL together,
# in one statement per worker: each scan still gets the answer for its own id.
pids=()
for i in $(seq 10 19); do
  curl -sS -A "$ua" -H "X-Device-Id: batch-$i" -o "$work/batch-$i" -w '%{http_code}' \
    "$base/v1/scan/${tags[$i]}" >"$work/batch-$i.code" &
  pids+=($!)
done
for i in $(seq 1 5); do
  u=$(cat /proc/sys/kernel/random/uuid)
  echo "$u" >"$work/nobody-$i.id"
  curl -sS -A "$ua" -H "X-Device-Id: batch-n$i" -o "$work/nobody-$i" -w '%{http_code}' \
    "$base/v1/scan/$u" >"$work/nobody-$i.code" &
  pids+=($!)
done
wait "${pids[@]}"
right=0
for i in $(seq 10 19); do
  [ "$(cat "$work/batch-$i.code")" = 200 ] &&
    jq -e --arg t "${tags[$i]}" '.tag_id == $t and .source == "database" and .product.name == "Trail Shoe <b>&\"x\"</b>"' \
      "$work/batch-$i" >/dev/null && right=$((right + 1))
done
for i in $(seq 1 5); do
  [ "$(cat "$work/nobody-$i.code")" = 404 ] &&
    jq -e --arg t "$(cat "$work/nobody-$i.id")" '.tag_id == $t and .verdict == "unknown"' \
      "$work/nobody-$i" >/dev/null && right=$((right + 1))
done
check "15 concurrent lookups in the database each answer for their own id ($right of 15)" test "$right" = 15

# Anti-fraud rules through the real path.
tag=${tags[2]}
curl -sS -A "$ua" -H 'X-Device-Id: traveller-a' "$base/v1/scan/$tag?lat=48.8566&lon=2.3522" -o /dev/null
scan "$base/v1/scan/$tag?lat=40.7128&lon=-74.0060" -H 'X-Device-Id: traveller-b'
check "Paris then New York a moment later is impossible_travel" jq -e '.verdict == "suspicious" and (.risk.reasons | index("impossible_travel"))' "$work/body"
scan "$base/v1/scan/$tag?lat=40.7128&lon=-74.0060" -H 'X-Device-Id: traveller-b'
check "the same device scanning again is not judged for travel again" jq -e '.risk.reasons == []' "$work/body"
tag=${tags[3]}
scan "$direct/v1/scan/$tag" -A ''
check "an empty user agent is bot_ua, not suspicious alone" jq -e '.verdict == "authentic" and .risk.reasons == ["bot_ua"] and .risk.score > 0' "$work/body"
for i in $(seq 1 11); do curl -sS -A "$ua" -H "X-Device-Id: fast-$i" "$base/v1/scan/$tag" -o /dev/null; done
scan "$base/v1/scan/$tag" -H 'X-Device-Id: fast-12'
check "12 scans by 12 devices within 60 s flag velocity" jq -e '.risk.reasons | index("velocity")' "$work/body"
tag=${tags[4]}
for i in $(seq 1 5); do scan "$base/v1/scan/$tag" -H 'X-Device-Id: same-phone'; done
check "one consumer scanning five times raises no alarm" jq -e '.verdict == "authentic" and .risk.reasons == [] and .scan_count == 5' "$work/body"
for i in $(seq 1 31); do
  curl -sS -A "$ua" -H 'X-Device-Id: guesser' -o /dev/null "$base/v1/scan/$(cat /proc/sys/kernel/random/uuid)"
done
scan "$direct/v1/scan/${tags[5]}" -H 'X-Device-Id: guesser' -A ''
check "a client that guessed 31 unknown ids is flagged for enumeration" jq -e '(.risk.reasons | index("enumeration")) and .verdict == "suspicious"' "$work/body"

# A recalled batch answers revoked from the cache within a second.
tag=${tags[6]}
scan "$base/v1/scan/$tag"
psql "$TAGPROOF_TEST_PG_OWNER_URL" -qc "UPDATE batches SET revoked_at = now() WHERE id = '$batch'"
redis-cli -u "$TAGPROOF_TEST_REDIS_URL" SET "tp:rv:$batch" 1 >/dev/null
scan "$base/v1/scan/$tag"
check "a recalled batch's tag answers revoked (from the cache)" jq -e '.verdict == "revoked" and .source == "cache" and (.risk.reasons | index("revoked"))' "$work/body"
scan "$base/v1/scan/${tags[7]}"
check "…and an uncached tag of it too (from the database)" jq -e '.verdict == "revoked" and .source == "database"' "$work/body"

# The sink thread stores the events in PostgreSQL within seconds.
stored=0
for _ in $(seq 1 50); do
  stored=$(psql "$TAGPROOF_TEST_PG_OWNER_URL" -Atc "SELECT count(*) FROM scan_events WHERE tag_id = '$tag'")
  [ "$stored" -ge 2 ] && break
  sleep 0.2
done
check "the sink stores scan events in PostgreSQL within seconds ($stored)" test "$stored" -ge 2
check "…with verdict, score and a hashed client, never the raw IP" bash -c "[ \"\$(psql '$TAGPROOF_TEST_PG_OWNER_URL' -Atc \"SELECT count(*) FROM scan_events WHERE tag_id = '$tag' AND verdict = 'revoked' AND ip_hash ~ '^[0-9a-f]{64}$' \")\" -ge 1 ]"

# The consumer page.
scan "$base/t/${tags[0]}"
check "/t/{id} answers 200 HTML for a registered tag" bash -c "[ $code = 200 ] && grep -qi '^content-type: text/html' '$work/headers'"
check "…with the product name escaped" bash -c "grep -q 'Trail Shoe &lt;b&gt;' '$work/body' && ! grep -q '<b>&' '$work/body'"
scan "$base/t/7c9e6679-7425-40de-944b-e07fc1f90ae7"
check "/t/ of an unknown tag answers 404" test "$code" = 404
scan "$base/t/nonsense"
check "/t/ of a malformed id answers 400" test "$code" = 400

curl -sS "$base/metrics" >"$work/metrics"
check "metrics count cache hits and misses" bash -c "grep -q 'tagproof_cache_lookups_total{result=\"hit\"}' '$work/metrics' && grep -q 'tagproof_cache_lookups_total{result=\"miss\"}' '$work/metrics'"
check "metrics count fraud flags by rule" grep -q 'tagproof_fraud_flags_total{rule="impossible_travel"}' "$work/metrics"
check "metrics show both breakers" bash -c "grep -q 'tagproof_breaker_state{dependency=\"redis\"} 0' '$work/metrics' && grep -q 'tagproof_breaker_state{dependency=\"postgresql\"} 0' '$work/metrics'"
check "metrics have request latency by route" grep -q 'tagproof_http_request_duration_seconds_bucket{route="/v1/scan/{tag_id}"' "$work/metrics"

# Hostile clients: a thousand idle connections, oversized headers and bodies.
port=${TAGPROOF_SCAN_LISTEN##*:}
idle=()
for i in $(seq 1 1000); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || break
  idle+=("$fd")
done
check "a thousand idle connections are accepted (${#idle[@]})" test "${#idle[@]}" = 1000
t=$(curl -sS -A "$ua" -o "$work/body" -w '%{http_code} %{time_total}' "$direct/v1/scan/${tags[0]}")
check "…and a scan still answers ($t)" awk -v t="$t" 'BEGIN { split(t, a, " "); exit !(a[1] == 200 && a[2] < 2) }'
for fd in "${idle[@]}"; do exec {fd}>&-; done
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 65536 /dev/zero | tr '\0' 'x')" "$direct/v1/scan/${tags[0]}" || true)
check "a 64 KB header is refused (got $code)" bash -c "[ '$code' = 431 ] || [ '$code' = 400 ] || [ '$code' = 000 ]"
head -c 1048576 /dev/zero >"$work/big"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary @"$work/big" "$direct/v1/scan/${tags[0]}" || true)
check "a 1 MB body is refused (got $code)" bash -c "[ '$code' = 413 ] || [ '$code' = 405 ] || [ '$code' = 000 ]"
code=$(curl -sS -o /dev/null -w '%{http_code}' -A "$ua" "$direct/v1/scan/${tags[0]}")
check "…and the service is still there (got $code)" test "$code" = 200

[ -z "${prism_url:-}" ] || echo "# contract: $prism_exchanges exchanges checked, $prism_broken broke the contract"
e2e_stop tagproof-scan "$scan_pid"
e2e_done
