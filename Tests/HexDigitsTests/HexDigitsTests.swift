import HexDigits
import XCTest

final class HexDigitsTests: XCTestCase {
    /// A slow decoder written from the definition, to hold the table to.
    private func reference(_ text: [UInt8]) -> (UInt64, UInt64)? {
        guard text.count == 32, let value = UInt128(String(decoding: text, as: UTF8.self), radix: 16),
              text.allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "-") }) else { return nil }
        return (UInt64(truncatingIfNeeded: value >> 64), UInt64(truncatingIfNeeded: value))
    }

    private func decode(_ text: [UInt8]) -> (UInt64, UInt64)? {
        text.withUnsafeBytes { HexDigits.decode32($0.baseAddress!) }.map { ($0.hi, $0.lo) }
    }

    func testEveryByteInEveryPositionAgreesWithTheReference() {
        let base = Array("0123456789abcdefABCDEF0123456789".utf8)
        XCTAssertEqual(decode(base)?.0, 0x0123_4567_89ab_cdef)
        XCTAssertEqual(decode(base)?.1, 0xABCD_EF01_2345_6789)
        for position in 0..<32 {
            for byte in 0...255 {
                var text = base
                text[position] = UInt8(byte)
                let got = decode(text), want = reference(text)
                XCTAssertEqual(got?.0, want?.0, "byte \(byte) at \(position)")
                XCTAssertEqual(got?.1, want?.1, "byte \(byte) at \(position)")
                XCTAssertEqual(HexDigits.isHexDigit(UInt8(byte)), want != nil || position >= 32)
            }
        }
    }

    func testReadsExactlyThirtyTwoBytes() {
        // A 33rd byte that is not hex does not matter: the caller has trimmed the line.
        let text = Array("ffffffffffffffffffffffffffffffffZ".utf8)
        XCTAssertEqual(decode(text)?.0, .max)
        XCTAssertEqual(decode(text)?.1, .max)
    }
}
