/*
 * test_http_limits: hostile input against the http module — oversized header sections,
 * request targets and bodies, garbage, clients that trickle or idle, and a thousand idle
 * connections that must not slow anyone else down.
 */
#include "support.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

#include "http_support.h"

#define MAX_BODY 4096
#define IO_TIMEOUT_MS 2000
#define REQUEST_TIMEOUT_MS 3000

struct fixture {
    struct metrics *metrics;
    struct httpd *h;
    unsigned port;
};

static void on_ping(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply(req, 200, "text/plain", "pong", 4);
}

static void on_upload(struct http_req *req, void *arg)
{
    char len[32];
    size_t n = 0;
    (void)arg;
    http_req_body(req, &n);
    snprintf(len, sizeof(len), "%zu", n);
    http_reply(req, 200, "text/plain", len, strlen(len));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char *err = NULL;
    log_init("test", LOG_WARN, 2);
    f->metrics = metrics_new();
    struct httpd_config cfg = {.host = "127.0.0.1",
                               .workers = 2,
                               .max_body_size = MAX_BODY,
                               .io_timeout_ms = IO_TIMEOUT_MS,
                               .request_timeout_ms = REQUEST_TIMEOUT_MS,
                               .metrics = f->metrics};
    f->h = httpd_new(&cfg, &err);
    assert_non_null(f->h);
    f->port = httpd_port(f->h);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/ping", NULL, on_ping, NULL), 0);
    assert_int_equal(httpd_route(f->h, HTTP_POST, "/v1/upload", NULL, on_upload, NULL), 0);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/scan/{}", "/v1/scan/{tag_id}", on_ping, NULL),
                     0);
    assert_int_equal(httpd_start(f->h, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    httpd_free(f->h);
    metrics_free(f->metrics);
    free(f);
    return 0;
}

/* The server still answers promptly. */
static void assert_alive(unsigned port)
{
    struct th_resp r;
    int64_t t0 = ts_now_ms();
    assert_int_equal(th_request(port, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(ts_now_ms() - t0 < 500);
    th_resp_free(&r);
}

/* A request with one header field of n bytes; caller frees. */
static char *with_header(size_t n)
{
    char *raw = malloc(n + 128);
    int off = sprintf(raw, "GET /v1/ping HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(raw + off, 'a', n);
    strcpy(raw + off + n, "\r\n\r\n");
    return raw;
}

static void test_header_limits(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    char *raw;
    json_t *j;

    /* Over our limit (8 KiB) but under evhttp's: a 431 problem with our request id. */
    raw = with_header(12 * 1024);
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 431);
    j = th_json(&r);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 431);
    char *ct = th_header(&r, "Content-Type"), *id = th_header(&r, "X-Request-Id");
    assert_string_equal(ct, "application/problem+json");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), id);
    free(ct);
    free(id);
    json_decref(j);
    th_resp_free(&r);
    free(raw);

    /* 64 KB: evhttp's own limit, a 400 and the connection closed. */
    raw = with_header(64 * 1024);
    int fd = th_connect(f->port);
    assert_true(fd >= 0);
    /* The server may close before it read everything; a failed send is part of the deal. */
    th_send(fd, raw, strlen(raw));
    if (th_read(fd, &r, 0, 5000) == 0) {
        assert_int_equal(r.status, 400);
        th_resp_free(&r);
    }
    assert_true(th_closed_within(fd, 2000));
    close(fd);
    free(raw);

    /* Many small fields add up the same way. */
    size_t n = 0;
    raw = malloc(64 * 1024);
    n += (size_t)sprintf(raw, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 500; i++)
        n += (size_t)sprintf(raw + n, "X-F%d: %030d\r\n", i, i);
    strcpy(raw + n, "\r\n");
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 431);
    th_resp_free(&r);
    free(raw);
    assert_alive(f->port);
}

static void test_long_path(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    size_t n = 10 * 1024;
    char *raw = malloc(n + 128);
    json_t *j;

    int off = sprintf(raw, "GET /v1/scan/");
    memset(raw + off, 'x', n);
    strcpy(raw + off + n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(th_request(f->port, raw, &r), 0);
    j = th_json(&r);
    assert_int_equal(r.status, 414);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 414);
    json_decref(j);
    th_resp_free(&r);

    /* A long query counts too; a path just under the limit is routed (one segment). */
    memcpy(raw + off, "abc?q=", 6);
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 414);
    th_resp_free(&r);
    off = sprintf(raw, "GET /v1/scan/");
    memset(raw + off, 'x', 8000);
    strcpy(raw + off + 8000, " HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    free(raw);
    assert_alive(f->port);
}

