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
/* A streamed body: at most this much waits for the handler before reading stops. */
#define BODY_BUF_MAX (256 * 1024)
/* ... and at most this much is handed over in one pass of the loop, for fairness. */
#define BODY_PASS_MAX (1024 * 1024)
/* The field the input watch adds to a header section it rewrote for a streamed body. */
#define STREAM_MARKER "X-Tagproof-Body-Stream"

struct worker;

struct route {
    enum http_method method;
    char *pattern;
    char *label;
    http_handler_fn fn;
    void *arg;
    int stream;      /* the body is streamed to the handler (httpd_route_stream) */
    size_t max_body; /* ... of at most this many bytes */
};

/* A piece of the request path: a route parameter before it is copied. */
struct span {
    const char *p;
    size_t len;
};

/* What the input watch of a connection (servers with streaming routes) does with its bytes. */
enum rx_state {
    RX_HEAD,     /* holds the next request's header section back from evhttp until it is whole */
    RX_DISPATCH, /* handed evhttp a rewritten streamed request, which it has not dispatched yet */
    RX_BODY,     /* takes the declared body out of the input, for the handler or to discard */
    RX_PASS,     /* leaves the current request to evhttp; watches again after its response */
    RX_OFF,      /* the connection closes after the current response */
};

/* What a streamed request's header section asked for. */
enum rx_verdict {
    RX_STREAM,        /* a body within the route's limit */
    RX_TOO_LARGE,     /* 413 */
    RX_NEED_LENGTH,   /* Transfer-Encoding: 411, and close */
    RX_EXPECT_FAILED, /* an expectation other than 100-continue: 417, and close */
};

struct conn_rx {
    enum rx_state state;
    struct evbuffer *hold;        /* the header section being collected; NULL: no watch */
    struct evbuffer_cb_entry *cb; /* on the bufferevent's input */
    size_t scanned;               /* bytes of hold known to be whole lines */
    size_t searched;              /* bytes of hold known to hold no further line end */
    int have_line;                /* the request line was seen and names a streaming route */
    const struct route *route;    /* ... that one */
    enum rx_verdict verdict;
    uint64_t declared;    /* its Content-Length */
    uint64_t remaining;   /* body bytes still to take out of the input */
    struct http_req *req; /* who gets them; NULL: they are discarded */
    unsigned expect : 1;  /* "Expect: 100-continue" */
    unsigned http11 : 1;  /* the request is HTTP/1.1 */
    unsigned busy : 1;    /* in rx_run: its own changes to the input are no news */
    unsigned reading : 1; /* EV_READ is on for a handler's stream (evhttp had turned it off) */
    unsigned seq;         /* rewritten header sections so far */
    char nonce[16];       /* the marker's value in the one evhttp is about to dispatch */
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
    struct conn_rx rx;
};

/* A streamed request body on its way to the handler. */
struct req_body {
    int64_t length;       /* as declared */
    struct evbuffer *buf; /* received, not yet delivered */
    struct event *ev;     /* delivers from the loop */
    http_body_data_fn on_data;
    http_body_end_fn on_end;
    void *arg;
    uint64_t delivered;
    unsigned reading : 1;   /* http_req_body_read was called */
    unsigned paused : 1;    /* on_data asked for a pause */
    unsigned stopped : 1;   /* on_data said -1 */
    unsigned complete : 1;  /* every declared byte arrived (is in buf or delivered) */
    unsigned truncated : 1; /* the connection ended first */
    unsigned ended : 1;     /* on_end was called */
    unsigned in_cb : 1;     /* on_data or on_end is running: a reply must not free the request */
    unsigned expect : 1;    /* the client waits for "100 Continue" before sending the body */
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
    unsigned close_after : 1; /* the response closes the connection */
    struct req_body *body;    /* on a streaming route */
    struct event *gone_ev;    /* watches the socket while the handler works */
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
    unsigned stream_methods; /* of the streaming routes; 0: no input watch at all */
    size_t hold_max;         /* the input watch leaves longer header sections to evhttp */
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

static int route_add(struct httpd *h, enum http_method method, const char *pattern,
                     const char *label, size_t max_body, http_handler_fn fn, void *arg)
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
    *rt = (struct route){
        .method = method, .fn = fn, .arg = arg, .stream = max_body > 0, .max_body = max_body};
    rt->pattern = strdup(pattern);
    rt->label = strdup(label != NULL ? label : pattern);
    if (rt->pattern == NULL || rt->label == NULL) {
        free(rt->pattern);
        free(rt->label);
        return -1;
    }
    h->nroutes++;
    if (rt->stream)
        h->stream_methods |= method;
    return 0;
}

