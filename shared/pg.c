/*
 * pg: the PostgreSQL connection pool of one event loop. Every libpq call made here is a
 * non-blocking one (PQconnectPoll, PQsend*, PQflush, PQconsumeInput, PQgetResult only when
 * PQisBusy says it will not wait), driven by the connection's socket events.
 *
 * Shape: a pool has a fixed array of connection slots and one FIFO of waiting calls. A slot
 * is DOWN (waiting to reconnect), CONNECTING or UP; an UP slot runs at most one request at a
 * time. Every user callback is delivered through the request's own timer event, made active
 * when the outcome is known, so callbacks never run inside a pg_* call or halfway through
 * this file's bookkeeping; that single delivery point is also where "exactly once" is kept.
 */
#include "pg.h"
#include "log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

enum req_kind {
    RK_QUERY,      /* PQsendQueryParams */
    RK_PREPARED,   /* PQsendQueryPrepared */
    RK_TX,         /* BEGIN, setup, statement, COMMIT in one pipeline (pg_query_tx) */
    RK_ACQUIRE,    /* waits for a connection to hand out */
    RK_COPY_START, /* COPY ... FROM STDIN, done when the server asks for data */
    RK_COPY_END,   /* PQputCopyEnd and the COPY's outcome */
    RK_PREPARE,    /* internal: prepares a registered statement */
    RK_RESET,      /* internal: clears session state after a release */
};

enum req_where {
    RW_NONE,
    RW_POOL_QUEUE, /* waiting for a pooled connection */
    RW_CONN_QUEUE, /* waiting behind another call on an acquired connection */
    RW_SENT,       /* the connection's current request */
    RW_DONE,       /* outcome known, delivery scheduled */
};

struct pg_req {
    TAILQ_ENTRY(pg_req) link;
    struct pg_pool *pool;
    struct pg_conn *conn; /* CONN_QUEUE, SENT, or the connection an acquire hands out */
    enum req_kind kind;
    enum req_where where;
    int timeout_ms;
    struct event *timer; /* the deadline, and later the delivery of the outcome */
    pg_result_fn cb;
    pg_acquire_fn acquire_cb;
    void *arg;
    const char *text;  /* SQL, statement name, or COPY abort message; in this allocation */
    const char *text2; /* the SQL of RK_PREPARE */
    int nparams;
    const char **values;
    /* RK_TX: text is the statement, text2 the setup (or NULL); values holds the setup's nsetup
     * parameters, then the statement's. step counts the results read so far. */
    int nsetup, setup_prepared, stmt_prepared, step, rolled_back, reset_failed;
    /* The outcome. */
    enum pg_status status;
    PGresult *res;
    char *message;
};
TAILQ_HEAD(req_list, pg_req);

enum conn_state { CS_DOWN, CS_CONNECTING, CS_UP };

struct pg_conn {
    struct pg_pool *pool;
    int id;
    enum conn_state state;
    int acquired; /* handed out: serves only its own queue */
    PGconn *pgc;
    evutil_socket_t fd;
    struct event *ev_read, *ev_write; /* persistent, on fd; ev_write only while flushing */
    int flushing;                     /* PQflush left data behind */
    struct event *timer;              /* connect deadline, backoff wait, or COPY drain deadline */
    int failures;                     /* connection attempts failed in a row */
    int nprepared;                    /* registered statements prepared on this connection */
    int recycle;                      /* its server turned read-only: replace it when idle */
    struct pg_req *req;               /* in flight */
    struct req_list queue;            /* acquired: calls issued behind req */
    /* COPY FROM STDIN. */
    int copy_in;    /* the server is taking data */
    int drain_wait; /* data held back: the holder waits for drain */
    pg_drain_fn drain_cb;
    void *drain_arg;
    enum pg_status drain_status;
    struct event *drain_ev; /* delivers drain_cb from the loop */
    int drain_due;          /* pg_pool_free: drain_ev was about to fire */
};

struct pg_stmt {
    char *name, *sql;
    int nparams;
};

struct pg_pool {
    struct event_base *base;
    char *conninfo;
    char *conninfo_safe; /* password masked, for logs */
    char *options;       /* the "options" connection parameter: the user's plus ours */
    /* Hosts of a multi-host conninfo, rotated after a host timed out (see conn_rotate). */
    char **hosts, **addrs, **ports;
    int nhosts, naddrs, nports, nlist, rot;
    int size, connect_timeout_ms, statement_timeout_ms, query_timeout_ms, queue_max;
    int backoff_min_ms, backoff_max_ms;
    struct pg_conn *conns;
    struct req_list queue;
    int queue_len;
    struct req_list done;
    struct pg_stmt *stmts;
    int nstmts;
    int nup;  /* slots in CS_UP */
    int down; /* no connection could be made: calls fail fast */
    char *last_error;
    int depth;   /* user callbacks running: pg_pool_free waits for them to return */
    int closing; /* pg_pool_free was called */
    uint64_t rng;
    struct pg_stats counters;
};

/*
 * What pg_conn_release runs so that no session state reaches the next user: DISCARD ALL
 * without its DEALLOCATE ALL, which would throw away the pool's prepared statements. RESET
 * ALL returns statement_timeout to the value set at connect, not to the server default.
 */
static const char RESET_SQL[] = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; "
                                "UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; "
                                "DISCARD SEQUENCES";
static const char RESET_TX_SQL[] = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; "
                                   "RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); "
                                   "DISCARD TEMP; DISCARD SEQUENCES";

static void conn_send(struct pg_conn *c, struct pg_req *r);
static void conn_drop(struct pg_conn *c, enum pg_status st, const char *why, enum log_level lvl);
static void conn_ready(struct pg_conn *c);
static void pool_dispatch(struct pg_pool *p);
static void pool_release_memory(struct pg_pool *p);

const char *pg_status_str(enum pg_status status)
{
    switch (status) {
    case PG_OK:
        return "ok";
    case PG_ERR_QUERY:
        return "query";
    case PG_ERR_TIMEOUT:
        return "timeout";
    case PG_ERR_CONNECTION:
        return "connection";
    case PG_ERR_CLOSED:
        return "closed";
    case PG_ERR_BUSY:
        return "busy";
    }
    return "unknown";
}

