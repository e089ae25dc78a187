/* Unit tests of utf8: every boundary of a well-formed character, and truncation. */
#include "support.h"
#include "utf8.h"

#include <stdint.h>
#include <string.h>

static void test_well_formed(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
    } ok[] = {
        {"a", 1},
        {"\x7f", 1},
        {"\xc2\x80", 2},
        {"\xdf\xbf", 2},
        {"\xe0\xa0\x80", 3},
        {"\xed\x9f\xbf", 3},
        {"\xee\x80\x80", 3},
        {"\xef\xbf\xbf", 3},
        {"\xf0\x90\x80\x80", 4},
        {"\xf4\x8f\xbf\xbf", 4},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(utf8_char_len(ok[i].s, strlen(ok[i].s)), ok[i].len);
        assert_int_equal(utf8_char_len(ok[i].s, SIZE_MAX), ok[i].len);
    }
}

static void test_ill_formed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x80",             /* a lone continuation byte */
        "\xc0\xaf",         /* overlong */
        "\xc1\xbf",         /* overlong */
        "\xe0\x9f\xbf",     /* overlong */
        "\xed\xa0\x80",     /* a surrogate */
        "\xed\xbf\xbf",     /* a surrogate */
        "\xf0\x8f\xbf\xbf", /* overlong */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80",
        "\xff",
        "\xc2\x41",
        "\xe2\x82",
        "\xf0\x9f\x98",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(utf8_char_len(bad[i], SIZE_MAX), 0);
    /* Truncated by avail, whatever follows. */
    assert_int_equal(utf8_char_len("\xe2\x82\xac", 2), 0);
    assert_int_equal(utf8_char_len("\xe2\x82\xac", 3), 3);
    assert_int_equal(utf8_char_len("a", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_ill_formed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
