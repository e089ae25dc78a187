/*
 * handlers: the factory API's routes, one registration function per file, and the few
 * helpers their SQL shares.
 */
#ifndef TAGPROOF_HANDLERS_H
#define TAGPROOF_HANDLERS_H

#include <stddef.h>

#include "uuid.h"

struct httpd;
struct factory_app;
struct service_worker;

/* factories, API keys, tokens, the public keys (tenants.c) */
int tenants_register(struct httpd *h, struct factory_app *app);
/* CSV uploads of a batch's tags, and the upload resource (upload.c) */
int upload_register(struct httpd *h, struct factory_app *app);

/* products, batches, tags, batch statistics and recalls (catalog.c) */
int catalog_register(struct httpd *h, struct factory_app *app);

/*
 * The worker state of catalog.c: on worker 0, the timer of the recall reconciler, which
 * re-marks recalled batches in Redis; NULL on the other workers. For service_def.
 */
void *catalog_worker_init(struct service_worker *w);
void catalog_worker_fini(void *program_worker);

/* proof bundles and their verification, the log's checkpoint, key and consistency, anchors
 * (proofs.c) */
int proofs_register(struct httpd *h, struct factory_app *app);

/*
 * The SQL of a list page (SPEC §6: {"items": [...], "next_cursor": ...}): rows of from
 * (a table or subquery, aliased t in object) that pass filter, as the JSON expression
 * object, after the cursor $1 ('' for the first page), $2 rows at most. Further parameters
 * ($3 ...) are the caller's. 0, or -1 when it does not fit.
 */
int api_list_sql(char *out, size_t cap, const char *from, const char *filter, const char *object);

/* A new resource id: a UUIDv7, so ids sort in creation order. */
void api_new_id(char out[UUID_STR_LEN + 1]);

#endif
