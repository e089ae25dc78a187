#!/usr/bin/env bash
# Authentication of the factory API end to end (SPEC §6), against the real tagproof-factory:
# API keys (format, shown once, stored only as SHA-256, refused when wrong, unknown,
# malformed or revoked, last_used_at at most once a minute), roles (who may create and revoke
# which keys), the exchange of a key for a 15-minute token signed with the service's own key
# (its claims, the JWKS, the key file created 0600 and reused on restart), the per-caller and
# per-address rate limits (429 with Retry-After), a Redis outage (requests allowed and
# counted), and no key or token in the logs.
#
# Three instances share the test PostgreSQL: A with generous limits for most checks, B with
# tiny limits, C on a Redis of its own that the test kills. Requests leave from addresses of
# their own on loopback (127.0.0.41-47), so the failed-authentication budgets spent here are
# not those of other tests sharing the Redis.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"
e2e_env

ip_main=127.0.0.41 # requests that should succeed
ip_bad=127.0.0.42  # credentials that must be refused (instance A)
owner=$TAGPROOF_TEST_PG_OWNER_URL
redis_c_port=$(stack_free_port)
trap 'stack_redis_stop "$work/redis-c" >/dev/null 2>&1; e2e_cleanup' EXIT
# The failure budgets of these addresses start empty, also when the test ran a minute ago.
for i in 1 2 3 4 5 6 7; do redis-cli -u "$TAGPROOF_TEST_REDIS_URL" DEL "tp:rl:f:127.0.0.4$i" >/dev/null; done

# from IP METHOD PATH [CURL ARGS...] — api (factory_lib.sh) from a given source address.
from() {
  local ip=$1
  shift
  local m=$1 p=$2
  shift 2
  api "$m" "$p" --interface "$ip" "$@"
}

# key_post IP KEY JSON — POST /v1/api-keys.
key_post() {
  from "$1" POST /v1/api-keys -H "X-Api-Key: $2" -H 'Content-Type: application/json' --data-binary "$3"
}

# is_401 — the last answer is 401 with WWW-Authenticate and a problem+json body.
is_401() {
  [ "$status" = 401 ] &&
    grep -qi '^www-authenticate: Bearer realm="tagproof"' "$work/headers" &&
    grep -qi '^content-type: application/problem+json' "$work/headers" &&
    jq -e '.status == 401 and .type and .title and .detail and .request_id' "$work/body" >/dev/null
}

# is_429 — 429 with a Retry-After of 1 to $1 seconds and a problem+json body.
is_429() {
  local ra
  ra=$(grep -i '^retry-after:' "$work/headers" | tr -dc '0-9')
  [ "$status" = 429 ] && [ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le "$1" ] &&
    grep -qi '^content-type: application/problem+json' "$work/headers" &&
    jq -e '.status == 429 and .detail and .request_id' "$work/body" >/dev/null
}

psql_owner() {
  psql "$owner" -X -At -v ON_ERROR_STOP=1 -c "$1"
}

# metric NAME_AND_LABELS — the value of one sample at $metrics_url (0 when absent).
metric() {
  curl -s "$metrics_url/metrics" | awk -v m="$1" '$1 == m {v = $2} END {print v + 0}'
}

secrets=$work/secrets # every key and token handed out, for the log check at the end
: >"$secrets"

# --- instance A: the signing key is made on first start -----------------------------------
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=1000
export TAGPROOF_AUTH_FAIL_PER_MIN=1000
check "no signing key before the first start" test ! -e "$TAGPROOF_DATA_DIR/jwt-signing.pem"
factory_up
a_pid=$factory_pid
a_url=$FACTORY_URL
metrics_url=$a_url
echo "$admin_key" >>"$secrets"
keyfile=$TAGPROOF_DATA_DIR/jwt-signing.pem
check "the signing key is created under TAGPROOF_DATA_DIR" test -s "$keyfile"
check "the signing key file is mode 0600" test "$(stat -c %a "$keyfile")" = 600
check "TAGPROOF_DATA_DIR is created mode 0700" test "$(stat -c %a "$TAGPROOF_DATA_DIR")" = 700
check "the signing key is a PEM private key" grep -q 'BEGIN .*PRIVATE KEY' "$keyfile"
key_sum=$(sha256sum <"$keyfile")
curl -s "$a_url/.well-known/jwks.json" >"$work/jwks1"
kid=$(jq -r '.keys[0].kid' "$work/jwks1")
check "the JWKS publishes one RS256 signing key with a kid" \
  jq -e '(.keys | length) == 1 and .keys[0].kty == "RSA" and .keys[0].alg == "RS256" and
    .keys[0].use == "sig" and (.keys[0].kid | length) > 20 and (.keys[0] | has("d") | not)' "$work/jwks1"

