/*
 * Integration tests of the scan-event sink against the shared real Redis and PostgreSQL:
 * events written with the events.c builder land in scan_events with every column within
 * seconds; redelivered and reclaimed entries are stored once; first scans are recorded once;
 * malformed entries are acknowledged and counted; trimming waits for every group; a stop
 * finishes the batch in flight; a sink freed mid-batch leaves its entries to be claimed; a
 * Redis that comes back empty gets its group again.
 * Each test has its own stream, group, factory and tags, and removes them.
 */
#include "support.h"
#define SINK_SUPPORT_DECLARATIONS_ONLY
#include "sink_support.c"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pg_url, *owner_url, *redis_url;

struct t {
    PGconn *owner, *svc;
    redisContext *rc;
    struct sks_run run;
    struct sks_sink a, b;
};

static int group_setup(void **state)
{
    (void)state;
    pg_url = ts_require_env("TAGPROOF_TEST_PG_URL");
    owner_url = ts_require_env("TAGPROOF_TEST_PG_OWNER_URL");
    redis_url = ts_require_env("TAGPROOF_TEST_REDIS_URL");
    log_init("test_sink", LOG_WARN, 2);
    return 0;
}

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    t->owner = sks_pg(owner_url);
    t->svc = sks_pg(pg_url);
    t->rc = sks_redis(redis_url);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    sks_sink_stop(&t->a);
    sks_sink_stop(&t->b);
    sks_run_cleanup(&t->run, t->owner, t->rc);
    PQfinish(t->owner);
    PQfinish(t->svc);
    redisFree(t->rc);
    free(t);
    return 0;
}

/* Conditions for sks_wait. */
struct until {
    struct t *t;
    long long stored, pending; /* -1: any */
};

static bool stored_and_acked(void *arg)
{
    struct until *u = arg;
    return (u->stored < 0 || sks_stored(u->t->svc, &u->t->run) == u->stored) &&
           (u->pending < 0 || sks_pending(u->t->rc, &u->t->run) == u->pending);
}

static void wait_stored(struct t *t, struct sks_sink *s, long long stored, long long pending,
                        int ms)
{
    struct until u = {t, stored, pending};
    if (sks_wait(s, stored_and_acked, &u, ms) < 0)
        fail_msg("after %d ms: %lld stored (want %lld), %lld pending (want %lld)", ms,
                 sks_stored(t->svc, &t->run), stored, sks_pending(t->rc, &t->run), pending);
}

static bool stream_len_is(void *arg)
{
    struct until *u = arg;
    return sks_redis_int(u->t->rc, "XLEN %s", u->t->run.stream) == u->stored;
}

static bool partitions_ensured(void *arg)
{
    return sks_stats(arg).partition_runs >= 1;
}

