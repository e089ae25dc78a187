#!/usr/bin/env bash
# scripts/run as a user runs it: --detach brings up PostgreSQL, Redis and the four programs,
# makes an admin key, seeds the demo through the API and writes .tagproof/env; the printed
# demo tag and the tags of `scripts/seed 5` scan authentic; a second run is harmless, starts
# only what is missing (a stopped Redis comes back) and makes no second demo or key; a foreign
# process on a port is named; stop leaves nothing behind.
. "$(dirname "$0")/lib.sh"

state=$work/state
TAGPROOF_BUILD_DIR=$(dirname "$bin")
# Free ports now; another test may take one before scripts/run binds it (see the retry below).
pick_ports() {
  TAGPROOF_RUN_PG_PORT=$(stack_free_port)
  TAGPROOF_RUN_REDIS_PORT=$(stack_free_port)
  TAGPROOF_SCAN_LISTEN=127.0.0.1:$(stack_free_port)
  TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
  TAGPROOF_ANCHOR_LISTEN=127.0.0.1:$(stack_free_port)
  TAGPROOF_DEVLEDGER_LISTEN=127.0.0.1:$(stack_free_port)
}
pick_ports
export TAGPROOF_STATE_DIR=$state TAGPROOF_BUILD_DIR TAGPROOF_SKIP_BUILD=1 TAGPROOF_RUN_PG_PORT \
  TAGPROOF_RUN_REDIS_PORT TAGPROOF_SCAN_LISTEN TAGPROOF_FACTORY_LISTEN TAGPROOF_ANCHOR_LISTEN \
  TAGPROOF_DEVLEDGER_LISTEN
unset TAGPROOF_PG_URL TAGPROOF_REDIS_URL TAGPROOF_PG_MIGRATE_URL TAGPROOF_ADMIN_API_KEY
ua='Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1'

# scans_authentic TAG — the scan service answers 200 with the verdict authentic.
scans_authentic() {
  curl -fsS -A "$ua" "http://$TAGPROOF_SCAN_LISTEN/v1/scan/$1" | jq -e '.verdict == "authentic"' >/dev/null
}

