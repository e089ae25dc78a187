/*
 * Unit tests of breaker on a fake clock: when the closed window opens, how open waits, how a
 * half-open round of probes is decided, and that late outcomes of an ended state are ignored.
 */
#include "support.h"
#include "breaker.h"

#include <errno.h>
#include <string.h>

struct fake_clock {
    int64_t now;
};

static int64_t fake_now(void *arg)
{
    const struct fake_clock *clk = arg;
    return clk->now;
}

/* The defaults on a fake clock, with the probe timeout off unless a test wants it. */
static void fake_config(struct breaker_config *cfg, struct fake_clock *clk)
{
    breaker_config_default(cfg);
    cfg->half_open_max_ms = 0;
    cfg->now_ms = fake_now;
    cfg->clock_arg = clk;
}

static void check_state(struct breaker *b, enum breaker_state want, const char *what, int step)
{
    enum breaker_state got = breaker_state(b);
    if (got != want)
        fail_msg("%s, step %d: state %s, want %s", what, step, breaker_state_name(got),
                 breaker_state_name(want));
}

/*
 * Outcome letters used by the tables: S a fast success, F a failure, T a timeout, L a
 * success that takes exactly slow_call_ms (or a long time when slow calls are off), and l
 * one that takes a millisecond less.
 */
static void outcome_of(char c, unsigned slow_call_ms, enum breaker_outcome *outcome,
                       int64_t *duration_ms)
{
    int64_t slow = slow_call_ms != 0 ? slow_call_ms : 1000000;
    *outcome = BREAKER_SUCCESS;
    *duration_ms = 1;
    switch (c) {
    case 'S':
        break;
    case 'F':
        *outcome = BREAKER_FAILURE;
        break;
    case 'T':
        *outcome = BREAKER_TIMEOUT;
        *duration_ms = 250;
        break;
    case 'L':
        *duration_ms = slow;
        break;
    case 'l':
        *duration_ms = slow - 1;
        break;
    default:
        fail_msg("unknown outcome letter '%c'", c);
    }
}

/* Makes one permitted call with the outcome letter c; the breaker must permit it. */
static void call(struct breaker *b, char c, unsigned slow_call_ms, const char *what, int step)
{
    enum breaker_outcome outcome;
    int64_t duration;
    uint64_t gen = 0;

    outcome_of(c, slow_call_ms, &outcome, &duration);
    if (!breaker_allow(b, &gen))
        fail_msg("%s, step %d: call rejected in state %s", what, step,
                 breaker_state_name(breaker_state(b)));
    breaker_record(b, gen, outcome, duration);
}

/* Opens a closed breaker whose min_calls is 1 with one failure. */
static void trip(struct breaker *b)
{
    call(b, 'F', 0, "trip", 0);
    check_state(b, BREAKER_OPEN, "trip", 0);
}

static void test_config_default(void **state)
{
    (void)state;
    struct breaker_config cfg;
    memset(&cfg, 0xff, sizeof(cfg));
    breaker_config_default(&cfg);
    assert_int_equal(cfg.failure_rate_pct, 50);
    assert_int_equal(cfg.min_calls, 10);
    assert_int_equal(cfg.window_ms, 10000);
    assert_int_equal(cfg.slow_call_ms, 0);
    assert_int_equal(cfg.open_wait_ms, 5000);
    assert_int_equal(cfg.half_open_permits, 3);
    assert_int_equal(cfg.half_open_max_ms, 30000);
    assert_null(cfg.now_ms);
    assert_null(cfg.clock_arg);
}

