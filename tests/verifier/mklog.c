/*
 * tagproof-mklog: builds a signed Merkle log in a test database, as tagproof-anchor would,
 * for the proof tests and scripts/bench/proofs — which must not depend on the anchor service.
 * As the schema owner it registers N new tags (one factory, product and batch), appends their
 * registration leaves (log_entries with leaf_index and leaf_hash, every complete subtree in
 * merkle_nodes, through COPY), signs a checkpoint of the new size with an Ed25519 key file
 * (C2SP signed note, shared/note) and records the verifier key in log_keys.
 *
 *   tagproof-mklog --url OWNER_URL --key-file PATH [--leaves N] [--queued N] [--no-checkpoint]
 *                  [--origin O] [--batch ID] [--tags-out FILE]
 *
 * Appends after the leaves already there (the frontier is read back from merkle_nodes). With
 * --queued N, N more tags get log entries without a leaf (not appended yet). --tags-out
 * writes "<tag_id> <leaf_index or ->" lines. Prints one JSON line: size, root, vkey, ids.
 * A test tool: blocking libpq, exits 1 on any failure.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "merkle.h"
#include "note.h"
#include "uuid.h"

#define COPY_CHUNK (1 << 20)

static PGconn *conn;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "tagproof-mklog: %s%s%s", what, detail ? ": " : "\n", detail ? detail : "");
    if (detail != NULL && detail[strlen(detail) - 1] != '\n')
        fputc('\n', stderr);
    exit(1);
}

static PGresult *run(const char *sql, int n, const char *const *v, ExecStatusType want)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != want)
        die(sql, PQresultErrorMessage(r));
    return r;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* A COPY FROM STDIN fed in chunks. */
struct copy {
    char *buf;
    size_t len;
};

static void copy_start(struct copy *c, const char *sql)
{
    PQclear(run(sql, 0, NULL, PGRES_COPY_IN));
    c->buf = malloc(COPY_CHUNK + 4096);
    c->len = 0;
    if (c->buf == NULL)
        die("out of memory", NULL);
}

static void copy_flush(struct copy *c)
{
    if (c->len > 0 && PQputCopyData(conn, c->buf, (int)c->len) != 1)
        die("COPY", PQerrorMessage(conn));
    c->len = 0;
}

static void copy_row(struct copy *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void copy_row(struct copy *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->buf + c->len, 4096, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= 4096)
        die("a COPY row is too long", NULL);
    c->len += (size_t)n;
    if (c->len >= COPY_CHUNK)
        copy_flush(c);
}

static void copy_end(struct copy *c)
{
    copy_flush(c);
    if (PQputCopyEnd(conn, NULL) != 1)
        die("COPY end", PQerrorMessage(conn));
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("COPY", PQresultErrorMessage(r));
        PQclear(r);
    }
    free(c->buf);
}

static int emit_node(void *arg, unsigned level, uint64_t index, const uint8_t hash[MERKLE_HASH_LEN])
{
    struct copy *nodes = arg;
    char h[2 * MERKLE_HASH_LEN + 1];
    hex(hash, MERKLE_HASH_LEN, h);
    copy_row(nodes, "%u\t%" PRIu64 "\t\\\\x%s\n", level, index, h);
    return 0;
}

static void new_id(char out[UUID_STR_LEN + 1])
{
    uint8_t b[16];
    if (uuid_v4(b) != 0)
        die("no randomness", NULL);
    uuid_format(b, out);
}

