/*
 * redis: hiredis' async API on libevent, plus what hiredis 0.14 lacks — per-command and connect
 * deadlines, reconnection with backoff, and Sentinel discovery — so that a worker thread can use
 * Redis on its request path without ever blocking and without ever losing a callback.
 *
 * How the pieces fit. Each command is a struct redis_cmd with its own timer. Once handed to
 * hiredis, hiredis owns the right to call on_reply() for it exactly once: with the reply, or
 * with NULL when the connection goes away. Our user callback runs at the first of: the reply,
 * the deadline, the loss of the connection, or redis_client_free(); the flag `done` makes the
 * later ones silent. The struct lives until hiredis lets go of it, so a late reply always finds
 * it. The client keeps every command that refers to it on a list, so that freeing the client
 * can answer the open ones and cut their back-pointer.
 *
 * hiredis calls our callbacks from inside its own loops, and user callbacks may issue commands
 * or free the client from there. Two rules keep that safe: the client's state is brought up to
 * date before any user callback runs, and after calling a user callback (or anything that may
 * call one) a function touches neither the client nor hiredis again.
 */
#include "redis.h"

#include "config.h"
#include "log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_COMMAND_TIMEOUT_MS 100
#define DEFAULT_STALL_TIMEOUT_MS 2000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define SUBSCRIBE_RETRY_MS 1000

struct redis_addr {
    char host[64];
    int port;
};

/*
 * WAITING: a retry timer is armed (or nothing to do yet). DISCOVERING: a sentinel is being
 * asked. CONNECTING: TCP connect and handshake (AUTH, SELECT, ROLE) under one deadline. READY:
 * user commands are sent.
 */
enum client_state { STATE_WAITING, STATE_DISCOVERING, STATE_CONNECTING, STATE_READY };
static const char *const state_names[] = {"waiting", "discovering", "connecting", "ready"};

/* The handshake commands, passed to on_handshake() as privdata. */
enum handshake_step { STEP_AUTH = 1, STEP_SELECT, STEP_ROLE };

struct redis_cmd {
    TAILQ_ENTRY(redis_cmd) link; /* on client->cmds while client is not NULL */
    struct redis_client *client; /* NULL once the client is freed */
    redis_reply_fn fn;
    void *arg;
    struct event *timer; /* the deadline, or a zero delay to fail a command never sent */
    uint64_t conn_gen;   /* which connection it was sent on */
    bool sent;           /* handed to hiredis, which will call on_reply() for it once */
    bool done;           /* fn has run */
};

struct redis_client {
    struct event_base *base;

    /* Settings, fixed at creation. */
    char *password;
    int db;
    struct redis_addr direct;
    struct redis_addr *sentinels;
    size_t nsentinels;
    char *master_name;
    int connect_timeout_ms;
    int stall_timeout_ms;
    const struct timeval *command_tv; /* the default deadline, a libevent common timeout */
    struct timeval command_tv_plain;

    enum client_state state;
    struct redis_addr target; /* the server in use or being connected to */
    bool target_known;
    redisAsyncContext *ac;    /* to target: CONNECTING and READY */
    redisAsyncContext *query; /* a sentinel being asked: DISCOVERING */
    redisAsyncContext *sub;   /* subscribed to a sentinel's +switch-master */
    size_t sentinel_first;    /* the sentinel that answered last is asked first */
    size_t sentinel_tried;    /* sentinels tried in this round */
    size_t sub_next;          /* the sentinel the next subscription attempt goes to */
    char round_error[256];    /* why the last sentinel of the round failed */
    int handshake_left;
    uint64_t conn_gen;     /* incremented for every connection attempt */
    uint64_t conn_replies; /* replies read on the current connection */
    uint64_t stall_mark;   /* conn_replies when the stall timer was armed */
    unsigned attempt;      /* failed attempts in a row, for the backoff */
    uint64_t rng;
    bool freeing;

    struct event *deadline_timer; /* connect/handshake or sentinel query */
    struct event *retry_timer;
    struct event *sub_timer;
    struct event *stall_timer;

    TAILQ_HEAD(cmd_list, redis_cmd) cmds;
    struct redis_stats stats;
};

static void start_attempt(struct redis_client *c);
static void sentinel_next(struct redis_client *c);
static void subscribe_open(struct redis_client *c, size_t i);

void redis_options_from_config(const struct config *cfg, struct redis_options *o)
{
    memset(o, 0, sizeof(*o));
    o->host = cfg->redis_host;
    o->port = cfg->redis_port;
    o->db = cfg->redis_db;
    o->password = cfg->redis_password;
    o->sentinels = cfg->redis_sentinels;
    o->master_name = cfg->redis_master;
    o->command_timeout_ms = cfg->redis_timeout_ms;
}

