/*
 * scan: the public scan path. A request is a small state machine on its worker's loop:
 *
 *   scan_start      validate the id, the location and who is asking
 *   lookup_cache    one Lua script in Redis: tag data, first scan, recall, rule state
 *   lookup_db       on a miss, a timeout or an open Redis breaker: PostgreSQL, one statement
 *                   for the worker's scans that wait for it together
 *   fill_cache      after the database answered: refill Redis and read the rule state
 *   record_first    a first scan decided in Redis is written to PostgreSQL at once
 *   finish          rules → answer (JSON or page) → scan event
 *
 * Each store call is guarded by that store's breaker and deadline. When neither store can
 * say whether the tag exists the answer is 503, never a false "unknown".
 */
#include "scan.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include <event2/event.h>

#include "answer.h"
#include "breaker.h"
#include "config.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "page.h"
#include "proxies.h"
#include "pg.h"
#include "redis.h"
#include "rules.h"
#include "scancache.h"
#include "service.h"
#include "tagcache.h"
#include "uuid.h"

struct scan_service {
    struct service *svc;
    const struct config *cfg;
    struct rules_config rules;
    struct tagcache_consts script_consts; /* the scripts' constant arguments */
    unsigned char salt[64];
    size_t salt_len;
    struct proxies *proxies;     /* TAGPROOF_TRUSTED_PROXIES */
    struct metric *scans;        /* by verdict and source */
    struct metric *cache;        /* hit, miss, error */
    struct metric *flags;        /* fraud flags by rule */
    struct metric *first_writes; /* first-scan writes: ok, deferred */
    struct metric *events;       /* scan events: sent, deferred, replayed, dropped */
    struct metric *backlog;      /* events waiting for Redis, per worker */
    struct metric *degraded;
};

/*
 * Events that could not be added to the stream (Redis down or refusing) wait in a bounded
 * ring per worker and are replayed into the stream once Redis answers again, so the sink
 * stores them like any other. Past SCAN_BACKLOG_MAX the oldest are dropped and counted.
 */
#define SCAN_BACKLOG_MAX 20000
#define SCAN_BACKLOG_FLUSH_MS 250
#define SCAN_BACKLOG_BATCH 256

struct scan_worker {
    struct scan_service *ss;
    struct service_worker *w;
    struct scan_event *backlog; /* ring of SCAN_BACKLOG_MAX */
    size_t head, count;
    struct event *flush;
    unsigned in_flight; /* replays sent and not yet answered */
    /*
     * The client-IP HMAC, keyed with the salt once: OpenSSL 3's one-shot HMAC() looks the
     * algorithm up and keys a new context on every call.
     */
    EVP_MAC_CTX *mac;
    /* Activated when the worker's first log line of a loop turn is buffered; writes them. */
    struct event *log_flush;
    /* Scans waiting for a database lookup (see lookup_db), oldest first. */
    struct scan_req *db_head, *db_tail;
    unsigned db_in_flight; /* lookup statements sent and not yet answered */
    struct event *db_ev;   /* sends what waits, after the callbacks due in this loop turn */
};

enum scan_source { SOURCE_CACHE, SOURCE_DATABASE };

struct scan_req {
    struct http_req *req;
    struct scan_service *ss;
    struct service_worker *w;
    int html;
    char tag[UUID_STR_LEN + 1];
    char client[40];
    char ip_hash[65];
    char *user_agent;
    int has_loc;
    double lat, lon;

    enum scan_source source;
    int redis_unusable; /* Redis failed or its breaker refused during this request */
    int found;
    /* The tag's data as JSON text, {"product":…, "batch":…, "factory":…}: what the cache
     * holds, or built from the database row; info_parts points into it. */
    char *info;
    size_t info_len;
    struct answer_info info_parts;
    char batch_id[UUID_STR_LEN + 1];
    char factory_id[UUID_STR_LEN + 1];
    int64_t first_ms;
    int first_scan;
    int first_pending; /* the first-scan write to PostgreSQL failed: the sink makes it */
    int revoked;
    long scan_count;             /* 0: unknown */
    int64_t leaf_index;          /* from the database, for the cache fill; -1: none */
    struct answer_anchor anchor; /* what the answer says about anchoring */
    struct rules_input in;
    int noscript_retried;

    uint64_t gen; /* breaker generation of the call in flight */
    int64_t call_started;
    struct scan_req *db_next; /* in the worker's queue of database lookups */
};

