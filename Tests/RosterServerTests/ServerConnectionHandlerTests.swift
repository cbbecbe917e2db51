import NIOCore
import NIOEmbedded
import RosterRPC
import RosterServer
import RosterServerCore
import RosterTransport
import TestServices
import XCTest

/// The connection handler on a testing channel with a clock moved by hand:
/// idle timeouts, drain timeouts and deadlines are tested without sleeps or
/// sockets.
final class ServerConnectionHandlerTests: XCTestCase {
    private var loop: NIOAsyncTestingEventLoop!
    private var channel: NIOAsyncTestingChannel!
    private var decoder = FrameDecoder()

    private func start(_ services: [any RPCService] = [], configuration: RPCServer.Configuration) async throws {
        loop = NIOAsyncTestingEventLoop()
        let routes = try RouteTable(services: services)
        channel = try await NIOAsyncTestingChannel(loop: loop) { channel in
            try channel.pipeline.syncOperations.addHandler(
                ServerConnectionHandler(routes: routes, configuration: configuration, metrics: ServerMetrics(), logger: quietLogger))
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
}
