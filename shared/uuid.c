/* uuid: strict canonical parsing and lower-case formatting; v4 and v7 generation. */
#include "uuid.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>

/*
 * Hex digit values by byte, -1 for anything else. A table instead of comparisons: digits of
 * random UUIDs make branches unpredictable, and every scan parses one.
 */
static const signed char hex_values[256] = {
    ['0'] = 0 + 1,  ['1'] = 1 + 1,  ['2'] = 2 + 1,  ['3'] = 3 + 1,  ['4'] = 4 + 1,
    ['5'] = 5 + 1,  ['6'] = 6 + 1,  ['7'] = 7 + 1,  ['8'] = 8 + 1,  ['9'] = 9 + 1,
    ['a'] = 10 + 1, ['b'] = 11 + 1, ['c'] = 12 + 1, ['d'] = 13 + 1, ['e'] = 14 + 1,
    ['f'] = 15 + 1, ['A'] = 10 + 1, ['B'] = 11 + 1, ['C'] = 12 + 1, ['D'] = 13 + 1,
    ['E'] = 14 + 1, ['F'] = 15 + 1,
};

/* The table stores value + 1 so that its zero entries mean "not a digit". */
static int hex_value(char c)
{
    return hex_values[(unsigned char)c] - 1;
}

int uuid_parse(const char *s, size_t len, uint8_t out[16])
{
    size_t byte = 0;
    if (s == NULL || len != UUID_STR_LEN)
        return -1;
    for (size_t i = 0; i < UUID_STR_LEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[byte++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

void uuid_format(const uint8_t in[16], char out[UUID_STR_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = digits[in[i] >> 4];
        out[o++] = digits[in[i] & 0x0f];
    }
    out[o] = '\0';
}

int uuid_canonical(const char *s, size_t len, char out[UUID_STR_LEN + 1])
{
    uint8_t raw[16];
    if (uuid_parse(s, len, raw) != 0)
        return -1;
    uuid_format(raw, out);
    return 0;
}

static int fill_random(uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int uuid_v4(uint8_t out[16])
{
    if (fill_random(out, 16) != 0)
        return -1;
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
    return 0;
}

int uuid_v7(uint8_t out[16])
{
    struct timespec ts;
    if (fill_random(out + 6, 10) != 0)
        return -1;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)(ms >> (8 * (5 - i)));
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x70);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
    return 0;
}
