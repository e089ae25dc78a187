/*
 * Integration test of shared/redis with Redis Sentinel: a real master, replica and sentinel on
 * private loopback ports. The client finds the master, follows a demotion (READONLY), a killed
 * master's failover, and a forced failover whose old master stays up (+switch-master).
 */
#include "support.h"
#include "redis_support.h"

#include "log.h"
#include "redis.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#define MASTER_NAME "tpmaster"
#define NO_SYNC_DELAY "--repl-diskless-sync-delay 0"

struct on_master {
    struct redis_client *c;
    int port;
};

/* Connected, and to the server on that port. */
static bool connected_to(void *arg)
{
    struct on_master *m = arg;
    struct redis_stats s;
    redis_client_stats(m->c, &s);
    return s.connected && s.master_port == m->port;
}

/* Polls until redis-cli's output for a command contains want; 0 when it did. */
static int cli_wait(int port, const char *cmd, const char *want, int timeout_ms)
{
    char out[8192] = "";
    int64_t end = ts_now_ms() + timeout_ms;
    do {
        if (rs_cli(out, sizeof(out), port, "%s", cmd) == 0 && strstr(out, want) != NULL)
            return 0;
        usleep(200 * 1000);
    } while (ts_now_ms() < end);
    fail_msg("port %d: '%s' never gave '%s' (last: %.200s)", port, cmd, want, out);
    return -1;
}

/* Torn down even when a failed assertion ends the test early, so no server outlives it. */
struct env {
    struct event_base *base;
    struct rs_proc master, replica, sentinel;
};

