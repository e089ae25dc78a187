/*
 * tenants: factories, their API keys, the exchange of a key for a token, and the public keys
 * tokens are checked with (SPEC §6). PostgreSQL builds each JSON answer; C checks the input
 * and who may ask.
 */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "http.h"
#include "log.h"

/* --- lists ----------------------------------------------------------------------------------- */

int api_list_sql(char *out, size_t cap, const char *from, const char *filter, const char *object)
{
    /*
     * $1 the cursor ('' for the first page), $2 the page size; ids are UUIDv7, so id order is
     * creation order. One row more than asked tells whether there is a next page.
     */
    int n =
        snprintf(out, cap,
                 "WITH page AS (SELECT * FROM %s WHERE (%s) AND ($1::text = '' OR id > $1::uuid)"
                 "  ORDER BY id LIMIT $2::int + 1),"
                 " shown AS (SELECT * FROM page ORDER BY id LIMIT $2::int)"
                 " SELECT json_build_object('items',"
                 "  coalesce((SELECT json_agg(%s ORDER BY t.id) FROM shown t), '[]'::json),"
                 "  'next_cursor', CASE WHEN (SELECT count(*) FROM page) > $2::int"
                 "   THEN (SELECT id::text FROM shown ORDER BY id DESC LIMIT 1) END)",
                 from, filter, object);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

void api_new_id(char out[UUID_STR_LEN + 1])
{
    uint8_t b[16];
    uuid_v7(b);
    uuid_format(b, out);
}

/* --- factories ---------------------------------------------------------------------------------
 */

#define FACTORY_JSON "json_build_object('id', t.id, 'name', t.name, 'created_at', t.created_at)"

static void factory_create(struct http_req *req, const struct principal *p)
{
    json_t *body = api_body_object(req);
    const char *name;
    char id[UUID_STR_LEN + 1];

    if (body == NULL)
        return;
    if ((name = api_member_str(req, body, "name", 1, 200)) != NULL) {
        api_new_id(id);
        const char *v[] = {id, name};
        api_query_json(req, p, 201, "not created",
                       "INSERT INTO factories AS t (id, name) VALUES ($1, $2)"
                       " RETURNING " FACTORY_JSON,
                       2, v);
    }
    json_decref(body);
}

static void factory_list(struct http_req *req, const struct principal *p)
{
    char limit[8], cursor[UUID_STR_LEN + 1], sql[1024];
    if (api_page(req, limit, cursor) != 0)
        return;
    api_list_sql(sql, sizeof(sql), "factories", "true", FACTORY_JSON);
    const char *v[] = {cursor, limit};
    api_query_json(req, p, 200, "not found", sql, 2, v);
}

static void on_factories_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, factory_create);
}

static void on_factories_get(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ADMIN, factory_list);
}

/* --- API keys ------------------------------------------------------------------------------- */

struct key_create {
    struct apikey key;
};

static void key_created(struct http_req *req, const PGresult *res, void *arg)
{
    struct key_create *k = arg;
    json_t *doc = NULL;

    if (PQntuples(res) == 0) {
        http_reply_problem(req, 404, NULL, NULL, "no such factory", NULL);
        goto out;
    }
    doc = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (doc == NULL) {
        http_reply_problem(req, 500, NULL, NULL, "the key was not created", NULL);
    } else {
        /* The only time the whole key is shown; the database holds its hash. */
        json_object_set_new(doc, "key", json_string(k->key.key));
        http_add_header(req, "Cache-Control", "no-store");
        http_reply_json(req, 201, doc);
    }
out:
    explicit_bzero(k, sizeof(*k));
    free(k);
}

