#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster on loopback for the
# catalog tests: initdb in a temporary folder, trust authentication for the
# user `roster`, the database `roster_test`.
#
#   eval "$(bash scripts/postgres-test-server.sh start)"   # prints the export the tests read
#   bash scripts/postgres-test-server.sh stop
#
# Tests of outages use two more: `halt` stops the server (fast shutdown: every
# session is ended) and keeps its data; `resume` starts it again.
#
# Needs PostgreSQL's server binaries (Debian: postgresql). Run as root, the
# cluster belongs to the `postgres` user (initdb refuses root).
set -euo pipefail
DIR=${ROSTER_PG_DIR:-/tmp/roster-pg-test}
PORT=${ROSTER_PG_PORT:-15432}

BIN=""
for candidate in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" /usr/lib/postgresql/*/bin; do
  if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then BIN=$candidate; fi
done
[ -n "$BIN" ] || { echo "postgres-test-server: initdb not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_server() {
  # The server must not inherit this script's other descriptors: a caller
  # that waits for the script by its pipes or sockets (Foundation's Process
  # does) would otherwise wait for the server to exit too. (255 is bash's
  # own hold on this script.)
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
    || { tail -20 "$DIR/log" >&2; exit 1; }
}

case "${1:-}" in
start)
  rm -rf "$DIR" && mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  as_owner "$BIN/initdb" -D "$DIR/data" -U roster --auth=trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
  start_server
  as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U roster roster_test
  echo "export ROSTER_TEST_POSTGRES_URL=postgres://roster@127.0.0.1:$PORT/roster_test"
  ;;
halt)
  as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
  ;;
resume)
  start_server
  ;;
stop)
  if [ -d "$DIR/data" ]; then as_owner "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start|stop|halt|resume" >&2; exit 2;;
esac
