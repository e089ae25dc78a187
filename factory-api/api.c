/*
 * api: the factory API's common ground (see api.h). Authentication runs as a short chain of
 * callbacks on the worker's loop: the client IP's failure budget (Redis), the credential (an
 * API key looked up in PostgreSQL, or a token verified against the key set in memory), the
 * role, then the caller's rate limit (Redis).
 */
#include "api.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db.h"
#include "http.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "proxies.h"
#include "redis.h"
#include "service.h"

/* --- the program's state ------------------------------------------------------------------ */

int api_app_init(struct factory_app *app, struct service *svc)
{
    const struct config *cfg = service_config(svc);
    struct metrics *m = service_metrics(svc);
    char path[4096], err[256];

    memset(app, 0, sizeof(*app));
    app->svc = svc;
    app->cfg = cfg;
    if (cfg->jwt_key_file != NULL) {
        snprintf(path, sizeof(path), "%s", cfg->jwt_key_file);
    } else {
        if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
            log_error("cannot create %s: %s", cfg->data_dir, strerror(errno));
            return -1;
        }
        snprintf(path, sizeof(path), "%s/jwt-signing.pem", cfg->data_dir);
    }
    app->signer = jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err));
    if (app->signer == NULL) {
        log_error("TAGPROOF_JWT_KEY_FILE: %s", err);
        return -1;
    }
    app->jwks_json = jwt_signer_jwks_json(app->signer);
    struct jwks_config jc = {
        .file = cfg->jwks_file, .url = cfg->jwks_url, .pinned_json = app->jwks_json};
    if (app->jwks_json == NULL || (app->jwks = jwks_new(&jc, err, sizeof(err))) == NULL ||
        jwks_start(app->jwks, err, sizeof(err)) != 0) {
        log_error("trusted token keys: %s", app->jwks_json == NULL ? "out of memory" : err);
        return -1;
    }
    app->proxies = proxies_new(cfg->trusted_proxies, err, sizeof(err));
    if (app->proxies == NULL) {
        log_error("%s", err);
        return -1;
    }
    app->policy.issuer = cfg->jwt_issuer;
    app->policy.audience = cfg->jwt_audience;
    app->caller_rule.per_minute = cfg->rate_limit_per_min;
    app->caller_rule.burst = cfg->rate_limit_burst;
    app->fail_rule.per_minute = cfg->auth_fail_per_min;
    app->fail_rule.burst = cfg->auth_fail_per_min;
    app->m_auth_failures = metrics_counter(m, "tagproof_auth_failures_total",
                                           "Requests refused for their credentials", "reason");
    app->m_rate_limited =
        metrics_counter(m, "tagproof_rate_limited_total", "Requests answered 429", "scope");
    app->m_rate_errors =
        metrics_counter(m, "tagproof_rate_limit_errors_total",
                        "Rate-limit checks Redis could not answer (the request was allowed)", NULL);
    return 0;
}

void api_app_fini(struct factory_app *app)
{
    jwks_free(app->jwks);
    proxies_free(app->proxies);
    jwt_signer_free(app->signer);
    free(app->jwks_json);
    memset(app, 0, sizeof(*app));
}

struct factory_app *api_app(struct http_req *req)
{
    return service_state(service_worker(req)->svc);
}

const char *api_tenant(const struct principal *p)
{
    return p->role == JWT_ROLE_ADMIN ? DB_TENANT_ALL : p->factory_id;
}

/* --- authentication ------------------------------------------------------------------------ */

struct auth_call {
    struct http_req *req;
    unsigned roles;
    api_authed_fn fn;
    struct principal who;
    unsigned char hash[APIKEY_HASH_LEN];
    const char *failure; /* why the credential was refused, for the 401 */
    int token_retried;
    /* A bearer token, checked before the address's failure budget (see api_authenticate). */
    int budget_later;
    int caller_ask; /* the caller's limit among those of auth_ok */
    char ipkey[96];
};

static void auth_token(struct auth_call *a);

static void reply_429(struct http_req *req, int retry_after_s, const char *detail)
{
    char ra[16];
    snprintf(ra, sizeof(ra), "%d", retry_after_s > 0 ? retry_after_s : 1);
    http_add_header(req, "Retry-After", ra);
    http_reply_problem(req, 429, NULL, NULL, detail, NULL);
}