static void test_events_stored_with_their_columns(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    char id_full[48], id_min[48];
    sks_run_init(run, "columns", t->owner, 2);
    const char *unknown_tag = sks_run_stranger(run);

    struct sink_options o = sks_options(run, "columns-a");
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    /* Group created, partitions ensured, reading: waited for, as a busy machine is slow. */
    if (sks_wait(&t->a, partitions_ensured, &t->a, 5000) < 0)
        fail_msg("no partition run within 5 s");

    struct scan_event full = sks_event(run, run->tags[0], 7);
    full.verdict = "suspicious";
    full.score = 80;
    strcpy(full.reasons, "impossible_travel,bot_ua");
    const char *ua = "Mozilla/5.0 (\"quoted\" \\ back; {braces}, commas) \xc3\xbc NULL";
    events_set_user_agent(&full, ua, strlen(ua));
    full.has_location = true;
    full.lat = 48.858844;
    full.lon = -2.294351;
    full.first_scan = true;

    struct scan_event min;
    memset(&min, 0, sizeof(min));
    strcpy(min.tag_id, unknown_tag);
    min.ts_ms = run->base_ms + 8;
    min.verdict = "unknown";
    min.source = NULL;

    int64_t t0 = ts_now_ms();
    sks_xadd(t->rc, run, &full, id_full, sizeof(id_full));
    sks_xadd(t->rc, run, &min, id_min, sizeof(id_min));
    for (int i = 0; i < 10; i++) {
        struct scan_event ev = sks_event(run, run->tags[1], 100 + i);
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    /* 11 of the run's factory, plus the unknown tag's without a factory. */
    wait_stored(t, &t->a, 11, 0, 5000);
    int took = (int)(ts_now_ms() - t0);
    assert_int_equal(
        sks_pg_int(t->svc, "SELECT count(*) FROM scan_events WHERE tag_id = '%s'", unknown_tag), 1);
    assert_true(took < 3000); /* "within seconds"; it is normally a few ms */

    /* Every column of the full event. */
    char *row = sks_pg_str(
        t->svc,
        "SELECT concat_ws('|', tag_id, factory_id, batch_id, verdict, score, reasons::text, "
        "ip_hash, user_agent, lat, lon, source, "
        "(extract(epoch FROM scanned_at) * 1000)::bigint) FROM scan_events WHERE event_id = '%s'",
        id_full);
    char want[1024];
    snprintf(want, sizeof(want),
             "%s|%s|%s|suspicious|80|{impossible_travel,bot_ua}|%064x|%s|"
             "48.858844|-2.294351|cache|%lld",
             run->tags[0], run->factory, run->batch, 42, ua, (long long)full.ts_ms);
    assert_string_equal(row, want);
    free(row);
    /* Exactly: the coordinates are the same doubles. */
    assert_int_equal(sks_pg_int(t->svc,
                                "SELECT count(*) FROM scan_events WHERE event_id = '%s' AND "
                                "lat = 48.858844::float8 AND lon = -2.294351::float8",
                                id_full),
                     1);

    /* The minimal event: unknowns are NULL, no reasons is an empty array. */
    row = sks_pg_str(t->svc,
                     "SELECT concat_ws('|', factory_id IS NULL, batch_id IS NULL, verdict, score, "
                     "reasons::text, ip_hash IS NULL, quote_literal(user_agent), lat IS NULL, "
                     "lon IS NULL, source IS NULL) FROM scan_events WHERE event_id = '%s' "
                     "AND tag_id = '%s'",
                     id_min, unknown_tag);
    assert_string_equal(row, "t|t|unknown|0|{}|t|''|t|t|t");
    free(row);

    struct sink_stats st = sks_stats(&t->a);
    assert_int_equal(st.stored, 12);
    assert_int_equal(st.duplicate, 0);
    assert_int_equal(st.malformed, 0);
    assert_int_equal(st.acked, 12);
    assert_true(st.lag_s >= 0.0 && st.lag_s < 4000.0);
    assert_true(sks_metric(&t->a, "tagproof_sink_events_total", "stored") == 12.0);
    assert_true(sks_metric(&t->a, "tagproof_sink_batches_total", "ok") >= 1.0);
    assert_true(sks_metric(&t->a, "tagproof_sink_first_scans_total", NULL) == 1.0);

    /* Everything was acknowledged, so the stream is trimmed to nothing. */
    struct until len0 = {t, 0, -1};
    assert_true(sks_wait(&t->a, stream_len_is, &len0, 3000) >= 0);
    sks_run_for(t->a.base, 700); /* one more trim round reads the pending gauge */
    assert_true(sks_stats(&t->a).trimmed == 12);
    assert_true(sks_metric(&t->a, "tagproof_sink_pending", NULL) == 0.0);
    assert_int_equal(sks_stats(&t->a).pending, 0);

    size_t len;
    char *text = metrics_render(t->a.metrics, &len);
    assert_non_null(strstr(text, "tagproof_sink_events_total{result=\"stored\"} 12"));
    assert_non_null(strstr(text, "tagproof_sink_lag_seconds"));
    free(text);
}

static void test_redelivered_and_reclaimed_entries_are_stored_once(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "dups", t->owner, 1);

    for (int i = 0; i < 20; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        ev.first_scan = i == 3;
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    /* No trimming here: the test delivers the same entries again. */
    struct sink_options o = sks_options(run, "dups-a");
    o.trim_interval_ms = 600000;
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    wait_stored(t, &t->a, 20, 0, 5000);
    sks_sink_stop(&t->a);
    long long first =
        sks_pg_int(t->svc,
                   "SELECT (extract(epoch FROM first_scanned_at) * 1000)::bigint FROM tags "
                   "WHERE tag_id = '%s'",
                   run->tags[0]);
    assert_true(first == run->base_ms + 3);

    /* The same entries delivered again, as new ones: all duplicates. */
    freeReplyObject(redisCommand(t->rc, "XGROUP SETID %s %s 0", run->stream, run->group));
    o.consumer = "dups-b";
    sks_sink_start(&t->b, &o, pg_url, redis_url);
    struct sks_sink *b = &t->b;
    int64_t end = ts_now_ms() + 5000;
    while (sks_stats(b).duplicate < 20 && ts_now_ms() < end)
        sks_run_for(b->base, 25);
    wait_stored(t, b, 20, 0, 3000);
    assert_int_equal(sks_stats(b).duplicate, 20);
    assert_int_equal(sks_stats(b).stored, 0);
    sks_sink_stop(b);

    /*
     * A commit whose acknowledgement was lost: the entries are stored, but pending for a
     * consumer that died. Another sink claims them once they are idle, and they are
     * duplicates again; the first scan keeps its time.
     */
    freeReplyObject(redisCommand(t->rc, "XGROUP SETID %s %s 0", run->stream, run->group));
    freeReplyObject(redisCommand(t->rc, "XREADGROUP GROUP %s ghost COUNT 100 STREAMS %s >",
                                 run->group, run->stream));
    assert_int_equal(sks_pending(t->rc, run), 20);
    o.consumer = "dups-c";
    o.claim_idle_ms = 300;
    sks_sink_start(b, &o, pg_url, redis_url);
    wait_stored(t, b, 20, 0, 5000);
    struct sink_stats st = sks_stats(b);
    assert_int_equal(st.claimed, 20);
    assert_int_equal(st.duplicate, 20);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.first_scans, 0);
    assert_true(sks_metric(b, "tagproof_sink_events_total", "duplicate") == 20.0);
    assert_true(sks_metric(b, "tagproof_sink_claimed_total", NULL) == 20.0);
    assert_int_equal(sks_pg_int(t->svc,
                                "SELECT count(DISTINCT event_id) FROM scan_events "
                                "WHERE factory_id = '%s'",
                                run->factory),
                     20);
    assert_true(sks_pg_int(t->svc,
                           "SELECT (extract(epoch FROM first_scanned_at) * 1000)::bigint "
                           "FROM tags WHERE tag_id = '%s'",
                           run->tags[0]) == first);
}

