import DataLake
import Foundation
@_spi(Testing) import IngestCoordinator
import RosterAPI
import TestSupport
import SQLDatabase
import XCTest

/// Retries, refusals and the newest-file rule, on the catalog alone with a
/// clock the test sets.
/// On SQLite; `PostgresCatalogHardeningTests` runs them again on PostgreSQL.
class CatalogHardeningTests: XCTestCase, CatalogEngine {
    var cleanups: [() -> Void] = []
    private var catalog: IngestCatalog!

    override func setUpWithError() throws {
        var policy = IngestPolicy()
        policy.lease = .seconds(10)
        catalog = try makeCatalog(policy: policy)
    }

    override func tearDown() {
        catalog = nil
        for cleanup in cleanups.reversed() { cleanup() }
        cleanups = []
    }
    func makeDatabase() throws -> any SQLDatabase { try sqliteDatabase() }


    private func object(_ path: String, modified: Double = 0, etag: String = "e1") -> LakeObject {
        LakeObject(path: path, size: 10, etag: etag, modified: Date(timeIntervalSince1970: modified))
    }

    private func fail(_ task: IngestTask, now: Double) throws -> IngestCatalog.FailureOutcome {
        var report = FailTaskRequest()
        report.workerID = "w"
        report.taskID = task.taskID
        report.leaseToken = task.leaseToken
        report.error = "permission denied"
        return try catalog.fail(report, now: now)
    }

    /// A failed task waits 1 s (±20%), then 2 s, 4 s… before it is leased
    /// again; the fourth failure fails the version.
    func testFailuresBackOffExponentially() throws {
        let file = try catalog.submit(object("a/f"), now: 0)
        var now = 0.0
        for failure in 1...4 {
            let leased = try catalog.lease(worker: "w", max: 1, now: now)
            XCTAssertEqual(leased.count, 1, "failure \(failure)")
            let outcome = try fail(leased[0], now: now)
            if failure == 4 {
                XCTAssertEqual(outcome, .failed)
                break
            }
            XCTAssertEqual(outcome, .retrying)
            let wait = Double(1 << (failure - 1))
            XCTAssertEqual(try catalog.lease(worker: "w", max: 1, now: now + wait * 0.79).count, 0, "leased during the backoff")
            now += wait * 1.21
        }
        let status = try XCTUnwrap(catalog.files(advertiser: "a", states: [], limit: 1, now: now).first)
        XCTAssertEqual(status.version, file.version)
        XCTAssertEqual(status.state, .failed)
        XCTAssertTrue(status.error.contains("block 0 failed 4 times; last: permission denied"), status.error)
    }

    /// A lease that expires (its worker was killed) is handed out again at
    /// once and does not count as a failure of the file; only a task that
    /// outlives `maxLeaseExpiries` workers fails it.
    func testExpiredLeasesAreNotFailures() throws {
        _ = try catalog.submit(object("a/f"), now: 0)
        var now = 0.0
        for round in 1...8 {
            let leased = try catalog.lease(worker: "w\(round)", max: 1, now: now)
            XCTAssertEqual(leased.count, 1, "round \(round): not handed out again")
            XCTAssertEqual(leased.first?.attempt, UInt32(round))
            now += 11 // past the lease
        }
        XCTAssertEqual(try catalog.files(advertiser: "a", states: [], limit: 1, now: now).first?.state, .parsing,
                       "seven expiries failed the file")
        XCTAssertEqual(try catalog.lease(worker: "w9", max: 1, now: now).count, 0)
        let status = try XCTUnwrap(catalog.files(advertiser: "a", states: [], limit: 1, now: now).first)
        XCTAssertEqual(status.state, .failed)
        XCTAssertTrue(status.error.contains("lease expired 8 times"), status.error)
    }

