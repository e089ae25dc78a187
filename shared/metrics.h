/*
 * metrics: a Prometheus registry — counters, gauges and histograms with labels, rendered in
 * the text exposition format (version 0.0.4). Every update is thread-safe.
 */
#ifndef TAGPROOF_METRICS_H
#define TAGPROOF_METRICS_H

#include <stddef.h>

struct metrics; /* the registry */
struct metric;  /* one metric family: a name, help text, label names and its series */

struct metrics *metrics_new(void);
void metrics_free(struct metrics *reg);

/*
 * Registers a family and returns it; the registry owns it. labels is a comma-separated list
 * of label names ("route,status") or NULL. Registering a name twice returns the first family
 * when the type and labels match, NULL otherwise. Names and labels are copied.
 */
struct metric *metrics_counter(struct metrics *reg, const char *name, const char *help,
                               const char *labels);
struct metric *metrics_gauge(struct metrics *reg, const char *name, const char *help,
                             const char *labels);
/* buckets: upper bounds in increasing order (copied); NULL uses metrics_latency_buckets. */
struct metric *metrics_histogram(struct metrics *reg, const char *name, const char *help,
                                 const char *labels, const double *buckets, size_t nbuckets);

/* A gauge without labels whose value is read by calling fn(arg) at each rendering. */
int metrics_gauge_fn(struct metrics *reg, const char *name, const char *help,
                     double (*fn)(void *arg), void *arg);

/* Latency buckets in seconds, from 0.5 ms to 10 s. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;

/*
 * Updates take the family's label values as trailing const char * arguments, exactly as many
 * as the family has label names. A NULL family is ignored, so optional metrics cost nothing.
 */
void metric_inc(struct metric *m, ...);
void metric_add(struct metric *m, double v, ...);
void metric_set(struct metric *m, double v, ...);
void metric_observe(struct metric *m, double v, ...);

/* Current value of a counter or gauge series (0 when absent); for the tests. */
double metric_value(struct metric *m, ...);

/* Renders every family. Returns a NUL-terminated string the caller frees; *len its length. */
char *metrics_render(struct metrics *reg, size_t *len);

#endif
