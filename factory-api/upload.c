/*
 * upload: POST /v1/batches/{id}/tags, a CSV of tags streamed into the loader, and
 * GET /v1/uploads/{id} (SPEC §6). The POST route streams its body: the handler runs once the
 * header section has arrived, so authentication, the batch, the Idempotency-Key and the
 * upload row are all settled before the first byte of the body is read, and a body over the
 * limit is refused with 413 without being read at all.
 */
#include "handlers.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "api.h"
#include "db.h"
#include "http.h"
#include "ingest.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "service.h"

/* The COPY and the merge of one upload must end within this (statement_timeout). */
#define UPLOAD_STATEMENT_TIMEOUT_MS (3600 * 1000)

struct upload_req {
    struct http_req *req;
    struct principal who;
    enum ingest_mode mode;
    bool has_key;
    char key[INGEST_KEY_MAX + 1];
    char batch_id[UUID_STR_LEN + 1];
    char factory_id[UUID_STR_LEN + 1];
    char product_id[UUID_STR_LEN + 1];
    char upload_id[UUID_STR_LEN + 1];
    char prior_id[UUID_STR_LEN + 1];
    char prior_hash[2 * 32 + 1];
    struct loader *loader;
    EVP_MD_CTX *sha; /* comparing a body with an earlier upload's */
};

/* The registry returns the family registered at start (upload_register). */
static struct metric *uploads_metric(struct factory_app *app)
{
    return metrics_counter(service_metrics(app->svc), "tagproof_uploads_total",
                           "CSV uploads finished, by result (completed, failed)", "result");
}

static struct metric *rows_metric(struct factory_app *app)
{
    return metrics_counter(service_metrics(app->svc), "tagproof_upload_rows_total",
                           "Rows of finished CSV uploads, by result (imported, rejected)",
                           "result");
}

static void upload_req_free(struct upload_req *u)
{
    EVP_MD_CTX_free(u->sha);
    free(u);
}

static void reply_unavailable(struct http_req *req, const char *detail)
{
    http_add_header(req, "Retry-After", "1");
    http_reply_problem(req, 503, NULL, NULL, detail, NULL);
}

/* Answers with the upload resource (JSON text) and where to read it again. */
static void reply_resource(struct upload_req *u, const char *id, const char *json, bool replayed)
{
    char location[64];
    snprintf(location, sizeof(location), "/v1/uploads/%s", id);
    http_add_header(u->req, "Location", location);
    if (replayed)
        http_add_header(u->req, "Idempotent-Replayed", "true");
    http_reply(u->req, 202, "application/json", json, strlen(json));
}

/* --- a new upload: the body into the loader ------------------------------------------------- */

static int on_body_data(struct http_req *req, const void *data, size_t len, void *arg)
{
    struct upload_req *u = arg;
    (void)req;
    return loader_feed(u->loader, data, len);
}

static void on_body_end(struct http_req *req, int status, void *arg)
{
    struct upload_req *u = arg;
    (void)req;
    loader_end(u->loader, status == 0);
}

static void on_loader_started(void *arg, int ok)
{
    struct upload_req *u = arg;
    if (!ok) {
        u->loader = NULL;
        reply_unavailable(u->req, "the upload could not start; try again");
        upload_req_free(u);
        return;
    }
    if (http_req_body_read(u->req, on_body_data, on_body_end, u) != 0) {
        /* Not a streaming request after all: the body cannot be read, the upload ends. */
        loader_end(u->loader, 0);
    }
}

static void on_loader_resume(void *arg)
{
    struct upload_req *u = arg;
    http_req_body_resume(u->req);
}

static void on_loader_answered(void *arg, int status, const char *json)
{
    struct upload_req *u = arg;
    if (status == 202 && json != NULL) {
        reply_resource(u, u->upload_id, json, false);
    } else if (status == 202) {
        /* Accepted and running, but its row could not be read back: what is known of it. */
        json_t *doc = json_pack("{s:s, s:s, s:s}", "id", u->upload_id, "batch_id", u->batch_id,
                                "status", "processing");
        char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text != NULL)
            reply_resource(u, u->upload_id, text, false);
        else
            reply_unavailable(u->req, "out of memory");
        free(text);
        json_decref(doc);
    } else
        reply_unavailable(u->req, "the database failed during the upload; nothing was imported; "
                                  "send it again");
    upload_req_free(u);
}

