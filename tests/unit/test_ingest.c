/*
 * Unit tests of ingest: modes, Idempotency-Key checks and decisions, COPY rows, and the error
 * report that keeps the first 1,000 errors by line whatever order they arrive in.
 */
#include "support.h"
#include "ingest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_mode(void **state)
{
    (void)state;
    enum ingest_mode m = INGEST_SKIP_INVALID;
    assert_int_equal(ingest_mode_parse(NULL, &m), 0);
    assert_int_equal(m, INGEST_ALL_OR_NOTHING);
    assert_int_equal(ingest_mode_parse("skip-invalid", &m), 0);
    assert_int_equal(m, INGEST_SKIP_INVALID);
    assert_int_equal(ingest_mode_parse("all-or-nothing", &m), 0);
    assert_int_equal(m, INGEST_ALL_OR_NOTHING);
    assert_int_equal(ingest_mode_parse("", &m), -1);
    assert_int_equal(ingest_mode_parse("SKIP-INVALID", &m), -1);
    assert_int_equal(ingest_mode_parse("skip_invalid", &m), -1);
    assert_string_equal(ingest_mode_name(INGEST_SKIP_INVALID), "skip-invalid");
    assert_string_equal(ingest_mode_name(INGEST_ALL_OR_NOTHING), "all-or-nothing");
}

static void test_key(void **state)
{
    (void)state;
    char long_key[INGEST_KEY_MAX + 2];
    assert_true(ingest_key_valid("a"));
    assert_true(ingest_key_valid("7c9e6679-7425-40de-944b-e07fc1f90ae7"));
    assert_true(ingest_key_valid("b64+/=~!"));
    assert_false(ingest_key_valid(NULL));
    assert_false(ingest_key_valid(""));
    assert_false(ingest_key_valid("has space"));
    assert_false(ingest_key_valid("tab\there"));
    assert_false(ingest_key_valid("caf\xc3\xa9"));
    assert_false(ingest_key_valid("del\x7f"));
    memset(long_key, 'k', sizeof(long_key));
    long_key[INGEST_KEY_MAX] = '\0';
    assert_true(ingest_key_valid(long_key));
    long_key[INGEST_KEY_MAX] = 'k';
    long_key[INGEST_KEY_MAX + 1] = '\0';
    assert_false(ingest_key_valid(long_key));
}

static void test_idempotency(void **state)
{
    (void)state;
    struct {
        bool running, body_known, same;
        enum ingest_idem want;
    } cases[] = {
        {true, false, true, INGEST_BUSY},      {true, true, false, INGEST_BUSY},
        {false, false, true, INGEST_RETAKE},   {false, false, false, INGEST_RETAKE},
        {false, true, false, INGEST_MISMATCH}, {false, true, true, INGEST_COMPARE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ingest_prior p = {cases[i].running, cases[i].body_known, cases[i].same};
        assert_int_equal(ingest_idempotency(&p), cases[i].want);
    }
}

static void test_copy_row(void **state)
{
    (void)state;
    char out[INGEST_COPY_ROW_MAX(100)];
    struct csv_tag_row row = {.line = 12};
    const unsigned char tag[16] = {0x7c, 0x9e, 0x66, 0x79, 0x74, 0x25, 0x40, 0xde,
                                   0x94, 0x4b, 0xe0, 0x7f, 0xc1, 0xf9, 0x0a, 0xe7};
    memcpy(row.tag, tag, 16);

    /* PostgreSQL's binary COPY: the signature, no flags, no header extension; a count of -1. */
    assert_int_equal(INGEST_COPY_HEADER_LEN, 19);
    assert_memory_equal(INGEST_COPY_HEADER, "PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0", 19);
    assert_memory_equal(INGEST_COPY_TRAILER, "\xff\xff", 2);

    /* Three fields: the line as an int8, the uuid's 16 bytes, a NULL serial (length -1). */
    size_t n = ingest_copy_row(out, &row);
    const char want_null[] = "\0\3"
                             "\0\0\0\x08\0\0\0\0\0\0\0\x0c"
                             "\0\0\0\x10\x7c\x9e\x66\x79\x74\x25\x40\xde\x94\x4b\xe0\x7f\xc1\xf9"
                             "\x0a\xe7"
                             "\xff\xff\xff\xff";
    assert_int_equal(n, sizeof(want_null) - 1);
    assert_memory_equal(out, want_null, n);

    /* A serial goes as its bytes, a backslash and quotes included; the line in network order. */
    row.line = 0x0102030405ull;
    row.serial = "SN\\01 \"x\"";
    row.serial_len = strlen(row.serial);
    n = ingest_copy_row(out, &row);
    assert_int_equal(n, 2 + 12 + 20 + 4 + row.serial_len);
    assert_memory_equal(out + 6, "\0\0\0\x01\x02\x03\x04\x05", 8);
    assert_memory_equal(out + 34, "\0\0\0\x09SN\\01 \"x\"", 4 + 9);

    /* The bound holds for the longest serial. */
    char serial[100];
    memset(serial, 'x', sizeof(serial));
    row.serial = serial;
    row.serial_len = sizeof(serial);
    assert_int_equal(ingest_copy_row(out, &row), sizeof(out));
}

/* The lines of the kept errors, as "l1,l2,..."; a line-less error shows as 0. */
static char *lines_of(const struct ingest_errors *e)
{
    char *js = ingest_errors_json(e);
    json_t *a = json_loads(js, 0, NULL);
    size_t cap = 16 * (json_array_size(a) + 1), len = 0;
    char *out = calloc(1, cap);
    size_t i;
    json_t *it;
    assert_non_null(a);
    json_array_foreach(a, i, it)
    {
        json_t *l = json_object_get(it, "line");
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? "," : "",
                                json_is_null(l) ? 0LL : (long long)json_integer_value(l));
    }
    json_decref(a);
    free(js);
    return out;
}

