/*
 * sink: the scan-event consumer. One state machine on one event loop does one thing at a
 * time — create the group, ensure partitions, read or claim a batch, store it in one
 * transaction, acknowledge it, trim the stream — so that an acknowledgement can never
 * overtake the COMMIT it depends on, and a blocked XREADGROUP never delays an XACK.
 */
#include "sink.h"

#include "events.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SINK_GROUP_DEFAULT "tagproof-sink"
#define SINK_BATCH_MAX 5000
#define SINK_ID_MAX 48    /* "18446744073709551615-18446744073709551615" and a NUL */
#define SINK_ITEMS_MAX 64 /* fields and values of one entry; more is malformed */
#define SINK_MONTHS_MAX 64
#define SINK_STORE_STMT "tagproof_sink_store"
#define SINK_STORE_NPARAMS 15

/*
 * One batch, one statement: the events arrive as parallel arrays (one text parameter each,
 * in PostgreSQL's array syntax), so the statement is the same for every batch size and is
 * prepared once. The INSERT skips event ids already stored (a redelivery); the UPDATE sets a
 * tag's first scan only while it is unset, to the earliest first scan of the batch (the time
 * the scan path announced, else the event's), so it happens once whoever delivers the event
 * and however often.
 */
static const char store_sql[] =
    "WITH ev AS ("
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::uuid[], $5::uuid[],"
    "  $6::text[], $7::smallint[], $8::text[], $9::text[], $10::text[], $11::float8[],"
    "  $12::float8[], $13::text[], $14::boolean[], $15::bigint[])"
    "  AS e(event_id, ts_ms, tag_id, factory_id, batch_id, verdict, score, reasons, ip_hash,"
    "   user_agent, lat, lon, source, first_scan, first_ms)"
    "), ins AS ("
    " INSERT INTO scan_events (event_id, scanned_at, tag_id, factory_id, batch_id, verdict,"
    "  score, reasons, ip_hash, user_agent, lat, lon, source)"
    " SELECT event_id, timestamptz 'epoch' + ts_ms * interval '1 millisecond', tag_id,"
    "  factory_id, batch_id, verdict, score, coalesce(string_to_array(reasons, ','), '{}'),"
    "  ip_hash, user_agent, lat, lon, source FROM ev"
    " ON CONFLICT DO NOTHING RETURNING 1"
    "), first AS ("
    " UPDATE tags t SET first_scanned_at = f.at"
    " FROM (SELECT tag_id,"
    "   min(timestamptz 'epoch' + coalesce(first_ms, ts_ms) * interval '1 millisecond') AS at"
    "  FROM ev WHERE first_scan GROUP BY tag_id) f"
    " WHERE t.tag_id = f.tag_id AND t.first_scanned_at IS NULL RETURNING 1"
    ")"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM first)";

static const char ensure_sql[] =
    "SELECT tagproof_ensure_scan_partition(d::date) FROM unnest($1::text[]) AS d";

enum entry_state { E_VALID, E_MALFORMED, E_REJECTED, E_DELETED };

struct sink_entry {
    char id[SINK_ID_MAX];
    enum entry_state state;
    struct scan_event ev;
};

enum batch_source { SRC_NEW, SRC_OWN, SRC_CLAIM };

/*
 * Every callback the sink is owed carries one of these instead of the sink itself, so that
 * sink_free() can disown the calls still in flight: their late callbacks find s == NULL.
 */
struct sink_call {
    struct sink *s;
    struct sink_call *prev, *next;
};

/* A stream entry id, ms-seq. */
struct sid {
    uint64_t ms, seq;
};

struct sink {
    struct event_base *base;
    struct redis_client *redis;
    struct pg_pool *pg;
    char *stream, *group, *consumer;
    int batch_max, linger_ms, block_ms, redis_timeout_ms, pg_timeout_ms;
    int claim_idle_ms, claim_interval_ms, trim_interval_ms, partition_interval_ms;
    int backoff_min_ms, backoff_max_ms, commit_delay_ms;
    int64_t max_age_ms, max_future_ms;

    struct {
        struct metric *events, *batches, *errors, *lag, *pending, *undelivered;
        struct metric *claimed, *trimmed, *first_scans, *store_seconds;
    } m;

    struct event *timer; /* waits, backoffs, and the done callback */
    struct sink_call *calls;
    bool started, stopping, stopped;
    sink_done_fn done;
    void *done_arg;

    bool group_ready;
    bool own_pending; /* read this consumer's own pending entries before new ones */
    int failures;     /* in a row, for the backoff */
    int64_t next_partitions_ms, next_claim_ms, next_trim_ms;
    bool claim_active; /* an XAUTOCLAIM scan is under way at claim_cursor */
    char claim_cursor[SINK_ID_MAX];

    /* The batch in hand. */
    struct sink_entry *entries;
    int n;
    enum batch_source src;
    bool singles;     /* storing one event per transaction to isolate one PostgreSQL refuses */
    bool range_retry; /* the range failed once with a data error and is being retried */
    int lo, hi;       /* the entries of the transaction in progress */
    /*
     * Events per transaction: batch_max, halved when a transaction times out (a slow server,
     * a locked row), doubled back after each commit. Kept across batches, so a sink that
     * times out does not keep trying the size that failed.
     */
    int chunk;
    struct pg_conn *conn;
    int64_t tx_started_ms;
    long tx_inserted, tx_first;
    bool ensure_for_batch;

    const char **ack_argv;
    size_t *ack_lens;

    /* The store statement's array parameters, rebuilt for every batch in buffers kept. */
    struct param_buf {
        char *buf;
        size_t len, cap;
    } params[SINK_STORE_NPARAMS];
    bool params_failed; /* out of memory while building them */

    int months[SINK_MONTHS_MAX]; /* months (year * 12 + month - 1) known to have partitions */
    int nmonths;
    int want[SINK_MONTHS_MAX]; /* months asked for by the ensure in flight */
    int nwant;

    /* The trim round in progress. */
    struct sid trim_min;
    char **trim_groups;
    int trim_ngroups, trim_next;

    struct sink_stats stats;
};

static void sink_step(struct sink *s);
static void batch_store(struct sink *s);
static void batch_ack(struct sink *s);

/* ---- time, ids, small helpers ---------------------------------------------------------- */

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

