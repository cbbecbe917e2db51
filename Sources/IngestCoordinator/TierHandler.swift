import Foundation
import Logging
import Placement
import RosterAPI
import RosterRPC

/// `Tier`, the serving tier's directory: match servers register (node
/// tokens) and applications read placement (client tokens), as
/// `CoordinatorAccess` says. A coordinator with one match server (no tier)
/// refuses registrations and places nothing.
public struct TierHandler: Tier.Handler {
    public let core: CoordinatorCore

    public init(core: CoordinatorCore) { self.core = core }

    public var interceptors: [any RPCInterceptor] { core.configuration.access.tierChecks }

    public func registerNode(_ request: RegisterNodeRequest, context: RPCContext) async throws -> RegisterNodeResponse {
        try await core.asLeader {
            guard let tier = core.publisher.tier else {
                throw IngestError.failedPrecondition("this coordinator publishes to one match server (--match), not to a tier (--replicas)")
            }
            let now = core.clock()
            if try await core.db({ try $0.registerNode(request, now: now) }) {
                core.logger.notice("match server registered", metadata: ["node": "\(request.nodeID)", "address": "\(request.address)"])
                core.wake.yield()
            }
            var response = RegisterNodeResponse()
            response.heartbeatIntervalMs = UInt32(clamping: Int64(tier.heartbeatInterval / .milliseconds(1)))
            return response
        }
    }

    public func placement(_ request: PlacementRequest, context: RPCContext) async throws -> PlacementResponse {
        guard request.advertiserIDs.count <= 1_000 else { throw IngestError.invalidArgument("at most 1,000 advertisers a call") }
        var response = PlacementResponse()
        guard let tier = core.publisher.tier else { return response }
        response.replicas = UInt32(tier.replicas)
        let now = core.clock()
        let (nodes, live, holders, counts) = try await core.db { catalog in
            let live = try catalog.liveVersions(of: request.advertiserIDs)
            return (try catalog.nodes(), live, try catalog.holders(of: Array(Set(live.values))), try catalog.liveHoldingCounts())
        }
        response.nodes = tier.describe(nodes, counts: counts, now: now)
        let index = Dictionary(nodes.enumerated().map { ($1.id, UInt32($0)) }) { a, _ in a }
        let healthy = Set(nodes.filter { $0.isHealthy(now: now, timeout: tier.nodeTimeout) }.map(\.id))
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
}