check "admin-key printed a key" grep -Eq '^tp_live_[a-z0-9]{16}_[0-9a-f]{64}$' <<<"$admin_key"
check "admin-key stored an admin key named as asked, without a factory" \
  test "$(psql_owner "SELECT role || '/' || name || '/' || coalesce(factory_id::text, '-')
    FROM api_keys WHERE id = '${admin_key:8:16}'")" = "admin/e2e/-"
rc=0
TAGPROOF_PG_MIGRATE_URL=$owner "$bin/tagproof" admin-key one two >"$work/cli.out" 2>&1 || rc=$?
check "admin-key with two names is a usage error (exit $rc)" test "$rc" = 2
rc=0
TAGPROOF_PG_MIGRATE_URL="postgresql://tagproof@127.0.0.1:$(stack_free_port)/tagproof?connect_timeout=2" \
  "$bin/tagproof" admin-key >"$work/cli.out" 2>"$work/cli.err" || rc=$?
check "admin-key without a database fails (exit $rc) and prints no key" \
  test "$rc" = 1 -a ! -s "$work/cli.out"
from $ip_main GET /v1/factories -H "X-Api-Key: $admin_key"
check "the admin key lists factories (got $status)" test "$status" = 200

# --- factories and keys -----------------------------------------------------------------
json_post_from() { from $ip_main POST "$1" -H "X-Api-Key: $2" -H 'Content-Type: application/json' --data-binary "$3"; }
run=$(stack_secret) # factory names are unique, and the database outlives this test
json_post_from /v1/factories "$admin_key" "{\"name\": \"auth-e2e one $run\"}"
f1=$(jq_body .id)
check "a factory is created (got $status)" test "$status" = 201
json_post_from /v1/factories "$admin_key" "{\"name\": \"auth-e2e two $run\"}"
f2=$(jq_body .id)

# new_key IP CREATOR ROLE [FACTORY] — creates a key; sets $key, $key_id and leaves the answer.
new_key() {
  local body
  if [ -n "${4:-}" ]; then
    body=$(jq -nc --arg r "$3" --arg f "$4" '{role: $r, factory_id: $f, name: "e2e"}')
  else
    body=$(jq -nc --arg r "$3" '{role: $r, name: "e2e"}')
  fi
  key_post "$1" "$2" "$body"
  key=$(jq_body '.key // empty')
  key_id=$(jq_body '.id // empty')
  [ -n "$key" ] && echo "$key" >>"$secrets"
  return 0
}

new_key $ip_main "$admin_key" factory_user "$f1"
check "an admin creates a factory_user key (got $status)" test "$status" = 201
u1=$key u1_id=$key_id
check "the key is tp_live_<16 [a-z0-9]>_<64 hex>" grep -Eq '^tp_live_[a-z0-9]{16}_[0-9a-f]{64}$' <<<"$u1"
check "the answer names the key id, its prefix, factory and role" \
  jq -e --arg id "$u1_id" --arg f "$f1" \
  '.id == $id and .prefix == "tp_live_" + $id and .factory_id == $f and .role == "factory_user" and .created_at' \
  "$work/body"
