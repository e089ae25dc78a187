/*
 * Integration tests of shared/redis against real, private redis-server processes: replies,
 * pipelining, deadlines, reconnection, never blocking the loop, stalled servers, freeing with
 * commands in flight, AUTH and SELECT. Every callback is counted: each must run exactly once.
 */
#include "support.h"
#include "redis_support.h"

#include "log.h"
#include "redis.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

static char log_path[512]; /* where the module's log lines go during these tests */

static struct redis_client *client_new(struct event_base *base, int port,
                                       const struct redis_options *extra)
{
    struct redis_options o = {0};
    const char *why = NULL;
    if (extra != NULL)
        o = *extra;
    o.host = "127.0.0.1";
    o.port = port;
    struct redis_client *c = redis_client_new(base, &o, &why);
    if (c == NULL)
        fail_msg("redis_client_new: %s", why);
    return c;
}

/*
 * What teardown must clean up even when a failed assertion ended the test early: servers left
 * running would outlive the test process.
 */
struct env {
    struct event_base *base;
    struct ts_redis srv[2];
    bool started[2];
};

static int env_setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->base = event_base_new()) == NULL) {
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 2; i++)
        if (e->started[i])
            ts_redis_destroy(&e->srv[i]);
    event_base_free(e->base);
    free(e);
    return 0;
}

/* Starts e->srv[i] on a fresh port. */
static void server_start(struct env *e, struct ts_redis *srv)
{
    ts_redis_init(srv);
    e->started[srv - e->srv] = true;
    assert_int_equal(ts_redis_start(srv), 0);
}

static struct redis_stats stats_of(const struct redis_client *c)
{
    struct redis_stats s;
    redis_client_stats(c, &s);
    return s;
}

static bool not_connected(void *client)
{
    return !redis_connected(client);
}

static bool late_reply_seen(void *client)
{
    return stats_of(client).late_replies > 0;
}

/* The reply's "name:value" line of an INFO section. */
static long long info_field(const char *info, const char *name)
{
    const char *p = strstr(info, name);
    assert_non_null(p);
    return strtoll(p + strlen(name) + 1, NULL, 10);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(redis_status_str(REDIS_STATUS_OK), "ok");
    assert_string_equal(redis_status_str(REDIS_STATUS_ERROR_REPLY), "error_reply");
    assert_string_equal(redis_status_str(REDIS_STATUS_TIMEOUT), "timeout");
    assert_string_equal(redis_status_str(REDIS_STATUS_DISCONNECTED), "disconnected");
    assert_string_equal(redis_status_str(REDIS_STATUS_CLOSED), "closed");
}

/* Options that cannot work are refused at creation with a reason, before any connecting. */
static void test_bad_options(void **state)
{
    struct event_base *base = event_base_new();
    const char *why = NULL;
    struct redis_options name = {.host = "redis.example.com", .port = 6379};
    struct redis_options port = {.host = "127.0.0.1", .port = 70000};
    struct redis_options no_master = {.sentinels = "127.0.0.1:26379"};
    struct redis_options bad_list = {.sentinels = "127.0.0.1:26379,sentinel-b:26379",
                                     .master_name = "m"};
    struct redis_options v6 = {.sentinels = "[::1]:26379, 127.0.0.1:26380", .master_name = "m"};
    (void)state;

    assert_null(redis_client_new(base, &name, &why));
    assert_non_null(strstr(why, "IP literal"));
    assert_null(redis_client_new(base, &port, &why));
    assert_null(redis_client_new(base, &no_master, &why));
    assert_non_null(strstr(why, "master name"));
    assert_null(redis_client_new(base, &bad_list, &why));
    assert_non_null(strstr(why, "ip:port"));
    /* IPv6 literals in brackets and spaces after commas are fine. */
    struct redis_client *c = redis_client_new(base, &v6, &why);
    assert_non_null(c);
    redis_client_free(c);
    event_base_free(base);
}