int httpd_route(struct httpd *h, enum http_method method, const char *pattern, const char *label,
                http_handler_fn fn, void *arg)
{
    return route_add(h, method, pattern, label, 0, fn, arg);
}

int httpd_route_stream(struct httpd *h, enum http_method method, const char *pattern,
                       const char *label, size_t max_body, http_handler_fn fn, void *arg)
{
    /* Methods that carry content; evhttp reads no body for the others (HEAD, GET's fallback). */
    if (max_body == 0 || (method != HTTP_POST && method != HTTP_PUT && method != HTTP_PATCH))
        return -1;
    return route_add(h, method, pattern, label, max_body, fn, arg);
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
static void rx_rearm(struct http_conn *c);

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
        if (f != NULL && r->body != NULL)
            json_object_set_new(f, "body_bytes", json_integer((json_int_t)r->body->delivered));
        log_emit(LOG_INFO, r->id, "request", f);
    }
    if (r->body != NULL) {
        if (r->conn != NULL && r->conn->rx.req == r)
            r->conn->rx.req = NULL;
        event_free(r->body->ev);
        evbuffer_free(r->body->buf);
        free(r->body);
        r->body = NULL;
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
        /* evhttp reads the next request after we return; the watch looks at it first. */
        if (r->conn->rx.hold != NULL)
            rx_rearm(r->conn);
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
    /* A body still arriving would look like a pipelined request; its reading notices a close
     * itself. The watch starts when the body is over (body_deliver). */
    if (r->conn->rx.req == r)
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

/* ---- streamed request bodies: the input watch ---- */

/*
 * The obvious design, a bufferevent filter between the socket and evhttp, does not work with
 * libevent 2.1.12: evhttp counts a response as written once it moved into the filter's
 * underlying bufferevent, so it frees a "Connection: close" connection with the response
 * still unsent (tried: every such response was lost); and evhttp turning reading off while
 * a handler works suspends the socket under the filter as well. So a connection keeps its
 * plain socket bufferevent, and on servers with streaming routes an evbuffer callback on its
 * input (rx_input_cb) sees every read from the socket before evhttp's read callback does:
 *   - RX_HEAD: bytes are moved out of the input into hold, where evhttp cannot see them,
 *     until the request line shows whether the request is for a streaming route (if not,
 *     they go back at once and evhttp has the request to itself: RX_PASS) and then until
 *     the header section is whole. It goes back rewritten (head_rewrite), with the rest of
 *     what arrived behind it.
 *   - RX_DISPATCH: evhttp parses that header section and, its Content-Length being 0, hands
 *     the request to on_request straight away, which checks the marker (body_begin).
 *   - RX_BODY: the next `remaining` bytes of input are the body: moved into the request's
 *     buffer while the handler reads, discarded once it answered.
 *   - evhttp reads a connection's next request only after the previous response was
 *     written; from then on (req_complete_cb), or from the end of the body if that comes
 *     later, the front of the input is the next request: RX_HEAD again.
 * A header section the watch does not fully understand goes to evhttp unchanged (RX_PASS),
 * which then reads the body into memory as for any route: safe, only bounded lower.
 * While a handler holds a request evhttp has reading off, and its read callback would abort
 * the process if called then; so for a streamed body the module sets that callback to NULL
 * (evhttp installs its own again when it answers) and turns reading on and off itself.
 */

/* The line of p[0, n) starting at off: its length without LF or CRLF, and where the next one
 * starts (evhttp's EVBUFFER_EOL_CRLF). 0 when no whole line is left. */
static int line_next(const char *p, size_t n, size_t off, size_t *len, size_t *next)
{
    const char *lf = off < n ? memchr(p + off, '\n', n - off) : NULL;
    if (lf == NULL)
        return 0;
    *next = (size_t)(lf - p) + 1;
    *len = (size_t)(lf - (p + off));
    if (*len > 0 && p[off + *len - 1] == '\r')
        (*len)--;
    return 1;
}

/*
 * A request line split the way evhttp 2.1 splits it: trailing blanks dropped, the method up
 * to the first blank, the version after the last, the target in between. 0, or -1 when
 * evhttp would refuse the line anyway.
 */
static int head_request_line(const char *p, size_t n, struct span *method, struct span *target,
                             int *http11)
{
    const char *sp1, *sp2;

    while (n > 0 && p[n - 1] == ' ')
        n--;
    if (n < sizeof("GET / HTTP/1.0") - 1 || memchr(p, '\0', n) != NULL)
        return -1;
    sp1 = memchr(p, ' ', n);
    sp2 = memrchr(p, ' ', n);
    if (sp1 == NULL || sp2 == sp1 + 1 || sp2 == sp1)
        return -1;
    method->p = p;
    method->len = (size_t)(sp1 - p);
    target->p = sp1 + 1;
    target->len = (size_t)(sp2 - target->p);
    *http11 = (size_t)(p + n - (sp2 + 1)) == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0;
    return 0;
}

/* The streaming route a request line asks for, or NULL. */
static const struct route *head_route(const struct httpd *h, const char *line, size_t n,
                                      int *http11)
{
    struct span m, t, params[HTTP_MAX_PARAMS];
    enum http_method method = 0;
    const struct route *route = NULL;
    struct evhttp_uri *uri = NULL;
    unsigned np = 0, allow = 0;
    const char *label = NULL, *path;
    char *target = NULL;

    if (head_request_line(line, n, &m, &t, http11) != 0)
        return NULL;
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (strlen(method_names[i]) == m.len && memcmp(method_names[i], m.p, m.len) == 0)
            method = 1u << i;
    if ((method & h->stream_methods) == 0)
        return NULL;
    /* The target as evhttp parses it, so that on_request routes it the same way. */
    if ((target = strndup(t.p, t.len)) == NULL ||
        (uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT)) == NULL)
        goto done;
    path = evhttp_uri_get_path(uri);
    route = router_match(h, method, path != NULL ? path : "", params, &np, &allow, &label);
    if (route != NULL && !route->stream)
        route = NULL;
done:
    if (uri != NULL)
        evhttp_uri_free(uri);
    free(target);
    return route;
}

