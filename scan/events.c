/*
 * events: scan events to and from Redis Stream entries. The builder and the parser share one
 * validation, so an entry the scan path writes is always one the sink accepts, and anything
 * else in the stream (an older or newer writer, a hand-made XADD) is refused field by field.
 */
#include "events.h"
#include "utf8.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fields in the order the builder writes them; the indexes name them below. */
enum field {
    F_V,
    F_TAG_ID,
    F_TS,
    F_VERDICT,
    F_SCORE,
    F_REASONS,
    F_IP_HASH,
    F_UA,
    F_LAT,
    F_LON,
    F_SOURCE,
    F_FACTORY_ID,
    F_BATCH_ID,
    F_FIRST_SCAN,
    F_FIRST_PENDING,
    F_FIRST_MS,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "v",   "tag_id", "ts",     "verdict",    "score",    "reasons",    "ip_hash",       "ua",
    "lat", "lon",    "source", "factory_id", "batch_id", "first_scan", "first_pending", "first_ms",
};

_Static_assert(F_COUNT == EVENTS_FIELDS, "EVENTS_FIELDS must count the fields");

/* strlen of each field name. */
static const size_t field_lens[F_COUNT] = {1, 6, 2, 7, 5, 7, 7, 2, 3, 3, 6, 10, 8, 10, 13, 8};

static const char *const verdicts[] = {"authentic", "suspicious", "revoked", "unknown"};
static const char *const sources[] = {"cache", "database"};

static const char *static_match(const char *const *set, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(set[i]) == len && memcmp(set[i], s, len) == 0)
            return set[i];
    return NULL;
}

const char *events_verdict(const char *s, size_t len)
{
    if (s == NULL)
        return NULL;
    return static_match(verdicts, sizeof(verdicts) / sizeof(verdicts[0]), s, len);
}

static const char *events_source(const char *s, size_t len)
{
    return static_match(sources, sizeof(sources) / sizeof(sources[0]), s, len);
}

static bool is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Valid UTF-8 without control characters (NUL included). */
static bool text_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char_len(p + i, len - i);
        if (n == 0 || (n == 1 && is_control(p[i])))
            return false;
        i += n;
    }
    return true;
}

void events_set_user_agent(struct scan_event *ev, const char *ua, size_t len)
{
    const unsigned char *p = (const unsigned char *)ua;
    size_t out = 0;

    for (size_t i = 0; ua != NULL && i < len;) {
        size_t n = utf8_char_len(p + i, len - i);
        if (n == 0 || (n == 1 && is_control(p[i]))) {
            if (out + 1 > EVENTS_UA_MAX)
                break;
            ev->user_agent[out++] = '?';
            i++;
            continue;
        }
        if (out + n > EVENTS_UA_MAX)
            break;
        memcpy(ev->user_agent + out, p + i, n);
        out += n;
        i += n;
    }
    ev->user_agent[out] = '\0';
}