static void test_config_rejects_out_of_range(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned failure_rate_pct, min_calls, window_ms, half_open_permits;
    } cases[] = {
        {"threshold 0", 0, 10, 10000, 3},       {"threshold 101", 101, 10, 10000, 3},
        {"min_calls 0", 50, 0, 10000, 3},       {"window below 10 ms", 50, 10, 9, 3},
        {"no probe permits", 50, 10, 10000, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct breaker_config cfg;
        breaker_config_default(&cfg);
        cfg.failure_rate_pct = cases[i].failure_rate_pct;
        cfg.min_calls = cases[i].min_calls;
        cfg.window_ms = cases[i].window_ms;
        cfg.half_open_permits = cases[i].half_open_permits;
        errno = 0;
        struct breaker *b = breaker_new("redis", &cfg);
        if (b != NULL || errno != EINVAL)
            fail_msg("%s: accepted (errno %d)", cases[i].name, errno);
    }

    struct breaker_config cfg;
    breaker_config_default(&cfg);
    assert_null(breaker_new(NULL, &cfg));
    assert_null(breaker_new("redis", NULL));

    /* The edges of the ranges are valid. */
    cfg.failure_rate_pct = 100;
    cfg.min_calls = 1;
    cfg.window_ms = 10;
    cfg.half_open_permits = 1;
    cfg.open_wait_ms = 0;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    assert_string_equal(breaker_name(b), "redis");
    breaker_free(b);
    cfg.failure_rate_pct = 1;
    b = breaker_new("pg", &cfg);
    assert_non_null(b);
    breaker_free(b);
    breaker_free(NULL);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
    assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    assert_int_equal(BREAKER_CLOSED, 0);
    assert_int_equal(BREAKER_OPEN, 1);
    assert_int_equal(BREAKER_HALF_OPEN, 2);
}

/*
 * The closed state's verdicts. calls is a string of outcome letters, '|' advances the clock
 * by a whole window; step_ms passes between calls. opens_after is the number of the call
 * after which the breaker must be open (counting from 1), 0 when it must stay closed.
 */
struct closed_case {
    const char *name;
    unsigned pct, min_calls, slow_call_ms;
    int64_t start_ms, step_ms;
    const char *calls;
    int opens_after;
};

static const struct closed_case closed_cases[] = {
    {"stays closed below min_calls at 100% failures", 50, 10, 0, 0, 0, "FFFFFFFFF", 0},
    {"opens when min_calls is reached at 100%", 50, 10, 0, 0, 0, "FFFFFFFFFF", 10},
    {"opens exactly at the threshold, 5 of 10 at 50%", 50, 10, 0, 0, 0, "SSSSSFFFFF", 10},
    {"stays closed just below it, 4 of 10", 50, 10, 0, 0, 0, "SSSSSSFFFF", 0},
    {"early failures wait for min_calls", 50, 10, 0, 0, 0, "FFFFFSSSSS", 10},
    {"past min_calls every call is judged", 50, 4, 0, 0, 0, "SSSSFFFF", 8},
    {"past min_calls, 3 of 7 is below 50%", 50, 4, 0, 0, 0, "SSSSFFF", 0},
    {"a 100% threshold needs every call to fail", 100, 5, 0, 0, 0, "FFFFSFFFFF", 0},
    {"a 100% threshold, all failed", 100, 5, 0, 0, 0, "FFFFF", 5},
    {"a 1% threshold, 1 of 10", 1, 10, 0, 0, 0, "SSSSSSSSSF", 10},
    {"timeouts are failures", 50, 10, 0, 0, 0, "SSSSSTTTTT", 10},
    {"failures and timeouts add up", 50, 10, 0, 0, 0, "SSSSSFTFTF", 10},
    {"slow successes are failures", 50, 10, 500, 0, 0, "SSSSSLLLLL", 10},
    {"a millisecond under slow_call_ms is fast", 50, 10, 500, 0, 0, "SSSSSlllll", 0},
    {"no success is slow when slow calls are off", 50, 10, 0, 0, 0, "SSSSSLLLLL", 0},
    {"a window later old failures are forgotten", 50, 10, 0, 0, 0, "FFFFFFFFF|FSSSSSSSSS", 0},
    {"a window later the new failures count", 50, 10, 0, 0, 0, "FFFFFFFFF|FFFFFSSSSS", 19},
    {"failures 1.1 s apart all fit in 10 s", 50, 10, 0, 0, 1100, "FFFFFFFFFF", 10},
    {"1.2 s apart the first has left the window", 50, 10, 0, 0, 1200, "FFFFFFFFFF", 0},
    {"a clock below zero, 1.1 s apart", 50, 10, 0, -25000, 1100, "FFFFFFFFFF", 10},
    {"a clock below zero, 1.2 s apart", 50, 10, 0, -25000, 1200, "FFFFFFFFFF", 0},
};

