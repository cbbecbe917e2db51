#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Histogram
import NIOCore
import NIOPosix
import RosterRPC
import RosterTransport
import Synchronization

/// Open-loop load on one server at rates a `Task` per call cannot reach.
///
/// Everything happens on one event loop thread (so the harness uses at most
/// about one core): each connection's handler wakes when its next call is
/// due (at most once per `pacing`), works out which of its calls are due by
/// the schedule, and writes them in one buffer — pre-encoded request payloads behind a ten-byte header with
/// the call's id — with one flush. A reply's call id tells its intended send
/// time by arithmetic (no table of calls in flight), and its latency from that
/// time goes into the connection's own HdrHistogram; histograms are merged
/// once a second for the live line and at the end for the report. No task,
/// continuation, lock or allocation per call.
///
/// Time is honoured: sending stops when the schedule ends (calls the harness
/// could not send by then are counted as unsent), replies are waited for at
/// most `grace`, and calls still unanswered then count as DEADLINE_EXCEEDED.
public struct OpenLoopEngine: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var tls: ClientTLS?
        public var schedule: RateSchedule
        public var connections: Int
        /// Calls in flight at most, over all connections; a due call waits for
        /// a reply to free a place (and that wait counts in its latency).
        public var maxInFlight: Int
        /// How long to wait for replies after the last call is sent.
        public var grace: Duration
        /// Keys per call (for keys/s).
        public var keysPerCall: Int
        /// The shortest time between two sends of one connection: at rates
        /// above one call per `pacing` a send carries several calls (each one
        /// up to `pacing` late, which its latency includes).
        public var pacing: Duration
        public var maxFrameSize: Int

        public init(host: String, port: Int, tls: ClientTLS? = nil, schedule: RateSchedule, connections: Int = 4, maxInFlight: Int = 4096,
                    grace: Duration = .seconds(2), keysPerCall: Int = 1, pacing: Duration = .microseconds(100),
                    maxFrameSize: Int = WireProtocol.defaultMaxFrameSize) {
            self.host = host
            self.port = port
            self.tls = tls
            self.schedule = schedule
            self.connections = max(1, connections)
            self.maxInFlight = max(1, maxInFlight)
            self.grace = grace
            self.keysPerCall = max(1, keysPerCall)
            self.pacing = pacing
            self.maxFrameSize = maxFrameSize
        }
    }

    /// What one reply said, as the caller's `inspect` reads it: how many of
    /// the keys asked matched and how many did not, and whether the answer
    /// was checked and found wrong.
    public struct Outcome: Sendable {
        public var hits: Int
        public var misses: Int
        public var wrong: Bool
        public init(hits: Int, misses: Int, wrong: Bool = false) {
            self.hits = hits
            self.misses = misses
            self.wrong = wrong
        }
    }

    /// Reads a successful reply's encoded message to request number `request`.
    public typealias Inspect = @Sendable (_ request: Int, _ message: UnsafeRawBufferPointer) -> Outcome

    /// One request, encoded once: its method, head and message (the
    /// REQUEST payload); the engine adds each call's header.
    public struct Request: Sendable {
        let payload: ByteBuffer

        public init<Message: ProtoMessage>(method: RPCMethodDescriptor, message: Message, metadata: Metadata = [:], timeout: Duration? = nil) {
            let milliseconds = timeout.map(RPCClient.milliseconds) ?? 0
            var frame = FrameWriter.request(callID: 0, head: RequestHead(methodID: method.id, timeoutMilliseconds: milliseconds, metadata: metadata),
                                            message: message, allocator: ByteBufferAllocator())
            frame.moveReaderIndex(forwardBy: WireProtocol.headerLength)
            payload = frame.slice()
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Runs the schedule, call `g` sending `requests[g % count]`. Throws only
    /// when a connection cannot be opened.
    public func run(requests: [Request], inspect: Inspect? = nil,
                    onTick: @escaping @Sendable (LoadGenerator.Tick) -> Void = { _ in }) async throws -> LoadReport {
        precondition(!requests.isEmpty, "no requests to send")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let cpuBefore = Self.processCPU()
        let configuration = self.configuration
        let n = configuration.connections
        let perConnection = (configuration.maxInFlight + n - 1) / n

        var handlers: [OpenLoopConnection] = []
        var channels: [any Channel] = []
        // A connection that fails ends the run before it starts: the others close.
        func abandon(_ handler: OpenLoopConnection) async {
            handler.finished.succeed()
            for channel in channels { try? await channel.close() }
        }
        for index in 0..<n {
            let handler = OpenLoopConnection(index: index, stride: n, schedule: configuration.schedule, requests: requests.map(\.payload),
                                             maxFrameSize: configuration.maxFrameSize,
                                             inspect: inspect, maxInFlight: perConnection, grace: configuration.grace,
                                             pacing: configuration.pacing, eventLoop: group.next())
            let channel: any Channel
            do {
                channel = try await ClientBootstrap(group: group)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try configuration.tls?.addHandlers(to: sync, host: configuration.host, port: configuration.port)
                        try sync.addHandler(handler)
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .flatMapErrorThrowing { error in
                    throw RPCError(.unavailable, "cannot connect to \(configuration.host):\(configuration.port): "
                                   + ConnectFailure.describe(error, host: configuration.host, port: configuration.port, timeout: .seconds(5)))
                }
                .get()
            } catch {
                await abandon(handler)
                throw error
            }
            handlers.append(handler)
            channels.append(channel)
        }

        let timeline = Mutex<[LoadGenerator.Tick]>([])
        let connections = handlers
        // A little ahead, so that every connection starts on the same schedule.
        let start = NIODeadline.now() + .milliseconds(20)
        for handler in handlers { handler.eventLoop.execute { handler.start(at: start) } }
        let seconds = Counter()
        /// Merges the connections' figures since the last tick into the tick for `second`.
        /// With `partial`, a second with nothing in it (the run ended on a
        /// whole second) is left off.
        let tick: @Sendable (Int, Bool) async -> Void = { second, partial in
            var merged = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
            var tick = LoadGenerator.Tick(second: second, calls: 0, errors: 0, p50: .zero, p99: .zero, inFlight: 0, lag: .zero)
            for handler in connections {
                guard let part = try? await handler.eventLoop.submit({ handler.takeInterval() }).get() else { continue }
                merged.add(part.histogram)
                tick.calls += part.calls
                tick.errors += part.errors
                tick.inFlight += part.inFlight
                tick.lag = max(tick.lag, part.lag)
            }
            tick.p50 = .microseconds(Int64(merged.valueAtPercentile(50)))
            tick.p99 = .microseconds(Int64(merged.valueAtPercentile(99)))
            if partial && tick.calls == 0 && tick.errors == 0 { return }
            tick.asked = configuration.schedule.rate(at: Int64(second) * 1_000_000_000 - 500_000_000)
            timeline.withLock { $0.append(tick) }
            onTick(tick)
        }
        let ticker = Task {
            while !Task.isCancelled {
                let second = seconds.value + 1
                let wait = (start + .seconds(Int64(second))) - .now()
                if wait.nanoseconds > 0 { try? await Task.sleep(for: .nanoseconds(wait.nanoseconds)) }
                if Task.isCancelled { break }
                seconds.value = second
                await tick(second, false)
            }
        }
        for handler in handlers { try? await handler.finished.futureResult.get() }
        let end = NIODeadline.now()
        ticker.cancel()
        _ = await ticker.value
        // The last, perhaps partial, second: its calls belong on the timeline too.
        let last = seconds.value + 1
        if Double(last - 1) < Double((end - start).nanoseconds) / 1e9 { await tick(last, true) }
        for channel in channels { try? await channel.close() }

        var report = LoadReport(asked: configuration.schedule.meanRate, duration: configuration.schedule.duration,
                                elapsed: .nanoseconds((end - start).nanoseconds), calls: 0, keysPerCall: configuration.keysPerCall,
                                errors: [:], histogram: Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000,
                                                                          numberOfSignificantValueDigits: .three),
                                maxLag: .zero)
        for handler in handlers {
            let totals = try await handler.eventLoop.submit { handler.totals }.get()
            report.histogram.add(totals.histogram)
            report.calls += totals.replies
            report.ok += totals.ok
            report.errors.merge(totals.errors) { $0 + $1 }
            report.maxLag = max(report.maxLag, .nanoseconds(totals.maxLagNanos))
            report.wrongAnswers += totals.wrong
            report.hits += totals.hits
            report.misses += totals.misses
            report.unsent += totals.unsent
            report.sent += totals.sent
            report.inFlightCapWaits += totals.capWaits
        }
        let cpu = Self.processCPU() - cpuBefore
        report.harnessCPU = cpu
        report.timeline = timeline.withLock { $0 }
        return report
    }

    /// User and system CPU time this process has used.
    static func processCPU() -> Duration {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let micros = Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
        return .microseconds(micros)
    }
}