const char *redis_status_str(enum redis_status status)
{
    switch (status) {
    case REDIS_STATUS_OK:
        return "ok";
    case REDIS_STATUS_ERROR_REPLY:
        return "error_reply";
    case REDIS_STATUS_TIMEOUT:
        return "timeout";
    case REDIS_STATUS_DISCONNECTED:
        return "disconnected";
    case REDIS_STATUS_CLOSED:
        return "closed";
    }
    return "unknown";
}

static void timer_set(struct event *ev, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* xorshift64*: jitter only needs to differ between clients, not to be unpredictable. */
static uint32_t rng_next(struct redis_client *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return (uint32_t)((c->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

/*
 * 50 ms doubling to 2 s, each delay drawn from its upper half so that many workers that lost
 * the same server do not come back in lockstep.
 */
static int backoff_next(struct redis_client *c)
{
    unsigned shift = c->attempt < 6 ? c->attempt : 6;
    int d = BACKOFF_MIN_MS << shift;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    c->attempt++;
    return d / 2 + (int)(rng_next(c) % (uint32_t)(d / 2 + 1));
}

/*
 * Accepts an IP literal (or "localhost") and a port. Names are refused because hiredis would
 * resolve them with a blocking getaddrinfo() on the event loop.
 */
static int addr_set(struct redis_addr *a, const char *host, size_t hostlen, long port)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (hostlen == 9 && strncasecmp(host, "localhost", 9) == 0) {
        host = "127.0.0.1";
        hostlen = 9;
    }
    if (hostlen == 0 || hostlen >= sizeof(a->host) || port < 1 || port > 65535)
        return -1;
    memcpy(a->host, host, hostlen);
    a->host[hostlen] = '\0';
    if (inet_pton(AF_INET, a->host, buf) != 1 && inet_pton(AF_INET6, a->host, buf) != 1)
        return -1;
    a->port = (int)port;
    return 0;
}

/* "ip:port" or "[ipv6]:port", exactly len bytes. */
static int addr_parse(struct redis_addr *a, const char *s, size_t len)
{
    const char *colon = NULL, *host = s;
    size_t hostlen, portlen;
    char portbuf[8], *end = NULL;

    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL)
        return -1;
    hostlen = (size_t)(colon - s);
    portlen = len - hostlen - 1;
    if (hostlen >= 2 && s[0] == '[' && s[hostlen - 1] == ']') {
        host = s + 1;
        hostlen -= 2;
    }
    if (portlen == 0 || portlen >= sizeof(portbuf))
        return -1;
    memcpy(portbuf, colon + 1, portlen);
    portbuf[portlen] = '\0';
    long port = strtol(portbuf, &end, 10);
    if (*end != '\0')
        return -1;
    return addr_set(a, host, hostlen, port);
}

static int sentinels_parse(const char *list, struct redis_addr **out, size_t *n)
{
    struct redis_addr *v = NULL;
    size_t count = 1, k = 0;
    const char *p = list;

    for (const char *q = list; *q != '\0'; q++)
        if (*q == ',')
            count++;
    v = calloc(count, sizeof(*v));
    if (v == NULL)
        goto fail;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (addr_parse(&v[k++], p, len) != 0)
            goto fail;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out = v;
    *n = k;
    return 0;
fail:
    free(v);
    return -1;
}

static bool addr_equal(const struct redis_addr *a, const struct redis_addr *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static bool reply_is_str(const redisReply *r, const char *s)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           r->len == strlen(s) && strcasecmp(r->str, s) == 0;
}

/* The connection to the target has ended, or is about to: schedule what comes next. */
static void client_schedule(struct redis_client *c, int delay_ms)
{
    c->state = STATE_WAITING;
    evtimer_del(c->deadline_timer);
    evtimer_del(c->stall_timer);
    timer_set(c->retry_timer, delay_ms);
}

static void attempt_failed(struct redis_client *c, const char *reason)
{
    int delay = backoff_next(c);
    c->stats.connect_failures++;
    /*
     * The first failure of a streak is news, and so is a streak that goes on (about once a
     * minute at the 2 s cap); every other failure would only fill the log.
     */
    if (c->attempt == 1 || c->attempt % 30 == 0) {
        if (c->nsentinels > 0)
            log_warn("redis: cannot reach master %s (attempt %u): %s; retrying with backoff",
                     c->master_name, c->attempt, reason);
        else
            log_warn("redis: cannot connect (attempt %u): %s; retrying with backoff", c->attempt,
                     reason);
    } else {
        log_debug("redis: attempt %u failed: %s; next in %d ms", c->attempt, reason, delay);
    }
    client_schedule(c, delay);
}

/* The connection in c->ac has ended (hiredis ended it, or we are about to). */
static void connection_ended(struct redis_client *c, const char *reason)
{
    if (c->state == STATE_READY) {
        c->stats.disconnects++;
        log_warn("redis: connection to %s:%d lost: %s; reconnecting", c->target.host,
                 c->target.port, reason);
        c->attempt = 0;
        client_schedule(c, backoff_next(c));
    } else {
        attempt_failed(c, reason);
    }
}

/*
 * Drops the connection on our initiative. The state is settled first because freeing the
 * context runs the callbacks of the commands still waiting on it (DISCONNECTED), and those may
 * issue commands or free the client: callers must not touch c after this.
 */
static void conn_close(struct redis_client *c, const char *reason)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    connection_ended(c, reason);
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac); /* deferred by hiredis when called from one of its callbacks */
    }
}

