/*
 * jwks: the live set of keys trusted for tokens (SPEC §6) — pinned keys (the service's own),
 * plus the configured JWKS file or URL, kept fresh by one background thread per process.
 *
 * Nothing here blocks an event loop. The refresh thread does all file and network I/O
 * (libcurl's easy interface, with its own deadlines) and publishes each new key set by
 * swapping a reference-counted, immutable jwt_keyset under a mutex held for a few
 * instructions; request handlers take a reference to the current set and verify against it.
 * A token naming an unknown kid asks the thread for a refetch, at most one per min_refetch_s
 * (30 s), and a handler that wants to hold its request until that refetch is done registers a
 * callback that runs on its own loop (jwks_refresh_wait).
 *
 * Failing closed: a fetch that fails or returns anything malformed changes nothing (the last
 * good keys stay in use) and is retried after min_refetch_s rather than refresh_interval_s;
 * keys not confirmed by a successful fetch for max_stale_s are dropped; with no keys every
 * token is refused. HTTP is allowed only to a loopback address,
 * also after name resolution; otherwise HTTPS with certificate verification; no redirects.
 */
#ifndef TAGPROOF_JWKS_H
#define TAGPROOF_JWKS_H

#include <stddef.h>
#include <stdint.h>

#include "jwt.h"

struct event_base;

struct jwks;
struct jwks_wait;

/* Settings; a zero member takes the default in brackets. Strings are copied by jwks_new. */
struct jwks_config {
    const char *file;            /* a JWKS file, or NULL */
    const char *url;             /* a JWKS URL, or NULL; not together with file */
    const char *pinned_json;     /* a JWKS trusted always (jwt_signer_jwks_json), or NULL */
    unsigned refresh_interval_s; /* refetch this often even without unknown kids [300] */
    unsigned min_refetch_s;      /* unknown kids cause at most one fetch per [30] */
    unsigned max_stale_s;        /* drop fetched keys not confirmed for [86400] */
    unsigned timeout_ms;         /* a whole fetch, connecting included [5000] */
    size_t max_size;             /* bytes of a JWKS document [262144] */
};

/*
 * Checks the settings (a URL must be https, or http to a loopback host) and parses the
 * pinned keys; a file is read and parsed here, so that a bad file stops the program at
 * start. Blocking: call at start. NULL with a message in err.
 */
struct jwks *jwks_new(const struct jwks_config *cfg, char *err, size_t errlen);

/*
 * Starts the refresh thread; a URL is fetched at once. Without this call the keys are those
 * of jwks_new and never refresh. 0, or -1 with a message in err.
 */
int jwks_start(struct jwks *j, char *err, size_t errlen);

/*
 * Blocks until the first fetch of a URL has finished or timeout_ms passed; 0 when keys from
 * the file or URL are loaded, -1 otherwise. For start-up and tests, never on a loop.
 */
int jwks_wait_ready(struct jwks *j, unsigned timeout_ms);

/*
 * A reference to the current key set, which the caller drops with jwt_keyset_unref; NULL when
 * no key is trusted (jwt_verify takes NULL and refuses every token). *generation (may be
 * NULL) identifies the set for jwks_refresh_wait. Any thread; only a short mutex is taken.
 */
struct jwt_keyset *jwks_snapshot(struct jwks *j, uint64_t *generation);

/*
 * jwt_verify against the current key set. When the token's kid is unknown this also asks for
 * a refetch (jwks_refresh_request) and still answers JWT_UNKNOWN_KEY: call jwks_refresh_wait
 * with *generation (may be NULL) to retry once the refetch is done.
 */
enum jwt_result jwks_verify(struct jwks *j, const struct jwt_policy *policy, const char *token,
                            size_t len, int64_t now_s, struct jwt_claims *out, const char **why,
                            uint64_t *generation);

/*
 * Asks the refresh thread for a fetch without waiting: 1 when one is queued or under way,
 * 0 when none will happen (the last began less than min_refetch_s ago, no file or URL, or
 * the thread is not started). Any thread.
 */
int jwks_refresh_request(struct jwks *j);

/*
 * For a handler that saw JWT_UNKNOWN_KEY against the key set of seen_generation: requests a
 * refetch and arranges for cb(arg) to run once, on base's loop thread, when a fetch finishes
 * (successful or not), or at once when the key set has already changed since
 * seen_generation. The handler then verifies again, and answers with that result: waiting a
 * second time is pointless within min_refetch_s. NULL when no fetch will happen (answer 401
 * now). The returned handle is freed by the library after cb runs; until then
 * jwks_wait_cancel (on base's thread) drops it without calling cb. Needs libevent's thread
 * support (evthread_use_pthreads() before base was created). Call from base's thread.
 */
struct jwks_wait *jwks_refresh_wait(struct jwks *j, uint64_t seen_generation,
                                    struct event_base *base, void (*cb)(void *arg), void *arg);

void jwks_wait_cancel(struct jwks_wait *w);

struct jwks_stats {
    uint64_t generation; /* changes with each new key set */
    size_t keys;         /* in the current set, pinned ones included */
    uint64_t fetches;    /* finished fetches of the file or URL */
    uint64_t failures;   /* of which failed */
    int64_t age_s;       /* since the last successful fetch; -1 before the first */
};

void jwks_get_stats(struct jwks *j, struct jwks_stats *out);

/*
 * Stops the refresh thread (an in-flight fetch ends within timeout_ms) and frees everything.
 * Every wait must have run or been cancelled. NULL is fine.
 */
void jwks_free(struct jwks *j);

#endif
