/*
 * Unit tests of scan/answer: the checker of a tag's cached data against jansson as the
 * reference, the data written from a database row (byte for byte what jansson writes), and
 * the verdict answer (parsed back with jansson, member by member).
 */
#include "support.h"

#include "answer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FACTORY "6f0e2d1c-0000-4000-8000-000000000001"
#define DATA                                                                                       \
    "{\"product\":{\"id\":\"6f0e2d1c-0000-4000-8000-000000000002\",\"sku\":\"SKU-1\","             \
    "\"name\":\"Trail \\\"Runner\\\" é\"},\"batch\":{\"id\":\"6f0e2d1c-0000-4000-8000-"           \
    "000000000003\",\"code\":\"B-1\"},\"factory\":{\"id\":\"" FACTORY "\",\"name\":\"F\"}}"

static int parse(const char *s, struct answer_info *out)
{
    return answer_info_parse(s, strlen(s), out);
}

static void assert_span(const char *span, size_t len, const char *want)
{
    assert_non_null(span);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(span, want, len);
}

static void test_parse_finds_members(void **state)
{
    (void)state;
    struct answer_info in;
    assert_int_equal(parse(DATA, &in), 0);
    assert_span(in.product, in.product_len,
                "{\"id\":\"6f0e2d1c-0000-4000-8000-000000000002\",\"sku\":\"SKU-1\","
                "\"name\":\"Trail \\\"Runner\\\" é\"}");
    assert_span(in.batch, in.batch_len,
                "{\"id\":\"6f0e2d1c-0000-4000-8000-000000000003\",\"code\":\"B-1\"}");
    assert_span(in.factory, in.factory_len, "{\"id\":\"" FACTORY "\",\"name\":\"F\"}");
    assert_string_equal(in.factory_id, FACTORY);

    /* Blanks, another order, other members, a repeated member (the last counts). */
    assert_int_equal(parse(" {\"x\":[1,-2.5e3,true,null,{\"a\":[]}], \"factory\" : {\"id\":\"a\"},"
                           "\"batch\":{}, \"factory\":{\"name\":\"n\",\"id\":\"" FACTORY "\"}}\n",
                           &in),
                     0);
    assert_null(in.product);
    assert_span(in.batch, in.batch_len, "{}");
    assert_span(in.factory, in.factory_len, "{\"name\":\"n\",\"id\":\"" FACTORY "\"}");
    assert_string_equal(in.factory_id, FACTORY);

    /* A factory id that is no lower-case UUID is not taken; nor one with escapes. */
    assert_int_equal(parse("{\"factory\":{\"id\":\"6F0E2D1C-0000-4000-8000-000000000001\"}}", &in),
                     0);
    assert_string_equal(in.factory_id, "");
    assert_int_equal(
        parse("{\"factory\":{\"id\":\"6f0e2d1c-0000-4000-8000-00000000000\\u0031\"}}", &in), 0);
    assert_string_equal(in.factory_id, "");
    assert_int_equal(parse("{\"factory\":{\"id\":\"" FACTORY "\",\"id\":7}}", &in), 0);
    assert_string_equal(in.factory_id, "");
    assert_int_equal(parse("{\"factory\":\"" FACTORY "\"}", &in), 0);
    assert_string_equal(in.factory_id, "");
    assert_span(in.factory, in.factory_len, "\"" FACTORY "\"");
}

static void test_parse_refuses_what_is_not_one_object(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "[]",
        "\"s\"",
        "{",
        "{}}",
        "{} x",
        "{\"a\":}",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\":[1,]}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":-}",
        "{\"a\":1e}",
        "{\"a\":+1}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":NaN}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u0000\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"\xc3\"}",
        "{\"a\":\"\xc0\xaf\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"a\":\"unterminated}",
        "{'a':1}",
        "{a:1}",
    };
    struct answer_info in;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &in) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_null(in.product);
        json_error_t err;
        json_t *j = json_loads(bad[i], 0, &err);
        if (j != NULL && json_is_object(j))
            fail_msg("jansson accepts %s", bad[i]);
        json_decref(j);
    }
    /* An embedded NUL is not JSON either. */
    assert_int_equal(answer_info_parse("{\"a\":1}\0", 8, &in), -1);
    assert_int_equal(answer_info_parse("{\"a\":\"\0\"}", 8, &in), -1);
}