static int sid_parse(const char *str, size_t len, struct sid *out)
{
    char buf[SINK_ID_MAX], *dash, *end;
    if (str == NULL || len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, str, len);
    buf[len] = '\0';
    if ((dash = strchr(buf, '-')) == NULL || dash == buf || dash[1] == '\0')
        return -1;
    *dash = '\0';
    for (const char *p = buf; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return -1;
    for (const char *p = dash + 1; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return -1;
    out->ms = strtoull(buf, &end, 10);
    out->seq = strtoull(dash + 1, &end, 10);
    return 0;
}

static int sid_cmp(struct sid a, struct sid b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

static const char *reply_str(const redisReply *r, size_t *len)
{
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
        return NULL;
    if (len != NULL)
        *len = r->len;
    return r->str;
}

static bool reply_error_has(const redisReply *r, const char *what)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->str != NULL &&
           strstr(r->str, what) != NULL;
}

static char *sink_strdup(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* Logs at most the first few failures of a run, then one in twenty. */
static bool noisy(const struct sink *s)
{
    return s->failures < 3 || s->failures % 20 == 0;
}

static void sink_log(enum log_level lvl, const struct sink *s, const char *msg, json_t *fields)
{
    if (fields == NULL)
        fields = json_object();
    json_object_set_new(fields, "stream", json_string(s->stream));
    json_object_set_new(fields, "consumer", json_string(s->consumer));
    log_emit(lvl, NULL, msg, fields);
}

static void count_error(struct sink *s, const char *op)
{
    metric_inc(s->m.errors, op);
}

/* ---- calls in flight ------------------------------------------------------------------- */

static struct sink_call *call_new(struct sink *s)
{
    struct sink_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->s = s;
    c->next = s->calls;
    if (s->calls != NULL)
        s->calls->prev = c;
    s->calls = c;
    return c;
}

/* Ends a call: returns its sink, or NULL when the sink was freed meanwhile. */
static struct sink *call_end(struct sink_call *c)
{
    struct sink *s = c->s;
    if (s != NULL) {
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            s->calls = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
    }
    free(c);
    return s;
}

static int sink_redis(struct sink *s, int timeout_ms, redis_reply_fn fn, int argc,
                      const char **argv, const size_t *lens)
{
    struct sink_call *c = call_new(s);
    if (c == NULL)
        return -1;
    if (redis_command(s->redis, timeout_ms, fn, c, argc, argv, lens) != 0) {
        call_end(c);
        return -1;
    }
    return 0;
}

/* ---- waiting, stopping ----------------------------------------------------------------- */

static void sink_wait(struct sink *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sink *s = arg;
    (void)fd;
    (void)what;
    if (s->stopped) {
        sink_done_fn done = s->done;
        void *done_arg = s->done_arg;
        s->done = NULL;
        /* Last thing: done may free the sink. */
        if (done != NULL)
            done(done_arg);
        return;
    }
    sink_step(s);
}

/* After a failure: wait with exponential backoff (not when stopping), then carry on. */
static void sink_retry_later(struct sink *s)
{
    int ms = s->backoff_min_ms;
    for (int i = 1; i < s->failures && ms < s->backoff_max_ms; i++)
        ms *= 2;
    if (ms > s->backoff_max_ms)
        ms = s->backoff_max_ms;
    sink_wait(s, s->stopping ? 0 : ms);
}

static void sink_finish(struct sink *s)
{
    s->stopped = true;
    s->stats.running = false;
    sink_log(LOG_INFO, s, "scan-event sink stopped", NULL);
    sink_wait(s, 0);
}

/* ---- the batch ------------------------------------------------------------------------- */

static void batch_clear(struct sink *s)
{
    s->n = 0;
    s->singles = false;
    s->range_retry = false;
    s->lo = s->hi = 0;
}

static int batch_count(const struct sink *s, int lo, int hi, enum entry_state st)
{
    int n = 0;
    for (int i = lo; i < hi; i++)
        n += s->entries[i].state == st;
    return n;
}

/*
 * Takes the entries of an XREADGROUP or XAUTOCLAIM reply ([id, [field, value, ...]] each)
 * into the batch, parsing each. An entry whose fields are nil was deleted from the stream
 * while pending. Returns the number taken.
 */
static int batch_load(struct sink *s, const redisReply *entries, enum batch_source src)
{
    batch_clear(s);
    s->src = src;
    if (entries == NULL || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < entries->elements && s->n < s->batch_max; i++) {
        const redisReply *e = entries->element[i];
        const char *items[SINK_ITEMS_MAX];
        size_t lens[SINK_ITEMS_MAX];
        const char *why = NULL;
        size_t idlen;
        const char *id;
        struct sid sid;

        if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 2)
            continue;
        id = reply_str(e->element[0], &idlen);
        if (id == NULL || sid_parse(id, idlen, &sid) != 0)
            continue;
        struct sink_entry *en = &s->entries[s->n++];
        memcpy(en->id, id, idlen);
        en->id[idlen] = '\0';

        const redisReply *f = e->element[1];
        if (f == NULL || f->type == REDIS_REPLY_NIL) {
            en->state = E_DELETED;
            continue;
        }
        if (f->type != REDIS_REPLY_ARRAY) {
            why = "the entry's fields are not an array";
        } else if (f->elements > SINK_ITEMS_MAX) {
            why = "too many fields";
        } else {
            for (size_t k = 0; k < f->elements && why == NULL; k++) {
                items[k] = reply_str(f->element[k], &lens[k]);
                if (items[k] == NULL)
                    why = "a field or value is not a string";
            }
        }
        if (why == NULL && events_parse(items, lens, f->elements, &en->ev, &why) == 0) {
            en->state = E_VALID;
            continue;
        }
        en->state = E_MALFORMED;
        sink_log(LOG_WARN, s, "malformed scan event: acknowledged without storing",
                 json_pack("{s:s,s:s}", "event_id", en->id, "why", why));
    }
    return s->n;
}

/* Refuses events whose time lies outside the window (see sink_options.max_age_days). */
static void batch_check_window(struct sink *s)
{
    int64_t now = wall_ms();
    for (int i = 0; i < s->n; i++) {
        struct sink_entry *en = &s->entries[i];
        if (en->state != E_VALID)
            continue;
        if (en->ev.ts_ms >= now - s->max_age_ms && en->ev.ts_ms <= now + s->max_future_ms)
            continue;
        en->state = E_REJECTED;
        sink_log(LOG_ERROR, s, "scan event time outside the accepted window: not stored",
                 json_pack("{s:s,s:s,s:I,s:I}", "event_id", en->id, "tag_id", en->ev.tag_id,
                           "ts_ms", (json_int_t)en->ev.ts_ms, "now_ms", (json_int_t)now));
    }
}

/*
 * Moves lo..hi to the next transaction's entries, from the start of the batch or after the
 * last range: up to chunk valid events (one in singles mode). False when none is left.
 */
static bool batch_next_range(struct sink *s, bool first)
{
    int i = first ? 0 : s->hi, size = s->singles ? 1 : s->chunk, valid = 0;
    s->range_retry = false;
    while (i < s->n && s->entries[i].state != E_VALID)
        i++;
    if (i >= s->n)
        return false;
    s->lo = i;
    for (; i < s->n && valid < size; i++)
        valid += s->entries[i].state == E_VALID;
    s->hi = i;
    return true;
}

/* Stores the rest of the batch, then acknowledges all of it. */
static void batch_continue(struct sink *s, bool first)
{
    if (batch_next_range(s, first))
        batch_store(s);
    else
        batch_ack(s);
}

static void batch_process(struct sink *s)
{
    batch_check_window(s);
    batch_continue(s, true);
}

/* ---- partitions ------------------------------------------------------------------------ */

static int month_of(int64_t ts_ms)
{
    time_t t = (time_t)(ts_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

static bool month_known(const struct sink *s, int m)
{
    for (int i = 0; i < s->nmonths; i++)
        if (s->months[i] == m)
            return true;
    return false;
}

static void month_want(struct sink *s, int m)
{
    if (month_known(s, m) || s->nwant == SINK_MONTHS_MAX)
        return;
    for (int i = 0; i < s->nwant; i++)
        if (s->want[i] == m)
            return;
    s->want[s->nwant++] = m;
}

static void on_ensured(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    bool for_batch = s->ensure_for_batch;
    if (r->status == PG_OK) {
        for (int i = 0; i < s->nwant; i++) {
            if (s->nmonths == SINK_MONTHS_MAX)
                s->nmonths = 0; /* forget them all: they will only be ensured again */
            if (!month_known(s, s->want[i]))
                s->months[s->nmonths++] = s->want[i];
        }
    }
    s->nwant = 0;
    if (for_batch) {
        if (r->status == PG_OK) {
            batch_store(s);
            return;
        }
        /* Handled like a failed transaction: the batch stays pending. */
        count_error(s, "partition");
        s->stats.batches_failed++;
        metric_inc(s->m.batches, "failed");
        s->failures++;
        if (noisy(s))
            sink_log(LOG_WARN, s, "cannot ensure scan_events partitions for a batch",
                     json_pack("{s:s,s:s}", "status", pg_status_str(r->status), "error",
                               r->message != NULL ? r->message : ""));
        batch_clear(s);
        s->own_pending = true;
        sink_retry_later(s);
        return;
    }
    int64_t now = mono_ms();
    if (r->status == PG_OK) {
        s->stats.partition_runs++;
        s->next_partitions_ms = now + s->partition_interval_ms;
    } else {
        count_error(s, "partition");
        sink_log(LOG_WARN, s, "cannot ensure this and next month's scan_events partitions",
                 json_pack("{s:s,s:s}", "status", pg_status_str(r->status), "error",
                           r->message != NULL ? r->message : ""));
        /* Batches ensure their own months; this only runs ahead of them. Try again soon. */
        s->next_partitions_ms =
            now + (s->partition_interval_ms < 10000 ? s->partition_interval_ms : 10000);
    }
    sink_step(s);
}

/* Runs tagproof_ensure_scan_partition for the months in s->want; 0 or -1. */
static int ensure_months(struct sink *s, bool for_batch)
{
    char list[SINK_MONTHS_MAX * 12 + 3];
    size_t off = 0;
    list[off++] = '{';
    for (int i = 0; i < s->nwant; i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%04d-%02d-01", i ? "," : "",
                                s->want[i] / 12, s->want[i] % 12 + 1);
    list[off++] = '}';
    list[off] = '\0';
    const char *values[] = {list};
    struct sink_call *c = call_new(s);
    if (c == NULL)
        return -1;
    s->ensure_for_batch = for_batch;
    if (pg_query(s->pg, s->pg_timeout_ms, on_ensured, c, ensure_sql, 1, values) != 0) {
        call_end(c);
        return -1;
    }
    return 0;
}

/* This month's and next month's partitions, at start and every partition_interval_ms. */
static void partitions_run(struct sink *s)
{
    int now = month_of(wall_ms());
    s->nwant = 0;
    s->want[s->nwant++] = now;
    s->want[s->nwant++] = now + 1;
    if (ensure_months(s, false) != 0) {
        s->nwant = 0;
        s->next_partitions_ms = mono_ms() + 1000;
        sink_retry_later(s);
    }
}

/* ---- storing --------------------------------------------------------------------------- */

static void arr_put(struct sink *s, struct param_buf *b, const char *v, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = realloc(b->buf, cap);
        if (grown == NULL) {
            s->params_failed = true;
            return;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, v, n);
    b->len += n;
}

static void arr_raw(struct sink *s, struct param_buf *b, const char *v)
{
    arr_put(s, b, v, strlen(v));
}

/* A quoted array element: only '"' and '\' need a backslash inside the quotes. */
static void arr_text(struct sink *s, struct param_buf *b, const char *v)
{
    if (v == NULL) {
        arr_put(s, b, "NULL", 4);
        return;
    }
    arr_put(s, b, "\"", 1);
    while (*v != '\0') {
        size_t run = strcspn(v, "\"\\");
        arr_put(s, b, v, run);
        v += run;
        if (*v != '\0') {
            arr_put(s, b, "\\", 1);
            arr_put(s, b, v, 1);
            v++;
        }
    }
    arr_put(s, b, "\"", 1);
}

static void arr_uuid(struct sink *s, struct param_buf *b, const char *v)
{
    arr_raw(s, b, v[0] != '\0' ? v : "NULL");
}

/*
 * Builds the store statement's array parameters for entries lo..hi into s->params, each a
 * NUL-terminated array literal. 0, or -1 when out of memory.
 */
static int store_params(struct sink *s)
{
    struct param_buf *b = s->params;
    char num[40];
    bool first = true;
    s->params_failed = false;
    for (int p = 0; p < SINK_STORE_NPARAMS; p++) {
        b[p].len = 0;
        arr_put(s, &b[p], "{", 1);
    }
    for (int i = s->lo; i < s->hi; i++) {
        const struct sink_entry *en = &s->entries[i];
        const struct scan_event *ev = &en->ev;
        if (en->state != E_VALID)
            continue;
        if (!first)
            for (int p = 0; p < SINK_STORE_NPARAMS; p++)
                arr_put(s, &b[p], ",", 1);
        first = false;
        arr_text(s, &b[0], en->id);
        snprintf(num, sizeof(num), "%" PRId64, ev->ts_ms);
        arr_raw(s, &b[1], num);
        arr_uuid(s, &b[2], ev->tag_id);
        arr_uuid(s, &b[3], ev->factory_id);
        arr_uuid(s, &b[4], ev->batch_id);
        arr_text(s, &b[5], ev->verdict);
        snprintf(num, sizeof(num), "%d", ev->score);
        arr_raw(s, &b[6], num);
        arr_text(s, &b[7], ev->reasons);
        arr_text(s, &b[8], ev->ip_hash[0] != '\0' ? ev->ip_hash : NULL);
        arr_text(s, &b[9], ev->user_agent);
        if (ev->has_location) {
            snprintf(num, sizeof(num), "%.17g", ev->lat);
            arr_raw(s, &b[10], num);
            snprintf(num, sizeof(num), "%.17g", ev->lon);
            arr_raw(s, &b[11], num);
        } else {
            arr_raw(s, &b[10], "NULL");
            arr_raw(s, &b[11], "NULL");
        }
        arr_text(s, &b[12], ev->source);
        arr_raw(s, &b[13], ev->first_scan ? "t" : "f");
        /*
         * The time the scan path announced as the first scan, unless it is implausibly far
         * from the scan itself (a clock gone wrong): then the scan's own time.
         */
        if (ev->first_ms > 0 && ev->first_ms >= ev->ts_ms - 3600 * 1000 &&
            ev->first_ms <= ev->ts_ms + 3600 * 1000) {
            snprintf(num, sizeof(num), "%" PRId64, ev->first_ms);
            arr_raw(s, &b[14], num);
        } else {
            arr_raw(s, &b[14], "NULL");
        }
    }
    for (int p = 0; p < SINK_STORE_NPARAMS; p++)
        arr_put(s, &b[p], "}", 2); /* with the NUL */
    return s->params_failed ? -1 : 0;
}

static bool data_error(const char *sqlstate)
{
    /* Data exceptions, integrity violations, program limits: this data, not the server. */
    return sqlstate != NULL && (strncmp(sqlstate, "22", 2) == 0 ||
                                strncmp(sqlstate, "23", 2) == 0 || strncmp(sqlstate, "54", 2) == 0);
}

static void tx_release(struct sink *s)
{
    if (s->conn != NULL) {
        pg_conn_release(s->conn);
        s->conn = NULL;
    }
}

/*
 * A transaction failed. A data error is this batch's own: the range is tried once more
 * (after ensuring its partitions afresh, since a partition dropped behind the cache shows as
 * one), then event by event, and an event PostgreSQL refuses on its own is rejected, so that
 * one bad event never wedges the stream. A timeout is retried at once in smaller
 * transactions, so that a slow server or a locked row holds up as few events as possible.
 * Anything else (no server, a timeout of a single event) leaves the whole batch pending, to
 * be read again after a backoff; what it committed already is then a duplicate.
 */
static void tx_failed(struct sink *s, const struct pg_result_info *r, const char *step)
{
    int valid = batch_count(s, s->lo, s->hi, E_VALID);
    tx_release(s);
    if (data_error(r->sqlstate)) {
        s->nmonths = 0;
        if (!s->range_retry) {
            sink_log(LOG_WARN, s,
                     "PostgreSQL refused a batch: ensuring its partitions and trying again",
                     json_pack("{s:s,s:s,s:i}", "sqlstate", r->sqlstate, "error",
                               r->message != NULL ? r->message : "", "events", valid));
            s->range_retry = true;
            batch_store(s);
            return;
        }
        if (valid > 1) {
            sink_log(LOG_WARN, s, "PostgreSQL refused a batch: storing its events one by one",
                     json_pack("{s:s,s:s,s:i}", "sqlstate", r->sqlstate, "error",
                               r->message != NULL ? r->message : "", "events", valid));
            s->singles = true;
            s->hi = s->lo;
            batch_continue(s, false);
            return;
        }
        for (int i = s->lo; i < s->hi; i++) {
            struct sink_entry *en = &s->entries[i];
            if (en->state != E_VALID)
                continue;
            en->state = E_REJECTED;
            sink_log(LOG_ERROR, s, "PostgreSQL refused a scan event: not stored",
                     json_pack("{s:s,s:s,s:s,s:s}", "event_id", en->id, "tag_id", en->ev.tag_id,
                               "sqlstate", r->sqlstate, "error",
                               r->message != NULL ? r->message : ""));
        }
        batch_continue(s, false);
        return;
    }
    count_error(s, "store");
    if (r->status == PG_ERR_TIMEOUT && valid > 1 && !s->stopping) {
        s->chunk = valid / 2;
        sink_log(LOG_WARN, s, "storing a batch timed out: trying smaller transactions",
                 json_pack("{s:s,s:i,s:i}", "step", step, "events", valid, "chunk", s->chunk));
        s->hi = s->lo;
        batch_continue(s, false);
        return;
    }
    s->stats.batches_failed++;
    metric_inc(s->m.batches, "failed");
    s->failures++;
    if (noisy(s) || s->stopping)
        sink_log(LOG_WARN, s,
                 s->stopping ? "scan-event batch not stored while stopping: left pending"
                             : "scan-event batch not stored: retrying",
                 json_pack("{s:s,s:s,s:s,s:s,s:i}", "step", step, "status",
                           pg_status_str(r->status), "sqlstate",
                           r->sqlstate != NULL ? r->sqlstate : "", "error",
                           r->message != NULL ? r->message : "", "events", s->n));
    batch_clear(s);
    s->own_pending = true;
    sink_retry_later(s);
}

static void tx_failed_local(struct sink *s, const char *step)
{
    struct pg_result_info r = {.status = PG_ERR_CLOSED, .message = "the call was refused"};
    tx_failed(s, &r, step);
}

static int tx_query(struct sink *s, pg_result_fn fn, const char *sql, int nparams,
                    const char *const *values)
{
    struct sink_call *c = call_new(s);
    if (c == NULL)
        return -1;
    if (pg_conn_query(s->conn, s->pg_timeout_ms + 1000, fn, c, sql, nparams, values) != 0) {
        call_end(c);
        return -1;
    }
    return 0;
}

static void on_commit(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (r->status != PG_OK) {
        tx_failed(s, r, "commit");
        return;
    }
    tx_release(s);

    int valid = batch_count(s, s->lo, s->hi, E_VALID);
    int64_t oldest = INT64_MAX, now = wall_ms();
    for (int i = s->lo; i < s->hi; i++)
        if (s->entries[i].state == E_VALID && s->entries[i].ev.ts_ms < oldest)
            oldest = s->entries[i].ev.ts_ms;
    s->stats.stored += (uint64_t)s->tx_inserted;
    s->stats.duplicate += (uint64_t)(valid - s->tx_inserted);
    s->stats.first_scans += (uint64_t)s->tx_first;
    metric_add(s->m.events, (double)s->tx_inserted, "stored");
    metric_add(s->m.events, (double)(valid - s->tx_inserted), "duplicate");
    metric_add(s->m.first_scans, (double)s->tx_first);
    metric_observe(s->m.store_seconds, (double)(mono_ms() - s->tx_started_ms) / 1000.0);
    s->stats.lag_s = oldest < now ? (double)(now - oldest) / 1000.0 : 0.0;
    metric_set(s->m.lag, s->stats.lag_s);
    if (!s->singles && s->chunk < s->batch_max)
        s->chunk = s->chunk > s->batch_max / 2 ? s->batch_max : s->chunk * 2;
    batch_continue(s, false);
}

static void tx_commit(struct sink *s)
{
    if (tx_query(s, on_commit, "COMMIT", 0, NULL) != 0)
        tx_failed_local(s, "commit");
}

static void on_delay(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (r->status != PG_OK)
        tx_failed(s, r, "commit_delay");
    else
        tx_commit(s);
}

static void on_stored(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (r->status != PG_OK) {
        tx_failed(s, r, "insert");
        return;
    }
    s->tx_inserted = 0;
    s->tx_first = 0;
    if (r->res != NULL && PQntuples(r->res) == 1 && PQnfields(r->res) == 2) {
        s->tx_inserted = atol(PQgetvalue(r->res, 0, 0));
        s->tx_first = atol(PQgetvalue(r->res, 0, 1));
    }
    if (s->commit_delay_ms > 0) {
        /* The test hook (sink_options.commit_delay_ms): the transaction stays open. */
        char ms[16];
        snprintf(ms, sizeof(ms), "%d", s->commit_delay_ms);
        const char *values[] = {ms};
        if (tx_query(s, on_delay, "SELECT pg_sleep($1::float8 / 1000)", 1, values) != 0)
            tx_failed_local(s, "commit_delay");
        return;
    }
    tx_commit(s);
}

static void on_timeout_set(void *arg, const struct pg_result_info *r);

static void on_begun(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (r->status != PG_OK) {
        tx_failed(s, r, "begin");
        return;
    }
    /*
     * The transaction's own server-side deadline, whatever statement_timeout the pool sets
     * for its other users: it fires before the client-side one, so a timeout keeps the
     * connection and comes back as PG_ERR_TIMEOUT.
     */
    char sql[64];
    snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %d", s->pg_timeout_ms);
    if (tx_query(s, on_timeout_set, sql, 0, NULL) != 0)
        tx_failed_local(s, "begin");
}

static void on_timeout_set(void *arg, const struct pg_result_info *r)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (r->status != PG_OK) {
        tx_failed(s, r, "begin");
        return;
    }
    const char *values[SINK_STORE_NPARAMS];
    struct sink_call *c = NULL;
    int rc = -1;
    if (store_params(s) != 0)
        goto done;
    for (int p = 0; p < SINK_STORE_NPARAMS; p++)
        values[p] = s->params[p].buf;
    if ((c = call_new(s)) == NULL)
        goto done;
    /* The parameters are copied: the buffers are free for the next batch at once. */
    rc = pg_conn_query_prepared(s->conn, s->pg_timeout_ms + 1000, on_stored, c, SINK_STORE_STMT,
                                SINK_STORE_NPARAMS, values);
    if (rc != 0)
        call_end(c);
done:
    if (rc != 0)
        tx_failed_local(s, "insert");
}

static void on_acquired(void *arg, struct pg_conn *conn, enum pg_status st)
{
    struct sink *s = call_end(arg);
    if (s == NULL) {
        if (conn != NULL)
            pg_conn_release(conn);
        return;
    }
    if (conn == NULL) {
        struct pg_result_info r = {.status = st, .message = pg_status_str(st)};
        tx_failed(s, &r, "connect");
        return;
    }
    s->conn = conn;
    if (tx_query(s, on_begun, "BEGIN", 0, NULL) != 0)
        tx_failed_local(s, "begin");
}

/* Stores entries lo..hi: partitions first when a month is new to the sink, then one
 * transaction. */
static void batch_store(struct sink *s)
{
    s->nwant = 0;
    for (int i = s->lo; i < s->hi; i++) {
        if (s->entries[i].state != E_VALID)
            continue;
        /*
         * A day either side: the partition bounds follow the session time zone of whoever
         * created them, so an event near midnight may belong to the neighbouring month.
         */
        month_want(s, month_of(s->entries[i].ev.ts_ms - 86400000));
        month_want(s, month_of(s->entries[i].ev.ts_ms + 86400000));
    }
    if (s->nwant > 0) {
        if (ensure_months(s, true) != 0) {
            s->nwant = 0;
            tx_failed_local(s, "partition");
        }
        return;
    }
    s->tx_started_ms = mono_ms();
    struct sink_call *c = call_new(s);
    if (c == NULL || pg_pool_acquire(s->pg, s->pg_timeout_ms, on_acquired, c) != 0) {
        if (c != NULL)
            call_end(c);
        tx_failed_local(s, "connect");
    }
}

/* ---- acknowledging --------------------------------------------------------------------- */

static void on_acked(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_INTEGER) {
        count_error(s, "ack");
        s->failures++;
        if (noisy(s))
            sink_log(LOG_WARN, s,
                     "XACK failed: the stored entries stay pending and are "
                     "stored again (as duplicates) before they are acknowledged",
                     json_pack("{s:s,s:s}", "status", redis_status_str(st), "error",
                               reply != NULL && reply->str != NULL ? reply->str : ""));
        batch_clear(s);
        s->own_pending = true;
        sink_retry_later(s);
        return;
    }
    int malformed = batch_count(s, 0, s->n, E_MALFORMED);
    int rejected = batch_count(s, 0, s->n, E_REJECTED);
    int deleted = batch_count(s, 0, s->n, E_DELETED);
    s->stats.acked += (uint64_t)reply->integer;
    s->stats.malformed += (uint64_t)malformed;
    s->stats.rejected += (uint64_t)rejected;
    s->stats.deleted += (uint64_t)deleted;
    metric_add(s->m.events, malformed, "malformed");
    metric_add(s->m.events, rejected, "rejected");
    metric_add(s->m.events, deleted, "deleted");
    s->stats.batches_ok++;
    metric_inc(s->m.batches, "ok");
    s->failures = 0;
    bool small = s->src == SRC_NEW && s->n < s->batch_max / 2;
    batch_clear(s);
    /* A small batch: the stream is drained as fast as it fills. Let the next one grow. */
    if (small && !s->stopping)
        sink_wait(s, s->linger_ms);
    else
        sink_step(s);
}

static void batch_ack(struct sink *s)
{
    int argc = 0;
    s->ack_argv[argc] = "XACK";
    s->ack_lens[argc++] = 4;
    s->ack_argv[argc] = s->stream;
    s->ack_lens[argc++] = strlen(s->stream);
    s->ack_argv[argc] = s->group;
    s->ack_lens[argc++] = strlen(s->group);
    for (int i = 0; i < s->n; i++) {
        s->ack_argv[argc] = s->entries[i].id;
        s->ack_lens[argc++] = strlen(s->entries[i].id);
    }
    if (sink_redis(s, s->redis_timeout_ms, on_acked, argc, s->ack_argv, s->ack_lens) != 0) {
        count_error(s, "ack");
        s->failures++;
        batch_clear(s);
        s->own_pending = true;
        sink_retry_later(s);
    }
}

/* ---- reading and claiming -------------------------------------------------------------- */

/* A reply saying the group or the stream is gone (Redis restarted empty): create it again. */
static void forget_lost_group(struct sink *s, const redisReply *reply)
{
    if (reply_error_has(reply, "NOGROUP") || reply_error_has(reply, "no such key"))
        s->group_ready = false;
}

/* A failed Redis step: a lost group is created again, then carry on after a backoff. */
static void redis_failed(struct sink *s, const char *op, enum redis_status st,
                         const redisReply *reply)
{
    count_error(s, op);
    forget_lost_group(s, reply);
    s->failures++;
    if (noisy(s))
        sink_log(LOG_WARN, s, "Redis command failed",
                 json_pack("{s:s,s:s,s:s}", "op", op, "status", redis_status_str(st), "error",
                           reply != NULL && reply->str != NULL ? reply->str : ""));
    sink_retry_later(s);
}

static void on_read(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    bool own = s->src == SRC_OWN;
    if (st != REDIS_STATUS_OK) {
        /* A read that timed out may still have delivered entries to this consumer. */
        s->own_pending = true;
        redis_failed(s, "read", st, reply);
        return;
    }
    const redisReply *entries = NULL;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements >= 2)
        entries = reply->element[0]->element[1];
    int n = batch_load(s, entries, own ? SRC_OWN : SRC_NEW);
    if (entries != NULL && entries->type == REDIS_REPLY_ARRAY && entries->elements > (size_t)n)
        s->own_pending = true; /* entries left over (or unusable): look again */
    if (n == 0) {
        /* Nothing to do is a success; a read that brings entries succeeds with their ack. */
        s->failures = 0;
        if (own)
            s->own_pending = false;
        else {
            /* Caught up: nothing waits. */
            s->stats.lag_s = 0;
            metric_set(s->m.lag, 0);
        }
        sink_step(s);
        return;
    }
    batch_process(s);
}

static void read_start(struct sink *s, enum batch_source src)
{
    char count[16], block[16];
    const char *argv[12];
    int argc = 0;
    snprintf(count, sizeof(count), "%d", s->batch_max);
    snprintf(block, sizeof(block), "%d", s->block_ms);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = s->group;
    argv[argc++] = s->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    if (src == SRC_NEW) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = s->stream;
    /* ">" asks for entries never delivered; "0" for this consumer's own pending ones. */
    argv[argc++] = src == SRC_NEW ? ">" : "0";
    s->src = src;
    int timeout = s->redis_timeout_ms + (src == SRC_NEW ? s->block_ms : 0);
    if (sink_redis(s, timeout, on_read, argc, argv, NULL) != 0) {
        count_error(s, "read");
        s->failures++;
        sink_retry_later(s);
    }
}

static void on_claimed(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    int64_t now = mono_ms();
    const char *cursor;
    size_t len;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        (cursor = reply_str(reply->element[0], &len)) == NULL || len >= SINK_ID_MAX) {
        s->claim_active = false;
        s->next_claim_ms = now + s->claim_interval_ms;
        redis_failed(s, "claim", st, reply);
        return;
    }
    memcpy(s->claim_cursor, cursor, len);
    s->claim_cursor[len] = '\0';
    s->claim_active = strcmp(s->claim_cursor, "0-0") != 0;
    if (!s->claim_active)
        s->next_claim_ms = now + s->claim_interval_ms;
    /* Redis 7 drops entries deleted from the stream from the pending list and names them. */
    if (reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_ARRAY &&
        reply->element[2]->elements > 0) {
        size_t gone = reply->element[2]->elements;
        s->stats.deleted += gone;
        metric_add(s->m.events, (double)gone, "deleted");
        sink_log(LOG_WARN, s,
                 "pending scan events were deleted from the stream before they "
                 "were stored",
                 json_pack("{s:I}", "entries", (json_int_t)gone));
    }
    int n = batch_load(s, reply->element[1], SRC_CLAIM);
    if (n == 0) {
        sink_step(s);
        return;
    }
    s->stats.claimed += (uint64_t)n;
    metric_add(s->m.claimed, n);
    sink_log(LOG_INFO, s, "claimed pending scan events from a silent consumer",
             json_pack("{s:i,s:i}", "entries", n, "idle_ms", s->claim_idle_ms));
    batch_process(s);
}