# key_works KEY — the factory API accepts KEY as an admin's.
key_works() {
  [ "$(printf 'X-Api-Key: %s\n' "$1" | curl -s -o /dev/null -w '%{http_code}' -H @- \
    "http://$TAGPROOF_FACTORY_LISTEN/v1/factories?limit=1")" = 200 ]
}
run=$stack_root/scripts/run
ports=("${TAGPROOF_SCAN_LISTEN##*:}" "${TAGPROOF_FACTORY_LISTEN##*:}" "${TAGPROOF_ANCHOR_LISTEN##*:}"
  "${TAGPROOF_DEVLEDGER_LISTEN##*:}" "$TAGPROOF_RUN_PG_PORT" "$TAGPROOF_RUN_REDIS_PORT")
stop_on_exit() { "$run" stop >/dev/null 2>&1 || true; e2e_cleanup; }
trap stop_on_exit EXIT

rc=0
for attempt in 1 2 3; do
  rc=0
  "$run" --detach >"$work/run1.out" 2>&1 || rc=$?
  # A port taken by another test between picking and binding: new ports, a fresh start.
  if [ "$rc" != 0 ] && grep -q 'is already in use by another process' "$work/run1.out" && [ "$attempt" -lt 3 ]; then
    "$run" stop >/dev/null 2>&1 || true
    rm -rf "$state"
    pick_ports
    export TAGPROOF_RUN_PG_PORT TAGPROOF_RUN_REDIS_PORT TAGPROOF_SCAN_LISTEN TAGPROOF_FACTORY_LISTEN \
      TAGPROOF_ANCHOR_LISTEN TAGPROOF_DEVLEDGER_LISTEN
    ports=("${TAGPROOF_SCAN_LISTEN##*:}" "${TAGPROOF_FACTORY_LISTEN##*:}" "${TAGPROOF_ANCHOR_LISTEN##*:}"
      "${TAGPROOF_DEVLEDGER_LISTEN##*:}" "$TAGPROOF_RUN_PG_PORT" "$TAGPROOF_RUN_REDIS_PORT")
    continue
  fi
  break
done
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
  # shellcheck source=/dev/null
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

# The demo: an admin key in .tagproof/env, and a printed tag that scans authentic.
admin_key=$(bash -c ". '$state/env' && echo \"\${TAGPROOF_ADMIN_API_KEY:-}\"")
check ".tagproof/env carries TAGPROOF_ADMIN_API_KEY" test -n "$admin_key"
check "…which the factory API accepts as an admin's" key_works "$admin_key"
check "…and which scripts/run printed" grep -qF "$admin_key" "$work/run1.out"
demo_tag=$(sed -n "s|.*http://$TAGPROOF_SCAN_LISTEN/t/\([0-9a-f-]\{36\}\).*|\1|p" "$work/run1.out" | head -1)
check "scripts/run prints the scan URL of a demo tag" test -n "$demo_tag"
check "…that scans authentic" scans_authentic "$demo_tag"
check "…one of 1,000 demo tags" bash -c "[ \$(wc -l <'$state/demo-tags') = 1000 ]"
check "…the last of which scans authentic too" scans_authentic "$(tail -1 "$state/demo-tags")"
check "it says where the logs are" grep -q "logs .*$state/logs" "$work/run1.out"
[ -n "$demo_tag" ] || cat "$work/run1.out" "$state/logs/seed.log" 2>/dev/null

# scripts/seed N with the settings of .tagproof/env alone.
rc=0
env -u TAGPROOF_FACTORY_LISTEN "$stack_root/scripts/seed" 5 >"$work/seed.out" 2>"$work/seed.err" || rc=$?
check "scripts/seed 5 exits 0 (got $rc)" test "$rc" = 0
check "…and prints 5 lines, each a UUID" \
  bash -c "[ \$(wc -l <'$work/seed.out') = 5 ] && ! grep -Evq '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\$' '$work/seed.out'"
seeded=0
while read -r tag; do
  if scans_authentic "$tag"; then seeded=$((seeded + 1)); fi
done <"$work/seed.out"
check "…each of which scans authentic ($seeded of 5)" test "$seeded" = 5
[ "$rc" = 0 ] || cat "$work/seed.err"
rc=0
"$stack_root/scripts/seed" 0 >/dev/null 2>&1 || rc=$?
check "scripts/seed 0 is a usage error (got $rc)" test "$rc" = 2

rc=0
"$run" --detach >"$work/run2.out" 2>&1 || rc=$?
check "a second scripts/run --detach exits 0 (got $rc)" test "$rc" = 0
pids_after=$(cat "$state"/run/*.pid | sort | tr '\n' ' ')
check "…and restarts nothing that runs" test "$pids_before" = "$pids_after"
check "…seeds no second demo" bash -c "! grep -q 'seeding' '$work/run2.out'"
check "…prints the same demo tag" grep -q "/t/$demo_tag" "$work/run2.out"
check "…keeps the admin key" \
  test "$(bash -c ". '$state/env' && echo \"\$TAGPROOF_ADMIN_API_KEY\"")" = "$admin_key"
owner_url=$(bash -c ". '$state/env' && echo \"\$TAGPROOF_PG_MIGRATE_URL\"")
check "…and made no second admin key" \
  test "$(psql "$owner_url" -qAtc "SELECT count(*) FROM api_keys WHERE role = 'admin'")" = 1
check "…nor a second demo batch" test "$(psql "$owner_url" -qAtc "SELECT count(*) FROM batches b
  JOIN factories f ON f.id = b.factory_id WHERE f.name = 'Tagproof demo'")" = 1

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