static void cmd_free(struct redis_cmd *cmd)
{
    if (cmd->timer != NULL)
        event_free(cmd->timer);
    free(cmd);
}

/* hiredis calls this exactly once per sent command: with its reply, or NULL when the
 * connection goes away (also when we free it). */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_cmd *cmd = privdata;
    struct redis_client *c = cmd->client;
    const redisReply *reply = r;
    enum redis_status st;

    if (c == NULL) { /* the client is gone and already answered this command with CLOSED */
        cmd_free(cmd);
        return;
    }
    TAILQ_REMOVE(&c->cmds, cmd, link);
    if (reply == NULL && c->ac == ac) {
        /*
         * The first sign of a connection hiredis is tearing down: forget it before any user
         * callback can try to use it. on_disconnect() will then find nothing to do.
         */
        c->ac = NULL;
        ac->data = NULL;
        connection_ended(c, ac->err != 0 ? ac->errstr : "connection closed");
    }
    if (reply != NULL && cmd->conn_gen == c->conn_gen)
        c->conn_replies++;
    if (cmd->done) { /* its deadline passed: the caller has moved on */
        if (reply != NULL)
            c->stats.late_replies++;
        cmd_free(cmd);
        return;
    }
    cmd->done = true;
    evtimer_del(cmd->timer);
    if (reply == NULL) {
        st = REDIS_STATUS_DISCONNECTED;
        c->stats.disconnected++;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st = REDIS_STATUS_ERROR_REPLY;
        c->stats.error_replies++;
        /*
         * A master that sentinels demoted keeps its clients' connections (unless a sentinel
         * kills them) and answers writes with READONLY: go and find the new master.
         */
        if (c->nsentinels > 0 && c->ac == ac && reply->len >= 8 &&
            strncmp(reply->str, "READONLY", 8) == 0) {
            log_warn("redis: %s:%d answered READONLY; looking for master %s again", c->target.host,
                     c->target.port, c->master_name);
            conn_close(c, "READONLY"); /* deferred: we are inside hiredis' callback */
        }
    } else {
        st = REDIS_STATUS_OK;
        c->stats.replies++;
    }
    cmd->fn(cmd->arg, st, reply);
    cmd_free(cmd); /* the user may have freed the client: touch only cmd */
}

/* The command's timer: its deadline, or the deferred failure of a command never sent. */
static void on_cmd_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_cmd *cmd = arg;
    struct redis_client *c = cmd->client;
    (void)fd;
    (void)what;

    assert(c != NULL && !cmd->done); /* freeing the client deletes the timers it orphans */
    if (!cmd->sent) {
        TAILQ_REMOVE(&c->cmds, cmd, link);
        c->stats.disconnected++;
        cmd->fn(cmd->arg, REDIS_STATUS_DISCONNECTED, NULL);
        cmd_free(cmd);
        return;
    }
    /*
     * Answer now, but leave the command where it is: hiredis still owes it a reply (or a NULL
     * when the connection goes), and on_reply() drops that when it comes.
     */
    cmd->done = true;
    c->stats.timeouts++;
    if (cmd->conn_gen == c->conn_gen && c->ac != NULL && !evtimer_pending(c->stall_timer, NULL)) {
        c->stall_mark = c->conn_replies;
        timer_set(c->stall_timer, c->stall_timeout_ms);
    }
    cmd->fn(cmd->arg, REDIS_STATUS_TIMEOUT, NULL);
}

