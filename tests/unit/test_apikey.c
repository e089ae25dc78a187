/*
 * Unit tests of apikey: the key's format, strict parsing (prefix, length, alphabet, case),
 * the hash of the secret (checked against sha256sum), generated keys that differ and look
 * random, and the constant-time comparison's refusal of stored hashes of the wrong length.
 */
#include "support.h"
#include "apikey.h"

#include <stdio.h>
#include <string.h>

/* A well-formed key with a chosen id and secret. */
static void make_key(char out[APIKEY_LEN + 1], const char *id, const char *secret)
{
    snprintf(out, APIKEY_LEN + 1, "%s%s_%s", APIKEY_PREFIX, id, secret);
}

static const char secret_digits[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/* `printf 0123456789abcdef0123...cdef | sha256sum` */
static const unsigned char secret_digits_sha256[APIKEY_HASH_LEN] = {
    0xa8, 0xae, 0x6e, 0x6e, 0xe9, 0x29, 0xab, 0xea, 0x3a, 0xfc, 0xfc, 0x52, 0x58, 0xc8, 0xcc, 0xd6,
    0xf8, 0x52, 0x73, 0xe0, 0xd4, 0x62, 0x6d, 0x26, 0xc7, 0x27, 0x9f, 0x32, 0x50, 0xf7, 0x7c, 0x8e};
/* `printf '%064d' 0 | sha256sum` */
static const unsigned char zeros_sha256[APIKEY_HASH_LEN] = {
    0x60, 0xe0, 0x5b, 0xd1, 0xb1, 0x95, 0xaf, 0x2f, 0x94, 0x11, 0x2f, 0xa7, 0x19, 0x7a, 0x5c, 0x88,
    0x28, 0x90, 0x58, 0x84, 0x0c, 0xe7, 0xc6, 0xdf, 0x96, 0x93, 0x75, 0x6b, 0xc6, 0x25, 0x0f, 0x55};

static int is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_generated_key_format(void **state)
{
    (void)state;
    struct apikey k;
    const size_t plen = strlen(APIKEY_PREFIX);

    assert_int_equal(APIKEY_LEN, 8 + 16 + 1 + 64);
    assert_int_equal(apikey_generate(&k), 0);
    assert_int_equal(strlen(k.key), APIKEY_LEN);
    assert_memory_equal(k.key, "tp_live_", plen);
    assert_int_equal(strlen(k.id), APIKEY_ID_LEN);
    for (size_t i = 0; i < APIKEY_ID_LEN; i++)
        assert_true(is_id_char(k.id[i]));
    assert_memory_equal(k.key + plen, k.id, APIKEY_ID_LEN);
    assert_int_equal(k.key[plen + APIKEY_ID_LEN], '_');
    for (size_t i = plen + APIKEY_ID_LEN + 1; i < APIKEY_LEN; i++)
        assert_true(is_hex_lower(k.key[i]));
    /* The prefix is the key up to its id: what may be shown again, never the secret. */
    assert_int_equal(strlen(k.prefix), plen + APIKEY_ID_LEN);
    assert_memory_equal(k.prefix, k.key, plen + APIKEY_ID_LEN);

    /* What the generator says it stored is what parsing the key finds. */
    char id[APIKEY_ID_LEN + 1];
    unsigned char hash[APIKEY_HASH_LEN];
    assert_int_equal(apikey_parse(k.key, id, hash), 0);
    assert_string_equal(id, k.id);
    assert_memory_equal(hash, k.hash, APIKEY_HASH_LEN);
}

/* The stored hash is SHA-256 of the 64 hex characters of the secret, nothing else. */
static void test_hash_is_sha256_of_secret(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], zeros[APIKEY_SECRET_LEN + 1], id[APIKEY_ID_LEN + 1];
    unsigned char hash[APIKEY_HASH_LEN];

    make_key(key, "abcdefghij012345", secret_digits);
    assert_int_equal(apikey_parse(key, id, hash), 0);
    assert_string_equal(id, "abcdefghij012345");
    assert_memory_equal(hash, secret_digits_sha256, APIKEY_HASH_LEN);

    memset(zeros, '0', APIKEY_SECRET_LEN);
    zeros[APIKEY_SECRET_LEN] = '\0';
    make_key(key, "0000000000000000", zeros);
    assert_int_equal(apikey_parse(key, id, hash), 0);
    assert_memory_equal(hash, zeros_sha256, APIKEY_HASH_LEN);

    /* The id is not part of what is hashed: the same secret under another id, same hash. */
    make_key(key, "zzzzzzzzzzzzzzzz", zeros);
    assert_int_equal(apikey_parse(key, id, hash), 0);
    assert_memory_equal(hash, zeros_sha256, APIKEY_HASH_LEN);
}

