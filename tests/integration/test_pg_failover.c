/*
 * Integration tests of pg with a multi-host conninfo and target_session_attrs=read-write:
 * a dead first host, a read-only first host, the writable role moving between two live
 * servers while the pool runs (found again after pg_terminate_backend or a 25006 error),
 * and a first host that accepts TCP but never answers.
 */
#include "support.h"
#include "pg_support.h"

#include "pg.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ts_pg pa, pb;
static struct event_base *base;

/* Setup may block: it runs before any loop. */
static void exec_blocking(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

static int group_setup(void **state)
{
    (void)state;
    pgs_cluster_start(&pa);
    pgs_cluster_start(&pb);
    exec_blocking(pa.conninfo, "CREATE TABLE w (x int)");
    exec_blocking(pb.conninfo, "CREATE TABLE w (x int)");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_destroy(&pa);
    ts_pg_destroy(&pb);
    return 0;
}

static void set_read_only(struct ts_pg *pg, int on)
{
    assert_int_equal(pgs_psql(pg,
                              "ALTER SYSTEM %s default_transaction_read_only%s;\n"
                              "SELECT pg_reload_conf();",
                              on ? "SET" : "RESET", on ? " = on" : ""),
                     0);
}

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    set_read_only(&pa, 0);
    set_read_only(&pb, 0);
    return base == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_pg_resume(&pa);
    event_base_free(base);
    base = NULL;
    return 0;
}

static char *multi_host(int port1, int port2)
{
    char *s = NULL;
    assert_true(asprintf(&s,
                         "host=127.0.0.1,127.0.0.1 port=%d,%d user=tagproof password=tagproof "
                         "dbname=tagproof target_session_attrs=read-write",
                         port1, port2) > 0);
    return s;
}

static int server_port(struct pg_pool *p)
{
    char *v = pgs_value(base, p, "SELECT inet_server_port()");
    int port = atoi(v);
    free(v);
    return port;
}

static void test_dead_first_host_is_skipped(void **state)
{
    (void)state;
    char *ci = multi_host(ts_free_port(), pa.port);
    struct pg_options o = pgs_options(ci, 2);
    struct pg_pool *p = pg_pool_new(base, &o);
    assert_int_equal(server_port(p), pa.port);
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.connect_failures, 0); /* libpq moved on within one attempt */
    pg_pool_free(p);
    free(ci);
}

static void test_read_only_first_host_is_skipped(void **state)
{
    (void)state;
    set_read_only(&pa, 1);
    char *ci = multi_host(pa.port, pb.port);
    struct pg_options o = pgs_options(ci, 2);
    struct pg_pool *p = pg_pool_new(base, &o);
    assert_int_equal(server_port(p), pb.port);
    pg_pool_free(p);
    free(ci);
}

static int round_done;
static void round_cb(void *arg, const struct pg_result_info *r)
{
    pgs_on_result(arg, r);
    round_done++;
}

/*
 * Writes in rounds of three at once (each holds its connection a moment, so the round uses
 * all three) until a whole round lands on port. Failures on the way must be connection
 * errors; those with SQLSTATE 25006 are counted. Returns the ms it took, or -1.
 */
static int writes_land_on(struct pg_pool *p, int port, int within_ms, int *saw_25006)
{
    int64_t start = ts_now_ms();
    struct pgs_res r[3];
    memset(r, 0, sizeof(r));
    while (ts_now_ms() - start < within_ms) {
        int on_port = 0;
        round_done = 0;
        for (int i = 0; i < 3; i++) {
            pgs_res_clear(&r[i]);
            assert_int_equal(pg_query(p, 2000, round_cb, &r[i],
                                      "INSERT INTO w SELECT inet_server_port() FROM "
                                      "pg_sleep(0.05) RETURNING x",
                                      0, NULL),
                             0);
        }
        assert_int_equal(pgs_run_until(base, &round_done, 3, 5000), 0);
        for (int i = 0; i < 3; i++) {
            if (r[i].status == PG_OK) {
                on_port += atoi(r[i].value) == port;
                continue;
            }
            if (r[i].status != PG_ERR_CONNECTION)
                fail_msg("write: %s %s %s", pg_status_str(r[i].status), r[i].sqlstate,
                         r[i].message);
            *saw_25006 += strcmp(r[i].sqlstate, "25006") == 0;
        }
        for (int i = 0; i < 3; i++)
            pgs_res_clear(&r[i]);
        if (on_port == 3)
            return (int)(ts_now_ms() - start);
        pgs_run_for(base, 20);
    }
    return -1;
}

