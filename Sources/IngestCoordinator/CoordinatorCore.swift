import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC
import SegmentStore
import Synchronization

/// How a coordinator runs: its loops' pace, leadership, what it keeps.
/// Every duration is a `Duration`.
public struct CoordinatorConfiguration: Sendable {
    /// How often to look for new and changed files in the lake; nil: only on `Scan` and `SubmitFile`.
    public var scanInterval: Duration?
    /// How often to retry publishing and collecting when nothing wakes the loop earlier.
    public var publishInterval: Duration
    /// Files modified more recently than this are left alone until they
    /// have been quiet this long: a file being copied into a folder, or
    /// rewritten in place, is not ingested half-written. This holds for
    /// scans and for a file that changed during its ingest. (`SubmitFile`
    /// does not wait: the caller says the file is complete.)
    public var scanSettleTime: Duration
    /// How often to compare what the match servers serve with the catalog,
    /// rebuilding what they lost or found damaged.
    public var reconcileInterval: Duration
    /// Earlier (retired) versions of each advertiser whose segments are
    /// kept besides the live one's, ready for `Rollback`: the newest ones.
    public var keepRetiredVersions: Int = 0
    /// Coordinators sharing one catalog elect a leader (`IngestCatalog+Leadership`):
    /// this one's name, the address it advertises, and the lease. Nil:
    /// the only coordinator of its catalog, always leading.
    public var election: Election?
    /// Who may call what (`CoordinatorAccess`).
    public var access: CoordinatorAccess
    /// How long a `Scan` call waits for its scan before it answers with the
    /// progress so far (the scan then finishes in the background): under
    /// the CLI's default deadline of ten seconds.
    public var scanAnswerWithin: Duration = .seconds(8)

    public init(scanInterval: Duration? = .seconds(10), publishInterval: Duration = .milliseconds(500),
                scanSettleTime: Duration = .seconds(1), reconcileInterval: Duration = .seconds(10),
                access: CoordinatorAccess = .open) {
        self.scanInterval = scanInterval
        self.publishInterval = publishInterval
        self.scanSettleTime = scanSettleTime
        self.reconcileInterval = reconcileInterval
        self.access = access
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
    }
}

/// The coordinator's one core: it owns the catalog (reached only through
/// `db`, off the cooperative pool), the lake, the segment store and the
/// publisher, and what a process keeps in memory besides — the problems it
/// reports, the files waiting to settle, the signals that wake leases and
/// publishing. The three handlers (`IngestAdminHandler`,
/// `TaskQueueHandler`, `TierHandler`) and the loops (`CoordinatorLoops`)
/// are thin layers over it.
///
/// All durable state is in the `IngestCatalog`: killed at any moment, a new
/// process on the same catalog carries on.
public final class CoordinatorCore: Sendable {
    public let catalog: IngestCatalog
    let lake: any DataLake
    let store: any SegmentStorage
    let publisher: any Publisher
    public let configuration: CoordinatorConfiguration
    let logger: Logger
    let clock: @Sendable () -> Double
    /// Wakes long-polling `LeaseTasks` calls.
    let work = WorkSignal()
    /// Wakes the publish loop.
    let wake: AsyncStream<Void>.Continuation
    let wakeups: AsyncStream<Void>
    /// Paths whose file changed under an ingest: queued again once they
    /// have settled (checked on every publish-loop tick).
    let settling = Mutex<Set<String>>([])
    /// Per advertiser folder, the newest file (path and etag) the last scan
    /// decided on (queued, known, refused or older than what it was given).
    let lastScan = Mutex<[String: String]>([:])
    /// Catalog lookups made by scans, for tests that check an unchanged
    /// lake costs none.
    let scanLookups = Atomic<Int>(0)
    /// What needs a person's attention now, by topic (`match`, `advertiser:<id>`), for Status.
    private let problems = Mutex<[String: String]>([:])
    /// The address this coordinator advertises as leader, once known.
    private let advertised = Mutex<String?>(nil)
    /// The scan a `Scan` call started or joined, while it runs.
    let runningScan = Mutex<Task<[FileStatus], any Error>?>(nil)
    /// How far the latest scan has got.
    let scanProgress = Mutex(ScanProgress())
    /// The last Status read from the catalog, and when: answered from memory
    /// while the catalog cannot be reached.
    let lastStatus = Mutex<(status: StatusResponse, at: Double)?>(nil)
    /// Set while publishing waits after a refusal: until when, and the last wait.
    let publishPause = Mutex<(until: ContinuousClock.Instant, delay: Duration)?>(nil)

