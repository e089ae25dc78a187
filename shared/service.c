/*
 * service: the start-up, the common routes and the shutdown of every Tagproof program, so
 * that each program's main.c only says what is particular to it.
 */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "breaker.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "redis.h"
#include "schema.h"

#define SERVICE_VERSION "0.1.0"
#define SERVICE_GRACE_MS 10000
#define SERVICE_SCHEMA_WAIT_S 30

struct service {
    const struct service_def *def;
    struct config cfg;
    struct metrics *metrics;
    struct httpd *httpd;
    struct breaker *pg_breaker;
    struct breaker *redis_breaker;
    struct metric *breaker_state;
    void *state;
};

const struct config *service_config(const struct service *svc)
{
    return &svc->cfg;
}

struct metrics *service_metrics(struct service *svc)
{
    return svc->metrics;
}

struct httpd *service_httpd(struct service *svc)
{
    return svc->httpd;
}

struct breaker *service_breaker(struct service *svc, enum service_dep dep)
{
    return dep == SERVICE_PG ? svc->pg_breaker : svc->redis_breaker;
}

const char *service_name(const struct service *svc)
{
    return svc->def->name;
}

void service_set_state(struct service *svc, void *state)
{
    svc->state = state;
}

void *service_state(const struct service *svc)
{
    return svc->state;
}

struct service_worker *service_worker(struct http_req *req)
{
    return http_req_ctx(req);
}

static void pg_options_from(const struct service *svc, struct pg_options *o)
{
    const struct config *cfg = &svc->cfg;
    memset(o, 0, sizeof(*o));
    o->settings = svc->def->pg_settings;
    o->conninfo = cfg->pg_url;
    o->pool_size = cfg->pg_pool_size;
    o->statement_timeout_ms = cfg->pg_timeout_ms;
}

/* Runs on each worker thread before it serves: its own store clients, then the program's. */
static void *worker_init(struct event_base *base, unsigned idx, void *arg)
{
    struct service *svc = arg;
    struct service_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->svc = svc;
    w->base = base;
    w->idx = idx;
    if (svc->def->deps & SERVICE_REDIS) {
        struct redis_options o;
        redis_options_from_config(&svc->cfg, &o);
        w->redis = redis_client_new(base, &o, NULL);
    }
    if (svc->def->deps & SERVICE_PG) {
        struct pg_options o;
        pg_options_from(svc, &o);
        w->pg = pg_pool_new(base, &o);
    }
    if (svc->def->worker_init != NULL)
        w->program = svc->def->worker_init(w);
    return w;
}

static void worker_fini(void *ctx)
{
    struct service_worker *w = ctx;
    if (w == NULL)
        return;
    /*
     * The store clients go first: freeing them answers every call still in flight with a
     * "closed" status, and those callbacks may still use the program's worker state (and fall
     * back from one store to the other), so that state is freed last. The pointers are
     * cleared so that a fallback finds the store gone instead of freed.
     */
    redis_client_free(w->redis);
    w->redis = NULL;
    pg_pool_free(w->pg);
    w->pg = NULL;
    if (w->svc->def->worker_fini != NULL)
        w->svc->def->worker_fini(w->program);
    free(w);
}

static void handle_health(struct http_req *req, void *arg)
{
    struct service *svc = arg;
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "status", "ok", "service", svc->def->name));
}

