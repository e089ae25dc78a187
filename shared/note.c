/*
 * note: C2SP signed notes with Ed25519 and tlog-checkpoint bodies (see note.h).
 *
 * The key id is the first four bytes of SHA-256(name || "\n" || 0x01 || public key), 0x01
 * being the Ed25519 signature type; a signature line carries base64(key id || signature).
 */
#include "note.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "keyfile.h"

#define ALG_ED25519 0x01
#define SIG_PREFIX "\xe2\x80\x94 " /* "— ", U+2014 and a space */

struct note_signer {
    EVP_PKEY *pkey;
    char name[NOTE_NAME_MAX + 1];
    uint8_t key_id[4];
    char vkey[NOTE_VKEY_MAX + 1];
};

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NOTE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        /* No blanks, no controls, no '+' (the key text's separator). */
        if (c <= ' ' || c == 0x7f || c == '+')
            return 0;
    }
    return 1;
}

static void key_id_of(const char *name, const uint8_t pub[32], uint8_t out[4])
{
    uint8_t md[32];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const uint8_t sep = '\n', alg = ALG_ED25519;

    memset(out, 0, 4);
    if (ctx == NULL)
        return;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, name, strlen(name)) == 1 && EVP_DigestUpdate(ctx, &sep, 1) == 1 &&
        EVP_DigestUpdate(ctx, &alg, 1) == 1 && EVP_DigestUpdate(ctx, pub, 32) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &n) == 1)
        memcpy(out, md, 4);
    EVP_MD_CTX_free(ctx);
}

/* Standard base64 with padding; out must hold 4 * ((n + 2) / 3) + 1 bytes. */
static void b64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Strict standard base64 (with padding) of len characters into out (cap bytes). -1 if not. */
static int unb64(const char *s, size_t len, uint8_t *out, size_t cap, size_t *n)
{
    uint8_t *buf = NULL;
    size_t pad = 0;
    int got;

    if (len == 0 || len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/';
        if (c == '=' && i >= len - 2) {
            pad++;
            continue;
        }
        if (!ok || pad > 0)
            return -1;
    }
    buf = malloc(len / 4 * 3 + 1);
    if (buf == NULL)
        return -1;
    got = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
    if (got < 0 || (size_t)got < pad || (size_t)got - pad > cap) {
        free(buf);
        return -1;
    }
    *n = (size_t)got - pad;
    memcpy(out, buf, *n);
    free(buf);
    /* Non-canonical encodings (stray bits in the last character) are refused. */
    char *again = malloc(len + 1);
    int same = 0;
    if (again != NULL) {
        b64(out, *n, again);
        same = strlen(again) == len && memcmp(again, s, len) == 0;
        free(again);
    }
    return same ? 0 : -1;
}

static struct note_signer *signer_from_pkey(const char *name, EVP_PKEY *pkey)
{
    struct note_signer *s = NULL;
    uint8_t pub[32], blob[33];
    size_t publen = sizeof(pub);
    char b[48];

    if (!name_ok(name) || EVP_PKEY_get_raw_public_key(pkey, pub, &publen) != 1 || publen != 32)
        goto fail;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto fail;
    s->pkey = pkey;
    snprintf(s->name, sizeof(s->name), "%s", name);
    key_id_of(name, pub, s->key_id);
    blob[0] = ALG_ED25519;
    memcpy(blob + 1, pub, 32);
    b64(blob, sizeof(blob), b);
    snprintf(s->vkey, sizeof(s->vkey), "%s+%02x%02x%02x%02x+%s", name, s->key_id[0], s->key_id[1],
             s->key_id[2], s->key_id[3], b);
    return s;
fail:
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    return NULL;
}

struct note_signer *note_signer_from_seed(const char *name, const uint8_t seed[32])
{
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    return pkey != NULL ? signer_from_pkey(name, pkey) : NULL;
}

static EVP_PKEY *generate_ed25519(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
}

struct note_signer *note_signer_load_or_create(const char *path, const char *name, char *err,
                                               size_t errlen)
{
    struct note_signer *s;
    EVP_PKEY *pkey;

    if (!name_ok(name)) {
        snprintf(err, errlen, "the log's name must be 1 to %d characters without blanks or '+'",
                 NOTE_NAME_MAX);
        return NULL;
    }
    pkey = keyfile_load_or_create(path, generate_ed25519, err, errlen);
    if (pkey == NULL)
        return NULL;
    if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519) {
        snprintf(err, errlen, "the key %s is not an Ed25519 key", path);
        EVP_PKEY_free(pkey);
        return NULL;
    }
    s = signer_from_pkey(name, pkey);
    if (s == NULL)
        snprintf(err, errlen, "cannot use the key %s", path);
    return s;
}

