/*
 * tagproof-factory: the authenticated API for factories and admins. For now it serves
 * health, readiness and metrics; the endpoints arrive with the factory-API issue.
 */
#include "service.h"

static const struct config_listen *factory_listen(const struct config *cfg)
{
    return &cfg->factory_listen;
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-factory",
        .deps = SERVICE_PG | SERVICE_REDIS,
        .listen = factory_listen,
    };
    return service_main(&def);
}