static void handle_metrics(struct http_req *req, void *arg)
{
    struct service *svc = arg;
    size_t len = 0;
    char *text = metrics_render(svc->metrics, &len);
    if (text == NULL) {
        http_reply_problem(req, 500, NULL, NULL, "metrics could not be rendered", NULL);
        return;
    }
    http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/*
 * /v1/ready pings each store through this worker's own client, under the store's deadline,
 * and answers when the last one has called back. The breakers are reported, not consulted:
 * readiness says what the stores do now.
 */
struct ready_check {
    struct http_req *req;
    struct service *svc;
    json_t *checks;
    int pending;
    int up;
    int wanted;
    struct timespec started;
};

static double elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1000.0 +
           (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static void ready_finish(struct ready_check *rc)
{
    const struct service_def *def = rc->svc->def;
    int ready = def->ready_any ? (rc->wanted == 0 || rc->up > 0) : rc->up == rc->wanted;
    json_t *body = json_pack("{s:s, s:s, s:o}", "status", ready ? "ready" : "not_ready", "service",
                             def->name, "dependencies", rc->checks);
    if (!ready)
        http_add_header(rc->req, "Retry-After", "1");
    http_reply_json(rc->req, ready ? 200 : 503, body);
    free(rc);
}

static void ready_record(struct ready_check *rc, const char *dep, struct breaker *b, int ok,
                         const char *error)
{
    json_t *entry =
        json_pack("{s:s, s:f, s:s}", "state", ok ? "up" : "down", "latency_ms",
                  elapsed_ms(&rc->started), "breaker", breaker_state_name(breaker_state(b)));
    if (!ok && error != NULL)
        json_object_set_new(entry, "error", json_string(error));
    json_object_set_new(rc->checks, dep, entry);
    rc->up += ok;
    if (--rc->pending == 0)
        ready_finish(rc);
}

static void ready_redis_done(void *arg, enum redis_status st, const redisReply *reply)
{
    struct ready_check *rc = arg;
    (void)reply;
    ready_record(rc, "redis", rc->svc->redis_breaker, st == REDIS_STATUS_OK, redis_status_str(st));
}

static void ready_pg_done(void *arg, const struct pg_result_info *r)
{
    struct ready_check *rc = arg;
    ready_record(rc, "postgresql", rc->svc->pg_breaker, r->status == PG_OK,
                 pg_status_str(r->status));
}

static void handle_ready(struct http_req *req, void *arg)
{
    struct service *svc = arg;
    struct service_worker *w = service_worker(req);
    struct ready_check *rc = calloc(1, sizeof(*rc));
    if (rc == NULL || (rc->checks = json_object()) == NULL) {
        free(rc);
        http_reply_problem(req, 500, NULL, NULL, "out of memory", NULL);
        return;
    }
    rc->req = req;
    rc->svc = svc;
    clock_gettime(CLOCK_MONOTONIC, &rc->started);
    /* One extra count keeps the check alive until both calls are issued. */
    rc->pending = 1;
    if (w != NULL && w->redis != NULL) {
        rc->wanted++;
        rc->pending++;
        if (redis_commandf(w->redis, svc->cfg.redis_timeout_ms, ready_redis_done, rc, "PING") != 0)
            ready_record(rc, "redis", svc->redis_breaker, 0, "client");
    }
    if (w != NULL && w->pg != NULL) {
        rc->wanted++;
        rc->pending++;
        if (pg_query(w->pg, svc->cfg.pg_timeout_ms, ready_pg_done, rc, "SELECT 1", 0, NULL) != 0)
            ready_record(rc, "postgresql", svc->pg_breaker, 0, "client");
    }
    if (--rc->pending == 0)
        ready_finish(rc);
}

static void breaker_changed(void *arg, const char *name, enum breaker_state from,
                            enum breaker_state to)
{
    struct service *svc = arg;
    metric_set(svc->breaker_state, (double)to, name);
    log_emit(to == BREAKER_OPEN ? LOG_WARN : LOG_INFO, NULL, "circuit breaker changed state",
             json_pack("{s:s, s:s, s:s}", "dependency", name, "from", breaker_state_name(from),
                       "to", breaker_state_name(to)));
}

static struct breaker *breaker_for(struct service *svc, const char *name)
{
    struct breaker_config bc;
    breaker_config_default(&bc);
    bc.failure_rate_pct = (unsigned)svc->cfg.breaker_failure_pct;
    bc.min_calls = (unsigned)svc->cfg.breaker_min_calls;
    bc.window_ms = (unsigned)svc->cfg.breaker_window_ms;
    bc.open_wait_ms = (unsigned)svc->cfg.breaker_open_ms;
    bc.half_open_permits = (unsigned)svc->cfg.breaker_probes;
    bc.slow_call_ms = (unsigned)svc->cfg.breaker_slow_ms;
    struct breaker *b = breaker_new(name, &bc);
    if (b != NULL) {
        breaker_on_change(b, breaker_changed, svc);
        metric_set(svc->breaker_state, (double)BREAKER_CLOSED, name);
    }
    return b;
}

/* Checks what can be checked before the workers start, so mistakes exit 2 at once. */
static int service_preflight(struct service *svc)
{
    char err[512];
    if (svc->def->deps & SERVICE_REDIS) {
        struct redis_options o;
        const char *why = NULL;
        struct event_base *base = event_base_new();
        redis_options_from_config(&svc->cfg, &o);
        struct redis_client *c = base != NULL ? redis_client_new(base, &o, &why) : NULL;
        redis_client_free(c);
        if (base != NULL)
            event_base_free(base);
        if (c == NULL) {
            fprintf(stderr, "%s: TAGPROOF_REDIS_URL: %s\n", svc->def->name,
                    why != NULL ? why : "unusable");
            return 2;
        }
    }
    if (svc->def->deps & SERVICE_PG) {
        int rc = schema_check(svc->cfg.pg_url, SERVICE_SCHEMA_WAIT_S, err, sizeof(err));
        if (rc == -2 && svc->def->ready_any) {
            /* A service that can answer from its other store starts without PostgreSQL; the
             * schema is checked by every program that needs it to write. */
            log_warn("starting without PostgreSQL: %s", err);
            rc = 0;
        }
        if (rc != 0) {
            fprintf(stderr, "%s: %s\n", svc->def->name, err);
            return rc == -1 ? 2 : 1;
        }
    }
    return 0;
}

static void service_free(struct service *svc)
{
    httpd_free(svc->httpd);
    breaker_free(svc->pg_breaker);
    breaker_free(svc->redis_breaker);
    metrics_free(svc->metrics);
    config_free(&svc->cfg);
}

int service_main(const struct service_def *def)
{
    struct service svc = {.def = def};
    enum log_level level = LOG_INFO;
    char *err = NULL;
    int rc = 1;

    config_load_or_exit(&svc.cfg, def->name);
    log_level_parse(svc.cfg.log_level, &level);
    log_init(def->name, level, 2);
    if ((rc = service_preflight(&svc)) != 0) {
        config_free(&svc.cfg);
        return rc;
    }
    rc = 1;

    svc.metrics = metrics_new();
    if (svc.metrics == NULL)
        goto done;
    metric_set(metrics_gauge(svc.metrics, "tagproof_build_info", "Build of this program.",
                             "service,version"),
               1, def->name, SERVICE_VERSION);
    metric_set(metrics_gauge(svc.metrics, "tagproof_process_start_time_seconds",
                             "Start time of the process, seconds since the epoch.", NULL),
               (double)time(NULL));
    svc.breaker_state = metrics_gauge(
        svc.metrics, "tagproof_breaker_state",
        "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open.", "dependency");
    if ((def->deps & SERVICE_REDIS) && (svc.redis_breaker = breaker_for(&svc, "redis")) == NULL)
        goto done;
    if ((def->deps & SERVICE_PG) && (svc.pg_breaker = breaker_for(&svc, "postgresql")) == NULL)
        goto done;

    const struct config_listen *listen = def->listen(&svc.cfg);
    struct httpd_config hc = {
        .host = listen->host,
        .port = (unsigned)listen->port,
        .workers = (unsigned)svc.cfg.http_threads,
        .max_body_size = def->max_body_size,
        .max_header_size = def->max_header_size,
        .metrics = svc.metrics,
        .init = worker_init,
        .fini = worker_fini,
        .arg = &svc,
    };
    if ((svc.httpd = httpd_new(&hc, &err)) == NULL) {
        log_error("cannot listen: %s", err);
        fprintf(stderr, "%s: %s\n", def->name, err);
        goto done;
    }
    if (httpd_route(svc.httpd, HTTP_GET, "/v1/health", "/v1/health", handle_health, &svc) != 0 ||
        httpd_route(svc.httpd, HTTP_GET, "/v1/ready", "/v1/ready", handle_ready, &svc) != 0 ||
        httpd_route(svc.httpd, HTTP_GET, "/metrics", "/metrics", handle_metrics, &svc) != 0)
        goto done;
    /* A program that cannot set itself up was given settings it cannot use: exit 2. */
    if (def->setup != NULL && def->setup(&svc) != 0) {
        rc = 2;
        goto done;
    }
    if (httpd_start(svc.httpd, &err) != 0) {
        log_error("cannot start: %s", err);
        httpd_shutdown(svc.httpd, 0);
        if (def->teardown != NULL)
            def->teardown(&svc);
        goto done;
    }
    log_emit(LOG_INFO, NULL, "started",
             json_pack("{s:s, s:i, s:i, s:s}", "host", listen->host, "port",
                       (int)httpd_port(svc.httpd), "workers", svc.cfg.http_threads, "version",
                       SERVICE_VERSION));

    int sig = httpd_wait_signal();
    log_emit(LOG_INFO, NULL, "stopping", json_pack("{s:i}", "signal", sig));
    httpd_shutdown(svc.httpd, SERVICE_GRACE_MS);
    if (def->teardown != NULL)
        def->teardown(&svc);
    log_info("stopped");
    rc = 0;
done:
    free(err);
    service_free(&svc);
    return rc;
}
