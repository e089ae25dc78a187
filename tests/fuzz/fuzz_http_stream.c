// fuzz: MODULES http
/*
 * fuzz_http_stream: the streamed-body path of the http module — the input watch that holds
 * back, reads and rewrites header sections before evhttp sees them, and the delivery of a
 * body to its handler. Like fuzz_http_request it runs the real server in-process (one worker,
 * tight limits); each input is the raw byte stream of one connection (any number of
 * pipelined requests), after which the client shuts its write side and reads until the
 * server closes. The handlers of the streaming route POST /s/{} behave by the first letter
 * of their parameter (read all, pause at every piece, stop, answer early, start late, answer
 * from inside on_data) and check the module's promises: pieces in order and never more than
 * declared, on_end exactly once and never after an answer, on_end(0) only with every declared
 * byte, the declared length shown as Content-Length, the internal marker never shown. A
 * crash, a failed check or a leak is a finding.
 */
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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
#define STREAM_MAX 4096
#define MARKER "X-Tagproof-Body-Stream"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct httpd *server;
static struct metrics *metrics;
static unsigned port;
static atomic_int uploads; /* handler state still allocated */

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_http_stream: %s\n", what);
    abort();
}

/* What every request may rely on: the marker is never shown. */
static void check_headers(struct http_req *req)
{
    if (http_req_header(req, MARKER) != NULL)
        fail("the internal marker reached a handler");
}

struct upload {
    struct http_req *req;
    char mode;
    int64_t length;
    uint64_t bytes;
    int paused, reading;
    struct event *timer;
};

static void upload_free(struct upload *up)
{
    event_free(up->timer);
    free(up);
    atomic_fetch_sub(&uploads, 1);
}

static void answer(struct http_req *req, int status, uint64_t bytes)
{
    http_reply_json(req, status, json_pack("{s:I}", "bytes", (json_int_t)bytes));
}

static int on_data(struct http_req *req, const void *data, size_t len, void *arg)
{
    struct upload *up = arg;
    static const struct timeval now = {0, 0};
    if (req != up->req || len == 0 || data == NULL || up->paused)
        fail("a piece to the wrong request, empty, or while paused");
    up->bytes += len;
    if (up->bytes > (uint64_t)up->length)
        fail("more body than declared");
    switch (up->mode) {
    case 'p':
        up->paused = 1;
        evtimer_add(up->timer, &now);
        return 1;
    case 'x':
        return -1;
    case 'r':
        /* An answer from inside on_data: no callback may follow. */
        answer(req, 409, up->bytes);
        upload_free(up);
        return 0;
    default:
        return 0;
    }
}

static void on_end(struct http_req *req, int status, void *arg)
{
    struct upload *up = arg;
    if (req != up->req || (status != 0 && status != -1))
        fail("on_end for the wrong request or with a strange status");
    if (status == 0 && up->bytes != (uint64_t)up->length)
        fail("on_end(0) without every declared byte");
    answer(req, status == 0 ? 200 : 400, up->bytes);
    upload_free(up);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upload *up = arg;
    (void)fd;
    (void)what;
    if (!up->reading) {
        up->reading = 1;
        if (http_req_body_read(up->req, on_data, on_end, up) != 0)
            fail("http_req_body_read refused a streaming route");
    } else {
        up->paused = 0;
        http_req_body_resume(up->req);
    }
}

