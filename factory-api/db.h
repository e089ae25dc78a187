/*
 * db: the factory API's way into PostgreSQL — every statement runs inside a transaction that
 * names its tenant first (SET LOCAL through set_config(..., true)), so row-level security
 * (migrations/0002) seals each factory's rows even from a query that forgot its filter, and a
 * pooled connection never carries the previous caller's tenant past COMMIT.
 */
#ifndef TAGPROOF_DB_H
#define TAGPROOF_DB_H

#include <libpq-fe.h>

#include "pg.h"

/* "all" for an admin, or the factory id of a factory role. */
#define DB_TENANT_ALL "all"

/*
 * What a tenant query produced: status and message as in pg_result_info; res (when PG_OK) is
 * the statement's result, borrowed until the callback returns.
 */
typedef void (*db_result_fn)(void *arg, const struct pg_result_info *r);

/*
 * Runs one statement (nparams text parameters) in its own transaction as tenant: BEGIN,
 * the tenant, the statement, COMMIT, pipelined into one round trip. cb gets the statement's
 * result once the commit has succeeded, or the first failure (the transaction is then rolled
 * back). sql and values are copied. timeout_ms <= 0 takes the pool's default, which covers the
 * whole transaction. 0, or -1 (cb never called).
 */
int db_tenant_query(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                    void *arg, const char *sql, int nparams, const char *const *values);
/* The same with a statement registered on the pool (pg_pool_prepare) under name. */
int db_tenant_prepared(struct pg_pool *pool, const char *tenant, int timeout_ms, db_result_fn cb,
                       void *arg, const char *name, int nparams, const char *const *values);

/*
 * A transaction of several steps on one connection (uploads): db_txn_begin acquires a
 * connection, starts the transaction and names the tenant, then calls cb with the
 * transaction, or with NULL and the failure. The caller runs statements with
 * pg_conn_query(db_txn_conn(t), ...) and ends with db_txn_commit or db_txn_rollback, which
 * release the connection and free t.
 */
struct db_txn;
typedef void (*db_txn_fn)(void *arg, struct db_txn *t, const struct pg_result_info *failure);

int db_txn_begin(struct pg_pool *pool, const char *tenant, int timeout_ms, db_txn_fn cb, void *arg);
struct pg_conn *db_txn_conn(struct db_txn *t);
/* Commits; cb gets the COMMIT's outcome. 0, or -1 (t is then rolled back and freed, cb never
 * called). */
int db_txn_commit(struct db_txn *t, pg_result_fn cb, void *arg);
/* Rolls back (the connection's release does it) and frees t. */
void db_txn_rollback(struct db_txn *t);

/*
 * A lateral subquery (for SQL text, after LEFT JOIN LATERAL) giving the log entry of the tag
 * t: its registration leaf, or while that leaf does not exist yet, the entry that queues it
 * (its upload's, migrations/0007_log_queue.sql), whose leaf_index is NULL. Each is unique (a
 * partial unique index), and the second branch yields only without the first, so the answer
 * does not depend on which branch runs first; with the leaf present, LIMIT stops after the
 * first branch's one index probe. Columns: id, leaf_index, record, queued_at, appended_at.
 */
#define DB_TAG_LOG_ENTRY_SQL                                                                       \
    "(SELECT le.id, le.leaf_index, le.record, le.queued_at, le.appended_at FROM log_entries le"    \
    "  WHERE le.tag_id = t.tag_id AND le.kind = 'tag'"                                             \
    " UNION ALL"                                                                                   \
    " SELECT q.id, q.leaf_index, q.record, q.queued_at, q.appended_at FROM log_entries q"          \
    "  WHERE q.kind = 'upload' AND q.upload_id = t.upload_id AND NOT EXISTS"                       \
    "  (SELECT 1 FROM log_entries l2 WHERE l2.tag_id = t.tag_id AND l2.kind = 'tag')"              \
    " LIMIT 1)"

#endif
