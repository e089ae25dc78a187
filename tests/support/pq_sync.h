/*
 * pq_sync: blocking libpq helpers for integration tests that set up or inspect a database
 * directly (outside the asynchronous pool under test). Each fails the test with the server's
 * message.
 */
#ifndef TAGPROOF_PQ_SYNC_H
#define TAGPROOF_PQ_SYNC_H

#include <libpq-fe.h>
#include <stdlib.h>

#include "support.h"

/* A connection to url, as tenant "all" when tenant_all (row-level security). */
static inline PGconn *connect_to(const char *url, int tenant_all)
{
    static const char *const keys[] = {"dbname", "options", NULL};
    const char *const values[] = {url, tenant_all ? "-c tagproof.tenant=all" : "", NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

/* Runs sql, which must succeed. */
static inline void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/* The one number sql answers. */
static inline long long value(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

#endif
