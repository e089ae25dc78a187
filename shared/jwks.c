/*
 * jwks: trusted token keys from a file or URL, refreshed by a background thread and handed
 * to request handlers as immutable snapshots. See jwks.h for the design.
 */
#include "jwks.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "log.h"

struct jwks_wait {
    struct jwks *j;
    struct event *ev;
    void (*cb)(void *arg);
    void *arg;
    struct jwks_wait *prev, *next;
    int linked; /* on j->waits, not yet activated */
};

struct jwks {
    /* Set by jwks_new, read-only afterwards. */
    char *file;
    char *url;
    int loopback_only; /* http:// URL: every connection must go to a loopback address */
    int64_t interval_ms, min_refetch_ms, max_stale_ms;
    long timeout_ms;
    size_t max_size;
    struct jwt_keyset *pinned;

    /* The refresh thread and what it shares, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;  /* to the thread: a request, or stop */
    pthread_cond_t ready; /* from the thread: a fetch finished */
    pthread_t thread;
    int started;
    atomic_int stopping;
    int requested, in_flight;
    int last_failed; /* the last fetch failed: retry after min_refetch_ms, not interval_ms */
    int64_t last_attempt_ms; /* monotonic; INT64_MIN before the first */
    int64_t last_ok_ms;      /* monotonic; INT64_MIN before the first */
    struct jwt_keyset *fetched;
    struct jwt_keyset *current; /* pinned + fetched; NULL when no key is trusted */
    uint64_t generation;
    uint64_t fetches, failures;
    struct jwks_wait *waits;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

/* curl_global_init is not thread-safe in every build of libcurl: do it once, at jwks_new. */
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---------------------------------------------------------------------------------------- */
/* URL policy                                                                                */

static int host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
        char inner[INET6_ADDRSTRLEN + 1];
        if (n - 2 >= sizeof(inner))
            return 0;
        memcpy(inner, host + 1, n - 2);
        inner[n - 2] = '\0';
        return inet_pton(AF_INET6, inner, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return 0;
}

static int sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) ==
               127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

/* 0 when url is https, or http to a loopback host (then *loopback_only is set); else -1. */
static int url_check(const char *url, int *loopback_only, char *err, size_t errlen)
{
    int rc = -1;
    char *scheme = NULL, *host = NULL;
    CURLU *u = curl_url();
    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, errlen, "TAGPROOF_JWKS_URL is not a URL");
        goto done;
    }
    if (strcmp(scheme, "https") == 0) {
        *loopback_only = 0;
        rc = 0;
    } else if (strcmp(scheme, "http") == 0 && host_is_loopback(host)) {
        *loopback_only = 1;
        rc = 0;
    } else {
        snprintf(err, errlen,
                 "TAGPROOF_JWKS_URL must be https, or http to a loopback address (127.0.0.0/8, "
                 "[::1], localhost)");
    }
done:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Fetching (on the refresh thread, or in jwks_new for a file)                               */

struct body {
    char *buf;
    size_t len, max;
    int too_big;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;
    if (add > b->max - b->len) {
        b->too_big = 1;
        return 0;
    }
    char *nb = realloc(b->buf, b->len + add + 1);
    if (nb == NULL)
        return 0;
    memcpy(nb + b->len, p, add);
    b->buf = nb;
    b->len += add;
    return add;
}

/* Connections for an http:// URL may only go to loopback, whatever the name resolved to. */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct jwks *j = arg;
    (void)purpose;
    if (j->loopback_only && !sockaddr_is_loopback(&addr->addr))
        return CURL_SOCKET_BAD;
    return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* Aborts a transfer in flight when jwks_free wants the thread back. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct jwks *j = arg;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return atomic_load(&j->stopping) ? 1 : 0;
}

