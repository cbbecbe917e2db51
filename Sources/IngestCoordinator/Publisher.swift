import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC
import ServiceLifecycle

/// Where merged versions go live: one match server (`MatchServerPublisher`)
/// or a tier of them (`TierPublisher`). The core and the handlers speak
/// only to this, so neither knows which it has.
public protocol Publisher: Sendable {
    /// The tier's settings when publishing to a tier; nil for one match server.
    var tier: TierSettings? { get }
    /// Makes `batch` (durable already) live and records it in the catalog;
    /// false when some of it must be tried again later.
    func publish(_ batch: [IngestCatalog.Publication], core: CoordinatorCore) async -> Bool
    /// Serves `target`, a retired version, again in place of `live`, and
    /// records it in the catalog. Returns the version it replaced.
    func rollback(to target: IngestCatalog.Publication, live: UInt64?, core: CoordinatorCore) async throws -> UInt64
    /// Tells the match servers to stop serving a deleted advertiser.
    func unpublish(advertiser: String, core: CoordinatorCore) async throws
    /// Brings what is served in line with the catalog once.
    func reconcile(core: CoordinatorCore) async
    /// Keeps what is served in line with the catalog until cancelled or
    /// shut down: the reconcile loop's body.
    func maintain(core: CoordinatorCore) async
}

/// Publishing to one match server (`--match`) through its `MatchAdmin`.
public struct MatchServerPublisher<Transport: RPCClientTransport>: Publisher {
    let admin: MatchAdmin.Client<Transport>
    /// Sent as `authorization: Bearer <token>` on MatchAdmin calls.
    let token: String?

    public init(admin: MatchAdmin.Client<Transport>, token: String? = nil) {
        self.admin = admin
        self.token = token
    }

    public var tier: TierSettings? { nil }

    func options(_ timeout: Duration) -> CallOptions { CallOptions(timeout: timeout).bearer(token) }

    public func publish(_ batch: [IngestCatalog.Publication], core: CoordinatorCore) async -> Bool {
        guard !batch.isEmpty else { return true }
        let requests = batch.map { PublishRequest(advertiserID: $0.advertiserID, version: $0.version, segments: $0.segments, compacted: $0.compaction != nil) }
        let results: [PublishResult]
        do {
            results = try await admin.publishMany(PublishManyRequest(publications: requests), options: options(.seconds(60))).results
            core.problem("match", nil)
        } catch {
            // Unreachable or unauthorised: keep the versions and try again later.
            core.logger.warning("cannot publish yet", metadata: ["versions": "\(batch.count)", "error": "\(error)"])
            core.problem("match", "cannot publish to the match server: \(error)")
            return false
        }
        var live: [IngestCatalog.Publication] = []
        var later = false
        for (publication, result) in zip(batch, results) {
            switch result.outcome {
            case .published:
                live.append(publication)
            case .refused, .stale:
                core.logger.error("match server refused a version", metadata: ["version": "\(publication.file)", "error": "\(result.message)"])
                let now = core.clock()
                _ = try? await core.db { try $0.markPublishFailed(file: publication.file, as: result.stale ? .superseded : .failed,
                                                                  error: "match server refused it: \(result.message)", now: now) }
            case .later:
                // Nothing wrong with the version: the server could not record
                // it or is at a limit (memory maps, say). It stays pending and
                // is tried again on a later tick; the rest wait with it.
                core.logger.warning("match server could not publish yet", metadata: ["version": "\(publication.version)", "error": "\(result.message)"])
                core.problem("match", "the match server cannot publish now: \(result.message)")
                later = true
            }
        }
        return await core.recordLive(live) && !later
    }

    public func rollback(to target: IngestCatalog.Publication, live: UInt64?, core: CoordinatorCore) async throws -> UInt64 {
        var publish = PublishRequest(advertiserID: target.advertiserID, version: target.version, segments: target.segments)
        publish.rollback = true
        let response: PublishResponse
        do {
            response = try await admin.publish(publish, options: options(.seconds(60)))
        } catch let error as RPCError {
            throw RPCError(error.code, "the match server did not take version \(target.version) of '\(target.advertiserID)': \(error.message)")
        }
        let now = core.clock()
        try await core.db { try $0.markRolledBack(advertiser: target.advertiserID, to: target.version, now: now) }
        return live ?? response.previousVersion
    }

