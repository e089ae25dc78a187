/*
 * test_jwt_hostile: a table of hostile tokens made by an independent implementation (the npm
 * package jose, pinned in tests/node/package.json) from our own key material, each of which
 * jwt_verify must refuse for the stated reason, next to controls that must verify. Also checks
 * the other way round: jose computes the same RFC 7638 kids and accepts our signer's tokens.
 * Needs node and npm (npm ci runs when tests/node/node_modules is missing); without them the
 * test fails rather than skips.
 */
#include "support.h"
#include "jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#define ISSUER "https://issuer.tagproof.test"
#define AUDIENCE "tagproof-factory-api"
#define FACTORY "5f0c6a4e-1d2b-4c3a-9e8f-7a6b5c4d3e2f"

static const struct jwt_policy policy = {.issuer = ISSUER, .audience = AUDIENCE};

static void test_hostile_tokens(void **state)
{
    (void)state;
    char err[256], rsa_path[512], ec_path[512], in_path[512], out_path[512];
    char *dir = ts_tempdir("tp-jwt-hostile");
    snprintf(rsa_path, sizeof(rsa_path), "%s/rsa.pem", dir);
    snprintf(ec_path, sizeof(ec_path), "%s/ec.pem", dir);
    snprintf(in_path, sizeof(in_path), "%s/in.json", dir);
    snprintf(out_path, sizeof(out_path), "%s/out.json", dir);

    if (ts_sh("command -v node >/dev/null && command -v npm >/dev/null") != 0)
        fail_msg("node and npm are needed for the hostile token table (apt-get install nodejs "
                 "npm)");
    if (ts_sh("test -f '%s/tests/node/node_modules/jose/package.json' || (cd '%s/tests/node' && "
              "npm ci --no-audit --no-fund --loglevel=error >&2)",
              TAGPROOF_SOURCE_DIR, TAGPROOF_SOURCE_DIR) != 0)
        fail_msg("npm ci in tests/node failed");

    struct jwt_signer *rsa = jwt_signer_load_or_create(rsa_path, JWT_ALG_RS256, err, sizeof(err));
    struct jwt_signer *ec = jwt_signer_load_or_create(ec_path, JWT_ALG_ES256, err, sizeof(err));
    assert_non_null(rsa);
    assert_non_null(ec);

    /* The JWKS we would publish: both keys in one document. */
    char *rsa_jwks = jwt_signer_jwks_json(rsa), *ec_jwks = jwt_signer_jwks_json(ec);
    json_t *published = json_loads(rsa_jwks, 0, NULL);
    json_t *ec_doc = json_loads(ec_jwks, 0, NULL);
    json_array_extend(json_object_get(published, "keys"), json_object_get(ec_doc, "keys"));
    char *published_text = json_dumps(published, JSON_COMPACT);
    struct jwt_keyset *keys =
        jwt_keyset_parse(published_text, strlen(published_text), err, sizeof(err));
    assert_non_null(keys);
    assert_int_equal(jwt_keyset_count(keys), 2);

    const int64_t now = (int64_t)time(NULL);
    struct jwt_claims mine = {.role = JWT_ROLE_FACTORY_USER, .iat = now, .exp = now + 900};
    snprintf(mine.sub, sizeof(mine.sub), "ours");
    snprintf(mine.factory_id, sizeof(mine.factory_id), FACTORY);
    char *ours_rs = jwt_sign(rsa, &policy, &mine, err, sizeof(err));
    char *ours_es = jwt_sign(ec, &policy, &mine, err, sizeof(err));
    assert_non_null(ours_rs);
    assert_non_null(ours_es);

    json_t *in = json_pack("{s:I, s:s, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:s, s:[s,s]}", "now",
                           (json_int_t)now, "issuer", ISSUER, "audience", AUDIENCE, "factory_id",
                           FACTORY, "rsa", "pem_file", rsa_path, "kid", jwt_signer_kid(rsa), "ec",
                           "pem_file", ec_path, "kid", jwt_signer_kid(ec), "jwks", published_text,
                           "ours", ours_rs, ours_es);
    assert_non_null(in);
    assert_int_equal(json_dump_file(in, in_path, JSON_COMPACT), 0);

    int64_t t0 = ts_now_ms();
    if (ts_sh("node '%s/tests/node/hostile_tokens.mjs' '%s' > '%s'", TAGPROOF_SOURCE_DIR, in_path,
              out_path) != 0)
        fail_msg("tests/node/hostile_tokens.mjs failed");
    int64_t t1 = ts_now_ms();
    json_error_t jerr;
    json_t *out = json_load_file(out_path, 0, &jerr);
    if (out == NULL)
        fail_msg("hostile_tokens.mjs printed no JSON: %s", jerr.text);

    /* jose agrees on the kids (RFC 7638 thumbprints) and accepts what we sign. */
    json_t *tp = json_object_get(out, "thumbprints");
    assert_string_equal(json_string_value(json_object_get(tp, "rsa")), jwt_signer_kid(rsa));
    assert_string_equal(json_string_value(json_object_get(tp, "ec")), jwt_signer_kid(ec));
    json_t *ov = json_object_get(out, "ours_verified");
    assert_int_equal(json_array_size(ov), 2);
    assert_true(json_is_true(json_array_get(ov, 0)));
    assert_true(json_is_true(json_array_get(ov, 1)));

    json_t *cases = json_object_get(out, "cases");
    size_t i, refused = 0, controls = 0, wrong = 0;
    json_t *c;
    printf("# %-44s %-14s %-14s %6s  %s\n", "case", "expected", "got", "bytes", "reason");
    json_array_foreach(cases, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *expect = json_string_value(json_object_get(c, "expect"));
        json_t *tok = json_object_get(c, "token");
        struct jwt_claims claims;
        const char *why = NULL;
        enum jwt_result r = jwt_verify(keys, &policy, json_string_value(tok),
                                       json_string_length(tok), now, &claims, &why);
        const char *got = jwt_result_name(r);
        int match = strcmp(got, expect) == 0;
        printf("# %-44s %-14s %-14s %6zu  %s%s\n", name, expect, got, json_string_length(tok), why,
               match ? "" : "   <-- MISMATCH");
        if (!match)
            wrong++;
        if (strcmp(expect, "ok") == 0) {
            controls++;
        } else {
            refused++;
            /* Whatever the reason, a hostile token must never pass. */
            assert_int_not_equal(r, JWT_OK);
            assert_string_equal(claims.sub, "");
        }
    }
    printf("# %zu hostile tokens refused, %zu controls, node took %lld ms\n", refused, controls,
           (long long)(t1 - t0));
    assert_int_equal(wrong, 0);
    assert_true(refused >= 100);
    assert_true(controls >= 10);

    json_decref(out);
    json_decref(in);
    json_decref(published);
    json_decref(ec_doc);
    free(published_text);
    free(rsa_jwks);
    free(ec_jwks);
    free(ours_rs);
    free(ours_es);
    jwt_keyset_unref(keys);
    jwt_signer_free(rsa);
    jwt_signer_free(ec);
    ts_rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
