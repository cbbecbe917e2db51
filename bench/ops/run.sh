#!/usr/bin/env bash
# Operating figures, with release builds, on `roster dev`:
#   1. `roster match --file` throughput (100,000 and 1,000,000 hashes, answers printed);
#   2. a rollback: from the call to the first answer from the old version;
#   3. `roster status` and the status page while a large file ingests (SIZE_MB, default 1000).
#
#   bash bench/ops/run.sh [SIZE_MB]          (ROSTER_BIN=… to use a built binary)
set -euo pipefail
SIZE_MB=${1:-1000}
source "$(dirname "$0")/../services.sh"
WORK=$(mktemp -d /tmp/roster-ops.XXXXXX)
trap 'cleanup; rm -rf "$WORK"' EXIT

ports() { python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))'; }
read -r MPORT CPORT HPORT < <(ports)
MATCH=127.0.0.1:$MPORT; COORD=127.0.0.1:$CPORT; PAGE=http://127.0.0.1:$HPORT/

"$BIN" dev --data "$WORK/data" --match-port "$MPORT" --coordinator-port "$CPORT" --metrics "127.0.0.1:$HPORT" \
  --log-level warning > "$WORK/dev.out" 2>&1 &
PIDS+=($!)
wait_line "$WORK/dev.out" "status page:"

# Lists: v1 of acme (1,000,000 members), v2 (another 1,000,000).
python3 - "$WORK" <<'PY'
import hashlib, sys
work = sys.argv[1]
def write(name, start, n):
    with open(f"{work}/{name}", "w") as f:
        f.write("email_md5\n")
        f.write("".join(hashlib.md5(f"user{i}@example.com".encode()).hexdigest() + "\n" for i in range(start, start + n)))
write("v1.txt", 0, 1_000_000)
write("v2.txt", 1_000_000, 1_000_000)
PY
head -100001 "$WORK/v1.txt" > "$WORK/ask100k.txt"
drop() { mkdir -p "$WORK/data/lake/$1"; cp "$2" "$WORK/data/lake/$1/.new"; mv "$WORK/data/lake/$1/.new" "$WORK/data/lake/$1/$3"; }
live_version() { "$BIN" advertisers --coordinator "$COORD" --json | python3 -c 'import json,sys
for l in sys.stdin:
    a=json.loads(l)
    if a["advertiserId"]=="'"$1"'": print(a["liveVersion"])'; }

drop acme "$WORK/v1.txt" v1.txt
until [ -n "$(live_version acme)" ] && [ "$(live_version acme)" != "0" ]; do sleep 0.2; done
V1=$(live_version acme)

echo "## roster match --file (answers printed to a file)"
for f in ask100k.txt v1.txt; do
  n=$(($(wc -l < "$WORK/$f") - 1))
  start=$(date +%s.%N)
  "$BIN" match --match "$MATCH" --advertiser acme --file "$WORK/$f" > "$WORK/answers.tsv" || true
  end=$(date +%s.%N)
  python3 -c "n=$n; s=$end-$start; print(f'{n:,} hashes: {s:.2f} s, {n/s:,.0f} hashes/s')"
done
tail -1 "$WORK/answers.tsv"

sleep 1.2   # the next file must be newer by the clock the lake reports
drop acme "$WORK/v2.txt" v2.txt
until [ "$(live_version acme)" != "$V1" ]; do sleep 0.2; done
V2=$(live_version acme)
echo "## rollback of acme from version $V2 to $V1 (1,000,000 keys each)"
python3 - "$BIN" "$COORD" "$MATCH" <<'PY'
import subprocess, sys, time
bin, coord, match = sys.argv[1:4]
old = "user7@example.com"   # in v1 only
assert subprocess.run([bin, "match", "--match", match, "--advertiser", "acme", "--email", old], capture_output=True).returncode == 3
t0 = time.monotonic()
out = subprocess.run([bin, "rollback", "--coordinator", coord, "--advertiser", "acme"], capture_output=True, text=True)
t1 = time.monotonic()
while subprocess.run([bin, "match", "--match", match, "--advertiser", "acme", "--email", old], capture_output=True).returncode != 0:
    pass
t2 = time.monotonic()
print(out.stdout.strip())
print(f"rollback call: {(t1 - t0) * 1000:.0f} ms (a process start included); first answer from the old version {(t2 - t0) * 1000:.0f} ms after the call began")
PY

echo "## a ${SIZE_MB} MB file ingesting: roster status and the page, mid-way"
python3 - "$WORK/big.txt" "$SIZE_MB" <<'PY'
import os, sys
path, mb = sys.argv[1], int(sys.argv[2])
lines = mb * 1_000_000 // 33
with open(path, "w") as f:
    f.write("email_md5\n")
    chunk = 200_000
    for start in range(0, lines, chunk):
        n = min(chunk, lines - start)
        raw = os.urandom(16 * n).hex()
        f.write("\n".join(raw[i:i + 32] for i in range(0, len(raw), 32)) + "\n")
PY
ls -la "$WORK/big.txt" | awk '{printf "%s bytes\n", $5}'
start=$(date +%s.%N)
drop bigco "$WORK/big.txt" big.txt
until "$BIN" status --coordinator "$COORD" | grep -q "bigco/big.txt .*parsing"; do sleep 0.2; done
sleep 3
"$BIN" status --coordinator "$COORD" | tee "$WORK/status-mid.txt"
if [ -x /usr/bin/chromium ]; then
  /usr/bin/chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,700 --virtual-time-budget=3000 \
    --user-data-dir="$WORK/chromium" --screenshot="${SHOT:-/tmp/roster-status-page.png}" "$PAGE" >/dev/null 2>&1 || true
  echo "page: ${SHOT:-/tmp/roster-status-page.png}"
fi
until "$BIN" status --coordinator "$COORD" | grep -q "bigco/big.txt .*live"; do sleep 0.5; done
end=$(date +%s.%N)
python3 -c "s=$end-$start; print(f'live after {s:.1f} s: {$SIZE_MB/s:.0f} MB/s from drop to live')"
"$BIN" status --coordinator "$COORD" | grep "bigco/big.txt"
curl -s "${PAGE}metrics" | grep -E '^roster_ingest_time_to_live_seconds_(count|sum)|^roster_worker_parsed_keys_total|^roster_match_keys' || true
