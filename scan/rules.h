/*
 * rules: the anti-fraud rules of the scan path (SPEC §5) as a pure function from what the
 * scan handler gathered (the request and the per-tag and per-client state kept in Redis) to
 * a risk score, a set of reasons and a verdict. No I/O and no clock: the caller passes time.
 */
#ifndef TAGPROOF_RULES_H
#define TAGPROOF_RULES_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Reason bits, in the order of the SPEC's table. That order is also the order of the JSON
 * "reasons" array (see rules_reason_next), so it is part of the answer and must not change.
 */
enum rules_reason {
    RULES_REASON_VELOCITY = 1u << 0,
    RULES_REASON_IMPOSSIBLE_TRAVEL = 1u << 1,
    RULES_REASON_CLONE_SPREAD = 1u << 2,
    RULES_REASON_ENUMERATION = 1u << 3,
    RULES_REASON_BOT_UA = 1u << 4,
    RULES_REASON_REVOKED = 1u << 5,
};
#define RULES_REASON_COUNT 6
#define RULES_REASON_ALL ((1u << RULES_REASON_COUNT) - 1)

/* The rules that read state from Redis; they are skipped when it is unavailable. */
#define RULES_REASONS_STATEFUL                                                                     \
    (RULES_REASON_VELOCITY | RULES_REASON_IMPOSSIBLE_TRAVEL | RULES_REASON_CLONE_SPREAD |          \
     RULES_REASON_ENUMERATION)

enum rules_verdict {
    RULES_VERDICT_AUTHENTIC = 0,
    RULES_VERDICT_SUSPICIOUS,
    RULES_VERDICT_REVOKED,
    RULES_VERDICT_UNKNOWN,
};

/* SPEC §5: the score runs from 0 to 100, and 50 or more makes a registered tag suspicious. */
#define RULES_MAX_SCORE 100
#define RULES_SUSPICIOUS_SCORE 50

/*
 * Thresholds, windows and weights. Counts are "more than N": N itself does not fire. The
 * windows other than travel_window_s are the caller's: the engine only compares the counts
 * it is given, and they are here so that one struct configures the whole rule set.
 *
 * Default weights, and why (a rule fires at most once per scan, the sum is capped at 100):
 *  - impossible_travel 60: one physical tag cannot be in two places, so a copy exists. The
 *    strongest evidence about the tag; enough on its own to make it suspicious.
 *  - clone_spread 50: a copied tag printed on many counterfeits looks like this, and on its
 *    own it makes the tag suspicious. It is weaker than travel (a shop's display item is
 *    also scanned by many people), so it sits exactly at the threshold rather than above.
 *  - velocity 30: a busy tag (staff checking stock, a demo unit, a class) can be scanned
 *    often by real people, so alone it is not enough; with any other signal it is.
 *  - enumeration 30: evidence about the client, not the tag. A client guessing UUIDs that
 *    hits a registered tag is not told "authentic" with confidence once a second signal
 *    (a bot user agent, say) joins it; alone it does not condemn a genuine tag.
 *  - bot_ua 20: link previews and scripts fetch genuine tags all day, so alone it never makes
 *    a tag suspicious, but it tips a tag that already shows one tag signal over the line.
 *  - revoked 100: a recalled batch is the strongest reason not to trust the item, and the
 *    score should say so to a reader of the event stream who looks at the score alone. The
 *    verdict "revoked" does not depend on the weight: it wins whatever the score.
 */
struct rules_config {
    unsigned velocity_max;      /* more than this many counted scans of one tag ... (10) */
    unsigned velocity_window_s; /* ... within this window (60) */

    double travel_max_kmh;    /* a speed over this (1000) ... */
    double travel_min_km;     /* ... over at least this distance (500) ... */
    unsigned travel_window_s; /* ... between scans at most this far apart (48 h) */
    /*
     * The previous located scan's time was written by another scan server, whose clock may
     * run a little ahead. A previous scan up to this much in the future is taken to be at
     * the same instant; one further in the future is not trusted and travel is not judged
     * (5000).
     */
    unsigned clock_skew_ms;

    unsigned clone_max_clients; /* more than this many distinct clients on one tag ... (20) */
    unsigned clone_window_s;    /* ... within this window (24 h) */

    unsigned enum_max_unknown; /* more than this many unknown tags asked by one client ... (30) */
    unsigned enum_window_s;    /* ... within this window (60) */

    /*
     * Scans of one tag by one device (device id, else IP) within this window count once
     * (30). The caller keeps the window (a key set with NX and this expiry at the counted
     * scan, not extended by repeats, so a device scanning without pause counts once per
     * window) and tells the engine through rules_input.repeat.
     */
    unsigned dedup_window_s;

    /* Points each rule adds to the score, 0..100; see above. */
    unsigned weight_velocity;
    unsigned weight_impossible_travel;
    unsigned weight_clone_spread;
    unsigned weight_enumeration;
    unsigned weight_bot_ua;
    unsigned weight_revoked;
};

