/*
 * test_http_stream: request bodies streamed to the handler (httpd_route_stream) over real
 * loopback sockets — a 300 MiB upload hashed in bounded memory, 413 before the body, pauses
 * that stop the reading (and do not count as idleness), answers before the body, clients
 * that leave or stall mid-body, keep-alive and pipelining after a streamed body, a client's
 * copy of the internal marker, chunked uploads, and a shutdown under a paused stream.
 * LeakSanitizer checks that every path frees what it took.
 */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

#include "http_support.h"

#define WORKERS 2
#define IO_TIMEOUT_MS 1500
#define REQUEST_TIMEOUT_MS 2000
#define SMALL_MAX 1000
#define BIG_MAX (1024ULL * 1024 * 1024)
#define MARKER "X-Tagproof-Body-Stream"

#if defined(__SANITIZE_ADDRESS__)
/*
 * ASan keeps freed memory in quarantine, 256 MiB by default, which would count as resident
 * memory of the upload (its chunks are allocated and freed as they pass). A small quarantine
 * keeps the measurement about the module's own buffers; ASAN_OPTIONS can still override.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=4";
}
#endif

/* ---- SHA-256 (FIPS 180-4), small and slow, checked against known answers below ---- */

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t n;
};

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
    s->n = 0;
}

/* Hashing 300 MiB twice at -O0 would be most of this test's time. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("O2")))
#endif
static void
sha256_block(struct sha256 *s, const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++)
        w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7] +
               (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_update(struct sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->len += len;
    if (s->n > 0) {
        size_t take = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->buf + s->n, p, take);
        s->n += take;
        p += take;
        len -= take;
        if (s->n < 64)
            return;
        sha256_block(s, s->buf);
        s->n = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        sha256_block(s, p);
    memcpy(s->buf, p, len);
    s->n = len;
}

/* The digest as 64 lower-case hex digits. */
static void sha256_hex(struct sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->n < 56 ? 56 : 120) - s->n;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- the test body: a deterministic byte stream (xorshift64*), made in pieces ---- */

struct gen {
    uint64_t s;
};

static void gen_init(struct gen *g)
{
    g->s = 0x7461677072666f6fULL;
}

/* n bytes, a multiple of 8. */
static void gen_fill(struct gen *g, unsigned char *buf, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v;
        g->s ^= g->s >> 12;
        g->s ^= g->s << 25;
        g->s ^= g->s >> 27;
        v = g->s * 0x2545F4914F6CDD1DULL;
        for (int k = 0; k < 8; k++)
            buf[i + (size_t)k] = (unsigned char)(v >> (8 * k));
    }
}

/*
 * The digest of the stream's first n bytes (a multiple of 8). Values for 64 KiB, 1 MiB and
 * 300 MiB computed independently (the same generator piped into coreutils' sha256sum).
 */
static void gen_sha(uint64_t n, char out[65])
{
    static unsigned char buf[65536];
    struct gen g;
    struct sha256 s;
    gen_init(&g);
    sha256_init(&s);
    while (n > 0) {
        size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
        gen_fill(&g, buf, k);
        sha256_update(&s, buf, k);
        n -= k;
    }
    sha256_hex(&s, out);
}

#define SHA_64K "95a2afa720be5244163aa09af3c45df69c6a6382baa7652dd19322a025763f49"
#define SHA_1M "e7ffd88ba5708b68e0ca20459835681fd8565863c454fb8cccaa70a3d036e021"
#define SHA_300M "b466a5c60641d88f777479d49ca82df692f68691caba22c9711c0f169fd9ee84"

/* ---- the server ---- */

struct fixture {
    struct metrics *metrics;
    struct httpd *h;
    unsigned port;
    atomic_int handler_calls; /* streaming handlers entered */
    atomic_int ends_ok;       /* on_end(0) */
    atomic_int ends_failed;   /* on_end(-1) */
    atomic_int replies_gone;  /* replies made for a client already gone */
    atomic_int misuse;        /* a callback broke the module's contract */
};

/* One upload on a streaming route; what the query asked the handler to do with it. */
struct upload {
    struct fixture *f;
    struct http_req *req;
    struct sha256 sha;
    uint64_t bytes;
    long pause_ms;   /* pause after the first piece, for this long */
    long late_ms;    /* start reading only after this long */
    long stop_after; /* return -1 once this many bytes came */
    int paused, reading, ended;
    struct event *timer;
};

