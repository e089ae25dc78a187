/*
 * Unit tests of jwt: strict base64url, the RS256 examples of RFC 7515 (A.2) and RFC 7520
 * (§4.1), JWKS parsing and its refusals, the signer (RS256 and ES256, key file handling,
 * its JWKS), claim-time boundaries, concurrent verification, and the cost of a verification.
 * The hostile token table made with jose is in test_jwt_hostile.c.
 */
#include "support.h"
#include "jwt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

/* RFC 7515 appendix A.2: RS256, no kid; the key's public half (A.2.1). */
static const char rfc7515_a2_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\","
    "\"n\":\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP"
    "1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXnd"
    "S5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7a"
    "GhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\","
    "\"e\":\"AQAB\"}]}";

static const char rfc7515_a2_token[] =
    "eyJhbGciOiJSUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl"
    "fQ"
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L"
    "07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEU"
    "ipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

static const char rfc7515_a2_payload[] =
    "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

/* RFC 7520 §4.1: RS256 over a non-JSON payload with the key of §3.4 (public half). */
static const char rfc7520_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"bilbo.baggins@hobbiton.example\",\"use\":\"sig\","
    "\"n\":\"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-"
    "XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz"
    "_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe"
    "-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAK"
    "wuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw\","
    "\"e\":\"AQAB\"}]}";

