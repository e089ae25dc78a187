/*
 * Unit tests of log: JSON line shape, level filter, redaction of secrets, values written as
 * jansson writes them, and a thread's buffered lines (whole, in order, flushed when asked,
 * at once for warnings).
 */
#include "support.h"
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs fn with the log pointed at a pipe and returns what it wrote (caller frees). */
static char *capture(void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    log_init("test-svc", LOG_INFO, fds[1]);
    fn();
    close(fds[1]);
    char *out = calloc(1, 65536);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], out + n, 65535 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    log_init("test-svc", LOG_INFO, 2);
    return out;
}

static void emit_request(void)
{
    json_t *f = json_pack("{s:s, s:s, s:i, s:f}", "method", "GET", "path", "/v1/scan/x", "status",
                          200, "latency_ms", 1.5);
    log_emit(LOG_INFO, "req-1", "request", f);
    log_debug("filtered out %d", 1);
}

static void test_line_shape(void **state)
{
    (void)state;
    char *out = capture(emit_request);
    assert_non_null(strchr(out, '\n'));
    assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* the debug line was filtered */
    json_error_t e;
    json_t *line = json_loads(out, JSON_DISABLE_EOF_CHECK, &e);
    assert_non_null(line);
    const char *keys[] = {"ts",     "level", "service", "msg",       "request_id",
                          "method", "path",  "status",  "latency_ms"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_non_null(json_object_get(line, keys[i]));
    assert_string_equal(json_string_value(json_object_get(line, "service")), "test-svc");
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    const char *ts = json_string_value(json_object_get(line, "ts"));
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[23], 'Z');
    json_decref(line);
    free(out);
}

static void emit_secrets(void)
{
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}}", "authorization",
                          "Bearer abc.def.ghi", "x-api-key", "tp_live_k1_SECRETSECRET", "password",
                          "hunter2", "client_ip", "203.0.113.9", "note",
                          "conn postgresql://svc:hunter2@db/x", "nested", "token", "zzz");
    log_emit(LOG_WARN, NULL,
             "auth failed for Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln key "
             "tp_live_abc_DEFSECRET password=hunter2 host=db",
             f);
}

static void test_redaction(void **state)
{
    (void)state;
    char *out = capture(emit_secrets);
    const char *leaks[] = {"abc.def.ghi", "SECRETSECRET", "hunter2", "203.0.113.9",
                           "eyJzdWIi",    "DEFSECRET",    "zzz"};
    for (size_t i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++)
        assert_null(strstr(out, leaks[i]));
    assert_non_null(strstr(out, "[redacted]"));
    assert_non_null(strstr(out, "host=db"));
    free(out);
}

