import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RosterRPC
import RosterServerCore
import RosterTLS
import RosterTransport
import ServiceLifecycle
import Synchronization

/// Hosts generated services on a TCP port.
///
/// Run it as a swift-service-lifecycle `Service` (SIGTERM/SIGINT then drain
/// it: new calls are refused, calls in flight finish, connections close, and
/// `run()` returns), or drive it by hand with `start()`, `drain()` and
/// `waitUntilClosed()`.
public final class RPCServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        /// 0 lets the system choose; `localAddress` tells which.
        public var port: Int
        public var maxConnections: Int
        /// Reading from a connection pauses while this many calls are running on it.
        public var maxConcurrentCallsPerConnection: Int
        public var maxFrameSize: Int
        /// A connection that sends no request and has no call in flight for
        /// this long is drained and closed (within one and a half times it).
        public var idleTimeout: Duration?
        /// Applied to calls that carry no deadline of their own.
        public var defaultTimeout: Duration?
        /// How long a draining connection may take before it is closed anyway.
        public var drainTimeout: Duration
        /// TLS on every connection (nil: plaintext): each new connection takes
        /// the source's current context, so `reload()` drops none. Its ALPN
        /// list should offer `WireProtocol.alpn`.
        public var tls: TLSContextSource?

        public init(
            host: String = "127.0.0.1", port: Int = 0, maxConnections: Int = 4096,
            maxConcurrentCallsPerConnection: Int = 1024, maxFrameSize: Int = WireProtocol.defaultMaxFrameSize,
            idleTimeout: Duration? = .seconds(300), defaultTimeout: Duration? = nil, drainTimeout: Duration = .seconds(30),
            tls: TLSContextSource? = nil
        ) {
            self.tls = tls
            self.host = host
            self.port = port
            self.maxConnections = maxConnections
            self.maxConcurrentCallsPerConnection = maxConcurrentCallsPerConnection
            self.maxFrameSize = maxFrameSize
            self.idleTimeout = idleTimeout
            self.defaultTimeout = defaultTimeout
            self.drainTimeout = drainTimeout
        }
    }

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var draining = false
    }

    public let configuration: Configuration
    private let routes: RouteTable
    private let metrics: ServerMetrics
    private let logger: Logger
    private let group: any EventLoopGroup
    private let state = Mutex(State())
    private let closed: EventLoopPromise<Void>

    public init(
        configuration: Configuration = .init(), services: [any RPCService], logger: Logger = Logger(label: "roster.rpc.server"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws(RPCServerError) {
        self.configuration = configuration
        self.routes = try RouteTable(services: services)
        self.metrics = ServerMetrics()
        self.logger = logger
        self.group = group
        self.closed = group.next().makePromise()
    }

    deinit {
        // A server dropped without being started (or before it closed) must
        // not leave its promise unfulfilled; a second completion is ignored.
        closed.succeed()
    }

    /// The address the server listens on, once started.
    public var localAddress: SocketAddress? {
        state.withLock { $0.listener?.localAddress }
    }

    /// The connections open now (for tests that look at their sockets).
    @_spi(Testing) public var openConnections: [any Channel] {
        state.withLock { Array($0.connections.values) }
    }

    /// Connection handlers still in memory, open or not (for the test that
    /// proves closed connections are freed).
    @_spi(Testing) public var liveConnectionHandlers: Int {
        metrics.liveHandlers.load(ordering: .relaxed)
    }

    /// Binds the listening socket.
    public func start() async throws {
        let configuration = self.configuration
        let routes = self.routes
        let metrics = self.metrics
        let logger = self.logger
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // TCP_NODELAY is a TCP-level option: `.socketOption(.tcp_nodelay)`
            // would set option 1 at SOL_SOCKET, which is SO_DEBUG (refused
            // without CAP_NET_ADMIN, and Nagle stays on).
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // TLS first, so that even a refusal below reaches a TLS client encrypted.
                    if let tls = configuration.tls { try Self.addTLS(tls, to: channel, logger: logger) }
                    guard self.admit(channel) else {
                        logger.warning("refusing connection: limit reached", metadata: ["limit": "\(configuration.maxConnections)"])
                        var buffer = channel.allocator.buffer(capacity: 64)
                        FrameWriter.writePreface(into: &buffer)
                        buffer.writeImmutableBuffer(FrameWriter.goAway(
                            code: .resourceExhausted, lastCallID: 0,
                            message: "connection limit of \(configuration.maxConnections) reached", allocator: channel.allocator))
                        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
                        return
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ServerConnectionHandler(routes: routes, configuration: configuration, metrics: metrics, logger: logger))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        state.withLock { $0.listener = listener }
        logger.info("listening", metadata: ["address": "\(listener.localAddress?.description ?? "?")"])
    }

    /// What a plaintext client is told on a TLS port: a preface and a GOAWAY,
    /// which a Roster client reports as the reason its call failed.
    static let tlsRequired = "this server requires TLS: connect with TLS (roster: --tls, and --ca to trust its certificate)"

    /// TLS in front of the protocol: the sniffer that answers a plaintext
    /// client in plaintext, the TLS handler, and the observer that logs a
    /// failed handshake in words.
    private static func addTLS(_ tls: TLSContextSource, to channel: any Channel, logger: Logger) throws {
        let sync = channel.pipeline.syncOperations
        let peer = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        try sync.addHandler(TLSServerSniffer(answer: { allocator in
            var buffer = allocator.buffer(capacity: 256)
            FrameWriter.writePreface(into: &buffer)
            buffer.writeImmutableBuffer(FrameWriter.goAway(code: .unavailable, lastCallID: 0, message: tlsRequired, allocator: allocator))
            return buffer
        }, onPlaintext: { _ in
            logger.warning("refused a plaintext connection: this server requires TLS", metadata: ["peer": "\(peer)"])
        }))
        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
        try sync.addHandler(TLSHandshakeObserver(side: .server(peer: peer), onFailure: { failure in
            logger.log(level: failure.peerClosed ? .debug : .warning, "\(failure.message)")
        }))
    }

    /// Counts a new connection against the limit and forgets it when it closes.
    private func admit(_ channel: any Channel) -> Bool {
        let admitted = state.withLock { state -> Bool in
            guard !state.draining, state.connections.count < configuration.maxConnections else { return false }
            state.connections[ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else { return false }
        metrics.connections.increment()
        channel.closeFuture.whenComplete { [self] _ in
            metrics.connections.decrement()
            let finished = state.withLock { state -> Bool in
                state.connections[ObjectIdentifier(channel)] = nil
                return state.draining && state.connections.isEmpty
            }
            if finished { closed.succeed() }
        }
        return true
    }

    /// Stops accepting connections and drains every open one. Returns at once;
    /// `waitUntilClosed()` returns when the last connection has closed.
    public func drain() {
        let (listener, connections) = state.withLock { state -> ((any Channel)?, [any Channel]) in
            guard !state.draining else { return (nil, []) }
            state.draining = true
            return (state.listener, Array(state.connections.values))
        }
        guard let listener else { return }
        logger.info("draining", metadata: ["connections": "\(connections.count)"])
        listener.close().whenComplete { [self] _ in
            if state.withLock({ $0.connections.isEmpty }) { closed.succeed() }
        }
        for connection in connections {
            connection.triggerUserOutboundEvent(DrainEvent(), promise: nil)
        }
    }

    public func waitUntilClosed() async {
        try? await closed.futureResult.get()
    }

    /// Starts the server if needed, serves until graceful shutdown, drains.
    public func run() async throws {
        if localAddress == nil { try await start() }
        await withGracefulShutdownHandler {
            await waitUntilClosed()
        } onGracefulShutdown: {
            self.drain()
        }
        logger.info("stopped")
    }
}
