/*
 * jwt: strict compact-JWS verification, Tagproof claim checks and the service's own signer.
 * Every refusal leaves a static reason so that nothing a client sent ends up in a log line.
 */
#include "jwt.h"
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#define KEYSET_MAX 64
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define ES256_SIG_LEN 64
#define P256_COORD_LEN 32
/* Numeric dates beyond this (about the year 36812) are refused, so sums cannot overflow. */
#define TIME_MAX ((int64_t)1 << 40)

/* ---------------------------------------------------------------------------------------- */
/* Names                                                                                     */

const char *jwt_alg_name(enum jwt_alg alg)
{
    switch (alg) {
    case JWT_ALG_RS256:
        return "RS256";
    case JWT_ALG_ES256:
        return "ES256";
    case JWT_ALG_NONE:
        break;
    }
    return NULL;
}

static const char *const role_names[] = {NULL, "admin", "factory_user", "viewer"};

const char *jwt_role_name(enum jwt_role role)
{
    if ((unsigned)role < sizeof(role_names) / sizeof(role_names[0]))
        return role_names[role];
    return NULL;
}

int jwt_role_parse(const char *s, enum jwt_role *out)
{
    for (unsigned i = 1; i < sizeof(role_names) / sizeof(role_names[0]); i++) {
        if (strcmp(s, role_names[i]) == 0) {
            *out = (enum jwt_role)i;
            return 0;
        }
    }
    return -1;
}

const char *jwt_result_name(enum jwt_result r)
{
    static const char *const names[] = {
        "ok", "malformed", "bad_header", "unknown_key", "bad_signature", "bad_claims", "expired"};
    if ((unsigned)r < sizeof(names) / sizeof(names[0]))
        return names[r];
    return "unknown";
}

/* ---------------------------------------------------------------------------------------- */
/* base64url                                                                                 */

static int b64u_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int jwt_base64url_decode(const char *s, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
    /* One leftover character carries only six bits: no byte string encodes to that. */
    if (len % 4 == 1)
        return -1;
    size_t need = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if (need > cap)
        return -1;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64u_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /*
     * What is left over (2 or 4 bits) must be zero: otherwise two different strings would
     * decode to the same bytes, and a token could be altered without touching its signature
     * bytes.
     */
    if (acc != 0)
        return -1;
    *outlen = n;
    return 0;
}

char *jwt_base64url_encode(const unsigned char *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len / 3 * 4 + 4 + 1);
    if (out == NULL)
        return NULL;
    size_t n = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[n++] = alphabet[v >> 18];
        out[n++] = alphabet[(v >> 12) & 63];
        out[n++] = alphabet[(v >> 6) & 63];
        out[n++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[n++] = alphabet[v >> 18];
        out[n++] = alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[n++] = alphabet[v >> 18];
        out[n++] = alphabet[(v >> 12) & 63];
        out[n++] = alphabet[(v >> 6) & 63];
    }
    out[n] = '\0';
    return out;
}

