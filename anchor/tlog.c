/*
 * tlog: appending the Merkle log in PostgreSQL batch by batch, and signing its checkpoints.
 * Parameters travel as text arrays (ids, hex hashes) unnested by the server, so a batch of
 * thousands of leaves is three statements, not thousands.
 */
#include "tlog.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merkle.h"
#include "note.h"

#define TLOG_ORIGIN_MAX 256

struct tlog {
    struct merkle_hasher *hasher;
    struct merkle_frontier frontier;
    int restored; /* the frontier matches the database */
    char *origin;
    const struct note_signer *signer;
    void (*hook)(void *arg, const char *point);
    void *hook_arg;
};

/* A growing text buffer for array literals. */
struct buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_u64(struct buf *b, uint64_t v)
{
    char s[24];
    buf_add(b, s, (size_t)snprintf(s, sizeof(s), "%" PRIu64, v));
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void buf_hash(struct buf *b, const uint8_t h[MERKLE_HASH_LEN])
{
    char s[2 * MERKLE_HASH_LEN + 1];
    hex(h, MERKLE_HASH_LEN, s);
    buf_add(b, s, 2 * MERKLE_HASH_LEN);
}

/* Separates array elements: "{" before the first, "," after. */
static void buf_sep(struct buf *b, size_t i)
{
    buf_str(b, i == 0 ? "{" : ",");
}

static void buf_end(struct buf *b, size_t n)
{
    buf_str(b, n == 0 ? "{}" : "}");
}

static void hook(struct tlog *t, const char *point)
{
    if (t->hook != NULL)
        t->hook(t->hook_arg, point);
}

struct tlog *tlog_new(const char *origin, const struct note_signer *signer,
                      void (*hook_fn)(void *arg, const char *point), void *hook_arg)
{
    struct tlog *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->hasher = merkle_hasher_new()) == NULL ||
        (t->origin = strdup(origin)) == NULL) {
        tlog_free(t);
        return NULL;
    }
    t->signer = signer;
    t->hook = hook_fn;
    t->hook_arg = hook_arg;
    merkle_frontier_init(&t->frontier);
    return t;
}

void tlog_free(struct tlog *t)
{
    if (t == NULL)
        return;
    merkle_hasher_free(t->hasher);
    free(t->origin);
    free(t);
}

uint64_t tlog_size(const struct tlog *t)
{
    return t->frontier.size;
}

/* Runs sql; 0 when it returned the expected status, else -1 with the server's message. */
static int exec_ok(PGconn *conn, PGresult *res, ExecStatusType want, const char *what, char *err,
                   size_t errlen)
{
    (void)conn;
    if (res != NULL && PQresultStatus(res) == want)
        return 0;
    const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
    return -1;
}

static int exec_cmd(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    int rc = exec_ok(conn, res, PGRES_COMMAND_OK, sql, err, errlen);
    PQclear(res);
    return rc;
}

