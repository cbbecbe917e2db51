import Foundation
import NIOCore
import NIOEmbedded
import RosterRPC
import RosterServer
import RosterServerCore
import RosterTransport
import Synchronization
import TestServices
import XCTest

/// The connection handler on a testing channel with a clock moved by hand:
/// idle timeouts, drain timeouts and deadlines are tested without sleeps or
/// sockets.
final class ServerConnectionHandlerTests: XCTestCase {
    private var loop: NIOAsyncTestingEventLoop!
    private var channel: NIOAsyncTestingChannel!
    private var decoder = FrameDecoder()
    private var handler: ServerConnectionHandler!

    private func start(_ services: [any RPCService] = [], configuration: RPCServer.Configuration) async throws {
        loop = NIOAsyncTestingEventLoop()
        let routes = try RouteTable(services: services)
        nonisolated(unsafe) let handler = ServerConnectionHandler(routes: routes, configuration: configuration, metrics: ServerMetrics(), logger: quietLogger)
        self.handler = handler
        channel = try await NIOAsyncTestingChannel(loop: loop) { channel in
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 7401))
        var preface = channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
        FrameWriter.writePreface(into: &preface)
        try await channel.writeInbound(preface)
        let answered = try await frames()
        guard case .preface = answered.first else { return XCTFail("no preface: \(answered)") }
    }

    override func tearDown() async throws {
        _ = try? await channel?.finish()
        try? await loop?.shutdownGracefully()
    }

    /// The frames the handler wrote since the last call.
    private func frames() async throws -> [InboundFrame] {
        var out: [InboundFrame] = []
        while var buffer = try await channel.readOutbound(as: ByteBuffer.self) {
            while let frame = try decoder.decode(buffer: &buffer) { out.append(frame) }
        }
        return out
    }

    private func types(_ frames: [InboundFrame]) -> [FrameType?] {
        frames.map { if case .frame(let frame) = $0 { frame.type } else { nil } }
    }

    private static let drainPing: UInt64 = 0x4452_4149_4E00_0000

    /// No request for two half-periods: GOAWAY and the drain PING; the PING
    /// coming back closes the connection.
    func testAnIdleConnectionDrainsAfterTwoQuietChecks() async throws {
        try await start(configuration: .init(idleTimeout: .seconds(10)))
        // Checks every 5 s: the preface made the first period busy, the
        // second is one quiet check, the third the second in a row.
        await loop.advanceTime(by: .seconds(10))
        let afterOne = try await frames()
        XCTAssertEqual(afterOne.count, 0, "one quiet check is not idle")
        await loop.advanceTime(by: .seconds(5))
        let drained = try await frames()
        XCTAssertEqual(types(drained), [.goAway, .ping])
        XCTAssertTrue(channel.isActive)
        try await channel.writeInbound(FrameWriter.ping(Self.drainPing, ack: true, allocator: channel.allocator))
        await loop.run()
        XCTAssertFalse(channel.isActive, "closed once the PING came back")
    }

    func testARequestResetsTheIdleCount() async throws {
        try await start([InlineEchoService()], configuration: .init(idleTimeout: .seconds(10)))
        await loop.advanceTime(by: .seconds(5))
        let request = FrameWriter.request(callID: 1, head: RequestHead(methodID: InlineEcho.Method.echo.id, timeoutMilliseconds: 0, metadata: [:]),
                                          message: EchoRequest(index: 1), allocator: channel.allocator)
        try await channel.writeInbound(request)
        let answered = try await frames()
        XCTAssertEqual(types(answered), [.response])
        await loop.advanceTime(by: .seconds(5))
        let busy = try await frames()
        XCTAssertEqual(busy.count, 0, "the request made that period busy")
        await loop.advanceTime(by: .seconds(10))
        let drained = try await frames()
        XCTAssertEqual(types(drained), [.goAway, .ping])
    }

    /// A peer that never answers the drain PING is closed at the drain timeout.
    func testADrainIsForcedAtItsTimeout() async throws {
        try await start(configuration: .init(idleTimeout: nil, drainTimeout: .seconds(30)))
        try await channel.pipeline.triggerUserOutboundEvent(DrainEvent()).get()
        let drained = try await frames()
        XCTAssertEqual(types(drained), [.goAway, .ping])
        await loop.advanceTime(by: .seconds(29))
        XCTAssertTrue(channel.isActive)
        await loop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    /// An async call still running at its deadline is answered
    /// DEADLINE_EXCEEDED when the loop's clock reaches it.
    func testAnAsyncCallIsAnsweredAtItsDeadline() async throws {
        try await start([EchoService()], configuration: .init(idleTimeout: nil))
        let request = FrameWriter.request(callID: 3, head: RequestHead(methodID: Echo.Method.echo.id, timeoutMilliseconds: 250, metadata: [:]),
                                          message: EchoRequest(delayMs: 600_000), allocator: channel.allocator)
        try await channel.writeInbound(request)
        await loop.advanceTime(by: .milliseconds(249))
        let early = try await frames()
        XCTAssertEqual(early.count, 0)
        await loop.advanceTime(by: .milliseconds(1))
        let answered = try await frames()
        guard case .frame(let response)? = answered.first, response.type == .response else { return XCTFail("\(answered)") }
        XCTAssertEqual(response.callID, 3)
        XCTAssertEqual(response.payload.getInteger(at: response.payload.readerIndex, as: UInt8.self), RPCStatusCode.deadlineExceeded.rawValue)
    }

    /// A call id still in flight used again is a protocol error: GOAWAY
    /// INVALID_ARGUMENT, then the connection closes.
    func testAReusedCallIDClosesTheConnection() async throws {
        try await start([EchoService()], configuration: .init(idleTimeout: nil))
        for _ in 0..<2 {
            try await channel.writeInbound(FrameWriter.request(
                callID: 9, head: RequestHead(methodID: Echo.Method.echo.id, timeoutMilliseconds: 0, metadata: [:]),
                message: EchoRequest(delayMs: 600_000), allocator: channel.allocator))
        }
        await loop.run()
        let answered = try await frames()
        guard case .frame(let goAway)? = answered.last, goAway.type == .goAway else { return XCTFail("\(answered)") }
        XCTAssertEqual(goAway.payload.getInteger(at: goAway.payload.readerIndex, as: UInt8.self), RPCStatusCode.invalidArgument.rawValue)
        XCTAssertFalse(channel.isActive)
    }

    // MARK: Runs of inline calls

    /// The requests of one read that share a head are answered as one run,
    /// each under its own call id, in order; a frame of another kind, a
    /// request with another head, and the end of a read each end a run.
    func testRequestsOfOneReadWithOneHeadAreAnsweredAsOneRun() async throws {
        let service = RunEchoService()
        try await start([service], configuration: .init(idleTimeout: nil))
        var buffer = channel.allocator.buffer(capacity: 4096)
        for index in 1...5 { append(index, to: &buffer) }
        append(6, timeout: 500, to: &buffer) // another head: a run of its own
        append(7, timeout: 500, to: &buffer)
        buffer.writeImmutableBuffer(FrameWriter.ping(42, ack: false, allocator: channel.allocator))
        append(8, to: &buffer)
        try await channel.writeInbound(buffer)
        var second = channel.allocator.buffer(capacity: 256)
        append(9, to: &second)
        append(10, to: &second)
        try await channel.writeInbound(second)

        let answered = try await frames()
        XCTAssertEqual(types(answered), Array(repeating: .response, count: 7) + [.ping] + Array(repeating: .response, count: 3))
        XCTAssertEqual(service.runs.lengths, [5, 2, 1, 2])
        let responses = try answered.compactMap(Self.echo)
        XCTAssertEqual(responses.map(\.callID), Array(1...10))
        XCTAssertEqual(responses.map(\.index), Array(1...10), "each call has its own answer")
        XCTAssertEqual(responses.map(\.status), Array(repeating: .ok, count: 10))
    }

    /// A call of a run that fails gets its own error; the calls around it
    /// are answered; a handler that answers fewer calls than it was given
    /// leaves none hanging.
    func testEachCallOfARunGetsItsOwnOutcome() async throws {
        let service = RunEchoService(answerAtMost: 3)
        try await start([service], configuration: .init(idleTimeout: nil))
        var buffer = channel.allocator.buffer(capacity: 4096)
        for index in 1...5 { append(index, failWith: index == 2 ? RPCStatusCode.notFound.rawValue : 0, to: &buffer) }
        try await channel.writeInbound(buffer)
        let responses = try await frames().compactMap(Self.echo)
        XCTAssertEqual(service.runs.lengths, [5])
        XCTAssertEqual(responses.map(\.callID), Array(1...5), "every call answered")
        guard responses.count == 5 else { return }
        XCTAssertEqual(responses.map(\.status), [.ok, .notFound, .ok, .internal, .internal])
        XCTAssertEqual(responses[3].text, "the handler answered 3 of a run of 5 calls")
        XCTAssertEqual(responses.map(\.index), [1, nil, 3, nil, nil])
    }

    /// A run is admitted once, for all its calls: a refusal answers each of
    /// them, and the handler never sees them. A run with the right token in
    /// the same read is served.
    func testARefusedRunAnswersEveryCallAndRunsNone() async throws {
        let service = RunEchoService(interceptors: [NeedsKey()])
        try await start([service], configuration: .init(idleTimeout: nil))
        var buffer = channel.allocator.buffer(capacity: 4096)
        for index in 1...3 { append(index, to: &buffer) }
        for index in 4...5 { append(index, metadata: ["key": "yes"], to: &buffer) }
        try await channel.writeInbound(buffer)
        let responses = try await frames().compactMap(Self.echo)
        XCTAssertEqual(service.runs.lengths, [2])
        XCTAssertEqual(responses.map(\.callID), Array(1...5))
        XCTAssertEqual(responses.map(\.status), [.unauthenticated, .unauthenticated, .unauthenticated, .ok, .ok])
    }

    /// A call id of 0 inside a run is a protocol error: the calls before it
    /// are answered first, then GOAWAY names the last one, and the
    /// connection closes.
    func testAViolationInsideARunAnswersTheCallsBeforeIt() async throws {
        let service = RunEchoService()
        try await start([service], configuration: .init(idleTimeout: nil))
        var buffer = channel.allocator.buffer(capacity: 4096)
        for callID in [1, 2, 0, 3] { append(callID, to: &buffer) }
        try await channel.writeInbound(buffer)
        await loop.run()
        let answered = try await frames()
        XCTAssertEqual(types(answered), [.response, .response, .goAway])
        XCTAssertEqual(service.runs.lengths, [2])
        guard case .frame(let goAway)? = answered.last else { return XCTFail("\(answered)") }
        XCTAssertEqual(goAway.payload.getInteger(at: goAway.payload.readerIndex, as: UInt8.self), RPCStatusCode.invalidArgument.rawValue)
        XCTAssertEqual(goAway.payload.getInteger(at: goAway.payload.readerIndex + 1, as: UInt32.self), 2, "the last call id taken")
        XCTAssertFalse(channel.isActive)
    }

    /// A run that held a large request (or head) lets its storage go; a
    /// run of small calls keeps what it used for the next.
    func testARunKeepsLittleMemoryBetweenReads() async throws {
        try await start([RunEchoService()], configuration: .init(idleTimeout: nil))
        var buffer = channel.allocator.buffer(capacity: 1 << 20)
        append(1, metadata: ["a": String(repeating: "n", count: 40_000), "b": String(repeating: "n", count: 40_000)], payload: 512 << 10, to: &buffer)
        append(2, metadata: ["a": String(repeating: "n", count: 40_000), "b": String(repeating: "n", count: 40_000)], payload: 512 << 10, to: &buffer)
        try await channel.writeInbound(buffer)
        let large = try await frames().compactMap(Self.echo)
        XCTAssertEqual(large.map(\.status), [.ok, .ok])
        let afterLarge = try await runBytesKept()
        XCTAssertEqual(afterLarge, 0, "over a megabyte held, none kept")
        var small = channel.allocator.buffer(capacity: 4096)
        for index in 3...40 { append(index, to: &small) }
        try await channel.writeInbound(small)
        let answered = try await frames().compactMap(Self.echo)
        XCTAssertEqual(answered.count, 38)
        let afterSmall = try await runBytesKept()
        XCTAssertGreaterThan(afterSmall, 0, "kept for the next run")
        XCTAssertLessThanOrEqual(afterSmall, 2 * (64 << 10))
    }

    /// What the handler keeps allocated for runs, read on its loop.
    private func runBytesKept() async throws -> Int {
        nonisolated(unsafe) let handler = self.handler!
        return try await loop.submit { handler.runBytesKept }.get()
    }

    /// Appends an echo request with call id and index `index`.
    private func append(_ index: Int, timeout: UInt32 = 0, metadata: Metadata = [:], failWith: UInt8 = 0, payload: Int = 0,
                        to buffer: inout ByteBuffer) {
        let message = EchoRequest(payload: Data(repeating: 7, count: payload), index: UInt32(index), failWith: UInt32(failWith))
        FrameWriter.appendRequest(callID: UInt32(index), head: RequestHead(methodID: InlineEcho.Method.echo.id, timeoutMilliseconds: timeout, metadata: metadata),
                                  message: message, size: message.serializedSize, to: &buffer)
    }

    /// A response frame's call id, status, echoed index (if OK) and error text.
    private static func echo(_ inbound: InboundFrame) throws -> (callID: Int, status: RPCStatusCode?, index: Int?, text: String)? {
        guard case .frame(let frame) = inbound, frame.type == .response else { return nil }
        var payload = frame.payload
        let status = payload.readInteger(as: UInt8.self).flatMap(RPCStatusCode.init(rawValue:))
        let body = payload.readBytes(length: payload.readableBytes) ?? []
        let index = status == .ok ? Int(try EchoResponse(serializedBytes: body).index) : nil
        return (Int(frame.callID), status, index, String(decoding: body, as: UTF8.self))
    }
}

