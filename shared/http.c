/*
 * http: the server behind all four programs (see http.h). One evhttp per worker thread, the
 * router, request ids, problem+json, access log and metrics, and the bookkeeping that keeps
 * evhttp 2.1 safe when clients vanish, trickle, or the server shuts down under them.
 *
 * Lifetimes, because evhttp 2.1 does not tell an application much:
 *   - A connection is seen when evhttp asks for its bufferevent (evhttp_set_bevcb) and is
 *     "adopted" a moment later, in the same loop pass, once evhttp has set itself as the
 *     bufferevent's callback argument: that is how we learn the evhttp_connection, on which
 *     we set a close callback. The close callback is the one notice we get when evhttp frees
 *     a connection, whatever the reason.
 *   - A request handed to a handler is owned by us (evhttp_request_own), so evhttp does not
 *     free it when its connection dies under it; headers and body stay readable and the
 *     reply call stays safe. evhttp frees it only after the response was written (the
 *     on-complete callback); in every other case we free it.
 *   - While a handler holds a request evhttp does not read from the connection, so it would
 *     not notice the client leaving; a read watch of our own on the socket does. It is set
 *     up by a sweep at most WATCH_DELAY_MS after the handler went asynchronous, not at once,
 *     so that the many requests answered within a millisecond or two cost no epoll_ctl.
 */
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <sys/queue.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>

#define HTTP_MAX_PARAMS 8
#define HTTP_ID_MAX 64
#define HTTP_LOG_PATH_MAX 256
#define WATCH_DELAY_MS 100

struct worker;

struct route {
    enum http_method method;
    char *pattern;
    char *label;
    http_handler_fn fn;
    void *arg;
};

/* A piece of the request path: a route parameter before it is copied. */
struct span {
    const char *p;
    size_t len;
};

/* One client connection, from adoption until evhttp frees it (conn_closed_cb). */
struct http_conn {
    struct worker *w;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until adopted */
    int fd;
    struct http_req *cur;         /* the request being handled or answered, if any */
    struct event *deadline;       /* request_timeout, armed while waiting for a request */
    struct http_conn *next_adopt; /* the worker's list of connections not yet adopted */
};

struct http_req {
    struct worker *w;
    struct http_conn *conn;       /* NULL once the connection is gone */
    struct evhttp_request *evreq; /* ours (evhttp_request_own) unless the reply completed */
    struct http_req *prev, *next; /* the worker's unfinished requests */
    struct http_req *next_reap;   /* the worker's list of requests to free */
    const char *route_label;      /* a route's label, or "unmatched" */
    const char *method_name;      /* "GET" */
    const char *path;             /* in evreq */
    enum http_method method;      /* 0 for methods we do not know */
    int status;                   /* what was answered */
    unsigned replied : 1;         /* a reply call was made */
    unsigned orphaned : 1;        /* evhttp dropped the connection; we free evreq */
    unsigned gone : 1;            /* the client closed or reset */
    unsigned query_parsed : 1;
    unsigned query_ok : 1;
    struct event *gone_ev; /* watches the socket while the handler works */
    struct timespec t0;
    struct sockaddr_storage peer;
    char peer_text[INET6_ADDRSTRLEN];
    struct evkeyvalq query;
    char id[HTTP_ID_MAX + 1];
    unsigned nparams;
    const char *params[HTTP_MAX_PARAMS];
    char parambuf[]; /* the parameters, each NUL-terminated */
};

struct worker {
    struct httpd *h;
    unsigned idx;
    pthread_t thread;
    int thread_started;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    void *ctx;
    /* Activated from elsewhere (stop_ev from the main thread) or deferred to a clean point
     * of the loop, outside evhttp's own call stack. */
    struct event *stop_ev, *grace_ev, *drain_ev, *adopt_ev, *reap_ev, *watch_ev;
    const struct timeval *deadline_tv; /* request_timeout as a common timeout: O(1) timers */
    unsigned grace_ms;
    struct http_conn *adopting;
    struct http_conn **by_fd; /* adopted connections by socket, as memcached's conns[] */
    size_t nby_fd;
    struct http_req *reqs; /* unfinished requests */
    struct http_req *reap;
    unsigned inflight;
    int stopping, finished;
    uint64_t id_key[2], id_ctr;
};

struct httpd {
    struct httpd_config cfg;
    char *host;
    unsigned port;
    struct route *routes;
    size_t nroutes;
    struct worker *workers;
    int started, shut;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ready;
    struct metric *m_requests, *m_duration, *m_conns;
};

static const char *const method_names[] = {"GET",    "HEAD",  "POST",   "PUT",
                                           "DELETE", "PATCH", "OPTIONS"};
#define METHOD_COUNT (sizeof(method_names) / sizeof(method_names[0]))
#define ALL_METHODS ((1u << METHOD_COUNT) - 1)

static const char *method_name(enum http_method m)
{
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (m == (1u << i))
            return method_names[i];
    return "OTHER";
}

static enum http_method method_from_evhttp(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return HTTP_GET;
    case EVHTTP_REQ_HEAD:
        return HTTP_HEAD;
    case EVHTTP_REQ_POST:
        return HTTP_POST;
    case EVHTTP_REQ_PUT:
        return HTTP_PUT;
    case EVHTTP_REQ_DELETE:
        return HTTP_DELETE;
    case EVHTTP_REQ_PATCH:
        return HTTP_PATCH;
    case EVHTTP_REQ_OPTIONS:
        return HTTP_OPTIONS;
    default:
        return 0;
    }
}

