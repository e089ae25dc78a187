/*
 * Unit tests of csv: the RFC 4180 reader and the tag-upload validator. Every table case runs
 * fed at once, byte by byte, cut at every single point and in random chunks, and must give the
 * same rows and errors each time: that is what a streaming parser owes its caller.
 */
#include "support.h"
#include "csv.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A growing string that collects what the callbacks saw. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    sb_add(b, tmp, (size_t)n);
}

/* Field bytes, with line breaks and other control bytes made visible. */
static void sb_escaped(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            sb_add(b, "\\n", 2);
        else if (c == '\r')
            sb_add(b, "\\r", 2);
        else if (c < 0x20)
            sb_printf(b, "\\x%02x", c);
        else
            sb_add(b, (const char *)&c, 1);
    }
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static const char *sb_str(const struct sbuf *b)
{
    return b->p ? b->p : "";
}

/* A strict UTF-8 check, for messages. */
static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++, need, min;
        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, min = 0x10000;
        else
            return false;
        unsigned cp = c & (0x3f >> need);
        for (unsigned i = 0; i < need; i++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*p++ & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

/* Deterministic pseudo-random numbers (splitmix64). */
static uint64_t rnd_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* How a test cuts its input into chunks. */
enum cut { CUT_WHOLE, CUT_BYTES, CUT_AT, CUT_RANDOM };

struct chunking {
    enum cut how;
    size_t at;     /* CUT_AT: the first chunk's length */
    uint64_t seed; /* CUT_RANDOM */
};

/* Calls feed for each chunk of in until it fails; returns its last result. */
static int feed_chunks(const char *in, size_t len, struct chunking ch,
                       int (*feed)(void *ctx, const char *p, size_t n), void *ctx)
{
    size_t pos = 0;
    uint64_t seed = ch.seed;
    if (len == 0)
        return feed(ctx, in, 0);
    while (pos < len) {
        size_t n = len - pos;
        if (ch.how == CUT_BYTES)
            n = 1;
        else if (ch.how == CUT_AT && pos == 0)
            n = ch.at;
        else if (ch.how == CUT_RANDOM)
            n = 1 + rnd_next(&seed) % (n < 9 ? n : 9);
        if (feed(ctx, in + pos, n) != 0)
            return -1;
        pos += n;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Reader
 * ---------------------------------------------------------------------------------------- */

struct reader_run {
    struct csv_reader *r;
    struct sbuf out;
};

static int collect_row(void *arg, uint64_t line, const struct csv_field *f, size_t n)
{
    struct sbuf *b = arg;
    sb_printf(b, "%" PRIu64 ":", line);
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "[", 1);
        sb_escaped(b, f[i].data, f[i].len);
        sb_add(b, "]", 1);
    }
    sb_add(b, "\n", 1);
    return 0;
}

static int reader_feed(void *ctx, const char *p, size_t n)
{
    struct reader_run *run = ctx;
    return csv_feed(run->r, p, n, collect_row, &run->out);
}

/*
 * Reads in with the given limits and cut, and returns (caller frees) the rows, one a line,
 * then "! code@line" for an error and its message on a further line.
 */
static char *read_all(const char *in, size_t len, const struct csv_limits *lim, struct chunking ch)
{
    struct reader_run run = {csv_reader_new(lim), {0}};
    assert_non_null(run.r);
    int rc = feed_chunks(in, len, ch, reader_feed, &run);
    if (rc == 0)
        rc = csv_finish(run.r, collect_row, &run.out);
    const struct csv_error *e = csv_reader_error(run.r);
    assert_int_equal(rc == 0, e == NULL);
    if (e != NULL) {
        assert_true(e->fatal);
        assert_true(e->message[0] != '\0');
        assert_true(valid_utf8(e->message));
        sb_printf(&run.out, "! %s@%" PRIu64 "\n%s\n", e->code, e->line, e->message);
        /* A failed reader stays failed. */
        assert_int_equal(csv_feed(run.r, "a\n", 2, collect_row, &run.out), -1);
    }
    assert_true(csv_reader_memory(run.r) <= csv_reader_bound(lim));
    csv_reader_free(run.r);
    sb_add(&run.out, "", 0);
    return run.out.p;
}

/* The rows of the whole input, and the same for every other way of cutting it. */
static char *read_every_way(const char *name, const char *in, size_t len,
                            const struct csv_limits *lim)
{
    char *whole = read_all(in, len, lim, (struct chunking){CUT_WHOLE, 0, 0});
    char *got = read_all(in, len, lim, (struct chunking){CUT_BYTES, 0, 0});
    if (strcmp(whole, got) != 0)
        fail_msg("%s: byte by byte\n%s\ndiffers from whole\n%s", name, got, whole);
    free(got);
    for (size_t at = 1; at < len; at++) {
        got = read_all(in, len, lim, (struct chunking){CUT_AT, at, 0});
        if (strcmp(whole, got) != 0)
            fail_msg("%s: cut at %zu\n%s\ndiffers from whole\n%s", name, at, got, whole);
        free(got);
    }
    for (uint64_t seed = 1; seed <= 8; seed++) {
        got = read_all(in, len, lim, (struct chunking){CUT_RANDOM, 0, seed});
        if (strcmp(whole, got) != 0)
            fail_msg("%s: random cut %" PRIu64 "\n%s\ndiffers from whole\n%s", name, seed, got,
                     whole);
        free(got);
    }
    return whole;
}

#define S(lit) lit, sizeof(lit) - 1

struct reader_case {
    const char *name;
    const char *in;
    size_t len;
    const char *rows;                         /* expected rows, as read_all() writes them */
    const char *error;                        /* "code@line", or NULL */
    size_t max_field, max_record, max_fields; /* 0: the default */
};

static const struct reader_case reader_cases[] = {
    {"lf", S("a,b\nc,d\n"), "1:[a][b]\n2:[c][d]\n", NULL, 0, 0, 0},
    {"no final line end", S("a,b\nc,d"), "1:[a][b]\n2:[c][d]\n", NULL, 0, 0, 0},
    {"crlf", S("a,b\r\nc,d\r\n"), "1:[a][b]\n2:[c][d]\n", NULL, 0, 0, 0},
    {"lone cr", S("a,b\rc,d\r"), "1:[a][b]\n2:[c][d]\n", NULL, 0, 0, 0},
    {"mixed line ends", S("a\r\nb\nc\rd\r\n\re"), "1:[a]\n2:[b]\n3:[c]\n4:[d]\n6:[e]\n", NULL, 0, 0,
     0},
    {"cr cr lf is a line and a blank line", S("a\r\r\nb"), "1:[a]\n3:[b]\n", NULL, 0, 0, 0},
    {"bom",
     S("\xef\xbb\xbf"
       "a,b\r\n"),
     "1:[a][b]\n", NULL, 0, 0, 0},
    {"bom only", S("\xef\xbb\xbf"), "", NULL, 0, 0, 0},
    {"bom then blank lines", S("\xef\xbb\xbf\n\nx"), "3:[x]\n", NULL, 0, 0, 0},
    {"bom not at start is data",
     S("a\n\xef\xbb\xbf"
       "b\n"),
     "1:[a]\n2:[\xef\xbb\xbf"
     "b]\n",
     NULL, 0, 0, 0},
    {"two boms: the second is data",
     S("\xef\xbb\xbf\xef\xbb\xbf"
       "a"),
     "1:[\xef\xbb\xbf"
     "a]\n",
     NULL, 0, 0, 0},
    {"bom prefix of another character", S("\xef\xbb\x80x\n"), "1:[\xef\xbb\x80x]\n", NULL, 0, 0, 0},
    {"bom prefix then ascii",
     S("\xef\xbb"
       "a\n"),
     "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"bom prefix at eof", S("\xef\xbb"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"empty input", S(""), "", NULL, 0, 0, 0},
    {"only blank lines", S("\n\r\n\r\n\n"), "", NULL, 0, 0, 0},
    {"trailing blank lines", S("a\n\n\r\n\n"), "1:[a]\n", NULL, 0, 0, 0},
    {"blank lines in the middle", S("a\n\n\nb\r\n\r\nc"), "1:[a]\n4:[b]\n6:[c]\n", NULL, 0, 0, 0},
    {"leading blank lines", S("\n\r\na\n"), "3:[a]\n", NULL, 0, 0, 0},
    {"empty fields", S("a,,b\n,\n,,\n"), "1:[a][][b]\n2:[][]\n3:[][][]\n", NULL, 0, 0, 0},
    {"trailing comma at eof", S("a,"), "1:[a][]\n", NULL, 0, 0, 0},
    {"spaces are data", S(" a , b \n \n\t\n"), "1:[ a ][ b ]\n2:[ ]\n3:[\\x09]\n", NULL, 0, 0, 0},
    {"quoted comma", S("\"a,b\",c\n"), "1:[a,b][c]\n", NULL, 0, 0, 0},
    {"escaped quotes", S("\"he said \"\"hi\"\"\",\"\"\"\"\n"), "1:[he said \"hi\"][\"]\n", NULL, 0,
     0, 0},
    {"quoted lf", S("\"x\ny\",z\nw\n"), "1:[x\\ny][z]\n3:[w]\n", NULL, 0, 0, 0},
    {"quoted crlf", S("\"x\r\ny\"\r\nw"), "1:[x\\r\\ny]\n3:[w]\n", NULL, 0, 0, 0},
    {"quoted lone cr and blank lines", S("\"\r\r\n\n\",b\nc"), "1:[\\r\\r\\n\\n][b]\n5:[c]\n", NULL,
     0, 0, 0},
    {"quoted empty", S("\"\"\n\"\",\"\"\n"), "1:[]\n2:[][]\n", NULL, 0, 0, 0},
    {"quoted field at eof", S("a,\"b\""), "1:[a][b]\n", NULL, 0, 0, 0},
    {"quoted field then blank line", S("\"a\"\r\n\r\n"), "1:[a]\n", NULL, 0, 0, 0},
    {"utf-8 text", S("\xc3\xa9t\xc3\xa9,\xe6\x97\xa5\xe6\x9c\xac,\xf0\x9f\x98\x80\n"),
     "1:[\xc3\xa9t\xc3\xa9][\xe6\x97\xa5\xe6\x9c\xac][\xf0\x9f\x98\x80]\n", NULL, 0, 0, 0},
    {"quoted utf-8", S("\"\xf0\x9f\x98\x80,\xf0\x9f\x98\x80\""),
     "1:[\xf0\x9f\x98\x80,\xf0\x9f\x98\x80]\n", NULL, 0, 0, 0},
    {"unbalanced quote at eof", S("a\n\"b,c\nd\n"), "1:[a]\n! unbalanced_quotes@2\n",
     "unbalanced_quotes@2", 0, 0, 0},
    {"unbalanced quote at eof after text", S("x,\"abc"), "! unbalanced_quotes@1\n",
     "unbalanced_quotes@1", 0, 0, 0},
    {"quote inside unquoted field", S("a\nab\"c\n"), "1:[a]\n! unexpected_quote@2\n",
     "unexpected_quote@2", 0, 0, 0},
    {"text after closing quote", S("a\n\n\"a\"b\n"), "1:[a]\n! text_after_quote@3\n",
     "text_after_quote@3", 0, 0, 0},
    {"space after closing quote", S("\"a\" ,b\n"), "! text_after_quote@1\n", "text_after_quote@1",
     0, 0, 0},
    {"text after quote on a later line", S("\"a\nb\"c"), "! text_after_quote@2\n",
     "text_after_quote@2", 0, 0, 0},
    {"nul byte", S("a\nb\0c\n"), "1:[a]\n! nul_byte@2\n", "nul_byte@2", 0, 0, 0},
    {"nul byte in quotes", S("\"\0\""), "! nul_byte@1\n", "nul_byte@1", 0, 0, 0},
    {"invalid byte", S("a\n\xff\n"), "1:[a]\n! invalid_utf8@2\n", "invalid_utf8@2", 0, 0, 0},
    {"lone continuation byte", S("a\x80"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"overlong slash", S("\xc0\xaf"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"overlong three bytes", S("\xe0\x80\xaf"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"surrogate", S("\xed\xa0\x80"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"above U+10FFFF", S("\xf4\x90\x80\x80"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"sequence cut by a comma", S("\xe2\x82,x"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"sequence cut by a line end", S("a\n\xe2\n"), "1:[a]\n! invalid_utf8@2\n", "invalid_utf8@2", 0,
     0, 0},
    {"sequence cut by eof", S("a\n\xe2\x82"), "1:[a]\n! invalid_utf8@2\n", "invalid_utf8@2", 0, 0,
     0},
    {"utf-16 le", S("\xff\xfet\0a\0g\0"), "! invalid_utf8@1\n", "invalid_utf8@1", 0, 0, 0},
    {"latin-1", S("tag_id\ncaf\xe9\n"), "1:[tag_id]\n! invalid_utf8@2\n", "invalid_utf8@2", 0, 0,
     0},
    {"fields at the limit", S("a,b,c\n"), "1:[a][b][c]\n", NULL, 0, 0, 3},
    {"too many fields", S("a,b,c\na,b,c,d\n"), "1:[a][b][c]\n! too_many_fields@2\n",
     "too_many_fields@2", 0, 0, 3},
    {"too many empty fields", S(",,,"), "! too_many_fields@1\n", "too_many_fields@1", 0, 0, 3},
    {"field at the limit", S("abcd,\"ab\"\"\"\n"), "1:[abcd][ab\"]\n", NULL, 4, 0, 0},
    {"field too long", S("abcd\nabcde\n"), "1:[abcd]\n! field_too_long@2\n", "field_too_long@2", 4,
     0, 0},
    {"quoted field too long", S("\"ab\ncde\""), "! field_too_long@1\n", "field_too_long@1", 4, 0,
     0},
    {"line at the limit", S("1234,678\r\n"), "1:[1234][678]\n", NULL, 0, 8, 0},
    {"line too long", S("12345678\n1234,6789\n"), "1:[12345678]\n! line_too_long@2\n",
     "line_too_long@2", 0, 8, 0},
    {"quoted record too long", S("a\n\"12\n345\n67\""), "1:[a]\n! line_too_long@2\n",
     "line_too_long@2", 0, 8, 0},
};

static void test_reader_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reader_cases) / sizeof(reader_cases[0]); i++) {
        const struct reader_case *c = &reader_cases[i];
        struct csv_limits lim;
        csv_limits_default(&lim);
        if (c->max_field)
            lim.max_field_bytes = c->max_field;
        if (c->max_record)
            lim.max_record_bytes = c->max_record;
        if (c->max_fields)
            lim.max_fields = c->max_fields;
        char *got = read_every_way(c->name, c->in, c->len, &lim);
        /* The rows and the "! code@line" line; the message follows it. */
        size_t rows_len = strlen(c->rows);
        if (strncmp(got, c->rows, rows_len) != 0)
            fail_msg("%s: got\n%s\nwant\n%s", c->name, got, c->rows);
        if (c->error == NULL && got[rows_len] != '\0')
            fail_msg("%s: unexpected %s", c->name, got + rows_len);
        if (c->error != NULL && got[rows_len] == '\0')
            fail_msg("%s: no error, want %s", c->name, c->error);
        free(got);
    }
}

/* Messages say what is wrong and where, in words a factory's operator understands. */
static void test_reader_messages(void **state)
{
    (void)state;
    struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {S("a\n\"b\nc"), "the quoted field opened at line 2 is never closed"},
        {S("ab\"c"), "quote the whole field and double the quote"},
        {S("\"a\"b"), "a quoted field must end at a comma or a line end"},
        {S("a\0"), "NUL byte at offset 1"},
        {S("ab\xff"), "byte 0xFF at offset 2"},
        {S("\xef\xbb\xbf"
           "ab\xff"),
         "byte 0xFF at offset 5"},
        {S("\xff\xfe"), "starts like UTF-16"},
        {S("\xe2\x82"), "ends inside a UTF-8 character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = read_all(cases[i].in, cases[i].len, NULL, (struct chunking){CUT_WHOLE, 0, 0});
        if (strstr(got, cases[i].want) == NULL)
            fail_msg("case %zu: %s lacks \"%s\"", i, got, cases[i].want);
        free(got);
    }
    struct csv_limits lim;
    csv_limits_default(&lim);
    lim.max_record_bytes = 8;
    char *got = read_all(S("a\n\"12\n345\n67\""), &lim, (struct chunking){CUT_WHOLE, 0, 0});
    assert_non_null(strstr(got, "the quoted field opened at line 2 may be missing its closing "
                                "quote"));
    free(got);
}

/*
 * Random records with every awkward byte, written with correct quoting and random line ends,
 * come back field for field and with their line numbers, however the input is cut.
 */
static void test_reader_roundtrip_random(void **state)
{
    (void)state;
    static const char *atoms[] = {
        "a", "Z", " ", ",", "\"", "\n", "\r", "\r\n", "\xc3\xa9", "\xf0\x9f\x98\x80", "\t", "0"};
    static const char *ends[] = {"\n", "\r\n", "\r"};
    for (uint64_t seed = 1; seed <= 40; seed++) {
        uint64_t s = seed;
        struct sbuf csv = {0}, want = {0};
        size_t records = 1 + rnd_next(&s) % 30;
        for (size_t rec = 0; rec < records; rec++) {
            /* The record's line: one more than the line ends written so far. */
            uint64_t line = 1;
            for (size_t i = 0; i < csv.len; i++)
                if (csv.p[i] == '\r' || (csv.p[i] == '\n' && (i == 0 || csv.p[i - 1] != '\r')))
                    line++;
            sb_printf(&want, "%" PRIu64 ":", line);
            size_t nfields = 1 + rnd_next(&s) % 5;
            for (size_t f = 0; f < nfields; f++) {
                struct sbuf field = {0};
                size_t natoms = rnd_next(&s) % 6;
                for (size_t a = 0; a < natoms; a++) {
                    const char *atom = atoms[rnd_next(&s) % (sizeof(atoms) / sizeof(atoms[0]))];
                    sb_add(&field, atom, strlen(atom));
                }
                bool special = field.len > 0 && strpbrk(field.p, ",\"\r\n") != NULL;
                /* A record of one empty field must be quoted, or it is a blank line. */
                bool quote = special || (nfields == 1 && field.len == 0) || rnd_next(&s) % 4 == 0;
                if (f > 0)
                    sb_add(&csv, ",", 1);
                if (quote)
                    sb_add(&csv, "\"", 1);
                for (size_t k = 0; k < field.len; k++) {
                    if (field.p[k] == '"')
                        sb_add(&csv, "\"", 1);
                    sb_add(&csv, field.p + k, 1);
                }
                if (quote)
                    sb_add(&csv, "\"", 1);
                sb_add(&want, "[", 1);
                sb_escaped(&want, sb_str(&field), field.len);
                sb_add(&want, "]", 1);
                sb_free(&field);
            }
            sb_add(&want, "\n", 1);
            bool last = rec + 1 == records;
            if (!last || rnd_next(&s) % 2 == 0) {
                const char *end = ends[rnd_next(&s) % 3];
                sb_add(&csv, end, strlen(end));
            }
            /* Blank lines, written as CRLF so that a CR before them stays one line end. */
            while (!last && rnd_next(&s) % 5 == 0)
                sb_add(&csv, "\r\n", 2);
        }
        char *got = read_every_way("random", csv.p, csv.len, NULL);
        if (strcmp(got, want.p) != 0)
            fail_msg("seed %" PRIu64 ": got\n%s\nwant\n%s", seed, got, want.p);
        free(got);
        sb_free(&csv);
        sb_free(&want);
    }
}

static int count_rows(void *arg, uint64_t line, const struct csv_field *f, size_t n)
{
    (void)line, (void)f, (void)n;
    (*(size_t *)arg)++;
    return 0;
}

/*
 * A 1 MB line, in 4 KiB chunks as from a socket, is rejected with its line number as soon as
 * it passes the limit; the reader never holds more than the limit.
 */
static void test_reader_megabyte_line(void **state)
{
    (void)state;
    const size_t mb = 1024 * 1024;
    struct {
        char fill;  /* what the long line is made of */
        size_t gap; /* a comma every gap bytes, 0: none */
        const char *code;
    } cases[] = {
        {'x', 0, "line_too_long"},    /* one huge unquoted field */
        {'x', 2000, "line_too_long"}, /* 33 fields of 2000 bytes pass 64 KiB */
        {'x', 10, "too_many_fields"}, /* short fields run out of columns first */
        {'\n', 0, "line_too_long"},   /* a quoted field of line breaks: line of the quote */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char *in = malloc(mb + 64);
        assert_non_null(in);
        size_t len = 0;
        len += (size_t)sprintf(in, "tag_id\r\n\r\n");
        if (cases[c].fill == '\n')
            in[len++] = '"';
        for (size_t i = 0; i < mb; i++)
            in[len++] = cases[c].gap && i % cases[c].gap == cases[c].gap - 1 ? ',' : cases[c].fill;
        len += (size_t)sprintf(in + len, "\nlast\n");

        struct csv_reader *r = csv_reader_new(NULL);
        size_t rows = 0, fed = 0, chunks_after_error = 0;
        int rc = 0;
        for (size_t pos = 0; pos < len; pos += 4096) {
            size_t n = len - pos < 4096 ? len - pos : 4096;
            if (rc != 0)
                chunks_after_error++;
            rc = csv_feed(r, in + pos, n, count_rows, &rows);
            assert_true(csv_reader_memory(r) <= csv_reader_bound(NULL));
            if (rc == 0)
                fed = pos + n;
        }
        assert_int_equal(rc, -1);
        const struct csv_error *e = csv_reader_error(r);
        assert_non_null(e);
        assert_string_equal(e->code, cases[c].code);
        assert_int_equal(e->line, 3);
        assert_int_equal(rows, 1);
        /* It gave up within the first 64 KiB of the line, not at its end. */
        assert_true(fed <= 64 * 1024 + 4096);
        assert_true(chunks_after_error > 200);
        assert_true(csv_reader_bound(NULL) < 80 * 1024);
        csv_reader_free(r);
        free(in);
    }
}

/* Random bytes: a clear error at some line, never a crash, memory within the bound. */
static void test_reader_binary_garbage(void **state)
{
    (void)state;
    static char in[64 * 1024];
    for (uint64_t seed = 1; seed <= 64; seed++) {
        uint64_t s = seed;
        for (size_t i = 0; i < sizeof(in); i += 8) {
            uint64_t v = rnd_next(&s);
            memcpy(in + i, &v, 8);
        }
        char *whole = read_all(in, sizeof(in), NULL, (struct chunking){CUT_WHOLE, 0, 0});
        char *bytes = read_all(in, sizeof(in), NULL, (struct chunking){CUT_BYTES, 0, 0});
        assert_string_equal(whole, bytes);
        char *err = strstr(whole, "! ");
        assert_non_null(err);
        /* Mostly a bad byte; a stray quote among the first bytes is as clear an answer. */
        assert_true(strncmp(err, "! invalid_utf8@", 15) == 0 ||
                    strncmp(err, "! nul_byte@", 11) == 0 ||
                    strncmp(err, "! unexpected_quote@", 19) == 0 ||
                    strncmp(err, "! text_after_quote@", 19) == 0);
        free(whole);
        free(bytes);
    }
}

static int stop_at_second(void *arg, uint64_t line, const struct csv_field *f, size_t n)
{
    (void)line, (void)f, (void)n;
    return ++*(size_t *)arg == 2;
}

static void test_reader_callback_stops(void **state)
{
    (void)state;
    struct csv_reader *r = csv_reader_new(NULL);
    size_t rows = 0;
    assert_int_equal(csv_feed(r, S("a\nb\nc\n"), stop_at_second, &rows), -1);
    assert_int_equal(rows, 2);
    assert_string_equal(csv_reader_error(r)->code, "stopped");
    assert_int_equal(csv_reader_error(r)->line, 2);
    assert_int_equal(csv_feed(r, S("d\n"), stop_at_second, &rows), -1);
    assert_int_equal(csv_finish(r, stop_at_second, &rows), -1);
    assert_int_equal(rows, 2);
    csv_reader_free(r);

    struct csv_limits lim = {0, 1, 1};
    assert_null(csv_reader_new(&lim));
}

static void test_reader_counts_lines_and_bytes(void **state)
{
    (void)state;
    struct {
        const char *in;
        size_t len;
        uint64_t lines;
    } cases[] = {
        {S(""), 0},      {S("\xef\xbb\xbf"), 0}, {S("a"), 1},    {S("a\n"), 1},
        {S("a\r\n"), 1}, {S("a\r\n\r\n"), 2},    {S("a\nb"), 2}, {S("\"a\nb\"\n"), 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct csv_reader *r = csv_reader_new(NULL);
        size_t rows = 0;
        assert_int_equal(csv_feed(r, cases[i].in, cases[i].len, count_rows, &rows), 0);
        assert_int_equal(csv_finish(r, count_rows, &rows), 0);
        assert_int_equal(csv_reader_lines(r), cases[i].lines);
        assert_int_equal(csv_reader_bytes(r), cases[i].len);
        csv_reader_free(r);
    }
}

/* ------------------------------------------------------------------------------------------
 * Upload validator
 * ---------------------------------------------------------------------------------------- */

#define U1 "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define U1_UPPER "7C9E6679-7425-40DE-944B-E07FC1F90AE7"
#define U2 "0b7e3a54-1b2c-4d5e-8f90-a1b2c3d4e5f6"
#define U3 "f47ac10b-58cc-4372-a567-0e02b2c3d479"
#define NIL "00000000-0000-0000-0000-000000000000"

struct upload_run {
    struct csv_upload *u;
    struct sbuf out;
    struct sbuf first_message; /* of the first error */
    size_t stop_after_errors;  /* 0: never stop */
    size_t errors;
};

static int collect_tag(void *arg, const struct csv_tag_row *row)
{
    struct upload_run *run = arg;
    char check[UUID_STR_LEN + 1];
    uint8_t raw[16];
    assert_int_equal(strlen(row->tag_str), UUID_STR_LEN);
    assert_int_equal(uuid_parse(row->tag_str, UUID_STR_LEN, raw), 0);
    assert_memory_equal(raw, row->tag, 16);
    uuid_format(row->tag, check);
    assert_string_equal(check, row->tag_str);
    sb_printf(&run->out, "%" PRIu64 " %s ", row->line, row->tag_str);
    if (row->serial == NULL) {
        assert_int_equal(row->serial_len, 0);
        sb_add(&run->out, "-", 1);
    } else {
        assert_true(row->serial_len > 0);
        sb_add(&run->out, "[", 1);
        sb_escaped(&run->out, row->serial, row->serial_len);
        sb_add(&run->out, "]", 1);
    }
    sb_add(&run->out, "\n", 1);
    return 0;
}

static int collect_error(void *arg, const struct csv_error *e)
{
    struct upload_run *run = arg;
    assert_true(e->message[0] != '\0');
    assert_true(valid_utf8(e->message));
    assert_null(strchr(e->message, '\n'));
    sb_printf(&run->out, "%s %" PRIu64 " %s\n", e->fatal ? "F" : "E", e->line, e->code);
    if (run->errors++ == 0)
        sb_add(&run->first_message, e->message, strlen(e->message));
    return run->stop_after_errors && run->errors >= run->stop_after_errors;
}

static int upload_feed(void *ctx, const char *p, size_t n)
{
    struct upload_run *run = ctx;
    return csv_upload_feed(run->u, p, n);
}

/*
 * Runs an upload; returns (caller frees) what the callbacks saw, then "= total accepted
 * rejected" and, after a failure, "! code". *first gets the first error's message.
 */
static char *upload_all(const char *in, size_t len, const struct csv_upload_config *cfg,
                        struct chunking ch, char **first)
{
    struct upload_run run = {0};
    run.u = csv_upload_new(cfg, collect_tag, collect_error, &run);
    assert_non_null(run.u);
    int rc = feed_chunks(in, len, ch, upload_feed, &run);
    if (rc == 0)
        rc = csv_upload_finish(run.u);
    const struct csv_error *e = csv_upload_error(run.u);
    assert_int_equal(rc == 0, e == NULL);
    struct csv_upload_stats st;
    csv_upload_stats(run.u, &st);
    assert_int_equal(st.rows_total, st.rows_accepted + st.rows_rejected);
    sb_printf(&run.out, "= %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", st.rows_total, st.rows_accepted,
              st.rows_rejected);
    if (e != NULL) {
        assert_true(e->fatal);
        sb_printf(&run.out, "! %s\n", e->code);
        assert_int_equal(csv_upload_feed(run.u, "x", 1), -1);
    }
    csv_upload_free(run.u);
    if (first != NULL) {
        sb_add(&run.first_message, "", 0);
        *first = run.first_message.p;
    } else {
        sb_free(&run.first_message);
    }
    return run.out.p;
}

struct upload_case {
    const char *name;
    const char *in;
    size_t len;
    const char *want;    /* upload_all()'s output */
    const char *message; /* a part of the first error's message, or NULL */
    uint64_t max_rows;   /* 0: the default */
};

static const struct upload_case upload_cases[] = {
    {"one column", S("tag_id\n" U1 "\n" U2 "\n"), "2 " U1 " -\n3 " U2 " -\n= 2 2 0\n", NULL, 0},
    {"header in any case, trimmed, quoted", S("\" Tag_ID\t\",SERIAL \n" U1 ",A1\n"),
     "2 " U1 " [A1]\n= 1 1 0\n", NULL, 0},
    {"tag_id not first, other columns ignored", S("sku,serial,tag_id,note\nX,S1," U1 ",hi\n"),
     "2 " U1 " [S1]\n= 1 1 0\n", NULL, 0},
    {"upper case stored lower case", S("tag_id\n" U1_UPPER "\n"), "2 " U1 " -\n= 1 1 0\n", NULL, 0},
    {"nil uuid is a uuid", S("tag_id\n" NIL "\n"), "2 " NIL " -\n= 1 1 0\n", NULL, 0},
    {"bom, crlf and trailing blank lines", S("\xef\xbb\xbftag_id,serial\r\n" U1 ",1\r\n\r\n\r\n"),
     "2 " U1 " [1]\n= 1 1 0\n", NULL, 0},
    {"blank and empty rows skipped", S("\n,\ntag_id,serial\n\n" U1 ",\n,\n\"\",\"\"\n" U2 ",x"),
     "5 " U1 " -\n8 " U2 " [x]\n= 2 2 0\n", NULL, 0},
    {"quoted fields", S("tag_id,serial\n\"" U1 "\",\"a, \"\"b\"\"\"\n"),
     "2 " U1 " [a, \"b\"]\n= 1 1 0\n", NULL, 0},
    {"braces", S("tag_id\n{" U1 "}\n" U2 "\n"), "E 2 invalid_uuid\n3 " U2 " -\n= 2 1 1\n",
     "is in braces", 0},
    {"no hyphens", S("tag_id\n7c9e6679742540de944be07fc1f90ae7\n"), "E 2 invalid_uuid\n= 1 0 1\n",
     "has no hyphens", 0},
    {"spaces around", S("tag_id,serial\n " U1 ",1\n"), "E 2 invalid_uuid\n= 1 0 1\n",
     "has spaces around it", 0},
    {"empty tag", S("tag_id,serial\n,S\n"), "E 2 invalid_uuid\n= 1 0 1\n", "tag_id is empty", 0},
    {"not a uuid", S("tag_id\nhello\n"), "E 2 invalid_uuid\n= 1 0 1\n",
     "tag_id \"hello\" is not a canonical UUID", 0},
    {"urn prefix", S("tag_id\nurn:uuid:" U1 "\n"), "E 2 invalid_uuid\n= 1 0 1\n",
     "is not a canonical UUID", 0},
    {"duplicate", S("tag_id\n" U1 "\n" U2 "\n" U1 "\n"),
     "2 " U1 " -\n3 " U2 " -\nE 4 duplicate_tag_id\n= 3 2 1\n",
     "duplicate tag_id " U1 " in this file (first at line 2)", 0},
    {"duplicate in another case", S("tag_id\n\n" U1 "\n" U1_UPPER "\n"),
     "3 " U1 " -\nE 4 duplicate_tag_id\n= 2 1 1\n", "(first at line 3)", 0},
    {"duplicate of a rejected row is accepted", S("tag_id,serial\n" U1 "\n" U1 ",2\n" U1 ",3\n"),
     "E 2 field_count\n3 " U1 " [2]\nE 4 duplicate_tag_id\n= 3 1 2\n", "has 1 field but", 0},
    {"extra field", S("tag_id,serial\n" U1 ",1,2\n" U2 ",3\n"),
     "E 2 field_count\n3 " U2 " [3]\n= 2 1 1\n", "the row has 3 fields but the header has 2", 0},
    {"missing field", S("a,tag_id,serial\n" U1 ",1\n"), "E 2 field_count\n= 1 0 1\n",
     "has 2 fields but the header has 3", 0},
    {"serial limit", S("tag_id,serial\n" U1 ",1234567890\n" U2 ",12345678901\n"),
     "2 " U1 " [1234567890]\nE 3 serial_too_long\n= 2 1 1\n", "at most 10 are allowed", 0},
    {"serial with line break", S("tag_id,serial\n" U1 ",\"a\nb\"\n" U2 ",c\n"),
     "E 2 invalid_serial\n4 " U2 " [c]\n= 2 1 1\n", "serial \"a?b\" contains a control", 0},
    {"serial with tab", S("tag_id,serial\n" U1 ",a\tb\n"), "E 2 invalid_serial\n= 1 0 1\n", NULL,
     0},
    {"errors keep their lines across quoted line breaks",
     S("tag_id,note\n" U1 ",\"x\ny\"\nbad,z\n"), "2 " U1 " -\nE 4 invalid_uuid\n= 2 1 1\n", NULL,
     0},
    {"no tag_id column", S("id,serial\n" U1 ",1\n"),
     "F 1 no_tag_id_column\n= 0 0 0\n! "
     "no_tag_id_column\n",
     "the header row has no tag_id column (columns: \"id\", \"serial\")", 0},
    {"tag id spelled otherwise", S("tag id\n" U1 "\n"),
     "F 1 no_tag_id_column\n= 0 0 0\n! "
     "no_tag_id_column\n",
     NULL, 0},
    {"no header at all", S(U1 ",1\n" U2 ",2\n"),
     "F 1 no_tag_id_column\n= 0 0 0\n! no_tag_id_column\n", "the first row holds a UUID", 0},
    {"header after blank lines", S("\r\n\r\nserial\n1\n"),
     "F 3 no_tag_id_column\n= 0 0 0\n! no_tag_id_column\n", NULL, 0},
    {"tag_id twice", S("tag_id,TAG_ID\n" U1 "," U2 "\n"),
     "F 1 duplicate_column\n= 0 0 0\n! duplicate_column\n", "(columns 1 and 2)", 0},
    {"serial twice", S("serial,tag_id,serial\n"),
     "F 1 duplicate_column\n= 0 0 0\n! duplicate_column\n", NULL, 0},
    {"empty file", S(""), "F 1 empty_file\n= 0 0 0\n! empty_file\n", "the file is empty", 0},
    {"bom only", S("\xef\xbb\xbf"), "F 1 empty_file\n= 0 0 0\n! empty_file\n", NULL, 0},
    {"blank lines only", S("\r\n\r\n\n,,\n"), "F 1 empty_file\n= 0 0 0\n! empty_file\n", NULL, 0},
    {"header only", S("tag_id,serial\r\n"), "F 1 no_rows\n= 0 0 0\n! no_rows\n",
     "a header row but no rows", 0},
    {"header and empty rows only", S("tag_id,serial\r\n,\r\n"), "F 1 no_rows\n= 0 0 0\n! no_rows\n",
     NULL, 0},
    {"too many rows", S("tag_id\n" U1 "\nbad\n" U2 "\n" U3 "\n"),
     "2 " U1 " -\nE 3 invalid_uuid\n4 " U2 " -\nF 5 too_many_rows\n= 3 2 1\n! too_many_rows\n",
     NULL, 3},
    {"exactly max rows", S("tag_id\n" U1 "\n" U2 "\n" U3 "\n"),
     "2 " U1 " -\n3 " U2 " -\n4 " U3 " -\n= 3 3 0\n", NULL, 3},
    {"unbalanced quotes end the upload", S("tag_id,serial\n" U1 ",ok\n" U2 ",\"open\n" U3 "\n"),
     "2 " U1 " [ok]\nF 3 unbalanced_quotes\n= 1 1 0\n! unbalanced_quotes\n", NULL, 0},
    {"binary ends the upload", S("tag_id\n" U1 "\n\x89PNG\r\n\x1a\n"),
     "2 " U1 " -\nF 3 invalid_utf8\n= 1 1 0\n! invalid_utf8\n", NULL, 0},
    {"nul ends the upload", S("tag_id\n" U1 "\0\n"), "F 2 nul_byte\n= 0 0 0\n! nul_byte\n", NULL,
     0},
    {"truncated body", S("tag_id,serial\n" U1 ",1\n" U2 ",2\n7c9e6679-74"),
     "2 " U1 " [1]\n3 " U2 " [2]\nE 4 field_count\n= 3 2 1\n", NULL, 0},
    {"truncated body, one column", S("tag_id\n" U1 "\n7c9e6679-74"),
     "2 " U1 " -\nE 3 invalid_uuid\n= 2 1 1\n", NULL, 0},
};

static void test_upload_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(upload_cases) / sizeof(upload_cases[0]); i++) {
        const struct upload_case *c = &upload_cases[i];
        struct csv_upload_config cfg;
        csv_upload_config_default(&cfg);
        cfg.max_serial_bytes = 10;
        if (c->max_rows)
            cfg.max_rows = c->max_rows;
        char *first = NULL;
        char *whole = upload_all(c->in, c->len, &cfg, (struct chunking){CUT_WHOLE, 0, 0}, &first);
        if (strcmp(whole, c->want) != 0)
            fail_msg("%s: got\n%s\nwant\n%s", c->name, whole, c->want);
        if (c->message != NULL && strstr(first, c->message) == NULL)
            fail_msg("%s: message \"%s\" lacks \"%s\"", c->name, first, c->message);
        free(first);
        /* The same rows, errors and messages however the input is cut. */
        for (size_t at = 0; at <= c->len + 1; at++) {
            struct chunking ch = {CUT_AT, at, 0};
            if (at == 0)
                ch.how = CUT_BYTES;
            else if (at > c->len)
                ch = (struct chunking){CUT_RANDOM, 0, at};
            char *msg = NULL;
            char *got = upload_all(c->in, c->len, &cfg, ch, &msg);
            if (strcmp(whole, got) != 0)
                fail_msg("%s: cut %d/%zu\n%s\ndiffers from whole\n%s", c->name, ch.how, at, got,
                         whole);
            free(got);
            free(msg);
        }
        free(whole);
    }
}

/* Messages quote user text only briefly, cut between characters, and stay valid UTF-8. */
static void test_upload_messages_quote_briefly(void **state)
{
    (void)state;
    struct sbuf in = {0};
    for (int i = 0; i < 40; i++)
        sb_add(&in, "\xe6\x97\xa5", 3);
    sb_add(&in, ",", 1);
    for (int i = 0; i < 40; i++)
        sb_add(&in, "\xf0\x9f\x98\x80,", 5);
    sb_add(&in, "serial\n", 7);
    char *first = NULL;
    char *got = upload_all(in.p, in.len, NULL, (struct chunking){CUT_WHOLE, 0, 0}, &first);
    assert_non_null(strstr(got, "F 1 no_tag_id_column"));
    assert_true(valid_utf8(first));
    assert_true(strlen(first) < CSV_MESSAGE_MAX);
    assert_non_null(strstr(first, "...\""));
    free(got);
    free(first);
    sb_free(&in);

    /* A long value in an invalid_uuid message. */
    struct sbuf row = {0};
    sb_add(&row, S("tag_id\n"));
    for (int i = 0; i < 100; i++)
        sb_add(&row, "\xc3\xa9", 2);
    got = upload_all(row.p, row.len, NULL, (struct chunking){CUT_WHOLE, 0, 0}, &first);
    assert_string_equal(got, "E 2 invalid_uuid\n= 1 0 1\n");
    assert_true(valid_utf8(first));
    assert_non_null(strstr(first, "...\" is not a canonical UUID"));
    free(got);
    free(first);
    sb_free(&row);
}

static int stop_tag(void *arg, const struct csv_tag_row *row)
{
    (void)row;
    return ++*(int *)arg == 2;
}

static int count_error(void *arg, const struct csv_error *e)
{
    (void)e;
    (void)arg;
    return 0;
}

/* A caller that keeps only so many errors, or must stop, can stop the upload. */
static void test_upload_callbacks_stop(void **state)
{
    (void)state;
    const char *in = "tag_id\nbad1\nbad2\nbad3\n" U1 "\n";
    struct upload_run run = {0};
    run.stop_after_errors = 2;
    run.u = csv_upload_new(NULL, collect_tag, collect_error, &run);
    assert_int_equal(csv_upload_feed(run.u, in, strlen(in)), -1);
    assert_string_equal(csv_upload_error(run.u)->code, "stopped");
    assert_int_equal(csv_upload_finish(run.u), -1);
    assert_string_equal(sb_str(&run.out), "E 2 invalid_uuid\nE 3 invalid_uuid\n");
    csv_upload_free(run.u);
    sb_free(&run.out);
    sb_free(&run.first_message);

    int tags = 0;
    struct csv_upload *u = csv_upload_new(NULL, stop_tag, count_error, &tags);
    in = "tag_id\n" U1 "\n" U2 "\n" U3 "\n";
    assert_int_equal(csv_upload_feed(u, in, strlen(in)), -1);
    assert_int_equal(tags, 2);
    assert_string_equal(csv_upload_error(u)->code, "stopped");
    assert_int_equal(csv_upload_error(u)->line, 3);
    csv_upload_free(u);

    assert_null(csv_upload_new(NULL, NULL, count_error, NULL));
}

/* Tags that differ in one bit anywhere, or that count up, are all told apart. */
static void test_upload_near_tags_are_distinct(void **state)
{
    (void)state;
    struct sbuf in = {0};
    sb_add(&in, S("tag_id\n"));
    size_t n = 0;
    for (int bit = 0; bit < 128; bit++, n++) {
        uint8_t raw[16] = {0};
        char s[UUID_STR_LEN + 1];
        raw[bit / 8] = (uint8_t)(1u << (bit % 8));
        uuid_format(raw, s);
        sb_printf(&in, "%s\n", s);
    }
    for (uint32_t i = 0; i < 20000; i++, n++) {
        uint8_t raw[16] = {0};
        char s[UUID_STR_LEN + 1];
        raw[15] = (uint8_t)i;
        raw[14] = (uint8_t)(i >> 8);
        raw[13] = (uint8_t)(i >> 16);
        raw[0] = 0xff; /* unlike every single-bit tag */
        uuid_format(raw, s);
        sb_printf(&in, "%s\n", s);
    }
    sb_add(&in, S("00000000-0000-0000-0000-000000000080\n")); /* bit 127 again */
    char *got = upload_all(in.p, in.len, NULL, (struct chunking){CUT_WHOLE, 0, 0}, NULL);
    char want[64];
    snprintf(want, sizeof(want), "E %zu duplicate_tag_id\n= %zu %zu 1\n", n + 2, n + 1, n);
    assert_non_null(strstr(got, want));
    free(got);
    sb_free(&in);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_tag(void *arg, const struct csv_tag_row *row)
{
    (void)row;
    (*(uint64_t *)arg)++;
    return 0;
}

struct big_errors {
    size_t n;
    struct csv_error last;
};

static int keep_error(void *arg, const struct csv_error *e)
{
    struct big_errors *b = arg;
    b->n++;
    b->last = *e;
    return 0;
}

struct big_ctx {
    uint64_t tags;
    struct big_errors errors;
};

static int big_tag(void *arg, const struct csv_tag_row *row)
{
    return count_tag(&((struct big_ctx *)arg)->tags, row);
}

static int big_error(void *arg, const struct csv_error *e)
{
    return keep_error(&((struct big_ctx *)arg)->errors, e);
}

/*
 * 1,000,000 generated rows (and a duplicate of the first at the end) through the validator in
 * 64 KiB chunks: every row judged, the duplicate found with both lines, memory as documented.
 */
static void test_upload_million_rows(void **state)
{
    (void)state;
    const size_t rows = 1000000;
    struct sbuf in = {0};
    uint64_t s = 42;
    char first[UUID_STR_LEN + 1] = "";
    sb_add(&in, S("tag_id,serial\r\n"));
    for (size_t i = 0; i < rows; i++) {
        uint8_t raw[16];
        char str[UUID_STR_LEN + 1];
        uint64_t a = rnd_next(&s), b = rnd_next(&s);
        memcpy(raw, &a, 8);
        memcpy(raw + 8, &b, 8);
        raw[6] = (raw[6] & 0x0f) | 0x40;
        raw[8] = (raw[8] & 0x3f) | 0x80;
        uuid_format(raw, str);
        if (i == 0)
            memcpy(first, str, sizeof(first));
        sb_printf(&in, "%s,SN-%07zu\r\n", str, i);
    }
    sb_printf(&in, "%s,again\r\n", first);

    for (int presize = 0; presize <= 1; presize++) {
        struct csv_upload_config cfg;
        csv_upload_config_default(&cfg);
        if (presize)
            cfg.expected_rows = rows + 1;
        struct big_ctx ctx = {0};
        struct csv_upload *u = csv_upload_new(&cfg, big_tag, big_error, &ctx);
        size_t start_memory = csv_upload_memory(u);
        int64_t t0 = ts_now_ms();
        double cpu0 = cpu_seconds();
        for (size_t pos = 0; pos < in.len; pos += 65536) {
            size_t n = in.len - pos < 65536 ? in.len - pos : 65536;
            assert_int_equal(csv_upload_feed(u, in.p + pos, n), 0);
        }
        assert_int_equal(csv_upload_finish(u), 0);
        int64_t ms = ts_now_ms() - t0;
        double cpu = cpu_seconds() - cpu0;
        struct csv_upload_stats st;
        csv_upload_stats(u, &st);
        assert_int_equal(st.rows_total, rows + 1);
        assert_int_equal(st.rows_accepted, rows);
        assert_int_equal(st.rows_rejected, 1);
        assert_int_equal(st.bytes, in.len);
        assert_int_equal(st.lines, rows + 2);
        assert_int_equal(ctx.tags, rows);
        assert_int_equal(ctx.errors.n, 1);
        assert_string_equal(ctx.errors.last.code, "duplicate_tag_id");
        assert_int_equal(ctx.errors.last.line, rows + 2);
        assert_non_null(strstr(ctx.errors.last.message, "(first at line 2)"));
        /* 2^21 slots of 20 bytes and the reader: the documented 40 MiB for a million tags. */
        size_t memory = csv_upload_memory(u);
        assert_true(memory <= 40 * 1024 * 1024 + csv_reader_bound(NULL) + 1024);
        if (presize)
            assert_int_equal(memory, start_memory);
        /* CPU time too: on a shared machine the wall clock says more about the neighbours. */
        print_message("csv: %zu rows (%.1f MB) in %" PRId64 " ms (%.0f ms CPU), %.2f M rows/s "
                      "(%.2f per CPU second), %.1f MiB%s\n",
                      rows, (double)in.len / 1e6, ms, cpu * 1e3,
                      ms ? (double)rows / (double)ms / 1000.0 : 0,
                      cpu > 0 ? (double)rows / cpu / 1e6 : 0, (double)memory / 1048576.0,
                      presize ? ", presized" : "");
        csv_upload_free(u);
    }
    sb_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_table),
        cmocka_unit_test(test_reader_messages),
        cmocka_unit_test(test_reader_roundtrip_random),
        cmocka_unit_test(test_reader_megabyte_line),
        cmocka_unit_test(test_reader_binary_garbage),
        cmocka_unit_test(test_reader_callback_stops),
        cmocka_unit_test(test_reader_counts_lines_and_bytes),
        cmocka_unit_test(test_upload_table),
        cmocka_unit_test(test_upload_messages_quote_briefly),
        cmocka_unit_test(test_upload_callbacks_stop),
        cmocka_unit_test(test_upload_near_tags_are_distinct),
        cmocka_unit_test(test_upload_million_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
