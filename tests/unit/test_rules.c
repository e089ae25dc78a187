/*
 * Unit tests of rules: every SPEC §5 rule at its boundaries, repeat scans, degraded mode,
 * how weights combine into verdicts, the bot user-agent table, and haversine against
 * published distances.
 */
#include "support.h"
#include "rules.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define NOW_MS INT64_C(1800000000000) /* 2027-01-15, any fixed instant will do */
#define HOUR_MS INT64_C(3600000)

static const char *const iphone_ua =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";

/* A consumer's first scan of a registered tag: one scan, one client, no location. */
static struct rules_input clean_input(void)
{
    struct rules_input in;
    memset(&in, 0, sizeof(in));
    in.now_ms = NOW_MS;
    in.tag_found = true;
    in.user_agent = iphone_ua;
    in.state_available = true;
    in.scans_in_window = 1;
    in.distinct_clients = 1;
    return in;
}

static struct rules_config default_config(void)
{
    struct rules_config cfg;
    rules_config_default(&cfg);
    return cfg;
}

static struct rules_result evaluate(const struct rules_config *cfg, const struct rules_input *in)
{
    struct rules_result r;
    memset(&r, 0xa5, sizeof(r)); /* every field must be written */
    rules_evaluate(cfg, in, &r);
    return r;
}

static void check(const struct rules_result *r, int score, unsigned reasons,
                  enum rules_verdict verdict, const char *what)
{
    if (r->score != score || r->reasons != reasons || r->verdict != verdict)
        fail_msg("%s: score %d reasons %#x verdict %s, want %d %#x %s", what, r->score, r->reasons,
                 rules_verdict_name(r->verdict), score, reasons, rules_verdict_name(verdict));
    if (r->degraded || r->skipped != 0)
        fail_msg("%s: degraded %d skipped %#x with state available", what, r->degraded, r->skipped);
}

/* The latitude, on the prime meridian, that lies km north of the equator. */
static double lat_for_km(double km)
{
    return km / 6371.0 * (180.0 / M_PI);
}

/* This scan at (lat, lon), the tag's previous located scan at (plat, plon) ago_ms earlier. */
static void locate(struct rules_input *in, double lat, double lon, double plat, double plon,
                   int64_t ago_ms)
{
    in->has_location = true;
    in->lat = lat;
    in->lon = lon;
    in->has_prev_location = true;
    in->prev_lat = plat;
    in->prev_lon = plon;
    in->prev_ms = in->now_ms - ago_ms;
}

static bool travel_fires(const struct rules_config *cfg, const struct rules_input *in)
{
    struct rules_result r = evaluate(cfg, in);
    return (r.reasons & RULES_REASON_IMPOSSIBLE_TRAVEL) != 0;
}

/* ---- configuration ---- */

static void test_config_default(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    const char *why = "untouched";

    assert_int_equal(cfg.velocity_max, 10);
    assert_int_equal(cfg.velocity_window_s, 60);
    assert_true(cfg.travel_max_kmh == 1000.0);
    assert_true(cfg.travel_min_km == 500.0);
    assert_int_equal(cfg.travel_window_s, 48 * 3600);
    assert_int_equal(cfg.clock_skew_ms, 5000);
    assert_int_equal(cfg.clone_max_clients, 20);
    assert_int_equal(cfg.clone_window_s, 24 * 3600);
    assert_int_equal(cfg.enum_max_unknown, 30);
    assert_int_equal(cfg.enum_window_s, 60);
    assert_int_equal(cfg.dedup_window_s, 30);
    assert_int_equal(cfg.weight_velocity, 30);
    assert_int_equal(cfg.weight_impossible_travel, 60);
    assert_int_equal(cfg.weight_clone_spread, 50);
    assert_int_equal(cfg.weight_enumeration, 30);
    assert_int_equal(cfg.weight_bot_ua, 20);
    assert_int_equal(cfg.weight_revoked, 100);
    assert_int_equal(rules_config_validate(&cfg, &why), 0);
    assert_string_equal(why, "untouched");
    assert_int_equal(rules_config_validate(&cfg, NULL), 0);
}

