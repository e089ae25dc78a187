/*
 * test_http_lifecycle: asynchronous replies, clients that leave before their answer (or
 * while it is being written), per-worker init and fini, and graceful and forced shutdown.
 * LeakSanitizer checks that every path frees what it took.
 */
#include "support.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

#include "http_support.h"

#define WORKERS 2
#define BIG (16 * 1024 * 1024)

struct fixture {
    struct metrics *metrics;
    struct httpd *h;
    unsigned port;
    atomic_int started;    /* async handlers entered */
    atomic_int fired;      /* async replies made from their timer */
    atomic_int fired_gone; /* ... of which saw http_req_gone */
    atomic_int fini_calls;
    atomic_int fini_replied; /* requests fini still had to answer */
    atomic_int fini_gone;
    atomic_int init_mask;
};

/* What init hands each worker: its pending async requests, so fini can answer them. */
struct pending;
struct wctx {
    struct fixture *f;
    unsigned idx;
    struct event_base *base;
    struct pending *pending;
};

struct pending {
    struct pending *prev, *next;
    struct wctx *ctx;
    struct event *ev;
    struct http_req *req;
};

static void *worker_init(struct event_base *base, unsigned idx, void *arg)
{
    struct wctx *c = calloc(1, sizeof(*c));
    c->f = arg;
    c->idx = idx;
    c->base = base;
    atomic_fetch_or(&c->f->init_mask, 1 << idx);
    return c;
}

static void pending_unlink(struct pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        p->ctx->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    event_free(p->ev);
}

static void worker_fini(void *arg)
{
    struct wctx *c = arg;
    struct pending *p;
    /* A real service would cancel its Redis and PostgreSQL calls here; their callbacks then
     * answer the requests they held, whose clients the shutdown has disconnected. */
    while ((p = c->pending) != NULL) {
        pending_unlink(p);
        atomic_fetch_add(&c->f->fini_replied, 1);
        if (http_req_gone(p->req))
            atomic_fetch_add(&c->f->fini_gone, 1);
        http_reply_problem(p->req, 503, NULL, NULL, "shutting down", NULL);
        free(p);
    }
    atomic_fetch_add(&c->f->fini_calls, 1);
    free(c);
}

static void pending_fire(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    struct fixture *f = p->ctx->f;
    (void)fd;
    (void)what;
    pending_unlink(p);
    if (http_req_gone(p->req))
        atomic_fetch_add(&f->fired_gone, 1);
    http_reply(p->req, 200, "text/plain", "late", 4);
    atomic_fetch_add(&f->fired, 1);
    free(p);
}

/* Answers after ?ms= milliseconds, from a timer on the worker's loop. */
static void on_async(struct http_req *req, void *arg)
{
    struct fixture *f = arg;
    struct wctx *c = http_req_ctx(req);
    const char *ms = http_req_query(req, "ms");
    long n = ms != NULL ? atol(ms) : 50;
    struct timeval tv = {.tv_sec = n / 1000, .tv_usec = (n % 1000) * 1000};
    struct pending *p = calloc(1, sizeof(*p));

    p->ctx = c;
    p->req = req;
    p->ev = evtimer_new(http_req_base(req), pending_fire, p);
    p->next = c->pending;
    if (c->pending != NULL)
        c->pending->prev = p;
    c->pending = p;
    evtimer_add(p->ev, &tv);
    atomic_fetch_add(&f->started, 1);
}

static void on_sync(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply(req, 200, "text/plain", "now", 3);
}

static void on_big(struct http_req *req, void *arg)
{
    char *body = malloc(BIG);
    (void)arg;
    memset(body, 'z', BIG);
    http_reply(req, 200, "application/octet-stream", body, BIG);
    free(body);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char *err = NULL;
    log_init("test", LOG_WARN, 2);
    f->metrics = metrics_new();
    struct httpd_config cfg = {.host = "127.0.0.1",
                               .workers = WORKERS,
                               .metrics = f->metrics,
                               .init = worker_init,
                               .fini = worker_fini,
                               .arg = f};
    f->h = httpd_new(&cfg, &err);
    assert_non_null(f->h);
    f->port = httpd_port(f->h);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/async", NULL, on_async, f), 0);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/sync", NULL, on_sync, f), 0);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/big", NULL, on_big, f), 0);
    assert_int_equal(httpd_start(f->h, &err), 0);
    assert_int_equal(atomic_load(&f->init_mask), (1 << WORKERS) - 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    httpd_free(f->h);
    /* Every worker ran fini exactly once, whatever the test did. */
    assert_int_equal(atomic_load(&f->fini_calls), WORKERS);
    metrics_free(f->metrics);
    free(f);
    return 0;
}

