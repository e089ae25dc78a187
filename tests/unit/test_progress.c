/* Unit tests of progress: the bar line's layout, amounts for people, and the plain summary. */
#include "support.h"
#include "progress.h"

#include <stdlib.h>
#include <string.h>

static void test_amounts(void **state)
{
    (void)state;
    char s[32];
    progress_amount(s, sizeof(s), PROGRESS_BYTES, 512);
    assert_string_equal(s, "512 B");
    progress_amount(s, sizeof(s), PROGRESS_BYTES, 1536);
    assert_string_equal(s, "1.5 KiB");
    progress_amount(s, sizeof(s), PROGRESS_BYTES, 37ull * 1024 * 1024);
    assert_string_equal(s, "37.0 MiB");
    progress_amount(s, sizeof(s), PROGRESS_BYTES, 3ull << 40);
    assert_string_equal(s, "3.0 TiB");
    progress_amount(s, sizeof(s), PROGRESS_ROWS, 1000000);
    assert_string_equal(s, "1000000");
}

static void test_bar_fits_the_terminal(void **state)
{
    (void)state;
    char s[512];
    size_t n = progress_format(s, sizeof(s), "upload", PROGRESS_BYTES, 512ull * 1024,
                               1024ull * 1024, 2.0, 79, NULL);
    assert_int_equal(n, strlen(s));
    assert_true(n <= 79);
    assert_non_null(strstr(s, " 50%"));
    assert_non_null(strstr(s, "512.0 KiB / 1.0 MiB"));
    assert_non_null(strstr(s, "256.0 KiB/s"));
    /* Half the cells are full. */
    const char *open = strchr(s, '['), *close = strchr(s, ']');
    size_t cells = (size_t)(close - open - 1), full = 0;
    for (const char *p = open + 1; p < close; p++)
        full += *p == '#';
    assert_int_equal(full, cells / 2);

    /* Narrow terminals keep a minimal bar; wide ones do not stretch it without end. */
    n = progress_format(s, sizeof(s), "rows", PROGRESS_ROWS, 3, 4, 1.0, 20, NULL);
    assert_true(strchr(s, ']') - strchr(s, '[') - 1 >= 10);
    n = progress_format(s, sizeof(s), "rows", PROGRESS_ROWS, 3, 4, 1.0, 400, "");
    assert_true(strchr(s, ']') - strchr(s, '[') - 1 <= 40);
    assert_non_null(strstr(s, " 75%  3 / 4  3 rows/s"));
}

static void test_done_past_total_and_unknown_total(void **state)
{
    (void)state;
    char s[512];
    /* An estimate that was too low shows a full bar, never more than 100%. */
    progress_format(s, sizeof(s), "rows", PROGRESS_ROWS, 12, 10, 0, 80, NULL);
    assert_non_null(strstr(s, "100%"));
    assert_null(strchr(s, '.'));
    /* No total: the count, and no rate before any time has passed. */
    progress_format(s, sizeof(s), "rows", PROGRESS_ROWS, 12, 0, 0, 80, NULL);
    assert_string_equal(s, "rows 12");
    /* Truncation keeps the string terminated and says how much was written. */
    assert_int_equal(progress_format(s, 5, "rows", PROGRESS_ROWS, 12, 0, 0, 80, NULL), 4);
    assert_string_equal(s, "rows");
    /* A phase whose count stands still shows what happens and for how long instead. */
    progress_format(s, sizeof(s), "rows", PROGRESS_ROWS, 10, 10, 12.4, 80, "processing");
    assert_non_null(strstr(s, "100%  10 / 10  processing, 12 s"));
    assert_null(strstr(s, "rows/s"));
}

static char *slurp(FILE *f)
{
    long n = ftell(f);
    char *s = calloc(1, (size_t)n + 1);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static void test_plain_output_is_one_summary_line(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    struct progress *p = progress_new(f, 0, "upload", PROGRESS_BYTES, 2048);
    for (uint64_t i = 0; i <= 2048; i += 64)
        progress_update(p, i, 0);
    progress_end(p, 1);
    p = progress_new(f, 0, "rows", PROGRESS_ROWS, 0);
    progress_update(p, 5, 0);
    progress_end(p, 0); /* did not finish: says nothing */
    char *s = slurp(f);
    assert_null(strchr(s, '\r'));
    assert_true(strncmp(s, "upload: 2.0 KiB in ", 19) == 0);
    assert_non_null(strchr(s, '\n'));
    assert_string_equal(strchr(s, '\n'), "\n");
    free(s);
    fclose(f);
}

static void test_tty_output_redraws_in_place(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    struct progress *p = progress_new(f, 1, "upload", PROGRESS_BYTES, 100);
    progress_update(p, 100, 0);
    progress_end(p, 1);
    char *s = slurp(f);
    assert_true(s[0] == '\r');
    assert_non_null(strstr(s, "100%"));
    assert_int_equal(s[strlen(s) - 1], '\n');
    free(s);
    fclose(f);
    progress_update(NULL, 1, 1);
    progress_end(NULL, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amounts),
        cmocka_unit_test(test_bar_fits_the_terminal),
        cmocka_unit_test(test_done_past_total_and_unknown_total),
        cmocka_unit_test(test_plain_output_is_one_summary_line),
        cmocka_unit_test(test_tty_output_redraws_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
