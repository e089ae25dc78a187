// fuzz: MODULES csv
/*
 * fuzz_csv: the streaming CSV upload validator on arbitrary bytes. The first byte picks a chunk
 * size; the same input fed in those chunks and fed whole must give the same outcome, the same
 * counts and the same rows, and memory must stay within the reader's bound.
 */
#include "csv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
    uint64_t digest; /* of accepted lines and tags, in order */
    uint64_t errors;
};

static int on_tag(void *arg, const struct csv_tag_row *row)
{
    struct outcome *o = arg;
    o->digest = o->digest * 1099511628211ULL ^ row->line;
    for (size_t i = 0; i < 16; i++)
        o->digest = o->digest * 1099511628211ULL ^ row->tag[i];
    return 0;
}

static int on_error(void *arg, const struct csv_error *err)
{
    struct outcome *o = arg;
    o->errors = o->errors * 31 + err->line;
    if (strlen(err->message) >= CSV_MESSAGE_MAX)
        abort();
    return 0;
}

static int run(const uint8_t *data, size_t size, size_t chunk, struct outcome *o,
               struct csv_upload_stats *st)
{
    struct csv_upload_config cfg;
    csv_upload_config_default(&cfg);
    cfg.limits.max_record_bytes = 512;
    cfg.limits.max_field_bytes = 256;
    cfg.max_rows = 1000;
    struct csv_upload *u = csv_upload_new(&cfg, on_tag, on_error, o);
    if (u == NULL)
        abort();
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        rc = csv_upload_feed(u, (const char *)data + off, n);
        if (csv_upload_memory(u) > (size_t)64 << 20)
            abort();
    }
    if (rc == 0)
        rc = csv_upload_finish(u);
    csv_upload_stats(u, st);
    csv_upload_free(u);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 17 + 1;
    struct outcome whole = {0}, pieces = {0};
    struct csv_upload_stats a, b;
    int ra = run(data + 1, size - 1, size, &whole, &a);
    int rb = run(data + 1, size - 1, chunk, &pieces, &b);
    if (ra != rb || whole.digest != pieces.digest || whole.errors != pieces.errors ||
        a.rows_total != b.rows_total || a.rows_accepted != b.rows_accepted ||
        a.rows_rejected != b.rows_rejected)
        abort();
    return 0;
}