static void claim_start(struct sink *s)
{
    char idle[16], count[16];
    snprintf(idle, sizeof(idle), "%d", s->claim_idle_ms);
    snprintf(count, sizeof(count), "%d", s->batch_max);
    if (!s->claim_active)
        strcpy(s->claim_cursor, "0-0");
    const char *argv[] = {"XAUTOCLAIM", s->stream,       s->group, s->consumer,
                          idle,         s->claim_cursor, "COUNT",  count};
    s->claim_active = true;
    if (sink_redis(s, s->redis_timeout_ms, on_claimed, 8, argv, NULL) != 0) {
        s->claim_active = false;
        s->next_claim_ms = mono_ms() + s->claim_interval_ms;
        count_error(s, "claim");
        s->failures++;
        sink_retry_later(s);
    }
}

/* ---- trimming -------------------------------------------------------------------------- */

static void trim_groups_free(struct sink *s)
{
    for (int i = 0; i < s->trim_ngroups; i++)
        free(s->trim_groups[i]);
    free(s->trim_groups);
    s->trim_groups = NULL;
    s->trim_ngroups = s->trim_next = 0;
}

static void trim_done(struct sink *s, bool ok, const char *why, enum redis_status st,
                      const redisReply *reply)
{
    trim_groups_free(s);
    s->next_trim_ms = mono_ms() + s->trim_interval_ms;
    if (!ok) {
        count_error(s, "trim");
        forget_lost_group(s, reply);
        sink_log(LOG_WARN, s, "cannot trim the scan-event stream",
                 json_pack("{s:s,s:s,s:s}", "step", why, "status", redis_status_str(st), "error",
                           reply != NULL && reply->str != NULL ? reply->str : ""));
    }
    sink_step(s);
}