static void test_config_validate_rejects(void **state)
{
    (void)state;
    /* Each row spoils one field of the defaults; the reason must name that field. */
    struct {
        const char *field;
        struct rules_config cfg;
    } rows[32];
    size_t n = 0;
#define ROW(name, stmt)                                                                            \
    do {                                                                                           \
        rows[n].field = name;                                                                      \
        rows[n].cfg = default_config();                                                            \
        struct rules_config *c = &rows[n].cfg;                                                     \
        stmt;                                                                                      \
        n++;                                                                                       \
    } while (0)
    ROW("velocity_max", c->velocity_max = 0);
    ROW("velocity_window_s", c->velocity_window_s = 0);
    ROW("travel_max_kmh", c->travel_max_kmh = 0.0);
    ROW("travel_max_kmh", c->travel_max_kmh = -1.0);
    ROW("travel_max_kmh", c->travel_max_kmh = NAN);
    ROW("travel_max_kmh", c->travel_max_kmh = INFINITY);
    ROW("travel_min_km", c->travel_min_km = 0.0);
    ROW("travel_min_km", c->travel_min_km = NAN);
    ROW("travel_min_km", c->travel_min_km = INFINITY);
    ROW("travel_window_s", c->travel_window_s = 0);
    ROW("clone_max_clients", c->clone_max_clients = 0);
    ROW("clone_window_s", c->clone_window_s = 0);
    ROW("enum_max_unknown", c->enum_max_unknown = 0);
    ROW("enum_window_s", c->enum_window_s = 0);
    ROW("dedup_window_s", c->dedup_window_s = 0);
    ROW("dedup_window_s", c->dedup_window_s = c->velocity_window_s + 1);
    ROW("weight_velocity", c->weight_velocity = 101);
    ROW("weight_impossible_travel", c->weight_impossible_travel = 101);
    ROW("weight_clone_spread", c->weight_clone_spread = 101);
    ROW("weight_enumeration", c->weight_enumeration = 101);
    ROW("weight_bot_ua", c->weight_bot_ua = 101);
    ROW("weight_revoked", c->weight_revoked = 101);
#undef ROW
    assert_true(n <= sizeof(rows) / sizeof(rows[0]));

    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        if (rules_config_validate(&rows[i].cfg, &why) != -1)
            fail_msg("row %zu (%s): accepted", i, rows[i].field);
        assert_non_null(why);
        if (strncmp(why, rows[i].field, strlen(rows[i].field)) != 0 ||
            why[strlen(rows[i].field)] != ' ')
            fail_msg("row %zu: reason \"%s\" does not name %s", i, why, rows[i].field);
        assert_int_equal(rules_config_validate(&rows[i].cfg, NULL), -1);
    }

    /* The edges that are allowed. */
    struct rules_config cfg = default_config();
    cfg.velocity_max = 1;
    cfg.clone_max_clients = 1;
    cfg.enum_max_unknown = 1;
    cfg.dedup_window_s = cfg.velocity_window_s;
    cfg.travel_min_km = 0.001;
    cfg.travel_max_kmh = 0.001;
    cfg.clock_skew_ms = 0;
    cfg.weight_velocity = 0;
    cfg.weight_revoked = 100;
    cfg.weight_bot_ua = 100;
    assert_int_equal(rules_config_validate(&cfg, NULL), 0);
}

/* ---- names and order ---- */

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(rules_reason_name(RULES_REASON_VELOCITY), "velocity");
    assert_string_equal(rules_reason_name(RULES_REASON_IMPOSSIBLE_TRAVEL), "impossible_travel");
    assert_string_equal(rules_reason_name(RULES_REASON_CLONE_SPREAD), "clone_spread");
    assert_string_equal(rules_reason_name(RULES_REASON_ENUMERATION), "enumeration");
    assert_string_equal(rules_reason_name(RULES_REASON_BOT_UA), "bot_ua");
    assert_string_equal(rules_reason_name(RULES_REASON_REVOKED), "revoked");
    assert_null(rules_reason_name(0));
    assert_null(rules_reason_name(1u << RULES_REASON_COUNT));
    assert_null(rules_reason_name(RULES_REASON_VELOCITY | RULES_REASON_BOT_UA));

    assert_string_equal(rules_verdict_name(RULES_VERDICT_AUTHENTIC), "authentic");
    assert_string_equal(rules_verdict_name(RULES_VERDICT_SUSPICIOUS), "suspicious");
    assert_string_equal(rules_verdict_name(RULES_VERDICT_REVOKED), "revoked");
    assert_string_equal(rules_verdict_name(RULES_VERDICT_UNKNOWN), "unknown");
    assert_null(rules_verdict_name((enum rules_verdict)42));
}

