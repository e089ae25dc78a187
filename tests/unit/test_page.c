/*
 * Unit tests of page: the words of each state, escaping of every value, no external resource,
 * and a well-formed document. With TAGPROOF_PAGE_DUMP_DIR set, the five demo states are also
 * written there as scan-<state>.html for tests/browser/check_states.sh to render in Chromium.
 */
#include "support.h"
#include "page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_ID "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define LEDGER_TX "0x5f2c9a1e7b3d4c6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"

static const char *const states[] = {"authentic", "suspicious", "revoked", "unknown",
                                     "unavailable"};

/* A registered tag with every field set, as the handler would fill it for state. */
static struct page_view demo_view(const char *state)
{
    static const char *const travel[] = {"impossible_travel", "clone_spread"};
    static const char *const recalled[] = {"revoked"};
    struct page_view v = {
        .state = state,
        .tag_id = TAG_ID,
        .product_name = "Aurora Trail Running Shoe",
        .product_sku = "ATR-2026-BLU-42",
        .batch_code = "B-2026-11-0042",
        .factory_name = "Northwind Footwear, Porto",
        .first_scan = true,
        .first_scanned_at = "2026-11-22T10:00:00Z",
        .scan_count = 1,
        .anchor_status = "anchored",
        .anchor_leaf_index = 41,
        .anchor_checkpoint_size = 1024,
        .anchor_ledger_tx = LEDGER_TX,
        .request_id = "01J9ZQ7T4M8X2K5V3N6B1C0D9E",
    };
    if (strcmp(state, "suspicious") == 0) {
        v.first_scan = false;
        v.scan_count = 37;
        v.reasons = travel;
        v.reason_count = 2;
    } else if (strcmp(state, "revoked") == 0) {
        v.first_scan = false;
        v.first_scanned_at = "2026-11-20T16:42:09Z";
        v.scan_count = 3;
        v.reasons = recalled;
        v.reason_count = 1;
        v.anchor_status = "pending";
    }
    return v;
}

