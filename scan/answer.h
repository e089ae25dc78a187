/*
 * answer: the verdict JSON of GET /v1/scan/{tag_id} (SPEC §5), written straight into one
 * buffer. A tag's product, batch and factory arrive as JSON text (the "d" field of its cache
 * entry, or built from a database row here); that text is checked once and spliced into the
 * answer as it is, instead of being parsed into a tree and written out again. Pure C: no I/O.
 */
#ifndef TAGPROOF_ANSWER_H
#define TAGPROOF_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

#define ANSWER_MAX_DEPTH 16 /* nesting of the cached data that answer_info_parse accepts */

/*
 * The members of a tag's data {"product":{...},"batch":{...},"factory":{...}}: each the
 * JSON text of its value, borrowed from the text given to answer_info_parse, or NULL when
 * the member is absent (the answer then shows {}). Member names are matched as written,
 * without decoding escapes; a name given twice takes its last value.
 */
struct answer_info {
    const char *product, *batch, *factory;
    size_t product_len, batch_len, factory_len;
    /* factory.id when it is a UUID in lower-case canonical form, else "". */
    char factory_id[UUID_STR_LEN + 1];
};

/*
 * Checks that the len bytes at json are one JSON object (RFC 8259: UTF-8, no control
 * characters or lone surrogates in strings, no \u0000, nesting at most ANSWER_MAX_DEPTH) with
 * nothing but blanks around it, and fills *out. 0, or -1 when it is anything else — such
 * data is never spliced into an answer.
 */
int answer_info_parse(const char *json, size_t len, struct answer_info *out);

/*
 * The data of a tag from its database row, in the form the cache holds it:
 * {"product":{"id","sku","name"},"batch":{"id","code"},"factory":{"id","name"}}, compact,
 * strings escaped as jansson's compact output escapes them (bytes that are not UTF-8 become
 * U+FFFD). Returns a NUL-terminated string the caller frees, its length in *len; NULL when
 * out of memory. The strings are borrowed for the call.
 */
char *answer_info_build(const char *product_id, const char *sku, const char *name,
                        const char *batch_id, const char *batch_code, const char *factory_id,
                        const char *factory_name, size_t *len);

/*
 * The anchor block of an answer (SPEC §5): "pending", or "anchored" with the tag's leaf index,
 * the checkpoint size and the ledger reference of the newest confirmed anchor.
 */
#define ANSWER_LEDGER_TX_MAX 127
struct answer_anchor {
    bool anchored;
    int64_t leaf_index;
    int64_t checkpoint_size;
    char ledger_tx[ANSWER_LEDGER_TX_MAX + 1];
};

/*
 * Judges the anchoring state: anchored when the leaf is known (leaf_index >= 0), covered by
 * the confirmed checkpoint (leaf_index < checkpoint_size) and the anchor has a reference (tx,
 * tx_len bytes, 1 to ANSWER_LEDGER_TX_MAX); else pending. tx is copied.
 */
void answer_anchor_set(struct answer_anchor *a, int64_t leaf_index, int64_t checkpoint_size,
                       const char *tx, size_t tx_len);

/* What a verdict answer says. Strings are borrowed for the call. */
struct answer_fields {
    const char *tag_id;             /* lower-case canonical UUID */
    const char *verdict;            /* "authentic", "suspicious" or "revoked" */
    const struct answer_info *info; /* from answer_info_parse */
    bool first_scan;                /* this scan was the tag's first */
    int64_t first_ms;               /* first scan, Unix ms; 0: null */
    long scan_count;                /* 0: null (not known) */
    int score;                      /* 0..100 */
    const char *const *reasons;     /* reason ids, in the answer's order */
    size_t nreasons;
    bool degraded;                      /* the stateful rules were skipped */
    const struct answer_anchor *anchor; /* NULL: pending */
    const char *source;                 /* "cache" or "database" */
};

/*
 * Writes the verdict JSON into buf (cap bytes, not NUL-terminated) and returns its length.
 * When that is more than cap, nothing useful is in buf: call again with a buffer that large.
 * The members are those of SPEC §5, in its order; risk.degraded is present only when true.
 * The ledger reference is escaped as a JSON string (it comes from a store).
 */
size_t answer_verdict(const struct answer_fields *f, char *buf, size_t cap);

/* first_ms as RFC 3339 UTC to the second ("2026-11-22T10:00:00Z") and a NUL into out. */
void answer_time(int64_t ms, char out[32]);

#endif
