import NIOCore
import RosterRPC
import RosterTLS

/// What a client asks its connection to do besides calls and cancellations
/// (which go to `submit` and `cancel` directly); written into the channel.
enum ClientCommand: Sendable {
    case ping(EventLoopPromise<NIODeadline>)
}

/// Why a call failed before any response arrived: `retryable` when the
/// request certainly never reached a handler.
struct CallFailure: Error {
    var error: RPCError
    var retryable: Bool
}

/// The client side of one connection: matches responses to calls by id.
///
/// Runs on the connection's event loop. Each pending call is a continuation
/// its caller awaits; responses complete them in whatever order they arrive. On
/// GOAWAY the connection takes no new calls (the pool opens another) and
/// closes itself once its last call completes.
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ClientCommand
    typealias OutboundOut = ByteBuffer

    /// Resumed exactly once: whoever removes the entry from `pending` resumes it.
    typealias Response = UnsafeContinuation<Frame, any Error>

    private struct Pending {
        var response: Response
        var timer: Scheduled<Void>?
    }

    private var pending: [UInt32: Pending] = [:]
    /// Frames are cut here, not in a ByteToMessageHandler in front: see `FrameReader`.
    private var reader: FrameReader
    private var pings: [UInt64: EventLoopPromise<NIODeadline>] = [:]
    private var nextPing: UInt64 = 1
    private var draining = false
    /// Why the server closed the connection, when it said it was an error.
    private var refusal: RPCError?
    private var closed = false
    private var flushScheduled = false
    private var context: ChannelHandlerContext!
    /// Called on the event loop when the server asks this connection to go away.
    private let onGoAway: @Sendable () -> Void
    /// Completed when the server's preface arrives; failed if the connection
    /// fails or closes first.
    private let ready: EventLoopPromise<Void>?

    init(maxFrameSize: Int = WireProtocol.defaultMaxFrameSize, ready: EventLoopPromise<Void>? = nil,
         onGoAway: @escaping @Sendable () -> Void) {
        self.reader = FrameReader(maxFrameSize: maxFrameSize)
        self.ready = ready
        self.onGoAway = onGoAway
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Breaks the handler ↔ context cycle, or every closed connection stays in memory.
    func handlerRemoved(context: ChannelHandlerContext) {
        reader.reset()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        var preface = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
        FrameWriter.writePreface(into: &preface)
        context.writeAndFlush(wrapOutboundOut(preface), promise: nil)
        context.fireChannelActive()
    }

    // MARK: Outbound

    /// A call whose frame is on its way to this handler.
    struct Submission: Sendable {
        var id: UInt32
        var timeout: TimeAmount?
        var response: Response
    }

    /// Sends calls straight from `RPCClient`, on the event loop, without a
    /// trip through the pipeline (no boxing of a command, no write promise,
    /// no future: each caller's continuation is resumed with its response):
    /// the hot path of every call. `frames` holds the calls' REQUEST frames,
    /// in one buffer, written at once. A connection that takes no more calls
    /// fails them all, and sends none. A batch (`coalesce` false) is flushed
    /// at once; calls made one by one on the loop share a flush at the end
    /// of the loop's tick.
    func submit(frames: ByteBuffer, calls: some Collection<Submission>, coalesce: Bool) {
        guard let context, !closed, !draining, refusal == nil else {
            // After an error GOAWAY (a limit, say) a late call still learns why;
            // otherwise it was never sent, and another connection may take it.
            let failure = refusal.map { CallFailure(error: $0, retryable: false) }
                ?? CallFailure(error: RPCError(.unavailable, "connection is closing"), retryable: true)
            for call in calls { call.response.resume(throwing: failure) }
            return
        }
        for call in calls { enqueue(call, context: context) }
        context.write(wrapOutboundOut(frames), promise: nil)
        if coalesce { flush(context: context) } else { context.flush() }
    }

    /// Records a call as pending, with its timer.
    private func enqueue(_ call: Submission, context: ChannelHandlerContext) {
        let id = call.id
        var entry = Pending(response: call.response, timer: nil)
        if let timeout = call.timeout {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            entry.timer = context.eventLoop.scheduleTask(in: timeout) {
                handler.value.fail(id, RPCError(.deadlineExceeded, "no response within \(timeout.nanoseconds / 1_000_000) ms"), tellServer: true)
            }
        }
        if let earlier = pending.updateValue(entry, forKey: id) {
            // Ids wrapped round to a call still in flight, 2^32 calls later:
            // the server refuses the repeated id, which fails the connection's calls.
            pending[id] = earlier
            entry.timer?.cancel()
            call.response.resume(throwing: CallFailure(error: RPCError(.internal, "call id \(id) is still in flight"), retryable: false))
        }
    }

    /// The caller gave up: fails the call locally and tells the server.
    func cancel(id: UInt32) {
        fail(id, RPCError(.cancelled, "call cancelled by the client"), tellServer: true)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .ping(let response):
            guard !closed else {
                response.fail(RPCError(.unavailable, "connection closed"))
                return
            }
            let opaque = nextPing
            nextPing &+= 1
            pings[opaque] = response
            context.write(wrapOutboundOut(FrameWriter.ping(opaque, ack: false, allocator: context.channel.allocator)), promise: promise)
        }
    }

    /// Coalesces flushes of calls issued in the same loop tick into one syscall.
    func flush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let handler = handler.value
            handler.flushScheduled = false
            handler.context?.flush()
        }
    }

    private func fail(_ id: UInt32, _ error: RPCError, tellServer: Bool) {
        guard let entry = pending.removeValue(forKey: id) else { return }
        entry.timer?.cancel()
        entry.response.resume(throwing: CallFailure(error: error, retryable: false))
        if tellServer, !closed {
            context.writeAndFlush(wrapOutboundOut(FrameWriter.cancel(callID: id, allocator: context.channel.allocator)), promise: nil)
        }
        closeIfDrained()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.read(unwrapInboundIn(data), isOpen: { !closed }) { inbound in
                switch inbound {
                case .preface: ready?.succeed()
                case .frame(let frame): received(frame, context: context)
                }
            }
        } catch {
            errorCaught(context: context, error: error)
        }
    }

    private func received(_ frame: Frame, context: ChannelHandlerContext) {
        switch frame.type {
        case .response:
            // A response for a call that timed out or was cancelled is dropped.
            guard let entry = pending.removeValue(forKey: frame.callID) else { return }
            entry.timer?.cancel()
            entry.response.resume(returning: frame)
            closeIfDrained()
        case .ping:
            var payload = frame.payload
            guard payload.readableBytes == 8, let opaque = payload.readInteger(as: UInt64.self) else {
                return protocolError("PING payload must be exactly 8 bytes")
            }
            if frame.flags & FrameFlags.ack != 0 {
                pings.removeValue(forKey: opaque)?.succeed(.now())
            } else {
                context.writeAndFlush(wrapOutboundOut(FrameWriter.ping(opaque, ack: true, allocator: context.channel.allocator)), promise: nil)
            }
        case .goAway:
            let goAway: GoAway
            do { goAway = try GoAway(payload: frame.payload) } catch { return protocolError(error.message) }
            draining = true
            onGoAway()
            if goAway.code != .ok {
                let error = RPCError(.unavailable, "server closed the connection: \(goAway.code): \(goAway.message)")
                refusal = error
                ready?.fail(error)
                failAll(error, retryable: false)
                closed = true
                context.close(promise: nil)
                return
            }
            // Calls the server never saw may be sent again elsewhere.
            for id in pending.keys where id > goAway.lastCallID {
                if let entry = pending.removeValue(forKey: id) {
                    entry.timer?.cancel()
                    entry.response.resume(throwing: CallFailure(error: RPCError(.unavailable, "server is draining"), retryable: true))
                }
            }
            closeIfDrained()
        case .request, .cancel, nil:
            protocolError("unexpected frame type 0x\(String(frame.rawType, radix: 16)) from a server")
        }
    }

    private func protocolError(_ message: String) {
        context.writeAndFlush(wrapOutboundOut(FrameWriter.goAway(code: .invalidArgument, lastCallID: 0, message: message, allocator: context.channel.allocator)), promise: nil)
        failAll(RPCError(.internal, "protocol error: \(message)"), retryable: false)
        closed = true
        context.close(promise: nil)
    }

    private func closeIfDrained() {
        if draining, pending.isEmpty, !closed {
            closed = true
            context.close(promise: nil)
        }
    }

    private func failAll(_ error: RPCError, retryable: Bool) {
        let calls = pending
        pending.removeAll()
        for (_, entry) in calls {
            entry.timer?.cancel()
            entry.response.resume(throwing: CallFailure(error: error, retryable: retryable))
        }
        for (_, ping) in pings { ping.fail(error) }
        pings.removeAll()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ready?.fail(error)
        if let violation = error as? ProtocolViolation {
            failAll(RPCError(.internal, "protocol error: \(violation.message)"), retryable: false)
        } else if let failure = error as? TLSFailure {
            failAll(RPCError(.unavailable, failure.message), retryable: false)
        } else {
            failAll(RPCError(.unavailable, "connection error: \(error)"), retryable: false)
        }
        closed = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready?.fail(RPCError(.unavailable, "connection closed before the server's preface"))
        closed = true
        failAll(RPCError(.unavailable, "connection closed"), retryable: false)
        context.fireChannelInactive()
    }
}
