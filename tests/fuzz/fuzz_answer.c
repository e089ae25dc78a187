// fuzz: MODULES answer
/*
 * fuzz_answer: answer_info_parse on arbitrary bytes, and what is built on what it accepts.
 *  - Accepted data: the three members lie inside the input; the verdict answer spliced from
 *    them is itself one JSON object to the same checker, with the same three members, byte
 *    for byte (so splicing never breaks the answer's JSON).
 *  - The input split at '\n' into seven strings is written as a database row's data by
 *    answer_info_build; that is always accepted, with the factory id found when it is one.
 */
#include "answer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_within(const char *span, size_t len, const char *in, size_t size)
{
    if (span != NULL && (span < in || span + len > in + size)) {
        fprintf(stderr, "fuzz_answer: a member lies outside the input\n");
        abort();
    }
}

static void check_same(const char *a, size_t alen, const char *b, size_t blen)
{
    if ((a == NULL) != (b == NULL) || alen != blen || (a != NULL && memcmp(a, b, alen) != 0)) {
        fprintf(stderr, "fuzz_answer: the answer does not carry a member as it was\n");
        abort();
    }
}

static void spliced(const char *in, size_t size)
{
    struct answer_info info, back;
    if (answer_info_parse(in, size, &info) != 0)
        return;
    check_within(info.product, info.product_len, in, size);
    check_within(info.batch, info.batch_len, in, size);
    check_within(info.factory, info.factory_len, in, size);
    if (strlen(info.factory_id) != 0 && strlen(info.factory_id) != UUID_STR_LEN)
        abort();

    const char *reasons[] = {"velocity", "bot_ua"};
    struct answer_fields f = {.tag_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                              .verdict = "authentic",
                              .info = &info,
                              .first_scan = size % 2,
                              .first_ms = (int64_t)size * 1000003,
                              .scan_count = (long)size,
                              .score = 20,
                              .reasons = reasons,
                              .nreasons = size % 3,
                              .degraded = size % 5 == 0,
                              .source = "cache"};
    size_t n = answer_verdict(&f, NULL, 0);
    char *out = malloc(n);
    if (out == NULL || answer_verdict(&f, out, n) != n)
        abort();
    /* Members absent from the data are {} in the answer. */
    if (answer_info_parse(out, n, &back) != 0) {
        fprintf(stderr, "fuzz_answer: the answer is not JSON: %.*s\n", (int)n, out);
        abort();
    }
    check_same(back.product, back.product_len, info.product ? info.product : "{}",
               info.product ? info.product_len : 2);
    check_same(back.batch, back.batch_len, info.batch ? info.batch : "{}",
               info.batch ? info.batch_len : 2);
    check_same(back.factory, back.factory_len, info.factory ? info.factory : "{}",
               info.factory ? info.factory_len : 2);
    if (strcmp(back.factory_id, info.factory_id) != 0)
        abort();
    free(out);
}

static void built(const char *in, size_t size)
{
    char *copy = malloc(size + 1);
    const char *field[7] = {"", "", "", "", "", "", ""};
    size_t nf = 0, len = 0;
    struct answer_info info;
    if (copy == NULL)
        return;
    memcpy(copy, in, size);
    copy[size] = '\0';
    for (char *p = copy; nf < 7;) {
        field[nf++] = p;
        char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    char *doc = answer_info_build(field[0], field[1], field[2], field[3], field[4], field[5],
                                  field[6], &len);
    if (doc == NULL)
        abort();
    if (strlen(doc) != len || answer_info_parse(doc, len, &info) != 0) {
        fprintf(stderr, "fuzz_answer: built data is refused: %s\n", doc);
        abort();
    }
    char canon[UUID_STR_LEN + 1];
    int is_id = strlen(field[5]) == UUID_STR_LEN &&
                uuid_canonical(field[5], UUID_STR_LEN, canon) == 0 && strcmp(canon, field[5]) == 0;
    if (is_id != (strcmp(info.factory_id, field[5]) == 0 && info.factory_id[0] != '\0'))
        abort();
    free(doc);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spliced((const char *)data, size);
    built((const char *)data, size);
    return 0;
}
