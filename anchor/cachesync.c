/*
 * cachesync: the anchor service's writes into the scan cache — leaf indexes after appends,
 * the newest confirmed anchor every cycle — on a Redis client whose private event loop runs
 * only while this module waits for its replies. See cachesync.h for why it may block.
 */
#include "cachesync.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "scancache.h"

#define SYNC_PAGE 5000         /* leaves read a statement, pushed before the watermark moves */
#define SYNC_KEYS 250          /* keys an EVAL: a script holds Redis ~3 ms, as the loader's fill */
#define SYNC_MAX_PAGES 40      /* pages a run: 200,000 leaves; the rest waits for the next cycle */
#define SYNC_CONNECT_MS 1500   /* how long a run waits for a connection */
#define SYNC_COMMAND_MS 2000   /* a command's deadline */
#define SYNC_BACKSTOP_MS 10000 /* every command has its own deadline; this only bounds the loop */

/*
 * Writes the leaf index of each tag (KEYS) and keeps the entry's lifetime: a key that had no
 * expiry (made by this very HSET) gets TAGPROOF_CACHE_TTL_S (ARGV[1]), one the scan service or
 * the loader filled keeps its own. ARGV[k + 1] is KEYS[k]'s index.
 */
static const char push_script[] =
    "for k = 1, #KEYS do\n"
    "  redis.call('HSET', KEYS[k], '" SCANCACHE_LEAF_FIELD "', ARGV[k + 1])\n"
    "  if redis.call('TTL', KEYS[k]) == -1 then redis.call('EXPIRE', KEYS[k], ARGV[1]) end\n"
    "end\n"
    "return #KEYS\n";

struct cachesync {
    const struct config *cfg;
    struct event_base *base;
    struct redis_client *redis;
    struct event *backstop;
    int expired;
    unsigned waiting; /* commands sent and not answered */
    int failed;       /* a command of this run failed */
    char error[256];
    int down;       /* the last run failed (logged once until one succeeds) */
    int64_t marker; /* SCANCACHE_PUSHED_KEY as read, -1 when absent */
    char ttl[16];
    struct metric *m_pushed, *m_runs;
    char keys[SYNC_KEYS][48], idx[SYNC_KEYS][24]; /* one EVAL's arguments */
};

static void on_backstop(evutil_socket_t fd, short what, void *arg)
{
    struct cachesync *s = arg;
    (void)fd;
    (void)what;
    s->expired = 1;
}

static void on_reply(void *arg, enum redis_status st, const redisReply *reply)
{
    struct cachesync *s = arg;
    s->waiting--;
    if (st == REDIS_STATUS_OK)
        return;
    if (!s->failed)
        snprintf(s->error, sizeof(s->error), "redis: %s",
                 st == REDIS_STATUS_ERROR_REPLY ? reply->str : redis_status_str(st));
    s->failed = 1;
}

/* Runs the private loop until every command sent has been answered, or for at most ms. */
static void drive(struct cachesync *s, long ms, int until_connected)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    s->expired = 0;
    evtimer_add(s->backstop, &tv);
    while (!s->expired && (until_connected ? !redis_connected(s->redis) : s->waiting > 0))
        event_base_loop(s->base, EVLOOP_ONCE);
    evtimer_del(s->backstop);
}

/* GET's answer: the marker, -1 when Redis has none (or not a number: pushed again). */
static void on_marker(void *arg, enum redis_status st, const redisReply *reply)
{
    struct cachesync *s = arg;
    char *end;
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_STRING) {
        long long v = strtoll(reply->str, &end, 10);
        s->marker = *end == '\0' && end != reply->str && v >= 0 ? v : 0;
    }
    on_reply(arg, st, reply);
}

/* Sends a command; its answer is counted by on_reply. */
static void send_with(struct cachesync *s, redis_reply_fn cb, int argc, const char **argv,
                      const size_t *argvlen)
{
    if (redis_command(s->redis, SYNC_COMMAND_MS, cb, s, argc, argv, argvlen) == 0) {
        s->waiting++;
    } else if (!s->failed) {
        s->failed = 1;
        snprintf(s->error, sizeof(s->error), "redis: command refused");
    }
}

static void send_cmd(struct cachesync *s, int argc, const char **argv, const size_t *argvlen)
{
    send_with(s, on_reply, argc, argv, argvlen);
}

/* Sends SET SCANCACHE_PUSHED_KEY v. */
static void send_marker(struct cachesync *s, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    const char *set[3] = {"SET", SCANCACHE_PUSHED_KEY, buf};
    send_cmd(s, 3, set, NULL);
}

/* Waits for what was sent: 0 when all of it was answered without an error. */
static int settle(struct cachesync *s)
{
    drive(s, SYNC_BACKSTOP_MS, 0);
    if (!s->failed && s->waiting > 0)
        snprintf(s->error, sizeof(s->error), "redis: no answer");
    return s->failed || s->waiting > 0 ? -1 : 0;
}

