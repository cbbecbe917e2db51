// rpc-bench: Roster's RPC transport against grpc-swift 2 (HTTP/2), same calls,
// same message code, same machine, same run.
//
//     cd bench/rpc && swift run -c release rpc-bench [--seconds 4] [--json]
//
// Each server runs in a child process of its own (so client and server do not
// share a Swift runtime), the two systems alternate scenario by scenario, and
// every scenario is a closed loop: C calls always in flight, spread over N
// connections, for a fixed time after a warm-up. Latency is measured per call
// from send to reply.

import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import RosterRPC
import RosterServer
import RosterTransport

// MARK: - Services

/// The Roster service: inline handlers, run on the event loop.
struct RosterBench: Bench.InlineHandler {
    func echo(_ request: Payload, context: RPCContext) throws -> Payload { request }
    func sink(_ request: Payload, context: RPCContext) throws -> Payload { Payload(data: request.data.prefix(128)) }
}

/// grpc-swift 2 serializers for Roster's generated messages, written by hand.
struct ProtoSerializer<M: ProtoMessage>: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: M) throws -> Bytes {
        var bytes = Bytes(repeating: 0, count: message.serializedSize)
        bytes.withUnsafeMutableBytes { _ = message.encode(into: $0) }
        return bytes
    }
}

struct ProtoDeserializer<M: ProtoMessage>: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> M {
        try bytes.withUnsafeBytes { try M(decoding: $0) }
    }
}

enum GRPCBench {
    static let echo = GRPCCore.MethodDescriptor(fullyQualifiedService: "bench.v1.Bench", method: "Echo")
    static let sink = GRPCCore.MethodDescriptor(fullyQualifiedService: "bench.v1.Bench", method: "Sink")
}

/// The same two calls on grpc-swift 2.
struct GRPCBenchService: RegistrableRPCService {
    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: GRPCBench.echo, deserializer: ProtoDeserializer<Payload>(),
                               serializer: ProtoSerializer<Payload>()) { request, _ in
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse(single: ServerResponse(message: single.message))
        }
        router.registerHandler(forMethod: GRPCBench.sink, deserializer: ProtoDeserializer<Payload>(),
                               serializer: ProtoSerializer<Payload>()) { request, _ in
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse(single: ServerResponse(message: Payload(data: single.message.data.prefix(128))))
        }
    }
}

// MARK: - Servers (child processes)

/// Tells the parent process the port, unbuffered.
func announce(port: Int) {
    FileHandle.standardOutput.write(Data("ready \(port)\n".utf8))
}

func serveRoster(port: Int) async throws {
    let server = try RPCServer(configuration: .init(port: port, idleTimeout: nil), services: [RosterBench()])
    try await server.start()
    announce(port: server.localAddress!.port!)
    await server.waitUntilClosed()
}

func serveGRPC(port: Int) async throws {
    let server = GRPCServer(
        transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: port), transportSecurity: .plaintext),
        services: [GRPCBenchService()])
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        if let address = try await server.listeningAddress?.ipv4 {
            announce(port: address.port)
        }
    }
}

/// Starts `rpc-bench serve-KIND 0` and returns the process and its port.
func spawnServer(_ kind: String) throws -> (Process, Int) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    process.arguments = ["serve-\(kind)", "0"]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    var line = Data()
    while !line.contains(UInt8(ascii: "\n")) {
        let chunk = pipe.fileHandleForReading.availableData
        if chunk.isEmpty { throw CocoaError(.fileReadUnknown) }
        line.append(chunk)
    }
    let text = String(decoding: line, as: UTF8.self)
    guard let port = Int(text.split(separator: " ")[1].trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw CocoaError(.fileReadCorruptFile)
    }
    return (process, port)
}

// MARK: - Load

struct Scenario {
    var name: String
    var requestBytes: Int
    var connections: Int
    var inFlight: Int
    var sink: Bool
}

struct Result {
    var calls: Int
    var seconds: Double
    var latencies: [UInt64]

    var callsPerSecond: Double { Double(calls) / seconds }
    func percentile(_ p: Double) -> Double {
        guard !latencies.isEmpty else { return .nan }
        return Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1000
    }
}

/// Runs `inFlight` loops of back-to-back calls for `seconds` (after a warm-up).
func closedLoop(inFlight: Int, warmup: Double, seconds: Double, call: @escaping @Sendable (Int) async throws -> Void) async throws -> Result {
    let start = DispatchTime.now().uptimeNanoseconds
    let measureFrom = start + UInt64(warmup * 1e9)
    let stopAt = measureFrom + UInt64(seconds * 1e9)
    let perWorker = try await withThrowingTaskGroup(of: [UInt64].self) { group in
        for worker in 0..<inFlight {
            group.addTask {
                var latencies: [UInt64] = []
                latencies.reserveCapacity(200_000)
                while true {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    if t0 >= stopAt { break }
                    try await call(worker)
                    let t1 = DispatchTime.now().uptimeNanoseconds
                    if t0 >= measureFrom { latencies.append(t1 - t0) }
                }
                return latencies
            }
        }
        var all: [[UInt64]] = []
        for try await l in group { all.append(l) }
        return all
    }
    var latencies = perWorker.flatMap { $0 }
    latencies.sort()
    return Result(calls: latencies.count, seconds: seconds, latencies: latencies)
}

