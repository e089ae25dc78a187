/*
 * proofs: the Merkle log seen from the factory API (SPEC §6, §7) — proof bundles of tags,
 * their verification, the latest signed checkpoint, the log's verifier key, consistency
 * proofs, and the anchoring history. tagproof-anchor writes the log; this file only reads it.
 *
 * A proof reads O(log n) stored subtree hashes. Which ones depends only on the leaf's index
 * and the tree's size, so a handler plans the proof first (proof.c), fetches every node it
 * names in one query, and computes. A bundle is checked against the log's own key before it
 * is served, and kept in Redis per tag and checkpoint size: a warm fetch is one round trip.
 */
#include "handlers.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "merkle.h"
#include "metrics.h"
#include "note.h"
#include "pg.h"
#include "proof.h"
#include "redis.h"
#include "service.h"

/*
 * The bundle cache. tp:log:size holds the newest checkpoint size for a short while: a warm
 * fetch reads it and tp:proof:{tag}:{size} in one script; once it has expired, one indexed read of
 * the newest size renews it. So a new checkpoint is served at most that long after it was signed
 * (the previous one's bundle is a valid proof meanwhile). A bundle whose anchor is still in
 * flight is kept briefly, so that its anchor block catches up with the log.
 */
#define CACHE_SIZE_KEY "tp:log:size"
#define CACHE_SIZE_TTL_MS 2000
#define CACHE_TTL_FINAL_S 300
#define CACHE_TTL_MOVING_S 5
#define CACHE_METRIC "tagproof_proof_cache_total"
#define CACHE_METRIC_HELP "Proof bundle fetches by what the Redis cache answered (hit, miss, error)"

/* The log's verifier keys, newest first: the one that verifies a note is the one shown. */
#define KEYS_SQL                                                                                   \
    "(SELECT string_agg(k.vkey, E'\\n' ORDER BY k.last_used_at DESC, k.vkey) FROM"                 \
    " (SELECT vkey, last_used_at FROM log_keys ORDER BY last_used_at DESC LIMIT 8) k)"

/*
 * Statements prepared on every connection of a worker's pool the first time they run: the
 * proof path's two, run on every cold fetch, are planned once per connection.
 */
#define STMT_PROOF "tagproof_proof_entry"
#define STMT_NODES "tagproof_proof_nodes"

/* The stored subtrees of a plan: $1 levels and $2 indices, as arrays. */
static const char sql_nodes[] =
    "SELECT n.level, n.idx, encode(n.hash, 'hex') FROM merkle_nodes n"
    " JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx) USING (level, idx)";

/* --- small helpers -------------------------------------------------------------------------- */

static const char *own_factory(const struct principal *p)
{
    return p->role == JWT_ROLE_ADMIN ? "" : p->factory_id;
}

static struct metric *cache_metric(struct http_req *req)
{
    return metrics_counter(service_metrics(service_worker(req)->svc), CACHE_METRIC,
                           CACHE_METRIC_HELP, "result");
}

static void reply_internal(struct http_req *req, const char *what)
{
    log_error("proofs: %s", what);
    http_reply_problem(req, 500, NULL, NULL, "internal error", NULL);
}

/* A decimal of at most 19 digits without sign or leading zero. 0 or -1. */
static int parse_u63(const char *s, uint64_t *out)
{
    size_t n = s != NULL ? strlen(s) : 0;
    char *end = NULL;
    unsigned long long v;

    if (n == 0 || n > 19 || strspn(s, "0123456789") != n || (s[0] == '0' && n > 1))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > (unsigned long long)INT64_MAX)
        return -1;
    *out = v;
    return 0;
}

static int col_u64(const PGresult *res, int row, int col, uint64_t *out)
{
    return PQgetisnull(res, row, col) ? -1 : parse_u63(PQgetvalue(res, row, col), out);
}

/* The plan's nodes as the two array parameters of sql_nodes. Caller frees both. */
static int plan_arrays(const struct proof_nodes *nodes, char **levels, char **idxs)
{
    size_t cap = 3 + nodes->n * 22; /* "{", a number and a comma each, "}", NUL */
    char *l = malloc(cap), *x = malloc(cap);
    size_t lo = 0, xo = 0;

    if (l == NULL || x == NULL) {
        free(l);
        free(x);
        return -1;
    }
    l[lo++] = '{';
    x[xo++] = '{';
    for (size_t i = 0; i < nodes->n; i++) {
        lo += (size_t)snprintf(l + lo, cap - lo, "%s%u", i ? "," : "", nodes->node[i].level);
        xo += (size_t)snprintf(x + xo, cap - xo, "%s%" PRIu64, i ? "," : "", nodes->node[i].idx);
    }
    snprintf(l + lo, cap - lo, "}");
    snprintf(x + xo, cap - xo, "}");
    *levels = l;
    *idxs = x;
    return 0;
}

/* Fills a plan from sql_nodes' rows. 0 when every planned node came back. */
static int plan_fill(struct proof_nodes *nodes, const PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++) {
        uint64_t level, idx;
        uint8_t h[MERKLE_HASH_LEN];
        if (col_u64(res, r, 0, &level) != 0 || col_u64(res, r, 1, &idx) != 0 ||
            proof_unhex(PQgetvalue(res, r, 2), h, sizeof(h)) != 0 ||
            proof_nodes_set(nodes, (unsigned)level, idx, h, sizeof(h)) != 0)
            return -1;
    }
    return proof_nodes_complete(nodes) ? 0 : -1;
}

