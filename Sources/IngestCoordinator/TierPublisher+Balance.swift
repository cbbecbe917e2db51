import Foundation
import Logging
import Placement
import RosterAPI
import RosterRPC

/// `TierPublisher`: placing versions on their owners, checking nodes that
/// (re)started, and moving lists off nodes that no longer own them.
extension TierPublisher {
    /// Publishes each version to those of its owners that do not hold it,
    /// one `PublishMany` per node (all nodes at once), and records what each
    /// node took. False if some node could not take its share.
    @discardableResult
    func place(_ versions: [IngestCatalog.Publication], owners: [UInt64: [IngestCatalog.Node]], nodes: [IngestCatalog.Node],
               core: CoordinatorCore) async -> Bool {
        let holders: [UInt64: Set<String>]
        do { holders = try await core.db { try $0.holders(of: versions.map(\.file)) } } catch { return false }
        var perNode: [String: [IngestCatalog.Publication]] = [:]
        for publication in versions {
            for owner in owners[publication.file] ?? [] where holders[publication.file]?.contains(owner.id) != true {
                perNode[owner.id, default: []].append(publication)
            }
        }
        guard !perNode.isEmpty else { return true }
        let addresses = Dictionary(nodes.map { ($0.id, $0.address) }) { a, _ in a }
        return await withTaskGroup(of: Bool.self) { group in
            for (node, publications) in perNode {
                guard let address = addresses[node] else { continue }
                group.addTask { await self.publish(publications, to: node, at: address, core: core) }
            }
            var ok = true
            for await done in group { ok = ok && done }
            return ok
        }
    }

    /// One node's share, in batches; records the versions it took.
    private func publish(_ publications: [IngestCatalog.Publication], to node: String, at address: String, core: CoordinatorCore) async -> Bool {
        let admin = connect(address)
        var start = 0
        while start < publications.count {
            let chunk = Array(publications[start..<min(publications.count, start + CoordinatorCore.publishBatch)])
            start += chunk.count
            let requests = chunk.map { publication in
                var request = PublishRequest(advertiserID: publication.advertiserID, version: publication.version, segments: publication.segments)
                // Live again by a rollback: it replaces the newer version the node may still serve.
                request.rollback = publication.restored
                request.compacted = publication.compaction != nil
                return request
            }
            do {
                let results = try await admin.publishMany(PublishManyRequest(publications: requests), options: adminOptions).results
                var took: [UInt64] = []
                for (publication, result) in zip(chunk, results) {
                    switch result.outcome {
                    case .published:
                        took.append(publication.file)
                    case .stale:
                        // The node has a newer version of this advertiser (from
                        // an earlier placement): this one is not needed there.
                        break
                    case .refused, .later:
                        core.logger.warning("a node could not take a version", metadata: [
                            "node": "\(node)", "version": "\(publication.version)", "error": "\(result.message)"])
                    }
                }
                let now = core.clock()
                let taken = took
                try await core.db { try $0.recordHoldings(node: node, files: taken, now: now) }
            } catch {
                core.logger.warning("cannot publish to a node", metadata: ["node": "\(node)", "address": "\(address)", "error": "\(error)"])
                core.problem("node:\(node)", "cannot publish to match server \(node) at \(address): \(error)")
                return false
            }
        }
        core.problem("node:\(node)", nil)
        return true
    }

    /// Brings the tier in line with the catalog: nodes that (re)started are
    /// checked (what they still serve, by `ListServed`, is recorded; what
    /// they should not serve is unpublished); every live version is placed on
    /// its owners; a version is taken off a node that no longer owns it only
    /// once all its owners hold it, so its calls always have somewhere to go.
    func balance(_ core: CoordinatorCore) async {
        let now = core.clock()
        do {
            for node in try await core.db({ try $0.nodes() }) where !node.checked && now - node.lastSeen <= settings.nodeTimeout {
                await check(node, core: core)
            }
            do { try await core.db { try $0.forgetEndedHoldings() } } catch {
                core.logger.warning("cannot forget ended holdings", metadata: ["error": "\(error)"])
            }
            let nodes = try await healthyNodes(core)
            guard !nodes.isEmpty else { return }
            let live = try await core.db { try $0.publications(in: .live) }
            let owners = Dictionary(live.map { ($0.version, Rendezvous.rank(nodes, for: $0.advertiserID, replicas: settings.replicas)) }) { a, _ in a }
            await place(live, owners: owners, nodes: nodes, core: core)

            // Off the nodes that no longer own them, once every owner holds them.
            let holders = try await core.db { try $0.holders(of: live.map(\.version)) }
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
                let admin = connect(address)
                var removed: [UInt64] = []
                for publication in publications {
                    do {
                        _ = try await admin.unpublish(UnpublishRequest(advertiserID: publication.advertiserID), options: adminOptions)
                        removed.append(publication.version)
                    } catch {
                        core.logger.warning("cannot take a list off a node", metadata: ["node": "\(node)", "error": "\(error)"])
                        break
                    }
                }
                let dropped = removed
                try await core.db { try $0.dropHoldings(node: node, files: dropped) }
                if !removed.isEmpty { core.logger.info("moved lists off a node", metadata: ["node": "\(node)", "lists": "\(removed.count)"]) }
            }
        } catch {
            core.logger.error("cannot balance the tier", metadata: ["error": "\(error)"])
        }
    }

    /// Compares what a (re)started node serves with the catalog: each live
    /// version it serves is recorded as held; lists it serves that the
    /// catalog has no live version for are unpublished. It is then checked.
    private func check(_ node: IngestCatalog.Node, core: CoordinatorCore) async {
        let admin = connect(node.address)
        do {
            var served: [String: UInt64] = [:]
            var request = ListServedRequest()
            repeat {
                let response = try await admin.listServed(request, options: adminOptions)
                for list in response.lists where list.version != 0 { served[list.advertiserID] = list.version }
                request.afterAdvertiserID = response.nextAfterAdvertiserID
            } while !request.afterAdvertiserID.isEmpty
            let advertisers = Array(served.keys)
            let live = try await core.db { try $0.liveVersions(of: advertisers) }
            let current = served.filter { live[$0.key] == $0.value }
            let now = core.clock()
            try await core.db { try $0.recordHoldings(node: node.id, files: Array(current.values), now: now) }
            for advertiser in served.keys where live[advertiser] == nil {
                _ = try await admin.unpublish(UnpublishRequest(advertiserID: advertiser), options: adminOptions)
            }
            try await core.db { try $0.markChecked(node: node.id, incarnation: node.incarnation) }
            core.problem("node:\(node.id)", nil)
            core.logger.notice("match server checked", metadata: [
                "node": "\(node.id)", "address": "\(node.address)", "current": "\(current.count)", "stale": "\(served.count - current.count)"])
        } catch {
            core.problem("node:\(node.id)", "cannot check match server \(node.id) at \(node.address): \(error)")
        }
    }
}
