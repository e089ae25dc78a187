/*
 * config: a table maps each TAGPROOF_* variable to a parser and a field of struct config.
 * Defaults go through the same parsers as the environment, so a default can't be malformed
 * without a test noticing.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum config_type { CT_STRING, CT_INT, CT_LISTEN, CT_REDIS_URL, CT_CHOICE, CT_URL, CT_HOSTPORTS };

struct config_entry {
    const char *name;
    enum config_type type;
    size_t offset;
    const char *def;     /* NULL: unset unless given */
    long min, max;       /* CT_INT */
    const char *choices; /* CT_CHOICE: "a|b|c" */
    const char *help;
};

#define F(field) offsetof(struct config, field)

static const struct config_entry entries[] = {
    {"TAGPROOF_PG_URL", CT_STRING, F(pg_url), "postgresql://tagproof_svc@127.0.0.1:5432/tagproof",
     0, 0, NULL,
     "libpq connection string or URI of the services' (non-owner) role; several hosts with "
     "target_session_attrs=read-write fail over"},
    {"TAGPROOF_PG_MIGRATE_URL", CT_STRING, F(pg_migrate_url), NULL, 0, 0, NULL,
     "connection of the role that owns the schema, used by `tagproof migrate` (default: "
     "TAGPROOF_PG_URL)"},
    {"TAGPROOF_PG_TIMEOUT_MS", CT_INT, F(pg_timeout_ms), "1000", 1, 600000, NULL,
     "deadline of one PostgreSQL call on the scan path, in milliseconds"},
    {"TAGPROOF_PG_POOL_SIZE", CT_INT, F(pg_pool_size), "4", 1, 256, NULL,
     "PostgreSQL connections per worker thread"},
    {"TAGPROOF_REDIS_URL", CT_REDIS_URL, F(redis_url), "redis://127.0.0.1:6379/0", 0, 0, NULL,
     "redis://[:password@]host:port/db"},
    {"TAGPROOF_REDIS_SENTINELS", CT_HOSTPORTS, F(redis_sentinels), NULL, 0, 0, NULL,
     "optional: comma-separated host:port of Redis Sentinels; the master is found through them"},
    {"TAGPROOF_REDIS_MASTER", CT_STRING, F(redis_master), "tagproof", 0, 0, NULL,
     "the master name the Sentinels know"},
    {"TAGPROOF_REDIS_TIMEOUT_MS", CT_INT, F(redis_timeout_ms), "100", 1, 600000, NULL,
     "deadline of one Redis call on the scan path, in milliseconds"},
    {"TAGPROOF_SCAN_LISTEN", CT_LISTEN, F(scan_listen), "127.0.0.1:8080", 0, 0, NULL,
     "host:port of the public scan API"},
    {"TAGPROOF_FACTORY_LISTEN", CT_LISTEN, F(factory_listen), "127.0.0.1:8081", 0, 0, NULL,
     "host:port of the factory API"},
    {"TAGPROOF_ANCHOR_LISTEN", CT_LISTEN, F(anchor_listen), "127.0.0.1:8082", 0, 0, NULL,
     "host:port of the anchor service's status and metrics"},
    {"TAGPROOF_DEVLEDGER_LISTEN", CT_LISTEN, F(devledger_listen), "127.0.0.1:8090", 0, 0, NULL,
     "host:port of the development ledger"},
    {"TAGPROOF_HTTP_THREADS", CT_INT, F(http_threads), "0", 0, 256, NULL,
     "HTTP worker threads per service (0: one per CPU core)"},
    {"TAGPROOF_JWKS_FILE", CT_STRING, F(jwks_file), NULL, 0, 0, NULL,
     "JWKS file of trusted token issuers"},
    {"TAGPROOF_JWKS_URL", CT_URL, F(jwks_url), NULL, 0, 0, NULL,
     "JWKS URL of trusted token issuers (https, or http on loopback)"},
    {"TAGPROOF_JWT_ISSUER", CT_STRING, F(jwt_issuer), "tagproof", 0, 0, NULL,
     "required `iss` of tokens"},
    {"TAGPROOF_JWT_AUDIENCE", CT_STRING, F(jwt_audience), "tagproof-factory-api", 0, 0, NULL,
     "required `aud` of tokens"},
    {"TAGPROOF_JWT_KEY_FILE", CT_STRING, F(jwt_key_file), NULL, 0, 0, NULL,
     "PEM private key the factory API signs its tokens with (default: generated once into "
     "TAGPROOF_DATA_DIR/jwt-signing.pem)"},
    {"TAGPROOF_UPLOAD_MAX_MB", CT_INT, F(upload_max_mb), "256", 1, 65536, NULL,
     "largest CSV upload body, in MiB (larger ones get 413 before they are read)"},
    {"TAGPROOF_RATE_LIMIT_PER_MIN", CT_INT, F(rate_limit_per_min), "60", 1, 1000000, NULL,
     "factory API requests a minute per API key or token subject ..."},
    {"TAGPROOF_RATE_LIMIT_BURST", CT_INT, F(rate_limit_burst), "20", 1, 1000000, NULL,
     "... of which this many may come at once"},
    {"TAGPROOF_AUTH_FAIL_PER_MIN", CT_INT, F(auth_fail_per_min), "10", 1, 1000000, NULL,
     "failed authentications a minute per client IP before it gets 429"},
    {"TAGPROOF_LEDGER", CT_CHOICE, F(ledger), "http", 0, 0, "http|ethereum",
     "where checkpoints are anchored: http or ethereum"},
    {"TAGPROOF_LEDGER_URL", CT_URL, F(ledger_url), "http://127.0.0.1:8090", 0, 0, NULL,
     "base URL of the ledger (HTTP ledger, or Ethereum JSON-RPC endpoint)"},
    {"TAGPROOF_ETH_FROM", CT_STRING, F(eth_from), NULL, 0, 0, NULL,
     "Ethereum account that sends anchor transactions (0x + 40 hex)"},
    {"TAGPROOF_ETH_CONFIRMATIONS", CT_INT, F(eth_confirmations), "1", 1, 1000, NULL,
     "confirmations before an Ethereum anchor counts as confirmed"},
    {"TAGPROOF_ANCHOR_INTERVAL_S", CT_INT, F(anchor_interval_s), "60", 1, 86400, NULL,
     "seconds between anchoring cycles"},
    {"TAGPROOF_LOG_ORIGIN", CT_STRING, F(log_origin), "tagproof.local/log", 0, 0, NULL,
     "origin line of the log's checkpoints"},
    {"TAGPROOF_LOG_KEY_FILE", CT_STRING, F(log_key_file), NULL, 0, 0, NULL,
     "PEM Ed25519 private key the anchor service signs the log's checkpoints with (default: "
     "generated once into TAGPROOF_DATA_DIR/log-signing.pem)"},
    {"TAGPROOF_SINK", CT_CHOICE, F(sink), "on", 0, 0, "on|off",
     "on: tagproof-scan runs the scan-event sink (stream to PostgreSQL) on a thread of its own"},
    {"TAGPROOF_TRUSTED_PROXIES", CT_STRING, F(trusted_proxies), NULL, 0, 0, NULL,
     "comma-separated IP addresses of reverse proxies whose X-Forwarded-For is honoured"},
    {"TAGPROOF_IP_HASH_SALT", CT_STRING, F(ip_hash_salt), NULL, 0, 0, NULL,
     "secret salt for hashing client IPs in scan events (default: generated once into "
     "TAGPROOF_DATA_DIR/ip-hash-salt)"},
    {"TAGPROOF_CACHE_TTL_S", CT_INT, F(cache_ttl_s), "604800", 60, 31536000, NULL,
     "seconds a tag stays in the Redis cache after it was filled from PostgreSQL"},
    {"TAGPROOF_RULE_VELOCITY_MAX", CT_INT, F(rule_velocity_max), "10", 1, 1000000, NULL,
     "velocity: more than this many scans of one tag within 60 s"},
    {"TAGPROOF_RULE_TRAVEL_KMH", CT_INT, F(rule_travel_kmh), "1000", 1, 100000, NULL,
     "impossible_travel: speed (km/h) between located scans above which travel is impossible"},
    {"TAGPROOF_RULE_TRAVEL_MIN_KM", CT_INT, F(rule_travel_min_km), "500", 1, 40000, NULL,
     "impossible_travel: least distance (km) between the two scans"},
    {"TAGPROOF_RULE_CLONE_MAX", CT_INT, F(rule_clone_max), "20", 1, 1000000, NULL,
     "clone_spread: more than this many distinct clients of one tag within 24 h"},
    {"TAGPROOF_RULE_ENUM_MAX", CT_INT, F(rule_enum_max), "30", 1, 1000000, NULL,
     "enumeration: more than this many unknown tags asked by one client within 60 s"},
    {"TAGPROOF_RULE_DEDUP_S", CT_INT, F(rule_dedup_s), "30", 1, 60, NULL,
     "repeat scans of one tag by one device within this many seconds count once"},
    {"TAGPROOF_BREAKER_FAILURE_PCT", CT_INT, F(breaker_failure_pct), "50", 1, 100, NULL,
     "circuit breakers open at this failure rate (percent) ..."},
    {"TAGPROOF_BREAKER_MIN_CALLS", CT_INT, F(breaker_min_calls), "10", 1, 100000, NULL,
     "... over at least this many calls ..."},
    {"TAGPROOF_BREAKER_WINDOW_MS", CT_INT, F(breaker_window_ms), "10000", 100, 3600000, NULL,
     "... within this sliding window (ms)"},
    {"TAGPROOF_BREAKER_OPEN_MS", CT_INT, F(breaker_open_ms), "5000", 0, 3600000, NULL,
     "how long an open breaker refuses calls before it lets probes through (ms)"},
    {"TAGPROOF_BREAKER_PROBES", CT_INT, F(breaker_probes), "3", 1, 1000, NULL,
     "probe calls a half-open breaker lets through"},
    {"TAGPROOF_BREAKER_SLOW_MS", CT_INT, F(breaker_slow_ms), "0", 0, 600000, NULL,
     "a successful call slower than this counts as a failure (0: off)"},
    {"TAGPROOF_DATA_DIR", CT_STRING, F(data_dir), ".tagproof", 0, 0, NULL,
     "directory for keys the services generate on first start"},
    {"TAGPROOF_LOG_LEVEL", CT_CHOICE, F(log_level), "info", 0, 0, "debug|info|warn|error",
     "least level of log lines written"},
};