static void rollback(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

/* Decodes 2n hex digits; 0 or -1. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

int tlog_restore(struct tlog *t, PGconn *conn, char *err, size_t errlen)
{
    struct merkle_frontier f;
    struct buf levels = {0}, idxs = {0};
    PGresult *res = NULL;
    int rc = -1;
    size_t want = 0;

    t->restored = 0;
    merkle_frontier_init(&f);
    res = PQexec(conn, "SELECT coalesce(max(leaf_index) + 1, 0) FROM log_entries");
    if (exec_ok(conn, res, PGRES_TUPLES_OK, "reading the log's size", err, errlen) != 0)
        goto done;
    f.size = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    res = NULL;

    /* The right edge: where bit `level` of the size is 1, the subtree (level, size/2^level - 1). */
    for (unsigned level = 0; level < MERKLE_MAX_PROOF; level++) {
        if (((f.size >> level) & 1) == 0)
            continue;
        buf_sep(&levels, want);
        buf_sep(&idxs, want);
        buf_u64(&levels, level);
        buf_u64(&idxs, (f.size >> level) - 1);
        want++;
    }
    buf_end(&levels, want);
    buf_end(&idxs, want);
    if (levels.failed || idxs.failed) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    const char *params[2] = {levels.p, idxs.p};
    res = PQexecParams(conn,
                       "SELECT n.level, encode(n.hash, 'hex') FROM merkle_nodes n"
                       " JOIN unnest($1::smallint[], $2::bigint[]) AS e(level, idx)"
                       " ON n.level = e.level AND n.idx = e.idx",
                       2, NULL, params, NULL, NULL, 0);
    if (exec_ok(conn, res, PGRES_TUPLES_OK, "reading the log's right edge", err, errlen) != 0)
        goto done;
    if ((size_t)PQntuples(res) != want) {
        snprintf(err, errlen,
                 "merkle_nodes lacks %zu of the %zu right-edge subtrees of a log of %" PRIu64
                 " leaves",
                 want - (size_t)PQntuples(res), want, f.size);
        goto done;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        unsigned level = (unsigned)atoi(PQgetvalue(res, r, 0));
        if (level >= MERKLE_MAX_PROOF || unhex(PQgetvalue(res, r, 1), f.edge[level], 32) != 0) {
            snprintf(err, errlen, "merkle_nodes holds a malformed right-edge hash");
            goto done;
        }
    }
    PQclear(res);
    res = NULL;
    /* The last leaf's row and its level-0 node were written together: they must agree. */
    if (f.size > 0) {
        char last[24];
        snprintf(last, sizeof(last), "%" PRIu64, f.size - 1);
        const char *p1[1] = {last};
        res = PQexecParams(conn,
                           "SELECT 1 FROM log_entries e JOIN merkle_nodes n"
                           " ON n.level = 0 AND n.idx = e.leaf_index AND n.hash = e.leaf_hash"
                           " WHERE e.leaf_index = $1",
                           1, NULL, p1, NULL, NULL, 0);
        if (exec_ok(conn, res, PGRES_TUPLES_OK, "checking the last leaf", err, errlen) != 0)
            goto done;
        if (PQntuples(res) != 1) {
            snprintf(err, errlen, "leaf %" PRIu64 " and its merkle_nodes entry disagree",
                     f.size - 1);
            goto done;
        }
    }
    t->frontier = f;
    t->restored = 1;
    rc = 0;
done:
    PQclear(res);
    free(levels.p);
    free(idxs.p);
    return rc;
}

/* The subtrees an append completes, gathered for one INSERT. */
struct nodes {
    struct buf levels, idxs, hashes;
    size_t n;
};

static int collect_node(void *arg, unsigned level, uint64_t index,
                        const uint8_t hash[MERKLE_HASH_LEN])
{
    struct nodes *ns = arg;
    buf_sep(&ns->levels, ns->n);
    buf_sep(&ns->idxs, ns->n);
    buf_sep(&ns->hashes, ns->n);
    buf_u64(&ns->levels, level);
    buf_u64(&ns->idxs, index);
    buf_hash(&ns->hashes, hash);
    ns->n++;
    return ns->levels.failed || ns->idxs.failed || ns->hashes.failed ? -1 : 0;
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint8_t)p[i];
    return v;
}