static void test_closed_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(closed_cases) / sizeof(closed_cases[0]); i++) {
        const struct closed_case *c = &closed_cases[i];
        struct fake_clock clk = {c->start_ms};
        struct breaker_config cfg;
        fake_config(&cfg, &clk);
        cfg.failure_rate_pct = c->pct;
        cfg.min_calls = c->min_calls;
        cfg.slow_call_ms = c->slow_call_ms;
        cfg.window_ms = 10000;
        struct breaker *b = breaker_new("redis", &cfg);
        assert_non_null(b);

        int n = 0;
        for (const char *p = c->calls; *p != '\0'; p++) {
            if (*p == '|') {
                clk.now += cfg.window_ms;
                continue;
            }
            n++;
            call(b, *p, c->slow_call_ms, c->name, n);
            check_state(b, n == c->opens_after ? BREAKER_OPEN : BREAKER_CLOSED, c->name, n);
            clk.now += c->step_ms;
        }
        if (c->opens_after > n)
            fail_msg("%s: table wants a call that is not there", c->name);
        uint64_t gen;
        if (breaker_allow(b, &gen) != (c->opens_after == 0))
            fail_msg("%s: the next call was not %s", c->name,
                     c->opens_after == 0 ? "permitted" : "rejected");
        breaker_free(b);
    }
}

/*
 * With window_ms 10000 a bucket is one second: an outcome recorded at 0.999 s lives until
 * 10 s, one recorded at 1.000 s until 11 s.
 */
static void test_window_bucket_edges(void **state)
{
    (void)state;
    struct fake_clock clk = {999};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1000;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    struct breaker_stats st;

    call(b, 'F', 0, "edges", 1);
    clk.now = 1000;
    call(b, 'S', 0, "edges", 2);
    call(b, 'F', 0, "edges", 3);
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 3);
    assert_int_equal(st.window_failures, 2);

    clk.now = 9999;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 3);
    clk.now = 10000;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 2);
    assert_int_equal(st.window_failures, 1);
    clk.now = 10999;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 2);
    clk.now = 11000;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 0);
    assert_int_equal(st.window_failures, 0);

    /* Far in the future everything is gone at once, and the window keeps working. */
    call(b, 'F', 0, "edges", 4);
    clk.now += 1000000;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 0);
    call(b, 'F', 0, "edges", 5);
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 1);
    assert_int_equal(st.window_failures, 1);
    breaker_free(b);
}

/*
 * Threads read the clock before they take the lock, so an outcome may arrive with a time a
 * little before the newest bucket. It is counted in the newest bucket, and the window does
 * not move back.
 */
static void test_window_clock_out_of_order(void **state)
{
    (void)state;
    struct fake_clock clk = {5000};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1000;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    struct breaker_stats st;

    call(b, 'F', 0, "out of order", 1);
    clk.now = 3000;
    call(b, 'F', 0, "out of order", 2);
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 2);
    clk.now = 14999;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 2);
    clk.now = 15000;
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 0);
    breaker_free(b);
}

static void test_open_rejects_until_wait_ends(void **state)
{
    (void)state;
    struct fake_clock clk = {1000};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 5000;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    uint64_t gen = 0;

    trip(b);
    for (int64_t t = 1000; t < 6000; t += 499) {
        clk.now = t;
        assert_false(breaker_allow(b, &gen));
        assert_int_equal(gen, 0); /* left alone when rejected */
    }
    clk.now = 5999;
    assert_false(breaker_allow(b, &gen));
    check_state(b, BREAKER_OPEN, "open wait", 1);

    /* breaker_state() notices the end of the wait by itself. */
    clk.now = 6000;
    check_state(b, BREAKER_HALF_OPEN, "open wait", 2);
    assert_true(breaker_allow(b, &gen));
    assert_int_equal(gen, 3);

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.rejected, 12);
    assert_int_equal(st.permitted, 2);
    assert_int_equal(st.transitions, 2);
    breaker_free(b);

    /* Here the first call after the wait is what turns the breaker half-open. */
    clk.now = 1000;
    b = breaker_new("redis", &cfg);
    assert_non_null(b);
    trip(b);
    clk.now = 6000;
    assert_true(breaker_allow(b, &gen));
    check_state(b, BREAKER_HALF_OPEN, "first call after wait", 1);
    breaker_free(b);
}

