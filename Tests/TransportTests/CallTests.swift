import Foundation
import NIOCore
import RosterRPC
import RosterServer
import RosterTransport
import TestServices
import XCTest

/// Calls over loopback between a real server and client.
final class CallTests: XCTestCase {
    func testTwoServicesWithOneMethodIDAreRefused() throws {
        XCTAssertThrowsError(try RPCServer(services: [EchoService(), InlineEchoService(), EchoService()])) { error in
            XCTAssertEqual("\(error)", "method id 0x\(String(Echo.Method.echo.id, radix: 16)) is served by both test.v1.Echo/Echo and test.v1.Echo/Echo")
        }
        XCTAssertNoThrow(try RPCServer(services: [EchoService(), InlineEchoService()]))
    }

    func testTenThousandConcurrentCallsOnOneConnectionAnsweredOutOfOrder() async throws {
        let echo = EchoService()
        let (server, port) = try await startServer([echo, InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(connections: 1))
        let stub = Echo.Client(transport: client)
        let n = 10_000
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<n {
                group.addTask {
                    // Delays of 0-4 ms make replies overtake each other.
                    let request = EchoRequest(payload: Data([UInt8(i & 0xFF)]), index: UInt32(i), delayMs: UInt32(i * 7919 % 5))
                    let reply = try await stub.echo(request)
                    return reply.index == UInt32(i) && reply.payload == Data([UInt8(i & 0xFF)]) ? 0 : 1
                }
            }
            return try await group.reduce(0, +)
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertEqual(echo.started.load(ordering: .relaxed), n)
        await client.close()
        server.drain()
        await server.waitUntilClosed()
    }

    func testInlineHandler() async throws {
        let (server, port) = try await startServer([InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let reply = try await InlineEcho.Client(transport: client).echo(EchoRequest(payload: Data("hi".utf8), index: 7))
        XCTAssertEqual(reply, EchoResponse(payload: Data("hi".utf8), index: 7))
        await assertStatus(.permissionDenied) { try await InlineEcho.Client(transport: client).echo(EchoRequest(failWith: 7)) }
        await client.close()
        server.drain()
    }

    func testDeadlineExceededCancelsTheHandler() async throws {
        let echo = EchoService()
        let (server, port) = try await startServer([echo])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        let start = ContinuousClock.now
        await assertStatus(.deadlineExceeded) {
            try await stub.echo(EchoRequest(delayMs: 5_000), options: CallOptions(timeout: .milliseconds(100)))
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(3))
        try await waitUntil { echo.cancellations.load(ordering: .relaxed) == 1 }
        // The connection is fine afterwards.
        let reply = try await stub.echo(EchoRequest(index: 1))
        XCTAssertEqual(reply.index, 1)
        await client.close()
        server.drain()
    }

    func testServerEnforcesDeadlineWithoutClientTimer() async throws {
        // The server's own default timeout, with a client that sets none.
        let echo = EchoService()
        let (server, port) = try await startServer([echo], configuration: .init(defaultTimeout: .milliseconds(100)))
        let client = RPCClient(host: "127.0.0.1", port: port)
        await assertStatus(.deadlineExceeded) { try await Echo.Client(transport: client).echo(EchoRequest(delayMs: 5_000)) }
        try await waitUntil { echo.cancellations.load(ordering: .relaxed) == 1 }
        await client.close()
        server.drain()
    }

    func testClientCancellationReachesTheServer() async throws {
        let echo = EchoService()
        let (server, port) = try await startServer([echo])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        let call = Task { try await stub.echo(EchoRequest(delayMs: 10_000)) }
        try await waitUntil { echo.started.load(ordering: .relaxed) == 1 }
        call.cancel()
        do {
            _ = try await call.value
            XCTFail("a cancelled call must not succeed")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .cancelled)
        }
        try await waitUntil { echo.cancellations.load(ordering: .relaxed) == 1 }
        await client.close()
        server.drain()
    }

    /// A task cancelled before its call is handed to the connection: the
    /// cancellation finds no call yet, so the call must be cancelled behind
    /// it, not left waiting for the handler's reply.
    func testACallFromAnAlreadyCancelledTaskIsCancelled() async throws {
        let echo = EchoService()
        let (server, port) = try await startServer([echo])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        _ = try await stub.echo(EchoRequest(index: 1))  // the connection is open
        let call = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await stub.echo(EchoRequest(delayMs: 10_000))
        }
        let started = ContinuousClock.now
        do {
            _ = try await call.value
            XCTFail("a cancelled call must not succeed")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .cancelled)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(5), "the call waited for its reply")
        // The connection carries on.
        let reply = try await stub.echo(EchoRequest(index: 2))
        XCTAssertEqual(reply.index, 2)
        await client.close()
        server.drain()
    }

