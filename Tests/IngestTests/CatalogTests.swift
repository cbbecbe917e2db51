import DataLake
import Foundation
import IngestCoordinator
import RosterAPI
import SQLite
import IngestWorker
import SegmentStore
import TestSupport
import XCTest

final class CatalogTests: XCTestCase {
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
        XCTAssertEqual(try db.userVersion, 1)
        try db.execute("PRAGMA user_version = 99")
        XCTAssertThrowsError(try IngestCatalog(path: path, policy: policy)) { error in
            XCTAssertTrue("\(error)".contains("schema version 99"), "\(error)")
        }
    }

    func testPathOutsideAnAdvertiserFolderIsRefused() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let catalog = try IngestCatalog(path: path)
        XCTAssertThrowsError(try catalog.submit(object("loose.txt", size: 10), now: 0))
    }

    func testANewFileSupersedesAnUnfinishedOlderOne() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let catalog = try IngestCatalog(path: path)
        let first = try catalog.submit(object("a/1", size: 10), now: 0)
        let leased = try catalog.lease(worker: "w", max: 1, now: 1)
        XCTAssertEqual(leased.count, 1)
        let second = try catalog.submit(object("a/2", size: 10), now: 2)
        let states = try catalog.files(advertiser: "a", states: [], limit: 10, now: 3).map { ($0.fileId, $0.state) }
        XCTAssertEqual(states.first { $0.0 == first.fileID }?.1, .superseded)
        XCTAssertEqual(states.first { $0.0 == second.fileID }?.1, .queued)
        // The superseded version's lease is void: its report is ignored.
        var report = CompleteTaskRequest()
        report.taskId = leased[0].taskId
        report.leaseToken = leased[0].leaseToken
        XCTAssertNil(try catalog.complete(report, now: 4))
        XCTAssertEqual(try catalog.lease(worker: "w", max: 5, now: 5).map(\.version), [second.fileID])
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
    /// Both merge paths give the sorted, distinct keys of the range, for whole and partial ranges.
    func testHeapMergeAndGatherSortAgreeWithAReference() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("runs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 11)
        let shared = (0..<500).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
        var all = Set<Key16>()
        var runs: [Segment] = []
        var paths: [String] = []
        for r in 0..<5 {
            var keys = Set(shared.shuffled(using: &rng).prefix(200))
            for _ in 0..<3000 { keys.insert(Key16(hi: rng.next(), lo: rng.next())) }
            if r == 0 { keys.insert(Key16(hi: 0, lo: 0)); keys.insert(Key16(hi: .max, lo: .max)) }
            all.formUnion(keys)
            let path = dir.appendingPathComponent("run-\(r).run").path
            _ = try SegmentWriter.create(keys.sorted(), count: keys.count, at: path, advertiserID: "a", listVersion: 1)
            runs.append(try Segment(path: path))
            paths.append(path)
        }
        let empty = dir.appendingPathComponent("empty.run").path
        _ = try SegmentWriter.create([Key16](), count: 0, at: empty, advertiserID: "a", listVersion: 1)
        runs.append(try Segment(path: empty))
        paths.append(empty)
        for (low, high) in [(UInt64(0), UInt64(0)), (0, 1 << 62), (1 << 62, 3 << 62), (3 << 62, 0)] {
            let expected = all.filter { $0.hi >= low && (high == 0 || $0.hi < high) }.sorted()
            for method in ["heap", "sort"] {
                let path = dir.appendingPathComponent("out-\(method)-\(low)-\(high).seg").path
                let writer = try SegmentWriter(path: path, advertiserID: "a", listVersion: 1, estimatedKeys: expected.count)
                let written = method == "heap"
                    ? try RunMerger.merge(runs: runs, low: low, high: high, into: writer)
                    : try RunMerger.gatherAndSort(runPaths: paths, ranges: try RunMerger.ranges(runPaths: paths, low: low, high: high),
                                                  low: low, high: high, into: writer)
                _ = try writer.finish()
                let segment = try Segment(path: path)
                XCTAssertEqual(written, expected.count, method)
                XCTAssertEqual((0..<segment.count).map { segment.key(at: $0) }, expected, "\(method) \(low)..<\(high)")
            }
        }
    }
}

final class SegmentFileTests: XCTestCase {
    private func openError(_ path: String) -> String {
        do {
            _ = try SegmentFile(path: path)
            return "opened"
        } catch {
            return "\(error)"
        }
    }

    func testPreadReaderAgreesWithTheMappedSegmentAndRefusesDamage() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 21)
        let keys = Set((0..<5000).map { _ in Key16(hi: rng.next(), lo: rng.next()) }).sorted()
        let path = dir.appendingPathComponent("r.run").path
        _ = try SegmentWriter.create(keys, count: keys.count, at: path, advertiserID: "a", listVersion: 1)
        let mapped = try Segment(path: path)
        let file = try SegmentFile(path: path)
        XCTAssertEqual(file.keyCount, keys.count)
        for probe in keys.prefix(50) + (0..<50).map({ _ in Key16(hi: rng.next(), lo: rng.next()) }) + [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)] {
            XCTAssertEqual(try file.lowerBound(probe), mapped.lowerBound(probe))
        }
        var read: [Key16] = []
        try file.readKeys(100..<4000, into: &read)
        XCTAssertEqual(read, Array(keys[100..<4000]))

        // Two keys swapped in place: the header is intact, the order is not.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let keysStart = bytes.count - keys.count * 16
        let a = bytes.subdata(in: keysStart + 16 * 10..<keysStart + 16 * 11)
        let b = bytes.subdata(in: keysStart + 16 * 11..<keysStart + 16 * 12)
        bytes.replaceSubrange(keysStart + 16 * 10..<keysStart + 16 * 11, with: b)
        bytes.replaceSubrange(keysStart + 16 * 11..<keysStart + 16 * 12, with: a)
        let damaged = dir.appendingPathComponent("damaged.run").path
        try bytes.write(to: URL(fileURLWithPath: damaged))
        var out: [Key16] = []
        do {
            let file = try SegmentFile(path: damaged)
            try file.readKeys(0..<keys.count, into: &out)
            XCTFail("a damaged run must be refused")
        } catch {
            XCTAssertTrue("\(error)".contains("out of order"), "\(error)")
        }
        let truncated = dir.appendingPathComponent("truncated.run").path
        try bytes.prefix(bytes.count - 16).write(to: URL(fileURLWithPath: truncated))
        XCTAssertTrue(openError(truncated).contains("does not match"), openError(truncated))
        let garbage = dir.appendingPathComponent("garbage.run").path
        try Data(repeating: 7, count: 300).write(to: URL(fileURLWithPath: garbage))
        XCTAssertTrue(openError(garbage).contains("bad magic"), openError(garbage))
    }
}
