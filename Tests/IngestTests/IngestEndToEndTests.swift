import DataLake
import Foundation
import HashParsing
import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import TestSupport
import XCTest

final class IngestEndToEndTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func start(policy: IngestPolicy = IngestHarness.testPolicy(), workers: Int = 2) async throws {
        harness = try IngestHarness(policy: policy)
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        for i in 0..<workers { harness.startWorker(id: "w\(i)") }
    }

    /// A file with everything the parser must tolerate, and duplicates across blocks.
    private func messyFile(keys: [Key16], seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var text = "\u{FEFF}email_md5\n"
        for (i, key) in keys.enumerated() {
            let hex = ReferenceParser.hex(key, uppercase: rng.next() % 3 == 0)
            switch rng.next() % 6 {
            case 0: text += "\(hex)\r\n"
            case 1: text += "  \(hex)\t\n"
            case 2: text += "\n\(hex)\n"
            default: text += "\(hex)\n"
            }
            if i % 7 == 0 { text += "\(ReferenceParser.hex(keys[Int(rng.next() % UInt64(i + 1))]))\n" } // a duplicate
        }
        text += ReferenceParser.hex(keys[0]) // no final newline, and a duplicate
        return Array(text.utf8)
    }

    private func assertServes(_ advertiser: String, exactly reference: Set<Key16>, file: StaticString = #filePath, line: UInt = #line) async throws {
        let members = Array(reference)
        let hits = try await harness.matched(advertiser, members)
        XCTAssertEqual(hits.filter { $0 }.count, members.count, "every reference key is served", file: file, line: line)
        let strangers = ReferenceParser.randomKeys(2000, seed: 99).filter { !reference.contains($0) }
        let misses = try await harness.matched(advertiser, strangers)
        XCTAssertEqual(misses.filter { $0 }.count, 0, "no other key is served", file: file, line: line)
    }

    func testServedSetEqualsAnIndependentReading() async throws {
        try await start()
        let contents = messyFile(keys: ReferenceParser.randomKeys(3000, seed: 1), seed: 2)
        let reference = ReferenceParser.keys(contents)
        let path = try harness.drop(contents, advertiser: "acme", name: "members.txt")
        let submitted = try await harness.submit(path)
        XCTAssertTrue(submitted.queued)
        XCTAssertEqual(submitted.advertiserID, "acme")

        let status = try await harness.waitForFile(submitted.version)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.distinctKeys, UInt64(reference.count))
        XCTAssertGreaterThan(status.blocksTotal, 20, "4 KiB blocks")
        XCTAssertEqual(status.blocksDone, status.blocksTotal)
        XCTAssertEqual(status.mergesTotal, 4, "merged in parallel key ranges")
        XCTAssertEqual(status.bytesDone, UInt64(contents.count))
        XCTAssertEqual(status.invalidLines, 0)
        try await assertServes("acme", exactly: reference)

        // Submitting the same file again queues nothing.
        let again = try await harness.submit(path)
        XCTAssertFalse(again.queued)
        XCTAssertEqual(again.version, submitted.version)

        // Runs are collected once live; the segments stay.
        // (The version's folder goes, then its emptied parent: wait for both.)
        try await waitUntil { !FileManager.default.fileExists(atPath: self.harness.storeRoot.appendingPathComponent("runs/acme").path) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: harness.storeRoot.appendingPathComponent("runs/acme/\(submitted.version)").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: harness.storeRoot.appendingPathComponent("runs").path))
        // The four merges wrote slots of one pack file: one map serves them.
        let files = try FileManager.default.contentsOfDirectory(atPath: harness.storeRoot.appendingPathComponent("segments/acme/\(submitted.version)").path)
        XCTAssertEqual(files, ["merged.pack"])
        let live = try XCTUnwrap(harness.matchCatalog.current("acme"))
        XCTAssertEqual(live.segments.count, 4)
        XCTAssertEqual(Set(live.segments.map { ObjectIdentifier($0.mapping) }).count, 1, "one map for the version")
    }

    /// Blocks of 97 bytes over lines of 33 to 40 bytes: the boundaries fall
    /// at every offset within a line, and each record is read exactly once.
    func testRecordsCutByBlockBoundariesAreNeitherLostNorDoubled() async throws {
        var policy = IngestHarness.testPolicy(blockSize: 97)
        policy.maxMergeTasks = 2
        try await start(policy: policy)
        var rng = SplitMix64(seed: 5)
        var text = ""
        let keys = ReferenceParser.randomKeys(400, seed: 6)
        for key in keys {
            text += String(repeating: " ", count: Int(rng.next() % 5)) + ReferenceParser.hex(key) + (rng.next() % 2 == 0 ? "\r\n" : "\n")
        }
        let contents = Array(text.utf8)
        let path = try harness.drop(contents, advertiser: "cuts", name: "a.txt")
        let status = try await harness.waitForFile(try await harness.submit(path).version)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.keys, 400, "each line read once: no record lost or doubled")
        XCTAssertEqual(status.lines, 400)
        XCTAssertEqual(status.distinctKeys, UInt64(Set(keys).count))
        try await assertServes("cuts", exactly: Set(keys))
    }

    func testEmptyFileGoesLiveAsAnEmptyList() async throws {
        try await start()
        let path = try harness.drop([], advertiser: "empty", name: "none.txt")
        let status = try await harness.waitForFile(try await harness.submit(path).version)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.distinctKeys, 0)
        let hits = try await harness.matched("empty", ReferenceParser.randomKeys(10, seed: 1))
        XCTAssertEqual(hits, Array(repeating: false, count: 10))
    }

    func testInvalidFileIsRejectedWithItsReportAndThePreviousVersionKeepsServing() async throws {
        try await start()
        let good = ReferenceParser.randomKeys(500, seed: 8)
        let first = try harness.drop(Array(good.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "shop", name: "v1.txt")
        let v1 = try await harness.waitForFile(try await harness.submit(first).version)
        XCTAssertEqual(v1.state, .live)

        var lines = ["hash"] + good.prefix(200).map { ReferenceParser.hex($0) }
        lines[10] = "someone@example.com"
        lines[50] = String(repeating: "ab", count: 20) // SHA-1 length
        lines[120] = "not a hash"
        let second = try harness.drop(Array(lines.joined(separator: "\n").utf8), advertiser: "shop", name: "v2.txt")
        let v2 = try await harness.waitForFile(try await harness.submit(second).version)
        XCTAssertEqual(v2.state, .rejected)
        XCTAssertEqual(v2.invalidLines, 3)
        XCTAssertEqual(v2.invalidByKind, ["unhashed_email": 1, "wrong_hash_type": 1, "malformed": 1])
        XCTAssertEqual(v2.invalidSamples.map(\.line), [11, 51, 121], "file line numbers, 1-based")
        XCTAssertEqual(v2.invalidSamples.map(\.kind), ["unhashed_email", "wrong_hash_type", "malformed"])
        XCTAssertTrue(v2.error.contains("3 of 201 lines are invalid"), v2.error)
        try await assertServes("shop", exactly: Set(good))

        let allInvalid = try harness.drop(Array("x\ny\nz@z\n".utf8), advertiser: "shop", name: "v3.txt")
        let v3 = try await harness.waitForFile(try await harness.submit(allInvalid).version)
        XCTAssertEqual(v3.state, .rejected)
        try await assertServes("shop", exactly: Set(good))
    }

    func testNewFileReplacesTheListAndTheOldSegmentsAreCollected() async throws {
        try await start()
        let a = ReferenceParser.randomKeys(300, seed: 10)
        let b = ReferenceParser.randomKeys(300, seed: 11)
        let v1 = try await harness.waitForFile(try await harness.submit(
            try harness.drop(Array(a.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "brand", name: "1.txt")).version)
        let v2 = try await harness.waitForFile(try await harness.submit(
            try harness.drop(Array(b.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "brand", name: "2.txt")).version)
        XCTAssertEqual(v2.state, .live)
        let retired = try await harness.fileStatus(v1.version)
        XCTAssertEqual(retired?.state, .retired)
        XCTAssertEqual(harness.matchCatalog.current("brand")?.version, v2.version)
        try await assertServes("brand", exactly: Set(b))
        try await waitUntil { !FileManager.default.fileExists(atPath: self.harness.storeRoot.appendingPathComponent("segments/brand/\(v1.version)").path) }
    }

    func testPriorityLetsASmallFileOvertakeALargeOne() async throws {
        try await start(workers: 0)
        let big = ReferenceParser.randomKeys(6000, seed: 20) // ~200 KB: 50 blocks of 4 KiB
        let small = ReferenceParser.randomKeys(20, seed: 21)
        let bigID = try await harness.submit(try harness.drop(Array(big.map { ReferenceParser.hex($0) + "\n" }.joined().utf8),
                                                              advertiser: "big", name: "all.txt")).version
        try await Task.sleep(for: .milliseconds(20))
        let smallID = try await harness.submit(try harness.drop(Array(small.map { ReferenceParser.hex($0) + "\n" }.joined().utf8),
                                                                advertiser: "small", name: "few.txt")).version
        harness.startWorker(id: "only")
        let smallStatus = try await harness.waitForFile(smallID)
        let bigNow = try await harness.fileStatus(bigID)!
        XCTAssertEqual(smallStatus.state, .live)
        XCTAssertNotEqual(bigNow.state, .live, "the small file went live first")
        XCTAssertLessThan(bigNow.blocksDone, bigNow.blocksTotal / 2)
        let bigStatus = try await harness.waitForFile(bigID)
        XCTAssertEqual(bigStatus.state, .live)
        XCTAssertLessThan(smallStatus.liveAtMs, bigStatus.liveAtMs)
    }

    func testFileChangedDuringIngestIsAbandonedAndIngestedAgain() async throws {
        try await start(workers: 0)
        let old = ReferenceParser.randomKeys(400, seed: 30)
        let new = ReferenceParser.randomKeys(450, seed: 31)
        let path = try harness.drop(Array(old.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "chg", name: "list.txt")
        let first = try await harness.submit(path)
        // The blocks are queued; the file is rewritten before workers read it.
        try await Task.sleep(for: .milliseconds(5))
        try harness.drop(Array(new.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "chg", name: "list.txt")
        harness.startWorker(id: "w")
        let abandoned = try await harness.waitForFile(first.version)
        XCTAssertEqual(abandoned.state, .superseded)
        XCTAssertTrue(abandoned.error.contains("changed"), abandoned.error)
        // The new contents were queued as a new version and go live whole.
        var live: FileStatus?
        let deadline = ContinuousClock.now + .seconds(20)
        while live == nil, ContinuousClock.now < deadline {
            var request = ListFilesRequest()
            request.advertiserID = "chg"
            request.states = [.live]
            live = try await harness.adminClient.listFiles(request).files.first
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertGreaterThan(try XCTUnwrap(live).version, first.version)
        try await assertServes("chg", exactly: Set(new))
    }
}
