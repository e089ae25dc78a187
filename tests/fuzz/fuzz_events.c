// fuzz: MODULES events
/*
 * fuzz_events: the sink's parser of stream entries, events_parse, on arbitrary field/value
 * lists. The input is split at '\n' into items (fields and values alternating; the items may
 * hold any other byte, NUL included). Whatever parses must be accepted by events_xadd, and the
 * entry it builds must parse back to the same event and build the same entry again.
 *
 * The whole input is also given to events_set_user_agent: whatever it makes of any bytes must
 * be a user agent that events_xadd accepts in an otherwise valid event.
 */
#include "events.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ITEMS 64

/* The checks are not what is fuzzed: no coverage feedback (or cost) from them. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

NO_COVERAGE static void fail(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_events: %s: %s\n", what, why != NULL ? why : "(no reason)");
    abort();
}

NO_COVERAGE static int same_double(double a, double b)
{
    return a == b && signbit(a) == signbit(b);
}

NO_COVERAGE static int same_event(const struct scan_event *a, const struct scan_event *b)
{
    return strcmp(a->tag_id, b->tag_id) == 0 && a->ts_ms == b->ts_ms && a->verdict == b->verdict &&
           a->score == b->score && strcmp(a->reasons, b->reasons) == 0 &&
           strcmp(a->ip_hash, b->ip_hash) == 0 && strcmp(a->user_agent, b->user_agent) == 0 &&
           a->has_location == b->has_location &&
           (!a->has_location || (same_double(a->lat, b->lat) && same_double(a->lon, b->lon))) &&
           a->source == b->source && strcmp(a->factory_id, b->factory_id) == 0 &&
           strcmp(a->batch_id, b->batch_id) == 0 && a->first_scan == b->first_scan &&
           a->first_pending == b->first_pending;
}

/* The entry an XADD writes: its field/value items, after "XADD <stream> *". */
static void reparse(const struct events_xadd *x, struct scan_event *out)
{
    const char *why = NULL;
    if (x->argc != EVENTS_XADD_ARGC)
        fail("xadd", "wrong argc");
    if (events_parse(x->argv + 3, x->argvlen + 3, (size_t)x->argc - 3, out, &why) != 0)
        fail("the entry events_xadd built does not parse", why);
}

static void check_round_trip(const struct scan_event *ev)
{
    struct events_xadd x1, x2;
    struct scan_event back;
    const char *why = NULL;

    if (events_xadd(ev, NULL, &x1, &why) != 0)
        fail("events_xadd refused an event", why);
    reparse(&x1, &back);
    if (!same_event(ev, &back))
        fail("round trip", "the entry parses to another event");
    if (events_xadd(&back, NULL, &x2, &why) != 0)
        fail("events_xadd refused a re-parsed event", why);
    for (int i = 0; i < x1.argc; i++)
        if (x1.argvlen[i] != x2.argvlen[i] || memcmp(x1.argv[i], x2.argv[i], x1.argvlen[i]) != 0)
            fail("round trip", "the entry is not built the same way twice");
}

static void check_user_agent(const uint8_t *data, size_t size)
{
    struct scan_event ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.tag_id, sizeof(ev.tag_id), "f47ac10b-58cc-4372-a567-0e02b2c3d479");
    ev.ts_ms = 1700000000000;
    ev.verdict = events_verdict("authentic", 9);
    events_set_user_agent(&ev, (const char *)data, size);
    if (memchr(ev.user_agent, '\0', sizeof(ev.user_agent)) == NULL ||
        strlen(ev.user_agent) > EVENTS_UA_MAX)
        fail("events_set_user_agent", "not NUL-terminated within EVENTS_UA_MAX");
    check_round_trip(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *items[MAX_ITEMS];
    size_t lens[MAX_ITEMS], n = 0;
    const char *p = (const char *)data, *end = p + size;
    struct scan_event ev;

    /* n items from n - 1 separators; an empty input is no items at all. */
    while (size > 0 && n < MAX_ITEMS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        items[n] = p;
        lens[n] = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        n++;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    if (events_parse(items, lens, n, &ev, NULL) == 0)
        check_round_trip(&ev);

    check_user_agent(data, size);
    return 0;
}
