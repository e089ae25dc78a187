/*
 * ingest: the pure decisions of a CSV upload (SPEC §6) — its mode, the Idempotency-Key and
 * what an earlier upload under the same key means for a new request, the rows sent to the
 * staging table, and the report of errors (the first 1,000, in line order). No I/O: the
 * loader and the handlers do that.
 */
#ifndef TAGPROOF_INGEST_H
#define TAGPROOF_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csv.h"

/* Errors an upload reports: the first this many, by line. */
#define INGEST_MAX_ERRORS 1000

enum ingest_mode {
    INGEST_ALL_OR_NOTHING, /* one bad row fails the upload; nothing is imported */
    INGEST_SKIP_INVALID,   /* the valid rows are imported, the rest reported */
};

/* ?mode=: NULL means the default (all-or-nothing). 0, or -1 for anything else. */
int ingest_mode_parse(const char *s, enum ingest_mode *out);
/* "all-or-nothing" or "skip-invalid", as the uploads table stores it. */
const char *ingest_mode_name(enum ingest_mode m);

/* The longest Idempotency-Key accepted. */
#define INGEST_KEY_MAX 255

/* True for 1 to INGEST_KEY_MAX visible ASCII characters (0x21-0x7e): what clients send in
 * practice (UUIDs, ULIDs, base64), and nothing a log line or a header could be confused by. */
bool ingest_key_valid(const char *key);

/* An earlier upload of the same factory under the same Idempotency-Key, as stored. */
struct ingest_prior {
    bool running;      /* status processing, and its heartbeat is fresh */
    bool body_known;   /* body_sha256 stored: its outcome was decided by its whole body */
    bool same_request; /* same batch and mode as the new request */
};

/*
 * What a new request does about a prior upload with its key:
 *   INGEST_BUSY     409: the earlier one is still running;
 *   INGEST_RETAKE   the earlier one never received its whole body (the client went away, the
 *                   process died, the database failed under it): its outcome says nothing
 *                   about the body, so the key is taken back and a new upload starts;
 *   INGEST_MISMATCH 422 at once: the key was used for another batch or mode;
 *   INGEST_COMPARE  read the body and compare its SHA-256: the same body answers the earlier
 *                   upload, another body 422.
 */
enum ingest_idem { INGEST_BUSY, INGEST_RETAKE, INGEST_MISMATCH, INGEST_COMPARE };
enum ingest_idem ingest_idempotency(const struct ingest_prior *p);

/*
 * The staging rows go to COPY in PostgreSQL's binary format: no text for the server to parse
 * (a uuid is its 16 bytes, the line an int8), which took the COPY of a million rows from
 * 0.8 to 0.3 s of the server's time. The stream is INGEST_COPY_HEADER, the rows, then
 * INGEST_COPY_TRAILER. A row is (line bigint, tag uuid, serial text): a field count, then
 * each field's length and bytes in network order, the serial's length -1 when it is absent
 * (its bytes go as they are: the validator lets no control character and no invalid UTF-8
 * through). out must hold INGEST_COPY_ROW_MAX(serial bytes) bytes; returns the length written.
 */
#define INGEST_COPY_HEADER_LEN 19
#define INGEST_COPY_TRAILER_LEN 2
extern const char INGEST_COPY_HEADER[INGEST_COPY_HEADER_LEN];
extern const char INGEST_COPY_TRAILER[INGEST_COPY_TRAILER_LEN];
#define INGEST_COPY_ROW_MAX(serial_max) (2 + (4 + 8) + (4 + 16) + (4 + (serial_max)))
size_t ingest_copy_row(char *out, const struct csv_tag_row *row);

/*
 * The error report of one upload: the first INGEST_MAX_ERRORS errors (or fewer, cap) in line
 * order, whatever order they are added in, and how many there were. Errors without a line
 * (line 0: the body was cut, the process died) come first.
 */
struct ingest_errors;

/* An empty report keeping at most cap errors (1..INGEST_MAX_ERRORS); NULL when out of memory. */
struct ingest_errors *ingest_errors_new(size_t cap);
void ingest_errors_free(struct ingest_errors *e);

/* Adds an error; code and message are copied (the message truncated to CSV_MESSAGE_MAX - 1
 * bytes on a UTF-8 boundary). 0, or -1 when out of memory. */
int ingest_errors_add(struct ingest_errors *e, uint64_t line, const char *code,
                      const char *message);

/* Errors added, kept or not. */
uint64_t ingest_errors_count(const struct ingest_errors *e);

/* The kept errors as a JSON array of {"line", "code", "message"} ("line" null for line 0).
 * Caller frees; NULL when out of memory. */
char *ingest_errors_json(const struct ingest_errors *e);

#endif