/* Runs sql_nodes for a plan on the worker's pool (the nodes are not a tenant's rows). */
static int plan_fetch(struct http_req *req, const struct proof_nodes *nodes, pg_result_fn cb,
                      void *arg)
{
    char *levels = NULL, *idxs = NULL;
    int rc;

    if (plan_arrays(nodes, &levels, &idxs) != 0)
        return -1;
    const char *v[] = {levels, idxs};
    struct pg_pool *pool = service_worker(req)->pg;
    rc = pg_pool_prepare(pool, STMT_NODES, sql_nodes, 2) == 0
             ? pg_query_prepared(pool, 0, cb, arg, STMT_NODES, 2, v)
             : -1;
    free(levels);
    free(idxs);
    return rc;
}

/*
 * The length of a signed note's text: up to and with the newline before its last blank line
 * (the signature lines follow it). 0 when the note has no blank line.
 */
static size_t note_text_len(const char *note, size_t len)
{
    for (size_t i = len; i-- > 1;)
        if (note[i] == '\n' && note[i - 1] == '\n')
            return i;
    return 0;
}

/* --- GET /v1/proofs/{tag_id} ---------------------------------------------------------------- */

/*
 * The tag (RLS and the caller's filter decide whether it exists for the caller), its
 * registration leaf, the newest checkpoint, that checkpoint's anchor (a confirmed one
 * first) and the log's keys.
 */
static const char sql_proof[] =
    "SELECT t.factory_id, e.id IS NOT NULL, e.leaf_index, encode(e.record, 'hex'),"
    "  c.size, encode(c.root, 'hex'), c.note,"
    "  a.ledger, a.state, a.ledger_ref, a.chain_id, a.block_number, " KEYS_SQL ", " PROOF_NODES_SQL(
        "e.leaf_index",
        "c.size") " FROM tags t"
                  " LEFT JOIN LATERAL " DB_TAG_LOG_ENTRY_SQL " e ON true"
                  " LEFT JOIN LATERAL (SELECT cp.size, cp.root, cp.note FROM checkpoints cp"
                  "   ORDER BY cp.size DESC LIMIT 1) c ON true"
                  " LEFT JOIN LATERAL (SELECT an.ledger, an.state, an.ledger_ref, an.chain_id,"
                  "   an.block_number FROM anchors an WHERE an.checkpoint_size = c.size"
                  "   ORDER BY an.state = 'confirmed' DESC, an.updated_at DESC, an.id DESC LIMIT "
                  "1) a ON true"
                  " WHERE t.tag_id = $1::uuid AND ($2::text = '' OR t.factory_id = $2::uuid)";

enum {
    P_FACTORY,
    P_LOGGED,
    P_INDEX,
    P_RECORD,
    P_SIZE,
    P_ROOT,
    P_NOTE,
    P_LEDGER,
    P_STATE,
    P_REF,
    P_CHAIN,
    P_BLOCK,
    P_KEYS,
    P_NODES
};

struct fetch {
    struct http_req *req;
    struct principal who;
    char tag[UUID_STR_LEN + 1];
    char factory[UUID_STR_LEN + 1];
    char size_hint[24];
    struct merkle_hasher *h;
    char *keys; /* the log's verifier keys, newest first, one a line */
    struct proof_bundle b;
    struct proof_nodes nodes;
};

static void fetch_free(struct fetch *f)
{
    merkle_hasher_free(f->h);
    free(f->keys);
    free(f->b.record);
    free(f->b.note);
    free(f);
}

static void ignore_reply(void *arg, enum redis_status st, const redisReply *reply)
{
    (void)arg;
    (void)st;
    (void)reply;
}

/* Keeps the bundle (and the newest size) for the next fetches; nobody waits for Redis. */
static void fetch_cache_store(struct fetch *f, const char *json)
{
    struct redis_client *rc = service_worker(f->req)->redis;
    char key[96], size[24], ttl[16], *value = NULL;
    int final = !f->b.has_anchor || strcmp(f->b.anchor.status, "confirmed") == 0 ||
                strcmp(f->b.anchor.status, "failed") == 0;

    if (rc == NULL || !redis_connected(rc))
        return;
    snprintf(size, sizeof(size), "%" PRIu64, f->b.size);
    snprintf(key, sizeof(key), "tp:proof:%s:%s", f->tag, size);
    snprintf(ttl, sizeof(ttl), "%d", final ? CACHE_TTL_FINAL_S : CACHE_TTL_MOVING_S);
    if (asprintf(&value, "%s\n%s", f->factory, json) < 0)
        return;
    redis_commandf(rc, 0, ignore_reply, NULL, "SET %s %s EX %s", key, value, ttl);
    redis_commandf(rc, 0, ignore_reply, NULL, "SET %s %s PX %d", CACHE_SIZE_KEY, size,
                   CACHE_SIZE_TTL_MS);
    free(value);
}

