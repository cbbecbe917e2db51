import Logging
import NIOCore
import NIOPosix
import RosterRPC
import RosterTLS
import Synchronization

/// A channel to one server: the transport generated clients run over.
///
///     let client = RPCClient(host: "127.0.0.1", port: 7070)
///     let match = MatchService.Client(transport: client)
///     let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: hash))
///
/// It owns `configuration.connections` connections, opened on first use and
/// used in turn; each carries any number of concurrent calls. A connection
/// that fails to open is retried after an exponential backoff, during which
/// calls fail fast with `UNAVAILABLE`. When a server drains a connection, new
/// calls go to a fresh one, and calls it refused unprocessed are sent again.
public final class RPCClient: RPCClientTransport, Sendable {
    public struct Configuration: Sendable {
        /// Connections to spread calls over.
        public var connections: Int
        public var connectTimeout: Duration
        public var initialBackoff: Duration
        public var maxBackoff: Duration
        public var maxFrameSize: Int
        /// Applied to calls whose options give no timeout.
        public var defaultTimeout: Duration?
        /// How often a call the server refused unprocessed (while draining) is
        /// sent again on another connection.
        public var maxTransparentRetries: Int
        /// TLS for every connection (nil: plaintext). A TLS connection is
        /// ready once the handshake is done and the server's preface has
        /// arrived, so a refused certificate fails the connect, with backoff.
        public var tls: ClientTLS?

        public init(
            connections: Int = 1, connectTimeout: Duration = .seconds(5), initialBackoff: Duration = .milliseconds(100),
            maxBackoff: Duration = .seconds(5), maxFrameSize: Int = WireProtocol.defaultMaxFrameSize,
            defaultTimeout: Duration? = nil, maxTransparentRetries: Int = 3, tls: ClientTLS? = nil
        ) {
            self.tls = tls
            self.connections = max(1, connections)
            self.connectTimeout = connectTimeout
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.maxFrameSize = maxFrameSize
            self.defaultTimeout = defaultTimeout
            self.maxTransparentRetries = maxTransparentRetries
        }
    }

    public let host: String
    public let port: Int
    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let slots: [ConnectionSlot]
    private let turn = Atomic<Int>(0)
    private let isClosed = Atomic<Bool>(false)

    public init(host: String, port: Int, configuration: Configuration = .init(),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.configuration = configuration
        self.group = group
        let (initial, maximum) = (TimeAmount(configuration.initialBackoff), TimeAmount(configuration.maxBackoff))
        self.slots = (0..<configuration.connections).map { _ in
            ConnectionSlot(group: group) { failures in RPCClient.backoff(failures: failures, initial: initial, maximum: maximum) }
        }
    }