static void test_open_wait_zero_probes_at_once(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 0;
    cfg.half_open_permits = 1;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    uint64_t gen;

    call(b, 'F', 0, "wait zero", 1);
    check_state(b, BREAKER_HALF_OPEN, "wait zero", 1);
    assert_true(breaker_allow(b, &gen));
    assert_false(breaker_allow(b, &gen));
    breaker_free(b);
}

/*
 * A half-open round. reports are the probes' outcome letters in the order they arrive;
 * decided_after is the number of reports after which the round must be decided (the state
 * is then want); later reports belong to an ended state and are ignored.
 */
struct probe_case {
    const char *name;
    unsigned permits, pct;
    const char *reports;
    int decided_after;
    enum breaker_state want;
};

static const struct probe_case probe_cases[] = {
    {"one probe, a success closes", 1, 50, "S", 1, BREAKER_CLOSED},
    {"one probe, a failure reopens", 1, 50, "F", 1, BREAKER_OPEN},
    {"one probe, a timeout reopens", 1, 50, "T", 1, BREAKER_OPEN},
    {"one probe, a slow success reopens", 1, 50, "L", 1, BREAKER_OPEN},
    {"one probe, a success just under slow closes", 1, 50, "l", 1, BREAKER_CLOSED},
    {"two successes of three settle it", 3, 50, "SSS", 2, BREAKER_CLOSED},
    {"two failures of three reopen at once", 3, 50, "FFS", 2, BREAKER_OPEN},
    {"one failure of three is below 50%", 3, 50, "SFS", 3, BREAKER_CLOSED},
    {"failure, success, failure reopens", 3, 50, "FSF", 3, BREAKER_OPEN},
    {"success, then two failures reopen", 3, 50, "SFF", 3, BREAKER_OPEN},
    {"slow probes are failures", 3, 50, "LSL", 3, BREAKER_OPEN},
    {"timeouts are failures", 3, 50, "TST", 3, BREAKER_OPEN},
    {"four probes at 50%: three successes settle it", 4, 50, "SSSF", 3, BREAKER_CLOSED},
    {"four probes at 50%: two failures reopen", 4, 50, "SFSF", 4, BREAKER_OPEN},
    {"at 100% two failures of three still close", 3, 100, "FFS", 3, BREAKER_CLOSED},
    {"at 100% three failures reopen", 3, 100, "FFF", 3, BREAKER_OPEN},
    {"at 100% one success settles it", 3, 100, "SFF", 1, BREAKER_CLOSED},
    {"at 1% one failure reopens", 4, 1, "FSSS", 1, BREAKER_OPEN},
    {"at 1% every probe must succeed", 4, 1, "SSSS", 4, BREAKER_CLOSED},
};

static void test_half_open_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(probe_cases) / sizeof(probe_cases[0]); i++) {
        const struct probe_case *c = &probe_cases[i];
        struct fake_clock clk = {0};
        struct breaker_config cfg;
        fake_config(&cfg, &clk);
        cfg.min_calls = 1;
        cfg.failure_rate_pct = c->pct;
        cfg.open_wait_ms = 1000;
        cfg.slow_call_ms = 100;
        cfg.half_open_permits = c->permits;
        struct breaker *b = breaker_new("pg", &cfg);
        assert_non_null(b);
        trip(b);
        clk.now = 1000;

        uint64_t gens[8];
        assert_true(c->permits <= 8 && strlen(c->reports) == c->permits);
        for (unsigned p = 0; p < c->permits; p++) {
            if (!breaker_allow(b, &gens[p]))
                fail_msg("%s: probe %u rejected", c->name, p + 1);
            assert_int_equal(gens[p], 3);
        }
        uint64_t extra;
        if (breaker_allow(b, &extra))
            fail_msg("%s: probe %u permitted", c->name, c->permits + 1);

        for (int r = 0; c->reports[r] != '\0'; r++) {
            enum breaker_outcome outcome;
            int64_t duration;
            outcome_of(c->reports[r], cfg.slow_call_ms, &outcome, &duration);
            breaker_record(b, gens[r], outcome, duration);
            check_state(b, r + 1 < c->decided_after ? BREAKER_HALF_OPEN : c->want, c->name, r + 1);
        }

        struct breaker_stats st;
        breaker_stats(b, &st);
        if (st.ignored != c->permits - (unsigned)c->decided_after)
            fail_msg("%s: %llu reports ignored", c->name, (unsigned long long)st.ignored);
        assert_int_equal(st.generation, 4);
        assert_int_equal(st.window_calls, 0);
        uint64_t gen;
        if (breaker_allow(b, &gen) != (c->want == BREAKER_CLOSED))
            fail_msg("%s: wrong answer after the round", c->name);
        breaker_free(b);
    }
}

