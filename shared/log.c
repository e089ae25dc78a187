/*
 * log: JSON lines on stderr, written straight into a buffer (no JSON tree per line). The
 * service name and level are set once by main() before threads start and only read
 * afterwards, so no lock is needed around them.
 */
#include "log.h"
#include "utf8.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <stdint.h>

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

/*
 * Whether log_redact() could change s: one of the shapes it masks starts somewhere in it. Most
 * strings (paths, routes, messages) hold none, and are then written without a copy.
 */
static int redact_needed(const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        switch (*p) {
        case 'b':
        case 'B':
            if (strncasecmp(p, "bearer ", 7) == 0)
                return 1;
            break;
        case 'e':
            if (jwt_len(p) > 0)
                return 1;
            break;
        case 't':
            if (strncmp(p, "tp_live_", 8) == 0)
                return 1;
            break;
        case 'p':
        case 'P':
            if (strncasecmp(p, "password=", 9) == 0)
                return 1;
            break;
        case ':':
            if (strncmp(p, "://", 3) == 0)
                return 1;
            break;
        default:
            break;
        }
    }
    return 0;
}

/*
 * One line being written: on the stack while it fits, else on the heap. After an allocation
 * failure it stops growing and the line is dropped.
 */
struct line {
    char *buf;
    size_t len, cap;
    int failed;
    char stack[2048];
};

