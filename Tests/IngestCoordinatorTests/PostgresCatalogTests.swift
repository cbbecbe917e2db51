import DataLake
import Foundation
import IngestCoordinator
import PostgresSQL
import PostgresTestSupport
import SQLDatabase
import Synchronization
import XCTest

/// Every catalog test again, on PostgreSQL.
final class PostgresCatalogTests: CatalogTests {
    override func makeDatabase() throws -> any SQLDatabase { try postgresDatabase() }
    // Linux's XCTest finds only the tests a class declares: each is named again here.
    override func testStatesAreStoredByNameAndCatalogsFromBeforeAreConverted() throws {
        try super.testStatesAreStoredByNameAndCatalogsFromBeforeAreConverted()
    }
    override func testEndedVersionsAreCollectedOnce() throws { try super.testEndedVersionsAreCollectedOnce() }
    override func testMigration9KeepsEveryStateAndAllowsHeld() throws { try super.testMigration9KeepsEveryStateAndAllowsHeld() }
    override func testTheShrinkGuardHoldsAVersionThatLosesTooManyKeys() throws { try super.testTheShrinkGuardHoldsAVersionThatLosesTooManyKeys() }
    override func testStatusNamesTenHeldVersionsAndCountsTheRest() throws { try super.testStatusNamesTenHeldVersionsAndCountsTheRest() }
    override func testARollbackPastAHeldVersionIsStillPublishedAsARollback() throws { try super.testARollbackPastAHeldVersionIsStillPublishedAsARollback() }
    override func testPathOutsideAnAdvertiserFolderIsRefused() throws { try super.testPathOutsideAnAdvertiserFolderIsRefused() }
    override func testANewFileSupersedesAnUnfinishedOlderOne() throws { try super.testANewFileSupersedesAnUnfinishedOlderOne() }
    override func testLostRunsSendTheirBlocksBackAndHoldTheMerges() throws { try super.testLostRunsSendTheirBlocksBackAndHoldTheMerges() }
    override func testPriorityFavoursSmallRemainingWorkAndAgesWithoutBound() { super.testPriorityFavoursSmallRemainingWorkAndAgesWithoutBound() }
    override func testMergeRangesPartitionTheKeySpace() { super.testMergeRangesPartitionTheKeySpace() }
    override func testBlockSizeShrinksForSmallFilesButNotBelowTheMinimum() { super.testBlockSizeShrinksForSmallFilesButNotBelowTheMinimum() }
    override func testRunPartitionsAreNeverCoarserThanTheMergeRanges() { super.testRunPartitionsAreNeverCoarserThanTheMergeRanges() }

    /// PostgreSQL keeps its schema version in `roster_schema`: reopening
    /// migrates nothing, and a newer schema is refused.
    override func testMigrationsApplyOnceAndANewerCatalogIsRefused() throws {
        let database = try postgresDatabase()
        var policy = IngestPolicy()
        policy.blockSize = 100
        do {
            let catalog = try IngestCatalog(database: database, policy: policy)
            _ = try catalog.submit(LakeObject(path: "a/f", size: 250, etag: "e1", modified: Date(timeIntervalSince1970: 0)), now: 1)
        }
        let reopened = try IngestCatalog(database: database, policy: policy)
        XCTAssertEqual(try reopened.files(advertiser: "a", states: [], limit: 10, now: 2).first?.blocksTotal, 3)
        XCTAssertEqual(try database.schemaVersion, 11)
        try database.run("INSERT INTO roster_schema(version) VALUES (99)")
        XCTAssertThrowsError(try IngestCatalog(database: database, policy: policy)) { error in
            XCTAssertTrue("\(error)".contains("schema version 99"), "\(error)")
        }
    }
}