static void test_basic_commands(void **state)
{
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call r;

    server_start(e, srv);
    struct redis_client *c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);

    rs_do(base, c, &r, "SET", "greeting", "hello", NULL);
    assert_int_equal(r.status, REDIS_STATUS_OK);
    assert_int_equal(r.type, REDIS_REPLY_STATUS);
    assert_string_equal(r.str, "OK");
    rs_do(base, c, &r, "GET", "greeting", NULL);
    assert_int_equal(r.type, REDIS_REPLY_STRING);
    assert_string_equal(r.str, "hello");
    rs_do(base, c, &r, "GET", "no-such-key", NULL);
    assert_int_equal(r.status, REDIS_STATUS_OK);
    assert_int_equal(r.type, REDIS_REPLY_NIL);
    rs_do(base, c, &r, "INCR", "counter", NULL);
    assert_int_equal(r.type, REDIS_REPLY_INTEGER);
    assert_int_equal(r.integer, 1);
    rs_do(base, c, &r, "INCR", "counter", NULL);
    assert_int_equal(r.integer, 2);

    /* Error replies carry the server's text. */
    rs_do(base, c, &r, "INCR", "greeting", NULL);
    assert_int_equal(r.status, REDIS_STATUS_ERROR_REPLY);
    assert_int_equal(r.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r.str, "not an integer"));
    rs_do(base, c, &r, "NOSUCHCOMMAND", "x", NULL);
    assert_int_equal(r.status, REDIS_STATUS_ERROR_REPLY);
    assert_non_null(strstr(r.str, "unknown command"));

    /* Binary-safe keys and values: NUL, CR LF and protocol-looking bytes go through intact. */
    static const char key[] = {'k', '\0', 'e', 'y'};
    static const char value[] = {'a', '\0', 'b', '\r', '\n', '$', '3', '\r', '\n', 'c', '\xff'};
    const char *set_argv[] = {"SET", key, value};
    const size_t set_len[] = {3, sizeof(key), sizeof(value)};
    memset(&r, 0, sizeof(r));
    assert_int_equal(redis_command(c, 0, rs_record, &r, 3, set_argv, set_len), 0);
    assert_int_equal(rs_run_until(base, rs_called, &r, 2000), 0);
    assert_int_equal(r.status, REDIS_STATUS_OK);
    const char *get_argv[] = {"GET", key};
    const size_t get_len[] = {3, sizeof(key)};
    memset(&r, 0, sizeof(r));
    assert_int_equal(redis_command(c, 0, rs_record, &r, 2, get_argv, get_len), 0);
    assert_int_equal(rs_run_until(base, rs_called, &r, 2000), 0);
    assert_int_equal(r.type, REDIS_REPLY_STRING);
    assert_int_equal(r.len, sizeof(value));
    assert_memory_equal(r.str, value, sizeof(value));
    rs_do(base, c, &r, "GET", "k", NULL); /* "k\0ey" is not "k" */
    assert_int_equal(r.type, REDIS_REPLY_NIL);

    /* hiredis formatting: %b is one binary argument, %s one argument even with spaces. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(redis_commandf(c, 0, rs_record, &r, "STRLEN %b", key, sizeof(key)), 0);
    assert_int_equal(rs_run_until(base, rs_called, &r, 2000), 0);
    assert_int_equal(r.integer, (long long)sizeof(value));
    memset(&r, 0, sizeof(r));
    assert_int_equal(redis_commandf(c, 0, rs_record, &r, "SET %s %s", "two words", "x y"), 0);
    assert_int_equal(rs_run_until(base, rs_called, &r, 2000), 0);
    rs_do(base, c, &r, "GET", "two words", NULL);
    assert_string_equal(r.str, "x y");

    /* Refused outright, and then the callback never runs. */
    struct rs_call never = {0};
    const char *sub[] = {"subscribe", "ch"};
    const char *reply_off[] = {"CLIENT", "REPLY", "OFF"};
    assert_int_equal(redis_command(c, 0, rs_record, &never, 2, sub, NULL), -1);
    assert_int_equal(redis_command(c, 0, rs_record, &never, 3, reply_off, NULL), -1);
    assert_int_equal(redis_commandf(c, 0, rs_record, &never, "MONITOR"), -1);
    assert_int_equal(redis_commandf(c, 0, rs_record, &never, "psubscribe %s", "*"), -1);
    assert_int_equal(redis_command(c, 0, rs_record, &never, 0, sub, NULL), -1);
    assert_int_equal(redis_command(c, 0, NULL, &never, 1, sub + 1, NULL), -1);
    rs_run_for(base, 20);
    assert_int_equal(never.calls, 0);
    /* ... and the connection is still in step: the next reply is the next command's. */
    rs_do(base, c, &r, "ECHO", "still in step", NULL);
    assert_string_equal(r.str, "still in step");

    struct redis_stats s = stats_of(c);
    assert_true(s.connected);
    assert_string_equal(s.state, "ready");
    assert_string_equal(s.master_host, "127.0.0.1");
    assert_int_equal(s.master_port, srv->port);
    assert_int_equal(s.commands, 14);
    assert_int_equal(s.replies, 12);
    assert_int_equal(s.error_replies, 2);
    assert_int_equal(s.timeouts, 0);
    assert_int_equal(s.connects, 1);

    redis_client_free(c);
}

