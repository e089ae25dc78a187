/*
 * Stress test of breaker: eight threads call, report late and out of order, and lose the
 * odd report, on a shared fake clock whose dependency is healthy and sick in turns, while
 * the test checks that no state hands out more than it may.
 */
#include "support.h"
#include "breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define ITERATIONS 200000
#define PERMITS 3
#define MAX_GENERATIONS (1 << 16)
#define PENDING 8

struct stress {
    struct breaker *b;
    _Atomic int64_t clock;

    /*
     * The state of every generation, written by the change callback under the breaker's
     * lock before any call can be handed that generation, so a worker may read it right
     * after breaker_allow() returns.
     */
    atomic_uchar gen_state[MAX_GENERATIONS];
    atomic_uint gen_permits[MAX_GENERATIONS];
    atomic_int gen_in_flight[MAX_GENERATIONS];
    atomic_uint violations;

    /* Written only by the change callback, which the breaker calls one at a time. */
    uint64_t changes;
    enum breaker_state last_to;
    uint64_t kinds[3][3];
};

struct pending_call {
    bool used;
    uint64_t gen;
    enum breaker_outcome outcome;
    int64_t duration_ms;
};

struct worker {
    struct stress *s;
    uint64_t rng;
    uint64_t attempts;
    uint64_t permitted;
    uint64_t records;
    uint64_t half_open_permits;
    struct pending_call pending[PENDING];
};

static int64_t stress_now(void *arg)
{
    struct stress *s = arg;
    return atomic_load_explicit(&s->clock, memory_order_relaxed);
}

static void stress_violation(struct stress *s)
{
    atomic_fetch_add(&s->violations, 1);
}