static struct jwt_keyset *fetch_url(struct jwks *j, char *err, size_t errlen)
{
    struct body b = {.max = j->max_size};
    struct jwt_keyset *set = NULL;
    long status = 0;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, j->loopback_only ? "http" : "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)j->max_size);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tagproof-jwks/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, j);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, j);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (j->loopback_only)
        curl_easy_setopt(c, CURLOPT_PROXY, ""); /* a proxy would leave loopback */
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED)
        snprintf(err, errlen, "JWKS larger than %zu bytes", j->max_size);
    else if (rc != CURLE_OK)
        snprintf(err, errlen, "JWKS fetch failed: %s", curl_easy_strerror(rc));
    else if (status != 200)
        snprintf(err, errlen, "JWKS fetch answered HTTP %ld", status);
    else
        set = jwt_keyset_parse(b.buf != NULL ? b.buf : "", b.len, err, errlen);
    curl_easy_cleanup(c);
    free(b.buf);
    return set;
}

static struct jwt_keyset *fetch_file(const char *path, size_t max, char *err, size_t errlen)
{
    struct jwt_keyset *set = NULL;
    char *buf = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot read the JWKS file %s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        snprintf(err, errlen, "the JWKS file %s is not a regular file of at most %zu bytes", path,
                 max);
        goto done;
    }
    size_t len = (size_t)st.st_size, got = 0;
    buf = malloc(len + 1);
    if (buf == NULL)
        goto done;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot read the JWKS file %s", path);
            goto done;
        }
        got += (size_t)n;
    }
    char perr[200];
    set = jwt_keyset_parse(buf, len, perr, sizeof(perr));
    if (set == NULL)
        snprintf(err, errlen, "the JWKS file %s: %s", path, perr);
done:
    if (fd >= 0)
        close(fd);
    free(buf);
    return set;
}

/* ---------------------------------------------------------------------------------------- */
/* Publishing                                                                                */

/*
 * Replaces the current set with pinned + fetched. Without fetched keys no allocation is
 * needed, so dropping stale keys cannot fail; a failed merge keeps the previous set. Called
 * with mu held.
 */
static int publish_locked(struct jwks *j)
{
    struct jwt_keyset *next = NULL;
    if (j->fetched != NULL) {
        next = jwt_keyset_merge(j->pinned, j->fetched);
        if (next == NULL)
            return -1;
    } else if (j->pinned != NULL) {
        next = jwt_keyset_ref(j->pinned);
    }
    jwt_keyset_unref(j->current);
    j->current = next;
    j->generation++;
    return 0;
}

/* Runs cb on the waiter's loop; the handle dies here. */
static void wait_fire(evutil_socket_t fd, short what, void *arg)
{
    struct jwks_wait *w = arg;
    void (*cb)(void *) = w->cb;
    void *cb_arg = w->arg;
    (void)fd;
    (void)what;
    event_free(w->ev);
    free(w);
    cb(cb_arg);
}

static void wait_unlink_locked(struct jwks_wait *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        w->j->waits = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->linked = 0;
}

/* event_active is thread-safe on a base with locking; the callback runs on its loop. */
static void waits_fire_locked(struct jwks *j)
{
    while (j->waits != NULL) {
        struct jwks_wait *w = j->waits;
        wait_unlink_locked(w);
        event_active(w->ev, EV_TIMEOUT, 1);
    }
}

