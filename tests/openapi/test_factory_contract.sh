#!/usr/bin/env bash
# The factory API's answers against docs/openapi.yaml, through the Prism proxy: every
# endpoint the service has, with its success answers and the problems a client meets most
# (400, 401, 403, 404, 409, 415, 422), each exchange checked by prism_lib.sh's verdict.
# The other factory tests check behaviour; this one walks the document's operations.
. "$(dirname "$0")/../e2e/lib.sh"
. "$(dirname "$0")/../e2e/factory_lib.sh"
e2e_env
export FACTORY_PRISM=1
factory_up
check "requests go through the prism proxy" test "$FACTORY_URL" != "$FACTORY_DIRECT_URL"
key() { printf 'X-Api-Key: %s' "$1"; }
json=(-H 'Content-Type: application/json')

# Every service.
api GET /v1/health
check "health answers 200 ($status)" test "$status" = 200
api GET /v1/ready
check "ready answers 200 ($status)" test "$status" = 200
api GET /metrics
check "metrics answer 200 ($status)" test "$status" = 200
api GET /.well-known/jwks.json
check "the JWKS answers 200 with a key ($status)" jq -e '.keys | length >= 1' "$work/body"

# Factories.
name="Contract Works $RANDOM$RANDOM"
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary "{\"name\": \"$name\"}"
check "an admin creates a factory: 201 ($status)" test "$status" = 201
factory=$(jq_body .id)
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary "{\"name\": \"$name\"}"
check "the same name again: 409 ($status)" test "$status" = 409
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary '{"name": ""}'
check "an empty name: 422 ($status)" test "$status" = 422
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary '{}'
check "no name: 422 ($status)" test "$status" = 422
api POST /v1/factories -H "$(key "$admin_key")" -H 'Content-Type: text/plain' --data-binary 'name'
check "a body that is not JSON: 415 ($status)" test "$status" = 415
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}"
check "no body: 400 ($status)" test "$status" = 400
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary '["a list"]'
check "a JSON body that is not an object: 400 ($status)" test "$status" = 400
api POST /v1/factories -H "$(key "$admin_key")" "${json[@]}" --data-binary "{\"name\": \"Second $name\"}"
api GET '/v1/factories?limit=1' -H "$(key "$admin_key")"
check "a page of one factory, and a cursor ($status)" jq -e '(.items | length) == 1 and (.next_cursor | type) == "string"' "$work/body"
cursor=$(jq_body .next_cursor)
api GET "/v1/factories?limit=1000&cursor=$cursor" -H "$(key "$admin_key")"
check "the last page has no cursor ($status)" jq -e '.next_cursor == null' "$work/body"
api GET '/v1/factories?limit=0' -H "$(key "$admin_key")"
check "limit 0: 400 ($status)" test "$status" = 400
api GET '/v1/factories?cursor=not-a-cursor' -H "$(key "$admin_key")"
check "a cursor this API never gave: 400 ($status)" test "$status" = 400

# API keys and tokens.
api POST /v1/api-keys -H "$(key "$admin_key")" "${json[@]}" \
  --data-binary "{\"factory_id\": \"$factory\", \"role\": \"factory_user\", \"name\": \"line 3\"}"
check "an admin creates a factory_user key: 201 ($status)" test "$status" = 201
user_key=$(jq_body .key)
user_key_id=$(jq_body .id)
api POST /v1/api-keys -H "$(key "$user_key")" "${json[@]}" --data-binary '{"role": "viewer"}'
check "a factory user creates a viewer key of its own factory: 201 ($status)" test "$status" = 201
viewer_key=$(jq_body .key)
api POST /v1/api-keys -H "$(key "$admin_key")" "${json[@]}" --data-binary '{"role": "admin", "name": "contract"}'
check "an admin creates an admin key: 201, factory_id null ($status)" jq -e '.factory_id == null' "$work/body"
api POST /v1/api-keys -H "$(key "$user_key")" "${json[@]}" --data-binary '{"role": "admin"}'
check "a factory user may not create an admin key: 403 ($status)" test "$status" = 403
api POST /v1/api-keys -H "$(key "$admin_key")" "${json[@]}" --data-binary '{"role": "owner"}'
check "an unknown role: 422 ($status)" test "$status" = 422
api POST /v1/api-keys -H "$(key "$admin_key")" "${json[@]}" \
  --data-binary "{\"factory_id\": \"$(cat /proc/sys/kernel/random/uuid)\", \"role\": \"viewer\"}"
check "a factory that does not exist: 404 ($status)" test "$status" = 404
api GET /v1/factories -H "$(key "$viewer_key")"
check "a viewer may not list factories: 403 ($status)" test "$status" = 403
api POST /v1/auth/token -H "$(key "$user_key")"
check "a key is exchanged for a token: 200 ($status)" jq -e '.token_type == "Bearer" and .expires_in == 900' "$work/body"
token=$(jq_body .access_token)
api POST /v1/auth/token -H "Authorization: Bearer $token"
check "a token is not exchanged for a token: 401 ($status)" test "$status" = 401
api POST /v1/api-keys -H "Authorization: Bearer $token" "${json[@]}" --data-binary '{"role": "viewer", "name": "by token"}'
check "a bearer token works like its key: 201 ($status)" test "$status" = 201

# Authentication problems the document describes (hostile tokens are the auth tests' own,
# sent straight to the service).
api GET /v1/factories
check "no credential: 401 ($status)" test "$status" = 401
api GET /v1/factories -H 'X-Api-Key: tp_live_0000000000000000_0000'
check "a malformed key: 401 ($status)" test "$status" = 401
api GET /v1/factories -H 'Authorization: Bearer not.a.token'
check "a malformed token: 401 ($status)" test "$status" = 401
api DELETE "/v1/api-keys/$user_key_id" -H "$(key "$admin_key")"
check "a key is revoked: 204 ($status)" test "$status" = 204
api DELETE "/v1/api-keys/$user_key_id" -H "$(key "$admin_key")"
check "revoking it again: 204 ($status)" test "$status" = 204
api DELETE /v1/api-keys/zzzzzzzzzzzzzzzz -H "$(key "$admin_key")"
check "an unknown key id: 404 ($status)" test "$status" = 404
api DELETE /v1/api-keys/Not-A-Key-Id -H "$(key "$admin_key")"
check "a malformed key id: 404 ($status)" test "$status" = 404
api GET /v1/factories -H "$(key "$user_key")"
check "a revoked key: 401 ($status)" test "$status" = 401
api_direct GET /v1/factories
check "api_direct reaches the service itself (401, $status)" bash -c "[ $status = 401 ] && ! grep -qi '^sl-violations' '$work/headers'"

echo "# contract: $prism_exchanges exchanges checked, $prism_broken broke the contract"
e2e_stop tagproof-factory "$factory_pid"
e2e_done
