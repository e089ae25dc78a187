/*
 * Integration tests of scan/tagcache's Lua scripts on a private, real redis-server: the
 * cached tag, first scans, recalls, the dedup window, and the rule state — velocity and
 * clone spread checked against a brute-force model of the exact sliding windows over random
 * scan sequences, travel, enumeration — at a clock the test drives.
 */
#include "support.h"

#include "tagcache.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define TAG "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define BATCH "6f0e2d1c-0000-4000-8000-000000000003"
#define INFO "{\"product\":{\"id\":\"p\",\"sku\":\"s\",\"name\":\"n\"}}"

struct env {
    struct ts_redis srv;
    redisContext *c;
    struct tagcache_windows w;
    struct tagcache_consts k;
};

static redisReply *cmd(struct env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(e->c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static void cmd_ok(struct env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(e->c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

static void windows(struct env *e, unsigned dedup_s, unsigned vel_s, unsigned vel_max,
                    unsigned clone_s, unsigned clone_max)
{
    e->w = (struct tagcache_windows){.dedup_s = dedup_s,
                                     .velocity_s = vel_s,
                                     .velocity_max = vel_max,
                                     .clone_s = clone_s,
                                     .clone_max = clone_max,
                                     .travel_s = 48 * 3600,
                                     .enum_s = 60};
    tagcache_consts_init(&e->k, &e->w);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    ts_redis_init(&e->srv);
    assert_int_equal(ts_redis_start(&e->srv), 0);
    e->c = redisConnect("127.0.0.1", e->srv.port);
    assert_true(e->c != NULL && e->c->err == 0);
    redisReply *r = cmd(e, "SCRIPT LOAD %s", tagcache_lookup_script());
    assert_string_equal(r->str, tagcache_lookup_sha());
    freeReplyObject(r);
    r = cmd(e, "SCRIPT LOAD %s", tagcache_unknown_script());
    assert_string_equal(r->str, tagcache_unknown_sha());
    freeReplyObject(r);
    windows(e, 30, 60, 10, 24 * 3600, 20);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e->c != NULL)
        redisFree(e->c);
    ts_redis_destroy(&e->srv);
    free(e);
    return 0;
}

static int reset(void **state)
{
    struct env *e = *state;
    cmd_ok(e, "FLUSHALL");
    cmd_ok(e, "HSET tp:t:%s d %s b %s", TAG, INFO, BATCH);
    windows(e, 30, 60, 10, 24 * 3600, 20);
    return 0;
}

/* One lookup; *out as parsed. The reply is freed: out's strings must not be used. */
static void lookup_at(struct env *e, const char *client, bool loc, double lat, double lon,
                      int64_t now, struct tagcache_hit *out)
{
    struct tagcache_args a;
    int argc = tagcache_lookup_args(&a, &e->k, TAG, client, loc, lat, lon, now);
    redisReply *r = redisCommandArgv(e->c, argc, a.argv, a.argvlen);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("lookup script: %s", r->str);
    assert_int_equal(tagcache_parse_lookup(r, out), 0);
    out->info = NULL;
    out->batch_id = NULL;
    freeReplyObject(r);
}

static void lookup(struct env *e, const char *client, int64_t now, struct tagcache_hit *out)
{
    lookup_at(e, client, false, 0, 0, now, out);
}

static const int64_t T0 = 1795000000000; /* November 2026 */

static void test_miss_and_first_scan(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    cmd_ok(e, "DEL tp:t:%s", TAG);
    lookup(e, "ia", T0, &h);
    assert_false(h.found);
    assert_int_equal(h.now_ms, T0);

    cmd_ok(e, "HSET tp:t:%s d %s b %s", TAG, INFO, BATCH);
    lookup(e, "ia", T0 + 5, &h);
    assert_true(h.found);
    assert_true(h.first_scan);
    assert_int_equal(h.first_ms, T0 + 5);
    assert_int_equal(h.scan_count, 1);
    lookup(e, "ib", T0 + 9, &h);
    assert_false(h.first_scan);
    assert_int_equal(h.first_ms, T0 + 5);
    assert_int_equal(h.scan_count, 2);
    assert_false(h.revoked);

    /* A first scan another program stored stands. */
    cmd_ok(e, "HSET tp:t:%s f 1700000000000", TAG);
    lookup(e, "ic", T0 + 10, &h);
    assert_false(h.first_scan);
    assert_int_equal(h.first_ms, 1700000000000);

    cmd_ok(e, "SET tp:rv:%s 1", BATCH);
    lookup(e, "ic", T0 + 11, &h);
    assert_true(h.revoked);
}

/* The dedup key lives in Redis's own time: a repeat within it counts once. */
static void test_dedup(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    windows(e, 1, 60, 10, 24 * 3600, 20);
    lookup(e, "dphone", T0, &h);
    assert_false(h.repeat);
    assert_int_equal(h.velocity, 1);
    assert_int_equal(h.clients, 1);
    for (int i = 1; i <= 3; i++) {
        lookup(e, "dphone", T0 + i, &h);
        assert_true(h.repeat);
        assert_int_equal(h.velocity, 1);
        assert_int_equal(h.clients, 1);
        assert_int_equal(h.scan_count, 1 + i);
    }
    usleep(1200 * 1000);
    lookup(e, "dphone", T0 + 1300, &h);
    assert_false(h.repeat);
    assert_int_equal(h.velocity, 2);
    assert_int_equal(h.clients, 1);
}

static void test_velocity_and_clone_thresholds(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    char client[16];
    for (int i = 0; i < 25; i++) {
        snprintf(client, sizeof(client), "d%02d", i);
        lookup(e, client, T0 + i * 1000, &h);
        assert_false(h.repeat);
        /* Exact up to max + 1, then held there: "more than max" is what the rules ask. */
        assert_int_equal(h.velocity, i + 1 <= 11 ? i + 1 : 11);
        assert_int_equal(h.clients, i + 1 <= 21 ? i + 1 : 21);
    }
    /* 60 s after the last scan, the scans at 0..24 s have left the velocity window except
     * the one at 24 s (the window is the 60 s up to now, its start excluded). */
    lookup(e, "dlate", T0 + 84000 - 1, &h);
    assert_int_equal(h.velocity, 2);
    assert_int_equal(h.clients, 21);
    /* A day later the clients have gone too. */
    lookup(e, "dnext", T0 + 24 * 3600 * 1000LL + 30000, &h);
    assert_int_equal(h.velocity, 1);
    assert_int_equal(h.clients, 2); /* dlate at 84 s and dnext */
}

static void test_travel_state(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    lookup_at(e, "dparis", true, 48.8566, 2.3522, T0, &h);
    assert_false(h.has_prev);
    lookup_at(e, "dnyc", true, 40.7128, -74.006, T0 + 60000, &h);
    assert_true(h.has_prev);
    assert_true(h.prev_lat > 48.85 && h.prev_lat < 48.86);
    assert_true(h.prev_lon > 2.35 && h.prev_lon < 2.36);
    assert_int_equal(h.prev_ms, T0);
    /* A repeat reads the last located scan and does not replace it. */
    lookup_at(e, "dnyc", true, 10, 10, T0 + 61000, &h);
    assert_true(h.repeat);
    assert_int_equal(h.prev_ms, T0 + 60000);
    /* A counted scan without a location keeps it. */
    lookup(e, "dother", T0 + 62000, &h);
    assert_int_equal(h.prev_ms, T0 + 60000);
    lookup(e, "dthird", T0 + 63000, &h);
    assert_true(h.has_prev);
    assert_true(h.prev_lat > 40.71 && h.prev_lat < 40.72);
    /* Past the travel window it is forgotten at the next write. */
    lookup(e, "dfourth", T0 + 60000 + 48 * 3600 * 1000LL + 1, &h);
    lookup(e, "dfifth", T0 + 60000 + 48 * 3600 * 1000LL + 2, &h);
    assert_false(h.has_prev);
}

static void test_state_is_one_key_with_a_lifetime(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    lookup(e, "done", T0, &h);
    redisReply *r = cmd(e, "PTTL tp:s:%s", TAG);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_true(r->integer > 47 * 3600 * 1000LL && r->integer <= 48 * 3600 * 1000LL);
    freeReplyObject(r);
    r = cmd(e, "KEYS tp:*");
    /* tp:t, tp:n, tp:d, tp:s: nothing else for a scan of a known tag. */
    assert_int_equal(r->elements, 4);
    freeReplyObject(r);
}

/* The lookup's reply, kept for checks on its borrowed strings; the caller frees it. */
static redisReply *lookup_reply(struct env *e, const char *client, int64_t now,
                                struct tagcache_hit *out)
{
    struct tagcache_args a;
    int argc = tagcache_lookup_args(&a, &e->k, TAG, client, false, 0, 0, now);
    redisReply *r = redisCommandArgv(e->c, argc, a.argv, a.argvlen);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("lookup script: %s", r->str);
    assert_int_equal(tagcache_parse_lookup(r, out), 0);
    return r;
}

/*
 * The anchoring state in the same call: the tag's leaf index (field i) and tp:anchor, as
 * tagproof-anchor writes them; anything malformed reads as unknown; an entry that has i but
 * no data is a miss that writes nothing.
 */
static void test_anchoring_state(void **state)
{
    struct env *e = *state;
    struct tagcache_hit h;
    redisReply *r = lookup_reply(e, "ia", T0, &h);
    assert_true(h.found);
    assert_int_equal(h.leaf_index, -1);
    assert_int_equal(h.anchor_size, 0);
    assert_null(h.anchor_ref);
    freeReplyObject(r);

    cmd_ok(e, "HSET tp:t:%s i 41", TAG);
    cmd_ok(e, "SET tp:anchor %s", "1024 0x5c2d0e1f8a9b");
    r = lookup_reply(e, "ia", T0 + 1, &h);
    assert_int_equal(h.leaf_index, 41);
    assert_int_equal(h.anchor_size, 1024);
    assert_int_equal(h.anchor_ref_len, strlen("0x5c2d0e1f8a9b"));
    assert_memory_equal(h.anchor_ref, "0x5c2d0e1f8a9b", h.anchor_ref_len);
    freeReplyObject(r);

    static const char *const bad_index[] = {"-1", "x", "", "01", "1234567890123456789"};
    for (size_t i = 0; i < sizeof(bad_index) / sizeof(bad_index[0]); i++) {
        cmd_ok(e, "HSET tp:t:%s i %s", TAG, bad_index[i]);
        r = lookup_reply(e, "ia", T0 + 2, &h);
        assert_true(h.found);
        assert_int_equal(h.leaf_index, -1);
        freeReplyObject(r);
    }
    static const char *const bad_anchor[] = {"1024", "abc def", "0 x", "12 a b", ""};
    for (size_t i = 0; i < sizeof(bad_anchor) / sizeof(bad_anchor[0]); i++) {
        cmd_ok(e, "SET tp:anchor %s", bad_anchor[i]);
        r = lookup_reply(e, "ia", T0 + 3, &h);
        assert_true(h.found);
        assert_int_equal(h.anchor_size, 0);
        assert_null(h.anchor_ref);
        freeReplyObject(r);
    }

    /* Written by the anchor before any fill: a miss, and the script writes nothing. */
    cmd_ok(e, "DEL tp:t:%s tp:n:%s", TAG, TAG);
    cmd_ok(e, "HSET tp:t:%s i 7", TAG);
    r = lookup_reply(e, "ib", T0 + 4, &h);
    assert_false(h.found);
    freeReplyObject(r);
    r = cmd(e, "HGETALL tp:t:%s", TAG);
    assert_int_equal(r->elements, 2);
    freeReplyObject(r);
    r = cmd(e, "EXISTS tp:n:%s", TAG);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* A fill from the database writes the index beside the data, and keeps one it lacks. */
    struct tagcache_fill f;
    int argc = tagcache_fill_args(&f, TAG, INFO, BATCH, 0, 9);
    r = redisCommandArgv(e->c, argc, f.argv, f.argvlen);
    freeReplyObject(r);
    cmd_ok(e, "SET tp:anchor %s", "10 abcdef");
    r = lookup_reply(e, "ib", T0 + 5, &h);
    assert_true(h.found);
    assert_int_equal(h.leaf_index, 9);
    assert_int_equal(h.anchor_size, 10);
    freeReplyObject(r);
    argc = tagcache_fill_args(&f, TAG, INFO, BATCH, 0, -1);
    r = redisCommandArgv(e->c, argc, f.argv, f.argvlen);
    freeReplyObject(r);
    r = lookup_reply(e, "ib", T0 + 6, &h);
    assert_int_equal(h.leaf_index, 9);
    freeReplyObject(r);
}

/*
 * Random scans by a few hundred clients with the windows small: each lookup's counts equal
 * the exact sliding-window counts capped at max + 1, computed here by brute force.
 */
static void test_counts_match_exact_windows(void **state)
{
    struct env *e = *state;
    enum { N = 1500, CLIENTS = 300, VMAX = 5, CMAX = 9 };
    const int64_t vwin = 10000, cwin = 12000;
    static int64_t counted_at[N]; /* times of the counted scans */
    static int64_t last[CLIENTS]; /* each client's last counted scan, -1: none */
    int ncounted = 0, vel_over = 0, clients_over = 0;
    struct tagcache_hit h;
    int64_t now = T0;
    unsigned seed = 20261122;

    /* Dedup lasts the whole test (Redis's clock barely moves) unless the test deletes a
     * client's dedup key, as if its window had passed. */
    windows(e, 60, (unsigned)(vwin / 1000), VMAX, (unsigned)(cwin / 1000), CMAX);
    for (int c = 0; c < CLIENTS; c++)
        last[c] = -1;
    for (int i = 0; i < N; i++) {
        now += rand_r(&seed) % 1500;
        int c = rand_r(&seed) % CLIENTS;
        char client[16];
        snprintf(client, sizeof(client), "d%d", c);
        /* Now and then a client's dedup window has passed: its scan counts again. */
        bool expired = rand_r(&seed) % 3 == 0;
        if (expired)
            cmd_ok(e, "DEL tp:d:%s:%s", TAG, client);
        lookup(e, client, now, &h);

        bool repeat = last[c] >= 0 && !expired;
        assert_int_equal(h.repeat, repeat);
        if (!repeat) {
            counted_at[ncounted++] = now;
            last[c] = now;
        }
        long vel = 0, clients = 0;
        for (int j = 0; j < ncounted; j++)
            if (counted_at[j] > now - vwin)
                vel++;
        for (int cl = 0; cl < CLIENTS; cl++)
            if (last[cl] >= 0 && last[cl] > now - cwin)
                clients++;
        if (h.velocity != (vel > VMAX + 1 ? VMAX + 1 : vel) ||
            h.clients != (clients > CMAX + 1 ? CMAX + 1 : clients))
            fail_msg("scan %d at +%lld ms: velocity %ld (exact %ld), clients %ld (exact %ld)", i,
                     (long long)(now - T0), h.velocity, vel, h.clients, clients);
        /* Whether the rules fire is exact. */
        assert_int_equal(h.velocity > VMAX, vel > VMAX);
        assert_int_equal(h.clients > CMAX, clients > CMAX);
        vel_over += vel > VMAX + 1;
        clients_over += clients > CMAX + 1;
    }
    /* The sequence took both counts past what the state keeps, and below again. */
    assert_true(vel_over > 50 && vel_over < N - 50);
    assert_true(clients_over > 50 && clients_over < N - 50);
}

static void test_enumeration_count(void **state)
{
    struct env *e = *state;
    struct tagcache_args a;
    struct tagcache_hit h;
    for (int i = 0; i < 5; i++) {
        int argc = tagcache_unknown_args(&a, &e->k, "iguess", T0 + i * 20000);
        redisReply *r = redisCommandArgv(e->c, argc, a.argv, a.argvlen);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        /* 60 s window: at most the last three lookups 20 s apart are in it. */
        assert_int_equal(r->integer, i < 3 ? i + 1 : 3);
        freeReplyObject(r);
    }
    lookup(e, "iguess", T0 + 4 * 20000, &h);
    assert_int_equal(h.client_unknown, 3);
    lookup(e, "iother", T0 + 4 * 20000, &h);
    assert_int_equal(h.client_unknown, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_miss_and_first_scan, reset),
        cmocka_unit_test_setup(test_dedup, reset),
        cmocka_unit_test_setup(test_velocity_and_clone_thresholds, reset),
        cmocka_unit_test_setup(test_travel_state, reset),
        cmocka_unit_test_setup(test_state_is_one_key_with_a_lifetime, reset),
        cmocka_unit_test_setup(test_anchoring_state, reset),
        cmocka_unit_test_setup(test_counts_match_exact_windows, reset),
        cmocka_unit_test_setup(test_enumeration_count, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