static void *refresh_main(void *arg)
{
    struct jwks *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!atomic_load(&j->stopping)) {
        int64_t now = mono_ms();
        int64_t due =
            j->last_attempt_ms == INT64_MIN
                ? now
                : j->last_attempt_ms + (j->last_failed ? j->min_refetch_ms : j->interval_ms);
        if (!j->requested && now < due) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait_ms = due - now;
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&j->wake, &j->mu, &ts);
            continue;
        }
        j->requested = 0;
        j->in_flight = 1;
        j->last_attempt_ms = now;
        pthread_mutex_unlock(&j->mu);

        char err[256] = "";
        struct jwt_keyset *set = j->url != NULL
                                     ? fetch_url(j, err, sizeof(err))
                                     : fetch_file(j->file, j->max_size, err, sizeof(err));
        size_t nkeys = jwt_keyset_count(set);

        pthread_mutex_lock(&j->mu);
        int first = j->last_ok_ms == INT64_MIN, dropped = 0;
        size_t before = jwt_keyset_count(j->fetched);
        j->in_flight = 0;
        j->fetches++;
        j->last_failed = set == NULL;
        if (set != NULL) {
            jwt_keyset_unref(j->fetched);
            j->fetched = set;
            j->last_ok_ms = mono_ms();
            if (publish_locked(j) != 0)
                snprintf(err, sizeof(err), "out of memory");
        } else {
            j->failures++;
            if (j->fetched != NULL && mono_ms() - j->last_ok_ms > j->max_stale_ms) {
                /* Fail closed: keys nobody has confirmed for this long are not trusted. */
                jwt_keyset_unref(j->fetched);
                j->fetched = NULL;
                publish_locked(j);
                dropped = 1;
            }
        }
        pthread_cond_broadcast(&j->ready);
        waits_fire_locked(j);
        pthread_mutex_unlock(&j->mu);

        if (set == NULL && dropped)
            log_warn("jwks: %s; the fetched keys went unconfirmed for %lld s and were dropped", err,
                     (long long)(j->max_stale_ms / 1000));
        else if (set == NULL)
            log_warn("jwks: %s; keeping the previous keys", err);
        else if (first || nkeys != before)
            log_info("jwks: %zu usable keys loaded", nkeys);
        else
            log_debug("jwks: refreshed, %zu usable keys", nkeys);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Public interface                                                                          */

struct jwks *jwks_new(const struct jwks_config *cfg, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    struct jwks *j = calloc(1, sizeof(*j));
    pthread_condattr_t ca;
    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &ca);
    pthread_cond_init(&j->ready, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&j->stopping, 0);
    j->last_attempt_ms = INT64_MIN;
    j->last_ok_ms = INT64_MIN;
    j->interval_ms = (int64_t)(cfg->refresh_interval_s ? cfg->refresh_interval_s : 300) * 1000;
    j->min_refetch_ms = (int64_t)(cfg->min_refetch_s ? cfg->min_refetch_s : 30) * 1000;
    j->max_stale_ms = (int64_t)(cfg->max_stale_s ? cfg->max_stale_s : 86400) * 1000;
    j->timeout_ms = cfg->timeout_ms ? (long)cfg->timeout_ms : 5000;
    j->max_size = cfg->max_size ? cfg->max_size : 256 * 1024;

    if (cfg->file != NULL && cfg->url != NULL) {
        snprintf(err, errlen, "set TAGPROOF_JWKS_FILE or TAGPROOF_JWKS_URL, not both");
        goto fail;
    }
    if (cfg->url != NULL) {
        if (url_check(cfg->url, &j->loopback_only, err, errlen) != 0)
            goto fail;
        if ((j->url = strdup(cfg->url)) == NULL)
            goto oom;
    }
    if (cfg->pinned_json != NULL) {
        j->pinned = jwt_keyset_parse(cfg->pinned_json, strlen(cfg->pinned_json), err, errlen);
        if (j->pinned == NULL)
            goto fail;
    }
    if (cfg->file != NULL) {
        if ((j->file = strdup(cfg->file)) == NULL)
            goto oom;
        j->fetched = fetch_file(j->file, j->max_size, err, errlen);
        if (j->fetched == NULL)
            goto fail;
        j->last_attempt_ms = j->last_ok_ms = mono_ms();
        j->fetches = 1;
    }
    if (publish_locked(j) != 0)
        goto oom;
    return j;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    jwks_free(j);
    return NULL;
}

int jwks_start(struct jwks *j, char *err, size_t errlen)
{
    if (j->started || (j->file == NULL && j->url == NULL))
        return 0;
    int rc = pthread_create(&j->thread, NULL, refresh_main, j);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the JWKS refresh thread: %s", strerror(rc));
        return -1;
    }
    j->started = 1;
    return 0;
}

