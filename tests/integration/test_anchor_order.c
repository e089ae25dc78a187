/*
 * test_anchor_order: log entries take their ids in commit order (migrations/0004_log.sql), so
 * that the anchor service, appending pending entries in id order, never finds a lower id
 * committing behind a higher one it has already appended.
 *
 * - The first writer to take an id commits last: the second writer's insert waits for that
 *   commit and then takes the next id. Without the trigger (switched off in this test's own
 *   database) the same moves let a reader see the second id without the first: the test would
 *   notice.
 * - Four writers commit and roll back at random while a reader samples (max(id), count(*)):
 *   every sample is a prefix of the ids finally committed.
 *
 * The test works in a database of its own, so the log of other tests is never touched.
 */
#include "support.h"
#include "pq_sync.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITERS 4
#define TXNS 40
#define SAMPLES_MAX 20000

static char owner_url[512], svc_url[512], dbname[64];

static void url_for(char *out, size_t len, const char *base)
{
    const char *slash = strrchr(base, '/');
    snprintf(out, len, "%.*s/%s", (int)(slash - base), base, dbname);
}

#define INSERT_REVOKE                                                                              \
    "INSERT INTO log_entries (kind, factory_id, batch_id, record) VALUES ('revoke', "              \
    "'11111111-1111-4111-8111-111111111111', '33333333-3333-4333-8333-333333333333', "             \
    "convert_to(E'tagproof/revoke/v1\\n', 'UTF8')) RETURNING id"

static int setup(void **state)
{
    (void)state;
    const char *dir = ts_require_env("TAGPROOF_TEST_PG_DIR");
    const char *port = ts_require_env("TAGPROOF_TEST_PG_PORT");
    const char *bin = ts_require_env("TAGPROOF_TEST_BIN_DIR");
    snprintf(dbname, sizeof(dbname), "anchor_order_%d", (int)getpid());
    url_for(owner_url, sizeof(owner_url), ts_require_env("TAGPROOF_TEST_PG_OWNER_URL"));
    url_for(svc_url, sizeof(svc_url), ts_require_env("TAGPROOF_TEST_PG_URL"));
    if (ts_sh("'%s/scripts/lib/pgcluster' psql '%s' %s -c 'CREATE DATABASE %s OWNER tagproof' "
              ">/dev/null",
              TAGPROOF_SOURCE_DIR, dir, port, dbname) != 0 ||
        ts_sh("TAGPROOF_PG_MIGRATE_URL='%s' '%s/tagproof' migrate >/dev/null", owner_url, bin) != 0)
        return -1;
    PGconn *o = connect_to(owner_url, 0);
    exec_ok(o, "INSERT INTO factories (id, name) VALUES ('11111111-1111-4111-8111-111111111111', "
               "'f');"
               "INSERT INTO products (id, factory_id, sku, name) VALUES "
               "('22222222-2222-4222-8222-222222222222', '11111111-1111-4111-8111-111111111111', "
               "'s', 'p');"
               "INSERT INTO batches (id, factory_id, product_id, code) VALUES "
               "('33333333-3333-4333-8333-333333333333', '11111111-1111-4111-8111-111111111111', "
               "'22222222-2222-4222-8222-222222222222', 'b')");
    PQfinish(o);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_sh("'%s/scripts/lib/pgcluster' psql '%s' %s -c 'DROP DATABASE IF EXISTS %s WITH (FORCE)' "
          ">/dev/null",
          TAGPROOF_SOURCE_DIR, getenv("TAGPROOF_TEST_PG_DIR"), getenv("TAGPROOF_TEST_PG_PORT"),
          dbname);
    return 0;
}

/* Whether an asynchronous statement on c is still waiting after ms. */
static int still_busy_after(PGconn *c, int ms)
{
    int64_t until = ts_now_ms() + ms;
    while (ts_now_ms() < until) {
        PQconsumeInput(c);
        if (!PQisBusy(c))
            return 0;
        usleep(20 * 1000);
    }
    return 1;
}

static long long async_id(PGconn *c)
{
    long long id = -1;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            id = atoll(PQgetvalue(r, 0, 0));
        else if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("insert: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    return id;
}

/*
 * Writer A takes an id first; writer B inserts while A's transaction is open. Returns whether
 * B had to wait for A's commit; *a_id and *b_id get the ids, *seen_b_alone whether a reader
 * saw B's entry while A's was not visible.
 */
static int first_commits_last(long long *a_id, long long *b_id, int *seen_b_alone)
{
    PGconn *a = connect_to(svc_url, 1), *b = connect_to(svc_url, 1),
           *reader = connect_to(svc_url, 1);
    long long base = value(reader, "SELECT coalesce(max(id), 0) FROM log_entries");
    exec_ok(a, "BEGIN");
    exec_ok(b, "BEGIN");
    PGresult *r = PQexec(a, INSERT_REVOKE);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    *a_id = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_int_equal(PQsendQuery(b, INSERT_REVOKE), 1);
    int waited = still_busy_after(b, 600);
    if (!waited) {
        /* Without the lock B got its id at once: B commits first, A last. */
        *b_id = async_id(b);
        exec_ok(b, "COMMIT");
    }
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM log_entries WHERE id > %lld AND id = %lld",
             base, waited ? -1 : *b_id);
    long long b_visible = value(reader, sql);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM log_entries WHERE id = %lld", *a_id);
    *seen_b_alone = b_visible == 1 && value(reader, sql) == 0;
    exec_ok(a, "COMMIT");
    if (waited) {
        *b_id = async_id(b);
        exec_ok(b, "COMMIT");
    }
    PQfinish(a);
    PQfinish(b);
    PQfinish(reader);
    return waited;
}

