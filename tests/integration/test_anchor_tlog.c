/*
 * test_anchor_tlog: the Merkle log in PostgreSQL (anchor/tlog.c) against the RFC 9162
 * definition. 1,000 entries appended in batches of random sizes, the frontier read back before
 * every batch, checkpoints signed along the way; then every stored subtree, every checkpoint's
 * root and the root at any size read from merkle_nodes equal a naive recursive computation
 * over the records, and every checkpoint note verifies. A batch whose session is killed just
 * before its COMMIT leaves nothing behind, and the log goes on from where it was.
 *
 * Then uploads (migrations/0007_log_queue.sql): two upload entries queued around two
 * revocations are expanded, in pages of random sizes that end in the middle of an upload,
 * into exactly the leaves SPEC §7 defines (records formatted here, independently), each
 * upload's tags in tag order at the upload's place in the queue; a crash in the middle of an
 * expansion leaves its cursor where it was; and the log's root is the naive root of every
 * leaf. A recall of the batch that holds the batch's row while an expansion starts waits for
 * it, or it for the recall, without a deadlock.
 *
 * The test works in a database of its own.
 */
#include "support.h"
#include "pq_sync.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "merkle.h"
#include "merkle_naive.h"
#include "note.h"
#include "tlog.h"

#define ENTRIES 1000
#define UP1 257 /* tags of the first upload */
#define UP2 3   /* of the second */
#define EXTRA (UP1 + UP2 + 2)
#define FACTORY "11111111-1111-4111-8111-111111111111"
#define PRODUCT "22222222-2222-4222-8222-222222222222"
#define BATCH "33333333-3333-4333-8333-333333333333"
#define UPLOAD1 "44444444-4444-4444-8444-444444444441"
#define UPLOAD2 "44444444-4444-4444-8444-444444444442"
#define UPLOAD3 "44444444-4444-4444-8444-444444444443"
#define REG_BASE 1767323045 /* 2026-01-02T03:04:05Z: tag i registered i seconds later */

static char owner_url[512], svc_url[512], dbname[64];
static uint8_t leaves[ENTRIES][MERKLE_HASH_LEN];

static void url_for(char *out, size_t len, const char *base)
{
    const char *slash = strrchr(base, '/');
    snprintf(out, len, "%.*s/%s", (int)(slash - base), base, dbname);
}

static int setup(void **state)
{
    (void)state;
    const char *dir = ts_require_env("TAGPROOF_TEST_PG_DIR");
    const char *port = ts_require_env("TAGPROOF_TEST_PG_PORT");
    const char *bin = ts_require_env("TAGPROOF_TEST_BIN_DIR");
    snprintf(dbname, sizeof(dbname), "anchor_tlog_%d", (int)getpid());
    url_for(owner_url, sizeof(owner_url), ts_require_env("TAGPROOF_TEST_PG_OWNER_URL"));
    url_for(svc_url, sizeof(svc_url), ts_require_env("TAGPROOF_TEST_PG_URL"));
    if (ts_sh("'%s/scripts/lib/pgcluster' psql '%s' %s -c 'CREATE DATABASE %s OWNER tagproof' "
              ">/dev/null",
              TAGPROOF_SOURCE_DIR, dir, port, dbname) != 0 ||
        ts_sh("TAGPROOF_PG_MIGRATE_URL='%s' '%s/tagproof' migrate >/dev/null", owner_url, bin) != 0)
        return -1;
    /* Records of different lengths, one of them empty-ish, in one transaction. */
    PGconn *o = connect_to(owner_url, 0);
    exec_ok(o, "INSERT INTO factories (id, name) VALUES ('11111111-1111-4111-8111-111111111111', "
               "'f');"
               "INSERT INTO products (id, factory_id, sku, name) VALUES "
               "('22222222-2222-4222-8222-222222222222', '11111111-1111-4111-8111-111111111111', "
               "'s', 'p');"
               "INSERT INTO batches (id, factory_id, product_id, code) VALUES "
               "('33333333-3333-4333-8333-333333333333', '11111111-1111-4111-8111-111111111111', "
               "'22222222-2222-4222-8222-222222222222', 'b');"
               "INSERT INTO log_entries (kind, factory_id, batch_id, record) "
               "SELECT 'revoke', '11111111-1111-4111-8111-111111111111', "
               "'33333333-3333-4333-8333-333333333333', "
               "convert_to(repeat('r' || i || E'\\n', i % 7), 'UTF8') "
               "FROM generate_series(1, 1000) i ORDER BY i");
    /* The leaf hashes, computed here from the records as stored. */
    PGresult *r =
        PQexecParams(o, "SELECT record FROM log_entries ORDER BY id", 0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQntuples(r), ENTRIES);
    struct merkle_hasher *h = merkle_hasher_new();
    for (int i = 0; i < ENTRIES; i++)
        merkle_leaf_hash(h, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), leaves[i]);
    merkle_hasher_free(h);
    PQclear(r);
    PQfinish(o);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_sh("'%s/scripts/lib/pgcluster' psql '%s' %s -c 'DROP DATABASE IF EXISTS %s WITH (FORCE)' "
          ">/dev/null",
          TAGPROOF_SOURCE_DIR, getenv("TAGPROOF_TEST_PG_DIR"), getenv("TAGPROOF_TEST_PG_PORT"),
          dbname);
    return 0;
}

