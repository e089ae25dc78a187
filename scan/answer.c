/*
 * answer: a strict JSON checker that finds the three members of a tag's data, the writer of
 * that data from a database row, and the verdict answer built around it with memcpy. The
 * checker is what makes splicing safe: text that is not exactly one JSON object never
 * reaches an answer.
 */
#include "answer.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- checking the cached data ------------------------------------------------------------ */

struct cursor {
    const char *s, *end;
    int depth;
};

static void skip_ws(struct cursor *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
        c->s++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/*
 * A string at c->s (its opening quote). *body and *len: the bytes between the quotes as
 * written; *escaped: whether they hold an escape. What jansson refuses is refused too: \u0000
 * and surrogates that do not pair.
 */
static int check_string(struct cursor *c, const char **body, size_t *len, int *escaped)
{
    const char *begin = ++c->s;
    *escaped = 0;
    while (c->s < c->end) {
        unsigned char ch = (unsigned char)*c->s;
        if (ch == '"') {
            *body = begin;
            *len = (size_t)(c->s - begin);
            c->s++;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch == '\\') {
            *escaped = 1;
            if (c->end - c->s < 2)
                return -1;
            char e = c->s[1];
            if (e == 'u') {
                unsigned u, lo;
                if (c->end - c->s < 6 || hex4(c->s + 2, &u) != 0 || u == 0 ||
                    (u >= 0xdc00 && u <= 0xdfff))
                    return -1;
                c->s += 6;
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (c->end - c->s < 6 || c->s[0] != '\\' || c->s[1] != 'u' ||
                        hex4(c->s + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    c->s += 6;
                }
            } else if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
                c->s += 2;
            } else {
                return -1;
            }
            continue;
        }
        size_t n = utf8_char_len(c->s, (size_t)(c->end - c->s));
        if (n == 0)
            return -1;
        c->s += n;
    }
    return -1;
}

static int is_digit(const struct cursor *c)
{
    return c->s < c->end && *c->s >= '0' && *c->s <= '9';
}

static int check_number(struct cursor *c)
{
    if (c->s < c->end && *c->s == '-')
        c->s++;
    if (!is_digit(c))
        return -1;
    if (*c->s++ != '0')
        while (is_digit(c))
            c->s++;
    if (c->s < c->end && *c->s == '.') {
        c->s++;
        if (!is_digit(c))
            return -1;
        while (is_digit(c))
            c->s++;
    }
    if (c->s < c->end && (*c->s == 'e' || *c->s == 'E')) {
        c->s++;
        if (c->s < c->end && (*c->s == '+' || *c->s == '-'))
            c->s++;
        if (!is_digit(c))
            return -1;
        while (is_digit(c))
            c->s++;
    }
    return 0;
}

static int check_literal(struct cursor *c, const char *word, size_t n)
{
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
        return -1;
    c->s += n;
    return 0;
}

static int check_value(struct cursor *c);

/*
 * An object at c->s. With top, its members product, batch and factory are recorded there;
 * with id, the member "id" when its value is a string without escapes.
 */
static int check_object(struct cursor *c, struct answer_info *top, const char **id, size_t *id_len)
{
    if (++c->depth > ANSWER_MAX_DEPTH)
        return -1;
    c->s++;
    skip_ws(c);
    if (c->s < c->end && *c->s == '}') {
        c->s++;
        c->depth--;
        return 0;
    }
    for (;;) {
        const char *key, *val;
        size_t klen;
        int kesc;
        if (c->s >= c->end || *c->s != '"' || check_string(c, &key, &klen, &kesc) != 0)
            return -1;
        skip_ws(c);
        if (c->s >= c->end || *c->s != ':')
            return -1;
        c->s++;
        skip_ws(c);
        val = c->s;
        int is_factory = top != NULL && !kesc && klen == 7 && memcmp(key, "factory", 7) == 0;
        int is_id = id != NULL && !kesc && klen == 2 && memcmp(key, "id", 2) == 0;
        if (is_factory) /* the last factory member wins, and with it its id */
            top->factory_id[0] = '\0';
        if (is_factory && c->s < c->end && *c->s == '{') {
            const char *fid = NULL;
            size_t flen = 0;
            char canon[UUID_STR_LEN + 1];
            if (check_object(c, NULL, &fid, &flen) != 0)
                return -1;
            if (fid != NULL && flen == UUID_STR_LEN && uuid_canonical(fid, flen, canon) == 0 &&
                memcmp(canon, fid, flen) == 0)
                memcpy(top->factory_id, canon, sizeof(canon));
        } else if (is_id && c->s < c->end && *c->s == '"') {
            const char *body;
            size_t blen;
            int besc;
            if (check_string(c, &body, &blen, &besc) != 0)
                return -1;
            *id = besc ? NULL : body;
            *id_len = besc ? 0 : blen;
        } else {
            if (is_id)
                *id = NULL;
            if (check_value(c) != 0)
                return -1;
        }
        if (top != NULL && !kesc) {
            size_t vlen = (size_t)(c->s - val);
            if (klen == 7 && memcmp(key, "product", 7) == 0) {
                top->product = val;
                top->product_len = vlen;
            } else if (klen == 5 && memcmp(key, "batch", 5) == 0) {
                top->batch = val;
                top->batch_len = vlen;
            } else if (is_factory) {
                top->factory = val;
                top->factory_len = vlen;
            }
        }
        skip_ws(c);
        if (c->s < c->end && *c->s == ',') {
            c->s++;
            skip_ws(c);
            continue;
        }
        if (c->s < c->end && *c->s == '}') {
            c->s++;
            c->depth--;
            return 0;
        }
        return -1;
    }
}

static int check_array(struct cursor *c)
{
    if (++c->depth > ANSWER_MAX_DEPTH)
        return -1;
    c->s++;
    skip_ws(c);
    if (c->s < c->end && *c->s == ']') {
        c->s++;
        c->depth--;
        return 0;
    }
    for (;;) {
        if (check_value(c) != 0)
            return -1;
        skip_ws(c);
        if (c->s < c->end && *c->s == ',') {
            c->s++;
            skip_ws(c);
            continue;
        }
        if (c->s < c->end && *c->s == ']') {
            c->s++;
            c->depth--;
            return 0;
        }
        return -1;
    }
}

static int check_value(struct cursor *c)
{
    const char *body;
    size_t len;
    int esc;
    if (c->s >= c->end)
        return -1;
    switch (*c->s) {
    case '{':
        return check_object(c, NULL, NULL, NULL);
    case '[':
        return check_array(c);
    case '"':
        return check_string(c, &body, &len, &esc);
    case 't':
        return check_literal(c, "true", 4);
    case 'f':
        return check_literal(c, "false", 5);
    case 'n':
        return check_literal(c, "null", 4);
    default:
        return check_number(c);
    }
}

int answer_info_parse(const char *json, size_t len, struct answer_info *out)
{
    struct cursor c = {json, json + len, 0};
    memset(out, 0, sizeof(*out));
    if (json == NULL)
        return -1;
    skip_ws(&c);
    if (c.s >= c.end || *c.s != '{' || check_object(&c, out, NULL, NULL) != 0)
        goto fail;
    skip_ws(&c);
    if (c.s != c.end)
        goto fail;
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    return -1;
}

/* --- writing ------------------------------------------------------------------------------- */

/* A growing buffer; on allocation failure it remembers and stops writing. */
struct out {
    char *buf;
    size_t len, cap;
    int failed;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *grown = realloc(o->buf, cap);
        if (grown == NULL) {
            o->failed = 1;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define OUT_LIT(o, lit) out_put((o), (lit), sizeof(lit) - 1)

/*
 * A JSON string as jansson's compact output writes it; invalid UTF-8 becomes U+FFFD. It goes
 * out through emit(o, bytes, n), so that both the growing and the fixed buffer can take it.
 */
typedef void (*put_fn)(void *o, const char *s, size_t n);
#define SINK_LIT(o, lit) emit((o), (lit), sizeof(lit) - 1)

static void json_string_to(put_fn emit, void *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)p);
    SINK_LIT(o, "\"");
    for (size_t i = 0; i < n;) {
        size_t run = 0;
        /* Plain bytes go out in runs. */
        while (i + run < n && p[i + run] >= 0x20 && p[i + run] < 0x80 && p[i + run] != '"' &&
               p[i + run] != '\\')
            run++;
        emit(o, (const char *)p + i, run);
        i += run;
        if (i >= n)
            break;
        unsigned char ch = p[i];
        if (ch >= 0x80) {
            size_t k = utf8_char_len(p + i, n - i);
            if (k == 0) {
                SINK_LIT(o, "\\ufffd");
                i++;
            } else {
                emit(o, (const char *)p + i, k);
                i += k;
            }
            continue;
        }
        char esc[7];
        switch (ch) {
        case '"':
            SINK_LIT(o, "\\\"");
            break;
        case '\\':
            SINK_LIT(o, "\\\\");
            break;
        case '\b':
            SINK_LIT(o, "\\b");
            break;
        case '\f':
            SINK_LIT(o, "\\f");
            break;
        case '\n':
            SINK_LIT(o, "\\n");
            break;
        case '\r':
            SINK_LIT(o, "\\r");
            break;
        case '\t':
            SINK_LIT(o, "\\t");
            break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            emit(o, esc, 6);
        }
        i++;
    }
    SINK_LIT(o, "\"");
}

static void out_put_any(void *o, const char *s, size_t n)
{
    out_put(o, s, n);
}

static void out_string(struct out *o, const char *s)
{
    json_string_to(out_put_any, o, s);
}

char *answer_info_build(const char *product_id, const char *sku, const char *name,
                        const char *batch_id, const char *batch_code, const char *factory_id,
                        const char *factory_name, size_t *len)
{
    struct out o = {0};
    OUT_LIT(&o, "{\"product\":{\"id\":");
    out_string(&o, product_id);
    OUT_LIT(&o, ",\"sku\":");
    out_string(&o, sku);
    OUT_LIT(&o, ",\"name\":");
    out_string(&o, name);
    OUT_LIT(&o, "},\"batch\":{\"id\":");
    out_string(&o, batch_id);
    OUT_LIT(&o, ",\"code\":");
    out_string(&o, batch_code);
    OUT_LIT(&o, "},\"factory\":{\"id\":");
    out_string(&o, factory_id);
    OUT_LIT(&o, ",\"name\":");
    out_string(&o, factory_name);
    OUT_LIT(&o, "}}");
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    o.buf[o.len] = '\0';
    *len = o.len;
    return o.buf;
}

/* --- the verdict ------------------------------------------------------------------------------ */

/* Appends to a fixed buffer, counting what would not fit. */
struct fixed {
    char *buf;
    size_t len, cap;
};

static void put(struct fixed *f, const char *s, size_t n)
{
    if (n > 0 && f->len + n <= f->cap)
        memcpy(f->buf + f->len, s, n);
    f->len += n;
}

#define PUT_LIT(f, lit) put((f), (lit), sizeof(lit) - 1)

static void put_any(void *f, const char *s, size_t n)
{
    put(f, s, n);
}

static void put_str(struct fixed *f, const char *s)
{
    put(f, s, strlen(s));
}

static void put_long(struct fixed *f, long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        tmp[sizeof(tmp) - 1 - n++] = '-';
    put(f, tmp + sizeof(tmp) - n, n);
}

static void put_member(struct fixed *f, const char *value, size_t len)
{
    if (value != NULL)
        put(f, value, len);
    else
        PUT_LIT(f, "{}");
}

void answer_anchor_set(struct answer_anchor *a, int64_t leaf_index, int64_t checkpoint_size,
                       const char *tx, size_t tx_len)
{
    memset(a, 0, sizeof(*a));
    if (leaf_index < 0 || leaf_index >= checkpoint_size || tx == NULL || tx_len == 0 ||
        tx_len > ANSWER_LEDGER_TX_MAX || memchr(tx, '\0', tx_len) != NULL)
        return;
    a->anchored = true;
    a->leaf_index = leaf_index;
    a->checkpoint_size = checkpoint_size;
    memcpy(a->ledger_tx, tx, tx_len);
}

static void put_anchor(struct fixed *f, const struct answer_anchor *a)
{
    if (a == NULL || !a->anchored) {
        PUT_LIT(f, "{\"status\":\"pending\"}");
        return;
    }
    PUT_LIT(f, "{\"status\":\"anchored\",\"leaf_index\":");
    put_long(f, (long)a->leaf_index);
    PUT_LIT(f, ",\"checkpoint_size\":");
    put_long(f, (long)a->checkpoint_size);
    PUT_LIT(f, ",\"ledger_tx\":");
    json_string_to(put_any, f, a->ledger_tx);
    PUT_LIT(f, "}");
}

static void digits(char *out, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void answer_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || gmtime_r(&s, &tm) == NULL || tm.tm_year + 1900 > 9999) {
        out[0] = '\0';
        return;
    }
    /* YYYY-MM-DDTHH:MM:SSZ, without strftime's locale machinery. */
    digits(out, (unsigned)(tm.tm_year + 1900), 4);
    out[4] = '-';
    digits(out + 5, (unsigned)(tm.tm_mon + 1), 2);
    out[7] = '-';
    digits(out + 8, (unsigned)tm.tm_mday, 2);
    out[10] = 'T';
    digits(out + 11, (unsigned)tm.tm_hour, 2);
    out[13] = ':';
    digits(out + 14, (unsigned)tm.tm_min, 2);
    out[16] = ':';
    digits(out + 17, (unsigned)tm.tm_sec, 2);
    out[19] = 'Z';
    out[20] = '\0';
}