struct seq {
    int next; /* the index whose reply should come next */
    int errors;
};
struct seq_item {
    struct seq *seq;
    int i;
    int calls;
};

static void on_seq(void *arg, enum redis_status st, const redisReply *reply)
{
    struct seq_item *it = arg;
    it->calls++;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_INTEGER ||
        reply->integer != it->i + 1 || it->seq->next != it->i)
        it->seq->errors++;
    it->seq->next++;
}

static bool seq_done(void *arg)
{
    return ((struct seq *)arg)->next == 10000;
}

static void test_pipelining(void **state)
{
    enum { N = 10000 };
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct seq seq = {0};
    struct seq_item *items = calloc(N, sizeof(*items));
    struct rs_call r, info;

    server_start(e, srv);
    struct redis_client *c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);

    /* 10,000 commands issued back to back: INCR's reply is the command's position. */
    int64_t t0 = ts_now_ms();
    for (int i = 0; i < N; i++) {
        items[i].seq = &seq;
        items[i].i = i;
        assert_int_equal(redis_commandf(c, 10000, on_seq, &items[i], "INCR seq"), 0);
    }
    assert_int_equal(seq.next, 0);
    assert_int_equal(rs_run_until(base, seq_done, &seq, 15000), 0);
    print_message("      10000 pipelined INCR: %lld ms\n", (long long)(ts_now_ms() - t0));
    rs_run_for(base, 10);
    assert_int_equal(seq.errors, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(items[i].calls, 1);

    /*
     * One round trip: the server counts its socket reads. 100 commands plus an INFO issued in
     * one go arrive in one read (two at most), where one at a time they would take 100.
     */
    rs_do(base, c, &info, "INFO", "stats", NULL);
    long long reads0 = info_field(info.str, "total_reads_processed");
    for (int i = 0; i < 5; i++)
        rs_do(base, c, &r, "INCR", "one-by-one", NULL);
    rs_do(base, c, &info, "INFO", "stats", NULL);
    long long reads1 = info_field(info.str, "total_reads_processed");
    assert_true(reads1 - reads0 >= 6); /* the measure sees separate round trips */
    for (int i = 0; i < 100; i++) {
        items[i].calls = 0;
        assert_int_equal(redis_commandf(c, 2000, rs_record, &r, "INCR batched"), 0);
    }
    memset(&info, 0, sizeof(info));
    assert_int_equal(redis_commandf(c, 2000, rs_record, &info, "INFO stats"), 0);
    assert_int_equal(rs_run_until(base, rs_called, &info, 3000), 0);
    long long reads2 = info_field(info.str, "total_reads_processed");
    print_message("      reads for 101 pipelined commands: %lld\n", reads2 - reads1);
    assert_true(reads2 - reads1 >= 1 && reads2 - reads1 <= 2);
    rs_do(base, c, &r, "GET", "batched", NULL);
    assert_string_equal(r.str, "100");

    redis_client_free(c);
    free(items);
}

