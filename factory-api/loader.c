/*
 * loader: one upload from its first byte to the cache (see loader.h). The steps, each a
 * callback of the one before:
 *
 *   start   BEGIN as the tenant; statement_timeout raised, the batch locked (FOR KEY SHARE:
 *           it cannot vanish under the upload) and described for the cache; the temporary
 *           staging table; COPY staging FROM STDIN.
 *   body    each chunk hashed (SHA-256, for Idempotency-Key) and validated; accepted rows
 *           are appended, in COPY's binary format, to a 64 KiB buffer that goes to the COPY
 *           when full. When libpq cannot send more, the owner is told to pause until the
 *           socket drains.
 *           All-or-nothing: the first bad row aborts the COPY, and the rest of the body is
 *           only validated (for the report) and hashed.
 *   finish  COPY end; the owner is answered (202, the resource). Then, in the COPY's
 *           transaction: a savepoint, INSERT INTO tags ... SELECT FROM staging in tag order,
 *           so that the primary key fills page after page rather than at random; one log
 *           entry queuing the SPEC §7 leaves of the upload's tags (the anchor expands it);
 *           the upload row completed; COMMIT. A unique violation (a tag registered
 *           already, perhaps by another factory, whose row the tenant cannot even see) rolls
 *           back to the savepoint and takes the slow path: ON CONFLICT DO NOTHING, and the
 *           staged rows that were not inserted are the conflicts, reported by line.
 *   fill    after the commit, on the same connection (the staging table lives until the
 *           connection is released): a cursor over the staged tags, 250 at a time into Redis
 *           (one EVAL: HSET tp:t:<tag> d <info> b <batch> and EXPIRE, for each), the next
 *           page once the reply is in, so memory stays flat. The fill never changes the
 *           upload's outcome: a tag missing from the cache is read from PostgreSQL.
 *
 * Any failure before the commit rolls back (nothing is imported) and marks the upload failed
 * in a separate statement. body_sha256 is stored only when the body was read whole and
 * decided the outcome, so an upload that failed for another reason (the body was cut, the
 * database failed) gives its Idempotency-Key back for a retry.
 */
#include "loader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "csv.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "redis.h"
#include "service.h"

#define COPY_CHUNK (64 * 1024) /* COPY data goes out in pieces of about this size */
#define FILL_PAGE "250"        /* tags read back and written to Redis at a time (one EVAL) */
#define FILL_TIMEOUT_MS 2000   /* one Redis reply of the fill */
#define PROGRESS_MS 1000

enum phase {
    PH_STARTING,  /* transaction, staging table and COPY being set up */
    PH_BODY,      /* the body streams into the COPY */
    PH_FINISHING, /* COPY end, merge, final update, commit */
    PH_FILLING,   /* committed: the cache fill */
    PH_DONE,
};

struct loader {
    struct service_worker *w;
    struct loader_events ev;
    void *arg;
    int refs;  /* the main flow, and each pooled query in flight */
    int owner; /* the owner listens until answered */
    char tenant[40];
    char upload_id[UUID_STR_LEN + 1], factory_id[UUID_STR_LEN + 1];
    char batch_id[UUID_STR_LEN + 1], product_id[UUID_STR_LEN + 1];
    enum ingest_mode mode;
    int ttl_s;
    int stmt_ms;
    struct metric *m_uploads, *m_rows;

    enum phase phase;
    struct db_txn *txn;
    int setup_failed; /* a step before the COPY failed */
    struct csv_upload *csv;
    struct ingest_errors *errors;
    EVP_MD_CTX *sha;
    char sha_hex[2 * 32 + 1];

    char *buf; /* COPY data not sent yet */
    size_t len, cap;
    int copying;   /* the COPY is open and rows still go into it */
    int held;      /* libpq holds data back: waiting for the drain callback */
    int paused;    /* loader_feed returned 1: the owner waits for resume */
    int db_failed; /* the database failed under the upload */
    int ended;     /* loader_end was called */
    int body_whole;
    uint64_t staged;   /* rows sent to the COPY */
    uint64_t imported; /* rows the merge inserted */
    uint64_t conflicts;
    struct csv_upload_stats st; /* at the end of the body */