void note_signer_free(struct note_signer *s)
{
    if (s == NULL)
        return;
    EVP_PKEY_free(s->pkey);
    free(s);
}

const char *note_signer_vkey(const struct note_signer *s)
{
    return s->vkey;
}

/* A note's text: non-empty, ends in a newline, no blank line inside, valid UTF-8 is the
 * writer's business (we only sign what we build). */
static int text_ok(const char *text, size_t len)
{
    if (len == 0 || text[len - 1] != '\n' || memchr(text, '\0', len) != NULL)
        return 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (text[i] == '\n' && text[i + 1] == '\n')
            return 0;
    return text[0] != '\n';
}

char *note_sign(const struct note_signer *s, const char *text, size_t len)
{
    uint8_t blob[4 + 64];
    size_t siglen = 64;
    char sig64[4 * ((sizeof(blob) + 2) / 3) + 1];
    char *out = NULL;
    EVP_MD_CTX *ctx = NULL;

    if (!text_ok(text, len))
        return NULL;
    ctx = EVP_MD_CTX_new();
    memcpy(blob, s->key_id, 4);
    /* Ed25519 signs the message itself: no digest is configured. */
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->pkey) != 1 ||
        EVP_DigestSign(ctx, blob + 4, &siglen, (const unsigned char *)text, len) != 1 ||
        siglen != 64)
        goto out;
    b64(blob, sizeof(blob), sig64);
    if (asprintf(&out, "%.*s\n" SIG_PREFIX "%s %s\n", (int)len, text, s->name, sig64) < 0)
        out = NULL;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    return out;
}

