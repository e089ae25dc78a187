/*
 * tagproof upload: a batch's tags from a CSV file to the factory API (SPEC §6-§7) — the file
 * streamed with its Content-Length, then the upload followed until it is completed or failed,
 * with progress bars on a terminal, and the counts and rejected rows printed.
 *
 * Exit codes: 0 completed, 1 failed or refused (one line with the problem's detail), 2 a usage
 * error.
 */
#include "cli_upload.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "client.h"
#include "progress.h"
#include "uuid.h"

#define UPLOAD_DEFAULT_URL "http://127.0.0.1:8081"
#define UPLOAD_POLL_FIRST_MS 200
#define UPLOAD_POLL_MAX_MS 2000
#define UPLOAD_RETRIES 5 /* of one request answered 429 or 503, or not answered while polling */

#define UPLOAD_USAGE                                                                               \
    "usage: tagproof upload --batch ID [--mode skip-invalid] [--idempotency-key K]\n"              \
    "                       [--api-key KEY] [--url URL] [--json] FILE.csv\n"

static void upload_usage(FILE *out)
{
    fprintf(out, UPLOAD_USAGE
            "\n"
            "Uploads the tags of batch ID from FILE.csv (a header row with a tag_id column),\n"
            "shows the progress on a terminal, waits until the upload is completed or failed,\n"
            "and prints the counts and the rejected rows (line, code, message).\n"
            "\n"
            "  --batch ID              the batch the tags belong to\n"
            "  --mode skip-invalid     import the valid rows and report the others (default:\n"
            "                          all-or-nothing, one bad row imports nothing)\n"
            "  --idempotency-key K     default: derived from the file's SHA-256, the batch and\n"
            "                          the mode, so uploading the same file again is the same\n"
            "                          upload\n"
            "  --api-key KEY           default: $TAGPROOF_API_KEY (better: a command line is\n"
            "                          visible to other users)\n"
            "  --url URL               default: $TAGPROOF_FACTORY_URL, else\n"
            "                          http://$TAGPROOF_FACTORY_LISTEN, else " UPLOAD_DEFAULT_URL
            "\n"
            "  --json                  print the final upload resource as JSON\n"
            "\n"
            "Exit status: 0 completed, 1 failed or refused, 2 usage error.\n");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void hex_of(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/*
 * Reads f from its start: the SHA-256 of its bytes in hex, and an estimate of its data rows
 * (lines after the header; quoted line breaks count too) for the progress bar. Leaves f at
 * its start. 0, or -1 with a line in err.
 */
static int upload_digest(FILE *f, char hex[2 * 32 + 1], uint64_t *rows, char *err, size_t errlen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char buf[1 << 16], digest[32];
    uint64_t lines = 0;
    size_t n;
    int last = '\n', rc = -1;

    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "cannot set up SHA-256");
        goto out;
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        EVP_DigestUpdate(md, buf, n);
        for (const unsigned char *p = buf; (p = memchr(p, '\n', n - (size_t)(p - buf))) != NULL;
             p++)
            lines++;
        last = buf[n - 1];
    }
    if (ferror(f) || fseeko(f, 0, SEEK_SET) != 0) {
        snprintf(err, errlen, "cannot read the file: %s", strerror(errno));
        goto out;
    }
    if (last != '\n')
        lines++; /* a last line without its line break */
    EVP_DigestFinal_ex(md, digest, NULL);
    hex_of(digest, sizeof(digest), hex);
    *rows = lines > 0 ? lines - 1 : 0;
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    return rc;
}

/*
 * The default Idempotency-Key: SHA-256 over the file's digest, the batch and the mode, so the
 * same file sent again to the same batch is recognised as the same upload, while the same
 * file sent to another batch (or in another mode) is a new one.
 */
static void upload_default_key(const char *file_hex, const char *batch, const char *mode,
                               char out[2 * 32 + 1])
{
    unsigned char digest[32];
    char *s = NULL;
    int n = asprintf(&s, "tagproof-upload/v1\n%s\n%s\n%s\n", file_hex, batch, mode);
    if (n < 0 || EVP_Digest(s, (size_t)n, digest, NULL, EVP_sha256(), NULL) != 1) {
        /* Out of memory: the file's digest alone still names the same file. */
        snprintf(out, 2 * 32 + 1, "%s", file_hex);
    } else {
        hex_of(digest, sizeof(digest), out);
    }
    free(s);
}