/* --- small helpers ------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* HMAC-SHA256 of data with the worker's keyed context, as lower-case hex and a NUL. */
static void hmac_hex(struct scan_worker *sw, const char *data, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    size_t n = 0;
    /* A NULL key re-initialises the context with the key it already holds. */
    if (EVP_MAC_init(sw->mac, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(sw->mac, (const unsigned char *)data, strlen(data)) != 1 ||
        EVP_MAC_final(sw->mac, md, &n, sizeof(md)) != 1 || n != sizeof(md)) {
        /* Never expected; an all-zero hash would merge clients, so hash the slow way. */
        const struct scan_service *ss = sw->ss;
        unsigned int len = 0;
        HMAC(EVP_sha256(), ss->salt, (int)ss->salt_len, (const unsigned char *)data, strlen(data),
             md, &len);
    }
    for (size_t i = 0; i < sizeof(md); i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static void scan_req_free(struct scan_req *r)
{
    free(r->info);
    free(r->user_agent);
    free(r);
}

/* Breaker bookkeeping around one store call. */
static int store_allow(struct scan_req *r, enum service_dep dep)
{
    struct breaker *b = service_breaker(r->ss->svc, dep);
    if ((dep == SERVICE_REDIS && r->w->redis == NULL) || (dep == SERVICE_PG && r->w->pg == NULL))
        return 0;
    if (!breaker_allow(b, &r->gen))
        return 0;
    r->call_started = mono_ms();
    return 1;
}

static void store_record(struct scan_req *r, enum service_dep dep, enum breaker_outcome o)
{
    breaker_record(service_breaker(r->ss->svc, dep), r->gen, o, mono_ms() - r->call_started);
}

static enum breaker_outcome redis_outcome(enum redis_status st)
{
    if (st == REDIS_STATUS_OK || st == REDIS_STATUS_ERROR_REPLY)
        return BREAKER_SUCCESS; /* the server answered */
    return st == REDIS_STATUS_TIMEOUT ? BREAKER_TIMEOUT : BREAKER_FAILURE;
}

static enum breaker_outcome pg_outcome(enum pg_status st)
{
    if (st == PG_OK || st == PG_ERR_QUERY)
        return BREAKER_SUCCESS;
    return st == PG_ERR_TIMEOUT ? BREAKER_TIMEOUT : BREAKER_FAILURE;
}

static void ignore_reply(void *arg, enum redis_status st, const redisReply *reply)
{
    (void)arg;
    (void)st;
    (void)reply;
}

/* --- the answer ---------------------------------------------------------------------- */

static void reply_unavailable(struct scan_req *r)
{
    metric_inc(r->ss->scans, "unavailable", "none");
    http_add_header(r->req, "Retry-After", "5");
    if (r->html) {
        struct page_view v = {
            .state = "unavailable", .tag_id = r->tag, .request_id = http_req_id(r->req)};
        size_t len = 0;
        char *html = page_render(&v, &len);
        http_reply(r->req, 503, "text/html; charset=utf-8", html, len);
        free(html);
    } else {
        http_reply_problem(r->req, 503, "urn:tagproof:problem:unavailable",
                           "Verification temporarily unavailable",
                           "Neither the cache nor the database can answer right now; the tag's "
                           "status is not known. Try again shortly.",
                           json_pack("{s:s}", "tag_id", r->tag));
    }
    scan_req_free(r);
}

/* A string member of the tag's data, for the consumer page (which escapes it for HTML). */
static const char *info_str(json_t *doc, const char *obj, const char *field)
{
    json_t *o = doc != NULL ? json_object_get(doc, obj) : NULL;
    return o != NULL ? json_string_value(json_object_get(o, field)) : NULL;
}

/* Takes len bytes of the tag's data (JSON text) as r's; -1 when it is not one JSON object. */
static int info_take(struct scan_req *r, char *text, size_t len)
{
    free(r->info);
    r->info = text;
    r->info_len = len;
    if (text != NULL && answer_info_parse(text, len, &r->info_parts) == 0)
        return 0;
    free(r->info);
    r->info = NULL;
    r->info_len = 0;
    memset(&r->info_parts, 0, sizeof(r->info_parts));
    return -1;
}

static void reply_page(struct scan_req *r, const struct rules_result *res, const char *first_at)
{
    const char *names[RULES_REASON_COUNT];
    size_t n = 0;
    unsigned it = res->reasons, bit;
    json_t *doc = r->info != NULL ? json_loadb(r->info, r->info_len, 0, NULL) : NULL;
    while ((bit = rules_reason_next(&it)) != 0 && n < RULES_REASON_COUNT)
        names[n++] = rules_reason_name(bit);
    struct page_view v = {
        .state = rules_verdict_name(res->verdict),
        .tag_id = r->tag,
        .product_name = info_str(doc, "product", "name"),
        .product_sku = info_str(doc, "product", "sku"),
        .batch_code = info_str(doc, "batch", "code"),
        .factory_name = info_str(doc, "factory", "name"),
        .first_scan = r->first_scan,
        .first_scanned_at = first_at[0] != '\0' ? first_at : NULL,
        .scan_count = r->scan_count,
        .reasons = names,
        .reason_count = n,
        .anchor_status = r->anchor.anchored ? "anchored" : "pending",
        .anchor_leaf_index = r->anchor.leaf_index,
        .anchor_checkpoint_size = r->anchor.checkpoint_size,
        .anchor_ledger_tx = r->anchor.anchored ? r->anchor.ledger_tx : NULL,
        .request_id = http_req_id(r->req),
    };
    size_t len = 0;
    char *html = page_render(&v, &len);
    http_reply(r->req, 200, "text/html; charset=utf-8", html, len);
    free(html);
    json_decref(doc);
}

/*
 * The verdict JSON, written into one buffer with the tag's data spliced in as it came (see
 * scan/answer.c), and handed to evhttp with one copy.
 */
static void reply_found(struct scan_req *r, const struct rules_result *res)
{
    const char *names[RULES_REASON_COUNT];
    size_t nreasons = 0;
    unsigned it = res->reasons, bit;
    char first_at[32] = "";
    char small[2048], *buf = small;

    if (r->first_ms > 0)
        answer_time(r->first_ms, first_at);
    if (r->html) {
        reply_page(r, res, first_at);
        return;
    }
    while ((bit = rules_reason_next(&it)) != 0 && nreasons < RULES_REASON_COUNT)
        names[nreasons++] = rules_reason_name(bit);
    struct answer_fields f = {
        .tag_id = r->tag,
        .verdict = rules_verdict_name(res->verdict),
        .info = &r->info_parts,
        .first_scan = r->first_scan,
        .first_ms = r->first_ms,
        .scan_count = r->scan_count,
        .score = res->score,
        .reasons = names,
        .nreasons = nreasons,
        .degraded = res->degraded,
        .anchor = &r->anchor,
        .source = r->source == SOURCE_CACHE ? "cache" : "database",
    };
    size_t n = answer_verdict(&f, buf, sizeof(small));
    if (n > sizeof(small)) {
        /* Unusually long names: a buffer of the size needed. */
        if ((buf = malloc(n)) == NULL) {
            http_reply_problem(r->req, 500, NULL, NULL, "out of memory", NULL);
            return;
        }
        answer_verdict(&f, buf, n);
    }
    http_reply(r->req, 200, "application/json", buf, n);
    if (buf != small)
        free(buf);
}

static void reply_unknown(struct scan_req *r, const struct rules_result *res)
{
    if (r->html) {
        struct page_view v = {
            .state = "unknown", .tag_id = r->tag, .request_id = http_req_id(r->req)};
        size_t len = 0;
        char *html = page_render(&v, &len);
        http_reply(r->req, 404, "text/html; charset=utf-8", html, len);
        free(html);
        return;
    }
    json_t *ext = json_pack("{s:s, s:s}", "verdict", "unknown", "tag_id", r->tag);
    if (res->degraded)
        json_object_set_new(ext, "degraded", json_true());
    http_reply_problem(r->req, 404, "urn:tagproof:problem:unknown-tag", "Tag not registered",
                       "This tag id is well formed but no factory registered it.", ext);
}

/* --- the scan event ------------------------------------------------------------------ */

struct event_send {
    struct scan_worker *sw;
    int replay;
    struct scan_event ev;
};

static void backlog_push(struct scan_worker *sw, const struct scan_event *ev)
{
    if (sw->backlog == NULL)
        return;
    if (sw->count == SCAN_BACKLOG_MAX) {
        /* Full: the oldest event gives way, so the newest picture of scanning survives. */
        sw->head = (sw->head + 1) % SCAN_BACKLOG_MAX;
        sw->count--;
        metric_inc(sw->ss->events, "dropped");
    }
    sw->backlog[(sw->head + sw->count) % SCAN_BACKLOG_MAX] = *ev;
    sw->count++;
}

static void on_event_sent(void *arg, enum redis_status st, const redisReply *reply)
{
    struct event_send *send = arg;
    struct scan_worker *sw = send->sw;
    (void)reply;
    if (send->replay)
        sw->in_flight--;
    if (st == REDIS_STATUS_OK) {
        metric_inc(sw->ss->events, send->replay ? "replayed" : "sent");
    } else {
        metric_inc(sw->ss->events, "deferred");
        backlog_push(sw, &send->ev);
    }
    free(send);
}

/* Sends ev to the stream; 0, or -1 when it could not even be issued (caller keeps it). */
static int event_send(struct scan_worker *sw, const struct scan_event *ev, int replay)
{
    struct events_xadd a;
    const char *why = NULL;
    struct event_send *send = NULL;

    if (sw->w->redis == NULL || (send = malloc(sizeof(*send))) == NULL)
        return -1;
    send->sw = sw;
    send->replay = replay;
    send->ev = *ev;
    /* The argument vector points into the copy, which lives until the callback. */
    if (events_xadd(&send->ev, NULL, &a, &why) != 0) {
        log_error("scan event refused by its own builder: %s", why);
        metric_inc(sw->ss->events, "dropped");
        free(send);
        return 0;
    }
    if (redis_command(sw->w->redis, 0, on_event_sent, send, a.argc, a.argv, a.argvlen) != 0) {
        free(send);
        return -1;
    }
    if (replay)
        sw->in_flight++;
    return 0;
}

/* Every SCAN_BACKLOG_FLUSH_MS: replay waiting events once Redis takes commands again. */
static void backlog_flush(evutil_socket_t fd, short what, void *arg)
{
    struct scan_worker *sw = arg;
    (void)fd;
    (void)what;
    char idx[16];
    snprintf(idx, sizeof(idx), "%u", sw->w->idx);
    metric_set(sw->ss->backlog, (double)sw->count, idx);
    if (sw->count == 0 || sw->in_flight > 0 || sw->w->redis == NULL ||
        !redis_connected(sw->w->redis) ||
        breaker_state(service_breaker(sw->ss->svc, SERVICE_REDIS)) == BREAKER_OPEN)
        return;
    for (int i = 0; i < SCAN_BACKLOG_BATCH && sw->count > 0; i++) {
        struct scan_event ev = sw->backlog[sw->head];
        sw->head = (sw->head + 1) % SCAN_BACKLOG_MAX;
        sw->count--;
        if (event_send(sw, &ev, 1) != 0) {
            backlog_push(sw, &ev);
            break;
        }
    }
}

static void emit_event(struct scan_req *r, const struct rules_result *res)
{
    struct scan_worker *sw = r->w->program;
    struct scan_event ev;

    memset(&ev, 0, sizeof(ev));
    memcpy(ev.tag_id, r->tag, sizeof(ev.tag_id));
    ev.ts_ms = wall_ms();
    ev.verdict = rules_verdict_name(res->verdict);
    ev.score = res->score;
    unsigned it = res->reasons, bit;
    while ((bit = rules_reason_next(&it)) != 0) {
        if (ev.reasons[0] != '\0')
            strcat(ev.reasons, ",");
        strcat(ev.reasons, rules_reason_name(bit));
    }
    memcpy(ev.ip_hash, r->ip_hash, sizeof(ev.ip_hash));
    events_set_user_agent(&ev, r->user_agent, r->user_agent != NULL ? strlen(r->user_agent) : 0);
    ev.has_location = r->has_loc;
    ev.lat = r->lat;
    ev.lon = r->lon;
    ev.source = r->source == SOURCE_CACHE ? "cache" : "database";
    if (r->found) {
        memcpy(ev.factory_id, r->factory_id, sizeof(ev.factory_id));
        memcpy(ev.batch_id, r->batch_id, sizeof(ev.batch_id));
    }
    ev.first_scan = r->first_scan;
    ev.first_pending = r->first_pending;
    ev.first_ms = r->first_ms;

    /* Redis already failed this request: keep the event for later instead of waiting again. */
    if (r->redis_unusable || event_send(sw, &ev, 0) != 0) {
        metric_inc(r->ss->events, "deferred");
        backlog_push(sw, &ev);
    }
}

/* --- finish: rules, answer, event ------------------------------------------------------ */

static void finish(struct scan_req *r)
{
    struct rules_result res;
    r->in.now_ms = wall_ms();
    r->in.tag_found = r->found;
    r->in.batch_revoked = r->revoked;
    r->in.user_agent = r->user_agent;
    r->in.has_location = r->has_loc;
    r->in.lat = r->lat;
    r->in.lon = r->lon;
    rules_evaluate(&r->ss->rules, &r->in, &res);

    unsigned it = res.reasons, bit;
    while ((bit = rules_reason_next(&it)) != 0)
        metric_inc(r->ss->flags, rules_reason_name(bit));
    if (res.degraded)
        metric_inc(r->ss->degraded);
    metric_inc(r->ss->scans, rules_verdict_name(res.verdict),
               r->source == SOURCE_CACHE ? "cache" : "database");

    if (r->found)
        reply_found(r, &res);
    else
        reply_unknown(r, &res);
    /* The answer is out; the event follows on the same loop and never delays it. */
    emit_event(r, &res);
    scan_req_free(r);
}

/* --- unknown tags: the client's enumeration count ------------------------------------- */

static void on_unknown_counted(void *arg, enum redis_status st, const redisReply *reply)
{
    struct scan_req *r = arg;
    store_record(r, SERVICE_REDIS, redis_outcome(st));
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_INTEGER) {
        r->in.state_available = true;
        r->in.client_unknown_in_window = (uint64_t)reply->integer;
    } else {
        r->redis_unusable = 1;
    }
    finish(r);
}

static void count_unknown(struct scan_req *r)
{
    struct tagcache_args a;
    if (r->redis_unusable || !store_allow(r, SERVICE_REDIS)) {
        r->redis_unusable = 1;
        finish(r);
        return;
    }
    int argc = tagcache_unknown_args(&a, &r->ss->script_consts, r->client, wall_ms());
    if (redis_command(r->w->redis, 0, on_unknown_counted, r, argc, a.argv, a.argvlen) != 0) {
        store_record(r, SERVICE_REDIS, BREAKER_FAILURE);
        r->redis_unusable = 1;
        finish(r);
    }
}

/* --- rule state from a lookup-script reply --------------------------------------------- */

static void take_state(struct scan_req *r, const struct tagcache_hit *h)
{
    r->in.state_available = true;
    r->in.repeat = h->repeat;
    r->in.scans_in_window = (uint64_t)h->velocity;
    r->in.distinct_clients = (uint64_t)h->clients;
    r->in.client_unknown_in_window = (uint64_t)h->client_unknown;
    r->in.has_prev_location = h->has_prev;
    r->in.prev_lat = h->prev_lat;
    r->in.prev_lon = h->prev_lon;
    r->in.prev_ms = h->prev_ms;
    r->scan_count = h->scan_count;
}

/* --- record_first: a first scan decided in Redis, made durable ------------------------- */

static void on_first_recorded(void *arg, const struct pg_result_info *res)
{
    struct scan_req *r = arg;
    store_record(r, SERVICE_PG, pg_outcome(res->status));
    if (res->status != PG_OK) {
        r->first_pending = 1;
    } else if (PQntuples(res->res) == 1 && PQgetvalue(res->res, 0, 1)[0] == 'f') {
        /*
         * PostgreSQL already had a first scan (made through the database while Redis was
         * away): that one stands. The cache learns its time; this scan is not the first.
         */
        r->first_scan = 0;
        r->first_ms = strtoll(PQgetvalue(res->res, 0, 0), NULL, 10);
        char key[64], ms[24];
        tagcache_tag_key(key, sizeof(key), r->tag);
        snprintf(ms, sizeof(ms), "%lld", (long long)r->first_ms);
        if (r->w->redis != NULL)
            redis_commandf(r->w->redis, 0, ignore_reply, NULL, "HSET %s f %s", key, ms);
    }
    metric_inc(r->ss->first_writes, r->first_pending ? "deferred" : "ok");
    finish(r);
}

static void record_first(struct scan_req *r)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)r->first_ms);
    const char *params[2] = {r->tag, ms};
    if (!store_allow(r, SERVICE_PG)) {
        r->first_pending = 1;
        metric_inc(r->ss->first_writes, "deferred");
        finish(r);
        return;
    }
    if (pg_query_prepared(r->w->pg, 0, on_first_recorded, r, "scan_first", 2, params) != 0) {
        store_record(r, SERVICE_PG, BREAKER_FAILURE);
        r->first_pending = 1;
        metric_inc(r->ss->first_writes, "deferred");
        finish(r);
    }
}