    func testUnknownMethodIsUnimplemented() async throws {
        let (server, port) = try await startServer([EchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let missing = RPCMethodDescriptor(service: "test.v1.Echo", method: "Missing", id: 0x0064_0063)
        await assertStatus(.unimplemented) {
            let _: EchoResponse = try await client.unary(missing, request: EchoRequest(), options: .defaults)
        }
        // The inline service is not hosted on this server either.
        await assertStatus(.unimplemented) { try await InlineEcho.Client(transport: client).echo(EchoRequest()) }
        // The connection stays up.
        let reply = try await Echo.Client(transport: client).echo(EchoRequest(index: 3))
        XCTAssertEqual(reply.index, 3)
        await client.close()
        server.drain()
    }

    func testUndecodableRequestIsInvalidArgument() async throws {
        let (server, port) = try await startServer([EchoService(), InlineEchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        for method in [Echo.Method.echo, InlineEcho.Method.echo] {
            let error = await assertStatus(.invalidArgument) {
                // Field 1 claims 100 bytes but 1 follows.
                let _: EchoResponse = try await client.unary(method, request: RawMessage([0x0A, 100, 0]), options: .defaults)
            }
            XCTAssertTrue(error?.message.contains("does not decode") == true, error?.message ?? "")
        }
        let reply = try await Echo.Client(transport: client).echo(EchoRequest(index: 4))
        XCTAssertEqual(reply.index, 4)
        await client.close()
        server.drain()
    }

    /// A service's interceptors run before every one of its methods, before
    /// the request is decoded; a service without them is not affected.
    func testInterceptorsGuardEveryMethodOfTheirServiceBeforeDecoding() async throws {
        struct Guarded: RPCService {
            let inner: InlineEchoService
            var methods: [RPCServerMethod] { inner.methods }
            var interceptors: [any RPCInterceptor] { [RoleCheck(tokens: ["test": ["t"], "client": ["c"]], otherwise: ["test"])] }
        }
        let inline = InlineEchoService()
        let (server, port) = try await startServer([Guarded(inner: inline), EchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let garbage = RawMessage([0x0A, 100, 0])
        let missing = await assertStatus(.unauthenticated) {
            let _: EchoResponse = try await client.unary(InlineEcho.Method.echo, request: garbage, options: .defaults)
        }
        XCTAssertTrue(missing?.message.contains("needs a test token") == true, missing?.message ?? "")
        await assertStatus(.unauthenticated) {
            let _: EchoResponse = try await client.unary(InlineEcho.Method.echo, request: garbage, options: CallOptions().bearer("x"))
        }
        await assertStatus(.permissionDenied) {
            let _: EchoResponse = try await client.unary(InlineEcho.Method.echo, request: garbage, options: CallOptions().bearer("c"))
        }
        XCTAssertEqual(inline.runs.value.load(ordering: .relaxed), 0, "a refused call never reached the handler")
        let reply = try await InlineEcho.Client(transport: client).echo(EchoRequest(index: 5), options: CallOptions().bearer("t"))
        XCTAssertEqual(reply.index, 5)
        let open = try await Echo.Client(transport: client).echo(EchoRequest(index: 6))
        XCTAssertEqual(open.index, 6, "another service's interceptors do not apply")
        await client.close()
        server.drain()
    }

    func testHandlerErrorsBecomeStatuses() async throws {
        let (server, port) = try await startServer([EchoService()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        for code in RPCStatusCode.allCases where code != .ok {
            let error = await assertStatus(code) { try await stub.echo(EchoRequest(failWith: UInt32(code.rawValue))) }
            XCTAssertEqual(error?.message, "asked to fail with \(code.rawValue)")
        }
        let error = await assertStatus(.internal) { try await stub.echo(EchoRequest(failPlainly: true)) }
        XCTAssertEqual(error?.message, "internal error in test.v1.Echo/Echo", "no detail of the error leaks")
        await client.close()
        server.drain()
    }

    func testMetadataAndPing() async throws {
        struct Recorder: Echo.Handler {
            func echo(_ request: EchoRequest, context: RPCContext) async throws -> EchoResponse {
                guard context.metadata["authorization"] == "Bearer t0ken" else { throw RPCError(.unauthenticated, "no token") }
                XCTAssertNotNil(context.deadline)
                return EchoResponse(payload: Data(context.method.description.utf8))
            }
        }
        let (server, port) = try await startServer([Recorder()])
        let client = RPCClient(host: "127.0.0.1", port: port)
        let stub = Echo.Client(transport: client)
        await assertStatus(.unauthenticated) { try await stub.echo(EchoRequest()) }
        let reply = try await stub.echo(EchoRequest(), options: CallOptions(timeout: .seconds(5), metadata: ["authorization": "Bearer t0ken"]))
        XCTAssertEqual(String(decoding: reply.payload, as: UTF8.self), "test.v1.Echo/Echo")
        let rtt = try await client.ping()
        XCTAssertLessThan(rtt, .seconds(1))
        await client.close()
        server.drain()
    }

    func testLargeMessagesUpToTheFrameLimit() async throws {
        let (server, port) = try await startServer([InlineEchoService()], configuration: .init(maxFrameSize: 64 * 1024))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(maxFrameSize: 64 * 1024))
        let stub = InlineEcho.Client(transport: client)
        let big = Data(repeating: 0xAB, count: 60_000)
        let reply = try await stub.echo(EchoRequest(payload: big))
        XCTAssertEqual(reply.payload, big)
        // Past the client's own limit the call never leaves.
        await assertStatus(.resourceExhausted) { try await stub.echo(EchoRequest(payload: Data(count: 70_000))) }
        // Past the server's limit the server closes the connection, saying why.
        let generous = RPCClient(host: "127.0.0.1", port: port)
        let refused = await assertStatus(.unavailable) {
            try await InlineEcho.Client(transport: generous).echo(EchoRequest(payload: Data(count: 70_000)))
        }
        XCTAssertTrue(refused?.message.contains("RESOURCE_EXHAUSTED") == true, refused?.message ?? "")
        await generous.close()
        // A new connection serves again.
        let again = try await stub.echo(EchoRequest(index: 9))
        XCTAssertEqual(again.index, 9)
        await client.close()
        server.drain()
    }
}
