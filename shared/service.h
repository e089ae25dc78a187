/*
 * service: what every Tagproof program shares around its own routes — configuration, JSON
 * logging, the schema check, one Redis client and one PostgreSQL pool per worker thread,
 * a circuit breaker per dependency, /v1/health, /v1/ready and /metrics, and an orderly
 * shutdown on SIGTERM or SIGINT. A program's main() fills a service_def and calls
 * service_main().
 */
#ifndef TAGPROOF_SERVICE_H
#define TAGPROOF_SERVICE_H

#include <stddef.h>

#include "config.h"

struct service;
struct http_req;
struct httpd;
struct metrics;
struct breaker;
struct event_base;
struct redis_client;
struct pg_pool;

/*
 * Row-level security (migrations/0002) shows a session the rows of the tenant named by the
 * setting tagproof.tenant: a factory id, or "all". The factory API sets it per transaction;
 * the services that work across tenants (scan, its sink, anchor) start every connection with
 * this.
 */
#define SERVICE_PG_ALL_TENANTS "-c tagproof.tenant=all"

/* The stores a program uses. */
enum service_dep { SERVICE_PG = 1 << 0, SERVICE_REDIS = 1 << 1 };

struct service_worker;

struct service_def {
    const char *name; /* "tagproof-scan": log lines' service, metrics and messages */
    int deps;         /* SERVICE_PG | SERVICE_REDIS */
    /*
     * Readiness: with ready_any the program is ready when any one of its stores answers (the
     * scan service answers from either); otherwise every store must answer.
     */
    int ready_any;
    size_t max_body_size;   /* 0: the http module's default */
    size_t max_header_size; /* 0: the http module's default (8 KiB) */
    /*
     * Session settings of the program's PostgreSQL connections (pg_options.settings), e.g.
     * "-c tagproof.tenant=all" for the services that work across tenants; NULL for none.
     */
    const char *pg_settings;
    /* The program's listen address within the configuration. */
    const struct config_listen *(*listen)(const struct config *cfg);
    /*
     * Called once after the configuration is loaded and before the workers start: registers
     * the program's routes and creates its shared state. 0, or -1 with a line logged.
     */
    int (*setup)(struct service *svc);
    /*
     * Per-worker state of the program, created and destroyed on the worker's thread after
     * the worker's stores exist (w->redis, w->pg); what it returns becomes w->program.
     */
    void *(*worker_init)(struct service_worker *w);
    void (*worker_fini)(void *program_worker);
    /* Called once after the workers have stopped. */
    void (*teardown)(struct service *svc);
};

/* What each worker thread has; handlers reach it through service_worker(req). */
struct service_worker {
    struct service *svc;
    struct event_base *base;
    unsigned idx;
    struct redis_client *redis; /* NULL unless the program uses Redis */
    struct pg_pool *pg;         /* NULL unless the program uses PostgreSQL */
    void *program;              /* from def->worker_init */
};

/* Runs the program; returns the process exit code (0 after a clean shutdown). */
int service_main(const struct service_def *def);

/* Borrowed for the program's lifetime. */
const struct config *service_config(const struct service *svc);
struct metrics *service_metrics(struct service *svc);
struct httpd *service_httpd(struct service *svc);
/* The breaker guarding one dependency (SERVICE_PG or SERVICE_REDIS), NULL if unused. */
struct breaker *service_breaker(struct service *svc, enum service_dep dep);
const char *service_name(const struct service *svc);

/* The program's shared state, set during setup; borrowed. */
void service_set_state(struct service *svc, void *state);
void *service_state(const struct service *svc);

/* The worker serving req. */
struct service_worker *service_worker(struct http_req *req);

#endif