/* libpq messages span lines ("connection to server ... failed: ...\n\tIs the server..."). */
static char *one_line(const char *s)
{
    char *out = strdup(s != NULL && *s != '\0' ? s : "unknown error");
    if (out == NULL)
        return NULL;
    for (char *q = out; *q != '\0'; q++)
        if (*q == '\n' || *q == '\t' || *q == '\r')
            *q = ' ';
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = '\0';
    return out;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* log.h has no leveled printf; state changes pick their level at run time. */
static void pool_log(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pool_log(enum log_level lvl, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    if (!log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_emit(lvl, NULL, buf, NULL);
}

/* xorshift64*: jitter only needs to decorrelate reconnecting clients, not to be secret. */
static uint32_t pool_random(struct pg_pool *p)
{
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return (uint32_t)((p->rng * 2685821657736338717ULL) >> 32);
}

/* ---- requests ---------------------------------------------------------------------------- */

static void req_on_timer(evutil_socket_t fd, short what, void *arg);

/* One allocation holds the request, its SQL or name, and copies of its parameters. */
static struct pg_req *req_new(struct pg_pool *p, enum req_kind kind, const char *text,
                              const char *text2, int nparams, const char *const *values)
{
    size_t size = sizeof(struct pg_req), tlen = text != NULL ? strlen(text) + 1 : 0;
    size_t t2len = text2 != NULL ? strlen(text2) + 1 : 0;
    size += (size_t)nparams * sizeof(char *) + tlen + t2len;
    for (int i = 0; i < nparams; i++)
        if (values[i] != NULL)
            size += strlen(values[i]) + 1;
    struct pg_req *r = calloc(1, size);
    if (r == NULL)
        return NULL;
    r->timer = evtimer_new(p->base, req_on_timer, r);
    if (r->timer == NULL) {
        free(r);
        return NULL;
    }
    r->pool = p;
    r->kind = kind;
    r->nparams = nparams;
    char *tail = (char *)(r + 1);
    r->values = (const char **)tail;
    tail += (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++) {
        if (values[i] == NULL)
            continue;
        size_t n = strlen(values[i]) + 1;
        memcpy(tail, values[i], n);
        r->values[i] = tail;
        tail += n;
    }
    if (text != NULL) {
        memcpy(tail, text, tlen);
        r->text = tail;
        tail += tlen;
    }
    if (text2 != NULL) {
        memcpy(tail, text2, t2len);
        r->text2 = tail;
    }
    return r;
}

static void req_free(struct pg_req *r)
{
    if (r == NULL)
        return;
    event_free(r->timer);
    PQclear(r->res);
    free(r->message);
    free(r);
}

static int req_internal(const struct pg_req *r)
{
    return r->kind == RK_PREPARE || r->kind == RK_RESET;
}

/*
 * Records the outcome of a user request (taking ownership of res) and schedules its
 * delivery from the loop. The request must already be out of every queue and connection.
 */
static void req_complete(struct pg_req *r, enum pg_status st, PGresult *res, const char *msg)
{
    struct pg_pool *p = r->pool;
    assert(!req_internal(r) && r->where == RW_NONE);
    r->status = st;
    if (res != r->res) {
        PQclear(r->res);
        r->res = res;
    }
    if (msg != NULL && r->message == NULL)
        r->message = one_line(msg);
    r->where = RW_DONE;
    TAILQ_INSERT_TAIL(&p->done, r, link);
    event_del(r->timer);
    event_active(r->timer, EV_TIMEOUT, 1);
}

static void pool_leave(struct pg_pool *p)
{
    p->depth--;
    if (p->closing && p->depth == 0)
        free(p);
}

/* The one place that calls user result and acquire callbacks (besides pg_pool_free). */
static void req_deliver(struct pg_req *r)
{
    struct pg_pool *p = r->pool;
    struct pg_result_info info = {.status = r->status, .res = r->res};

    if (r->status != PG_OK) {
        if (r->res != NULL && PQresultStatus(r->res) == PGRES_FATAL_ERROR) {
            info.sqlstate = PQresultErrorField(r->res, PG_DIAG_SQLSTATE);
            info.message = PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY);
        }
        if (info.message == NULL || r->status == PG_ERR_CLOSED)
            info.message = r->message != NULL ? r->message : pg_status_str(r->status);
    }
    switch (r->status) {
    case PG_OK:
        p->counters.ok++;
        break;
    case PG_ERR_QUERY:
        p->counters.query_errors++;
        break;
    case PG_ERR_TIMEOUT:
        p->counters.timeouts++;
        break;
    case PG_ERR_CONNECTION:
        p->counters.connection_errors++;
        break;
    case PG_ERR_CLOSED:
        p->counters.closed++;
        break;
    case PG_ERR_BUSY:
        p->counters.rejected++;
        break;
    }
    p->depth++;
    if (r->kind == RK_ACQUIRE)
        r->acquire_cb(r->arg, r->status == PG_OK ? r->conn : NULL, r->status);
    else
        r->cb(r->arg, &info);
    req_free(r);
    pool_leave(p);
}

/* Takes a request out of wherever it waits, without deciding its outcome. */
static void req_detach(struct pg_req *r)
{
    struct pg_pool *p = r->pool;
    switch (r->where) {
    case RW_POOL_QUEUE:
        TAILQ_REMOVE(&p->queue, r, link);
        p->queue_len--;
        break;
    case RW_CONN_QUEUE:
        TAILQ_REMOVE(&r->conn->queue, r, link);
        break;
    case RW_SENT:
        r->conn->req = NULL;
        break;
    case RW_DONE:
        TAILQ_REMOVE(&p->done, r, link);
        break;
    case RW_NONE:
        break;
    }
    r->where = RW_NONE;
}

/* The request's timer: either its outcome is ready for delivery, or its deadline passed. */
static void req_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_req *r = arg;
    struct pg_conn *c = r->conn;
    enum req_where was = r->where;
    char why[96];
    (void)fd;
    (void)what;

    req_detach(r);
    if (was == RW_DONE) {
        req_deliver(r);
        return;
    }
    snprintf(why, sizeof(why), "%s within the deadline of %d ms",
             was == RW_SENT ? "no answer" : "no connection free", r->timeout_ms);
    if (was == RW_SENT) {
        /*
         * The server holds the statement and libpq 15 cannot cancel without blocking, so the
         * connection is given up: its socket is closed (PQfinish does not wait) and a fresh
         * one replaces it. The server-side statement_timeout is meant to fire first.
         */
        conn_drop(c, PG_ERR_CONNECTION, why, LOG_WARN);
    }
    if (req_internal(r)) {
        req_free(r);
        return;
    }
    r->status = PG_ERR_TIMEOUT;
    r->message = one_line(why);
    req_deliver(r);
}

/* ---- connections: sockets ------------------------------------------------------------- */

static void conn_on_io(evutil_socket_t fd, short what, void *arg);

static void conn_events_free(struct pg_conn *c)
{
    if (c->ev_read != NULL)
        event_free(c->ev_read);
    if (c->ev_write != NULL)
        event_free(c->ev_write);
    c->ev_read = c->ev_write = NULL;
    c->fd = -1;
    c->flushing = 0;
}

/*
 * (Re)creates the socket events for PQsocket(). Always recreated rather than kept when the
 * number looks the same: while connecting, libpq closes a socket and opens the next one
 * (next address, next host), which may reuse the number but is a new socket to epoll.
 */
static int conn_events_new(struct pg_conn *c)
{
    conn_events_free(c);
    c->fd = PQsocket(c->pgc);
    if (c->fd < 0)
        return -1;
    c->ev_read = event_new(c->pool->base, c->fd, EV_READ | EV_PERSIST, conn_on_io, c);
    c->ev_write = event_new(c->pool->base, c->fd, EV_WRITE | EV_PERSIST, conn_on_io, c);
    if (c->ev_read == NULL || c->ev_write == NULL) {
        conn_events_free(c);
        return -1;
    }
    return 0;
}

static void conn_close(struct pg_conn *c)
{
    conn_events_free(c);
    if (c->pgc != NULL)
        PQfinish(c->pgc);
    c->pgc = NULL;
    evtimer_del(c->timer);
}

/* Notices would otherwise go to stderr as plain text, breaking the JSON log lines. */
static void conn_on_notice(void *arg, const char *message)
{
    struct pg_conn *c = arg;
    char *m = one_line(message);
    log_debug("pg: connection %d: server notice: %s", c->id, m != NULL ? m : "");
    free(m);
}

/* ---- connections: connecting ---------------------------------------------------------- */

static void conn_schedule(struct pg_conn *c, int delay_ms)
{
    struct timeval tv = ms_tv(delay_ms);
    evtimer_add(c->timer, &tv);
}

static int backoff_ms(struct pg_pool *p, int failures)
{
    if (failures <= 0)
        return 0;
    int64_t d = p->backoff_min_ms;
    for (int i = 1; i < failures && d < p->backoff_max_ms; i++)
        d *= 2;
    if (d > p->backoff_max_ms)
        d = p->backoff_max_ms;
    /* "Equal jitter": half fixed, half random, so retries spread but never come too soon. */
    return (int)(d / 2 + pool_random(p) % (uint32_t)(d / 2 + 1));
}

static char *join_rotated(char **list, int n, int rot)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(list[i]) + 1;
    char *out = malloc(len), *q = out;
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        const char *s = list[(rot + i) % n];
        size_t k = strlen(s);
        if (i > 0)
            *q++ = ',';
        memcpy(q, s, k);
        q += k;
    }
    *q = '\0';
    return out;
}

