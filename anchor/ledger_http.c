/*
 * ledger_http: the HTTP ledger of SPEC §7 (tagproof-devledger serves it). POST /v1/anchors
 * records a checkpoint and answers 201 with the entry's id; the same (origin, size, root) again
 * answers 200 with the entry already recorded, which makes a retry after a lost answer or a
 * crash safe. An anchor counts as confirmed once GET /v1/anchors/{id} returns it unchanged.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ledger_impl.h"

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A client error other than a timeout or a rate limit will not go away by retrying. */
static enum ledger_status status_kind(long status)
{
    return status >= 400 && status < 500 && status != 408 && status != 429 ? LEDGER_REJECTED
                                                                           : LEDGER_ERROR;
}

/* 0 when the entry holds this checkpoint. */
static int entry_matches(json_t *e, const struct ledger_checkpoint *cp, const char *root_hex)
{
    const char *origin = json_string_value(json_object_get(e, "origin"));
    const char *root = json_string_value(json_object_get(e, "root"));
    json_t *size = json_object_get(e, "size");
    return origin != NULL && strcmp(origin, cp->origin) == 0 && root != NULL &&
                   strcasecmp(root, root_hex) == 0 && json_is_integer(size) &&
                   (uint64_t)json_integer_value(size) == cp->size
               ? 0
               : -1;
}

static enum ledger_status http_submit(struct ledger *l, const struct ledger_checkpoint *cp,
                                      struct ledger_ref *ref, char *err, size_t errlen)
{
    char root_hex[65], url[4200];
    char *body = NULL, *answer = NULL;
    json_t *req = NULL, *res = NULL;
    long status = 0;
    enum ledger_status st = LEDGER_ERROR;

    hex(cp->root, 32, root_hex);
    req = json_pack("{s:s, s:I, s:s, s:s}", "origin", cp->origin, "size", (json_int_t)cp->size,
                    "root", root_hex, "checkpoint", cp->note);
    if (req == NULL || (body = json_dumps(req, JSON_COMPACT)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    snprintf(url, sizeof(url), "%s/v1/anchors", l->url);
    if (ledger_http_call(l, "POST", url, body, &status, &answer, err, errlen) != 0)
        goto done;
    if (status != 200 && status != 201) {
        snprintf(err, errlen, "the ledger answered %ld to POST /v1/anchors", status);
        st = status_kind(status);
        goto done;
    }
    res = json_loads(answer, 0, NULL);
    const char *id = json_string_value(json_object_get(res, "id"));
    if (id == NULL || strlen(id) == 0 || strlen(id) >= sizeof(ref->ref) ||
        strspn(id, "0123456789abcdefABCDEF-_") != strlen(id)) {
        snprintf(err, errlen, "the ledger's answer to POST /v1/anchors has no usable id");
        goto done;
    }
    snprintf(ref->ref, sizeof(ref->ref), "%s", id);
    st = LEDGER_OK;
done:
    json_decref(req);
    json_decref(res);
    free(body);
    free(answer);
    return st;
}

static enum ledger_status http_check(struct ledger *l, const struct ledger_checkpoint *cp,
                                     struct ledger_ref *ref, char *err, size_t errlen)
{
    char root_hex[65], url[4200];
    char *answer = NULL;
    json_t *res = NULL;
    long status = 0;
    enum ledger_status st = LEDGER_ERROR;

    if (ref->ref[0] == '\0')
        return LEDGER_GONE;
    hex(cp->root, 32, root_hex);
    snprintf(url, sizeof(url), "%s/v1/anchors/%s", l->url, ref->ref);
    if (ledger_http_call(l, "GET", url, NULL, &status, &answer, err, errlen) != 0)
        goto done;
    if (status == 404) {
        snprintf(err, errlen, "the ledger has no entry %s", ref->ref);
        st = LEDGER_GONE;
        goto done;
    }
    if (status != 200) {
        snprintf(err, errlen, "the ledger answered %ld to GET /v1/anchors/{id}", status);
        st = LEDGER_ERROR;
        goto done;
    }
    res = json_loads(answer, 0, NULL);
    if (res == NULL || entry_matches(res, cp, root_hex) != 0) {
        snprintf(err, errlen, "the ledger's entry %s does not hold checkpoint %" PRIu64, ref->ref,
                 cp->size);
        st = LEDGER_REJECTED;
        goto done;
    }
    st = LEDGER_OK;
done:
    json_decref(res);
    free(answer);
    return st;
}

const struct ledger_ops ledger_http_ops = {
    .name = "http",
    .submit = http_submit,
    .check = http_check,
};