static long query_long(struct http_req *req, const char *name)
{
    const char *v = http_req_query(req, name);
    return v != NULL ? atol(v) : 0;
}

static void upload_free(struct upload *up)
{
    if (up->timer != NULL)
        event_free(up->timer);
    free(up);
}

static void reply_digest(struct http_req *req, struct sha256 *sha, uint64_t bytes)
{
    char hex[65];
    const char *cl = http_req_header(req, "Content-Length");
    const char *mark = http_req_header(req, MARKER);
    sha256_hex(sha, hex);
    http_reply_json(req, 200,
                    json_pack("{s:s, s:I, s:I, s:s*, s:s*}", "sha256", hex, "bytes",
                              (json_int_t)bytes, "length", (json_int_t)http_req_body_length(req),
                              "content_length", cl, "marker", mark));
}

static int up_data(struct http_req *req, const void *data, size_t len, void *arg)
{
    struct upload *up = arg;
    if (req != up->req || up->ended || len == 0 || up->paused)
        atomic_fetch_add(&up->f->misuse, 1);
    sha256_update(&up->sha, data, len);
    up->bytes += len;
    if (up->stop_after > 0 && up->bytes >= (uint64_t)up->stop_after)
        return -1;
    if (up->pause_ms > 0) {
        struct timeval tv = {.tv_sec = up->pause_ms / 1000,
                             .tv_usec = (up->pause_ms % 1000) * 1000};
        up->pause_ms = 0;
        up->paused = 1;
        evtimer_add(up->timer, &tv);
        return 1;
    }
    return 0;
}

static void up_end(struct http_req *req, int status, void *arg)
{
    struct upload *up = arg;
    struct fixture *f = up->f;
    if (req != up->req || up->ended || (status != 0 && status != -1))
        atomic_fetch_add(&f->misuse, 1);
    up->ended = 1;
    if (status == 0) {
        if (up->bytes != (uint64_t)http_req_body_length(req))
            atomic_fetch_add(&f->misuse, 1);
        atomic_fetch_add(&f->ends_ok, 1);
        reply_digest(req, &up->sha, up->bytes);
    } else {
        atomic_fetch_add(&f->ends_failed, 1);
        if (http_req_gone(req))
            atomic_fetch_add(&f->replies_gone, 1);
        http_reply_problem(req, up->stop_after > 0 ? 422 : 400, NULL, NULL, "upload cut short",
                           NULL);
    }
    upload_free(up);
}

static void up_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upload *up = arg;
    (void)fd;
    (void)what;
    if (!up->reading) {
        up->reading = 1;
        if (http_req_body_read(up->req, up_data, up_end, up) != 0)
            atomic_fetch_add(&up->f->misuse, 1);
    } else {
        up->paused = 0;
        http_req_body_resume(up->req);
    }
}

/*
 * POST /v1/hash (up to 1 GiB) and /v1/small (up to SMALL_MAX): answers the body's SHA-256.
 * ?early=1 answers 401 without reading; ?late_ms, ?pause_ms and ?stop_after as above.
 */
static void on_hash(struct http_req *req, void *arg)
{
    struct fixture *f = arg;
    struct upload *up = NULL;

    atomic_fetch_add(&f->handler_calls, 1);
    if (http_req_body_length(req) < 0)
        atomic_fetch_add(&f->misuse, 1);
    if (query_long(req, "early")) {
        http_reply_problem(req, 401, NULL, NULL, "no credentials", NULL);
        return;
    }
    up = calloc(1, sizeof(*up));
    up->f = f;
    up->req = req;
    sha256_init(&up->sha);
    up->pause_ms = query_long(req, "pause_ms");
    up->late_ms = query_long(req, "late_ms");
    up->stop_after = query_long(req, "stop_after");
    up->timer = evtimer_new(http_req_base(req), up_timer, up);
    if (up->late_ms > 0) {
        struct timeval tv = {.tv_sec = up->late_ms / 1000, .tv_usec = (up->late_ms % 1000) * 1000};
        evtimer_add(up->timer, &tv);
        return;
    }
    up->reading = 1;
    if (http_req_body_read(req, up_data, up_end, up) != 0 ||
        http_req_body_read(req, up_data, up_end, up) != -1) /* only once */
        atomic_fetch_add(&f->misuse, 1);
}

