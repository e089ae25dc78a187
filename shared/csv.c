/*
 * csv: an RFC 4180 reader driven by pushed chunks, one byte-level state machine whose whole
 * state lives in the reader so that a chunk may end anywhere; and the tag-upload validator,
 * which turns rows into accepted tags and line-numbered errors.
 */
#include "csv.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------------------------- */

enum csv_state {
    ST_RECORD,     /* at the start of a line, no record begun: a line end here is a blank line */
    ST_FIELD,      /* at the start of a field inside a record */
    ST_UNQUOTED,   /* inside an unquoted field */
    ST_QUOTED,     /* inside a quoted field */
    ST_QUOTE_SEEN, /* a quote inside a quoted field: the end of the field, or the first of "" */
    ST_FINISHED,
};

static const unsigned char utf8_bom[3] = {0xef, 0xbb, 0xbf};

struct csv_reader {
    struct csv_limits lim;
    enum csv_state state;
    bool failed;
    bool pending_cr;   /* the last byte was a CR line end: an LF next belongs to it */
    unsigned bom_seen; /* bytes of a leading BOM matched so far */
    bool bom_done;     /* the start of the input is behind us */
    bool at_bol;       /* the last byte was a line end, or there was none yet */

    /* The UTF-8 check: continuation bytes still expected and the range the next one must be
     * in (narrower than 80..BF right after some lead bytes, to refuse overlong forms,
     * surrogates and code points above U+10FFFF). */
    unsigned u8_need;
    unsigned char u8_lo, u8_hi;

    uint64_t offset;     /* input bytes consumed, a leading BOM included */
    uint64_t line;       /* physical line of the next byte */
    uint64_t rec_line;   /* where the current record starts */
    uint64_t quote_line; /* where the current quoted field opened */
    size_t rec_bytes;    /* bytes of the current record as written */

    /* The current record's fields, unescaped, back to back; ends[i] is where field i ends. */
    char *buf;
    size_t len, cap;
    size_t field_start;
    size_t nfields;
    size_t *ends;
    struct csv_field *out;

    struct csv_error err;
};

void csv_limits_default(struct csv_limits *lim)
{
    lim->max_field_bytes = 64 * 1024;
    lim->max_record_bytes = 64 * 1024;
    lim->max_fields = 64;
}

/* The record buffer starts small and doubles up to the record limit, which it never needs to
 * pass: unescaped fields are never longer than the record as written. */
#define CSV_INITIAL_BUF 256

static size_t initial_cap(const struct csv_limits *lim)
{
    return lim->max_record_bytes < CSV_INITIAL_BUF ? lim->max_record_bytes : CSV_INITIAL_BUF;
}

static size_t arrays_size(const struct csv_limits *lim)
{
    return lim->max_fields * (sizeof(size_t) + sizeof(struct csv_field));
}

size_t csv_reader_bound(const struct csv_limits *lim)
{
    struct csv_limits def;
    if (lim == NULL) {
        csv_limits_default(&def);
        lim = &def;
    }
    return sizeof(struct csv_reader) + arrays_size(lim) + lim->max_record_bytes;
}

struct csv_reader *csv_reader_new(const struct csv_limits *lim)
{
    struct csv_reader *r = NULL;
    struct csv_limits def;
    if (lim == NULL) {
        csv_limits_default(&def);
        lim = &def;
    }
    if (lim->max_field_bytes == 0 || lim->max_record_bytes == 0 || lim->max_fields == 0 ||
        lim->max_fields > SIZE_MAX / 2 / (sizeof(size_t) + sizeof(struct csv_field)))
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto fail;
    r->lim = *lim;
    r->state = ST_RECORD;
    r->line = 1;
    r->at_bol = true;
    r->u8_lo = 0x80;
    r->u8_hi = 0xbf;
    r->cap = initial_cap(lim);
    r->buf = malloc(r->cap);
    r->ends = malloc(lim->max_fields * sizeof(*r->ends));
    r->out = malloc(lim->max_fields * sizeof(*r->out));
    if (r->buf == NULL || r->ends == NULL || r->out == NULL)
        goto fail;
    return r;
fail:
    csv_reader_free(r);
    return NULL;
}

void csv_reader_free(struct csv_reader *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r->ends);
    free(r->out);
    free(r);
}

const struct csv_error *csv_reader_error(const struct csv_reader *r)
{
    return r->failed ? &r->err : NULL;
}

