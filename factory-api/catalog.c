/*
 * catalog: a factory's products and production batches, what the API knows of one tag, a
 * batch's scan statistics, and recalls (SPEC §6). As in tenants.c, C checks the input and who
 * may ask, and one SQL statement per request does the work and builds the JSON answer; the
 * tenant of the transaction (db.c) and row-level security keep each factory to its own rows.
 * A recall also marks its batch in Redis for the scan path, and one worker re-marks every
 * recalled batch every few seconds so that a mark Redis missed or lost comes back.
 */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "api.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "service.h"

/* How often worker 0 re-marks recalled batches in Redis, and how many keys go in one MSET. */
#define RECALL_RECONCILE_S 5
#define RECALL_MSET_KEYS 256
/* A recall waits this long for Redis to take the mark before it answers anyway. */
#define RECALL_REDIS_TIMEOUT_MS 500

#define RECALL_METRIC "tagproof_recall_marks_total"
#define RECALL_METRIC_HELP                                                                         \
    "Recall marks written to Redis for the scan path: a recall's SET or a reconciler round, by "   \
    "writer and outcome"

/* --- input ------------------------------------------------------------------------------------ */

/*
 * A text member of body of 1 (0 when optional) to max_chars characters — characters as the
 * CHECK constraints count them, not bytes; jansson has already refused invalid UTF-8. NULL
 * after answering 422; "" when optional and absent.
 */
static const char *member_text(struct http_req *req, json_t *body, const char *name, int required,
                               size_t max_chars)
{
    json_t *v = json_object_get(body, name);
    const char *s = json_string_value(v);
    size_t chars = 0;
    char detail[160];

    if (v == NULL && !required)
        return "";
    if (s != NULL && strlen(s) == json_string_length(v)) {
        for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++)
            chars += (*c & 0xc0) != 0x80;
        if ((chars > 0 || !required) && chars <= max_chars)
            return s;
    }
    snprintf(detail, sizeof(detail), "\"%s\" must be a string of %d to %zu characters", name,
             required ? 1 : 0, max_chars);
    http_reply_problem(req, 422, NULL, NULL, detail, NULL);
    return NULL;
}

/* A UUID member of body, lower-cased into out ("" when optional and absent). 0, or -1 after 422. */
static int member_uuid(struct http_req *req, json_t *body, const char *name, int required,
                       char out[UUID_STR_LEN + 1])
{
    json_t *v = json_object_get(body, name);
    const char *s = json_string_value(v);
    char detail[96];

    out[0] = '\0';
    if (v == NULL && !required)
        return 0;
    if (s != NULL && uuid_canonical(s, json_string_length(v), out) == 0)
        return 0;
    snprintf(detail, sizeof(detail), "\"%s\" must be a UUID", name);
    http_reply_problem(req, 422, NULL, NULL, detail, NULL);
    return -1;
}

/* An optional UUID in the query string (a list filter). 0, or -1 after 400. */
static int query_uuid(struct http_req *req, const char *name, char out[UUID_STR_LEN + 1])
{
    const char *s = http_req_query(req, name);
    char detail[96];

    out[0] = '\0';
    if (s == NULL || uuid_canonical(s, strlen(s), out) == 0)
        return 0;
    snprintf(detail, sizeof(detail), "%s is not a UUID", name);
    http_reply_problem(req, 400, NULL, NULL, detail, NULL);
    return -1;
}

/*
 * The application's own tenant filter, beneath which row-level security holds anyway: ""
 * for an admin, else the caller's factory. Every statement below takes it as a parameter.
 */
static const char *own_factory(const struct principal *p)
{
    return p->role == JWT_ROLE_ADMIN ? "" : p->factory_id;
}

/* --- products --------------------------------------------------------------------------------- */

#define PRODUCT_JSON                                                                               \
    "json_build_object('id', t.id, 'factory_id', t.factory_id, 'sku', t.sku, 'name', t.name,"      \
    " 'created_at', t.created_at)"