static void on_trimmed(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_INTEGER) {
        trim_done(s, false, "xtrim", st, reply);
        return;
    }
    s->stats.trimmed += (uint64_t)reply->integer;
    metric_add(s->m.trimmed, (double)reply->integer);
    trim_done(s, true, NULL, st, reply);
}

static void trim_pending_next(struct sink *s);

static void on_xpending(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    const char *min;
    size_t len;
    struct sid id;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        trim_done(s, false, "xpending", st, reply);
        return;
    }
    /* [count, smallest id, greatest id, consumers]; the ids are nil when nothing is pending. */
    if ((min = reply_str(reply->element[1], &len)) != NULL && sid_parse(min, len, &id) == 0 &&
        sid_cmp(id, s->trim_min) < 0)
        s->trim_min = id;
    trim_pending_next(s);
}

/*
 * Asks each group with pending entries for its oldest one, then trims below the smallest
 * id any group still needs: its oldest pending entry, or the entry after the last one it was
 * delivered. What a group needs only moves forward, so a minimum computed a moment ago is
 * still safe when XTRIM runs.
 */
static void trim_pending_next(struct sink *s)
{
    if (s->trim_next < s->trim_ngroups) {
        const char *argv[] = {"XPENDING", s->stream, s->trim_groups[s->trim_next++]};
        if (sink_redis(s, s->redis_timeout_ms, on_xpending, 3, argv, NULL) != 0)
            trim_done(s, false, "xpending", REDIS_STATUS_DISCONNECTED, NULL);
        return;
    }
    if (s->trim_min.ms == 0 && s->trim_min.seq <= 1) {
        trim_done(s, true, NULL, REDIS_STATUS_OK, NULL);
        return;
    }
    char minid[SINK_ID_MAX];
    snprintf(minid, sizeof(minid), "%" PRIu64 "-%" PRIu64, s->trim_min.ms, s->trim_min.seq);
    const char *argv[] = {"XTRIM", s->stream, "MINID", minid};
    if (sink_redis(s, s->redis_timeout_ms, on_trimmed, 4, argv, NULL) != 0)
        trim_done(s, false, "xtrim", REDIS_STATUS_DISCONNECTED, NULL);
}