static void test_half_open_permits_exactly_n(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 100;
    cfg.half_open_permits = 5;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    trip(b);
    clk.now = 100;

    uint64_t gens[5], gen;
    for (int i = 0; i < 5; i++)
        assert_true(breaker_allow(b, &gens[i]));
    for (int i = 0; i < 100; i++) {
        clk.now += 1000; /* waiting longer does not give out more permits */
        assert_false(breaker_allow(b, &gen));
    }
    check_state(b, BREAKER_HALF_OPEN, "exactly n", 1);

    /* Reporting a probe does not hand its permit out again. */
    breaker_record(b, gens[0], BREAKER_SUCCESS, 1);
    assert_false(breaker_allow(b, &gen));

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.permitted, 1 + 5);
    assert_int_equal(st.rejected, 101);
    breaker_free(b);
}

/* With little traffic the round is decided before all its permits are handed out. */
static void test_half_open_decides_before_all_permits_out(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 100;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    trip(b);
    clk.now = 100;

    call(b, 'S', 0, "sequential", 1);
    check_state(b, BREAKER_HALF_OPEN, "sequential", 1);
    call(b, 'S', 0, "sequential", 2);
    check_state(b, BREAKER_CLOSED, "sequential", 2);

    trip(b);
    clk.now = 200;
    call(b, 'F', 0, "sequential", 3);
    call(b, 'F', 0, "sequential", 4);
    check_state(b, BREAKER_OPEN, "sequential", 4);

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.permitted, 6);
    assert_int_equal(st.ignored, 0);
    breaker_free(b);
}

/*
 * A round whose permits are all out but not all reported opens again after
 * half_open_max_ms, counted from the last permit; a round with permits left waits for
 * traffic however long it takes.
 */
static void test_half_open_max_reopens_stuck_round(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 1000;
    cfg.half_open_permits = 2;
    cfg.half_open_max_ms = 3000;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    uint64_t g1, g2, gen;

    trip(b);
    clk.now = 1000;
    assert_true(breaker_allow(b, &g1));
    clk.now = 100000;
    check_state(b, BREAKER_HALF_OPEN, "permits left", 1);
    assert_true(breaker_allow(b, &g2));
    breaker_record(b, g1, BREAKER_SUCCESS, 1); /* one report, the other is lost */

    clk.now = 102999;
    assert_false(breaker_allow(b, &gen));
    check_state(b, BREAKER_HALF_OPEN, "stuck", 1);
    clk.now = 103000;
    assert_false(breaker_allow(b, &gen));
    check_state(b, BREAKER_OPEN, "stuck", 2);

    /* The lost probe's outcome, if it ever comes, belongs to the ended round. */
    breaker_record(b, g2, BREAKER_SUCCESS, 1);
    check_state(b, BREAKER_OPEN, "stuck", 3);

    /* The next round starts with fresh permits. */
    clk.now = 104000;
    assert_true(breaker_allow(b, &g1));
    assert_true(breaker_allow(b, &g2));
    assert_int_equal(g1, 5);
    breaker_record(b, g1, BREAKER_SUCCESS, 1);
    breaker_record(b, g2, BREAKER_SUCCESS, 1);
    check_state(b, BREAKER_CLOSED, "stuck", 4);

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.ignored, 1);
    assert_int_equal(st.successes, 3);
    breaker_free(b);
}

/*
 * Outcomes of calls permitted in an ended state are ignored, whatever state the breaker is
 * in when they arrive, and each state has its own generation.
 */
