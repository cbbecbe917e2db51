// swift-tools-version:6.1
// The RPC benchmark: Roster's transport and grpc-swift 2 side by side, in
// release builds. A package of its own so that grpc-swift never enters the
// main build:  cd bench/rpc && swift run -c release rpc-bench
import PackageDescription

let package = Package(
    name: "RosterRPCBench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Roster", path: "../.."),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "rpc-bench",
            dependencies: [
                .product(name: "RosterRPC", package: "Roster"),
                .product(name: "RosterTransport", package: "Roster"),
                .product(name: "RosterServer", package: "Roster"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        )
    ]
)
