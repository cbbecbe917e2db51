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
        /// For a delta, its base's segments (its own base's, and so on)
        /// and then its own overlay: the whole list the version makes.
        public var segments: [SegmentRef]
        /// The lake object every block was read from.
        public var path: String
        public var etag: String
        /// Live again by a rollback, with a newer version retired and none in
        /// flight: a node still serving the newer one must take this one
        /// anyway (`PublishRequest.rollback`). A newer version held by the
        /// shrink guard is not in flight: it may never be published.
        public var restored = false
        public var kind: VersionKind = .list
        /// A delta's base: the version it goes on top of (for one being
        /// published, the one live now); nil when it goes on no list.
        public var base: UInt64?
        /// A compaction applied to the version live now (`version`, made by
        /// deltas that arrived while it ran): its segments replace the
        /// layers it compacted beneath the newer overlays, under the live
        /// version's number (`PublishRequest.compacted`).
        public var compaction: UInt64?
        /// The lowest of those newer deltas: its base becomes the compaction.
        public var rebase: UInt64?
        /// Why a compaction can no longer be applied (a list file or a
        /// rollback replaced the layers it compacted): it is superseded.
        public var obsolete: String?

        /// The catalog row this publication makes live: the compaction, or the version.
        public var file: UInt64 { compaction ?? version }
    }

    /// Versions whose merges are all done, waiting to be made live. A delta
    /// waits until no older version of its advertiser is in flight (a
    /// compaction, or a version the shrink guard holds, aside): it applies on top of whatever the versions that
    /// arrived before it leave live. A compaction whose delta is no longer
    /// the live one applies beneath the deltas that came since.
    public func pendingPublications() throws -> [Publication] {
        try read { db in
            try publications(db, where: "f.state = ?", FileState.publishing, waiting: true).map { publication in
                guard publication.kind == .compaction else { return publication }
                return try applying(db, compaction: publication)
            }
        }
    }

    /// How compaction `publication` goes live: as itself when the delta it
    /// compacted is still the live version; else applied to the live version
    /// whose chain of deltas passes through that delta; else obsolete.
    func applying(_ db: any SQLDatabase, compaction publication: Publication) throws -> Publication {
        guard let (compacted, live) = try db.rows("""
            SELECT f.base_file_id, a.live_file_id FROM files f JOIN advertisers a ON a.id = f.advertiser_id WHERE f.id = ?
            """, publication.version, map: { ($0.fileID("base_file_id"), $0.fileID("live_file_id")) }).first,
              let compacted, let live else {
            var obsolete = publication
            obsolete.obsolete = "its advertiser has no live version"
            return obsolete
        }
        if live == compacted { return publication }
        // The deltas above the compacted one in the live chain, newest first.
        let deltas = try deltaChain(db, from: live).deltas
        var applied = publication
        guard let at = deltas.firstIndex(of: compacted), at > 0 else {
            applied.obsolete = "the layers it compacted are no longer live (a list file or a rollback replaced them)"
            return applied
        }
        let above = deltas[..<at]
        let lowest = above.last!
        applied.compaction = publication.version
        applied.version = live
        applied.rebase = lowest
        applied.segments = try ownSegments(db, file: publication.version) + above.reversed().flatMap { try ownSegments(db, file: $0) }
        return applied
    }

    /// Every version in `state` (publishing, or live: what a tier's nodes
    /// must hold), with its segments, oldest first.
    public func publications(in state: FileState) throws -> [Publication] {
        try read { db in try publications(db, where: "f.state = ?", state) }
    }

    /// The versions `condition` selects, with their segments, oldest first;
    /// `waiting`: without deltas that must wait for an older version.
    func publications(_ db: any SQLDatabase, where condition: String, _ value: SQLBindable, waiting: Bool = false) throws -> [Publication] {
        let files = try db.rows("""
            SELECT f.id, f.advertiser_id, f.path, f.etag, f.state, f.kind, f.base_file_id, a.live_file_id,
                   (SELECT COUNT(*) FROM \(db.advertiserFiles(as: "g")) WHERE g.advertiser_id = f.advertiser_id AND g.id > f.id
                      AND g.state = \(FileState.retired.sql)) AS newer_retired,
                   (SELECT COUNT(*) FROM \(db.advertiserFiles(as: "g")) WHERE g.advertiser_id = f.advertiser_id AND g.id > f.id
                      AND g.state IN \(FileState.sqlList(.queued, .parsing, .merging, .publishing))) AS newer_in_flight,
                   (SELECT COUNT(*) FROM \(db.advertiserFiles(as: "g")) WHERE g.advertiser_id = f.advertiser_id AND g.id < f.id
                      AND g.state IN \(FileState.sqlList(.queued, .parsing, .merging, .publishing)) AND g.kind <> \(VersionKind.compaction.sql)) AS older_in_flight
            FROM files f JOIN advertisers a ON a.id = f.advertiser_id WHERE \(condition) ORDER BY f.id
            """, value) { row -> Publication? in
            let state = row.fileState("state"), kind = row.versionKind("kind")
            if waiting, kind == .delta, row.int("older_in_flight") > 0 { return nil }
            // A delta being published goes on the version live now.
            let base = kind != .delta ? nil : state == .publishing ? row.fileID("live_file_id") : row.fileID("base_file_id")
            return Publication(version: UInt64(row.int("id")), advertiserID: row.string("advertiser_id"), segments: [],
                               path: row.string("path"), etag: row.string("etag"),
                               restored: state == .live && row.int("newer_retired") > 0 && row.int("newer_in_flight") == 0,
                               kind: kind, base: base)
        }.compactMap { $0 }
        return try files.map { publication in
            var publication = publication
            publication.segments = try (publication.base.map { try chainSegments(db, file: $0) } ?? []) + ownSegments(db, file: publication.version)
            return publication
        }
    }

    /// The segments a version's own tasks wrote, in task order.
    func ownSegments(_ db: any SQLDatabase, file: UInt64) throws -> [SegmentRef] {
        try db.rows("""
            SELECT output, output_keys, output_offset, output_length FROM tasks WHERE file_id = ? AND kind IN \(TaskKind.sqlList(TaskKind.segmentKinds)) ORDER BY kind, seq
            """, file) { row in
            var ref = SegmentRef()
            ref.path = row.string("output")
            ref.keyCount = UInt64(row.int("output_keys"))
            ref.offset = UInt64(row.int("output_offset"))
            ref.length = UInt64(row.int("output_length"))
            return ref
        }
    }

    /// Every segment of a published version: its own, after its base's for
    /// a delta (and its base's base's, down to a list or a compaction).
    func chainSegments(_ db: any SQLDatabase, file: UInt64) throws -> [SegmentRef] {
        let (deltas, base) = try deltaChain(db, from: file)
        return try ((base.map { [$0] } ?? []) + deltas.reversed()).flatMap { try ownSegments(db, file: $0) }
    }

    /// The deltas `file` is made of, itself first when it is one, down
    /// through their bases (newest first), and the list or compaction at
    /// the bottom (nil: the deltas went on no list). Bounded: compaction
    /// keeps chains short, and a chain is never followed past a few dozen.
    func deltaChain(_ db: any SQLDatabase, from file: UInt64) throws -> (deltas: [UInt64], base: UInt64?) {
        var deltas: [UInt64] = []
        var next: UInt64? = file
        while let id = next, deltas.count <= 4 * policy.maxOverlays + 64 {
            guard let (kind, below) = try db.rows("SELECT kind, base_file_id FROM files WHERE id = ?", id, map: {
                ($0.versionKind("kind"), $0.fileID("base_file_id"))
            }).first else { return (deltas, nil) }
            guard kind == .delta else { return (deltas, id) }
            deltas.append(id)
            next = below
        }
        return (deltas, nil)
    }

    /// Records that `files` are live, in one transaction; each advertiser's
    /// previous live version is retired. `bases`: the base each delta among
    /// them was published on (`Publication.base`). A delta that brings its
    /// overlays past the policy's limits queues a compaction.
    public func markLive(files: [UInt64], bases: [UInt64: UInt64] = [:], now: Double) throws {
        guard !files.isEmpty else { return }
        try write { db in
            for file in files {
                guard let (advertiser, submitted, kind) = try db.rows("SELECT advertiser_id, submitted_at, kind FROM files WHERE id = ?", file,
                                                                      map: { ($0.string("advertiser_id"), $0.double("submitted_at"), $0.versionKind("kind")) }).first,
                      try move(db, file: file, on: .published, also: "live_at = ?, ended_at = ?", now, now)
                else { continue }
                IngestMetrics.timeToLive.recordSeconds(max(0, now - submitted))
                if kind == .delta { try recordBase(db, delta: file, base: bases[file]) }
                // The advertiser's older live version (one, by the rule above) is retired.
                try retireLive(db, advertiser: advertiser, retiring: .olderThan(file), now: now)
                try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = ?", file, advertiser)
                if kind == .delta { try compactIfDue(db, delta: file, advertiser: advertiser, now: now) }
            }
        }
    }

    /// Records that compaction `publication` (`Publication.compaction`) was
    /// applied beneath the live version: it is the base of the lowest delta
    /// above the layers it compacted (which garbage collection then frees),
    /// and, serving only as such a base, ends retired.
    public func markCompacted(_ publication: Publication, now: Double) throws {
        guard let compaction = publication.compaction, let rebase = publication.rebase else { return }
        try write { db in
            guard try move(db, file: compaction, on: .published, also: "live_at = ?, ended_at = ?", now, now) else { return }
            _ = try move(db, file: compaction, on: .retired)
            try db.run("UPDATE files SET base_file_id = ? WHERE id = ? AND kind = ?", compaction, rebase, VersionKind.delta)
            // The deltas above it may be past the limits on their own.
            try compactIfDue(db, delta: publication.version, advertiser: publication.advertiserID, now: now)
        }
    }

    /// Records the base a delta went live on, and its keys as counted on it:
    /// the base's, plus what it adds, less what it removes (an estimate: a
    /// delta may add a member already there or remove one that is not).
    func recordBase(_ db: any SQLDatabase, delta: UInt64, base: UInt64?) throws {
        let baseKeys = try base.map { try db.rows("SELECT distinct_keys FROM files WHERE id = ?", $0) { $0.int(0) }.first ?? 0 } ?? 0
        let (adds, removes) = try overlayKeys(db, delta: delta)
        try db.run("UPDATE files SET base_file_id = ?, distinct_keys = ? WHERE id = ?", base, max(0, baseKeys + adds - removes), delta)
    }

    /// The keys a delta's overlay adds and removes.
    func overlayKeys(_ db: any SQLDatabase, delta: UInt64) throws -> (adds: Int64, removes: Int64) {
        var counts: (Int64, Int64) = (0, 0)
        try db.query("SELECT seq, output_keys FROM tasks WHERE file_id = ? AND kind = ?", delta, TaskKind.delta) { row in
            if row.int("seq") == 0 { counts.0 += row.int("output_keys") } else { counts.1 += row.int("output_keys") }
        }
        return counts
    }

    /// Queues a compaction of the live `delta`'s layers into one new base
    /// when they are more than `IngestPolicy.maxOverlays` deltas, or name
    /// more than `IngestPolicy.compactionShare` of the base's keys (a delta
    /// on no list is compacted at once). The compaction is a version of its
    /// own, built from the segments alone (never the lake), behind every
    /// file already queued; a newer file or delta simply comes after it.
    func compactIfDue(_ db: any SQLDatabase, delta: UInt64, advertiser: String, now: Double) throws {
        // One at a time: the one running is applied beneath the deltas
        // that arrive meanwhile, and what is left is judged then.
        let running = try db.rows("""
            SELECT COUNT(*) FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND kind = \(VersionKind.compaction.sql)
              AND state IN \(FileState.sqlList(FileState.unfinished))
            """, advertiser) { $0.int(0) }.first ?? 0
        guard running == 0 else { return }
        let (deltas, bottom) = try deltaChain(db, from: delta)
        let layers = deltas.count
        let named = try deltas.reduce(Int64(0)) { sum, id in
            let (adds, removes) = try overlayKeys(db, delta: id)
            return sum + adds + removes
        }
        let base = try bottom.map { id in (id: id, keys: try db.rows("SELECT distinct_keys FROM files WHERE id = ?", id) { $0.int(0) }.first ?? 0) }
        let due = base == nil || layers > policy.maxOverlays || Double(named) > policy.compactionShare * Double(base!.keys)
        guard due else { return }
        let row = try db.rows("SELECT path, etag, modified, hash_type, distinct_keys FROM files WHERE id = ?", delta) { row in
            (row.string("path"), row.string("etag"), row.double("modified"), row.hashKind("hash_type") ?? .md5, row.int("distinct_keys"))
        }.first
        guard let (path, etag, modified, hashKind, keys) = row else { return }
        // In merging from the start: its one task is a merge of segments,
        // ranked as a file of the list's size (behind small files).
        let id = try db.rows("""
            INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total, merges_total, modified, kind, base_file_id, hash_type)
            VALUES (?, ?, ?, ?, ?, ?, 0, 1, ?, ?, ?, ?) RETURNING id
            """, advertiser, path, max(1, keys) * 16, etag, FileState.merging, now, modified, VersionKind.compaction, delta, hashKind) { UInt64($0.int(0)) }[0]
        try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end) VALUES (?, ?, 0, 0, 0)", id, TaskKind.compact)
        try place(db, file: id, now: now)
        IngestMetrics.compactions.increment()
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
        /// What `markCollected` records once done: 1, the runs; 2, everything.
        public var level: Int
    }

    /// Store folders that are no longer needed: all of a live version's runs
    /// and stray files beside its segments; everything of versions that
    /// ended without being live; and of retired versions, their runs, and
    /// their segments too once `keepRetired` newer retired versions of the
    /// advertiser exist (the newest `keepRetired` stay ready for a rollback).
    public func collectable(keepRetired: Int = 0) throws -> [Collectable] {
        try read { db in
            // Through the partial index `files_to_collect` (migration 3): the
            // cost is the number of files to collect (and of retired versions
            // kept), not of live ones. SQLite is told to use it (its planner
            // may not); PostgreSQL has no such hint and picks the partial index on its own.
            try db.rows("""
                SELECT f.id, f.advertiser_id, f.state, f.collected,
                       (SELECT COUNT(*) FROM \(db.advertiserFiles(as: "g")) WHERE g.advertiser_id = f.advertiser_id AND g.state = \(FileState.retired.sql) AND g.id > f.id) AS newer_retired,
                       (SELECT COUNT(*) FROM advertisers a WHERE a.id = f.advertiser_id AND a.deleted_at IS NOT NULL) AS deleted,
                       (SELECT COUNT(*) FROM files d WHERE d.base_file_id = f.id AND d.kind = \(VersionKind.delta.sql) AND d.collected < 2
                          AND d.state IN \(FileState.sqlList(.live, .retired))) AS dependents
                FROM files AS f \(db.engine == .sqlite ? "INDEXED BY files_to_collect" : "")
                WHERE (f.state = \(FileState.live.sql) AND f.collected = 0) OR (f.state IN \(FileState.sqlList(.failed, .rejected, .superseded, .retired)) AND f.collected < 2)
                """) { row -> Collectable? in
                let id = UInt64(row.int("id")), advertiser = row.string("advertiser_id")
                let segments = StorePaths.segments(advertiser: advertiser, file: id), runs = StorePaths.runs(advertiser: advertiser, file: id)
                switch row.fileState("state") {
                case .live:
                    return Collectable(file: id, prefixes: [runs], segmentFolder: segments, served: [], level: 1)
                case .retired where (row.int("newer_retired") < Int64(keepRetired) || row.int("dependents") > 0) && row.int("deleted") == 0:
                    // Kept for a rollback, or as the base of a delta that
                    // serves or is kept: its runs only, once.
                    return row.int("collected") == 0 ? Collectable(file: id, prefixes: [runs], segmentFolder: nil, served: [], level: 1) : nil
                default:
                    return Collectable(file: id, prefixes: [runs, segments], segmentFolder: nil, served: [], level: 2)
                }
            }.compactMap { $0 }.map { item in
                guard item.segmentFolder != nil else { return item }
                var item = item
                item.served = Set(try db.rows("SELECT output FROM tasks WHERE file_id = ? AND kind IN \(TaskKind.sqlList(TaskKind.segmentKinds)) AND state = ?",
                                              item.file, TaskState.done) { $0.string(0) })
                return item
            }
        }
    }

    /// Marks what `collectable` listed for `file` as deleted: its `level`
    /// (1: its runs, 2: everything).
    public func markCollected(file: UInt64, level: Int) throws {
        try write { db in
            try db.run("UPDATE files SET collected = ? WHERE id = ? AND collected < ?", level, file, level)
        }
    }

    /// What a rollback of `advertiser` would serve: `version`, or when 0 the
    /// newest retired version whose segments are kept (one of the newest
    /// `keepRetired` retired ones, which garbage collection leaves alone), with
    /// its segments; and the version live now.
    public func rollbackTarget(advertiser: String, version: UInt64, keepRetired: Int) throws -> (target: Publication, live: UInt64?) {
        try read { db in
            if try db.rows("SELECT id FROM advertisers WHERE id = ? AND deleted_at IS NOT NULL", advertiser, map: { $0.string(0) }).first != nil {
                throw IngestError.failedPrecondition("advertiser '\(advertiser)' was deleted (its data with it): drop a new file into its folder to start it again")
            }
            guard try db.rows("SELECT id FROM advertisers WHERE id = ?", advertiser, map: { $0.string(0) }).first != nil else {
                throw IngestError.notFound("no advertiser '\(advertiser)'")
            }
            let live = try db.rows("SELECT live_file_id FROM advertisers WHERE id = ? AND live_file_id IS NOT NULL", advertiser) { UInt64($0.int(0)) }.first
            let kept = try db.rows("""
                SELECT id FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND state = \(FileState.retired.sql) AND collected < 2 ORDER BY id DESC LIMIT ?
                """, advertiser, max(0, keepRetired)) { UInt64($0.int(0)) }
            let target: UInt64
            if version == 0 {
                guard let newest = kept.first else {
                    throw IngestError.failedPrecondition("advertiser '\(advertiser)' has no earlier version whose segments are kept (the coordinator keeps the segments of \(keepRetired) earlier version(s): --keep-versions)")
                }
                target = newest
            } else {
                guard kept.contains(version) else {
                    let state = try db.rows("SELECT state FROM files WHERE id = ? AND advertiser_id = ?", version, advertiser) { $0.fileState("state") }.first
                    switch state {
                    case nil: throw IngestError.notFound("advertiser '\(advertiser)' has no version \(version)")
                    case .live?: throw IngestError.failedPrecondition("version \(version) of '\(advertiser)' is live already")
                    case .retired?: throw IngestError.failedPrecondition("the segments of version \(version) of '\(advertiser)' are no longer kept (the coordinator keeps those of the \(keepRetired) newest earlier version(s): --keep-versions)")
                    case let other?: throw IngestError.failedPrecondition("version \(version) of '\(advertiser)' was never live (\(other.name)): only a retired version can be served again")
                    }
                }
                target = version
            }
            guard let publication = try publications(db, where: "f.id = ?", target).first else {
                throw IngestError.failedPrecondition("advertiser '\(advertiser)' has no version \(target)")
            }
            return (publication, live)
        }
    }

    /// Records a rollback the match server has made: `version` is live again
    /// and the version that was live is retired (its segments kept in turn).
    public func markRolledBack(advertiser: String, to version: UInt64, now: Double) throws {
        try write { db in
            guard try move(db, file: version, on: .restored, also: "live_at = ?", now) else {
                throw IngestError.failedPrecondition("version \(version) of '\(advertiser)' is no longer retired")
            }
            try retireLive(db, advertiser: advertiser, retiring: .allBut(version), now: now)
            try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = ?", version, advertiser)
            // Nodes of a tier recorded as holding it (before it was retired)
            // serve the newer version now: the balance places it again.
            try db.run("DELETE FROM holdings WHERE file_id = ?", version)
        }
    }

    /// Deletes an advertiser: its live version is retired, its versions in
    /// flight abandoned, and it is marked deleted, so that garbage
    /// collection removes all its data (no version is kept for a rollback)
    /// and it is neither served nor listed until a new file arrives.
    /// Returns the version that was live, and how many versions it had.
    public func deleteAdvertiser(_ advertiser: String, now: Double) throws -> (live: UInt64?, versions: Int) {
        try write { db in
            guard try db.rows("SELECT id FROM advertisers WHERE id = ? AND deleted_at IS NULL", advertiser, map: { $0.string(0) }).first != nil else {
                throw IngestError.notFound("no advertiser '\(advertiser)'")
            }
            let live = try db.rows("SELECT live_file_id FROM advertisers WHERE id = ? AND live_file_id IS NOT NULL", advertiser) { UInt64($0.int(0)) }.first
            let inFlight = try db.rows("SELECT id FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND state IN \(FileState.sqlList(FileState.unfinished))",
                                       advertiser) { UInt64($0.int(0)) }
            for id in inFlight { try abandon(db, file: id, on: .superseded, error: "its advertiser was deleted", now: now) }
            try retireLive(db, advertiser: advertiser, retiring: .all, now: now)
            try db.run("UPDATE advertisers SET live_file_id = NULL, deleted_at = ? WHERE id = ?", now, advertiser)
            let versions = try db.rows("SELECT COUNT(*) FROM files WHERE advertiser_id = ?", advertiser) { Int($0.int(0)) }.first ?? 0
            return (live, versions)
        }
    }

    /// What `approve` published: the version, its keys, and the live version's.
    public struct Approval: Sendable, Equatable {
        public var version: UInt64
        public var keys: UInt64
        public var liveKeys: UInt64
    }

    /// Publishes a version the shrink guard held (`approved`: held → publishing):
    /// `version`, or when 0 the advertiser's newest held version. The
    /// publish loop then makes it live as any other.
    public func approve(advertiser: String, version: UInt64) throws -> Approval {
        try write { db in
            guard try db.rows("SELECT id FROM advertisers WHERE id = ?", advertiser, map: { $0.string(0) }).first != nil else {
                throw IngestError.notFound("no advertiser '\(advertiser)'")
            }
            let target: UInt64
            if version == 0 {
                guard let newest = try db.rows("SELECT id FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND state = \(FileState.held.sql) ORDER BY id DESC LIMIT 1",
                                               advertiser, map: { UInt64($0.int(0)) }).first else {
                    throw IngestError.failedPrecondition("advertiser '\(advertiser)' has no version held by the shrink guard")
                }
                target = newest
            } else {
                switch try db.rows("SELECT state FROM files WHERE id = ? AND advertiser_id = ?", version, advertiser, map: { $0.fileState("state") }).first {
                case nil: throw IngestError.notFound("advertiser '\(advertiser)' has no version \(version)")
                case .held?: target = version
                case let other?: throw IngestError.failedPrecondition("version \(version) of '\(advertiser)' is \(other.name), not held: only a held version can be approved")
                }
            }
            let keys = try db.rows("SELECT distinct_keys FROM files WHERE id = ?", target) { UInt64($0.int(0)) }.first ?? 0
            let liveKeys = try db.rows("SELECT f.distinct_keys FROM advertisers a JOIN files f ON f.id = a.live_file_id WHERE a.id = ?",
                                       advertiser) { UInt64($0.int(0)) }.first ?? 0
            guard try move(db, file: target, on: .approved, also: "error = ''") else {
                throw IngestError.failedPrecondition("version \(target) of '\(advertiser)' is no longer held")
            }
            return Approval(version: target, keys: keys, liveKeys: liveKeys)
        }
    }

    /// Sets `advertiser`'s own shrink guard (`IngestPolicy.maxShrink`), or
    /// with nil returns it to the coordinator's.
    public func setMaxShrink(advertiser: String, maxShrink: Double?) throws {
        if let maxShrink, let problem = IngestPolicy.problem(withMaxShrink: maxShrink) { throw IngestError.invalidArgument(problem) }
        try write { db in
            guard try db.run("UPDATE advertisers SET max_shrink = ? WHERE id = ?", maxShrink, advertiser) > 0 else {
                throw IngestError.notFound("no advertiser '\(advertiser)'")
            }
        }
    }

    /// Which of `advertisers` are deleted (and have no version live since).
    public func deleted(among advertisers: [String]) throws -> Set<String> {
        try read { db in
            var out: Set<String> = []
            try query(db, "SELECT id FROM advertisers WHERE id IN (?) AND deleted_at IS NOT NULL AND live_file_id IS NULL", in: advertisers) { row in
                out.insert(row.string("id"))
            }
            return out
        }
    }

    /// Whether a version of `advertiser` is being published (a tier may hold it already).
    public func hasVersionPublishing(advertiser: String) throws -> Bool {
        try read { db in
            try db.rows("SELECT COUNT(*) FROM \(db.advertiserFiles()) WHERE advertiser_id = ? AND state = ?", advertiser, FileState.publishing) { $0.int(0) }.first ?? 0 > 0
        }
    }

    /// Which of an advertiser's live versions `retireLive` retires.
    enum Retiring {
        /// Those older than a version that went live.
        case olderThan(UInt64)
        /// Every one but a version made live again.
        case allBut(UInt64)
        /// Every one (the advertiser is deleted).
        case all
    }

    /// Retires an advertiser's live versions (the `retired` event), inside a write.
    func retireLive(_ db: any SQLDatabase, advertiser: String, retiring: Retiring, now: Double) throws {
        let sql = """
            UPDATE \(db.advertiserFiles()) SET state = \(FileLifecycle.target(of: .retired).sql), ended_at = ?
            WHERE advertiser_id = ? AND state IN \(FileState.sqlList(FileLifecycle.sources(of: .retired)))
            """
        switch retiring {
        case .olderThan(let version): try db.run(sql + " AND id < ?", now, advertiser, version)
        case .allBut(let version): try db.run(sql + " AND id <> ?", now, advertiser, version)
        case .all: try db.run(sql, now, advertiser)
        }
    }
}