    /// A lease call sent again with the same request id (its first answer
    /// was lost: the leader died after committing it) gets the same tasks
    /// back, same tokens and attempts, leases renewed, not new ones; so no
    /// lease is left to expire unworked. A new id leases new work.
    func testALeaseCallSentAgainGetsBackWhatItWasLeased() throws {
        for i in 0..<3 { _ = try catalog.submit(object("a\(i)/f"), now: 0) }
        let first = try catalog.lease(worker: "w", max: 2, now: 1, request: "r1")
        XCTAssertEqual(first.count, 2)
        let again = try catalog.lease(worker: "w", max: 2, now: 5, request: "r1")
        XCTAssertEqual(again.map(\.taskID), first.map(\.taskID))
        XCTAssertEqual(again.map(\.leaseToken), first.map(\.leaseToken))
        XCTAssertEqual(again.map(\.attempt), first.map(\.attempt), "the same attempt, not a new one")
        XCTAssertEqual(again.map(\.outputPath), first.map(\.outputPath))
        XCTAssertEqual(try catalog.lease(worker: "other", max: 2, now: 5, request: "r1").map(\.taskID).filter { first.map(\.taskID).contains($0) }, [],
                       "another worker's call never takes them")
        let next = try catalog.lease(worker: "w", max: 2, now: 5, request: "r2")
        XCTAssertTrue(Set(next.map(\.taskID)).isDisjoint(with: first.map(\.taskID)))
        // Renewed by the second delivery: still held past the first lease's end.
        XCTAssertEqual(try catalog.heartbeat(worker: "w", tasks: first.map { ($0.taskID, $0.leaseToken) }, now: 14), [])
        XCTAssertEqual(try catalog.expiredAttempts(), 0)
    }

    /// A heartbeat that names a task its worker has just finished (sent
    /// before the report, arriving after it) loses nothing; one naming a
    /// task another worker took over and finished, or one cancelled, does.
    func testAHeartbeatRacingItsOwnReportIsNotALostLease() throws {
        _ = try catalog.submit(object("a/f"), now: 0)
        let mine = try XCTUnwrap(catalog.lease(worker: "w1", max: 1, now: 0).first)
        var report = CompleteTaskRequest()
        report.taskID = mine.taskID
        report.leaseToken = mine.leaseToken
        report.workerID = "w1"
        XCTAssertNotNil(try catalog.complete(report, now: 1))
        XCTAssertEqual(try catalog.heartbeat(worker: "w1", tasks: [(mine.taskID, mine.leaseToken)], now: 1), [])
        XCTAssertEqual(try catalog.heartbeat(worker: "w2", tasks: [(mine.taskID, "stale")], now: 1), [mine.taskID],
                       "another worker's old lease of it is lost")

        _ = try catalog.submit(object("b/f"), now: 2)
        let expired = try XCTUnwrap(catalog.lease(worker: "w1", max: 1, now: 2).first)
        _ = try catalog.submit(object("b/g"), now: 3) // supersedes b/f: its task is cancelled
        XCTAssertEqual(try catalog.heartbeat(worker: "w1", tasks: [(expired.taskID, expired.leaseToken)], now: 3), [expired.taskID])
    }

    /// Ranking every file in flight is done once and reused by the leases
    /// that follow: 2,000 queued files are leased one at a time with one
    /// ranking, each exactly once; new work (a submission) is seen at once.
    func testLeasesDoNotRankEveryFileEachTime() throws {
        for i in 0..<2_000 { _ = try catalog.submit(object("a\(i)/f"), now: 0) }
        var leased = Set<String>()
        for _ in 0..<1_000 {
            let task = try XCTUnwrap(catalog.lease(worker: "w", max: 1, now: 1).first)
            XCTAssertTrue(leased.insert(task.advertiserID).inserted, "\(task.advertiserID) leased twice")
        }
        XCTAssertEqual(catalog.rankingCount, 1, "a lease ranked every file again")
        try catalog.setWeight(advertiser: "urgent", weight: 100)
        _ = try catalog.submit(object("urgent/f"), now: 1)
        XCTAssertEqual(try catalog.lease(worker: "w", max: 1, now: 1).first?.advertiserID, "urgent", "a new submission waited for the ranking")
        for _ in 0..<1_000 {
            let task = try XCTUnwrap(catalog.lease(worker: "w", max: 1, now: 1.5).first)
            XCTAssertTrue(leased.insert(task.advertiserID).inserted, "\(task.advertiserID) leased twice")
        }
        XCTAssertEqual(leased.count, 2_000)
        XCTAssertEqual(try catalog.lease(worker: "w", max: 1, now: 1.5).count, 0)
        XCTAssertEqual(catalog.rankingCount, 2, "the weight change ranks again, the submissions do not")
        // A submission takes its place in the kept ranking: no new ranking.
        _ = try catalog.submit(object("late/f"), now: 1.6)
        XCTAssertEqual(try catalog.lease(worker: "w", max: 1, now: 1.6).first?.advertiserID, "late")
        XCTAssertEqual(catalog.rankingCount, 2)
    }

