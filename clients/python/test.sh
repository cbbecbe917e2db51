#!/usr/bin/env bash
# Tests of the Python client (pytest) against real `roster` processes: the
# package installed with pip into a fresh virtual environment, as users get
# it, and the repository's debug build of roster.
#
#   bash clients/python/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
(cd "$ROOT" && swift build --product roster >/dev/null)
VENV="$ROOT/.build/python-client-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "$ROOT/clients/python[test]"
# The tests import the installed package, not this folder's copy.
cd tests
ROSTER_BIN="${ROSTER_BIN:-$ROOT/.build/debug/roster}" "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