    struct event *tick;
    int tick_busy;
    char *info; /* the cache's tag description (d), compact JSON */
    int fill_pending;
    int fill_failed;
    uint64_t filled;
    /* Milliseconds (monotonic) when each step ended, for the log. */
    int64_t t_start, t_body, t_copied, t_tags, t_leaves, t_commit;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void finish(struct loader *l);
static void fail(struct loader *l, int db_error, const char *code, const char *message);
static void merge(struct loader *l);

/* --- lifetime ------------------------------------------------------------------------------ */

static void loader_unref(struct loader *l)
{
    if (--l->refs > 0)
        return;
    if (l->tick != NULL)
        event_free(l->tick);
    csv_upload_free(l->csv);
    ingest_errors_free(l->errors);
    EVP_MD_CTX_free(l->sha);
    free(l->buf);
    free(l->info);
    free(l);
}

static struct pg_pool *pool_of(struct loader *l)
{
    return l->w->pg;
}

/* Releases the transaction's connection (an open transaction is rolled back). */
static void txn_drop(struct loader *l)
{
    if (l->txn != NULL) {
        db_txn_rollback(l->txn);
        l->txn = NULL;
    }
    l->copying = 0;
    l->held = 0;
}

/* The end of the loader's own work; it is freed once the queries in flight have returned. */
static void finish(struct loader *l)
{
    l->phase = PH_DONE;
    if (l->tick != NULL)
        evtimer_del(l->tick);
    txn_drop(l);
    loader_unref(l);
}

static void answer(struct loader *l, int status, const char *json)
{
    if (!l->owner)
        return;
    l->owner = 0;
    l->ev.answered(l->arg, status, json);
}

/* The validator's counters: live while the body streams, kept once it has been freed. */
static void stats(const struct loader *l, struct csv_upload_stats *out)
{
    if (l->csv != NULL)
        csv_upload_stats(l->csv, out);
    else
        *out = l->st;
}

/*
 * At the end of the body the validator has said all it will: its counters are kept and its
 * duplicate set (the one part of an upload that grows with the file) is freed at once rather
 * than after the merge and the cache fill.
 */
static void validator_done(struct loader *l)
{
    if (l->csv == NULL)
        return;
    csv_upload_stats(l->csv, &l->st);
    csv_upload_free(l->csv);
    l->csv = NULL;
}

/* Counters as the upload row shows them while it runs. */
static void counts(struct loader *l, char total[24], char accepted[24], char rejected[24])
{
    struct csv_upload_stats s;
    stats(l, &s);
    snprintf(total, 24, "%" PRIu64, s.rows_total);
    snprintf(accepted, 24, "%" PRIu64, s.rows_accepted);
    snprintf(rejected, 24, "%" PRIu64, s.rows_rejected);
}

/* --- progress ------------------------------------------------------------------------------- */

static void on_tick_done(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (r->status != PG_OK && r->status != PG_ERR_CLOSED)
        log_warn("upload %s: progress not recorded: %s", l->upload_id,
                 r->message != NULL ? r->message : pg_status_str(r->status));
    l->tick_busy = 0;
    loader_unref(l);
}

/*
 * Once a second while the upload runs: its counters and its heartbeat. The guard on status
 * means a late update never undoes the final one; while the upload's own transaction holds
 * the row (its last statement before COMMIT), this waits and then changes nothing.
 */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct loader *l = arg;
    char total[24], accepted[24], rejected[24];
    (void)fd;
    (void)what;
    if (l->tick_busy || l->phase >= PH_FILLING || pool_of(l) == NULL)
        return;
    counts(l, total, accepted, rejected);
    const char *v[] = {l->upload_id, total, accepted, rejected};
    l->refs++;
    l->tick_busy = 1;
    if (db_tenant_query(pool_of(l), l->tenant, 0, on_tick_done, l,
                        "UPDATE uploads SET rows_total = $2, rows_accepted = $3,"
                        " rows_rejected = $4, updated_at = now()"
                        " WHERE id = $1 AND status = 'processing'",
                        4, v) != 0) {
        l->tick_busy = 0;
        l->refs--;
    }
}

/* --- failure ------------------------------------------------------------------------------- */

struct fail_call {
    struct loader *l;
    int db_error;
};

static void on_failed_marked(void *arg, const struct pg_result_info *r)
{
    struct fail_call *f = arg;
    struct loader *l = f->l;
    if (r->status == PG_OK && PQntuples(r->res) == 1 && !PQgetisnull(r->res, 0, 0) && !f->db_error)
        answer(l, 202, PQgetvalue(r->res, 0, 0));
    else
        answer(l, 503, NULL);
    if (r->status != PG_OK)
        log_warn("upload %s: cannot record its failure (%s); it will be marked interrupted",
                 l->upload_id, r->message != NULL ? r->message : pg_status_str(r->status));
    free(f);
    finish(l);
}

/*
 * Ends the upload as failed: the transaction is rolled back (nothing imported), the error is
 * added to the report, and the row records it. db_error: the database failed (the owner
 * answers 503, and the body's hash is not kept, so the key may be used again).
 */
static void fail(struct loader *l, int db_error, const char *code, const char *message)
{
    char total[24], rejected[24], *errors = NULL;
    struct csv_upload_stats s;
    struct fail_call *f = NULL;

    if (l->phase == PH_DONE)
        return;
    l->phase = PH_DONE;
    txn_drop(l);
    if (l->tick != NULL)
        evtimer_del(l->tick);
    if (code != NULL)
        ingest_errors_add(l->errors, 0, code, message);
    validator_done(l);
    stats(l, &s);
    metric_inc(l->m_uploads, "failed");
    snprintf(total, sizeof(total), "%" PRIu64, s.rows_total);
    snprintf(rejected, sizeof(rejected), "%" PRIu64, s.rows_rejected + l->conflicts);
    errors = ingest_errors_json(l->errors);
    f = calloc(1, sizeof(*f));
    {
        /* The hash is kept only when the whole body decided the outcome. */
        const char *hash = !db_error && l->body_whole ? l->sha_hex : "";
        const char *v[] = {l->upload_id, total, rejected, errors != NULL ? errors : "[]", hash};
        if (f != NULL && pool_of(l) != NULL) {
            f->l = l;
            f->db_error = db_error;
            if (db_tenant_query(pool_of(l), l->tenant, 0, on_failed_marked, f,
                                "WITH u AS (UPDATE uploads t SET status = 'failed',"
                                "  rows_total = $2, rows_accepted = 0, rows_rejected = $3,"
                                "  errors = $4::jsonb, body_sha256 = decode(nullif($5, ''), 'hex'),"
                                "  finished_at = now(), updated_at = now()"
                                "  WHERE t.id = $1 AND t.status = 'processing'"
                                "  RETURNING " LOADER_UPLOAD_JSON " AS j)"
                                " SELECT coalesce((SELECT j FROM u),"
                                "  (SELECT " LOADER_UPLOAD_JSON " FROM uploads t WHERE t.id = $1))",
                                5, v) == 0) {
                free(errors);
                return;
            }
        }
    }
    free(errors);
    free(f);
    log_warn("upload %s: cannot record its failure; it will be marked interrupted", l->upload_id);
    answer(l, 503, NULL);
    /* phase is PH_DONE already: finish's work without its phase change */
    loader_unref(l);
}