static void test_body_limits(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    size_t n = MAX_BODY + 1;
    char *raw = malloc(n + 0x1000 + 256);
    int fd;

    /* At the limit: accepted. */
    int off =
        sprintf(raw, "POST /v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(raw + off, 'b', MAX_BODY);
    raw[off + MAX_BODY] = '\0';
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(atoi(r.body), MAX_BODY);
    th_resp_free(&r);

    /* One byte over: evhttp reads the body, answers 413 and closes. */
    off = sprintf(raw, "POST /v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    memset(raw + off, 'b', n);
    fd = th_connect(f->port);
    assert_int_equal(th_send(fd, raw, (size_t)off + n), 0);
    assert_int_equal(th_read(fd, &r, 0, 5000), 0);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    assert_true(th_closed_within(fd, 2000));
    close(fd);

    /* With Expect: 100-continue and a length over the limit, no 100 comes; a client that
     * then sends its body anyway (as curl does after a second) gets the 413. */
    fd = th_connect(f->port);
    off = sprintf(raw,
                  "POST /v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                  "Expect: 100-continue\r\n\r\n",
                  n);
    assert_int_equal(th_send(fd, raw, (size_t)off), 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 300), 0);
    memset(raw, 'b', n);
    assert_int_equal(th_send(fd, raw, n), 0);
    assert_int_equal(th_read(fd, &r, 0, 5000), 0);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    close(fd);

    /* A huge declared length whose body never comes: dropped after the inactivity timeout. */
    fd = th_connect(f->port);
    const char huge[] =
        "POST /v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000000\r\n\r\n";
    assert_int_equal(th_send(fd, huge, sizeof(huge) - 1), 0);
    memset(raw, 'b', 4096);
    assert_int_equal(th_send(fd, raw, 4096), 0);
    int64_t t0 = ts_now_ms();
    assert_true(th_closed_within(fd, IO_TIMEOUT_MS + 2000));
    assert_true(ts_now_ms() - t0 >= IO_TIMEOUT_MS - 100);
    close(fd);

    /* Chunked over the limit: 413 or closed, never a 200. */
    fd = th_connect(f->port);
    const char chunked[] =
        "POST /v1/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1000\r\n";
    assert_int_equal(th_send(fd, chunked, sizeof(chunked) - 1), 0);
    memset(raw, 'c', 0x1000);
    th_send(fd, raw, 0x1000);
    th_send(fd, "\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n", 29);
    if (th_read(fd, &r, 0, 5000) == 0) {
        assert_int_equal(r.status, 413);
        th_resp_free(&r);
    }
    assert_true(th_closed_within(fd, 2000));
    close(fd);

    /* A negative or non-numeric length is a 400 from evhttp. */
    assert_int_equal(th_request(f->port,
                                "POST /v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
                                &r),
                     0);
    assert_int_equal(r.status, 400);
    th_resp_free(&r);
    free(raw);
    assert_alive(f->port);
}

static void test_garbage(void **state)
{
    struct fixture *f = *state;
#define IN(s)                                                                                      \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    const struct {
        const char *s;
        size_t n;
    } inputs[] = {IN("\r\n\r\n"),
                  IN("GET\r\n\r\n"),
                  IN("GET / HTTP/9.9\r\n\r\n"),
                  IN("GET /v1/ping HTTP/1.1\r\nNo colon here\r\n\r\n"),
                  IN("GET /v1/ping HTTP/1.1\r\n: empty\r\n\r\n"),
                  IN("\x00\x01\x02\x03 / HTTP/1.1\r\n\r\n"),
                  IN("GET /v1/\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n"),
                  IN("GET /v1/scan/%00 HTTP/1.1\r\nHost: t\r\n\r\n"),
                  IN("GET /v1/scan/a\x00"
                     "b HTTP/1.1\r\nHost: t\r\n\r\n"),
                  IN("GET /v1/scan/a\x0b HTTP/1.1\r\nHost: t\r\n\r\n"),
                  IN("GET http://evil.example/v1/ping HTTP/1.1\r\nHost: t\r\n\r\n"),
                  IN("GET /v1/ping HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")};
#undef IN
    for (size_t i = 0; i < sizeof(inputs) / sizeof(*inputs); i++) {
        struct th_resp r;
        int fd = th_connect(f->port);
        assert_true(fd >= 0);
        th_send(fd, inputs[i].s, inputs[i].n);
        /* Anything goes but silence or a crash: an answer, or a close. */
        if (th_read(fd, &r, 0, 3000) == 0) {
            assert_true(r.status >= 200 && r.status < 600);
            th_resp_free(&r);
        } else {
            assert_true(th_closed_within(fd, 3000));
        }
        close(fd);
    }
    assert_alive(f->port);
}

