import DataLake
import HashParsing
import Foundation
import RosterAPI
import SQLite

/// The coordinator's durable state: every file version, its tasks, their
/// leases and attempts, in one SQLite database.
///
/// Every operation is one transaction, so the catalog moves from one
/// consistent state to the next and a process killed at any point restarts
/// from the last committed one. Time is passed in (seconds since 1970), so
/// leases survive restarts and tests control the clock.
public final class IngestCatalog: @unchecked Sendable {
    // The connection is used only under `lock` (checked by hand: Database is
    // not Sendable, and every access below goes through read/write).
    private let database: Database
    private let lock = NSLock()
    public let policy: IngestPolicy

    public init(path: String, policy: IngestPolicy = IngestPolicy()) throws {
        let database = try Database(path: path)
        try database.migrate(CatalogSchema.migrations)
        self.database = database
        self.policy = policy
    }

    /// Why the last write failed (a full disk, say), until one succeeds:
    /// status shows it, since a person rarely reads the log first.
    private var lastWriteFailure: String?

    @discardableResult
    private func write<T>(_ body: (Database) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        do {
            let result = try database.transaction { try body(database) }
            lastWriteFailure = nil
            return result
        } catch let error as SQLiteError {
            lastWriteFailure = "the catalog \(database.path) cannot be written: \(error.message)"
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
        try lock.withLock { try database.execute(sql) }
    }

    private func read<T>(_ body: (Database) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(database)
    }

    // MARK: Submission

    public struct Submission: Sendable {
        public var fileID: UInt64
        public var advertiserID: String
        public var queued: Bool
        public var state: FileState
    }

    /// Records `object` as its advertiser's next list version, split into
    /// parse tasks, unless the same path and etag is already queued, in
    /// progress or live. Older unfinished versions of the advertiser are
    /// superseded: a new file replaces the list.
    public func submit(_ object: LakeObject, now: Double) throws -> Submission {
        try submit(object, now: now, rebuilding: nil)
    }

    /// Queues `object` again as a new version of its advertiser, although
    /// the same file is live: the match server lost version `file` or found
    /// it damaged. `file` is marked failed with `reason`; the advertiser is
    /// served again when the new version goes live.
    public func rebuild(file: UInt64, from object: LakeObject, reason: String, now: Double) throws -> Submission {
        try submit(object, now: now, rebuilding: (file, reason))
    }

    private func submit(_ object: LakeObject, now: Double, rebuilding: (file: UInt64, reason: String)?) throws -> Submission {
        guard let advertiser = object.advertiserID else {
            throw IngestError.invalidPath(object.path)
        }
        if let problem = IngestPolicy.problem(withAdvertiserID: advertiser) { throw IngestError.invalidArgument(problem) }
        return try write { db in
            if let (file, reason) = rebuilding {
                try db.run("UPDATE files SET state = ?, error = ?, ended_at = ? WHERE id = ? AND state = ?",
                           Int(FileState.failed.rawValue), reason + "; rebuilt from its file as a new version", now, file,
                           Int(FileState.live.rawValue))
            }
            let active: [FileState] = [.queued, .parsing, .merging, .publishing, .live]
            let existing = try db.rows(
                "SELECT id, state FROM files WHERE path = ? AND etag = ? ORDER BY id DESC LIMIT 1", object.path, object.etag
            ) { (UInt64($0.int(0)), FileState(rawValue: Int32($0.int(1)))) }.first
            if let existing, active.contains(existing.1) {
                return Submission(fileID: existing.0, advertiserID: advertiser, queued: false, state: existing.1)
            }
            try db.run("INSERT OR IGNORE INTO advertisers(id) VALUES (?)", advertiser)
            // Unfinished older versions are replaced by this one.
            let older = try db.rows(
                "SELECT id FROM files WHERE advertiser_id = ? AND state IN (1, 2, 3)", advertiser) { UInt64($0.int(0)) }
            for id in older {
                try abandon(db, file: id, state: .superseded, error: "replaced by a newer file (\(object.path))", now: now)
            }
            let blocks = BlockRange.split(size: object.size, blockSize: policy.blockSize(forFileSize: object.size))
            try db.run("""
                INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, modified)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, advertiser, object.path, object.size, object.etag, Int(FileState.queued.rawValue), now, blocks.count,
                object.modified.timeIntervalSince1970)
            let id = db.lastInsertRowID
            try db.run("""
                UPDATE advertisers SET newest_modified = ?, newest_path = ?
                WHERE id = ? AND (newest_modified IS NULL OR newest_modified < ? OR (newest_modified = ? AND newest_path < ?))
                """, object.modified.timeIntervalSince1970, object.path, advertiser,
                object.modified.timeIntervalSince1970, object.modified.timeIntervalSince1970, object.path)
            // A file of one block is one task, from bytes to segment.
            let kind: TaskKind = blocks.count == 1 && policy.wholeFileTasks ? .whole : .parse
            for (seq, block) in blocks.enumerated() {
                try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end) VALUES (?, ?, ?, ?, ?)",
                           id, Int(kind.rawValue), seq, block.start, block.end)
            }
            if kind == .whole { try db.run("UPDATE files SET merges_total = 1 WHERE id = ?", id) }
            try place(db, file: UInt64(id), now: now)
            return Submission(fileID: UInt64(id), advertiserID: advertiser, queued: true, state: .queued)
        }
    }

    /// Records `object` as refused without ingesting it (an advertiser id
    /// that cannot be served, say), so that status shows why and later
    /// scans do not try it again.
    public func refuse(_ object: LakeObject, reason: String, now: Double) throws {
        guard let advertiser = object.advertiserID else { throw IngestError.invalidPath(object.path) }
        try write { db in
            try db.run("INSERT OR IGNORE INTO advertisers(id) VALUES (?)", advertiser)
            try db.run("""
                INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, error, ended_at, modified, collected)
                VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 2)
                """, advertiser, object.path, object.size, object.etag, Int(FileState.rejected.rawValue), now, reason, now,
                object.modified.timeIntervalSince1970)
        }
    }

    /// Whether `object` is newer (by modification time, then path) than
    /// every file its advertiser was given before. The scan queues only
    /// such files: deleting the newest file never brings back an older one.
    public func isNewest(_ object: LakeObject) throws -> Bool {
        guard let advertiser = object.advertiserID else { return false }
        let modified = object.modified.timeIntervalSince1970
        return try read { db in
            guard let (newest, path) = try db.rows(
                "SELECT newest_modified, newest_path FROM advertisers WHERE id = ? AND newest_modified IS NOT NULL", advertiser,
                map: { ($0.double(0), $0.string(1)) }).first else { return true }
            return (modified, object.path) > (newest, path)
        }
    }

    /// Ends an unfinished version: its tasks are cancelled, so late reports are ignored.
    private func abandon(_ db: Database, file: UInt64, state: FileState, error: String, now: Double) throws {
        try db.run("UPDATE files SET state = ?, error = ?, ended_at = ? WHERE id = ?", Int(state.rawValue), error, now, file)
        try db.run("UPDATE tasks SET state = ?, lease_token = NULL WHERE file_id = ? AND state IN (0, 1)",
                   TaskState.cancelled.rawValue, file)
    }

    /// Ends an unfinished version because its file changed or vanished.
    public func abandon(file: UInt64, error: String, now: Double) throws {
        try write { db in
            let state = try db.rows("SELECT state FROM files WHERE id = ?", file) { $0.int(0) }.first
            guard let state, [1, 2, 3].contains(state) else { return }
            try abandon(db, file: file, state: .superseded, error: error, now: now)
        }
    }

    public func setWeight(advertiser: String, weight: Double) throws {
        guard weight > 0, weight.isFinite else { throw IngestError.invalidArgument("weight must be a positive number, not \(weight)") }
        try write { db in
            invalidateRanking()
            try db.run("INSERT INTO advertisers(id, weight) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET weight = excluded.weight",
                       advertiser, weight)
        }
    }

    // MARK: Leasing

    /// Leases up to `max` tasks to `worker`, highest priority first (see
    /// `Priority`); expired leases go back to the queue first.
    public func lease(worker: String, max: Int, now: Double) throws -> [IngestTask] {
        do {
            return try write { db in try lease(db, worker: worker, max: max, now: now) }
        } catch {
            // The transaction rolled back; the kept order may have lost candidates.
            lock.withLock { ranking = nil }
            throw error
        }
    }

    /// Files with tasks to lease, best first, as ranked at `at`. Ranking
    /// reads every file in flight, so it is done at most once a
    /// `rankingLifetime` and kept: each lease takes from the front, and a
    /// file with nothing left to lease drops out. Whenever a task becomes
    /// leasable (a submission, merges created, a retry, an expired lease, a
    /// weight change) the ranking is dropped and made again at the next
    /// lease, so new work is seen at once; priorities only age within the
    /// lifetime, which is small against their 120-s scale. Guarded by `lock`.
    private var ranking: (files: ArraySlice<Ranked>, at: Double, until: Double)?

    private struct Ranked {
        var file: UInt64
        var score: Double
        /// Best first; ties by file id.
        func before(_ other: Ranked) -> Bool { score != other.score ? score > other.score : file < other.file }
    }
    static let rankingLifetime = 1.0
    /// Ranking time is kept under a twentieth of the time a ranking lives:
    /// with tens of thousands of files in flight one takes tens of
    /// milliseconds, and it then lives longer than a second (priorities age
    /// on a scale of minutes, so the order barely moves).
    private var lastRankingSeconds = 0.0
    /// How many times the ranking was made (for tests that check leases
    /// stay cheap however many files are queued).
    private var rankings = 0
    @_spi(Testing) public var rankingCount: Int { lock.withLock { rankings } }

    /// Called inside a write whenever tasks may have become leasable in
    /// ways one file cannot describe.
    private func invalidateRanking() { ranking = nil }

    /// Called inside a write, after `file` got leasable tasks (it was
    /// submitted, its merges were created, a task came back): the file is
    /// scored and put in its place in the kept ranking, so new work is seen
    /// at the next lease without ranking every file again.
    ///
    /// The file may already be in the ranking (it had other tasks left): a
    /// second entry costs one empty look-up when its turn comes, and saves a
    /// search of the whole ranking on every insertion.
    private func place(_ db: Database, file: UInt64, now: Double) throws {
        guard ranking != nil, let entry = try candidates(db, now: now, file: file).first else { return }
        // Binary search for the first entry it goes before; the ranking is
        // mutated in place (not copied), and a new file, which has waited
        // least, goes near the end, so the insertion moves little.
        var low = ranking!.files.startIndex, high = ranking!.files.endIndex
        while low < high {
            let middle = low + (high - low) / 2
            if entry.before(ranking!.files[middle]) { high = middle } else { low = middle + 1 }
        }
        ranking!.files.insert(entry, at: low)
    }

    /// Called inside a write after a task was put back with a backoff: the
    /// kept ranking ends when the backoff does, so the task is seen then.
    private func rankingEnds(by time: Double) {
        if let kept = ranking, time < kept.until { ranking?.until = time }
    }

    /// Files with a task leasable at `now` (or only `file`), scored by `Priority`, best first.
    private func candidates(_ db: Database, now: Double, file: UInt64? = nil) throws -> [Ranked] {
        try db.rows("""
            SELECT f.id, f.state, f.submitted_at, a.weight,
                   (SELECT COALESCE(SUM(CASE WHEN t.kind = 1 THEN t.range_end - t.range_start ELSE 0 END), 0)
                      FROM tasks t WHERE t.file_id = f.id AND t.state IN (0, 1)),
                   f.size
            FROM files f JOIN advertisers a ON a.id = f.advertiser_id
            WHERE f.state IN (1, 2, 3) \(file == nil ? "" : "AND f.id = ?")
              AND EXISTS (SELECT 1 FROM tasks t WHERE t.file_id = f.id AND t.state = 0 AND (t.not_before IS NULL OR t.not_before <= ?))
            """, arguments: (file.map { [$0] } ?? []) + [now]) { row -> Ranked in
            let merging = FileState(rawValue: Int32(row.int(1))) == .merging
            let remaining = merging ? row.int(5) : row.int(4)
            let score = Priority.score(weight: row.double(3), waited: now - row.double(2), remainingBytes: remaining,
                                       blockSize: policy.blockSize, merging: merging, agingSeconds: policy.agingSeconds)
            return Ranked(file: UInt64(row.int(0)), score: score)
        }.sorted { $0.before($1) }
    }

    private func lease(_ db: Database, worker: String, max: Int, now: Double) throws -> [IngestTask] {
            try db.run("INSERT INTO workers(id, last_seen) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                       worker, now)
            try expireLeases(db, now: now)
            if let cached = ranking, now >= cached.at, now < cached.until {
                return try lease(db, from: cached.files, worker: worker, max: max, now: now)
            }
            rankings += 1
            let started = ContinuousClock.now
            let ranked = try candidates(db, now: now)
            let took = ContinuousClock.now - started
            lastRankingSeconds = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
            // A task whose backoff ends sooner becomes leasable without an event: the ranking lasts until then.
            let nextReady = try db.rows("SELECT MIN(not_before) FROM tasks WHERE state = 0 AND not_before > ?", now) {
                $0.isNull(0) ? nil : $0.double(0)
            }.first ?? nil
            let until = min(now + Swift.max(Self.rankingLifetime, 20 * lastRankingSeconds), nextReady ?? .infinity)
            return try lease(db, from: ArraySlice(ranked), worker: worker, max: max, now: now, ranked: (now, until))
    }

    /// Leases up to `max` tasks from the ranked `files`, best first, and
    /// keeps what is left of the ranking.
    private func lease(_ db: Database, from files: ArraySlice<Ranked>, worker: String, max: Int, now: Double,
                       ranked: (at: Double, until: Double)? = nil) throws -> [IngestTask] {
        var files = files
        var leased: [IngestTask] = []
        while leased.count < max, let file = files.first?.file {
            // Merges only once every block is parsed (again, after a lost run).
            let want = max - leased.count
            let ids = try db.rows("""
                SELECT id FROM tasks WHERE file_id = ? AND state = 0 AND (not_before IS NULL OR not_before <= ?) AND (kind = ? OR NOT EXISTS
                    (SELECT 1 FROM tasks p WHERE p.file_id = ? AND p.kind = ? AND p.state != 2))
                ORDER BY kind, seq LIMIT ?
                """, file, now, Int(TaskKind.parse.rawValue), file, Int(TaskKind.parse.rawValue), want) { UInt64($0.int(0)) }
            for id in ids {
                leased.append(try leaseTask(db, id: id, worker: worker, now: now))
            }
            if !ids.isEmpty {
                try db.run("UPDATE files SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ? AND state = ?",
                           Int(FileState.parsing.rawValue), now, file, Int(FileState.queued.rawValue))
            }
            // Nothing more to lease from it now: it leaves the ranking.
            if ids.count < want { files = files.dropFirst() }
        }
        let (at, until) = ranked ?? (ranking?.at ?? now, ranking?.until ?? now)
        ranking = (files, at, until)
        return leased
    }

    private func leaseTask(_ db: Database, id: UInt64, worker: String, now: Double) throws -> IngestTask {
        let token = Self.newToken()
        try db.run("""
            UPDATE tasks SET state = 1, attempts = attempts + 1, lease_token = ?, worker = ?, lease_expires = ? WHERE id = ?
            """, token, worker, now + policy.leaseDuration, id)
        var task = IngestTask()
        var fileID: UInt64 = 0
        try db.query("""
            SELECT t.kind, t.seq, t.range_start, t.range_end, t.attempts, t.file_id, f.advertiser_id, f.path, f.etag, f.size
            FROM tasks t JOIN files f ON f.id = t.file_id WHERE t.id = ?
            """, id) { row in
            task.taskId = id
            task.kind = TaskKind(rawValue: Int32(row.int(0)))
            task.leaseToken = token
            task.attempt = UInt32(row.int(4))
            fileID = UInt64(row.int(5))
            task.advertiserId = row.string(6)
            task.version = fileID
            task.lakePath = row.string(7)
            task.etag = row.string(8)
            let seq = row.int(1)
            let suffix = "a\(task.attempt)-\(token.prefix(8))"
            if task.kind == .parse {
                task.start = UInt64(row.int(2))
                task.end = UInt64(row.int(3))
                task.outputPath = "runs/\(task.advertiserId)/\(fileID)/block-\(seq)-\(suffix).run"
                task.partitionBits = UInt32(policy.runPartitionBits(fileSize: row.int(9)))
            } else if task.kind == .whole {
                task.start = UInt64(row.int(2))
                task.end = UInt64(row.int(3))
                task.outputPath = "segments/\(task.advertiserId)/\(fileID)/part-\(seq)-\(suffix).seg"
            } else {
                task.keyLow = UInt64(bitPattern: row.int(2))
                task.keyHigh = UInt64(bitPattern: row.int(3))
                task.outputPath = "segments/\(task.advertiserId)/\(fileID)/part-\(seq)-\(suffix).seg"
                task.packPath = Self.packPath(advertiser: task.advertiserId, file: fileID)
            }
        }
        if task.kind == .merge {
            task.runs = try db.rows("SELECT output FROM tasks WHERE file_id = ? AND kind = 1 ORDER BY seq", fileID) { $0.string(0) }
        }
        try db.run("UPDATE tasks SET output = ? WHERE id = ?", task.outputPath, id)
        try db.run("INSERT OR REPLACE INTO attempts(task_id, attempt, worker, leased_at) VALUES (?, ?, ?, ?)",
                   id, task.attempt, worker, now)
        return task
    }

    /// The one pack file of a version's merged segments.
    static func packPath(advertiser: String, file: UInt64) -> String {
        "segments/\(advertiser)/\(file)/merged.pack"
    }

    private static func newToken() -> String {
        var g = SystemRandomNumberGenerator()
        return String(format: "%016llx%016llx", g.next() as UInt64, g.next() as UInt64)
    }

    /// Puts tasks whose lease ran out back in the queue, or fails their file
    /// version once they have used all their attempts.
    private func expireLeases(_ db: Database, now: Double) throws {
        let expired = try db.rows("SELECT id, attempts, worker, expiries FROM tasks WHERE state = 1 AND lease_expires < ?", now) {
            (UInt64($0.int(0)), Int($0.int(1)), $0.string(2), Int($0.int(3)) + 1)
        }
        for (id, attempts, worker, expiries) in expired {
            try db.run("UPDATE attempts SET outcome = 'expired', ended_at = ? WHERE task_id = ? AND attempt = ?", now, id, attempts)
            try db.run("UPDATE tasks SET expiries = ? WHERE id = ?", expiries, id)
            if expiries >= policy.maxLeaseExpiries {
                let (file, label) = try taskLabel(db, id)
                try abandon(db, file: file, state: .failed,
                            error: "\(label): its lease expired \(expiries) times (workers died or stalled on it); last on worker \(worker)",
                            now: now)
            } else {
                // At once: the worker died, the file is not at fault.
                try db.run("UPDATE tasks SET state = 0, lease_token = NULL, lease_expires = NULL WHERE id = ?", id)
                try place(db, file: try taskLabel(db, id).0, now: now)
            }
        }
    }

    /// After a reported failure: the task goes back to the queue after a
    /// backoff (`wait`), or its version fails once it has failed
    /// `maxAttempts` times.
    private func retryOrFail(_ db: Database, task: UInt64, failures: Int, error: String, wait: Double, now: Double) throws {
        try db.run("UPDATE tasks SET failures = ? WHERE id = ?", failures, task)
        if failures >= policy.maxAttempts {
            let (file, label) = try taskLabel(db, task)
            try abandon(db, file: file, state: .failed, error: "\(label) failed \(failures) times; last: \(error)", now: now)
        } else {
            try db.run("UPDATE tasks SET state = 0, lease_token = NULL, lease_expires = NULL, not_before = ? WHERE id = ?",
                       now + wait, task)
            if wait > 0 { rankingEnds(by: now + wait) } else { try place(db, file: try taskLabel(db, task).0, now: now) }
        }
    }

    private func taskLabel(_ db: Database, _ task: UInt64) throws -> (UInt64, String) {
        try db.rows("SELECT file_id, kind, seq FROM tasks WHERE id = ?", task) { row in
            (UInt64(row.int(0)), (row.int(1) == Int64(TaskKind.merge.rawValue) ? "merge " : "block ") + String(row.int(2)))
        }.first ?? (0, "task \(task)")
    }

    /// Renews the leases `worker` still holds; returns the tasks it has lost.
    public func heartbeat(worker: String, tasks: [(UInt64, String)], now: Double) throws -> [UInt64] {
        try write { db in
            try db.run("INSERT INTO workers(id, last_seen) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                       worker, now)
            var lost: [UInt64] = []
            for (id, token) in tasks {
                let renewed = try db.run("UPDATE tasks SET lease_expires = ? WHERE id = ? AND state = 1 AND lease_token = ?",
                                         now + policy.leaseDuration, id, token)
                if renewed == 0 { lost.append(id) }
            }
            return lost
        }
    }

    // MARK: Reports

    public enum Progress: Sendable, Equatable {
        case none
        /// All parse tasks are done and the version was sent to merging.
        case merging
        /// Too many invalid lines.
        case rejected
        /// All merges are done: the version can be published.
        case readyToPublish
    }

    /// Records a finished task. Ignored (returns nil) unless `token` still
    /// holds the lease: a late or repeated report changes nothing.
    public func complete(_ report: CompleteTaskRequest, now: Double) throws -> Progress? {
        try write { db in
            guard let (file, kind, attempt, advertiser) = try db.rows("""
                SELECT t.file_id, t.kind, t.attempts, f.advertiser_id FROM tasks t JOIN files f ON f.id = t.file_id
                WHERE t.id = ? AND t.state = 1 AND t.lease_token = ?
                """, report.taskId, report.leaseToken, map: {
                    (UInt64($0.int(0)), TaskKind(rawValue: Int32($0.int(1))), Int($0.int(2)), $0.string(3))
                }).first
            else { return nil }
            if !report.outputPath.isEmpty {
                // Only a merge's own pack: a report cannot make the match
                // server map some other file.
                let pack = Self.packPath(advertiser: advertiser, file: file)
                guard kind == .merge, report.outputPath == pack, report.outputLength > 0,
                      report.outputOffset <= UInt64(Int64.max), report.outputLength <= UInt64(Int64.max) - report.outputOffset
                else {
                    throw IngestError.invalidArgument("task \(report.taskId) reported its output at \(report.outputPath)@\(report.outputOffset)+\(report.outputLength); only a slice of \(pack) is accepted")
                }
                try db.run("UPDATE tasks SET output = ?, output_offset = ?, output_length = ? WHERE id = ?",
                           report.outputPath, report.outputOffset, report.outputLength, report.taskId)
            } else {
                try db.run("UPDATE tasks SET output_offset = 0, output_length = 0 WHERE id = ?", report.taskId)
            }
            let invalid = Self.encodeCounts(report.invalidByKind)
            let samples = report.invalidSamples.map { "\($0.line):\($0.kind)" }.joined(separator: ",")
            try db.run("""
                UPDATE tasks SET state = 2, lease_token = NULL, lines = ?, keys = ?, skipped = ?, output_keys = ?, bytes = ?,
                    invalid = ?, samples = ?, done_at = ? WHERE id = ?
                """, report.lines, report.keys, report.skipped, report.outputKeys, report.bytes, invalid, samples, now, report.taskId)
            try db.run("UPDATE attempts SET outcome = 'done', ended_at = ? WHERE task_id = ? AND attempt = ?", now, report.taskId, attempt)
            let open = try db.rows("SELECT COUNT(*) FROM tasks WHERE file_id = ? AND kind = ? AND state != 2",
                                   file, Int(kind.rawValue)) { $0.int(0) }.first ?? 0
            guard open == 0 else { return Progress.none }
            if kind == .parse { return try finishParsing(db, file: file, now: now) }
            if kind == .whole, try rejectIfInvalid(db, file: file, kind: .whole, now: now) { return .rejected }
            let distinct = try db.rows("SELECT SUM(output_keys) FROM tasks WHERE file_id = ? AND kind IN (2, 3)", file) { $0.int(0) }.first ?? 0
            try db.run("UPDATE files SET state = ?, distinct_keys = ? WHERE id = ?", Int(FileState.publishing.rawValue), distinct, file)
            return .readyToPublish
        }
    }

    /// Rejects `file` when its parsed tasks of `kind` found more invalid
    /// lines than the threshold allows; true if it did.
    private func rejectIfInvalid(_ db: Database, file: UInt64, kind: TaskKind, now: Double) throws -> Bool {
        var lines: Int64 = 0, invalid: Int64 = 0
        try db.query("SELECT lines, invalid FROM tasks WHERE file_id = ? AND kind = ?", file, Int(kind.rawValue)) { row in
            lines += row.int(0)
            invalid += Self.decodeCounts(row.string(1)).values.reduce(0) { $0 + Int64($1) }
        }
        guard invalid > 0, Double(invalid) > policy.invalidThreshold * Double(lines) else { return false }
        let percent = String(format: "%.3f", 100 * Double(invalid) / Double(max(1, lines)))
        let limit = String(format: "%.3f", 100 * policy.invalidThreshold)
        try abandon(db, file: file, state: .rejected,
                    error: "\(invalid) of \(lines) lines are invalid (\(percent)%, limit \(limit)%)", now: now)
        return true
    }

    private func finishParsing(_ db: Database, file: UInt64, now: Double) throws -> Progress {
        // Blocks parsed again after a lost run: the merges exist already.
        let merges = try db.rows("SELECT COUNT(*) FROM tasks WHERE file_id = ? AND kind = ?",
                                 file, Int(TaskKind.merge.rawValue)) { $0.int(0) }.first ?? 0
        if merges > 0 {
            try db.run("UPDATE files SET state = ? WHERE id = ?", Int(FileState.merging.rawValue), file)
            try place(db, file: file, now: now)
            return .merging
        }
        if try rejectIfInvalid(db, file: file, kind: .parse, now: now) { return .rejected }
        let runKeys = try db.rows("SELECT SUM(output_keys) FROM tasks WHERE file_id = ? AND kind = 1", file) { $0.int(0) }.first ?? 0
        let ranges = policy.mergeRanges(keys: runKeys)
        for (seq, range) in ranges.enumerated() {
            try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end) VALUES (?, ?, ?, ?, ?)",
                       file, Int(TaskKind.merge.rawValue), seq, range.low, range.high)
        }
        try db.run("UPDATE files SET state = ?, merges_total = ? WHERE id = ?", Int(FileState.merging.rawValue), ranges.count, file)
        try place(db, file: file, now: now)
        return .merging
    }

    public enum FailureOutcome: Sendable, Equatable {
        case ignored
        case retrying
        case failed
        /// The lake object changed: the version was abandoned; the caller should look at the file again.
        case fileChanged(path: String)
    }

    /// Records a failed attempt: the task is retried until it has failed
    /// `maxAttempts` times, then its version fails.
    public func fail(_ report: FailTaskRequest, now: Double) throws -> FailureOutcome {
        try write { db in
            guard let (file, attempt, failures) = try db.rows(
                "SELECT file_id, attempts, failures FROM tasks WHERE id = ? AND state = 1 AND lease_token = ?",
                report.taskId, report.leaseToken, map: { (UInt64($0.int(0)), Int($0.int(1)), Int($0.int(2)) + 1) }).first
            else { return .ignored }
            try db.run("UPDATE attempts SET outcome = 'failed', ended_at = ?, error = ? WHERE task_id = ? AND attempt = ?",
                       now, report.error, report.taskId, attempt)
            if report.fileChanged {
                let path = try db.rows("SELECT path FROM files WHERE id = ?", file) { $0.string(0) }.first ?? ""
                try abandon(db, file: file, state: .superseded, error: "the file changed while it was being ingested", now: now)
                return .fileChanged(path: path)
            }
            // A merge that lost runs waits for their blocks anyway: no backoff.
            if !report.lostRuns.isEmpty { try reparse(db, file: file, lostRuns: Set(report.lostRuns), now: now) }
            try retryOrFail(db, task: report.taskId, failures: failures, error: report.error,
                            wait: report.lostRuns.isEmpty ? policy.backoff(failures: failures) : 0, now: now)
            let state = try db.rows("SELECT state FROM files WHERE id = ?", file) { FileState(rawValue: Int32($0.int(0))) }.first
            return state == .failed ? .failed : .retrying
        }
    }

    /// Puts the blocks whose runs a merge could not read back in the queue
    /// and the version back to parsing; its merges wait until they are done.
    /// Runs are not synced to disk (a crash may lose them) because they are
    /// rebuilt this way. The merge's own attempt still counts, so a run
    /// that keeps coming out unreadable ends in a failed version, not a loop.
    private func reparse(_ db: Database, file: UInt64, lostRuns: Set<String>, now: Double) throws {
        let done = try db.rows("SELECT id, output FROM tasks WHERE file_id = ? AND kind = ? AND state = 2",
                               file, Int(TaskKind.parse.rawValue)) { (UInt64($0.int(0)), $0.string(1)) }
        var requeued = 0
        for (id, output) in done where lostRuns.contains(output) {
            try db.run("UPDATE tasks SET state = 0, lease_token = NULL, lease_expires = NULL WHERE id = ?", id)
            requeued += 1
        }
        if requeued > 0 {
            try db.run("UPDATE files SET state = ? WHERE id = ? AND state = ?",
                       Int(FileState.parsing.rawValue), file, Int(FileState.merging.rawValue))
            try place(db, file: file, now: now)
        }
    }

    // MARK: Publishing and garbage collection

    public struct Publication: Sendable, Equatable {
        public var fileID: UInt64
        public var advertiserID: String
        public var segments: [SegmentRef]
        /// The lake object every block was read from.
        public var path: String
        public var etag: String
    }

    /// Versions whose merges are all done, waiting to be made live.
    public func pendingPublications() throws -> [Publication] {
        try read { db in
            let files = try db.rows("SELECT id, advertiser_id, path, etag FROM files WHERE state = ? ORDER BY id",
                                    Int(FileState.publishing.rawValue)) { (UInt64($0.int(0)), $0.string(1), $0.string(2), $0.string(3)) }
            return try files.map { id, advertiser, path, etag in
                let segments = try db.rows("""
                    SELECT output, output_keys, output_offset, output_length FROM tasks WHERE file_id = ? AND kind IN (2, 3) ORDER BY seq
                    """, id) { row in
                    var ref = SegmentRef()
                    ref.path = row.string(0)
                    ref.keyCount = UInt64(row.int(1))
                    ref.offset = UInt64(row.int(2))
                    ref.length = UInt64(row.int(3))
                    return ref
                }
                return Publication(fileID: id, advertiserID: advertiser, segments: segments, path: path, etag: etag)
            }
        }
    }

    /// Records that `files` are live, in one transaction; each advertiser's
    /// previous live version is retired.
    public func markLive(files: [UInt64], now: Double) throws {
        guard !files.isEmpty else { return }
        try write { db in
            for file in files {
            guard let advertiser = try db.rows("SELECT advertiser_id FROM files WHERE id = ? AND state = ?",
                                               file, Int(FileState.publishing.rawValue), map: { $0.string(0) }).first else { continue }
            try db.run("UPDATE files SET state = ?, ended_at = ? WHERE advertiser_id = ? AND state = ? AND id < ?",
                       Int(FileState.retired.rawValue), now, advertiser, Int(FileState.live.rawValue), file)
            try db.run("UPDATE files SET state = ?, live_at = ?, ended_at = ? WHERE id = ?", Int(FileState.live.rawValue), now, now, file)
            try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = ?", file, advertiser)
            }
        }
    }

    /// Records that the match server refused `file` for good (a newer version is live there).
    public func markPublishFailed(file: UInt64, state: FileState, error: String, now: Double) throws {
        try write { db in try abandon(db, file: file, state: state, error: error, now: now) }
    }

    /// What the store no longer needs of one version.
    public struct Collectable: Sendable, Equatable {
        public var file: UInt64
        /// Folders to delete whole.
        public var prefixes: [String]
        /// A live version's segment folder, and the segments it serves: every
        /// other file there (a temporary file of a worker killed mid-write,
        /// the output of a lost attempt) is deleted.
        public var segmentFolder: String?
        public var served: Set<String>
    }

    /// Store folders that are no longer needed: all of a live version's runs
    /// and stray files beside its segments, and everything of versions that
    /// ended without being live or were retired.
    public func collectable() throws -> [Collectable] {
        try read { db in
            // Through the partial index `files_to_collect` (migration 3): the
            // cost is the number of files to collect, not of live ones.
            try db.rows("""
                SELECT id, advertiser_id, state FROM files INDEXED BY files_to_collect
                WHERE (state = 5 AND collected = 0) OR (state IN (6, 7, 8, 9) AND collected < 2)
                """) { row in
                let id = UInt64(row.int(0)), advertiser = row.string(1)
                let segments = "segments/\(advertiser)/\(id)"
                if row.int(2) != Int64(FileState.live.rawValue) {
                    return Collectable(file: id, prefixes: ["runs/\(advertiser)/\(id)", segments], segmentFolder: nil, served: [])
                }
                return Collectable(file: id, prefixes: ["runs/\(advertiser)/\(id)"], segmentFolder: segments, served: [])
            }.map { item in
                guard item.segmentFolder != nil else { return item }
                var item = item
                item.served = Set(try db.rows("SELECT output FROM tasks WHERE file_id = ? AND kind IN (2, 3) AND state = ?",
                                              item.file, TaskState.done.rawValue) { $0.string(0) })
                return item
            }
        }
    }

    /// Marks what `collectable` listed for `file` as deleted: 1 = its runs
    /// (it is live), 2 = everything.
    public func markCollected(file: UInt64) throws {
        try write { db in
            try db.run("UPDATE files SET collected = CASE WHEN state = 5 THEN 1 ELSE 2 END WHERE id = ?", file)
        }
    }

    // MARK: Status

    /// Live versions: what the match server should be serving.
    public func liveVersions() throws -> [(advertiser: String, file: UInt64, path: String, etag: String)] {
        try read { db in
            try db.rows("SELECT advertiser_id, id, path, etag FROM files WHERE state = ? ORDER BY advertiser_id",
                        Int(FileState.live.rawValue)) { ($0.string(0), UInt64($0.int(1)), $0.string(2), $0.string(3)) }
        }
    }

    /// Active files (their path and etag), for change detection.
    public func activeFiles() throws -> [(id: UInt64, path: String, etag: String)] {
        try read { db in
            try db.rows("SELECT id, path, etag FROM files WHERE state IN (1, 2, 3)") { (UInt64($0.int(0)), $0.string(1), $0.string(2)) }
        }
    }

    /// Whether a version of exactly this object was ever submitted.
    public func isKnown(path: String, etag: String) throws -> Bool {
        try read { db in
            try db.rows("SELECT 1 FROM files WHERE path = ? AND etag = ? LIMIT 1", path, etag) { _ in true }.first ?? false
        }
    }

    public func files(advertiser: String?, states: [FileState], limit: Int, before: UInt64 = 0, now: Double) throws -> [FileStatus] {
        try read { db in
            var sql = "SELECT id FROM files"
            var clauses: [String] = []
            var args: [SQLBindable] = []
            if before > 0 {
                clauses.append("id < ?")
                args.append(before)
            }
            if let advertiser, !advertiser.isEmpty {
                clauses.append("advertiser_id = ?")
                args.append(advertiser)
            }
            if !states.isEmpty { clauses.append("state IN (\(states.map { String($0.rawValue) }.joined(separator: ",")))") }
            if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
            sql += " ORDER BY id DESC LIMIT \(max(1, limit))"
            let ids = try db.rows(sql, arguments: args) { UInt64($0.int(0)) }
            return try ids.map { try fileStatus(db, $0, now: now) }
        }
    }

    /// The catalog summarised (files by state, task counts) and at most
    /// `limit` files in flight, oldest first, then the 20 most recent
    /// finished ones: its cost and size do not grow with the catalog.
    public func status(limit: Int = 50, now: Double) throws -> StatusResponse {
        try read { db in
            var response = StatusResponse()
            try db.query("SELECT state, COUNT(*) FROM files GROUP BY state") { row in
                response.filesByState[FileState(rawValue: Int32(row.int(0))).name] = UInt32(row.int(1))
            }
            response.filesInFlight = [FileState.queued, .parsing, .merging, .publishing]
                .reduce(0) { $0 + (response.filesByState[$1.name] ?? 0) }
            let unfinished = try db.rows("SELECT id FROM files WHERE state IN (1, 2, 3, 4) ORDER BY id LIMIT ?", max(0, limit)) { UInt64($0.int(0)) }
            let recent = try db.rows("SELECT id FROM files WHERE state NOT IN (1, 2, 3, 4) ORDER BY id DESC LIMIT 20") { UInt64($0.int(0)) }
            response.files = try (unfinished + recent.reversed()).map { try fileStatus(db, $0, now: now) }
            response.advertisersLive = UInt32(try db.rows("SELECT COUNT(*) FROM advertisers WHERE live_file_id IS NOT NULL") { $0.int(0) }.first ?? 0)
            response.workersSeen = UInt32(try db.rows("SELECT COUNT(*) FROM workers WHERE last_seen > ?", now - 3 * policy.leaseDuration) { $0.int(0) }.first ?? 0)
            try db.query("SELECT state, COUNT(*) FROM tasks WHERE state IN (0, 1) GROUP BY state") { row in
                if row.int(0) == 0 { response.tasksQueued = UInt32(row.int(1)) } else { response.tasksLeased = UInt32(row.int(1)) }
            }
            return response
        }
    }

    private func fileStatus(_ db: Database, _ id: UInt64, now: Double) throws -> FileStatus {
        var status = FileStatus()
        var startedAt: Double?
        var endedAt: Double?
        try db.query("""
            SELECT advertiser_id, path, size, etag, state, blocks_total, merges_total, distinct_keys, error,
                   submitted_at, started_at, live_at, ended_at FROM files WHERE id = ?
            """, id) { row in
            status.fileId = id
            status.advertiserId = row.string(0)
            status.path = row.string(1)
            status.size = UInt64(row.int(2))
            status.etag = row.string(3)
            status.state = FileState(rawValue: Int32(row.int(4)))
            status.blocksTotal = UInt32(row.int(5))
            status.mergesTotal = UInt32(row.int(6))
            status.distinctKeys = UInt64(row.int(7))
            status.error = row.string(8)
            status.submittedAtMs = Int64(row.double(9) * 1000)
            startedAt = row.isNull(10) ? nil : row.double(10)
            status.liveAtMs = row.isNull(11) ? 0 : Int64(row.double(11) * 1000)
            endedAt = row.isNull(12) ? nil : row.double(12)
        }
        var invalid: [String: UInt64] = [:]
        var lineOffset: UInt64 = 0
        var contiguous = true
        try db.query("SELECT kind, state, lines, keys, bytes, invalid, samples FROM tasks WHERE file_id = ? ORDER BY kind, seq", id) { row in
            let done = row.int(1) == TaskState.done.rawValue
            if row.int(0) == Int64(TaskKind.merge.rawValue) {
                if done { status.mergesDone += 1 }
                return
            }
            // A whole-file task is the file's one block and its one merge.
            if row.int(0) == Int64(TaskKind.whole.rawValue), done { status.mergesDone += 1 }
            guard done else {
                contiguous = false
                return
            }
            status.blocksDone += 1
            status.bytesDone += UInt64(row.int(4))
            status.lines += UInt64(row.int(2))
            status.keys += UInt64(row.int(3))
            for (kind, count) in Self.decodeCounts(row.string(5)) { invalid[kind, default: 0] += count }
            // Samples carry their line within the block; they get file line
            // numbers once every earlier block is done.
            if contiguous {
                for sample in row.string(6).split(separator: ",") where status.invalidSamples.count < 10 {
                    let parts = sample.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let line = UInt64(parts[0]) else { continue }
                    var entry = InvalidLine()
                    entry.line = lineOffset + line + 1
                    entry.kind = String(parts[1])
                    status.invalidSamples.append(entry)
                }
            }
            lineOffset += UInt64(row.int(2))
        }
        status.invalidByKind = invalid
        status.invalidLines = invalid.values.reduce(0, +)
        if let startedAt {
            let elapsed = max(0.001, (endedAt ?? now) - startedAt)
            status.bytesPerSecond = Double(status.bytesDone) / elapsed
            if endedAt == nil, status.bytesPerSecond > 0, status.bytesDone < status.size {
                status.etaSeconds = Double(status.size - status.bytesDone) / status.bytesPerSecond
            }
        }
        return status
    }

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

    public var description: String {
        switch self {
        case .invalidPath(let path): "'\(path)' is not <advertiser-id>/<file> in the lake"
        case .invalidArgument(let message): message
        }
    }
}
