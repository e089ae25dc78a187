/*
 * http_support: a blocking raw-socket HTTP/1.1 client for the tests of the http module, so
 * the tests control every byte on the wire (slow senders, huge headers, vanishing clients).
 */
#ifndef TAGPROOF_TEST_HTTP_SUPPORT_H
#define TAGPROOF_TEST_HTTP_SUPPORT_H

#include <stddef.h>

#include <jansson.h>

struct th_resp {
    int status;
    char *head; /* status line and header fields */
    char *body; /* NUL-terminated */
    size_t body_len;
};

int th_connect(unsigned port);
int th_send(int fd, const void *data, size_t len);
int th_read(int fd, struct th_resp *r, int is_head, int timeout_ms);
int th_request(unsigned port, const char *raw, struct th_resp *r);
char *th_header(const struct th_resp *r, const char *name);
json_t *th_json(const struct th_resp *r);
void th_resp_free(struct th_resp *r);
int th_closed_within(int fd, int timeout_ms);

#endif
