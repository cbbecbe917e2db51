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
}
