/*
 * Integration tests of pg against a real PostgreSQL 15: parameters, NULLs and SQLSTATEs, a
 * busy pool and its bounded queue, prepared statements across reconnects, one-statement
 * transactions pipelined into one round trip (pg_query_tx), acquired
 * connections that never leak session state, COPY FROM STDIN with backpressure, freeing a
 * pool with calls in flight, and passwords kept out of the logs.
 */
#include "support.h"
#include "pg_support.h"

#include "log.h"
#include "pg.h"

#include <event2/event.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ts_pg pg;
static struct event_base *base;

static int group_setup(void **state)
{
    (void)state;
    pgs_cluster_start(&pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_destroy(&pg);
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

static struct pg_pool *new_pool(int size)
{
    struct pg_options o = pgs_options(pg.conninfo, size);
    struct pg_pool *p = pg_pool_new(base, &o);
    assert_non_null(p);
    return p;
}

static void exec_ok(struct pg_pool *p, const char *sql)
{
    struct pgs_res r = {0};
    if (pgs_query(base, p, 5000, sql, 0, NULL, &r) != PG_OK)
        fail_msg("%s: %s %s", sql, r.sqlstate, r.message);
    pgs_res_clear(&r);
}

static void test_parameters_nulls_and_sqlstates(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(2);
    struct pgs_res r = {0};
    const char *row[] = {"1", "it's \"quoted\" \xc3\xbc; DROP TABLE items", NULL};

    exec_ok(p, "CREATE TABLE items (id int PRIMARY KEY, name text, note text)");
    assert_int_equal(pgs_query(base, p, 0, "INSERT INTO items VALUES ($1, $2, $3)", 3, row, &r),
                     PG_OK);
    assert_int_equal(r.cmd_tuples, 1);
    assert_null(r.message[0] != '\0' ? r.message : NULL);

    const char *id[] = {"1"};
    assert_int_equal(pgs_query(base, p, 0, "SELECT name FROM items WHERE id = $1", 1, id, &r),
                     PG_OK);
    assert_int_equal(r.ntuples, 1);
    assert_string_equal(r.value, row[1]);
    assert_int_equal(pgs_query(base, p, 0, "SELECT note FROM items WHERE id = $1", 1, id, &r),
                     PG_OK);
    assert_true(r.value_null);
    assert_int_equal(pgs_query(base, p, 0, "SELECT id FROM items WHERE id = 42", 0, NULL, &r),
                     PG_OK);
    assert_int_equal(r.ntuples, 0);

    /* Errors carry the server's SQLSTATE and message; the connection stays usable. */
    assert_int_equal(pgs_query(base, p, 0, "INSERT INTO items VALUES ($1, $2, $3)", 3, row, &r),
                     PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "23505");
    assert_non_null(strstr(r.message, "duplicate key"));
    assert_int_equal(pgs_query(base, p, 0, "SELEKT 1", 0, NULL, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "42601");
    const char *bad[] = {"not a number"};
    assert_int_equal(pgs_query(base, p, 0, "SELECT $1::int", 1, bad, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "22P02");
    assert_int_equal(pgs_query(base, p, 0, "SELECT 1 / 0", 0, NULL, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "22012");

    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(st.query_errors, 4);
    assert_int_equal(st.open, 2);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.down, 0);

    /* Misuse is refused at once and never calls back. */
    assert_int_equal(pg_query(p, 0, NULL, NULL, "SELECT 1", 0, NULL), -1);
    assert_int_equal(pg_query(p, 0, pgs_on_result, &r, "SELECT $1", 1, NULL), -1);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "nope", 0, NULL), -1);
    pgs_res_clear(&r);
    pg_pool_free(p);
}

static int many_done;
static void count_cb(void *arg, const struct pg_result_info *res)
{
    pgs_on_result(arg, res);
    many_done++;
}

static void test_many_concurrent_queries_share_a_small_pool(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(3);
    static struct pgs_res res[300];
    char buf[16];
    const char *v[] = {buf};

    struct pg_stats st;
    free(pgs_value(base, p, "SELECT 1"));
    /* All three connected: on a loaded machine the last may take a while. */
    for (int waited = 0; waited < 10000; waited += 20) {
        pg_pool_stats(p, &st);
        if (st.idle == 3)
            break;
        pgs_run_for(base, 20);
    }
    assert_int_equal(st.idle, 3);
    many_done = 0;
    for (int i = 0; i < 300; i++) {
        /* One buffer for every call: pg_query copies the parameters. */
        snprintf(buf, sizeof(buf), "%d", i);
        assert_int_equal(pg_query(p, 10000, count_cb, &res[i], "SELECT $1::int * 2", 1, v), 0);
    }
    pg_pool_stats(p, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.queued, 297);
    assert_int_equal(pgs_run_until(base, &many_done, 300, 20000), 0);
    pgs_run_for(base, 20);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, PG_OK);
        assert_int_equal(atoi(res[i].value), 2 * i);
        pgs_res_clear(&res[i]);
    }
    pg_pool_stats(p, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.idle, 3);
    assert_int_equal(st.ok, 301);
    pg_pool_free(p);
}

