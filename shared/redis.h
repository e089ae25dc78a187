/*
 * redis: an asynchronous Redis client for one libevent event_base, on hiredis 0.14's async API.
 * Every command has its own deadline and its callback runs exactly once; the client reconnects
 * by itself and can find the master through Redis Sentinel.
 *
 * A client belongs to the thread that runs its event_base and is not thread-safe: give each
 * worker thread its own client. Nothing here ever blocks the event loop. hiredis writes with
 * write(2), so the program must ignore SIGPIPE.
 */
#ifndef TAGPROOF_REDIS_H
#define TAGPROOF_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

struct redis_client;

/*
 * What redis_client_new() needs; it copies every string, so the caller may free them after the
 * call. hiredis resolves host names with a blocking getaddrinfo(), so hosts (and the addresses
 * sentinels report) must be IPv4 or IPv6 literals; "localhost" is taken as 127.0.0.1.
 */
struct redis_options {
    const char *host; /* the server when no sentinels are given */
    int port;
    int db;               /* SELECTed on every new connection when > 0 */
    const char *password; /* AUTH on every new connection when not NULL; never logged */
    /*
     * "ip:port,ip:port" ("[ipv6]:port" for IPv6) or NULL. With sentinels, master_name is looked
     * up through them in turn and host/port are ignored. Sentinels are asked without AUTH.
     */
    const char *sentinels;
    const char *master_name;
    int connect_timeout_ms; /* TCP connect plus AUTH/SELECT/ROLE, or one sentinel query;
                               <= 0: 1000 */
    int command_timeout_ms; /* a command's deadline when the caller passes <= 0; <= 0: 100 */
    /*
     * A connection that has let a command's deadline pass and then answers nothing at all for
     * this long is taken for dead (a frozen or partitioned server keeps TCP open) and replaced;
     * <= 0: 2000. Blocking commands (BLPOP, XREAD BLOCK, WAIT) hold the connection's later
     * replies back, so give them a deadline longer than their blocking time.
     */
    int stall_timeout_ms;
};

struct config;

/*
 * The options of TAGPROOF_REDIS_URL, TAGPROOF_REDIS_SENTINELS/MASTER and
 * TAGPROOF_REDIS_TIMEOUT_MS; the strings are borrowed from cfg. Timeouts not named there are
 * left at their defaults.
 */
void redis_options_from_config(const struct config *cfg, struct redis_options *o);

enum redis_status {
    REDIS_STATUS_OK,           /* a reply that is not an error reply */
    REDIS_STATUS_ERROR_REPLY,  /* the server answered with an error reply ("-ERR ...") */
    REDIS_STATUS_TIMEOUT,      /* the deadline passed; a reply arriving later is dropped */
    REDIS_STATUS_DISCONNECTED, /* no usable connection, or it was lost before the reply */
    REDIS_STATUS_CLOSED,       /* redis_client_free() ran before the reply */
};

/* A static name for logs and metrics labels: "ok", "error_reply", "timeout", ... */
const char *redis_status_str(enum redis_status status);

/*
 * Called exactly once per accepted command. reply is non-NULL only for REDIS_STATUS_OK and
 * REDIS_STATUS_ERROR_REPLY, and is borrowed until the callback returns (copy what you keep).
 * The callback may issue new commands and may free the client. Replies come in the order the
 * commands were issued; other outcomes (timeouts, failures) in no promised order.
 */
typedef void (*redis_reply_fn)(void *arg, enum redis_status status, const redisReply *reply);

/* Counters since the client was created, for metrics and readiness checks. */
struct redis_stats {
    bool connected;            /* a connection is up and ready for commands */
    const char *state;         /* static: "waiting", "discovering", "connecting" or "ready" */
    char master_host[64];      /* the server in use or being connected to; "" when unknown */
    int master_port;           /* 0 when unknown */
    uint64_t commands;         /* accepted by redis_command()/redis_commandf() */
    uint64_t replies;          /* delivered with REDIS_STATUS_OK */
    uint64_t error_replies;    /* delivered with REDIS_STATUS_ERROR_REPLY */
    uint64_t timeouts;         /* delivered with REDIS_STATUS_TIMEOUT */
    uint64_t disconnected;     /* delivered with REDIS_STATUS_DISCONNECTED */
    uint64_t late_replies;     /* replies that came after their deadline, dropped */
    uint64_t connects;         /* connections that became ready */
    uint64_t disconnects;      /* ready connections that were lost or dropped */
    uint64_t connect_failures; /* failed attempts: refused, deadline, AUTH, not a master, ... */
    uint64_t role_mismatches;  /* servers that sentinels named but that were not masters */
    uint64_t discoveries;      /* master addresses learned from sentinels */
};

/*
 * Creates a client on base; it starts connecting once the loop runs (this call does no I/O, so
 * it also serves to check options). Commands issued before the connection is ready fail fast
 * with REDIS_STATUS_DISCONNECTED. Returns NULL when the options are unusable, with a static
 * reason in *why (why may be NULL). Caller frees with redis_client_free(), before freeing base.
 */
struct redis_client *redis_client_new(struct event_base *base, const struct redis_options *opt,
                                      const char **why);

/*
 * Closes the connections and frees the client. Every command still owed a callback gets it
 * now, inside this call, with REDIS_STATUS_CLOSED; redis_command() called from those callbacks
 * returns -1. Safe to call from any callback of this client. NULL is ignored.
 */
void redis_client_free(struct redis_client *c);

/*
 * Sends one command; argv[i] is argvlen[i] bytes (binary-safe), or NUL-terminated when argvlen
 * is NULL; both are copied before this returns. timeout_ms <= 0 means the default deadline.
 * Commands issued back to back in one loop iteration leave in one write (pipelining).
 *
 * Returns 0 when accepted: fn(arg, ...) will run exactly once, always later from the event
 * loop and never inside this call, also when not connected (REDIS_STATUS_DISCONNECTED on the
 * next loop iteration). Returns -1 when refused, and then fn never runs: bad arguments, out of
 * memory, the client is being freed, or a command that would break one-reply-per-command
 * (SUBSCRIBE and its kin, MONITOR, HELLO, RESET, CLIENT REPLY).
 */
int redis_command(struct redis_client *c, int timeout_ms, redis_reply_fn fn, void *arg, int argc,
                  const char **argv, const size_t *argvlen);

/*
 * Like redis_command() with hiredis formatting: "SET %s %b", key, value, value_len. Each %s or
 * %b is one argument whatever it contains; never put untrusted input into fmt itself.
 */
int redis_commandf(struct redis_client *c, int timeout_ms, redis_reply_fn fn, void *arg,
                   const char *fmt, ...);

/* True when a connection is ready and a command issued now would be sent. */
bool redis_connected(const struct redis_client *c);

/* Copies the state and counters into *out. */
void redis_client_stats(const struct redis_client *c, struct redis_stats *out);

#endif