static void test_first_writer_commits_last(void **state)
{
    (void)state;
    long long a_id, b_id;
    int seen_b_alone;

    /* With the trigger: B waits for A's commit, takes the next id, and no reader ever sees
     * B's entry without A's. */
    int waited = first_commits_last(&a_id, &b_id, &seen_b_alone);
    assert_true(waited);
    assert_true(b_id > a_id);
    assert_false(seen_b_alone);

    /* The control: without the trigger the same moves put a higher id before a lower one. */
    PGconn *o = connect_to(owner_url, 0);
    exec_ok(o, "ALTER TABLE log_entries DISABLE TRIGGER log_entries_serialize");
    waited = first_commits_last(&a_id, &b_id, &seen_b_alone);
    exec_ok(o, "ALTER TABLE log_entries ENABLE TRIGGER log_entries_serialize");
    PQfinish(o);
    assert_false(waited);
    assert_true(b_id > a_id);
    assert_true(seen_b_alone);
}

struct sample {
    long long max, count;
};

struct race {
    pthread_mutex_t mu;
    int writers_done;
    struct sample *samples;
    int nsamples;
    long long rolled_back;
};

static void *writer(void *arg)
{
    struct race *race = arg;
    PGconn *c = connect_to(svc_url, 1);
    unsigned seed = (unsigned)(uintptr_t)&c ^ (unsigned)ts_now_ms();
    for (int i = 0; i < TXNS; i++) {
        exec_ok(c, "BEGIN");
        int rows = 1 + (int)(rand_r(&seed) % 3);
        for (int k = 0; k < rows; k++)
            exec_ok(c, INSERT_REVOKE);
        usleep((useconds_t)(rand_r(&seed) % 4000));
        int rollback = rand_r(&seed) % 5 == 0;
        exec_ok(c, rollback ? "ROLLBACK" : "COMMIT");
        if (rollback) {
            pthread_mutex_lock(&race->mu);
            race->rolled_back += rows;
            pthread_mutex_unlock(&race->mu);
        }
    }
    PQfinish(c);
    pthread_mutex_lock(&race->mu);
    race->writers_done++;
    pthread_mutex_unlock(&race->mu);
    return NULL;
}

static void *reader(void *arg)
{
    struct race *race = arg;
    PGconn *c = connect_to(svc_url, 1);
    for (;;) {
        pthread_mutex_lock(&race->mu);
        int done = race->writers_done == WRITERS;
        pthread_mutex_unlock(&race->mu);
        if (done || race->nsamples == SAMPLES_MAX)
            break;
        PGresult *r = PQexec(c, "SELECT coalesce(max(id), 0), count(*) FROM log_entries");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            race->samples[race->nsamples].max = atoll(PQgetvalue(r, 0, 0));
            race->samples[race->nsamples].count = atoll(PQgetvalue(r, 0, 1));
            race->nsamples++;
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static void test_every_snapshot_is_a_prefix(void **state)
{
    (void)state;
    struct race race = {.samples = calloc(SAMPLES_MAX, sizeof(struct sample))};
    pthread_t w[WRITERS], r;
    pthread_mutex_init(&race.mu, NULL);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&w[i], NULL, writer, &race), 0);
    assert_int_equal(pthread_create(&r, NULL, reader, &race), 0);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    pthread_join(r, NULL);

    /* Every sample saw exactly the committed ids up to the highest it saw. */
    PGconn *c = connect_to(owner_url, 0);
    PGresult *ids = PQexec(c, "SELECT id FROM log_entries ORDER BY id");
    assert_int_equal(PQresultStatus(ids), PGRES_TUPLES_OK);
    int n = PQntuples(ids), bad = 0;
    assert_true(race.nsamples > 10);
    for (int i = 0; i < race.nsamples; i++) {
        long long upto = 0;
        for (int k = 0; k < n && atoll(PQgetvalue(ids, k, 0)) <= race.samples[i].max; k++)
            upto++;
        if (upto != race.samples[i].count)
            bad++;
    }
    PQclear(ids);
    print_message("%d samples, %lld rows rolled back, %d samples not a prefix\n", race.nsamples,
                  race.rolled_back, bad);
    PQfinish(c);
    free(race.samples);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_writer_commits_last),
        cmocka_unit_test(test_every_snapshot_is_a_prefix),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
