# stack.sh — functions scripts/run, scripts/test and scripts/dr share to start and stop the
# local stack: PostgreSQL (through pgcluster), Redis, and the Tagproof programs.
# Source it; it defines functions only.

stack_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

stack_die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# True when something listens on 127.0.0.1:PORT (or any address on that port).
stack_port_busy() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# A TCP port nothing listens on, from the ephemeral range.
stack_free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below the kernel's ephemeral range (32768+), where outgoing connections take ports.
    p=$((20000 + RANDOM % 12000))
    stack_port_busy "$p" || { echo "$p"; return 0; }
  done
  stack_die "no free port found"
}

# A random secret of 32 hex characters.
stack_secret() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# stack_uuids N — N random (version 4) UUIDs, lower case, one a line. perl (always present on
# Debian) turns /dev/urandom into a million of them in about a second, where a loop over
# /proc/sys/kernel/random/uuid takes minutes.
stack_uuids() {
  perl -e '
    my $n = shift;
    open(my $r, "<:raw", "/dev/urandom") or die "/dev/urandom: $!\n";
    while ($n > 0) {
      my $k = $n > 65536 ? 65536 : $n;
      read($r, my $buf, 16 * $k) == 16 * $k or die "short read from /dev/urandom\n";
      my $out = "";
      for my $h (unpack("(H32)*", $buf)) {
        substr($h, 12, 1, "4");
        substr($h, 16, 1, (qw(8 9 a b))[hex(substr($h, 16, 1)) & 3]);
        $out .= join("-", substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
                     substr($h, 16, 4), substr($h, 20)) . "\n";
      }
      print $out;
      $n -= $k;
    }' "$1"
}

# stack_pid_alive FILE — the pid in FILE runs, and is the program the file is named after
# (tagproof-scan.pid, redis.pid): after a reboot a stale file may name an unrelated process.
stack_pid_alive() {
  local f=$1 pid name comm
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  name=$(basename "$f" .pid)
  [ "$name" = redis ] && name=redis-server
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "${name:0:15}" ]
}

# stack_stop_pid FILE [SECONDS] — SIGTERM, wait, then SIGKILL; removes the pid file.
stack_stop_pid() {
  local f=$1 wait=${2:-15} pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if stack_pid_alive "$f"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((wait * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# stack_wait SECONDS COMMAND... — until the command succeeds (every 0.2 s); 1 if it never does.
stack_wait() {
  local secs=$1
  shift
  for _ in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# stack_wait_http URL SECONDS — until the URL answers 2xx.
stack_wait_http() {
  local url=$1 secs=${2:-30}
  for _ in $(seq 1 $((secs * 10))); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# stack_redis_start DIR PORT [EXTRA ARGS...] — a redis-server with its data in DIR.
stack_redis_start() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  if stack_pid_alive "$dir/redis.pid"; then return 0; fi
  stack_port_busy "$port" && stack_die "port $port (Redis) is already in use by another process"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --appendonly yes \
    --appendfsync everysec --save "" --protected-mode no "$@" >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  stack_die "Redis did not start on port $port (see $dir/redis.log)"
}

stack_redis_stop() {
  local dir=$1
  stack_stop_pid "$dir/redis.pid" 10
}

# stack_pg_start DIR PORT OWNER_PASSWORD — creates the cluster on first use, starts it.
stack_pg_start() {
  local dir=$1 port=$2 pw=$3
  mkdir -p "$dir"
  if "$stack_root/scripts/lib/pgcluster" status "$dir" "$port" 2>/dev/null; then return 0; fi
  stack_port_busy "$port" && stack_die "port $port (PostgreSQL) is already in use by another process"
  if [ ! -f "$dir/.initialized" ]; then
    PGCLUSTER_PASSWORD=$pw "$stack_root/scripts/lib/pgcluster" init "$dir" "$port" ||
      stack_die "PostgreSQL cluster creation failed (see $dir/postgresql.log)"
  else
    "$stack_root/scripts/lib/pgcluster" start "$dir" "$port" ||
      stack_die "PostgreSQL did not start (see $dir/postgresql.log)"
  fi
}

stack_pg_stop() {
  local dir=$1 port=$2
  [ -d "$dir/data" ] && "$stack_root/scripts/lib/pgcluster" stop "$dir" "$port"
  return 0
}

# stack_pg_migrate BIN_DIR OWNER_URL — applies the migrations as the schema owner.
stack_pg_migrate() {
  TAGPROOF_PG_MIGRATE_URL=$2 "$1/tagproof" migrate
}

# stack_pg_service_role DIR PORT PASSWORD — the services' login role: a member of
# tagproof_app (created by the first migration), owner of nothing, no BYPASSRLS.
stack_pg_service_role() {
  # The password travels on standard input, never on a command line others can read.
  {
    printf "\\set pw '%s'\n" "$3"
    cat <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tagproof_svc') AS missing \gset
\if :missing
CREATE ROLE tagproof_svc LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
\endif
ALTER ROLE tagproof_svc PASSWORD :'pw';
GRANT tagproof_app TO tagproof_svc;
SQL
  } | PGCLUSTER_DB=tagproof "$stack_root/scripts/lib/pgcluster" psql "$1" "$2"
}

# stack_program_start NAME BIN_DIR RUN_DIR LOG_DIR — starts build/bin/NAME in the background
# with the current environment; its JSON log goes to LOG_DIR/NAME.log.
stack_program_start() {
  local name=$1 bin=$2 run=$3 logs=$4
  mkdir -p "$run" "$logs"
  if stack_pid_alive "$run/$name.pid"; then return 0; fi
  nohup "$bin/$name" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

# stack_listen_port HOST:PORT — the port part.
stack_listen_port() {
  echo "${1##*:}"
}

# stack_redis_sentinel_start DIR PORT MASTER_NAME MASTER_PORT QUORUM [DOWN_AFTER_MS] — a Redis
# Sentinel watching MASTER_NAME at 127.0.0.1:MASTER_PORT. It runs as redis-server --sentinel,
# so its pid file is DIR/redis.pid like a server's and stack_redis_stop stops it. Sentinel
# rewrites its configuration file, which lives in DIR.
stack_redis_sentinel_start() {
  local dir=$1 port=$2 name=$3 master_port=$4 quorum=$5 down_after=${6:-1000}
  mkdir -p "$dir"
  if stack_pid_alive "$dir/redis.pid"; then return 0; fi
  stack_port_busy "$port" && stack_die "port $port (Redis Sentinel) is already in use by another process"
  cat >"$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
pidfile $dir/redis.pid
logfile $dir/redis.log
daemonize yes
protected-mode no
sentinel resolve-hostnames no
sentinel monitor $name 127.0.0.1 $master_port $quorum
sentinel down-after-milliseconds $name $down_after
sentinel failover-timeout $name $((down_after * 4))
sentinel parallel-syncs $name 1
CONF
  # Its log (the drills read its events there) in UTC.
  TZ=UTC redis-server "$dir/sentinel.conf" --sentinel >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  stack_die "Redis Sentinel did not start on port $port (see $dir/redis.log)"
}
