#!/usr/bin/env bash
# render.sh: shows one page to headless Chromium the way a phone would, and keeps what it saw:
# OUT_PREFIX.txt, the page's visible text (roughly document.body.innerText, one block a line),
# and OUT_PREFIX.png, a screenshot of the first screen at a phone's size.
#
#   tests/browser/render.sh URL_OR_FILE OUT_PREFIX
#
#   URL_OR_FILE   an http(s):// or file:// URL, or the path of a local HTML file
#   OUT_PREFIX    where the results go, e.g. /tmp/scan-authentic (its directory must exist)
#
# Environment: CHROMIUM (the browser, default chromium), RENDER_WINDOW (width,height in CSS
# pixels, default 390,844: a current mid-size phone), RENDER_TIMEOUT (seconds per browser run,
# default 30). Exit status 0 when both files were written, 1 when the page could not be loaded
# or rendered (Chromium's output is then shown), 2 on wrong usage.
set -euo pipefail

usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
    exit 2
}
[[ $# -eq 2 && -n $1 && -n $2 ]] || usage
target=$1
prefix=$2
window=${RENDER_WINDOW:-390,844}
limit=${RENDER_TIMEOUT:-30}
browser=${CHROMIUM:-chromium}

[[ $window =~ ^[0-9]+,[0-9]+$ ]] || { echo "render.sh: RENDER_WINDOW must be W,H" >&2; exit 2; }
[[ $limit =~ ^[0-9]+$ ]] || { echo "render.sh: RENDER_TIMEOUT must be seconds" >&2; exit 2; }
command -v "$browser" >/dev/null || {
    echo "render.sh: $browser not found (apt-get install -y chromium)" >&2
    exit 1
}
command -v perl >/dev/null || { echo "render.sh: perl not found" >&2; exit 1; }

case $target in
http://* | https://* | file://*) url=$target ;;
*)
    [[ -f $target ]] || { echo "render.sh: $target: no such file" >&2; exit 2; }
    url="file://$(realpath "$target")"
    ;;
esac
outdir=$(dirname -- "$prefix")
[[ -d $outdir ]] || { echo "render.sh: $outdir: no such directory" >&2; exit 2; }
prefix="$(realpath "$outdir")/$(basename -- "$prefix")"

work=$(mktemp -d "${TMPDIR:-/tmp}/render.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Each run gets a fresh profile. Without the background-networking flags Chromium phones home
# (updates, sync, field trials) at start, which slows every run and fails on closed networks.
# --no-sandbox because tests often run as root or in containers without user namespaces; it
# only ever opens our own pages.
chrome() {
    local profile
    profile=$(mktemp -d "$work/profile.XXXXXX")
    timeout -k 5 "$limit" "$browser" --headless --no-sandbox --disable-gpu --disable-quic \
        --no-first-run --no-default-browser-check --disable-background-networking \
        --disable-component-update --disable-sync --disable-default-apps \
        --disable-extensions --mute-audio --hide-scrollbars --force-device-scale-factor=1 \
        --user-data-dir="$profile" --window-size="$window" "$@" 2>>"$work/chromium.log"
}

fail() {
    echo "render.sh: $1 ($url)" >&2
    if [[ -s $work/chromium.log ]]; then
        # Without a session bus Chromium logs D-Bus complaints that say nothing about the page.
        echo "--- chromium output:" >&2
        grep -v -e ':dbus/' -e 'Fontconfig' "$work/chromium.log" | tail -n 20 >&2
    fi
    exit 1
}

chrome --dump-dom "$url" >"$work/dom.html" || fail "chromium --dump-dom failed or timed out"
[[ -s $work/dom.html ]] || fail "chromium printed no DOM"
# A page that did not load is replaced by Chromium's own error page; that is a failure here,
# whereas an HTTP error status with a body of its own (404, 503) is a page like any other.
if grep -q -e 'id="main-frame-error"' -e 'class="neterror' "$work/dom.html"; then
    fail "the page did not load: $(grep -o 'ERR_[A-Z_]*' "$work/dom.html" | head -n 1)"
fi

# The DOM as text: drop what is not shown, break lines at block elements, strip the remaining
# tags and decode the entities Chromium's serializer writes.
perl -0777 -CSD -pe '
    s/<(head|script|style|svg|template|noscript)\b.*?<\/\1\s*>//gis;
    s/<!--.*?-->//gs;
    s/\s+/ /g;
    s/<br\s*\/?>/\n/gi;
    s{</?(?:address|article|aside|blockquote|body|dd|div|dl|dt|fieldset|figcaption|figure|footer|form|h[1-6]|header|hr|html|li|main|nav|ol|p|pre|section|table|td|th|title|tr|ul)\b[^>]*>}{\n}gi;
    s/<[^>]*>//g;
    s/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&#39;/\x27/g; s/&nbsp;/\x{a0}/g;
    s/&#(\d+);/chr($1)/ge; s/&#x([0-9a-f]+);/chr(hex($1))/gie;
    s/&amp;/&/g;
    s/[ \t]*\n[ \t]*/\n/g; s/\n+/\n/g; s/\A\n//; s/\n?\z/\n/;
' "$work/dom.html" >"$work/text.txt" || fail "could not extract the text"
[[ -n $(tr -d '[:space:]' <"$work/text.txt") ]] || fail "the page shows no text"

chrome --screenshot="$work/shot.png" "$url" >/dev/null || fail "chromium --screenshot failed"
[[ $(head -c 8 "$work/shot.png" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
    fail "chromium wrote no PNG"

mv "$work/text.txt" "$prefix.txt"
mv "$work/shot.png" "$prefix.png"
