/*
 * ledger_eth: anchoring to any EVM chain over JSON-RPC (SPEC §7). An anchor is a transaction
 * from TAGPROOF_ETH_FROM to itself whose data is root (32 bytes) || tree size (8 bytes,
 * big-endian), sent with eth_sendTransaction (the key is held by the node or by a signer such
 * as clef or web3signer). It is confirmed once its receipt has status 1 and
 * eth_blockNumber - receipt.blockNumber + 1 >= TAGPROOF_ETH_CONFIRMATIONS; the block hash is
 * kept and re-checked, and a transaction that vanished with its block (a reorg) is sent again.
 *
 * A transaction's hash is known only once eth_sendTransaction answers, so a crash between
 * sending and recording would leave nothing to look it up by. The nonce closes that gap: it is
 * pinned (and the chain head noted) in the anchors row before the transaction is sent with
 * exactly that nonce. At most one transaction with a given nonce is ever mined, so sending
 * again can never anchor twice; and before sending again, a nonce the account has already used
 * is looked up in the blocks since the noted head: our transaction (same data) is adopted, a
 * foreign one makes the pin stale. The account should be used for anchoring only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "ledger_impl.h"

#define ETH_GAS "0x7530"         /* 30,000: 21,000 + 16 a data byte, with room */
#define ETH_SCAN_MAX_BLOCKS 4096 /* how far back a nonce is looked for */

enum rpc_rc { RPC_OK = 0, RPC_TRANSPORT = -1, RPC_FAULT = -2 };

/* Calls method with params (taken); *result is a new reference to the result (may be null). */
static enum rpc_rc rpc(struct ledger *l, const char *method, json_t *params, json_t **result,
                       char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1, "method", method,
                            "params", params);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    char *answer = NULL;
    json_t *res = NULL;
    long status = 0;
    enum rpc_rc rc = RPC_TRANSPORT;

    *result = NULL;
    if (body == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (ledger_http_call(l, "POST", l->url, body, &status, &answer, err, errlen) != 0)
        goto done;
    res = json_loads(answer != NULL ? answer : "", 0, NULL);
    json_t *fault = json_object_get(res, "error");
    if (fault != NULL) {
        const char *msg = json_string_value(json_object_get(fault, "message"));
        snprintf(err, errlen, "%s: %.300s", method, msg != NULL ? msg : "error");
        rc = RPC_FAULT;
        goto done;
    }
    if (status != 200 || !json_is_object(res) || json_object_get(res, "result") == NULL) {
        snprintf(err, errlen, "%s: the node answered HTTP %ld without a result", method, status);
        goto done;
    }
    *result = json_incref(json_object_get(res, "result"));
    rc = RPC_OK;
done:
    json_decref(req);
    json_decref(res);
    free(body);
    free(answer);
    return rc;
}

/* "0x1a" -> 26; -1 when it is not a quantity. */
static int64_t quantity(json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || strncmp(s, "0x", 2) != 0 || s[2] == '\0' || strlen(s) > 2 + 15)
        return -1;
    char *end = NULL;
    long long n = strtoll(s + 2, &end, 16);
    return *end == '\0' ? (int64_t)n : -1;
}

/* Calls a method whose result is a quantity. */
static enum ledger_status rpc_quantity(struct ledger *l, const char *method, json_t *params,
                                       int64_t *out, char *err, size_t errlen)
{
    json_t *r = NULL;
    if (rpc(l, method, params, &r, err, errlen) != RPC_OK)
        return LEDGER_ERROR;
    *out = quantity(r);
    json_decref(r);
    if (*out < 0) {
        snprintf(err, errlen, "%s: the result is not a quantity", method);
        return LEDGER_ERROR;
    }
    return LEDGER_OK;
}

/* The node must serve the chain it served before (and the one the row was prepared on). */
static enum ledger_status check_chain(struct ledger *l, const struct ledger_ref *ref, char *err,
                                      size_t errlen)
{
    int64_t id = -1;
    enum ledger_status st = rpc_quantity(l, "eth_chainId", json_array(), &id, err, errlen);
    if (st != LEDGER_OK)
        return st;
    if (l->chain_id < 0)
        l->chain_id = id;
    if (id != l->chain_id || (ref->chain_id >= 0 && id != ref->chain_id)) {
        snprintf(err, errlen, "the node serves chain %" PRId64 ", not chain %" PRId64, id,
                 ref->chain_id >= 0 ? ref->chain_id : l->chain_id);
        return LEDGER_REJECTED;
    }
    return LEDGER_OK;
}

