/*
 * schema: migrations applied in order under pg_advisory_lock, with a SHA-256 of each file kept
 * so that an applied file edited afterwards is refused instead of silently diverging.
 */
#include "schema.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The advisory lock key in the queries below is arbitrary but fixed: every migrate runner of
 * every version takes the same lock. */

int schema_expected_version(void)
{
    return schema_migrations_count > 0
               ? schema_migrations_embedded[schema_migrations_count - 1].version
               : 0;
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Runs one statement without parameters; 0, or -1 with the server's message in err. */
static int exec_simple(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

static PGconn *connect_wait(const char *conninfo, int wait_s, char *err, size_t errlen)
{
    for (int i = 0;; i++) {
        /* connect_timeout bounds each attempt, also against a host that drops packets. */
        static const char *const keys[] = {"dbname", "connect_timeout", NULL};
        const char *const values[] = {conninfo, "5", NULL};
        PGconn *conn = PQconnectdbParams(keys, values, 1);
        if (PQstatus(conn) == CONNECTION_OK) {
            PQsetNoticeProcessor(conn, NULL, NULL);
            return conn;
        }
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        chomp(err);
        PQfinish(conn);
        if (i >= wait_s * 4)
            return NULL;
        usleep(250 * 1000);
    }
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int schema_migrate(const char *conninfo, int *applied, char *err, size_t errlen)
{
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = -1, locked = 0;

    *applied = 0;
    if ((conn = connect_wait(conninfo, 30, err, errlen)) == NULL)
        return -1;
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    if (exec_simple(conn, "SELECT pg_advisory_lock(7226351602313740301)", err, errlen) != 0)
        goto done;
    locked = 1;
    if (exec_simple(conn,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                    err, errlen) != 0)
        goto done;

    res = PQexec(conn, "SELECT version, name, sha256 FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        goto done;
    }
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        int v = atoi(PQgetvalue(res, r, 0));
        const struct migration *m = NULL;
        for (size_t i = 0; i < schema_migrations_count; i++)
            if (schema_migrations_embedded[i].version == v)
                m = &schema_migrations_embedded[i];
        if (m == NULL) {
            snprintf(err, errlen,
                     "database has migration %04d (%s), which this build does not know: it is "
                     "ahead of this program",
                     v, PQgetvalue(res, r, 1));
            goto done;
        }
        char sum[65];
        sha256_hex(m->sql, sum);
        if (strcmp(sum, PQgetvalue(res, r, 2)) != 0) {
            snprintf(err, errlen,
                     "migration %s was changed after it was applied; add a new migration instead",
                     m->name);
            goto done;
        }
    }

    for (size_t i = 0; i < schema_migrations_count; i++) {
        const struct migration *m = &schema_migrations_embedded[i];
        int done_already = 0;
        for (int r = 0; r < rows; r++)
            done_already |= atoi(PQgetvalue(res, r, 0)) == m->version;
        if (done_already)
            continue;
        char sum[65], version[16];
        sha256_hex(m->sql, sum);
        snprintf(version, sizeof(version), "%d", m->version);
        if (exec_simple(conn, "BEGIN", err, errlen) != 0)
            goto done;
        if (exec_simple(conn, m->sql, err, errlen) != 0) {
            char detail[512];
            chomp(err);
            snprintf(detail, sizeof(detail), "%s", err);
            snprintf(err, errlen, "migration %s failed: %s", m->name, detail);
            PQclear(PQexec(conn, "ROLLBACK"));
            goto done;
        }
        const char *params[3] = {version, m->name, sum};
        PGresult *ins = PQexecParams(
            conn, "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)", 3,
            NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(ins) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "%s", PQresultErrorMessage(ins));
        PQclear(ins);
        if (!ok || exec_simple(conn, "COMMIT", err, errlen) != 0) {
            PQclear(PQexec(conn, "ROLLBACK"));
            goto done;
        }
        (*applied)++;
    }
    rc = 0;
done:
    if (rc != 0)
        chomp(err);
    PQclear(res);
    if (locked && PQstatus(conn) == CONNECTION_OK)
        PQclear(PQexec(conn, "SELECT pg_advisory_unlock(7226351602313740301)"));
    PQfinish(conn);
    return rc;
}

int schema_check(const char *conninfo, int wait_s, char *err, size_t errlen)
{
    PGconn *conn = connect_wait(conninfo, wait_s, err, errlen);
    PGresult *res = NULL;
    int rc = -1, expected = schema_expected_version();

    if (conn == NULL)
        return -2;
    res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, "42P01") == 0)
            snprintf(err, errlen,
                     "database has no schema yet, this program needs version %d: run `tagproof "
                     "migrate`",
                     expected);
        else
            snprintf(err, errlen, "cannot read schema_migrations: %s", PQresultErrorMessage(res));
        goto done;
    }
    int have = atoi(PQgetvalue(res, 0, 0));
    if (have < expected)
        snprintf(err, errlen,
                 "database schema is at version %d, this program needs %d: run `tagproof migrate`",
                 have, expected);
    else if (have > expected)
        snprintf(err, errlen,
                 "database schema is at version %d, ahead of this program's %d: run a newer build",
                 have, expected);
    else
        rc = 0;
done:
    if (rc != 0)
        chomp(err);
    PQclear(res);
    PQfinish(conn);
    return rc;
}