/* The plan is filled: the proof, the bundle, its check, the answer. Frees f. */
static void fetch_answer(struct fetch *f)
{
    struct http_req *req = f->req;
    struct proof_check checks[PROOF_CHECK_COUNT];
    struct proof_bundle *served = NULL;
    char *json = NULL, err[256];
    int failed = -1;

    if (proof_inclusion(f->h, &f->nodes, f->b.leaf_index, f->b.size, f->b.inclusion,
                        &f->b.n_inclusion) != 0) {
        reply_internal(req, "the log's store lacks subtree hashes of a signed checkpoint");
        goto out;
    }
    /*
     * Served only once the very bytes served verify as anyone will verify them, against the
     * log's key that signed the checkpoint (the newest first: one signature check, unless the
     * key changed). A store that disagrees with its own signed checkpoint is an incident, not
     * a proof.
     */
    for (char *save = NULL, *k = strtok_r(f->keys, "\n", &save); k != NULL;
         k = strtok_r(NULL, "\n", &save)) {
        if (strlen(k) >= sizeof(f->b.log_key))
            continue;
        memcpy(f->b.log_key, k, strlen(k) + 1);
        proof_bundle_free(served);
        free(json);
        served = NULL;
        if ((json = proof_bundle_json(&f->b)) == NULL) {
            reply_internal(req, "cannot write a bundle");
            goto out;
        }
        if ((served = proof_bundle_parse(json, strlen(json), NULL, err, sizeof(err))) == NULL) {
            log_error("proofs: the bundle of tag %s does not parse: %s", f->tag, err);
            http_reply_problem(req, 500, NULL, NULL, "the log's store does not prove this tag",
                               NULL);
            goto out;
        }
        failed = proof_bundle_check(f->h, served, f->b.log_key, checks);
        if (failed == 0) {
            http_reply(req, 200, "application/json", json, strlen(json));
            fetch_cache_store(f, json);
            goto out;
        }
        /* Another key can only mend the signature and the key's own checks. */
        if (!checks[PROOF_CHECK_RECORD].ok || !checks[PROOF_CHECK_LEAF_HASH].ok ||
            !checks[PROOF_CHECK_INCLUSION].ok)
            break;
    }
    for (int i = 0; failed > 0 && i < PROOF_CHECK_COUNT; i++)
        if (!checks[i].ok)
            log_error("proofs: the bundle of tag %s fails its %s check: %s", f->tag, checks[i].name,
                      checks[i].detail);
    if (failed < 0)
        log_error("proofs: no key in log_keys is usable for the newest checkpoint");
    http_reply_problem(req, 500, NULL, NULL, "the log's store does not prove this tag", NULL);
out:
    proof_bundle_free(served);
    free(json);
    fetch_free(f);
}

/* sql_nodes' answer, when the leaf's statement did not bring every node (fetch_entry). */
static void fetch_nodes(void *arg, const struct pg_result_info *r)
{
    struct fetch *f = arg;

    if (r->status != PG_OK) {
        api_reply_db_error(f->req, r);
        fetch_free(f);
        return;
    }
    if (plan_fill(&f->nodes, r->res) != 0) {
        reply_internal(f->req, "the log's store lacks subtree hashes of a signed checkpoint");
        fetch_free(f);
        return;
    }
    fetch_answer(f);
}

/* 202: the tag is registered, its leaf not yet in a signed checkpoint (SPEC §6). */
static void fetch_pending(struct fetch *f, const PGresult *res, const char *stage)
{
    const struct config *cfg = service_config(service_worker(f->req)->svc);
    char retry[16];
    json_t *body;

    body = json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:s}", "tag_id", f->tag, "status", "pending", "stage", stage,
        "leaf_index",
        PQgetisnull(res, 0, P_INDEX) ? json_null()
                                     : json_integer(strtoll(PQgetvalue(res, 0, P_INDEX), NULL, 10)),
        "checkpoint_size",
        PQgetisnull(res, 0, P_SIZE) ? json_null()
                                    : json_integer(strtoll(PQgetvalue(res, 0, P_SIZE), NULL, 10)),
        "detail",
        "the tag's leaf is not in a signed checkpoint yet; the anchor service "
        "signs one every interval");
    snprintf(retry, sizeof(retry), "%d", cfg->anchor_interval_s);
    http_add_header(f->req, "Retry-After", retry);
    http_reply_json(f->req, 202, body);
}

static int fetch_anchor(struct proof_bundle *b, const PGresult *res)
{
    const char *ledger = PQgetvalue(res, 0, P_LEDGER), *ref = PQgetvalue(res, 0, P_REF);
    uint64_t v;

    if (PQgetisnull(res, 0, P_LEDGER))
        return 0;
    b->has_anchor = 1;
    snprintf(b->anchor.ledger, sizeof(b->anchor.ledger), "%s", ledger);
    snprintf(b->anchor.status, sizeof(b->anchor.status), "%s", PQgetvalue(res, 0, P_STATE));
    if (!PQgetisnull(res, 0, P_REF) && strlen(ref) <= PROOF_REF_MAX) {
        /* Transaction hashes in lower case: one spelling per anchor. */
        for (size_t i = 0; ref[i] != '\0'; i++)
            b->anchor.ref[i] = strcmp(ledger, "ethereum") == 0 && ref[i] >= 'A' && ref[i] <= 'F'
                                   ? (char)(ref[i] - 'A' + 'a')
                                   : ref[i];
    }
    if (strcmp(ledger, "ethereum") == 0) {
        if (col_u64(res, 0, P_BLOCK, &v) == 0) {
            b->anchor.has_block = 1;
            b->anchor.block = (int64_t)v;
        }
        if (col_u64(res, 0, P_CHAIN, &v) == 0 && v > 0) {
            b->anchor.has_chain_id = 1;
            b->anchor.chain_id = (int64_t)v;
        }
    }
    return 0;
}