/* A database call of the upload's own transaction failed. */
static void fail_db(struct loader *l, const struct pg_result_info *r, const char *what)
{
    log_emit(LOG_WARN, NULL, "upload failed in the database",
             json_pack("{s:s, s:s, s:s, s:s}", "upload_id", l->upload_id, "step", what, "error",
                       r->message != NULL ? r->message : pg_status_str(r->status), "sqlstate",
                       r->sqlstate != NULL ? r->sqlstate : ""));
    l->db_failed = 1;
    fail(l, 1, "database_error",
         "the database failed during the upload; nothing was imported; send it again");
}

/* --- the transaction's calls ------------------------------------------------------------------ */

/*
 * Every call on the transaction's connection holds a reference to the loader, so that its
 * callback, which may come after the connection was released (PG_ERR_CLOSED), always finds
 * the loader alive. Callbacks get the loader as their argument.
 */
struct txn_call {
    struct loader *l;
    pg_result_fn fn;
};

static void on_txn_call(void *arg, const struct pg_result_info *r)
{
    struct txn_call *c = arg;
    struct loader *l = c->l;
    pg_result_fn fn = c->fn;
    free(c);
    fn(l, r);
    loader_unref(l);
}

static struct txn_call *txn_call_new(struct loader *l, pg_result_fn fn)
{
    struct txn_call *c = l->txn != NULL ? malloc(sizeof(*c)) : NULL;
    if (c != NULL) {
        c->l = l;
        c->fn = fn;
    }
    return c;
}

static int txn_query(struct loader *l, int timeout_ms, pg_result_fn fn, const char *sql,
                     int nparams, const char *const *values)
{
    struct txn_call *c = txn_call_new(l, fn);
    if (c == NULL ||
        pg_conn_query(db_txn_conn(l->txn), timeout_ms, on_txn_call, c, sql, nparams, values) != 0) {
        free(c);
        return -1;
    }
    l->refs++;
    return 0;
}

static int txn_copy_end(struct loader *l, int timeout_ms, const char *errmsg, pg_result_fn fn)
{
    struct txn_call *c = txn_call_new(l, fn);
    if (c == NULL ||
        pg_conn_copy_end(db_txn_conn(l->txn), timeout_ms, errmsg, on_txn_call, c) != 0) {
        free(c);
        return -1;
    }
    l->refs++;
    return 0;
}

/* --- the COPY -------------------------------------------------------------------------------- */

static struct pg_conn *conn_of(struct loader *l)
{
    return db_txn_conn(l->txn);
}

/* Sends the buffered rows. 0, or -1 when the COPY broke (the upload then fails). */
static int copy_flush(struct loader *l)
{
    int rc;
    if (l->len == 0 || !l->copying)
        return 0;
    rc = pg_conn_copy_data(conn_of(l), l->buf, l->len);
    l->len = 0;
    if (rc < 0) {
        l->db_failed = 1;
        l->copying = 0;
        return -1;
    }
    if (rc == 1)
        l->held = 1;
    return 0;
}

static void on_copy_aborted(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    (void)r;
    /* Expected: the server reports the COPY it was told to abandon. The transaction goes. */
    if (l->phase < PH_DONE)
        txn_drop(l);
}

/* All-or-nothing met a bad row, or the file cannot be read on: nothing will be imported, so
 * the COPY stops now and the rest of the body is only validated and hashed. */
static void copy_abandon(struct loader *l)
{
    if (!l->copying)
        return;
    l->copying = 0;
    l->len = 0;
    l->held = 0;
    if (txn_copy_end(l, 0, "the upload was rejected", on_copy_aborted) != 0)
        txn_drop(l);
}

static int on_csv_tag(void *arg, const struct csv_tag_row *row)
{
    struct loader *l = arg;
    if (!l->copying)
        return 0;
    l->len += ingest_copy_row(l->buf + l->len, row);
    l->staged++;
    if (l->len >= COPY_CHUNK && copy_flush(l) != 0)
        return -1;
    return 0;
}

static int on_csv_error(void *arg, const struct csv_error *err)
{
    struct loader *l = arg;
    if (l->db_failed)
        return 0; /* the "stopped" of a COPY that broke: the database's error is reported */
    if (ingest_errors_add(l->errors, err->line, err->code, err->message) != 0)
        return -1;
    if (err->fatal || l->mode == INGEST_ALL_OR_NOTHING)
        copy_abandon(l);
    return 0;
}

