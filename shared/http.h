/*
 * http: the HTTP/1.1 server every Tagproof program uses. N worker threads, each with its own
 * event loop and evhttp listening on the same port (SO_REUSEPORT), a small router with "{}"
 * path parameters, request ids, problem+json errors, access logs and request metrics.
 */
#ifndef TAGPROOF_HTTP_H
#define TAGPROOF_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct metrics;

struct httpd;    /* the server: listeners, routes, worker threads */
struct http_req; /* one request, handed to a handler until it replies */

/* Methods, usable as a bit set in httpd_config.allowed_methods. */
enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1,
    HTTP_POST = 1 << 2,
    HTTP_PUT = 1 << 3,
    HTTP_DELETE = 1 << 4,
    HTTP_PATCH = 1 << 5,
    HTTP_OPTIONS = 1 << 6,
};

/*
 * Settings; a zero member takes the default in brackets. The limits are enforced in two
 * places because evhttp 2.1 answers its own errors (text/html, no X-Request-Id):
 *   - request line or header section over 2 * (max_uri_size + max_header_size): evhttp
 *     answers 400 and closes; between the two limits this module answers 414 (URI) or 431
 *     (headers) with problem+json;
 *   - a body over max_body_size: evhttp answers 413 and closes, after reading and discarding
 *     a declared Content-Length body so that the client sees the answer rather than a reset
 *     (lingering close); a client waiting on "Expect: 100-continue" gets no 100 and must
 *     send the body anyway (curl does after a second) or be dropped by the timeouts;
 *   - io_timeout_ms: a connection that sends or receives nothing for that long is closed
 *     (idle keep-alive connections too);
 *   - request_timeout_ms: a whole request (line, headers, body) must arrive within this time
 *     of the connection being accepted or of the previous response being sent, or the
 *     connection is closed without an answer. This is what stops a client that sends a byte
 *     a second, which an inactivity timeout never does.
 * What evhttp answers itself (those 400s and 413s, a malformed request line, TRACE and
 * CONNECT with 501) reaches neither the access log nor the metrics. Routes that stream their
 * body (httpd_route_stream) have their own body limit, answered before the body is sent.
 */
struct httpd_config {
    const char *host;            /* address to bind ["0.0.0.0"] */
    unsigned port;               /* 0 picks a free port; see httpd_port() */
    unsigned workers;            /* threads, each with its own loop [1] */
    int backlog;                 /* listen(2) backlog per worker [1024] */
    size_t max_uri_size;         /* request target, path and query [8 KiB] */
    size_t max_header_size;      /* header fields together [8 KiB] */
    size_t max_body_size;        /* request body [1 MiB] */
    unsigned io_timeout_ms;      /* read or write inactivity [30 s] */
    unsigned request_timeout_ms; /* whole request [60 s] */
    unsigned allowed_methods;    /* others get 501 [GET HEAD POST PUT DELETE PATCH OPTIONS] */
    struct metrics *metrics;     /* borrowed for the server's life; NULL: no metrics */

    /*
     * Run on each worker thread before it serves (init) and after it stopped (fini). What
     * init returns is the worker's context, given to handlers by http_req_ctx(): the place
     * for per-thread clients (Redis, PostgreSQL). fini runs while the worker's event base
     * still exists; it must answer any request it still holds (http_reply on a request whose
     * connection is gone only frees it). Either may be NULL.
     */
    void *(*init)(struct event_base *base, unsigned idx, void *arg);
    void (*fini)(void *ctx);
    void *arg;
};

/*
 * A handler owns req until it answers with exactly one http_reply* call, either before it
 * returns or later from a callback on the same worker's loop (http_req_base). Answering twice
 * is a programming error (assert). After the reply req must not be touched.
 */
typedef void (*http_handler_fn)(struct http_req *req, void *arg);

/*
 * Creates the server and binds one listening socket per worker, so a busy port is reported
 * here: NULL and *err, a message naming host:port that the caller frees. A port that any
 * process already listens on is busy, also another instance of the same service (which
 * SO_REUSEPORT alone would let share it). cfg is copied; the host string is not used after
 * this call.
 */
struct httpd *httpd_new(const struct httpd_config *cfg, char **err);

/*
 * Registers a handler before httpd_start. pattern is a path such as "/v1/batches/{}/tags"
 * where each "{}" is a whole segment matching one non-empty segment; the raw (still
 * percent-encoded) segments reach the handler through http_req_param. label names the route
 * in logs and metrics ("/v1/batches/{id}/tags") so their cardinality stays bounded. A GET
 * route also answers HEAD (without the body). Strings are copied; arg is borrowed. 0, or -1
 * for a malformed pattern, too many parameters or a duplicate method and pattern.
 */