static void line_put(struct line *l, const char *s, size_t n)
{
    if (l->failed)
        return;
    if (l->len + n > l->cap) {
        size_t cap = (l->len + n) * 2;
        char *grown = l->buf == l->stack ? malloc(cap) : realloc(l->buf, cap);
        if (grown == NULL) {
            l->failed = 1;
            return;
        }
        if (l->buf == l->stack)
            memcpy(grown, l->stack, l->len);
        l->buf = grown;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

#define LINE_LIT(l, lit) line_put((l), (lit), sizeof(lit) - 1)

/* A JSON string, escaped as jansson escapes; bytes that are not UTF-8 become U+FFFD. */
static void line_string(struct line *l, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    LINE_LIT(l, "\"");
    while (*p != '\0') {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        line_put(l, (const char *)run, (size_t)(p - run));
        if (*p == '\0')
            break;
        if (*p >= 0x80) {
            size_t n = utf8_char_len(p, SIZE_MAX);
            if (n == 0) {
                LINE_LIT(l, "\\ufffd");
                p++;
            } else {
                line_put(l, (const char *)p, n);
                p += n;
            }
            continue;
        }
        char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
        switch (*p) {
        case '"':
            LINE_LIT(l, "\\\"");
            break;
        case '\\':
            LINE_LIT(l, "\\\\");
            break;
        case '\b':
            LINE_LIT(l, "\\b");
            break;
        case '\f':
            LINE_LIT(l, "\\f");
            break;
        case '\n':
            LINE_LIT(l, "\\n");
            break;
        case '\r':
            LINE_LIT(l, "\\r");
            break;
        case '\t':
            LINE_LIT(l, "\\t");
            break;
        default:
            line_put(l, esc, sizeof(esc));
        }
        p++;
    }
    LINE_LIT(l, "\"");
}

/* A string with the secrets inside it masked (log_redact), escaped. */
static void line_redacted(struct line *l, const char *s)
{
    if (!redact_needed(s)) {
        line_string(l, s);
        return;
    }
    char *r = log_redact(s);
    if (r == NULL) {
        l->failed = 1;
        return;
    }
    line_string(l, r);
    free(r);
}

/*
 * A real with at most three decimals and six digits (a latency in ms to the microsecond, the
 * usual real of a log line), written as line_real would write it, without printf. 0 when v
 * is not such a number.
 */
static int line_real_short(struct line *l, double v)
{
    char buf[16];
    size_t n = 0;
    if (!(v > -1000.0 && v < 1000.0) || (v == 0.0 && signbit(v)))
        return 0;
    long long k = (long long)(v * 1000.0 + (v < 0 ? -0.5 : 0.5)); /* |v * 1000| < 10^6 */
    if ((double)k / 1000.0 != v)
        return 0;
    if (k < 0) {
        buf[n++] = '-';
        k = -k;
    }
    /* %.6g of k / 1000 with |k| < 10^6: fixed notation, trailing zeros dropped. */
    long long whole = k / 1000, frac = k % 1000;
    char digits[8];
    size_t d = 0;
    do {
        digits[d++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole > 0);
    while (d > 0)
        buf[n++] = digits[--d];
    buf[n++] = '.';
    if (frac == 0) {
        buf[n++] = '0'; /* jansson's ".0" on a whole number */
    } else {
        buf[n++] = (char)('0' + frac / 100);
        buf[n++] = (char)('0' + frac / 10 % 10);
        buf[n++] = (char)('0' + frac % 10);
        while (buf[n - 1] == '0')
            n--;
    }
    line_put(l, buf, n);
    return 1;
}

/* A real as jansson writes it with JSON_REAL_PRECISION(6): %.6g, always with '.' or 'e'. */
static void line_real(struct line *l, double v)
{
    char buf[40];
    if (line_real_short(l, v))
        return;
    int n = snprintf(buf, sizeof(buf) - 2, "%.6g", v);
    if (n <= 0 || (size_t)n >= sizeof(buf) - 2 || !isfinite(v)) {
        LINE_LIT(l, "null");
        return;
    }
    for (char *c = buf; *c != '\0'; c++)
        if (*c == ',') /* a locale's decimal comma */
            *c = '.';
    if (strspn(buf, "0123456789-") == (size_t)n) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(buf, 'e');
    if (e != NULL) {
        /* 1e+20 → 1e20, 1e-05 → 1e-5, as jansson does. */
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            from = ++to;
        while (*from == '0' && from[1] != '\0')
            from++;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(buf);
    }
    line_put(l, buf, (size_t)n);
}

/*
 * A field's value: secret members by name as "[redacted]", secrets inside strings masked by
 * shape, objects and arrays the same way all the way down.
 */
static void line_value(struct line *l, json_t *v, int depth)
{
    char num[32];
    const char *key;
    json_t *m;
    size_t i;
    int first = 1;

    if (depth > 32) {
        LINE_LIT(l, "null");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        LINE_LIT(l, "{");
        json_object_foreach(v, key, m)
        {
            if (!first)
                LINE_LIT(l, ",");
            first = 0;
            line_string(l, key);
            LINE_LIT(l, ":");
            if (secret_key(key) && !json_is_null(m))
                LINE_LIT(l, "\"[redacted]\"");
            else
                line_value(l, m, depth + 1);
        }
        LINE_LIT(l, "}");
        break;
    case JSON_ARRAY:
        LINE_LIT(l, "[");
        json_array_foreach(v, i, m)
        {
            if (i > 0)
                LINE_LIT(l, ",");
            line_value(l, m, depth + 1);
        }
        LINE_LIT(l, "]");
        break;
    case JSON_STRING:
        line_redacted(l, json_string_value(v));
        break;
    case JSON_INTEGER:
        line_put(
            l, num,
            (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
        break;
    case JSON_REAL:
        line_real(l, json_real_value(v));
        break;
    case JSON_TRUE:
        LINE_LIT(l, "true");
        break;
    case JSON_FALSE:
        LINE_LIT(l, "false");
        break;
    default:
        LINE_LIT(l, "null");
        break;
    }
}

/*
 * The time as "2026-11-22T10:00:00.123Z". The seconds part is formatted once a second per
 * thread: strftime and gmtime_r are most of the cost of a timestamp.
 */
static _Thread_local struct {
    time_t sec;
    char text[24];
} ts_cache;

static void format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != ts_cache.sec || ts_cache.text[0] == '\0') {
        gmtime_r(&ts.tv_sec, &tm);
        strftime(ts_cache.text, sizeof(ts_cache.text), "%Y-%m-%dT%H:%M:%S", &tm);
        ts_cache.sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000;
    snprintf(buf, len, "%s.%03ldZ", ts_cache.text, ms);
}

/*
 * A thread's buffer (log_buffer_start). Thread-local because log_emit() has no context to
 * carry it: each event-loop thread owns its buffer and nothing else ever touches it.
 */
static _Thread_local struct {
    char *buf;
    size_t len;
    void (*wake)(void *);
    void *arg;
} tbuf;

static void write_all(const char *p, size_t left)
{
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

void log_flush(void)
{
    if (tbuf.len > 0)
        write_all(tbuf.buf, tbuf.len);
    tbuf.len = 0;
}

void log_buffer_start(void (*wake)(void *arg), void *arg)
{
    if (tbuf.buf == NULL && (tbuf.buf = malloc(LOG_BUFFER_SIZE)) == NULL)
        return; /* unbuffered, as before */
    tbuf.len = 0;
    tbuf.wake = wake;
    tbuf.arg = arg;
}

void log_buffer_stop(void)
{
    log_flush();
    free(tbuf.buf);
    tbuf.buf = NULL;
    tbuf.wake = NULL;
    tbuf.arg = NULL;
}

/* A whole line out: into the thread's buffer when it has one and the line may wait. */
static void line_out(enum log_level level, const char *p, size_t n)
{
    if (tbuf.buf == NULL) {
        write_all(p, n);
        return;
    }
    if (level >= LOG_WARN || tbuf.len + n > LOG_BUFFER_SIZE) {
        log_flush();
        if (level >= LOG_WARN || n > LOG_BUFFER_SIZE) {
            write_all(p, n);
            return;
        }
    }
    int was_empty = tbuf.len == 0;
    memcpy(tbuf.buf + tbuf.len, p, n);
    tbuf.len += n;
    if (was_empty && tbuf.wake != NULL)
        tbuf.wake(tbuf.arg);
}

/* Members the line itself sets; a field of the same name does not replace them. */
static int own_member(const char *key, int has_request_id)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "service") == 0 ||
           strcmp(key, "msg") == 0 || (has_request_id && strcmp(key, "request_id") == 0);
}

void log_emit(enum log_level level, const char *request_id, const char *msg, json_t *fields)
{
    char ts[40];
    struct line l;
    const char *key;
    json_t *value;

    if (!log_enabled(level)) {
        json_decref(fields);
        return;
    }
    l.buf = l.stack;
    l.len = 0;
    l.cap = sizeof(l.stack);
    l.failed = 0;
    format_time(ts, sizeof(ts));
    /* Written directly, in the order ts, level, service, msg, request_id, then the fields. */
    LINE_LIT(&l, "{\"ts\":\"");
    line_put(&l, ts, strlen(ts));
    LINE_LIT(&l, "\",\"level\":\"");
    line_put(&l, level_names[level], strlen(level_names[level]));
    LINE_LIT(&l, "\",\"service\":");
    line_string(&l, log_service);
    LINE_LIT(&l, ",\"msg\":");
    line_redacted(&l, msg != NULL ? msg : "");
    if (request_id != NULL) {
        LINE_LIT(&l, ",\"request_id\":");
        line_string(&l, request_id);
    }
    if (fields != NULL && json_is_object(fields)) {
        json_object_foreach(fields, key, value)
        {
            if (own_member(key, request_id != NULL))
                continue;
            LINE_LIT(&l, ",");
            line_string(&l, key);
            LINE_LIT(&l, ":");
            if (secret_key(key) && !json_is_null(value))
                LINE_LIT(&l, "\"[redacted]\"");
            else
                line_value(&l, value, 1);
        }
    }
    LINE_LIT(&l, "}\n");
    if (!l.failed)
        line_out(level, l.buf, l.len);
    if (l.buf != l.stack)
        free(l.buf);
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
