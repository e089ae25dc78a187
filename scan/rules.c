/*
 * rules: each SPEC §5 rule is a small predicate over struct rules_input; rules_evaluate adds
 * the weights of those that fire and derives the verdict. The bot user-agent table lives
 * here too, matched case-insensitively in ASCII so the locale never changes an answer.
 */
#include "rules.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define EARTH_RADIUS_KM 6371.0
#define MS_PER_HOUR 3600000.0

static const char *const reason_names[RULES_REASON_COUNT] = {
    "velocity", "impossible_travel", "clone_spread", "enumeration", "bot_ua", "revoked",
};

/*
 * Substrings of user agents sent by crawlers, link previewers, HTTP libraries used from
 * scripts, headless browsers and scanners. Lower case; matched anywhere, ignoring case.
 * Deliberately absent: okhttp and Dalvik (the default user agents of real Android apps),
 * CFNetwork (real iOS apps), and anything a phone browser sends. A pattern may name a word
 * that contains it and is known to be innocent: an occurrence inside that word does not
 * count (CUBOT is a maker of Android phones, and its model names appear in their browsers'
 * user agents).
 */
static const struct bot_pattern {
    const char *needle;
    const char *unless_within; /* NULL, or a lower-case word that contains needle */
} bot_patterns[] = {
    {"bot", "cubot"}, /* Googlebot, bingbot, YandexBot, Slackbot, GPTBot, robot ... */
    {"crawl", NULL},
    {"spider", NULL}, /* Baiduspider, Sogou web spider */
    {"slurp", NULL},  /* Yahoo! Slurp */
    {"facebookexternalhit", NULL},
    {"mediapartners-google", NULL},
    {"feedfetcher", NULL},
    {"ia_archiver", NULL},
    {"curl/", NULL},
    {"wget/", NULL},
    {"python-requests", NULL},
    {"python-urllib", NULL},
    {"python-httpx", NULL},
    {"aiohttp", NULL},
    {"go-http-client", NULL},
    {"java/", NULL}, /* Java's HttpURLConnection, "Java/17.0.2" */
    {"apache-httpclient", NULL},
    {"libwww-perl", NULL},
    {"lwp::simple", NULL},
    {"node-fetch", NULL},
    {"axios/", NULL},
    {"undici", NULL},
    {"httpie/", NULL},
    {"postmanruntime", NULL},
    {"insomnia/", NULL},
    {"guzzlehttp", NULL},
    {"ruby", NULL}, /* Ruby's Net::HTTP sends "Ruby" */
    {"headlesschrome", NULL},
    {"phantomjs", NULL},
    {"selenium", NULL},
    {"webdriver", NULL},
    {"puppeteer", NULL},
    {"playwright", NULL},
    {"scrapy", NULL},
    {"httrack", NULL},
    {"apachebench", NULL},
    {"zgrab", NULL},
    {"masscan", NULL},
    {"nmap", NULL},
    {"nikto", NULL},
    {"sqlmap", NULL},
};

static unsigned weight_of(const struct rules_config *cfg, unsigned reason)
{
    switch (reason) {
    case RULES_REASON_VELOCITY:
        return cfg->weight_velocity;
    case RULES_REASON_IMPOSSIBLE_TRAVEL:
        return cfg->weight_impossible_travel;
    case RULES_REASON_CLONE_SPREAD:
        return cfg->weight_clone_spread;
    case RULES_REASON_ENUMERATION:
        return cfg->weight_enumeration;
    case RULES_REASON_BOT_UA:
        return cfg->weight_bot_ua;
    case RULES_REASON_REVOKED:
        return cfg->weight_revoked;
    default:
        return 0;
    }
}

void rules_config_default(struct rules_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->velocity_max = 10;
    cfg->velocity_window_s = 60;
    cfg->travel_max_kmh = 1000.0;
    cfg->travel_min_km = 500.0;
    cfg->travel_window_s = 48 * 3600;
    cfg->clock_skew_ms = 5000;
    cfg->clone_max_clients = 20;
    cfg->clone_window_s = 24 * 3600;
    cfg->enum_max_unknown = 30;
    cfg->enum_window_s = 60;
    cfg->dedup_window_s = 30;
    cfg->weight_velocity = 30;
    cfg->weight_impossible_travel = 60;
    cfg->weight_clone_spread = 50;
    cfg->weight_enumeration = 30;
    cfg->weight_bot_ua = 20;
    cfg->weight_revoked = 100;
}

