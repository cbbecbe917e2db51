import RosterInProcess
import RosterRPC
import TestServices
import XCTest

/// The in-process transport answers as a server over TCP would: same
/// routes, interceptors, statuses and deadlines, with no socket.
final class InProcessTransportTests: XCTestCase {
    func testCallsReachTheHandlersAndFailuresAnswerTheSameStatuses() async throws {
        let echo = EchoService()
        let inline = InlineEchoService()
        let transport = try InProcessTransport(services: [echo, inline], logger: quietLogger)
        let reply = try await Echo.Client(transport: transport).echo(EchoRequest(payload: Data([1, 2, 3]), index: 7))
        XCTAssertEqual(reply.payload, Data([1, 2, 3]))
        XCTAssertEqual(reply.index, 7)
        let fast = try await InlineEcho.Client(transport: transport).echo(EchoRequest(index: 8))
        XCTAssertEqual(fast.index, 8)

        let failed = await assertStatus(.alreadyExists) {
            try await Echo.Client(transport: transport).echo(EchoRequest(failWith: UInt32(RPCStatusCode.alreadyExists.rawValue)))
        }
        XCTAssertEqual(failed?.message, "asked to fail with \(RPCStatusCode.alreadyExists.rawValue)")
        let plain = await assertStatus(.internal) { try await Echo.Client(transport: transport).echo(EchoRequest(failPlainly: true)) }
        XCTAssertEqual(plain?.message, "internal error in test.v1.Echo/Echo", "no detail of the error leaks")
        for method in [Echo.Method.echo, InlineEcho.Method.echo] {
            let error = await assertStatus(.invalidArgument) {
                let _: EchoResponse = try await transport.unary(method, request: RawMessage([0x0A, 100, 0]), options: .defaults)
            }
            XCTAssertTrue(error?.message.contains("does not decode") == true, error?.message ?? "")
        }
        let missing = RPCMethodDescriptor(service: "test.v1.Echo", method: "Missing", id: 0x0064_0063)
        await assertStatus(.unimplemented) {
            let _: EchoResponse = try await transport.unary(missing, request: EchoRequest(), options: .defaults)
        }
    }

    /// A handler still running at its deadline is cancelled and the call
    /// answers DEADLINE_EXCEEDED at the deadline, not when the handler ends.
    func testADeadlineCancelsTheHandler() async throws {
        let echo = EchoService()
        let transport = try InProcessTransport(services: [echo], logger: quietLogger)
        let started = ContinuousClock.now
        await assertStatus(.deadlineExceeded) {
            try await Echo.Client(transport: transport).echo(EchoRequest(delayMs: 60_000), options: CallOptions(timeout: .milliseconds(20)))
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(30), "answered at the deadline")
        XCTAssertEqual(echo.cancellations.load(ordering: .relaxed), 1)
    }

    func testInterceptorsRunBeforeDecoding() async throws {
        struct Guarded: RPCService {
            let inner: InlineEchoService
            var methods: [RPCServerMethod] { inner.methods }
            var interceptors: [any RPCInterceptor] { [RoleCheck(tokens: ["test": ["t"]], otherwise: ["test"])] }
        }
        let inline = InlineEchoService()
        let transport = try InProcessTransport(services: [Guarded(inner: inline)], logger: quietLogger)
        await assertStatus(.unauthenticated) {
            let _: EchoResponse = try await transport.unary(InlineEcho.Method.echo, request: RawMessage([0x0A, 100, 0]), options: .defaults)
        }
        XCTAssertEqual(inline.runs.value.load(ordering: .relaxed), 0)
        let reply = try await InlineEcho.Client(transport: transport).echo(EchoRequest(index: 9), options: CallOptions().bearer("t"))
        XCTAssertEqual(reply.index, 9)
    }
}
