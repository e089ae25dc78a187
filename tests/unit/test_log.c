/* Unit tests of log: JSON line shape, level filter, and redaction of secrets. */
#include "support.h"
#include "log.h"

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
        cmocka_unit_test(test_line_shape),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_redact_strings),
        cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