final class PostgresCatalogHardeningTests: CatalogHardeningTests {
    override func makeDatabase() throws -> any SQLDatabase { try postgresDatabase() }
    // Linux's XCTest finds only the tests a class declares: each is named again here.
    override func testFailuresBackOffExponentially() throws { try super.testFailuresBackOffExponentially() }
    override func testExpiredLeasesAreNotFailures() throws { try super.testExpiredLeasesAreNotFailures() }
    override func testALeaseCallSentAgainGetsBackWhatItWasLeased() throws { try super.testALeaseCallSentAgainGetsBackWhatItWasLeased() }
    override func testAHeartbeatRacingItsOwnReportIsNotALostLease() throws { try super.testAHeartbeatRacingItsOwnReportIsNotALostLease() }
    override func testLeasesDoNotRankEveryFileEachTime() throws { try super.testLeasesDoNotRankEveryFileEachTime() }
    override func testAOneBlockFileIsOneTask() throws { try super.testAOneBlockFileIsOneTask() }
    override func testAdvertiserIDLongerThanSegmentsCanHoldIsRefused() throws { try super.testAdvertiserIDLongerThanSegmentsCanHoldIsRefused() }
    override func testOnlyAFileNewerThanEveryEarlierOneIsNewest() throws { try super.testOnlyAFileNewerThanEveryEarlierOneIsNewest() }
}

final class PostgresFileLifecycleTests: FileLifecycleTests {
    override func makeDatabase() throws -> any SQLDatabase { try postgresDatabase() }
    // Linux's XCTest finds only the tests a class declares: each is named again here.
    override func testTheLifeCycleTable() { super.testTheLifeCycleTable() }
    override func testTheCatalogIgnoresAnEventFromTheWrongState() throws { try super.testTheCatalogIgnoresAnEventFromTheWrongState() }
}

/// The PostgreSQL connection itself, on the test server.
final class PostgresDatabaseTests: XCTestCase {
    /// A statement with no answer (here the server sleeps; a cut link looks
    /// the same) fails after the statement timeout instead of holding the
    /// catalog forever, and the next statement reconnects.
    func testAStatementWithNoAnswerTimesOutAndTheNextReconnects() throws {
        let database = try PostgresDatabase(url: try PostgresTestServer.url(), statementTimeout: .milliseconds(300))
        XCTAssertThrowsError(try database.run("SELECT pg_sleep(30)")) { error in
            XCTAssertTrue(error is SQLError, "\(error)")
        }
        XCTAssertEqual(try database.rows("SELECT 1 AS one") { $0.int("one") }, [1])
    }

    /// Statements racing a server shutdown (every session ended, then no
    /// server) each fail within moments, not after the statement timeout: a
    /// statement sent as the server ends the session must fail when the
    /// connection closes. (Waiting out the 45-s timeout held the catalog,
    /// and with it the leader's lease renewal, far past the lease.)
    func testStatementsRacingAShutdownFailPromptly() throws {
        let database = try PostgresDatabase(url: try PostgresTestServer.url())
        let slowest = Mutex<Duration>(.zero)
        let failures = Mutex(0)
        let stop = Mutex(false)
        let done = DispatchSemaphore(value: 0)
        Thread {
            defer { done.signal() }
            let clock = ContinuousClock()
            while !stop.withLock({ $0 }) {
                let started = clock.now
                do { _ = try database.rows("SELECT 1 AS one") { $0.int("one") } } catch { failures.withLock { $0 += 1 } }
                let took = clock.now - started
                slowest.withLock { $0 = max($0, took) }
            }
        }.start()
        defer { try? PostgresTestServer.resume() }
        // Three outages: the race is lost about one time in three.
        for _ in 0..<3 {
            Thread.sleep(forTimeInterval: 0.3)
            try PostgresTestServer.halt()
            Thread.sleep(forTimeInterval: 0.5)
            try PostgresTestServer.resume()
        }
        Thread.sleep(forTimeInterval: 0.3)
        stop.withLock { $0 = true }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "a statement is still waiting a minute after the outage")
        XCTAssertGreaterThan(failures.withLock { $0 }, 0, "statements failed while the server was down")
        XCTAssertLessThan(slowest.withLock { $0 }, .seconds(5), "the slowest statement took \(slowest.withLock { $0 })")
    }
}
