import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Metrics
import Prometheus
import RosterMetrics
import RosterRPC
import RosterTransport
import TestServices
import TestSupport
import XCTest

/// The server's metrics reach Prometheus through swift-metrics and /metrics.
final class MetricsTests: XCTestCase {
    /// swift-metrics can be bootstrapped once per process.
    static let registry = MetricsEndpoint.bootstrapMetricsSystem()

    func testCallsAreCountedAndExposedOverHTTP() async throws {
        let registry = Self.registry
        let endpoint = MetricsEndpoint(registry: registry)
        try await endpoint.start()
        let (server, port) = try await startServer([EchoService(), InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        for i in 0..<3 { _ = try await stub.echo(EchoRequest(index: UInt32(i))) }
        // Inline calls are all counted and one in 16 is timed.
        let inline = InlineEcho.Client(transport: client)
        for i in 0..<40 { _ = try await inline.echo(EchoRequest(index: UInt32(i))) }
        await assertStatus(.notFound) { try await stub.echo(EchoRequest(failWith: 5)) }

        let url = URL(string: "http://127.0.0.1:\(endpoint.localAddress!.port!)/metrics")!
        let (data, response) = try await URLSession.shared.data(from: url)
        XCTAssertEqual((response as? HTTPURLResponse)?.statusCode, 200)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains(#"roster_rpc_server_calls_total{method="test.v1.Echo/Echo",code="OK"} 3"#), text)
        XCTAssertTrue(text.contains(#"roster_rpc_server_calls_total{method="test.v1.Echo/Echo",code="NOT_FOUND"} 1"#), text)
        XCTAssertTrue(text.contains(#"roster_rpc_server_call_duration_seconds_count{method="test.v1.Echo/Echo"} 4"#), text)
        XCTAssertTrue(text.contains(#"roster_rpc_server_calls_total{method="test.v1.InlineEcho/Echo",code="OK"} 40"#), text)
        XCTAssertTrue(text.contains(#"roster_rpc_server_call_duration_seconds_count{method="test.v1.InlineEcho/Echo"} 2"#), text)
        XCTAssertTrue(text.contains("roster_rpc_server_connections 1"), text)

        let (_, missing) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(endpoint.localAddress!.port!)/nope")!)
        XCTAssertEqual((missing as? HTTPURLResponse)?.statusCode, 404)
        await client.close()
        server.drain()
        await endpoint.stop()
    }

    func get(_ endpoint: MetricsEndpoint, _ path: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "\(endpoint.url)\(path)")!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    func testHealthAndReadiness() async throws {
        let endpoint = MetricsEndpoint(registry: Self.registry)
        try await endpoint.start()
        let (health, ok) = try await get(endpoint, "/healthz")
        XCTAssertEqual(health, 200)
        XCTAssertEqual(ok, "ok\n")
        let (starting, why) = try await get(endpoint, "/readyz")
        XCTAssertEqual(starting, 503, "not ready until the service says so")
        XCTAssertEqual(why, "not ready: starting\n")
        endpoint.ready()
        let (ready, _) = try await get(endpoint, "/readyz")
        XCTAssertEqual(ready, 200)
        endpoint.notReady("draining")
        let (draining, reason) = try await get(endpoint, "/readyz")
        XCTAssertEqual(draining, 503)
        XCTAssertEqual(reason, "not ready: draining\n")
        await endpoint.stop()
    }

    func testAPortInUseIsOneClearError() async throws {
        let first = MetricsEndpoint(registry: Self.registry)
        try await first.start()
        let port = first.localAddress!.port!
        do {
            try await MetricsEndpoint(registry: Self.registry, port: port).start()
            XCTFail("a second endpoint cannot bind the same port")
        } catch let error as EndpointError {
            XCTAssertEqual(error.description, "cannot serve metrics on 127.0.0.1:\(port): the port is in use (choose another with --metrics)")
        }
        await first.stop()
    }

    /// Every family has HELP and TYPE, timers have buckets down to 10 µs,
    /// the process's own figures are there, and promtool (Debian's
    /// prometheus package; CI installs it) finds nothing to complain about.
    func testTheExpositionPassesPromtool() async throws {
        let endpoint = MetricsEndpoint(registry: Self.registry)
        try await endpoint.start()
        let (server, port) = try await startServer([EchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        _ = try await Echo.Client(transport: client).echo(EchoRequest(index: 1))
        let (status, text) = try await get(endpoint, "/metrics")
        XCTAssertEqual(status, 200)
        let lines = text.split(separator: "\n")
        for (i, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            XCTAssertTrue(i > 0 && lines[i - 1].hasPrefix("# HELP \(name) "), "\(name) has HELP: \(text)")
        }
        XCTAssertTrue(text.contains(#"roster_rpc_server_call_duration_seconds_bucket{method="test.v1.Echo/Echo",le="0.00001"}"#), text)
        for family in ["process_resident_memory_bytes", "process_open_fds", "roster_process_mapped_file_bytes", "process_start_time_seconds"] {
            XCTAssertTrue(text.contains("# TYPE \(family) gauge"), "\(family): \(text)")
        }
        await client.close()
        server.drain()
        await endpoint.stop()

        try Promtool.check(text)
    }
}
