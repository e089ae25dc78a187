// fuzz: MODULES config
/*
 * fuzz_config: config_parse_listen on arbitrary strings, and config_load with one setting taken
 * from the input, so that every parser of the settings table (Redis URL, host:port lists, URLs,
 * numbers, choices) sees arbitrary text. The first byte picks the setting: its low six bits are
 * the setting's place in config_doc() counted from 1 ('A' is the first, 'E' TAGPROOF_REDIS_URL),
 * and 0 or past the last means the listen parser alone ('@'); its top bit sets
 * TAGPROOF_LEDGER=ethereum too. The rest, up to a NUL, is the value.
 *
 * The environment is changed with putenv on buffers of this file, and restored after each
 * input, because setenv keeps a copy of every value it was ever given.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUE 4096

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t nsettings;
static char var[64 + MAX_VALUE + 2];
static char ledger[] = "TAGPROOF_LEDGER=ethereum";
/* sysconf(_SC_NPROCESSORS_ONLN) reads /sys; a fixed thread count keeps config_load in memory. */
static char threads[] = "TAGPROOF_HTTP_THREADS=1";

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct config_doc doc;
    (void)argc;
    (void)argv;
    /* Only the defaults and the fuzzed value: nothing from the environment of the run. */
    for (nsettings = 0; config_doc(nsettings, &doc) == 0; nsettings++)
        unsetenv(doc.name);
    return 0;
}

static void fuzz_listen(const char *s)
{
    struct config_listen l;
    memset(&l, 0xa5, sizeof(l));
    if (config_parse_listen(s, &l) != 0)
        return;
    size_t n = strnlen(l.host, sizeof(l.host));
    if (n == 0 || n == sizeof(l.host))
        fail("config_parse_listen", "host empty or not NUL-terminated");
    if (l.port < 1 || l.port > 65535)
        fail("config_parse_listen", "port outside 1..65535");
    if (strstr(s, l.host) == NULL)
        fail("config_parse_listen", "host is not part of the input");
}

static void fuzz_load(const struct config_doc *doc, const char *value, int ethereum)
{
    struct config cfg;
    char err[512];

    snprintf(var, sizeof(var), "%s=%s", doc->name, value);
    putenv(var);
    if (ethereum && strcmp(doc->name, "TAGPROOF_LEDGER") != 0)
        putenv(ledger);
    if (strcmp(doc->name, "TAGPROOF_HTTP_THREADS") != 0)
        putenv(threads);

    memset(err, 0, sizeof(err));
    if (config_load(&cfg, err, sizeof(err)) == 0) {
        if (cfg.pg_url == NULL || cfg.pg_migrate_url == NULL || cfg.http_threads < 1 ||
            cfg.redis_port < 1 || cfg.redis_port > 65535 || cfg.redis_db < 0 || cfg.redis_db > 15)
            fail("config_load", "accepted a configuration it should not have");
        config_free(&cfg);
    } else if (strncmp(err, "TAGPROOF_", 9) != 0 || memchr(err, '\0', sizeof(err)) == NULL) {
        fail("config_load", "the error does not name a setting");
    }

    unsetenv(doc->name);
    unsetenv("TAGPROOF_LEDGER");
    unsetenv("TAGPROOF_HTTP_THREADS");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char value[MAX_VALUE + 1];
    struct config_doc doc;

    if (size == 0 || nsettings == 0)
        return 0;
    size_t n = size - 1 < MAX_VALUE ? size - 1 : MAX_VALUE;
    memcpy(value, data + 1, n);
    value[n] = '\0';

    unsigned pick = data[0] & 0x3f;
    if (pick == 0 || pick > nsettings) {
        fuzz_listen(value);
        return 0;
    }
    if (config_doc(pick - 1, &doc) != 0)
        abort();
    fuzz_load(&doc, value, data[0] & 0x80);
    return 0;
}