/* --- fill_cache: after the database answered ------------------------------------------- */

static void on_filled(void *arg, enum redis_status st, const redisReply *reply)
{
    struct scan_req *r = arg;
    struct tagcache_hit h;
    store_record(r, SERVICE_REDIS, redis_outcome(st));
    if (st == REDIS_STATUS_OK && tagcache_parse_lookup(reply, &h) == 0 && h.found)
        take_state(r, &h);
    else
        r->redis_unusable = 1;
    finish(r);
}

static void fill_cache(struct scan_req *r)
{
    struct tagcache_fill f;
    struct tagcache_args a;
    char ttl[16], rv_key[64];

    if (r->redis_unusable || r->info == NULL || !store_allow(r, SERVICE_REDIS)) {
        r->redis_unusable = 1;
        finish(r);
        return;
    }
    /* The first-scan time goes in with HSETNX: one the cache already holds wins. */
    int argc = tagcache_fill_args(&f, r->tag, r->info, r->batch_id, 0, r->leaf_index);
    snprintf(ttl, sizeof(ttl), "%d", r->ss->cfg->cache_ttl_s);
    tagcache_revoked_key(rv_key, sizeof(rv_key), r->batch_id);
    /* One round trip: the writes and the lookup script leave together (pipelining). */
    redis_command(r->w->redis, 0, ignore_reply, NULL, argc, f.argv, f.argvlen);
    if (r->first_ms > 0) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%lld", (long long)r->first_ms);
        redis_commandf(r->w->redis, 0, ignore_reply, NULL, "HSETNX %s f %s", f.key, ms);
    }
    redis_commandf(r->w->redis, 0, ignore_reply, NULL, "EXPIRE %s %s", f.key, ttl);
    if (r->revoked)
        redis_commandf(r->w->redis, 0, ignore_reply, NULL, "SET %s 1", rv_key);
    argc = tagcache_lookup_args(&a, &r->ss->script_consts, r->tag, r->client, r->has_loc, r->lat,
                                r->lon, wall_ms());
    if (redis_command(r->w->redis, 0, on_filled, r, argc, a.argv, a.argvlen) != 0) {
        store_record(r, SERVICE_REDIS, BREAKER_FAILURE);
        r->redis_unusable = 1;
        finish(r);
    }
}

