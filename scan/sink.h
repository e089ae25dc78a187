/*
 * sink: moves scan events from the Redis Stream into PostgreSQL (SPEC §5). A consumer of one
 * consumer group reads batches, stores each batch in one transaction (idempotent: the stream
 * entry id is the event id) and acknowledges the entries only after COMMIT; it takes over the
 * entries a crashed consumer left pending, trims what every group has acknowledged, and keeps
 * the month partitions of scan_events ahead of the clock.
 *
 * A sink runs on one event_base (one thread) with a Redis client and a PostgreSQL pool it
 * borrows. Give it a Redis client of its own: its XREADGROUP BLOCK holds the connection for up
 * to block_ms, which would delay any other command on that client. Nothing here blocks.
 */
#ifndef TAGPROOF_SINK_H
#define TAGPROOF_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "metrics.h"
#include "pg.h"
#include "redis.h"

struct sink;

/* What sink_new() needs; strings are copied. Zero or negative numbers take the default. */
struct sink_options {
    const char *stream;   /* NULL: EVENTS_STREAM_KEY */
    const char *group;    /* NULL: "tagproof-sink" */
    const char *consumer; /* required, unique per process and stable for its life: host-pid */
    int batch_max;        /* entries per read and per transaction; 500, at most 5000 */
    /*
     * After storing a batch of fewer than batch_max / 2 new entries, wait this long before
     * reading again: under load the next batch is then bigger, and a transaction's fixed
     * cost (BEGIN, statement, COMMIT and its WAL flush) is shared by more events. Events
     * reach PostgreSQL this much later at most. 100.
     */
    int linger_ms;
    /*
     * XREADGROUP BLOCK time. The command's deadline is block_ms + redis_timeout_ms, so the
     * Redis client's stall detection never mistakes a blocked read for a dead server.
     */
    int block_ms;         /* 1000 */
    int redis_timeout_ms; /* deadline of every other Redis command; 2000 */
    /*
     * The batch transaction's statement_timeout (SET LOCAL, whatever the pool's is) and,
     * plus a second, the client-side deadline of each call; 10000. A transaction that times
     * out is retried at once in halves, down to single events.
     */
    int pg_timeout_ms;
    int claim_idle_ms;         /* XAUTOCLAIM entries pending longer than this, from anyone; 30000 */
    int claim_interval_ms;     /* how often to look: claim_idle_ms / 2 within 100..10000 */
    int trim_interval_ms;      /* XINFO/XPENDING/XTRIM and the pending gauges; 5000 */
    int partition_interval_ms; /* re-ensure this and next month's partitions; 3600000 */
    int backoff_min_ms;        /* after a failed read, batch or ack; 100, doubling ... */
    int backoff_max_ms;        /* ... up to 5000 */
    /*
     * The window of event times the sink stores: events older than max_age_days or more than
     * max_future_ms ahead of this host's clock are refused (logged, acknowledged, counted as
     * "rejected"): their time is implausible, and storing them would create partitions for
     * arbitrary months. Within the window, missing partitions are created on demand.
     */
    int max_age_days;  /* 90 */
    int max_future_ms; /* 3600000 */
    /*
     * TEST HOOK, never set in production: each batch's transaction runs
     * "SELECT pg_sleep(commit_delay_ms / 1000.0)" after its statements and before COMMIT, so
     * a test can kill a sink with a transaction open. 0: off.
     */
    int commit_delay_ms;
};

/* Counters since sink_new(), for tests and readiness. */
struct sink_stats {
    uint64_t stored;      /* events inserted into scan_events */
    uint64_t duplicate;   /* events already there (a redelivery) */
    uint64_t malformed;   /* entries events_parse() refused, acknowledged */
    uint64_t rejected;    /* well-formed events refused (time window, or PostgreSQL alone) */
    uint64_t deleted;     /* pending entries that were no longer in the stream */
    uint64_t first_scans; /* tags whose first_scanned_at this sink set */
    uint64_t batches_ok, batches_failed;
    uint64_t acked;          /* entries acknowledged */
    uint64_t claimed;        /* entries taken over from other (or own, stale) consumers */
    uint64_t trimmed;        /* entries removed by XTRIM */
    uint64_t partition_runs; /* successful partition ensures */
    int64_t pending;         /* the group's pending entries at the last trim round; -1 unknown */
    double lag_s;            /* age of the oldest event of the last stored batch; 0 when idle */
    bool running;            /* started and not yet stopped */
};

/* Called once when sink_stop() has finished; the sink may be freed from inside it. */
typedef void (*sink_done_fn)(void *arg);

/*
 * Creates a sink; no I/O until sink_start(). base, redis and pg are borrowed and must outlive
 * the sink; metrics may be NULL, else the sink registers its tagproof_sink_* families there.
 * Returns NULL with a static reason in *why (why may be NULL) on bad options.
 */
struct sink *sink_new(struct event_base *base, struct redis_client *redis, struct pg_pool *pg,
                      const struct sink_options *opt, struct metrics *metrics, const char **why);

/*
 * Starts the loop: partitions, group creation, then reading. 0, or -1 when already started or
 * stopped, or when the pool refused the sink's prepared statement.
 */
int sink_start(struct sink *s);

/*
 * Stops: the batch in flight is finished (stored, committed and acknowledged, or left pending
 * if that fails) and no new one is read; a blocked read returns within block_ms. done(arg)
 * then runs once, from the event loop, never inside this call (at the next loop iteration for
 * a sink never started). Returns 0, or -1 for a second call, which is otherwise ignored.
 */
int sink_stop(struct sink *s, sink_done_fn done, void *arg);

/*
 * Frees the sink. Safe at any time, also with commands in flight (their late callbacks are
 * ignored and an acquired PostgreSQL connection goes back to the pool); entries read but not
 * acknowledged stay pending and are claimed by another consumer after claim_idle_ms. Free it
 * before its Redis client and pool. NULL is ignored.
 */
void sink_free(struct sink *s);

/* Copies the counters; on the sink's own thread (other threads read the metrics). */
void sink_get_stats(const struct sink *s, struct sink_stats *out);

#endif
