import Foundation
import Logging
import NIOCore
import NIOPosix
import RosterRPC
import RosterServer
import RosterTransport
import Synchronization
import XCTest
@_exported import TestSupport

/// Services and raw connections for the transport, server and in-process
/// tests: the `test.v1` Echo services (Tests/Fixtures/testservice.rdl),
/// implemented to sleep, fail or echo as a request asks.

/// The async echo: sleeps, fails or echoes as the request asks, and counts
/// the calls that saw their task cancelled.
public final class EchoService: Echo.Handler {
    public let cancellations = Atomic<Int>(0)
    public let started = Atomic<Int>(0)

    public struct PlainError: Error {}

    public init() {}

    public func echo(_ request: EchoRequest, context: RPCContext) async throws -> EchoResponse {
        started.add(1, ordering: .relaxed)
        if request.delayMs > 0 {
            do {
                try await Task.sleep(for: .milliseconds(Int(request.delayMs)))
            } catch {
                cancellations.add(1, ordering: .relaxed)
                throw error
            }
        }
        if request.failWith != 0 {
            throw RPCError(RPCStatusCode(rawValue: UInt8(request.failWith)) ?? .unknown, "asked to fail with \(request.failWith)")
        }
        if request.failPlainly { throw PlainError() }
        return EchoResponse(payload: request.payload, index: request.index)
    }
}

/// The inline echo, answered on the event loop. `delay_ms` blocks the loop
/// that long (standing for a large MatchMany); `runs` counts the calls that ran.
public struct InlineEchoService: InlineEcho.InlineHandler {
    public let runs = Counter()

    public final class Counter: Sendable {
        public let value = Atomic<Int>(0)
    }

    public init() {}

    public func echo(_ request: EchoRequest, context: RPCContext) throws -> EchoResponse {
        runs.value.add(1, ordering: .relaxed)
        if request.delayMs > 0 { usleep(UInt32(request.delayMs) * 1000) }
        if request.failWith != 0 {
            throw RPCError(RPCStatusCode(rawValue: UInt8(request.failWith)) ?? .unknown, "inline failure")
        }
        return EchoResponse(payload: request.payload, index: request.index)
    }
}

/// A message that encodes to whatever bytes it holds: for sending requests
/// that do not decode as what the server expects.
public struct RawMessage: ProtoMessage {
    public var bytes: [UInt8] = []
    public init() {}
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public mutating func merge(from reader: inout ProtoReader) throws(ProtoDecodingError) {
        while !reader.isAtEnd {
            let n = reader.remaining
            bytes += reader.withBytes(count: n) { Array($0) }
        }
    }
    public var serializedSize: Int { bytes.count }
    public func encode(to writer: inout ProtoWriter) { bytes.withUnsafeBytes { writer.writeRawBytes($0) } }
}

extension ProtoReader {
    mutating func withBytes<T>(count: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        try! withBytes(count: count) { (b: UnsafeRawBufferPointer) throws(ProtoDecodingError) -> T in body(b) }
    }
}

public var quietLogger: Logger {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}

public func startServer(
    _ services: [any RPCService], configuration: RPCServer.Configuration = .init()
) async throws -> (RPCServer, Int) {
    let server = try RPCServer(configuration: configuration, services: services, logger: quietLogger)
    try await server.start()
    return (server, server.localAddress!.port!)
}

/// A raw TCP connection for speaking (or mis-speaking) the protocol by hand.
public final class RawConnection: Sendable {
    public let channel: any Channel
    private let received: ReceivedBytes

    final class ReceivedBytes: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0 += buffer.readableBytesView }
        }
    }

    public static func connect(port: Int, autoRead: Bool = true) async throws -> RawConnection {
        let received = ReceivedBytes()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: autoRead)
            .channelOption(.socketOption(.so_rcvbuf), value: 64 * 1024)
            .channelInitializer { $0.pipeline.addHandler(received) }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    private init(channel: any Channel, received: ReceivedBytes) {
        self.channel = channel
        self.received = received
    }

    public func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).get()
    }

    public var bytes: [UInt8] { received.bytes.withLock { $0 } }

    /// Waits (bounded) until the peer closes the connection; true if it did.
    public func waitForClose(timeout: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// Frames the peer sent after its preface.
    public var frames: [(type: UInt8, flags: UInt8, callID: UInt32, payload: [UInt8])] {
        var out: [(UInt8, UInt8, UInt32, [UInt8])] = []
        var b = bytes
        guard b.count >= 8 else { return [] }
        b.removeFirst(8)
        while b.count >= 10 {
            let length = Int(b[0]) << 24 | Int(b[1]) << 16 | Int(b[2]) << 8 | Int(b[3])
            guard b.count >= 10 + length else { break }
            let callID = UInt32(b[6]) << 24 | UInt32(b[7]) << 16 | UInt32(b[8]) << 8 | UInt32(b[9])
            out.append((b[4], b[5], callID, Array(b[10..<10 + length])))
            b.removeFirst(10 + length)
        }
        return out
    }
}

public let preface: [UInt8] = [0x52, 0x4F, 0x53, 0x54, 0x00, 0x01, 0x00, 0x00]

/// A REQUEST frame, built by hand.
public func requestFrame(callID: UInt32, methodID: UInt32, message: [UInt8], type: UInt8 = 0x01, timeoutMilliseconds: UInt32 = 0) -> [UInt8] {
    var payload: [UInt8] = []
    payload += withUnsafeBytes(of: methodID.bigEndian, Array.init)
    payload += withUnsafeBytes(of: timeoutMilliseconds.bigEndian, Array.init)
    payload += [0, 0] // no metadata
    payload += message
    var frame: [UInt8] = withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init)
    frame += [type, 0]
    frame += withUnsafeBytes(of: callID.bigEndian, Array.init)
    return frame + payload
}