/* Decodes a base64url JSON member into a fresh buffer; NULL when absent or malformed. */
static unsigned char *b64u_member(json_t *obj, const char *name, size_t max, size_t *len)
{
    const char *s = json_string_value(json_object_get(obj, name));
    if (s == NULL)
        return NULL;
    size_t slen = strlen(s);
    if (slen == 0 || slen > max / 3 * 4 + 8)
        return NULL;
    unsigned char *buf = malloc(slen / 4 * 3 + 3);
    if (buf == NULL || jwt_base64url_decode(s, slen, buf, slen / 4 * 3 + 3, len) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Key sets                                                                                  */

struct jwt_key {
    char kid[JWT_KID_MAX + 1];
    int has_kid;
    enum jwt_alg alg;
    size_t sig_len; /* the only signature length this key can verify */
    EVP_PKEY *pkey;
};

struct jwt_keyset {
    atomic_int refs;
    size_t n;
    struct jwt_key keys[];
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A kid we accept: 1 to JWT_KID_MAX printable ASCII bytes (it reaches logs and maps only). */
static int kid_valid(const char *kid)
{
    size_t n = strlen(kid);
    if (n == 0 || n > JWT_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)kid[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

static struct jwt_keyset *keyset_alloc(size_t n)
{
    struct jwt_keyset *set = calloc(1, sizeof(*set) + n * sizeof(set->keys[0]));
    if (set != NULL)
        atomic_init(&set->refs, 1);
    return set;
}

/* Checks an imported public key with OpenSSL (EC: the point lies on the curve). */
static int pkey_public_ok(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

enum jwk_outcome { JWK_USE, JWK_SKIP, JWK_FAIL };

/* RSA members n and e to a key; skips keys outside 2048..8192 bits. */
static enum jwk_outcome jwk_rsa(json_t *k, struct jwt_key *out, char *err, size_t errlen)
{
    enum jwk_outcome res = JWK_FAIL;
    size_t nlen = 0, elen = 0;
    unsigned char *nb = b64u_member(k, "n", RSA_MAX_BITS / 8 + 1, &nlen);
    unsigned char *eb = b64u_member(k, "e", 8, &elen);
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    if (nb == NULL || eb == NULL) {
        seterr(err, errlen, "RSA key without a base64url n and e");
        goto done;
    }
    n = BN_bin2bn(nb, (int)nlen, NULL);
    e = BN_bin2bn(eb, (int)elen, NULL);
    if (n == NULL || e == NULL) {
        seterr(err, errlen, "out of memory");
        goto done;
    }
    if (BN_num_bits(n) < RSA_MIN_BITS || BN_num_bits(n) > RSA_MAX_BITS) {
        res = JWK_SKIP;
        goto done;
    }
    if (!BN_is_odd(e) || BN_is_one(e) || BN_num_bits(e) > 33) {
        seterr(err, errlen, "RSA key with an unusable public exponent");
        goto done;
    }
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto done;
    out->pkey = pkey_fromdata("RSA", bld);
    if (out->pkey == NULL) {
        seterr(err, errlen, "RSA key rejected by OpenSSL");
        goto done;
    }
    out->alg = JWT_ALG_RS256;
    out->sig_len = (size_t)(BN_num_bits(n) + 7) / 8;
    res = JWK_USE;
done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    return res;
}

/* EC members crv, x, y to a key; skips curves other than P-256. */
static enum jwk_outcome jwk_ec(json_t *k, struct jwt_key *out, char *err, size_t errlen)
{
    const char *crv = json_string_value(json_object_get(k, "crv"));
    if (crv == NULL) {
        seterr(err, errlen, "EC key without crv");
        return JWK_FAIL;
    }
    if (strcmp(crv, "P-256") != 0)
        return JWK_SKIP;
    enum jwk_outcome res = JWK_FAIL;
    size_t xlen = 0, ylen = 0;
    unsigned char *x = b64u_member(k, "x", P256_COORD_LEN, &xlen);
    unsigned char *y = b64u_member(k, "y", P256_COORD_LEN, &ylen);
    OSSL_PARAM_BLD *bld = NULL;
    /* RFC 7518 §6.2.1.2: each coordinate is the full 32 bytes, leading zeros included. */
    if (x == NULL || y == NULL || xlen != P256_COORD_LEN || ylen != P256_COORD_LEN) {
        seterr(err, errlen, "P-256 key without 32-byte base64url x and y");
        goto done;
    }
    unsigned char point[1 + 2 * P256_COORD_LEN];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, P256_COORD_LEN);
    memcpy(point + 1 + P256_COORD_LEN, y, P256_COORD_LEN);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto done;
    out->pkey = pkey_fromdata("EC", bld);
    if (out->pkey == NULL || !pkey_public_ok(out->pkey)) {
        seterr(err, errlen, "P-256 key whose point is not on the curve");
        EVP_PKEY_free(out->pkey);
        out->pkey = NULL;
        goto done;
    }
    out->alg = JWT_ALG_ES256;
    out->sig_len = ES256_SIG_LEN;
    res = JWK_USE;
done:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return res;
}

/* One member of "keys": fills out (JWK_USE), or says to skip it or to fail the document. */
static enum jwk_outcome jwk_parse(json_t *k, struct jwt_key *out, char *err, size_t errlen)
{
    if (!json_is_object(k)) {
        seterr(err, errlen, "a member of keys is not an object");
        return JWK_FAIL;
    }
    if (json_object_get(k, "d") != NULL) {
        seterr(err, errlen, "the JWKS holds a private key (member d); publish public keys only");
        return JWK_FAIL;
    }
    json_t *kty = json_object_get(k, "kty"), *use = json_object_get(k, "use"),
           *alg = json_object_get(k, "alg"), *kid = json_object_get(k, "kid");
    if (!json_is_string(kty) || (use != NULL && !json_is_string(use)) ||
        (alg != NULL && !json_is_string(alg)) || (kid != NULL && !json_is_string(kid))) {
        seterr(err, errlen, "a key whose kty, use, alg or kid is not a string");
        return JWK_FAIL;
    }
    if (kid != NULL) {
        if (!kid_valid(json_string_value(kid))) {
            seterr(err, errlen, "a kid that is not 1 to %d printable ASCII characters",
                   JWT_KID_MAX);
            return JWK_FAIL;
        }
        snprintf(out->kid, sizeof(out->kid), "%s", json_string_value(kid));
        out->has_kid = 1;
    }
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0)
        return JWK_SKIP;
    const char *type = json_string_value(kty);
    const char *want = strcmp(type, "RSA") == 0  ? "RS256"
                       : strcmp(type, "EC") == 0 ? "ES256"
                                                 : NULL;
    if (want == NULL || (alg != NULL && strcmp(json_string_value(alg), want) != 0))
        return JWK_SKIP;
    return strcmp(type, "RSA") == 0 ? jwk_rsa(k, out, err, errlen) : jwk_ec(k, out, err, errlen);
}

struct jwt_keyset *jwt_keyset_parse(const char *json, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    struct jwt_keyset *set = NULL;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        seterr(err, errlen, "JWKS is not valid JSON (line %d: %s)", jerr.line, jerr.text);
        goto fail;
    }
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        seterr(err, errlen, "JWKS without a keys array");
        goto fail;
    }
    set = keyset_alloc(KEYSET_MAX);
    if (set == NULL) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        struct jwt_key key = {0};
        enum jwk_outcome o = jwk_parse(k, &key, err, errlen);
        if (o == JWK_FAIL)
            goto fail;
        if (o == JWK_SKIP)
            continue;
        if (set->n == KEYSET_MAX) {
            EVP_PKEY_free(key.pkey);
            seterr(err, errlen, "JWKS with more than %d usable keys", KEYSET_MAX);
            goto fail;
        }
        if (key.has_kid && jwt_keyset_has_kid(set, key.kid)) {
            EVP_PKEY_free(key.pkey);
            seterr(err, errlen, "JWKS with two keys of the same kid");
            goto fail;
        }
        set->keys[set->n++] = key;
    }
    json_decref(doc);
    return set;
fail:
    jwt_keyset_unref(set);
    json_decref(doc);
    return NULL;
}

struct jwt_keyset *jwt_keyset_merge(const struct jwt_keyset *first, const struct jwt_keyset *second)
{
    size_t cap = (first != NULL ? first->n : 0) + (second != NULL ? second->n : 0);
    struct jwt_keyset *set = keyset_alloc(cap);
    if (set == NULL)
        return NULL;
    const struct jwt_keyset *parts[2] = {first, second};
    for (int p = 0; p < 2; p++) {
        if (parts[p] == NULL)
            continue;
        for (size_t i = 0; i < parts[p]->n; i++) {
            const struct jwt_key *k = &parts[p]->keys[i];
            if (p == 1 && k->has_kid && first != NULL && jwt_keyset_has_kid(first, k->kid))
                continue;
            set->keys[set->n] = *k;
            EVP_PKEY_up_ref(k->pkey);
            set->n++;
        }
    }
    return set;
}

struct jwt_keyset *jwt_keyset_ref(struct jwt_keyset *set)
{
    atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void jwt_keyset_unref(struct jwt_keyset *set)
{
    if (set == NULL || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < set->n; i++)
        EVP_PKEY_free(set->keys[i].pkey);
    free(set);
}

size_t jwt_keyset_count(const struct jwt_keyset *set)
{
    return set != NULL ? set->n : 0;
}

int jwt_keyset_has_kid(const struct jwt_keyset *set, const char *kid)
{
    for (size_t i = 0; set != NULL && i < set->n; i++)
        if (set->keys[i].has_kid && strcmp(set->keys[i].kid, kid) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Signatures                                                                                */

/* JWS carries an ECDSA signature as r || s (RFC 7518 §3.4); OpenSSL wants DER. */
static unsigned char *ecdsa_raw_to_der(const unsigned char *raw, int *derlen)
{
    unsigned char *der = NULL;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, P256_COORD_LEN, NULL);
    BIGNUM *s = BN_bin2bn(raw + P256_COORD_LEN, P256_COORD_LEN, NULL);
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return NULL;
    }
    *derlen = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    return *derlen > 0 ? der : NULL;
}

static int ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (sig == NULL)
        return -1;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(sig, &r, &s);
    int ok = BN_bn2binpad(r, raw, P256_COORD_LEN) == P256_COORD_LEN &&
             BN_bn2binpad(s, raw + P256_COORD_LEN, P256_COORD_LEN) == P256_COORD_LEN;
    ECDSA_SIG_free(sig);
    return ok ? 0 : -1;
}

/* 1 when sig (already of the key's length) is the key's signature of data. */
static int signature_verifies(const struct jwt_key *key, const unsigned char *data, size_t dlen,
                              const unsigned char *sig, size_t slen)
{
    int ok = 0, derlen = 0;
    unsigned char *der = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        goto done;
    if (key->alg == JWT_ALG_ES256) {
        der = ecdsa_raw_to_der(sig, &derlen);
        if (der == NULL)
            goto done;
        sig = der;
        slen = (size_t)derlen;
    }
    if (EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", NULL, NULL, key->pkey, NULL) != 1)
        goto done;
    if (key->alg == JWT_ALG_RS256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto done;
    ok = EVP_DigestVerify(md, sig, slen, data, dlen) == 1;
done:
    /* A failed verification leaves entries in this thread's error queue; drop them. */
    ERR_clear_error();
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    return ok;
}

/* Signs data; for ES256 converts OpenSSL's DER into r || s. A malloc'd buffer or NULL. */
static unsigned char *signature_make(EVP_PKEY *pkey, enum jwt_alg alg, const unsigned char *data,
                                     size_t dlen, size_t *siglen)
{
    unsigned char *sig = NULL, *raw = NULL;
    size_t len = 0;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit_ex(md, &pctx, "SHA256", NULL, NULL, pkey, NULL) != 1)
        goto fail;
    if (alg == JWT_ALG_RS256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto fail;
    if (EVP_DigestSign(md, NULL, &len, data, dlen) != 1 || (sig = malloc(len)) == NULL ||
        EVP_DigestSign(md, sig, &len, data, dlen) != 1)
        goto fail;
    if (alg == JWT_ALG_ES256) {
        raw = malloc(ES256_SIG_LEN);
        if (raw == NULL || ecdsa_der_to_raw(sig, len, raw) != 0)
            goto fail;
        free(sig);
        sig = raw;
        raw = NULL;
        len = ES256_SIG_LEN;
    }
    EVP_MD_CTX_free(md);
    *siglen = len;
    return sig;
fail:
    ERR_clear_error();
    free(raw);
    free(sig);
    EVP_MD_CTX_free(md);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Verification                                                                              */

/* Decodes one segment into a fresh buffer (NULL when it is not strict base64url). */
static unsigned char *segment_decode(const char *s, size_t len, size_t *outlen)
{
    size_t cap = len / 4 * 3 + 3;
    unsigned char *buf = malloc(cap);
    if (buf != NULL && jwt_base64url_decode(s, len, buf, cap, outlen) != 0) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

static int typ_accepted(const char *typ)
{
    static const char *const ok[] = {"JWT", "at+jwt", "application/jwt", "application/at+jwt"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strcasecmp(typ, ok[i]) == 0)
            return 1;
    return 0;
}

/* The header's checks up to the key: sets *key or returns why not. */
static enum jwt_result header_check(const struct jwt_keyset *keys, json_t *h,
                                    const struct jwt_key **key, const char **w)
{
    static const struct {
        const char *name, *why;
    } refused[] = {
        {"jku", "header carries jku: keys come only from the configured JWKS"},
        {"x5u", "header carries x5u: keys come only from the configured JWKS"},
        {"jwk", "header embeds a jwk: keys come only from the configured JWKS"},
        {"x5c", "header embeds x5c: keys come only from the configured JWKS"},
        {"crit", "header has crit: no extension is understood"},
        {"cty", "header has cty: nested tokens are not accepted"},
    };
    json_t *alg = json_object_get(h, "alg");
    if (!json_is_string(alg)) {
        *w = "header without a string alg";
        return JWT_BAD_HEADER;
    }
    const char *a = json_string_value(alg);
    enum jwt_alg want;
    if (strcasecmp(a, "none") == 0) {
        *w = "alg none: unsigned tokens are refused";
        return JWT_BAD_HEADER;
    }
    if (strncasecmp(a, "HS", 2) == 0) {
        *w = "HMAC algorithm refused";
        return JWT_BAD_HEADER;
    }
    if (strcmp(a, "RS256") == 0) {
        want = JWT_ALG_RS256;
    } else if (strcmp(a, "ES256") == 0) {
        want = JWT_ALG_ES256;
    } else {
        *w = "algorithm not supported (RS256 and ES256 only)";
        return JWT_BAD_HEADER;
    }
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (json_object_get(h, refused[i].name) != NULL) {
            *w = refused[i].why;
            return JWT_BAD_HEADER;
        }
    }
    json_t *typ = json_object_get(h, "typ");
    if (typ != NULL && (!json_is_string(typ) || !typ_accepted(json_string_value(typ)))) {
        *w = "typ is neither JWT nor at+jwt";
        return JWT_BAD_HEADER;
    }
    json_t *kid = json_object_get(h, "kid");
    if (kid != NULL && (!json_is_string(kid) || !kid_valid(json_string_value(kid)))) {
        *w = "kid is not 1 to 128 printable ASCII characters";
        return JWT_BAD_HEADER;
    }
    *key = NULL;
    if (kid != NULL) {
        const char *k = json_string_value(kid);
        for (size_t i = 0; keys != NULL && i < keys->n; i++)
            if (keys->keys[i].has_kid && strcmp(keys->keys[i].kid, k) == 0)
                *key = &keys->keys[i];
        if (*key == NULL) {
            *w = "no key with this kid";
            return JWT_UNKNOWN_KEY;
        }
    } else {
        size_t n = jwt_keyset_count(keys);
        if (n == 0) {
            *w = "no keys";
            return JWT_UNKNOWN_KEY;
        }
        if (n > 1) {
            *w = "no kid, and more than one key";
            return JWT_BAD_HEADER;
        }
        *key = &keys->keys[0];
    }
    if ((*key)->alg != want) {
        *w = "alg is not the key's algorithm";
        return JWT_BAD_HEADER;
    }
    return JWT_OK;
}

enum jwt_result jwt_jws_verify(const struct jwt_keyset *keys, const char *token, size_t len,
                               struct jwt_jws *out, const char **why)
{
    enum jwt_result r = JWT_MALFORMED;
    const char *w = NULL;
    unsigned char *hdr = NULL, *payload = NULL, *sig = NULL;
    size_t hdr_len = 0, payload_len = 0, sig_len = 0;
    json_t *h = NULL;
    const struct jwt_key *key = NULL;
    memset(out, 0, sizeof(*out));

    if (token == NULL || len == 0) {
        w = "empty token";
        goto done;
    }
    if (len > JWT_MAX_TOKEN_LEN) {
        w = "token longer than 8192 bytes";
        goto done;
    }
    const char *end = token + len;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 != NULL ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)) != NULL) {
        w = "not three dot-separated segments";
        goto done;
    }
    if (d1 == token || d2 == d1 + 1 || d2 + 1 == end) {
        w = "empty segment";
        goto done;
    }
    hdr = segment_decode(token, (size_t)(d1 - token), &hdr_len);
    payload = segment_decode(d1 + 1, (size_t)(d2 - d1 - 1), &payload_len);
    sig = segment_decode(d2 + 1, (size_t)(end - d2 - 1), &sig_len);
    if (hdr == NULL || payload == NULL || sig == NULL) {
        w = "segment is not strict base64url";
        goto done;
    }
    json_error_t jerr;
    h = json_loadb((const char *)hdr, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(h)) {
        w = "header is not a JSON object (or repeats a member)";
        goto done;
    }
    r = header_check(keys, h, &key, &w);
    if (r != JWT_OK)
        goto done;
    r = JWT_BAD_SIGNATURE;
    if (sig_len != key->sig_len) {
        w = "signature length does not fit the key";
        goto done;
    }
    if (!signature_verifies(key, (const unsigned char *)token, (size_t)(d2 - token), sig,
                            sig_len)) {
        w = "signature does not verify";
        goto done;
    }
    r = JWT_OK;
    w = "ok";
    out->alg = key->alg;
    if (key->has_kid)
        memcpy(out->kid, key->kid, sizeof(out->kid));
    out->payload = payload;
    out->payload_len = payload_len;
    payload = NULL;
done:
    json_decref(h);
    free(hdr);
    free(payload);
    free(sig);
    if (why != NULL)
        *why = w;
    return r;
}

void jwt_jws_clear(struct jwt_jws *jws)
{
    free(jws->payload);
    memset(jws, 0, sizeof(*jws));
}

/* A NumericDate claim: 1 present (value in *v), 0 absent, -1 not a usable integer. */
static int claim_time(json_t *claims, const char *name, int64_t *v)
{
    json_t *j = json_object_get(claims, name);
    *v = 0;
    if (j == NULL)
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > TIME_MAX)
        return -1;
    *v = (int64_t)json_integer_value(j);
    return 1;
}

