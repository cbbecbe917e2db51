import DataLake
import Foundation
import IngestCoordinator
import RosterAPI
import SQLDatabase
import XCTest

/// The file-version life cycle: the table itself, and the catalog obeying it.
/// On SQLite; `PostgresFileLifecycleTests` runs them again on PostgreSQL.
class FileLifecycleTests: XCTestCase, CatalogEngine {
    var cleanups: [() -> Void] = []

    override func tearDown() {
        for cleanup in cleanups.reversed() { cleanup() }
        cleanups = []
    }

    func makeDatabase() throws -> any SQLDatabase { try sqliteDatabase() }

    func testTheLifeCycleTable() {
        typealias L = FileLifecycle
        // The happy path, in order.
        var state = FileState.queued
        for event: L.Event in [.started, .parsed, .merged, .published, .retired] {
            guard let next = L.next(from: state, on: event) else { return XCTFail("\(event) refused in \(state.name)") }
            state = next
        }
        XCTAssertEqual(state, .retired)
        XCTAssertEqual(L.next(from: .parsing, on: .merged), .publishing, "a one-block file has no merge step")
        XCTAssertEqual(L.next(from: .merging, on: .runsLost), .parsing)
        XCTAssertEqual(L.next(from: .live, on: .damaged), .failed)
        // Nothing leaves a final state, and nothing but damage or a newer version ends a live one.
        for final in L.finalStates {
            for event in L.Event.allCases { XCTAssertNil(L.next(from: final, on: event), "\(event) from \(final.name)") }
        }
        for event in L.Event.allCases where ![.retired, .damaged].contains(event) {
            XCTAssertNil(L.next(from: .live, on: event), "\(event) from live")
        }
        XCTAssertNil(L.next(from: .queued, on: .published), "no skipping to live")
        // The shrink guard: held until approved or replaced; never failed by a task, never live unpublished.
        XCTAssertEqual(L.next(from: .merging, on: .shrank), .held)
        XCTAssertEqual(L.next(from: .parsing, on: .shrank), .held, "a one-block file has no merge step")
        XCTAssertEqual(L.next(from: .held, on: .approved), .publishing)
        XCTAssertEqual(L.next(from: .held, on: .superseded), .superseded)
        for event in L.Event.allCases where ![.approved, .superseded].contains(event) {
            XCTAssertNil(L.next(from: .held, on: event), "\(event) from held")
        }
        XCTAssertNil(L.next(from: .queued, on: .rejected))
    }

    /// An event that comes too late changes nothing: a version superseded
    /// while the match server was publishing it is not recorded live.
    func testTheCatalogIgnoresAnEventFromTheWrongState() throws {
        var policy = IngestPolicy()
        policy.blockSize = 1_000
        let catalog = try makeCatalog(policy: policy)
        let object = LakeObject(path: "a/f", size: 100, etag: "e1", modified: Date(timeIntervalSince1970: 1))
        let file = try catalog.submit(object, now: 1).version
        try catalog.abandon(file: file, error: "the file changed", now: 2)
        try catalog.markLive(files: [file], now: 3)
        let status = try XCTUnwrap(try catalog.files(advertiser: "a", states: [], limit: 1, now: 4).first)
        XCTAssertEqual(status.state, .superseded)
        XCTAssertEqual(status.liveAtMs, 0)
    }
}
