/*
 * merkle_naive: MTH(D[a:b]) straight from RFC 9162 §2.1.1, recursively, over leaf hashes — the
 * reference the integration tests of the log's storage and proofs compare with. (The unit
 * test of shared/merkle keeps its own, which does not even share merkle_node_hash.)
 */
#ifndef TAGPROOF_MERKLE_NAIVE_H
#define TAGPROOF_MERKLE_NAIVE_H

#include <stdint.h>
#include <string.h>

#include "merkle.h"

static inline void ts_naive_mth(struct merkle_hasher *h, const uint8_t (*leaves)[MERKLE_HASH_LEN],
                                uint64_t a, uint64_t b, uint8_t out[MERKLE_HASH_LEN])
{
    if (b - a == 1) {
        memcpy(out, leaves[a], MERKLE_HASH_LEN);
        return;
    }
    uint64_t k = 1;
    while (k * 2 < b - a)
        k *= 2;
    uint8_t l[MERKLE_HASH_LEN], r[MERKLE_HASH_LEN];
    ts_naive_mth(h, leaves, a, a + k, l);
    ts_naive_mth(h, leaves, a + k, b, r);
    merkle_node_hash(h, l, r, out);
}

#endif
