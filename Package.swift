// swift-tools-version:6.0
import PackageDescription

/// Release builds of the server-side modules on a Match call's path skip
/// Swift's dynamic exclusivity checks (a runtime bookkeeping call on every
/// access to a class's stored property): measured with bench/match, they were
/// about a fifth of the server's user CPU per call. Debug builds, and so the
/// tests, keep them. Only server modules carry the flag: SwiftPM refuses
/// unsafe flags in a versioned dependency, and the client library
/// (RosterClient and what it depends on) must stay usable as one.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Roster",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "roster-idl", targets: ["roster-idl"]),
        .library(name: "RosterRPC", targets: ["RosterRPC"]),
        .library(name: "RosterAPI", targets: ["RosterAPI"]),
        .library(name: "RosterTransport", targets: ["RosterTransport"]),
        .library(name: "RosterServer", targets: ["RosterServer"]),
        .library(name: "SegmentStore", targets: ["SegmentStore"]),
        .library(name: "MatchServer", targets: ["MatchServer"]),
        // What another SwiftPM package depends on to call Roster.
        .library(name: "RosterClient", targets: ["RosterClient"]),
        // For bench/ingest/micro, which measures the workers' hot loops.
        .library(name: "IngestWorker", targets: ["IngestWorker"]),
        .library(name: "HashParsing", targets: ["HashParsing"]),
        .library(name: "DataLake", targets: ["DataLake"]),
        .executable(name: "roster", targets: ["roster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // The schema compiler: standard library and Foundation only.
        .target(name: "IDLCompiler", path: "codegen/IDLCompiler"),
        .executableTarget(name: "roster-idl", dependencies: ["IDLCompiler"], path: "codegen/roster-idl"),

        // The runtime generated code stands on: protobuf wire format, status codes,
        // the protocols generated services and clients implement. No networking.
        .target(name: "RosterRPC"),
        // Messages and service stubs generated from schema/ (committed; see docs/IDL.md).
        .target(name: "RosterAPI", dependencies: ["RosterRPC"]),
        // TLS on swift-nio-ssl, for every port: contexts loaded (and reloaded)
        // from PEM files, the handlers that tell TLS from plaintext, and
        // handshake failures said in words. Knows nothing of the protocol.
        .target(name: "RosterTLS", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // The wire protocol (docs/PROTOCOL.md) over TCP on SwiftNIO: framing and the client.
        .target(name: "RosterTransport", dependencies: [
            "RosterRPC", "RosterTLS",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // What every server does to a call, with no networking: the route
        // table, interceptors, the status a failure answers, call metrics.
        .target(name: "RosterServerCore", dependencies: [
            "RosterRPC",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], swiftSettings: hotPath),
        // Services called in the same process, through the core, with no
        // sockets: what service tests use.
        .target(name: "RosterInProcess", dependencies: [
            "RosterRPC", "RosterServerCore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The server side of the wire protocol: connections, dispatch to the
        // generated handlers, drain, metrics. Apart from the client library.
        .target(name: "RosterServer", dependencies: [
            "RosterRPC", "RosterServerCore", "RosterTransport", "RosterTLS",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: hotPath),
        // Prometheus text exposition of swift-metrics on an HTTP /metrics endpoint.
        .target(name: "RosterMetrics", dependencies: [
            "RosterTLS",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // Immutable sorted segments of 16-byte keys (docs/STORAGE.md): writer and mmap reader.
        // One static inline C function: the CPU's prefetch, for batch lookups.
        .target(name: "CPrefetch"),
        .target(name: "SegmentStore", dependencies: ["CPrefetch"]),
        // The match server: MatchService and MatchAdmin over segments, with atomic version swaps.
        .target(name: "MatchServer", dependencies: [
            "RosterAPI", "RosterRPC", "SegmentStore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: hotPath),

        // Ingest groundwork: the lake interface with its local-folder default,
        // and the byte-level line parser with the block boundary rule.
        .target(name: "DataLake"),
        .target(name: "HexDigits"),
        // Rendezvous hashing: which match servers of a tier hold an advertiser.
        .target(name: "Placement"),
        .target(name: "HashParsing", dependencies: ["DataLake", "HexDigits", "SegmentStore"]),

        // System SQLite (Debian libsqlite3-dev) and a thin Swift layer over it.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // The catalog's view of a relational database, and its two engines.
        .target(name: "SQLDatabase"),
        .target(name: "SQLite", dependencies: ["CSQLite", "SQLDatabase"]),
        .target(name: "PostgresSQL", dependencies: [
            "SQLDatabase",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The ingest coordinator: catalog, pull scheduling, leases, publishing.
        .target(name: "IngestCoordinator", dependencies: [
            "RosterAPI", "RosterRPC", "DataLake", "HashParsing", "SegmentStore", "SQLDatabase", "SQLite", "Placement",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Stateless block workers: parse blocks into runs, merge runs into segments.
        .target(name: "IngestWorker", dependencies: [
            "RosterAPI", "RosterRPC", "DataLake", "HashParsing", "SegmentStore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // The lake and the segment store in an S3-compatible bucket: SigV4
        // (swift-crypto), requests through async-http-client. Only the binary
        // and this module's tests carry these (heavy) dependencies.
        .target(name: "ObjectStorage", dependencies: [
            "DataLake", "HexDigits", "SegmentStore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The client library: generated stubs, the transport, and a small
        // membership client with email hashing (SHA-256 from swift-crypto,
        // whose BoringSSL the TLS transport builds anyway).
        .target(name: "RosterClient", dependencies: [
            "HexDigits", "RosterAPI", "RosterRPC", "RosterTransport", "RosterTLS",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Open-loop load generation with HdrHistogram latencies (no coordinated omission).
        .target(name: "LoadHarness", dependencies: [
            "RosterRPC", "RosterTransport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        // The one binary users run: every service, and a command for every RPC.
        .executableTarget(name: "roster", dependencies: [
            "RosterAPI", "RosterClient", "RosterServer", "MatchServer", "IngestCoordinator", "IngestWorker", "DataLake", "SegmentStore",
            "HashParsing", "HexDigits", "LoadHarness", "RosterMetrics", "ObjectStorage", "PostgresSQL", "RosterTLS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], plugins: ["BuildInfo"]),
        // The commit and dates `roster --version` prints, written before each build.
        .plugin(name: "BuildInfo", capability: .buildTool()),

        // Helpers shared by the test targets (seeded random numbers, status assertions).
        .target(name: "TestSupport", dependencies: ["RosterRPC"], path: "Tests/TestSupport"),

        .testTarget(name: "IDLCompilerTests", dependencies: ["IDLCompiler"]),
        .testTarget(name: "WireTests", dependencies: ["RosterRPC", "RosterAPI", "IDLCompiler", "TestSupport"]),
        // The test.v1 Echo services and raw-connection helpers the transport,
        // server and in-process tests share.
        .target(name: "TestServices", dependencies: [
            "RosterRPC", "RosterTransport", "RosterServer", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/TestServices"),
        .testTarget(name: "RosterServerTests", dependencies: [
            "RosterRPC", "RosterTransport", "RosterServer", "RosterServerCore", "TestServices",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "RosterInProcessTests", dependencies: ["RosterRPC", "RosterInProcess", "TestServices"]),
        .testTarget(name: "HexDigitsTests", dependencies: ["HexDigits"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement"]),
        // Finds the S3-compatible server `.ci/run` starts (skips without one, outside CI).
        .target(name: "S3TestSupport", dependencies: [
            "ObjectStorage", "TestSupport",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], path: "Tests/S3TestSupport"),
        .testTarget(name: "ObjectStorageTests", dependencies: [
            "ObjectStorage", "DataLake", "SegmentStore", "TestSupport", "S3TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "HashParsingTests", dependencies: ["HashParsing", "DataLake", "SegmentStore", "TestSupport"]),
        // Finds the PostgreSQL test cluster `.ci/run` starts; a fresh database per test.
        .target(name: "PostgresTestSupport", dependencies: ["PostgresSQL", "TestSupport"], path: "Tests/PostgresTestSupport"),
        .testTarget(name: "IngestCoordinatorTests", dependencies: [
            "IngestCoordinator", "DataLake", "SQLDatabase", "SQLite", "PostgresSQL", "PostgresTestSupport", "RosterAPI", "SegmentStore",
            "TestSupport", "RosterInProcess",
        ]),
        .testTarget(name: "TransportTests", dependencies: [
            "RosterRPC", "RosterTransport", "RosterServer", "RosterMetrics", "RosterTLS", "TestServices", "TestSupport",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "LoadHarnessTests", dependencies: [
            "LoadHarness", "RosterAPI", "RosterRPC", "RosterTransport", "RosterServer",
        ]),
        .testTarget(name: "RosterClientTests", dependencies: ["RosterClient", "RosterServer", "RosterInProcess", "MatchServer", "SegmentStore"]),
        .testTarget(name: "CLITests", dependencies: [
            "roster", "RosterAPI", "RosterClient", "ObjectStorage", "S3TestSupport", "PostgresTestSupport", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "SegmentStoreTests", dependencies: ["SegmentStore", "TestSupport"]),
        .testTarget(name: "IngestTests", dependencies: [
            "DataLake", "HashParsing", "SegmentStore", "IngestCoordinator", "IngestWorker", "MatchServer", "SQLite",
            "RosterAPI", "RosterRPC", "RosterInProcess", "TestSupport", "RosterClient", "Placement",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "MatchServerTests", dependencies: [
            "MatchServer", "RosterAPI", "RosterRPC", "RosterInProcess", "SegmentStore", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