#define NENTRIES (sizeof(entries) / sizeof(entries[0]))

static int parse_int(const char *s, long min, long max, int *out)
{
    char *end = NULL;
    errno = 0;
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_port(const char *s, int *out)
{
    return parse_int(s, 1, 65535, out);
}

int config_parse_listen(const char *s, struct config_listen *out)
{
    const char *colon;
    size_t hostlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        colon = close + 1;
        s++;
        hostlen = (size_t)(close - s);
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hostlen = (size_t)(colon - s);
    }
    if (hostlen == 0 || hostlen >= sizeof(out->host))
        return -1;
    for (size_t i = 0; i < hostlen; i++)
        if (!(isalnum((unsigned char)s[i]) || strchr(".-:", s[i]) != NULL))
            return -1;
    memcpy(out->host, s, hostlen);
    out->host[hostlen] = '\0';
    return parse_port(colon + 1, &out->port);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes %XX escapes of len bytes at s into a new string; NULL on a bad escape or a NUL. */
static char *percent_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_digit(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

/* redis://[[user]:password@]host:port[/db] */
static int parse_redis_url(const char *s, struct config *cfg, const char **why)
{
    const char *p = s, *at, *slash;
    char hostport[300];
    struct config_listen hp;

    if (strncmp(p, "redis://", 8) != 0) {
        *why = "must start with redis://";
        return -1;
    }
    p += 8;
    /* The user-info ends at the last '@' (a password may hold '@' or '/'); it is
     * percent-decoded, so a password can also be written %40 and the like. */
    at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL && colon + 1 < at) {
            cfg->redis_password = percent_decode(colon + 1, (size_t)(at - colon - 1));
            if (cfg->redis_password == NULL) {
                *why = "has a malformed password (bad percent-encoding)";
                return -1;
            }
        }
        p = at + 1;
    }
    slash = strchr(p, '/');
    size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof(hostport)) {
        *why = "needs host:port";
        return -1;
    }
    memcpy(hostport, p, n);
    hostport[n] = '\0';
    if (strchr(hostport, ':') == NULL) {
        snprintf(hostport + n, sizeof(hostport) - n, ":6379");
    }
    if (config_parse_listen(hostport, &hp) != 0) {
        *why = "has a malformed host:port";
        return -1;
    }
    snprintf(cfg->redis_host, sizeof(cfg->redis_host), "%s", hp.host);
    cfg->redis_port = hp.port;
    cfg->redis_db = 0;
    if (slash != NULL && slash[1] != '\0' && parse_int(slash + 1, 0, 15, &cfg->redis_db) != 0) {
        *why = "has a database number outside 0-15";
        return -1;
    }
    return 0;
}

