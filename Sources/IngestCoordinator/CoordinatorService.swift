import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC
import SegmentStore
import ServiceLifecycle
import Synchronization

/// The ingest coordinator: serves the `Coordinator` RPCs and runs the
/// background jobs that move versions forward — periodic lake scans,
/// publishing merged versions to the match server, and deleting what is no
/// longer needed from the segment store.
///
/// All state is in the `IngestCatalog`; this type holds nothing that a
/// restart would lose. Killed at any moment, a new process on the same
/// catalog carries on: leases held by live workers stay valid, versions
/// waiting to be published are published, and garbage is collected.
public final class CoordinatorService<AdminTransport: RPCClientTransport>: Coordinator.Handler, Service, Sendable {
    public struct Configuration: Sendable {
        /// How often to look for new and changed files in the lake; nil: only on `Scan` and `SubmitFile`.
        public var scanInterval: Duration?
        /// How often to retry publishing and collecting when nothing wakes the loop earlier.
        public var publishInterval: Duration
        /// Sent as `authorization: Bearer <token>` on MatchAdmin calls.
        public var adminToken: String?
        /// Files modified more recently than this are left alone until they
        /// have been quiet this long: a file being copied into a folder, or
        /// rewritten in place, is not ingested half-written. This holds for
        /// scans and for a file that changed during its ingest. (`SubmitFile`
        /// does not wait: the caller says the file is complete.)
        public var scanSettleTime: Double
        /// Tokens callers must present (`authorization: Bearer <token>`) on
        /// every Coordinator call; empty: no check (local development).
        public var callerTokens: Set<String>
        /// How often to compare what the match server serves with the
        /// catalog's live versions, rebuilding what it lost or found damaged.
        public var reconcileInterval: Duration
        /// Earlier (retired) versions of each advertiser whose segments are
        /// kept besides the live one's, ready for `Rollback`: the newest ones.
        public var keepRetiredVersions: Int = 0

        /// Coordinators sharing one catalog elect a leader (`IngestCatalog+Leadership`):
        /// this one's name, the address it advertises, and the lease. Nil:
        /// the only coordinator of its catalog, always leading.
        public var election: Election?

        /// Publish to a tier of match servers that register with this
        /// coordinator (`CoordinatorService+Tier`), not to the one match
        /// server `matchAdmin` reaches. Nil: one match server.
        public var tier: Tier?

        public init(scanInterval: Duration? = .seconds(10), publishInterval: Duration = .milliseconds(500), adminToken: String? = nil,
                    scanSettleTime: Double = 1, callerTokens: Set<String> = [], reconcileInterval: Duration = .seconds(10)) {
            self.reconcileInterval = reconcileInterval
            self.callerTokens = callerTokens
            self.scanInterval = scanInterval
            self.publishInterval = publishInterval
            self.adminToken = adminToken
            self.scanSettleTime = scanSettleTime
        }
    }

    /// How this coordinator takes part in electing a leader.
    public struct Election: Sendable {
        public var holder: String
        public var address: String
        public var lease: Duration

        public init(holder: String, address: String, lease: Duration = .seconds(10)) {
            self.holder = holder
            self.address = address
            self.lease = lease
        }

        var leaseSeconds: Double { lease / .seconds(1) }
    }

    public let catalog: IngestCatalog
    private let lake: any DataLake
    let store: any SegmentStorage
    private let matchAdmin: MatchAdmin.Client<AdminTransport>
    let configuration: Configuration
    let logger: Logger
    let clock: @Sendable () -> Double
    private let work = WorkSignal()
    let wake: AsyncStream<Void>.Continuation
    private let wakeups: AsyncStream<Void>
    /// Paths whose file changed under an ingest: queued again once they
    /// have settled (checked on every publish-loop tick).
    private let settling = Mutex<Set<String>>([])
    /// Per advertiser folder, the newest file (path and etag) the last scan
    /// decided on (queued, known, refused or older than what it was given).
    private let lastScan = Mutex<[String: String]>([:])
    /// Catalog lookups made by scans, for tests that check an unchanged
    /// lake costs none.
    private let scanLookups = Atomic<Int>(0)
    @_spi(Testing) public var scanLookupCount: Int { scanLookups.load(ordering: .relaxed) }
    /// What needs a person's attention now, by topic (`match`, `advertiser:<id>`), for Status.
    private let problems = Mutex<[String: String]>([:])