static long long first_ms(struct t *t, int tag)
{
    return sks_pg_int(t->svc,
                      "SELECT (extract(epoch FROM first_scanned_at) * 1000)::bigint FROM tags "
                      "WHERE tag_id = '%s'",
                      t->run.tags[tag]);
}

static void test_first_scans_recorded_exactly_once(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "first", t->owner, 4);
    const char *stranger = sks_run_stranger(run);
    /* The scan path recorded tag 2's first scan itself. */
    sks_pg_exec(t->owner,
                "UPDATE tags SET first_scanned_at = '2020-01-01T00:00:00Z' WHERE tag_id = '%s'",
                run->tags[2]);

    struct scan_event evs[6];
    evs[0] = sks_event(run, run->tags[0], 100);
    evs[1] = sks_event(run, run->tags[0], 50); /* the earlier of two racing first scans */
    evs[2] = sks_event(run, run->tags[1], 200);
    evs[2].first_ms = run->base_ms + 190; /* what the scan path announced */
    evs[3] = sks_event(run, run->tags[2], 300);
    evs[4] = sks_event(run, run->tags[3], 400);
    evs[4].first_pending = true;
    evs[5] = sks_event(run, stranger, 500); /* not a registered tag: nothing to update */
    for (int i = 0; i < 6; i++) {
        evs[i].first_scan = true;
        sks_xadd(t->rc, run, &evs[i], NULL, 0);
    }
    struct sink_options o = sks_options(run, "first-a");
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    wait_stored(t, &t->a, 6, 0, 5000);

    /* A later batch claims tag 1's first scan again, even earlier: it stays as it was. */
    struct scan_event again = sks_event(run, run->tags[1], 10);
    again.first_scan = true;
    sks_xadd(t->rc, run, &again, NULL, 0);
    wait_stored(t, &t->a, 7, 0, 5000);

    assert_true(first_ms(t, 0) == run->base_ms + 50);
    assert_true(first_ms(t, 1) == run->base_ms + 190);
    assert_true(first_ms(t, 2) == INT64_C(1577836800000));
    assert_true(first_ms(t, 3) == run->base_ms + 400);
    assert_int_equal(sks_stats(&t->a).first_scans, 3);
    assert_true(sks_metric(&t->a, "tagproof_sink_first_scans_total", NULL) == 3.0);
}