static const struct {
    int status;
    const char *phrase;
} status_phrases[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Content"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

const char *http_status_phrase(int status)
{
    for (size_t i = 0; i < sizeof(status_phrases) / sizeof(status_phrases[0]); i++)
        if (status_phrases[i].status == status)
            return status_phrases[i].phrase;
    return "Unknown";
}

/* ---- libevent's own messages go through our log, one JSON line each ---- */

static void libevent_log_cb(int severity, const char *msg)
{
    enum log_level level = severity == EVENT_LOG_DEBUG  ? LOG_DEBUG
                           : severity == EVENT_LOG_MSG  ? LOG_INFO
                           : severity == EVENT_LOG_WARN ? LOG_WARN
                                                        : LOG_ERROR;
    log_emit(level, NULL, msg, json_pack("{s:s}", "source", "libevent"));
}

static pthread_once_t libevent_once = PTHREAD_ONCE_INIT;

static void libevent_setup(void)
{
    /* Locks on every event base: the main thread wakes workers with event_active. */
    evthread_use_pthreads();
    event_set_log_callback(libevent_log_cb);
}

/* ---- request ids ---- */

static int id_sane(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= HTTP_ID_MAX)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/*
 * 32 hex digits. Each worker keys a bijective mixer with 128 random bits once and feeds it a
 * counter, so ids never repeat within a worker, look random, and cost no system call.
 */
static void id_generate(struct worker *w, char out[HTTP_ID_MAX + 1])
{
    uint64_t ctr = w->id_ctr++;
    snprintf(out, HTTP_ID_MAX + 1, "%016llx%016llx",
             (unsigned long long)splitmix64(w->id_key[0] + ctr),
             (unsigned long long)splitmix64(w->id_key[1] ^ ctr));
}

/* ---- routing ---- */

/* "/a/{}/b": starts with '/', each "{}" a whole segment, no other braces. */
static int pattern_check(const char *p, unsigned *nparams)
{
    unsigned n = 0;
    if (p == NULL || p[0] != '/')
        return -1;
    for (const char *s = p; *s != '\0'; s++) {
        if (*s == '}')
            return -1;
        if (*s != '{')
            continue;
        if (s[1] != '}' || s[-1] != '/' || (s[2] != '/' && s[2] != '\0'))
            return -1;
        if (++n > HTTP_MAX_PARAMS)
            return -1;
        s++;
    }
    *nparams = n;
    return 0;
}

/* Compares raw bytes: a percent-encoded literal segment does not match its decoded form. */
static int pattern_match(const char *pat, const char *path, struct span *params, unsigned *np)
{
    unsigned n = 0;
    while (*pat != '\0' && *path != '\0') {
        if (pat[0] == '{') {
            const char *end = path;
            while (*end != '\0' && *end != '/')
                end++;
            if (end == path)
                return 0;
            params[n].p = path;
            params[n].len = (size_t)(end - path);
            n++;
            path = end;
            pat += 2;
        } else if (*pat == *path) {
            pat++;
            path++;
        } else {
            return 0;
        }
    }
    if (*pat != '\0' || *path != '\0')
        return 0;
    *np = n;
    return 1;
}

/*
 * The route for method and path, or NULL; *allow collects the methods of every route whose
 * pattern matches (for 405), *label the first such route's label. HEAD falls back to GET.
 */
static const struct route *router_match(const struct httpd *h, enum http_method method,
                                        const char *path, struct span *params, unsigned *np,
                                        unsigned *allow, const char **label)
{
    const struct route *get = NULL;
    struct span tmp[HTTP_MAX_PARAMS], getp[HTTP_MAX_PARAMS];
    unsigned n = 0, getn = 0;

    *allow = 0;
    *label = NULL;
    for (size_t i = 0; i < h->nroutes; i++) {
        const struct route *rt = &h->routes[i];
        if (!pattern_match(rt->pattern, path, tmp, &n))
            continue;
        *allow |= rt->method;
        if (*label == NULL)
            *label = rt->label;
        if (rt->method == method) {
            memcpy(params, tmp, n * sizeof(*tmp));
            *np = n;
            *label = rt->label;
            return rt;
        }
        if (method == HTTP_HEAD && rt->method == HTTP_GET && get == NULL) {
            get = rt;
            memcpy(getp, tmp, n * sizeof(*tmp));
            getn = n;
        }
    }
    if (get != NULL) {
        memcpy(params, getp, getn * sizeof(*getp));
        *np = getn;
        *label = get->label;
    }
    return get;
}

int httpd_route(struct httpd *h, enum http_method method, const char *pattern, const char *label,
                http_handler_fn fn, void *arg)
{
    unsigned nparams = 0;
    struct route *grown = NULL, *rt = NULL;

    assert(!h->started);
    if (fn == NULL || method == 0 || (method & (method - 1)) != 0 || (method & ~ALL_METHODS) != 0 ||
        pattern_check(pattern, &nparams) != 0)
        return -1;
    for (size_t i = 0; i < h->nroutes; i++)
        if (h->routes[i].method == method && strcmp(h->routes[i].pattern, pattern) == 0)
            return -1;
    grown = realloc(h->routes, (h->nroutes + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    h->routes = grown;
    rt = &h->routes[h->nroutes];
    *rt = (struct route){.method = method, .fn = fn, .arg = arg};
    rt->pattern = strdup(pattern);
    rt->label = strdup(label != NULL ? label : pattern);
    if (rt->pattern == NULL || rt->label == NULL) {
        free(rt->pattern);
        free(rt->label);
        return -1;
    }
    h->nroutes++;
    return 0;
}

/* ---- the access log and metrics, once per request ---- */

static double elapsed_s(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The raw path as a log can hold it: bytes outside printable ASCII as %XX, and cut short. */
static void path_for_log(char *out, size_t cap, const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)path; *s != '\0'; s++) {
        if (o + 4 >= cap) {
            memcpy(out + (o < cap - 4 ? o : cap - 4), "...", 4);
            return;
        }
        if (*s > 0x20 && *s < 0x7f) {
            out[o++] = (char)*s;
        } else {
            out[o++] = '%';
            out[o++] = hex[*s >> 4];
            out[o++] = hex[*s & 15];
        }
    }
    out[o] = '\0';
}

static void worker_finish(struct worker *w);

/* Accounts for a finished request and unlinks it; the caller frees evreq (if ours) and req. */
static void req_finish(struct http_req *r)
{
    struct worker *w = r->w;
    struct httpd *h = w->h;
    double secs = elapsed_s(&r->t0);
    char status[12], path[HTTP_LOG_PATH_MAX];

    snprintf(status, sizeof(status), "%d", r->status);
    metric_inc(h->m_requests, r->route_label, r->method_name, status);
    metric_observe(h->m_duration, secs, r->route_label, status);
    if (log_enabled(LOG_INFO)) {
        path_for_log(path, sizeof(path), r->path);
        json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:f}", "method", r->method_name, "path", path,
                              "route", r->route_label, "status", r->status, "latency_ms",
                              (double)(long long)(secs * 1e6) / 1e3);
        if (f != NULL && r->gone)
            json_object_set_new(f, "client_gone", json_true());
        log_emit(LOG_INFO, r->id, "request", f);
    }

    if (r->gone_ev != NULL)
        event_free(r->gone_ev);
    r->gone_ev = NULL;
    if (r->query_parsed)
        evhttp_clear_headers(&r->query);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        w->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    w->inflight--;
    /* Finishing the last request lets a stopping worker close up; not from here, because
     * we may be inside evhttp's call stack for this very connection. */
    if (w->stopping && !w->finished && w->inflight == 0)
        event_active(w->drain_ev, EV_TIMEOUT, 0);
}