static void test_reason_next_order(void **state)
{
    (void)state;
    static const char *const all[] = {
        "velocity", "impossible_travel", "clone_spread", "enumeration", "bot_ua", "revoked"};
    unsigned it = RULES_REASON_ALL, bit;
    size_t n = 0;

    while ((bit = rules_reason_next(&it)) != 0) {
        assert_true(n < RULES_REASON_COUNT);
        assert_string_equal(rules_reason_name(bit), all[n]);
        n++;
    }
    assert_int_equal(n, RULES_REASON_COUNT);
    assert_int_equal(it, 0);

    /* The order does not depend on the order the bits were set in; stray bits are dropped. */
    it = RULES_REASON_REVOKED | RULES_REASON_BOT_UA | RULES_REASON_VELOCITY | 0x80000000u;
    assert_int_equal(rules_reason_next(&it), RULES_REASON_VELOCITY);
    assert_int_equal(rules_reason_next(&it), RULES_REASON_BOT_UA);
    assert_int_equal(rules_reason_next(&it), RULES_REASON_REVOKED);
    assert_int_equal(rules_reason_next(&it), 0);
    assert_int_equal(rules_reason_next(&it), 0);
    assert_int_equal(it, 0);
}

/* ---- counting rules ---- */

static void test_clean_scan_authentic(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r = evaluate(&cfg, &in);

    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "first scan");
}

static void test_velocity_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    in.scans_in_window = 10;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "10 scans");
    in.scans_in_window = 11;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_VELOCITY, RULES_VERDICT_AUTHENTIC, "11 scans");
    in.scans_in_window = UINT64_MAX;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_VELOCITY, RULES_VERDICT_AUTHENTIC, "huge count");

    cfg.velocity_max = 3;
    in.scans_in_window = 3;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "3 scans, N = 3");
    in.scans_in_window = 4;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_VELOCITY, RULES_VERDICT_AUTHENTIC, "4 scans, N = 3");
}

static void test_clone_spread_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    in.distinct_clients = 20;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "20 clients");
    in.distinct_clients = 21;
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_CLONE_SPREAD, RULES_VERDICT_SUSPICIOUS, "21 clients");

    cfg.clone_max_clients = 5;
    in.distinct_clients = 5;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "5 clients, N = 5");
    in.distinct_clients = 6;
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_CLONE_SPREAD, RULES_VERDICT_SUSPICIOUS, "6 clients, N = 5");
}

static void test_enumeration_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    /* An unknown tag: the verdict is unknown whatever the client does. */
    in.tag_found = false;
    in.scans_in_window = 0;
    in.distinct_clients = 0;
    in.client_unknown_in_window = 30;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_UNKNOWN, "30 unknown");
    in.client_unknown_in_window = 31;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_ENUMERATION, RULES_VERDICT_UNKNOWN, "31 unknown");
    in.user_agent = "python-requests/2.31.0";
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_ENUMERATION | RULES_REASON_BOT_UA, RULES_VERDICT_UNKNOWN,
          "31 unknown by a script");

    /* The tag rules have no tag to judge: counts and locations of an unknown tag are ignored. */
    in.user_agent = iphone_ua;
    in.client_unknown_in_window = 1;
    in.scans_in_window = 1000;
    in.distinct_clients = 1000;
    in.batch_revoked = true;
    locate(&in, 0.0, 0.0, 0.0, 90.0, 0);
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_UNKNOWN, "unknown tag, tag state ignored");

    /* A client that has been guessing finds a registered tag: enumeration still fires. */
    in = clean_input();
    in.client_unknown_in_window = 31;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_ENUMERATION, RULES_VERDICT_AUTHENTIC, "guesser hits a tag");
    in.user_agent = "Go-http-client/1.1";
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_ENUMERATION | RULES_REASON_BOT_UA, RULES_VERDICT_SUSPICIOUS,
          "guessing script hits a tag");

    cfg.enum_max_unknown = 2;
    in = clean_input();
    in.client_unknown_in_window = 2;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "2 unknown, N = 2");
    in.client_unknown_in_window = 3;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_ENUMERATION, RULES_VERDICT_AUTHENTIC, "3 unknown, N = 2");
}

/* ---- impossible travel ---- */

static void test_travel_distance_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    /* At the same instant any distance of at least 500 km is impossible, and less is not. */
    locate(&in, lat_for_km(499.0), 0.0, 0.0, 0.0, 0);
    assert_true(fabs(rules_distance_km(0.0, 0.0, in.lat, 0.0) - 499.0) < 1e-6);
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "499 km at once");

    locate(&in, lat_for_km(500.0 + 1e-6), 0.0, 0.0, 0.0, 0);
    assert_true(rules_distance_km(0.0, 0.0, in.lat, 0.0) >= 500.0);
    r = evaluate(&cfg, &in);
    check(&r, 60, RULES_REASON_IMPOSSIBLE_TRAVEL, RULES_VERDICT_SUSPICIOUS, "500 km at once");

    /* "at least": a minimum equal to the distance fires, the next double above does not. */
    locate(&in, lat_for_km(700.0), 0.0, 0.0, 0.0, 0);
    double km = rules_distance_km(in.prev_lat, in.prev_lon, in.lat, in.lon);
    cfg.travel_min_km = km;
    assert_true(travel_fires(&cfg, &in));
    cfg.travel_min_km = nextafter(km, INFINITY);
    assert_false(travel_fires(&cfg, &in));
}