static void product_create(struct http_req *req, const struct principal *p)
{
    json_t *body = api_body_object(req);
    const char *sku, *name;
    char id[UUID_STR_LEN + 1], fid[UUID_STR_LEN + 1];

    if (body == NULL)
        return;
    if ((sku = member_text(req, body, "sku", 1, 100)) == NULL ||
        (name = member_text(req, body, "name", 1, 200)) == NULL ||
        member_uuid(req, body, "factory_id", 0, fid) != 0)
        goto out;
    if (p->role == JWT_ROLE_ADMIN && *fid == '\0') {
        http_reply_problem(req, 422, NULL, NULL, "an admin names the product's \"factory_id\"",
                           NULL);
        goto out;
    }
    if (p->role != JWT_ROLE_ADMIN) {
        /* Naming another factory is asking for a resource the caller cannot see. */
        if (*fid != '\0' && strcmp(fid, p->factory_id) != 0) {
            http_reply_problem(req, 404, NULL, NULL, "no such factory", NULL);
            goto out;
        }
        snprintf(fid, sizeof(fid), "%s", p->factory_id);
    }
    api_new_id(id);
    {
        const char *v[] = {id, fid, sku, name};
        api_query_json(req, p, 201, "no such factory",
                       "INSERT INTO products AS t (id, factory_id, sku, name)"
                       " SELECT $1, f.id, $3, $4 FROM factories f WHERE f.id = $2::uuid"
                       " RETURNING " PRODUCT_JSON,
                       4, v);
    }
out:
    json_decref(body);
}

static void product_list(struct http_req *req, const struct principal *p)
{
    char limit[8], cursor[UUID_STR_LEN + 1], want[UUID_STR_LEN + 1], sql[1536];

    if (api_page(req, limit, cursor) != 0 || query_uuid(req, "factory_id", want) != 0)
        return;
    if (api_list_sql(sql, sizeof(sql), "products",
                     "($3::text = '' OR factory_id = $3::uuid)"
                     " AND ($4::text = '' OR factory_id = $4::uuid)",
                     PRODUCT_JSON) != 0) {
        http_reply_problem(req, 500, NULL, NULL, "internal error", NULL);
        return;
    }
    const char *v[] = {cursor, limit, own_factory(p), want};
    api_query_json(req, p, 200, "not found", sql, 4, v);
}

static void product_get(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id, own_factory(p)};
    api_query_json(req, p, 200, "no such product",
                   "SELECT " PRODUCT_JSON " FROM products t"
                   " WHERE t.id = $1::uuid AND ($2::text = '' OR t.factory_id = $2::uuid)",
                   2, v);
}

/* --- batches ---------------------------------------------------------------------------------- */

#define BATCH_MEMBERS                                                                              \
    "'id', t.id, 'factory_id', t.factory_id, 'product_id', t.product_id, 'code', t.code,"          \
    " 'created_at', t.created_at, 'revoked_at', t.revoked_at"
#define BATCH_JSON "json_build_object(" BATCH_MEMBERS ")"

static void batch_create(struct http_req *req, const struct principal *p)
{
    json_t *body = api_body_object(req);
    const char *code;
    char id[UUID_STR_LEN + 1], product[UUID_STR_LEN + 1];

    if (body == NULL)
        return;
    if (member_uuid(req, body, "product_id", 1, product) != 0 ||
        (code = member_text(req, body, "code", 1, 100)) == NULL)
        goto out;
    api_new_id(id);
    {
        /* The batch belongs to its product's factory; another factory's product is not found. */
        const char *v[] = {id, product, code, own_factory(p)};
        api_query_json(req, p, 201, "no such product",
                       "INSERT INTO batches AS t (id, factory_id, product_id, code)"
                       " SELECT $1, p.factory_id, p.id, $3 FROM products p"
                       "  WHERE p.id = $2::uuid AND ($4::text = '' OR p.factory_id = $4::uuid)"
                       " RETURNING " BATCH_JSON,
                       4, v);
    }
out:
    json_decref(body);
}

