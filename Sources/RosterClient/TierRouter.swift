import Foundation
import RosterAPI
import RosterRPC
import Synchronization

/// Sends each Match and MatchMany call to a match server of a tier that
/// holds the advertiser's live list, and to the next one when that server
/// cannot answer — all within the call's one deadline.
///
/// Where each advertiser is served comes from the coordinator's
/// `Placement` call, asked once per advertiser and cached; it is asked again
/// after `placementLifetime`, when every listed server failed or did not
/// have the list (NOT_FOUND: it moved), and when a server answers from an
/// older version than the placement named (it came back without the newest
/// one). The remaining deadline is split evenly over the servers still to
/// try, so a server that hangs (a cut link) leaves time for the next.
///
/// Generic over transports so that tests run it in process; `TierClient`
/// is the one applications use.
public final class TierRouter<NodeTransport: RPCClientTransport, CoordinatorTransport: RPCClientTransport>: Sendable {
    public struct Configuration: Sendable {
        /// The application's client token (`authorization: Bearer`): the
        /// match servers take it for Match and MatchMany, the coordinator for
        /// `Tier.Placement` and nothing else.
        public var token: String?
        /// The whole call's deadline, every retry included.
        public var timeout: Duration
        /// How long a placement is used before it is asked again.
        public var placementLifetime: Duration
        /// How long a server that failed a call (refused, hung, did not have
        /// the list) is tried only after the others: a cut link then costs
        /// one timeout per this period, not one per call.
        public var suspicion: Duration
        /// When a server has not answered within this, the same call is also
        /// sent to the next holder and the first answer wins (a hedged
        /// request): a server that hangs (a cut link) then costs a call this
        /// long, not its share of the deadline. Nil (the default): servers are
        /// asked one after the other, which costs nothing per call; hedging
        /// runs each call as a task group with a timer, which halved the
        /// calls/s one client could make on this machine (docs/SERVING.md).
        /// Set it well above a healthy server's p99.
        public var hedgeAfter: Duration?

        public init(token: String? = nil, timeout: Duration = .seconds(5),
                    placementLifetime: Duration = .seconds(30), suspicion: Duration = .seconds(5),
                    hedgeAfter: Duration? = nil) {
            self.token = token
            self.timeout = timeout
            self.placementLifetime = placementLifetime
            self.suspicion = suspicion
            self.hedgeAfter = hedgeAfter
        }
    }

    /// Where one advertiser is served.
    public struct Route: Sendable, Equatable {
        public var version: UInt64
        /// Addresses of the servers holding `version`, in the order to try.
        public var addresses: [String]
    }

    public let configuration: Configuration
    private let coordinator: Tier.Client<CoordinatorTransport>
    private let transports: TransportCache<NodeTransport>
    private let routes = Mutex<[String: (route: Route, until: ContinuousClock.Instant)]>([:])
    private let placementCalls = Atomic<Int>(0)
    /// Servers that failed a call recently, until when they are tried last.
    private let suspects = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Hedges allowed now: each answered call adds a tenth, each hedge takes
    /// one, at most 100 saved. Under overload every call is slow, and
    /// hedging them all would double the load that made them slow; so at
    /// most about one call in ten is hedged (gRPC's hedging throttle, in kind).
    private let hedgeTokens = Mutex<Double>(100)

    private func mayHedge() -> Bool {
        hedgeTokens.withLock { tokens in
            guard tokens >= 1 else { return false }
            tokens -= 1
            return true
        }
    }

    private func answered() {
        hedgeTokens.withLock { $0 = min(100, $0 + 0.1) }
    }

    public init(coordinator: Tier.Client<CoordinatorTransport>, configuration: Configuration = .init(),
                connect: @escaping @Sendable (String) -> NodeTransport) {
        self.coordinator = coordinator
        self.configuration = configuration
        self.transports = TransportCache(connect)
    }

    /// Placement calls made so far (tests check the cache is used).
    public var placementCallCount: Int { placementCalls.load(ordering: .relaxed) }

    /// Whether `hash` is in `advertiser`'s live list.
    public func match(advertiser: String, hash: Data) async throws -> MatchResponse {
        try await call(advertiser) { client, options in
            let response = try await client.match(MatchRequest(advertiserID: advertiser, hash: hash), options: options)
            return (response, response.version)
        }
    }

