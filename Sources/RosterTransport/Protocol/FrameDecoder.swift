import NIOCore
import RosterRPC

/// Splits the byte stream into the peer's preface and then frames.
///
/// The length in each header is checked against `maxFrameSize` as soon as the
/// ten header bytes are in, before any of the body is buffered: a peer that
/// announces a 4 GiB frame is refused without the server holding more than a
/// header of it. Payloads are slices of the receive buffer (no copy).
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = InboundFrame

    @usableFromInline let maxFrameSize: Int
    @usableFromInline var sawPreface = false

    public static let tlsOnPlaintext = "a TLS handshake arrived on a plaintext port: this server does not serve TLS (connect without TLS, or start it with --tls-cert and --tls-key)"

    public init(maxFrameSize: Int = WireProtocol.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    /// Inlinable: it runs once per frame on the server's hot path, and is
    /// then compiled into the server module with that module's settings.
    @inlinable
    public mutating func decode(buffer: inout ByteBuffer) throws -> InboundFrame? {
        if !sawPreface {
            guard buffer.readableBytes >= WireProtocol.prefaceLength else {
                // A peer that is not speaking this protocol is usually evident from the first bytes.
                if let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first != UInt8(WireProtocol.magic >> 24) {
                    // 0x16 opens a TLS handshake: a client speaking TLS to a plaintext port.
                    if first == 0x16 { throw ProtocolViolation(.failedPrecondition, Self.tlsOnPlaintext) }
                    throw ProtocolViolation(.invalidArgument, "bad connection preface: expected magic 'ROST'")
                }
                return nil
            }
            if buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == 0x16 {
                throw ProtocolViolation(.failedPrecondition, Self.tlsOnPlaintext)
            }
            let magic = buffer.readInteger(as: UInt32.self)!
            let version = buffer.readInteger(as: UInt16.self)!
            _ = buffer.readInteger(as: UInt16.self)
            guard magic == WireProtocol.magic else {
                throw ProtocolViolation(.invalidArgument, "bad connection preface: expected magic 'ROST'")
            }
            guard version == WireProtocol.version else {
                throw ProtocolViolation(.failedPrecondition, "unsupported protocol version \(version); this side speaks \(WireProtocol.version)")
            }
            sawPreface = true
            return .preface(version: version)
        }
        // The header is read in one look at the buffer's bytes: each of
        // ByteBuffer's accessors checks exclusive access to its storage at
        // run time, and four of them per frame were a measurable share of a
        // single Match.
        let maxFrameSize = self.maxFrameSize
        let header = buffer.withUnsafeReadableBytes { raw -> (length: Int, type: UInt8, flags: UInt8, callID: UInt32)? in
            guard raw.count >= 4 else { return nil }
            let length = Int(UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self)))
            guard length <= maxFrameSize, raw.count >= WireProtocol.headerLength + length else { return (length, 0, 0, 0) }
            return (length, raw[4], raw[5], UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 6, as: UInt32.self)))
        }
        guard let header else { return nil }
        guard header.length <= maxFrameSize else {
            throw ProtocolViolation(.resourceExhausted, "frame of \(header.length) bytes exceeds the limit of \(maxFrameSize)")
        }
        guard buffer.readableBytes >= WireProtocol.headerLength + header.length else { return nil }
        let payload = buffer.getSlice(at: buffer.readerIndex + WireProtocol.headerLength, length: header.length)!
        buffer.moveReaderIndex(forwardBy: WireProtocol.headerLength + header.length)
        return .frame(Frame(rawType: header.type, flags: header.flags, callID: header.callID, payload: payload))
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> InboundFrame? {
        // Whatever is left after EOF is a truncated frame; it is dropped with the connection.
        try decode(buffer: &buffer)
    }
}