static void batch_list(struct http_req *req, const struct principal *p)
{
    char limit[8], cursor[UUID_STR_LEN + 1], want[UUID_STR_LEN + 1], product[UUID_STR_LEN + 1];
    char sql[1536];

    if (api_page(req, limit, cursor) != 0 || query_uuid(req, "factory_id", want) != 0 ||
        query_uuid(req, "product_id", product) != 0)
        return;
    if (api_list_sql(sql, sizeof(sql), "batches",
                     "($3::text = '' OR factory_id = $3::uuid)"
                     " AND ($4::text = '' OR factory_id = $4::uuid)"
                     " AND ($5::text = '' OR product_id = $5::uuid)",
                     BATCH_JSON) != 0) {
        http_reply_problem(req, 500, NULL, NULL, "internal error", NULL);
        return;
    }
    const char *v[] = {cursor, limit, own_factory(p), want, product};
    api_query_json(req, p, 200, "not found", sql, 5, v);
}

static void batch_get(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id, own_factory(p)};
    /*
     * No tag count here: counting a batch of a million tags reads a million rows (most of a
     * second), which a plain read should not cost; GET .../stats counts.
     */
    api_query_json(req, p, 200, "no such batch",
                   "SELECT json_build_object(" BATCH_MEMBERS ","
                   "  'product', json_build_object('id', pr.id, 'sku', pr.sku, 'name', pr.name))"
                   " FROM batches t JOIN products pr ON pr.id = t.product_id"
                   " WHERE t.id = $1::uuid AND ($2::text = '' OR t.factory_id = $2::uuid)",
                   2, v);
}

/*
 * Scan statistics: all-time totals from tags and scan_events, and the scans of each of the
 * last 30 days (UTC, today included, days without scans as zeros) for charts. scan_events is
 * filled by the scan service's sink, so a scan shows here a few seconds after it was answered.
 */
static const char sql_stats[] =
    "WITH b AS (SELECT id FROM batches"
    "   WHERE id = $1::uuid AND ($2::text = '' OR factory_id = $2::uuid)),"
    " tg AS (SELECT count(*) AS tags, count(first_scanned_at) AS scanned FROM tags"
    "   WHERE batch_id = (SELECT id FROM b)),"
    " ev AS (SELECT count(*) AS scans,"
    "   count(*) FILTER (WHERE verdict = 'suspicious') AS suspicious,"
    "   count(*) FILTER (WHERE verdict = 'revoked') AS revoked"
    "   FROM scan_events WHERE batch_id = (SELECT id FROM b)),"
    " today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d),"
    " days AS (SELECT (today.d - k) AS day FROM today, generate_series(0, 29) k),"
    " per AS (SELECT (scanned_at AT TIME ZONE 'UTC')::date AS day, count(*) AS scans,"
    "   count(*) FILTER (WHERE verdict = 'suspicious') AS suspicious"
    "   FROM scan_events, today WHERE batch_id = (SELECT id FROM b)"
    "    AND scanned_at >= (today.d - 29)::timestamp AT TIME ZONE 'UTC' GROUP BY 1)"
    " SELECT json_build_object('batch_id', b.id, 'tags', tg.tags, 'scanned_tags', tg.scanned,"
    "  'scans', ev.scans, 'suspicious_scans', ev.suspicious, 'revoked_scans', ev.revoked,"
    "  'scans_per_day', (SELECT json_agg(json_build_object('date', days.day,"
    "     'scans', coalesce(per.scans, 0), 'suspicious', coalesce(per.suspicious, 0))"
    "    ORDER BY days.day) FROM days LEFT JOIN per USING (day)))"
    " FROM b, tg, ev";

static void batch_stats(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id, own_factory(p)};
    api_query_json(req, p, 200, "no such batch", sql_stats, 2, v);
}

/* --- recalls ---------------------------------------------------------------------------------- */

/*
 * One statement, so one transaction: lock the batch's row (reading its latest version, so
 * two recalls at once agree), set revoked_at only if it is unset, and queue the revocation
 * leaf (SPEC §7) only when this call set it. A second recall changes nothing and answers the
 * first one's time. revoked_at is whole seconds: the leaf's time is exactly that value.
 */