    /// One MatchMany call for `advertiser` (hashes packed, 16 bytes each
    /// for MD5, 32 for SHA-256; `type` unspecified: the list's).
    public func matchMany(advertiser: String, hashes: Data, type: HashType = .unspecified) async throws -> MatchManyResponse {
        try await call(advertiser) { client, options in
            let response = try await client.matchMany(MatchManyRequest(advertiserID: advertiser, hashes: hashes, hashType: type), options: options)
            return (response, response.version)
        }
    }

    /// One hash against many advertisers' lists across the tier: the
    /// advertisers are grouped by the server each is routed to, the groups
    /// asked in parallel (one `MatchAdvertisers` each), and an advertiser
    /// whose server fails, or no longer holds its list, goes to its next
    /// holder, all within the one deadline. Answers in the order asked; nil
    /// for an advertiser with no published list, or whose list holds hashes
    /// of a type not given (`otherHash`: the same email's hash of the other
    /// type, so that each list is asked with its own).
    public func matchAdvertisers(hash: Data, otherHash: Data = Data(), advertisers: [String]) async throws -> [Bool?] {
        let deadline = ContinuousClock.now + configuration.timeout
        let distinct = Array(Set(advertisers))
        var routes = try await self.routes(distinct)
        var answers: [String: Bool?] = [:]
        /// The servers each advertiser has been asked of (and failed at):
        /// a set, not a count, since suspicion reorders the route between rounds.
        var tried: [String: Set<String>] = [:]
        var refreshed = false
        var last: RPCError?
        var pending = distinct
        while !pending.isEmpty {
            var groups: [String: [String]] = [:]
            var exhausted: [String] = []
            for advertiser in pending {
                let route = ordered(routes[advertiser]!)
                if route.version == 0 {
                    answers[advertiser] = .some(nil)
                    continue
                }
                if let next = route.addresses.first(where: { !(tried[advertiser]?.contains($0) ?? false) }) {
                    groups[next, default: []].append(advertiser)
                } else {
                    exhausted.append(advertiser)
                }
            }
            if groups.isEmpty {
                guard !exhausted.isEmpty else { break }
                guard !refreshed, ContinuousClock.now < deadline else {
                    throw last ?? RPCError(.unavailable, "no match server holds the lists of \(exhausted.prefix(5).joined(separator: ", "))")
                }
                // Every listed server failed for these: ask where they are once more.
                refreshed = true
                for (advertiser, route) in try await self.routes(exhausted, refresh: true) {
                    routes[advertiser] = route
                    tried[advertiser] = []
                }
                pending = exhausted
                continue
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                throw RPCError(.deadlineExceeded, "no match server answered for \(pending.count) advertisers in \(configuration.timeout)")
            }
            // Each group gets an even share of what is left for its most-tried member.
            let token = configuration.token
            let results = await withTaskGroup(of: (String, [String], Result<MatchAdvertisersResponse, RPCError>).self) { group in
                for (address, members) in groups {
                    let left = members.map { routes[$0]!.addresses.count - (tried[$0]?.count ?? 0) }.max() ?? 1
                    let client = self.client(address)
                    group.addTask {
                        do {
                            let request = MatchAdvertisersRequest(hash: hash, advertiserIDs: members, otherHash: otherHash)
                            let response = try await client.matchAdvertisers(request,
                                                                             options: CallOptions(timeout: remaining / max(1, left)).bearer(token))
                            return (address, members, .success(response))
                        } catch let error as RPCError {
                            return (address, members, .failure(error))
                        } catch {
                            return (address, members, .failure(RPCError(.unavailable, "\(error)")))
                        }
                    }
                }
                var all: [(String, [String], Result<MatchAdvertisersResponse, RPCError>)] = []
                for await result in group { all.append(result) }
                return all
            }
            for (address, members, result) in results {
                switch result {
                case .success(let response):
                    let answered = response.answers(count: members.count)
                    for (i, advertiser) in members.enumerated() {
                        let version = i < response.versions.count ? response.versions[i] : 0
                        if version == 0 || version < routes[advertiser]!.version {
                            // It no longer holds the list, or holds an older one: the next holder.
                            tried[advertiser, default: []].insert(address)
                            last = RPCError(.unavailable, "\(address) does not serve version \(routes[advertiser]!.version) of \(advertiser)")
                            continue
                        }
                        if version > routes[advertiser]!.version { self.routes.withLock { _ = $0.removeValue(forKey: advertiser) } }
                        answers[advertiser] = .some(answered[i])
                    }
                case .failure(let error):
                    guard Self.tryNext(error.code) else { throw error }
                    if error.code != .notFound { suspect([address]) }
                    for advertiser in members { tried[advertiser, default: []].insert(address) }
                    last = error
                }
            }
            pending = pending.filter { answers[$0] == nil }
        }
        return advertisers.map { answers[$0] ?? nil }
    }

