// fuzz: MODULES http uuid
/*
 * fuzz_http_request: the request path of the http module. Routing, parameters, request ids,
 * queries and the access log are static inside http.c and only reachable through a request,
 * so this target runs the real server in-process: httpd on 127.0.0.1, port 0, one worker,
 * tight limits, a few routes. Each input is one connection from this thread:
 *   - "RAW\n" and then anything: those bytes are the whole request, then the write side is
 *     shut (an incomplete request ends there);
 *   - otherwise the first line is "METHOD target", sent as "<line> HTTP/1.1", the following
 *     lines are header fields until an empty line, after which the rest is the body; Host and
 *     "Connection: close" are added.
 * The answer is read until the server closes (at most READ_TIMEOUT_MS). Handlers check what
 * the router hands them; a crash, a failed check or a leak in the server is a finding. Any
 * answer must begin with a status line. Slow by nature (a connection per input), but real.
 */
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "uuid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#define READ_TIMEOUT_MS 2000
#define MAX_REQUEST 8192

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct httpd *server;
static struct metrics *metrics;
static unsigned port;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_http_request: %s\n", what);
    abort();
}

/* What every handler may rely on, whatever the request was. */
static void check_request(struct http_req *req, unsigned nparams)
{
    const char *id = http_req_id(req);
    size_t n = strlen(id);
    if (n == 0 || n > 64 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789._-") != n)
        fail("a request id that is not sane");
    for (unsigned i = 0; i < nparams; i++) {
        const char *p = http_req_param(req, i);
        if (p == NULL || p[0] == '\0' || strchr(p, '/') != NULL)
            fail("a route parameter that is not one non-empty segment");
    }
    if (http_req_param(req, nparams) != NULL)
        fail("more route parameters than the pattern has");
    if (http_req_path(req) == NULL || http_req_path(req)[0] != '/')
        fail("a routed path that does not start with '/'");
    if (http_req_method(req) == NULL || http_req_route(req) == NULL || http_req_peer(req) == NULL)
        fail("a request without method, route or peer");
}

/* GET /v1/scan/{}: the scan path's first step, validating the tag id. */
static void on_scan(struct http_req *req, void *arg)
{
    char canon[UUID_STR_LEN + 1];
    (void)arg;
    check_request(req, 1);
    const char *id = http_req_param(req, 0);
    if (uuid_canonical(id, strlen(id), canon) != 0) {
        http_reply_problem(req, 400, NULL, NULL, "the tag id is not a UUID", NULL);
        return;
    }
    json_t *body = json_pack("{s:s}", "tag_id", canon);
    const char *lat = http_req_query(req, "lat");
    const char *ua = http_req_header(req, "User-Agent");
    if (body != NULL && lat != NULL)
        json_object_set_new(body, "lat", json_stringn(lat, strlen(lat)));
    if (body != NULL && ua != NULL)
        json_object_set_new(body, "ua_len", json_integer((json_int_t)strlen(ua)));
    /* A header value from the query: http.h promises -1 for any line break in it. */
    const char *echo = http_req_query(req, "echo");
    if (echo != NULL && http_add_header(req, "X-Echo", echo) == 0 && strpbrk(echo, "\r\n") != NULL)
        fail("http_add_header took a value with a line break");
    http_reply_json(req, 200, body);
}

/* POST /v1/batches/{}/tags: a body. */
static void on_upload(struct http_req *req, void *arg)
{
    size_t len = 0;
    (void)arg;
    check_request(req, 1);
    const unsigned char *body = http_req_body(req, &len);
    if ((body == NULL) != (len == 0) || len > 1024)
        fail("a body that does not match its length or the limit");
    http_reply_json(req, 201, json_pack("{s:I}", "bytes", (json_int_t)len));
}

/* GET /t/{}/{}: answered later from the worker's loop, as the scan path does. */
static void answer_later(evutil_socket_t fd, short what, void *arg)
{
    struct http_req *req = arg;
    (void)fd;
    (void)what;
    if (http_req_gone(req))
        http_reply_problem(req, 503, NULL, NULL, "gone", NULL);
    else
        http_reply(req, 200, "text/plain", "later\n", 6);
}

static void on_later(struct http_req *req, void *arg)
{
    static const struct timeval now = {0, 0};
    (void)arg;
    check_request(req, 2);
    if (event_base_once(http_req_base(req), -1, EV_TIMEOUT, answer_later, req, &now) != 0)
        http_reply_problem(req, 500, NULL, NULL, NULL, NULL);
}

static void on_plain(struct http_req *req, void *arg)
{
    (void)arg;
    check_request(req, 0);
    http_reply(req, 204, NULL, NULL, 0);
}

static void stop_server(void)
{
    httpd_free(server);
    metrics_free(metrics);
    server = NULL;
    metrics = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct httpd_config cfg = {
        .host = "127.0.0.1",
        .workers = 1,
        .max_uri_size = 512,
        .max_header_size = 512,
        .max_body_size = 1024,
        .io_timeout_ms = READ_TIMEOUT_MS,
        .request_timeout_ms = READ_TIMEOUT_MS,
        .allowed_methods = HTTP_GET | HTTP_HEAD | HTTP_POST | HTTP_PUT | HTTP_DELETE,
    };
    char *err = NULL;
    sigset_t set;
    (void)argc;
    (void)argv;

    /* The access log is written (to /dev/null): its path escaping is part of the request path. */
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    log_init("fuzz_http_request", LOG_INFO, devnull >= 0 ? devnull : 2);
    cfg.metrics = metrics = metrics_new();
    server = httpd_new(&cfg, &err);
    if (server == NULL || metrics == NULL)
        fail(err != NULL ? err : "httpd_new failed");
    if (httpd_route(server, HTTP_GET, "/v1/scan/{}", "/v1/scan/{tag_id}", on_scan, NULL) != 0 ||
        httpd_route(server, HTTP_POST, "/v1/batches/{}/tags", NULL, on_upload, NULL) != 0 ||
        httpd_route(server, HTTP_PUT, "/v1/batches/{}/tags", NULL, on_upload, NULL) != 0 ||
        httpd_route(server, HTTP_GET, "/t/{}/{}", NULL, on_later, NULL) != 0 ||
        httpd_route(server, HTTP_GET, "/healthz", NULL, on_plain, NULL) != 0 ||
        httpd_route(server, HTTP_DELETE, "/", NULL, on_plain, NULL) != 0)
        fail("httpd_route failed");
    if (httpd_start(server, &err) != 0)
        fail(err != NULL ? err : "httpd_start failed");
    /* httpd_start blocked these for httpd_wait_signal; libFuzzer wants them back. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    port = httpd_port(server);
    atexit(stop_server);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Thousands of connections a second leave as many in TIME_WAIT for a minute, more than one
 * source address has ports for. Every 127/8 address is loopback: each connection comes from
 * the next of 65536 of them, and the kernel picks the port at connect (IP_BIND_ADDRESS_NO_PORT)
 * so that it only has to be unique for that address and the server's.
 */
static int connect_from_loopback(int fd, const struct sockaddr_in *to)
{
    static uint32_t next;
    int one = 1;
    uint32_t n = next++ & 0xffff;
    struct sockaddr_in from = {.sin_family = AF_INET};

    from.sin_addr.s_addr = htonl(0x7f010000u | n); /* 127.1.x.y */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&from, sizeof(from)) != 0)
        return -1;
    for (int attempt = 0;; attempt++) {
        if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) == 0)
            return 0;
        /* A full accept queue on a busy machine is worth a short wait, nothing else is. */
        if ((errno != EAGAIN && errno != EINTR) || attempt == 20)
            return -1;
        usleep(10000);
    }
}

