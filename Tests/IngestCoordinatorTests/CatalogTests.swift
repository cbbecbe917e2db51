import DataLake
import Foundation
@testable import IngestCoordinator
import RosterAPI
import SQLite
import IngestWorker
import SegmentStore
import TestSupport
import SQLDatabase
import XCTest

/// The catalog's behaviour, on SQLite; `PostgresCatalogTests` runs every
/// test again on PostgreSQL.
class CatalogTests: XCTestCase, CatalogEngine {
    var cleanups: [() -> Void] = []

    override func tearDown() {
        for cleanup in cleanups.reversed() { cleanup() }
        cleanups = []
    }

    func makeDatabase() throws -> any SQLDatabase { try sqliteDatabase() }

    private func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString).sqlite").path
    }

    private func object(_ path: String, size: Int64, etag: String = "e1") -> LakeObject {
        LakeObject(path: path, size: size, etag: etag, modified: Date(timeIntervalSince1970: 0))
    }

    func testMigrationsApplyOnceAndANewerCatalogIsRefused() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var policy = IngestPolicy()
        policy.blockSize = 100
        do {
            let catalog = try IngestCatalog(path: path, policy: policy)
            _ = try catalog.submit(object("a/f", size: 250), now: 1)
        }
        // Reopening keeps the data and does not re-run migrations.
        let reopened = try IngestCatalog(path: path, policy: policy)
        XCTAssertEqual(try reopened.files(advertiser: "a", states: [], limit: 10, now: 2).first?.blocksTotal, 3)
        let db = try Database(path: path)
        XCTAssertEqual(try db.schemaVersion, 11)
        try db.execute("PRAGMA user_version = 99")
        XCTAssertThrowsError(try IngestCatalog(path: path, policy: policy)) { error in
            XCTAssertTrue("\(error)".contains("schema version 99"), "\(error)")
        }
    }

    /// Migration 6 turns a catalog that stored states as numbers into one
    /// that stores their names, keeping every row's state, and the database
    /// then refuses a state outside the life cycle.
    func testStatesAreStoredByNameAndCatalogsFromBeforeAreConverted() throws {
        let db = try makeDatabase()
        try db.migrate(Array(CatalogSchema.migrations(for: db.engine).prefix(5)))
        try db.run("INSERT INTO advertisers(id) VALUES ('a')")
        for (path, state) in [("a/1", 9), ("a/2", 5), ("a/3", 3)] {
            try db.run("INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total) VALUES ('a', ?, 10, 'e', ?, 0, 1)",
                       path, state)
        }
        try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end, state) VALUES (3, 1, 0, 0, 10, 2), (3, 1, 1, 10, 20, 0)")

        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        XCTAssertEqual(try db.schemaVersion, CatalogSchema.migrations.count)
        let files = try catalog.files(advertiser: "a", states: [], limit: 10, now: 1)
        XCTAssertEqual(files.map(\.state), [.merging, .live, .retired])
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [.live], limit: 10, now: 1).map(\.version), [2])
        XCTAssertEqual(try db.rows("SELECT state FROM files ORDER BY id") { $0.string("state") }, ["retired", "live", "merging"])
        XCTAssertEqual(try db.rows("SELECT state FROM tasks ORDER BY seq") { $0.string("state") }, ["done", "queued"])
        // The one queued block is still there to lease.
        XCTAssertEqual(try catalog.lease(worker: "w", max: 5, now: 2).map(\.version), [3])
        XCTAssertThrowsError(try db.run("UPDATE files SET state = 'bogus' WHERE id = 1"))
        XCTAssertThrowsError(try db.run("UPDATE tasks SET state = '2' WHERE file_id = 3"))
    }

    /// Migration 9 widens `files.state` for 'held' (a rebuilt column): every
    /// row keeps its state, garbage collection still finds its files, and a
    /// state outside the life cycle is still refused.
    func testMigration9KeepsEveryStateAndAllowsHeld() throws {
        let db = try makeDatabase()
        try db.migrate(Array(CatalogSchema.migrations(for: db.engine).prefix(8)))
        try db.run("INSERT INTO advertisers(id) VALUES ('a')")
        for (path, state) in [("a/1", "retired"), ("a/2", "live"), ("a/3", "merging")] {
            try db.run("INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total) VALUES ('a', ?, 10, 'e', ?, 0, 1)",
                       path, state)
        }
        try db.run("UPDATE advertisers SET live_file_id = 2")
        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        XCTAssertEqual(try db.schemaVersion, CatalogSchema.migrations.count)
        XCTAssertEqual(try db.rows("SELECT state FROM files ORDER BY id") { $0.string("state") }, ["retired", "live", "merging"])
        XCTAssertEqual(Set(try catalog.collectable().map(\.file)), [1, 2])
        try db.run("UPDATE files SET state = 'held' WHERE id = 3")
        XCTAssertThrowsError(try db.run("UPDATE files SET state = 'bogus' WHERE id = 3"))
        XCTAssertEqual(try catalog.advertisers(after: "", limit: 10).first?.maxShrink, nil)
    }

    /// Runs one whole-file version of `path` through the catalog to merged,
    /// with `keys` distinct keys: what the shrink guard then decides.
    private func ingest(_ catalog: IngestCatalog, _ path: String, keys: Int64, etag: String, now: Double) throws -> (UInt64, IngestCatalog.Progress?) {
        let version = try catalog.submit(object(path, size: 10, etag: etag), now: now).version
        let tasks = try catalog.lease(worker: "w", max: 10, now: now)
        XCTAssertEqual(tasks.map(\.version), [version])
        var report = CompleteTaskRequest()
        report.taskID = tasks[0].taskID
        report.leaseToken = tasks[0].leaseToken
        report.lines = UInt64(keys)
        report.keys = UInt64(keys)
        report.outputKeys = UInt64(keys)
        return (version, try catalog.complete(report, now: now))
    }

    /// The shrink guard: a version that loses more than --max-shrink of the
    /// live version's keys (an empty file, one line, a 60% shrink) is held,
    /// not published, with its reason in status; a newer file replaces a held
    /// one; approval publishes it; a small shrink or the same size goes on;
    /// an advertiser's own limit overrides the coordinator's.
    func testTheShrinkGuardHoldsAVersionThatLosesTooManyKeys() throws {
        let catalog = try makeCatalog()
        let (v1, first) = try ingest(catalog, "a/1", keys: 1000, etag: "e1", now: 1)
        XCTAssertEqual(first, .readyToPublish, "nothing live: nothing to protect")
        try catalog.markLive(files: [v1], now: 1)

        let (v2, empty) = try ingest(catalog, "a/2", keys: 0, etag: "e2", now: 2)
        guard case .held(let reason)? = empty else { return XCTFail("\(String(describing: empty))") }
        XCTAssertTrue(reason.contains("has no keys where live version \(v1) has 1000"), reason)
        XCTAssertEqual(try catalog.pendingPublications().map(\.version), [], "a held version is not published")
        var status = try catalog.status(now: 2)
        XCTAssertEqual(status.filesByState["held"], 1)
        XCTAssertEqual(status.filesInFlight, 0)
        XCTAssertEqual(status.files.first { $0.version == v2 }?.state, .held)
        XCTAssertEqual(status.problems.count, 1)
        XCTAssertTrue(status.problems[0].contains("roster approve --advertiser a --version \(v2)"), status.problems[0])
        XCTAssertEqual(try catalog.collectable().map(\.file).filter { $0 == v2 }, [], "a held version's segments are kept")

        // One line, then a 60% shrink: each held, each replacing the held one before.
        let (v3, oneLine) = try ingest(catalog, "a/3", keys: 1, etag: "e3", now: 3)
        XCTAssertEqual(oneLine, .held(reason: "held by the shrink guard: it has 1 keys where live version \(v1) has 1000 (99.9% fewer; at most 50% without approval)"))
        let (v4, shrunk) = try ingest(catalog, "a/4", keys: 400, etag: "e4", now: 4)
        guard case .held? = shrunk else { return XCTFail("\(String(describing: shrunk))") }
        let states = Dictionary(uniqueKeysWithValues: try catalog.files(advertiser: "a", states: [], limit: 10, now: 4).map { ($0.version, $0.state) })
        XCTAssertEqual(states, [v1: .live, v2: .superseded, v3: .superseded, v4: .held])

        // Approval publishes it; errors name what is wrong.
        XCTAssertThrowsError(try catalog.approve(advertiser: "nobody", version: 0)) { XCTAssertTrue("\($0)".contains("no advertiser"), "\($0)") }
        XCTAssertThrowsError(try catalog.approve(advertiser: "a", version: v1)) { XCTAssertTrue("\($0)".contains("is live, not held"), "\($0)") }
        XCTAssertEqual(try catalog.approve(advertiser: "a", version: 0), IngestCatalog.Approval(version: v4, keys: 400, liveKeys: 1000))
        XCTAssertThrowsError(try catalog.approve(advertiser: "a", version: 0)) { XCTAssertTrue("\($0)".contains("has no version held"), "\($0)") }
        XCTAssertEqual(try catalog.pendingPublications().map(\.version), [v4])
        try catalog.markLive(files: [v4], now: 5)
        status = try catalog.status(now: 5)
        XCTAssertEqual(status.problems, [])

        // The same size, and a shrink within the limit, go on.
        let (_, same) = try ingest(catalog, "a/5", keys: 400, etag: "e5", now: 6)
        XCTAssertEqual(same, .readyToPublish)
        let (v6, smaller) = try ingest(catalog, "a/6", keys: 201, etag: "e6", now: 7)
        XCTAssertEqual(smaller, .readyToPublish, "v5 is still publishing, v4's 400 keys are live: 201 is within 50%")
        try catalog.markLive(files: [v6], now: 7)

        // The advertiser's own limit: 100% lets an empty list through; back to the default holds it again.
        XCTAssertThrowsError(try catalog.setMaxShrink(advertiser: "a", maxShrink: 1.5))
        XCTAssertThrowsError(try catalog.setMaxShrink(advertiser: "nobody", maxShrink: 1))
        try catalog.setMaxShrink(advertiser: "a", maxShrink: 1)
        XCTAssertEqual(try catalog.advertisers(after: "", limit: 10).first?.maxShrink, 1)
        let (_, allowed) = try ingest(catalog, "a/7", keys: 0, etag: "e7", now: 8)
        XCTAssertEqual(allowed, .readyToPublish)
        try catalog.setMaxShrink(advertiser: "a", maxShrink: nil)
        XCTAssertNil(try catalog.advertisers(after: "", limit: 10).first?.maxShrink)
        let (_, again) = try ingest(catalog, "a/8", keys: 0, etag: "e8", now: 9)
        guard case .held? = again else { return XCTFail("\(String(describing: again))") }
    }

    /// Status names the first ten held versions, one problem line each, and
    /// says how to list the rest: its size does not grow with the catalog.
    func testStatusNamesTenHeldVersionsAndCountsTheRest() throws {
        let catalog = try makeCatalog()
        for i in 0..<12 {
            let (live, _) = try ingest(catalog, "adv\(i)/1", keys: 100, etag: "e1", now: 1)
            try catalog.markLive(files: [live], now: 1)
            let (_, held) = try ingest(catalog, "adv\(i)/2", keys: 0, etag: "e2", now: 2)
            guard case .held? = held else { return XCTFail("adv\(i): \(String(describing: held))") }
        }
        let problems = try catalog.status(now: 3).problems
        XCTAssertEqual(problems.count, 11, "\(problems)")
        XCTAssertEqual(problems.filter { $0.contains("roster approve --advertiser adv") }.count, 10)
        XCTAssertEqual(problems.last, #"2 more versions are held by the shrink guard; roster call IngestAdmin.ListFiles '{"states": ["FILE_STATE_HELD"]}' lists them all"#)
    }

    /// A version rolled back to, with a newer one held by the shrink guard,
    /// is still published as a rollback (a node serving the newer version
    /// must take it): a held version is not in flight, it may never go live.
    func testARollbackPastAHeldVersionIsStillPublishedAsARollback() throws {
        let catalog = try makeCatalog()
        let (v1, _) = try ingest(catalog, "a/1", keys: 1000, etag: "e1", now: 1)
        try catalog.markLive(files: [v1], now: 1)
        let (v2, _) = try ingest(catalog, "a/2", keys: 1000, etag: "e2", now: 2)
        try catalog.markLive(files: [v2], now: 2)
        let (_, held) = try ingest(catalog, "a/3", keys: 0, etag: "e3", now: 3)
        guard case .held? = held else { return XCTFail("\(String(describing: held))") }
        try catalog.markRolledBack(advertiser: "a", to: v1, now: 4)
        let live = try XCTUnwrap(try catalog.publications(in: .live).first)
        XCTAssertEqual(live.version, v1)
        XCTAssertTrue(live.restored, "published as a rollback although a newer version is held")
    }

    /// Marking a version live reads the advertiser's own versions, not every
    /// live one: with no statistics SQLite read all live versions per
    /// version marked (its plan took `files_by_state`), which made a bulk
    /// drop of 100,000 lists quadratic. Counted in SQLite's VM steps (exact,
    /// not timed): marking one more live costs the same with 4,000 lists live
    /// as with 500.
    func testMarkingAVersionLiveDoesNotReadEveryLiveList() throws {
        let db = try sqliteDatabase()
        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        func stepsToMarkOneLive(after live: Int, from first: Int) throws -> Int64 {
            try db.transaction {
                for i in first..<live {
                    try db.run("INSERT INTO advertisers(id) VALUES (?)", "adv\(i)")
                    try db.run("INSERT INTO files(advertiser_id, path, size, etag, state, submitted_at, blocks_total) VALUES (?, ?, 10, 'e', 'live', 0, 1)",
                               "adv\(i)", "adv\(i)/f")
                }
            }
            let version = try catalog.submit(object("new\(live)/f", size: 10), now: 1).version
            try db.run("UPDATE files SET state = 'publishing' WHERE id = ?", version)
            let before = (db as! Database).steps
            try catalog.markLive(files: [version], now: 2)
            return (db as! Database).steps - before
        }
        let few = try stepsToMarkOneLive(after: 500, from: 0)
        let many = try stepsToMarkOneLive(after: 4_000, from: 500)
        XCTAssertLessThan(many, few * 2, "marking one version live read the other live lists: \(few) steps with 500, \(many) with 4,000")
    }

    /// A superseded version is collected whole (its runs and segments), once.
    func testEndedVersionsAreCollectedOnce() throws {
        let catalog = try makeCatalog()
        let first = try catalog.submit(object("a/1", size: 10), now: 0)
        XCTAssertEqual(try catalog.collectable().map(\.file), [])
        _ = try catalog.submit(object("a/2", size: 10), now: 1)
        let items = try catalog.collectable()
        XCTAssertEqual(items.map(\.file), [first.version])
        XCTAssertEqual(items.first?.prefixes.count, 2, "runs and segments")
        XCTAssertNil(items.first?.segmentFolder)
        try catalog.markCollected(file: first.version, level: items.first { $0.file == first.version }!.level)
        XCTAssertEqual(try catalog.collectable().map(\.file), [])
    }

    /// --keep-versions: the newest retired versions keep their segments (runs
    /// go), older ones go whole; a rollback restores a kept one and retires
    /// the live one, which is kept in turn (a roll forward works too).
    func testRetiredVersionsAreKeptForARollbackAndRestored() throws {
        let db = try makeDatabase()
        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        var ids: [UInt64] = []
        for i in 1...4 { ids.append(try catalog.submit(object("a/\(i)", size: 10, etag: "e\(i)"), now: Double(i)).version) }
        try db.run("UPDATE files SET state = \(FileState.retired.sql) WHERE id IN (?, ?, ?)", ids[0], ids[1], ids[2])
        try db.run("UPDATE files SET state = \(FileState.live.sql) WHERE id = ?", ids[3])
        try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = 'a'", ids[3])

        let items = Dictionary(uniqueKeysWithValues: try catalog.collectable(keepRetired: 1).map { ($0.file, $0) })
        XCTAssertEqual(Set(items.keys), Set(ids))
        XCTAssertEqual(items[ids[3]]?.level, 1, "live: its runs")
        XCTAssertEqual(items[ids[2]]?.level, 1, "the newest retired: its runs, its segments kept")
        XCTAssertEqual(items[ids[2]]?.prefixes.count, 1)
        XCTAssertNil(items[ids[2]]?.segmentFolder)
        XCTAssertEqual(items[ids[1]]?.level, 2, "older: everything")
        XCTAssertEqual(items[ids[0]]?.prefixes.count, 2)
        for item in items.values { try catalog.markCollected(file: item.file, level: item.level) }
        XCTAssertEqual(try catalog.collectable(keepRetired: 1).map(\.file), [])

        XCTAssertEqual(try catalog.rollbackTarget(advertiser: "a", version: 0, keepRetired: 1).target.version, ids[2])
        XCTAssertEqual(try catalog.rollbackTarget(advertiser: "a", version: 0, keepRetired: 1).live, ids[3])
        XCTAssertThrowsError(try catalog.rollbackTarget(advertiser: "a", version: ids[0], keepRetired: 1)) { error in
            XCTAssertTrue("\(error)".contains("no longer kept"), "\(error)")
        }
        XCTAssertThrowsError(try catalog.rollbackTarget(advertiser: "a", version: ids[3], keepRetired: 1)) { error in
            XCTAssertTrue("\(error)".contains("is live already"), "\(error)")
        }
        XCTAssertThrowsError(try catalog.rollbackTarget(advertiser: "a", version: 0, keepRetired: 0)) { error in
            XCTAssertTrue("\(error)".contains("no earlier version whose segments are kept"), "\(error)")
        }

        try catalog.markRolledBack(advertiser: "a", to: ids[2], now: 10)
        let states = try catalog.files(advertiser: "a", states: [], limit: 10, now: 10).map { ($0.version, $0.state) }
        XCTAssertEqual(states.first { $0.0 == ids[2] }?.1, .live)
        XCTAssertEqual(states.first { $0.0 == ids[3] }?.1, .retired)
        XCTAssertEqual(try catalog.liveVersions().map(\.file), [ids[2]])
        // The version it replaced is kept in turn: nothing to collect, and it can come back.
        XCTAssertEqual(try catalog.collectable(keepRetired: 1).map(\.file), [])
        XCTAssertEqual(try catalog.rollbackTarget(advertiser: "a", version: 0, keepRetired: 1).target.version, ids[3])
        XCTAssertThrowsError(try catalog.markRolledBack(advertiser: "a", to: ids[2], now: 11), "a live version is not restored twice")
    }

    /// A deleted advertiser: live version retired, in-flight ones abandoned,
    /// nothing kept for a rollback, not listed; a new file starts it again.
    func testADeletedAdvertiserIsCollectedWholeUntilANewFile() throws {
        let db = try makeDatabase()
        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        let old = try catalog.submit(object("a/1", size: 10, etag: "e1"), now: 1).version
        let live = try catalog.submit(object("a/2", size: 10, etag: "e2"), now: 2).version
        try db.run("UPDATE files SET state = \(FileState.retired.sql) WHERE id = ?", old)
        try db.run("UPDATE files SET state = \(FileState.live.sql) WHERE id = ?", live)
        try db.run("UPDATE advertisers SET live_file_id = ? WHERE id = 'a'", live)
        let inFlight = try catalog.submit(object("a/3", size: 10, etag: "e3"), now: 3).version
        _ = try catalog.submit(object("b/1", size: 10), now: 3)

        let deleted = try catalog.deleteAdvertiser("a", now: 4)
        XCTAssertEqual(deleted.live, live)
        XCTAssertEqual(deleted.versions, 3)
        XCTAssertThrowsError(try catalog.deleteAdvertiser("a", now: 5), "once")
        XCTAssertThrowsError(try catalog.deleteAdvertiser("nobody", now: 5))
        XCTAssertEqual(try catalog.liveVersions().map(\.advertiser), [])
        XCTAssertEqual(try catalog.advertisers(after: "", limit: 10).map(\.advertiserID), ["b"], "a deleted advertiser is not listed")
        let states = Dictionary(uniqueKeysWithValues: try catalog.files(advertiser: "a", states: [], limit: 10, now: 5).map { ($0.version, $0.state) })
        XCTAssertEqual(states, [old: .retired, live: .retired, inFlight: .superseded])
        // Everything goes, even with versions kept for rollbacks.
        let items = try catalog.collectable(keepRetired: 5).filter { [old, live, inFlight].contains($0.file) }
        XCTAssertEqual(items.count, 3)
        XCTAssertTrue(items.allSatisfy { $0.level == 2 }, "\(items)")
        XCTAssertThrowsError(try catalog.rollbackTarget(advertiser: "a", version: 0, keepRetired: 5)) { error in
            XCTAssertTrue("\(error)".contains("was deleted"), "\(error)")
        }
        XCTAssertEqual(try catalog.deleted(among: ["a", "b"]), ["a"])
        // A new file starts it again.
        _ = try catalog.submit(object("a/4", size: 10, etag: "e4"), now: 6)
        XCTAssertEqual(try catalog.deleted(among: ["a"]), [])
        XCTAssertEqual(try catalog.advertisers(after: "", limit: 10).map(\.advertiserID), ["a", "b"])
    }

    /// While a version merges, its ETA follows the merges' own pace since
    /// its last block was parsed.
    func testAMergingVersionHasAnETAFromItsMerges() throws {
        let db = try makeDatabase()
        let catalog = try IngestCatalog(database: db, policy: IngestPolicy())
        let version = try catalog.submit(object("a/1", size: 10), now: 0).version
        try db.run("DELETE FROM tasks WHERE file_id = ?", version)
        try db.run("UPDATE files SET state = \(FileState.merging.sql), merges_total = 4, started_at = 1 WHERE id = ?", version)
        try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end, state, done_at) VALUES (?, \(TaskKind.parse.sql), 0, 0, 10, 'done', 10)", version)
        for seq in 0..<4 {
            try db.run("INSERT INTO tasks(file_id, kind, seq, range_start, range_end, state, done_at) VALUES (?, \(TaskKind.merge.sql), ?, 0, 0, ?, ?)",
                       version, seq, seq == 0 ? "done" : "queued", seq == 0 ? 14.0 : nil as Double?)
        }
        let status = try XCTUnwrap(catalog.files(advertiser: "a", states: [], limit: 10, now: 20).first)
        XCTAssertEqual(status.mergesDone, 1)
        XCTAssertEqual(status.etaSeconds, 30, accuracy: 0.001, "one merge in 10 s since the last block: three more in 30 s")
    }

    func testPathOutsideAnAdvertiserFolderIsRefused() throws {
        let catalog = try makeCatalog()
        XCTAssertThrowsError(try catalog.submit(object("loose.txt", size: 10), now: 0))
    }

    func testANewFileSupersedesAnUnfinishedOlderOne() throws {
        let catalog = try makeCatalog()
        let first = try catalog.submit(object("a/1", size: 10), now: 0)
        let leased = try catalog.lease(worker: "w", max: 1, now: 1)
        XCTAssertEqual(leased.count, 1)
        let second = try catalog.submit(object("a/2", size: 10), now: 2)
        let states = try catalog.files(advertiser: "a", states: [], limit: 10, now: 3).map { ($0.version, $0.state) }
        XCTAssertEqual(states.first { $0.0 == first.version }?.1, .superseded)
        XCTAssertEqual(states.first { $0.0 == second.version }?.1, .queued)
        // The superseded version's lease is void: its report is ignored.
        var report = CompleteTaskRequest()
        report.taskID = leased[0].taskID
        report.leaseToken = leased[0].leaseToken
        XCTAssertNil(try catalog.complete(report, now: 4))
        XCTAssertEqual(try catalog.lease(worker: "w", max: 5, now: 5).map(\.version), [second.version])
    }

    /// A merge reports lost runs: exactly those blocks go back to the queue,
    /// the merges wait for them, and finishing them again adds no merges.
    func testLostRunsSendTheirBlocksBackAndHoldTheMerges() throws {
        var policy = IngestPolicy()
        policy.blockSize = 100
        policy.mergeTargetBytes = 16
        policy.maxMergeTasks = 2
        let catalog = try makeCatalog(policy: policy)
        let file = try catalog.submit(object("a/f", size: 300), now: 0).version
        func complete(_ task: IngestTask, now: Double) throws -> IngestCatalog.Progress? {
            var report = CompleteTaskRequest()
            report.taskID = task.taskID
            report.leaseToken = task.leaseToken
            report.lines = 3
            report.keys = 3
            report.outputKeys = 3
            return try catalog.complete(report, now: now)
        }
        let blocks = try catalog.lease(worker: "w", max: 10, now: 1)
        XCTAssertEqual(blocks.map(\.kind), [.parse, .parse, .parse])
        XCTAssertEqual(try blocks.map { try complete($0, now: 2) }, [IngestCatalog.Progress.none, IngestCatalog.Progress.none, .merging])
        let merges = try catalog.lease(worker: "w", max: 10, now: 3)
        XCTAssertEqual(merges.map(\.kind), [.merge, .merge])
        XCTAssertEqual(merges[0].runs, blocks.map(\.outputPath))

        var failure = FailTaskRequest()
        failure.taskID = merges[0].taskID
        failure.leaseToken = merges[0].leaseToken
        failure.error = "cannot read"
        failure.lostRuns = [blocks[1].outputPath, "runs/a/elsewhere.run"]
        XCTAssertEqual(try catalog.fail(failure, now: 4), .retrying)
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [], limit: 1, now: 4).first?.state, .parsing)
        // Only block 1 comes back; merge 0 waits for it although it is queued.
        let again = try catalog.lease(worker: "w", max: 10, now: 5)
        XCTAssertEqual(again.map(\.taskID), [blocks[1].taskID])
        guard again.count == 1 else { return }
        XCTAssertEqual(again[0].attempt, 2)
        XCTAssertNotEqual(again[0].outputPath, blocks[1].outputPath, "a new name for the new attempt")
        XCTAssertEqual(try catalog.lease(worker: "w", max: 10, now: 6).count, 0, "merges wait while a block is parsed again")
        XCTAssertEqual(try complete(again[0], now: 7), .merging)
        let retried = try catalog.lease(worker: "w", max: 10, now: 8)
        XCTAssertEqual(retried.map(\.taskID), [merges[0].taskID], "the same merge, not a new one")
        let merge = try XCTUnwrap(retried.first)
        XCTAssertEqual(merge.runs, [blocks[0].outputPath, again[0].outputPath, blocks[2].outputPath])
        // Both merges write slots of the version's one pack; a report that
        // names another file is refused and changes nothing.
        XCTAssertEqual(Set(merges.map(\.packPath)), ["segments/a/\(file)/merged.pack"])
        var foreign = CompleteTaskRequest()
        foreign.taskID = merge.taskID
        foreign.leaseToken = merge.leaseToken
        foreign.outputPath = "segments/b/1/merged.pack"
        foreign.outputLength = 4096
        XCTAssertThrowsError(try catalog.complete(foreign, now: 9)) { XCTAssertTrue("\($0)".contains("only a slice of"), "\($0)") }
        var sliced = foreign
        sliced.outputPath = merge.packPath
        sliced.outputOffset = 8192
        sliced.outputLength = 4000
        sliced.outputKeys = 3
        XCTAssertEqual(try catalog.complete(sliced, now: 9), IngestCatalog.Progress.none)
        XCTAssertEqual(try complete(merges[1], now: 9), .readyToPublish)
        let publication = try XCTUnwrap(try catalog.pendingPublications().first)
        XCTAssertEqual(publication.segments.map(\.path), [merge.packPath, merges[1].outputPath])
        XCTAssertEqual(publication.segments.map(\.offset), [8192, 0])
        XCTAssertEqual(publication.segments.map(\.length), [4000, 0], "a whole file has length 0")
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [], limit: 1, now: 10).first?.mergesTotal, 2)
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [], limit: 1, now: 10).first?.keys, 9)
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [], limit: 1, now: 10).first?.version, file)
    }

    func testPriorityFavoursSmallRemainingWorkAndAgesWithoutBound() {
        let block: Int64 = 64 << 20
        func score(_ bytes: Int64, waited: Double, weight: Double = 1) -> Double {
            Priority.score(weight: weight, waited: waited, remainingBytes: bytes, blockSize: block, merging: false, agingSeconds: 120)
        }
        // A new 10 KB file beats a 100 GB file that has waited a minute.
        XCTAssertGreaterThan(score(10_000, waited: 0), score(100 << 30, waited: 60))
        // ...but a big file that has waited long enough beats a new small one: no starvation.
        XCTAssertGreaterThan(score(100 << 30, waited: 3600), score(10_000, waited: 0))
        // Weight 2 counts like waiting.
        XCTAssertGreaterThan(score(1 << 30, waited: 0, weight: 2), score(1 << 30, waited: 60))
        XCTAssertEqual(Priority.score(weight: 1, waited: 0, remainingBytes: 0, blockSize: block, merging: true, agingSeconds: 120),
                       2 * score(0, waited: 0))
    }

    func testMergeRangesPartitionTheKeySpace() {
        var policy = IngestPolicy()
        policy.mergeTargetBytes = 1000
        policy.maxMergeTasks = 8
        XCTAssertEqual(policy.mergeRanges(keys: 10).count, 1)
        XCTAssertEqual(policy.mergeRanges(keys: 10).first?.low, 0)
        XCTAssertEqual(policy.mergeRanges(keys: 10).first?.high, 0)
        let ranges = policy.mergeRanges(keys: 300) // 4,800 bytes: 5 wanted, rounded to 8
        XCTAssertEqual(ranges.count, 8)
        XCTAssertEqual(ranges.first?.low, 0)
        XCTAssertEqual(ranges.last?.high, 0, "the last range runs to the end of the key space")
        for (a, b) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(a.high, b.low) }
        XCTAssertEqual(policy.mergeRanges(keys: 1_000_000).count, 8, "capped")
    }

    /// Small files are cut into several blocks so every worker gets a share;
    /// big ones into blocks of the configured size.
    func testBlockSizeShrinksForSmallFilesButNotBelowTheMinimum() {
        let policy = IngestPolicy()
        XCTAssertEqual(policy.blockSize(forFileSize: 10_000), 4 << 20, "one block")
        XCTAssertEqual(policy.blockSize(forFileSize: 100_000_000), 12_500_000, "eight blocks")
        XCTAssertEqual(policy.blockSize(forFileSize: 1_000_000_000), 64 << 20)
        XCTAssertEqual(policy.blockSize(forFileSize: 0), 4 << 20)
        var small = IngestPolicy()
        small.blockSize = 4096
        XCTAssertEqual(small.blockSize(forFileSize: 100_000_000), 4096, "never above the configured size")
    }

    /// Runs are grouped at least as finely as any merge of their file splits:
    /// a file of `size` bytes holds at most (size + 1) / 33 keys.
    func testRunPartitionsAreNeverCoarserThanTheMergeRanges() {
        var policy = IngestPolicy()
        policy.mergeTargetBytes = 1000
        for size in [0, 1, 32, 33, 65, 66, 2_000, 3_300, 33_000, 10_000_000] as [Int64] {
            let bits = policy.runPartitionBits(fileSize: size)
            let mostKeys = (size + 1) / 33
            for keys in [0, mostKeys / 2, mostKeys] {
                XCTAssertLessThanOrEqual(policy.mergeRanges(keys: keys).count, 1 << bits, "size \(size), keys \(keys)")
            }
        }
        XCTAssertEqual(IngestPolicy().runPartitionBits(fileSize: 1_000_000_000), 4, "a 1 GB file: 16 merge ranges")
        XCTAssertEqual(IngestPolicy().runPartitionBits(fileSize: 100_000), 0)
        XCTAssertEqual(IngestPolicy().runPartitionBits(fileSize: 100_000_000), 3, "a 100 MB file: 8 smaller merge ranges")
        XCTAssertEqual(IngestPolicy().mergeRanges(keys: 3_000_000).count, 8)
        XCTAssertEqual(IngestPolicy().mergeRanges(keys: 200_000).count, 2, "3.2 MB of keys: two ranges of at least 1 MiB")
        XCTAssertEqual(IngestPolicy().mergeRanges(keys: 1000).count, 1)
        var policy2 = IngestPolicy()
        policy2.mergeTargetBytes = 1000
        for keys in stride(from: Int64(0), to: 2_000_000, by: 997) {
            XCTAssertLessThanOrEqual(policy2.mergeRangeBits(keys: keys), policy2.mergeRangeBits(keys: keys + 997), "never decreasing")
        }
    }
}

