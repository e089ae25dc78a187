/*
 * tagcache: the Lua scripts of the scan path and the parsing of their replies. The scripts
 * derive the keys of a tag and of a client from the ids they are given, so they are meant for
 * one Redis master (with replicas and Sentinel), not Redis Cluster.
 *
 * Keys: tp:t:<tag> hash {d: info JSON, b: batch id, f: first scan ms, i: leaf index};
 * tp:anchor "<checkpoint size> <ledger reference>" of the newest confirmed anchor;
 * tp:rv:<batch> marks a recalled batch; tp:n:<tag> scan count; tp:d:<tag>:<client> the dedup
 * window; tp:s:<tag> the tag's rule state (velocity, clone spread, last located scan: see the
 * lookup script); tp:e:<client> unknown tags asked by a client (enumeration).
 */
#include "tagcache.h"

#include "scancache.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The lookup script. Its time is the scan server's clock (ARGV[3], ms), the clock the rules
 * judge with, so one scan is judged and recorded at one instant. Arguments:
 *   KEYS[1] tp:t:<tag>
 *   ARGV 1 tag, 2 client, 3 now ms, 4 has location "1"/"0", 5 lat, 6 lon,
 *        7 dedup s, 8 velocity window ms, 9 velocity scans kept, 10 clone window ms,
 *        11 clients kept, 12 travel window ms, 13 state lifetime ms, 14 enumeration window ms.
 *
 * The rule state of a tag is one string, tp:s:<tag>, rewritten only by a counted scan (a
 * repeat within the dedup window reads it and writes nothing):
 *     "<ms> <ms> ...|<client>=<ms> <client>=<ms> ...|<lat> <lon> <ms>"
 * the times of the last counted scans (oldest first), the clients of the last counted scans
 * with the time of each one's last counted scan (oldest first, each client once), and the
 * last located counted scan. The rules only ask whether a count is above its maximum, so
 * the state keeps max + 1 of each: the scans (clients) counted in the window are then exact
 * up to max + 1, and whether more than max fall in the window is exact — if more than max
 * did, the max + 1 most recent are all among them. Entries that left their window are
 * dropped at the next write. One GET and one SET replace the sorted sets of earlier versions
 * (four keys, ten to twelve commands per scan).
 *
 * The anchoring state comes in the same call: the tag's leaf index (field i, which
 * tagproof-anchor writes once the leaf is appended, and a fill from the database too) and
 * tp:anchor, the newest confirmed anchor, which tagproof-anchor refreshes every cycle. An
 * entry with i but without d is a miss: the anchor may write i before anything else.
 */
