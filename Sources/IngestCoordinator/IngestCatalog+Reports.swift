import DataLake
import Foundation
import HashParsing
import RosterAPI
import SegmentStore
import SQLDatabase

/// `IngestCatalog`: What workers report: finished and failed tasks, and what follows from them.
extension IngestCatalog {

    public enum Progress: Sendable, Equatable {
        case none
        /// All parse tasks are done and the version was sent to merging.
        case merging
        /// Too many invalid lines.
        case rejected
        /// All merges are done: the version can be published.
        case readyToPublish
        /// All merges are done, but the shrink guard held the version: it
        /// lost too many of the live version's keys (the reason says how many).
        case held(reason: String)
    }

    /// Records a finished task. Ignored (returns nil) unless `token` still
    /// holds the lease: a late or repeated report changes nothing.
    public func complete(_ report: CompleteTaskRequest, now: Double) throws -> Progress? {
        try write { db in
            guard let (file, kind, attempt, advertiser) = try db.rows("""
                SELECT t.file_id, t.kind, t.attempts, f.advertiser_id FROM tasks t JOIN files f ON f.id = t.file_id
                WHERE t.id = ? AND t.state = \(TaskState.leased.sql) AND t.lease_token = ?
                """, report.taskID, report.leaseToken, map: {
                    (UInt64($0.int("file_id")), $0.taskKind("kind"), Int($0.int("attempts")), $0.string("advertiser_id"))
                }).first
            else { return nil }
            if !report.outputPath.isEmpty {
                // Only a merge's own pack: a report cannot make the match
                // server map some other file.
                let pack = Self.packPath(advertiser: advertiser, file: file)
                guard kind == .merge, report.outputPath == pack, report.outputLength > 0,
                      report.outputOffset <= UInt64(Int64.max), report.outputLength <= UInt64(Int64.max) - report.outputOffset
                else {
                    throw IngestError.invalidArgument("task \(report.taskID) reported its output at \(report.outputPath)@\(report.outputOffset)+\(report.outputLength); only a slice of \(pack) is accepted")
                }
                try db.run("UPDATE tasks SET output = ?, output_offset = ?, output_length = ? WHERE id = ?",
                           report.outputPath, report.outputOffset, report.outputLength, report.taskID)
            } else {
                try db.run("UPDATE tasks SET output_offset = 0, output_length = 0 WHERE id = ?", report.taskID)
            }
            let invalid = Self.encodeCounts(report.invalidByKind)
            let samples = report.invalidSamples.map { "\($0.line):\($0.kind)" }.joined(separator: ",")
            try db.run("""
                UPDATE tasks SET state = \(TaskState.done.sql), lease_token = NULL, lines = ?, keys = ?, skipped = ?, output_keys = ?, bytes = ?,
                    invalid = ?, samples = ?, done_at = ? WHERE id = ?
                """, report.lines, report.keys, report.skipped, report.outputKeys, report.bytes, invalid, samples, now, report.taskID)
            if kind != .merge && kind != .compact {
                // Every block of a file finds the same type (HashSniffer);
                // a worker that predates hash types reports none: MD5.
                try db.run("UPDATE files SET hash_type = ? WHERE id = ?", HashKind(wireValue: report.hashType.rawValue) ?? .md5, file)
            }
            try db.run("UPDATE attempts SET outcome = 'done', ended_at = ? WHERE task_id = ? AND attempt = ?", now, report.taskID, attempt)
            let open = try db.rows("SELECT COUNT(*) FROM tasks WHERE file_id = ? AND kind = ? AND state != \(TaskState.done.sql)",
                                   file, kind) { $0.int(0) }.first ?? 0
            guard open == 0 else { return Progress.none }
            if kind == .parse { return try finishParsing(db, file: file, now: now) }
            if kind == .whole || kind == .delta, try rejectIfInvalid(db, file: file, kind: kind, now: now) { return .rejected }
            let distinct = try db.rows("SELECT SUM(output_keys) FROM tasks WHERE file_id = ? AND kind IN \(TaskKind.sqlList(TaskKind.segmentKinds))", file) { $0.int(0) }.first ?? 0
            // A delta says what it removes, and a compaction keeps every
            // member: the shrink guard judges whole lists only. (A delta's
            // keys are counted when it goes live, on its base.)
            if kind == .delta || kind == .compact {
                try move(db, file: file, on: .merged, also: "distinct_keys = ?", distinct)
                return .readyToPublish
            }
            if let reason = try shrinkHold(db, file: file, advertiser: advertiser, keys: distinct) {
                try move(db, file: file, on: .shrank, also: "distinct_keys = ?, error = ?", distinct, reason)
                return .held(reason: reason)
            }
            try move(db, file: file, on: .merged, also: "distinct_keys = ?", distinct)
            return .readyToPublish
        }
    }

