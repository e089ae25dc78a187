#!/usr/bin/env bash
# Each of the four programs really starts against real PostgreSQL and Redis: health,
# readiness, metrics and request ids answer; SIGTERM and SIGINT stop it cleanly; a bad setting,
# a schema that is behind or ahead, or a busy port stop it at start with one clear line.
. "$(dirname "$0")/lib.sh"
e2e_env

declare -A listen=(
  [tagproof-scan]=$TAGPROOF_SCAN_LISTEN
  [tagproof-factory]=$TAGPROOF_FACTORY_LISTEN
  [tagproof-anchor]=$TAGPROOF_ANCHOR_LISTEN
  [tagproof-devledger]=$TAGPROOF_DEVLEDGER_LISTEN
)

for prog in tagproof-scan tagproof-factory tagproof-anchor tagproof-devledger; do
  addr=${listen[$prog]}
  e2e_start "$prog"
  pid=$last_pid
  if ! stack_wait_http "http://$addr/v1/health" 30; then
    not_ok "$prog answers /v1/health"
    cat "$work/$prog.log"
    continue
  fi
  ok "$prog answers /v1/health"
  body=$(curl -sS -D "$work/h" "http://$addr/v1/health")
  check "$prog health says ok" grep -q '"status": *"ok"' <<<"$body"
  check "$prog health carries X-Request-Id" grep -qi '^x-request-id: [0-9a-f]' "$work/h"
  curl -sS -D "$work/h" -H 'X-Request-Id: e2e-req-42' -o /dev/null "http://$addr/v1/health"
  check "$prog echoes a sane X-Request-Id" grep -qi '^x-request-id: e2e-req-42' "$work/h"

  code=$(curl -sS -o "$work/ready" -w '%{http_code}' "http://$addr/v1/ready")
  check "$prog /v1/ready answers 200 (got $code)" test "$code" = 200
  check "$prog /v1/ready is JSON with a status" grep -q '"status": *"ready"' "$work/ready"
  case $prog in
  tagproof-scan | tagproof-factory)
    check "$prog readiness names redis and postgresql with breakers" \
      grep -q '"redis".*"breaker"\|"postgresql".*"breaker"' "$work/ready"
    check "$prog readiness has both stores" bash -c "grep -q redis '$work/ready' && grep -q postgresql '$work/ready'"
    ;;
  tagproof-anchor)
    check "$prog readiness names postgresql" grep -q postgresql "$work/ready"
    ;;
  esac

  curl -sS "http://$addr/metrics" >"$work/metrics"
  check "$prog /metrics has tagproof_ metrics" grep -q '^tagproof_build_info{' "$work/metrics"
  check "$prog /metrics counts requests by route and status" \
    grep -q '^tagproof_http_requests_total{.*route="/v1/health".*status="200"' "$work/metrics"

  code=$(curl -sS -o "$work/nf" -w '%{http_code}' "http://$addr/no/such/path")
  check "$prog unknown path is 404" test "$code" = 404
  check "$prog 404 is problem+json" grep -q '"status": *404' "$work/nf"

  check "$prog logs JSON lines" bash -c "head -1 '$work/$prog.log' | jq -e '.ts and .level and .service == \"$prog\" and .msg' >/dev/null"
  check "$prog logs requests with method, path, status, latency and request id" \
    bash -c "grep -F '/v1/health' '$work/$prog.log' | head -1 | jq -e '.method and .path and .status and (.latency_ms != null) and .request_id' >/dev/null"

  sig=TERM
  [ "$prog" = tagproof-anchor ] && sig=INT
  kill -"$sig" "$pid"
  rc=0
  e2e_wait_exit "$pid" 15 || rc=$?
  check "$prog exits 0 on SIG$sig (got $rc)" test "$rc" = 0
  check "$prog releases its port" bash -c "! ss -Hltn 'sport = :${addr##*:}' | grep -q ."
  check "$prog logs that it stopped" grep -q '"msg":"stopped"' "$work/$prog.log"
done

# A bad setting: exit 2 and exactly one line naming the variable.
for prog in tagproof-scan tagproof-factory tagproof-anchor tagproof-devledger tagproof; do
  args=()
  [ "$prog" = tagproof ] && args=(config check)
  rc=0
  TAGPROOF_REDIS_TIMEOUT_MS=abc "$bin/$prog" "${args[@]}" 2>"$work/err" >/dev/null || rc=$?
  check "$prog exits 2 on TAGPROOF_REDIS_TIMEOUT_MS=abc (got $rc)" test "$rc" = 2
  check "$prog names the variable in one line" \
    bash -c "[ \$(wc -l <'$work/err') = 1 ] && grep -q TAGPROOF_REDIS_TIMEOUT_MS '$work/err'"
done
rc=0
TAGPROOF_SCAN_LISTEN=nonsense "$bin/tagproof-scan" 2>"$work/err" || rc=$?
check "a malformed listen address exits 2 naming it" bash -c "[ $rc = 2 ] && grep -q TAGPROOF_SCAN_LISTEN '$work/err'"

