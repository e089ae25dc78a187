/*
 * pg: an asynchronous PostgreSQL client for one libevent loop — a small pool of non-blocking
 * libpq connections with per-call deadlines, reconnection with backoff, failover to the
 * writable host of a multi-host conninfo, prepared statements, transactions (one-statement ones
 * pipelined into a single round trip) and COPY FROM STDIN.
 *
 * A pool belongs to one event_base and so to one thread (one pool per worker thread); nothing
 * here is thread-safe. No call blocks: connecting, sending, reading and COPY are all driven by
 * socket events. (libpq still resolves host names with getaddrinfo while connecting: give IP
 * addresses, or names /etc/hosts knows, where a slow resolver would matter.) Callbacks are never
 * invoked from inside a pg_* call, only from the event loop (the one exception is pg_pool_free,
 * which calls back what is still pending with PG_ERR_CLOSED before it returns).
 */
#ifndef TAGPROOF_PG_H
#define TAGPROOF_PG_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

struct pg_pool;
struct pg_conn;

struct pg_options {
    /* libpq conninfo string or URI, several hosts allowed (with target_session_attrs). */
    const char *conninfo;
    int pool_size;          /* connections (up to 1000), opened at pg_pool_new; 0 means 4 */
    int connect_timeout_ms; /* one connection attempt over all hosts; 0 means 5000 */
    /*
     * The server-side deadline of every statement (sent as "-c statement_timeout=N" at
     * connect); 0 means none. It is the primary deadline: the server stops the work and the
     * connection stays usable, the call gets PG_ERR_TIMEOUT with SQLSTATE 57014.
     */
    int statement_timeout_ms;
    /*
     * The client-side deadline of a call that passes timeout_ms <= 0: the backstop for a
     * server or network that stopped answering. When it passes the call gets PG_ERR_TIMEOUT
     * and its connection is discarded and replaced. 0 means statement_timeout_ms plus a
     * little (max(100 ms, a tenth)), or 5000 without a statement timeout.
     */
    int query_timeout_ms;
    int queue_max;      /* calls waiting for a connection; beyond it PG_ERR_BUSY; 0 means 1024 */
    int backoff_min_ms; /* reconnect backoff, doubled per failure with jitter; 0 means 50 */
    int backoff_max_ms; /* 0 means 1000 */
    /*
     * Session settings every connection starts with, in the form of the "options" parameter
     * ("-c tagproof.tenant=all"), after the user's own options; NULL for none. They are the
     * session's defaults, so the reset on release returns to them.
     */
    const char *settings;
};

enum pg_status {
    PG_OK = 0,
    PG_ERR_QUERY,   /* the server refused the statement: see sqlstate and message */
    PG_ERR_TIMEOUT, /* a deadline passed: client-side, or server-side (sqlstate 57014) */
    /*
     * No usable connection: refused, lost (a call lost in flight may have run), the server
     * shutting down (sqlstate 57P01...) or read-only after a failover (sqlstate 25006).
     */
    PG_ERR_CONNECTION,
    PG_ERR_CLOSED, /* the pool was freed or the connection released first */
    PG_ERR_BUSY,   /* the wait queue is full */
};

/* "ok", "query", "timeout", "connection", "closed", "busy". */
const char *pg_status_str(enum pg_status status);

/*
 * What a call produced; everything in it is borrowed until the callback returns. res is the
 * last result of the statement (or its error result), NULL when none arrived. sqlstate is
 * the server's five-character code when the server reported an error, else NULL. message is
 * NULL for PG_OK and a one-line explanation otherwise.
 */
struct pg_result_info {
    enum pg_status status;
    const PGresult *res;
    const char *sqlstate;
    const char *message;
};

typedef void (*pg_result_fn)(void *arg, const struct pg_result_info *r);

/* conn is the connection handed out (the caller must pg_conn_release it) or NULL on failure. */
typedef void (*pg_acquire_fn)(void *arg, struct pg_conn *conn, enum pg_status status);

/* COPY backpressure: PG_OK when more data may be sent, or why the COPY cannot continue. */
typedef void (*pg_drain_fn)(void *arg, enum pg_status status);

/*
 * Creates a pool bound to base and starts opening its connections; it does not wait for
 * them. opt and its strings are copied. Returns NULL (and logs why) on a malformed conninfo
 * or bad options. The conninfo is logged only with its password masked.
 */
struct pg_pool *pg_pool_new(struct event_base *base, const struct pg_options *opt);

/*
 * Closes every connection and calls back everything pending with PG_ERR_CLOSED, before it
 * returns. Connections handed out by pg_pool_acquire die with the pool: their holders must
 * not touch them afterwards. May be called from inside one of this pool's callbacks.
 */
void pg_pool_free(struct pg_pool *pool);

/*
 * Registers a named statement that every connection prepares right after it connects,
 * before it serves anything (open ones prepare it before their next call). sql is copied;
 * nparams parameters of types the server infers. Returns 0, or -1 when the name is taken by
 * other SQL or the arguments are invalid. A statement the server rejects is logged and its
 * executions fail with the server's error.
 */
int pg_pool_prepare(struct pg_pool *pool, const char *name, const char *sql, int nparams);

/*
 * Runs sql with nparams text parameters ($1...; a NULL value is SQL NULL) on a pooled
 * connection, waiting in a FIFO queue for one when all are busy. sql and values are copied,
 * so the caller may free them on return. timeout_ms <= 0 takes the pool's default; the
 * deadline covers the wait in the queue too. Returns 0 and then calls cb exactly once, or
 * -1 (cb never called) when out of memory or misused. While no connection can be made, calls
 * fail fast with PG_ERR_CONNECTION instead of waiting for their deadline.
 */