    public func unpublish(advertiser: String, core: CoordinatorCore) async throws {
        do {
            _ = try await admin.unpublish(UnpublishRequest(advertiserID: advertiser), options: options(.seconds(30)))
        } catch {
            core.problem("advertiser:\(advertiser)", "\(advertiser) was deleted; the match server still serves it until it can be told: \(error)")
            throw RPCError(.unavailable, "'\(advertiser)' is deleted from the catalog, but the match server could not be told to stop serving it (it will be told when it can be reached): \(error)")
        }
    }

    public func maintain(core: CoordinatorCore) async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            await reconcile(core: core)
            // At most 1% of a core: with 100,000 live lists one pass
            // reads them all from the catalog and the match server.
            try? await Task.sleep(for: max(core.configuration.reconcileInterval, (ContinuousClock.now - started) * 100))
        }
    }

    /// Compares the catalog's live versions with what the match server
    /// serves. A live version the server does not have (its manifest was
    /// lost) or found damaged (a segment failed its checksums at start or
    /// in a scrub) is rebuilt from its lake file as a new version, with no
    /// one touching the lake; until then its calls answer UNAVAILABLE and
    /// Status names it. A deleted advertiser it still serves is unpublished.
    public func reconcile(core: CoordinatorCore) async {
        guard core.isLeader else { return }
        let live: [(advertiser: String, file: UInt64, path: String, etag: String)]
        do { live = try await core.db { try $0.liveVersions() } } catch {
            core.logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        // Read after the catalog: a version marked live before this call is served by now.
        var served: [String: ServedList] = [:]
        do {
            // In pages, so that no answer outgrows a frame however many advertisers.
            var request = ListServedRequest()
            repeat {
                let response = try await admin.listServed(request, options: options(.seconds(30)))
                for list in response.lists { served[list.advertiserID] = list }
                request.afterAdvertiserID = response.nextAfterAdvertiserID
            } while !request.afterAdvertiserID.isEmpty
        } catch {
            core.problem("match", "cannot reach the match server to compare what it serves: \(error)")
            return
        }
        // A deleted advertiser the match server still serves (it could not be
        // told when it was deleted, or a publish raced the deletion): told now.
        let liveAdvertisers = Set(live.map(\.advertiser))
        let extra = served.values.filter { $0.version != 0 && !liveAdvertisers.contains($0.advertiserID) }.map(\.advertiserID)
        if !extra.isEmpty, let deleted = try? await core.db({ try $0.deleted(among: extra) }) {
            for advertiser in deleted.sorted() {
                do {
                    _ = try await admin.unpublish(UnpublishRequest(advertiserID: advertiser), options: options(.seconds(30)))
                    core.problem("advertiser:\(advertiser)", nil)
                    core.logger.notice("stopped serving a deleted advertiser", metadata: ["advertiser": "\(advertiser)"])
                } catch {
                    core.logger.warning("cannot stop serving a deleted advertiser yet", metadata: ["advertiser": "\(advertiser)", "error": "\(error)"])
                }
            }
        }
        var missing: [(advertiser: String, file: UInt64, path: String, etag: String)] = []
        for entry in live {
            let server = served[entry.advertiser]
            if let server, server.version >= entry.file { continue }
            if let server, server.damagedVersion == entry.file {
                await core.rebuild(entry, reason: "the match server found version \(entry.file) damaged (\(server.damage))")
            } else {
                missing.append(entry)
            }
        }
        await restore(missing, core: core)
    }
}

