/* redis_support: what the test_redis* integration tests share — running an event loop, counting
 * callbacks, and starting extra redis-server and redis-sentinel processes on free ports. */
#ifndef TAGPROOF_TEST_REDIS_SUPPORT_H
#define TAGPROOF_TEST_REDIS_SUPPORT_H

#include "support.h"

#include "redis.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

/* One command's outcome. calls counts how often the callback ran: a test expects exactly 1. */
struct rs_call {
    int calls;
    enum redis_status status;
    int type; /* the reply's REDIS_REPLY_*, 0 without a reply */
    long long integer;
    char str[4096];
    size_t len;
    int64_t at_ms; /* ts_now_ms() when the callback ran */
};

/* An extra server or sentinel process. */
struct rs_proc {
    pid_t pid;
    int port;
    char *dir;
};

int rs_run_until(struct event_base *base, bool (*done)(void *), void *arg, int timeout_ms);
void rs_run_for(struct event_base *base, int ms);
void rs_record(void *arg, enum redis_status status, const redisReply *reply);
bool rs_called(void *call);
bool rs_connected(void *client);
void rs_do(struct event_base *base, struct redis_client *c, struct rs_call *out, ...);
void rs_proc_init(struct rs_proc *p);
int rs_server_start(struct rs_proc *p, const char *extra_args);
int rs_sentinel_start(struct rs_proc *p, const char *master_name, int master_port);
void rs_proc_kill(struct rs_proc *p);
void rs_proc_destroy(struct rs_proc *p);
int rs_cli(char *out, size_t outlen, int port, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
