/*
 * proof: plans name exactly the stored subtrees a proof reads (every index and size up to
 * 130, every consistency pair up to 70, and the sizes of a huge log), a bundle survives its
 * own JSON unchanged and passes every check, any one changed byte of it is refused by the
 * parser or a check, and the parser's refusals of malformed bundles.
 */
#include "support.h"

#include "merkle.h"
#include "note.h"
#include "proof.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct merkle_hasher *hasher;

/* Every complete subtree of a tree of up to 256 leaves, by (level, index). */
struct mem_tree {
    uint64_t size;
    uint8_t node[9][256][MERKLE_HASH_LEN];
    uint64_t count[9];
};

static int mem_emit(void *arg, unsigned level, uint64_t index, const uint8_t hash[MERKLE_HASH_LEN])
{
    struct mem_tree *t = arg;
    assert_true(level < 9 && index < 256);
    memcpy(t->node[level][index], hash, MERKLE_HASH_LEN);
    if (index + 1 > t->count[level])
        t->count[level] = index + 1;
    return 0;
}

static int mem_get(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    struct mem_tree *t = arg;
    if (level >= 9 || index >= t->count[level])
        return -1;
    memcpy(out, t->node[level][index], MERKLE_HASH_LEN);
    return 0;
}

static struct mem_tree *mem_tree_new(uint64_t size, char recs[][256])
{
    struct mem_tree *t = calloc(1, sizeof(*t));
    struct merkle_frontier f;
    uint8_t leaf[MERKLE_HASH_LEN];

    assert_non_null(t);
    merkle_frontier_init(&f);
    for (uint64_t i = 0; i < size; i++) {
        char buf[32];
        const char *data = buf;
        if (recs != NULL)
            data = recs[i];
        else
            snprintf(buf, sizeof(buf), "leaf %llu", (unsigned long long)i);
        merkle_leaf_hash(hasher, data, strlen(data), leaf);
        assert_int_equal(merkle_frontier_append(hasher, &f, leaf, mem_emit, t), 0);
    }
    t->size = size;
    return t;
}

/* Fills a plan from the tree, as a server fills it from one query. */
static void fill(struct proof_nodes *nodes, struct mem_tree *t)
{
    for (size_t i = 0; i < nodes->n; i++) {
        uint8_t h[MERKLE_HASH_LEN];
        assert_int_equal(mem_get(t, nodes->node[i].level, nodes->node[i].idx, h), 0);
        assert_int_equal(proof_nodes_set(nodes, nodes->node[i].level, nodes->node[i].idx, h, 32),
                         0);
    }
    assert_true(proof_nodes_complete(nodes));
}

static unsigned bits(uint64_t n)
{
    unsigned b = 0;
    while (n) {
        b++;
        n >>= 1;
    }
    return b;
}