/* evhttp wrote the whole response and frees evreq when we return. */
static void req_complete_cb(struct evhttp_request *evreq, void *arg)
{
    struct http_req *r = arg;
    (void)evreq;
    if (r->conn != NULL) {
        r->conn->cur = NULL;
        evtimer_add(r->conn->deadline, r->w->deadline_tv);
    }
    req_finish(r);
    free(r);
}

/* Responses whose connection died while they were being written; freed outside evhttp. */
static void reap_run(struct worker *w)
{
    struct http_req *r;
    while ((r = w->reap) != NULL) {
        w->reap = r->next_reap;
        req_finish(r);
        evhttp_request_free(r->evreq);
        free(r);
    }
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reap_run(arg);
}

/* ---- noticing a client that leaves while its handler works ---- */

static void gone_watch_stop(struct http_req *r)
{
    if (r->gone_ev != NULL)
        event_free(r->gone_ev);
    r->gone_ev = NULL;
}

static void gone_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_req *r = arg;
    char b;
    (void)what;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0)
        r->gone = 1;
    /* n > 0 is a pipelined request: evhttp reads it later, and we can no longer tell. */
    gone_watch_stop(r);
}

static void gone_watch_start(struct http_req *r)
{
    if (r->conn == NULL || r->gone || r->gone_ev != NULL || r->conn->fd < 0)
        return;
    r->gone_ev = event_new(r->w->base, r->conn->fd, EV_READ | EV_PERSIST, gone_cb, r);
    if (r->gone_ev != NULL && event_add(r->gone_ev, NULL) != 0)
        gone_watch_stop(r);
}

/* Watches every request still with its handler; armed when a handler goes asynchronous. */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    for (struct http_req *r = w->reqs; r != NULL; r = r->next)
        if (!r->replied)
            gone_watch_start(r);
}

static void watch_arm(struct worker *w)
{
    static const struct timeval tv = {.tv_sec = 0, .tv_usec = WATCH_DELAY_MS * 1000};
    if (!evtimer_pending(w->watch_ev, NULL))
        evtimer_add(w->watch_ev, &tv);
}

/* ---- connections ---- */

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    (void)fd;
    (void)what;
    log_emit(LOG_DEBUG, NULL, "request not received in time, closing the connection", NULL);
    /* evhttp frees its placeholder request and calls conn_closed_cb, which frees c. */
    evhttp_connection_free(c->evcon);
}

/*
 * evhttp is freeing the connection. A request still attached is orphaned: evhttp will not
 * free it (we own it), and it still sits in the connection's queue, so a request whose
 * response was being written is freed a moment later (reap), and one still with its handler
 * when the handler replies.
 */
static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct http_conn *c = arg;
    struct worker *w = c->w;
    struct http_req *r = c->cur;

    /* Only evhttp_connection_free calls this for a server connection; make sure of once. */
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (r != NULL) {
        r->conn = NULL;
        r->orphaned = 1;
        r->gone = 1;
        gone_watch_stop(r);
        if (r->replied) {
            r->next_reap = w->reap;
            w->reap = r;
            event_active(w->reap_ev, EV_TIMEOUT, 0);
        }
    }
    if (c->fd >= 0 && (size_t)c->fd < w->nby_fd && w->by_fd[c->fd] == c)
        w->by_fd[c->fd] = NULL;
    if (c->deadline != NULL)
        event_free(c->deadline);
    metric_add(w->h->m_conns, -1);
    free(c);
}

