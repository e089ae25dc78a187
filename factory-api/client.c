/*
 * client: blocking requests to the factory API for the command line (libcurl easy handles),
 * and the one-line account of a failed answer. See client.h.
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#define CLIENT_USER_AGENT "tagproof-cli/1"
/* Answers of the API are small JSON documents; an upload's lists its first 1,000 errors. */
#define CLIENT_MAX_REPLY (16u * 1024 * 1024)
#define CLIENT_CONNECT_TIMEOUT_MS 10000L
#define CLIENT_GET_TIMEOUT_MS 60000L
/* An upload may stall only this long (less than one byte a second) before it is given up. */
#define CLIENT_STALL_S 120L

struct client {
    CURL *curl;     /* reused, so polls keep their connection alive */
    char *base_url; /* without a trailing slash */
    char *key_header;
};

/* What a transfer collects. */
struct transfer {
    struct client_reply *out;
    size_t cap;
    int too_big;
    const struct client_body *body;
    uint64_t sent;
    int short_read; /* the file ended before its announced size */
};

void client_reply_free(struct client_reply *r)
{
    free(r->body);
    free(r->location);
    memset(r, 0, sizeof(*r));
    r->retry_after_s = -1;
}

struct client *client_new(const char *base_url, const char *api_key, char *err, size_t errlen)
{
    struct client *c = NULL;
    size_t n = strlen(base_url);

    if (strncasecmp(base_url, "http://", 7) != 0 && strncasecmp(base_url, "https://", 8) != 0) {
        snprintf(err, errlen, "the URL must start with http:// or https:// (got \"%s\")", base_url);
        return NULL;
    }
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto oom;
    c->base_url = strndup(base_url, n);
    if (c->base_url == NULL || asprintf(&c->key_header, "X-Api-Key: %s", api_key) < 0) {
        c->key_header = NULL;
        goto oom;
    }
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        snprintf(err, errlen, "cannot set up libcurl");
        client_free(c);
        return NULL;
    }
    return c;
oom:
    snprintf(err, errlen, "out of memory");
    client_free(c);
    return NULL;
}

void client_free(struct client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    if (c->key_header != NULL) {
        explicit_bzero(c->key_header, strlen(c->key_header));
        free(c->key_header);
    }
    free(c->base_url);
    free(c);
}

const char *client_location_path(const struct client *c, const char *loc)
{
    size_t n = strlen(c->base_url);
    if (loc[0] == '/' && loc[1] != '/')
        return loc;
    if (strncasecmp(loc, c->base_url, n) == 0 && loc[n] == '/')
        return loc + n;
    return NULL;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct transfer *t = arg;
    struct client_reply *r = t->out;
    size_t add = size * nmemb;

    if (add > CLIENT_MAX_REPLY - r->body_len) {
        t->too_big = 1;
        return 0;
    }
    if (r->body_len + add + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < r->body_len + add + 1)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (nb == NULL)
            return 0;
        r->body = nb;
        t->cap = cap;
    }
    memcpy(r->body + r->body_len, p, add);
    r->body_len += add;
    r->body[r->body_len] = '\0';
    return add;
}

/* The value of header line h if its name is name (case-insensitive), trimmed; else NULL. */
static char *header_value(const char *h, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(h, name, n) != 0 || h[n] != ':')
        return NULL;
    const char *v = h + n + 1, *end = h + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    return strndup(v, (size_t)(end - v));
}

static size_t on_header(char *h, size_t size, size_t nitems, void *arg)
{
    struct transfer *t = arg;
    struct client_reply *r = t->out;
    size_t len = size * nitems;
    char *v;

    /* A status line starts the headers of a new answer (after a 100 Continue, say). */
    if (len > 5 && strncmp(h, "HTTP/", 5) == 0) {
        free(r->location);
        r->location = NULL;
        r->retry_after_s = -1;
    } else if ((v = header_value(h, len, "Location")) != NULL) {
        free(r->location);
        r->location = v;
    } else if ((v = header_value(h, len, "Retry-After")) != NULL) {
        char *end;
        errno = 0;
        long s = strtol(v, &end, 10);
        if (errno == 0 && end != v && *end == '\0' && s >= 0 && s <= 86400)
            r->retry_after_s = (int)s;
        free(v);
    }
    return len;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct transfer *t = arg;
    const struct client_body *b = t->body;
    uint64_t left = b->size - t->sent;
    size_t want = size * nitems, got;

    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    got = fread(buf, 1, want, b->file);
    if (got == 0) {
        t->short_read = 1;
        return CURL_READFUNC_ABORT;
    }
    t->sent += got;
    if (b->on_sent != NULL)
        b->on_sent(b->arg, t->sent, b->size);
    return got;
}

/* Runs the request set up on c->curl; 0 when an answer arrived. */
static int perform(struct client *c, const char *path, struct curl_slist *headers,
                   struct transfer *t, char *err, size_t errlen)
{
    CURL *h = c->curl;
    char *url = NULL;
    CURLcode rc;
    int ret = -1;