    /// The routes of many advertisers: from the cache, the others from the
    /// coordinator in Placement calls of up to 1,000.
    public func routes(_ advertisers: [String], refresh: Bool = false) async throws -> [String: Route] {
        var out: [String: Route] = [:]
        var missing: [String] = []
        let now = ContinuousClock.now
        routes.withLock { cache in
            for advertiser in advertisers {
                if !refresh, let cached = cache[advertiser], now < cached.until { out[advertiser] = cached.route } else { missing.append(advertiser) }
            }
        }
        var start = 0
        while start < missing.count {
            let chunk = Array(missing[start..<min(missing.count, start + 1_000)])
            start += chunk.count
            placementCalls.add(1, ordering: .relaxed)
            let response = try await coordinator.placement(PlacementRequest(advertiserIDs: chunk),
                                                           options: CallOptions(timeout: configuration.timeout).bearer(configuration.token))
            for (advertiser, route) in learn(response) { out[advertiser] = route }
        }
        for advertiser in advertisers where out[advertiser] == nil { out[advertiser] = Route(version: 0, addresses: []) }
        return out
    }

    /// The servers for `advertiser`, from the cache or the coordinator.
    public func route(_ advertiser: String, refresh: Bool = false) async throws -> Route {
        if !refresh, let cached = routes.withLock({ $0[advertiser] }), ContinuousClock.now < cached.until { return cached.route }
        placementCalls.add(1, ordering: .relaxed)
        let response = try await coordinator.placement(PlacementRequest(advertiserIDs: [advertiser]),
                                                       options: CallOptions(timeout: configuration.timeout).bearer(configuration.token))
        guard let route = learn(response).first?.route else { throw RPCError(.internal, "the coordinator placed no advertiser") }
        return route
    }

    /// The routes a Placement answer gives, in its order, cached.
    private func learn(_ response: PlacementResponse) -> [(advertiser: String, route: Route)] {
        let until = ContinuousClock.now + configuration.placementLifetime
        let learned = response.advertisers.map { placed in
            (placed.advertiserID, Route(version: placed.version, addresses: placed.nodes.compactMap { index in
                Int(index) < response.nodes.count ? response.nodes[Int(index)].address : nil
            }))
        }
        routes.withLock { cache in for (advertiser, route) in learned { cache[advertiser] = (route, until) } }
        return learned
    }

    private func client(_ address: String) -> MatchService.Client<NodeTransport> {
        MatchService.Client(transport: transports(address))
    }

    /// The route with the servers under suspicion moved to the end (in
    /// their order), so calls go first to servers that answered lately.
    private func ordered(_ route: Route) -> Route {
        // On every call: nothing is allocated while no server is suspected.
        let suspected = suspects.withLock { table -> Set<String> in
            guard !table.isEmpty else { return [] }
            let now = ContinuousClock.now
            table = table.filter { $0.value > now }
            return Set(table.keys)
        }
        guard !suspected.isEmpty else { return route }
        var out = route
        out.addresses = route.addresses.filter { !suspected.contains($0) } + route.addresses.filter { suspected.contains($0) }
        return out
    }

    /// Codes after which another server may answer: it is down or cut off
    /// (UNAVAILABLE, DEADLINE_EXCEEDED), or does not hold the list (NOT_FOUND:
    /// the advertiser moved, or it restarted without it).
    static func tryNext(_ code: RPCStatusCode) -> Bool {
        code == .unavailable || code == .deadlineExceeded || code == .notFound
    }

