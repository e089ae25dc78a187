/*
 * log: one JSON object a line on stderr (SPEC §8), with secrets redacted before they are
 * written. Safe to call from any thread; each line goes out whole in a single write(2), or
 * — on a thread that asked for it with log_buffer_start() — together with the thread's other
 * lines of one event-loop turn.
 */
#ifndef TAGPROOF_LOG_H
#define TAGPROOF_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/*
 * Sets the service name and the least level written. Call once from main() before any
 * thread starts; until then lines carry the service "tagproof". fd is where lines go
 * (normally 2).
 */
void log_init(const char *service, enum log_level min_level, int fd);

/* Parses "debug", "info", "warn" or "error"; -1 if it is none of them. */
int log_level_parse(const char *s, enum log_level *out);

int log_enabled(enum log_level level);

/*
 * Writes one line: ts, level, service, msg, request_id (when not NULL) and the members of
 * fields (may be NULL; this call takes ownership of it). Members whose names say they hold a
 * secret (token, password, api key, authorization, ...) are written as "[redacted]", and
 * secrets recognised inside string values (bearer tokens, JWTs, tp_live_ keys, passwords in
 * connection strings) are masked.
 */
void log_emit(enum log_level level, const char *request_id, const char *msg, json_t *fields);

/* printf-style conveniences without fields or request id. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Buffering for a busy event-loop thread. After log_buffer_start() the calling thread's lines
 * below LOG_WARN collect in a buffer of its own (LOG_BUFFER_SIZE bytes) instead of costing a
 * write(2) each. wake(arg) runs on this thread, inside log_emit(), whenever a line enters the
 * empty buffer; the thread must then call log_flush() soon — an event loop activates an event
 * whose callback flushes, so that the lines of one loop turn leave in one write. A line at
 * LOG_WARN or above, a full buffer, log_flush() and log_buffer_stop() write what waits, lines
 * whole and in order. Other threads are not affected. Lines still waiting when the process
 * dies are lost (at most one loop turn's worth).
 */
#define LOG_BUFFER_SIZE 65536
void log_buffer_start(void (*wake)(void *arg), void *arg);
void log_flush(void);
/* Writes what waits and returns the thread to one write(2) a line. */
void log_buffer_stop(void);

/*
 * Masks secrets inside a string: returns a new string the caller frees. Exposed for the
 * tests and for anything that must print a connection string.
 */
char *log_redact(const char *s);

#endif