    func problem(_ topic: String, _ message: String?) {
        problems.withLock { $0[topic] = message }
    }

    public init(catalog: IngestCatalog, lake: any DataLake, store: any SegmentStorage, matchAdmin: MatchAdmin.Client<AdminTransport>,
                configuration: Configuration = .init(), logger: Logger = Logger(label: "roster.coordinator"),
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.catalog = catalog
        self.lake = lake
        self.store = store
        self.matchAdmin = matchAdmin
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: Background jobs

    /// Runs the scan and publish loops until cancelled or graceful shutdown.
    private let advertised = Mutex<String?>(nil)

    /// Sets the address this coordinator advertises as leader (once its
    /// listener is bound, when it listened on port 0).
    public func advertise(_ address: String) { advertised.withLock { $0 = address } }

    /// Whether this coordinator may write now: it has no rival, or it leads.
    public var isLeader: Bool { configuration.election == nil || catalog.isLeading }

    /// Runs a write call as the leader, or answers UNAVAILABLE naming the
    /// leader so that the caller moves there (`FailoverTransport`).
    func asLeader<T>(_ body: () async throws -> T) async throws -> T {
        guard isLeader else { throw standby(try? catalog.leader()) }
        do {
            return try await body()
        } catch let error as NotLeader {
            throw standby(error.leader)
        }
    }

    private func standby(_ leader: Leadership?) -> RPCError {
        RPCError(.unavailable, leader.map { "this coordinator is a standby; the leader is \($0.address)" }
            ?? "this coordinator is a standby and no leader is elected yet; try again shortly")
    }

    /// Campaigns every third of the lease; logs each change of role.
    private func electionLoop(_ election: Election) async {
        var leading = false
        var known = false // whether the role was logged yet
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let address = advertised.withLock { $0 } ?? election.address
                let leader = try catalog.campaign(holder: election.holder, address: address, lease: election.leaseSeconds, now: clock())
                let now = leader.holder == election.holder
                if now != leading || !known {
                    leading = now
                    known = true
                    if now {
                        logger.notice("leading", metadata: ["token": "\(leader.token)", "address": "\(address)"])
                        problem("leader", nil)
                        wake.yield()
                        work.notify()
                    } else {
                        logger.notice("standing by", metadata: ["leader": "\(leader.address)"])
                    }
                }
            } catch {
                if leading { logger.error("cannot renew the lead; standing by", metadata: ["error": "\(error)"]) }
                leading = false
                problem("leader", "cannot take part in the election: \(error)")
            }
            try? await Task.sleep(for: election.lease / 3)
        }
        if leading { try? catalog.resign(holder: election.holder) }
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            if let election = configuration.election {
                group.addTask { await self.electionLoop(election) }
            }
            group.addTask { await self.publishLoop() }
            // What is served is compared with the catalog: a tier node by
            // node (`tierLoop`), one match server by `reconcile`.
            if let tier = configuration.tier {
                group.addTask { await self.tierLoop(tier) }
            } else {
                group.addTask {
                    while !Task.isCancelled && !Task.isShuttingDownGracefully {
                        let started = ContinuousClock.now
                        await self.reconcile()
                        // At most 1% of a core: with 100,000 live lists one pass
                        // reads them all from the catalog and the match server.
                        try? await Task.sleep(for: max(self.configuration.reconcileInterval, (ContinuousClock.now - started) * 100))
                    }
                }
            }
            if let interval = configuration.scanInterval {
                group.addTask {
                    while !Task.isCancelled && !Task.isShuttingDownGracefully {
                        let started = ContinuousClock.now
                        if self.isLeader {
                            do { _ = try await self.scanLake(report: false) } catch { self.logger.warning("scan failed", metadata: ["error": "\(error)"]) }
                        }
                        try? await Task.sleep(for: IngestPolicy.scanPause(after: ContinuousClock.now - started, interval: interval))
                    }
                }
            }
            await withGracefulShutdownHandler {
                await group.next()
            } onGracefulShutdown: {
                self.wake.finish()
            }
            group.cancelAll()
        }
    }

    private func publishLoop() async {
        wake.yield()
        await withTaskGroup(of: Void.self) { group in
            // A ticker, so that failed publishes are retried without a wake-up.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.configuration.publishInterval)
                    self.wake.yield()
                }
            }
            for await _ in wakeups {
                if Task.isCancelled { break }
                await requeueSettled()
                await publishPending()
                await collectGarbage()
            }
            group.cancelAll()
        }
    }

    /// Queues the files that changed under an ingest once they have been
    /// quiet for the settle time; forgets those that vanished.
    public func requeueSettled() async {
        guard isLeader else { return }
        let paths = settling.withLock { $0 }
        for path in paths.sorted() {
            do {
                let object = try await lake.head(path)
                guard clock() - object.modified.timeIntervalSince1970 >= configuration.scanSettleTime else { continue }
                settling.withLock { _ = $0.remove(path) }
                guard try catalog.isNewest(object) else { continue }
                let submission = try catalog.submit(object, now: clock())
                if submission.queued {
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
    private func watchUntilSettled(_ path: String) {
        settling.withLock { _ = $0.insert(path) }
        wake.yield()
    }

    /// Makes every merged version live on the match server, oldest first.
    public func publishPending() async {
        guard isLeader else { return }
        // After the match server could not take versions (unreachable, or
        // at a limit), wait before asking again, doubling up to a minute:
        // thousands of pending versions must not be retried every tick.
        if let until = publishPause.withLock({ $0?.until }), ContinuousClock.now < until { return }
        let pending: [IngestCatalog.Publication]
        do { pending = try catalog.pendingPublications() } catch {
            logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        // Many versions per call: the match server records them with one
        // manifest append and one sync, the catalog marks them live in one
        // transaction. Each batch is checked against the lake just before.
        var start = 0
        while start < pending.count {
            let chunk = pending[start..<min(pending.count, start + Self.publishBatch)]
            start += chunk.count
            var ready: [IngestCatalog.Publication] = []
            for publication in chunk {
                // Only the object every block was read from goes live: a file
                // rewritten after its last block was read is not published.
                do {
                    let object = try await lake.head(publication.path)
                    guard object.etag == publication.etag else {
                        try catalog.markPublishFailed(file: publication.version, as: .superseded,
                                                      error: "the file changed after it was read; its new contents are queued once settled", now: clock())
                        watchUntilSettled(publication.path)
                        continue
                    }
                } catch LakeError.notFound {
                    try? catalog.markPublishFailed(file: publication.version, as: .superseded,
                                                   error: "the file disappeared from the lake before it went live", now: clock())
                    continue
                } catch {
                    logger.warning("cannot check the file before publishing", metadata: ["path": "\(publication.path)", "error": "\(error)"])
                    return
                }
                ready.append(publication)
            }
            guard await publish(ready) else {
                publishPause.withLock { pause in
                    let delay = min(.seconds(60), (pause?.delay ?? .milliseconds(500)) * 2)
                    pause = (ContinuousClock.now + delay, delay)
                }
                return
            }
            publishPause.withLock { $0 = nil }
        }
    }

    /// Set while publishing waits after a refusal: until when, and the last wait.
    private let publishPause = Mutex<(until: ContinuousClock.Instant, delay: Duration)?>(nil)

    /// Versions per `PublishMany` call.
    static var publishBatch: Int { 256 }

    /// Publishes `batch`; false if the match server cannot be reached (try later).
    private func publish(_ batch: [IngestCatalog.Publication]) async -> Bool {
        guard !batch.isEmpty else { return true }
        guard await makeDurable(batch) else { return false }
        if let tier = configuration.tier { return await publishToTier(batch, tier: tier) }
        let options = CallOptions(timeout: .seconds(60)).bearer(configuration.adminToken)
        let requests = batch.map { PublishRequest(advertiserID: $0.advertiserID, version: $0.version, segments: $0.segments) }
        let results: [PublishResult]
        do {
            results = try await matchAdmin.publishMany(PublishManyRequest(publications: requests), options: options).results
            problem("match", nil)
        } catch {
            // Unreachable or unauthorised: keep the versions and try again later.
            logger.warning("cannot publish yet", metadata: ["versions": "\(batch.count)", "error": "\(error)"])
            problem("match", "cannot publish to the match server: \(error)")
            return false
        }
        var live: [IngestCatalog.Publication] = []
        var later = false
        for (publication, result) in zip(batch, results) {
            switch RPCStatusCode(rawValue: UInt8(clamping: result.code)) {
            case .ok:
                live.append(publication)
            case .failedPrecondition, .invalidArgument:
                logger.error("match server refused a version", metadata: ["version": "\(publication.version)", "error": "\(result.message)"])
                try? catalog.markPublishFailed(file: publication.version, as: result.stale ? .superseded : .failed,
                                               error: "match server refused it: \(result.message)", now: clock())
            default:
                // Nothing wrong with the version: the server could not record
                // it or is at a limit (memory maps, say). It stays pending and
                // is tried again on a later tick; the rest wait with it.
                logger.warning("match server could not publish yet", metadata: ["version": "\(publication.version)", "error": "\(result.message)"])
                problem("match", "the match server cannot publish now: \(result.message)")
                later = true
            }
        }
        return recordLive(live) && !later
    }

    /// Marks `live` live in the catalog; false if it cannot be written.
    func recordLive(_ live: [IngestCatalog.Publication]) -> Bool {
        do {
            try catalog.markLive(files: live.map(\.version), now: clock())
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

    /// Compares the catalog's live versions with what the match server
    /// serves. A live version the server does not have (its manifest was
    /// lost) or found damaged (a segment failed its checksums at start or
    /// in a scrub) is rebuilt from its lake file as a new version, with no
    /// one touching the lake; until then its calls answer UNAVAILABLE and
    /// Status names it.
    public func reconcile() async {
        // A tier is compared node by node (`balanceTier`), not here.
        guard isLeader, configuration.tier == nil else { return }
        let live: [(advertiser: String, file: UInt64, path: String, etag: String)]
        do { live = try catalog.liveVersions() } catch {
            logger.error("cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        // Read after the catalog: a version marked live before this call is served by now.
        var served: [String: ServedList] = [:]
        do {
            // In pages, so that no answer outgrows a frame however many advertisers.
            var request = ListServedRequest()
            repeat {
                let response = try await matchAdmin.listServed(request, options: CallOptions(timeout: .seconds(30)).bearer(configuration.adminToken))
                for list in response.lists { served[list.advertiserID] = list }
                request.afterAdvertiserID = response.nextAfterAdvertiserID
            } while !request.afterAdvertiserID.isEmpty
        } catch {
            problem("match", "cannot reach the match server to compare what it serves: \(error)")
            return
        }
        // A deleted advertiser the match server still serves (it could not be
        // told when it was deleted, or a publish raced the deletion): told now.
        let liveAdvertisers = Set(live.map(\.advertiser))
        let extra = served.values.filter { $0.version != 0 && !liveAdvertisers.contains($0.advertiserID) }.map(\.advertiserID)
        if !extra.isEmpty, let deleted = try? catalog.deleted(among: extra) {
            for advertiser in deleted.sorted() {
                do {
                    _ = try await matchAdmin.unpublish(UnpublishRequest(advertiserID: advertiser),
                                                       options: CallOptions(timeout: .seconds(30)).bearer(configuration.adminToken))
                    problem("advertiser:\(advertiser)", nil)
                    logger.notice("stopped serving a deleted advertiser", metadata: ["advertiser": "\(advertiser)"])
                } catch {
                    logger.warning("cannot stop serving a deleted advertiser yet", metadata: ["advertiser": "\(advertiser)", "error": "\(error)"])
                }
            }
        }
        for entry in live {
            let server = served[entry.advertiser]
            if let server, server.version >= entry.file { continue }
            let reason = server.map { $0.damagedVersion == entry.file } == true
                ? "the match server found version \(entry.file) damaged (\(server!.damage))"
                : "the match server does not have version \(entry.file)"
            do {
                let object = try await lake.head(entry.path)
                guard object.etag == entry.etag else {
                    // The scan queues the newer file; nothing to rebuild.
                    problem("advertiser:\(entry.advertiser)", "\(entry.advertiser): \(reason); its file changed since, and the new one is queued by the scan")
                    continue
                }
                let submission = try catalog.rebuild(file: entry.file, from: object, reason: reason, now: clock())
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

    /// Deletes runs of live versions and everything of ended ones.
    public func collectGarbage() async {
        guard isLeader else { return }
        let items: [IngestCatalog.Collectable]
        do {
            items = try catalog.collectable(keepRetired: configuration.keepRetiredVersions)
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
                try catalog.markCollected(file: item.file, level: item.level)
            } catch {
                logger.warning("cannot collect", metadata: ["file": "\(item.file)", "error": "\(error)"])
            }
        }
    }

    /// Queues the newest file of each advertiser folder if it is new, and
    /// abandons versions whose file changed or vanished while in progress.
    public func scanLake(report: Bool = true) async throws -> [FileStatus] {
        for active in try catalog.activeFiles() {
            do {
                let object = try await lake.head(active.path)
                if object.etag != active.etag {
                    try catalog.abandon(file: active.id, error: "the file changed while it was being ingested", now: clock())
                    watchUntilSettled(active.path)
                }
            } catch LakeError.notFound {
                try catalog.abandon(file: active.id, error: "the file disappeared from the lake", now: clock())
            }
        }
        var newest: [String: LakeObject] = [:]
        var after: String?
        while true {
            let page = try await lake.list(prefix: "", after: after, limit: 1000)
            let now = clock()
            for object in page {
                guard let advertiser = object.advertiserID, Self.isListFile(object.path),
                      now - object.modified.timeIntervalSince1970 >= configuration.scanSettleTime else { continue }
                if let current = newest[advertiser], (current.modified, current.path) >= (object.modified, object.path) { continue }
                newest[advertiser] = object
            }
            guard page.count == 1000, let last = page.last else { break }
            after = last.path
        }
        var queued: [FileStatus] = []
        // A folder whose newest file is the one the last scan decided on
        // costs no catalog query: an idle lake is listed, not looked up.
        let decided = lastScan.withLock { $0 }
        var decisions: [String: String] = [:]
        defer { lastScan.withLock { $0.merge(decisions) { $1 } } }
        for object in newest.values.sorted(by: { $0.path < $1.path }) {
            let advertiser = object.advertiserID ?? ""
            let key = object.path + "\u{0}" + object.etag
            if decided[advertiser] == key { continue }
            scanLookups.add(1, ordering: .relaxed)
            if try catalog.isKnown(path: object.path, etag: object.etag) {
                decisions[advertiser] = key
                continue
            }
            if let problem = IngestPolicy.problem(withAdvertiserID: object.advertiserID ?? "") {
                try catalog.refuse(object, reason: problem, now: clock())
                logger.error("refused a file", metadata: ["path": "\(object.path)", "error": "\(problem)"])
                decisions[advertiser] = key
                continue
            }
            // Only a file newer than every file the advertiser was given
            // replaces its list: deleting the newest never revives an older one.
            guard try catalog.isNewest(object) else {
                decisions[advertiser] = key
                continue
            }
            let submission = try catalog.submit(object, now: clock())
            decisions[advertiser] = key
            if submission.queued {
                work.notify()
                logger.info("queued", metadata: ["path": "\(object.path)", "version": "\(submission.version)", "bytes": "\(object.size)"])
                if report { queued.append(contentsOf: try catalog.files(advertiser: submission.advertiserID, states: [], limit: 1, now: clock())) }
            }
        }
        return queued
    }

    /// Hidden files and the usual partial-download names are not lists:
    /// write under such a name, then rename into place.
    static func isListFile(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return !name.hasPrefix(".") && ![".tmp", ".part", ".partial", ".crdownload"].contains { name.hasSuffix($0) }
    }

    // MARK: RPCs

    /// Refuses a call without one of `callerTokens`, when there are any.
    /// Every Coordinator call needs a caller token, when tokens are set.
    public var interceptors: [any RPCInterceptor] {
        configuration.callerTokens.isEmpty ? [] : [BearerTokenCheck(allowed: configuration.callerTokens, role: "coordinator")]
    }

    public func submitFile(_ request: SubmitFileRequest, context: RPCContext) async throws -> SubmitFileResponse {
        try await asLeader {
            let object: LakeObject
            do throws(LakeError) {
                object = try await lake.head(request.path)
            } catch {
                switch error {
                case .notFound: throw RPCError(.notFound, "\(request.path): no such file in the lake")
                case .invalidPath: throw RPCError(.invalidArgument, "\(request.path): not a valid lake path (<advertiser-id>/<file>)")
                case .outsideLake: throw RPCError(.invalidArgument, error.description)
                default: throw RPCError(.unavailable, "cannot reach the lake: \(error)")
                }
            }
            guard let advertiser = object.advertiserID else {
                throw RPCError(.invalidArgument, "\(request.path): files go in an advertiser's folder: <advertiser-id>/<file>")
            }
            if let problem = IngestPolicy.problem(withAdvertiserID: advertiser) {
                throw RPCError(.invalidArgument, "\(request.path): \(problem)")
            }
            let submission = try catalog.submit(object, now: clock())
            if submission.queued {
                work.notify()
                logger.info("submitted", metadata: ["path": "\(object.path)", "version": "\(submission.version)", "bytes": "\(object.size)"])
            }
            var response = SubmitFileResponse()
            response.version = submission.version
            response.advertiserID = submission.advertiserID
            response.queued = submission.queued
            response.state = submission.state
            return response
        }
    }

    public func status(_ request: StatusRequest, context: RPCContext) async throws -> StatusResponse {
        try currentStatus(limit: request.limit == 0 ? 50 : Int(min(request.limit, 1_000)))
    }

    /// What `Status` answers, and the status page shows.
    public func currentStatus(limit: Int) throws -> StatusResponse {
        var response = try catalog.status(limit: limit, now: clock())
        response.problems = problemLines()
        if let tier = configuration.tier { response.nodes = try tierNodes(catalog.nodes(), tier: tier, now: clock()) }
        return response
    }

    /// The queue by priority, leases and workers, for the status page.
    public func operations(limit: Int) throws -> IngestCatalog.Operations {
        try catalog.operations(limit: limit, now: clock())
    }

    /// The files workers may lease from now, best first.
    public func queue(limit: Int) throws -> [IngestCatalog.Operations.Queued] {
        try catalog.queue(limit: limit, now: clock())
    }

    /// What needs attention, sorted by topic; the catalog's own state first.
    public func problemLines() -> [String] {
        var lines = catalog.writeProblem.map { [$0] } ?? []
        lines += problems.withLock { $0 }.sorted { $0.key < $1.key }.map(\.value)
        return lines
    }

    public func listFiles(_ request: ListFilesRequest, context: RPCContext) async throws -> ListFilesResponse {
        var response = ListFilesResponse()
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1_000))
        response.files = try catalog.files(advertiser: request.advertiserID, states: request.states,
                                           limit: limit, before: request.beforeVersion, now: clock())
        if response.files.count == limit, let last = response.files.last { response.nextBeforeVersion = last.version }
        return response
    }

    public func listAdvertisers(_ request: ListAdvertisersRequest, context: RPCContext) async throws -> ListAdvertisersResponse {
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1_000))
        var response = ListAdvertisersResponse()
        response.advertisers = try catalog.advertisers(after: request.afterAdvertiserID, limit: limit)
        if response.advertisers.count == limit, let last = response.advertisers.last { response.nextAfterAdvertiserID = last.advertiserID }
        return response
    }

    /// Serves a retired version again: the match server swaps it in (no
    /// re-ingest), then the catalog records it live and the version it
    /// replaced retired, both kept for another rollback.
    public func rollback(_ request: RollbackRequest, context: RPCContext) async throws -> RollbackResponse {
        try await asLeader {
            guard !request.advertiserID.isEmpty else { throw RPCError(.invalidArgument, "advertiser_id is empty") }
            let target: IngestCatalog.Publication, live: UInt64?
            do {
                (target, live) = try catalog.rollbackTarget(advertiser: request.advertiserID, version: request.version, keepRetired: configuration.keepRetiredVersions)
            } catch let error as IngestError {
                throw RPCError(.failedPrecondition, error.description)
            }
            if let tier = configuration.tier {
                // A tier follows the catalog: it is changed first, and the
                // balance places the restored version on its owners, which
                // swap it in over the newer one (`Publication.restored`).
                guard try !catalog.hasVersionPublishing(advertiser: target.advertiserID) else {
                    throw RPCError(.failedPrecondition, "a newer version of '\(target.advertiserID)' is being published to the tier: roll back once it is live")
                }
                try catalog.markRolledBack(advertiser: target.advertiserID, to: target.version, now: clock())
                await balanceTier(tier)
                logger.notice("rolled back", metadata: ["advertiser": "\(target.advertiserID)", "version": "\(target.version)", "previous": "\(live ?? 0)"])
                return RollbackResponse(version: target.version, previousVersion: live ?? 0)
            }
            var publish = PublishRequest(advertiserID: target.advertiserID, version: target.version, segments: target.segments)
            publish.rollback = true
            let response: PublishResponse
            do {
                response = try await matchAdmin.publish(publish, options: CallOptions(timeout: .seconds(60)).bearer(configuration.adminToken))
            } catch let error as RPCError {
                throw RPCError(error.code, "the match server did not take version \(target.version) of '\(target.advertiserID)': \(error.message)")
            }
            try catalog.markRolledBack(advertiser: target.advertiserID, to: target.version, now: clock())
            logger.notice("rolled back", metadata: ["advertiser": "\(target.advertiserID)", "version": "\(target.version)",
                                                    "previous": "\(live ?? response.previousVersion)"])
            return RollbackResponse(version: target.version, previousVersion: live ?? response.previousVersion)
        }
    }

    /// Deletes an advertiser: the catalog first (so nothing republishes it
    /// and garbage collection removes its data), then the match server stops
    /// serving it. If the match server cannot be told now, `reconcile` tells
    /// it later: it unpublishes what a deleted advertiser still has served.
    public func deleteAdvertiser(_ request: DeleteAdvertiserRequest, context: RPCContext) async throws -> DeleteAdvertiserResponse {
        try await asLeader {
            guard !request.advertiserID.isEmpty else { throw RPCError(.invalidArgument, "advertiser_id is empty") }
            let deleted: (live: UInt64?, versions: Int)
            do {
                deleted = try catalog.deleteAdvertiser(request.advertiserID, now: clock())
            } catch IngestError.notFound(let message) {
                throw RPCError(.notFound, message)
            }
            logger.notice("deleted an advertiser", metadata: ["advertiser": "\(request.advertiserID)", "live": "\(deleted.live ?? 0)"])
            if let tier = configuration.tier {
                // Every healthy node is told (one that does not serve it answers 0);
                // a node down now is told when it comes back and is checked.
                var failures: [String] = []
                for node in try healthyNodes(tier) {
                    do {
                        _ = try await tier.connect(node.address).unpublish(UnpublishRequest(advertiserID: request.advertiserID), options: adminOptions)
                    } catch {
                        failures.append("\(node.id): \(error)")
                    }
                }
                guard failures.isEmpty else {
                    throw RPCError(.unavailable, "'\(request.advertiserID)' is deleted from the catalog, but some match servers could not be told yet: \(failures.joined(separator: "; "))")
                }
                return DeleteAdvertiserResponse(removedVersion: deleted.live ?? 0, versions: UInt32(deleted.versions))
            }
            do {
                _ = try await matchAdmin.unpublish(UnpublishRequest(advertiserID: request.advertiserID),
                                                   options: CallOptions(timeout: .seconds(30)).bearer(configuration.adminToken))
            } catch {
                problem("advertiser:\(request.advertiserID)", "\(request.advertiserID) was deleted; the match server still serves it until it can be told: \(error)")
                throw RPCError(.unavailable, "'\(request.advertiserID)' is deleted from the catalog, but the match server could not be told to stop serving it (it will be told when it can be reached): \(error)")
            }
            return DeleteAdvertiserResponse(removedVersion: deleted.live ?? 0, versions: UInt32(deleted.versions))
        }
    }

    public func scan(_ request: ScanRequest, context: RPCContext) async throws -> ScanResponse {
        try await asLeader {
            var response = ScanResponse()
            do {
                response.queued = try await scanLake()
            } catch let error as LakeError {
                throw RPCError(.unavailable, "cannot scan the lake: \(error)")
            }
            return response
        }
    }

    public func setWeight(_ request: SetWeightRequest, context: RPCContext) async throws -> SetWeightResponse {
        try await asLeader {
            guard !request.advertiserID.isEmpty else { throw RPCError(.invalidArgument, "advertiser_id is empty") }
            do {
                try catalog.setWeight(advertiser: request.advertiserID, weight: request.weight)
            } catch let error as IngestError {
                throw RPCError(.invalidArgument, error.description)
            }
            return SetWeightResponse()
        }
    }

    public func leaseTasks(_ request: LeaseTasksRequest, context: RPCContext) async throws -> LeaseTasksResponse {
        try await asLeader {
            guard !request.workerID.isEmpty else { throw RPCError(.invalidArgument, "worker_id is empty") }
            var response = LeaseTasksResponse()
            let most = Int(min(max(request.max, 1), 64))
            response.tasks = try catalog.lease(worker: request.workerID, max: most, now: clock())
            // Long poll: wait for work to appear rather than have idle workers poll.
            let deadline = ContinuousClock.now + .milliseconds(Int(min(request.waitMs, 10_000)))
            while response.tasks.isEmpty && ContinuousClock.now < deadline && !Task.isCancelled {
                // Re-check at least once a second: leases expire without a signal.
                await work.wait(timeout: min(.seconds(1), deadline - ContinuousClock.now))
                response.tasks = try catalog.lease(worker: request.workerID, max: most, now: clock())
            }
            response.leaseMs = UInt32(catalog.policy.leaseDuration * 1000)
            return response
        }
    }

    public func heartbeat(_ request: HeartbeatRequest, context: RPCContext) async throws -> HeartbeatResponse {
        try await asLeader {
            guard request.taskIDs.count == request.leaseTokens.count else {
                throw RPCError(.invalidArgument, "task_ids and lease_tokens differ in length")
            }
            var response = HeartbeatResponse()
            response.lostTaskIDs = try catalog.heartbeat(worker: request.workerID, tasks: Array(zip(request.taskIDs, request.leaseTokens)),
                                                         now: clock())
            response.leaseMs = UInt32(catalog.policy.leaseDuration * 1000)
            return response
        }
    }

    public func completeTask(_ request: CompleteTaskRequest, context: RPCContext) async throws -> CompleteTaskResponse {
        try await asLeader {
            let progress: IngestCatalog.Progress?
            do {
                progress = try catalog.complete(request, now: clock())
            } catch let error as IngestError {
                throw RPCError(.invalidArgument, error.description)
            }
            if progress == nil {
                logger.info("ignored a report for a lease no longer held", metadata: ["task": "\(request.taskID)", "worker": "\(request.workerID)"])
            }
            if progress == .readyToPublish || progress == .rejected { wake.yield() }
            if progress == .merging { work.notify() }
            var response = CompleteTaskResponse()
            response.accepted = progress != nil
            return response
        }
    }

    public func failTask(_ request: FailTaskRequest, context: RPCContext) async throws -> FailTaskResponse {
        try await asLeader {
            let outcome = try catalog.fail(request, now: clock())
            var response = FailTaskResponse()
            response.accepted = outcome != .ignored
            switch outcome {
            case .fileChanged(let path):
                logger.warning("file changed during ingest; it is queued again once it has settled", metadata: ["path": "\(path)"])
                watchUntilSettled(path)
            case .failed:
                logger.error("version failed", metadata: ["task": "\(request.taskID)", "error": "\(request.error)"])
                wake.yield()
            case .retrying:
                work.notify()
            case .ignored:
                break
            }
            return response
        }
    }
}