/*
 * A rate limit Redis could not check: the request goes on (a Redis outage must not stop the
 * API), the metric counts each one, and the log says so once per 10 s rather than on every
 * request of an outage.
 */
static void rate_error(struct factory_app *app)
{
    int64_t now = (int64_t)time(NULL), last = atomic_load(&app->rate_warned_s);

    metric_inc(app->m_rate_errors);
    if (now - last >= 10 && atomic_compare_exchange_strong(&app->rate_warned_s, &last, now))
        log_warn("rate limits not checked: Redis did not answer; requests are allowed"
                 " (tagproof_rate_limit_errors_total counts them)");
}

static void after_fail_charged(void *arg, enum ratelimit_verdict v, int retry_after_s)
{
    struct auth_call *a = arg;
    struct factory_app *app = api_app(a->req);

    if (v == RATELIMIT_DENY) {
        metric_inc(app->m_rate_limited, "auth_failures");
        reply_429(a->req, retry_after_s, "too many failed authentications from this address");
    } else {
        if (v == RATELIMIT_ERROR)
            rate_error(app);
        http_add_header(a->req, "WWW-Authenticate",
                        "Bearer realm=\"tagproof\", error=\"invalid_token\"");
        http_reply_problem(a->req, 401, NULL, NULL, a->failure, NULL);
    }
    free(a);
}

/* Refuses the credential: the failure counts against the client's address. */
static void auth_fail(struct auth_call *a, const char *reason, const char *detail)
{
    struct factory_app *app = api_app(a->req);
    metric_inc(app->m_auth_failures, reason);
    a->failure = detail;
    if (ratelimit_check(service_worker(a->req)->redis, a->ipkey, &app->fail_rule, 1,
                        after_fail_charged, a) != 0)
        after_fail_charged(a, RATELIMIT_ERROR, 0);
}

static void after_limits(void *arg, enum ratelimit_verdict v, int retry_after_s, int which)
{
    struct auth_call *a = arg;
    struct factory_app *app = api_app(a->req);

    if (v == RATELIMIT_DENY && which == a->caller_ask) {
        metric_inc(app->m_rate_limited, "caller");
        reply_429(a->req, retry_after_s, "rate limit exceeded for this API key or token");
    } else if (v == RATELIMIT_DENY) {
        metric_inc(app->m_rate_limited, "auth_failures");
        reply_429(a->req, retry_after_s, "too many failed authentications from this address");
    } else {
        if (v == RATELIMIT_ERROR)
            rate_error(app);
        a->fn(a->req, &a->who);
    }
    free(a);
}

/*
 * The credential is good: the role, then the caller's rate limit — for a bearer token in the
 * same round trip as the look at the address's failure budget, which an address that failed
 * too often fails first.
 */
static void auth_ok(struct auth_call *a)
{
    struct factory_app *app = api_app(a->req);
    struct ratelimit_ask asks[2];
    char key[160];
    int n = 0;

    if ((a->roles & (1u << a->who.role)) == 0) {
        http_reply_problem(a->req, 403, NULL, NULL,
                           a->who.role == JWT_ROLE_VIEWER ? "viewers may only read"
                                                          : "this role may not do this",
                           NULL);
        free(a);
        return;
    }
    snprintf(key, sizeof(key), "tp:rl:c:%s", a->who.subject);
    if (a->budget_later)
        asks[n++] = (struct ratelimit_ask){.key = a->ipkey, .rule = &app->fail_rule, .charge = 0};
    a->caller_ask = n;
    asks[n++] = (struct ratelimit_ask){.key = key, .rule = &app->caller_rule, .charge = 1};
    if (ratelimit_check_many(service_worker(a->req)->redis, asks, n, after_limits, a) != 0)
        after_limits(a, RATELIMIT_ERROR, 0, -1);
}

