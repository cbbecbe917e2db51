import DataLake
import Foundation
import IngestCoordinator
import PostgresSQL
import PostgresTestSupport
import RosterAPI
import SQLDatabase
import SQLite
import XCTest

/// Election and fencing between two coordinators' catalogs on one database,
/// with times the test sets. On SQLite (two connections to one file);
/// `PostgresLeadershipTests` runs them on PostgreSQL.
class LeadershipTests: XCTestCase {
    var cleanups: [() -> Void] = []

    override func tearDown() {
        for cleanup in cleanups.reversed() { cleanup() }
        cleanups = []
    }

    /// Two catalogs sharing one database.
    func twoCatalogs() throws -> (IngestCatalog, IngestCatalog) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("leader-\(UUID().uuidString).sqlite").path
        cleanups.append { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        return (try IngestCatalog(path: path), try IngestCatalog(path: path))
    }

    private func object(_ path: String) -> LakeObject {
        LakeObject(path: path, size: 10, etag: "e1", modified: Date(timeIntervalSince1970: 0))
    }

    func testOneLeaderAtATimeAndAStandbyTakesOverWhenTheLeaseEnds() throws {
        let (a, b) = try twoCatalogs()
        let first = try a.campaign(holder: "a", address: "10.0.0.1:7400", lease: 10, now: 100)
        XCTAssertEqual(first.holder, "a")
        XCTAssertEqual(first.token, 1)
        XCTAssertTrue(a.isLeading)
        // b sees a leading and stands by.
        let seen = try b.campaign(holder: "b", address: "10.0.0.2:7400", lease: 10, now: 105)
        XCTAssertEqual(seen.holder, "a")
        XCTAssertEqual(seen.address, "10.0.0.1:7400")
        XCTAssertFalse(b.isLeading)
        // a renews: same token, later end.
        XCTAssertEqual(try a.campaign(holder: "a", address: "10.0.0.1:7400", lease: 10, now: 106), Leadership(holder: "a", address: "10.0.0.1:7400", token: 1, expires: 116))
        XCTAssertEqual(try b.campaign(holder: "b", address: "10.0.0.2:7400", lease: 10, now: 115.9).holder, "a")
        // a stops renewing: b takes over once the lease has ended, with a new token.
        let second = try b.campaign(holder: "b", address: "10.0.0.2:7400", lease: 10, now: 116)
        XCTAssertEqual(second.holder, "b")
        XCTAssertEqual(second.token, 2)
        XCTAssertTrue(b.isLeading)
        XCTAssertEqual(try a.leader()?.holder, "b")
    }

    /// A leader paused past its lease wakes up and writes: refused whole by
    /// its token, and it learns it no longer leads.
    func testAPausedOldLeaderCannotWriteAnything() throws {
        let (a, b) = try twoCatalogs()
        try a.campaign(holder: "a", address: "a:7400", lease: 10, now: 0)
        let submitted = try a.submit(object("acme/1.txt"), now: 1)
        XCTAssertTrue(submitted.queued)
        try b.campaign(holder: "b", address: "b:7400", lease: 10, now: 20) // a was paused
        XCTAssertThrowsError(try a.submit(object("acme/2.txt"), now: 21)) { error in
            let notLeader = error as? NotLeader
            XCTAssertEqual(notLeader?.leader?.holder, "b", "\(error)")
            XCTAssertTrue("\(error)".contains("b:7400"), "\(error)")
        }
        XCTAssertThrowsError(try a.lease(worker: "w", max: 1, now: 21), "a lease from the old leader")
        XCTAssertFalse(a.isLeading)
        // Nothing of a's refused writes is there; b carries on with what a committed while it led.
        let files = try b.files(advertiser: "acme", states: [], limit: 10, now: 22)
        XCTAssertEqual(files.map(\.path), ["acme/1.txt"])
        XCTAssertEqual(try b.lease(worker: "w", max: 5, now: 22).count, 1)
        // Campaigning again, a finds b leading and stays a standby.
        XCTAssertEqual(try a.campaign(holder: "a", address: "a:7400", lease: 10, now: 23).holder, "b")
        XCTAssertFalse(a.isLeading)
    }

    func testALeaderThatResignsIsReplacedAtOnce() throws {
        let (a, b) = try twoCatalogs()
        try a.campaign(holder: "a", address: "a:7400", lease: 30, now: 0)
        try a.resign(holder: "a")
        XCTAssertFalse(a.isLeading)
        XCTAssertEqual(try b.campaign(holder: "b", address: "b:7400", lease: 30, now: 1).holder, "b")
    }
}

final class PostgresLeadershipTests: LeadershipTests {
    override func twoCatalogs() throws -> (IngestCatalog, IngestCatalog) {
        let first = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let second = try PostgresDatabase(url: first.url)
        return (try IngestCatalog(database: first), try IngestCatalog(database: second))
    }

    // Linux's XCTest finds only the tests a class declares: each is named again here.
    override func testOneLeaderAtATimeAndAStandbyTakesOverWhenTheLeaseEnds() throws { try super.testOneLeaderAtATimeAndAStandbyTakesOverWhenTheLeaseEnds() }
    override func testAPausedOldLeaderCannotWriteAnything() throws { try super.testAPausedOldLeaderCannotWriteAnything() }
    override func testALeaderThatResignsIsReplacedAtOnce() throws { try super.testALeaderThatResignsIsReplacedAtOnce() }
}