/* --- lookup_db: PostgreSQL -------------------------------------------------------------- */

static void after_db(struct scan_req *r);

static void on_db_first(void *arg, const struct pg_result_info *res)
{
    struct scan_req *r = arg;
    store_record(r, SERVICE_PG, pg_outcome(res->status));
    if (res->status == PG_OK && PQntuples(res->res) == 1) {
        /* Stored time either way; first only for the scan that set it. */
        r->first_scan = PQgetvalue(res->res, 0, 1)[0] == 't';
        r->first_ms = strtoll(PQgetvalue(res->res, 0, 0), NULL, 10);
    } else if (res->status == PG_OK) {
        /* The tag vanished between the lookup and now (it cannot be deleted today). */
        r->first_ms = wall_ms();
    } else {
        r->first_scan = 1;
        r->first_pending = 1;
        r->first_ms = wall_ms();
    }
    metric_inc(r->ss->first_writes, r->first_pending ? "deferred" : "ok");
    after_db(r);
}

/* The columns of sql_lookup. */
enum {
    COL_TAG,
    COL_FIRST_MS,
    COL_BATCH_ID,
    COL_BATCH_CODE,
    COL_REVOKED,
    COL_PRODUCT_ID,
    COL_SKU,
    COL_NAME,
    COL_FACTORY_ID,
    COL_FACTORY_NAME,
    COL_LEAF_INDEX,
    COL_ANCHOR_SIZE,
    COL_ANCHOR_REF,
};

