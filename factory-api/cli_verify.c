/*
 * tagproof verify: checks a proof bundle offline, trusting only the verifier key given on the
 * command line — the record names the tag, its hash is the leaf, the inclusion proof leads to
 * the checkpoint's root, the note is signed by that key and states that checkpoint, the bundle
 * names that key — and with --ledger-url, that the ledger holds the anchor of that checkpoint
 * (an http ledger's entry, or an Ethereum transaction whose data is root || size).
 *
 * Exit codes: 0 every check passed, 1 a check failed, 2 a usage error or unreadable input.
 */
#include "cli_verify.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "merkle.h"
#include "note.h"
#include "proof.h"

#define MAX_BUNDLE (1 << 20)
#define MAX_ANSWER (1 << 20)
#define LEDGER_TIMEOUT_S 15

static void usage(void)
{
    fprintf(stderr, "usage: tagproof verify BUNDLE.json --key VKEY [--ledger-url URL]\n"
                    "  BUNDLE.json  a bundle of GET /v1/proofs/{tag_id}, or - for standard input\n"
                    "  --key VKEY   the log's verifier key, <name>+<hex key id>+<base64 key>,\n"
                    "               or @FILE to read it from the first line of FILE\n"
                    "  --ledger-url an http ledger's base URL, or an Ethereum JSON-RPC URL:\n"
                    "               also checks that the ledger holds the bundle's anchor\n");
}

/* The whole of path ("-": standard input), at most MAX_BUNDLE bytes. Caller frees. */
static char *read_all(const char *path, size_t *len)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;

    if (fp == NULL)
        return NULL;
    buf = malloc(MAX_BUNDLE + 1);
    if (buf != NULL) {
        n = fread(buf, 1, MAX_BUNDLE + 1, fp);
        if (ferror(fp) || n > MAX_BUNDLE) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = n;
        }
    }
    if (fp != stdin)
        fclose(fp);
    return buf;
}

/*
 * The shape of a verifier key: <name>+<8 hex>+<base64 of 0x01 and 32 bytes>. The key id's
 * agreement with the key is note_verify's to check; this catches a mistyped argument.
 */