    /// Why `file`, merged with `keys` distinct keys, must be held by the
    /// shrink guard rather than replace its advertiser's live version, under
    /// the advertiser's own limit or the policy's; nil when it may go live.
    func shrinkHold(_ db: any SQLDatabase, file: UInt64, advertiser: String, keys: Int64) throws -> String? {
        guard let (live, liveKeys, own) = try db.rows("""
            SELECT f.id, f.distinct_keys, a.max_shrink FROM advertisers a JOIN files f ON f.id = a.live_file_id WHERE a.id = ?
            """, advertiser, map: { ($0.int("id"), $0.int("distinct_keys"), $0.optionalDouble("max_shrink")) }).first
        else { return nil }
        return IngestPolicy.shrinkHold(keys: keys, liveKeys: liveKeys, liveVersion: UInt64(live), maxShrink: own ?? policy.maxShrink)
    }

    /// Rejects `file` when its parsed tasks of `kind` found more invalid
    /// lines than the threshold allows; true if it did.
    func rejectIfInvalid(_ db: any SQLDatabase, file: UInt64, kind: TaskKind, now: Double) throws -> Bool {
        var lines: Int64 = 0, invalid: Int64 = 0
        try db.query("SELECT lines, invalid FROM tasks WHERE file_id = ? AND kind = ?", file, kind) { row in
            lines += row.int("lines")
            invalid += Self.decodeCounts(row.string("invalid")).values.reduce(0) { $0 + Int64($1) }
        }
        guard invalid > 0, Double(invalid) > policy.invalidThreshold * Double(lines) else { return false }
        let percent = String(format: "%.3f", 100 * Double(invalid) / Double(max(1, lines)))
        let limit = String(format: "%.3f", 100 * policy.invalidThreshold)
        try abandon(db, file: file, on: .rejected,
                    error: "\(invalid) of \(lines) lines are invalid (\(percent)%, limit \(limit)%)", now: now)
        return true
    }

    func finishParsing(_ db: any SQLDatabase, file: UInt64, now: Double) throws -> Progress {
        // Blocks parsed again after a lost run: the merges exist already.
        let merges = try db.rows("SELECT COUNT(*) FROM tasks WHERE file_id = ? AND kind = ?",
                                 file, TaskKind.merge) { $0.int(0) }.first ?? 0
        if merges > 0 {
            try move(db, file: file, on: .parsed)
            try place(db, file: file, now: now)
            return .merging
        }
        if try rejectIfInvalid(db, file: file, kind: .parse, now: now) { return .rejected }
        let runKeys = try db.rows("SELECT SUM(output_keys) FROM tasks WHERE file_id = ? AND kind = \(TaskKind.parse.sql)", file) { $0.int(0) }.first ?? 0
        let ranges = policy.mergeRanges(keys: runKeys)
        for (seq, range) in ranges.enumerated() {
            try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end) VALUES (?, ?, ?, ?, ?)",
                       file, TaskKind.merge, seq, range.low, range.high)
        }
        try move(db, file: file, on: .parsed, also: "merges_total = ?", ranges.count)
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
                "SELECT file_id, attempts, failures FROM tasks WHERE id = ? AND state = \(TaskState.leased.sql) AND lease_token = ?",
                report.taskID, report.leaseToken, map: { (UInt64($0.int("file_id")), Int($0.int("attempts")), Int($0.int("failures")) + 1) }).first
            else { return .ignored }
            try db.run("UPDATE attempts SET outcome = 'failed', ended_at = ?, error = ? WHERE task_id = ? AND attempt = ?",
                       now, report.error, report.taskID, attempt)
            if report.fileChanged {
                let path = try db.rows("SELECT path FROM files WHERE id = ?", file) { $0.string(0) }.first ?? ""
                try abandon(db, file: file, on: .superseded, error: "the file changed while it was being ingested", now: now)
                return .fileChanged(path: path)
            }
            // A merge that lost runs waits for their blocks anyway: no backoff.
            if !report.lostRuns.isEmpty { try reparse(db, file: file, lostRuns: Set(report.lostRuns), now: now) }
            try retryOrFail(db, task: report.taskID, failures: failures, error: report.error,
                            wait: report.lostRuns.isEmpty ? policy.backoff(failures: failures) : 0, now: now)
            let state = try db.rows("SELECT state FROM files WHERE id = ?", file) { $0.fileState("state") }.first
            return state == .failed ? .failed : .retrying
        }
    }

    /// Puts the blocks whose runs a merge could not read back in the queue
    /// and the version back to parsing; its merges wait until they are done.
    /// Runs are not synced to disk (a crash may lose them) because they are
    /// rebuilt this way. The merge's own attempt still counts, so a run
    /// that keeps coming out unreadable ends in a failed version, not a loop.
    func reparse(_ db: any SQLDatabase, file: UInt64, lostRuns: Set<String>, now: Double) throws {
        let done = try db.rows("SELECT id, output FROM tasks WHERE file_id = ? AND kind = ? AND state = \(TaskState.done.sql)",
                               file, TaskKind.parse) { (UInt64($0.int("id")), $0.string("output")) }
        var requeued = 0
        for (id, output) in done where lostRuns.contains(output) {
            try db.run("UPDATE tasks SET state = \(TaskState.queued.sql), lease_token = NULL, lease_expires = NULL WHERE id = ?", id)
            requeued += 1
        }
        if requeued > 0 {
            try move(db, file: file, on: .runsLost)
            try place(db, file: file, now: now)
        }
    }
}