static const char sql_revoke[] =
    "WITH old AS (SELECT * FROM batches"
    "   WHERE id = $1::uuid AND ($2::text = '' OR factory_id = $2::uuid) FOR UPDATE),"
    " upd AS (UPDATE batches b SET revoked_at = date_trunc('second', now()) FROM old"
    "   WHERE b.id = old.id AND old.revoked_at IS NULL RETURNING b.id, b.factory_id, b.revoked_at),"
    " leaf AS (INSERT INTO log_entries (kind, factory_id, batch_id, record)"
    "   SELECT 'revoke', u.factory_id, u.id, convert_to('tagproof/revoke/v1' || E'\\n' || u.id"
    "    || E'\\n' || u.factory_id || E'\\n'"
    "    || to_char(u.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || E'\\n',"
    "    'UTF8') FROM upd u RETURNING id)"
    " SELECT t.id, json_build_object('id', t.id, 'factory_id', t.factory_id,"
    "  'product_id', t.product_id, 'code', t.code, 'created_at', t.created_at,"
    "  'revoked_at', coalesce(u.revoked_at, t.revoked_at),"
    "  'recall', json_build_object('first', u.id IS NOT NULL,"
    "   'log_entry_id', (SELECT id FROM leaf)))"
    " FROM old t LEFT JOIN upd u ON true";

struct recall {
    struct http_req *req;
    struct metric *marks;
    char *doc;
    size_t len;
    char batch[UUID_STR_LEN + 1];
};

static void recall_marked(void *arg, enum redis_status st, const redisReply *reply)
{
    struct recall *r = arg;

    (void)reply;
    if (st == REDIS_STATUS_OK) {
        metric_inc(r->marks, "recall", "ok");
    } else {
        /* The recall is committed; the reconciler marks it once Redis takes writes again. */
        metric_inc(r->marks, "recall", "failed");
        log_warn("recall of batch %s stored, but Redis did not take its mark (%s): the "
                 "reconciler sets it within %d s of Redis answering",
                 r->batch, redis_status_str(st), RECALL_RECONCILE_S);
    }
    http_reply(r->req, 200, "application/json", r->doc, r->len);
    free(r->doc);
    free(r);
}

static void recall_stored(struct http_req *req, const PGresult *res, void *arg)
{
    struct recall *r = NULL;
    char key[64];

    (void)arg;
    if (PQntuples(res) < 1) {
        http_reply_problem(req, 404, NULL, NULL, "no such batch", NULL);
        return;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->doc = strdup(PQgetvalue(res, 0, 1))) == NULL) {
        free(r);
        /* Committed all the same: the reconciler will mark the batch. */
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    r->req = req;
    r->len = strlen(r->doc);
    r->marks = metrics_counter(service_metrics(service_worker(req)->svc), RECALL_METRIC,
                               RECALL_METRIC_HELP, "writer,result");
    snprintf(r->batch, sizeof(r->batch), "%s", PQgetvalue(res, 0, 0));
    /* Marked again also on a repeated recall: it heals a mark that was lost. */
    snprintf(key, sizeof(key), "tp:rv:%s", r->batch);
    if (service_worker(req)->redis == NULL ||
        redis_commandf(service_worker(req)->redis, RECALL_REDIS_TIMEOUT_MS, recall_marked, r,
                       "SET %s 1", key) != 0)
        recall_marked(r, REDIS_STATUS_DISCONNECTED, NULL);
}

static void batch_revoke(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id, own_factory(p)};
    api_query(req, p, recall_stored, NULL, sql_revoke, 2, v);
}

/* --- tags ------------------------------------------------------------------------------------- */

/*
 * A tag with its batch, product and where its registration leaf stands in the Merkle log:
 * stage unlogged (no log entry), queued (no leaf index yet), appended (a leaf, no checkpoint
 * covers it), checkpointed (a signed checkpoint covers it, no confirmed anchor yet) or
 * anchored (a confirmed anchor's checkpoint covers it); status is SPEC §5's pending or
 * anchored. The first covering checkpoint and confirmed anchor are the ones shown.
 */