static void anchor_data(const struct ledger_checkpoint *cp, char out[2 + 80 + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t data[40];
    memcpy(data, cp->root, 32);
    for (int i = 0; i < 8; i++)
        data[32 + i] = (uint8_t)(cp->size >> (56 - 8 * i));
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 40; i++) {
        out[2 + 2 * i] = digits[data[i] >> 4];
        out[3 + 2 * i] = digits[data[i] & 15];
    }
    out[82] = '\0';
}

static json_t *hexq(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%" PRIx64, (uint64_t)v);
    return json_string(buf);
}

static int eth_needs_prepare(const struct ledger *l, const struct ledger_ref *ref)
{
    (void)l;
    return ref->nonce < 0;
}

static enum ledger_status eth_prepare(struct ledger *l, struct ledger_ref *ref, char *err,
                                      size_t errlen)
{
    int64_t nonce = -1, head = -1;
    enum ledger_status st = check_chain(l, ref, err, errlen);
    if (st != LEDGER_OK)
        return st;
    if ((st = rpc_quantity(l, "eth_getTransactionCount",
                           json_pack("[s, s]", l->eth_from, "pending"), &nonce, err, errlen)) !=
            LEDGER_OK ||
        (st = rpc_quantity(l, "eth_blockNumber", json_array(), &head, err, errlen)) != LEDGER_OK)
        return st;
    ref->chain_id = l->chain_id;
    ref->nonce = nonce;
    ref->from_block = head;
    ref->ref[0] = '\0';
    ref->block_number = -1;
    ref->block_hash[0] = '\0';
    return LEDGER_OK;
}

/*
 * Looks for the account's transaction with ref->nonce in the blocks from ref->from_block to
 * the head: LEDGER_OK (ours: ref->ref set), LEDGER_STALE (another transaction took the
 * nonce), LEDGER_WAIT (not in a block yet), LEDGER_ERROR.
 */
static enum ledger_status find_by_nonce(struct ledger *l, const char *data, struct ledger_ref *ref,
                                        char *err, size_t errlen)
{
    int64_t head = -1;
    enum ledger_status st = rpc_quantity(l, "eth_blockNumber", json_array(), &head, err, errlen);
    if (st != LEDGER_OK)
        return st;
    int64_t from = ref->from_block >= 0 ? ref->from_block : 0;
    if (head - from > ETH_SCAN_MAX_BLOCKS)
        from = head - ETH_SCAN_MAX_BLOCKS;
    for (int64_t b = from; b <= head; b++) {
        json_t *block = NULL;
        if (rpc(l, "eth_getBlockByNumber", json_pack("[o, b]", hexq(b), 1), &block, err, errlen) !=
            RPC_OK)
            return LEDGER_ERROR;
        json_t *txs = json_object_get(block, "transactions"), *tx;
        size_t i;
        json_array_foreach(txs, i, tx)
        {
            const char *from_addr = json_string_value(json_object_get(tx, "from"));
            if (from_addr == NULL || strcasecmp(from_addr, l->eth_from) != 0 ||
                quantity(json_object_get(tx, "nonce")) != ref->nonce)
                continue;
            const char *input = json_string_value(json_object_get(tx, "input"));
            const char *hash = json_string_value(json_object_get(tx, "hash"));
            if (input != NULL && strcasecmp(input, data) == 0 && hash != NULL &&
                strlen(hash) < sizeof(ref->ref)) {
                snprintf(ref->ref, sizeof(ref->ref), "%s", hash);
                st = LEDGER_OK;
            } else {
                snprintf(err, errlen, "nonce %" PRId64 " was used by another transaction",
                         ref->nonce);
                st = LEDGER_STALE;
            }
            json_decref(block);
            return st;
        }
        json_decref(block);
    }
    snprintf(err, errlen, "nonce %" PRId64 " is used but its transaction is not in a block yet",
             ref->nonce);
    return LEDGER_WAIT;
}

