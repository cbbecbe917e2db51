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
