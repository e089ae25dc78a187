/* Unit tests of config: defaults, overrides, and one clear line for every bad value. */
#include "support.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void clear_env(void)
{
    struct config_doc d;
    for (size_t i = 0; config_doc(i, &d) == 0; i++)
        unsetenv(d.name);
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    assert_int_equal(config_load(&c, err, sizeof(err)), 0);
    assert_int_equal(c.redis_timeout_ms, 100);
    assert_int_equal(c.pg_timeout_ms, 1000);
    assert_int_equal(c.anchor_interval_s, 60);
    assert_string_equal(c.log_origin, "tagproof.local/log");
    assert_string_equal(c.scan_listen.host, "127.0.0.1");
    assert_int_equal(c.scan_listen.port, 8080);
    assert_int_equal(c.factory_listen.port, 8081);
    assert_int_equal(c.anchor_listen.port, 8082);
    assert_int_equal(c.devledger_listen.port, 8090);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 6379);
    assert_string_equal(c.ledger, "http");
    assert_string_equal(c.pg_migrate_url, c.pg_url);
    assert_true(c.http_threads >= 1);
    config_free(&c);
}

static void test_overrides(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    setenv("TAGPROOF_REDIS_URL", "redis://:s3cret@10.0.0.5:6380/3", 1);
    setenv("TAGPROOF_SCAN_LISTEN", "[::1]:9000", 1);
    setenv("TAGPROOF_REDIS_SENTINELS", "127.0.0.1:26379,127.0.0.1:26380", 1);
    setenv("TAGPROOF_LEDGER", "ethereum", 1);
    setenv("TAGPROOF_ETH_FROM", "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", 1);
    setenv("TAGPROOF_PG_URL", "host=a,b port=1,2 target_session_attrs=read-write", 1);
    assert_int_equal(config_load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.redis_host, "10.0.0.5");
    assert_int_equal(c.redis_port, 6380);
    assert_int_equal(c.redis_db, 3);
    assert_string_equal(c.redis_password, "s3cret");
    assert_string_equal(c.scan_listen.host, "::1");
    assert_int_equal(c.scan_listen.port, 9000);
    assert_string_equal(c.ledger, "ethereum");
    assert_string_equal(c.pg_url, "host=a,b port=1,2 target_session_attrs=read-write");
    config_free(&c);

    /* A password may hold '@' and '/', raw or percent-encoded. */
    setenv("TAGPROOF_REDIS_URL", "redis://:p@ss/w%3Ard@10.0.0.6:6381/2", 1);
    assert_int_equal(config_load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.redis_password, "p@ss/w:rd");
    assert_string_equal(c.redis_host, "10.0.0.6");
    assert_int_equal(c.redis_port, 6381);
    assert_int_equal(c.redis_db, 2);
    config_free(&c);
    setenv("TAGPROOF_REDIS_URL", "redis://:bad%4@h:1/0", 1);
    assert_int_equal(config_load(&c, err, sizeof(err)), -1);
    assert_null(strstr(err, "bad%4"));
}

