import DataLake
import Foundation
import HashParsing
import RosterAPI
import SQLDatabase

/// `IngestCatalog`: What Status, ListFiles and the scan read.
extension IngestCatalog {

    /// Live versions: what the match server should be serving.
    public func liveVersions() throws -> [(advertiser: String, file: UInt64, path: String, etag: String)] {
        try read { db in
            try db.rows("SELECT advertiser_id, id, path, etag FROM files WHERE state = ? ORDER BY advertiser_id",
                        FileState.live) { ($0.string("advertiser_id"), UInt64($0.int("id")), $0.string("path"), $0.string("etag")) }
        }
    }

    /// A page of advertisers, by id after `after`: each with its live
    /// version (file, bytes, keys, when it went live) and its newest version
    /// of any state. Three queries a page, whatever the catalog's size.
    public func advertisers(after: String, limit: Int) throws -> [AdvertiserSummary] {
        try read { db in
            let rows = try db.rows("SELECT id, max_shrink FROM advertisers WHERE id > ? AND deleted_at IS NULL ORDER BY id LIMIT ?", after, limit) {
                ($0.string("id"), $0.optionalDouble("max_shrink"))
            }
            let ids = rows.map(\.0)
            var summaries: [String: AdvertiserSummary] = [:]
            for (id, maxShrink) in rows { summaries[id] = AdvertiserSummary(advertiserID: id, maxShrink: maxShrink) }
            try query(db, """
                SELECT f.advertiser_id, f.id, f.path, f.size, f.distinct_keys, f.live_at, f.hash_type FROM advertisers a JOIN files f ON f.id = a.live_file_id
                WHERE a.id IN (?)
                """, in: ids) { row in
                let id = row.string("advertiser_id")
                summaries[id]?.liveVersion = UInt64(row.int("id"))
                summaries[id]?.livePath = row.string("path")
                summaries[id]?.liveBytes = UInt64(row.int("size"))
                summaries[id]?.liveKeys = UInt64(row.int("distinct_keys"))
                summaries[id]?.liveAtMs = row.optionalDouble("live_at").map { Int64($0 * 1000) } ?? 0
                summaries[id]?.liveHashType = HashType(rawValue: row.hashKind("hash_type")?.wireValue ?? 0)
            }
            try query(db, """
                SELECT f.advertiser_id, f.id, f.state, f.submitted_at, f.ended_at, f.live_at, g.versions FROM files f
                JOIN (SELECT advertiser_id, MAX(id) AS newest, COUNT(*) AS versions FROM files WHERE advertiser_id IN (?) GROUP BY advertiser_id) g
                ON f.id = g.newest
                """, in: ids) { row in
                let id = row.string("advertiser_id")
                summaries[id]?.latestVersion = UInt64(row.int("id"))
                summaries[id]?.latestState = row.fileState("state")
                summaries[id]?.versions = UInt32(row.int("versions"))
                let changed = [row.optionalDouble("ended_at"), row.optionalDouble("live_at"), row.optionalDouble("submitted_at")].compactMap { $0 }.max() ?? 0
                summaries[id]?.changedAtMs = Int64(changed * 1000)
            }
            return ids.compactMap { summaries[$0] }
        }
    }

    /// What the status page shows beside `status`: the queue in the order
    /// workers will take it (files with leasable tasks, by priority score),
    /// the leases held now, and the workers seen lately.
    public struct Operations: Sendable {
        public struct Queued: Sendable { public var version: UInt64; public var path: String; public var score: Double; public var tasks: Int }
        public struct Lease: Sendable {
            public var worker: String; public var version: UInt64; public var path: String; public var kind: String; public var seq: Int
            public var expiresIn: Double
        }
        public struct Worker: Sendable { public var id: String; public var lastSeenAgo: Double; public var leases: Int }
        public var queue: [Queued] = []
        public var leases: [Lease] = []
        public var workers: [Worker] = []
    }

    /// The files workers may lease from now, best first (at most `limit`).
    public func queue(limit: Int, now: Double) throws -> [Operations.Queued] {
        try read { db in try queue(db, limit: limit, now: now) }
    }

    private func queue(_ db: any SQLDatabase, limit: Int, now: Double) throws -> [Operations.Queued] {
        let ranked = try candidates(db, now: now).prefix(limit)
        var details: [UInt64: (String, Int)] = [:]
        try query(db, """
            SELECT f.id, f.path, (SELECT COUNT(*) FROM tasks t WHERE t.file_id = f.id AND t.state = \(TaskState.queued.sql)) AS queued
            FROM files f WHERE f.id IN (?)
            """, in: ranked.map { $0.file as SQLBindable }) { row in details[UInt64(row.int("id"))] = (row.string("path"), Int(row.int("queued"))) }
        return ranked.map { Operations.Queued(version: $0.file, path: details[$0.file]?.0 ?? "", score: $0.score, tasks: details[$0.file]?.1 ?? 0) }
    }

