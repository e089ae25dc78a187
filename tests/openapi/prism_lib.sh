# prism_lib.sh — the end-to-end tests' contract check: a Prism proxy (tests/node, pinned)
# between the test and a service checks every request and answer against docs/openapi.yaml.
# Source it after tests/e2e/lib.sh.
#
#   prism_start UPSTREAM_URL   starts `prism proxy` on a free loopback port in front of the
#                              service at UPSTREAM_URL and waits until it answers; its URL in
#                              $prism_url. 0, or 1 (with its log shown) if it did not start.
#   prism_verdict WHAT STATUS HEADERS_FILE
#                              judges one exchange by the sl-violations header Prism added to
#                              the answer (none: the exchange matches the document); a broken
#                              contract is a failed check (not_ok) that prints the violations.
#
# Prism runs without --errors: it forwards every request, whatever its violations, and adds
# what it found in the request and in the answer to the answer's sl-violations header. (With
# --errors it would answer a non-conforming request with its own 422 or 401 instead of
# forwarding it, so the service's own answer to a bad request would never be seen or checked.)
# The verdict then is:
#   - any violation located in the answer fails the check: the service answered something
#     the document does not describe (a status, a header, a body member, a type, a format);
#   - a violation located in the request fails the check unless the service refused the
#     request too (4xx): a test that sends a malformed request on purpose, and the service
#     that answers it 400, agree with a document that calls the request invalid; a request
#     the document calls invalid but the service accepts (2xx, 3xx) or fails on (5xx) is a
#     mismatch between the two.
# What a proxy cannot carry as it came goes to the service directly instead: Prism parses
# JSON request bodies and re-serialises them, decodes text bodies (UTF-8, BOM dropped) and
# reads at most 10 MB (so malformed or duplicate-key JSON, BOMs, invalid UTF-8, big uploads);
# it adds a User-Agent where there is none; the service sees Prism's address, not the
# client's (per-address limits, X-Forwarded-For); and it takes only "Bearer" in that case as
# the bearer scheme, where RFC 9110 makes the scheme case-insensitive.

prism_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prism_bin=$prism_root/tests/node/node_modules/.bin/prism
prism_doc=$prism_root/docs/openapi.yaml
prism_exchanges=0
prism_broken=0

prism_start() {
  local upstream=$1 port log
  if [ ! -x "$prism_bin" ]; then
    not_ok "prism is installed in tests/node (scripts/test runs npm ci there)"
    return 1
  fi
  port=$(stack_free_port)
  log="$work/prism-$port.log"
  # No CORS headers of Prism's own: the answers should be the service's.
  "$prism_bin" proxy --errors=false --cors=false -h 127.0.0.1 -p "$port" -v warn \
    "$prism_doc" "$upstream" >"$log" 2>&1 &
  prism_pid=$!
  pids+=("$prism_pid")
  prism_url="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do
    # Any HTTP answer means it listens (its own 404 problem for an unknown path is fine).
    if curl -s -o /dev/null "$prism_url/v1/health" 2>/dev/null; then
      echo "# contract: requests to $upstream go through prism at $prism_url"
      return 0
    fi
    kill -0 "$prism_pid" 2>/dev/null || break
    sleep 0.1
  done
  not_ok "prism proxy starts in front of $upstream"
  cat "$log"
  return 1
}

prism_verdict() {
  local what=$1 code=$2 headers=$3 raw bad
  prism_exchanges=$((prism_exchanges + 1))
  raw=$(tr -d '\r' <"$headers" | sed -n 's/^[Ss][Ll]-[Vv][Ii][Oo][Ll][Aa][Tt][Ii][Oo][Nn][Ss]: //p' | tail -1)
  if ! grep -qi '^x-request-id:' "$headers"; then
    # Every answer of a Tagproof service has one: this one is Prism's own (it could not
    # parse or forward the request), so the service was never asked.
    prism_broken=$((prism_broken + 1))
    not_ok "contract: $what was answered ($code) by the service, not by prism itself (send such requests directly)"
    return 0
  fi
  [ -n "$raw" ] || return 0
  if ! jq -e . >/dev/null 2>&1 <<<"$raw"; then
    bad=$raw # "Too many violations! …": Prism cut the list short
  else
    bad=$(jq -r --argjson code "$code" '
      .[] | select(.location[0] == "response" or ($code < 400 or $code >= 500))
      | "\(.location | join(".")): \(.message) [\(.severity)]"' <<<"$raw")
  fi
  [ -n "$bad" ] || return 0
  prism_broken=$((prism_broken + 1))
  not_ok "contract: $what answered $code as docs/openapi.yaml describes"
  sed 's/^/#   /' <<<"$bad"
}
