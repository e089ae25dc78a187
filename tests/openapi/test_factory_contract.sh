#!/usr/bin/env bash
# The factory API's answers against docs/openapi.yaml, through the Prism proxy: every
# endpoint the service has, with its success answers and the problems a client meets most
# (400, 401, 403, 404, 409, 415, 422), each exchange checked by prism_lib.sh's verdict.
# The other factory tests check behaviour; this one walks the document's operations.
. "$(dirname "$0")/../e2e/lib.sh"
. "$(dirname "$0")/../e2e/factory_lib.sh"
e2e_env
export FACTORY_PRISM=1
# Limits out of the way: this test counts answers, not requests (the auth tests do that).
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000 TAGPROOF_AUTH_FAIL_PER_MIN=100000
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

# The catalogue, uploads, tags, statistics and recalls — when this build has them (their
# branches land separately): a route the build lacks is the HTTP layer's 404.
# has_route METHOD PATH — the service knows the route.
has_route() {
  api_direct "$1" "$2" -H "$(key "$admin_key")"
  ! { [ "$status" = 404 ] && grep -q 'no resource at this path' "$work/body"; }
}
uploads=0
has_route GET "/v1/uploads/$(cat /proc/sys/kernel/random/uuid)" && uploads=1
if ! has_route GET /v1/products; then
  ok "# SKIP the catalogue and uploads: not in this build"
