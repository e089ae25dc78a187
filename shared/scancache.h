/*
 * scancache: what other programs write into the scan service's Redis cache, in one place —
 * the key of a tag's entry, its leaf-index field, and the value of tp:anchor, the newest
 * confirmed anchor. tagproof-anchor writes them, the scan service's lookup script reads them
 * (scan/tagcache.c). Pure: no I/O.
 */
#ifndef TAGPROOF_SCANCACHE_H
#define TAGPROOF_SCANCACHE_H

#include <stddef.h>
#include <stdint.h>

/* The key holding the newest confirmed anchor: "<checkpoint size> <ledger reference>". */
#define SCANCACHE_ANCHOR_KEY "tp:anchor"
/*
 * The leaves tagproof-anchor has pushed, as Redis itself has them: written once Redis has
 * acknowledged each page, so a snapshot or a promoted replica never holds a marker ahead of its
 * entries. One lower than PostgreSQL's watermark means Redis came back older: push again.
 */
#define SCANCACHE_PUSHED_KEY "tp:anchor:pushed"
/* The field of a tag's hash tp:t:<tag> holding its leaf index. */
#define SCANCACHE_LEAF_FIELD "i"
/* A ledger reference longer than this is not shown (ledger.h's references are shorter). */
#define SCANCACHE_LEDGER_REF_MAX 127

/*
 * The newest confirmed anchor, as one SQL subquery yielding (checkpoint_size, ledger_ref),
 * zero or one row: what tp:anchor holds and what a scan answered from PostgreSQL shows. Ties
 * of size (one checkpoint on two ledgers) go by ledger name, so the backward scan of the
 * anchors (checkpoint_size, ledger) key answers it.
 */
#define SCANCACHE_NEWEST_ANCHOR_SQL                                                                \
    "(SELECT checkpoint_size, ledger_ref FROM anchors WHERE state = 'confirmed'"                   \
    " AND ledger_ref IS NOT NULL ORDER BY checkpoint_size DESC, ledger DESC LIMIT 1)"

/* tp:t:<tag> and a NUL into out (len bytes, at least 48 for a UUID). */
void scancache_tag_key(char *out, size_t len, const char *tag_id);

/*
 * The value of tp:anchor for a checkpoint size and a ledger reference (no blanks, 1 to
 * SCANCACHE_LEDGER_REF_MAX bytes), NUL-terminated into out. Its length, or -1 when the
 * reference is not usable or out (len bytes) is too small.
 */
int scancache_anchor_format(char *out, size_t len, int64_t size, const char *ref);

/*
 * Parses a value of tp:anchor (len bytes, not NUL-terminated). *size gets the checkpoint
 * size, *ref and *ref_len the reference, pointing into s. 0, or -1 when it is not that form.
 */
int scancache_anchor_parse(const char *s, size_t len, int64_t *size, const char **ref,
                           size_t *ref_len);

/*
 * A leaf index or size as Redis holds it: 1 to 18 decimal digits, no sign, no leading zero
 * (len bytes, not NUL-terminated). 0, or -1.
 */
int scancache_parse_count(const char *s, size_t len, int64_t *out);

#endif