final class KeySorterTests: XCTestCase {
    func testSortAndDeduplicateAgreesWithTheStandardLibrary() {
        var rng = SplitMix64(seed: 3)
        for n in [0, 1, 2, 100, 2047, 2048, 5000, 100_000] {
            // Duplicates, and a skewed part (shared top bits) besides uniform keys.
            var keys = (0..<n).map { i -> Key16 in
                i % 5 == 0 ? Key16(hi: 0xAB00_0000_0000_0000 | (rng.next() & 0xFF), lo: rng.next() & 3) : Key16(hi: rng.next(), lo: rng.next())
            }
            if n > 10 { keys += keys.prefix(n / 10) }
            let expected = Array(Set(keys)).sorted()
            let count = KeySorter.sortAndDeduplicate(&keys)
            XCTAssertEqual(Array(keys.prefix(count)), expected, "n = \(n)")
        }
        // Keys that differ only in their last bytes all land in one bucket:
        // that bucket must not be insertion-sorted (it would take minutes).
        var sequential = (0..<200_000).map { Key16(hi: 0, lo: UInt64($0 * 7919 % 200_000)) }
        XCTAssertEqual(KeySorter.sortAndDeduplicate(&sequential), 200_000)
        XCTAssertEqual(sequential.first, Key16(hi: 0, lo: 0))
        XCTAssertEqual(sequential.last, Key16(hi: 0, lo: 199_999))
    }
}