int httpd_route(struct httpd *h, enum http_method method, const char *pattern, const char *label,
                http_handler_fn fn, void *arg);

/*
 * Like httpd_route, for a POST, PUT or PATCH route whose request body is streamed to the
 * handler (http_req_body_read) instead of being read whole into memory first; max_body bytes
 * at most (> 0; max_body_size does not apply). The handler is called as soon as the header
 * section has arrived, before any of the body is read. How (evhttp 2.1 has no hook for it):
 *   - the module watches each connection's input before evhttp parses it. The header section
 *     of a request for a streaming route that declares its length with one Content-Length is
 *     handed to evhttp with "Content-Length: 0" (the handler still sees the declared value)
 *     and an internal marker field; the declared number of body bytes that follow are taken
 *     out of the connection's input for the handler, and what comes after them is the next
 *     request (keep-alive and pipelining work). A client's own copy of the marker is removed.
 *   - Content-Length over max_body: 413 problem at once, nothing of the body read (see below
 *     for what happens to it). Transfer-Encoding (chunked): 411 Length Required, and the
 *     connection is closed, because the upload's end cannot be found without decoding it.
 *     "Expect: 100-continue" is answered with "100 Continue" when the handler starts reading
 *     (HTTP/1.1 only); another expectation gets 417 and the connection is closed.
 *   - a header section the module does not fully understand (a folded line, control bytes,
 *     several or malformed Content-Length fields, more than twice evhttp's header limit) is
 *     left to evhttp unchanged. evhttp then reads the body into memory under max_body_size
 *     as for any route, and http_req_body_read hands that body over the same way, so a
 *     handler sees no difference apart from the lower limit.
 * Backpressure: nothing is read from the socket until the handler calls http_req_body_read,
 * and reading stops whenever the handler pauses or 256 KiB wait for it; the kernel's socket
 * buffers then fill and TCP flow control slows the client down. While the server is not
 * reading, neither io_timeout_ms nor request_timeout_ms runs (the request timeout ends when
 * the header section arrived); while it reads, a client silent for io_timeout_ms is cut off
 * and the handler gets on_end(-1).
 * Answering before the whole body arrived (an error after the header section, a 413, or
 * after stopping the stream): the response is sent at once and the rest of the declared
 * body is read and discarded, so the client sees the answer rather than a connection reset
 * and the connection stays usable; that discarding must end within request_timeout_ms of the
 * response being written (and io_timeout_ms of silence), or the connection is closed. If the
 * client had asked "Expect: 100-continue" and was never told to continue, the response
 * carries "Connection: close" instead, because the client will not send the body.
 */
int httpd_route_stream(struct httpd *h, enum http_method method, const char *pattern,
                       const char *label, size_t max_body, http_handler_fn fn, void *arg);

/*
 * Blocks SIGINT and SIGTERM in the calling thread (so in every thread it spawns, and
 * httpd_wait_signal can take them), ignores SIGPIPE (a write to a vanished client must
 * return EPIPE, not kill the process), starts the workers and returns once each has run its
 * init. 0, or -1 with *err (caller frees).
 */
int httpd_start(struct httpd *h, char **err);

/* The port the server listens on (the chosen one when the config said 0). */
unsigned httpd_port(const struct httpd *h);

/*
 * Graceful stop, called from the thread that started the server: each worker closes its
 * listening socket (new connections are refused), lets its requests in flight finish for up
 * to grace_ms (answers sent meanwhile carry Connection: close), then closes every connection
 * (idle ones as soon as that worker has nothing in flight; requests still being received
 * are cut), leaves its loop and runs fini. Returns once all workers are joined. Calling it
 * again, or before httpd_start, does nothing.
 */
void httpd_shutdown(struct httpd *h, unsigned grace_ms);

/* Shuts down (grace 0) if still running and frees everything. NULL is fine. */
void httpd_free(struct httpd *h);

/* Waits for SIGINT or SIGTERM (blocked by httpd_start) and returns the signal number. */
int httpd_wait_signal(void);

/*
 * Request accessors. Returned strings are borrowed from req until the reply. Headers,
 * query and body stay readable even after the client went away.
 */