/* Starts tracking c, whose evhttp connection is evcon. 0, or -1 (c is then not used). */
static int conn_attach(struct worker *w, struct http_conn *c, struct evhttp_connection *evcon)
{
    int one = 1;

    c->evcon = evcon;
    c->fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    if (c->fd < 0)
        return -1;
    if ((size_t)c->fd >= w->nby_fd) {
        size_t n = w->nby_fd ? w->nby_fd : 256;
        while (n <= (size_t)c->fd)
            n *= 2;
        struct http_conn **grown = realloc(w->by_fd, n * sizeof(*grown));
        if (grown == NULL)
            return -1;
        memset(grown + w->nby_fd, 0, (n - w->nby_fd) * sizeof(*grown));
        w->by_fd = grown;
        w->nby_fd = n;
    }
    c->deadline = evtimer_new(w->base, conn_deadline_cb, c);
    if (c->deadline == NULL)
        return -1;
    /* A response is written in one go; Nagle would only hold back its last segment. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    w->by_fd[c->fd] = c;
    evhttp_connection_set_closecb(evcon, conn_closed_cb, c);
    evtimer_add(c->deadline, w->deadline_tv);
    metric_add(w->h->m_conns, 1);
    return 0;
}

/* Marks a bufferevent evhttp asked for but never took; it is never called. */
static void conn_unclaimed_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;
}

/*
 * evhttp asks for a connection's bufferevent before it creates the connection. We keep a
 * reference until adopt_run, later in the same loop pass, so that whatever evhttp did with it
 * meanwhile (took it, or failed and freed it) we can tell without touching freed memory.
 */
static struct bufferevent *conn_bev_new(struct event_base *base, void *arg)
{
    struct worker *w = arg;
    struct http_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = NULL;

    if (c == NULL)
        return NULL; /* evhttp makes its own; the connection is adopted at its first request */
    /* No BEV_OPT_CLOSE_ON_FREE, like evhttp's own: evhttp closes the socket itself. */
    bev = bufferevent_socket_new(base, -1, 0);
    if (bev == NULL) {
        free(c);
        return NULL;
    }
    bufferevent_setcb(bev, conn_unclaimed_cb, NULL, NULL, c);
    bufferevent_incref(bev);
    c->w = w;
    c->bev = bev;
    c->fd = -1;
    c->next_adopt = w->adopting;
    w->adopting = c;
    event_active(w->adopt_ev, EV_TIMEOUT, 0);
    return bev;
}

static void adopt_run(struct worker *w)
{
    struct http_conn *c;
    while ((c = w->adopting) != NULL) {
        bufferevent_data_cb readcb = NULL;
        void *cbarg = NULL;

        w->adopting = c->next_adopt;
        bufferevent_getcb(c->bev, &readcb, NULL, NULL, &cbarg);
        if (readcb == conn_unclaimed_cb) {
            /* evhttp failed before taking it and left it to us. */
            bufferevent_free(c->bev);
            bufferevent_decref(c->bev);
            free(c);
        } else if (readcb == NULL) {
            /* evhttp took it and has freed it already (a failed setup, or evhttp_free). */
            bufferevent_decref(c->bev);
            free(c);
        } else {
            /* evhttp's callbacks are set with the evhttp_connection as their argument. */
            int fd = bufferevent_getfd(c->bev);
            bufferevent_decref(c->bev);
            if (fd >= 0 && (size_t)fd < w->nby_fd && w->by_fd[fd] != NULL &&
                w->by_fd[fd]->evcon == cbarg) {
                free(c); /* adopted already, at its first request */
            } else if (conn_attach(w, c, cbarg) != 0) {
                if (c->deadline != NULL)
                    event_free(c->deadline);
                free(c);
            }
        }
    }
}

static void adopt_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    adopt_run(arg);
}

/* The tracked connection of evcon, adopting it now if that did not happen at accept. */
static struct http_conn *conn_of(struct worker *w, struct evhttp_connection *evcon)
{
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    struct http_conn *c = NULL;

    if (fd >= 0 && (size_t)fd < w->nby_fd && w->by_fd[fd] != NULL && w->by_fd[fd]->evcon == evcon)
        return w->by_fd[fd];
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->w = w;
    c->bev = evhttp_connection_get_bufferevent(evcon);
    if (conn_attach(w, c, evcon) != 0) {
        if (c->deadline != NULL)
            event_free(c->deadline);
        free(c);
        return NULL;
    }
    return c;
}

/* ---- replies ---- */

static int dump_to_evbuffer(const char *buf, size_t size, void *data)
{
    return evbuffer_add(data, buf, size);
}

