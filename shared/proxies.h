/*
 * proxies: who the client is behind trusted reverse proxies — TAGPROOF_TRUSTED_PROXIES parsed
 * once, and the client address of a request worked out from its peer and X-Forwarded-For.
 * Pure: no I/O.
 */
#ifndef TAGPROOF_PROXIES_H
#define TAGPROOF_PROXIES_H

#include <stddef.h>

#define PROXIES_MAX 32

struct proxies;

/*
 * Parses a comma- or blank-separated list of IP addresses (NULL or empty: none). NULL with a
 * message in err (naming TAGPROOF_TRUSTED_PROXIES) when an item is not an address or there
 * are more than PROXIES_MAX.
 */
struct proxies *proxies_new(const char *list, char *err, size_t errlen);
void proxies_free(struct proxies *p);

/*
 * The client's address: the peer, or — when the peer is a trusted proxy — the right-most
 * address of xff (the X-Forwarded-For header, may be NULL) that is not itself a trusted
 * proxy. Anything in xff that does not look like an address leaves the last good one. p may
 * be NULL (no proxies trusted).
 */
void proxies_client_ip(const struct proxies *p, const char *peer, const char *xff, char *out,
                       size_t len);

#endif