static void on_drain(void *arg, enum pg_status status)
{
    struct loader *l = arg;
    if (!l->held)
        return; /* a drain that arrived after the COPY was ended */
    l->held = 0;
    if (status != PG_OK && l->phase == PH_BODY) {
        l->db_failed = 1; /* the next loader_feed says stop */
        l->copying = 0;
    }
    if (l->paused) {
        l->paused = 0;
        l->ev.resume(l->arg);
    }
}

int loader_feed(struct loader *l, const void *buf, size_t len)
{
    if (l->db_failed || l->phase != PH_BODY)
        return -1;
    EVP_DigestUpdate(l->sha, buf, len);
    /* After a fatal error the validator refuses more input; the body is still hashed. */
    (void)csv_upload_feed(l->csv, buf, len);
    if (l->db_failed)
        return -1;
    if (l->copying && copy_flush(l) != 0)
        return -1;
    if (l->held) {
        l->paused = 1;
        return 1;
    }
    return 0;
}

/* --- start ---------------------------------------------------------------------------------- */

static void on_setup_step(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (r->status != PG_OK) {
        if (!l->setup_failed)
            log_warn("upload %s: setup failed: %s", l->upload_id,
                     r->message != NULL ? r->message : pg_status_str(r->status));
        l->setup_failed = 1;
    }
}

static void on_described(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    json_t *info;
    if (r->status != PG_OK || PQntuples(r->res) != 1) {
        on_setup_step(arg, r->status != PG_OK
                               ? r
                               : &(struct pg_result_info){.status = PG_ERR_QUERY,
                                                          .message = "the batch is gone"});
        return;
    }
    /* The cache holds compact JSON, as the scan service writes it. */
    info = json_loads(PQgetvalue(r->res, 0, 4), 0, NULL);
    l->info = info != NULL ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);
}

/*
 * The row is still processing now that this transaction holds the upload's lock: a reader
 * that found the lock free before (the upload's start took longer than LOADER_GRACE_SQL) may
 * have marked it interrupted, and then the upload stops here, visibly, instead of importing a
 * whole body into a transaction that cannot complete.
 */
static void on_still_ours(void *arg, const struct pg_result_info *r)
{
    if (r->status == PG_OK && PQntuples(r->res) != 1)
        on_setup_step(arg, &(struct pg_result_info){
                               .status = PG_ERR_QUERY,
                               .message = "the upload was taken for dead before it started"});
    else
        on_setup_step(arg, r);
}

static void start_failed(struct loader *l)
{
    /* The owner hears started(0) instead of an answer; the row still records the failure. */
    l->owner = 0;
    l->ev.started(l->arg, 0);
    fail(l, 1, "database_error", "the upload could not start; nothing was imported; send it again");
}

static void copy_ready(struct loader *l, const struct pg_result_info *r)
{
    struct timeval tv = {PROGRESS_MS / 1000, (PROGRESS_MS % 1000) * 1000};
    if (r->status != PG_OK || l->setup_failed) {
        if (r->status != PG_OK)
            on_setup_step(l, r);
        start_failed(l);
        return;
    }
    l->phase = PH_BODY;
    l->copying = 1;
    evtimer_add(l->tick, &tv);
    l->ev.started(l->arg, 1);
}

/* The COPY's callbacks share one argument with its drain callback: the loader itself. */
static void on_copy_ready(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    copy_ready(l, r);
    loader_unref(l);
}

static int copy_start(struct loader *l)
{
    if (pg_conn_copy_start(db_txn_conn(l->txn), 0,
                           "COPY upload_staging (line, tag, serial) FROM STDIN (FORMAT binary)",
                           on_copy_ready, on_drain, l) != 0)
        return -1;
    l->refs++;
    return 0;
}

/* The statements that open the upload, sent together; each waits for the one before. */
static void setup_send(struct loader *l)
{
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%dms", l->stmt_ms);
    const char *v[] = {timeout, l->batch_id, l->upload_id};
    /*
     * The upload's liveness lock is taken (held until the transaction ends, see
     * LOADER_DEAD_SQL) and the row checked to be still processing under it; the batch row is
     * locked against deletion (as a foreign key check would), and described once for the cache.
     * tagproof.upload names the upload whose tags this transaction inserts: the tags' insert
     * policy checks each row against it (migrations/0009_tags_scope.sql).
     */
    static const char describe[] =
        "SELECT set_config('statement_timeout', $1, true), set_config('work_mem', '128MB', true),"
        " set_config('tagproof.upload', $3, true), " LOADER_LOCK_SQL(
            "$3::text") ","
                        " json_build_object('product', json_build_object('id', p.id, 'sku', p.sku,"
                        "  'name', p.name), 'batch', json_build_object('id', b.id, 'code', b.code),"
                        "  'factory', json_build_object('id', f.id, 'name', f.name))"
                        " FROM batches b JOIN products p ON p.id = b.product_id"
                        " JOIN factories f ON f.id = b.factory_id"
                        " WHERE b.id = $2 FOR KEY SHARE OF b";
    if (txn_query(l, 0, on_described, describe, 3, v) != 0 ||
        txn_query(l, 0, on_still_ours,
                  "SELECT 1 FROM uploads WHERE id = $1 AND status = 'processing'", 1, v + 2) != 0 ||
        txn_query(l, 0, on_setup_step,
                  "CREATE TEMPORARY TABLE upload_staging"
                  " (line bigint NOT NULL, tag uuid NOT NULL, serial text)",
                  0, NULL) != 0 ||
        copy_start(l) != 0) {
        log_warn("upload %s: cannot send its setup", l->upload_id);
        start_failed(l);
    }
}

