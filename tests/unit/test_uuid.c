/* Unit tests of uuid: strict canonical parsing, lower-case output, v4/v7 bits. */
#include "support.h"
#include "uuid.h"

#include <string.h>

static void test_parse_accepts_canonical_any_case(void **state)
{
    (void)state;
    const char *ok[] = {
        "7c9e6679-7425-40de-944b-e07fc1f90ae7", "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
        "7c9E6679-7425-40dE-944b-E07fc1f90Ae7", "00000000-0000-0000-0000-000000000000"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char out[UUID_STR_LEN + 1];
        assert_int_equal(uuid_canonical(ok[i], strlen(ok[i]), out), 0);
        for (size_t j = 0; j < UUID_STR_LEN; j++)
            assert_false(out[j] >= 'A' && out[j] <= 'F');
        assert_int_equal(strcasecmp(out, ok[i]), 0);
    }
}

static void test_parse_rejects_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "{7c9e6679-7425-40de-944b-e07fc1f90ae7}",
        "7c9e6679742540de944be07fc1f90ae7",
        " 7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7 ",
        "7c9e6679-7425-40de-944b-e07fc1f90ae",
        "7c9e6679-7425-40de-944b-e07fc1f90ae77",
        "7c9e667-97425-40de-944b-e07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90ag7",
        "7c9e6679_7425_40de_944b_e07fc1f90ae7",
        "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90a\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t raw[16];
        assert_int_equal(uuid_parse(bad[i], strlen(bad[i]), raw), -1);
    }
    /* An embedded NUL inside the 36 bytes is not a UUID either. */
    char nul[UUID_STR_LEN] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    nul[3] = '\0';
    uint8_t raw[16];
    assert_int_equal(uuid_parse(nul, sizeof(nul), raw), -1);
}

static void test_roundtrip_and_versions(void **state)
{
    (void)state;
    uint8_t a[16], b[16];
    char s[UUID_STR_LEN + 1];
    assert_int_equal(uuid_v4(a), 0);
    assert_int_equal(a[6] >> 4, 4);
    assert_int_equal(a[8] >> 6, 2);
    uuid_format(a, s);
    assert_int_equal(strlen(s), UUID_STR_LEN);
    assert_int_equal(uuid_parse(s, strlen(s), b), 0);
    assert_memory_equal(a, b, 16);

    uint8_t first[16], second[16];
    assert_int_equal(uuid_v7(first), 0);
    assert_int_equal(uuid_v7(second), 0);
    assert_int_equal(first[6] >> 4, 7);
    /* The 48-bit millisecond prefix never goes backwards. */
    assert_true(memcmp(first, second, 6) <= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts_canonical_any_case),
        cmocka_unit_test(test_parse_rejects_everything_else),
        cmocka_unit_test(test_roundtrip_and_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
