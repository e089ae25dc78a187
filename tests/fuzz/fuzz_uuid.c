// fuzz: MODULES uuid
/*
 * fuzz_uuid: uuid_parse and uuid_canonical on arbitrary bytes. Whatever parses must round-trip
 * (parse, format, parse gives the same bytes), its canonical form must be the input in lower
 * case, and anything else must be refused by both functions alike.
 */
#include "uuid.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    uint8_t raw[16], again[16];
    char text[UUID_STR_LEN + 1], canon[UUID_STR_LEN + 1];

    int parsed = uuid_parse(s, size, raw);
    int canonical = uuid_canonical(s, size, canon);
    if ((parsed == 0) != (canonical == 0))
        abort();
    if (parsed == 0) {
        if (size != UUID_STR_LEN)
            abort();
        uuid_format(raw, text);
        if (strlen(text) != UUID_STR_LEN || strcmp(text, canon) != 0)
            abort();
        for (size_t i = 0; i < UUID_STR_LEN; i++) {
            int hyphen = i == 8 || i == 13 || i == 18 || i == 23;
            char c = text[i];
            if (hyphen ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                abort();
            /* The canonical form is the input with its letters lowered, nothing else. */
            if (c != tolower((unsigned char)s[i]))
                abort();
        }
        if (uuid_parse(text, UUID_STR_LEN, again) != 0 || memcmp(raw, again, 16) != 0)
            abort();
    }

    /* Any 16 bytes format to a string that parses back to them. */
    if (size >= 16) {
        memcpy(raw, data, 16);
        uuid_format(raw, text);
        if (strlen(text) != UUID_STR_LEN || uuid_parse(text, UUID_STR_LEN, again) != 0 ||
            memcmp(raw, again, 16) != 0)
            abort();
    }
    return 0;
}