enum field_kind { FIELD_OTHER, FIELD_LENGTH, FIELD_CODING, FIELD_MARKER, FIELD_EXPECT };

/* A field line's name as evhttp 2.1 takes it (everything before the first colon), and its
 * value without surrounding blanks. */
static enum field_kind field_kind(const char *line, size_t len, struct span *value)
{
    const char *colon = memchr(line, ':', len);
    size_t klen;

    if (colon == NULL)
        return FIELD_OTHER;
    klen = (size_t)(colon - line);
    value->p = colon + 1;
    value->len = len - klen - 1;
    while (value->len > 0 && (value->p[0] == ' ' || value->p[0] == '\t')) {
        value->p++;
        value->len--;
    }
    while (value->len > 0 && (value->p[value->len - 1] == ' ' || value->p[value->len - 1] == '\t'))
        value->len--;
#define FIELD_IS(name) (klen == sizeof(name) - 1 && evutil_ascii_strncasecmp(line, name, klen) == 0)
    if (FIELD_IS("Content-Length"))
        return FIELD_LENGTH;
    if (FIELD_IS("Transfer-Encoding"))
        return FIELD_CODING;
    if (FIELD_IS(STREAM_MARKER))
        return FIELD_MARKER;
    if (FIELD_IS("Expect"))
        return FIELD_EXPECT;
#undef FIELD_IS
    return FIELD_OTHER;
}

/* What the field lines of a whole header section say about its body. */
struct head_fields {
    int odd;         /* something to leave to evhttp */
    int nlength;     /* Content-Length fields */
    uint64_t length; /* ... the value */
    int coding;      /* a Transfer-Encoding field */
    int nexpect;     /* Expect fields */
    int expect;      /* ... 1: 100-continue, 2: something else */
};

/* The field lines of the header section p[0, n), which starts with a request line of
 * line_end bytes and ends with a blank line. */
static void head_fields_scan(const char *p, size_t n, size_t line_end, struct head_fields *hf)
{
    size_t off = line_end, len, next;

    memset(hf, 0, sizeof(*hf));
    while (line_next(p, n, off, &len, &next) && len > 0) {
        const char *line = p + off;
        struct span v;
        off = next;
        /* Folded lines and control bytes: evhttp's business. */
        if (line[0] == ' ' || line[0] == '\t')
            hf->odd = 1;
        for (size_t i = 0; i < len; i++)
            if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
                hf->odd = 1;
        switch (field_kind(line, len, &v)) {
        case FIELD_LENGTH:
            /* One plain decimal number; anything else (also a repeated field) is odd. */
            if (hf->nlength++ > 0 || v.len == 0 || v.len > 18) {
                hf->odd = 1;
                break;
            }
            for (size_t i = 0; i < v.len; i++) {
                if (v.p[i] < '0' || v.p[i] > '9') {
                    hf->odd = 1;
                    break;
                }
                hf->length = hf->length * 10 + (uint64_t)(v.p[i] - '0');
            }
            break;
        case FIELD_CODING:
            hf->coding = 1;
            break;
        case FIELD_EXPECT:
            if (hf->nexpect++ > 0)
                hf->odd = 1;
            hf->expect =
                v.len == 12 && evutil_ascii_strncasecmp(v.p, "100-continue", 12) == 0 ? 1 : 2;
            break;
        case FIELD_MARKER:
        case FIELD_OTHER:
            break;
        }
    }
}

