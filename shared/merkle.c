/*
 * merkle: RFC 9162 trees (see merkle.h). Proofs follow the RFC's recursive definitions over
 * leaf ranges; a range that is a complete, aligned subtree is read from the store, any other
 * is folded from the complete subtrees it splits into. Along one proof at most one sibling is
 * incomplete (the tree's right edge), so a proof reads O(log n) stored hashes.
 */
#include "merkle.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

struct merkle_hasher {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
};

struct merkle_hasher *merkle_hasher_new(void)
{
    struct merkle_hasher *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (h->md == NULL || h->ctx == NULL) {
        merkle_hasher_free(h);
        return NULL;
    }
    return h;
}

void merkle_hasher_free(struct merkle_hasher *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h);
}

static void digest2(struct merkle_hasher *h, uint8_t prefix, const void *a, size_t alen,
                    const void *b, size_t blen, uint8_t out[MERKLE_HASH_LEN])
{
    unsigned int n = 0;
    /* With a fetched algorithm and a reused context, none of these can fail short of memory
     * corruption; the result would then be a wrong hash, which verification catches. */
    EVP_DigestInit_ex2(h->ctx, h->md, NULL);
    EVP_DigestUpdate(h->ctx, &prefix, 1);
    if (alen > 0)
        EVP_DigestUpdate(h->ctx, a, alen);
    if (blen > 0)
        EVP_DigestUpdate(h->ctx, b, blen);
    EVP_DigestFinal_ex(h->ctx, out, &n);
}

void merkle_leaf_hash(struct merkle_hasher *h, const void *data, size_t len,
                      uint8_t out[MERKLE_HASH_LEN])
{
    digest2(h, 0x00, data, len, NULL, 0, out);
}

void merkle_node_hash(struct merkle_hasher *h, const uint8_t left[MERKLE_HASH_LEN],
                      const uint8_t right[MERKLE_HASH_LEN], uint8_t out[MERKLE_HASH_LEN])
{
    digest2(h, 0x01, left, MERKLE_HASH_LEN, right, MERKLE_HASH_LEN, out);
}

/* --- the appender ------------------------------------------------------------------------ */

void merkle_frontier_init(struct merkle_frontier *f)
{
    memset(f, 0, sizeof(*f));
}

int merkle_frontier_append(struct merkle_hasher *h, struct merkle_frontier *f,
                           const uint8_t leaf_hash[MERKLE_HASH_LEN], merkle_emit_fn emit, void *arg)
{
    uint8_t cur[MERKLE_HASH_LEN], next[MERKLE_HASH_LEN];
    uint64_t index = f->size;
    unsigned level = 0;
    int rc;

    if (f->size == UINT64_MAX >> 1)
        return -1;
    memcpy(cur, leaf_hash, MERKLE_HASH_LEN);
    if (emit != NULL && (rc = emit(arg, 0, index, cur)) != 0)
        return rc;
    /*
     * Each 1 bit at the bottom of the old size is a complete subtree on the edge that the new
     * leaf completes into a bigger one: merge upwards while that is so.
     */
    while ((f->size >> level) & 1) {
        merkle_node_hash(h, f->edge[level], cur, next);
        memcpy(cur, next, MERKLE_HASH_LEN);
        level++;
        index >>= 1;
        if (emit != NULL && (rc = emit(arg, level, index, cur)) != 0)
            return rc;
    }
    memcpy(f->edge[level], cur, MERKLE_HASH_LEN);
    f->size++;
    return 0;
}

