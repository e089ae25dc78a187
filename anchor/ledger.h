/*
 * ledger: where the log's signed checkpoints are anchored, behind one small interface — the
 * HTTP ledger of SPEC §7 (ledger_http.c) and any EVM chain over JSON-RPC (ledger_eth.c).
 * Every call blocks (libcurl easy handles): the anchor service calls them from its scheduler
 * thread, never from an event loop. Not thread-safe: one ledger per thread.
 *
 * The caller keeps an anchor's state in PostgreSQL and hands it back in struct ledger_ref, so
 * that after a crash an anchor is resumed, never sent twice: a ledger_ref is what the anchors
 * row records (ledger_ref, chain_id, block_number, block_hash, eth_nonce, eth_from_block).
 */
#ifndef TAGPROOF_LEDGER_H
#define TAGPROOF_LEDGER_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct ledger;

/* The checkpoint being anchored; borrowed for the call. */
struct ledger_checkpoint {
    const char *origin;
    uint64_t size;
    uint8_t root[32];
    const char *note; /* the signed note text */
};

/* What an anchors row records of its anchor on the ledger; -1 / "" where unknown. */
struct ledger_ref {
    char ref[128];        /* http: the ledger's entry id; ethereum: the transaction hash */
    int64_t chain_id;     /* ethereum */
    int64_t block_number; /* ethereum: the block holding the transaction */
    char block_hash[80];  /* ethereum: that block's hash, re-checked later */
    int64_t nonce;        /* ethereum: pinned before the transaction is sent */
    int64_t from_block;   /* ethereum: the chain head when the nonce was pinned */
};

void ledger_ref_init(struct ledger_ref *r);

enum ledger_status {
    LEDGER_OK,       /* done: sent (ref filled), or confirmed */
    LEDGER_WAIT,     /* on its way: not confirmed yet, or sent but not yet visible */
    LEDGER_GONE,     /* the ledger does not have it (never arrived, or a reorg dropped it) */
    LEDGER_STALE,    /* the pinned preparation no longer holds (nonce taken): prepare again */
    LEDGER_ERROR,    /* transient: unreachable, timed out, 5xx; try again later */
    LEDGER_REJECTED, /* permanent: refused (4xx, a reverted transaction, another chain) */
};

const char *ledger_status_str(enum ledger_status st);

/*
 * A ledger for cfg->ledger ("http" or "ethereum") at cfg->ledger_url. Makes no network call.
 * NULL with a message in err.
 */
struct ledger *ledger_new(const struct config *cfg, char *err, size_t errlen);
void ledger_free(struct ledger *l);

/* "http" or "ethereum", as the anchors table's ledger column names it. */
const char *ledger_name(const struct ledger *l);

/*
 * Whether ledger_submit needs ledger_prepare first: true for ethereum while ref->nonce < 0.
 * What prepare fills must be stored before ledger_submit is called.
 */
int ledger_needs_prepare(const struct ledger *l, const struct ledger_ref *ref);

/* Fills in ref what must be recorded before sending (ethereum: chain id, nonce, head). */
enum ledger_status ledger_prepare(struct ledger *l, struct ledger_ref *ref, char *err,
                                  size_t errlen);

/*
 * Sends the anchor, or finds the one sent before a crash (the same ref): LEDGER_OK with
 * ref->ref filled; LEDGER_WAIT (sent, not visible yet); LEDGER_STALE (prepare again);
 * LEDGER_ERROR or LEDGER_REJECTED with err.
 */
enum ledger_status ledger_submit(struct ledger *l, const struct ledger_checkpoint *cp,
                                 struct ledger_ref *ref, char *err, size_t errlen);

/*
 * Checks a sent anchor (ref->ref set), also one confirmed before (a reorg may have dropped
 * it): LEDGER_OK when confirmed (ethereum: block_number, block_hash and chain_id filled);
 * LEDGER_WAIT while waiting for it or for confirmations; LEDGER_GONE when the ledger no
 * longer has it (send again); LEDGER_ERROR; LEDGER_REJECTED (ethereum: status 0).
 */
enum ledger_status ledger_check(struct ledger *l, const struct ledger_checkpoint *cp,
                                struct ledger_ref *ref, char *err, size_t errlen);

#endif