final class RunMergerTests: XCTestCase {
    /// Both merge paths (in memory, and the external sort with a tiny memory
    /// limit) give the sorted, distinct keys of the range, for whole and
    /// partial ranges, over runs grouped more finely, as finely, and more
    /// coarsely than the ranges, with duplicates within and across runs.
    func testBothMergePathsAgreeWithAReference() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("runs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 11)
        let shared = (0..<500).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
        var all = Set<Key16>()
        var paths: [String] = []
        for (r, bits) in [0, 1, 2, 3, 6].enumerated() {
            var keys = Array(shared.shuffled(using: &rng).prefix(200))
            for _ in 0..<3000 { keys.append(Key16(hi: rng.next(), lo: rng.next())) }
            keys += keys.prefix(100) // duplicates within the run
            if r == 0 { keys += [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)] }
            all.formUnion(keys)
            let path = dir.appendingPathComponent("run-\(r).run").path
            try keys.withUnsafeBufferPointer { _ = try RunWriter.write($0, partitionBits: bits, version: 1, to: path, durable: false) }
            paths.append(path)
        }
        let empty = dir.appendingPathComponent("empty.run").path
        try [Key16]().withUnsafeBufferPointer { _ = try RunWriter.write($0, partitionBits: 2, version: 1, to: empty, durable: true) }
        paths.append(empty)
        // Memory reused from merge to merge, as a worker slot does.
        var keys: [Key16] = []
        let buffer = ScratchBuffer()
        for (low, high) in [(UInt64(0), UInt64(0)), (0, 1 << 62), (1 << 62, 3 << 62), (3 << 62, 0), (5 << 59, 6 << 59)] {
            let expected = all.filter { $0.hi >= low && (high == 0 || $0.hi < high) }.sorted()
            let covered = try RunMerger.keysCovering(runPaths: paths, low: low, high: high)
            XCTAssertGreaterThanOrEqual(covered, expected.count)
            for limit in [1 << 30, 1024 * 32] {
                let path = dir.appendingPathComponent("out-\(limit)-\(low)-\(high).seg").path
                let writer = try SegmentWriter(path: path, advertiserID: "a", version: 1, estimatedKeys: covered)
                let written = try RunMerger.merge(runPaths: paths, low: low, high: high, coveredKeys: covered, memoryLimit: limit,
                                                  scratch: path, into: writer, keys: &keys, buffer: buffer)
                _ = try writer.finish()
                let segment = try Segment(path: path)
                XCTAssertEqual(written, expected.count, "limit \(limit)")
                XCTAssertEqual((0..<segment.count).map { segment.key(at: $0) }, expected, "limit \(limit), \(low)..<\(high)")
            }
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("spill") || $0.contains(".tmp") }
        XCTAssertEqual(left, [], "scratch files are removed")
    }
}

