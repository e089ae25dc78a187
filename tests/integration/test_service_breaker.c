/*
 * The circuit breaker against a real Redis: calls through the async client feed it; a killed
 * server opens it (and open means calls are refused without touching the network), a frozen
 * server opens it through timeouts, and a server that comes back closes it through the
 * half-open probes.
 */
#include "support.h"
#include "breaker.h"
#include "redis.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct driver {
    struct event_base *base;
    struct redis_client *redis;
    struct breaker *b;
    struct event *tick;
    long permitted, rejected, in_flight;
};

struct call {
    struct driver *d;
    uint64_t gen;
    int64_t started;
};

static void on_reply(void *arg, enum redis_status st, const redisReply *reply)
{
    struct call *c = arg;
    (void)reply;
    enum breaker_outcome o = st == REDIS_STATUS_OK        ? BREAKER_SUCCESS
                             : st == REDIS_STATUS_TIMEOUT ? BREAKER_TIMEOUT
                                                          : BREAKER_FAILURE;
    breaker_record(c->d->b, c->gen, o, ts_now_ms() - c->started);
    c->d->in_flight--;
    free(c);
}

/* Every 10 ms: one PING if the breaker allows it. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct driver *d = arg;
    uint64_t gen;
    (void)fd;
    (void)what;
    if (!breaker_allow(d->b, &gen)) {
        d->rejected++;
        return;
    }
    struct call *c = calloc(1, sizeof(*c));
    c->d = d;
    c->gen = gen;
    c->started = ts_now_ms();
    d->permitted++;
    d->in_flight++;
    assert_int_equal(redis_commandf(d->redis, 100, on_reply, c, "PING"), 0);
}

static void run_for(struct driver *d, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(d->base, &tv);
    event_base_dispatch(d->base);
}

/* Runs until the breaker reaches state, up to ms; the time it took, or -1. */
static int64_t run_until_state(struct driver *d, enum breaker_state state, int ms)
{
    int64_t start = ts_now_ms();
    while (ts_now_ms() - start < ms) {
        run_for(d, 20);
        if (breaker_state(d->b) == state)
            return ts_now_ms() - start;
    }
    return -1;
}

static void driver_init(struct driver *d, struct ts_redis *r)
{
    struct redis_options o = {.host = "127.0.0.1", .port = r->port, .command_timeout_ms = 100};
    struct breaker_config bc;
    breaker_config_default(&bc);
    bc.min_calls = 5;
    bc.window_ms = 2000;
    bc.open_wait_ms = 300;
    bc.half_open_permits = 3;
    memset(d, 0, sizeof(*d));
    d->base = event_base_new();
    d->redis = redis_client_new(d->base, &o, NULL);
    d->b = breaker_new("redis", &bc);
    assert_non_null(d->redis);
    assert_non_null(d->b);
    struct timeval ten = {0, 10000};
    d->tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
    event_add(d->tick, &ten);
}

static void driver_free(struct driver *d)
{
    event_free(d->tick);
    redis_client_free(d->redis);
    while (d->in_flight > 0)
        event_base_loop(d->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    breaker_free(d->b);
    event_base_free(d->base);
}

static void test_killed_server_opens_then_closes_on_return(void **state)
{
    (void)state;
    struct ts_redis r;
    struct driver d;
    ts_redis_init(&r);
    assert_int_equal(ts_redis_start(&r), 0);
    driver_init(&d, &r);

    assert_true(run_until_state(&d, BREAKER_CLOSED, 1000) >= 0);
    run_for(&d, 300);
    assert_int_equal(breaker_state(d.b), BREAKER_CLOSED);

    ts_redis_kill(&r);
    int64_t opened = run_until_state(&d, BREAKER_OPEN, 3000);
    assert_true(opened >= 0);
    long rejected_before = d.rejected;
    run_for(&d, 200);
    assert_true(d.rejected > rejected_before); /* open: calls refused without network */

    assert_int_equal(ts_redis_start(&r), 0);
    int64_t closed = run_until_state(&d, BREAKER_CLOSED, 5000);
    assert_true(closed >= 0);
    struct breaker_stats st;
    breaker_stats(d.b, &st);
    assert_true(st.transitions >= 3); /* closed -> open -> half-open -> closed */
    print_message("opened %lld ms after the kill, closed %lld ms after the restart\n",
                  (long long)opened, (long long)closed);
    driver_free(&d);
    ts_redis_destroy(&r);
}

static void test_frozen_server_opens_through_timeouts(void **state)
{
    (void)state;
    struct ts_redis r;
    struct driver d;
    ts_redis_init(&r);
    assert_int_equal(ts_redis_start(&r), 0);
    driver_init(&d, &r);
    run_for(&d, 300);

    ts_redis_pause(&r);
    int64_t opened = run_until_state(&d, BREAKER_OPEN, 3000);
    assert_true(opened >= 0);
    struct breaker_stats st;
    breaker_stats(d.b, &st);
    assert_true(st.timeouts > 0);

    ts_redis_resume(&r);
    assert_true(run_until_state(&d, BREAKER_CLOSED, 6000) >= 0);
    driver_free(&d);
    ts_redis_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_server_opens_then_closes_on_return),
        cmocka_unit_test(test_frozen_server_opens_through_timeouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