size_t answer_verdict(const struct answer_fields *a, char *buf, size_t cap)
{
    struct fixed f = {buf, 0, cap};
    const struct answer_info *info = a->info;
    char when[32] = "";

    if (a->first_ms > 0)
        answer_time(a->first_ms, when);
    /* tag_id, verdict, reason ids and source are fixed vocabularies: nothing to escape. */
    PUT_LIT(&f, "{\"tag_id\":\"");
    put_str(&f, a->tag_id);
    PUT_LIT(&f, "\",\"verdict\":\"");
    put_str(&f, a->verdict);
    PUT_LIT(&f, "\",\"product\":");
    put_member(&f, info != NULL ? info->product : NULL, info != NULL ? info->product_len : 0);
    PUT_LIT(&f, ",\"batch\":");
    put_member(&f, info != NULL ? info->batch : NULL, info != NULL ? info->batch_len : 0);
    PUT_LIT(&f, ",\"factory\":");
    put_member(&f, info != NULL ? info->factory : NULL, info != NULL ? info->factory_len : 0);
    if (a->first_scan)
        PUT_LIT(&f, ",\"first_scan\":true,\"first_scanned_at\":");
    else
        PUT_LIT(&f, ",\"first_scan\":false,\"first_scanned_at\":");
    if (when[0] != '\0') {
        PUT_LIT(&f, "\"");
        put_str(&f, when);
        PUT_LIT(&f, "\"");
    } else {
        PUT_LIT(&f, "null");
    }
    PUT_LIT(&f, ",\"scan_count\":");
    if (a->scan_count > 0)
        put_long(&f, a->scan_count);
    else
        PUT_LIT(&f, "null");
    PUT_LIT(&f, ",\"risk\":{\"score\":");
    put_long(&f, a->score);
    PUT_LIT(&f, ",\"reasons\":[");
    for (size_t i = 0; i < a->nreasons; i++) {
        if (i > 0)
            PUT_LIT(&f, ",");
        PUT_LIT(&f, "\"");
        put_str(&f, a->reasons[i]);
        PUT_LIT(&f, "\"");
    }
    PUT_LIT(&f, "]");
    if (a->degraded)
        PUT_LIT(&f, ",\"degraded\":true");
    PUT_LIT(&f, "},\"anchor\":");
    put_anchor(&f, a->anchor);
    PUT_LIT(&f, ",\"source\":\"");
    put_str(&f, a->source);
    PUT_LIT(&f, "\"}");
    return f.len;
}
