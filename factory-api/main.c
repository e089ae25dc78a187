/*
 * tagproof-factory: the authenticated API for factories and admins (SPEC §6). main() wires
 * the service: the program's state (api.c), then the routes of each handler file.
 */
#include <stdlib.h>

#include "api.h"
#include "handlers.h"
#include "log.h"
#include "service.h"

static const struct config_listen *factory_listen(const struct config *cfg)
{
    return &cfg->factory_listen;
}

static int factory_setup(struct service *svc)
{
    struct factory_app *app = calloc(1, sizeof(*app));
    struct httpd *h = service_httpd(svc);

    if (app == NULL || api_app_init(app, svc) != 0) {
        free(app);
        return -1;
    }
    service_set_state(svc, app);
    if (tenants_register(h, app) != 0 || catalog_register(h, app) != 0 ||
        upload_register(h, app) != 0 || proofs_register(h, app) != 0) {
        log_error("cannot register the factory API's routes");
        return -1;
    }
    return 0;
}

static void factory_teardown(struct service *svc)
{
    struct factory_app *app = service_state(svc);
    if (app != NULL) {
        api_app_fini(app);
        free(app);
    }
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-factory",
        .deps = SERVICE_PG | SERVICE_REDIS,
        /*
         * Room for a hostile 64 KB bearer token to reach authentication and be answered 401
         * with WWW-Authenticate, rather than evhttp's bare 400 (SPEC §6).
         */
        .max_header_size = 96 * 1024,
        .listen = factory_listen,
        .setup = factory_setup,
        .worker_init = catalog_worker_init,
        .worker_fini = catalog_worker_fini,
        .teardown = factory_teardown,
    };
    return service_main(&def);
}