static void on_start_delayed(evutil_socket_t fd, short what, void *arg)
{
    struct loader *l = arg;
    (void)fd;
    (void)what;
    if (l->phase != PH_DONE && l->txn != NULL)
        setup_send(l);
    loader_unref(l);
}

static void on_begun(void *arg, struct db_txn *t, const struct pg_result_info *failure)
{
    struct loader *l = arg;
    if (t == NULL) {
        log_warn("upload %s: no transaction: %s", l->upload_id,
                 failure != NULL && failure->message != NULL ? failure->message : "?");
        start_failed(l);
        return;
    }
    l->txn = t;
    /*
     * Tests only (TAGPROOF_TEST_UPLOAD_START_DELAY_MS): a start slower than the liveness
     * grace, as a saturated pool or a failing-over database can make it.
     */
    const char *delay = getenv("TAGPROOF_TEST_UPLOAD_START_DELAY_MS");
    long ms = delay != NULL ? strtol(delay, NULL, 10) : 0;
    if (ms > 0) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        l->refs++;
        if (event_base_once(l->w->base, -1, EV_TIMEOUT, on_start_delayed, l, &tv) == 0)
            return;
        l->refs--;
    }
    setup_send(l);
}

struct loader *loader_start(const struct loader_params *p, const struct loader_events *ev,
                            void *arg)
{
    struct loader *l = calloc(1, sizeof(*l));
    struct csv_upload_config cc;

    if (l == NULL)
        return NULL;
    l->refs = 1;
    l->owner = 1;
    l->t_start = mono_ms();
    l->w = p->w;
    l->ev = *ev;
    l->arg = arg;
    l->mode = p->mode;
    l->ttl_s = p->cache_ttl_s;
    l->stmt_ms = p->statement_timeout_ms;
    l->m_uploads = p->m_uploads;
    l->m_rows = p->m_rows;
    snprintf(l->tenant, sizeof(l->tenant), "%s", p->tenant);
    snprintf(l->upload_id, sizeof(l->upload_id), "%s", p->upload_id);
    snprintf(l->factory_id, sizeof(l->factory_id), "%s", p->factory_id);
    snprintf(l->batch_id, sizeof(l->batch_id), "%s", p->batch_id);
    snprintf(l->product_id, sizeof(l->product_id), "%s", p->product_id);
    csv_upload_config_default(&cc);
    l->cap = COPY_CHUNK + INGEST_COPY_ROW_MAX(cc.max_serial_bytes);
    l->buf = malloc(l->cap);
    if (l->buf != NULL) {
        memcpy(l->buf, INGEST_COPY_HEADER, INGEST_COPY_HEADER_LEN); /* goes with the first rows */
        l->len = INGEST_COPY_HEADER_LEN;
    }
    l->csv = csv_upload_new(&cc, on_csv_tag, on_csv_error, l);
    l->errors = ingest_errors_new(INGEST_MAX_ERRORS);
    l->sha = EVP_MD_CTX_new();
    l->tick = event_new(p->w->base, -1, EV_PERSIST, on_tick, l);
    if (l->buf == NULL || l->csv == NULL || l->errors == NULL || l->sha == NULL ||
        l->tick == NULL || EVP_DigestInit_ex(l->sha, EVP_sha256(), NULL) != 1 ||
        pool_of(l) == NULL || db_txn_begin(pool_of(l), l->tenant, 0, on_begun, l) != 0) {
        loader_unref(l);
        return NULL;
    }
    return l;
}

/* --- the end of the body --------------------------------------------------------------------- */

static void on_answer(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (r->status == PG_OK && PQntuples(r->res) == 1 && !PQgetisnull(r->res, 0, 0))
        answer(l, 202, PQgetvalue(r->res, 0, 0));
    else
        answer(l, 202, NULL); /* it goes on: the owner answers with what it knows */
    loader_unref(l);
}

/* The body is in the staging table: the owner hears of it, the merge starts. */
static void on_copy_done(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    char total[24], accepted[24], rejected[24], staged[24];
    if (l->phase != PH_FINISHING)
        return;
    if (r->status != PG_OK) {
        fail_db(l, r, "copy");
        return;
    }
    snprintf(staged, sizeof(staged), "%" PRIu64, l->staged);
    if (strcmp(PQcmdTuples((PGresult *)r->res), staged) != 0) {
        log_error("upload %s: COPY took %s rows, %s were sent", l->upload_id,
                  PQcmdTuples((PGresult *)r->res), staged);
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_QUERY, .message = "row count"},
                "copy");
        return;
    }
    l->t_copied = mono_ms();
    counts(l, total, accepted, rejected);
    const char *v[] = {l->upload_id, total, accepted, rejected};
    l->refs++;
    if (pool_of(l) == NULL ||
        db_tenant_query(pool_of(l), l->tenant, 0, on_answer, l,
                        "WITH u AS (UPDATE uploads t SET rows_total = $2, rows_accepted = $3,"
                        "  rows_rejected = $4, updated_at = now()"
                        "  WHERE t.id = $1 AND t.status = 'processing'"
                        "  RETURNING " LOADER_UPLOAD_JSON " AS j)"
                        " SELECT coalesce((SELECT j FROM u),"
                        "  (SELECT " LOADER_UPLOAD_JSON " FROM uploads t WHERE t.id = $1))",
                        4, v) != 0) {
        l->refs--;
        answer(l, 202, NULL);
    }
    merge(l);
}

