import CoreMetrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import RosterTLS
import ServiceLifecycle
import Synchronization

/// Serves swift-metrics in Prometheus' text format at `GET /metrics`.
///
///     let registry = PrometheusCollectorRegistry()
///     MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
///     let endpoint = MetricsEndpoint(registry: registry, port: 9090)
///     try await endpoint.run()   // or add it to a ServiceGroup
public final class MetricsEndpoint: Service, Sendable {
    public let registry: PrometheusCollectorRegistry
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let channel = Mutex<(any Channel)?>(nil)
    /// HTTPS when set (its ALPN list should offer "http/1.1"); with a client
    /// CA in it, scrapers must present a certificate.
    public let tls: TLSContextSource?

    public init(registry: PrometheusCollectorRegistry, host: String = "127.0.0.1", port: Int = 0, tls: TLSContextSource? = nil,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.tls = tls
        self.registry = registry
        self.host = host
        self.port = port
        self.group = group
    }

    /// Installs a Prometheus-backed metrics system for the whole process and
    /// returns its registry. swift-metrics allows this once per process.
    public static func bootstrapMetricsSystem() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    public var localAddress: SocketAddress? { channel.withLock { $0?.localAddress } }

    public func start() async throws {
        let (registry, host, port) = (self.registry, self.host, self.port)
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(TLSServerSniffer(answer: { allocator in
                            let body = "this port serves HTTPS: scrape https://\(host):\(port)/metrics\n"
                            return allocator.buffer(string: "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                + "Content-Length: \(body.utf8.count)\r\n\r\n" + body)
                        }, onPlaintext: { _ in }))
                        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    try sync.configureHTTPServerPipeline()
                    try sync.addHandler(MetricsHTTPHandler(registry: registry))
                }
            }
            .bind(host: host, port: port)
            .get()
        channel.withLock { $0 = listener }
    }

    public func stop() async {
        let listener = channel.withLock { $0 }
        try? await listener?.close()
    }

    public func run() async throws {
        if localAddress == nil { try await start() }
        let listener = channel.withLock { $0 }
        await withGracefulShutdownHandler {
            try? await listener?.closeFuture.get()
        } onGracefulShutdown: {
            listener?.close(promise: nil)
        }
    }
}

/// Answers `GET /metrics`; anything else gets 404.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            let found = head.method == .GET && head.uri.split(separator: "?").first == "/metrics"
            let body: [UInt8] = found ? registry.emitToBuffer() : Array("not found; try /metrics\n".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.count)")
            let response = HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers)
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            self.head = nil
        }
    }
}