final class RunFileTests: XCTestCase {
    private func openError(_ path: String) -> String {
        do {
            let file = try RunFile(path: path)
            try file.forEachKey(low: 0, high: 0) { _ in }
            return "read"
        } catch {
            return "\(error)"
        }
    }

    /// Every key comes back from the range it belongs to, whatever the
    /// grouping and however the reads are chunked; damage of any kind is refused.
    func testRunsGroupKeysAndRefuseDamage() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("runfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 21)
        var keys = (0..<5000).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
        keys += keys.prefix(300)
        keys += (0..<50).map { Key16(hi: 0xAB00_0000_0000_0000 | UInt64($0), lo: 1) } // crowded in one partition
        for bits in [0, 1, 4, 12] {
            let path = dir.appendingPathComponent("r\(bits).run").path
            XCTAssertEqual(try keys.withUnsafeBufferPointer { try RunWriter.write($0, partitionBits: bits, version: 9, to: path, durable: false) },
                           keys.count)
            let file = try RunFile(path: path)
            XCTAssertEqual(file.keyCount, keys.count)
            XCTAssertEqual(file.partitionBits, bits)
            XCTAssertEqual(file.version, 9)
            for (low, high) in [(UInt64(0), UInt64(0)), (0, 1 << 63), (1 << 60, 3 << 60), (0xAB00_0000_0000_0000, 0xAB00_0000_0000_0010),
                                (UInt64.max - 5, 0)] {
                var read: [Key16] = []
                var chunks = 0
                try file.forEachKey(low: low, high: high, chunkKeys: 37) { read.append(contentsOf: $0); chunks += 1 }
                let expected = keys.filter { $0.hi >= low && (high == 0 || $0.hi < high) }
                XCTAssertEqual(read.sorted(), expected.sorted(), "bits \(bits), \(low)..<\(high)")
                XCTAssertGreaterThanOrEqual(try file.keysCovering(low: low, high: high), expected.count)
            }
        }

        let path = dir.appendingPathComponent("r4.run").path
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        func damaged(_ name: String, _ change: (inout Data) -> Void) throws -> String {
            var copy = bytes
            change(&copy)
            let damagedPath = dir.appendingPathComponent(name).path
            try copy.write(to: URL(fileURLWithPath: damagedPath))
            return openError(damagedPath)
        }
        XCTAssertEqual(openError(path), "read")
        let keyByte = bytes.count - 16 * 100 + 3
        XCTAssertTrue(try damaged("flipped.run") { $0[keyByte] ^= 0x01 }.contains("checksum mismatch"))
        // A key moved to another partition's place: caught even before the checksum.
        let outside = try damaged("moved.run") { $0[bytes.count - 16 * 4000] ^= 0x80 }
        XCTAssertTrue(outside.contains("outside its partition") || outside.contains("checksum mismatch"), outside)
        XCTAssertTrue(try damaged("header.run") { $0[9] ^= 0x01 }.contains("header checksum mismatch"))
        let table = try damaged("table.run") { $0[RunFormat.headerSize + 8 * 5] ^= 0x04 }
        XCTAssertTrue(table.contains("damaged") || table.contains("out of range"), table)
        XCTAssertTrue(try damaged("truncated.run") { $0.removeLast(16) }.contains("does not match"))
        XCTAssertTrue(try damaged("garbage.run") { $0 = Data(repeating: 7, count: 300) }.contains("bad magic"))
        XCTAssertTrue(try damaged("empty.run") { $0 = Data() }.contains("truncated"))
        XCTAssertTrue(openError(dir.appendingPathComponent("missing.run").path).contains("cannot open"))
    }
}

final class ScratchBufferTests: XCTestCase {
    /// The buffer is reused while big enough, grows when asked for more, and
    /// gives its memory back only when over the limit.
    func testScratchIsReusedAndShrunkPastTheLimit() {
        let scratch = ScratchBuffer()
        let first = scratch.bytes(100_000)
        XCTAssertGreaterThanOrEqual(scratch.capacity, 100_000)
        XCTAssertEqual(scratch.bytes(50_000), first, "a smaller request reuses the memory")
        XCTAssertEqual(Int(bitPattern: first) % 64, 0)
        _ = scratch.bytes(1_000_000)
        XCTAssertGreaterThanOrEqual(scratch.capacity, 1_000_000)
        scratch.shrink(toAtMost: 2_000_000)
        XCTAssertGreaterThanOrEqual(scratch.capacity, 1_000_000, "within the limit: kept")
        scratch.shrink(toAtMost: 500_000)
        XCTAssertEqual(scratch.capacity, 0, "over the limit: released")
        scratch.bytes(10).storeBytes(of: 7, as: UInt8.self)
        XCTAssertGreaterThanOrEqual(scratch.capacity, 10)
    }
}