check "the key is in the key itself: tp_live_<id>_" test "${u1:0:25}" = "tp_live_${u1_id}_"
check "the answer with the key is not cached" grep -qi '^cache-control: no-store' "$work/headers"
new_key $ip_main "$admin_key" viewer "$f1"
v1=$key v1_id=$key_id
new_key $ip_main "$admin_key" factory_user "$f2"
u2=$key u2_id=$key_id
check "several keys per factory, each distinct" test "$u1" != "$v1" -a -n "$v1" -a -n "$u2"
new_key $ip_main "$admin_key" admin
check "an admin creates another admin key without factory_id (got $status)" \
  test "$status" = 201 -a "$(jq_body .factory_id)" = null
admin2=$key admin2_id=$key_id
new_key $ip_main "$admin_key" admin "$f1"
check "an admin key with a factory_id is refused (got $status)" test "$status" = 422
new_key $ip_main "$admin_key" viewer
check "a viewer key without factory_id is refused (got $status)" test "$status" = 422
new_key $ip_main "$admin_key" viewer "0190a000-0000-7000-8000-000000000000"
check "a key for a factory that does not exist is 404 (got $status)" test "$status" = 404
new_key $ip_main "$admin_key" superuser "$f1"
check "an unknown role is refused (got $status)" test "$status" = 422

# --- shown once, stored only as a hash --------------------------------------------------
u1_secret=${u1:25}
shown=0
for p in /v1/api-keys "/v1/api-keys/$u1_id" /v1/factories "/v1/factories?limit=1000"; do
  from $ip_main GET "$p" -H "X-Api-Key: $admin_key"
  grep -qF "$u1_secret" "$work/body" "$work/headers" && shown=$((shown + 1))
done
from $ip_main POST /v1/auth/token -H "X-Api-Key: $u1"
grep -qF "$u1_secret" "$work/body" "$work/headers" && shown=$((shown + 1))
check "no later answer shows the key's secret ($shown did)" test "$shown" = 0
from $ip_main GET /v1/api-keys -H "X-Api-Key: $admin_key"
check "keys cannot be listed back (got $status)" test "$status" = 405 -o "$status" = 404
check "secret_hash is 32 bytes, SHA-256 of the secret" \
  test "$(psql_owner "SELECT octet_length(secret_hash) || ' ' ||
    (secret_hash = sha256(convert_to('$u1_secret', 'UTF8'))) FROM api_keys WHERE id = '$u1_id'")" = "32 true"
check "every key's hash is 32 bytes" \
  test "$(psql_owner "SELECT count(*) FROM api_keys WHERE octet_length(secret_hash) <> 32")" = 0
pg_dump --enable-row-security --data-only "$owner" >"$work/dump.sql" 2>"$work/dump.err"
check "the dump of the database holds the key rows" grep -q "$u1_id" "$work/dump.sql"
found=0
while read -r s; do
  case $s in tp_live_*) grep -qF "${s:25}" "$work/dump.sql" && found=$((found + 1)) ;; esac
done <"$secrets"
check "no key's secret is anywhere in the database ($found found)" test "$found" = 0

# --- refused credentials: 401 with WWW-Authenticate --------------------------------------
other_secret=$(printf '%064d' 7)
declare -A refused=(
  [wrong secret]="X-Api-Key: tp_live_${u1_id}_$other_secret"
  [unknown key id]="X-Api-Key: tp_live_zzzzzzzzzzzzzzzz_$u1_secret"
  [truncated key]="X-Api-Key: ${u1%?}"
  [key with an extra character]="X-Api-Key: ${u1}0"
  [upper-case key]="X-Api-Key: ${u1^^}"
  [wrong prefix]="X-Api-Key: tp_test_${u1:8}"
  [empty key]="X-Api-Key;"
  [key as a bearer token]="Authorization: Bearer $u1"
  [garbage bearer token]="Authorization: Bearer not.a.token"
  [Basic credentials]="Authorization: Basic $(printf 'admin:%s' "$u1_secret" | base64 -w0)"
)
for what in "${!refused[@]}"; do
  from $ip_bad GET /v1/factories -H "${refused[$what]}"
  check "$what: 401 + WWW-Authenticate + problem+json (got $status)" is_401
