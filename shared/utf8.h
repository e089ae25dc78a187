/*
 * utf8: the one check of a well-formed UTF-8 character (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) that the JSON writers, the page and the event checks use.
 */
#ifndef TAGPROOF_UTF8_H
#define TAGPROOF_UTF8_H

#include <stddef.h>

/*
 * The length (1 to 4) of the well-formed character at s, of which avail bytes may be read, or
 * 0. In a NUL-terminated string avail may be SIZE_MAX: a NUL is never a continuation byte, so
 * the check stops at the end of the string.
 */
size_t utf8_char_len(const void *s, size_t avail);

#endif
