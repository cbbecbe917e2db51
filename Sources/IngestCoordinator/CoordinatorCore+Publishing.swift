import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC

/// `CoordinatorCore`: moving merged versions live through the publisher,
/// requeueing files that changed under an ingest, and collecting garbage.
extension CoordinatorCore {
    /// Versions per `PublishMany` call.
    static var publishBatch: Int { 256 }

    /// Queues the files that changed under an ingest once they have been
    /// quiet for the settle time; forgets those that vanished.
    public func requeueSettled() async {
        guard isLeader else { return }
        let paths = settling.withLock { $0 }
        let settle = configuration.scanSettleTime / .seconds(1)
        for path in paths.sorted() {
            do {
                let object = try await lake.head(path)
                guard clock() - object.modified.timeIntervalSince1970 >= settle else { continue }
                settling.withLock { _ = $0.remove(path) }
                let now = clock()
                let submission = try await db { catalog -> IngestCatalog.Submission? in
                    guard try catalog.isNewest(object) else { return nil }
                    return try catalog.submit(object, now: now)
                }
                if let submission, submission.queued {
                    work.notify()
                    logger.info("queued again after it settled", metadata: ["path": "\(path)", "version": "\(submission.version)"])
                }
            } catch LakeError.notFound {
                settling.withLock { _ = $0.remove(path) }
            } catch {
                logger.warning("cannot look at a changed file yet", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
    }

    /// Remembers a file that changed during its ingest, to queue it again
    /// once it has settled.
    func watchUntilSettled(_ path: String) {
        settling.withLock { _ = $0.insert(path) }
        wake.yield()
    }

    /// Makes every merged version live through the publisher, oldest first.
    public func publishPending() async {
        guard isLeader else { return }
        // After the match servers could not take versions (unreachable, or
        // at a limit), wait before asking again, doubling up to a minute:
        // thousands of pending versions must not be retried every tick.
        if let until = publishPause.withLock({ $0?.until }), ContinuousClock.now < until { return }
        let pending: [IngestCatalog.Publication]
        do { pending = try await db { try $0.pendingPublications() } } catch {
            logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        // Many versions per call: a match server records them with one
        // manifest append and one sync, the catalog marks them live in one
        // transaction. Each batch is checked against the lake just before.
        var start = 0
        while start < pending.count {
            let chunk = pending[start..<min(pending.count, start + Self.publishBatch)]
            start += chunk.count
            var ready: [IngestCatalog.Publication] = []
            for publication in chunk {
                // A compaction was read from segments, not from the lake.
                if publication.kind == .compaction {
                    if let reason = publication.obsolete {
                        let now = clock()
                        _ = try? await db { try $0.markPublishFailed(file: publication.file, as: .superseded, error: reason, now: now) }
                    } else {
                        ready.append(publication)
                    }
                    continue
                }
                // Only the object every block was read from goes live: a file
                // rewritten after its last block was read is not published.
                let now = clock()
                do {
                    let object = try await lake.head(publication.path)
                    guard object.etag == publication.etag else {
                        try await db { try $0.markPublishFailed(file: publication.version, as: .superseded,
                                                              error: "the file changed after it was read; its new contents are queued once settled", now: now) }
                        watchUntilSettled(publication.path)
                        continue
                    }
                } catch LakeError.notFound {
                    _ = try? await db { try $0.markPublishFailed(file: publication.version, as: .superseded,
                                                                 error: "the file disappeared from the lake before it went live", now: now) }
                    continue
                } catch {
                    logger.warning("cannot check the file before publishing", metadata: ["path": "\(publication.path)", "error": "\(error)"])
                    return
                }
                ready.append(publication)
            }
            let published = await makeDurable(ready) ? await publisher.publish(ready, core: self) : false
            guard published else {
                publishPause.withLock { pause in
                    let delay = min(.seconds(60), (pause?.delay ?? .milliseconds(500)) * 2)
                    pause = (ContinuousClock.now + delay, delay)
                }
                return
            }
            publishPause.withLock { $0 = nil }
        }
    }

    /// Marks `live` live in the catalog (a compaction: applied beneath the
    /// live version); false if it cannot be written.
    func recordLive(_ live: [IngestCatalog.Publication]) async -> Bool {
        guard !live.isEmpty else { return true }
        let now = clock()
        do {
            let versions = live.filter { $0.compaction == nil }, compactions = live.filter { $0.compaction != nil }
            let bases = Dictionary(versions.compactMap { publication in publication.base.map { (publication.version, $0) } }) { a, _ in a }
            try await db { catalog in
                try catalog.markLive(files: versions.map(\.version), bases: bases, now: now)
                for compaction in compactions { try catalog.markCompacted(compaction, now: now) }
            }
        } catch {
            logger.error("cannot record versions live", metadata: ["error": "\(error)"])
            return false
        }
        for publication in live {
            problem("advertiser:\(publication.advertiserID)", nil)
            logger.info("live", metadata: ["advertiser": "\(publication.advertiserID)", "version": "\(publication.version)"])
        }
        return true
    }

    /// Merges wait only for their own slot's pages (a sync of the whole
    /// pack per merge would flush the others' too); each pack is made
    /// durable once, here, before anything points at it.
    func makeDurable(_ batch: [IngestCatalog.Publication]) async -> Bool {
        do {
            for pack in Set(batch.flatMap { $0.segments.filter { $0.length > 0 }.map(\.path) }).sorted() {
                try await store.makeDurable(pack)
            }
        } catch {
            logger.warning("cannot make segments durable; publishing later", metadata: ["error": "\(error)"])
            problem("store", "cannot make segments durable: \(error)")
            return false
        }
        problem("store", nil)
        return true
    }

    /// Deletes runs of live versions and everything of ended ones.
    public func collectGarbage() async {
        guard isLeader else { return }
        let items: [IngestCatalog.Collectable]
        let keep = configuration.keepRetiredVersions
        do {
            items = try await db { try $0.collectable(keepRetired: keep) }
        } catch {
            logger.warning("cannot list what to collect", metadata: ["error": "\(error)"])
            return
        }
        for item in items {
            do {
                for prefix in item.prefixes { try await store.removeAll(under: prefix) }
                if let folder = item.segmentFolder {
                    for path in try await store.list(under: folder) where !item.served.contains(path) {
                        try await store.remove(path)
                    }
                }
                try await db { try $0.markCollected(file: item.file, level: item.level) }
            } catch {
                logger.warning("cannot collect", metadata: ["file": "\(item.file)", "error": "\(error)"])
            }
        }
    }
}
