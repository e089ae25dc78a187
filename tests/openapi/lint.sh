#!/usr/bin/env bash
# docs/openapi.yaml against the OpenAPI 3.1 schema and Redocly's recommended rules
# (redocly.yaml), with the pinned @redocly/cli of tests/node. Any error or warning fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
redocly=$root/tests/node/node_modules/.bin/redocly
[ -x "$redocly" ] || { echo "lint: @redocly/cli is not installed: run scripts/deps --test" >&2; exit 1; }
# No usage report to Redocly and no update check: the tests run without the internet.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1
cd "$root"
"$redocly" lint docs/openapi.yaml --config redocly.yaml --max-problems 200 --format stylish