static void on_xinfo(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_ARRAY) {
        trim_done(s, false, "xinfo", st, reply);
        return;
    }
    s->trim_min.ms = UINT64_MAX;
    s->trim_min.seq = UINT64_MAX;
    s->trim_groups = calloc(reply->elements + 1, sizeof(char *));
    if (s->trim_groups == NULL) {
        trim_done(s, false, "xinfo", st, NULL);
        return;
    }
    for (size_t g = 0; g < reply->elements; g++) {
        const redisReply *grp = reply->element[g];
        const char *name = NULL, *last = NULL;
        size_t name_len = 0, last_len = 0;
        long long pending = -1, lag = -1;
        if (grp->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t k = 0; k + 1 < grp->elements; k += 2) {
            const char *key = reply_str(grp->element[k], NULL);
            const redisReply *v = grp->element[k + 1];
            if (key == NULL)
                continue;
            if (strcmp(key, "name") == 0)
                name = reply_str(v, &name_len);
            else if (strcmp(key, "last-delivered-id") == 0)
                last = reply_str(v, &last_len);
            else if (strcmp(key, "pending") == 0 && v->type == REDIS_REPLY_INTEGER)
                pending = v->integer;
            else if (strcmp(key, "lag") == 0 && v->type == REDIS_REPLY_INTEGER)
                lag = v->integer;
        }
        struct sid ld;
        if (name == NULL || last == NULL || sid_parse(last, last_len, &ld) != 0) {
            trim_done(s, false, "xinfo", st, NULL);
            return;
        }
        if (name_len == strlen(s->group) && memcmp(name, s->group, name_len) == 0) {
            s->stats.pending = pending;
            if (pending >= 0)
                metric_set(s->m.pending, (double)pending);
            if (lag >= 0) /* nil when Redis cannot tell (entries deleted) */
                metric_set(s->m.undelivered, (double)lag);
        }
        struct sid next =
            ld.seq == UINT64_MAX ? (struct sid){ld.ms + 1, 0} : (struct sid){ld.ms, ld.seq + 1};
        if (sid_cmp(next, s->trim_min) < 0)
            s->trim_min = next;
        if (pending != 0) { /* unknown counts as some */
            char *copy = strndup(name, name_len);
            if (copy == NULL) {
                trim_done(s, false, "xinfo", st, NULL);
                return;
            }
            s->trim_groups[s->trim_ngroups++] = copy;
        }
    }
    if (s->trim_min.ms == UINT64_MAX) { /* no group at all: ours is gone */
        s->group_ready = false;
        trim_done(s, true, NULL, st, reply);
        return;
    }
    trim_pending_next(s);
}

