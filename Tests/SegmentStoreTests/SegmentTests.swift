import Foundation
import SegmentStore
import TestSupport
import XCTest

final class SegmentTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-seg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func randomKeys(_ n: Int, seed: UInt64) -> [Key16] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    }

    private func write(_ keys: [Key16], name: String = "a.seg", advertiser: String = "acme", version: UInt64 = 1) throws -> String {
        let sorted = Array(Set(keys)).sorted()
        let path = dir.appendingPathComponent(name).path
        _ = try SegmentWriter.create(sorted, count: sorted.count, at: path, advertiserID: advertiser, version: version)
        return path
    }

    func testXXH64MatchesTheReferenceVectors() {
        // Values from the reference implementation (python-xxhash).
        let vectors: [([UInt8], UInt64)] = [
            ([], 0xEF46_DB37_51D8_E999),
            (Array("a".utf8), 0xD24E_C4F1_A98C_6E5B),
            (Array("abc".utf8), 0x44BC_2CF5_AD77_0999),
            (Array((0..<768).map { UInt8($0 % 256) }), 0x8E03_C838_C596_036F),
            (Array(repeating: UInt8(ascii: "x"), count: 31), 0x60DD_0D01_083B_99F0),
            (Array(repeating: UInt8(ascii: "y"), count: 32), 0x64DA_1F1D_3495_CE66),
            (Array(repeating: UInt8(ascii: "z"), count: 33), 0xC524_1253_C64E_0268),
            (Array(String(repeating: "0123456789abcdef", count: 5).utf8) + Array("abc".utf8), 0x1FA2_7725_EE6F_CB52),
        ]
        for (input, expected) in vectors {
            XCTAssertEqual(input.withUnsafeBytes { XXH64.hash($0) }, expected, "\(input.count) bytes")
            // Streaming in uneven pieces gives the same hash.
            var hasher = XXH64()
            var i = 0
            var step = 1
            while i < input.count {
                let end = min(input.count, i + step)
                input[i..<end].withUnsafeBytes { hasher.update($0) }
                i = end
                step = step * 2 + 1
            }
            XCTAssertEqual(hasher.finalize(), expected)
        }
    }

    func testLookupsAgreeWithASetOnRandomData() throws {
        var keys = randomKeys(120_000, seed: 1)
        keys += [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max), Key16(hi: 0, lo: 1), Key16(hi: .max, lo: .max - 1)]
        let path = try write(keys)
        let segment = try Segment(path: path)
        let reference = Set(keys)
        XCTAssertEqual(segment.count, reference.count)
        XCTAssertEqual(segment.info.advertiserID, "acme")
        XCTAssertEqual(segment.info.firstKey, Key16(hi: 0, lo: 0))
        XCTAssertEqual(segment.info.lastKey, Key16(hi: .max, lo: .max))

        // Every member is found; first and last included.
        for key in keys { XCTAssertTrue(segment.contains(key)) }
        // Misses: fresh random keys, and neighbours of members.
        let misses = randomKeys(50_000, seed: 2) + keys.prefix(5_000).map { Key16(hi: $0.hi, lo: $0.lo &+ 1) }
        for key in misses { XCTAssertEqual(segment.contains(key), reference.contains(key), "\(key)") }

        // The batch path agrees with the single path.
        let batch = Array(keys.prefix(3_000)) + misses.prefix(3_000)
        var bytes = [UInt8]()
        for key in batch { bytes += key.bytes }
        var bitmap = [UInt8](repeating: 0, count: (batch.count + 7) / 8)
        bytes.withUnsafeBytes { b in bitmap.withUnsafeMutableBufferPointer { segment.lookup(b.baseAddress!, count: batch.count, into: $0.baseAddress!) } }
        for (i, key) in batch.enumerated() {
            XCTAssertEqual(bitmap[i / 8] >> (i % 8) & 1 == 1, reference.contains(key), "batch index \(i)")
        }
    }

    /// The batch lookup is a pipeline a few keys deep: batches shorter than
    /// it, as long as it, and a little past it (where its slots are reused)
    /// all answer like single lookups, and it writes no bit past the batch.
    func testBatchesOfEveryShortLengthAgreeWithSingleLookups() throws {
        let keys = randomKeys(20_000, seed: 5)
        let segment = try Segment(path: try write(keys))
        let misses = randomKeys(64, seed: 6)
        for count in 0...64 {
            // Members and strangers mixed, in an order that differs by length.
            let batch = (0..<count).map { i in (i + count) % 3 == 0 ? misses[i] : keys[(i * 7919 + count) % keys.count] }
            var bytes = [UInt8]()
            for key in batch { bytes += key.bytes }
            bytes += [UInt8](repeating: 0, count: 16) // one key's room, so a read past the batch would not fault
            var bitmap = [UInt8](repeating: 0, count: (count + 7) / 8 + 1)
            bytes.withUnsafeBytes { b in bitmap.withUnsafeMutableBufferPointer { segment.lookup(b.baseAddress!, count: count, into: $0.baseAddress!) } }
            for (i, key) in batch.enumerated() {
                XCTAssertEqual(bitmap[i / 8] >> (i % 8) & 1 == 1, segment.contains(key), "batch of \(count), index \(i)")
            }
            XCTAssertEqual(bitmap[(count + 7) / 8], 0, "batch of \(count): a bit past the batch")
            if count % 8 != 0 { XCTAssertEqual(bitmap[count / 8] >> (count % 8), 0, "batch of \(count): a bit past the batch") }
        }
    }

    func testSingleKeyAndEmptySegments() throws {
        let one = try Segment(path: write([Key16(hi: 7, lo: 9)], name: "one.seg"))
        XCTAssertEqual(one.count, 1)
        XCTAssertEqual(one.info.indexBits, 0)
        XCTAssertTrue(one.contains(Key16(hi: 7, lo: 9)))
        XCTAssertFalse(one.contains(Key16(hi: 7, lo: 8)))
        XCTAssertFalse(one.contains(Key16(hi: 0, lo: 0)))

        let empty = try Segment(path: write([], name: "empty.seg"))
        XCTAssertEqual(empty.count, 0)
        XCTAssertNil(empty.info.firstKey)
        XCTAssertFalse(empty.contains(Key16(hi: 0, lo: 0)))
        XCTAssertFalse(empty.contains(Key16(hi: .max, lo: .max)))
    }

    func testKeysWithTheSameTopBitsShareABucket() throws {
        // Many keys in one bucket, and a bucket run at both ends of the key space.
        var keys = (0..<5_000).map { Key16(hi: 0x1234_0000_0000_0000 | UInt64($0), lo: UInt64($0)) }
        keys += (0..<100).map { Key16(hi: UInt64($0), lo: 0) } + (0..<100).map { Key16(hi: .max - UInt64($0), lo: .max) }
        let segment = try Segment(path: write(keys + randomKeys(20_000, seed: 5)))
        for key in keys { XCTAssertTrue(segment.contains(key)) }
        XCTAssertFalse(segment.contains(Key16(hi: 0x1234_0000_0000_0000 | 5_000, lo: 5_000)))
    }

    func testWriterRejectsUnsortedAndDuplicateKeys() throws {
        let path = dir.appendingPathComponent("bad.seg").path
        let writer = try SegmentWriter(path: path, advertiserID: "a", version: 1, estimatedKeys: 10)
        try writer.append(Key16(hi: 1, lo: 1))
        XCTAssertThrowsError(try writer.append(Key16(hi: 1, lo: 1))) { XCTAssertTrue("\($0)".contains("duplicate key")) }
        XCTAssertThrowsError(try writer.append(Key16(hi: 0, lo: 5))) { XCTAssertTrue("\($0)".contains("out of order")) }
        writer.discard()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [], "no temporary file left behind")
        XCTAssertThrowsError(try SegmentWriter(path: path, advertiserID: String(repeating: "x", count: 65), version: 1, estimatedKeys: 1))
    }

    /// A sealed segment appears at its path only when committed, whole; a
    /// discarded one leaves nothing behind.
    func testSealedSegmentAppearsOnlyWhenCommitted() throws {
        let keys = Array(Set(randomKeys(500, seed: 12))).sorted()
        let path = dir.appendingPathComponent("sealed.seg").path
        let writer = try SegmentWriter(path: path, advertiserID: "a", version: 3, estimatedKeys: keys.count)
        try keys.withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
        let sealed = try writer.seal()
        XCTAssertEqual(sealed.info.keyCount, 500)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "not in place before the commit")
        try sealed.commit()
        let segment = try Segment(path: path)
        XCTAssertEqual(segment.count, 500)
        XCTAssertEqual(segment.info.version, 3)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["sealed.seg"], "no temporary file left")

        let other = dir.appendingPathComponent("discarded.seg").path
        let second = try SegmentWriter(path: other, advertiserID: "a", version: 3, estimatedKeys: 1)
        try second.append(Key16(hi: 1, lo: 2))
        try second.seal().discard()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["sealed.seg"])
    }

    /// The bulk writer gives the same file as key-by-key appends, and refuses
    /// the same mistakes, within a batch and across batches.
    func testBulkAppendMatchesSingleAppendsAndRejectsDisorder() throws {
        let keys = randomKeys(300_000, seed: 5).sorted() // several 1 MiB buffers
        let one = dir.appendingPathComponent("one.seg").path
        _ = try SegmentWriter.create(keys, count: keys.count, at: one, advertiserID: "a", version: 1)
        let bulk = dir.appendingPathComponent("bulk.seg").path
        _ = try keys.withUnsafeBufferPointer { try SegmentWriter.create($0, at: bulk, advertiserID: "a", version: 1) }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: one)), try Data(contentsOf: URL(fileURLWithPath: bulk)))

        let writer = try SegmentWriter(path: dir.appendingPathComponent("bad.seg").path, advertiserID: "a", version: 1, estimatedKeys: 10)
        try [Key16(hi: 1, lo: 1), Key16(hi: 2, lo: 0)].withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
        XCTAssertThrowsError(try [Key16(hi: 2, lo: 0)].withUnsafeBufferPointer { try writer.append(contentsOf: $0) }) {
            XCTAssertTrue("\($0)".contains("duplicate key"), "\($0)")
        }
        XCTAssertThrowsError(try [Key16(hi: 3, lo: 0), Key16(hi: 2, lo: 9)].withUnsafeBufferPointer { try writer.append(contentsOf: $0) }) {
            XCTAssertTrue("\($0)".contains("out of order after"), "\($0)")
        }
        writer.discard()
    }

    func testCorruptOrTruncatedSegmentsAreRefusedWithTheirPath() throws {
        let path = try write(randomKeys(10_000, seed: 3))
        let good = try Data(contentsOf: URL(fileURLWithPath: path))

        func refusal(_ bytes: Data) -> String? {
            let p = dir.appendingPathComponent("broken-\(UUID().uuidString).seg").path
            FileManager.default.createFile(atPath: p, contents: bytes)
            do {
                _ = try Segment(path: p)
                return nil
            } catch {
                XCTAssertEqual(error.path, p, "the error names the file")
                return error.reason
            }
        }
        var flipped = good
        flipped[good.count - 5] ^= 0x01
        XCTAssertEqual(refusal(flipped), "key checksum mismatch")
        var index = good
        index[SegmentFormat.headerSize + 16] ^= 0x80
        XCTAssertEqual(refusal(index), "index checksum mismatch")
        var header = good
        header[SegmentFormat.headerSize - 20] ^= 0x01
        XCTAssertEqual(refusal(header), "header checksum mismatch")
        XCTAssertEqual(refusal(good.prefix(good.count - 16)), "truncated: \(good.count - 16) bytes, \(good.count) expected for 10000 keys")
        XCTAssertEqual(refusal(good + Data([0])), "1 unexpected bytes after the keys")
        XCTAssertEqual(refusal(good.prefix(50)), "truncated: 50 bytes, smaller than the 128-byte header")
        XCTAssertEqual(refusal(Data(repeating: 0, count: 500)), "not a segment file (bad magic)")
        XCTAssertEqual(refusal(Data()), "truncated: 0 bytes, smaller than the 128-byte header")
        XCTAssertThrowsError(try Segment(path: dir.appendingPathComponent("missing.seg").path)) {
            XCTAssertTrue("\($0)".contains("cannot open"))
        }
        // The good file still opens.
        XCTAssertEqual(try Segment(path: path).count, 10_000)
    }

    func testIndexBits() {
        XCTAssertEqual(SegmentFormat.indexBits(forKeys: 0), 0)
        XCTAssertEqual(SegmentFormat.indexBits(forKeys: 31), 0)
        XCTAssertEqual(SegmentFormat.indexBits(forKeys: 32), 1)
        XCTAssertEqual(SegmentFormat.indexBits(forKeys: 10_000_000), 19)
        XCTAssertEqual(SegmentLayout.forKeys(10_000_000), SegmentLayout(version: 2, bits: 19, dropped: 2))
        XCTAssertEqual(SegmentLayout.forKeys(10_000_000, version: 1), SegmentLayout(version: 1, bits: 20, dropped: 0))
        // Past 2^32 keys a 4-byte index entry cannot count them: version 1.
        XCTAssertEqual(SegmentLayout.forKeys(6_000_000_000), SegmentLayout(version: 1, bits: 24, dropped: 0))
        // 10^7 keys: 14 bytes a key and 2 MiB of index, about 14.2 bytes a key.
        XCTAssertEqual(Double(SegmentFormat.fileSize(forKeys: 10_000_000)) / 1e7, 14.21, accuracy: 0.01)
    }

    /// Sorted, distinct keys spread evenly over the key space with random
    /// low bits: what a sorted list of MD5s looks like, made without a sort.
    private func spreadKeys(_ n: Int, seed: UInt64) -> [Key16] {
        var rng = SplitMix64(seed: seed)
        let step = n == 0 ? 0 : UInt64.max / UInt64(n)
        return (0..<n).map { Key16(hi: UInt64($0) &* step &+ rng.next() % max(1, step), lo: rng.next()) }
    }

    /// Both formats at every size class (no index, 1 and 2 dropped bytes):
    /// what is written is what is read, members are found, neighbours are
    /// not, the batch path and paging agree, and the size is the layout's.
    func testEveryFormatAndSizeClassRoundTrips() throws {
        let cases: [(UInt16, HashKind, SegmentRole)] = [(1, .md5, .members), (2, .md5, .members), (2, .sha256, .members),
                                                        (2, .md5, .removes), (2, .sha256, .adds)]
        for (formatVersion, kind, role) in cases {
            for n in [0, 1, 2, 31, 32, 33, 500, 4_096, 70_000, 1_100_000] {
                let keys = spreadKeys(n, seed: UInt64(n))
                let path = dir.appendingPathComponent("v\(formatVersion)-\(kind.name)-\(role)-\(n).seg").path
                let writer = try SegmentWriter(path: path, advertiserID: "acme", version: 3, estimatedKeys: n, formatVersion: formatVersion,
                                               hashKind: kind, role: role)
                // Half one by one, half in bulk: both ways of appending.
                for key in keys.prefix(n / 2) { try writer.append(key) }
                try keys[(n / 2)...].withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
                _ = try writer.finish()
                let segment = try Segment(path: path)
                let v2 = SegmentLayout.forKeys(n, version: formatVersion)
                // A SHA-256 list's segment is version 3, a delta's overlay 4:
                // version 2's layout, its hash type and role in the header.
                let version: UInt16 = role != .members ? 4 : kind != .md5 ? 3 : v2.version
                let layout = SegmentLayout(version: version, bits: v2.bits, dropped: v2.dropped)
                let context = "format \(formatVersion), \(kind), \(role), \(n) keys"
                XCTAssertEqual(segment.layout, layout, context)
                XCTAssertEqual(segment.info.hashKind, kind, context)
                XCTAssertEqual(segment.info.role, role, context)
                XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, layout.fileSize(keys: n), context)
                XCTAssertEqual(segment.count, n, context)
                XCTAssertEqual(segment.info.firstKey, keys.first, context)
                XCTAssertEqual(segment.info.lastKey, keys.last, context)
                let sample = n <= 5_000 ? Array(keys.indices) : (0..<2_000).map { $0 * (n / 2_000) } + [n - 1]
                var probes: [Key16] = []
                for i in sample {
                    let key = keys[i]
                    XCTAssertTrue(segment.contains(key), "\(context): key \(i)")
                    XCTAssertEqual(segment.key(at: i), key, "\(context): key at \(i)")
                    XCTAssertEqual(segment.lowerBound(key), i, "\(context): lower bound of key \(i)")
                    let after = Key16(hi: key.hi, lo: key.lo &+ 1)
                    XCTAssertEqual(segment.contains(after), i + 1 < n && keys[i + 1] == after, "\(context): after key \(i)")
                    XCTAssertEqual(segment.lowerBound(after), i + 1, "\(context): lower bound after key \(i)")
                    probes += [key, after, Key16(hi: key.hi ^ 1, lo: key.lo)]
                }
                XCTAssertFalse(segment.contains(Key16(hi: 0, lo: 0)) && keys.first != Key16(hi: 0, lo: 0), context)
                XCTAssertFalse(segment.contains(Key16(hi: .max, lo: .max)), context)
                var bytes = [UInt8]()
                for key in probes { bytes += key.bytes }
                var bitmap = [UInt8](repeating: 0, count: (probes.count + 7) / 8)
                if !probes.isEmpty {
                    bytes.withUnsafeBytes { b in bitmap.withUnsafeMutableBufferPointer { segment.lookup(b.baseAddress!, count: probes.count, into: $0.baseAddress!) } }
                }
                for (i, key) in probes.enumerated() {
                    XCTAssertEqual(bitmap[i / 8] >> (i % 8) & 1 == 1, segment.contains(key), "\(context): batch index \(i)")
                }
            }
        }
    }

    /// The scrub's verification reads the keys a piece at a time, pausing
    /// after each, and still finds a key that rotted on disk.
    func testVerifyInPiecesPausesAfterEachAndFindsDamage() async throws {
        let path = try write(spreadKeys(100_000, seed: 11))
        let segment = try Segment(path: path)
        var pieces: [Int] = []
        try await segment.verify(inPiecesOf: 65_536) { pieces.append($0) }
        let total = segment.layout.stride * 100_000
        XCTAssertEqual(pieces.count, (total + 65_535) / 65_536)
        XCTAssertEqual(pieces.reduce(0, +), total)
        XCTAssertTrue(pieces.dropLast().allSatisfy { $0 == 65_536 })
        // Rot one byte of the file under the live map (the map shares its pages).
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(segment.layout.keysOffset + total / 2))
        let byte = try XCTUnwrap(handle.readData(ofLength: 1).first)
        try handle.seek(toOffset: UInt64(segment.layout.keysOffset + total / 2))
        handle.write(Data([byte ^ 0x10]))
        try handle.close()
        do {
            try await segment.verify(inPiecesOf: 1 << 20) { _ in }
            XCTFail("the damage was not found")
        } catch {
            XCTAssertEqual(error.reason, "key checksum mismatch")
        }
    }

    /// Keys that are not uniform (all in one bucket, sequential low bits)
    /// defeat the guess of where a key lies; the search still finds them.
    func testLookupsFindSkewedKeys() throws {
        let keys = (0..<3_000).map { Key16(hi: 0x00AB_0000_0000_0000 | UInt64($0 / 7), lo: UInt64($0 % 7) << 60) }
        let path = try write(keys + spreadKeys(600_000, seed: 8))
        let segment = try Segment(path: path)
        XCTAssertEqual(segment.layout.dropped, 1)
        for key in keys {
            XCTAssertTrue(segment.contains(key))
            XCTAssertFalse(segment.contains(Key16(hi: key.hi, lo: key.lo | 1)))
        }
    }

    /// A header that passes its checksum but describes a layout this build
    /// does not read is refused, naming what is wrong.
    func testAnUnknownVersionOrLayoutIsRefused() throws {
        let path = try write(randomKeys(1_000, seed: 4))
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func refusal(_ edit: (inout Data) -> Void) -> String? {
            var bytes = good
            edit(&bytes)
            let hash = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[..<120])) }
            withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(120..<128, with: $0) }
            let p = dir.appendingPathComponent("edited-\(UUID().uuidString).seg").path
            FileManager.default.createFile(atPath: p, contents: bytes)
            do {
                _ = try Segment(path: p)
                return nil
            } catch {
                return error.reason
            }
        }
        XCTAssertNil(refusal { _ in }, "the header checksum is recomputed right")
        XCTAssertEqual(refusal { $0[4] = 5 }, "unsupported format version 5 (this build reads 1 to 4)")
        XCTAssertEqual(refusal { $0[107] = 2 }, "a delta's removes segment in format version 2, which holds only members")
        XCTAssertEqual(refusal { $0[4] = 4; $0[107] = 3 }, "unknown segment role 3")
        XCTAssertNil(refusal { $0[4] = 4; $0[107] = 2 }, "version 4 holds a delta's removes")
        XCTAssertNil(refusal { $0[4] = 4; $0[106] = 1; $0[107] = 1 }, "and a SHA-256 delta's adds")
        XCTAssertEqual(refusal { $0[106] = 1 }, "a SHA-256 segment in format version 2, which holds only MD5")
        XCTAssertEqual(refusal { $0[106] = 7 }, "unknown hash type 7")
        XCTAssertNil(refusal { $0[4] = 3; $0[106] = 1 }, "version 3 holds a SHA-256 list")
        XCTAssertEqual(refusal { $0[7] = 2 }, "2 dropped key bytes with 5 index bits (at most 0)")
        XCTAssertEqual(refusal { $0[4] = 1 }, "truncated: \(good.count) bytes, \(SegmentLayout(version: 1, bits: 5, dropped: 0).fileSize(keys: 1_000)) expected for 1000 keys")
    }
}

