/*
 * csv: a push-style RFC 4180 reader and, on top of it, the validator of tag uploads (SPEC §6).
 * Pure C without I/O: the caller feeds chunks of any size as they arrive, and memory is bounded
 * by the configured limits, never by the size of the input.
 */
#ifndef TAGPROOF_CSV_H
#define TAGPROOF_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

/*
 * What the reader accepts. A UTF-8 byte order mark at the very start of the input is skipped;
 * anywhere else it is data. Lines end in LF, CRLF or a lone CR (old Mac exports), mixed freely;
 * each ending counts one physical line, also inside quoted fields, where the line break stays
 * part of the value. A line with no bytes at all is blank and skipped, wherever it is. Fields
 * are separated by commas and kept byte for byte (no trimming); a field that starts with a
 * double quote runs to the matching quote, with "" standing for one quote. The input must be
 * UTF-8 without NUL bytes.
 *
 * Every reader error is fatal: the input cannot be split into rows reliably past it, so the
 * reader stops and further feeds fail at once.
 */

/* Limits; every one must be at least 1. */
struct csv_limits {
    size_t max_field_bytes;  /* one field, unescaped */
    size_t max_record_bytes; /* one record as written, quotes and separators included, line
                                breaks inside quoted fields included, its line end not */
    size_t max_fields;       /* fields in one record */
};

/* 64 KiB per field and per record, 64 fields per record. */
void csv_limits_default(struct csv_limits *lim);

/* A field: bytes borrowed from the reader, not NUL-terminated, valid UTF-8 without NUL. */
struct csv_field {
    const char *data;
    size_t len;
};

/*
 * An error and where it is. code is a stable identifier for programs (a static string);
 * message says in a sentence what is wrong and, where it helps, what to do; it is valid UTF-8
 * and quotes at most a short, truncated excerpt of the input. line is the 1-based physical
 * line: of the offending byte for bad bytes and quotes, of the record's start for records and
 * rows, of the opening quote for an unclosed quote. fatal is false only for errors that
 * reject a single row of an upload.
 *
 * Reader codes: "unbalanced_quotes", "unexpected_quote" (a quote inside an unquoted field),
 * "text_after_quote", "line_too_long", "field_too_long", "too_many_fields", "invalid_utf8",
 * "nul_byte", "stopped" (a callback asked to stop).
 */
#define CSV_MESSAGE_MAX 256
struct csv_error {
    uint64_t line;
    const char *code;
    char message[CSV_MESSAGE_MAX];
    bool fatal;
};

/*
 * Called once per row, in order. fields (nfields of them, at least one) and their bytes are
 * borrowed until the call returns. line is where the row starts. Return 0 to go on; anything
 * else stops the reader with the error "stopped".
 */
typedef int csv_row_fn(void *arg, uint64_t line, const struct csv_field *fields, size_t nfields);

struct csv_reader;

/* A reader with the given limits (NULL: the defaults), or NULL when out of memory or when a
 * limit is 0. Caller frees with csv_reader_free(). */
struct csv_reader *csv_reader_new(const struct csv_limits *lim);

/*
 * Consumes len bytes (buf is borrowed for the call), calling on_row for each row completed.
 * A chunk may end anywhere, inside a quoted field, between CR and LF or inside a UTF-8
 * character: the rows and errors are the same however the input is cut. 0, or -1 once the
 * reader has failed (csv_reader_error() says why; every later call fails too).
 */
int csv_feed(struct csv_reader *r, const char *buf, size_t len, csv_row_fn *on_row, void *arg);

/*
 * The end of the input: emits a last row that has no line end, and fails when the input ends
 * inside a quoted field ("unbalanced_quotes") or inside a UTF-8 character. 0 or -1 as for
 * csv_feed(); the reader accepts no input afterwards.
 */
int csv_finish(struct csv_reader *r, csv_row_fn *on_row, void *arg);

/* The error that stopped the reader, borrowed from it; NULL while it has not failed. */
const struct csv_error *csv_reader_error(const struct csv_reader *r);

/* Bytes the reader has allocated, itself included. It never exceeds csv_reader_bound(). */
size_t csv_reader_memory(const struct csv_reader *r);

/* The most a reader with these limits (NULL: the defaults) ever allocates. */
size_t csv_reader_bound(const struct csv_limits *lim);

/* Input bytes consumed and physical lines begun so far. */
uint64_t csv_reader_bytes(const struct csv_reader *r);
uint64_t csv_reader_lines(const struct csv_reader *r);