void loader_end(struct loader *l, int complete)
{
    unsigned char md[32];
    unsigned n = 0;

    if (l->ended)
        return;
    l->ended = 1;
    if (l->phase != PH_BODY) {
        /* The loader failed already (a COPY that broke): its answer is on its way. */
        if (l->phase == PH_DONE && l->owner)
            answer(l, 503, NULL);
        return;
    }
    l->phase = PH_FINISHING;
    l->t_body = mono_ms();
    if (l->db_failed) {
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "COPY broke"},
                "copy");
        return;
    }
    if (!complete) {
        fail(l, 0, "body_truncated",
             "the body ended before all of it arrived (the client went away or sent less than "
             "its Content-Length); nothing was imported");
        return;
    }
    l->body_whole = 1;
    EVP_DigestFinal_ex(l->sha, md, &n);
    for (unsigned i = 0; i < n && i < 32; i++)
        snprintf(l->sha_hex + 2 * i, 3, "%02x", md[i]);
    int bad = csv_upload_finish(l->csv) != 0 ||
              (l->mode == INGEST_ALL_OR_NOTHING && ingest_errors_count(l->errors) > 0);
    validator_done(l);
    if (bad) {
        /* The file decided: failed with its errors (the COPY was abandoned already). */
        copy_abandon(l);
        fail(l, 0, NULL, NULL);
        return;
    }
    if (l->copying) { /* room for it: the buffer holds less than a chunk here */
        memcpy(l->buf + l->len, INGEST_COPY_TRAILER, INGEST_COPY_TRAILER_LEN);
        l->len += INGEST_COPY_TRAILER_LEN;
    }
    if (copy_flush(l) != 0 || txn_copy_end(l, l->stmt_ms + 5000, NULL, on_copy_done) != 0) {
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "COPY broke"},
                "copy");
        return;
    }
    l->copying = 0;
    l->held = 0;
}

/* --- the merge, in the COPY's transaction ------------------------------------------------------
 */

/*
 * The leaves of the upload's tags (SPEC §7), queued as one log entry naming the upload: the
 * anchor's leader expands it into one appended leaf a tag, in tag order, when it reaches it
 * (migrations/0007_log_queue.sql). $1 factory, $2 batch, `upload` the upload's parameter.
 */
#define QUEUE_LEAVES(upload)                                                                       \
    "INSERT INTO log_entries (kind, factory_id, batch_id, upload_id, record)"                      \
    " SELECT 'upload', $1::text::uuid, $2::text::uuid, " upload "::text::uuid, ''::bytea"
#define TAGS_INSERT                                                                                \
    "INSERT INTO tags (tag_id, factory_id, batch_id, product_id, serial, upload_id, "              \
    "registered_at)"                                                                               \
    " SELECT s.tag, $1::text::uuid, $2::text::uuid, $3::text::uuid, s.serial, $4::text::uuid,"     \
    "  date_trunc('second', now()) FROM upload_staging s ORDER BY s.tag"

static int long_ms(struct loader *l)
{
    return l->stmt_ms + 5000; /* the server's statement_timeout comes first */
}

static void on_merge_step(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (r->status != PG_OK && l->phase == PH_FINISHING)
        fail_db(l, r, "merge");
}

static void fill_start(struct loader *l);

static void on_commit(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (l->phase != PH_FINISHING)
        return;
    /* A COMMIT of a transaction that had failed answers ROLLBACK without an error. */
    if (r->status != PG_OK || strcmp(PQcmdStatus((PGresult *)r->res), "COMMIT") != 0) {
        /* If the connection broke during COMMIT the outcome is unknown; marking it failed
         * only touches a row still processing, so a commit that did happen stands. */
        fail_db(l,
                r->status != PG_OK
                    ? r
                    : &(struct pg_result_info){.status = PG_ERR_QUERY, .message = "rolled back"},
                "commit");
        return;
    }
    l->t_commit = mono_ms();
    metric_inc(l->m_uploads, "completed");
    metric_add(l->m_rows, (double)l->imported, "imported");
    metric_add(l->m_rows, (double)(l->st.rows_rejected + l->conflicts), "rejected");
    /* Where the time went: the body (streamed into the COPY), the COPY's end, the tags,
     * their leaves, and the final update with the COMMIT. */
    log_emit(LOG_INFO, NULL, "upload completed",
             json_pack("{s:s, s:s, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I}}", "upload_id",
                       l->upload_id, "batch_id", l->batch_id, "rows_total",
                       (json_int_t)l->st.rows_total, "rows_imported", (json_int_t)l->imported,
                       "rows_rejected", (json_int_t)(l->st.rows_rejected + l->conflicts), "ms",
                       "body", (json_int_t)(l->t_body - l->t_start), "copy_end",
                       (json_int_t)(l->t_copied - l->t_body), "tags",
                       (json_int_t)(l->t_tags - l->t_copied), "leaves",
                       (json_int_t)(l->t_leaves - l->t_tags), "commit",
                       (json_int_t)(l->t_commit - l->t_leaves)));
    fill_start(l);
}