static void on_upload_created(void *arg, const struct pg_result_info *r)
{
    struct upload_req *u = arg;
    struct factory_app *app = api_app(u->req);
    static const struct loader_events ev = {
        .started = on_loader_started,
        .resume = on_loader_resume,
        .answered = on_loader_answered,
    };

    if (r->status != PG_OK) {
        if (r->sqlstate != NULL && strcmp(r->sqlstate, "23505") == 0)
            http_reply_problem(u->req, 409, NULL, NULL,
                               "an upload with this Idempotency-Key is still running", NULL);
        else
            api_reply_db_error(u->req, r);
        upload_req_free(u);
        return;
    }
    struct loader_params p = {
        .w = service_worker(u->req),
        .tenant = api_tenant(&u->who),
        .upload_id = u->upload_id,
        .factory_id = u->factory_id,
        .batch_id = u->batch_id,
        .product_id = u->product_id,
        .mode = u->mode,
        .cache_ttl_s = app->cfg->cache_ttl_s,
        .statement_timeout_ms = UPLOAD_STATEMENT_TIMEOUT_MS,
        .m_uploads = uploads_metric(app),
        .m_rows = rows_metric(app),
    };
    u->loader = loader_start(&p, &ev, u);
    if (u->loader == NULL) {
        /* The row stays 'processing' until its missing heartbeat marks it interrupted. */
        reply_unavailable(u->req, "the upload could not start; try again");
        upload_req_free(u);
    }
}

static void upload_create(struct upload_req *u)
{
    const char *mode = ingest_mode_name(u->mode);
    api_new_id(u->upload_id);
    const char *v[] = {u->upload_id, u->factory_id, u->batch_id, mode, u->has_key ? u->key : NULL};
    if (db_tenant_query(service_worker(u->req)->pg, api_tenant(&u->who), 0, on_upload_created, u,
                        "INSERT INTO uploads (id, factory_id, batch_id, status, mode,"
                        " idempotency_key) VALUES ($1, $2, $3, 'processing', $4, $5)",
                        5, v) != 0) {
        reply_unavailable(u->req, "cannot reach the database");
        upload_req_free(u);
    }
}

static void on_key_released(void *arg, const struct pg_result_info *r)
{
    struct upload_req *u = arg;
    if (r->status != PG_OK) {
        api_reply_db_error(u->req, r);
        upload_req_free(u);
        return;
    }
    upload_create(u);
}

/* --- the same key again: compare the bodies ------------------------------------------------- */

static void on_replay(void *arg, const struct pg_result_info *r)
{
    struct upload_req *u = arg;
    if (r->status != PG_OK)
        api_reply_db_error(u->req, r);
    else if (PQntuples(r->res) != 1 || PQgetisnull(r->res, 0, 0))
        http_reply_problem(u->req, 404, NULL, NULL, "no such upload", NULL);
    else
        reply_resource(u, u->prior_id, PQgetvalue(r->res, 0, 0), true);
    upload_req_free(u);
}

static int on_compare_data(struct http_req *req, const void *data, size_t len, void *arg)
{
    struct upload_req *u = arg;
    (void)req;
    EVP_DigestUpdate(u->sha, data, len);
    return 0;
}

static void on_compare_end(struct http_req *req, int status, void *arg)
{
    struct upload_req *u = arg;
    unsigned char md[32];
    char hex[2 * 32 + 1];
    unsigned n = 0;

    if (status != 0) {
        http_reply_problem(req, 400, NULL, NULL, "the body ended before all of it arrived", NULL);
        upload_req_free(u);
        return;
    }
    EVP_DigestFinal_ex(u->sha, md, &n);
    for (unsigned i = 0; i < n && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (n != 32 || strcmp(hex, u->prior_hash) != 0) {
        http_reply_problem(req, 422, NULL, NULL,
                           "this Idempotency-Key was used for an upload with another body", NULL);
        upload_req_free(u);
        return;
    }
    const char *id = u->prior_id;
    if (db_tenant_query(service_worker(req)->pg, api_tenant(&u->who), 0, on_replay, u,
                        "SELECT " LOADER_UPLOAD_JSON " FROM uploads t WHERE t.id = $1", 1,
                        &id) != 0) {
        reply_unavailable(req, "cannot reach the database");
        upload_req_free(u);
    }
}

static void upload_compare(struct upload_req *u)
{
    u->sha = EVP_MD_CTX_new();
    if (u->sha == NULL || EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL) != 1 ||
        http_req_body_read(u->req, on_compare_data, on_compare_end, u) != 0) {
        reply_unavailable(u->req, "cannot read the body");
        upload_req_free(u);
    }
}