static void fetch_entry(void *arg, const struct pg_result_info *r)
{
    struct fetch *f = arg;
    struct http_req *req = f->req;
    const PGresult *res = r->res;
    struct proof_bundle *b = &f->b;
    size_t text_len = 0, rec_hex;
    uint8_t root[MERKLE_HASH_LEN];
    uint64_t note_size;

    if (r->status != PG_OK) {
        api_reply_db_error(req, r);
        goto done;
    }
    if (PQntuples(res) != 1) {
        http_reply_problem(req, 404, NULL, NULL, "no such tag", NULL);
        goto done;
    }
    snprintf(f->factory, sizeof(f->factory), "%s", PQgetvalue(res, 0, P_FACTORY));
    if (strcmp(PQgetvalue(res, 0, P_LOGGED), "t") != 0) {
        fetch_pending(f, res, "unlogged");
        goto done;
    }
    if (col_u64(res, 0, P_INDEX, &b->leaf_index) != 0) {
        fetch_pending(f, res, "queued");
        goto done;
    }
    if (col_u64(res, 0, P_SIZE, &b->size) != 0 || b->size <= b->leaf_index) {
        fetch_pending(f, res, "appended");
        goto done;
    }

    snprintf(b->tag_id, sizeof(b->tag_id), "%s", f->tag);
    rec_hex = strlen(PQgetvalue(res, 0, P_RECORD));
    b->record_len = rec_hex / 2;
    b->record = malloc(b->record_len + 1);
    b->note = strdup(PQgetvalue(res, 0, P_NOTE));
    if (b->record == NULL || b->note == NULL) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        goto done;
    }
    b->note_len = strlen(b->note);
    if (b->record_len > PROOF_RECORD_MAX ||
        proof_unhex(PQgetvalue(res, 0, P_RECORD), (uint8_t *)b->record, b->record_len) != 0 ||
        memchr(b->record, '\0', b->record_len) != NULL ||
        proof_unhex(PQgetvalue(res, 0, P_ROOT), b->root, MERKLE_HASH_LEN) != 0) {
        reply_internal(req, "a log entry or checkpoint is not what the schema promises");
        goto done;
    }
    b->record[b->record_len] = '\0';
    merkle_leaf_hash(f->h, b->record, b->record_len, b->leaf_hash);

    /*
     * The checkpoint's own words (its origin) from the note's text; the signature, and so
     * which of the log's keys made it, is checked once the bundle is written (fetch_answer).
     */
    f->keys = PQgetisnull(res, 0, P_KEYS) ? NULL : strdup(PQgetvalue(res, 0, P_KEYS));
    text_len = note_text_len(b->note, b->note_len);
    if (f->keys == NULL) {
        reply_internal(req, "log_keys holds no verifier key of the log");
        goto done;
    }
    if (text_len == 0 ||
        note_checkpoint_parse(b->note, text_len, b->origin, sizeof(b->origin), &note_size, root) !=
            0 ||
        note_size != b->size || memcmp(root, b->root, MERKLE_HASH_LEN) != 0) {
        reply_internal(req, "the newest checkpoint's note does not say its size and root");
        goto done;
    }
    fetch_anchor(b, res);

    if (proof_plan_inclusion(f->h, b->leaf_index, b->size, &f->nodes) != 0) {
        reply_internal(req, "cannot plan the inclusion proof");
        goto done;
    }
    if (proof_nodes_fill_lines(&f->nodes, PQgetvalue(res, 0, P_NODES)) == 0) {
        fetch_answer(f);
        return;
    }
    /* Not every node came with the row (a store that lacks one answers 500 below). */
    if (plan_fetch(req, &f->nodes, fetch_nodes, f) != 0) {
        http_reply_problem(req, 503, NULL, NULL, "cannot reach the database", NULL);
        goto done;
    }
    return; /* fetch_nodes answers */
done:
    fetch_free(f);
}

static void fetch_from_db(struct fetch *f)
{
    struct pg_pool *pool = service_worker(f->req)->pg;

    const char *v[] = {f->tag, own_factory(&f->who)};

    /* The tenant-scoped read of the bundle's rows: one round trip (db.h). */
    if (pg_pool_prepare(pool, STMT_PROOF, sql_proof, 2) != 0 ||
        db_tenant_prepared(pool, api_tenant(&f->who), 0, fetch_entry, f, STMT_PROOF, 2, v) != 0) {
        http_reply_problem(f->req, 503, NULL, NULL, "cannot reach the database", NULL);
        fetch_free(f);
    }
}

/*
 * One round trip to Redis: the newest size noted, and the bundle of the tag at that size.
 * Answers nil (no size noted), the size alone (no bundle), or both.
 */
static const char cache_lookup_lua[] = "local s = redis.call('GET', KEYS[1]) "
                                       "if not s then return false end "
                                       "local b = redis.call('GET', KEYS[2] .. s) "
                                       "if not b then return s end "
                                       "return {s, b}";

static void fetch_serve_cached(struct fetch *f, const char *value, size_t len)
{
    const char *nl = memchr(value, '\n', len);

    if (nl == NULL || nl - value != UUID_STR_LEN) {
        metric_inc(cache_metric(f->req), "error");
        fetch_from_db(f);
        return;
    }
    metric_inc(cache_metric(f->req), "hit");
    /* The cached bundle names its tag's factory: another tenant's tag is not found. */
    if (f->who.role != JWT_ROLE_ADMIN && memcmp(value, f->who.factory_id, UUID_STR_LEN) != 0)
        http_reply_problem(f->req, 404, NULL, NULL, "no such tag", NULL);
    else
        http_reply(f->req, 200, "application/json", nl + 1, len - (size_t)(nl + 1 - value));
    fetch_free(f);
}

static void fetch_cached_bundle(void *arg, enum redis_status st, const redisReply *reply)
{
    struct fetch *f = arg;

    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_STRING) {
        metric_inc(cache_metric(f->req), st == REDIS_STATUS_OK ? "miss" : "error");
        fetch_from_db(f);
        return;
    }
    fetch_serve_cached(f, reply->str, reply->len);
}

/*
 * Nobody has noted the newest size lately: one indexed read of it, noted for the next
 * fetches, then the cache. A bundle query costs several round trips and the proof's nodes;
 * this costs one.
 */
static void fetch_newest_size(void *arg, const struct pg_result_info *r)
{
    struct fetch *f = arg;
    struct redis_client *rc = service_worker(f->req)->redis;
    const struct config *cfg = service_config(service_worker(f->req)->svc);
    uint64_t size;
    char key[96];

    if (r->status != PG_OK || PQntuples(r->res) != 1 || col_u64(r->res, 0, 0, &size) != 0) {
        /* No checkpoint yet, or PostgreSQL is in trouble: the bundle query says which. */
        metric_inc(cache_metric(f->req), "miss");
        fetch_from_db(f);
        return;
    }
    snprintf(key, sizeof(key), "tp:proof:%s:%" PRIu64, f->tag, size);
    if (rc == NULL ||
        redis_commandf(rc, 0, ignore_reply, NULL, "SET %s %" PRIu64 " PX %d", CACHE_SIZE_KEY, size,
                       CACHE_SIZE_TTL_MS) != 0 ||
        redis_commandf(rc, cfg->redis_timeout_ms, fetch_cached_bundle, f, "GET %s", key) != 0) {
        metric_inc(cache_metric(f->req), "error");
        fetch_from_db(f);
    }
}