/*
 * Where this run starts, given PostgreSQL's watermark *mark. Redis's own marker says what its
 * data holds: absent, Redis starts empty (every entry is refilled from the database, leaf
 * index included) and the marker is set to *mark; lower, Redis came back from an older
 * snapshot or a replica that lagged, and the leaves since are pushed again.
 */
static int marker_check(struct cachesync *s, int64_t *mark)
{
    const char *get[2] = {"GET", SCANCACHE_PUSHED_KEY};
    s->marker = -1;
    send_with(s, on_marker, 2, get, NULL);
    if (settle(s) != 0)
        return -1;
    if (s->marker < 0) {
        send_marker(s, *mark);
        return settle(s);
    }
    if (s->marker < *mark) {
        log_emit(LOG_WARN, NULL,
                 "Redis holds fewer leaf indexes than it acknowledged; pushing again",
                 json_pack("{s:I, s:I}", "redis_has", (json_int_t)s->marker, "leaves_pushed",
                           (json_int_t)*mark));
        *mark = s->marker;
    }
    return 0;
}

static int pg_fail(struct cachesync *s, PGconn *conn, PGresult *res, const char *what)
{
    const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    snprintf(s->error, sizeof(s->error), "postgresql: %s: %.*s", what, (int)strcspn(msg, "\n"),
             msg);
    PQclear(res);
    return -1;
}

/* The leaves Redis has acknowledged: the watermark of migration 0006 (0 before the first). */
static int watermark_get(struct cachesync *s, PGconn *conn, int64_t *out)
{
    PGresult *res = PQexec(conn, "SELECT leaves_pushed FROM scan_cache_sync");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_fail(s, conn, res, "reading the watermark");
    *out = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return 0;
}

static int watermark_set(struct cachesync *s, PGconn *conn, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    const char *p[1] = {buf};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO scan_cache_sync (leaves_pushed) VALUES ($1::bigint)"
                                 " ON CONFLICT (singleton) DO UPDATE SET leaves_pushed ="
                                 " excluded.leaves_pushed, updated_at = now()",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return pg_fail(s, conn, res, "writing the watermark");
    PQclear(res);
    metric_set(s->m_pushed, (double)v);
    return 0;
}

/* One EVAL of the push script for rows [from, to) of res that are tag leaves. */
static void push_keys(struct cachesync *s, const PGresult *res, int from, int to)
{
    const char *argv[4 + 2 * SYNC_KEYS];
    int argc = 0, n = 0;
    char nkeys[16];

    for (int i = from; i < to; i++) {
        if (PQgetisnull(res, i, 1))
            continue; /* a recall's leaf: no tag */
        scancache_tag_key(s->keys[n], sizeof(s->keys[n]), PQgetvalue(res, i, 1));
        snprintf(s->idx[n], sizeof(s->idx[n]), "%s", PQgetvalue(res, i, 0));
        n++;
    }
    if (n == 0)
        return;
    snprintf(nkeys, sizeof(nkeys), "%d", n);
    argv[argc++] = "EVAL";
    argv[argc++] = push_script;
    argv[argc++] = nkeys;
    for (int k = 0; k < n; k++)
        argv[argc++] = s->keys[k];
    argv[argc++] = s->ttl;
    for (int k = 0; k < n; k++)
        argv[argc++] = s->idx[k];
    send_cmd(s, argc, argv, NULL);
}

/*
 * One page of leaves from *mark on: pushed, acknowledged, then the watermark moved past them.
 * *more: a full page was read. 0, or -1 with s->error.
 */
