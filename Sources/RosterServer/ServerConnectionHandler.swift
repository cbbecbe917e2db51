import Logging
import NIOCore
import RosterRPC
import RosterServerCore
import RosterTransport

/// Asks a connection to drain: refuse new calls, finish those in flight, close.
struct DrainEvent: Sendable {}

/// Serves the calls of one connection.
///
/// Everything here runs on the connection's event loop. An inline handler is
/// called right here, with the request decoded straight from the receive
/// buffer, and its response encoded straight into the send buffer; an async
/// handler runs in a task and hops back to the loop to answer. The handler
/// owns the per-connection limits: in-flight calls (reading pauses while the
/// cap is reached or the peer is not reading its responses), deadlines,
/// cancellation and the drain handshake.
final class ServerConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Call {
        var task: Task<Void, Never>
        var timer: Scheduled<Void>?
        var route: Route
        var started: ContinuousClock.Instant
    }

    private enum State {
        case awaitingPreface
        case open
        /// GOAWAY sent; waiting for the PING that follows it to come back
        /// (then every request the peer sent before seeing GOAWAY has arrived)
        /// and for in-flight calls to finish.
        case draining(pingAcknowledged: Bool)
        case closed
    }

    private let routes: RouteTable
    private let configuration: RPCServer.Configuration
    private let metrics: ServerMetrics
    private let logger: Logger
    private var state = State.awaitingPreface
    private var calls: [UInt32: Call] = [:]
    /// Inline calls served on this connection, to time one in 16.
    private var inlineCalls: UInt32 = 0
    private var lastCallID: UInt32 = 0
    private var readPending = false
    private var flushScheduled = false
    private var context: ChannelHandlerContext!
    private var peer = "unknown"
    /// Responses not yet handed to the channel. Calls answered in the same
    /// read (or loop tick) share one buffer and one write, instead of one
    /// allocation and one pending write each.
    private var outgoing: ByteBuffer!
    private static let outgoingCapacity = 16 * 1024
    private static let drainPingPayload: UInt64 = 0x4452_4149_4E00_0000 // "DRAIN"

    /// Frames are cut here rather than in a separate ByteToMessageHandler:
    /// one handler per call fewer, and no boxing of each frame into NIOAny.
    private var decoder: FrameDecoder
    /// Bytes of a frame not yet complete.
    private var cumulation: ByteBuffer?

    init(routes: RouteTable, configuration: RPCServer.Configuration, metrics: ServerMetrics, logger: Logger) {
        self.decoder = FrameDecoder(maxFrameSize: configuration.maxFrameSize)
        self.routes = routes
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        metrics.liveHandlers.add(1, ordering: .relaxed)
    }

    deinit {
        metrics.liveHandlers.subtract(1, ordering: .relaxed)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.description ?? "unknown"
        outgoing = context.channel.allocator.buffer(capacity: Self.outgoingCapacity)
        if let idle = configuration.idleTimeout { scheduleIdleCheck(in: .nanoseconds(idle.nanoseconds / 2)) }
    }

    /// The handler holds its context and the context its handler: the cycle
    /// is broken here, and the buffers let go, or every closed connection
    /// (and the partial frame it left, up to the frame limit) stays in
    /// memory for good.
    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        drainTimer?.cancel()
        drainTimer = nil
        cumulation = nil
        outgoing = nil
        self.context = nil
    }

    // MARK: Idle connections
    //
    // Checked here by a timer rather than by NIO's IdleStateHandler, which
    // would sit in the pipeline and allocate a promise for every write to
    // learn when it completed. A read sets a flag; a timer every half idle
    // period looks at it. Two quiet checks in a row with no call in flight
    // drain the connection: it closes after between one and one and a half
    // idle periods without a request.

    private var drainTimer: Scheduled<Void>?
    /// When the current read began: where the deadlines of its requests start.
    private var readStarted = NIODeadline.now()
    private var sawRequestBytes = false
    private var quietChecks = 0
    private var idleCheck: Scheduled<Void>?

    private func scheduleIdleCheck(in delay: TimeAmount) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(in: delay) { handler.value.checkIdle(every: delay) }
    }

    private func checkIdle(every delay: TimeAmount) {
        switch state {
        case .awaitingPreface, .open: break
        case .draining, .closed: return
        }
        if sawRequestBytes || !calls.isEmpty {
            sawRequestBytes = false
            quietChecks = 0
        } else {
            quietChecks += 1
            if quietChecks >= 2 {
                logger.debug("closing idle connection", metadata: ["peer": "\(peer)"])
                startDraining(reason: "idle timeout")
                return
            }
        }
        scheduleIdleCheck(in: delay)
    }

    /// Hands the batched responses to the channel (without flushing).
    private func writeOutgoing() {
        guard outgoing.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(outgoing), promise: nil)
        outgoing = context.channel.allocator.buffer(capacity: Self.outgoingCapacity)
    }

    /// Writes a frame that must follow every response queued before it.
    private func writeFrame(_ frame: ByteBuffer) {
        writeOutgoing()
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        sawRequestBytes = true
        readStarted = .now()
        if var pending = cumulation {
            cumulation = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        do {
            while !isClosed, let inbound = try decoder.decode(buffer: &buffer) {
                process(inbound)
            }
        } catch {
            connectionError(error)
            return
        }
        if buffer.readableBytes > 0, !isClosed {
            buffer.discardReadBytes()
            cumulation = buffer
        }
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func process(_ inbound: InboundFrame) {
        switch inbound {
        case .preface:
            var buffer = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
            FrameWriter.writePreface(into: &buffer)
            writeFrame(buffer)
            state = .open
        case .frame(let frame):
            do {
                try handle(frame)
            } catch {
                connectionError(error)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        writeOutgoing()
        context.flush()
    }

    private func handle(_ frame: Frame) throws(ProtocolViolation) {
        switch frame.type {
        case .request:
            try handleRequest(frame)
        case .cancel:
            if let call = calls.removeValue(forKey: frame.callID) {
                call.task.cancel()
                call.timer?.cancel()
                call.route.metrics.finished(code: .cancelled, since: call.started)
                afterCallRemoved()
            }
        case .ping:
            var payload = frame.payload
            guard payload.readableBytes == 8, let opaque = payload.readInteger(as: UInt64.self) else {
                throw ProtocolViolation(.invalidArgument, "PING payload must be exactly 8 bytes, not \(frame.payload.readableBytes)")
            }
            if frame.flags & FrameFlags.ack == 0 {
                writeFrame(FrameWriter.ping(opaque, ack: true, allocator: context.channel.allocator))
            } else if opaque == Self.drainPingPayload, case .draining = state {
                state = .draining(pingAcknowledged: true)
                closeIfDrained()
            }
        case .goAway:
            // The client is leaving: finish what is in flight, then close.
            if case .open = state { state = .draining(pingAcknowledged: true) }
            closeIfDrained()
        case .response, nil:
            throw ProtocolViolation(.invalidArgument, "unexpected frame type 0x\(String(frame.rawType, radix: 16)) from a client")
        }
    }

    private func handleRequest(_ frame: Frame) throws(ProtocolViolation) {
        guard frame.callID != 0 else { throw ProtocolViolation(.invalidArgument, "REQUEST with call id 0") }
        guard calls[frame.callID] == nil else {
            throw ProtocolViolation(.invalidArgument, "REQUEST reuses call id \(frame.callID), which is still in flight")
        }
        var payload = frame.payload
        let head = try RequestHead.read(from: &payload)
        lastCallID = max(lastCallID, frame.callID)
        let callID = frame.callID

        if case .draining = state {
            respond(callID, error: RPCError(.unavailable, "server is draining; retry on a new connection"),
                    flags: FrameFlags.notProcessed)
            return
        }
        guard let route = routes.route(head.methodID) else {
            metrics.unknownMethod()
            respond(callID, error: RPCError(.unimplemented, "unknown method id 0x\(String(head.methodID, radix: 16))"))
            return
        }
        let timeout = head.timeoutMilliseconds > 0
            ? TimeAmount.milliseconds(Int64(head.timeoutMilliseconds)) : configuration.defaultTimeout
        // The deadline counts from when the read that brought the request
        // began: calls queued behind slow ones in the same read have waited.
        // A call whose deadline passed before it could run is not run.
        let deadline = timeout.map { readStarted + $0 }
        var contextDeadline: ContinuousClock.Instant?
        if let deadline {
            let now = NIODeadline.now()
            contextDeadline = ContinuousClock.now + .nanoseconds((deadline - now).nanoseconds)
            if now >= deadline {
                let waited = (now - readStarted).nanoseconds / 1_000_000
                route.metrics.finished(code: .deadlineExceeded, since: nil)
                respond(callID, error: RPCError(.deadlineExceeded,
                    "deadline of \(timeout!.nanoseconds / 1_000_000) ms passed before the call ran (queued \(waited) ms behind earlier calls)"))
                return
            }
        }
        let callContext = RPCContext(
            method: route.descriptor, metadata: head.metadata,
            deadline: contextDeadline, peer: peer)
        do {
            try route.intercept(callContext)
        } catch {
            fail(callID, route: route, started: nil, error: error)
            return
        }

        switch route.method.body {
        case .inline(let body):
            // Runs on the event loop: no task, no hop, no copy of the request
            // bytes, and the response is encoded straight into the send buffer.
            // Timing every such call would cost two clock reads for a call that
            // takes about a microsecond: one in 16 is timed (counts stay exact).
            inlineCalls &+= 1
            let started: ContinuousClock.Instant? = inlineCalls & 15 == 0 ? .now : nil
            do {
                try payload.withUnsafeReadableBytes { request in
                    try body(request, callContext) { size, encode in
                        FrameWriter.appendOKResponse(callID: callID, size: size, to: &outgoing, encode: encode)
                    }
                }
                route.metrics.finished(code: .ok, since: started)
            } catch {
                fail(callID, route: route, started: started, error: error)
            }

        case .async(let decode):
            let started = ContinuousClock.now
            let run: RPCServerMethod.AsyncBody
            do {
                run = try payload.withUnsafeReadableBytes { try decode($0) }
            } catch {
                fail(callID, route: route, started: started, error: error)
                return
            }
            let loop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            metrics.inFlight.increment()
            let task = Task {
                let result: Result<any ProtoMessage, any Error>
                do { result = .success(try await run(callContext)) } catch { result = .failure(error) }
                loop.execute { handler.value.asyncCallFinished(callID, result: result) }
            }
            var call = Call(task: task, timer: nil, route: route, started: started)
            if let deadline {
                call.timer = loop.scheduleTask(deadline: deadline) { handler.value.deadlineExpired(callID) }
            }
            calls[callID] = call
        }
    }

    private func asyncCallFinished(_ callID: UInt32, result: Result<any ProtoMessage, any Error>) {
        // A call that expired or was cancelled has already been answered or abandoned.
        guard let call = calls.removeValue(forKey: callID) else { return }
        call.timer?.cancel()
        metrics.inFlight.decrement()
        complete(callID, route: call.route, started: call.started, result: result)
        scheduleFlush()
        afterCallRemoved()
    }

    private func deadlineExpired(_ callID: UInt32) {
        guard let call = calls.removeValue(forKey: callID) else { return }
        call.task.cancel()
        metrics.inFlight.decrement()
        let elapsed = (ContinuousClock.now - call.started).wholeMilliseconds
        fail(callID, route: call.route, started: call.started,
             error: RPCError(.deadlineExceeded, "deadline exceeded after \(elapsed) ms"))
        scheduleFlush()
        afterCallRemoved()
    }

    /// Answers an async call and records its outcome.
    private func complete(_ callID: UInt32, route: Route, started: ContinuousClock.Instant, result: Result<any ProtoMessage, any Error>) {
        switch result {
        case .success(let response):
            FrameWriter.appendOKResponse(callID: callID, message: response, to: &outgoing)
            route.metrics.finished(code: .ok, since: started)
        case .failure(let error):
            fail(callID, route: route, started: started, error: error)
        }
    }

    /// Answers a call that failed and records its status.
    private func fail(_ callID: UInt32, route: Route, started: ContinuousClock.Instant?, error: any Error) {
        let rpcError = RPCError.answering(error, method: route.descriptor, peer: peer, logger: logger)
        respond(callID, error: rpcError)
        route.metrics.finished(code: rpcError.code, since: started)
    }

    private func respond(_ callID: UInt32, error: RPCError, flags: UInt8 = 0) {
        FrameWriter.appendErrorResponse(callID: callID, error: error, flags: flags, to: &outgoing)
    }

    /// Coalesces the flushes of calls that finish in the same loop tick.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let handler = handler.value
            handler.flushScheduled = false
            guard handler.context != nil else { return } // removed meanwhile
            handler.writeOutgoing()
            handler.context.flush()
        }
    }

    private func afterCallRemoved() {
        resumeReadingIfPossible()
        closeIfDrained()
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if calls.count >= configuration.maxConcurrentCallsPerConnection || !context.channel.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible()
        context.fireChannelWritabilityChanged()
    }

    private func resumeReadingIfPossible() {
        guard readPending, calls.count < configuration.maxConcurrentCallsPerConnection, context.channel.isWritable else { return }
        readPending = false
        context.read()
    }

    // MARK: Drain, idle, errors, close

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is DrainEvent {
            startDraining(reason: "server is shutting down")
            promise?.succeed()
        } else {
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    private func startDraining(reason: String) {
        switch state {
        case .awaitingPreface:
            state = .closed
            context.close(promise: nil)
        case .open:
            state = .draining(pingAcknowledged: false)
            let allocator = context.channel.allocator
            writeFrame(FrameWriter.goAway(code: .ok, lastCallID: lastCallID, message: reason, allocator: allocator))
            context.writeAndFlush(wrapOutboundOut(FrameWriter.ping(Self.drainPingPayload, ack: false, allocator: allocator)), promise: nil)
            // A peer that never answers the PING does not hold the server up for ever.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            drainTimer = context.eventLoop.scheduleTask(in: configuration.drainTimeout) { handler.value.forceClose() }
        case .draining, .closed:
            break
        }
    }

    private func closeIfDrained() {
        guard case .draining(pingAcknowledged: true) = state, calls.isEmpty else { return }
        state = .closed
        // Close once everything written so far has gone out.
        writeOutgoing()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    private func forceClose() {
        guard case .draining = state else { return }
        state = .closed
        context.close(promise: nil)
    }

    private func connectionError(_ error: any Error) {
        let violation = (error as? ProtocolViolation) ?? ProtocolViolation(.internal, "connection error")
        logger.debug("closing connection after protocol error", metadata: ["peer": "\(peer)", "error": "\(violation)"])
        if case .closed = state { return }
        if case .awaitingPreface = state {
            // The peer may not speak this protocol at all; it still gets a readable answer.
            var buffer = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
            FrameWriter.writePreface(into: &buffer)
            writeFrame(buffer)
        }
        state = .closed
        let goAway = FrameWriter.goAway(code: violation.code, lastCallID: lastCallID, message: violation.message, allocator: context.channel.allocator)
        writeOutgoing()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ProtocolViolation {
            connectionError(error)
        } else {
            logger.debug("connection error", metadata: ["peer": "\(peer)", "error": "\(error)"])
            state = .closed
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        for (_, call) in calls {
            call.task.cancel()
            call.timer?.cancel()
            metrics.inFlight.decrement()
            call.route.metrics.finished(code: .cancelled, since: call.started)
        }
        calls.removeAll()
        context.fireChannelInactive()
    }
}