func runRoster(_ s: Scenario, port: Int, warmup: Double, seconds: Double) async throws -> Result {
    let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(connections: s.connections))
    let stub = Bench.Client(transport: client)
    let request = Payload(data: Data(repeating: 0x5A, count: s.requestBytes))
    let result = try await closedLoop(inFlight: s.inFlight, warmup: warmup, seconds: seconds) { _ in
        _ = s.sink ? try await stub.sink(request) : try await stub.echo(request)
    }
    await client.close()
    return result
}

func runGRPC(_ s: Scenario, port: Int, warmup: Double, seconds: Double) async throws -> Result {
    let clients = try (0..<s.connections).map { _ in
        try GRPCClient(transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext))
    }
    let request = Payload(data: Data(repeating: 0x5A, count: s.requestBytes))
    let method = s.sink ? GRPCBench.sink : GRPCBench.echo
    return try await withThrowingTaskGroup(of: Void.self) { group in
        for client in clients { group.addTask { try await client.runConnections() } }
        let result = try await closedLoop(inFlight: s.inFlight, warmup: warmup, seconds: seconds) { worker in
            let client = clients[worker % clients.count]
            _ = try await client.unary(
                request: ClientRequest(message: request), descriptor: method,
                serializer: ProtoSerializer<Payload>(), deserializer: ProtoDeserializer<Payload>(),
                options: .defaults) { try $0.message }
        }
        for client in clients { client.beginGracefulShutdown() }
        try await group.waitForAll()
        return result
    }
}

// MARK: - Main

let arguments = CommandLine.arguments.dropFirst()
if let mode = arguments.first, mode.hasPrefix("serve-") {
    let port = Int(arguments.dropFirst().first ?? "0") ?? 0
    if mode == "serve-roster" { try await serveRoster(port: port) } else { try await serveGRPC(port: port) }
    exit(0)
}

var seconds = 4.0
var json = false
var only: String?       // "roster": skip grpc-swift (for profiling)
var scenarioFilter: Int?
var iterator = arguments.makeIterator()
while let arg = iterator.next() {
    switch arg {
    case "--seconds": seconds = Double(iterator.next() ?? "4") ?? 4
    case "--json": json = true
    case "--only": only = iterator.next()
    case "--scenario": scenarioFilter = Int(iterator.next() ?? "")
    default:
        FileHandle.standardError.write(Data("usage: rpc-bench [--seconds S] [--json] [--only roster] [--scenario N]\n".utf8))
        exit(2)
    }
}

let scenarios = [
    Scenario(name: "echo 32 B, 1 conn x 64 in flight", requestBytes: 32, connections: 1, inFlight: 64, sink: false),
    Scenario(name: "echo 32 B, 16 conns, 64 in flight", requestBytes: 32, connections: 16, inFlight: 64, sink: false),
    Scenario(name: "16 KB request, 1 conn x 64 in flight", requestBytes: 16_000, connections: 1, inFlight: 64, sink: true),
    Scenario(name: "16 KB request, 16 conns, 64 in flight", requestBytes: 16_000, connections: 16, inFlight: 64, sink: true),
]

let (rosterServer, rosterPort) = try spawnServer("roster")
let grpc: (Process, Int)? = only == "roster" ? nil : try spawnServer("grpc")
defer {
    rosterServer.terminate()
    grpc?.0.terminate()
}

print("| scenario | system | calls/s | p50 µs | p99 µs | ratio calls/s |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
var rows: [[String: Any]] = []
for (number, scenario) in zip(1..., scenarios) where scenarioFilter == nil || scenarioFilter == number {
    let roster = try await runRoster(scenario, port: rosterPort, warmup: 1, seconds: seconds)
    var results = [("roster", roster)]
    var ratio = Double.nan
    if let (_, grpcPort) = grpc {
        let peer = try await runGRPC(scenario, port: grpcPort, warmup: 1, seconds: seconds)
        ratio = roster.callsPerSecond / peer.callsPerSecond
        results.append(("grpc-swift 2", peer))
    }
    for (name, r) in results {
        print(String(format: "| %@ | %@ | %.0f | %.0f | %.0f | %@ |", scenario.name, name, r.callsPerSecond,
                     r.percentile(0.5), r.percentile(0.99), name == "roster" ? String(format: "%.2fx", ratio) : ""))
        rows.append(["scenario": scenario.name, "system": name, "calls_per_second": r.callsPerSecond,
                     "p50_us": r.percentile(0.5), "p99_us": r.percentile(0.99)])
    }
}
if json, let data = try? JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys]) {
    print(String(decoding: data, as: UTF8.self))
}