    public func operations(limit: Int, now: Double) throws -> Operations {
        try read { db in
            var out = Operations()
            out.queue = try queue(db, limit: limit, now: now)
            out.leases = try db.rows("""
                SELECT t.worker, t.file_id, f.path, t.kind, t.seq, t.lease_expires FROM tasks t JOIN files f ON f.id = t.file_id
                WHERE t.state = \(TaskState.leased.sql) ORDER BY t.lease_expires LIMIT ?
                """, limit) { row in
                Operations.Lease(worker: row.string("worker"), version: UInt64(row.int("file_id")), path: row.string("path"),
                                 kind: "\(TaskKind(rawValue: Int32(row.int("kind"))))", seq: Int(row.int("seq")),
                                 expiresIn: (row.optionalDouble("lease_expires") ?? now) - now)
            }
            out.workers = try db.rows("""
                SELECT w.id, w.last_seen, (SELECT COUNT(*) FROM tasks t WHERE t.worker = w.id AND t.state = \(TaskState.leased.sql)) AS leases
                FROM workers w WHERE w.last_seen > ? ORDER BY w.id LIMIT ?
                """, now - 3 * policy.leaseSeconds, limit) { row in
                Operations.Worker(id: row.string("id"), lastSeenAgo: now - row.double("last_seen"), leases: Int(row.int("leases")))
            }
            return out
        }
    }

    /// Active files (their path and etag), for change detection.
    public func activeFiles() throws -> [(id: UInt64, path: String, etag: String)] {
        try read { db in
            // A compaction reads no lake file (it names the delta it compacts).
            try db.rows("SELECT id, path, etag FROM files WHERE state IN \(FileState.sqlList(.queued, .parsing, .merging)) AND kind <> \(VersionKind.compaction.sql)") { (UInt64($0.int("id")), $0.string("path"), $0.string("etag")) }
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
            if !states.isEmpty {
                clauses.append("state IN (" + states.map { _ in "?" }.joined(separator: ", ") + ")")
                args.append(contentsOf: states.map { $0 as SQLBindable })
            }
            if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
            sql += " ORDER BY id DESC LIMIT \(max(1, limit))"
            let ids = try db.rows(sql, arguments: args) { UInt64($0.int(0)) }
            return try ids.map { try fileStatus(db, $0, now: now) }
        }
    }