/*
 * The header section p[0, n) as evhttp gets it for a streamed body: without the fields that
 * frame a body (Content-Length, Transfer-Encoding) and without any copy of the marker, with
 * "Content-Length: 0" and the marker set to nonce instead. 0, or -1.
 */
static int head_rewrite(const char *p, size_t n, size_t line_end, const char *nonce,
                        struct evbuffer *out)
{
    size_t off = line_end, len, next;

    if (evbuffer_add(out, p, line_end) != 0)
        return -1;
    while (line_next(p, n, off, &len, &next)) {
        struct span v;
        enum field_kind k;
        if (len == 0) {
            if (evbuffer_add_printf(out, "Content-Length: 0\r\n" STREAM_MARKER ": %s\r\n", nonce) <
                    0 ||
                evbuffer_add(out, p + off, next - off) != 0)
                return -1;
            return 0;
        }
        k = field_kind(p + off, len, &v);
        if (k != FIELD_LENGTH && k != FIELD_CODING && k != FIELD_MARKER &&
            evbuffer_add(out, p + off, next - off) != 0)
            return -1;
        off = next;
    }
    return -1;
}

static void rx_reading(struct http_conn *c);
static void rx_body_done(struct http_conn *c);

/* Leaves the request whose start is in hold to evhttp, as it came. */
static void rx_pass(struct http_conn *c, struct evbuffer *in)
{
    /* Moving chains to the front of the input: cannot fail (nothing is pinned, and a socket
     * bufferevent freezes only the end of its input). */
    evbuffer_prepend_buffer(in, c->rx.hold);
    c->rx.state = RX_PASS;
    c->rx.have_line = 0;
    c->rx.scanned = 0;
    c->rx.searched = 0;
}

/*
 * RX_HEAD with everything received so far in hold: decides when it can. 1 when it did (the
 * state changed and hold is back in the input), 0 while more is needed.
 */
static int rx_head(struct http_conn *c, struct evbuffer *in)
{
    const struct httpd *h = c->w->h;
    struct evbuffer *hold = c->rx.hold;
    size_t have = evbuffer_get_length(hold), len = 0, line_end = 0, head_len = 0;
    struct evbuffer *out = NULL;
    struct evbuffer_ptr at, eol;
    struct head_fields hf;
    const char *p;
    int http11 = 0;

    /* Each search starts where the last one gave up: a header section may come in a byte at
     * a time, and searching it from the start each time would take quadratic time. */
    if (!c->rx.have_line) {
        if (c->rx.searched >= have ||
            evbuffer_ptr_set(hold, &at, c->rx.searched, EVBUFFER_PTR_SET) != 0)
            goto more;
        eol = evbuffer_search_eol(hold, &at, NULL, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            c->rx.searched = have;
            goto more;
        }
        line_end = (size_t)eol.pos + 1;
        p = (const char *)evbuffer_pullup(hold, (ev_ssize_t)line_end);
        if (p == NULL || !line_next(p, line_end, 0, &len, &line_end) ||
            (c->rx.route = head_route(h, p, len, &http11)) == NULL) {
            rx_pass(c, in);
            return 1;
        }
        c->rx.have_line = 1;
        c->rx.http11 = http11 != 0;
        c->rx.scanned = c->rx.searched = line_end;
    }
    /* The field lines, up to the blank one. */
    for (;;) {
        char first = 0;
        if (c->rx.searched >= have ||
            evbuffer_ptr_set(hold, &at, c->rx.searched, EVBUFFER_PTR_SET) != 0)
            goto more;
        eol = evbuffer_search_eol(hold, &at, NULL, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            c->rx.searched = have;
            goto more;
        }
        len = (size_t)eol.pos - c->rx.scanned;
        if (len == 1 && evbuffer_ptr_set(hold, &at, c->rx.scanned, EVBUFFER_PTR_SET) == 0)
            evbuffer_copyout_from(hold, &at, &first, 1);
        c->rx.scanned = c->rx.searched = (size_t)eol.pos + 1;
        if (len == 0 || (len == 1 && first == '\r'))
            break;
    }
    head_len = c->rx.scanned;
    p = (const char *)evbuffer_pullup(hold, (ev_ssize_t)head_len);
    if (p == NULL || !line_next(p, head_len, 0, &len, &line_end))
        goto pass;
    head_fields_scan(p, head_len, line_end, &hf);
    if (hf.odd)
        goto pass;
    c->rx.declared = hf.nlength > 0 ? hf.length : 0;
    c->rx.expect = hf.expect == 1;
    if (hf.coding)
        c->rx.verdict = RX_NEED_LENGTH;
    else if (hf.expect == 2)
        c->rx.verdict = RX_EXPECT_FAILED;
    else if (c->rx.declared > c->rx.route->max_body)
        c->rx.verdict = RX_TOO_LARGE;
    else
        c->rx.verdict = RX_STREAM;
    snprintf(c->rx.nonce, sizeof(c->rx.nonce), "%u", ++c->rx.seq);
    if ((out = evbuffer_new()) == NULL ||
        head_rewrite(p, head_len, line_end, c->rx.nonce, out) != 0)
        goto pass;
    evbuffer_drain(hold, head_len);
    evbuffer_prepend_buffer(in, hold);
    evbuffer_prepend_buffer(in, out);
    evbuffer_free(out);
    c->rx.state = RX_DISPATCH;
    c->rx.have_line = 0;
    c->rx.scanned = 0;
    c->rx.searched = 0;
    return 1;

more:
    /* Longer than evhttp accepts: let it say so. */
    if (have <= h->hold_max)
        return 0;
pass:
    if (out != NULL)
        evbuffer_free(out);
    rx_pass(c, in);
    return 1;
}

