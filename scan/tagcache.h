/*
 * tagcache: the scan path's Redis side. One Lua script answers a cache hit in one round
 * trip: the tag's stored data, whether this scan is its first (decided atomically, so 50
 * concurrent first scans give exactly one "first"), whether its batch was recalled, and the
 * anti-fraud state of the tag and of the client. Keys live under "tp:"; see
 * docs/ARCHITECTURE.md for the layout.
 */
#ifndef TAGPROOF_TAGCACHE_H
#define TAGPROOF_TAGCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define TAGCACHE_ID_LEN 36

/*
 * Windows and bounds of the rule state, from the rules configuration. The state keeps the
 * last velocity_max + 1 counted scans and clone_max + 1 clients of a tag: the rules only ask
 * whether a count is above its maximum, which that answers exactly.
 */
struct tagcache_windows {
    unsigned dedup_s;      /* repeat scans by one client within it count once */
    unsigned velocity_s;   /* scans of one tag */
    unsigned velocity_max; /* velocity fires above it */
    unsigned clone_s;      /* distinct clients of one tag */
    unsigned clone_max;    /* clone_spread fires above it */
    unsigned travel_s;     /* how long the last located scan is kept */
    unsigned enum_s;       /* unknown tags asked by one client */
};

/* What the lookup script found. Strings point into the reply: borrowed while it lives. */
struct tagcache_hit {
    bool found;
    const char *info; /* JSON: {"product":{...},"batch":{...},"factory":{...}} */
    size_t info_len;
    const char *batch_id;
    int64_t first_ms; /* first scan time, ms since the epoch */
    bool first_scan;  /* this scan set first_ms */
    bool revoked;
    bool repeat;   /* same client within the dedup window: counted once */
    long velocity; /* counted scans in the window, exact up to velocity_max + 1 */
    long clients;  /* distinct clients in the window, exact up to clone_max + 1 */
    long client_unknown;
    bool has_prev;
    double prev_lat, prev_lon;
    int64_t prev_ms;
    int64_t now_ms; /* the time the script used: the caller's now_ms */
    long scan_count;
    /*
     * The anchoring state: the tag's leaf index (-1 when the entry has none) and the newest
     * confirmed anchor's checkpoint size and ledger reference (0 and NULL when tp:anchor is
     * absent or malformed). Whether the leaf is covered is for the caller to judge.
     */
    int64_t leaf_index;
    int64_t anchor_size;
    const char *anchor_ref;
    size_t anchor_ref_len;
};

/* The scripts' SHA-1s for EVALSHA (computed once, static strings). */
const char *tagcache_lookup_sha(void);
const char *tagcache_lookup_script(void);
const char *tagcache_unknown_sha(void);
const char *tagcache_unknown_script(void);

/*
 * The arguments every call of the scripts shares (windows and bounds as the scripts want
 * them), formatted once: tagcache_consts_init before the first call, then read-only.
 */
enum {
    TC_DEDUP_S,
    TC_VELOCITY_MS,
    TC_VELOCITY_KEEP,
    TC_CLONE_MS,
    TC_CLONE_KEEP,
    TC_TRAVEL_MS,
    TC_STATE_MS,
    TC_ENUM_MS,
    TC_COUNT
};
struct tagcache_consts {
    const char *argv[TC_COUNT];
    size_t argvlen[TC_COUNT];
    char buf[TC_COUNT * 24];
};
void tagcache_consts_init(struct tagcache_consts *c, const struct tagcache_windows *w);

/*
 * Argument vectors for EVALSHA of the lookup and unknown scripts, at the caller's clock
 * now_ms (Unix ms). buf holds the key and the formatted numbers; argv/argvlen point into it,
 * into c and into the given strings (borrowed). Returns argc.
 */
#define TAGCACHE_MAX_ARGS 24
struct tagcache_args {
    const char *argv[TAGCACHE_MAX_ARGS];
    size_t argvlen[TAGCACHE_MAX_ARGS];
    char buf[160];
};
int tagcache_lookup_args(struct tagcache_args *a, const struct tagcache_consts *c,
                         const char *tag_id, const char *client, bool has_loc, double lat,
                         double lon, int64_t now_ms);
int tagcache_unknown_args(struct tagcache_args *a, const struct tagcache_consts *c,
                          const char *client, int64_t now_ms);

/* Parses the lookup script's reply; 0, or -1 when it is not the expected shape. */
int tagcache_parse_lookup(const redisReply *r, struct tagcache_hit *out);

/*
 * Arguments of the HSET that fills the cache from the database (then EXPIRE separately).
 * first_ms 0 leaves the first-scan field unset, leaf_index < 0 the leaf-index field.
 */
struct tagcache_fill {
    const char *argv[10];
    size_t argvlen[10];
    char key[48];
    char first[24];
    char leaf[24];
};
int tagcache_fill_args(struct tagcache_fill *f, const char *tag_id, const char *info,
                       const char *batch_id, int64_t first_ms, int64_t leaf_index);

/* Key names, written into out (at least 64 bytes). */
void tagcache_revoked_key(char *out, size_t len, const char *batch_id);
void tagcache_tag_key(char *out, size_t len, const char *tag_id);

#endif