static const char sql_tag[] =
    "SELECT json_build_object('tag_id', t.tag_id, 'factory_id', t.factory_id,"
    "  'batch_id', t.batch_id, 'product_id', t.product_id, 'serial', t.serial,"
    "  'upload_id', t.upload_id, 'registered_at', t.registered_at,"
    "  'first_scanned_at', t.first_scanned_at,"
    "  'batch', json_build_object('id', b.id, 'code', b.code, 'revoked_at', b.revoked_at),"
    "  'product', json_build_object('id', pr.id, 'sku', pr.sku, 'name', pr.name),"
    "  'anchor', json_build_object("
    "   'status', CASE WHEN a.id IS NULL THEN 'pending' ELSE 'anchored' END,"
    "   'stage', CASE WHEN e.id IS NULL THEN 'unlogged' WHEN e.leaf_index IS NULL THEN 'queued'"
    "    WHEN c.size IS NULL THEN 'appended' WHEN a.id IS NULL THEN 'checkpointed'"
    "    ELSE 'anchored' END,"
    "   'queued_at', e.queued_at, 'leaf_index', e.leaf_index, 'appended_at', e.appended_at,"
    "   'checkpoint_size', coalesce(a.checkpoint_size, c.size), 'ledger', a.ledger,"
    "   'ledger_tx', a.ledger_ref, 'anchored_at', a.confirmed_at))"
    " FROM tags t JOIN batches b ON b.id = t.batch_id JOIN products pr ON pr.id = t.product_id"
    " LEFT JOIN LATERAL " DB_TAG_LOG_ENTRY_SQL " e ON true"
    " LEFT JOIN LATERAL (SELECT cp.size FROM checkpoints cp WHERE cp.size > e.leaf_index"
    "   ORDER BY cp.size LIMIT 1) c ON true"
    " LEFT JOIN LATERAL (SELECT an.* FROM anchors an WHERE an.state = 'confirmed'"
    "   AND an.checkpoint_size > e.leaf_index ORDER BY an.checkpoint_size, an.id LIMIT 1) a"
    "  ON true"
    " WHERE t.tag_id = $1::uuid AND ($2::text = '' OR t.factory_id = $2::uuid)";

static void tag_get(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id, own_factory(p)};
    api_query_json(req, p, 200, "no such tag", sql_tag, 2, v);
}

/* --- routes ----------------------------------------------------------------------------------- */

static void on_products_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, product_create);
}

static void on_products_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, product_list);
}

static void on_product_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, product_get);
}

static void on_batches_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, batch_create);
}

static void on_batches_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, batch_list);
}

static void on_batch_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, batch_get);
}

static void on_batch_stats(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, batch_stats);
}

static void on_batch_revoke(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, batch_revoke);
}

static void on_tag_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, tag_get);
}