static void test_full_queue_answers_busy_at_once(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pg.conninfo, 1);
    o.queue_max = 5;
    struct pg_pool *p = pg_pool_new(base, &o);
    struct pgs_res r[10];
    memset(r, 0, sizeof(r));

    free(pgs_value(base, p, "SELECT 1"));
    many_done = 0;
    int64_t t0 = ts_now_ms();
    for (int i = 0; i < 10; i++)
        assert_int_equal(pg_query(p, 5000, count_cb, &r[i], "SELECT pg_sleep(0.1)", 0, NULL), 0);
    assert_int_equal(pgs_run_until(base, &many_done, 10, 10000), 0);
    int busy = 0, ok = 0;
    int64_t last_busy = 0, first_ok = INT64_MAX;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].status == PG_ERR_BUSY) {
            busy++;
            assert_true(i >= 6); /* one running, five queued, the rest refused */
            last_busy = r[i].done_ms > last_busy ? r[i].done_ms : last_busy;
        } else {
            assert_int_equal(r[i].status, PG_OK);
            ok++;
            first_ok = r[i].done_ms < first_ok ? r[i].done_ms : first_ok;
        }
        pgs_res_clear(&r[i]);
    }
    /* Refused at once, not after waiting for a place. */
    assert_true(last_busy <= first_ok);
    assert_true(first_ok - t0 >= 100);
    assert_int_equal(busy, 4);
    assert_int_equal(ok, 6);
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.rejected, 4);
    pg_pool_free(p);
}

static void test_prepared_statements_survive_reconnect(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(2);
    struct pgs_res r = {0};
    const char *args[] = {"2", "3"};

    /* Registered before any connection is up: each prepares it before serving. */
    assert_int_equal(pg_pool_prepare(p, "add", "SELECT $1::int + $2::int", 2), 0);
    assert_int_equal(pg_pool_prepare(p, "add", "SELECT $1::int + $2::int", 2), 0);
    assert_int_equal(pg_pool_prepare(p, "add", "SELECT $1::int - $2::int", 2), -1);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "add", 1, args), -1);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "sub", 2, args), -1);
    /* One the server rejects is logged; running it fails with the server's error. */
    assert_int_equal(pg_pool_prepare(p, "broken", "SELEKT $1", 1), 0);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "add", 2, args), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 5000), 0);
    assert_int_equal(r.status, PG_OK);
    assert_string_equal(r.value, "5");

    /* Registered while connections are open: they prepare it before their next call. */
    assert_int_equal(pg_pool_prepare(p, "mul", "SELECT $1::int * $2::int", 2), 0);
    pgs_res_clear(&r);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "mul", 2, args), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 5000), 0);
    assert_string_equal(r.value, "6");
    pgs_res_clear(&r);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "broken", 1, args), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 5000), 0);
    assert_int_equal(r.status, PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "26000"); /* invalid_sql_statement_name */
    pgs_run_for(base, 100);
    assert_int_equal(
        pgs_query(base, p, 0, "SELECT count(*) FROM pg_prepared_statements", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "2");

    /* The server drops every connection; the new ones prepare both again. */
    struct pg_stats before, after;
    pg_pool_stats(p, &before);
    assert_int_equal(pgs_psql(&pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'tagproof'"),
                     0);
    int64_t t0 = ts_now_ms();
    int ok = 0;
    while (!ok && ts_now_ms() - t0 < 5000) {
        pgs_res_clear(&r);
        assert_int_equal(pg_query_prepared(p, 1000, pgs_on_result, &r, "mul", 2, args), 0);
        assert_int_equal(pgs_run_until(base, &r.calls, 1, 3000), 0);
        ok = r.status == PG_OK;
        if (!ok) {
            assert_int_equal(r.status, PG_ERR_CONNECTION);
            pgs_run_for(base, 20);
        }
    }
    assert_true(ok);
    assert_string_equal(r.value, "6");
    pgs_run_for(base, 300);
    pg_pool_stats(p, &after);
    assert_true(after.disconnects >= before.disconnects + 2);
    assert_true(after.connects >= before.connects + 2);
    for (int i = 0; i < 4; i++) { /* whichever connection answers, both are there */
        assert_int_equal(
            pgs_query(base, p, 0, "SELECT count(*) FROM pg_prepared_statements", 0, NULL, &r),
            PG_OK);
        assert_string_equal(r.value, "2");
        assert_int_equal(pgs_query(base, p, 0, "SELECT 1", 0, NULL, &r), PG_OK);
    }
    pgs_res_clear(&r);
    assert_int_equal(pg_query_prepared(p, 0, pgs_on_result, &r, "add", 2, args), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 5000), 0);
    assert_string_equal(r.value, "5");
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/* ---- one-statement transactions in one round trip ---- */

/* Runs pg_query_tx with setup "t.who = who" and waits for its outcome. */
static enum pg_status tx_run(struct pg_pool *p, const struct pg_call *setup, const char *sql,
                             int prepared, int nparams, const char *const *values,
                             struct pgs_res *r)
{
    const struct pg_call stmt = {
        .sql = sql, .prepared = prepared, .nparams = nparams, .values = values};
    pgs_res_clear(r);
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, r, setup, &stmt), 0);
    assert_int_equal(pgs_run_until(base, &r->calls, 1, 5000), 0);
    return r->status;
}

