/*
 * log: JSON lines on stderr. The service name and level are set once by main() before
 * threads start and only read afterwards, so no lock is needed around them.
 */
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_service[64] = "tagproof";
static enum log_level log_min = LOG_INFO;
static int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *service, enum log_level min_level, int fd)
{
    snprintf(log_service, sizeof(log_service), "%s", service);
    log_min = min_level;
    log_fd = fd;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return level >= log_min;
}

/* Names of members that only ever hold secrets or personal data. */
static int secret_key(const char *key)
{
    static const char *const words[] = {
        "password", "passwd", "secret", "token",   "authorization", "api_key",     "apikey",
        "api-key",  "cookie", "pepper", "private", "client_ip",     "remote_addr", "forwarded"};
    char lower[64];
    size_t n = strlen(key);
    if (n >= sizeof(lower))
        n = sizeof(lower) - 1;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)key[i]);
    lower[n] = '\0';
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(lower, words[i]) != NULL)
            return 1;
    return strcmp(lower, "ip") == 0 || strcmp(lower, "key") == 0;
}

static int b64url_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '_';
}

/* Length of a JWT-shaped run (three base64url segments, the first "eyJ...") at s, or 0. */
static size_t jwt_len(const char *s)
{
    if (strncmp(s, "eyJ", 3) != 0)
        return 0;
    size_t i = 0;
    int dots = 0;
    while (b64url_char(s[i]) || (s[i] == '.' && dots < 2)) {
        if (s[i] == '.')
            dots++;
        i++;
    }
    return dots == 2 ? i : 0;
}

char *log_redact(const char *s)
{
    static const char mask[] = "[redacted]";
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap + 64);
    if (out == NULL)
        return NULL;
    cap += 64;

#define PUT(p, n)                                                                                  \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (len + n_ + 1 > cap) {                                                                  \
            cap = (len + n_ + 1) * 2;                                                              \
            char *t_ = realloc(out, cap);                                                          \
            if (t_ == NULL) {                                                                      \
                free(out);                                                                         \
                return NULL;                                                                       \
            }                                                                                      \
            out = t_;                                                                              \
        }                                                                                          \
        memcpy(out + len, (p), n_);                                                                \
        len += n_;                                                                                 \
    } while (0)

    const char *p = s;
    while (*p != '\0') {
        size_t n;
        if (strncasecmp(p, "bearer ", 7) == 0) {
            /* Whatever follows the scheme (once any repeated "Bearer " is passed) up to the
             * next blank is the credential, whatever it looks like: stopping earlier (at a
             * quote, say) would let the rest of it through. */
            while (strncasecmp(p, "bearer ", 7) == 0) {
                PUT(p, 7);
                p += 7;
                while (*p == ' ')
                    PUT(p++, 1);
            }
            n = strcspn(p, " \t\r\n");
            if (n > 0)
                PUT(mask, sizeof(mask) - 1);
            p += n;
        } else if ((n = jwt_len(p)) > 0) {
            PUT(mask, sizeof(mask) - 1);
            p += n;
        } else if (strncmp(p, "tp_live_", 8) == 0) {
            PUT(p, 8);
            p += 8;
            n = 0;
            while (b64url_char(p[n]))
                n++;
            PUT(mask, sizeof(mask) - 1);
            p += n;
        } else if (strncasecmp(p, "password=", 9) == 0) {
            PUT(p, 9);
            p += 9;
            n = strcspn(p, " &;'\"");
            PUT(mask, sizeof(mask) - 1);
            p += n;
        } else if (strncmp(p, "://", 3) == 0) {
            /* scheme://user:password@host: mask what lies between ':' and '@'. */
            PUT(p, 3);
            p += 3;
            size_t auth = strcspn(p, "@/ ");
            size_t colon = strcspn(p, ":@/ ");
            if (p[auth] == '@' && colon < auth) {
                PUT(p, colon + 1);
                PUT(mask, sizeof(mask) - 1);
                p += auth;
            }
        } else {
            PUT(p, 1);
            p++;
        }
    }
    out[len] = '\0';
#undef PUT
    return out;
}

/* Redacts fields in place: secret members by name, secrets inside string values by shape. */
static void redact_object(json_t *obj, int depth)
{
    const char *key;
    json_t *value;
    if (depth > 8)
        return;
    json_object_foreach(obj, key, value)
    {
        if (secret_key(key) && !json_is_null(value)) {
            json_object_set_new(obj, key, json_string("[redacted]"));
        } else if (json_is_string(value)) {
            char *r = log_redact(json_string_value(value));
            if (r != NULL && strcmp(r, json_string_value(value)) != 0)
                json_object_set_new(obj, key, json_string(r));
            free(r);
        } else if (json_is_object(value)) {
            redact_object(value, depth + 1);
        }
    }
}

static void format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void log_emit(enum log_level level, const char *request_id, const char *msg, json_t *fields)
{
    char ts[40];
    json_t *line = NULL;
    char *text = NULL, *safe_msg = NULL;

    if (!log_enabled(level)) {
        json_decref(fields);
        return;
    }
    format_time(ts, sizeof(ts));
    safe_msg = log_redact(msg != NULL ? msg : "");
    line = json_object();
    if (line == NULL || safe_msg == NULL)
        goto done;
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "service", json_string(log_service));
    json_object_set_new(line, "msg", json_string(safe_msg));
    if (request_id != NULL)
        json_object_set_new(line, "request_id", json_string(request_id));
    if (fields != NULL && json_is_object(fields)) {
        redact_object(fields, 0);
        json_object_update_missing(line, fields);
    }
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (text != NULL) {
        size_t n = strlen(text);
        text[n] = '\n'; /* json_dumps leaves room for the terminating NUL we overwrite */
        const char *p = text;
        size_t left = n + 1;
        while (left > 0) {
            ssize_t w = write(log_fd, p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
    }
done:
    free(text);
    free(safe_msg);
    json_decref(line);
    json_decref(fields);
}

static void log_vformat(enum log_level level, const char *fmt, va_list ap)
{
    char buf[2048];
    if (!log_enabled(level))
        return;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    log_emit(level, NULL, buf, NULL);
}

#define LOG_FN(name, level)                                                                        \
    void name(const char *fmt, ...)                                                                \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vformat(level, fmt, ap);                                                               \
        va_end(ap);                                                                                \
    }
LOG_FN(log_debug, LOG_DEBUG)
LOG_FN(log_info, LOG_INFO)
LOG_FN(log_warn, LOG_WARN)
LOG_FN(log_error, LOG_ERROR)
