/*
 * proof: proof bundles (SPEC §7) — what GET /v1/proofs/{tag_id} serves, POST /v1/proofs/verify
 * and `tagproof verify` check — and the plan of a proof: which stored complete subtrees an
 * inclusion or consistency proof reads, so that a server fetches them in one query before it
 * computes. Pure C: no I/O (the callers fetch nodes, keys and ledger entries).
 *
 * A bundle is strict JSON: exactly the members below, hashes as 64 lower-case hex digits,
 * integers as JSON integers, no duplicate keys. Together with the checks this binds every
 * byte of a compact bundle: change any one and either the parser or a check refuses it.
 */
#ifndef TAGPROOF_PROOF_H
#define TAGPROOF_PROOF_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "merkle.h"
#include "note.h"
#include "uuid.h"

#define PROOF_BUNDLE_VERSION 1
#define PROOF_ORIGIN_MAX 255
#define PROOF_RECORD_MAX 4096
#define PROOF_NOTE_MAX 8192
#define PROOF_REF_MAX 128 /* a ledger's id of an anchor: a devledger id, "0x" + a tx hash */

/* The anchor block: where the bundle's checkpoint was anchored, as the log knew it. */
struct proof_anchor {
    char ledger[16];             /* "http" or "ethereum" */
    char status[16];             /* "pending", "submitted", "confirmed" or "failed" */
    char ref[PROOF_REF_MAX + 1]; /* "id" (http) or "tx" (ethereum); "" when not yet sent */
    int has_block, has_chain_id;
    int64_t block, chain_id; /* ethereum only, when known */
};