size_t csv_reader_memory(const struct csv_reader *r)
{
    return sizeof(*r) + arrays_size(&r->lim) + r->cap;
}

uint64_t csv_reader_bytes(const struct csv_reader *r)
{
    return r->offset;
}

uint64_t csv_reader_lines(const struct csv_reader *r)
{
    /* line is the line of the next byte, which has not begun right after a line end. */
    return r->at_bol ? r->line - 1 : r->line;
}

__attribute__((format(printf, 4, 5))) static int reader_fail(struct csv_reader *r, uint64_t line,
                                                             const char *code, const char *fmt, ...)
{
    va_list ap;
    r->failed = true;
    r->err.line = line;
    r->err.code = code;
    r->err.fatal = true;
    va_start(ap, fmt);
    vsnprintf(r->err.message, sizeof(r->err.message), fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_record_too_long(struct csv_reader *r)
{
    if (r->state == ST_QUOTED && r->quote_line != r->line)
        return reader_fail(r, r->rec_line, "line_too_long",
                           "the record starting at line %" PRIu64
                           " is longer than %zu bytes; the quoted field opened at line %" PRIu64
                           " may be missing its closing quote",
                           r->rec_line, r->lim.max_record_bytes, r->quote_line);
    if (r->rec_line != r->line)
        return reader_fail(r, r->rec_line, "line_too_long",
                           "the record starting at line %" PRIu64 " is longer than %zu bytes",
                           r->rec_line, r->lim.max_record_bytes);
    return reader_fail(r, r->rec_line, "line_too_long", "line %" PRIu64 " is longer than %zu bytes",
                       r->rec_line, r->lim.max_record_bytes);
}

static int fail_field_too_long(struct csv_reader *r)
{
    return reader_fail(r, r->rec_line, "field_too_long",
                       "field %zu of the record starting at line %" PRIu64
                       " is longer than %zu bytes",
                       r->nfields + 1, r->rec_line, r->lim.max_field_bytes);
}

/* Counts n bytes of the record as written against the record limit. */
static int count_raw(struct csv_reader *r, size_t n)
{
    if (n > r->lim.max_record_bytes - r->rec_bytes) {
        r->rec_bytes = r->lim.max_record_bytes;
        return fail_record_too_long(r);
    }
    r->rec_bytes += n;
    return 0;
}

/* Appends n bytes to the current field. */
static int append(struct csv_reader *r, const char *p, size_t n)
{
    if (n > r->lim.max_field_bytes - (r->len - r->field_start))
        return fail_field_too_long(r);
    if (n > r->cap - r->len) {
        size_t cap = r->cap;
        while (n > cap - r->len && cap <= SIZE_MAX / 2)
            cap *= 2;
        if (cap > r->lim.max_record_bytes)
            cap = r->lim.max_record_bytes;
        /* The record limit, checked before every append, guarantees this. */
        assert(n <= cap - r->len);
        char *nbuf = realloc(r->buf, cap);
        if (nbuf == NULL)
            return reader_fail(r, r->rec_line, "out_of_memory", "out of memory");
        r->buf = nbuf;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return 0;
}

static int end_field(struct csv_reader *r, bool more)
{
    r->ends[r->nfields++] = r->len;
    r->field_start = r->len;
    if (more && r->nfields >= r->lim.max_fields)
        return reader_fail(r, r->rec_line, "too_many_fields",
                           "the record starting at line %" PRIu64 " has more than %zu fields",
                           r->rec_line, r->lim.max_fields);
    return 0;
}

static int emit(struct csv_reader *r, csv_row_fn *on_row, void *arg)
{
    size_t start = 0;
    for (size_t i = 0; i < r->nfields; i++) {
        r->out[i].data = r->buf + start;
        r->out[i].len = r->ends[i] - start;
        start = r->ends[i];
    }
    if (on_row(arg, r->rec_line, r->out, r->nfields) != 0)
        return reader_fail(r, r->rec_line, "stopped", "reading was stopped by the caller");
    r->len = 0;
    r->field_start = 0;
    r->nfields = 0;
    r->rec_bytes = 0;
    return 0;
}

/* A line end outside quotes: the record, if one was begun, is complete. */
static int end_line(struct csv_reader *r, unsigned char c, csv_row_fn *on_row, void *arg)
{
    if (r->state != ST_RECORD) {
        if (end_field(r, false) != 0 || emit(r, on_row, arg) != 0)
            return -1;
        r->state = ST_RECORD;
    }
    r->line++;
    r->pending_cr = c == '\r';
    return 0;
}

static int check_utf8(struct csv_reader *r, unsigned char c)
{
    if (r->u8_need > 0) {
        if (c < r->u8_lo || c > r->u8_hi)
            goto bad;
        r->u8_need--;
        r->u8_lo = 0x80;
        r->u8_hi = 0xbf;
        return 0;
    }
    if (c < 0x80)
        return 0;
    if (c >= 0xc2 && c <= 0xdf) {
        r->u8_need = 1;
    } else if (c == 0xe0) {
        r->u8_need = 2;
        r->u8_lo = 0xa0;
    } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
        r->u8_need = 2;
    } else if (c == 0xed) {
        r->u8_need = 2;
        r->u8_hi = 0x9f;
    } else if (c == 0xf0) {
        r->u8_need = 3;
        r->u8_lo = 0x90;
    } else if (c >= 0xf1 && c <= 0xf3) {
        r->u8_need = 3;
    } else if (c == 0xf4) {
        r->u8_need = 3;
        r->u8_hi = 0x8f;
    } else {
        goto bad;
    }
    return 0;
bad:
    if (r->offset == 0 && (c == 0xff || c == 0xfe))
        return reader_fail(r, r->line, "invalid_utf8",
                           "the file is not UTF-8 (it starts like UTF-16); save it as UTF-8 CSV");
    return reader_fail(r, r->line, "invalid_utf8",
                       "invalid UTF-8 (byte 0x%02X at offset %" PRIu64
                       "); the file must be UTF-8 text",
                       c, r->offset);
}

/* One byte through the state machine: the general path, for every byte the fast path in
 * feed_bytes() does not take. */
static int step(struct csv_reader *r, unsigned char c, csv_row_fn *on_row, void *arg)
{
    if (c == 0)
        return reader_fail(r, r->line, "nul_byte",
                           "NUL byte at offset %" PRIu64 "; the file looks binary, not "
                           "like CSV text",
                           r->offset);
    if (check_utf8(r, c) != 0)
        return -1;
    r->offset++;
    r->at_bol = c == '\n' || c == '\r';
    if (r->pending_cr) {
        r->pending_cr = false;
        if (c == '\n') {
            /* The LF of a CRLF: the line was counted at the CR. */
            if (r->state == ST_QUOTED)
                return count_raw(r, 1) != 0 ? -1 : append(r, "\n", 1);
            return 0;
        }
    }

    switch (r->state) {
    case ST_RECORD:
        if (c == '\n' || c == '\r')
            return end_line(r, c, on_row, arg); /* a blank line */
        r->rec_line = r->line;
        r->state = ST_FIELD;
        /* fall through */
    case ST_FIELD:
        if (c == '\n' || c == '\r')
            return end_line(r, c, on_row, arg);
        if (count_raw(r, 1) != 0)
            return -1;
        if (c == '"') {
            r->quote_line = r->line;
            r->state = ST_QUOTED;
            return 0;
        }
        if (c == ',')
            return end_field(r, true);
        r->state = ST_UNQUOTED;
        return append(r, (const char *)&c, 1);
    case ST_UNQUOTED:
        if (c == '\n' || c == '\r')
            return end_line(r, c, on_row, arg);
        if (count_raw(r, 1) != 0)
            return -1;
        if (c == ',') {
            r->state = ST_FIELD;
            return end_field(r, true);
        }
        if (c == '"')
            return reader_fail(r, r->line, "unexpected_quote",
                               "a double quote inside an unquoted field at line %" PRIu64
                               "; quote the whole field and double the quote (\"\")",
                               r->line);
        return append(r, (const char *)&c, 1);
    case ST_QUOTED:
        if (count_raw(r, 1) != 0)
            return -1;
        if (c == '"') {
            r->state = ST_QUOTE_SEEN;
            return 0;
        }
        if (c == '\n' || c == '\r') {
            r->line++;
            r->pending_cr = c == '\r';
        }
        return append(r, (const char *)&c, 1);
    case ST_QUOTE_SEEN:
        if (c == '\n' || c == '\r')
            return end_line(r, c, on_row, arg);
        if (count_raw(r, 1) != 0)
            return -1;
        if (c == '"') {
            r->state = ST_QUOTED;
            return append(r, "\"", 1);
        }
        if (c == ',') {
            r->state = ST_FIELD;
            return end_field(r, true);
        }
        return reader_fail(r, r->line, "text_after_quote",
                           "text after the closing quote of a field at line %" PRIu64
                           "; a quoted field must end at a comma or a line end",
                           r->line);
    case ST_FINISHED:
        break;
    }
    assert(0 && "csv: unreachable state");
    return -1;
}

/* Bytes that only extend the current field: printable ASCII and tabs, except the separators
 * that matter in the state at hand. Runs of them are copied at once. */
static inline bool plain_unquoted(unsigned char c)
{
    return c < 0x80 && c != ',' && c != '"' && (c >= 0x20 || (c != '\n' && c != '\r' && c != 0));
}

static inline bool plain_quoted(unsigned char c)
{
    return c < 0x80 && c != '"' && (c >= 0x20 || (c != '\n' && c != '\r' && c != 0));
}

static int feed_bytes(struct csv_reader *r, const unsigned char *p, size_t len, csv_row_fn *on_row,
                      void *arg)
{
    size_t i = 0;
    while (i < len) {
        if (r->u8_need == 0 && !r->pending_cr &&
            (r->state == ST_UNQUOTED || r->state == ST_QUOTED)) {
            size_t j = i;
            if (r->state == ST_UNQUOTED)
                while (j < len && plain_unquoted(p[j]))
                    j++;
            else
                while (j < len && plain_quoted(p[j]))
                    j++;
            if (j > i) {
                size_t n = j - i;
                if (count_raw(r, n) != 0 || append(r, (const char *)p + i, n) != 0)
                    return -1;
                r->offset += n;
                r->at_bol = false;
                i = j;
                continue;
            }
        }
        if (step(r, p[i], on_row, arg) != 0)
            return -1;
        i++;
    }
    return 0;
}

/* A leading BOM is matched byte by byte so that it may be split across chunks; bytes that
 * turn out not to be one go through the state machine after all. */
static int finish_bom(struct csv_reader *r, csv_row_fn *on_row, void *arg)
{
    unsigned held = r->bom_seen;
    r->bom_done = true;
    if (held == 3)
        return 0;
    return feed_bytes(r, utf8_bom, held, on_row, arg);
}

int csv_feed(struct csv_reader *r, const char *buf, size_t len, csv_row_fn *on_row, void *arg)
{
    const unsigned char *p = (const unsigned char *)buf;
    assert(r->state != ST_FINISHED);
    if (r->failed)
        return -1;
    while (!r->bom_done && len > 0) {
        if (*p == utf8_bom[r->bom_seen]) {
            p++;
            len--;
            if (++r->bom_seen == 3) {
                r->bom_done = true;
                r->offset = 3;
            }
            continue;
        }
        if (finish_bom(r, on_row, arg) != 0)
            return -1;
    }
    return feed_bytes(r, p, len, on_row, arg);
}

int csv_finish(struct csv_reader *r, csv_row_fn *on_row, void *arg)
{
    assert(r->state != ST_FINISHED);
    if (r->failed)
        return -1;
    if (!r->bom_done && finish_bom(r, on_row, arg) != 0)
        return -1;
    if (r->u8_need > 0)
        return reader_fail(r, r->line, "invalid_utf8",
                           "the file ends inside a UTF-8 character at line %" PRIu64, r->line);
    switch (r->state) {
    case ST_QUOTED:
        return reader_fail(r, r->quote_line, "unbalanced_quotes",
                           "the quoted field opened at line %" PRIu64
                           " is never closed; the file ends inside it",
                           r->quote_line);
    case ST_FIELD:
    case ST_UNQUOTED:
    case ST_QUOTE_SEEN:
        if (end_field(r, false) != 0 || emit(r, on_row, arg) != 0)
            return -1;
        break;
    case ST_RECORD:
    case ST_FINISHED:
        break;
    }
    r->state = ST_FINISHED;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The set of accepted tags
 * ------------------------------------------------------------------------------------- */

/*
 * Open addressing with linear probing. A slot is 20 bytes, packed: the tag's two 64-bit
 * halves and the line where it was accepted, together so that a probe touches one place in
 * memory (usually one cache line) rather than two arrays. Line 0 marks an empty slot (lines
 * count from 1), so every tag, the nil UUID included, can be stored. The hash is keyed with
 * random bits per upload so that a file cannot be crafted to make every tag collide.
 */
#define TAGSET_SLOT 20
#define TAGSET_MIN_SLOTS 1024

struct tagset {
    unsigned char *slots;
    size_t mask; /* slots - 1 */
    size_t count;
    uint64_t seed0, seed1;
};

static size_t tagset_slots_for(uint64_t n)
{
    size_t slots = TAGSET_MIN_SLOTS;
    /* At most three quarters full. */
    while (slots < SIZE_MAX / 4 / TAGSET_SLOT && (uint64_t)slots / 4 * 3 < n)
        slots *= 2;
    return slots;
}

static int tagset_alloc(struct tagset *s, size_t slots)
{
    if (slots > SIZE_MAX / TAGSET_SLOT)
        return -1;
    s->slots = calloc(slots, TAGSET_SLOT);
    if (s->slots == NULL)
        return -1;
    s->mask = slots - 1;
    s->count = 0;
    return 0;
}

/* For a given first half the combination is a bijection of the second, and MurmurHash3's
 * finaliser then spreads every input bit over the low bits the table uses, so tags that
 * differ only in their last byte (sequential ones) land far apart. */
static inline size_t tagset_hash(const struct tagset *s, uint64_t a, uint64_t b)
{
    uint64_t h = (a ^ s->seed0) * 0x9e3779b97f4a7c15ULL ^ (b ^ s->seed1);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (size_t)h;
}

static inline uint32_t slot_line(const unsigned char *slot)
{
    uint32_t line;
    memcpy(&line, slot + 16, 4);
    return line;
}

static inline bool slot_is(const unsigned char *slot, uint64_t a, uint64_t b)
{
    uint64_t sa, sb;
    memcpy(&sa, slot, 8);
    memcpy(&sb, slot + 8, 8);
    return sa == a && sb == b;
}

static inline void slot_set(unsigned char *slot, uint64_t a, uint64_t b, uint32_t line)
{
    memcpy(slot, &a, 8);
    memcpy(slot + 8, &b, 8);
    memcpy(slot + 16, &line, 4);
}

/* The slot of (a, b) or the empty slot where it belongs. */
static inline unsigned char *tagset_find(const struct tagset *s, uint64_t a, uint64_t b)
{
    size_t i = tagset_hash(s, a, b) & s->mask;
    for (;;) {
        unsigned char *slot = s->slots + i * TAGSET_SLOT;
        if (slot_line(slot) == 0 || slot_is(slot, a, b))
            return slot;
        i = (i + 1) & s->mask;
    }
}

static int tagset_grow(struct tagset *s)
{
    struct tagset old = *s;
    if (tagset_alloc(s, (old.mask + 1) * 2) != 0) {
        *s = old;
        return -1;
    }
    for (size_t i = 0; i <= old.mask; i++) {
        const unsigned char *slot = old.slots + i * TAGSET_SLOT;
        uint64_t a, b;
        if (slot_line(slot) == 0)
            continue;
        memcpy(&a, slot, 8);
        memcpy(&b, slot + 8, 8);
        memcpy(tagset_find(s, a, b), slot, TAGSET_SLOT);
    }
    s->count = old.count;
    free(old.slots);
    return 0;
}

/*
 * Adds a tag seen at line. 1 when it was new, 0 when it was already there (*first_line says
 * where; lines past 2^32 - 1 are stored as that), -1 when out of memory.
 */
static int tagset_add(struct tagset *s, const uint8_t tag[16], uint64_t line, uint64_t *first_line)
{
    uint64_t a, b;
    memcpy(&a, tag, 8);
    memcpy(&b, tag + 8, 8);
    unsigned char *slot = tagset_find(s, a, b);
    if (slot_line(slot) != 0) {
        *first_line = slot_line(slot);
        return 0;
    }
    if (s->count + 1 > (s->mask + 1) / 4 * 3) {
        if (tagset_grow(s) != 0)
            return -1;
        slot = tagset_find(s, a, b);
    }
    slot_set(slot, a, b, line > UINT32_MAX ? UINT32_MAX : (uint32_t)line);
    s->count++;
    return 1;
}

static size_t tagset_memory(const struct tagset *s)
{
    return (s->mask + 1) * TAGSET_SLOT;
}

/* ---------------------------------------------------------------------------------------
 * Upload validator
 * ------------------------------------------------------------------------------------- */

struct csv_upload {
    struct csv_upload_config cfg;
    csv_tag_fn *on_tag;
    csv_upload_error_fn *on_error;
    void *arg;
    struct csv_reader *reader;
    struct tagset set;

    bool have_header;
    uint64_t header_line;
    size_t ncols;
    size_t tag_col;
    size_t serial_col; /* SIZE_MAX: none */

    uint64_t rows_total, rows_accepted, rows_rejected;
    bool failed;
    struct csv_error err;
};

void csv_upload_config_default(struct csv_upload_config *cfg)
{
    csv_limits_default(&cfg->limits);
    cfg->max_rows = 5000000;
    cfg->max_serial_bytes = 100;
    cfg->expected_rows = 0;
}

struct csv_upload *csv_upload_new(const struct csv_upload_config *cfg, csv_tag_fn *on_tag,
                                  csv_upload_error_fn *on_error, void *arg)
{
    struct csv_upload *u = NULL;
    struct csv_upload_config def;
    uint8_t seed[16];
    if (cfg == NULL) {
        csv_upload_config_default(&def);
        cfg = &def;
    }
    if (on_tag == NULL || on_error == NULL || cfg->max_rows == 0)
        return NULL;
    u = calloc(1, sizeof(*u));
    if (u == NULL)
        goto fail;
    u->cfg = *cfg;
    u->on_tag = on_tag;
    u->on_error = on_error;
    u->arg = arg;
    u->serial_col = SIZE_MAX;
    u->reader = csv_reader_new(&cfg->limits);
    if (u->reader == NULL)
        goto fail;
    uint64_t expected = cfg->expected_rows < cfg->max_rows ? cfg->expected_rows : cfg->max_rows;
    if (tagset_alloc(&u->set, tagset_slots_for(expected)) != 0)
        goto fail;
    /* Without the kernel's random bits the set still works, only predictably. */
    if (uuid_v4(seed) == 0) {
        memcpy(&u->set.seed0, seed, 8);
        memcpy(&u->set.seed1, seed + 8, 8);
    }
    return u;
fail:
    csv_upload_free(u);
    return NULL;
}

void csv_upload_free(struct csv_upload *u)
{
    if (u == NULL)
        return;
    csv_reader_free(u->reader);
    free(u->set.slots);
    free(u);
}

const struct csv_error *csv_upload_error(const struct csv_upload *u)
{
    return u->failed ? &u->err : NULL;
}

void csv_upload_stats(const struct csv_upload *u, struct csv_upload_stats *out)
{
    out->rows_total = u->rows_total;
    out->rows_accepted = u->rows_accepted;
    out->rows_rejected = u->rows_rejected;
    out->lines = csv_reader_lines(u->reader);
    out->bytes = csv_reader_bytes(u->reader);
}

size_t csv_upload_memory(const struct csv_upload *u)
{
    return sizeof(*u) + csv_reader_memory(u->reader) + tagset_memory(&u->set);
}

/* A message under construction, always NUL-terminated and never longer than its buffer. */
struct msg {
    char *p;
    size_t pos;
};

__attribute__((format(printf, 2, 3))) static void msg_printf(struct msg *m, const char *fmt, ...)
{
    va_list ap;
    if (m->pos >= CSV_MESSAGE_MAX - 1)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(m->p + m->pos, CSV_MESSAGE_MAX - m->pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->pos += (size_t)n < CSV_MESSAGE_MAX - m->pos ? (size_t)n : CSV_MESSAGE_MAX - 1 - m->pos;
}

/*
 * Quotes at most max bytes of a field (valid UTF-8, which the reader guarantees) in a
 * message: cut only between characters, control characters shown as '?', "..." when cut,
 * so that the message stays valid UTF-8 on one line.
 */
static void msg_quote(struct msg *m, const char *s, size_t n, size_t max)
{
    bool cut = false;
    size_t room = CSV_MESSAGE_MAX - 1 - m->pos;
    if (room < 5)
        return;
    if (max > room - 5)
        max = room - 5;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
        cut = true;
    }
    m->p[m->pos++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        m->p[m->pos++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (cut) {
        memcpy(m->p + m->pos, "...", 3);
        m->pos += 3;
    }
    m->p[m->pos++] = '"';
    m->p[m->pos] = '\0';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_space((*s)[*n - 1]))
        (*n)--;
}

static bool name_is(const struct csv_field *f, const char *name)
{
    const char *s = f->data;
    size_t n = f->len;
    size_t want = strlen(name);
    trim(&s, &n);
    if (n != want)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != name[i])
            return false;
    }
    return true;
}

/* A callback asked to stop at line. Always -1. */
static int stopped(struct csv_upload *u, uint64_t line)
{
    u->failed = true;
    u->err.line = line;
    u->err.code = "stopped";
    u->err.fatal = true;
    snprintf(u->err.message, sizeof(u->err.message), "the upload was stopped");
    return -1;
}

/* Reports a row error to the caller. 0, or -1 when the caller asked to stop. */
static int report(struct csv_upload *u, const struct csv_error *e)
{
    return u->on_error(u->arg, e) != 0 ? stopped(u, e->line) : 0;
}

/* Ends the upload with a fatal error already written into u->err; the callback's answer does
 * not matter, as the upload stops anyway. Always -1. */
static int upload_fail(struct csv_upload *u)
{
    u->failed = true;
    u->err.fatal = true;
    (void)u->on_error(u->arg, &u->err);
    return -1;
}

__attribute__((format(printf, 4, 5))) static int fatal(struct csv_upload *u, uint64_t line,
                                                       const char *code, const char *fmt, ...)
{
    va_list ap;
    u->err.line = line;
    u->err.code = code;
    va_start(ap, fmt);
    vsnprintf(u->err.message, sizeof(u->err.message), fmt, ap);
    va_end(ap);
    return upload_fail(u);
}

static int take_header(struct csv_upload *u, uint64_t line, const struct csv_field *f, size_t n)
{
    size_t tag_col = SIZE_MAX, serial_col = SIZE_MAX;
    bool looks_like_data = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t raw[16];
        if (name_is(&f[i], "tag_id")) {
            if (tag_col != SIZE_MAX)
                return fatal(u, line, "duplicate_column",
                             "the header names the tag_id column twice (columns %zu and %zu)",
                             tag_col + 1, i + 1);
            tag_col = i;
        } else if (name_is(&f[i], "serial")) {
            if (serial_col != SIZE_MAX)
                return fatal(u, line, "duplicate_column",
                             "the header names the serial column twice (columns %zu and %zu)",
                             serial_col + 1, i + 1);
            serial_col = i;
        } else if (uuid_parse(f[i].data, f[i].len, raw) == 0) {
            looks_like_data = true;
        }
    }
    if (tag_col == SIZE_MAX) {
        struct msg m = {u->err.message, 0};
        u->err.line = line;
        u->err.code = "no_tag_id_column";
        if (looks_like_data) {
            msg_printf(&m, "the first row holds a UUID, not column names; add a header row "
                           "with a tag_id column");
        } else {
            msg_printf(&m, "the header row has no tag_id column (columns: ");
            for (size_t i = 0; i < n && m.pos < CSV_MESSAGE_MAX - 8; i++) {
                if (i > 0)
                    msg_printf(&m, ", ");
                msg_quote(&m, f[i].data, f[i].len, 24);
            }
            msg_printf(&m, ")");
        }
        return upload_fail(u);
    }
    u->have_header = true;
    u->header_line = line;
    u->ncols = n;
    u->tag_col = tag_col;
    u->serial_col = serial_col;
    return 0;
}

static int reject(struct csv_upload *u, struct csv_error *e)
{
    u->rows_rejected++;
    e->fatal = false;
    return report(u, e);
}

static void invalid_uuid_message(struct msg *m, const char *s, size_t n)
{
    const char *t = s;
    size_t tn = n;
    uint8_t raw[16];
    if (n == 0) {
        msg_printf(m, "tag_id is empty");
        return;
    }
    msg_printf(m, "tag_id ");
    msg_quote(m, s, n, 48);
    trim(&t, &tn);
    if (tn != n && uuid_parse(t, tn, raw) == 0)
        msg_printf(m, " has spaces around it; write the UUID alone");
    else if (n >= 2 && s[0] == '{')
        msg_printf(m, " is in braces; write the UUID without them");
    else if (n == 32 && memchr(s, '-', n) == NULL)
        msg_printf(m, " has no hyphens; write it as 8-4-4-4-12 hex digits");
    else
        msg_printf(m, " is not a canonical UUID (8-4-4-4-12 hex digits, "
                      "like 7c9e6679-7425-40de-944b-e07fc1f90ae7)");
}

static int take_row(struct csv_upload *u, uint64_t line, const struct csv_field *f, size_t n)
{
    /* Filled only on the way to a row error: zeroing it for every row costs more than the
     * rest of an accepted row's checks. */
    struct csv_error e;
    struct msg m = {e.message, 0};
    e.line = line;
    e.message[0] = '\0';
    struct csv_tag_row row;
    const struct csv_field *tag;
    uint64_t first_line = 0;

    if (u->rows_total >= u->cfg.max_rows)
        return fatal(u, line, "too_many_rows",
                     "the file has more than %" PRIu64 " rows; split it into several uploads",
                     u->cfg.max_rows);
    u->rows_total++;

    if (n != u->ncols) {
        e.code = "field_count";
        msg_printf(&m, "the row has %zu field%s but the header has %zu", n, n == 1 ? "" : "s",
                   u->ncols);
        return reject(u, &e);
    }
    tag = &f[u->tag_col];
    if (uuid_parse(tag->data, tag->len, row.tag) != 0) {
        e.code = "invalid_uuid";
        invalid_uuid_message(&m, tag->data, tag->len);
        return reject(u, &e);
    }
    row.serial = NULL;
    row.serial_len = 0;
    if (u->serial_col != SIZE_MAX && f[u->serial_col].len > 0) {
        const struct csv_field *s = &f[u->serial_col];
        if (s->len > u->cfg.max_serial_bytes) {
            e.code = "serial_too_long";
            msg_printf(&m, "serial is %zu bytes long; at most %zu are allowed", s->len,
                       u->cfg.max_serial_bytes);
            return reject(u, &e);
        }
        for (size_t i = 0; i < s->len; i++) {
            unsigned char c = (unsigned char)s->data[i];
            if (c < 0x20 || c == 0x7f) {
                e.code = "invalid_serial";
                msg_printf(&m, "serial ");
                msg_quote(&m, s->data, s->len, 48);
                msg_printf(&m, " contains a control character (a line break or a tab)");
                return reject(u, &e);
            }
        }
        row.serial = s->data;
        row.serial_len = s->len;
    }
    switch (tagset_add(&u->set, row.tag, line, &first_line)) {
    case 1:
        break;
    case 0:
        e.code = "duplicate_tag_id";
        uuid_format(row.tag, row.tag_str);
        msg_printf(&m, "duplicate tag_id %s in this file (first at line %" PRIu64 ")", row.tag_str,
                   first_line);
        return reject(u, &e);
    default:
        return fatal(u, line, "out_of_memory", "out of memory while checking for duplicates");
    }
    uuid_format(row.tag, row.tag_str);
    row.line = line;
    u->rows_accepted++;
    return u->on_tag(u->arg, &row) != 0 ? stopped(u, line) : 0;
}

static int upload_on_row(void *arg, uint64_t line, const struct csv_field *f, size_t n)
{
    struct csv_upload *u = arg;
    bool empty = true;
    for (size_t i = 0; i < n && empty; i++)
        empty = f[i].len == 0;
    if (empty)
        return 0;
    if (!u->have_header)
        return take_header(u, line, f, n);
    return take_row(u, line, f, n);
}

/* After the reader failed: its own error, unless it stopped because this module did. */
static int reader_failed(struct csv_upload *u)
{
    if (u->failed)
        return -1;
    u->err = *csv_reader_error(u->reader);
    return upload_fail(u);
}

int csv_upload_feed(struct csv_upload *u, const char *buf, size_t len)
{
    if (u->failed)
        return -1;
    if (csv_feed(u->reader, buf, len, upload_on_row, u) != 0)
        return reader_failed(u);
    return 0;
}

int csv_upload_finish(struct csv_upload *u)
{
    if (u->failed)
        return -1;
    if (csv_finish(u->reader, upload_on_row, u) != 0)
        return reader_failed(u);
    if (!u->have_header)
        return fatal(u, 1, "empty_file",
                     "the file is empty; it needs a header row with a tag_id "
                     "column and one row per tag");
    if (u->rows_total == 0)
        return fatal(u, u->header_line, "no_rows", "the file has a header row but no rows of tags");
    return 0;
}