static void test_pool_follows_the_writable_server(void **state)
{
    (void)state;
    struct pg_stats st;
    char *ci = multi_host(pa.port, pb.port);
    struct pg_options o = pgs_options(ci, 3);
    struct pg_pool *p = pg_pool_new(base, &o);
    int saw = 0, ms;

    /* Both writable: the first host takes every connection. */
    assert_true(writes_land_on(p, pa.port, 5000, &saw) >= 0);
    assert_int_equal(saw, 0);

    /* A turns read-only under open connections: a write there is refused with 25006, and
     * the pool reconnects, which lets libpq pick B. */
    set_read_only(&pa, 1);
    ms = writes_land_on(p, pb.port, 5000, &saw);
    print_message("A read-only: all writes on B after %d ms, %d refused with 25006\n", ms, saw);
    assert_true(ms >= 0 && ms < 3000);
    assert_true(saw >= 1);

    /* Flip: A writable, B read-only, and B's sessions terminated (a fenced old primary). */
    set_read_only(&pa, 0);
    set_read_only(&pb, 1);
    assert_int_equal(pgs_psql(&pb, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'tagproof';"),
                     0);
    saw = 0;
    ms = writes_land_on(p, pa.port, 5000, &saw);
    print_message("flip and terminate: all writes on A after %d ms\n", ms);
    assert_true(ms >= 0 && ms < 3000);

    /* Flip back without terminating anything: the 25006 error alone moves the pool. */
    set_read_only(&pb, 0);
    set_read_only(&pa, 1);
    saw = 0;
    ms = writes_land_on(p, pb.port, 5000, &saw);
    print_message("flip back: all writes on B after %d ms, %d refused with 25006\n", ms, saw);
    assert_true(ms >= 0 && ms < 3000);
    assert_true(saw >= 1);

    /* The same pool object throughout, all of it open again. */
    int64_t end = ts_now_ms() + 3000;
    do {
        pgs_run_for(base, 10);
        pg_pool_stats(p, &st);
    } while (st.open < 3 && ts_now_ms() < end);
    assert_int_equal(st.open, 3);
    assert_int_equal(st.down, 0);
    assert_true(st.disconnects >= 9);
    pg_pool_free(p);
    free(ci);
}

static void test_stalled_first_host_is_rotated_away(void **state)
{
    (void)state;
    char *ci = multi_host(pa.port, pb.port);
    struct pg_options o = pgs_options(ci, 2);
    o.connect_timeout_ms = 300;
    ts_pg_pause(&pa); /* accepts TCP in the kernel, never answers */
    struct pg_pool *p = pg_pool_new(base, &o);
    int64_t t0 = ts_now_ms();
    int ms = pgs_wait_ok(base, p, "SELECT 1", 5000);
    print_message("stalled first host: first answer after %lld ms\n",
                  (long long)(ts_now_ms() - t0));
    assert_true(ms >= 0 && ms < 2000);
    assert_int_equal(server_port(p), pb.port);
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_true(st.connect_failures >= 1);
    ts_pg_resume(&pa);
    pg_pool_free(p);
    free(ci);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dead_first_host_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_first_host_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_follows_the_writable_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_first_host_is_rotated_away, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
