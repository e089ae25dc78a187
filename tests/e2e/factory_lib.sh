# factory_lib.sh — helpers for end-to-end tests of the factory API. Source it after lib.sh.
#
#   factory_up                 starts tagproof-factory (e2e_env first) and waits until ready;
#                              sets $factory_pid, $FACTORY_URL and $admin_key (a fresh admin
#                              key made with `tagproof admin-key` as the schema owner)
#   api METHOD PATH [ARGS...]  one request; the status in $status, the body in $work/body
#                              (and printed by `body`), response headers in $work/headers.
#                              ARGS go to curl (-H 'X-Api-Key: ...', --data-binary @file, ...).
#   body                       the last response body
#   jq_body FILTER             jq on the last body, raw output
#
#   api_direct METHOD PATH ... as api, straight to the service (see below)
#   as KEY METHOD PATH [JSON]  api with X-Api-Key: KEY (and JSON as an application/json body)
#   private_stack NAME [REDIS ARGS...]
#                              a database NAME and a Redis of the test's own (before e2e_env;
#                              the Redis without an append-only file unless ARGS say otherwise):
#                              TAGPROOF_TEST_PG_URL, ..._OWNER_URL and ..._REDIS_URL point at
#                              them, $redis_port and $redis_dir name the Redis; both go at exit
#   upload_tags FILE N KEY BATCH  N fresh tags as a CSV in FILE, through `tagproof upload`
#
# FACTORY_URL is where requests go; a test may point it at a proxy (prism) in front of the
# service, and $FACTORY_DIRECT_URL always names the service itself.
#
# With FACTORY_PRISM=1 (scripts/test sets it), factory_up starts a Prism proxy in front of
# the service and points FACTORY_URL at it: every `api` exchange is then checked against
# docs/openapi.yaml, and one that breaks the contract is a failed check that prints Prism's
# sl-violations (tests/openapi/prism_lib.sh explains the verdict). Requests that must reach
# the service as they are — malformed or duplicate-key JSON, BOMs, bodies over 10 MB, hostile
# tokens and other negative authentication tests, a lower-case "bearer", requests whose
# source address matters — use api_direct.

factory_up() {
  e2e_start tagproof-factory
  factory_pid=$last_pid
  FACTORY_DIRECT_URL="http://$TAGPROOF_FACTORY_LISTEN"
  FACTORY_URL=${FACTORY_URL:-$FACTORY_DIRECT_URL}
  for _ in $(seq 1 100); do
    curl -fs "$FACTORY_DIRECT_URL/v1/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  admin_key=$(TAGPROOF_PG_MIGRATE_URL=$TAGPROOF_TEST_PG_OWNER_URL "$bin/tagproof" admin-key e2e)
  # --- contract check (prism) ---
  if [ "${FACTORY_PRISM:-0}" = 1 ] && [ "$FACTORY_URL" = "$FACTORY_DIRECT_URL" ]; then
    . "$stack_root/tests/openapi/prism_lib.sh"
    prism_start "$FACTORY_DIRECT_URL" && FACTORY_URL=$prism_url
  fi
}

api() {
  local method=$1 path=$2
  shift 2
  status=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$method" \
    "$@" "$FACTORY_URL$path")
  # --- contract check (prism) ---
  if [ -n "${prism_url:-}" ] && [ "$FACTORY_URL" = "$prism_url" ]; then
    prism_verdict "$method $path" "$status" "$work/headers"
  fi
  return 0
}

api_direct() {
  local FACTORY_URL=$FACTORY_DIRECT_URL
  api "$@"
}

body() {
  cat "$work/body"
}

jq_body() {
  jq -r "$1" "$work/body"
}

# json_post PATH KEY JSON — POST a JSON body with an API key.
json_post() {
  api POST "$1" -H "X-Api-Key: $2" -H 'Content-Type: application/json' --data-binary "$3"
}