static void ignore_result(void *arg, const struct pg_result_info *r)
{
    (void)arg;
    (void)r;
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void on_key_row(void *arg, const struct pg_result_info *r)
{
    struct auth_call *a = arg;
    unsigned char stored[APIKEY_HASH_LEN];
    const char *hex;
    size_t n = 0;

    if (r->status != PG_OK) {
        api_reply_db_error(a->req, r);
        free(a);
        return;
    }
    if (PQntuples(r->res) != 1) {
        auth_fail(a, "unknown_key", "the API key is not valid");
        return;
    }
    /* The hash as hex digits (encode(), whatever the server's bytea_output). */
    hex = PQgetvalue(r->res, 0, 2);
    if (strlen(hex) == 2 * APIKEY_HASH_LEN) {
        for (n = 0; n < APIKEY_HASH_LEN; n++) {
            int hi = hex_nibble(hex[2 * n]), lo = hex_nibble(hex[2 * n + 1]);
            if (hi < 0 || lo < 0)
                break;
            stored[n] = (unsigned char)(hi << 4 | lo);
        }
    }
    if (!apikey_hash_matches(stored, n, a->hash)) {
        auth_fail(a, "wrong_secret", "the API key is not valid");
        return;
    }
    if (strcmp(PQgetvalue(r->res, 0, 3), "t") == 0) {
        auth_fail(a, "revoked_key", "the API key has been revoked");
        return;
    }
    if (jwt_role_parse(PQgetvalue(r->res, 0, 1), &a->who.role) != 0) {
        api_reply_db_error(
            a->req, &(struct pg_result_info){.status = PG_ERR_QUERY, .message = "unknown role"});
        free(a);
        return;
    }
    snprintf(a->who.factory_id, sizeof(a->who.factory_id), "%s", PQgetvalue(r->res, 0, 0));
    snprintf(a->who.subject, sizeof(a->who.subject), "key:%s", a->who.key_id);
    /* last_used_at moves at most once a minute: most requests write nothing. */
    if (PQgetisnull(r->res, 0, 4) || atoll(PQgetvalue(r->res, 0, 4)) >= 60) {
        const char *id = a->who.key_id;
        pg_query(service_worker(a->req)->pg, 0, ignore_result, NULL,
                 "SELECT tagproof_api_key_touch($1)", 1, &id);
    }
    auth_ok(a);
}

static void token_retry(void *arg)
{
    auth_token(arg);
}

static void auth_token(struct auth_call *a)
{
    struct factory_app *app = api_app(a->req);
    const char *h = http_req_header(a->req, "Authorization");
    /* RFC 9110 §11.4: the scheme and its credentials are separated by one or more spaces. */
    const char *token = h + 7 + strspn(h + 7, " ");
    struct jwt_claims c;
    const char *why = NULL;
    uint64_t gen = 0;
    enum jwt_result res = jwks_verify(app->jwks, &app->policy, token, strlen(token),
                                      (int64_t)time(NULL), &c, &why, &gen);

    if (res == JWT_UNKNOWN_KEY && !a->token_retried) {
        /* Perhaps the issuer rotated its keys: wait once for a fresh key set. */
        a->token_retried = 1;
        if (jwks_refresh_wait(app->jwks, gen, http_req_base(a->req), token_retry, a) != NULL)
            return;
    }
    if (res != JWT_OK) {
        auth_fail(a, jwt_result_name(res), "the bearer token is not valid");
        return;
    }
    a->who.role = c.role;
    snprintf(a->who.factory_id, sizeof(a->who.factory_id), "%s", c.factory_id);
    snprintf(a->who.subject, sizeof(a->who.subject), "%s", c.sub);
    auth_ok(a);
}

static void auth_credential(struct auth_call *a)
{
    const char *key = http_req_header(a->req, "X-Api-Key");
    const char *bearer = http_req_header(a->req, "Authorization");

    if (key != NULL) {
        const char *id = a->who.key_id;
        if (apikey_parse(key, a->who.key_id, a->hash) != 0) {
            a->who.key_id[0] = '\0';
            auth_fail(a, "malformed_key", "the API key is not valid");
            return;
        }
        if (pg_query(service_worker(a->req)->pg, 0, on_key_row, a,
                     "SELECT factory_id, role, encode(secret_hash, 'hex'), revoked, last_used_s"
                     " FROM tagproof_api_key_lookup($1)",
                     1, &id) != 0) {
            http_reply_problem(a->req, 503, NULL, NULL, "cannot check the API key", NULL);
            free(a);
        }
        return;
    }
    if (bearer != NULL && strncasecmp(bearer, "Bearer ", 7) == 0) {
        auth_token(a);
        return;
    }
    a->failure = "an X-Api-Key header or a bearer token is required";
    metric_inc(api_app(a->req)->m_auth_failures, "missing");
    http_add_header(a->req, "WWW-Authenticate", "Bearer realm=\"tagproof\"");
    http_reply_problem(a->req, 401, NULL, NULL, a->failure, NULL);
    free(a);
}

static void after_fail_budget(void *arg, enum ratelimit_verdict v, int retry_after_s)
{
    struct auth_call *a = arg;
    struct factory_app *app = api_app(a->req);

    if (v == RATELIMIT_DENY) {
        metric_inc(app->m_rate_limited, "auth_failures");
        reply_429(a->req, retry_after_s, "too many failed authentications from this address");
        free(a);
        return;
    }
    if (v == RATELIMIT_ERROR)
        rate_error(app);
    auth_credential(a);
}

void api_authenticate(struct http_req *req, unsigned roles, api_authed_fn fn)
{
    struct factory_app *app = api_app(req);
    struct auth_call *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    a->req = req;
    a->roles = roles;
    a->fn = fn;
    char ip[64];
    /* Behind a trusted reverse proxy the budget is the client's, not the proxy's. */
    proxies_client_ip(app->proxies, http_req_peer(req), http_req_header(req, "X-Forwarded-For"), ip,
                      sizeof(ip));
    snprintf(a->ipkey, sizeof(a->ipkey), "tp:rl:f:%s", ip);
    /*
     * A bearer token is checked here, without I/O, and a good one's caller limit and the
     * address's failure budget then take one round trip together (auth_ok); a bad one is
     * charged to the budget (auth_fail). Either way an address over its budget gets 429. An
     * API key needs a database lookup, and a guessed one could be right: the address's budget
     * is looked at first, so that an address that failed too often is stopped before its next
     * guess is even checked.
     */
    const char *bearer = http_req_header(req, "Authorization");
    if (http_req_header(req, "X-Api-Key") == NULL && bearer != NULL &&
        strncasecmp(bearer, "Bearer ", 7) == 0) {
        a->budget_later = 1;
        auth_token(a);
        return;
    }
    if (ratelimit_check(service_worker(req)->redis, a->ipkey, &app->fail_rule, 0, after_fail_budget,
                        a) != 0)
        after_fail_budget(a, RATELIMIT_ERROR, 0);
}

/* --- bodies, parameters, pages -------------------------------------------------------------- */

json_t *api_body_object(struct http_req *req)
{
    const char *ct = http_req_header(req, "Content-Type");
    const unsigned char *body;
    size_t len = 0;
    json_error_t jerr;
    json_t *doc;

    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        http_reply_problem(req, 415, NULL, NULL, "the body must be application/json", NULL);
        return NULL;
    }
    body = http_req_body(req, &len);
    if (body == NULL || len == 0) {
        http_reply_problem(req, 400, NULL, NULL, "the body is empty", NULL);
        return NULL;
    }
    doc = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        char detail[256];
        snprintf(detail, sizeof(detail), "the body is not a JSON object%s%s",
                 doc == NULL ? ": " : "", doc == NULL ? jerr.text : "");
        json_decref(doc);
        http_reply_problem(req, 400, NULL, NULL, detail, NULL);
        return NULL;
    }
    return doc;
}

