/*
 * tagproof-scan: the public scan API (GET /v1/scan/{tag_id}, GET /t/{tag_id}), with health,
 * readiness (Redis and PostgreSQL with their breakers) and metrics, and — on a thread of its
 * own — the sink that moves scan events from the Redis stream into PostgreSQL.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "pg.h"
#include "redis.h"
#include "scan.h"
#include "service.h"
#include "sink.h"

/*
 * The sink thread: its own event loop, Redis client (its XREADGROUP BLOCK holds a connection)
 * and a small PostgreSQL pool. Every tagproof-scan runs one, as consumer "<host>-<pid>" of the
 * group; a crashed instance's pending entries are claimed by the others.
 */
struct sink_thread {
    pthread_t thread;
    struct event_base *base;
    struct event *stop_ev;
    struct redis_client *redis;
    struct pg_pool *pg;
    struct sink *sink;
};

struct scan_program {
    struct scan_service *scan;
    struct sink_thread *sink;
};

static void sink_stopped(void *arg)
{
    struct sink_thread *st = arg;
    event_base_loopbreak(st->base);
}

static void sink_stop_requested(evutil_socket_t fd, short what, void *arg)
{
    struct sink_thread *st = arg;
    (void)fd;
    (void)what;
    if (sink_stop(st->sink, sink_stopped, st) != 0)
        event_base_loopbreak(st->base);
}

static void *sink_main(void *arg)
{
    struct sink_thread *st = arg;
    event_base_dispatch(st->base);
    return NULL;
}

static void sink_thread_free(struct sink_thread *st)
{
    if (st == NULL)
        return;
    sink_free(st->sink);
    redis_client_free(st->redis);
    pg_pool_free(st->pg);
    if (st->stop_ev != NULL)
        event_free(st->stop_ev);
    if (st->base != NULL)
        event_base_free(st->base);
    free(st);
}

static struct sink_thread *sink_thread_start(struct service *svc)
{
    const struct config *cfg = service_config(svc);
    struct sink_thread *st = calloc(1, sizeof(*st));
    const char *why = NULL;
    char host[64] = "scan", consumer[96];

    if (st == NULL || (st->base = event_base_new()) == NULL)
        goto fail;
    st->stop_ev = event_new(st->base, -1, 0, sink_stop_requested, st);
    struct redis_options ro = {.host = cfg->redis_host,
                               .port = cfg->redis_port,
                               .db = cfg->redis_db,
                               .password = cfg->redis_password,
                               .sentinels = cfg->redis_sentinels,
                               .master_name = cfg->redis_master,
                               .command_timeout_ms = 2000};
    struct pg_options po = {
        .conninfo = cfg->pg_url, .pool_size = 2, .settings = SERVICE_PG_ALL_TENANTS};
    st->redis = redis_client_new(st->base, &ro, &why);
    st->pg = pg_pool_new(st->base, &po);
    gethostname(host, sizeof(host) - 1);
    snprintf(consumer, sizeof(consumer), "%s-%ld", host, (long)getpid());
    struct sink_options so = {.consumer = consumer};
    if (st->stop_ev == NULL || st->redis == NULL || st->pg == NULL ||
        (st->sink = sink_new(st->base, st->redis, st->pg, &so, service_metrics(svc), &why)) ==
            NULL ||
        sink_start(st->sink) != 0)
        goto fail;
    /*
     * The thread is created before httpd_start blocks SIGINT and SIGTERM for the process:
     * block them here too, or a second SIGTERM during shutdown would land on this thread
     * and kill the process before the batch in flight is stored.
     */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int created = pthread_create(&st->thread, NULL, sink_main, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (created != 0)
        goto fail;
    log_info("scan-event sink started as consumer %s", consumer);
    return st;
fail:
    log_error("cannot start the scan-event sink: %s", why != NULL ? why : "out of resources");
    sink_thread_free(st);
    return NULL;
}

/* Finishes the batch in flight, then stops the thread and frees what it used. */
static void sink_thread_stop(struct sink_thread *st)
{
    if (st == NULL)
        return;
    event_active(st->stop_ev, 0, 0);
    pthread_join(st->thread, NULL);
    sink_thread_free(st);
}

static const struct config_listen *scan_listen(const struct config *cfg)
{
    return &cfg->scan_listen;
}

static int scan_setup(struct service *svc)
{
    char err[256];
    struct scan_program *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->scan = scan_service_new(svc, err, sizeof(err))) == NULL) {
        fprintf(stderr, "tagproof-scan: %s\n", p == NULL ? "out of memory" : err);
        free(p);
        return -1;
    }
    if (strcmp(service_config(svc)->sink, "on") == 0 &&
        (p->sink = sink_thread_start(svc)) == NULL) {
        scan_service_free(p->scan);
        free(p);
        return -1;
    }
    service_set_state(svc, p);
    return 0;
}

static void *scan_worker_init(struct service_worker *w)
{
    struct scan_program *p = service_state(w->svc);
    return scan_worker_new(p->scan, w);
}

static void scan_teardown(struct service *svc)
{
    struct scan_program *p = service_state(svc);
    sink_thread_stop(p->sink);
    scan_service_free(p->scan);
    free(p);
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-scan",
        .deps = SERVICE_PG | SERVICE_REDIS,
        .pg_settings = SERVICE_PG_ALL_TENANTS,
        .ready_any = 1,        /* a scan can be answered from either store */
        .max_body_size = 4096, /* the scan API takes no request bodies */
        .listen = scan_listen,
        .setup = scan_setup,
        .worker_init = scan_worker_init,
        .worker_fini = scan_worker_free,
        .teardown = scan_teardown,
    };
    return service_main(&def);
}