int catalog_register(struct httpd *h, struct factory_app *app)
{
    /* Registered here, on the setup thread, so that the workers only look the family up. */
    if (metrics_counter(service_metrics(app->svc), RECALL_METRIC, RECALL_METRIC_HELP,
                        "writer,result") == NULL)
        return -1;
    return httpd_route(h, HTTP_POST, "/v1/products", "/v1/products", on_products_post, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/products", "/v1/products", on_products_get, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/products/{}", "/v1/products/{id}", on_product_get, NULL) ||
           httpd_route(h, HTTP_POST, "/v1/batches", "/v1/batches", on_batches_post, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/batches", "/v1/batches", on_batches_get, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/batches/{}", "/v1/batches/{id}", on_batch_get, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/batches/{}/stats", "/v1/batches/{id}/stats",
                       on_batch_stats, NULL) ||
           httpd_route(h, HTTP_POST, "/v1/batches/{}/revoke", "/v1/batches/{id}/revoke",
                       on_batch_revoke, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/tags/{}", "/v1/tags/{tag_id}", on_tag_get, NULL);
}

/* --- the recall reconciler -------------------------------------------------------------------- */

/*
 * Worker 0 re-marks every recalled batch in Redis every RECALL_RECONCILE_S seconds: a recall
 * whose SET failed (Redis down at that moment), or a mark Redis lost (a restart without
 * persistence, a flush), is back on the cache path within that time of Redis answering. The
 * marks never expire and setting one twice changes nothing, so the work is one indexed read
 * and one MSET per RECALL_MSET_KEYS recalled batches.
 */
struct reconciler {
    struct service_worker *w;
    struct event *timer;
    struct metric *marks;
    int busy; /* a round is in flight: the next tick waits for it */
    int pending;
    int failed;
};

static void reconcile_end(struct reconciler *rc)
{
    metric_inc(rc->marks, "reconciler", rc->failed ? "failed" : "ok");
    rc->busy = 0;
}

static void reconcile_marked(void *arg, enum redis_status st, const redisReply *reply)
{
    struct reconciler *rc = arg;

    (void)reply;
    if (st != REDIS_STATUS_OK)
        rc->failed = 1;
    if (--rc->pending == 0)
        reconcile_end(rc);
}

static void reconcile_rows(void *arg, const struct pg_result_info *r)
{
    struct reconciler *rc = arg;
    const char *argv[1 + 2 * RECALL_MSET_KEYS];
    char keys[RECALL_MSET_KEYS][64];
    int n, rows;

    if (r->status != PG_OK || rc->w->redis == NULL) {
        if (r->status != PG_ERR_CLOSED)
            log_warn("recall reconciler: cannot read recalled batches: %s",
                     r->message != NULL ? r->message : pg_status_str(r->status));
        rc->failed = 1;
        reconcile_end(rc);
        return;
    }
    rows = PQntuples(r->res);
    /* One more than the MSETs, so that no reply ends the round before all are sent. */
    rc->pending = 1;
    for (int i = 0; i < rows; i += n) {
        n = rows - i < RECALL_MSET_KEYS ? rows - i : RECALL_MSET_KEYS;
        argv[0] = "MSET";
        for (int k = 0; k < n; k++) {
            snprintf(keys[k], sizeof(keys[k]), "tp:rv:%s", PQgetvalue(r->res, i + k, 0));
            argv[1 + 2 * k] = keys[k];
            argv[2 + 2 * k] = "1";
        }
        if (redis_command(rc->w->redis, 0, reconcile_marked, rc, 1 + 2 * n, argv, NULL) == 0)
            rc->pending++;
        else
            rc->failed = 1;
    }
    if (--rc->pending == 0)
        reconcile_end(rc);
}

static void reconcile_tick(evutil_socket_t fd, short what, void *arg)
{
    struct reconciler *rc = arg;

    (void)fd;
    (void)what;
    /* Nothing to do while Redis is away; the round after it reconnects does the work. */
    if (rc->busy || rc->w->redis == NULL || !redis_connected(rc->w->redis))
        return;
    rc->busy = 1;
    rc->failed = 0;
    if (db_tenant_query(rc->w->pg, DB_TENANT_ALL, 0, reconcile_rows, rc,
                        "SELECT id::text FROM batches WHERE revoked_at IS NOT NULL", 0,
                        NULL) != 0) {
        rc->failed = 1;
        reconcile_end(rc);
    }
}

void *catalog_worker_init(struct service_worker *w)
{
    struct timeval every = {RECALL_RECONCILE_S, 0};
    struct reconciler *rc = NULL;

    if (w->idx != 0 || w->pg == NULL || w->redis == NULL)
        return NULL;
    rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        goto fail;
    rc->w = w;
    rc->marks = metrics_counter(service_metrics(w->svc), RECALL_METRIC, RECALL_METRIC_HELP,
                                "writer,result");
    rc->timer = event_new(w->base, -1, EV_PERSIST, reconcile_tick, rc);
    if (rc->timer == NULL || event_add(rc->timer, &every) != 0)
        goto fail;
    return rc;
fail:
    log_error("recall reconciler: cannot start; recalls missed by Redis stay unmarked until a "
              "restart");
    if (rc != NULL && rc->timer != NULL)
        event_free(rc->timer);
    free(rc);
    return NULL;
}

void catalog_worker_fini(void *program_worker)
{
    struct reconciler *rc = program_worker;

    if (rc == NULL)
        return;
    /* The stores are gone by now: a round in flight was answered with "closed". */
    event_free(rc->timer);
    free(rc);
}
