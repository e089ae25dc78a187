// fuzz: MODULES page
/*
 * fuzz_page: page_render with arbitrary text in every field. The input is split at '\n' into
 * the fields, in the order of struct page_view (state, tag_id, product_name, product_sku,
 * batch_code, factory_name, first_scanned_at, scan_count, anchor_status, anchor_leaf_index,
 * anchor_checkpoint_size, anchor_ledger_tx, request_id, first_scan), then the reason ids;
 * numbers are read with strtoll, a missing field is NULL. The page must be valid UTF-8 without
 * control characters but tab and line feed, its length must be what page_render says, and
 * every '<' in it must open or close one of the page's own elements: nothing from the input
 * (a "<script", say) may become markup.
 */
#include "page.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FIELDS 14
#define MAX_REASONS 24

/* The checks are not what is fuzzed: no coverage feedback (or cost) from them. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

NO_COVERAGE static void fail(const char *what, const char *page, size_t at)
{
    fprintf(stderr, "fuzz_page: %s at byte %zu: %.60s\n", what, at, page + at);
    abort();
}

/* The well-formed UTF-8 sequence's length at p (RFC 3629), or 0. */
NO_COVERAGE static size_t utf8_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return n;
}

/* An element page.c writes: "<name" followed by a blank, '>' or '/'. */
NO_COVERAGE static int own_element(const char *s)
{
    static const char *const names[] = {"!doctype", "html", "head",    "meta",   "title", "style",
                                        "body",     "main", "section", "h1",     "h2",    "p",
                                        "ul",       "li",   "dl",      "dt",     "dd",    "code",
                                        "footer",   "a",    "svg",     "circle", "path"};
    if (*s == '/')
        s++;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = strlen(names[i]);
        if (strncmp(s, names[i], n) == 0 && strchr(" >/\n", s[n]) != NULL && s[n] != '\0')
            return 1;
    }
    return 0;
}

NO_COVERAGE static void check_page(const char *page, size_t len)
{
    const unsigned char *p = (const unsigned char *)page;
    if (strlen(page) != len)
        fail("the length is not the string's", page, 0);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(p + i, len - i);
        if (n == 0)
            fail("invalid UTF-8 or a C1 control", page, i);
        if (n == 1 && ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n') || p[i] == 0x7f))
            fail("a control character", page, i);
        if (p[i] == '<' && strncasecmp(page + i, "<script", 7) == 0)
            fail("a script element", page, i);
        if (p[i] == '<' && !own_element(page + i + 1))
            fail("markup that is not the page's own", page, i);
        i += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    const char *field[FIELDS] = {0};
    const char *reasons[MAX_REASONS];
    size_t nfields = 0, nreasons = 0;

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (char *p = buf; size > 0;) {
        char *nl = memchr(p, '\n', (size_t)(buf + size - p));
        if (nl != NULL)
            *nl = '\0';
        if (nfields < FIELDS)
            field[nfields++] = p;
        else if (nreasons < MAX_REASONS)
            reasons[nreasons++] = p;
        if (nl == NULL)
            break;
        p = nl + 1;
    }

    struct page_view v = {
        .state = field[0],
        .tag_id = field[1],
        .product_name = field[2],
        .product_sku = field[3],
        .batch_code = field[4],
        .factory_name = field[5],
        .first_scanned_at = field[6],
        .scan_count = field[7] != NULL ? strtoll(field[7], NULL, 10) : 0,
        .anchor_status = field[8],
        .anchor_leaf_index = field[9] != NULL ? strtoll(field[9], NULL, 10) : 0,
        .anchor_checkpoint_size = field[10] != NULL ? strtoll(field[10], NULL, 10) : 0,
        .anchor_ledger_tx = field[11],
        .request_id = field[12],
        .first_scan = field[13] != NULL && field[13][0] == '1',
        .reasons = nreasons > 0 ? reasons : NULL,
        .reason_count = nreasons,
    };
    size_t len = 0;
    char *page = page_render(&v, &len);
    if (page == NULL)
        abort(); /* out of memory is not expected for inputs this small */
    check_page(page, len);
    free(page);
    free(buf);
    return 0;
}