static int audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud) || json_array_size(aud) == 0)
        return 0;
    int found = 0;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
    {
        if (!json_is_string(a))
            return 0;
        if (strcmp(json_string_value(a), want) == 0)
            found = 1;
    }
    return found;
}

static int sub_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JWT_SUB_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* role and factory_id rules shared by verification and signing; NULL when they hold. */
static const char *identity_check(const char *sub, enum jwt_role role, const char *factory_id,
                                  char canon[UUID_STR_LEN + 1])
{
    if (sub == NULL || !sub_valid(sub))
        return "sub missing, empty, too long or with control characters";
    if (jwt_role_name(role) == NULL)
        return "role is not admin, factory_user or viewer";
    if (role == JWT_ROLE_ADMIN) {
        if (factory_id != NULL)
            return "an admin token carries factory_id";
        canon[0] = '\0';
        return NULL;
    }
    if (factory_id == NULL || uuid_canonical(factory_id, strlen(factory_id), canon) != 0)
        return "factory_id missing or not a UUID";
    return NULL;
}

static const struct jwt_policy *policy_defaults(const struct jwt_policy *in, struct jwt_policy *buf)
{
    *buf = *in;
    if (buf->leeway_s <= 0)
        buf->leeway_s = JWT_DEFAULT_LEEWAY_S;
    if (buf->max_lifetime_s <= 0)
        buf->max_lifetime_s = JWT_DEFAULT_MAX_LIFETIME_S;
    return buf;
}