done
from $ip_bad GET /v1/factories
check "no credentials at all: 401 + WWW-Authenticate (got $status)" is_401
check "wrong secrets are counted by reason" \
  test "$(metric 'tagproof_auth_failures_total{reason="wrong_secret"}')" -ge 1

# --- roles: who may create and revoke which keys ----------------------------------------
from $ip_main GET /v1/factories -H "X-Api-Key: $u1"
check "a factory_user may not list factories (got $status)" test "$status" = 403
check "a 403 is problem+json" jq -e '.status == 403' "$work/body"
new_key $ip_main "$u1" viewer
check "a factory_user creates a viewer key for its own factory (got $status)" \
  test "$status" = 201 -a "$(jq_body .factory_id)" = "$f1"
v2=$key v2_id=$key_id
new_key $ip_main "$u1" admin
check "a factory_user may not create admin keys (got $status)" test "$status" = 403
new_key $ip_main "$u1" factory_user "$f2"
check "a factory_user may not create keys for another factory (got $status)" test "$status" = 404
new_key $ip_main "$v1" viewer "$f1"
check "a viewer may not create keys (got $status)" test "$status" = 403
from $ip_main DELETE "/v1/api-keys/$v2_id" -H "X-Api-Key: $v1"
check "a viewer may not revoke keys (got $status)" test "$status" = 403
from $ip_main DELETE "/v1/api-keys/$u2_id" -H "X-Api-Key: $u1"
check "a factory_user may not revoke another factory's key: 404 (got $status)" test "$status" = 404
from $ip_main DELETE "/v1/api-keys/$admin2_id" -H "X-Api-Key: $u1"
check "a factory_user may not revoke an admin key: 404 (got $status)" test "$status" = 404
from $ip_main DELETE /v1/api-keys/zzzzzzzzzzzzzzzz -H "X-Api-Key: $u1"
check "revoking a key that does not exist is 404 (got $status)" test "$status" = 404
from $ip_main DELETE /v1/api-keys/..%2F..%2Fetc -H "X-Api-Key: $u1"
check "a malformed key id is 404 (got $status)" test "$status" = 404
from $ip_main POST /v1/auth/token -H "X-Api-Key: $u2"
check "the other factory's key still works (got $status)" test "$status" = 200

from $ip_main POST /v1/auth/token -H "X-Api-Key: $v2"
check "the viewer key works before it is revoked (got $status)" test "$status" = 200
from $ip_main DELETE "/v1/api-keys/$v2_id" -H "X-Api-Key: $u1"
check "a factory_user revokes its own factory's key: 204 (got $status)" test "$status" = 204
from $ip_bad POST /v1/auth/token -H "X-Api-Key: $v2"
check "a revoked key: 401 + WWW-Authenticate (got $status)" is_401
check "the 401 says the key is revoked" grep -q revoked "$work/body"
from $ip_main DELETE "/v1/api-keys/$v2_id" -H "X-Api-Key: $u1"
check "revoking again changes nothing: 204 (got $status)" test "$status" = 204
check "revoked_at is set once" \
  test "$(psql_owner "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = '$v2_id'")" = t
from $ip_main DELETE "/v1/api-keys/$u2_id" -H "X-Api-Key: $admin_key"
check "an admin revokes any factory's key (got $status)" test "$status" = 204
from $ip_bad POST /v1/auth/token -H "X-Api-Key: $u2"
check "that key is refused from then on (got $status)" is_401

# --- last_used_at: set on use, written at most once a minute -----------------------------
new_key $ip_main "$admin_key" viewer "$f1"
lu=$key lu_id=$key_id
lu_at() { psql_owner "SELECT coalesce(last_used_at::text, 'never') FROM api_keys WHERE id = '$lu_id'"; }
check "a new key was never used" test "$(lu_at)" = never
from $ip_bad POST /v1/auth/token -H "X-Api-Key: tp_live_${lu_id}_$other_secret"
check "a wrong secret does not count as a use" test "$(lu_at)" = never
from $ip_main POST /v1/auth/token -H "X-Api-Key: $lu"
first=""
for _ in $(seq 1 50); do
  first=$(lu_at)
  [ "$first" != never ] && break
  sleep 0.1