static void test_deadline(void **state)
{
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call r, late;

    server_start(e, srv);
    struct redis_client *c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);
    rs_do(base, c, &r, "SET", "k", "before", NULL);

    ts_redis_pause(srv);
    memset(&late, 0, sizeof(late));
    int64_t t0 = ts_now_ms();
    assert_int_equal(redis_commandf(c, 100, rs_record, &late, "SET k after"), 0);
    assert_int_equal(late.calls, 0);
    assert_int_equal(rs_run_until(base, rs_called, &late, 2000), 0);
    int64_t took = late.at_ms - t0;
    print_message("      deadline of 100 ms answered after %lld ms\n", (long long)took);
    assert_int_equal(late.status, REDIS_STATUS_TIMEOUT);
    assert_int_equal(late.type, 0);
    assert_true(took >= 80 && took <= 400);
    rs_run_for(base, 200);
    assert_int_equal(late.calls, 1);

    /* The reply comes after SIGCONT, is counted and dropped: no second callback. */
    ts_redis_resume(srv);
    assert_int_equal(rs_run_until(base, late_reply_seen, c, 3000), 0);
    rs_run_for(base, 50);
    assert_int_equal(late.calls, 1);
    assert_true(redis_connected(c));
    rs_do(base, c, &r, "GET", "k", NULL); /* the late command did run on the server */
    assert_string_equal(r.str, "after");

    struct redis_stats s = stats_of(c);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.late_replies, 1);
    assert_int_equal(s.disconnects, 0);

    redis_client_free(c);
}

static void test_reconnect(void **state)
{
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call r, inflight, fast;

    server_start(e, srv);
    struct redis_client *c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);
    rs_do(base, c, &r, "SET", "k", "v", NULL);

    /* A command in flight when the server dies is answered DISCONNECTED at once. */
    memset(&inflight, 0, sizeof(inflight));
    assert_int_equal(redis_commandf(c, 5000, rs_record, &inflight, "BLPOP nothing 10"), 0);
    rs_run_for(base, 50);
    ts_redis_kill(srv);
    int64_t killed = ts_now_ms();
    assert_int_equal(rs_run_until(base, rs_called, &inflight, 2000), 0);
    assert_int_equal(inflight.status, REDIS_STATUS_DISCONNECTED);
    assert_true(inflight.at_ms - killed < 300);
    assert_false(redis_connected(c));

    /* While down, commands fail fast: on the next loop iteration, not at their deadline. */
    for (int i = 0; i < 3; i++) {
        memset(&fast, 0, sizeof(fast));
        int64_t t0 = ts_now_ms();
        assert_int_equal(redis_commandf(c, 1000, rs_record, &fast, "GET k"), 0);
        assert_int_equal(fast.calls, 0);
        assert_int_equal(rs_run_until(base, rs_called, &fast, 2000), 0);
        assert_int_equal(fast.status, REDIS_STATUS_DISCONNECTED);
        assert_true(fast.at_ms - t0 < 100); /* the deadline was 1000 ms */
        rs_run_for(base, 400);
        assert_int_equal(fast.calls, 1);
    }
    rs_run_for(base, 300); /* down for about 1.5 s in all: the backoff has grown */
    struct redis_stats s = stats_of(c);
    assert_true(s.connect_failures >= 3);
    assert_string_equal(s.state, "waiting");

    /* Back on the same port: the client finds it by itself within the 2 s backoff cap. */
    assert_int_equal(ts_redis_start(srv), 0);
    int64_t up = ts_now_ms();
    assert_int_equal(rs_run_until(base, rs_connected, c, 5000), 0);
    print_message("      reconnected %lld ms after the restart\n", (long long)(ts_now_ms() - up));
    assert_true(ts_now_ms() - up <= 2500);
    rs_do(base, c, &r, "SET", "k", "again", NULL);
    assert_int_equal(r.status, REDIS_STATUS_OK);
    rs_do(base, c, &r, "GET", "k", NULL);
    assert_string_equal(r.str, "again");

    s = stats_of(c);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.disconnects, 1);
    assert_int_equal(s.disconnected, 4);
    assert_int_equal(inflight.calls, 1);

    redis_client_free(c);
}