const char *http_req_method(const struct http_req *req); /* "GET" */
const char *http_req_path(const struct http_req *req);   /* raw path, no query */
const char *http_req_route(const struct http_req *req);  /* the matched route's label */
const char *http_req_id(const struct http_req *req);     /* the X-Request-Id answered */
/* The i-th "{}" segment, raw and NUL-terminated; NULL past the last. */
const char *http_req_param(const struct http_req *req, unsigned i);
/* A query parameter, percent-decoded ('+' is a space); NULL when absent or unparsable. */
const char *http_req_query(struct http_req *req, const char *name);
/* A request header (first of that name, case-insensitive); NULL when absent. */
const char *http_req_header(const struct http_req *req, const char *name);
/* The peer's IP address as text (IPv4-mapped IPv6 addresses shown as IPv4). */
const char *http_req_peer(struct http_req *req);
/* The body, contiguous (at most max_body_size bytes); NULL and *len 0 when empty. */
const unsigned char *http_req_body(struct http_req *req, size_t *len);
/*
 * Non-zero once the client closed or reset its connection (noticed within about 100 ms while
 * the handler works asynchronously); a handler may then cut its work short. The reply is
 * still required, and is then only freed. While a streamed body is still arriving, a client
 * that leaves is noticed by the reading itself (on_end(-1)); while the handler keeps the
 * stream paused, not before it resumes (the close sits behind unread data).
 */
int http_req_gone(const struct http_req *req);

/*
 * Streamed request bodies (routes added with httpd_route_stream).
 *
 * http_req_body_length: the body's length as the client declared it (0 without a body), or
 * -1 on a route that does not stream. http_req_body returns nothing on a streaming route.
 *
 * http_req_body_read starts handing the body to the handler, from the worker's loop, never
 * from inside this call. on_data gets each piece in order (data borrowed until it returns)
 * and returns 0 for more, 1 to pause (nothing more is delivered or read from the socket
 * until http_req_body_resume), or -1 to stop (the rest is discarded; on_end(-1) follows).
 * on_end comes exactly once: 0 when every declared byte was delivered, -1 when the stream
 * ended early (stopped, client gone or cut off by the io timeout, connection closed by a
 * shutdown). on_end(0) waits for a paused stream to be resumed; on_end(-1) for a client that
 * left is delivered even while paused, and buffered data is then dropped. Either callback
 * may reply; after a reply neither is called again, and the handler must not call
 * http_req_body_resume. The handler must still reply exactly once, also after on_end(-1).
 * A shutdown that closes the connection delivers on_end(-1) before fini runs, except to a
 * handler that has not called http_req_body_read yet; fini answers what is left.
 * 0, or -1 if the route does not stream or the body is already being read.
 *
 * http_req_body_resume: continues a paused stream (from any callback on the worker's loop,
 * including on_data itself); does nothing if the stream is not paused.
 */
typedef int (*http_body_data_fn)(struct http_req *req, const void *data, size_t len, void *arg);
typedef void (*http_body_end_fn)(struct http_req *req, int status, void *arg);
int64_t http_req_body_length(const struct http_req *req);
int http_req_body_read(struct http_req *req, http_body_data_fn on_data, http_body_end_fn on_end,
                       void *arg);
void http_req_body_resume(struct http_req *req);
/* The worker's context (what init returned), loop and index. */
void *http_req_ctx(const struct http_req *req);
struct event_base *http_req_base(const struct http_req *req);
unsigned http_req_worker(const struct http_req *req);

/*
 * Adds a response header (Retry-After, Location, WWW-Authenticate, ...) before the reply;
 * strings are copied. -1 if the name or value holds a line break. X-Request-Id and
 * Content-Type are set by the reply calls.
 */
int http_add_header(struct http_req *req, const char *name, const char *value);

/*
 * The replies; each ends the handler's ownership of req. Bodies are copied (http_reply),
 * moved out of body (http_reply_buffer, which leaves it empty), or serialised and released
 * (http_reply_json steals body; NULL answers 500).
 */
void http_reply(struct http_req *req, int status, const char *content_type, const void *body,
                size_t len);
void http_reply_buffer(struct http_req *req, int status, const char *content_type,
                       struct evbuffer *body);
void http_reply_json(struct http_req *req, int status, json_t *body);

/*
 * An RFC 9457 problem: application/problem+json with type (NULL: "about:blank"), title
 * (NULL: the status phrase), status, detail (NULL: the title) and request_id, plus the
 * members of ext (stolen, may be NULL; it cannot override those five).
 */
void http_reply_problem(struct http_req *req, int status, const char *type, const char *title,
                        const char *detail, json_t *ext);

/* The reason phrase for a status ("Not Found"); "Unknown" for codes it does not know. */
const char *http_status_phrase(int status);

#endif