/*
 * A deadline passed stall_timeout_ms ago and nothing at all has been read since: the server is
 * frozen or cut off while TCP still looks open, and would hold every later command hostage.
 */
static void on_stall_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    (void)fd;
    (void)what;
    if (c->ac == NULL || c->state != STATE_READY || c->conn_replies != c->stall_mark)
        return;
    log_warn("redis: %s:%d has answered nothing for %d ms", c->target.host, c->target.port,
             c->stall_timeout_ms);
    conn_close(c, "server stopped answering");
}

/* Commands that would change the reply order hiredis relies on. */
static bool command_refused(const char *name, size_t len, const char *arg1, size_t arg1len)
{
    static const char *const refused[] = {"subscribe",   "psubscribe",   "ssubscribe",
                                          "unsubscribe", "punsubscribe", "sunsubscribe",
                                          "monitor",     "hello",        "reset"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (len == strlen(refused[i]) && strncasecmp(name, refused[i], len) == 0)
            return true;
    return len == 6 && strncasecmp(name, "client", 6) == 0 && arg1 != NULL && arg1len == 5 &&
           strncasecmp(arg1, "reply", 5) == 0;
}

/* The next "$len\r\nbytes\r\n" argument of a formatted command, advancing *p past it. */
static bool formatted_next(const char **p, const char *end, const char **arg, size_t *len)
{
    char *digits_end = NULL;
    if (end - *p < 6 || **p != '$')
        return false;
    unsigned long n = strtoul(*p + 1, &digits_end, 10);
    if (end - digits_end < 2 || digits_end[0] != '\r' ||
        (size_t)(end - (digits_end + 2)) < (size_t)n + 2)
        return false;
    *arg = digits_end + 2;
    *len = n;
    *p = *arg + n + 2;
    return true;
}

/* command_refused() on a command in wire format: "*N\r\n$len\r\nname\r\n...". */
static bool formatted_allowed(const char *buf, size_t len)
{
    const char *end = buf + len, *p = NULL, *name = NULL, *arg1 = NULL;
    size_t namelen = 0, arg1len = 0;

    if (len < 4 || buf[0] != '*' || (p = memchr(buf, '\n', len)) == NULL)
        return false;
    p++;
    if (!formatted_next(&p, end, &name, &namelen))
        return false;
    if (!formatted_next(&p, end, &arg1, &arg1len))
        arg1 = NULL;
    return !command_refused(name, namelen, arg1, arg1len);
}

static int command_submit(struct redis_client *c, int timeout_ms, redis_reply_fn fn, void *arg,
                          const char *buf, size_t len)
{
    static const struct timeval next_iteration = {0, 0};
    struct redis_cmd *cmd = NULL;

    if (c == NULL || fn == NULL || c->freeing)
        return -1;
    if (!formatted_allowed(buf, len)) {
        log_error("redis: refused a command that would break one reply per command");
        return -1;
    }
    cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        goto fail;
    cmd->timer = evtimer_new(c->base, on_cmd_timer, cmd);
    if (cmd->timer == NULL)
        goto fail;
    cmd->client = c;
    cmd->fn = fn;
    cmd->arg = arg;
    /* hiredis only appends to its output buffer; the loop writes it, so back-to-back
     * commands leave together. */
    if (c->state == STATE_READY &&
        redisAsyncFormattedCommand(c->ac, on_reply, cmd, buf, len) == REDIS_OK) {
        cmd->sent = true;
        cmd->conn_gen = c->conn_gen;
        if (timeout_ms > 0)
            timer_set(cmd->timer, timeout_ms);
        else
            evtimer_add(cmd->timer, c->command_tv);
    } else {
        /* Fail fast, but from the loop, so that no caller ever sees its callback re-entered. */
        evtimer_add(cmd->timer, &next_iteration);
    }
    TAILQ_INSERT_TAIL(&c->cmds, cmd, link);
    c->stats.commands++;
    return 0;
fail:
    if (cmd != NULL)
        cmd_free(cmd);
    return -1;
}

int redis_command(struct redis_client *c, int timeout_ms, redis_reply_fn fn, void *arg, int argc,
                  const char **argv, const size_t *argvlen)
{
    char *buf = NULL;
    int len, rc;

    if (c == NULL || fn == NULL || argc <= 0 || argv == NULL)
        return -1;
    for (int i = 0; i < argc; i++)
        if (argv[i] == NULL)
            return -1;
    len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0)
        return -1;
    rc = command_submit(c, timeout_ms, fn, arg, buf, (size_t)len);
    redisFreeCommand(buf); /* hiredis copied it into its output buffer */
    return rc;
}