# factory_start LOGNAME — starts one more tagproof-factory with the current environment (give
# it its own TAGPROOF_FACTORY_LISTEN first) and its log in $work/LOGNAME.log, and waits until
# it is ready; its pid in $last_pid, its base URL in $last_url. 0, or 1 if it never got ready.
factory_start() {
  "$bin/tagproof-factory" 2>"$work/$1.log" &
  last_pid=$!
  pids+=("$last_pid")
  last_url="http://$TAGPROOF_FACTORY_LISTEN"
  for _ in $(seq 1 150); do
    curl -fs "$last_url/v1/ready" >/dev/null 2>&1 && return 0
    kill -0 "$last_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# b64url_decode SEGMENT — the bytes of one base64url segment of a token (no padding).
b64url_decode() {
  local s=${1//-/+}
  s=${s//_//}
  case $((${#s} % 4)) in
  2) s+='==' ;;
  3) s+='=' ;;
  esac
  printf '%s' "$s" | base64 -d
}

# jwt_part TOKEN N — the decoded JSON of a compact token's header (0) or payload (1).
jwt_part() {
  local IFS=.
  local -a seg
  read -r -a seg <<<"$1"
  b64url_decode "${seg[$2]}"
}

# node_deps — node and the pinned npm packages of tests/node (npm ci once if missing).
node_deps() {
  command -v node >/dev/null && command -v npm >/dev/null || return 1
  # Two tests may get here at once under ctest -j: the second waits for the first's npm ci.
  (
    cd "$stack_root/tests/node" && flock 9 &&
      { [ -f node_modules/jose/package.json ] || npm ci --no-audit --no-fund --loglevel=error >&2; }
  ) 9<"$stack_root/tests/node"
}

as() { # KEY METHOD PATH [JSON]
  local key=$1 method=$2 path=$3
  if [ $# -ge 4 ]; then
    api "$method" "$path" -H "X-Api-Key: $key" -H 'Content-Type: application/json' --data-binary "$4"
  else
    api "$method" "$path" -H "X-Api-Key: $key"
  fi
}

# private_stack NAME [REDIS ARGS...] — for tests that run tagproof-anchor (one Merkle log a
# database, and the anchor writes that log's state into its Redis) or stop their stores.
private_stack() {
  : "${TAGPROOF_TEST_PG_DIR:?run the end-to-end tests through scripts/test}"
  private_db=$1
  shift
  redis_dir="$work/redis"
  trap private_stack_cleanup EXIT
  local owner_user
  owner_user=$(sed -E 's#^[a-z]+://([^:@]+).*#\1#' <<<"$TAGPROOF_TEST_PG_OWNER_URL")
  echo "CREATE DATABASE $private_db OWNER $owner_user" | private_su_psql
  export TAGPROOF_TEST_PG_OWNER_URL="${TAGPROOF_TEST_PG_OWNER_URL%/*}/$private_db"
  export TAGPROOF_TEST_PG_URL="${TAGPROOF_TEST_PG_URL%/*}/$private_db"
  TAGPROOF_PG_MIGRATE_URL=$TAGPROOF_TEST_PG_OWNER_URL "$bin/tagproof" migrate >/dev/null
  redis_port=$(stack_free_port)
  [ $# -gt 0 ] || set -- --appendonly no
  stack_redis_start "$redis_dir" "$redis_port" "$@"
  export TAGPROOF_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
}
private_su_psql() {
  PGCLUSTER_DB=postgres "$stack_root/scripts/lib/pgcluster" psql \
    "$TAGPROOF_TEST_PG_DIR" "$TAGPROOF_TEST_PG_PORT" >/dev/null
}
private_stack_cleanup() {
  if [ -z "${E2E_KEEP:-}" ]; then
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    # A test may have frozen its Redis (SIGSTOP); it must be able to stop.
    [ -f "$redis_dir/redis.pid" ] && kill -CONT "$(cat "$redis_dir/redis.pid")" 2>/dev/null
    stack_redis_stop "$redis_dir"
    echo "DROP DATABASE IF EXISTS $private_db WITH (FORCE)" | private_su_psql || true
  fi
  e2e_cleanup
}

upload_tags() { # FILE N KEY BATCH
  { echo tag_id; for _ in $(seq 1 "$2"); do cat /proc/sys/kernel/random/uuid; done; } >"$1"
  TAGPROOF_API_KEY=$3 "$bin/tagproof" upload --batch "$4" "$1" >"$work/upload.out" 2>&1
}
