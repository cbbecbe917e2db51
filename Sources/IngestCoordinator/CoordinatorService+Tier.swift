import Foundation
import Logging
import Placement
import RosterAPI
import RosterRPC
import Synchronization

extension IngestCatalog.Node: PlacementNode {
    public var placementID: String { id }
    public var placementWeight: Double { weight }
}

/// `CoordinatorService`: publishing to a tier of match servers
/// (docs/SERVING.md). Nodes register and heartbeat (`RegisterNode`); each
/// advertiser's live version is placed on `replicas` of the healthy nodes by
/// rendezvous hashing; a version goes live once a quorum of its owners hold
/// it; clients ask `Placement` which nodes hold it.
extension CoordinatorService {
    /// How this coordinator runs a tier of match servers.
    public struct Tier: Sendable {
        /// Nodes each advertiser is placed on.
        public var replicas: Int
        /// Owners that must hold a version before it goes live; nil: a
        /// majority of `replicas`. Never more than the healthy owners there
        /// are: a tier down to one node still publishes, and Status says
        /// which advertisers have fewer copies than `replicas`.
        public var quorum: Int?
        /// How often nodes call `RegisterNode`; a node not heard from for
        /// three intervals is down.
        public var heartbeatInterval: Duration
        /// The admin stub for a node at an address.
        public var connect: @Sendable (String) -> MatchAdmin.Client<AdminTransport>

        public init(replicas: Int = 2, quorum: Int? = nil, heartbeatInterval: Duration = .seconds(1),
                    connect: @escaping @Sendable (String) -> MatchAdmin.Client<AdminTransport>) {
            self.replicas = max(1, replicas)
            self.quorum = quorum
            self.heartbeatInterval = heartbeatInterval
            self.connect = connect
        }

        var nodeTimeout: Double { 3 * (heartbeatInterval / .seconds(1)) }

        /// Copies a version needs before it is live, given `owners` healthy owners.
        func quorum(owners: Int) -> Int { min(owners, quorum ?? (replicas / 2 + 1)) }
    }

    var adminOptions: CallOptions { CallOptions(timeout: .seconds(30)).bearer(configuration.adminToken) }

    func healthyNodes(_ tier: Tier) throws -> [IngestCatalog.Node] {
        let now = clock()
        return try catalog.nodes().filter { $0.isHealthy(now: now, timeout: tier.nodeTimeout) }
    }

    /// Publishes `batch` to each version's owners; a version whose owners
    /// reach the quorum goes live. False: try again later.
    func publishToTier(_ batch: [IngestCatalog.Publication], tier: Tier) async -> Bool {
        let nodes: [IngestCatalog.Node]
        do { nodes = try healthyNodes(tier) } catch {
            logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return false
        }
        guard !nodes.isEmpty else {
            problem("match", "no healthy match server has registered: nothing can go live")
            return false
        }
        let owners = Dictionary(batch.map { ($0.version, Rendezvous.rank(nodes, for: $0.advertiserID, replicas: tier.replicas)) }) { a, _ in a }
        var allDone = await place(batch, owners: owners, nodes: nodes, tier: tier)
        let holders: [UInt64: Set<String>]
        do { holders = try catalog.holders(of: batch.map(\.version)) } catch { return false }
        var live: [IngestCatalog.Publication] = []
        for publication in batch {
            let owned = owners[publication.version] ?? []
            let copies = owned.filter { holders[publication.version]?.contains($0.id) == true }.count
            if copies >= tier.quorum(owners: owned.count) && copies > 0 { live.append(publication) } else { allDone = false }
        }
        problem("match", allDone ? nil : "some versions do not yet have a quorum of copies in the tier")
        return recordLive(live) && allDone
    }

    /// Publishes each version to those of its owners that do not hold it,
    /// one `PublishMany` per node (all nodes at once), and records what each
    /// node took. False if some node could not take its share.
    @discardableResult
    func place(_ versions: [IngestCatalog.Publication], owners: [UInt64: [IngestCatalog.Node]], nodes: [IngestCatalog.Node],
               tier: Tier) async -> Bool {
        let holders: [UInt64: Set<String>]
        do { holders = try catalog.holders(of: versions.map(\.version)) } catch { return false }
        var perNode: [String: [IngestCatalog.Publication]] = [:]
        for publication in versions {
            for owner in owners[publication.version] ?? [] where holders[publication.version]?.contains(owner.id) != true {
                perNode[owner.id, default: []].append(publication)
            }
        }
        guard !perNode.isEmpty else { return true }
        let addresses = Dictionary(nodes.map { ($0.id, $0.address) }) { a, _ in a }
        return await withTaskGroup(of: Bool.self) { group in
            for (node, publications) in perNode {
                guard let address = addresses[node] else { continue }
                group.addTask { await self.publish(publications, to: node, at: address, tier: tier) }
            }
            var ok = true
            for await done in group { ok = ok && done }
            return ok
        }
    }