/* POST /v1/whole: an ordinary route on the same server gets its whole body. */
static void on_whole(struct http_req *req, void *arg)
{
    struct sha256 sha;
    size_t len = 0;
    const unsigned char *body = http_req_body(req, &len);
    (void)arg;
    if (http_req_body_read(req, up_data, up_end, NULL) != -1)
        atomic_fetch_add(&((struct fixture *)arg)->misuse, 1);
    sha256_init(&sha);
    sha256_update(&sha, body, len);
    reply_digest(req, &sha, len);
}

static void on_ping(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply(req, 200, "text/plain", "pong", 4);
}

static struct httpd *server_new(struct fixture *f)
{
    char *err = NULL;
    struct httpd_config cfg = {.host = "127.0.0.1",
                               .workers = WORKERS,
                               .max_body_size = 256 * 1024,
                               .io_timeout_ms = IO_TIMEOUT_MS,
                               .request_timeout_ms = REQUEST_TIMEOUT_MS,
                               .metrics = f->metrics};
    struct httpd *h = httpd_new(&cfg, &err);
    assert_non_null(h);
    assert_int_equal(
        httpd_route_stream(h, HTTP_POST, "/v1/hash", NULL, (size_t)BIG_MAX, on_hash, f), 0);
    assert_int_equal(httpd_route_stream(h, HTTP_PUT, "/v1/batches/{}/tags", "/v1/batches/{id}/tags",
                                        SMALL_MAX, on_hash, f),
                     0);
    assert_int_equal(httpd_route_stream(h, HTTP_POST, "/v1/small", NULL, SMALL_MAX, on_hash, f), 0);
    assert_int_equal(httpd_route(h, HTTP_POST, "/v1/whole", NULL, on_whole, f), 0);
    assert_int_equal(httpd_route(h, HTTP_GET, "/v1/ping", NULL, on_ping, f), 0);
    assert_int_equal(httpd_start(h, &err), 0);
    return h;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    log_init("test", LOG_WARN, 2);
    f->metrics = metrics_new();
    f->h = server_new(f);
    f->port = httpd_port(f->h);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    httpd_free(f->h);
    assert_int_equal(atomic_load(&f->misuse), 0);
    metrics_free(f->metrics);
    free(f);
    return 0;
}

/* ---- the client side ---- */

static int wait_for(atomic_int *v, int want, int timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    while (atomic_load(v) < want && ts_now_ms() < end)
        usleep(2 * 1000);
    return atomic_load(v) >= want;
}

/* Sends n bytes of the test stream (continuing g), in 64 KiB pieces. */
static int send_stream(int fd, struct gen *g, uint64_t n)
{
    static _Thread_local unsigned char buf[65536];
    while (n > 0) {
        size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
        gen_fill(g, buf, k);
        if (th_send(fd, buf, k) != 0)
            return -1;
        n -= k;
    }
    return 0;
}

static int send_str(int fd, const char *s)
{
    return th_send(fd, s, strlen(s));
}

/* Sends a header section for a streamed upload of n bytes of the test stream. */
static int send_head(int fd, const char *target, uint64_t n, const char *extra)
{
    char head[1024];
    snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %llu\r\n%s\r\n",
             target, (unsigned long long)n, extra != NULL ? extra : "");
    return send_str(fd, head);
}

/* Reads a response and checks it is a 200 with the digest of the stream's first n bytes. */
static void expect_digest(int fd, uint64_t n, const char *want_sha, int timeout_ms)
{
    struct th_resp r;
    char sha[65];
    json_t *j;

    if (want_sha == NULL) {
        gen_sha(n, sha);
        want_sha = sha;
    }
    assert_int_equal(th_read(fd, &r, 0, timeout_ms), 0);
    if (r.status != 200)
        fprintf(stderr, "unexpected answer: %s%s\n", r.head, r.body);
    assert_int_equal(r.status, 200);
    j = th_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "sha256")), want_sha);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), (json_int_t)n);
    json_decref(j);
    th_resp_free(&r);
}

/* The next response's status (and the response, for the caller to free). */
static int read_status(int fd, struct th_resp *r, int timeout_ms)
{
    if (th_read(fd, r, 0, timeout_ms) != 0)
        return -1;
    return r->status;
}