static void test_stale_generation_ignored(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 4;
    cfg.open_wait_ms = 1000;
    cfg.half_open_permits = 3;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    uint64_t slow_ok, slow_bad, p[3], gen;

    /* Two calls of the first closed state are still out when it ends. */
    assert_true(breaker_allow(b, &slow_ok));
    assert_true(breaker_allow(b, &slow_bad));
    assert_int_equal(slow_ok, 1);
    for (int i = 0; i < 4; i++)
        call(b, 'F', 0, "stale", i);
    check_state(b, BREAKER_OPEN, "stale", 1);

    /* A late success while open neither counts nor closes anything. */
    breaker_record(b, slow_ok, BREAKER_SUCCESS, 1);
    check_state(b, BREAKER_OPEN, "stale", 2);
    /* Nor does a report with the open state's own generation, which is never handed out. */
    breaker_record(b, 2, BREAKER_SUCCESS, 1);

    clk.now = 1000;
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(b, &p[i]));
    assert_int_equal(p[0], 3);
    /*
     * A late failure must not decide the round: one counted failure of three does not
     * reopen it, but this one together with the real one would.
     */
    breaker_record(b, slow_bad, BREAKER_FAILURE, 1);
    breaker_record(b, p[0], BREAKER_FAILURE, 1);
    check_state(b, BREAKER_HALF_OPEN, "stale", 3);
    breaker_record(b, p[1], BREAKER_SUCCESS, 1);
    breaker_record(b, p[2], BREAKER_SUCCESS, 1);
    check_state(b, BREAKER_CLOSED, "stale", 4);

    /* Late failures of every earlier generation do not reach the new window. */
    for (int i = 0; i < 20; i++) {
        breaker_record(b, slow_bad, BREAKER_FAILURE, 1);
        breaker_record(b, p[0], BREAKER_TIMEOUT, 1);
    }
    check_state(b, BREAKER_CLOSED, "stale", 5);
    assert_true(breaker_allow(b, &gen));
    assert_int_equal(gen, 4);

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.ignored, 1 + 1 + 1 + 40);
    assert_int_equal(st.window_calls, 0);
    assert_int_equal(st.failures, 4 + 1);
    assert_int_equal(st.successes, 2);
    assert_int_equal(st.timeouts, 0);
    breaker_free(b);
}

/* An extra report for one permit, a caller's bug, does not count as a second probe. */
static void test_half_open_extra_report_ignored(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 10;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    trip(b);
    clk.now = 10;
    uint64_t gen;
    assert_true(breaker_allow(b, &gen));
    breaker_record(b, gen, BREAKER_SUCCESS, 1);
    breaker_record(b, gen, BREAKER_SUCCESS, 1);
    check_state(b, BREAKER_HALF_OPEN, "extra", 1);
    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.ignored, 1);
    breaker_free(b);
}

struct change {
    const char *name;
    enum breaker_state from, to;
};

struct change_log {
    struct change seen[16];
    int n;
};

static void log_change(void *arg, const char *name, enum breaker_state from, enum breaker_state to)
{
    struct change_log *log = arg;
    assert_true(log->n < 16);
    log->seen[log->n].name = name;
    log->seen[log->n].from = from;
    log->seen[log->n].to = to;
    log->n++;
}

static void test_change_callback(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 1000;
    cfg.half_open_permits = 1;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    struct change_log log = {.n = 0};
    breaker_on_change(b, log_change, &log);

    trip(b);        /* closed -> open */
    clk.now = 1000; /* open -> half_open, noticed by breaker_state() */
    check_state(b, BREAKER_HALF_OPEN, "callback", 1);
    call(b, 'T', 0, "callback", 1); /* half_open -> open */
    clk.now = 2000;
    call(b, 'S', 0, "callback", 2); /* open -> half_open -> closed */

    static const struct change want[] = {
        {"redis", BREAKER_CLOSED, BREAKER_OPEN},      {"redis", BREAKER_OPEN, BREAKER_HALF_OPEN},
        {"redis", BREAKER_HALF_OPEN, BREAKER_OPEN},   {"redis", BREAKER_OPEN, BREAKER_HALF_OPEN},
        {"redis", BREAKER_HALF_OPEN, BREAKER_CLOSED},
    };
    assert_int_equal(log.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(log.seen[i].name, want[i].name);
        assert_ptr_equal(log.seen[i].name, breaker_name(b));
        if (log.seen[i].from != want[i].from || log.seen[i].to != want[i].to)
            fail_msg("change %d: %s -> %s", i, breaker_state_name(log.seen[i].from),
                     breaker_state_name(log.seen[i].to));
    }

    struct breaker_stats st;
    breaker_stats(b, &st);
    assert_int_equal(st.transitions, 5);
    assert_int_equal(st.generation, 6);

    /* Once removed, the callback is not called again. */
    breaker_on_change(b, NULL, NULL);
    trip(b);
    assert_int_equal(log.n, 5);
    breaker_free(b);
}