static int env_setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->base = event_base_new()) == NULL) {
        free(e);
        return -1;
    }
    rs_proc_init(&e->master);
    rs_proc_init(&e->replica);
    rs_proc_init(&e->sentinel);
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    rs_proc_destroy(&e->sentinel);
    rs_proc_destroy(&e->replica);
    rs_proc_destroy(&e->master);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void test_sentinel(void **state)
{
    struct env *e = *state;
    struct rs_proc *m = &e->master, *r = &e->replica, *s = &e->sentinel;
    struct event_base *base = e->base;
    struct rs_call res;
    char list[128], extra[128], port_str[16];
    int dead_sentinel = ts_free_port(), dead_master = ts_free_port();
    const char *why = NULL;
    int64_t t0 = ts_now_ms();

    /*
     * Master, a replica in sync, and a sentinel that has seen the replica. Full syncs start at
     * once instead of after Redis' default 5 s wait for more replicas.
     */
    assert_int_equal(rs_server_start(m, NO_SYNC_DELAY), 0);
    snprintf(extra, sizeof(extra), NO_SYNC_DELAY " --replicaof 127.0.0.1 %d", m->port);
    assert_int_equal(rs_server_start(r, extra), 0);
    cli_wait(r->port, "INFO replication", "master_link_status:up", 15000);
    assert_int_equal(rs_sentinel_start(s, MASTER_NAME, m->port), 0);
    snprintf(port_str, sizeof(port_str), "%d", r->port);
    cli_wait(s->port, "SENTINEL replicas " MASTER_NAME, port_str, 10000);

    /* The first sentinel listed is down: the client asks the next one. */
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", dead_sentinel, s->port);
    struct redis_options o = {.sentinels = list,
                              .master_name = MASTER_NAME,
                              .connect_timeout_ms = 500,
                              .command_timeout_ms = 1000};
    struct redis_client *c = redis_client_new(base, &o, &why);
    assert_non_null(c);
    struct on_master want = {.c = c, .port = m->port};
    assert_int_equal(rs_run_until(base, connected_to, &want, 5000), 0);
    rs_do(base, c, &res, "SET", "phase", "start", NULL);
    assert_int_equal(res.status, REDIS_STATUS_OK);
    struct redis_stats st;
    redis_client_stats(c, &st);
    assert_string_equal(st.master_host, "127.0.0.1");
    assert_true(st.discoveries >= 1);
    print_message("      set up and found the master: %lld ms\n", (long long)(ts_now_ms() - t0));

    /*
     * Demoted under the client's feet (no sentinel involved, so nobody kills its connection):
     * the write fails with READONLY, and the client is already looking again when the callback
     * runs. Sentinels still name the demoted server, so ROLE turns it down until it is master
     * again.
     */
    assert_int_equal(rs_cli(NULL, 0, m->port, "REPLICAOF 127.0.0.1 %d", dead_master), 0);
    rs_do(base, c, &res, "SET", "phase", "demoted", NULL);
    assert_int_equal(res.status, REDIS_STATUS_ERROR_REPLY);
    assert_memory_equal(res.str, "READONLY", 8);
    assert_false(redis_connected(c));
    rs_run_for(base, 600);
    redis_client_stats(c, &st);
    assert_false(st.connected);
    assert_true(st.role_mismatches >= 1);
    assert_int_equal(rs_cli(NULL, 0, m->port, "REPLICAOF NO ONE"), 0);
    assert_int_equal(rs_run_until(base, connected_to, &want, 5000), 0);
    rs_do(base, c, &res, "SET", "phase", "master-again", NULL);
    assert_int_equal(res.status, REDIS_STATUS_OK);
    cli_wait(r->port, "INFO replication", "master_link_status:up", 15000);

    /* The master dies: the sentinel promotes the replica, and writes work again in < 10 s. */
    rs_proc_kill(m);
    int64_t killed = ts_now_ms();
    want.port = r->port;
    assert_int_equal(rs_run_until(base, connected_to, &want, 15000), 0);
    rs_do(base, c, &res, "SET", "phase", "after-kill", NULL);
    assert_int_equal(res.status, REDIS_STATUS_OK);
    int64_t took = ts_now_ms() - killed;
    print_message("      master killed: writes succeed again after %lld ms\n", (long long)took);
    assert_true(took < 10000);

    /*
     * The old master comes back as a replica, and a forced failover promotes it again. The
     * demoted master stays up and would take writes for many seconds more: the client must
     * move on the sentinel's +switch-master announcement.
     */
    snprintf(extra, sizeof(extra), NO_SYNC_DELAY " --replicaof 127.0.0.1 %d", r->port);
    assert_int_equal(rs_server_start(m, extra), 0);
    cli_wait(m->port, "INFO replication", "master_link_status:up", 15000);
    cli_wait(s->port, "SENTINEL FAILOVER " MASTER_NAME, "OK", 15000);
    int64_t forced = ts_now_ms();
    want.port = m->port;
    assert_int_equal(rs_run_until(base, connected_to, &want, 10000), 0);
    rs_do(base, c, &res, "SET", "phase", "after-forced-failover", NULL);
    assert_int_equal(res.status, REDIS_STATUS_OK);
    took = ts_now_ms() - forced;
    print_message("      forced failover: writes on the new master after %lld ms\n",
                  (long long)took);
    assert_true(took < 6000);
    char out[256];
    rs_cli(out, sizeof(out), m->port, "GET phase");
    assert_string_equal(out, "after-forced-failover");

    redis_client_stats(c, &st);
    print_message("      connects %llu, disconnects %llu, failures %llu, discoveries %llu\n",
                  (unsigned long long)st.connects, (unsigned long long)st.disconnects,
                  (unsigned long long)st.connect_failures, (unsigned long long)st.discoveries);
    assert_true(st.connects >= 4);
    assert_true(st.disconnects >= 3);

    /* Freed with its sentinel subscription open. */
    redis_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sentinel, env_setup, env_teardown)};
    char *dir = ts_tempdir("tp-redis-log");
    char path[512];
    signal(SIGPIPE, SIG_IGN);
    snprintf(path, sizeof(path), "%s/log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        return 1;
    log_init("test_redis_sentinel", LOG_DEBUG, fd);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "module log:\n");
        ts_sh("cat '%s' >&2", path);
    }
    close(fd);
    ts_rmdir(dir);
    free(dir);
    return rc;
}
