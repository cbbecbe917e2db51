import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RosterRPC
import RosterServer
import RosterTLS
@_spi(Testing) import RosterTransport
import Synchronization
import TestServices
import TestSupport
import XCTest

/// TLS between a real server and client on loopback, with certificates made
/// by openssl for the test: what works, and how each way of getting it wrong
/// is refused, in words, on the side a user would look at.
final class TLSTests: XCTestCase {
    nonisolated(unsafe) static var shared: TestCertificates?
    var certificates: TestCertificates!

    override func setUpWithError() throws {
        if Self.shared == nil { Self.shared = try TestCertificates() }
        certificates = Self.shared
    }

    // MARK: Helpers

    func serverFiles(_ name: String = "server", mutual: Bool = false) -> ServerTLSFiles {
        ServerTLSFiles(certificateChain: certificates.certificate(name), privateKey: certificates.key(name),
                       clientCA: mutual ? certificates.certificate("ca") : nil)
    }

    func clientTLS(trust: String = "ca", identity: String? = nil, serverName: String? = nil) throws -> ClientTLS {
        try ClientTLS(files: ClientTLSFiles(trustRoots: certificates.certificate(trust), certificateChain: identity.map(certificates.certificate),
                                            privateKey: identity.map(certificates.key)), serverName: serverName)
    }

    /// A server on an OS-chosen port whose log lines the test can read.
    func start(tls: TLSContextSource?) async throws -> (RPCServer, Int, LogRecorder) {
        let log = LogRecorder()
        let server = try RPCServer(configuration: .init(tls: tls), services: [InlineEchoService()], logger: log.logger)
        try await server.start()
        return (server, server.localAddress!.port!, log)
    }

    func echo(_ client: RPCClient) async throws -> EchoResponse {
        try await InlineEcho.Client(transport: client).echo(EchoRequest(payload: Data("hi".utf8), index: 1), options: CallOptions(timeout: .seconds(5)))
    }

    /// The call fails UNAVAILABLE with a message containing `expected`.
    func assertRefused(_ client: RPCClient, _ expected: String, file: StaticString = #filePath, line: UInt = #line) async {
        let error = await assertStatus(.unavailable, file: file, line: line) { _ = try await self.echo(client) }
        XCTAssertTrue(error?.message.contains(expected) == true, "got: \(error?.message ?? "-")", file: file, line: line)
    }

    func stop(_ server: RPCServer, _ clients: RPCClient...) async {
        for client in clients { await client.close() }
        server.drain()
        await server.waitUntilClosed()
    }

    // MARK: What works

    func testCallOverTLS13() async throws {
        let (server, port, _) = try await start(tls: try serverFiles().source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        let reply = try await echo(client)
        XCTAssertEqual(reply.payload, Data("hi".utf8))
        let channel = try XCTUnwrap(client.openConnections.first)
        let handler = try await channel.pipeline.handler(type: NIOSSLClientHandler.self).get()
        let version = try await channel.eventLoop.submit { handler.tlsVersion }.get()
        XCTAssertEqual(version, TLSVersion.tlsv13)
        // By name too: the certificate holds DNS:localhost.
        let byName = RPCClient(host: "localhost", port: port, configuration: .init(tls: try clientTLS()))
        _ = try await echo(byName)
        await stop(server, client, byName)
    }

    func testMutualTLSCallWithAClientCertificate() async throws {
        let (server, port, log) = try await start(tls: try serverFiles(mutual: true).source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS(identity: "client")))
        _ = try await echo(client)
        XCTAssertEqual(log.lines(atLeast: .warning), [])
        await stop(server, client)
    }

    // MARK: Refusals, client side