/* What the database said about r's tag: row of res, or -1 when it is not registered. */
static void on_db_row(struct scan_req *r, const PGresult *res, int row)
{
    r->source = SOURCE_DATABASE;
    if (row < 0) {
        count_unknown(r);
        return;
    }
    r->found = 1;
    size_t len = 0;
    char *text = answer_info_build(
        PQgetvalue(res, row, COL_PRODUCT_ID), PQgetvalue(res, row, COL_SKU),
        PQgetvalue(res, row, COL_NAME), PQgetvalue(res, row, COL_BATCH_ID),
        PQgetvalue(res, row, COL_BATCH_CODE), PQgetvalue(res, row, COL_FACTORY_ID),
        PQgetvalue(res, row, COL_FACTORY_NAME), &len);
    info_take(r, text, len); /* r->info stays NULL when out of memory */
    snprintf(r->batch_id, sizeof(r->batch_id), "%s", PQgetvalue(res, row, COL_BATCH_ID));
    snprintf(r->factory_id, sizeof(r->factory_id), "%s", PQgetvalue(res, row, COL_FACTORY_ID));
    r->revoked = PQgetvalue(res, row, COL_REVOKED)[0] == 't';
    r->leaf_index = PQgetisnull(res, row, COL_LEAF_INDEX)
                        ? -1
                        : strtoll(PQgetvalue(res, row, COL_LEAF_INDEX), NULL, 10);
    answer_anchor_set(&r->anchor, r->leaf_index,
                      PQgetisnull(res, row, COL_ANCHOR_SIZE)
                          ? 0
                          : strtoll(PQgetvalue(res, row, COL_ANCHOR_SIZE), NULL, 10),
                      PQgetvalue(res, row, COL_ANCHOR_REF),
                      (size_t)PQgetlength(res, row, COL_ANCHOR_REF));
    if (PQgetisnull(res, row, COL_FIRST_MS)) {
        const char *params[2] = {r->tag, NULL};
        if (store_allow(r, SERVICE_PG)) {
            if (pg_query_prepared(r->w->pg, 0, on_db_first, r, "scan_first", 2, params) == 0)
                return;
            store_record(r, SERVICE_PG, BREAKER_FAILURE);
        }
        r->first_scan = 1;
        r->first_pending = 1;
        r->first_ms = wall_ms();
    } else {
        r->first_ms = strtoll(PQgetvalue(res, row, COL_FIRST_MS), NULL, 10);
    }
    after_db(r);
}

static void after_db(struct scan_req *r)
{
    fill_cache(r);
}

/*
 * Database lookups are coalesced per worker: a scan that needs PostgreSQL joins the worker's
 * queue, and the queue leaves as one statement (tag_id = ANY($1), at most SCAN_DB_BATCH
 * tags) once fewer than SCAN_DB_IN_FLIGHT of the worker's lookups are under way. Under load
 * one statement and one round trip then answer many scans — each still from the database as
 * it stands when the statement runs — instead of one each; alone, a scan waits for nothing
 * but the end of the current loop turn. The statement is one call to the breaker; its
 * outcome is every scan's.
 */
#define SCAN_DB_BATCH 64
#define SCAN_DB_IN_FLIGHT 2

struct db_lookup {
    struct scan_worker *sw;
    struct scan_req *reqs[SCAN_DB_BATCH];
    int n;
    uint64_t gen;
    int64_t started;
};

static void db_fail(struct scan_req *r, enum pg_status st)
{
    log_emit(LOG_WARN, http_req_id(r->req), "scan lookup failed",
             json_pack("{s:s, s:s}", "store", "postgresql", "error", pg_status_str(st)));
    reply_unavailable(r);
}

/* The row of res for tag (rows are few: a linear search), or -1. */
static int db_row_of(const PGresult *res, const char *tag)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++)
        if (strcmp(PQgetvalue(res, i, COL_TAG), tag) == 0)
            return i;
    return -1;
}

static void on_db_lookups(void *arg, const struct pg_result_info *res)
{
    struct db_lookup *l = arg;
    struct scan_worker *sw = l->sw;
    enum breaker_outcome o = pg_outcome(res->status);

    sw->db_in_flight--;
    breaker_record(service_breaker(sw->ss->svc, SERVICE_PG), l->gen, o, mono_ms() - l->started);
    /* More may leave now; from the loop, after these scans have gone on. */
    if (sw->db_head != NULL)
        event_active(sw->db_ev, EV_TIMEOUT, 0);
    for (int i = 0; i < l->n; i++) {
        struct scan_req *r = l->reqs[i];
        if (res->status != PG_OK)
            db_fail(r, res->status);
        else
            on_db_row(r, res->res, db_row_of(res->res, r->tag));
    }
    free(l);
}