static void assert_ping(int fd)
{
    struct th_resp r;
    assert_int_equal(send_str(fd, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    assert_int_equal(read_status(fd, &r, 3000), 200);
    assert_string_equal(r.body, "pong");
    th_resp_free(&r);
}

static void assert_alive(unsigned port)
{
    int fd = th_connect(port);
    assert_true(fd >= 0);
    assert_ping(fd);
    close(fd);
}

/* ---- tests ---- */

static void test_sha256_known_answers(void **state)
{
    struct sha256 s;
    char hex[65];
    (void)state;
    /* FIPS 180-2, appendix B.1 and B.2. */
    sha256_init(&s);
    sha256_update(&s, "abc", 3);
    sha256_hex(&s, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_init(&s);
    sha256_update(&s, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56);
    sha256_hex(&s, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* The generator against sha256sum. */
    gen_sha(65536, hex);
    assert_string_equal(hex, SHA_64K);
    gen_sha(1024 * 1024, hex);
    assert_string_equal(hex, SHA_1M);
}

static long status_kib(const char *field)
{
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    FILE *fp = fopen("/proc/self/status", "r");
    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof(line), fp) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    fclose(fp);
    return v;
}

struct sender {
    int fd;
    uint64_t n;
    int rc;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    struct gen g;
    gen_init(&g);
    s->rc = send_stream(s->fd, &g, s->n);
    return NULL;
}

/* 300 MiB through a handler that hashes it, while the process's peak RSS barely moves. */
static void test_big_upload_bounded_memory(void **state)
{
    struct fixture *f = *state;
    const uint64_t n = 300ULL * 1024 * 1024;
    struct sender s = {.n = n};
    pthread_t t;
    long rss0, hwm;
    int64_t t0, ms;
    int fd;

    /* One streamed request first, so that what is allocated once (per thread, per
     * connection) is not counted. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    struct gen g;
    gen_init(&g);
    assert_int_equal(send_head(fd, "/v1/hash", 1024 * 1024, NULL), 0);
    assert_int_equal(send_stream(fd, &g, 1024 * 1024), 0);
    expect_digest(fd, 1024 * 1024, SHA_1M, 10000);

    /* The peak from here on (writing 5 to clear_refs resets VmHWM to the current RSS). */
    int cr = open("/proc/self/clear_refs", O_WRONLY);
    assert_true(cr >= 0);
    assert_int_equal(write(cr, "5", 1), 1);
    close(cr);
    rss0 = status_kib("VmRSS");

    t0 = ts_now_ms();
    assert_int_equal(send_head(fd, "/v1/hash", n, NULL), 0);
    s.fd = fd;
    assert_int_equal(pthread_create(&t, NULL, sender_main, &s), 0);
    expect_digest(fd, n, SHA_300M, 240000);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, 0);
    ms = ts_now_ms() - t0;
    hwm = status_kib("VmHWM");
    print_message("    300 MiB streamed and hashed in %lld ms (%.0f MiB/s); peak RSS grew by "
                  "%.1f MiB (from %.1f MiB)\n",
                  (long long)ms, 300.0 * 1000 / (double)(ms > 0 ? ms : 1),
                  (double)(hwm - rss0) / 1024, (double)rss0 / 1024);
    assert_true(hwm - rss0 < 30 * 1024);
    /* The connection is still good. */
    assert_ping(fd);
    close(fd);
}

/* A Content-Length over the route's limit is answered before any of the body is sent. */
static void test_too_large_before_body(void **state)
{
    struct fixture *f = *state;
    int calls = atomic_load(&f->handler_calls);
    struct th_resp r;
    json_t *j;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/small", SMALL_MAX + 1, NULL), 0);
    assert_int_equal(read_status(fd, &r, 2000), 413);
    j = th_json(&r);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 413);
    char *ct = th_header(&r, "Content-Type");
    assert_string_equal(ct, "application/problem+json");
    free(ct);
    json_decref(j);
    th_resp_free(&r);
    close(fd);

    /* The body, if sent after all, is discarded and the connection goes on. */
    struct gen g;
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/small", 4096, NULL), 0);
    assert_int_equal(read_status(fd, &r, 2000), 413);
    th_resp_free(&r);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 4096), 0);
    assert_ping(fd);
    close(fd);

    /* An absurd length too; and a limit on a route with a parameter. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 999999999999999999ULL, NULL), 0);
    assert_int_equal(read_status(fd, &r, 2000), 413);
    th_resp_free(&r);
    close(fd);
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_str(fd, "PUT /v1/batches/b1/tags HTTP/1.1\r\nHost: t\r\n"
                                  "Content-Length: 5000\r\n\r\n"),
                     0);
    assert_int_equal(read_status(fd, &r, 2000), 413);
    th_resp_free(&r);
    close(fd);

    /* A client waiting for "100 Continue" is not told to go on: 413 and the connection is
     * closed, as it will not send the body. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/small", 5000, "Expect: 100-continue\r\n"), 0);
    assert_int_equal(read_status(fd, &r, 2000), 413);
    char *conn = th_header(&r, "Connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    free(conn);
    th_resp_free(&r);
    assert_true(th_closed_within(fd, 2000));
    close(fd);

    assert_int_equal(atomic_load(&f->handler_calls), calls); /* no handler saw any of them */
    assert_alive(f->port);
}