/* The body and headers are in place; sends (or, without a client, just frees). */
static void req_send(struct http_req *r, int status)
{
    struct evkeyvalq *out;
    struct evbuffer *body;

    assert(!r->replied && "a request is answered exactly once");
    r->replied = 1;
    r->status = status;
    gone_watch_stop(r);
    if (r->orphaned) {
        req_finish(r);
        evhttp_request_free(r->evreq);
        free(r);
        return;
    }
    out = evhttp_request_get_output_headers(r->evreq);
    body = evhttp_request_get_output_buffer(r->evreq);
    evhttp_add_header(out, "X-Request-Id", r->id);
    if (r->w->stopping)
        evhttp_add_header(out, "Connection", "close");
    if (r->method == HTTP_HEAD) {
        /* evhttp would send a HEAD body; answer the length a GET would have had instead. */
        char len[24];
        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(out, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(r->evreq, status, http_status_phrase(status), NULL);
}

void http_reply(struct http_req *r, int status, const char *content_type, const void *body,
                size_t len)
{
    assert(!r->replied && "a request is answered exactly once");
    if (!r->orphaned) {
        if (content_type != NULL)
            evhttp_add_header(evhttp_request_get_output_headers(r->evreq), "Content-Type",
                              content_type);
        if (len > 0 && evbuffer_add(evhttp_request_get_output_buffer(r->evreq), body, len) != 0)
            status = 500;
    }
    req_send(r, status);
}

void http_reply_buffer(struct http_req *r, int status, const char *content_type,
                       struct evbuffer *body)
{
    assert(!r->replied && "a request is answered exactly once");
    if (r->orphaned) {
        if (body != NULL)
            evbuffer_drain(body, evbuffer_get_length(body));
    } else {
        if (content_type != NULL)
            evhttp_add_header(evhttp_request_get_output_headers(r->evreq), "Content-Type",
                              content_type);
        if (body != NULL)
            evbuffer_add_buffer(evhttp_request_get_output_buffer(r->evreq), body);
    }
    req_send(r, status);
}

/* Serialises body (borrowed) as the response; -1 if that failed (nothing is left behind). */
static int reply_json_body(struct http_req *r, const char *content_type, json_t *body)
{
    struct evbuffer *out;
    if (r->orphaned)
        return 0;
    out = evhttp_request_get_output_buffer(r->evreq);
    if (json_dump_callback(body, dump_to_evbuffer, out, JSON_COMPACT) != 0) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return -1;
    }
    evhttp_add_header(evhttp_request_get_output_headers(r->evreq), "Content-Type", content_type);
    return 0;
}

void http_reply_json(struct http_req *r, int status, json_t *body)
{
    assert(!r->replied && "a request is answered exactly once");
    if (body == NULL || reply_json_body(r, "application/json", body) != 0) {
        json_decref(body);
        http_reply_problem(r, 500, NULL, NULL, "the response could not be built", NULL);
        return;
    }
    json_decref(body);
    req_send(r, status);
}

void http_reply_problem(struct http_req *r, int status, const char *type, const char *title,
                        const char *detail, json_t *ext)
{
    json_t *p = NULL;

    assert(!r->replied && "a request is answered exactly once");
    if (title == NULL)
        title = http_status_phrase(status);
    p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type != NULL ? type : "about:blank", "title",
                  title, "status", status, "detail", detail != NULL ? detail : title, "request_id",
                  r->id);
    if (p != NULL && ext != NULL && json_is_object(ext))
        json_object_update_missing(p, ext);
    json_decref(ext);
    if (p == NULL || reply_json_body(r, "application/problem+json", p) != 0) {
        /* Out of memory: still answer, with what needs no allocation of ours. */
        static const char fallback[] = "{\"type\":\"about:blank\",\"status\":500}";
        json_decref(p);
        http_reply(r, 500, "application/problem+json", fallback, sizeof(fallback) - 1);
        return;
    }
    json_decref(p);
    req_send(r, status);
}

int http_add_header(struct http_req *r, const char *name, const char *value)
{
    assert(!r->replied);
    return evhttp_add_header(evhttp_request_get_output_headers(r->evreq), name, value);
}

/* ---- accessors ---- */

const char *http_req_method(const struct http_req *r)
{
    return r->method_name;
}

const char *http_req_path(const struct http_req *r)
{
    return r->path;
}

const char *http_req_route(const struct http_req *r)
{
    return r->route_label;
}

const char *http_req_id(const struct http_req *r)
{
    return r->id;
}

const char *http_req_param(const struct http_req *r, unsigned i)
{
    return i < r->nparams ? r->params[i] : NULL;
}

const char *http_req_query(struct http_req *r, const char *name)
{
    if (!r->query_parsed) {
        const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->evreq));
        TAILQ_INIT(&r->query);
        r->query_parsed = 1;
        r->query_ok = q != NULL && evhttp_parse_query_str(q, &r->query) == 0;
    }
    return r->query_ok ? evhttp_find_header(&r->query, name) : NULL;
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->evreq), name);
}

const char *http_req_peer(struct http_req *r)
{
    if (r->peer_text[0] != '\0')
        return r->peer_text;
    if (r->peer.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&r->peer;
        inet_ntop(AF_INET, &sin->sin_addr, r->peer_text, sizeof(r->peer_text));
    } else if (r->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&r->peer;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], r->peer_text, sizeof(r->peer_text));
        else
            inet_ntop(AF_INET6, &sin6->sin6_addr, r->peer_text, sizeof(r->peer_text));
    }
    if (r->peer_text[0] == '\0')
        snprintf(r->peer_text, sizeof(r->peer_text), "unknown");
    return r->peer_text;
}

const unsigned char *http_req_body(struct http_req *r, size_t *len)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(r->evreq);
    const unsigned char *p = NULL;
    *len = evbuffer_get_length(b);
    if (*len > 0)
        p = evbuffer_pullup(b, -1);
    if (p == NULL)
        *len = 0;
    return p;
}

int http_req_gone(const struct http_req *r)
{
    return r->gone;
}

void *http_req_ctx(const struct http_req *r)
{
    return r->w->ctx;
}

struct event_base *http_req_base(const struct http_req *r)
{
    return r->w->base;
}

unsigned http_req_worker(const struct http_req *r)
{
    return r->w->idx;
}