const char *api_member_str(struct http_req *req, json_t *body, const char *name, int required,
                           size_t max_len)
{
    json_t *v = json_object_get(body, name);
    char detail[160];
    const char *s;

    if (v == NULL && !required)
        return "";
    s = json_string_value(v);
    if (s == NULL || (required && *s == '\0') || strlen(s) > max_len ||
        strlen(s) != json_string_length(v)) {
        snprintf(detail, sizeof(detail), "\"%s\" must be a string of 1 to %zu characters", name,
                 max_len);
        http_reply_problem(req, 422, NULL, NULL, detail, NULL);
        return NULL;
    }
    return s;
}

int api_param_uuid(struct http_req *req, unsigned i, char out[UUID_STR_LEN + 1])
{
    const char *s = http_req_param(req, i);
    if (s == NULL || uuid_canonical(s, strlen(s), out) != 0) {
        http_reply_problem(req, 400, NULL, NULL, "the id in the path is not a UUID", NULL);
        return -1;
    }
    return 0;
}

int api_page(struct http_req *req, char limit[8], char cursor[UUID_STR_LEN + 1])
{
    const char *l = http_req_query(req, "limit");
    const char *c = http_req_query(req, "cursor");
    char *end = NULL;
    long n = 100;

    if (l != NULL) {
        errno = 0;
        n = strtol(l, &end, 10);
        if (*l == '\0' || *end != '\0' || errno != 0 || n < 1 || n > 1000) {
            http_reply_problem(req, 400, NULL, NULL, "limit must be 1 to 1000", NULL);
            return -1;
        }
    }
    snprintf(limit, 8, "%ld", n);
    cursor[0] = '\0';
    if (c != NULL && (*c == '\0' || uuid_canonical(c, strlen(c), cursor) != 0)) {
        http_reply_problem(req, 400, NULL, NULL, "cursor is not one this API gave", NULL);
        return -1;
    }
    return 0;
}