int rules_config_validate(const struct rules_config *cfg, const char **why)
{
    const char *msg = NULL;

    if (cfg->velocity_max < 1)
        msg = "velocity_max must be at least 1";
    else if (cfg->velocity_window_s < 1)
        msg = "velocity_window_s must be at least 1";
    else if (!isfinite(cfg->travel_max_kmh) || !(cfg->travel_max_kmh > 0.0))
        msg = "travel_max_kmh must be a finite speed above 0";
    else if (!isfinite(cfg->travel_min_km) || !(cfg->travel_min_km > 0.0))
        msg = "travel_min_km must be a finite distance above 0";
    else if (cfg->travel_window_s < 1)
        msg = "travel_window_s must be at least 1";
    else if (cfg->clone_max_clients < 1)
        msg = "clone_max_clients must be at least 1";
    else if (cfg->clone_window_s < 1)
        msg = "clone_window_s must be at least 1";
    else if (cfg->enum_max_unknown < 1)
        msg = "enum_max_unknown must be at least 1";
    else if (cfg->enum_window_s < 1)
        msg = "enum_window_s must be at least 1";
    else if (cfg->dedup_window_s < 1)
        msg = "dedup_window_s must be at least 1";
    else if (cfg->dedup_window_s > cfg->velocity_window_s)
        msg = "dedup_window_s must not exceed velocity_window_s";
    else if (cfg->weight_velocity > RULES_MAX_SCORE)
        msg = "weight_velocity must be at most 100";
    else if (cfg->weight_impossible_travel > RULES_MAX_SCORE)
        msg = "weight_impossible_travel must be at most 100";
    else if (cfg->weight_clone_spread > RULES_MAX_SCORE)
        msg = "weight_clone_spread must be at most 100";
    else if (cfg->weight_enumeration > RULES_MAX_SCORE)
        msg = "weight_enumeration must be at most 100";
    else if (cfg->weight_bot_ua > RULES_MAX_SCORE)
        msg = "weight_bot_ua must be at most 100";
    else if (cfg->weight_revoked > RULES_MAX_SCORE)
        msg = "weight_revoked must be at most 100";

    if (msg == NULL)
        return 0;
    if (why != NULL)
        *why = msg;
    return -1;
}

bool rules_location_valid(double lat, double lon)
{
    /* Comparisons with NaN are false, so NaN and the infinities fail here too. */
    return lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0;
}

static double radians(double deg)
{
    return deg * (M_PI / 180.0);
}