/* What the API accepts as an Idempotency-Key: 1 to 255 visible ASCII characters. */
static int upload_key_valid(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x21 || k[i] > 0x7e)
            return 0;
    return 1;
}

static void on_upload_sent(void *arg, uint64_t sent, uint64_t total)
{
    progress_update(arg, sent, total);
}

static int64_t member_int(const json_t *o, const char *name)
{
    return json_integer_value(json_object_get(o, name));
}

/* 1 when the upload has ended (completed or failed). */
static int upload_finished(const json_t *res)
{
    const char *st = json_string_value(json_object_get(res, "status"));
    return st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0);
}

static uint64_t upload_rows_done(const json_t *res)
{
    int64_t done = member_int(res, "rows_accepted") + member_int(res, "rows_rejected");
    int64_t total = member_int(res, "rows_total");
    if (total > done)
        done = total;
    return done > 0 ? (uint64_t)done : 0;
}

/* The upload resource in r's body, or NULL after saying what is wrong. Caller decrefs. */
static json_t *upload_resource(const struct client_reply *r)
{
    json_t *res = json_loadb(r->body, r->body_len, 0, NULL);
    if (!json_is_object(res) || !json_is_string(json_object_get(res, "status"))) {
        fprintf(stderr, "tagproof upload: the API answered %ld without an upload resource\n",
                r->status);
        json_decref(res);
        return NULL;
    }
    return res;
}

/*
 * Polls path until the upload has ended, drawing rows processed on bar. The last resource,
 * or NULL after a one-line message. Answers 429 and 503 are waited out (Retry-After), as are a
 * few missed answers; the interval grows to 2 s so a long upload stays within the key's
 * rate limit.
 */
static json_t *upload_wait(struct client *c, const char *path, struct progress *bar,
                           uint64_t rows_estimate)
{
    struct client_reply r = {.retry_after_s = -1};
    json_t *res = NULL;
    char err[512];
    long interval = UPLOAD_POLL_FIRST_MS;
    int misses = 0;

    for (;;) {
        sleep_ms(interval);
        if (interval < UPLOAD_POLL_MAX_MS)
            interval = interval * 2 < UPLOAD_POLL_MAX_MS ? interval * 2 : UPLOAD_POLL_MAX_MS;
        if (client_get(c, path, &r, err, sizeof(err)) != 0) {
            if (++misses <= UPLOAD_RETRIES)
                continue;
            fprintf(stderr, "tagproof upload: cannot read the upload's state: %s\n", err);
            break;
        }
        if (r.status == 429 || r.status == 503) {
            if (++misses <= UPLOAD_RETRIES) {
                sleep_ms(r.retry_after_s > 0 ? r.retry_after_s * 1000L : 1000L);
                continue;
            }
        }
        if (r.status != 200) {
            client_reply_problem(&r, err, sizeof(err));
            fprintf(stderr, "tagproof upload: reading %s: %s\n", path, err);
            break;
        }
        misses = 0;
        if ((res = upload_resource(&r)) == NULL)
            break;
        /*
         * The rows are read while the body streams in; what follows (the import itself) has
         * no count to show, so the bar says what the upload is doing, and for how long.
         */
        uint64_t done = upload_rows_done(res);
        progress_note(bar, json_string_value(json_object_get(res, "status")));
        progress_update(bar, done, done > rows_estimate ? done : 0);
        if (upload_finished(res))
            break;
        json_decref(res);
        res = NULL;
    }
    client_reply_free(&r);
    return res;
}