/* MTH(D[a:b]) of this test's leaves. */
static void naive(struct merkle_hasher *h, uint64_t a, uint64_t b, uint8_t out[MERKLE_HASH_LEN])
{
    ts_naive_mth(h, (const uint8_t(*)[MERKLE_HASH_LEN])leaves, a, b, out);
}

static int get_node(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    PGconn *c = arg;
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT hash FROM merkle_nodes WHERE level = %u AND idx = %llu",
             level, (unsigned long long)index);
    PGresult *r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 1);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             PQgetlength(r, 0, 0) == MERKLE_HASH_LEN;
    if (ok)
        memcpy(out, PQgetvalue(r, 0, 0), MERKLE_HASH_LEN);
    PQclear(r);
    return ok ? 0 : -1;
}

/* The hook kills the appending session just before its COMMIT, once. */
struct killer {
    PGconn *victim;
    int armed;
};

static void kill_before_commit(void *arg, const char *point)
{
    struct killer *k = arg;
    if (!k->armed || strcmp(point, "append_before_commit") != 0)
        return;
    k->armed = 0;
    /* The session ends itself, as if the process had died: its transaction is gone. */
    PQclear(PQexec(k->victim, "SELECT pg_terminate_backend(pg_backend_pid())"));
}

/*
 * An append whose session the killer ends just before its COMMIT: it fails, and on a new
 * session (returned) the log has the size and the leaves it had before.
 */
static PGconn *append_crashing(struct tlog *t, PGconn *c, struct killer *k, int max)
{
    char err[512];
    int n = 0;
    uint64_t before = tlog_size(t);
    k->armed = 1;
    assert_int_equal(tlog_append(t, c, max, &n, err, sizeof(err)), -1);
    PQfinish(c);
    c = connect_to(svc_url, 1);
    k->victim = c;
    assert_int_equal(tlog_restore(t, c, err, sizeof(err)), 0);
    assert_int_equal(tlog_size(t), before);
    assert_int_equal(value(c, "SELECT count(leaf_index) FROM log_entries"), (long long)before);
    return c;
}

