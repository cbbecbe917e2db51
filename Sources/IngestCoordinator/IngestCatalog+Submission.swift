import DataLake
import Foundation
import HashParsing
import RosterAPI
import SQLDatabase

/// `IngestCatalog`: Submitting files, superseding, refusing and abandoning versions, weights.
extension IngestCatalog {

    public struct Submission: Sendable {
        public var version: UInt64
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

    func submit(_ object: LakeObject, now: Double, rebuilding: (file: UInt64, reason: String)?) throws -> Submission {
        guard let advertiser = object.advertiserID else {
            throw IngestError.invalidPath(object.path)
        }
        if let problem = IngestPolicy.problem(withAdvertiserID: advertiser) { throw IngestError.invalidArgument(problem) }
        return try write { db in
            if let (file, reason) = rebuilding {
                try move(db, file: file, on: .damaged, also: "error = ?, ended_at = ?", reason + "; rebuilt from its file as a new version", now)
            }
            let active: [FileState] = FileState.unfinished + [.live]
            let existing = try db.rows(
                "SELECT id, state FROM files WHERE path = ? AND etag = ? ORDER BY id DESC LIMIT 1", object.path, object.etag
            ) { (UInt64($0.int("id")), $0.fileState("state")) }.first
            if let existing, active.contains(existing.1) {
                return Submission(version: existing.0, advertiserID: advertiser, queued: false, state: existing.1)
            }
            try db.run("INSERT INTO advertisers(id) VALUES (?) ON CONFLICT(id) DO NOTHING", advertiser)
            let isDelta = LakePath.isDelta(object.path)
            if isDelta, object.size > policy.maxDeltaBytes {
                // Recorded as the advertiser's newest file (a later scan
                // does not try it again), rejected with the advice.
                let id = try db.rows("""
                    INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, error, ended_at, modified, collected, kind)
                    VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 2, ?) RETURNING id
                    """, advertiser, object.path, object.size, object.etag, FileState.rejected, now,
                    "a delta of \(object.size) bytes is over the limit of \(policy.maxDeltaBytes) bytes for deltas: drop the whole list as a new file instead",
                    now, object.modified.timeIntervalSince1970, VersionKind.delta) { $0.int(0) }[0]
                try noteNewest(db, object, advertiser: advertiser)
                return Submission(version: UInt64(id), advertiserID: advertiser, queued: false, state: .rejected)
            }
            // A new file starts a deleted advertiser again.
            try db.run("UPDATE advertisers SET deleted_at = NULL WHERE id = ? AND deleted_at IS NOT NULL", advertiser)
            // Unfinished older versions are replaced by this one (held ones
            // too: the newer file is the one to judge), but not one being
            // published: it goes live, then this one replaces it. A delta
            // replaces only held ones (never served, and the delta is a
            // change to the list that is): it goes live after the others,
            // on top of the newest.
            let replaced: [FileState] = isDelta ? [.held] : [.queued, .parsing, .merging, .held]
            let older = try db.rows(
                "SELECT id FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND state IN \(FileState.sqlList(replaced))", advertiser) { UInt64($0.int(0)) }
            for id in older {
                try abandon(db, file: id, on: .superseded, error: "replaced by a newer file (\(object.path))", now: now)
            }
            // A delta is read whole, twice: once for what it adds, once for
            // what it removes (`TaskKind.delta`).
            let blocks = isDelta ? [BlockRange(start: 0, end: object.size), BlockRange(start: 0, end: object.size)]
                : BlockRange.split(size: object.size, blockSize: policy.blockSize(forFileSize: object.size))
            let id = try db.rows("""
                INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, modified, kind)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                """, advertiser, object.path, object.size, object.etag, FileState.queued, now, blocks.count,
                object.modified.timeIntervalSince1970, isDelta ? VersionKind.delta : .list) { $0.int(0) }[0]
            try noteNewest(db, object, advertiser: advertiser)
            // A file of one block is one task, from bytes to segment.
            let kind: TaskKind = isDelta ? .delta : blocks.count == 1 && policy.wholeFileTasks ? .whole : .parse
            for (seq, block) in blocks.enumerated() {
                try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end) VALUES (?, ?, ?, ?, ?)",
                           id, kind, seq, block.start, block.end)
            }
            if kind == .whole || kind == .delta { try db.run("UPDATE files SET merges_total = ? WHERE id = ?", blocks.count, id) }
            try place(db, file: UInt64(id), now: now)
            return Submission(version: UInt64(id), advertiserID: advertiser, queued: true, state: .queued)
        }
    }

    /// Remembers `object` as the newest file `advertiser` was given, if it is.
    func noteNewest(_ db: any SQLDatabase, _ object: LakeObject, advertiser: String) throws {
        if let newest = try newest(db, advertiser: advertiser), !(newest < object.arrival) { return }
        try db.run("UPDATE advertisers SET newest_modified = ?, newest_path = ? WHERE id = ?",
                   object.modified.timeIntervalSince1970, object.path, advertiser)
    }

    /// The newest file `advertiser` was given, in the order of arrival.
    func newest(_ db: any SQLDatabase, advertiser: String) throws -> LakeArrival? {
        try db.rows("SELECT newest_modified, newest_path FROM advertisers WHERE id = ? AND newest_modified IS NOT NULL", advertiser) {
            LakeArrival(modified: $0.double("newest_modified"), path: $0.string("newest_path"))
        }.first
    }

    /// Records `object` as refused without ingesting it (an advertiser id
    /// that cannot be served, say), so that status shows why and later
    /// scans do not try it again.
    public func refuse(_ object: LakeObject, reason: String, now: Double) throws {
        guard let advertiser = object.advertiserID else { throw IngestError.invalidPath(object.path) }
        try write { db in
            try db.run("INSERT INTO advertisers(id) VALUES (?) ON CONFLICT(id) DO NOTHING", advertiser)
            try db.run("""
                INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, error, ended_at, modified, collected)
                VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 2)
                """, advertiser, object.path, object.size, object.etag, FileState.rejected, now, reason, now,
                object.modified.timeIntervalSince1970)
        }
    }

    /// Whether `object` is newer (by modification time, then path) than
    /// every file its advertiser was given before. The scan queues only
    /// such files: deleting the newest file never brings back an older one.
    public func isNewest(_ object: LakeObject) throws -> Bool {
        guard let advertiser = object.advertiserID else { return false }
        return try read { db in
            guard let newest = try newest(db, advertiser: advertiser) else { return true }
            return newest < object.arrival
        }
    }

    /// Ends an unfinished version (`event`: superseded, failed or rejected):
    /// its tasks are cancelled, so late reports are ignored.
    func abandon(_ db: any SQLDatabase, file: UInt64, on event: FileLifecycle.Event, error: String, now: Double) throws {
        try move(db, file: file, on: event, also: "error = ?, ended_at = ?", error, now)
        try db.run("UPDATE tasks SET state = ?, lease_token = NULL WHERE file_id = ? AND state IN \(TaskState.sqlList(.queued, .leased))",
                   TaskState.cancelled, file)
    }

    /// Ends an unfinished version because its file changed or vanished.
    public func abandon(file: UInt64, error: String, now: Double) throws {
        try write { db in
            let state = try db.rows("SELECT state FROM files WHERE id = ?", file) { $0.fileState("state") }.first
            guard let state, [.queued, .parsing, .merging, .held].contains(state) else { return }
            try abandon(db, file: file, on: .superseded, error: error, now: now)
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
}