static void test_travel_speed_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();

    /* One hour apart, the speed in km/h is the distance: V equal to it is not "over V". */
    locate(&in, lat_for_km(1200.0), 0.0, 0.0, 0.0, HOUR_MS);
    double km = rules_distance_km(in.prev_lat, in.prev_lon, in.lat, in.lon);
    cfg.travel_max_kmh = km;
    assert_false(travel_fires(&cfg, &in));
    cfg.travel_max_kmh = nextafter(km, 0.0);
    assert_true(travel_fires(&cfg, &in));

    /* The default 1000 km/h over 1500 km: 90 minutes is the limit, to the millisecond. */
    cfg = default_config();
    locate(&in, lat_for_km(1500.0), 0.0, 0.0, 0.0, 0);
    km = rules_distance_km(in.prev_lat, in.prev_lon, in.lat, in.lon);
    double limit_ms = km / 1000.0 * 3600000.0;
    in.prev_ms = in.now_ms - (int64_t)floor(limit_ms) - 1; /* a little slower than V */
    assert_false(travel_fires(&cfg, &in));
    in.prev_ms = in.now_ms - ((int64_t)floor(limit_ms) - 1); /* a little faster than V */
    assert_true(travel_fires(&cfg, &in));

    /* Paris, then New York three hours later: about 1946 km/h. */
    struct rules_result r;
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, 3 * HOUR_MS);
    r = evaluate(&cfg, &in);
    check(&r, 60, RULES_REASON_IMPOSSIBLE_TRAVEL, RULES_VERDICT_SUSPICIOUS, "Paris-NY 3 h");
    /* Eight hours later, a flight: about 730 km/h. */
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, 8 * HOUR_MS);
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "Paris-NY 8 h");
}

static void test_travel_window_boundary(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();

    /*
     * At the default 1000 km/h no distance on Earth is over V after 21 h, so the window
     * only matters for a slower V: 5 km/h, and 600 km in 48 h is 12.5 km/h.
     */
    cfg.travel_max_kmh = 5.0;
    locate(&in, lat_for_km(600.0), 0.0, 0.0, 0.0, 48 * HOUR_MS);
    assert_true(travel_fires(&cfg, &in));
    in.prev_ms -= 1;
    assert_false(travel_fires(&cfg, &in));

    cfg.travel_window_s = 3600;
    in.prev_ms = in.now_ms - HOUR_MS;
    assert_true(travel_fires(&cfg, &in));
    in.prev_ms -= 1;
    assert_false(travel_fires(&cfg, &in));

    /* And with the defaults, antipodes 48 h apart are 417 km/h: nothing. */
    cfg = default_config();
    locate(&in, 0.0, 180.0, 0.0, 0.0, 48 * HOUR_MS);
    assert_false(travel_fires(&cfg, &in));
}

static void test_travel_elapsed_zero(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();

    /* Same instant, far apart: impossible at any speed. */
    locate(&in, 51.5074, -0.1278, 40.7128, -74.0060, 0);
    assert_true(travel_fires(&cfg, &in));
    /* Same instant, same place: no travel at all. */
    locate(&in, 51.5074, -0.1278, 51.5074, -0.1278, 0);
    assert_false(travel_fires(&cfg, &in));
    /* Same instant, London and Paris: under 500 km. */
    locate(&in, 51.5074, -0.1278, 48.8566, 2.3522, 0);
    assert_false(travel_fires(&cfg, &in));
    /* One millisecond apart, far: still far over V. */
    locate(&in, 51.5074, -0.1278, 40.7128, -74.0060, 1);
    assert_true(travel_fires(&cfg, &in));
}

