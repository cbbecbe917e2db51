import ArgumentParser
import Foundation
import Logging
import RosterAPI
import RosterClient
import RosterTLS
import ServiceLifecycle
import UnixSignals

/// How a server command serves: TLS from PEM files, or plaintext only when
/// asked for by name (docs/PROTOCOL.md, "TLS").
struct TLSServerOptions: ParsableArguments {
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp(
        "PEM certificate chain to serve TLS with (default: $ROSTER_TLS_CERT); reloaded on SIGHUP.",
        valueName: "file"))
    var certificate: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_CERT"]

    @Option(name: .customLong("tls-key"), help: ArgumentHelp(
        "PEM private key of --tls-cert (default: $ROSTER_TLS_KEY); reloaded on SIGHUP.", valueName: "file"))
    var key: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_KEY"]

    @Option(name: .customLong("tls-ca"), help: ArgumentHelp(
        "PEM CA that client certificates must be signed by (default: $ROSTER_TLS_CLIENT_CA): given, every client must present one (mutual TLS).",
        valueName: "file"))
    var clientCA: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_CLIENT_CA"]

    @Flag(help: "Serve without TLS. Required without --tls-cert: plaintext carries tokens and hashes in the clear.")
    var plaintext = false

    /// The files, or nil for plaintext; refuses to guess between them.
    func files(serving what: String) throws -> ServerTLSFiles? {
        switch (certificate, key) {
        case (nil, nil):
            guard clientCA == nil else { throw CLIError("--tls-ca needs --tls-cert and --tls-key: mutual TLS is TLS first") }
            guard plaintext else {
                throw CLIError("the \(what) would serve in plaintext: give --tls-cert and --tls-key, or pass --plaintext to serve without TLS")
            }
            return nil
        case (let certificate?, let key?):
            guard !plaintext else { throw CLIError("--plaintext and --tls-cert contradict each other: give one") }
            return ServerTLSFiles(certificateChain: certificate, privateKey: key, clientCA: clientCA)
        default:
            throw CLIError("--tls-cert and --tls-key go together: give both")
        }
    }
}

/// How a command connects: plaintext unless --tls (or a CA, certificate or
/// server name) is given.
struct TLSClientOptions: ParsableArguments {
    @Flag(help: "Connect over TLS, trusting the system's CAs unless --ca is given (default: on if $ROSTER_TLS is 1 or any TLS file is set).")
    var tls = ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["ROSTER_TLS"]?.lowercased() ?? "")

    @Option(help: ArgumentHelp("PEM CA that servers' certificates must be signed by (default: $ROSTER_TLS_CA); implies --tls.", valueName: "file"))
    var ca: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_CA"]

    @Option(help: ArgumentHelp("PEM client certificate, for servers that require one (default: $ROSTER_TLS_CLIENT_CERT); implies --tls.",
                               valueName: "file"))
    var cert: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_CLIENT_CERT"]

    @Option(help: ArgumentHelp("PEM private key of --cert (default: $ROSTER_TLS_CLIENT_KEY).", valueName: "file"))
    var key: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_CLIENT_KEY"]

    @Option(help: ArgumentHelp(
        "Name the servers' certificates must hold, instead of the host connected to (default: $ROSTER_TLS_SERVER_NAME); implies --tls.",
        valueName: "name"))
    var serverName: String? = ProcessInfo.processInfo.environment["ROSTER_TLS_SERVER_NAME"]

    var isSet: Bool { tls || ca != nil || cert != nil || key != nil || serverName != nil }

    /// The client side of TLS, or nil for plaintext. A server command passes
    /// its own `server` files: its outgoing calls then follow how it serves
    /// (docs/OPERATIONS.md): TLS if it serves TLS, trusting its --tls-ca and
    /// presenting its own certificate when it has one, unless these flags
    /// say otherwise.
    func clientTLS(following server: ServerTLSFiles? = nil) throws -> ClientTLS? {
        var files: ClientTLSFiles
        if isSet {
            files = ClientTLSFiles(trustRoots: ca, certificateChain: cert, privateKey: key)
        } else if let server {
            files = ClientTLSFiles(trustRoots: server.clientCA)
            if server.clientCA != nil {
                files.certificateChain = server.certificateChain
                files.privateKey = server.privateKey
            }
        } else {
            return nil
        }
        do {
            return try ClientTLS(files: files, serverName: serverName)
        } catch {
            throw CLIError("TLS: \(error.message)")
        }
    }
}

extension Optional<ServerTLSFiles> {
    /// How a server serves, for its start-up line.
    var description: String {
        guard let files = self else { return "plaintext" }
        return files.clientCA == nil ? "TLS" : "mutual TLS"
    }
}

extension ServerTLSFiles {
    /// The context for the RPC port and the one for the metrics port
    /// (ALPN differs), each checked now: a bad file stops the start.
    func sources() throws -> (rpc: TLSContextSource, metrics: TLSContextSource) {
        do {
            return (try source(alpn: [WireProtocol.alpn]), try source(alpn: ["http/1.1"]))
        } catch {
            throw CLIError("TLS: \(error.message)")
        }
    }
}

/// Reloads certificates on SIGHUP: new connections get the new ones, open
/// connections keep theirs. A reload that fails is logged in one line and
/// changes nothing.
struct TLSReloader: Service {
    let sources: [TLSContextSource]
    let clients: [ClientTLS]
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            reload()
        }
    }

    func reload() {
        do {
            for source in sources + clients.map(\.source) { try source.reload() }
            let leaf = sources.first?.certificate
            logger.notice("reloaded TLS certificates", metadata: [
                "certificate": "\(leaf.map(TLSFailure.subject) ?? "-")",
                "notValidAfter": "\(leaf.map { TLSFailure.date($0.notValidAfter) } ?? "-")",
            ])
        } catch {
            logger.error("TLS reload failed, still serving the previous certificate: \(error.message)")
        }
    }
}
