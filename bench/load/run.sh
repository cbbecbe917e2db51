#!/usr/bin/env bash
# `roster load` itself (release build): the most Match calls/s it holds
# against `roster match-server` on this machine, and its own CPU per call;
# then, as a yardstick of a mature load tool on the same machine in the same
# run, redis-benchmark against redis-server (GET, one connection per client,
# no pipelining, as many clients as roster load has calls in flight).
#
#   bash bench/load/run.sh          # RATES="10000 50000 100000 150000" MANY_RATES="10000 20000" DURATION=10s MEMBERS=100000
#
# Each line: asked and held calls/s, p50/p99, and the CPU each side used
# (from /proc), as µs per call and as a share of one core.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${BENCH_DIR:-/tmp/roster-load-bench}
RATES=${RATES:-"10000 50000 100000 150000"}; MANY_RATES=${MANY_RATES:-"10000 20000"}; DURATION=${DURATION:-10s}; MEMBERS=${MEMBERS:-100000}
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/services.sh
make_members "$WORK" "$MEMBERS"
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One list, ingested by `roster dev` and then served by a match server alone.
ingest_once "$WORK/data" "$WORK/members.txt"
"$BIN" match-server --no-auth --plaintext --data "$WORK/data" --listen 127.0.0.1:0 --scrub-rate 0 --log-level warning > "$WORK/match.out" 2>&1 &
SERVER=$!; PIDS+=($SERVER)
wait_line "$WORK/match.out" "listening on"; MATCH=$(addr "$WORK/match.out")

echo "# roster load (4 connections, open loop, $DURATION) against roster match-server"
echo "| call | asked calls/s | held calls/s | p50 ms | p99 ms | harness µs/call | harness cores | server µs/call | server cores | verdict |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
runs=(); for rate in $RATES; do runs+=("1:$rate"); done; for rate in $MANY_RATES; do runs+=("100:$rate"); done
for run in "${runs[@]}"; do
  batch=${run%%:*}; rate=${run#*:}
  before=$(cpu $SERVER)
  OUT=$("$BIN" load --match "$MATCH" --advertiser acme --hashes "$WORK/members.txt" --rate "$rate" --batch "$batch" --duration "$DURATION" --connections 4 --json)
  after=$(cpu $SERVER)
  echo "$OUT" | python3 -c "
import json, sys
r = json.load(sys.stdin)
secs = r['durationSeconds']; calls = max(1, r['calls'])
server = ($after - $before) / $TICK
harness = r['harnessCpuMicrosPerCall'] * calls / 1e6
print(f\"| {'Match' if $batch == 1 else 'MatchMany x$batch'} | $rate | {r['callsPerSecond']:.0f} | {r['latencyMs']['p50']} | {r['latencyMs']['p99']} | {r['harnessCpuMicrosPerCall']:.2f} | {harness / secs:.2f} | {server * 1e6 / calls:.2f} | {server / secs:.2f} | {'held' if r['heldRate'] else 'NOT held'} |\")"
done

if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  echo
  echo "# Yardstick: redis-benchmark (GET, closed loop, no pipelining, one thread) against redis-server, same machine, same run"
  echo "| clients | requests/s | p50 ms | harness µs/request | harness cores | server µs/request |"
  echo "| --- | --- | --- | --- | --- | --- |"
  PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no > "$WORK/redis.out" 2>&1 &
  REDIS=$!; PIDS+=($REDIS)
  until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.05; done
  for clients in 4 64; do
    before=$(cpu $REDIS)
    # /usr/bin/time gives the child's own CPU.
    /usr/bin/time -f "%U %S %e" -o "$WORK/rb.time" \
      redis-benchmark -p "$PORT" -t get -n 1000000 -c "$clients" -P 1 --threads 1 -q > "$WORK/rb.out" 2>&1
    after=$(cpu $REDIS)
    read -r USER SYS WALL < "$WORK/rb.time"
    RPS=$(tr '\r' '\n' < "$WORK/rb.out" | sed -n 's/^GET: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
    P50=$(tr '\r' '\n' < "$WORK/rb.out" | sed -n 's/^GET:.*p50=\([0-9.]*\).*/\1/p' | tail -1)
    python3 -c "
n = 1_000_000; cpu = $USER + $SYS
print(f'| $clients | {float(\"$RPS\"):.0f} | ${P50:-?} | {cpu * 1e6 / n:.2f} | {cpu / $WALL:.2f} | {($after - $before) / $TICK * 1e6 / n:.2f} |')"
  done
fi
