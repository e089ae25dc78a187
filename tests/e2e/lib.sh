# lib.sh — helpers for the end-to-end tests: start the real programs against the test stack
# that scripts/test started (TAGPROOF_TEST_*), and check what they answer. Source it.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib/stack.sh"

: "${TAGPROOF_TEST_BIN_DIR:?run the end-to-end tests through scripts/test}"
bin=$TAGPROOF_TEST_BIN_DIR
work=$(mktemp -d "${TMPDIR:-/tmp}/e2e.XXXXXX")
chmod 755 "$work"
pids=()
failures=0
checks=0

e2e_cleanup() {
  [ -n "${E2E_KEEP:-}" ] && return 0
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap e2e_cleanup EXIT

ok() {
  checks=$((checks + 1))
  echo "ok - $*"
}

not_ok() {
  checks=$((checks + 1))
  failures=$((failures + 1))
  echo "not ok - $*"
}

# check DESCRIPTION COMMAND... — passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@" >/dev/null; then ok "$what"; else not_ok "$what"; fi
}

# wait_for SECONDS COMMAND... — until the command succeeds; 1 if it never does.
wait_for() { stack_wait "$@"; }

# ganache_install — ganache 7.9.2, pinned in tests/ganache, installed there once (tests running
# side by side wait for one another's npm ci); its command line in $ganache_cli. A test that
# cannot have it fails with a not-ok line.
ganache_install() {
  local dir=$stack_root/tests/ganache
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "not ok - node and npm are needed (scripts/deps installs them)"
    exit 1
  }
  flock "$dir/package.json" bash -c \
    "test -f '$dir/node_modules/ganache/package.json' || (cd '$dir' && npm ci --no-audit --no-fund --loglevel=error >&2)" ||
    { echo "not ok - npm ci in tests/ganache failed"; exit 1; }
  ganache_cli=$dir/node_modules/ganache/dist/node/cli.js
}

# The environment every program gets: the test stack, and free ports for the listeners.
e2e_env() {
  export TAGPROOF_PG_URL=$TAGPROOF_TEST_PG_URL
  export TAGPROOF_REDIS_URL=$TAGPROOF_TEST_REDIS_URL
  export TAGPROOF_SCAN_LISTEN=127.0.0.1:$(stack_free_port)
  export TAGPROOF_FACTORY_LISTEN=127.0.0.1:$(stack_free_port)
  export TAGPROOF_ANCHOR_LISTEN=127.0.0.1:$(stack_free_port)
  export TAGPROOF_DEVLEDGER_LISTEN=127.0.0.1:$(stack_free_port)
  # An anchor a test starts anchors to this test's ledger, never to a default port.
  export TAGPROOF_LEDGER_URL=http://$TAGPROOF_DEVLEDGER_LISTEN
  export TAGPROOF_DATA_DIR=$work/data
  export TAGPROOF_HTTP_THREADS=2
}

# e2e_start NAME — starts a program in the background; its pid in $last_pid, log in $work.
e2e_start() {
  "$bin/$1" 2>"$work/$1.log" &
  last_pid=$!
  pids+=("$last_pid")
}

# e2e_wait_exit PID SECONDS — the exit code, or 124 if it still runs after SECONDS.
e2e_wait_exit() {
  local pid=$1 secs=$2
  for _ in $(seq 1 $((secs * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null && return 0 || return $?
    fi
    sleep 0.1
  done
  return 124
}

# e2e_stop NAME PID — SIGTERM, and checks the program exits 0 with no sanitizer report in its log.
e2e_stop() {
  local name=$1 pid=$2 rc=0
  kill -TERM "$pid" 2>/dev/null || true
  e2e_wait_exit "$pid" 20 || rc=$?
  check "$name stops cleanly on SIGTERM (exit $rc)" test "$rc" = 0
  check "$name's log has no sanitizer report" bash -c "! grep -q 'Sanitizer' '$work/$name.log'"
}

# e2e_done — prints the summary line ctest shows and exits non-zero on any failure.
e2e_done() {
  echo "$((checks - failures)) passed, $failures failed"
  [ "$failures" -eq 0 ]
}
