import DataLake
import Foundation
import HashParsing
import RosterAPI
import SQLDatabase

/// `IngestCatalog`: Leasing tasks by priority (the kept ranking), lease expiry and heartbeats.
extension IngestCatalog {

    /// Leases up to `max` tasks to `worker`, highest priority first (see
    /// `Priority`); expired leases go back to the queue first.
    ///
    /// `request` (the caller's `request_id`) makes the call idempotent: the
    /// tasks it leased before (a leader that died before answering, a
    /// timed-out call sent again) are returned again, their leases renewed,
    /// instead of new ones. Their tokens are `<request>:<n>`, so they are
    /// found without a column of their own.
    public func lease(worker: String, max: Int, now: Double, request: String = "") throws -> [IngestTask] {
        do {
            return try write { db in
                if !request.isEmpty, let again = try redeliver(db, worker: worker, request: request, now: now) { return again }
                return try lease(db, worker: worker, max: max, now: now, request: request)
            }
        } catch {
            // The transaction rolled back; the kept order may have lost candidates.
            lock.withLock { ranking = nil }
            throw error
        }
    }


    struct Ranked {
        var file: UInt64
        var score: Double
        /// Best first; ties by file id.
        func before(_ other: Ranked) -> Bool { score != other.score ? score > other.score : file < other.file }
    }
    static let rankingLifetime = 1.0
    @_spi(Testing) public var rankingCount: Int { lock.withLock { rankings } }

    /// Called inside a write whenever tasks may have become leasable in
    /// ways one file cannot describe.
    func invalidateRanking() { ranking = nil }

