#!/usr/bin/env bash
# The scan service when its stores fail, against a private PostgreSQL and Redis this test may
# stop: Redis shut down under a steady stream of scans (no 5xx, answers from PostgreSQL within
# the Redis deadline, back to the cache once Redis returns); PostgreSQL stopped with Redis
# warm (cached tags still verify, an unknown id is 503, never a false "unknown"); both down
# (503 with Retry-After); and the consumer page of every state rendered in headless Chromium.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/scan_fixtures.sh"
e2e_env

pg_dir=$work/pg
pg_port=$(stack_free_port)
redis_port=$(stack_free_port)
owner_pw=$(stack_secret)
svc_pw=$(stack_secret)
PGCLUSTER_FAST=1 stack_pg_start "$pg_dir" "$pg_port" "$owner_pw"
owner_url="postgresql://tagproof:$owner_pw@127.0.0.1:$pg_port/tagproof"
stack_pg_migrate "$bin" "$owner_url" >/dev/null
stack_pg_service_role "$pg_dir" "$pg_port" "$svc_pw" >/dev/null
stack_redis_start "$work/redis" "$redis_port"
stop_stores() {
  "$stack_root/scripts/lib/pgcluster" kill "$pg_dir" "$pg_port" >/dev/null 2>&1 || true
  stack_redis_stop "$work/redis"
}
trap 'stop_stores; e2e_cleanup' EXIT

fixture_tags "$owner_url" 30
tags=("${fixture[@]}")
export TAGPROOF_PG_URL="postgresql://tagproof_svc:$svc_pw@127.0.0.1:$pg_port/tagproof"
export TAGPROOF_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export TAGPROOF_REDIS_TIMEOUT_MS=100
export TAGPROOF_BREAKER_OPEN_MS=1000
export TAGPROOF_BREAKER_MIN_CALLS=5
# A short window: on a slow machine the successes before the outage must not outweigh the
# failures during it (the breaker needs a 50% failure rate within its window).
export TAGPROOF_BREAKER_WINDOW_MS=2000
e2e_start tagproof-scan
scan_pid=$last_pid
stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
base="http://$TAGPROOF_SCAN_LISTEN"
ua='Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile'
for i in $(seq 0 9); do curl -sS -A "$ua" -o /dev/null "$base/v1/scan/${tags[$i]}"; done

# --- Redis shut down under a steady stream of scans ---------------------------------------
stream() {
  local i=0 end=$((SECONDS + $1))
  while [ $SECONDS -lt $end ]; do
    curl -sS -A "$ua" -H "X-Device-Id: stream-$((i % 7))" -o "$work/s.json" \
      -w '%{http_code} %{time_total} ' "$base/v1/scan/${tags[$((i % 10))]}" || echo -n "000 0 "
    echo "$(date +%s%N) $(jq -r .source "$work/s.json" 2>/dev/null || echo none)"
    i=$((i + 1))
  done >"$work/stream.log"
}
stream 9 &
streamer=$!
sleep 1.5
kill_at=$(date +%s%N)
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
sleep 3.5
restart_at=$(date +%s%N)
stack_redis_start "$work/redis" "$redis_port"
wait "$streamer"

total=$(wc -l <"$work/stream.log")
fivexx=$(awk '$1 >= 500 || $1 == "000"' "$work/stream.log" | wc -l)
check "scans kept answering while Redis was down ($total scans, $fivexx failed)" test "$fivexx" = 0
during=$(awk -v a="$kill_at" -v b="$restart_at" '$3 > a && $3 < b' "$work/stream.log")
from_db=$(grep -c ' database$' <<<"$during" || true)
check "…from PostgreSQL during the outage ($from_db answers)" test "$from_db" -gt 5
slowest=$(awk '{ if ($2 > m) m = $2 } END { printf "%d", m * 1000 }' <<<"$during")
check "…each within the Redis deadline plus a database call (slowest ${slowest} ms)" test "$slowest" -lt 800
back_ms=$(awk -v b="$restart_at" '$3 > b && $4 == "cache" { printf "%d", ($3 - b) / 1000000; exit }' "$work/stream.log")
check "…and from the cache again ${back_ms:-never} ms after Redis returned" test -n "$back_ms"
[ -n "$back_ms" ] && check "…within seconds" test "$back_ms" -lt 5000
# Every event of the outage waited in the workers' backlogs and was replayed into the stream
# once Redis was back: the backlogs drain to zero, nothing was dropped.
for _ in $(seq 1 40); do
  curl -sS "$base/metrics" >"$work/metrics"
  grep -q '^tagproof_scan_event_backlog{.*} [1-9]' "$work/metrics" || break
  sleep 0.25
done
replayed=$(awk '/^tagproof_scan_events_total\{result="replayed"\}/ { print $2 }' "$work/metrics")
check "the event backlogs drained after the outage" bash -c "! grep -q '^tagproof_scan_event_backlog{.*} [1-9]' '$work/metrics'"
check "…no event was dropped" bash -c "! grep -q 'result=\"dropped\"' '$work/metrics'"
check "…and the outage's events were replayed (${replayed:-0} >= $from_db)" test "${replayed:-0}" -ge "$from_db"
check "the Redis breaker opened during the outage" grep -q '"dependency":"redis","from":"closed","to":"open"' "$work/tagproof-scan.log"
check "…and closed again through half-open" grep -q '"dependency":"redis","from":"half_open","to":"closed"' "$work/tagproof-scan.log"
check "…and /metrics shows it closed" grep -q 'tagproof_breaker_state{dependency="redis"} 0' "$work/metrics"

