// swift-tools-version:6.0
// Micro-benchmarks of ingest's hot loops, side by side in one process:
//   cd bench/ingest/micro && swift run -c release ingest-micro
import PackageDescription

let package = Package(
    name: "RosterIngestMicro",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Roster", path: "../../..")],
    targets: [
        .executableTarget(name: "ingest-micro", dependencies: [
            .product(name: "IngestWorker", package: "Roster"),
            .product(name: "SegmentStore", package: "Roster"),
            .product(name: "HashParsing", package: "Roster"),
            .product(name: "DataLake", package: "Roster"),
        ])
    ]
)