/*
 * What the scan path knows about one scan. Who counts what:
 *  - The caller keeps every count in Redis and passes it as it stands after this scan has
 *    been counted, deduplicated: a repeat (the same device on the same tag within
 *    dedup_window_s) is not counted, so for a repeat the counts are those left by other
 *    scans and by this device's counted scan. The engine never adds one to anything.
 *  - The engine only compares. For a repeat it does not judge impossible_travel at all:
 *    the tag's previous located scan is then most likely this device's own, and two fixes
 *    by one device far apart are an artefact of the location source (a coarse fix, then
 *    GPS), not a second tag. velocity and clone_spread are judged on the counts as given;
 *    since the repeat added nothing to them it cannot be what takes them over the line,
 *    but a tag that other scans already took over the line stays suspicious when the same
 *    consumer scans it again, rather than flipping back to authentic.
 *  - When Redis could not be read, the caller sets state_available to false and the counts
 *    and previous location are ignored: the stateful rules are skipped and the result says
 *    degraded. bot_ua and revoked need no state (the batch's recall comes with the tag) and
 *    still apply.
 *  - The engine only asks whether a count is above its maximum, so the caller may hold
 *    scans_in_window at velocity_max + 1 and distinct_clients at clone_max + 1 (the Redis
 *    state keeps no more than that; see scan/tagcache.c): the answer is the same.
 *  - Coordinates outside ±90 / ±180, or not finite, are ignored, as if absent. The caller
 *    should not store such a location as the tag's last located scan (rules_location_valid).
 */
struct rules_input {
    int64_t now_ms; /* this scan, Unix milliseconds */

    bool tag_found;         /* false: a well-formed UUID that is not registered */
    bool batch_revoked;     /* the tag's batch was recalled (ignored for an unknown tag) */
    const char *user_agent; /* borrowed for the call; NULL, empty or blanks: no user agent */

    bool state_available;      /* false: Redis was unavailable; repeat .. prev_ms are ignored */
    bool repeat;               /* a repeat scan of this tag by this device within dedup_window_s */
    uint64_t scans_in_window;  /* counted scans of this tag in velocity_window_s */
    uint64_t distinct_clients; /* distinct clients of this tag in clone_window_s */
    uint64_t client_unknown_in_window; /* unknown tags this client asked in enum_window_s,
                                          this lookup included when the tag is unknown */

    bool has_location; /* lat/lon of this scan were given */
    double lat, lon;
    bool has_prev_location; /* the tag's previous located scan, from state */
    double prev_lat, prev_lon;
    int64_t prev_ms;
};

/*
 * The outcome. For an unknown tag the verdict is always "unknown" (404); the tag rules
 * (velocity, impossible_travel, clone_spread, revoked) have no tag to judge, and score and
 * reasons describe the client alone (enumeration, bot_ua). They go into the scan event so a
 * guessing client shows up there, and never change the verdict.
 */
struct rules_result {
    int score;        /* 0..RULES_MAX_SCORE */
    unsigned reasons; /* enum rules_reason bits of the rules that fired */
    bool degraded;    /* state was unavailable and the stateful rules were skipped */
    unsigned skipped; /* when degraded: the stateful rules that did not run */
    enum rules_verdict verdict;
};

/*
 * Fills *cfg with the SPEC's defaults: 10 scans / 60 s, 1000 km/h over 500 km within 48 h
 * (5 s of clock skew), 20 clients / 24 h, 30 unknown tags / 60 s, a 30 s dedup window, and
 * the weights above.
 */
void rules_config_default(struct rules_config *cfg);

/*
 * 0 when cfg is usable, else -1 with *why (if why is not NULL) set to a static sentence
 * naming the first field out of range. Counts and windows must be at least 1 (a "more than
 * 0" rule would fire on every scan), dedup_window_s at most velocity_window_s, distances and
 * speeds finite and above 0, weights at most 100.
 */
int rules_config_validate(const struct rules_config *cfg, const char **why);

/*
 * Runs every rule that applies and fills *out. cfg must have passed rules_config_validate;
 * in is borrowed for the call. Pure: the same input always gives the same result.
 */
void rules_evaluate(const struct rules_config *cfg, const struct rules_input *in,
                    struct rules_result *out);

/*
 * Takes the first reason (in the SPEC's order) out of *reasons and returns its bit, or 0
 * when none is left. Builds the JSON array in its stable order:
 *     unsigned it = result.reasons, bit;
 *     while ((bit = rules_reason_next(&it)) != 0)
 *         json_array_append_new(a, json_string(rules_reason_name(bit)));
 */
unsigned rules_reason_next(unsigned *reasons);

/* "velocity", "impossible_travel", ... for one reason bit; NULL for anything else. Static. */
const char *rules_reason_name(unsigned reason);

/* "authentic", "suspicious", "revoked" or "unknown"; NULL for anything else. Static. */
const char *rules_verdict_name(enum rules_verdict verdict);

/* Whether the user agent is empty, blank or matches a known crawler or automation tool. */
bool rules_bot_ua(const char *user_agent);

/* Whether lat/lon are finite and within ±90 / ±180 degrees. */
bool rules_location_valid(double lat, double lon);

/* Great-circle distance in km on a sphere of radius 6371 km (haversine). Degrees in. */
double rules_distance_km(double lat1, double lon1, double lat2, double lon2);

#endif
