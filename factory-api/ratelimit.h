/*
 * ratelimit: GCRA (the generic cell rate algorithm) in Redis — one Lua script that reads the
 * server's clock, so several factory-API processes share one limit per key and no client
 * clock matters; one call may check several limits at once. A key holds one number, its theoretical
 * arrival time, and expires when the key is idle again.
 */
#ifndef TAGPROOF_RATELIMIT_H
#define TAGPROOF_RATELIMIT_H

struct redis_client;

enum ratelimit_verdict {
    RATELIMIT_ALLOW,
    RATELIMIT_DENY,  /* retry_after_s says when one more request would be allowed */
    RATELIMIT_ERROR, /* Redis did not answer: the caller allows and counts it */
};

typedef void (*ratelimit_fn)(void *arg, enum ratelimit_verdict v, int retry_after_s);

struct ratelimit_rule {
    int per_minute; /* sustained rate */
    int burst;      /* requests allowed at once after an idle period (>= 1) */
};

/*
 * Asks whether one more request under key (e.g. "tp:rl:k:<key id>") is within rule; with
 * charge it is also counted when allowed, without it only looked at (the failed-login check
 * before authentication). cb is called exactly once, from the loop. 0, or -1 (cb never called).
 */
int ratelimit_check(struct redis_client *redis, const char *key, const struct ratelimit_rule *rule,
                    int charge, ratelimit_fn cb, void *arg);

/* One limit of ratelimit_check_many: as ratelimit_check's key, rule and charge. */
struct ratelimit_ask {
    const char *key;
    const struct ratelimit_rule *rule;
    int charge;
};

#define RATELIMIT_MAX_ASKS 4

/* which: the index of the limit that denied (RATELIMIT_DENY), else -1. */
typedef void (*ratelimit_many_fn)(void *arg, enum ratelimit_verdict v, int retry_after_s,
                                  int which);

/*
 * Several limits in one round trip (one script run, so atomically): read in order, the first
 * that denies decides and nothing is counted; when all allow, each with charge is counted.
 * n is 1 to RATELIMIT_MAX_ASKS. cb is called exactly once, from the loop. 0, or -1.
 */
int ratelimit_check_many(struct redis_client *redis, const struct ratelimit_ask *asks, int n,
                         ratelimit_many_fn cb, void *arg);

/* The script's text, for tests and for loading it. */
const char *ratelimit_script(void);

#endif
