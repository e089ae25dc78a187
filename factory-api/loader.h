/*
 * loader: one CSV upload's way into the stores (SPEC §6, §7). The body is fed in chunks as
 * it arrives; each chunk is validated (shared/csv) and its accepted rows go straight into a
 * COPY to a temporary staging table, with backpressure, so memory never holds the file. At
 * the end of the body the owner gets the upload resource to answer with, and the loader
 * carries on alone: one merge into tags and log_entries (the Merkle leaves) and the upload's
 * final state, all in the one transaction that held the COPY, then the new tags into the
 * Redis cache. While it runs, the upload row's counters and heartbeat are refreshed about
 * once a second from another connection.
 */
#ifndef TAGPROOF_LOADER_H
#define TAGPROOF_LOADER_H

#include <stddef.h>

#include "ingest.h"
#include "uuid.h"

struct service_worker;
struct metric;
struct loader;

/*
 * The upload resource as PostgreSQL builds it, from the uploads row aliased t (GET
 * /v1/uploads/{id} and every answer of POST /v1/batches/{id}/tags).
 */
#define LOADER_UPLOAD_JSON                                                                         \
    "json_build_object('id', t.id, 'batch_id', t.batch_id, 'status', t.status, 'mode', t.mode,"    \
    " 'rows_total', t.rows_total, 'rows_accepted', t.rows_accepted, 'rows_rejected',"              \
    " t.rows_rejected, 'errors', t.errors, 'created_at', t.created_at, 'updated_at',"              \
    " t.updated_at, 'finished_at', t.finished_at)"

/*
 * An upload still 'processing' whose heartbeat (updated_at) is older than this was left by a
 * process that died: whoever looks at it next marks it failed ("interrupted").
 */
#define LOADER_STALE_S 120
#define LOADER_STALE_SQL "interval '120 seconds'"
/*
 * Liveness without waiting for the heartbeat: the upload's own transaction holds an advisory
 * lock named by the upload id (LOADER_LOCK_SQL, its first statement after BEGIN) until it
 * ends. A crash, a lost connection or a failover ends the transaction and frees the lock at
 * once, so an upload whose lock is free and whose heartbeat is LOADER_GRACE_SQL old (the
 * moment between the row's insert and the lock) is dead too. The test takes the lock shared
 * for the reader's own transaction, which a live upload's exclusive hold refuses; it is the
 * last term, so only uploads that are processing and quiet are asked.
 */
#define LOADER_LOCK_CLASS "1953525868" /* "tpul" */
#define LOADER_GRACE_SQL "interval '5 seconds'"
#define LOADER_LOCK_SQL(id) "pg_advisory_xact_lock(" LOADER_LOCK_CLASS ", hashtext(" id "))"
/* True for an upload row (alias t) left by a transaction that is gone. */
#define LOADER_DEAD_SQL(t)                                                                         \
    "(" t ".status = 'processing' AND (" t ".updated_at < now() - " LOADER_STALE_SQL " OR (" t     \
    ".updated_at < now() - " LOADER_GRACE_SQL                                                      \
    " AND pg_try_advisory_xact_lock_shared(" LOADER_LOCK_CLASS ", hashtext(" t ".id::text)))))"
/* The errors an interrupted upload reports (a jsonb literal). */
#define LOADER_INTERRUPTED_JSON                                                                    \
    "'[{\"line\": null, \"code\": \"interrupted\", \"message\": \"the upload stopped before it "   \
    "finished (the service restarted or lost its database); nothing was imported\"}]'"

struct loader_params {
    /* The worker's stores, looked up at each use: they are gone (NULL) after shutdown. */
    struct service_worker *w;
    const char *tenant; /* the caller's tenant: "all" or a factory id */
    const char *upload_id;
    const char *factory_id;
    const char *batch_id;
    const char *product_id;
    enum ingest_mode mode;
    int cache_ttl_s;          /* EXPIRE of the tags written to Redis */
    int statement_timeout_ms; /* deadline of the COPY and of the merge */
    /* Counters (may be NULL): uploads by result ("completed", "failed"), and rows by result
     * ("imported", "rejected"). */
    struct metric *m_uploads;
    struct metric *m_rows;
};

struct loader_events {
    /* The COPY is ready and the body may flow (ok 1), or the upload could not start (ok 0:
     * the upload is marked failed, the loader has freed itself; answer 503). */
    void (*started)(void *arg, int ok);
    /* After loader_feed returned 1: the body may flow again. */
    void (*resume)(void *arg);
    /*
     * The body phase is over: status 202 with the upload resource (JSON text, borrowed for
     * the call), whether the upload is now processing or already failed, or with json NULL
     * when it runs on but its row could not be read back; or 503 (json NULL) when the
     * database failed under it and nothing will be imported. Called once, after loader_end; the
     * loader then goes on without its owner and frees itself.
     */
    void (*answered)(void *arg, int status, const char *json);
};

/*
 * Starts an upload whose row exists (status processing): the transaction, the staging
 * table, the COPY. Strings in p are copied; events and arg are kept until answered (or
 * started with ok 0). Every event comes from the event loop, never from inside a loader_*
 * call. NULL when out of memory or no database call could be made (nothing will be called).
 */
struct loader *loader_start(const struct loader_params *p, const struct loader_events *ev,
                            void *arg);

/*
 * A chunk of the body (borrowed for the call). 0: send more; 1: wait for the resume event
 * before sending more; -1: stop sending (the upload failed; loader_end is still owed).
 */
int loader_feed(struct loader *l, const void *buf, size_t len);

/* The body ended: complete 1 when all of it arrived, 0 when it was cut short (the client
 * went away, or sent less than it announced). Called exactly once after started(ok 1). */
void loader_end(struct loader *l, int complete);

#endif