static void test_malformed_entries_are_acked_and_counted(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "malformed", t->owner, 1);
    const char *k = run->stream;
    const char *tag = run->tags[0];

    struct scan_event ok1 = sks_event(run, tag, 1), ok2 = sks_event(run, tag, 2);
    struct scan_event old = sks_event(run, tag, 3), future = sks_event(run, tag, 4);
    old.ts_ms = sks_wall_ms() - INT64_C(200) * 86400 * 1000;
    future.ts_ms = sks_wall_ms() + INT64_C(2) * 86400 * 1000;

    sks_xadd(t->rc, run, &ok1, NULL, 0);
    freeReplyObject(redisCommand(t->rc, "XADD %s * foo bar", k));
    freeReplyObject(
        redisCommand(t->rc, "XADD %s * v 2 tag_id %s ts 1 verdict authentic score 0", k, tag));
    freeReplyObject(
        redisCommand(t->rc, "XADD %s * v 1 tag_id nope ts 1 verdict authentic score 0", k));
    freeReplyObject(
        redisCommand(t->rc, "XADD %s * v 1 tag_id %s ts 1 verdict fine score 0", k, tag));
    freeReplyObject(redisCommand(t->rc,
                                 "XADD %s * v 1 tag_id %s ts 1 verdict authentic "
                                 "score 0 ua %b",
                                 k, tag, "nul\0byte", (size_t)8));
    sks_xadd(t->rc, run, &old, NULL, 0);
    sks_xadd(t->rc, run, &future, NULL, 0);
    sks_xadd(t->rc, run, &ok2, NULL, 0);

    struct sink_options o = sks_options(run, "malformed-a");
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    wait_stored(t, &t->a, 2, 0, 5000);
    struct sink_stats st = sks_stats(&t->a);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.malformed, 5);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.acked, 9);
    assert_true(sks_metric(&t->a, "tagproof_sink_events_total", "malformed") == 5.0);
    assert_true(sks_metric(&t->a, "tagproof_sink_events_total", "rejected") == 2.0);

    /* And the stream keeps flowing after them. */
    struct scan_event ok3 = sks_event(run, tag, 5);
    sks_xadd(t->rc, run, &ok3, NULL, 0);
    wait_stored(t, &t->a, 3, 0, 5000);
}

static void test_trim_waits_for_every_group(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "trim", t->owner, 1);
    const char *k = run->stream;

    /* Another group reads the same stream and has not read anything yet. */
    freeReplyObject(redisCommand(t->rc, "XGROUP CREATE %s other 0 MKSTREAM", k));
    char ids[10][48];
    for (int i = 0; i < 10; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(t->rc, run, &ev, ids[i], sizeof(ids[i]));
    }
    struct sink_options o = sks_options(run, "trim-a");
    o.trim_interval_ms = 100;
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    wait_stored(t, &t->a, 10, 0, 5000);
    sks_run_for(t->a.base, 500);
    assert_int_equal(sks_redis_int(t->rc, "XLEN %s", k), 10);

    /* The other group reads them: pending there, still kept. */
    freeReplyObject(redisCommand(t->rc, "XREADGROUP GROUP other o1 COUNT 100 STREAMS %s >", k));
    sks_run_for(t->a.base, 500);
    assert_int_equal(sks_redis_int(t->rc, "XLEN %s", k), 10);

    /* It acknowledges the first five: those go, and then the rest. */
    for (int i = 0; i < 5; i++)
        freeReplyObject(redisCommand(t->rc, "XACK %s other %s", k, ids[i]));
    struct until len = {t, 5, -1};
    assert_true(sks_wait(&t->a, stream_len_is, &len, 3000) >= 0);
    freeReplyObject(redisCommand(t->rc, "XACK %s other %s", k, ids[7]));
    sks_run_for(t->a.base, 500);
    assert_int_equal(sks_redis_int(t->rc, "XLEN %s", k), 5); /* 5 and 6 still pending */
    for (int i = 5; i < 10; i++)
        freeReplyObject(redisCommand(t->rc, "XACK %s other %s", k, ids[i]));
    len.stored = 0;
    assert_true(sks_wait(&t->a, stream_len_is, &len, 3000) >= 0);
    assert_int_equal(sks_stats(&t->a).trimmed, 10);
    assert_true(sks_metric(&t->a, "tagproof_sink_trimmed_total", NULL) == 10.0);
}