static void fetch_cached(void *arg, enum redis_status st, const redisReply *reply)
{
    struct fetch *f = arg;
    uint64_t size;

    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        fetch_serve_cached(f, reply->element[1]->str, reply->element[1]->len);
        return;
    }
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_STRING &&
        parse_u63(reply->str, &size) == 0) {
        metric_inc(cache_metric(f->req), "miss");
        fetch_from_db(f);
        return;
    }
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_NIL &&
        pg_query(service_worker(f->req)->pg, 0, fetch_newest_size, f,
                 "SELECT size FROM checkpoints ORDER BY size DESC LIMIT 1", 0, NULL) == 0)
        return;
    metric_inc(cache_metric(f->req), "error");
    fetch_from_db(f);
}

static void proof_get(struct http_req *req, const struct principal *p)
{
    struct redis_client *rc = service_worker(req)->redis;
    const struct config *cfg = service_config(service_worker(req)->svc);
    struct fetch *f = NULL;
    char tag[UUID_STR_LEN + 1], prefix[64];

    if (api_param_uuid(req, 0, tag) != 0)
        return;
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->h = merkle_hasher_new()) == NULL) {
        free(f);
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    f->req = req;
    f->who = *p;
    memcpy(f->tag, tag, sizeof(tag));
    snprintf(prefix, sizeof(prefix), "tp:proof:%s:", tag);
    if (rc == NULL || !redis_connected(rc) ||
        redis_commandf(rc, cfg->redis_timeout_ms, fetch_cached, f, "EVAL %s 2 %s %s",
                       cache_lookup_lua, CACHE_SIZE_KEY, prefix) != 0) {
        metric_inc(cache_metric(req), "error");
        fetch_from_db(f);
    }
}

/* --- POST /v1/proofs/verify ------------------------------------------------------------------ */

/*
 * The log's keys, its newest checkpoint, and its anchor of the bundle's checkpoint on the
 * bundle's ledger ($1 size, $2 ledger; the anchor columns are NULL when there is none).
 */
static const char sql_verify[] =
    "SELECT " KEYS_SQL ", c.size, encode(c.root, 'hex'),"
    "  a.state, a.ledger_ref, a.chain_id, a.block_number"
    " FROM (SELECT 1) one"
    " LEFT JOIN LATERAL (SELECT cp.size, cp.root FROM checkpoints cp"
    "   ORDER BY cp.size DESC LIMIT 1) c ON true"
    " LEFT JOIN LATERAL (SELECT an.* FROM anchors an WHERE an.checkpoint_size = $1::bigint"
    "   AND an.ledger = $2 ORDER BY an.updated_at DESC, an.id DESC LIMIT 1) a ON true";

enum { V_KEYS, V_SIZE, V_ROOT, V_STATE, V_REF, V_CHAIN, V_BLOCK };

enum { VERIFY_ANCHOR = PROOF_CHECK_COUNT, VERIFY_CONSISTENCY, VERIFY_CHECKS };

struct verify {
    struct http_req *req;
    struct merkle_hasher *h;
    struct proof_bundle *b;
    uint64_t cur_size;
    uint8_t cur_root[MERKLE_HASH_LEN];
    struct proof_check checks[VERIFY_CHECKS];
    struct proof_nodes nodes;
};

static void verify_free(struct verify *v)
{
    merkle_hasher_free(v->h);
    proof_bundle_free(v->b);
    free(v);
}

static void set_check(struct proof_check *c, const char *name, int ok, const char *detail)
{
    c->name = name;
    c->ok = ok;
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
}

static void verify_reply(struct verify *v)
{
    json_t *checks = json_array();
    int valid = 1;

    for (int i = 0; i < VERIFY_CHECKS; i++) {
        json_t *detail = json_string(v->checks[i].detail);
        valid &= v->checks[i].ok;
        if (detail == NULL) /* not UTF-8 after all: the ASCII of it */
            for (char *c = v->checks[i].detail; *c != '\0'; c++)
                *c = (unsigned char)*c < 0x80 ? *c : '?';
        json_array_append_new(
            checks,
            json_pack("{s:s, s:b, s:o}", "name", v->checks[i].name, "ok", v->checks[i].ok, "detail",
                      detail != NULL ? detail : json_string(v->checks[i].detail)));
    }
    http_reply_json(v->req, 200, json_pack("{s:b, s:o}", "valid", valid, "checks", checks));
    verify_free(v);
}

static void verify_consistency_nodes(void *arg, const struct pg_result_info *r)
{
    struct verify *v = arg;
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    struct merkle_bytes pb[MERKLE_MAX_PROOF];
    struct proof_check *c = &v->checks[VERIFY_CONSISTENCY];
    char detail[200];
    size_t n = 0;

    if (r->status != PG_OK) {
        api_reply_db_error(v->req, r);
        verify_free(v);
        return;
    }
    if (plan_fill(&v->nodes, r->res) != 0 ||
        proof_consistency(v->h, &v->nodes, v->b->size, v->cur_size, proof, &n) != 0) {
        reply_internal(v->req, "the log's store lacks subtree hashes of a signed checkpoint");
        verify_free(v);
        return;
    }
    for (size_t i = 0; i < n; i++)
        pb[i] = (struct merkle_bytes){proof[i], MERKLE_HASH_LEN};
    int ok = merkle_verify_consistency(
                 v->h, v->b->size, v->cur_size, (struct merkle_bytes){v->b->root, MERKLE_HASH_LEN},
                 (struct merkle_bytes){v->cur_root, MERKLE_HASH_LEN}, pb, n) == 0;
    snprintf(detail, sizeof(detail),
             ok ? "the log's checkpoint of %" PRIu64 " leaves extends this one of %" PRIu64
                : "the log's checkpoint of %" PRIu64 " leaves does not extend this one of %" PRIu64
                  ": this root was never the log's",
             v->cur_size, v->b->size);
    set_check(c, "consistency", ok, detail);
    verify_reply(v);
}

