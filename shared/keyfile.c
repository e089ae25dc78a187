/*
 * keyfile: loading and first-start creation of PEM private keys (see keyfile.h).
 */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* An encrypted key is refused rather than prompting for a passphrase on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static EVP_PKEY *load(const char *path, char *err, size_t errlen)
{
    struct stat st;
    EVP_PKEY *pkey = NULL;
    FILE *fp = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        seterr(err, errlen, "cannot open the key %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
        seterr(err, errlen,
               "the key %s must be a regular file that only its owner can read (chmod 600)", path);
        goto out;
    }
    fp = fdopen(fd, "r");
    if (fp == NULL) {
        seterr(err, errlen, "cannot read the key %s: %s", path, strerror(errno));
        goto out;
    }
    fd = -1;
    pkey = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
    ERR_clear_error();
    if (pkey == NULL)
        seterr(err, errlen, "the key %s is not an unencrypted PEM private key", path);
out:
    if (fp != NULL)
        fclose(fp);
    if (fd >= 0)
        close(fd);
    return pkey;
}

/*
 * Writes a new key to a temporary file in the same directory and links it into place, which
 * fails if the name exists: a concurrent creator's key then wins and is loaded instead.
 */
static int create(const char *path, EVP_PKEY *(*generate)(void), char *err, size_t errlen)
{
    int rc = -1, fd = -1;
    FILE *fp = NULL;
    char *tmp = NULL;
    EVP_PKEY *pkey = generate();

    if (pkey == NULL) {
        seterr(err, errlen, "cannot generate a key for %s", path);
        goto done;
    }
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        goto done;
    }
    fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        seterr(err, errlen, "cannot create the key %s: %s", path, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    fp = fdopen(fd, "w");
    if (fp == NULL)
        goto done;
    fd = -1;
    if (PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL) != 1 || fflush(fp) != 0 ||
        fsync(fileno(fp)) != 0) {
        seterr(err, errlen, "cannot write the key %s", path);
        goto done;
    }
    if (link(tmp, path) != 0 && errno != EEXIST) {
        seterr(err, errlen, "cannot create the key %s: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    ERR_clear_error();
    if (fp != NULL)
        fclose(fp);
    if (fd >= 0)
        close(fd);
    if (tmp != NULL)
        unlink(tmp);
    free(tmp);
    EVP_PKEY_free(pkey);
    return rc;
}

EVP_PKEY *keyfile_load_or_create(const char *path, EVP_PKEY *(*generate)(void), char *err,
                                 size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) {
            seterr(err, errlen, "cannot read the key %s: %s", path, strerror(errno));
            return NULL;
        }
        if (create(path, generate, err, errlen) != 0)
            return NULL;
    }
    return load(path, err, errlen);
}
