import Foundation
@_exported import RosterAPI
@_exported import RosterRPC
@_exported import RosterTLS
@_exported import RosterTransport

/// A client for the match server: membership questions with the caller's
/// token attached, over one `RPCClient` (pooled connections, reconnects).
///
/// ```swift
/// let roster = MatchClient(host: "127.0.0.1", port: 7401, token: "s3cret")
/// let member = try await roster.isMember(advertiser: "acme", hash: MemberHash(email: "Ann@Example.com"))
/// let many = try await roster.areMembers(advertiser: "acme", hashes: hashes) // one MatchMany call
///
/// // Over TLS, trusting a private CA and presenting a client certificate:
/// let tls = try ClientTLS(files: ClientTLSFiles(trustRoots: "ca.pem", certificateChain: "me.pem", privateKey: "me.key"))
/// let secure = MatchClient(host: "match.internal", port: 7401, token: "s3cret", tls: tls)
/// ```
///
/// The generated stubs (`MatchService.Client`, `Coordinator.Client`, ...) are
/// exported too, for everything else.
public struct MatchClient: Sendable {
    public let rpc: RPCClient
    public let token: String?
    public var timeout: Duration?

    /// `tls`: nil speaks plaintext.
    public init(host: String, port: Int, token: String? = nil, connections: Int = 1, timeout: Duration? = .seconds(5), tls: ClientTLS? = nil) {
        self.rpc = RPCClient(host: host, port: port, configuration: .init(connections: connections, tls: tls))
        self.token = token
        self.timeout = timeout
    }

    public var options: CallOptions {
        CallOptions(timeout: timeout).bearer(token)
    }

    public var stub: MatchService.Client<RPCClient> { MatchService.Client(transport: rpc) }

    public func isMember(advertiser: String, hash: MemberHash) async throws -> Bool {
        try await stub.match(MatchRequest(advertiserID: advertiser, hash: hash.bytes), options: options).matched
    }

    /// One `MatchMany` call; the answers are in the order of `hashes`.
    public func areMembers(advertiser: String, hashes: [MemberHash]) async throws -> [Bool] {
        var packed = Data(capacity: hashes.count * 16)
        for hash in hashes { packed.append(hash.bytes) }
        let response = try await stub.matchMany(MatchManyRequest(advertiserID: advertiser, hashes: packed), options: options)
        return (0..<hashes.count).map(response.isMatched)
    }

    public func close() async { await rpc.close() }
}
