/*
 * pg_support: what the test_pg* integration tests share — running the event loop until a
 * callback has fired, capturing results, and superuser SQL on a test cluster.
 */
#include "pg_support.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgs_on_result(void *arg, const struct pg_result_info *r)
{
    struct pgs_res *out = arg;
    out->calls++;
    out->status = r->status;
    out->done_ms = ts_now_ms();
    snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", r->sqlstate != NULL ? r->sqlstate : "");
    snprintf(out->message, sizeof(out->message), "%s", r->message != NULL ? r->message : "");
    free(out->value);
    out->value = NULL;
    out->value_null = 0;
    out->ntuples = 0;
    out->cmd_tuples = -1;
    if (r->res != NULL) {
        const char *ct = PQcmdTuples((PGresult *)r->res);
        if (ct != NULL && *ct != '\0')
            out->cmd_tuples = atol(ct);
        if (PQresultStatus(r->res) == PGRES_TUPLES_OK) {
            out->ntuples = PQntuples(r->res);
            if (out->ntuples > 0 && PQnfields(r->res) > 0) {
                out->value_null = PQgetisnull(r->res, 0, 0);
                if (!out->value_null)
                    out->value = strdup(PQgetvalue(r->res, 0, 0));
            }
        }
    }
}

void pgs_res_clear(struct pgs_res *r)
{
    free(r->value);
    memset(r, 0, sizeof(*r));
}

static void pgs_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

int pgs_run_until(struct event_base *base, const int *counter, int target, int timeout_ms)
{
    /* A ticking timer keeps EVLOOP_ONCE from blocking past the deadline. */
    struct event *tick = event_new(base, -1, EV_PERSIST, pgs_wake, NULL);
    struct timeval tv = {0, 10 * 1000};
    int64_t end = ts_now_ms() + timeout_ms;
    int rc = -1;
    assert_non_null(tick);
    event_add(tick, &tv);
    for (;;) {
        if (*counter >= target) {
            rc = 0;
            break;
        }
        if (ts_now_ms() >= end)
            break;
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(tick);
    return rc;
}

void pgs_run_for(struct event_base *base, int ms)
{
    int never = 0;
    pgs_run_until(base, &never, 1, ms);
}

enum pg_status pgs_query(struct event_base *base, struct pg_pool *pool, int timeout_ms,
                         const char *sql, int nparams, const char *const *values,
                         struct pgs_res *out)
{
    pgs_res_clear(out);
    assert_int_equal(pg_query(pool, timeout_ms, pgs_on_result, out, sql, nparams, values), 0);
    /* The callback is never called from inside pg_query. */
    assert_int_equal(out->calls, 0);
    assert_int_equal(
        pgs_run_until(base, &out->calls, 1, (timeout_ms > 0 ? timeout_ms : 10000) + 5000), 0);
    pgs_run_for(base, 0);
    assert_int_equal(out->calls, 1);
    return out->status;
}

char *pgs_value(struct event_base *base, struct pg_pool *pool, const char *sql)
{
    struct pgs_res r = {0};
    if (pgs_query(base, pool, 5000, sql, 0, NULL, &r) != PG_OK)
        fail_msg("%s: %s %s %s", sql, pg_status_str(r.status), r.sqlstate, r.message);
    char *v = r.value;
    r.value = NULL;
    pgs_res_clear(&r);
    return v;
}

int pgs_wait_ok(struct event_base *base, struct pg_pool *pool, const char *sql, int within_ms)
{
    int64_t start = ts_now_ms();
    struct pgs_res r = {0};
    while (ts_now_ms() - start < within_ms) {
        if (pgs_query(base, pool, 1000, sql, 0, NULL, &r) == PG_OK) {
            pgs_res_clear(&r);
            return (int)(ts_now_ms() - start);
        }
        pgs_run_for(base, 50);
    }
    pgs_res_clear(&r);
    return -1;
}

struct pg_options pgs_options(const char *conninfo, int pool_size)
{
    struct pg_options o = {
        .conninfo = conninfo,
        .pool_size = pool_size,
        .connect_timeout_ms = 2000,
        .backoff_min_ms = 20,
        .backoff_max_ms = 300,
    };
    return o;
}

int pgs_psql(struct ts_pg *pg, const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    /* A quoted here-document passes the SQL through the shell untouched. */
    int rc = ts_sh("'%s/scripts/lib/pgcluster' psql '%s' %d >/dev/null <<'PGS_EOF'\n%s\nPGS_EOF\n",
                   TAGPROOF_SOURCE_DIR, pg->dir, pg->port, sql);
    free(sql);
    return rc;
}

void pgs_cluster_start(struct ts_pg *pg)
{
    setenv("PGCLUSTER_FAST", "1", 1);
    if (ts_pg_init_start(pg) != 0) {
        /* The log goes with the cluster's directory: show it before it does. */
        ts_sh("tail -n 20 '%s.log' '%s/postgresql.log' >&2", pg->dir, pg->dir);
        fail_msg("cannot start a PostgreSQL cluster in %s", pg->dir);
    }
}