/* The result for people: one line of counts, then each error reported. */
static void upload_print(const json_t *res)
{
    const json_t *errors = json_object_get(res, "errors"), *e;
    size_t i, listed = json_array_size(errors);
    int64_t rejected = member_int(res, "rows_rejected");
    const char *id = json_string_value(json_object_get(res, "id"));

    printf("upload %s %s: %lld rows, %lld accepted, %lld rejected\n", id != NULL ? id : "?",
           json_string_value(json_object_get(res, "status")),
           (long long)member_int(res, "rows_total"), (long long)member_int(res, "rows_accepted"),
           (long long)rejected);
    json_array_foreach(errors, i, e)
    {
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        int64_t line = member_int(e, "line");
        /* An error of the whole body (it was cut short, say) has no line. */
        if (line > 0)
            printf("line %lld: ", (long long)line);
        else
            printf("upload: ");
        printf("%s: %s\n", code != NULL ? code : "error", msg != NULL ? msg : "");
    }
    if (listed > 0 && rejected > (int64_t)listed)
        printf("(%lld more rejected rows are not listed)\n",
               (long long)rejected - (long long)listed);
}

/*
 * tagproof upload --batch ID FILE.csv: streams the file to POST /v1/batches/{id}/tags (with
 * Content-Length: the server refuses chunked bodies), then follows the upload resource the
 * answer names until it has ended, and prints it.
 */