/* The bundle's anchor block against the log's anchor of that checkpoint on that ledger. */
static void verify_anchor(struct verify *v, const PGresult *res)
{
    const struct proof_anchor *a = &v->b->anchor;
    struct proof_check *c = &v->checks[VERIFY_ANCHOR];
    const char *state = PQgetvalue(res, 0, V_STATE), *ref = PQgetvalue(res, 0, V_REF);
    uint64_t n;
    char detail[256];

    if (!v->b->has_anchor) {
        set_check(c, "anchor", 1, "the bundle names no anchor");
        return;
    }
    if (PQgetisnull(res, 0, V_STATE)) {
        set_check(c, "anchor", 0, "the log has no anchor of this checkpoint on this ledger");
        return;
    }
    if (strcasecmp(a->ref, PQgetisnull(res, 0, V_REF) ? "" : ref) != 0) {
        set_check(c, "anchor", 0, "the log's anchor of this checkpoint has another ledger id");
        return;
    }
    if ((a->has_block && (col_u64(res, 0, V_BLOCK, &n) != 0 || (int64_t)n != a->block)) ||
        (a->has_chain_id && (col_u64(res, 0, V_CHAIN, &n) != 0 || (int64_t)n != a->chain_id))) {
        set_check(c, "anchor", 0, "the log's anchor is in another block or chain");
        return;
    }
    /* An anchor moves forward (pending, submitted, confirmed): a bundle may be behind it. */
    if (strcmp(a->status, "confirmed") == 0 && strcmp(state, "confirmed") != 0) {
        snprintf(detail, sizeof(detail), "the bundle says confirmed, the log says %s", state);
        set_check(c, "anchor", 0, detail);
        return;
    }
    snprintf(detail, sizeof(detail), "the log anchored this checkpoint on %s (%s, now %s)",
             a->ledger, a->ref[0] ? a->ref : "not sent yet", state);
    set_check(c, "anchor", 1, detail);
}

static void verify_log(void *arg, const struct pg_result_info *r)
{
    struct verify *v = arg;
    const PGresult *res = r->res;
    char *keys = NULL, *k, *save = NULL, key[NOTE_VKEY_MAX + 1] = "", detail[200];
    struct proof_check *c = &v->checks[VERIFY_CONSISTENCY];

    if (r->status != PG_OK) {
        api_reply_db_error(v->req, r);
        verify_free(v);
        return;
    }
    /* The log's own key: the bundle's if the log has it, else the newest, which then fails. */
    if (!PQgetisnull(res, 0, V_KEYS) && (keys = strdup(PQgetvalue(res, 0, V_KEYS))) != NULL) {
        for (k = strtok_r(keys, "\n", &save); k != NULL; k = strtok_r(NULL, "\n", &save)) {
            if (key[0] == '\0' || strcmp(k, v->b->log_key) == 0)
                snprintf(key, sizeof(key), "%s", k);
        }
        free(keys);
    }
    proof_bundle_check(v->h, v->b, key[0] ? key : NULL, v->checks);
    verify_anchor(v, res);

    if (col_u64(res, 0, V_SIZE, &v->cur_size) != 0 ||
        proof_unhex(PQgetvalue(res, 0, V_ROOT), v->cur_root, MERKLE_HASH_LEN) != 0) {
        set_check(c, "consistency", 0, "the log has no signed checkpoint");
    } else if (v->b->size > v->cur_size) {
        snprintf(detail, sizeof(detail),
                 "the log's newest checkpoint has %" PRIu64 " leaves, fewer than this one",
                 v->cur_size);
        set_check(c, "consistency", 0, detail);
    } else if (v->b->size == v->cur_size) {
        int same = memcmp(v->b->root, v->cur_root, MERKLE_HASH_LEN) == 0;
        set_check(c, "consistency", same,
                  same ? "the log's newest checkpoint: same size, same root"
                       : "the log's checkpoint of this size has another root");
    } else if (proof_plan_consistency(v->h, v->b->size, v->cur_size, &v->nodes) != 0 ||
               plan_fetch(v->req, &v->nodes, verify_consistency_nodes, v) != 0) {
        http_reply_problem(v->req, 503, NULL, NULL, "cannot reach the database", NULL);
        verify_free(v);
        return;
    } else {
        return; /* verify_consistency_nodes answers */
    }
    verify_reply(v);
}

/*
 * The body is read by the bundle parser itself rather than api_body_object, so that what
 * is not JSON at all (400) and what is JSON but no bundle (422) each get a reason that is
 * safe to quote, whatever bytes came.
 */