done
check "the first use sets last_used_at" test "$first" != never
for _ in 1 2 3; do from $ip_main POST /v1/auth/token -H "X-Api-Key: $lu"; done
sleep 0.5
check "uses within the minute do not write it again" test "$(lu_at)" = "$first"
psql_owner "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = '$lu_id'" >/dev/null
aged=$(lu_at)
from $ip_main POST /v1/auth/token -H "X-Api-Key: $lu"
sleep 0.5
check "a use more than a minute later writes it again" test "$(lu_at)" != "$aged"

# --- tokens ---------------------------------------------------------------------------------
from $ip_main POST /v1/auth/token -H "X-Api-Key: $admin_key"
check "an API key is exchanged for a token (got $status)" test "$status" = 200
check "the token answer: Bearer, 900 s, not cached" \
  bash -c "jq -e '.token_type == \"Bearer\" and .expires_in == 900 and (.access_token | length) > 100' '$work/body' >/dev/null &&
    grep -qi '^cache-control: no-store' '$work/headers'"
ta=$(jq_body .access_token)
echo "$ta" >>"$secrets"
admin_id=${admin_key:8:16}
jwt_part "$ta" 0 >"$work/ta.header"
jwt_part "$ta" 1 >"$work/ta.claims"
check "the token's header: RS256, typ JWT, the published kid" \
  jq -e --arg kid "$kid" '.alg == "RS256" and .typ == "JWT" and .kid == $kid' "$work/ta.header"
check "the admin token's claims: sub key:<id>, role admin, no factory_id, iss, aud, jti" \
  jq -e --arg sub "key:$admin_id" \
  '.sub == $sub and .role == "admin" and (has("factory_id") | not) and .iss == "tagproof" and
    .aud == "tagproof-factory-api" and (.jti | length) > 0' "$work/ta.claims"
check "the token lives 15 minutes: exp - iat = 900, nbf = iat, iat is now" \
  jq -e --argjson now "$(date +%s)" \
  '.exp - .iat == 900 and .nbf == .iat and (.iat - $now | fabs) < 60' "$work/ta.claims"
from $ip_main GET /v1/factories -H "Authorization: Bearer $ta"
check "the admin token works as a bearer token (got $status)" test "$status" = 200
# Straight to the service: Prism matches the scheme "Bearer" case-sensitively.
FACTORY_URL=$FACTORY_DIRECT_URL from $ip_main GET /v1/factories -H "Authorization: bearer $ta"
check "the scheme name is case-insensitive (got $status)" test "$status" = 200
from $ip_main GET /v1/factories -H "Authorization: Bearer   $ta"
check "several spaces may separate scheme and token (got $status)" test "$status" = 200

from $ip_main POST /v1/auth/token -H "X-Api-Key: $u1"
tu=$(jq_body .access_token)
echo "$tu" >>"$secrets"
check "a factory_user token carries its role and factory" \
  jq -e --arg sub "key:$u1_id" --arg f "$f1" '.sub == $sub and .role == "factory_user" and .factory_id == $f and .exp - .iat == 900' \
  <(jwt_part "$tu" 1)
from $ip_main POST /v1/api-keys -H "Authorization: Bearer $tu" -H 'Content-Type: application/json' \
  --data-binary '{"role": "viewer", "name": "by token"}'
check "a factory_user token creates a key of its factory (got $status)" \
  test "$status" = 201 -a "$(jq_body .factory_id)" = "$f1"
jq_body .key >>"$secrets"
from $ip_main GET /v1/factories -H "Authorization: Bearer $tu"
check "its role still applies: 403 on an admin route (got $status)" test "$status" = 403
from $ip_bad POST /v1/auth/token -H "Authorization: Bearer $ta"
check "a token cannot be exchanged for another: 401 + WWW-Authenticate (got $status)" is_401