static void on_completed(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (l->phase != PH_FINISHING)
        return;
    if (r->status != PG_OK) {
        fail_db(l, r, "complete");
        return;
    }
    if (strcmp(PQcmdTuples((PGresult *)r->res), "1") != 0) {
        /* Someone took the upload for dead (its heartbeat stopped for minutes while this
         * transaction held its lock): it stays failed, and its tags go with this transaction. */
        log_warn("upload %s: marked interrupted while it ran; rolled back", l->upload_id);
        finish(l);
        return;
    }
    if (txn_query(l, long_ms(l), on_commit, "COMMIT", 0, NULL) != 0)
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "send"},
                "commit");
}

/* The upload's final state, in its own transaction: completed exactly when the tags are. */
static void complete(struct loader *l)
{
    char total[24], accepted[24], rejected[24], *errors = ingest_errors_json(l->errors);
    snprintf(total, sizeof(total), "%" PRIu64, l->st.rows_total);
    snprintf(accepted, sizeof(accepted), "%" PRIu64, l->imported);
    snprintf(rejected, sizeof(rejected), "%" PRIu64, l->st.rows_rejected + l->conflicts);
    const char *v[] = {l->upload_id, total, accepted, rejected, errors != NULL ? errors : "[]",
                       l->sha_hex};
    int rc = txn_query(l, 0, on_completed,
                       "UPDATE uploads SET status = 'completed', rows_total = $2,"
                       " rows_accepted = $3, rows_rejected = $4, errors = $5::jsonb,"
                       " body_sha256 = decode($6, 'hex'), finished_at = clock_timestamp(),"
                       " updated_at = clock_timestamp() WHERE id = $1 AND status = 'processing'",
                       6, v);
    free(errors);
    if (rc != 0)
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "send"},
                "complete");
}

static void on_logged(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (l->phase != PH_FINISHING)
        return;
    if (r->status != PG_OK) {
        fail_db(l, r, "log_entries");
        return;
    }
    l->t_leaves = mono_ms();
    complete(l);
}

/* The slow path's answer: how many were inserted, and the first conflicts by line. */
static void on_slow_merged(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    char msg[96];
    if (l->phase != PH_FINISHING)
        return;
    if (r->status != PG_OK || PQntuples(r->res) < 1) {
        fail_db(l, r, "merge");
        return;
    }
    l->imported = strtoull(PQgetvalue(r->res, 0, 0), NULL, 10);
    l->conflicts = l->staged - l->imported;
    l->t_tags = l->t_leaves = mono_ms();
    for (int i = 0; i < PQntuples(r->res); i++) {
        if (PQgetisnull(r->res, i, 1))
            continue;
        snprintf(msg, sizeof(msg), "tag_id %s is already registered", PQgetvalue(r->res, i, 2));
        ingest_errors_add(l->errors, strtoull(PQgetvalue(r->res, i, 1), NULL, 10),
                          "already_registered", msg);
    }
    if (l->conflicts > 0 && l->mode == INGEST_ALL_OR_NOTHING) {
        fail(l, 0, NULL, NULL);
        return;
    }
    complete(l);
}

/*
 * Some staged tags are registered already, perhaps by another factory: row-level security
 * hides those rows, but the primary key still refuses them. The rows that ON CONFLICT DO
 * NOTHING did not insert are the conflicts. The inserted ones get their leaves queued (in
 * all-or-nothing mode a conflict then fails the upload, and the transaction goes); with
 * skip-invalid the others leave the staging table so that the cache fill skips them.
 */
static void slow_merge(struct loader *l)
{
    const char *v[] = {l->factory_id, l->batch_id, l->product_id, l->upload_id,
                       l->mode == INGEST_SKIP_INVALID ? "true" : "false"};
    if (txn_query(l, 0, on_merge_step, "ROLLBACK TO SAVEPOINT merge", 0, NULL) != 0 ||
        txn_query(
            l, long_ms(l), on_slow_merged,
            "WITH ins AS (" TAGS_INSERT " ON CONFLICT (tag_id) DO NOTHING"
            "  RETURNING tag_id),"
            " le AS (" QUEUE_LEAVES("$4") " WHERE EXISTS (SELECT 1 FROM ins)),"
                                          " gone AS (DELETE FROM upload_staging s WHERE $5::boolean"
                                          "  AND NOT EXISTS (SELECT 1 FROM ins i WHERE i.tag_id = "
                                          "s.tag))"
                                          " SELECT n.c, x.line, x.tag"
                                          " FROM (SELECT count(*) AS c FROM ins) n"
                                          " LEFT JOIN LATERAL (SELECT s.line, s.tag::text AS tag"
                                          "  FROM upload_staging s WHERE NOT EXISTS"
                                          "  (SELECT 1 FROM ins i WHERE i.tag_id = s.tag)"
                                          "  ORDER BY s.line LIMIT 1000) x ON true",
            5, v) != 0)
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "send"},
                "merge");
}

static void on_tags_inserted(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (l->phase != PH_FINISHING)
        return;
    if (r->status == PG_ERR_QUERY && r->sqlstate != NULL && strcmp(r->sqlstate, "23505") == 0) {
        slow_merge(l);
        return;
    }
    if (r->status != PG_OK) {
        fail_db(l, r, "tags");
        return;
    }
    l->imported = strtoull(PQcmdTuples((PGresult *)r->res), NULL, 10);
    l->t_tags = mono_ms();
    if (l->imported == 0) {
        on_logged(l, r); /* nothing imported, nothing to log */
        return;
    }
    const char *v[] = {l->factory_id, l->batch_id, l->upload_id};
    if (txn_query(l, 0, on_logged, QUEUE_LEAVES("$3"), 3, v) != 0)
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "send"},
                "log_entries");
}