    public convenience init(address: SocketAddress, configuration: Configuration = .init(),
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.init(host: address.ipAddress ?? "127.0.0.1", port: address.port ?? 0, configuration: configuration, group: group)
    }

    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: RPCMethodDescriptor, request: Request, options: CallOptions
    ) async throws -> Response {
        // One deadline for the whole call: connecting and transparent
        // retries spend from it, and the call fails here when it passes.
        let deadline = (options.timeout ?? configuration.defaultTimeout).map { NIODeadline.now() + .nanoseconds(Self.nanoseconds($0)) }
        var retries = 0
        while true {
            do {
                return try await attempt(method, request: request, options: options, deadline: deadline)
            } catch let failure as CallFailure {
                if failure.retryable, retries < configuration.maxTransparentRetries {
                    retries += 1
                    continue
                }
                throw failure.error
            }
        }
    }

    private func attempt<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: RPCMethodDescriptor, request: Request, options: CallOptions, deadline: NIODeadline?
    ) async throws -> Response {
        guard !isClosed.load(ordering: .relaxed) else { throw RPCError(.unavailable, "client is closed") }
        let slot = slots[turn.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count]
        // An open connection is taken at once: awaiting even a completed
        // future costs a hop to its event loop and back.
        let connection: ClientConnection
        if let ready = slot.readyConnection {
            connection = ready
        } else {
            connection = try await slot.connection(connect: connect).get()
        }

        let id = connection.nextCallID()
        var timeout: TimeAmount?
        if let deadline {
            let left = deadline - .now()
            guard left.nanoseconds > 0 else { throw RPCError(.deadlineExceeded, "deadline passed before the call was sent") }
            timeout = left
        }
        let head = RequestHead(methodID: method.id, timeoutMilliseconds: timeout.map { Self.milliseconds(.nanoseconds($0.nanoseconds)) } ?? 0,
                               metadata: options.metadata)
        let size = request.serializedSize
        let payloadSize = head.encodedLength + size
        guard payloadSize <= configuration.maxFrameSize else {
            throw RPCError(.resourceExhausted, "request of \(payloadSize) bytes exceeds the frame limit of \(configuration.maxFrameSize)")
        }
        // The handler resumes this continuation with the response: no promise,
        // no future, no callback registered from this thread (which would
        // cost another hop to the event loop per call).
        let reply = try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (response: ClientConnectionHandler.Response) in
                connection.send(id: id, head: head, message: request, size: size, timeout: timeout, response: response)
                // A cancellation that came before the call was handed over
                // found nothing to cancel: cancel it again, behind the call.
                if Task.isCancelled { connection.cancel(id: id) }
            }
        } onCancel: {
            connection.cancel(id: id)
        }
        return try Self.decode(reply, method: method)
    }

    private static func decode<Response: ProtoMessage>(_ frame: Frame, method: RPCMethodDescriptor) throws -> Response {
        var payload = frame.payload
        guard let raw = payload.readInteger(as: UInt8.self) else {
            throw RPCError(.internal, "empty RESPONSE payload for \(method)")
        }
        let code = RPCStatusCode(rawValue: raw) ?? .unknown
        guard code == .ok else {
            let error = RPCError(code, payload.readString(length: payload.readableBytes) ?? "")
            if frame.flags & FrameFlags.notProcessed != 0 { throw CallFailure(error: error, retryable: true) }
            throw error
        }
        do {
            return try payload.withUnsafeReadableBytes { try Response(decoding: $0) }
        } catch {
            throw RPCError(.internal, "response of \(method) does not decode: \(error)")
        }
    }

    /// Measures one round trip on a connection (opening it if needed).
    public func ping() async throws -> Duration {
        let slot = slots[turn.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count]
        let connection = try await slot.connection(connect: connect).get()
        let start = NIODeadline.now()
        let promise = connection.channel.eventLoop.makePromise(of: NIODeadline.self)
        connection.channel.writeAndFlush(ClientCommand.ping(promise)).whenFailure { promise.fail($0) }
        let end = try await promise.futureResult.get()
        return .nanoseconds((end - start).nanoseconds)
    }

    /// The connections open now (for tests that look at their sockets).
    @_spi(Testing) public var openConnections: [any Channel] {
        slots.compactMap { $0.openChannel }
    }

    /// Closes every connection; later calls fail with `UNAVAILABLE`.
    public func close() async {
        isClosed.store(true, ordering: .relaxed)
        for slot in slots {
            if let channel = slot.close() { try? await channel.close() }
        }
    }

    private func connect(_ slot: ConnectionSlot) -> EventLoopFuture<ClientConnection> {
        let maxFrameSize = configuration.maxFrameSize
        let (host, port, tls) = (self.host, self.port, configuration.tls)
        let connectTimeout = TimeAmount(configuration.connectTimeout)
        let ready = group.next().makePromise(of: Void.self)
        // Made where the handler is added (on the channel's loop): by the time
        // the connect completes, a server that refused at once may have closed
        // the channel and emptied its pipeline.
        let made = Mutex<ClientConnection?>(nil)
        let connected = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            // At IPPROTO_TCP: see RPCServer.start().
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try tls?.addHandlers(to: sync, host: host, port: port)
                    let handler = ClientConnectionHandler(maxFrameSize: maxFrameSize, ready: tls == nil ? nil : ready,
                                                          onGoAway: { [weak slot] in slot?.forget(channel) })
                    try sync.addHandler(handler)
                    let connection = ClientConnection(channel: channel, handler: handler)
                    made.withLock { $0 = connection }
                }
            }
            .connect(host: host, port: port)
        let opened: EventLoopFuture<any Channel>
        if tls == nil {
            ready.succeed()
            opened = connected
        } else {
            // Over TLS, wait for the server's preface: it follows the server's
            // check of this client's certificate, whose refusal (TLS 1.3)
            // arrives only after the client's side of the handshake is done.
            opened = connected.flatMap { channel in
                let timer = channel.eventLoop.scheduleTask(in: connectTimeout) {
                    ready.fail(TLSFailure("no TLS handshake with \(host):\(port) within \(connectTimeout.nanoseconds / 1_000_000) ms"))
                    channel.close(promise: nil)
                }
                return ready.futureResult.map { timer.cancel(); return channel }
                    .flatMapErrorThrowing { error in timer.cancel(); channel.close(promise: nil); throw error }
            }
            connected.whenFailure { ready.fail($0) }
        }
        return opened
            .flatMapThrowing { channel in
                guard let connection = made.withLock({ $0 }) else { throw ChannelError.ioOnClosedChannel }
                return connection
            }
            .flatMapErrorThrowing { error in
                if let failure = error as? TLSFailure { throw RPCError(.unavailable, failure.message) }
                throw RPCError(.unavailable, "cannot connect to \(host):\(port): \(ConnectFailure.describe(error, host: host, port: port, timeout: connectTimeout))")
            }
    }

    /// `initial` doubling per failure up to `maximum`, with ±20 % jitter so that
    /// many clients do not reconnect in step.
    static func backoff(failures: Int, initial: TimeAmount, maximum: TimeAmount) -> TimeAmount {
        let base = initial.nanoseconds << min(max(failures - 1, 0), 20)
        let capped = min(base, maximum.nanoseconds)
        return .nanoseconds(Int64(Double(capped) * Double.random(in: 0.8...1.2)))
    }

    /// A timeout as the request head carries it: whole milliseconds, rounded up, at least 1.
    package static func milliseconds(_ d: Duration) -> UInt32 {
        let ms = (nanoseconds(d) + 999_999) / 1_000_000
        return UInt32(clamping: max(1, ms))
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// One open connection and its call-id counter.
final class ClientConnection: Sendable {
    let channel: any Channel
    /// Calls are handed to it directly, on its event loop.
    let handler: NIOLoopBound<ClientConnectionHandler>
    private let ids = Atomic<UInt32>(0)

    /// Calls (and cancellations) made off the event loop, waiting for it:
    /// handed over in batches, one hop to the loop, one write and one flush
    /// for all the calls made meanwhile. Each call's frame is encoded straight
    /// into the batch's buffer (no buffer of its own, no pending write of its
    /// own). Cancellations are handled after the batch's calls, so one never
    /// comes before the call it cancels.
    private let outbox = Mutex(Outbox())

    private struct Outbox {
        var frames = ByteBuffer()
        var calls: [ClientConnectionHandler.Submission] = []
        var cancels: [UInt32] = []
        var isEmpty: Bool { calls.isEmpty && cancels.isEmpty }
    }

    init(channel: any Channel, handler: ClientConnectionHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// Sends a call on this connection. On the event loop it goes at once;
    /// elsewhere it joins the outbox, and the first call into an empty outbox
    /// asks the loop to send them all. `size` is `message.serializedSize`.
    func send(id: UInt32, head: RequestHead, message: some ProtoMessage, size: Int, timeout: TimeAmount?,
              response: ClientConnectionHandler.Response) {
        let call = ClientConnectionHandler.Submission(id: id, timeout: timeout, response: response)
        if channel.eventLoop.inEventLoop {
            var frame = channel.allocator.buffer(capacity: WireProtocol.headerLength + head.encodedLength + size)
            FrameWriter.appendRequest(callID: id, head: head, message: message, size: size, to: &frame)
            handler.value.submit(frames: frame, calls: CollectionOfOne(call), coalesce: true)
            return
        }
        post { outbox in
            FrameWriter.appendRequest(callID: id, head: head, message: message, size: size, to: &outbox.frames)
            outbox.calls.append(call)
        }
    }

    /// Fails a call as cancelled by the caller and tells the server (nothing
    /// if it has completed).
    func cancel(id: UInt32) {
        if channel.eventLoop.inEventLoop {
            handler.value.cancel(id: id)
            return
        }
        post { $0.cancels.append(id) }
    }

    /// Adds to the outbox; the first addition to an empty outbox asks the loop to drain it.
    private func post(_ add: (inout Outbox) -> Void) {
        let first = outbox.withLock { outbox -> Bool in
            let first = outbox.isEmpty
            add(&outbox)
            return first
        }
        if first { channel.eventLoop.execute { self.drain() } }
    }

    private func drain() {
        var batch = Outbox()
        batch.frames = channel.allocator.buffer(capacity: 2048)
        outbox.withLock { swap(&$0, &batch) }
        let handler = self.handler.value
        if !batch.calls.isEmpty { handler.submit(frames: batch.frames, calls: batch.calls, coalesce: false) }
        for id in batch.cancels { handler.cancel(id: id) }
    }

    /// Ids are unique among the calls in flight on this connection; 0 is never used.
    func nextCallID() -> UInt32 {
        while true {
            let id = ids.wrappingAdd(1, ordering: .relaxed).newValue
            if id != 0 { return id }
        }
    }
}

/// One of a client's connections: opened lazily, reopened after it closes,
/// with a backoff after failed attempts.
final class ConnectionSlot: Sendable {
    private enum State {
        case idle(failures: Int)
        case connecting(EventLoopFuture<ClientConnection>)
        case ready(ClientConnection)
        case backingOff(until: NIODeadline, failures: Int, error: RPCError)
    }

    private let state = Mutex(State.idle(failures: 0))
    private let group: any EventLoopGroup
    private let backoff: @Sendable (Int) -> TimeAmount

    init(group: any EventLoopGroup, backoff: @escaping @Sendable (Int) -> TimeAmount) {
        self.group = group
        self.backoff = backoff
    }

    func connection(connect: (ConnectionSlot) -> EventLoopFuture<ClientConnection>) -> EventLoopFuture<ClientConnection> {
        // Callbacks are registered after the lock is released: a future that is
        // already complete may run them at once, and they take the lock too.
        let (future, startedWithFailures) = state.withLock { state -> (EventLoopFuture<ClientConnection>, Int?) in
            let failures: Int
            switch state {
            case .ready(let connection) where connection.channel.isActive:
                return (connection.channel.eventLoop.makeSucceededFuture(connection), nil)
            case .ready:
                failures = 0
            case .connecting(let future):
                return (future, nil)
            case .backingOff(let until, _, let error) where NIODeadline.now() < until:
                // Fail fast while backing off rather than queueing calls behind a dead server.
                let wait = (until - .now()).nanoseconds / 1_000_000
                return (group.next().makeFailedFuture(RPCError(.unavailable, "\(error.message); retrying in \(wait) ms")), nil)
            case .backingOff(_, let count, _), .idle(let count):
                failures = count
            }
            let future = connect(self)
            state = .connecting(future)
            return (future, failures)
        }
        if let failures = startedWithFailures {
            future.whenComplete { [self] result in
                switch result {
                case .success(let connection):
                    state.withLock { $0 = .ready(connection) }
                    connection.channel.closeFuture.whenComplete { [weak self] _ in self?.forget(connection.channel) }
                case .failure(let error):
                    let count = failures + 1
                    let until = NIODeadline.now() + backoff(count)
                    let error = (error as? RPCError) ?? RPCError(.unavailable, "\(error)")
                    state.withLock { $0 = .backingOff(until: until, failures: count, error: error) }
                }
            }
        }
        return future
    }

    /// Drops a connection that closed or is draining, so the next call opens another.
    func forget(_ channel: any Channel) {
        state.withLock { state in
            if case .ready(let connection) = state, connection.channel === channel {
                state = .idle(failures: 0)
            }
        }
    }

    /// The connection, when one is open (no waiting, no future).
    var readyConnection: ClientConnection? {
        state.withLock { state in
            if case .ready(let connection) = state, connection.channel.isActive { return connection }
            return nil
        }
    }

    var openChannel: (any Channel)? {
        state.withLock { state in
            if case .ready(let connection) = state { return connection.channel }
            return nil
        }
    }

    func close() -> (any Channel)? {
        state.withLock { state in
            defer { state = .idle(failures: 0) }
            if case .ready(let connection) = state { return connection.channel }
            return nil
        }
    }
}