/* Sends the scans waiting for the database, as many statements as may be under way. */
static void db_dispatch(evutil_socket_t fd, short what, void *arg)
{
    struct scan_worker *sw = arg;
    struct breaker *b = service_breaker(sw->ss->svc, SERVICE_PG);
    char tags[SCAN_DB_BATCH * (UUID_STR_LEN + 1) + 3];
    (void)fd;
    (void)what;

    while (sw->db_head != NULL && sw->db_in_flight < SCAN_DB_IN_FLIGHT) {
        struct db_lookup *l = malloc(sizeof(*l));
        if (l == NULL)
            break; /* the requests wait for the next lookup's answer */
        l->sw = sw;
        l->n = 0;
        /* The array literal {uuid,uuid,...}: ids are canonical, nothing to quote. */
        size_t len = 0;
        tags[len++] = '{';
        while (sw->db_head != NULL && l->n < SCAN_DB_BATCH) {
            struct scan_req *r = sw->db_head;
            sw->db_head = r->db_next;
            r->db_next = NULL;
            if (l->n > 0)
                tags[len++] = ',';
            memcpy(tags + len, r->tag, UUID_STR_LEN);
            len += UUID_STR_LEN;
            l->reqs[l->n++] = r;
        }
        if (sw->db_head == NULL)
            sw->db_tail = NULL;
        tags[len++] = '}';
        tags[len] = '\0';

        const char *params[1] = {tags};
        int sent = sw->w->pg != NULL && breaker_allow(b, &l->gen);
        if (sent) {
            l->started = mono_ms();
            if (pg_query_prepared(sw->w->pg, 0, on_db_lookups, l, "scan_lookup", 1, params) == 0) {
                sw->db_in_flight++;
                continue;
            }
            breaker_record(b, l->gen, BREAKER_FAILURE, 0);
        }
        /* The breaker is open or the statement could not be sent: the answer is not known. */
        for (int i = 0; i < l->n; i++)
            reply_unavailable(l->reqs[i]);
        free(l);
    }
}

static void lookup_db(struct scan_req *r)
{
    struct scan_worker *sw = r->w->program;
    r->db_next = NULL;
    if (sw->db_tail != NULL)
        sw->db_tail->db_next = r;
    else
        sw->db_head = r;
    sw->db_tail = r;
    if (sw->db_in_flight < SCAN_DB_IN_FLIGHT)
        event_active(sw->db_ev, EV_TIMEOUT, 0);
}

/* --- lookup_cache: one Lua script in Redis ----------------------------------------------- */

static void lookup_cache(struct scan_req *r);

static void on_cache(void *arg, enum redis_status st, const redisReply *reply)
{
    struct scan_req *r = arg;
    struct tagcache_hit h;
    store_record(r, SERVICE_REDIS, redis_outcome(st));

    if (st == REDIS_STATUS_ERROR_REPLY && !r->noscript_retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* First use on this server (or after a restart): load the scripts and retry. */
        r->noscript_retried = 1;
        redis_commandf(r->w->redis, 0, ignore_reply, NULL, "SCRIPT LOAD %s",
                       tagcache_unknown_script());
        redis_commandf(r->w->redis, 0, ignore_reply, NULL, "SCRIPT LOAD %s",
                       tagcache_lookup_script());
        lookup_cache(r);
        return;
    }
    if (st != REDIS_STATUS_OK || tagcache_parse_lookup(reply, &h) != 0) {
        metric_inc(r->ss->cache, "error");
        r->redis_unusable = 1;
        lookup_db(r);
        return;
    }
    if (!h.found) {
        metric_inc(r->ss->cache, "miss");
        lookup_db(r);
        return;
    }
    metric_inc(r->ss->cache, "hit");
    /* The reply goes away with this callback; the answer may be sent later. */
    char *text = malloc(h.info_len + 1);
    if (text != NULL) {
        memcpy(text, h.info, h.info_len);
        text[h.info_len] = '\0';
    }
    if (info_take(r, text, h.info_len) != 0 || strlen(h.batch_id) != UUID_STR_LEN) {
        /* A damaged cache entry is treated as a miss; the database refills it. */
        info_take(r, NULL, 0);
        lookup_db(r);
        return;
    }
    r->source = SOURCE_CACHE;
    r->found = 1;
    snprintf(r->batch_id, sizeof(r->batch_id), "%s", h.batch_id);
    memcpy(r->factory_id, r->info_parts.factory_id, sizeof(r->factory_id));
    r->first_ms = h.first_ms;
    r->first_scan = h.first_scan;
    r->revoked = h.revoked;
    answer_anchor_set(&r->anchor, h.leaf_index, h.anchor_size, h.anchor_ref, h.anchor_ref_len);
    take_state(r, &h);
    if (r->first_scan)
        record_first(r);
    else
        finish(r);
}

static void lookup_cache(struct scan_req *r)
{
    struct tagcache_args a;
    if (!store_allow(r, SERVICE_REDIS)) {
        r->redis_unusable = 1;
        lookup_db(r);
        return;
    }
    int argc = tagcache_lookup_args(&a, &r->ss->script_consts, r->tag, r->client, r->has_loc,
                                    r->lat, r->lon, wall_ms());
    if (redis_command(r->w->redis, 0, on_cache, r, argc, a.argv, a.argvlen) != 0) {
        store_record(r, SERVICE_REDIS, BREAKER_FAILURE);
        r->redis_unusable = 1;
        lookup_db(r);
    }
}

/* --- scan_start: accept and parse --------------------------------------------------------- */

/* A decimal degree: optional sign, digits, optional fraction; nothing else. */
static int parse_degree(const char *s, double min, double max, double *out)
{
    char *end = NULL;
    size_t n = strlen(s);
    if (n == 0 || n > 24 || strspn(s, "+-0123456789.") != n)
        return -1;
    errno = 0;
    *out = strtod(s, &end);
    return errno == 0 && *end == '\0' && isfinite(*out) && *out >= min && *out <= max ? 0 : -1;
}

/* The client's address, behind trusted reverse proxies too (shared/proxies.c). */
static void client_ip(struct scan_req *r, char *out, size_t len)
{
    proxies_client_ip(r->ss->proxies, http_req_peer(r->req),
                      http_req_header(r->req, "X-Forwarded-For"), out, len);
}

static int sane_device_id(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || strchr("-_.:", s[i]) != NULL))
            return 0;
    return 1;
}

