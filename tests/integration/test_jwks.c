/*
 * test_jwks: the live key set against a real loopback HTTP server (a small one in this file,
 * so that each test controls status, body, delay and redirects and counts the fetches) and
 * against files: URL policy, fetch and verify, refetch on an unknown kid at most once per
 * min_refetch_s, waiting on an event loop that keeps running during a slow fetch, failing
 * closed (bad answers keep the cached keys, stale keys are dropped), no redirects, pinned
 * keys that fetched ones cannot displace, cancelled waits, and a prompt shutdown.
 */
#include "support.h"
#include "jwks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "log.h"

static const struct jwt_policy policy = {.issuer = "https://issuer.tagproof.test",
                                         .audience = "tagproof-factory-api"};

/* ---------------------------------------------------------------------------------------- */
/* A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1                                  */

struct srv {
    int fd;
    unsigned port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    int status;
    char *body;
    char *extra; /* more header lines, each ending in \r\n */
    int delay_ms;
    int hits;
};

static void srv_serve(struct srv *s, int c)
{
    char req[4096];
    size_t got = 0;
    while (got < sizeof(req) - 1) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 500) <= 0)
            return;
        ssize_t n = read(c, req + got, sizeof(req) - 1 - got);
        if (n <= 0)
            return;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    pthread_mutex_lock(&s->mu);
    s->hits++;
    int status = s->status, delay = s->delay_ms;
    char *body = strdup(s->body != NULL ? s->body : "");
    char *extra = strdup(s->extra != NULL ? s->extra : "");
    pthread_mutex_unlock(&s->mu);
    for (int waited = 0; waited < delay && !atomic_load(&s->stop); waited += 10)
        usleep(10 * 1000);
    char *resp = NULL;
    int len = asprintf(&resp,
                       "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n%s\r\n%s",
                       status, strlen(body), extra, body);
    for (int off = 0; len > 0 && off < len;) {
        ssize_t n = send(c, resp + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (int)n;
    }
    free(resp);
    free(body);
    free(extra);
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        srv_serve(s, c);
        close(c);
    }
    return NULL;
}

static struct srv *srv_start(void)
{
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    s->status = 404;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->stop, 0);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return s;
}

static void srv_set(struct srv *s, int status, const char *body, const char *extra, int delay_ms)
{
    pthread_mutex_lock(&s->mu);
    free(s->body);
    free(s->extra);
    s->status = status;
    s->body = body != NULL ? strdup(body) : NULL;
    s->extra = extra != NULL ? strdup(extra) : NULL;
    s->delay_ms = delay_ms;
    pthread_mutex_unlock(&s->mu);
}