static int parse_hostports(const char *s)
{
    char *copy = strdup(s), *save = NULL;
    int ok = copy != NULL && *s != '\0';
    for (char *tok = copy != NULL ? strtok_r(copy, ",", &save) : NULL; ok && tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        struct config_listen hp;
        ok = config_parse_listen(tok, &hp) == 0;
    }
    free(copy);
    return ok ? 0 : -1;
}

static int parse_choice(const char *s, const char *choices)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p != '\0';) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, s, n) == 0)
            return 0;
        p += len;
        if (*p == '|')
            p++;
    }
    return -1;
}

static int parse_url(const char *s)
{
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return -1;
    const char *host = strstr(s, "://") + 3;
    if (*host == '\0' || *host == '/' || strpbrk(s, " \t\r\n") != NULL)
        return -1;
    return 0;
}

static int entry_apply(const struct config_entry *e, const char *value, struct config *cfg,
                       char *err, size_t errlen)
{
    char *base = (char *)cfg + e->offset;
    const char *why = NULL;

    switch (e->type) {
    case CT_STRING:
        if (*value == '\0')
            why = "must not be empty";
        break;
    case CT_INT:
        if (parse_int(value, e->min, e->max, (int *)base) != 0) {
            snprintf(err, errlen, "%s=%s: expected a whole number from %ld to %ld", e->name, value,
                     e->min, e->max);
            return -1;
        }
        return 0;
    case CT_LISTEN:
        if (config_parse_listen(value, (struct config_listen *)base) != 0)
            why = "expected host:port with a port from 1 to 65535";
        return why == NULL ? 0 : (snprintf(err, errlen, "%s=%s: %s", e->name, value, why), -1);
    case CT_REDIS_URL:
        if (parse_redis_url(value, cfg, &why) != 0) {
            /* Never echo a URL that may hold a password. */
            snprintf(err, errlen, "%s: %s (expected redis://host:port/db)", e->name, why);
            return -1;
        }
        break;
    case CT_CHOICE:
        if (parse_choice(value, e->choices) != 0) {
            snprintf(err, errlen, "%s=%s: expected one of %s", e->name, value, e->choices);
            return -1;
        }
        break;
    case CT_URL:
        if (parse_url(value) != 0)
            why = "expected an http:// or https:// URL";
        break;
    case CT_HOSTPORTS:
        if (parse_hostports(value) != 0)
            why = "expected host:port[,host:port...]";
        break;
    }
    if (why != NULL) {
        snprintf(err, errlen, "%s: %s", e->name, why);
        return -1;
    }
    char **slot = (char **)base;
    free(*slot);
    *slot = strdup(value);
    if (*slot == NULL) {
        snprintf(err, errlen, "%s: out of memory", e->name);
        return -1;
    }
    return 0;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < NENTRIES; i++) {
        const struct config_entry *e = &entries[i];
        if (e->type == CT_STRING || e->type == CT_REDIS_URL || e->type == CT_CHOICE ||
            e->type == CT_URL || e->type == CT_HOSTPORTS) {
            char **slot = (char **)((char *)cfg + e->offset);
            free(*slot);
            *slot = NULL;
        }
    }
    free(cfg->redis_password);
    cfg->redis_password = NULL;
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NENTRIES; i++) {
        const struct config_entry *e = &entries[i];
        const char *value = getenv(e->name);
        if (value == NULL)
            value = e->def;
        if (value == NULL)
            continue;
        if (entry_apply(e, value, cfg, err, errlen) != 0)
            goto fail;
    }
    if (cfg->pg_migrate_url == NULL && (cfg->pg_migrate_url = strdup(cfg->pg_url)) == NULL) {
        snprintf(err, errlen, "TAGPROOF_PG_MIGRATE_URL: out of memory");
        goto fail;
    }
    if (cfg->http_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->http_threads = n > 0 && n < 64 ? (int)n : 2;
    }
    if (strcmp(cfg->ledger, "ethereum") == 0 && cfg->eth_from == NULL) {
        snprintf(err, errlen, "TAGPROOF_ETH_FROM: required when TAGPROOF_LEDGER=ethereum");
        goto fail;
    }
    if (cfg->eth_from != NULL) {
        size_t n = strlen(cfg->eth_from);
        int ok = n == 42 && cfg->eth_from[0] == '0' && (cfg->eth_from[1] == 'x');
        for (size_t i = 2; ok && i < n; i++)
            ok = isxdigit((unsigned char)cfg->eth_from[i]);
        if (!ok) {
            snprintf(err, errlen, "TAGPROOF_ETH_FROM=%s: expected 0x and 40 hex digits",
                     cfg->eth_from);
            goto fail;
        }
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_load_or_exit(struct config *cfg, const char *program)
{
    char err[512];
    if (config_load(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        exit(2);
    }
}

int config_doc(size_t i, struct config_doc *out)
{
    if (i >= NENTRIES)
        return -1;
    out->name = entries[i].name;
    out->default_value = entries[i].def;
    out->help = entries[i].help;
    return 0;
}