static const char rfc7520_token[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250"
    "byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcm"
    "UgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"
    ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xugl"
    "II7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8w"
    "W1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-"
    "ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";

static const char rfc7520_payload[] =
    "It\xe2\x80\x99s a dangerous business, Frodo, going out your door. You step onto the road, "
    "and if you don't keep your feet, there\xe2\x80\x99s no knowing where you might be swept off "
    "to.";

#define FACTORY "5f0c6a4e-1d2b-4c3a-9e8f-7a6b5c4d3e2f"

static const struct jwt_policy policy = {.issuer = "https://issuer.tagproof.test",
                                         .audience = "tagproof-factory-api"};

static struct jwt_keyset *parse_ok(const char *json)
{
    char err[256] = "";
    struct jwt_keyset *set = jwt_keyset_parse(json, strlen(json), err, sizeof(err));
    if (set == NULL)
        fail_msg("jwt_keyset_parse: %s", err);
    return set;
}

/* ---------------------------------------------------------------------------------------- */

static void test_base64url_strict(void **state)
{
    (void)state;
    unsigned char out[64];
    size_t n = 0;
    struct {
        const char *in, *out;
    } ok[] = {
        {"", ""},           {"Zg", "f"},          {"Zm8", "fo"},          {"Zm9v", "foo"},
        {"Zm9vYg", "foob"}, {"Zm9vYmE", "fooba"}, {"Zm9vYmFy", "foobar"}, {"-_8", "\xfb\xff"}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(jwt_base64url_decode(ok[i].in, strlen(ok[i].in), out, sizeof(out), &n), 0);
        assert_int_equal(n, strlen(ok[i].out));
        assert_memory_equal(out, ok[i].out, n);
        char *back = jwt_base64url_encode(out, n);
        assert_string_equal(back, ok[i].in);
        free(back);
    }
    const char *bad[] = {
        "Zg==",            /* padding */
        "Zg=",             /* padding */
        "Zh",              /* spare bits set: would also decode to "f" */
        "Zm9",             /* spare bits set */
        "Z",               /* a single leftover character */
        "Zm9vY",           /* likewise after a full group */
        "+_8",             /* standard alphabet */
        "-/8",             /* standard alphabet */
        "Zm 9v",           /* whitespace */
        "Zm9v\n", "Zm\0v", /* NUL */
        "Zm9v.",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = strlen(bad[i]);
        if (i == 10)
            len = 4;
        assert_int_equal(jwt_base64url_decode(bad[i], len, out, sizeof(out), &n), -1);
    }
    /* No room: refused rather than truncated. */
    assert_int_equal(jwt_base64url_decode("Zm9vYmFy", 8, out, 5, &n), -1);

    /* Every length and every byte value round-trips. */
    unsigned char in[256];
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)(255 - i);
    for (size_t len = 0; len <= 40; len++) {
        char *e = jwt_base64url_encode(in + len, len);
        unsigned char back[64];
        assert_int_equal(jwt_base64url_decode(e, strlen(e), back, sizeof(back), &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(back, in + len, len);
        free(e);
    }
}

static void test_rfc7515_a2_verifies(void **state)
{
    (void)state;
    struct jwt_keyset *set = parse_ok(rfc7515_a2_jwks);
    assert_int_equal(jwt_keyset_count(set), 1);
    struct jwt_jws jws;
    const char *why = NULL;
    assert_int_equal(jwt_jws_verify(set, rfc7515_a2_token, strlen(rfc7515_a2_token), &jws, &why),
                     JWT_OK);
    assert_int_equal(jws.alg, JWT_ALG_RS256);
    assert_string_equal(jws.kid, "");
    assert_int_equal(jws.payload_len, strlen(rfc7515_a2_payload));
    assert_memory_equal(jws.payload, rfc7515_a2_payload, jws.payload_len);
    jwt_jws_clear(&jws);

    /* One byte changed anywhere in the signed part or in the signature: refused. */
    char *t = strdup(rfc7515_a2_token);
    size_t len = strlen(t);
    size_t spots[] = {5, 40, len - 10};
    for (size_t i = 0; i < 3; i++) {
        char saved = t[spots[i]];
        t[spots[i]] = saved == 'A' ? 'B' : 'A';
        assert_int_not_equal(jwt_jws_verify(set, t, len, &jws, &why), JWT_OK);
        assert_null(jws.payload);
        t[spots[i]] = saved;
    }
    free(t);

    /* As a Tagproof token it is still refused: no aud, no role, and long expired. */
    struct jwt_claims c;
    struct jwt_policy joe = {.issuer = "joe", .audience = "tagproof-factory-api"};
    assert_int_equal(jwt_verify(set, &joe, rfc7515_a2_token, strlen(rfc7515_a2_token),
                                1300819380 - 100, &c, &why),
                     JWT_BAD_CLAIMS);
    assert_string_equal(why, "aud missing or without this service");
    assert_int_equal(c.exp, 0);
    jwt_keyset_unref(set);
}

static void test_rfc7520_4_1_verifies(void **state)
{
    (void)state;
    struct jwt_keyset *set = parse_ok(rfc7520_jwks);
    assert_true(jwt_keyset_has_kid(set, "bilbo.baggins@hobbiton.example"));
    struct jwt_jws jws;
    const char *why = NULL;
    assert_int_equal(jwt_jws_verify(set, rfc7520_token, strlen(rfc7520_token), &jws, &why), JWT_OK);
    assert_string_equal(jws.kid, "bilbo.baggins@hobbiton.example");
    assert_int_equal(jws.payload_len, strlen(rfc7520_payload));
    assert_memory_equal(jws.payload, rfc7520_payload, jws.payload_len);
    jwt_jws_clear(&jws);

    /* The payload is text, not claims. */
    struct jwt_claims c;
    assert_int_equal(jwt_verify(set, &policy, rfc7520_token, strlen(rfc7520_token), 0, &c, &why),
                     JWT_MALFORMED);

    /* The A.2 token names no kid; against the bilbo key alone it does not verify. */
    assert_int_equal(jwt_jws_verify(set, rfc7515_a2_token, strlen(rfc7515_a2_token), &jws, &why),
                     JWT_BAD_SIGNATURE);

    /* With both keys in one set the A.2 token is ambiguous (no kid), the RFC 7520 one not. */
    struct jwt_keyset *a2 = parse_ok(rfc7515_a2_jwks);
    struct jwt_keyset *both = jwt_keyset_merge(a2, set);
    assert_int_equal(jwt_keyset_count(both), 2);
    assert_int_equal(jwt_jws_verify(both, rfc7515_a2_token, strlen(rfc7515_a2_token), &jws, &why),
                     JWT_BAD_HEADER);
    assert_int_equal(jwt_jws_verify(both, rfc7520_token, strlen(rfc7520_token), &jws, &why),
                     JWT_OK);
    jwt_jws_clear(&jws);
    jwt_keyset_unref(both);
    jwt_keyset_unref(a2);
    jwt_keyset_unref(set);
}

/* A P-256 public key (x, y) on the curve, from RFC 7515 appendix A.3. */
#define EC_X "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
#define EC_Y "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
/* RSA moduli of 1024 (too small) and 2048 bits: 128 and 256 bytes of 0xc5. */
#define RSA1024_N                                                                                  \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF"     \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcU"
#define RSA2048_N                                                                                  \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF"     \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF"     \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF"     \
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxQ"

static void test_keyset_parse(void **state)
{
    (void)state;
    char err[256];
    struct {
        const char *json;
        size_t usable; /* keys kept when it parses */
    } ok[] = {
        {"{\"keys\":[]}", 0},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"" EC_X
         "\",\"y\":\"" EC_Y "\"}]}",
         1},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\","
         "\"kid\":\"e1\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y "\"}]}",
         1},
        /* Skipped: encryption keys, other curves and types, another alg, small RSA. */
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"enc\",\"kid\":\"e1\",\"x\":\"" EC_X
         "\",\"y\":\"" EC_Y "\"}]}",
         0},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"e1\",\"x\":\"AA\",\"y\":\"AA\"}]}",
         0},
        {"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}]}", 0},
        {"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"o\",\"x\":\"AA\"}]}", 0},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES384\",\"kid\":\"e1\",\"x\":"
         "\"" EC_X "\",\"y\":\"" EC_Y "\"}]}",
         0},
        {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"small\",\"n\":\"" RSA1024_N "\",\"e\":\"AQAB\"}]}",
         0},
        /* Unknown members of the document and of keys are ignored. */
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"" EC_X
         "\",\"y\":\"" EC_Y "\",\"x5t\":\"abc\"}],\"extra\":1}",
         1},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct jwt_keyset *set = jwt_keyset_parse(ok[i].json, strlen(ok[i].json), err, sizeof(err));
        if (set == NULL)
            fail_msg("case %zu: %s", i, err);
        assert_int_equal(jwt_keyset_count(set), ok[i].usable);
        jwt_keyset_unref(set);
    }
    const char *bad[] = {
        "",
        "[]",
        "{\"keys\":{}}",
        "{\"nokeys\":[]}",
        "{\"keys\":[1]}",
        "{\"keys\":[],\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"EC\",\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X
        "\",\"y\":\"" EC_Y "\"}]}",
        /* Private keys do not belong in a JWKS, even of a type we would skip. */
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"d\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y
        "\",\"d\":\"AA\"}]}",
        /* Two usable keys with one kid. */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k\",\"x\":\"" EC_X
        "\",\"y\":\"" EC_Y "\"},{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k\",\"x\":\"" EC_X
        "\",\"y\":\"" EC_Y "\"}]}",
        /* A point off the curve, short coordinates, non-canonical base64url. */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_X "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"" EC_Y "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X "=\",\"y\":\"" EC_Y "\"}]}",
        /* RSA without n, with an even exponent, with e = 1. */
        "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" RSA2048_N "\",\"e\":\"AQAA\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" RSA2048_N "\",\"e\":\"AQ\"}]}",
        /* Malformed kid, kty or use. */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y
        "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"a b\",\"x\":\"" EC_X
        "\",\"y\":\"" EC_Y "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":7,\"x\":\"" EC_X "\",\"y\":\"" EC_Y
        "\"}]}",
        "{\"keys\":[{\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"use\":1,\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y
        "\"}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        struct jwt_keyset *set = jwt_keyset_parse(bad[i], strlen(bad[i]), err, sizeof(err));
        if (set != NULL)
            fail_msg("bad case %zu parsed", i);
        assert_true(err[0] != '\0');
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Signer                                                                                    */

struct signers {
    char *dir;
    char rsa_path[512], ec_path[512];
    struct jwt_signer *rsa, *ec;
    struct jwt_keyset *keys;
};

static int signers_setup(void **state)
{
    struct signers *s = calloc(1, sizeof(*s));
    char err[256];
    s->dir = ts_tempdir("tp-jwt");
    snprintf(s->rsa_path, sizeof(s->rsa_path), "%s/rsa.pem", s->dir);
    snprintf(s->ec_path, sizeof(s->ec_path), "%s/ec.pem", s->dir);
    s->rsa = jwt_signer_load_or_create(s->rsa_path, JWT_ALG_RS256, err, sizeof(err));
    if (s->rsa == NULL)
        fail_msg("%s", err);
    s->ec = jwt_signer_load_or_create(s->ec_path, JWT_ALG_ES256, err, sizeof(err));
    if (s->ec == NULL)
        fail_msg("%s", err);
    char *a = jwt_signer_jwks_json(s->rsa), *b = jwt_signer_jwks_json(s->ec);
    struct jwt_keyset *ka = parse_ok(a), *kb = parse_ok(b);
    s->keys = jwt_keyset_merge(ka, kb);
    jwt_keyset_unref(ka);
    jwt_keyset_unref(kb);
    free(a);
    free(b);
    *state = s;
    return 0;
}

static int signers_teardown(void **state)
{
    struct signers *s = *state;
    jwt_keyset_unref(s->keys);
    jwt_signer_free(s->rsa);
    jwt_signer_free(s->ec);
    ts_rmdir(s->dir);
    free(s->dir);
    free(s);
    return 0;
}

static char *sign_ok(struct jwt_signer *signer, enum jwt_role role, const char *fid, int64_t iat,
                     int64_t exp)
{
    struct jwt_claims c = {.role = role, .iat = iat, .exp = exp};
    char err[256];
    snprintf(c.sub, sizeof(c.sub), "user-1");
    snprintf(c.factory_id, sizeof(c.factory_id), "%s", fid);
    char *t = jwt_sign(signer, &policy, &c, err, sizeof(err));
    if (t == NULL)
        fail_msg("jwt_sign: %s", err);
    return t;
}

static void test_signer_roundtrip(void **state)
{
    struct signers *s = *state;
    char err[256];
    struct stat st;
    assert_int_equal(stat(s->rsa_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(s->ec_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(jwt_signer_alg(s->rsa), JWT_ALG_RS256);
    assert_int_equal(jwt_signer_alg(s->ec), JWT_ALG_ES256);
    assert_int_equal(strlen(jwt_signer_kid(s->rsa)), 43); /* base64url of SHA-256 */
    assert_int_equal(strlen(jwt_signer_kid(s->ec)), 43);

    /* Loading again gives the same key and kid (the kid is the key's thumbprint). */
    struct jwt_signer *again =
        jwt_signer_load_or_create(s->rsa_path, JWT_ALG_ES256, err, sizeof(err));
    assert_non_null(again);
    assert_int_equal(jwt_signer_alg(again), JWT_ALG_RS256);
    assert_string_equal(jwt_signer_kid(again), jwt_signer_kid(s->rsa));
    jwt_signer_free(again);

    /* The published JWKS: public members only, use sig, the alg and kid. */
    char *jwks = jwt_signer_jwks_json(s->ec);
    assert_non_null(strstr(jwks, "\"kty\":\"EC\""));
    assert_non_null(strstr(jwks, "\"alg\":\"ES256\""));
    assert_non_null(strstr(jwks, "\"use\":\"sig\""));
    assert_null(strstr(jwks, "\"d\""));
    free(jwks);

    int64_t now = time(NULL);
    struct jwt_signer *both[2] = {s->rsa, s->ec};
    for (int i = 0; i < 2; i++) {
        char *t = sign_ok(both[i], JWT_ROLE_FACTORY_USER, "5F0C6A4E-1D2B-4C3A-9E8F-7A6B5C4D3E2F",
                          now, now + 900);
        struct jwt_claims c;
        const char *why = NULL;
        assert_int_equal(jwt_verify(s->keys, &policy, t, strlen(t), now, &c, &why), JWT_OK);
        assert_string_equal(c.sub, "user-1");
        assert_int_equal(c.role, JWT_ROLE_FACTORY_USER);
        assert_string_equal(c.factory_id, FACTORY); /* lower case */
        assert_int_equal(c.iat, now);
        assert_int_equal(c.nbf, now);
        assert_int_equal(c.exp, now + 900);
        assert_int_equal(c.alg, jwt_signer_alg(both[i]));
        assert_string_equal(c.kid, jwt_signer_kid(both[i]));
        assert_true(strlen(t) < 1024);
        free(t);
    }
    char *t = sign_ok(s->ec, JWT_ROLE_ADMIN, "", now, now + 60);
    struct jwt_claims c;
    assert_int_equal(jwt_verify(s->keys, &policy, t, strlen(t), now, &c, NULL), JWT_OK);
    assert_int_equal(c.role, JWT_ROLE_ADMIN);
    assert_string_equal(c.factory_id, "");
    free(t);
}

static void test_signer_refuses_bad_claims(void **state)
{
    struct signers *s = *state;
    char err[256];
    int64_t now = time(NULL);
    struct {
        enum jwt_role role;
        const char *sub, *fid;
        int64_t iat, exp;
    } bad[] = {
        {JWT_ROLE_FACTORY_USER, "u", FACTORY, now, now + 901}, /* too long */
        {JWT_ROLE_FACTORY_USER, "u", FACTORY, now, now},       /* empty lifetime */
        {JWT_ROLE_FACTORY_USER, "u", FACTORY, 0, 60},          /* no iat */
        {JWT_ROLE_FACTORY_USER, "u", "", now, now + 60},       /* no factory */
        {JWT_ROLE_VIEWER, "u", "not-a-uuid", now, now + 60},
        {JWT_ROLE_ADMIN, "u", FACTORY, now, now + 60}, /* admin with a factory */
        {JWT_ROLE_NONE, "u", FACTORY, now, now + 60},
        {JWT_ROLE_VIEWER, "", FACTORY, now, now + 60}, /* no sub */
        {JWT_ROLE_VIEWER, "a\nb", FACTORY, now, now + 60},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct jwt_claims c = {.role = bad[i].role, .iat = bad[i].iat, .exp = bad[i].exp};
        snprintf(c.sub, sizeof(c.sub), "%s", bad[i].sub);
        snprintf(c.factory_id, sizeof(c.factory_id), "%s", bad[i].fid);
        err[0] = '\0';
        char *t = jwt_sign(s->rsa, &policy, &c, err, sizeof(err));
        if (t != NULL)
            fail_msg("case %zu signed", i);
        assert_non_null(strstr(err, "refusing to sign"));
    }
}

static void test_signer_key_files(void **state)
{
    struct signers *s = *state;
    char err[256], path[600];

    /* Readable by others: refused, like ssh does. */
    snprintf(path, sizeof(path), "%s/open.pem", s->dir);
    assert_int_equal(ts_sh("cp '%s' '%s' && chmod 644 '%s'", s->rsa_path, path, path), 0);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err)));
    assert_non_null(strstr(err, "chmod 600"));

    /* Not a key. */
    snprintf(path, sizeof(path), "%s/junk.pem", s->dir);
    assert_int_equal(ts_sh("echo junk > '%s' && chmod 600 '%s'", path, path), 0);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err)));
    assert_non_null(strstr(err, "not an unencrypted PEM private key"));

    /* Encrypted: an error, never a passphrase prompt. */
    snprintf(path, sizeof(path), "%s/enc.pem", s->dir);
    assert_int_equal(ts_sh("openssl pkey -in '%s' -aes256 -passout pass:x -out '%s' && chmod 600 "
                           "'%s'",
                           s->rsa_path, path, path),
                     0);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err)));

    /* RSA below 2048 bits and other curves are refused. */
    snprintf(path, sizeof(path), "%s/small.pem", s->dir);
    assert_int_equal(ts_sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out '%s' "
                           "2>/dev/null && chmod 600 '%s'",
                           path, path),
                     0);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err)));
    assert_non_null(strstr(err, "neither RSA"));
    snprintf(path, sizeof(path), "%s/p384.pem", s->dir);
    assert_int_equal(ts_sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "
                           "'%s' && chmod 600 '%s'",
                           path, path),
                     0);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_ES256, err, sizeof(err)));

    /* A traditional-format P-256 key made elsewhere works, and signs ES256. */
    snprintf(path, sizeof(path), "%s/p256.pem", s->dir);
    assert_int_equal(ts_sh("openssl ecparam -name prime256v1 -genkey -noout -out '%s' && chmod "
                           "600 '%s'",
                           path, path),
                     0);
    struct jwt_signer *p256 = jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err));
    if (p256 == NULL)
        fail_msg("%s", err);
    assert_int_equal(jwt_signer_alg(p256), JWT_ALG_ES256);
    jwt_signer_free(p256);

    /* A directory that does not exist. */
    snprintf(path, sizeof(path), "%s/missing/key.pem", s->dir);
    assert_null(jwt_signer_load_or_create(path, JWT_ALG_RS256, err, sizeof(err)));
    assert_null(jwt_signer_load_or_create(s->rsa_path, JWT_ALG_NONE, err, sizeof(err)));
}

