/*
 * note: the reference example of golang.org/x/mod/sumdb/note (the PeterNeumann key and note,
 * which Ed25519's determinism lets us reproduce byte for byte), verification's refusals, and
 * checkpoint bodies.
 */
#include "support.h"

#include "note.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char vkey_ref[] = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/* The signer key's base64 part: 0x01 || the Ed25519 seed. */
static const char skey_b64[] = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
static const char text_ref[] = "If you think cryptography is the answer to your problem,\n"
                               "then you don't know what your problem is.\n";
static const char note_ref[] =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\xe2\x80\x94 PeterNeumann "
    "x08go/ZJkuBS9UG/"
    "SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

static struct note_signer *peter(void)
{
    uint8_t raw[64];
    int n = EVP_DecodeBlock(raw, (const unsigned char *)skey_b64, (int)strlen(skey_b64));
    assert_true(n >= 33);
    assert_int_equal(raw[0], 1);
    struct note_signer *s = note_signer_from_seed("PeterNeumann", raw + 1);
    assert_non_null(s);
    return s;
}

static void test_reference_example(void **state)
{
    struct note_signer *s = peter();
    size_t tl = 0;
    (void)state;

    assert_string_equal(note_signer_vkey(s), vkey_ref);
    char *note = note_sign(s, text_ref, strlen(text_ref));
    assert_non_null(note);
    assert_string_equal(note, note_ref);
    assert_int_equal(note_verify(vkey_ref, note_ref, strlen(note_ref), &tl), 0);
    assert_int_equal(tl, strlen(text_ref));
    free(note);
    note_signer_free(s);
}

static void test_refusals(void **state)
{
    char buf[512];
    size_t n = strlen(note_ref);
    (void)state;

    /*
     * Any changed byte of the text or signature: refused, also right after the genuine note
     * verified (each thread remembers its last success: only the same bytes may reuse it).
     */
    for (size_t i = 0; i < n - 1; i++) {
        assert_int_equal(note_verify(vkey_ref, note_ref, n, NULL), 0);
        memcpy(buf, note_ref, n + 1);
        buf[i] ^= 0x01;
        assert_int_not_equal(note_verify(vkey_ref, buf, n, NULL), 0);
    }
    /* Any mangled verifier key: refused (every proper substring, every changed byte). */
    char k[sizeof(vkey_ref)];
    for (size_t i = 0; i < sizeof(vkey_ref) - 1; i++) {
        memcpy(k, vkey_ref, sizeof(vkey_ref));
        k[i]++;
        assert_int_not_equal(note_verify(k, note_ref, n, NULL), 0);
        for (size_t j = i + 1; j < sizeof(vkey_ref); j++) {
            if (i == 0 && j == sizeof(vkey_ref) - 1)
                continue;
            memcpy(k, vkey_ref + i, j - i);
            k[j - i] = '\0';
            assert_int_not_equal(note_verify(k, note_ref, n, NULL), 0);
        }
    }
    /* A prefix of a verified note (its signature line cut short): refused. */
    assert_int_equal(note_verify(vkey_ref, note_ref, n, NULL), 0);
    assert_int_not_equal(note_verify(vkey_ref, note_ref, n - 2, NULL), 0);
    /* Another key with the same name. */
    uint8_t seed[32] = {7};
    struct note_signer *other = note_signer_from_seed("PeterNeumann", seed);
    assert_int_not_equal(note_verify(note_signer_vkey(other), note_ref, n, NULL), 0);
    note_signer_free(other);
    /* No signature line, no blank line, a junk line among the signatures. */
    assert_int_not_equal(note_verify(vkey_ref, text_ref, strlen(text_ref), NULL), 0);
    snprintf(buf, sizeof(buf), "%s\njunk\n", text_ref);
    assert_int_not_equal(note_verify(vkey_ref, buf, strlen(buf), NULL), 0);
    snprintf(buf, sizeof(buf), "%sjunk\n", note_ref);
    assert_int_not_equal(note_verify(vkey_ref, buf, strlen(buf), NULL), 0);
    /* Unsignable texts. */
    struct note_signer *s = peter();
    assert_null(note_sign(s, "no newline", 10));
    assert_null(note_sign(s, "a\n\nb\n", 5));
    assert_null(note_sign(s, "", 0));
    note_signer_free(s);
    /* Names a key cannot have. */
    assert_null(note_signer_from_seed("two words", seed));
    assert_null(note_signer_from_seed("a+b", seed));
    assert_null(note_signer_from_seed("", seed));
}

static void test_checkpoint(void **state)
{
    uint8_t root[32], back[32];
    uint64_t size = 0;
    char origin[64];
    struct note_signer *s = peter();
    (void)state;

    for (int i = 0; i < 32; i++)
        root[i] = (uint8_t)i;
    char *body = note_checkpoint_body("tagproof.local/log", 1000, root);
    assert_non_null(body);
    assert_string_equal(body,
                        "tagproof.local/log\n1000\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    assert_int_equal(note_checkpoint_parse(body, strlen(body), origin, sizeof(origin), &size, back),
                     0);
    assert_string_equal(origin, "tagproof.local/log");
    assert_int_equal(size, 1000);
    assert_memory_equal(back, root, 32);
    /* Signed and verified as a note; extension lines are allowed. */
    char *note = note_sign(s, body, strlen(body));
    assert_int_equal(note_verify(note_signer_vkey(s), note, strlen(note), NULL), 0);
    free(note);
    const char *ext = "o\n5\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nextension\n";
    assert_int_equal(note_checkpoint_parse(ext, strlen(ext), origin, sizeof(origin), &size, back),
                     0);
    /* Malformed bodies. */
    const char *bad[] = {
        "o\n",
        "o\n1\n",
        "\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n01\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n-1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n",
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=\n",
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(
            note_checkpoint_parse(bad[i], strlen(bad[i]), origin, sizeof(origin), &size, back), 0);
    free(body);
    note_signer_free(s);
}

static void test_key_file(void **state)
{
    char dir[] = "/tmp/test_note.XXXXXX", path[256], err[256];
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/log.pem", dir);
    struct note_signer *a =
        note_signer_load_or_create(path, "tagproof.local/log", err, sizeof(err));
    assert_non_null(a);
    struct note_signer *b =
        note_signer_load_or_create(path, "tagproof.local/log", err, sizeof(err));
    assert_non_null(b);
    assert_string_equal(note_signer_vkey(a), note_signer_vkey(b)); /* reused, not regenerated */
    assert_int_equal(ts_sh("test \"$(stat -c %%a '%s')\" = 600", path), 0);
    note_signer_free(a);
    note_signer_free(b);
    assert_int_equal(ts_sh("chmod 644 '%s'", path), 0);
    assert_null(note_signer_load_or_create(path, "tagproof.local/log", err, sizeof(err)));
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(ts_sh("rm -rf '%s'", dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_example),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_checkpoint),
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