/* ---- a request arrives ---- */

/* The header section as it came: "name: value\r\n" per field. */
static size_t headers_size(struct evhttp_request *evreq)
{
    size_t n = 0;
    const struct evkeyvalq *hs = evhttp_request_get_input_headers(evreq);
    for (const struct evkeyval *kv = hs->tqh_first; kv != NULL; kv = kv->next.tqe_next)
        n += strlen(kv->key) + strlen(kv->value) + 4;
    return n;
}

static void answer_edge(struct http_req *r, unsigned allow)
{
    const struct httpd_config *cfg = &r->w->h->cfg;
    char detail[160];

    if (strlen(evhttp_request_get_uri(r->evreq)) > cfg->max_uri_size) {
        snprintf(detail, sizeof(detail), "the request target is longer than %zu bytes",
                 cfg->max_uri_size);
        http_reply_problem(r, 414, NULL, NULL, detail, NULL);
    } else if (headers_size(r->evreq) > cfg->max_header_size) {
        snprintf(detail, sizeof(detail), "the header fields are larger than %zu bytes",
                 cfg->max_header_size);
        http_reply_problem(r, 431, NULL, NULL, detail, NULL);
    } else if ((r->method & cfg->allowed_methods) == 0) {
        http_reply_problem(r, 501, NULL, NULL, "this method is not supported", NULL);
    } else if (allow == 0) {
        http_reply_problem(r, 404, NULL, NULL, "there is no resource at this path", NULL);
    } else {
        char list[80] = "";
        if (allow & HTTP_GET)
            allow |= HTTP_HEAD;
        for (size_t i = 0; i < METHOD_COUNT; i++) {
            if (!(allow & (1u << i)))
                continue;
            if (list[0] != '\0')
                strcat(list, ", ");
            strcat(list, method_names[i]);
        }
        http_add_header(r, "Allow", list);
        snprintf(detail, sizeof(detail), "this resource allows %s", list);
        http_reply_problem(r, 405, NULL, NULL, detail, NULL);
    }
}

static void on_request(struct evhttp_request *evreq, void *arg)
{
    struct worker *w = arg;
    struct httpd *h = w->h;
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum http_method method = method_from_evhttp(evhttp_request_get_command(evreq));
    struct span params[HTTP_MAX_PARAMS];
    unsigned nparams = 0, allow = 0;
    const char *label = NULL, *hdr_id;
    const struct route *route = NULL;
    struct http_conn *c = NULL;
    struct http_req *r = NULL;
    const struct sockaddr *peer;
    size_t extra = 0;

    if (path == NULL)
        path = "";
    c = conn_of(w, evcon);
    if (c == NULL)
        goto oom;
    route = router_match(h, method, path, params, &nparams, &allow, &label);
    for (unsigned i = 0; i < nparams; i++)
        extra += params[i].len + 1;
    r = calloc(1, sizeof(*r) + extra);
    if (r == NULL)
        goto oom;

    r->w = w;
    r->conn = c;
    r->evreq = evreq;
    r->method = method;
    r->method_name = method_name(method);
    r->path = path;
    r->route_label = label != NULL ? label : "unmatched";
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    peer = evhttp_connection_get_addr(evcon);
    if (peer != NULL && (peer->sa_family == AF_INET || peer->sa_family == AF_INET6))
        memcpy(&r->peer, peer,
               peer->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6));
    hdr_id = evhttp_find_header(evhttp_request_get_input_headers(evreq), "X-Request-Id");
    if (hdr_id != NULL && id_sane(hdr_id))
        snprintf(r->id, sizeof(r->id), "%s", hdr_id);
    else
        id_generate(w, r->id);
    r->nparams = nparams;
    for (unsigned i = 0, off = 0; i < nparams; i++) {
        memcpy(r->parambuf + off, params[i].p, params[i].len);
        r->parambuf[off + params[i].len] = '\0';
        r->params[i] = r->parambuf + off;
        off += (unsigned)params[i].len + 1;
    }

    evhttp_request_own(evreq);
    evhttp_request_set_on_complete_cb(evreq, req_complete_cb, r);
    assert(c->cur == NULL); /* evhttp reads the next request only after answering this one */
    c->cur = r;
    evtimer_del(c->deadline);
    r->next = w->reqs;
    if (w->reqs != NULL)
        w->reqs->prev = r;
    w->reqs = r;
    w->inflight++;

    if (route == NULL || strlen(evhttp_request_get_uri(evreq)) > h->cfg.max_uri_size ||
        (method & h->cfg.allowed_methods) == 0 || headers_size(evreq) > h->cfg.max_header_size) {
        answer_edge(r, allow);
        return;
    }
    route->fn(r, route->arg);
    /* A synchronous reply does not free r before the response is written. */
    if (!r->replied)
        watch_arm(w);
    return;

oom:
    log_emit(LOG_ERROR, NULL, "out of memory accepting a request", NULL);
    evhttp_send_error(evreq, 503, NULL);
}

/* ---- workers ---- */

