import Foundation
// What applications call, and only that: the match API (MatchService) and
// the tier's placement (Tier), with their messages. Operators' and
// workers' services (IngestAdmin, TaskQueue, MatchAdmin) are in RosterAPI,
// for tools that import it themselves.
@_exported import enum RosterAPI.MatchService
@_exported import enum RosterAPI.HashType
@_exported import struct RosterAPI.MatchAdvertisersRequest
@_exported import struct RosterAPI.MatchAdvertisersResponse
@_exported import struct RosterAPI.MatchRequest
@_exported import struct RosterAPI.MatchResponse
@_exported import struct RosterAPI.MatchManyRequest
@_exported import struct RosterAPI.MatchManyResponse
@_exported import enum RosterAPI.Tier
@_exported import struct RosterAPI.PlacementRequest
@_exported import struct RosterAPI.PlacementResponse
@_exported import struct RosterAPI.AdvertiserPlacement
@_exported import struct RosterAPI.TierNode
import RosterAPI
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
/// The generated stubs applications call (`MatchService.Client`,
/// `Tier.Client` for placement) are exported too; operators' and workers'
/// services are not (import `RosterAPI` for those).
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

    /// One `MatchMany` call; the answers are in the order of `hashes`,
    /// which must all be of one type, the list's.
    public func areMembers(advertiser: String, hashes: [MemberHash]) async throws -> [Bool] {
        guard let type = hashes.first?.type else { return [] }
        guard hashes.allSatisfy({ $0.type == type }) else { throw RPCError(.invalidArgument, "hashes of one call must be of one type") }
        var packed = Data(capacity: hashes.count * type.byteCount)
        for hash in hashes { packed.append(hash.bytes) }
        let request = MatchManyRequest(advertiserID: advertiser, hashes: packed, hashType: type)
        let response = try await stub.matchMany(request, options: options)
        return (0..<hashes.count).map(response.isMatched)
    }

    /// One hash against many advertisers' lists (one `MatchAdvertisers`
    /// call, at most 10,000 advertisers): each advertiser's answer in the
    /// order asked; nil for one the server serves no list of, or whose list
    /// holds hashes of a type not given. With `otherHash` (the same email's
    /// hash of the other type) each list is asked with its own type.
    public func matchAdvertisers(hash: MemberHash, otherHash: MemberHash? = nil, advertisers: [String]) async throws -> [Bool?] {
        let request = MatchAdvertisersRequest(hash: hash.bytes, advertiserIDs: advertisers, otherHash: otherHash?.bytes ?? Data())
        return try await stub.matchAdvertisers(request, options: options).answers(count: advertisers.count)
    }

    /// Asks about any number of hashes of one type, packed (`packed.count`
    /// a multiple of the type's width): `batch` hashes per `MatchMany` call,
    /// `inFlight` calls at once on the client's connections. Bit i of the
    /// answer is hash i's. All calls ask the same list version only if no
    /// new version goes live meanwhile; `versions` says which ones answered.
    public func membership(advertiser: String, packed: Data, type: HashType = .md5, batch: Int = 10_000,
                           inFlight: Int = 4) async throws -> Membership {
        let (stub, options) = (self.stub, self.options)
        return try await Membership.ask(packed: packed, width: type.byteCount, batch: batch, inFlight: inFlight) { hashes in
            try await stub.matchMany(MatchManyRequest(advertiserID: advertiser, hashes: hashes, hashType: type), options: options)
        }
    }

    public func close() async { await rpc.close() }
}

extension MatchAdvertisersResponse {
    /// Each advertiser's answer in the order asked: nil for one with no list
    /// on the server (version 0) or whose list holds the other hash type.
    public func answers(count: Int) -> [Bool?] {
        (0..<count).map { i in
            let bit = UInt8(1) << UInt8(i & 7)
            guard i < versions.count, versions[i] != 0, (i >> 3) >= wrongType.count || wrongType[i >> 3] & bit == 0 else { return nil }
            return (i >> 3) < matched.count && matched[i >> 3] & bit != 0
        }
    }
}

extension HashType {
    /// The bytes of one hash of this type: 16 (MD5), 32 (SHA-256); 16 when unspecified.
    public var byteCount: Int { self == .sha256 ? 32 : 16 }
}

/// The answers of `MatchClient.membership`: one bit per hash asked, in order.
public struct Membership: Sendable {
    public let count: Int
    /// Bit i (least significant first in each byte) is hash i's answer.
    public private(set) var bits: [UInt8]
    /// The list versions that answered (one, unless a new one went live meanwhile).
    public private(set) var versions: Set<UInt64> = []

    init(count: Int) {
        self.count = count
        self.bits = [UInt8](repeating: 0, count: (count + 7) / 8)
    }

    /// Asks `call` (one `MatchMany`, to a server or a tier) about hashes
    /// packed `width` bytes each (16 for MD5, 32 for SHA-256), `batch` at a
    /// time with `inFlight` calls at once.
    public static func ask(
        packed: Data, width: Int = 16, batch: Int = 10_000, inFlight: Int = 4,
        _ call: @escaping @Sendable (Data) async throws -> MatchManyResponse
    ) async throws -> Membership {
        precondition(width > 0 && packed.count % width == 0, "packed hashes are \(width) bytes each")
        let count = packed.count / width
        // Whole bytes of the answer per call: its bitmap is copied, not re-packed.
        let perCall = max(8, batch - batch % 8)
        var answer = Membership(count: count)
        let calls = (count + perCall - 1) / perCall
        try await withThrowingTaskGroup(of: (Int, MatchManyResponse).self) { group in
            var next = 0
            func submit() {
                let index = next
                next += 1
                let range = (index * perCall)..<min(count, (index + 1) * perCall)
                let slice = packed.subdata(in: (packed.startIndex + range.lowerBound * width)..<(packed.startIndex + range.upperBound * width))
                group.addTask { (index, try await call(slice)) }
            }
            while next < min(calls, max(1, inFlight)) { submit() }
            while let (index, response) = try await group.next() {
                guard response.count == UInt32(min(perCall, count - index * perCall)) else {
                    throw RPCError(.internal, "MatchMany answered \(response.count) hashes of \(min(perCall, count - index * perCall))")
                }
                answer.merge(response, atCall: index, perCall: perCall)
                if next < calls { submit() }
            }
        }
        return answer
    }

    public subscript(index: Int) -> Bool { (bits[index >> 3] >> UInt8(index & 7)) & 1 == 1 }

    /// How many of the hashes are members.
    public var members: Int { bits.reduce(0) { $0 + $1.nonzeroBitCount } }

    mutating func merge(_ response: MatchManyResponse, atCall index: Int, perCall: Int) {
        let first = index * perCall / 8
        let bytes = min((count - index * perCall + 7) / 8, response.matched.count, bits.count - first)
        if bytes > 0 {
            bits.withUnsafeMutableBufferPointer { out in
                response.matched.withUnsafeBytes { (source: UnsafeRawBufferPointer) in
                    for i in 0..<bytes { out[first + i] = source[i] }
                }
            }
        }
        versions.insert(response.version)
    }
}