static void test_append_checkpoint_and_crash(void **state)
{
    (void)state;
    uint8_t seed[32] = {7};
    struct note_signer *signer = note_signer_from_seed("tagproof.test/log", seed);
    struct killer killer = {0};
    struct tlog *t = tlog_new("tagproof.test/log", signer, kill_before_commit, &killer);
    struct merkle_hasher *h = merkle_hasher_new();
    char err[512];
    unsigned rnd = 12345;
    int batches = 0, checkpoints = 0, n = 0;
    uint64_t made = 0;
    PGconn *c = connect_to(svc_url, 1);
    killer.victim = c;

    for (;;) {
        assert_int_equal(tlog_restore(t, c, err, sizeof(err)), 0);
        if (batches == 5) {
            /* A crash before the COMMIT: the session dies, nothing of the batch stays. */
            c = append_crashing(t, c, &killer, 50);
        }
        int max = 1 + (int)(rand_r(&rnd) % 97);
        if (tlog_append(t, c, max, &n, err, sizeof(err)) != 0)
            fail_msg("append: %s", err);
        batches++;
        if (n == 0)
            break;
        if (batches % 4 == 0 || n < max) {
            assert_int_equal(tlog_checkpoint(t, c, "http", &made, err, sizeof(err)), 0);
            assert_int_equal(made, tlog_size(t));
            checkpoints++;
        }
    }
    assert_int_equal(tlog_size(t), ENTRIES);
    assert_int_equal(tlog_checkpoint(t, c, "http", &made, err, sizeof(err)), 0);
    assert_int_equal(made, 0); /* nothing new: no checkpoint */
    print_message("%d batches, %d checkpoints\n", batches, checkpoints);

    /* Leaf indexes in id order, leaf hashes right, every complete subtree stored once. */
    assert_int_equal(value(c, "SELECT count(*) FROM (SELECT leaf_index, row_number() OVER (ORDER "
                              "BY id) - 1 AS rn FROM log_entries) x WHERE leaf_index <> rn"),
                     0);
    long long want_nodes = 0;
    for (int l = 0; (ENTRIES >> l) > 0; l++)
        want_nodes += ENTRIES >> l;
    assert_int_equal(value(c, "SELECT count(*) FROM merkle_nodes"), want_nodes);
    PGresult *r =
        PQexecParams(c, "SELECT level, idx, hash FROM merkle_nodes", 0, NULL, NULL, NULL, NULL, 0);
    for (int i = 0; i < PQntuples(r); i++) {
        unsigned level = (unsigned)atoi(PQgetvalue(r, i, 0));
        uint64_t idx = strtoull(PQgetvalue(r, i, 1), NULL, 10);
        uint8_t want[MERKLE_HASH_LEN];
        char hex[2 * MERKLE_HASH_LEN + 3];
        naive(h, idx << level, (idx + 1) << level, want);
        hex[0] = '\\';
        hex[1] = 'x';
        for (int k = 0; k < MERKLE_HASH_LEN; k++)
            snprintf(hex + 2 + 2 * k, 3, "%02x", want[k]);
        if (strcmp(PQgetvalue(r, i, 2), hex) != 0)
            fail_msg("subtree (%u, %llu) differs", level, (unsigned long long)idx);
    }
    PQclear(r);

    /* The root at every size, from the stored subtrees, is the naive root. */
    for (uint64_t size = 1; size <= ENTRIES; size++) {
        uint8_t got[MERKLE_HASH_LEN], want[MERKLE_HASH_LEN];
        assert_int_equal(merkle_root_at(h, size, get_node, c, got), 0);
        naive(h, 0, size, want);
        assert_memory_equal(got, want, MERKLE_HASH_LEN);
    }

    /* Every checkpoint: its note verifies, and says the naive root of its size. */
    r = PQexec(c, "SELECT size, note FROM checkpoints ORDER BY size");
    assert_int_equal(PQntuples(r), checkpoints);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *note = PQgetvalue(r, i, 1);
        size_t text_len = 0;
        char origin[64];
        uint64_t size = 0;
        uint8_t root[32], want[32];
        assert_int_equal(note_verify(note_signer_vkey(signer), note, strlen(note), &text_len), 0);
        assert_int_equal(note_checkpoint_parse(note, text_len, origin, sizeof(origin), &size, root),
                         0);
        assert_string_equal(origin, "tagproof.test/log");
        assert_int_equal(size, strtoull(PQgetvalue(r, i, 0), NULL, 10));
        naive(h, 0, size, want);
        assert_memory_equal(root, want, 32);
    }
    PQclear(r);
    assert_int_equal(value(c, "SELECT count(*) FROM anchors WHERE state = 'pending'"), checkpoints);

    PQfinish(c);
    merkle_hasher_free(h);
    tlog_free(t);
    note_signer_free(signer);
}

/* --- uploads ------------------------------------------------------------------------------- */

struct upload_tag {
    char id[37];
    long reg; /* seconds after REG_BASE */
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct upload_tag *)a)->id, ((const struct upload_tag *)b)->id);
}

/* SPEC §7's record of a tag registration, formatted here. */
static size_t tag_record(const struct upload_tag *t, char *out, size_t len)
{
    time_t at = (time_t)(REG_BASE + t->reg);
    struct tm tm;
    char when[32];
    gmtime_r(&at, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return (size_t)snprintf(out, len, "tagproof/tag/v1\n%s\n%s\n%s\n%s\n%s\n", t->id, FACTORY,
                            BATCH, PRODUCT, when);
}

/* The SQLSTATE sql fails with ("" when it succeeds). */
static const char *sqlstate_of(PGconn *c, const char *sql)
{
    static char state[8];
    PGresult *r = PQexec(c, sql);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, sizeof(state), "%s", s != NULL ? s : "");
    PQclear(r);
    return state;
}

