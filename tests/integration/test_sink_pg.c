/*
 * Integration tests of the scan-event sink against a private PostgreSQL cluster it may stop,
 * alter and drop partitions of (Redis is the shared one, each test with its own stream):
 * partitions at start and on demand, the time window, a partition dropped behind the sink's
 * back, one event PostgreSQL refuses among good ones, a locked row that makes transactions
 * time out, and an outage during which nothing is acknowledged. The sink logs in as a role like the
 * services' (member of tagproof_app).
 */
#include "support.h"
#define SINK_SUPPORT_DECLARATIONS_ONLY
#include "sink_support.c"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ts_pg pg;
static const char *redis_url;
static char svc_url[256];

static int group_setup(void **state)
{
    (void)state;
    char bin[512];
    redis_url = ts_require_env("TAGPROOF_TEST_REDIS_URL");
    log_init("test_sink_pg", LOG_WARN, 2);
    snprintf(bin, sizeof(bin), "%s/bin/tagproof", TAGPROOF_BINARY_DIR);
    if (access(bin, X_OK) != 0)
        fail_msg("%s is missing: build the target tagproof (scripts/test builds everything)", bin);
    setenv("PGCLUSTER_FAST", "1", 1);
    if (ts_pg_init_start(&pg) != 0) {
        ts_sh("tail -n 20 '%s.log' >&2", pg.dir);
        fail_msg("cannot start a PostgreSQL cluster in %s", pg.dir);
    }
    if (ts_sh("TAGPROOF_PG_MIGRATE_URL='%s' '%s' migrate >/dev/null 2>&1", pg.conninfo, bin) != 0)
        fail_msg("tagproof migrate failed on the private cluster");
    PGconn *owner = sks_pg(pg.conninfo);
    sks_pg_exec(owner, "CREATE ROLE sink_svc LOGIN PASSWORD 'sink_svc' NOSUPERUSER NOBYPASSRLS");
    sks_pg_exec(owner, "GRANT tagproof_app TO sink_svc");
    PQfinish(owner);
    snprintf(svc_url, sizeof(svc_url),
             "postgresql://sink_svc:sink_svc@127.0.0.1:%d/tagproof?connect_timeout=5", pg.port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_destroy(&pg);
    return 0;
}

struct t {
    PGconn *owner;
    redisContext *rc;
    struct sks_run run;
    struct sks_sink a;
};

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    t->owner = sks_pg(pg.conninfo);
    t->rc = sks_redis(redis_url);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    sks_sink_stop(&t->a);
    /* A test that failed while the cluster was stopped left it so, and this connection broken. */
    ts_pg_start(&pg);
    PQfinish(t->owner);
    t->owner = sks_pg(pg.conninfo);
    sks_pg_exec(t->owner, "ALTER TABLE scan_events DROP CONSTRAINT IF EXISTS sink_test_poison");
    sks_run_cleanup(&t->run, t->owner, t->rc);
    PQfinish(t->owner);
    redisFree(t->rc);
    free(t);
    return 0;
}

struct until {
    struct t *t;
    long long stored, pending;
};

static bool reached(void *arg)
{
    struct until *u = arg;
    return sks_stored(u->t->owner, &u->t->run) == u->stored &&
           sks_pending(u->t->rc, &u->t->run) == u->pending;
}

static void wait_stored(struct t *t, long long stored, long long pending, int ms)
{
    struct until u = {t, stored, pending};
    if (sks_wait(&t->a, reached, &u, ms) < 0)
        fail_msg("after %d ms: %lld stored (want %lld), %lld pending (want %lld)", ms,
                 sks_stored(t->owner, &t->run), stored, sks_pending(t->rc, &t->run), pending);
}

/* The name of the partition that holds ts_ms, or of the month `months` from now. */
static char *partition_of(PGconn *c, int64_t ts_ms)
{
    return sks_pg_str(c,
                      "SELECT 'scan_events_' || to_char(timestamptz 'epoch' + %lld * "
                      "interval '1 millisecond', 'YYYYMM')",
                      (long long)ts_ms);
}

static bool partition_exists(PGconn *c, const char *name)
{
    return sks_pg_int(c, "SELECT count(*) FROM pg_class WHERE relname = '%s'", name) == 1;
}