/* The request bytes for the input; returns their length. */
static size_t build_request(const uint8_t *data, size_t size, char *out, size_t cap)
{
    size_t o = 0;
#define PUT(p, n)                                                                                  \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (n_ > cap - o)                                                                          \
            n_ = cap - o;                                                                          \
        memcpy(out + o, (p), n_);                                                                  \
        o += n_;                                                                                   \
    } while (0)
#define PUTS(s) PUT((s), strlen(s))

    if (size >= 4 && memcmp(data, "RAW\n", 4) == 0) {
        PUT(data + 4, size - 4);
        return o;
    }
    const char *p = (const char *)data, *end = p + size;
    const char *nl = memchr(p, '\n', size);
    const char *line_end = nl != NULL ? nl : end;
    PUT(p, (size_t)(line_end - p));
    PUTS(" HTTP/1.1\r\n");
    p = nl != NULL ? nl + 1 : end;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        line_end = nl != NULL ? nl : end;
        if (line_end == p) { /* the empty line: the rest is the body */
            p++;
            break;
        }
        PUT(p, (size_t)(line_end - p));
        PUTS("\r\n");
        p = nl != NULL ? nl + 1 : end;
    }
    PUTS("Host: fuzz\r\nConnection: close\r\n\r\n");
    if (p < end)
        PUT(p, (size_t)(end - p));
    return o;
#undef PUTS
#undef PUT
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char request[MAX_REQUEST], answer[16384];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    size_t len = build_request(data, size, request, sizeof(request));
    char head[8];
    size_t nhead = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        fail("socket");
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect_from_loopback(fd, &sa) != 0) {
        fprintf(stderr, "fuzz_http_request: connect: %s\n", strerror(errno));
        fail("connect to the server failed");
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, request + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server may close early on a bad request */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);

    int64_t deadline = now_ms() + READ_TIMEOUT_MS;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        ssize_t n = recv(fd, answer, sizeof(answer), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && nhead < sizeof(head); i++)
            head[nhead++] = answer[i];
    }
    close(fd);
    /*
     * Only the start is checked: evhttp or this module wrote a status line first. (evhttp
     * answers in the version the request named, so "HTTP/0.1 200 OK" happens.)
     */
    if (nhead > 0 && memcmp(head, "HTTP/", nhead < 5 ? nhead : 5) != 0)
        fail("an answer that does not start with a status line");
    return 0;
}