int pg_query(struct pg_pool *pool, int timeout_ms, pg_result_fn cb, void *arg, const char *sql,
             int nparams, const char *const *values);

/*
 * As pg_query, executing a statement registered with pg_pool_prepare; -1 if name is unknown
 * or nparams differs from its registration.
 */
int pg_query_prepared(struct pg_pool *pool, int timeout_ms, pg_result_fn cb, void *arg,
                      const char *name, int nparams, const char *const *values);

/*
 * One statement of pg_query_tx: SQL text with nparams text parameters ($1...), or, with
 * prepared set, the name of a statement registered with pg_pool_prepare.
 */
struct pg_call {
    const char *sql;
    int prepared;
    int nparams;
    const char *const *values;
};

/*
 * Runs stmt in a transaction of its own on a pooled connection, in one round trip (libpq
 * pipeline mode): BEGIN, then setup when not NULL (a statement that prepares the transaction,
 * such as set_config(..., true) of a setting row-level security reads), then stmt, then
 * COMMIT. stmt runs only if BEGIN and setup succeeded, in the same transaction. cb gets stmt's
 * result once the COMMIT has succeeded, or else the first failure (the transaction is then
 * rolled back). A RESET ALL travels in the same round trip after the COMMIT, so the connection
 * goes back to the pool with the session settings it connected with, even if stmt changed one
 * for the whole session. Same copying, queueing, deadline and return rules as pg_query.
 */
int pg_query_tx(struct pg_pool *pool, int timeout_ms, pg_result_fn cb, void *arg,
                const struct pg_call *setup, const struct pg_call *stmt);

/*
 * Hands out one connection exclusively (for a transaction, several statements that share
 * session state, or COPY), waiting in the same queue and under the same rules as pg_query.
 * cb gets the connection, which the caller owns until pg_conn_release (a connection never
 * released is lost to the pool). Returns 0 or -1.
 */
int pg_pool_acquire(struct pg_pool *pool, int timeout_ms, pg_acquire_fn cb, void *arg);

/*
 * Runs sql on an acquired connection, after the calls already issued on it (they run one at
 * a time, in order). Same copying, deadline and callback rules as pg_query; a client-side
 * deadline breaks the connection, and later calls on it fail with PG_ERR_CONNECTION.
 * Returns -1 when conn is not acquired or is in COPY.
 */
int pg_conn_query(struct pg_conn *conn, int timeout_ms, pg_result_fn cb, void *arg, const char *sql,
                  int nparams, const char *const *values);
int pg_conn_query_prepared(struct pg_conn *conn, int timeout_ms, pg_result_fn cb, void *arg,
                           const char *name, int nparams, const char *const *values);

/*
 * Gives the connection back. The next user never inherits its state: an open transaction is
 * rolled back, and session settings (SET, set_config, roles), cursors, advisory locks,
 * LISTENs and temporary tables are reset (one round trip) before it serves again. A
 * connection released with calls still pending, in COPY, or broken is closed and replaced;
 * its pending calls get PG_ERR_CLOSED. conn must not be used after this call.
 */
void pg_conn_release(struct pg_conn *conn);

/*
 * Starts "COPY ... FROM STDIN" (sql) on an acquired connection. cb gets PG_OK once the
 * server is ready for data; then send it with pg_conn_copy_data and finish with
 * pg_conn_copy_end. The pool's statement_timeout covers the whole COPY: for a long one, run
 * "SET statement_timeout = ..." on the connection first (the release resets it). drain is called
 * (with arg) when data that was held back has been sent, or with an error status when the COPY
 * cannot go on; it may be NULL for a caller that keeps sending regardless (libpq's buffer then
 * grows instead). Returns 0 or -1.
 */
int pg_conn_copy_start(struct pg_conn *conn, int timeout_ms, const char *sql, pg_result_fn cb,
                       pg_drain_fn drain, void *arg);

/*
 * Sends len bytes of COPY data (any split: rows need not be whole). The data is always taken
 * (copied) unless this returns -1. Returns 0: send more now; 1: the socket is full, wait for
 * the drain callback before sending more (memory stays bounded that way); -1: the COPY is
 * not running or the connection broke (release the connection).
 */
int pg_conn_copy_data(struct pg_conn *conn, const void *buf, size_t len);

/*
 * Ends the COPY: cb gets the outcome, with PQcmdTuples(res) the rows copied. With errmsg
 * non-NULL the COPY is aborted instead (nothing is stored) and cb gets PG_ERR_QUERY.
 * Returns 0, or -1 when no COPY is running.
 */
int pg_conn_copy_end(struct pg_conn *conn, int timeout_ms, const char *errmsg, pg_result_fn cb,
                     void *arg);

/* A snapshot for /metrics and readiness. */
struct pg_stats {
    int connections; /* pool size */
    int open;        /* established connections, whatever they are doing */
    int idle;        /* open and ready for the next call */
    int busy;        /* open and running a pooled call (or preparing, or resetting) */
    int acquired;    /* handed out by pg_pool_acquire */
    int connecting;
    int queued; /* calls waiting for a connection */
    int down;   /* 1 while no connection can be made: calls fail fast */
    /* Calls made, and how their callbacks ended (rejected: PG_ERR_BUSY). */
    uint64_t calls, ok, query_errors, timeouts, connection_errors, closed, rejected;
    /* Connections established, attempts that failed, established ones closed. */
    uint64_t connects, connect_failures, disconnects;
};
void pg_pool_stats(const struct pg_pool *pool, struct pg_stats *out);

#endif