static void test_errors_order(void **state)
{
    (void)state;
    struct ingest_errors *e = ingest_errors_new(4);
    char *s;
    assert_non_null(e);
    s = ingest_errors_json(e);
    assert_string_equal(s, "[]");
    free(s);

    assert_int_equal(ingest_errors_add(e, 5, "invalid_uuid", "five"), 0);
    assert_int_equal(ingest_errors_add(e, 9, "invalid_uuid", "nine"), 0);
    assert_int_equal(ingest_errors_add(e, 7, "already_registered", "seven"), 0);
    s = lines_of(e);
    assert_string_equal(s, "5,7,9");
    free(s);
    /* Full at four: a later line falls off, an earlier one pushes the last out. */
    assert_int_equal(ingest_errors_add(e, 11, "x", "eleven"), 0);
    assert_int_equal(ingest_errors_add(e, 12, "x", "twelve"), 0);
    s = lines_of(e);
    assert_string_equal(s, "5,7,9,11");
    free(s);
    assert_int_equal(ingest_errors_add(e, 2, "x", "two"), 0);
    assert_int_equal(ingest_errors_add(e, 0, "body_truncated", "no line"), 0);
    s = lines_of(e);
    assert_string_equal(s, "0,2,5,7");
    free(s);
    assert_int_equal(ingest_errors_count(e), 7);

    /* Equal lines keep their order of arrival. */
    ingest_errors_free(e);
    e = ingest_errors_new(10);
    ingest_errors_add(e, 3, "a", "first");
    ingest_errors_add(e, 3, "b", "second");
    s = ingest_errors_json(e);
    assert_string_equal(s, "[{\"line\":3,\"code\":\"a\",\"message\":\"first\"},"
                           "{\"line\":3,\"code\":\"b\",\"message\":\"second\"}]");
    free(s);
    ingest_errors_free(e);
    assert_null(ingest_errors_new(0));
    assert_null(ingest_errors_new(INGEST_MAX_ERRORS + 1));
}

static void test_errors_many(void **state)
{
    (void)state;
    struct ingest_errors *e = ingest_errors_new(INGEST_MAX_ERRORS);
    /* The validator's errors, every even line from 2 to 4000 ... */
    for (uint64_t l = 2; l <= 4000; l += 2)
        assert_int_equal(ingest_errors_add(e, l, "invalid_uuid", "bad"), 0);
    /* ... then the database's, every odd line from 1 to 1001, sorted as its query gives them. */
    for (uint64_t l = 1; l <= 1001; l += 2)
        assert_int_equal(ingest_errors_add(e, l, "already_registered", "taken"), 0);
    assert_int_equal(ingest_errors_count(e), 2000 + 501);
    char *js = ingest_errors_json(e);
    json_t *a = json_loads(js, 0, NULL);
    assert_int_equal(json_array_size(a), INGEST_MAX_ERRORS);
    /* Lines 1..1000 each once, in order. */
    for (size_t i = 0; i < INGEST_MAX_ERRORS; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(a, i), "line")),
                         (json_int_t)i + 1);
    json_decref(a);
    free(js);
    ingest_errors_free(e);
}

static void test_errors_utf8_truncation(void **state)
{
    (void)state;
    struct ingest_errors *e = ingest_errors_new(1);
    char msg[CSV_MESSAGE_MAX + 8];
    /* 'a' then two-byte characters, so the limit falls inside one of them. */
    size_t n = 0;
    msg[n++] = 'a';
    while (n + 2 < sizeof(msg)) {
        msg[n++] = (char)0xc3;
        msg[n++] = (char)0xa9;
    }
    msg[n] = '\0';
    assert_int_equal(ingest_errors_add(e, 1, "a_code_longer_than_thirty_two_bytes_in_all", msg), 0);
    char *js = ingest_errors_json(e);
    assert_non_null(js); /* jansson refuses invalid UTF-8: the cut kept it valid */
    json_t *a = json_loads(js, 0, NULL);
    const char *m = json_string_value(json_object_get(json_array_get(a, 0), "message"));
    assert_true(strlen(m) <= CSV_MESSAGE_MAX - 1);
    assert_true(strlen(m) >= CSV_MESSAGE_MAX - 2);
    assert_int_equal(strlen(json_string_value(json_object_get(json_array_get(a, 0), "code"))), 31);
    json_decref(a);
    free(js);
    ingest_errors_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_copy_row),
        cmocka_unit_test(test_errors_order),
        cmocka_unit_test(test_errors_many),
        cmocka_unit_test(test_errors_utf8_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
