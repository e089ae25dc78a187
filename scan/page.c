/*
 * page: renders the consumer page for GET /t/{tag_id} into one self-contained HTML document.
 * Everything a value touches goes through page_escape(); the markup around it is fixed text.
 * There is no script and no URL in the output, so the page works on any phone, offline-cached
 * or not, and a Content-Security-Policy meta tag forbids loading anything even if that changed.
 */
#include "page.h"
#include "utf8.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

enum page_state {
    PAGE_AUTHENTIC,
    PAGE_SUSPICIOUS,
    PAGE_REVOKED,
    PAGE_UNKNOWN,
    PAGE_UNAVAILABLE,
};

/* An append-only string that remembers a failed allocation, so callers check once at the end. */
struct page_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

static void buf_add(struct page_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(struct page_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/*
 * Appends s as HTML text that is also safe inside a quoted attribute. Invalid UTF-8 and control
 * characters become U+FFFD so the document stays valid UTF-8 whatever a database row holds.
 */
static void page_escape(struct page_buf *b, const char *s)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t run = 0;
        while (p[run] >= 0x20 && p[run] < 0x7F && !strchr("&<>\"'", p[run]))
            run++;
        if (run > 0) {
            buf_add(b, (const char *)p, run);
            p += run;
            continue;
        }
        unsigned char c = *p;
        if (c < 0x80) {
            switch (c) {
            case '&':
                buf_puts(b, "&amp;");
                break;
            case '<':
                buf_puts(b, "&lt;");
                break;
            case '>':
                buf_puts(b, "&gt;");
                break;
            case '"':
                buf_puts(b, "&quot;");
                break;
            case '\'':
                buf_puts(b, "&#39;");
                break;
            case '\t':
            case '\n':
                buf_add(b, (const char *)p, 1);
                break;
            default:
                buf_puts(b, replacement);
            }
            p++;
            continue;
        }
        size_t n = utf8_char_len(p, SIZE_MAX);
        /* U+0080..U+009F (C2 80..C2 9F) are control characters too. */
        if (n == 0 || (c == 0xC2 && p[1] < 0xA0)) {
            buf_puts(b, replacement);
            p += n ? n : 1;
            continue;
        }
        buf_add(b, (const char *)p, n);
        p += n;
    }
}

static bool present(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static enum page_state page_state_parse(const char *s)
{
    if (s == NULL)
        return PAGE_UNAVAILABLE;
    if (strcmp(s, "authentic") == 0)
        return PAGE_AUTHENTIC;
    if (strcmp(s, "suspicious") == 0)
        return PAGE_SUSPICIOUS;
    if (strcmp(s, "revoked") == 0)
        return PAGE_REVOKED;
    if (strcmp(s, "unknown") == 0)
        return PAGE_UNKNOWN;
    return PAGE_UNAVAILABLE;
}

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool take_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *set)
{
    if (**p == '\0' || strchr(set, **p) == NULL)
        return false;
    (*p)++;
    return true;
}

/*
 * Turns an RFC 3339 timestamp into "22 Nov 2026, 10:00 UTC" in out (at least 32 bytes).
 * Returns false for anything that is not a valid RFC 3339 date-time; the caller then shows the
 * text as it came.
 */