struct part_wait {
    PGconn *c;
    const char *name;
};

static bool part_appeared(void *arg)
{
    struct part_wait *w = arg;
    return partition_exists(w->c, w->name);
}

static void test_partitions_at_start_and_on_demand(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "parts", t->owner, 1);
    int64_t now = sks_wall_ms();

    /* Next month's partition is missing (nothing in it yet): the sink makes it at start. */
    char *next = sks_pg_str(t->owner, "SELECT 'scan_events_' || to_char(date_trunc('month', "
                                      "now() + interval '1 month'), 'YYYYMM')");
    sks_pg_exec(t->owner, "DROP TABLE %s", next);
    assert_false(partition_exists(t->owner, next));
    struct sink_options o = sks_options(run, "parts-a");
    sks_sink_start(&t->a, &o, svc_url, redis_url);
    struct part_wait w = {t->owner, next};
    assert_true(sks_wait(&t->a, part_appeared, &w, 3000) >= 0);
    free(next);

    /* Within the window: stored, its month made on demand. Outside it: rejected. */
    struct scan_event recent = sks_event(run, run->tags[0], 0);
    struct scan_event old = sks_event(run, run->tags[0], 0);
    old.ts_ms = now - INT64_C(70) * 86400 * 1000;
    struct scan_event soon = sks_event(run, run->tags[0], 0);
    soon.ts_ms = now + 10 * 60 * 1000;
    struct scan_event ancient = sks_event(run, run->tags[0], 0);
    ancient.ts_ms = now - INT64_C(3) * 365 * 86400 * 1000;
    struct scan_event far = sks_event(run, run->tags[0], 0);
    far.ts_ms = now + INT64_C(2) * 86400 * 1000;
    char *old_part = partition_of(t->owner, old.ts_ms);
    char *ancient_part = partition_of(t->owner, ancient.ts_ms);
    assert_false(partition_exists(t->owner, old_part));
    sks_xadd(t->rc, run, &recent, NULL, 0);
    sks_xadd(t->rc, run, &old, NULL, 0);
    sks_xadd(t->rc, run, &ancient, NULL, 0);
    sks_xadd(t->rc, run, &far, NULL, 0);
    sks_xadd(t->rc, run, &soon, NULL, 0);
    wait_stored(t, 3, 0, 5000);
    assert_true(partition_exists(t->owner, old_part));
    assert_false(partition_exists(t->owner, ancient_part));
    struct sink_stats st = sks_stats(&t->a);
    assert_int_equal(st.stored, 3);
    assert_int_equal(st.rejected, 2);

    /*
     * A partition dropped behind the sink's back (its event goes with it): the sink still
     * believes in it, PostgreSQL finds no partition for the next event of that month, and
     * the sink ensures its partitions afresh and stores the event instead of refusing it.
     */
    sks_pg_exec(t->owner, "DROP TABLE %s", old_part);
    struct scan_event old2 = old;
    old2.ts_ms += 60 * 1000;
    sks_xadd(t->rc, run, &old2, NULL, 0);
    wait_stored(t, 3, 0, 5000);
    assert_true(partition_exists(t->owner, old_part));
    st = sks_stats(&t->a);
    assert_int_equal(st.stored, 4);
    assert_int_equal(st.rejected, 2);
    free(old_part);
    free(ancient_part);
}

static void test_event_refused_by_postgres_is_rejected_alone(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "poison", t->owner, 1);
    /* A rule the parser does not know: the sink must isolate the one event that breaks it. */
    sks_pg_exec(t->owner, "ALTER TABLE scan_events ADD CONSTRAINT sink_test_poison "
                          "CHECK (user_agent IS DISTINCT FROM 'poison')");
    for (int i = 0; i < 6; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        if (i == 2)
            events_set_user_agent(&ev, "poison", 6);
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    struct sink_options o = sks_options(run, "poison-a");
    sks_sink_start(&t->a, &o, svc_url, redis_url);
    wait_stored(t, 5, 0, 5000);
    struct sink_stats st = sks_stats(&t->a);
    assert_int_equal(st.stored, 5);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.acked, 6);
    assert_int_equal(st.batches_failed, 0);
    assert_int_equal(
        sks_pg_int(t->owner, "SELECT count(*) FROM scan_events WHERE user_agent = 'poison'"), 0);
}

