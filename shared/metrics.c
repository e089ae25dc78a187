/*
 * metrics: Prometheus families kept in registration order. Each family has its own mutex and
 * a short list of series; label sets are few (routes × statuses), so a linear search under
 * the family's lock is cheaper than hashing.
 */
#include "metrics.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_LABELS 8

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM, METRIC_GAUGE_FN };

struct series {
    struct series *next;
    char **values; /* nlabels label values */
    double value;  /* counter or gauge */
    double sum;    /* histogram */
    unsigned long long count;
    unsigned long long *buckets; /* histogram: per-bucket (non-cumulative) counts */
};

struct metric {
    struct metric *next;
    enum metric_type type;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    double (*fn)(void *);
    void *fn_arg;
    pthread_mutex_t lock;
    struct series *series;
};

struct metrics {
    pthread_mutex_t lock;
    struct metric *head, *tail;
};

const double metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_latency_nbuckets = sizeof(metrics_latency_buckets) / sizeof(double);

struct metrics *metrics_new(void)
{
    struct metrics *reg = calloc(1, sizeof(*reg));
    if (reg != NULL)
        pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void series_free(struct series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

static void metric_free(struct metric *m)
{
    struct series *s = m->series, *next;
    for (; s != NULL; s = next) {
        next = s->next;
        series_free(s, m->nlabels);
    }
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    pthread_mutex_destroy(&m->lock);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

void metrics_free(struct metrics *reg)
{
    if (reg == NULL)
        return;
    struct metric *m = reg->head, *next;
    for (; m != NULL; m = next) {
        next = m->next;
        metric_free(m);
    }
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static int valid_name(const char *s)
{
    if (s == NULL || !(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
        return 0;
    for (; *s != '\0'; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':'))
            return 0;
    return 1;
}

static int same_shape(const struct metric *m, enum metric_type type, const char *labels)
{
    char joined[256] = "";
    for (size_t i = 0; i < m->nlabels; i++) {
        if (i > 0)
            strcat(joined, ",");
        strncat(joined, m->labels[i], sizeof(joined) - strlen(joined) - 2);
    }
    return m->type == type && strcmp(joined, labels != NULL ? labels : "") == 0;
}

static struct metric *metrics_register(struct metrics *reg, enum metric_type type, const char *name,
                                       const char *help, const char *labels, const double *bounds,
                                       size_t nbounds)
{
    struct metric *m = NULL;
    char *copy = NULL, *save = NULL;

    if (!valid_name(name))
        return NULL;
    pthread_mutex_lock(&reg->lock);
    for (struct metric *it = reg->head; it != NULL; it = it->next) {
        if (strcmp(it->name, name) == 0) {
            m = same_shape(it, type, labels) ? it : NULL;
            pthread_mutex_unlock(&reg->lock);
            return m;
        }
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail;
    pthread_mutex_init(&m->lock, NULL);
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help != NULL ? help : "");
    if (m->name == NULL || m->help == NULL)
        goto fail;
    if (labels != NULL && *labels != '\0') {
        if ((copy = strdup(labels)) == NULL)
            goto fail;
        for (char *tok = strtok_r(copy, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            if (m->nlabels == METRICS_MAX_LABELS || !valid_name(tok) ||
                (m->labels[m->nlabels] = strdup(tok)) == NULL)
                goto fail;
            m->nlabels++;
        }
    }
    if (type == METRIC_HISTOGRAM) {
        m->nbounds = nbounds;
        m->bounds = malloc(nbounds * sizeof(double));
        if (m->bounds == NULL)
            goto fail;
        memcpy(m->bounds, bounds, nbounds * sizeof(double));
    }
    if (reg->tail != NULL)
        reg->tail->next = m;
    else
        reg->head = m;
    reg->tail = m;
    pthread_mutex_unlock(&reg->lock);
    free(copy);
    return m;
fail:
    pthread_mutex_unlock(&reg->lock);
    free(copy);
    if (m != NULL)
        metric_free(m);
    return NULL;
}

struct metric *metrics_counter(struct metrics *reg, const char *name, const char *help,
                               const char *labels)
{
    return metrics_register(reg, METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric *metrics_gauge(struct metrics *reg, const char *name, const char *help,
                             const char *labels)
{
    return metrics_register(reg, METRIC_GAUGE, name, help, labels, NULL, 0);
}

struct metric *metrics_histogram(struct metrics *reg, const char *name, const char *help,
                                 const char *labels, const double *buckets, size_t nbuckets)
{
    if (buckets == NULL) {
        buckets = metrics_latency_buckets;
        nbuckets = metrics_latency_nbuckets;
    }
    for (size_t i = 1; i < nbuckets; i++)
        if (!(buckets[i] > buckets[i - 1]))
            return NULL;
    return metrics_register(reg, METRIC_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

int metrics_gauge_fn(struct metrics *reg, const char *name, const char *help,
                     double (*fn)(void *arg), void *arg)
{
    struct metric *m = metrics_register(reg, METRIC_GAUGE_FN, name, help, NULL, NULL, 0);
    if (m == NULL)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->fn = fn;
    m->fn_arg = arg;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Finds or creates the series for the label values in ap; called with m->lock held. */
static struct series *series_get(struct metric *m, va_list ap, int create)
{
    const char *values[METRICS_MAX_LABELS];
    for (size_t i = 0; i < m->nlabels; i++) {
        values[i] = va_arg(ap, const char *);
        if (values[i] == NULL)
            values[i] = "";
    }
    for (struct series *s = m->series; s != NULL; s = s->next) {
        size_t i = 0;
        while (i < m->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == m->nlabels)
            return s;
    }
    if (!create)
        return NULL;
    struct series *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->values = calloc(m->nlabels + 1, sizeof(char *));
    if (m->type == METRIC_HISTOGRAM)
        s->buckets = calloc(m->nbounds + 1, sizeof(unsigned long long));
    if (s->values == NULL || (m->type == METRIC_HISTOGRAM && s->buckets == NULL))
        goto fail;
    for (size_t i = 0; i < m->nlabels; i++)
        if ((s->values[i] = strdup(values[i])) == NULL)
            goto fail;
    /* Appending keeps the exposition in first-seen order, which reads naturally. */
    struct series **tail = &m->series;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = s;
    return s;
fail:
    series_free(s, m->nlabels);
    return NULL;
}

enum update_op { OP_ADD, OP_SET, OP_OBSERVE };

static void metric_update(struct metric *m, enum update_op op, double v, va_list ap)
{
    pthread_mutex_lock(&m->lock);
    struct series *s = series_get(m, ap, 1);
    if (s != NULL) {
        switch (op) {
        case OP_ADD:
            s->value += v;
            break;
        case OP_SET:
            s->value = v;
            break;
        case OP_OBSERVE: {
            size_t i = 0;
            while (i < m->nbounds && v > m->bounds[i])
                i++;
            s->buckets[i]++;
            s->count++;
            s->sum += v;
            break;
        }
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void metric_inc(struct metric *m, ...)
{
    va_list ap;
    if (m == NULL)
        return;
    assert(m->type == METRIC_COUNTER || m->type == METRIC_GAUGE);
    va_start(ap, m);
    metric_update(m, OP_ADD, 1, ap);
    va_end(ap);
}

void metric_add(struct metric *m, double v, ...)
{
    va_list ap;
    if (m == NULL)
        return;
    assert(m->type == METRIC_COUNTER || m->type == METRIC_GAUGE);
    /* Counters only go up; a negative increment is a caller's bug, dropped in release. */
    assert(m->type != METRIC_COUNTER || v >= 0);
    if (m->type == METRIC_COUNTER && v < 0)
        return;
    va_start(ap, v);
    metric_update(m, OP_ADD, v, ap);
    va_end(ap);
}

void metric_set(struct metric *m, double v, ...)
{
    va_list ap;
    if (m == NULL)
        return;
    assert(m->type == METRIC_GAUGE);
    va_start(ap, v);
    metric_update(m, OP_SET, v, ap);
    va_end(ap);
}

void metric_observe(struct metric *m, double v, ...)
{
    va_list ap;
    if (m == NULL)
        return;
    assert(m->type == METRIC_HISTOGRAM);
    va_start(ap, v);
    metric_update(m, OP_OBSERVE, v, ap);
    va_end(ap);
}

double metric_value(struct metric *m, ...)
{
    va_list ap;
    double v = 0;
    if (m == NULL)
        return 0;
    va_start(ap, m);
    pthread_mutex_lock(&m->lock);
    struct series *s = series_get(m, ap, 0);
    if (s != NULL)
        v = m->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&m->lock);
    va_end(ap);
    return v;
}

/* A growing output buffer; on allocation failure it stops growing and render returns NULL. */
struct buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->failed)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void buf_escaped(struct buf *b, const char *s, int in_label)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            buf_printf(b, "\\\\");
        else if (*s == '\n')
            buf_printf(b, "\\n");
        else if (*s == '"' && in_label)
            buf_printf(b, "\\\"");
        else
            buf_printf(b, "%c", *s);
    }
}

static void buf_value(struct buf *b, double v)
{
    if (isnan(v))
        buf_printf(b, "NaN");
    else if (isinf(v))
        buf_printf(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        buf_printf(b, "%lld", (long long)v);
    else
        buf_printf(b, "%.17g", v);
}

/* Writes {a="x",b="y"[,le="..."]}; extra_le may be NULL. */
static void buf_labels(struct buf *b, const struct metric *m, const struct series *s,
                       const char *extra_le)
{
    if (m->nlabels == 0 && extra_le == NULL)
        return;
    buf_printf(b, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        buf_printf(b, "%s%s=\"", i > 0 ? "," : "", m->labels[i]);
        buf_escaped(b, s->values[i], 1);
        buf_printf(b, "\"");
    }
    if (extra_le != NULL)
        buf_printf(b, "%sle=\"%s\"", m->nlabels > 0 ? "," : "", extra_le);
    buf_printf(b, "}");
}

static void render_family(struct buf *b, struct metric *m)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "gauge"};
    buf_printf(b, "# HELP %s ", m->name);
    buf_escaped(b, m->help, 0);
    buf_printf(b, "\n# TYPE %s %s\n", m->name, types[m->type]);

    if (m->type == METRIC_GAUGE_FN) {
        buf_printf(b, "%s ", m->name);
        buf_value(b, m->fn != NULL ? m->fn(m->fn_arg) : 0);
        buf_printf(b, "\n");
        return;
    }
    for (struct series *s = m->series; s != NULL; s = s->next) {
        if (m->type != METRIC_HISTOGRAM) {
            buf_printf(b, "%s", m->name);
            buf_labels(b, m, s, NULL);
            buf_printf(b, " ");
            buf_value(b, s->value);
            buf_printf(b, "\n");
            continue;
        }
        unsigned long long cumulative = 0;
        for (size_t i = 0; i <= m->nbounds; i++) {
            char le[32];
            cumulative += s->buckets[i];
            if (i < m->nbounds)
                snprintf(le, sizeof(le), "%g", m->bounds[i]);
            else
                snprintf(le, sizeof(le), "+Inf");
            buf_printf(b, "%s_bucket", m->name);
            buf_labels(b, m, s, le);
            buf_printf(b, " %llu\n", cumulative);
        }
        buf_printf(b, "%s_sum", m->name);
        buf_labels(b, m, s, NULL);
        buf_printf(b, " ");
        buf_value(b, s->sum);
        buf_printf(b, "\n%s_count", m->name);
        buf_labels(b, m, s, NULL);
        buf_printf(b, " %llu\n", s->count);
    }
}

char *metrics_render(struct metrics *reg, size_t *len)
{
    struct buf b = {.p = malloc(4096), .cap = 4096};
    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&reg->lock);
    for (struct metric *m = reg->head; m != NULL; m = m->next) {
        pthread_mutex_lock(&m->lock);
        render_family(&b, m);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&reg->lock);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.p;
}
