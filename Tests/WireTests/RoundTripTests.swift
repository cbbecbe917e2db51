import Foundation
import RosterRPC
import XCTest

/// Property tests: for random values of every fixture message, decoding the
/// encoding gives the value back, sizes are exact, and encoding is
/// deterministic.
final class RoundTripTests: XCTestCase {
    private func assertRoundTrip<M: ProtoMessage>(_ value: M, compareValues: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let bytes = value.serializedBytes()
        XCTAssertEqual(bytes.count, value.serializedSize, "serializedSize is exact", file: file, line: line)
        let decoded = try M(serializedBytes: bytes)
        // Bytes compare NaN payloads and -0.0 exactly; == cannot.
        XCTAssertEqual(decoded.serializedBytes(), bytes, file: file, line: line)
        if compareValues { XCTAssertEqual(decoded, value, file: file, line: line) }
        XCTAssertEqual(Data(bytes), value.serializedData(), file: file, line: line)
    }

    func testRandomValuesRoundTrip() throws {
        for allowNaN in [false, true] {
            var random = RandomValues(seed: allowNaN ? 1 : 2)
            random.allowNaN = allowNaN
            for _ in 0..<150 {
                try assertRoundTrip(random.scalars(), compareValues: !allowNaN)
                try assertRoundTrip(random.repeats(), compareValues: !allowNaN)
                try assertRoundTrip(random.optionals(), compareValues: !allowNaN)
                try assertRoundTrip(random.document(), compareValues: !allowNaN)
                try assertRoundTrip(random.tree(), compareValues: true)
            }
        }
    }

    func testDefaultMessagesEncodeToNothing() throws {
        XCTAssertEqual(Scalars().serializedBytes(), [])
        XCTAssertEqual(Repeats().serializedBytes(), [])
        XCTAssertEqual(Optionals().serializedBytes(), [])
        XCTAssertEqual(Document().serializedBytes(), [])
        XCTAssertEqual(Empty().serializedBytes(), [])
        XCTAssertEqual(try Document(serializedBytes: [UInt8]()), Document())
    }

    func testExplicitPresenceSendsDefaults() throws {
        let o = Optionals(maybeInt: 0, maybeText: "", maybeColor: .unspecified, maybeReal: 0, maybeFlag: false, maybeBlob: Data())
        XCTAssertEqual(hex(o.serializedBytes()), "0800" + "1200" + "1800" + "210000000000000000" + "2800" + "3200")
        let decoded = try Optionals(serializedBytes: o.serializedBytes())
        XCTAssertEqual(decoded, o)
        XCTAssertNotEqual(decoded, Optionals())
    }

    func testKnownEncodings() {
        // Vectors from the protobuf encoding guide and the edge cases it names.
        XCTAssertEqual(hex(Scalars(i32: 150).serializedBytes()), "109601")
        XCTAssertEqual(hex(Scalars(i32: -1).serializedBytes()), "10ffffffffffffffffff01", "negative int32: ten bytes")
        XCTAssertEqual(hex(Scalars(s32: -1).serializedBytes()), "3001", "zigzag")
        XCTAssertEqual(hex(Scalars(s32: .min).serializedBytes()), "30ffffffff0f")
        XCTAssertEqual(hex(Scalars(s64: .max).serializedBytes()), "38feffffffffffffffff01")
        XCTAssertEqual(hex(Scalars(text: "testing").serializedBytes()), "720774657374696e67")
        XCTAssertEqual(hex(Scalars(real64: -0.0).serializedBytes()), "690000000000000080", "-0.0 is not the default")
        XCTAssertEqual(hex(Scalars(color: .blue).serializedBytes()), "8001fdffffffffffffffff01", "field 16 needs a 2-byte key")
        XCTAssertEqual(hex(Repeats(i32s: [3, 270, 86942]).serializedBytes()), "1206038e029ea705", "packed")
        XCTAssertEqual(hex(Repeats(f32s: [1, 2]).serializedBytes()), "42080100000002000000")
        XCTAssertEqual(hex(Repeats(texts: ["a", ""]).serializedBytes()), "720161" + "7200", "strings are not packed")
        XCTAssertEqual(hex(Document(maxNumbered: 1).serializedBytes()), "f8ffffff0f01", "field 2^29-1")
        var d = Document()
        d.flags = [true: "y", false: "n"]
        XCTAssertEqual(hex(d.serializedBytes()), "3a05080012016e" + "3a050801120179", "map entries in key order")
    }

    func testLargeRepeatedField() throws {
        let r = Repeats(i64s: (0..<100_000).map { Int64($0) * 7_919 - 400_000_000 }, texts: Array(repeating: "ü", count: 10_000))
        try assertRoundTrip(r, compareValues: true)
    }

    func testLargeBytesField() throws {
        // A MatchMany-sized payload: 1,000 hashes of 16 bytes in one field.
        var random = SplitMix64(seed: 9)
        let hashes = Data((0..<16_000).map { _ in UInt8.random(in: 0...255, using: &random) })
        let value = Scalars(blob: hashes)
        XCTAssertEqual(value.serializedSize, 1 + 2 + 16_000, "key, two-byte length, payload")
        try assertRoundTrip(value, compareValues: true)
    }
}