static void trim_start(struct sink *s)
{
    const char *argv[] = {"XINFO", "GROUPS", s->stream};
    if (sink_redis(s, s->redis_timeout_ms, on_xinfo, 3, argv, NULL) != 0)
        trim_done(s, false, "xinfo", REDIS_STATUS_DISCONNECTED, NULL);
}

/* ---- the group, the loop --------------------------------------------------------------- */

static void on_group(void *arg, enum redis_status st, const redisReply *reply)
{
    struct sink *s = call_end(arg);
    if (s == NULL)
        return;
    if (st == REDIS_STATUS_OK || reply_error_has(reply, "BUSYGROUP")) {
        s->group_ready = true;
        s->failures = 0;
        sink_step(s);
        return;
    }
    redis_failed(s, "group", st, reply);
}

static void group_create(struct sink *s)
{
    /* From the stream's start: a group created after events were written still gets them. */
    const char *argv[] = {"XGROUP", "CREATE", s->stream, s->group, "0", "MKSTREAM"};
    if (sink_redis(s, s->redis_timeout_ms, on_group, 6, argv, NULL) != 0) {
        count_error(s, "group");
        s->failures++;
        sink_retry_later(s);
    }
}

/*
 * Chooses the next thing to do. Called only when nothing is in flight; every path ends in
 * exactly one command, query or wait.
 */
