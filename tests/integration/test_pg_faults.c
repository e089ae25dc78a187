/*
 * Integration tests of pg when PostgreSQL misbehaves: a stopped (SIGSTOP) server meets the
 * client-side deadline, a slow statement meets the server-side one, a crashed server makes
 * calls fail fast and the pool recover alone, and none of it ever stalls the event loop.
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

static int group_setup(void **state)
{
    (void)state;
    pgs_cluster_start(&pa);
    pgs_cluster_start(&pb);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_destroy(&pa);
    ts_pg_destroy(&pb);
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
    ts_pg_resume(&pa); /* whatever a failed test left behind */
    event_base_free(base);
    base = NULL;
    return 0;
}

/* Runs the loop until every connection of the pool is open. */
static void wait_all_open(struct pg_pool *p)
{
    struct pg_stats st;
    int64_t end = ts_now_ms() + 5000;
    do {
        pgs_run_for(base, 10);
        pg_pool_stats(p, &st);
    } while (st.open < st.connections && ts_now_ms() < end);
    assert_int_equal(st.open, st.connections);
}

static void test_deadline_while_server_is_stopped(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pa.conninfo, 2);
    o.connect_timeout_ms = 1000;
    struct pg_pool *p = pg_pool_new(base, &o);
    struct pgs_res r = {0}, q1 = {0}, q2 = {0};
    wait_all_open(p);

    ts_pg_pause(&pa);
    int64_t t0 = ts_now_ms();
    assert_int_equal(pgs_query(base, p, 200, "SELECT 1", 0, NULL, &r), PG_ERR_TIMEOUT);
    int64_t took = r.done_ms - t0;
    print_message("deadline 200 ms: called back after %lld ms\n", (long long)took);
    assert_true(took >= 195 && took <= 350);
    assert_non_null(strstr(r.message, "deadline"));

    /* A call waiting in the queue honours its deadline too. */
    t0 = ts_now_ms();
    assert_int_equal(pg_query(p, 300, pgs_on_result, &q1, "SELECT 1", 0, NULL), 0);
    assert_int_equal(pg_query(p, 300, pgs_on_result, &q2, "SELECT 2", 0, NULL), 0);
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.queued, 1); /* one connection left, busy with q1 */
    assert_int_equal(pgs_run_until(base, &q2.calls, 1, 2000), 0);
    assert_int_equal(pgs_run_until(base, &q1.calls, 1, 2000), 0);
    assert_int_equal(q1.status, PG_ERR_TIMEOUT);
    assert_int_equal(q2.status, PG_ERR_TIMEOUT);
    assert_true(q2.done_ms - t0 >= 295 && q2.done_ms - t0 <= 450);

    /* Back from the stop: the pool works again without help. */
    ts_pg_resume(&pa);
    int ms = pgs_wait_ok(base, p, "SELECT 1", 5000);
    print_message("usable again %d ms after the resume\n", ms);
    assert_true(ms >= 0 && ms < 3000);
    wait_all_open(p);
    pg_pool_stats(p, &st);
    assert_true(st.timeouts == 3);
    pgs_res_clear(&r);
    pgs_res_clear(&q1);
    pgs_res_clear(&q2);
    pg_pool_free(p);
}