int redis_commandf(struct redis_client *c, int timeout_ms, redis_reply_fn fn, void *arg,
                   const char *fmt, ...)
{
    char *buf = NULL;
    va_list ap;
    int len, rc;

    if (c == NULL || fn == NULL || fmt == NULL)
        return -1;
    va_start(ap, fmt);
    len = redisvFormatCommand(&buf, fmt, ap);
    va_end(ap);
    if (len < 0)
        return -1;
    rc = command_submit(c, timeout_ms, fn, arg, buf, (size_t)len);
    redisFreeCommand(buf);
    return rc;
}

static void subscribe_ensure(struct redis_client *c)
{
    if (c->nsentinels > 0 && c->sub == NULL && !evtimer_pending(c->sub_timer, NULL))
        subscribe_open(c, c->sentinel_first);
}

static void client_ready(struct redis_client *c)
{
    assert(c->ac != NULL && c->handshake_left == 0);
    c->state = STATE_READY;
    evtimer_del(c->deadline_timer);
    c->stats.connects++;
    if (c->nsentinels > 0)
        log_info("redis: connected to master %s at %s:%d", c->master_name, c->target.host,
                 c->target.port);
    else
        log_info("redis: connected to %s:%d", c->target.host, c->target.port);
    c->attempt = 0;
    subscribe_ensure(c);
}

static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_client *c = ac->data;
    const redisReply *reply = r;
    enum handshake_step step = (enum handshake_step)(intptr_t)privdata;
    char reason[256];

    /* NULL: the connection is going away, and on_disconnect() or the closer deals with it. */
    if (c == NULL || c->ac != ac || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Error texts never echo the password: "WRONGPASS invalid username-password pair". */
        snprintf(reason, sizeof(reason), "%s:%d: %s failed: %s", c->target.host, c->target.port,
                 step == STEP_AUTH     ? "AUTH"
                 : step == STEP_SELECT ? "SELECT"
                                       : "ROLE",
                 reply->str);
        conn_close(c, reason);
        return;
    }
    if (step == STEP_ROLE) {
        const redisReply *role =
            reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 ? reply->element[0] : NULL;
        if (!reply_is_str(role, "master") && c->nsentinels > 0) {
            /* A sentinel's answer can be stale around a failover: ask again after a pause. */
            c->stats.role_mismatches++;
            snprintf(reason, sizeof(reason), "%s:%d is not a master (ROLE: %s)", c->target.host,
                     c->target.port,
                     role != NULL && role->type == REDIS_REPLY_STRING ? role->str : "?");
            conn_close(c, reason);
            return;
        }
        if (!reply_is_str(role, "master"))
            log_warn("redis: %s:%d is not a master: writes will fail", c->target.host,
                     c->target.port);
    }
    if (--c->handshake_left == 0)
        client_ready(c);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    struct redis_client *c = ac->data;
    char db[16];

    if (c == NULL || c->ac != ac)
        return;
    if (status != REDIS_OK) {
        char reason[256];
        snprintf(reason, sizeof(reason), "%s:%d: %s", c->target.host, c->target.port, ac->errstr);
        c->ac = NULL; /* hiredis frees it when we return */
        connection_ended(c, reason);
        return;
    }
    /* Keepalive lets the kernel notice a peer that vanished while we sent nothing. */
    redisEnableKeepAlive(&ac->c);
    c->handshake_left = 0;
    if (c->password != NULL) {
        const char *argv[] = {"AUTH", c->password};
        if (redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)STEP_AUTH, 2, argv, NULL) ==
            REDIS_OK)
            c->handshake_left++;
    }
    if (c->db > 0) {
        snprintf(db, sizeof(db), "%d", c->db);
        const char *argv[] = {"SELECT", db};
        if (redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)STEP_SELECT, 2, argv, NULL) ==
            REDIS_OK)
            c->handshake_left++;
    }
    /* ROLE always goes last: its answer means the whole handshake went through. */
    const char *argv[] = {"ROLE"};
    if (redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)STEP_ROLE, 1, argv, NULL) ==
        REDIS_OK)
        c->handshake_left++;
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    struct redis_client *c = ac->data;
    (void)status;
    if (c == NULL || c->ac != ac)
        return;
    c->ac = NULL; /* hiredis is freeing it */
    connection_ended(c, ac->err != 0 ? ac->errstr : "connection closed");
}