/*
 * Our own deadline bounds a whole attempt, over all hosts, because libpq enforces
 * connect_timeout only in its blocking calls. A host that accepts TCP but never answers
 * (stopped, partitioned) would then eat every attempt; so after an attempt timed out on a
 * host, the host list is rotated to start just after it. Refused hosts need no help: libpq
 * moves on to the next one by itself.
 */
static void conn_rotate(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    const char *host = PQhost(c->pgc), *port = PQport(c->pgc);
    int n = p->nlist, step = 1;
    if (n < 2)
        return;
    for (int i = 0; i < n; i++) {
        int k = (p->rot + i) % n;
        const char *h = p->nhosts == n && p->hosts[k][0] != '\0' ? p->hosts[k]
                        : p->naddrs == n                         ? p->addrs[k]
                                                                 : "";
        if (host != NULL && strcmp(h, host) == 0 &&
            (p->nports != n || (port != NULL && strcmp(p->ports[k], port) == 0))) {
            step = i + 1;
            break;
        }
    }
    p->rot = (p->rot + step) % n;
    log_info("pg: connection %d: host %s port %s did not answer in time, trying the next first",
             c->id, host != NULL ? host : "?", port != NULL ? port : "?");
}

static void pool_fail_queue(struct pg_pool *p, enum pg_status st, const char *msg)
{
    struct pg_req *r;
    while ((r = TAILQ_FIRST(&p->queue)) != NULL) {
        req_detach(r);
        req_complete(r, st, NULL, msg);
    }
}

static void conn_connect_failed(struct pg_conn *c, const char *why, int timed_out)
{
    struct pg_pool *p = c->pool;
    char *msg = one_line(why);
    if (timed_out)
        conn_rotate(c);
    conn_close(c);
    c->state = CS_DOWN;
    c->failures++;
    p->counters.connect_failures++;
    int delay = backoff_ms(p, c->failures);
    if (p->nup == 0 && !p->down) {
        /*
         * Nothing is connected and the server just refused us: fail what waits and whatever
         * comes until a connection succeeds, so callers (and their circuit breakers) learn it
         * now rather than at each call's deadline.
         */
        p->down = 1;
        log_warn("pg: no connection to %s: %s; calls fail fast until one succeeds",
                 p->conninfo_safe, msg != NULL ? msg : "");
        pool_fail_queue(p, PG_ERR_CONNECTION, msg);
    } else {
        /* While down, one warning said it all; otherwise a slot failing alone is news once. */
        pool_log(!p->down && c->failures == 1 ? LOG_WARN : LOG_DEBUG,
                 "pg: connection %d: attempt %d failed: %s; next in %d ms", c->id, c->failures,
                 msg != NULL ? msg : "", delay);
    }
    free(p->last_error);
    p->last_error = msg;
    conn_schedule(c, delay);
}

static void conn_established(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    evtimer_del(c->timer);
    if (PQsetnonblocking(c->pgc, 1) != 0 || conn_events_new(c) != 0) {
        conn_connect_failed(c, "cannot set up the connection's socket", 0);
        return;
    }
    event_add(c->ev_read, NULL);
    c->state = CS_UP;
    c->failures = 0;
    c->nprepared = 0;
    c->recycle = 0;
    /* The first connection (again) is worth an info line; the others are routine. */
    pool_log(p->nup == 0 ? LOG_INFO : LOG_DEBUG, "pg: connection %d up: host %s port %s backend %d",
             c->id, PQhost(c->pgc), PQport(c->pgc), PQbackendPID(c->pgc));
    p->nup++;
    p->counters.connects++;
    if (p->down) {
        p->down = 0;
        /* The server is back: the other slots need not sit out their backoff. */
        for (int i = 0; i < p->size; i++) {
            struct pg_conn *o = &p->conns[i];
            if (o != c && o->state == CS_DOWN && !o->acquired && o->failures > 0) {
                o->failures = 0;
                evtimer_del(o->timer);
                conn_schedule(o, 0);
            }
        }
    }
    conn_ready(c);
}

/* One step of PQconnectPoll; the socket may be another one after it, so re-register. */
static void conn_connect_step(struct pg_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pgc);
    switch (st) {
    case PGRES_POLLING_OK:
        conn_established(c);
        return;
    case PGRES_POLLING_FAILED:
        conn_connect_failed(c, PQerrorMessage(c->pgc), 0);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
    default:
        if (conn_events_new(c) != 0) {
            conn_connect_failed(c, "libpq has no socket", 0);
            return;
        }
        event_add(st == PGRES_POLLING_READING ? c->ev_read : c->ev_write, NULL);
        return;
    }
}

/* A NULL value is left out: libpq would ignore it anyway, and the arrays stay short. */
static void add_param(const char **kw, const char **val, int *n, const char *k, const char *v)
{
    if (v == NULL)
        return;
    kw[*n] = k;
    val[*n] = v;
    (*n)++;
}

static void conn_connect(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    const char *kw[8], *val[8];
    char *hosts = NULL, *addrs = NULL, *ports = NULL;
    int n = 0;

    /*
     * The conninfo is expanded first ("dbname" with expand_dbname), and the entries after it
     * override its fields: the host lists in their current rotation, and the options that
     * carry our statement_timeout next to the user's own.
     */
    add_param(kw, val, &n, "dbname", p->conninfo);
    if (p->nlist > 1) {
        if (p->nhosts == p->nlist)
            add_param(kw, val, &n, "host", hosts = join_rotated(p->hosts, p->nhosts, p->rot));
        if (p->naddrs == p->nlist)
            add_param(kw, val, &n, "hostaddr", addrs = join_rotated(p->addrs, p->naddrs, p->rot));
        if (p->nports == p->nlist)
            add_param(kw, val, &n, "port", ports = join_rotated(p->ports, p->nports, p->rot));
    }
    add_param(kw, val, &n, "options", p->options);
    add_param(kw, val, &n, "fallback_application_name", "tagproof");
    kw[n] = NULL;
    val[n] = NULL;

    c->pgc = PQconnectStartParams(kw, val, 1);
    free(hosts);
    free(addrs);
    free(ports);
    if (c->pgc == NULL) {
        conn_connect_failed(c, "out of memory", 0);
        return;
    }
    PQsetNoticeProcessor(c->pgc, conn_on_notice, c);
    c->state = CS_CONNECTING;
    if (PQstatus(c->pgc) == CONNECTION_BAD) {
        /* Every host failed already (refused on loopback is immediate) or the input is bad. */
        conn_connect_failed(c, PQerrorMessage(c->pgc), 0);
        return;
    }
    conn_schedule(c, p->connect_timeout_ms);
    /* Before the first PQconnectPoll, libpq says: behave as if it returned WRITING. */
    if (conn_events_new(c) != 0) {
        conn_connect_failed(c, "libpq has no socket", 0);
        return;
    }
    event_add(c->ev_write, NULL);
}