static void test_parse_rejects_malformed(void **state)
{
    (void)state;
    char good[APIKEY_LEN + 1], buf[APIKEY_LEN + 64];
    char id[APIKEY_ID_LEN + 1];
    unsigned char hash[APIKEY_HASH_LEN];
    const size_t plen = strlen(APIKEY_PREFIX), sec = plen + APIKEY_ID_LEN + 1;

    make_key(good, "abcdefghij012345", secret_digits);
    assert_int_equal(apikey_parse(good, id, hash), 0);

    const char *whole[] = {
        "",
        "tp_live_",
        "tp_live_abcdefghij012345",
        "tp_live_abcdefghij012345_",
        /* wrong prefixes */
        "tp_test_abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "TP_LIVE_abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "xp_live_abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "tp-live-abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        /* separator */
        "tp_live_abcdefghij012345-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        /* id of 15 and secret of 65, same total length */
        "tp_live_abcdefghij01234_50123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        /* id of 17 and secret of 63 */
        "tp_live_abcdefghij0123456_123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        /* Bearer-style and whitespace */
        " tp_live_abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        "tp_live_abcdefghij012345_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde ",
    };
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++) {
        memset(id, 'x', sizeof(id));
        if (apikey_parse(whole[i], id, hash) == 0)
            fail_msg("accepted: \"%s\"", whole[i]);
    }
    assert_int_equal(apikey_parse(NULL, id, hash), -1);

    /* One byte too short, one too long, and a trailing newline. */
    memcpy(buf, good, APIKEY_LEN - 1);
    buf[APIKEY_LEN - 1] = '\0';
    assert_int_equal(apikey_parse(buf, id, hash), -1);
    snprintf(buf, sizeof(buf), "%s0", good);
    assert_int_equal(apikey_parse(buf, id, hash), -1);
    snprintf(buf, sizeof(buf), "%s\n", good);
    assert_int_equal(apikey_parse(buf, id, hash), -1);

    /* Every position of the id and secret, with characters outside its alphabet. */
    const char not_id[] = {'A', 'Z', '_', '-', '.', ' ', '/', '%', '\x80', '\xff', '\t'};
    for (size_t pos = plen; pos < plen + APIKEY_ID_LEN; pos++)
        for (size_t j = 0; j < sizeof(not_id); j++) {
            memcpy(buf, good, APIKEY_LEN + 1);
            buf[pos] = not_id[j];
            if (apikey_parse(buf, id, hash) == 0)
                fail_msg("accepted id byte 0x%02x at %zu", (unsigned char)not_id[j], pos);
        }
    const char not_hex[] = {'A', 'F', 'g', 'z', 'G', '_', ' ', '+', '=', '\x80', '\xff'};
    for (size_t pos = sec; pos < APIKEY_LEN; pos++)
        for (size_t j = 0; j < sizeof(not_hex); j++) {
            memcpy(buf, good, APIKEY_LEN + 1);
            buf[pos] = not_hex[j];
            if (apikey_parse(buf, id, hash) == 0)
                fail_msg("accepted secret byte 0x%02x at %zu", (unsigned char)not_hex[j], pos);
        }
    /* A NUL inside: the key is shorter than it looks. */
    memcpy(buf, good, APIKEY_LEN + 1);
    buf[sec + 10] = '\0';
    assert_int_equal(apikey_parse(buf, id, hash), -1);

    /* An upper-case copy of a real key is another string, not the same key. */
    memcpy(buf, good, APIKEY_LEN + 1);
    for (size_t i = plen; i < APIKEY_LEN; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (char)(buf[i] - 'a' + 'A');
    assert_int_equal(apikey_parse(buf, id, hash), -1);
}