static enum jwt_result claims_check(json_t *c, const struct jwt_policy *p, int64_t now,
                                    struct jwt_claims *out, const char **w)
{
    if (p->issuer == NULL || p->audience == NULL) {
        *w = "no issuer or audience configured";
        return JWT_BAD_CLAIMS;
    }
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (iss == NULL || strcmp(iss, p->issuer) != 0) {
        *w = "iss missing or not the trusted issuer";
        return JWT_BAD_CLAIMS;
    }
    if (!audience_matches(json_object_get(c, "aud"), p->audience)) {
        *w = "aud missing or without this service";
        return JWT_BAD_CLAIMS;
    }
    int64_t exp, nbf, iat;
    int has_exp = claim_time(c, "exp", &exp);
    int has_nbf = claim_time(c, "nbf", &nbf);
    int has_iat = claim_time(c, "iat", &iat);
    if (has_exp <= 0) {
        *w = has_exp == 0 ? "exp missing" : "exp is not an integer NumericDate";
        return JWT_BAD_CLAIMS;
    }
    if (has_nbf < 0 || has_iat < 0) {
        *w = "nbf or iat is not an integer NumericDate";
        return JWT_BAD_CLAIMS;
    }
    if (now >= exp + p->leeway_s) {
        *w = "token expired";
        return JWT_EXPIRED;
    }
    if (has_nbf && nbf > now + p->leeway_s) {
        *w = "token not valid yet (nbf)";
        return JWT_EXPIRED;
    }
    if (has_iat && iat > now + p->leeway_s) {
        *w = "token issued in the future (iat)";
        return JWT_EXPIRED;
    }
    /*
     * The lifetime is bounded three ways, so a token cannot dodge the limit by leaving out
     * iat and nbf or by backdating them.
     */
    if ((has_iat && (exp <= iat || exp - iat > p->max_lifetime_s)) ||
        (has_nbf && (exp <= nbf || exp - nbf > p->max_lifetime_s)) ||
        exp - now > p->max_lifetime_s + p->leeway_s) {
        *w = "token lifetime over the maximum";
        return JWT_BAD_CLAIMS;
    }
    json_t *sub = json_object_get(c, "sub"), *role = json_object_get(c, "role"),
           *fid = json_object_get(c, "factory_id");
    enum jwt_role rl = JWT_ROLE_NONE;
    if (!json_is_string(role) || jwt_role_parse(json_string_value(role), &rl) != 0) {
        *w = "role is not admin, factory_user or viewer";
        return JWT_BAD_CLAIMS;
    }
    if (fid != NULL && !json_is_string(fid)) {
        *w = rl == JWT_ROLE_ADMIN ? "an admin token carries factory_id"
                                  : "factory_id missing or not a UUID";
        return JWT_BAD_CLAIMS;
    }
    const char *bad =
        identity_check(json_string_value(sub), rl, json_string_value(fid), out->factory_id);
    if (bad != NULL) {
        *w = bad;
        return JWT_BAD_CLAIMS;
    }
    snprintf(out->sub, sizeof(out->sub), "%s", json_string_value(sub));
    out->role = rl;
    out->exp = exp;
    out->nbf = nbf;
    out->iat = iat;
    return JWT_OK;
}

