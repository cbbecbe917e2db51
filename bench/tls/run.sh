#!/usr/bin/env bash
# TLS against plaintext on this machine (release build, separate processes on
# loopback), side by side in one run: two match servers over one store, one
# plaintext (--plaintext), one mutual TLS (--tls-cert/--tls-key/--tls-ca),
# loaded in turn by `roster load` (open loop) at the same asked rates,
# ROUNDS times each. Reports calls/s held, p50/p99, and the match server's
# CPU per call (from /proc); then the most each holds when asked for far too
# much; then the handshake: `openssl s_time` opening new mutual-TLS
# connections for 5 s, and the server's CPU per handshake.
#
#   bash bench/tls/run.sh             # RATES="10000 40000" ROUNDS=3 DURATION=10s MEMBERS=100000
#
# They share two cores with the load generator: read the ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${BENCH_DIR:-/tmp/roster-tls-bench}
RATES=${RATES:-"10000 40000"}; ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10s}; MEMBERS=${MEMBERS:-100000}
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/services.sh
TICK=$(getconf CLK_TCK)

# Certificates: a CA, the server (127.0.0.1) and a client.
C="$WORK/certs"; mkdir -p "$C"
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key" -out "$C/$1.csr" -subj "/CN=$1" 2>/dev/null; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/ca.key" -out "$C/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$C/ext"
for n in server client; do key $n; openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -days 2 -extfile "$C/ext" -out "$C/$n.pem" 2>/dev/null; done
CLIENT_TLS=(--ca "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key")

# One list, ingested once by `roster dev`, then served by both servers.
make_members "$WORK" "$MEMBERS"
ingest_once "$WORK/data" "$WORK/members.txt"

"$BIN" match-server --no-auth --plaintext --data "$WORK/data" --listen 127.0.0.1:0 --scrub-rate 0 --log-level warning > "$WORK/plain.out" 2>&1 &
PLAIN_PID=$!; PIDS+=($PLAIN_PID)
"$BIN" match-server --no-auth --data "$WORK/data" --listen 127.0.0.1:0 --scrub-rate 0 --log-level warning \
  --tls-cert "$C/server.pem" --tls-key "$C/server.key" --tls-ca "$C/ca.pem" > "$WORK/tls.out" 2>&1 &
TLS_PID=$!; PIDS+=($TLS_PID)
wait_line "$WORK/plain.out" "listening on"; wait_line "$WORK/tls.out" "listening on"
PLAIN=$(addr "$WORK/plain.out"); TLS=$(addr "$WORK/tls.out")

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in ticks

run() { # $1 = plaintext|tls, $2 = rate, $3 = batch → one table row
  local pid=$PLAIN_PID address=$PLAIN extra=()
  if [ "$1" = tls ]; then pid=$TLS_PID; address=$TLS; extra=("${CLIENT_TLS[@]}"); fi
  local before; before=$(cpu $pid)
  local out; out=$("$BIN" load --match "$address" --advertiser acme --hashes "$WORK/members.txt" --rate "$2" --batch "$3" \
    --duration "$DURATION" --connections 4 --json "${extra[@]}")
  local after; after=$(cpu $pid)
  local calls; calls=$(echo "$out" | field "r['calls']")
  printf "| %s | %s | %s | %s | %s | %s | %.2f |\n" "$1" "$2" "$3" "$(echo "$out" | field "round(r['callsPerSecond'])")" \
    "$(echo "$out" | field "r['latencyMs']['p50']")" "$(echo "$out" | field "r['latencyMs']['p99']")" \
    "$(python3 -c "print(($after - $before) / $TICK * 1e6 / max(1, $calls))")"
}

echo "# Match over plaintext and mutual TLS, one run ($DURATION each, 4 connections, $ROUNDS rounds, alternating)"
echo "| transport | asked calls/s | batch | held calls/s | p50 ms | p99 ms | server CPU µs/call |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do run plaintext "$rate" 1; run tls "$rate" 1; done
  run plaintext 5000 100; run tls 5000 100
done
echo
echo "# The most held when asked for 300,000 calls/s"
echo "| transport | asked calls/s | batch | held calls/s | p50 ms | p99 ms | server CPU µs/call |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
run plaintext 300000 1; run tls 300000 1; run plaintext 300000 1; run tls 300000 1
echo
echo "# Handshakes: openssl s_time, new mutual-TLS connections for 5 s (TLS 1.3, P-256)"
before=$(cpu $TLS_PID)
OUT=$(openssl s_time -connect "$TLS" -new -time 5 -CAfile "$C/ca.pem" -cert "$C/client.pem" -key "$C/client.key" 2>&1 | grep "connections in")
after=$(cpu $TLS_PID)
echo "$OUT"
N=$(echo "$OUT" | head -1 | awk '{print $1}')
python3 -c "print(f'server CPU per handshake: {($after - $before) / $TICK * 1e6 / max(1, $N):.0f} µs over $N handshakes')"
