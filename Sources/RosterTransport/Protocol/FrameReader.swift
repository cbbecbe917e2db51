import NIOCore

/// A `FrameDecoder` fed the bytes a connection's handler receives, keeping
/// the bytes of an incomplete frame from one read to the next.
///
/// Every connection handler (server, client, load engine) cuts its own frames
/// with one of these instead of sitting behind a `ByteToMessageHandler`: that
/// is one pipeline hop per frame fewer, and no boxing of each frame into
/// `NIOAny` (with its dynamic cast back) on the hottest path of every call.
public struct FrameReader {
    @usableFromInline var decoder: FrameDecoder
    /// Bytes of a frame not yet complete.
    @usableFromInline var cumulation: ByteBuffer?

    public init(maxFrameSize: Int = WireProtocol.defaultMaxFrameSize) {
        self.decoder = FrameDecoder(maxFrameSize: maxFrameSize)
    }

    /// Hands `body` each whole frame in `bytes` (after what an earlier read
    /// left over), while `isOpen()` holds. A protocol violation is thrown;
    /// after it (or once `isOpen()` fails) the rest of the stream is dropped.
    @inlinable
    public mutating func read(
        _ bytes: ByteBuffer, isOpen: () -> Bool = { true }, _ body: (InboundFrame) throws -> Void
    ) throws {
        var buffer = bytes
        if var pending = cumulation {
            cumulation = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        while isOpen(), let inbound = try decoder.decode(buffer: &buffer) {
            try body(inbound)
        }
        if buffer.readableBytes > 0, isOpen() {
            buffer.discardReadBytes()
            cumulation = buffer
        }
    }

    /// Drops the bytes of an incomplete frame (the connection is closing).
    public mutating func reset() {
        cumulation = nil
    }
}
