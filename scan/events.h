/*
 * events: the one definition of a scan event (SPEC §5) and its form in the Redis Stream
 * "tagproof:scan-events" — the XADD argument vector the scan path sends, and the strict parser
 * the sink runs on every stream entry. Pure C: no I/O, no clock.
 */
#ifndef TAGPROOF_EVENTS_H
#define TAGPROOF_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

#define EVENTS_STREAM_KEY "tagproof:scan-events"

/*
 * The entry format's version, written as the field "v". An entry with another version is
 * malformed to this build; fields this build does not know are ignored, so a newer scan path
 * may add fields without a new version.
 */
#define EVENTS_VERSION "1"

#define EVENTS_REASONS_MAX 127 /* bytes of the comma-separated reason ids */
#define EVENTS_REASON_ID_MAX 32
#define EVENTS_UA_MAX 512 /* bytes of user agent kept; longer ones are cut */
#define EVENTS_IP_HASH_LEN 64
#define EVENTS_SCORE_MAX 100

/*
 * One scan. Every string is NUL-terminated and, once events_xadd() accepted it or
 * events_parse() produced it, valid UTF-8 without control characters. An empty string means
 * "not known" for the optional members.
 */
struct scan_event {
    char tag_id[UUID_STR_LEN + 1]; /* lower-case canonical UUID */
    int64_t ts_ms;                 /* when the scan was answered, Unix milliseconds (> 0) */
    const char *verdict;           /* static: "authentic", "suspicious", "revoked", "unknown" */
    int score;                     /* 0..100 */
    /* Reason ids as the JSON answer names them ("velocity,bot_ua"), "" for none. */
    char reasons[EVENTS_REASONS_MAX + 1];
    char ip_hash[EVENTS_IP_HASH_LEN + 1]; /* salted SHA-256 of the client IP, lower-case hex */
    char user_agent[EVENTS_UA_MAX + 1];   /* set it with events_set_user_agent() */
    bool has_location;
    double lat, lon;                   /* degrees, when has_location */
    const char *source;                /* static: "cache", "database", or NULL */
    char factory_id[UUID_STR_LEN + 1]; /* "" for an unknown tag */
    char batch_id[UUID_STR_LEN + 1];   /* "" for an unknown tag */
    bool first_scan;                   /* this scan was the tag's first */
    /*
     * The scan path could not record the first scan in PostgreSQL itself: the sink must set
     * tags.first_scanned_at. Implies first_scan. (The sink records every first scan
     * idempotently anyway; the flag tells operators which path did it.)
     */
    bool first_pending;
    /*
     * With first_scan: the first-scan time the scan path answered with (its Redis decided
     * it a moment before ts_ms), so that PostgreSQL records the very time the first scanner
     * was shown. 0: ts_ms. Not written without first_scan.
     */
    int64_t first_ms;
};

/* Field/value pairs the builder writes, always all of them and in one order. */
#define EVENTS_FIELDS 16
#define EVENTS_XADD_ARGC (3 + 2 * EVENTS_FIELDS)

/*
 * The argument vector of "XADD <stream> * field value ...", for redis_command(). argv points
 * into this struct and into the event given to events_xadd(): both must stay unchanged until
 * the command has been issued (redis_command copies its arguments).
 */
struct events_xadd {
    int argc;
    const char *argv[EVENTS_XADD_ARGC];
    size_t argvlen[EVENTS_XADD_ARGC];
    char num[5][32]; /* ts, score, lat, lon, first_ms as text */
};

/*
 * Copies a User-Agent header of len bytes into ev->user_agent the way the stream carries it:
 * cut to EVENTS_UA_MAX bytes on a character boundary, every byte that is not part of valid
 * UTF-8 and every control character replaced by '?'. ua may be NULL (an empty string).
 */
void events_set_user_agent(struct scan_event *ev, const char *ua, size_t len);

/*
 * Fills out for an XADD of ev to stream (NULL: EVENTS_STREAM_KEY); no MAXLEN: the sink trims
 * what it has stored. Checks ev as strictly as events_parse() will, so that the scan path
 * never writes an entry the sink would refuse. Returns 0, or -1 with a static reason in *why
 * (why may be NULL).
 */
int events_xadd(const struct scan_event *ev, const char *stream, struct events_xadd *out,
                const char **why);

/*
 * Parses a stream entry's field/value list: n items (fields and values alternating), item i
 * is lens[i] bytes at items[i] (binary-safe, need not be NUL-terminated). Fills *out, whose
 * strings are copies (nothing in out points into items). Returns 0, or -1 with a static
 * reason in *why (why may be NULL) for anything malformed: a missing, duplicate or invalid
 * field, or another version.
 */
int events_parse(const char *const *items, const size_t *lens, size_t n, struct scan_event *out,
                 const char **why);

/* The static verdict string equal to the len bytes at s, or NULL when s names none. */
const char *events_verdict(const char *s, size_t len);

#endif