struct proof_bundle {
    char tag_id[UUID_STR_LEN + 1];
    uint64_t leaf_index;
    char *record; /* NUL-terminated; record_len bytes */
    size_t record_len;
    uint8_t leaf_hash[MERKLE_HASH_LEN];
    char origin[PROOF_ORIGIN_MAX + 1];
    uint64_t size;
    uint8_t root[MERKLE_HASH_LEN];
    char *note; /* the signed note text; note_len bytes */
    size_t note_len;
    size_t n_inclusion;
    uint8_t inclusion[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    int has_anchor; /* "anchor": null when no anchor of the checkpoint exists yet */
    struct proof_anchor anchor;
    char log_key[NOTE_VKEY_MAX + 1];
};

/* Frees a bundle from proof_bundle_parse / proof_bundle_from_json. NULL is fine. */
void proof_bundle_free(struct proof_bundle *b);

/*
 * Parses a bundle from JSON text: NULL with a one-line reason in err (err[0] == '\0' never).
 * *not_json (may be NULL) is set when the text is not JSON at all (400) rather than JSON
 * that is not a bundle (422). Caller frees.
 */
struct proof_bundle *proof_bundle_parse(const char *text, size_t len, int *not_json, char *err,
                                        size_t errlen);

/* The same from a parsed document (borrowed). */
struct proof_bundle *proof_bundle_from_json(const json_t *doc, char *err, size_t errlen);

/*
 * The bundle as compact JSON, members in the order of SPEC §7 — the exact bytes served and
 * cached. Caller frees; NULL when out of memory or the record or note is not UTF-8.
 */
char *proof_bundle_json(const struct proof_bundle *b);

/* The checks, by name, in the order they run and are printed. */
enum proof_check_id {
    PROOF_CHECK_RECORD,    /* the record is a tag registration naming tag_id */
    PROOF_CHECK_LEAF_HASH, /* leaf.hash = SHA-256(0x00 || record) */
    PROOF_CHECK_INCLUSION, /* the inclusion proof leads from the leaf to checkpoint.root */
    PROOF_CHECK_SIGNATURE, /* the note carries a valid signature by the trusted key */
    PROOF_CHECK_NOTE_BODY, /* the note's body says checkpoint.origin, .size and .root */
    PROOF_CHECK_LOG_KEY,   /* the bundle's log_key is the trusted key */
    PROOF_CHECK_COUNT,
};

struct proof_check {
    const char *name; /* static: "record", "leaf_hash", ... */
    int ok;
    char detail[256];
};

/* The static name of a check. */
const char *proof_check_name(enum proof_check_id id);

/*
 * Runs every check of a bundle on its own against the verifier key vkey (the one the
 * checker trusts, not the bundle's). out[PROOF_CHECK_COUNT] gets each result. Returns the
 * number of failed checks.
 */
int proof_bundle_check(struct merkle_hasher *h, const struct proof_bundle *b, const char *vkey,
                       struct proof_check out[PROOF_CHECK_COUNT]);

/*
 * The stored complete subtrees a proof reads: planned first (each node named, no hash),
 * then filled from the store, then the proof is computed from them. An inclusion or
 * consistency proof of a tree of up to 2^63 leaves reads fewer than PROOF_NODES_MAX.
 */
#define PROOF_NODES_MAX 192

struct proof_nodes {
    size_t n;
    struct {
        unsigned level;
        uint64_t idx;
        int have;
        uint8_t hash[MERKLE_HASH_LEN];
    } node[PROOF_NODES_MAX];
};

/*
 * Plans the nodes of the inclusion proof of leaf index in a tree of size leaves, and of the
 * consistency proof from old_size to size. 0, or -1 when the sizes make no proof
 * (index >= size; old_size 0 or above size).
 */
int proof_plan_inclusion(struct merkle_hasher *h, uint64_t index, uint64_t size,
                         struct proof_nodes *out);
int proof_plan_consistency(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                           struct proof_nodes *out);

/*
 * Gives a planned node its hash. 0, or -1 when (level, idx) was not planned or the hash is
 * not MERKLE_HASH_LEN bytes.
 */
int proof_nodes_set(struct proof_nodes *nodes, unsigned level, uint64_t idx, const uint8_t *hash,
                    size_t len);

/* True when every planned node has its hash. */
int proof_nodes_complete(const struct proof_nodes *nodes);

/*
 * SQL for the stored subtrees an inclusion proof of leaf M in a tree of N leaves can read (M
 * and N are SQL expressions, e.g. columns of the statement this is part of), as one text
 * value of "level idx hash-hex" lines, NULL when none: at each level l, the sibling of the
 * leaf's ancestor, (l, (M >> l) xor 1), when that subtree is complete within N; and the
 * subtrees that make up the tree's right edge, (l, (N >> l) - 1) for each bit l set in N, of
 * which a sibling range that is not a complete subtree is made. That is a superset of what
 * proof_plan_inclusion plans (at most 126 primary-key reads, about 40 for a million leaves),
 * so the leaf's own statement can bring its proof's nodes along (GET /v1/proofs).
 */
#define PROOF_NODES_SQL(M, N)                                                                      \
    "(SELECT string_agg(mn.level || ' ' || mn.idx || ' ' || encode(mn.hash, 'hex'), E'\\n')"       \
    " FROM (SELECT l::smallint, (" M " >> l) # 1 FROM generate_series(0, 62) l"                    \
    "   WHERE (" M " >> l) # 1 < " N " >> l"                                                       \
    "   UNION SELECT l::smallint, (" N " >> l) - 1 FROM generate_series(0, 62) l"                  \
    "   WHERE (" N " >> l) & 1 = 1) w(level, idx)"                                                 \
    " JOIN merkle_nodes mn USING (level, idx) WHERE " M " < " N ")"

/*
 * Fills a plan from PROOF_NODES_SQL's lines (NULL or "" for none); lines the plan does not
 * need are skipped. 0 when every planned node has its hash, -1 when one is missing or a line
 * is malformed.
 */
int proof_nodes_fill_lines(struct proof_nodes *nodes, const char *lines);

/*
 * The proofs, computed from filled nodes (the same sizes as planned). 0, or -1 when a node
 * is missing.
 */
int proof_inclusion(struct merkle_hasher *h, const struct proof_nodes *nodes, uint64_t index,
                    uint64_t size, uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n);
int proof_consistency(struct merkle_hasher *h, const struct proof_nodes *nodes, uint64_t old_size,
                      uint64_t size, uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n);

/* Lower-case hex of len bytes into out (2 * len + 1 bytes). */
void proof_hex(const uint8_t *p, size_t len, char *out);

/* Exactly 2 * len lower-case hex digits into out. 0 or -1. */
int proof_unhex(const char *s, uint8_t *out, size_t len);

#endif
