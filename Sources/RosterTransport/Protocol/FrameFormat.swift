import NIOCore
import RosterRPC

/// The Roster wire protocol, version 1. docs/PROTOCOL.md describes it byte
/// by byte; this file is its single source of numbers.
public enum WireProtocol {
    /// `ROST`: the first four bytes each side sends.
    public static let magic: UInt32 = 0x524F_5354
    public static let version: UInt16 = 1
    /// The ALPN protocol name a TLS connection carrying this protocol
    /// negotiates (docs/PROTOCOL.md, "TLS"): the protocol and its version.
    public static let alpn = "roster/1"
    /// Magic (4) + version (2) + reserved (2).
    public static let prefaceLength = 8
    /// Length (4) + type (1) + flags (1) + call id (4).
    public static let headerLength = 10
    public static let defaultMaxFrameSize = 4 * 1024 * 1024
    /// Bytes a REQUEST payload has before its metadata entries.
    @usableFromInline static let requestFixedLength = 4 + 4 + 2
}

/// What a frame is, from its type byte.
public enum FrameType: UInt8, Sendable {
    case request = 0x01
    case response = 0x02
    case cancel = 0x03
    case ping = 0x04
    case goAway = 0x05
}

/// Bits of a frame's flags byte.
public enum FrameFlags {
    /// On PING: this is the answer (pong).
    public static let ack: UInt8 = 0x01
    /// On RESPONSE: the call was refused before its handler ran (the server
    /// is draining), so the client may send it again on another connection.
    public static let notProcessed: UInt8 = 0x02
}

/// One frame as read off the wire. The payload is a slice of the receive
/// buffer, not a copy.
public struct Frame: Sendable {
    public var rawType: UInt8
    public var flags: UInt8
    public var callID: UInt32
    public var payload: ByteBuffer

    @inlinable
    public init(rawType: UInt8, flags: UInt8, callID: UInt32, payload: ByteBuffer) {
        self.rawType = rawType
        self.flags = flags
        self.callID = callID
        self.payload = payload
    }

    public var type: FrameType? { FrameType(rawValue: rawType) }
}

/// What the frame decoder passes on: the peer's preface once, then frames.
public enum InboundFrame: Sendable {
    case preface(version: UInt16)
    case frame(Frame)
}

/// A connection-level protocol violation. The side that detects it sends a
/// GOAWAY carrying `code` and `message`, then closes the connection.
public struct ProtocolViolation: Error, Sendable, CustomStringConvertible {
    public var code: RPCStatusCode
    public var message: String

