/*
 * ledger_impl: what the ledger adapters share inside the ledger module — the table of an
 * adapter's operations and one blocking HTTP call over a reused libcurl handle.
 */
#ifndef TAGPROOF_LEDGER_IMPL_H
#define TAGPROOF_LEDGER_IMPL_H

#include "ledger.h"

#include <curl/curl.h>

struct ledger_ops {
    const char *name;
    int (*needs_prepare)(const struct ledger *l, const struct ledger_ref *ref);
    enum ledger_status (*prepare)(struct ledger *l, struct ledger_ref *ref, char *err,
                                  size_t errlen);
    enum ledger_status (*submit)(struct ledger *l, const struct ledger_checkpoint *cp,
                                 struct ledger_ref *ref, char *err, size_t errlen);
    enum ledger_status (*check)(struct ledger *l, const struct ledger_checkpoint *cp,
                                struct ledger_ref *ref, char *err, size_t errlen);
};

struct ledger {
    const struct ledger_ops *ops;
    CURL *curl;
    char *url;      /* base URL, without a trailing slash */
    char *eth_from; /* ethereum: the sending account, lower case */
    int confirmations;
    int64_t chain_id; /* ethereum: learned at the first answer, then required */
};

extern const struct ledger_ops ledger_http_ops;
extern const struct ledger_ops ledger_eth_ops;

/*
 * One request: method "GET" or "POST" (with a JSON body) to url. *status gets the HTTP status
 * (0 when no answer came), *body the answer (caller frees; NULL when none). Connect and total
 * timeouts are short: a ledger that does not answer is an error to retry, not a hang.
 * 0 when an answer came, -1 with err otherwise.
 */
int ledger_http_call(struct ledger *l, const char *method, const char *url, const char *body,
                     long *status, char **answer, char *err, size_t errlen);

#endif