# A token outlives the revocation of its key until it expires (at most 15 minutes).
new_key $ip_main "$admin_key" admin
rk=$key rk_id=$key_id
from $ip_main POST /v1/auth/token -H "X-Api-Key: $rk"
tr=$(jq_body .access_token)
echo "$tr" >>"$secrets"
from $ip_main DELETE "/v1/api-keys/$rk_id" -H "X-Api-Key: $admin_key"
from $ip_bad GET /v1/factories -H "X-Api-Key: $rk"
check "the revoked key is refused" is_401
from $ip_main GET /v1/factories -H "Authorization: Bearer $tr"
check "a token issued before the revocation stays valid until it expires (got $status)" test "$status" = 200

# --- restart: the same key file, the same kid --------------------------------------------
e2e_stop tagproof-factory "$a_pid"
export TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
factory_start factory-a2 || not_ok "instance A restarts"
a_pid=$last_pid
a_url=$last_url
metrics_url=$a_url
FACTORY_URL=$a_url
check "the key file is reused, not replaced" test "$(sha256sum <"$keyfile")" = "$key_sum"
check "the key file is still mode 0600" test "$(stat -c %a "$keyfile")" = 600
check "the restarted service publishes the same kid" \
  test "$(curl -s "$a_url/.well-known/jwks.json" | jq -r '.keys[0].kid')" = "$kid"
from $ip_main GET /v1/factories -H "Authorization: Bearer $ta"
check "a token issued before the restart is still accepted (got $status)" test "$status" = 200

# A key file that others may read is refused at start.
chmod 0644 "$keyfile"
rc=0
TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port) timeout 20 "$bin/tagproof-factory" 2>"$work/lax.log" || rc=$?
chmod 0600 "$keyfile"
check "a signing key readable by others stops the service at start (exit $rc)" test "$rc" = 2

# --- instance B: tiny limits ---------------------------------------------------------------
new_key $ip_main "$admin_key" admin
rl1=$key
new_key $ip_main "$admin_key" admin
rl2=$key
new_key $ip_main "$admin_key" admin
rl3=$key
new_key $ip_main "$admin_key" admin
rl4=$key
new_key $ip_main "$admin_key" admin
rl5=$key
export TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
mkdir -p "$work/keys-b"
TAGPROOF_RATE_LIMIT_PER_MIN=6 TAGPROOF_RATE_LIMIT_BURST=3 TAGPROOF_AUTH_FAIL_PER_MIN=3 \
  TAGPROOF_JWT_KEY_FILE=$work/keys-b/signing.pem factory_start factory-b || not_ok "instance B starts"
b_pid=$last_pid
FACTORY_URL=$last_url
metrics_url=$last_url
check "TAGPROOF_JWT_KEY_FILE names where the key is made, mode 0600" \
  test "$(stat -c %a "$work/keys-b/signing.pem" 2>/dev/null)" = 600
kid_b=$(curl -s "$last_url/.well-known/jwks.json" | jq -r '.keys[0].kid')
check "another key, another kid" test -n "$kid_b" -a "$kid_b" != "$kid"
from 127.0.0.47 GET /v1/factories -H "Authorization: Bearer $ta"
check "B does not trust A's tokens: 401 (got $status)" is_401
codes=""
for _ in 1 2 3; do
  from 127.0.0.43 GET /v1/factories -H "X-Api-Key: $rl1"
  codes+="$status "
done
check "the burst of 3 passes ($codes)" test "$codes" = "200 200 200 "
from 127.0.0.43 GET /v1/factories -H "X-Api-Key: $rl1"
check "the 4th request at once: 429 + Retry-After (1-10 s) + problem+json (got $status)" is_429 10
from 127.0.0.43 GET /v1/factories -H "X-Api-Key: $rl2"
check "another key from the same address is not affected (got $status)" test "$status" = 200
check "429s are counted by scope" test "$(metric 'tagproof_rate_limited_total{scope="caller"}')" -ge 1

codes=""
for _ in 1 2 3; do
  from 127.0.0.44 GET /v1/factories -H "X-Api-Key: tp_live_${u1_id}_$other_secret"
  codes+="$status "
