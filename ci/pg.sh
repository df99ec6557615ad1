#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests, demos and benchmarks.
#
#   ci/pg.sh start DIR PORT   create the cluster in DIR if absent, start it on 127.0.0.1:PORT and a
#                             unix socket in DIR, wait until it accepts connections, create
#                             database "iotpipe" (no-op if it is already running)
#   ci/pg.sh stop DIR         fast shutdown (no-op if not running)
#   ci/pg.sh kill DIR         kill -9 the postmaster (fault tests); waits until its children are gone
#   ci/pg.sh url DIR [PORT]   print a libpq conninfo for database iotpipe
#   ci/pg.sh status DIR       exit 0 if running
#
# Trust auth, superuser "postgres", fsync on (durability is under test). Postgres refuses to run
# as root, so as root the cluster runs as the "postgres" system user: DIR is chowned to it and
# its ancestors get the traverse bit (o+x) where they lack it (pytest's tmp dirs are 0700).
# If DIR is too long for a unix socket path, the socket goes to /tmp/iotpipe-pg-PORT instead.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGUSER_OS=${IOTPIPE_PG_OSUSER:-postgres}
DB=iotpipe
START_TIMEOUT=${IOTPIPE_PG_TIMEOUT:-60}

die() { echo "ci/pg.sh: $*" >&2; exit 1; }
usage() { die "usage: ci/pg.sh start DIR PORT | stop DIR | kill DIR | url DIR [PORT] | status DIR"; }

[ $# -ge 2 ] || usage
cmd=$1
DIR=$(realpath -m -- "$2")
PORT=${3:-}
[ -x "$PGBIN/postgres" ] || die "$PGBIN/postgres not found (run ci/setup.sh)"
cd /   # the postgres user may not be able to enter the caller's working directory

# Runs a command as the cluster's owner.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

port_of() {
  if [ -n "$PORT" ]; then echo "$PORT"
  elif [ -s "$DIR/iotpipe.port" ]; then cat "$DIR/iotpipe.port"
  else die "no PORT given and $DIR/iotpipe.port absent"; fi
}

# Unix socket paths are limited to 107 bytes: keep the socket in DIR when it fits.
sockdir_of() {
  local port=$1
  if [ $(( ${#DIR} + ${#port} + 10 )) -le 100 ]; then echo "$DIR"; else echo "/tmp/iotpipe-pg-$port"; fi
}

running() { as_pg "$PGBIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }

show_log() {
  [ -f "$DIR/postgres.log" ] && tail -n 30 "$DIR/postgres.log" >&2
  return 0
}

grant_traverse() {
  local d
  d=$(dirname -- "$DIR")
  while [ "$d" != / ]; do
    if ! runuser -u "$PGUSER_OS" -- test -x "$d" 2>/dev/null; then chmod o+x "$d"; fi
    d=$(dirname -- "$d")
  done
}

do_init() {
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id "$PGUSER_OS" >/dev/null 2>&1 || die "no '$PGUSER_OS' user (install postgresql-15)"
    grant_traverse
    chown "$PGUSER_OS": "$DIR"
  fi
  chmod 700 "$DIR"
  # --no-sync only skips flushing initdb's own files; the server runs with fsync on.
  local out
  out=$(as_pg "$PGBIN/initdb" -D "$DIR" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync 2>&1) \
    || { echo "$out" >&2; die "initdb failed in $DIR"; }
  cat >>"$DIR/postgresql.conf" <<'EOF'

# --- ci/pg.sh: throwaway cluster; port and socket directory come from the command line ---
listen_addresses = '127.0.0.1'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 100
logging_collector = off
log_min_messages = warning
EOF
}

do_start() {
  [ -n "$PORT" ] || usage
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port '$PORT'"
  local sock
  sock=$(sockdir_of "$PORT")
  [ -f "$DIR/PG_VERSION" ] || do_init
  if [ "$(id -u)" -eq 0 ]; then grant_traverse; fi
  echo "$PORT" >"$DIR/iotpipe.port"
  if ! running; then
    if [ "$sock" != "$DIR" ]; then
      mkdir -p "$sock"
      if [ "$(id -u)" -eq 0 ]; then chown "$PGUSER_OS": "$sock"; fi
    fi
    # pg_ctl detaches the postmaster (own session, stdio to the log), so callers that capture
    # our output (pytest's subprocess.run) are not held open by it.
    as_pg "$PGBIN/pg_ctl" -D "$DIR" -l "$DIR/postgres.log" -s -w -t "$START_TIMEOUT" \
      -o "-p $PORT -k $sock" start >/dev/null 2>&1 \
      || { show_log; die "postgres did not start in $DIR on port $PORT (log: $DIR/postgres.log)"; }
  fi
  local deadline=$(( SECONDS + START_TIMEOUT ))
  until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; do
    if (( SECONDS >= deadline )); then show_log; die "postgres on port $PORT not ready after ${START_TIMEOUT}s"; fi
    sleep 0.2
  done
  local have
  have=$("$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'") || die "psql failed on port $PORT"
  if [ "$have" != 1 ]; then
    "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE $DB" >/dev/null \
      || die "could not create database $DB"
  fi
}

do_stop() {
  [ -f "$DIR/PG_VERSION" ] || return 0
  running || return 0
  as_pg "$PGBIN/pg_ctl" -D "$DIR" -s -w -t 60 -m fast stop >/dev/null 2>&1 \
    || { show_log; die "postgres in $DIR did not stop"; }
  if [ -s "$DIR/iotpipe.port" ]; then
    local sock
    sock=$(sockdir_of "$(cat "$DIR/iotpipe.port")")
    if [ "$sock" != "$DIR" ]; then rmdir "$sock" 2>/dev/null || true; fi
  fi
}

do_kill() {
  [ -s "$DIR/postmaster.pid" ] || return 0
  local pid kids
  pid=$(head -n1 "$DIR/postmaster.pid")
  # Only a live postgres whose data directory is DIR: the pid file may be stale after a crash.
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres \
    && [ "$(realpath -m "$(sed -n 2p "$DIR/postmaster.pid")")" = "$DIR" ] || return 0
  kids=$(pgrep -P "$pid" || true)
  kill -9 "$pid" 2>/dev/null || true
  # Children exit by themselves on postmaster death; a new postmaster refuses to start while
  # they hold the old shared memory, so wait for them (and kill -9 stragglers in a long query).
  local deadline=$(( SECONDS + 10 )) k alive
  while :; do
    alive=
    for k in $pid $kids; do kill -0 "$k" 2>/dev/null && alive+=" $k"; done
    [ -z "$alive" ] && break
    if (( SECONDS >= deadline )); then
      # shellcheck disable=SC2086
      kill -9 $alive 2>/dev/null || true
    fi
    sleep 0.05
  done
}

do_url() {
  local port
  port=$(port_of)
  echo "host=127.0.0.1 port=$port user=postgres dbname=$DB"
}

case "$cmd" in
  start)  do_start ;;
  stop)   do_stop ;;
  kill)   do_kill ;;
  url)    do_url ;;
  status) running ;;
  *)      usage ;;
esac