int tlog_append(struct tlog *t, PGconn *conn, int max, int *appended, char *err, size_t errlen)
{
    struct merkle_frontier f = t->frontier;
    struct nodes ns = {0};
    struct buf ids = {0}, leaves = {0}, hashes = {0};
    PGresult *res = NULL;
    char limit[16];
    int rc = -1, in_tx = 0, n = 0;

    *appended = 0;
    if (!t->restored) {
        snprintf(err, errlen, "the frontier was not restored");
        return -1;
    }
    if (exec_cmd(conn, "BEGIN", err, errlen) != 0)
        goto done;
    in_tx = 1;
    snprintf(limit, sizeof(limit), "%d", max > 0 ? max : 1);
    const char *p1[1] = {limit};
    /* Binary results: the id as a big-endian int8, the record as its raw bytes. */
    res = PQexecParams(conn,
                       "SELECT id, record FROM log_entries WHERE leaf_index IS NULL"
                       " ORDER BY id LIMIT $1::int FOR UPDATE",
                       1, NULL, p1, NULL, NULL, 1);
    if (exec_ok(conn, res, PGRES_TUPLES_OK, "reading pending log entries", err, errlen) != 0)
        goto done;
    n = PQntuples(res);
    if (n == 0) {
        rc = 0;
        goto done;
    }
    for (int r = 0; r < n; r++) {
        uint8_t leaf[MERKLE_HASH_LEN];
        if (PQgetlength(res, r, 0) != 8) {
            snprintf(err, errlen, "unexpected id format");
            goto done;
        }
        uint64_t index = f.size;
        merkle_leaf_hash(t->hasher, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1), leaf);
        if (merkle_frontier_append(t->hasher, &f, leaf, collect_node, &ns) != 0) {
            snprintf(err, errlen, "out of memory (or a full tree)");
            goto done;
        }
        buf_sep(&ids, (size_t)r);
        buf_sep(&leaves, (size_t)r);
        buf_sep(&hashes, (size_t)r);
        buf_u64(&ids, be64(PQgetvalue(res, r, 0)));
        buf_u64(&leaves, index);
        buf_hash(&hashes, leaf);
    }
    buf_end(&ids, (size_t)n);
    buf_end(&leaves, (size_t)n);
    buf_end(&hashes, (size_t)n);
    buf_end(&ns.levels, ns.n);
    buf_end(&ns.idxs, ns.n);
    buf_end(&ns.hashes, ns.n);
    if (ids.failed || leaves.failed || hashes.failed || ns.levels.failed || ns.idxs.failed ||
        ns.hashes.failed) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    PQclear(res);
    const char *p3[3] = {ids.p, leaves.p, hashes.p};
    res = PQexecParams(conn,
                       "UPDATE log_entries e SET leaf_index = v.leaf_index,"
                       " leaf_hash = decode(v.leaf_hash, 'hex'), appended_at = now()"
                       " FROM unnest($1::bigint[], $2::bigint[], $3::text[])"
                       " AS v(id, leaf_index, leaf_hash)"
                       " WHERE e.id = v.id AND e.leaf_index IS NULL",
                       3, NULL, p3, NULL, NULL, 0);
    if (exec_ok(conn, res, PGRES_COMMAND_OK, "assigning leaf indexes", err, errlen) != 0)
        goto done;
    if (atoi(PQcmdTuples(res)) != n) {
        snprintf(err, errlen, "assigned %s leaf indexes, expected %d", PQcmdTuples(res), n);
        goto done;
    }
    PQclear(res);
    const char *p4[3] = {ns.levels.p, ns.idxs.p, ns.hashes.p};
    res = PQexecParams(
        conn,
        "INSERT INTO merkle_nodes (level, idx, hash)"
        " SELECT level, idx, decode(hash, 'hex')"
        " FROM unnest($1::smallint[], $2::bigint[], $3::text[]) AS v(level, idx, hash)",
        3, NULL, p4, NULL, NULL, 0);
    if (exec_ok(conn, res, PGRES_COMMAND_OK, "storing subtree hashes", err, errlen) != 0)
        goto done;
    PQclear(res);
    res = NULL;
    hook(t, "append_before_commit");
    in_tx = 0;
    if (exec_cmd(conn, "COMMIT", err, errlen) != 0) {
        /* A COMMIT whose answer was lost may have happened: only a restore can tell. */
        t->restored = 0;
        goto done;
    }
    t->frontier = f;
    *appended = n;
    hook(t, "append_after_commit");
    rc = 0;
done:
    if (in_tx)
        rollback(conn);
    if (rc != 0)
        t->restored = 0;
    PQclear(res);
    free(ids.p);
    free(leaves.p);
    free(hashes.p);
    free(ns.levels.p);
    free(ns.idxs.p);
    free(ns.hashes.p);
    return rc;
}

/* Reads stored subtrees one by one for the consistency proof (O(log n) of them). */
struct getter {
    PGconn *conn;
    char *err;
    size_t errlen;
};