static void on_done(void *arg)
{
    ++*(int *)arg;
}

static void test_stop_finishes_the_batch_in_flight(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "stop", t->owner, 1);

    /* Written first, so that the sink's first read takes them all in one batch. */
    for (int i = 0; i < 10; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    struct sink_options o = sks_options(run, "stop-a");
    o.commit_delay_ms = 700;
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    /* Delivered and inside the transaction, not committed. */
    wait_stored(t, &t->a, 0, 10, 5000);
    sks_run_for(t->a.base, 100);
    assert_int_equal(sks_stored(t->svc, run), 0);

    int done = 0;
    int64_t t0 = ts_now_ms();
    assert_int_equal(sink_stop(t->a.sink, on_done, &done), 0);
    assert_int_equal(done, 0); /* never from inside sink_stop */
    assert_int_equal(sink_stop(t->a.sink, on_done, &done), -1);
    while (done == 0 && ts_now_ms() - t0 < 5000)
        sks_run_for(t->a.base, 10);
    assert_int_equal(done, 1);
    assert_int_equal(sks_stored(t->svc, run), 10);
    assert_int_equal(sks_pending(t->rc, run), 0);
    assert_false(sks_stats(&t->a).running);
    sks_run_for(t->a.base, 300);
    assert_int_equal(done, 1);

    /* Stopped: new events stay in the stream. */
    struct scan_event ev = sks_event(run, run->tags[0], 99);
    sks_xadd(t->rc, run, &ev, NULL, 0);
    sks_run_for(t->a.base, 500);
    assert_int_equal(sks_stored(t->svc, run), 10);

    /* sks_sink_stop in teardown would stop it again: free it here. */
    sink_free(t->a.sink);
    t->a.sink = NULL;
    redis_client_free(t->a.redis);
    pg_pool_free(t->a.pg);
    sks_run_for(t->a.base, 10);
    event_base_free(t->a.base);
    metrics_free(t->a.metrics);
    memset(&t->a, 0, sizeof(t->a));
}

static void test_freed_mid_batch_entries_are_claimed(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "free", t->owner, 1);

    for (int i = 0; i < 5; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    struct sink_options o = sks_options(run, "free-a");
    o.commit_delay_ms = 1000;
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    wait_stored(t, &t->a, 0, 5, 5000);
    /* Freed with the transaction open: late callbacks are ignored, the connection returns. */
    sink_free(t->a.sink);
    t->a.sink = NULL;
    sks_run_for(t->a.base, 200);
    redis_client_free(t->a.redis);
    pg_pool_free(t->a.pg);
    sks_run_for(t->a.base, 10);
    event_base_free(t->a.base);
    metrics_free(t->a.metrics);
    memset(&t->a, 0, sizeof(t->a));
    assert_int_equal(sks_pending(t->rc, run), 5);

    o.consumer = "free-b";
    o.commit_delay_ms = 0;
    o.claim_idle_ms = 300;
    sks_sink_start(&t->b, &o, pg_url, redis_url);
    wait_stored(t, &t->b, 5, 0, 8000);
    assert_int_equal(sks_stats(&t->b).claimed, 5);
    assert_int_equal(sks_stats(&t->b).stored, 5);
}

/* The restarted private Redis has no entries pending for the run. */
struct restarted_acked {
    redisContext *rc;
    struct sks_run *run;
};

static bool restarted_none_pending(void *arg)
{
    struct restarted_acked *ra = arg;
    return sks_pending(ra->rc, ra->run) == 0;
}

