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
#include "uuid.h"

#define TLOG_ORIGIN_MAX 256
#define TLOG_WINDOW_DEFAULT ((size_t)1 << 20) /* tag ids read ahead: 16 MiB */

/*
 * The tag ids of the upload being expanded, in tag order, read ahead: those of log entry
 * `entry` after `after` (all of them when !has_after), at most the tlog's window of them;
 * complete when they are the last. An upload's tags never change once its entry is queued
 * (a tag joins an upload only while it is processing, migration 0009), so the window stays
 * right across appends until the expansion moves past it. It is keyed by the entry and its
 * upload: entry ids are not reused in one database, but a restored one could hand one out
 * again.
 */
struct window {
    uint64_t entry; /* 0: empty */
    uint8_t upload[16];
    int has_after, complete;
    uint8_t after[16];
    uint8_t (*ids)[16];
    size_t n, cap;
};

struct tlog {
    struct merkle_hasher *hasher;
    struct merkle_frontier frontier;
    int restored; /* the frontier matches the database */
    char *origin;
    const struct note_signer *signer;
    void (*hook)(void *arg, const char *point);
    void *hook_arg;
    struct window win;
    size_t win_max;
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
    t->win_max = TLOG_WINDOW_DEFAULT;
    merkle_frontier_init(&t->frontier);
    return t;
}

void tlog_set_window(struct tlog *t, size_t tags)
{
    t->win_max = tags > 0 ? tags : 1;
    t->win.entry = 0;
}

void tlog_free(struct tlog *t)
{
    if (t == NULL)
        return;
    merkle_hasher_free(t->hasher);
    free(t->origin);
    free(t->win.ids);
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

/*
 * One append's writes, gathered as array literals: the queued leaves given their indexes
 * (ids), the leaves of expanded uploads inserted (tags, with the upload entry each came
 * from), the upload entries' progress, and the subtrees completed.
 */
struct append {
    struct buf ids, leaves, hashes;
    size_t n_queued;
    struct buf tags, tag_leaves, tag_hashes, tag_entries;
    size_t n_tags;
    struct buf up_ids, up_cursors, up_done;
    size_t n_uploads;
    struct nodes ns;
};

static int append_failed(const struct append *ap)
{
    return ap->ids.failed || ap->leaves.failed || ap->hashes.failed || ap->tags.failed ||
           ap->tag_leaves.failed || ap->tag_hashes.failed || ap->tag_entries.failed ||
           ap->up_ids.failed || ap->up_cursors.failed || ap->up_done.failed ||
           ap->ns.levels.failed || ap->ns.idxs.failed || ap->ns.hashes.failed;
}

static void append_free(struct append *ap)
{
    struct buf *all[] = {&ap->ids,        &ap->leaves,     &ap->hashes,      &ap->tags,
                         &ap->tag_leaves, &ap->tag_hashes, &ap->tag_entries, &ap->up_ids,
                         &ap->up_cursors, &ap->up_done,    &ap->ns.levels,   &ap->ns.idxs,
                         &ap->ns.hashes};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->p);
}

/* Hashes a record into the frontier as the next leaf; its index and hash go to *index, leaf. */
static int append_leaf(struct tlog *t, struct merkle_frontier *f, struct append *ap,
                       const char *record, size_t len, uint64_t *index,
                       uint8_t leaf[MERKLE_HASH_LEN])
{
    *index = f->size;
    merkle_leaf_hash(t->hasher, record, len, leaf);
    return merkle_frontier_append(t->hasher, f, leaf, collect_node, &ap->ns);
}

/* Runs a query; its rows (results binary when binary), or NULL with err. */
static PGresult *query_rows(PGconn *conn, const char *sql, int nparams, const char *const *params,
                            int binary, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, binary);
    if (exec_ok(conn, res, PGRES_TUPLES_OK, what, err, errlen) == 0)
        return res;
    PQclear(res);
    return NULL;
}