static void stress_on_change(void *arg, const char *name, enum breaker_state from,
                             enum breaker_state to)
{
    struct stress *s = arg;
    (void)name;
    if (from != s->last_to || from > BREAKER_HALF_OPEN || to > BREAKER_HALF_OPEN) {
        stress_violation(s);
        return;
    }
    s->last_to = to;
    s->kinds[from][to]++;
    s->changes++;
    /* Generations start at 1 and every change adds one. */
    uint64_t gen = 1 + s->changes;
    if (gen >= MAX_GENERATIONS) {
        stress_violation(s);
        return;
    }
    atomic_store_explicit(&s->gen_state[gen], (unsigned char)to, memory_order_relaxed);
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void worker_report(struct worker *w, const struct pending_call *p)
{
    struct stress *s = w->s;
    breaker_record(s->b, p->gen, p->outcome, p->duration_ms);
    w->records++;
    if (atomic_load_explicit(&s->gen_state[p->gen], memory_order_relaxed) == BREAKER_HALF_OPEN)
        atomic_fetch_sub(&s->gen_in_flight[p->gen], 1);
}

/*
 * The dependency is sick for 400 ms of every 800: then most calls fail, time out or are
 * slow; otherwise one in twenty fails.
 */
static void worker_outcome(struct worker *w, int64_t now, struct pending_call *p)
{
    bool sick = (now / 400) % 2 == 1;
    unsigned r = (unsigned)(xorshift(&w->rng) % 100);
    p->outcome = BREAKER_SUCCESS;
    p->duration_ms = (int64_t)(xorshift(&w->rng) % 50);
    if (r < (sick ? 40u : 3u))
        p->outcome = BREAKER_FAILURE;
    else if (r < (sick ? 60u : 4u))
        p->outcome = BREAKER_TIMEOUT;
    else if (r < (sick ? 80u : 5u))
        p->duration_ms = 100 + (int64_t)(xorshift(&w->rng) % 100);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct stress *s = w->s;

    for (int i = 0; i < ITERATIONS; i++) {
        if (i % 16 == 0)
            atomic_fetch_add_explicit(&s->clock, 1, memory_order_relaxed);
        int64_t now = stress_now(s);

        if (i % 1024 == 0) {
            struct breaker_stats st;
            breaker_stats(s->b, &st);
            if (st.state > BREAKER_HALF_OPEN || st.generation != 1 + st.transitions)
                stress_violation(s);
        }

        w->attempts++;
        struct pending_call call = {.used = true};
        if (!breaker_allow(s->b, &call.gen))
            continue;
        w->permitted++;
        if (call.gen == 0 || call.gen >= MAX_GENERATIONS) {
            stress_violation(s);
            continue;
        }
        unsigned char st = atomic_load_explicit(&s->gen_state[call.gen], memory_order_relaxed);
        if (st == BREAKER_OPEN)
            stress_violation(s);
        if (st == BREAKER_HALF_OPEN) {
            w->half_open_permits++;
            if (atomic_fetch_add(&s->gen_permits[call.gen], 1) + 1 > PERMITS)
                stress_violation(s);
            if (atomic_fetch_add(&s->gen_in_flight[call.gen], 1) + 1 > PERMITS)
                stress_violation(s);
        }
        worker_outcome(w, now, &call);

        /*
         * One report in five thousand is lost; half are made at once, the others wait in a
         * random slot for a later call to push them out, so reports arrive late and out of
         * order, often after the state they belong to has ended.
         */
        uint64_t r = xorshift(&w->rng);
        if (r % 5000 == 0)
            continue;
        if (r % 2 == 0) {
            worker_report(w, &call);
            continue;
        }
        struct pending_call *slot = &w->pending[(r >> 8) % PENDING];
        if (slot->used)
            worker_report(w, slot);
        *slot = call;
    }
    for (int i = 0; i < PENDING; i++)
        if (w->pending[i].used)
            worker_report(w, &w->pending[i]);
    return NULL;
}

static void test_stress_invariants(void **state)
{
    (void)state;
    struct stress *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    atomic_store(&s->clock, 1000);
    s->last_to = BREAKER_CLOSED;
    atomic_store(&s->gen_state[1], BREAKER_CLOSED);

    struct breaker_config cfg;
    breaker_config_default(&cfg);
    cfg.failure_rate_pct = 50;
    cfg.min_calls = 20;
    cfg.window_ms = 100;
    cfg.slow_call_ms = 100;
    cfg.open_wait_ms = 20;
    cfg.half_open_permits = PERMITS;
    cfg.half_open_max_ms = 50;
    cfg.now_ms = stress_now;
    cfg.clock_arg = s;
    s->b = breaker_new("stress", &cfg);
    assert_non_null(s->b);
    breaker_on_change(s->b, stress_on_change, s);

    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    memset(workers, 0, sizeof(workers));
    for (int i = 0; i < THREADS; i++) {
        workers[i].s = s;
        workers[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        assert_int_equal(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
    }
    uint64_t attempts = 0, permitted = 0, records = 0, half_open_permits = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        attempts += workers[i].attempts;
        permitted += workers[i].permitted;
        records += workers[i].records;
        half_open_permits += workers[i].half_open_permits;
    }

    struct breaker_stats st;
    breaker_stats(s->b, &st);
    print_message("stress: %llu attempts, %llu permitted (%llu probes), %llu rejected, "
                  "%llu ignored, %llu transitions\n",
                  (unsigned long long)attempts, (unsigned long long)permitted,
                  (unsigned long long)half_open_permits, (unsigned long long)st.rejected,
                  (unsigned long long)st.ignored, (unsigned long long)st.transitions);

    assert_int_equal(atomic_load(&s->violations), 0);
    assert_int_equal(attempts, (uint64_t)THREADS * ITERATIONS);
    assert_int_equal(st.permitted + st.rejected, attempts);
    assert_int_equal(st.permitted, permitted);
    assert_int_equal(st.successes + st.failures + st.ignored, records);
    assert_true(st.timeouts + st.slow_calls <= st.failures);
    assert_int_equal(st.transitions, s->changes);
    assert_int_equal(st.generation, 1 + s->changes);
    assert_true(st.state <= BREAKER_HALF_OPEN);
    assert_int_equal(st.state, s->last_to);

    /* Every legal change happened, and no other. */
    assert_true(s->kinds[BREAKER_CLOSED][BREAKER_OPEN] > 0);
    assert_true(s->kinds[BREAKER_OPEN][BREAKER_HALF_OPEN] > 0);
    assert_true(s->kinds[BREAKER_HALF_OPEN][BREAKER_CLOSED] > 0);
    assert_true(s->kinds[BREAKER_HALF_OPEN][BREAKER_OPEN] > 0);
    assert_int_equal(s->kinds[BREAKER_CLOSED][BREAKER_HALF_OPEN], 0);
    assert_int_equal(s->kinds[BREAKER_OPEN][BREAKER_CLOSED], 0);
    assert_true(half_open_permits > 0);
    assert_true(st.rejected > 0);
    assert_true(st.ignored > 0);

    breaker_free(s->b);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