extension MatchServerPublisher {
    /// Live versions the match server does not have (it lost its manifest,
    /// a list was unpublished behind the coordinator's back, a host was
    /// replaced by an empty one) are published again from their segments,
    /// which the store keeps: nothing is re-read from the lake and nothing
    /// the versions need is deleted. Only a version whose segments are gone
    /// too is rebuilt from its lake file, as a new version.
    func restore(_ missing: [(advertiser: String, file: UInt64, path: String, etag: String)], core: CoordinatorCore) async {
        guard !missing.isEmpty else { return }
        let wanted = Set(missing.map(\.file))
        let publications: [IngestCatalog.Publication]
        do { publications = try await core.db { try $0.publications(in: .live) }.filter { wanted.contains($0.version) } } catch {
            core.logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        var restored: Set<UInt64> = []
        var start = 0
        while start < publications.count {
            let chunk = Array(publications[start..<min(publications.count, start + CoordinatorCore.publishBatch)])
            start += chunk.count
            let requests = chunk.map { PublishRequest(advertiserID: $0.advertiserID, version: $0.version, segments: $0.segments) }
            do {
                let results = try await admin.publishMany(PublishManyRequest(publications: requests), options: options(.seconds(60))).results
                for (publication, result) in zip(chunk, results) {
                    switch result.outcome {
                    case .published, .stale:
                        restored.insert(publication.version)
                        core.problem("advertiser:\(publication.advertiserID)", nil)
                        core.logger.notice("published a live version again from its segments", metadata: [
                            "advertiser": "\(publication.advertiserID)", "version": "\(publication.version)"])
                    case .later:
                        // Tried again at the next reconcile.
                        restored.insert(publication.version)
                        core.problem("advertiser:\(publication.advertiserID)",
                                     "\(publication.advertiserID): the match server does not have version \(publication.version) and cannot take it again yet: \(result.message)")
                    case .refused:
                        break
                    }
                }
            } catch {
                core.problem("match", "cannot publish lost versions to the match server again: \(error)")
                return
            }
        }
        for entry in missing where !restored.contains(entry.file) {
            await core.rebuild(entry, reason: "the match server does not have version \(entry.file), and its segments cannot be published again")
        }
    }
}

extension CoordinatorCore {
    /// Rebuilds a live version its match server lost or found damaged from
    /// its lake file, as a new version; Status names it until then.
    func rebuild(_ entry: (advertiser: String, file: UInt64, path: String, etag: String), reason: String) async {
        do {
            let object = try await lake.head(entry.path)
            guard object.etag == entry.etag else {
                // The scan queues the newer file; nothing to rebuild.
                problem("advertiser:\(entry.advertiser)", "\(entry.advertiser): \(reason); its file changed since, and the new one is queued by the scan")
                return
            }
            let now = clock()
            let submission = try await db { try $0.rebuild(file: entry.file, from: object, reason: reason, now: now) }
            work.notify()
            problem("advertiser:\(entry.advertiser)", "\(entry.advertiser): \(reason); rebuilding it from \(entry.path) as version \(submission.version)")
            logger.error("rebuilding a live list the match server cannot serve", metadata: [
                "advertiser": "\(entry.advertiser)", "version": "\(entry.file)", "reason": "\(reason)", "new": "\(submission.version)"])
        } catch LakeError.notFound {
            problem("advertiser:\(entry.advertiser)", "\(entry.advertiser): \(reason), and its file \(entry.path) is gone from the lake")
        } catch {
            logger.warning("cannot rebuild yet", metadata: ["advertiser": "\(entry.advertiser)", "error": "\(error)"])
        }
    }
}

/// What a match server answered for one version of a `PublishMany`, typed
/// (the wire carries a raw status code).
enum PublishOutcome: Equatable {
    /// Live on the server.
    case published
    /// The server holds a newer version of the advertiser: this one is not needed.
    case stale
    /// The version itself is wrong (FAILED_PRECONDITION, INVALID_ARGUMENT).
    case refused
    /// The server cannot take it now (UNAVAILABLE, RESOURCE_EXHAUSTED, …): try later.
    case later
}

extension PublishResult {
    /// The typed status of this result.
    var status: RPCStatusCode { RPCStatusCode(rawValue: UInt8(clamping: code)) ?? .unknown }

    var outcome: PublishOutcome {
        switch status {
        case .ok: .published
        case .failedPrecondition where stale: .stale
        case .failedPrecondition, .invalidArgument: .refused
        default: .later
        }
    }
}
