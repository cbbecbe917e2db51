import DataLake
import Foundation
import HashParsing
import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import Synchronization
import TestSupport
import XCTest

/// Lists of SHA-256 hashes, end to end: found per file, ingested, served
/// with their width checked, and asked beside MD5 lists.
final class HashTypeTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func start(policy: IngestPolicy = IngestHarness.testPolicy()) async throws {
        harness = try IngestHarness(policy: policy)
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        for i in 0..<2 { harness.startWorker(id: "w\(i)") }
    }

    static func randomHashes(_ n: Int, width: Int, seed: UInt64) -> [Data] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Data((0..<width / 8).flatMap { _ in withUnsafeBytes(of: rng.next()) { Array($0) } }) }
    }

    static func hex(_ hash: Data, uppercase: Bool = false) -> String {
        let s = hash.map { String(format: "%02x", $0) }.joined()
        return uppercase ? s.uppercased() : s
    }

    /// A list file: a header, mixed case, CRLF and padded lines, and `strays`
    /// lines of another width spread through it.
    static func file(_ hashes: [Data], header: String = "email_sha256", strays: [Data] = [], seed: UInt64 = 5) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var text = header + "\n"
        let every = strays.isEmpty ? Int.max : max(1, hashes.count / strays.count)
        var strayIndex = 0
        for (i, hash) in hashes.enumerated() {
            let hex = Self.hex(hash, uppercase: rng.next() % 3 == 0)
            switch rng.next() % 4 {
            case 0: text += "\(hex)\r\n"
            case 1: text += "  \(hex)\t\n"
            default: text += "\(hex)\n"
            }
            if i % every == every - 1, strayIndex < strays.count {
                text += Self.hex(strays[strayIndex]) + "\n"
                strayIndex += 1
            }
        }
        return Array(text.utf8)
    }

    func ingest(_ contents: [UInt8], advertiser: String, name: String = "members.txt") async throws -> FileStatus {
        let path = try harness.drop(contents, advertiser: advertiser, name: name)
        let submitted = try await harness.submit(path)
        return try await harness.waitForFile(submitted.version)
    }

    private func match(_ advertiser: String, _ hash: Data) async throws -> MatchResponse {
        try await harness.matchClient.match(MatchRequest(advertiserID: advertiser, hash: hash))
    }

    func testASHA256ListIsFoundIngestedAndServedWithItsWidthChecked() async throws {
        try await start()
        let members = Self.randomHashes(1500, width: 32, seed: 1)
        let status = try await ingest(Self.file(members), advertiser: "acme")
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.hashType, .sha256)
        XCTAssertEqual(status.distinctKeys, 1500)
        XCTAssertEqual(status.invalidLines, 0)
        XCTAssertGreaterThan(status.blocksTotal, 20, "4 KiB blocks: every block found the type from the file's head")
        XCTAssertEqual(status.mergesTotal, 4, "and the merges wrote it into their segments")

        // Match: 32 bytes answer; a stranger does not; 16 bytes are refused naming the list's type.
        for hash in members.prefix(50) {
            let answer = try await match("acme", hash)
            XCTAssertTrue(answer.matched)
            XCTAssertEqual(answer.version, status.version)
        }
        for hash in Self.randomHashes(50, width: 32, seed: 2) {
            let answer = try await match("acme", hash)
            XCTAssertFalse(answer.matched)
        }
        await assertStatus(.invalidArgument, containing: "SHA-256") { _ = try await self.match("acme", members[0].prefix(16)) }
        await assertStatus(.invalidArgument, containing: "16 bytes (an MD5) or 32") { _ = try await self.match("acme", Data(count: 20)) }

        // MatchMany: packed 32 bytes each, the type unset (the list's) or said.
        let strangers = Self.randomHashes(300, width: 32, seed: 3)
        let asked = Array(members.prefix(700)) + strangers
        for type in [HashType.unspecified, .sha256] {
            let response = try await harness.matchClient.matchMany(
                MatchManyRequest(advertiserID: "acme", hashes: Data(asked.joined()), hashType: type))
            XCTAssertEqual(response.count, 1000)
            XCTAssertEqual(response.matchedCount, 700)
            XCTAssertEqual((0..<1000).map(response.isMatched), (0..<1000).map { $0 < 700 })
        }
        await assertStatus(.invalidArgument, containing: "holds SHA-256 hashes (32 bytes each), not MD5") {
            _ = try await self.harness.matchClient.matchMany(
                MatchManyRequest(advertiserID: "acme", hashes: Data(members.prefix(2).joined()), hashType: .md5))
        }
        await assertStatus(.invalidArgument, containing: "32 bytes each") {
            _ = try await self.harness.matchClient.matchMany(MatchManyRequest(advertiserID: "acme", hashes: Data(count: 48)))
        }
    }

    func testOneTypePerFileByTheInvalidLineThreshold() async throws {
        var policy = IngestHarness.testPolicy()
        policy.invalidThreshold = 0.01
        try await start(policy: policy)
        // A SHA-256 file with a few MD5 lines: the type is the majority's, and
        // the strays are invalid lines of the wrong type, under the threshold.
        let members = Self.randomHashes(1000, width: 32, seed: 4)
        let strays = Self.randomHashes(5, width: 16, seed: 5)
        let few = try await ingest(Self.file(members, strays: strays), advertiser: "few")
        XCTAssertEqual(few.state, .live, few.error)
        XCTAssertEqual(few.hashType, .sha256)
        XCTAssertEqual(few.invalidByKind["wrong_hash_type"], 5)
        XCTAssertEqual(few.distinctKeys, 1000)

        // Half and half: rejected, nothing served.
        let half = try await ingest(Self.file(Self.randomHashes(500, width: 32, seed: 6), header: "email",
                                              strays: Self.randomHashes(500, width: 16, seed: 7)), advertiser: "mixed")
        XCTAssertEqual(half.state, .rejected)
        XCTAssertTrue(half.error.contains("lines are invalid"), half.error)
        await assertStatus(.notFound) { _ = try await self.match("mixed", Data(count: 32)) }
    }

    func testANewFileOfTheOtherTypeReplacesTheList() async throws {
        try await start()
        let md5 = Self.randomHashes(400, width: 16, seed: 8)
        let first = try await ingest(Self.file(md5, header: "email_md5"), advertiser: "acme")
        XCTAssertEqual(first.hashType, .md5)
        let before = try await match("acme", md5[0])
        XCTAssertTrue(before.matched)

        let sha = Self.randomHashes(400, width: 32, seed: 9)
        let second = try await ingest(Self.file(sha), advertiser: "acme", name: "members-v2.txt")
        XCTAssertEqual(second.state, .live, second.error)
        let after = try await match("acme", sha[0])
        XCTAssertEqual(after.version, second.version)
        XCTAssertTrue(after.matched)
        await assertStatus(.invalidArgument, containing: "SHA-256") { _ = try await self.match("acme", md5[0]) }

        let advertisers = try await harness.adminClient.listAdvertisers(ListAdvertisersRequest(), options: harness.callOptions).advertisers
        XCTAssertEqual(advertisers.first { $0.advertiserID == "acme" }?.liveHashType, .sha256)
    }

    /// One email against lists of both types, the answers checked against
    /// an oracle: with both of its hashes every list answers; with one,
    /// lists of the other type are reported, not guessed.
    func testMatchAdvertisersAsksEachListWithItsOwnType() async throws {
        try await start()
        var rng = SplitMix64(seed: 10)
        let users = (0..<20).map { _ in (md5: Self.randomHashes(1, width: 16, seed: rng.next())[0],
                                         sha: Self.randomHashes(1, width: 32, seed: rng.next())[0]) }
        var oracle: [String: (type: HashType, members: Set<Int>)] = [:]
        for a in 0..<6 {
            let type: HashType = a % 2 == 0 ? .md5 : .sha256
            let members = Set((0..<20).filter { _ in rng.next() % 2 == 0 })
            let hashes = members.sorted().map { type == .md5 ? users[$0].md5 : users[$0].sha }
                + Self.randomHashes(50, width: type == .md5 ? 16 : 32, seed: UInt64(a))
            let status = try await ingest(Self.file(hashes, header: "hash"), advertiser: "adv\(a)")
            XCTAssertEqual(status.state, .live, status.error)
            XCTAssertEqual(status.hashType, type)
            oracle["adv\(a)"] = (type, members)
        }
        let asked = (0..<6).map { "adv\($0)" } + ["nobody"] + (0..<6).map { "adv\(5 - $0)" }
        for (u, user) in users.enumerated() {
            let both = try await harness.matchClient.matchAdvertisers(
                MatchAdvertisersRequest(hash: user.sha, advertiserIDs: asked, otherHash: user.md5))
            XCTAssertEqual(both.unknownCount, 1)
            XCTAssertEqual(both.wrongTypeCount, 0)
            XCTAssertTrue(both.wrongType.isEmpty)
            for (i, id) in asked.enumerated() {
                let bit = both.matched[i >> 3] >> UInt8(i & 7) & 1 == 1
                XCTAssertEqual(bit, oracle[id]?.members.contains(u) ?? false, "user \(u), \(id)")
            }
            let md5Only = try await harness.matchClient.matchAdvertisers(MatchAdvertisersRequest(hash: user.md5, advertiserIDs: asked))
            XCTAssertEqual(md5Only.wrongTypeCount, 6, "three SHA-256 lists, each asked twice")
            for (i, id) in asked.enumerated() {
                let bit = md5Only.matched[i >> 3] >> UInt8(i & 7) & 1 == 1
                let wrong = (i >> 3) < md5Only.wrongType.count && md5Only.wrongType[i >> 3] >> UInt8(i & 7) & 1 == 1
                XCTAssertEqual(wrong, oracle[id]?.type == .sha256, id)
                XCTAssertEqual(bit, oracle[id]?.type == .md5 && oracle[id]!.members.contains(u), "user \(u), \(id)")
                XCTAssertEqual(md5Only.versions[i] != 0, oracle[id] != nil, "a list of the other type still reports its version")
            }
        }
        await assertStatus(.invalidArgument, containing: "other type") {
            _ = try await self.harness.matchClient.matchAdvertisers(
                MatchAdvertisersRequest(hash: users[0].md5, advertiserIDs: asked, otherHash: users[1].md5))
        }
    }
}

