/*
 * tagproof-scan: the public scan API. For now it serves health, readiness (Redis and
 * PostgreSQL with their breakers) and metrics; the scan path arrives with the scan issue.
 */
#include "service.h"

static const struct config_listen *scan_listen(const struct config *cfg)
{
    return &cfg->scan_listen;
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-scan",
        .deps = SERVICE_PG | SERVICE_REDIS,
        .ready_any = 1, /* a scan can be answered from either store */
        .listen = scan_listen,
    };
    return service_main(&def);
}
