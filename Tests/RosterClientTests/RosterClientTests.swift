import Foundation
import MatchServer
import RosterClient
import RosterServer
import SegmentStore
import XCTest

final class RosterClientTests: XCTestCase {
    func testMD5MatchesRFC1321() {
        let vectors = [
            "": "d41d8cd98f00b204e9800998ecf8427e",
            "a": "0cc175b9c0f1b6a831c399e269772661",
            "abc": "900150983cd24fb0d6963f7d28e17f72",
            "message digest": "f96b697d7cb7938d525a2f31aaf161d0",
            "abcdefghijklmnopqrstuvwxyz": "c3fcd3d76192e4007dfb496cca67e13b",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789": "d174ab98d277d9f5a5611c2c9f419d9f",
            String(repeating: "1234567890", count: 8): "57edf4a22be3c955ac49da2e2107b67a",
        ]
        for (input, expected) in vectors {
            XCTAssertEqual(MD5.digest(Array(input.utf8)).map { String(format: "%02x", $0) }.joined(), expected, input)
        }
        // Lengths around the 56-byte padding boundary.
        for n in 54...66 { XCTAssertEqual(MD5.digest([UInt8](repeating: 0x61, count: n)).count, 16) }
    }

    func testMemberHashNormalisesEmailsAndParsesHex() {
        XCTAssertEqual(MemberHash(email: "  Ann@Example.COM\n"), MemberHash(email: "ann@example.com"))
        XCTAssertEqual(MemberHash(email: "a").hex, "0cc175b9c0f1b6a831c399e269772661")
        XCTAssertEqual(MemberHash(hex: " 0CC175B9C0F1B6A831C399E269772661 "), MemberHash(email: "a"))
        XCTAssertNil(MemberHash(hex: "0cc175b9c0f1b6a831c399e26977266"), "31 digits")
        XCTAssertNil(MemberHash(hex: "0cc175b9c0f1b6a831c399e26977266g"), "not hex")
        XCTAssertNil(MemberHash(bytes: Data(count: 15)))
        // The byte-level form hash files are read with: ASCII whitespace and CR trimmed.
        func line(_ text: String) -> MemberHash? { Array(text.utf8).withUnsafeBytes { MemberHash(hexUTF8: $0) } }
        XCTAssertEqual(line("\t0cc175b9c0f1b6a831c399e269772661\r"), MemberHash(email: "a"))
        XCTAssertEqual(line("0CC175B9C0F1B6A831C399E269772661"), MemberHash(email: "a"))
        XCTAssertNil(line(""))
        XCTAssertNil(line("0cc175b9c0f1b6a831c399e2697726610"), "33 digits")
        XCTAssertNil(line("0cc175b9c0f1b6a8 1c399e269772661"), "a space inside")
        XCTAssertNil(line("0cc175b9c0f1b6a831c399e26977266é"), "not ASCII")
        XCTAssertEqual(MemberHash(hex: "0cc175b9c0f1b6a831c399e269772661"[...]), MemberHash(email: "a"), "a Substring")
    }

    /// The library end to end: a match server in process, asked through `MatchClient`.
    func testMatchClientAsksOneAndMany() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("client-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let members = (0..<100).map { MemberHash(email: "user\($0)@example.com") }
        let keys = members.map { Key16(bytes: $0.bytes)! }.sorted()
        _ = try SegmentWriter.create(keys, count: keys.count, at: root.appendingPathComponent("s.seg").path, advertiserID: "acme", version: 3)
        let catalog = try MatchCatalog(root: root)
        _ = try catalog.publish(advertiser: "acme", version: 3, paths: ["s.seg"])
        let access = AccessPolicy(clientTokens: ["c1"], adminTokens: ["a1"])
        let server = try RPCServer(configuration: .init(drainTimeout: .milliseconds(100)), services: [MatchHandler(catalog: catalog, access: access)])
        try await server.start()
        let port = server.localAddress!.port!

        let client = MatchClient(host: "127.0.0.1", port: port, token: "c1")
        let isMember = try await client.isMember(advertiser: "acme", hash: MemberHash(email: "USER7@example.com "))
        XCTAssertTrue(isMember)
        let isStranger = try await client.isMember(advertiser: "acme", hash: MemberHash(email: "nobody@example.com"))
        XCTAssertFalse(isStranger)
        let asked = [members[0], MemberHash(email: "x@y.z"), members[99]] + members[10..<20]
        let answers = try await client.areMembers(advertiser: "acme", hashes: asked)
        XCTAssertEqual(answers, [true, false, true] + Array(repeating: true, count: 10))

        let intruder = MatchClient(host: "127.0.0.1", port: port, token: "wrong")
        do {
            _ = try await intruder.isMember(advertiser: "acme", hash: members[0])
            XCTFail("a wrong token must be refused")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unauthenticated)
        }
        await client.close()
        await intruder.close()
        server.drain()
        await server.waitUntilClosed()
    }
}

/// `Membership.ask`: batches cut, sent concurrently, and their bitmaps put
/// back in order, with no server (the call is a closure).
final class MembershipTests: XCTestCase {
    /// Answers as a server would: hash i of a batch is a member when its first byte is odd.
    static func answer(_ hashes: Data) -> MatchManyResponse {
        let count = hashes.count / 16
        var bits = [UInt8](repeating: 0, count: (count + 7) / 8)
        for i in 0..<count where hashes[hashes.startIndex + i * 16] & 1 == 1 { bits[i >> 3] |= 1 << UInt8(i & 7) }
        return MatchManyResponse(matched: Data(bits), count: UInt32(count), matchedCount: 0, version: 7)
    }

    func testBatchesComeBackInOrder() async throws {
        for (count, batch, inFlight) in [(1, 8, 4), (25, 8, 3), (100, 13, 2), (1000, 64, 8), (64, 64, 1)] {
            var packed = Data()
            for i in 0..<count { packed.append(contentsOf: [UInt8(i * 7 % 256)] + [UInt8](repeating: 0, count: 15)) }
            let calls = Counter()
            let answers = try await Membership.ask(packed: packed, batch: batch, inFlight: inFlight) { hashes in
                await calls.add()
                return Self.answer(hashes)
            }
            XCTAssertEqual(answers.count, count)
            for i in 0..<count { XCTAssertEqual(answers[i], (i * 7 % 256) & 1 == 1, "hash \(i) of \(count), batch \(batch)") }
            XCTAssertEqual(answers.members, (0..<count).filter { (($0 * 7) % 256) & 1 == 1 }.count)
            XCTAssertEqual(answers.versions, [7])
            let perCall = max(8, batch - batch % 8)
            let expectedCalls = (count + perCall - 1) / perCall
            let made = await calls.value
            XCTAssertEqual(made, expectedCalls, "batches of \(perCall)")
        }
    }

    func testAShortAnswerIsAnError() async throws {
        do {
            _ = try await Membership.ask(packed: Data(count: 16 * 10), batch: 8) { _ in MatchManyResponse(matched: Data([0]), count: 1) }
            XCTFail("an answer for fewer hashes than asked must not pass")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .internal)
        }
    }

    actor Counter {
        var value = 0
        func add() { value += 1 }
    }
}
