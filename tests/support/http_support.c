/*
 * http_support: a blocking raw-socket HTTP/1.1 client for the tests of the http module, so
 * the tests control every byte on the wire (slow senders, huge headers, vanishing clients).
 */
#include "http_support.h"
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

int th_connect(unsigned port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int th_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One byte, waiting at most until deadline; 1, 0 at end of stream, -1 on error or timeout. */
static int read_byte(int fd, char *c, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - ts_now_ms();
        if (left <= 0)
            return -1;
        int rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t n = recv(fd, c, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n == 1 ? 1 : n == 0 ? 0 : -1;
    }
}

int th_read(int fd, struct th_resp *r, int is_head, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    size_t cap = 1024, len = 0;
    char *head = malloc(cap), *v = NULL;
    long clen = -1;

    memset(r, 0, sizeof(*r));
    if (head == NULL)
        return -1;
    while (len < 4 || memcmp(head + len - 4, "\r\n\r\n", 4) != 0) {
        if (len + 1 >= cap && (head = realloc(head, cap *= 2)) == NULL)
            return -1;
        if (read_byte(fd, head + len, deadline) != 1)
            goto fail;
        len++;
    }
    head[len] = '\0';
    r->head = head;
    if (sscanf(head, "HTTP/1.%*d %d", &r->status) != 1)
        goto fail;
    if ((v = th_header(r, "Content-Length")) != NULL)
        clen = atol(v);
    free(v);
    if (is_head || r->status == 204 || r->status == 304)
        clen = 0;
    if (clen >= 0) {
        r->body = malloc((size_t)clen + 1);
        if (r->body == NULL)
            goto fail;
        for (long i = 0; i < clen; i++)
            if (read_byte(fd, r->body + i, deadline) != 1)
                goto fail;
        r->body_len = (size_t)clen;
    } else {
        /* No length: the body runs to the end of the stream (evhttp's own error pages). */
        size_t bcap = 1024;
        char c;
        int got;
        r->body = malloc(bcap);
        while (r->body != NULL && (got = read_byte(fd, &c, deadline)) == 1) {
            if (r->body_len + 1 >= bcap)
                r->body = realloc(r->body, bcap *= 2);
            if (r->body != NULL)
                r->body[r->body_len++] = c;
        }
        if (r->body == NULL)
            goto fail;
    }
    r->body[r->body_len] = '\0';
    return 0;
fail:
    if (r->head == NULL)
        free(head);
    th_resp_free(r);
    return -1;
}

int th_request(unsigned port, const char *raw, struct th_resp *r)
{
    int fd = th_connect(port), rc = -1;
    memset(r, 0, sizeof(*r));
    if (fd < 0)
        return -1;
    if (th_send(fd, raw, strlen(raw)) == 0)
        rc = th_read(fd, r, strncmp(raw, "HEAD ", 5) == 0, 5000);
    close(fd);
    return rc;
}

char *th_header(const struct th_resp *r, const char *name)
{
    size_t n = strlen(name);
    const char *line = r->head != NULL ? strstr(r->head, "\r\n") : NULL;
    while (line != NULL && line[2] != '\r') {
        line += 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1, *end = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(end - v));
        }
        line = strstr(line, "\r\n");
    }
    return NULL;
}

json_t *th_json(const struct th_resp *r)
{
    return json_loadb(r->body != NULL ? r->body : "", r->body_len, 0, NULL);
}

void th_resp_free(struct th_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

int th_closed_within(int fd, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        char buf[4096];
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - ts_now_ms();
        if (left <= 0)
            return 0;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return 1;
    }
}
