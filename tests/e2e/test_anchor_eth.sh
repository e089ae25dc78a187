#!/usr/bin/env bash
# tagproof-anchor against an EVM chain (ganache 7.9.2 from npm, pinned in tests/ganache, started
# by this test on a free port): anchors are transactions whose data is root || size (8 bytes,
# big-endian), confirmed after TAGPROOF_ETH_CONFIRMATIONS blocks with the block hash kept; a
# reorg (evm_snapshot / evm_revert) that drops a confirmed anchor's block makes it anchored
# again; a chain that stops answering for a while delays the anchor without losing it; kill -9
# between sending and recording leaves one transaction, found again by its pinned nonce.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/anchor_lib.sh"
e2e_env
account=0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1 # the first --wallet.deterministic account
ganache_install

chain_port=$(stack_free_port)
node "$ganache_cli" --wallet.deterministic \
  --server.host 127.0.0.1 --server.port "$chain_port" --logging.quiet >"$work/ganache.log" 2>&1 &
chain_pid=$!
pids+=("$chain_pid")
rpc() { curl -s --max-time 5 -XPOST -H 'content-type: application/json' "http://127.0.0.1:$chain_port" \
          -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":${2:-[]}}" | jq -c .result; }
for _ in $(seq 150); do [ "$(rpc eth_chainId 2>/dev/null)" = '"0x539"' ] && break; sleep 0.2; done
check "ganache answers (chain 1337)" test "$(rpc eth_chainId)" = '"0x539"'

export TAGPROOF_LEDGER=ethereum TAGPROOF_LEDGER_URL=http://127.0.0.1:$chain_port
export TAGPROOF_ETH_FROM=$account TAGPROOF_ETH_CONFIRMATIONS=2 TAGPROOF_ANCHOR_INTERVAL_S=1
anchor_db "anchor_eth_$$"

# The transaction data an anchor of checkpoint SIZE must carry.
data_of() { printf '0x%s%016x' "$(osql "SELECT encode(root, 'hex') FROM checkpoints WHERE size = $1")" "$1"; }
# How many transactions on the chain carry DATA.
txs_with() {
  local head n=0
  head=$(($(rpc eth_blockNumber | tr -d '"')))
  for b in $(seq 0 "$head"); do
    n=$((n + $(rpc eth_getBlockByNumber "[\"$(printf '0x%x' "$b")\", true]" |
      jq --arg d "$1" '[.transactions[] | select(.input == $d)] | length')))
  done
  echo "$n"
}
state_of() { osql "SELECT state FROM anchors WHERE checkpoint_size = $1"; }
# Sent and in a block, waiting for more confirmations: the moment to mine one more block.
in_block() { echo "SELECT state = 'submitted' AND block_number IS NOT NULL FROM anchors WHERE checkpoint_size = $1"; }
mine() { rpc evm_mine >/dev/null; }

# 1. The happy path: sent, one confirmation of two, then confirmed once another block is mined.
add_tags 5
start_anchor a
a_pid=$last_pid a_addr=$last_addr
check "the anchor of 5 is sent and waits for its second confirmation" wait_sql "$(in_block 5)" t 30
mine
check "…confirmed after one more block" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 5" confirmed 10
tx=$(osql "SELECT ledger_ref FROM anchors WHERE checkpoint_size = 5")
check "the transaction is from TAGPROOF_ETH_FROM to itself with data root || size" \
  test "$(rpc eth_getTransactionByHash "[\"$tx\"]" | jq -r '[.from, .to, .input] | join(" ")')" = \
       "$(echo "$account $account" | tr 'A-F' 'a-f') $(data_of 5)"
check "chain id, block number and block hash are recorded" \
  test "$(osql "SELECT chain_id || ' ' || block_hash FROM anchors WHERE checkpoint_size = 5")" = \
       "1337 $(rpc eth_getBlockByNumber "[\"$(printf '0x%x' "$(osql "SELECT block_number FROM anchors WHERE checkpoint_size = 5")")\", false]" | jq -r .hash)"
check "the nonce was pinned before sending" test "$(osql "SELECT eth_nonce FROM anchors WHERE checkpoint_size = 5")" = 0
check "one transaction carries the checkpoint" test "$(txs_with "$(data_of 5)")" = 1

