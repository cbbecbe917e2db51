import NIOCore
import RosterRPC
import RosterTLS

/// What a client asks its connection to do besides calls (which go to
/// `submit` directly); written into the channel.
enum ClientCommand: Sendable {
    /// The caller gave up: fail the call locally and tell the server.
    case cancel(id: UInt32)
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
/// Runs on the connection's event loop. Each pending call is a promise the
/// caller awaits; responses complete them in whatever order they arrive. On
/// GOAWAY the connection takes no new calls (the pool opens another) and
/// closes itself once its last call completes.
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundIn = ClientCommand
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<Frame>
        var timer: Scheduled<Void>?
    }

    private var pending: [UInt32: Pending] = [:]
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

    init(ready: EventLoopPromise<Void>? = nil, onGoAway: @escaping @Sendable () -> Void) {
        self.ready = ready
        self.onGoAway = onGoAway
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Breaks the handler ↔ context cycle, or every closed connection stays in memory.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        var preface = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
        FrameWriter.writePreface(into: &preface)
        context.writeAndFlush(wrapOutboundOut(preface), promise: nil)
        context.fireChannelActive()
    }

    // MARK: Outbound

    /// Sends a call straight from `RPCClient`, on the event loop, without a
    /// trip through the pipeline (no boxing of the command, no write promise):
    /// the hot path of every call. A handler that has left its pipeline
    /// fails the call as never sent.
    func submit(id: UInt32, frame: ByteBuffer, timeout: TimeAmount?, response: EventLoopPromise<Frame>, flush: Bool = true) {
        if let refusal { return response.fail(CallFailure(error: refusal, retryable: false)) }
        guard let context else {
            response.fail(CallFailure(error: RPCError(.unavailable, "connection closed"), retryable: true))
            return
        }
        guard enqueue(id: id, timeout: timeout, response: response, context: context) else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        if flush { self.flush(context: context) }
    }

    /// Flushes now: the end of a batch of `submit(flush: false)`.
    func flushNow() {
        context?.flush()
    }

    /// Records a call as pending (with its timer); false if the connection
    /// takes no more calls, after failing it as never sent.
    private func enqueue(id: UInt32, timeout: TimeAmount?, response: EventLoopPromise<Frame>, context: ChannelHandlerContext) -> Bool {
        if let refusal {
            // The server closed this connection with an error (a limit, say):
            // a call that comes too late to be failed with it still learns why.
            response.fail(CallFailure(error: refusal, retryable: false))
            return false
        }
        guard !closed, !draining else {
            response.fail(CallFailure(error: RPCError(.unavailable, "connection is closing"), retryable: true))
            return false
        }
        var entry = Pending(promise: response, timer: nil)
        if let timeout {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            entry.timer = context.eventLoop.scheduleTask(in: timeout) {
                handler.value.fail(id, RPCError(.deadlineExceeded, "no response within \(timeout.nanoseconds / 1_000_000) ms"), tellServer: true)
            }
        }
        pending[id] = entry
        return true
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .cancel(let id):
            fail(id, RPCError(.cancelled, "call cancelled by the client"), tellServer: true)
            promise?.succeed()
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
        entry.promise.fail(CallFailure(error: error, retryable: false))
        if tellServer, !closed {
            context.writeAndFlush(wrapOutboundOut(FrameWriter.cancel(callID: id, allocator: context.channel.allocator)), promise: nil)
        }
        closeIfDrained()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .frame(let frame) = unwrapInboundIn(data) else {
            ready?.succeed()
            return
        }
        switch frame.type {
        case .response:
            // A response for a call that timed out or was cancelled is dropped.
            guard let entry = pending.removeValue(forKey: frame.callID) else { return }
            entry.timer?.cancel()
            entry.promise.succeed(frame)
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
                context.close(promise: nil)
                return
            }
            // Calls the server never saw may be sent again elsewhere.
            for id in pending.keys where id > goAway.lastCallID {
                pending.removeValue(forKey: id)?.promise.fail(CallFailure(error: RPCError(.unavailable, "server is draining"), retryable: true))
            }
            closeIfDrained()
        case .request, .cancel, nil:
            protocolError("unexpected frame type 0x\(String(frame.rawType, radix: 16)) from a server")
        }
    }

    private func protocolError(_ message: String) {
        context.writeAndFlush(wrapOutboundOut(FrameWriter.goAway(code: .invalidArgument, lastCallID: 0, message: message, allocator: context.channel.allocator)), promise: nil)
        failAll(RPCError(.internal, "protocol error: \(message)"), retryable: false)
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
            entry.promise.fail(CallFailure(error: error, retryable: retryable))
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
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready?.fail(RPCError(.unavailable, "connection closed before the server's preface"))
        closed = true
        failAll(RPCError(.unavailable, "connection closed"), retryable: false)
        context.fireChannelInactive()
    }
}