else
  api POST /v1/api-keys -H "$(key "$admin_key")" "${json[@]}" \
    --data-binary "{\"factory_id\": \"$factory\", \"role\": \"factory_user\"}"
  user2=$(jq_body .key)
  api POST /v1/api-keys -H "$(key "$user2")" "${json[@]}" --data-binary '{"role": "viewer"}'
  viewer2=$(jq_body .key)
  api POST /v1/products -H "$(key "$user2")" "${json[@]}" --data-binary '{"sku": "TS-42", "name": "Trail Shoe"}'
  check "a product is created: 201 ($status)" test "$status" = 201
  product=$(jq_body .id)
  api POST /v1/products -H "$(key "$user2")" "${json[@]}" --data-binary '{"sku": "TS-42", "name": "Again"}'
  check "the same SKU again: 409 ($status)" test "$status" = 409
  api POST /v1/products -H "$(key "$viewer2")" "${json[@]}" --data-binary '{"sku": "V", "name": "V"}'
  check "a viewer creates no product: 403 ($status)" test "$status" = 403
  api GET "/v1/products/$product" -H "$(key "$viewer2")"
  check "a product is read: 200 ($status)" test "$status" = 200
  api GET "/v1/products/$(cat /proc/sys/kernel/random/uuid)" -H "$(key "$viewer2")"
  check "an unknown product: 404 ($status)" test "$status" = 404
  api GET /v1/products/not-a-uuid -H "$(key "$viewer2")"
  check "a product id that is not a UUID: 400 ($status)" test "$status" = 400
  api GET "/v1/products?factory_id=$factory&limit=10" -H "$(key "$admin_key")"
  check "an admin lists one factory's products ($status)" jq -e '(.items | length) == 1' "$work/body"
  api POST /v1/batches -H "$(key "$user2")" "${json[@]}" --data-binary "{\"product_id\": \"$product\", \"code\": \"B-1\"}"
  check "a batch is created: 201 ($status)" test "$status" = 201
  batch=$(jq_body .id)
  api POST /v1/batches -H "$(key "$user2")" "${json[@]}" --data-binary '{"product_id": 42, "code": "B-2"}'
  check "a product_id that is not a UUID: 422 ($status)" test "$status" = 422
  api GET "/v1/batches?product_id=$product" -H "$(key "$viewer2")"
  check "batches are listed by product: 200 ($status)" jq -e '(.items | length) == 1' "$work/body"
  api GET "/v1/batches/$batch" -H "$(key "$viewer2")"
  check "a batch is read with its product: 200 ($status)" jq -e '.product.sku == "TS-42"' "$work/body"

  tags=0
  if [ "$uploads" = 0 ]; then
    ok "# SKIP uploads: not in this build"
  else
  tags=3
  t1=$(cat /proc/sys/kernel/random/uuid)
  t2=$(cat /proc/sys/kernel/random/uuid)
  printf 'tag_id,serial\n%s,SN-1\n%s,SN-2\n' "$t1" "$t2" >"$work/tags.csv"
  printf 'tag_id\nnot-a-uuid\n%s\n' "$(cat /proc/sys/kernel/random/uuid)" >"$work/bad.csv"
  csv=(-H 'Content-Type: text/csv')
  api POST "/v1/batches/$batch/tags" -H "$(key "$user2")" "${csv[@]}" -H 'Idempotency-Key: contract-1' \
    --data-binary @"$work/tags.csv"
  check "an upload is accepted: 202 with a Location ($status)" bash -c "[ $status = 202 ] && grep -qi '^location: /v1/uploads/' '$work/headers'"
  upload=$(jq_body .id)
  for _ in $(seq 1 100); do
    api GET "/v1/uploads/$upload" -H "$(key "$viewer2")"
    [ "$(jq_body .status)" = processing ] || [ "$(jq_body .status)" = queued ] || break
    sleep 0.1
  done
  check "the upload completes with 2 tags ($(jq_body .status))" jq -e '.status == "completed" and .rows_accepted == 2' "$work/body"
  api POST "/v1/batches/$batch/tags" -H "$(key "$user2")" "${csv[@]}" -H 'Idempotency-Key: contract-1' \
    --data-binary @"$work/tags.csv"
  check "the same key and body again: the same upload, replayed ($status)" \
    bash -c "[ $status = 202 ] && grep -qi '^idempotent-replayed: true' '$work/headers' && [ \"\$(jq -r .id '$work/body')\" = $upload ]"
  api POST "/v1/batches/$batch/tags" -H "$(key "$user2")" "${csv[@]}" -H 'Idempotency-Key: contract-1' \
    --data-binary @"$work/bad.csv"
  check "the same key with another body: 422 ($status)" test "$status" = 422
  api POST "/v1/batches/$batch/tags?mode=skip-invalid" -H "$(key "$user2")" "${csv[@]}" --data-binary @"$work/bad.csv"
  bad_upload=$(jq_body .id)
  for _ in $(seq 1 100); do
    api GET "/v1/uploads/$bad_upload" -H "$(key "$user2")"
    [ "$(jq_body .status)" = processing ] || [ "$(jq_body .status)" = queued ] || break
    sleep 0.1
  done
  check "skip-invalid imports the good row and reports the bad one by line" \
    jq -e '.status == "completed" and .rows_accepted == 1 and .rows_rejected == 1 and .errors[0].line == 2' "$work/body"
  api POST "/v1/batches/$batch/tags?mode=everything" -H "$(key "$user2")" "${csv[@]}" --data-binary @"$work/tags.csv"
  check "an unknown mode: 400 ($status)" test "$status" = 400
  api POST "/v1/batches/$batch/tags" -H "$(key "$user2")" -H 'Content-Type: application/json' --data-binary '{}'
  check "a JSON body: 415 ($status)" test "$status" = 415
  api POST "/v1/batches/$batch/tags" -H "$(key "$viewer2")" "${csv[@]}" --data-binary @"$work/tags.csv"
  check "a viewer uploads nothing: 403 ($status)" test "$status" = 403
  api GET "/v1/uploads/$(cat /proc/sys/kernel/random/uuid)" -H "$(key "$user2")"
  check "an unknown upload: 404 ($status)" test "$status" = 404
  api GET "/v1/tags/$t1" -H "$(key "$viewer2")"
  check "a registered tag is read with its anchoring stage ($status)" jq -e '.serial == "SN-1" and .anchor.status == "pending"' "$work/body"
  fi

  api GET "/v1/tags/$(cat /proc/sys/kernel/random/uuid)" -H "$(key "$viewer2")"
  check "an unknown tag: 404 ($status)" test "$status" = 404
  api GET "/v1/batches/$batch/stats" -H "$(key "$viewer2")"
  check "a batch's statistics: 200, $tags tags ($status)" jq -e --argjson n "$tags" '.tags == $n and (.scans_per_day | length) == 30' "$work/body"
  api POST "/v1/batches/$batch/revoke" -H "$(key "$viewer2")"
  check "a viewer recalls nothing: 403 ($status)" test "$status" = 403
  api POST "/v1/batches/$batch/revoke" -H "$(key "$user2")"
  check "a batch is recalled: 200, first ($status)" jq -e '.recall.first == true and .revoked_at != null' "$work/body"
  api POST "/v1/batches/$batch/revoke" -H "$(key "$user2")"
  check "recalled again: 200, not first ($status)" jq -e '.recall.first == false and .recall.log_entry_id == null' "$work/body"
  if [ "$uploads" = 1 ]; then
    api POST "/v1/batches/$batch/tags" -H "$(key "$user2")" "${csv[@]}" --data-binary @"$work/tags.csv"
    check "a recalled batch takes no tags: 409 ($status)" test "$status" = 409
  fi
fi

echo "# contract: $prism_exchanges exchanges checked, $prism_broken broke the contract"
e2e_stop tagproof-factory "$factory_pid"
e2e_done
