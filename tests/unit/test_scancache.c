/* scancache: the value of tp:anchor written by tagproof-anchor and read back by the scan path. */
#include "support.h"

#include "scancache.h"

#include <string.h>

static void test_anchor_round_trip(void **state)
{
    char buf[256], key[64];
    int64_t size = 0;
    const char *ref = NULL;
    size_t len = 0;
    (void)state;

    const char *tx = "0x5c2d0e1f8a9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
    int n = scancache_anchor_format(buf, sizeof(buf), 1024, tx);
    assert_int_equal(n, (int)strlen("1024 ") + (int)strlen(tx));
    assert_int_equal(scancache_anchor_parse(buf, (size_t)n, &size, &ref, &len), 0);
    assert_int_equal(size, 1024);
    assert_int_equal(len, strlen(tx));
    assert_memory_equal(ref, tx, len);

    /* What cannot be written: no size, no reference, blanks, control bytes, too long. */
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 0, "x"), -1);
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 5, ""), -1);
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 5, NULL), -1);
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 5, "a b"), -1);
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 5, "a\n"), -1);
    assert_int_equal(scancache_anchor_format(buf, 4, 5, "abc"), -1);
    char longref[SCANCACHE_LEDGER_REF_MAX + 2];
    memset(longref, 'a', sizeof(longref) - 1);
    longref[sizeof(longref) - 1] = '\0';
    assert_int_equal(scancache_anchor_format(buf, sizeof(buf), 5, longref), -1);
    longref[SCANCACHE_LEDGER_REF_MAX] = '\0';
    assert_true(scancache_anchor_format(buf, sizeof(buf), 5, longref) > 0);

    /* What is not read as an anchor: it then shows as pending. */
    static const char *const bad[] = {"",       "1024",     "1024 ",  " abc",
                                      "0 abc",  "-1 abc",   "01 abc", "1e3 abc",
                                      "12 a b", "12 a\x7f", "x abc",  "1234567890123456789 abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(scancache_anchor_parse(bad[i], strlen(bad[i]), &size, &ref, &len), -1);

    /* Not NUL-terminated: only len bytes count. */
    assert_int_equal(scancache_anchor_parse("7 abcdef", 5, &size, &ref, &len), 0);
    assert_int_equal(size, 7);
    assert_int_equal(len, 3);

    scancache_tag_key(key, sizeof(key), "7c9e6679-7425-40de-944b-e07fc1f90ae7");
    assert_string_equal(key, "tp:t:7c9e6679-7425-40de-944b-e07fc1f90ae7");
}

static void test_counts(void **state)
{
    int64_t v = -1;
    (void)state;
    assert_int_equal(scancache_parse_count("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(scancache_parse_count("123456789012345678", 18, &v), 0);
    assert_int_equal(v, 123456789012345678);
    assert_int_equal(scancache_parse_count("1234567890123456789", 19, &v), -1);
    assert_int_equal(scancache_parse_count("", 0, &v), -1);
    assert_int_equal(scancache_parse_count("007", 3, &v), -1);
    assert_int_equal(scancache_parse_count("-1", 2, &v), -1);
    assert_int_equal(scancache_parse_count("+1", 2, &v), -1);
    assert_int_equal(scancache_parse_count("1 ", 2, &v), -1);
    assert_int_equal(scancache_parse_count(NULL, 0, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_anchor_round_trip),
                                       cmocka_unit_test(test_counts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