int cli_upload(int argc, char **argv)
{
    static const struct option opts[] = {
        {"batch", required_argument, NULL, 'b'},
        {"mode", required_argument, NULL, 'm'},
        {"idempotency-key", required_argument, NULL, 'k'},
        {"api-key", required_argument, NULL, 'a'},
        {"url", required_argument, NULL, 'u'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *batch_arg = NULL, *mode = "all-or-nothing", *idem = NULL, *api_key = NULL;
    const char *url = NULL, *listen_addr, *loc_path;
    char batch[UUID_STR_LEN + 1], file_hex[2 * 32 + 1], key_hex[2 * 32 + 1], err[512];
    char path[128], upload_path[256], upload_id[UUID_STR_LEN + 1], *url_buf = NULL;
    struct client *c = NULL;
    struct client_reply r = {.retry_after_s = -1};
    struct progress *bar = NULL;
    json_t *res = NULL;
    FILE *f = NULL;
    struct stat st;
    uint64_t rows_estimate = 0;
    int as_json = 0, ch, rc = 2, curl_up = 0, tty = isatty(STDERR_FILENO);

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            batch_arg = optarg;
            break;
        case 'm':
            mode = optarg;
            break;
        case 'k':
            idem = optarg;
            break;
        case 'a':
            api_key = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            upload_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "tagproof upload: %s '%s'\n" UPLOAD_USAGE,
                    optopt != 0 ? "option needs a value:" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1 || batch_arg == NULL) {
        fprintf(stderr, "tagproof upload: %s\n" UPLOAD_USAGE,
                batch_arg == NULL ? "--batch ID is required" : "exactly one FILE.csv is needed");
        return 2;
    }
    if (uuid_canonical(batch_arg, strlen(batch_arg), batch) != 0) {
        fprintf(stderr, "tagproof upload: the batch id \"%s\" is not a UUID\n", batch_arg);
        return 2;
    }
    if (strcmp(mode, "skip-invalid") != 0 && strcmp(mode, "all-or-nothing") != 0) {
        fprintf(stderr, "tagproof upload: --mode is skip-invalid or all-or-nothing, not \"%s\"\n",
                mode);
        return 2;
    }
    if (idem != NULL && !upload_key_valid(idem)) {
        fprintf(stderr, "tagproof upload: --idempotency-key must be 1 to 255 visible ASCII "
                        "characters (no spaces)\n");
        return 2;
    }
    if (api_key == NULL)
        api_key = getenv("TAGPROOF_API_KEY");
    if (api_key == NULL || api_key[0] == '\0' || strpbrk(api_key, "\r\n") != NULL) {
        fprintf(stderr, "tagproof upload: no API key: set TAGPROOF_API_KEY or pass --api-key\n");
        return 2;
    }
    if (url == NULL && (url = getenv("TAGPROOF_FACTORY_URL")) != NULL && url[0] == '\0')
        url = NULL;
    if (url == NULL && (listen_addr = getenv("TAGPROOF_FACTORY_LISTEN")) != NULL &&
        listen_addr[0] != '\0') {
        if (asprintf(&url_buf, "http://%s", listen_addr) < 0) {
            fprintf(stderr, "tagproof upload: out of memory\n");
            return 1;
        }
        url = url_buf;
    }
    if (url == NULL)
        url = UPLOAD_DEFAULT_URL;

    f = fopen(argv[optind], "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "tagproof upload: %s: %s\n", argv[optind],
                f == NULL ? strerror(errno) : "not a regular file");
        goto out;
    }
    rc = 1;
    if (upload_digest(f, file_hex, &rows_estimate, err, sizeof(err)) != 0) {
        fprintf(stderr, "tagproof upload: %s: %s\n", argv[optind], err);
        goto out;
    }
    if (idem == NULL) {
        upload_default_key(file_hex, batch, mode, key_hex);
        idem = key_hex;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tagproof upload: cannot set up libcurl\n");
        goto out;
    }
    curl_up = 1;
    if ((c = client_new(url, api_key, err, sizeof(err))) == NULL) {
        fprintf(stderr, "tagproof upload: %s\n", err);
        rc = 2;
        goto out;
    }
    snprintf(path, sizeof(path), "/v1/batches/%s/tags%s", batch,
             strcmp(mode, "skip-invalid") == 0 ? "?mode=skip-invalid" : "");

    /* Sent again only when refused for now (429, 503): the Idempotency-Key makes that safe. */
    for (int attempt = 1;; attempt++) {
        struct client_body body = {
            .file = f,
            .size = (uint64_t)st.st_size,
            .content_type = "text/csv",
            .idempotency_key = idem,
            .on_sent = on_upload_sent,
        };
        if (fseeko(f, 0, SEEK_SET) != 0) {
            fprintf(stderr, "tagproof upload: %s: %s\n", argv[optind], strerror(errno));
            goto out;
        }
        bar = progress_new(stderr, tty, "upload", PROGRESS_BYTES, (uint64_t)st.st_size);
        body.arg = bar;
        int sent = client_post_stream(c, path, &body, &r, err, sizeof(err));
        progress_end(bar, sent == 0 && r.status / 100 == 2);
        bar = NULL;
        if (sent != 0) {
            fprintf(stderr, "tagproof upload: %s\n", err);
            goto out;
        }
        if ((r.status != 429 && r.status != 503) || attempt >= UPLOAD_RETRIES)
            break;
        sleep_ms(r.retry_after_s > 0 ? r.retry_after_s * 1000L : 1000L);
    }
    if (r.status != 200 && r.status != 201 && r.status != 202) {
        client_reply_problem(&r, err, sizeof(err));
        fprintf(stderr, "tagproof upload: %s\n", err);
        goto out;
    }
    /*
     * The answer names the upload (Location, and the resource's id); it is followed unless
     * the resource in the answer has already ended.
     */
    res = json_loadb(r.body, r.body_len, 0, NULL);
    if (!json_is_object(res) || !json_is_string(json_object_get(res, "status"))) {
        json_decref(res);
        res = NULL;
    }
    if (res == NULL || !upload_finished(res)) {
        const char *id = json_string_value(json_object_get(res, "id"));
        loc_path = r.location != NULL ? client_location_path(c, r.location) : NULL;
        if (loc_path != NULL && strlen(loc_path) < sizeof(upload_path))
            snprintf(upload_path, sizeof(upload_path), "%s", loc_path);
        else if (r.location == NULL && id != NULL && uuid_canonical(id, strlen(id), upload_id) == 0)
            snprintf(upload_path, sizeof(upload_path), "/v1/uploads/%s", upload_id);
        else {
            fprintf(stderr,
                    "tagproof upload: the answer names no upload to follow (Location: %s)\n",
                    r.location != NULL ? r.location : "none");
            goto out;
        }
        json_decref(res);
        res = NULL;
        bar = progress_new(stderr, tty, "rows", PROGRESS_ROWS, rows_estimate);
        res = upload_wait(c, upload_path, bar, rows_estimate);
        progress_end(bar, res != NULL);
        bar = NULL;
        if (res == NULL)
            goto out;
    }
    if (as_json) {
        json_dumpf(res, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        upload_print(res);
    }
    rc = strcmp(json_string_value(json_object_get(res, "status")), "completed") == 0 ? 0 : 1;
out:
    progress_end(bar, 0);
    json_decref(res);
    client_reply_free(&r);
    client_free(c);
    if (curl_up)
        curl_global_cleanup();
    if (f != NULL)
        fclose(f);
    free(url_buf);
    return rc;
}
