/*
 * tagproof-devledger: a small HTTP ledger for development. For now it serves health,
 * readiness and metrics; the hash-chained anchor store arrives with the anchor issue.
 */
#include "service.h"

static const struct config_listen *devledger_listen(const struct config *cfg)
{
    return &cfg->devledger_listen;
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-devledger",
        .deps = 0,
        .listen = devledger_listen,
    };
    return service_main(&def);
}
