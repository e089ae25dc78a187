/*
 * merkle: the 8-leaf test vectors published by transparency-dev/merkle (testonly/constants.go
 * and proof/verify_test.go: leaf inputs, subtree hashes, roots for sizes 0-8, inclusion and
 * consistency proofs), transcribed as values; then a cross-check of every root and proof for
 * every size up to 300 against a naive recursive implementation written from RFC 9162, and
 * the strictness of both verifiers.
 */
#include "support.h"

#include "merkle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct merkle_hasher *H;

static void unhex(const char *s, uint8_t *out, size_t *len)
{
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *len = n;
}

static const char *leaf_inputs[8] = {"",
                                     "00",
                                     "10",
                                     "2021",
                                     "3031",
                                     "40414243",
                                     "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f"};

static const char *roots[9] = {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                               "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                               "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                               "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                               "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                               "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                               "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                               "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

/* Complete subtree hashes of the 8-leaf tree: level, index, hash. */
static const struct {
    unsigned level;
    uint64_t index;
    const char *hash;
} nodes[] = {
    {0, 0, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"},
    {0, 1, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"},
    {0, 2, "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"},
    {0, 3, "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"},
    {0, 4, "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"},
    {0, 5, "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"},
    {0, 6, "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"},
    {0, 7, "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"},
    {1, 0, "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"},
    {1, 1, "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"},
    {1, 2, "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"},
    {1, 3, "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"},
    {2, 0, "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"},
    {2, 1, "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"},
    {3, 0, "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"},
};

/* Published proofs: (leaf index is 1-based in the source: transcribed 0-based here). */
static const struct {
    uint64_t index, size;
    const char *proof[3];
    size_t n;
} inclusion[] = {
    {0,
     8,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"},
     3},
    {5,
     8,
     {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"},
     3},
    {2, 3, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}, 1},
    {1,
     5,
     {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"},
     3},
};

static const struct {
    uint64_t size1, size2;
    const char *proof[3];
    size_t n;
} consistency[] = {
    {1, 1, {NULL}, 0},
    {1,
     8,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"},
     3},
    {6,
     8,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"},
     3},
    {2,
     5,
     {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"},
     2},
    {6,
     7,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"},
     3},
};

/* --- an in-memory store of complete subtrees, filled by the appender ------------------------ */

#define MAX_LEAVES 512

struct mem {
    uint8_t node[10][MAX_LEAVES][MERKLE_HASH_LEN];
    uint8_t have[10][MAX_LEAVES];
    unsigned reads;
};

static int mem_emit(void *arg, unsigned level, uint64_t index, const uint8_t hash[32])
{
    struct mem *m = arg;
    assert_true(level < 10 && index < MAX_LEAVES);
    assert_false(m->have[level][index]); /* every subtree is emitted exactly once */
    memcpy(m->node[level][index], hash, 32);
    m->have[level][index] = 1;
    return 0;
}

static int mem_get(void *arg, unsigned level, uint64_t index, uint8_t out[32])
{
    struct mem *m = arg;
    if (level >= 10 || index >= MAX_LEAVES || !m->have[level][index])
        return 7;
    m->reads++;
    memcpy(out, m->node[level][index], 32);
    return 0;
}

static void test_vectors(void **state)
{
    struct mem *m = calloc(1, sizeof(*m));
    struct merkle_frontier f;
    uint8_t in[32], want[32], got[32], proof[MERKLE_MAX_PROOF][32];
    size_t len, n;
    (void)state;

    merkle_frontier_init(&f);
    merkle_frontier_root(H, &f, got);
    unhex(roots[0], want, &len);
    assert_memory_equal(got, want, 32);
    for (unsigned i = 0; i < 8; i++) {
        unhex(leaf_inputs[i], in, &len);
        merkle_leaf_hash(H, in, len, got);
        assert_int_equal(merkle_frontier_append(H, &f, got, mem_emit, m), 0);
        merkle_frontier_root(H, &f, got);
        unhex(roots[i + 1], want, &len);
        assert_memory_equal(got, want, 32);
    }
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
        unhex(nodes[i].hash, want, &len);
        assert_true(m->have[nodes[i].level][nodes[i].index]);
        assert_memory_equal(m->node[nodes[i].level][nodes[i].index], want, 32);
    }
    for (uint64_t size = 0; size <= 8; size++) {
        assert_int_equal(merkle_root_at(H, size, mem_get, m, got), 0);
        unhex(roots[size], want, &len);
        assert_memory_equal(got, want, 32);
    }
    for (size_t t = 0; t < sizeof(inclusion) / sizeof(inclusion[0]); t++) {
        struct merkle_bytes pb[3], leaf, root;
        uint8_t ph[3][32], lh[32], rh[32];
        assert_int_equal(
            merkle_inclusion_proof(H, inclusion[t].index, inclusion[t].size, mem_get, m, proof, &n),
            0);
        assert_int_equal(n, inclusion[t].n);
        for (size_t i = 0; i < n; i++) {
            unhex(inclusion[t].proof[i], ph[i], &len);
            assert_memory_equal(proof[i], ph[i], 32);
            pb[i] = (struct merkle_bytes){ph[i], 32};
        }
        memcpy(lh, m->node[0][inclusion[t].index], 32);
        unhex(roots[inclusion[t].size], rh, &len);
        leaf = (struct merkle_bytes){lh, 32};
        root = (struct merkle_bytes){rh, 32};
        assert_int_equal(
            merkle_verify_inclusion(H, inclusion[t].index, inclusion[t].size, leaf, pb, n, root),
            0);
    }
    for (size_t t = 0; t < sizeof(consistency) / sizeof(consistency[0]); t++) {
        struct merkle_bytes pb[3];
        uint8_t ph[3][32], r1[32], r2[32];
        assert_int_equal(merkle_consistency_proof(H, consistency[t].size1, consistency[t].size2,
                                                  mem_get, m, proof, &n),
                         0);
        assert_int_equal(n, consistency[t].n);
        for (size_t i = 0; i < n; i++) {
            unhex(consistency[t].proof[i], ph[i], &len);
            assert_memory_equal(proof[i], ph[i], 32);
            pb[i] = (struct merkle_bytes){ph[i], 32};
        }
        unhex(roots[consistency[t].size1], r1, &len);
        unhex(roots[consistency[t].size2], r2, &len);
        assert_int_equal(merkle_verify_consistency(H, consistency[t].size1, consistency[t].size2,
                                                   (struct merkle_bytes){r1, 32},
                                                   (struct merkle_bytes){r2, 32}, pb, n),
                         0);
    }
    free(m);
}

/* --- a naive implementation straight from RFC 9162 §2.1, over the leaf hashes ------------ */

static uint64_t k_of(uint64_t n)
{
    uint64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    return k;
}

static void naive_mth(uint8_t (*leaves)[32], uint64_t n, uint8_t out[32])
{
    uint8_t l[32], r[32];
    if (n == 1) {
        memcpy(out, leaves[0], 32);
        return;
    }
    uint64_t k = k_of(n);
    naive_mth(leaves, k, l);
    naive_mth(leaves + k, n - k, r);
    merkle_node_hash(H, l, r, out);
}

static void naive_path(uint8_t (*leaves)[32], uint64_t m, uint64_t n, uint8_t (*out)[32],
                       size_t *len)
{
    if (n == 1)
        return;
    uint64_t k = k_of(n);
    if (m < k) {
        naive_path(leaves, m, k, out, len);
        naive_mth(leaves + k, n - k, out[(*len)++]);
    } else {
        naive_path(leaves + k, m - k, n - k, out, len);
        naive_mth(leaves, k, out[(*len)++]);
    }
}

static void naive_subproof(uint8_t (*leaves)[32], uint64_t m, uint64_t n, int b, uint8_t (*out)[32],
                           size_t *len)
{
    if (m == n) {
        if (!b)
            naive_mth(leaves, n, out[(*len)++]);
        return;
    }
    uint64_t k = k_of(n);
    if (m <= k) {
        naive_subproof(leaves, m, k, b, out, len);
        naive_mth(leaves + k, n - k, out[(*len)++]);
    } else {
        naive_subproof(leaves + k, m - k, n - k, 0, out, len);
        naive_mth(leaves, k, out[(*len)++]);
    }
}

static void to_bytes(uint8_t (*p)[32], size_t n, struct merkle_bytes *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (struct merkle_bytes){p[i], 32};
}

#define CROSS_MAX 300

static void test_cross_check(void **state)
{
    struct mem *m = calloc(1, sizeof(*m));
    uint8_t(*leaves)[32] = calloc(CROSS_MAX, 32);
    uint8_t(*roots_naive)[32] = calloc(CROSS_MAX + 1, 32);
    assert_non_null(m);
    assert_non_null(leaves);
    assert_non_null(roots_naive);
    struct merkle_frontier f;
    uint8_t got[32], proof[MERKLE_MAX_PROOF][32], want[MERKLE_MAX_PROOF][32];
    struct merkle_bytes pb[MERKLE_MAX_PROOF + 1];
    size_t n, wn;
    unsigned long proofs = 0;
    (void)state;

    merkle_frontier_init(&f);
    for (uint64_t i = 0; i < CROSS_MAX; i++) {
        char data[32];
        int len = snprintf(data, sizeof(data), "leaf %llu", (unsigned long long)i);
        merkle_leaf_hash(H, data, (size_t)len, leaves[i]);
        assert_int_equal(merkle_frontier_append(H, &f, leaves[i], mem_emit, m), 0);
        naive_mth(leaves, i + 1, roots_naive[i + 1]);
        merkle_frontier_root(H, &f, got);
        assert_memory_equal(got, roots_naive[i + 1], 32);
    }
    for (uint64_t size = 1; size <= CROSS_MAX; size++) {
        struct merkle_bytes root = {roots_naive[size], 32};
        assert_int_equal(merkle_root_at(H, size, mem_get, m, got), 0);
        assert_memory_equal(got, roots_naive[size], 32);
        for (uint64_t i = 0; i < size; i++) {
            struct merkle_bytes leaf = {leaves[i], 32};
            m->reads = 0;
            assert_int_equal(merkle_inclusion_proof(H, i, size, mem_get, m, proof, &n), 0);
            assert_true(m->reads <= 2 * 64); /* O(log n) stored hashes */
            wn = 0;
            naive_path(leaves, i, size, want, &wn);
            assert_int_equal(n, wn);
            assert_memory_equal(proof, want, n * 32);
            to_bytes(proof, n, pb);
            assert_int_equal(merkle_verify_inclusion(H, i, size, leaf, pb, n, root), 0);
            /*
             * Wrong index, a flipped bit, one hash too few or too many: refused. (A wrong size
             * is not always refused: the path of leaf 0 in a tree of 3 is also a valid path in
             * a tree of 4 with the same root value — what the root commits to is the leaves.)
             */
            assert_int_not_equal(merkle_verify_inclusion(H, i + 1, size, leaf, pb, n, root), 0);
            if (n > 0) {
                proof[n - 1][0] ^= 8;
                assert_int_not_equal(merkle_verify_inclusion(H, i, size, leaf, pb, n, root), 0);
                proof[n - 1][0] ^= 8;
                assert_int_not_equal(merkle_verify_inclusion(H, i, size, leaf, pb, n - 1, root), 0);
                pb[n] = pb[0];
                assert_int_not_equal(merkle_verify_inclusion(H, i, size, leaf, pb, n + 1, root), 0);
            }
            proofs++;
        }
        for (uint64_t old = 1; old <= size; old++) {
            struct merkle_bytes r1 = {roots_naive[old], 32};
            m->reads = 0;
            assert_int_equal(merkle_consistency_proof(H, old, size, mem_get, m, proof, &n), 0);
            assert_true(m->reads <= 2 * 64);
            wn = 0;
            naive_subproof(leaves, old, size, 1, want, &wn);
            assert_int_equal(n, wn);
            assert_memory_equal(proof, want, n * 32);
            to_bytes(proof, n, pb);
            assert_int_equal(merkle_verify_consistency(H, old, size, r1, root, pb, n), 0);
            if (old != size) /* swapped roots */
                assert_int_not_equal(merkle_verify_consistency(H, old, size, root, r1, pb, n), 0);
            if (n > 0) {
                assert_int_not_equal(merkle_verify_consistency(H, old, size, r1, root, pb, n - 1),
                                     0);
                pb[n] = pb[0];
                assert_int_not_equal(merkle_verify_consistency(H, old, size, r1, root, pb, n + 1),
                                     0);
            }
            proofs++;
        }
    }
    printf("# %lu proofs cross-checked against the naive implementation\n", proofs);
    free(leaves);
    free(roots_naive);
    free(m);
}

static void test_strictness(void **state)
{
    uint8_t leaf[32], root[32], h[32];
    struct merkle_bytes good = {leaf, 32}, r = {root, 32}, short_hash = {h, 31};
    struct merkle_bytes proof[1] = {{h, 32}};
    uint8_t p[MERKLE_MAX_PROOF][32];
    size_t n;
    (void)state;

    merkle_leaf_hash(H, "x", 1, leaf);
    memcpy(root, leaf, 32);
    memset(h, 0, sizeof(h));
    /* A one-leaf tree: the leaf is the root and the proof is empty. */
    assert_int_equal(merkle_verify_inclusion(H, 0, 1, good, NULL, 0, r), 0);
    assert_int_not_equal(merkle_verify_inclusion(H, 1, 1, good, NULL, 0, r), 0); /* index outside */
    assert_int_not_equal(merkle_verify_inclusion(H, 0, 0, good, NULL, 0, r), 0); /* empty tree */
    assert_int_not_equal(merkle_verify_inclusion(H, 0, 1, short_hash, NULL, 0, r), 0);
    assert_int_not_equal(merkle_verify_inclusion(H, 0, 1, good, NULL, 0, short_hash), 0);
    assert_int_not_equal(merkle_verify_inclusion(H, 0, 1, good, proof, 1, r), 0); /* too long */
    proof[0] = short_hash;
    assert_int_not_equal(merkle_verify_inclusion(H, 0, 2, good, proof, 1, r), 0); /* wrong length */
    /* Consistency: an old size of 0, or above the new size, fails; so does a bad length. */
    assert_int_not_equal(merkle_verify_consistency(H, 0, 1, r, r, NULL, 0), 0);
    assert_int_not_equal(merkle_verify_consistency(H, 2, 1, r, r, NULL, 0), 0);
    assert_int_equal(merkle_verify_consistency(H, 1, 1, r, r, NULL, 0), 0);
    assert_int_not_equal(merkle_verify_consistency(H, 1, 1, r, r, proof, 1), 0);
    assert_int_not_equal(merkle_verify_consistency(H, 1, 2, r, r, NULL, 0), 0); /* empty proof */
    assert_int_not_equal(merkle_verify_consistency(H, 1, 1, short_hash, short_hash, NULL, 0), 0);
    /* Proof generation refuses what has no proof. */
    assert_int_not_equal(merkle_inclusion_proof(H, 3, 3, mem_get, NULL, p, &n), 0);
    assert_int_not_equal(merkle_consistency_proof(H, 0, 3, mem_get, NULL, p, &n), 0);
    assert_int_not_equal(merkle_consistency_proof(H, 4, 3, mem_get, NULL, p, &n), 0);
}

static int group_setup(void **state)
{
    (void)state;
    H = merkle_hasher_new();
    return H == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    merkle_hasher_free(H);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_cross_check),
        cmocka_unit_test(test_strictness),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