/* Does with the bytes in the input what the watch's state says (see above). */
static void rx_run(struct http_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    if (c->rx.busy)
        return;
    c->rx.busy = 1;
    for (;;) {
        size_t n = evbuffer_get_length(in);
        if (c->rx.state == RX_HEAD) {
            if (n > 0)
                evbuffer_add_buffer(c->rx.hold, in);
            if (!rx_head(c, in))
                break;
        } else if (c->rx.state == RX_BODY) {
            if (n > c->rx.remaining)
                n = (size_t)c->rx.remaining;
            if (n == 0)
                break;
            if (c->rx.req != NULL) {
                struct req_body *b = c->rx.req->body;
                evbuffer_remove_buffer(in, b->buf, n);
                if (b->reading)
                    event_active(b->ev, EV_TIMEOUT, 0);
            } else {
                evbuffer_drain(in, n);
            }
            c->rx.remaining -= n;
            if (c->rx.remaining > 0) {
                rx_reading(c);
                break;
            }
            rx_body_done(c);
        } else {
            break;
        }
    }
    c->rx.busy = 0;
}

/* Runs on every change to a watched connection's input; only additions are news. */
static void rx_input_cb(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct http_conn *c = arg;
    (void)in;
    if (info->n_added > 0 && !c->rx.busy)
        rx_run(c);
}

/* The whole declared body arrived (or was discarded). */
static void rx_body_done(struct http_conn *c)
{
    struct http_req *r = c->rx.req;

    c->rx.req = NULL;
    if (r != NULL) {
        r->body->complete = 1;
        event_active(r->body->ev, EV_TIMEOUT, 0);
    }
    /* Back to what evhttp expects while a handler holds a request: not reading. */
    if (c->rx.reading) {
        c->rx.reading = 0;
        bufferevent_disable(c->bev, EV_READ);
    }
    /* What follows is the next request; evhttp reads it once this response is written. */
    c->rx.state = c->cur == NULL ? RX_HEAD : RX_PASS;
}

/*
 * Reading from the socket for a handler's stream: on while the handler takes bytes and
 * fewer than BODY_BUF_MAX wait for it, off otherwise. Only while the handler holds the
 * request (rx.req); once it answered, evhttp reads again (and rx_run discards).
 */
static void rx_reading(struct http_conn *c)
{
    struct req_body *b = c->rx.req != NULL ? c->rx.req->body : NULL;
    unsigned want = b != NULL && b->reading && !b->paused && !b->stopped && c->rx.remaining > 0 &&
                    evbuffer_get_length(b->buf) < BODY_BUF_MAX;

    if (want == c->rx.reading)
        return;
    c->rx.reading = want;
    if (want)
        bufferevent_enable(c->bev, EV_READ);
    else
        bufferevent_disable(c->bev, EV_READ);
}

/* A response was written: the next request starts at the front of the input. */
static void rx_rearm(struct http_conn *c)
{
    if (c->rx.state == RX_PASS)
        c->rx.state = RX_HEAD;
    rx_run(c);
}

/* Starts watching a new connection's input (bev not yet given to evhttp). 0, or -1. */
static int rx_watch(struct http_conn *c)
{
    c->rx.state = RX_HEAD;
    if ((c->rx.hold = evbuffer_new()) == NULL)
        return -1;
    c->rx.cb = evbuffer_add_cb(bufferevent_get_input(c->bev), rx_input_cb, c);
    if (c->rx.cb == NULL) {
        evbuffer_free(c->rx.hold);
        c->rx.hold = NULL;
        return -1;
    }
    return 0;
}