    func testAServerCertificateFromAnotherCAIsRefused() async throws {
        let (server, port, log) = try await start(tls: try serverFiles().source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS(trust: "other-ca")))
        await assertRefused(client, "the certificate of 127.0.0.1:\(port) was refused: it is not signed by a trusted CA")
        try await eventually { log.contains("the client refused this server's certificate (alert: unknown ca)") }
        await stop(server, client)
    }

    func testACertificateForAnotherHostIsRefused() async throws {
        let (server, port, _) = try await start(tls: try serverFiles("wrong-host").source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        await assertRefused(client, "the certificate of 127.0.0.1:\(port) is not valid for the name 127.0.0.1 (it was issued to CN=wrong.example)")
        // The name it holds, given as the name to check, is accepted.
        let named = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS(serverName: "wrong.example")))
        _ = try await echo(named)
        await stop(server, client, named)
    }

    func testAnExpiredServerCertificateIsRefusedByTheClient() async throws {
        // The server is told it is 1 Jan 2020, so that it serves the certificate at all.
        let then = time_t(1_577_880_000)
        let (server, port, _) = try await start(tls: try serverFiles("expired").source(alpn: [WireProtocol.alpn], now: { then }))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        await assertRefused(client, "the certificate of 127.0.0.1:\(port) was refused: it expired on 2020-01-02T00:00:00Z")
        await stop(server, client)
    }

    func testTLSAgainstAPlaintextServer() async throws {
        let (server, port, log) = try await start(tls: nil)
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        await assertRefused(client, "127.0.0.1:\(port) answered in plaintext, not TLS")
        try await eventually { log.contains("a TLS handshake arrived on a plaintext port") }
        await stop(server, client)
    }

    // MARK: Refusals, server side

    func testPlaintextAgainstATLSServer() async throws {
        let (server, port, log) = try await start(tls: try serverFiles().source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port)
        await assertRefused(client, "this server requires TLS")
        try await eventually { log.contains("refused a plaintext connection: this server requires TLS") }
        await stop(server, client)
    }

    func testAClientWithoutACertificateIsRefusedWhenOneIsRequired() async throws {
        let (server, port, log) = try await start(tls: try serverFiles(mutual: true).source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        await assertRefused(client, "127.0.0.1:\(port) requires a client certificate (mutual TLS)")
        try await eventually { log.contains("it sent no client certificate, and this server requires one") }
        // The refusal fails the connect, so the next call waits out a backoff instead of handshaking again at once.
        await assertRefused(client, "requires a client certificate (mutual TLS): give one with --cert and --key; retrying in")
        await stop(server, client)
    }

    func testAClientCertificateFromAnotherCAIsRefused() async throws {
        let (server, port, log) = try await start(tls: try serverFiles(mutual: true).source(alpn: [WireProtocol.alpn]))
        let client = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS(identity: "other-client")))
        await assertRefused(client, "refused this client's certificate")
        try await eventually { log.contains("its client certificate was refused: it is not signed by a trusted CA (the CA in --tls-ca); it was issued to CN=stranger") }
        await stop(server, client)
    }

    func testAConnectionClosedBeforeAnyHandshakeIsNotAWarning() async throws {
        // What a TCP health check or a port scan does: connect, close.
        let (server, port, log) = try await start(tls: try serverFiles().source(alpn: [WireProtocol.alpn]))
        let probe = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        try await probe.writeAndFlush(probe.allocator.buffer(bytes: [0x16, 0x03, 0x01])).get()
        try await probe.close()
        try await eventually { log.contains("closed the connection during the TLS handshake") }
        XCTAssertEqual(log.lines(atLeast: .notice), [])
        await stop(server)
    }

    // MARK: Files

    func testBadFilesAreRefusedInOneLine() throws {
        func message(_ files: ServerTLSFiles) -> String {
            do {
                _ = try files.source(alpn: [WireProtocol.alpn])
                return "accepted"
            } catch {
                return error.message
            }
        }
        XCTAssertEqual(message(serverFiles("expired")), "the certificate in \(certificates.certificate("expired")) expired on 2020-01-02T00:00:00Z")
        XCTAssertEqual(message(ServerTLSFiles(certificateChain: certificates.certificate("server"), privateKey: certificates.key("client"))),
                       "the private key in \(certificates.key("client")) does not match the certificate in \(certificates.certificate("server"))")
        XCTAssertEqual(message(ServerTLSFiles(certificateChain: "/nonexistent.pem", privateKey: certificates.key("server"))),
                       "cannot read /nonexistent.pem: No such file or directory")
        XCTAssertEqual(message(ServerTLSFiles(certificateChain: certificates.key("server"), privateKey: certificates.key("server"))),
                       "\(certificates.key("server")) holds no PEM certificate")
        XCTAssertEqual(message(ServerTLSFiles(certificateChain: certificates.certificate("server"), privateKey: certificates.certificate("server"))),
                       "\(certificates.certificate("server")) holds no readable PEM private key (an encrypted key is not supported)")
        XCTAssertEqual(message(serverFiles()), "accepted")
    }

    // MARK: Reload

    func testReloadServesTheNewCertificateToNewConnectionsAndKeepsOldOnes() async throws {
        // The server's files live in a folder of their own, replaced in place.
        let folder = certificates.folder.appendingPathComponent("reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let (pem, key) = (folder.appendingPathComponent("live.pem").path, folder.appendingPathComponent("live.key").path)
        try FileManager.default.copyItem(atPath: certificates.certificate("server"), toPath: pem)
        try FileManager.default.copyItem(atPath: certificates.key("server"), toPath: key)
        let source = try ServerTLSFiles(certificateChain: pem, privateKey: key).source(alpn: [WireProtocol.alpn])
        let (server, port, _) = try await start(tls: source)

        let old = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        _ = try await echo(old)
        let oldChannel = try XCTUnwrap(old.openConnections.first)
        let before = try await peerSubject(oldChannel)
        XCTAssertEqual(before, "CN=localhost")

        for (from, to) in [(certificates.certificate("server-2"), pem), (certificates.key("server-2"), key)] {
            try FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        try source.reload()

        let new = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        _ = try await echo(new)
        let renewed = try await peerSubject(try XCTUnwrap(new.openConnections.first))
        XCTAssertEqual(renewed, "CN=localhost (renewed)")
        // The connection opened before the reload is the same one, and still answers.
        _ = try await echo(old)
        XCTAssertTrue(old.openConnections.first === oldChannel)

        // A reload that fails keeps the last good certificate.
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: pem))
        XCTAssertThrowsError(try source.reload()) { XCTAssertEqual(($0 as? TLSSetupError)?.message, "\(pem) holds no PEM certificate") }
        let third = RPCClient(host: "127.0.0.1", port: port, configuration: .init(tls: try clientTLS()))
        _ = try await echo(third)
        let kept = try await peerSubject(try XCTUnwrap(third.openConnections.first))
        XCTAssertEqual(kept, "CN=localhost (renewed)")
        await stop(server, old, new, third)
    }

    func peerSubject(_ channel: any Channel) async throws -> String? {
        let handler = try await channel.pipeline.handler(type: NIOSSLClientHandler.self).get()
        return try await channel.eventLoop.submit { handler.peerCertificate.map(TLSFailure.subject) }.get()
    }
}

/// Keeps what a logger was told, for tests that read a server's log.
final class LogRecorder: Sendable {
    private let entries = Mutex<[(Logger.Level, String)]>([])

    var logger: Logger {
        Logger(label: "test") { _ in Handler(recorder: self) }
    }

    func lines(atLeast level: Logger.Level) -> [String] {
        entries.withLock { $0.filter { $0.0 >= level }.map(\.1) }
    }

    func contains(_ text: String) -> Bool {
        entries.withLock { $0.contains { $0.1.contains(text) } }
    }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            let extra = (metadata ?? [:]).merging(self.metadata) { a, _ in a }.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
            recorder.entries.withLock { $0.append((level, "\(message) \(extra)")) }
        }
    }
}

/// Polls `condition` (a server logs after the client has its answer).
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { return XCTFail("condition not met within \(timeout)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}