void merkle_frontier_root(struct merkle_hasher *h, const struct merkle_frontier *f,
                          uint8_t out[MERKLE_HASH_LEN])
{
    uint8_t acc[MERKLE_HASH_LEN], next[MERKLE_HASH_LEN];
    int have = 0;

    if (f->size == 0) {
        unsigned int n = 0;
        EVP_DigestInit_ex2(h->ctx, h->md, NULL);
        EVP_DigestFinal_ex(h->ctx, out, &n);
        return;
    }
    /* The edge's subtrees, smallest (rightmost) first, folded as left siblings. */
    for (unsigned level = 0; level < MERKLE_MAX_PROOF; level++) {
        if (((f->size >> level) & 1) == 0)
            continue;
        if (!have) {
            memcpy(acc, f->edge[level], MERKLE_HASH_LEN);
            have = 1;
        } else {
            merkle_node_hash(h, f->edge[level], acc, next);
            memcpy(acc, next, MERKLE_HASH_LEN);
        }
    }
    memcpy(out, acc, MERKLE_HASH_LEN);
}

/* --- proofs from stored subtrees ---------------------------------------------------------- */

/* The largest power of two strictly below n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

static int is_pow2(uint64_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

static unsigned log2u(uint64_t n)
{
    unsigned l = 0;
    while (n >>= 1)
        l++;
    return l;
}

struct store {
    struct merkle_hasher *h;
    merkle_get_fn get;
    void *arg;
};

/* MTH(D[a:b]) for a range the RFC's recursion produces (a aligned to its left split). */
static int range_hash(const struct store *s, uint64_t a, uint64_t b, uint8_t out[MERKLE_HASH_LEN])
{
    uint64_t n = b - a, k;
    uint8_t l[MERKLE_HASH_LEN], r[MERKLE_HASH_LEN];
    int rc;

    if (is_pow2(n) && a % n == 0)
        return s->get(s->arg, log2u(n), a / n, out);
    k = split_point(n);
    if ((rc = range_hash(s, a, a + k, l)) != 0 || (rc = range_hash(s, a + k, b, r)) != 0)
        return rc;
    merkle_node_hash(s->h, l, r, out);
    return 0;
}

int merkle_root_at(struct merkle_hasher *h, uint64_t size, merkle_get_fn get, void *arg,
                   uint8_t out[MERKLE_HASH_LEN])
{
    struct store s = {h, get, arg};
    if (size == 0) {
        struct merkle_frontier empty;
        merkle_frontier_init(&empty);
        merkle_frontier_root(h, &empty, out);
        return 0;
    }
    return range_hash(&s, 0, size, out);
}

/* PATH(m, D[a:b]), appended bottom-up: the recursion's deepest sibling comes first. */
static int path(const struct store *s, uint64_t m, uint64_t a, uint64_t b,
                uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    uint64_t k;
    int rc;

    if (b - a == 1)
        return 0;
    k = split_point(b - a);
    if (m < a + k) {
        if ((rc = path(s, m, a, a + k, proof, n)) != 0)
            return rc;
        return range_hash(s, a + k, b, proof[(*n)++]);
    }
    if ((rc = path(s, m, a + k, b, proof, n)) != 0)
        return rc;
    return range_hash(s, a, a + k, proof[(*n)++]);
}

int merkle_inclusion_proof(struct merkle_hasher *h, uint64_t index, uint64_t size,
                           merkle_get_fn get, void *arg,
                           uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    struct store s = {h, get, arg};
    *n = 0;
    if (index >= size)
        return -1;
    return path(&s, index, 0, size, proof, n);
}

/* SUBPROOF(m, D[a:b], start) of RFC 9162 §2.1.4.1, with m counted from a. */
static int subproof(const struct store *s, uint64_t m, uint64_t a, uint64_t b, int start,
                    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    uint64_t k;
    int rc;

    if (m == b - a) {
        if (start)
            return 0;
        return range_hash(s, a, b, proof[(*n)++]);
    }
    k = split_point(b - a);
    if (m <= k) {
        if ((rc = subproof(s, m, a, a + k, start, proof, n)) != 0)
            return rc;
        return range_hash(s, a + k, b, proof[(*n)++]);
    }
    if ((rc = subproof(s, m - k, a + k, b, 0, proof, n)) != 0)
        return rc;
    return range_hash(s, a, a + k, proof[(*n)++]);
}