/* Closes up: every connection, then the loop. Runs on the worker, outside evhttp. */
static void worker_finish(struct worker *w)
{
    if (w->finished)
        return;
    w->finished = 1;
    event_del(w->grace_ev);
    event_del(w->watch_ev);
    evhttp_free(w->http); /* each connection's close callback orphans its request */
    w->http = NULL;
    w->bound = NULL;
    adopt_run(w);
    reap_run(w);
    event_base_loopbreak(w->base);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker_finish(arg);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    w->stopping = 1;
    /* Freeing the listener closes its socket, so the kernel refuses new connections (those
     * already queued on it are reset). */
    if (w->bound != NULL)
        evhttp_del_accept_socket(w->http, w->bound);
    w->bound = NULL;
    if (w->inflight == 0) {
        worker_finish(w);
    } else {
        struct timeval tv = {.tv_sec = w->grace_ms / 1000,
                             .tv_usec = (suseconds_t)(w->grace_ms % 1000) * 1000};
        evtimer_add(w->grace_ev, &tv);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct httpd *h = w->h;
    struct http_req *r;

    if (h->cfg.init != NULL)
        w->ctx = h->cfg.init(w->base, w->idx, h->cfg.arg);
    pthread_mutex_lock(&h->lock);
    h->ready++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);

    if (event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0)
        log_emit(LOG_ERROR, NULL, "http worker loop failed",
                 json_pack("{s:i}", "worker", (int)w->idx));
    worker_finish(w); /* a no-op after a shutdown; closes up after a failed loop */
    if (h->cfg.fini != NULL)
        h->cfg.fini(w->ctx);
    reap_run(w);
    /* A request nobody answered: a handler bug, but no reason to leak. */
    while ((r = w->reqs) != NULL) {
        assert(r->orphaned);
        log_emit(LOG_ERROR, r->id, "request never answered",
                 json_pack("{s:s}", "route", r->route_label));
        r->status = 0;
        req_finish(r);
        evhttp_request_free(r->evreq);
        free(r);
    }
    return NULL;
}

static void worker_release(struct worker *w)
{
    if (w->http != NULL)
        evhttp_free(w->http);
    w->http = NULL;
    if (w->stop_ev != NULL)
        event_free(w->stop_ev);
    if (w->grace_ev != NULL)
        event_free(w->grace_ev);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->adopt_ev != NULL)
        event_free(w->adopt_ev);
    if (w->reap_ev != NULL)
        event_free(w->reap_ev);
    if (w->watch_ev != NULL)
        event_free(w->watch_ev);
    if (w->base != NULL)
        event_base_free(w->base);
    free(w->by_fd);
}

/*
 * SO_REUSEPORT lets every socket of the same user bind the port, so a second instance of a
 * service would silently share it with the first. A probe bind without it finds any
 * listener already there (SO_REUSEADDR still lets it pass over TIME_WAIT connections).
 */
static int port_taken(const struct sockaddr *addr, socklen_t addrlen)
{
    int one = 1, taken = 0;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, addr, addrlen) != 0 && errno == EADDRINUSE)
        taken = 1;
    close(fd);
    return taken;
}

/* Sets up worker i's loop, evhttp and listening socket (bound to *addr). 0, or -1. */
static int worker_init(struct httpd *h, unsigned i, struct sockaddr *addr, socklen_t addrlen,
                       char **err)
{
    struct worker *w = &h->workers[i];
    struct evconnlistener *lev = NULL;
    struct timeval io = {.tv_sec = h->cfg.io_timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(h->cfg.io_timeout_ms % 1000) * 1000};
    struct timeval rq = {.tv_sec = h->cfg.request_timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(h->cfg.request_timeout_ms % 1000) * 1000};
    const unsigned flags =
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;

    w->h = h;
    w->idx = i;
    if ((w->base = event_base_new()) == NULL || (w->http = evhttp_new(w->base)) == NULL)
        goto nomem;
    w->stop_ev = event_new(w->base, -1, 0, stop_cb, w);
    w->grace_ev = evtimer_new(w->base, drain_cb, w);
    w->drain_ev = event_new(w->base, -1, 0, drain_cb, w);
    w->adopt_ev = event_new(w->base, -1, 0, adopt_cb, w);
    w->reap_ev = event_new(w->base, -1, 0, reap_cb, w);
    w->watch_ev = evtimer_new(w->base, watch_cb, w);
    w->deadline_tv = event_base_init_common_timeout(w->base, &rq);
    if (w->stop_ev == NULL || w->grace_ev == NULL || w->drain_ev == NULL || w->adopt_ev == NULL ||
        w->reap_ev == NULL || w->watch_ev == NULL || w->deadline_tv == NULL)
        goto nomem;
    if (getrandom(w->id_key, sizeof(w->id_key), 0) != (ssize_t)sizeof(w->id_key)) {
        /* Ids need to be unique, not secret: fall back to time and address. */
        w->id_key[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)w;
        w->id_key[1] = (uint64_t)getpid() << 32 ^ i;
    }

    evhttp_set_gencb(w->http, on_request, w);
    evhttp_set_bevcb(w->http, conn_bev_new, w);
    /* evhttp's own limit is the hard one (it answers 400 and closes); ours, below it, gets
     * the 414 and 431 problem answers. */
    evhttp_set_max_headers_size(w->http,
                                (ev_ssize_t)(2 * (h->cfg.max_uri_size + h->cfg.max_header_size)));
    evhttp_set_max_body_size(w->http, (ev_ssize_t)h->cfg.max_body_size);
    evhttp_set_timeout_tv(w->http, &io);
    /* Every method we know reaches on_request, which answers 405 and 501 as problems;
     * TRACE and CONNECT get evhttp's own 501. */
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_default_content_type(w->http, NULL);
    /* Read (and drop) a too-large body before answering 413, or the client may get a reset
     * instead of the answer. */
    evhttp_set_flags(w->http, EVHTTP_SERVER_LINGERING_CLOSE);

    if (i == 0 && h->port != 0 && port_taken(addr, addrlen)) {
        errno = EADDRINUSE;
        lev = NULL;
    } else {
        lev =
            evconnlistener_new_bind(w->base, NULL, NULL, flags, h->cfg.backlog, addr, (int)addrlen);
    }
    if (lev == NULL) {
        if (asprintf(err, "cannot listen on %s:%u: %s", h->host, h->port, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    if (h->port == 0) {
        /* The first socket picked the port; the others must share it. */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &len);
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
        if (addr->sa_family == AF_INET6)
            ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)h->port);
        else
            ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)h->port);
    }
    if ((w->bound = evhttp_bind_listener(w->http, lev)) == NULL) {
        evconnlistener_free(lev);
        goto nomem;
    }
    return 0;