    client_reply_free(t->out);
    if (path[0] != '/' || asprintf(&url, "%s%s", c->base_url, path) < 0) {
        url = NULL;
        snprintf(err, errlen, "bad request path \"%s\"", path);
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, CLIENT_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    rc = curl_easy_perform(h);
    if (t->short_read) {
        snprintf(err, errlen, "the file ended before its %llu bytes were sent (did it change?)",
                 (unsigned long long)t->body->size);
    } else if (t->too_big) {
        snprintf(err, errlen, "the answer is larger than %u bytes", CLIENT_MAX_REPLY);
    } else if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", c->base_url, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->out->status);
        if (t->out->body == NULL && (t->out->body = strdup("")) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        ret = 0;
    }
out:
    if (ret != 0)
        client_reply_free(t->out);
    /* The handle is reused: nothing of this request's may stay referenced by it. */
    curl_easy_reset(h);
    free(url);
    return ret;
}

int client_get(struct client *c, const char *path, struct client_reply *out, char *err,
               size_t errlen)
{
    struct transfer t = {.out = out};
    struct curl_slist *headers = NULL, *l;
    int rc = -1;

    if ((l = curl_slist_append(headers, c->key_header)) == NULL)
        goto oom;
    headers = l;
    if ((l = curl_slist_append(headers, "Accept: application/json")) == NULL)
        goto oom;
    headers = l;
    curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, CLIENT_GET_TIMEOUT_MS);
    rc = perform(c, path, headers, &t, err, errlen);
    curl_slist_free_all(headers);
    return rc;
oom:
    curl_slist_free_all(headers);
    snprintf(err, errlen, "out of memory");
    return -1;
}

int client_post_stream(struct client *c, const char *path, const struct client_body *body,
                       struct client_reply *out, char *err, size_t errlen)
{
    struct transfer t = {.out = out, .body = body};
    struct curl_slist *headers = NULL, *l;
    char *ct = NULL, *idem = NULL;
    int rc = -1;

    if (asprintf(&ct, "Content-Type: %s", body->content_type) < 0) {
        ct = NULL;
        goto oom;
    }
    if (body->idempotency_key != NULL &&
        asprintf(&idem, "Idempotency-Key: %s", body->idempotency_key) < 0) {
        idem = NULL;
        goto oom;
    }
    if ((l = curl_slist_append(headers, c->key_header)) == NULL)
        goto oom;
    headers = l;
    if ((l = curl_slist_append(headers, "Accept: application/json")) == NULL)
        goto oom;
    headers = l;
    if ((l = curl_slist_append(headers, ct)) == NULL)
        goto oom;
    headers = l;
    if (idem != NULL) {
        if ((l = curl_slist_append(headers, idem)) == NULL)
            goto oom;
        headers = l;
    }
    /*
     * A POST whose body comes from the read callback, with its size known up front: libcurl
     * then sends Content-Length and streams the file. For bodies over 1 MiB it also asks
     * "Expect: 100-continue", so a refusal (401, 404, 413) arrives before the file is sent.
     */
    curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->size);
    curl_easy_setopt(c->curl, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c->curl, CURLOPT_READDATA, &t);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_TIME, CLIENT_STALL_S);
    rc = perform(c, path, headers, &t, err, errlen);
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    curl_slist_free_all(headers);
    free(ct);
    free(idem);
    return rc;
}

/* Copies at most max bytes of the first line of s into out (len bytes), "…" when cut. */
static void first_line(const char *s, size_t max, char *out, size_t len)
{
    size_t n = strcspn(s, "\r\n");
    int cut = n > max;
    if (cut) {
        n = max;
        /* Do not cut a UTF-8 sequence in two. */
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    snprintf(out, len, "%.*s%s", (int)n, s, cut ? "…" : "");
}

void client_reply_problem(const struct client_reply *r, char *out, size_t len)
{
    json_t *doc = NULL;
    const char *title = NULL, *detail = NULL, *rid = NULL;
    char line[240];
    size_t n;

    if (len == 0)
        return;
    if (r->body != NULL && r->body_len > 0)
        doc = json_loadb(r->body, r->body_len, 0, NULL);
    if (json_is_object(doc)) {
        title = json_string_value(json_object_get(doc, "title"));
        detail = json_string_value(json_object_get(doc, "detail"));
        rid = json_string_value(json_object_get(doc, "request_id"));
    }
    n = (size_t)snprintf(out, len, "HTTP %ld", r->status);
    if (n < len && title != NULL)
        n += (size_t)snprintf(out + n, len - n, " %s", title);
    if (n < len && detail != NULL && (title == NULL || strcmp(detail, title) != 0)) {
        first_line(detail, 200, line, sizeof(line));
        n += (size_t)snprintf(out + n, len - n, ": %s", line);
    } else if (n < len && doc == NULL && r->body != NULL) {
        /* Plain text says something; an HTML error page's first line does not. */
        first_line(r->body + strspn(r->body, " \t\r\n"), 120, line, sizeof(line));
        if (line[0] != '\0' && line[0] != '<')
            n += (size_t)snprintf(out + n, len - n, ": %s", line);
    }
    if (n < len && rid != NULL)
        snprintf(out + n, len - n, " (request %s)", rid);
    json_decref(doc);
}