/*
 * A client sending a byte a second never trips an inactivity timeout; the whole-request
 * deadline cuts it off. An idle connection goes after the inactivity timeout.
 */
static void test_slow_and_idle_clients(void **state)
{
    struct fixture *f = *state;
    const char req[] = "GET /v1/ping HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    int slow = th_connect(f->port), idle = th_connect(f->port);
    int64_t t0 = ts_now_ms(), slow_cut = -1, idle_cut = -1;
    size_t sent = 0;

    assert_true(slow >= 0 && idle >= 0);
    while (ts_now_ms() - t0 < 8000 && (slow_cut < 0 || idle_cut < 0)) {
        struct pollfd p[2] = {{.fd = slow, .events = POLLIN}, {.fd = idle, .events = POLLIN}};
        if (slow_cut < 0 && sent < sizeof(req) - 1 && ts_now_ms() - t0 >= (int64_t)sent * 1000) {
            if (send(slow, req + sent, 1, MSG_NOSIGNAL) == 1)
                sent++;
            else
                slow_cut = ts_now_ms() - t0;
        }
        poll(p, 2, 50);
        char b[256];
        if (slow_cut < 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
            recv(slow, b, sizeof(b), MSG_DONTWAIT) <= 0)
            slow_cut = ts_now_ms() - t0;
        if (idle_cut < 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
            recv(idle, b, sizeof(b), MSG_DONTWAIT) <= 0)
            idle_cut = ts_now_ms() - t0;
    }
    close(slow);
    close(idle);
    /* The slow one sent a byte a second and got no answer, only a close at the deadline. */
    assert_true(sent < sizeof(req) - 1);
    assert_in_range(slow_cut, REQUEST_TIMEOUT_MS - 100, REQUEST_TIMEOUT_MS + 1500);
    assert_in_range(idle_cut, IO_TIMEOUT_MS - 100, IO_TIMEOUT_MS + 1500);
    assert_alive(f->port);
}

static double gauge_value(struct metrics *m)
{
    char *text = metrics_render(m, NULL), *p;
    double v = -1;
    if (text != NULL && (p = strstr(text, "\ntagproof_http_connections_open ")) != NULL)
        v = atof(p + strlen("\ntagproof_http_connections_open "));
    free(text);
    return v;
}

static void test_many_idle_connections(void **state)
{
    struct fixture *f = *state;
    enum { IDLE = 1000 };
    static int fds[IDLE];
    int64_t t0;

    for (int i = 0; i < IDLE; i++) {
        fds[i] = th_connect(f->port);
        assert_true(fds[i] >= 0);
    }
    /* All accepted and tracked. */
    t0 = ts_now_ms();
    while (gauge_value(f->metrics) < IDLE && ts_now_ms() - t0 < 1000)
        usleep(10 * 1000);
    assert_true(gauge_value(f->metrics) >= IDLE);
    /* Others are served promptly meanwhile, on new connections and a kept-alive one. */
    for (int i = 0; i < 50; i++)
        assert_alive(f->port);
    int fd = th_connect(f->port);
    for (int i = 0; i < 50; i++) {
        struct th_resp r;
        int64_t t1 = ts_now_ms();
        assert_int_equal(th_send(fd, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", 34), 0);
        assert_int_equal(th_read(fd, &r, 0, 1000), 0);
        assert_int_equal(r.status, 200);
        assert_true(ts_now_ms() - t1 < 200);
        th_resp_free(&r);
    }
    close(fd);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    /* Closing them is noticed, and the gauge comes back down. */
    t0 = ts_now_ms();
    while (gauge_value(f->metrics) > 5 && ts_now_ms() - t0 < 2000)
        usleep(10 * 1000);
    assert_true(gauge_value(f->metrics) <= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_limits),         cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_body_limits),           cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_slow_and_idle_clients), cmocka_unit_test(test_many_idle_connections),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