/* --- queries ------------------------------------------------------------------------------ */

void api_reply_db_error(struct http_req *req, const struct pg_result_info *r)
{
    const char *st = r->sqlstate != NULL ? r->sqlstate : "";

    if (r->status == PG_ERR_CONNECTION || r->status == PG_ERR_TIMEOUT || r->status == PG_ERR_BUSY ||
        r->status == PG_ERR_CLOSED) {
        http_add_header(req, "Retry-After", "1");
        http_reply_problem(req, 503, NULL, NULL, "the database is unavailable; try again", NULL);
    } else if (strcmp(st, "23505") == 0) {
        http_reply_problem(req, 409, NULL, NULL, "a resource with these values already exists",
                           NULL);
    } else if (strcmp(st, "23503") == 0 || strcmp(st, "23514") == 0 || strcmp(st, "42501") == 0) {
        /* 42501: a row-level security check refused the write (another tenant's row). */
        http_reply_problem(req, 422, NULL, NULL, "the values do not refer to usable resources",
                           NULL);
    } else if (strncmp(st, "22", 2) == 0) {
        http_reply_problem(req, 400, NULL, NULL, "a value is malformed", NULL);
    } else {
        log_error("factory API query failed: %s (%s)", r->message ? r->message : "?", st);
        http_reply_problem(req, 500, NULL, NULL, "internal error", NULL);
    }
}

struct api_q {
    struct http_req *req;
    api_rows_fn done;
    void *arg;
    int status;
    const char *not_found;
};

static void on_rows(void *arg, const struct pg_result_info *r)
{
    struct api_q *q = arg;
    if (r->status != PG_OK)
        api_reply_db_error(q->req, r);
    else
        q->done(q->req, r->res, q->arg);
    free(q);
}

void api_query(struct http_req *req, const struct principal *p, api_rows_fn done, void *arg,
               const char *sql, int nparams, const char *const *values)
{
    struct api_q *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    q->req = req;
    q->done = done;
    q->arg = arg;
    if (db_tenant_query(service_worker(req)->pg, api_tenant(p), 0, on_rows, q, sql, nparams,
                        values) != 0) {
        free(q);
        http_reply_problem(req, 503, NULL, NULL, "cannot reach the database", NULL);
    }
}

static void answer_json(struct http_req *req, const PGresult *res, void *arg)
{
    struct api_q *q = arg; /* freed by on_rows after this returns */
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0))
        http_reply_problem(req, 404, NULL, NULL, q->not_found, NULL);
    else
        http_reply(req, q->status, "application/json", PQgetvalue(res, 0, 0),
                   (size_t)PQgetlength(res, 0, 0));
}

void api_query_json(struct http_req *req, const struct principal *p, int status,
                    const char *not_found_detail, const char *sql, int nparams,
                    const char *const *values)
{
    struct api_q *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    q->req = req;
    q->done = answer_json;
    q->arg = q;
    q->status = status;
    q->not_found = not_found_detail;
    if (db_tenant_query(service_worker(req)->pg, api_tenant(p), 0, on_rows, q, sql, nparams,
                        values) != 0) {
        free(q);
        http_reply_problem(req, 503, NULL, NULL, "cannot reach the database", NULL);
    }
}
