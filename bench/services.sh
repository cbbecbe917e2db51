# Sourced by the benchmarks that run roster's services as processes:
# the release binary ($ROSTER_BIN, or built now), a list of the pids they
# start (killed on exit), the member list, and reading their start-up lines.
ROOT=$(pwd)
if [ -z "${ROSTER_BIN:-}" ]; then swift build -c release --product roster >/dev/null; fi
BIN=${ROSTER_BIN:-"$ROOT/.build/release/roster"}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# $1 = folder, $2 = members: members.txt (MD5 of user<i>@example.com) and advertisers.txt (adv0..adv99).
make_members() {
  python3 - "$1" "$2" <<'PY'
import hashlib, sys, os
work, n = sys.argv[1], int(sys.argv[2])
text = "".join(hashlib.md5(f"user{i}@example.com".encode()).hexdigest() + "\n" for i in range(n))
open(os.path.join(work, "members.txt"), "w").write(text)
open(os.path.join(work, "advertisers.txt"), "w").write("\n".join(f"adv{i}" for i in range(100)) + "\n")
PY
}

wait_line() { until grep -q "$2" "$1" 2>/dev/null; do sleep 0.05; done; }
addr() { sed -n 's/.*listening on \([^;]*\);.*/\1/p' "$1"; }
field() { python3 -c "import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# $1 = data folder, $2 = member list: ingests the list for advertiser acme
# with `roster dev` and stops it, leaving a store a match server can serve.
ingest_once() {
  "$BIN" dev --data "$1" --match-port 0 --coordinator-port 0 --metrics 127.0.0.1:0 --log-level warning > "$1.dev.out" 2>&1 &
  local dev=$!; PIDS+=($dev)
  until grep -q "coordinator:" "$1.dev.out" 2>/dev/null; do sleep 0.1; done
  local coordinator; coordinator=$(sed -n 's/.*coordinator: *//p' "$1.dev.out" | head -1)
  mkdir -p "$1/lake/acme"; cp "$2" "$1/lake/acme/.m"; mv "$1/lake/acme/.m" "$1/lake/acme/members.txt"
  until "$BIN" status --coordinator "$coordinator" 2>/dev/null | grep -q " live"; do sleep 0.2; done
  kill -INT $dev; wait $dev 2>/dev/null || true
}
