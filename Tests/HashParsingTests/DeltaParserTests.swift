import Foundation
@testable import HashParsing
import SegmentStore
import TestSupport
import XCTest

final class DeltaParserTests: XCTestCase {
    private func key(_ n: UInt64) -> Key16 { Key16(hi: n &* 0x9E37_79B9_7F4A_7C15, lo: n) }
    private func hex(_ key: Key16) -> String { key.bytes.map { String(format: "%02x", $0) }.joined() }

    private func parse(_ text: String) -> DeltaParser.Parsed {
        Array(text.utf8).withUnsafeBytes { DeltaParser.parse($0) }
    }

    /// Signs, the last line about a key winning, and the list rules for
    /// the hash (case, spaces, CRLF, a byte-order mark, a header, blanks).
    func testSignedLinesTheLastOneAboutAKeyWinning() {
        let (a, b, c, d) = (key(1), key(2), key(3), key(4))
        let text = "\u{FEFF}op,email_md5\n+\(hex(a))\n-\(hex(b))\r\n  +\(hex(c).uppercased())\t\n\n-\(hex(a))\n+\(hex(a))\n+\(hex(d))\n-\(hex(d))"
        let parsed = parse(text)
        XCTAssertEqual(parsed.adds, [a, c].sorted(), "a: removed then added; c: added")
        XCTAssertEqual(parsed.removes, [b, d].sorted(), "b: removed; d: added then removed (the last line has no newline)")
        XCTAssertEqual(parsed.stats.lines, 9)
        XCTAssertEqual(parsed.stats.keys, 7)
        XCTAssertEqual(parsed.stats.skipped, 2, "the header and the blank line")
        XCTAssertEqual(parsed.stats.invalidCount, 0)
        XCTAssertEqual(parsed.hashKind, .md5)
    }

    /// A line without a sign, a sign without a hash, a hash of the other
    /// type, an email: invalid, counted by kind with their line numbers.
    func testUnsignedAndBadLinesAreInvalid() {
        let text = "+\(hex(key(1)))\n\(hex(key(2)))\n+\n-a@b.com\n+\(hex(key(3)))\(hex(key(3)))\n-zz\(hex(key(4)).dropFirst(2))\n"
        let parsed = parse(text)
        XCTAssertEqual(parsed.adds, [key(1)])
        XCTAssertEqual(parsed.removes, [])
        XCTAssertEqual(parsed.stats.invalid, [.malformed: 3, .unhashedEmail: 1, .wrongHashType: 1])
        XCTAssertEqual(parsed.stats.samples.map(\.lineInBlock), [1, 2, 3, 4, 5])
        XCTAssertEqual(parsed.stats.samples.first?.kind, .malformed, "a bare hash in a delta says nothing of adding or removing")
    }

    /// The type is the majority's: a SHA-256 delta's keys are each hash's
    /// first 16 bytes, and its MD5 lines are of the wrong type.
    func testTheTypeIsTheMajoritys() {
        let sha = (1...5).map { hex(key($0)) + hex(key($0 + 100)) }
        var text = sha.map { "+" + $0 }.joined(separator: "\n") + "\n-" + hex(key(9)) + "\n"
        var parsed = parse(text)
        XCTAssertEqual(parsed.hashKind, .sha256)
        XCTAssertEqual(parsed.adds, (1...5).map { key($0) }.sorted())
        XCTAssertEqual(parsed.stats.invalid, [.wrongHashType: 1])
        text = "+\(hex(key(1)))\n-\(sha[0])\n"
        parsed = parse(text)
        XCTAssertEqual(parsed.hashKind, .md5, "a tie is MD5")
        XCTAssertEqual(parsed.adds, [key(1)])
    }
}