struct racer {
    const char *path;
    char kid[64];
};

static void *race_create(void *arg)
{
    struct racer *r = arg;
    char err[256];
    struct jwt_signer *s = jwt_signer_load_or_create(r->path, JWT_ALG_ES256, err, sizeof(err));
    if (s != NULL) {
        snprintf(r->kid, sizeof(r->kid), "%s", jwt_signer_kid(s));
        jwt_signer_free(s);
    }
    return NULL;
}

/* Two processes starting together must not end up with different keys. */
static void test_signer_concurrent_create(void **state)
{
    struct signers *s = *state;
    char path[600];
    for (int round = 0; round < 5; round++) {
        snprintf(path, sizeof(path), "%s/race%d.pem", s->dir, round);
        struct racer r[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            r[i].path = path;
            r[i].kid[0] = '\0';
            assert_int_equal(pthread_create(&th[i], NULL, race_create, &r[i]), 0);
        }
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(strlen(r[i].kid), 43);
            assert_string_equal(r[i].kid, r[0].kid);
        }
    }
    assert_int_equal(ts_sh("ls '%s' | grep -c tmp >/dev/null", s->dir), 1); /* no leftovers */
}

/* ---------------------------------------------------------------------------------------- */
/* Claims: time boundaries with the default 60 s leeway and 15-minute lifetime               */

