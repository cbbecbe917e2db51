import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP proxy on loopback between Roster and the S3 test server that
/// misbehaves on purpose, request by request: an error status (503 SlowDown,
/// 500), a connection dropped before any answer, a body cut off midway, a
/// body sent slowly. Requests are forwarded unchanged (the Host header
/// included, so SigV4 signatures still hold).
public final class FaultProxy: @unchecked Sendable {
    public enum Fault: Sendable, Equatable {
        case none
        case status(Int, code: String)
        /// Closed after the request arrived, before any answer.
        case drop
        /// The answer's head and half its body, then closed.
        case cutBody
        /// The body in 4 KiB pieces, 2 ms apart.
        case slowBody

        public static let slowDown = Fault.status(503, code: "SlowDown")
        public static let internalError = Fault.status(500, code: "InternalError")
    }

    public let port: Int
    private let channel: Channel
    private let client: HTTPClient
    private let state: NIOLockedValueBox<(count: Int, faults: [Fault])>

    /// `plan` decides each request's fault from its number (0, 1, …), method and URI.
    public init(upstream: String, plan: @escaping @Sendable (Int, HTTPMethod, String) -> Fault) throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: .init(redirectConfiguration: .disallow, decompression: .disabled))
        let state = NIOLockedValueBox((count: 0, faults: [Fault]()))
        let upstreamBase = upstream.hasSuffix("/") ? String(upstream.dropLast()) : upstream
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(client: client, upstream: upstreamBase) { method, uri in
                        let fault = state.withLockedValue { state -> Fault in
                            let fault = plan(state.count, method, uri)
                            state.count += 1
                            state.faults.append(fault)
                            return fault
                        }
                        return fault
                    })
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = channel.localAddress!.port!
        self.client = client
        self.state = state
    }

    public var endpoint: String { "http://127.0.0.1:\(port)" }
    /// The faults injected so far, in request order.
    public var injected: [Fault] { state.withLockedValue { $0.faults } }

    public func shutdown() async throws {
        try await channel.close()
        try await client.shutdown()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let client: HTTPClient
        let upstream: String
        let decide: @Sendable (HTTPMethod, String) -> Fault
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(client: HTTPClient, upstream: String, decide: @escaping @Sendable (HTTPMethod, String) -> Fault) {
            self.client = client
            self.upstream = upstream
            self.decide = decide
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                handle(head, body: body, channel: context.channel)
            }
        }

        private func handle(_ head: HTTPRequestHead, body: ByteBuffer, channel: Channel) {
            let fault = decide(head.method, head.uri)
            switch fault {
            case .drop:
                channel.close(promise: nil)
                return
            case .status(let status, let code):
                let xml = ByteBuffer(string: "<?xml version=\"1.0\"?><Error><Code>\(code)</Code><Message>injected by the test proxy</Message></Error>")
                Self.respond(channel, status: HTTPResponseStatus(statusCode: status),
                             headers: [("content-type", "application/xml")], body: xml, fault: .none)
                return
            default:
                break
            }
            var request = HTTPClientRequest(url: upstream + head.uri)
            request.method = head.method
            for (name, value) in head.headers where name.lowercased() != "content-length" { request.headers.add(name: name, value: value) }
            if body.readableBytes > 0 || head.method == .PUT || head.method == .POST {
                request.body = .bytes(body)
            }
            let client = client
            Task {
                do {
                    let response = try await client.execute(request, timeout: .seconds(60))
                    let answer = try await response.body.collect(upTo: 256 << 20)
                    let headers = response.headers.filter { !["content-length", "transfer-encoding", "connection"].contains($0.name.lowercased()) }
                        .map { ($0.name, $0.value) }
                    Self.respond(channel, status: response.status, headers: headers, body: answer,
                                 fault: head.method == .HEAD ? .none : fault, noBody: head.method == .HEAD,
                                 length: head.method == .HEAD ? response.headers.first(name: "content-length") : nil)
                } catch {
                    channel.close(promise: nil)
                }
            }
        }

        private static func respond(_ channel: Channel, status: HTTPResponseStatus, headers: [(String, String)], body: ByteBuffer,
                                    fault: Fault, noBody: Bool = false, length: String? = nil) {
            channel.eventLoop.execute {
                var fields = HTTPHeaders(headers)
                fields.add(name: "content-length", value: length ?? String(body.readableBytes))
                channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: fields)), promise: nil)
                if noBody {
                    channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
                    return
                }
                switch fault {
                case .cutBody:
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(body.getSlice(at: body.readerIndex, length: body.readableBytes / 2)!)))
                        .whenComplete { _ in channel.close(promise: nil) }
                case .slowBody:
                    var rest = body
                    func next() {
                        guard rest.readableBytes > 0 else {
                            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
                            return
                        }
                        let piece = rest.readSlice(length: min(4096, rest.readableBytes))!
                        channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(piece)), promise: nil)
                        channel.eventLoop.scheduleTask(in: .milliseconds(2)) { next() }
                    }
                    next()
                default:
                    channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil)
                    channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
                }
            }
        }
    }
}