static void key_create(struct http_req *req, const struct principal *p)
{
    json_t *body = api_body_object(req);
    const char *role_s, *name, *fid_s;
    char fid[UUID_STR_LEN + 1] = "", hash_hex[2 * APIKEY_HASH_LEN + 3];
    enum jwt_role role;
    struct key_create *k = NULL;

    if (body == NULL)
        return;
    if ((role_s = api_member_str(req, body, "role", 1, 20)) == NULL ||
        (name = api_member_str(req, body, "name", 0, 200)) == NULL ||
        (fid_s = api_member_str(req, body, "factory_id", 0, 64)) == NULL)
        goto out;
    if (jwt_role_parse(role_s, &role) != 0) {
        http_reply_problem(req, 422, NULL, NULL, "\"role\" must be admin, factory_user or viewer",
                           NULL);
        goto out;
    }
    if (*fid_s != '\0' && uuid_canonical(fid_s, strlen(fid_s), fid) != 0) {
        http_reply_problem(req, 422, NULL, NULL, "\"factory_id\" is not a UUID", NULL);
        goto out;
    }
    if (p->role != JWT_ROLE_ADMIN) {
        /* A factory user makes keys for its own factory only, and never an admin key. */
        if (role == JWT_ROLE_ADMIN) {
            http_reply_problem(req, 403, NULL, NULL, "only an admin may create admin keys", NULL);
            goto out;
        }
        if (*fid != '\0' && strcmp(fid, p->factory_id) != 0) {
            http_reply_problem(req, 404, NULL, NULL, "no such factory", NULL);
            goto out;
        }
        snprintf(fid, sizeof(fid), "%s", p->factory_id);
    }
    if ((role == JWT_ROLE_ADMIN) != (*fid == '\0')) {
        http_reply_problem(req, 422, NULL, NULL,
                           role == JWT_ROLE_ADMIN ? "an admin key has no \"factory_id\""
                                                  : "\"factory_id\" is required for this role",
                           NULL);
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL || apikey_generate(&k->key) != 0) {
        free(k);
        http_reply_problem(req, 503, NULL, NULL, "cannot generate a key", NULL);
        goto out;
    }
    strcpy(hash_hex, "\\x");
    for (size_t i = 0; i < APIKEY_HASH_LEN; i++)
        snprintf(hash_hex + 2 + 2 * i, 3, "%02x", k->key.hash[i]);
    {
        const char *v[] = {k->key.id, *fid ? fid : NULL, jwt_role_name(role),
                           name,      hash_hex,          k->key.prefix};
        /* The factory must be visible to the caller: another tenant's id is "not found". */
        api_query(req, p, key_created, k,
                  "INSERT INTO api_keys AS t (id, factory_id, role, name, secret_hash)"
                  " SELECT $1, f.id, $3, $4, $5::bytea FROM (SELECT $2::uuid AS want) w"
                  " LEFT JOIN factories f ON f.id = w.want"
                  " WHERE w.want IS NULL OR f.id IS NOT NULL"
                  " RETURNING json_build_object('id', t.id, 'prefix', $6::text, 'factory_id',"
                  "  t.factory_id, 'role', t.role, 'name', t.name, 'created_at', t.created_at)",
                  6, v);
    }
out:
    json_decref(body);
}

static void key_revoke_done(struct http_req *req, const PGresult *res, void *arg)
{
    (void)arg;
    if (PQntuples(res) < 1)
        http_reply_problem(req, 404, NULL, NULL, "no such API key", NULL);
    else
        http_reply(req, 204, NULL, NULL, 0);
}

static void key_revoke(struct http_req *req, const struct principal *p)
{
    const char *id = http_req_param(req, 0);
    size_t n = strlen(id);
    if (n != APIKEY_ID_LEN || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789") != n) {
        http_reply_problem(req, 404, NULL, NULL, "no such API key", NULL);
        return;
    }
    api_query(req, p, key_revoke_done, NULL,
              "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
              " RETURNING id",
              1, &id);
}

static void on_keys_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, key_create);
}

static void on_key_delete(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_WRITERS, key_revoke);
}

/* --- tokens ---------------------------------------------------------------------------------- */

#define TOKEN_LIFETIME_S 900

static void token_issue(struct http_req *req, const struct principal *p)
{
    struct factory_app *app = api_app(req);
    struct jwt_claims c;
    char err[160], *token = NULL;

    if (p->key_id[0] == '\0') {
        http_add_header(req, "WWW-Authenticate", "Bearer realm=\"tagproof\"");
        http_reply_problem(req, 401, NULL, NULL, "a token is exchanged for an API key only", NULL);
        return;
    }
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", p->subject);
    c.role = p->role;
    snprintf(c.factory_id, sizeof(c.factory_id), "%s", p->factory_id);
    c.iat = c.nbf = (int64_t)time(NULL);
    c.exp = c.iat + TOKEN_LIFETIME_S;
    token = jwt_sign(app->signer, &app->policy, &c, err, sizeof(err));
    if (token == NULL) {
        log_error("cannot sign a token: %s", err);
        http_reply_problem(req, 500, NULL, NULL, "cannot sign a token", NULL);
        return;
    }
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:i}", "access_token", token, "token_type", "Bearer",
                              "expires_in", TOKEN_LIFETIME_S));
    free(token);
}

static void on_token_post(struct http_req *req, void *arg)
{
    (void)arg;
    api_authenticate(req, API_ANY, token_issue);
}

static void on_jwks_get(struct http_req *req, void *arg)
{
    struct factory_app *app = arg;
    http_add_header(req, "Cache-Control", "public, max-age=300");
    http_reply(req, 200, "application/json", app->jwks_json, strlen(app->jwks_json));
}

int tenants_register(struct httpd *h, struct factory_app *app)
{
    return httpd_route(h, HTTP_POST, "/v1/factories", "/v1/factories", on_factories_post, NULL) ||
           httpd_route(h, HTTP_GET, "/v1/factories", "/v1/factories", on_factories_get, NULL) ||
           httpd_route(h, HTTP_POST, "/v1/api-keys", "/v1/api-keys", on_keys_post, NULL) ||
           httpd_route(h, HTTP_DELETE, "/v1/api-keys/{}", "/v1/api-keys/{id}", on_key_delete,
                       NULL) ||
           httpd_route(h, HTTP_POST, "/v1/auth/token", "/v1/auth/token", on_token_post, NULL) ||
           httpd_route(h, HTTP_GET, "/.well-known/jwks.json", "/.well-known/jwks.json", on_jwks_get,
                       app);
}
