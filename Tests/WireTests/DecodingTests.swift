import Foundation
import RosterRPC
import XCTest

/// The decoder's rules for input other encoders may legally produce, and its
/// typed errors for input no encoder should.
final class DecodingTests: XCTestCase {
    func testLastValueWinsForScalars() throws {
        let s = try Scalars(serializedBytes: unhex("1001" + "1002" + "7201617201" + "62"))
        XCTAssertEqual(s.i32, 2)
        XCTAssertEqual(s.text, "b")
    }

    func testMessagesMerge() throws {
        // Two occurrences of field 13 (lead): body from the first, kind from the second.
        let first = Document.Section.Paragraph(body: "x").serializedBytes()
        let second = Document.Section.Paragraph(kind: .quote).serializedBytes()
        let bytes = [0x6A, UInt8(first.count)] + first + [0x6A, UInt8(second.count)] + second
        let d = try Document(serializedBytes: bytes)
        XCTAssertEqual(d.lead, Document.Section.Paragraph(body: "x", kind: .quote))
    }

    func testUnpackedRepeatedScalarsAccepted() throws {
        // int32s as three separate fields, then one packed run: all four kept in order.
        let r = try Repeats(serializedBytes: unhex("1003" + "108e02" + "109ea705" + "120101"))
        XCTAssertEqual(r.i32s, [3, 270, 86942, 1])
        let f = try Repeats(serializedBytes: unhex("4501000000" + "420402000000"))
        XCTAssertEqual(f.f32s, [1, 2])
    }

    func testFieldsInAnyOrder() throws {
        let s = try Scalars(serializedBytes: unhex("7201" + "61" + "1005" + "0801"))
        XCTAssertEqual(s, Scalars(flag: true, i32: 5, text: "a"))
    }

    func testUnknownFieldsArePreserved() throws {
        // Field 99 (varint), 100 (fixed64), 101 (bytes), 102 (fixed32), 103 (group) are unknown to Scalars.
        let unknown = "98060a" + "a1060102030405060708" + "aa0603616263" + "b50601020304" + "bb06" + "0801" + "bc06"
        let s = try Scalars(serializedBytes: unhex("1001" + unknown))
        XCTAssertEqual(s.i32, 1)
        XCTAssertEqual(hex(s.unknownFields.bytes), unknown)
        XCTAssertEqual(hex(s.serializedBytes()), "1001" + unknown)
        // Read with a schema that knows fewer fields, written back, read with the full one: nothing lost.
        let d = Document(scalars: Scalars(i32: 3), maxNumbered: 9)
        let asEmpty = try Empty(serializedBytes: d.serializedBytes())
        XCTAssertEqual(try Document(serializedBytes: asEmpty.serializedBytes()), d)
    }

    func testUnknownEnumValuesSurvive() throws {
        let s = try Scalars(serializedBytes: unhex("8001" + "e707"))
        XCTAssertEqual(s.color, .unrecognized(999))
        XCTAssertEqual(hex(s.serializedBytes()), "8001e707")
    }

    func testMapEntriesWithMissingKeyOrValueTakeDefaults() throws {
        // counters entry with no key; flags entry with no value; a repeated key replaces the earlier one.
        let d = try Document(serializedBytes: unhex("2a021002" + "3a020801" + "2a050a01611001" + "2a050a0161100f"))
        XCTAssertEqual(d.counters, ["": 2, "a": 15])
        XCTAssertEqual(d.flags, [true: ""])
    }

    func testTypedErrors() {
        func error(_ hexInput: String) -> ProtoDecodingError? {
            do {
                _ = try Document(serializedBytes: unhex(hexInput))
                return nil
            } catch {
                return error
            }
        }
        XCTAssertEqual(error("0a"), .truncated(offset: 1))
        XCTAssertEqual(error("0a05616263"), .lengthOutOfBounds(offset: 1, length: 5))
        XCTAssertEqual(error("0affffffff0f"), .lengthOutOfBounds(offset: 1, length: 0xFFFF_FFFF))
        XCTAssertEqual(error("f8ffffff0fffffffffffffffffffff01"), .malformedVarint(offset: 5 + 9), "an eleventh byte")
        XCTAssertEqual(error("f8ffffff0f80808080808080808002"), .malformedVarint(offset: 5 + 9), "bits past 64")
        XCTAssertEqual(error("00"), .invalidFieldNumber(offset: 0))
        XCTAssertEqual(error("0e"), .invalidWireType(offset: 0, rawValue: 6))
        XCTAssertEqual(error("0c"), .unexpectedEndGroup(offset: 0))
        XCTAssertEqual(error("0801"), .wireTypeMismatch(field: 1, expected: .lengthDelimited, found: .varint))
        XCTAssertEqual(error("0a02c328"), .invalidUTF8(field: nil))
        XCTAssertEqual(error("bb06"), .truncated(offset: 2), "unterminated group")
        XCTAssertNotNil(error("72030aff"), "packed fixed run that is not whole elements")
    }

    func testNestingDepthIsLimited() throws {
        var tree = Tree(label: "leaf")
        for _ in 0..<ProtoWire.maxDepth { tree = Tree(children: [tree]) }
        XCTAssertEqual(try Tree(serializedBytes: tree.serializedBytes()), tree, "\(ProtoWire.maxDepth) nested levels decode")
        let deeper = Tree(children: [tree])
        XCTAssertThrowsError(try Tree(serializedBytes: deeper.serializedBytes())) { error in
            XCTAssertEqual(error as? ProtoDecodingError, .recursionLimitExceeded)
        }
    }
}