static void test_pipelined_transaction(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(1); /* one connection: every call sees what the last left */
    struct pgs_res r = {0};
    const char *alice[] = {"alice"}, *one[] = {"1"}, *two[] = {"2"};
    const struct pg_call who = {
        .sql = "SELECT set_config('t.who', $1, true)", .nparams = 1, .values = alice};
    const struct pg_call bad_setup = {.sql = "SELECT 1 / 0"};
    static const char ins[] = "INSERT INTO txlog VALUES ($1, current_setting('t.who')) "
                              "RETURNING who";

    exec_ok(p, "CREATE TABLE txlog (id int PRIMARY KEY, who text)");
    exec_ok(p, "CREATE TABLE txdeferred (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)");

    /* The statement sees the setup's transaction-local setting; the row is committed. */
    assert_int_equal(tx_run(p, &who, ins, 0, 1, one, &r), PG_OK);
    assert_string_equal(r.value, "alice");
    assert_int_equal(pgs_query(base, p, 0, "SELECT who FROM txlog WHERE id = 1", 0, NULL, &r),
                     PG_OK);
    assert_string_equal(r.value, "alice");
    /* ...and the setting died with the transaction. */
    assert_int_equal(
        pgs_query(base, p, 0, "SELECT coalesce(current_setting('t.who', true), '')", 0, NULL, &r),
        PG_OK);
    assert_string_equal(r.value, "");

    /* A statement that sets something for the whole session: the RESET ALL undoes it. */
    assert_int_equal(tx_run(p, NULL, "SELECT set_config('t.who', 'eve', false)", 0, 0, NULL, &r),
                     PG_OK);
    assert_int_equal(
        pgs_query(base, p, 0, "SELECT coalesce(current_setting('t.who', true), '')", 0, NULL, &r),
        PG_OK);
    assert_string_equal(r.value, "");

    /* A failing statement: its error, nothing kept, the connection idle and still open. */
    assert_int_equal(tx_run(p, &who, ins, 0, 1, one, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "23505");
    /* A failing setup: the statement never runs. */
    assert_int_equal(tx_run(p, &bad_setup, ins, 0, 1, two, &r), PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "22012");
    assert_int_equal(pgs_query(base, p, 0, "SELECT count(*) FROM txlog", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "1");
    /* A failing COMMIT (a deferred constraint): the error, and nothing stored. */
    assert_int_equal(tx_run(p, NULL, "INSERT INTO txdeferred VALUES (1), (1)", 0, 0, NULL, &r),
                     PG_ERR_QUERY);
    assert_string_equal(r.sqlstate, "23505");
    assert_int_equal(pgs_query(base, p, 0, "SELECT count(*) FROM txdeferred", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "0");

    /* Registered statements, as setup and as statement. */
    assert_int_equal(pg_pool_prepare(p, "txwho", "SELECT set_config('t.who', $1, true)", 1), 0);
    assert_int_equal(pg_pool_prepare(p, "txins", ins, 1), 0);
    const char *bob[] = {"bob"};
    const struct pg_call who_prepared = {
        .sql = "txwho", .prepared = 1, .nparams = 1, .values = bob};
    assert_int_equal(tx_run(p, &who_prepared, "txins", 1, 1, two, &r), PG_OK);
    assert_string_equal(r.value, "bob");
    /* A statement that returns nothing, and one without setup. */
    assert_int_equal(tx_run(p, &who, "SELECT id FROM txlog WHERE id = 42", 0, 0, NULL, &r), PG_OK);
    assert_int_equal(r.ntuples, 0);
    assert_int_equal(tx_run(p, NULL, "SELECT count(*) FROM txlog", 0, 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "2");

    /* Misuse is refused at once and never calls back. */
    const struct pg_call unknown = {.sql = "nope", .prepared = 1};
    const struct pg_call arity = {.sql = "txins", .prepared = 1, .nparams = 2, .values = alice};
    const struct pg_call no_values = {.sql = "SELECT $1", .nparams = 1};
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, &r, NULL, &unknown), -1);
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, &r, &unknown, &who), -1);
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, &r, NULL, &arity), -1);
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, &r, NULL, &no_values), -1);
    assert_int_equal(pg_query_tx(p, 0, pgs_on_result, &r, &who, NULL), -1);
    assert_int_equal(pg_query_tx(p, 0, NULL, NULL, NULL, &who), -1);

    /* No failure above cost the connection. */
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(st.idle, 1);

    /* A connection lost in the middle: the caller hears it at once, not at its deadline. */
    const struct pg_call slow = {.sql = "SELECT pg_sleep(5)"};
    pgs_res_clear(&r);
    int64_t t0 = ts_now_ms();
    assert_int_equal(pg_query_tx(p, 8000, pgs_on_result, &r, &who, &slow), 0);
    pgs_run_for(base, 300);
    assert_int_equal(pgs_psql(&pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE query = 'SELECT pg_sleep(5)'"),
                     0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 8000), 0);
    assert_int_equal(r.status, PG_ERR_CONNECTION);
    assert_true(r.done_ms - t0 < 3000);
    assert_true(pgs_wait_ok(base, p, "SELECT 1", 5000) >= 0);
    assert_int_equal(tx_run(p, &who, "SELECT current_setting('t.who')", 0, 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "alice");
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/* Many transactions at once over three connections: each sees its own setting only. */
static void test_pipelined_transactions_never_mix(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(3);
    static struct pgs_res res[200];
    static char names[200][16];
    static const char *vals[200][1];
    static struct pg_call setups[200];
    const struct pg_call stmt = {.sql = "SELECT current_setting('t.who')"};

    many_done = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof(names[i]), "caller-%d", i);
        vals[i][0] = names[i];
        setups[i] = (struct pg_call){
            .sql = "SELECT set_config('t.who', $1, true)", .nparams = 1, .values = vals[i]};
        memset(&res[i], 0, sizeof(res[i]));
        assert_int_equal(pg_query_tx(p, 0, count_cb, &res[i], &setups[i], &stmt), 0);
    }
    assert_int_equal(pgs_run_until(base, &many_done, 200, 20000), 0);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(res[i].status, PG_OK);
        assert_string_equal(res[i].value, names[i]);
        pgs_res_clear(&res[i]);
    }
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.disconnects, 0);
    pg_pool_free(p);
}