/// A lake that counts the reads of a file's head as `HashSniffer` makes them.
final class HeadCountingLake: DataLake {
    let inner: LocalFolderLake
    let heads = Atomic<Int>(0)

    init(inner: LocalFolderLake) { self.inner = inner }

    func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject] {
        try await inner.list(prefix: prefix, after: after, limit: limit)
    }
    func head(_ path: String) async throws(LakeError) -> LakeObject { try await inner.head(path) }
    func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8] {
        try await inner.read(path, offset: offset, length: length, ifMatch: etag)
    }
    func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int {
        if offset == 0, buffer.count == HashSniffer.headBytes { heads.add(1, ordering: .relaxed) }
        return try await inner.read(path, offset: offset, into: buffer, ifMatch: etag)
    }
}

extension HashTypeTests {
    /// A worker given many blocks of one file reads its head once, not once
    /// a block (an object store's GET each), and once again for a new version.
    func testAWorkerReadsAFilesHeadOncePerVersion() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let lake = HeadCountingLake(inner: LocalFolderLake(root: harness.lakeRoot))
        harness.startWorker(id: "only", transport: harness.coordinatorLink, lake: lake)
        let first = try await ingest(Self.file(Self.randomHashes(800, width: 32, seed: 11)), advertiser: "acme")
        XCTAssertEqual(first.state, .live, first.error)
        XCTAssertGreaterThan(first.blocksTotal, 10)
        XCTAssertEqual(lake.heads.load(ordering: .relaxed), 1, "\(first.blocksTotal) blocks, one head")
        let second = try await ingest(Self.file(Self.randomHashes(800, width: 32, seed: 12)), advertiser: "acme", name: "members-v2.txt")
        XCTAssertEqual(second.state, .live, second.error)
        XCTAssertEqual(lake.heads.load(ordering: .relaxed), 2)
    }
}

/// `assertStatus`, and the error's message contains `text`.
private func assertStatus(_ code: RPCStatusCode, containing text: String, file: StaticString = #filePath, line: UInt = #line,
                          _ body: () async throws -> Void) async {
    guard let error = await assertStatus(code, file: file, line: line, body) else { return }
    XCTAssertTrue(error.message.contains(text), "'\(error.message)' does not say '\(text)'", file: file, line: line)
}