/* --- the batch and the key ------------------------------------------------------------------- */

/*
 * One statement: the batch as the caller sees it, the upload that already holds the key (if
 * any), and, on the way, this factory's uploads whose process died under them are marked
 * interrupted (LOADER_DEAD_SQL: their transaction is gone, or their heartbeat stopped).
 */
#define PREPARE_SQL                                                                                \
    "WITH b AS (SELECT id, factory_id, product_id, revoked_at IS NOT NULL AS revoked"              \
    "  FROM batches WHERE id = $1),"                                                               \
    " reap AS (UPDATE uploads t SET status = 'failed',"                                            \
    "  errors = " LOADER_INTERRUPTED_JSON "::jsonb, finished_at = now(), updated_at = now()"       \
    "  WHERE t.factory_id = (SELECT factory_id FROM b) AND " LOADER_DEAD_SQL(                      \
        "t") ")"                                                                                   \
             " SELECT b.factory_id, b.product_id, b.revoked, p.id,"                                \
             "  coalesce(p.status = 'processing' AND NOT " LOADER_DEAD_SQL(                        \
                 "p") ", false),"                                                                  \
                      "  p.body_sha256 IS NOT NULL, coalesce(p.batch_id = b.id AND p.mode = $3, "  \
                      "false),"                                                                    \
                      "  encode(p.body_sha256, 'hex')"                                             \
                      " FROM b LEFT JOIN uploads p ON p.factory_id = b.factory_id AND "            \
                      "p.idempotency_key = $2"

static void on_prepared(void *arg, const struct pg_result_info *r)
{
    struct upload_req *u = arg;
    const PGresult *res = r->res;

    if (r->status != PG_OK) {
        api_reply_db_error(u->req, r);
        goto done;
    }
    if (PQntuples(res) != 1) {
        http_reply_problem(u->req, 404, NULL, NULL, "no such batch", NULL);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 2), "t") == 0) {
        http_reply_problem(u->req, 409, NULL, NULL,
                           "the batch has been recalled; no tags can be added to it", NULL);
        goto done;
    }
    snprintf(u->factory_id, sizeof(u->factory_id), "%s", PQgetvalue(res, 0, 0));
    snprintf(u->product_id, sizeof(u->product_id), "%s", PQgetvalue(res, 0, 1));
    if (PQgetisnull(res, 0, 3)) {
        upload_create(u);
        return;
    }
    snprintf(u->prior_id, sizeof(u->prior_id), "%s", PQgetvalue(res, 0, 3));
    snprintf(u->prior_hash, sizeof(u->prior_hash), "%s", PQgetvalue(res, 0, 7));
    struct ingest_prior prior = {
        .running = strcmp(PQgetvalue(res, 0, 4), "t") == 0,
        .body_known = strcmp(PQgetvalue(res, 0, 5), "t") == 0,
        .same_request = strcmp(PQgetvalue(res, 0, 6), "t") == 0,
    };
    switch (ingest_idempotency(&prior)) {
    case INGEST_BUSY:
        http_reply_problem(u->req, 409, NULL, NULL,
                           "an upload with this Idempotency-Key is still running", NULL);
        break;
    case INGEST_MISMATCH:
        http_reply_problem(u->req, 422, NULL, NULL,
                           "this Idempotency-Key was used for an upload to another batch or in "
                           "another mode",
                           NULL);
        break;
    case INGEST_COMPARE:
        upload_compare(u);
        return;
    case INGEST_RETAKE: {
        const char *id = u->prior_id;
        if (db_tenant_query(service_worker(u->req)->pg, api_tenant(&u->who), 0, on_key_released, u,
                            "UPDATE uploads SET idempotency_key = NULL"
                            " WHERE id = $1 AND status = 'failed' AND body_sha256 IS NULL",
                            1, &id) != 0)
            reply_unavailable(u->req, "cannot reach the database");
        else
            return;
        break;
    }
    }
done:
    upload_req_free(u);
}

/*
 * text/csv is what the API documents; a client that says nothing, plain text or raw bytes
 * is heard too. Anything else (JSON, a form, a multipart form: curl -d and -F) is a mistake
 * worth a clear 415.
 */
