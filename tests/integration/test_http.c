/*
 * test_http: the http module over real loopback sockets — routing and its problem answers,
 * request ids, replies, worker threads, metrics, bind errors and the signal helper.
 */
#include "support.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

#include "http_support.h"

#define WORKERS 2

struct fixture {
    struct metrics *metrics;
    struct httpd *h;
    unsigned port;
    atomic_int per_worker[WORKERS];
    atomic_int ctx_mismatch; /* handlers run on worker threads, where cmocka cannot fail */
    int ctx_tag[WORKERS];
    FILE *log; /* where the access log goes */
};

static void *worker_init(struct event_base *base, unsigned idx, void *arg)
{
    struct fixture *f = arg;
    assert_non_null(base);
    assert_true(idx < WORKERS);
    f->ctx_tag[idx] = 100 + (int)idx;
    return &f->ctx_tag[idx];
}

static void on_echo(struct http_req *req, void *arg)
{
    struct fixture *f = arg;
    const char *lat = http_req_query(req, "lat"), *name = http_req_query(req, "name");
    const char *xt = http_req_header(req, "x-test");
    size_t len = 0;
    const unsigned char *body = http_req_body(req, &len);
    int *tag = http_req_ctx(req);

    if (tag == NULL || *tag != 100 + (int)http_req_worker(req) || http_req_param(req, 2) != NULL)
        atomic_fetch_add(&f->ctx_mismatch, 1);
    atomic_fetch_add(&f->per_worker[http_req_worker(req)], 1);
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s%, s:i, s:s}", "a",
                              http_req_param(req, 0), "b", http_req_param(req, 1), "method",
                              http_req_method(req), "route", http_req_route(req), "lat", lat,
                              "name", name, "x_test", xt, "body", body != NULL ? (char *)body : "",
                              len, "worker", (int)http_req_worker(req), "peer",
                              http_req_peer(req)));
}

static void on_ping(struct http_req *req, void *arg)
{
    struct fixture *f = arg;
    atomic_fetch_add(&f->per_worker[http_req_worker(req)], 1);
    http_reply(req, 200, "text/plain", "pong", 4);
}

static void on_problem(struct http_req *req, void *arg)
{
    (void)arg;
    assert_int_equal(http_add_header(req, "Retry-After", "7"), 0);
    assert_int_equal(http_add_header(req, "X-Bad", "a\r\nInjected: yes"), -1);
    http_reply_problem(
        req, 503, "https://tagproof.example/problems/unavailable", NULL, "both stores are down",
        json_pack("{s:s, s:i, s:s}", "verdict", "unknown", "status", 999, "request_id", "forged"));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char *err = NULL;
    f->log = tmpfile();
    assert_non_null(f->log);
    /* The logger writes through the same open file the test reads and rewinds: O_APPEND keeps
     * each line at the end instead of at whatever offset the last rewind left. */
    assert_int_equal(fcntl(fileno(f->log), F_SETFL, O_APPEND), 0);
    log_init("test", LOG_INFO, fileno(f->log));
    f->metrics = metrics_new();
    struct httpd_config cfg = {.host = "127.0.0.1",
                               .workers = WORKERS,
                               .metrics = f->metrics,
                               .init = worker_init,
                               .arg = f};
    f->h = httpd_new(&cfg, &err);
    assert_null(err);
    assert_non_null(f->h);
    f->port = httpd_port(f->h);
    assert_true(f->port > 0);
    assert_int_equal(
        httpd_route(f->h, HTTP_GET, "/v1/echo/{}/x/{}", "/v1/echo/{a}/x/{b}", on_echo, f), 0);
    assert_int_equal(
        httpd_route(f->h, HTTP_POST, "/v1/echo/{}/x/{}", "/v1/echo/{a}/x/{b}", on_echo, f), 0);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/ping", NULL, on_ping, f), 0);
    assert_int_equal(httpd_route(f->h, HTTP_GET, "/v1/problem", NULL, on_problem, f), 0);
    assert_int_equal(httpd_start(f->h, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(atomic_load(&f->ctx_mismatch), 0);
    httpd_free(f->h);
    metrics_free(f->metrics);
    log_init("test", LOG_WARN, 2);
    fclose(f->log);
    free(f);
    return 0;
}

/* The parsed problem body of r, after checking the problem+json basics. */
static json_t *problem_of(const struct th_resp *r, int status)
{
    char *ct = th_header(r, "Content-Type"), *rid = th_header(r, "X-Request-Id");
    json_t *j = th_json(r);
    assert_int_equal(r->status, status);
    assert_non_null(ct);
    assert_string_equal(ct, "application/problem+json");
    assert_non_null(j);
    assert_true(json_is_string(json_object_get(j, "type")));
    assert_true(json_is_string(json_object_get(j, "title")));
    assert_true(json_is_string(json_object_get(j, "detail")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), status);
    assert_non_null(rid);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), rid);
    free(ct);
    free(rid);
    return j;
}