static char *render(const struct page_view *v)
{
    size_t len = 0;
    char *html = page_render(v, &len);
    assert_non_null(html);
    assert_int_equal(strlen(html), len);
    return html;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void assert_has(const char *html, const char *needle)
{
    if (strstr(html, needle) == NULL)
        fail_msg("missing \"%s\" in:\n%s", needle, html);
}

static void assert_lacks(const char *html, const char *needle)
{
    if (strcasestr(html, needle) != NULL)
        fail_msg("unexpected \"%s\" in:\n%s", needle, html);
}

static void test_authentic(void **state)
{
    (void)state;
    struct page_view v = demo_view("authentic");
    char *html = render(&v);
    assert_has(html, "<title>Genuine product \xC2\xB7 Tagproof</title>");
    assert_has(html, "<h1>Genuine product</h1>");
    assert_has(html, "This code was registered by the manufacturer.");
    assert_has(html, "Aurora Trail Running Shoe");
    assert_has(html, "ATR-2026-BLU-42");
    assert_has(html, "B-2026-11-0042");
    assert_has(html, "Northwind Footwear, Porto");
    assert_has(html, "22 Nov 2026, 10:00 UTC");
    assert_has(html, "you are the first to check this code");
    assert_lacks(html, "Times scanned");
    assert_has(html, "Sealed in the public log");
    assert_has(html, "Nobody can change or hide it afterwards. Entry 41 of 1,024.");
    assert_has(html, LEDGER_TX);
    assert_has(html, TAG_ID);
    assert_has(html, "01J9ZQ7T4M8X2K5V3N6B1C0D9E");
    assert_lacks(html, "counterfeit");
    assert_lacks(html, "What we noticed");
    free(html);

    /* A repeat scan says when the first one was, and what to do if that was not the buyer. */
    v.first_scan = false;
    v.scan_count = 1234567;
    v.anchor_status = "pending";
    html = render(&v);
    assert_has(html, "22 Nov 2026, 10:00 UTC");
    assert_has(html, "1,234,567");
    assert_has(html, "ask the seller");
    assert_lacks(html, "you are the first");
    assert_has(html, "Being sealed in the public log");
    assert_lacks(html, "<dd>Sealed in the public log");
    assert_lacks(html, LEDGER_TX);
    free(html);

    /* Anchored without a consistent entry: the entry numbers are left out, not made up. */
    v.anchor_status = "anchored";
    v.anchor_leaf_index = 5;
    v.anchor_checkpoint_size = 0;
    v.anchor_ledger_tx = NULL;
    html = render(&v);
    assert_has(html, "Sealed in the public log");
    assert_lacks(html, "Entry ");
    free(html);
}

static void test_suspicious(void **state)
{
    (void)state;
    static const char *const all[] = {
        "velocity", "impossible_travel", "clone_spread", "enumeration",
        "bot_ua",   "revoked",           "no_such_rule", "<b>also_unknown</b>"};
    struct page_view v = demo_view("suspicious");
    v.reasons = all;
    v.reason_count = sizeof(all) / sizeof(all[0]);
    char *html = render(&v);
    assert_has(html, "<h1>Possible counterfeit</h1>");
    assert_has(html, "What we noticed");
    assert_has(html, "This code was scanned many times within a minute.");
    assert_has(html, "This code was scanned in places too far apart to travel between.");
    assert_has(html, "by an unusual number of different phones");
    assert_has(html, "looks like someone guessing codes.");
    assert_has(html, "This check came from an automated program");
    assert_has(html, "The manufacturer recalled this batch.");
    /* Two unknown ids share one sentence, and their raw text is never shown. */
    assert_int_equal(count(html, "Our checks found something unusual"), 1);
    assert_lacks(html, "no_such_rule");
    assert_lacks(html, "also_unknown");
    assert_lacks(html, "impossible_travel");
    assert_has(html, "Buy only from authorised sellers.");
    assert_has(html, "Make sure the product in your hands matches.");
    assert_has(html, "Aurora Trail Running Shoe");
    assert_lacks(html, "Genuine");
    free(html);

    /* Suspicious with no reasons still explains itself. */
    v.reasons = NULL;
    v.reason_count = 0;
    html = render(&v);
    assert_has(html, "<li>Our checks found something unusual");
    free(html);
}

static void test_revoked(void **state)
{
    (void)state;
    struct page_view v = demo_view("revoked");
    char *html = render(&v);
    assert_has(html, "<h1>Recalled product</h1>");
    assert_has(html, "This batch was recalled by the manufacturer.");
    assert_has(html, "Don't use or sell this product.");
    assert_has(html, "B-2026-11-0042");
    assert_has(html, "20 Nov 2026, 16:42 UTC");
    assert_lacks(html, "Genuine");
    assert_lacks(html, "ask the seller about it");
    free(html);
}

static void test_unknown(void **state)
{
    (void)state;
    /* Whatever else the handler left in the view, an unknown code shows no product. */
    struct page_view v = demo_view("unknown");
    char *html = render(&v);
    assert_has(html, "<h1>This code is not registered</h1>");
    assert_has(html, "The product may be counterfeit.");
    assert_has(html, "don't rely on this product being genuine");
    assert_has(html, TAG_ID);
    assert_lacks(html, "Aurora");
    assert_lacks(html, "Northwind");
    assert_lacks(html, "Genuine product");
    free(html);
}

static void test_unavailable(void **state)
{
    (void)state;
    const char *odd[] = {"unavailable", NULL, "", "AUTHENTIC", "authentic ", "<script>"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        struct page_view v = demo_view("authentic");
        v.state = odd[i];
        char *html = render(&v);
        assert_has(html, "<h1>Temporarily unavailable</h1>");
        assert_has(html, "We can't check this code right now. Please try again in a minute.");
        assert_has(html, "<a class=\"btn\" href=\"\">Try again</a>");
        assert_has(html, TAG_ID);
        assert_lacks(html, "Genuine");
        assert_lacks(html, "not registered");
        assert_lacks(html, "counterfeit");
        assert_lacks(html, "recalled");
        assert_lacks(html, "Aurora");
        assert_lacks(html, "<script");
        free(html);
    }
}

/* A view with nothing in it is the unavailable page, with no empty lines for missing values. */
static void test_empty_view(void **state)
{
    (void)state;
    struct page_view v = {0};
    char *html = page_render(&v, NULL);
    assert_non_null(html);
    assert_has(html, "Please try again in a minute.");
    assert_lacks(html, "<code>");
    free(html);
}

#define HOSTILE "<script>alert(\"x&y\")</script>'<img src=x onerror=alert(1)>"
#define HOSTILE_ESCAPED                                                                            \
    "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;&lt;img src=x "                   \
    "onerror=alert(1)&gt;"

static void test_escapes_every_field(void **state)
{
    (void)state;
    /* Each value the page shows, set to markup in turn, in every state that shows it. */
    struct field {
        const char *name;
        size_t offset;
        const char *shown_in;
    } fields[] = {
        {"tag_id", offsetof(struct page_view, tag_id),
         "authentic suspicious revoked unknown unavailable"},
        {"product_name", offsetof(struct page_view, product_name), "authentic suspicious revoked"},
        {"product_sku", offsetof(struct page_view, product_sku), "authentic suspicious revoked"},
        {"batch_code", offsetof(struct page_view, batch_code), "authentic suspicious revoked"},
        {"factory_name", offsetof(struct page_view, factory_name), "authentic suspicious revoked"},
        {"first_scanned_at", offsetof(struct page_view, first_scanned_at),
         "authentic suspicious revoked"},
        {"anchor_ledger_tx", offsetof(struct page_view, anchor_ledger_tx), "authentic suspicious"},
        {"request_id", offsetof(struct page_view, request_id),
         "authentic suspicious revoked unknown unavailable"},
        {"anchor_status", offsetof(struct page_view, anchor_status), ""},
    };
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
            struct page_view v = demo_view(states[s]);
            *(const char **)((char *)&v + fields[f].offset) = HOSTILE;
            char *html = render(&v);
            assert_lacks(html, "<script");
            assert_lacks(html, "<img");
            assert_lacks(html, "\"x&y\"");
            bool shown = strstr(fields[f].shown_in, states[s]) != NULL;
            if (shown)
                assert_has(html, HOSTILE_ESCAPED);
            else
                assert_lacks(html, "onerror");
            free(html);
        }
    }

    /* Reason ids are never echoed, hostile or not. */
    const char *reasons[] = {HOSTILE};
    struct page_view v = demo_view("suspicious");
    v.reasons = reasons;
    v.reason_count = 1;
    char *html = render(&v);
    assert_lacks(html, "onerror");
    assert_lacks(html, "<script");
    free(html);
}

