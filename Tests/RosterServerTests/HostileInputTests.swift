import Foundation
import NIOCore
import RosterRPC
import RosterServer
import RosterTransport
import TestServices
import XCTest

/// A live server against bytes no well-behaved client sends. After each
/// abuse the server must answer (a GOAWAY where it can), close only that
/// connection, and go on serving everyone else.
final class HostileInputTests: XCTestCase {
    private var server: RPCServer!
    private var port = 0
    private let echo = EchoService()

    override func setUp() async throws {
        // A short drain timeout: raw connections never answer the drain PING.
        (server, port) = try await startServer([echo, InlineEchoService()], configuration: .init(drainTimeout: .milliseconds(500)))
    }

    override func tearDown() async throws {
        server.drain()
        await server.waitUntilClosed()
    }

    /// A well-behaved client still gets answers.
    private func assertServerStillServes(file: StaticString = #filePath, line: UInt = #line) async throws {
        let client = RPCClient(host: "127.0.0.1", port: port)
        let reply = try await InlineEcho.Client(transport: client).echo(EchoRequest(index: 42))
        XCTAssertEqual(reply.index, 42, file: file, line: line)
        await client.close()
    }

    /// The GOAWAY the server sent, as (status code, message).
    private func goAway(_ connection: RawConnection) -> (UInt8, String)? {
        guard let frame = connection.frames.last(where: { $0.type == 0x05 }), frame.payload.count >= 5 else { return nil }
        return (frame.payload[0], String(decoding: frame.payload[5...], as: UTF8.self))
    }