/* A non-blocking connect to c->target; the handshake follows in on_connect(). */
static void connect_target(struct redis_client *c)
{
    redisAsyncContext *ac = NULL;
    char reason[256];

    c->conn_gen++;
    c->conn_replies = 0;
    c->state = STATE_CONNECTING;
    ac = redisAsyncConnect(c->target.host, c->target.port);
    if (ac == NULL || ac->err != 0) {
        snprintf(reason, sizeof(reason), "%s:%d: %s", c->target.host, c->target.port,
                 ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        attempt_failed(c, reason);
        return;
    }
    ac->data = c;
    redisLibeventAttach(ac, c->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    timer_set(c->deadline_timer, c->connect_timeout_ms);
}

/* Reads a reply of SENTINEL get-master-addr-by-name: ["ip", "port"], or nil if unknown. */
static int master_reply_parse(const redisReply *reply, struct redis_addr *out, char *why,
                              size_t whylen)
{
    char *end = NULL;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "%s", reply->str);
        return -1;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, whylen, "does not know it");
        return -1;
    }
    long port = strtol(reply->element[1]->str, &end, 10);
    if (*end != '\0' || addr_set(out, reply->element[0]->str, reply->element[0]->len, port) != 0) {
        snprintf(why, whylen, "gave an address that is not an IP literal");
        return -1;
    }
    return 0;
}

static void on_sentinel_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_client *c = ac->data;
    const redisReply *reply = r;
    size_t i = (size_t)(uintptr_t)privdata;
    struct redis_addr found;
    char why[128];

    if (c == NULL || c->query != ac)
        return;
    c->query = NULL;
    ac->data = NULL;
    evtimer_del(c->deadline_timer);
    if (reply == NULL) { /* connect failed or the sentinel hung up; hiredis frees ac */
        snprintf(c->round_error, sizeof(c->round_error), "sentinel %s:%d: %s", c->sentinels[i].host,
                 c->sentinels[i].port, ac->err != 0 ? ac->errstr : "closed");
        sentinel_next(c);
        return;
    }
    redisAsyncFree(ac); /* deferred until we return */
    if (master_reply_parse(reply, &found, why, sizeof(why)) != 0) {
        snprintf(c->round_error, sizeof(c->round_error), "sentinel %s:%d: %s", c->sentinels[i].host,
                 c->sentinels[i].port, why);
        sentinel_next(c);
        return;
    }
    c->sentinel_first = i;
    c->stats.discoveries++;
    if (!c->target_known || !addr_equal(&c->target, &found))
        log_info("redis: sentinel %s:%d reports master %s at %s:%d", c->sentinels[i].host,
                 c->sentinels[i].port, c->master_name, found.host, found.port);
    c->target = found;
    c->target_known = true;
    connect_target(c);
}

/* Asks the next sentinel of this round, or gives the round up. */
static void sentinel_next(struct redis_client *c)
{
    while (c->sentinel_tried < c->nsentinels) {
        size_t i = (c->sentinel_first + c->sentinel_tried++) % c->nsentinels;
        const struct redis_addr *s = &c->sentinels[i];
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
        redisAsyncContext *q = redisAsyncConnect(s->host, s->port);
        if (q == NULL || q->err != 0) {
            snprintf(c->round_error, sizeof(c->round_error), "sentinel %s:%d: %s", s->host, s->port,
                     q != NULL ? q->errstr : "out of memory");
            if (q != NULL)
                redisAsyncFree(q);
            continue;
        }
        q->data = c;
        redisLibeventAttach(q, c->base);
        /* Queued before the connect completes; a failed connect answers it with NULL. */
        redisAsyncCommandArgv(q, on_sentinel_reply, (void *)(uintptr_t)i, 3, argv, NULL);
        c->query = q;
        timer_set(c->deadline_timer, c->connect_timeout_ms);
        return;
    }
    attempt_failed(c, c->round_error);
}

static void query_cancel(struct redis_client *c)
{
    redisAsyncContext *q = c->query;
    c->query = NULL;
    if (q != NULL) {
        q->data = NULL;
        redisAsyncFree(q);
    }
}

static void on_deadline_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    char reason[256];
    (void)fd;
    (void)what;

    if (c->state == STATE_DISCOVERING && c->query != NULL) {
        size_t i = (c->sentinel_first + c->sentinel_tried - 1) % c->nsentinels;
        snprintf(c->round_error, sizeof(c->round_error), "sentinel %s:%d: no answer in %d ms",
                 c->sentinels[i].host, c->sentinels[i].port, c->connect_timeout_ms);
        query_cancel(c);
        sentinel_next(c);
    } else if (c->state == STATE_CONNECTING) {
        snprintf(reason, sizeof(reason), "%s:%d: not ready within %d ms", c->target.host,
                 c->target.port, c->connect_timeout_ms);
        conn_close(c, reason);
    }
}

