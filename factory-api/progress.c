/*
 * progress: a terminal progress bar, or a summary line where there is no terminal. See
 * progress.h.
 */
#include "progress.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_REDRAW_NS 100000000LL /* 0.1 s between redraws */
#define PROGRESS_BAR_MIN 10
#define PROGRESS_BAR_MAX 40

struct progress {
    FILE *out;
    int tty;
    int width; /* terminal columns */
    char *label;
    enum progress_unit unit;
    uint64_t done, total;
    char note[41];
    int64_t start_ns, drawn_ns;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void progress_amount(char *out, size_t len, enum progress_unit unit, uint64_t n)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (unit == PROGRESS_ROWS || n < 1024) {
        snprintf(out, len, unit == PROGRESS_ROWS ? "%llu" : "%llu B", (unsigned long long)n);
        return;
    }
    double v = (double)n / 1024;
    size_t i = 0;
    while (v >= 1024 && i + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        i++;
    }
    snprintf(out, len, "%.1f %s", v, units[i]);
}

/* "22.8 MiB/s" or "243902 rows/s"; "" when no time has passed to measure by. */
static void rate(char *out, size_t len, enum progress_unit unit, uint64_t done, double elapsed_s)
{
    char a[32];
    if (elapsed_s < 0.05) {
        out[0] = '\0';
        return;
    }
    progress_amount(a, sizeof(a), unit, (uint64_t)((double)done / elapsed_s));
    snprintf(out, len, "%s%s/s", a, unit == PROGRESS_ROWS ? " rows" : "");
}

size_t progress_format(char *out, size_t len, const char *label, enum progress_unit unit,
                       uint64_t done, uint64_t total, double elapsed_s, int width, const char *note)
{
    char d[32], t[32], r[64], right[160];
    int n;

    if (len == 0)
        return 0;
    progress_amount(d, sizeof(d), unit, done);
    if (note != NULL && note[0] != '\0')
        snprintf(r, sizeof(r), "%.40s, %.0f s", note, elapsed_s);
    else
        rate(r, sizeof(r), unit, done, elapsed_s);
    if (total == 0) {
        n = snprintf(out, len, "%s %s%s%s", label, d, r[0] ? "  " : "", r);
    } else {
        uint64_t shown = done < total ? done : total;
        int pct = (int)(shown * 100 / total);
        progress_amount(t, sizeof(t), unit, total);
        snprintf(right, sizeof(right), "%3d%%  %s / %s%s%s", pct, d, t, r[0] ? "  " : "", r);
        /* label, " [", bar, "] ", right: the bar takes what the terminal leaves. */
        int bar = width - (int)strlen(label) - (int)strlen(right) - 4;
        if (bar > PROGRESS_BAR_MAX)
            bar = PROGRESS_BAR_MAX;
        if (bar < PROGRESS_BAR_MIN)
            bar = PROGRESS_BAR_MIN;
        int full = (int)(shown * (uint64_t)bar / total);
        char cells[PROGRESS_BAR_MAX + 1];
        memset(cells, '#', (size_t)full);
        memset(cells + full, '.', (size_t)(bar - full));
        cells[bar] = '\0';
        n = snprintf(out, len, "%s [%s] %s", label, cells, right);
    }
    if (n < 0)
        out[0] = '\0';
    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

static int terminal_width(FILE *out)
{
    struct winsize ws;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

static void draw(struct progress *p, int64_t now)
{
    char line[512];
    progress_format(line, sizeof(line), p->label, p->unit, p->done, p->total,
                    (double)(now - p->start_ns) / 1e9, p->width - 1, p->note);
    /* Back to the line's start, the bar, and the rest of an older, longer line erased. */
    fprintf(p->out, "\r%s\033[K", line);
    fflush(p->out);
    p->drawn_ns = now;
}

struct progress *progress_new(FILE *out, int tty, const char *label, enum progress_unit unit,
                              uint64_t total)
{
    struct progress *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->label = strdup(label)) == NULL) {
        free(p);
        return NULL;
    }
    p->out = out;
    p->tty = tty;
    p->width = tty ? terminal_width(out) : 80;
    p->unit = unit;
    p->total = total;
    p->start_ns = now_ns();
    if (tty)
        draw(p, p->start_ns);
    return p;
}

void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
    if (p == NULL)
        return;
    p->done = done;
    if (total != 0)
        p->total = total;
    if (!p->tty)
        return;
    int64_t now = now_ns();
    if (now - p->drawn_ns >= PROGRESS_REDRAW_NS)
        draw(p, now);
}

void progress_note(struct progress *p, const char *note)
{
    if (p != NULL)
        snprintf(p->note, sizeof(p->note), "%s", note != NULL ? note : "");
}

void progress_end(struct progress *p, int finished)
{
    if (p == NULL)
        return;
    int64_t now = now_ns();
    if (p->tty) {
        draw(p, now);
        fputc('\n', p->out);
    } else if (finished) {
        char d[32], r[48];
        double secs = (double)(now - p->start_ns) / 1e9;
        progress_amount(d, sizeof(d), p->unit, p->done);
        rate(r, sizeof(r), p->unit, p->done, secs);
        fprintf(p->out, "%s: %s in %.1f s%s%s%s\n", p->label, d, secs, r[0] ? " (" : "", r,
                r[0] ? ")" : "");
    }
    fflush(p->out);
    free(p->label);
    free(p);
}