static void test_statement_timeout_is_the_primary_deadline(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pa.conninfo, 1);
    o.statement_timeout_ms = 200;
    struct pg_pool *p = pg_pool_new(base, &o);
    struct pgs_res r = {0};

    char *pid = pgs_value(base, p, "SELECT pg_backend_pid()");
    int64_t t0 = ts_now_ms();
    assert_int_equal(pgs_query(base, p, 3000, "SELECT pg_sleep(5)", 0, NULL, &r), PG_ERR_TIMEOUT);
    print_message("statement_timeout 200 ms: called back after %lld ms\n",
                  (long long)(r.done_ms - t0));
    assert_string_equal(r.sqlstate, "57014");
    assert_true(r.done_ms - t0 >= 190 && r.done_ms - t0 < 600);
    /* The server gave up, not the client: the connection is kept. */
    char *pid2 = pgs_value(base, p, "SELECT pg_backend_pid()");
    assert_string_equal(pid, pid2);
    struct pg_stats st;
    pg_pool_stats(p, &st);
    assert_int_equal(st.disconnects, 0);
    free(pid);
    free(pid2);
    pg_pool_free(p);

    /* Without a server-side limit, the client-side backstop ends it and replaces the link. */
    o.statement_timeout_ms = 0;
    o.query_timeout_ms = 300;
    p = pg_pool_new(base, &o);
    pid = pgs_value(base, p, "SELECT pg_backend_pid()");
    t0 = ts_now_ms();
    assert_int_equal(pgs_query(base, p, 0, "SELECT pg_sleep(5)", 0, NULL, &r), PG_ERR_TIMEOUT);
    assert_string_equal(r.sqlstate, "");
    assert_true(r.done_ms - t0 >= 295 && r.done_ms - t0 < 500);
    pid2 = pgs_value(base, p, "SELECT pg_backend_pid()");
    assert_string_not_equal(pid, pid2);
    pg_pool_stats(p, &st);
    assert_int_equal(st.disconnects, 1);
    free(pid);
    free(pid2);
    pgs_res_clear(&r);
    pg_pool_free(p);
}

struct held {
    int calls;
    struct pg_conn *conn;
};

static void on_acquire(void *arg, struct pg_conn *conn, enum pg_status status)
{
    struct held *h = arg;
    h->calls++;
    h->conn = status == PG_OK ? conn : NULL;
}

static void test_crash_fails_fast_and_recovers_alone(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pa.conninfo, 3);
    struct pg_pool *p = pg_pool_new(base, &o);
    struct pgs_res r = {0};
    struct pg_stats st;
    const char *one[] = {"41"};
    assert_int_equal(pg_pool_prepare(p, "inc", "SELECT $1::int + 1", 1), 0);
    wait_all_open(p);
    struct held h = {0};
    assert_int_equal(pg_pool_acquire(p, 1000, on_acquire, &h), 0);
    assert_int_equal(pgs_run_until(base, &h.calls, 1, 2000), 0);
    assert_non_null(h.conn);

    ts_pg_kill(&pa);
    pgs_run_for(base, 100); /* the connections see the server go */
    /* The held connection is broken too; its holder hears so, then gives it back. */
    assert_int_equal(pg_conn_query(h.conn, 1000, pgs_on_result, &r, "SELECT 1", 0, NULL), 0);
    assert_int_equal(pgs_run_until(base, &r.calls, 1, 2000), 0);
    assert_int_equal(r.status, PG_ERR_CONNECTION);
    pg_conn_release(h.conn);
    for (int i = 0; i < 10; i++) {
        int64_t t0 = ts_now_ms();
        assert_int_equal(pgs_query(base, p, 2000, "SELECT 1", 0, NULL, &r), PG_ERR_CONNECTION);
        assert_true(r.done_ms - t0 < 300); /* far from the 2 s deadline */
        pgs_run_for(base, 30);
    }
    pg_pool_stats(p, &st);
    assert_int_equal(st.down, 1);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.disconnects, 3);
    assert_true(st.connection_errors >= 10);

    assert_int_equal(ts_pg_start(&pa), 0);
    int ms = pgs_wait_ok(base, p, "SELECT 1", 5000);
    print_message("usable again %d ms after the restart\n", ms);
    assert_true(ms >= 0 && ms < 2000);
    wait_all_open(p); /* the other slots skip their backoff once one connects */
    pg_pool_stats(p, &st);
    assert_int_equal(st.down, 0);
    /* The new connections prepared the statement again. */
    for (int i = 0; i < 3; i++) {
        pgs_res_clear(&r);
        assert_int_equal(pg_query_prepared(p, 1000, pgs_on_result, &r, "inc", 1, one), 0);
        assert_int_equal(pgs_run_until(base, &r.calls, 1, 2000), 0);
        assert_int_equal(r.status, PG_OK);
        assert_string_equal(r.value, "42");
    }
    pgs_res_clear(&r);
    pg_pool_free(p);
}

/* ---- the loop never blocks ---- */