static void start_attempt(struct redis_client *c)
{
    if (c->nsentinels == 0) {
        connect_target(c);
        return;
    }
    c->state = STATE_DISCOVERING;
    c->sentinel_tried = 0;
    snprintf(c->round_error, sizeof(c->round_error), "no sentinel answered");
    sentinel_next(c);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_attempt(arg);
}

/* A sentinel announced "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>". */
static void master_switched(struct redis_client *c, const char *msg, size_t len)
{
    char buf[256], *save = NULL, *tok[5];
    struct redis_addr to;
    int n = 0;

    if (len >= sizeof(buf))
        return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    for (char *t = strtok_r(buf, " ", &save); t != NULL && n < 5; t = strtok_r(NULL, " ", &save))
        tok[n++] = t;
    if (n != 5 || strcmp(tok[0], c->master_name) != 0 ||
        addr_set(&to, tok[3], strlen(tok[3]), strtol(tok[4], NULL, 10)) != 0)
        return;
    log_info("redis: sentinels moved master %s to %s:%d", c->master_name, to.host, to.port);
    /*
     * The old master may still be up and accepting writes until sentinels demote it, which
     * can take many seconds: leave it now rather than wait for READONLY.
     */
    c->attempt = 0;
    switch (c->state) {
    case STATE_READY:
    case STATE_CONNECTING:
        if (!addr_equal(&c->target, &to))
            conn_close(c, "sentinels moved the master"); /* last: may run user callbacks */
        break;
    case STATE_DISCOVERING:
        /*
         * A query sent before the switch may still name the old master, which ROLE would
         * accept until sentinels demote it: ask again.
         */
        query_cancel(c);
        client_schedule(c, 0);
        break;
    case STATE_WAITING:
        client_schedule(c, 0);
        break;
    }
}

static void on_subscription(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_client *c = ac->data;
    const redisReply *reply = r;
    size_t i = (size_t)(uintptr_t)privdata;

    if (c == NULL || c->sub != ac)
        return;
    if (reply == NULL) {
        log_debug("redis: lost +switch-master subscription to sentinel %s:%d: %s",
                  c->sentinels[i].host, c->sentinels[i].port, ac->err != 0 ? ac->errstr : "closed");
        c->sub = NULL;
        ac->data = NULL;
        c->sub_next = (i + 1) % c->nsentinels;
        timer_set(c->sub_timer, SUBSCRIBE_RETRY_MS);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply_is_str(reply->element[0], "subscribe"))
        log_debug("redis: listening for +switch-master on sentinel %s:%d", c->sentinels[i].host,
                  c->sentinels[i].port);
    else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
             reply_is_str(reply->element[0], "message") &&
             reply->element[2]->type == REDIS_REPLY_STRING)
        master_switched(c, reply->element[2]->str, reply->element[2]->len);
}

/*
 * Sentinels publish +switch-master when a failover ends. Listening to one of them is how a
 * client learns of a failover whose old master is still alive (SENTINEL FAILOVER, or a
 * partition), which neither a disconnect nor a READONLY would reveal promptly.
 */
static void subscribe_open(struct redis_client *c, size_t i)
{
    const struct redis_addr *s = &c->sentinels[i];
    const char *argv[] = {"SUBSCRIBE", "+switch-master"};
    redisAsyncContext *sub = redisAsyncConnect(s->host, s->port);

    if (sub == NULL || sub->err != 0) {
        if (sub != NULL)
            redisAsyncFree(sub);
        c->sub_next = (i + 1) % c->nsentinels;
        timer_set(c->sub_timer, SUBSCRIBE_RETRY_MS);
        return;
    }
    sub->data = c;
    redisLibeventAttach(sub, c->base);
    redisAsyncCommandArgv(sub, on_subscription, (void *)(uintptr_t)i, 2, argv, NULL);
    c->sub = sub;
}

static void on_sub_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    (void)fd;
    (void)what;
    if (c->sub == NULL)
        subscribe_open(c, c->sub_next);
}

