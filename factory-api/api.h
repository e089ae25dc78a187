/*
 * api: what every handler of the factory API shares — the program's context, who is calling
 * (authentication by API key or token, roles, rate limits), tenant-scoped queries whose
 * answer PostgreSQL builds as JSON, request bodies, pagination, and the problem answers.
 */
#ifndef TAGPROOF_API_H
#define TAGPROOF_API_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "apikey.h"
#include "jwt.h"
#include "ratelimit.h"
#include "uuid.h"

struct http_req;
struct service;
struct jwks;
struct metric;
struct pg_result_info;
struct proxies;

/* The program's shared state (one per process), created by api_app_new at setup. */
struct factory_app {
    struct service *svc;
    const struct config *cfg;
    struct jwt_signer *signer; /* POST /v1/auth/token */
    char *jwks_json;           /* the signer's public keys, GET /.well-known/jwks.json */
    struct jwks *jwks;         /* trusted keys: the signer's and the configured JWKS */
    struct jwt_policy policy;
    struct proxies *proxies;           /* TAGPROOF_TRUSTED_PROXIES: whose X-Forwarded-For counts */
    struct ratelimit_rule caller_rule; /* per API key or token subject */
    struct ratelimit_rule fail_rule;   /* failed authentications per client IP */
    struct metric *m_auth_failures;    /* {reason} */
    struct metric *m_rate_limited;     /* {scope} */
    struct metric *m_rate_errors;      /* Redis could not be asked: allowed */
    _Atomic int64_t rate_warned_s;     /* when that was last logged (one line per 10 s) */
};

/* 0, or -1 with a line logged. */
int api_app_init(struct factory_app *app, struct service *svc);
void api_app_fini(struct factory_app *app);

/* The caller of a request, once authenticated. */
struct principal {
    enum jwt_role role;
    char factory_id[UUID_STR_LEN + 1]; /* "" for an admin */
    char subject[JWT_SUB_MAX + 1];     /* "key:<id>" for API keys and their tokens */
    char key_id[APIKEY_ID_LEN + 1];    /* "" unless authenticated by an API key */
};

#define API_ADMIN (1u << JWT_ROLE_ADMIN)
#define API_FACTORY_USER (1u << JWT_ROLE_FACTORY_USER)
#define API_VIEWER (1u << JWT_ROLE_VIEWER)
#define API_ANY (API_ADMIN | API_FACTORY_USER | API_VIEWER)
#define API_WRITERS (API_ADMIN | API_FACTORY_USER)

/* "all" for an admin, else the caller's factory id: what db_tenant_query takes. */
const char *api_tenant(const struct principal *p);

/*
 * Called with the authenticated caller (borrowed for the call: copy what outlives it). The
 * handler then owns req as usual and must answer it.
 */
typedef void (*api_authed_fn)(struct http_req *req, const struct principal *p);

/*
 * Authenticates req (X-Api-Key, or Authorization: Bearer <JWT>), checks that the caller's role
 * is one of roles (403 otherwise) and the caller's rate limit (429 with Retry-After), then
 * calls fn. Every failure is answered here: 401 with WWW-Authenticate, 403, 429, or 503 when
 * the keys cannot be looked up. Failed authentications count against the client's IP.
 */
void api_authenticate(struct http_req *req, unsigned roles, api_authed_fn fn);

/* The app of the request's program. */
struct factory_app *api_app(struct http_req *req);

/*
 * The request's JSON object body, or NULL after answering 415 (not application/json) or 400
 * (empty, malformed, duplicate keys, not an object). Caller decrefs.
 */
json_t *api_body_object(struct http_req *req);

/*
 * Runs sql as p's tenant; the statement answers with one row whose first column is the JSON
 * document to send back with status. No row, or a NULL document, answers 404 with
 * not_found_detail. Database failures are answered as problems (api_reply_db_error).
 */
void api_query_json(struct http_req *req, const struct principal *p, int status,
                    const char *not_found_detail, const char *sql, int nparams,
                    const char *const *values);

/*
 * As api_query_json, handing the result to done instead (res borrowed until done returns);
 * done answers req.
 */
typedef void (*api_rows_fn)(struct http_req *req, const PGresult *res, void *arg);
void api_query(struct http_req *req, const struct principal *p, api_rows_fn done, void *arg,
               const char *sql, int nparams, const char *const *values);

/*
 * Answers a failed database call: 503 with Retry-After when PostgreSQL is unreachable or
 * timed out; 409 for a unique violation; 422 for a check or foreign-key violation; 400 for
 * a value PostgreSQL could not read; 500 otherwise (logged).
 */
void api_reply_db_error(struct http_req *req, const struct pg_result_info *r);

/*
 * Pagination of lists: ?limit= (1..1000, default 100) and ?cursor= (an id from a previous
 * page's next_cursor). 0, or -1 after answering 400.
 */
int api_page(struct http_req *req, char limit[8], char cursor[UUID_STR_LEN + 1]);

/* Checks a path parameter that must be a UUID; copies it lower-cased. 0, or -1 after a 400/404. */
int api_param_uuid(struct http_req *req, unsigned i, char out[UUID_STR_LEN + 1]);

/* A string member of body: NULL after answering 422 when required and missing or not a string. */
const char *api_member_str(struct http_req *req, json_t *body, const char *name, int required,
                           size_t max_len);

#endif