/// Pack files: the segments of one version in slots of one file, one map.
final class PackFileTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-pack-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func sortedKeys(_ n: Int, seed: UInt64) -> [Key16] {
        var rng = SplitMix64(seed: seed)
        return Array(Set((0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) })).sorted()
    }

    /// Writes `keys` into a new slot of `pack`; returns where it went.
    private func writeSlot(_ keys: [Key16], pack: String, estimate: Int? = nil) throws -> SegmentLocation.Slice {
        let estimated = estimate ?? keys.count
        let slot = try PackFile.reserve(at: pack, capacity: SegmentFormat.fileSize(forKeys: estimated))
        let writer = try SegmentWriter(slot: slot, advertiserID: "acme", version: 9, estimatedKeys: estimated)
        do {
            try keys.withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
            let sealed = try writer.seal()
            try sealed.commit()
            return try XCTUnwrap(sealed.slice)
        } catch {
            writer.discard()
            throw error
        }
    }

    func testSegmentsInSlotsOfOnePackShareOneMapAndAnswerLikeFiles() throws {
        let pack = dir.appendingPathComponent("merged.pack").path
        let ranges = [sortedKeys(3_000, seed: 1), sortedKeys(1, seed: 2), [], sortedKeys(70_000, seed: 3)]
        let slices = try ranges.map { try writeSlot($0, pack: pack) }
        for (a, b) in zip(slices, slices.dropFirst()) {
            XCTAssertEqual(a.offset % PackFile.alignment, 0)
            XCTAssertLessThanOrEqual(a.offset + a.length, b.offset, "slots overlap")
        }
        let mapping = try FileMapping(path: pack)
        for (keys, slice) in zip(ranges, slices) {
            let segment = try Segment(in: mapping, slice: slice, checks: .everything)
            XCTAssertTrue(segment.mapping === mapping)
            XCTAssertEqual(segment.count, keys.count)
            XCTAssertEqual(segment.info.version, 9)
            XCTAssertTrue(keys.allSatisfy { segment.contains($0) })
            XCTAssertFalse(ranges.filter { $0 != keys }.joined().contains { segment.contains($0) })
        }
    }

    /// A writer given more keys than its slot was sized for fails rather
    /// than write over the next slot, whose segment stays intact.
    func testAWriterCannotOverflowItsSlot() throws {
        let pack = dir.appendingPathComponent("merged.pack").path
        let slot = try PackFile.reserve(at: pack, capacity: SegmentFormat.fileSize(forKeys: 10))
        let nextKeys = sortedKeys(500, seed: 5)
        let next = try writeSlot(nextKeys, pack: pack)
        let writer = try SegmentWriter(slot: slot, advertiserID: "acme", version: 9, estimatedKeys: 10)
        let many = sortedKeys(100_000, seed: 6)
        XCTAssertThrowsError(try many.withUnsafeBufferPointer { try writer.append(contentsOf: $0); _ = try writer.seal() }) { error in
            XCTAssertTrue("\(error)".contains("overflow"), "\(error)")
        }
        writer.discard()
        let intact = try Segment(in: try FileMapping(path: pack), slice: next, checks: .everything)
        XCTAssertEqual(intact.count, nextKeys.count)
        XCTAssertThrowsError(try SegmentWriter(slot: slot, advertiserID: "acme", version: 9, estimatedKeys: 1_000_000)) { error in
            XCTAssertTrue("\(error)".contains("cannot hold"), "\(error)")
        }
    }

    func testSlicesOutsideTheFileOrOverlappingTheWrongBytesAreRefused() throws {
        let pack = dir.appendingPathComponent("merged.pack").path
        let slice = try writeSlot(sortedKeys(200, seed: 7), pack: pack)
        let mapping = try FileMapping(path: pack)
        for bad in [SegmentLocation.Slice(offset: slice.offset, length: mapping.size + 1),
                    SegmentLocation.Slice(offset: -4096, length: slice.length),
                    SegmentLocation.Slice(offset: mapping.size, length: 200)] {
            XCTAssertThrowsError(try Segment(in: mapping, slice: bad, checks: .header)) { error in
                XCTAssertTrue("\(error)".contains("outside") || "\(error)".contains("truncated"), "\(error)")
            }
        }
        XCTAssertThrowsError(try Segment(in: mapping, slice: .init(offset: slice.offset, length: slice.length - 16), checks: .header)) { error in
            XCTAssertTrue("\(error)".contains("merged.pack@\(slice.offset)+\(slice.length - 16)"), "named by its slice: \(error)")
        }
    }

    /// A whole file is a plain string in JSON (as manifests written before
    /// packs have it), a slice an object.
    func testLocationsEncodeAsStringsOrObjects() throws {
        let locations = [SegmentLocation(path: "s/a/1/x.seg"), SegmentLocation(path: "s/a/2/merged.pack", slice: .init(offset: 8192, length: 300))]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = String(decoding: try encoder.encode(locations), as: UTF8.self)
        XCTAssertEqual(json, #"["s\/a\/1\/x.seg",{"length":300,"offset":8192,"path":"s\/a\/2\/merged.pack"}]"#)
        XCTAssertEqual(try JSONDecoder().decode([SegmentLocation].self, from: Data(json.utf8)), locations)
    }
}
