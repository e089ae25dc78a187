/*
 * merkle: RFC 9162 Merkle tree math — leaf and node hashing, an incremental appender that
 * hands out the hash of every complete subtree as it forms, root, inclusion and consistency
 * proofs computed from those stored subtree hashes, and strict verification of both proofs.
 * No I/O: the caller stores the subtree hashes (PostgreSQL, memory) and reads them back
 * through a callback.
 *
 * A complete subtree is named by (level, index): it covers leaves
 * [index * 2^level, (index + 1) * 2^level). Any root or proof for any tree size needs
 * O(log n) of them.
 */
#ifndef TAGPROOF_MERKLE_H
#define TAGPROOF_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_LEN 32
#define MERKLE_MAX_PROOF 64 /* hashes in a proof of a tree of at most 2^63 leaves */

/*
 * A reusable SHA-256 context: OpenSSL 3 looks the algorithm up on every one-shot call, which
 * halves the throughput on short inputs. One per thread.
 */
struct merkle_hasher;

struct merkle_hasher *merkle_hasher_new(void);
void merkle_hasher_free(struct merkle_hasher *h);

/* SHA-256(0x00 || data) */
void merkle_leaf_hash(struct merkle_hasher *h, const void *data, size_t len,
                      uint8_t out[MERKLE_HASH_LEN]);
/* SHA-256(0x01 || left || right) */
void merkle_node_hash(struct merkle_hasher *h, const uint8_t left[MERKLE_HASH_LEN],
                      const uint8_t right[MERKLE_HASH_LEN], uint8_t out[MERKLE_HASH_LEN]);

/*
 * The appender: the right edge of the tree (at most 64 hashes), enough to add leaves and to
 * compute the root of the tree so far. Plain data: copy it, store it, restore it.
 */
struct merkle_frontier {
    uint64_t size; /* leaves appended */
    uint8_t edge[MERKLE_MAX_PROOF]
                [MERKLE_HASH_LEN]; /* edge[level]: set where bit level of size is 1 */
};

/* Called for each complete subtree formed by an append, leaves (level 0) included. */
typedef int (*merkle_emit_fn)(void *arg, unsigned level, uint64_t index,
                              const uint8_t hash[MERKLE_HASH_LEN]);

void merkle_frontier_init(struct merkle_frontier *f);

/*
 * Appends a leaf by its hash; emit (may be NULL) gets the leaf and every subtree it
 * completes, lowest first. Returns 0, or the first non-zero value emit returned (the
 * frontier is then unchanged), or -1 when the tree is full.
 */
int merkle_frontier_append(struct merkle_hasher *h, struct merkle_frontier *f,
                           const uint8_t leaf_hash[MERKLE_HASH_LEN], merkle_emit_fn emit,
                           void *arg);

/* The root of the tree so far; the empty tree's root is SHA-256 of nothing. */
void merkle_frontier_root(struct merkle_hasher *h, const struct merkle_frontier *f,
                          uint8_t out[MERKLE_HASH_LEN]);

/*
 * Reads a stored complete subtree hash; 0, or non-zero when it is missing (the proof or
 * root call then fails with that value).
 */
typedef int (*merkle_get_fn)(void *arg, unsigned level, uint64_t index,
                             uint8_t out[MERKLE_HASH_LEN]);

/* The root of the first size leaves, from stored subtrees. 0 or the getter's failure. */
int merkle_root_at(struct merkle_hasher *h, uint64_t size, merkle_get_fn get, void *arg,
                   uint8_t out[MERKLE_HASH_LEN]);

/*
 * The inclusion proof of leaf index in the tree of size leaves (RFC 9162 §2.1.3.1), into
 * proof[*n]. -1 when index >= size, else 0 or the getter's failure.
 */
int merkle_inclusion_proof(struct merkle_hasher *h, uint64_t index, uint64_t size,
                           merkle_get_fn get, void *arg,
                           uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n);

/*
 * The consistency proof from old_size to size (RFC 9162 §2.1.4.1). -1 unless
 * 0 < old_size <= size, else 0 or the getter's failure.
 */
int merkle_consistency_proof(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                             merkle_get_fn get, void *arg,
                             uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n);

/*
 * Verification (RFC 9162 §2.1.3.2 and §2.1.4.2), strict: an index outside the tree, an old
 * size of 0 or above the new size, a proof with too many or too few hashes, all fail. Hashes
 * are given as (pointer, length) so that a wrong length is refused rather than read past.
 * 0 when the proof holds, -1 when not.
 */
struct merkle_bytes {
    const uint8_t *p;
    size_t len;
};

int merkle_verify_inclusion(struct merkle_hasher *h, uint64_t index, uint64_t size,
                            struct merkle_bytes leaf_hash, const struct merkle_bytes *proof,
                            size_t n, struct merkle_bytes root);

int merkle_verify_consistency(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                              struct merkle_bytes old_root, struct merkle_bytes root,
                              const struct merkle_bytes *proof, size_t n);

#endif
