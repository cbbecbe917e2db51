import Foundation
import Logging
import Placement
import RosterAPI
import RosterRPC
import ServiceLifecycle

extension IngestCatalog.Node: PlacementNode {
    public var placementID: String { id }
    public var placementWeight: Double { weight }
}

/// How a coordinator runs a tier of match servers (docs/SERVING.md).
public struct TierSettings: Sendable {
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

    public init(replicas: Int = 2, quorum: Int? = nil, heartbeatInterval: Duration = .seconds(1)) {
        self.replicas = max(1, replicas)
        self.quorum = quorum
        self.heartbeatInterval = heartbeatInterval
    }

    var nodeTimeout: Double { 3 * (heartbeatInterval / .seconds(1)) }

    /// Copies a version needs before it is live, given `owners` healthy owners.
    func quorum(owners: Int) -> Int { min(owners, quorum ?? (replicas / 2 + 1)) }

    /// The nodes as Status and Placement show them, with the live lists each holds.
    func describe(_ nodes: [IngestCatalog.Node], counts: [String: Int], now: Double) -> [TierNode] {
        nodes.map { node in
            var out = TierNode()
            out.nodeID = node.id
            out.address = node.address
            out.weight = node.weight
            out.healthy = node.isHealthy(now: now, timeout: nodeTimeout)
            out.advertisers = UInt32(counts[node.id] ?? 0)
            out.bytesServed = node.bytesServed
            out.lastSeenMsAgo = UInt64(max(0, (now - node.lastSeen) * 1000))
            return out
        }
    }
}

/// Publishing to a tier of match servers that register with the
/// coordinator (`Tier.RegisterNode`): each advertiser's live version is
/// placed on `replicas` of the healthy nodes by rendezvous hashing; a
/// version goes live once a quorum of its owners hold it; clients ask
/// `Tier.Placement` which nodes hold it.
public struct TierPublisher<Transport: RPCClientTransport>: Publisher {
    public let settings: TierSettings
    /// The admin stub for a node at an address.
    let connect: @Sendable (String) -> MatchAdmin.Client<Transport>
    /// Sent as `authorization: Bearer <token>` on MatchAdmin calls.
    let token: String?

    public init(settings: TierSettings, token: String? = nil, connect: @escaping @Sendable (String) -> MatchAdmin.Client<Transport>) {
        self.settings = settings
        self.token = token
        self.connect = connect
    }

    public var tier: TierSettings? { settings }

    var adminOptions: CallOptions { CallOptions(timeout: .seconds(30)).bearer(token) }

    func healthyNodes(_ core: CoordinatorCore) async throws -> [IngestCatalog.Node] {
        let now = core.clock()
        return try await core.db { try $0.nodes() }.filter { $0.isHealthy(now: now, timeout: settings.nodeTimeout) }
    }

    public func publish(_ batch: [IngestCatalog.Publication], core: CoordinatorCore) async -> Bool {
        guard !batch.isEmpty else { return true }
        let nodes: [IngestCatalog.Node]
        do { nodes = try await healthyNodes(core) } catch {
            core.logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return false
        }
        guard !nodes.isEmpty else {
            core.problem("match", "no healthy match server has registered: nothing can go live")
            return false
        }
        // By catalog row: a compaction applied to a live version is held
        // apart from that version (its owners hold the version already).
        let owners = Dictionary(batch.map { ($0.file, Rendezvous.rank(nodes, for: $0.advertiserID, replicas: settings.replicas)) }) { a, _ in a }
        var allDone = await place(batch, owners: owners, nodes: nodes, core: core)
        let holders: [UInt64: Set<String>]
        do { holders = try await core.db { try $0.holders(of: batch.map(\.file)) } } catch { return false }
        var live: [IngestCatalog.Publication] = []
        for publication in batch {
            let owned = owners[publication.file] ?? []
            let copies = owned.filter { holders[publication.file]?.contains($0.id) == true }.count
            if copies >= settings.quorum(owners: owned.count) && copies > 0 { live.append(publication) } else { allDone = false }
        }
        core.problem("match", allDone ? nil : "some versions do not yet have a quorum of copies in the tier")
        return await core.recordLive(live) && allDone
    }

    /// A tier follows the catalog: it is changed first, and the balance
    /// places the restored version on its owners, which swap it in over the
    /// newer one (`Publication.restored`).
    public func rollback(to target: IngestCatalog.Publication, live: UInt64?, core: CoordinatorCore) async throws -> UInt64 {
        guard try await !core.db({ try $0.hasVersionPublishing(advertiser: target.advertiserID) }) else {
            throw RPCError(.failedPrecondition, "a newer version of '\(target.advertiserID)' is being published to the tier: roll back once it is live")
        }
        let now = core.clock()
        try await core.db { try $0.markRolledBack(advertiser: target.advertiserID, to: target.version, now: now) }
        await balance(core)
        return live ?? 0
    }

    /// Every healthy node is told (one that does not serve it answers 0);
    /// a node down now is told when it comes back and is checked.
    public func unpublish(advertiser: String, core: CoordinatorCore) async throws {
        var failures: [String] = []
        for node in try await healthyNodes(core) {
            do {
                _ = try await connect(node.address).unpublish(UnpublishRequest(advertiserID: advertiser), options: adminOptions)
            } catch {
                failures.append("\(node.id): \(error)")
            }
        }
        guard failures.isEmpty else {
            throw RPCError(.unavailable, "'\(advertiser)' is deleted from the catalog, but some match servers could not be told yet: \(failures.joined(separator: "; "))")
        }
    }

    public func reconcile(core: CoordinatorCore) async { await balance(core) }

    /// Balances the tier whenever the set of healthy or unchecked nodes
    /// changes (checked every heartbeat interval: a node that died is
    /// replaced within about three), and at least every reconcile interval.
    public func maintain(core: CoordinatorCore) async {
        var last: (signature: [String], at: ContinuousClock.Instant)?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if core.isLeader, let nodes = try? await core.db({ try $0.nodes() }) {
                let now = core.clock()
                let signature = nodes.map { "\($0.id):\($0.isHealthy(now: now, timeout: settings.nodeTimeout)):\($0.checked):\($0.address)" }
                if last == nil || last!.signature != signature || ContinuousClock.now - last!.at >= core.configuration.reconcileInterval {
                    await balance(core)
                    last = (signature, ContinuousClock.now)
                }
            }
            try? await Task.sleep(for: settings.heartbeatInterval)
        }
    }
}