/* Stops watching (c->bev must still exist). */
static void rx_release(struct http_conn *c)
{
    if (c->rx.hold == NULL)
        return;
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->rx.cb);
    evbuffer_free(c->rx.hold);
    c->rx.hold = NULL;
    c->rx.cb = NULL;
}

/* ---- streamed request bodies: handing them to the handler ---- */

/* Hands the handler what waits, and the end once it is due. From the loop only. */
static void body_deliver(struct http_req *r)
{
    struct req_body *b = r->body;
    size_t budget = BODY_PASS_MAX;
    int status;

    if (r->replied || !b->reading || b->ended)
        return;
    while (!b->paused && !b->stopped && !b->truncated && evbuffer_get_length(b->buf) > 0) {
        struct evbuffer_iovec v;
        int rc;
        if (budget == 0) {
            event_active(b->ev, EV_TIMEOUT, 0); /* the rest in the next pass of the loop */
            break;
        }
        if (evbuffer_peek(b->buf, -1, NULL, &v, 1) < 1)
            break;
        b->in_cb = 1;
        rc = b->on_data(r, v.iov_base, v.iov_len, b->arg);
        b->in_cb = 0;
        if (r->replied)
            return; /* r is still allocated: a reply from a callback is freed later */
        evbuffer_drain(b->buf, v.iov_len);
        b->delivered += v.iov_len;
        budget -= v.iov_len < budget ? v.iov_len : budget;
        if (rc < 0)
            b->stopped = 1;
        else if (rc > 0)
            b->paused = 1;
    }
    if (b->stopped || b->truncated)
        status = -1;
    else if (b->complete && !b->paused && evbuffer_get_length(b->buf) == 0)
        status = 0;
    else
        status = 1;
    if (status <= 0) {
        if (status < 0)
            evbuffer_drain(b->buf, evbuffer_get_length(b->buf));
        b->ended = 1;
        b->in_cb = 1;
        b->on_end(r, status, b->arg);
        b->in_cb = 0;
        if (r->replied)
            return;
        /* From now on a read on the socket means a close or the next request: watch it. */
        if (status == 0)
            watch_arm(r->w);
    }
    if (r->conn != NULL && r->conn->rx.req == r)
        rx_reading(r->conn);
}

static void body_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    body_deliver(arg);
}

/* The worker is closing up: its loop will not run the streams' events again, so those cut
 * short by the closed connections get their on_end(-1) now. */
static void body_flush_ends(struct worker *w)
{
    int again = 1;
    while (again) {
        again = 0;
        for (struct http_req *r = w->reqs; r != NULL; r = r->next) {
            struct req_body *b = r->body;
            if (b != NULL && !r->replied && b->reading && !b->ended && b->truncated) {
                body_deliver(r);
                /* The handler may have answered, and so freed, any request: start over. */
                again = 1;
                break;
            }
        }
    }
}

/* A reply ends the stream: no callback after it; body bytes still to come are discarded. */
static void body_on_reply(struct http_req *r)
{
    struct req_body *b = r->body;
    struct http_conn *c = r->conn;

    event_del(b->ev);
    if (c == NULL || c->rx.req != r)
        return;
    /* evhttp turns reading on itself to write the response; rx_run discards from now on. */
    c->rx.req = NULL;
    c->rx.reading = 0;
    if (b->expect) {
        /* Never told to go on, the client will not send the body it announced. */
        r->close_after = 1;
        c->rx.state = RX_OFF;
    }
}

/*
 * Sets up the body of r, whose route streams, or checks a request on another route against
 * what the input watch did. The status to answer at once instead of calling the handler, 0
 * to call it, or -1 when out of memory.
 */
