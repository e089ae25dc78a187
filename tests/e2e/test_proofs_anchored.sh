#!/usr/bin/env bash
# Proofs of the whole stack (issue 5's end-to-end path): tags uploaded through the factory API
# with `tagproof upload`, appended, signed and anchored by tagproof-anchor on the dev ledger
# every 2 seconds; a tag's bundle, fetched once its anchor is confirmed, verifies with
# `tagproof verify` and with the independent Python verifier, ledger included, and any changed
# byte is refused by both; more tags make a second checkpoint, whose consistency proof from the
# first verifies independently, and POST /v1/proofs/verify finds the first bundle consistent
# with it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

verifier=$stack_root/tests/verifier
private_stack "proofs_anchored_e2e_$$_$RANDOM"
e2e_env
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
export TAGPROOF_ANCHOR_INTERVAL_S=2 TAGPROOF_LEDGER=http
export TAGPROOF_LEDGER_URL="http://$TAGPROOF_DEVLEDGER_LISTEN"

e2e_start tagproof-devledger
ledger_pid=$last_pid
check "tagproof-devledger is up" stack_wait_http "$TAGPROOF_LEDGER_URL/v1/health" 10
e2e_start tagproof-anchor
anchor_pid=$last_pid
factory_up
check "tagproof-factory is ready" curl -fs "$FACTORY_DIRECT_URL/v1/ready"

as "$admin_key" POST /v1/factories '{"name":"Anchored proofs"}'
fid=$(jq_body .id)
as "$admin_key" POST /v1/api-keys "{\"factory_id\":\"$fid\",\"role\":\"factory_user\",\"name\":\"e2e\"}"
user_key=$(jq_body .key)
as "$user_key" POST /v1/products '{"sku":"AP-1","name":"Anchored"}'
pid=$(jq_body .id)
as "$user_key" POST /v1/batches "{\"product_id\":\"$pid\",\"code\":\"AP-B1\"}"
batch=$(jq_body .id)

upload() { upload_tags "$1" "$2" "$user_key" "$batch"; }
# bundle_when_anchored TAG OUT — polls GET /v1/proofs/TAG until its anchor is confirmed.
bundle_when_anchored() {
  for _ in $(seq 1 150); do
    as "$admin_key" GET "/v1/proofs/$1"
    if [ "$status" = 200 ] && [ "$(jq_body .anchor.status)" = confirmed ]; then
      cp "$work/body" "$2"
      return 0
    fi
    sleep 0.2
  done
  echo "# no confirmed bundle for $1: $status $(body | head -c 300)" >&2
  return 1
}

if upload "$work/first.csv" 200; then ok "200 tags uploaded with tagproof upload"; else
  not_ok "tagproof upload failed: $(cat "$work/upload.out")"
fi
tag=$(sed -n 77p "$work/first.csv")
as "$admin_key" GET "/v1/proofs/$tag"
check "right after the upload the bundle is pending (202) or served (200)" bash -c "[ '$status' = 202 ] || [ '$status' = 200 ]"
check "the tag's bundle is served with a confirmed anchor within 30 s" bundle_when_anchored "$tag" "$work/bundle1.json"
as "$admin_key" GET /v1/log/key
vkey=$(body)
check "the log's key is the anchor service's (log_keys)" test -n "$vkey"
check "…and the bundle names it" jq -e --arg k "$vkey" '.log_key == $k and .anchor.ledger == "http" and (.anchor.id | length) > 0' "$work/bundle1.json"
while read -r line; do
  case $line in ok*) ok "${line#ok - }" ;; *) not_ok "${line#not ok - }" ;; esac
done < <("$verifier/check_bundle.sh" "$work/bundle1.json" "$vkey" "$bin/tagproof" "$TAGPROOF_LEDGER_URL")

# A second upload, a second checkpoint: consistent with the first.
size1=$(jq -r .checkpoint.size "$work/bundle1.json")
root1=$(jq -r .checkpoint.root "$work/bundle1.json")
if upload "$work/second.csv" 100; then ok "100 more tags uploaded"; else
  not_ok "the second upload failed: $(cat "$work/upload.out")"
fi
tag2=$(sed -n 50p "$work/second.csv")
check "the new tag's bundle is served with a confirmed anchor" bundle_when_anchored "$tag2" "$work/bundle2.json"
size2=$(jq -r .checkpoint.size "$work/bundle2.json")
root2=$(jq -r .checkpoint.root "$work/bundle2.json")
check "…in a newer checkpoint" test "$size2" -gt "$size1"
check "…which both verifiers accept, ledger included" bash -c "'$bin/tagproof' verify '$work/bundle2.json' --key '$vkey' --ledger-url '$TAGPROOF_LEDGER_URL' >/dev/null &&
  python3 '$verifier/verify_bundle.py' '$work/bundle2.json' --key '$vkey' --ledger-url '$TAGPROOF_LEDGER_URL' >/dev/null"
as "$admin_key" GET "/v1/log/consistency?from=$size1&to=$size2"
check "GET /v1/log/consistency from the first checkpoint to the second (200)" test "$status" = 200
if python3 "$verifier/verify_bundle.py" consistency --size1 "$size1" --size2 "$size2" \
  --root1 "$root1" --root2 "$root2" <"$work/body" >/dev/null; then
  ok "the independent verifier: the two checkpoints are consistent"
else not_ok "the two checkpoints are not consistent: $(body | head -c 300)"; fi
api POST /v1/proofs/verify -H "X-Api-Key: $admin_key" -H 'Content-Type: application/json' \
  --data-binary @"$work/bundle1.json"
check "POST /v1/proofs/verify: the first bundle is valid and consistent with the log's newest checkpoint" \
  jq -e 'all(.checks[]; .ok) and .valid == true and any(.checks[]; .name == "consistency" and (.detail | test("extends")))' "$work/body"
as "$admin_key" GET /v1/anchors
check "GET /v1/anchors lists the confirmed anchors of both checkpoints" jq -e --argjson a "$size1" --argjson b "$size2" \
  '[.items[] | select(.state == "confirmed") | .checkpoint_size] | (index($a) != null) and (index($b) != null)' "$work/body"

e2e_stop tagproof-factory "$factory_pid"
e2e_stop tagproof-anchor "$anchor_pid"
e2e_stop tagproof-devledger "$ledger_pid"
e2e_done
