/*
 * jwt: JSON Web Tokens of the factory API (SPEC §6) on OpenSSL 3 EVP and jansson. Strict
 * verification of compact JWS (RS256, ES256) against a set of public keys, the claim checks
 * of a Tagproof token, and the service's own signer with the JWKS that publishes its key.
 * Pure computation apart from the signer's key file: the live key set (file or URL, refresh)
 * is the jwks module's job.
 *
 * The algorithm is never taken from the token alone: each key has exactly one algorithm
 * (RS256 for RSA keys of 2048 bits or more, ES256 for P-256 keys) and a token is checked with
 * its key's algorithm or not at all. alg "none" (any case), every HMAC algorithm and every
 * other algorithm are refused before any key is looked at.
 */
#ifndef TAGPROOF_JWT_H
#define TAGPROOF_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

#define JWT_MAX_TOKEN_LEN 8192 /* bytes of a compact token; longer ones are refused unread */
#define JWT_KID_MAX 128        /* bytes of a kid, in tokens and key sets */
#define JWT_SUB_MAX 127        /* bytes of a sub claim */
#define JWT_DEFAULT_LEEWAY_S 60
#define JWT_DEFAULT_MAX_LIFETIME_S 900

enum jwt_alg { JWT_ALG_NONE = 0, JWT_ALG_RS256, JWT_ALG_ES256 };

enum jwt_role { JWT_ROLE_NONE = 0, JWT_ROLE_ADMIN, JWT_ROLE_FACTORY_USER, JWT_ROLE_VIEWER };

/*
 * Why a token was refused, coarse enough for metrics and the 401's error_description; the
 * precise reason is the static string jwt_verify leaves in *why.
 */
enum jwt_result {
    JWT_OK = 0,
    JWT_MALFORMED,     /* size, shape, base64url, JSON (duplicate keys too), wrong types */
    JWT_BAD_HEADER,    /* alg refused or not the key's, jku/x5u/jwk/x5c, crit, typ, cty */
    JWT_UNKNOWN_KEY,   /* no key with that kid: a key set refresh may help (jwks module) */
    JWT_BAD_SIGNATURE, /* the signature does not verify with the key */
    JWT_BAD_CLAIMS,    /* iss, aud, sub, role, factory_id, missing exp, lifetime */
    JWT_EXPIRED,       /* exp passed, or nbf / iat in the future, beyond the leeway */
};

/* "RS256", "ES256"; NULL for JWT_ALG_NONE. */
const char *jwt_alg_name(enum jwt_alg alg);

/* "admin", "factory_user", "viewer"; NULL for JWT_ROLE_NONE. */
const char *jwt_role_name(enum jwt_role role);

/* Parses a role name (exact, lower case). 0, or -1 when it is none of the three. */
int jwt_role_parse(const char *s, enum jwt_role *out);

/* "ok", "malformed", "bad_header", "unknown_key", "bad_signature", "bad_claims", "expired". */
const char *jwt_result_name(enum jwt_result r);

/*
 * Strict base64url (RFC 7515 §2): the URL-safe alphabet only, no padding, no whitespace, and
 * the unused bits of the last character zero, so each byte string has exactly one encoding.
 * Decodes len bytes of s into out (room for cap bytes). 0 and *outlen, or -1.
 */
int jwt_base64url_decode(const char *s, size_t len, unsigned char *out, size_t cap, size_t *outlen);

/* Encodes len bytes; a NUL-terminated string the caller frees, NULL when out of memory. */
char *jwt_base64url_encode(const unsigned char *in, size_t len);

/*
 * A key set: public verification keys by kid, immutable once built and reference-counted, so
 * that the threads of a service can share one while a refresh builds its successor.
 */
struct jwt_keyset;

/*
 * Builds a key set from a JWKS document (RFC 7517 §5): {"keys": [...]}, parsed with
 * duplicate member names refused. Kept: RSA keys of 2048 to 8192 bits (RS256) and EC P-256
 * keys (ES256) whose "use", when present, is "sig" and whose "alg", when present, is the one
 * the key type implies. Skipped, because identity providers publish them beside signing
 * keys: other key types, curves and algorithms, and "use": "enc". Refused, failing the whole
 * document: malformed JSON or members, a private key (a "d" member: a JWKS is public), two
 * usable keys with the same kid, a kid that is not 1 to JWT_KID_MAX printable ASCII bytes,
 * more than 64 usable keys. NULL with a message in err on failure; a set without usable keys
 * is not a failure. The caller owns the one reference.
 */
struct jwt_keyset *jwt_keyset_parse(const char *json, size_t len, char *err, size_t errlen);

/*
 * A set with the keys of first and then those of second whose kid first does not hold (so
 * pinned keys cannot be displaced by fetched ones). Either may be NULL. The inputs stay the
 * caller's; the result is a new reference, NULL only when out of memory.
 */
struct jwt_keyset *jwt_keyset_merge(const struct jwt_keyset *first,
                                    const struct jwt_keyset *second);

/* Takes another reference (any thread); returns set. */
struct jwt_keyset *jwt_keyset_ref(struct jwt_keyset *set);

/* Drops a reference; the last one frees the set. NULL is fine. */
void jwt_keyset_unref(struct jwt_keyset *set);

/* Number of keys, and whether one has this kid. */
size_t jwt_keyset_count(const struct jwt_keyset *set);
int jwt_keyset_has_kid(const struct jwt_keyset *set, const char *kid);

/*
 * A verified compact JWS: the key's algorithm and kid and the decoded payload (not yet parsed,
 * not necessarily JSON). jwt_jws_clear frees the payload.
 */