    /// One node's share, in batches; records the versions it took.
    private func publish(_ publications: [IngestCatalog.Publication], to node: String, at address: String, tier: Tier) async -> Bool {
        let admin = tier.connect(address)
        var start = 0
        while start < publications.count {
            let chunk = Array(publications[start..<min(publications.count, start + Self.publishBatch)])
            start += chunk.count
            let requests = chunk.map { publication in
                var request = PublishRequest(advertiserID: publication.advertiserID, version: publication.version, segments: publication.segments)
                // Live again by a rollback: it replaces the newer version the node may still serve.
                request.rollback = publication.restored
                return request
            }
            do {
                let results = try await admin.publishMany(PublishManyRequest(publications: requests), options: adminOptions).results
                var took: [UInt64] = []
                for (publication, result) in zip(chunk, results) {
                    switch RPCStatusCode(rawValue: UInt8(clamping: result.code)) {
                    case .ok:
                        took.append(publication.version)
                    case .failedPrecondition where result.stale:
                        // The node has a newer version of this advertiser (from
                        // an earlier placement): this one is not needed there.
                        break
                    default:
                        logger.warning("a node could not take a version", metadata: [
                            "node": "\(node)", "version": "\(publication.version)", "error": "\(result.message)"])
                    }
                }
                try catalog.recordHoldings(node: node, files: took, now: clock())
            } catch {
                logger.warning("cannot publish to a node", metadata: ["node": "\(node)", "address": "\(address)", "error": "\(error)"])
                problem("node:\(node)", "cannot publish to match server \(node) at \(address): \(error)")
                return false
            }
        }
        problem("node:\(node)", nil)
        return true
    }

