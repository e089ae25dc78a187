/* Unit tests of metrics: families, labels, histograms, escaping and thread safety. */
#include "support.h"
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_counter_gauge_render(void **state)
{
    (void)state;
    struct metrics *reg = metrics_new();
    struct metric *req =
        metrics_counter(reg, "tagproof_requests_total", "Requests.", "route,status");
    struct metric *g = metrics_gauge(reg, "tagproof_breaker_state", "Breaker state.", "dependency");
    assert_non_null(req);
    metric_inc(req, "/v1/scan/{tag_id}", "200");
    metric_inc(req, "/v1/scan/{tag_id}", "200");
    metric_add(req, 3, "/v1/scan/{tag_id}", "404");
    metric_set(g, 2, "redis");
    metric_set(g, 0, "redis");
    assert_true(metric_value(req, "/v1/scan/{tag_id}", "200") == 2);
    assert_true(metric_value(req, "/v1/scan/{tag_id}", "404") == 3);
    assert_true(metric_value(req, "/nope", "200") == 0);

    size_t len = 0;
    char *text = metrics_render(reg, &len);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "# HELP tagproof_requests_total Requests.\n"));
    assert_non_null(strstr(text, "# TYPE tagproof_requests_total counter\n"));
    assert_non_null(
        strstr(text, "tagproof_requests_total{route=\"/v1/scan/{tag_id}\",status=\"200\"} 2\n"));
    assert_non_null(
        strstr(text, "tagproof_requests_total{route=\"/v1/scan/{tag_id}\",status=\"404\"} 3\n"));
    assert_non_null(strstr(text, "# TYPE tagproof_breaker_state gauge\n"));
    assert_non_null(strstr(text, "tagproof_breaker_state{dependency=\"redis\"} 0\n"));
    free(text);
    metrics_free(reg);
}

static void test_histogram(void **state)
{
    (void)state;
    struct metrics *reg = metrics_new();
    const double b[] = {0.1, 1};
    struct metric *h =
        metrics_histogram(reg, "tagproof_latency_seconds", "Latency.", "route", b, 2);
    metric_observe(h, 0.05, "a");
    metric_observe(h, 0.1, "a"); /* le is inclusive */
    metric_observe(h, 0.5, "a");
    metric_observe(h, 7, "a");
    char *text = metrics_render(reg, NULL);
    assert_non_null(strstr(text, "tagproof_latency_seconds_bucket{route=\"a\",le=\"0.1\"} 2\n"));
    assert_non_null(strstr(text, "tagproof_latency_seconds_bucket{route=\"a\",le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "tagproof_latency_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "tagproof_latency_seconds_sum{route=\"a\"} 7.65"));
    assert_non_null(strstr(text, "tagproof_latency_seconds_count{route=\"a\"} 4\n"));
    free(text);
    const double bad[] = {1, 0.5};
    assert_null(metrics_histogram(reg, "tagproof_bad", "x", NULL, bad, 2));
    metrics_free(reg);
}

static double answer(void *arg)
{
    return *(double *)arg;
}

static void test_names_escaping_fn_and_reregistration(void **state)
{
    (void)state;
    struct metrics *reg = metrics_new();
    assert_null(metrics_counter(reg, "bad name", "x", NULL));
    assert_null(metrics_counter(reg, "ok_total", "x", "bad-label"));
    struct metric *a = metrics_counter(reg, "tagproof_x_total", "Help with \\ and\nnewline.", "l");
    assert_ptr_equal(metrics_counter(reg, "tagproof_x_total", "other", "l"), a);
    assert_null(metrics_gauge(reg, "tagproof_x_total", "x", "l"));
    metric_inc(a, "quote\" back\\ nl\n");
    double v = 41.5;
    assert_int_equal(metrics_gauge_fn(reg, "tagproof_lag_seconds", "Lag.", answer, &v), 0);
    metric_inc(NULL); /* optional metrics cost nothing */
    char *text = metrics_render(reg, NULL);
    assert_non_null(strstr(text, "# HELP tagproof_x_total Help with \\\\ and\\nnewline.\n"));
    assert_non_null(strstr(text, "tagproof_x_total{l=\"quote\\\" back\\\\ nl\\n\"} 1\n"));
    assert_non_null(strstr(text, "tagproof_lag_seconds 41.5\n"));
    free(text);
    metrics_free(reg);
}

struct worker_arg {
    struct metric *c;
    struct metric *h;
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    char label[8];
    for (int i = 0; i < 100000; i++) {
        snprintf(label, sizeof(label), "%d", i % 4);
        metric_inc(a->c, label);
        metric_observe(a->h, 0.001, label);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct metrics *reg = metrics_new();
    struct worker_arg a = {metrics_counter(reg, "tagproof_t_total", "t", "k"),
                           metrics_histogram(reg, "tagproof_t_seconds", "t", "k", NULL, 0)};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &a);
    for (int i = 0; i < 4; i++) {
        char *text = metrics_render(reg, NULL); /* rendering while others write */
        free(text);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    double total = 0;
    for (int k = 0; k < 4; k++) {
        char label[8];
        snprintf(label, sizeof(label), "%d", k);
        total += metric_value(a.c, label);
        assert_true(metric_value(a.h, label) == 100000);
    }
    assert_true(total == 400000);
    metrics_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge_render),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_names_escaping_fn_and_reregistration),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
