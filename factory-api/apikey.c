/*
 * apikey: generating, parsing and checking API keys (see apikey.h). The secret is 256 bits
 * from the operating system's generator, so a plain SHA-256 is as good as a slow hash here:
 * there is no dictionary to try.
 */
#include "apikey.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char id_alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";

static void hash_secret(const char *secret, size_t len, unsigned char out[APIKEY_HASH_LEN])
{
    unsigned int n = 0;
    EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL);
}

int apikey_generate(struct apikey *out)
{
    unsigned char idr[APIKEY_ID_LEN], sec[APIKEY_SECRET_LEN / 2];
    char secret[APIKEY_SECRET_LEN + 1];
    static const char hex[] = "0123456789abcdef";

    memset(out, 0, sizeof(*out));
    if (RAND_bytes(idr, sizeof(idr)) != 1 || RAND_bytes(sec, sizeof(sec)) != 1)
        return -1;
    /* 252 is the largest multiple of 36 below 256: rejecting above it keeps ids uniform. */
    for (size_t i = 0; i < APIKEY_ID_LEN; i++) {
        while (idr[i] >= 252)
            if (RAND_bytes(&idr[i], 1) != 1)
                return -1;
        out->id[i] = id_alphabet[idr[i] % 36];
    }
    for (size_t i = 0; i < sizeof(sec); i++) {
        secret[2 * i] = hex[sec[i] >> 4];
        secret[2 * i + 1] = hex[sec[i] & 15];
    }
    secret[APIKEY_SECRET_LEN] = '\0';
    snprintf(out->prefix, sizeof(out->prefix), "%s%s", APIKEY_PREFIX, out->id);
    snprintf(out->key, sizeof(out->key), "%s_%s", out->prefix, secret);
    hash_secret(secret, APIKEY_SECRET_LEN, out->hash);
    OPENSSL_cleanse(sec, sizeof(sec));
    OPENSSL_cleanse(secret, sizeof(secret));
    return 0;
}

int apikey_parse(const char *s, char id[APIKEY_ID_LEN + 1], unsigned char hash[APIKEY_HASH_LEN])
{
    const size_t plen = sizeof(APIKEY_PREFIX) - 1;
    const char *sec;

    if (s == NULL || strlen(s) != APIKEY_LEN || strncmp(s, APIKEY_PREFIX, plen) != 0 ||
        s[plen + APIKEY_ID_LEN] != '_')
        return -1;
    for (size_t i = 0; i < APIKEY_ID_LEN; i++) {
        char c = s[plen + i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1;
        id[i] = c;
    }
    id[APIKEY_ID_LEN] = '\0';
    sec = s + plen + APIKEY_ID_LEN + 1;
    for (size_t i = 0; i < APIKEY_SECRET_LEN; i++)
        if (!((sec[i] >= '0' && sec[i] <= '9') || (sec[i] >= 'a' && sec[i] <= 'f')))
            return -1;
    hash_secret(sec, APIKEY_SECRET_LEN, hash);
    return 0;
}

int apikey_hash_matches(const unsigned char *stored, size_t len,
                        const unsigned char hash[APIKEY_HASH_LEN])
{
    return stored != NULL && len == APIKEY_HASH_LEN &&
           CRYPTO_memcmp(stored, hash, APIKEY_HASH_LEN) == 0;
}
