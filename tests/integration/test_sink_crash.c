/*
 * The crash test of the scan-event sink: a sink in a child process is killed with SIGKILL
 * while a batch's transaction is open (after XREADGROUP delivered it, before COMMIT, held
 * there by the commit_delay_ms test hook). A second sink, another consumer, claims what the
 * dead one left pending once it is idle: every event ends up in PostgreSQL exactly once,
 * first scans included, and the group's pending list is empty.
 */
#include "support.h"
#define SINK_SUPPORT_DECLARATIONS_ONLY
#include "sink_support.c"

#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define EVENTS 1000
#define BATCH 400

static const char *pg_url, *owner_url, *redis_url;

/*
 * The child: its own loop and clients, nothing of cmocka's (a failed assertion must not
 * carry on with the parent's tests in the child). It runs until it is killed.
 */
static void child_main(const struct sks_run *run)
{
    char host[64];
    int port;
    const char *why = NULL;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const char *p = strstr(redis_url, "://") + 3;
    const char *colon = strrchr(p, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - p), p);
    port = atoi(colon + 1);

    struct event_base *base = event_base_new();
    struct redis_options ro = {.host = host, .port = port};
    struct redis_client *rc = base != NULL ? redis_client_new(base, &ro, &why) : NULL;
    struct pg_options po = {.conninfo = pg_url, .pool_size = 2, .settings = SERVICE_PG_ALL_TENANTS};
    struct pg_pool *pool = rc != NULL ? pg_pool_new(base, &po) : NULL;
    struct sink_options o = sks_options(run, "crash-a");
    o.batch_max = BATCH;
    o.commit_delay_ms = 1000;
    o.claim_idle_ms = 60000;
    struct sink *s = pool != NULL ? sink_new(base, rc, pool, &o, NULL, &why) : NULL;
    if (s == NULL || sink_start(s) != 0) {
        fprintf(stderr, "crash child: cannot start a sink: %s\n", why != NULL ? why : "?");
        _exit(2);
    }
    event_base_dispatch(base);
    _exit(3);
}

struct state {
    PGconn *owner, *svc;
    redisContext *rc;
    struct sks_run run;
    struct sks_sink b;
    pid_t child;
};

static int setup(void **st)
{
    struct state *s = calloc(1, sizeof(*s));
    pg_url = ts_require_env("TAGPROOF_TEST_PG_URL");
    owner_url = ts_require_env("TAGPROOF_TEST_PG_OWNER_URL");
    redis_url = ts_require_env("TAGPROOF_TEST_REDIS_URL");
    log_init("test_sink_crash", LOG_WARN, 2);
    s->owner = sks_pg(owner_url);
    s->svc = sks_pg(pg_url);
    s->rc = sks_redis(redis_url);
    s->child = -1;
    *st = s;
    return 0;
}

static int teardown(void **st)
{
    struct state *s = *st;
    if (s->child > 0) {
        kill(s->child, SIGKILL);
        waitpid(s->child, NULL, 0);
    }
    sks_sink_stop(&s->b);
    sks_run_cleanup(&s->run, s->owner, s->rc);
    PQfinish(s->owner);
    PQfinish(s->svc);
    redisFree(s->rc);
    free(s);
    return 0;
}

struct until {
    struct state *s;
    long long stored, pending;
};

static bool reached(void *arg)
{
    struct until *u = arg;
    return sks_stored(u->s->svc, &u->s->run) == u->stored &&
           sks_pending(u->s->rc, &u->s->run) == u->pending;
}

static long long first_ms(struct state *s, int tag)
{
    return sks_pg_int(s->svc,
                      "SELECT (extract(epoch FROM first_scanned_at) * 1000)::bigint FROM tags "
                      "WHERE tag_id = '%s'",
                      s->run.tags[tag]);
}