struct ticker {
    int64_t last, max_gap;
    int ticks;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct ticker *t = arg;
    int64_t now = ts_now_ms();
    (void)fd;
    (void)what;
    if (t->last != 0 && now - t->last > t->max_gap)
        t->max_gap = now - t->last;
    t->last = now;
    t->ticks++;
}

struct chain {
    struct pg_pool *pool;
    int done, failed, stop;
    int64_t sent, max_latency;
};

static void chain_next(struct chain *c);

static void on_chain(void *arg, const struct pg_result_info *r)
{
    struct chain *c = arg;
    int64_t lat = ts_now_ms() - c->sent;
    if (lat > c->max_latency)
        c->max_latency = lat;
    if (r->status != PG_OK)
        c->failed++;
    c->done++;
    if (!c->stop)
        chain_next(c);
}

static void chain_next(struct chain *c)
{
    c->sent = ts_now_ms();
    assert_int_equal(pg_query(c->pool, 1000, on_chain, c, "SELECT count(*) FROM pg_class", 0, NULL),
                     0);
}

static void test_loop_never_blocks_on_a_stopped_server(void **state)
{
    (void)state;
    struct pg_options oa = pgs_options(pa.conninfo, 2), ob = pgs_options(pb.conninfo, 2);
    oa.connect_timeout_ms = 800;
    struct pg_pool *a = pg_pool_new(base, &oa), *b = pg_pool_new(base, &ob), *fresh = NULL;
    struct pgs_res slow = {0};
    wait_all_open(a);
    wait_all_open(b);

    ts_pg_pause(&pa);
    struct ticker t = {0};
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, &t);
    struct timeval tv = {0, 10 * 1000};
    event_add(tick, &tv);
    struct chain c = {.pool = b};

    int64_t t0 = ts_now_ms();
    /* A call stuck on the stopped server, its reconnect stuck too, and a new pool's connects. */
    assert_int_equal(pg_query(a, 1000, pgs_on_result, &slow, "SELECT 1", 0, NULL), 0);
    fresh = pg_pool_new(base, &oa);
    assert_non_null(fresh);
    chain_next(&c);
    pgs_run_for(base, 2000);
    c.stop = 1;
    int64_t elapsed = ts_now_ms() - t0;
    print_message("%d ticks in %lld ms, largest gap %lld ms; %d queries on the healthy server, "
                  "slowest %lld ms\n",
                  t.ticks, (long long)elapsed, (long long)t.max_gap, c.done,
                  (long long)c.max_latency);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, PG_ERR_TIMEOUT);
    assert_true(slow.done_ms - t0 >= 995 && slow.done_ms - t0 <= 1250);
    /*
     * A blocking call on the stopped server would stall the loop for a whole deadline (or
     * until the resume); the bounds leave room for a loaded machine, not for that.
     */
    assert_true(t.max_gap < 300);
    assert_true(t.ticks >= 100);
    assert_true(c.done >= 20);
    assert_int_equal(c.failed, 0);
    assert_true(c.max_latency < 500);

    int before = c.done;
    pgs_run_until(base, &c.done, before + 1, 2000); /* the last one in flight */
    event_free(tick);
    ts_pg_resume(&pa);
    assert_true(pgs_wait_ok(base, fresh, "SELECT 1", 5000) >= 0);
    pg_pool_free(fresh);
    pg_pool_free(a);
    pg_pool_free(b);
    pgs_res_clear(&slow);
}

/* ---- exactly once, whatever happens ---- */

#define CHAOS_MAX 100000

struct chaos {
    struct pg_pool *pool;
    int submitted, delivered, in_flight, stop;
    unsigned char *calls;
    int by_status[PG_ERR_BUSY + 1];
};

struct chaos_call {
    struct chaos *ch;
    int id;
};

static void chaos_submit(struct chaos *ch);

static void chaos_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    chaos_submit(arg);
}