/* Each bad value names its variable; secrets in it are never echoed. */
static void test_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } bad[] = {
        {"TAGPROOF_REDIS_TIMEOUT_MS", "abc"},   {"TAGPROOF_REDIS_TIMEOUT_MS", "-5"},
        {"TAGPROOF_REDIS_TIMEOUT_MS", "10ms"},  {"TAGPROOF_REDIS_TIMEOUT_MS", ""},
        {"TAGPROOF_PG_TIMEOUT_MS", "0"},        {"TAGPROOF_PG_TIMEOUT_MS", "99999999999"},
        {"TAGPROOF_SCAN_LISTEN", "8080"},       {"TAGPROOF_SCAN_LISTEN", "127.0.0.1:0"},
        {"TAGPROOF_SCAN_LISTEN", "host:65536"}, {"TAGPROOF_FACTORY_LISTEN", ":8081"},
        {"TAGPROOF_REDIS_URL", "http://x:1"},   {"TAGPROOF_REDIS_URL", "redis://:pw@h:1/99"},
        {"TAGPROOF_LEDGER", "bitcoin"},         {"TAGPROOF_LEDGER_URL", "ftp://x"},
        {"TAGPROOF_ANCHOR_INTERVAL_S", "0"},    {"TAGPROOF_REDIS_SENTINELS", "a:1,b"},
        {"TAGPROOF_LOG_LEVEL", "loud"},         {"TAGPROOF_PG_URL", ""},
        {"TAGPROOF_ETH_FROM", "0x1234"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256] = "";
        clear_env();
        setenv(bad[i].name, bad[i].value, 1);
        assert_int_equal(config_load(&c, err, sizeof(err)), -1);
        assert_non_null(strstr(err, bad[i].name));
        assert_null(strchr(err, '\n'));
        assert_null(strstr(err, ":pw@"));
    }
    clear_env();
    setenv("TAGPROOF_LEDGER", "ethereum", 1);
    struct config c;
    char err[256];
    assert_int_equal(config_load(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "TAGPROOF_ETH_FROM"));
}

static void test_docs_cover_spec_settings(void **state)
{
    (void)state;
    const char *spec[] = {"TAGPROOF_PG_URL",
                          "TAGPROOF_REDIS_URL",
                          "TAGPROOF_REDIS_SENTINELS",
                          "TAGPROOF_REDIS_MASTER",
                          "TAGPROOF_SCAN_LISTEN",
                          "TAGPROOF_FACTORY_LISTEN",
                          "TAGPROOF_ANCHOR_LISTEN",
                          "TAGPROOF_DEVLEDGER_LISTEN",
                          "TAGPROOF_REDIS_TIMEOUT_MS",
                          "TAGPROOF_PG_TIMEOUT_MS",
                          "TAGPROOF_JWKS_FILE",
                          "TAGPROOF_JWKS_URL",
                          "TAGPROOF_JWT_ISSUER",
                          "TAGPROOF_JWT_AUDIENCE",
                          "TAGPROOF_LEDGER",
                          "TAGPROOF_LEDGER_URL",
                          "TAGPROOF_ETH_FROM",
                          "TAGPROOF_ETH_CONFIRMATIONS",
                          "TAGPROOF_ANCHOR_INTERVAL_S",
                          "TAGPROOF_LOG_ORIGIN"};
    for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
        struct config_doc d;
        int found = 0;
        for (size_t j = 0; config_doc(j, &d) == 0; j++)
            found |= strcmp(d.name, spec[i]) == 0 && d.help != NULL && *d.help != '\0';
        assert_true(found);
    }
}

static char *slurp(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", TAGPROOF_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot read %s", path);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* The operators' documents name every setting the programs read, with its default. */
static void test_docs_are_complete(void **state)
{
    (void)state;
    char *ops = slurp("docs/OPERATIONS.md"), *env = slurp(".env.example");
    struct config_doc d;
    for (size_t i = 0; config_doc(i, &d) == 0; i++) {
        char want[256];
        snprintf(want, sizeof(want), "| `%s` | `%s` |", d.name,
                 d.default_value != NULL ? d.default_value : "unset");
        if (strstr(ops, want) == NULL)
            fail_msg("docs/OPERATIONS.md lacks the row of %s (run tagproof config)", d.name);
        snprintf(want, sizeof(want), "%s%s=%s\n", d.default_value != NULL ? "" : "# ", d.name,
                 d.default_value != NULL ? d.default_value : "");
        if (strstr(env, want) == NULL)
            fail_msg(".env.example lacks %s (run tagproof config env)", d.name);
    }
    free(ops);
    free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_overrides, setup),
        cmocka_unit_test_setup(test_bad_values, setup),
        cmocka_unit_test_setup(test_docs_cover_spec_settings, setup),
        cmocka_unit_test(test_docs_are_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