enum jwt_result jwt_verify(const struct jwt_keyset *keys, const struct jwt_policy *policy,
                           const char *token, size_t len, int64_t now_s, struct jwt_claims *out,
                           const char **why)
{
    struct jwt_policy pbuf;
    const struct jwt_policy *p = policy_defaults(policy, &pbuf);
    struct jwt_jws jws;
    const char *w = NULL;
    json_t *c = NULL;
    memset(out, 0, sizeof(*out));
    enum jwt_result r = jwt_jws_verify(keys, token, len, &jws, &w);
    if (r != JWT_OK)
        goto done;
    json_error_t jerr;
    c = json_loadb((const char *)jws.payload, jws.payload_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(c)) {
        r = JWT_MALFORMED;
        w = "claims are not a JSON object (or repeat a member)";
        goto done;
    }
    r = claims_check(c, p, now_s, out, &w);
    if (r == JWT_OK) {
        out->alg = jws.alg;
        memcpy(out->kid, jws.kid, sizeof(out->kid));
    } else {
        memset(out, 0, sizeof(*out));
    }
done:
    json_decref(c);
    jwt_jws_clear(&jws);
    if (why != NULL)
        *why = w;
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* Signer                                                                                    */

struct jwt_signer {
    EVP_PKEY *pkey;
    enum jwt_alg alg;
    char kid[64];
    json_t *jwk; /* the public JWK, built once */
};

static char *bn_b64u(const BIGNUM *bn, int pad)
{
    int n = pad > 0 ? pad : BN_num_bytes(bn);
    unsigned char *buf = malloc((size_t)n + 1);
    char *s = NULL;
    if (buf != NULL && BN_bn2binpad(bn, buf, n) == n)
        s = jwt_base64url_encode(buf, (size_t)n);
    free(buf);
    return s;
}

/* Fills s->jwk and s->kid (RFC 7638 thumbprint of the required members, in order). */
static int signer_describe(struct jwt_signer *s)
{
    BIGNUM *a = NULL, *b = NULL;
    char *a64 = NULL, *b64 = NULL, *canon = NULL, *kid = NULL;
    int ok = 0;
    if (s->alg == JWT_ALG_RS256) {
        if (!EVP_PKEY_get_bn_param(s->pkey, OSSL_PKEY_PARAM_RSA_N, &a) ||
            !EVP_PKEY_get_bn_param(s->pkey, OSSL_PKEY_PARAM_RSA_E, &b))
            goto done;
        a64 = bn_b64u(a, 0);
        b64 = bn_b64u(b, 0);
        if (a64 == NULL || b64 == NULL ||
            asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b64, a64) < 0)
            goto done;
    } else {
        if (!EVP_PKEY_get_bn_param(s->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
            !EVP_PKEY_get_bn_param(s->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &b))
            goto done;
        a64 = bn_b64u(a, P256_COORD_LEN);
        b64 = bn_b64u(b, P256_COORD_LEN);
        if (a64 == NULL || b64 == NULL ||
            asprintf(&canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a64,
                     b64) < 0)
            goto done;
    }
    unsigned char digest[32];
    unsigned int dlen = 0;
    if (EVP_Digest(canon, strlen(canon), digest, &dlen, EVP_sha256(), NULL) != 1 ||
        (kid = jwt_base64url_encode(digest, dlen)) == NULL)
        goto done;
    snprintf(s->kid, sizeof(s->kid), "%s", kid);
    if (s->alg == JWT_ALG_RS256)
        s->jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "use", "sig", "alg",
                           "RS256", "kid", s->kid, "n", a64, "e", b64);
    else
        s->jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "use", "sig", "alg",
                           "ES256", "kid", s->kid, "crv", "P-256", "x", a64, "y", b64);
    ok = s->jwk != NULL;