static void on_chaos(void *arg, const struct pg_result_info *r)
{
    struct chaos_call *cc = arg;
    struct chaos *ch = cc->ch;
    ch->calls[cc->id]++;
    ch->by_status[r->status]++;
    ch->delivered++;
    ch->in_flight--;
    if (r->status == PG_OK)
        assert_int_equal(atoi(PQgetvalue(r->res, 0, 0)), cc->id);
    free(cc);
    /* Failures come back fast; retrying them at once would only spin. */
    struct timeval tv = {0, r->status == PG_OK ? 0 : 5000};
    event_base_once(base, -1, EV_TIMEOUT, chaos_later, ch, &tv);
}

/* Keeps 30 calls outstanding: more than the pool (4) and its queue (24) hold. */
static void chaos_submit(struct chaos *ch)
{
    static const char *const sql[] = {
        "SELECT $1::int",
        "SELECT $1::int FROM pg_sleep(0.01)",
        "SELECT $1::int FROM generate_series(1, 2000) LIMIT 1",
    };
    while (!ch->stop && ch->in_flight < 30 && ch->submitted < CHAOS_MAX) {
        struct chaos_call *cc = malloc(sizeof(*cc));
        char id[16];
        const char *v[] = {id};
        cc->ch = ch;
        cc->id = ch->submitted++;
        snprintf(id, sizeof(id), "%d", cc->id);
        assert_int_equal(pg_query(ch->pool, 250, on_chaos, cc, sql[cc->id % 3], 1, v), 0);
        ch->in_flight++;
    }
}

static void test_every_call_answered_exactly_once_through_chaos(void **state)
{
    (void)state;
    struct pg_options o = pgs_options(pa.conninfo, 4);
    o.queue_max = 24;
    o.connect_timeout_ms = 300;
    struct chaos *ch = calloc(1, sizeof(*ch));
    ch->calls = calloc(CHAOS_MAX, 1);
    ch->pool = pg_pool_new(base, &o);
    wait_all_open(ch->pool);

    chaos_submit(ch);
    pgs_run_for(base, 300);
    ts_pg_pause(&pa);
    pgs_run_for(base, 400);
    ts_pg_resume(&pa);
    pgs_run_for(base, 300);
    assert_int_equal(pgs_psql(&pa, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'tagproof';"),
                     0);
    pgs_run_for(base, 300);
    ts_pg_kill(&pa);
    pgs_run_for(base, 300);
    assert_int_equal(ts_pg_start(&pa), 0);
    pgs_run_for(base, 500);
    ch->stop = 1;
    int submitted = ch->submitted;
    assert_int_equal(pgs_run_until(base, &ch->delivered, submitted, 5000), 0);
    pgs_run_for(base, 200);
    print_message("%d calls: ok %d, query %d, timeout %d, connection %d, busy %d\n", submitted,
                  ch->by_status[PG_OK], ch->by_status[PG_ERR_QUERY], ch->by_status[PG_ERR_TIMEOUT],
                  ch->by_status[PG_ERR_CONNECTION], ch->by_status[PG_ERR_BUSY]);
    assert_int_equal(ch->delivered, submitted);
    for (int i = 0; i < submitted; i++)
        if (ch->calls[i] != 1)
            fail_msg("call %d answered %d times", i, ch->calls[i]);
    assert_int_equal(ch->by_status[PG_ERR_QUERY], 0);
    assert_int_equal(ch->by_status[PG_ERR_CLOSED], 0);
    assert_true(ch->by_status[PG_OK] >= 100);
    assert_true(ch->by_status[PG_ERR_TIMEOUT] > 0);    /* the stop */
    assert_true(ch->by_status[PG_ERR_CONNECTION] > 0); /* the terminate and the crash */
    assert_true(ch->by_status[PG_ERR_BUSY] > 0);       /* 30 outstanding, room for 28 */
    struct pg_stats st;
    pg_pool_stats(ch->pool, &st);
    assert_int_equal(st.calls, (uint64_t)submitted);
    assert_int_equal(st.ok + st.timeouts + st.connection_errors + st.rejected, (uint64_t)submitted);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.down, 0);
    pg_pool_free(ch->pool);
    free(ch->calls);
    free(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deadline_while_server_is_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_timeout_is_the_primary_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crash_fails_fast_and_recovers_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_never_blocks_on_a_stopped_server, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_call_answered_exactly_once_through_chaos, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
