/*
 * keyfile: the private keys the services keep on disk (the token signer, the log's checkpoint
 * signer): loaded from a PEM file only its owner may read, or generated on first start and
 * written so that two processes starting together end up with the same key.
 */
#ifndef TAGPROOF_KEYFILE_H
#define TAGPROOF_KEYFILE_H

#include <stddef.h>

#include <openssl/evp.h>

/*
 * Loads the unencrypted PEM private key at path, which must be a regular file without group or
 * other permissions. When path does not exist, generate() makes a key that is written to a
 * temporary file (mode 0600, fsynced) and linked into place; if another process linked its
 * key first, that one is loaded. Blocking file I/O: call at start. The caller frees the key;
 * NULL with a message in err.
 */
EVP_PKEY *keyfile_load_or_create(const char *path, EVP_PKEY *(*generate)(void), char *err,
                                 size_t errlen);

#endif
