/*
 * scan: GET /v1/scan/{tag_id} and GET /t/{tag_id}. One request is read top to bottom in
 * scan.c: accept → parse → look up (Redis, else PostgreSQL) → rules → first scan → event →
 * answer. Everything runs on the worker's event loop.
 */
#ifndef TAGPROOF_SCAN_H
#define TAGPROOF_SCAN_H

#include <stddef.h>

struct service;
struct service_worker;
struct scan_service;

/* Reads the scan settings (rules, salt, proxies) and registers the routes. NULL + err. */
struct scan_service *scan_service_new(struct service *svc, char *err, size_t errlen);
void scan_service_free(struct scan_service *ss);

/* Per-worker state: prepared statements on the worker's pool. Freed by scan_worker_free. */
void *scan_worker_new(struct scan_service *ss, struct service_worker *w);
void scan_worker_free(void *sw);

#endif