static int wait_for(atomic_int *v, int want, int timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    while (atomic_load(v) < want && ts_now_ms() < end)
        usleep(2 * 1000);
    return atomic_load(v) >= want;
}

/*
 * A connection whose receive buffer is set small before connecting, so that a BIG response
 * cannot vanish into the kernel's buffers and stays "being written" while we do not read.
 */
static int connect_small(unsigned port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), rcvbuf = 256 * 1024;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void assert_alive(unsigned port)
{
    struct th_resp r;
    assert_int_equal(th_request(port, "GET /v1/sync HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

static void test_async_reply(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    int fd = th_connect(f->port);
    const char req[] = "GET /v1/async?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n";

    for (int i = 0; i < 3; i++) {
        int64_t t0 = ts_now_ms();
        assert_int_equal(th_send(fd, req, sizeof(req) - 1), 0);
        assert_int_equal(th_read(fd, &r, 0, 5000), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "late");
        assert_true(ts_now_ms() - t0 >= 45);
        char *id = th_header(&r, "X-Request-Id");
        assert_non_null(id);
        free(id);
        th_resp_free(&r);
    }
    close(fd);
    assert_int_equal(atomic_load(&f->fired_gone), 0);
}

/* A client leaves while its handler waits: the handler sees it, and its reply is harmless. */
static void test_client_gone(void **state)
{
    struct fixture *f = *state;
    const char req[] = "GET /v1/async?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n";

    for (int reset = 0; reset < 2; reset++) {
        int fd = th_connect(f->port), before = atomic_load(&f->started);
        int fired = atomic_load(&f->fired), gone = atomic_load(&f->fired_gone);
        assert_int_equal(th_send(fd, req, sizeof(req) - 1), 0);
        assert_true(wait_for(&f->started, before + 1, 2000));
        if (reset) {
            /* An abortive close: the server sees a reset rather than an end of stream. */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(fd);
        assert_true(wait_for(&f->fired, fired + 1, 2000));
        assert_int_equal(atomic_load(&f->fired_gone), gone + 1);
    }
    assert_alive(f->port);
    /* Many at once, leaving at once. */
    int fds[50], before = atomic_load(&f->started), fired = atomic_load(&f->fired);
    int gone = atomic_load(&f->fired_gone);
    for (int i = 0; i < 50; i++) {
        fds[i] = th_connect(f->port);
        assert_int_equal(th_send(fds[i], req, sizeof(req) - 1), 0);
    }
    assert_true(wait_for(&f->started, before + 50, 2000));
    for (int i = 0; i < 50; i++)
        close(fds[i]);
    assert_true(wait_for(&f->fired, fired + 50, 3000));
    assert_int_equal(atomic_load(&f->fired_gone), gone + 50);
    assert_alive(f->port);
}

/* The client leaves while a large response is still being written. */
static void test_gone_while_writing(void **state)
{
    struct fixture *f = *state;
    const char req[] = "GET /v1/big HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int i = 0; i < 5; i++) {
        int fd = connect_small(f->port);
        char buf[1024];
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(th_send(fd, req, sizeof(req) - 1), 0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_true(recv(fd, buf, sizeof(buf), 0) > 0);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    /* Each of them is accounted for once the server noticed. */
    char needle[] =
        "tagproof_http_requests_total{route=\"/v1/big\",method=\"GET\",status=\"200\"} 5";
    int64_t end = ts_now_ms() + 3000;
    int found = 0;
    while (!found && ts_now_ms() < end) {
        char *text = metrics_render(f->metrics, NULL);
        found = strstr(text, needle) != NULL;
        free(text);
        usleep(10 * 1000);
    }
    assert_true(found);
    assert_alive(f->port);
}

struct client {
    unsigned port;
    const char *raw;
    int rc;
    int status;
    char *connection;
    int64_t done_ms;
    pthread_t thread;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct th_resp r;
    c->rc = th_request(c->port, c->raw, &r);
    c->done_ms = ts_now_ms();
    if (c->rc == 0) {
        c->status = r.status;
        c->connection = th_header(&r, "Connection");
        th_resp_free(&r);
    }
    return NULL;
}

struct stopper {
    struct httpd *h;
    unsigned grace_ms;
    int64_t started_ms, done_ms;
    pthread_t thread;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    s->started_ms = ts_now_ms();
    httpd_shutdown(s->h, s->grace_ms);
    s->done_ms = ts_now_ms();
    return NULL;
}

/* connect() fails with ECONNREFUSED within timeout_ms; 1 if so. */
static int refused_within(unsigned port, int timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    do {
        int fd = th_connect(port);
        if (fd < 0 && errno == ECONNREFUSED)
            return 1;
        if (fd >= 0)
            close(fd);
        usleep(1000);
    } while (ts_now_ms() < end);
    return 0;
}

static void test_graceful_shutdown(void **state)
{
    struct fixture *f = *state;
    struct client c = {.port = f->port, .raw = "GET /v1/async?ms=500 HTTP/1.1\r\nHost: t\r\n\r\n"};
    struct stopper s = {.h = f->h, .grace_ms = 3000};
    int idle = th_connect(f->port);

    assert_true(idle >= 0);
    assert_int_equal(pthread_create(&c.thread, NULL, client_main, &c), 0);
    assert_true(wait_for(&f->started, 1, 2000));
    assert_int_equal(pthread_create(&s.thread, NULL, stopper_main, &s), 0);

    /* New connections are refused while the request is still in flight. */
    assert_true(refused_within(f->port, 400));
    assert_int_equal(atomic_load(&f->fired), 0);

    pthread_join(c.thread, NULL);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.status, 200);
    assert_non_null(c.connection);
    assert_string_equal(c.connection, "close");
    free(c.connection);

    pthread_join(s.thread, NULL);
    /* It waited for the answer, not for the whole grace period. */
    assert_true(s.done_ms >= c.done_ms - 5);
    assert_true(s.done_ms - s.started_ms < 1500);
    /* Idle connections are closed once their worker has nothing left in flight. */
    assert_true(th_closed_within(idle, 100));
    close(idle);
    assert_int_equal(atomic_load(&f->fini_calls), WORKERS);
    assert_int_equal(atomic_load(&f->fini_replied), 0);
}

/* Past the grace period the connection is closed; fini answers what its handler still held. */
static void test_forced_shutdown(void **state)
{
    struct fixture *f = *state;
    struct client c = {.port = f->port, .raw = "GET /v1/async?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n"};
    int64_t t0;

    assert_int_equal(pthread_create(&c.thread, NULL, client_main, &c), 0);
    assert_true(wait_for(&f->started, 1, 2000));
    t0 = ts_now_ms();
    httpd_shutdown(f->h, 200);
    assert_in_range(ts_now_ms() - t0, 150, 1500);
    pthread_join(c.thread, NULL);
    assert_int_equal(c.rc, -1); /* closed without an answer */
    assert_int_equal(atomic_load(&f->fired), 0);
    assert_int_equal(atomic_load(&f->fini_replied), 1);
    assert_int_equal(atomic_load(&f->fini_gone), 1);
    httpd_shutdown(f->h, 200); /* a second call does nothing */
}

/* A response still being written to a client that does not read is cut at the deadline. */
static void test_shutdown_while_writing(void **state)
{
    struct fixture *f = *state;
    const char req[] = "GET /v1/big HTTP/1.1\r\nHost: t\r\n\r\n";
    int fd = connect_small(f->port);
    int64_t t0;

    assert_int_equal(th_send(fd, req, sizeof(req) - 1), 0);
    /* Wait for the first bytes: the response is being written. */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    t0 = ts_now_ms();
    httpd_shutdown(f->h, 300);
    assert_in_range(ts_now_ms() - t0, 250, 1500);
    assert_true(th_closed_within(fd, 2000));
    close(fd);
}

static void test_shutdown_idle(void **state)
{
    struct fixture *f = *state;
    int fds[20];
    int64_t t0;
    for (int i = 0; i < 20; i++)
        assert_true((fds[i] = th_connect(f->port)) >= 0);
    assert_alive(f->port);
    t0 = ts_now_ms();
    httpd_shutdown(f->h, 5000);
    assert_true(ts_now_ms() - t0 < 300);
    for (int i = 0; i < 20; i++) {
        assert_true(th_closed_within(fds[i], 1000));
        close(fds[i]);
    }
    assert_true(refused_within(f->port, 100));
}

static void twice(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply(req, 200, NULL, NULL, 0);
    http_reply(req, 200, NULL, NULL, 0);
}

/* Answering twice is a programming error that stops the program, in a child here. */
static void test_double_reply_aborts(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *err = NULL;
        struct th_resp r;
        struct httpd_config cfg = {.host = "127.0.0.1"};
        struct httpd *h = httpd_new(&cfg, &err);
        close(2); /* the assertion message is expected */
        if (h == NULL || httpd_route(h, HTTP_GET, "/x", NULL, twice, NULL) != 0 ||
            httpd_start(h, &err) != 0)
            _exit(3);
        th_request(httpd_port(h), "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        sleep(5);
        _exit(4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_async_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forced_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_idle, setup, teardown),
        cmocka_unit_test(test_double_reply_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
