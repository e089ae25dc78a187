/*
 * tagproof-anchor: appends the Merkle log, signs checkpoints and anchors them. For now it
 * serves health, readiness and metrics; the log and the scheduler arrive with the anchor
 * issue.
 */
#include "service.h"

static const struct config_listen *anchor_listen(const struct config *cfg)
{
    return &cfg->anchor_listen;
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-anchor",
        .deps = SERVICE_PG,
        .pg_settings = SERVICE_PG_ALL_TENANTS,
        .listen = anchor_listen,
    };
    return service_main(&def);
}