    /// Called inside a write, after `file` got leasable tasks (it was
    /// submitted, its merges were created, a task came back): the file is
    /// scored and put in its place in the kept ranking, so new work is seen
    /// at the next lease without ranking every file again.
    ///
    /// The file may already be in the ranking (it had other tasks left): a
    /// second entry costs one empty look-up when its turn comes, and saves a
    /// search of the whole ranking on every insertion.
    func place(_ db: any SQLDatabase, file: UInt64, now: Double) throws {
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
    func rankingEnds(by time: Double) {
        if let kept = ranking, time < kept.until { ranking?.until = time }
    }

    /// Files with a task leasable at `now` (or only `file`), scored by `Priority`, best first.
    func candidates(_ db: any SQLDatabase, now: Double, file: UInt64? = nil) throws -> [Ranked] {
        try db.rows("""
            SELECT f.id, f.state, f.submitted_at, a.weight,
                   (SELECT COALESCE(SUM(CASE WHEN t.kind = \(TaskKind.parse.sql) THEN t.range_end - t.range_start ELSE 0 END), 0)
                      FROM tasks t WHERE t.file_id = f.id AND t.state IN \(TaskState.sqlList(.queued, .leased))) AS unparsed,
                   f.size
            FROM files f JOIN advertisers a ON a.id = f.advertiser_id
            WHERE f.state IN \(FileState.sqlList(.queued, .parsing, .merging)) \(file == nil ? "" : "AND f.id = ?")
              AND EXISTS (SELECT 1 FROM tasks t WHERE t.file_id = f.id AND t.state = \(TaskState.queued.sql) AND (t.not_before IS NULL OR t.not_before <= ?))
            """, arguments: (file.map { [$0] } ?? []) + [now]) { row -> Ranked in
            let merging = row.fileState("state") == .merging
            let remaining = merging ? row.int("size") : row.int("unparsed")
            let score = Priority.score(weight: row.double("weight"), waited: now - row.double("submitted_at"), remainingBytes: remaining,
                                       blockSize: policy.blockSize, merging: merging, agingSeconds: policy.aging.seconds)
            return Ranked(file: UInt64(row.int("id")), score: score)
        }.sorted { $0.before($1) }
    }

    /// The tasks `worker` leased under `request` and still holds, their
    /// leases renewed; nil if there are none.
    func redeliver(_ db: any SQLDatabase, worker: String, request: String, now: Double) throws -> [IngestTask]? {
        let held = try db.rows("""
            SELECT id, lease_token FROM tasks WHERE state = \(TaskState.leased.sql) AND worker = ? AND lease_token LIKE ? ORDER BY id
            """, worker, request.replacingOccurrences(of: "%", with: "").replacingOccurrences(of: "_", with: "") + ":%") {
            (UInt64($0.int("id")), $0.string("lease_token"))
        }.filter { $0.1.hasPrefix(request + ":") }
        guard !held.isEmpty else { return nil }
        return try held.map { id, token in
            try db.run("UPDATE tasks SET lease_expires = ? WHERE id = ?", now + policy.leaseSeconds, id)
            return try describe(db, task: id, token: token)
        }
    }

    func lease(_ db: any SQLDatabase, worker: String, max: Int, now: Double, request: String = "") throws -> [IngestTask] {
            try db.run("INSERT INTO workers(id, last_seen) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                       worker, now)
            if leaseGraceDue {
                try db.run("UPDATE tasks SET lease_expires = ? WHERE state = \(TaskState.leased.sql) AND lease_expires < ?",
                           now + policy.leaseSeconds, now + policy.leaseSeconds)
                leaseGraceDue = false
            }
            try expireLeases(db, now: now)
            if let cached = ranking, now >= cached.at, now < cached.until {
                return try lease(db, from: cached.files, worker: worker, max: max, now: now, request: request)
            }
            rankings += 1
            let started = ContinuousClock.now
            let ranked = try candidates(db, now: now)
            let took = ContinuousClock.now - started
            lastRankingSeconds = took.seconds
            // A task whose backoff ends sooner becomes leasable without an event: the ranking lasts until then.
            let nextReady = try db.rows("SELECT MIN(not_before) FROM tasks WHERE state = \(TaskState.queued.sql) AND not_before > ?", now) {
                $0.isNull(0) ? nil : $0.double(0)
            }.first ?? nil
            let until = min(now + Swift.max(Self.rankingLifetime, 20 * lastRankingSeconds), nextReady ?? .infinity)
            return try lease(db, from: ArraySlice(ranked), worker: worker, max: max, now: now, request: request, ranked: (now, until))
    }

    /// Leases up to `max` tasks from the ranked `files`, best first, and
    /// keeps what is left of the ranking.
    func lease(_ db: any SQLDatabase, from files: ArraySlice<Ranked>, worker: String, max: Int, now: Double, request: String = "",
                       ranked: (at: Double, until: Double)? = nil) throws -> [IngestTask] {
        var files = files
        var leased: [IngestTask] = []
        while leased.count < max, let file = files.first?.file {
            // Merges only once every block is parsed (again, after a lost run).
            let want = max - leased.count
            let ids = try db.rows("""
                SELECT id FROM tasks WHERE file_id = ? AND state = \(TaskState.queued.sql) AND (not_before IS NULL OR not_before <= ?) AND (kind = ? OR NOT EXISTS
                    (SELECT 1 FROM tasks p WHERE p.file_id = ? AND p.kind = ? AND p.state != \(TaskState.done.sql)))
                ORDER BY kind, seq LIMIT ?
                """, file, now, TaskKind.parse, file, TaskKind.parse, want) { UInt64($0.int(0)) }
            for id in ids {
                let token = request.isEmpty ? Self.newToken() : "\(request):\(leased.count)"
                leased.append(try leaseTask(db, id: id, worker: worker, token: token, now: now))
            }
            if !ids.isEmpty {
                try move(db, file: file, on: .started, also: "started_at = COALESCE(started_at, ?)", now)
            }
            // Nothing more to lease from it now: it leaves the ranking.
            if ids.count < want { files = files.dropFirst() }
        }
        let (at, until) = ranked ?? (ranking?.at ?? now, ranking?.until ?? now)
        ranking = (files, at, until)
        return leased
    }

    func leaseTask(_ db: any SQLDatabase, id: UInt64, worker: String, token: String, now: Double) throws -> IngestTask {
        try db.run("""
            UPDATE tasks SET state = \(TaskState.leased.sql), attempts = attempts + 1, lease_token = ?, worker = ?, lease_expires = ? WHERE id = ?
            """, token, worker, now + policy.leaseSeconds, id)
        let task = try describe(db, task: id, token: token)
        try db.run("UPDATE tasks SET output = ? WHERE id = ?", task.outputPath, id)
        try db.run("""
            INSERT INTO attempts(task_id, attempt, worker, leased_at) VALUES (?, ?, ?, ?)
            ON CONFLICT(task_id, attempt) DO UPDATE SET worker = excluded.worker, leased_at = excluded.leased_at,
                ended_at = NULL, outcome = 'leased', error = ''
            """, id, task.attempt, worker, now)
        IngestMetrics.attempts(task.kind).increment()
        return task
    }

    /// Task `id` as a worker receives it under lease `token`: its input, and
    /// where its output goes (named after the attempt and the token, so the
    /// same lease always names the same output).
    func describe(_ db: any SQLDatabase, task id: UInt64, token: String) throws -> IngestTask {
        var task = IngestTask()
        var version: UInt64 = 0
        try db.query("""
            SELECT t.kind, t.seq, t.range_start, t.range_end, t.attempts, t.file_id, f.advertiser_id, f.path, f.etag, f.size, f.hash_type
            FROM tasks t JOIN files f ON f.id = t.file_id WHERE t.id = ?
            """, id) { row in
            task.taskID = id
            task.kind = row.taskKind("kind")
            task.leaseToken = token
            task.attempt = UInt32(row.int("attempts"))
            version = UInt64(row.int("file_id"))
            task.advertiserID = row.string("advertiser_id")
            task.version = version
            task.lakePath = row.string("path")
            task.etag = row.string("etag")
            let seq = row.int("seq")
            let suffix = "a\(task.attempt)-\(token.prefix(8))"
            if task.kind == .parse {
                task.start = UInt64(row.int("range_start"))
                task.end = UInt64(row.int("range_end"))
                task.outputPath = StorePaths.run(advertiser: task.advertiserID, file: version, block: seq, attempt: suffix)
                task.partitionBits = UInt32(policy.runPartitionBits(fileSize: row.int("size")))
            } else if task.kind == .whole || task.kind == .delta {
                task.start = UInt64(row.int("range_start"))
                task.end = UInt64(row.int("range_end"))
                task.outputPath = StorePaths.segment(advertiser: task.advertiserID, file: version, task: seq, attempt: suffix)
                task.removes = task.kind == .delta && seq == 1
            } else if task.kind == .compact {
                task.outputPath = StorePaths.segment(advertiser: task.advertiserID, file: version, task: seq, attempt: suffix)
                task.hashType = HashType(rawValue: (row.hashKind("hash_type") ?? .md5).wireValue)
            } else {
                task.keyLow = UInt64(bitPattern: row.int("range_start"))
                task.keyHigh = UInt64(bitPattern: row.int("range_end"))
                task.outputPath = StorePaths.segment(advertiser: task.advertiserID, file: version, task: seq, attempt: suffix)
                task.packPath = Self.packPath(advertiser: task.advertiserID, file: version)
                task.hashType = HashType(rawValue: (row.hashKind("hash_type") ?? .md5).wireValue)
            }
        }
        if task.kind == .merge {
            task.runs = try db.rows("SELECT output FROM tasks WHERE file_id = ? AND kind = \(TaskKind.parse.sql) ORDER BY seq", version) { $0.string(0) }
        }
        if task.kind == .compact, let base = try db.rows("SELECT base_file_id FROM files WHERE id = ?", version, map: { $0.fileID("base_file_id") }).first ?? nil {
            task.segments = try chainSegments(db, file: base)
        }
        return task
    }

    /// The one pack file of a version's merged segments.
    static func packPath(advertiser: String, file: UInt64) -> String {
        StorePaths.pack(advertiser: advertiser, file: file)
    }

    static func newToken() -> String {
        var g = SystemRandomNumberGenerator()
        return String(format: "%016llx%016llx", g.next() as UInt64, g.next() as UInt64)
    }

    /// Puts tasks whose lease ran out back in the queue, or fails their file
    /// version once they have used all their attempts.
    func expireLeases(_ db: any SQLDatabase, now: Double) throws {
        let expired = try db.rows("SELECT id, attempts, worker, expiries FROM tasks WHERE state = \(TaskState.leased.sql) AND lease_expires < ?", now) {
            (UInt64($0.int("id")), Int($0.int("attempts")), $0.string("worker"), Int($0.int("expiries")) + 1)
        }
        for (id, attempts, worker, expiries) in expired {
            IngestMetrics.leaseExpiries.increment()
            try db.run("UPDATE attempts SET outcome = 'expired', ended_at = ? WHERE task_id = ? AND attempt = ?", now, id, attempts)
            try db.run("UPDATE tasks SET expiries = ? WHERE id = ?", expiries, id)
            if expiries >= policy.maxLeaseExpiries {
                let (file, label) = try taskLabel(db, id)
                try abandon(db, file: file, on: .failed,
                            error: "\(label): its lease expired \(expiries) times (workers died or stalled on it); last on worker \(worker)",
                            now: now)
            } else {
                // At once: the worker died, the file is not at fault.
                try db.run("UPDATE tasks SET state = \(TaskState.queued.sql), lease_token = NULL, lease_expires = NULL WHERE id = ?", id)
                try place(db, file: try taskLabel(db, id).0, now: now)
            }
        }
    }

    /// After a reported failure: the task goes back to the queue after a
    /// backoff (`wait`), or its version fails once it has failed
    /// `maxAttempts` times.
    func retryOrFail(_ db: any SQLDatabase, task: UInt64, failures: Int, error: String, wait: Double, now: Double) throws {
        try db.run("UPDATE tasks SET failures = ? WHERE id = ?", failures, task)
        if failures >= policy.maxAttempts {
            let (file, label) = try taskLabel(db, task)
            try abandon(db, file: file, on: .failed, error: "\(label) failed \(failures) times; last: \(error)", now: now)
        } else {
            try db.run("UPDATE tasks SET state = \(TaskState.queued.sql), lease_token = NULL, lease_expires = NULL, not_before = ? WHERE id = ?",
                       now + wait, task)
            if wait > 0 { rankingEnds(by: now + wait) } else { try place(db, file: try taskLabel(db, task).0, now: now) }
        }
    }

    func taskLabel(_ db: any SQLDatabase, _ task: UInt64) throws -> (UInt64, String) {
        try db.rows("SELECT file_id, kind, seq FROM tasks WHERE id = ?", task) { row in
            (UInt64(row.int("file_id")), (row.taskKind("kind") == .merge ? "merge " : "block ") + String(row.int("seq")))
        }.first ?? (0, "task \(task)")
    }

    /// Renews the leases `worker` still holds; returns the tasks it has lost.
    public func heartbeat(worker: String, tasks: [(UInt64, String)], now: Double) throws -> [UInt64] {
        try write { db in
            try db.run("INSERT INTO workers(id, last_seen) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                       worker, now)
            var lost: [UInt64] = []
            for (id, token) in tasks {
                let renewed = try db.run("UPDATE tasks SET lease_expires = ? WHERE id = ? AND state = \(TaskState.leased.sql) AND lease_token = ?",
                                         now + policy.leaseSeconds, id, token)
                guard renewed == 0 else { continue }
                // A heartbeat sent just before the worker's own report
                // arrives after it: the task is done, by this worker,
                // nothing is lost (saying so made a healthy ingest log
                // "lease lost"). Done by another worker, or cancelled: lost.
                let finishedHere = try db.rows("SELECT state, worker FROM tasks WHERE id = ?", id) {
                    $0.taskState("state") == .done && $0.string("worker") == worker
                }.first ?? false
                if !finishedHere { lost.append(id) }
            }
            return lost
        }
    }
}