static void test_redis_restart_without_data_recreates_the_group(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    struct ts_redis r;
    sks_run_init(run, "restart", t->owner, 1);
    ts_redis_init(&r);
    assert_int_equal(ts_redis_start(&r), 0);
    redisContext *rc = sks_redis(r.url);

    struct sink_options o = sks_options(run, "restart-a");
    sks_sink_start(&t->a, &o, pg_url, r.url);
    for (int i = 0; i < 5; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(rc, run, &ev, NULL, 0);
    }
    struct until u = {t, 5, -1};
    assert_true(sks_wait(&t->a, stored_and_acked, &u, 5000) >= 0);

    /* Redis comes back empty: the stream has new entries but no group. */
    redisFree(rc);
    ts_redis_kill(&r);
    sks_run_for(t->a.base, 300);
    assert_int_equal(ts_redis_start(&r), 0);
    rc = sks_redis(r.url);
    for (int i = 5; i < 10; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(rc, run, &ev, NULL, 0);
    }
    u.stored = 10;
    if (sks_wait(&t->a, stored_and_acked, &u, 10000) < 0)
        fail_msg("%lld stored after the restart", sks_stored(t->svc, run));
    /* The acknowledgement follows the commit: wait for it rather than race it. */
    struct restarted_acked ra = {rc, run};
    if (sks_wait(&t->a, restarted_none_pending, &ra, 5000) < 0)
        fail_msg("%lld pending after the restart", sks_pending(rc, run));
    assert_int_equal(sks_stats(&t->a).stored, 10);

    sks_sink_stop(&t->a);
    freeReplyObject(redisCommand(rc, "DEL %s", run->stream));
    redisFree(rc);
    ts_redis_destroy(&r);
}

/*
 * A trickle of events while the sink lingers after each small batch: they are stored in a few
 * batches, not one each, and all of them.
 */
static void test_small_batches_linger(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "linger", t->owner, 1);
    struct sink_options o = sks_options(run, "linger-a");
    o.linger_ms = 400;
    sks_sink_start(&t->a, &o, pg_url, redis_url);
    if (sks_wait(&t->a, partitions_ensured, &t->a, 5000) < 0)
        fail_msg("no partition run within 5 s");
    for (int i = 0; i < 40; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(t->rc, run, &ev, NULL, 0);
        sks_run_for(t->a.base, 10);
    }
    wait_stored(t, &t->a, 40, 0, 8000);
    uint64_t batches = sks_stats(&t->a).batches_ok;
    if (batches > 6)
        fail_msg("40 events over ~400 ms took %llu batches", (unsigned long long)batches);
    sks_sink_stop(&t->a);
}

static void test_options_are_checked(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct redis_options ro = {.host = "127.0.0.1", .port = 1};
    struct redis_client *rc = redis_client_new(base, &ro, NULL);
    struct pg_options po = {.conninfo = "postgresql://x@127.0.0.1:1/x", .pool_size = 1};
    struct pg_pool *pool = pg_pool_new(base, &po);
    const char *why = NULL;
    struct sink_options o = {0};
    assert_null(sink_new(base, rc, pool, &o, NULL, &why));
    assert_non_null(strstr(why, "consumer"));
    o.consumer = "c";
    o.batch_max = 100000;
    assert_null(sink_new(base, rc, pool, &o, NULL, &why));
    o.batch_max = 0;
    o.stream = "";
    assert_null(sink_new(base, rc, pool, &o, NULL, &why));
    o.stream = NULL;
    assert_null(sink_new(NULL, rc, pool, &o, NULL, &why));

    /* A sink never started stops at once (from the loop) and frees cleanly. */
    struct sink *s = sink_new(base, rc, pool, &o, NULL, &why);
    assert_non_null(s);
    int done = 0;
    assert_int_equal(sink_stop(s, on_done, &done), 0);
    assert_int_equal(done, 0);
    assert_int_equal(sink_start(s), -1);
    sks_run_for(base, 20);
    assert_int_equal(done, 1);
    sink_free(s);
    sink_free(NULL);
    redis_client_free(rc);
    pg_pool_free(pool);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_stored_with_their_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivered_and_reclaimed_entries_are_stored_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_scans_recorded_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_entries_are_acked_and_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_trim_waits_for_every_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_finishes_the_batch_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_mid_batch_entries_are_claimed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart_without_data_recreates_the_group, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_small_batches_linger, setup, teardown),
        cmocka_unit_test(test_options_are_checked),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