struct ticker {
    int64_t last;
    int64_t max_gap;
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

struct count {
    int ok;
    int calls;
};

static void on_count(void *arg, enum redis_status st, const redisReply *reply)
{
    struct count *n = arg;
    (void)reply;
    n->calls++;
    if (st == REDIS_STATUS_OK)
        n->ok++;
}

static bool count_done(void *arg)
{
    return ((struct count *)arg)->calls == 200;
}

/* A frozen server costs its own commands their deadline, and nothing else on the loop waits. */
static void test_never_blocks(void **state)
{
    struct env *e = *state;
    struct ts_redis *a = &e->srv[0], *b = &e->srv[1];
    struct event_base *base = e->base;
    struct ticker t = {0};
    struct count n = {0};
    struct rs_call stuck, r;
    struct timeval ten_ms = {0, 10000};
    struct redis_options quick = {.connect_timeout_ms = 200};

    server_start(e, a);
    server_start(e, b);
    struct redis_client *ca = client_new(base, a->port, NULL);
    struct redis_client *cb = client_new(base, b->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, ca, 3000), 0);
    assert_int_equal(rs_run_until(base, rs_connected, cb, 3000), 0);
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, &t);
    event_add(tick, &ten_ms);

    ts_redis_pause(a);
    memset(&stuck, 0, sizeof(stuck));
    int64_t t0 = ts_now_ms();
    assert_int_equal(redis_commandf(ca, 1000, rs_record, &stuck, "GET k"), 0);

    /* A new client of the frozen server: TCP connects, the handshake never answers. */
    int64_t before_new = ts_now_ms();
    struct redis_client *cc = client_new(base, a->port, &quick);
    assert_true(ts_now_ms() - before_new < 100);

    /* The healthy server's client goes on at full speed meanwhile. */
    rs_run_for(base, 100);
    int64_t b0 = ts_now_ms();
    for (int i = 0; i < 200; i++)
        assert_int_equal(redis_commandf(cb, 1000, on_count, &n, "INCR hits"), 0);
    assert_int_equal(rs_run_until(base, count_done, &n, 2000), 0);
    int64_t b_took = ts_now_ms() - b0;
    print_message("      200 commands to the healthy server: %lld ms\n", (long long)b_took);
    assert_int_equal(n.ok, 200);
    assert_true(b_took < 500); /* a blocked loop would take the 1000 ms deadline */
    assert_int_equal(stuck.calls, 0);

    assert_int_equal(rs_run_until(base, rs_called, &stuck, 3000), 0);
    assert_int_equal(stuck.status, REDIS_STATUS_TIMEOUT);
    int64_t elapsed = ts_now_ms() - t0;
    print_message("      loop ticks: %d in %lld ms, longest gap %lld ms\n", t.ticks,
                  (long long)elapsed, (long long)t.max_gap);
    assert_true(stuck.at_ms - t0 >= 950 && stuck.at_ms - t0 <= 1500);
    assert_true(t.max_gap < 250); /* against 1000 ms if anything blocked */
    assert_true(t.ticks >= elapsed / 10 / 2);

    struct redis_stats s = stats_of(cc);
    assert_false(s.connected);
    assert_true(s.connect_failures >= 2); /* each handshake ran into its 200 ms deadline */

    /* Thawed, both clients of the first server work. */
    ts_redis_resume(a);
    assert_int_equal(rs_run_until(base, rs_connected, cc, 3000), 0);
    rs_do(base, cc, &r, "PING", NULL);
    assert_string_equal(r.str, "PONG");
    rs_do(base, ca, &r, "PING", NULL);
    assert_string_equal(r.str, "PONG");
    assert_int_equal(stuck.calls, 1);

    event_free(tick);
    redis_client_free(ca);
    redis_client_free(cb);
    redis_client_free(cc);
}

