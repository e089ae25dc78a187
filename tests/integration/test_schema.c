/*
 * Integration tests of schema: migrations against a real PostgreSQL — fresh apply, re-run,
 * concurrent runners, version check behind/ahead, edited files refused, and the services'
 * role owning nothing and unable to bypass row-level security.
 */
#include "support.h"
#include "schema.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ts_pg pg;

static int setup(void **state)
{
    (void)state;
    return ts_pg_init_start(&pg);
}

static int teardown(void **state)
{
    (void)state;
    ts_pg_destroy(&pg);
    return 0;
}

static char *query1(const char *sql)
{
    PGconn *c = PQconnectdb(pg.conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        out = strdup(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) == PGRES_COMMAND_OK)
        out = strdup("");
    else
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return out;
}

static void expect1(const char *sql, const char *want)
{
    char *got = query1(sql);
    assert_string_equal(got, want);
    free(got);
}

struct runner {
    int rc, applied;
    char err[256];
};

static void *run_migrate(void *p)
{
    struct runner *r = p;
    r->rc = schema_migrate(pg.conninfo, &r->applied, r->err, sizeof(r->err));
    return NULL;
}

static void test_concurrent_fresh_migrate_applies_once(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(schema_check(pg.conninfo, 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tagproof migrate"));

    struct runner a = {0}, b = {0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run_migrate, &a);
    pthread_create(&tb, NULL, run_migrate, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(a.applied + b.applied, (int)schema_migrations_count);
    char want[16];
    snprintf(want, sizeof(want), "%zu", schema_migrations_count);
    expect1("SELECT count(*) FROM schema_migrations", want);
    assert_int_equal(schema_check(pg.conninfo, 5, err, sizeof(err)), 0);

    int applied = -1;
    assert_int_equal(schema_migrate(pg.conninfo, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, 0);
}

static void test_services_role_owns_nothing_and_cannot_bypass_rls(void **state)
{
    (void)state;
    expect1("SELECT rolbypassrls::text || rolsuper::text FROM pg_roles WHERE rolname = "
            "'tagproof_app'",
            "falsefalse");
    expect1("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname = 'tagproof_app'",
            "0");
    /* The month's and next month's scan-event partitions exist. */
    expect1("SELECT count(*) FROM pg_inherits WHERE inhparent = 'scan_events'::regclass", "2");
}

static void test_ahead_and_edited_are_refused(void **state)
{
    (void)state;
    char err[256];
    free(query1("INSERT INTO schema_migrations (version, name, sha256) "
                "VALUES (9999, '9999_future.sql', 'x')"));
    assert_int_equal(schema_check(pg.conninfo, 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ahead"));
    int applied;
    assert_int_equal(schema_migrate(pg.conninfo, &applied, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ahead"));
    free(query1("DELETE FROM schema_migrations WHERE version = 9999"));

    free(query1("UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1"));
    assert_int_equal(schema_migrate(pg.conninfo, &applied, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "changed after it was applied"));
    assert_null(strchr(err, '\n'));
}

static void test_unreachable_server(void **state)
{
    (void)state;
    char err[256], conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "postgresql://x@127.0.0.1:%d/x?connect_timeout=1",
             ts_free_port());
    assert_int_equal(schema_check(conninfo, 0, err, sizeof(err)), -2);
    assert_non_null(strstr(err, "cannot connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_fresh_migrate_applies_once),
        cmocka_unit_test(test_services_role_owns_nothing_and_cannot_bypass_rls),
        cmocka_unit_test(test_ahead_and_edited_are_refused),
        cmocka_unit_test(test_unreachable_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
