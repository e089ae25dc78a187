/*
 * schema: the migrations compiled into this build, `tagproof migrate`, and the start-up check
 * that a program and its database agree on the schema version. These calls block (plain
 * libpq): they run before any event loop starts, never on a request path.
 */
#ifndef TAGPROOF_SCHEMA_H
#define TAGPROOF_SCHEMA_H

#include <stddef.h>

struct migration {
    int version;
    const char *name; /* file name, NNNN_name.sql */
    const char *sql;
};

/* The embedded migrations in version order, ended by an entry with a NULL name. */
extern const struct migration schema_migrations_embedded[];
extern const size_t schema_migrations_count;

/* The version this build expects: the highest embedded migration. */
int schema_expected_version(void);

/*
 * Applies every embedded migration the database lacks, each in its own transaction and
 * recorded in schema_migrations with a checksum, under an advisory lock so concurrent
 * runners wait for each other. Refuses a database whose applied files differ from this
 * build's or that is ahead of it. *applied gets the number of files applied now.
 * 0, or -1 with one line in err.
 */
int schema_migrate(const char *conninfo, int *applied, char *err, size_t errlen);

/*
 * Checks that the database is at exactly schema_expected_version(). Waits up to wait_s
 * seconds for the server to accept connections. Returns 0; -1 when it is behind or ahead
 * (err says which and what to do); -2 when the server could not be reached.
 */
int schema_check(const char *conninfo, int wait_s, char *err, size_t errlen);

#endif