    /// Balances the tier whenever the set of healthy or unchecked nodes
    /// changes (checked every heartbeat interval: a node that died is
    /// replaced within about three), and at least every reconcile interval.
    func tierLoop(_ tier: Tier) async {
        var last: (signature: [String], at: ContinuousClock.Instant)?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if isLeader, let nodes = try? catalog.nodes() {
                let now = clock()
                let signature = nodes.map { "\($0.id):\($0.isHealthy(now: now, timeout: tier.nodeTimeout)):\($0.checked):\($0.address)" }
                if last == nil || last!.signature != signature || ContinuousClock.now - last!.at >= configuration.reconcileInterval {
                    await balanceTier(tier)
                    last = (signature, ContinuousClock.now)
                }
            }
            try? await Task.sleep(for: tier.heartbeatInterval)
        }
    }

    /// Brings the tier in line with the catalog: nodes that (re)started are
    /// checked (what they still serve, by `ListServed`, is recorded; what
    /// they should not serve is unpublished); every live version is placed on
    /// its owners; a version is taken off a node that no longer owns it only
    /// once all its owners hold it, so its calls always have somewhere to go.
    func balanceTier(_ tier: Tier) async {
        let now = clock()
        do {
            for node in try catalog.nodes() where !node.checked && now - node.lastSeen <= tier.nodeTimeout {
                await check(node, tier: tier)
            }
            forgetEnded()
            let nodes = try healthyNodes(tier)
            guard !nodes.isEmpty else { return }
            let live = try catalog.publications(in: .live)
            let owners = Dictionary(live.map { ($0.version, Rendezvous.rank(nodes, for: $0.advertiserID, replicas: tier.replicas)) }) { a, _ in a }
            await place(live, owners: owners, nodes: nodes, tier: tier)

            // Off the nodes that no longer own them, once every owner holds them.
            let holders = try catalog.holders(of: live.map(\.version))
            var surplus: [String: [IngestCatalog.Publication]] = [:]
            for publication in live {
                let owned = Set((owners[publication.version] ?? []).map(\.id))
                let held = holders[publication.version] ?? []
                guard owned.isSubset(of: held) else { continue }
                for node in held.subtracting(owned) { surplus[node, default: []].append(publication) }
            }
            let addresses = Dictionary(nodes.map { ($0.id, $0.address) }) { a, _ in a }
            for (node, publications) in surplus {
                // A node that is down keeps its record until it comes back (a
                // new incarnation forgets it) or is removed.
                guard let address = addresses[node] else { continue }
                let admin = tier.connect(address)
                var removed: [UInt64] = []
                for publication in publications {
                    do {
                        _ = try await admin.unpublish(UnpublishRequest(advertiserID: publication.advertiserID), options: adminOptions)
                        removed.append(publication.version)
                    } catch {
                        logger.warning("cannot take a list off a node", metadata: ["node": "\(node)", "error": "\(error)"])
                        break
                    }
                }
                try catalog.dropHoldings(node: node, files: removed)
                if !removed.isEmpty { logger.info("moved lists off a node", metadata: ["node": "\(node)", "lists": "\(removed.count)"]) }
            }
        } catch {
            logger.error("cannot balance the tier", metadata: ["error": "\(error)"])
        }
    }

    private func forgetEnded() {
        do { try catalog.forgetEndedHoldings() } catch {
            logger.warning("cannot forget ended holdings", metadata: ["error": "\(error)"])
        }
    }

    /// Compares what a (re)started node serves with the catalog: each live
    /// version it serves is recorded as held; lists it serves that the
    /// catalog has no live version for are unpublished. It is then checked.
    private func check(_ node: IngestCatalog.Node, tier: Tier) async {
        let admin = tier.connect(node.address)
        do {
            var served: [String: UInt64] = [:]
            var request = ListServedRequest()
            repeat {
                let response = try await admin.listServed(request, options: adminOptions)
                for list in response.lists where list.version != 0 { served[list.advertiserID] = list.version }
                request.afterAdvertiserID = response.nextAfterAdvertiserID
            } while !request.afterAdvertiserID.isEmpty
            let live = try catalog.liveVersions(of: Array(served.keys))
            let current = served.filter { live[$0.key] == $0.value }
            try catalog.recordHoldings(node: node.id, files: Array(current.values), now: clock())
            for advertiser in served.keys where live[advertiser] == nil {
                _ = try await admin.unpublish(UnpublishRequest(advertiserID: advertiser), options: adminOptions)
            }
            try catalog.markChecked(node: node.id, incarnation: node.incarnation)
            problem("node:\(node.id)", nil)
            logger.notice("match server checked", metadata: [
                "node": "\(node.id)", "address": "\(node.address)", "current": "\(current.count)", "stale": "\(served.count - current.count)"])
        } catch {
            problem("node:\(node.id)", "cannot check match server \(node.id) at \(node.address): \(error)")
        }
    }

    // MARK: RPCs

    public func registerNode(_ request: RegisterNodeRequest, context: RPCContext) async throws -> RegisterNodeResponse {
        try await asLeader {
            guard let tier = configuration.tier else {
                throw RPCError(.failedPrecondition, "this coordinator publishes to one match server (--match), not to a tier (--replicas)")
            }
            do {
                if try catalog.registerNode(request, now: clock()) {
                    logger.notice("match server registered", metadata: ["node": "\(request.nodeID)", "address": "\(request.address)"])
                    wake.yield()
                }
            } catch let error as IngestError {
                throw RPCError(.invalidArgument, error.description)
            }
            var response = RegisterNodeResponse()
            response.heartbeatIntervalMs = UInt32(clamping: Int64(tier.heartbeatInterval / .milliseconds(1)))
            return response
        }
    }

    public func placement(_ request: PlacementRequest, context: RPCContext) async throws -> PlacementResponse {
        guard request.advertiserIDs.count <= 1_000 else { throw RPCError(.invalidArgument, "at most 1,000 advertisers a call") }
        var response = PlacementResponse()
        guard let tier = configuration.tier else { return response }
        response.replicas = UInt32(tier.replicas)
        let now = clock()
        let nodes = try catalog.nodes()
        response.nodes = try tierNodes(nodes, tier: tier, now: now)
        let index = Dictionary(nodes.enumerated().map { ($1.id, UInt32($0)) }) { a, _ in a }
        let healthy = Set(nodes.filter { $0.isHealthy(now: now, timeout: tier.nodeTimeout) }.map(\.id))
        let live = try catalog.liveVersions(of: request.advertiserIDs)
        let holders = try catalog.holders(of: Array(Set(live.values)))
        for advertiser in request.advertiserIDs {
            var placed = AdvertiserPlacement()
            placed.advertiserID = advertiser
            placed.version = live[advertiser] ?? 0
            let held = holders[placed.version] ?? []
            // Holders in rank order, healthy ones first; a holder that is
            // down is listed last (a client may still reach it).
            let ranked = Rendezvous.rank(nodes.filter { held.contains($0.id) }, for: advertiser)
            placed.nodes = (ranked.filter { healthy.contains($0.id) } + ranked.filter { !healthy.contains($0.id) }).compactMap { index[$0.id] }
            response.advertisers.append(placed)
        }
        return response
    }

    /// The nodes as Status and Placement show them.
    func tierNodes(_ nodes: [IngestCatalog.Node], tier: Tier, now: Double) throws -> [TierNode] {
        let counts = try catalog.liveHoldingCounts()
        return nodes.map { node in
            var out = TierNode()
            out.nodeID = node.id
            out.address = node.address
            out.weight = node.weight
            out.healthy = node.isHealthy(now: now, timeout: tier.nodeTimeout)
            out.advertisers = UInt32(counts[node.id] ?? 0)
            out.bytesServed = node.bytesServed
            out.lastSeenMsAgo = UInt64(max(0, (now - node.lastSeen) * 1000))
            return out
        }
    }
}
