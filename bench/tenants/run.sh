#!/usr/bin/env bash
# Many advertisers: N advertisers with one 10 KB list each, dropped into the
# lake before the services start, ingested by a coordinator, 2 workers and a
# match server (separate processes, release build).
#
#   bash bench/tenants/run.sh 100 1000 10000
#
# Per N: seconds from the coordinator's start until every list is live,
# files/s, each process's CPU seconds, then the idle coordinator's CPU over
# IDLE seconds (default 10) of scanning the unchanged lake, the match
# server's maps and the size of its manifest, and how long a restart of the
# match server takes to serve again. ROSTER_BIN=path runs another build;
# SCAN=seconds sets the scan interval (default 2). Files are 10 KB each
# (300 hashes); everything runs on loopback with OS-chosen ports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/roster-tenants-bench}
mkdir -p "$WORK"
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
# The operators' service: IngestAdmin, or Coordinator in a build from before
# the coordinator was split by audience (to compare one side by side).
ADMIN=IngestAdmin
"$BIN" call --list 2>/dev/null | grep -q "^ *IngestAdmin\." || ADMIN=Coordinator
IDLE=${IDLE:-10}
SCAN=${SCAN:-2}

# Whatever happens, no service outlives the run.
trap 'kill -9 $(jobs -p) 2>/dev/null || true' EXIT

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
maps() { wc -l < "/proc/$1/maps" 2>/dev/null || echo 0; }
live_count() {
  "$BIN" call --coordinator "$COORD" "$ADMIN".Status '{"limit": 1}' 2>/dev/null \
    | python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('filesByState', {}).get('live', d.get('advertisersLive', 0)))" 2>/dev/null || echo 0
}
start_match() {
  "$BIN" match-server --no-auth --plaintext --data "$DATA" --listen "${1:-127.0.0.1:0}" --log-level warning > "$WORK/match.out" 2>&1 &
  MATCH_PID=$!
  until grep -q "listening on" "$WORK/match.out"; do sleep 0.02; done
  MATCH=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/match.out")
}

printf "%-7s %9s %8s %9s %9s %9s %9s %11s %7s %9s %10s\n" advertisers seconds files/s coord_cpu w_cpu match_cpu idle_cpu% manifest_KB maps restart_s served
for N in "$@"; do
  DATA="$WORK/data-$N"
  rm -rf "$DATA"; mkdir -p "$DATA/lake"
  python3 - "$DATA/lake" "$N" <<'PY'
import os, sys, random
lake, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(lake, f"adv{i:06d}")
    os.mkdir(d)
    with open(os.path.join(d, "list.txt"), "w") as f:
        f.write("".join("%032x\n" % rng.getrandbits(128) for _ in range(300)))
    old = 1_600_000_000  # settled long ago
    os.utime(os.path.join(d, "list.txt"), (old, old))
PY
  sleep 1.2  # the files' ctime must be older than the settle time
  start_match
  T0=$(date +%s.%N)
  "$BIN" coordinator --no-auth --plaintext --data "$DATA" --listen 127.0.0.1:0 --match "$MATCH" --scan-interval "$SCAN" --log-level warning > "$WORK/coord.out" 2>&1 &
  COORD_PID=$!
  until grep -q "listening on" "$WORK/coord.out"; do sleep 0.02; done
  COORD=$(sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$WORK/coord.out")
  "$BIN" worker --data "$DATA" --coordinator "$COORD" --id w1 --log-level warning > "$WORK/w1.out" 2>&1 & W1=$!
  "$BIN" worker --data "$DATA" --coordinator "$COORD" --id w2 --log-level warning > "$WORK/w2.out" 2>&1 & W2=$!
  DEADLINE=$(( $(date +%s) + ${TIMEOUT:-3600} ))
  while [ "$(live_count)" -lt "$N" ]; do
    if [ "$(date +%s)" -gt "$DEADLINE" ]; then echo "timed out with $(live_count) of $N live"; break; fi
    sleep 0.1
  done
  T1=$(date +%s.%N)
  SECS=$(python3 -c "print(f'{$T1 - $T0:.1f}')")
  RATE=$(python3 -c "print(f'{$N / ($T1 - $T0):.0f}')")
  CC=$(cpu_s $COORD_PID); WC=$(python3 -c "print(f'{$(cpu_s $W1) + $(cpu_s $W2):.2f}')"); MC=$(cpu_s $MATCH_PID)
  # Idle: nothing changes in the lake; the coordinator keeps scanning it.
  sleep 2
  C0=$(cpu_s $COORD_PID); sleep "$IDLE"; C1=$(cpu_s $COORD_PID)
  IDLEPCT=$(python3 -c "print(f'{100 * ($C1 - $C0) / $IDLE:.1f}')")
  MANIFEST=$({ du -sk "$DATA/store/match-manifest.json" "$DATA/store/match-manifest.log" 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
  MAPS=$(maps $MATCH_PID)
  # Restart the match server on the same port: time until the last advertiser answers.
  kill -9 $MATCH_PID; wait $MATCH_PID 2>/dev/null || true
  R0=$(date +%s.%N)
  start_match "$MATCH"
  LAST=$(printf "adv%06d" $((N - 1)))
  until "$BIN" match --match "$MATCH" --advertiser "$LAST" --hash 00000000000000000000000000000000 >/dev/null 2>&1 || [ $? -eq 3 ]; do sleep 0.02; done
  R1=$(date +%s.%N)
  RESTART=$(python3 -c "print(f'{$R1 - $R0:.2f}')")
  SERVED=$(sed -n 's/.*serving \([0-9]*\) advertisers.*/\1/p' "$WORK/match.out")
  printf "%-7s %9s %8s %9s %9s %9s %9s %11s %7s %9s %10s\n" "$N" "$SECS" "$RATE" "$CC" "$WC" "$MC" "$IDLEPCT" "$MANIFEST" "$MAPS" "$RESTART" "$SERVED"
  kill -9 $COORD_PID $W1 $W2 $MATCH_PID 2>/dev/null || true
  wait 2>/dev/null || true
done