static int push_page(struct cachesync *s, PGconn *conn, int64_t *mark, int *more, int *pushed)
{
    char from[24], limit[16];
    snprintf(from, sizeof(from), "%" PRId64, *mark);
    snprintf(limit, sizeof(limit), "%d", SYNC_PAGE);
    const char *p[2] = {from, limit};
    PGresult *res =
        PQexecParams(conn,
                     "SELECT leaf_index, tag_id FROM log_entries"
                     " WHERE leaf_index >= $1::bigint ORDER BY leaf_index LIMIT $2::int",
                     2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_fail(s, conn, res, "reading leaves");
    int rows = PQntuples(res);
    *more = rows == SYNC_PAGE;
    if (rows == 0) {
        PQclear(res);
        return 0;
    }
    /* Pipelined: every EVAL of the page leaves at once, then the loop waits for the replies. */
    int64_t next = strtoll(PQgetvalue(res, rows - 1, 0), NULL, 10) + 1;
    for (int i = 0; i < rows && !s->failed; i += SYNC_KEYS)
        push_keys(s, res, i, i + SYNC_KEYS < rows ? i + SYNC_KEYS : rows);
    PQclear(res);
    if (settle(s) != 0)
        return -1;
    send_marker(s, next); /* once Redis holds the whole page: never ahead of its entries */
    if (settle(s) != 0)
        return -1;
    *pushed += rows;
    *mark = next;
    return watermark_set(s, conn, next);
}

/* tp:anchor: the newest confirmed anchor, or no key when there is none. */
static int push_anchor(struct cachesync *s, PGconn *conn)
{
    char value[64 + SCANCACHE_LEDGER_REF_MAX];
    PGresult *res =
        PQexec(conn, "SELECT checkpoint_size, ledger_ref FROM " SCANCACHE_NEWEST_ANCHOR_SQL " a");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_fail(s, conn, res, "reading the newest confirmed anchor");
    int have =
        PQntuples(res) == 1 &&
        scancache_anchor_format(value, sizeof(value), strtoll(PQgetvalue(res, 0, 0), NULL, 10),
                                PQgetvalue(res, 0, 1)) > 0;
    if (PQntuples(res) == 1 && !have)
        log_warn("the newest confirmed anchor's ledger reference cannot be shown to scans");
    PQclear(res);
    const char *set[3] = {"SET", SCANCACHE_ANCHOR_KEY, value};
    const char *del[2] = {"DEL", SCANCACHE_ANCHOR_KEY};
    if (have)
        send_cmd(s, 3, set, NULL);
    else
        send_cmd(s, 2, del, NULL);
    return settle(s);
}

int cachesync_run(struct cachesync *s, PGconn *conn)
{
    int64_t mark = 0;
    int more = 0, pushed = 0, rc = -1;

    s->failed = 0;
    s->error[0] = '\0';
    /* What happened while the thread did other things (a closed connection, a due retry). */
    event_base_loop(s->base, EVLOOP_NONBLOCK);
    if (!redis_connected(s->redis))
        drive(s, SYNC_CONNECT_MS, 1);
    if (s->waiting > 0) {
        /* Replies of a run that gave up waiting: let them arrive or time out first. */
        drive(s, SYNC_BACKSTOP_MS, 0);
    }
    if (!redis_connected(s->redis)) {
        snprintf(s->error, sizeof(s->error), "redis: not connected");
        goto done;
    }
    if (watermark_get(s, conn, &mark) != 0 || marker_check(s, &mark) != 0)
        goto done;
    for (int page = 0; page < SYNC_MAX_PAGES; page++) {
        if (push_page(s, conn, &mark, &more, &pushed) != 0)
            goto done;
        if (!more)
            break;
    }
    if (push_anchor(s, conn) != 0)
        goto done;
    rc = more ? 1 : 0;
done:
    metric_inc(s->m_runs, rc >= 0                              ? "ok"
                          : strncmp(s->error, "redis", 5) == 0 ? "redis_error"
                                                               : "pg_error");
    if (rc < 0 && !s->down)
        log_emit(LOG_WARN, NULL, "the scan cache is behind the log; the next cycle catches up",
                 json_pack("{s:s, s:I}", "error", s->error, "leaves_pushed", (json_int_t)mark));
    else if (rc >= 0 && (s->down || pushed > 0))
        log_emit(LOG_INFO, NULL, "scan cache updated",
                 json_pack("{s:i, s:I}", "leaves", pushed, "leaves_pushed", (json_int_t)mark));
    s->down = rc < 0;
    return rc;
}

struct cachesync *cachesync_new(const struct config *cfg, struct metrics *metrics, char *err,
                                size_t errlen)
{
    struct redis_options o;
    const char *why = NULL;
    struct cachesync *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->base = event_base_new()) == NULL ||
        (s->backstop = evtimer_new(s->base, on_backstop, s)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->cfg = cfg;
    redis_options_from_config(cfg, &o);
    o.command_timeout_ms = SYNC_COMMAND_MS;
    if ((s->redis = redis_client_new(s->base, &o, &why)) == NULL) {
        snprintf(err, errlen, "TAGPROOF_REDIS_URL: %s", why != NULL ? why : "unusable");
        goto fail;
    }
    snprintf(s->ttl, sizeof(s->ttl), "%d", cfg->cache_ttl_s);
    s->m_pushed = metrics_gauge(metrics, "tagproof_scan_cache_leaves_pushed",
                                "Leaves whose index the scan cache has acknowledged.", NULL);
    s->m_runs = metrics_counter(metrics, "tagproof_scan_cache_syncs_total",
                                "Updates of the scan cache after a cycle, by result.", "result");
    return s;
fail:
    cachesync_free(s);
    return NULL;
}

void cachesync_free(struct cachesync *s)
{
    if (s == NULL)
        return;
    redis_client_free(s->redis); /* answers what is still open: on_reply only counts */
    if (s->backstop != NULL)
        event_free(s->backstop);
    if (s->base != NULL)
        event_base_free(s->base);
    free(s);
}