struct redis_client *redis_client_new(struct event_base *base, const struct redis_options *opt,
                                      const char **why)
{
    struct redis_client *c = NULL;
    const char *err = "out of memory";
    struct timespec ts;
    int command_ms;

    if (base == NULL || opt == NULL) {
        err = "no event base or options";
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    TAILQ_INIT(&c->cmds);
    c->base = base;
    c->state = STATE_WAITING;
    c->db = opt->db;
    if (c->db < 0) {
        err = "db must not be negative";
        goto fail;
    }
    c->connect_timeout_ms =
        opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    c->stall_timeout_ms =
        opt->stall_timeout_ms > 0 ? opt->stall_timeout_ms : DEFAULT_STALL_TIMEOUT_MS;
    command_ms = opt->command_timeout_ms > 0 ? opt->command_timeout_ms : DEFAULT_COMMAND_TIMEOUT_MS;
    if (opt->password != NULL && (c->password = strdup(opt->password)) == NULL)
        goto fail;
    if (opt->sentinels != NULL && opt->sentinels[0] != '\0') {
        if (opt->master_name == NULL || opt->master_name[0] == '\0') {
            err = "sentinels are set but the master name is not";
            goto fail;
        }
        if ((c->master_name = strdup(opt->master_name)) == NULL)
            goto fail;
        if (sentinels_parse(opt->sentinels, &c->sentinels, &c->nsentinels) != 0) {
            err = "sentinels must be a comma-separated list of ip:port (IP literals)";
            goto fail;
        }
    } else {
        if (opt->host == NULL ||
            addr_set(&c->direct, opt->host, strlen(opt->host), opt->port) != 0) {
            err = "host must be an IP literal or localhost, and port within 1..65535";
            goto fail;
        }
        c->target = c->direct;
        c->target_known = true;
    }
    c->deadline_timer = evtimer_new(base, on_deadline_timer, c);
    c->retry_timer = evtimer_new(base, on_retry_timer, c);
    c->sub_timer = evtimer_new(base, on_sub_timer, c);
    c->stall_timer = evtimer_new(base, on_stall_timer, c);
    if (c->deadline_timer == NULL || c->retry_timer == NULL || c->sub_timer == NULL ||
        c->stall_timer == NULL)
        goto fail;
    /*
     * Most commands share the default deadline; a libevent "common timeout" keeps those timers
     * in a plain queue instead of the heap, so arming one costs O(1).
     */
    c->command_tv_plain.tv_sec = command_ms / 1000;
    c->command_tv_plain.tv_usec = (command_ms % 1000) * 1000;
    c->command_tv = event_base_init_common_timeout(base, &c->command_tv_plain);
    if (c->command_tv == NULL)
        c->command_tv = &c->command_tv_plain;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)c ^ (uint64_t)ts.tv_sec;
    if (c->rng == 0)
        c->rng = 1;
    /* Connect from the loop: creating a client (say, to check options at start) does no I/O. */
    client_schedule(c, 0);
    return c;
fail:
    if (why != NULL)
        *why = err;
    redis_client_free(c);
    return NULL;
}

void redis_client_free(struct redis_client *c)
{
    struct redis_cmd *cmd;
    redisAsyncContext *ac[3];

    if (c == NULL || c->freeing)
        return;
    c->freeing = true;
    /*
     * Answer every command still owed a callback. Commands hiredis holds stay allocated until
     * hiredis lets go of them (below, or after its current callback returns), with no way back
     * to the client.
     */
    while ((cmd = TAILQ_FIRST(&c->cmds)) != NULL) {
        bool owed = !cmd->done, sent = cmd->sent;
        TAILQ_REMOVE(&c->cmds, cmd, link);
        cmd->client = NULL;
        cmd->done = true;
        evtimer_del(cmd->timer);
        if (owed)
            cmd->fn(cmd->arg, REDIS_STATUS_CLOSED, NULL);
        if (!sent)
            cmd_free(cmd);
    }
    ac[0] = c->ac;
    ac[1] = c->query;
    ac[2] = c->sub;
    c->ac = c->query = c->sub = NULL;
    for (int i = 0; i < 3; i++) {
        if (ac[i] != NULL) {
            ac[i]->data = NULL;
            redisAsyncFree(ac[i]);
        }
    }
    if (c->deadline_timer != NULL)
        event_free(c->deadline_timer);
    if (c->retry_timer != NULL)
        event_free(c->retry_timer);
    if (c->sub_timer != NULL)
        event_free(c->sub_timer);
    if (c->stall_timer != NULL)
        event_free(c->stall_timer);
    free(c->password);
    free(c->master_name);
    free(c->sentinels);
    free(c);
}

bool redis_connected(const struct redis_client *c)
{
    return c != NULL && c->state == STATE_READY;
}

void redis_client_stats(const struct redis_client *c, struct redis_stats *out)
{
    *out = c->stats;
    out->connected = c->state == STATE_READY;
    out->state = state_names[c->state];
    out->master_host[0] = '\0';
    out->master_port = 0;
    if (c->target_known) {
        snprintf(out->master_host, sizeof(out->master_host), "%s", c->target.host);
        out->master_port = c->target.port;
    }
}
