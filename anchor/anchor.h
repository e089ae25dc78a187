/*
 * anchor: the scheduler of tagproof-anchor (SPEC §7). One thread of its own, with blocking
 * libpq and libcurl, so that the HTTP workers serving health, readiness and metrics never
 * wait for PostgreSQL or a ledger. The thread competes for a PostgreSQL session advisory lock;
 * while it holds it (it leads), every TAGPROOF_ANCHOR_INTERVAL_S it appends the pending log
 * entries, signs a checkpoint when the log grew, and anchors it; otherwise it waits and tries
 * again every second, taking over when the leader's session ends.
 */
#ifndef TAGPROOF_ANCHOR_H
#define TAGPROOF_ANCHOR_H

#include <stddef.h>

struct config;
struct metrics;
struct anchor;

/*
 * Loads (or creates) the log's signing key, sets up the ledger adapter and registers the
 * metrics. Blocking file I/O: call at start. cfg and metrics are borrowed and must outlive the
 * anchor. NULL with a message in err.
 */
struct anchor *anchor_new(const struct config *cfg, struct metrics *metrics, char *err,
                          size_t errlen);

/* Starts the scheduler thread (with SIGTERM, SIGINT and SIGPIPE blocked). 0 or -1. */
int anchor_start(struct anchor *a);

/*
 * Stops the thread at its next wait (an HTTP call or statement under way finishes first, each
 * bounded by its timeout), closes its connection (releasing the lock) and frees everything.
 */
void anchor_free(struct anchor *a);

#endif
