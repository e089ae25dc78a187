/*
 * breaker: a circuit breaker that stops calls to a failing dependency (Redis, PostgreSQL)
 * and lets a few probe calls find out when it is back. Pure C and thread-safe; it knows
 * outcomes and a clock, never the dependency itself.
 */
#ifndef TAGPROOF_BREAKER_H
#define TAGPROOF_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

struct breaker;

/* The numeric values are stable: they are what a state gauge exports. */
enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

/*
 * What became of a permitted call. "Not found" is a success: the dependency answered. A
 * success that took slow_call_ms or longer is counted as a failure.
 */
enum breaker_outcome { BREAKER_SUCCESS = 0, BREAKER_FAILURE, BREAKER_TIMEOUT };

/*
 * Closed, the breaker keeps recent outcomes in ten buckets of window_ms / 10 each (rounded
 * down): an outcome counts until the tenth bucket after its own begins, that is for nine to
 * ten bucket lengths. It opens when the window holds at least min_calls outcomes and
 * failures (with timeouts and slow successes) are failure_rate_pct percent of them or more.
 * Open, it rejects every call for open_wait_ms, then turns half-open and hands out
 * half_open_permits probe calls. The round of probes is decided as soon as its result is
 * certain: open again once failures reach failure_rate_pct of the permits, closed (with an
 * empty window) once they no longer can. If every permit is out and the round is still
 * undecided half_open_max_ms after the last one was handed out, a probe was lost or hangs,
 * and the breaker opens again rather than wait forever.
 */
struct breaker_config {
    unsigned failure_rate_pct;  /* 1..100 */
    unsigned min_calls;         /* at least 1 */
    unsigned window_ms;         /* at least 10 */
    unsigned slow_call_ms;      /* 0: no call is slow */
    unsigned open_wait_ms;      /* 0: the next call after opening is a probe */
    unsigned half_open_permits; /* at least 1 */
    unsigned half_open_max_ms;  /* 0: wait for the probes forever */
    /* Monotonic milliseconds, called without the breaker's lock; NULL: CLOCK_MONOTONIC. */
    int64_t (*now_ms)(void *arg);
    void *clock_arg;
};

/* Counters since breaker_new(); a consistent snapshot taken under the lock. */
struct breaker_stats {
    enum breaker_state state;
    uint64_t generation;
    uint64_t permitted;       /* breaker_allow() said yes */
    uint64_t rejected;        /* breaker_allow() said no */
    uint64_t successes;       /* outcomes counted as successes */
    uint64_t failures;        /* outcomes counted as failures, timeouts and slow calls included */
    uint64_t timeouts;        /* of failures: BREAKER_TIMEOUT */
    uint64_t slow_calls;      /* of failures: successes at or above slow_call_ms */
    uint64_t ignored;         /* outcomes of an older generation, or extra reports, not counted */
    uint64_t transitions;     /* state changes */
    uint64_t window_calls;    /* outcomes in the closed window now (0 unless closed) */
    uint64_t window_failures; /* failures among them */
};

/*
 * Called at every state change with the breaker's lock held, so changes arrive one at a
 * time and in order and a gauge set here never goes stale. It must be quick (a log line, a
 * gauge) and must not call any breaker function on the same breaker, which would deadlock.
 * name is borrowed for the breaker's lifetime.
 */
typedef void breaker_change_fn(void *arg, const char *name, enum breaker_state from,
                               enum breaker_state to);

/*
 * 50 %, 10 calls, a 10 s window, no slow calls, 5 s open, 3 probes, 30 s for the probes to
 * report, CLOCK_MONOTONIC.
 */
void breaker_config_default(struct breaker_config *cfg);

/*
 * A closed breaker with an empty window, at generation 1; every change of state adds one to
 * the generation. name is copied; cfg is copied and need not outlive the call. NULL with
 * errno EINVAL when cfg is out of range, ENOMEM when memory runs out. Caller frees with
 * breaker_free().
 */
struct breaker *breaker_new(const char *name, const struct breaker_config *cfg);

/* No other thread may be using the breaker. NULL is allowed. */
void breaker_free(struct breaker *b);

/* The name given to breaker_new(); borrowed until breaker_free(). */
const char *breaker_name(const struct breaker *b);

/*
 * May the caller make the call now? When it returns true it stores the current generation
 * in *generation, and the caller must report the call's outcome with breaker_record() and
 * that generation, exactly once. When it returns false *generation is left alone and
 * nothing is to be reported.
 */
bool breaker_allow(struct breaker *b, uint64_t *generation);

/*
 * Reports the outcome of a call that breaker_allow() permitted. duration_ms is how long
 * the call took, for the slow-call rule. An outcome whose generation is no longer current
 * belongs to a state that has ended and is ignored: a late reply after the breaker opened
 * or closed must not count in the new state.
 */
void breaker_record(struct breaker *b, uint64_t generation, enum breaker_outcome outcome,
                    int64_t duration_ms);

/*
 * The state now. Like breaker_allow() it notices that the open wait has ended, so it may
 * turn the breaker half-open (and call the change callback).
 */
enum breaker_state breaker_state(struct breaker *b);

/* "closed", "open" or "half_open"; a static string. */
const char *breaker_state_name(enum breaker_state state);

/* Fills *out with a snapshot of the counters and the state now. */
void breaker_stats(struct breaker *b, struct breaker_stats *out);

/*
 * Sets the state-change callback, replacing any earlier one; fn NULL removes it. arg is
 * borrowed and must stay valid while the callback is set.
 */
void breaker_on_change(struct breaker *b, breaker_change_fn *fn, void *arg);

#endif
