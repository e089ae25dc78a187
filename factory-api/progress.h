/*
 * progress: how far a long task has come, for a person watching — on a terminal a bar redrawn
 * in place (at most ten times a second); anywhere else (a pipe, a log file) only one plain line
 * when the task ends, so logs stay readable.
 */
#ifndef TAGPROOF_PROGRESS_H
#define TAGPROOF_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum progress_unit { PROGRESS_BYTES, PROGRESS_ROWS };

struct progress;

/*
 * A display on out (borrowed; stderr, usually) of a task of total units (0: not known).
 * tty: draw the bar (the caller decides, usually isatty). label is copied. NULL when out of
 * memory; every function below accepts NULL and then does nothing.
 */
struct progress *progress_new(FILE *out, int tty, const char *label, enum progress_unit unit,
                              uint64_t total);

/* done units so far; total 0 leaves the total as it was. */
void progress_update(struct progress *p, uint64_t done, uint64_t total);

/*
 * A word on what is happening ("processing"), shown with the seconds since the start in place
 * of the rate, for phases whose count does not move; NULL or "" shows the rate again. Copied
 * (shortened to 40 bytes); takes effect at the next update.
 */
void progress_note(struct progress *p, const char *note);

/*
 * Ends the display and frees p. On a terminal the bar as it stands and a line break; elsewhere,
 * when the task finished, one summary line ("upload: 27.4 MiB in 1.2 s (22.8 MiB/s)"), and
 * nothing when it did not (the caller says why).
 */
void progress_end(struct progress *p, int finished);

/*
 * One bar line for a terminal width columns wide (without a line break): label, bar, percent,
 * done of total and the rate over elapsed_s seconds (or, when note is neither NULL nor "",
 * the note and the whole seconds elapsed); without a total, just the count and the rate or
 * note. Pure, for tests. Returns the length written (truncated to fit len, NUL-terminated).
 */
size_t progress_format(char *out, size_t len, const char *label, enum progress_unit unit,
                       uint64_t done, uint64_t total, double elapsed_s, int width,
                       const char *note);

/* A quantity for people: "512 B", "12.3 MiB" (bytes) or "1000000" (rows). */
void progress_amount(char *out, size_t len, enum progress_unit unit, uint64_t n);

#endif