/* ---- connections: running requests ---------------------------------------------------- */

static void drain_notify(struct pg_conn *c, enum pg_status st)
{
    c->drain_status = st;
    event_active(c->drain_ev, EV_TIMEOUT, 1);
}

/* Pushes out what libpq buffered; watches for writability while some is left. */
static int conn_flush(struct pg_conn *c)
{
    int rc = PQflush(c->pgc);
    if (rc < 0) {
        conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
        return -1;
    }
    if (rc == 1 && !c->flushing) {
        c->flushing = 1;
        event_add(c->ev_write, NULL);
    } else if (rc == 0) {
        if (c->flushing) {
            c->flushing = 0;
            event_del(c->ev_write);
        }
        if (c->drain_wait) {
            c->drain_wait = 0;
            evtimer_del(c->timer);
            drain_notify(c, PG_OK);
        }
    }
    return rc;
}

/* The server reports these two (PostgreSQL 14+) whenever they change. */
static int conn_server_read_only(const struct pg_conn *c)
{
    const char *hs = PQparameterStatus(c->pgc, "in_hot_standby");
    const char *ro = PQparameterStatus(c->pgc, "default_transaction_read_only");
    return (hs != NULL && strcmp(hs, "on") == 0) || (ro != NULL && strcmp(ro, "on") == 0);
}

/*
 * Maps a finished request's result to a status, and says in *drop why the connection must
 * go (NULL: keep it): it is lost, the server is shutting down, or (failover) the server
 * became read-only, in which case reconnecting lets libpq find the writable host again.
 */
static enum pg_status conn_classify(struct pg_conn *c, const struct pg_req *r, const PGresult *res,
                                    const char **drop)
{
    *drop = PQstatus(c->pgc) == CONNECTION_BAD ? PQerrorMessage(c->pgc) : NULL;
    if (res == NULL)
        return *drop != NULL ? PG_ERR_CONNECTION : PG_OK;
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        return *drop != NULL ? PG_ERR_CONNECTION : PG_OK;
    case PGRES_FATAL_ERROR:
        break;
    default:
        *drop = "unexpected result from the server";
        return PG_ERR_CONNECTION;
    }
    const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (ss == NULL) /* libpq's own errors carry none: the connection itself failed */
        return *drop != NULL ? PG_ERR_CONNECTION : PG_ERR_QUERY;
    if (strncmp(ss, "08", 2) == 0 || strcmp(ss, "57P01") == 0 || strcmp(ss, "57P02") == 0 ||
        strcmp(ss, "57P03") == 0) {
        *drop = "the server is shutting down or lost the connection";
        return PG_ERR_CONNECTION;
    }
    if (strcmp(ss, "25006") == 0 && conn_server_read_only(c)) {
        /* Not the caller's read-only transaction: the server itself is read-only now. */
        *drop = "the server is read-only now (a standby, or a demoted primary)";
        return PG_ERR_CONNECTION;
    }
    if (strcmp(ss, "57014") == 0 && r->kind != RK_COPY_END)
        return PG_ERR_TIMEOUT; /* statement_timeout */
    return *drop != NULL ? PG_ERR_CONNECTION : PG_ERR_QUERY;
}

/*
 * The other pooled connections to a server that turned read-only would each fail one write
 * before moving: move them now (idle ones at once, busy ones after their current call).
 */
static void pool_recycle_server(struct pg_pool *p, struct pg_conn *except, const char *host,
                                const char *port)
{
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *o = &p->conns[i];
        if (o == except || o->state != CS_UP || strcmp(PQhost(o->pgc), host) != 0 ||
            strcmp(PQport(o->pgc), port) != 0)
            continue;
        if (o->req == NULL && !o->acquired)
            conn_drop(o, PG_ERR_CONNECTION, "its server is read-only now", LOG_INFO);
        else
            o->recycle = 1;
    }
}

/* The connection can take its next request: its holder's, or the pool's. */
static void conn_next(struct pg_conn *c)
{
    if (!c->acquired) {
        conn_ready(c);
        return;
    }
    struct pg_req *r = TAILQ_FIRST(&c->queue);
    if (r != NULL && c->req == NULL && !c->copy_in) {
        req_detach(r);
        conn_send(c, r);
    }
}

/* All results of the current request are in (PQgetResult returned NULL). */
static void conn_request_done(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    struct pg_req *r = c->req;
    const char *drop = NULL;
    enum pg_status st = conn_classify(c, r, r->res, &drop);

    if (drop == NULL && r->kind == RK_TX && r->reset_failed)
        drop = "resetting the session failed";
    req_detach(r);
    evtimer_del(r->timer);
    if (r->kind == RK_PREPARE) {
        if (st != PG_OK && drop == NULL) {
            char *m = one_line(PQresultErrorMessage(r->res));
            log_error("pg: cannot prepare statement %s: %s", r->text, m != NULL ? m : "");
            free(m);
            st = PG_OK; /* its executions will fail with the server's own error */
        }
        if (st == PG_OK)
            c->nprepared++;
        req_free(r);
    } else if (r->kind == RK_RESET) {
        if (st != PG_OK && drop == NULL)
            drop = "resetting the session failed";
        req_free(r);
    } else if (st == PG_OK && r->rolled_back) {
        req_complete(r, PG_ERR_QUERY, r->res, "the transaction was rolled back");
    } else {
        req_complete(r, st, r->res, NULL);
    }
    if (drop == NULL && !c->acquired && PQtransactionStatus(c->pgc) != PQTRANS_IDLE)
        drop = "a pooled call left a transaction open";
    if (drop == NULL && !c->acquired && c->recycle)
        drop = "its server is read-only now";
    if (drop != NULL) {
        char *why = one_line(drop), *host = strdup(PQhost(c->pgc)), *port = strdup(PQport(c->pgc));
        int read_only = st == PG_ERR_CONNECTION && conn_server_read_only(c);
        conn_drop(c, PG_ERR_CONNECTION, why, read_only || c->recycle ? LOG_INFO : LOG_WARN);
        if (read_only && host != NULL && port != NULL)
            pool_recycle_server(p, c, host, port);
        free(why);
        free(host);
        free(port);
        return;
    }
    conn_next(c);
}

/*
 * The results of a pipelined transaction (RK_TX) arrive one per message, each followed by a
 * NULL, and one per sync: BEGIN, [setup], statement, SYNC, COMMIT, SYNC, RESET ALL, SYNC. The
 * COMMIT stands behind a sync of its own so that after a failure it still runs (and rolls
 * back), leaving the connection idle; RESET ALL behind another, so that it runs whatever the
 * COMMIT did. Kept: the first error, else the statement's result.
 */