static void test_plan_inclusion(void **state)
{
    struct mem_tree *t = mem_tree_new(130, NULL);
    static struct proof_nodes nodes;
    uint8_t want[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], got[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    (void)state;

    for (uint64_t size = 1; size <= 130; size++) {
        for (uint64_t i = 0; i < size; i++) {
            size_t nw = 0, ng = 0;
            assert_int_equal(proof_plan_inclusion(hasher, i, size, &nodes), 0);
            /* O(log n): a path's siblings plus one split of the right edge. */
            assert_true(nodes.n <= 2 * bits(size));
            assert_false(size > 1 && proof_nodes_complete(&nodes));
            fill(&nodes, t);
            assert_int_equal(merkle_inclusion_proof(hasher, i, size, mem_get, t, want, &nw), 0);
            assert_int_equal(proof_inclusion(hasher, &nodes, i, size, got, &ng), 0);
            assert_int_equal(nw, ng);
            assert_memory_equal(want, got, nw * MERKLE_HASH_LEN);
        }
        assert_int_equal(proof_plan_inclusion(hasher, size, size, &nodes), -1);
    }
    free(t);
}

static void test_plan_consistency(void **state)
{
    struct mem_tree *t = mem_tree_new(70, NULL);
    static struct proof_nodes nodes;
    uint8_t want[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], got[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    (void)state;

    for (uint64_t size = 1; size <= 70; size++) {
        for (uint64_t m = 1; m <= size; m++) {
            size_t nw = 0, ng = 0;
            assert_int_equal(proof_plan_consistency(hasher, m, size, &nodes), 0);
            assert_true(nodes.n <= 2 * bits(size));
            fill(&nodes, t);
            assert_int_equal(merkle_consistency_proof(hasher, m, size, mem_get, t, want, &nw), 0);
            assert_int_equal(proof_consistency(hasher, &nodes, m, size, got, &ng), 0);
            assert_int_equal(nw, ng);
            assert_memory_equal(want, got, nw * MERKLE_HASH_LEN);
        }
        assert_int_equal(proof_plan_consistency(hasher, 0, size, &nodes), -1);
        assert_int_equal(proof_plan_consistency(hasher, size + 1, size, &nodes), -1);
    }
    free(t);
}

static void test_plan_huge(void **state)
{
    static struct proof_nodes nodes;
    const uint64_t max = UINT64_MAX >> 1;
    uint8_t p[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    size_t n;
    (void)state;

    /* A million leaves: about twenty reads. */
    assert_int_equal(proof_plan_inclusion(hasher, 765432, 1000000, &nodes), 0);
    assert_true(nodes.n >= 19 && nodes.n <= 40);
    /* The largest tree: still within the bound, for the worst indices. */
    for (uint64_t i = 0; i < 64; i++) {
        assert_int_equal(proof_plan_inclusion(hasher, max - 1 - i, max, &nodes), 0);
        assert_true(nodes.n < PROOF_NODES_MAX);
        assert_int_equal(proof_plan_inclusion(hasher, i, max, &nodes), 0);
        assert_true(nodes.n < PROOF_NODES_MAX);
        assert_int_equal(proof_plan_consistency(hasher, max - 1 - i, max, &nodes), 0);
        assert_true(nodes.n < PROOF_NODES_MAX);
    }
    /* A node never filled fails the computation instead of proving zeros. */
    assert_int_equal(proof_plan_inclusion(hasher, 3, 10, &nodes), 0);
    assert_int_equal(proof_inclusion(hasher, &nodes, 3, 10, p, &n), -1);
    uint8_t h[MERKLE_HASH_LEN] = {0};
    assert_int_equal(proof_nodes_set(&nodes, 40, 0, h, 32), -1);
    assert_int_equal(proof_nodes_set(&nodes, nodes.node[0].level, nodes.node[0].idx, h, 31), -1);
}

/* --- bundles ------------------------------------------------------------------------------ */

#define NLEAVES 13
static char records[NLEAVES][256];
static char tags[NLEAVES][UUID_STR_LEN + 1];
static struct mem_tree *tree;
static struct note_signer *signer;
static char *note;
static uint8_t root[MERKLE_HASH_LEN];

static int group_setup(void **state)
{
    uint8_t seed[32];
    (void)state;
    hasher = merkle_hasher_new();
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(7 * i + 1);
    signer = note_signer_from_seed("tagproof.test/log", seed);
    for (int i = 0; i < NLEAVES; i++) {
        snprintf(tags[i], sizeof(tags[i]), "7c9e6679-7425-40de-944b-e07fc1f90a%02x", i);
        snprintf(records[i], sizeof(records[i]),
                 "tagproof/tag/v1\n%.36s\n0190a0b0-0000-7000-8000-000000000001\n"
                 "0190a0b0-0000-7000-8000-000000000002\n0190a0b0-0000-7000-8000-000000000003\n"
                 "2026-11-22T10:00:%02dZ\n",
                 tags[i], i);
    }
    tree = mem_tree_new(NLEAVES, records);
    assert_int_equal(merkle_root_at(hasher, NLEAVES, mem_get, tree, root), 0);
    char *body = note_checkpoint_body("tagproof.test/log", NLEAVES, root);
    note = note_sign(signer, body, strlen(body));
    free(body);
    return hasher != NULL && signer != NULL && note != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    free(note);
    free(tree);
    note_signer_free(signer);
    merkle_hasher_free(hasher);
    return 0;
}

static struct proof_bundle *make_bundle(unsigned i)
{
    struct proof_bundle *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    snprintf(b->tag_id, sizeof(b->tag_id), "%s", tags[i]);
    b->leaf_index = i;
    b->record = strdup(records[i]);
    b->record_len = strlen(records[i]);
    merkle_leaf_hash(hasher, b->record, b->record_len, b->leaf_hash);
    snprintf(b->origin, sizeof(b->origin), "tagproof.test/log");
    b->size = NLEAVES;
    memcpy(b->root, root, sizeof(root));
    b->note = strdup(note);
    b->note_len = strlen(note);
    assert_int_equal(
        merkle_inclusion_proof(hasher, i, NLEAVES, mem_get, tree, b->inclusion, &b->n_inclusion),
        0);
    snprintf(b->log_key, sizeof(b->log_key), "%s", note_signer_vkey(signer));
    return b;
}

static void test_bundle_roundtrip(void **state)
{
    struct proof_check checks[PROOF_CHECK_COUNT];
    char err[256];
    (void)state;

    for (unsigned i = 0; i < NLEAVES; i++) {
        struct proof_bundle *b = make_bundle(i);
        if (i % 2 == 1) {
            b->has_anchor = 1;
            snprintf(b->anchor.ledger, sizeof(b->anchor.ledger), "%s",
                     i % 4 == 1 ? "http" : "ethereum");
            snprintf(b->anchor.status, sizeof(b->anchor.status), "confirmed");
            if (i % 4 == 1) {
                snprintf(b->anchor.ref, sizeof(b->anchor.ref), "%064x", i);
            } else {
                snprintf(b->anchor.ref, sizeof(b->anchor.ref), "0x%064x", i);
                b->anchor.has_block = b->anchor.has_chain_id = 1;
                b->anchor.block = 12;
                b->anchor.chain_id = 1337;
            }
        }
        char *json = proof_bundle_json(b);
        assert_non_null(json);
        int not_json = -1;
        struct proof_bundle *c =
            proof_bundle_parse(json, strlen(json), &not_json, err, sizeof(err));
        if (c == NULL)
            fail_msg("%s: %s", json, err);
        assert_int_equal(not_json, 0);
        char *again = proof_bundle_json(c);
        assert_string_equal(json, again);
        assert_int_equal(proof_bundle_check(hasher, c, note_signer_vkey(signer), checks), 0);
        for (int k = 0; k < PROOF_CHECK_COUNT; k++) {
            assert_true(checks[k].ok);
            assert_string_equal(checks[k].name, proof_check_name((enum proof_check_id)k));
        }
        /* The order and spelling of SPEC §7. */
        assert_true(strncmp(json, "{\"version\":1,\"tag_id\":\"", 22) == 0);
        assert_non_null(strstr(json, "\"leaf\":{\"index\":"));
        assert_non_null(
            strstr(json, "\"checkpoint\":{\"origin\":\"tagproof.test/log\",\"size\":13,"));
        assert_non_null(strstr(json, i % 2 ? "\"anchor\":{\"ledger\":" : "\"anchor\":null"));
        if (i % 4 == 3)
            assert_non_null(strstr(json, "\"block\":12,\"chain_id\":1337}"));
        /* Another key: the signature and the key check fail, nothing else. */
        assert_int_equal(proof_bundle_check(hasher, c, "other+01020304+AQ", checks), 3);
        assert_false(checks[PROOF_CHECK_SIGNATURE].ok);
        assert_false(checks[PROOF_CHECK_NOTE_BODY].ok);
        assert_false(checks[PROOF_CHECK_LOG_KEY].ok);
        free(again);
        free(json);
        proof_bundle_free(c);
        proof_bundle_free(b);
    }
}

/* Some other byte for position i: a digit for a digit, a letter for a letter, and others. */
static const char swaps[] = {'0', '1', '9', 'a', 'f', 'A', ' ', '"', '\\', '}', ',', 'x', '\n'};

static void test_bundle_any_byte(void **state)
{
    struct proof_check checks[PROOF_CHECK_COUNT];
    char err[256];
    size_t tried = 0;
    (void)state;

    for (unsigned i = 0; i < NLEAVES; i += NLEAVES - 1) {
        struct proof_bundle *b = make_bundle(i);
        char *json = proof_bundle_json(b);
        size_t len = strlen(json);
        char *mut = malloc(len + 1);
        assert_non_null(json);
        for (size_t pos = 0; pos < len; pos++) {
            for (size_t s = 0; s <= sizeof(swaps); s++) {
                char c = s < sizeof(swaps) ? swaps[s] : (char)(json[pos] ^ 0x01);
                if (c == json[pos])
                    continue;
                memcpy(mut, json, len + 1);
                mut[pos] = c;
                struct proof_bundle *m = proof_bundle_parse(mut, len, NULL, err, sizeof(err));
                tried++;
                if (m == NULL)
                    continue;
                if (proof_bundle_check(hasher, m, note_signer_vkey(signer), checks) == 0)
                    fail_msg("byte %zu changed to 0x%02x is accepted: %s", pos, (unsigned char)c,
                             mut);
                proof_bundle_free(m);
            }
        }
        free(mut);
        free(json);
        proof_bundle_free(b);
    }
    assert_true(tried > 10000);
}

static void refused(const char *json, const char *why_contains, int not_json_expected)
{
    char err[256];
    int not_json = -1;
    struct proof_bundle *b = proof_bundle_parse(json, strlen(json), &not_json, err, sizeof(err));
    if (b != NULL)
        fail_msg("accepted: %s", json);
    if (not_json != not_json_expected)
        fail_msg("%s: not_json %d (%s)", json, not_json, err);
    if (strstr(err, why_contains) == NULL)
        fail_msg("'%s' does not say '%s'", err, why_contains);
}

/* A valid bundle's JSON with one substring replaced. */
static char *edited(const char *from, const char *to)
{
    struct proof_bundle *b = make_bundle(2);
    char *json = proof_bundle_json(b), *out = NULL, *at;
    proof_bundle_free(b);
    at = strstr(json, from);
    assert_non_null(at);
    assert_true(asprintf(&out, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from)) > 0);
    free(json);
    return out;
}

static void test_bundle_refusals(void **state)
{
    (void)state;
    struct {
        const char *from, *to, *why;
    } cases[] = {
        {"\"version\":1", "\"version\":2", "version must be 1"},
        {"\"version\":1", "\"version\":1.0", "version must be an integer"},
        {"\"version\":1", "\"version\":true", "version must be an integer"},
        {"\"version\":1,", "", "no \"version\""},
        {"\"version\":1,", "\"version\":1,\"extra\":0,", "unknown member \"extra\""},
        {"\"tag_id\":\"7c", "\"tag_id\":\"7C", "lower-case UUID"},
        {"\"index\":2", "\"index\":-2", "leaf.index must be an integer"},
        {"\"index\":2", "\"index\":\"2\"", "leaf.index must be an integer"},
        {"\"hash\":\"", "\"hash\":\"A", "leaf.hash must be 64"},
        {"\"size\":13", "\"size\":0", "checkpoint.size must be an integer of at least 1"},
        {"\"origin\":\"", "\"origin\":\"two\\nlines", "one non-empty line"},
        {"\"inclusion\":[", "\"inclusion\":[\"00\",", "inclusion[0] must be"},
        {"\"inclusion\":[", "\"inclusion\":3,\"_\":[", "unknown member \"_\""},
        {"\"anchor\":null",
         "\"anchor\":{\"ledger\":\"http\",\"status\":\"confirmed\",\"tx\":\"0x00\"}",
         "unknown member \"tx\""},
        {"\"anchor\":null", "\"anchor\":{\"ledger\":\"btc\",\"status\":\"confirmed\"}",
         "anchor.ledger"},
        {"\"anchor\":null", "\"anchor\":{\"ledger\":\"http\",\"status\":\"done\"}",
         "anchor.status"},
        {"\"anchor\":null",
         "\"anchor\":{\"ledger\":\"http\",\"status\":\"confirmed\",\"id\":\"a/b\"}", "anchor.id"},
        {"\"anchor\":null",
         "\"anchor\":{\"ledger\":\"ethereum\",\"status\":\"confirmed\",\"tx\":\"0x12\"}",
         "anchor.tx"},
        {"\"anchor\":null",
         "\"anchor\":{\"ledger\":\"ethereum\",\"status\":\"confirmed\",\"block\":-1}",
         "anchor.block"},
        {"\"anchor\":null", "\"anchor\":[]", "anchor must be an object or null"},
        {"\"log_key\":\"", "\"log_key\":\"\",\"x\":\"", "unknown member"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *j = edited(cases[i].from, cases[i].to);
        refused(j, cases[i].why, 0);
        free(j);
    }
    char *dup = edited("\"version\":1,", "\"version\":1,\"version\":1,");
    refused(dup, "not JSON", 1);
    free(dup);
    /* A long name quoted in the reason is cut at a character, so the reason stays UTF-8. */
    {
        char member[128] = "\"version\":1,\"a", err[256];
        for (int i = 0; i < 30; i++)
            strcat(member, "\xc3\xa9");
        strcat(member, "\":0,");
        char *j = edited("\"version\":1,", member);
        assert_null(proof_bundle_parse(j, strlen(j), NULL, err, sizeof(err)));
        assert_non_null(strstr(err, "unknown member"));
        json_t *as_json = json_string(err);
        if (as_json == NULL)
            fail_msg("the reason is not UTF-8: %s", err);
        json_decref(as_json);
        free(j);
    }
    /* jansson refuses \u0000 unless asked to allow it: a NUL never reaches a check. */
    char *nul = edited("\"record\":\"tagproof", "\"record\":\"\\u0000tagproof");
    refused(nul, "not JSON", 1);
    free(nul);
    refused("", "not JSON", 1);
    refused("{", "not JSON", 1);
    refused("[1]", "must be an object", 0);
    refused("null", "not JSON", 1); /* jansson wants an object or array at the top */
    char *trailing = edited("\"log_key\"", "\"log_key\"");
    char *t2 = NULL;
    assert_true(asprintf(&t2, "%s x", trailing) > 0);
    refused(t2, "not JSON", 1);
    free(t2);
    free(trailing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_inclusion),  cmocka_unit_test(test_plan_consistency),
        cmocka_unit_test(test_plan_huge),       cmocka_unit_test(test_bundle_roundtrip),
        cmocka_unit_test(test_bundle_any_byte), cmocka_unit_test(test_bundle_refusals),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
