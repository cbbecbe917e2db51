import CoreMetrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import RosterTLS
import ServiceLifecycle
import Synchronization

/// Serves swift-metrics in Prometheus' text format at `GET /metrics`, and
/// the process's health at `GET /healthz` (200 while it serves) and
/// `GET /readyz` (200 once `ready()` was called, else 503 and why).
///
///     let endpoint = MetricsEndpoint(registry: MetricsEndpoint.bootstrapMetricsSystem(), port: 9090)
///     try await endpoint.start()    // binds now: a busy port fails here, before anything else starts
///     endpoint.ready()              // the service behind it can serve
///     try await endpoint.run()      // or add it to a ServiceGroup
public final class MetricsEndpoint: Service, Sendable {
    public let registry: PrometheusCollectorRegistry
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let channel = Mutex<(any Channel)?>(nil)
    /// Why the process is not ready (nil: ready).
    private let notReady = Mutex<String?>("starting")
    /// Pages served besides /metrics, /healthz and /readyz, by path.
    private let routes = Mutex<[String: Route]>([:])
    /// Run before each scrape, off the event loop: gauges a service reads
    /// from its own state (a coordinator's catalog, a match server's lists).
    private let scrapeHooks = Mutex<[@Sendable () async throws -> Void]>([])

    /// A page: its content type and body, made when it is asked for.
    public typealias Route = @Sendable () async throws -> (contentType: String, body: [UInt8])
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
    /// Timers become histograms with buckets from 10 µs (a Match takes
    /// microseconds) to 10 s (a catalog write under load).
    public static func bootstrapMetricsSystem() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        // A file's way to live takes seconds to hours.
        factory.durationHistogramBuckets["roster_ingest_time_to_live_seconds"] = [
            .seconds(1), .seconds(5), .seconds(15), .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600),
            .seconds(1800), .seconds(3600), .seconds(7200), .seconds(21600),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    public static let durationBuckets: [Duration] = [
        .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2) + .microseconds(500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10),
    ]

    /// Serves `GET path` with `page` (a service's status page, say).
    public func serve(_ path: String, _ page: @escaping Route) {
        routes.withLock { $0[path] = page }
    }

    func route(_ path: String) -> Route? {
        if path == "/metrics" {
            return { [self] in
                for hook in scrapeHooks.withLock({ $0 }) { try? await hook() }
                ProcessMetrics.update(registry)
                return ("text/plain; version=0.0.4", MetricsHelp.annotate(registry.emitToBuffer()))
            }
        }
        return routes.withLock { $0[path] }
    }

    /// Runs `hook` before every scrape (a failing hook leaves its gauges as they were).
    public func beforeScrape(_ hook: @escaping @Sendable () async throws -> Void) {
        scrapeHooks.withLock { $0.append(hook) }
    }

    /// A gauge with its help text, labelled (for values a scrape hook sets).
    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// `/readyz` answers 200 from now on.
    public func ready() { notReady.withLock { $0 = nil } }

    /// `/readyz` answers 503 with `reason` from now on.
    public func notReady(_ reason: String) { notReady.withLock { $0 = reason } }

    /// Why `/readyz` fails, or nil when it succeeds.
    public var readiness: String? { notReady.withLock { $0 } }

    public var localAddress: SocketAddress? { channel.withLock { $0?.localAddress } }

    /// `http://host:port` (or https), with the port bound.
    public var url: String {
        let port = localAddress?.port ?? self.port
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(tls == nil ? "http" : "https")://\(host):\(port)"
    }

    /// Binds the port. A port in use is an `EndpointError` that says so.
    public func start() async throws {
        let (registry, host, port) = (self.registry, self.host, self.port)
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: group)
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
                    try sync.addHandler(MetricsHTTPHandler(registry: registry, endpoint: self))
                }
            }
            .bind(host: host, port: port)
            .get()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw EndpointError("cannot serve metrics on \(host):\(port): the port is in use (choose another with --metrics)")
        } catch {
            throw EndpointError("cannot serve metrics on \(host):\(port): \(error)")
        }
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

/// A metrics endpoint that cannot start, in one line.
public struct EndpointError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Answers `GET /metrics`, `/healthz` and `/readyz`; anything else gets 404.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private weak var endpoint: MetricsEndpoint?
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, endpoint: MetricsEndpoint) {
        self.registry = registry
        self.endpoint = endpoint
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            let (status, type, body): (HTTPResponseStatus, String, [UInt8])
            switch (head.method, path) {
            case (.GET, "/healthz"):
                (status, type, body) = (.ok, "text/plain", Array("ok\n".utf8))
            case (.GET, "/readyz"):
                let reason: String? = endpoint.map { $0.readiness } ?? "stopping"
                if let reason {
                    (status, type, body) = (.serviceUnavailable, "text/plain", Array("not ready: \(reason)\n".utf8))
                } else {
                    (status, type, body) = (.ok, "text/plain", Array("ready\n".utf8))
                }
            case (.GET, _):
                if let page = endpoint?.route(path) {
                    // Made off the event loop (a page may read a database); answered back on it.
                    let loop = context.eventLoop
                    let channel = NIOLoopBound((self, context), eventLoop: loop)
                    let version = head.version
                    self.head = nil
                    Task {
                        let answer: (HTTPResponseStatus, String, [UInt8])
                        do {
                            let made = try await page()
                            answer = (.ok, made.contentType, made.body)
                        } catch {
                            answer = (.internalServerError, "text/plain", Array("cannot make this page: \(error)\n".utf8))
                        }
                        loop.execute {
                            let (handler, context) = channel.value
                            handler.respond(context: context, version: version, status: answer.0, type: answer.1, body: answer.2)
                        }
                    }
                    return
                }
                (status, type, body) = (.notFound, "text/plain", Array("not found; try /metrics, /healthz or /readyz\n".utf8))
            default:
                (status, type, body) = (.methodNotAllowed, "text/plain", Array("only GET\n".utf8))
            }
            respond(context: context, version: head.version, status: status, type: type, body: body)
            self.head = nil
        }
    }

    private func respond(context: ChannelHandlerContext, version: HTTPVersion, status: HTTPResponseStatus, type: String, body: [UInt8]) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        let response = HTTPResponseHead(version: version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