    private func call<Response: Sendable>(
        _ advertiser: String,
        _ body: @escaping @Sendable (MatchService.Client<NodeTransport>, CallOptions) async throws -> (Response, UInt64)
    ) async throws -> Response {
        let deadline = ContinuousClock.now + configuration.timeout
        var route = ordered(try await self.route(advertiser))
        let hedged = configuration.hedgeAfter != nil
        var (answer, last) = hedged ? try await race(route, advertiser, deadline, body) : try await inTurn(route, advertiser, deadline, body)
        if answer == nil && ContinuousClock.now < deadline {
            // Every listed server failed, or none is listed: ask once more.
            route = ordered(try await self.route(advertiser, refresh: true))
            (answer, last) = hedged ? try await race(route, advertiser, deadline, body) : try await inTurn(route, advertiser, deadline, body)
        }
        if let answer { return answer }
        if route.version == 0 { throw RPCError(.notFound, "advertiser \(advertiser) has no published list") }
        throw last ?? RPCError(.unavailable, "no match server holds \(advertiser)'s list")
    }

    private enum Attempt<Response: Sendable>: Sendable {
        case answered(Response, version: UInt64, index: Int)
        case failed(RPCError, index: Int)
        /// The hedge timer fired.
        case hedge
    }

    /// Asks the route's servers one after the other, the next when one
    /// fails, each given an even share of what is left of the deadline.
    /// Returns the answer, or nil and the last error when every server failed.
    private func inTurn<Response: Sendable>(
        _ route: Route, _ advertiser: String, _ deadline: ContinuousClock.Instant,
        _ body: @escaping @Sendable (MatchService.Client<NodeTransport>, CallOptions) async throws -> (Response, UInt64)
    ) async throws -> (Response?, RPCError?) {
        var last: RPCError?
        for index in route.addresses.indices {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                return (nil, RPCError(.deadlineExceeded, "no match server answered for \(advertiser) in \(configuration.timeout)"))
            }
            let share = remaining / (route.addresses.count - index)
            do {
                let (response, version) = try await body(client(route.addresses[index]), CallOptions(timeout: share).bearer(configuration.token))
                if version < route.version {
                    // A server behind the placement (it came back with an
                    // older list): never an answer; the next one is asked.
                    last = RPCError(.unavailable, "\(route.addresses[index]) answered from version \(version), not \(route.version)")
                    continue
                }
                if version > route.version { routes.withLock { _ = $0.removeValue(forKey: advertiser) } }
                return (response, nil)
            } catch let error as RPCError where Self.tryNext(error.code) {
                if error.code != .notFound { suspect([route.addresses[index]]) }
                last = error
            }
        }
        return (nil, last)
    }

    private func suspect(_ addresses: [String]) {
        guard !addresses.isEmpty else { return }
        let until = ContinuousClock.now + configuration.suspicion
        suspects.withLock { table in for address in addresses { table[address] = until } }
    }

    /// Asks the route's servers in order: the next when one fails, and also
    /// the next when one has not answered within `hedgeAfter`; the first good
    /// answer wins and the other attempts are cancelled. Returns the answer,
    /// or nil and the last error when every server failed.
    private func race<Response: Sendable>(
        _ route: Route, _ advertiser: String, _ deadline: ContinuousClock.Instant,
        _ body: @escaping @Sendable (MatchService.Client<NodeTransport>, CallOptions) async throws -> (Response, UInt64)
    ) async throws -> (Response?, RPCError?) {
        guard !route.addresses.isEmpty else { return (nil, nil) }
        let token = configuration.token
        let hedgeAfter = configuration.hedgeAfter
        return try await withThrowingTaskGroup(of: Attempt<Response>.self) { group in
            var next = 0
            var running = 0
            var last: RPCError?
            /// Attempts started and not yet ended, by index into the route.
            var inFlight = Set<Int>()
            /// Set when a hedge may start another attempt.
            var hedge = false
            while true {
                // Start an attempt when none is running, or when a hedge is due.
                if (running == 0 || hedge) && next < route.addresses.count {
                    hedge = false
                    let remaining = deadline - ContinuousClock.now
                    if remaining > .zero {
                        let index = next
                        next += 1
                        running += 1
                        inFlight.insert(index)
                        let client = self.client(route.addresses[index])
                        // An even share of what is left, as when asking in turn:
                        // with no hedge to spare, a hung server still leaves time.
                        let share = remaining / (route.addresses.count - index)
                        group.addTask {
                            do {
                                let (response, version) = try await body(client, CallOptions(timeout: share).bearer(token))
                                return .answered(response, version: version, index: index)
                            } catch let error as RPCError where Self.tryNext(error.code) {
                                return .failed(error, index: index)
                            }
                        }
                        if next < route.addresses.count, let hedgeAfter {
                            group.addTask {
                                try await Task.sleep(for: hedgeAfter)
                                return .hedge
                            }
                        }
                    } else if running == 0 {
                        group.cancelAll()
                        return (nil, RPCError(.deadlineExceeded, "no match server answered for \(advertiser) in \(configuration.timeout)"))
                    }
                }
                if running == 0 && next >= route.addresses.count { return (nil, last) }
                guard let attempt = try await group.next() else { return (nil, last) }
                switch attempt {
                case .answered(let response, let version, let index):
                    running -= 1
                    inFlight.remove(index)
                    if version < route.version {
                        // A server behind the placement (it came back with an
                        // older list): never an answer; the next one is asked.
                        last = RPCError(.unavailable, "\(route.addresses[index]) answered from version \(version), not \(route.version)")
                        continue
                    }
                    if version > route.version { routes.withLock { _ = $0.removeValue(forKey: advertiser) } }
                    // Servers asked before this one and still silent were
                    // outrun by a hedge: suspected, as if they had failed.
                    suspect(inFlight.filter { $0 < index }.map { route.addresses[$0] })
                    answered()
                    group.cancelAll()
                    return (response, nil)
                case .failed(let error, let index):
                    running -= 1
                    inFlight.remove(index)
                    if error.code != .notFound { suspect([route.addresses[index]]) }
                    last = error
                case .hedge:
                    // The running attempts are slow: suspected at once (calls
                    // starting now go elsewhere first), and the next server is
                    // asked too if the throttle allows.
                    guard running > 0, next < route.addresses.count else { continue }
                    suspect(inFlight.map { route.addresses[$0] })
                    hedge = mayHedge()
                }
            }
        }
    }
}

