/*
 * apikey: the factory API's keys (SPEC §6) — "tp_live_<id>_<secret>": a 16-character key id
 * the database is searched by, and 256 random bits of secret (64 hex digits) of which only a
 * SHA-256 hash is stored. No I/O besides the random generator.
 */
#ifndef TAGPROOF_APIKEY_H
#define TAGPROOF_APIKEY_H

#include <stddef.h>

#define APIKEY_PREFIX "tp_live_"
#define APIKEY_ID_LEN 16
#define APIKEY_SECRET_LEN 64
#define APIKEY_HASH_LEN 32
/* prefix + id + '_' + secret */
#define APIKEY_LEN (sizeof(APIKEY_PREFIX) - 1 + APIKEY_ID_LEN + 1 + APIKEY_SECRET_LEN)

struct apikey {
    char key[APIKEY_LEN + 1];                           /* the whole key, shown once */
    char id[APIKEY_ID_LEN + 1];                         /* [a-z0-9] */
    char prefix[sizeof(APIKEY_PREFIX) + APIKEY_ID_LEN]; /* "tp_live_<id>", safe to show */
    unsigned char hash[APIKEY_HASH_LEN];                /* SHA-256 of the secret */
};

/* A new random key. 0, or -1 when the random generator fails. */
int apikey_generate(struct apikey *out);

/*
 * Splits a presented key into its id and the hash of its secret. 0, or -1 when s is not a
 * well-formed key (nothing about the failure depends on the secret's value).
 */
int apikey_parse(const char *s, char id[APIKEY_ID_LEN + 1], unsigned char hash[APIKEY_HASH_LEN]);

/* Whether a stored hash (len bytes) equals hash, in time independent of the contents. */
int apikey_hash_matches(const unsigned char *stored, size_t len,
                        const unsigned char hash[APIKEY_HASH_LEN]);

#endif
