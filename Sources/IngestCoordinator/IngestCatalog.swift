import DataLake
import HashParsing
import Foundation
import Metrics
import RosterAPI
import SQLDatabase
import SQLite
import Synchronization
import RosterRPC

/// The coordinator's durable state: every file version, its tasks, their
/// leases and attempts, in one SQLite database (or PostgreSQL).
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
///
/// Concurrency, as GRDB arranges it: the catalog's methods block (on the
/// disk, or on a PostgreSQL round trip), so async code never calls them on
/// Swift's cooperative pool but through `perform`, which runs them on the
/// catalog's own threads. Writes go through one writer connection, one at a
/// time (the catalog's logic reads, decides and writes, and assumes it);
/// reads go through reader connections of their own when the catalog has
/// them, so a long read (a status page over a large catalog) never holds up
/// a lease or a heartbeat, nor a write the other reads.
public final class IngestCatalog: @unchecked Sendable {
    // The writer connection is used only under `lock`, each reader only
    // under its own (checked by hand: the engines are not Sendable, and
    // every access below goes through read/write).
    let database: any SQLDatabase
    let lock = NSLock()
    /// Connections for reads, each with its lock; none: reads share the writer's.
    private let readers: [(database: any SQLDatabase, lock: NSLock)]
    private let nextReader = Atomic<Int>(0)
    /// The threads async callers' catalog work runs on (`perform`).
    private let threads = CatalogThreads()
    public let policy: IngestPolicy

    /// A catalog in the SQLite file at `path` (created if missing): the
    /// embedded default, with `readers` reader connections beside the
    /// writer (WAL lets them read while it writes).
    public convenience init(path: String, policy: IngestPolicy = IngestPolicy(), readers: Int = 2) throws {
        let writer = try Database(path: path)
        try writer.migrate(CatalogSchema.migrations(for: writer.engine))
        try self.init(database: writer, readers: (0..<max(0, readers)).map { _ in try Database(path: path) }, policy: policy)
    }

    /// A catalog in `database` (SQLite, or PostgreSQL for coordinators on
    /// several hosts), migrated to this program's schema first; `readers`
    /// are more connections to the same database, for reads.
    public init(database: any SQLDatabase, readers: [any SQLDatabase] = [], policy: IngestPolicy = IngestPolicy()) throws {
        try database.migrate(CatalogSchema.migrations(for: database.engine))
        self.database = database
        self.readers = readers.map { ($0, NSLock()) }
        self.policy = policy
    }

