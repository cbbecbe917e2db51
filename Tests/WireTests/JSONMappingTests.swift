import Foundation
import RosterAPI
import RosterRPC
import XCTest

/// The generated protobuf JSON mapping (what `roster call` speaks).
final class JSONMappingTests: XCTestCase {
    private func assertJSONRoundTrip<M: ProtoJSONMessage>(_ value: M, file: StaticString = #filePath, line: UInt = #line) throws {
        for (includeDefaults, pretty) in [(false, false), (true, true)] {
            let text = value.jsonText(includeDefaults: includeDefaults, pretty: pretty)
            let back = try M(jsonText: text)
            XCTAssertEqual(back, value, file: file, line: line)
        }
    }

    func testRandomValuesRoundTripThroughJSON() throws {
        var random = RandomValues(seed: 7)
        random.allowNaN = false
        // Documents carry large byte fields: 30 rounds are ~5 MB of JSON.
        for _ in 0..<30 {
            try assertJSONRoundTrip(random.scalars())
            try assertJSONRoundTrip(random.repeats())
            try assertJSONRoundTrip(random.optionals())
            try assertJSONRoundTrip(random.document())
            try assertJSONRoundTrip(random.tree())
        }
    }

    func testProtobufJSONConventions() throws {
        var request = FileStatus()
        request.version = UInt64.max
        request.advertiserID = "acme"
        request.state = .live
        request.bytesPerSecond = 1.5
        request.invalidByKind = ["malformed": 2, "unhashed_email": 1]
        var sample = InvalidLine()
        sample.line = 7
        sample.kind = "malformed"
        request.invalidSamples = [sample]
        let json = request.jsonValue(includeDefaults: false)
        XCTAssertEqual(json["version"], .string("18446744073709551615"), "64-bit integers are strings")
        XCTAssertEqual(json["advertiserId"], .string("acme"), "lowerCamelCase names")
        XCTAssertEqual(json["state"], .string("FILE_STATE_LIVE"), "enums by name")
        XCTAssertEqual(json["bytesPerSecond"], .number("1.5"))
        XCTAssertNil(json["path"], "defaults are left out unless asked for")
        XCTAssertEqual(request.jsonValue(includeDefaults: true)["path"], .string(""))
        XCTAssertEqual(json["invalidSamples"], .array([.object([("line", .string("7")), ("kind", .string("malformed"))])]))

        var hashes = MatchManyRequest()
        hashes.hashes = Data([0xFF, 0x00, 0xAB])
        XCTAssertEqual(hashes.jsonValue(includeDefaults: false)["hashes"], .string("/wCr"), "bytes are base64")
    }

    func testInputAcceptsSchemaNamesNumbersAndStrings() throws {
        let parsed = try ListFilesRequest(jsonText: #"{"advertiser_id": "acme", "states": ["FILE_STATE_LIVE", 6], "limit": "5"}"#)
        XCTAssertEqual(parsed.advertiserID, "acme")
        XCTAssertEqual(parsed.states, [.live, .failed])
        XCTAssertEqual(parsed.limit, 5)
        let bytes = try MatchRequest(jsonText: #"{"hash": "_wCr"}"#)
        XCTAssertEqual(bytes.hash, Data([0xFF, 0x00, 0xAB]), "URL-safe base64 without padding")
        XCTAssertEqual(try MatchRequest(jsonText: #"{"advertiserId": null}"#), MatchRequest())
    }

    func testBadInputNamesTheProblem() {
        func message(_ text: String, as type: (some ProtoJSONMessage).Type) -> String {
            do {
                _ = try type.init(jsonText: text)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(message(#"{"advertiser": "x"}"#, as: MatchRequest.self),
                       "roster.v1.MatchRequest has no field 'advertiser' (fields: advertiserId, hash)")
        XCTAssertEqual(message(#"{"limit": -1}"#, as: ListFilesRequest.self), "field 'limit': -1 is not a valid UInt32")
        XCTAssertEqual(message(#"{"limit": "many"}"#, as: ListFilesRequest.self), "field 'limit': many is not a valid UInt32")
        XCTAssertTrue(message(#"{"states": ["LIVE"]}"#, as: ListFilesRequest.self).hasPrefix("field 'states[0]': 'LIVE' is not one of FILE_STATE_UNSPECIFIED, FILE_STATE_QUEUED"))
        XCTAssertEqual(message(#"{"hash": 5}"#, as: MatchRequest.self), "field 'hash': expected base64 text, got 5")
        XCTAssertEqual(message(#"[1]"#, as: MatchRequest.self), "roster.v1.MatchRequest must be a JSON object, not [1]")
        XCTAssertEqual(message(#"{"hash": "a"#, as: MatchRequest.self), "invalid JSON at 1:12: unterminated string")
        XCTAssertEqual(message("{} x", as: MatchRequest.self), "invalid JSON at 1:4: unexpected text after the value")
    }

    func testJSONTextParsing() throws {
        let value = try JSONValue(parsing: #" {"a": [1, -2.5e3, true, false, null], "b": "\u00e9\ud83d\ude00\n\"", "c": {}} "#)
        XCTAssertEqual(value["a"], .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        XCTAssertEqual(value["b"], .string("é😀\n\""))
        XCTAssertEqual(try JSONValue(parsing: value.serialized(pretty: true)), value)
        for bad in ["", "01", "[1,]", "{\"a\" 1}", "\"\\ud800\"", "tru", "1.", "-", "\"\u{01}\""] {
            XCTAssertThrowsError(try JSONValue(parsing: bad), bad)
        }
        let deep = String(repeating: "[", count: 101) + String(repeating: "]", count: 101)
        XCTAssertThrowsError(try JSONValue(parsing: deep))
    }

    func testRegistryListsEveryMethodOfTheSchema() {
        let names = RosterSchema.methods.map(\.shortName)
        XCTAssertEqual(names.count, MatchService.Method.all.count + MatchAdmin.Method.all.count + IngestAdmin.Method.all.count
                       + TaskQueue.Method.all.count + Tier.Method.all.count)
        XCTAssertTrue(names.contains("MatchService.Match"))
        XCTAssertTrue(names.contains("IngestAdmin.SubmitFile"))
        XCTAssertTrue(names.contains("TaskQueue.LeaseTasks"))
        XCTAssertTrue(names.contains("Tier.Placement"))
        XCTAssertTrue(MatchRequest.schemaDefinition.contains("bytes hash = 2;"), MatchRequest.schemaDefinition)
    }
}
