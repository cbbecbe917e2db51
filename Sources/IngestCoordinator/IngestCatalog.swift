import DataLake
import HashParsing
import Foundation
import Metrics
import RosterAPI
import SQLDatabase
import SQLite

/// The coordinator's durable state: every file version, its tasks, their
/// leases and attempts, in one SQLite database.
///
/// Every operation is one transaction, so the catalog moves from one
/// consistent state to the next and a process killed at any point restarts
/// from the last committed one. Time is passed in (seconds since 1970), so
/// leases survive restarts and tests control the clock.
///
/// A file version's row id *is* its list version: the number workers stamp
/// into runs and segments and Match answers with. Public types call it
/// `version`; inside the catalog, where every row is a file, parameters say
/// `file:` and the SQL column stays `file_id`.
public final class IngestCatalog: @unchecked Sendable {
    // The connection is used only under `lock` (checked by hand: Database is
    // not Sendable, and every access below goes through read/write).
    let database: any SQLDatabase
    let lock = NSLock()
    public let policy: IngestPolicy

    /// A catalog in the SQLite file at `path` (created if missing): the
    /// embedded default.
    public convenience init(path: String, policy: IngestPolicy = IngestPolicy()) throws {
        try self.init(database: try Database(path: path), policy: policy)
    }

    /// A catalog in `database` (SQLite, or PostgreSQL for coordinators on
    /// several hosts), migrated to this program's schema first.
    public init(database: any SQLDatabase, policy: IngestPolicy = IngestPolicy()) throws {
        try database.migrate(CatalogSchema.migrations(for: database.engine))
        self.database = database
        self.policy = policy
    }

    /// Files with tasks to lease, best first, as ranked at `at`. Ranking
    /// reads every file in flight, so it is done at most once a
    /// `rankingLifetime` and kept: each lease takes from the front, and a
    /// file with nothing left to lease drops out. Whenever a task becomes
    /// leasable (a submission, merges created, a retry, an expired lease, a
    /// weight change) the ranking is dropped and made again at the next
    /// lease, so new work is seen at once; priorities only age within the
    /// lifetime, which is small against their 120-s scale. Guarded by `lock`.
    var ranking: (files: ArraySlice<Ranked>, at: Double, until: Double)?

    /// Ranking time is kept under a twentieth of the time a ranking lives:
    /// with tens of thousands of files in flight one takes tens of
    /// milliseconds, and it then lives longer than a second (priorities age
    /// on a scale of minutes, so the order barely moves).
    var lastRankingSeconds = 0.0

    /// How many times the ranking was made (for tests that check leases
    /// stay cheap however many files are queued).
    var rankings = 0

    /// Why the last write failed (a full disk, say), until one succeeds:
    /// status shows it, since a person rarely reads the log first.
    var lastWriteFailure: String?

    /// While this process leads: its name and fencing token, checked at the
    /// start of every write (`IngestCatalog+Leadership`). Nil for a catalog
    /// with one coordinator (no election), which writes unchecked.
    var fence: (holder: String, token: Int64)?
    /// Set by the first campaign: from then on a write without a fence (a
    /// standby's, or a deposed leader's) is refused, never made unchecked.
    var elected = false

    /// What an ingest costs the database (docs/INGEST.md gives the count
    /// per block): `roster_catalog_transactions_total`, by kind.
    private lazy var writeCounter = Counter(label: "roster_catalog_transactions_total", dimensions: [("kind", "write")])
    private lazy var readCounter = Counter(label: "roster_catalog_transactions_total", dimensions: [("kind", "read")])
    private lazy var writeTimer = Timer(label: "roster_catalog_transaction_duration_seconds", dimensions: [("kind", "write")],
                                        preferredDisplayUnit: .seconds)

    @discardableResult
    func write<T>(_ body: (any SQLDatabase) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        writeCounter.increment()
        let started = ContinuousClock.now
        defer { writeTimer.record(duration: ContinuousClock.now - started) }
        do {
            let result = try database.transaction { () throws -> T in
                if elected { try checkFence(fence) }
                return try body(database)
            }
            lastWriteFailure = nil
            return result
        } catch let error as NotLeader {
            fence = nil
            throw error
        } catch let error as any SQLEngineError {
            lastWriteFailure = "the catalog \(database.location) cannot be written: \(error.message)"
            throw error
        }
    }

    /// Why the catalog cannot be written now, or nil.
    public var writeProblem: String? {
        lock.withLock { lastWriteFailure }
    }

    /// Runs `sql` on the catalog's own connection (tests use it to fill the
    /// catalog's disk with `PRAGMA max_page_count`).
    @_spi(Testing) public func execute(_ sql: String) throws {
        try lock.withLock { try (database as! Database).execute(sql) }
    }

    /// Applies a life-cycle event to `file` (`FileLifecycle`): its state
    /// changes only if it is in one of the event's source states, with
    /// `also` (more `column = ?` assignments, bound to `values`). Returns
    /// whether it changed.
    @discardableResult
    func move(_ db: any SQLDatabase, file: UInt64, on event: FileLifecycle.Event, also: String? = nil,
              _ values: SQLBindable...) throws -> Bool {
        let set = "state = \(FileLifecycle.target(of: event).sql)" + (also.map { ", " + $0 } ?? "")
        return try db.run("UPDATE files SET \(set) WHERE id = ? AND state IN \(FileState.sqlList(FileLifecycle.sources(of: event)))",
                          arguments: values + [file]) > 0
    }

    func read<T>(_ body: (any SQLDatabase) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        readCounter.increment()
        return try body(database)
    }

    // Facets: IngestCatalog+Submission, +Leasing, +Reports, +Publishing, +Status.

    static func encodeCounts(_ counts: [String: UInt64]) -> String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func decodeCounts(_ text: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2, let n = UInt64(kv[1]) { out[String(kv[0]), default: 0] += n }
        }
        return out
    }
}

public enum IngestError: Error, Sendable, CustomStringConvertible {
    case invalidPath(String)
    case invalidArgument(String)
    /// The catalog is not in a state that allows it (a rollback to a version whose segments are gone).
    case failedPrecondition(String)
    /// No such advertiser or version.
    case notFound(String)

    public var description: String {
        switch self {
        case .invalidPath(let path): "'\(path)' is not <advertiser-id>/<file> in the lake"
        case .invalidArgument(let message), .failedPrecondition(let message), .notFound(let message): message
        }
    }
}