static void conn_collect_tx(struct pg_conn *c)
{
    struct pg_req *r = c->req;
    int stmt_step = r->text2 != NULL ? 2 : 1, nulls = 0;

    while (c->req == r && !PQisBusy(c->pgc)) {
        PGresult *res = PQgetResult(c->pgc);
        if (res == NULL) {
            if (++nulls > 1) {
                /* Nothing more until the socket says so — unless there is no socket left. */
                if (PQstatus(c->pgc) == CONNECTION_BAD)
                    conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
                return;
            }
            continue;
        }
        nulls = 0;
        int step = r->step++;
        ExecStatusType st = PQresultStatus(res);
        int failed = r->res != NULL && PQresultStatus(r->res) == PGRES_FATAL_ERROR;
        if (!failed &&
            (st == PGRES_FATAL_ERROR || (step == stmt_step && st != PGRES_PIPELINE_ABORTED))) {
            PQclear(r->res);
            r->res = res;
        } else {
            /* A COMMIT of a transaction that failed answers ROLLBACK, without an error. */
            if (step == stmt_step + 2 && !failed && st == PGRES_COMMAND_OK &&
                strcmp(PQcmdStatus(res), "COMMIT") != 0)
                r->rolled_back = 1;
            PQclear(res);
        }
        if (step == stmt_step + 4 && st != PGRES_COMMAND_OK)
            r->reset_failed = 1;
        if (step == stmt_step + 5) {
            if (st != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(c->pgc)) {
                conn_drop(c, PG_ERR_CONNECTION, "the pipelined transaction ended out of step",
                          LOG_WARN);
                return;
            }
            conn_request_done(c);
            return;
        }
    }
}

/* Reads every result that is complete without waiting. */
static void conn_collect(struct pg_conn *c)
{
    struct pg_req *r = c->req;
    if (r->kind == RK_TX) {
        conn_collect_tx(c);
        return;
    }
    while (c->req == r && !PQisBusy(c->pgc)) {
        PGresult *res = PQgetResult(c->pgc);
        if (res == NULL) {
            conn_request_done(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN && r->kind == RK_COPY_START) {
            /* The server waits for data; PQgetResult would now return COPY_IN forever. */
            c->copy_in = 1;
            req_detach(r);
            evtimer_del(r->timer);
            req_complete(r, PG_OK, res, NULL);
            return;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_drop(c, PG_ERR_QUERY,
                      "COPY is supported only as FROM STDIN via pg_conn_copy_start", LOG_INFO);
            return;
        }
        /* Keep the last result, but an error wins over anything after it. */
        if (r->res == NULL || PQresultStatus(r->res) != PGRES_FATAL_ERROR) {
            PQclear(r->res);
            r->res = res;
        } else {
            PQclear(res);
        }
    }
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    (void)fd;

    if (c->state == CS_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (c->state != CS_UP)
        return;
    if (what & EV_READ) {
        if (!PQconsumeInput(c->pgc)) {
            conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
            return;
        }
        PGnotify *n;
        while ((n = PQnotifies(c->pgc)) != NULL)
            PQfreemem(n);
    }
    if (c->flushing && conn_flush(c) < 0)
        return;
    if (c->req != NULL)
        conn_collect(c);
    else if (PQstatus(c->pgc) == CONNECTION_BAD)
        conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
}

/* One statement of a pipeline, by text or by name. */
static int send_one(PGconn *pgc, const char *text, int prepared, int nparams,
                    const char *const *values)
{
    return prepared ? PQsendQueryPrepared(pgc, text, nparams, values, NULL, NULL, 0)
                    : PQsendQueryParams(pgc, text, nparams, NULL, values, NULL, NULL, 0);
}

/* RK_TX's messages, in the order conn_collect_tx reads their results. */
static int conn_send_tx(struct pg_conn *c, const struct pg_req *r)
{
    PGconn *pgc = c->pgc;
    return PQenterPipelineMode(pgc) && send_one(pgc, "BEGIN", 0, 0, NULL) &&
           (r->text2 == NULL || send_one(pgc, r->text2, r->setup_prepared, r->nsetup, r->values)) &&
           send_one(pgc, r->text, r->stmt_prepared, r->nparams - r->nsetup,
                    r->values + r->nsetup) &&
           PQpipelineSync(pgc) && send_one(pgc, "COMMIT", 0, 0, NULL) && PQpipelineSync(pgc) &&
           send_one(pgc, "RESET ALL", 0, 0, NULL) && PQpipelineSync(pgc);
}

static void conn_send(struct pg_conn *c, struct pg_req *r)
{
    struct pg_pool *p = c->pool;
    int ok = 0;
    assert(c->state == CS_UP && c->req == NULL && r->where == RW_NONE);
    c->req = r;
    r->conn = c;
    r->where = RW_SENT;
    if (req_internal(r)) {
        r->timeout_ms = p->query_timeout_ms;
        struct timeval tv = ms_tv(r->timeout_ms);
        evtimer_add(r->timer, &tv);
    }
    switch (r->kind) {
    case RK_QUERY:
    case RK_COPY_START:
        ok = PQsendQueryParams(c->pgc, r->text, r->nparams, NULL, r->values, NULL, NULL, 0);
        break;
    case RK_PREPARED:
        ok = PQsendQueryPrepared(c->pgc, r->text, r->nparams, r->values, NULL, NULL, 0);
        break;
    case RK_TX:
        ok = conn_send_tx(c, r);
        break;
    case RK_PREPARE:
        ok = PQsendPrepare(c->pgc, r->text, r->text2, r->nparams, NULL);
        break;
    case RK_RESET:
        ok = PQsendQuery(c->pgc,
                         PQtransactionStatus(c->pgc) == PQTRANS_IDLE ? RESET_SQL : RESET_TX_SQL);
        break;
    case RK_COPY_END:
        /* In non-blocking mode 0 means libpq could not grow its buffer: out of memory. */
        ok = PQputCopyEnd(c->pgc, r->text) == 1;
        c->copy_in = 0;
        c->drain_wait = 0;
        evtimer_del(c->timer);
        event_del(c->drain_ev);
        break;
    case RK_ACQUIRE:
        assert(0);
        break;
    }
    if (!ok) {
        conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
        return;
    }
    conn_flush(c);
}

/*
 * Closes the connection: its request (keeping any error result the server sent, for its
 * SQLSTATE) and, if acquired, its queued calls fail with st. A pooled slot reconnects at
 * once; an acquired one stays down until its holder releases it.
 */
static void conn_drop(struct pg_conn *c, enum pg_status st, const char *why, enum log_level lvl)
{
    struct pg_pool *p = c->pool;
    char *msg = one_line(why); /* why may live inside the PGconn we are about to free */
    struct pg_req *r;

    pool_log(lvl, "pg: connection %d closed: %s", c->id, msg != NULL ? msg : "");
    if ((r = c->req) != NULL) {
        req_detach(r);
        evtimer_del(r->timer);
        if (req_internal(r))
            req_free(r);
        else
            req_complete(r, st, r->res, msg);
    }
    while ((r = TAILQ_FIRST(&c->queue)) != NULL) {
        req_detach(r);
        req_complete(r, PG_ERR_CONNECTION, NULL, msg);
    }
    c->copy_in = 0;
    if (c->drain_wait) {
        c->drain_wait = 0;
        drain_notify(c, st);
    }
    conn_close(c);
    if (c->state == CS_UP) {
        p->nup--;
        p->counters.disconnects++;
    }
    c->state = CS_DOWN;
    if (!c->acquired)
        conn_schedule(c, 0);
    free(msg);
}

/* ---- the pool ------------------------------------------------------------------------- */

static struct pg_conn *pool_idle_conn(struct pg_pool *p)
{
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        if (c->state == CS_UP && !c->acquired && c->req == NULL && c->nprepared == p->nstmts)
            return c;
    }
    return NULL;
}

/* Hands waiting calls to idle connections, in FIFO order. */
static void pool_dispatch(struct pg_pool *p)
{
    struct pg_req *r;
    struct pg_conn *c;
    while ((r = TAILQ_FIRST(&p->queue)) != NULL && (c = pool_idle_conn(p)) != NULL) {
        req_detach(r);
        if (r->kind == RK_ACQUIRE) {
            c->acquired = 1;
            r->conn = c;
            req_complete(r, PG_OK, NULL, NULL);
        } else {
            conn_send(c, r);
        }
    }
}

/* An UP, pooled, idle connection: prepare what it lacks, then serve the queue. */
static void conn_ready(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    if (c->state != CS_UP || c->acquired || c->req != NULL)
        return;
    if (c->nprepared < p->nstmts) {
        struct pg_stmt *s = &p->stmts[c->nprepared];
        struct pg_req *r = req_new(p, RK_PREPARE, s->name, s->sql, 0, NULL);
        if (r == NULL) {
            conn_drop(c, PG_ERR_CONNECTION, "out of memory", LOG_ERROR);
            return;
        }
        r->nparams = s->nparams; /* for PQsendPrepare: parameter count, types inferred */
        conn_send(c, r);
        return;
    }
    pool_dispatch(p);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    char why[96];
    (void)fd;
    (void)what;
    switch (c->state) {
    case CS_DOWN:
        if (!c->acquired)
            conn_connect(c);
        break;
    case CS_CONNECTING:
        snprintf(why, sizeof(why), "no connection within %d ms", c->pool->connect_timeout_ms);
        conn_connect_failed(c, why, 1);
        break;
    case CS_UP:
        if (c->drain_wait) {
            snprintf(why, sizeof(why), "COPY data not taken within %d ms",
                     c->pool->query_timeout_ms);
            conn_drop(c, PG_ERR_TIMEOUT, why, LOG_WARN);
        }
        break;
    }
}

static void conn_on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    struct pg_pool *p = c->pool;
    (void)fd;
    (void)what;
    if (c->drain_cb == NULL)
        return;
    p->depth++;
    c->drain_cb(c->drain_arg, c->drain_status);
    pool_leave(p);
}