/*
 * The fast path first: plain INSERT ... SELECT, which costs far less than ON CONFLICT's
 * speculative insertion for each row. Tags already registered are rare; when there is one,
 * the savepoint lets the slow path start over without the lost work's side effects.
 */
static void merge(struct loader *l)
{
    const char *v[] = {l->factory_id, l->batch_id, l->product_id, l->upload_id};
    if (txn_query(l, 0, on_merge_step, "SAVEPOINT merge", 0, NULL) != 0 ||
        txn_query(l, long_ms(l), on_tags_inserted, TAGS_INSERT, 4, v) != 0)
        fail_db(l, &(struct pg_result_info){.status = PG_ERR_CONNECTION, .message = "send"},
                "merge");
}

/* --- the cache fill, after the commit ----------------------------------------------------------
 */

static void fill_next(struct loader *l);

static void fill_done(struct loader *l)
{
    log_emit(LOG_INFO, NULL, "upload cached",
             json_pack("{s:s, s:I, s:b}", "upload_id", l->upload_id, "tags_cached",
                       (json_int_t)l->filled, "complete", !l->fill_failed));
    finish(l);
}

static void on_filled(void *arg, enum redis_status st, const redisReply *reply)
{
    struct loader *l = arg;
    if (st != REDIS_STATUS_OK || reply == NULL || reply->type != REDIS_REPLY_INTEGER)
        l->fill_failed = 1;
    else
        l->filled += (uint64_t)reply->integer;
    l->fill_pending = 0;
    if (l->fill_failed)
        fill_done(l);
    else
        fill_next(l);
}

/*
 * One page in one command: the same hash the scan service writes when it fills from
 * PostgreSQL (scan/tagcache.c) — d the description, b the batch; the first-scan field is the
 * scan's own business — and its expiry, for every key. A script holds Redis for its whole
 * run (about 11 µs a key, measured): 250 keys keep the scans waiting at most about 3 ms, and
 * the round trip to the next page lets them in.
 */
static const char fill_script[] = "for _, k in ipairs(KEYS) do\n"
                                  "  redis.call('HSET', k, 'd', ARGV[1], 'b', ARGV[2])\n"
                                  "  redis.call('EXPIRE', k, ARGV[3])\n"
                                  "end\n"
                                  "return #KEYS\n";

static void on_fetched(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    char ttl[16], nkeys[16];
    const char **argv = NULL;
    char *keys = NULL;
    int n;
    if (l->phase != PH_FILLING)
        return;
    if (r->status != PG_OK || l->fill_failed || l->w->redis == NULL) {
        l->fill_failed = 1;
        fill_done(l);
        return;
    }
    n = PQntuples(r->res);
    if (n == 0) {
        fill_done(l);
        return;
    }
    snprintf(ttl, sizeof(ttl), "%d", l->ttl_s);
    snprintf(nkeys, sizeof(nkeys), "%d", n);
    argv = calloc((size_t)n + 6, sizeof(*argv));
    keys = malloc((size_t)n * 48);
    if (argv == NULL || keys == NULL) {
        l->fill_failed = 1;
    } else {
        argv[0] = "EVAL";
        argv[1] = fill_script;
        argv[2] = nkeys;
        for (int i = 0; i < n; i++) {
            char *k = keys + (size_t)i * 48;
            snprintf(k, 48, "tp:t:%s", PQgetvalue(r->res, i, 0));
            argv[3 + i] = k;
        }
        argv[3 + n] = l->info;
        argv[4 + n] = l->batch_id;
        argv[5 + n] = ttl;
        /* redis_command copies the arguments. */
        if (redis_command(l->w->redis, FILL_TIMEOUT_MS, on_filled, l, n + 6, argv, NULL) != 0)
            l->fill_failed = 1;
        else
            l->fill_pending = 1;
    }
    free(argv);
    free(keys);
    if (l->fill_pending == 0)
        fill_done(l);
}

static void fill_next(struct loader *l)
{
    if (txn_query(l, 0, on_fetched, "FETCH " FILL_PAGE " FROM upload_fill", 0, NULL) != 0) {
        l->fill_failed = 1;
        fill_done(l);
    }
}

static void on_fill_step(void *arg, const struct pg_result_info *r)
{
    struct loader *l = arg;
    if (r->status != PG_OK)
        l->fill_failed = 1; /* the FETCH after it fails too, and ends the fill */
}

/*
 * Committed: the upload is completed whatever happens next. Its tags go to Redis so their
 * first scans hit the cache, read back from the staging table, which lives on in this session
 * until the connection is released (the release discards temporary tables).
 */
static void fill_start(struct loader *l)
{
    l->phase = PH_FILLING;
    if (l->tick != NULL)
        evtimer_del(l->tick);
    if (l->w->redis == NULL || l->info == NULL || l->imported == 0) {
        fill_done(l);
        return;
    }
    if (txn_query(l, 0, on_fill_step, "BEGIN", 0, NULL) != 0 ||
        txn_query(l, 0, on_fill_step,
                  "DECLARE upload_fill NO SCROLL CURSOR FOR"
                  " SELECT tag::text FROM upload_staging",
                  0, NULL) != 0) {
        l->fill_failed = 1;
        fill_done(l);
        return;
    }
    fill_next(l);
}
