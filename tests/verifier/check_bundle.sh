#!/usr/bin/env bash
# check_bundle.sh BUNDLE.json VKEY TAGPROOF [LEDGER_URL] — the bundle-verification part of an
# end-to-end test, for any test that has fetched a bundle from GET /v1/proofs/{tag_id}:
#   1. `TAGPROOF verify BUNDLE --key VKEY [--ledger-url URL]` accepts it (exit 0);
#   2. the independent verifier (verify_bundle.py: RFC 9162 and Ed25519 notes in Python)
#      accepts it, ledger included when a URL is given;
#   3. any one changed byte is refused by both (tamper.py: every position for Python, every
#      CHECK_BUNDLE_CLI_EVERY-th (5) for the CLI, a process each).
# Prints one "ok - …" or "not ok - …" line per step (the e2e tests' format) and exits 1 if
# any failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bundle=${1:?usage: check_bundle.sh BUNDLE.json VKEY TAGPROOF [LEDGER_URL]}
vkey=${2:?}
cli=${3:?}
url=${4:-}
ledger=()
[ -n "$url" ] && ledger=(--ledger-url "$url")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0
step() { # WHAT COMMAND... — with "…: " at the end of WHAT, the command's first line follows
  local what=$1
  shift
  if "$@" >"$out" 2>&1; then
    case $what in *": ") echo "ok - $what$(head -1 "$out")" ;; *) echo "ok - $what" ;; esac
  else
    echo "not ok - $what: $(head -c 600 "$out")"
    failed=1
  fi
}
step "tagproof verify accepts the bundle${url:+, ledger included}" "$cli" verify "$bundle" --key "$vkey" "${ledger[@]}"
step "the independent Python verifier accepts it${url:+, ledger included}" \
  python3 "$here/verify_bundle.py" "$bundle" --key "$vkey" "${ledger[@]}"
step "any changed byte is refused by both verifiers: " \
  python3 "$here/tamper.py" "$bundle" --key "$vkey" --cli "$cli" "${ledger[@]}" --cli-every "${CHECK_BUNDLE_CLI_EVERY:-5}"
exit $failed