static void test_locked_row_times_out_into_smaller_transactions(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "locked", t->owner, 2);
    for (int i = 0; i < 40; i++) {
        struct scan_event ev = sks_event(run, run->tags[i == 20 ? 0 : 1], i);
        ev.first_scan = i == 20;
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    /* Another session holds tag 0's row: the first-scan UPDATE of event 20 has to wait. */
    PGconn *locker = sks_pg(pg.conninfo);
    sks_pg_exec(locker, "BEGIN");
    sks_pg_exec(locker, "SELECT 1 FROM tags WHERE tag_id = '%s' FOR UPDATE", run->tags[0]);

    struct sink_options o = sks_options(run, "locked-a");
    o.pg_timeout_ms = 600;
    o.batch_max = 40;
    sks_sink_start(&t->a, &o, svc_url, redis_url);
    sks_run_for(t->a.base, 2500);
    /* The events before the locked one got through in smaller transactions; none is acked. */
    long long stored = sks_stored(t->owner, run);
    assert_true(stored >= 20 && stored < 40);
    assert_true(sks_pending(t->rc, run) > 0);
    assert_true(sks_metric(&t->a, "tagproof_sink_errors_total", "store") >= 2.0);
    assert_int_equal(sks_stats(&t->a).acked, 0);

    sks_pg_exec(locker, "COMMIT");
    PQfinish(locker);
    wait_stored(t, 40, 0, 15000);
    assert_true(sks_pg_int(t->owner,
                           "SELECT (extract(epoch FROM first_scanned_at) * 1000)::bigint "
                           "FROM tags WHERE tag_id = '%s'",
                           run->tags[0]) == run->base_ms + 20);
    assert_int_equal(sks_pg_int(t->owner,
                                "SELECT count(DISTINCT event_id) FROM scan_events "
                                "WHERE factory_id = '%s'",
                                run->factory),
                     40);
}

static void test_postgres_outage_acks_nothing_until_stored(void **state)
{
    struct t *t = *state;
    struct sks_run *run = &t->run;
    sks_run_init(run, "outage", t->owner, 1);
    struct sink_options o = sks_options(run, "outage-a");
    o.pg_timeout_ms = 2000;
    sks_sink_start(&t->a, &o, svc_url, redis_url);
    for (int i = 0; i < 30; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    wait_stored(t, 30, 0, 5000);
    uint64_t acked = sks_stats(&t->a).acked;

    ts_pg_stop(&pg);
    for (int i = 30; i < 60; i++) {
        struct scan_event ev = sks_event(run, run->tags[0], i);
        ev.first_scan = i == 40;
        sks_xadd(t->rc, run, &ev, NULL, 0);
    }
    sks_run_for(t->a.base, 2000);
    /*
     * What was read could not be stored, so it is not acknowledged: it stays pending and is
     * retried with backoff, and nothing more is read meanwhile. Nothing is trimmed either.
     */
    long long pending = sks_pending(t->rc, run);
    assert_true(pending >= 1 && pending <= 30);
    assert_true(sks_redis_int(t->rc, "XLEN %s", run->stream) >= 30);
    struct sink_stats st = sks_stats(&t->a);
    assert_true(st.acked == acked);
    assert_true(st.batches_failed >= 2);
    assert_true(sks_metric(&t->a, "tagproof_sink_batches_total", "failed") >= 2.0);
    assert_true(sks_metric(&t->a, "tagproof_sink_errors_total", "store") +
                    sks_metric(&t->a, "tagproof_sink_errors_total", "partition") >=
                2.0);

    assert_int_equal(ts_pg_start(&pg), 0);
    PQreset(t->owner);
    wait_stored(t, 60, 0, 20000);
    st = sks_stats(&t->a);
    assert_int_equal(st.stored, 60);
    assert_int_equal(st.first_scans, 1);
    assert_int_equal(sks_pg_int(t->owner,
                                "SELECT count(DISTINCT event_id) FROM scan_events "
                                "WHERE factory_id = '%s'",
                                run->factory),
                     60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_partitions_at_start_and_on_demand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_refused_by_postgres_is_rejected_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_locked_row_times_out_into_smaller_transactions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_postgres_outage_acks_nothing_until_stored, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
