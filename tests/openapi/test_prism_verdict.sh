#!/usr/bin/env bash
# The contract check itself (prism_lib.sh): a Prism proxy in front of a fake service that
# answers some paths as docs/openapi.yaml says and some not. Each wrong answer, and each
# request the document calls invalid that the service accepts, must fail the check; right
# answers, and bad requests the service refuses, must pass it. Without this test a check
# that never fires would look exactly like a service that never breaks the contract.
. "$(dirname "$0")/../e2e/lib.sh"
. "$(dirname "$0")/prism_lib.sh"

port=$(stack_free_port)
node "$(dirname "$0")/fake_upstream.mjs" "$port" 2>"$work/fake.log" &
pids+=("$!")
stack_wait_http "http://127.0.0.1:$port/v1/health" 30 || not_ok "the fake upstream starts"
prism_start "http://127.0.0.1:$port" || { e2e_done; exit 1; }

# verdict EXPECTED DESCRIPTION CURL-ARGS... — one exchange through the proxy, judged in a
# subshell so that an expected failure is not counted; EXPECTED is pass or fail
# (VERDICT_DEBUG=1 shows what the check said each time).
verdict() {
  local want=$1 what=$2 got out
  shift 2
  code=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@")
  out=$(failures=0 && prism_verdict "$what" "$code" "$work/headers" && echo "failures=$failures")
  got=pass
  grep -q '^failures=0$' <<<"$out" || got=fail
  if [ "$got" = "$want" ]; then
    ok "$what: the contract check says $got"
    [ -z "${VERDICT_DEBUG:-}" ] || sed 's/^/#   /' <<<"$out"
  else
    not_ok "$what: the contract check says $got, not $want"
    echo "$out" | sed 's/^/#   /'
  fi
}

p=$prism_url
verdict pass "a conforming answer" "$p/v1/health"
verdict fail "a body member of the wrong type and an unknown enum value" "$p/v1/ready"
verdict fail "an answer without X-Request-Id (none of the service's, so Prism's own)" "$p/.well-known/jwks.json"
verdict fail "a 401 without WWW-Authenticate" "$p/v1/factories"
verdict pass "a conforming list" -H 'X-Api-Key: k' "$p/v1/factories"
verdict pass "a request the document calls invalid, refused by the service (400)" -H 'X-Api-Key: k' "$p/v1/factories?limit=0"
verdict fail "a request the document calls invalid, accepted by the service (200)" -H 'X-Api-Key: k' "$p/v1/factories?limit=0&lenient=1"
verdict fail "a status the document does not list" -H 'X-Api-Key: k' "$p/v1/factories?status=418"
verdict pass "an undocumented path the service does not know (404)" "$p/no/such/path"
check "the check uses sl-violations as Prism 5.14.2 sends it" bash -c "curl -s -D - -o /dev/null '$p/v1/ready' | grep -qi '^sl-violations: \[{\"location\":\[\"response\"'"

e2e_done