static int get_node(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    struct getter *g = arg;
    char l[8], i[24];
    snprintf(l, sizeof(l), "%u", level);
    snprintf(i, sizeof(i), "%" PRIu64, index);
    const char *params[2] = {l, i};
    PGresult *res = PQexecParams(g->conn,
                                 "SELECT encode(hash, 'hex') FROM merkle_nodes"
                                 " WHERE level = $1::smallint AND idx = $2::bigint",
                                 2, NULL, params, NULL, NULL, 0);
    int rc = exec_ok(g->conn, res, PGRES_TUPLES_OK, "reading a subtree", g->err, g->errlen);
    if (rc == 0 && (PQntuples(res) != 1 || unhex(PQgetvalue(res, 0, 0), out, 32) != 0)) {
        snprintf(g->err, g->errlen, "merkle_nodes lacks subtree (%u, %" PRIu64 ")", level, index);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

int tlog_checkpoint(struct tlog *t, PGconn *conn, const char *ledger, uint64_t *made, char *err,
                    size_t errlen)
{
    uint8_t root[MERKLE_HASH_LEN];
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    struct merkle_bytes pb[MERKLE_MAX_PROOF];
    char *body = NULL, *note = NULL;
    PGresult *res = NULL;
    int rc = -1, in_tx = 0;
    uint64_t size = t->frontier.size, last_size = 0;
    uint8_t last_root[MERKLE_HASH_LEN];

    *made = 0;
    if (!t->restored) {
        snprintf(err, errlen, "the frontier was not restored");
        return -1;
    }
    res = PQexec(conn, "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1");
    if (exec_ok(conn, res, PGRES_TUPLES_OK, "reading the last checkpoint", err, errlen) != 0)
        goto done;
    if (PQntuples(res) == 1) {
        /* The previous tree is taken from the signed note itself, not the columns beside it. */
        char origin[TLOG_ORIGIN_MAX];
        const char *prev = PQgetvalue(res, 0, 1);
        size_t text_len = 0;
        last_size = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (note_verify(note_signer_vkey(t->signer), prev, strlen(prev), &text_len) != 0) {
            snprintf(err, errlen,
                     "the last checkpoint (size %" PRIu64 ") is not signed by this log's key %s",
                     last_size, note_signer_vkey(t->signer));
            goto done;
        }
        uint64_t noted = 0;
        if (note_checkpoint_parse(prev, text_len, origin, sizeof(origin), &noted, last_root) != 0 ||
            noted != last_size || strcmp(origin, t->origin) != 0) {
            snprintf(err, errlen, "the last checkpoint's note does not match its row");
            goto done;
        }
    }
    PQclear(res);
    res = NULL;
    if (size < last_size) {
        snprintf(err, errlen,
                 "the log has %" PRIu64 " leaves, fewer than its last checkpoint's %" PRIu64, size,
                 last_size);
        goto done;
    }
    if (size == last_size || size == 0) {
        rc = 0;
        goto done;
    }
    merkle_frontier_root(t->hasher, &t->frontier, root);
    if (last_size > 0) {
        struct getter g = {conn, err, errlen};
        size_t n = 0;
        if (merkle_consistency_proof(t->hasher, last_size, size, get_node, &g, proof, &n) != 0)
            goto done;
        for (size_t i = 0; i < n; i++)
            pb[i] = (struct merkle_bytes){proof[i], MERKLE_HASH_LEN};
        if (merkle_verify_consistency(t->hasher, last_size, size,
                                      (struct merkle_bytes){last_root, MERKLE_HASH_LEN},
                                      (struct merkle_bytes){root, MERKLE_HASH_LEN}, pb, n) != 0) {
            snprintf(err, errlen,
                     "refusing to sign: the tree of %" PRIu64 " leaves is not consistent with the "
                     "signed checkpoint of %" PRIu64,
                     size, last_size);
            goto done;
        }
    }
    if ((body = note_checkpoint_body(t->origin, size, root)) == NULL ||
        (note = note_sign(t->signer, body, strlen(body))) == NULL) {
        snprintf(err, errlen, "cannot sign the checkpoint");
        goto done;
    }
    char size_s[24], root_hex[2 * MERKLE_HASH_LEN + 1];
    snprintf(size_s, sizeof(size_s), "%" PRIu64, size);
    hex(root, MERKLE_HASH_LEN, root_hex);
    if (exec_cmd(conn, "BEGIN", err, errlen) != 0)
        goto done;
    in_tx = 1;
    const char *p3[3] = {size_s, root_hex, note};
    res = PQexecParams(conn,
                       "INSERT INTO checkpoints (size, root, note)"
                       " VALUES ($1::bigint, decode($2, 'hex'), $3)",
                       3, NULL, p3, NULL, NULL, 0);
    if (exec_ok(conn, res, PGRES_COMMAND_OK, "storing the checkpoint", err, errlen) != 0)
        goto done;
    PQclear(res);
    const char *p2[2] = {size_s, ledger};
    res = PQexecParams(conn,
                       "INSERT INTO anchors (checkpoint_size, ledger, state)"
                       " VALUES ($1::bigint, $2, 'pending')",
                       2, NULL, p2, NULL, NULL, 0);
    if (exec_ok(conn, res, PGRES_COMMAND_OK, "recording the anchor", err, errlen) != 0)
        goto done;
    PQclear(res);
    res = NULL;
    in_tx = 0;
    if (exec_cmd(conn, "COMMIT", err, errlen) != 0)
        goto done;
    *made = size;
    rc = 0;
done:
    if (in_tx)
        rollback(conn);
    PQclear(res);
    free(body);
    free(note);
    return rc;
}