static void test_parse_nesting_limit(void **state)
{
    (void)state;
    char doc[256];
    struct answer_info in;
    for (int depth = 1; depth <= ANSWER_MAX_DEPTH + 2; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++)
            n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"a\":");
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "1");
        for (int i = 0; i < depth; i++)
            doc[n++] = '}';
        doc[n] = '\0';
        assert_int_equal(parse(doc, &in), depth <= ANSWER_MAX_DEPTH ? 0 : -1);
    }
}

/* Every string jansson can hold, written from a row, is what json_dumps writes. */
static void test_build_matches_jansson(void **state)
{
    (void)state;
    static const char *const names[] = {
        "Trail Runner 2041, men's, size 44",
        "quote \" backslash \\ slash /",
        "controls \b\f\n\r\t\x01\x1f\x7f",
        "UTF-8 é ß 中文 😀 \xe2\x80\xa8",
        "",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t len = 0;
        char *mine =
            answer_info_build("p-id", "SKU", names[i], "b-id", "B-1", FACTORY, names[i], &len);
        assert_non_null(mine);
        assert_int_equal(len, strlen(mine));
        json_t *j = json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}}", "product", "id",
                              "p-id", "sku", "SKU", "name", names[i], "batch", "id", "b-id", "code",
                              "B-1", "factory", "id", FACTORY, "name", names[i]);
        assert_non_null(j);
        char *theirs = json_dumps(j, JSON_COMPACT);
        assert_string_equal(mine, theirs);
        struct answer_info in;
        assert_int_equal(parse(mine, &in), 0);
        assert_string_equal(in.factory_id, FACTORY);
        free(theirs);
        free(mine);
        json_decref(j);
    }
    /* Bytes that are not UTF-8 (PostgreSQL never sends them) still make valid JSON. */
    size_t len;
    char *mine = answer_info_build("p", "s", "bad \xff\xc3 end", "b", "c", "f", "n", &len);
    assert_non_null(strstr(mine, "bad \\ufffd\\ufffd end"));
    struct answer_info in;
    assert_int_equal(parse(mine, &in), 0);
    free(mine);
}

static json_t *verdict_json(const struct answer_fields *f)
{
    char small[64], big[4096];
    size_t n = answer_verdict(f, small, sizeof(small));
    assert_true(n > sizeof(small));
    assert_int_equal(answer_verdict(f, big, sizeof(big)), n);
    json_error_t err;
    json_t *j = json_loadb(big, n, 0, &err);
    if (j == NULL)
        fail_msg("not JSON (%s): %.*s", err.text, (int)n, big);
    return j;
}

static void test_verdict(void **state)
{
    (void)state;
    struct answer_info in;
    assert_int_equal(parse(DATA, &in), 0);
    const char *reasons[] = {"velocity", "bot_ua"};
    struct answer_fields f = {
        .tag_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        .verdict = "suspicious",
        .info = &in,
        .first_scan = true,
        .first_ms = 1795000000123,
        .scan_count = 12,
        .score = 50,
        .reasons = reasons,
        .nreasons = 2,
        .source = "cache",
    };
    json_t *j = verdict_json(&f);
    json_t *want = json_loads(
        "{\"tag_id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"verdict\":\"suspicious\","
        "\"first_scan\":true,\"first_scanned_at\":\"2026-11-18T11:06:40Z\",\"scan_count\":12,"
        "\"risk\":{\"score\":50,\"reasons\":[\"velocity\",\"bot_ua\"]},"
        "\"anchor\":{\"status\":\"pending\"},\"source\":\"cache\"}",
        0, NULL);
    json_t *data = json_loads(DATA, 0, NULL);
    json_object_update(want, data);
    assert_true(json_equal(j, want));
    /* SPEC §5's order of members. */
    const char *order[] = {"tag_id",     "verdict",          "product",    "batch", "factory",
                           "first_scan", "first_scanned_at", "scan_count", "risk",  "anchor",
                           "source"};
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        assert_string_equal(key, order[k]);
        k++;
    }
    assert_int_equal(k, 11);
    json_decref(j);
    json_decref(want);
    json_decref(data);

    /* No data, no first-scan time, no count, degraded. */
    struct answer_fields g = {
        .tag_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        .verdict = "authentic",
        .info = NULL,
        .degraded = true,
        .source = "database",
    };
    j = verdict_json(&g);
    want = json_loads("{\"tag_id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\","
                      "\"verdict\":\"authentic\",\"product\":{},\"batch\":{},\"factory\":{},"
                      "\"first_scan\":false,\"first_scanned_at\":null,\"scan_count\":null,"
                      "\"risk\":{\"score\":0,\"reasons\":[],\"degraded\":true},"
                      "\"anchor\":{\"status\":\"pending\"},\"source\":\"database\"}",
                      0, NULL);
    assert_true(json_equal(j, want));
    json_decref(j);
    json_decref(want);
}

