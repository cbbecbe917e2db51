import NIOCore
import NIOEmbedded
import RosterRPC
@testable import RosterTransport
import XCTest

/// The client's connection handler fed bytes by hand on an `EmbeddedChannel`:
/// frames cut at any byte, and a hostile server's frames, with no network
/// and no sleeps. Each test runs its whole exchange inside the continuation
/// of one call, on the test's thread, as the event loop would.
final class ClientConnectionHandlerTests: XCTestCase {
    /// What a test's script saw, read after the call completes.
    final class Observed: @unchecked Sendable {
        var channelOpen = true
        var written: [ByteBuffer] = []
    }

    /// Opens a connection, sends call 1, then feeds `script`'s chunks in order.
    func call(maxFrameSize: Int = 1024, feeding script: [ByteBuffer], observed: Observed) async throws -> Frame {
        try await withUnsafeThrowingContinuation { (response: ClientConnectionHandler.Response) in
            let channel = EmbeddedChannel()
            let handler = ClientConnectionHandler(maxFrameSize: maxFrameSize, onGoAway: {})
            do { try channel.pipeline.syncOperations.addHandler(handler) } catch { return response.resume(throwing: error) }
            channel.pipeline.fireChannelActive()
            var request = ByteBuffer()
            request.writeString("request")
            handler.submit(frames: request, calls: [.init(id: 1, timeout: nil, response: response)], coalesce: false)
            for chunk in script {
                _ = try? channel.writeInbound(chunk)
            }
            channel.embeddedEventLoop.run()
            while let out = try? channel.readOutbound(as: ByteBuffer.self) { observed.written.append(out) }
            observed.channelOpen = channel.isActive
            if channel.isActive {
                // Whatever is still pending fails when the connection closes.
                channel.pipeline.fireChannelInactive()
            }
        }
    }

    static func preface() -> ByteBuffer {
        var buffer = ByteBuffer()
        FrameWriter.writePreface(into: &buffer)
        return buffer
    }

    static func okResponse(callID: UInt32, body: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        let bytes = Array(body.utf8)
        FrameWriter.appendOKResponse(callID: callID, size: bytes.count, to: &buffer) { $0.copyBytes(from: bytes) }
        return buffer
    }

    /// Splits `buffer` into pieces of `size` bytes.
    static func chunks(_ buffer: ByteBuffer, of size: Int) -> [ByteBuffer] {
        var buffer = buffer
        var pieces: [ByteBuffer] = []
        while buffer.readableBytes > 0 {
            pieces.append(buffer.readSlice(length: min(size, buffer.readableBytes))!)
        }
        return pieces
    }

    func testAResponseCutAtEveryByteIsReassembled() async throws {
        var stream = Self.preface()
        var other = Self.okResponse(callID: 7, body: "not ours")  // an unknown call's response is dropped
        stream.writeBuffer(&other)
        var ours = Self.okResponse(callID: 1, body: "hello")
        stream.writeBuffer(&ours)
        for size in [1, 3, 11, 1000] {
            let observed = Observed()
            let frame = try await call(feeding: Self.chunks(stream, of: size), observed: observed)
            XCTAssertEqual(frame.callID, 1, "chunks of \(size)")
            var payload = frame.payload
            XCTAssertEqual(payload.readInteger(as: UInt8.self), RPCStatusCode.ok.rawValue)
            XCTAssertEqual(payload.readString(length: payload.readableBytes), "hello", "chunks of \(size)")
        }
    }

    func testAFrameOverTheLimitFailsTheCallsAndClosesTheConnection() async throws {
        var stream = Self.preface()
        stream.writeMultipleIntegers(UInt32(1 << 20), FrameType.response.rawValue, UInt8(0), UInt32(1))
        let observed = Observed()
        do {
            _ = try await call(maxFrameSize: 1024, feeding: [stream], observed: observed)
            XCTFail("a call must fail when the server breaks the protocol")
        } catch let failure as CallFailure {
            XCTAssertEqual(failure.error.code, .internal)
            XCTAssertTrue(failure.error.message.contains("exceeds the limit of 1024"), failure.error.message)
        }
        XCTAssertFalse(observed.channelOpen, "the connection is closed")
    }

    func testAServerThatIsNotRosterIsAProtocolError() async throws {
        var stream = ByteBuffer()
        stream.writeString("HTTP/1.1 400 Bad Request\r\n\r\n")
        let observed = Observed()
        do {
            _ = try await call(feeding: [stream], observed: observed)
            XCTFail("a call must fail against a server that is not Roster")
        } catch let failure as CallFailure {
            XCTAssertTrue(failure.error.message.contains("bad connection preface"), failure.error.message)
        }
        XCTAssertFalse(observed.channelOpen)
    }

    func testAMalformedPingIsAnsweredWithGoAway() async throws {
        var stream = Self.preface()
        stream.writeMultipleIntegers(UInt32(3), FrameType.ping.rawValue, UInt8(0), UInt32(0))
        stream.writeBytes([1, 2, 3])
        var late = Self.okResponse(callID: 1, body: "too late")  // after the violation: not read
        stream.writeBuffer(&late)
        let observed = Observed()
        do {
            _ = try await call(feeding: [stream], observed: observed)
            XCTFail("a call must fail when the server breaks the protocol")
        } catch let failure as CallFailure {
            XCTAssertTrue(failure.error.message.contains("PING payload must be exactly 8 bytes"), failure.error.message)
        }
        // The preface, the request, then a GOAWAY that says why.
        let goAway = try XCTUnwrap(observed.written.last)
        XCTAssertEqual(goAway.getInteger(at: goAway.readerIndex + 4, as: UInt8.self), FrameType.goAway.rawValue)
        XCTAssertFalse(observed.channelOpen)
    }
}
