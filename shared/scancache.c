/*
 * scancache: the parts of the scan cache's layout that tagproof-anchor writes and the scan
 * service reads. Values are checked strictly on the way in: what Redis holds is data, and a
 * malformed anchoring state must read as "not known" (pending), never as "anchored".
 */
#include "scancache.h"

#include <stdio.h>
#include <string.h>

void scancache_tag_key(char *out, size_t len, const char *tag_id)
{
    snprintf(out, len, "tp:t:%s", tag_id);
}

/* Visible ASCII only: a reference is an id or a hash, and it is shown to consumers. */
static int ref_ok(const char *s, size_t n)
{
    if (n == 0 || n > SCANCACHE_LEDGER_REF_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

int scancache_anchor_format(char *out, size_t len, int64_t size, const char *ref)
{
    if (ref == NULL || size <= 0 || !ref_ok(ref, strlen(ref)))
        return -1;
    int n = snprintf(out, len, "%lld %s", (long long)size, ref);
    return n > 0 && (size_t)n < len ? n : -1;
}

int scancache_parse_count(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (s == NULL || len == 0 || len > 18 || (s[0] == '0' && len > 1))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int scancache_anchor_parse(const char *s, size_t len, int64_t *size, const char **ref,
                           size_t *ref_len)
{
    const char *sp = s != NULL ? memchr(s, ' ', len) : NULL;
    if (sp == NULL || scancache_parse_count(s, (size_t)(sp - s), size) != 0 || *size <= 0)
        return -1;
    *ref = sp + 1;
    *ref_len = len - (size_t)(sp - s) - 1;
    return ref_ok(*ref, *ref_len) ? 0 : -1;
}