static int srv_hits(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->hits;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void srv_stop(struct srv *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
    free(s->body);
    free(s->extra);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static char *srv_url(struct srv *s)
{
    char *u = NULL;
    assert_true(asprintf(&u, "http://127.0.0.1:%u/.well-known/jwks.json", s->port) > 0);
    return u;
}

/* ---------------------------------------------------------------------------------------- */
/* Keys and tokens                                                                           */

struct keys {
    char *dir;
    struct jwt_signer *a, *b, *c, *rsa;
    char *jwks_a, *jwks_ab, *jwks_rsa;
};

static struct jwt_signer *signer(const char *dir, const char *name, enum jwt_alg alg)
{
    char path[512], err[256];
    snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
    struct jwt_signer *s = jwt_signer_load_or_create(path, alg, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s", err);
    return s;
}

/* {"keys":[...]} holding the keys of the given signers. */
static char *jwks_of(struct jwt_signer *x, struct jwt_signer *y)
{
    char *a = jwt_signer_jwks_json(x);
    json_t *doc = json_loads(a, 0, NULL);
    free(a);
    if (y != NULL) {
        char *b = jwt_signer_jwks_json(y);
        json_t *other = json_loads(b, 0, NULL);
        json_array_extend(json_object_get(doc, "keys"), json_object_get(other, "keys"));
        json_decref(other);
        free(b);
    }
    char *out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return out;
}

static int keys_setup(void **state)
{
    struct keys *k = calloc(1, sizeof(*k));
    k->dir = ts_tempdir("tp-jwks");
    k->a = signer(k->dir, "a", JWT_ALG_ES256);
    k->b = signer(k->dir, "b", JWT_ALG_ES256);
    k->c = signer(k->dir, "c", JWT_ALG_ES256);
    k->rsa = signer(k->dir, "rsa", JWT_ALG_RS256);
    k->jwks_a = jwks_of(k->a, NULL);
    k->jwks_ab = jwks_of(k->a, k->b);
    k->jwks_rsa = jwks_of(k->rsa, NULL);
    *state = k;
    return 0;
}

static int keys_teardown(void **state)
{
    struct keys *k = *state;
    jwt_signer_free(k->a);
    jwt_signer_free(k->b);
    jwt_signer_free(k->c);
    jwt_signer_free(k->rsa);
    free(k->jwks_a);
    free(k->jwks_ab);
    free(k->jwks_rsa);
    ts_rmdir(k->dir);
    free(k->dir);
    free(k);
    return 0;
}

static char *token(struct jwt_signer *s)
{
    int64_t now = time(NULL);
    struct jwt_claims c = {.role = JWT_ROLE_ADMIN, .iat = now, .exp = now + 600};
    char err[256];
    snprintf(c.sub, sizeof(c.sub), "admin-1");
    char *t = jwt_sign(s, &policy, &c, err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    return t;
}

static enum jwt_result verify(struct jwks *j, const char *t, uint64_t *gen)
{
    struct jwt_claims c;
    return jwks_verify(j, &policy, t, strlen(t), time(NULL), &c, NULL, gen);
}

static struct jwks *jwks_url(const char *url, unsigned min_refetch_s, unsigned max_stale_s)
{
    char err[256];
    struct jwks_config cfg = {
        .url = url, .min_refetch_s = min_refetch_s, .max_stale_s = max_stale_s, .timeout_ms = 3000};
    struct jwks *j = jwks_new(&cfg, err, sizeof(err));
    if (j == NULL)
        fail_msg("jwks_new: %s", err);
    assert_int_equal(jwks_start(j, err, sizeof(err)), 0);
    return j;
}

/* Runs a fresh loop until the wait's callback ran or timeout_ms passed; 1 if it ran. */
struct waiter {
    struct event_base *base;
    int fired;
    int64_t fired_ms;
    int ticks;
};

static void on_wait_done(void *arg)
{
    struct waiter *w = arg;
    w->fired = 1;
    w->fired_ms = ts_now_ms();
    event_base_loopbreak(w->base);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ((struct waiter *)arg)->ticks++;
}

static int wait_refresh(struct jwks *j, uint64_t gen, int timeout_ms, struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    w->base = event_base_new();
    struct event *tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval ten_ms = {0, 10 * 1000}, limit = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    event_add(tick, &ten_ms);
    struct jwks_wait *h = jwks_refresh_wait(j, gen, w->base, on_wait_done, w);
    if (h == NULL) {
        event_free(tick);
        event_base_free(w->base);
        return -1;
    }
    event_base_loopexit(w->base, &limit);
    event_base_dispatch(w->base);
    if (!w->fired)
        jwks_wait_cancel(h);
    event_free(tick);
    event_base_free(w->base);
    return w->fired;
}

/* ---------------------------------------------------------------------------------------- */

static void test_url_policy(void **state)
{
    (void)state;
    char err[256];
    const char *ok[] = {"https://issuer.example/.well-known/jwks.json",
                        "http://127.0.0.1:1/x",
                        "http://127.9.8.7/jwks",
                        "http://[::1]:8080/jwks",
                        "http://localhost:9/x",
                        "HTTP://LOCALHOST/x"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct jwks_config cfg = {.url = ok[i]};
        struct jwks *j = jwks_new(&cfg, err, sizeof(err));
        if (j == NULL)
            fail_msg("%s refused: %s", ok[i], err);
        jwks_free(j);
    }
    const char *bad[] = {"http://issuer.example/jwks",
                         "http://10.0.0.1/jwks",
                         "http://127.0.0.1.nip.io/jwks",
                         "http://localhost.attacker.example/jwks",
                         "http://[::ffff:10.0.0.1]/jwks",
                         "ftp://127.0.0.1/jwks",
                         "file:///etc/passwd",
                         "gopher://127.0.0.1/",
                         "not a url"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct jwks_config cfg = {.url = bad[i]};
        err[0] = '\0';
        struct jwks *j = jwks_new(&cfg, err, sizeof(err));
        if (j != NULL)
            fail_msg("%s accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    struct jwks_config both = {.url = ok[0], .file = "/dev/null"};
    assert_null(jwks_new(&both, err, sizeof(err)));
}

static void test_fetch_and_verify(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_rsa, NULL, 0);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 0, 0);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    char *t = token(k->rsa);
    assert_int_equal(verify(j, t, NULL), JWT_OK);
    char *other = token(k->a);
    assert_int_equal(verify(j, other, NULL), JWT_UNKNOWN_KEY);
    struct jwks_stats st;
    jwks_get_stats(j, &st);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.failures, 0);
    assert_true(st.age_s >= 0 && st.age_s < 5);
    assert_int_equal(srv_hits(s), 1);
    free(other);
    free(t);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* The default policy: however many unknown kids arrive, one fetch per 30 s. */
static void test_unknown_kid_rate_limit_default(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 0);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 0, 0);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    srv_set(s, 200, k->jwks_ab, NULL, 0);
    char *tb = token(k->b);
    uint64_t gen = 0;
    for (int i = 0; i < 50; i++)
        assert_int_equal(verify(j, tb, &gen), JWT_UNKNOWN_KEY);
    struct waiter w;
    assert_int_equal(wait_refresh(j, gen, 1000, &w), -1); /* no fetch will happen */
    usleep(300 * 1000);
    assert_int_equal(srv_hits(s), 1);
    free(tb);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* Key rotation: a token with a new kid waits on its loop for the refetch, then verifies. */
static void test_unknown_kid_refetch_and_wait(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 0);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 1, 0);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    char *ta = token(k->a), *tb = token(k->b), *tc = token(k->c);
    assert_int_equal(verify(j, ta, NULL), JWT_OK);

    srv_set(s, 200, k->jwks_ab, NULL, 0); /* the issuer rotates */
    usleep(1100 * 1000);                  /* past min_refetch_s */
    uint64_t gen = 0;
    assert_int_equal(verify(j, tb, &gen), JWT_UNKNOWN_KEY);
    struct waiter w;
    assert_int_equal(wait_refresh(j, gen, 5000, &w), 1);
    assert_int_equal(verify(j, tb, &gen), JWT_OK);
    assert_int_equal(verify(j, ta, NULL), JWT_OK);
    assert_int_equal(srv_hits(s), 2);

    /* Another unknown kid right away: no fetch within min_refetch_s. */
    assert_int_equal(verify(j, tc, &gen), JWT_UNKNOWN_KEY);
    assert_int_equal(wait_refresh(j, gen, 1000, &w), -1);
    assert_int_equal(srv_hits(s), 2);
    /* Later it may fetch again; the kid is still unknown and the answer stands. */
    usleep(1100 * 1000);
    assert_int_equal(verify(j, tc, &gen), JWT_UNKNOWN_KEY);
    assert_int_equal(wait_refresh(j, gen, 5000, &w), 1);
    assert_int_equal(verify(j, tc, &gen), JWT_UNKNOWN_KEY);
    assert_int_equal(srv_hits(s), 3);

    /* A wait against an outdated generation fires at once, without a fetch. */
    assert_int_equal(wait_refresh(j, gen - 1, 1000, &w), 1);
    assert_int_equal(srv_hits(s), 3);
    free(ta);
    free(tb);
    free(tc);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* A slow issuer: the loop keeps running, snapshots stay instant, the wait fires at the end. */
static void test_slow_fetch_does_not_block(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 1500);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 0, 0);
    char *ta = token(k->a);
    int64_t t0 = ts_now_ms();
    /* The first fetch is under way: verification answers at once, without keys. */
    uint64_t gen = 0;
    int64_t worst = 0;
    for (int i = 0; i < 20; i++) {
        int64_t a = ts_now_ms();
        assert_int_equal(verify(j, ta, &gen), JWT_UNKNOWN_KEY);
        if (ts_now_ms() - a > worst)
            worst = ts_now_ms() - a;
    }
    assert_true(worst < 50);
    struct waiter w;
    assert_int_equal(wait_refresh(j, gen, 5000, &w), 1);
    int64_t waited = w.fired_ms - t0;
    printf("# wait fired after %lld ms; the loop ticked %d times meanwhile; worst verify %lld ms\n",
           (long long)waited, w.ticks, (long long)worst);
    assert_true(waited >= 1300);
    assert_true(w.ticks >= 50); /* 10 ms ticks kept coming during the fetch */
    assert_int_equal(verify(j, ta, NULL), JWT_OK);
    free(ta);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/*
 * Drives refetches (unknown kids, as traffic would) until the server has been asked at least
 * once more and every fetch it answered has been taken in; the thread also retries failures
 * on its own after min_refetch_s, so the count of fetches is not exact.
 */
static void refetch_settled(struct jwks *j, struct srv *s, const char *unknown)
{
    int h0 = srv_hits(s);
    int64_t end = ts_now_ms() + 8000;
    for (;;) {
        struct jwks_stats st;
        jwks_get_stats(j, &st);
        int hits = srv_hits(s);
        if (hits > h0 && st.fetches >= (uint64_t)hits)
            return;
        if (ts_now_ms() > end)
            fail_msg("no refetch: hits %d -> %d, fetches %llu", h0, hits,
                     (unsigned long long)st.fetches);
        uint64_t gen = 0;
        struct waiter w;
        assert_int_equal(verify(j, unknown, &gen), JWT_UNKNOWN_KEY);
        if (wait_refresh(j, gen, 5000, &w) < 0)
            usleep(100 * 1000);
    }
}

/* An initial failure leaves no keys; bad answers later keep the cached ones. */
static void test_fail_closed(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 500, "{}", NULL, 0);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 1, 0);
    char *ta = token(k->a), *tb = token(k->b);
    assert_int_equal(jwks_wait_ready(j, 5000), -1);
    assert_int_equal(verify(j, ta, NULL), JWT_UNKNOWN_KEY);

    /* The issuer recovers: the retry or the next unknown kid fetches. */
    srv_set(s, 200, k->jwks_a, NULL, 0);
    refetch_settled(j, s, tb);
    assert_int_equal(verify(j, ta, NULL), JWT_OK);

    /* Each of these answers fails the fetch and changes nothing. */
    static char big[300 * 1024];
    memset(big, ' ', sizeof(big) - 1);
    memcpy(big, "{\"keys\":[]}", 11);
    struct {
        int status;
        const char *body, *extra;
    } bad[] = {
        {503, k->jwks_ab, NULL},
        {200, "not json", NULL},
        {200, "{\"keys\":[],\"keys\":[]}", NULL},
        {200,
         "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\",\"d\":\"AA\"}]}",
         NULL},
        {200, big, NULL},
        {302, "", "Location: http://127.0.0.1:1/other\r\n"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        srv_set(s, bad[i].status, bad[i].body, bad[i].extra, 0);
        refetch_settled(j, s, tb);
        assert_int_equal(verify(j, ta, NULL), JWT_OK); /* cached keys still in use */
        assert_int_equal(verify(j, tb, NULL), JWT_UNKNOWN_KEY);
    }
    struct jwks_stats st;
    jwks_get_stats(j, &st);
    assert_true(st.failures >= 1 + sizeof(bad) / sizeof(bad[0]));
    assert_int_equal(st.keys, 1);
    free(ta);
    free(tb);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* Keys that no successful fetch has confirmed for max_stale_s are dropped. */
static void test_stale_keys_dropped(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 0);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 1, 2);
    char *ta = token(k->a), *tb = token(k->b);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    assert_int_equal(verify(j, ta, NULL), JWT_OK);
    srv_set(s, 500, "", NULL, 0);
    int64_t t0 = ts_now_ms();
    while (verify(j, ta, NULL) == JWT_OK && ts_now_ms() - t0 < 8000)
        refetch_settled(j, s, tb);
    int64_t took = ts_now_ms() - t0;
    printf("# keys dropped %lld ms after the issuer failed (max_stale_s 2)\n", (long long)took);
    assert_int_equal(verify(j, ta, NULL), JWT_UNKNOWN_KEY);
    assert_true(took >= 1900);
    struct jwks_stats st;
    jwks_get_stats(j, &st);
    assert_int_equal(st.keys, 0);
    free(ta);
    free(tb);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* A redirect is not followed, even to a loopback server with good keys. */
