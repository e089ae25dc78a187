/*
 * config: every setting of SPEC §4 read from the environment into one struct, each checked
 * against its type and range. A bad value yields one line naming the variable, which the
 * program prints before it exits with code 2.
 */
#ifndef TAGPROOF_CONFIG_H
#define TAGPROOF_CONFIG_H

#include <stddef.h>

struct config_listen {
    char host[64];
    int port;
};

struct config {
    /* PostgreSQL */
    char *pg_url;
    char *pg_migrate_url; /* the schema owner's connection; defaults to pg_url */
    int pg_timeout_ms;
    int pg_pool_size;
    /* Redis */
    char *redis_url;
    char redis_host[256];
    int redis_port;
    int redis_db;
    char *redis_password; /* from the URL's user-info, if any */
    char *redis_sentinels;
    char *redis_master;
    int redis_timeout_ms;
    /* listen addresses */
    struct config_listen scan_listen;
    struct config_listen factory_listen;
    struct config_listen anchor_listen;
    struct config_listen devledger_listen;
    int http_threads;
    /* tokens */
    char *jwks_file;
    char *jwks_url;
    char *jwt_issuer;
    char *jwt_audience;
    char *jwt_key_file; /* the factory API's own signing key; NULL: <data_dir>/jwt-signing.pem */
    /* factory API */
    int upload_max_mb;
    int rate_limit_per_min;
    int rate_limit_burst;
    int auth_fail_per_min;
    /* anchoring */
    char *ledger;
    char *ledger_url;
    char *eth_from;
    int eth_confirmations;
    int anchor_interval_s;
    char *log_origin;
    char *log_key_file; /* the checkpoint signing key; NULL: <data_dir>/log-signing.pem */
    /* scan service */
    char *sink;            /* "on": tagproof-scan runs the scan-event sink thread */
    char *trusted_proxies; /* comma-separated IP addresses whose X-Forwarded-For is honoured */
    char *ip_hash_salt;    /* secret salt of client-IP hashes; generated under data_dir if unset */
    int cache_ttl_s;
    int rule_velocity_max;
    int rule_travel_kmh;
    int rule_travel_min_km;
    int rule_clone_max;
    int rule_enum_max;
    int rule_dedup_s;
    /* circuit breakers (one per dependency) */
    int breaker_failure_pct;
    int breaker_min_calls;
    int breaker_window_ms;
    int breaker_open_ms;
    int breaker_probes;
    int breaker_slow_ms;
    /* files the services keep (signing keys); created on first start */
    char *data_dir;
    char *log_level;
};

/*
 * Fills cfg from the environment (unset variables take their documented defaults).
 * Returns 0, or -1 with one line naming the variable and the problem in err.
 * On success the caller releases cfg with config_free().
 */
int config_load(struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

/*
 * The same check for the whole program: on failure prints the line to stderr prefixed with
 * the program name and exits with code 2.
 */
void config_load_or_exit(struct config *cfg, const char *program);

/* One entry a setting: name, default (NULL: unset) and meaning, for `tagproof config`. */
struct config_doc {
    const char *name;
    const char *default_value;
    const char *help;
};
/* Fills out with the i-th setting; -1 past the last one. */
int config_doc(size_t i, struct config_doc *out);

/* Parses "host:port" (IPv4, hostname, or [IPv6]); 0 or -1. */
int config_parse_listen(const char *s, struct config_listen *out);

#endif
