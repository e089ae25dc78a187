#!/usr/bin/env bash
# scripts/run as a user runs it: --detach brings up PostgreSQL, Redis and the four programs
# and writes .tagproof/env; a second run is harmless and starts only what is missing (a
# stopped Redis comes back); a foreign process on a port is named; stop leaves nothing behind.
. "$(dirname "$0")/lib.sh"

state=$work/state
export TAGPROOF_STATE_DIR=$state
export TAGPROOF_BUILD_DIR=$(dirname "$bin")
export TAGPROOF_SKIP_BUILD=1
export TAGPROOF_RUN_PG_PORT=$(stack_free_port)
export TAGPROOF_RUN_REDIS_PORT=$(stack_free_port)
export TAGPROOF_SCAN_LISTEN=127.0.0.1:$(stack_free_port)
export TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
export TAGPROOF_ANCHOR_LISTEN=127.0.0.1:$(stack_free_port)
export TAGPROOF_DEVLEDGER_LISTEN=127.0.0.1:$(stack_free_port)
unset TAGPROOF_PG_URL TAGPROOF_REDIS_URL TAGPROOF_PG_MIGRATE_URL
run=$stack_root/scripts/run
ports=("${TAGPROOF_SCAN_LISTEN##*:}" "${TAGPROOF_FACTORY_LISTEN##*:}" "${TAGPROOF_ANCHOR_LISTEN##*:}"
  "${TAGPROOF_DEVLEDGER_LISTEN##*:}" "$TAGPROOF_RUN_PG_PORT" "$TAGPROOF_RUN_REDIS_PORT")
stop_on_exit() { "$run" stop >/dev/null 2>&1 || true; e2e_cleanup; }
trap stop_on_exit EXIT

rc=0
"$run" --detach >"$work/run1.out" 2>&1 || rc=$?
check "scripts/run --detach exits 0 (got $rc)" test "$rc" = 0
[ "$rc" = 0 ] || { cat "$work/run1.out"; tail -20 "$state"/logs/*.log 2>/dev/null; }
for addr in "$TAGPROOF_SCAN_LISTEN" "$TAGPROOF_FACTORY_LISTEN" "$TAGPROOF_ANCHOR_LISTEN" "$TAGPROOF_DEVLEDGER_LISTEN"; do
  check "$addr answers /v1/health" curl -fsS -o /dev/null "http://$addr/v1/health"
  check "$addr serves tagproof_ metrics" bash -c "curl -fsS 'http://$addr/metrics' | grep -q '^tagproof_'"
done
check "it prints where the scan API is" grep -q "$TAGPROOF_SCAN_LISTEN/v1/scan/" "$work/run1.out"
check ".tagproof/env exists and is private" bash -c "[ \$(stat -c %a '$state/env') = 600 ]"
(
  unset TAGPROOF_SCAN_LISTEN TAGPROOF_PG_URL TAGPROOF_REDIS_URL
  . "$state/env"
  check ".tagproof/env carries the PostgreSQL URL" test -n "$TAGPROOF_PG_URL"
  check ".tagproof/env carries the Redis URL" test -n "$TAGPROOF_REDIS_URL"
  check ".tagproof/env carries the scan address" test -n "$TAGPROOF_SCAN_LISTEN"
  check "the services' role from .tagproof/env can query" \
    bash -c "psql '$TAGPROOF_PG_URL' -Atc 'SELECT count(*) FROM factories' >/dev/null"
  check "…and is not the owner of the tables" \
    bash -c "[ \"\$(psql '$TAGPROOF_PG_URL' -Atc \"SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user\")\" = 0 ]"
) || failures=$((failures + 1))
pids_before=$(cat "$state"/run/*.pid | sort | tr '\n' ' ')

rc=0
"$run" --detach >"$work/run2.out" 2>&1 || rc=$?
check "a second scripts/run --detach exits 0 (got $rc)" test "$rc" = 0
pids_after=$(cat "$state"/run/*.pid | sort | tr '\n' ' ')
check "…and restarts nothing that runs" test "$pids_before" = "$pids_after"

redis-cli -p "$TAGPROOF_RUN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
sleep 0.5
"$run" --detach >"$work/run3.out" 2>&1 || true
check "a stopped Redis is brought back by scripts/run" \
  bash -c "redis-cli -p '$TAGPROOF_RUN_REDIS_PORT' ping | grep -q PONG"

rc=0
"$run" stop >"$work/stop.out" 2>&1 || rc=$?
check "scripts/run stop exits 0 (got $rc)" test "$rc" = 0
left=""
for p in "${ports[@]}"; do
  ss -Hltn "sport = :$p" | grep -q . && left="$left $p"
done
check "nothing listens on the stack's ports after stop ($left)" test -z "$left"
if pgrep -f "$state" >"$work/left"; then
  not_ok "no program of the stack is left running: $(tr '\n' ' ' <"$work/left")"
else
  ok "no program of the stack is left running"
fi

# A foreign process on the scan port is named in one line.
redis-server --port "${TAGPROOF_SCAN_LISTEN##*:}" --bind 127.0.0.1 --save '' --dir "$work" >/dev/null &
squatter=$!
pids+=("$squatter")
for _ in $(seq 1 50); do ss -Hltn "sport = :${TAGPROOF_SCAN_LISTEN##*:}" | grep -q . && break; sleep 0.1; done
rc=0
"$run" --detach >"$work/run4.out" 2>&1 || rc=$?
check "scripts/run refuses a port held by another process (got $rc)" test "$rc" != 0
check "…naming the port in one line" bash -c "grep -c 'port ${TAGPROOF_SCAN_LISTEN##*:}' '$work/run4.out' | grep -qx 1"
kill "$squatter" 2>/dev/null || true
"$run" stop >/dev/null 2>&1 || true

e2e_done
