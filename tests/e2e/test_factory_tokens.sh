#!/usr/bin/env bash
# The hostile token table of tests/node/hostile_tokens.mjs (made with the npm package jose from
# our key material) sent over HTTP to the real tagproof-factory as "Authorization: Bearer" on
# a protected endpoint: every hostile token answers 401 with WWW-Authenticate and
# problem+json, every control does not. The service signs with an RSA key this test
# generates (RS256) and trusts an EC P-256 key through a JWKS file (ES256), so both paths are
# live. The unit test test_jwt_hostile checks the same table against jwt_verify, reason by
# reason; this one checks what a client actually gets.
#
# Every request leaves from 127.0.0.51, so the failed-authentication budget this test spends
# (kept out of the way with a high TAGPROOF_AUTH_FAIL_PER_MIN) is not that of other tests
# sharing the Redis.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"
e2e_env

src=127.0.0.51
node_deps || {
  not_ok "node, npm and tests/node's packages are needed"
  e2e_done
  exit 1
}

keys=$work/keys
mkdir -p "$keys"
(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa.pem" 2>/dev/null)
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/ec.pem")
openssl pkey -in "$keys/ec.pem" -pubout -out "$keys/ec.pub.pem"
# The trusted JWKS holds only the EC public key; the RSA key is the service's own signer.
node "$stack_root/tests/node/jwks_of.mjs" "$keys/ec.pub.pem" >"$keys/trusted.jwks.json"
node "$stack_root/tests/node/jwks_of.mjs" "$keys/rsa.pem" >"$keys/rsa.jwks.json"
ec_kid=$(jq -r '.keys[0].kid' "$keys/trusted.jwks.json")
rsa_kid=$(jq -r '.keys[0].kid' "$keys/rsa.jwks.json")

export TAGPROOF_JWT_KEY_FILE=$keys/rsa.pem
export TAGPROOF_JWKS_FILE=$keys/trusted.jwks.json
export TAGPROOF_AUTH_FAIL_PER_MIN=1000000
export TAGPROOF_RATE_LIMIT_PER_MIN=1000000
export TAGPROOF_RATE_LIMIT_BURST=1000000
issuer=tagproof-tokens-e2e
audience=tagproof-factory-api
export TAGPROOF_JWT_ISSUER=$issuer TAGPROOF_JWT_AUDIENCE=$audience
factory_up
base=$FACTORY_DIRECT_URL
endpoint=$base/v1/factories

curl -sS --interface "$src" "$base/.well-known/jwks.json" >"$work/published.json"
check "the service publishes its RSA key under jose's RFC 7638 thumbprint" \
  test "$(jq -r '.keys[0].kid' "$work/published.json")" = "$rsa_kid"
check "the published JWKS holds only the service's own key" \
  test "$(jq '.keys | length' "$work/published.json")" = 1

# A token of the service itself (jwt_sign) for jose to verify against the JWKS.
ours=$(curl -sS --interface "$src" -X POST -H "X-Api-Key: $admin_key" "$base/v1/auth/token" |
  jq -r .access_token)
check "the service issues a token to its admin key" test -n "$ours" -a "$ours" != null

# What the generator needs: our private keys, their kids, the JWKS (ours and the trusted EC
# key together) and "now". It is given a second some seconds ahead, and the table is sent
# from that second on: four cases sit exactly on the 60-second leeway (valid at that second
# and not one later, or the reverse), so they go first, in one connection, and count only
# when their answers came within that second; otherwise the table is made again.
jq -c -s '{keys: (.[0].keys + .[1].keys)}' "$work/published.json" "$keys/trusted.jwks.json" \
  >"$work/jwks_all.json"
edge_cases="ok_exp_within_leeway ok_nbf_within_leeway expired_at_leeway_edge nbf_just_beyond_leeway"
future_cases=' (nbf_future|iat_future) '

# send NAME TOKEN_FILE — one request; the status in $code, headers and body in $work/r.*.
send() {
  printf 'Authorization: Bearer ' >"$work/r.hdr"
  cat "$2" >>"$work/r.hdr"
  printf '\n' >>"$work/r.hdr"
  code=$(curl -s --interface "$src" --max-time 30 -o "$work/r.body" -D "$work/r.head" \
    -w '%{http_code}' -H @"$work/r.hdr" "$endpoint") || code=000
}

# split_table — each case's token, byte for byte, in $work/tok/I, and "I name expect" lines
# in $work/cases.
split_table() {
  local i=0 name expect b64
  rm -rf "$work/tok" && mkdir -p "$work/tok"
  : >"$work/cases"
  while IFS=$'\t' read -r name expect b64; do
    printf '%s' "$b64" | base64 -d >"$work/tok/$i"
    echo "$i $name $expect" >>"$work/cases"
    i=$((i + 1))
  done < <(jq -r '.cases[] | [.name, .expect, (.token | @base64)] | @tsv' "$work/table.json")
}

made=0
for lead in 6 12 20; do
  now=$(($(date +%s) + lead))
  jq -n --argjson now "$now" --arg iss "$issuer" --arg aud "$audience" \
    --arg rsa "$keys/rsa.pem" --arg rkid "$rsa_kid" --arg ec "$keys/ec.pem" --arg ekid "$ec_kid" \
    --rawfile jwks "$work/jwks_all.json" --arg ours "$ours" \
    '{now: $now, issuer: $iss, audience: $aud, factory_id: "5f0c6a4e-1d2b-4c3a-9e8f-7a6b5c4d3e2f",
      rsa: {pem_file: $rsa, kid: $rkid}, ec: {pem_file: $ec, kid: $ekid}, jwks: $jwks,
      ours: [$ours]}' >"$work/table_in.json"
  if ! node "$stack_root/tests/node/hostile_tokens.mjs" "$work/table_in.json" >"$work/table.json"; then
    not_ok "hostile_tokens.mjs made the table"
    break
  fi
  if [ "$(date +%s)" -ge "$now" ]; then
    echo "# the table took longer than $lead s to make; again"
    continue
  fi
  split_table
  # The edge cases, in one curl (one connection) started just after the second begins.
  args=()
  for name in $edge_cases; do
    i=$(awk -v n="$name" '$2 == n {print $1}' "$work/cases")
    { printf 'Authorization: Bearer '; cat "$work/tok/$i"; printf '\n'; } >"$work/tok/$name.hdr"
    [ ${#args[@]} -gt 0 ] && args+=(--next)
    args+=(-s --interface "$src" -o "$work/tok/$name.body" -D "$work/tok/$name.head"
      -w "$name %{http_code}\n"
      -H @"$work/tok/$name.hdr" "$endpoint")
  done
  while [ "$(date +%s%N)" -lt "$((now * 1000000000 + 20000000))" ]; do sleep 0.01; done
  curl "${args[@]}" >"$work/edge.out"
  after=$(date +%s)
  if [ "$after" != "$now" ]; then
    echo "# the leeway cases were answered across a second boundary; again"
    continue
  fi
  made=1
  break
done
check "the table was made and its leeway cases sent within one second" test "$made" = 1

check "jose computes the service's kid" test "$(jq -r .thumbprints.rsa "$work/table.json")" = "$rsa_kid"
check "jose verifies a token the service issued against its JWKS" \
  test "$(jq -r '.ours_verified[0]' "$work/table.json")" = true

# The answers: a hostile token must get 401 + WWW-Authenticate + problem+json; a control must
# not get 401 (a factory_user is 403 on this admin route, an admin 200).
refused=0
controls=0
not_carried=()
bad=()
declare -A edge_code
while read -r name code; do edge_code[$name]=$code; done <"$work/edge.out"

while read -r i name expect; do
  tok=$work/tok/$i
  size=$(wc -c <"$tok")
  # HTTP cannot carry a field value with CR or LF, nor keep leading or trailing blanks
  # (RFC 9110 §5.5): such tokens are the unit test's business, not a request's.
  if [ "$(tr -d '\r\n' <"$tok" | wc -c)" != "$size" ] || grep -q '^[[:space:]]\|[[:space:]]$' "$tok"; then
    not_carried+=("$name")
    continue
  fi
  if [ -n "${edge_code[$name]:-}" ]; then
    code=${edge_code[$name]}
    cp "$work/tok/$name.body" "$work/r.body"
    cp "$work/tok/$name.head" "$work/r.head"
  else
    send "$name" "$tok"
  fi
  hdr_ok=no
  grep -qi '^www-authenticate: Bearer' "$work/r.head" && hdr_ok=yes
  printf '# %-44s %-14s %s %s\n' "$name" "$expect" "$code" "$([ "$hdr_ok" = yes ] && echo WWW-Authenticate)"
  if [ "$expect" = ok ]; then
    controls=$((controls + 1))
    if [ "$code" = 401 ] || [ "$code" -ge 500 ] || [ "$code" = 000 ]; then
      bad+=("$name (control) got $code")
    fi
    continue
  fi
  if [ "$code" = 401 ] && [ "$hdr_ok" = yes ] &&
    jq -e '.status == 401 and (.type | type == "string") and (.title | type == "string") and
      (.detail | type == "string") and (.request_id | type == "string")' "$work/r.body" >/dev/null 2>&1 &&
    grep -qi '^content-type: application/problem+json' "$work/r.head"; then
    refused=$((refused + 1))
  else
    bad+=("$name got $code (WWW-Authenticate: $hdr_ok)")
  fi
done < <(
  # Tokens from the future are refused only while they are more than 60 s ahead: first.
  grep -E "$future_cases" "$work/cases"
  grep -vE "$future_cases" "$work/cases"
)

echo "# $refused hostile tokens refused over HTTP with 401, WWW-Authenticate and problem+json;" \
  "$controls controls not refused"
for e in "${not_carried[@]}"; do echo "# not carried verbatim by HTTP (checked by test_jwt_hostile): $e"; done
for e in "${bad[@]}"; do echo "# WRONG: $e"; done
check "every hostile token is refused with 401 + WWW-Authenticate + problem+json (${#bad[@]} wrong)" \
  test "${#bad[@]}" = 0
check "at least 140 hostile tokens went through authentication ($refused)" test "$refused" -ge 140
check "at least 12 controls passed authentication ($controls)" test "$controls" -ge 12
check "the leeway controls passed at their second" \
  test "${edge_code[ok_exp_within_leeway]:-}" != 401 -a "${edge_code[ok_nbf_within_leeway]:-}" != 401
check "the leeway hostile cases were refused at their second" \
  test "${edge_code[expired_at_leeway_edge]:-}" = 401 -a "${edge_code[nbf_just_beyond_leeway]:-}" = 401

# No token reached the log.
leaked=0
for f in "$work"/tok/[0-9]*; do
  sig=$(tr -d '\n' <"$f" | awk -F. '{print $3}')
  [ ${#sig} -ge 40 ] && grep -qF "$sig" "$work/tagproof-factory.log" && leaked=$((leaked + 1))
done
check "no token's signature appears in the service's log ($leaked)" test "$leaked" = 0
check "the service still answers" curl -fsS --interface "$src" "$base/v1/health"
e2e_stop tagproof-factory "$factory_pid"
e2e_done
