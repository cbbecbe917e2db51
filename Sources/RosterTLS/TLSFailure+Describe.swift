#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOSSL

extension TLSFailure {
    /// Which end of the connection reads the message.
    public enum Side: Sendable {
        /// A client connecting to `server` ("host:port").
        case client(server: String, serverName: String?)
        /// A server that accepted a connection from `peer`.
        case server(peer: String)
    }

    /// Turns what BoringSSL and NIOSSL raise into one line that says what
    /// happened and what to change. `peerCertificate` (when the handshake got
    /// that far) tells an expired certificate from one signed by an unknown CA,
    /// which BoringSSL reports alike.
    public static func describe(_ error: any Error, side: Side, peerCertificate: NIOSSLCertificate?,
                                now: time_t = time(nil)) -> TLSFailure {
        if let failure = error as? TLSFailure { return failure }
        let text = "\(error)"
        if text.contains("EOF during handshake") || (error as? NIOSSLError) == .uncleanShutdown {
            switch side {
            case .client(let server, _): return TLSFailure("\(server) closed the connection during the TLS handshake", peerClosed: true)
            case .server(let peer): return TLSFailure("\(peer) closed the connection during the TLS handshake", peerClosed: true)
            }
        }
        switch side {
        case .client(let server, let serverName):
            if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
                let name = serverName ?? String(server.split(separator: ":").dropLast().joined(separator: ":"))
                return TLSFailure("the certificate of \(server) is not valid for the name \(name)"
                    + (peerCertificate.map { " (it was issued to \(subject($0)))" } ?? "")
                    + "; connect by a name it holds, or set the name to check (--server-name)")
            }
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return TLSFailure("the certificate of \(server) was refused: " + certificateProblem(peerCertificate, now: now, trust: "the CA given (--ca) or the system's"))
            }
            if text.contains("CERTIFICATE_REQUIRED") || text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") {
                return TLSFailure("\(server) requires a client certificate (mutual TLS): give one with --cert and --key")
            }
            if let alert = alert(in: text) {
                return TLSFailure("\(server) refused this client's certificate (alert: \(alert)); check --cert and --key against the server's --tls-ca")
            }
            if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST") {
                return TLSFailure("\(server) did not answer in TLS: it serves plaintext; connect without --tls")
            }
            return TLSFailure("TLS with \(server) failed: \(text)")
        case .server(let peer):
            if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
                return TLSFailure("refused a TLS connection from \(peer): it sent no client certificate, and this server requires one (--tls-ca)")
            }
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return TLSFailure("refused a TLS connection from \(peer): its client certificate was refused: "
                    + certificateProblem(peerCertificate, now: now, trust: "the CA in --tls-ca"))
            }
            if let alert = alert(in: text) {
                return TLSFailure("TLS handshake with \(peer) failed: the client refused this server's certificate (alert: \(alert))")
            }
            if text.contains("HTTP_REQUEST") || text.contains("WRONG_VERSION_NUMBER") {
                return TLSFailure("refused a plaintext connection from \(peer): this port requires TLS")
            }
            return TLSFailure("TLS with \(peer) failed: \(text)")
        }
    }

    /// Why a certificate was refused: its dates, or else its issuer.
    private static func certificateProblem(_ certificate: NIOSSLCertificate?, now: time_t, trust: String) -> String {
        guard let certificate else {
            return "it is not signed by a trusted CA (\(trust)), or it is out of date"
        }
        if certificate.notValidAfter < now {
            return "it expired on \(date(certificate.notValidAfter)) (\(subject(certificate)))"
        }
        if certificate.notValidBefore > now {
            return "it is not valid until \(date(certificate.notValidBefore)) (\(subject(certificate)))"
        }
        return "it is not signed by a trusted CA (\(trust)); it was issued to \(subject(certificate))"
    }

    /// The TLS alert a peer sent, in words, from BoringSSL's error text
    /// (`SSLV3_ALERT_CERTIFICATE_EXPIRED`, `TLSV1_ALERT_UNKNOWN_CA`, …).
    private static func alert(in text: String) -> String? {
        for marker in ["TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_"] {
            guard let range = text.range(of: marker) else { continue }
            let name = text[range.upperBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            return name.lowercased().replacingOccurrences(of: "_", with: " ")
        }
        return nil
    }

    /// "CN=…" as NIOSSL prints it, or the serial number.
    public static func subject(_ certificate: NIOSSLCertificate) -> String {
        let text = certificate.description
        if let range = text.range(of: "common_name=") {
            return "CN=" + text[range.upperBound...].prefix { $0 != ";" && $0 != ">" }
        }
        return "serial \(certificate.serialNumber.map { String($0, radix: 16) }.joined())"
    }

    public static func date(_ time: time_t) -> String {
        Date(timeIntervalSince1970: TimeInterval(time)).formatted(.iso8601)
    }
}
