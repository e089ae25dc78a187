/*
 * page: the HTML page behind GET /t/{tag_id}, the one a consumer's phone opens from the QR
 * code. Pure rendering: the handler fills a page_view from the verdict it already has and
 * sends what page_render() returns. The page is one self-contained document (inline CSS and
 * SVG, no script, no external URL), readable at 320 px, and every value in it is escaped.
 */
#ifndef TAGPROOF_PAGE_H
#define TAGPROOF_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What the page shows. Every pointer is borrowed for the duration of page_render() and may be
 * NULL (that line is then left out). The states, and what the handler is expected to send:
 *
 *   "authentic"    a registered tag with a clean score (verdict JSON 200): product, batch,
 *                  factory, first-scan time, scan count and anchoring status.
 *   "suspicious"   registered, but rules fired (200): the reasons in plain words, advice, and
 *                  the same details so the buyer can compare them with the product in hand.
 *   "revoked"      the batch was recalled (200): the recall, advice, the details.
 *   "unknown"      a well-formed tag id that is not registered (404): may be counterfeit.
 *   "unavailable"  the answer cannot be known right now (503 with Retry-After): asks to try
 *                  again and says nothing about the product.
 *
 * A NULL or unrecognised state renders the "unavailable" page, so a bug upstream can never
 * show a verdict that was not reached.
 */
struct page_view {
    const char *state;
    const char *tag_id;
    const char *product_name;
    const char *product_sku;
    const char *batch_code;
    const char *factory_name;
    bool first_scan;                /* this very scan was the tag's first */
    const char *first_scanned_at;   /* RFC 3339, shown as "22 Nov 2026, 10:00 UTC" */
    int64_t scan_count;             /* shown when above 1; 0 when not known */
    const char *const *reasons;     /* reason ids as in risk.reasons; unknown ids get a */
    size_t reason_count;            /* generic sentence, never their raw text */
    const char *anchor_status;      /* "pending" or "anchored"; anything else is not shown */
    int64_t anchor_leaf_index;      /* when anchored; the entry is shown only when */
    int64_t anchor_checkpoint_size; /* 0 <= leaf_index < checkpoint_size */
    const char *anchor_ledger_tx;
    const char *request_id; /* shown small at the bottom, for support */
};

/*
 * Renders the complete HTML5 document (UTF-8) for v (not NULL). Returns a NUL-terminated string
 * that the caller frees, and its length without the NUL in *len when len is not NULL; NULL when out
 * of memory. Invalid UTF-8 and control characters in values are replaced by U+FFFD.
 */
char *page_render(const struct page_view *v, size_t *len);

#endif
