#!/usr/bin/env bash
# Enforces the module rules of docs/ARCHITECTURE.md: which module may import
# which. Every `import` (plain, @testable, @_exported, @_spi) in a module's
# sources must name a module on its line below, or a system module. Run by
# .ci/run before the tests; exits 1 and names each file and import that
# breaks a rule.
#
# A new module, or a new dependency between modules, is a design change:
# change docs/ARCHITECTURE.md and this table together.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM="Foundation Glibc Darwin Dispatch Synchronization"

# module:folder:allowed imports (besides the system ones)
RULES=(
  "IDLCompiler:codegen/IDLCompiler:"
  "roster-idl:codegen/roster-idl:IDLCompiler"
  "RosterRPC:Sources/RosterRPC:"
  "RosterAPI:Sources/RosterAPI:RosterRPC"
  "RosterTLS:Sources/RosterTLS:NIOCore NIOSSL"
  "RosterTransport:Sources/RosterTransport:RosterRPC RosterTLS NIOCore NIOPosix NIOSSL Logging"
  "RosterServerCore:Sources/RosterServerCore:RosterRPC Logging CoreMetrics Metrics"
  "RosterInProcess:Sources/RosterInProcess:RosterRPC RosterServerCore Logging"
  "RosterServer:Sources/RosterServer:RosterRPC RosterServerCore RosterTransport RosterTLS NIOSSL NIOCore NIOPosix Logging CoreMetrics Metrics ServiceLifecycle"
  "RosterMetrics:Sources/RosterMetrics:RosterTLS NIOSSL CoreMetrics Prometheus NIOCore NIOPosix NIOHTTP1 ServiceLifecycle"
  "SegmentStore:Sources/SegmentStore:CPrefetch"
  "DataLake:Sources/DataLake:"
  "HexDigits:Sources/HexDigits:"
  "Placement:Sources/Placement:"
  "HashParsing:Sources/HashParsing:DataLake HexDigits SegmentStore"
  "ObjectStorage:Sources/ObjectStorage:DataLake HexDigits SegmentStore AsyncHTTPClient Crypto NIOCore NIOHTTP1 Logging"
  "SQLDatabase:Sources/SQLDatabase:"
  "SQLite:Sources/SQLite:CSQLite SQLDatabase"
  "PostgresSQL:Sources/PostgresSQL:SQLDatabase PostgresNIO NIOCore NIOPosix Logging"
  "MatchServer:Sources/MatchServer:RosterAPI RosterRPC SegmentStore Logging ServiceLifecycle"
  "IngestCoordinator:Sources/IngestCoordinator:RosterAPI RosterRPC DataLake HashParsing SegmentStore SQLDatabase SQLite Placement Logging Metrics ServiceLifecycle"
  "IngestWorker:Sources/IngestWorker:RosterAPI RosterRPC DataLake HashParsing SegmentStore Logging Metrics ServiceLifecycle"
  "LoadHarness:Sources/LoadHarness:RosterRPC RosterTransport NIOCore NIOPosix Histogram"
  "RosterClient:Sources/RosterClient:HexDigits RosterAPI RosterRPC RosterTLS RosterTransport Crypto"
  "roster:Sources/roster:ArgumentParser DataLake HashParsing HexDigits IngestCoordinator ObjectStorage PostgresSQL IngestWorker LoadHarness Logging MatchServer RosterAPI RosterClient RosterMetrics RosterRPC RosterServer RosterTLS RosterTransport SegmentStore ServiceLifecycle UnixSignals"
)

status=0
checked=0
declare -A known
for rule in "${RULES[@]}"; do
  IFS=: read -r module folder allowed <<< "$rule"
  known[$folder]=1
  if [ ! -d "$folder" ]; then
    echo "check-imports: $module: no folder $folder" >&2
    status=1
    continue
  fi
  while IFS= read -r hit; do
    file=${hit%%:*}
    rest=${hit#*:}
    line=${rest%%:*}
    imported=$(sed -E 's/.*import[[:space:]]+(struct |class |enum |protocol |func |var |typealias )?([A-Za-z_][A-Za-z0-9_]*).*/\2/' <<< "${rest#*:}")
    checked=$((checked + 1))
    case " $SYSTEM $allowed " in
      *" $imported "*) ;;
      *)
        echo "$file:$line: $module may not import $imported (docs/ARCHITECTURE.md)" >&2
        status=1
        ;;
    esac
  done < <(grep -rnE '^[[:space:]]*(@[A-Za-z_]+(\([A-Za-z_]+\))?[[:space:]]+)*import[[:space:]]' "$folder" --include='*.swift' || true)
done

# Every module folder has a rule.
for folder in Sources/* codegen/*; do
  [ -d "$folder" ] || continue
  [ "$folder" = Sources/CSQLite ] && continue
  ls "$folder"/*.swift "$folder"/*/*.swift >/dev/null 2>&1 || continue
  if [ -z "${known[$folder]:-}" ]; then
    echo "check-imports: $folder has no rule in scripts/check-imports.sh" >&2
    status=1
  fi
done

if [ "$status" -eq 0 ]; then echo "check-imports: $checked imports follow docs/ARCHITECTURE.md"; fi
exit "$status"
