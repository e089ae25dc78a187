/*
 * note: C2SP signed notes with Ed25519 (https://c2sp.org/signed-note) and the tlog-checkpoint
 * body they carry (https://c2sp.org/tlog-checkpoint) — signing the log's checkpoints,
 * verifying them (the anchor service, proof bundles, `tagproof verify`), and the verifier key
 * text "<name>+<hex key id>+<base64(0x01 || public key)>". No I/O except loading the key.
 */
#ifndef TAGPROOF_NOTE_H
#define TAGPROOF_NOTE_H

#include <stddef.h>
#include <stdint.h>

#define NOTE_HASH_LEN 32
#define NOTE_NAME_MAX 255
#define NOTE_VKEY_MAX (NOTE_NAME_MAX + 1 + 8 + 1 + 48)

struct note_signer;

/*
 * A signer named name (no blanks, no '+', 1 to NOTE_NAME_MAX bytes) from a 32-byte Ed25519
 * seed; for tests and key import. NULL when the name or key is unusable.
 */
struct note_signer *note_signer_from_seed(const char *name, const uint8_t seed[32]);

/*
 * Loads the Ed25519 private key (PEM, PKCS#8) at path, which must not be readable or writable
 * by group or others, or generates one and writes it with mode 0600 (through a temporary
 * file and link(2), so two processes starting together end up with the same key). Blocking
 * file I/O: call at start. NULL with a message in err.
 */
struct note_signer *note_signer_load_or_create(const char *path, const char *name, char *err,
                                               size_t errlen);
void note_signer_free(struct note_signer *s);

/* The verifier key text; borrowed from s. */
const char *note_signer_vkey(const struct note_signer *s);

/*
 * Signs text (non-empty, ending in a newline, without a blank line... as the format wants:
 * no "\n\n" inside) and returns the note: text, a blank line, and the signature line
 * "— <name> <base64(key id || signature)>". Caller frees; NULL when text is not signable.
 */
char *note_sign(const struct note_signer *s, const char *text, size_t len);

/*
 * Verifies note against the verifier key vkey: 0 when one of its signature lines is by that
 * key (same name and key id) and verifies over the note's text; *text_len (may be NULL) then
 * gets the text's length (it starts the note). -1 for a malformed key or note, or no valid
 * signature by that key. Each thread remembers its last success, so the same key and note
 * again (byte for byte) are answered without a second signature check.
 */
int note_verify(const char *vkey, const char *note, size_t len, size_t *text_len);

/* The checkpoint body "<origin>\n<size>\n<base64 root>\n". Caller frees. */
char *note_checkpoint_body(const char *origin, uint64_t size, const uint8_t root[NOTE_HASH_LEN]);

/*
 * Parses a checkpoint body (extension lines after the third are allowed and ignored): the
 * origin (copied, at most origin_cap - 1 bytes), the size and the root. 0 or -1.
 */
int note_checkpoint_parse(const char *text, size_t len, char *origin, size_t origin_cap,
                          uint64_t *size, uint8_t root[NOTE_HASH_LEN]);

#endif
