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
 * KEYS[1] the limit's key; ARGV: emission interval (microseconds per request), burst, charge
 * (1/0). A request is allowed when, counted, the theoretical arrival time would be at most
 * burst intervals ahead of now. Returns {allowed, ms until the next request is allowed}.
 * Times are kept in microseconds, so that any rate up to a million a minute has an interval
 * of its own (in milliseconds, rates above 60,000 a minute truncated to no limit at all);
 * they stay below 2^53, exact in Lua's doubles.
 */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or now)\n"
    "if tat < now then tat = now end\n"
    "local new_tat = tat + interval\n"
    "local allow_at = new_tat - interval * burst\n"
    "if allow_at > now then return {0, math.ceil((allow_at - now) / 1000)} end\n"
    "if ARGV[3] == '1' then\n"
    "  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)\n"
    "end\n"
    "return {1, 0}\n";

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
    ratelimit_fn cb;
    void *arg;
    int retried;
    char key[160];
    char interval[24], burst[24], charge[2];
};

static int rl_send(struct rl_call *c);

static void ignore_reply(void *arg, enum redis_status st, const redisReply *r)
{
    (void)arg;
    (void)st;
    (void)r;
}

static void rl_reply(void *arg, enum redis_status st, const redisReply *r)
{
    struct rl_call *c = arg;

    if (st == REDIS_STATUS_ERROR_REPLY && !c->retried && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        c->retried = 1;
        redis_commandf(c->redis, 0, ignore_reply, NULL, "SCRIPT LOAD %s", script);
        if (rl_send(c) == 0)
            return;
    } else if (st == REDIS_STATUS_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_INTEGER &&
               r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long wait_ms = r->element[1]->integer;
        if (r->element[0]->integer == 1)
            c->cb(c->arg, RATELIMIT_ALLOW, 0);
        else
            c->cb(c->arg, RATELIMIT_DENY, (int)((wait_ms + 999) / 1000));
        free(c);
        return;
    }
    c->cb(c->arg, RATELIMIT_ERROR, 0);
    free(c);
}

static int rl_send(struct rl_call *c)
{
    const char *argv[] = {"EVALSHA", script_sha, "1", c->key, c->interval, c->burst, c->charge};
    return redis_command(c->redis, 0, rl_reply, c, 7, argv, NULL);
}

int ratelimit_check(struct redis_client *redis, const char *key, const struct ratelimit_rule *rule,
                    int charge, ratelimit_fn cb, void *arg)
{
    struct rl_call *c = NULL;

    if (redis == NULL || rule->per_minute <= 0 || rule->burst <= 0 || strlen(key) >= sizeof(c->key))
        return -1;
    pthread_once(&sha_once, sha_init);
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->redis = redis;
    c->cb = cb;
    c->arg = arg;
    strcpy(c->key, key);
    snprintf(c->interval, sizeof(c->interval), "%d", 60000000 / rule->per_minute);
    snprintf(c->burst, sizeof(c->burst), "%d", rule->burst);
    strcpy(c->charge, charge ? "1" : "0");
    if (rl_send(c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}