static void test_time_boundaries(void **state)
{
    struct signers *s = *state;
    const int64_t t0 = 1700000000;
    char *t = sign_ok(s->rsa, JWT_ROLE_VIEWER, FACTORY, t0, t0 + 900);
    size_t len = strlen(t);
    struct jwt_claims c;
    const char *why = NULL;
    struct {
        int64_t now;
        enum jwt_result want;
    } cases[] = {
        {t0 - 61, JWT_EXPIRED},    /* nbf and iat beyond the leeway */
        {t0 - 60, JWT_OK},         /* within it */
        {t0, JWT_OK},              /* issued */
        {t0 + 900, JWT_OK},        /* exp reached, within leeway */
        {t0 + 959, JWT_OK},        /* the last second */
        {t0 + 960, JWT_EXPIRED},   /* exp + leeway */
        {t0 + 86400, JWT_EXPIRED}, /* long gone */
        {t0 - 86400, JWT_EXPIRED}, /* far from valid yet */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum jwt_result r = jwt_verify(s->keys, &policy, t, len, cases[i].now, &c, &why);
        if (r != cases[i].want)
            fail_msg("now %+lld: %s (%s)", (long long)(cases[i].now - t0), jwt_result_name(r), why);
    }
    /* A larger leeway and a shorter lifetime are honoured. */
    struct jwt_policy strict = policy;
    strict.max_lifetime_s = 600;
    assert_int_equal(jwt_verify(s->keys, &strict, t, len, t0, &c, &why), JWT_BAD_CLAIMS);
    struct jwt_policy lenient = policy;
    lenient.leeway_s = 120;
    assert_int_equal(jwt_verify(s->keys, &lenient, t, len, t0 + 1000, &c, &why), JWT_OK);
    /* Another issuer or audience. */
    struct jwt_policy other = policy;
    other.audience = "tagproof-scan";
    assert_int_equal(jwt_verify(s->keys, &other, t, len, t0, &c, &why), JWT_BAD_CLAIMS);
    other = policy;
    other.issuer = "https://issuer.tagproof.test/";
    assert_int_equal(jwt_verify(s->keys, &other, t, len, t0, &c, &why), JWT_BAD_CLAIMS);
    /* No keys at all: unknown key, never accepted. */
    struct jwt_keyset *empty = parse_ok("{\"keys\":[]}");
    assert_int_equal(jwt_verify(empty, &policy, t, len, t0, &c, &why), JWT_UNKNOWN_KEY);
    assert_int_equal(jwt_verify(NULL, &policy, t, len, t0, &c, &why), JWT_UNKNOWN_KEY);
    jwt_keyset_unref(empty);
    free(t);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads and cost                                                                          */

struct verifier {
    struct jwt_keyset *keys;
    const char *tokens[2];
    int64_t now;
    int failures;
};

static void *verify_many(void *arg)
{
    struct verifier *v = arg;
    struct jwt_keyset *mine = jwt_keyset_ref(v->keys);
    for (int i = 0; i < 300; i++) {
        struct jwt_claims c;
        const char *t = v->tokens[i & 1];
        if (jwt_verify(mine, &policy, t, strlen(t), v->now, &c, NULL) != JWT_OK)
            v->failures++;
    }
    jwt_keyset_unref(mine);
    return NULL;
}

static void test_concurrent_verification(void **state)
{
    struct signers *s = *state;
    int64_t now = time(NULL);
    char *a = sign_ok(s->rsa, JWT_ROLE_VIEWER, FACTORY, now, now + 600);
    char *b = sign_ok(s->ec, JWT_ROLE_VIEWER, FACTORY, now, now + 600);
    struct verifier v[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        v[i] = (struct verifier){.keys = s->keys, .tokens = {a, b}, .now = now};
        assert_int_equal(pthread_create(&th[i], NULL, verify_many, &v[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(v[i].failures, 0);
    }
    free(a);
    free(b);
}

/* CPU time of this thread, in microseconds: wall time on a shared machine means little. */
static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static double cost_us(struct jwt_keyset *keys, const char *t, int64_t now, int n)
{
    double a = cpu_us();
    for (int i = 0; i < n; i++) {
        struct jwt_claims c;
        assert_int_equal(jwt_verify(keys, &policy, t, strlen(t), now, &c, NULL), JWT_OK);
    }
    return (cpu_us() - a) / n;
}

/* The baseline: one bare EVP verification of a signature over the same bytes, same key. */
static double bare_us(const char *pem_path, const char *t, int n)
{
    FILE *f = fopen(pem_path, "r");
    assert_non_null(f);
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(key);
    const unsigned char *data = (const unsigned char *)t;
    size_t dlen = (size_t)(strrchr(t, '.') - t), siglen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, NULL, &siglen, data, dlen), 1);
    unsigned char *sig = malloc(siglen);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, data, dlen), 1);
    double a = cpu_us();
    for (int i = 0; i < n; i++) {
        assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
        assert_int_equal(EVP_DigestVerify(md, sig, siglen, data, dlen), 1);
    }
    double us = (cpu_us() - a) / n;
    free(sig);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return us;
}