static const char lookup_script[] =
    "local t = redis.call('HMGET', KEYS[1], 'd', 'b', 'f', 'i')\n"
    "local now = ARGV[3]\n"
    "local ms = tonumber(now)\n"
    "if not t[1] then return {0, ms} end\n"
    "local tag, client = ARGV[1], ARGV[2]\n"
    "local first, fs = 0, t[3]\n"
    "if not fs then\n"
    "  redis.call('HSET', KEYS[1], 'f', now)\n"
    "  first, fs = 1, now\n"
    "end\n"
    "local revoked = redis.call('EXISTS', 'tp:rv:' .. t[2])\n"
    "local rep = 1\n"
    "if redis.call('SET', 'tp:d:' .. tag .. ':' .. client, 1, 'NX', 'EX', ARGV[7]) then\n"
    "  rep = 0\n"
    "end\n"
    "local sk = 'tp:s:' .. tag\n"
    "local st = redis.call('GET', sk) or ''\n"
    "local a = string.find(st, '|', 1, true) or #st + 1\n"
    "local b = string.find(st, '|', a + 1, true) or #st + 1\n"
    "local vmin, cmin = ms - tonumber(ARGV[8]), ms - tonumber(ARGV[10])\n"
    "local v, c = {}, {}\n"
    "for x in string.gmatch(string.sub(st, 1, a - 1), '%d+') do\n"
    "  if tonumber(x) > vmin then v[#v + 1] = x end\n"
    "end\n"
    "for id, x in string.gmatch(string.sub(st, a + 1, b - 1), '(%w+)=(%d+)') do\n"
    "  if tonumber(x) > cmin and (rep == 1 or id ~= client) then c[#c + 1] = id .. '=' .. x end\n"
    "end\n"
    "local plat, plon, pms = string.match(string.sub(st, b + 1), '^(%S+) (%S+) (%d+)$')\n"
    "local nv, nc = #v, #c\n"
    "if rep == 0 then\n"
    "  v[nv + 1] = now\n"
    "  c[nc + 1] = client .. '=' .. now\n"
    "  local v0 = math.max(1, nv + 2 - tonumber(ARGV[9]))\n"
    "  local c0 = math.max(1, nc + 2 - tonumber(ARGV[11]))\n"
    "  nv, nc = nv + 2 - v0, nc + 2 - c0\n"
    "  local loc = ''\n"
    "  if ARGV[4] == '1' then\n"
    "    loc = ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. now\n"
    "  elseif pms and tonumber(pms) > ms - tonumber(ARGV[12]) then\n"
    "    loc = plat .. ' ' .. plon .. ' ' .. pms\n"
    "  end\n"
    "  redis.call('SET', sk, table.concat(v, ' ', v0) .. '|' .. table.concat(c, ' ', c0) .. "
    "'|' .. loc,\n"
    "             'PX', ARGV[13])\n"
    "end\n"
    "local unk = redis.call('ZCOUNT', 'tp:e:' .. client, ms - tonumber(ARGV[14]), '+inf')\n"
    "local n = redis.call('INCR', 'tp:n:' .. tag)\n"
    "return {1, ms, t[1], t[2], tonumber(fs), first, revoked, rep, nv, nc, unk,\n"
    "        plat or '', plon or '', pms or '', n, t[4] or '',\n"
    "        redis.call('GET', 'tp:anchor') or ''}\n";

/* ARGV 1 client, 2 now ms, 3 enumeration window ms. */
static const char unknown_script[] =
    "local ms = tonumber(ARGV[2])\n"
    "local ek = 'tp:e:' .. ARGV[1]\n"
    "redis.call('ZADD', ek, ms, ARGV[2] .. ':' .. redis.call('INCR', 'tp:eseq'))\n"
    "redis.call('ZREMRANGEBYSCORE', ek, '-inf', ms - tonumber(ARGV[3]))\n"
    "redis.call('ZREMRANGEBYRANK', ek, 0, -1001)\n"
    "redis.call('PEXPIRE', ek, ARGV[3])\n"
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
    scancache_tag_key(out, len, tag_id);
}

void tagcache_revoked_key(char *out, size_t len, const char *batch_id)
{
    snprintf(out, len, "tp:rv:%s", batch_id);
}

static void arg(struct tagcache_args *a, int *argc, const char *s, size_t len)
{
    a->argv[*argc] = s;
    a->argvlen[*argc] = len;
    (*argc)++;
}

/* Formats v into c->buf as the next constant. */
static void consts_add(struct tagcache_consts *c, size_t *used, int i, unsigned long long v)
{
    char *p = c->buf + *used;
    int n = snprintf(p, sizeof(c->buf) - *used, "%llu", v);
    c->argv[i] = p;
    c->argvlen[i] = (size_t)n;
    *used += (size_t)n + 1;
}

void tagcache_consts_init(struct tagcache_consts *c, const struct tagcache_windows *w)
{
    unsigned long long state_s = w->velocity_s;
    size_t used = 0;
    if (w->clone_s > state_s)
        state_s = w->clone_s;
    if (w->travel_s > state_s)
        state_s = w->travel_s;
    consts_add(c, &used, TC_DEDUP_S, w->dedup_s);
    consts_add(c, &used, TC_VELOCITY_MS, 1000ULL * w->velocity_s);
    consts_add(c, &used, TC_VELOCITY_KEEP, w->velocity_max + 1ULL);
    consts_add(c, &used, TC_CLONE_MS, 1000ULL * w->clone_s);
    consts_add(c, &used, TC_CLONE_KEEP, w->clone_max + 1ULL);
    consts_add(c, &used, TC_TRAVEL_MS, 1000ULL * w->travel_s);
    consts_add(c, &used, TC_STATE_MS, 1000ULL * state_s);
    consts_add(c, &used, TC_ENUM_MS, 1000ULL * w->enum_s);
}