    /// The catalog summarised (files by state, task counts) and at most
    /// `limit` files in flight, oldest first, then up to 20 versions held by
    /// the shrink guard, then the 20 most recent finished ones: its cost and
    /// size do not grow with the catalog. Each held version is a problem
    /// line too (the first 10), saying how to approve it.
    public func status(limit: Int = 50, now: Double) throws -> StatusResponse {
        try read { db in
            var response = StatusResponse()
            try db.query("SELECT state, COUNT(*) AS n FROM files GROUP BY state") { row in
                response.filesByState[row.fileState("state").name] = UInt32(row.int("n"))
            }
            response.filesInFlight = [FileState.queued, .parsing, .merging, .publishing]
                .reduce(0) { $0 + (response.filesByState[$1.name] ?? 0) }
            let unfinished = try db.rows("SELECT id FROM files WHERE state IN \(FileState.sqlList(.queued, .parsing, .merging, .publishing)) ORDER BY id LIMIT ?", max(0, limit)) { UInt64($0.int(0)) }
            let held = try db.rows("SELECT id FROM files WHERE state = \(FileState.held.sql) ORDER BY id LIMIT 20") { UInt64($0.int(0)) }
            let recent = try db.rows("SELECT id FROM files WHERE state NOT IN \(FileState.sqlList(FileState.unfinished)) ORDER BY id DESC LIMIT 20") { UInt64($0.int(0)) }
            response.files = try (unfinished + held + recent.reversed()).map { try fileStatus(db, $0, now: now) }
            let heldCount = Int(response.filesByState[FileState.held.name] ?? 0)
            response.problems = response.files.filter { $0.state == .held }.prefix(10).map(Self.heldProblem)
            if heldCount > 10 {
                response.problems.append("\(heldCount - 10) more versions are held by the shrink guard; "
                    + #"roster call IngestAdmin.ListFiles '{"states": ["FILE_STATE_HELD"]}' lists them all"#)
            }
            response.advertisersLive = UInt32(try db.rows("SELECT COUNT(*) FROM advertisers WHERE live_file_id IS NOT NULL") { $0.int(0) }.first ?? 0)
            response.workersSeen = UInt32(try db.rows("SELECT COUNT(*) FROM workers WHERE last_seen > ?", now - 3 * policy.leaseSeconds) { $0.int(0) }.first ?? 0)
            try db.query("SELECT state, COUNT(*) AS n FROM tasks WHERE state IN \(TaskState.sqlList(.queued, .leased)) GROUP BY state") { row in
                if row.taskState("state") == .queued {
                    response.tasksQueued = UInt32(row.int("n"))
                } else {
                    response.tasksLeased = UInt32(row.int("n"))
                }
            }
            return response
        }
    }

    /// The problem line of a version the shrink guard holds.
    static func heldProblem(_ file: FileStatus) -> String {
        "version \(file.version) of '\(file.advertiserID)' (\(file.path)) is \(file.error); the live list keeps serving. "
            + "Publish it with: roster approve --advertiser \(file.advertiserID) --version \(file.version)"
    }

    func fileStatus(_ db: any SQLDatabase, _ id: UInt64, now: Double) throws -> FileStatus {
        var status = FileStatus()
        var startedAt: Double?
        var endedAt: Double?
        try db.query("""
            SELECT advertiser_id, path, size, etag, state, blocks_total, merges_total, distinct_keys, error,
                   submitted_at, started_at, live_at, ended_at, hash_type, kind, base_file_id FROM files WHERE id = ?
            """, id) { row in
            status.version = id
            status.advertiserID = row.string("advertiser_id")
            status.path = row.string("path")
            status.size = UInt64(row.int("size"))
            status.etag = row.string("etag")
            status.state = row.fileState("state")
            status.blocksTotal = UInt32(row.int("blocks_total"))
            status.mergesTotal = UInt32(row.int("merges_total"))
            status.distinctKeys = UInt64(row.int("distinct_keys"))
            status.error = row.string("error")
            status.submittedAtMs = Int64(row.double("submitted_at") * 1000)
            startedAt = row.optionalDouble("started_at")
            status.liveAtMs = row.optionalDouble("live_at").map { Int64($0 * 1000) } ?? 0
            endedAt = row.optionalDouble("ended_at")
            status.hashType = HashType(rawValue: row.hashKind("hash_type")?.wireValue ?? 0)
            status.kind = row.versionKind("kind")
            status.baseVersion = row.fileID("base_file_id") ?? 0
        }
        var invalid: [String: UInt64] = [:]
        var lineOffset: UInt64 = 0
        var contiguous = true
        var parsedAt: Double?
        try db.query("SELECT kind, state, lines, keys, bytes, invalid, samples, done_at FROM tasks WHERE file_id = ? ORDER BY kind, seq", id) { row in
            let done = row.taskState("state") == .done
            let kind = row.taskKind("kind")
            if kind == .parse, done, let at = row.optionalDouble("done_at") { parsedAt = max(parsedAt ?? at, at) }
            if kind == .merge {
                if done { status.mergesDone += 1 }
                return
            }
            // A whole-file task is the file's one block and its one merge.
            if kind == .whole, done { status.mergesDone += 1 }
            guard done else {
                contiguous = false
                return
            }
            status.blocksDone += 1
            status.bytesDone += UInt64(row.int("bytes"))
            status.lines += UInt64(row.int("lines"))
            status.keys += UInt64(row.int("keys"))
            for (kind, count) in Self.decodeCounts(row.string("invalid")) { invalid[kind, default: 0] += count }
            // Samples carry their line within the block; they get file line
            // numbers once every earlier block is done.
            if contiguous {
                for sample in row.string("samples").split(separator: ",") where status.invalidSamples.count < 10 {
                    let parts = sample.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let line = UInt64(parts[0]) else { continue }
                    var entry = InvalidLine()
                    entry.line = lineOffset + line + 1
                    entry.kind = String(parts[1])
                    status.invalidSamples.append(entry)
                }
            }
            lineOffset += UInt64(row.int("lines"))
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
        // Merging: the merges' own pace since the last block was parsed.
        if status.state == .merging, let parsedAt, status.mergesDone > 0, status.mergesDone < status.mergesTotal, now > parsedAt {
            let perMerge = (now - parsedAt) / Double(status.mergesDone)
            status.etaSeconds = perMerge * Double(status.mergesTotal - status.mergesDone)
        }
        return status
    }

    /// Attempts that ended because their lease ran out (for tests of faults
    /// that must not expire any).
    @_spi(Testing) public func expiredAttempts() throws -> Int {
        try read { db in Int(try db.rows("SELECT COUNT(*) FROM attempts WHERE outcome = 'expired'") { $0.int(0) }.first ?? 0) }
    }
}