/* The tags of an upload: stored (by the schema owner, as the factory API would) and sorted. */
static void make_upload(PGconn *o, const char *upload, struct upload_tag *tags, int n,
                        unsigned *rnd, long reg0)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO uploads (id, factory_id, batch_id, status) VALUES ('%s', '%s', '%s', "
             "'processing')",
             upload, FACTORY, BATCH);
    exec_ok(o, sql);
    for (int i = 0; i < n; i++) {
        snprintf(tags[i].id, sizeof(tags[i].id), "%08x-%04x-4%03x-8%03x-%012x", rand_r(rnd),
                 (unsigned)rand_r(rnd) & 0xffff, (unsigned)rand_r(rnd) & 0xfff,
                 (unsigned)rand_r(rnd) & 0xfff, (unsigned)i);
        tags[i].reg = reg0 + i;
        snprintf(sql, sizeof(sql),
                 "INSERT INTO tags (tag_id, factory_id, batch_id, product_id, upload_id, "
                 "registered_at) VALUES ('%.36s', '%s', '%s', '%s', '%.36s', to_timestamp(%ld))",
                 tags[i].id, FACTORY, BATCH, PRODUCT, upload, (long)REG_BASE + tags[i].reg);
        exec_ok(o, sql);
    }
    /* Completed: no tag joins it any more (migration 0009). */
    snprintf(sql, sizeof(sql), "UPDATE uploads SET status = 'completed' WHERE id = '%s'", upload);
    exec_ok(o, sql);
    snprintf(sql, sizeof(sql),
             "INSERT INTO tags (tag_id, factory_id, batch_id, product_id, upload_id) VALUES"
             " (gen_random_uuid(), '%s', '%s', '%s', '%s')",
             FACTORY, BATCH, PRODUCT, upload);
    assert_string_equal(sqlstate_of(o, sql), "42501");
    qsort(tags, (size_t)n, sizeof(tags[0]), by_id);
}

static void queue_revoke(PGconn *o, const char *record)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO log_entries (kind, factory_id, batch_id, record) VALUES ('revoke', '%s', "
             "'%s', convert_to('%s', 'UTF8'))",
             FACTORY, BATCH, record);
    exec_ok(o, sql);
}

static void queue_upload(PGconn *o, const char *upload)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO log_entries (kind, factory_id, batch_id, upload_id, record) VALUES "
             "('upload', '%s', '%s', '%s', ''::bytea)",
             FACTORY, BATCH, upload);
    exec_ok(o, sql);
}