static void sink_step(struct sink *s)
{
    int64_t now = mono_ms();
    if (s->stopping) {
        sink_finish(s);
        return;
    }
    if (now >= s->next_partitions_ms) {
        partitions_run(s);
    } else if (!redis_connected(s->redis)) {
        /* The client reconnects by itself (and logs it); a command now would only fail. */
        sink_wait(s, s->backoff_min_ms);
    } else if (!s->group_ready) {
        group_create(s);
    } else if (s->own_pending) {
        read_start(s, SRC_OWN);
    } else if (s->claim_active || now >= s->next_claim_ms) {
        claim_start(s);
    } else if (now >= s->next_trim_ms) {
        trim_start(s);
    } else {
        read_start(s, SRC_NEW);
    }
}

/* ---- the interface --------------------------------------------------------------------- */

static int opt_or(int v, int def)
{
    return v > 0 ? v : def;
}

static void register_metrics(struct sink *s, struct metrics *reg)
{
    if (reg == NULL)
        return;
    s->m.events = metrics_counter(reg, "tagproof_sink_events_total",
                                  "Scan events by outcome: stored, duplicate (already stored), "
                                  "malformed, rejected (time window or refused), deleted",
                                  "result");
    s->m.batches = metrics_counter(reg, "tagproof_sink_batches_total",
                                   "Batches acknowledged (ok) or left pending (failed)", "result");
    s->m.errors =
        metrics_counter(reg, "tagproof_sink_errors_total", "Failed sink steps by operation", "op");
    s->m.lag =
        metrics_gauge(reg, "tagproof_sink_lag_seconds",
                      "Age of the oldest event of the last stored batch; 0 when caught up", NULL);
    s->m.pending = metrics_gauge(reg, "tagproof_sink_pending",
                                 "Entries delivered to the group and not yet acknowledged", NULL);
    s->m.undelivered = metrics_gauge(reg, "tagproof_sink_undelivered",
                                     "Entries not yet delivered to the group", NULL);
    s->m.claimed = metrics_counter(reg, "tagproof_sink_claimed_total",
                                   "Pending entries taken over from silent consumers", NULL);
    s->m.trimmed =
        metrics_counter(reg, "tagproof_sink_trimmed_total",
                        "Entries trimmed from the stream after every group acked them", NULL);
    s->m.first_scans = metrics_counter(reg, "tagproof_sink_first_scans_total",
                                       "Tags whose first scan the sink recorded", NULL);
    s->m.store_seconds = metrics_histogram(reg, "tagproof_sink_store_seconds",
                                           "Time to store one batch in PostgreSQL", NULL, NULL, 0);
}

