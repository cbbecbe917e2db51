import Foundation
import NIOCore
import NIOPosix
import RosterRPC
@_spi(Testing) import RosterServer
@_spi(Testing) import RosterTransport
import TestServices
import XCTest

/// Defects an outside review found (issue 12): socket options, memory kept
/// after connections close, deadlines of calls that waited in a queue.
final class HardeningTests: XCTestCase {
    /// TCP_NODELAY lives at IPPROTO_TCP. Set at SOL_SOCKET, option 1 is
    /// SO_DEBUG: refused to anyone but root, and Nagle stays on.
    func testNagleIsOffAndSODebugUntouchedAtBothEnds() async throws {
        let (server, port) = try await startServer([InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        _ = try await InlineEcho.Client(transport: client).echo(EchoRequest(index: 1))
        let serverSide = server.openConnections
        let clientSide = client.openConnections
        XCTAssertEqual(serverSide.count, 1)
        XCTAssertEqual(clientSide.count, 1)
        for channel in serverSide + clientSide {
            let nodelay = try await channel.getOption(.tcpOption(.tcp_nodelay)).get()
            XCTAssertEqual(nodelay, 1, "TCP_NODELAY is off on \(channel)")
            let debug = try await channel.getOption(.socketOption(.init(rawValue: SO_DEBUG))).get()
            XCTAssertEqual(debug, 0, "SO_DEBUG was turned on for \(channel)")
        }
        await client.close()
        server.drain()
        await server.waitUntilClosed()
    }

    /// Connections that close (before their preface, after it, or in the
    /// middle of a large frame) leave no handler and no buffer behind.
    func testClosedConnectionsLeaveNothingBehind() async throws {
        let (server, port) = try await startServer([InlineEchoService()], configuration: .init(drainTimeout: .milliseconds(200)))
        let body = [UInt8](repeating: 0xAB, count: 256 * 1024)
        var header: [UInt8] = withUnsafeBytes(of: UInt32(WireProtocol.defaultMaxFrameSize).bigEndian, Array.init)
        header += [0x01, 0x00, 0x00, 0x00, 0x00, 0x01]
        for round in 0..<150 {
            let raw = try await RawConnection.connect(port: port)
            switch round % 3 {
            case 0: break
            case 1: try await raw.send(preface)
            default: try await raw.send(preface + header + body) // a 4 MiB frame, cut short
            }
            try await raw.channel.close()
        }
        try await waitUntil(timeout: .seconds(10)) { server.openConnections.isEmpty && server.liveConnectionHandlers == 0 }
        XCTAssertEqual(server.liveConnectionHandlers, 0, "closed connections are still in memory")
        server.drain()
        await server.waitUntilClosed()
    }

    /// A call whose deadline passed while it waited behind slow calls that
    /// arrived in the same read is answered DEADLINE_EXCEEDED without running.
    func testInlineCallWhoseDeadlinePassedInTheQueueDoesNotRun() async throws {
        let service = InlineEchoService()
        let (server, port) = try await startServer([service], configuration: .init(drainTimeout: .milliseconds(200)))
        let raw = try await RawConnection.connect(port: port)
        let method = InlineEcho.Method.echo.id
        let slow = requestFrame(callID: 1, methodID: method, message: EchoRequest(index: 1, delayMs: 30).serializedBytes())
        let hurried = requestFrame(callID: 2, methodID: method, message: EchoRequest(index: 2).serializedBytes(), timeoutMilliseconds: 5)
        let relaxed = requestFrame(callID: 3, methodID: method, message: EchoRequest(index: 3).serializedBytes(), timeoutMilliseconds: 10_000)
        try await raw.send(preface + slow + hurried + relaxed) // one write: one read on the server
        try await waitUntil { raw.frames.count >= 3 }
        let byCall = Dictionary(uniqueKeysWithValues: raw.frames.map { ($0.callID, $0.payload.first) })
        XCTAssertEqual(byCall[1], RPCStatusCode.ok.rawValue)
        XCTAssertEqual(byCall[2], RPCStatusCode.deadlineExceeded.rawValue)
        XCTAssertEqual(byCall[3], RPCStatusCode.ok.rawValue)
        XCTAssertEqual(service.runs.value.load(ordering: .relaxed), 2, "the expired call ran")
        try await raw.channel.close()
        server.drain()
        await server.waitUntilClosed()
    }

    /// The client fails a call at its deadline even when the server never answers.
    func testClientFailsTheCallAtItsDeadline() async throws {
        // A listener that accepts and never reads or answers.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .bind(host: "127.0.0.1", port: 0).get()
        let client = RPCClient(host: "127.0.0.1", port: silent.localAddress!.port!)
        let started = ContinuousClock.now
        do {
            _ = try await InlineEcho.Client(transport: client).echo(EchoRequest(), options: CallOptions(timeout: .milliseconds(100)))
            XCTFail("answered")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3))
        await client.close()
        try await silent.close()
    }
}
