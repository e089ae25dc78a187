/*
 * tlog: the Merkle log kept in PostgreSQL (SPEC §7) — pending log entries appended in id order
 * (which migration 0004 makes commit order), each given its leaf_index and leaf_hash once, every
 * complete subtree stored in merkle_nodes, and signed checkpoints that are each checked for
 * consistency with the one before. Blocking libpq: for the anchor service's scheduler thread,
 * whose connection holds the leader lock, so only one tlog appends at a time.
 *
 * Crash safety: a batch's leaves and the subtrees they complete are written in one transaction,
 * and the in-memory right edge (the frontier) is read back from merkle_nodes at every
 * tlog_restore, so a crash at any moment leaves log_entries and merkle_nodes agreeing.
 */
#ifndef TAGPROOF_TLOG_H
#define TAGPROOF_TLOG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

struct note_signer;
struct tlog;

/*
 * A log named origin whose checkpoints signer signs (borrowed; it must outlive the tlog).
 * hook (may be NULL) is called at named points, for crash tests. NULL when out of memory.
 */
struct tlog *tlog_new(const char *origin, const struct note_signer *signer,
                      void (*hook)(void *arg, const char *point), void *hook_arg);
void tlog_free(struct tlog *t);

/*
 * How many tag ids of an upload being expanded are read ahead at a time (default 1,048,576,
 * 16 MiB). Tests set small windows to cross their edges.
 */
void tlog_set_window(struct tlog *t, size_t tags);
/* Leaves appended so far, as of the last restore or append. */
uint64_t tlog_size(const struct tlog *t);

/*
 * Reads the log's size and right edge back from the database (O(log n) rows) and checks that
 * they agree. 0, or -1 with err.
 */
int tlog_restore(struct tlog *t, PGconn *conn, char *err, size_t errlen);

/*
 * Appends up to max pending entries in one transaction; *appended gets how many (0: none
 * pending). On failure the transaction is rolled back and the frontier must be restored
 * before the next append. 0, or -1 with err.
 */
int tlog_append(struct tlog *t, PGconn *conn, int max, int *appended, char *err, size_t errlen);

/*
 * When the log has grown past its last checkpoint: checks that the new tree is consistent
 * with the last signed checkpoint (refusing to sign otherwise), signs the new checkpoint and
 * stores it with a 'pending' anchors row for ledger, in one transaction. *made gets the new
 * checkpoint's size, or 0 when the log has not grown. 0, or -1 with err.
 */
int tlog_checkpoint(struct tlog *t, PGconn *conn, const char *ledger, uint64_t *made, char *err,
                    size_t errlen);

#endif