static void test_travel_clock_skew(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();

    /* The previous scan's server ran up to clock_skew_ms ahead: the same instant. */
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, -5000);
    assert_true(travel_fires(&cfg, &in));
    /* Further in the future the stored time is not trusted: travel is not judged. */
    in.prev_ms = in.now_ms + 5001;
    assert_false(travel_fires(&cfg, &in));
    cfg.clock_skew_ms = 0;
    in.prev_ms = in.now_ms;
    assert_true(travel_fires(&cfg, &in));
    in.prev_ms = in.now_ms + 1;
    assert_false(travel_fires(&cfg, &in));

    /* Absurd stored times neither overflow nor fire. */
    cfg = default_config();
    in.prev_ms = INT64_MIN;
    assert_false(travel_fires(&cfg, &in));
    in.prev_ms = INT64_MAX;
    assert_false(travel_fires(&cfg, &in));
    in.now_ms = INT64_MIN;
    in.prev_ms = INT64_MAX;
    assert_false(travel_fires(&cfg, &in));
}

static void test_travel_needs_both_locations(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();

    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, 60000);
    assert_true(travel_fires(&cfg, &in));
    in.has_location = false;
    assert_false(travel_fires(&cfg, &in));
    in.has_location = true;
    in.has_prev_location = false;
    assert_false(travel_fires(&cfg, &in));
}

static void test_invalid_coordinates_ignored(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    static const struct {
        double lat, lon;
        bool valid;
    } points[] = {
        {90.0, 0.0, true},         {-90.0, 0.0, true},         {0.0, 180.0, true},
        {0.0, -180.0, true},       {90.0000001, 0.0, false},   {-90.0000001, 0.0, false},
        {0.0, 180.0000001, false}, {0.0, -180.0000001, false}, {NAN, 0.0, false},
        {0.0, NAN, false},         {INFINITY, 0.0, false},     {0.0, -INFINITY, false},
        {1000.0, 1000.0, false},
    };

    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        double lat = points[i].lat, lon = points[i].lon;
        if (rules_location_valid(lat, lon) != points[i].valid)
            fail_msg("point %zu (%g, %g): valid %d", i, lat, lon, !points[i].valid);

        /* The other end is far from every valid point above at the same instant. */
        double far_lat = lat > 0.0 ? -45.0 : 45.0, far_lon = 90.0;
        struct rules_input in = clean_input();
        locate(&in, lat, lon, far_lat, far_lon, 0);
        if (travel_fires(&cfg, &in) != points[i].valid)
            fail_msg("point %zu as this scan: fired %d", i, !points[i].valid);
        locate(&in, far_lat, far_lon, lat, lon, 0);
        if (travel_fires(&cfg, &in) != points[i].valid)
            fail_msg("point %zu as the previous scan: fired %d", i, !points[i].valid);
    }
}

/* ---- repeats, degraded state, combinations ---- */

static void test_repeat_raises_nothing(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    /* A consumer scans in Paris; it is the tag's first located scan. */
    in.has_location = true;
    in.lat = 48.8566;
    in.lon = 2.3522;
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "first scan");

    /*
     * Twenty seconds later the same phone scans again, and its second fix is a coarse one
     * 600 km off. The caller counted nothing and the previous located scan is its own.
     */
    in.now_ms += 20000;
    in.repeat = true;
    locate(&in, 48.8566 + lat_for_km(600.0), 2.3522, 48.8566, 2.3522, 20000);
    r = evaluate(&cfg, &in);
    check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "repeat, location jumped");
    /* The same scan, were it not a repeat, would be impossible travel. */
    in.repeat = false;
    r = evaluate(&cfg, &in);
    check(&r, 60, RULES_REASON_IMPOSSIBLE_TRAVEL, RULES_VERDICT_SUSPICIOUS, "not a repeat");

    /* The tenth counted scan was this device's; its repeats leave the count at 10. */
    in = clean_input();
    in.repeat = true;
    in.scans_in_window = 10;
    in.distinct_clients = 20;
    for (int i = 0; i < 50; i++) {
        in.now_ms += 500;
        r = evaluate(&cfg, &in);
        check(&r, 0, 0, RULES_VERDICT_AUTHENTIC, "repeat at N");
    }

    /*
     * Counts that other devices already took over the line stay over it for a repeat: the
     * tag does not flip back to authentic because the same consumer scans twice.
     */
    in.distinct_clients = 21;
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_CLONE_SPREAD, RULES_VERDICT_SUSPICIOUS, "repeat, others over");

    /* bot_ua and enumeration do not depend on counting this scan. */
    in = clean_input();
    in.repeat = true;
    in.user_agent = "";
    in.client_unknown_in_window = 31;
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_BOT_UA | RULES_REASON_ENUMERATION, RULES_VERDICT_SUSPICIOUS,
          "repeat by a guessing script");
}

