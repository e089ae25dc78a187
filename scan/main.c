/*
 * tagproof-scan: the public scan API (GET /v1/scan/{tag_id}, GET /t/{tag_id}), with
 * health, readiness (Redis and PostgreSQL with their breakers) and metrics.
 */
#include <stdio.h>

#include "log.h"
#include "scan.h"
#include "service.h"

static const struct config_listen *scan_listen(const struct config *cfg)
{
    return &cfg->scan_listen;
}

static int scan_setup(struct service *svc)
{
    char err[256];
    struct scan_service *ss = scan_service_new(svc, err, sizeof(err));
    if (ss == NULL) {
        fprintf(stderr, "tagproof-scan: %s\n", err);
        log_error("%s", err);
        return -1;
    }
    service_set_state(svc, ss);
    return 0;
}

static void *scan_worker_init(struct service_worker *w)
{
    return scan_worker_new(service_state(w->svc), w);
}

static void scan_teardown(struct service *svc)
{
    scan_service_free(service_state(svc));
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-scan",
        .deps = SERVICE_PG | SERVICE_REDIS,
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