static void test_killed_mid_batch_every_event_stored_once(void **state)
{
    struct state *s = *state;
    struct sks_run *run = &s->run;
    static char ids[EVENTS][48];
    sks_run_init(run, "crash", s->owner, 4);

    /*
     * Written before the child starts, so its reads take full batches: 0..399 are committed,
     * 400..799 are the batch it dies in, 800..999 are never delivered to it. A first scan
     * falls in each part.
     */
    for (int i = 0; i < EVENTS; i++) {
        struct scan_event ev = sks_event(run, run->tags[i % 4], i);
        ev.first_scan = i == 100 || i == 103 || i == 401 || i == 403 || i == 902;
        sks_xadd(s->rc, run, &ev, ids[i], sizeof(ids[i]));
    }

    fflush(NULL);
    s->child = fork();
    assert_true(s->child >= 0);
    if (s->child == 0)
        child_main(run);

    /* The first batch committed and acknowledged, the second delivered: its transaction. */
    int64_t end = ts_now_ms() + 20000;
    while (!(sks_stored(s->svc, run) == BATCH && sks_pending(s->rc, run) == BATCH)) {
        if (ts_now_ms() > end)
            fail_msg("the child never got into its second batch: %lld stored, %lld pending",
                     sks_stored(s->svc, run), sks_pending(s->rc, run));
        int status;
        if (waitpid(s->child, &status, WNOHANG) == s->child) {
            s->child = -1;
            fail_msg("the child sink exited early (status %d)", status);
        }
        usleep(10 * 1000);
    }
    usleep(200 * 1000);
    assert_int_equal(sks_stored(s->svc, run), BATCH); /* not committed */
    kill(s->child, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(s->child, &status, 0), s->child);
    s->child = -1;
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(sks_pending(s->rc, run), BATCH);
    assert_int_equal(sks_stored(s->svc, run), BATCH);

    /* Another consumer takes over what the dead one left. */
    struct sink_options o = sks_options(run, "crash-b");
    o.batch_max = BATCH;
    o.claim_idle_ms = 500;
    sks_sink_start(&s->b, &o, pg_url, redis_url);
    struct until u = {s, EVENTS, 0};
    int took = sks_wait(&s->b, reached, &u, 20000);
    if (took < 0)
        fail_msg("%lld stored, %lld pending", sks_stored(s->svc, run), sks_pending(s->rc, run));

    /* Exactly once: every entry id is there, none twice. */
    assert_int_equal(sks_pg_int(s->svc, "SELECT count(*) FROM scan_events WHERE factory_id = '%s'",
                                run->factory),
                     EVENTS);
    assert_int_equal(sks_pg_int(s->svc,
                                "SELECT count(DISTINCT event_id) FROM scan_events "
                                "WHERE factory_id = '%s'",
                                run->factory),
                     EVENTS);
    size_t cap = EVENTS * 48 + 16, off = 0;
    char *list = malloc(cap);
    assert_non_null(list);
    list[off++] = '{';
    for (int i = 0; i < EVENTS; i++)
        off += (size_t)snprintf(list + off, cap - off, "%s%s", i ? "," : "", ids[i]);
    snprintf(list + off, cap - off, "}");
    long long found = sks_pg_int(s->svc,
                                 "SELECT count(*) FROM scan_events WHERE factory_id = '%s' "
                                 "AND event_id = ANY ('%s'::text[])",
                                 run->factory, list);
    free(list);
    assert_int_equal(found, EVENTS);
    assert_int_equal(sks_pending(s->rc, run), 0);

    struct sink_stats st = sks_stats(&s->b);
    assert_int_equal(st.claimed, BATCH);
    assert_int_equal(st.stored, EVENTS - BATCH);
    assert_int_equal(st.duplicate, 0);

    /*
     * First scans, once each with the event's time, whichever consumer stored it: tag 0's in
     * the committed batch, tag 1's in the crashed one, tag 2's in the undelivered part, and
     * tag 3's second claim (crashed batch) never overrides its first (committed batch).
     */
    assert_true(first_ms(s, 0) == run->base_ms + 100);
    assert_true(first_ms(s, 1) == run->base_ms + 401);
    assert_true(first_ms(s, 2) == run->base_ms + 902);
    assert_true(first_ms(s, 3) == run->base_ms + 103);
    assert_int_equal(st.first_scans, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_killed_mid_batch_every_event_stored_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
