/*
 * anchor: the leader election, the cycle (append → checkpoint → anchor) and the anchors'
 * state machine, pending → submitted → confirmed or failed, kept in PostgreSQL so that a crash
 * at any moment neither loses a leaf nor anchors twice.
 *
 * Leadership is the session advisory lock ANCHOR_LEADER_KEY on the thread's one connection,
 * and all the work runs on that same connection: if the session dies, the lock and any
 * unfinished transaction go with it, and another instance takes over.
 */
#include "anchor.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "cachesync.h"
#include "config.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "note.h"
#include "tlog.h"

#define ANCHOR_LEADER_KEY "7226351602313740303"
#define ANCHOR_BATCH 5000     /* leaves a transaction */
#define ANCHOR_TRIES 3        /* ledger attempts a cycle */
#define ANCHOR_BACKOFF_MS 250 /* before the second try; doubled, with jitter */
#define ANCHOR_STANDBY_POLL_MS 1000
#define ANCHOR_RECHECK 16 /* confirmed Ethereum anchors re-checked each cycle */
#define ANCHOR_STATEMENT_TIMEOUT "-c statement_timeout=60000"

struct anchor_row {
    long long id;
    uint64_t size;
    char state[16];
    int attempts;
    int latest;
    uint8_t root[32];
    char *note;
    struct ledger_ref ref;
    char error[512];
};

struct anchor {
    const struct config *cfg;
    struct note_signer *signer;
    struct ledger *ledger;
    struct tlog *tlog;
    struct cachesync *sync; /* the scan cache's view of the log */
    PGconn *conn;
    int leader;
    char holder[128];
    char crash_at[64];
    int batch;
    unsigned rng;
    int ledger_down; /* a ledger call failed this cycle: re-checks of confirmed anchors wait */

    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;

    struct metric *m_leader, *m_log_size, *m_checkpoint, *m_confirmed, *m_anchors, *m_errors,
        *m_cycles;
    _Atomic long long oldest_uncovered_ms; /* queued_at of the oldest uncovered leaf; 0: none */
};

/* --- waiting and stopping ------------------------------------------------------------------ */

