/*
 * tagproof-devledger: the development ledger of SPEC §7 — POST /v1/anchors records a signed
 * checkpoint, GET /v1/anchors/{id} returns it again. Entries are hash-chained (each names the
 * hash of the one before) and appended as JSON lines to TAGPROOF_DATA_DIR/devledger.jsonl,
 * fsynced before the 201 goes out; at start the file is read back and its chain checked.
 *
 * A ledger serialises by nature: one mutex orders the appends, and a request waits for its own
 * fsync on its worker's loop. That is the one blocking write in the project, accepted here
 * because an answer must not go out before the entry is durable and this program exists for
 * development and tests; production anchors go to a real ledger (the ethereum adapter).
 *
 * The same (origin, size, root) posted again answers 200 with the entry already recorded, so a
 * client that lost an answer and retries never anchors twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "http.h"
#include "log.h"
#include "service.h"

#define ROOT_HEX 64
#define MAX_CHECKPOINT (16 * 1024)

struct entry {
    char id[65]; /* the entry's hash, hex */
    unsigned long long sequence;
    char *line; /* the stored JSON line, without the newline */
    char origin_size_root[512];
};

struct ledger {
    pthread_mutex_t mu;
    int fd;
    char path[4096];
    struct entry *entries;
    size_t n, cap;
    char last_hash[65]; /* "" before the first entry */
};

