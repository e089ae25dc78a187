/*
 * ingest: the pure parts of a CSV upload (see ingest.h). The error report is a sorted array
 * of at most cap entries: the validator's errors arrive in line order and are appended, the
 * database's (tags already registered) arrive at the end and are merged in by line.
 */
#include "ingest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

int ingest_mode_parse(const char *s, enum ingest_mode *out)
{
    if (s == NULL || strcmp(s, "all-or-nothing") == 0)
        *out = INGEST_ALL_OR_NOTHING;
    else if (strcmp(s, "skip-invalid") == 0)
        *out = INGEST_SKIP_INVALID;
    else
        return -1;
    return 0;
}

const char *ingest_mode_name(enum ingest_mode m)
{
    return m == INGEST_SKIP_INVALID ? "skip-invalid" : "all-or-nothing";
}

bool ingest_key_valid(const char *key)
{
    size_t n = 0;
    if (key == NULL)
        return false;
    for (; key[n] != '\0'; n++)
        if ((unsigned char)key[n] < 0x21 || (unsigned char)key[n] > 0x7e)
            return false;
    return n >= 1 && n <= INGEST_KEY_MAX;
}

enum ingest_idem ingest_idempotency(const struct ingest_prior *p)
{
    if (p->running)
        return INGEST_BUSY;
    /* Checked before the request's fingerprint: a body that never arrived whole decided
     * nothing, so even another batch may take the key back. */
    if (!p->body_known)
        return INGEST_RETAKE;
    if (!p->same_request)
        return INGEST_MISMATCH;
    return INGEST_COMPARE;
}

/* "PGCOPY\n\377\r\n\0", then 32-bit flags (none) and the length of the header extension (0). */
const char INGEST_COPY_HEADER[INGEST_COPY_HEADER_LEN] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
const char INGEST_COPY_TRAILER[INGEST_COPY_TRAILER_LEN] = "\377\377"; /* a field count of -1 */

static char *put_be(char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (char)(v >> (8 * i));
    return p;
}

size_t ingest_copy_row(char *out, const struct csv_tag_row *row)
{
    char *p = out;
    p = put_be(p, 3, 2);
    p = put_be(p, 8, 4);
    p = put_be(p, row->line, 8);
    p = put_be(p, 16, 4);
    memcpy(p, row->tag, 16);
    p += 16;
    if (row->serial == NULL)
        return (size_t)(put_be(p, UINT32_MAX, 4) - out);
    p = put_be(p, row->serial_len, 4);
    memcpy(p, row->serial, row->serial_len);
    p += row->serial_len;
    return (size_t)(p - out);
}

/* --- the error report --------------------------------------------------------------------- */

struct ingest_error {
    uint64_t line;
    char code[32];
    char message[CSV_MESSAGE_MAX];
};

struct ingest_errors {
    size_t cap;
    size_t n;
    size_t alloc;
    uint64_t count;
    struct ingest_error *items;
};

struct ingest_errors *ingest_errors_new(size_t cap)
{
    struct ingest_errors *e;
    if (cap < 1 || cap > INGEST_MAX_ERRORS)
        return NULL;
    e = calloc(1, sizeof(*e));
    if (e != NULL)
        e->cap = cap;
    return e;
}

void ingest_errors_free(struct ingest_errors *e)
{
    if (e == NULL)
        return;
    free(e->items);
    free(e);
}

/* Copies at most cap - 1 bytes of s, not cutting a UTF-8 sequence in two. */
static void copy_utf8(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

int ingest_errors_add(struct ingest_errors *e, uint64_t line, const char *code, const char *message)
{
    size_t lo = 0, hi = e->n;

    e->count++;
    /* The first index whose line is greater: equal lines keep the order they came in. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->items[mid].line <= line)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= e->cap)
        return 0; /* later than every kept error, and the report is full */
    if (e->n == e->alloc) {
        size_t want = e->alloc == 0 ? 16 : e->alloc * 2;
        if (want > e->cap)
            want = e->cap;
        if (want > e->n) {
            struct ingest_error *items = realloc(e->items, want * sizeof(*items));
            if (items == NULL) {
                e->count--;
                return -1;
            }
            e->items = items;
            e->alloc = want;
        }
    }
    if (e->n == e->cap)
        e->n--; /* the last kept error falls out */
    memmove(&e->items[lo + 1], &e->items[lo], (e->n - lo) * sizeof(*e->items));
    e->n++;
    e->items[lo].line = line;
    copy_utf8(e->items[lo].code, sizeof(e->items[lo].code), code);
    copy_utf8(e->items[lo].message, sizeof(e->items[lo].message), message);
    return 0;
}

uint64_t ingest_errors_count(const struct ingest_errors *e)
{
    return e->count;
}

char *ingest_errors_json(const struct ingest_errors *e)
{
    json_t *a = json_array();
    char *s = NULL;

    if (a == NULL)
        return NULL;
    for (size_t i = 0; i < e->n; i++) {
        const struct ingest_error *it = &e->items[i];
        json_t *o = json_pack("{s:o, s:s, s:s}", "line",
                              it->line > 0 ? json_integer((json_int_t)it->line) : json_null(),
                              "code", it->code, "message", it->message);
        if (o == NULL || json_array_append_new(a, o) != 0)
            goto out;
    }
    s = json_dumps(a, JSON_COMPACT);
out:
    json_decref(a);
    return s;
}
