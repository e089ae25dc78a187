/*
 * ledger: the adapter chosen by TAGPROOF_LEDGER, and the blocking HTTP call both adapters
 * make through one reused libcurl handle (kept-alive connections, no global state).
 */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ledger_impl.h"

#define LEDGER_CONNECT_TIMEOUT_MS 2000L
#define LEDGER_TIMEOUT_MS 5000L
#define LEDGER_MAX_ANSWER (1024 * 1024)

void ledger_ref_init(struct ledger_ref *r)
{
    memset(r, 0, sizeof(*r));
    r->chain_id = -1;
    r->block_number = -1;
    r->nonce = -1;
    r->from_block = -1;
}

const char *ledger_status_str(enum ledger_status st)
{
    switch (st) {
    case LEDGER_OK:
        return "ok";
    case LEDGER_WAIT:
        return "wait";
    case LEDGER_GONE:
        return "gone";
    case LEDGER_STALE:
        return "stale";
    case LEDGER_ERROR:
        return "error";
    case LEDGER_REJECTED:
        return "rejected";
    }
    return "?";
}

struct ledger *ledger_new(const struct config *cfg, char *err, size_t errlen)
{
    struct ledger *l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto oom;
    if (strcmp(cfg->ledger, "http") == 0) {
        l->ops = &ledger_http_ops;
    } else if (strcmp(cfg->ledger, "ethereum") == 0) {
        l->ops = &ledger_eth_ops;
        if (cfg->eth_from == NULL) {
            snprintf(err, errlen, "TAGPROOF_ETH_FROM: required when TAGPROOF_LEDGER=ethereum");
            goto fail;
        }
        if ((l->eth_from = strdup(cfg->eth_from)) == NULL)
            goto oom;
        for (char *p = l->eth_from; *p != '\0'; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    } else {
        snprintf(err, errlen, "TAGPROOF_LEDGER=%s: expected http or ethereum", cfg->ledger);
        goto fail;
    }
    l->confirmations = cfg->eth_confirmations > 0 ? cfg->eth_confirmations : 1;
    l->chain_id = -1;
    if ((l->url = strdup(cfg->ledger_url)) == NULL)
        goto oom;
    size_t n = strlen(l->url);
    while (n > 0 && l->url[n - 1] == '/')
        l->url[--n] = '\0';
    if ((l->curl = curl_easy_init()) == NULL)
        goto oom;
    return l;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    ledger_free(l);
    return NULL;
}

void ledger_free(struct ledger *l)
{
    if (l == NULL)
        return;
    if (l->curl != NULL)
        curl_easy_cleanup(l->curl);
    free(l->url);
    free(l->eth_from);
    free(l);
}

const char *ledger_name(const struct ledger *l)
{
    return l->ops->name;
}

int ledger_needs_prepare(const struct ledger *l, const struct ledger_ref *ref)
{
    return l->ops->needs_prepare != NULL && l->ops->needs_prepare(l, ref);
}

enum ledger_status ledger_prepare(struct ledger *l, struct ledger_ref *ref, char *err,
                                  size_t errlen)
{
    return l->ops->prepare != NULL ? l->ops->prepare(l, ref, err, errlen) : LEDGER_OK;
}

enum ledger_status ledger_submit(struct ledger *l, const struct ledger_checkpoint *cp,
                                 struct ledger_ref *ref, char *err, size_t errlen)
{
    return l->ops->submit(l, cp, ref, err, errlen);
}

enum ledger_status ledger_check(struct ledger *l, const struct ledger_checkpoint *cp,
                                struct ledger_ref *ref, char *err, size_t errlen)
{
    return l->ops->check(l, cp, ref, err, errlen);
}

/* --- one blocking HTTP call ---------------------------------------------------------------- */

struct answer {
    char *p;
    size_t len;
    int too_big;
};

static size_t answer_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nmemb;
    if (a->len + n > LEDGER_MAX_ANSWER) {
        a->too_big = 1;
        return 0;
    }
    char *p = realloc(a->p, a->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + a->len, data, n);
    a->p = p;
    a->len += n;
    a->p[a->len] = '\0';
    return n;
}

int ledger_http_call(struct ledger *l, const char *method, const char *url, const char *body,
                     long *status, char **answer, char *err, size_t errlen)
{
    struct answer a = {0};
    struct curl_slist *headers = NULL;
    CURL *c = l->curl;
    CURLcode rc;

    *status = 0;
    *answer = NULL;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, LEDGER_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, LEDGER_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (body != NULL) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "POST") == 0 && body == NULL)
        curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    rc = curl_easy_perform(c);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        /* The URL is not repeated: an RPC endpoint's path often holds an API key. */
        snprintf(err, errlen, "%s to the ledger: %s", method,
                 a.too_big ? "answer too large" : curl_easy_strerror(rc));
        free(a.p);
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    *answer = a.p;
    return 0;
}
