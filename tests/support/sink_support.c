/*
 * sink_support: what the test_sink* integration tests share — a sink running on its own loop
 * with real clients, synchronous checks of PostgreSQL (libpq) and Redis (hiredis) between
 * slices of that loop, scan events written with the events.c builder, and tag fixtures that
 * each test creates and removes itself, since other tests share the servers.
 *
 * The build compiles this file into every test_sink* executable; a test gets the
 * declarations by defining SINK_SUPPORT_DECLARATIONS_ONLY and including this file.
 */
#ifndef SINK_SUPPORT_DECLARED
#define SINK_SUPPORT_DECLARED

#include "support.h"

#include "events.h"
#include "metrics.h"
#include "pg.h"
#include "service.h"
#include "redis.h"
#include "sink.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#define SKS_TAGS_MAX 16

/* One test's names and rows: a stream, a group and a factory of its own. */
struct sks_run {
    char stream[96];
    char group[64];
    char factory[UUID_STR_LEN + 1]; /* set as factory_id on the test's events */
    char product[UUID_STR_LEN + 1];
    char batch[UUID_STR_LEN + 1];
    char tags[SKS_TAGS_MAX][UUID_STR_LEN + 1]; /* registered tags (fixtures) */
    int ntags;
    char strangers[4][UUID_STR_LEN + 1]; /* tags that are not registered */
    int nstrangers;
    int64_t base_ms; /* event times: base_ms + i, random per run so parallel runs differ */
    bool fixtures;
};

/* A sink with its own loop, clients and registry. */
struct sks_sink {
    struct event_base *base;
    struct redis_client *redis;
    struct pg_pool *pg;
    struct metrics *metrics;
    struct sink *sink;
    int done;
};

/* A new run: names from prefix, and when ntags > 0 fixture rows created as the owner. */
void sks_run_init(struct sks_run *run, const char *prefix, PGconn *owner, int ntags);
/* A random tag id that is not registered, remembered so that cleanup removes its events. */
const char *sks_run_stranger(struct sks_run *run);
/* Removes the run's rows (scan events, tags, batch, product, factory) and its stream. */
void sks_run_cleanup(struct sks_run *run, PGconn *owner, redisContext *rc);

/* A valid event of the run's factory for tag, at run->base_ms + offset_ms. */
struct scan_event sks_event(const struct sks_run *run, const char *tag, int64_t offset_ms);
/* XADDs ev to the run's stream with the builder's vector; the entry id goes to id. */
void sks_xadd(redisContext *rc, const struct sks_run *run, const struct scan_event *ev, char *id,
              size_t idlen);
/* A random lower-case UUID. */
void sks_uuid(char out[UUID_STR_LEN + 1]);