    public init(_ code: RPCStatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// The fixed part of a REQUEST payload, followed by the encoded request.
public struct RequestHead: Sendable {
    public var methodID: UInt32
    /// Milliseconds the caller will wait; 0 means no deadline.
    public var timeoutMilliseconds: UInt32
    public var metadata: Metadata

    public init(methodID: UInt32, timeoutMilliseconds: UInt32, metadata: Metadata) {
        self.methodID = methodID
        self.timeoutMilliseconds = timeoutMilliseconds
        self.metadata = metadata
    }

    /// Reads the head from the front of a REQUEST payload and leaves the
    /// reader index on the first byte of the encoded request.
    package static func read(from payload: inout ByteBuffer) throws(ProtocolViolation) -> RequestHead {
        // The fixed head in one look at the bytes (see FrameDecoder.decode);
        // most calls carry no metadata and stop here.
        let fixed = payload.withUnsafeReadableBytes { raw -> (UInt32, UInt32, UInt16)? in
            guard raw.count >= WireProtocol.requestFixedLength else { return nil }
            return (UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self)),
                    UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                    UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        }
        if let (methodID, timeout, count) = fixed, count == 0 {
            payload.moveReaderIndex(forwardBy: WireProtocol.requestFixedLength)
            return RequestHead(methodID: methodID, timeoutMilliseconds: timeout, metadata: Metadata())
        }
        guard let methodID = payload.readInteger(as: UInt32.self),
              let timeout = payload.readInteger(as: UInt32.self),
              let count = payload.readInteger(as: UInt16.self)
        else { throw ProtocolViolation(.invalidArgument, "REQUEST payload shorter than its fixed head") }
        var metadata = Metadata()
        for _ in 0..<count {
            guard let keyLength = payload.readInteger(as: UInt16.self),
                  let key = payload.readString(length: Int(keyLength)),
                  let valueLength = payload.readInteger(as: UInt16.self),
                  let value = payload.readString(length: Int(valueLength))
            else { throw ProtocolViolation(.invalidArgument, "REQUEST metadata runs past the end of the frame") }
            metadata.append(value, forKey: key)
        }
        return RequestHead(methodID: methodID, timeoutMilliseconds: timeout, metadata: metadata)
    }

    /// How many bytes the head at the front of a REQUEST payload takes
    /// (its fixed part and its metadata), read without building it; nil
    /// if it runs past the end. Two requests whose heads are the same bytes
    /// name the same method with the same timeout and metadata.
    @inlinable
    package static func length(in payload: UnsafeRawBufferPointer) -> Int? {
        guard payload.count >= WireProtocol.requestFixedLength else { return nil }
        let count = Int(UInt16(bigEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        var at = WireProtocol.requestFixedLength
        for _ in 0..<(count * 2) { // a key, then its value: each a length and its bytes
            guard payload.count - at >= 2 else { return nil }
            at += 2 + Int(UInt16(bigEndian: payload.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            guard at <= payload.count else { return nil }
        }
        return at
    }

    var encodedLength: Int {
        var n = WireProtocol.requestFixedLength
        for (key, value) in metadata.entries { n += 4 + key.utf8.count + value.utf8.count }
        return n
    }

    func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(methodID)
        buffer.writeInteger(timeoutMilliseconds)
        buffer.writeInteger(UInt16(metadata.count))
        for (key, value) in metadata.entries {
            buffer.writeInteger(UInt16(key.utf8.count))
            buffer.writeString(key)
            buffer.writeInteger(UInt16(value.utf8.count))
            buffer.writeString(value)
        }
    }
}

/// Builds frames straight into outgoing buffers: the header, then the
/// payload written in place (a message encodes directly into the buffer).
public enum FrameWriter {
    public static func writePreface(into buffer: inout ByteBuffer) {
        buffer.writeInteger(WireProtocol.magic)
        buffer.writeInteger(WireProtocol.version)
        buffer.writeInteger(UInt16(0))
    }

    static func writeHeader(into buffer: inout ByteBuffer, length: Int, type: FrameType, flags: UInt8 = 0, callID: UInt32) {
        buffer.writeInteger(UInt32(length))
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(callID)
    }

    /// Writes `message`'s protobuf encoding, exactly `size` bytes, with no copy.
    static func writeMessage(_ message: any ProtoMessage, size: Int, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { bytes in
            message.encode(into: UnsafeMutableRawBufferPointer(rebasing: bytes[..<size]))
        }
    }

    public static func request(
        callID: UInt32, head: RequestHead, message: some ProtoMessage, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let size = message.serializedSize
        var buffer = allocator.buffer(capacity: WireProtocol.headerLength + head.encodedLength + size)
        appendRequest(callID: callID, head: head, message: message, size: size, to: &buffer)
        return buffer
    }

    /// Appends a REQUEST whose message is `size` bytes (its `serializedSize`)
    /// to `buffer`, which may already hold other frames.
    public static func appendRequest(
        callID: UInt32, head: RequestHead, message: some ProtoMessage, size: Int, to buffer: inout ByteBuffer
    ) {
        writeHeader(into: &buffer, length: head.encodedLength + size, type: .request, callID: callID)
        head.write(to: &buffer)
        writeMessage(message, size: size, into: &buffer)
    }

    /// Appends an OK RESPONSE to `buffer`, which may already hold other frames:
    /// a server answering a batch of calls writes them all into one buffer.
    public static func appendOKResponse(callID: UInt32, message: any ProtoMessage, to buffer: inout ByteBuffer) {
        let size = message.serializedSize
        appendOKResponse(callID: callID, size: size, to: &buffer) { message.encode(into: $0) }
    }

    /// Appends an OK RESPONSE whose `size`-byte body `encode` writes in place.
    /// Inlinable: the server's hot path, compiled into the server module.
    @inlinable
    public static func appendOKResponse(
        callID: UInt32, size: Int, to buffer: inout ByteBuffer, encode: (UnsafeMutableRawBufferPointer) -> Void
    ) {
        // Header, status and body in one write (length, type, flags, call
        // id, status, body): each ByteBuffer write checks exclusive access
        // to its storage at run time, and a single Match is short enough
        // for two of them to show.
        let total = WireProtocol.headerLength + 1 + size
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { bytes in
            bytes.storeBytes(of: UInt32(1 + size).bigEndian, toByteOffset: 0, as: UInt32.self)
            bytes[4] = FrameType.response.rawValue
            bytes[5] = 0
            bytes.storeBytes(of: callID.bigEndian, toByteOffset: 6, as: UInt32.self)
            bytes[10] = RPCStatusCode.ok.rawValue
            encode(UnsafeMutableRawBufferPointer(rebasing: bytes[11..<total]))
            return total
        }
    }

    public static func appendErrorResponse(callID: UInt32, error: RPCError, flags: UInt8 = 0, to buffer: inout ByteBuffer) {
        let text = error.message.utf8
        writeHeader(into: &buffer, length: 1 + text.count, type: .response, flags: flags, callID: callID)
        buffer.writeInteger(error.code.rawValue)
        buffer.writeBytes(text)
    }

    public static func cancel(callID: UInt32, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: WireProtocol.headerLength)
        writeHeader(into: &buffer, length: 0, type: .cancel, callID: callID)
        return buffer
    }

    public static func ping(_ opaque: UInt64, ack: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: WireProtocol.headerLength + 8)
        writeHeader(into: &buffer, length: 8, type: .ping, flags: ack ? FrameFlags.ack : 0, callID: 0)
        buffer.writeInteger(opaque)
        return buffer
    }

    public static func goAway(code: RPCStatusCode, lastCallID: UInt32, message: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let text = message.utf8
        var buffer = allocator.buffer(capacity: WireProtocol.headerLength + 5 + text.count)
        writeHeader(into: &buffer, length: 5 + text.count, type: .goAway, callID: 0)
        buffer.writeInteger(code.rawValue)
        buffer.writeInteger(lastCallID)
        buffer.writeBytes(text)
        return buffer
    }
}

/// Decodes a GOAWAY payload.
struct GoAway: Sendable {
    var code: RPCStatusCode
    var lastCallID: UInt32
    var message: String

    init(payload: ByteBuffer) throws(ProtocolViolation) {
        var payload = payload
        guard let raw = payload.readInteger(as: UInt8.self), let last = payload.readInteger(as: UInt32.self) else {
            throw ProtocolViolation(.invalidArgument, "GOAWAY payload shorter than 5 bytes")
        }
        code = RPCStatusCode(rawValue: raw) ?? .unknown
        lastCallID = last
        message = payload.readString(length: payload.readableBytes) ?? ""
    }
}
