/*
 * client: the factory API as the `tagproof` command line talks to it — blocking HTTP requests
 * over libcurl, authenticated by an API key; request bodies streamed from a file of known size
 * (so Content-Length is sent, never chunked encoding); and failed answers, problem+json
 * (RFC 9457) or not, turned into one line for a person.
 */
#ifndef TAGPROOF_CLIENT_H
#define TAGPROOF_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct client;

/* An answer. Release it with client_reply_free; a zeroed struct is a valid empty reply. */
struct client_reply {
    long status;       /* the HTTP status; 0 when no answer arrived */
    char *body;        /* NUL-terminated (malloc'd), "" when the answer had none */
    size_t body_len;   /* without the NUL */
    char *location;    /* the Location header (malloc'd), or NULL */
    int retry_after_s; /* Retry-After in seconds, or -1 */
};

void client_reply_free(struct client_reply *r);

/*
 * A client for the API at base_url ("http://host:port", a trailing slash is ignored) that
 * sends api_key in X-Api-Key. Both strings are copied. NULL with a line in err when the URL is
 * not http(s) or curl cannot be set up. The caller frees with client_free, which also wipes
 * the key from memory. Call curl_global_init once before the first client.
 */
struct client *client_new(const char *base_url, const char *api_key, char *err, size_t errlen);
void client_free(struct client *c);

/*
 * The API path of a Location header: loc itself when it is a path ("/v1/uploads/..."), the
 * path part when it is an absolute URL on the client's own base URL; NULL for anything else
 * (the key is never sent to another origin). Borrowed from loc.
 */
const char *client_location_path(const struct client *c, const char *loc);

/*
 * GET path (which starts with '/'). 0 when an answer arrived, whatever its status (filled
 * into out); -1 with a line in err when none did (connection refused, timeout). out must be
 * zeroed or hold an earlier reply, which is released first; the caller frees the new one.
 */
int client_get(struct client *c, const char *path, struct client_reply *out, char *err,
               size_t errlen);

/* Told how many of the body's bytes have been handed to the connection so far. */
typedef void client_sent_fn(void *arg, uint64_t sent, uint64_t total);

/* A body streamed from a file. */
struct client_body {
    FILE *file;                  /* borrowed; read from its current position */
    uint64_t size;               /* exactly this many bytes are sent, as Content-Length */
    const char *content_type;    /* e.g. "text/csv" */
    const char *idempotency_key; /* sent as Idempotency-Key unless NULL */
    client_sent_fn *on_sent;     /* may be NULL */
    void *arg;
};

/*
 * POST path with the body read from body->file as it is sent (memory does not grow with the
 * file). 0 when an answer arrived (in out, as for client_get), -1 with a line in err when
 * none did or the file could not be read to its announced size.
 */
int client_post_stream(struct client *c, const char *path, const struct client_body *body,
                       struct client_reply *out, char *err, size_t errlen);

/*
 * One line for a reply that is not a success, for a person: "HTTP 404 Not Found: no such
 * batch (request 0190…)" from a problem's status, title, detail and request_id; for any other
 * body its first line, shortened (not an HTML page's); "HTTP 502" when there is nothing else.
 * Always NUL-terminates out.
 */
void client_reply_problem(const struct client_reply *r, char *out, size_t len);

#endif