static int body_begin(struct http_req *r, struct http_conn *c, const struct route *route)
{
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(r->evreq);
    const char *mark = evhttp_find_header(hdrs, STREAM_MARKER);
    int ours = c->rx.hold != NULL && c->rx.state == RX_DISPATCH;
    struct req_body *b = NULL;
    char len[24];

    if ((ours && (mark == NULL || strcmp(mark, c->rx.nonce) != 0 || route != c->rx.route)) ||
        (c->rx.hold != NULL && (c->rx.state == RX_HEAD || c->rx.state == RX_BODY))) {
        /* evhttp parsed something else than the watch gave it: they no longer agree where
         * requests begin, and only closing the connection is safe. */
        log_emit(LOG_ERROR, r->id, "request framing lost on a connection; closing it", NULL);
        c->rx.state = RX_OFF;
        r->close_after = 1;
        return 500;
    }
    /* A client's own marker is not believed, nor shown to the handler. */
    while (mark != NULL && evhttp_remove_header(hdrs, STREAM_MARKER) == 0)
        ;
    if (route == NULL || !route->stream)
        return 0;

    if ((b = calloc(1, sizeof(*b))) == NULL || (b->buf = evbuffer_new()) == NULL ||
        (b->ev = event_new(r->w->base, -1, 0, body_deliver_cb, r)) == NULL) {
        if (b != NULL && b->buf != NULL)
            evbuffer_free(b->buf);
        free(b);
        return -1;
    }
    r->body = b;
    if (!ours) {
        /* Left to evhttp (or no watch): the whole body is here already. */
        struct evbuffer *whole = evhttp_request_get_input_buffer(r->evreq);
        b->length = (int64_t)evbuffer_get_length(whole);
        evbuffer_add_buffer(b->buf, whole);
        b->complete = 1;
        return (uint64_t)b->length > route->max_body ? 413 : 0;
    }

    /* The handler sees the length the client declared, not the 0 evhttp was shown. */
    evhttp_remove_header(hdrs, "Content-Length");
    snprintf(len, sizeof(len), "%llu", (unsigned long long)c->rx.declared);
    if (c->rx.verdict == RX_STREAM || c->rx.verdict == RX_TOO_LARGE)
        evhttp_add_header(hdrs, "Content-Length", len);
    b->length = (int64_t)c->rx.declared;
    b->expect = c->rx.expect && c->rx.http11;
    switch (c->rx.verdict) {
    case RX_STREAM:
        c->rx.req = r;
        c->rx.remaining = c->rx.declared;
        c->rx.state = RX_BODY;
        /* evhttp's read callback must not run while the handler holds the request (it
         * aborts in that state), and reading is about to be turned on for the body. */
        {
            bufferevent_data_cb wcb = NULL;
            bufferevent_event_cb ecb = NULL;
            void *cbarg = NULL;
            bufferevent_getcb(c->bev, NULL, &wcb, &ecb, &cbarg);
            bufferevent_setcb(c->bev, NULL, wcb, ecb, cbarg);
        }
        if (c->rx.remaining == 0)
            rx_body_done(c);
        else
            rx_run(c); /* what arrived with the header section */
        return 0;
    case RX_TOO_LARGE:
        /* Answered at once; the body, if the client sends it, is discarded. */
        b->complete = 1;
        if (b->expect) {
            r->close_after = 1;
            c->rx.state = RX_OFF;
        } else {
            c->rx.req = NULL;
            c->rx.remaining = c->rx.declared;
            c->rx.state = RX_BODY;
            rx_run(c);
        }
        return 413;
    case RX_NEED_LENGTH:
        b->complete = 1;
        r->close_after = 1;
        c->rx.state = RX_OFF;
        return 411;
    case RX_EXPECT_FAILED:
        b->complete = 1;
        r->close_after = 1;
        c->rx.state = RX_OFF;
        return 417;
    }
    return 0;
}

/* The answers body_begin asks for. */
static void body_answer(struct http_req *r, int status, const struct route *route)
{
    char detail[160];

    switch (status) {
    case 413:
        snprintf(detail, sizeof(detail), "the request body is larger than %zu bytes",
                 route->max_body);
        http_reply_problem(r, 413, NULL, NULL, detail, NULL);
        break;
    case 411:
        http_reply_problem(r, 411, NULL, NULL,
                           "this resource needs the body's length in Content-Length "
                           "(Transfer-Encoding is not accepted)",
                           NULL);
        break;
    case 417:
        http_reply_problem(r, 417, NULL, NULL, "the only expectation supported is 100-continue",
                           NULL);
        break;
    default:
        http_reply_problem(r, status, NULL, NULL, NULL, NULL);
        break;
    }
}

int64_t http_req_body_length(const struct http_req *r)
{
    return r->body != NULL ? r->body->length : -1;
}