static void scan_start(struct http_req *req, struct scan_service *ss, int html)
{
    struct scan_req *r = NULL;
    const char *raw = http_req_param(req, 0);
    char ip[64];

    if ((r = calloc(1, sizeof(*r))) == NULL) {
        http_reply_problem(req, 500, NULL, NULL, "out of memory", NULL);
        return;
    }
    r->req = req;
    r->ss = ss;
    r->w = service_worker(req);
    r->html = html;
    r->leaf_index = -1;

    if (raw == NULL || uuid_canonical(raw, strlen(raw), r->tag) != 0) {
        metric_inc(ss->scans, "invalid", "none");
        if (html) {
            struct page_view v = {.state = "unknown", .request_id = http_req_id(req)};
            size_t len = 0;
            char *page = page_render(&v, &len);
            http_reply(req, 400, "text/html; charset=utf-8", page, len);
            free(page);
        } else {
            http_reply_problem(req, 400, "urn:tagproof:problem:invalid-tag-id", "Invalid tag id",
                               "A tag id is a UUID in canonical 8-4-4-4-12 hexadecimal form.",
                               NULL);
        }
        free(r);
        return;
    }

    const char *lat = http_req_query(req, "lat"), *lon = http_req_query(req, "lon");
    if ((lat != NULL) != (lon != NULL) ||
        (lat != NULL && (parse_degree(lat, -90, 90, &r->lat) != 0 ||
                         parse_degree(lon, -180, 180, &r->lon) != 0))) {
        http_reply_problem(req, 400, "urn:tagproof:problem:invalid-location", "Invalid location",
                           "lat and lon come together, in decimal degrees within ±90 and ±180.",
                           NULL);
        free(r);
        return;
    }
    r->has_loc = lat != NULL;

    const char *ua = http_req_header(req, "User-Agent");
    r->user_agent = strndup(ua != NULL ? ua : "", 512);
    client_ip(r, ip, sizeof(ip));
    struct scan_worker *sw = r->w->program;
    hmac_hex(sw, ip, r->ip_hash);
    const char *device = http_req_header(req, "X-Device-Id");
    if (sane_device_id(device)) {
        char h[65];
        char keyed[160];
        snprintf(keyed, sizeof(keyed), "device:%s", device);
        hmac_hex(sw, keyed, h);
        snprintf(r->client, sizeof(r->client), "d%.32s", h);
    } else {
        snprintf(r->client, sizeof(r->client), "i%.32s", r->ip_hash);
    }
    lookup_cache(r);
}

static void handle_scan(struct http_req *req, void *arg)
{
    scan_start(req, arg, 0);
}

static void handle_page(struct http_req *req, void *arg)
{
    scan_start(req, arg, 1);
}

/* --- setup ---------------------------------------------------------------------------------- */

/*
 * The tags of one coalesced lookup (lookup_db), $1 an array of ids; a row per registered one,
 * with the leaf index of the tag's registration (its first log entry of kind tag; NULL until
 * appended) and the newest confirmed anchor (NULLs when none).
 */
static const char sql_lookup[] =
    "SELECT t.tag_id, (extract(epoch FROM t.first_scanned_at) * 1000)::bigint, b.id, b.code,"
    " b.revoked_at IS NOT NULL, p.id, p.sku, p.name, f.id, f.name,"
    " (SELECT e.leaf_index FROM log_entries e WHERE e.tag_id = t.tag_id AND e.kind = 'tag'"
    "  ORDER BY e.id LIMIT 1), a.checkpoint_size, a.ledger_ref"
    " FROM tags t JOIN batches b ON b.id = t.batch_id JOIN products p ON p.id = t.product_id"
    " JOIN factories f ON f.id = t.factory_id LEFT JOIN " SCANCACHE_NEWEST_ANCHOR_SQL
    " a ON true WHERE t.tag_id = ANY($1::uuid[])";
/*
 * Records a first scan and answers with what is stored: the time (the given one, $2 ms, or
 * the server's clock when $2 is NULL) and whether this call set it. The row lock makes
 * concurrent first scans wait for each other, so exactly one sees was_null = true and all
 * see the same time.
 */
static const char sql_first[] =
    "WITH old AS (SELECT first_scanned_at FROM tags WHERE tag_id = $1 FOR UPDATE)"
    " UPDATE tags t SET first_scanned_at = coalesce(old.first_scanned_at,"
    "   to_timestamp($2::bigint / 1000.0), date_trunc('milliseconds', now()))"
    " FROM old WHERE t.tag_id = $1"
    " RETURNING (extract(epoch FROM t.first_scanned_at) * 1000)::bigint,"
    "   old.first_scanned_at IS NULL";

static void log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    log_flush();
}

/*
 * Runs inside log_emit() on this worker's thread: the flush event runs after the callbacks
 * already due in this loop turn, so their lines (access lines included) leave in one write.
 */
static void log_wake(void *arg)
{
    struct scan_worker *sw = arg;
    event_active(sw->log_flush, EV_TIMEOUT, 0);
}