/* Where the tags after `after` (NULL: from the first) start in the window, or -1. */
static long window_find(const struct window *w, uint64_t entry, const uint8_t upload[16],
                        const uint8_t *after)
{
    if (w->entry != entry || memcmp(w->upload, upload, 16) != 0)
        return -1;
    if (after == NULL)
        return w->has_after ? -1 : 0;
    if (w->has_after && memcmp(after, w->after, 16) == 0)
        return 0;
    size_t lo = 0, hi = w->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(w->ids[mid], after, 16);
        if (c == 0)
            return (long)mid + 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/*
 * Reads the window of an upload's tag ids after `after`: one scan of the upload's blocks
 * through tags_batch_upload (migration 0008) and one sort, for up to win_max tags.
 */
static int window_read(struct tlog *t, PGconn *conn, uint64_t entry, const char *batch,
                       const char *upload, const uint8_t upload_id[16], const uint8_t *after,
                       char *err, size_t errlen)
{
    struct window *w = &t->win;
    char from[UUID_STR_LEN + 1], lim[24];
    if (after != NULL)
        uuid_format(after, from);
    snprintf(lim, sizeof(lim), "%zu", t->win_max);
    const char *p[4] = {batch, upload, after != NULL ? from : NULL, lim};
    w->entry = 0;
    PGresult *res = query_rows(conn,
                               "SELECT tag_id FROM tags WHERE batch_id = $1::uuid"
                               " AND upload_id = $2::uuid"
                               " AND ($3::uuid IS NULL OR tag_id > $3::uuid)"
                               " ORDER BY tag_id LIMIT $4::bigint",
                               4, p, 1, "reading an upload's tags", err, errlen);
    if (res == NULL)
        return -1;
    size_t n = (size_t)PQntuples(res);
    if (n > w->cap) {
        uint8_t(*ids)[16] = realloc(w->ids, n * sizeof(*ids));
        if (ids == NULL) {
            snprintf(err, errlen, "out of memory for %zu tag ids", n);
            PQclear(res);
            return -1;
        }
        w->ids = ids;
        w->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (PQgetlength(res, (int)i, 0) != 16) {
            snprintf(err, errlen, "unexpected uuid format");
            PQclear(res);
            return -1;
        }
        memcpy(w->ids[i], PQgetvalue(res, (int)i, 0), 16);
    }
    PQclear(res);
    w->has_after = after != NULL;
    if (after != NULL)
        memcpy(w->after, after, 16);
    w->n = n;
    w->complete = n < t->win_max;
    memcpy(w->upload, upload_id, 16);
    w->entry = entry;
    return 0;
}

/*
 * The ids of the next tags of an upload entry after cursor (NULL: from its first), at most
 * room of them, as an array literal into ids; *k gets how many.
 */
static int next_tags(struct tlog *t, PGconn *conn, uint64_t entry, const char *batch,
                     const char *upload, const char *cursor, int room, struct buf *ids, int *k,
                     char *err, size_t errlen)
{
    uint8_t at[16], up[16];
    const uint8_t *after = NULL;
    char s[UUID_STR_LEN + 1];
    if (uuid_parse(upload, strlen(upload), up) != 0) {
        snprintf(err, errlen, "upload entry %" PRIu64 ": bad upload id", entry);
        return -1;
    }
    if (cursor != NULL) {
        if (uuid_parse(cursor, strlen(cursor), at) != 0) {
            snprintf(err, errlen, "upload entry %" PRIu64 ": bad cursor", entry);
            return -1;
        }
        after = at;
    }
    *k = 0;
    while (*k < room) {
        const struct window *w = &t->win;
        long pos = window_find(w, entry, up, after);
        if (pos < 0 || ((size_t)pos == w->n && !w->complete)) {
            if (window_read(t, conn, entry, batch, upload, up, after, err, errlen) != 0)
                return -1;
            pos = 0;
        }
        size_t take = w->n - (size_t)pos;
        if (take > (size_t)(room - *k))
            take = (size_t)(room - *k);
        for (size_t i = 0; i < take; i++) {
            uuid_format(w->ids[(size_t)pos + i], s);
            buf_sep(ids, (size_t)*k + i);
            buf_str(ids, s);
        }
        *k += (int)take;
        if ((size_t)pos + take == w->n && w->complete)
            break;
        memcpy(at, w->ids[(size_t)pos + take - 1], 16);
        after = at;
    }
    buf_end(ids, (size_t)*k);
    return ids->failed ? (snprintf(err, errlen, "out of memory"), -1) : 0;
}

/*
 * The next tags of an upload entry (SPEC §7 records built from their rows, in tag order after
 * its cursor), at most room of them, appended as leaves. *used gets how many; the entry is
 * done when fewer than room were left.
 */
static int expand_upload(struct tlog *t, PGconn *conn, struct merkle_frontier *f, struct append *ap,
                         PGresult *queue, int row, int room, int *used, char *err, size_t errlen)
{
    char id[24];
    uint64_t entry = be64(PQgetvalue(queue, row, 0));
    snprintf(id, sizeof(id), "%" PRIu64, entry);
    const char *batch = PQgetvalue(queue, row, 4), *upload = PQgetvalue(queue, row, 3);
    const char *cursor = PQgetisnull(queue, row, 5) ? NULL : PQgetvalue(queue, row, 5);
    /*
     * The batch first, FOR KEY SHARE, as the leaves' INSERT will lock it after taking the
     * log's advisory lock (migrations 0003, 0004). A recall locks its batch FOR UPDATE and
     * then takes the advisory lock; holding the batch before the advisory lock, as uploads do,
     * makes the two wait for each other instead of deadlocking.
     */
    PGresult *res = query_rows(conn, "SELECT 1 FROM batches WHERE id = $1::uuid FOR KEY SHARE", 1,
                               &batch, 0, "locking an upload's batch", err, errlen);
    if (res == NULL)
        return -1;
    PQclear(res);
    struct buf ids = {0};
    int k = 0;
    if (next_tags(t, conn, entry, batch, upload, cursor, room, &ids, &k, err, errlen) != 0) {
        free(ids.p);
        return -1;
    }
    const char *p[3] = {ids.p, batch, upload};
    res = query_rows(conn,
                     "SELECT t.tag_id::text, tagproof_tag_record(t)"
                     " FROM unnest($1::uuid[]) WITH ORDINALITY AS v(tag_id, o)"
                     " JOIN tags t ON t.tag_id = v.tag_id"
                     " WHERE t.batch_id = $2::uuid AND t.upload_id = $3::uuid ORDER BY v.o",
                     3, p, 1, "reading an upload's tags", err, errlen);
    free(ids.p);
    if (res == NULL)
        return -1;
    int n = PQntuples(res);
    if (n != k) {
        snprintf(err, errlen, "upload entry %s: %d of %d tags read back", id, n, k);
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < n; r++) {
        uint64_t index;
        uint8_t leaf[MERKLE_HASH_LEN];
        if (append_leaf(t, f, ap, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1), &index,
                        leaf) != 0) {
            snprintf(err, errlen, "out of memory (or a full tree)");
            PQclear(res);
            return -1;
        }
        buf_sep(&ap->tags, ap->n_tags);
        buf_sep(&ap->tag_leaves, ap->n_tags);
        buf_sep(&ap->tag_hashes, ap->n_tags);
        buf_sep(&ap->tag_entries, ap->n_tags);
        buf_str(&ap->tags, PQgetvalue(res, r, 0));
        buf_u64(&ap->tag_leaves, index);
        buf_hash(&ap->tag_hashes, leaf);
        buf_str(&ap->tag_entries, id);
        ap->n_tags++;
    }
    /* Progress: the last tag appended (or the old cursor), and whether the upload is done. */
    buf_sep(&ap->up_ids, ap->n_uploads);
    buf_sep(&ap->up_cursors, ap->n_uploads);
    buf_sep(&ap->up_done, ap->n_uploads);
    buf_str(&ap->up_ids, id);
    buf_str(&ap->up_cursors, n > 0 ? PQgetvalue(res, n - 1, 0) : cursor != NULL ? cursor : "NULL");
    buf_str(&ap->up_done, n < room ? "t" : "f");
    ap->n_uploads++;
    *used = n;
    PQclear(res);
    return 0;
}