static bool page_time(const char *s, char *out, size_t out_size)
{
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec, off_h = 0, off_m = 0, sign = 0;
    if (!take_digits(&p, 4, &y) || !take_char(&p, "-") || !take_digits(&p, 2, &mo) ||
        !take_char(&p, "-") || !take_digits(&p, 2, &d) || !take_char(&p, "Tt ") ||
        !take_digits(&p, 2, &h) || !take_char(&p, ":") || !take_digits(&p, 2, &mi) ||
        !take_char(&p, ":") || !take_digits(&p, 2, &sec))
        return false;
    if (take_char(&p, ".")) {
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (take_char(&p, "Zz")) {
        sign = 0;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        if (!take_digits(&p, 2, &off_h) || !take_char(&p, ":") || !take_digits(&p, 2, &off_m))
            return false;
    } else {
        return false;
    }
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] ||
        (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 60 || off_h > 23 || off_m > 59)
        return false;

    /* Shift to UTC in minutes; the seconds are not shown. */
    int64_t minutes = days_from_civil(y, mo, d) * 1440 + h * 60 + mi - sign * (off_h * 60 + off_m);
    int64_t days = minutes >= 0 ? minutes / 1440 : -((-minutes + 1439) / 1440);
    int64_t in_day = minutes - days * 1440;
    int64_t uy;
    int um, ud;
    civil_from_days(days, &uy, &um, &ud);
    int n = snprintf(out, out_size, "%d %s %04lld, %02d:%02d UTC", ud, months[um - 1],
                     (long long)uy, (int)(in_day / 60), (int)(in_day % 60));
    return n > 0 && (size_t)n < out_size;
}

