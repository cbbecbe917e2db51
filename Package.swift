// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Roster",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "roster-idl", targets: ["roster-idl"]),
        .library(name: "RosterRPC", targets: ["RosterRPC"]),
        .library(name: "RosterAPI", targets: ["RosterAPI"]),
    ],
    targets: [
        // The schema compiler: standard library and Foundation only.
        .target(name: "IDLCompiler", path: "codegen/IDLCompiler"),
        .executableTarget(name: "roster-idl", dependencies: ["IDLCompiler"], path: "codegen/roster-idl"),

        // The runtime generated code stands on: protobuf wire format, status codes,
        // the protocols generated services and clients implement.
        .target(name: "RosterRPC"),
        // Messages and service stubs generated from schema/ (committed; see docs/IDL.md).
        .target(name: "RosterAPI", dependencies: ["RosterRPC"]),

        .testTarget(name: "IDLCompilerTests", dependencies: ["IDLCompiler"]),
        .testTarget(name: "WireTests", dependencies: ["RosterRPC", "RosterAPI", "IDLCompiler"]),
    ]
)
