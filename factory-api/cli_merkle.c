/*
 * tagproof merkle: RFC 9162 over leaf inputs read from standard input, for interoperability
 * tests (SPEC §7) — root, inclusion and consistency proofs, and their strict verification —
 * plus `merkle bench N`, the appender's throughput for scripts/bench/merkle.
 *
 * Exit codes: 0 success (or the proof holds), 1 the proof does not hold, 2 a usage or input
 * error, with one line on standard error.
 */
#include "cli_merkle.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "merkle.h"

/* Every complete subtree of the input's tree, by level: what a log keeps in its store. */
struct mem_store {
    uint8_t (*level[MERKLE_MAX_PROOF])[MERKLE_HASH_LEN];
    uint64_t len[MERKLE_MAX_PROOF], cap[MERKLE_MAX_PROOF];
};

static int store_emit(void *arg, unsigned level, uint64_t index,
                      const uint8_t hash[MERKLE_HASH_LEN])
{
    struct mem_store *s = arg;
    if (index != s->len[level])
        return -1; /* the appender emits each level's subtrees in order */
    if (s->len[level] == s->cap[level]) {
        uint64_t cap = s->cap[level] ? s->cap[level] * 2 : 1024;
        void *grown = realloc(s->level[level], cap * MERKLE_HASH_LEN);
        if (grown == NULL)
            return -1;
        s->level[level] = grown;
        s->cap[level] = cap;
    }
    memcpy(s->level[level][s->len[level]++], hash, MERKLE_HASH_LEN);
    return 0;
}

static int store_get(void *arg, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_LEN])
{
    struct mem_store *s = arg;
    if (level >= MERKLE_MAX_PROOF || index >= s->len[level])
        return -1;
    memcpy(out, s->level[level][index], MERKLE_HASH_LEN);
    return 0;
}

static void store_free(struct mem_store *s)
{
    for (unsigned i = 0; i < MERKLE_MAX_PROOF; i++)
        free(s->level[i]);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a hex string of len characters into out (cap bytes). -1 when not hex. */
static int unhex(const char *s, size_t len, uint8_t *out, size_t cap, size_t *n)
{
    if (len % 2 != 0 || len / 2 > cap)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *n = len / 2;
    return 0;
}

static void print_hex(const uint8_t h[MERKLE_HASH_LEN])
{
    static const char digits[] = "0123456789abcdef";
    char line[2 * MERKLE_HASH_LEN + 2];
    for (size_t i = 0; i < MERKLE_HASH_LEN; i++) {
        line[2 * i] = digits[h[i] >> 4];
        line[2 * i + 1] = digits[h[i] & 15];
    }
    line[2 * MERKLE_HASH_LEN] = '\n';
    line[2 * MERKLE_HASH_LEN + 1] = '\0';
    fputs(line, stdout);
}

/* Reads the leaf inputs of standard input into the tree. 0, or 2 after a message. */
static int read_leaves(struct merkle_hasher *h, struct merkle_frontier *f, struct mem_store *s)
{
    char *line = NULL;
    size_t cap = 0, max = 0;
    uint8_t *buf = NULL, lh[MERKLE_HASH_LEN];
    ssize_t got;
    uint64_t lineno = 0;
    int rc = 0;

    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got, n = 0;
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len / 2 > max) {
            uint8_t *grown = realloc(buf, len / 2);
            if (grown == NULL) {
                fprintf(stderr, "tagproof merkle: out of memory\n");
                rc = 2;
                break;
            }
            buf = grown;
            max = len / 2;
        }
        if (unhex(line, len, buf, max, &n) != 0) {
            fprintf(stderr, "tagproof merkle: line %llu is not a hex string\n",
                    (unsigned long long)lineno);
            rc = 2;
            break;
        }
        merkle_leaf_hash(h, buf, n, lh);
        if (merkle_frontier_append(h, f, lh, store_emit, s) != 0) {
            fprintf(stderr, "tagproof merkle: out of memory\n");
            rc = 2;
            break;
        }
    }
    free(line);
    free(buf);
    return rc;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Reads a proof (one hex hash a line) from standard input. 0, or 2 after a message. */
