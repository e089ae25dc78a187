/*
 * proof: proof bundles — strict parsing, the exact JSON served, the checks anyone can run on
 * their own — and proof plans that name the stored subtrees a proof reads (see proof.h).
 */
#include "proof.h"

#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_RECORD_TYPE "tagproof/tag/v1"
#define TAG_RECORD_LINES 6

/* --- hex --------------------------------------------------------------------------------- */

void proof_hex(const uint8_t *p, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static int lower_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int proof_unhex(const char *s, uint8_t *out, size_t len)
{
    if (s == NULL || strlen(s) != 2 * len)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int hi = lower_hex_digit(s[2 * i]), lo = lower_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/*
 * s cut to at most cap - 1 bytes at a character boundary, into buf: a detail that quotes a
 * bundle's text stays UTF-8 (it is served as JSON), however long the text was.
 */
static const char *clip(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* --- parsing ----------------------------------------------------------------------------- */

void proof_bundle_free(struct proof_bundle *b)
{
    if (b == NULL)
        return;
    free(b->record);
    free(b->note);
    free(b);
}

/*
 * An object with exactly the members named in req (all required) and opt (each optional):
 * any other member is refused, so a renamed key never slips through as "unknown, ignored".
 */
static int members_exact(const json_t *obj, const char *const *req, const char *const *opt,
                         const char *what, char *err, size_t errlen)
{
    const char *key;
    char shown[41];
    json_t *v;

    if (!json_is_object(obj)) {
        snprintf(err, errlen, "%s must be an object", what);
        return -1;
    }
    for (const char *const *r = req; *r != NULL; r++) {
        if (json_object_get(obj, *r) == NULL) {
            snprintf(err, errlen, "%s has no \"%s\"", what, *r);
            return -1;
        }
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        int known = 0;
        for (const char *const *r = req; *r != NULL && !known; r++)
            known = strcmp(key, *r) == 0;
        for (const char *const *o = opt; o != NULL && *o != NULL && !known; o++)
            known = strcmp(key, *o) == 0;
        if (!known) {
            snprintf(err, errlen, "%s has an unknown member \"%s\"", what,
                     clip(shown, sizeof(shown), key));
            return -1;
        }
    }
    return 0;
}

/* A string member without NUL bytes, of at most max bytes (the length in *len). */
static const char *get_str(const json_t *obj, const char *name, size_t max, size_t *len,
                           const char *what, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, name);
    const char *s = json_string_value(v);

    if (s == NULL || strlen(s) != json_string_length(v) || json_string_length(v) > max) {
        snprintf(err, errlen, "%s.%s must be a string of at most %zu bytes without NUL", what, name,
                 max);
        return NULL;
    }
    if (len != NULL)
        *len = json_string_length(v);
    return s;
}

static int get_uint(const json_t *obj, const char *name, uint64_t min, uint64_t *out,
                    const char *what, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min) {
        snprintf(err, errlen, "%s.%s must be an integer of at least %llu", what, name,
                 (unsigned long long)min);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_hash(const json_t *obj, const char *name, uint8_t out[MERKLE_HASH_LEN],
                    const char *what, char *err, size_t errlen)
{
    if (proof_unhex(json_string_value(json_object_get(obj, name)), out, MERKLE_HASH_LEN) != 0) {
        snprintf(err, errlen, "%s.%s must be 64 lower-case hex digits", what, name);
        return -1;
    }
    return 0;
}

static int one_of(const char *s, const char *const *allowed)
{
    for (; *allowed != NULL; allowed++)
        if (strcmp(s, *allowed) == 0)
            return 1;
    return 0;
}

/*
 * A ledger's id of an anchor. An Ethereum transaction hash is "0x" and 64 hex digits, in lower
 * case so that no two spellings name one transaction. An http ledger names its entries as it
 * likes (the devledger: SHA-256 hex); letters, digits, '.', '_' and '-' are accepted.
 */
static int ref_ok(const char *s, int eth)
{
    size_t n = strlen(s);
    if (eth) {
        if (n != 66 || strncmp(s, "0x", 2) != 0)
            return 0;
        for (size_t i = 2; i < n; i++)
            if (lower_hex_digit(s[i]) < 0)
                return 0;
        return 1;
    }
    return n > 0 && strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-") == n;
}

static int parse_anchor(const json_t *a, struct proof_anchor *out, char *err, size_t errlen)
{
    static const char *const req[] = {"ledger", "status", NULL};
    static const char *const opt_http[] = {"id", NULL};
    static const char *const opt_eth[] = {"tx", "block", "chain_id", NULL};
    static const char *const ledgers[] = {"http", "ethereum", NULL};
    static const char *const states[] = {"pending", "submitted", "confirmed", "failed", NULL};
    const char *ledger, *status, *ref;
    int eth;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(a)) {
        snprintf(err, errlen, "anchor must be an object or null");
        return -1;
    }
    ledger = json_string_value(json_object_get(a, "ledger"));
    if (ledger == NULL || !one_of(ledger, ledgers)) {
        snprintf(err, errlen, "anchor.ledger must be \"http\" or \"ethereum\"");
        return -1;
    }
    eth = strcmp(ledger, "ethereum") == 0;
    if (members_exact(a, req, eth ? opt_eth : opt_http, "anchor", err, errlen) != 0)
        return -1;
    status = json_string_value(json_object_get(a, "status"));
    if (status == NULL || !one_of(status, states)) {
        snprintf(err, errlen, "anchor.status must be pending, submitted, confirmed or failed");
        return -1;
    }
    snprintf(out->ledger, sizeof(out->ledger), "%s", ledger);
    snprintf(out->status, sizeof(out->status), "%s", status);
    if (json_object_get(a, eth ? "tx" : "id") != NULL) {
        ref = get_str(a, eth ? "tx" : "id", PROOF_REF_MAX, NULL, "anchor", err, errlen);
        if (ref == NULL)
            return -1;
        if (!ref_ok(ref, eth)) {
            snprintf(err, errlen, "%s",
                     eth ? "anchor.tx must be 0x and 64 lower-case hex digits"
                         : "anchor.id must be letters, digits, '.', '_' or '-'");
            return -1;
        }
        snprintf(out->ref, sizeof(out->ref), "%s", ref);
    }
    if (json_object_get(a, "block") != NULL) {
        uint64_t v;
        if (get_uint(a, "block", 0, &v, "anchor", err, errlen) != 0)
            return -1;
        out->has_block = 1;
        out->block = (int64_t)v;
    }
    if (json_object_get(a, "chain_id") != NULL) {
        uint64_t v;
        if (get_uint(a, "chain_id", 1, &v, "anchor", err, errlen) != 0)
            return -1;
        out->has_chain_id = 1;
        out->chain_id = (int64_t)v;
    }
    return 0;
}

struct proof_bundle *proof_bundle_from_json(const json_t *doc, char *err, size_t errlen)
{
    static const char *const top[] = {"version",   "tag_id", "leaf",    "checkpoint",
                                      "inclusion", "anchor", "log_key", NULL};
    static const char *const leaf_m[] = {"index", "record", "hash", NULL};
    static const char *const cp_m[] = {"origin", "size", "root", "note", NULL};
    struct proof_bundle *b = NULL;
    const json_t *leaf, *cp, *inc, *anchor, *v;
    const char *s;
    size_t len;
    uint64_t version;

    snprintf(err, errlen, "out of memory");
    if (members_exact(doc, top, NULL, "the bundle", err, errlen) != 0)
        return NULL;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return NULL;
    if (get_uint(doc, "version", 0, &version, "bundle", err, errlen) != 0)
        goto fail;
    if (version != PROOF_BUNDLE_VERSION) {
        snprintf(err, errlen, "bundle.version must be %d", PROOF_BUNDLE_VERSION);
        goto fail;
    }
    s = json_string_value(json_object_get(doc, "tag_id"));
    /* Lower case exactly as the record spells it: "any case" is for scans, not for proofs. */
    if (s == NULL || uuid_canonical(s, strlen(s), b->tag_id) != 0 || strcmp(s, b->tag_id) != 0) {
        snprintf(err, errlen, "bundle.tag_id must be a lower-case UUID");
        goto fail;
    }

    leaf = json_object_get(doc, "leaf");
    if (members_exact(leaf, leaf_m, NULL, "leaf", err, errlen) != 0 ||
        get_uint(leaf, "index", 0, &b->leaf_index, "leaf", err, errlen) != 0 ||
        (s = get_str(leaf, "record", PROOF_RECORD_MAX, &len, "leaf", err, errlen)) == NULL ||
        get_hash(leaf, "hash", b->leaf_hash, "leaf", err, errlen) != 0)
        goto fail;
    if ((b->record = strndup(s, len)) == NULL)
        goto fail;
    b->record_len = len;

    cp = json_object_get(doc, "checkpoint");
    if (members_exact(cp, cp_m, NULL, "checkpoint", err, errlen) != 0 ||
        (s = get_str(cp, "origin", PROOF_ORIGIN_MAX, &len, "checkpoint", err, errlen)) == NULL)
        goto fail;
    if (len == 0 || strchr(s, '\n') != NULL) {
        snprintf(err, errlen, "checkpoint.origin must be one non-empty line");
        goto fail;
    }
    memcpy(b->origin, s, len + 1);
    if (get_uint(cp, "size", 1, &b->size, "checkpoint", err, errlen) != 0 ||
        get_hash(cp, "root", b->root, "checkpoint", err, errlen) != 0 ||
        (s = get_str(cp, "note", PROOF_NOTE_MAX, &len, "checkpoint", err, errlen)) == NULL)
        goto fail;
    if ((b->note = strndup(s, len)) == NULL)
        goto fail;
    b->note_len = len;

    inc = json_object_get(doc, "inclusion");
    if (!json_is_array(inc) || json_array_size(inc) > MERKLE_MAX_PROOF) {
        snprintf(err, errlen, "inclusion must be an array of at most %d hashes", MERKLE_MAX_PROOF);
        goto fail;
    }
    b->n_inclusion = json_array_size(inc);
    for (size_t i = 0; i < b->n_inclusion; i++) {
        v = json_array_get(inc, i);
        if (proof_unhex(json_string_value(v), b->inclusion[i], MERKLE_HASH_LEN) != 0) {
            snprintf(err, errlen, "inclusion[%zu] must be 64 lower-case hex digits", i);
            goto fail;
        }
    }

    anchor = json_object_get(doc, "anchor");
    if (!json_is_null(anchor)) {
        if (parse_anchor(anchor, &b->anchor, err, errlen) != 0)
            goto fail;
        b->has_anchor = 1;
    }

    s = get_str(doc, "log_key", NOTE_VKEY_MAX, NULL, "bundle", err, errlen);
    if (s == NULL)
        goto fail;
    if (*s == '\0') {
        snprintf(err, errlen, "bundle.log_key must not be empty");
        goto fail;
    }
    snprintf(b->log_key, sizeof(b->log_key), "%s", s);
    err[0] = '\0';
    return b;
fail:
    proof_bundle_free(b);
    return NULL;
}

struct proof_bundle *proof_bundle_parse(const char *text, size_t len, int *not_json, char *err,
                                        size_t errlen)
{
    json_error_t jerr;
    json_t *doc;
    struct proof_bundle *b;

    if (not_json != NULL)
        *not_json = 0;
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        if (not_json != NULL)
            *not_json = 1;
        /* jansson quotes the bytes it choked on, which need not be UTF-8: ASCII only. */
        for (char *c = jerr.text; *c != '\0'; c++)
            if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x20)
                *c = '?';
        snprintf(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
        return NULL;
    }
    b = proof_bundle_from_json(doc, err, errlen);
    json_decref(doc);
    return b;
}

/* --- the JSON served ---------------------------------------------------------------------- */

char *proof_bundle_json(const struct proof_bundle *b)
{
    char hex[2 * MERKLE_HASH_LEN + 1];
    json_t *doc = json_object(), *leaf = json_object(), *cp = json_object(), *inc = json_array();
    json_t *anchor = b->has_anchor ? json_object() : json_null();
    char *out = NULL;
    int bad = doc == NULL || leaf == NULL || cp == NULL || inc == NULL || anchor == NULL;

    /*
     * Members are set in SPEC §7's order and dumped in that order. json_stringn refuses
     * bytes that are not UTF-8: a record or note that is not text cannot be served.
     */
    if (!bad) {
        proof_hex(b->leaf_hash, MERKLE_HASH_LEN, hex);
        bad |= json_object_set_new(leaf, "index", json_integer((json_int_t)b->leaf_index));
        bad |= json_object_set_new(leaf, "record", json_stringn(b->record, b->record_len));
        bad |= json_object_set_new(leaf, "hash", json_string(hex));
        proof_hex(b->root, MERKLE_HASH_LEN, hex);
        bad |= json_object_set_new(cp, "origin", json_string(b->origin));
        bad |= json_object_set_new(cp, "size", json_integer((json_int_t)b->size));
        bad |= json_object_set_new(cp, "root", json_string(hex));
        bad |= json_object_set_new(cp, "note", json_stringn(b->note, b->note_len));
        for (size_t i = 0; i < b->n_inclusion; i++) {
            proof_hex(b->inclusion[i], MERKLE_HASH_LEN, hex);
            bad |= json_array_append_new(inc, json_string(hex));
        }
    }
    if (!bad && b->has_anchor) {
        int eth = strcmp(b->anchor.ledger, "ethereum") == 0;
        bad |= json_object_set_new(anchor, "ledger", json_string(b->anchor.ledger));
        bad |= json_object_set_new(anchor, "status", json_string(b->anchor.status));
        if (b->anchor.ref[0] != '\0')
            bad |= json_object_set_new(anchor, eth ? "tx" : "id", json_string(b->anchor.ref));
        if (eth && b->anchor.has_block)
            bad |= json_object_set_new(anchor, "block", json_integer(b->anchor.block));
        if (eth && b->anchor.has_chain_id)
            bad |= json_object_set_new(anchor, "chain_id", json_integer(b->anchor.chain_id));
    }
    if (!bad) {
        bad |= json_object_set_new(doc, "version", json_integer(PROOF_BUNDLE_VERSION));
        bad |= json_object_set_new(doc, "tag_id", json_string(b->tag_id));
        bad |= json_object_set(doc, "leaf", leaf);
        bad |= json_object_set(doc, "checkpoint", cp);
        bad |= json_object_set(doc, "inclusion", inc);
        bad |= json_object_set(doc, "anchor", anchor);
        bad |= json_object_set_new(doc, "log_key", json_string(b->log_key));
    }
    if (!bad)
        out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(leaf);
    json_decref(cp);
    json_decref(inc);
    json_decref(anchor);
    json_decref(doc);
    return out;
}

/* --- checks ------------------------------------------------------------------------------- */

static const char *const check_names[PROOF_CHECK_COUNT] = {
    [PROOF_CHECK_RECORD] = "record",
    [PROOF_CHECK_LEAF_HASH] = "leaf_hash",
    [PROOF_CHECK_INCLUSION] = "inclusion",
    [PROOF_CHECK_SIGNATURE] = "checkpoint_signature",
    [PROOF_CHECK_NOTE_BODY] = "checkpoint_body",
    [PROOF_CHECK_LOG_KEY] = "log_key",
};

const char *proof_check_name(enum proof_check_id id)
{
    return (unsigned)id < PROOF_CHECK_COUNT ? check_names[id] : "?";
}

static void result(struct proof_check *c, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result(struct proof_check *c, int ok, const char *fmt, ...)
{
    va_list ap;
    c->ok = ok;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
    va_end(ap);
}

/*
 * SPEC §7's registration record: six lines, each ended by a newline, the first naming the
 * record type and the second the tag. The other four (factory, batch, product, time) are
 * the log's to state; the record's hash binds them.
 */
static void check_record(const struct proof_bundle *b, struct proof_check *c)
{
    const char *p = b->record, *end = b->record + b->record_len, *eol;
    size_t lines = 0;
    const size_t type_len = sizeof(TAG_RECORD_TYPE) - 1;

    while (p < end && (eol = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p = eol + 1;
    }
    if (p != end || lines != TAG_RECORD_LINES) {
        result(c, 0, "the record is not %d lines each ended by a newline", TAG_RECORD_LINES);
        return;
    }
    if (b->record_len < type_len + 1 + UUID_STR_LEN + 1 ||
        memcmp(b->record, TAG_RECORD_TYPE "\n", type_len + 1) != 0) {
        result(c, 0, "the record is not a %s registration", TAG_RECORD_TYPE);
        return;
    }
    if (memcmp(b->record + type_len + 1, b->tag_id, UUID_STR_LEN) != 0 ||
        b->record[type_len + 1 + UUID_STR_LEN] != '\n') {
        result(c, 0, "the record registers another tag than %s", b->tag_id);
        return;
    }
    result(c, 1, "a %s registration of tag %s", TAG_RECORD_TYPE, b->tag_id);
}

int proof_bundle_check(struct merkle_hasher *h, const struct proof_bundle *b, const char *vkey,
                       struct proof_check out[PROOF_CHECK_COUNT])
{
    uint8_t leaf[MERKLE_HASH_LEN], note_root[NOTE_HASH_LEN];
    struct merkle_bytes proof[MERKLE_MAX_PROOF];
    char origin[PROOF_ORIGIN_MAX + 2], hex[2 * MERKLE_HASH_LEN + 1], shown[201];
    uint64_t note_size = 0;
    size_t text_len = 0;
    int failed = 0;

    for (int i = 0; i < PROOF_CHECK_COUNT; i++) {
        out[i].name = check_names[i];
        out[i].ok = 0;
        out[i].detail[0] = '\0';
    }

    check_record(b, &out[PROOF_CHECK_RECORD]);

    merkle_leaf_hash(h, b->record, b->record_len, leaf);
    if (memcmp(leaf, b->leaf_hash, MERKLE_HASH_LEN) == 0)
        result(&out[PROOF_CHECK_LEAF_HASH], 1, "SHA-256(0x00 || record) is leaf.hash");
    else
        result(&out[PROOF_CHECK_LEAF_HASH], 0, "SHA-256(0x00 || record) is not leaf.hash");

    /* The proof starts from the record's own hash, so a leaf.hash alone proves nothing. */
    for (size_t i = 0; i < b->n_inclusion; i++)
        proof[i] = (struct merkle_bytes){b->inclusion[i], MERKLE_HASH_LEN};
    proof_hex(b->root, MERKLE_HASH_LEN, hex);
    if (merkle_verify_inclusion(h, b->leaf_index, b->size,
                                (struct merkle_bytes){leaf, sizeof(leaf)}, proof, b->n_inclusion,
                                (struct merkle_bytes){b->root, MERKLE_HASH_LEN}) == 0)
        result(&out[PROOF_CHECK_INCLUSION], 1,
               "leaf %llu is in the tree of %llu leaves with root %.16s…",
               (unsigned long long)b->leaf_index, (unsigned long long)b->size, hex);
    else
        result(&out[PROOF_CHECK_INCLUSION], 0,
               "the %zu hashes do not lead from leaf %llu to the root of %llu leaves",
               b->n_inclusion, (unsigned long long)b->leaf_index, (unsigned long long)b->size);

    if (vkey != NULL && note_verify(vkey, b->note, b->note_len, &text_len) == 0)
        result(&out[PROOF_CHECK_SIGNATURE], 1, "the note is signed by %s",
               clip(shown, sizeof(shown), vkey));
    else
        result(&out[PROOF_CHECK_SIGNATURE], 0, "the note carries no valid signature by %s",
               vkey != NULL ? clip(shown, sizeof(shown), vkey) : "(no key)");

    /*
     * The body is read only from a note whose signature holds: an unsigned body says
     * nothing. The whole text must be the checkpoint: no extension lines are expected.
     */
    if (!out[PROOF_CHECK_SIGNATURE].ok)
        result(&out[PROOF_CHECK_NOTE_BODY], 0, "not read: the signature does not hold");
    else if (note_checkpoint_parse(b->note, text_len, origin, sizeof(origin), &note_size,
                                   note_root) != 0)
        result(&out[PROOF_CHECK_NOTE_BODY], 0, "the note's text is not a checkpoint");
    else if (strcmp(origin, b->origin) != 0 || note_size != b->size ||
             memcmp(note_root, b->root, MERKLE_HASH_LEN) != 0)
        result(&out[PROOF_CHECK_NOTE_BODY], 0,
               "the note says origin %s, size %llu: not the bundle's checkpoint",
               clip(shown, 61, origin), (unsigned long long)note_size);
    else {
        char *body = note_checkpoint_body(origin, note_size, note_root);
        int whole = body != NULL && strlen(body) == text_len;
        free(body);
        if (whole)
            result(&out[PROOF_CHECK_NOTE_BODY], 1, "the note says %s, size %llu, root %.16s…",
                   clip(shown, 101, origin), (unsigned long long)note_size, hex);
        else
            result(&out[PROOF_CHECK_NOTE_BODY], 0, "the note's text has lines after the root");
    }

    if (vkey != NULL && strcmp(vkey, b->log_key) == 0)
        result(&out[PROOF_CHECK_LOG_KEY], 1, "the bundle names the trusted key");
    else
        result(&out[PROOF_CHECK_LOG_KEY], 0, "the bundle names another key: %s",
               clip(shown, sizeof(shown), b->log_key));

    for (int i = 0; i < PROOF_CHECK_COUNT; i++)
        failed += !out[i].ok;
    return failed;
}

/* --- plans -------------------------------------------------------------------------------- */

/* The planning getter: records each node asked for and answers zeros. */
static int plan_get(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    struct proof_nodes *nodes = arg;

    memset(out, 0, MERKLE_HASH_LEN);
    for (size_t i = 0; i < nodes->n; i++)
        if (nodes->node[i].level == level && nodes->node[i].idx == index)
            return 0;
    if (nodes->n == PROOF_NODES_MAX)
        return -1;
    nodes->node[nodes->n].level = level;
    nodes->node[nodes->n].idx = index;
    nodes->node[nodes->n].have = 0;
    nodes->n++;
    return 0;
}

/* The computing getter: the filled nodes. */
static int filled_get(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    const struct proof_nodes *nodes = arg;
    for (size_t i = 0; i < nodes->n; i++) {
        if (nodes->node[i].level == level && nodes->node[i].idx == index) {
            if (!nodes->node[i].have)
                return -1;
            memcpy(out, nodes->node[i].hash, MERKLE_HASH_LEN);
            return 0;
        }
    }
    return -1;
}

/*
 * Which nodes a proof reads depends only on the sizes, never on the hashes, so one run with
 * a getter that answers zeros names them all.
 */
int proof_plan_inclusion(struct merkle_hasher *h, uint64_t index, uint64_t size,
                         struct proof_nodes *out)
{
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    size_t n;
    out->n = 0;
    return merkle_inclusion_proof(h, index, size, plan_get, out, proof, &n) == 0 ? 0 : -1;
}

int proof_plan_consistency(struct merkle_hasher *h, uint64_t old_size, uint64_t size,
                           struct proof_nodes *out)
{
    uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    size_t n;
    out->n = 0;
    return merkle_consistency_proof(h, old_size, size, plan_get, out, proof, &n) == 0 ? 0 : -1;
}

int proof_nodes_set(struct proof_nodes *nodes, unsigned level, uint64_t idx, const uint8_t *hash,
                    size_t len)
{
    if (len != MERKLE_HASH_LEN)
        return -1;
    for (size_t i = 0; i < nodes->n; i++) {
        if (nodes->node[i].level == level && nodes->node[i].idx == idx) {
            memcpy(nodes->node[i].hash, hash, MERKLE_HASH_LEN);
            nodes->node[i].have = 1;
            return 0;
        }
    }
    return -1;
}

int proof_nodes_fill_lines(struct proof_nodes *nodes, const char *lines)
{
    for (const char *p = lines; p != NULL && *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        unsigned level;
        uint64_t idx;
        char hex[2 * MERKLE_HASH_LEN + 1];
        uint8_t h[MERKLE_HASH_LEN];
        int used = 0;
        if (sscanf(p, "%u %" SCNu64 " %64[0-9a-f]%n", &level, &idx, hex, &used) != 3 ||
            (size_t)used != len || proof_unhex(hex, h, sizeof(h)) != 0)
            return -1;
        proof_nodes_set(nodes, level, idx, h, sizeof(h)); /* -1: not planned, not needed */
        p = eol != NULL ? eol + 1 : p + len;
    }
    return proof_nodes_complete(nodes) ? 0 : -1;
}

int proof_nodes_complete(const struct proof_nodes *nodes)
{
    for (size_t i = 0; i < nodes->n; i++)
        if (!nodes->node[i].have)
            return 0;
    return 1;
}

int proof_inclusion(struct merkle_hasher *h, const struct proof_nodes *nodes, uint64_t index,
                    uint64_t size, uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    return merkle_inclusion_proof(h, index, size, filled_get, (void *)nodes, proof, n) == 0 ? 0
                                                                                            : -1;
}

int proof_consistency(struct merkle_hasher *h, const struct proof_nodes *nodes, uint64_t old_size,
                      uint64_t size, uint8_t proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN], size_t *n)
{
    return merkle_consistency_proof(h, old_size, size, filled_get, (void *)nodes, proof, n) == 0
               ? 0
               : -1;
}