static void sha256_hex(const char *s, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(s, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*
 * An entry's hash covers its content and the previous hash: the JSON of
 * {sequence, recorded_at, origin, size, root, checkpoint, prev}, compact with sorted keys.
 */
static int entry_hash(json_t *e, char out[65])
{
    json_t *copy = json_copy(e);
    char *text = NULL;
    if (copy == NULL)
        return -1;
    json_object_del(copy, "id");
    text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    if (text == NULL)
        return -1;
    sha256_hex(text, strlen(text), out);
    free(text);
    return 0;
}

static int ledger_add(struct ledger *l, json_t *e, const char *line)
{
    struct entry *en;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct entry *grown = realloc(l->entries, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        l->entries = grown;
        l->cap = cap;
    }
    en = &l->entries[l->n];
    memset(en, 0, sizeof(*en));
    snprintf(en->id, sizeof(en->id), "%s", json_string_value(json_object_get(e, "id")));
    en->sequence = (unsigned long long)json_integer_value(json_object_get(e, "sequence"));
    snprintf(en->origin_size_root, sizeof(en->origin_size_root), "%s\n%lld\n%s",
             json_string_value(json_object_get(e, "origin")),
             (long long)json_integer_value(json_object_get(e, "size")),
             json_string_value(json_object_get(e, "root")));
    en->line = strdup(line);
    if (en->line == NULL)
        return -1;
    snprintf(l->last_hash, sizeof(l->last_hash), "%s", en->id);
    l->n++;
    return 0;
}

/* Reads the file back and checks every link of the chain. 0, or -1 with *why. */
static int ledger_load(struct ledger *l, const char **why)
{
    FILE *fp = fopen(l->path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    off_t good = 0;
    int rc = 0;

    if (fp == NULL)
        return errno == ENOENT ? 0 : (*why = "cannot read the ledger file", -1);
    while ((got = getline(&line, &cap, fp)) > 0) {
        json_t *e;
        char h[65];
        if (line[got - 1] != '\n')
            break; /* a torn last line: written, never fsynced, never acknowledged */
        line[got - 1] = '\0';
        e = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
        const char *prev = json_string_value(json_object_get(e, "prev"));
        const char *id = json_string_value(json_object_get(e, "id"));
        if (e == NULL || prev == NULL || strcmp(prev, l->last_hash) != 0 ||
            json_integer_value(json_object_get(e, "sequence")) != (json_int_t)l->n + 1 ||
            entry_hash(e, h) != 0 || id == NULL || strcmp(h, id) != 0 ||
            ledger_add(l, e, line) != 0) {
            json_decref(e);
            *why = "the ledger file's hash chain is broken";
            rc = -1;
            break;
        }
        json_decref(e);
        good += got;
    }
    free(line);
    fclose(fp);
    if (rc == 0 && truncate(l->path, good) != 0 && errno != ENOENT) {
        *why = "cannot drop a torn last line from the ledger file";
        rc = -1;
    }
    return rc;
}

static struct ledger *ledger_of(struct http_req *req)
{
    return service_state(service_worker(req)->svc);
}

static void reply_entry(struct http_req *req, int status, const char *line)
{
    json_t *e = json_loads(line, 0, NULL);
    if (e == NULL) {
        http_reply_problem(req, 500, NULL, NULL, "the entry cannot be read", NULL);
        return;
    }
    http_reply_json(req, status, e);
}

static int root_ok(const char *s)
{
    if (s == NULL || strlen(s) != ROOT_HEX)
        return 0;
    for (size_t i = 0; i < ROOT_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void on_post(struct http_req *req, void *arg)
{
    struct ledger *l = ledger_of(req);
    const unsigned char *body;
    size_t len = 0;
    json_t *in = NULL, *e = NULL;
    char key[512], h[65], ts[32], *line = NULL;
    const char *origin, *root, *checkpoint;
    json_int_t size;
    struct timespec now;
    struct tm tm;
    (void)arg;

    body = http_req_body(req, &len);
    in = body != NULL ? json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(in)) {
        http_reply_problem(req, 400, NULL, NULL, "the body must be a JSON object", NULL);
        goto out;
    }
    origin = json_string_value(json_object_get(in, "origin"));
    root = json_string_value(json_object_get(in, "root"));
    checkpoint = json_string_value(json_object_get(in, "checkpoint"));
    size = json_integer_value(json_object_get(in, "size"));
    if (origin == NULL || *origin == '\0' || strlen(origin) > 255 ||
        !json_is_integer(json_object_get(in, "size")) || size < 1 || !root_ok(root) ||
        checkpoint == NULL || strlen(checkpoint) > MAX_CHECKPOINT) {
        http_reply_problem(req, 422, NULL, NULL,
                           "need origin (string), size (integer >= 1), root (64 lower-case hex) "
                           "and checkpoint (the signed note)",
                           NULL);
        goto out;
    }
    snprintf(key, sizeof(key), "%s\n%lld\n%s", origin, (long long)size, root);

    pthread_mutex_lock(&l->mu);
    for (size_t i = l->n; i-- > 0;) {
        if (strcmp(l->entries[i].origin_size_root, key) == 0) {
            char *again = strdup(l->entries[i].line);
            pthread_mutex_unlock(&l->mu);
            if (again == NULL)
                http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
            else
                reply_entry(req, 200, again);
            free(again);
            goto out;
        }
    }
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    e = json_pack("{s:I, s:s, s:s, s:I, s:s, s:s, s:s}", "sequence", (json_int_t)l->n + 1,
                  "recorded_at", ts, "origin", origin, "size", size, "root", root, "checkpoint",
                  checkpoint, "prev", l->last_hash);
    if (e == NULL || entry_hash(e, h) != 0 || json_object_set_new(e, "id", json_string(h)) != 0 ||
        (line = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
        pthread_mutex_unlock(&l->mu);
        http_reply_problem(req, 503, NULL, NULL, "out of memory", NULL);
        goto out;
    }
    size_t n = strlen(line);
    if (write(l->fd, line, n) != (ssize_t)n || write(l->fd, "\n", 1) != 1 || fsync(l->fd) != 0) {
        /* A partial line is dropped at the next start; nothing was acknowledged. */
        pthread_mutex_unlock(&l->mu);
        log_error("devledger: cannot append to %s: %s", l->path, strerror(errno));
        http_add_header(req, "Retry-After", "1");
        http_reply_problem(req, 503, NULL, NULL, "the ledger cannot write", NULL);
        goto out;
    }
    if (ledger_add(l, e, line) != 0)
        log_error("devledger: out of memory indexing entry %s", h);
    pthread_mutex_unlock(&l->mu);
    json_object_del(e, "prev");
    http_reply_json(req, 201,
                    json_pack("{s:s, s:I, s:s}", "id", h, "sequence",
                              json_integer_value(json_object_get(e, "sequence")), "recorded_at",
                              ts));
out:
    free(line);
    json_decref(e);
    json_decref(in);
}

static void on_get(struct http_req *req, void *arg)
{
    struct ledger *l = ledger_of(req);
    const char *id = http_req_param(req, 0);
    char *line = NULL;
    (void)arg;

    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n && line == NULL; i++)
        if (strcmp(l->entries[i].id, id) == 0 || (strspn(id, "0123456789") == strlen(id) &&
                                                  strtoull(id, NULL, 10) == l->entries[i].sequence))
            line = strdup(l->entries[i].line);
    pthread_mutex_unlock(&l->mu);
    if (line == NULL) {
        http_reply_problem(req, 404, NULL, NULL, "no such anchor", NULL);
        return;
    }
    reply_entry(req, 200, line);
    free(line);
}

static const struct config_listen *devledger_listen(const struct config *cfg)
{
    return &cfg->devledger_listen;
}

static int devledger_setup(struct service *svc)
{
    const struct config *cfg = service_config(svc);
    struct ledger *l = calloc(1, sizeof(*l));
    const char *why = NULL;

    if (l == NULL)
        return -1;
    pthread_mutex_init(&l->mu, NULL);
    l->fd = -1;
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        log_error("devledger: cannot create %s: %s", cfg->data_dir, strerror(errno));
        goto fail;
    }
    snprintf(l->path, sizeof(l->path), "%s/devledger.jsonl", cfg->data_dir);
    if (ledger_load(l, &why) != 0) {
        log_error("devledger: %s: %s", l->path, why);
        goto fail;
    }
    l->fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        log_error("devledger: cannot open %s: %s", l->path, strerror(errno));
        goto fail;
    }
    service_set_state(svc, l);
    log_info("devledger: %zu entries in %s", l->n, l->path);
    struct httpd *h = service_httpd(svc);
    if (httpd_route(h, HTTP_POST, "/v1/anchors", "/v1/anchors", on_post, NULL) != 0 ||
        httpd_route(h, HTTP_GET, "/v1/anchors/{}", "/v1/anchors/{id}", on_get, NULL) != 0)
        return -1;
    return 0;
fail:
    if (l->fd >= 0)
        close(l->fd);
    free(l);
    return -1;
}

static void devledger_teardown(struct service *svc)
{
    struct ledger *l = service_state(svc);
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->entries[i].line);
    free(l->entries);
    if (l->fd >= 0)
        close(l->fd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int main(void)
{
    static const struct service_def def = {
        .name = "tagproof-devledger",
        .deps = 0,
        .max_body_size = 64 * 1024,
        .listen = devledger_listen,
        .setup = devledger_setup,
        .teardown = devledger_teardown,
    };
    return service_main(&def);
}