/* Reason ids: [a-z0-9_]{1,32} separated by single commas, or nothing at all. */
static bool reasons_ok(const char *s, size_t len)
{
    size_t run = 0;
    if (len > EVENTS_REASONS_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == ',') {
            if (run == 0 || i + 1 == len)
                return false;
            run = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
            if (++run > EVENTS_REASON_ID_MAX)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static bool ip_hash_ok(const char *s, size_t len)
{
    if (len == 0)
        return true;
    if (len != EVENTS_IP_HASH_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* An empty string, or a UUID already in lower-case canonical form. */
static bool uuid_or_empty_ok(const char *s)
{
    char canon[UUID_STR_LEN + 1];
    size_t len = strlen(s);
    if (len == 0)
        return true;
    return uuid_canonical(s, len, canon) == 0 && memcmp(canon, s, len) == 0;
}

/*
 * What both directions require of an event. Strings are checked for their NUL within the
 * array, so a struct that was never NUL-terminated is refused rather than overrun.
 */
static int event_check(const struct scan_event *ev, const char **why)
{
#define CHECK(cond, reason)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            *why = (reason);                                                                       \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
    CHECK(memchr(ev->tag_id, '\0', sizeof(ev->tag_id)) != NULL && ev->tag_id[0] != '\0' &&
              uuid_or_empty_ok(ev->tag_id),
          "tag_id is not a lower-case UUID");
    CHECK(ev->ts_ms > 0, "ts is not a positive millisecond time");
    CHECK(ev->verdict != NULL && events_verdict(ev->verdict, strlen(ev->verdict)) != NULL,
          "verdict is not authentic, suspicious, revoked or unknown");
    CHECK(ev->score >= 0 && ev->score <= EVENTS_SCORE_MAX, "score is not within 0..100");
    CHECK(memchr(ev->reasons, '\0', sizeof(ev->reasons)) != NULL &&
              reasons_ok(ev->reasons, strlen(ev->reasons)),
          "reasons is not a comma-separated list of reason ids");
    CHECK(memchr(ev->ip_hash, '\0', sizeof(ev->ip_hash)) != NULL &&
              ip_hash_ok(ev->ip_hash, strlen(ev->ip_hash)),
          "ip_hash is not 64 lower-case hex digits");
    CHECK(memchr(ev->user_agent, '\0', sizeof(ev->user_agent)) != NULL &&
              text_ok(ev->user_agent, strlen(ev->user_agent)),
          "ua is not UTF-8 text without control characters");
    if (ev->has_location) {
        CHECK(isfinite(ev->lat) && ev->lat >= -90.0 && ev->lat <= 90.0,
              "lat is not within -90..90");
        CHECK(isfinite(ev->lon) && ev->lon >= -180.0 && ev->lon <= 180.0,
              "lon is not within -180..180");
    }
    CHECK(ev->source == NULL || events_source(ev->source, strlen(ev->source)) != NULL,
          "source is not cache or database");
    CHECK(memchr(ev->factory_id, '\0', sizeof(ev->factory_id)) != NULL &&
              uuid_or_empty_ok(ev->factory_id),
          "factory_id is not a lower-case UUID");
    CHECK(memchr(ev->batch_id, '\0', sizeof(ev->batch_id)) != NULL &&
              uuid_or_empty_ok(ev->batch_id),
          "batch_id is not a lower-case UUID");
    CHECK(!ev->first_pending || ev->first_scan, "first_pending without first_scan");
    CHECK(ev->first_ms >= 0, "first_ms is negative");
#undef CHECK
    return 0;
}

/* The shortest decimal form that reads back as exactly v. */
static void format_double(char *buf, size_t size, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

int events_xadd(const struct scan_event *ev, const char *stream, struct events_xadd *out,
                const char **why)
{
    const char *dummy;
    const char *vals[F_COUNT];
    size_t lens[F_COUNT];

    if (why == NULL)
        why = &dummy;
    if (ev == NULL || out == NULL) {
        *why = "no event";
        return -1;
    }
    if (event_check(ev, why) != 0)
        return -1;
    if (stream == NULL)
        stream = EVENTS_STREAM_KEY;

    snprintf(out->num[0], sizeof(out->num[0]), "%" PRId64, ev->ts_ms);
    snprintf(out->num[1], sizeof(out->num[1]), "%d", ev->score);
    out->num[2][0] = out->num[3][0] = out->num[4][0] = '\0';
    /* Meaningful only for a first scan; a writer may fill it for every scan. */
    if (ev->first_scan && ev->first_ms > 0)
        snprintf(out->num[4], sizeof(out->num[4]), "%" PRId64, ev->first_ms);
    if (ev->has_location) {
        format_double(out->num[2], sizeof(out->num[2]), ev->lat);
        format_double(out->num[3], sizeof(out->num[3]), ev->lon);
    }
    vals[F_V] = EVENTS_VERSION;
    vals[F_TAG_ID] = ev->tag_id;
    vals[F_TS] = out->num[0];
    vals[F_VERDICT] = ev->verdict;
    vals[F_SCORE] = out->num[1];
    vals[F_REASONS] = ev->reasons;
    vals[F_IP_HASH] = ev->ip_hash;
    vals[F_UA] = ev->user_agent;
    vals[F_LAT] = out->num[2];
    vals[F_LON] = out->num[3];
    vals[F_SOURCE] = ev->source != NULL ? ev->source : "";
    vals[F_FACTORY_ID] = ev->factory_id;
    vals[F_BATCH_ID] = ev->batch_id;
    vals[F_FIRST_SCAN] = ev->first_scan ? "1" : "0";
    vals[F_FIRST_PENDING] = ev->first_pending ? "1" : "0";
    vals[F_FIRST_MS] = out->num[4];
    for (int i = 0; i < F_COUNT; i++)
        lens[i] = strlen(vals[i]);

    /*
     * Every field is written, empty when unknown: entries with the same fields in the same
     * order let Redis store the field names once per stream node instead of once per entry.
     */
    out->argc = 0;
    out->argv[out->argc] = "XADD";
    out->argvlen[out->argc++] = 4;
    out->argv[out->argc] = stream;
    out->argvlen[out->argc++] = strlen(stream);
    out->argv[out->argc] = "*";
    out->argvlen[out->argc++] = 1;
    for (int i = 0; i < F_COUNT; i++) {
        assert(field_lens[i] == strlen(field_names[i]));
        out->argv[out->argc] = field_names[i];
        out->argvlen[out->argc++] = field_lens[i];
        out->argv[out->argc] = vals[i];
        out->argvlen[out->argc++] = lens[i];
    }
    return 0;
}

/* A non-negative decimal without sign or leading zeros, at most max. */
static int parse_uint(const char *s, size_t len, int64_t max, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 18 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* A decimal number (sign, digits, point, exponent): no hex, no inf or nan, no spaces. */
static int parse_coord(const char *s, size_t len, double *out)
{
    char buf[40];
    char *end = NULL;
    if (len == 0 || len >= sizeof(buf))
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'))
            return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    *out = strtod(buf, &end);
    if (end != buf + len || !isfinite(*out))
        return -1;
    return 0;
}

static int parse_flag(const char *s, size_t len, bool *out)
{
    if (len != 1 || (s[0] != '0' && s[0] != '1'))
        return -1;
    *out = s[0] == '1';
    return 0;
}

/* Copies len bytes and a NUL into dst of size bytes; -1 when they do not fit. */
static int copy_str(char *dst, size_t size, const char *s, size_t len)
{
    if (len >= size)
        return -1;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

int events_parse(const char *const *items, const size_t *lens, size_t n, struct scan_event *out,
                 const char **why)
{
    const char *dummy;
    const char *val[F_COUNT] = {0};
    size_t vlen[F_COUNT] = {0};
    bool seen[F_COUNT] = {false};
    int64_t num;

    if (why == NULL)
        why = &dummy;
    if (out == NULL || (n > 0 && (items == NULL || lens == NULL))) {
        *why = "no entry";
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (n == 0 || n % 2 != 0) {
        *why = "fields and values do not pair up";
        return -1;
    }
    for (size_t i = 0; i < n; i += 2) {
        if (items[i] == NULL || items[i + 1] == NULL) {
            *why = "a field or value is missing";
            return -1;
        }
        /* Entries of this build have the fields in the builder's order: look there first. */
        size_t at = i / 2;
        int from = at < F_COUNT && lens[i] == field_lens[at] &&
                           memcmp(field_names[at], items[i], lens[i]) == 0
                       ? (int)at
                       : 0;
        for (int f = from; f < F_COUNT; f++) {
            if (field_lens[f] != lens[i] || memcmp(field_names[f], items[i], lens[i]))
                continue;
            if (seen[f]) {
                *why = "a field appears twice";
                return -1;
            }
            seen[f] = true;
            val[f] = items[i + 1];
            vlen[f] = lens[i + 1];
            break;
        }
        /* Unknown fields are a newer writer's additions: ignored. */
    }

#define REQUIRE(cond, reason)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            *why = (reason);                                                                       \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
    REQUIRE(seen[F_V], "no version field v");
    REQUIRE(vlen[F_V] == strlen(EVENTS_VERSION) && memcmp(val[F_V], EVENTS_VERSION, vlen[F_V]) == 0,
            "unsupported version");
    REQUIRE(seen[F_TAG_ID] && uuid_canonical(val[F_TAG_ID], vlen[F_TAG_ID], out->tag_id) == 0,
            "tag_id is not a UUID");
    REQUIRE(seen[F_TS] && parse_uint(val[F_TS], vlen[F_TS], INT64_C(999999999999999), &num) == 0 &&
                num > 0,
            "ts is not a positive millisecond time");
    out->ts_ms = num;
    REQUIRE(seen[F_VERDICT] &&
                (out->verdict = events_verdict(val[F_VERDICT], vlen[F_VERDICT])) != NULL,
            "verdict is not authentic, suspicious, revoked or unknown");
    REQUIRE(seen[F_SCORE] && parse_uint(val[F_SCORE], vlen[F_SCORE], EVENTS_SCORE_MAX, &num) == 0,
            "score is not within 0..100");
    out->score = (int)num;

    /* Optional fields: absent and empty mean the same. */
    REQUIRE(!seen[F_REASONS] ||
                copy_str(out->reasons, sizeof(out->reasons), val[F_REASONS], vlen[F_REASONS]) == 0,
            "reasons is too long");
    REQUIRE(!seen[F_IP_HASH] ||
                copy_str(out->ip_hash, sizeof(out->ip_hash), val[F_IP_HASH], vlen[F_IP_HASH]) == 0,
            "ip_hash is not 64 lower-case hex digits");
    REQUIRE(!seen[F_UA] ||
                copy_str(out->user_agent, sizeof(out->user_agent), val[F_UA], vlen[F_UA]) == 0,
            "ua is too long");
    /* copy_str stops at nothing: an embedded NUL would hide the rest from event_check. */
    REQUIRE(!seen[F_UA] || memchr(val[F_UA], '\0', vlen[F_UA]) == NULL,
            "ua is not UTF-8 text without control characters");
    REQUIRE(!seen[F_REASONS] || memchr(val[F_REASONS], '\0', vlen[F_REASONS]) == NULL,
            "reasons is not a comma-separated list of reason ids");
    REQUIRE(!seen[F_IP_HASH] || memchr(val[F_IP_HASH], '\0', vlen[F_IP_HASH]) == NULL,
            "ip_hash is not 64 lower-case hex digits");

    bool has_lat = seen[F_LAT] && vlen[F_LAT] > 0, has_lon = seen[F_LON] && vlen[F_LON] > 0;
    REQUIRE(has_lat == has_lon, "lat and lon come together or not at all");
    if (has_lat) {
        REQUIRE(parse_coord(val[F_LAT], vlen[F_LAT], &out->lat) == 0, "lat is not a number");
        REQUIRE(parse_coord(val[F_LON], vlen[F_LON], &out->lon) == 0, "lon is not a number");
        out->has_location = true;
    }
    if (seen[F_SOURCE] && vlen[F_SOURCE] > 0)
        REQUIRE((out->source = events_source(val[F_SOURCE], vlen[F_SOURCE])) != NULL,
                "source is not cache or database");
    if (seen[F_FACTORY_ID] && vlen[F_FACTORY_ID] > 0)
        REQUIRE(uuid_canonical(val[F_FACTORY_ID], vlen[F_FACTORY_ID], out->factory_id) == 0,
                "factory_id is not a UUID");
    if (seen[F_BATCH_ID] && vlen[F_BATCH_ID] > 0)
        REQUIRE(uuid_canonical(val[F_BATCH_ID], vlen[F_BATCH_ID], out->batch_id) == 0,
                "batch_id is not a UUID");
    REQUIRE(!seen[F_FIRST_SCAN] ||
                parse_flag(val[F_FIRST_SCAN], vlen[F_FIRST_SCAN], &out->first_scan) == 0,
            "first_scan is not 0 or 1");
    REQUIRE(!seen[F_FIRST_PENDING] ||
                parse_flag(val[F_FIRST_PENDING], vlen[F_FIRST_PENDING], &out->first_pending) == 0,
            "first_pending is not 0 or 1");
    if (seen[F_FIRST_MS] && vlen[F_FIRST_MS] > 0) {
        REQUIRE(parse_uint(val[F_FIRST_MS], vlen[F_FIRST_MS], INT64_C(999999999999999), &num) ==
                        0 &&
                    num > 0,
                "first_ms is not a positive millisecond time");
        out->first_ms = num;
        REQUIRE(out->first_scan, "first_ms without first_scan");
    }
#undef REQUIRE
    return event_check(out, why);
}