    func testWrongPreface() async throws {
        let raw = try await RawConnection.connect(port: port)
        try await raw.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed)
        XCTAssertEqual(Array(raw.bytes.prefix(4)), Array("ROST".utf8), "the server still introduces itself")
        let answer = goAway(raw)
        XCTAssertEqual(answer?.0, RPCStatusCode.invalidArgument.rawValue)
        XCTAssertEqual(answer?.1, "bad connection preface: expected magic 'ROST'")
        try await assertServerStillServes()
    }

    func testUnsupportedVersion() async throws {
        let raw = try await RawConnection.connect(port: port)
        try await raw.send([0x52, 0x4F, 0x53, 0x54, 0x00, 0x09, 0x00, 0x00])
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed)
        XCTAssertEqual(goAway(raw)?.0, RPCStatusCode.failedPrecondition.rawValue)
    }

    func testTruncatedFrameThenClose() async throws {
        let raw = try await RawConnection.connect(port: port)
        let frame = requestFrame(callID: 1, methodID: InlineEcho.Method.echo.id, message: EchoRequest(index: 1).serializedBytes())
        try await raw.send(preface + frame.prefix(frame.count - 3))
        try await raw.channel.close()
        try await assertServerStillServes()
    }

    func testHugeLengthIsRefusedBeforeBuffering() async throws {
        let raw = try await RawConnection.connect(port: port)
        try await raw.send(preface + [0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01])
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed, "no body needs to arrive for the refusal")
        let answer = goAway(raw)
        XCTAssertEqual(answer?.0, RPCStatusCode.resourceExhausted.rawValue)
        XCTAssertEqual(answer?.1, "frame of 4294967295 bytes exceeds the limit of 4194304")
        try await assertServerStillServes()
    }

    func testUnknownFrameType() async throws {
        let raw = try await RawConnection.connect(port: port)
        try await raw.send(preface + requestFrame(callID: 1, methodID: 0, message: [], type: 0x09))
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed)
        XCTAssertEqual(goAway(raw)?.1, "unexpected frame type 0x9 from a client")
        try await assertServerStillServes()
    }

    func testMalformedRequestHead() async throws {
        let raw = try await RawConnection.connect(port: port)
        // A REQUEST whose metadata count promises entries that are not there.
        let frame: [UInt8] = [0, 0, 0, 10, 0x01, 0, 0, 0, 0, 1] + [0, 0x65, 0, 1, 0, 0, 0, 0, 0, 5]
        try await raw.send(preface + frame)
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed)
        XCTAssertEqual(goAway(raw)?.1, "REQUEST metadata runs past the end of the frame")
        try await assertServerStillServes()
    }

    func testOneBadCallDoesNotCloseTheConnection() async throws {
        let raw = try await RawConnection.connect(port: port)
        let bad = requestFrame(callID: 1, methodID: InlineEcho.Method.echo.id, message: [0x0A, 0x7F])
        let unknown = requestFrame(callID: 2, methodID: 0xDEAD_BEEF, message: [])
        let good = requestFrame(callID: 3, methodID: InlineEcho.Method.echo.id, message: EchoRequest(index: 3).serializedBytes())
        try await raw.send(preface + bad + unknown + good)
        try await waitUntil { raw.frames.count == 3 }
        let frames = raw.frames
        XCTAssertEqual(frames.map(\.callID), [1, 2, 3])
        XCTAssertEqual(frames.map { $0.payload.first }, [RPCStatusCode.invalidArgument.rawValue, RPCStatusCode.unimplemented.rawValue, 0])
        XCTAssertEqual(try EchoResponse(serializedBytes: Array(frames[2].payload.dropFirst())).index, 3)
        XCTAssertTrue(raw.channel.isActive)
    }

    func testReusedCallIDIsAProtocolError() async throws {
        let raw = try await RawConnection.connect(port: port)
        let slow = requestFrame(callID: 5, methodID: Echo.Method.echo.id, message: EchoRequest(delayMs: 2_000).serializedBytes())
        try await raw.send(preface + slow + slow)
        let closed = await raw.waitForClose()
        XCTAssertTrue(closed)
        XCTAssertEqual(goAway(raw)?.1, "REQUEST reuses call id 5, which is still in flight")
    }

    func testAMegabyteOfRandomBytes() async throws {
        var rng = SystemRandomNumberGenerator()
        let noise = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for withPreface in [false, true] {
            let raw = try await RawConnection.connect(port: port)
            try? await raw.send((withPreface ? preface : []) + noise)
            let closed = await raw.waitForClose()
            XCTAssertTrue(closed)
        }
        try await assertServerStillServes()
    }

    func testDrainingConnectionRefusesNewCallsAsNotProcessed() async throws {
        let raw = try await RawConnection.connect(port: port)
        let slow = requestFrame(callID: 1, methodID: Echo.Method.echo.id, message: EchoRequest(index: 1, delayMs: 300).serializedBytes())
        try await raw.send(preface + slow)
        try await waitUntil { self.echo.started.load(ordering: .relaxed) == 1 }
        server.drain()
        try await waitUntil { raw.frames.contains { $0.type == 0x05 } }
        let late = requestFrame(callID: 2, methodID: InlineEcho.Method.echo.id, message: EchoRequest(index: 2).serializedBytes())
        try await raw.send(late)
        try await waitUntil { raw.frames.filter { $0.type == 0x02 }.count == 2 }
        let responses = raw.frames.filter { $0.type == 0x02 }
        let refused = try XCTUnwrap(responses.first { $0.callID == 2 })
        XCTAssertEqual(refused.payload.first, RPCStatusCode.unavailable.rawValue)
        XCTAssertEqual(refused.flags & 0x02, 0x02, "marked not processed, so a client may retry it elsewhere")
        let finished = try XCTUnwrap(responses.first { $0.callID == 1 })
        XCTAssertEqual(finished.payload.first, 0, "the call in flight completes")
    }

    func testIdleConnectionIsDrainedAndABusyOneIsNot() async throws {
        let (idleServer, idlePort) = try await startServer(
            [InlineEchoService()], configuration: .init(idleTimeout: .milliseconds(200), drainTimeout: .milliseconds(300)))
        defer { idleServer.drain() }
        let quiet = try await RawConnection.connect(port: idlePort)
        let busy = try await RawConnection.connect(port: idlePort)
        let mute = try await RawConnection.connect(port: idlePort) // never even sends the preface
        try await quiet.send(preface)
        try await busy.send(preface)
        // The busy connection sends a request every 25 ms for 800 ms: four idle periods.
        let started = ContinuousClock.now
        for i in 1...32 {
            try await busy.send(requestFrame(callID: UInt32(i), methodID: InlineEcho.Method.echo.id,
                                             message: EchoRequest(index: UInt32(i)).serializedBytes()))
            try await Task.sleep(for: .milliseconds(25))
        }
        XCTAssertFalse(busy.frames.contains { $0.type == 0x05 }, "a connection with requests is not idle")
        try await waitUntil { quiet.frames.contains { $0.type == 0x05 } }
        XCTAssertEqual(goAway(quiet)?.1, "idle timeout")
        let closed = await quiet.waitForClose()
        XCTAssertTrue(closed, "and was closed (it never answers the drain PING)")
        let muteClosed = await mute.waitForClose()
        XCTAssertTrue(muteClosed, "a connection that never sent its preface is closed too")
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3))
        try await waitUntil { busy.frames.filter { $0.type == 0x02 }.count == 32 }
    }

    func testAReaderThatNeverReadsCannotGrowTheServerWithoutBound() async throws {
        // The raw client never reads: responses back up in the server's socket,
        // the server stops reading, and the client's writes stall. Without
        // backpressure the server would take everything and buffer replies.
        let raw = try await RawConnection.connect(port: port, autoRead: false)
        try await raw.send(preface)
        let payload = EchoRequest(payload: Data(count: 1000)).serializedBytes()
        var id: UInt32 = 1
        // Write until the socket stays unwritable for half a second (the server
        // stopped reading), for at most 5 s.
        var written = 0
        var stalledSince: ContinuousClock.Instant?
        var stalled = false
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, !stalled {
            if raw.channel.isWritable {
                stalledSince = nil
                var frames: [UInt8] = []
                for _ in 0..<64 {
                    frames += requestFrame(callID: id, methodID: InlineEcho.Method.echo.id, message: payload)
                    id &+= 1
                    if id == 0 { id = 1 }
                }
                raw.channel.writeAndFlush(raw.channel.allocator.buffer(bytes: frames), promise: nil)
                written += frames.count
            } else {
                let since = stalledSince ?? .now
                stalledSince = since
                stalled = ContinuousClock.now - since > .milliseconds(500)
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        XCTAssertTrue(stalled, "the server kept reading from a client that never reads (\(written) bytes accepted)")
        XCTAssertLessThan(written, 64 << 20)
        try await assertServerStillServes()
        try await raw.channel.close()
    }
}

/// The worked example in docs/PROTOCOL.md, byte for byte.
final class ProtocolDocumentTests: XCTestCase {
    func testDocumentedExchange() async throws {
        let (server, port) = try await startServer([EchoService()], configuration: .init(drainTimeout: .milliseconds(200)))
        let raw = try await RawConnection.connect(port: port)
        let request: [UInt8] = [
            0x52, 0x4F, 0x53, 0x54, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x12, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x64, 0x00, 0x01,
            0x00, 0x00, 0x00, 0xFA,
            0x00, 0x01,
            0x00, 0x01, 0x61, 0x00, 0x01, 0x62,
            0x10, 0x07,
        ]
        try await raw.send(request)
        let expected: [UInt8] = [
            0x52, 0x4F, 0x53, 0x54, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00,
            0x10, 0x07,
        ]
        try await waitUntil { raw.bytes.count >= expected.count }
        XCTAssertEqual(raw.bytes, expected)
        try await raw.channel.close()
        server.drain()
        await server.waitUntilClosed()
    }
}
