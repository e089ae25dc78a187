// fuzz: MODULES rules
/*
 * fuzz_rules: rules_evaluate on inputs taken from the bytes: counts, times and coordinates
 * as raw 64-bit patterns (so NaN, the infinities, subnormals and extreme times all occur),
 * flags, the user agent from what is left, and either the default configuration or one read
 * from the bytes when it passes rules_config_validate. The result must keep the header's
 * promises: score within 0..100 and equal to the capped sum of the weights of the reasons,
 * a verdict that follows from tag, recall and score, nothing stateful without state, and the
 * same answer twice.
 */
#include "rules.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct bytes {
    const uint8_t *p;
    size_t left;
};

static uint64_t take(struct bytes *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v << 8 | (b->left > 0 ? *b->p : 0);
        if (b->left > 0) {
            b->p++;
            b->left--;
        }
    }
    return v;
}

static double take_double(struct bytes *b)
{
    uint64_t bits = take(b, 8);
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_rules: %s\n", what);
    abort();
}

static unsigned weight(const struct rules_config *c, unsigned bit)
{
    switch (bit) {
    case RULES_REASON_VELOCITY:
        return c->weight_velocity;
    case RULES_REASON_IMPOSSIBLE_TRAVEL:
        return c->weight_impossible_travel;
    case RULES_REASON_CLONE_SPREAD:
        return c->weight_clone_spread;
    case RULES_REASON_ENUMERATION:
        return c->weight_enumeration;
    case RULES_REASON_BOT_UA:
        return c->weight_bot_ua;
    case RULES_REASON_REVOKED:
        return c->weight_revoked;
    }
    fail("an unknown reason bit");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bytes b = {data, size};
    struct rules_config cfg, def;
    struct rules_input in;
    struct rules_result r1, r2;

    rules_config_default(&def);
    if (rules_config_validate(&def, NULL) != 0)
        fail("the default configuration is invalid");
    cfg = def;
    uint8_t flags = (uint8_t)take(&b, 1);
    if (flags & 0x80) {
        /* Small numbers are the interesting ones for counts, windows and weights. */
        cfg.velocity_max = (unsigned)take(&b, 1);
        cfg.velocity_window_s = (unsigned)take(&b, 2);
        cfg.travel_max_kmh = take_double(&b);
        cfg.travel_min_km = take_double(&b);
        cfg.travel_window_s = (unsigned)take(&b, 4);
        cfg.clock_skew_ms = (unsigned)take(&b, 4);
        cfg.clone_max_clients = (unsigned)take(&b, 1);
        cfg.clone_window_s = (unsigned)take(&b, 2);
        cfg.enum_max_unknown = (unsigned)take(&b, 1);
        cfg.enum_window_s = (unsigned)take(&b, 2);
        cfg.dedup_window_s = (unsigned)take(&b, 2);
        cfg.weight_velocity = (unsigned)take(&b, 1);
        cfg.weight_impossible_travel = (unsigned)take(&b, 1);
        cfg.weight_clone_spread = (unsigned)take(&b, 1);
        cfg.weight_enumeration = (unsigned)take(&b, 1);
        cfg.weight_bot_ua = (unsigned)take(&b, 1);
        cfg.weight_revoked = (unsigned)take(&b, 1);
        if (rules_config_validate(&cfg, NULL) != 0)
            cfg = def;
    }

    memset(&in, 0, sizeof(in));
    in.tag_found = flags & 0x01;
    in.batch_revoked = flags & 0x02;
    in.state_available = flags & 0x04;
    in.repeat = flags & 0x08;
    in.has_location = flags & 0x10;
    in.has_prev_location = flags & 0x20;
    in.now_ms = (int64_t)take(&b, 8);
    in.scans_in_window = take(&b, 8);
    in.distinct_clients = take(&b, 8);
    in.client_unknown_in_window = take(&b, 8);
    in.lat = take_double(&b);
    in.lon = take_double(&b);
    in.prev_lat = take_double(&b);
    in.prev_lon = take_double(&b);
    in.prev_ms = (int64_t)take(&b, 8);

    char *ua = NULL;
    if (!(flags & 0x40)) {
        ua = malloc(b.left + 1);
        if (ua == NULL)
            return 0;
        memcpy(ua, b.p, b.left);
        ua[b.left] = '\0';
    }
    in.user_agent = ua;

    rules_evaluate(&cfg, &in, &r1);
    rules_evaluate(&cfg, &in, &r2);
    if (r1.score != r2.score || r1.reasons != r2.reasons || r1.degraded != r2.degraded ||
        r1.skipped != r2.skipped || r1.verdict != r2.verdict)
        fail("two evaluations of one input differ");

    if (r1.score < 0 || r1.score > RULES_MAX_SCORE)
        fail("score outside 0..100");
    if (r1.reasons & ~RULES_REASON_ALL)
        fail("reasons outside RULES_REASON_ALL");
    unsigned sum = 0, it = r1.reasons, bit, seen = 0;
    while ((bit = rules_reason_next(&it)) != 0) {
        if ((bit & (bit - 1)) != 0 || (bit & seen) || rules_reason_name(bit) == NULL)
            fail("rules_reason_next gave a bad or repeated bit");
        seen |= bit;
        sum += weight(&cfg, bit);
    }
    if (seen != r1.reasons)
        fail("rules_reason_next did not give every reason");
    if (r1.score != (int)(sum > RULES_MAX_SCORE ? RULES_MAX_SCORE : sum))
        fail("score is not the capped sum of the reasons' weights");

    if (r1.degraded != !in.state_available)
        fail("degraded does not follow state_available");
    if (!in.state_available && (r1.reasons & RULES_REASONS_STATEFUL))
        fail("a stateful rule fired without state");
    if (in.state_available && r1.skipped != 0)
        fail("rules skipped with state available");
    if (r1.skipped & ~RULES_REASONS_STATEFUL)
        fail("a stateless rule was skipped");
    if (!!(r1.reasons & RULES_REASON_BOT_UA) != rules_bot_ua(in.user_agent))
        fail("bot_ua does not follow rules_bot_ua");
    if ((r1.reasons & RULES_REASON_IMPOSSIBLE_TRAVEL) &&
        (in.repeat || !in.has_location || !in.has_prev_location ||
         !rules_location_valid(in.lat, in.lon) || !rules_location_valid(in.prev_lat, in.prev_lon)))
        fail("impossible_travel without two valid locations of a counted scan");

    enum rules_verdict want;
    if (!in.tag_found)
        want = RULES_VERDICT_UNKNOWN;
    else if (in.batch_revoked)
        want = RULES_VERDICT_REVOKED;
    else if (r1.score >= RULES_SUSPICIOUS_SCORE)
        want = RULES_VERDICT_SUSPICIOUS;
    else
        want = RULES_VERDICT_AUTHENTIC;
    if (r1.verdict != want || rules_verdict_name(r1.verdict) == NULL)
        fail("the verdict does not follow from tag, recall and score");
    if (!in.tag_found && (r1.reasons & (RULES_REASON_VELOCITY | RULES_REASON_IMPOSSIBLE_TRAVEL |
                                        RULES_REASON_CLONE_SPREAD | RULES_REASON_REVOKED)))
        fail("a tag rule fired for an unknown tag");

    if (rules_location_valid(in.lat, in.lon) && rules_location_valid(in.prev_lat, in.prev_lon)) {
        double km = rules_distance_km(in.prev_lat, in.prev_lon, in.lat, in.lon);
        if (!(km >= 0.0 && km <= M_PI * 6371.0 + 1e-6))
            fail("a distance outside 0..half the circumference");
    }
    free(ua);
    return 0;
}
