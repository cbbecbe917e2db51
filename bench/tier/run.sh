#!/usr/bin/env bash
# The serving tier on this machine (release build, separate processes on
# loopback): Match and MatchMany calls/s and p99 through `roster load --tier`
# against 1, 2 and 3 match servers, side by side in one run (they share two
# cores with the load generator, so read the ratios, not the absolutes);
# then the failover gap over KILLS kills (default 20): a checked load runs
# while one match server is killed, the window of failed calls (last failed
# call - first failed call) and wrong answers are recorded, and the server
# is started again.
#
#   bash bench/tier/run.sh                 # RATE=50000 asked (open loop), DURATION=10s, KILLS=20
#
# 100 advertisers, each the same list of MEMBERS (default 100,000) hashes.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${BENCH_DIR:-/tmp/roster-tier-bench}
RATE=${RATE:-50000}; DURATION=${DURATION:-10s}; KILLS=${KILLS:-20}; MEMBERS=${MEMBERS:-100000}
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/services.sh
make_members "$WORK" "$MEMBERS"


start_tier() { # $1 = nodes; sets COORD, NODE_PIDS
  local nodes=$1 data="$WORK/data-$1"
  rm -rf "$data"; mkdir -p "$data/lake"
  for i in $(seq 0 99); do mkdir -p "$data/lake/adv$i"; cp "$WORK/members.txt" "$data/lake/adv$i/members.txt"; done
  local replicas=$(( nodes < 2 ? nodes : 2 ))
  "$BIN" coordinator --no-auth --plaintext --data "$data" --listen 127.0.0.1:0 --replicas $replicas --node-heartbeat 0.5 --scan-interval 0.5 \
    --log-level warning > "$WORK/coord-$nodes.out" 2>&1 &
  PIDS+=($!); COORD_PID=$!
  wait_line "$WORK/coord-$nodes.out" "listening on"; COORD=$(addr "$WORK/coord-$nodes.out")
  "$BIN" worker --data "$data" --coordinator "$COORD" --slots 2 --log-level error > "$WORK/worker-$nodes.out" 2>&1 &
  PIDS+=($!); WORKER_PID=$!
  NODE_PIDS=()
  for i in $(seq 1 "$nodes"); do start_node "$nodes" "m$i"; done
  until "$BIN" status --coordinator "$COORD" 2>/dev/null | grep -q "^100 advertisers live"; do sleep 0.5; done
  kill -INT $WORKER_PID 2>/dev/null || true
}

start_node() { # $1 = tier size (data folder), $2 = node id
  "$BIN" match-server --no-auth --plaintext --data "$WORK/data-$1" --listen 127.0.0.1:0 --node-id "$2" --coordinator "$COORD" \
    --log-level warning > "$WORK/$2-$1.out" 2>&1 &
  PIDS+=($!); NODE_PIDS+=($!)
  eval "PID_$2=$!"
  wait_line "$WORK/$2-$1.out" "listening on"
}

stop_tier() { kill -INT $COORD_PID "${NODE_PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }


echo "# Match and MatchMany through the tier (roster load --tier, asked $RATE calls/s open loop for $DURATION; 100 advertisers)"
printf "%-6s %-18s %12s %10s %10s %8s\n" nodes call "calls/s" "p50 ms" "p99 ms" errors
for N in 1 2 3; do
  start_tier $N
  for CALL in Match "Match hedged" "MatchMany x100"; do
    BATCH=1; [ "$CALL" = "MatchMany x100" ] && BATCH=100
    HEDGE=(); [ "$CALL" = "Match hedged" ] && HEDGE=(--hedge 100ms)
    R=$RATE; [ $BATCH = 1 ] || R=$(( RATE / 10 ))
    OUT=$("$BIN" load --tier --coordinator "$COORD" --advertiser @"$WORK/advertisers.txt" --hashes "$WORK/members.txt" \
      --rate $R --duration "$DURATION" --batch $BATCH --connections 4 "${HEDGE[@]}" --json)
    printf "%-6s %-18s %12s %10s %10s %8s\n" $N "$CALL" "$(echo "$OUT" | field 'r["callsPerSecond"]')" \
      "$(echo "$OUT" | field 'r["latencyMs"]["p50"]')" "$(echo "$OUT" | field 'r["latencyMs"]["p99"]')" \
      "$(echo "$OUT" | field 'sum(r["errors"].values())')"
  done
  [ $N = 3 ] || stop_tier
done

echo
echo "# Failover: $KILLS kills of a match server under a checked load of 5,000 calls/s (3 nodes, 2 replicas)"
printf "%-5s %-5s %14s %14s %10s %12s\n" kill node "failed calls" "window ms" "wrong" "max ms"
WINDOWS=()
for k in $(seq 1 "$KILLS"); do
  VICTIM=m$(( (k - 1) % 3 + 1 ))
  "$BIN" load --tier --verify --coordinator "$COORD" --advertiser @"$WORK/advertisers.txt" --hashes "$WORK/members.txt" \
    --rate 5000 --duration 4s --timeout 2 --json > "$WORK/kill-$k.json" &
  LOAD=$!
  sleep 1.5
  eval "kill -9 \$PID_$VICTIM; { wait \$PID_$VICTIM; } 2>/dev/null || true"
  wait $LOAD || true
  OUT=$(cat "$WORK/kill-$k.json")
  W=$(echo "$OUT" | field 'r["errorWindowMs"] if r["errorWindowMs"] is not None else 0')
  WINDOWS+=("$W")
  printf "%-5s %-5s %14s %14s %10s %12s\n" $k $VICTIM "$(echo "$OUT" | field 'sum(r["errors"].values())')" "$W" \
    "$(echo "$OUT" | field 'r["wrongAnswers"]')" "$(echo "$OUT" | field 'r["latencyMs"]["max"]')"
  start_node 3 $VICTIM
  until [ "$("$BIN" status --coordinator "$COORD" | grep -c ' ok ')" = 3 ]; do sleep 0.2; done
done
python3 - "${WINDOWS[@]}" <<'PY'
import sys, statistics
w = sorted(float(x) for x in sys.argv[1:])
if w: print(f"failover window (last failed - first failed call) over {len(w)} kills: median {statistics.median(w):.1f} ms, worst {w[-1]:.1f} ms")
PY
stop_tier
