/*
 * ratelimit: the GCRA script and its calls (see ratelimit.h). The script is sent with EVALSHA
 * and loaded on NOSCRIPT (first use, or a Redis that restarted), then retried once.
 */
#include "ratelimit.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"

/*
 * KEYS[i] a limit's key; ARGV[3i-2..3i]: its emission interval (microseconds per request),
 * burst, charge (1/0). A request is allowed under a limit when, counted, the theoretical
 * arrival time would be at most burst intervals ahead of now. The limits are read in order and
 * the first that denies answers {0, ms until it would allow, i}, counting nothing; when all
 * allow, those with charge are counted and the answer is {1, 0, 0}. Times are kept in
 * microseconds, so that any rate up to a million a minute has an interval of its own (in
 * milliseconds, rates above 60,000 a minute truncated to no limit at all); they stay below
 * 2^53, exact in Lua's doubles.
 */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local new = {}\n"
    "for i = 1, #KEYS do\n"
    "  local interval, burst = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i]) or now)\n"
    "  if tat < now then tat = now end\n"
    "  new[i] = tat + interval\n"
    "  local allow_at = new[i] - interval * burst\n"
    "  if allow_at > now then return {0, math.ceil((allow_at - now) / 1000), i} end\n"
    "end\n"
    "for i = 1, #KEYS do\n"
    "  if ARGV[3 * i] == '1' then\n"
    "    redis.call('SET', KEYS[i], new[i], 'PX', math.ceil((new[i] - now) / 1000) + 1)\n"
    "  end\n"
    "end\n"
    "return {1, 0, 0}\n";

static char script_sha[41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void sha_init(void)
{
    unsigned char md[20];
    unsigned int n = 0;
    EVP_Digest(script, strlen(script), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++)
        snprintf(script_sha + 2 * i, 3, "%02x", md[i]);
}

const char *ratelimit_script(void)
{
    return script;
}

struct rl_call {
    struct redis_client *redis;
    ratelimit_fn cb;           /* ratelimit_check's, or */
    ratelimit_many_fn many_cb; /* ratelimit_check_many's */
    void *arg;
    int retried, n;
    char key[RATELIMIT_MAX_ASKS][160];
    char interval[RATELIMIT_MAX_ASKS][24], burst[RATELIMIT_MAX_ASKS][24];
    char charge[RATELIMIT_MAX_ASKS][2];
};

static int rl_send(struct rl_call *c);

static void ignore_reply(void *arg, enum redis_status st, const redisReply *r)
{
    (void)arg;
    (void)st;
    (void)r;
}

static void rl_answer(struct rl_call *c, enum ratelimit_verdict v, int retry_after_s, int which)
{
    if (c->many_cb != NULL)
        c->many_cb(c->arg, v, retry_after_s, which);
    else
        c->cb(c->arg, v, retry_after_s);
    free(c);
}

static void rl_reply(void *arg, enum redis_status st, const redisReply *r)
{
    struct rl_call *c = arg;

    if (st == REDIS_STATUS_ERROR_REPLY && !c->retried && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        c->retried = 1;
        redis_commandf(c->redis, 0, ignore_reply, NULL, "SCRIPT LOAD %s", script);
        if (rl_send(c) == 0)
            return;
    } else if (st == REDIS_STATUS_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
               r->element[0]->type == REDIS_REPLY_INTEGER &&
               r->element[1]->type == REDIS_REPLY_INTEGER &&
               r->element[2]->type == REDIS_REPLY_INTEGER && r->element[2]->integer >= 0 &&
               r->element[2]->integer <= c->n) {
        long long wait_ms = r->element[1]->integer;
        if (r->element[0]->integer == 1)
            rl_answer(c, RATELIMIT_ALLOW, 0, -1);
        else
            rl_answer(c, RATELIMIT_DENY, (int)((wait_ms + 999) / 1000),
                      (int)r->element[2]->integer - 1);
        return;
    }
    rl_answer(c, RATELIMIT_ERROR, 0, -1);
}

static int rl_send(struct rl_call *c)
{
    const char *argv[3 + 4 * RATELIMIT_MAX_ASKS] = {"EVALSHA", script_sha};
    char nkeys[4];
    int n = 3;

    snprintf(nkeys, sizeof(nkeys), "%d", c->n);
    argv[2] = nkeys;
    for (int i = 0; i < c->n; i++)
        argv[n++] = c->key[i];
    for (int i = 0; i < c->n; i++) {
        argv[n++] = c->interval[i];
        argv[n++] = c->burst[i];
        argv[n++] = c->charge[i];
    }
    return redis_command(c->redis, 0, rl_reply, c, n, argv, NULL);
}

static int rl_start(struct redis_client *redis, const struct ratelimit_ask *asks, int n,
                    ratelimit_fn cb, ratelimit_many_fn many_cb, void *arg)
{
    struct rl_call *c = NULL;

    if (redis == NULL || n < 1 || n > RATELIMIT_MAX_ASKS)
        return -1;
    for (int i = 0; i < n; i++)
        if (asks[i].key == NULL || asks[i].rule == NULL || asks[i].rule->per_minute <= 0 ||
            asks[i].rule->burst <= 0 || strlen(asks[i].key) >= sizeof(c->key[i]))
            return -1;
    pthread_once(&sha_once, sha_init);
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->redis = redis;
    c->cb = cb;
    c->many_cb = many_cb;
    c->arg = arg;
    c->n = n;
    for (int i = 0; i < n; i++) {
        strcpy(c->key[i], asks[i].key);
        snprintf(c->interval[i], sizeof(c->interval[i]), "%d", 60000000 / asks[i].rule->per_minute);
        snprintf(c->burst[i], sizeof(c->burst[i]), "%d", asks[i].rule->burst);
        strcpy(c->charge[i], asks[i].charge ? "1" : "0");
    }
    if (rl_send(c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

int ratelimit_check(struct redis_client *redis, const char *key, const struct ratelimit_rule *rule,
                    int charge, ratelimit_fn cb, void *arg)
{
    const struct ratelimit_ask ask = {.key = key, .rule = rule, .charge = charge};
    return cb == NULL ? -1 : rl_start(redis, &ask, 1, cb, NULL, arg);
}

int ratelimit_check_many(struct redis_client *redis, const struct ratelimit_ask *asks, int n,
                         ratelimit_many_fn cb, void *arg)
{
    return cb == NULL || asks == NULL ? -1 : rl_start(redis, asks, n, NULL, cb, arg);
}
