/*
 * db: tenant-scoped transactions on the worker's pool (see db.h). Each step waits for the one
 * before it, so a failed BEGIN or tenant never lets a statement run outside its transaction.
 */
#include "db.h"

#include <stdlib.h>
#include <string.h>

struct db_txn {
    struct pg_conn *conn;
    db_txn_fn cb;
    void *arg;
    int timeout_ms;
    int begin_failed;
    char tenant[40];
    /* db_txn_commit's caller */
    pg_result_fn commit_cb;
    void *commit_arg;
};

static void txn_free(struct db_txn *t)
{
    if (t->conn != NULL)
        pg_conn_release(t->conn); /* rolls back whatever is still open */
    free(t);
}

static void on_begin(void *arg, const struct pg_result_info *r)
{
    struct db_txn *t = arg;
    if (r->status != PG_OK)
        t->begin_failed = 1;
}

static void on_tenant(void *arg, const struct pg_result_info *r)
{
    struct db_txn *t = arg;
    if (r->status != PG_OK || t->begin_failed) {
        struct pg_result_info f = *r;
        if (f.status == PG_OK) {
            f.status = PG_ERR_QUERY;
            f.message = "the transaction did not start";
        }
        t->cb(t->arg, NULL, &f);
        txn_free(t);
        return;
    }
    t->cb(t->arg, t, NULL);
}

static void on_acquired(void *arg, struct pg_conn *conn, enum pg_status status)
{
    struct db_txn *t = arg;
    const char *tenant = t->tenant;

    if (conn == NULL) {
        struct pg_result_info f = {.status = status, .message = "no database connection"};
        t->cb(t->arg, NULL, &f);
        free(t);
        return;
    }
    t->conn = conn;
    if (pg_conn_query(conn, t->timeout_ms, on_begin, t, "BEGIN", 0, NULL) != 0 ||
        pg_conn_query(conn, t->timeout_ms, on_tenant, t,
                      "SELECT set_config('tagproof.tenant', $1, true)", 1, &tenant) != 0) {
        struct pg_result_info f = {.status = PG_ERR_CONNECTION,
                                   .message = "cannot start a transaction"};
        t->cb(t->arg, NULL, &f);
        txn_free(t);
    }
}

int db_txn_begin(struct pg_pool *pool, const char *tenant, int timeout_ms, db_txn_fn cb, void *arg)
{
    struct db_txn *t = NULL;
    if (tenant == NULL || strlen(tenant) >= sizeof(t->tenant) || *tenant == '\0')
        return -1;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    t->cb = cb;
    t->arg = arg;
    t->timeout_ms = timeout_ms;
    strcpy(t->tenant, tenant);
    if (pg_pool_acquire(pool, timeout_ms, on_acquired, t) != 0) {
        free(t);
        return -1;
    }
    return 0;
}

struct pg_conn *db_txn_conn(struct db_txn *t)
{
    return t->conn;
}

static void on_commit(void *arg, const struct pg_result_info *r)
{
    struct db_txn *t = arg;
    struct pg_result_info f = *r;
    /* COMMIT of a transaction that had failed answers ROLLBACK without an error. */
    if (f.status == PG_OK && (f.res == NULL || strcmp(PQcmdStatus((PGresult *)f.res), "COMMIT"))) {
        f.status = PG_ERR_QUERY;
        f.message = "the transaction was rolled back";
    }
    t->commit_cb(t->commit_arg, &f);
    txn_free(t);
}

int db_txn_commit(struct db_txn *t, pg_result_fn cb, void *arg)
{
    t->commit_cb = cb;
    t->commit_arg = arg;
    if (pg_conn_query(t->conn, t->timeout_ms, on_commit, t, "COMMIT", 0, NULL) != 0) {
        txn_free(t);
        return -1;
    }
    return 0;
}

void db_txn_rollback(struct db_txn *t)
{
    txn_free(t);
}

/* --- one statement ---------------------------------------------------------------------- */

struct tenant_query {
    db_result_fn cb;
    void *arg;
    int timeout_ms;
    char *sql;
    int nparams;
    char **values;
    struct db_txn *t;
    PGresult *res; /* the statement's result, kept across the COMMIT */
};

static void tq_free(struct tenant_query *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->values[i]);
    free(q->values);
    free(q->sql);
    if (q->res != NULL)
        PQclear(q->res);
    free(q);
}

static void tq_committed(void *arg, const struct pg_result_info *r)
{
    struct tenant_query *q = arg;
    if (r->status == PG_OK) {
        struct pg_result_info ok = {.status = PG_OK, .res = q->res};
        q->cb(q->arg, &ok);
    } else {
        q->cb(q->arg, r);
    }
    tq_free(q);
}

static void tq_done(void *arg, const struct pg_result_info *r)
{
    struct tenant_query *q = arg;
    struct db_txn *t = q->t;

    if (r->status != PG_OK) {
        q->cb(q->arg, r);
        db_txn_rollback(t);
        tq_free(q);
        return;
    }
    q->res = PQcopyResult(r->res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (q->res == NULL) {
        struct pg_result_info f = {.status = PG_ERR_QUERY, .message = "out of memory"};
        q->cb(q->arg, &f);
        db_txn_rollback(t);
        tq_free(q);
        return;
    }
    if (db_txn_commit(t, tq_committed, q) != 0) {
        struct pg_result_info f = {.status = PG_ERR_CONNECTION, .message = "cannot commit"};
        q->cb(q->arg, &f);
        tq_free(q);
    }
}

static void tq_begun(void *arg, struct db_txn *t, const struct pg_result_info *failure)
{
    struct tenant_query *q = arg;
    if (t == NULL) {
        q->cb(q->arg, failure);
        tq_free(q);
        return;
    }
    q->t = t;
    if (pg_conn_query(db_txn_conn(t), q->timeout_ms, tq_done, q, q->sql, q->nparams,
                      (const char *const *)q->values) != 0) {
        struct pg_result_info f = {.status = PG_ERR_CONNECTION, .message = "cannot send"};
        q->cb(q->arg, &f);
        db_txn_rollback(t);
        tq_free(q);
    }
}

int db_tenant_query(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                    void *arg, const char *sql, int nparams, const char *const *values)
{
    struct tenant_query *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return -1;
    q->cb = cb;
    q->arg = arg;
    q->timeout_ms = timeout_ms;
    q->sql = strdup(sql);
    q->values = nparams > 0 ? calloc((size_t)nparams, sizeof(*q->values)) : NULL;
    if (q->sql == NULL || (nparams > 0 && q->values == NULL))
        goto fail;
    q->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        if (values[i] != NULL && (q->values[i] = strdup(values[i])) == NULL)
            goto fail;
    if (db_txn_begin(pool, tenant, timeout_ms, tq_begun, q) != 0)
        goto fail;
    return 0;
fail:
    tq_free(q);
    return -1;
}