/* Splits a comma-separated libpq list ("a,b,,c"); NULL or "" gives no entries. */
static int split_list(const char *s, char ***out)
{
    int n = 1;
    *out = NULL;
    if (s == NULL || *s == '\0')
        return 0;
    for (const char *q = s; *q != '\0'; q++)
        n += *q == ',';
    char **list = calloc((size_t)n, sizeof(char *));
    if (list == NULL)
        return -1;
    const char *q = s;
    for (int i = 0; i < n; i++) {
        size_t k = strcspn(q, ",");
        list[i] = strndup(q, k);
        if (list[i] == NULL) {
            for (int j = 0; j < i; j++)
                free(list[j]);
            free(list);
            return -1;
        }
        q += k + (q[k] == ',');
    }
    *out = list;
    return n;
}

static void free_list(char **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/*
 * Reads what the pool needs from the conninfo: the host lists and the user's options, to which
 * our statement_timeout and the caller's session settings are appended.
 */
static int pool_parse_conninfo(struct pg_pool *p, const char *settings)
{
    char *err = NULL, st[48] = "";
    const char *user_options = NULL;
    int rc = -1;
    PQconninfoOption *opts = PQconninfoParse(p->conninfo, &err);
    if (opts == NULL) {
        /* The message may quote the string, password included: mask it like the string. */
        char *safe = err != NULL ? log_redact(err) : NULL;
        log_error("pg: invalid connection string %s: %s", p->conninfo_safe,
                  safe != NULL ? safe : "out of memory");
        free(safe);
        PQfreemem(err);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            p->nhosts = split_list(o->val, &p->hosts);
        else if (strcmp(o->keyword, "hostaddr") == 0)
            p->naddrs = split_list(o->val, &p->addrs);
        else if (strcmp(o->keyword, "port") == 0)
            p->nports = split_list(o->val, &p->ports);
        else if (strcmp(o->keyword, "options") == 0)
            user_options = o->val;
    }
    if (p->nhosts < 0 || p->naddrs < 0 || p->nports < 0)
        goto out;
    p->nlist = p->nhosts > p->naddrs ? p->nhosts : p->naddrs;
    if (p->statement_timeout_ms > 0)
        snprintf(st, sizeof(st), "-c statement_timeout=%d", p->statement_timeout_ms);
    if (user_options == NULL)
        user_options = "";
    if (asprintf(&p->options, "%s %s %s", user_options, st, settings != NULL ? settings : "") < 0) {
        p->options = NULL;
        goto out;
    }
    rc = 0;
out:
    PQconninfoFree(opts);
    return rc;
}

struct pg_pool *pg_pool_new(struct event_base *base, const struct pg_options *opt)
{
    struct pg_pool *p = NULL;

    if (base == NULL || opt == NULL || opt->conninfo == NULL || opt->pool_size < 0 ||
        opt->pool_size > 1000 || opt->connect_timeout_ms < 0 || opt->statement_timeout_ms < 0 ||
        opt->query_timeout_ms < 0 || opt->queue_max < 0 || opt->backoff_min_ms < 0 ||
        opt->backoff_max_ms < 0) {
        log_error("pg: invalid pool options");
        return NULL;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->base = base;
    TAILQ_INIT(&p->queue);
    TAILQ_INIT(&p->done);
    p->size = opt->pool_size > 0 ? opt->pool_size : 4;
    p->connect_timeout_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 5000;
    p->statement_timeout_ms = opt->statement_timeout_ms;
    p->query_timeout_ms = opt->query_timeout_ms;
    if (p->query_timeout_ms == 0) {
        int st = p->statement_timeout_ms;
        p->query_timeout_ms = st > 0 ? st + (st / 10 > 100 ? st / 10 : 100) : 5000;
    }
    p->queue_max = opt->queue_max > 0 ? opt->queue_max : 1024;
    p->backoff_min_ms = opt->backoff_min_ms > 0 ? opt->backoff_min_ms : 50;
    p->backoff_max_ms = opt->backoff_max_ms > 0 ? opt->backoff_max_ms : 1000;
    if (p->backoff_max_ms < p->backoff_min_ms)
        p->backoff_max_ms = p->backoff_min_ms;
    p->rng = ((uint64_t)time(NULL) << 32) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)p;
    if (p->rng == 0)
        p->rng = 1;
    p->conninfo = strdup(opt->conninfo);
    p->conninfo_safe = log_redact(opt->conninfo);
    if (p->conninfo == NULL || p->conninfo_safe == NULL ||
        pool_parse_conninfo(p, opt->settings) != 0)
        goto fail;
    p->conns = calloc((size_t)p->size, sizeof(*p->conns));
    if (p->conns == NULL)
        goto fail;
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        c->pool = p;
        c->id = i;
        c->fd = -1;
        TAILQ_INIT(&c->queue);
        c->timer = evtimer_new(base, conn_on_timer, c);
        c->drain_ev = event_new(base, -1, 0, conn_on_drain, c);
        if (c->timer == NULL || c->drain_ev == NULL)
            goto fail;
    }
    /* Connect from the loop, never inside this call. */
    for (int i = 0; i < p->size; i++)
        conn_schedule(&p->conns[i], 0);
    log_info("pg: pool of %d connections to %s", p->size, p->conninfo_safe);
    return p;
fail:
    pool_release_memory(p);
    free(p);
    return NULL;
}