static int vkey_shape_ok(const char *k)
{
    const char *p1 = strchr(k, '+'), *p2 = p1 != NULL ? strchr(p1 + 1, '+') : NULL;
    unsigned char raw[40];

    if (p1 == NULL || p2 == NULL || p1 == k || p2 - p1 - 1 != 8 || strlen(p2 + 1) != 44 ||
        strlen(k) > NOTE_VKEY_MAX)
        return 0;
    for (const char *c = p1 + 1; c < p2; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return EVP_DecodeBlock(raw, (const unsigned char *)p2 + 1, 44) == 33 && raw[0] == 0x01;
}

/* --key: the text, or @FILE's first line. 0, or -1 after a message. */
static int load_key(const char *arg, char out[NOTE_VKEY_MAX + 1])
{
    if (arg[0] == '@') {
        FILE *fp = fopen(arg + 1, "r");
        char line[NOTE_VKEY_MAX + 4];
        if (fp == NULL || fgets(line, sizeof(line), fp) == NULL) {
            fprintf(stderr, "tagproof verify: cannot read the key file %s\n", arg + 1);
            if (fp != NULL)
                fclose(fp);
            return -1;
        }
        fclose(fp);
        line[strcspn(line, "\r\n")] = '\0';
        if (strlen(line) > NOTE_VKEY_MAX)
            line[0] = '\0'; /* refused below */
        memcpy(out, line, strlen(line) + 1);
    } else {
        snprintf(out, NOTE_VKEY_MAX + 1, "%s", arg);
    }
    if (!vkey_shape_ok(out)) {
        fprintf(stderr, "tagproof verify: --key is not a verifier key "
                        "(<name>+<hex key id>+<base64 key>)\n");
        return -1;
    }
    return 0;
}

/* --- the ledger ------------------------------------------------------------------------------ */

struct answer {
    char *buf;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t got = size * n;
    if (a->len + got > MAX_ANSWER)
        return 0;
    char *grown = realloc(a->buf, a->len + got + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + a->len, p, got);
    a->buf = grown;
    a->len += got;
    a->buf[a->len] = '\0';
    return got;
}

/* One HTTP exchange; the parsed JSON answer (caller decrefs) and its status, or NULL. */
static json_t *http_json(const char *url, const char *post, long *status, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    struct answer a = {NULL, 0};
    json_t *doc = NULL;
    CURLcode rc;

    *status = 0;
    if (c == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return NULL;
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (post != NULL) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)LEDGER_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        doc = a.buf != NULL ? json_loadb(a.buf, a.len, 0, NULL) : NULL;
        if (doc == NULL)
            snprintf(err, errlen, "%s answered %ld without JSON", url, *status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    free(a.buf);
    return doc;
}

/* The http ledger (SPEC §7): GET {url}/v1/anchors/{id} holds origin, size, root and note. */
static int ledger_http(const char *url, const struct proof_bundle *b, char *detail, size_t len)
{
    char u[4096], root[2 * MERKLE_HASH_LEN + 1], err[300];
    long status;
    json_t *e;
    const char *r, *o, *cp;
    json_t *size;
    int ok = 0;

    snprintf(u, sizeof(u), "%s/v1/anchors/%s", url, b->anchor.ref);
    e = http_json(u, NULL, &status, err, sizeof(err));
    if (e == NULL) {
        snprintf(detail, len, "%s", err);
        return 0;
    }
    proof_hex(b->root, MERKLE_HASH_LEN, root);
    r = json_string_value(json_object_get(e, "root"));
    o = json_string_value(json_object_get(e, "origin"));
    cp = json_string_value(json_object_get(e, "checkpoint"));
    size = json_object_get(e, "size");
    if (status == 404)
        snprintf(detail, len, "the ledger has no entry %s", b->anchor.ref);
    else if (status != 200)
        snprintf(detail, len, "the ledger answered %ld", status);
    else if (!json_is_integer(size) || (uint64_t)json_integer_value(size) != b->size || r == NULL ||
             strcasecmp(r, root) != 0)
        snprintf(detail, len, "the ledger's entry %s holds another checkpoint", b->anchor.ref);
    else if ((o != NULL && strcmp(o, b->origin) != 0) || (cp != NULL && strcmp(cp, b->note) != 0))
        snprintf(detail, len, "the ledger's entry %s holds another origin or note", b->anchor.ref);
    else {
        snprintf(detail, len, "the ledger's entry %s holds size %" PRIu64 " and this root",
                 b->anchor.ref, b->size);
        ok = 1;
    }
    json_decref(e);
    return ok;
}

/* One JSON-RPC call; the result (caller decrefs; JSON null is returned as such) or NULL. */
static json_t *rpc(const char *url, const char *method, json_t *params, char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1, "method", method,
                            "params", params);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_t *res = NULL, *out = NULL;
    long status;

    json_decref(req);
    if (body == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    res = http_json(url, body, &status, err, errlen);
    free(body);
    if (res == NULL)
        return NULL;
    if (json_object_get(res, "error") != NULL || (out = json_object_get(res, "result")) == NULL)
        snprintf(err, errlen, "%s failed: %s", method,
                 json_string_value(json_object_get(json_object_get(res, "error"), "message"))
                     ?: "no result");
    else
        json_incref(out);
    json_decref(res);
    return out;
}

static int quantity(const json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);
    char *end = NULL;
    if (s == NULL || strncmp(s, "0x", 2) != 0 || s[2] == '\0')
        return -1;
    *out = strtoull(s + 2, &end, 16);
    return *end == '\0' ? 0 : -1;
}

/*
 * Ethereum (SPEC §7): the transaction's data is root || size (8 bytes, big-endian), its
 * receipt has status 1, and it sits in the block the bundle names, on the chain it names,
 * and that block is still the chain's block at that height (no reorg took it away).
 */
static int ledger_eth(const char *url, const struct proof_bundle *b, char *detail, size_t len)
{
    char want[2 + 2 * MERKLE_HASH_LEN + 16 + 1], err[300], num[24];
    json_t *tx = NULL, *rcpt = NULL, *chain = NULL, *blk = NULL;
    const char *input, *bhash;
    uint64_t st, bn, cid;
    int ok = 0;

    memcpy(want, "0x", 2);
    proof_hex(b->root, MERKLE_HASH_LEN, want + 2);
    snprintf(want + 2 + 2 * MERKLE_HASH_LEN, 17, "%016" PRIx64, b->size);
    if ((tx = rpc(url, "eth_getTransactionByHash", json_pack("[s]", b->anchor.ref), err,
                  sizeof(err))) == NULL ||
        (rcpt = rpc(url, "eth_getTransactionReceipt", json_pack("[s]", b->anchor.ref), err,
                    sizeof(err))) == NULL) {
        snprintf(detail, len, "%s", err);
        goto out;
    }
    input = json_string_value(json_object_get(tx, "input"));
    if (json_is_null(tx) || json_is_null(rcpt)) {
        snprintf(detail, len, "the chain has no mined transaction %s", b->anchor.ref);
    } else if (input == NULL || strcasecmp(input, want) != 0) {
        snprintf(detail, len, "transaction %.20s… does not carry this root and size",
                 b->anchor.ref);
    } else if (quantity(json_object_get(rcpt, "status"), &st) != 0 || st != 1) {
        snprintf(detail, len, "transaction %.20s… failed (receipt status not 1)", b->anchor.ref);
    } else if (quantity(json_object_get(rcpt, "blockNumber"), &bn) != 0 ||
               (b->anchor.has_block && bn != (uint64_t)b->anchor.block)) {
        snprintf(detail, len, "the transaction is not in block %" PRId64, b->anchor.block);
    } else if (b->anchor.has_chain_id &&
               ((chain = rpc(url, "eth_chainId", json_array(), err, sizeof(err))) == NULL ||
                quantity(chain, &cid) != 0 || cid != (uint64_t)b->anchor.chain_id)) {
        snprintf(detail, len, "the node is not on chain %" PRId64 "%s%s", b->anchor.chain_id,
                 chain == NULL ? ": " : "", chain == NULL ? err : "");
    } else {
        snprintf(num, sizeof(num), "0x%" PRIx64, bn);
        blk = rpc(url, "eth_getBlockByNumber", json_pack("[s, b]", num, 0), err, sizeof(err));
        bhash = json_string_value(json_object_get(rcpt, "blockHash"));
        if (blk == NULL || bhash == NULL ||
            strcasecmp(json_string_value(json_object_get(blk, "hash")) ?: "", bhash) != 0) {
            snprintf(detail, len, "block %" PRIu64 " is no longer the one that held it (reorg?)",
                     bn);
        } else {
            snprintf(detail, len,
                     "transaction %.20s… in block %" PRIu64 " carries this root and size",
                     b->anchor.ref, bn);
            ok = 1;
        }
    }
out:
    json_decref(tx);
    json_decref(rcpt);
    json_decref(chain);
    json_decref(blk);
    return ok;
}

static int ledger_check(const char *url_arg, const struct proof_bundle *b, char *detail, size_t len)
{
    char url[2048];
    size_t n;

    if (!b->has_anchor) {
        snprintf(detail, len, "the bundle names no anchor");
        return 0;
    }
    if (b->anchor.ref[0] == '\0') {
        snprintf(detail, len, "the anchor was not sent to the ledger yet (status %s)",
                 b->anchor.status);
        return 0;
    }
    snprintf(url, sizeof(url), "%s", url_arg);
    n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int ok = strcmp(b->anchor.ledger, "ethereum") == 0 ? ledger_eth(url, b, detail, len)
                                                       : ledger_http(url, b, detail, len);
    curl_global_cleanup();
    return ok;
}

/* --- the command ----------------------------------------------------------------------------- */

static void print_check(const char *name, int ok, int skipped, const char *detail)
{
    printf("%-5s %-21s %s\n", skipped ? "skip" : ok ? "ok" : "FAIL", name, detail);
}

int cli_verify(int argc, char **argv)
{
    const char *path = NULL, *key_arg = NULL, *ledger_url = NULL;
    char key[NOTE_VKEY_MAX + 1], err[256], detail[512];
    struct proof_check checks[PROOF_CHECK_COUNT];
    struct proof_bundle *b = NULL;
    struct merkle_hasher *h = NULL;
    char *text = NULL;
    size_t len = 0;
    int failed, rc = 2;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc && key_arg == NULL)
            key_arg = argv[++i];
        else if (strcmp(argv[i], "--ledger-url") == 0 && i + 1 < argc && ledger_url == NULL)
            ledger_url = argv[++i];
        else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && path == NULL)
            path = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (path == NULL || key_arg == NULL || (ledger_url != NULL && *ledger_url == '\0')) {
        usage();
        return 2;
    }
    if (load_key(key_arg, key) != 0)
        return 2;
    if ((text = read_all(path, &len)) == NULL) {
        fprintf(stderr, "tagproof verify: cannot read %s (or it is over %d bytes)\n", path,
                MAX_BUNDLE);
        return 2;
    }
    if ((b = proof_bundle_parse(text, len, NULL, err, sizeof(err))) == NULL) {
        fprintf(stderr, "tagproof verify: %s is not a proof bundle: %s\n", path, err);
        goto out;
    }
    if ((h = merkle_hasher_new()) == NULL) {
        fprintf(stderr, "tagproof verify: out of memory\n");
        goto out;
    }
    failed = proof_bundle_check(h, b, key, checks);
    for (int i = 0; i < PROOF_CHECK_COUNT; i++)
        print_check(checks[i].name, checks[i].ok, 0, checks[i].detail);
    if (ledger_url == NULL) {
        print_check("ledger", 1, 1, "no --ledger-url: the anchor is not checked");
    } else {
        int ok = ledger_check(ledger_url, b, detail, sizeof(detail));
        print_check("ledger", ok, 0, detail);
        failed += !ok;
    }
    if (failed == 0)
        printf("valid: tag %s is leaf %" PRIu64 " of the log's checkpoint of %" PRIu64 " leaves\n",
               b->tag_id, b->leaf_index, b->size);
    else
        printf("INVALID: %d check%s failed\n", failed, failed == 1 ? "" : "s");
    rc = failed == 0 ? 0 : 1;
out:
    merkle_hasher_free(h);
    proof_bundle_free(b);
    free(text);
    return rc;
}