done
check "3 failed authentications from one address: 401 each ($codes)" test "$codes" = "401 401 401 "
# A bearer token is checked without I/O, then its caller limit and the address's failure
# budget take one Redis round trip together: a good token from that address is stopped too.
from 127.0.0.46 POST /v1/auth/token -H "X-Api-Key: $rl5"
tb=$(jq -r '.access_token // empty' "$work/body")
check "a token from instance B (got $status)" test "$status" = 200 -a -n "$tb"
from 127.0.0.44 GET /v1/factories -H "Authorization: Bearer $tb"
check "a good bearer token from that address: 429 + Retry-After (got $status)" is_429 20
from 127.0.0.44 GET /v1/factories -H "Authorization: Bearer $tb.x"
check "a bad one from there: 429 as well (got $status)" is_429 20
from 127.0.0.46 GET /v1/factories -H "Authorization: Bearer $tb"
check "the same token from another address: 200 (got $status)" test "$status" = 200
from 127.0.0.44 GET /v1/factories -H "X-Api-Key: $rl3"
check "then even a correct key from that address: 429 + Retry-After (got $status)" is_429 20
from 127.0.0.45 GET /v1/factories -H "X-Api-Key: $rl4"
check "another address is not affected (got $status)" test "$status" = 200
check "failed-authentication 429s are counted" \
  test "$(metric 'tagproof_rate_limited_total{scope="auth_failures"}')" -ge 1
e2e_stop factory-b "$b_pid"

# --- instance C: its Redis stops ------------------------------------------------------------
stack_redis_start "$work/redis-c" "$redis_c_port" --appendonly no
export TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
TAGPROOF_REDIS_URL=redis://127.0.0.1:$redis_c_port/0 TAGPROOF_RATE_LIMIT_PER_MIN=6 \
  TAGPROOF_RATE_LIMIT_BURST=3 factory_start factory-c || not_ok "instance C starts"
c_pid=$last_pid
FACTORY_URL=$last_url
metrics_url=$last_url
from 127.0.0.46 GET /v1/factories -H "X-Api-Key: $admin_key"
check "C answers with its Redis up (got $status)" test "$status" = 200
errors_before=$(metric tagproof_rate_limit_errors_total)
redis-cli -p "$redis_c_port" shutdown nosave >/dev/null 2>&1 || true
stack_redis_stop "$work/redis-c"
codes=""
for _ in 1 2 3 4 5 6; do
  from 127.0.0.46 GET /v1/factories -H "X-Api-Key: $admin_key"
  codes+="$status "
done
check "with Redis stopped, requests are allowed, beyond the burst too ($codes)" \
  test "$codes" = "200 200 200 200 200 200 "
from 127.0.0.46 GET /v1/factories -H "X-Api-Key: tp_live_${u1_id}_$other_secret"
check "a wrong key is still 401 with Redis stopped (got $status)" is_401
errors_after=$(metric tagproof_rate_limit_errors_total)
check "tagproof_rate_limit_errors_total grows ($errors_before -> $errors_after)" \
  test "$errors_after" -ge $((errors_before + 6))
warned=$(grep -c 'rate limits not checked' "$work/factory-c.log" || true)
check "the outage is logged, but not once per request ($warned lines)" test "$warned" -ge 1 -a "$warned" -le 2
e2e_stop factory-c "$c_pid"

# --- nothing secret in the logs ---------------------------------------------------------------
leaks=0
while read -r s; do
  [ -n "$s" ] || continue
  case $s in
  tp_live_*) needle=${s:25} ;;          # the secret part of a key
  *) needle=${s##*.} ;;                 # the signature of a token
  esac
  if grep -qF -- "$needle" "$work"/*.log; then
    leaks=$((leaks + 1))
    echo "# leaked: ${s:0:20}..."
  fi
done <"$secrets"
check "no API key or token appears in any log ($(wc -l <"$secrets") checked, $leaks found)" test "$leaks" = 0
check "no log line names an X-Api-Key value" bash -c "! grep -h 'tp_live_' '$work'/*.log | grep -Eq 'tp_live_[a-z0-9]{16}_[0-9a-f]'"

e2e_stop factory-a2 "$a_pid"
e2e_done
