/* proxies: the client address behind trusted proxies, and the list's parsing. */
#include "support.h"

#include "proxies.h"

#include <string.h>

static void test_client_ip(void **state)
{
    char err[128], out[64];
    struct proxies *p = proxies_new("10.0.0.1, 10.0.0.2 ::1", err, sizeof(err));
    (void)state;
    assert_non_null(p);

    proxies_client_ip(p, "192.0.2.7", "198.51.100.1", out, sizeof(out));
    assert_string_equal(out, "192.0.2.7"); /* an untrusted peer's header is ignored */
    proxies_client_ip(p, "10.0.0.1", "198.51.100.1", out, sizeof(out));
    assert_string_equal(out, "198.51.100.1");
    proxies_client_ip(p, "10.0.0.1", "203.0.113.9, 198.51.100.1, 10.0.0.2", out, sizeof(out));
    assert_string_equal(out, "198.51.100.1"); /* right-most untrusted */
    proxies_client_ip(p, "::1", "2001:db8::5", out, sizeof(out));
    assert_string_equal(out, "2001:db8::5");
    proxies_client_ip(p, "10.0.0.1", "<script>", out, sizeof(out));
    assert_string_equal(out, "10.0.0.1"); /* not an address: the peer stands */
    proxies_client_ip(p, "10.0.0.1", "198.51.100.1, junk!", out, sizeof(out));
    assert_string_equal(out, "10.0.0.1");
    proxies_client_ip(p, "10.0.0.1", NULL, out, sizeof(out));
    assert_string_equal(out, "10.0.0.1");
    proxies_client_ip(NULL, "10.0.0.1", "198.51.100.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.1"); /* nothing trusted */
    proxies_free(p);

    assert_null(proxies_new("10.0.0.1, example.com", err, sizeof(err)));
    assert_non_null(strstr(err, "TAGPROOF_TRUSTED_PROXIES"));
    p = proxies_new(NULL, err, sizeof(err));
    assert_non_null(p);
    proxies_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_client_ip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