    /// Runs `body`, which calls this catalog's blocking methods, on one of
    /// the catalog's own threads, and returns its result: what async code
    /// calls, so that no thread of Swift's cooperative pool waits on the
    /// disk or the network (on 2 cores, two such waits would stall every
    /// task in the process).
    public func perform<T: Sendable>(_ body: @escaping @Sendable (IngestCatalog) throws -> T) async throws -> T {
        try await threads.run { try body(self) }
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
    /// status shows it, since a person rarely reads the log first. Apart
    /// from `lock`, so that reading it never waits for a write.
    private let lastWriteFailureState = Mutex<String?>(nil)
    var lastWriteFailure: String? {
        get { lastWriteFailureState.withLock { $0 } }
        set { lastWriteFailureState.withLock { $0 = newValue } }
    }

    /// While this process leads: its name and fencing token, checked at the
    /// start of every write (`IngestCatalog+Leadership`). Nil for a catalog
    /// with one coordinator (no election), which writes unchecked. Changed
    /// only under `lock`; kept apart from it so that `isLeading`, asked on
    /// every call, never waits for a write in progress.
    private let fenceState = Mutex<(holder: String, token: Int64)?>(nil)
    var fence: (holder: String, token: Int64)? {
        get { fenceState.withLock { $0 } }
        set { fenceState.withLock { $0 = newValue } }
    }
    /// Set by the first campaign: from then on a write without a fence (a
    /// standby's, or a deposed leader's) is refused, never made unchecked.
    var elected = false

    /// Set when no lease could be renewed for a while through no fault of
    /// the workers — this process just became the leader (there was none
    /// for a moment), or the catalog could not be written — and cleared by
    /// the next lease, which first gives every held lease a full length
    /// from then: leases do not expire because the coordinator could not
    /// take heartbeats. (A worker that died meanwhile costs one more
    /// lease.) Guarded by `lock`.
    /// True at first too: a coordinator (re)started on a catalog took no
    /// heartbeats while it was down.
    var leaseGraceDue = true

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
            leaseGraceDue = true
            throw IngestError.catalog(error, location: database.location)
        }
    }

    /// Why the catalog cannot be written now, or nil.
    public var writeProblem: String? { lastWriteFailure }

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

    /// Runs `body` on a reader connection: a free one if any is, else the
    /// next in turn; the writer's when the catalog has no readers.
    func read<T>(_ body: (any SQLDatabase) throws -> T) throws -> T {
        readCounter.increment()
        let lane: (database: any SQLDatabase, lock: NSLock)
        if readers.isEmpty {
            lane = (database, lock)
            lane.lock.lock()
        } else if let free = readers.first(where: { $0.lock.try() }) {
            lane = free
        } else {
            lane = readers[nextReader.add(1, ordering: .relaxed).oldValue % readers.count]
            lane.lock.lock()
        }
        defer { lane.lock.unlock() }
        do {
            return try body(lane.database)
        } catch let error as any SQLEngineError {
            throw IngestError.catalog(error, location: database.location)
        }
    }

    /// Runs a statement that sleeps `seconds` on a reader connection (a
    /// slow query, for the test that shows one holds up nothing else).
    @_spi(Testing) public func sleepInRead(seconds: Double) throws {
        try read { db in
            switch db.engine {
            case .postgres: try db.run("SELECT pg_sleep(?)", seconds)
            case .sqlite: Thread.sleep(forTimeInterval: seconds)
            }
        }
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

/// What the catalog refuses, or cannot do. Each case answers one status
/// (`rpcError`), wherever it is thrown: the coordinator's handlers let it
/// through rather than choosing a code at each call site. docs/INGEST.md
/// lists them.
public enum IngestError: Error, Sendable, Equatable, CustomStringConvertible, RPCErrorConvertible {
    /// INVALID_ARGUMENT: a lake path that is not `<advertiser-id>/<file>`.
    case invalidPath(String)
    /// INVALID_ARGUMENT: a request the catalog cannot take as it is.
    case invalidArgument(String)
    /// FAILED_PRECONDITION: the catalog is not in a state that allows it (a
    /// rollback to a version whose segments are gone).
    case failedPrecondition(String)
    /// NOT_FOUND: no such advertiser or version.
    case notFound(String)
    /// UNAVAILABLE: the catalog's database cannot be reached or written now
    /// (PostgreSQL down, a full disk, a lock held too long): try again.
    case unavailable(String)
    /// INTERNAL: the database refused a statement for a reason that is a
    /// fault of this program, not of the moment (its detail is logged, not
    /// sent).
    case database(String)

    public var description: String {
        switch self {
        case .invalidPath(let path): "'\(path)' is not <advertiser-id>/<file> in the lake"
        case .invalidArgument(let message), .failedPrecondition(let message), .notFound(let message), .unavailable(let message),
             .database(let message): message
        }
    }

    public var rpcError: RPCError {
        switch self {
        case .invalidPath, .invalidArgument: RPCError(.invalidArgument, description)
        case .failedPrecondition: RPCError(.failedPrecondition, description)
        case .notFound: RPCError(.notFound, description)
        case .unavailable: RPCError(.unavailable, description)
        case .database: RPCError(.internal, "the catalog failed a statement; the coordinator's log has the detail")
        }
    }

    /// An engine's error as the catalog reports it: UNAVAILABLE when the
    /// database could not be reached or could not take the write now, and
    /// INTERNAL for anything else (a statement it refused).
    static func catalog(_ error: any SQLEngineError, location: String) -> IngestError {
        let transient: Bool
        switch error {
        case let error as SQLError where error.engine == .postgres:
            // A code that is not a server's SQLSTATE (five characters) is
            // the client's own: a refused or lost connection. SQLSTATE
            // classes: 08 connection, 53 resources, 57 operator intervention
            // and statement timeout, 40 serialization; 55P03 lock not available.
            let sqlState = error.code.count == 5 && error.code.allSatisfy { $0.isASCII && ($0.isNumber || $0.isUppercase) }
            transient = !sqlState || ["08", "53", "57", "40"].contains { error.code.hasPrefix($0) } || error.code == "55P03"
        case let error as SQLiteError:
            // BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN (primary codes).
            transient = [5, 6, 7, 8, 10, 11, 13, 14].contains(error.code & 0xFF)
        default:
            transient = true
        }
        return transient ? .unavailable("the catalog \(location) cannot be reached: \(error.message)") : .database("\(location): \(error.message)")
    }
}

/// Serial queues that run blocking catalog work for async callers: each
/// call goes to the queue with the least work waiting, and a queue of its
/// own has a thread of its own while it is busy, so a slow statement on
/// one holds up only what was queued behind it there.
final class CatalogThreads: Sendable {
    private let queues: [DispatchQueue]
    private let waiting: Mutex<[Int]>

    init(count: Int = 8) {
        queues = (0..<count).map { DispatchQueue(label: "roster.catalog.\($0)") }
        waiting = Mutex(Array(repeating: 0, count: count))
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let index = waiting.withLock { counts -> Int in
            let i = counts.indices.min { counts[$0] < counts[$1] } ?? 0
            counts[i] += 1
            return i
        }
        return try await withCheckedThrowingContinuation { continuation in
            queues[index].async {
                let result = Result { try body() }
                self.waiting.withLock { $0[index] -= 1 }
                continuation.resume(with: result)
            }
        }
    }
}