struct vkey {
    char name[NOTE_NAME_MAX + 1];
    uint8_t key_id[4];
    uint8_t pub[32];
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int vkey_parse(const char *text, struct vkey *out)
{
    const char *p1 = strchr(text, '+'), *p2;
    uint8_t blob[33], id[4];
    size_t n = 0, nlen;

    if (p1 == NULL || (p2 = strchr(p1 + 1, '+')) == NULL || p2 - p1 - 1 != 8)
        return -1;
    nlen = (size_t)(p1 - text);
    if (nlen == 0 || nlen > NOTE_NAME_MAX)
        return -1;
    memcpy(out->name, text, nlen);
    out->name[nlen] = '\0';
    if (!name_ok(out->name))
        return -1;
    for (int i = 0; i < 4; i++) {
        int hi = hexval(p1[1 + 2 * i]), lo = hexval(p1[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        out->key_id[i] = (uint8_t)(hi << 4 | lo);
    }
    if (unb64(p2 + 1, strlen(p2 + 1), blob, sizeof(blob), &n) != 0 || n != 33 ||
        blob[0] != ALG_ED25519)
        return -1;
    memcpy(out->pub, blob + 1, 32);
    /* The id must be the one the name and key give. */
    key_id_of(out->name, out->pub, id);
    return memcmp(id, out->key_id, 4) == 0 ? 0 : -1;
}

static int ed25519_verify(const uint8_t pub[32], const char *msg, size_t len, const uint8_t sig[64])
{
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = pkey != NULL && ctx != NULL &&
             EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)msg, len) == 1;
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return ok ? 0 : -1;
}

/*
 * The last note this thread verified, with its key, byte for byte. A server that proves
 * inclusions checks the same checkpoint's signature on every answer until the next checkpoint
 * (factory-api/proofs.c); verification is deterministic, so the very same bytes need not cost
 * an Ed25519 verification twice. Only a success is remembered, and only an exact match of both
 * key and note reuses it.
 */
static _Thread_local struct {
    size_t vkey_len, note_len, text_len;
    char vkey[256];
    char note[2048];
} memo;

static int memo_hit(const char *vkey, size_t vkey_len, const char *note, size_t len)
{
    return memo.note_len == len && memo.vkey_len == vkey_len && len > 0 &&
           memcmp(memo.note, note, len) == 0 && memcmp(memo.vkey, vkey, vkey_len) == 0;
}

static void memo_keep(const char *vkey, size_t vkey_len, const char *note, size_t len,
                      size_t text_len)
{
    if (vkey_len > sizeof(memo.vkey) || len > sizeof(memo.note))
        return;
    memcpy(memo.vkey, vkey, vkey_len);
    memcpy(memo.note, note, len);
    memo.vkey_len = vkey_len;
    memo.note_len = len;
    memo.text_len = text_len;
}

int note_verify(const char *vkey, const char *note, size_t len, size_t *text_len)
{
    struct vkey k;
    size_t split = 0, pos;
    const size_t plen = sizeof(SIG_PREFIX) - 1;
    int found = 0;

    if (vkey != NULL && note != NULL && memo_hit(vkey, strlen(vkey), note, len)) {
        if (text_len != NULL)
            *text_len = memo.text_len;
        return 0;
    }
    if (vkey == NULL || vkey_parse(vkey, &k) != 0 || note == NULL || len < 2 ||
        memchr(note, '\0', len) != NULL || note[len - 1] != '\n')
        return -1;
    /* The text ends at the last blank line; signature lines follow it. */
    for (size_t i = len - 1; i > 0; i--) {
        if (note[i - 1] == '\n' && note[i] == '\n') {
            split = i;
            break;
        }
    }
    if (split == 0 || !text_ok(note, split))
        return -1;
    for (pos = split + 1; pos < len;) {
        const char *line = note + pos, *eol = memchr(line, '\n', len - pos);
        size_t llen = (size_t)(eol - line), nlen;
        const char *sp;
        uint8_t blob[4 + 64 + 1];
        size_t n = 0;

        /* Every line must be a well-formed signature line, whoever signed it. */
        if (llen < plen || memcmp(line, SIG_PREFIX, plen) != 0)
            return -1;
        sp = memchr(line + plen, ' ', llen - plen);
        if (sp == NULL)
            return -1;
        nlen = (size_t)(sp - line - (ptrdiff_t)plen);
        if (unb64(sp + 1, (size_t)(eol - sp - 1), blob, sizeof(blob), &n) != 0 || n < 5)
            return -1;
        if (nlen == strlen(k.name) && memcmp(line + plen, k.name, nlen) == 0 && n == 68 &&
            memcmp(blob, k.key_id, 4) == 0 && ed25519_verify(k.pub, note, split, blob + 4) == 0)
            found = 1;
        pos += llen + 1;
    }
    if (!found)
        return -1;
    memo_keep(vkey, strlen(vkey), note, len, split);
    if (text_len != NULL)
        *text_len = split;
    return 0;
}

char *note_checkpoint_body(const char *origin, uint64_t size, const uint8_t root[NOTE_HASH_LEN])
{
    char r64[4 * ((NOTE_HASH_LEN + 2) / 3) + 1], *out = NULL;
    if (origin == NULL || *origin == '\0' || strchr(origin, '\n') != NULL)
        return NULL;
    b64(root, NOTE_HASH_LEN, r64);
    if (asprintf(&out, "%s\n%llu\n%s\n", origin, (unsigned long long)size, r64) < 0)
        return NULL;
    return out;
}

int note_checkpoint_parse(const char *text, size_t len, char *origin, size_t origin_cap,
                          uint64_t *size, uint8_t root[NOTE_HASH_LEN])
{
    const char *line[3], *end = text + len;
    size_t llen[3], n = 0;
    const char *p = text;
    char num[24];

    for (int i = 0; i < 3; i++) {
        const char *eol = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (eol == NULL)
            return -1;
        line[i] = p;
        llen[i] = (size_t)(eol - p);
        p = eol + 1;
    }
    if (llen[0] == 0 || llen[0] >= origin_cap || llen[1] == 0 || llen[1] >= sizeof(num))
        return -1;
    /* The size: decimal, no sign, no leading zero except "0". */
    memcpy(num, line[1], llen[1]);
    num[llen[1]] = '\0';
    if (strspn(num, "0123456789") != llen[1] || (num[0] == '0' && llen[1] > 1))
        return -1;
    char *e = NULL;
    unsigned long long v = strtoull(num, &e, 10);
    if (*e != '\0' || v > UINT64_MAX / 2)
        return -1;
    if (unb64(line[2], llen[2], root, NOTE_HASH_LEN, &n) != 0 || n != NOTE_HASH_LEN)
        return -1;
    memcpy(origin, line[0], llen[0]);
    origin[llen[0]] = '\0';
    *size = v;
    return 0;
}
