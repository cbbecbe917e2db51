import NIOCore
import NIOSSL
import RosterTLS

/// How an `RPCClient` speaks TLS: what it trusts and presents (a context
/// source, reloadable), and the name the server's certificate must hold.
public struct ClientTLS: Sendable {
    public var source: TLSContextSource
    /// The name checked against the server's certificate, and sent as SNI,
    /// instead of the host connected to. An IP address host with no
    /// override is checked against the certificate's IP addresses.
    public var serverName: String?

    public init(source: TLSContextSource, serverName: String? = nil) {
        self.source = source
        self.serverName = serverName
    }

    /// Loads `files` now (an unreadable or expired file fails here) for
    /// connections negotiating `WireProtocol.alpn`.
    public init(files: ClientTLSFiles = .init(), serverName: String? = nil) throws(TLSSetupError) {
        self.init(source: try files.source(alpn: [WireProtocol.alpn]), serverName: serverName)
    }

    /// The name the handshake checks for a connection to `host`: the
    /// override, or the host itself unless it is an IP address (SNI carries
    /// names only; NIOSSL then checks the address against the certificate).
    func hostname(for host: String) -> String? {
        if let serverName { return serverName }
        let isIPv4 = host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
        return isIPv4 || host.contains(":") ? nil : host
    }

    /// Puts TLS in front of a connection to `host:port` being set up: the
    /// check that the server answers in TLS at all, the TLS handler, and the
    /// observer that says a failure in words. The protocol's handlers go after.
    public func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, host: String, port: Int) throws {
        let (server, name) = ("\(host):\(port)", hostname(for: host))
        try pipeline.addHandler(TLSPlaintextPeerDetector(server: server))
        try pipeline.addHandler(NIOSSLClientHandler(context: source.context, serverHostname: name))
        try pipeline.addHandler(TLSHandshakeObserver(side: .client(server: server, serverName: name)))
    }
}