static bool valid_utf8(const unsigned char *p)
{
    while (*p) {
        size_t n = *p < 0x80                  ? 1
                   : *p >= 0xC2 && *p <= 0xDF ? 2
                   : *p >= 0xE0 && *p <= 0xEF ? 3
                   : *p >= 0xF0 && *p <= 0xF4 ? 4
                                              : 0;
        if (n == 0)
            return false;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) ||
            (p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] > 0x8F))
            return false;
        p += n;
    }
    return true;
}

static void test_bad_bytes_become_replacement(void **state)
{
    (void)state;
    struct page_view v = demo_view("authentic");
    /* Invalid lead, lone continuation, overlong '<', surrogate, C0, DEL and C1 controls. */
    v.product_name = "A\xFF"
                     "B\x80"
                     "C\xC0\xBC"
                     "D\xED\xA0\x80"
                     "E\x01\x7F\xC2\x85"
                     "F";
    v.factory_name = "Caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x91\x9F"; /* kept as is */
    v.batch_code = "tab\there\nline";
    char *html = render(&v);
    assert_true(valid_utf8((const unsigned char *)html));
    assert_has(html, "A\xEF\xBF\xBD"
                     "B\xEF\xBF\xBD"
                     "C\xEF\xBF\xBD\xEF\xBF\xBD"
                     "D\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                     "E\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                     "F");
    assert_has(html, "Caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x91\x9F");
    assert_has(html, "tab\there\nline");
    free(html);
}

static void test_first_scan_time(void **state)
{
    (void)state;
    struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"2026-11-22T10:00:00Z", "22 Nov 2026, 10:00 UTC"},
        {"2026-11-22t10:00:59.123456z", "22 Nov 2026, 10:00 UTC"},
        {"2026-11-22 09:05:00+00:00", "22 Nov 2026, 09:05 UTC"},
        {"2026-11-22T12:30:00+02:00", "22 Nov 2026, 10:30 UTC"},
        {"2026-01-01T00:30:00+01:00", "31 Dec 2025, 23:30 UTC"},
        {"2025-12-31T23:30:00-01:00", "1 Jan 2026, 00:30 UTC"},
        {"2028-02-29T23:59:60Z", "29 Feb 2028, 23:59 UTC"},
        {"2000-03-01T01:00:00+02:00", "29 Feb 2000, 23:00 UTC"},
        /* Not RFC 3339 date-times: shown as they came (escaped). */
        {"2027-02-29T10:00:00Z", "2027-02-29T10:00:00Z"},
        {"2026-13-01T10:00:00Z", "2026-13-01T10:00:00Z"},
        {"2026-11-22T24:00:00Z", "2026-11-22T24:00:00Z"},
        {"2026-11-22T10:00:00", "2026-11-22T10:00:00"},
        {"2026-11-22T10:00:00.Z", "2026-11-22T10:00:00.Z"},
        {"2026-11-22T10:00:00Z trailing", "2026-11-22T10:00:00Z trailing"},
        {"yesterday", "yesterday"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct page_view v = demo_view("authentic");
        v.first_scanned_at = cases[i].in;
        char *html = render(&v);
        char want[96];
        snprintf(want, sizeof(want), "<dt>First scanned</dt><dd>%s<", cases[i].out);
        assert_has(html, want);
        free(html);
    }
}