static void test_degraded_skips_state_rules(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    /* Whatever the state fields say, they are not read. */
    in.state_available = false;
    in.scans_in_window = 1000;
    in.distinct_clients = 1000;
    in.client_unknown_in_window = 1000;
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, 0);
    r = evaluate(&cfg, &in);
    assert_int_equal(r.score, 0);
    assert_int_equal(r.reasons, 0);
    assert_true(r.degraded);
    assert_int_equal(r.skipped, RULES_REASONS_STATEFUL);
    assert_int_equal(r.verdict, RULES_VERDICT_AUTHENTIC);

    /* bot_ua and revoked need no state. */
    in.user_agent = NULL;
    r = evaluate(&cfg, &in);
    assert_int_equal(r.score, 20);
    assert_int_equal(r.reasons, RULES_REASON_BOT_UA);
    assert_true(r.degraded);
    assert_int_equal(r.verdict, RULES_VERDICT_AUTHENTIC);
    in.batch_revoked = true;
    r = evaluate(&cfg, &in);
    assert_int_equal(r.score, 100);
    assert_int_equal(r.reasons, RULES_REASON_BOT_UA | RULES_REASON_REVOKED);
    assert_true(r.degraded);
    assert_int_equal(r.skipped, RULES_REASONS_STATEFUL);
    assert_int_equal(r.verdict, RULES_VERDICT_REVOKED);

    /* An unknown tag only ever had enumeration to skip. */
    in = clean_input();
    in.tag_found = false;
    in.state_available = false;
    in.client_unknown_in_window = 1000;
    r = evaluate(&cfg, &in);
    assert_int_equal(r.score, 0);
    assert_int_equal(r.reasons, 0);
    assert_true(r.degraded);
    assert_int_equal(r.skipped, RULES_REASON_ENUMERATION);
    assert_int_equal(r.verdict, RULES_VERDICT_UNKNOWN);
}

static void test_revoked_wins(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;

    in.batch_revoked = true;
    r = evaluate(&cfg, &in);
    check(&r, 100, RULES_REASON_REVOKED, RULES_VERDICT_REVOKED, "revoked alone");

    /* Over the suspicious line on other grounds, still revoked. */
    in.distinct_clients = 21;
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, HOUR_MS);
    r = evaluate(&cfg, &in);
    check(&r, 100,
          RULES_REASON_REVOKED | RULES_REASON_CLONE_SPREAD | RULES_REASON_IMPOSSIBLE_TRAVEL,
          RULES_VERDICT_REVOKED, "revoked and suspicious");

    /* The verdict does not come from the weight. */
    cfg.weight_revoked = 0;
    in = clean_input();
    in.batch_revoked = true;
    r = evaluate(&cfg, &in);
    check(&r, 0, RULES_REASON_REVOKED, RULES_VERDICT_REVOKED, "revoked, weight 0");
}

static void test_weights_alone_and_together(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in;
    struct rules_result r;

    in = clean_input();
    in.scans_in_window = 11;
    r = evaluate(&cfg, &in);
    check(&r, 30, RULES_REASON_VELOCITY, RULES_VERDICT_AUTHENTIC, "velocity alone");

    in = clean_input();
    in.user_agent = "curl/8.5.0";
    r = evaluate(&cfg, &in);
    check(&r, 20, RULES_REASON_BOT_UA, RULES_VERDICT_AUTHENTIC, "bot_ua alone");

    in = clean_input();
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, HOUR_MS);
    r = evaluate(&cfg, &in);
    check(&r, 60, RULES_REASON_IMPOSSIBLE_TRAVEL, RULES_VERDICT_SUSPICIOUS, "travel alone");

    in = clean_input();
    in.scans_in_window = 11;
    in.user_agent = "  ";
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_VELOCITY | RULES_REASON_BOT_UA, RULES_VERDICT_SUSPICIOUS,
          "velocity and bot_ua");

    in = clean_input();
    in.scans_in_window = 11;
    in.client_unknown_in_window = 31;
    r = evaluate(&cfg, &in);
    check(&r, 60, RULES_REASON_VELOCITY | RULES_REASON_ENUMERATION, RULES_VERDICT_SUSPICIOUS,
          "velocity and enumeration");

    /* Just under the line with custom weights: 49 is authentic, 50 suspicious. */
    cfg.weight_velocity = 29;
    in = clean_input();
    in.scans_in_window = 11;
    in.user_agent = NULL;
    r = evaluate(&cfg, &in);
    check(&r, 49, RULES_REASON_VELOCITY | RULES_REASON_BOT_UA, RULES_VERDICT_AUTHENTIC, "score 49");
    cfg.weight_velocity = 30;
    r = evaluate(&cfg, &in);
    check(&r, 50, RULES_REASON_VELOCITY | RULES_REASON_BOT_UA, RULES_VERDICT_SUSPICIOUS,
          "score 50");
}