# 2. A reorg drops the block of a confirmed anchor: it is sent again and confirmed again.
snap=$(rpc evm_snapshot | tr -d '"')
add_tags 3
check "the anchor of 8 is sent" wait_sql "$(in_block 8)" t 20
mine
check "…and confirmed" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 8" confirmed 10
old_attempts=$(osql "SELECT attempts FROM anchors WHERE checkpoint_size = 8")
check "evm_revert to before the anchor (a reorg)" test "$(rpc evm_revert "[\"$snap\"]")" = true
mine # the chain moves on without it
check "the vanished anchor of 8 is sent again" \
  wait_sql "SELECT attempts > $old_attempts AND block_number IS NOT NULL FROM anchors WHERE checkpoint_size = 8" t 20
mine
check "…and confirmed again" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 8" confirmed 20
mine
sleep 1.5
check "…in a block that is on the chain" \
  test "$(osql "SELECT block_hash FROM anchors WHERE checkpoint_size = 8")" = \
       "$(rpc eth_getBlockByNumber "[\"$(printf '0x%x' "$(osql "SELECT block_number FROM anchors WHERE checkpoint_size = 8")")\", false]" | jq -r .hash)"
check "…the log says why" grep -q 'anchor vanished from the ledger' "$work/a.log"
check "…one transaction on the chain carries it" test "$(txs_with "$(data_of 8)")" = 1
check "the anchor of 5 survived the reorg" test "$(state_of 5)" = confirmed

# 3. The chain stops answering for a while (SIGSTOP): the anchor waits, errors are counted; when
#    it answers again the anchor goes through.
kill -STOP "$chain_pid"
add_tags 2
check "while the chain is down the anchor of 10 fails with a timeout" \
  wait_sql "SELECT last_error LIKE '%imeout%' FROM anchors WHERE checkpoint_size = 10" t 40
check "metrics: ledger errors are counted" \
  bash -c "curl -fs http://$a_addr/metrics | grep -q '^tagproof_ledger_errors_total{ledger=\"ethereum\",call=\"prepare\"} [1-9]'"
lag=$(metric_of "$a_addr" tagproof_anchor_lag_seconds)
check "metrics: the anchoring lag shows ($lag s)" awk -v l="$lag" 'BEGIN { exit !(l > 1) }'
kill -CONT "$chain_pid"
check "the chain back: the anchor of 10 is sent" wait_sql "$(in_block 10)" t 40
mine
check "…and confirmed" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 10" confirmed 10
check "…once on the chain" test "$(txs_with "$(data_of 10)")" = 1
e2e_stop a "$a_pid"

# 4. kill -9 between eth_sendTransaction and recording its hash: the next leader finds the
#    transaction by the pinned nonce instead of sending it again.
add_tags 4
start_anchor c TAGPROOF_TEST_CRASH_AT=after_send
rc=0; e2e_wait_exit "$last_pid" 30 || rc=$?
check "crash right after sending (exit $rc)" test "$rc" = 137
check "…the row is pending with its nonce pinned and no hash" \
  test "$(osql "SELECT state || ' ' || (eth_nonce IS NOT NULL) || ' ' || (ledger_ref IS NULL) FROM anchors WHERE checkpoint_size = 14")" = "pending true true"
check "…while the chain has the transaction" test "$(txs_with "$(data_of 14)")" = 1
start_anchor d
d_pid=$last_pid d_addr=$last_addr
check "after a restart it is found and submitted" wait_sql "$(in_block 14)" t 20
mine
check "…and confirmed" wait_sql "SELECT state FROM anchors WHERE checkpoint_size = 14" confirmed 10
check "…still one transaction, the one recorded" \
  test "$(txs_with "$(data_of 14)") $(osql "SELECT ledger_ref FROM anchors WHERE checkpoint_size = 14")" = \
       "1 $(rpc eth_getBlockByNumber "[\"$(printf '0x%x' "$(osql "SELECT block_number FROM anchors WHERE checkpoint_size = 14")")\", true]" | jq -r --arg d "$(data_of 14)" '.transactions[] | select(.input == $d) | .hash')"
check "every leaf is covered by a confirmed anchor" \
  test "$(osql "SELECT max(checkpoint_size) FROM anchors WHERE state = 'confirmed'")" = "$(osql "SELECT count(*) FROM log_entries")"
check "metrics: no lag" test "$(metric_of "$d_addr" tagproof_anchor_lag_seconds)" = 0
e2e_stop d "$d_pid"
check "the crashed instance's log has no sanitizer report" bash -c "! grep -q Sanitizer '$work/c.log'"
kill -TERM "$chain_pid"
e2e_done