/* A server that stays frozen past a deadline is given up on, and found again when it thaws. */
static void test_stalled_server(void **state)
{
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call r, stuck;
    struct redis_options o = {.stall_timeout_ms = 300, .connect_timeout_ms = 200};

    server_start(e, srv);
    struct redis_client *c = client_new(base, srv->port, &o);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);

    ts_redis_pause(srv);
    int64_t t0 = ts_now_ms();
    memset(&stuck, 0, sizeof(stuck));
    assert_int_equal(redis_commandf(c, 100, rs_record, &stuck, "SET k v"), 0);
    assert_int_equal(rs_run_until(base, rs_called, &stuck, 2000), 0);
    assert_int_equal(stuck.status, REDIS_STATUS_TIMEOUT);
    assert_int_equal(rs_run_until(base, not_connected, c, 2000), 0);
    int64_t dropped = ts_now_ms() - t0;
    print_message("      frozen connection dropped after %lld ms\n", (long long)dropped);
    assert_true(dropped >= 350 && dropped <= 1000);

    /* While frozen, reconnecting keeps failing on the handshake deadline, without blocking. */
    rs_run_for(base, 700);
    struct redis_stats s = stats_of(c);
    assert_false(s.connected);
    assert_int_equal(s.disconnects, 1);
    assert_true(s.connect_failures >= 1);

    ts_redis_resume(srv);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);
    rs_do(base, c, &r, "PING", NULL);
    assert_string_equal(r.str, "PONG");
    rs_run_for(base, 50);
    assert_int_equal(stuck.calls, 1);
    s = stats_of(c);
    assert_int_equal(s.late_replies, 0); /* its reply went down with the old connection */
    assert_int_equal(s.connects, 2);

    redis_client_free(c);
}

struct free_ctx {
    struct redis_client *c;
    struct rs_call calls[10];
    int free_at;
    int refused_inside;
};
struct free_item {
    struct free_ctx *ctx;
    int i;
};

static void on_free_item(void *arg, enum redis_status st, const redisReply *reply)
{
    struct free_item *it = arg;
    struct free_ctx *ctx = it->ctx;
    rs_record(&ctx->calls[it->i], st, reply);
    if (st == REDIS_STATUS_CLOSED) {
        struct rs_call never = {0};
        if (redis_commandf(ctx->c, 0, rs_record, &never, "PING") == -1)
            ctx->refused_inside++;
    }
    if (it->i == ctx->free_at && st != REDIS_STATUS_CLOSED)
        redis_client_free(ctx->c);
}

static bool free_item_done(void *arg)
{
    return ((struct free_ctx *)arg)->calls[3].calls > 0;
}