/* ---- acquired connections ---- */

struct held {
    int calls;
    struct pg_conn *conn;
    enum pg_status status;
};

static void on_acquire(void *arg, struct pg_conn *conn, enum pg_status status)
{
    struct held *h = arg;
    h->calls++;
    h->conn = conn;
    h->status = status;
}

static struct pg_conn *acquire(struct pg_pool *p)
{
    struct held h = {0};
    assert_int_equal(pg_pool_acquire(p, 5000, on_acquire, &h), 0);
    assert_int_equal(h.calls, 0);
    assert_int_equal(pgs_run_until(base, &h.calls, 1, 6000), 0);
    assert_int_equal(h.status, PG_OK);
    assert_non_null(h.conn);
    return h.conn;
}

/* Issues every statement at once (they queue on the connection) and checks each. */
static void conn_script(struct pg_conn *c, const char *const *sql, int n, struct pgs_res *r)
{
    int done = 0;
    for (int i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        assert_int_equal(pg_conn_query(c, 5000, pgs_on_result, &r[i], sql[i], 0, NULL), 0);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(pgs_run_until(base, &r[i].calls, 1, 6000), 0);
        done++;
    }
    pgs_run_for(base, 10);
    for (int i = 0; i < n; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].status != PG_OK)
            fail_msg("%s: %s %s", sql[i], r[i].sqlstate, r[i].message);
    }
    assert_int_equal(done, n);
}

