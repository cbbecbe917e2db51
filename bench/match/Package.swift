// swift-tools-version:6.0
// The match benchmark: in-process lookups, and the match server over the
// network side by side with Redis. Its own package, built in release:
//   cd bench/match && swift run -c release match-bench lookup
//   cd bench/match && swift run -c release match-bench network
import PackageDescription

let package = Package(
    name: "RosterMatchBench",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Roster", path: "../..")],
    targets: [
        .executableTarget(name: "match-bench", dependencies: [
            .product(name: "SegmentStore", package: "Roster"),
            .product(name: "MatchServer", package: "Roster"),
            .product(name: "RosterAPI", package: "Roster"),
            .product(name: "RosterRPC", package: "Roster"),
            .product(name: "RosterTransport", package: "Roster"),
            .product(name: "RosterServer", package: "Roster"),
        ])
    ],
    // The driver shares sockets and result buffers between plain threads on
    // purpose; Swift 5 mode keeps its checks to warnings.
    swiftLanguageModes: [.v5]
)