int http_req_body_read(struct http_req *r, http_body_data_fn on_data, http_body_end_fn on_end,
                       void *arg)
{
    struct req_body *b = r->body;
    struct http_conn *c = r->conn;

    assert(!r->replied);
    if (b == NULL || b->reading || on_data == NULL || on_end == NULL)
        return -1;
    b->on_data = on_data;
    b->on_end = on_end;
    b->arg = arg;
    b->reading = 1;
    if (b->expect && c != NULL && !b->complete) {
        /* evhttp would have sent it when reading the body; the handler now wants it. It
         * takes no space worth waiting for: written straight to the socket (where no
         * response is pending), and whatever the kernel does not take goes ahead of the
         * response. If nothing could be written the client sends after its own timeout. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t n = send(c->fd, cont, sizeof(cont) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0 && (size_t)n < sizeof(cont) - 1)
            evbuffer_add(bufferevent_get_output(c->bev), cont + n, sizeof(cont) - 1 - (size_t)n);
        b->expect = 0;
    }
    event_active(b->ev, EV_TIMEOUT, 0);
    if (c != NULL && c->rx.req == r)
        rx_reading(c);
    return 0;
}

void http_req_body_resume(struct http_req *r)
{
    struct req_body *b = r->body;

    assert(!r->replied);
    if (b == NULL || !b->paused)
        return;
    b->paused = 0;
    event_active(b->ev, EV_TIMEOUT, 0);
    if (r->conn != NULL && r->conn->rx.req == r)
        rx_reading(r->conn);
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
    if (c->rx.req != NULL) {
        /* A streamed body cut short: its handler gets on_end(-1) from the loop. */
        c->rx.req->body->truncated = 1;
        event_active(c->rx.req->body->ev, EV_TIMEOUT, 0);
        c->rx.req = NULL;
    }
    rx_release(c);
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
    /* Only servers with streaming routes watch their input; without a watch (out of memory)
     * evhttp reads streamed bodies into memory, under max_body_size. */
    if (w->h->stream_methods != 0)
        rx_watch(c);
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
            rx_release(c);
            bufferevent_free(c->bev);
            bufferevent_decref(c->bev);
            free(c);
        } else if (readcb == NULL) {
            /* evhttp took it and has freed it already (a failed setup, or evhttp_free). */
            rx_release(c);
            bufferevent_decref(c->bev);
            free(c);
        } else {
            /* evhttp's callbacks are set with the evhttp_connection as their argument. */
            struct bufferevent *bev = c->bev;
            int fd = bufferevent_getfd(bev);
            if (fd >= 0 && (size_t)fd < w->nby_fd && w->by_fd[fd] != NULL &&
                w->by_fd[fd]->evcon == cbarg) {
                /* adopted already, at its first request (conn_of takes c itself, so this
                 * is a connection it had to track without) */
                rx_release(c);
                free(c);
            } else if (conn_attach(w, c, cbarg) != 0) {
                rx_release(c);
                if (c->deadline != NULL)
                    event_free(c->deadline);
                free(c);
            }
            bufferevent_decref(bev);
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
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    int fd = bufferevent_getfd(bev);
    struct http_conn *c = NULL;

    if (fd >= 0 && (size_t)fd < w->nby_fd && w->by_fd[fd] != NULL && w->by_fd[fd]->evcon == evcon)
        return w->by_fd[fd];
    /* Accepted in this pass of the loop and not adopted yet: take it off that list, with the
     * state conn_bev_new gave it (the input watch). */
    for (struct http_conn **pp = &w->adopting; *pp != NULL; pp = &(*pp)->next_adopt) {
        if ((*pp)->bev == bev) {
            c = *pp;
            *pp = c->next_adopt;
            bufferevent_decref(bev);
            break;
        }
    }
    if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
        c->w = w;
        c->bev = bev;
    }
    if (c == NULL)
        return NULL;
    if (conn_attach(w, c, evcon) != 0) {
        rx_release(c);
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
    if (r->body != NULL)
        body_on_reply(r);
    if (r->orphaned) {
        if (r->body != NULL && r->body->in_cb) {
            /* From on_data or on_end, which return into body_deliver: free r afterwards. */
            r->next_reap = r->w->reap;
            r->w->reap = r;
            event_active(r->w->reap_ev, EV_TIMEOUT, 0);
            return;
        }
        req_finish(r);
        evhttp_request_free(r->evreq);
        free(r);
        return;
    }
    out = evhttp_request_get_output_headers(r->evreq);
    body = evhttp_request_get_output_buffer(r->evreq);
    evhttp_add_header(out, "X-Request-Id", r->id);
    if (r->w->stopping || r->close_after)
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
    int status = 0, edge;

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

    /* Servers without streaming routes skip this: no watch, no streamed bodies. */
    if (h->stream_methods != 0 && (status = body_begin(r, c, route)) < 0) {
        http_reply_problem(r, 503, NULL, NULL, "out of memory", NULL);
        return;
    }
    edge = route == NULL || strlen(evhttp_request_get_uri(evreq)) > h->cfg.max_uri_size ||
           (method & h->cfg.allowed_methods) == 0 || headers_size(evreq) > h->cfg.max_header_size;
    if (status == 500 || (status != 0 && !edge)) {
        body_answer(r, status, route);
        return;
    }
    if (edge) {
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
    body_flush_ends(w);
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
    /* Twice what evhttp accepts (its limit counts neither line ends nor the blank line). */
    h->hold_max = 4 * (h->cfg.max_uri_size + h->cfg.max_header_size) + 64;
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