static void test_acquired_connection_never_leaks_state(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pg.conninfo, 1);
    o.statement_timeout_ms = 4000;
    struct pg_pool *p = pg_pool_new(base, &o);
    struct pgs_res r[8], q = {0};
    struct pg_stats st;

    exec_ok(p, "CREATE TABLE tx_rows (x int)");
    struct pg_conn *c = acquire(p);
    pg_pool_stats(p, &st);
    assert_int_equal(st.acquired, 1);
    assert_int_equal(st.idle, 0);

    /* While the only connection is held, pooled calls wait, and an acquire times out. */
    assert_int_equal(pg_query(p, 5000, pgs_on_result, &q, "SELECT count(*) FROM tx_rows", 0, NULL),
                     0);
    struct held h2 = {0};
    int64_t t0 = ts_now_ms();
    assert_int_equal(pg_pool_acquire(p, 200, on_acquire, &h2), 0);
    assert_int_equal(pgs_run_until(base, &h2.calls, 1, 2000), 0);
    assert_int_equal(h2.status, PG_ERR_TIMEOUT);
    assert_null(h2.conn);
    assert_true(ts_now_ms() - t0 >= 190);
    assert_int_equal(q.calls, 0);

    const char *const script[] = {
        "SELECT pg_backend_pid()",
        "SET app.session = 'leaky'",
        "SET statement_timeout = 1234",
        "SELECT pg_advisory_lock(77)",
        "BEGIN",
        "SET LOCAL app.tenant = 'factory-a'",
        "INSERT INTO tx_rows VALUES (1)",
        "SELECT current_setting('app.tenant')",
    };
    conn_script(c, script, 8, r);
    assert_string_equal(r[7].value, "factory-a");
    char *pid = strdup(r[0].value);
    for (int i = 0; i < 8; i++)
        pgs_res_clear(&r[i]);

    /* Released mid-transaction: rolled back and reset before anyone else runs on it. */
    pg_conn_release(c);
    assert_int_equal(pgs_run_until(base, &q.calls, 1, 5000), 0);
    assert_int_equal(q.status, PG_OK);
    assert_string_equal(q.value, "0");

    c = acquire(p);
    const char *const check[] = {
        "SELECT pg_backend_pid()",
        "SELECT coalesce(current_setting('app.tenant', true), '')",
        "SELECT coalesce(current_setting('app.session', true), '')",
        "SHOW statement_timeout",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        "SELECT count(*) FROM tx_rows",
    };
    conn_script(c, check, 6, r);
    assert_string_equal(r[0].value, pid); /* the same connection, reset rather than replaced */
    assert_string_equal(r[1].value, "");
    assert_string_equal(r[2].value, "");
    assert_string_equal(r[3].value, "4s"); /* the pool's own setting survives the reset */
    assert_string_equal(r[4].value, "0");
    assert_string_equal(r[5].value, "0");
    for (int i = 0; i < 6; i++)
        pgs_res_clear(&r[i]);

    /* A committed transaction is kept, of course. */
    const char *const commit[] = {"BEGIN", "INSERT INTO tx_rows VALUES (2)", "COMMIT"};
    conn_script(c, commit, 3, r);
    for (int i = 0; i < 3; i++)
        pgs_res_clear(&r[i]);

    /* Released with a statement still running: that call gets CLOSED, the connection goes. */
    struct pgs_res slow = {0};
    assert_int_equal(pg_conn_query(c, 5000, pgs_on_result, &slow, "SELECT pg_sleep(3)", 0, NULL),
                     0);
    pgs_run_for(base, 50);
    pg_conn_release(c);
    assert_int_equal(pg_conn_query(c, 5000, pgs_on_result, &slow, "SELECT 1", 0, NULL), -1);
    assert_int_equal(pgs_run_until(base, &slow.calls, 1, 1000), 0);
    assert_int_equal(slow.status, PG_ERR_CLOSED);
    pgs_res_clear(&q);
    assert_int_equal(pgs_query(base, p, 0, "SELECT count(*) FROM tx_rows", 0, NULL, &q), PG_OK);
    assert_string_equal(q.value, "1");
    assert_int_equal(pgs_query(base, p, 0, "SELECT pg_backend_pid()", 0, NULL, &q), PG_OK);
    assert_string_not_equal(q.value, pid);
    pgs_run_for(base, 20);
    assert_int_equal(slow.calls, 1);
    pgs_res_clear(&slow);
    pgs_res_clear(&q);
    free(pid);
    pg_pool_free(p);
}

/* ---- COPY ---- */

#define COPY_ROWS 200000

struct copier {
    struct pg_conn *conn;
    int next_row, started, ended, drains, would_block, failed;
    struct pgs_res start, end;
    const char *dup_at; /* a row to send twice, or NULL */
};

static void copy_pump(struct copier *cp);

static void on_copy_start(void *arg, const struct pg_result_info *r)
{
    struct copier *cp = arg;
    pgs_on_result(&cp->start, r);
    cp->started = 1;
    if (r->status == PG_OK)
        copy_pump(cp);
}

static void on_copy_end(void *arg, const struct pg_result_info *r)
{
    struct copier *cp = arg;
    pgs_on_result(&cp->end, r);
    cp->ended = 1;
}

static void on_drain(void *arg, enum pg_status status)
{
    struct copier *cp = arg;
    cp->drains++;
    if (status != PG_OK) {
        cp->failed = 1;
        return;
    }
    copy_pump(cp);
}

/* Sends 64 KiB chunks until the connection pushes back or the rows run out. */
static void copy_pump(struct copier *cp)
{
    char chunk[65536];
    while (cp->next_row < COPY_ROWS) {
        size_t len = 0;
        while (cp->next_row < COPY_ROWS && len + 100 < sizeof(chunk)) {
            len += (size_t)snprintf(chunk + len, sizeof(chunk) - len,
                                    "%d,tag-%08d-0123456789abcdef0123456789abcdef\n", cp->next_row,
                                    cp->next_row);
            cp->next_row++;
        }
        int rc = pg_conn_copy_data(cp->conn, chunk, len);
        assert_int_not_equal(rc, -1);
        if (rc == 1) {
            cp->would_block++;
            return; /* the drain callback resumes */
        }
    }
    if (cp->dup_at != NULL)
        assert_int_not_equal(pg_conn_copy_data(cp->conn, cp->dup_at, strlen(cp->dup_at)), -1);
    assert_int_equal(pg_conn_copy_end(cp->conn, 10000, NULL, on_copy_end, cp), 0);
}