static void proof_verify(struct http_req *req, const struct principal *p)
{
    const char *ct = http_req_header(req, "Content-Type");
    const unsigned char *body;
    struct verify *v = NULL;
    char err[256], detail[300], size[24];
    size_t len = 0;
    int not_json = 0;

    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        http_reply_problem(req, 415, NULL, NULL, "the body must be application/json", NULL);
        return;
    }
    body = http_req_body(req, &len);
    if (body == NULL || len == 0) {
        http_reply_problem(req, 400, NULL, NULL, "the body is empty", NULL);
        return;
    }
    v = calloc(1, sizeof(*v));
    if (v == NULL || (v->h = merkle_hasher_new()) == NULL) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        goto fail;
    }
    v->req = req;
    v->b = proof_bundle_parse((const char *)body, len, &not_json, err, sizeof(err));
    if (v->b == NULL) {
        snprintf(detail, sizeof(detail), "%s%s", not_json ? "" : "not a proof bundle: ", err);
        http_reply_problem(req, not_json ? 400 : 422, NULL, NULL, detail, NULL);
        goto fail;
    }
    snprintf(size, sizeof(size), "%" PRIu64, v->b->size);
    const char *params[] = {size, v->b->has_anchor ? v->b->anchor.ledger : ""};
    if (db_tenant_query(service_worker(req)->pg, api_tenant(p), 0, verify_log, v, sql_verify, 2,
                        params) != 0) {
        http_reply_problem(req, 503, NULL, NULL, "cannot reach the database", NULL);
        goto fail;
    }
    return;
fail:
    if (v != NULL)
        verify_free(v);
}

/* --- the log: checkpoint, key, consistency --------------------------------------------------- */

static void text_answer(struct http_req *req, const PGresult *res, void *arg)
{
    const char *missing = arg;
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        http_reply_problem(req, 404, NULL, NULL, missing, NULL);
        return;
    }
    http_reply(req, 200, "text/plain; charset=utf-8", PQgetvalue(res, 0, 0),
               (size_t)PQgetlength(res, 0, 0));
}

static void log_checkpoint(struct http_req *req, const struct principal *p)
{
    api_query(req, p, text_answer, (void *)"the log has no signed checkpoint yet",
              "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1", 0, NULL);
}

static void log_key(struct http_req *req, const struct principal *p)
{
    /* One line: the key text and a newline. */
    api_query(
        req, p, text_answer, (void *)"the log has no key yet: tagproof-anchor records it at start",
        "SELECT vkey || E'\\n' FROM log_keys ORDER BY last_used_at DESC, vkey LIMIT 1", 0, NULL);
}

struct consistency {
    struct http_req *req;
    uint64_t from, to;
    struct merkle_hasher *h;
    struct proof_nodes nodes;
};

/*
 * The newest checkpoint's size and the planned nodes, in one statement: the plan depends on
 * the two sizes alone, so it is made before the query.
 */
static const char sql_consistency[] =
    "SELECT (SELECT size FROM checkpoints ORDER BY size DESC LIMIT 1),"
    " (SELECT string_agg(n.level || ' ' || n.idx || ' ' || encode(n.hash, 'hex'), E'\\n')"
    "  FROM merkle_nodes n JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx)"
    "  USING (level, idx))";

static void consistency_rows(void *arg, const struct pg_result_info *r)
{
    struct consistency *c = arg;
    struct http_req *req = c->req;
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    char hex[2 * MERKLE_HASH_LEN + 1], detail[160];
    uint64_t latest;
    size_t n = 0;
    json_t *list;

    if (r->status != PG_OK) {
        api_reply_db_error(req, r);
        goto out;
    }
    if (col_u64(r->res, 0, 0, &latest) != 0 || c->to > latest) {
        snprintf(detail, sizeof(detail), "the log has no signed checkpoint of %" PRIu64 " leaves",
                 c->to);
        if (!PQgetisnull(r->res, 0, 0))
            snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail),
                     " or more (its newest has %s)", PQgetvalue(r->res, 0, 0));
        http_reply_problem(req, 404, NULL, NULL, detail, NULL);
        goto out;
    }
    if (!PQgetisnull(r->res, 0, 1)) {
        char *rows = strdup(PQgetvalue(r->res, 0, 1)), *save = NULL;
        for (char *line = rows ? strtok_r(rows, "\n", &save) : NULL; line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            unsigned level;
            uint64_t idx;
            char h[65];
            uint8_t hb[MERKLE_HASH_LEN];
            if (sscanf(line, "%u %" SCNu64 " %64s", &level, &idx, h) == 3 &&
                proof_unhex(h, hb, sizeof(hb)) == 0)
                proof_nodes_set(&c->nodes, level, idx, hb, sizeof(hb));
        }
        free(rows);
    }
    if (!proof_nodes_complete(&c->nodes) ||
        proof_consistency(c->h, &c->nodes, c->from, c->to, proof, &n) != 0) {
        reply_internal(req, "the log's store lacks subtree hashes of a signed checkpoint");
        goto out;
    }
    list = json_array();
    for (size_t i = 0; i < n; i++) {
        proof_hex(proof[i], MERKLE_HASH_LEN, hex);
        json_array_append_new(list, json_string(hex));
    }
    http_reply_json(req, 200,
                    json_pack("{s:I, s:I, s:o}", "from", (json_int_t)c->from, "to",
                              (json_int_t)c->to, "proof", list));
out:
    merkle_hasher_free(c->h);
    free(c);
}

static void log_consistency(struct http_req *req, const struct principal *p)
{
    const char *from = http_req_query(req, "from"), *to = http_req_query(req, "to");
    struct consistency *c = NULL;
    char *levels = NULL, *idxs = NULL;
    uint64_t m, n;

    if (parse_u63(from, &m) != 0 || parse_u63(to, &n) != 0 || m == 0 || m > n) {
        http_reply_problem(req, 400, NULL, NULL,
                           "from and to must be tree sizes in decimal, 1 <= from <= to", NULL);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->h = merkle_hasher_new()) == NULL) {
        free(c);
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    c->req = req;
    c->from = m;
    c->to = n;
    if (proof_plan_consistency(c->h, m, n, &c->nodes) != 0 ||
        plan_arrays(&c->nodes, &levels, &idxs) != 0) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        goto fail;
    }
    const char *v[] = {levels, idxs};
    if (db_tenant_query(service_worker(req)->pg, api_tenant(p), 0, consistency_rows, c,
                        sql_consistency, 2, v) != 0) {
        http_reply_problem(req, 503, NULL, NULL, "cannot reach the database", NULL);
        goto fail;
    }
    free(levels);
    free(idxs);
    return;