double rules_distance_km(double lat1, double lon1, double lat2, double lon2)
{
    double dlat = radians(lat2 - lat1);
    double dlon = radians(lon2 - lon1);
    double s1 = sin(dlat / 2.0);
    double s2 = sin(dlon / 2.0);
    double a = s1 * s1 + cos(radians(lat1)) * cos(radians(lat2)) * s2 * s2;

    /*
     * Rounding takes a a hair above 1 for some antipodal points (1 + 2^-52 for (-87.5, -180)
     * and (87.5, 0)). sqrt rounds that much back to 1, but a larger excess would put asin
     * outside its domain and answer NaN, so clamp rather than rely on it.
     */
    if (a > 1.0)
        a = 1.0;
    return 2.0 * EARTH_RADIUS_KM * asin(sqrt(a));
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/*
 * Whether the pattern's needle, found at i in the lower-cased user agent, lies inside the
 * pattern's innocent word there (and so does not count).
 */
static bool inside_innocent(const char *lower, size_t ua_len, size_t i, const struct bot_pattern *p)
{
    if (p->unless_within == NULL)
        return false;
    const char *at = strstr(p->unless_within, p->needle);
    assert(at != NULL && "unless_within contains its needle");
    size_t skip = (size_t)(at - p->unless_within), wlen = strlen(p->unless_within);
    return i >= skip && i - skip + wlen <= ua_len &&
           memcmp(lower + i - skip, p->unless_within, wlen) == 0;
}

#define BOT_PATTERNS (sizeof(bot_patterns) / sizeof(bot_patterns[0]))
_Static_assert(BOT_PATTERNS < 255, "pattern indexes fit a byte, 255 ends a list");

/*
 * The user agent is lowered once and read once: at each position only the patterns whose
 * needle starts with the letter there are compared (the patterns are chained by first letter
 * for the call), instead of one memmem() over the whole user agent per pattern — every scan
 * runs this over some forty patterns.
 */
bool rules_bot_ua(const char *user_agent)
{
    char lower[1024];
    unsigned char head[256], next[BOT_PATTERNS];
    size_t nlen[BOT_PATTERNS];

    if (user_agent == NULL)
        return true;
    size_t len = strlen(user_agent);
    if (strspn(user_agent, " \t\r\n\v\f") == len)
        return true;
    /* Longer user agents are judged on their first 1 KiB; real ones are far shorter. */
    if (len > sizeof(lower))
        len = sizeof(lower);
    for (size_t i = 0; i < len; i++)
        lower[i] = ascii_lower(user_agent[i]);
    memset(head, 255, sizeof(head));
    for (size_t k = BOT_PATTERNS; k-- > 0;) {
        unsigned char c = (unsigned char)bot_patterns[k].needle[0];
        nlen[k] = strlen(bot_patterns[k].needle);
        next[k] = head[c];
        head[c] = (unsigned char)k;
    }
    for (size_t i = 0; i < len; i++) {
        for (unsigned k = head[(unsigned char)lower[i]]; k != 255; k = next[k]) {
            const struct bot_pattern *p = &bot_patterns[k];
            if (i + nlen[k] <= len && memcmp(lower + i, p->needle, nlen[k]) == 0 &&
                !inside_innocent(lower, len, i, p))
                return true;
        }
    }
    return false;
}

/*
 * impossible_travel, for a scan that has both locations: the speed between them is over
 * travel_max_kmh, the distance at least travel_min_km, and the previous scan at most
 * travel_window_s before this one. Two scans at the same instant that far apart are
 * impossible at any speed.
 */
static bool travel_impossible(const struct rules_config *cfg, const struct rules_input *in)
{
    int64_t elapsed_ms;

    if (!rules_location_valid(in->lat, in->lon) ||
        !rules_location_valid(in->prev_lat, in->prev_lon))
        return false;
    /* Times from state are not trusted to be sane; an overflow means one of them is not. */
    if (__builtin_sub_overflow(in->now_ms, in->prev_ms, &elapsed_ms))
        return false;
    if (elapsed_ms < 0) {
        if (elapsed_ms < -(int64_t)cfg->clock_skew_ms)
            return false;
        elapsed_ms = 0;
    }
    if (elapsed_ms > (int64_t)cfg->travel_window_s * 1000)
        return false;

    double km = rules_distance_km(in->prev_lat, in->prev_lon, in->lat, in->lon);
    if (!(km >= cfg->travel_min_km))
        return false;
    if (elapsed_ms == 0)
        return true;
    double kmh = km / ((double)elapsed_ms / MS_PER_HOUR);
    return kmh > cfg->travel_max_kmh;
}

void rules_evaluate(const struct rules_config *cfg, const struct rules_input *in,
                    struct rules_result *out)
{
    unsigned fired = 0, stateful = 0;

    assert(rules_config_validate(cfg, NULL) == 0);

    if (rules_bot_ua(in->user_agent))
        fired |= RULES_REASON_BOT_UA;
    if (in->tag_found && in->batch_revoked)
        fired |= RULES_REASON_REVOKED;

    /* The tag rules need a tag; enumeration is about the client and runs for any scan. */
    stateful = RULES_REASON_ENUMERATION;
    if (in->tag_found)
        stateful |=
            RULES_REASON_VELOCITY | RULES_REASON_IMPOSSIBLE_TRAVEL | RULES_REASON_CLONE_SPREAD;

    if (in->state_available) {
        if (in->client_unknown_in_window > cfg->enum_max_unknown)
            fired |= RULES_REASON_ENUMERATION;
        if (in->tag_found) {
            if (in->scans_in_window > cfg->velocity_max)
                fired |= RULES_REASON_VELOCITY;
            if (in->distinct_clients > cfg->clone_max_clients)
                fired |= RULES_REASON_CLONE_SPREAD;
            if (!in->repeat && in->has_location && in->has_prev_location &&
                travel_impossible(cfg, in))
                fired |= RULES_REASON_IMPOSSIBLE_TRAVEL;
        }
    }

    unsigned score = 0;
    for (unsigned it = fired, bit; (bit = rules_reason_next(&it)) != 0;)
        score += weight_of(cfg, bit);
    if (score > RULES_MAX_SCORE)
        score = RULES_MAX_SCORE;

    out->score = (int)score;
    out->reasons = fired;
    out->degraded = !in->state_available;
    out->skipped = in->state_available ? 0 : stateful;
    if (!in->tag_found)
        out->verdict = RULES_VERDICT_UNKNOWN;
    else if (fired & RULES_REASON_REVOKED)
        out->verdict = RULES_VERDICT_REVOKED;
    else if (out->score >= RULES_SUSPICIOUS_SCORE)
        out->verdict = RULES_VERDICT_SUSPICIOUS;
    else
        out->verdict = RULES_VERDICT_AUTHENTIC;
}

unsigned rules_reason_next(unsigned *reasons)
{
    unsigned left = *reasons & RULES_REASON_ALL;
    unsigned bit = left & -left; /* the lowest set bit, 0 when none is left */

    *reasons = left & ~bit;
    return bit;
}

const char *rules_reason_name(unsigned reason)
{
    for (unsigned i = 0; i < RULES_REASON_COUNT; i++) {
        if (reason == 1u << i)
            return reason_names[i];
    }
    return NULL;
}

const char *rules_verdict_name(enum rules_verdict verdict)
{
    switch (verdict) {
    case RULES_VERDICT_AUTHENTIC:
        return "authentic";
    case RULES_VERDICT_SUSPICIOUS:
        return "suspicious";
    case RULES_VERDICT_REVOKED:
        return "revoked";
    case RULES_VERDICT_UNKNOWN:
        return "unknown";
    }
    return NULL;
}