struct jwt_jws {
    enum jwt_alg alg;
    char kid[JWT_KID_MAX + 1]; /* "" when the token named none */
    unsigned char *payload;
    size_t payload_len;
};

/*
 * Verifies the signature of a compact JWS (header.payload.signature) and its protected
 * header, without reading the payload. The checks, in order: at most JWT_MAX_TOKEN_LEN bytes;
 * three non-empty strict base64url segments; a header that is a JSON object without
 * duplicate members; alg RS256 or ES256 (none, HS*, anything else: JWT_BAD_HEADER); no jku,
 * x5u, jwk, x5c or crit (no extension is understood); typ, when present, JWT or at+jwt
 * (optionally "application/", any case); no cty (nested tokens are not accepted); kid, when
 * present, 1 to JWT_KID_MAX printable ASCII bytes; a key with that kid (JWT_UNKNOWN_KEY) or,
 * without a kid, the set's only key; the token's alg equal to the key's; the signature.
 * keys may be NULL: no key is trusted. On JWT_OK the caller clears out; otherwise out is left
 * empty. *why (may be NULL) gets a static string that never contains token text.
 */
enum jwt_result jwt_jws_verify(const struct jwt_keyset *keys, const char *token, size_t len,
                               struct jwt_jws *out, const char **why);

void jwt_jws_clear(struct jwt_jws *jws);

/*
 * What a token must satisfy beyond its signature. Strings are borrowed for the call; a zero
 * leeway or lifetime takes the default.
 */
struct jwt_policy {
    const char *issuer;     /* iss must equal it */
    const char *audience;   /* aud (a string, or an array of strings) must contain it */
    int64_t leeway_s;       /* clock skew allowed on exp, nbf, iat [60] */
    int64_t max_lifetime_s; /* exp - iat and exp - nbf at most, and exp - now at most this
                               plus the leeway [900] */
};

/* The identity a valid token carries. */
struct jwt_claims {
    char sub[JWT_SUB_MAX + 1];
    enum jwt_role role;
    char factory_id[UUID_STR_LEN + 1]; /* lower case; "" for an admin */
    int64_t iat, nbf, exp;             /* seconds since the epoch; iat and nbf 0 when absent */
    enum jwt_alg alg;                  /* how it was signed */
    char kid[JWT_KID_MAX + 1];         /* by which key ("" when the token named none) */
};

/*
 * Verifies a token (jwt_jws_verify) and then its claims, the payload parsed as a JSON object
 * with duplicate members refused: iss and aud as the policy says; exp required, an integer,
 * not passed by more than the leeway; nbf and iat optional integers not in the future by more
 * than the leeway; the lifetime limits; sub a non-empty string of at most JWT_SUB_MAX bytes
 * without control characters; role one of the three; factory_id a UUID for factory_user and
 * viewer, absent for admin. Other claims (jti, scope, ...) are ignored. now_s is the caller's
 * clock (seconds since the epoch). *out is filled on JWT_OK and zeroed otherwise; *why as for
 * jwt_jws_verify.
 */
enum jwt_result jwt_verify(const struct jwt_keyset *keys, const struct jwt_policy *policy,
                           const char *token, size_t len, int64_t now_s, struct jwt_claims *out,
                           const char **why);

/*
 * The service's own signing key (POST /v1/auth/token). RS256 by default: a 2048-bit RSA
 * signature costs about 1 ms once per token while its verification, done on every request,
 * is three to four times cheaper than an ES256 one; a P-256 key file gives ES256 tokens,
 * which are smaller. The kid is the key's RFC 7638 thumbprint, stable across restarts.
 * Usable from several threads at once.
 */
struct jwt_signer;

/*
 * Loads the PEM private key at path (PKCS#8 or traditional, RSA of 2048 bits or more, or EC
 * P-256), which must not be readable or writable by group or others. When the file does not
 * exist, generates a key for alg (RS256: RSA-2048; ES256: P-256; an existing file decides
 * the algorithm itself) and writes it with mode
 * 0600 through a temporary file and link(2), so two processes starting together end up with
 * the same key. Blocking file I/O and, on creation, up to a second of key generation: call at
 * start. NULL with a message in err on failure.
 */
struct jwt_signer *jwt_signer_load_or_create(const char *path, enum jwt_alg alg, char *err,
                                             size_t errlen);

void jwt_signer_free(struct jwt_signer *s);

enum jwt_alg jwt_signer_alg(const struct jwt_signer *s);
const char *jwt_signer_kid(const struct jwt_signer *s); /* borrowed from s */

/*
 * Signs a token for c: header {alg, kid, typ "JWT"}, claims iss and aud from the policy, sub,
 * role, factory_id (only for the factory roles), iat, nbf (= iat), exp, and a random jti.
 * c must pass the checks jwt_verify makes (role and factory_id, 0 < exp - iat <= the policy's
 * maximum lifetime), so the service never issues a token it would refuse. Returns the
 * compact token, a string the caller frees, or NULL with a message in err.
 */
char *jwt_sign(const struct jwt_signer *s, const struct jwt_policy *policy,
               const struct jwt_claims *c, char *err, size_t errlen);

/*
 * The public JWKS of the signer, for GET /.well-known/jwks.json:
 * {"keys":[{"kty","use":"sig","alg","kid", and n,e or crv,x,y}]}. Caller frees; NULL when
 * out of memory.
 */
char *jwt_signer_jwks_json(const struct jwt_signer *s);

#endif