/* SPEC §5's anchored block: the judgement, and the reference escaped as jansson would. */
static void test_verdict_anchored(void **state)
{
    (void)state;
    struct answer_info in;
    struct answer_anchor an;
    assert_int_equal(parse(DATA, &in), 0);

    /* Pending unless the leaf is known, covered and the anchor has a reference. */
    answer_anchor_set(&an, -1, 10, "x", 1);
    assert_false(an.anchored);
    answer_anchor_set(&an, 10, 10, "x", 1);
    assert_false(an.anchored);
    answer_anchor_set(&an, 3, 0, "x", 1);
    assert_false(an.anchored);
    answer_anchor_set(&an, 3, 10, "", 0);
    assert_false(an.anchored);
    answer_anchor_set(&an, 3, 10, "a\0b", 3);
    assert_false(an.anchored);
    char longref[ANSWER_LEDGER_TX_MAX + 2];
    memset(longref, 'a', sizeof(longref));
    answer_anchor_set(&an, 3, 10, longref, sizeof(longref));
    assert_false(an.anchored);
    answer_anchor_set(&an, 0, 1, longref, ANSWER_LEDGER_TX_MAX);
    assert_true(an.anchored);

    static const char *const refs[] = {
        "0x5c2d0e1f8a9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "a\"quote\\back\nline\x01"
        "ctl\xc3\xa9\xff",
    };
    for (size_t k = 0; k < sizeof(refs) / sizeof(refs[0]); k++) {
        answer_anchor_set(&an, 41, 1024, refs[k], strlen(refs[k]));
        assert_true(an.anchored);
        struct answer_fields f = {
            .tag_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            .verdict = k == 2 ? "revoked" : "authentic",
            .info = &in,
            .first_ms = 1795000000123,
            .scan_count = 2,
            .anchor = &an,
            .source = "cache",
        };
        json_t *j = verdict_json(&f);
        json_t *want = json_pack("{s:s, s:I, s:I}", "status", "anchored", "leaf_index",
                                 (json_int_t)41, "checkpoint_size", (json_int_t)1024);
        /* Bytes that are not UTF-8 become U+FFFD (jansson would refuse them). */
        json_object_set_new(want, "ledger_tx",
                            json_string(k < 2 ? refs[k]
                                              : "a\"quote\\back\nline\x01"
                                                "ctl\xc3\xa9\xef\xbf\xbd"));
        assert_true(json_equal(json_object_get(j, "anchor"), want));
        /* Its members in SPEC's order, and the rest of the answer unchanged. */
        const char *order[] = {"status", "leaf_index", "checkpoint_size", "ledger_tx"};
        size_t n = 0;
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(j, "anchor"), key, v)
        {
            assert_string_equal(key, order[n]);
            n++;
        }
        assert_int_equal(n, 4);
        assert_string_equal(json_string_value(json_object_get(j, "source")), "cache");
        json_decref(j);
        json_decref(want);
    }

    /* A judged-pending block answers exactly like no block. */
    answer_anchor_set(&an, 5, 5, "x", 1);
    struct answer_fields g = {.tag_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                              .verdict = "authentic",
                              .anchor = &an,
                              .source = "database"};
    json_t *j = verdict_json(&g);
    json_t *want = json_pack("{s:s}", "status", "pending");
    assert_true(json_equal(json_object_get(j, "anchor"), want));
    json_decref(j);
    json_decref(want);
}

static void test_time(void **state)
{
    (void)state;
    char out[32];
    answer_time(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    answer_time(1795000000999, out);
    assert_string_equal(out, "2026-11-18T11:06:40Z");
    answer_time(253402300799999, out);
    assert_string_equal(out, "9999-12-31T23:59:59Z");
    answer_time(253402300800000, out);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_finds_members),
        cmocka_unit_test(test_parse_refuses_what_is_not_one_object),
        cmocka_unit_test(test_parse_nesting_limit),
        cmocka_unit_test(test_build_matches_jansson),
        cmocka_unit_test(test_verdict),
        cmocka_unit_test(test_verdict_anchored),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