static int stopping(struct anchor *a)
{
    pthread_mutex_lock(&a->mu);
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

/* Sleeps ms unless asked to stop; returns 1 when stopping. */
static int nap(struct anchor *a, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&a->mu);
    while (!a->stop && pthread_cond_timedwait(&a->cv, &a->mu, &until) != ETIMEDOUT)
        ;
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The test hook: TAGPROOF_TEST_CRASH_AT names a point where the process kills itself. */
static void crash_point(void *arg, const char *point)
{
    struct anchor *a = arg;
    if (a->crash_at[0] != '\0' && strcmp(a->crash_at, point) == 0) {
        log_warn("test hook: crashing at %s", point);
        raise(SIGKILL);
    }
}

/* --- PostgreSQL ---------------------------------------------------------------------------- */

static void conn_drop(struct anchor *a)
{
    if (a->conn != NULL)
        PQfinish(a->conn);
    a->conn = NULL;
    if (a->leader)
        log_warn("no longer the leader: the connection to PostgreSQL was lost");
    a->leader = 0;
    metric_set(a->m_leader, 0);
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int conn_ensure(struct anchor *a)
{
    if (a->conn != NULL && PQstatus(a->conn) == CONNECTION_OK)
        return 0;
    conn_drop(a);
    /* Keepalives make a dead server's connection fail within seconds instead of hanging. */
    static const char *const keys[] = {
        "dbname",           "options",          "connect_timeout",
        "keepalives",       "keepalives_idle",  "keepalives_interval",
        "keepalives_count", "application_name", NULL};
    const char *const values[] = {a->cfg->pg_url,
                                  "-c tagproof.tenant=all " ANCHOR_STATEMENT_TIMEOUT,
                                  "5",
                                  "1",
                                  "5",
                                  "2",
                                  "3",
                                  "tagproof-anchor",
                                  NULL};
    a->conn = PQconnectdbParams(keys, values, 1);
    if (PQstatus(a->conn) != CONNECTION_OK) {
        char *msg = log_redact(PQerrorMessage(a->conn));
        log_warn("cannot connect to PostgreSQL: %.*s", (int)strcspn(msg ? msg : "", "\n"),
                 msg ? msg : "");
        free(msg);
        PQfinish(a->conn);
        a->conn = NULL;
        return -1;
    }
    PQsetNoticeProcessor(a->conn, quiet_notice, NULL);
    return 0;
}

/* Runs a statement with text parameters; the result (caller clears) or NULL with err. */
static PGresult *q(struct anchor *a, const char *sql, int n, const char *const *params,
                   ExecStatusType want, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(a->conn, sql, n, NULL, params, NULL, NULL, 0);
    if (res != NULL && PQresultStatus(res) == want)
        return res;
    const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(a->conn);
    snprintf(err, errlen, "%.*s", (int)strcspn(msg, "\n"), msg);
    PQclear(res);
    return NULL;
}

static int q_cmd(struct anchor *a, const char *sql, int n, const char *const *params, char *err,
                 size_t errlen)
{
    PGresult *res = q(a, sql, n, params, PGRES_COMMAND_OK, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : -1;
}

/* --- leadership ---------------------------------------------------------------------------- */

/* True on a server that cannot take writes: a standby, or one made read-only. */
#define READ_ONLY_SQL "(pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on')"

/*
 * After a failed cycle: is the connection still on a writable server? A primary that is
 * demoted or made read-only keeps its connections open, and every cycle would fail there;
 * dropping it makes the next connection look for the writable host (target_session_attrs).
 */
static int conn_writable(struct anchor *a)
{
    PGresult *res = PQexec(a->conn, "SELECT " READ_ONLY_SQL);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
             strcmp(PQgetvalue(res, 0, 0), "f") == 0;
    PQclear(res);
    if (!ok)
        log_warn("PostgreSQL server is read-only or not answering: connecting again");
    return ok;
}

static void lead_try(struct anchor *a)
{
    char err[512];
    if (conn_ensure(a) != 0)
        return;
    /* A server that turned read-only (demoted, fenced) is no place to lead: NULL, reconnect. */
    PGresult *res = q(a,
                      "SELECT CASE WHEN " READ_ONLY_SQL " THEN NULL"
                      " ELSE pg_try_advisory_lock(" ANCHOR_LEADER_KEY ") END",
                      0, NULL, PGRES_TUPLES_OK, err, sizeof(err));
    if (res == NULL) {
        log_warn("cannot ask for the leader lock: %s", err);
        conn_drop(a);
        return;
    }
    if (PQgetisnull(res, 0, 0)) {
        PQclear(res);
        log_warn("PostgreSQL server is read-only: connecting again to find the writable one");
        conn_drop(a);
        return;
    }
    a->leader = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!a->leader)
        return;
    metric_set(a->m_leader, 1);
    const char *p[1] = {a->holder};
    if (q_cmd(a,
              "INSERT INTO anchor_leader (holder) VALUES ($1) ON CONFLICT (singleton) DO UPDATE"
              " SET holder = excluded.holder, since = now(), seen_at = now()",
              1, p, err, sizeof(err)) != 0)
        log_warn("cannot record the leader: %s", err);
    const char *k[2] = {note_signer_vkey(a->signer), a->cfg->log_origin};
    if (q_cmd(a,
              "INSERT INTO log_keys (vkey, origin) VALUES ($1, $2) ON CONFLICT (vkey) DO UPDATE"
              " SET last_used_at = now()",
              2, k, err, sizeof(err)) != 0)
        log_warn("cannot record the log's verifier key: %s", err);
    log_emit(LOG_INFO, NULL, "leading: this instance appends, signs and anchors",
             json_pack("{s:s, s:s, s:s}", "holder", a->holder, "ledger", ledger_name(a->ledger),
                       "log_key", note_signer_vkey(a->signer)));
}

/* --- anchors ------------------------------------------------------------------------------- */

static void row_free(struct anchor_row *r)
{
    free(r->note);
    r->note = NULL;
}

static int unhex32(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static const char *num(char *buf, size_t len, int64_t v)
{
    if (v < 0)
        return NULL;
    snprintf(buf, len, "%" PRId64, v);
    return buf;
}

/*
 * Writes the row's state and what identifies it on the ledger. submitted_at is set when the
 * row enters 'submitted', confirmed_at when it enters 'confirmed'.
 */
static int row_save(struct anchor *a, struct anchor_row *r, const char *state, const char *error)
{
    char id[24], attempts[16], chain[24], block[24], nonce[24], from[24], err[512];
    snprintf(id, sizeof(id), "%lld", r->id);
    snprintf(attempts, sizeof(attempts), "%d", r->attempts);
    const char *p[10] = {id,
                         state,
                         attempts,
                         error != NULL && error[0] != '\0' ? error : NULL,
                         r->ref.ref[0] != '\0' ? r->ref.ref : NULL,
                         num(chain, sizeof(chain), r->ref.chain_id),
                         num(block, sizeof(block), r->ref.block_number),
                         r->ref.block_hash[0] != '\0' ? r->ref.block_hash : NULL,
                         num(nonce, sizeof(nonce), r->ref.nonce),
                         num(from, sizeof(from), r->ref.from_block)};
    if (q_cmd(a,
              "UPDATE anchors SET state = $2, attempts = $3::int, last_error = $4,"
              " ledger_ref = $5, chain_id = $6::bigint, block_number = $7::bigint,"
              " block_hash = $8, eth_nonce = $9::bigint, eth_from_block = $10::bigint,"
              " submitted_at = CASE WHEN $2 = 'submitted' AND state <> 'submitted' THEN now()"
              " ELSE submitted_at END,"
              " confirmed_at = CASE WHEN $2 <> 'confirmed' THEN NULL"
              " WHEN state = 'confirmed' THEN confirmed_at ELSE now() END,"
              " updated_at = now() WHERE id = $1::bigint",
              10, p, err, sizeof(err)) != 0) {
        log_warn("cannot record anchor %lld as %s: %s", r->id, state, err);
        return -1;
    }
    if (strcmp(r->state, state) != 0)
        log_emit(strcmp(state, "failed") == 0 ? LOG_WARN : LOG_INFO, NULL, "anchor state",
                 json_pack("{s:I, s:s, s:s, s:s, s:s*, s:s*}", "checkpoint_size",
                           (json_int_t)r->size, "ledger", ledger_name(a->ledger), "from", r->state,
                           "to", state, "ref", r->ref.ref[0] ? r->ref.ref : NULL, "error",
                           error != NULL && error[0] ? error : NULL));
    snprintf(r->state, sizeof(r->state), "%s", state);
    return 0;
}

static void ledger_error(struct anchor *a, struct anchor_row *r, const char *what,
                         enum ledger_status st, const char *err)
{
    metric_inc(a->m_errors, ledger_name(a->ledger), what);
    if (st == LEDGER_ERROR)
        a->ledger_down = 1;
    log_emit(LOG_WARN, NULL, "ledger call failed",
             json_pack("{s:I, s:s, s:s, s:s, s:s}", "checkpoint_size", (json_int_t)r->size,
                       "ledger", ledger_name(a->ledger), "call", what, "status",
                       ledger_status_str(st), "error", err));
}

static long backoff_ms(struct anchor *a, int try)
{
    long base = ANCHOR_BACKOFF_MS << (try - 1);
    /* Full jitter around the base: between half and one and a half of it. */
    return base / 2 + (long)(rand_r(&a->rng) % (unsigned)base);
}

/* After a send: the row is 'submitted'; checks whether it is confirmed already. */
static int after_submit(struct anchor *a, struct anchor_row *r, struct ledger_checkpoint *cp)
{
    char err[512] = "";
    if (row_save(a, r, "submitted", NULL) != 0)
        return -1;
    crash_point(a, "after_submitted");
    enum ledger_status st = ledger_check(a->ledger, cp, &r->ref, err, sizeof(err));
    switch (st) {
    case LEDGER_OK:
        return row_save(a, r, "confirmed", NULL);
    case LEDGER_REJECTED:
        ledger_error(a, r, "check", st, err);
        return row_save(a, r, "failed", err);
    case LEDGER_ERROR:
        ledger_error(a, r, "check", st, err);
        return 0;
    default:
        return row_save(a, r, "submitted", st == LEDGER_WAIT ? NULL : err);
    }
}

/*
 * Up to ANCHOR_TRIES sends of one anchor, with exponential backoff and jitter between them.
 * Every try is recorded before it is made (state 'pending', the attempt counted, and for
 * Ethereum the pinned nonce), so that a crash during the send is reconciled at the next
 * start. -1 only when PostgreSQL failed (the cycle ends there).
 */
static int attempt(struct anchor *a, struct anchor_row *r, struct ledger_checkpoint *cp)
{
    char err[512] = "";
    enum ledger_status st = LEDGER_ERROR;
    for (int try = 1; try <= ANCHOR_TRIES; try++) {
        if (try > 1 && nap(a, backoff_ms(a, try - 1)))
            return 0;
        r->attempts++;
        if (ledger_needs_prepare(a->ledger, &r->ref)) {
            st = ledger_prepare(a->ledger, &r->ref, err, sizeof(err));
            if (st != LEDGER_OK) {
                ledger_error(a, r, "prepare", st, err);
                if (row_save(a, r, "pending", err) != 0)
                    return -1;
                if (st == LEDGER_REJECTED)
                    break;
                continue;
            }
        }
        if (row_save(a, r, "pending", r->error) != 0)
            return -1;
        st = ledger_submit(a->ledger, cp, &r->ref, err, sizeof(err));
        switch (st) {
        case LEDGER_OK:
            crash_point(a, "after_send");
            return after_submit(a, r, cp);
        case LEDGER_WAIT:
            /* Sent, not visible yet: the next cycle finds it by its nonce. */
            return row_save(a, r, "pending", err);
        case LEDGER_STALE:
        case LEDGER_GONE:
            log_info("anchor of checkpoint %" PRIu64 ": %s; preparing again", r->size, err);
            ledger_ref_init(&r->ref);
            if (row_save(a, r, "pending", err) != 0)
                return -1;
            continue;
        case LEDGER_ERROR:
            ledger_error(a, r, "submit", st, err);
            snprintf(r->error, sizeof(r->error), "%s", err);
            continue;
        case LEDGER_REJECTED:
            ledger_error(a, r, "submit", st, err);
            break;
        }
        break;
    }
    /* Given up for this cycle; the next checkpoint (or the next cycle's retry) heals it. */
    return row_save(a, r, "failed", err[0] != '\0' ? err : "no attempt succeeded");
}

/* One anchor row, by its state. -1 only when PostgreSQL failed. */
static int anchor_row_work(struct anchor *a, struct anchor_row *r)
{
    char err[512] = "";
    struct ledger_checkpoint cp = {.origin = a->cfg->log_origin, .size = r->size, .note = r->note};
    memcpy(cp.root, r->root, sizeof(cp.root));

    if (strcmp(r->state, "pending") == 0 || strcmp(r->state, "failed") == 0)
        return attempt(a, r, &cp);

    /* submitted, or confirmed (re-checked: a reorg may have dropped its block) */
    if (strcmp(r->state, "confirmed") == 0 && a->ledger_down)
        return 0; /* each would wait for its timeout; the next cycle re-checks */
    char old_hash[sizeof(r->ref.block_hash)];
    snprintf(old_hash, sizeof(old_hash), "%s", r->ref.block_hash);
    enum ledger_status st = ledger_check(a->ledger, &cp, &r->ref, err, sizeof(err));
    switch (st) {
    case LEDGER_OK:
        if (strcmp(r->state, "confirmed") != 0 || strcmp(old_hash, r->ref.block_hash) != 0)
            return row_save(a, r, "confirmed", NULL);
        return 0;
    case LEDGER_WAIT:
        if (strcmp(r->state, "confirmed") == 0)
            log_warn("anchor of checkpoint %" PRIu64 " is no longer confirmed: %s", r->size, err);
        return row_save(a, r, "submitted", NULL);
    case LEDGER_GONE:
        log_emit(LOG_WARN, NULL, "anchor vanished from the ledger; anchoring again",
                 json_pack("{s:I, s:s, s:s, s:s}", "checkpoint_size", (json_int_t)r->size, "was",
                           r->state, "ref", r->ref.ref, "why", err));
        ledger_ref_init(&r->ref);
        if (row_save(a, r, "pending", err) != 0)
            return -1;
        return attempt(a, r, &cp);
    case LEDGER_REJECTED:
        ledger_error(a, r, "check", st, err);
        return row_save(a, r, "failed", err);
    default:
        ledger_error(a, r, "check", st, err);
        return 0;
    }
}

static int64_t col_i64(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? -1 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

/*
 * The anchors that need work this cycle: pending and submitted ones (also those a crash left
 * behind), the latest checkpoint's when it failed (a retry), and for Ethereum the last
 * confirmed ones, whose blocks are re-checked.
 */
static int anchors_work(struct anchor *a)
{
    char err[512], recheck[16];
    const char *ledger = ledger_name(a->ledger);
    snprintf(recheck, sizeof(recheck), "%d", strcmp(ledger, "ethereum") == 0 ? ANCHOR_RECHECK : 0);
    a->ledger_down = 0;
    const char *p1[1] = {ledger};
    /* The latest checkpoint has an anchor for this ledger (also after a switch of ledger). */
    if (q_cmd(a,
              "INSERT INTO anchors (checkpoint_size, ledger)"
              " SELECT max(size), $1 FROM checkpoints HAVING max(size) IS NOT NULL"
              " ON CONFLICT (checkpoint_size, ledger) DO NOTHING",
              1, p1, err, sizeof(err)) != 0) {
        log_warn("cannot add the latest checkpoint's anchor: %s", err);
        return -1;
    }
    const char *p2[2] = {ledger, recheck};
    PGresult *res = q(a,
                      "WITH latest AS (SELECT max(size) AS size FROM checkpoints)"
                      " SELECT a.id, a.checkpoint_size, a.state, a.attempts,"
                      " a.ledger_ref, a.chain_id, a.block_number, a.block_hash, a.eth_nonce,"
                      " a.eth_from_block, encode(c.root, 'hex'), c.note,"
                      " a.checkpoint_size = latest.size, coalesce(a.last_error, '')"
                      " FROM anchors a JOIN checkpoints c ON c.size = a.checkpoint_size, latest"
                      " WHERE a.ledger = $1 AND (a.state IN ('pending', 'submitted')"
                      " OR (a.state = 'failed' AND a.checkpoint_size = latest.size)"
                      " OR a.id IN (SELECT id FROM anchors WHERE ledger = $1"
                      " AND state = 'confirmed' ORDER BY checkpoint_size DESC LIMIT $2::int))"
                      " ORDER BY a.checkpoint_size",
                      2, p2, PGRES_TUPLES_OK, err, sizeof(err));
    if (res == NULL) {
        log_warn("cannot read the anchors: %s", err);
        return -1;
    }
    int n = PQntuples(res), rc = 0;
    for (int i = 0; i < n && rc == 0 && !stopping(a); i++) {
        struct anchor_row r = {0};
        r.id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        r.size = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        snprintf(r.state, sizeof(r.state), "%s", PQgetvalue(res, i, 2));
        r.attempts = atoi(PQgetvalue(res, i, 3));
        ledger_ref_init(&r.ref);
        snprintf(r.ref.ref, sizeof(r.ref.ref), "%s", PQgetvalue(res, i, 4));
        r.ref.chain_id = col_i64(res, i, 5);
        r.ref.block_number = col_i64(res, i, 6);
        snprintf(r.ref.block_hash, sizeof(r.ref.block_hash), "%s", PQgetvalue(res, i, 7));
        r.ref.nonce = col_i64(res, i, 8);
        r.ref.from_block = col_i64(res, i, 9);
        r.latest = strcmp(PQgetvalue(res, i, 12), "t") == 0;
        snprintf(r.error, sizeof(r.error), "%s", PQgetvalue(res, i, 13));
        if (unhex32(PQgetvalue(res, i, 10), r.root) != 0 ||
            (r.note = strdup(PQgetvalue(res, i, 11))) == NULL) {
            log_error("anchor %lld: unusable checkpoint row", r.id);
            continue;
        }
        rc = anchor_row_work(a, &r);
        row_free(&r);
    }
    PQclear(res);
    return rc;
}

/* --- metrics ------------------------------------------------------------------------------- */

static double lag_seconds(void *arg)
{
    struct anchor *a = arg;
    long long oldest = atomic_load(&a->oldest_uncovered_ms);
    if (oldest <= 0)
        return 0;
    double lag = (double)(now_ms() - oldest) / 1000.0;
    return lag > 0 ? lag : 0;
}

/* Reads the figures /metrics shows from the database (any instance may). */
static void stats_refresh(struct anchor *a)
{
    static const char *const states[] = {"pending", "submitted", "confirmed", "failed"};
    char err[512];
    const char *p[1] = {ledger_name(a->ledger)};
    PGresult *res =
        q(a,
          "WITH conf AS (SELECT coalesce(max(checkpoint_size), 0) AS size FROM anchors"
          " WHERE ledger = $1 AND state = 'confirmed')"
          " SELECT conf.size,"
          " (SELECT coalesce(max(size), 0) FROM checkpoints),"
          " (SELECT coalesce(max(leaf_index) + 1, 0) FROM log_entries),"
          " (extract(epoch FROM least("
          "   (SELECT queued_at FROM log_entries WHERE leaf_index = conf.size),"
          "   (SELECT queued_at FROM log_entries WHERE leaf_index IS NULL AND appended_at IS NULL"
          "    ORDER BY id LIMIT 1)"
          " )) * 1000)::bigint,"
          " (SELECT count(*) FILTER (WHERE state = 'pending') || ',' ||"
          "  count(*) FILTER (WHERE state = 'submitted') || ',' ||"
          "  count(*) FILTER (WHERE state = 'confirmed') || ',' ||"
          "  count(*) FILTER (WHERE state = 'failed') FROM anchors WHERE ledger = $1)"
          " FROM conf",
          1, p, PGRES_TUPLES_OK, err, sizeof(err));
    if (res == NULL) {
        log_warn("cannot read the anchoring figures: %s", err);
        return;
    }
    metric_set(a->m_confirmed, strtod(PQgetvalue(res, 0, 0), NULL));
    metric_set(a->m_checkpoint, strtod(PQgetvalue(res, 0, 1), NULL));
    metric_set(a->m_log_size, strtod(PQgetvalue(res, 0, 2), NULL));
    atomic_store(&a->oldest_uncovered_ms,
                 PQgetisnull(res, 0, 3) ? 0 : strtoll(PQgetvalue(res, 0, 3), NULL, 10));
    const char *counts = PQgetvalue(res, 0, 4);
    for (size_t i = 0; i < 4; i++) {
        metric_set(a->m_anchors, strtod(counts, NULL), states[i]);
        counts = strchr(counts, ',');
        if (counts == NULL)
            break;
        counts++;
    }
    PQclear(res);
}

/* --- the cycle ----------------------------------------------------------------------------- */

static int cycle(struct anchor *a)
{
    char err[512];
    int appended = 0, total = 0;
    uint64_t made = 0;

    PGresult *res = q(a, "UPDATE anchor_leader SET seen_at = now()", 0, NULL, PGRES_COMMAND_OK, err,
                      sizeof(err));
    if (res == NULL) {
        log_warn("PostgreSQL failed: %s", err);
        return -1;
    }
    PQclear(res);
    if (tlog_restore(a->tlog, a->conn, err, sizeof(err)) != 0) {
        log_error("cannot restore the Merkle log: %s", err);
        return -1;
    }
    do {
        if (tlog_append(a->tlog, a->conn, a->batch, &appended, err, sizeof(err)) != 0) {
            log_error("appending to the Merkle log failed: %s", err);
            return -1;
        }
        total += appended;
    } while (appended == a->batch && !stopping(a));
    if (total > 0)
        log_emit(LOG_INFO, NULL, "appended",
                 json_pack("{s:i, s:I}", "leaves", total, "size", (json_int_t)tlog_size(a->tlog)));
    if (tlog_checkpoint(a->tlog, a->conn, ledger_name(a->ledger), &made, err, sizeof(err)) != 0) {
        log_error("no checkpoint: %s", err);
        return -1;
    }
    if (made > 0) {
        log_emit(LOG_INFO, NULL, "checkpoint signed",
                 json_pack("{s:I, s:s}", "size", (json_int_t)made, "origin", a->cfg->log_origin));
        crash_point(a, "checkpoint_stored");
    }
    /* The figures before the ledger calls too: those may take a while when it is down. */
    stats_refresh(a);
    int rc = anchors_work(a);
    stats_refresh(a);
    /*
     * The scan cache learns the new leaves and the newest confirmed anchor. Redis failing
     * never fails the cycle: what it missed is pushed again by the next one.
     */
    if (rc == 0 && PQtransactionStatus(a->conn) == PQTRANS_IDLE)
        cachesync_run(a->sync, a->conn);
    return rc;
}

static void *anchor_main(void *arg)
{
    struct anchor *a = arg;
    int64_t next = 0;
    int64_t last_stats = 0;

    while (!stopping(a)) {
        if (!a->leader) {
            lead_try(a);
            if (!a->leader) {
                if (a->conn != NULL && now_ms() - last_stats >= 5000) {
                    stats_refresh(a);
                    last_stats = now_ms();
                }
                nap(a, ANCHOR_STANDBY_POLL_MS);
                continue;
            }
            next = 0; /* a new leader reconciles at once */
        }
        if (now_ms() < next) {
            int64_t wait = next - now_ms();
            nap(a, wait > 1000 ? 1000 : (long)wait);
            continue;
        }
        next = now_ms() + (int64_t)a->cfg->anchor_interval_s * 1000;
        int rc = cycle(a);
        metric_inc(a->m_cycles, rc == 0 ? "ok" : "error");
        if (rc != 0 && (a->conn == NULL || PQstatus(a->conn) != CONNECTION_OK))
            conn_drop(a);
        else if (rc != 0 && a->conn != NULL) {
            /* Any transaction left open by a failure is closed before the next cycle. */
            if (PQtransactionStatus(a->conn) != PQTRANS_IDLE)
                PQclear(PQexec(a->conn, "ROLLBACK"));
            if (!conn_writable(a))
                conn_drop(a);
        }
    }
    conn_drop(a);
    return NULL;
}

/* --- life cycle ---------------------------------------------------------------------------- */

struct anchor *anchor_new(const struct config *cfg, struct metrics *metrics, char *err,
                          size_t errlen)
{
    char path[4096], host[64] = "";
    struct anchor *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->cfg = cfg;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);

    if (cfg->log_key_file != NULL) {
        snprintf(path, sizeof(path), "%s", cfg->log_key_file);
    } else {
        if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "TAGPROOF_DATA_DIR=%s: %s", cfg->data_dir, strerror(errno));
            goto fail;
        }
        snprintf(path, sizeof(path), "%s/log-signing.pem", cfg->data_dir);
    }
    char why[256];
    if ((a->signer = note_signer_load_or_create(path, cfg->log_origin, why, sizeof(why))) == NULL) {
        snprintf(err, errlen, "%s: %s",
                 cfg->log_key_file != NULL ? "TAGPROOF_LOG_KEY_FILE" : "the log's signing key",
                 why);
        goto fail;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if ((a->ledger = ledger_new(cfg, err, errlen)) == NULL)
        goto fail;
    if ((a->tlog = tlog_new(cfg->log_origin, a->signer, crash_point, a)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((a->sync = cachesync_new(cfg, metrics, err, errlen)) == NULL)
        goto fail;
    gethostname(host, sizeof(host) - 1);
    snprintf(a->holder, sizeof(a->holder), "%s-%d", host, (int)getpid());
    const char *crash = getenv("TAGPROOF_TEST_CRASH_AT");
    snprintf(a->crash_at, sizeof(a->crash_at), "%s", crash != NULL ? crash : "");
    const char *batch = getenv("TAGPROOF_TEST_ANCHOR_BATCH");
    a->batch = batch != NULL && atoi(batch) > 0 ? atoi(batch) : ANCHOR_BATCH;
    a->rng = (unsigned)now_ms() ^ (unsigned)getpid();

    a->m_leader = metrics_gauge(metrics, "tagproof_anchor_leader",
                                "1 while this instance leads (appends, signs and anchors).", NULL);
    a->m_log_size = metrics_gauge(metrics, "tagproof_log_size", "Leaves in the Merkle log.", NULL);
    a->m_checkpoint = metrics_gauge(metrics, "tagproof_checkpoint_size",
                                    "Tree size of the latest signed checkpoint.", NULL);
    a->m_confirmed =
        metrics_gauge(metrics, "tagproof_anchor_confirmed_size",
                      "Tree size of the latest checkpoint whose anchor is confirmed.", NULL);
    a->m_anchors = metrics_gauge(metrics, "tagproof_anchors",
                                 "Anchors on the configured ledger by state.", "state");
    a->m_errors = metrics_counter(metrics, "tagproof_ledger_errors_total",
                                  "Failed ledger calls by ledger and call.", "ledger,call");
    a->m_cycles = metrics_counter(metrics, "tagproof_anchor_cycles_total",
                                  "Anchoring cycles run by this instance, by result.", "result");
    metrics_gauge_fn(metrics, "tagproof_anchor_lag_seconds",
                     "Seconds since the oldest leaf not yet covered by a confirmed anchor was "
                     "queued (0 when every leaf is covered).",
                     lag_seconds, a);
    metric_set(a->m_leader, 0);
    log_emit(LOG_INFO, NULL, "log key loaded",
             json_pack("{s:s, s:s}", "log_key", note_signer_vkey(a->signer), "ledger",
                       ledger_name(a->ledger)));
    return a;
fail:
    anchor_free(a);
    return NULL;
}

int anchor_start(struct anchor *a)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(&a->thread, NULL, anchor_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -1;
    a->started = 1;
    return 0;
}

void anchor_free(struct anchor *a)
{
    if (a == NULL)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    if (a->conn != NULL)
        PQfinish(a->conn);
    tlog_free(a->tlog);
    cachesync_free(a->sync);
    ledger_free(a->ledger);
    note_signer_free(a->signer);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
