/*
 * tagcache: the Lua scripts of the scan path and the parsing of their replies. The scripts
 * derive the keys of a tag and of a client from the ids they are given, so they are meant for
 * one Redis master (with replicas and Sentinel), not Redis Cluster.
 *
 * Keys: tp:t:<tag> hash {d: info JSON, b: batch id, f: first scan ms}; tp:rv:<batch> marks a
 * recalled batch; tp:n:<tag> scan count; tp:d:<tag>:<client> the dedup window; tp:v:<tag>
 * scan times (velocity); tp:c:<tag> clients by last scan (clone spread); tp:l:<tag> the last
 * located scan; tp:e:<client> unknown tags asked by a client (enumeration).
 */
#include "tagcache.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char lookup_script[] =
    "local t = redis.call('HMGET', KEYS[1], 'd', 'b', 'f')\n"
    "local now = redis.call('TIME')\n"
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"
    "if not t[1] then return {0, ms} end\n"
    "local tag, client = ARGV[1], ARGV[2]\n"
    "local first, fs = 0, t[3]\n"
    "if not fs then\n"
    "  redis.call('HSET', KEYS[1], 'f', ms)\n"
    "  first, fs = 1, ms\n"
    "end\n"
    "local revoked = redis.call('EXISTS', 'tp:rv:' .. t[2])\n"
    "local rep = 0\n"
    "if not redis.call('SET', 'tp:d:' .. tag .. ':' .. client, 1, 'NX', 'EX', ARGV[6]) then\n"
    "  rep = 1\n"
    "end\n"
    "local vk, ck, lk = 'tp:v:' .. tag, 'tp:c:' .. tag, 'tp:l:' .. tag\n"
    "if rep == 0 then\n"
    "  redis.call('ZADD', vk, ms, ms .. ':' .. client)\n"
    "  redis.call('ZADD', ck, ms, client)\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', vk, '-inf', ms - tonumber(ARGV[7]) * 1000)\n"
    "redis.call('PEXPIRE', vk, tonumber(ARGV[7]) * 1000)\n"
    "local vel = redis.call('ZCARD', vk)\n"
    "redis.call('ZREMRANGEBYSCORE', ck, '-inf', ms - tonumber(ARGV[8]) * 1000)\n"
    "redis.call('ZREMRANGEBYRANK', ck, 0, -1001)\n"
    "redis.call('PEXPIRE', ck, tonumber(ARGV[8]) * 1000)\n"
    "local clients = redis.call('ZCARD', ck)\n"
    "local prev = redis.call('HMGET', lk, 'lat', 'lon', 'ms')\n"
    "if ARGV[3] == '1' and rep == 0 then\n"
    "  redis.call('HSET', lk, 'lat', ARGV[4], 'lon', ARGV[5], 'ms', ms)\n"
    "  redis.call('PEXPIRE', lk, tonumber(ARGV[9]) * 1000)\n"
    "end\n"
    "local unk = redis.call('ZCOUNT', 'tp:e:' .. client, ms - tonumber(ARGV[10]) * 1000, "
    "'+inf')\n"
    "local n = redis.call('INCR', 'tp:n:' .. tag)\n"
    "return {1, ms, t[1], t[2], tonumber(fs), first, revoked, rep, vel, clients, unk,\n"
    "        prev[1] or '', prev[2] or '', prev[3] or '', n}\n";

static const char unknown_script[] =
    "local now = redis.call('TIME')\n"
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"
    "local ek = 'tp:e:' .. ARGV[1]\n"
    "redis.call('ZADD', ek, ms, ms .. ':' .. redis.call('INCR', 'tp:eseq'))\n"
    "redis.call('ZREMRANGEBYSCORE', ek, '-inf', ms - tonumber(ARGV[2]) * 1000)\n"
    "redis.call('ZREMRANGEBYRANK', ek, 0, -1001)\n"
    "redis.call('PEXPIRE', ek, tonumber(ARGV[2]) * 1000)\n"
    "return redis.call('ZCARD', ek)\n";