static void test_hash_matches(void **state)
{
    (void)state;
    struct apikey k;
    char key[APIKEY_LEN + 1], id[APIKEY_ID_LEN + 1];
    unsigned char hash[APIKEY_HASH_LEN], longer[APIKEY_HASH_LEN + 1];

    assert_int_equal(apikey_generate(&k), 0);
    assert_int_equal(apikey_parse(k.key, id, hash), 0);
    assert_true(apikey_hash_matches(k.hash, APIKEY_HASH_LEN, hash));

    /* Another secret under the same id: every single-character change is refused. */
    const size_t sec = strlen(APIKEY_PREFIX) + APIKEY_ID_LEN + 1;
    for (size_t pos = sec; pos < APIKEY_LEN; pos++) {
        memcpy(key, k.key, sizeof(key));
        key[pos] = key[pos] == '0' ? '1' : '0';
        assert_int_equal(apikey_parse(key, id, hash), 0);
        assert_false(apikey_hash_matches(k.hash, APIKEY_HASH_LEN, hash));
    }

    /* A stored hash of the wrong length never matches, even when its bytes agree. */
    assert_int_equal(apikey_parse(k.key, id, hash), 0);
    memcpy(longer, k.hash, APIKEY_HASH_LEN);
    longer[APIKEY_HASH_LEN] = 0;
    assert_false(apikey_hash_matches(longer, APIKEY_HASH_LEN + 1, hash));
    assert_false(apikey_hash_matches(k.hash, APIKEY_HASH_LEN - 1, hash));
    assert_false(apikey_hash_matches(k.hash, 16, hash));
    assert_false(apikey_hash_matches(k.hash, 0, hash));
    assert_false(apikey_hash_matches(NULL, APIKEY_HASH_LEN, hash));
    assert_false(apikey_hash_matches(NULL, 0, hash));

    /* Each byte of the stored hash counts. */
    for (size_t i = 0; i < APIKEY_HASH_LEN; i++) {
        unsigned char stored[APIKEY_HASH_LEN];
        memcpy(stored, k.hash, sizeof(stored));
        stored[i] ^= 0x01;
        assert_false(apikey_hash_matches(stored, sizeof(stored), hash));
    }
}

/*
 * Generated keys are distinct, and their ids and secrets look random: over many keys every
 * id character and every hex digit turns up at every position, and the bits of the secrets
 * are balanced. Sanity checks of the use of the generator, not a test of the generator.
 */
#define NKEYS 2000
static void test_generate_unique_and_spread(void **state)
{
    (void)state;
    static struct apikey keys[NKEYS];
    static unsigned id_seen[APIKEY_ID_LEN][36], hex_seen[APIKEY_SECRET_LEN][16];
    const size_t sec = strlen(APIKEY_PREFIX) + APIKEY_ID_LEN + 1;
    unsigned long ones = 0;

    memset(id_seen, 0, sizeof(id_seen));
    memset(hex_seen, 0, sizeof(hex_seen));
    for (size_t i = 0; i < NKEYS; i++) {
        assert_int_equal(apikey_generate(&keys[i]), 0);
        for (size_t p = 0; p < APIKEY_ID_LEN; p++) {
            char c = keys[i].id[p];
            id_seen[p][c >= 'a' ? c - 'a' : 26 + c - '0']++;
        }
        for (size_t p = 0; p < APIKEY_SECRET_LEN; p++) {
            char c = keys[i].key[sec + p];
            unsigned v = (unsigned)(c >= 'a' ? c - 'a' + 10 : c - '0');
            hex_seen[p][v]++;
            ones += (unsigned long)__builtin_popcount(v);
        }
    }
    for (size_t i = 0; i < NKEYS; i++)
        for (size_t j = i + 1; j < NKEYS; j++) {
            assert_string_not_equal(keys[i].id, keys[j].id);
            assert_memory_not_equal(keys[i].key + sec, keys[j].key + sec, APIKEY_SECRET_LEN);
            assert_memory_not_equal(keys[i].hash, keys[j].hash, APIKEY_HASH_LEN);
        }
    /* About 55 of each id character per position, 125 of each hex digit: none may be missing. */
    for (size_t p = 0; p < APIKEY_ID_LEN; p++)
        for (size_t c = 0; c < 36; c++)
            if (id_seen[p][c] == 0)
                fail_msg("id position %zu never had character %zu", p, c);
    for (size_t p = 0; p < APIKEY_SECRET_LEN; p++)
        for (size_t c = 0; c < 16; c++)
            if (hex_seen[p][c] == 0)
                fail_msg("secret position %zu never had digit %zx", p, c);
    /* 512,000 bits: a fair source stays within a few hundred of half (sd ~358). */
    const unsigned long bits = (unsigned long)NKEYS * APIKEY_SECRET_LEN * 4;
    printf("# %lu of %lu secret bits set\n", ones, bits);
    assert_true(ones > bits / 2 - 3000 && ones < bits / 2 + 3000);
    memset(keys, 0, sizeof(keys));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generated_key_format),
        cmocka_unit_test(test_hash_is_sha256_of_secret),
        cmocka_unit_test(test_parse_rejects_malformed),
        cmocka_unit_test(test_hash_matches),
        cmocka_unit_test(test_generate_unique_and_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
