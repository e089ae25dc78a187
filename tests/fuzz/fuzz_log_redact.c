// fuzz: MODULES log
/*
 * fuzz_log_redact: log_redact on arbitrary strings. Each input is used twice:
 *  - as a whole (up to its first NUL): the output is a string, and equals the input when the
 *    input holds none of the shapes log_redact looks for;
 *  - as "prefix LF secret LF suffix": the secret is placed in one of the shapes log_redact
 *    must mask ("Bearer <secret>", "password=<secret>", "tp_live_<secret>",
 *    "scheme://user:<secret>@host", a JWT), between blanks, with arbitrary text around it,
 *    and must not appear in the output. Secrets are cut to the characters the shape allows,
 *    and skipped when they could appear in the output for another reason (found in the prefix,
 *    the suffix, the text of the shape or "[redacted]") or hold the start of a shape
 *    themselves ("password=" as a bearer token), which would make them ambiguous.
 */
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The checks are not what is fuzzed: no coverage feedback (or cost) from them. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *in, const char *out)
{
    fprintf(stderr, "fuzz_log_redact: %s\ninput:  %s\noutput: %s\n", what, in,
            out != NULL ? out : "(null)");
    abort();
}

NO_COVERAGE static int has_shape(const char *s)
{
    for (const char *p = s; *p != '\0'; p++)
        if (strncasecmp(p, "bearer ", 7) == 0 || strncmp(p, "eyJ", 3) == 0 ||
            strncmp(p, "tp_live_", 8) == 0 || strncasecmp(p, "password=", 9) == 0 ||
            strncmp(p, "://", 3) == 0)
            return 1;
    return 0;
}

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Characters a secret of each shape may hold (what log_redact masks as one run). */
static int bearer_char(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("-_.~+/=", c) != NULL);
}
static int b64url_char(char c)
{
    return is_alnum(c) || c == '-' || c == '_';
}
static int password_char(char c)
{
    return c != '\0' && strchr(" &;'\"", c) == NULL && (unsigned char)c > ' ';
}
static int userinfo_char(char c)
{
    return c != '\0' && strchr("@/ :", c) == NULL && (unsigned char)c > ' ';
}

enum shape { BEARER, PASSWORD, TP_LIVE, URL, JWT, SHAPES };

static void check_secret(const char *prefix, const char *raw, const char *suffix, enum shape sh)
{
    static const char *const before[SHAPES] = {"Bearer ", "password=", "tp_live_",
                                               "redis://u:", "eyJ"};
    static const char *const after[SHAPES] = {"", "", "", "@host:6379/0", ""};
    int (*ok)(char) = sh == BEARER     ? bearer_char
                      : sh == PASSWORD ? password_char
                      : sh == URL      ? userinfo_char
                                       : b64url_char;
    char secret[256];
    size_t n = 0;

    for (; raw[n] != '\0' && n + 1 < sizeof(secret) && ok(raw[n]); n++)
        secret[n] = raw[n];
    secret[n] = '\0';
    if (sh == JWT) {
        /* "eyJ" + a + "." + b + "." + c: the secret is all of it but the fixed start. */
        if (n < 3)
            return;
        secret[n / 3] = '.';
        secret[2 * n / 3] = '.';
    }
    if (n < 4 || strstr(prefix, secret) != NULL || strstr(suffix, secret) != NULL ||
        strcasestr(before[sh], secret) != NULL || strcasestr(after[sh], secret) != NULL ||
        strstr("[redacted]", secret) != NULL || has_shape(secret))
        return;

    size_t len = strlen(prefix) + strlen(secret) + strlen(suffix) + 32;
    char *in = malloc(len);
    if (in == NULL)
        return;
    snprintf(in, len, "%s %s%s%s %s", prefix, before[sh], secret, after[sh], suffix);
    char *out = log_redact(in);
    if (out == NULL)
        fail("out of memory", in, NULL);
    /*
     * The mask itself can complete a secret that ends like its start ("=[re" before
     * "[redacted]"): look for the secret with every mask replaced by a byte no secret holds.
     */
    char *masked = strdup(out);
    if (masked == NULL)
        fail("out of memory", in, out);
    for (char *m = masked; (m = strstr(m, "[redacted]")) != NULL; m++) {
        *m = '\x01';
        memmove(m + 1, m + 10, strlen(m + 10) + 1);
    }
    if (strstr(masked, secret) != NULL)
        fail("the secret is still in the output", in, out);
    free(masked);
    free(out);
    free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 3);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';

    char *out = log_redact(buf);
    if (out == NULL)
        fail("out of memory", buf, NULL);
    if (!has_shape(buf) && strcmp(out, buf) != 0)
        fail("an input without secrets was changed", buf, out);
    free(out);

    /* Up to the first NUL, three parts separated by line feeds; missing ones are empty. */
    char *prefix = buf, *secret = buf + size + 1, *suffix = buf + size + 2;
    char *lf = strchr(prefix, '\n');
    if (lf != NULL) {
        *lf = '\0';
        secret = lf + 1;
        lf = strchr(secret, '\n');
        if (lf != NULL) {
            *lf = '\0';
            suffix = lf + 1;
        }
    }
    for (enum shape sh = 0; sh < SHAPES; sh++)
        check_secret(prefix, secret, suffix, sh);
    free(buf);
    return 0;
}
