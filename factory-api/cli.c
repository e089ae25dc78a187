/*
 * tagproof: the command-line client. Subcommands are looked up in one table; each returns
 * the process exit code (0 success, 1 failure, 2 usage or configuration error).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "apikey.h"
#include "cli_merkle.h"
#include "cli_verify.h"
#include "cli_upload.h"
#include "config.h"
#include "schema.h"

#define TAGPROOF_VERSION "0.1.0"

struct command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

static int cmd_help(int argc, char **argv);

/* tagproof migrate: applies this build's migrations as the schema owner. */
static int cmd_migrate(int argc, char **argv)
{
    struct config cfg;
    char err[512];
    int applied = 0;

    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: tagproof migrate\n");
        return 2;
    }
    config_load_or_exit(&cfg, "tagproof migrate");
    if (schema_migrate(cfg.pg_migrate_url, &applied, err, sizeof(err)) != 0) {
        fprintf(stderr, "tagproof migrate: %s\n", err);
        config_free(&cfg);
        return 1;
    }
    printf("schema at version %d (%d migration%s applied now)\n", schema_expected_version(),
           applied, applied == 1 ? "" : "s");
    config_free(&cfg);
    return 0;
}

/*
 * tagproof admin-key [NAME]: creates an admin API key directly in the database, as the schema
 * owner — how the first key of a new installation is made (every later one through the API).
 * Prints the key, which is shown only this once.
 */
static int cmd_admin_key(int argc, char **argv)
{
    struct config cfg;
    struct apikey k;
    char hash_hex[2 * APIKEY_HASH_LEN + 3] = "\\x";
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = 1;

    if (argc > 2) {
        fprintf(stderr, "usage: tagproof admin-key [NAME]\n");
        return 2;
    }
    config_load_or_exit(&cfg, "tagproof admin-key");
    if (apikey_generate(&k) != 0) {
        fprintf(stderr, "tagproof admin-key: the random generator failed\n");
        goto out;
    }
    for (size_t i = 0; i < APIKEY_HASH_LEN; i++)
        snprintf(hash_hex + 2 + 2 * i, 3, "%02x", k.hash[i]);
    conn = PQconnectdb(cfg.pg_migrate_url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "tagproof admin-key: cannot connect: %s", PQerrorMessage(conn));
        goto out;
    }
    const char *v[] = {k.id, argc == 2 ? argv[1] : "admin", hash_hex};
    res = PQexecParams(conn,
                       "INSERT INTO api_keys (id, role, name, secret_hash)"
                       " VALUES ($1, 'admin', $2, $3::bytea)",
                       3, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "tagproof admin-key: %s", PQerrorMessage(conn));
        goto out;
    }
    printf("%s\n", k.key);
    rc = 0;
out:
    PQclear(res);
    PQfinish(conn);
    explicit_bzero(&k, sizeof(k));
    config_free(&cfg);
    return rc;
}

/*
 * tagproof config [check|env]: lists every setting, checks the environment's values, or
 * prints the settings as a commented environment file (the source of .env.example).
 */
static int cmd_config(int argc, char **argv)
{
    struct config_doc d;
    if (argc == 2 && strcmp(argv[1], "env") == 0) {
        for (size_t i = 0; config_doc(i, &d) == 0; i++)
            printf("# %s\n%s%s=%s\n\n", d.help, d.default_value != NULL ? "" : "# ", d.name,
                   d.default_value != NULL ? d.default_value : "");
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "check") == 0) {
        struct config cfg;
        config_load_or_exit(&cfg, "tagproof config");
        config_free(&cfg);
        printf("configuration is valid\n");
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: tagproof config [check|env]\n");
        return 2;
    }
    for (size_t i = 0; config_doc(i, &d) == 0; i++)
        printf("%-28s %-40s %s\n", d.name, d.default_value != NULL ? d.default_value : "(unset)",
               d.help);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("tagproof %s (schema version %d)\n", TAGPROOF_VERSION, schema_expected_version());
    return 0;
}

static const struct command commands[] = {
    {"migrate", "apply database migrations (as TAGPROOF_PG_MIGRATE_URL)", cmd_migrate},
    {"config", "list settings; `config check` validates the environment, `config env` prints them",
     cmd_config},
    {"admin-key", "create an admin API key as the schema owner and print it", cmd_admin_key},
    {"merkle", "RFC 9162 roots, proofs and verification over standard input (`merkle` for usage)",
     cli_merkle},
    {"verify", "check a proof bundle: `verify BUNDLE.json --key VKEY [--ledger-url URL]`",
     cli_verify},
    {"upload", "upload a batch's tags from a CSV file and wait for the result", cli_upload},
    {"version", "print the version", cmd_version},
    {"help", "this text", cmd_help},
};

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("usage: tagproof COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        printf("  %-12s %s\n", commands[i].name, commands[i].summary);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        cmd_help(0, NULL);
        return 2;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tagproof: unknown command '%s' (try `tagproof help`)\n", argv[1]);
    return 2;
}
