import Logging
import NIOCore
import RosterRPC
import RosterServerCore
import RosterTransport

/// Asks a connection to drain: refuse new calls, finish those in flight, close.
package struct DrainEvent: Sendable {
    package init() {}
}

/// Serves the calls of one connection: the NIO side of it.
///
/// Everything here runs on the connection's event loop. An inline handler is
/// called right here, with the request decoded straight from the receive
/// buffer, and its response encoded straight into the send buffer; an async
/// handler runs in a task and hops back to the loop to answer. The rules of
/// the connection (call ids, back-pressure, the drain handshake, idle
/// detection, protocol errors) live in `ServerConnectionStateMachine`, which
/// this handler feeds events and obeys; what is left here is bytes, timers
/// and tasks. Time is the event loop's (`EventLoop.now`), so tests on an
/// `EmbeddedEventLoop` move it by hand.
package final class ServerConnectionHandler: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private struct Call {
        var task: Task<Void, Never>
        var timer: Scheduled<Void>?
        var route: Route
        var started: NIODeadline
    }

    private let executor: ServerRPCExecutor
    private let configuration: RPCServer.Configuration
    private let metrics: ServerMetrics
    private let logger: Logger
    private var machine: ServerConnectionStateMachine<Call>
    /// Inline calls served on this connection, to time one in 16.
    private var inlineCalls: UInt32 = 0
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
    private var reader: FrameReader

    package init(routes: RouteTable, configuration: RPCServer.Configuration, metrics: ServerMetrics, logger: Logger) {
        self.reader = FrameReader(maxFrameSize: configuration.maxFrameSize)
        self.machine = ServerConnectionStateMachine(maxConcurrentCalls: configuration.maxConcurrentCallsPerConnection)
        self.executor = ServerRPCExecutor(routes: routes, logger: logger)
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        metrics.liveHandlers.add(1, ordering: .relaxed)
    }

    deinit {
        metrics.liveHandlers.subtract(1, ordering: .relaxed)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.description ?? "unknown"
        outgoing = context.channel.allocator.buffer(capacity: Self.outgoingCapacity)
        if let idle = configuration.idleTimeout { scheduleIdleCheck(in: TimeAmount(idle / 2)) }
    }

    /// The handler holds its context and the context its handler: the cycle
    /// is broken here, and the buffers let go, or every closed connection
    /// (and the partial frame it left, up to the frame limit) stays in
    /// memory for good.
    package func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        drainTimer?.cancel()
        drainTimer = nil
        reader.reset()
        pendingRun = PendingRun()
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
    private var readStarted = NIODeadline.uptimeNanoseconds(0)
    private var idleCheck: Scheduled<Void>?

    private func scheduleIdleCheck(in delay: TimeAmount) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(in: delay) { handler.value.checkIdle(every: delay) }
    }

    private func checkIdle(every delay: TimeAmount) {
        switch machine.idleCheck() {
        case .checkAgain:
            scheduleIdleCheck(in: delay)
        case .drain:
            logger.debug("closing idle connection", metadata: ["peer": "\(peer)"])
            startDraining(reason: "idle timeout")
        case .stop:
            break
        }
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

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        machine.receivedBytes()
        readStarted = context.eventLoop.now
        do {
            try reader.read(unwrapInboundIn(data), isOpen: { !isClosed }) { process($0) }
            flushRun()
        } catch {
            flushRun()
            connectionError(error)
        }
    }

    private var isClosed: Bool { machine.isClosed }

    private func process(_ inbound: InboundFrame) {
        switch inbound {
        case .preface:
            flushRun()
            var buffer = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
            FrameWriter.writePreface(into: &buffer)
            writeFrame(buffer)
            machine.receivedPreface()
        case .frame(let frame):
            if frame.type == .request, joinRun(frame) { return }
            flushRun()
            do {
                try handle(frame)
            } catch {
                connectionError(error)
            }
        }
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        writeOutgoing()
        context.flush()
    }

    private func handle(_ frame: Frame) throws(ProtocolViolation) {
        switch frame.type {
        case .request:
            try handleRequest(frame)
        case .cancel:
            let (ended, close) = machine.callEnded(frame.callID)
            if let call = ended {
                call.task.cancel()
                call.timer?.cancel()
                metrics.inFlight.decrement()
                executor.ended(call.route, code: .cancelled, nanoseconds: (NIODeadline.now() - call.started).nanoseconds)
                afterCallRemoved(close: close)
            }
        case .ping:
            var payload = frame.payload
            guard payload.readableBytes == 8, let opaque = payload.readInteger(as: UInt64.self) else {
                throw ProtocolViolation(.invalidArgument, "PING payload must be exactly 8 bytes, not \(frame.payload.readableBytes)")
            }
            if frame.flags & FrameFlags.ack == 0 {
                writeFrame(FrameWriter.ping(opaque, ack: true, allocator: context.channel.allocator))
            } else if opaque == Self.drainPingPayload, machine.receivedDrainPingAck() {
                closeWhenFlushed()
            }
        case .goAway:
            // The client is leaving: finish what is in flight, then close.
            if machine.receivedGoAway() { closeWhenFlushed() }
        case .response, nil:
            throw ProtocolViolation(.invalidArgument, "unexpected frame type 0x\(String(frame.rawType, radix: 16)) from a client")
        }
    }

    private func handleRequest(_ frame: Frame) throws(ProtocolViolation) {
        var payload = frame.payload
        let head = try RequestHead.read(from: &payload)
        let callID = frame.callID
        switch machine.receivedRequest(callID: callID) {
        case .run:
            break
        case .refuseDraining:
            respond(callID, error: RPCError(.unavailable, "server is draining; retry on a new connection"),
                    flags: FrameFlags.notProcessed)
            return
        case .violation(let message):
            throw ProtocolViolation(.invalidArgument, message)
        }
        guard let route = executor.routes.route(head.methodID) else {
            metrics.unknownMethod()
            respond(callID, error: ServerRPCExecutor.unknownMethod(head.methodID))
            return
        }
        let (callContext, deadline, refusal) = admit(route, head: head)
        if let refusal {
            fail(callID, route: route, started: nil, error: refusal)
            return
        }

        switch route.method.body {
        case .inline(let body):
            // Runs on the event loop: no task, no hop, no copy of the request
            // bytes, and the response is encoded straight into the send buffer.
            // Timing every such call would cost two clock reads for a call that
            // takes about a microsecond: one in 16 is timed (counts stay exact).
            inlineCalls &+= 1
            let started: NIODeadline? = inlineCalls & 15 == 0 ? .now() : nil
            do {
                try payload.withUnsafeReadableBytes { request in
                    try body(request, callContext) { size, encode in
                        FrameWriter.appendOKResponse(callID: callID, size: size, to: &outgoing, encode: encode)
                    }
                }
                executor.succeeded(route, nanoseconds: started.map { (NIODeadline.now() - $0).nanoseconds })
            } catch {
                fail(callID, route: route, started: started, error: error)
            }

        case .async(let decode):
            let started = NIODeadline.now()
            let run: RPCServerMethod.AsyncBody
            do {
                run = try payload.withUnsafeReadableBytes { try executor.prepareAsync(decode, request: $0) }
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
            machine.callStarted(callID, call)
        }
    }

    /// The context of a call (or of a run's calls, which share a head),
    /// its deadline on the loop's clock (for an async call's timer), and
    /// why it is refused if it is: its deadline passed before it could run,
    /// or the route's interceptors refuse it.
    ///
    /// The deadline counts from when the read that brought the request
    /// began: calls queued behind slow ones in the same read have waited.
    /// A call whose deadline passed before it could run is not run.
    private func admit(_ route: Route, head: RequestHead) -> (context: RPCContext, deadline: NIODeadline?, refusal: RPCError?) {
        let timeout = head.timeoutMilliseconds > 0
            ? TimeAmount.milliseconds(Int64(head.timeoutMilliseconds)) : configuration.defaultTimeout.map(TimeAmount.init)
        var deadline: NIODeadline?
        var contextDeadline: ContinuousClock.Instant?
        var expired: RPCError?
        if let timeout {
            let loopDeadline = readStarted + timeout
            let now = context.eventLoop.now
            deadline = loopDeadline
            contextDeadline = ContinuousClock.now + .nanoseconds((loopDeadline - now).nanoseconds)
            if now >= loopDeadline {
                let waited = (now - readStarted).nanoseconds / 1_000_000
                expired = RPCError(.deadlineExceeded,
                    "deadline of \(timeout.nanoseconds / 1_000_000) ms passed before the call ran (queued \(waited) ms behind earlier calls)")
            }
        }
        let callContext = RPCContext(method: route.descriptor, metadata: head.metadata, deadline: contextDeadline, peer: peer)
        if let expired { return (callContext, deadline, expired) }
        do {
            try executor.admit(route, callContext)
        } catch {
            return (callContext, deadline, error)
        }
        return (callContext, deadline, nil)
    }

    // MARK: Runs of inline calls
    //
    // A client that pipelines single calls sends dozens in one packet. The
    // requests of one read that follow each other with the same head (so
    // the same method, deadline and metadata), for a method that answers
    // runs (`RPCServerMethod.run`), are held and answered together when
    // the run ends: at a frame that does not join it, or at the end of the
    // read. The run is admitted once and its handler called once, so the
    // head, route, context, token check and metrics are paid once a run,
    // and the handler may overlap the calls' work. Each call is still
    // checked by the state machine as it arrives, and answered under its
    // own call id, in order, as if alone.

    /// The requests held for the run being gathered.
    private struct PendingRun {
        /// The run's method and the head its requests share; nil when no
        /// run is being gathered.
        var target: (route: Route, head: RequestHead)?
        /// The head's bytes, which a request must repeat to join. (Copied:
        /// a slice of the receive buffer held past the read would make the
        /// frame reader copy the bytes it keeps for the next read.)
        var headBytes: [UInt8] = []
        var callIDs: [UInt32] = []
        /// The requests' messages back to back, and where each ends.
        var bytes: [UInt8] = []
        var ends: [Int] = []

        /// Bytes of heads and requests kept allocated between runs. A run
        /// of small calls reuses its storage; one that held a large head or
        /// request (up to the frame limit) lets it go, or every connection
        /// that ever received one would keep that much for its life.
        static let keptBytes = 64 << 10

        /// Ready for the next run, keeping the arrays' storage (of bytes,
        /// only up to `keptBytes`).
        mutating func reset() {
            target = nil
            headBytes.removeAll(keepingCapacity: headBytes.capacity <= Self.keptBytes)
            callIDs.removeAll(keepingCapacity: true)
            bytes.removeAll(keepingCapacity: bytes.capacity <= Self.keptBytes)
            ends.removeAll(keepingCapacity: true)
        }
    }

    private var pendingRun = PendingRun()
    /// Bytes the run's buffers hold allocated between runs (for a test of
    /// `PendingRun.keptBytes`).
    package var runBytesKept: Int { pendingRun.bytes.capacity + pendingRun.headBytes.capacity }
    /// The most calls in one run: what the handler is handed at once.
    private static let maxRunLength = 1024

    /// Holds the request `frame` in the run being gathered, or starts a run
    /// with it if its method answers runs. False: it is served alone (after
    /// the run is answered), as is any request whose head is malformed or
    /// that the state machine does not let run.
    private func joinRun(_ frame: Frame) -> Bool {
        var payload = frame.payload
        guard let headLength = payload.withUnsafeReadableBytes({ RequestHead.length(in: $0) }) else { return false }
        if pendingRun.target != nil {
            let same = headLength == pendingRun.headBytes.count && pendingRun.callIDs.count < Self.maxRunLength
                && payload.withUnsafeReadableBytes { next in
                    pendingRun.headBytes.withUnsafeBytes { ProtoWire.sameBytes($0.baseAddress!, next.baseAddress!, count: headLength) }
                }
            if !same { flushRun() }
        }
        if pendingRun.target == nil {
            var read = payload
            guard let methodID = payload.getInteger(at: payload.readerIndex, as: UInt32.self),
                  let route = executor.routes.route(methodID), route.method.run != nil,
                  let head = try? RequestHead.read(from: &read) else { return false }
            pendingRun.target = (route, head)
            payload.withUnsafeReadableBytes { pendingRun.headBytes.append(contentsOf: $0[..<headLength]) }
        }
        // Refused or a violation: answered (or the connection closed) by
        // the one-call path, once the run before it is answered. That path
        // asks the state machine again and gets the same answer: for a call
        // it does not run, `receivedRequest` changes nothing but the
        // highest call id seen, which it has already recorded.
        guard case .run = machine.receivedRequest(callID: frame.callID) else { return false }
        payload.moveReaderIndex(forwardBy: headLength)
        pendingRun.callIDs.append(frame.callID)
        payload.withUnsafeReadableBytes { pendingRun.bytes.append(contentsOf: $0) }
        pendingRun.ends.append(pendingRun.bytes.count)
        return true
    }

    /// Answers the run gathered so far, if any: admitted once (its calls
    /// share a head, so one check answers for all), then its handler called
    /// once with every request.
    private func flushRun() {
        guard let (route, head) = pendingRun.target, let run = route.method.run else { return }
        let callIDs = pendingRun.callIDs, ends = pendingRun.ends
        defer { pendingRun.reset() }
        let count = callIDs.count
        guard count > 0 else { return }
        let (callContext, _, refusal) = admit(route, head: head)
        if let refusal {
            for callID in callIDs { fail(callID, route: route, started: nil, error: refusal) }
            return
        }
        // Timed as often as its calls would be one by one (one in 16).
        let before = inlineCalls
        inlineCalls &+= UInt32(truncatingIfNeeded: count)
        let samples = Int((inlineCalls >> 4) &- (before >> 4))
        let started: NIODeadline? = samples > 0 ? .now() : nil
        var answered = 0
        var succeeded = 0
        pendingRun.bytes.withUnsafeBytes { bytes in
            withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: count) { requests in
                var start = 0
                for i in 0..<count {
                    requests.initializeElement(at: i, to: UnsafeRawBufferPointer(rebasing: bytes[start..<ends[i]]))
                    start = ends[i]
                }
                run(UnsafeBufferPointer(requests), callContext, { size, encode in
                    guard answered < count else { return } // a handler's extra answer has no call to go to
                    FrameWriter.appendOKResponse(callID: callIDs[answered], size: size, to: &outgoing, encode: encode)
                    answered += 1
                    succeeded += 1
                }, { error in
                    guard answered < count else { return }
                    fail(callIDs[answered], route: route, started: nil, error: error)
                    answered += 1
                })
            }
        }
        while answered < count {
            fail(callIDs[answered], route: route, started: nil,
                 error: RPCError(.internal, "the handler answered \(answered) of a run of \(count) calls"))
            answered += 1
        }
        executor.succeeded(route, count: succeeded, meanNanoseconds: started.map { (NIODeadline.now() - $0).nanoseconds / Int64(count) },
                           samples: samples)
    }

    private func asyncCallFinished(_ callID: UInt32, result: Result<any ProtoMessage, any Error>) {
        // A call that expired or was cancelled has already been answered or abandoned.
        let (ended, close) = machine.callEnded(callID)
        guard let call = ended else { return }
        call.timer?.cancel()
        metrics.inFlight.decrement()
        complete(callID, route: call.route, started: call.started, result: result)
        scheduleFlush()
        afterCallRemoved(close: close)
    }

    private func deadlineExpired(_ callID: UInt32) {
        let (ended, close) = machine.callEnded(callID)
        guard let call = ended else { return }
        call.task.cancel()
        metrics.inFlight.decrement()
        let elapsed = (NIODeadline.now() - call.started).nanoseconds / 1_000_000
        fail(callID, route: call.route, started: call.started,
             error: RPCError(.deadlineExceeded, "deadline exceeded after \(elapsed) ms"))
        scheduleFlush()
        afterCallRemoved(close: close)
    }

    /// Answers an async call and records its outcome.
    private func complete(_ callID: UInt32, route: Route, started: NIODeadline, result: Result<any ProtoMessage, any Error>) {
        switch result {
        case .success(let response):
            FrameWriter.appendOKResponse(callID: callID, message: response, to: &outgoing)
            executor.succeeded(route, nanoseconds: (NIODeadline.now() - started).nanoseconds)
        case .failure(let error):
            fail(callID, route: route, started: started, error: error)
        }
    }

    /// Answers a call that failed and records its status.
    private func fail(_ callID: UInt32, route: Route, started: NIODeadline?, error: any Error) {
        respond(callID, error: executor.failed(route, error: error, peer: peer, nanoseconds: started.map { (NIODeadline.now() - $0).nanoseconds }))
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

    private func afterCallRemoved(close: Bool) {
        resumeReadingIfPossible()
        if close { closeWhenFlushed() }
    }

    // MARK: Backpressure

    package func read(context: ChannelHandlerContext) {
        if machine.mayRead(isWritable: context.channel.isWritable) {
            context.read()
        } else {
            readPending = true
        }
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible()
        context.fireChannelWritabilityChanged()
    }

    private func resumeReadingIfPossible() {
        guard readPending, machine.mayRead(isWritable: context.channel.isWritable) else { return }
        readPending = false
        context.read()
    }

    // MARK: Drain, idle, errors, close

    package func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is DrainEvent {
            startDraining(reason: "server is shutting down")
            promise?.succeed()
        } else {
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    private func startDraining(reason: String) {
        switch machine.startDraining() {
        case .close:
            context.close(promise: nil)
        case .sendGoAwayAndPing(let lastCallID):
            let allocator = context.channel.allocator
            writeFrame(FrameWriter.goAway(code: .ok, lastCallID: lastCallID, message: reason, allocator: allocator))
            context.writeAndFlush(wrapOutboundOut(FrameWriter.ping(Self.drainPingPayload, ack: false, allocator: allocator)), promise: nil)
            // A peer that never answers the PING does not hold the server up for ever.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            drainTimer = context.eventLoop.scheduleTask(in: TimeAmount(configuration.drainTimeout)) { handler.value.forceClose() }
        case .none:
            break
        }
    }

    /// Closes once everything written so far has gone out.
    private func closeWhenFlushed() {
        writeOutgoing()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    private func forceClose() {
        guard machine.drainTimedOut() else { return }
        context.close(promise: nil)
    }

    private func connectionError(_ error: any Error) {
        let violation = (error as? ProtocolViolation) ?? ProtocolViolation(.internal, "connection error")
        guard case .sendGoAway(let prefaceFirst, let lastCallID) = machine.protocolViolation() else { return }
        // A peer that does not speak the protocol at all (a TLS client on a
        // plaintext port, say) is worth an operator's notice; a bad frame later is not.
        logger.log(level: prefaceFirst ? .notice : .debug, "closing connection after protocol error",
                   metadata: ["peer": "\(peer)", "error": "\(violation)"])
        if prefaceFirst {
            // The peer may not speak this protocol at all; it still gets a readable answer.
            var buffer = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
            FrameWriter.writePreface(into: &buffer)
            writeFrame(buffer)
        }
        let goAway = FrameWriter.goAway(code: violation.code, lastCallID: lastCallID, message: violation.message, allocator: context.channel.allocator)
        writeOutgoing()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in channel.close(promise: nil) }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ProtocolViolation {
            connectionError(error)
        } else {
            logger.debug("connection error", metadata: ["peer": "\(peer)", "error": "\(error)"])
            cancelCalls()
            context.close(promise: nil)
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        cancelCalls()
        context.fireChannelInactive()
    }

    /// The connection is gone: its calls in flight will never be answered.
    private func cancelCalls() {
        for call in machine.closed() {
            call.task.cancel()
            call.timer?.cancel()
            metrics.inFlight.decrement()
            executor.ended(call.route, code: .cancelled, nanoseconds: (NIODeadline.now() - call.started).nanoseconds)
        }
    }
}