static EVP_MAC_CTX *mac_new(const struct scan_service *ss)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (ctx != NULL && EVP_MAC_init(ctx, ss->salt, ss->salt_len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/* Runs on the worker's thread, before it serves. */
void *scan_worker_new(struct scan_service *ss, struct service_worker *w)
{
    struct scan_worker *sw = calloc(1, sizeof(*sw));
    struct timeval every = {0, SCAN_BACKLOG_FLUSH_MS * 1000};
    if (sw == NULL)
        return NULL;
    sw->ss = ss;
    sw->w = w;
    sw->backlog = calloc(SCAN_BACKLOG_MAX, sizeof(*sw->backlog));
    sw->flush = event_new(w->base, -1, EV_PERSIST, backlog_flush, sw);
    sw->log_flush = event_new(w->base, -1, 0, log_flush_cb, sw);
    sw->db_ev = event_new(w->base, -1, 0, db_dispatch, sw);
    sw->mac = mac_new(ss);
    if (sw->backlog == NULL || sw->flush == NULL || sw->log_flush == NULL || sw->db_ev == NULL ||
        sw->mac == NULL) {
        scan_worker_free(sw);
        return NULL;
    }
    event_add(sw->flush, &every);
    log_buffer_start(log_wake, sw);
    if (w->pg != NULL) {
        if (pg_pool_prepare(w->pg, "scan_lookup", sql_lookup, 1) != 0 ||
            pg_pool_prepare(w->pg, "scan_first", sql_first, 2) != 0)
            log_error("cannot register the scan path's prepared statements");
    }
    return sw;
}

/*
 * Events still waiting here when the worker stops are lost with the process; the log says how
 * many.
 */
void scan_worker_free(void *arg)
{
    struct scan_worker *sw = arg;
    if (sw == NULL)
        return;
    /* The store clients are gone (freed first): scans still waiting for one cannot be known. */
    for (struct scan_req *r; (r = sw->db_head) != NULL;) {
        sw->db_head = r->db_next;
        reply_unavailable(r);
    }
    if (sw->db_ev != NULL)
        event_free(sw->db_ev);
    if (sw->count > 0)
        log_warn("%zu scan events could not be added to the stream before shutdown", sw->count);
    if (sw->log_flush != NULL) {
        log_buffer_stop();
        event_free(sw->log_flush);
    }
    if (sw->flush != NULL)
        event_free(sw->flush);
    EVP_MAC_CTX_free(sw->mac);
    free(sw->backlog);
    free(sw);
}

/*
 * The salt of client-IP hashes: TAGPROOF_IP_HASH_SALT, else a random one kept in
 * TAGPROOF_DATA_DIR/ip-hash-salt (created 0600 on first start) so hashes stay comparable
 * across restarts.
 */
static int load_salt(struct scan_service *ss, char *err, size_t errlen)
{
    const struct config *cfg = ss->cfg;
    char path[1024], tmp[1100];
    if (cfg->ip_hash_salt != NULL) {
        ss->salt_len = strlen(cfg->ip_hash_salt);
        if (ss->salt_len < 16) {
            snprintf(err, errlen, "TAGPROOF_IP_HASH_SALT: must be at least 16 characters");
            return -1;
        }
        if (ss->salt_len > sizeof(ss->salt))
            ss->salt_len = sizeof(ss->salt);
        memcpy(ss->salt, cfg->ip_hash_salt, ss->salt_len);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/ip-hash-salt", cfg->data_dir);
    mkdir(cfg->data_dir, 0700);
    /*
     * A new salt is written whole to a private file and linked into place, so the salt file
     * is never seen half-written and two instances starting together end up with one salt.
     */
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, ss->salt, sizeof(ss->salt));
            close(fd);
            if (n < 16) {
                snprintf(err, errlen,
                         "TAGPROOF_DATA_DIR: %s holds %zd bytes, not a salt (at least 16); "
                         "restore it or remove it to start a new one",
                         path, n);
                return -1;
            }
            ss->salt_len = (size_t)n;
            return 0;
        }
        unsigned char fresh[32];
        if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
            snprintf(err, errlen, "cannot generate the IP hash salt");
            return -1;
        }
        snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int ok =
            fd >= 0 && write(fd, fresh, sizeof(fresh)) == (ssize_t)sizeof(fresh) && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
        int linked = ok && link(tmp, path) == 0;
        int saved = errno;
        unlink(tmp);
        if (!ok || (!linked && saved != EEXIST)) {
            snprintf(err, errlen, "TAGPROOF_DATA_DIR: cannot write %s: %s", path, strerror(saved));
            return -1;
        }
        /* Linked, or another instance won the race: read whichever salt is in place. */
    }
    snprintf(err, errlen, "TAGPROOF_DATA_DIR: %s could not be created or read", path);
    return -1;
}

static int load_proxies(struct scan_service *ss, char *err, size_t errlen)
{
    ss->proxies = proxies_new(ss->cfg->trusted_proxies, err, errlen);
    return ss->proxies != NULL ? 0 : -1;
}

struct scan_service *scan_service_new(struct service *svc, char *err, size_t errlen)
{
    struct scan_service *ss = calloc(1, sizeof(*ss));
    const char *why = NULL;
    if (ss == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ss->svc = svc;
    ss->cfg = service_config(svc);
    rules_config_default(&ss->rules);
    ss->rules.velocity_max = (unsigned)ss->cfg->rule_velocity_max;
    ss->rules.travel_max_kmh = ss->cfg->rule_travel_kmh;
    ss->rules.travel_min_km = ss->cfg->rule_travel_min_km;
    ss->rules.clone_max_clients = (unsigned)ss->cfg->rule_clone_max;
    ss->rules.enum_max_unknown = (unsigned)ss->cfg->rule_enum_max;
    ss->rules.dedup_window_s = (unsigned)ss->cfg->rule_dedup_s;
    if (rules_config_validate(&ss->rules, &why) != 0) {
        snprintf(err, errlen, "anti-fraud rules: %s", why);
        goto fail;
    }
    struct tagcache_windows windows = {
        .dedup_s = ss->rules.dedup_window_s,
        .velocity_s = ss->rules.velocity_window_s,
        .velocity_max = ss->rules.velocity_max,
        .clone_s = ss->rules.clone_window_s,
        .clone_max = ss->rules.clone_max_clients,
        .travel_s = ss->rules.travel_window_s,
        .enum_s = ss->rules.enum_window_s,
    };
    tagcache_consts_init(&ss->script_consts, &windows);
    if (load_salt(ss, err, errlen) != 0 || load_proxies(ss, err, errlen) != 0)
        goto fail;

    struct metrics *m = service_metrics(svc);
    ss->scans = metrics_counter(m, "tagproof_scans_total", "Scans answered, by verdict and source.",
                                "verdict,source");
    ss->cache = metrics_counter(m, "tagproof_cache_lookups_total",
                                "Tag lookups in the Redis cache, by result.", "result");
    ss->flags = metrics_counter(m, "tagproof_fraud_flags_total",
                                "Anti-fraud rules that fired, by rule.", "rule");
    ss->first_writes = metrics_counter(m, "tagproof_first_scan_writes_total",
                                       "First scans written to PostgreSQL: ok, or deferred to "
                                       "the event sink.",
                                       "result");
    ss->events = metrics_counter(m, "tagproof_scan_events_total",
                                 "Scan events: sent to the stream, deferred while Redis was "
                                 "unavailable, replayed later, or dropped.",
                                 "result");
    ss->backlog = metrics_gauge(m, "tagproof_scan_event_backlog",
                                "Scan events waiting for Redis, per worker.", "worker");
    ss->degraded = metrics_counter(
        m, "tagproof_scan_degraded_total",
        "Scans answered without the Redis rule state (stateful rules skipped).", NULL);

    struct httpd *h = service_httpd(svc);
    if (httpd_route(h, HTTP_GET, "/v1/scan/{}", "/v1/scan/{tag_id}", handle_scan, ss) != 0 ||
        httpd_route(h, HTTP_GET, "/t/{}", "/t/{tag_id}", handle_page, ss) != 0) {
        snprintf(err, errlen, "cannot register the scan routes");
        goto fail;
    }
    return ss;
fail:
    scan_service_free(ss);
    return NULL;
}

void scan_service_free(struct scan_service *ss)
{
    if (ss == NULL)
        return;
    proxies_free(ss->proxies);
    free(ss);
}