static bool content_type_ok(const char *ct)
{
    static const char *const ok[] = {"text/csv", "application/csv", "text/plain",
                                     "application/octet-stream"};
    if (ct == NULL)
        return true;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        size_t n = strlen(ok[i]);
        if (strncasecmp(ct, ok[i], n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' '))
            return true;
    }
    return false;
}

/*
 * An upload holds one of the worker's database connections from its first byte to its cache
 * fill; one connection always stays for everything else (its heartbeat, and every other
 * request of the worker).
 */
static bool capacity_left(struct http_req *req)
{
    struct pg_stats st;
    pg_pool_stats(service_worker(req)->pg, &st);
    int most = st.connections > 1 ? st.connections - 1 : 1;
    return st.acquired < most;
}

static void upload_post(struct http_req *req, const struct principal *p)
{
    const char *key = http_req_header(req, "Idempotency-Key");
    struct upload_req *u = NULL;
    enum ingest_mode mode;
    char batch[UUID_STR_LEN + 1];

    if (api_param_uuid(req, 0, batch) != 0)
        return;
    if (ingest_mode_parse(http_req_query(req, "mode"), &mode) != 0) {
        http_reply_problem(req, 400, NULL, NULL, "mode must be all-or-nothing or skip-invalid",
                           NULL);
        return;
    }
    if (key != NULL && !ingest_key_valid(key)) {
        http_reply_problem(req, 400, NULL, NULL,
                           "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return;
    }
    if (!content_type_ok(http_req_header(req, "Content-Type"))) {
        http_reply_problem(req, 415, NULL, NULL, "the body must be text/csv", NULL);
        return;
    }
    if (!capacity_left(req)) {
        reply_unavailable(req, "too many uploads at once on this server; try again");
        return;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        reply_unavailable(req, "out of memory");
        return;
    }
    u->req = req;
    u->who = *p;
    u->mode = mode;
    memcpy(u->batch_id, batch, sizeof(batch));
    if (key != NULL) {
        u->has_key = true;
        snprintf(u->key, sizeof(u->key), "%s", key);
    }
    const char *v[] = {u->batch_id, u->has_key ? u->key : NULL, ingest_mode_name(mode)};
    if (db_tenant_query(service_worker(req)->pg, api_tenant(p), 0, on_prepared, u, PREPARE_SQL, 3,
                        v) != 0) {
        reply_unavailable(req, "cannot reach the database");
        upload_req_free(u);
    }
}

static void on_upload_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, upload_post);
}

/* --- reading an upload ------------------------------------------------------------------------ */

static void upload_get(struct http_req *req, const struct principal *p)
{
    char id[UUID_STR_LEN + 1];
    if (api_param_uuid(req, 0, id) != 0)
        return;
    const char *v[] = {id};
    /* An upload whose process died is reported, and recorded, as failed when it is read. */
    api_query_json(req, p, 200, "no such upload",
                   "WITH r AS (UPDATE uploads t SET status = 'failed',"
                   "  errors = " LOADER_INTERRUPTED_JSON "::jsonb, finished_at = now(),"
                   "  updated_at = now() WHERE t.id = $1 AND " LOADER_DEAD_SQL(
                       "t") " RETURNING " LOADER_UPLOAD_JSON " AS j)"
                            " SELECT coalesce((SELECT j FROM r),"
                            "  (SELECT " LOADER_UPLOAD_JSON " FROM uploads t WHERE t.id = $1))",
                   1, v);
}

static void on_upload_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, upload_get);
}

int upload_register(struct httpd *h, struct factory_app *app)
{
    size_t max_body = (size_t)app->cfg->upload_max_mb << 20;
    /*
     * Each upload allocates and frees tens of MiB (the validator's duplicate set, doubling as
     * it grows). glibc raises its mmap threshold to the size of the first such block freed,
     * after which the smaller ones come from a thread's arena, whose top it never gives back
     * (not even malloc_trim does, outside the main arena): measured, 40 MiB stayed resident
     * after the second million-tag upload. A fixed threshold keeps every block of a MiB or
     * more in its own mapping, returned to the system when it is freed. Set here, before the
     * workers start, because the program's memory shape is the uploads' doing.
     */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (uploads_metric(app) == NULL || rows_metric(app) == NULL)
        return -1;
    return httpd_route_stream(h, HTTP_POST, "/v1/batches/{}/tags", "/v1/batches/{id}/tags",
                              max_body, on_upload_post, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/uploads/{}", "/v1/uploads/{id}", on_upload_get, NULL);
}