static void test_routing(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    json_t *j;
    char *v;

    /* Parameters arrive raw: the handler sees %7B%7D, not braces. */
    assert_int_equal(th_request(f->port,
                                "GET /v1/echo/abc/x/%7B%7D?lat=1.5&name=a%20b+c HTTP/1.1\r\n"
                                "Host: t\r\nX-Test: yes\r\n\r\n",
                                &r),
                     0);
    assert_int_equal(r.status, 200);
    v = th_header(&r, "Content-Type");
    assert_string_equal(v, "application/json");
    free(v);
    j = th_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "a")), "abc");
    assert_string_equal(json_string_value(json_object_get(j, "b")), "%7B%7D");
    assert_string_equal(json_string_value(json_object_get(j, "route")), "/v1/echo/{a}/x/{b}");
    assert_string_equal(json_string_value(json_object_get(j, "lat")), "1.5");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "a b c");
    assert_string_equal(json_string_value(json_object_get(j, "x_test")), "yes");
    assert_string_equal(json_string_value(json_object_get(j, "peer")), "127.0.0.1");
    json_decref(j);
    th_resp_free(&r);

    /* A POST body reaches the handler. */
    assert_int_equal(th_request(f->port,
                                "POST /v1/echo/1/x/2 HTTP/1.1\r\nHost: t\r\n"
                                "Content-Length: 5\r\n\r\nhello",
                                &r),
                     0);
    j = th_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "body")), "hello");
    json_decref(j);
    th_resp_free(&r);

    /* Empty segments, extra segments and unknown paths are 404 problems. */
    const char *missing[] = {"/v1/echo//x/b",
                             "/v1/echo/a/x/b/",
                             "/v1/echo/a/x",
                             "/nope",
                             "/v1/echo/a/x/b/c",
                             "/v1/%70ing",
                             "/"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(*missing); i++) {
        char raw[256];
        snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", missing[i]);
        assert_int_equal(th_request(f->port, raw, &r), 0);
        j = problem_of(&r, 404);
        assert_string_equal(json_string_value(json_object_get(j, "title")), "Not Found");
        json_decref(j);
        th_resp_free(&r);
    }

    /* A known path with another method: 405 with Allow. */
    assert_int_equal(th_request(f->port, "DELETE /v1/echo/a/x/b HTTP/1.1\r\nHost: t\r\n\r\n", &r),
                     0);
    j = problem_of(&r, 405);
    v = th_header(&r, "Allow");
    assert_string_equal(v, "GET, HEAD, POST");
    free(v);
    json_decref(j);
    th_resp_free(&r);
    assert_int_equal(th_request(f->port, "OPTIONS /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    json_decref(problem_of(&r, 405));
    th_resp_free(&r);

    /* HEAD follows GET, with the length and no body. */
    assert_int_equal(th_request(f->port, "HEAD /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    v = th_header(&r, "Content-Length");
    assert_string_equal(v, "4");
    free(v);
    th_resp_free(&r);

    /* Methods evhttp itself refuses: its own 501, then the connection closes. */
    assert_int_equal(th_request(f->port, "TRACE /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 501);
    th_resp_free(&r);
    /* Garbage is a 400 from evhttp. */
    assert_int_equal(th_request(f->port, "BLAH\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 400);
    th_resp_free(&r);
}

static void test_keepalive(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    int fd = th_connect(f->port);
    const char req[] = "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n";

    assert_true(fd >= 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(th_send(fd, req, sizeof(req) - 1), 0);
        assert_int_equal(th_read(fd, &r, 0, 5000), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "pong");
        th_resp_free(&r);
    }
    /* Two pipelined requests are answered in order. */
    const char two[] = "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(th_send(fd, two, sizeof(two) - 1), 0);
    assert_int_equal(th_read(fd, &r, 0, 5000), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_read(fd, &r, 0, 5000), 0);
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
    assert_true(th_closed_within(fd, 2000));
    close(fd);
}

static int is_hex32(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

/* The X-Request-Id answered to a ping carrying the header line hdr ("" for none). */
static char *answered_id(unsigned port, const char *hdr)
{
    struct th_resp r;
    char raw[512];
    snprintf(raw, sizeof(raw), "GET /v1/ping HTTP/1.1\r\nHost: t\r\n%s\r\n", hdr);
    assert_int_equal(th_request(port, raw, &r), 0);
    assert_int_equal(r.status, 200);
    char *id = th_header(&r, "X-Request-Id");
    th_resp_free(&r);
    assert_non_null(id);
    return id;
}

static void test_request_id(void **state)
{
    struct fixture *f = *state;
    char *id, *id2, hdr[128];

    id = answered_id(f->port, "X-Request-Id: abc-123_X.y\r\n");
    assert_string_equal(id, "abc-123_X.y");
    free(id);
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %064d\r\n", 7);
    id = answered_id(f->port, hdr);
    assert_int_equal(strlen(id), 64);
    free(id);

    /* Too long, bad characters, empty: replaced by a fresh one. */
    const char *bad[] = {
        "X-Request-Id: 00000000000000000000000000000000000000000000000000000000000000000\r\n",
        "X-Request-Id: a b\r\n",
        "X-Request-Id: a/b\r\n",
        "X-Request-Id: \xc3\xa9t\xc3\xa9\r\n",
        "X-Request-Id: {x}\r\n",
        "X-Request-Id: a\"b\r\n",
        "X-Request-Id:\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        id = answered_id(f->port, bad[i]);
        assert_true(is_hex32(id));
        free(id);
    }

    /* Absent: generated, and different each time. */
    id = answered_id(f->port, "");
    id2 = answered_id(f->port, "");
    assert_true(is_hex32(id));
    assert_true(is_hex32(id2));
    assert_string_not_equal(id, id2);
    free(id);
    free(id2);
}

static void test_problem_reply(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    json_t *j;
    char *v;

    assert_int_equal(th_request(f->port,
                                "GET /v1/problem HTTP/1.1\r\nHost: t\r\nX-Request-Id: rq-1\r\n\r\n",
                                &r),
                     0);
    j = problem_of(&r, 503);
    v = th_header(&r, "Retry-After");
    assert_string_equal(v, "7");
    free(v);
    assert_null(th_header(&r, "X-Bad"));
    assert_null(th_header(&r, "Injected"));
    assert_string_equal(json_string_value(json_object_get(j, "type")),
                        "https://tagproof.example/problems/unavailable");
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Service Unavailable");
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "both stores are down");
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "unknown");
    /* Extension members cannot override the core ones. */
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rq-1");
    json_decref(j);
    th_resp_free(&r);
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    int before[WORKERS];

    for (int i = 0; i < WORKERS; i++)
        before[i] = atomic_load(&f->per_worker[i]);
    /* Each new connection has a new source port, which the kernel hashes to a socket. */
    for (int i = 0; i < 200; i++) {
        struct th_resp r;
        assert_int_equal(th_request(f->port, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
    }
    int total = 0;
    for (int i = 0; i < WORKERS; i++) {
        int n = atomic_load(&f->per_worker[i]) - before[i];
        assert_true(n > 0);
        total += n;
    }
    assert_int_equal(total, 200);
}

/* Series are recorded when a response has been written, a moment after the client reads it. */
static int metrics_contain(struct metrics *m, const char *needle)
{
    int64_t end = ts_now_ms() + 2000;
    do {
        char *text = metrics_render(m, NULL);
        int found = text != NULL && strstr(text, needle) != NULL;
        free(text);
        if (found)
            return 1;
        usleep(10 * 1000);
    } while (ts_now_ms() < end);
    return 0;
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(th_request(f->port, "GET /v1/echo/q/x/r HTTP/1.1\r\nHost: t\r\n\r\n", &r),
                         0);
        th_resp_free(&r);
    }
    assert_int_equal(th_request(f->port, "GET /v1/zzz HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    th_resp_free(&r);
    assert_true(metrics_contain(f->metrics, "tagproof_http_requests_total{route=\"/v1/echo/{a}/x/"
                                            "{b}\",method=\"GET\",status=\"200\"}"));
    assert_true(metrics_contain(
        f->metrics,
        "tagproof_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"));
    assert_true(metrics_contain(f->metrics, "tagproof_http_request_duration_seconds_count{route=\"/"
                                            "v1/echo/{a}/x/{b}\",status=\"200\"}"));
    assert_true(metrics_contain(f->metrics, "# TYPE tagproof_http_connections_open gauge"));
    /* The raw paths never become labels. */
    char *text = metrics_render(f->metrics, NULL);
    assert_null(strstr(text, "/v1/zzz"));
    assert_null(strstr(text, "/v1/echo/q"));
    free(text);
}

/* The access-log line of the request with id, parsed; NULL if none within a second or two. */
static json_t *access_line(FILE *log, const char *id)
{
    int64_t end = ts_now_ms() + 10000; /* returns as soon as the line is there */
    do {
        char line[4096];
        rewind(log);
        while (fgets(line, sizeof(line), log) != NULL) {
            json_t *j = json_loads(line, 0, NULL);
            const char *rid = json_string_value(json_object_get(j, "request_id"));
            const char *msg = json_string_value(json_object_get(j, "msg"));
            if (rid != NULL && strcmp(rid, id) == 0 && msg != NULL && strcmp(msg, "request") == 0)
                return j;
            json_decref(j);
        }
        usleep(10 * 1000);
    } while (ts_now_ms() < end);
    return NULL;
}

static void test_access_log(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    json_t *j;

    assert_int_equal(th_request(f->port,
                                "GET /v1/echo/a%20b/x/c?token=s3cr3t-query HTTP/1.1\r\nHost: t\r\n"
                                "X-Request-Id: log-test-1\r\n\r\n",
                                &r),
                     0);
    th_resp_free(&r);
    j = access_line(f->log, "log-test-1");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/echo/a%20b/x/c");
    assert_string_equal(json_string_value(json_object_get(j, "route")), "/v1/echo/{a}/x/{b}");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_is_number(json_object_get(j, "latency_ms")));
    assert_true(json_number_value(json_object_get(j, "latency_ms")) >= 0);
    json_decref(j);

    /* Raw bytes are escaped and long paths cut; the query is never written. */
    char raw[4096];
    int off = snprintf(raw, sizeof(raw), "GET /v1/\x01");
    memset(raw + off, 'p', 1000);
    snprintf(raw + off + 1000, sizeof(raw) - (size_t)off - 1000,
             "?password=hunter2 HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-test-2\r\n\r\n");
    assert_int_equal(th_request(f->port, raw, &r), 0);
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
    j = access_line(f->log, "log-test-2");
    assert_non_null(j);
    const char *path = json_string_value(json_object_get(j, "path"));
    assert_non_null(path);
    assert_memory_equal(path, "/v1/%01ppp", 10);
    assert_true(strlen(path) < 300);
    assert_string_equal(json_string_value(json_object_get(j, "route")), "unmatched");
    json_decref(j);

    char line[8192];
    rewind(f->log);
    while (fgets(line, sizeof(line), f->log) != NULL) {
        assert_null(strstr(line, "s3cr3t-query"));
        assert_null(strstr(line, "hunter2"));
        assert_null(strstr(line, "127.0.0.1"));
    }
}

static void test_bind_error(void **state)
{
    (void)state;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char *err = NULL, expect[64];

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);

    struct httpd_config cfg = {.host = "127.0.0.1", .port = ntohs(sa.sin_port), .workers = 2};
    assert_null(httpd_new(&cfg, &err));
    assert_non_null(err);
    snprintf(expect, sizeof(expect), "127.0.0.1:%u", cfg.port);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "in use"));
    free(err);
    close(fd);

    /* A second server on the port of a running one is refused, although both would set
     * SO_REUSEPORT and the kernel would let them share it. */
    struct httpd_config first = {.host = "127.0.0.1", .port = 0, .workers = 2};
    struct httpd *h1 = httpd_new(&first, &err);
    assert_non_null(h1);
    struct httpd_config second = {.host = "127.0.0.1", .port = httpd_port(h1), .workers = 2};
    err = NULL;
    assert_null(httpd_new(&second, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "in use"));
    free(err);
    httpd_free(h1);

    struct httpd_config bad = {.host = "no-such-host.invalid", .port = 8080};
    err = NULL;
    assert_null(httpd_new(&bad, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "no-such-host.invalid:8080"));
    free(err);
}

static void noop_handler(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply(req, 204, NULL, NULL, 0);
}

static void test_route_registration(void **state)
{
    (void)state;
    char *err = NULL;
    struct httpd_config cfg = {.host = "127.0.0.1"};
    struct httpd *h = httpd_new(&cfg, &err);
    assert_non_null(h);
    const char *bad[] = {
        "x", "", "/a{}", "/{}x", "/{", "/}", "/{x}", "/{}{}", "/{}/{}/{}/{}/{}/{}/{}/{}/{}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(httpd_route(h, HTTP_GET, bad[i], NULL, noop_handler, NULL), -1);
    assert_int_equal(httpd_route(h, HTTP_GET, "/{}/{}/{}/{}/{}/{}/{}/{}", NULL, noop_handler, NULL),
                     0);
    assert_int_equal(httpd_route(h, HTTP_GET, "/a/{}", NULL, noop_handler, NULL), 0);
    assert_int_equal(httpd_route(h, HTTP_GET, "/a/{}", NULL, noop_handler, NULL), -1);
    assert_int_equal(httpd_route(h, HTTP_POST, "/a/{}", NULL, noop_handler, NULL), 0);
    assert_int_equal(httpd_route(h, HTTP_GET | HTTP_POST, "/b", NULL, noop_handler, NULL), -1);
    assert_int_equal(httpd_route(h, HTTP_GET, "/c", NULL, NULL, NULL), -1);
    httpd_free(h); /* never started */
}

static void test_wait_signal(void **state)
{
    (void)state;
    /* httpd_start (in setup) blocked SIGTERM and SIGINT; they wait for sigwait. */
    kill(getpid(), SIGTERM);
    assert_int_equal(httpd_wait_signal(), SIGTERM);
    kill(getpid(), SIGINT);
    assert_int_equal(httpd_wait_signal(), SIGINT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_problem_reply),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_access_log),
        cmocka_unit_test(test_bind_error),
        cmocka_unit_test(test_route_registration),
        cmocka_unit_test(test_wait_signal),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
