import DataLake
import Foundation
import HashParsing
import RosterAPI
import SQLDatabase

/// `IngestCatalog`: Versions ready to go live, marking them live or failed, and what garbage collection may delete.
extension IngestCatalog {

    public struct Publication: Sendable, Equatable {
        public var version: UInt64
        public var advertiserID: String
        public var segments: [SegmentRef]
        /// The lake object every block was read from.
        public var path: String
        public var etag: String
    }

    /// Versions whose merges are all done, waiting to be made live.
    public func pendingPublications() throws -> [Publication] {
        try publications(in: .publishing)
    }

    /// Every version in `state` (publishing, or live: what a tier's nodes
    /// must hold), with its segments, oldest first.
    public func publications(in state: FileState) throws -> [Publication] {
        try read { db in
            let files = try db.rows("SELECT id, advertiser_id, path, etag FROM files WHERE state = ? ORDER BY id",
                                    state) { (UInt64($0.int("id")), $0.string("advertiser_id"), $0.string("path"), $0.string("etag")) }
            return try files.map { id, advertiser, path, etag in
                let segments = try db.rows("""
                    SELECT output, output_keys, output_offset, output_length FROM tasks WHERE file_id = ? AND kind IN \(TaskKind.sqlList(.merge, .whole)) ORDER BY seq
                    """, id) { row in
                    var ref = SegmentRef()
                    ref.path = row.string("output")
                    ref.keyCount = UInt64(row.int("output_keys"))
                    ref.offset = UInt64(row.int("output_offset"))
                    ref.length = UInt64(row.int("output_length"))
                    return ref
                }
                return Publication(version: id, advertiserID: advertiser, segments: segments, path: path, etag: etag)
            }
        }
    }

    /// Records that `files` are live, in one transaction; each advertiser's
    /// previous live version is retired.
    public func markLive(files: [UInt64], now: Double) throws {
        guard !files.isEmpty else { return }
        try write { db in
            for file in files {
                guard let advertiser = try db.rows("SELECT advertiser_id FROM files WHERE id = ?", file, map: { $0.string("advertiser_id") }).first,
                      try move(db, file: file, on: .published, also: "live_at = ?, ended_at = ?", now, now)
                else { continue }
                // The advertiser's older live version (one, by the rule above) is retired.
                try db.run("""
                    UPDATE files SET state = \(FileLifecycle.target(of: .retired).sql), ended_at = ?
                    WHERE advertiser_id = ? AND state IN \(FileState.sqlList(FileLifecycle.sources(of: .retired))) AND id < ?
                    """, now, advertiser, file)
                try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = ?", file, advertiser)
            }
        }
    }

    /// Records that `file` will not go live (`.superseded`: a newer version
    /// is live, or its file changed; `.failed`: the match server refused it).
    public func markPublishFailed(file: UInt64, as event: FileLifecycle.Event, error: String, now: Double) throws {
        try write { db in try abandon(db, file: file, on: event, error: error, now: now) }
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
            // SQLite is told to use it (its planner may not); PostgreSQL has
            // no such hint and picks the partial index on its own.
            try db.rows("""
                SELECT id, advertiser_id, state FROM files \(db.engine == .sqlite ? "INDEXED BY files_to_collect" : "")
                WHERE (state = \(FileState.live.sql) AND collected = 0) OR (state IN \(FileState.sqlList(.failed, .rejected, .superseded, .retired)) AND collected < 2)
                """) { row in
                let id = UInt64(row.int("id")), advertiser = row.string("advertiser_id")
                let segments = StorePaths.segments(advertiser: advertiser, file: id), runs = StorePaths.runs(advertiser: advertiser, file: id)
                if row.fileState("state") != .live {
                    return Collectable(file: id, prefixes: [runs, segments], segmentFolder: nil, served: [])
                }
                return Collectable(file: id, prefixes: [runs], segmentFolder: segments, served: [])
            }.map { item in
                guard item.segmentFolder != nil else { return item }
                var item = item
                item.served = Set(try db.rows("SELECT output FROM tasks WHERE file_id = ? AND kind IN \(TaskKind.sqlList(.merge, .whole)) AND state = ?",
                                              item.file, TaskState.done) { $0.string(0) })
                return item
            }
        }
    }

    /// Marks what `collectable` listed for `file` as deleted: 1 = its runs
    /// (it is live), 2 = everything.
    public func markCollected(file: UInt64) throws {
        try write { db in
            try db.run("UPDATE files SET collected = CASE WHEN state = \(FileState.live.sql) THEN 1 ELSE 2 END WHERE id = ?", file)
        }
    }
}