/// The seconds ticked so far, shared by the ticker and the run's end.
private final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int {
        get { count.withLock { $0 } }
        set { count.withLock { $0 = newValue } }
    }
}

/// One connection of an open-loop run; every method runs on its event loop.
final class OpenLoopConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Interval {
        var histogram: Histogram<UInt64>
        var calls: Int
        var errors: Int
        var inFlight: Int
        var lag: Duration
    }

    struct Totals {
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var replies = 0
        var ok = 0
        var errors: [RPCStatusCode: Int] = [:]
        var hits = 0
        var misses = 0
        var wrong = 0
        var sent = 0
        var unsent = 0
        var maxLagNanos: Int64 = 0
        /// Times a due call waited because --concurrency calls were in flight:
        /// the lag that follows is the server's slowness, not the sender's.
        var capWaits = 0
    }

    let eventLoop: any EventLoop
    let finished: EventLoopPromise<Void>
    private let index: Int
    private let stride: Int
    private let schedule: RateSchedule
    private let requests: [ByteBuffer]
    private let inspect: OpenLoopEngine.Inspect?
    private let maxInFlight: Int
    private let grace: TimeAmount
    private let pacing: TimeAmount
    /// Calls this connection sends: every `stride`-th of the schedule's, from `index`.
    private let calls: Int

    private var context: ChannelHandlerContext?
    private var reader: FrameReader
    private var start = NIODeadline.now()
    private var sent = 0
    private var answered = 0
    private var sendHint = 0
    private var replyHint = 0
    private var wake: Scheduled<Void>?
    /// Due calls wait for replies to free places in flight.
    private var blocked = false
    private var sendingDone = false
    private var done = false
    private var lagNanos: Int64 = 0
    /// The most the sender was behind in the current second (what its tick shows).
    private var intervalLagNanos: Int64 = 0
    private(set) var totals = Totals()
    private var interval = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
    private var intervalCalls = 0
    private var intervalErrors = 0

    init(index: Int, stride: Int, schedule: RateSchedule, requests: [ByteBuffer], maxFrameSize: Int = WireProtocol.defaultMaxFrameSize,
         inspect: OpenLoopEngine.Inspect?, maxInFlight: Int, grace: Duration, pacing: Duration, eventLoop: any EventLoop) {
        self.reader = FrameReader(maxFrameSize: maxFrameSize)
        self.index = index
        self.stride = stride
        self.schedule = schedule
        self.requests = requests
        self.inspect = inspect
        self.maxInFlight = maxInFlight
        self.grace = .nanoseconds(grace.wholeNanoseconds)
        self.pacing = .nanoseconds(max(pacing.wholeNanoseconds, 10_000))
        self.eventLoop = eventLoop
        self.finished = eventLoop.makePromise()
        self.calls = schedule.totalCalls > index ? (schedule.totalCalls - index + stride - 1) / stride : 0
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        var preface = context.channel.allocator.buffer(capacity: WireProtocol.prefaceLength)
        FrameWriter.writePreface(into: &preface)
        context.writeAndFlush(wrapOutboundOut(preface), promise: nil)
        context.fireChannelActive()
    }

    /// Begins sending on the schedule that starts at `start`.
    func start(at start: NIODeadline) {
        self.start = start
        guard !done else { return }
        arm(now: .now())
    }

    /// Wakes at the next call's intended time — but no sooner than `pacing`
    /// from now, so that at high rates a wake sends a batch — and in any case
    /// at the schedule's end, to stop on time.
    private func arm(now: NIODeadline) {
        wake?.cancel()
        let end = start + .nanoseconds(schedule.duration.wholeNanoseconds)
        var at = end
        if sent < calls, !blocked {
            let next = start + .nanoseconds(schedule.offset(ofCall: index + sent * stride, hint: &sendHint))
            at = min(max(next, now + pacing), end)
        }
        wake = eventLoop.scheduleTask(deadline: at) { [weak self] in self?.pace() }
    }

    /// Sends every call that is due and has a place in flight, in one write.
    private func pace() {
        guard let context, !sendingDone else { return }
        let now = NIODeadline.now()
        let elapsed = (now - start).nanoseconds
        var out: ByteBuffer?
        let wasBlocked = blocked
        blocked = false
        lagNanos = 0
        while sent < calls {
            let g = index + sent * stride
            let due = schedule.offset(ofCall: g, hint: &sendHint)
            if due > elapsed { break }
            if sent - answered >= maxInFlight {
                // Full: the next reply sends it (late, and its latency says so).
                if !wasBlocked { totals.capWaits += 1 }
                blocked = true
                lagNanos = elapsed - due
                break
            }
            totals.maxLagNanos = max(totals.maxLagNanos, elapsed - due)
            intervalLagNanos = max(intervalLagNanos, elapsed - due)
            let payload = requests[g % requests.count]
            if out == nil { out = context.channel.allocator.buffer(capacity: 64 * (payload.readableBytes + WireProtocol.headerLength)) }
            out!.writeInteger(UInt32(payload.readableBytes))
            out!.writeInteger(FrameType.request.rawValue)
            out!.writeInteger(UInt8(0))
            out!.writeInteger(UInt32(truncatingIfNeeded: sent + 1))
            out!.writeImmutableBuffer(payload)
            sent += 1
        }
        totals.maxLagNanos = max(totals.maxLagNanos, lagNanos)
        intervalLagNanos = max(intervalLagNanos, lagNanos)
        if let out { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        // The schedule is over: what could not be sent by now is not sent late.
        if sent == calls || elapsed >= schedule.duration.wholeNanoseconds {
            endSending()
        } else {
            arm(now: now)
        }
    }

    /// Sends nothing more; what was not sent by now is counted as unsent.
    private func stopSending() {
        guard !sendingDone else { return }
        sendingDone = true
        wake?.cancel()
        totals.sent = sent
        totals.unsent = calls - sent
    }

    private func endSending() {
        guard !sendingDone else { return }
        stopSending()
        if answered == sent { return finish() }
        eventLoop.scheduleTask(in: grace) { [weak self] in self?.finish() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            // After the end, a reply is too late: its call was counted as DEADLINE_EXCEEDED.
            try reader.read(unwrapInboundIn(data), isOpen: { !done }) { inbound in
                if case .frame(let frame) = inbound { received(frame, context: context) }
            }
        } catch {
            errorCaught(context: context, error: error)
        }
    }

    private func received(_ frame: Frame, context: ChannelHandlerContext) {
        switch frame.type {
        case .response:
            let now = NIODeadline.now()
            let local = Int(frame.callID) - 1
            guard local >= 0, local < sent else { return }
            let g = index + local * stride
            let intended = schedule.offset(ofCall: g, hint: &replyHint)
            let micros = UInt64(max(1, ((now - start).nanoseconds - intended) / 1000))
            _ = totals.histogram.record(micros)
            _ = interval.record(micros)
            answered += 1
            totals.replies += 1
            intervalCalls += 1
            var payload = frame.payload
            let code = payload.readInteger(as: UInt8.self).flatMap(RPCStatusCode.init(rawValue:)) ?? .unknown
            if code == .ok { totals.ok += 1 }
            if code != .ok {
                totals.errors[code, default: 0] += 1
                intervalErrors += 1
            } else if let inspect {
                let outcome = payload.withUnsafeReadableBytes { inspect(g % requests.count, $0) }
                totals.hits += outcome.hits
                totals.misses += outcome.misses
                if outcome.wrong { totals.wrong += 1 }
            }
            if sendingDone && answered == sent { finish() }
            if blocked && sent - answered < maxInFlight { pace() }
        case .goAway:
            context.close(promise: nil)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopSending()
        // Calls the closed connection will never answer.
        if !done, sent > answered { totals.errors[.unavailable, default: 0] += sent - answered }
        answered = sent
        finish()
        context.fireChannelInactive()
    }

    /// Ends the run for this connection: calls unanswered after the grace
    /// period count as DEADLINE_EXCEEDED.
    private func finish() {
        guard !done else { return }
        done = true
        if sent > answered { totals.errors[.deadlineExceeded, default: 0] += sent - answered }
        finished.succeed()
    }

    /// The last second's figures, and a fresh start for the next.
    func takeInterval() -> Interval {
        defer {
            interval.reset()
            intervalCalls = 0
            intervalErrors = 0
            intervalLagNanos = lagNanos
        }
        return Interval(histogram: interval, calls: intervalCalls, errors: intervalErrors, inFlight: sent - answered,
                        lag: .nanoseconds(max(lagNanos, intervalLagNanos)))
    }
}
