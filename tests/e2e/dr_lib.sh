# dr_lib.sh — a shortened disaster-recovery drill (scripts/dr/drill) in sync mode, its report
# checked against the targets of SPEC §10: RTO at most 10 s, no acknowledged tag lost, no
# service restarted. Source it after lib.sh; dr_test FAULT [FAILBACK ARGS...] runs it all,
# then scripts/dr/failback with the arguments, and leaves the verdicts to e2e_done.

dr_test() {
  local fault=$1
  shift
  export TAGPROOF_BIN_DIR=$bin TAGPROOF_DR_DIR=$work/dr
  trap '"$stack_root/scripts/dr/down" >/dev/null 2>&1 || true; e2e_cleanup' EXIT
  local out=$work/report rc=0
  "$stack_root/scripts/dr/drill" --mode sync --fault "$fault" --out "$out" --warmup 5 --after 2 \
    --wait 30 --keep || rc=$?
  check "the $fault drill ran (exit $rc)" test "$rc" = 0
  check "dr-report.json and dr-report.md are written" test -s "$out/dr-report.json" -a -s "$out/dr-report.md"
  local r=$out/dr-report.json
  echo "# $(jq -c '{rto_seconds, acknowledged_total, acknowledged_lost, client_errors, uploads}' "$r" 2>/dev/null)"
  check "rto_seconds <= 10" jq -e '.rto_seconds != null and .rto_seconds <= 10' "$r"
  check "acknowledged_lost = 0" jq -e '.acknowledged_lost == 0' "$r"
  check "uploads were acknowledged before and after the fault" jq -e '.acknowledged_total > 0' "$r"
  check "no service was restarted" jq -e '.services_restarted == false' "$r"
  check "the anchor leads again after the failover" jq -e '.anchor_leader_after == true' "$r"
  check "the report has the mode and the fault" jq -e --arg f "$fault" '.mode == "sync" and .fault == $f' "$r"
  check "client_errors is counted" jq -e '.client_errors | type == "number"' "$r"
  local e
  for e in "fault injected" detected "promotion issued" "promotion done" "first good write" "first good scan"; do
    check "the timeline has '$e'" jq -e --arg e "$e" 'any(.timeline[]; .event | startswith($e))' "$r"
  done
  check "no deviation from the runbook" jq -e '.deviations == []' "$r"
  [ "$rc" = 0 ] || { jq . "$r" 2>/dev/null | head -60; return 0; }

  rc=0
  "$stack_root/scripts/dr/failback" "$@" >"$work/failback.log" 2>&1 || rc=$?
  check "scripts/dr/failback $* makes the environment redundant again (exit $rc)" test "$rc" = 0
  [ "$rc" = 0 ] || tail -20 "$work/failback.log"
  "$stack_root/scripts/dr/down" --keep >/dev/null 2>&1 || true
  check "the services' logs have no sanitizer report" bash -c "! grep -l Sanitizer '$work/dr/logs/'tagproof-*.log"
}
