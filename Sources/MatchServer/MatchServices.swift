import Foundation
import Logging
import RosterAPI
import RosterRPC
import SegmentStore

/// Who may call what: match calls need a client (or admin) token, admin
/// calls an admin token, both sent as `authorization: Bearer <token>`.
public struct AccessPolicy: Sendable {
    public var clientTokens: Set<String>
    public var adminTokens: Set<String>
    /// Local development only: every call is allowed.
    public var disabled: Bool

    public init(clientTokens: Set<String> = [], adminTokens: Set<String> = [], disabled: Bool = false) {
        self.clientTokens = clientTokens
        self.adminTokens = adminTokens
        self.disabled = disabled
    }

    public static let open = AccessPolicy(disabled: true)

    /// Tokens from `ROSTER_CLIENT_TOKENS` and `ROSTER_ADMIN_TOKENS` (comma-separated).
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> AccessPolicy {
        func tokens(_ name: String) -> Set<String> {
            Set((environment[name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        return AccessPolicy(clientTokens: tokens("ROSTER_CLIENT_TOKENS"), adminTokens: tokens("ROSTER_ADMIN_TOKENS"))
    }

    /// Says loudly that tokens are off: fine on a laptop, never in production.
    public func warnIfDisabled(_ logger: Logger) {
        if disabled { logger.warning("token checks are OFF: any client may query and publish (local development only)") }
    }

    private var roles: [String: Set<String>] { ["client": clientTokens, "admin": adminTokens] }

    /// The check on match calls: a client or an admin token.
    public var clientChecks: [any RPCInterceptor] {
        disabled ? [] : [RoleCheck(tokens: roles, otherwise: ["client", "admin"])]
    }

    /// The check on admin calls: an admin token; a client token is refused
    /// as not permitted (naming the token it needs) rather than unknown.
    public var adminChecks: [any RPCInterceptor] {
        disabled ? [] : [RoleCheck(tokens: roles, otherwise: ["admin"])]
    }
}

/// `MatchService`: answered inline on the event loop, straight from the
/// memory-mapped segments.
public struct MatchHandler: MatchService.InlineHandler {
    public let catalog: MatchCatalog
    public let access: AccessPolicy
    /// The most hashes one MatchMany may carry.
    public let maxBatch: Int
    /// The most advertisers one MatchAdvertisers may ask about.
    public let maxAdvertisers: Int

    public init(catalog: MatchCatalog, access: AccessPolicy, maxBatch: Int = 100_000, maxAdvertisers: Int = 10_000,
                logger: Logger = Logger(label: "roster.match")) {
        self.catalog = catalog
        self.access = access
        self.maxBatch = maxBatch
        self.maxAdvertisers = maxAdvertisers
        access.warnIfDisabled(logger)
    }

    public var interceptors: [any RPCInterceptor] { access.clientChecks }

    func list(_ advertiser: String) throws(RPCError) -> ListVersion {
        guard let list = catalog.current(advertiser) else {
            if let damage = catalog.damage(advertiser) {
                throw RPCError(.unavailable, "advertiser '\(advertiser)': list version \(damage.version) was found damaged and is being rebuilt")
            }
            throw RPCError(.notFound, "advertiser '\(advertiser)' has no published list")
        }
        return list
    }

    public func match(_ request: MatchRequest, context: RPCContext) throws -> MatchResponse {
        guard HashKind(byteCount: request.hash.count) != nil else { throw Self.badWidth(request.hash.count) }
        let list = try list(request.advertiserID)
        try Self.check(width: request.hash.count, of: list)
        let key = request.hash.withUnsafeBytes { Key16($0.baseAddress!) }
        return MatchResponse(matched: list.contains(key), version: list.version)
    }

    public func matchMany(_ request: MatchManyRequest, context: RPCContext) throws -> MatchManyResponse {
        let (list, width, count) = try matchManyTarget(advertiser: request.advertiserID, bytes: request.hashes.count, hashType: request.hashType)
        var bitmap = Data(count: (count + 7) / 8)
        request.hashes.withUnsafeBytes { hashes in
            bitmap.withUnsafeMutableBytes { out in
                guard count > 0 else { return }
                Self.lookUp(hashes.baseAddress!, width: width, count: count, in: list, into: out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        let matched = bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
        return MatchManyResponse(matched: bitmap, count: UInt32(count), matchedCount: UInt32(matched), version: list.version)
    }

    /// Every check of `MatchMany` before the lookup: the list to answer
    /// from, the width of a hash, and how many hashes `bytes` bytes hold.
    func matchManyTarget(advertiser: String, bytes: Int, hashType: HashType) throws(RPCError) -> (list: ListVersion, width: Int, count: Int) {
        let sent: HashKind?
        switch hashType {
        case .unspecified: sent = nil
        case let type: guard let kind = HashKind(wireValue: type.rawValue) else {
            throw RPCError(.invalidArgument, "unknown hash type \(type.rawValue)")
        }
        sent = kind
        }
        let list = try list(advertiser)
        let kind = list.hashKind
        if let sent, sent != kind {
            throw RPCError(.invalidArgument, "advertiser '\(list.advertiserID)' holds \(kind) hashes (\(kind.byteCount) bytes each), not \(sent)")
        }
        let width = kind.byteCount
        guard bytes % width == 0 else {
            throw RPCError(.invalidArgument, "advertiser '\(list.advertiserID)' holds \(kind) hashes: \(width) bytes each; hash \(bytes / width) has only \(bytes % width) bytes")
        }
        let count = bytes / width
        guard count <= maxBatch else {
            throw RPCError(.invalidArgument, "batch of \(count) hashes exceeds the limit of \(maxBatch)")
        }
        return (list, width, count)
    }

    /// Sets bit i of `bitmap` (zeroed, `(count + 7) / 8` bytes) for each of
    /// the `count` hashes of `width` bytes at `hashes` in `list`.
    static func lookUp(_ hashes: UnsafeRawPointer, width: Int, count: Int, in list: ListVersion, into bitmap: UnsafeMutablePointer<UInt8>) {
        guard width != 16 else { return list.lookup(hashes, count: count, into: bitmap) }
        // A key is a hash's first 16 bytes (`HashKind`): packed first.
        let keys = UnsafeMutableRawPointer.allocate(byteCount: count * 16, alignment: 16)
        defer { keys.deallocate() }
        for i in 0..<count { (keys + i * 16).copyMemory(from: hashes + i * width, byteCount: 16) }
        list.lookup(keys, count: count, into: bitmap)
    }

    public func matchAdvertisers(_ request: MatchAdvertisersRequest, context: RPCContext) throws -> MatchAdvertisersResponse {
        guard let kind = HashKind(byteCount: request.hash.count) else { throw Self.badWidth(request.hash.count) }
        var keys: [Key16?] = Array(repeating: nil, count: HashKind.allCases.count)
        keys[Int(kind.rawValue)] = request.hash.withUnsafeBytes { Key16($0.baseAddress!) }
        if !request.otherHash.isEmpty {
            guard let other = HashKind(byteCount: request.otherHash.count), other != kind else {
                throw RPCError(.invalidArgument, "other_hash must be the same email's hash of the other type than hash's \(kind) (\(request.hash.count) bytes), got \(request.otherHash.count) bytes")
            }
            keys[Int(other.rawValue)] = request.otherHash.withUnsafeBytes { Key16($0.baseAddress!) }
        }
        let count = request.advertiserIDs.count
        guard count <= maxAdvertisers else {
            throw RPCError(.invalidArgument, "\(count) advertisers in one call exceed the limit of \(maxAdvertisers)")
        }
        var matched = [UInt8](repeating: 0, count: (count + 7) / 8)
        var wrongType: [UInt8] = []
        var versions = [UInt64](repeating: 0, count: count)
        var unknown: UInt32 = 0, wrongTypes: UInt32 = 0
        let lists = catalog.current(request.advertiserIDs)
        for (i, list) in lists.enumerated() {
            guard let list else {
                unknown += 1
                continue
            }
            versions[i] = list.version
            if keys[Int(list.hashKind.rawValue)] == nil {
                if wrongType.isEmpty { wrongType = [UInt8](repeating: 0, count: (count + 7) / 8) }
                wrongType[i >> 3] |= UInt8(1) << UInt8(i & 7)
                wrongTypes += 1
            }
        }
        Self.lookUp(keys, in: lists, into: &matched)
        return MatchAdvertisersResponse(matched: Data(matched), versions: versions, unknownCount: unknown,
                                        wrongType: Data(wrongType), wrongTypeCount: wrongTypes)
    }

    /// Sets bit i of `matched` when list i (of the type's key in `keys`)
    /// holds its key (`lookUp(_:into:_:)`).
    static func lookUp(_ keys: [Key16?], in lists: [ListVersion?], into matched: inout [UInt8]) {
        matched.withUnsafeMutableBufferPointer { matched in
            lookUp(lists.count, into: matched.baseAddress!) { i in
                guard let list = lists[i], let key = keys[Int(list.hashKind.rawValue)] else { return nil }
                return (list, key)
            }
        }
    }

    /// Sets bit i of `matched` (zeroed, `(count + 7) / 8` bytes) when the
    /// list of `pair(i)` holds its key; a nil pair is skipped. Each pair is
    /// a lookup in a different segment, so each is a cache miss or two:
    /// they are taken 16 at a time in three passes (prefetch every index
    /// entry; read the bounds and prefetch every key's line; search), so
    /// that a chunk's misses are in flight together rather than one after
    /// another (measured with `match-bench advertisers`: 51 µs of server
    /// CPU per call of 200 advertisers one after another, 37 in chunks).
    @inline(__always)
    static func lookUp(_ count: Int, into matched: UnsafeMutablePointer<UInt8>, _ pair: (Int) -> (ListVersion, Key16)?) {
        let chunk = 16
        withUnsafeTemporaryAllocation(of: Segment.Probe?.self, capacity: chunk) { probes in
            var start = 0
            while start < count {
                let end = min(count, start + chunk)
                for i in start..<end {
                    guard let (list, key) = pair(i) else { continue }
                    list.segment(for: key)?.prefetchEntry(key)
                }
                for i in start..<end {
                    probes[i - start] = nil
                    guard let (list, key) = pair(i), let segment = list.segment(for: key) else { continue }
                    probes[i - start] = segment.probe(key)
                }
                for i in start..<end {
                    guard let (list, key) = pair(i) else { continue }
                    let found: Bool
                    if let probe = probes[i - start], let segment = list.segment(for: key) {
                        found = segment.finish(key, probe)
                    } else {
                        // No one segment: none may hold it, or they overlap.
                        found = !list.mayHoldInOne && list.contains(key)
                    }
                    if found { matched[i >> 3] |= UInt8(1) << UInt8(i & 7) }
                }
                start = end
            }
        }
    }

    /// A hash of no type's width.
    static func badWidth(_ count: Int) -> RPCError {
        RPCError(.invalidArgument, "hash must be 16 bytes (an MD5) or 32 (a SHA-256), got \(count)")
    }

    /// INVALID_ARGUMENT, naming the list's type, unless a hash of `width`
    /// bytes is of the type `list` holds.
    @inline(__always)
    static func check(width: Int, of list: ListVersion) throws(RPCError) {
        guard width != list.hashKind.byteCount else { return }
        let sent = HashKind(byteCount: width).map { $0 == .md5 ? " (an MD5)" : " (a \($0))" } ?? ""
        throw RPCError(.invalidArgument, "advertiser '\(list.advertiserID)' holds \(list.hashKind) hashes: \(list.hashKind.byteCount) bytes, got \(width)\(sent)")
    }
}

/// `MatchAdmin`: publish and unpublish. Async, because opening a segment
/// reads it whole to verify its checksums.
public struct AdminHandler: MatchAdmin.Handler {
    public let catalog: MatchCatalog
    public let access: AccessPolicy
    /// Where segments come from when they are not in the catalog's folder
    /// already (an object store): fetched before a version is opened, and
    /// their local copies dropped once it is retired. Nil: the catalog's
    /// folder is the store.
    public let store: (any SegmentStorage)?

    public init(catalog: MatchCatalog, access: AccessPolicy, store: (any SegmentStorage)? = nil) {
        self.catalog = catalog
        self.access = access
        self.store = store
    }

    public var interceptors: [any RPCInterceptor] { access.adminChecks }

    public func publish(_ request: PublishRequest, context: RPCContext) async throws -> PublishResponse {
        let result = try await publish([request])[0]
        guard result.code == 0 else { throw RPCError(RPCStatusCode(rawValue: UInt8(result.code)) ?? .unknown, result.message) }
        return PublishResponse(previousVersion: result.previousVersion)
    }

    public func publishMany(_ request: PublishManyRequest, context: RPCContext) async throws -> PublishManyResponse {
        guard request.publications.count <= 1_000 else {
            throw RPCError(.invalidArgument, "\(request.publications.count) publications in one call; at most 1,000")
        }
        return PublishManyResponse(results: try await publish(request.publications))
    }

    /// Fetches what the store must supply, publishes, and drops the local
    /// copies of the versions this retired (and of those it refused).
    private func publish(_ requests: [PublishRequest]) async throws(RPCError) -> [PublishResult] {
        guard let store else { return try Self.publish(requests, in: catalog) }
        var unfetched: [Int: PublishResult] = [:]
        for (index, request) in requests.enumerated() where catalog.current(request.advertiserID)?.version != request.version || request.compacted {
            do {
                for segment in request.segments { _ = try await store.localFile(segment.path) }
            } catch {
                var result = PublishResult()
                result.code = UInt32(RPCStatusCode.unavailable.rawValue)
                result.message = "cannot fetch version \(request.version) of \(request.advertiserID) from the segment store: \(error)"
                unfetched[index] = result
            }
        }
        let before = requests.map { catalog.current($0.advertiserID) }
        let attempted = requests.indices.filter { unfetched[$0] == nil }
        let published = try Self.publish(attempted.map { requests[$0] }, in: catalog)
        var results = requests.indices.map { unfetched[$0] ?? PublishResult() }
        for (index, result) in zip(attempted, published) {
            results[index] = result
            let request = requests[index]
            // A version made by deltas shares its base's files with the
            // version it replaces (or, refused, with the one serving): those stay.
            let current = catalog.current(request.advertiserID)
            if result.code == 0, let old = before[index], let current, old !== current, current.version == request.version {
                for file in old.files where !current.files.contains(file) { await store.discardLocal(file) }
            } else if result.code != 0, current?.version != request.version {
                for segment in request.segments {
                    let file = catalog.root.appendingPathComponent(segment.path).path
                    if current?.files.contains(file) != true { await store.discardLocal(file) }
                }
            }
        }
        return results
    }

    /// Checks, publishes and answers each request as Publish would.
    private static func publish(_ requests: [PublishRequest], in catalog: MatchCatalog) throws(RPCError) -> [PublishResult] {
        for request in requests {
            guard !request.advertiserID.isEmpty else { throw RPCError(.invalidArgument, "advertiser_id is empty") }
            guard request.version > 0 else { throw RPCError(.invalidArgument, "version must be at least 1 (\(request.advertiserID))") }
        }
        let outcomes = catalog.publish(requests.map {
            MatchCatalog.Publication(advertiser: $0.advertiserID, version: $0.version, segments: $0.segments.map { ref in
                SegmentLocation(path: ref.path, slice: ref.length == 0 ? nil
                    : SegmentLocation.Slice(offset: Int(clamping: ref.offset), length: Int(clamping: ref.length)))
            }, rollback: $0.rollback, compacted: $0.compacted)
        })
        return zip(requests, outcomes).map { request, outcome in
            var result = PublishResult()
            switch outcome {
            case .success(.published(let previous)): result.previousVersion = previous
            case .success(.alreadyLive): result.previousVersion = request.version
            case .failure(let error):
                let status: RPCError
                switch error {
                case .staleVersion(let requested, let live):
                    status = RPCError(.failedPrecondition, "version \(requested) is not newer than the live version \(live)")
                    result.stale = true
                case .badSegment(let segmentError) where segmentError.isResourceLimit:
                    // Nothing wrong with the version: the server is at a limit. The coordinator retries.
                    status = RPCError(.resourceExhausted, "cannot open \(segmentError) (a limit of this server: memory maps, open files or memory); try again later")
                case .badSegment(let segmentError):
                    let still = catalog.current(request.advertiserID).map { "version \($0.version) keeps serving" } ?? "no version is served for it"
                    status = RPCError(.failedPrecondition, "refused: \(segmentError); \(still)")
                case .mismatch(let message):
                    status = RPCError(.invalidArgument, message)
                case .manifest(let message):
                    status = RPCError(.internal, "cannot record the new version: \(message)")
                case .atMapBudget(let message):
                    status = RPCError(.resourceExhausted, "\(message); try again once versions are retired, or raise the budget")
                }
                result.code = UInt32(status.code.rawValue)
                result.message = status.message
            }
            return result
        }
    }

    public func listServed(_ request: ListServedRequest, context: RPCContext) async throws -> ListServedResponse {
        var response = ListServedResponse()
        let limit = request.limit == 0 ? 5_000 : Int(min(request.limit, 5_000))
        let all = catalog.served()
        let after = request.afterAdvertiserID
        let start = after.isEmpty ? 0 : (all.firstIndex { $0.advertiser > after } ?? all.count)
        let page = all[start..<min(all.count, start + limit)]
        if start + limit < all.count, let last = page.last { response.nextAfterAdvertiserID = last.advertiser }
        response.lists = page.map { entry in
            var list = ServedList()
            list.advertiserID = entry.advertiser
            list.version = entry.version
            list.damagedVersion = entry.damage?.version ?? 0
            list.damage = entry.damage?.reason ?? ""
            return list
        }
        return response
    }

    public func export(_ request: ExportRequest, context: RPCContext) async throws -> ExportResponse {
        let limit = request.limit == 0 ? 65_536 : Int(min(request.limit, 65_536))
        guard let list = catalog.current(request.advertiserID) else {
            throw RPCError(.notFound, "no list is served for advertiser '\(request.advertiserID)'")
        }
        if request.version != 0, list.version != request.version {
            throw RPCError(.failedPrecondition, "version \(request.version) of '\(request.advertiserID)' is no longer live (\(list.version) is): export again")
        }
        var after: Key16?
        if !request.after.isEmpty {
            guard request.after.count == 16 else { throw RPCError(.invalidArgument, "after must be 16 bytes (a key), got \(request.after.count)") }
            after = request.after.withUnsafeBytes { Key16($0.baseAddress!) }
        }
        let (packed, more) = list.keys(after: after, limit: limit)
        var response = ExportResponse()
        response.hashes = packed
        response.version = list.version
        response.hashType = HashType(rawValue: list.hashKind.wireValue)
        if more { response.nextAfter = packed.suffix(16) }
        return response
    }

    public func unpublish(_ request: UnpublishRequest, context: RPCContext) async throws -> UnpublishResponse {
        let before = catalog.current(request.advertiserID)
        let removed: UInt64
        do {
            removed = try catalog.unpublish(advertiser: request.advertiserID)
        } catch {
            throw RPCError(.internal, "cannot record the change: \(error)")
        }
        if let store, let before { for file in before.files { await store.discardLocal(file) } }
        return UnpublishResponse(removedVersion: removed)
    }
}
