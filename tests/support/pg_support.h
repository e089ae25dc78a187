/* pg_support: what the test_pg* integration tests share — running the event loop until a
 * callback has fired, capturing results, and superuser SQL on a test cluster. */
#ifndef TAGPROOF_TEST_PG_SUPPORT_H
#define TAGPROOF_TEST_PG_SUPPORT_H

#include "support.h"
#include "pg.h"

#include <event2/event.h>
#include <stdint.h>

/* One call's outcome, copied out of the callback; calls counts deliveries (must end at 1). */
struct pgs_res {
    int calls;
    enum pg_status status;
    char sqlstate[8];
    char message[512];
    int ntuples;
    char *value;    /* row 0, column 0, or NULL (also for SQL NULL) */
    int value_null; /* row 0, column 0 was SQL NULL */
    long cmd_tuples;
    int64_t done_ms; /* ts_now_ms() at delivery */
};

/* A pg_result_fn that fills the struct pgs_res given as arg. */
void pgs_on_result(void *arg, const struct pg_result_info *r);
void pgs_res_clear(struct pgs_res *r);

/* Runs the loop until *counter >= target; 0 when reached, -1 after timeout_ms. */
int pgs_run_until(struct event_base *base, const int *counter, int target, int timeout_ms);

/* Runs the loop for ms milliseconds whatever happens. */
void pgs_run_for(struct event_base *base, int ms);

/* pg_query and wait for its callback; returns its status, the outcome in *out. */
enum pg_status pgs_query(struct event_base *base, struct pg_pool *pool, int timeout_ms,
                         const char *sql, int nparams, const char *const *values,
                         struct pgs_res *out);

/* The first column of the first row of sql as a new string (caller frees), failing the test
 * on any error. */
char *pgs_value(struct event_base *base, struct pg_pool *pool, const char *sql);

/* Repeats sql every 50 ms until it succeeds; the ms it took, or -1 after within_ms. */
int pgs_wait_ok(struct event_base *base, struct pg_pool *pool, const char *sql, int within_ms);

/* Options for a test pool on conninfo: small backoff so recovery is quick to observe. */
struct pg_options pgs_options(const char *conninfo, int pool_size);

/* Runs SQL as the cluster's superuser through psql; the exit status. */
int pgs_psql(struct ts_pg *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts a cluster with fsync off (throw-away data, faster COPY); fails the test on error. */
void pgs_cluster_start(struct ts_pg *pg);

#endif