int tagcache_lookup_args(struct tagcache_args *a, const struct tagcache_consts *c,
                         const char *tag_id, const char *client, bool has_loc, double lat,
                         double lon, int64_t now_ms)
{
    int argc = 0, n;
    size_t used;
    char *key = a->buf, *now, *la, *lo;
    const char *sha = tagcache_lookup_sha();

    scancache_tag_key(key, 48, tag_id);
    used = strlen(key) + 1;
    arg(a, &argc, "EVALSHA", 7);
    arg(a, &argc, sha, 40);
    arg(a, &argc, "1", 1);
    arg(a, &argc, key, used - 1);
    arg(a, &argc, tag_id, strlen(tag_id));
    arg(a, &argc, client, strlen(client));
    now = a->buf + used;
    n = snprintf(now, 24, "%lld", (long long)now_ms);
    used += (size_t)n + 1;
    arg(a, &argc, now, (size_t)n);
    if (has_loc) {
        arg(a, &argc, "1", 1);
        la = a->buf + used;
        n = snprintf(la, 32, "%.6f", lat);
        used += (size_t)n + 1;
        arg(a, &argc, la, (size_t)n);
        lo = a->buf + used;
        n = snprintf(lo, 32, "%.6f", lon);
        arg(a, &argc, lo, (size_t)n);
    } else {
        arg(a, &argc, "0", 1);
        arg(a, &argc, "", 0);
        arg(a, &argc, "", 0);
    }
    for (int i = 0; i < TC_COUNT; i++)
        arg(a, &argc, c->argv[i], c->argvlen[i]);
    return argc;
}

int tagcache_unknown_args(struct tagcache_args *a, const struct tagcache_consts *c,
                          const char *client, int64_t now_ms)
{
    int argc = 0;
    int n = snprintf(a->buf, 24, "%lld", (long long)now_ms);
    arg(a, &argc, "EVALSHA", 7);
    arg(a, &argc, tagcache_unknown_sha(), 40);
    arg(a, &argc, "0", 1);
    arg(a, &argc, client, strlen(client));
    arg(a, &argc, a->buf, (size_t)n);
    arg(a, &argc, c->argv[TC_ENUM_MS], c->argvlen[TC_ENUM_MS]);
    return argc;
}

int tagcache_fill_args(struct tagcache_fill *f, const char *tag_id, const char *info,
                       const char *batch_id, int64_t first_ms, int64_t leaf_index)
{
    int argc = 0;
    scancache_tag_key(f->key, sizeof(f->key), tag_id);
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
    if (leaf_index >= 0) {
        snprintf(f->leaf, sizeof(f->leaf), "%lld", (long long)leaf_index);
        f->argv[argc++] = SCANCACHE_LEAF_FIELD;
        f->argv[argc++] = f->leaf;
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
    if (r->elements != 17)
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

    /* The anchoring state; anything malformed reads as not known, never as anchored. */
    size_t len = 0;
    const char *s = str_at(r, 15, &len);
    out->leaf_index = -1;
    if (s == NULL)
        return -1;
    if (scancache_parse_count(s, len, &out->leaf_index) != 0)
        out->leaf_index = -1;
    if ((s = str_at(r, 16, &len)) == NULL)
        return -1;
    if (len > 0 && scancache_anchor_parse(s, len, &out->anchor_size, &out->anchor_ref,
                                          &out->anchor_ref_len) != 0) {
        out->anchor_size = 0;
        out->anchor_ref = NULL;
        out->anchor_ref_len = 0;
    }
    return 0;
}