static void test_copy_from_stdin_200k_rows(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(2);
    struct pgs_res r = {0};
    exec_ok(p, "CREATE TABLE copy_rows (id int PRIMARY KEY, tag text NOT NULL)");

    struct copier *cp = calloc(1, sizeof(*cp));
    cp->conn = acquire(p);
    /* Not in COPY yet: data and end are refused. */
    assert_int_equal(pg_conn_copy_data(cp->conn, "x", 1), -1);
    assert_int_equal(pg_conn_copy_end(cp->conn, 0, NULL, on_copy_end, cp), -1);
    int64_t t0 = ts_now_ms();
    assert_int_equal(pg_conn_copy_start(cp->conn, 5000,
                                        "COPY copy_rows (id, tag) FROM STDIN WITH (FORMAT csv)",
                                        on_copy_start, on_drain, cp),
                     0);
    assert_int_equal(pgs_run_until(base, &cp->ended, 1, 60000), 0);
    int64_t took = ts_now_ms() - t0;
    assert_int_equal(cp->start.calls, 1);
    assert_int_equal(cp->start.status, PG_OK);
    assert_int_equal(cp->end.calls, 1);
    if (cp->end.status != PG_OK)
        fail_msg("COPY: %s %s", cp->end.sqlstate, cp->end.message);
    assert_int_equal(cp->end.cmd_tuples, COPY_ROWS);
    assert_false(cp->failed);
    /* Every push-back was followed by exactly one drain, which resumed the sender. */
    assert_int_equal(cp->drains, cp->would_block);
    print_message("COPY of %d rows took %lld ms, pushed back %d times\n", COPY_ROWS,
                  (long long)took, cp->would_block);
    pg_conn_release(cp->conn);
    assert_int_equal(pgs_query(base, p, 0, "SELECT count(*) FROM copy_rows", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "200000");
    assert_int_equal(
        pgs_query(base, p, 0, "SELECT tag FROM copy_rows WHERE id = 199999", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, "tag-00199999-0123456789abcdef0123456789abcdef");

    /* A row the table refuses fails the whole COPY with its SQLSTATE; nothing is stored. */
    exec_ok(p, "CREATE TABLE copy_more (id int PRIMARY KEY, tag text NOT NULL)");
    pgs_res_clear(&cp->start);
    pgs_res_clear(&cp->end);
    struct pg_conn *c = acquire(p);
    memset(cp, 0, sizeof(*cp));
    cp->conn = c;
    cp->next_row = COPY_ROWS - 1000;
    cp->dup_at = "199999,again\n";
    assert_int_equal(pg_conn_copy_start(c, 5000, "COPY copy_more FROM STDIN WITH (FORMAT csv)",
                                        on_copy_start, on_drain, cp),
                     0);
    assert_int_equal(pgs_run_until(base, &cp->ended, 1, 10000), 0);
    assert_int_equal(cp->end.status, PG_ERR_QUERY);
    assert_string_equal(cp->end.sqlstate, "23505");

    /* A COPY the caller aborts stores nothing either, and the connection serves on. */
    pgs_res_clear(&r);
    struct pgs_res s = {0}, e = {0};
    assert_int_equal(pg_conn_copy_start(c, 5000, "COPY copy_more FROM STDIN WITH (FORMAT csv)",
                                        pgs_on_result, NULL, &s),
                     0);
    assert_int_equal(pgs_run_until(base, &s.calls, 1, 5000), 0);
    assert_int_equal(s.status, PG_OK);
    assert_int_equal(pg_conn_copy_data(c, "1,one\n2,two\n", 12) >= 0, 1);
    assert_int_equal(pg_conn_query(c, 0, pgs_on_result, &r, "SELECT 1", 0, NULL), -1);
    assert_int_equal(pg_conn_copy_end(c, 5000, "upload rejected by the caller", pgs_on_result, &e),
                     0);
    assert_int_equal(pgs_run_until(base, &e.calls, 1, 5000), 0);
    assert_int_equal(e.status, PG_ERR_QUERY);
    assert_non_null(strstr(e.message, "upload rejected by the caller"));
    assert_int_equal(
        pg_conn_query(c, 0, pgs_on_result, &r, "SELECT count(*) FROM copy_more", 0, NULL), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 5000), 0);
    assert_string_equal(r.value, "0");
    pg_conn_release(c);
    pgs_res_clear(&s);
    pgs_res_clear(&e);
    pgs_res_clear(&r);
    pgs_res_clear(&cp->start);
    pgs_res_clear(&cp->end);
    free(cp);
    pg_pool_free(p);
}

/* ---- freeing ---- */

struct closer {
    struct pg_pool *pool;
    struct pgs_res *others;
    int nothers;
    int calls, others_seen;
};

static void free_from_callback(void *arg, const struct pg_result_info *r)
{
    struct closer *cl = arg;
    cl->calls++;
    assert_int_equal(r->status, PG_OK);
    pg_pool_free(cl->pool);
    /* Everything else was called back inside pg_pool_free. */
    for (int i = 0; i < cl->nothers; i++)
        cl->others_seen += cl->others[i].calls;
}

static int retry_rc;
static void query_from_closed_callback(void *arg, const struct pg_result_info *r)
{
    struct pg_pool **pp = arg;
    assert_int_equal(r->status, PG_ERR_CLOSED);
    /* The pool is closing: new calls are refused, not queued. */
    retry_rc = pg_query(*pp, 0, pgs_on_result, NULL, "SELECT 1", 0, NULL);
}

/* One arg serves both callbacks: pgs_on_result fills start, the first member. */
struct held_back {
    struct pgs_res start;
    int drains, failed;
    enum pg_status last;
};

static void count_drain(void *arg, enum pg_status status)
{
    struct held_back *hb = arg;
    hb->drains++;
    hb->failed |= status != PG_OK;
    hb->last = status;
}

/* Sends rows until pg_conn_copy_data says to wait; returns the bytes sent. */
static size_t fill_until_held_back(struct pg_conn *c, int *rows)
{
    static char chunk[65536];
    size_t sent = 0;
    int rc = 0;
    while (rc == 0 && sent < (size_t)256 << 20) {
        size_t len = 0;
        while (len + 100 < sizeof(chunk)) {
            len += (size_t)snprintf(chunk + len, sizeof(chunk) - len,
                                    "%d,tag-%08d-0123456789abcdef0123456789abcdef\n", *rows, *rows);
            (*rows)++;
        }
        rc = pg_conn_copy_data(c, chunk, len);
        assert_int_not_equal(rc, -1);
        sent += len;
    }
    assert_int_equal(rc, 1);
    return sent;
}

static void test_copy_backpressure_holds_the_sender(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(1);
    struct held_back hb = {0};
    struct pgs_res r = {0}, end = {0};
    exec_ok(p, "CREATE TABLE copy_bp (id int, tag text)");
    struct pg_conn *c = acquire(p);
    assert_int_equal(pg_conn_copy_start(c, 5000, "COPY copy_bp FROM STDIN (FORMAT csv)",
                                        pgs_on_result, count_drain, &hb),
                     0);
    assert_int_equal(pgs_run_until(base, &hb.start.calls, 1, 5000), 0);
    assert_int_equal(hb.start.status, PG_OK);

    /* The server stops reading: the socket fills, and the sender is told to wait. */
    ts_pg_pause(&pg);
    int rows = 0;
    size_t sent = fill_until_held_back(c, &rows);
    print_message("held back after %zu KiB with the server stopped\n", sent / 1024);
    assert_true(sent < (size_t)64 << 20); /* kernel buffers, not the whole upload */
    pgs_run_for(base, 300);
    assert_int_equal(hb.drains, 0); /* no drain while nothing moves */

    ts_pg_resume(&pg);
    assert_int_equal(pgs_run_until(base, &hb.drains, 1, 5000), 0);
    assert_false(hb.failed);
    assert_int_equal(pg_conn_copy_end(c, 10000, NULL, pgs_on_result, &end), 0);
    assert_int_equal(pgs_run_until(base, &end.calls, 1, 10000), 0);
    assert_int_equal(end.status, PG_OK);
    assert_int_equal(end.cmd_tuples, rows);
    pg_conn_release(c);
    char want[16];
    snprintf(want, sizeof(want), "%d", rows);
    assert_int_equal(pgs_query(base, p, 0, "SELECT count(*) FROM copy_bp", 0, NULL, &r), PG_OK);
    assert_string_equal(r.value, want);
    pgs_res_clear(&r);
    pgs_res_clear(&hb.start);
    pgs_res_clear(&end);

    /* A sender waiting for its drain when the pool goes hears PG_ERR_CLOSED, once. */
    memset(&hb, 0, sizeof(hb));
    c = acquire(p);
    assert_int_equal(pg_conn_copy_start(c, 5000, "COPY copy_bp FROM STDIN (FORMAT csv)",
                                        pgs_on_result, count_drain, &hb),
                     0);
    assert_int_equal(pgs_run_until(base, &hb.start.calls, 1, 5000), 0);
    ts_pg_pause(&pg);
    rows = 0;
    fill_until_held_back(c, &rows);
    pg_pool_free(p);
    ts_pg_resume(&pg);
    assert_int_equal(hb.drains, 1);
    assert_int_equal(hb.last, PG_ERR_CLOSED);
    pgs_run_for(base, 50);
    assert_int_equal(hb.drains, 1);
    pgs_res_clear(&hb.start);
}

static void test_free_with_calls_in_flight(void **state)
{
    (void)state;
    struct pg_pool *p = new_pool(2);
    struct pgs_res r[5];
    memset(r, 0, sizeof(r));

    free(pgs_value(base, p, "SELECT 1"));
    struct pg_conn *c = acquire(p);
    assert_int_equal(pg_conn_query(c, 10000, pgs_on_result, &r[0], "SELECT pg_sleep(5)", 0, NULL),
                     0);
    assert_int_equal(pg_conn_query(c, 10000, pgs_on_result, &r[1], "SELECT 2", 0, NULL), 0);
    for (int i = 2; i < 5; i++)
        assert_int_equal(pg_query(p, 10000, pgs_on_result, &r[i], "SELECT pg_sleep(5)", 0, NULL),
                         0);
    struct pg_pool *pp = p;
    retry_rc = 0;
    assert_int_equal(
        pg_query(p, 10000, query_from_closed_callback, &pp, "SELECT pg_sleep(5)", 0, NULL), 0);
    pgs_run_for(base, 100);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].calls, 0);
    pg_pool_free(p);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, PG_ERR_CLOSED);
    }
    assert_int_equal(retry_rc, -1);
    pgs_run_for(base, 100);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        pgs_res_clear(&r[i]);
    }

    /* Freed from inside one of its own callbacks. */
    p = new_pool(1);
    struct closer cl = {.pool = p, .others = r, .nothers = 3};
    assert_int_equal(pg_query(p, 5000, free_from_callback, &cl, "SELECT 1", 0, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pg_query(p, 5000, pgs_on_result, &r[i], "SELECT pg_sleep(5)", 0, NULL), 0);
    assert_int_equal(pgs_run_until(base, &cl.calls, 1, 5000), 0);
    assert_int_equal(cl.others_seen, 3);
    pgs_run_for(base, 100);
    assert_int_equal(cl.calls, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, PG_ERR_CLOSED);
        pgs_res_clear(&r[i]);
    }

    /* Freed before it ever connected, and while connecting. */
    p = new_pool(2);
    assert_int_equal(pg_query(p, 5000, pgs_on_result, &r[0], "SELECT 1", 0, NULL), 0);
    pg_pool_free(p);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].status, PG_ERR_CLOSED);
    pgs_res_clear(&r[0]);
    p = new_pool(2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    pg_pool_free(p);
    pgs_run_for(base, 50);
}