/// Echo answered inline and in runs (`RPCServerMethod.run`): it records the
/// length of each run; a request with `failWith` fails with that code; a
/// run answers at most `answerAtMost` of its calls.
private struct RunEchoService: RPCService {
    final class Runs: Sendable {
        private let log = Mutex<[Int]>([])
        var lengths: [Int] { log.withLock { $0 } }
        func append(_ length: Int) { log.withLock { $0.append(length) } }
    }

    let runs = Runs()
    var answerAtMost = Int.max
    var interceptors: [any RPCInterceptor] = []

    var methods: [RPCServerMethod] {
        let answerAtMost = answerAtMost, runs = runs
        @Sendable func echo(_ bytes: UnsafeRawBufferPointer) throws -> EchoResponse {
            let request = try EchoRequest(decoding: bytes)
            if request.failWith != 0 { throw RPCError(RPCStatusCode(rawValue: UInt8(request.failWith)) ?? .unknown, "failed as asked") }
            return EchoResponse(index: request.index)
        }
        return [RPCServerMethod(InlineEcho.Method.echo, body: .inline { bytes, _, sink in
            let response = try echo(bytes)
            sink(response.serializedSize) { _ = response.encode(into: $0) }
        }, run: { requests, _, answer, fail in
            runs.append(requests.count)
            for request in requests.prefix(answerAtMost) {
                do {
                    let response = try echo(request)
                    answer(response.serializedSize) { _ = response.encode(into: $0) }
                } catch {
                    fail(error)
                }
            }
        })]
    }
}

/// Refuses a call whose metadata has no `key`.
private struct NeedsKey: RPCInterceptor {
    func intercept(_ context: RPCContext) throws(RPCError) {
        guard context.metadata["key"] != nil else { throw RPCError(.unauthenticated, "no key") }
    }
}
