/*
 * breaker: the state machine, a time-bucketed window of outcomes and the probe accounting,
 * all behind one mutex. The clock is read before the lock is taken, so every critical
 * section is a few dozen instructions and never waits on a clock callback.
 */
#include "breaker.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Ten buckets make the window slide in steps of a tenth of its length. A count-based window
 * would have to remember every outcome; buckets cost the same whether the scan path makes
 * ten calls a second or ten thousand.
 */
#define BREAKER_BUCKETS 10

struct breaker_bucket {
    uint64_t calls;
    uint64_t failures;
};

struct breaker {
    pthread_mutex_t lock;
    char *name;
    struct breaker_config cfg; /* read-only after breaker_new() */
    int64_t bucket_ms;

    enum breaker_state state;
    uint64_t generation;
    int64_t state_since; /* when the current state was entered */

    /*
     * Closed: buckets[n % BREAKER_BUCKETS] holds bucket number n (time / bucket_ms) for the
     * newest BREAKER_BUCKETS numbers up to epoch; the sums over them are kept alongside so
     * that a verdict costs no loop.
     */
    struct breaker_bucket buckets[BREAKER_BUCKETS];
    int64_t epoch;
    uint64_t window_calls;
    uint64_t window_failures;

    /* Half-open: the current round of probes. */
    unsigned probes_permitted;
    unsigned probes_ok;
    unsigned probes_failed;
    int64_t probes_out_since; /* when the last permit was handed out */

    breaker_change_fn *on_change;
    void *on_change_arg;

    struct breaker_stats counters; /* state, generation and window are filled on demand */
};

void breaker_config_default(struct breaker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->failure_rate_pct = 50;
    cfg->min_calls = 10;
    cfg->window_ms = 10000;
    cfg->slow_call_ms = 0;
    cfg->open_wait_ms = 5000;
    cfg->half_open_permits = 3;
    cfg->half_open_max_ms = 30000;
    cfg->now_ms = NULL;
    cfg->clock_arg = NULL;
}

static int64_t breaker_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t breaker_now(const struct breaker *b)
{
    if (b->cfg.now_ms != NULL)
        return b->cfg.now_ms(b->cfg.clock_arg);
    return breaker_monotonic_ms();
}

/* Rounds towards minus infinity, so a fake clock may start below zero. */
static int64_t floor_div(int64_t a, int64_t d)
{
    int64_t q = a / d;
    if ((a % d != 0) && ((a < 0) != (d < 0)))
        q--;
    return q;
}

static struct breaker_bucket *window_bucket(struct breaker *b, int64_t epoch)
{
    int64_t i = epoch % BREAKER_BUCKETS;
    if (i < 0)
        i += BREAKER_BUCKETS;
    return &b->buckets[i];
}

static void window_reset(struct breaker *b, int64_t now)
{
    memset(b->buckets, 0, sizeof(b->buckets));
    b->window_calls = 0;
    b->window_failures = 0;
    b->epoch = floor_div(now, b->bucket_ms);
}

/*
 * Moves the window forward to now, dropping the buckets that fell out of it. Threads read
 * the clock before they take the lock, so now may be a little older than the newest bucket;
 * such an outcome is counted in the newest bucket rather than moving the window back.
 */
static void window_advance(struct breaker *b, int64_t now)
{
    int64_t epoch = floor_div(now, b->bucket_ms);
    if (epoch <= b->epoch)
        return;
    if (epoch - b->epoch >= BREAKER_BUCKETS) {
        window_reset(b, now);
        return;
    }
    while (b->epoch < epoch) {
        b->epoch++;
        struct breaker_bucket *old = window_bucket(b, b->epoch);
        b->window_calls -= old->calls;
        b->window_failures -= old->failures;
        old->calls = 0;
        old->failures = 0;
    }
}

/*
 * Every change of state starts a new generation, so outcomes of calls permitted before the
 * change no longer count. Called with the lock held; so is the callback.
 */
static void breaker_transition(struct breaker *b, enum breaker_state to, int64_t now)
{
    enum breaker_state from = b->state;
    assert(from != to);
    b->state = to;
    b->generation++;
    b->state_since = now;
    b->counters.transitions++;
    if (to == BREAKER_CLOSED)
        window_reset(b, now);
    if (to == BREAKER_HALF_OPEN) {
        b->probes_permitted = 0;
        b->probes_ok = 0;
        b->probes_failed = 0;
    }
    if (b->on_change != NULL)
        b->on_change(b->on_change_arg, b->name, from, to);
}

/*
 * The changes that only need time to pass. Nothing runs on a timer, so they happen when a
 * caller next looks at the breaker.
 */
static void breaker_tick(struct breaker *b, int64_t now)
{
    if (b->state == BREAKER_OPEN && now - b->state_since >= (int64_t)b->cfg.open_wait_ms) {
        breaker_transition(b, BREAKER_HALF_OPEN, now);
        return;
    }
    /*
     * Only a round whose permits are all out can be stuck: while some are left, the next
     * call is a probe. A stuck round means a probe's outcome was lost or the dependency
     * hangs, and neither is a reason to close.
     */
    if (b->state == BREAKER_HALF_OPEN && b->cfg.half_open_max_ms != 0 &&
        b->probes_permitted == b->cfg.half_open_permits &&
        now - b->probes_out_since >= (int64_t)b->cfg.half_open_max_ms)
        breaker_transition(b, BREAKER_OPEN, now);
}