nomem:
    if (asprintf(err, "cannot set up the HTTP server on %s:%u: out of memory", h->host, h->port) <
        0)
        *err = NULL;
    return -1;
}

struct httpd *httpd_new(const struct httpd_config *cfg, char **err)
{
    struct httpd *h = NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char port[8];
    int rc;

    *err = NULL;
    pthread_once(&libevent_once, libevent_setup);
    if ((h = calloc(1, sizeof(*h))) == NULL)
        goto nomem;
    h->cfg = *cfg;
    if (h->cfg.workers == 0)
        h->cfg.workers = 1;
    if (h->cfg.backlog <= 0)
        h->cfg.backlog = 1024;
    if (h->cfg.max_uri_size == 0)
        h->cfg.max_uri_size = 8 * 1024;
    if (h->cfg.max_header_size == 0)
        h->cfg.max_header_size = 8 * 1024;
    if (h->cfg.max_body_size == 0)
        h->cfg.max_body_size = 1024 * 1024;
    if (h->cfg.io_timeout_ms == 0)
        h->cfg.io_timeout_ms = 30 * 1000;
    if (h->cfg.request_timeout_ms == 0)
        h->cfg.request_timeout_ms = 60 * 1000;
    if (h->cfg.allowed_methods == 0)
        h->cfg.allowed_methods = ALL_METHODS;
    h->port = cfg->port;
    h->host = strdup(cfg->host != NULL ? cfg->host : "0.0.0.0");
    h->cfg.host = NULL;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->workers = calloc(h->cfg.workers, sizeof(*h->workers));
    if (h->host == NULL || h->workers == NULL)
        goto nomem;
    if (cfg->metrics != NULL) {
        h->m_requests = metrics_counter(cfg->metrics, "tagproof_http_requests_total",
                                        "HTTP requests answered, by route, method and status.",
                                        "route,method,status");
        h->m_duration =
            metrics_histogram(cfg->metrics, "tagproof_http_request_duration_seconds",
                              "Time from a request's arrival until its response was written.",
                              "route,status", NULL, 0);
        h->m_conns = metrics_gauge(cfg->metrics, "tagproof_http_connections_open",
                                   "Open client connections.", NULL);
    }

    snprintf(port, sizeof(port), "%u", h->port);
    if (h->port > 65535 || (rc = getaddrinfo(h->host, port, &hints, &ai)) != 0) {
        if (asprintf(err, "cannot listen on %s:%u: %s", h->host, h->port,
                     h->port > 65535 ? "bad port" : gai_strerror(rc)) < 0)
            *err = NULL;
        goto fail;
    }
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    for (unsigned i = 0; i < h->cfg.workers; i++)
        if (worker_init(h, i, (struct sockaddr *)&addr, addrlen, err) != 0)
            goto fail;
    return h;

nomem:
    if (asprintf(err, "cannot set up the HTTP server: out of memory") < 0)
        *err = NULL;
fail:
    httpd_free(h);
    return NULL;
}

unsigned httpd_port(const struct httpd *h)
{
    return h->port;
}

int httpd_start(struct httpd *h, char **err)
{
    sigset_t set;

    *err = NULL;
    assert(!h->started);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    h->started = 1;
    for (unsigned i = 0; i < h->cfg.workers; i++) {
        struct worker *w = &h->workers[i];
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            if (asprintf(err, "cannot start HTTP worker %u: %s", i, strerror(rc)) < 0)
                *err = NULL;
            httpd_shutdown(h, 0);
            return -1;
        }
        w->thread_started = 1;
    }
    pthread_mutex_lock(&h->lock);
    while (h->ready < h->cfg.workers)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

void httpd_shutdown(struct httpd *h, unsigned grace_ms)
{
    if (h == NULL || !h->started || h->shut)
        return;
    h->shut = 1;
    for (unsigned i = 0; i < h->cfg.workers; i++) {
        struct worker *w = &h->workers[i];
        if (!w->thread_started)
            continue;
        w->grace_ms = grace_ms;
        event_active(w->stop_ev, EV_TIMEOUT, 0); /* locks the base and wakes its loop */
    }
    for (unsigned i = 0; i < h->cfg.workers; i++)
        if (h->workers[i].thread_started)
            pthread_join(h->workers[i].thread, NULL);
}

void httpd_free(struct httpd *h)
{
    if (h == NULL)
        return;
    httpd_shutdown(h, 0);
    for (unsigned i = 0; h->workers != NULL && i < h->cfg.workers; i++)
        worker_release(&h->workers[i]);
    for (size_t i = 0; i < h->nroutes; i++) {
        free(h->routes[i].pattern);
        free(h->routes[i].label);
    }
    free(h->routes);
    free(h->workers);
    free(h->host);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}

int httpd_wait_signal(void)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}
