/*
 * cachesync: keeps the scan service's Redis cache in step with the Merkle log, so that a scan
 * answered from the cache can say whether its tag is anchored (SPEC §5) without PostgreSQL.
 * After each cycle the leader writes the index of every newly appended tag leaf into the tag's
 * cache entry (tp:t:<tag>, field i) and the newest confirmed anchor into tp:anchor.
 *
 * For the anchor service's scheduler thread, which may block: the Redis client of shared/redis
 * runs on a private event_base that this module drives only while it waits for its own
 * replies (so Sentinel discovery, AUTH, SELECT and deadlines are the scan service's). Redis
 * being down costs a cycle at most a connect deadline and never fails it: what Redis has
 * acknowledged is kept in PostgreSQL (scan_cache_sync, migration 0006), and the next cycle
 * goes on from there.
 */
#ifndef TAGPROOF_CACHESYNC_H
#define TAGPROOF_CACHESYNC_H

#include <stddef.h>

#include <libpq-fe.h>

struct config;
struct metrics;
struct cachesync;

/*
 * A syncer for the Redis of cfg (TAGPROOF_REDIS_URL, or its Sentinels). No I/O: it connects
 * at its first run. cfg and metrics are borrowed and must outlive it. NULL with a message in
 * err when the Redis options are unusable or memory runs out.
 */
struct cachesync *cachesync_new(const struct config *cfg, struct metrics *metrics, char *err,
                                size_t errlen);
void cachesync_free(struct cachesync *s);

/*
 * Pushes the leaves appended since the last acknowledged push (bounded per call) and the
 * newest confirmed anchor, reading them through conn (the leader's session, idle). Blocks at
 * most about the Redis connect deadline plus the commands' deadlines. 0 when Redis is in step
 * with the log, 1 when more leaves wait (call again next cycle), -1 when Redis or PostgreSQL
 * failed (logged once per outage; nothing to undo).
 */
int cachesync_run(struct cachesync *s, PGconn *conn);

#endif
