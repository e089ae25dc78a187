/*
 * Unit tests of events: the XADD vector and the parser agree in both directions (exact
 * coordinates included), the builder refuses what the parser would, user agents are cut and
 * cleaned, and every kind of malformed entry is refused with a reason instead of a crash.
 */
#include "support.h"
#include "events.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static struct scan_event full_event(void)
{
    struct scan_event ev;
    memset(&ev, 0, sizeof(ev));
    strcpy(ev.tag_id, "7c9e6679-7425-40de-944b-e07fc1f90ae7");
    ev.ts_ms = INT64_C(1795860000123);
    ev.verdict = "suspicious";
    ev.score = 80;
    strcpy(ev.reasons, "impossible_travel,bot_ua");
    strcpy(ev.ip_hash, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    const char *ua = "Mozilla/5.0 (\"quoted\" \\ back) \xc3\xbc";
    events_set_user_agent(&ev, ua, strlen(ua));
    ev.has_location = true;
    ev.lat = 48.858844;
    ev.lon = -2.294351;
    ev.source = "cache";
    strcpy(ev.factory_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    strcpy(ev.batch_id, "7c9e6679-7425-40de-944b-e07fc1f90ae8");
    ev.first_scan = true;
    ev.first_pending = true;
    ev.first_ms = ev.ts_ms - 3;
    return ev;
}

static void assert_events_equal(const struct scan_event *a, const struct scan_event *b)
{
    assert_string_equal(a->tag_id, b->tag_id);
    assert_true(a->ts_ms == b->ts_ms);
    assert_string_equal(a->verdict, b->verdict);
    assert_int_equal(a->score, b->score);
    assert_string_equal(a->reasons, b->reasons);
    assert_string_equal(a->ip_hash, b->ip_hash);
    assert_string_equal(a->user_agent, b->user_agent);
    assert_int_equal(a->has_location, b->has_location);
    if (a->has_location) {
        /* Exactly: the builder writes the shortest form that reads back the same double. */
        assert_true(a->lat == b->lat);
        assert_true(a->lon == b->lon);
    }
    if (a->source == NULL)
        assert_null(b->source);
    else
        assert_string_equal(a->source, b->source);
    assert_string_equal(a->factory_id, b->factory_id);
    assert_string_equal(a->batch_id, b->batch_id);
    assert_int_equal(a->first_scan, b->first_scan);
    assert_int_equal(a->first_pending, b->first_pending);
    assert_true(a->first_ms == b->first_ms);
}

/* Parses the field/value part of an XADD vector. */
static int parse_xadd(const struct events_xadd *x, struct scan_event *out, const char **why)
{
    return events_parse(x->argv + 3, x->argvlen + 3, (size_t)x->argc - 3, out, why);
}

static void test_roundtrip_full_event(void **state)
{
    (void)state;
    struct scan_event ev = full_event(), back;
    struct events_xadd x;
    const char *why = NULL;

    assert_int_equal(events_xadd(&ev, NULL, &x, &why), 0);
    assert_int_equal(x.argc, EVENTS_XADD_ARGC);
    assert_string_equal(x.argv[0], "XADD");
    assert_string_equal(x.argv[1], EVENTS_STREAM_KEY);
    assert_string_equal(x.argv[1], "tagproof:scan-events");
    assert_string_equal(x.argv[2], "*");
    for (int i = 0; i < x.argc; i++)
        assert_int_equal(x.argvlen[i], strlen(x.argv[i]));
    /* No MAXLEN: the sink trims only what it stored. */
    for (int i = 0; i < x.argc; i++)
        assert_int_not_equal(strcmp(x.argv[i], "MAXLEN"), 0);
    assert_string_equal(x.argv[3], "v");
    assert_string_equal(x.argv[4], EVENTS_VERSION);

    assert_int_equal(parse_xadd(&x, &back, &why), 0);
    assert_events_equal(&ev, &back);

    assert_int_equal(events_xadd(&ev, "test:stream", &x, &why), 0);
    assert_string_equal(x.argv[1], "test:stream");
}

static void test_roundtrip_minimal_event(void **state)
{
    (void)state;
    struct scan_event ev, back;
    struct events_xadd x;
    const char *why = NULL;

    memset(&ev, 0, sizeof(ev));
    strcpy(ev.tag_id, "00000000-0000-0000-0000-000000000001");
    ev.ts_ms = 1;
    ev.verdict = "unknown";
    assert_int_equal(events_xadd(&ev, NULL, &x, &why), 0);
    /* Every field is written, the unknown ones empty, so all entries share one layout. */
    assert_int_equal(x.argc, EVENTS_XADD_ARGC);
    assert_int_equal(parse_xadd(&x, &back, &why), 0);
    assert_events_equal(&ev, &back);
    assert_null(back.source);
    assert_false(back.has_location);
}

static void test_coordinates_roundtrip_exactly(void **state)
{
    (void)state;
    const double pts[][2] = {{0, 0},
                             {90, 180},
                             {-90, -180},
                             {1e-7, -1e-9},
                             {48.858844, 2.294351},
                             {-33.86882, 151.20929},
                             {0.1, 0.2},
                             {89.999999999999, -179.99999999999}};
    for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
        struct scan_event ev = full_event(), back;
        struct events_xadd x;
        ev.lat = pts[i][0];
        ev.lon = pts[i][1];
        assert_int_equal(events_xadd(&ev, NULL, &x, NULL), 0);
        assert_int_equal(parse_xadd(&x, &back, NULL), 0);
        assert_true(back.lat == ev.lat);
        assert_true(back.lon == ev.lon);
    }
}

static void test_builder_refuses_what_parser_would(void **state)
{
    (void)state;
    struct events_xadd x;
    const char *why;
    struct scan_event ev;

#define REFUSED(mutation)                                                                          \
    do {                                                                                           \
        ev = full_event();                                                                         \
        mutation;                                                                                  \
        why = NULL;                                                                                \
        assert_int_equal(events_xadd(&ev, NULL, &x, &why), -1);                                    \
        assert_non_null(why);                                                                      \
    } while (0)
    REFUSED(strcpy(ev.tag_id, "7C9E6679-7425-40DE-944B-E07FC1F90AE7"));
    REFUSED(strcpy(ev.tag_id, ""));
    REFUSED(strcpy(ev.tag_id, "not-a-uuid"));
    REFUSED(memset(ev.tag_id, 'a', sizeof(ev.tag_id))); /* no NUL at all */
    REFUSED(ev.ts_ms = 0);
    REFUSED(ev.ts_ms = -5);
    REFUSED(ev.verdict = NULL);
    REFUSED(ev.verdict = "fine");
    REFUSED(ev.score = 101);
    REFUSED(ev.score = -1);
    REFUSED(strcpy(ev.reasons, "Velocity"));
    REFUSED(strcpy(ev.reasons, "a,,b"));
    REFUSED(strcpy(ev.reasons, ",a"));
    REFUSED(strcpy(ev.reasons, "a,"));
    REFUSED(strcpy(ev.reasons, "a b"));
    REFUSED(strcpy(ev.reasons, "abcdefghijklmnopqrstuvwxyz0123456")); /* 33 */
    REFUSED(strcpy(ev.ip_hash, "abc"));
    REFUSED(ev.ip_hash[0] = 'A');
    REFUSED(strcpy(ev.user_agent, "bad\xff"));
    REFUSED(strcpy(ev.user_agent, "line\nbreak"));
    REFUSED(ev.lat = 90.5);
    REFUSED(ev.lon = -180.01);
    REFUSED(ev.lat = NAN);
    REFUSED(ev.lon = INFINITY);
    REFUSED(ev.source = "redis");
    REFUSED(strcpy(ev.factory_id, "0F8FAD5B-D9CB-469F-A165-70867728950E"));
    REFUSED(strcpy(ev.batch_id, "x"));
    REFUSED(ev.first_scan = false); /* first_pending stays set */
    REFUSED(ev.first_ms = -1);
#undef REFUSED
    /* first_ms means nothing without a first scan: not written, not refused. */
    ev = full_event();
    ev.first_scan = ev.first_pending = false;
    struct scan_event back;
    assert_int_equal(events_xadd(&ev, NULL, &x, NULL), 0);
    assert_int_equal(events_parse(x.argv + 3, x.argvlen + 3, (size_t)x.argc - 3, &back, NULL), 0);
    assert_true(back.first_ms == 0);
    ev = full_event();
    ev.has_location = false;
    ev.lat = NAN; /* ignored without a location */
    assert_int_equal(events_xadd(&ev, NULL, &x, NULL), 0);
    assert_int_equal(events_xadd(NULL, NULL, &x, NULL), -1);
}

static void test_user_agent_is_cut_and_cleaned(void **state)
{
    (void)state;
    struct scan_event ev;
    char ua[1200];

    memset(&ev, 0, sizeof(ev));
    events_set_user_agent(&ev, NULL, 0);
    assert_string_equal(ev.user_agent, "");

    events_set_user_agent(&ev, "ok\x01\x7f\xff\xc3(\xe2\x82\xac\r\n", 12);
    /* Split in two so that the compiler sees no trigraph in "??(". */
    assert_string_equal(ev.user_agent, "ok????"
                                       "(\xe2\x82\xac??");

    /* Overlong forms and surrogates are not UTF-8 either. */
    events_set_user_agent(&ev, "\xc0\xaf\xed\xa0\x80", 5);
    assert_string_equal(ev.user_agent, "?????");

    /* A character that does not fit whole is dropped, never split. */
    memset(ua, 'a', EVENTS_UA_MAX - 1);
    memcpy(ua + EVENTS_UA_MAX - 1, "\xc3\xbc", 2);
    events_set_user_agent(&ev, ua, EVENTS_UA_MAX + 1);
    assert_int_equal(strlen(ev.user_agent), EVENTS_UA_MAX - 1);

    memset(ua, 'b', sizeof(ua));
    events_set_user_agent(&ev, ua, sizeof(ua));
    assert_int_equal(strlen(ev.user_agent), EVENTS_UA_MAX);

    /* Binary-safe: bytes after an embedded NUL are kept (the NUL becomes '?'). */
    events_set_user_agent(&ev, "a\0b", 3);
    assert_string_equal(ev.user_agent, "a?b");
}

/* A valid entry as items, to be broken one field at a time. */
struct entry {
    const char *items[40];
    size_t lens[40];
    size_t n;
};

static void entry_base(struct entry *e)
{
    /* clang-format off */
    static const char *base[] = {
        "v",             "1",
        "tag_id",        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "ts",            "1795860000123",
        "verdict",       "authentic",
        "score",         "0",
        "reasons",       "",
        "ip_hash",       "",
        "ua",            "curl/8.0",
        "lat",           "",
        "lon",           "",
        "source",        "database",
        "factory_id",    "",
        "batch_id",      "",
        "first_scan",    "0",
        "first_pending", "0",
        "first_ms",      "",
    };
    /* clang-format on */
    e->n = sizeof(base) / sizeof(base[0]);
    for (size_t i = 0; i < e->n; i++) {
        e->items[i] = base[i];
        e->lens[i] = strlen(base[i]);
    }
}

static void entry_set(struct entry *e, const char *field, const char *value, size_t len)
{
    for (size_t i = 0; i < e->n; i += 2) {
        if (strcmp(e->items[i], field) == 0) {
            e->items[i + 1] = value;
            e->lens[i + 1] = len;
            return;
        }
    }
    e->items[e->n] = field;
    e->lens[e->n++] = strlen(field);
    e->items[e->n] = value;
    e->lens[e->n++] = len;
}

static void entry_drop(struct entry *e, const char *field)
{
    for (size_t i = 0; i < e->n; i += 2) {
        if (strcmp(e->items[i], field) == 0) {
            memmove(&e->items[i], &e->items[i + 2], (e->n - i - 2) * sizeof(e->items[0]));
            memmove(&e->lens[i], &e->lens[i + 2], (e->n - i - 2) * sizeof(e->lens[0]));
            e->n -= 2;
            return;
        }
    }
    fail_msg("no field %s", field);
}

static int entry_parse(struct entry *e, struct scan_event *out, const char **why)
{
    *why = NULL;
    return events_parse(e->items, e->lens, e->n, out, why);
}

static void test_parser_accepts_variants(void **state)
{
    (void)state;
    struct entry e;
    struct scan_event ev;
    const char *why;

    entry_base(&e);
    assert_int_equal(entry_parse(&e, &ev, &why), 0);
    assert_string_equal(ev.verdict, "authentic");
    assert_string_equal(ev.source, "database");
    assert_string_equal(ev.user_agent, "curl/8.0");

    /* Any case for UUIDs, stored lower case; unknown fields ignored; optional ones absent. */
    entry_set(&e, "tag_id", "7C9E6679-7425-40DE-944B-E07FC1F90AE7", 36);
    entry_set(&e, "device", "something new", 13);
    entry_drop(&e, "reasons");
    entry_drop(&e, "ip_hash");
    entry_drop(&e, "ua");
    entry_drop(&e, "lat");
    entry_drop(&e, "lon");
    entry_drop(&e, "source");
    entry_drop(&e, "factory_id");
    entry_drop(&e, "batch_id");
    entry_drop(&e, "first_scan");
    entry_drop(&e, "first_pending");
    assert_int_equal(entry_parse(&e, &ev, &why), 0);
    assert_string_equal(ev.tag_id, "7c9e6679-7425-40de-944b-e07fc1f90ae7");
    assert_null(ev.source);
    assert_false(ev.has_location);
    assert_false(ev.first_scan);

    /* Fields in another order; numbers in exponent form; the largest score. */
    entry_base(&e);
    const char *tmp = e.items[2];
    e.items[2] = e.items[4];
    e.items[4] = tmp;
    size_t tl = e.lens[2];
    e.lens[2] = e.lens[4];
    e.lens[4] = tl;
    tmp = e.items[3];
    e.items[3] = e.items[5];
    e.items[5] = tmp;
    tl = e.lens[3];
    e.lens[3] = e.lens[5];
    e.lens[5] = tl;
    entry_set(&e, "lat", "1e-05", 5);
    entry_set(&e, "lon", "-1.5E1", 6);
    entry_set(&e, "score", "100", 3);
    assert_int_equal(entry_parse(&e, &ev, &why), 0);
    assert_true(ev.has_location);
    assert_true(ev.lat == 1e-05);
    assert_true(ev.lon == -15.0);
    assert_int_equal(ev.score, 100);
}

static void test_parser_refuses_malformed_entries(void **state)
{
    (void)state;
    struct entry e;
    struct scan_event ev;
    const char *why;
    char long_ua[EVENTS_UA_MAX + 2];
    memset(long_ua, 'x', sizeof(long_ua));

#define BAD_SET(field, value, len)                                                                 \
    do {                                                                                           \
        entry_base(&e);                                                                            \
        entry_set(&e, field, value, len);                                                          \
        assert_int_equal(entry_parse(&e, &ev, &why), -1);                                          \
        assert_non_null(why);                                                                      \
    } while (0)
#define BAD(value) BAD_SET(field_, value, strlen(value))
    const char *field_;
    field_ = "v";
    BAD("2");
    BAD("");
    BAD("1 ");
    field_ = "tag_id";
    BAD("");
    BAD("{7c9e6679-7425-40de-944b-e07fc1f90ae7}");
    BAD("7c9e6679742540de944be07fc1f90ae7");
    field_ = "ts";
    BAD("0");
    BAD("-1");
    BAD("12a");
    BAD(" 1");
    BAD("01");
    BAD("1e3");
    BAD("99999999999999999999999");
    BAD("");
    field_ = "verdict";
    BAD("AUTHENTIC");
    BAD("ok");
    BAD("");
    field_ = "score";
    BAD("101");
    BAD("-1");
    BAD("");
    BAD("1.5");
    BAD("+5");
    field_ = "reasons";
    BAD("a b");
    BAD("a,,b");
    BAD("Velocity");
    field_ = "ip_hash";
    BAD("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    BAD("9f86d081");
    field_ = "ua";
    BAD("bad\xff");
    BAD("tab\tis a control");
    BAD_SET("ua", "nul\0inside", 10);
    BAD_SET("ua", long_ua, EVENTS_UA_MAX + 1);
    field_ = "lat";
    BAD("48.8");            /* without lon */
    BAD_SET("lon", "1", 1); /* without lat */
    entry_set(&e, "lat", "90.5", 4);
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    field_ = "source";
    BAD("redis");
    field_ = "factory_id";
    BAD("nope");
    field_ = "batch_id";
    BAD("7c9e6679-7425-40de-944b-e07fc1f90ae");
    field_ = "first_scan";
    BAD("2");
    BAD("true");
    BAD("");
    field_ = "first_pending";
    BAD("1"); /* without first_scan */
    field_ = "first_ms";
    BAD("5"); /* without first_scan */
    entry_set(&e, "first_scan", "1", 1);
    entry_set(&e, "first_ms", "0", 1);
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    entry_set(&e, "first_ms", "-5", 2);
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    entry_set(&e, "first_ms", "5x", 2);
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    entry_set(&e, "first_ms", "5", 1);
    assert_int_equal(entry_parse(&e, &ev, &why), 0);
    assert_true(ev.first_ms == 5);
#undef BAD
#undef BAD_SET

    const char *coords[] = {"nan", "inf", "-inf", "0x1p3", "181",  " 1",
                            "1 ",  "",    "1..2", "--1",   "1e999"};
    for (size_t i = 0; i < sizeof(coords) / sizeof(coords[0]); i++) {
        entry_base(&e);
        entry_set(&e, "lat", coords[i], strlen(coords[i]));
        entry_set(&e, "lon", "2", 1);
        assert_int_equal(entry_parse(&e, &ev, &why), -1);
        entry_base(&e);
        entry_set(&e, "lat", "2", 1);
        entry_set(&e, "lon", coords[i], strlen(coords[i]));
        assert_int_equal(entry_parse(&e, &ev, &why), -1);
    }

    /* Required fields missing. */
    const char *required[] = {"v", "tag_id", "ts", "verdict", "score"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        entry_base(&e);
        entry_drop(&e, required[i]);
        assert_int_equal(entry_parse(&e, &ev, &why), -1);
        assert_non_null(why);
    }

    /* A duplicate field, an odd count, nothing at all, NULL items. */
    entry_base(&e);
    e.items[e.n] = "score";
    e.lens[e.n++] = 5;
    e.items[e.n] = "1";
    e.lens[e.n++] = 1;
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    assert_string_equal(why, "a field appears twice");
    entry_base(&e);
    e.n--;
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    assert_int_equal(events_parse(NULL, NULL, 0, &ev, &why), -1);
    entry_base(&e);
    e.items[3] = NULL;
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    assert_int_equal(events_parse(e.items, e.lens, e.n, NULL, &why), -1);

    /* Field names are compared by length: "v" followed by a NUL and more is another field. */
    entry_base(&e);
    e.items[0] = "v\0x";
    e.lens[0] = 3;
    assert_int_equal(entry_parse(&e, &ev, &why), -1);
    assert_string_equal(why, "no version field v");
}

static void test_verdict_lookup(void **state)
{
    (void)state;
    assert_string_equal(events_verdict("revoked", 7), "revoked");
    assert_null(events_verdict("revoke", 6));
    assert_null(events_verdict("revokedx", 8));
    assert_null(events_verdict(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_full_event),
        cmocka_unit_test(test_roundtrip_minimal_event),
        cmocka_unit_test(test_coordinates_roundtrip_exactly),
        cmocka_unit_test(test_builder_refuses_what_parser_would),
        cmocka_unit_test(test_user_agent_is_cut_and_cleaned),
        cmocka_unit_test(test_parser_accepts_variants),
        cmocka_unit_test(test_parser_refuses_malformed_entries),
        cmocka_unit_test(test_verdict_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