/* Frees everything but the pool struct itself (which a running callback may still read). */
static void pool_release_memory(struct pg_pool *p)
{
    if (p->conns != NULL) {
        for (int i = 0; i < p->size; i++) {
            struct pg_conn *c = &p->conns[i];
            if (c->timer != NULL)
                conn_close(c);
            if (c->timer != NULL)
                event_free(c->timer);
            if (c->drain_ev != NULL)
                event_free(c->drain_ev);
        }
    }
    free(p->conns);
    p->conns = NULL;
    for (int i = 0; i < p->nstmts; i++) {
        free(p->stmts[i].name);
        free(p->stmts[i].sql);
    }
    free(p->stmts);
    p->stmts = NULL;
    p->nstmts = 0;
    free_list(p->hosts, p->nhosts);
    free_list(p->addrs, p->naddrs);
    free_list(p->ports, p->nports);
    p->hosts = p->addrs = p->ports = NULL;
    free(p->options);
    free(p->conninfo);
    free(p->conninfo_safe);
    free(p->last_error);
    p->options = p->conninfo = p->conninfo_safe = p->last_error = NULL;
}

void pg_pool_free(struct pg_pool *p)
{
    struct req_list pending;
    struct pg_req *r;

    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    log_info("pg: closing the pool of %s", p->conninfo_safe);
    TAILQ_INIT(&pending);
    /* Silence every connection first, so nothing moves while the callbacks run. */
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        if ((r = c->req) != NULL) {
            req_detach(r);
            if (req_internal(r))
                req_free(r);
            else
                TAILQ_INSERT_TAIL(&pending, r, link);
        }
        while ((r = TAILQ_FIRST(&c->queue)) != NULL) {
            req_detach(r);
            TAILQ_INSERT_TAIL(&pending, r, link);
        }
        conn_close(c);
        c->drain_due = event_pending(c->drain_ev, EV_TIMEOUT, NULL) != 0;
        event_del(c->drain_ev);
        if (c->state == CS_UP)
            p->nup--;
        c->state = CS_DOWN;
    }
    while ((r = TAILQ_FIRST(&p->queue)) != NULL) {
        req_detach(r);
        TAILQ_INSERT_TAIL(&pending, r, link);
    }
    while ((r = TAILQ_FIRST(&p->done)) != NULL) {
        req_detach(r);
        TAILQ_INSERT_TAIL(&pending, r, link);
    }
    p->depth++;
    while ((r = TAILQ_FIRST(&pending)) != NULL) {
        TAILQ_REMOVE(&pending, r, link);
        PQclear(r->res);
        r->res = NULL;
        free(r->message);
        r->message = one_line("the connection pool was closed");
        r->status = PG_ERR_CLOSED;
        req_deliver(r); /* the depth taken above keeps the pool alive through it */
    }
    /* A COPY held back by backpressure, or about to hear it may go on, hears this instead. */
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        if (c->drain_cb != NULL && (c->drain_wait || c->drain_due)) {
            c->drain_wait = c->drain_due = 0;
            c->drain_cb(c->drain_arg, PG_ERR_CLOSED);
        }
    }
    pool_release_memory(p);
    pool_leave(p);
}

/* ---- calls ------------------------------------------------------------------------------ */

static void req_arm(struct pg_req *r, int timeout_ms)
{
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : r->pool->query_timeout_ms;
    struct timeval tv = ms_tv(r->timeout_ms);
    evtimer_add(r->timer, &tv);
    r->pool->counters.calls++;
}

static int pool_submit(struct pg_pool *p, struct pg_req *r, int timeout_ms)
{
    req_arm(r, timeout_ms);
    if (p->down) {
        char msg[512];
        snprintf(msg, sizeof(msg), "no connection to PostgreSQL: %s",
                 p->last_error != NULL ? p->last_error : "unknown error");
        req_complete(r, PG_ERR_CONNECTION, NULL, msg);
    } else if (p->queue_len >= p->queue_max) {
        req_complete(r, PG_ERR_BUSY, NULL, "too many calls waiting for a connection");
    } else {
        r->where = RW_POOL_QUEUE;
        TAILQ_INSERT_TAIL(&p->queue, r, link);
        p->queue_len++;
        pool_dispatch(p);
    }
    return 0;
}

static int params_ok(int nparams, const char *const *values)
{
    return nparams >= 0 && nparams <= 65535 && (nparams == 0 || values != NULL);
}

static const struct pg_stmt *pool_stmt(const struct pg_pool *p, const char *name)
{
    for (int i = 0; i < p->nstmts; i++)
        if (strcmp(p->stmts[i].name, name) == 0)
            return &p->stmts[i];
    return NULL;
}

int pg_query(struct pg_pool *p, int timeout_ms, pg_result_fn cb, void *arg, const char *sql,
             int nparams, const char *const *values)
{
    if (p == NULL || p->closing || cb == NULL || sql == NULL || !params_ok(nparams, values))
        return -1;
    struct pg_req *r = req_new(p, RK_QUERY, sql, NULL, nparams, values);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    return pool_submit(p, r, timeout_ms);
}

int pg_query_prepared(struct pg_pool *p, int timeout_ms, pg_result_fn cb, void *arg,
                      const char *name, int nparams, const char *const *values)
{
    const struct pg_stmt *s = p != NULL && name != NULL ? pool_stmt(p, name) : NULL;
    if (s == NULL || p->closing || cb == NULL || s->nparams != nparams ||
        !params_ok(nparams, values))
        return -1;
    struct pg_req *r = req_new(p, RK_PREPARED, name, NULL, nparams, values);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    return pool_submit(p, r, timeout_ms);
}

/* A pg_call that names a registered statement of the right arity, or carries SQL. */
static int call_ok(const struct pg_pool *p, const struct pg_call *call)
{
    if (call->sql == NULL || !params_ok(call->nparams, call->values))
        return 0;
    if (!call->prepared)
        return 1;
    const struct pg_stmt *s = pool_stmt(p, call->sql);
    return s != NULL && s->nparams == call->nparams;
}

int pg_query_tx(struct pg_pool *p, int timeout_ms, pg_result_fn cb, void *arg,
                const struct pg_call *setup, const struct pg_call *stmt)
{
    if (p == NULL || p->closing || cb == NULL || stmt == NULL || !call_ok(p, stmt) ||
        (setup != NULL && !call_ok(p, setup)))
        return -1;
    int nsetup = setup != NULL ? setup->nparams : 0, n = nsetup + stmt->nparams;
    if (n > 65535)
        return -1;
    const char **values = n > 0 ? malloc((size_t)n * sizeof(*values)) : NULL;
    if (n > 0 && values == NULL)
        return -1;
    for (int i = 0; i < nsetup; i++)
        values[i] = setup->values[i];
    for (int i = 0; i < stmt->nparams; i++)
        values[nsetup + i] = stmt->values[i];
    struct pg_req *r = req_new(p, RK_TX, stmt->sql, setup != NULL ? setup->sql : NULL, n,
                               (const char *const *)values);
    free(values);
    if (r == NULL)
        return -1;
    r->nsetup = nsetup;
    r->setup_prepared = setup != NULL && setup->prepared;
    r->stmt_prepared = stmt->prepared;
    r->cb = cb;
    r->arg = arg;
    return pool_submit(p, r, timeout_ms);
}

