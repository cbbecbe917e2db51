#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOSSL

/// A server's certificate files: what `--tls-cert`, `--tls-key` and
/// `--tls-ca` name.
public struct ServerTLSFiles: Sendable, Equatable {
    /// PEM: the server's certificate first, then any intermediates.
    public var certificateChain: String
    /// PEM: the private key of the first certificate.
    public var privateKey: String
    /// PEM: the CA(s) a client certificate must be signed by. Given, every
    /// client must present one (mutual TLS).
    public var clientCA: String?

    public init(certificateChain: String, privateKey: String, clientCA: String? = nil) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.clientCA = clientCA
    }

    /// A reloadable server context offering `alpn`. Checks the files now
    /// (readable, a certificate in date, a key that matches it) and on every
    /// reload; `now` is injected by tests.
    public func source(alpn: [String], now: @escaping @Sendable () -> time_t = { time(nil) }) throws(TLSSetupError) -> TLSContextSource {
        try TLSContextSource { [self] () throws(TLSSetupError) in try load(alpn: alpn, now: now()) }
    }

    func load(alpn: [String], now: time_t) throws(TLSSetupError) -> TLSContextSource.Loaded {
        let chain = try TLSFileLoader.certificates(certificateChain, what: "certificate")
        try TLSFileLoader.checkValidity(chain[0], file: certificateChain, now: now)
        let key = try TLSFileLoader.privateKey(privateKey)
        var configuration: TLSConfiguration
        if let clientCA {
            let roots = try TLSFileLoader.certificates(clientCA, what: "CA certificate")
            configuration = .makeServerConfigurationWithMTLS(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key), trustRoots: .certificates(roots))
        } else {
            configuration = .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        }
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = alpn
        return .init(context: try TLSFileLoader.context(configuration, certificate: certificateChain, key: privateKey), certificate: chain[0])
    }
}

/// What a client trusts and presents: `--ca`, `--cert`, `--key`.
public struct ClientTLSFiles: Sendable, Equatable {
    /// PEM: the CA(s) a server's certificate must be signed by; nil trusts
    /// the system's store.
    public var trustRoots: String?
    /// PEM: this client's certificate (and intermediates), for servers that
    /// require one; with `privateKey`.
    public var certificateChain: String?
    public var privateKey: String?

    public init(trustRoots: String? = nil, certificateChain: String? = nil, privateKey: String? = nil) {
        self.trustRoots = trustRoots
        self.certificateChain = certificateChain
        self.privateKey = privateKey
    }

    /// A reloadable client context offering `alpn`; the files are checked now.
    public func source(alpn: [String], now: @escaping @Sendable () -> time_t = { time(nil) }) throws(TLSSetupError) -> TLSContextSource {
        guard (certificateChain == nil) == (privateKey == nil) else {
            throw TLSSetupError("a client certificate and its key go together: give both or neither")
        }
        return try TLSContextSource { [self] () throws(TLSSetupError) in try load(alpn: alpn, now: now()) }
    }

    func load(alpn: [String], now: time_t) throws(TLSSetupError) -> TLSContextSource.Loaded {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = alpn
        if let trustRoots {
            configuration.trustRoots = .certificates(try TLSFileLoader.certificates(trustRoots, what: "CA certificate"))
        }
        var leaf: NIOSSLCertificate?
        if let certificateChain, let privateKey {
            let chain = try TLSFileLoader.certificates(certificateChain, what: "certificate")
            try TLSFileLoader.checkValidity(chain[0], file: certificateChain, now: now)
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(try TLSFileLoader.privateKey(privateKey))
            leaf = chain[0]
        }
        let context = try TLSFileLoader.context(configuration, certificate: certificateChain ?? "", key: privateKey ?? "")
        return .init(context: context, certificate: leaf)
    }
}

/// Reads PEM files, each failure said in one line that names the file.
enum TLSFileLoader {
    static func readable(_ path: String) throws(TLSSetupError) {
        guard access(path, R_OK) == 0 else {
            throw TLSSetupError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func certificates(_ path: String, what: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
        try readable(path)
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSSetupError("\(path) holds no PEM \(what)")
        }
        guard !chain.isEmpty else { throw TLSSetupError("\(path) holds no PEM \(what)") }
        return chain
    }

    static func privateKey(_ path: String) throws(TLSSetupError) -> NIOSSLPrivateKey {
        try readable(path)
        do {
            return try NIOSSLPrivateKey(file: path, format: .pem)
        } catch {
            throw TLSSetupError("\(path) holds no readable PEM private key (an encrypted key is not supported)")
        }
    }

    /// A certificate out of its validity period is refused up front:
    /// every peer would refuse it anyway, one connection at a time.
    static func checkValidity(_ certificate: NIOSSLCertificate, file: String, now: time_t) throws(TLSSetupError) {
        if certificate.notValidAfter < now {
            throw TLSSetupError("the certificate in \(file) expired on \(TLSFailure.date(certificate.notValidAfter))")
        }
        if certificate.notValidBefore > now {
            throw TLSSetupError("the certificate in \(file) is not valid until \(TLSFailure.date(certificate.notValidBefore))")
        }
    }

    /// BoringSSL checks that the key belongs to the certificate here.
    static func context(_ configuration: TLSConfiguration, certificate: String, key: String) throws(TLSSetupError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch NIOSSLError.failedToLoadPrivateKey {
            throw TLSSetupError("the private key in \(key) does not match the certificate in \(certificate)")
        } catch {
            throw TLSSetupError("cannot set up TLS with \(certificate) and \(key): \(error)")
        }
    }
}