static void test_upload_expansion(void **state)
{
    (void)state;
    static struct upload_tag up1[UP1], up2[UP2];
    static char want[EXTRA][256];
    static size_t want_len[EXTRA];
    static uint8_t all[ENTRIES + EXTRA][MERKLE_HASH_LEN];
    uint8_t seed[32] = {7};
    struct note_signer *signer = note_signer_from_seed("tagproof.test/log", seed);
    struct killer killer = {0};
    struct tlog *t = tlog_new("tagproof.test/log", signer, kill_before_commit, &killer);
    struct merkle_hasher *h = merkle_hasher_new();
    char err[512];
    unsigned rnd = 777;
    int n = 0, appends = 0, crashed = 0;

    /* Queue order: revocation, upload 1, revocation, upload 2. */
    PGconn *o = connect_to(owner_url, 0);
    make_upload(o, UPLOAD1, up1, UP1, &rnd, 0);
    make_upload(o, UPLOAD2, up2, UP2, &rnd, 100000);
    queue_revoke(o, "tagproof/revoke/v1 first");
    queue_upload(o, UPLOAD1);
    queue_revoke(o, "tagproof/revoke/v1 second");
    queue_upload(o, UPLOAD2);
    PQfinish(o);
    size_t k = 0;
    want_len[k] = (size_t)snprintf(want[k], sizeof(want[k]), "tagproof/revoke/v1 first");
    k++;
    for (int i = 0; i < UP1; i++, k++)
        want_len[k] = tag_record(&up1[i], want[k], sizeof(want[k]));
    want_len[k] = (size_t)snprintf(want[k], sizeof(want[k]), "tagproof/revoke/v1 second");
    k++;
    for (int i = 0; i < UP2; i++, k++)
        want_len[k] = tag_record(&up2[i], want[k], sizeof(want[k]));
    assert_int_equal(k, EXTRA);

    PGconn *c = connect_to(svc_url, 1);
    killer.victim = c;
    /*
     * Until the crash the leader reads the upload's tag ids 23 at a time, so appends end
     * inside and at the edges of windows; after it, with the default window, from a cursor in
     * the middle of the upload.
     */
    tlog_set_window(t, 23);
    for (;;) {
        assert_int_equal(tlog_restore(t, c, err, sizeof(err)), 0);
        int max = 1 + (int)(rand_r(&rnd) % 40);
        uint64_t before = tlog_size(t);
        if (!crashed && before >= ENTRIES + 60) {
            /* A crash in the middle of upload 1: its cursor and the log stay where they were. */
            long long cursor_set =
                value(c, "SELECT count(expanded_to) FROM log_entries WHERE kind = 'upload'");
            c = append_crashing(t, c, &killer, max);
            crashed = 1;
            tlog_set_window(t, (size_t)1 << 20);
            assert_int_equal(
                value(c, "SELECT count(expanded_to) FROM log_entries WHERE kind = 'upload'"),
                cursor_set);
            /* A cursor never moves back: the upload's tags cannot be appended twice. */
            assert_string_equal(
                sqlstate_of(c, "UPDATE log_entries SET expanded_to = NULL WHERE kind = 'upload'"
                               " AND expanded_to IS NOT NULL AND appended_at IS NULL"),
                "23000");
        }
        if (tlog_append(t, c, max, &n, err, sizeof(err)) != 0)
            fail_msg("append: %s", err);
        appends++;
        if (n == 0 && value(c, "SELECT count(*) FROM log_entries WHERE leaf_index IS NULL AND "
                               "appended_at IS NULL") == 0)
            break;
        assert_true(appends < 1000);
    }
    assert_true(crashed);
    assert_int_equal(tlog_size(t), ENTRIES + EXTRA);
    print_message("%d appends for %d leaves\n", appends, EXTRA);

    /* Exactly the expected records, in order, each with its leaf hash. */
    PGresult *r = PQexecParams(c,
                               "SELECT record, leaf_hash, kind, queued_at = (SELECT q.queued_at"
                               " FROM log_entries q WHERE q.kind = 'upload'"
                               " AND q.upload_id = (SELECT upload_id FROM tags"
                               " WHERE tags.tag_id = e.tag_id))"
                               " FROM log_entries e WHERE leaf_index >= 1000 ORDER BY leaf_index",
                               0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), EXTRA);
    for (int i = 0; i < EXTRA; i++) {
        if ((size_t)PQgetlength(r, i, 0) != want_len[i] ||
            memcmp(PQgetvalue(r, i, 0), want[i], want_len[i]) != 0)
            fail_msg("leaf %d is \"%.*s\", expected \"%s\"", ENTRIES + i, PQgetlength(r, i, 0),
                     PQgetvalue(r, i, 0), want[i]);
        merkle_leaf_hash(h, want[i], want_len[i], all[ENTRIES + i]);
        assert_int_equal(PQgetlength(r, i, 1), MERKLE_HASH_LEN);
        assert_memory_equal(PQgetvalue(r, i, 1), all[ENTRIES + i], MERKLE_HASH_LEN);
        if (strcmp(PQgetvalue(r, i, 2), "tag") == 0) /* binary bool: 1 */
            assert_int_equal(PQgetvalue(r, i, 3)[0], 1);
    }
    PQclear(r);
    assert_int_equal(value(c, "SELECT count(*) FROM log_entries WHERE kind = 'upload' AND"
                              " appended_at IS NOT NULL AND expanded_to = (SELECT tag_id FROM tags"
                              " WHERE tags.upload_id = log_entries.upload_id"
                              " ORDER BY tag_id DESC LIMIT 1)"),
                     2);

    /* A tag has one registration leaf. */
    char dup[512];
    snprintf(dup, sizeof(dup),
             "INSERT INTO log_entries (kind, factory_id, tag_id, batch_id, record) VALUES"
             " ('tag', '%s', '%s', '%s', 'x')",
             FACTORY, up1[0].id, BATCH);
    assert_string_equal(sqlstate_of(c, dup), "23505");

    /* The root of the whole log, from the stored subtrees, is the naive root. */
    memcpy(all, leaves, sizeof(leaves));
    uint8_t got[MERKLE_HASH_LEN], want_root[MERKLE_HASH_LEN];
    assert_int_equal(merkle_root_at(h, ENTRIES + EXTRA, get_node, c, got), 0);
    ts_naive_mth(h, (const uint8_t(*)[MERKLE_HASH_LEN])all, 0, ENTRIES + EXTRA, want_root);
    assert_memory_equal(got, want_root, MERKLE_HASH_LEN);

    PQfinish(c);
    merkle_hasher_free(h);
    tlog_free(t);
    note_signer_free(signer);
}