# --- PostgreSQL stopped with Redis warm ---------------------------------------------------
for i in $(seq 0 9); do curl -sS -A "$ua" -o /dev/null "$base/v1/scan/${tags[$i]}"; done
# A tag that is in the cache but was never scanned (as after a registration fills the cache).
fresh=${tags[25]}
info=$(jq -cn --arg p "$fixture_product" --arg b "$fixture_batch" --arg f "$fixture_factory" \
  '{product: {id: $p, sku: "S", name: "Trail Shoe"}, batch: {id: $b, code: "B"}, factory: {id: $f, name: "F"}}')
redis-cli -p "$redis_port" HSET "tp:t:$fresh" d "$info" b "$fixture_batch" >/dev/null
"$stack_root/scripts/lib/pgcluster" stop "$pg_dir" "$pg_port"
ok_cached=0
for i in $(seq 0 9); do
  code=$(curl -sS -A "$ua" -o "$work/c.json" -w '%{http_code}' "$base/v1/scan/${tags[$i]}")
  [ "$code" = 200 ] && jq -e '.verdict == "authentic" and .source == "cache"' "$work/c.json" >/dev/null && ok_cached=$((ok_cached + 1))
done
check "with PostgreSQL stopped, cached tags still verify ($ok_cached of 10)" test "$ok_cached" = 10
curl -sS -A "$ua" -o "$work/fresh.json" "$base/v1/scan/$fresh"
check "…and a cached tag's first scan is answered as the first" jq -e '.first_scan == true and .source == "cache"' "$work/fresh.json"
code=$(curl -sS -A "$ua" -D "$work/h" -o "$work/u.json" -w '%{http_code}' "$base/v1/scan/${tags[20]}")
check "…an uncached tag is 503, not a false unknown (got $code)" test "$code" = 503
check "…with Retry-After and problem+json" bash -c "grep -qi '^retry-after:' '$work/h' && jq -e '.status == 503' '$work/u.json'"
code=$(curl -sS -A "$ua" -o /dev/null -w '%{http_code}' "$base/v1/scan/$(cat /proc/sys/kernel/random/uuid)")
check "…and so is an id nobody registered (got $code)" test "$code" = 503

# Both stores down: nothing can be known.
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
sleep 0.3
code=$(curl -sS -A "$ua" -D "$work/h" -o /dev/null -w '%{http_code}' "$base/v1/scan/${tags[0]}")
check "with both stores down a scan is 503 (got $code)" test "$code" = 503
code=$(curl -sS -A "$ua" -o "$work/unavailable.html" -w '%{http_code}' "$base/t/${tags[0]}")
check "…and the page is 503 too (got $code)" test "$code" = 503
if "$stack_root/tests/browser/render.sh" "$base/t/${tags[0]}" "$work/page-unavailable" >/dev/null 2>&1; then
  check "…and Chromium shows 'Temporarily unavailable'" grep -q 'Temporarily unavailable' "$work/page-unavailable.txt"
else
  not_ok "…and Chromium renders the unavailable page"
fi

# --- back to normal, and every page state in a real browser ----------------------------------
"$stack_root/scripts/lib/pgcluster" start "$pg_dir" "$pg_port"
stack_redis_start "$work/redis" "$redis_port"
for _ in $(seq 1 50); do
  code=$(curl -sS -A "$ua" -o /dev/null -w '%{http_code}' "$base/v1/scan/${tags[21]}")
  [ "$code" = 200 ] && break
  sleep 0.2
done
check "scans answer again once both stores are back (got $code)" test "$code" = 200
recorded=""
for _ in $(seq 1 60); do
  recorded=$(psql "$owner_url" -Atc "SELECT first_scanned_at IS NOT NULL FROM tags WHERE tag_id = '$fresh'")
  [ "$recorded" = t ] && break
  sleep 0.25
done
check "the first scan made while PostgreSQL was down is recorded once it is back" test "$recorded" = t

page() { # page NAME PATH EXPECTED-TEXT...
  local name=$1 path=$2
  shift 2
  if ! "$stack_root/tests/browser/render.sh" "$base$path" "$work/page-$name" >/dev/null 2>&1; then
    not_ok "Chromium renders the $name page"
    return
  fi
  for want in "$@"; do
    check "the $name page shows '$want'" grep -qF "$want" "$work/page-$name.txt"
  done
}
page authentic "/t/${tags[22]}" "Genuine product" "Trail Shoe <b>&\"x\"</b>"
# Twelve devices within a minute (velocity) and the browser's own headless user agent (bot_ua)
# make the browser's scan suspicious.
for i in $(seq 1 12); do curl -sS -A "$ua" -H "X-Device-Id: busy-$i" -o /dev/null "$base/v1/scan/${tags[23]}"; done
page suspicious "/t/${tags[23]}" "Possible counterfeit" "Buy only from authorised sellers."
page unknown "/t/$(cat /proc/sys/kernel/random/uuid)" "This code is not registered"
psql "$owner_url" -qc "UPDATE batches SET revoked_at = now() WHERE id = '$fixture_batch'"
page revoked "/t/${tags[24]}" "Recalled product"

e2e_stop tagproof-scan "$scan_pid"
e2e_done