int pg_pool_acquire(struct pg_pool *p, int timeout_ms, pg_acquire_fn cb, void *arg)
{
    if (p == NULL || p->closing || cb == NULL)
        return -1;
    struct pg_req *r = req_new(p, RK_ACQUIRE, NULL, NULL, 0, NULL);
    if (r == NULL)
        return -1;
    r->acquire_cb = cb;
    r->arg = arg;
    return pool_submit(p, r, timeout_ms);
}

int pg_pool_prepare(struct pg_pool *p, const char *name, const char *sql, int nparams)
{
    if (p == NULL || p->closing || name == NULL || *name == '\0' || sql == NULL || nparams < 0 ||
        nparams > 65535)
        return -1;
    const struct pg_stmt *old = pool_stmt(p, name);
    if (old != NULL)
        return strcmp(old->sql, sql) == 0 && old->nparams == nparams ? 0 : -1;
    struct pg_stmt *s = realloc(p->stmts, (size_t)(p->nstmts + 1) * sizeof(*s));
    if (s == NULL)
        return -1;
    p->stmts = s;
    s = &p->stmts[p->nstmts];
    s->name = strdup(name);
    s->sql = strdup(sql);
    s->nparams = nparams;
    if (s->name == NULL || s->sql == NULL) {
        free(s->name);
        free(s->sql);
        return -1;
    }
    p->nstmts++;
    /* Idle connections prepare it now; busy ones before their next call. */
    for (int i = 0; i < p->size; i++)
        conn_ready(&p->conns[i]);
    return 0;
}

/* Queues or sends a call on an acquired connection. */
static int conn_submit(struct pg_conn *c, struct pg_req *r, int timeout_ms)
{
    req_arm(r, timeout_ms);
    r->conn = c;
    if (c->state != CS_UP) {
        req_complete(r, PG_ERR_CONNECTION, NULL, "the connection was lost");
    } else if (c->req != NULL) {
        r->where = RW_CONN_QUEUE;
        TAILQ_INSERT_TAIL(&c->queue, r, link);
    } else {
        conn_send(c, r);
    }
    return 0;
}

static int conn_usable(const struct pg_conn *c)
{
    return c != NULL && c->acquired && !c->pool->closing && !c->copy_in;
}

int pg_conn_query(struct pg_conn *c, int timeout_ms, pg_result_fn cb, void *arg, const char *sql,
                  int nparams, const char *const *values)
{
    if (!conn_usable(c) || cb == NULL || sql == NULL || !params_ok(nparams, values))
        return -1;
    struct pg_req *r = req_new(c->pool, RK_QUERY, sql, NULL, nparams, values);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    return conn_submit(c, r, timeout_ms);
}

int pg_conn_query_prepared(struct pg_conn *c, int timeout_ms, pg_result_fn cb, void *arg,
                           const char *name, int nparams, const char *const *values)
{
    const struct pg_stmt *s = c != NULL && name != NULL ? pool_stmt(c->pool, name) : NULL;
    if (!conn_usable(c) || s == NULL || cb == NULL || s->nparams != nparams ||
        !params_ok(nparams, values))
        return -1;
    struct pg_req *r = req_new(c->pool, RK_PREPARED, name, NULL, nparams, values);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    return conn_submit(c, r, timeout_ms);
}

void pg_conn_release(struct pg_conn *c)
{
    struct pg_req *r;
    if (c == NULL || !c->acquired || c->pool->closing)
        return;
    c->acquired = 0;
    /* No callback reaches the holder after this but those of its pending calls. */
    c->drain_cb = NULL;
    c->drain_arg = NULL;
    c->drain_wait = 0;
    event_del(c->drain_ev);
    while ((r = TAILQ_FIRST(&c->queue)) != NULL) {
        req_detach(r);
        req_complete(r, PG_ERR_CLOSED, NULL, "the connection was released first");
    }
    if (c->state != CS_UP) {
        conn_schedule(c, 0);
        return;
    }
    PGTransactionStatusType tx = PQtransactionStatus(c->pgc);
    if (c->req != NULL || c->copy_in || c->drain_wait || tx == PQTRANS_ACTIVE ||
        tx == PQTRANS_UNKNOWN) {
        /* Its state cannot be known without waiting: a fresh connection is cheaper. */
        conn_drop(c, PG_ERR_CLOSED, "released while busy", LOG_DEBUG);
        return;
    }
    r = req_new(c->pool, RK_RESET, NULL, NULL, 0, NULL);
    if (r == NULL) {
        conn_drop(c, PG_ERR_CLOSED, "out of memory", LOG_ERROR);
        return;
    }
    conn_send(c, r);
}

int pg_conn_copy_start(struct pg_conn *c, int timeout_ms, const char *sql, pg_result_fn cb,
                       pg_drain_fn drain, void *arg)
{
    if (!conn_usable(c) || cb == NULL || sql == NULL)
        return -1;
    struct pg_req *r = req_new(c->pool, RK_COPY_START, sql, NULL, 0, NULL);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    c->drain_cb = drain;
    c->drain_arg = arg;
    return conn_submit(c, r, timeout_ms);
}

int pg_conn_copy_data(struct pg_conn *c, const void *buf, size_t len)
{
    if (c == NULL || !c->acquired || c->pool->closing || !c->copy_in || c->state != CS_UP ||
        len > (size_t)0x7fffffff)
        return -1;
    if (len > 0) {
        /*
         * In non-blocking mode libpq takes the data into its buffer (growing it as needed)
         * and sends what the socket accepts; 0 would mean it could not grow the buffer.
         */
        if (PQputCopyData(c->pgc, buf, (int)len) != 1) {
            conn_drop(c, PG_ERR_CONNECTION, PQerrorMessage(c->pgc), LOG_WARN);
            return -1;
        }
    }
    int rc = conn_flush(c);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return 0;
    /* The socket is full: hold the caller back until it drains, within a deadline. */
    if (!c->drain_wait) {
        c->drain_wait = 1;
        conn_schedule(c, c->pool->query_timeout_ms);
    }
    return 1;
}

int pg_conn_copy_end(struct pg_conn *c, int timeout_ms, const char *errmsg, pg_result_fn cb,
                     void *arg)
{
    if (c == NULL || !c->acquired || c->pool->closing || cb == NULL)
        return -1;
    if (c->state == CS_UP && (!c->copy_in || c->req != NULL))
        return -1;
    struct pg_req *r = req_new(c->pool, RK_COPY_END, errmsg, NULL, 0, NULL);
    if (r == NULL)
        return -1;
    r->cb = cb;
    r->arg = arg;
    return conn_submit(c, r, timeout_ms);
}

void pg_pool_stats(const struct pg_pool *p, struct pg_stats *out)
{
    *out = p->counters;
    out->connections = p->size;
    out->open = out->idle = out->busy = out->acquired = out->connecting = 0;
    for (int i = 0; i < p->size; i++) {
        const struct pg_conn *c = &p->conns[i];
        out->acquired += c->acquired;
        if (c->state == CS_CONNECTING)
            out->connecting++;
        if (c->state != CS_UP)
            continue;
        out->open++;
        if (c->acquired)
            continue;
        if (c->req != NULL || c->nprepared < p->nstmts)
            out->busy++;
        else
            out->idle++;
    }
    out->queued = p->queue_len;
    out->down = p->down;
}
