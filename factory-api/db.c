/*
 * db: tenant-scoped transactions on the worker's pool (see db.h). A one-statement transaction
 * is one pipelined round trip (pg_query_tx), in which the statement runs only after BEGIN and
 * the tenant succeeded; in a transaction of several steps each waits for the one before it. So a
 * failed BEGIN or tenant never lets a statement run outside its transaction.
 */
#include "db.h"

#include <stdlib.h>
#include <string.h>

#define STMT_TENANT "tp_db_tenant"
static const char TENANT_SQL[] = "SELECT set_config('tagproof.tenant', $1, true)";

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
        pg_conn_query(conn, t->timeout_ms, on_tenant, t, TENANT_SQL, 1, &tenant) != 0) {
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

static int tenant_call(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                       void *arg, const struct pg_call *stmt)
{
    if (tenant == NULL || *tenant == '\0' || strlen(tenant) >= sizeof(((struct db_txn *)0)->tenant))
        return -1;
    /* Registered once per pool (later calls find it), so each call skips its parse. */
    if (pg_pool_prepare(pool, STMT_TENANT, TENANT_SQL, 1) != 0)
        return -1;
    const struct pg_call setup = {
        .sql = STMT_TENANT, .prepared = 1, .nparams = 1, .values = &tenant};
    return pg_query_tx(pool, timeout_ms, cb, arg, &setup, stmt);
}

int db_tenant_query(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                    void *arg, const char *sql, int nparams, const char *const *values)
{
    const struct pg_call stmt = {.sql = sql, .nparams = nparams, .values = values};
    return tenant_call(pool, tenant, timeout_ms, cb, arg, &stmt);
}

int db_tenant_prepared(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                       void *arg, const char *name, int nparams, const char *const *values)
{
    const struct pg_call stmt = {.sql = name, .prepared = 1, .nparams = nparams, .values = values};
    return tenant_call(pool, tenant, timeout_ms, cb, arg, &stmt);
}