/* Checks that every non-void element is closed in order; a tiny stand-in for a validator. */
static void assert_balanced(const char *html)
{
    static const char *const voids[] = {"meta", "br", "hr", "img", "input", "link"};
    char stack[64][16];
    int depth = 0;
    for (const char *p = strchr(html, '<'); p != NULL; p = strchr(p + 1, '<')) {
        if (strncmp(p, "<!doctype html>", 15) == 0)
            continue;
        bool closing = p[1] == '/';
        const char *name = p + (closing ? 2 : 1);
        size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789");
        assert_true(n > 0 && n < 16);
        const char *end = strchr(name, '>');
        assert_non_null(end);
        bool self_closing = end[-1] == '/';
        bool is_void = false;
        for (size_t i = 0; i < sizeof(voids) / sizeof(voids[0]); i++)
            is_void = is_void || (strlen(voids[i]) == n && strncmp(voids[i], name, n) == 0);
        if (closing) {
            assert_true(depth > 0);
            depth--;
            if (strlen(stack[depth]) != n || strncmp(stack[depth], name, n) != 0)
                fail_msg("</%.*s> closes <%s>", (int)n, name, stack[depth]);
        } else if (!is_void && !self_closing) {
            assert_true(depth < 64);
            memcpy(stack[depth], name, n);
            stack[depth][n] = '\0';
            depth++;
        }
    }
    assert_int_equal(depth, 0);
}

static void test_structure_and_no_external_resources(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        struct page_view v = demo_view(states[s]);
        char *html = render(&v);
        assert_int_equal(strncmp(html,
                                 "<!doctype html>\n<html lang=\"en\">\n<head>\n"
                                 "<meta charset=\"utf-8\">\n",
                                 62),
                         0);
        assert_int_equal(count(html, "<meta name=\"viewport\" content=\"width=device-width,"
                                     "initial-scale=1\">"),
                         1);
        assert_int_equal(count(html, "<title>"), 1);
        assert_int_equal(count(html, "</title>"), 1);
        assert_int_equal(count(html, "<style>"), 1);
        assert_int_equal(count(html, "<h1>"), 1);
        assert_int_equal(count(html, "<body class=\""), 1);
        assert_has(html, "Content-Security-Policy\" content=\"default-src 'none';");
        const char *tail = "</body>\n</html>\n";
        assert_string_equal(html + strlen(html) - strlen(tail), tail);
        assert_balanced(html);
        assert_true(valid_utf8((const unsigned char *)html));
        /* Nothing to fetch and nothing to run. */
        const char *banned[] = {
            "<script", "http://", "https://",    "//",      "src=",     "url(",
            "@import", "<link",   "<img",        "<iframe", "<object",  "<embed",
            "<form",   "srcset",  "javascript:", "onload=", "onclick=", "onerror="};
        for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
            assert_lacks(html, banned[i]);
        assert_int_equal(count(html, "href="), count(html, "href=\"\""));
        /* The whole page is small enough for a slow mobile connection. */
        assert_true(strlen(html) < 12 * 1024);
        free(html);
    }
}

/* Writes the demo pages for the browser check; does nothing unless asked to. */
static void test_dump_states(void **state)
{
    (void)state;
    /* Without TAGPROOF_PAGE_DUMP_DIR (set by tests/browser/check_states.sh) the pages go to a
     * scratch directory and are read back, so the dump itself is always tested. */
    const char *dir = getenv("TAGPROOF_PAGE_DUMP_DIR");
    char *scratch = NULL;
    if (dir == NULL || dir[0] == '\0')
        dir = scratch = ts_tempdir("tp-page");
    for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        struct page_view v = demo_view(states[s]);
        size_t len;
        char *html = page_render(&v, &len);
        assert_non_null(html);
        char path[4096];
        snprintf(path, sizeof(path), "%s/scan-%s.html", dir, states[s]);
        FILE *f = fopen(path, "wb");
        if (f == NULL)
            fail_msg("cannot write %s", path);
        assert_int_equal(fwrite(html, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
        f = fopen(path, "rb");
        assert_non_null(f);
        char *back = calloc(1, len + 1);
        assert_int_equal(fread(back, 1, len + 1, f), len);
        fclose(f);
        assert_memory_equal(back, html, len);
        free(back);
        free(html);
    }
    if (scratch != NULL) {
        ts_rmdir(scratch);
        free(scratch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authentic),
        cmocka_unit_test(test_suspicious),
        cmocka_unit_test(test_revoked),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_unavailable),
        cmocka_unit_test(test_empty_view),
        cmocka_unit_test(test_escapes_every_field),
        cmocka_unit_test(test_bad_bytes_become_replacement),
        cmocka_unit_test(test_first_scan_time),
        cmocka_unit_test(test_structure_and_no_external_resources),
        cmocka_unit_test(test_dump_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