    /// A file of one block is one task from bytes to segment: one lease,
    /// one report, then publishing; too many invalid lines still reject it.
    func testAOneBlockFileIsOneTask() throws {
        let file = try catalog.submit(object("small/f"), now: 0)
        let task = try XCTUnwrap(catalog.lease(worker: "w", max: 5, now: 1).first)
        XCTAssertEqual(task.kind, .whole)
        XCTAssertEqual(task.end, 10)
        XCTAssertTrue(task.outputPath.hasPrefix("segments/small/\(file.version)/part-0-"), task.outputPath)
        var report = CompleteTaskRequest()
        report.taskID = task.taskID
        report.leaseToken = task.leaseToken
        report.lines = 3
        report.keys = 3
        report.outputKeys = 2
        report.bytes = 10
        XCTAssertEqual(try catalog.complete(report, now: 2), .readyToPublish)
        XCTAssertEqual(try catalog.lease(worker: "w", max: 5, now: 3).count, 0, "no merge follows")
        let publication = try XCTUnwrap(catalog.pendingPublications().first)
        XCTAssertEqual(publication.segments.map(\.path), [task.outputPath])
        XCTAssertEqual(publication.segments.map(\.keyCount), [2])
        let status = try XCTUnwrap(catalog.files(advertiser: "small", states: [], limit: 1, now: 3).first)
        XCTAssertEqual([status.blocksDone, status.blocksTotal, status.mergesDone, status.mergesTotal], [1, 1, 1, 1])
        XCTAssertEqual(status.distinctKeys, 2)

        _ = try catalog.submit(object("bad/f"), now: 4)
        let bad = try XCTUnwrap(catalog.lease(worker: "w", max: 1, now: 5).first)
        report.taskID = bad.taskID
        report.leaseToken = bad.leaseToken
        report.invalidByKind = ["malformed": 2]
        XCTAssertEqual(try catalog.complete(report, now: 6), .rejected)
        XCTAssertEqual(try catalog.files(advertiser: "bad", states: [], limit: 1, now: 6).first?.state, .rejected)
    }

    func testAdvertiserIDLongerThanSegmentsCanHoldIsRefused() throws {
        let long = String(repeating: "x", count: 65)
        XCTAssertThrowsError(try catalog.submit(object("\(long)/f"), now: 0)) { error in
            XCTAssertTrue("\(error)".contains("65 bytes long; at most 64"), "\(error)")
        }
        XCTAssertNoThrow(try catalog.submit(object("\(String(repeating: "y", count: 64))/f"), now: 0))
        try catalog.refuse(object("\(long)/f"), reason: "too long", now: 1)
        let status = try XCTUnwrap(catalog.files(advertiser: long, states: [], limit: 1, now: 2).first)
        XCTAssertEqual(status.state, .rejected)
        XCTAssertEqual(status.error, "too long")
        XCTAssertTrue(try catalog.isKnown(path: "\(long)/f", etag: "e1"), "a later scan does not refuse it again")
        XCTAssertEqual(try catalog.lease(worker: "w", max: 5, now: 3).map(\.advertiserID), [String(repeating: "y", count: 64)])
    }

    func testOnlyAFileNewerThanEveryEarlierOneIsNewest() throws {
        XCTAssertTrue(try catalog.isNewest(object("a/2", modified: 200)), "nothing given yet")
        _ = try catalog.submit(object("a/2", modified: 200), now: 0)
        XCTAssertFalse(try catalog.isNewest(object("a/1", modified: 100)), "an older file is not newest")
        XCTAssertFalse(try catalog.isNewest(object("a/2", modified: 200)), "the same file is not newer")
        XCTAssertTrue(try catalog.isNewest(object("a/3", modified: 200)), "same time, later name")
        XCTAssertTrue(try catalog.isNewest(object("a/2", modified: 201, etag: "e2")), "rewritten in place")
        XCTAssertTrue(try catalog.isNewest(object("b/1", modified: 1)), "each advertiser apart")
    }
}
