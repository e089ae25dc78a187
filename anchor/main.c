/*
 * tagproof-anchor: appends the Merkle log, signs checkpoints and anchors them (SPEC §7). The
 * HTTP workers serve health, readiness and metrics; the log and the ledger are worked by the
 * scheduler thread of anchor.c, which leads through a PostgreSQL advisory lock.
 */
#include <stdio.h>

#include "anchor.h"
#include "log.h"
#include "service.h"

static const struct config_listen *anchor_listen(const struct config *cfg)
{
    return &cfg->anchor_listen;
}

static int anchor_setup(struct service *svc)
{
    char err[512];
    struct anchor *a = anchor_new(service_config(svc), service_metrics(svc), err, sizeof(err));
    if (a == NULL) {
        log_error("%s", err);
        fprintf(stderr, "tagproof-anchor: %s\n", err);
        return -1;
    }
    if (anchor_start(a) != 0) {
        log_error("cannot start the scheduler thread");
        anchor_free(a);
        return -1;
    }
    service_set_state(svc, a);
    return 0;
}

static void anchor_teardown(struct service *svc)
{
    anchor_free(service_state(svc));
    service_set_state(svc, NULL);
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-anchor",
        .deps = SERVICE_PG,
        .pg_settings = SERVICE_PG_ALL_TENANTS,
        .listen = anchor_listen,
        .setup = anchor_setup,
        .teardown = anchor_teardown,
    };
    return service_main(&def);
}