static void test_free_in_flight(void **state)
{
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call early[20], pending[30], deferred[5];
    struct redis_options o = {.stall_timeout_ms = 60000};

    server_start(e, srv);

    /* Commands past their deadline and commands still waiting, on a frozen server. */
    struct redis_client *c = client_new(base, srv->port, &o);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);
    ts_redis_pause(srv);
    memset(early, 0, sizeof(early));
    memset(pending, 0, sizeof(pending));
    for (int i = 0; i < 20; i++)
        assert_int_equal(redis_commandf(c, 50, rs_record, &early[i], "INCR n"), 0);
    rs_run_for(base, 250);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(early[i].calls, 1);
        assert_int_equal(early[i].status, REDIS_STATUS_TIMEOUT);
    }
    for (int i = 0; i < 30; i++)
        assert_int_equal(redis_commandf(c, 10000, rs_record, &pending[i], "INCR n"), 0);
    rs_run_for(base, 20);
    redis_client_free(c);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(pending[i].calls, 1);
        assert_int_equal(pending[i].status, REDIS_STATUS_CLOSED);
    }
    ts_redis_resume(srv);
    rs_run_for(base, 200);
    for (int i = 0; i < 20; i++)
        assert_int_equal(early[i].calls, 1);
    for (int i = 0; i < 30; i++)
        assert_int_equal(pending[i].calls, 1);

    /* Freed from inside a reply callback, with replies still to come in the same read. */
    struct free_ctx ctx = {.free_at = 3};
    struct free_item items[10];
    ctx.c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, ctx.c, 3000), 0);
    for (int i = 0; i < 10; i++) {
        items[i] = (struct free_item){.ctx = &ctx, .i = i};
        assert_int_equal(redis_commandf(ctx.c, 2000, on_free_item, &items[i], "PING"), 0);
    }
    assert_int_equal(rs_run_until(base, free_item_done, &ctx, 3000), 0);
    rs_run_for(base, 100);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ctx.calls[i].calls, 1);
        assert_int_equal(ctx.calls[i].status, i <= 3 ? REDIS_STATUS_OK : REDIS_STATUS_CLOSED);
    }
    assert_int_equal(ctx.refused_inside, 6);

    /* Freed from inside a TIMEOUT callback, with another command still waiting. */
    struct free_ctx tctx = {.free_at = 0};
    struct free_item titems[2] = {{.ctx = &tctx, .i = 0}, {.ctx = &tctx, .i = 1}};
    tctx.c = client_new(base, srv->port, &o);
    assert_int_equal(rs_run_until(base, rs_connected, tctx.c, 3000), 0);
    ts_redis_pause(srv);
    assert_int_equal(redis_commandf(tctx.c, 50, on_free_item, &titems[0], "PING"), 0);
    assert_int_equal(redis_commandf(tctx.c, 5000, on_free_item, &titems[1], "PING"), 0);
    assert_int_equal(rs_run_until(base, rs_called, &tctx.calls[0], 2000), 0);
    ts_redis_resume(srv);
    rs_run_for(base, 100);
    assert_int_equal(tctx.calls[0].calls, 1);
    assert_int_equal(tctx.calls[0].status, REDIS_STATUS_TIMEOUT);
    assert_int_equal(tctx.calls[1].calls, 1);
    assert_int_equal(tctx.calls[1].status, REDIS_STATUS_CLOSED);

    /*
     * Freed from inside a DISCONNECTED callback while hiredis is still tearing the dead
     * connection down: the commands behind it get CLOSED, once.
     */
    struct free_ctx dctx = {.free_at = 0};
    struct free_item ditems[3];
    dctx.c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, dctx.c, 3000), 0);
    for (int i = 0; i < 3; i++) {
        ditems[i] = (struct free_item){.ctx = &dctx, .i = i};
        assert_int_equal(
            redis_commandf(dctx.c, 5000, on_free_item, &ditems[i], "BLPOP nothing%d 10", i), 0);
    }
    rs_run_for(base, 50);
    ts_redis_kill(srv);
    assert_int_equal(rs_run_until(base, rs_called, &dctx.calls[0], 2000), 0);
    rs_run_for(base, 50);
    assert_int_equal(dctx.calls[0].status, REDIS_STATUS_DISCONNECTED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dctx.calls[i].calls, 1);
    assert_int_equal(dctx.calls[1].status, REDIS_STATUS_CLOSED);
    assert_int_equal(dctx.calls[2].status, REDIS_STATUS_CLOSED);
    assert_int_equal(ts_redis_start(srv), 0);

    /* Freed with fail-fast answers still queued for the next loop iteration. */
    c = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c, 3000), 0);
    ts_redis_kill(srv);
    assert_int_equal(rs_run_until(base, not_connected, c, 2000), 0);
    memset(deferred, 0, sizeof(deferred));
    for (int i = 0; i < 5; i++)
        assert_int_equal(redis_commandf(c, 1000, rs_record, &deferred[i], "PING"), 0);
    redis_client_free(c);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(deferred[i].calls, 1);
        assert_int_equal(deferred[i].status, REDIS_STATUS_CLOSED);
    }
    rs_run_for(base, 100);
    for (int i = 0; i < 5; i++)
        assert_int_equal(deferred[i].calls, 1);

    /* Freed mid-connect (handshake waiting on a frozen server) and while waiting to retry. */
    assert_int_equal(ts_redis_start(srv), 0);
    ts_redis_pause(srv);
    c = client_new(base, srv->port, NULL);
    rs_run_for(base, 50);
    assert_string_equal(stats_of(c).state, "connecting");
    redis_client_free(c);
    ts_redis_resume(srv);
    struct redis_options sentinel = {.sentinels = "127.0.0.1:1", .master_name = "none"};
    const char *why = NULL;
    c = redis_client_new(base, &sentinel, &why);
    assert_non_null(c);
    rs_run_for(base, 20);
    redis_client_free(c);
}