static enum ledger_status eth_submit(struct ledger *l, const struct ledger_checkpoint *cp,
                                     struct ledger_ref *ref, char *err, size_t errlen)
{
    char data[83];
    int64_t count = -1;
    json_t *hash = NULL;
    enum ledger_status st = check_chain(l, ref, err, errlen);
    if (st != LEDGER_OK)
        return st;
    if (ref->nonce < 0) {
        snprintf(err, errlen, "no nonce pinned");
        return LEDGER_STALE;
    }
    anchor_data(cp, data);
    if ((st = rpc_quantity(l, "eth_getTransactionCount",
                           json_pack("[s, s]", l->eth_from, "pending"), &count, err, errlen)) !=
        LEDGER_OK)
        return st;
    if (count > ref->nonce) /* sent before (a crash, a lost answer) or taken by another */
        return find_by_nonce(l, data, ref, err, errlen);
    if (count < ref->nonce) {
        snprintf(err, errlen, "the account's next nonce is %" PRId64 ", not %" PRId64, count,
                 ref->nonce);
        return LEDGER_STALE;
    }
    json_t *tx = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "from", l->eth_from, "to", l->eth_from,
                           "value", "0x0", "gas", ETH_GAS, "nonce", hexq(ref->nonce), "data", data);
    enum rpc_rc rc = rpc(l, "eth_sendTransaction", json_pack("[o]", tx), &hash, err, errlen);
    if (rc == RPC_FAULT && strcasestr(err, "nonce") != NULL)
        return LEDGER_STALE;
    if (rc != RPC_OK)
        return LEDGER_ERROR;
    const char *h = json_string_value(hash);
    if (h == NULL || strncmp(h, "0x", 2) != 0 || strlen(h) != 66) {
        snprintf(err, errlen, "eth_sendTransaction: the result is not a transaction hash");
        json_decref(hash);
        /* It may have been sent all the same: the nonce finds it next time. */
        return LEDGER_WAIT;
    }
    snprintf(ref->ref, sizeof(ref->ref), "%s", h);
    json_decref(hash);
    return LEDGER_OK;
}

static enum ledger_status eth_check(struct ledger *l, const struct ledger_checkpoint *cp,
                                    struct ledger_ref *ref, char *err, size_t errlen)
{
    json_t *receipt = NULL, *tx = NULL, *block = NULL;
    int64_t head = -1;
    enum ledger_status st = check_chain(l, ref, err, errlen);
    (void)cp;
    if (st != LEDGER_OK)
        return st;
    if (ref->ref[0] == '\0')
        return LEDGER_GONE;
    if (rpc(l, "eth_getTransactionReceipt", json_pack("[s]", ref->ref), &receipt, err, errlen) !=
        RPC_OK)
        return LEDGER_ERROR;
    if (json_is_null(receipt)) {
        /* Not mined (yet, or any more): in the node's pool, or gone altogether. */
        json_decref(receipt);
        if (rpc(l, "eth_getTransactionByHash", json_pack("[s]", ref->ref), &tx, err, errlen) !=
            RPC_OK)
            return LEDGER_ERROR;
        st = json_is_null(tx) ? LEDGER_GONE : LEDGER_WAIT;
        json_decref(tx);
        snprintf(err, errlen, "transaction %s is %s", ref->ref,
                 st == LEDGER_GONE ? "unknown to the node" : "not mined yet");
        return st;
    }
    int64_t status = quantity(json_object_get(receipt, "status"));
    int64_t bn = quantity(json_object_get(receipt, "blockNumber"));
    const char *bh = json_string_value(json_object_get(receipt, "blockHash"));
    if (status == 0) {
        snprintf(err, errlen, "transaction %s was reverted (status 0)", ref->ref);
        st = LEDGER_REJECTED;
        goto done;
    }
    if (status != 1 || bn < 0 || bh == NULL || strlen(bh) >= sizeof(ref->block_hash)) {
        snprintf(err, errlen, "the receipt of %s is malformed", ref->ref);
        st = LEDGER_ERROR;
        goto done;
    }
    if ((st = rpc_quantity(l, "eth_blockNumber", json_array(), &head, err, errlen)) != LEDGER_OK)
        goto done;
    /* The receipt's block must be the chain's block at that height now. */
    if (rpc(l, "eth_getBlockByNumber", json_pack("[o, b]", hexq(bn), 0), &block, err, errlen) !=
        RPC_OK) {
        st = LEDGER_ERROR;
        goto done;
    }
    const char *canonical = json_string_value(json_object_get(block, "hash"));
    if (canonical == NULL || strcasecmp(canonical, bh) != 0) {
        snprintf(err, errlen, "block %" PRId64 " of %s is no longer on the chain", bn, ref->ref);
        st = LEDGER_WAIT;
        goto done;
    }
    ref->chain_id = l->chain_id;
    ref->block_number = bn;
    snprintf(ref->block_hash, sizeof(ref->block_hash), "%s", bh);
    if (head - bn + 1 < l->confirmations) {
        snprintf(err, errlen, "%" PRId64 " of %d confirmations", head - bn + 1, l->confirmations);
        st = LEDGER_WAIT;
        goto done;
    }
    st = LEDGER_OK;
done:
    json_decref(receipt);
    json_decref(block);
    return st;
}

const struct ledger_ops ledger_eth_ops = {
    .name = "ethereum",
    .needs_prepare = eth_needs_prepare,
    .prepare = eth_prepare,
    .submit = eth_submit,
    .check = eth_check,
};
