/*
 * support: what integration tests share — free loopback ports, child processes, and real
 * Redis and PostgreSQL servers that a test may start, stop, kill, pause and resume.
 * Nothing here mocks a server: each helper drives the real binary.
 */
#ifndef TAGPROOF_TEST_SUPPORT_H
#define TAGPROOF_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int ts_free_port(void);

/* Waits until something accepts on 127.0.0.1:port; 0 when it does, -1 after timeout_ms. */
int ts_wait_port(int port, int timeout_ms);

/* Monotonic milliseconds. */
int64_t ts_now_ms(void);

/* The value of an environment variable the test cannot run without; fails the test if unset. */
const char *ts_require_env(const char *name);

/* A fresh directory under $TMPDIR, removed by ts_rmdir(). Caller frees the path. */
char *ts_tempdir(const char *prefix);
void ts_rmdir(const char *path);

/* Runs a shell command, returns its exit status (or -1). */
int ts_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A private redis-server on a free loopback port, data in a temporary directory. Start it
 * again on the same port after a stop or kill with ts_redis_start().
 */
struct ts_redis {
    pid_t pid;
    int port;
    char *dir;
    char url[64]; /* redis://127.0.0.1:PORT/0 */
};
void ts_redis_init(struct ts_redis *r);    /* picks port and dir; does not start */
int ts_redis_start(struct ts_redis *r);    /* 0 once it accepts connections */
void ts_redis_kill(struct ts_redis *r);    /* SIGKILL and reap */
void ts_redis_pause(struct ts_redis *r);   /* SIGSTOP: connections stay open, nothing answers */
void ts_redis_resume(struct ts_redis *r);  /* SIGCONT */
void ts_redis_destroy(struct ts_redis *r); /* kill if running and remove the directory */

/*
 * A private PostgreSQL 15 cluster (scripts/lib/pgcluster, which runs it as an unprivileged
 * user when the tests run as root). The role "tagproof" with password "tagproof" owns the
 * database "tagproof"; conninfo is a URI for it.
 */
struct ts_pg {
    int port;
    char *dir;
    char conninfo[256];
};
int ts_pg_init_start(struct ts_pg *pg); /* initdb (a few seconds) and start */
int ts_pg_start(struct ts_pg *pg);
void ts_pg_stop(struct ts_pg *pg);  /* fast shutdown */
void ts_pg_kill(struct ts_pg *pg);  /* immediate shutdown, like a crash */
void ts_pg_pause(struct ts_pg *pg); /* SIGSTOP every server process */
void ts_pg_resume(struct ts_pg *pg);
void ts_pg_destroy(struct ts_pg *pg);

#endif
