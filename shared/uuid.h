/*
 * uuid: tag ids are UUIDs in canonical 8-4-4-4-12 hex form. Parsing accepts either case and
 * nothing else (no braces, no missing hyphens, no spaces); formatting is always lower case.
 */
#ifndef TAGPROOF_UUID_H
#define TAGPROOF_UUID_H

#include <stddef.h>
#include <stdint.h>

#define UUID_STR_LEN 36 /* without the terminating NUL */

/* Parses exactly len bytes of s (which need not be NUL-terminated). 0, or -1 if malformed. */
int uuid_parse(const char *s, size_t len, uint8_t out[16]);

/* Writes the lower-case canonical form and a NUL into out. */
void uuid_format(const uint8_t in[16], char out[UUID_STR_LEN + 1]);

/* Parses and reformats: out is the lower-case form of a well-formed s. 0 or -1. */
int uuid_canonical(const char *s, size_t len, char out[UUID_STR_LEN + 1]);

/* Random (version 4) and time-ordered (version 7) UUIDs from the kernel's CSPRNG. 0 or -1. */
int uuid_v4(uint8_t out[16]);
int uuid_v7(uint8_t out[16]);

#endif
