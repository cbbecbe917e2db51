import DataLake
import Foundation
@testable import HashParsing
import SegmentStore
import TestSupport
import XCTest

final class BlockParserTests: XCTestCase {
    private var root: URL!
    private var lake: LocalFolderLake!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-lake-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("acme"), withIntermediateDirectories: true)
        lake = LocalFolderLake(root: root)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    private func put(_ bytes: [UInt8], name: String = "list.txt") async throws -> LakeObject {
        try Data(bytes).write(to: root.appendingPathComponent("acme/\(name)"))
        return try await lake.head("acme/\(name)")
    }

    /// Parses every block of `object` and returns the keys in file order plus the summed stats.
    private func parseAll(_ object: LakeObject, blockSize: Int64, chunkSize: Int = 7,
                          hashKind: HashKind = .md5) async throws -> ([Key16], BlockStats) {
        var keys: [Key16] = []
        var total = BlockStats()
        for block in BlockRange.split(size: object.size, blockSize: blockSize) {
            let stats = try await BlockParser(chunkSize: chunkSize).parse(lake, object: object, block: block, hashKind: hashKind, into: &keys)
            total.lines += stats.lines
            total.keys += stats.keys
            total.skipped += stats.skipped
            for (k, v) in stats.invalid { total.invalid[k, default: 0] += v }
        }
        return (keys, total)
    }

    /// The reference: split on '\\n' in one piece, by a different route.
    private func reference(_ text: [UInt8]) -> [Key16] {
        var out: [Key16] = []
        for (i, raw) in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            var s = String(decoding: raw, as: UTF8.self)
            if i == 0, s.hasPrefix("\u{FEFF}") { s.removeFirst() }
            s = s.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            if s.count == 32, let hi = UInt64(s.prefix(16), radix: 16), let lo = UInt64(s.suffix(16), radix: 16) {
                out.append(Key16(hi: hi, lo: lo))
            }
        }
        return out
    }

    func testEveryRecordBelongsToExactlyOneBlockWhateverTheOffsets() async throws {
        var rng = SystemRandomNumberGenerator()
        var text = Array("email_md5\r\n".utf8)
        for i in 0..<60 {
            let hex = (0..<32).map { _ in "0123456789abcdefABCDEF".randomElement(using: &rng)! }
            text += Array(String(hex).utf8)
            text += i % 7 == 0 ? Array("\r\n".utf8) : i % 11 == 0 ? Array("  \n\n".utf8) : [UInt8(ascii: "\n")]
        }
        text += Array("ffffffffffffffffffffffffffffffff".utf8) // no final newline
        let object = try await put(text)
        let expected = reference(text)
        XCTAssertEqual(expected.count, 61)
        // Block size 1 puts a boundary at every offset; the others put boundaries
        // at every position within a line, for lines split across several reads.
        let sizes = Array(Int64(1)...70) + stride(from: Int64(71), through: Int64(text.count + 1), by: 37)
        for blockSize in sizes {
            let (keys, stats) = try await parseAll(object, blockSize: blockSize, chunkSize: blockSize % 2 == 0 ? 7 : 64)
            XCTAssertEqual(keys, expected, "block size \(blockSize)")
            XCTAssertEqual(stats.invalidCount, 0, "block size \(blockSize)")
        }
    }

    func testLineRules() async throws {
        let text = Array("\u{FEFF}D41D8CD98F00B204E9800998ECF8427E\n".utf8)
            + Array("\t d41d8cd98f00b204e9800998ecf8427f \r\n\n".utf8)
            + Array("da39a3ee5e6b4b0d3255bfef95601890afd80709\n".utf8) // SHA-1
            + Array("someone@example.com\n".utf8)
            + Array("not a hash\n".utf8)
            + Array(repeating: UInt8(ascii: "x"), count: 10_000) + [10]
        let object = try await put(text)
        let (keys, stats) = try await parseAll(object, blockSize: 16)
        XCTAssertEqual(keys.map(\.description), ["d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427f"])
        XCTAssertEqual(stats.invalid, [.wrongHashType: 1, .unhashedEmail: 1, .malformed: 2])
        XCTAssertEqual(stats.skipped, 1, "the blank line")
        XCTAssertEqual(stats.lines, 7)
    }

    /// A SHA-256 file: 64-digit lines are keys (their first 16 bytes),
    /// every block boundary and read size agreeing with a reference; MD5
    /// lines in it are the wrong type, and the file's type is found as
    /// every worker finds it.
    func testSHA256LinesWhateverTheOffsets() async throws {
        var rng = SplitMix64(seed: 23)
        var text = Array("email_sha256\n".utf8)
        var expected: [Key16] = []
        for i in 0..<40 {
            let hex = String((0..<64).map { _ in Array("0123456789abcdefABCDEF")[Int(rng.next() % 22)] })
            expected.append(Key16(hi: UInt64(hex.prefix(16), radix: 16)!, lo: UInt64(hex.dropFirst(16).prefix(16), radix: 16)!))
            text += Array(hex.utf8) + (i % 5 == 0 ? Array(" \r\n".utf8) : [10])
        }
        text += Array("d41d8cd98f00b204e9800998ecf8427e\n".utf8) // an MD5: the wrong type here
        text += Array(String(repeating: "ab", count: 31).utf8) + Array("zz\n".utf8) // 64 characters, not all hex
        let object = try await put(text)
        let kind = try await HashSniffer.detect(lake, object: object)
        XCTAssertEqual(kind, .sha256)
        for blockSize in Array(Int64(1)...80) + [500, Int64(text.count)] {
            let (keys, stats) = try await parseAll(object, blockSize: blockSize, chunkSize: blockSize % 2 == 0 ? 7 : 100, hashKind: .sha256)
            XCTAssertEqual(keys, expected, "block size \(blockSize)")
            XCTAssertEqual(stats.invalid, [.wrongHashType: 1, .malformed: 1], "block size \(blockSize)")
        }
        // Read as MD5 (a wrong guess), every SHA-256 line is of the wrong type.
        let (md5Keys, md5Stats) = try await parseAll(object, blockSize: 64, hashKind: .md5)
        XCTAssertEqual(md5Keys, [Key16(hi: 0xd41d_8cd9_8f00_b204, lo: 0xe980_0998_ecf8_427e)])
        XCTAssertEqual(md5Stats.invalid[.wrongHashType], 40)
    }

    func testTheSnifferTakesTheMajorityOfTheHead() {
        func detect(_ text: String, whole: Bool = true) -> HashKind {
            Array(text.utf8).withUnsafeBytes { HashSniffer.detect(head: $0, isWholeFile: whole) }
        }
        let md5 = "d41d8cd98f00b204e9800998ecf8427e", sha = String(repeating: "e3b0c442", count: 8)
        XCTAssertEqual(detect("email_md5\n\(md5)\n\(md5)"), .md5)
        XCTAssertEqual(detect("email\r\n \(sha)\t\r\n\(sha)"), .sha256)
        XCTAssertEqual(detect("\(md5)\n\(sha)\n\(sha)\n"), .sha256, "one stray line at the top does not decide")
        XCTAssertEqual(detect("\(md5)\n\(sha)\n"), .md5, "a tie is MD5")
        XCTAssertEqual(detect(""), .md5)
        XCTAssertEqual(detect("someone@example.com\nnot a hash\n"), .md5)
        XCTAssertEqual(detect("\(md5)\n\(sha)", whole: false), .md5, "a cut last line is not looked at")
        XCTAssertEqual(detect("\(sha)\n" + String(sha.prefix(32)), whole: false), .sha256, "nor counted as an MD5")
    }

    func testHeaderIsSkippedOnlyOnTheFirstLine() {
        let header = Array("email_md5".utf8)
        header.withUnsafeBytes { XCTAssertEqual(LineParser.parse($0, isFirstLineOfFile: true), .skipped) }
        header.withUnsafeBytes { XCTAssertEqual(LineParser.parse($0, isFirstLineOfFile: false), .invalid(.malformed)) }
        let email = Array("a@b.c".utf8)
        email.withUnsafeBytes { XCTAssertEqual(LineParser.parse($0, isFirstLineOfFile: true), .invalid(.unhashedEmail)) }
    }

    func testEmptyFileAndSamples() async throws {
        let empty = try await put([], name: "empty.txt")
        let (keys, stats) = try await parseAll(empty, blockSize: 4)
        XCTAssertEqual(keys, [])
        XCTAssertEqual(stats.lines, 0)
        let bad = try await put(Array(String(repeating: "nope\n", count: 30).utf8), name: "bad.txt")
        var ignored: [Key16] = []
        let sampled = try await BlockParser().parse(lake, object: bad, block: BlockRange(start: 0, end: bad.size), into: &ignored)
        XCTAssertEqual(sampled.samples.count, 10)
        XCTAssertEqual(sampled.samples.first?.lineInBlock, 1, "line 0 is taken as a header")
        XCTAssertEqual(sampled.invalid[.malformed], 29)
    }

    func testLakeListHeadAndChangeDetection() async throws {
        let object = try await put(Array("0123456789abcdef0123456789abcdef\n".utf8))
        try Data().write(to: root.appendingPathComponent("acme/.partial"))
        try FileManager.default.createDirectory(at: root.appendingPathComponent("beta"), withIntermediateDirectories: true)
        try Data([1]).write(to: root.appendingPathComponent("beta/b.txt"))
        let lake = self.lake!
        let all = try await lake.list(prefix: "", after: nil, limit: 100)
        XCTAssertEqual(all.map(\.path), ["acme/list.txt", "beta/b.txt"])
        XCTAssertEqual(all.first?.advertiserID, "acme")
        let after = try await lake.list(prefix: "", after: "acme/list.txt", limit: 100)
        XCTAssertEqual(after.map(\.path), ["beta/b.txt"])
        let tail = try await lake.read("acme/list.txt", offset: 30, length: 100, ifMatch: object.etag)
        XCTAssertEqual(tail.count, 3)

        // A replacement (a new file renamed over the old one) changes the etag, and reads notice.
        let replacement = root.appendingPathComponent("acme/.next")
        try Data("ffffffffffffffffffffffffffffffff\n".utf8).write(to: replacement)
        XCTAssertEqual(rename(replacement.path, root.appendingPathComponent("acme/list.txt").path), 0)
        do {
            _ = try await lake.read("acme/list.txt", offset: 0, length: 10, ifMatch: object.etag)
            XCTFail("a changed object must not be read")
        } catch {
            guard case .changed = error else { return XCTFail("\(error)") }
        }
        do { _ = try await lake.head("../etc/passwd"); XCTFail("escaping path") } catch { XCTAssertEqual(error, .invalidPath("../etc/passwd")) }
        do { _ = try await lake.head("acme/missing"); XCTFail("missing") } catch { XCTAssertEqual(error, .notFound("acme/missing")) }
    }
}

