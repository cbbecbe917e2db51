import Foundation
import SegmentStore
import TestSupport
import XCTest

/// A base and the overlays of deltas on it, read as one list, against an
/// oracle: one key at a time, in batches, and in key order.
final class LayeredListTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-layers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func segment(_ keys: some Collection<Key16>, version: UInt64, role: SegmentRole = .members) throws -> Segment {
        let sorted = Array(Set(keys)).sorted()
        let path = dir.appendingPathComponent("\(UUID().uuidString).seg").path
        _ = try SegmentWriter.create(sorted, count: sorted.count, at: path, advertiserID: "acme", version: version, role: role)
        return try Segment(path: path)
    }

    /// The oracle and the segments of a base of `baseKeys` in `pieces`
    /// segments (disjoint ranges, or overlapping) and `layers` random deltas.
    private func build(baseKeys: Int, pieces: Int, overlapping: Bool, layers: Int, seed: UInt64)
        throws -> (segments: [Segment], members: Set<Key16>, universe: [Key16]) {
        var rng = SplitMix64(seed: seed)
        let universe = (0..<baseKeys * 2).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
        let base = Array(universe.prefix(baseKeys)).sorted()
        var members = Set(base)
        var segments: [Segment] = []
        if overlapping {
            for p in 0..<pieces { segments.append(try segment(base.enumerated().filter { $0.offset % pieces == p }.map(\.element), version: 1)) }
        } else {
            let size = (base.count + pieces - 1) / max(1, pieces)
            for start in stride(from: 0, to: base.count, by: max(1, size)) {
                segments.append(try segment(base[start..<min(base.count, start + size)], version: 1))
            }
        }
        for layer in 0..<layers {
            var changes: [Key16: Bool] = [:]
            for _ in 0..<(baseKeys / 5) {
                let key = universe[Int(rng.next() % UInt64(universe.count))]
                changes[key] = rng.next() % 2 == 0
            }
            let adds = changes.filter { $0.value }.map(\.key), removes = changes.filter { !$0.value }.map(\.key)
            segments.append(try segment(adds, version: UInt64(2 + layer), role: .adds))
            segments.append(try segment(removes, version: UInt64(2 + layer), role: .removes))
            members.formUnion(adds)
            members.subtract(removes)
        }
        segments.shuffle(using: &rng)
        return (segments, members, universe + (0..<200).map { _ in Key16(hi: rng.next(), lo: rng.next()) })
    }

    func testEveryWayOfAskingAgreesWithTheOracle() throws {
        for (pieces, overlapping, layers) in [(1, false, 0), (4, false, 0), (4, false, 1), (4, false, 5), (3, true, 3), (0, false, 2)] {
            let context = "\(pieces) base segments\(overlapping ? " overlapping" : ""), \(layers) overlays"
            let (segments, members, asked) = try build(baseKeys: 2_000, pieces: pieces, overlapping: overlapping, layers: layers,
                                                       seed: UInt64(pieces * 10 + layers))
            let list = LayeredList(segments)
            XCTAssertEqual(list.overlays.count, layers, context)
            XCTAssertEqual(list.overlays.map(\.version), (0..<layers).map { UInt64(2 + $0) }, "oldest first: \(context)")
            XCTAssertEqual(list.segment(for: asked[0]) == nil, layers > 0 || pieces == 0, "with overlays, no one segment answers: \(context)")

            let wrong = asked.filter { list.contains($0) != members.contains($0) }
            XCTAssertTrue(wrong.isEmpty, "\(wrong.count) keys answered wrongly one at a time: \(context)")

            var bitmap = [UInt8](repeating: 0, count: (asked.count + 7) / 8)
            let packed = asked.flatMap(\.bytes)
            packed.withUnsafeBytes { keys in
                bitmap.withUnsafeMutableBufferPointer { list.lookup(keys.baseAddress!, count: asked.count, into: $0.baseAddress!) }
            }
            let batchWrong = asked.indices.filter { (bitmap[$0 >> 3] >> UInt8($0 & 7) & 1 == 1) != members.contains(asked[$0]) }
            XCTAssertTrue(batchWrong.isEmpty, "\(batchWrong.count) keys answered wrongly in a batch: \(context)")

            var all: [Key16] = []
            list.forEachKey(after: nil) { all.append($0); return true }
            XCTAssertEqual(all, members.sorted(), "every member once, in order: \(context)")
            let sorted = members.sorted()
            if sorted.count > 100 {
                var after: [Key16] = []
                list.forEachKey(after: sorted[50]) { key in
                    after.append(key)
                    return after.count < 10
                }
                XCTAssertEqual(after, Array(sorted[51..<61]), "from a key on, stopping when told: \(context)")
            }
        }
    }

    /// The newest overlay that names a key decides: a key removed and then
    /// added again is a member, one added and then removed is not.
    func testTheNewestOverlayThatNamesAKeyDecides() throws {
        let a = Key16(hi: 1, lo: 1), b = Key16(hi: 2, lo: 2), c = Key16(hi: 3, lo: 3)
        let segments = [
            try segment([a, b], version: 1),
            try segment([c], version: 5, role: .adds), try segment([a], version: 5, role: .removes),
            try segment([a], version: 7, role: .adds), try segment([c], version: 7, role: .removes),
            try segment([Key16](), version: 8, role: .adds), try segment([Key16](), version: 8, role: .removes),
        ]
        let list = LayeredList(segments)
        XCTAssertEqual(list.overlays.map(\.version), [5, 7, 8])
        XCTAssertTrue(list.contains(a), "removed by 5, added again by 7")
        XCTAssertTrue(list.contains(b), "in the base, named by no overlay")
        XCTAssertFalse(list.contains(c), "added by 5, removed by 7")
        XCTAssertEqual(list.keyCount, 2)
    }
}