fail:
    free(levels);
    free(idxs);
    merkle_hasher_free(c->h);
    free(c);
}

/* --- anchors ---------------------------------------------------------------------------------- */

#define ANCHOR_JSON                                                                                \
    "json_build_object('id', t.id, 'checkpoint_size', t.checkpoint_size,"                          \
    " 'root', (SELECT encode(cp.root, 'hex') FROM checkpoints cp WHERE cp.size = "                 \
    "t.checkpoint_size),"                                                                          \
    " 'ledger', t.ledger, 'state', t.state, 'attempts', t.attempts, 'last_error', t.last_error,"   \
    " 'ledger_ref', t.ledger_ref, 'chain_id', t.chain_id, 'block_number', t.block_number,"         \
    " 'block_hash', t.block_hash, 'created_at', t.created_at, 'submitted_at', t.submitted_at,"     \
    " 'confirmed_at', t.confirmed_at, 'updated_at', t.updated_at)"

/*
 * Oldest first, as every list of the API (and docs/openapi.yaml) runs; ?state= narrows it
 * (state=pending: what is in flight). The cursor is the last id of the previous page (ids
 * are bigserial, not the UUIDs of api_list_sql). $1 cursor ('' for the first page), $2 page
 * size, $3 state filter ('' for all).
 */
static const char sql_anchor_list[] =
    "WITH page AS (SELECT * FROM anchors WHERE ($1::text = '' OR id > $1::bigint)"
    "   AND ($3::text = '' OR state = $3) ORDER BY id LIMIT $2::int + 1),"
    " shown AS (SELECT * FROM page ORDER BY id LIMIT $2::int)"
    " SELECT json_build_object('items',"
    "  coalesce((SELECT json_agg(" ANCHOR_JSON " ORDER BY t.id) FROM shown t), '[]'::json),"
    "  'next_cursor', CASE WHEN (SELECT count(*) FROM page) > $2::int"
    "   THEN (SELECT max(id)::text FROM shown) END)";

static void anchor_list(struct http_req *req, const struct principal *p)
{
    static const char *const states[] = {"pending", "submitted", "confirmed", "failed"};
    const char *limit_s = http_req_query(req, "limit"), *cursor_s = http_req_query(req, "cursor");
    const char *state = http_req_query(req, "state");
    char limit[8] = "100", cursor[24] = "";
    uint64_t n;
    int known = state == NULL;

    if (limit_s != NULL) {
        if (parse_u63(limit_s, &n) != 0 || n < 1 || n > 1000) {
            http_reply_problem(req, 400, NULL, NULL, "limit must be 1 to 1000", NULL);
            return;
        }
        snprintf(limit, sizeof(limit), "%" PRIu64, n);
    }
    if (cursor_s != NULL) {
        if (parse_u63(cursor_s, &n) != 0 || n == 0) {
            http_reply_problem(req, 400, NULL, NULL, "cursor is not one this API gave", NULL);
            return;
        }
        snprintf(cursor, sizeof(cursor), "%" PRIu64, n);
    }
    for (size_t i = 0; i < 4 && !known; i++)
        known = strcmp(state, states[i]) == 0;
    if (!known) {
        http_reply_problem(req, 400, NULL, NULL,
                           "state must be pending, submitted, confirmed or failed", NULL);
        return;
    }
    const char *v[] = {cursor, limit, state != NULL ? state : ""};
    api_query_json(req, p, 200, "not found", sql_anchor_list, 3, v);
}

static void anchor_get(struct http_req *req, const struct principal *p)
{
    const char *s = http_req_param(req, 0);
    char id[24];
    uint64_t n;

    if (parse_u63(s, &n) != 0 || n == 0) {
        http_reply_problem(req, 400, NULL, NULL, "the id in the path is not an anchor id", NULL);
        return;
    }
    snprintf(id, sizeof(id), "%" PRIu64, n);
    const char *v[] = {id};
    api_query_json(req, p, 200, "no such anchor",
                   "SELECT " ANCHOR_JSON " FROM anchors t WHERE t.id = $1::bigint", 1, v);
}

/* --- routes ----------------------------------------------------------------------------------- */

static void on_proof_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, proof_get);
}

static void on_proof_verify(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, proof_verify);
}

static void on_log_checkpoint(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, log_checkpoint);
}

static void on_log_key(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, log_key);
}

static void on_log_consistency(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, log_consistency);
}

static void on_anchors_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, anchor_list);
}

static void on_anchor_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, anchor_get);
}

int proofs_register(struct httpd *h, struct factory_app *app)
{
    /* Registered here, on the setup thread, so that the workers only look the family up. */
    if (metrics_counter(service_metrics(app->svc), CACHE_METRIC, CACHE_METRIC_HELP, "result") ==
        NULL)
        return -1;
    return httpd_route(h, HTTP_GET, "/v1/proofs/{}", "/v1/proofs/{tag_id}", on_proof_get, NULL) ||
           httpd_route(h, HTTP_POST, "/v1/proofs/verify", "/v1/proofs/verify", on_proof_verify,
                       NULL) ||
           httpd_route(h, HTTP_GET, "/v1/log/checkpoint", "/v1/log/checkpoint", on_log_checkpoint,
                       NULL) ||
           httpd_route(h, HTTP_GET, "/v1/log/key", "/v1/log/key", on_log_key, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/log/consistency", "/v1/log/consistency",
                       on_log_consistency, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/anchors", "/v1/anchors", on_anchors_get, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/anchors/{}", "/v1/anchors/{id}", on_anchor_get, NULL);
}