static void test_passwords_never_reach_the_log(void **state)
{
    (void)state;
    char path[] = "/tmp/tp-pglog.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_init("test_pg", LOG_DEBUG, fd);

    char uri[256], kv[256];
    snprintf(uri, sizeof(uri), "postgresql://tagproof:hunter2-uri@127.0.0.1:%d/tagproof", pg.port);
    snprintf(kv, sizeof(kv),
             "host=127.0.0.1 port=%d user=tagproof password=hunter2-kv dbname=tagproof", pg.port);
    struct pgs_res r = {0};
    const char *infos[] = {uri, kv};
    for (int i = 0; i < 2; i++) {
        struct pg_options o = pgs_options(infos[i], 2);
        struct pg_pool *p = pg_pool_new(base, &o);
        assert_non_null(p);
        pgs_run_for(base, 300); /* the authentication failure makes the pool "down" */
        int64_t t0 = ts_now_ms();
        assert_int_equal(pgs_query(base, p, 3000, "SELECT 1", 0, NULL, &r), PG_ERR_CONNECTION);
        assert_true(ts_now_ms() - t0 < 300); /* fast, not at the 3 s deadline */
        assert_non_null(strstr(r.message, "password authentication failed"));
        assert_null(strstr(r.message, "hunter2"));
        struct pg_stats st;
        pg_pool_stats(p, &st);
        assert_int_equal(st.down, 1);
        assert_true(st.connect_failures >= 1);
        pg_pool_free(p);
    }
    pgs_res_clear(&r);

    /* A conninfo libpq cannot parse is refused up front, without echoing its secrets. */
    struct pg_options bad = pgs_options("host=127.0.0.1 password=hunter2-bad bogus_option=1", 1);
    assert_null(pg_pool_new(base, &bad));

    log_init("tagproof", LOG_INFO, 2);
    char text[65536];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    text[n] = '\0';
    assert_null(strstr(text, "hunter2"));
    assert_non_null(strstr(text, "[redacted]"));
    assert_non_null(strstr(text, "password authentication failed"));
    assert_non_null(strstr(text, "bogus_option"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parameters_nulls_and_sqlstates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent_queries_share_a_small_pool, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_answers_busy_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_statements_survive_reconnect, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_transactions_never_mix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acquired_connection_never_leaks_state, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_from_stdin_200k_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_backpressure_holds_the_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_calls_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passwords_never_reach_the_log, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