# Schema behind and ahead: a scratch database in the test cluster.
psql_su() { PGCLUSTER_DB=${db:-postgres} "$stack_root/scripts/lib/pgcluster" psql "$TAGPROOF_TEST_PG_DIR" "$TAGPROOF_TEST_PG_PORT" "$@"; }
psql_su -c "DROP DATABASE IF EXISTS e2e_schema" -c "CREATE DATABASE e2e_schema OWNER tagproof" >/dev/null
scratch_owner=${TAGPROOF_TEST_PG_OWNER_URL%/tagproof}/e2e_schema
rc=0
TAGPROOF_PG_URL=$scratch_owner "$bin/tagproof-anchor" 2>"$work/err" || rc=$?
check "an empty database stops a program with exit 2 (got $rc)" test "$rc" = 2
check "…and says to run tagproof migrate" grep -q 'tagproof migrate' "$work/err"
TAGPROOF_PG_MIGRATE_URL=$scratch_owner "$bin/tagproof" migrate >/dev/null
db=e2e_schema psql_su -c "INSERT INTO schema_migrations (version, name, sha256) VALUES (9999, '9999_x.sql', 'x')" >/dev/null
rc=0
TAGPROOF_PG_URL=$scratch_owner "$bin/tagproof-anchor" 2>"$work/err" || rc=$?
check "a database ahead of the program stops it with exit 2 (got $rc)" test "$rc" = 2
check "…and says it is ahead" grep -q 'ahead' "$work/err"
psql_su -c "DROP DATABASE e2e_schema" >/dev/null

# Redis down: the scan service (either store suffices) stays ready, the factory API does not.
dead=$(stack_free_port)
TAGPROOF_REDIS_URL=redis://127.0.0.1:$dead/0 e2e_start tagproof-scan
scan_pid=$last_pid
TAGPROOF_REDIS_URL=redis://127.0.0.1:$dead/0 e2e_start tagproof-factory
factory_pid=$last_pid
stack_wait_http "http://$TAGPROOF_SCAN_LISTEN/v1/health" 30
stack_wait_http "http://$TAGPROOF_FACTORY_LISTEN/v1/health" 30
code=$(curl -sS -o "$work/ready" -w '%{http_code}' "http://$TAGPROOF_SCAN_LISTEN/v1/ready")
check "scan stays ready with Redis down (got $code)" test "$code" = 200
check "…and reports redis down" grep -q '"redis": *{[^}]*"state": *"down"' "$work/ready"
code=$(curl -sS -D "$work/h" -o "$work/ready" -w '%{http_code}' "http://$TAGPROOF_FACTORY_LISTEN/v1/ready")
check "factory is not ready with Redis down (got $code)" test "$code" = 503
check "…with Retry-After" grep -qi '^retry-after:' "$work/h"

# The loop never blocks: with one worker thread and a frozen Redis, a readiness check waits on
# its 2-second Redis deadline while health requests on the same thread keep answering at once.
frozen_port=$(stack_free_port)
redis-server --port "$frozen_port" --bind 127.0.0.1 --save '' --dir "$work" >/dev/null &
frozen_pid=$!
pids+=("$frozen_pid")
for _ in $(seq 1 50); do redis-cli -p "$frozen_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
one_thread=127.0.0.1:$(stack_free_port)
TAGPROOF_HTTP_THREADS=1 TAGPROOF_REDIS_TIMEOUT_MS=2000 TAGPROOF_SCAN_LISTEN=$one_thread \
  TAGPROOF_REDIS_URL=redis://127.0.0.1:$frozen_port/0 e2e_start tagproof-scan
one_pid=$last_pid
stack_wait_http "http://$one_thread/v1/health" 30
sleep 0.3
kill -STOP "$frozen_pid"
start=$(date +%s%N)
curl -sS -o "$work/ready-frozen" -w '%{http_code}' "http://$one_thread/v1/ready" >"$work/ready-code" &
ready_curl=$!
sleep 0.2
slowest=0
for _ in $(seq 1 20); do
  t=$(curl -sS -o /dev/null -w '%{time_total}' "http://$one_thread/v1/health")
  ms=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')
  [ "$ms" -gt "$slowest" ] && slowest=$ms
done
health_done=$(( ($(date +%s%N) - start) / 1000000 ))
wait "$ready_curl" || true
ready_done=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$frozen_pid"
check "health answers while readiness waits on a frozen Redis (slowest ${slowest} ms)" test "$slowest" -lt 250
check "…all of them before the readiness deadline (${health_done} ms < ${ready_done} ms)" test "$health_done" -lt "$ready_done"
check "readiness answers after its Redis deadline (${ready_done} ms)" test "$ready_done" -ge 1900
check "…reporting the frozen Redis down" grep -q '"redis": *{[^}]*"state": *"down"' "$work/ready-frozen"
kill -TERM "$one_pid"
e2e_wait_exit "$one_pid" 15 || true

# A busy port: the program says which and exits non-zero.
rc=0
TAGPROOF_SCAN_LISTEN=$TAGPROOF_SCAN_LISTEN timeout 10 "$bin/tagproof-scan" 2>"$work/err" || rc=$?
check "a busy port stops a second scan service (got $rc)" bash -c "[ $rc != 0 ] && [ $rc != 124 ]"
check "…naming the address" grep -q "${TAGPROOF_SCAN_LISTEN##*:}" "$work/err"
kill -TERM "$scan_pid" "$factory_pid"
e2e_wait_exit "$scan_pid" 15 || true
e2e_wait_exit "$factory_pid" 15 || true

e2e_done
