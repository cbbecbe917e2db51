import Foundation
import NIOCore
import NIOPosix
import RosterRPC
@_spi(Testing) import RosterServer
import RosterTransport
import ServiceLifecycle
import TestServices
import XCTest

/// Connection lifecycle: drain, reconnect, limits, graceful shutdown.
final class ConnectionTests: XCTestCase {
    func testDrainLetsCallsInFlightFinishAndRefusesNewOnes() async throws {
        let echo = EchoService()
        let (server, port) = try await startServer([echo])
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(initialBackoff: .seconds(10)))
        let stub = Echo.Client(transport: client)
        let inFlight = (0..<20).map { i in Task { try await stub.echo(EchoRequest(index: UInt32(i), delayMs: 300)) } }
        try await waitUntil { echo.started.load(ordering: .relaxed) == 20 }

        server.drain()
        for (i, call) in inFlight.enumerated() {
            let reply = try await call.value
            XCTAssertEqual(reply.index, UInt32(i), "a call in flight during drain completes")
        }
        await server.waitUntilClosed()
        // The listener is gone: a new call cannot connect.
        await assertStatus(.unavailable) { try await stub.echo(EchoRequest()) }
        await client.close()
    }

    func testCallsDuringDrainMoveToAFreshConnection() async throws {
        // Two servers behind one address is not possible on loopback, so the
        // client is shown a drain by one server while it keeps listening: a
        // connection-level drain (idle timeout) rather than a server shutdown.
        let echo = EchoService()
        let (server, port) = try await startServer([echo], configuration: .init(idleTimeout: .milliseconds(200)))
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        let value = try await stub.echo(EchoRequest(index: 1)).index
        XCTAssertEqual(value, 1)
        // Let the connection go idle: the server drains it (GOAWAY, PING, close).
        try await waitUntil { server.openConnections.isEmpty }
        for i in 2..<50 {
            let value = try await stub.echo(EchoRequest(index: UInt32(i))).index
            XCTAssertEqual(value, UInt32(i))
        }
        await client.close()
        server.drain()
    }

    func testClientReconnectsAfterServerRestart() async throws {
        let (first, port) = try await startServer([InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port,
                               configuration: .init(initialBackoff: .milliseconds(20), maxBackoff: .milliseconds(100)))
        let stub = InlineEcho.Client(transport: client)
        let value = try await stub.echo(EchoRequest(index: 1)).index
        XCTAssertEqual(value, 1)
        first.drain()
        await first.waitUntilClosed()
        await assertStatus(.unavailable) { try await stub.echo(EchoRequest()) }

        let (second, _) = try await startServer([InlineEchoService()], configuration: .init(port: port))
        var reply: EchoResponse?
        let deadline = ContinuousClock.now + .seconds(5)
        while reply == nil, ContinuousClock.now < deadline {
            reply = try? await stub.echo(EchoRequest(index: 2))
            if reply == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        XCTAssertEqual(reply?.index, 2, "the client reconnected to the restarted server")
        await client.close()
        second.drain()
    }

    func testConnectionLimit() async throws {
        let (server, port) = try await startServer([InlineEchoService()], configuration: .init(maxConnections: 1))
        let first = RPCClient(host: "127.0.0.1", port: port)
        let value = try await InlineEcho.Client(transport: first).echo(EchoRequest(index: 1)).index
        XCTAssertEqual(value, 1)
        let second = RPCClient(host: "127.0.0.1", port: port, configuration: .init(initialBackoff: .seconds(10)))
        let refused = await assertStatus(.unavailable) { try await InlineEcho.Client(transport: second).echo(EchoRequest()) }
        XCTAssertTrue(refused?.message.contains("connection limit") == true, refused?.message ?? "")
        let again = try await InlineEcho.Client(transport: first).echo(EchoRequest(index: 2)).index
        XCTAssertEqual(again, 2)
        await first.close()
        await second.close()
        server.drain()
    }

    func testGracefulShutdownThroughServiceLifecycle() async throws {
        let echo = EchoService()
        let server = try RPCServer(services: [echo], logger: quietLogger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [], logger: quietLogger)
        let running = Task { try await group.run() }
        try await waitUntil { server.localAddress != nil }
        let client = RPCClient(address: server.localAddress!)
        let slow = Task { try await Echo.Client(transport: client).echo(EchoRequest(index: 5, delayMs: 200)) }
        try await waitUntil { echo.started.load(ordering: .relaxed) == 1 }
        await group.triggerGracefulShutdown()
        let value = try await slow.value.index
        XCTAssertEqual(value, 5, "the call in flight finished during shutdown")
        try await running.value
        await client.close()
    }
}

/// SIGTERM, delivered to this very process, drains the server through
/// swift-service-lifecycle: the call in flight completes and `run()` returns.
final class SignalTests: XCTestCase {
    func testSIGTERMDrainsTheServer() async throws {
        let echo = EchoService()
        let server = try RPCServer(services: [echo], logger: quietLogger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm], logger: quietLogger)
        let running = Task { try await group.run() }
        // The group installs its signal handlers before it starts the services.
        try await waitUntil { server.localAddress != nil }
        let client = RPCClient(address: server.localAddress!)
        let slow = Task { try await Echo.Client(transport: client).echo(EchoRequest(index: 9, delayMs: 200)) }
        try await waitUntil { echo.started.load(ordering: .relaxed) == 1 }
        kill(getpid(), SIGTERM)
        let reply = try await slow.value
        XCTAssertEqual(reply.index, 9)
        try await running.value
        await client.close()
    }
}
