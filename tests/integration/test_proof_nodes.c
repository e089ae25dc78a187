/*
 * test_proof_nodes: PROOF_NODES_SQL, the subtrees that GET /v1/proofs reads with the leaf's own
 * statement, against the planner (proof_plan_inclusion) and the RFC 9162 definition. The
 * complete subtrees of a 1,000-leaf log go into a temporary merkle_nodes (it shadows the
 * shared test database's table for this session only); then for every leaf of every size up
 * to 64, every leaf of size 1,000 and 400 random pairs, the SQL's lines complete the plan,
 * and the proof computed from them verifies against the naive root.
 */
#include "support.h"
#include "pq_sync.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merkle.h"
#include "merkle_naive.h"
#include "proof.h"

#define LEAVES 1000

static uint8_t leaves[LEAVES][MERKLE_HASH_LEN];

/* MTH(D[a:b]) of this test's leaves. */
static void naive(struct merkle_hasher *h, uint64_t a, uint64_t b, uint8_t out[MERKLE_HASH_LEN])
{
    ts_naive_mth(h, (const uint8_t(*)[MERKLE_HASH_LEN])leaves, a, b, out);
}

/* The SQL's lines for (m, n), the plan filled from them, the proof checked. */
static void check_pair(PGconn *c, struct merkle_hasher *h, uint64_t m, uint64_t n)
{
    char ms[24], ns[24];
    const char *v[] = {ms, ns};
    snprintf(ms, sizeof(ms), "%" PRIu64, m);
    snprintf(ns, sizeof(ns), "%" PRIu64, n);
    PGresult *r = PQexecPrepared(c, "nodes", 2, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("nodes(%s, %s): %s", ms, ns, PQerrorMessage(c));

    struct proof_nodes plan;
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], root[MERKLE_HASH_LEN];
    struct merkle_bytes path[MERKLE_MAX_PROOF];
    size_t len = 0;
    assert_int_equal(proof_plan_inclusion(h, m, n, &plan), 0);
    if (proof_nodes_fill_lines(&plan, PQgetvalue(r, 0, 0)) != 0)
        fail_msg("nodes(%s, %s) does not complete the plan: %s", ms, ns, PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_int_equal(proof_inclusion(h, &plan, m, n, proof, &len), 0);
    for (size_t i = 0; i < len; i++)
        path[i] = (struct merkle_bytes){proof[i], MERKLE_HASH_LEN};
    naive(h, 0, n, root);
    if (merkle_verify_inclusion(h, m, n, (struct merkle_bytes){leaves[m], MERKLE_HASH_LEN}, path,
                                len, (struct merkle_bytes){root, MERKLE_HASH_LEN}) != 0)
        fail_msg("the proof of %s in %s from the SQL's nodes does not verify", ms, ns);
}

static void test_nodes_sql_completes_every_plan(void **state)
{
    (void)state;
    struct merkle_hasher *h = merkle_hasher_new();
    PGconn *c = PQconnectdb(ts_require_env("TAGPROOF_TEST_PG_URL"));
    char sql[256], leaf[32];
    assert_non_null(h);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));

    for (int i = 0; i < LEAVES; i++) {
        int n = snprintf(leaf, sizeof(leaf), "leaf %d", i);
        merkle_leaf_hash(h, leaf, (size_t)n, leaves[i]);
    }
    /* Every complete subtree of the log, as tagproof-anchor stores them. */
    exec_ok(c, "CREATE TEMP TABLE merkle_nodes (level smallint, idx bigint, hash bytea,"
               " PRIMARY KEY (level, idx))");
    exec_ok(c, "BEGIN");
    for (unsigned l = 0; (LEAVES >> l) > 0; l++) {
        for (uint64_t i = 0; (i + 1) << l <= LEAVES; i++) {
            uint8_t hash[MERKLE_HASH_LEN];
            char hex[2 * MERKLE_HASH_LEN + 1];
            naive(h, i << l, (i + 1) << l, hash);
            proof_hex(hash, sizeof(hash), hex);
            snprintf(sql, sizeof(sql),
                     "INSERT INTO merkle_nodes VALUES (%u, %" PRIu64 ", decode('%s', 'hex'))", l, i,
                     hex);
            exec_ok(c, sql);
        }
    }
    exec_ok(c, "COMMIT");
    PGresult *r =
        PQprepare(c, "nodes", "SELECT " PROOF_NODES_SQL("$1::bigint", "$2::bigint"), 2, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("prepare: %s", PQerrorMessage(c));
    PQclear(r);

    int pairs = 0;
    for (uint64_t n = 1; n <= 64; n++)
        for (uint64_t m = 0; m < n; m++, pairs++)
            check_pair(c, h, m, n);
    for (uint64_t m = 0; m < LEAVES; m++, pairs++)
        check_pair(c, h, m, LEAVES);
    srand(20261122);
    for (int i = 0; i < 400; i++, pairs++) {
        uint64_t n = 1 + (uint64_t)rand() % LEAVES;
        check_pair(c, h, (uint64_t)rand() % n, n);
    }
    print_message("%d (leaf, size) pairs\n", pairs);

    /* A leaf outside the tree has no nodes; a store that lacks one fails the plan. */
    const char *outside[] = {"5", "5"};
    r = PQexecPrepared(c, "nodes", 2, outside, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_true(PQgetisnull(r, 0, 0));
    PQclear(r);
    exec_ok(c, "DELETE FROM merkle_nodes WHERE level = 0 AND idx = 1");
    const char *first[] = {"0", "8"};
    r = PQexecPrepared(c, "nodes", 2, first, NULL, NULL, 0);
    struct proof_nodes plan;
    assert_int_equal(proof_plan_inclusion(h, 0, 8, &plan), 0);
    assert_int_equal(proof_nodes_fill_lines(&plan, PQgetvalue(r, 0, 0)), -1);
    PQclear(r);
    /* Malformed lines are refused. */
    assert_int_equal(proof_plan_inclusion(h, 0, 2, &plan), 0);
    assert_int_equal(proof_nodes_fill_lines(&plan, "0 1 abc"), -1);
    assert_int_equal(proof_nodes_fill_lines(&plan, "0 1"), -1);
    assert_int_equal(proof_nodes_fill_lines(&plan, "x"), -1);

    PQfinish(c);
    merkle_hasher_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nodes_sql_completes_every_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