static void test_score_capped(void **state)
{
    (void)state;
    struct rules_config cfg = default_config();
    struct rules_input in = clean_input();
    struct rules_result r;
    unsigned fraud = RULES_REASON_VELOCITY | RULES_REASON_IMPOSSIBLE_TRAVEL |
                     RULES_REASON_CLONE_SPREAD | RULES_REASON_ENUMERATION | RULES_REASON_BOT_UA;

    /* Every fraud rule at once adds up to 190. */
    in.scans_in_window = 11;
    in.distinct_clients = 21;
    in.client_unknown_in_window = 31;
    in.user_agent = "Scrapy/2.11.0 (+https://scrapy.org)";
    locate(&in, 40.7128, -74.0060, 48.8566, 2.3522, 0);
    r = evaluate(&cfg, &in);
    check(&r, 100, fraud, RULES_VERDICT_SUSPICIOUS, "all fraud rules");
    in.batch_revoked = true;
    r = evaluate(&cfg, &in);
    check(&r, 100, RULES_REASON_ALL, RULES_VERDICT_REVOKED, "every rule");

    /* Under the cap the weights add exactly; every weight at 100 still caps at 100. */
    cfg.weight_velocity = 1;
    cfg.weight_impossible_travel = 2;
    cfg.weight_clone_spread = 4;
    cfg.weight_enumeration = 8;
    cfg.weight_bot_ua = 16;
    cfg.weight_revoked = 32;
    r = evaluate(&cfg, &in);
    check(&r, 63, RULES_REASON_ALL, RULES_VERDICT_REVOKED, "small weights");
    cfg.weight_velocity = cfg.weight_impossible_travel = cfg.weight_clone_spread = 100;
    cfg.weight_enumeration = cfg.weight_bot_ua = cfg.weight_revoked = 100;
    r = evaluate(&cfg, &in);
    check(&r, 100, RULES_REASON_ALL, RULES_VERDICT_REVOKED, "weights of 100");
}

/* ---- bot user agents ---- */

static void test_bot_ua_positives(void **state)
{
    (void)state;
    static const char *const bots[] = {
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; "
        "+https://openai.com/gptbot)",
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mediapartners-Google",
        "ia_archiver (+http://www.alexa.com/site/help/webmasters; crawler@alexa.com)",
        "SomeCrawler/1.0",
        "curl/7.88.1",
        "Wget/1.21.3",
        "python-requests/2.31.0",
        "Python-urllib/3.11",
        "python-httpx/0.25.2",
        "Python/3.11 aiohttp/3.9.1",
        "Go-http-client/1.1",
        "Go-http-client/2.0",
        "Java/17.0.2",
        "Apache-HttpClient/4.5.13 (Java/11.0.19)",
        "libwww-perl/6.67",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "axios/1.6.2",
        "undici",
        "HTTPie/3.2.2",
        "PostmanRuntime/7.36.0",
        "GuzzleHttp/7",
        "Ruby",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.6099.71 Safari/537.36",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        "Mozilla/5.0 Selenium",
        "Mozilla/5.0 (puppeteer)",
        "Mozilla/5.0 Playwright/1.40",
        "Scrapy/2.11.0 (+https://scrapy.org)",
        "Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)",
        "ApacheBench/2.3",
        "Mozilla/5.0 zgrab/0.x",
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
        "GOOGLEBOT",
        /* An innocent phone maker's name does not hide a crawler in the same string. */
        "Mozilla/5.0 (Linux; Android 10; CUBOT P40) (compatible; Googlebot/2.1)",
        "bot CUBOT",
        "cubobot",
    };

    for (size_t i = 0; i < sizeof(bots) / sizeof(bots[0]); i++) {
        if (!rules_bot_ua(bots[i]))
            fail_msg("not a bot: \"%s\"", bots[i]);
    }
}

static void test_bot_ua_negatives(void **state)
{
    (void)state;
    static const char *const people[] = {
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
        "Mozilla/5.0 (Linux; Android 12; 2201117TY Build/SKQ1.211006.001; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile "
        "Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Mobile/15E148 MicroMessenger/8.0.42(0x18002a2f) NetType/WIFI "
        "Language/zh_CN",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.1 Safari/605.1.15",
        /* CUBOT makes Android phones; the name is in their browsers' user agents. */
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 9; CUBOT_P30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.0.0 Mobile Safari/537.36",
        "CUBOT",
        /* Real apps: okhttp and Dalvik on Android, CFNetwork on iOS. */
        "okhttp/4.12.0",
        "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)",
        "Tagproof/1.0 CFNetwork/1474 Darwin/23.0.0",
        "x",
    };

    for (size_t i = 0; i < sizeof(people) / sizeof(people[0]); i++) {
        if (rules_bot_ua(people[i]))
            fail_msg("taken for a bot: \"%s\"", people[i]);
    }
}

