/*
 * Unit tests of client: the one line a person reads for a failed answer, and which Location
 * headers the client follows (never one that would carry the API key to another origin).
 * The requests themselves are exercised against the real service by tests/e2e/test_cli_upload.sh.
 */
#include "support.h"
#include "client.h"

#include <string.h>

#include <curl/curl.h>

static void problem_of(long status, const char *body, char *out, size_t len)
{
    struct client_reply r = {.status = status,
                             .body = (char *)body,
                             .body_len = body != NULL ? strlen(body) : 0,
                             .retry_after_s = -1};
    client_reply_problem(&r, out, len);
}

static void test_problem_lines(void **state)
{
    (void)state;
    char s[512];
    problem_of(401,
               "{\"type\":\"about:blank\",\"title\":\"Unauthorized\",\"status\":401,"
               "\"detail\":\"the API key is not valid\",\"request_id\":\"abc\"}",
               s, sizeof(s));
    assert_string_equal(s, "HTTP 401 Unauthorized: the API key is not valid (request abc)");
    /* A detail equal to the title is said once. */
    problem_of(404, "{\"title\":\"Not Found\",\"detail\":\"Not Found\"}", s, sizeof(s));
    assert_string_equal(s, "HTTP 404 Not Found");
    /* Only the first line of a detail, shortened, and never a cut UTF-8 sequence. */
    char body[1024] = "{\"detail\":\"";
    for (int i = 0; i < 150; i++)
        strcat(body, "\xc3\xa9");
    strcat(body, "\\nsecond line\"}");
    problem_of(422, body, s, sizeof(s));
    assert_null(strstr(s, "second"));
    assert_non_null(strstr(s, "…"));
    assert_int_equal(strncmp(s, "HTTP 422: ", 10), 0);
    assert_true(strlen(s) <= 10 + 200 + strlen("…"));
    /* Plain text is quoted; an HTML error page is not; no body at all is just the status. */
    problem_of(502, "bad gateway\nmore", s, sizeof(s));
    assert_string_equal(s, "HTTP 502: bad gateway");
    problem_of(413, "<HTML><HEAD>\n<TITLE>413 Request Entity Too Large</TITLE>", s, sizeof(s));
    assert_string_equal(s, "HTTP 413");
    problem_of(500, NULL, s, sizeof(s));
    assert_string_equal(s, "HTTP 500");
    /* A short buffer still ends in NUL. */
    problem_of(401, "{\"title\":\"Unauthorized\",\"detail\":\"x\"}", s, 8);
    assert_string_equal(s, "HTTP 40");
}

static void test_location_paths(void **state)
{
    (void)state;
    char err[256];
    struct client *c = client_new("http://127.0.0.1:8081/", "k", err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(client_location_path(c, "/v1/uploads/x"), "/v1/uploads/x");
    assert_string_equal(client_location_path(c, "http://127.0.0.1:8081/v1/uploads/x"),
                        "/v1/uploads/x");
    assert_null(client_location_path(c, "//evil.example/v1/uploads/x"));
    assert_null(client_location_path(c, "http://127.0.0.1:80812/v1/uploads/x"));
    assert_null(client_location_path(c, "https://evil.example/v1/uploads/x"));
    assert_null(client_location_path(c, "v1/uploads/x"));
    client_free(c);
    assert_null(client_new("ftp://127.0.0.1", "k", err, sizeof(err)));
    assert_non_null(strstr(err, "http://"));
}

static void test_no_answer_is_an_error(void **state)
{
    (void)state;
    char err[256];
    int port = ts_free_port();
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    struct client *c = client_new(url, "k", err, sizeof(err));
    struct client_reply r = {.retry_after_s = -1};
    assert_non_null(c);
    assert_int_equal(client_get(c, "/v1/health", &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, url));
    assert_int_equal(r.status, 0);
    assert_null(r.body);
    assert_int_equal(client_get(c, "no-slash", &r, err, sizeof(err)), -1);
    client_reply_free(&r);
    client_free(c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_lines),
        cmocka_unit_test(test_location_paths),
        cmocka_unit_test(test_no_answer_is_an_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