/* Synchronous clients for setup and checks (never the code under test). */
PGconn *sks_pg(const char *url);
redisContext *sks_redis(const char *url);
long long sks_pg_int(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *sks_pg_str(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sks_pg_exec(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An integer reply (or the first element of an array reply) of a command; fails otherwise. */
long long sks_redis_int(redisContext *rc, const char *fmt, ...);
/* The run's group's pending count (XPENDING summary); -1 while the group does not exist. */
long long sks_pending(redisContext *rc, const struct sks_run *run);
/* Events of the run's factory in scan_events. */
long long sks_stored(PGconn *c, const struct sks_run *run);

/* Options for the run: its stream, group and a consumer name; quick intervals for tests. */
struct sink_options sks_options(const struct sks_run *run, const char *consumer);
/* Starts a sink on fresh clients for pg_url and redis_url. */
void sks_sink_start(struct sks_sink *t, const struct sink_options *o, const char *pg_url,
                    const char *redis_url);
/* sink_stop, runs the loop until done, frees everything. */
void sks_sink_stop(struct sks_sink *t);
struct sink_stats sks_stats(const struct sks_sink *t);
double sks_metric(const struct sks_sink *t, const char *family, const char *label_value);

/* Runs the loop in slices until cond(arg) holds: the ms it took, or -1 after timeout_ms. */
int sks_wait(struct sks_sink *t, bool (*cond)(void *), void *arg, int timeout_ms);
void sks_run_for(struct event_base *base, int ms);

/* Wall-clock milliseconds. */
int64_t sks_wall_ms(void);

#endif

#ifndef SINK_SUPPORT_DECLARATIONS_ONLY

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t sks_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sks_uuid(char out[UUID_STR_LEN + 1])
{
    uint8_t raw[16];
    assert_int_equal(uuid_v4(raw), 0);
    uuid_format(raw, out);
}

static void sks_pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *sks_pg(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to PostgreSQL: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, sks_pg_quiet, NULL); /* "... does not exist, skipping" */
    /* The services' role sees rows only of the tenant it names (migrations/0002). */
    PQclear(PQexec(c, "SET tagproof.tenant = 'all'"));
    return c;
}

static PGresult *sks_pg_vrun(PGconn *c, const char *fmt, va_list ap)
{
    char *sql = NULL;
    assert_true(vasprintf(&sql, fmt, ap) >= 0);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    free(sql);
    return r;
}

long long sks_pg_int(PGconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = sks_pg_vrun(c, fmt, ap);
    va_end(ap);
    assert_int_equal(PQntuples(r), 1);
    long long v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

char *sks_pg_str(PGconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = sks_pg_vrun(c, fmt, ap);
    va_end(ap);
    assert_int_equal(PQntuples(r), 1);
    char *v = PQgetisnull(r, 0, 0) ? NULL : strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

void sks_pg_exec(PGconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PQclear(sks_pg_vrun(c, fmt, ap));
    va_end(ap);
}

static void parse_redis_url(const char *url, char *host, size_t hostlen, int *port)
{
    const char *p = strstr(url, "://");
    p = p != NULL ? p + 3 : url;
    const char *colon = strrchr(p, ':');
    assert_non_null(colon);
    size_t n = (size_t)(colon - p);
    assert_true(n < hostlen);
    memcpy(host, p, n);
    host[n] = '\0';
    *port = atoi(colon + 1);
}

redisContext *sks_redis(const char *url)
{
    char host[64];
    int port;
    parse_redis_url(url, host, sizeof(host), &port);
    redisContext *rc = redisConnect(host, port);
    if (rc == NULL || rc->err)
        fail_msg("cannot connect to Redis at %s", url);
    return rc;
}

long long sks_redis_int(redisContext *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    long long v = 0;
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    else
        fail_msg("unexpected Redis reply to %s: type %d %s", fmt, r->type,
                 r->str != NULL ? r->str : "");
    freeReplyObject(r);
    return v;
}

long long sks_pending(redisContext *rc, const struct sks_run *run)
{
    redisReply *r = redisCommand(rc, "XPENDING %s %s", run->stream, run->group);
    assert_non_null(r);
    long long v = -1; /* no such group (yet) */
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    else if (r->type != REDIS_REPLY_ERROR || strstr(r->str, "NOGROUP") == NULL)
        fail_msg("unexpected Redis reply to XPENDING: type %d", r->type);
    freeReplyObject(r);
    return v;
}

long long sks_stored(PGconn *c, const struct sks_run *run)
{
    return sks_pg_int(c, "SELECT count(*) FROM scan_events WHERE factory_id = '%s'", run->factory);
}

void sks_run_init(struct sks_run *run, const char *prefix, PGconn *owner, int ntags)
{
    char id[UUID_STR_LEN + 1];
    memset(run, 0, sizeof(*run));
    sks_uuid(id);
    snprintf(run->stream, sizeof(run->stream), "test:sink:%s:%.8s", prefix, id);
    snprintf(run->group, sizeof(run->group), "g-%s-%.8s", prefix, id);
    sks_uuid(run->factory);
    sks_uuid(run->product);
    sks_uuid(run->batch);
    /*
     * Event times start at a random millisecond of the last hour: runs in parallel write to
     * different streams whose entry ids (the event ids) may coincide, and scan_events' key is
     * (event_id, scanned_at), so their times must not.
     */
    uint8_t rnd[16];
    assert_int_equal(uuid_v4(rnd), 0);
    uint32_t r32 = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
    run->base_ms = sks_wall_ms() - 3600 * 1000 + (int64_t)(r32 % 3000000);
    assert_true(ntags <= SKS_TAGS_MAX);
    for (int i = 0; i < ntags; i++)
        sks_uuid(run->tags[i]);
    run->ntags = ntags;
    if (ntags == 0)
        return;
    run->fixtures = true;
    sks_pg_exec(owner, "INSERT INTO factories (id, name) VALUES ('%s', 'sink test %s')",
                run->factory, run->factory);
    sks_pg_exec(owner,
                "INSERT INTO products (id, factory_id, sku, name) VALUES ('%s', '%s', 'sku', 'p')",
                run->product, run->factory);
    sks_pg_exec(owner,
                "INSERT INTO batches (id, factory_id, product_id, code) "
                "VALUES ('%s', '%s', '%s', 'b1')",
                run->batch, run->factory, run->product);
    for (int i = 0; i < ntags; i++)
        sks_pg_exec(owner,
                    "INSERT INTO tags (tag_id, factory_id, batch_id, product_id) "
                    "VALUES ('%s', '%s', '%s', '%s')",
                    run->tags[i], run->factory, run->batch, run->product);
}

const char *sks_run_stranger(struct sks_run *run)
{
    assert_true(run->nstrangers < 4);
    sks_uuid(run->strangers[run->nstrangers]);
    return run->strangers[run->nstrangers++];
}

void sks_run_cleanup(struct sks_run *run, PGconn *owner, redisContext *rc)
{
    if (owner != NULL) {
        sks_pg_exec(owner, "DELETE FROM scan_events WHERE factory_id = '%s'", run->factory);
        for (int i = 0; i < run->ntags; i++)
            sks_pg_exec(owner, "DELETE FROM scan_events WHERE tag_id = '%s'", run->tags[i]);
        for (int i = 0; i < run->nstrangers; i++)
            sks_pg_exec(owner, "DELETE FROM scan_events WHERE tag_id = '%s'", run->strangers[i]);
        if (run->fixtures) {
            sks_pg_exec(owner, "DELETE FROM tags WHERE factory_id = '%s'", run->factory);
            sks_pg_exec(owner, "DELETE FROM batches WHERE factory_id = '%s'", run->factory);
            sks_pg_exec(owner, "DELETE FROM products WHERE factory_id = '%s'", run->factory);
            sks_pg_exec(owner, "DELETE FROM factories WHERE id = '%s'", run->factory);
        }
    }
    if (rc != NULL)
        freeReplyObject(redisCommand(rc, "DEL %s", run->stream));
}

struct scan_event sks_event(const struct sks_run *run, const char *tag, int64_t offset_ms)
{
    struct scan_event ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.tag_id, sizeof(ev.tag_id), "%s", tag);
    ev.ts_ms = run->base_ms + offset_ms;
    ev.verdict = "authentic";
    ev.score = 0;
    snprintf(ev.ip_hash, sizeof(ev.ip_hash), "%064x", 42);
    events_set_user_agent(&ev, "sink-test/1.0", 13);
    ev.source = "cache";
    snprintf(ev.factory_id, sizeof(ev.factory_id), "%s", run->factory);
    snprintf(ev.batch_id, sizeof(ev.batch_id), "%s", run->batch);
    return ev;
}

void sks_xadd(redisContext *rc, const struct sks_run *run, const struct scan_event *ev, char *id,
              size_t idlen)
{
    struct events_xadd x;
    const char *why = NULL;
    if (events_xadd(ev, run->stream, &x, &why) != 0)
        fail_msg("events_xadd: %s", why);
    redisReply *r = redisCommandArgv(rc, x.argc, x.argv, x.argvlen);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_STRING)
        fail_msg("XADD: %s", r->str != NULL ? r->str : "unexpected reply");
    if (id != NULL)
        snprintf(id, idlen, "%s", r->str);
    freeReplyObject(r);
}

struct sink_options sks_options(const struct sks_run *run, const char *consumer)
{
    struct sink_options o = {
        .stream = run->stream,
        .group = run->group,
        .consumer = consumer,
        .block_ms = 200,
        .linger_ms = 20,
        .backoff_min_ms = 50,
        .backoff_max_ms = 500,
        .trim_interval_ms = 300,
    };
    return o;
}

static void sks_on_done(void *arg)
{
    ((struct sks_sink *)arg)->done++;
}

void sks_sink_start(struct sks_sink *t, const struct sink_options *o, const char *pg_url,
                    const char *redis_url)
{
    char host[64];
    int port;
    const char *why = NULL;
    memset(t, 0, sizeof(*t));
    assert_non_null(t->base = event_base_new());
    parse_redis_url(redis_url, host, sizeof(host), &port);
    struct redis_options ro = {.host = host, .port = port, .connect_timeout_ms = 1000};
    t->redis = redis_client_new(t->base, &ro, &why);
    if (t->redis == NULL)
        fail_msg("redis_client_new: %s", why);
    struct pg_options po = {.conninfo = pg_url,
                            .settings = SERVICE_PG_ALL_TENANTS,
                            .pool_size = 2,
                            .connect_timeout_ms = 2000,
                            .backoff_min_ms = 20,
                            .backoff_max_ms = 300};
    assert_non_null(t->pg = pg_pool_new(t->base, &po));
    assert_non_null(t->metrics = metrics_new());
    t->sink = sink_new(t->base, t->redis, t->pg, o, t->metrics, &why);
    if (t->sink == NULL)
        fail_msg("sink_new: %s", why);
    assert_int_equal(sink_start(t->sink), 0);
}

void sks_sink_stop(struct sks_sink *t)
{
    if (t->sink == NULL)
        return;
    assert_int_equal(sink_stop(t->sink, sks_on_done, t), 0);
    int64_t end = ts_now_ms() + 15000;
    while (t->done == 0 && ts_now_ms() < end)
        sks_run_for(t->base, 20);
    assert_int_equal(t->done, 1);
    sink_free(t->sink);
    t->sink = NULL;
    redis_client_free(t->redis);
    pg_pool_free(t->pg);
    /* Callbacks of the freed clients are due on the loop once more. */
    sks_run_for(t->base, 10);
    event_base_free(t->base);
    metrics_free(t->metrics);
    memset(t, 0, sizeof(*t));
}

struct sink_stats sks_stats(const struct sks_sink *t)
{
    struct sink_stats st;
    sink_get_stats(t->sink, &st);
    return st;
}

double sks_metric(const struct sks_sink *t, const char *family, const char *label_value)
{
    /* Registering an existing family again hands back the one the sink registered. */
    struct metric *m;
    if (label_value == NULL) {
        m = metrics_counter(t->metrics, family, "", NULL);
        if (m == NULL)
            m = metrics_gauge(t->metrics, family, "", NULL);
        assert_non_null(m);
        return metric_value(m);
    }
    m = metrics_counter(t->metrics, family, "",
                        strcmp(family, "tagproof_sink_errors_total") == 0 ? "op" : "result");
    assert_non_null(m);
    return metric_value(m, label_value);
}

static void sks_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

void sks_run_for(struct event_base *base, int ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, sks_tick, NULL);
    struct timeval tv = {0, 5000};
    int64_t end = ts_now_ms() + ms;
    assert_non_null(tick);
    event_add(tick, &tv);
    while (ts_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
}

int sks_wait(struct sks_sink *t, bool (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t start = ts_now_ms();
    for (;;) {
        if (cond(arg))
            return (int)(ts_now_ms() - start);
        if (ts_now_ms() - start >= timeout_ms)
            return -1;
        sks_run_for(t->base, 25);
    }
}

#endif