/* Runs a statement with array parameters that must touch exactly want rows. */
static int exec_rows(PGconn *conn, const char *sql, int nparams, const char *const *params,
                     size_t want, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    int rc = exec_ok(conn, res, PGRES_COMMAND_OK, what, err, errlen);
    if (rc == 0 && strtoull(PQcmdTuples(res), NULL, 10) != want) {
        snprintf(err, errlen, "%s: %s rows, expected %zu", what, PQcmdTuples(res), want);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

int tlog_append(struct tlog *t, PGconn *conn, int max, int *appended, char *err, size_t errlen)
{
    struct merkle_frontier f = t->frontier;
    struct append ap = {0};
    PGresult *res = NULL;
    char limit[16];
    int rc = -1, in_tx = 0, n = 0;

    *appended = 0;
    if (max < 1)
        max = 1;
    if (!t->restored) {
        snprintf(err, errlen, "the frontier was not restored");
        return -1;
    }
    if (exec_cmd(conn, "BEGIN", err, errlen) != 0)
        goto done;
    in_tx = 1;
    snprintf(limit, sizeof(limit), "%d", max);
    const char *p1[1] = {limit};
    /* Binary results: the id as a big-endian int8, the record as its raw bytes, text as is. */
    res = PQexecParams(conn,
                       "SELECT id, record, kind, upload_id::text, batch_id::text,"
                       " expanded_to::text FROM log_entries"
                       " WHERE leaf_index IS NULL AND appended_at IS NULL"
                       " ORDER BY id LIMIT $1::int FOR UPDATE",
                       1, NULL, p1, NULL, NULL, 1);
    if (exec_ok(conn, res, PGRES_TUPLES_OK, "reading pending log entries", err, errlen) != 0)
        goto done;
    for (int r = 0; r < PQntuples(res) && n < max; r++) {
        if (PQgetlength(res, r, 0) != 8) {
            snprintf(err, errlen, "unexpected id format");
            goto done;
        }
        if (strcmp(PQgetvalue(res, r, 2), "upload") == 0) {
            int used = 0;
            if (expand_upload(t, conn, &f, &ap, res, r, max - n, &used, err, errlen) != 0)
                goto done;
            n += used;
            continue;
        }
        uint64_t index;
        uint8_t leaf[MERKLE_HASH_LEN];
        if (append_leaf(t, &f, &ap, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1), &index,
                        leaf) != 0) {
            snprintf(err, errlen, "out of memory (or a full tree)");
            goto done;
        }
        buf_sep(&ap.ids, ap.n_queued);
        buf_sep(&ap.leaves, ap.n_queued);
        buf_sep(&ap.hashes, ap.n_queued);
        buf_u64(&ap.ids, be64(PQgetvalue(res, r, 0)));
        buf_u64(&ap.leaves, index);
        buf_hash(&ap.hashes, leaf);
        ap.n_queued++;
        n++;
    }
    PQclear(res);
    res = NULL;
    if (ap.n_queued == 0 && ap.n_uploads == 0) {
        rc = 0;
        goto done;
    }
    buf_end(&ap.ids, ap.n_queued);
    buf_end(&ap.leaves, ap.n_queued);
    buf_end(&ap.hashes, ap.n_queued);
    buf_end(&ap.tags, ap.n_tags);
    buf_end(&ap.tag_leaves, ap.n_tags);
    buf_end(&ap.tag_hashes, ap.n_tags);
    buf_end(&ap.tag_entries, ap.n_tags);
    buf_end(&ap.up_ids, ap.n_uploads);
    buf_end(&ap.up_cursors, ap.n_uploads);
    buf_end(&ap.up_done, ap.n_uploads);
    buf_end(&ap.ns.levels, ap.ns.n);
    buf_end(&ap.ns.idxs, ap.ns.n);
    buf_end(&ap.ns.hashes, ap.ns.n);
    if (append_failed(&ap)) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    const char *p3[3] = {ap.ids.p, ap.leaves.p, ap.hashes.p};
    if (ap.n_queued > 0 &&
        exec_rows(conn,
                  "UPDATE log_entries e SET leaf_index = v.leaf_index,"
                  " leaf_hash = decode(v.leaf_hash, 'hex'), appended_at = now()"
                  " FROM unnest($1::bigint[], $2::bigint[], $3::text[])"
                  " AS v(id, leaf_index, leaf_hash)"
                  " WHERE e.id = v.id AND e.leaf_index IS NULL",
                  3, p3, ap.n_queued, "assigning leaf indexes", err, errlen) != 0)
        goto done;
    /*
     * The leaves of expanded uploads, their records built again from the rows: a leaf is
     * stored only if its record hashes to what was appended, so a row that changed between the
     * two reads fails the append instead of storing a leaf that disagrees with its hash.
     */
    const char *p4[4] = {ap.tags.p, ap.tag_leaves.p, ap.tag_hashes.p, ap.tag_entries.p};
    if (ap.n_tags > 0 &&
        exec_rows(conn,
                  "INSERT INTO log_entries (kind, factory_id, tag_id, batch_id, record, queued_at,"
                  " leaf_index, leaf_hash, appended_at)"
                  " SELECT 'tag', t.factory_id, t.tag_id, t.batch_id, tagproof_tag_record(t),"
                  " q.queued_at, v.leaf_index, decode(v.leaf_hash, 'hex'), now()"
                  " FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[])"
                  " AS v(tag_id, leaf_index, leaf_hash, entry)"
                  " JOIN tags t ON t.tag_id = v.tag_id JOIN log_entries q ON q.id = v.entry"
                  " WHERE sha256('\\x00'::bytea || tagproof_tag_record(t))"
                  " = decode(v.leaf_hash, 'hex')"
                  " ORDER BY v.leaf_index",
                  4, p4, ap.n_tags, "storing the leaves of uploads", err, errlen) != 0)
        goto done;
    const char *p5[3] = {ap.up_ids.p, ap.up_cursors.p, ap.up_done.p};
    if (ap.n_uploads > 0 &&
        exec_rows(conn,
                  "UPDATE log_entries e SET expanded_to = v.cursor,"
                  " appended_at = CASE WHEN v.done THEN now() END"
                  " FROM unnest($1::bigint[], $2::uuid[], $3::boolean[]) AS v(id, cursor, done)"
                  " WHERE e.id = v.id AND e.kind = 'upload' AND e.appended_at IS NULL",
                  3, p5, ap.n_uploads, "recording the expansion of uploads", err, errlen) != 0)
        goto done;
    const char *p6[3] = {ap.ns.levels.p, ap.ns.idxs.p, ap.ns.hashes.p};
    if (ap.ns.n > 0 &&
        exec_rows(conn,
                  "INSERT INTO merkle_nodes (level, idx, hash)"
                  " SELECT level, idx, decode(hash, 'hex')"
                  " FROM unnest($1::smallint[], $2::bigint[], $3::text[]) AS v(level, idx, hash)",
                  3, p6, ap.ns.n, "storing subtree hashes", err, errlen) != 0)
        goto done;
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
    if (rc != 0) {
        t->restored = 0;
        t->win.entry = 0;
    }
    PQclear(res);
    append_free(&ap);
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