static int read_proof(uint8_t (*hashes)[MERKLE_HASH_LEN + 1], struct merkle_bytes *proof, size_t *n)
{
    char line[512];
    *n = 0;
    while (fgets(line, sizeof(line), stdin) != NULL) {
        size_t len = strcspn(line, "\r\n"), got = 0;
        if (len == 0 && feof(stdin))
            break;
        if (*n == MERKLE_MAX_PROOF) {
            /* Longer than any valid proof: it does not hold. */
            *n = MERKLE_MAX_PROOF + 1;
            return 0;
        }
        /* One byte more than a hash fits, so that an over-long one is kept and refused. */
        if (unhex(line, len, hashes[*n], MERKLE_HASH_LEN + 1, &got) != 0 &&
            len / 2 <= MERKLE_HASH_LEN + 1) {
            fprintf(stderr, "tagproof merkle: proof line %zu is not a hex string\n", *n + 1);
            return 2;
        }
        if (len / 2 > MERKLE_HASH_LEN + 1)
            got = MERKLE_HASH_LEN + 1;
        proof[*n] = (struct merkle_bytes){hashes[*n], got};
        (*n)++;
    }
    return 0;
}

static int hash_arg(const char *s, uint8_t *out, size_t *n)
{
    return s != NULL && unhex(s, strlen(s), out, MERKLE_HASH_LEN + 1, n) == 0 ? 0 : -1;
}

static int verify_cmd(int argc, char **argv, int consistency)
{
    static const struct option incl_opts[] = {{"index", required_argument, NULL, 'i'},
                                              {"size", required_argument, NULL, 'n'},
                                              {"leaf-hash", required_argument, NULL, 'l'},
                                              {"root", required_argument, NULL, 'r'},
                                              {NULL, 0, NULL, 0}};
    static const struct option cons_opts[] = {{"size1", required_argument, NULL, 'm'},
                                              {"size2", required_argument, NULL, 'n'},
                                              {"root1", required_argument, NULL, 'a'},
                                              {"root2", required_argument, NULL, 'r'},
                                              {NULL, 0, NULL, 0}};
    const char *a[128] = {NULL};
    uint64_t x = 0, size = 0;
    uint8_t h1[MERKLE_HASH_LEN + 1], h2[MERKLE_HASH_LEN + 1];
    uint8_t hashes[MERKLE_MAX_PROOF][MERKLE_HASH_LEN + 1];
    struct merkle_bytes proof[MERKLE_MAX_PROOF];
    size_t n1 = 0, n2 = 0, n = 0;
    struct merkle_hasher *h = NULL;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", consistency ? cons_opts : incl_opts, NULL)) != -1) {
        if (c == '?')
            goto usage;
        a[c] = optarg;
    }
    if (optind != argc)
        goto usage;
    if (parse_u64(a[consistency ? 'm' : 'i'], &x) != 0 || parse_u64(a['n'], &size) != 0 ||
        hash_arg(a[consistency ? 'a' : 'l'], h1, &n1) != 0 || hash_arg(a['r'], h2, &n2) != 0)
        goto usage;
    if ((rc = read_proof(hashes, proof, &n)) != 0)
        return rc;
    if (n > MERKLE_MAX_PROOF)
        return 1;
    h = merkle_hasher_new();
    if (h == NULL) {
        fprintf(stderr, "tagproof merkle: out of memory\n");
        return 2;
    }
    struct merkle_bytes b1 = {h1, n1}, b2 = {h2, n2};
    rc = consistency ? merkle_verify_consistency(h, x, size, b1, b2, proof, n)
                     : merkle_verify_inclusion(h, x, size, b1, proof, n, b2);
    merkle_hasher_free(h);
    return rc == 0 ? 0 : 1;
usage:
    fprintf(stderr, consistency ? "usage: tagproof merkle verify-consistency --size1 M --size2 N "
                                  "--root1 HEX --root2 HEX < PROOF\n"
                                : "usage: tagproof merkle verify-inclusion --index I --size N "
                                  "--leaf-hash HEX --root HEX < PROOF\n");
    return 2;
}

/* tagproof merkle bench N: appends N leaves of 63 bytes (so that each leaf hash, like each
 * node hash, is one 64-byte-class SHA-256) keeping every subtree, then the root. */
