import DataLake
import Foundation
import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import TestSupport
import XCTest

/// The shrink guard end to end, with real workers parsing the files and a
/// real match server: a bad file (empty, a header only, one line, a 60%
/// shrink) never empties a live list; an operator approves, or a newer file
/// replaces, what was held; the same size goes straight through.
final class ShrinkGuardTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func start() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        for i in 0..<2 { harness.startWorker(id: "w\(i)") }
    }

    private func list(_ keys: [Key16], header: Bool = true) -> [UInt8] {
        Array(((header ? "email_md5\n" : "") + keys.map { ReferenceParser.hex($0) + "\n" }.joined()).utf8)
    }

    private func ingest(_ contents: [UInt8], _ advertiser: String, _ name: String) async throws -> FileStatus {
        try await harness.waitForFile(try await harness.submit(try harness.drop(contents, advertiser: advertiser, name: name)).version)
    }

    private func served(_ advertiser: String, _ keys: [Key16]) async throws -> Int {
        try await harness.matched(advertiser, keys).filter { $0 }.count
    }

    func testEmptyHeaderOnlyOneLineAndAShrinkOf60PercentAreEachHeldAndTheLiveListKeepsServing() async throws {
        try await start()
        let keys = ReferenceParser.randomKeys(500, seed: 1)
        let v1 = try await ingest(list(keys), "acme", "1.txt")
        XCTAssertEqual(v1.state, .live, v1.error)

        let bad: [(String, [UInt8])] = [("empty", []), ("header only", list([])), ("one line", list([keys[0]], header: false)),
                                        ("60% fewer", list(Array(keys.prefix(200))))]
        var held: [UInt64] = []
        for (i, (what, contents)) in bad.enumerated() {
            let version = try await ingest(contents, "acme", "\(i + 2).txt")
            XCTAssertEqual(version.state, .held, "\(what): \(version.error)")
            XCTAssertTrue(version.error.contains("held by the shrink guard") && version.error.contains("where live version \(v1.version) has 500"),
                          "\(what): \(version.error)")
            let serving = try await served("acme", keys)
            XCTAssertEqual(serving, 500, "\(what): the live list keeps serving all of its keys")
            XCTAssertEqual(harness.matchCatalog.current("acme")?.version, v1.version)
            if let previous = held.last {
                let state = try await harness.fileStatus(previous)?.state
                XCTAssertEqual(state, .superseded, "\(what): a newer file replaces the held one")
            }
            held.append(version.version)
        }
        let status = try await harness.adminClient.status(StatusRequest())
        XCTAssertEqual(status.problems.filter { $0.contains("held by the shrink guard") }.count, 1, "\(status.problems)")
        XCTAssertEqual(status.filesByState["held"], 1)

        // Approved, the 60% shrink goes live.
        let approval = try await harness.adminClient.approve(ApproveRequest(advertiserID: "acme", version: held.last!))
        XCTAssertEqual(approval, ApproveResponse(version: held.last!, keys: 200, liveKeys: 500))
        let live = try await harness.waitForFile(held.last!)
        XCTAssertEqual(live.state, .live, live.error)
        let servedAfter = try await served("acme", keys)
        XCTAssertEqual(servedAfter, 200)
        let after = try await harness.adminClient.status(StatusRequest())
        XCTAssertEqual(after.problems.filter { $0.contains("held") }, [])
    }

    func testANewerNormalFileSupersedesTheHeldOneAndTheSameSizeGoesStraightThrough() async throws {
        try await start()
        let first = ReferenceParser.randomKeys(300, seed: 2)
        let v1 = try await ingest(list(first), "shop", "1.txt")
        XCTAssertEqual(v1.state, .live)
        let held = try await ingest([], "shop", "2.txt")
        XCTAssertEqual(held.state, .held)
        // The same number of keys, other ones: no approval needed.
        let second = ReferenceParser.randomKeys(300, seed: 3)
        let v3 = try await ingest(list(second), "shop", "3.txt")
        XCTAssertEqual(v3.state, .live, v3.error)
        let replaced = try await harness.fileStatus(held.version)?.state
        XCTAssertEqual(replaced, .superseded)
        let (news, olds) = (try await served("shop", second), try await served("shop", first))
        XCTAssertEqual(news, 300)
        XCTAssertEqual(olds, 0)
        // An approval of what was replaced is refused, and names why.
        do {
            _ = try await harness.adminClient.approve(ApproveRequest(advertiserID: "shop", version: held.version))
            XCTFail("a superseded version cannot be approved")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .failedPrecondition)
            XCTAssertTrue(error.message.contains("is superseded, not held"), error.message)
        }
    }

    func testAnAdvertisersOwnLimitOverridesTheCoordinators() async throws {
        try await start()
        let keys = ReferenceParser.randomKeys(100, seed: 4)
        let v1 = try await ingest(list(keys), "tiny", "1.txt")
        XCTAssertEqual(v1.state, .live)
        do {
            _ = try await harness.adminClient.setMaxShrink(SetMaxShrinkRequest(advertiserID: "tiny", maxShrink: 2))
            XCTFail("a share above 1 is refused")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument, error.message)
        }
        _ = try await harness.adminClient.setMaxShrink(SetMaxShrinkRequest(advertiserID: "tiny", maxShrink: 1))
        let emptied = try await ingest([], "tiny", "2.txt")
        XCTAssertEqual(emptied.state, .live, "the guard is off for this advertiser: \(emptied.error)")
        let left = try await served("tiny", keys)
        XCTAssertEqual(left, 0)
    }
}