done:
    BN_free(a);
    BN_free(b);
    free(a64);
    free(b64);
    free(canon);
    free(kid);
    return ok ? 0 : -1;
}

/* The algorithm a private key signs with under our rules, or JWT_ALG_NONE. */
static enum jwt_alg pkey_alg(EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "RSA"))
        return EVP_PKEY_get_bits(pkey) >= RSA_MIN_BITS ? JWT_ALG_RS256 : JWT_ALG_NONE;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           &glen) == 1 &&
            strcmp(group, "prime256v1") == 0)
            return JWT_ALG_ES256;
    }
    return JWT_ALG_NONE;
}

static EVP_PKEY *generate_rsa(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
}

static EVP_PKEY *generate_ec(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

struct jwt_signer *jwt_signer_load_or_create(const char *path, enum jwt_alg alg, char *err,
                                             size_t errlen)
{
    struct jwt_signer *s = NULL;

    if (alg != JWT_ALG_RS256 && alg != JWT_ALG_ES256) {
        seterr(err, errlen, "signing algorithm must be RS256 or ES256");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    s->pkey = keyfile_load_or_create(path, alg == JWT_ALG_ES256 ? generate_ec : generate_rsa, err,
                                     errlen);
    if (s->pkey == NULL)
        goto fail;
    /* An existing file decides the algorithm itself. */
    s->alg = pkey_alg(s->pkey);
    if (s->alg == JWT_ALG_NONE) {
        seterr(err, errlen, "the signing key %s is neither RSA of 2048 bits or more nor P-256",
               path);
        goto fail;
    }
    if (signer_describe(s) != 0) {
        seterr(err, errlen, "cannot export the public part of the signing key %s", path);
        goto fail;
    }
    return s;
fail:
    jwt_signer_free(s);
    return NULL;
}

void jwt_signer_free(struct jwt_signer *s)
{
    if (s == NULL)
        return;
    EVP_PKEY_free(s->pkey);
    json_decref(s->jwk);
    free(s);
}

enum jwt_alg jwt_signer_alg(const struct jwt_signer *s)
{
    return s->alg;
}

const char *jwt_signer_kid(const struct jwt_signer *s)
{
    return s->kid;
}

/* base64url of a JSON value's compact serialisation; caller frees. */
static char *json_b64u(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    char *out = text != NULL ? jwt_base64url_encode((unsigned char *)text, strlen(text)) : NULL;
    free(text);
    return out;
}

char *jwt_sign(const struct jwt_signer *s, const struct jwt_policy *policy,
               const struct jwt_claims *c, char *err, size_t errlen)
{
    struct jwt_policy pbuf;
    const struct jwt_policy *p = policy_defaults(policy, &pbuf);
    char canon[UUID_STR_LEN + 1];
    char *h64 = NULL, *p64 = NULL, *input = NULL, *s64 = NULL, *token = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    json_t *hdr = NULL, *claims = NULL;
    const char *bad =
        identity_check(c->sub, c->role,
                       c->role == JWT_ROLE_ADMIN ? (c->factory_id[0] != '\0' ? c->factory_id : NULL)
                                                 : c->factory_id,
                       canon);
    if (bad == NULL && (c->iat <= 0 || c->exp > TIME_MAX || c->exp <= c->iat ||
                        c->exp - c->iat > p->max_lifetime_s))
        bad = "iat and exp must give a lifetime of at most the policy's maximum";
    if (bad == NULL && (p->issuer == NULL || p->audience == NULL))
        bad = "the policy names no issuer or audience";
    if (bad != NULL) {
        seterr(err, errlen, "refusing to sign: %s", bad);
        return NULL;
    }
    uint8_t jti_raw[16];
    char jti[UUID_STR_LEN + 1];
    if (uuid_v4(jti_raw) != 0) {
        seterr(err, errlen, "no randomness for jti");
        return NULL;
    }
    uuid_format(jti_raw, jti);
    hdr = json_pack("{s:s, s:s, s:s}", "alg", jwt_alg_name(s->alg), "kid", s->kid, "typ", "JWT");
    claims =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", p->issuer, "aud", p->audience,
                  "sub", c->sub, "role", jwt_role_name(c->role), "iat", (json_int_t)c->iat, "nbf",
                  (json_int_t)c->iat, "exp", (json_int_t)c->exp, "jti", jti);
    if (hdr == NULL || claims == NULL ||
        (c->role != JWT_ROLE_ADMIN &&
         json_object_set_new(claims, "factory_id", json_string(canon)) != 0))
        goto oom;
    h64 = json_b64u(hdr);
    p64 = json_b64u(claims);
    if (h64 == NULL || p64 == NULL || asprintf(&input, "%s.%s", h64, p64) < 0) {
        input = NULL;
        goto oom;
    }
    sig = signature_make(s->pkey, s->alg, (unsigned char *)input, strlen(input), &siglen);
    if (sig == NULL) {
        seterr(err, errlen, "signing failed");
        goto done;
    }
    s64 = jwt_base64url_encode(sig, siglen);
    if (s64 == NULL || asprintf(&token, "%s.%s", input, s64) < 0) {
        token = NULL;
        goto oom;
    }
    goto done;
oom:
    seterr(err, errlen, "out of memory");
done:
    json_decref(hdr);
    json_decref(claims);
    free(h64);
    free(p64);
    free(input);
    free(sig);
    free(s64);
    return token;
}

char *jwt_signer_jwks_json(const struct jwt_signer *s)
{
    json_t *doc = json_pack("{s:[O]}", "keys", s->jwk);
    char *out = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return out;
}