static int bench_cmd(uint64_t n)
{
    struct merkle_hasher *h = merkle_hasher_new();
    struct mem_store s;
    struct merkle_frontier f;
    uint8_t leaf[63], lh[MERKLE_HASH_LEN], root[MERKLE_HASH_LEN];
    struct timespec t0, t1;
    uint64_t hashes = 0;

    memset(&s, 0, sizeof(s));
    memset(leaf, 0x5a, sizeof(leaf));
    merkle_frontier_init(&f);
    if (h == NULL)
        return 2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t i = 0; i < n; i++) {
        memcpy(leaf, &i, sizeof(i));
        merkle_leaf_hash(h, leaf, sizeof(leaf), lh);
        if (merkle_frontier_append(h, &f, lh, store_emit, &s) != 0) {
            fprintf(stderr, "tagproof merkle bench: out of memory\n");
            return 2;
        }
    }
    merkle_frontier_root(h, &f, root);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* n leaf hashes, n - 1 interior nodes in all (stored or folded into the root). */
    hashes = 2 * n - 1;
    double s_el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("leaves %llu seconds %.3f leaves_per_s %.0f hashes_per_s %.0f root ",
           (unsigned long long)n, s_el, (double)n / s_el, (double)hashes / s_el);
    print_hex(root);
    store_free(&s);
    merkle_hasher_free(h);
    return 0;
}

int cli_merkle(int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    struct merkle_hasher *h = NULL;
    struct mem_store s;
    struct merkle_frontier f;
    uint8_t out[MERKLE_HASH_LEN], proof[MERKLE_MAX_PROOF][MERKLE_HASH_LEN];
    uint64_t arg = 0;
    size_t n = 0;
    int rc = 2;

    if (strcmp(sub, "verify-inclusion") == 0)
        return verify_cmd(argc - 1, argv + 1, 0);
    if (strcmp(sub, "verify-consistency") == 0)
        return verify_cmd(argc - 1, argv + 1, 1);
    if (strcmp(sub, "bench") == 0 && argc == 3 && parse_u64(argv[2], &arg) == 0 && arg > 0)
        return bench_cmd(arg);
    if (!((strcmp(sub, "root") == 0 && argc == 2) ||
          ((strcmp(sub, "inclusion") == 0 || strcmp(sub, "consistency") == 0) && argc == 3 &&
           parse_u64(argv[2], &arg) == 0))) {
        fprintf(stderr, "usage: tagproof merkle root | inclusion INDEX | consistency OLD_SIZE"
                        " (leaf inputs on standard input, one hex string a line)\n"
                        "       tagproof merkle verify-inclusion --index I --size N"
                        " --leaf-hash HEX --root HEX < PROOF\n"
                        "       tagproof merkle verify-consistency --size1 M --size2 N"
                        " --root1 HEX --root2 HEX < PROOF\n");
        return 2;
    }
    memset(&s, 0, sizeof(s));
    merkle_frontier_init(&f);
    if ((h = merkle_hasher_new()) == NULL || (rc = read_leaves(h, &f, &s)) != 0)
        goto out;
    rc = 2;
    if (strcmp(sub, "root") == 0) {
        merkle_frontier_root(h, &f, out);
        print_hex(out);
        rc = 0;
    } else if (strcmp(sub, "inclusion") == 0) {
        if (merkle_inclusion_proof(h, arg, f.size, store_get, &s, proof, &n) != 0) {
            fprintf(stderr, "tagproof merkle inclusion: index %llu is outside a tree of %llu\n",
                    (unsigned long long)arg, (unsigned long long)f.size);
            goto out;
        }
        rc = 0;
    } else {
        if (merkle_consistency_proof(h, arg, f.size, store_get, &s, proof, &n) != 0) {
            fprintf(stderr,
                    "tagproof merkle consistency: the old size must be 1 to %llu, not %llu\n",
                    (unsigned long long)f.size, (unsigned long long)arg);
            goto out;
        }
        rc = 0;
    }
    for (size_t i = 0; i < n; i++)
        print_hex(proof[i]);
out:
    if (fflush(stdout) != 0)
        rc = 2;
    store_free(&s);
    merkle_hasher_free(h);
    return rc;
}