int main(int argc, char **argv)
{
    const char *url = getenv("TAGPROOF_TEST_PG_OWNER_URL"), *key_file = NULL;
    const char *origin = "tagproof.local/log", *tags_out = NULL, *batch_arg = NULL;
    uint64_t leaves = 0, queued = 0;
    int checkpoint = 1;
    char factory[UUID_STR_LEN + 1], product[UUID_STR_LEN + 1], batch[UUID_STR_LEN + 1];
    char when[32], err[256], root_hex[2 * MERKLE_HASH_LEN + 1];
    struct merkle_frontier f;
    struct merkle_hasher *h = merkle_hasher_new();
    struct note_signer *signer;
    uint8_t root[MERKLE_HASH_LEN];
    FILE *out = NULL;
    PGresult *r;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-checkpoint") == 0) {
            checkpoint = 0;
            continue;
        }
        if (v == NULL)
            die("usage: tagproof-mklog --url URL --key-file PATH [--leaves N] [--queued N] "
                "[--no-checkpoint] [--origin O] [--batch ID] [--tags-out FILE]",
                NULL);
        i++;
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--key-file") == 0)
            key_file = v;
        else if (strcmp(a, "--leaves") == 0)
            leaves = strtoull(v, NULL, 10);
        else if (strcmp(a, "--queued") == 0)
            queued = strtoull(v, NULL, 10);
        else if (strcmp(a, "--origin") == 0)
            origin = v;
        else if (strcmp(a, "--batch") == 0)
            batch_arg = v;
        else if (strcmp(a, "--tags-out") == 0)
            tags_out = v;
        else
            die("unknown option", a);
    }
    if (url == NULL || key_file == NULL || h == NULL)
        die("--url (or TAGPROOF_TEST_PG_OWNER_URL) and --key-file are required", NULL);
    if ((signer = note_signer_load_or_create(key_file, origin, err, sizeof(err))) == NULL)
        die("the signing key", err);
    conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK)
        die("cannot connect", PQerrorMessage(conn));
    if (tags_out != NULL && (out = fopen(tags_out, "w")) == NULL)
        die("cannot write", tags_out);

    PQclear(run("BEGIN", 0, NULL, PGRES_COMMAND_OK));
    /* One appender at a time, as tagproof-anchor's leader. */
    PQclear(run("LOCK TABLE merkle_nodes IN EXCLUSIVE MODE", 0, NULL, PGRES_COMMAND_OK));
    if (batch_arg != NULL) {
        const char *v[] = {batch_arg};
        r = run("SELECT factory_id, product_id, id FROM batches WHERE id = $1::uuid", 1, v,
                PGRES_TUPLES_OK);
        if (PQntuples(r) != 1)
            die("no such batch", batch_arg);
        snprintf(factory, sizeof(factory), "%s", PQgetvalue(r, 0, 0));
        snprintf(product, sizeof(product), "%s", PQgetvalue(r, 0, 1));
        snprintf(batch, sizeof(batch), "%s", PQgetvalue(r, 0, 2));
        PQclear(r);
    } else {
        new_id(factory);
        new_id(product);
        new_id(batch);
        const char *v[] = {factory, product, batch};
        PQclear(run("INSERT INTO factories (id, name) VALUES ($1::uuid, 'mklog ' || $1::text)", 1,
                    v, PGRES_COMMAND_OK));
        PQclear(run("INSERT INTO products (id, factory_id, sku, name)"
                    " VALUES ($2, $1, 'MKLOG', 'mklog product')",
                    2, v, PGRES_COMMAND_OK));
        PQclear(run("INSERT INTO batches (id, factory_id, product_id, code)"
                    " VALUES ($3, $1, $2, 'MKLOG')",
                    3, v, PGRES_COMMAND_OK));
    }

    /* The frontier of the leaves already there: one stored subtree per 1 bit of the size. */
    merkle_frontier_init(&f);
    r = run("SELECT coalesce(max(leaf_index) + 1, 0) FROM log_entries", 0, NULL, PGRES_TUPLES_OK);
    f.size = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    for (unsigned level = 0; level < MERKLE_MAX_PROOF; level++) {
        if (((f.size >> level) & 1) == 0)
            continue;
        char lv[8], ix[24];
        snprintf(lv, sizeof(lv), "%u", level);
        snprintf(ix, sizeof(ix), "%" PRIu64, (f.size >> level) - 1);
        const char *v[] = {lv, ix};
        r = run("SELECT encode(hash, 'hex') FROM merkle_nodes WHERE level = $1 AND idx = $2", 2, v,
                PGRES_TUPLES_OK);
        if (PQntuples(r) != 1)
            die("merkle_nodes lacks a subtree of the log's right edge", NULL);
        for (int i = 0; i < MERKLE_HASH_LEN; i++)
            sscanf(PQgetvalue(r, 0, 0) + 2 * i, "%2hhx", &f.edge[level][i]);
        PQclear(r);
    }

    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);

    /* Tags first (log entries refer to them), then their entries and subtrees. */
    uint64_t total = leaves + queued;
    char(*ids)[UUID_STR_LEN + 1] = malloc((total ? total : 1) * sizeof(*ids));
    if (ids == NULL)
        die("out of memory", NULL);
    struct copy c;
    /* Row-level security refuses COPY into its tables: COPY into a copy, then INSERT. */
    PQclear(run("CREATE TEMP TABLE mk_tags (LIKE tags) ON COMMIT DROP", 0, NULL, PGRES_COMMAND_OK));
    PQclear(run("CREATE TEMP TABLE mk_entries (kind text, factory_id uuid, tag_id uuid,"
                " batch_id uuid, record bytea, leaf_index bigint, leaf_hash bytea,"
                " appended_at timestamptz) ON COMMIT DROP",
                0, NULL, PGRES_COMMAND_OK));
    copy_start(&c, "COPY mk_tags (tag_id, factory_id, batch_id, product_id, registered_at)"
                   " FROM STDIN");
    for (uint64_t i = 0; i < total; i++) {
        new_id(ids[i]);
        copy_row(&c, "%s\t%s\t%s\t%s\t%s\n", ids[i], factory, batch, product, when);
    }
    copy_end(&c);
    PQclear(run("INSERT INTO tags SELECT * FROM mk_tags", 0, NULL, PGRES_COMMAND_OK));

    struct copy nodes;
    uint8_t *leaf_hashes = malloc((leaves ? leaves : 1) * MERKLE_HASH_LEN);
    if (leaf_hashes == NULL)
        die("out of memory", NULL);
    copy_start(&c, "COPY mk_entries (kind, factory_id, tag_id, batch_id, record, leaf_index,"
                   " leaf_hash, appended_at) FROM STDIN");
    for (uint64_t i = 0; i < total; i++) {
        char record[512], rec_hex[1024], lh[2 * MERKLE_HASH_LEN + 1];
        int n = snprintf(record, sizeof(record), "tagproof/tag/v1\n%s\n%s\n%s\n%s\n%s\n", ids[i],
                         factory, batch, product, when);
        hex((const uint8_t *)record, (size_t)n, rec_hex);
        if (i < leaves) {
            merkle_leaf_hash(h, record, (size_t)n, leaf_hashes + i * MERKLE_HASH_LEN);
            hex(leaf_hashes + i * MERKLE_HASH_LEN, MERKLE_HASH_LEN, lh);
            copy_row(&c, "tag\t%s\t%s\t%s\t\\\\x%s\t%" PRIu64 "\t\\\\x%s\t%s\n", factory, ids[i],
                     batch, rec_hex, f.size + i, lh, when);
            if (out != NULL)
                fprintf(out, "%s %" PRIu64 "\n", ids[i], f.size + i);
        } else {
            copy_row(&c, "tag\t%s\t%s\t%s\t\\\\x%s\t\\N\t\\N\t\\N\n", factory, ids[i], batch,
                     rec_hex);
            if (out != NULL)
                fprintf(out, "%s -\n", ids[i]);
        }
    }
    copy_end(&c);
    PQclear(run("INSERT INTO log_entries (kind, factory_id, tag_id, batch_id, record, leaf_index,"
                " leaf_hash, appended_at) SELECT kind, factory_id, tag_id, batch_id, record,"
                " leaf_index, leaf_hash, appended_at FROM mk_entries ORDER BY leaf_index",
                0, NULL, PGRES_COMMAND_OK));
    copy_start(&nodes, "COPY merkle_nodes (level, idx, hash) FROM STDIN");
    for (uint64_t i = 0; i < leaves; i++)
        if (merkle_frontier_append(h, &f, leaf_hashes + i * MERKLE_HASH_LEN, emit_node, &nodes) !=
            0)
            die("the tree is full", NULL);
    copy_end(&nodes);
    free(leaf_hashes);
    free(ids);

    merkle_frontier_root(h, &f, root);
    hex(root, MERKLE_HASH_LEN, root_hex);
    if (checkpoint && f.size > 0) {
        char *body = note_checkpoint_body(origin, f.size, root);
        char *note = body != NULL ? note_sign(signer, body, strlen(body)) : NULL;
        char size[24];
        if (note == NULL)
            die("cannot sign the checkpoint", NULL);
        snprintf(size, sizeof(size), "%" PRIu64, f.size);
        const char *v[] = {size, root_hex, note};
        PQclear(run("INSERT INTO checkpoints (size, root, note)"
                    " VALUES ($1::bigint, decode($2, 'hex'), $3) ON CONFLICT (size) DO NOTHING",
                    3, v, PGRES_COMMAND_OK));
        free(body);
        free(note);
    }
    const char *k[] = {note_signer_vkey(signer), origin};
    PQclear(run("INSERT INTO log_keys (vkey, origin) VALUES ($1, $2)"
                " ON CONFLICT (vkey) DO UPDATE SET last_used_at = now()",
                2, k, PGRES_COMMAND_OK));
    PQclear(run("COMMIT", 0, NULL, PGRES_COMMAND_OK));

    printf("{\"size\":%" PRIu64 ",\"root\":\"%s\",\"checkpoint\":%s,\"vkey\":\"%s\","
           "\"factory_id\":\"%s\",\"product_id\":\"%s\",\"batch_id\":\"%s\"}\n",
           f.size, root_hex, checkpoint ? "true" : "false", note_signer_vkey(signer), factory,
           product, batch);
    if (out != NULL && fclose(out) != 0)
        die("cannot write", tags_out);
    note_signer_free(signer);
    merkle_hasher_free(h);
    PQfinish(conn);
    return 0;
}
