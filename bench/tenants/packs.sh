#!/usr/bin/env bash
# Maps per version: A advertisers, each with one list of S MB, merged in many
# small key ranges (--merge-bytes M), so that every version has hundreds of
# segments, as a 100 GB list has 2,048 at default settings. Reports the
# segments per version, the memory maps the match server holds once all are
# live (over its maps with nothing served), the ingest time and a restart.
#
#   bash bench/tenants/packs.sh                 # A=8 S=16 M=8192
#   ROSTER_BIN=/path/to/old/roster bash bench/tenants/packs.sh
#
# Release build; separate processes on loopback with OS-chosen ports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/roster-packs-bench}
A=${A:-8}
S=${S:-16}
M=${M:-8192}
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
# The operators' service: IngestAdmin, or Coordinator in a build from before
# the coordinator was split by audience (to compare one side by side).
ADMIN=IngestAdmin
"$BIN" call --list 2>/dev/null | grep -q "^ *IngestAdmin\." || ADMIN=Coordinator
trap 'kill -9 $(jobs -p) 2>/dev/null || true' EXIT

maps() { wc -l < "/proc/$1/maps" 2>/dev/null || echo 0; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
start_match() {
  "$BIN" match-server --no-auth --plaintext --data "$DATA" --listen "${1:-127.0.0.1:0}" --scrub-rate 0 --log-level warning > "$WORK/match.out" 2>&1 &
  MATCH_PID=$!
  until grep -q "listening on" "$WORK/match.out"; do sleep 0.02; done
  MATCH=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/match.out")
}
status() { "$BIN" call --coordinator "$COORD" "$ADMIN".Status '{"limit": 1}' 2>/dev/null || echo '{}'; }

DATA="$WORK/data"
rm -rf "$DATA"; mkdir -p "$DATA/lake"
python3 - "$DATA/lake" "$A" "$S" <<'PY'
import os, sys, random
lake, a, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(11)
lines = s * 1_000_000 // 33
for i in range(a):
    d = os.path.join(lake, f"big{i:03d}")
    os.mkdir(d)
    with open(os.path.join(d, "list.txt"), "w") as f:
        for _ in range(0, lines, 10_000):
            f.write("".join("%032x\n" % rng.getrandbits(128) for _ in range(10_000)))
    old = 1_600_000_000
    os.utime(os.path.join(d, "list.txt"), (old, old))
PY
sleep 1.2
start_match
BASE=$(maps $MATCH_PID)
T0=$(date +%s.%N)
"$BIN" coordinator --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --match "$MATCH" --merge-bytes "$M" --scan-interval 1 --log-level warning > "$WORK/coord.out" 2>&1 &
COORD_PID=$!
until grep -q "listening on" "$WORK/coord.out"; do sleep 0.02; done
COORD=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/coord.out")
"$BIN" worker --data "$DATA" --coordinator "$COORD" --id w1 --log-level warning > "$WORK/w1.out" 2>&1 & W1=$!
"$BIN" worker --data "$DATA" --coordinator "$COORD" --id w2 --log-level warning > "$WORK/w2.out" 2>&1 & W2=$!
DEADLINE=$(( $(date +%s) + ${TIMEOUT:-1800} ))
until [ "$(status | python3 -c "import json,sys; print(json.load(sys.stdin).get('filesByState', {}).get('live', 0))")" -ge "$A" ]; do
  if [ "$(date +%s)" -gt "$DEADLINE" ]; then echo "timed out"; status; break; fi
  sleep 0.5
done
T1=$(date +%s.%N)
SEGMENTS=$("$BIN" call --coordinator "$COORD" "$ADMIN".ListFiles '{"advertiserId": "big000"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['files'][0].get('mergesTotal', 0))")
NOW=$(maps $MATCH_PID)
kill -9 $MATCH_PID; wait $MATCH_PID 2>/dev/null || true
R0=$(date +%s.%N)
start_match "$MATCH"
LAST=$(printf "big%03d" $((A - 1)))
until "$BIN" match --match "$MATCH" --advertiser "$LAST" --hash 00000000000000000000000000000000 >/dev/null 2>&1 || [ $? -eq 3 ]; do sleep 0.02; done
R1=$(date +%s.%N)
AFTER=$(maps $MATCH_PID)
printf "%-12s %9s %9s %11s %11s %13s %9s %9s\n" advertisers list_MB segments seconds maps_added maps_restart restart_s match_cpu
printf "%-12s %9s %9s %11s %11s %13s %9s %9s\n" "$A" "$S" "$SEGMENTS" \
  "$(python3 -c "print(f'{$T1 - $T0:.1f}')")" "$((NOW - BASE))" "$((AFTER - BASE))" "$(python3 -c "print(f'{$R1 - $R0:.2f}')")" "$(cpu_s $MATCH_PID)"
kill -9 $COORD_PID $W1 $W2 $MATCH_PID 2>/dev/null || true
wait 2>/dev/null || true