/* An append on a thread of its own. */
struct appender {
    struct tlog *t;
    PGconn *c;
    int rc, n;
    char err[512];
};

static void *append_thread(void *arg)
{
    struct appender *a = arg;
    a->rc = tlog_restore(a->t, a->c, a->err, sizeof(a->err));
    if (a->rc == 0)
        a->rc = tlog_append(a->t, a->c, 1000, &a->n, a->err, sizeof(a->err));
    return NULL;
}

/*
 * A recall's order of locks: the batch's row FOR UPDATE, then the log's advisory lock (its
 * leaf's INSERT). An expansion starting while the recall holds the row waits for the row before
 * it takes the advisory lock, so the recall's leaf goes in and both commit; the recall's leaf is
 * appended after the upload's tags.
 */
static void test_recall_during_expansion(void **state)
{
    (void)state;
    static struct upload_tag up3[50];
    uint8_t seed[32] = {7};
    struct note_signer *signer = note_signer_from_seed("tagproof.test/log", seed);
    struct appender a = {.t = tlog_new("tagproof.test/log", signer, NULL, NULL)};
    unsigned rnd = 4242;
    PGconn *o = connect_to(owner_url, 0);
    make_upload(o, UPLOAD3, up3, 50, &rnd, 200000);
    queue_upload(o, UPLOAD3);
    long long before = value(o, "SELECT count(leaf_index) FROM log_entries");

    PGconn *recall = connect_to(owner_url, 0);
    exec_ok(recall, "BEGIN");
    exec_ok(recall, "SELECT 1 FROM batches WHERE id = '" BATCH "' FOR UPDATE");
    a.c = connect_to(svc_url, 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, append_thread, &a), 0);
    /* Until the append waits for a lock (the batch's row). */
    int waited = 0;
    for (int i = 0; i < 500 && !waited; i++) {
        waited = value(o, "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0;
        if (!waited)
            usleep(10000);
    }
    if (!waited)
        fail_msg("the append never waited for the batch (rc %d: %s)", a.rc, a.err);
    PGresult *r = PQexec(recall, "INSERT INTO log_entries (kind, factory_id, batch_id, record)"
                                 " VALUES ('revoke', '" FACTORY "', '" BATCH "',"
                                 " convert_to('tagproof/revoke/v1 third', 'UTF8'))");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("the recall's leaf: %s", PQresultErrorMessage(r));
    PQclear(r);
    exec_ok(recall, "COMMIT");
    pthread_join(th, NULL);
    if (a.rc != 0)
        fail_msg("append: %s", a.err);
    assert_int_equal(a.n, 50);

    /* The next append takes the recall's leaf, after the 50 tags. */
    assert_int_equal(tlog_restore(a.t, a.c, a.err, sizeof(a.err)), 0);
    assert_int_equal(tlog_append(a.t, a.c, 1000, &a.n, a.err, sizeof(a.err)), 0);
    assert_int_equal(a.n, 1);
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM log_entries WHERE leaf_index = %lld AND kind = 'revoke'",
             before + 50);
    assert_int_equal(value(o, sql), 1);

    PQfinish(recall);
    PQfinish(a.c);
    PQfinish(o);
    tlog_free(a.t);
    note_signer_free(signer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_checkpoint_and_crash),
        cmocka_unit_test(test_upload_expansion),
        cmocka_unit_test(test_recall_during_expansion),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
