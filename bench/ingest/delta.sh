#!/usr/bin/env bash
# Delta freshness: a list of the given size (default 1G, about 30M keys) is
# ingested by a coordinator, 2 workers and a match server (separate
# processes, release build); then a delta of LINES lines (default 10,000:
# half adds of new hashes, half removes of members) is dropped into the
# lake, and the time from the drop to the match server answering for an
# added hash is measured, ROUNDS times (each delta on top of the last).
#
#   bash bench/ingest/delta.sh 1G
#
# Prints, per delta: drop → served (what a caller sees: the scan finding the
# file, parse, publish), submit → live (the catalog's own timestamps), and
# the bytes the workers read meanwhile (rchar: the base is never re-read, so
# this is about the delta's size, not the list's). SCAN=seconds sets the
# coordinator's --scan-interval (default 0.2), SETTLE its --settle-time
# (default 0: the bench renames each delta into place, as the lake's rules
# ask, so a scan may take it at once; the coordinator's default is 1s).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/roster-delta-bench}
SIZE=${1:-1G}
LINES=${LINES:-10000}
ROUNDS=${ROUNDS:-3}
SCAN=${SCAN:-0.2}
SETTLE=${SETTLE:-0}
mkdir -p "$WORK"
gcc -O2 -o "$WORK/genlist" bench/ingest/genlist.c
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
case "$SIZE" in
  *K) BYTES=$(( ${SIZE%K} * 1000 ));; *M) BYTES=$(( ${SIZE%M} * 1000000 ));; *G) BYTES=$(( ${SIZE%G} * 1000000000 ));; *) BYTES=$SIZE;;
esac
rchar() { awk '/^rchar/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
now_ms() { date +%s%3N; }
field() { python3 -c "import json,sys; f=[x for x in json.load(sys.stdin)['files'] if x['version']=='$1']; print(f[0].get('$2', '') if f else '')"; }

DATA="$WORK/data"
rm -rf "$DATA"; mkdir -p "$DATA/lake/big"
"$WORK/genlist" "$BYTES" 42 > "$DATA/lake/big/.list.tmp"
mv "$DATA/lake/big/.list.tmp" "$DATA/lake/big/list.txt"
ACTUAL=$(stat -c %s "$DATA/lake/big/list.txt")

"$BIN" match-server --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --log-level warning > "$WORK/match.out" 2>&1 &
MATCH_PID=$!
until grep -q "listening on" "$WORK/match.out"; do sleep 0.05; done
MATCH=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/match.out")
"$BIN" coordinator --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --match "$MATCH" --scan-interval "$SCAN" --settle-time "$SETTLE" \
  --log-level warning > "$WORK/coord.out" 2>&1 &
COORD_PID=$!
until grep -q "listening on" "$WORK/coord.out"; do sleep 0.05; done
COORD=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/coord.out")
"$BIN" worker --data "$DATA" --coordinator "$COORD" --id w1 --log-level warning > "$WORK/w1.out" 2>&1 &
W1=$!
"$BIN" worker --data "$DATA" --coordinator "$COORD" --id w2 --log-level warning > "$WORK/w2.out" 2>&1 &
W2=$!
trap 'kill -INT $W1 $W2 $COORD_PID $MATCH_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT

# The base: wait until it is live.
START=$(now_ms)
until "$BIN" match --match "$MATCH" --advertiser big --hash "$(head -1 "$DATA/lake/big/list.txt")" >/dev/null 2>&1; do sleep 0.2; done
FILES=$("$BIN" call --coordinator "$COORD" IngestAdmin.ListFiles '{"advertiserId": "big"}')
BASE=$(echo "$FILES" | python3 -c "import json,sys; print(json.load(sys.stdin)['files'][0]['version'])")
KEYS=$(echo "$FILES" | field "$BASE" distinctKeys)
echo "base: $ACTUAL bytes, $KEYS keys, live $(( ($(now_ms) - START) / 1000 )) s after it was found"
printf "%-6s %8s %16s %16s %18s %14s\n" delta lines "drop→served ms" "submit→live ms" "workers read MB" "keys"

for ROUND in $(seq 1 "$ROUNDS"); do
  # Half new hashes, half members of the base (spread through it), as +/- lines.
  "$WORK/genlist" $(( LINES / 2 * 33 )) $(( 1000 + ROUND )) | sed 's/^/+/' > "$WORK/adds"
  awk -v n=$(( LINES / 2 )) -v total=$(( ACTUAL / 33 )) -v r="$ROUND" \
    'BEGIN { step = int(total / n) } (NR + r) % step == 0 && c < n { print "-" $0; c++ }' "$DATA/lake/big/list.txt" > "$WORK/removes"
  cat "$WORK/adds" "$WORK/removes" > "$DATA/lake/big/.delta.tmp"
  ADDED=$(head -1 "$WORK/adds" | cut -c2-)
  REMOVED=$(head -1 "$WORK/removes" | cut -c2-)
  READ0=$(( $(rchar $W1) + $(rchar $W2) ))
  DROP=$(now_ms)
  mv "$DATA/lake/big/.delta.tmp" "$DATA/lake/big/change-$ROUND.delta"
  until "$BIN" match --match "$MATCH" --advertiser big --hash "$ADDED" >/dev/null 2>&1; do :; done
  SERVED=$(now_ms)
  if "$BIN" match --match "$MATCH" --advertiser big --hash "$REMOVED" >/dev/null 2>&1; then echo "a removed hash is still a member"; exit 1; fi
  READ=$(( $(rchar $W1) + $(rchar $W2) - READ0 ))
  FILES=$("$BIN" call --coordinator "$COORD" IngestAdmin.ListFiles '{"advertiserId": "big"}')
  ID=$(echo "$FILES" | python3 -c "import json,sys; print([f for f in json.load(sys.stdin)['files'] if f['path'] == 'big/change-$ROUND.delta' and f.get('kind') == 'VERSION_KIND_DELTA'][0]['version'])")
  SUB=$(echo "$FILES" | field "$ID" submittedAtMs); LIVE=$(echo "$FILES" | field "$ID" liveAtMs)
  printf "%-6s %8s %16s %16s %18s %14s\n" "$ROUND" "$LINES" $(( SERVED - DROP )) $(( LIVE - SUB )) \
    "$(python3 -c "print(round($READ / 1e6, 2))")" "$(echo "$FILES" | field "$ID" distinctKeys)"
done
# Compactions the coordinator queued (past --max-overlays deltas or 10% of
# the base's keys): from the segments alone, in the background.
sleep "${WAIT_COMPACTION:-1}"
"$BIN" call --coordinator "$COORD" IngestAdmin.ListFiles '{"advertiserId": "big"}' | python3 -c "
import json, sys
for f in json.load(sys.stdin)['files']:
    if f.get('kind') == 'VERSION_KIND_COMPACTION':
        live = int(f.get('liveAtMs', 0)); sub = int(f['submittedAtMs'])
        print('compaction: version %s of %s keys, %s' % (f['version'], f['distinctKeys'], ('live %d ms after it was queued' % (live - sub)) if live else f['state']))"
echo "overlays served: $(( ROUNDS )); scan interval ${SCAN}s, settle time ${SETTLE}s; list file $ACTUAL bytes"