void csv_reader_free(struct csv_reader *r);

/*
 * The tag upload: the first row that is not blank is the header and must name a tag_id column
 * (names are compared without case and without surrounding spaces and tabs); a serial column
 * is optional and other columns are ignored. Rows whose fields are all empty (",,", which
 * spreadsheets write for formatted but empty rows) are skipped like blank lines. Every other
 * row is a data row and is either accepted or rejected with one row error:
 *
 *   "field_count"       it has a different number of fields than the header;
 *   "invalid_uuid"      its tag_id is not a canonical 8-4-4-4-12 UUID (either case; no braces,
 *                       spaces or missing hyphens);
 *   "serial_too_long"   its serial is longer than max_serial_bytes;
 *   "invalid_serial"    its serial contains a control character (a line break, a tab);
 *   "duplicate_tag_id"  an accepted row earlier in the file has the same tag.
 *
 * Fatal errors end the upload whatever its mode: every reader error, "empty_file" (no header),
 * "no_tag_id_column", "duplicate_column" (tag_id or serial twice), "no_rows" (a header and
 * nothing else) and "too_many_rows". Whether one row error fails the whole upload
 * (all-or-nothing) or only that row (skip-invalid) is the caller's choice; this validator
 * reports the same errors either way. Tags that are already registered are the database's
 * business, not this module's.
 *
 * Duplicates are found with an open-addressing hash set of the accepted tags holding 20 bytes
 * a slot (the tag and the line where it was accepted), at most three quarters full, with a
 * power-of-two number of slots: 40 MiB for 1,000,000 tags, 160 MiB for the default maximum of
 * 5,000,000. While the set doubles the old and the new table are both alive, which
 * expected_rows avoids when the caller can estimate the number of rows.
 */
struct csv_upload_config {
    struct csv_limits limits;
    uint64_t max_rows;       /* data rows, rejected ones included */
    size_t max_serial_bytes; /* bytes of a serial */
    uint64_t expected_rows;  /* sizes the set up front; 0: grow from small */
};

/* The reader's defaults, 5,000,000 rows, 100-byte serials, no expected rows. */
void csv_upload_config_default(struct csv_upload_config *cfg);

/* An accepted row, borrowed until the callback returns. */
struct csv_tag_row {
    uint64_t line;
    uint8_t tag[16];
    char tag_str[UUID_STR_LEN + 1]; /* lower case, NUL-terminated */
    const char *serial;             /* NULL when there is no serial column or it is empty */
    size_t serial_len;
};

/* Called for each accepted row. Return 0 to go on; anything else stops the upload. */
typedef int csv_tag_fn(void *arg, const struct csv_tag_row *row);

/*
 * Called for each row error and for the fatal error that ends an upload (err->fatal), in
 * input order; err is borrowed until the call returns. Return 0 to go on; anything else stops
 * the upload. There is no cap here: the caller keeps as many as it reports.
 */
typedef int csv_upload_error_fn(void *arg, const struct csv_error *err);

struct csv_upload_stats {
    uint64_t rows_total; /* data rows seen: accepted + rejected */
    uint64_t rows_accepted;
    uint64_t rows_rejected;
    uint64_t lines; /* physical lines begun */
    uint64_t bytes; /* input bytes consumed */
};

struct csv_upload;

/*
 * An upload validator (cfg NULL: the defaults), or NULL when out of memory or cfg is invalid.
 * The callbacks and arg are kept for the validator's lifetime. Caller frees with
 * csv_upload_free().
 */
struct csv_upload *csv_upload_new(const struct csv_upload_config *cfg, csv_tag_fn *on_tag,
                                  csv_upload_error_fn *on_error, void *arg);

/* Consumes a chunk (borrowed for the call) of any size. 0, or -1 once the upload has ended
 * with a fatal error or a callback stopped it (csv_upload_error() says which). */
int csv_upload_feed(struct csv_upload *u, const char *buf, size_t len);

/* The end of the input; 0 when the whole file was read (row errors are not failures here),
 * -1 as for csv_upload_feed(). */
int csv_upload_finish(struct csv_upload *u);

/* The fatal error (code "stopped" when a callback asked to stop), borrowed; NULL if none. */
const struct csv_error *csv_upload_error(const struct csv_upload *u);

void csv_upload_stats(const struct csv_upload *u, struct csv_upload_stats *out);

/* Bytes allocated by the validator, its reader and its set included. */
size_t csv_upload_memory(const struct csv_upload *u);

void csv_upload_free(struct csv_upload *u);

#endif