/*
 * Informational: the CPU cost of jwt_verify as a ratio to a bare OpenSSL verification in the
 * same run (sanitizer builds inflate the parsing part more than the arithmetic).
 */
static void test_verification_cost(void **state)
{
    struct signers *s = *state;
    int64_t now = time(NULL);
    char *a = sign_ok(s->rsa, JWT_ROLE_VIEWER, FACTORY, now, now + 600);
    char *b = sign_ok(s->ec, JWT_ROLE_VIEWER, FACTORY, now, now + 600);
    double t0 = cpu_us();
    for (int i = 0; i < 20; i++)
        free(sign_ok(s->rsa, JWT_ROLE_VIEWER, FACTORY, now, now + 600));
    double sign_rs = (cpu_us() - t0) / 20;
    t0 = cpu_us();
    for (int i = 0; i < 20; i++)
        free(sign_ok(s->ec, JWT_ROLE_VIEWER, FACTORY, now, now + 600));
    double sign_es = (cpu_us() - t0) / 20;
    double rs = cost_us(s->keys, a, now, 500), es = cost_us(s->keys, b, now, 500);
    double rs0 = bare_us(s->rsa_path, a, 500), es0 = bare_us(s->ec_path, b, 500);
    printf("# jwt_verify RS256 %.1f us CPU (%.2fx a bare EVP verify), ES256 %.1f us (%.2fx); "
           "tokens %zu and %zu bytes; jwt_sign RS256 %.0f us, ES256 %.0f us\n",
           rs, rs / rs0, es, es / es0, strlen(a), strlen(b), sign_rs, sign_es);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url_strict),
        cmocka_unit_test(test_rfc7515_a2_verifies),
        cmocka_unit_test(test_rfc7520_4_1_verifies),
        cmocka_unit_test(test_keyset_parse),
        cmocka_unit_test(test_signer_roundtrip),
        cmocka_unit_test(test_signer_refuses_bad_claims),
        cmocka_unit_test(test_signer_key_files),
        cmocka_unit_test(test_signer_concurrent_create),
        cmocka_unit_test(test_time_boundaries),
        cmocka_unit_test(test_concurrent_verification),
        cmocka_unit_test(test_verification_cost),
    };
    return cmocka_run_group_tests(tests, signers_setup, signers_teardown);
}
