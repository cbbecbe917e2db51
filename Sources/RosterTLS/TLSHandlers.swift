import NIOCore
import NIOSSL

/// The first byte of every TLS record that can open a connection: a
/// handshake (`ClientHello`). Anything else on a TLS port is plaintext.
let tlsHandshakeRecord: UInt8 = 0x16

/// Looks at the first byte a client sends on a TLS port, before the TLS
/// handler does: a TLS `ClientHello` is passed on (and this handler leaves
/// the pipeline); anything else is answered with `answer` — written in the
/// plaintext the client speaks, so that it can say "this server requires
/// TLS" — and the connection is closed. Without it the client would see
/// only a TLS alert it cannot read, and the server a BoringSSL error code.
public final class TLSServerSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let answer: (ByteBufferAllocator) -> ByteBuffer
    private let onPlaintext: (SocketAddress?) -> Void
    private var decided = false

    /// `onPlaintext` is told the peer's address (to log it).
    public init(answer: @escaping (ByteBufferAllocator) -> ByteBuffer, onPlaintext: @escaping (SocketAddress?) -> Void) {
        self.answer = answer
        self.onPlaintext = onPlaintext
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After a refusal, whatever else the client sends is dropped.
        guard !decided else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == tlsHandshakeRecord {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        decided = true
        onPlaintext(context.channel.remoteAddress)
        // Written from here, in front of the TLS handler, so it leaves in the clear.
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(answer(context.channel.allocator))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Looks at the first bytes a server answers a TLS client with: a server
/// that speaks plaintext answers the `ClientHello` in plaintext, which the
/// TLS handler would report as a bare `WRONG_VERSION_NUMBER`. This says so.
public final class TLSPlaintextPeerDetector: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer

    private let server: String

    public init(server: String) {
        self.server = server
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        // TLS record types: change_cipher_spec, alert, handshake, application_data.
        if (0x14...0x17).contains(first) {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        context.fireErrorCaught(TLSFailure("\(server) answered in plaintext, not TLS: it is not serving TLS; connect without --tls, or start it with --tls-cert and --tls-key"))
        context.close(promise: nil)
    }
}

/// Sits after the TLS handler and turns its errors into a `TLSFailure`
/// that says what went wrong, for the side that reads it: passed on down
/// the pipeline (a client fails its calls with it), and to `onFailure`
/// once (a server logs it).
public final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer

    private let side: TLSFailure.Side
    private let onFailure: (TLSFailure) -> Void
    private var reported = false

    public init(side: TLSFailure.Side, onFailure: @escaping (TLSFailure) -> Void = { _ in }) {
        self.side = side
        self.onFailure = onFailure
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The certificate the peer showed, if the handshake got that far:
        // it tells an expired certificate from one of an unknown CA.
        let peer = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
        let failure = TLSFailure.describe(error, side: side, peerCertificate: peer ?? nil)
        if !reported {
            reported = true
            onFailure(failure)
        }
        context.fireErrorCaught(failure)
    }
}