/* POST /s/{}: a, p, x, e, l or r as above. */
static void on_stream(struct http_req *req, void *arg)
{
    static const struct timeval now = {0, 0};
    const char *mode = http_req_param(req, 0), *cl = http_req_header(req, "Content-Length");
    int64_t length = http_req_body_length(req);
    struct upload *up = NULL;
    (void)arg;

    check_headers(req);
    if (length < 0 || length > STREAM_MAX)
        fail("a streamed body's length outside the route's limit");
    /* (A chunked body that the module left to evhttp has a length of its own.) */
    if (cl != NULL && http_req_header(req, "Transfer-Encoding") == NULL &&
        strtoll(cl, NULL, 10) != length)
        fail("Content-Length is not the declared length");
    if (mode[0] == 'e') {
        answer(req, 401, 0);
        return;
    }
    if ((up = calloc(1, sizeof(*up))) == NULL)
        fail("out of memory");
    atomic_fetch_add(&uploads, 1);
    up->req = req;
    up->mode = mode[0];
    up->length = length;
    up->timer = evtimer_new(http_req_base(req), on_timer, up);
    if (up->timer == NULL)
        fail("out of memory");
    if (up->mode == 'l') {
        evtimer_add(up->timer, &now);
        return;
    }
    up->reading = 1;
    if (http_req_body_read(req, on_data, on_end, up) != 0 ||
        http_req_body_read(req, on_data, on_end, up) != -1)
        fail("http_req_body_read: not exactly one start");
}

/* POST /w: an ordinary route on the same server, its body whole. */
static void on_whole(struct http_req *req, void *arg)
{
    size_t len = 0;
    const unsigned char *body = http_req_body(req, &len);
    (void)arg;
    check_headers(req);
    if ((body == NULL) != (len == 0) || len > 8192)
        fail("a whole body that does not match its length or the limit");
    if (http_req_body_length(req) != -1 || http_req_body_read(req, on_data, on_end, NULL) != -1)
        fail("an ordinary route behaves as a streaming one");
    answer(req, 200, len);
}

static void on_get(struct http_req *req, void *arg)
{
    (void)arg;
    check_headers(req);
    http_reply(req, 204, NULL, NULL, 0);
}

static void stop_server(void)
{
    /* Let handlers still at work on the last connection finish, so what they hold is freed. */
    for (int i = 0; i < 200 && atomic_load(&uploads) > 0; i++)
        usleep(10 * 1000);
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
        .max_body_size = 8192,
        .io_timeout_ms = READ_TIMEOUT_MS,
        .request_timeout_ms = READ_TIMEOUT_MS,
    };
    char *err = NULL;
    sigset_t set;
    (void)argc;
    (void)argv;

    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    log_init("fuzz_http_stream", LOG_INFO, devnull >= 0 ? devnull : 2);
    cfg.metrics = metrics = metrics_new();
    server = httpd_new(&cfg, &err);
    if (server == NULL || metrics == NULL)
        fail(err != NULL ? err : "httpd_new failed");
    if (httpd_route_stream(server, HTTP_POST, "/s/{}", NULL, STREAM_MAX, on_stream, NULL) != 0 ||
        httpd_route_stream(server, HTTP_PUT, "/s/{}", NULL, STREAM_MAX, on_stream, NULL) != 0 ||
        httpd_route(server, HTTP_POST, "/w", NULL, on_whole, NULL) != 0 ||
        httpd_route(server, HTTP_GET, "/g", NULL, on_get, NULL) != 0)
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

/* As in fuzz_http_request: each connection from the next 127.1.x.y, so that TIME_WAIT does
 * not run out of ports. */
static int connect_from_loopback(int fd, const struct sockaddr_in *to)
{
    static uint32_t next;
    int one = 1;
    uint32_t n = next++ & 0xffff;
    struct sockaddr_in from = {.sin_family = AF_INET};

    from.sin_addr.s_addr = htonl(0x7f010000u | n);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&from, sizeof(from)) != 0)
        return -1;
    for (int attempt = 0;; attempt++) {
        if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EINTR) || attempt == 20)
            return -1;
        usleep(10000);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char answer_buf[16384];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char head[8];
    size_t nhead = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        fail("socket");
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect_from_loopback(fd, &sa) != 0) {
        fprintf(stderr, "fuzz_http_stream: connect: %s\n", strerror(errno));
        fail("connect to the server failed");
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server may close early */
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
        ssize_t n = recv(fd, answer_buf, sizeof(answer_buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && nhead < sizeof(head); i++)
            head[nhead++] = answer_buf[i];
    }
    close(fd);
    if (nhead > 0 && memcmp(head, "HTTP/", nhead < 5 ? nhead : 5) != 0)
        fail("an answer that does not start with a status line");
    return 0;
}