struct sink *sink_new(struct event_base *base, struct redis_client *redis, struct pg_pool *pg,
                      const struct sink_options *opt, struct metrics *metrics, const char **why)
{
    const char *dummy;
    struct sink *s = NULL;
    if (why == NULL)
        why = &dummy;
    if (base == NULL || redis == NULL || pg == NULL || opt == NULL) {
        *why = "base, redis, pg and options are required";
        return NULL;
    }
    if (opt->consumer == NULL || opt->consumer[0] == '\0' || strlen(opt->consumer) > 200) {
        *why = "a consumer name (1 to 200 bytes) is required";
        return NULL;
    }
    if ((opt->stream != NULL && (opt->stream[0] == '\0' || strlen(opt->stream) > 200)) ||
        (opt->group != NULL && (opt->group[0] == '\0' || strlen(opt->group) > 200))) {
        *why = "stream and group names must have 1 to 200 bytes";
        return NULL;
    }
    if (opt->batch_max > SINK_BATCH_MAX) {
        *why = "batch_max is above 5000";
        return NULL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL)
        goto nomem;
    s->base = base;
    s->redis = redis;
    s->pg = pg;
    s->stream = sink_strdup(opt->stream != NULL ? opt->stream : EVENTS_STREAM_KEY);
    s->group = sink_strdup(opt->group != NULL ? opt->group : SINK_GROUP_DEFAULT);
    s->consumer = sink_strdup(opt->consumer);
    s->batch_max = opt_or(opt->batch_max, 500);
    s->linger_ms = opt_or(opt->linger_ms, 100);
    s->block_ms = opt_or(opt->block_ms, 1000);
    s->redis_timeout_ms = opt_or(opt->redis_timeout_ms, 2000);
    s->pg_timeout_ms = opt_or(opt->pg_timeout_ms, 10000);
    s->claim_idle_ms = opt_or(opt->claim_idle_ms, 30000);
    s->claim_interval_ms =
        opt->claim_interval_ms > 0 ? opt->claim_interval_ms : s->claim_idle_ms / 2;
    if (opt->claim_interval_ms <= 0 && s->claim_interval_ms < 100)
        s->claim_interval_ms = 100;
    if (opt->claim_interval_ms <= 0 && s->claim_interval_ms > 10000)
        s->claim_interval_ms = 10000;
    s->trim_interval_ms = opt_or(opt->trim_interval_ms, 5000);
    s->partition_interval_ms = opt_or(opt->partition_interval_ms, 3600 * 1000);
    s->backoff_min_ms = opt_or(opt->backoff_min_ms, 100);
    s->backoff_max_ms = opt_or(opt->backoff_max_ms, 5000);
    if (s->backoff_max_ms < s->backoff_min_ms)
        s->backoff_max_ms = s->backoff_min_ms;
    s->max_age_ms = (int64_t)opt_or(opt->max_age_days, 90) * 86400 * 1000;
    s->max_future_ms = opt_or(opt->max_future_ms, 3600 * 1000);
    s->commit_delay_ms = opt->commit_delay_ms > 0 ? opt->commit_delay_ms : 0;
    s->chunk = s->batch_max;
    s->stats.pending = -1;
    if (s->stream == NULL || s->group == NULL || s->consumer == NULL)
        goto nomem;
    s->entries = calloc((size_t)s->batch_max, sizeof(*s->entries));
    s->ack_argv = calloc((size_t)s->batch_max + 3, sizeof(*s->ack_argv));
    s->ack_lens = calloc((size_t)s->batch_max + 3, sizeof(*s->ack_lens));
    s->timer = evtimer_new(base, on_timer, s);
    if (s->entries == NULL || s->ack_argv == NULL || s->ack_lens == NULL || s->timer == NULL)
        goto nomem;
    register_metrics(s, metrics);
    return s;
nomem:
    *why = "out of memory";
    sink_free(s);
    return NULL;
}

int sink_start(struct sink *s)
{
    if (s == NULL || s->started || s->stopping)
        return -1;
    if (pg_pool_prepare(s->pg, SINK_STORE_STMT, store_sql, SINK_STORE_NPARAMS) != 0) {
        log_error("sink: the pool refused the statement %s (name taken?)", SINK_STORE_STMT);
        return -1;
    }
    s->started = true;
    s->stats.running = true;
    /* A consumer of this name may have left entries pending in an earlier life. */
    s->own_pending = true;
    int64_t now = mono_ms();
    s->next_partitions_ms = now;
    s->next_claim_ms = now;
    s->next_trim_ms = now + s->trim_interval_ms;
    sink_log(LOG_INFO, s, "scan-event sink started",
             json_pack("{s:s,s:i,s:i}", "group", s->group, "batch_max", s->batch_max,
                       "claim_idle_ms", s->claim_idle_ms));
    sink_step(s);
    return 0;
}

int sink_stop(struct sink *s, sink_done_fn done, void *arg)
{
    if (s == NULL || s->stopping)
        return -1;
    s->stopping = true;
    s->done = done;
    s->done_arg = arg;
    if (!s->started) {
        s->stopped = true;
        sink_wait(s, 0);
        return 0;
    }
    /* Waiting (a backoff or a pause) means nothing is in flight: stop now. */
    if (evtimer_pending(s->timer, NULL)) {
        evtimer_del(s->timer);
        sink_wait(s, 0);
    }
    return 0;
}

void sink_free(struct sink *s)
{
    if (s == NULL)
        return;
    for (struct sink_call *c = s->calls; c != NULL; c = c->next)
        c->s = NULL;
    tx_release(s);
    trim_groups_free(s);
    if (s->timer != NULL)
        event_free(s->timer);
    free(s->entries);
    for (int p = 0; p < SINK_STORE_NPARAMS; p++)
        free(s->params[p].buf);
    free(s->ack_argv);
    free(s->ack_lens);
    free(s->stream);
    free(s->group);
    free(s->consumer);
    free(s);
}

void sink_get_stats(const struct sink *s, struct sink_stats *out)
{
    *out = s->stats;
}