static void test_bot_ua_empty(void **state)
{
    (void)state;
    assert_true(rules_bot_ua(NULL));
    assert_true(rules_bot_ua(""));
    assert_true(rules_bot_ua(" "));
    assert_true(rules_bot_ua(" \t\r\n"));
    assert_false(rules_bot_ua(" a "));
}

/* ---- distance ---- */

static void test_haversine_known_distances(void **state)
{
    (void)state;
    double d;

    /* Paris to New York, commonly given as 5837 km. */
    d = rules_distance_km(48.8566, 2.3522, 40.7128, -74.0060);
    if (fabs(d - 5837.0) > 10.0)
        fail_msg("Paris-New York %.3f km", d);
    /* London to Paris, 344 km. */
    d = rules_distance_km(51.5074, -0.1278, 48.8566, 2.3522);
    if (fabs(d - 344.0) > 1.0)
        fail_msg("London-Paris %.3f km", d);
    /*
     * Land's End (50°03′59″N, 005°42′53″W) to John o' Groats (58°38′38″N, 003°04′12″W):
     * 968.9 km, the worked example of Chris Veness's "Calculate distance, bearing and more
     * between Latitude/Longitude points" (movable-type.co.uk), also on a 6371 km sphere.
     */
    d = rules_distance_km(50.0 + 3.0 / 60 + 59.0 / 3600, -(5.0 + 42.0 / 60 + 53.0 / 3600),
                          58.0 + 38.0 / 60 + 38.0 / 3600, -(3.0 + 4.0 / 60 + 12.0 / 3600));
    if (fabs(d - 968.9) > 0.05)
        fail_msg("Land's End-John o' Groats %.3f km", d);

    /* Half the circumference, pole to pole and across the antimeridian. */
    double half = M_PI * 6371.0;
    assert_true(fabs(rules_distance_km(0.0, 0.0, 0.0, 180.0) - half) < 1e-6);
    assert_true(fabs(rules_distance_km(90.0, 0.0, -90.0, 0.0) - half) < 1e-6);
    assert_true(fabs(rules_distance_km(45.0, 10.0, -45.0, -170.0) - half) < 1e-6);
    /* Rounding takes haversine's a just over 1 here; asin would answer NaN. */
    assert_true(fabs(rules_distance_km(-87.5, -180.0, 87.5, 0.0) - half) < 1e-6);
    /* One degree of a meridian, and a short hop over the antimeridian. */
    assert_true(fabs(rules_distance_km(0.0, 0.0, 1.0, 0.0) - half / 180.0) < 1e-9);
    assert_true(fabs(rules_distance_km(0.0, 179.5, 0.0, -179.5) - half / 180.0) < 1e-9);
    /* Nothing, and symmetry. */
    assert_true(rules_distance_km(12.34, 56.78, 12.34, 56.78) == 0.0);
    assert_true(rules_distance_km(48.8566, 2.3522, 40.7128, -74.0060) ==
                rules_distance_km(40.7128, -74.0060, 48.8566, 2.3522));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_default),
        cmocka_unit_test(test_config_validate_rejects),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_reason_next_order),
        cmocka_unit_test(test_clean_scan_authentic),
        cmocka_unit_test(test_velocity_boundary),
        cmocka_unit_test(test_clone_spread_boundary),
        cmocka_unit_test(test_enumeration_boundary),
        cmocka_unit_test(test_travel_distance_boundary),
        cmocka_unit_test(test_travel_speed_boundary),
        cmocka_unit_test(test_travel_window_boundary),
        cmocka_unit_test(test_travel_elapsed_zero),
        cmocka_unit_test(test_travel_clock_skew),
        cmocka_unit_test(test_travel_needs_both_locations),
        cmocka_unit_test(test_invalid_coordinates_ignored),
        cmocka_unit_test(test_repeat_raises_nothing),
        cmocka_unit_test(test_degraded_skips_state_rules),
        cmocka_unit_test(test_revoked_wins),
        cmocka_unit_test(test_weights_alone_and_together),
        cmocka_unit_test(test_score_capped),
        cmocka_unit_test(test_bot_ua_positives),
        cmocka_unit_test(test_bot_ua_negatives),
        cmocka_unit_test(test_bot_ua_empty),
        cmocka_unit_test(test_haversine_known_distances),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