/* 1234567 → "1,234,567". */
static void page_count(struct page_buf *b, int64_t n)
{
    char digits[24], out[32];
    int len = snprintf(digits, sizeof(digits), "%lld", (long long)n);
    size_t o = 0;
    for (int i = 0; i < len; i++) {
        if (i > 0 && digits[i - 1] != '-' && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    buf_add(b, out, o);
}

/*
 * The rules' reason ids in words a shopper understands. An id this table does not know gets a
 * general sentence: its raw text is never shown, because it means nothing to a consumer.
 */
static const char *page_reason_text(const char *id)
{
    static const struct {
        const char *id;
        const char *text;
    } reasons[] = {
        {"velocity", "This code was scanned many times within a minute."},
        {"impossible_travel", "This code was scanned in places too far apart to travel between."},
        {"clone_spread", "This code has been scanned by an unusual number of different phones "
                         "in one day, as if it had been copied."},
        {"enumeration", "Many unregistered codes were checked from this connection, which "
                        "looks like someone guessing codes."},
        {"bot_ua", "This check came from an automated program, not from a person's phone."},
        {"revoked", "The manufacturer recalled this batch."},
    };
    for (size_t i = 0; id != NULL && i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcmp(id, reasons[i].id) == 0)
            return reasons[i].text;
    return "Our checks found something unusual about how this code is being used.";
}

/*
 * The fixed words of each state. The headline goes in <title> and <h1>; the icon is inline
 * SVG (no font or image to fetch) and colour is never the only signal: every state has its own
 * icon and its own words.
 */
struct page_words {
    const char *css;
    const char *headline;
    const char *lead;
    const char *icon;
};

static const struct page_words page_words[] = {
    [PAGE_AUTHENTIC] = {"authentic", "Genuine product",
                        "This code was registered by the manufacturer.",
                        "<circle cx=\"12\" cy=\"12\" r=\"10\"/><path d=\"M7 12.5l3.2 3.2L17 9\"/>"},
    [PAGE_SUSPICIOUS] =
        {"suspicious", "Possible counterfeit",
         "This code is registered, but the way it is being scanned looks "
         "unusual.",
         "<path d=\"M12 2.8 1.8 20.5h20.4z\"/><path d=\"M12 9.5v4.5M12 17.3v.01\"/>"},
    [PAGE_REVOKED] = {"revoked", "Recalled product", "This batch was recalled by the manufacturer.",
                      "<circle cx=\"12\" cy=\"12\" r=\"10\"/><path d=\"M4.9 4.9l14.2 14.2\"/>"},
    [PAGE_UNKNOWN] = {"unknown", "This code is not registered",
                      "No manufacturer has registered this code with us. The product may be "
                      "counterfeit.",
                      "<circle cx=\"12\" cy=\"12\" r=\"10\"/><path d=\"M9.2 9.2a2.9 2.9 0 0 1 "
                      "5.6 1c0 1.9-2.8 2.4-2.8 4.3M12 17.6v.01\"/>"},
    [PAGE_UNAVAILABLE] = {"unavailable", "Temporarily unavailable",
                          "We can't check this code right now. Please try again in a minute.",
                          "<circle cx=\"12\" cy=\"12\" r=\"10\"/><path d=\"M12 6.5V12l3.5 2.2\"/>"},
};

/*
 * Sizes are in rem so the page follows the phone's text size; the layout is one column that
 * fits 320 px. Text colours on each verdict band reach at least 4.5:1 (WCAG AA).
 */
static const char page_css[] =
    "*{box-sizing:border-box}"
    "html{-webkit-text-size-adjust:100%;text-size-adjust:100%}"
    "body{margin:0;background:#eceef2;color:#101828;"
    "font:1.0625rem/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,"
    "sans-serif}"
    "main{max-width:34rem;margin:0 auto;padding-bottom:1.5rem}"
    ".v{padding:1.5rem 1.25rem 1.375rem;color:#fff}"
    ".v svg{display:block;width:3.25rem;height:3.25rem;margin-bottom:.625rem;fill:none;"
    "stroke:currentColor;stroke-width:2.2;stroke-linecap:round;stroke-linejoin:round}"
    "h1{margin:0;font-size:2rem;line-height:1.15;font-weight:800;letter-spacing:-.01em}"
    ".v p{margin:.625rem 0 0;font-size:1.125rem;line-height:1.4}"
    ".authentic .v{background:#05603a}"
    ".suspicious .v{background:#fdb022;color:#1d1100}"
    ".revoked .v{background:#b42318}"
    ".unknown .v{background:#93370d}"
    ".unavailable .v{background:#344054}"
    ".card{background:#fff;margin:.875rem .75rem 0;padding:1rem 1.125rem;border-radius:.75rem;"
    "box-shadow:0 1px 3px rgba(16,24,40,.12)}"
    "h2{margin:0 0 .5rem;font-size:1.0625rem;font-weight:700}"
    ".card p{margin:0}.card p+p{margin-top:.5rem}.card p+dl{margin-top:1rem}"
    "ul{margin:0;padding-left:1.25rem}li+li{margin-top:.5rem}"
    /* The stripe takes its width from the padding, so the text lines up with the other cards. */
    ".suspicious .reasons,.revoked .todo,.unknown .todo{border-left:.375rem solid;"
    "padding-left:.75rem}"
    ".suspicious .reasons{border-color:#dc6803}"
    ".revoked .todo,.unknown .todo{border-color:#b42318}"
    "dl{margin:0}"
    "dt{margin-top:.875rem;font-size:.8125rem;font-weight:700;letter-spacing:.04em;"
    "text-transform:uppercase;color:#475467}"
    "dt:first-child{margin-top:0}"
    "dd{margin:.125rem 0 0;font-size:1.125rem;overflow-wrap:anywhere}"
    ".card .note{margin-top:.25rem;font-size:.9375rem;line-height:1.4;color:#475467}"
    "code{font:.875em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}"
    "dd,code{unicode-bidi:isolate}"
    ".btn{display:block;margin-top:1rem;padding:.875rem 1rem;border-radius:.5rem;"
    "background:#1d2939;color:#fff;font-weight:700;text-align:center;text-decoration:none}"
    ".btn:focus{outline:3px solid #84adff;outline-offset:2px}"
    "footer{margin:1.25rem 1.25rem 0;font-size:.8125rem;color:#475467}"
    "footer p{margin:.25rem 0;overflow-wrap:anywhere}";

static void page_head(struct page_buf *b, const struct page_words *w)
{
    buf_puts(b, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">\n"
                "<meta name=\"referrer\" content=\"no-referrer\">\n"
                "<meta name=\"robots\" content=\"noindex\">\n"
                "<meta name=\"color-scheme\" content=\"light\">\n<title>");
    buf_puts(b, w->headline);
    buf_puts(b, " \xC2\xB7 Tagproof</title>\n<style>");
    buf_puts(b, page_css);
    buf_puts(b, "</style>\n</head>\n");
}

static void page_banner(struct page_buf *b, const struct page_words *w)
{
    buf_puts(b, "<section class=\"v\">\n<svg viewBox=\"0 0 24 24\" aria-hidden=\"true\" "
                "focusable=\"false\">");
    buf_puts(b, w->icon);
    buf_puts(b, "</svg>\n<h1>");
    buf_puts(b, w->headline);
    buf_puts(b, "</h1>\n<p>");
    buf_puts(b, w->lead);
    buf_puts(b, "</p>\n</section>\n");
}

static void page_fact(struct page_buf *b, const char *label, const char *value)
{
    if (!present(value))
        return;
    buf_puts(b, "<dt>");
    buf_puts(b, label);
    buf_puts(b, "</dt><dd>");
    page_escape(b, value);
    buf_puts(b, "</dd>\n");
}

static void page_anchor(struct page_buf *b, const struct page_view *v)
{
    if (v->anchor_status == NULL)
        return;
    if (strcmp(v->anchor_status, "pending") == 0) {
        buf_puts(b, "<dt>Registration record</dt><dd>Being sealed in the public log"
                    "<p class=\"note\">This normally takes a few minutes.</p></dd>\n");
        return;
    }
    if (strcmp(v->anchor_status, "anchored") != 0)
        return;
    buf_puts(b, "<dt>Registration record</dt><dd>Sealed in the public log");
    bool entry = v->anchor_leaf_index >= 0 && v->anchor_leaf_index < v->anchor_checkpoint_size;
    if (entry || present(v->anchor_ledger_tx)) {
        buf_puts(b, "<p class=\"note\">Nobody can change or hide it afterwards.");
        if (entry) {
            buf_puts(b, " Entry ");
            page_count(b, v->anchor_leaf_index);
            buf_puts(b, " of ");
            page_count(b, v->anchor_checkpoint_size);
            buf_puts(b, ".");
        }
        if (present(v->anchor_ledger_tx)) {
            buf_puts(b, " Ledger transaction <code>");
            page_escape(b, v->anchor_ledger_tx);
            buf_puts(b, "</code>");
        }
        buf_puts(b, "</p>");
    }
    buf_puts(b, "</dd>\n");
}

/* Product, batch, factory, scans and the anchoring record: the facts of a registered tag. */
static void page_facts(struct page_buf *b, const struct page_view *v, enum page_state state)
{
    buf_puts(b, "<section class=\"card facts\">\n");
    if (state != PAGE_AUTHENTIC)
        buf_puts(b, "<h2>Registered as</h2>\n<p>Make sure the product in your hands matches."
                    "</p>\n");
    buf_puts(b, "<dl>\n");
    page_fact(b, "Product", v->product_name);
    page_fact(b, "Product code", v->product_sku);
    page_fact(b, "Batch", v->batch_code);
    page_fact(b, "Made by", v->factory_name);
    if (present(v->first_scanned_at)) {
        char when[48];
        buf_puts(b, "<dt>First scanned</dt><dd>");
        if (page_time(v->first_scanned_at, when, sizeof(when)))
            buf_puts(b, when);
        else
            page_escape(b, v->first_scanned_at);
        if (v->first_scan)
            buf_puts(b, "<p class=\"note\">That was this scan: you are the first to check "
                        "this code.</p>");
        else if (state == PAGE_AUTHENTIC)
            buf_puts(b, "<p class=\"note\">If you bought this product new and nobody "
                        "scanned it before you, ask the seller about it.</p>");
        buf_puts(b, "</dd>\n");
    } else if (v->first_scan) {
        buf_puts(b, "<dt>First scanned</dt><dd>Just now: you are the first to check this code."
                    "</dd>\n");
    }
    if (v->scan_count > 1) {
        buf_puts(b, "<dt>Times scanned</dt><dd>");
        page_count(b, v->scan_count);
        buf_puts(b, "</dd>\n");
    }
    page_anchor(b, v);
    buf_puts(b, "</dl>\n</section>\n");
}

static void page_reasons(struct page_buf *b, const struct page_view *v)
{
    buf_puts(b, "<section class=\"card reasons\">\n<h2>What we noticed</h2>\n<ul>\n");
    size_t shown = 0;
    const char *seen[16];
    for (size_t i = 0; v->reasons != NULL && i < v->reason_count; i++) {
        const char *text = page_reason_text(v->reasons[i]);
        /* Several unknown ids share one sentence; say it once. */
        bool dup = false;
        for (size_t j = 0; j < shown; j++)
            dup = dup || seen[j] == text;
        if (dup || shown == sizeof(seen) / sizeof(seen[0]))
            continue;
        seen[shown++] = text;
        buf_puts(b, "<li>");
        buf_puts(b, text);
        buf_puts(b, "</li>\n");
    }
    if (shown == 0)
        buf_puts(b, "<li>Our checks found something unusual about how this code is being "
                    "used.</li>\n");
    buf_puts(b, "</ul>\n</section>\n");
}

static void page_todo(struct page_buf *b, const char *text)
{
    buf_puts(b, "<section class=\"card todo\">\n<h2>What to do</h2>\n");
    buf_puts(b, text);
    buf_puts(b, "\n</section>\n");
}

static void page_footer(struct page_buf *b, const struct page_view *v)
{
    buf_puts(b, "<footer>\n");
    if (present(v->tag_id)) {
        buf_puts(b, "<p>Code <code>");
        page_escape(b, v->tag_id);
        buf_puts(b, "</code></p>\n");
    }
    if (present(v->request_id)) {
        buf_puts(b, "<p>Support reference <code>");
        page_escape(b, v->request_id);
        buf_puts(b, "</code></p>\n");
    }
    buf_puts(b, "<p>Checked by Tagproof</p>\n</footer>\n");
}

char *page_render(const struct page_view *v, size_t *len)
{
    assert(v != NULL);
    struct page_buf b = {0};
    enum page_state state = page_state_parse(v->state);
    const struct page_words *w = &page_words[state];

    page_head(&b, w);
    buf_puts(&b, "<body class=\"");
    buf_puts(&b, w->css);
    buf_puts(&b, "\">\n<main>\n");
    page_banner(&b, w);
    switch (state) {
    case PAGE_AUTHENTIC:
        page_facts(&b, v, state);
        break;
    case PAGE_SUSPICIOUS:
        page_reasons(&b, v);
        page_todo(&b, "<p>Buy only from authorised sellers.</p>\n<p>If you have already bought "
                      "it, keep the receipt and contact the seller or the brand.</p>");
        page_facts(&b, v, state);
        break;
    case PAGE_REVOKED:
        page_todo(&b, "<p>Don't use or sell this product.</p>\n<p>Contact the seller or the "
                      "manufacturer about a refund or a replacement.</p>");
        page_facts(&b, v, state);
        break;
    case PAGE_UNKNOWN:
        page_todo(&b, "<p>Check that you scanned the code printed on the product or its "
                      "packaging.</p>\n<p>If it is still not recognised, don't rely on this "
                      "product being genuine: ask the seller, or contact the brand.</p>");
        break;
    case PAGE_UNAVAILABLE:
        /* No verdict was reached, so nothing about the product is shown, not even cached
         * details the handler may hold. An empty href reloads this same page without script. */
        buf_puts(&b,
                 "<section class=\"card\">\n<p>This is not a warning about the product: "
                 "our checking service is briefly unavailable.</p>\n<a class=\"btn\" href=\"\">Try "
                 "again</a>\n</section>\n");
        break;
    }
    page_footer(&b, v);
    buf_puts(&b, "</main>\n</body>\n</html>\n");

    if (b.failed) {
        free(b.data);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.data;
}
