/*
 * redis_support: what the test_redis* integration tests share — running an event loop until
 * something happened, recording callbacks so a test can count them, and starting extra real
 * redis-server and redis-sentinel processes (replicas, sentinels) on free loopback ports.
 */
#include "redis_support.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/*
 * Runs the loop until done(arg) is true (0) or timeout_ms passed (-1). A 5 ms tick makes sure
 * the loop comes back to check even when nothing else happens.
 */
int rs_run_until(struct event_base *base, bool (*done)(void *), void *arg, int timeout_ms)
{
    struct event *ev = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 5000};
    int64_t end = ts_now_ms() + timeout_ms;
    int rc = -1;

    assert_non_null(ev);
    event_add(ev, &tv);
    for (;;) {
        if (done(arg)) {
            rc = 0;
            break;
        }
        if (ts_now_ms() >= end)
            break;
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(ev);
    return rc;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void rs_run_for(struct event_base *base, int ms)
{
    rs_run_until(base, never, NULL, ms);
}

void rs_record(void *arg, enum redis_status status, const redisReply *reply)
{
    struct rs_call *call = arg;
    call->calls++;
    call->status = status;
    call->at_ms = ts_now_ms();
    call->type = reply != NULL ? reply->type : 0;
    if (reply == NULL)
        return;
    call->integer = reply->integer;
    if (reply->str != NULL) {
        call->len = reply->len < sizeof(call->str) ? reply->len : sizeof(call->str) - 1;
        memcpy(call->str, reply->str, call->len);
        call->str[call->len] = '\0';
    }
}

bool rs_called(void *call)
{
    return ((struct rs_call *)call)->calls > 0;
}

bool rs_connected(void *client)
{
    return redis_connected(client);
}

/*
 * Sends one command given as NUL-terminated strings ending with NULL, runs the loop until its
 * callback ran, and checks that it ran exactly once.
 */
void rs_do(struct event_base *base, struct redis_client *c, struct rs_call *out, ...)
{
    const char *argv[16];
    int argc = 0;
    va_list ap;

    va_start(ap, out);
    for (const char *a = va_arg(ap, const char *); a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc < 16);
        argv[argc++] = a;
    }
    va_end(ap);
    memset(out, 0, sizeof(*out));
    assert_int_equal(redis_command(c, 2000, rs_record, out, argc, argv, NULL), 0);
    assert_int_equal(out->calls, 0); /* never called back from inside redis_command() */
    assert_int_equal(rs_run_until(base, rs_called, out, 5000), 0);
    rs_run_for(base, 1);
    assert_int_equal(out->calls, 1);
}

void rs_proc_init(struct rs_proc *p)
{
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->port = ts_free_port();
    p->dir = ts_tempdir("tp-redis-extra");
}

/* Runs "exec cmd" through sh so that the pid is the server's own. Output goes to dir/log. */
static int spawn(struct rs_proc *p, const char *cmd)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Dies with the test, even one that a failed assertion or a crash ended. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
    return ts_wait_port(p->port, 10000);
}

/* A redis-server like ts_redis_start()'s, plus extra_args (e.g. "--replicaof 127.0.0.1 N"). */
int rs_server_start(struct rs_proc *p, const char *extra_args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "exec redis-server --port %d --bind 127.0.0.1 --dir '%s' --save '' "
             "--appendonly no --protected-mode no %s >>'%s/log' 2>&1",
             p->port, p->dir, extra_args != NULL ? extra_args : "", p->dir);
    return spawn(p, cmd);
}

/*
 * A sentinel that watches master_name at 127.0.0.1:master_port with quorum 1, calls it down
 * after 1 s of silence and times failovers out after 3 s, so that tests fail over quickly.
 */
int rs_sentinel_start(struct rs_proc *p, const char *master_name, int master_port)
{
    char path[512], cmd[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/sentinel.conf", p->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 3000\n"
            "sentinel parallel-syncs %s 1\n",
            p->port, p->dir, master_name, master_port, master_name, master_name, master_name);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "exec redis-sentinel '%s' >>'%s/log' 2>&1", path, p->dir);
    return spawn(p, cmd);
}

void rs_proc_kill(struct rs_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGCONT);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = -1;
    }
}

void rs_proc_destroy(struct rs_proc *p)
{
    rs_proc_kill(p);
    ts_rmdir(p->dir);
    free(p->dir);
    p->dir = NULL;
}

/*
 * Runs redis-cli against 127.0.0.1:port (a test's setup and checks, outside the client under
 * test) and returns its exit status; its output, trimmed, goes to out.
 */
int rs_cli(char *out, size_t outlen, int port, const char *fmt, ...)
{
    char args[512], cmd[700];
    size_t n = 0;
    va_list ap;
    FILE *f;

    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "redis-cli -h 127.0.0.1 -p %d %s 2>&1", port, args);
    f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    if (out != NULL && outlen > 0) {
        n = fread(out, 1, outlen - 1, f);
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
            n--;
        out[n] = '\0';
    } else {
        char sink[256];
        while (fread(sink, 1, sizeof(sink), f) > 0)
            ;
    }
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
