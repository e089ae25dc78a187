/*
 * Integration tests of db, the factory API's tenant transactions, against the test stack's
 * PostgreSQL as the services' role: one pooled connection passed from tenant to tenant (A,
 * B, none, all) shows each exactly its rows; no tenant, an empty or an unknown one sees and
 * writes nothing; a failed, a timed-out or a tenant-changing statement leaves nothing behind
 * for the next user; and the catalog says every table that holds a factory's rows is sealed.
 */
#include "support.h"
#include "pg_support.c" /* the event-loop helpers of the pg tests */

#include "db.h"
#include "log.h"
#include "pg.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *svc_url;
static const char *owner_url;
static PGconn *owner;
static struct event_base *base;

/* The fixtures: two factories, a product and a batch each, made by the schema owner. */
static char fac_a[40], fac_b[40], prod_a[40], prod_b[40], batch_a[40], batch_b[40];

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGresult *owner_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static PGresult *owner_run(const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&sql, fmt, ap) >= 0);
    va_end(ap);
    PGresult *r = PQexec(owner, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    free(sql);
    return r;
}

static void owner_value(char out[40], const char *sql)
{
    PGresult *r = owner_run("%s", sql);
    assert_int_equal(PQntuples(r), 1);
    snprintf(out, 40, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static int group_setup(void **state)
{
    (void)state;
    svc_url = ts_require_env("TAGPROOF_TEST_PG_URL");
    owner_url = ts_require_env("TAGPROOF_TEST_PG_OWNER_URL");
    log_init("test_db", LOG_WARN, 2);
    owner = PQconnectdb(owner_url);
    if (PQstatus(owner) != CONNECTION_OK)
        fail_msg("cannot connect as the schema owner: %s", PQerrorMessage(owner));
    PQsetNoticeProcessor(owner, quiet, NULL);
    owner_value(fac_a, "SELECT gen_random_uuid()");
    owner_value(fac_b, "SELECT gen_random_uuid()");
    owner_value(prod_a, "SELECT gen_random_uuid()");
    owner_value(prod_b, "SELECT gen_random_uuid()");
    owner_value(batch_a, "SELECT gen_random_uuid()");
    owner_value(batch_b, "SELECT gen_random_uuid()");
    PQclear(owner_run("INSERT INTO factories (id, name) VALUES ('%s', 'test_db A %s'),"
                      " ('%s', 'test_db B %s')",
                      fac_a, fac_a, fac_b, fac_b));
    PQclear(owner_run("INSERT INTO products (id, factory_id, sku, name) VALUES"
                      " ('%s', '%s', 'SKU-A', 'A'), ('%s', '%s', 'SKU-B', 'B')",
                      prod_a, fac_a, prod_b, fac_b));
    PQclear(owner_run("INSERT INTO batches (id, factory_id, product_id, code) VALUES"
                      " ('%s', '%s', '%s', 'BA'), ('%s', '%s', '%s', 'BB')",
                      batch_a, fac_a, prod_a, batch_b, fac_b, prod_b));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *tables[] = {"batches", "products", "factories"};
    for (size_t i = 0; i < 3; i++)
        PQclear(owner_run("DELETE FROM %s WHERE %s IN ('%s', '%s')", tables[i],
                          i == 2 ? "id" : "factory_id", fac_a, fac_b));
    PQfinish(owner);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    return base == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    event_base_free(base);
    base = NULL;
    return 0;
}

static struct pg_pool *one_connection(void)
{
    struct pg_options o = pgs_options(svc_url, 1);
    struct pg_pool *p = pg_pool_new(base, &o);
    assert_non_null(p);
    return p;
}

/*
 * What a session sees of the fixtures: "<rows of A>/<rows of B>" over factories, products
 * and batches, so "3/0" is exactly factory A's rows.
 */
static const char seen_sql[] =
    "SELECT count(*) FILTER (WHERE f = $1::uuid) || '/' || count(*) FILTER (WHERE f = $2::uuid)"
    " FROM (SELECT id FROM factories WHERE id IN ($1::uuid, $2::uuid)"
    "  UNION ALL SELECT factory_id FROM products WHERE id IN ($3::uuid, $4::uuid)"
    "  UNION ALL SELECT factory_id FROM batches WHERE id IN ($5::uuid, $6::uuid)) s(f)";

static const char *const *seen_params(void)
{
    static const char *v[6];
    v[0] = fac_a, v[1] = fac_b, v[2] = prod_a, v[3] = prod_b, v[4] = batch_a, v[5] = batch_b;
    return v;
}

/* db_tenant_query, waiting for its one callback. */
static enum pg_status tenant_query(struct pg_pool *p, const char *tenant, int timeout_ms,
                                   const char *sql, int nparams, const char *const *values,
                                   struct pgs_res *out)
{
    pgs_res_clear(out);
    assert_int_equal(
        db_tenant_query(p, tenant, timeout_ms, pgs_on_result, out, sql, nparams, values), 0);
    assert_int_equal(pgs_run_until(base, &out->calls, 1, 15000), 0);
    pgs_run_for(base, 0);
    assert_int_equal(out->calls, 1);
    return out->status;
}

/* A statement with no tenant at all: a plain pooled call, no transaction of db's. */
static enum pg_status plain_query(struct pg_pool *p, const char *sql, int nparams,
                                  const char *const *values, struct pgs_res *out)
{
    return pgs_query(base, p, 5000, sql, nparams, values, out);
}

static void test_one_connection_passes_between_tenants(void **state)
{
    (void)state;
    struct pg_pool *p = one_connection();
    enum { ROUNDS = 5, PER_ROUND = 4 };
    static struct pgs_res res[ROUNDS * PER_ROUND];
    const char *expect[PER_ROUND] = {"3/0", "0/3", "0/0", "3/3"};
    const char *tenants[PER_ROUND] = {fac_a, fac_b, NULL, DB_TENANT_ALL};

    /* Every call is queued before the loop runs, so they take the one connection in turn. */
    for (int i = 0; i < ROUNDS * PER_ROUND; i++) {
        const char *t = tenants[i % PER_ROUND];
        if (t == NULL)
            assert_int_equal(pg_query(p, 10000, pgs_on_result, &res[i], seen_sql, 6, seen_params()),
                             0);
        else
            assert_int_equal(
                db_tenant_query(p, t, 10000, pgs_on_result, &res[i], seen_sql, 6, seen_params()),
                0);
    }
    for (int i = 0; i < ROUNDS * PER_ROUND; i++) {
        assert_int_equal(pgs_run_until(base, &res[i].calls, 1, 15000), 0);
    }
    for (int i = 0; i < ROUNDS * PER_ROUND; i++) {
        if (res[i].status != PG_OK)
            fail_msg("call %d: %s %s", i, res[i].sqlstate, res[i].message);
        assert_int_equal(res[i].calls, 1);
        if (strcmp(res[i].value, expect[i % PER_ROUND]) != 0)
            fail_msg("call %d (tenant %s) saw %s, not %s", i,
                     tenants[i % PER_ROUND] ? tenants[i % PER_ROUND] : "none", res[i].value,
                     expect[i % PER_ROUND]);
        pgs_res_clear(&res[i]);
    }

    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.connections, 1);
    assert_int_equal(st.connects, 1); /* the same connection served all twenty */
    pg_pool_free(p);
}

static void test_no_empty_or_unknown_tenant_sees_nothing(void **state)
{
    (void)state;
    struct pg_pool *p = one_connection();
    struct pgs_res r = {0};

    /* db itself refuses to run a statement without a tenant. */
    assert_int_equal(db_tenant_query(p, "", 0, pgs_on_result, &r, seen_sql, 6, seen_params()), -1);
    assert_int_equal(db_tenant_query(p, NULL, 0, pgs_on_result, &r, seen_sql, 6, seen_params()),
                     -1);
    pgs_run_for(base, 20);
    assert_int_equal(r.calls, 0);

    /* Names that are not a factory of these rows, nor exactly "all", match nothing. */
    const char *strangers[] = {
        "ALL", "all ", "none", "*", "00000000-0000-0000-0000-000000000000", "' OR true --"};
    for (size_t i = 0; i < sizeof(strangers) / sizeof(*strangers); i++) {
        assert_int_equal(tenant_query(p, strangers[i], 0, seen_sql, 6, seen_params(), &r), PG_OK);
        if (strcmp(r.value, "0/0") != 0)
            fail_msg("tenant \"%s\" saw %s", strangers[i], r.value);
    }

    /* Set to the empty string, the setting matches nothing either (fail closed). */
    assert_int_equal(
        plain_query(p,
                    "WITH s AS MATERIALIZED (SELECT set_config('tagproof.tenant', '', false))"
                    " SELECT count(*) FROM s",
                    0, NULL, &r),
        PG_OK);
    assert_int_equal(plain_query(p, seen_sql, 6, seen_params(), &r), PG_OK);
    assert_string_equal(r.value, "0/0");
    assert_int_equal(plain_query(p, "RESET tagproof.tenant", 0, NULL, &r), PG_OK);

    /* And with no tenant, not one row of any sealed table. */
    assert_int_equal(plain_query(p,
                                 "SELECT (SELECT count(*) FROM factories) + (SELECT count(*) FROM"
                                 " products) + (SELECT count(*) FROM batches) + (SELECT count(*)"
                                 " FROM api_keys)",
                                 0, NULL, &r),
                     PG_OK);
    assert_string_equal(r.value, "0");
    pgs_res_clear(&r);
    pg_pool_free(p);
}

static void test_writes_stay_within_the_tenant(void **state)
{
    (void)state;
    struct pg_pool *p = one_connection();
    struct pgs_res r = {0};
    const char *insert_a[] = {fac_a};
    static const char insert_sql[] =
        "INSERT INTO products (id, factory_id, sku, name)"
        " VALUES (gen_random_uuid(), $1::uuid, 'W-' || gen_random_uuid(), 'written')";

    /* No tenant, an empty one, or another factory: the row is refused (42501). */
    assert_int_equal(plain_query(p, insert_sql, 1, insert_a, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42501");
    assert_int_equal(tenant_query(p, fac_b, 0, insert_sql, 1, insert_a, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42501");
    assert_int_equal(tenant_query(p, "none", 0, insert_sql, 1, insert_a, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42501");

    /* Another factory's rows cannot be changed, and a row cannot be given away. */
    const char *b_product[] = {prod_b};
    assert_int_equal(tenant_query(p, fac_a, 0,
                                  "UPDATE products SET name = 'taken' WHERE id = $1::uuid", 1,
                                  b_product, &r),
                     PG_OK);
    assert_int_equal(r.cmd_tuples, 0);
    assert_int_equal(tenant_query(p, fac_a, 0, "DELETE FROM batches WHERE factory_id <> $1::uuid",
                                  1, insert_a, &r),
                     PG_OK);
    assert_int_equal(r.cmd_tuples, 0);
    const char *give[] = {prod_a, fac_b};
    assert_int_equal(tenant_query(p, fac_a, 0,
                                  "UPDATE products SET factory_id = $2::uuid WHERE id = $1::uuid",
                                  2, give, &r),
                     PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42501");

    /* The tenant's own row goes in. */
    assert_int_equal(tenant_query(p, fac_a, 0, insert_sql, 1, insert_a, &r), PG_OK);
    assert_int_equal(r.cmd_tuples, 1);

    PGresult *o = owner_run("SELECT count(*) FROM products WHERE factory_id = '%s'", fac_a);
    assert_string_equal(PQgetvalue(o, 0, 0), "2");
    PQclear(o);
    o = owner_run("SELECT name, factory_id FROM products WHERE id = '%s'", prod_b);
    assert_string_equal(PQgetvalue(o, 0, 0), "B");
    assert_string_equal(PQgetvalue(o, 0, 1), fac_b);
    PQclear(o);
    PQclear(owner_run("DELETE FROM products WHERE factory_id = '%s' AND name = 'written'", fac_a));
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/* What the next user of the connection finds: the tenant setting, and the fixtures seen. */
static void expect_clean_session(struct pg_pool *p, const char *after)
{
    struct pgs_res r = {0};
    if (plain_query(p,
                    "SELECT coalesce(current_setting('tagproof.tenant', true), '')"
                    " || '|' || (SELECT count(*) FROM products)",
                    0, NULL, &r) != PG_OK)
        fail_msg("after %s the connection fails: %s %s", after, r.sqlstate, r.message);
    if (strcmp(r.value, "|0") != 0)
        fail_msg("after %s the next user found \"%s\" (tenant|products seen)", after, r.value);
    pgs_res_clear(&r);
}

static void test_failures_leave_nothing_behind(void **state)
{
    (void)state;
    struct pg_pool *p = one_connection();
    struct pgs_res r = {0};
    char gone[40];
    owner_value(gone, "SELECT gen_random_uuid()");
    const char *v[] = {gone, fac_a};

    /* A statement that wrote and then failed: rolled back, the tenant gone with it. */
    assert_int_equal(tenant_query(p, fac_a, 0,
                                  "WITH i AS (INSERT INTO products (id, factory_id, sku, name)"
                                  " VALUES ($1::uuid, $2::uuid, 'GONE', 'gone') RETURNING 1)"
                                  " SELECT count(*) / 0 FROM i",
                                  2, v, &r),
                     PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "22012");
    expect_clean_session(p, "a failed statement");
    /* A unique violation, the commonest failure of the API. */
    const char *dup[] = {prod_a, fac_a};
    assert_int_equal(tenant_query(p, fac_a, 0,
                                  "INSERT INTO products (id, factory_id, sku, name)"
                                  " VALUES ($1::uuid, $2::uuid, 'DUP', 'dup')",
                                  2, dup, &r),
                     PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "23505");
    expect_clean_session(p, "a unique violation");

    /* A statement that names a tenant for the whole session: the release resets it. */
    assert_int_equal(tenant_query(p, fac_a, 0, "SELECT set_config('tagproof.tenant', 'all', false)",
                                  0, NULL, &r),
                     PG_OK);
    expect_clean_session(p, "a session-wide tenant");
    assert_int_equal(tenant_query(p, fac_a, 0,
                                  "SELECT set_config('tagproof.tenant', 'all', false), 1 / 0", 0,
                                  NULL, &r),
                     PG_ERR_QUERY);
    expect_clean_session(p, "a session-wide tenant that failed");

    /* A statement past its deadline: the connection is replaced, nothing of it stays. */
    assert_int_equal(tenant_query(p, fac_a, 200,
                                  "WITH i AS (INSERT INTO products (id, factory_id, sku, name)"
                                  " VALUES ($1::uuid, $2::uuid, 'SLOW', 'slow') RETURNING 1)"
                                  " SELECT count(*), pg_sleep(3) FROM i",
                                  2, v, &r),
                     PG_ERR_TIMEOUT);
    assert_int_equal(pgs_wait_ok(base, p, "SELECT 1", 10000) >= 0, 1);
    expect_clean_session(p, "a timed-out statement");

    /* The tenant still works after all that, and none of the failed rows exist. */
    assert_int_equal(tenant_query(p, fac_a, 0, seen_sql, 6, seen_params(), &r), PG_OK);
    assert_string_equal(r.value, "3/0");
    /* Its insert was never committed: the connection closed inside the transaction. */
    PGresult *o = NULL;
    o = owner_run("SELECT count(*) FROM products WHERE id = '%s'"
                  " OR (factory_id = '%s' AND sku IN ('GONE', 'DUP', 'SLOW'))",
                  gone, fac_a);
    assert_string_equal(PQgetvalue(o, 0, 0), "0");
    PQclear(o);
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/*
 * The schema's promise, read from the catalog: every table with a factory_id column, and
 * factories itself, has row-level security enabled and forced and a policy for the services'
 * role (tagproof_app); partitions are reached through their parent. The services' login role
 * cannot bypass it, and a session with no tenant counts no row in any of those tables.
 */
static void test_every_factory_table_is_sealed(void **state)
{
    (void)state;
    struct pg_pool *p = one_connection();
    struct pgs_res r = {0};
    PGresult *t = owner_run(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        "  EXISTS (SELECT 1 FROM pg_policy pol WHERE pol.polrelid = c.oid"
        "   AND 'tagproof_app'::regrole::oid = ANY (pol.polroles))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "  AND (c.relname = 'factories' OR EXISTS (SELECT 1 FROM pg_attribute a"
        "   WHERE a.attrelid = c.oid AND a.attname = 'factory_id' AND a.attnum > 0"
        "    AND NOT a.attisdropped))"
        " ORDER BY 1");
    int n = PQntuples(t), seen_known = 0;
    const char *known[] = {"api_keys", "batches",     "factories", "log_entries",
                           "products", "scan_events", "tags",      "uploads"};

    for (int i = 0; i < n; i++) {
        const char *name = PQgetvalue(t, i, 0);
        if (strcmp(PQgetvalue(t, i, 1), "t") != 0)
            fail_msg("table %s: row-level security is not enabled", name);
        if (strcmp(PQgetvalue(t, i, 2), "t") != 0)
            fail_msg("table %s: row-level security is not forced", name);
        if (strcmp(PQgetvalue(t, i, 3), "t") != 0)
            fail_msg("table %s: no policy for tagproof_app", name);
        for (size_t k = 0; k < sizeof(known) / sizeof(*known); k++)
            seen_known += strcmp(name, known[k]) == 0;

        /* Fail closed: without a tenant the services' role counts nothing. */
        char *ident = PQescapeIdentifier(owner, name, strlen(name));
        char sql[128];
        assert_non_null(ident);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", ident);
        PQfreemem(ident);
        if (plain_query(p, sql, 0, NULL, &r) != PG_OK)
            fail_msg("%s: %s %s", sql, r.sqlstate, r.message);
        if (strcmp(r.value, "0") != 0)
            fail_msg("without a tenant, %s shows %s rows", name, r.value);
    }
    PQclear(t);
    assert_int_equal(seen_known, (int)(sizeof(known) / sizeof(*known)));

    /* The partitions of scan_events are not the services' to read around the parent's policy. */
    t = owner_run("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                  " WHERE i.inhparent = 'scan_events'::regclass"
                  "  AND has_table_privilege('tagproof_app', c.oid, 'SELECT')");
    assert_string_equal(PQgetvalue(t, 0, 0), "0");
    PQclear(t);

    /* Neither the services' login role nor anything it inherits bypasses row-level security. */
    assert_int_equal(plain_query(p,
                                 "SELECT count(*) FROM pg_roles WHERE (rolbypassrls OR rolsuper)"
                                 " AND pg_has_role(current_user, oid, 'MEMBER')",
                                 0, NULL, &r),
                     PG_OK);
    assert_string_equal(r.value, "0");
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/*
 * Every SECURITY DEFINER function of the schema looks up tables in public before the
 * caller's temporary schema (0009, 0010): a temporary table of the services' cannot stand in
 * for one the function reads as the schema owner.
 */
static void test_definer_functions_skip_temporary_tables(void **state)
{
    (void)state;
    PGresult *t = owner_run("SELECT p.proname, coalesce(array_to_string(p.proconfig, ';'), '')"
                            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                            " WHERE n.nspname = current_schema() AND p.prosecdef ORDER BY 1");
    int n = PQntuples(t);
    assert_true(n >= 7);
    for (int i = 0; i < n; i++)
        if (strcmp(PQgetvalue(t, i, 1), "search_path=public, pg_temp") != 0)
            fail_msg("SECURITY DEFINER function %s has \"%s\"", PQgetvalue(t, i, 0),
                     PQgetvalue(t, i, 1));
    PQclear(t);

    /* The services create a temporary batches table holding a batch that does not exist: a
     * tag of that batch is still refused. */
    struct pg_pool *p = one_connection();
    struct pgs_res r = {0};
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "DO $$ BEGIN"
             " PERFORM set_config('tagproof.tenant', 'all', true);"
             " CREATE TEMPORARY TABLE batches (id uuid, factory_id uuid, product_id uuid);"
             " INSERT INTO pg_temp.batches VALUES ('%s', '%s', '%s');"
             " INSERT INTO public.tags (tag_id, factory_id, batch_id, product_id)"
             "  VALUES (gen_random_uuid(), '%s', '%s', '%s');"
             " END $$",
             "00000000-0000-4000-8000-00000000b0b0", fac_a, prod_a, fac_a,
             "00000000-0000-4000-8000-00000000b0b0", prod_a);
    assert_int_equal(plain_query(p, sql, 0, NULL, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42501");
    pgs_res_clear(&r);
    pg_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_connection_passes_between_tenants, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_no_empty_or_unknown_tenant_sees_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_writes_stay_within_the_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_leave_nothing_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_factory_table_is_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_definer_functions_skip_temporary_tables, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
