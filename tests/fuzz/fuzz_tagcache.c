// fuzz: MODULES tagcache
/*
 * fuzz_tagcache: tagcache_parse_lookup on reply trees built from the input, as hiredis would
 * hand them over (every string NUL-terminated, element counts matching the vectors). The
 * input is one reply a line, in a RESP-like text form so that seeds stay readable:
 *     *N      an array of the next N replies (at most 32, nested at most 6 deep)
 *     :123    an integer (strtoll, saturating)
 *     $text   a string: the rest of the line, any bytes but a line feed
 *     -text   an error reply
 *     +text   a status reply
 *     _       nil
 * Anything else is a string of the whole line. An array cut short by the end of the input
 * holds what there was.
 */
#include "tagcache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ELEMENTS 32
#define MAX_DEPTH 6
#define MAX_REPLIES 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
    const char *p, *end;
    size_t replies;
};

/* The next line without its line feed, or NULL at the end. */
static const char *next_line(struct input *in, size_t *len)
{
    if (in->p >= in->end)
        return NULL;
    const char *line = in->p;
    const char *nl = memchr(line, '\n', (size_t)(in->end - line));
    *len = nl != NULL ? (size_t)(nl - line) : (size_t)(in->end - line);
    in->p = nl != NULL ? nl + 1 : in->end;
    return line;
}

static void reply_free(redisReply *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->elements; i++)
        reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static redisReply *reply_string(int type, const char *s, size_t len)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->type = type;
    r->str = malloc(len + 1);
    if (r->str == NULL) {
        free(r);
        return NULL;
    }
    memcpy(r->str, s, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static long long parse_ll(const char *s, size_t len)
{
    char buf[32];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return strtoll(buf, NULL, 10); /* ERANGE saturates, which is fine here */
}

/* One reply, or NULL at the end of the input (or out of memory). */
static redisReply *reply_build(struct input *in, int depth)
{
    size_t len;
    const char *line;
    redisReply *r;

    if (in->replies >= MAX_REPLIES || (line = next_line(in, &len)) == NULL)
        return NULL;
    in->replies++;
    switch (len > 0 ? line[0] : '\0') {
    case '*': {
        long long n = parse_ll(line + 1, len - 1);
        if (n < 0 || depth >= MAX_DEPTH)
            n = 0;
        if (n > MAX_ELEMENTS)
            n = MAX_ELEMENTS;
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
        r->type = REDIS_REPLY_ARRAY;
        if (n > 0 && (r->element = calloc((size_t)n, sizeof(*r->element))) == NULL) {
            free(r);
            return NULL;
        }
        while (r->elements < (size_t)n) {
            redisReply *e = reply_build(in, depth + 1);
            if (e == NULL)
                break;
            r->element[r->elements++] = e;
        }
        return r;
    }
    case ':':
        r = calloc(1, sizeof(*r));
        if (r != NULL) {
            r->type = REDIS_REPLY_INTEGER;
            r->integer = parse_ll(line + 1, len - 1);
        }
        return r;
    case '$':
        return reply_string(REDIS_REPLY_STRING, line + 1, len - 1);
    case '-':
        return reply_string(REDIS_REPLY_ERROR, line + 1, len - 1);
    case '+':
        return reply_string(REDIS_REPLY_STATUS, line + 1, len - 1);
    case '_':
        r = calloc(1, sizeof(*r));
        if (r != NULL)
            r->type = REDIS_REPLY_NIL;
        return r;
    default:
        return reply_string(REDIS_REPLY_STRING, line, len);
    }
}

static int within(const char *p, size_t len, const redisReply *r)
{
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->str != NULL && p >= e->str && p + len <= e->str + e->len + 1)
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {(const char *)data, (const char *)data + size, 0};
    struct tagcache_hit hit;

    redisReply *r = reply_build(&in, 0);
    if (tagcache_parse_lookup(r, &hit) == 0 && hit.found) {
        /* A hit's strings are borrowed from the reply: they must point into it. */
        if (hit.info == NULL || hit.batch_id == NULL || !within(hit.info, hit.info_len, r) ||
            !within(hit.batch_id, strlen(hit.batch_id), r)) {
            fprintf(stderr, "fuzz_tagcache: a hit's strings do not point into the reply\n");
            abort();
        }
    }
    /* NULL and replies that are no array at all are refused too. */
    if (tagcache_parse_lookup(NULL, &hit) != -1)
        abort();
    reply_free(r);
    return 0;
}