    public init(catalog: IngestCatalog, lake: any DataLake, store: any SegmentStorage, publisher: any Publisher,
                configuration: CoordinatorConfiguration = .init(), logger: Logger = Logger(label: "roster.coordinator"),
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.catalog = catalog
        self.lake = lake
        self.store = store
        self.publisher = publisher
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Runs `body` against the catalog on the catalog's own threads.
    func db<T: Sendable>(_ body: @escaping @Sendable (IngestCatalog) throws -> T) async throws -> T {
        try await catalog.perform(body)
    }

    // MARK: Problems

    func problem(_ topic: String, _ message: String?) {
        problems.withLock { $0[topic] = message }
    }

    /// What needs attention, sorted by topic; the catalog's own state first.
    public func problemLines() -> [String] {
        var lines = catalog.writeProblem.map { [$0] } ?? []
        lines += problems.withLock { $0 }.sorted { $0.key < $1.key }.map(\.value)
        return lines
    }

    // MARK: Leadership

    /// Sets the address this coordinator advertises as leader (once its
    /// listener is bound, when it listened on port 0).
    public func advertise(_ address: String) { advertised.withLock { $0 = address } }

    var advertisedAddress: String? { advertised.withLock { $0 } }

    /// Whether this coordinator may write now: it has no rival, or it leads.
    public var isLeader: Bool { configuration.election == nil || catalog.isLeading }

    /// Runs a write call as the leader, or answers UNAVAILABLE naming the
    /// leader so that the caller moves there (`FailoverTransport`).
    func asLeader<T>(_ body: () async throws -> T) async throws -> T {
        guard isLeader else { throw standby(try? await db { try $0.leader() }) }
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

    // MARK: Status

    /// What `Status` answers, and the status page shows: the catalog's
    /// summary, the problems, and a tier's nodes.
    ///
    /// While the catalog cannot be reached (PostgreSQL down, say), Status
    /// still answers: the last summary it read, from memory, with the
    /// outage first among the problems — an operator's first question then
    /// gets an answer, not an error.
    public func currentStatus(limit: Int) async throws -> StatusResponse {
        let now = clock()
        let tier = publisher.tier
        var response: StatusResponse
        do {
            response = try await db { catalog in
                var response = try catalog.status(limit: limit, now: now)
                if let tier { response.nodes = tier.describe(try catalog.nodes(), counts: try catalog.liveHoldingCounts(), now: now) }
                return response
            }
            lastStatus.withLock { $0 = (response, now) }
            response.problems = problemLines() + response.problems
        } catch IngestError.unavailable(let reason) {
            let last = lastStatus.withLock { $0 }
            response = last?.status ?? StatusResponse()
            let age = last.map { String(format: "; figures below as read %.0f s ago", max(0, now - $0.at)) } ?? ""
            response.problems = ["\(reason)\(age)"] + problemLines().filter { $0 != catalog.writeProblem } + response.problems
        }
        return response
    }

    /// The queue by priority, leases and workers, for the status page.
    public func operations(limit: Int) async throws -> IngestCatalog.Operations {
        let now = clock()
        return try await db { try $0.operations(limit: limit, now: now) }
    }

    /// The files workers may lease from now, best first.
    public func queue(limit: Int) async throws -> [IngestCatalog.Operations.Queued] {
        let now = clock()
        return try await db { try $0.queue(limit: limit, now: now) }
    }

    @_spi(Testing) public var scanLookupCount: Int { scanLookups.load(ordering: .relaxed) }
}
