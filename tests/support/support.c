/* support: real servers and small utilities for the integration tests (see support.h). */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Ports come from below the kernel's ephemeral range (32768 and up), where outgoing
 * connections would otherwise take a port between our check and the server's bind.
 */
int ts_free_port(void)
{
    static unsigned seed;
    if (seed == 0)
        seed = (unsigned)getpid() ^ (unsigned)ts_now_ms();
    for (int attempt = 0; attempt < 1000; attempt++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return port;
    }
    fail_msg("no free port found");
    return -1;
}

int64_t ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ts_wait_port(int port, int timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    do {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(20 * 1000);
    } while (ts_now_ms() < end);
    return -1;
}

const char *ts_require_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        fail_msg("%s is not set: run the integration tests through scripts/test", name);
    return v;
}

char *ts_tempdir(const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s.XXXXXX", tmp != NULL ? tmp : "/tmp", prefix) > 0);
    assert_non_null(mkdtemp(path));
    return path;
}

void ts_rmdir(const char *path)
{
    if (path != NULL && strlen(path) > 5)
        ts_sh("rm -rf '%s'", path);
}

int ts_sh(const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int st = system(cmd);
    free(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

void ts_redis_init(struct ts_redis *r)
{
    memset(r, 0, sizeof(*r));
    r->pid = -1;
    r->port = ts_free_port();
    r->dir = ts_tempdir("tp-redis");
    snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d/0", r->port);
}

int ts_redis_start(struct ts_redis *r)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               r->dir, "--save", "", "--appendonly", "no", "--protected-mode", "no", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    return ts_wait_port(r->port, 10000);
}

void ts_redis_kill(struct ts_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGCONT);
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = -1;
    }
}

void ts_redis_pause(struct ts_redis *r)
{
    if (r->pid > 0)
        kill(r->pid, SIGSTOP);
}

void ts_redis_resume(struct ts_redis *r)
{
    if (r->pid > 0)
        kill(r->pid, SIGCONT);
}

void ts_redis_destroy(struct ts_redis *r)
{
    ts_redis_kill(r);
    ts_rmdir(r->dir);
    free(r->dir);
    r->dir = NULL;
}

static int pgcluster(struct ts_pg *pg, const char *verb)
{
    return ts_sh("'%s/scripts/lib/pgcluster' %s '%s' %d >>'%s.log' 2>&1", TAGPROOF_SOURCE_DIR, verb,
                 pg->dir, pg->port, pg->dir);
}

int ts_pg_init_start(struct ts_pg *pg)
{
    memset(pg, 0, sizeof(*pg));
    pg->port = ts_free_port();
    pg->dir = ts_tempdir("tp-pg");
    snprintf(pg->conninfo, sizeof(pg->conninfo),
             "postgresql://tagproof:tagproof@127.0.0.1:%d/tagproof?connect_timeout=5", pg->port);
    if (pgcluster(pg, "init") != 0)
        return -1;
    return ts_pg_start(pg);
}

int ts_pg_start(struct ts_pg *pg)
{
    return pgcluster(pg, "start");
}

void ts_pg_stop(struct ts_pg *pg)
{
    pgcluster(pg, "stop");
}

void ts_pg_kill(struct ts_pg *pg)
{
    pgcluster(pg, "kill");
}

void ts_pg_pause(struct ts_pg *pg)
{
    pgcluster(pg, "pause");
}

void ts_pg_resume(struct ts_pg *pg)
{
    pgcluster(pg, "resume");
}

void ts_pg_destroy(struct ts_pg *pg)
{
    if (pg->dir == NULL)
        return;
    ts_pg_resume(pg);
    ts_pg_kill(pg);
    ts_rmdir(pg->dir);
    ts_sh("rm -f '%s.log'", pg->dir);
    free(pg->dir);
    pg->dir = NULL;
}