static void test_stats_counts(void **state)
{
    (void)state;
    struct fake_clock clk = {0};
    struct breaker_config cfg;
    fake_config(&cfg, &clk);
    cfg.min_calls = 4;
    cfg.slow_call_ms = 100;
    struct breaker *b = breaker_new("pg", &cfg);
    assert_non_null(b);
    struct breaker_stats st;
    uint64_t gen, old;

    breaker_stats(b, &st);
    assert_int_equal(st.state, BREAKER_CLOSED);
    assert_int_equal(st.generation, 1);
    assert_int_equal(st.permitted + st.rejected + st.successes + st.failures + st.ignored +
                         st.transitions + st.window_calls,
                     0);

    assert_true(breaker_allow(b, &old));
    breaker_record(b, old, BREAKER_SUCCESS, 3);
    call(b, 'L', cfg.slow_call_ms, "stats", 1);
    breaker_stats(b, &st);
    assert_int_equal(st.window_calls, 2);
    assert_int_equal(st.window_failures, 1);
    call(b, 'T', 0, "stats", 2);
    call(b, 'F', 0, "stats", 3); /* 3 of 4: open */
    assert_false(breaker_allow(b, &gen));
    assert_false(breaker_allow(b, &gen));
    breaker_record(b, old, BREAKER_FAILURE, 1);

    breaker_stats(b, &st);
    assert_int_equal(st.state, BREAKER_OPEN);
    assert_int_equal(st.generation, 2);
    assert_int_equal(st.permitted, 4);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.successes, 1);
    assert_int_equal(st.failures, 3);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.slow_calls, 1);
    assert_int_equal(st.ignored, 1);
    assert_int_equal(st.transitions, 1);
    assert_int_equal(st.window_calls, 0);
    assert_int_equal(st.window_failures, 0);
    breaker_free(b);
}

/* Without a clock function the breaker runs on CLOCK_MONOTONIC. */
static void test_monotonic_clock(void **state)
{
    (void)state;
    struct breaker_config cfg;
    breaker_config_default(&cfg);
    cfg.min_calls = 1;
    cfg.open_wait_ms = 0;
    cfg.half_open_permits = 1;
    struct breaker *b = breaker_new("redis", &cfg);
    assert_non_null(b);
    uint64_t gen;

    call(b, 'S', 0, "monotonic", 1);
    check_state(b, BREAKER_CLOSED, "monotonic", 1);
    call(b, 'F', 0, "monotonic", 2);
    /* open_wait_ms 0 has elapsed as soon as the clock is read again. */
    check_state(b, BREAKER_HALF_OPEN, "monotonic", 2);
    assert_true(breaker_allow(b, &gen));
    assert_false(breaker_allow(b, &gen));
    breaker_record(b, gen, BREAKER_SUCCESS, 0);
    check_state(b, BREAKER_CLOSED, "monotonic", 3);

    cfg.open_wait_ms = 60000;
    breaker_free(b);
    b = breaker_new("redis", &cfg);
    assert_non_null(b);
    call(b, 'F', 0, "monotonic", 4);
    assert_false(breaker_allow(b, &gen));
    check_state(b, BREAKER_OPEN, "monotonic", 4);
    breaker_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_default),
        cmocka_unit_test(test_config_rejects_out_of_range),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_closed_table),
        cmocka_unit_test(test_window_bucket_edges),
        cmocka_unit_test(test_window_clock_out_of_order),
        cmocka_unit_test(test_open_rejects_until_wait_ends),
        cmocka_unit_test(test_open_wait_zero_probes_at_once),
        cmocka_unit_test(test_half_open_table),
        cmocka_unit_test(test_half_open_permits_exactly_n),
        cmocka_unit_test(test_half_open_decides_before_all_permits_out),
        cmocka_unit_test(test_half_open_max_reopens_stuck_round),
        cmocka_unit_test(test_stale_generation_ignored),
        cmocka_unit_test(test_half_open_extra_report_ignored),
        cmocka_unit_test(test_change_callback),
        cmocka_unit_test(test_stats_counts),
        cmocka_unit_test(test_monotonic_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