static void test_no_redirects(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start(), *target = srv_start();
    srv_set(target, 200, k->jwks_a, NULL, 0);
    char *target_url = srv_url(target), *location = NULL, *url = srv_url(s);
    assert_true(asprintf(&location, "Location: %s\r\n", target_url) > 0);
    srv_set(s, 302, "", location, 0);
    struct jwks *j = jwks_url(url, 0, 0);
    assert_int_equal(jwks_wait_ready(j, 5000), -1);
    assert_int_equal(srv_hits(target), 0);
    jwks_free(j);

    /* https to a server that speaks plain HTTP: the TLS handshake fails, nothing loads. */
    char *https = NULL;
    assert_true(asprintf(&https, "https://127.0.0.1:%u/jwks", target->port) > 0);
    j = jwks_url(https, 0, 0);
    assert_int_equal(jwks_wait_ready(j, 5000), -1);
    jwks_free(j);
    free(https);
    free(location);
    free(target_url);
    free(url);
    srv_stop(s);
    srv_stop(target);
}

static void write_file(const char *path, const char *text)
{
    char tmp[4200];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_true(n > 0 && (size_t)n < sizeof(tmp));
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

static void test_file_source(void **state)
{
    struct keys *k = *state;
    char path[600], err[256];
    snprintf(path, sizeof(path), "%s/jwks.json", k->dir);
    write_file(path, k->jwks_a);
    struct jwks_config cfg = {.file = path, .min_refetch_s = 1};
    struct jwks *j = jwks_new(&cfg, err, sizeof(err));
    assert_non_null(j);
    char *ta = token(k->a), *tb = token(k->b);
    assert_int_equal(verify(j, ta, NULL), JWT_OK); /* loaded by jwks_new */
    assert_int_equal(jwks_wait_ready(j, 10), 0);
    assert_int_equal(jwks_start(j, err, sizeof(err)), 0);

    write_file(path, k->jwks_ab);
    usleep(1100 * 1000);
    uint64_t gen = 0;
    struct waiter w;
    assert_int_equal(verify(j, tb, &gen), JWT_UNKNOWN_KEY);
    assert_int_equal(wait_refresh(j, gen, 5000, &w), 1);
    assert_int_equal(verify(j, tb, NULL), JWT_OK);

    /* A broken file later: the fetch fails and the keys stay. */
    write_file(path, "{\"keys\":");
    usleep(1100 * 1000);
    jwt_keyset_unref(jwks_snapshot(j, &gen));
    assert_int_equal(wait_refresh(j, gen, 5000, &w), 1);
    struct jwks_stats st;
    jwks_get_stats(j, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(verify(j, tb, NULL), JWT_OK);
    jwks_free(j);

    /* A broken or missing file at start is an error there. */
    assert_null(jwks_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    snprintf(path, sizeof(path), "%s/missing.json", k->dir);
    assert_null(jwks_new(&cfg, err, sizeof(err)));
    free(ta);
    free(tb);
}

/* The service's own key is pinned: a fetched key with the same kid cannot replace it. */
static void test_pinned_keys(void **state)
{
    struct keys *k = *state;
    char err[256];
    /* The issuer publishes key b under a's kid. */
    json_t *doc = json_loads(k->jwks_ab, 0, NULL);
    json_t *keys = json_object_get(doc, "keys");
    json_array_remove(keys, 0);
    json_object_set_new(json_array_get(keys, 0), "kid", json_string(jwt_signer_kid(k->a)));
    char *hostile = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    struct srv *s = srv_start();
    srv_set(s, 200, hostile, NULL, 0);
    char *url = srv_url(s);
    struct jwks_config cfg = {.url = url, .pinned_json = k->jwks_a};
    struct jwks *j = jwks_new(&cfg, err, sizeof(err));
    assert_non_null(j);
    char *ta = token(k->a), *tb = token(k->b);
    assert_int_equal(verify(j, ta, NULL), JWT_OK); /* pinned keys work before any fetch */
    assert_int_equal(jwks_start(j, err, sizeof(err)), 0);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    assert_int_equal(verify(j, ta, NULL), JWT_OK);
    assert_int_equal(verify(j, tb, NULL), JWT_UNKNOWN_KEY); /* b's own kid is not there */
    jwks_free(j);

    /* Pinned keys only: nothing to refresh, waits are refused. */
    struct jwks_config only = {.pinned_json = k->jwks_a};
    j = jwks_new(&only, err, sizeof(err));
    assert_non_null(j);
    assert_int_equal(jwks_start(j, err, sizeof(err)), 0);
    uint64_t gen = 0;
    struct waiter w;
    assert_int_equal(verify(j, tb, &gen), JWT_UNKNOWN_KEY);
    assert_int_equal(wait_refresh(j, gen, 100, &w), -1);
    assert_int_equal(jwks_refresh_request(j), 0);
    jwks_free(j);
    free(ta);
    free(tb);
    free(hostile);
    free(url);
    srv_stop(s);
}

static void on_never(void *arg)
{
    (*(int *)arg)++;
}

/* A cancelled wait never calls back, also when its fetch finishes later. */
static void test_wait_cancel(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 500);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 0, 0);
    struct event_base *base = event_base_new();
    uint64_t gen = 0;
    jwt_keyset_unref(jwks_snapshot(j, &gen));
    int calls = 0;
    struct jwks_wait *a = jwks_refresh_wait(j, gen, base, on_never, &calls);
    struct jwks_wait *b = jwks_refresh_wait(j, gen, base, on_never, &calls);
    assert_non_null(a);
    assert_non_null(b);
    jwks_wait_cancel(a);
    assert_int_equal(jwks_wait_ready(j, 5000), 0);
    /* b has been activated by now but has not run: cancelling it is still allowed. */
    jwks_wait_cancel(b);
    struct timeval t = {0, 200 * 1000};
    event_base_loopexit(base, &t);
    event_base_dispatch(base);
    assert_int_equal(calls, 0);
    event_base_free(base);
    jwks_free(j);
    free(url);
    srv_stop(s);
}

/* jwks_free does not wait out a slow issuer. */
static void test_prompt_shutdown(void **state)
{
    struct keys *k = *state;
    struct srv *s = srv_start();
    srv_set(s, 200, k->jwks_a, NULL, 10000);
    char *url = srv_url(s);
    struct jwks *j = jwks_url(url, 0, 0);
    usleep(200 * 1000); /* the fetch is under way */
    int64_t t0 = ts_now_ms();
    jwks_free(j);
    int64_t took = ts_now_ms() - t0;
    printf("# jwks_free during a fetch took %lld ms\n", (long long)took);
    assert_true(took < 1500);
    free(url);
    srv_stop(s);
}

int main(void)
{
    evthread_use_pthreads();
    log_init("test_jwks", LOG_WARN, 2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_policy),
        cmocka_unit_test(test_fetch_and_verify),
        cmocka_unit_test(test_unknown_kid_rate_limit_default),
        cmocka_unit_test(test_unknown_kid_refetch_and_wait),
        cmocka_unit_test(test_slow_fetch_does_not_block),
        cmocka_unit_test(test_fail_closed),
        cmocka_unit_test(test_stale_keys_dropped),
        cmocka_unit_test(test_no_redirects),
        cmocka_unit_test(test_file_source),
        cmocka_unit_test(test_pinned_keys),
        cmocka_unit_test(test_wait_cancel),
        cmocka_unit_test(test_prompt_shutdown),
    };
    return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}