/// A client for a tier of match servers: each call goes to a server that
/// holds the advertiser's list, found from the coordinators' placement, and
/// fails over to the next within the call's deadline.
///
/// ```swift
/// let roster = TierClient(coordinators: [("c1", 7400), ("c2", 7400)], token: "s3cret")
/// let answer = try await roster.router.match(advertiser: "acme", hash: MemberHash(email: "ann@example.com").bytes)
/// ```
public struct TierClient: Sendable {
    public let router: TierRouter<RPCClient, FailoverTransport<RPCClient>>
    private let coordinators: FailoverTransport<RPCClient>
    private let nodes: TransportCache<RPCClient>

    /// `hedgeAfter`: see `TierRouter.Configuration.hedgeAfter` (off by default).
    /// `tls` applies to the coordinators and to every match server.
    /// `token`: the application's client token, for placement and matching alike.
    public init(coordinators: [(host: String, port: Int)], token: String? = nil,
                timeout: Duration = .seconds(5), hedgeAfter: Duration? = nil, tls: ClientTLS? = nil) {
        let configuration = RPCClient.Configuration(tls: tls)
        let coordinators = FailoverTransport(coordinators.map { RPCClient(host: $0.host, port: $0.port, configuration: configuration) },
                                             failover: [.unavailable, .deadlineExceeded])
        let nodes = TransportCache { RPCClient(address: $0, configuration: configuration) }
        self.coordinators = coordinators
        self.nodes = nodes
        router = TierRouter(coordinator: Tier.Client(transport: coordinators),
                            configuration: .init(token: token, timeout: timeout,
                                                 hedgeAfter: hedgeAfter)) { nodes($0) }
    }

    public func close() async {
        for client in coordinators.transports { await client.close() }
        for client in nodes.all { await client.close() }
    }
}

extension RPCClient {
    /// A client for `host:port` (a placement's address; port 7401 if none).
    public convenience init(address: String, configuration: Configuration = .init()) {
        let colon = address.lastIndex(of: ":")
        let host = colon.map { String(address[..<$0]) } ?? address
        let port = colon.flatMap { Int(address[address.index(after: $0)...]) } ?? 7401
        self.init(host: host, port: port, configuration: configuration)
    }
}