/*
 * Decides the round as soon as its result is certain, which gives the verdict that waiting
 * for all permits would give, without waiting for a probe that is about to time out. Both
 * sides compare failures / permits with the threshold, multiplied out to stay in integers.
 */
static void probes_decide(struct breaker *b, int64_t now)
{
    uint64_t permits = b->cfg.half_open_permits;
    uint64_t limit = (uint64_t)b->cfg.failure_rate_pct * permits;
    uint64_t pending = permits - b->probes_ok - b->probes_failed;

    if ((uint64_t)b->probes_failed * 100 >= limit)
        breaker_transition(b, BREAKER_OPEN, now);
    else if (((uint64_t)b->probes_failed + pending) * 100 < limit)
        breaker_transition(b, BREAKER_CLOSED, now);
}

struct breaker *breaker_new(const char *name, const struct breaker_config *cfg)
{
    struct breaker *b = NULL;

    if (name == NULL || cfg == NULL || cfg->failure_rate_pct < 1 || cfg->failure_rate_pct > 100 ||
        cfg->min_calls < 1 || cfg->window_ms < BREAKER_BUCKETS || cfg->half_open_permits < 1) {
        errno = EINVAL;
        return NULL;
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        goto fail;
    b->name = strdup(name);
    if (b->name == NULL)
        goto fail;
    if (pthread_mutex_init(&b->lock, NULL) != 0)
        goto fail;
    b->cfg = *cfg;
    b->bucket_ms = cfg->window_ms / BREAKER_BUCKETS;
    b->state = BREAKER_CLOSED;
    b->generation = 1;
    b->state_since = breaker_now(b);
    window_reset(b, b->state_since);
    return b;

fail:
    if (b != NULL)
        free(b->name);
    free(b);
    errno = ENOMEM;
    return NULL;
}

void breaker_free(struct breaker *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->name);
    free(b);
}

const char *breaker_name(const struct breaker *b)
{
    return b->name;
}

bool breaker_allow(struct breaker *b, uint64_t *generation)
{
    int64_t now = breaker_now(b);
    bool ok = false;

    pthread_mutex_lock(&b->lock);
    breaker_tick(b, now);
    switch (b->state) {
    case BREAKER_CLOSED:
        ok = true;
        break;
    case BREAKER_OPEN:
        break;
    case BREAKER_HALF_OPEN:
        if (b->probes_permitted < b->cfg.half_open_permits) {
            ok = true;
            if (++b->probes_permitted == b->cfg.half_open_permits)
                b->probes_out_since = now;
        }
        break;
    }
    if (ok) {
        b->counters.permitted++;
        *generation = b->generation;
    } else {
        b->counters.rejected++;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void breaker_record(struct breaker *b, uint64_t generation, enum breaker_outcome outcome,
                    int64_t duration_ms)
{
    int64_t now = breaker_now(b);
    bool slow = outcome == BREAKER_SUCCESS && b->cfg.slow_call_ms != 0 &&
                duration_ms >= (int64_t)b->cfg.slow_call_ms;
    bool failed = outcome != BREAKER_SUCCESS || slow;

    pthread_mutex_lock(&b->lock);
    breaker_tick(b, now);
    /*
     * The open state's generation is never handed out, and a half-open round takes one
     * report per permit; anything else is a caller's late or extra report.
     */
    if (generation != b->generation || b->state == BREAKER_OPEN ||
        (b->state == BREAKER_HALF_OPEN && b->probes_ok + b->probes_failed >= b->probes_permitted)) {
        b->counters.ignored++;
        goto out;
    }
    if (failed) {
        b->counters.failures++;
        b->counters.timeouts += outcome == BREAKER_TIMEOUT;
        b->counters.slow_calls += slow;
    } else {
        b->counters.successes++;
    }

    if (b->state == BREAKER_CLOSED) {
        window_advance(b, now);
        struct breaker_bucket *cur = window_bucket(b, b->epoch);
        cur->calls++;
        cur->failures += failed;
        b->window_calls++;
        b->window_failures += failed;
        if (b->window_calls >= b->cfg.min_calls &&
            b->window_failures * 100 >= (uint64_t)b->cfg.failure_rate_pct * b->window_calls)
            breaker_transition(b, BREAKER_OPEN, now);
    } else {
        if (failed)
            b->probes_failed++;
        else
            b->probes_ok++;
        probes_decide(b, now);
    }
out:
    pthread_mutex_unlock(&b->lock);
}

enum breaker_state breaker_state(struct breaker *b)
{
    int64_t now = breaker_now(b);
    enum breaker_state s;

    pthread_mutex_lock(&b->lock);
    breaker_tick(b, now);
    s = b->state;
    pthread_mutex_unlock(&b->lock);
    return s;
}

const char *breaker_state_name(enum breaker_state state)
{
    switch (state) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

void breaker_stats(struct breaker *b, struct breaker_stats *out)
{
    int64_t now = breaker_now(b);

    pthread_mutex_lock(&b->lock);
    breaker_tick(b, now);
    *out = b->counters;
    out->state = b->state;
    out->generation = b->generation;
    out->window_calls = 0;
    out->window_failures = 0;
    if (b->state == BREAKER_CLOSED) {
        window_advance(b, now);
        out->window_calls = b->window_calls;
        out->window_failures = b->window_failures;
    }
    pthread_mutex_unlock(&b->lock);
}

void breaker_on_change(struct breaker *b, breaker_change_fn *fn, void *arg)
{
    pthread_mutex_lock(&b->lock);
    b->on_change = fn;
    b->on_change_arg = arg;
    pthread_mutex_unlock(&b->lock);
}