static void test_redact_strings(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain text", "plain text"},
        {"redis://:pw@127.0.0.1:6379/0", "redis://:[redacted]@127.0.0.1:6379/0"},
        {"postgresql://u:p@h/db", "postgresql://u:[redacted]@h/db"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"},
        {"user=x password=secret dbname=y", "user=x password=[redacted] dbname=y"},
        {"Authorization: Bearer tok123", "Authorization: Bearer [redacted]"},
        {"key tp_live_id_secret end", "key tp_live_[redacted] end"},
        /* Found by fuzzing: a doubled scheme or a token of another shape must not leak. */
        {"Authorization: Bearer Bearer s3cr3t-token-123",
         "Authorization: Bearer Bearer [redacted]"},
        {"x bearer password=!hunter2", "x bearer [redacted]"},
        {"x bearer redis://u:\"\"!hunter2@host:6379/0 y", "x bearer [redacted] y"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = log_redact(cases[i].in);
        assert_string_equal(r, cases[i].out);
        free(r);
    }
}

static void emit_values(void)
{
    json_t *f =
        json_pack("{s:i, s:f, s:f, s:f, s:f, s:b, s:n, s:[s, i, {s:s}], s:{s:{s:s}}, "
                  "s:s, s:s, s:s}",
                  "int", -42, "real", 1.5, "whole", 3.0, "big", 1e20, "small", 1.25e-7, "yes", 1,
                  "none", "list", "Bearer sekrit", 7, "password", "p1", "deep", "a", "token", "t1",
                  "esc", "q\"b\\s\n\x01\x7f é", "msg", "not the message", "ts", "not the time");
    log_emit(LOG_INFO, "rid \"x\"", "values \xff end", f);
}

/* Every kind of value, as jansson would write it (with secrets masked). */
static void test_values(void **state)
{
    (void)state;
    char *out = capture(emit_values);
    json_error_t e;
    json_t *line = json_loads(out, JSON_DISABLE_EOF_CHECK, &e);
    if (line == NULL)
        fail_msg("not JSON (%s): %s", e.text, out);
    json_t *want =
        json_pack("{s:i, s:f, s:f, s:f, s:f, s:b, s:n, s:[s, i, {s:s}], s:{s:{s:s}}, "
                  "s:s}",
                  "int", -42, "real", 1.5, "whole", 3.0, "big", 1e20, "small", 1.25e-7, "yes", 1,
                  "none", "list", "Bearer [redacted]", 7, "password", "[redacted]", "deep", "a",
                  "token", "[redacted]", "esc", "q\"b\\s\n\x01\x7f é");
    const char *key;
    json_t *v;
    json_object_foreach(want, key, v)
    {
        if (!json_equal(json_object_get(line, key), v))
            fail_msg("member %s differs in %s", key, out);
    }
    assert_non_null(strstr(out, "\"big\":1e20,"));
    assert_non_null(strstr(out, "\"whole\":3.0,"));
    assert_non_null(strstr(out, "\"small\":1.25e-7,"));
    assert_non_null(strstr(out, "\\u0001"));
    /* The line's own members are not replaced by fields of the same name. */
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "values \xef\xbf\xbd end");
    assert_string_equal(json_string_value(json_object_get(line, "request_id")), "rid \"x\"");
    assert_int_equal(strlen(json_string_value(json_object_get(line, "ts"))), 24);
    json_decref(want);
    json_decref(line);
    free(out);
}

static int wakes;
static void count_wake(void *arg)
{
    assert_ptr_equal(arg, &wakes);
    wakes++;
}

/* Reads what is in the pipe now (non-blocking); caller frees. */
static char *drain(int fd)
{
    char *out = calloc(1, 1 << 20);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, out + n, (1 << 20) - 1 - n)) > 0)
        n += (size_t)r;
    return out;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static void test_buffered_lines(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) >= (1 << 20), 1);
    log_init("test-svc", LOG_INFO, fds[1]);
    wakes = 0;
    log_buffer_start(count_wake, &wakes);

    log_info("one");
    log_info("two");
    assert_int_equal(wakes, 1); /* once, when the first line entered the empty buffer */
    char *out = drain(fds[0]);
    assert_string_equal(out, ""); /* nothing written yet */
    free(out);
    log_flush();
    out = drain(fds[0]);
    assert_int_equal(count_lines(out), 2);
    assert_true(strstr(out, "\"one\"") < strstr(out, "\"two\""));
    free(out);

    /* A warning goes out at once, after what waited. */
    log_info("three");
    assert_int_equal(wakes, 2);
    log_warn("four");
    out = drain(fds[0]);
    assert_int_equal(count_lines(out), 2);
    assert_true(strstr(out, "\"three\"") < strstr(out, "\"four\""));
    free(out);

    /* A full buffer is written whole before a line that would not fit. */
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    size_t lines = 0;
    for (size_t total = 0; total < 2 * LOG_BUFFER_SIZE; total += sizeof(big) + 80, lines++)
        log_info("%s", big);
    out = drain(fds[0]);
    size_t written = count_lines(out);
    assert_true(written > 0 && written < lines);
    assert_int_equal(strlen(out) % (strlen(out) / written), 0); /* whole lines only */
    free(out);
    log_buffer_stop();
    out = drain(fds[0]);
    assert_int_equal(written + count_lines(out), lines);
    free(out);

    /* Stopped: a line a write again. */
    log_info("five");
    out = drain(fds[0]);
    assert_int_equal(count_lines(out), 1);
    free(out);
    close(fds[0]);
    close(fds[1]);
    log_init("test-svc", LOG_INFO, 2);
}

static void test_level_parse(void **state)
{
    (void)state;
    enum log_level l;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_DEBUG);
    assert_int_equal(log_level_parse("WARN", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("loud", &l), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_shape),     cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_redact_strings), cmocka_unit_test(test_values),
        cmocka_unit_test(test_buffered_lines), cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
