/*
 * proxies: trusted reverse proxies and X-Forwarded-For (see proxies.h).
 */
#include "proxies.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDRESS_CHARS "0123456789abcdefABCDEF.:"

struct proxies {
    size_t n;
    char *addr[PROXIES_MAX];
};

struct proxies *proxies_new(const char *list, char *err, size_t errlen)
{
    struct proxies *p = calloc(1, sizeof(*p));
    char *copy = NULL, *save = NULL;

    if (p == NULL || (list != NULL && (copy = strdup(list)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        free(p);
        return NULL;
    }
    for (char *tok = copy != NULL ? strtok_r(copy, ", ", &save) : NULL; tok != NULL;
         tok = strtok_r(NULL, ", ", &save)) {
        if (p->n == PROXIES_MAX || strspn(tok, ADDRESS_CHARS) != strlen(tok) ||
            (p->addr[p->n] = strdup(tok)) == NULL) {
            snprintf(err, errlen, "TAGPROOF_TRUSTED_PROXIES: expected up to %d IP addresses",
                     PROXIES_MAX);
            free(copy);
            proxies_free(p);
            return NULL;
        }
        p->n++;
    }
    free(copy);
    return p;
}

void proxies_free(struct proxies *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->addr[i]);
    free(p);
}

static int trusted(const struct proxies *p, const char *ip)
{
    for (size_t i = 0; p != NULL && i < p->n; i++)
        if (strcmp(p->addr[i], ip) == 0)
            return 1;
    return 0;
}

void proxies_client_ip(const struct proxies *p, const char *peer, const char *xff, char *out,
                       size_t len)
{
    char copy[1025];

    snprintf(out, len, "%s", peer != NULL ? peer : "");
    if (peer == NULL || !trusted(p, peer) || xff == NULL || strlen(xff) >= sizeof(copy))
        return;
    snprintf(copy, sizeof(copy), "%s", xff);
    for (;;) {
        char *comma = strrchr(copy, ',');
        char *item = comma != NULL ? comma + 1 : copy;
        while (*item == ' ')
            item++;
        size_t n = strcspn(item, " ");
        item[n] = '\0';
        /* An address is short and made of hex digits, dots and colons; anything else is not
         * one, and the address found so far stands. */
        if (n == 0 || n >= len || strspn(item, ADDRESS_CHARS) != n)
            return;
        memcpy(out, item, n + 1);
        if (!trusted(p, item) || comma == NULL)
            return;
        *comma = '\0';
    }
}