final class HexDecodingTests: XCTestCase {
    private func reference(_ line: UnsafeRawBufferPointer) -> Key16? {
        if case .key(let key) = LineParser.parse(line, isFirstLineOfFile: false) { return key }
        return nil
    }

    /// The two-digits-a-lookup decoder agrees with `LineParser` on every byte value in
    /// every position, and on random hex in both cases.
    func testPairDecoderAgreesWithTheLineParser() {
        var rng = SplitMix64(seed: 17)
        let hex = Array("0123456789abcdefABCDEF".utf8)
        for _ in 0..<2000 {
            var line = (0..<32).map { _ in hex[Int(rng.next() % UInt64(hex.count))] }
            line.withUnsafeBytes { XCTAssertEqual(HexKey.decode($0.baseAddress!, .md5), reference($0)) }
            XCTAssertNotNil(line.withUnsafeBytes { HexKey.decode($0.baseAddress!, .md5) })
            let position = Int(rng.next() % 32)
            for byte in 0...255 {
                line[position] = UInt8(byte)
                line.withUnsafeBytes { XCTAssertEqual(HexKey.decode($0.baseAddress!, .md5), reference($0), "byte \(byte) at \(position)") }
            }
        }
        let known = Array("00112233445566778899AaBbCcDdEeFf".utf8)
        XCTAssertEqual(known.withUnsafeBytes { HexKey.decode($0.baseAddress!, .md5) }, Key16(hi: 0x0011_2233_4455_6677, lo: 0x8899_AABB_CCDD_EEFF))
        // A SHA-256: the first 16 bytes are the key, the other 32 digits must be hex too.
        var sha = known + Array("0123456789abcdef0123456789ABCDEF".utf8)
        XCTAssertEqual(sha.withUnsafeBytes { HexKey.decode($0.baseAddress!, .sha256) }, Key16(hi: 0x0011_2233_4455_6677, lo: 0x8899_AABB_CCDD_EEFF))
        for position in 32..<64 {
            let saved = sha[position]
            sha[position] = UInt8(ascii: "g")
            XCTAssertNil(sha.withUnsafeBytes { HexKey.decode($0.baseAddress!, .sha256) }, "a non-hex digit at \(position)")
            sha[position] = saved
        }
    }

    /// Files arrive in order of modification time; at the same time (an
    /// object store's are whole seconds), a list before a delta, then by path.
    func testTheOrderOfArrival() {
        func object(_ path: String, _ seconds: Double) -> LakeObject {
            LakeObject(path: path, size: 1, etag: "e", modified: Date(timeIntervalSince1970: seconds))
        }
        let ordered = [object("a/z.delta", 9), object("a/b.txt", 10), object("a/z.txt", 10), object("a/a.delta", 10),
                       object("a/b.delta", 10), object("a/a.txt", 10.5)]
        XCTAssertEqual(ordered.shuffled().sorted { $0.arrival < $1.arrival }.map(\.path), ordered.map(\.path))
        XCTAssertFalse(object("a/b.delta", 10).arrival < object("a/b.delta", 10).arrival)
    }
}