/* "Expect: 100-continue" is answered when the handler starts reading. */
static void test_expect_continue(void **state)
{
    struct fixture *f = *state;
    char line[64];
    struct gen g;
    size_t got = 0;
    int fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 65536, "Expect: 100-continue\r\n"), 0);
    while (got < 25) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 2000), 1);
        ssize_t k = recv(fd, line + got, 25 - got, 0);
        assert_true(k > 0);
        got += (size_t)k;
    }
    line[got] = '\0';
    assert_string_equal(line, "HTTP/1.1 100 Continue\r\n\r\n");
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 65536), 0);
    expect_digest(fd, 65536, SHA_64K, 5000);
    close(fd);
}

/* Nothing is read while the handler has not started or has paused; a pause longer than
 * both timeouts does not end the connection; every byte arrives in the end. */
static void test_backpressure(void **state)
{
    struct fixture *f = *state;
    const uint64_t n = 32ULL * 1024 * 1024;
    const long pause_ms = 2500; /* > IO_TIMEOUT_MS and > REQUEST_TIMEOUT_MS */
    static unsigned char buf[65536];
    uint64_t sent = 0, at_stall = 0;
    int64_t t0, last_progress, stalled_at = -1;
    int sndbuf = 64 * 1024, fd;
    char target[64];
    struct gen g;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    }
    snprintf(target, sizeof(target), "/v1/hash?pause_ms=%ld", pause_ms);
    assert_int_equal(send_head(fd, target, n, NULL), 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    /* Send without blocking until the server stops taking bytes for 400 ms. */
    gen_init(&g);
    t0 = last_progress = ts_now_ms();
    size_t off = sizeof(buf), len = sizeof(buf);
    while (sent < n && stalled_at < 0) {
        if (off == len) {
            len = n - sent < sizeof(buf) ? (size_t)(n - sent) : sizeof(buf);
            gen_fill(&g, buf, len);
            off = 0;
        }
        ssize_t k = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
            sent += (uint64_t)k;
            last_progress = ts_now_ms();
        } else {
            assert_true(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            if (ts_now_ms() - last_progress >= 400) {
                stalled_at = ts_now_ms();
                at_stall = sent;
            }
            usleep(5 * 1000);
        }
    }
    assert_true(stalled_at > 0);
    /* It stalled while the handler was paused, well before all was sent. */
    assert_true(stalled_at - t0 < pause_ms);
    print_message("    the client could send %.1f MiB of %.0f before the paused server stopped "
                  "taking more\n",
                  (double)at_stall / (1024 * 1024), (double)n / (1024 * 1024));
    assert_true(at_stall < n / 2);

    /* Then the rest, blocking: the server resumes after the pause. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    assert_int_equal(th_send(fd, buf + off, len - off), 0);
    sent += len - off;
    assert_int_equal(send_stream(fd, &g, n - sent), 0);
    expect_digest(fd, n, NULL, 60000);
    assert_true(ts_now_ms() - t0 >= pause_ms);
    close(fd);

    /* A handler that starts reading late: the body waits for it, the connection too. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?late_ms=2500", 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 1024 * 1024), 0);
    expect_digest(fd, 1024 * 1024, SHA_1M, 10000);
    close(fd);
}

/* Answering before reading: the answer comes at once, the rest is discarded, the connection
 * goes on. */
static void test_early_reply(void **state)
{
    struct fixture *f = *state;
    const uint64_t n = 8 * 1024 * 1024;
    struct th_resp r;
    struct gen g;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?early=1", n, NULL), 0);
    assert_int_equal(read_status(fd, &r, 2000), 401);
    th_resp_free(&r);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, n), 0);
    assert_ping(fd);
    close(fd);

    /* Stopping midway (on_data returns -1): on_end(-1), the handler answers 422. */
    int failed = atomic_load(&f->ends_failed);
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?stop_after=65536", n, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, n), 0);
    assert_int_equal(read_status(fd, &r, 5000), 422);
    th_resp_free(&r);
    assert_ping(fd);
    close(fd);
    assert_true(wait_for(&f->ends_failed, failed + 1, 2000));

    /* Early, for a client waiting on "100 Continue": the connection is closed. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?early=1", n, "Expect: 100-continue\r\n"), 0);
    assert_int_equal(read_status(fd, &r, 2000), 401);
    char *conn = th_header(&r, "Connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    free(conn);
    th_resp_free(&r);
    assert_true(th_closed_within(fd, 2000));
    close(fd);

    /* Discarding after an early answer is bounded by the request timeout, also for a client
     * that trickles the body faster than the io timeout would notice. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?early=1", n, NULL), 0);
    assert_int_equal(read_status(fd, &r, 2000), 401);
    th_resp_free(&r);
    int64_t t0 = ts_now_ms(), closed_after = -1;
    while (ts_now_ms() - t0 < REQUEST_TIMEOUT_MS + 3000) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1 || th_closed_within(fd, IO_TIMEOUT_MS / 3)) {
            closed_after = ts_now_ms() - t0;
            break;
        }
    }
    assert_true(closed_after >= REQUEST_TIMEOUT_MS - 200);
    close(fd);

    /* An early answer to a client that sends the body anyway and then goes away. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?early=1", n, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, n / 2), 0);
    close(fd);
    assert_alive(f->port);
}

/* A client that leaves mid-body: on_end(-1), and the answer is only freed. */
static void test_client_leaves(void **state)
{
    struct fixture *f = *state;
    int failed = atomic_load(&f->ends_failed), gone = atomic_load(&f->replies_gone);
    struct gen g;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 4 * 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 1024 * 1024), 0);
    close(fd);
    assert_true(wait_for(&f->ends_failed, failed + 1, 3000));
    assert_true(wait_for(&f->replies_gone, gone + 1, 1000));

    /* ...also while the handler has paused the stream: noticed when it resumes. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?pause_ms=700", 4 * 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 1024 * 1024), 0);
    usleep(100 * 1000);
    close(fd);
    assert_true(wait_for(&f->ends_failed, failed + 2, 3000));

    /* ...and before the handler started reading. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?late_ms=300", 4 * 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 64 * 1024), 0);
    close(fd);
    assert_true(wait_for(&f->ends_failed, failed + 3, 3000));
    assert_alive(f->port);
}

/* A client that stops sending mid-body is cut off by the io timeout, and the handler told. */
static void test_client_stalls(void **state)
{
    struct fixture *f = *state;
    int failed = atomic_load(&f->ends_failed);
    struct gen g;
    int64_t t0;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 100 * 1024), 0);
    t0 = ts_now_ms();
    assert_true(th_closed_within(fd, IO_TIMEOUT_MS + 2000));
    assert_true(ts_now_ms() - t0 >= IO_TIMEOUT_MS - 100);
    close(fd);
    assert_true(wait_for(&f->ends_failed, failed + 1, 1000));
    assert_alive(f->port);
}