static char *file_read(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    assert_non_null(f);
    FILE *m = open_memstream(&buf, &len);
    int ch;
    while ((ch = fgetc(f)) != EOF)
        fputc(ch, m);
    fclose(m);
    fclose(f);
    return buf;
}

static void test_auth_and_select(void **state)
{
    static const char password[] = "s3cret-Pa55-do-not-log";
    static const char wrong[] = "wrong-Pa55-do-not-log";
    struct env *e = *state;
    struct ts_redis *srv = &e->srv[0];
    struct event_base *base = e->base;
    struct rs_call r;

    server_start(e, srv);
    struct redis_client *admin = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, admin, 3000), 0);
    rs_do(base, admin, &r, "CONFIG", "SET", "requirepass", password, NULL);
    assert_int_equal(r.status, REDIS_STATUS_OK);

    struct redis_options db5 = {.password = password, .db = 5};
    struct redis_options db0 = {.password = password};
    struct redis_options bad = {.password = wrong, .connect_timeout_ms = 200};
    struct redis_client *c5 = client_new(base, srv->port, &db5);
    struct redis_client *c0 = client_new(base, srv->port, &db0);
    struct redis_client *cw = client_new(base, srv->port, &bad);
    struct redis_client *cn = client_new(base, srv->port, NULL);
    assert_int_equal(rs_run_until(base, rs_connected, c5, 3000), 0);
    assert_int_equal(rs_run_until(base, rs_connected, c0, 3000), 0);
    rs_do(base, c5, &r, "SET", "where", "db5", NULL);
    assert_int_equal(r.status, REDIS_STATUS_OK);
    rs_do(base, c0, &r, "GET", "where", NULL);
    assert_int_equal(r.type, REDIS_REPLY_NIL);
    rs_do(base, c5, &r, "GET", "where", NULL);
    assert_string_equal(r.str, "db5");

    /* A wrong or missing password never gets a connection ready. */
    rs_run_for(base, 600);
    struct redis_stats sw = stats_of(cw), sn = stats_of(cn);
    assert_false(sw.connected);
    assert_false(sn.connected);
    assert_true(sw.connect_failures >= 2);
    assert_true(sn.connect_failures >= 2);
    struct rs_call refused = {0};
    assert_int_equal(redis_commandf(cw, 0, rs_record, &refused, "PING"), 0);
    assert_int_equal(rs_run_until(base, rs_called, &refused, 1000), 0);
    assert_int_equal(refused.status, REDIS_STATUS_DISCONNECTED);

    /* The failures were logged, and no password was. */
    char *log = file_read(log_path);
    assert_non_null(strstr(log, "WRONGPASS"));
    assert_non_null(strstr(log, "NOAUTH"));
    assert_null(strstr(log, password));
    assert_null(strstr(log, wrong));
    free(log);

    redis_client_free(admin);
    redis_client_free(c5);
    redis_client_free(c0);
    redis_client_free(cw);
    redis_client_free(cn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test_setup_teardown(test_basic_commands, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_deadline, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_never_blocks, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_server, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_auth_and_select, env_setup, env_teardown),
    };
    /* hiredis writes with write(2): a server gone mid-write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    char *dir = ts_tempdir("tp-redis-log");
    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        return 1;
    log_init("test_redis", LOG_DEBUG, fd);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "module log:\n");
        ts_sh("cat '%s' >&2", log_path);
    }
    close(fd);
    ts_rmdir(dir);
    free(dir);
    return rc;
}