int jwks_wait_ready(struct jwks *j, unsigned timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&j->mu);
    while (j->started && j->fetches == 0 &&
           pthread_cond_timedwait(&j->ready, &j->mu, &ts) != ETIMEDOUT)
        ;
    int rc = j->fetched != NULL ? 0 : -1;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

struct jwt_keyset *jwks_snapshot(struct jwks *j, uint64_t *generation)
{
    pthread_mutex_lock(&j->mu);
    struct jwt_keyset *set = j->current != NULL ? jwt_keyset_ref(j->current) : NULL;
    if (generation != NULL)
        *generation = j->generation;
    pthread_mutex_unlock(&j->mu);
    return set;
}

static int request_locked(struct jwks *j)
{
    if (!j->started || atomic_load(&j->stopping))
        return 0;
    if (j->in_flight || j->requested)
        return 1;
    if (j->last_attempt_ms != INT64_MIN && mono_ms() - j->last_attempt_ms < j->min_refetch_ms)
        return 0;
    j->requested = 1;
    pthread_cond_signal(&j->wake);
    return 1;
}

int jwks_refresh_request(struct jwks *j)
{
    pthread_mutex_lock(&j->mu);
    int rc = request_locked(j);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

enum jwt_result jwks_verify(struct jwks *j, const struct jwt_policy *policy, const char *token,
                            size_t len, int64_t now_s, struct jwt_claims *out, const char **why,
                            uint64_t *generation)
{
    struct jwt_keyset *set = jwks_snapshot(j, generation);
    enum jwt_result r = jwt_verify(set, policy, token, len, now_s, out, why);
    jwt_keyset_unref(set);
    if (r == JWT_UNKNOWN_KEY)
        jwks_refresh_request(j);
    return r;
}

struct jwks_wait *jwks_refresh_wait(struct jwks *j, uint64_t seen_generation,
                                    struct event_base *base, void (*cb)(void *arg), void *arg)
{
    struct jwks_wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->j = j;
    w->cb = cb;
    w->arg = arg;
    w->ev = event_new(base, -1, 0, wait_fire, w);
    if (w->ev == NULL) {
        free(w);
        return NULL;
    }
    pthread_mutex_lock(&j->mu);
    if (j->generation != seen_generation) {
        event_active(w->ev, EV_TIMEOUT, 1);
    } else if (request_locked(j)) {
        w->next = j->waits;
        if (j->waits != NULL)
            j->waits->prev = w;
        j->waits = w;
        w->linked = 1;
    } else {
        pthread_mutex_unlock(&j->mu);
        event_free(w->ev);
        free(w);
        return NULL;
    }
    pthread_mutex_unlock(&j->mu);
    return w;
}

void jwks_wait_cancel(struct jwks_wait *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->j->mu);
    if (w->linked)
        wait_unlink_locked(w);
    pthread_mutex_unlock(&w->j->mu);
    /* On the loop's thread an activated event can still be freed before it runs. */
    event_free(w->ev);
    free(w);
}

void jwks_get_stats(struct jwks *j, struct jwks_stats *out)
{
    pthread_mutex_lock(&j->mu);
    out->generation = j->generation;
    out->keys = jwt_keyset_count(j->current);
    out->fetches = j->fetches;
    out->failures = j->failures;
    out->age_s = j->last_ok_ms == INT64_MIN ? -1 : (mono_ms() - j->last_ok_ms) / 1000;
    pthread_mutex_unlock(&j->mu);
}

void jwks_free(struct jwks *j)
{
    if (j == NULL)
        return;
    if (j->started) {
        pthread_mutex_lock(&j->mu);
        atomic_store(&j->stopping, 1);
        pthread_cond_signal(&j->wake);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    assert(j->waits == NULL);
    jwt_keyset_unref(j->current);
    jwt_keyset_unref(j->fetched);
    jwt_keyset_unref(j->pinned);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->ready);
    pthread_mutex_destroy(&j->mu);
    free(j->file);
    free(j->url);
    free(j);
}
