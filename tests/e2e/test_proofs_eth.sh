#!/usr/bin/env bash
# Proof bundles anchored on Ethereum (SPEC §7), against a local ganache chain: a checkpoint of
# a signed log (tagproof-mklog) sent as a transaction whose data is root || size, the anchor
# recorded as tagproof-anchor records it; the bundle fetched through the factory API names
# the transaction, block and chain, and verifies with `tagproof verify --ledger-url` and with
# the independent verifier against the chain; any changed byte is refused by both; after a
# reorg that drops the transaction (evm_snapshot/evm_revert) both refuse it.
#
# ganache 7.9.2 comes from npm, pinned in tests/ganache and installed there once (as
# test_anchor_eth does; tests running side by side wait for one another's npm ci).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/factory_lib.sh"

: "${TAGPROOF_TEST_PG_DIR:?run the end-to-end tests through scripts/test}"
ganache_install
verifier=$stack_root/tests/verifier
mklog=$bin/../tests/tagproof-mklog
private_stack "proofs_eth_e2e_$$_$RANDOM"
e2e_env
export TAGPROOF_RATE_LIMIT_PER_MIN=100000 TAGPROOF_RATE_LIMIT_BURST=10000
owner_sql() { psql "$TAGPROOF_TEST_PG_OWNER_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }

chain_port=$(stack_free_port)
chain="http://127.0.0.1:$chain_port"
node "$ganache_cli" --wallet.deterministic --chain.chainId 1337 \
  --server.host 127.0.0.1 \
  --server.port "$chain_port" --logging.quiet >"$work/ganache.log" 2>&1 &
pids+=($!)
rpc() { # METHOD PARAMS_JSON → the result
  curl -fsS -XPOST -H 'Content-Type: application/json' "$chain" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":$2}" | jq -c .result
}
for _ in $(seq 1 100); do rpc eth_chainId '[]' >/dev/null 2>&1 && break; sleep 0.2; done
check "ganache answers on chain 1337" test "$(rpc eth_chainId '[]')" = '"0x539"'
factory_up

log=$("$mklog" --url "$TAGPROOF_TEST_PG_OWNER_URL" --key-file "$work/log.pem" --leaves 300 \
  --tags-out "$work/tags")
vkey=$(jq -r .vkey <<<"$log")
root=$(jq -r .root <<<"$log")
snapshot=$(rpc evm_snapshot '[]')
from=$(rpc eth_accounts '[]' | jq -r '.[0]')
tx=$(rpc eth_sendTransaction "[{\"from\":\"$from\",\"to\":\"$from\",\"gas\":\"0x30000\",\"data\":\"0x$root$(printf '%016x' 300)\"}]" | jq -r .)
receipt=$(rpc eth_getTransactionReceipt "[\"$tx\"]")
block=$(($(jq -r .blockNumber <<<"$receipt")))
check "the checkpoint's transaction is mined with status 1" jq -e '.status == "0x1"' <<<"$receipt"
owner_sql -c "INSERT INTO anchors (checkpoint_size, ledger, state, ledger_ref, chain_id, block_number, block_hash, submitted_at, confirmed_at)
  VALUES (300, 'ethereum', 'confirmed', '$tx', 1337, $block, '$(jq -r .blockHash <<<"$receipt")', now(), now())"

tag=$(awk 'NR == 123 {print $1}' "$work/tags")
api GET "/v1/proofs/$tag" -H "X-Api-Key: $admin_key"
check "the bundle is served (200)" test "$status" = 200
cp "$work/body" "$work/bundle.json"
check "…naming the transaction, its block and the chain" jq -e --arg tx "$tx" --argjson b "$block" \
  '.anchor == {ledger: "ethereum", status: "confirmed", tx: $tx, block: $b, chain_id: 1337}' "$work/bundle.json"
while read -r line; do
  case $line in ok*) ok "${line#ok - }" ;; *) not_ok "${line#not ok - }" ;; esac
done < <(CHECK_BUNDLE_CLI_EVERY=25 "$verifier/check_bundle.sh" "$work/bundle.json" "$vkey" "$bin/tagproof" "$chain")

for edit in '.anchor.block += 1' '.anchor.chain_id = 1' ; do
  jq -c "$edit" "$work/bundle.json" >"$work/edited.json"
  "$bin/tagproof" verify "$work/edited.json" --key "$vkey" --ledger-url "$chain" >"$work/out" 2>&1 && rc=0 || rc=$?
  check "$edit: tagproof verify fails the ledger check" bash -c "[ $rc = 1 ] && grep -q '^FAIL  ledger' '$work/out'"
done

# A reorg: the chain goes back before the transaction and grows without it.
check "evm_revert to before the transaction" test "$(rpc evm_revert "[$snapshot]")" = true
rpc evm_mine '[]' >/dev/null
rpc evm_mine '[]' >/dev/null
"$bin/tagproof" verify "$work/bundle.json" --key "$vkey" --ledger-url "$chain" >"$work/out" 2>&1 && rc=0 || rc=$?
check "after the reorg tagproof verify refuses the bundle" bash -c "[ $rc = 1 ] && grep -q '^FAIL  ledger' '$work/out'"
python3 "$verifier/verify_bundle.py" "$work/bundle.json" --key "$vkey" --ledger-url "$chain" >/dev/null 2>&1 && rc=0 || rc=$?
check "…and so does the independent verifier" test "$rc" = 1
check "…while the bundle still verifies without the ledger" "$bin/tagproof" verify "$work/bundle.json" --key "$vkey"

e2e_stop tagproof-factory "$factory_pid"
e2e_done
