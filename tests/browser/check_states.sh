#!/usr/bin/env bash
# check_states.sh: renders the five states of the scan page (scan/page.c) in headless Chromium
# and checks the words a consumer actually sees on each.
#
#   tests/browser/check_states.sh TEST_PAGE_BINARY [SCREENSHOT_DIR]
#
#   TEST_PAGE_BINARY  the unit test build/tests/test_page, which writes the demo pages when
#                     TAGPROOF_PAGE_DUMP_DIR is set
#   SCREENSHOT_DIR    where to copy scan-<state>.png (docs/screenshots to refresh the committed
#                     ones); without it the screenshots stay in a temporary directory
#
# Exit status 0 when every state shows its sentences, 1 otherwise, 2 on wrong usage.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 1 && $# -le 2 && -x $1 ]] || {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
    exit 2
}
binary=$1
shots=${2:-}
if [[ -n $shots ]]; then
    mkdir -p "$shots"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/check_states.XXXXXX")
trap 'rm -rf "$work"' EXIT
TAGPROOF_PAGE_DUMP_DIR=$work "$binary" >"$work/test_page.log" 2>&1 || {
    cat "$work/test_page.log" >&2
    exit 1
}

failures=0
# expect STATE "line that must appear" ... ; a leading ! means the text must not appear.
expect() {
    local state=$1 want
    shift
    for want in "$@"; do
        if [[ $want == '!'* ]]; then
            if grep -qiF -- "${want#!}" "$work/scan-$state.txt"; then
                echo "FAIL $state: shows \"${want#!}\"" >&2
                failures=$((failures + 1))
            fi
        elif ! grep -qxF -- "$want" "$work/scan-$state.txt"; then
            echo "FAIL $state: no line \"$want\"" >&2
            failures=$((failures + 1))
        fi
    done
}

for state in authentic suspicious revoked unknown unavailable; do
    if ! "$here/render.sh" "$work/scan-$state.html" "$work/scan-$state"; then
        echo "FAIL $state: could not render" >&2
        failures=$((failures + 1))
        continue
    fi
    case $state in
    authentic)
        expect "$state" "Genuine product" "This code was registered by the manufacturer." \
            "Aurora Trail Running Shoe" "B-2026-11-0042" "Northwind Footwear, Porto" \
            "22 Nov 2026, 10:00 UTC" "Sealed in the public log" '!counterfeit' '!recalled'
        ;;
    suspicious)
        expect "$state" "Possible counterfeit" \
            "This code was scanned in places too far apart to travel between." \
            "Buy only from authorised sellers." "Aurora Trail Running Shoe" '!Genuine product' \
            '!impossible_travel'
        ;;
    revoked)
        expect "$state" "Recalled product" "This batch was recalled by the manufacturer." \
            "Don't use or sell this product." "B-2026-11-0042" '!Genuine product'
        ;;
    unknown)
        expect "$state" "This code is not registered" \
            "No manufacturer has registered this code with us. The product may be counterfeit." \
            '!Aurora' '!Genuine product'
        ;;
    unavailable)
        expect "$state" "Temporarily unavailable" \
            "We can't check this code right now. Please try again in a minute." "Try again" \
            '!Genuine' '!counterfeit' '!not registered' '!recalled' '!Aurora'
        ;;
    esac
    # Markup that reached the screen as text would mean a value or a tag was mangled.
    expect "$state" '!<' '!&amp;'
    if [[ -n $shots ]]; then
        cp "$work/scan-$state.png" "$shots/scan-$state.png"
    fi
    echo "ok   $state"
done

if ((failures > 0)); then
    echo "check_states.sh: $failures failure(s)" >&2
    exit 1
fi
