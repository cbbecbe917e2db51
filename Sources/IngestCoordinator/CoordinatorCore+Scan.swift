import DataLake
import Foundation
import Logging
import RosterAPI
import Synchronization

/// `CoordinatorCore`: finding new files in the lake.
extension CoordinatorCore {
    /// How far the running scan has got.
    struct ScanProgress: Sendable {
        var listed = 0
        var queued = 0
    }

    /// The scan running now, or a new one: a `Scan` call and the periodic
    /// scan never walk the lake twice at once; whoever comes second joins.
    /// `report`: describe the files it queues (what a `Scan` call answers
    /// with); a call that joins the periodic scan gets its counts only.
    func sharedScan(report: Bool) -> Task<[FileStatus], any Error> {
        runningScan.withLock { running -> Task<[FileStatus], any Error> in
            if let running { return running }
            let task = Task { try await self.scanLake(report: report) }
            running = task
            Task {
                _ = try? await task.value
                self.runningScan.withLock { if $0 == task { $0 = nil } }
            }
            return task
        }
    }

    /// Scans the lake, or joins the scan already running; answers within
    /// `within` with the queued files, or with the progress so far while the
    /// scan goes on in the background (a lake of very many folders).
    func scanNow(within: Duration) async throws -> ScanResponse {
        let scan = sharedScan(report: true)
        // Whichever comes first; awaiting the scan's task cannot be
        // cancelled, so the two waits race outside a task group.
        let finished = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let answered = Mutex(false)
            let answer = { @Sendable (finished: Bool) in
                if answered.withLock({ done in defer { done = true }; return !done }) { continuation.resume(returning: finished) }
            }
            let timer = Task {
                try? await Task.sleep(for: within)
                answer(false)
            }
            Task {
                _ = try? await scan.value
                timer.cancel()
                answer(true)
            }
        }
        var response = ScanResponse()
        if finished {
            response.queued = try await scan.value
        } else {
            response.inProgress = true
        }
        let progress = scanProgress.withLock { $0 }
        response.filesListed = UInt64(progress.listed)
        response.filesQueued = UInt64(progress.queued)
        return response
    }

    /// Queues the newest file of each advertiser folder if it is new, and
    /// abandons versions whose file changed or vanished while in progress.
    ///
    /// One listing of the lake answers both: the files in flight are checked
    /// against it (a HEAD only for one the listing does not show), so a
    /// scan costs one pass over the lake however many files are queued.
    public func scanLake(report: Bool = true) async throws -> [FileStatus] {
        scanProgress.withLock { $0 = ScanProgress() }
        let settle = configuration.scanSettleTime / .seconds(1)
        var newest: [String: LakeObject] = [:]
        // Each folder's newest list file, and its deltas: every delta newer
        // than that list is queued, oldest first (a delta is a change, so
        // none may be skipped as an older list file is).
        var newestList: [String: LakeObject] = [:]
        var deltas: [String: [LakeObject]] = [:]
        var listed: [String: String] = [:]
        var after: String?
        while true {
            let page = try await lake.list(prefix: "", after: after, limit: 1000)
            let now = clock()
            for object in page {
                listed[object.path] = object.etag
                guard let advertiser = object.advertiserID, Self.isListFile(object.path),
                      now - object.modified.timeIntervalSince1970 >= settle else { continue }
                if LakePath.isDelta(object.path) {
                    deltas[advertiser, default: []].append(object)
                } else if newestList[advertiser].map({ $0.arrival < object.arrival }) ?? true {
                    newestList[advertiser] = object
                }
                if let current = newest[advertiser], !(current.arrival < object.arrival) { continue }
                newest[advertiser] = object
            }
            scanProgress.withLock { $0.listed += page.count }
            guard page.count == 1000, let last = page.last else { break }
            after = last.path
        }
        for active in try await db({ try $0.activeFiles() }) where listed[active.path] != active.etag {
            do {
                // The listing may lag behind the lake (an object store's
                // can): a file it does not show is looked at before anything is abandoned.
                let object = listed[active.path] == nil ? try await lake.head(active.path) : nil
                if let object, object.etag == active.etag { continue }
                let now = clock()
                try await db { try $0.abandon(file: active.id, error: "the file changed while it was being ingested", now: now) }
                watchUntilSettled(active.path)
            } catch LakeError.notFound {
                let now = clock()
                try await db { try $0.abandon(file: active.id, error: "the file disappeared from the lake", now: now) }
            }
        }
        // A folder whose newest file is the one the last scan decided on
        // costs no catalog query: an idle lake is listed, not looked up.
        let decided = lastScan.withLock { $0 }
        let candidates = newest.values.sorted { $0.path < $1.path }.filter { decided[$0.advertiserID ?? ""] != $0.path + "\u{0}" + $0.etag }
            .flatMap { newest -> [LakeObject] in
                let advertiser = newest.advertiserID ?? ""
                let list = newestList[advertiser]
                let later = (deltas[advertiser] ?? []).filter { delta in list.map { $0.arrival < delta.arrival } ?? true }
                return ((list.map { [$0] } ?? []) + later).sorted { $0.arrival < $1.arrival }
            }
        scanLookups.add(candidates.count, ordering: .relaxed)
        guard !candidates.isEmpty else { return [] }
        let now = clock()
        // One trip to the catalog's threads for the whole scan's decisions.
        let (decisions, submissions, refused) = try await db { catalog in
            var decisions: [String: String] = [:]
            var submissions: [(IngestCatalog.Submission, LakeObject)] = []
            var refused: [(String, String)] = []
            for object in candidates {
                let advertiser = object.advertiserID ?? ""
                let key = object.path + "\u{0}" + object.etag
                defer { decisions[advertiser] = key }
                if try catalog.isKnown(path: object.path, etag: object.etag) { continue }
                if let problem = IngestPolicy.problem(withAdvertiserID: advertiser) {
                    try catalog.refuse(object, reason: problem, now: now)
                    refused.append((object.path, problem))
                    continue
                }
                // Only a file newer than every file the advertiser was given
                // replaces its list: deleting the newest never revives an older one.
                guard try catalog.isNewest(object) else { continue }
                submissions.append((try catalog.submit(object, now: now), object))
            }
            return (decisions, submissions, refused)
        }
        lastScan.withLock { $0.merge(decisions) { $1 } }
        scanProgress.withLock { $0.queued = submissions.filter { $0.0.queued }.count }
        for (path, problem) in refused { logger.error("refused a file", metadata: ["path": "\(path)", "error": "\(problem)"]) }
        var queued: [FileStatus] = []
        for (submission, object) in submissions where submission.queued {
            work.notify()
            logger.info("queued", metadata: ["path": "\(object.path)", "version": "\(submission.version)", "bytes": "\(object.size)"])
            // The first thousand are described: a page that always fits in a frame.
            if report && queued.count < 1_000 {
                // This version itself (an advertiser may have several queued: deltas).
                queued += try await db { try $0.files(advertiser: submission.advertiserID, states: [], limit: 1, before: submission.version + 1, now: now) }
            }
        }
        return queued
    }

    /// Hidden files and the usual partial-download names are not lists (`LakePath`).
    static func isListFile(_ path: String) -> Bool { LakePath.isListFile(path) }
}
