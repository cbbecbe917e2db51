import NIOSSL
import Synchronization

/// A TLS context that can be rebuilt from its files while connections use it.
///
/// Each new connection takes the context current when it opens; a
/// connection keeps the context it opened with for its whole life, so a
/// reload (on SIGHUP) changes what new connections present and trust and
/// drops no connection. A reload that fails leaves the current context in
/// place: a bad certificate is refused, and serving goes on with the last
/// good one.
public final class TLSContextSource: Sendable {
    private let build: @Sendable () throws(TLSSetupError) -> Loaded
    private let current: Mutex<Loaded>

    /// What one build produced: the context, and the leaf certificate it
    /// presents (for logs and tests), if any.
    public struct Loaded: Sendable {
        public var context: NIOSSLContext
        public var certificate: NIOSSLCertificate?
        public init(context: NIOSSLContext, certificate: NIOSSLCertificate?) {
            self.context = context
            self.certificate = certificate
        }
    }

    /// Builds the first context now: bad files fail here, before anything serves.
    public init(build: @escaping @Sendable () throws(TLSSetupError) -> Loaded) throws(TLSSetupError) {
        self.build = build
        self.current = Mutex(try build())
    }

    /// The context for a connection opening now.
    public var context: NIOSSLContext { current.withLock { $0.context } }

    /// The leaf certificate new connections are offered.
    public var certificate: NIOSSLCertificate? { current.withLock { $0.certificate } }

    /// Rebuilds the context from the files; on failure the current one stays.
    public func reload() throws(TLSSetupError) {
        let loaded = try build()
        current.withLock { $0 = loaded }
    }
}
