// fuzz: MODULES jwt
/*
 * fuzz_jwt: the token verifier and the JWKS parser on arbitrary bytes. The first byte picks
 * which. Keys come from a signer created once in a scratch directory; whatever the input, a
 * verification either fails or yields claims that pass the policy.
 */
#include "jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct jwt_keyset *keys;
static const struct jwt_policy policy = {.issuer = "tagproof", .audience = "tagproof-factory-api"};

static void init(void)
{
    char dir[] = "/tmp/fuzz-jwt.XXXXXX", path[64], err[256];
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    struct jwt_signer *s = jwt_signer_load_or_create(path, JWT_ALG_ES256, err, sizeof(err));
    if (s == NULL)
        abort();
    char *jwks = jwt_signer_jwks_json(s);
    keys = jwt_keyset_parse(jwks, strlen(jwks), err, sizeof(err));
    if (keys == NULL)
        abort();
    free(jwks);
    jwt_signer_free(s);
    remove(path);
    remove(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL)
        init();
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        char err[256];
        struct jwt_keyset *k = jwt_keyset_parse(in, len, err, sizeof(err));
        if (k == NULL && err[0] == '\0')
            abort();
        jwt_keyset_unref(k);
        return 0;
    }
    struct jwt_claims c;
    const char *why = NULL;
    enum jwt_result r = jwt_verify(keys, &policy, in, len, (int64_t)time(NULL), &c, &why);
    if (r == JWT_OK && (c.role == JWT_ROLE_NONE || c.sub[0] == '\0' || c.exp <= c.iat))
        abort();
    if (r != JWT_OK && why == NULL)
        abort();
    return 0;
}