/* Keep-alive and pipelining around streamed bodies. */
static void test_keepalive_pipelining(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    struct gen g;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(send_head(fd, "/v1/hash", 65536, NULL), 0);
        gen_init(&g);
        assert_int_equal(send_stream(fd, &g, 65536), 0);
        expect_digest(fd, 65536, SHA_64K, 5000);
        assert_ping(fd);
    }
    /* An empty streamed body. */
    assert_int_equal(send_head(fd, "/v1/hash", 0, NULL), 0);
    expect_digest(fd, 0, NULL, 5000);
    close(fd);

    /* Three requests in one write: a streamed body, a GET, another streamed body. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    {
        size_t cap = 2 * 65536 + 1024, len = 0;
        unsigned char *all = malloc(cap);
        len += (size_t)sprintf(
            (char *)all, "POST /v1/hash HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n");
        gen_init(&g);
        gen_fill(&g, all + len, 65536);
        len += 65536;
        len += (size_t)sprintf((char *)all + len, "GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n"
                                                  "POST /v1/small HTTP/1.1\r\nHost: t\r\n"
                                                  "Content-Length: 8\r\n\r\n");
        gen_init(&g);
        gen_fill(&g, all + len, 8);
        len += 8;
        assert_int_equal(th_send(fd, all, len), 0);
        free(all);
    }
    expect_digest(fd, 65536, SHA_64K, 5000);
    assert_int_equal(read_status(fd, &r, 3000), 200);
    assert_string_equal(r.body, "pong");
    th_resp_free(&r);
    expect_digest(fd, 8, NULL, 5000);
    close(fd);

    /* The header section trickling in, a byte at a time. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    {
        const char *head = "POST /v1/small HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n";
        unsigned char body[16];
        for (const char *p = head; *p != '\0'; p++) {
            assert_int_equal(th_send(fd, p, 1), 0);
            usleep(500);
        }
        gen_init(&g);
        gen_fill(&g, body, 16);
        assert_int_equal(th_send(fd, body, 16), 0);
    }
    expect_digest(fd, 16, NULL, 5000);
    close(fd);
}

/* The header the module marks rewritten requests with is not believed from a client. */
static void test_marker_not_trusted(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    struct gen g;
    json_t *j;
    int fd;

    /* On a streaming route, before and after the real Content-Length; "1" is what the
     * module would use for the first request of a connection. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 65536, MARKER ": 1\r\n"), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 65536), 0);
    assert_int_equal(read_status(fd, &r, 5000), 200);
    j = th_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "sha256")), SHA_64K);
    assert_null(json_object_get(j, "marker"));
    assert_string_equal(json_string_value(json_object_get(j, "content_length")), "65536");
    assert_int_equal(json_integer_value(json_object_get(j, "length")), 65536);
    json_decref(j);
    th_resp_free(&r);
    assert_int_equal(send_str(fd, "POST /v1/hash HTTP/1.1\r\nHost: t\r\n" MARKER ": 2\r\n"
                                  "Content-Length: 8\r\n" MARKER ": 2\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 8), 0);
    expect_digest(fd, 8, NULL, 5000);

    /* On an ordinary route: the whole body, no marker, no stream. */
    assert_int_equal(send_str(fd, "POST /v1/whole HTTP/1.1\r\nHost: t\r\n" MARKER ": 3\r\n"
                                  "Content-Length: 65536\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 65536), 0);
    assert_int_equal(read_status(fd, &r, 5000), 200);
    j = th_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "sha256")), SHA_64K);
    assert_null(json_object_get(j, "marker"));
    assert_int_equal(json_integer_value(json_object_get(j, "length")), -1);
    json_decref(j);
    th_resp_free(&r);

    /* A header section the module leaves to evhttp (a repeated Content-Length, a folded
     * line) with a marker that would match: evhttp reads the body itself, the handler still
     * gets it through the stream interface, and the marker is not believed. */
    assert_int_equal(send_str(fd, "POST /v1/hash HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\n"
                                  "Content-Length: 64\r\n" MARKER ": 4\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 64), 0);
    assert_int_equal(read_status(fd, &r, 5000), 200);
    j = th_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 64);
    assert_null(json_object_get(j, "marker"));
    json_decref(j);
    th_resp_free(&r);
    assert_int_equal(send_str(fd, "POST /v1/hash HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n"
                                  "Content-Length: 8\r\n" MARKER ": 5\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 8), 0);
    expect_digest(fd, 8, NULL, 5000);
    /* ...and over the route's limit that way: 413 after evhttp read it. */
    assert_int_equal(send_str(fd, "POST /v1/small HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n"
                                  "Content-Length: 2048\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 2048), 0);
    assert_int_equal(read_status(fd, &r, 5000), 413);
    th_resp_free(&r);
    assert_ping(fd);
    close(fd);
}

/* Ordinary routes on the same server still get their bodies whole, under max_body_size. */
static void test_whole_bodies(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    struct gen g;
    int fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_str(fd, "POST /v1/whole HTTP/1.1\r\nHost: t\r\n"
                                  "Content-Length: 1048576\r\n\r\n"),
                     0);
    gen_init(&g);
    send_stream(fd, &g, 1024 * 1024); /* evhttp answers 413 after reading it */
    assert_int_equal(read_status(fd, &r, 5000), 413);
    th_resp_free(&r);
    close(fd);

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_str(fd, "POST /v1/whole HTTP/1.1\r\nHost: t\r\n"
                                  "Content-Length: 65536\r\n\r\n"),
                     0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 65536), 0);
    expect_digest(fd, 65536, SHA_64K, 5000);
    /* Chunked, on an ordinary route: evhttp decodes it. */
    assert_int_equal(send_str(fd, "POST /v1/whole HTTP/1.1\r\nHost: t\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "3\r\nabc\r\n0\r\n\r\n"),
                     0);
    assert_int_equal(read_status(fd, &r, 5000), 200);
    th_resp_free(&r);
    assert_ping(fd);
    close(fd);
}

/* Transfer-Encoding on a streaming route: 411, and the connection is closed. */
static void test_chunked_refused(void **state)
{
    struct fixture *f = *state;
    int calls = atomic_load(&f->handler_calls);
    struct th_resp r;
    json_t *j;
    int fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_str(fd, "POST /v1/hash HTTP/1.1\r\nHost: t\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "3\r\nabc\r\n0\r\n\r\n"),
                     0);
    assert_int_equal(read_status(fd, &r, 3000), 411);
    j = th_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 411);
    json_decref(j);
    char *conn = th_header(&r, "Connection");
    assert_string_equal(conn, "close");
    free(conn);
    th_resp_free(&r);
    assert_true(th_closed_within(fd, 2000));
    close(fd);
    assert_int_equal(atomic_load(&f->handler_calls), calls);

    /* An expectation other than 100-continue: 417. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash", 8, "Expect: something-else\r\n"), 0);
    assert_int_equal(read_status(fd, &r, 3000), 417);
    th_resp_free(&r);
    close(fd);
    assert_alive(f->port);
}

/* The server's limits still hold on streaming routes. */
static void test_limits(void **state)
{
    struct fixture *f = *state;
    struct th_resp r;
    struct gen g;
    char *raw = malloc(80 * 1024);
    int fd, off;

    /* Header fields over max_header_size (8 KiB): 431, the announced body discarded. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    off = sprintf(raw, "POST /v1/hash HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\nX-Big: ");
    memset(raw + off, 'a', 12 * 1024);
    strcpy(raw + off + 12 * 1024, "\r\n\r\n");
    assert_int_equal(send_str(fd, raw), 0);
    assert_int_equal(read_status(fd, &r, 3000), 431);
    th_resp_free(&r);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 64), 0);
    assert_ping(fd);
    close(fd);

    /* Over evhttp's own limit: its 400, and the connection closed. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    off = sprintf(raw, "POST /v1/hash HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\nX-Big: ");
    memset(raw + off, 'a', 72 * 1024);
    strcpy(raw + off + 72 * 1024, "\r\n\r\n");
    th_send(fd, raw, strlen(raw));
    if (th_read(fd, &r, 0, 3000) == 0) {
        assert_int_equal(r.status, 400);
        th_resp_free(&r);
    }
    assert_true(th_closed_within(fd, 2000));
    close(fd);
    free(raw);

    /* A header section that never completes is cut by the request timeout. */
    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_str(fd, "POST /v1/hash HTTP/1.1\r\nHost: t\r\n"), 0);
    assert_true(th_closed_within(fd, REQUEST_TIMEOUT_MS + 2000));
    close(fd);
    assert_alive(f->port);
}

/* A shutdown under a paused stream: on_end(-1), the handler's answer is freed, nothing leaks. */
static void test_shutdown_paused(void **state)
{
    struct fixture *f = *state;
    int failed = atomic_load(&f->ends_failed), calls = atomic_load(&f->handler_calls);
    struct gen g;
    int fd;

    fd = th_connect(f->port);
    assert_true(fd >= 0);
    assert_int_equal(send_head(fd, "/v1/hash?pause_ms=60000", 4 * 1024 * 1024, NULL), 0);
    gen_init(&g);
    assert_int_equal(send_stream(fd, &g, 1024 * 1024), 0);
    assert_true(wait_for(&f->handler_calls, calls + 1, 2000));
    usleep(200 * 1000);
    httpd_shutdown(f->h, 0);
    assert_int_equal(atomic_load(&f->ends_failed), failed + 1);
    assert_true(th_closed_within(fd, 2000));
    close(fd);
    /* A fresh server for the tests that follow. */
    httpd_free(f->h);
    f->h = server_new(f);
    f->port = httpd_port(f->h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_big_upload_bounded_memory),
        cmocka_unit_test(test_too_large_before_body),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_early_reply),
        cmocka_unit_test(test_client_leaves),
        cmocka_unit_test(test_client_stalls),
        cmocka_unit_test(test_keepalive_pipelining),
        cmocka_unit_test(test_marker_not_trusted),
        cmocka_unit_test(test_whole_bodies),
        cmocka_unit_test(test_chunked_refused),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_shutdown_paused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