int merkle_consistency_proof(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                             merkle_get_fn get, void *arg,
                             uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    struct store s = {h, get, arg};
    *n = 0;
    if (old_size == 0 || old_size > size)
        return -1;
    return subproof(&s, old_size, 0, size, 1, proof, n);
}

/* --- verification ------------------------------------------------------------------------ */

static int hash_ok(struct merkle_bytes b)
{
    return b.p != NULL && b.len == MERKLE_HASH_LEN;
}

int merkle_verify_inclusion(struct merkle_hasher *h, uint64_t index, uint64_t size,
                            struct merkle_bytes leaf_hash, const struct merkle_bytes *proof,
                            size_t n, struct merkle_bytes root)
{
    uint8_t r[MERKLE_HASH_LEN], next[MERKLE_HASH_LEN];
    uint64_t fn = index, sn = size - 1;

    if (index >= size || !hash_ok(leaf_hash) || !hash_ok(root) || n > MERKLE_MAX_PROOF)
        return -1;
    memcpy(r, leaf_hash.p, MERKLE_HASH_LEN);
    /* RFC 9162 §2.1.3.2, step by step. */
    for (size_t i = 0; i < n; i++) {
        if (!hash_ok(proof[i]) || sn == 0)
            return -1;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(h, proof[i].p, r, next);
            if ((fn & 1) == 0) {
                do {
                    fn >>= 1;
                    sn >>= 1;
                } while ((fn & 1) == 0 && fn != 0);
            }
        } else {
            merkle_node_hash(h, r, proof[i].p, next);
        }
        memcpy(r, next, MERKLE_HASH_LEN);
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root.p, MERKLE_HASH_LEN) == 0 ? 0 : -1;
}

int merkle_verify_consistency(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                              struct merkle_bytes old_root, struct merkle_bytes root,
                              const struct merkle_bytes *proof, size_t n)
{
    uint8_t fr[MERKLE_HASH_LEN], sr[MERKLE_HASH_LEN], next[MERKLE_HASH_LEN];
    const struct merkle_bytes *p = proof;
    size_t left = n;
    uint64_t fn, sn;

    if (old_size == 0 || old_size > size || !hash_ok(old_root) || !hash_ok(root) ||
        n > MERKLE_MAX_PROOF)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!hash_ok(proof[i]))
            return -1;
    if (old_size == size) /* the same tree: no proof, the same root */
        return n == 0 && memcmp(old_root.p, root.p, MERKLE_HASH_LEN) == 0 ? 0 : -1;
    if (n == 0)
        return -1;
    /* RFC 9162 §2.1.4.2. */
    fn = old_size - 1;
    sn = size - 1;
    if (is_pow2(old_size)) {
        /* The old root is the first element of the path, not sent in the proof. */
        memcpy(fr, old_root.p, MERKLE_HASH_LEN);
        memcpy(sr, old_root.p, MERKLE_HASH_LEN);
    } else {
        memcpy(fr, p->p, MERKLE_HASH_LEN);
        memcpy(sr, p->p, MERKLE_HASH_LEN);
        p++;
        left--;
    }
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    for (; left > 0; left--, p++) {
        if (sn == 0)
            return -1;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(h, p->p, fr, next);
            memcpy(fr, next, MERKLE_HASH_LEN);
            merkle_node_hash(h, p->p, sr, next);
            memcpy(sr, next, MERKLE_HASH_LEN);
            if ((fn & 1) == 0) {
                do {
                    fn >>= 1;
                    sn >>= 1;
                } while ((fn & 1) == 0 && fn != 0);
            }
        } else {
            merkle_node_hash(h, sr, p->p, next);
            memcpy(sr, next, MERKLE_HASH_LEN);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(fr, old_root.p, MERKLE_HASH_LEN) == 0 &&
                   memcmp(sr, root.p, MERKLE_HASH_LEN) == 0
               ? 0
               : -1;
}