static char lookup_sha[41], unknown_sha[41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void sha1_hex(const char *s, char out[41])
{
    unsigned char md[20];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The digests are computed once; afterwards they are only read. */
static void compute_shas(void)
{
    sha1_hex(lookup_script, lookup_sha);
    sha1_hex(unknown_script, unknown_sha);
}

const char *tagcache_lookup_sha(void)
{
    pthread_once(&sha_once, compute_shas);
    return lookup_sha;
}

const char *tagcache_unknown_sha(void)
{
    pthread_once(&sha_once, compute_shas);
    return unknown_sha;
}

const char *tagcache_lookup_script(void)
{
    return lookup_script;
}

const char *tagcache_unknown_script(void)
{
    return unknown_script;
}

void tagcache_tag_key(char *out, size_t len, const char *tag_id)
{
    snprintf(out, len, "tp:t:%s", tag_id);
}

void tagcache_revoked_key(char *out, size_t len, const char *batch_id)
{
    snprintf(out, len, "tp:rv:%s", batch_id);
}

/* Appends a NUL-terminated string argument; numbers are formatted into a->buf. */
static void arg(struct tagcache_args *a, int *argc, const char *s)
{
    a->argv[*argc] = s;
    a->argvlen[*argc] = strlen(s);
    (*argc)++;
}

static void argf(struct tagcache_args *a, int *argc, size_t *used, const char *fmt, double v)
{
    char *p = a->buf + *used;
    int n = snprintf(p, sizeof(a->buf) - *used, fmt, v);
    *used += (size_t)n + 1;
    a->argv[*argc] = p;
    a->argvlen[*argc] = (size_t)n;
    (*argc)++;
}

int tagcache_lookup_args(struct tagcache_args *a, const char *sha, const char *tag_id,
                         const char *client, bool has_loc, double lat, double lon,
                         const struct tagcache_windows *w)
{
    int argc = 0;
    size_t used = 0;
    char *key = a->buf;
    used = (size_t)snprintf(key, 48, "tp:t:%s", tag_id) + 1;
    arg(a, &argc, "EVALSHA");
    arg(a, &argc, sha);
    arg(a, &argc, "1");
    a->argv[argc] = key;
    a->argvlen[argc++] = used - 1;
    arg(a, &argc, tag_id);
    arg(a, &argc, client);
    arg(a, &argc, has_loc ? "1" : "0");
    argf(a, &argc, &used, "%.6f", has_loc ? lat : 0);
    argf(a, &argc, &used, "%.6f", has_loc ? lon : 0);
    argf(a, &argc, &used, "%.0f", w->dedup_s);
    argf(a, &argc, &used, "%.0f", w->velocity_s);
    argf(a, &argc, &used, "%.0f", w->clone_s);
    argf(a, &argc, &used, "%.0f", w->travel_s);
    argf(a, &argc, &used, "%.0f", w->enum_s);
    return argc;
}

int tagcache_unknown_args(struct tagcache_args *a, const char *sha, const char *client,
                          const struct tagcache_windows *w)
{
    int argc = 0;
    size_t used = 0;
    arg(a, &argc, "EVALSHA");
    arg(a, &argc, sha);
    arg(a, &argc, "0");
    arg(a, &argc, client);
    argf(a, &argc, &used, "%.0f", w->enum_s);
    return argc;
}

int tagcache_fill_args(struct tagcache_fill *f, const char *tag_id, const char *info,
                       const char *batch_id, int64_t first_ms)
{
    int argc = 0;
    snprintf(f->key, sizeof(f->key), "tp:t:%s", tag_id);
    f->argv[argc++] = "HSET";
    f->argv[argc++] = f->key;
    f->argv[argc++] = "d";
    f->argv[argc++] = info;
    f->argv[argc++] = "b";
    f->argv[argc++] = batch_id;
    if (first_ms > 0) {
        snprintf(f->first, sizeof(f->first), "%lld", (long long)first_ms);
        f->argv[argc++] = "f";
        f->argv[argc++] = f->first;
    }
    for (int i = 0; i < argc; i++)
        f->argvlen[i] = strlen(f->argv[i]);
    return argc;
}

static int int_at(const redisReply *r, size_t i, long long *out)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *out = r->element[i]->integer;
    return 0;
}

static const char *str_at(const redisReply *r, size_t i, size_t *len)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return NULL;
    if (len != NULL)
        *len = r->element[i]->len;
    return r->element[i]->str;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    if (s == NULL || *s == '\0')
        return -1;
    *out = strtod(s, &end);
    return *end == '\0' ? 0 : -1;
}

int tagcache_parse_lookup(const redisReply *r, struct tagcache_hit *out)
{
    long long v[16];
    memset(out, 0, sizeof(*out));
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || int_at(r, 0, &v[0]) ||
        int_at(r, 1, &v[1]))
        return -1;
    out->now_ms = v[1];
    if (v[0] == 0)
        return 0;
    if (r->elements != 15)
        return -1;
    out->found = true;
    out->info = str_at(r, 2, &out->info_len);
    out->batch_id = str_at(r, 3, NULL);
    if (out->info == NULL || out->batch_id == NULL)
        return -1;
    for (size_t i = 4; i <= 10; i++)
        if (int_at(r, i, &v[i]) != 0)
            return -1;
    if (int_at(r, 14, &v[14]) != 0)
        return -1;
    out->first_ms = v[4];
    out->first_scan = v[5] != 0;
    out->revoked = v[6] != 0;
    out->repeat = v[7] != 0;
    out->velocity = (long)v[8];
    out->clients = (long)v[9];
    out->client_unknown = (long)v[10];
    out->scan_count = (long)v[14];
    double ms = 0;
    out->has_prev = parse_double(str_at(r, 11, NULL), &out->prev_lat) == 0 &&
                    parse_double(str_at(r, 12, NULL), &out->prev_lon) == 0 &&
                    parse_double(str_at(r, 13, NULL), &ms) == 0;
    /* What Redis holds is data, not a promise: a time outside 0..year 9999 is no location. */
    if (out->has_prev && !(ms >= 0 && ms <= 253402300799999.0))
        out->has_prev = false;
    out->prev_ms = out->has_prev ? (int64_t)ms : 0;
    return 0;
}
