import Foundation
import Logging
import MatchServer
import RosterAPI
import RosterRPC
import RosterInProcess
import SegmentStore
import TestSupport
import XCTest

/// The match server's services through their generated clients, in process
/// (no sockets: `InProcessTransport`): publish segments through MatchAdmin,
/// query through MatchService.
final class MatchServerTests: XCTestCase {
    private var root: URL!
    private var client: InProcessTransport!
    private var catalog: MatchCatalog!

    static let clientToken = "client-secret"
    static let adminToken = "admin-secret"
    static let access = AccessPolicy(clientTokens: [clientToken], adminTokens: [adminToken])
    let asClient = CallOptions(metadata: ["authorization": "Bearer \(clientToken)"])
    let asAdmin = CallOptions(metadata: ["authorization": "Bearer \(adminToken)"])

    var logger: Logger {
        var l = Logger(label: "test")
        l.logLevel = .critical
        return l
    }

    override func setUp() async throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-match-\(UUID().uuidString)")
        try await startServer()
    }

    override func tearDown() async throws {
        client = nil
        catalog = nil
        try? FileManager.default.removeItem(at: root)
    }

    private func startServer() async throws {
        catalog = try MatchCatalog(root: root, logger: logger)
        client = try InProcessTransport(services: [
            MatchHandler(catalog: catalog, access: Self.access), AdminHandler(catalog: catalog, access: Self.access),
        ], logger: logger)
    }

    /// Stops serving: the catalog and its maps go.
    private func stopServer() {
        client = nil
        catalog = nil
    }

    private var match: MatchService.Client<InProcessTransport> { MatchService.Client(transport: client) }
    private var admin: MatchAdmin.Client<InProcessTransport> { MatchAdmin.Client(transport: client) }

    /// Writes `keys` as segment files for (advertiser, version) under the root.
    private func writeSegments(_ keys: [Key16], advertiser: String, version: UInt64, parts: Int = 1) throws -> [SegmentRef] {
        let sorted = Array(Set(keys)).sorted()
        let dir = "segments/\(advertiser)/\(version)"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        let chunk = max(1, (sorted.count + parts - 1) / parts)
        return try (0..<parts).map { part in
            let slice = sorted.count == 0 ? [] : Array(sorted[min(sorted.count, part * chunk)..<min(sorted.count, (part + 1) * chunk)])
            let path = "\(dir)/\(part).seg"
            _ = try SegmentWriter.create(slice, count: slice.count, at: root.appendingPathComponent(path).path,
                                         advertiserID: advertiser, version: version)
            return SegmentRef(path: path, keyCount: UInt64(slice.count))
        }
    }

    /// A delta's overlay for (advertiser, version): its adds and removes segments.
    private func writeOverlay(adds: [Key16], removes: [Key16], advertiser: String, version: UInt64) throws -> [SegmentRef] {
        let dir = "segments/\(advertiser)/\(version)"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        return try [(SegmentRole.adds, adds), (.removes, removes)].map { role, keys in
            let sorted = Array(Set(keys)).sorted()
            let path = "\(dir)/\(role).seg"
            _ = try SegmentWriter.create(sorted, count: sorted.count, at: root.appendingPathComponent(path).path,
                                         advertiserID: advertiser, version: version, role: role)
            return SegmentRef(path: path, keyCount: UInt64(sorted.count))
        }
    }

    private func publish(_ keys: [Key16], advertiser: String, version: UInt64, parts: Int = 1) async throws -> PublishResponse {
        let segments = try writeSegments(keys, advertiser: advertiser, version: version, parts: parts)
        return try await admin.publish(PublishRequest(advertiserID: advertiser, version: version, segments: segments), options: asAdmin)
    }

    private func randomKeys(_ n: Int, seed: UInt64) -> [Key16] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    }

    private func data(_ keys: [Key16]) -> Data { Data(keys.flatMap(\.bytes)) }

    /// Export pages the live list exactly: sorted, distinct (segments that
    /// overlap are merged), every page from one version, and a page asked of
    /// a version no longer live is refused.
    func testExportPagesTheListSortedAndDistinct() async throws {
        let members = randomKeys(3_000, seed: 5) + [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)]
        // Two segments that overlap: every key of the second is in the first, or after it.
        let dir = "segments/acme/1"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        let all = Array(Set(members)).sorted()
        var segments: [SegmentRef] = []
        for (part, keys) in [Array(all[0..<2_000]), Array(all[1_500...])].enumerated() {
            let path = "\(dir)/\(part).seg"
            _ = try SegmentWriter.create(keys, count: keys.count, at: root.appendingPathComponent(path).path, advertiserID: "acme", version: 1)
            segments.append(SegmentRef(path: path, keyCount: UInt64(keys.count)))
        }
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: segments), options: asAdmin)

        var exported: [Key16] = []
        var request = ExportRequest(advertiserID: "acme", limit: 700)
        var pages = 0
        repeat {
            let page = try await admin.export(request, options: asAdmin)
            XCTAssertEqual(page.version, 1)
            XCTAssertLessThanOrEqual(page.hashes.count, 700 * 16)
            page.hashes.withUnsafeBytes { bytes in
                for start in stride(from: 0, to: bytes.count, by: 16) { exported.append(Key16(bytes.baseAddress! + start)) }
            }
            request.version = page.version
            request.after = page.nextAfter
            pages += 1
        } while !request.after.isEmpty
        XCTAssertEqual(exported, all, "sorted, distinct, complete")
        XCTAssertEqual(pages, (all.count + 699) / 700)

        // A new version goes live between pages: the old one's next page is refused.
        _ = try await publish(randomKeys(10, seed: 6), advertiser: "acme", version: 2)
        await assertStatus(.failedPrecondition) {
            _ = try await self.admin.export(ExportRequest(advertiserID: "acme", after: Data(all[5].bytes), version: 1), options: self.asAdmin)
        }
        await assertStatus(.notFound) { _ = try await self.admin.export(ExportRequest(advertiserID: "nobody"), options: self.asAdmin) }
        await assertStatus(.invalidArgument) {
            _ = try await self.admin.export(ExportRequest(advertiserID: "acme", after: Data([1, 2, 3])), options: self.asAdmin)
        }
        await assertStatus(.permissionDenied) { _ = try await self.admin.export(ExportRequest(advertiserID: "acme"), options: self.asClient) }
    }

    /// An older version replaces the live one only when the publish says it
    /// is a rollback; the manifest keeps it across a restart.
    func testARollbackPublishesAnOlderVersion() async throws {
        let first = randomKeys(100, seed: 11), second = randomKeys(100, seed: 12)
        let firstSegments = try writeSegments(first, advertiser: "acme", version: 1)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: firstSegments), options: asAdmin)
        _ = try await publish(second, advertiser: "acme", version: 2)
        await assertStatus(.failedPrecondition) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: firstSegments), options: self.asAdmin)
        }
        var rollback = PublishRequest(advertiserID: "acme", version: 1, segments: firstSegments)
        rollback.rollback = true
        let response = try await admin.publish(rollback, options: asAdmin)
        XCTAssertEqual(response.previousVersion, 2)
        for _ in 0..<2 {
            let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(first[0].bytes)), options: asClient)
            XCTAssertTrue(reply.matched)
            XCTAssertEqual(reply.version, 1)
            stopServer()
            try await startServer()
        }
    }

    func testMatchAndMatchManyAgreeWithASet() async throws {
        let members = randomKeys(100_000, seed: 1) + [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)]
        let response = try await publish(members, advertiser: "acme", version: 1, parts: 3)
        XCTAssertEqual(response.previousVersion, 0)
        let reference = Set(members)
        let probes = Array(members.prefix(500)) + randomKeys(500, seed: 2) + [members[members.count - 1], members[members.count - 2]]

        for key in probes.prefix(200) {
            let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(key.bytes)), options: asClient)
            XCTAssertEqual(reply.matched, reference.contains(key))
            XCTAssertEqual(reply.version, 1)
        }
        let many = try await match.matchMany(MatchManyRequest(advertiserID: "acme", hashes: data(probes)), options: asClient)
        XCTAssertEqual(many.count, UInt32(probes.count))
        XCTAssertEqual(many.version, 1)
        var matched = 0
        for (i, key) in probes.enumerated() {
            let bit = many.isMatched(i)
            XCTAssertEqual(bit, reference.contains(key), "index \(i)")
            if bit { matched += 1 }
        }
        XCTAssertEqual(many.matchedCount, UInt32(matched))
        XCTAssertEqual(many.matched.count, (probes.count + 7) / 8)
    }

    /// Match reads the canonical encoding of its request in place and writes
    /// its answer without a message (`MatchHandler+FastPath`); every other
    /// encoding of the same request (fields reordered, an unknown field, a
    /// non-ASCII id) gets byte for byte the same answer, and a bad request
    /// the same error.
    func testMatchAnswersEveryEncodingOfARequestAlike() async throws {
        let members = randomKeys(1_000, seed: 5)
        _ = try await publish(members, advertiser: "acme", version: 300)
        _ = try await publish(members, advertiser: "ácme", version: 1)
        let handler = MatchHandler(catalog: catalog, access: .open, logger: logger)
        let answer = try inline(MatchService.Method.match, of: handler)
        func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] { [number << 3 | 2, UInt8(bytes.count)] + bytes }
        for (advertiser, version) in [("acme", UInt64(300)), ("ácme", UInt64(1))] {
            let id = Array(advertiser.utf8)
            for key in [members[0], members[999], randomKeys(1, seed: 6)[0]] {
                let expected = MatchResponse(matched: members.contains(key), version: version).serializedBytes()
                let canonical = MatchRequest(advertiserID: advertiser, hash: Data(key.bytes)).serializedBytes()
                XCTAssertEqual(canonical, field(1, id) + field(2, key.bytes))
                XCTAssertEqual(try answer(canonical), expected)
                XCTAssertEqual(try answer(field(2, key.bytes) + field(1, id)), expected, "fields reordered")
                XCTAssertEqual(try answer(canonical + [0x18, 0x07]), expected, "an unknown field")
                XCTAssertEqual(try answer(field(1, Array("other".utf8)) + canonical), expected, "the last id wins")
            }
        }
        XCTAssertThrowsError(try answer(field(1, Array("acme".utf8)) + field(2, Array(repeating: 1, count: 15)))) { error in
            XCTAssertEqual((error as? RPCError)?.code, .invalidArgument)
            XCTAssertEqual((error as? RPCError)?.message, "hash must be 16 bytes (an MD5) or 32 (a SHA-256), got 15")
        }
        // 32 bytes is a SHA-256: read in place too, and refused naming the list's type.
        XCTAssertThrowsError(try answer(field(1, Array("acme".utf8)) + field(2, Array(repeating: 1, count: 32)))) { error in
            XCTAssertEqual((error as? RPCError)?.code, .invalidArgument)
            XCTAssertEqual((error as? RPCError)?.message, "advertiser 'acme' holds MD5 hashes: 16 bytes, got 32 (a SHA-256)")
        }
        XCTAssertThrowsError(try answer(field(1, Array("ghost".utf8)) + field(2, members[0].bytes))) { error in
            XCTAssertEqual((error as? RPCError)?.code, .notFound)
        }
        XCTAssertThrowsError(try answer([0x0A, 0x05, 0x61])) { error in
            XCTAssertFalse(error is RPCError, "a truncated request is a decoding error: \(error)")
        }
    }

    /// A run of Match calls (what a client pipelining them sends in one
    /// packet) gets, call by call, the bytes or the error each call gets
    /// alone: one advertiser's canonical requests (looked up together),
    /// over one segment, seven, and overlapping ones; mixed advertisers;
    /// an encoding the general decoder reads; a missing list; the other
    /// hash width; a bad request in the middle.
    func testARunOfMatchCallsAnswersEachAsAlone() async throws {
        let members = randomKeys(5_000, seed: 41)
        _ = try await publish(members, advertiser: "one", version: 7)
        _ = try await publish(members, advertiser: "split", version: 8, parts: 7)
        let dir = "segments/overlap/1"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        var refs: [SegmentRef] = []
        for part in 0..<3 {
            let keys = Array(Set(members.enumerated().filter { $0.offset % 3 != part }.map(\.element))).sorted()
            let path = "\(dir)/\(part).seg"
            _ = try SegmentWriter.create(keys, count: keys.count, at: root.appendingPathComponent(path).path, advertiserID: "overlap", version: 1)
            refs.append(SegmentRef(path: path, keyCount: UInt64(keys.count)))
        }
        _ = try await admin.publish(PublishRequest(advertiserID: "overlap", version: 1, segments: refs), options: asAdmin)
        let handler = MatchHandler(catalog: catalog, access: .open, logger: logger)
        let alone = try inline(MatchService.Method.match, of: handler)
        guard let run = handler.methods.first(where: { $0.descriptor.id == MatchService.Method.match.id })?.run else {
            return XCTFail("Match answers no runs")
        }
        let context = RPCContext(method: MatchService.Method.match, metadata: Metadata(), deadline: nil, peer: "test")
        /// Each request's answer from the run: its bytes, or its error's description.
        func answers(_ requests: [[UInt8]]) -> [String] {
            var out: [String] = []
            let copies = requests.map { bytes in
                let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
                copy.copyBytes(from: bytes)
                return UnsafeRawBufferPointer(copy)
            }
            defer { copies.forEach { $0.deallocate() } }
            copies.withUnsafeBufferPointer { views in
                run(views, context, { size, encode in
                    var bytes = [UInt8](repeating: 0xEE, count: size)
                    bytes.withUnsafeMutableBytes(encode)
                    out.append("\(bytes)")
                }, { out.append("\($0)") })
            }
            return out
        }
        func aloneAnswers(_ requests: [[UInt8]]) -> [String] {
            requests.map { request in
                do { return "\(try alone(request))" } catch { return "\(error)" }
            }
        }
        func request(_ advertiser: String, _ key: [UInt8]) -> [UInt8] {
            MatchRequest(advertiserID: advertiser, hash: Data(key)).serializedBytes()
        }
        let probes = Array(members.prefix(40)) + randomKeys(40, seed: 42) + [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)]
        var runs: [[[UInt8]]] = []
        for advertiser in ["one", "split", "overlap", "ghost"] {
            runs.append(probes.map { request(advertiser, $0.bytes) })
        }
        runs.append(probes.enumerated().map { request(["one", "split", "overlap"][$0.offset % 3], $0.element.bytes) })
        runs.append(probes.prefix(5).map { request("one", $0.bytes) } + [[0x12, 16] + members[9].bytes + [0x0A, 3] + Array("one".utf8)])
        runs.append(probes.prefix(5).map { request("one", Array($0.bytes) + Array($0.bytes)) }) // SHA-256 width for an MD5 list
        runs.append(probes.prefix(3).map { request("one", $0.bytes) } + [request("one", Array(repeating: 1, count: 15))]
                    + probes.prefix(3).map { request("one", $0.bytes) })
        runs.append([request("one", members[0].bytes)])
        // Mixed, with a missing list, the other width and the general decoder in between.
        runs.append(probes.enumerated().map { i, key in
            switch i % 6 {
            case 0, 1: request("one", key.bytes)
            case 2: request("ghost", key.bytes)
            case 3: request("split", Array(key.bytes) + Array(key.bytes))
            case 4: [0x12, 16] + key.bytes + [0x0A, 7] + Array("overlap".utf8)
            default: request("overlap", key.bytes)
            }
        })
        for (n, requests) in runs.enumerated() {
            let expected = aloneAnswers(requests)
            XCTAssertEqual(answers(requests), expected, "run \(n)")
        }
        // The run really answered: members matched, others not, with the version.
        let matched = MatchResponse(matched: true, version: 7).serializedBytes()
        XCTAssertEqual(answers(runs[0]).prefix(40), ArraySlice(repeating: "\(matched)", count: 40))
        XCTAssertFalse(answers(runs[0]).suffix(42).contains("\(matched)"))
        XCTAssertTrue(answers(runs[3]).allSatisfy { $0.contains("no published list") }, "\(answers(runs[3]).first ?? "")")
    }

    /// `method` of `handler` as its inline body answers a request's bytes:
    /// the reply's bytes, or the error it throws.
    private func inline(_ method: RPCMethodDescriptor, of handler: MatchHandler) throws -> ([UInt8]) throws -> [UInt8] {
        guard case .inline(let body)? = handler.methods.first(where: { $0.descriptor.id == method.id })?.body else {
            throw RPCError(.unimplemented, "\(method) is not answered inline")
        }
        let context = RPCContext(method: method, metadata: Metadata(), deadline: nil, peer: "test")
        return { request in
            var response: [UInt8]?
            try request.withUnsafeBytes { bytes in
                try body(bytes, context) { size, encode in
                    var out = [UInt8](repeating: 0xEE, count: size)
                    out.withUnsafeMutableBytes(encode)
                    response = out
                }
            }
            return try XCTUnwrap(response)
        }
    }

    /// `MatchMany` is answered in place too: every encoding of a request gets
    /// the bytes the generated encoder writes for the general path's
    /// answer, and every bad one the same error.
    func testMatchManyAnswersEveryEncodingOfARequestAlike() async throws {
        let members = randomKeys(1_000, seed: 7)
        _ = try await publish(members, advertiser: "acme", version: 300)
        _ = try await publish(members, advertiser: "ácme", version: 1)
        let handler = MatchHandler(catalog: catalog, access: .open, maxBatch: 200_000, logger: logger)
        let answer = try inline(MatchService.Method.matchMany, of: handler)
        let context = RPCContext(method: MatchService.Method.matchMany, metadata: Metadata(), deadline: nil, peer: "test")
        func general(_ request: [UInt8]) throws -> [UInt8] {
            try request.withUnsafeBytes { try handler.matchMany(try MatchManyRequest(decoding: $0), context: context).serializedBytes() }
        }
        let strangers = randomKeys(700, seed: 8)
        for (advertiser, version) in [("acme", UInt64(300)), ("ácme", UInt64(1))] {
            for n in [1, 7, 8, 100, 1_000, 1_300] {
                let asked = Array((members.prefix(n / 2) + strangers.prefix(n - n / 2)).shuffled())
                let request = MatchManyRequest(advertiserID: advertiser, hashes: data(asked))
                let response = try answer(request.serializedBytes()).withUnsafeBytes { try MatchManyResponse(decoding: $0) }
                XCTAssertEqual((0..<n).map(response.isMatched), asked.map(Set(members).contains), "\(advertiser), \(n)")
                XCTAssertEqual(response.version, version)
                XCTAssertEqual(Int(response.matchedCount), n / 2)
                for encoding in [request.serializedBytes(),
                                 MatchManyRequest(advertiserID: advertiser, hashes: data(asked), hashType: .md5).serializedBytes(),
                                 request.serializedBytes() + [0x28, 0x07],
                                 [0x12, 0x00] + request.serializedBytes()] {
                    XCTAssertEqual(try answer(encoding), try general(encoding), "\(advertiser), \(n), \(encoding.prefix(8))")
                }
            }
        }
        // 140,000 hashes: a bitmap of 17,500 bytes, past what goes on the stack.
        let big = MatchManyRequest(advertiserID: "acme", hashes: data(randomKeys(139_000, seed: 9) + members)).serializedBytes()
        XCTAssertEqual(try answer(big), try general(big))
        XCTAssertEqual(try answer(big).count, 1 + 3 + 17_500 + 4 + 3 + 3, "the bitmap, count, matched count and version")
        let errors: [([UInt8], String)] = [
            (MatchManyRequest(advertiserID: "acme", hashes: Data(count: 24)).serializedBytes(),
             "advertiser 'acme' holds MD5 hashes: 16 bytes each; hash 1 has only 8 bytes"),
            (MatchManyRequest(advertiserID: "acme", hashes: Data(count: 32), hashType: .sha256).serializedBytes(),
             "advertiser 'acme' holds MD5 hashes (16 bytes each), not SHA-256"),
            (MatchManyRequest(advertiserID: "ghost", hashes: Data(count: 16)).serializedBytes(), "advertiser 'ghost' has no published list"),
        ]
        for (request, message) in errors {
            XCTAssertThrowsError(try answer(request)) { XCTAssertEqual(($0 as? RPCError)?.message, message) }
            XCTAssertThrowsError(try general(request)) { XCTAssertEqual(($0 as? RPCError)?.message, message) }
        }
        XCTAssertThrowsError(try answer([0x0A, 0x05, 0x61])) { error in
            XCTAssertFalse(error is RPCError, "a truncated request is a decoding error: \(error)")
        }
    }

    /// Segments written in format 1, before format 2 dropped the bytes a
    /// bucket implies, keep serving, beside format 2 segments of the same list.
    func testSegmentsOfTheFirstFormatStillServe() async throws {
        let members = Array(Set(randomKeys(2_000, seed: 9))).sorted()
        let dir = "segments/old/1"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        for (part, formatVersion) in [(0, UInt16(1)), (1, 2)] {
            let keys = members[(part * 1_000)..<(part * 1_000 + 1_000)]
            let path = root.appendingPathComponent("\(dir)/\(part).seg").path
            _ = try SegmentWriter.create(keys, count: keys.count, at: path, advertiserID: "old", version: 1, formatVersion: formatVersion)
            XCTAssertEqual(try Segment(path: path).layout.version, formatVersion)
        }
        _ = try await admin.publish(PublishRequest(advertiserID: "old", version: 1, segments: [
            SegmentRef(path: "\(dir)/0.seg", keyCount: 1_000), SegmentRef(path: "\(dir)/1.seg", keyCount: 1_000),
        ]), options: asAdmin)
        let probes = members + randomKeys(2_000, seed: 10)
        let many = try await match.matchMany(MatchManyRequest(advertiserID: "old", hashes: data(probes)), options: asClient)
        for (i, key) in probes.enumerated() { XCTAssertEqual(many.isMatched(i), i < members.count, "probe \(i): \(key)") }
        for key in [members[0], members[999], members[1_000], members[1_999]] {
            let reply = try await match.match(MatchRequest(advertiserID: "old", hash: Data(key.bytes)), options: asClient)
            XCTAssertTrue(reply.matched)
        }
    }

    /// A batch over a version of several segments is sorted by segment and
    /// each segment answers its share at once; segments whose ranges overlap
    /// each answer the whole batch. Both agree with a set, key by key.
    func testMatchManyOverManySegmentsDisjointOrOverlappingAgreesWithASet() async throws {
        let members = randomKeys(20_000, seed: 31)
        _ = try await publish(members, advertiser: "split", version: 1, parts: 7)
        let dir = "segments/overlap/1"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        var refs: [SegmentRef] = []
        for part in 0..<3 {
            let keys = Array(Set(members.enumerated().filter { $0.offset % 3 == part }.map(\.element))).sorted()
            let path = "\(dir)/\(part).seg"
            _ = try SegmentWriter.create(keys, count: keys.count, at: root.appendingPathComponent(path).path, advertiserID: "overlap", version: 1)
            refs.append(SegmentRef(path: path, keyCount: UInt64(keys.count)))
        }
        _ = try await admin.publish(PublishRequest(advertiserID: "overlap", version: 1, segments: refs), options: asAdmin)
        let reference = Set(members)
        let probes = Array(members.prefix(3_000)) + randomKeys(3_000, seed: 32) + [Key16(hi: 0, lo: 0), Key16(hi: .max, lo: .max)]
        for advertiser in ["split", "overlap"] {
            for batch in [probes, Array(probes.prefix(5)), [probes[2_999]]] {
                let many = try await match.matchMany(MatchManyRequest(advertiserID: advertiser, hashes: data(batch)), options: asClient)
                for (i, key) in batch.enumerated() {
                    XCTAssertEqual(many.isMatched(i), reference.contains(key), "\(advertiser), \(batch.count) keys: index \(i)")
                }
                XCTAssertEqual(Int(many.matchedCount), batch.filter(reference.contains).count)
            }
        }
    }

    /// One hash against many advertisers' lists, against an oracle: each
    /// advertiser answered in its place (repeats too) from its live
    /// version, advertisers with no list reported as version 0 without
    /// failing the call, and the limits refused.
    func testMatchAdvertisersAnswersEachAdvertiserInItsPlace() async throws {
        let pool = randomKeys(200, seed: 41)
        var rng = SplitMix64(seed: 42)
        var lists: [String: Set<Key16>] = [:]
        for a in 0..<25 {
            let members = Set(pool.filter { _ in rng.next() % 3 == 0 })
            lists["adv\(a)"] = members
            guard a % 5 == 4 else {
                _ = try await publish(Array(members), advertiser: "adv\(a)", version: UInt64(a + 1), parts: a % 3 + 1)
                continue
            }
            // Two segments that overlap (the even keys and the odd ones, each
            // spanning the list): every segment is asked, not one by range.
            let sorted = members.sorted(), dir = "segments/adv\(a)/\(a + 1)"
            try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
            let refs = try [0, 1].map { part -> SegmentRef in
                let slice = sorted.enumerated().filter { $0.offset % 2 == part }.map(\.element)
                _ = try SegmentWriter.create(slice, count: slice.count, at: root.appendingPathComponent("\(dir)/\(part).seg").path,
                                             advertiserID: "adv\(a)", version: UInt64(a + 1))
                return SegmentRef(path: "\(dir)/\(part).seg", keyCount: UInt64(slice.count))
            }
            _ = try await admin.publish(PublishRequest(advertiserID: "adv\(a)", version: UInt64(a + 1), segments: refs), options: asAdmin)
        }
        let asked = (0..<25).map { "adv\($0)" } + ["ghost", "adv3", "", "adv24"]
        for key in pool.prefix(40) + [randomKeys(1, seed: 43)[0]] {
            let reply = try await match.matchAdvertisers(MatchAdvertisersRequest(hash: Data(key.bytes), advertiserIDs: asked), options: asClient)
            XCTAssertEqual(reply.matched.count, (asked.count + 7) / 8)
            XCTAssertEqual(reply.versions.count, asked.count)
            XCTAssertEqual(reply.unknownCount, 2)
            for (i, advertiser) in asked.enumerated() {
                let bit = reply.matched[i >> 3] >> UInt8(i & 7) & 1 == 1
                XCTAssertEqual(bit, lists[advertiser]?.contains(key) ?? false, "\(advertiser) at \(i)")
                XCTAssertEqual(reply.versions[i], lists[advertiser] == nil ? 0 : UInt64(Int(advertiser.dropFirst(3))! + 1))
            }
        }
        let none = try await match.matchAdvertisers(MatchAdvertisersRequest(hash: Data(pool[0].bytes), advertiserIDs: []), options: asClient)
        XCTAssertEqual(none.matched.count, 0)
        await assertStatus(.invalidArgument) {
            _ = try await self.match.matchAdvertisers(MatchAdvertisersRequest(hash: Data(count: 15), advertiserIDs: ["adv1"]), options: self.asClient)
        }
        let tooMany = await assertStatus(.invalidArgument) {
            _ = try await self.match.matchAdvertisers(MatchAdvertisersRequest(hash: Data(count: 16), advertiserIDs: Array(repeating: "a", count: 10_001)),
                                                      options: self.asClient)
        }
        XCTAssertEqual(tooMany?.message, "10001 advertisers in one call exceed the limit of 10000")
        // Every method of the service is hosted (the fast path lists them by hand).
        let hosted = Set(MatchHandler(catalog: catalog, access: .open, logger: logger).methods.map(\.descriptor.id))
        XCTAssertEqual(hosted, Set(MatchService.Method.all.map(\.id)))
    }

    func testSingleKeyAndEmptyAdvertisers() async throws {
        _ = try await publish([Key16(hi: 1, lo: 2)], advertiser: "one", version: 1)
        _ = try await publish([], advertiser: "none", version: 1)
        let hit = try await match.match(MatchRequest(advertiserID: "one", hash: Data(Key16(hi: 1, lo: 2).bytes)), options: asClient)
        XCTAssertTrue(hit.matched)
        let miss = try await match.match(MatchRequest(advertiserID: "none", hash: Data(Key16(hi: 1, lo: 2).bytes)), options: asClient)
        XCTAssertFalse(miss.matched)
        let empty = try await match.matchMany(MatchManyRequest(advertiserID: "one", hashes: Data()), options: asClient)
        XCTAssertEqual(empty.count, 0)
    }

    func testBadRequests() async throws {
        _ = try await publish(randomKeys(10, seed: 3), advertiser: "acme", version: 1)
        await assertStatus(.notFound) { _ = try await self.match.match(MatchRequest(advertiserID: "ghost", hash: Data(count: 16)), options: self.asClient) }
        let short = await assertStatus(.invalidArgument) {
            _ = try await self.match.match(MatchRequest(advertiserID: "acme", hash: Data(count: 15)), options: self.asClient)
        }
        XCTAssertEqual(short?.message, "hash must be 16 bytes (an MD5) or 32 (a SHA-256), got 15")
        let ragged = await assertStatus(.invalidArgument) {
            _ = try await self.match.matchMany(MatchManyRequest(advertiserID: "acme", hashes: Data(count: 16 * 7 + 5)), options: self.asClient)
        }
        XCTAssertEqual(ragged?.message, "advertiser 'acme' holds MD5 hashes: 16 bytes each; hash 7 has only 5 bytes")
    }

    func testTokens() async throws {
        let request = MatchRequest(advertiserID: "acme", hash: Data(count: 16))
        await assertStatus(.unauthenticated) { _ = try await self.match.match(request) }
        await assertStatus(.unauthenticated) {
            _ = try await self.match.match(request, options: CallOptions(metadata: ["authorization": "Bearer wrong"]))
        }
        let publish = PublishRequest(advertiserID: "acme", version: 1)
        await assertStatus(.unauthenticated) { _ = try await self.admin.publish(publish) }
        await assertStatus(.permissionDenied) { _ = try await self.admin.publish(publish, options: self.asClient) }
        // An admin token may also query.
        await assertStatus(.notFound) { _ = try await self.match.match(request, options: self.asAdmin) }
    }

    func testVersionSwapUnderConcurrentQueriesNeverMixesVersions() async throws {
        // Version v holds exactly the keys whose index is congruent to v mod 3,
        // so a reply's bitmap says which version answered, bit by bit.
        let keys = randomKeys(3_000, seed: 4)
        func members(_ version: UInt64) -> [Key16] { keys.enumerated().filter { UInt64($0.offset) % 3 == version % 3 }.map(\.element) }
        _ = try await publish(members(1), advertiser: "acme", version: 1)
        let probe = data(keys)
        let stub = match
        let options = asClient

        let queries = Task {
            var seen = Set<UInt64>()
            for _ in 0..<300 {
                let reply = try await stub.matchMany(MatchManyRequest(advertiserID: "acme", hashes: probe), options: options)
                for i in 0..<keys.count {
                    let bit = reply.isMatched(i)
                    if bit != (UInt64(i) % 3 == reply.version % 3) {
                        XCTFail("reply of version \(reply.version) disagrees with it at key \(i)")
                        return seen
                    }
                }
                seen.insert(reply.version)
            }
            return seen
        }
        for version in UInt64(2)...6 {
            let response = try await publish(members(version), advertiser: "acme", version: version)
            XCTAssertEqual(response.previousVersion, version - 1)
            try await Task.sleep(for: .milliseconds(10))
        }
        let seen = try await queries.value
        XCTAssertGreaterThan(seen.count, 1, "queries ran across swaps")
        let last = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(keys[0].bytes)), options: asClient)
        XCTAssertEqual(last.version, 6)
    }

    /// A version made by deltas: its base's segments and each overlay, the
    /// newest its own. What does not fit is refused with the reason; a
    /// compacted publish replaces the live version of the same number; a
    /// restart serves the layers again.
    func testALayeredVersionIsCheckedServedCompactedAndReloaded() async throws {
        let base = randomKeys(300, seed: 1), added = randomKeys(50, seed: 2)
        let members = Set(base).subtracting(base.prefix(40)).union(added)
        let asked = base + added + randomKeys(50, seed: 3)
        let baseRefs = try writeSegments(base, advertiser: "acme", version: 3, parts: 3)
        let first = try writeOverlay(adds: Array(added.prefix(30)), removes: Array(base.prefix(40)), advertiser: "acme", version: 5)
        let second = try writeOverlay(adds: Array(added.suffix(20)), removes: [], advertiser: "acme", version: 8)
        func refusal(_ version: UInt64, _ segments: [SegmentRef]) async -> String? {
            await assertStatus(.invalidArgument) {
                _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: version, segments: segments), options: self.asAdmin)
            }?.message
        }
        let missingOwn = await refusal(9, baseRefs + first + second)
        XCTAssertTrue(missingOwn?.contains("is made by deltas but has no overlay of its own") == true, missingOwn ?? "")
        let overlayBelowBase = try writeOverlay(adds: [], removes: [], advertiser: "acme", version: 2)
        let below = await refusal(8, baseRefs + overlayBelowBase + second)
        XCTAssertTrue(below?.contains("(adds) belongs to advertiser 'acme' version 2, not 'acme' version 8 or a version it is built on") == true, below ?? "")
        let otherBase = try writeSegments(base, advertiser: "acme", version: 4)
        let twoBases = await refusal(8, baseRefs + otherBase + first + second)
        XCTAssertTrue(twoBases?.contains("(members) belongs to advertiser 'acme' version 4") == true, twoBases ?? "")

        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 8, segments: baseRefs + first + second), options: asAdmin)
        func assertServes(_ overlays: Int, line: UInt = #line) async throws {
            XCTAssertEqual(catalog.current("acme")?.layers.overlays.count, overlays, line: line)
            let many = try await match.matchMany(MatchManyRequest(advertiserID: "acme", hashes: data(asked)), options: asClient)
            XCTAssertEqual((0..<asked.count).map(many.isMatched), asked.map(members.contains), line: line)
            for key in asked.prefix(60) {
                let one = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(key.bytes)), options: asClient)
                XCTAssertEqual(one.matched, members.contains(key), line: line)
                XCTAssertEqual(one.version, 8, line: line)
                let across = try await match.matchAdvertisers(MatchAdvertisersRequest(hash: Data(key.bytes), advertiserIDs: ["acme", "acme"]), options: asClient)
                XCTAssertEqual(across.matched, Data([members.contains(key) ? 3 : 0]), line: line)
            }
            let exported = try await admin.export(ExportRequest(advertiserID: "acme"), options: asAdmin)
            XCTAssertEqual(exported.hashes, data(members.sorted()), line: line)
        }
        try await assertServes(2)

        // The same version, its base and first overlay compacted into one base.
        let compacted = try writeSegments(Array(Set(base).subtracting(base.prefix(40)).union(added.prefix(30))), advertiser: "acme", version: 6)
        let plain = try await admin.publish(PublishRequest(advertiserID: "acme", version: 8, segments: compacted + second), options: asAdmin)
        XCTAssertEqual(plain.previousVersion, 8)
        try await assertServes(2)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 8, segments: compacted + second, compacted: true), options: asAdmin)
        try await assertServes(1)

        stopServer()
        try await startServer()
        try await assertServes(1)
    }

    func testStaleAndRepeatedPublishes() async throws {
        _ = try await publish(randomKeys(10, seed: 5), advertiser: "acme", version: 5)
        let again = try await admin.publish(
            PublishRequest(advertiserID: "acme", version: 5, segments: try writeSegments(randomKeys(10, seed: 5), advertiser: "acme", version: 5)),
            options: asAdmin)
        XCTAssertEqual(again.previousVersion, 5, "publishing the live version again changes nothing")
        let stale = await assertStatus(.failedPrecondition) {
            _ = try await self.publish(self.randomKeys(10, seed: 6), advertiser: "acme", version: 4)
        }
        XCTAssertEqual(stale?.message, "version 4 is not newer than the live version 5")
        let wrongOwner = try writeSegments(randomKeys(10, seed: 7), advertiser: "other", version: 6)
        await assertStatus(.invalidArgument) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 6, segments: wrongOwner), options: self.asAdmin)
        }
        await assertStatus(.invalidArgument) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 7, segments: [SegmentRef(path: "../../etc/passwd")]), options: self.asAdmin)
        }
    }

    func testCorruptSegmentIsRefusedAndThePreviousVersionKeepsServing() async throws {
        let keys = randomKeys(1_000, seed: 8)
        _ = try await publish(keys, advertiser: "acme", version: 1)
        let bad = try writeSegments(randomKeys(1_000, seed: 9), advertiser: "acme", version: 2)
        let url = root.appendingPathComponent(bad[0].path)
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: url)
        let refused = await assertStatus(.failedPrecondition) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 2, segments: bad), options: self.asAdmin)
        }
        XCTAssertTrue(refused?.message.contains(url.lastPathComponent) == true, refused?.message ?? "")
        XCTAssertTrue(refused?.message.contains("key checksum mismatch") == true, refused?.message ?? "")
        // Truncated, too.
        let truncated = try writeSegments(randomKeys(1_000, seed: 10), advertiser: "acme", version: 3)
        let turl = root.appendingPathComponent(truncated[0].path)
        try Data(try Data(contentsOf: turl).prefix(500)).write(to: turl)
        await assertStatus(.failedPrecondition) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 3, segments: truncated), options: self.asAdmin)
        }
        let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(keys[0].bytes)), options: asClient)
        XCTAssertTrue(reply.matched)
        XCTAssertEqual(reply.version, 1)
    }

    /// Flips a byte of a segment file (by default the last, in its keys), as rot on disk would.
    private func damage(_ path: String, at offset: Int? = nil) throws {
        let url = root.appendingPathComponent(path)
        var bytes = try Data(contentsOf: url)
        bytes[offset ?? bytes.count - 1] ^= 0xFF
        try bytes.write(to: url)
    }

    /// A live segment found damaged at restart: the advertiser answers
    /// UNAVAILABLE (not NOT_FOUND), ListServed names the damage, a newer
    /// version clears it; a half-written manifest left by a crash is removed.
    func testSegmentDamagedAtRestartIsReportedAndNotServed() async throws {
        let segments = try writeSegments(randomKeys(300, seed: 20), advertiser: "acme", version: 4)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 4, segments: segments), options: asAdmin)
        _ = try await publish(randomKeys(30, seed: 21), advertiser: "beta", version: 1)
        stopServer()
        try damage(segments[0].path, at: SegmentFormat.headerSize) // in its index: checked at start
        let stray = root.appendingPathComponent("match-manifest.json.tmp-DEAD")
        try Data("{".utf8).write(to: stray)
        try await startServer()

        XCTAssertFalse(FileManager.default.fileExists(atPath: stray.path), "stray temporary manifest left behind")
        let refused = await assertStatus(.unavailable) {
            _ = try await self.match.match(MatchRequest(advertiserID: "acme", hash: Data(count: 16)), options: self.asClient)
        }
        XCTAssertTrue(refused?.message.contains("version 4 was found damaged") == true, refused?.message ?? "")
        let served = try await admin.listServed(ListServedRequest(), options: asAdmin).lists
        XCTAssertEqual(served.map(\.advertiserID), ["acme", "beta"])
        XCTAssertEqual(served[0].version, 0)
        XCTAssertEqual(served[0].damagedVersion, 4)
        XCTAssertTrue(served[0].damage.contains("index checksum mismatch"), served[0].damage)
        XCTAssertEqual(served[1].version, 1)

        let fresh = randomKeys(40, seed: 22)
        _ = try await publish(fresh, advertiser: "acme", version: 5)
        let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(fresh[0].bytes)), options: asClient)
        XCTAssertTrue(reply.matched)
        XCTAssertNil(catalog.damage("acme"))
    }

    /// A restart checks headers and indexes only (a terabyte of keys would
    /// take an hour to read); keys damaged while the server was down are
    /// found by the scrub, which starts at once.
    func testRestartChecksIndexesAndLeavesKeysToTheScrub() async throws {
        let segments = try writeSegments(randomKeys(300, seed: 25), advertiser: "acme", version: 1)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: segments), options: asAdmin)
        stopServer()
        try damage(segments[0].path)
        try await startServer()
        XCTAssertEqual(catalog.advertisers, ["acme": 1], "keys were read at start")
        let found = await catalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(found, ["acme"])
        XCTAssertTrue(catalog.damage("acme")?.reason.contains("key checksum mismatch") == true)
    }

    /// The scrub verifies the bytes it already maps: it opens nothing (a
    /// server at its limit of maps or files would otherwise find every list
    /// "damaged"), so a segment file unlinked while served is still checked.
    func testScrubChecksTheMappedSegmentsWithoutOpeningThemAgain() async throws {
        let segments = try writeSegments(randomKeys(5_000, seed: 26), advertiser: "acme", version: 1)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: segments), options: asAdmin)
        XCTAssertEqual(catalog.memoryMaps, 1, "80 KB of keys are mapped")
        try FileManager.default.removeItem(at: root.appendingPathComponent(segments[0].path))
        let found = await catalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(found, [], "\(String(describing: catalog.damage("acme")))")
        XCTAssertEqual(catalog.advertisers, ["acme": 1])
    }

    /// A small segment is read into memory, not mapped (maps are scarce:
    /// 100,000 advertisers of 10 KB would need 100,000). The scrub checks
    /// both the copy that answers and the file a restart would load.
    func testSmallSegmentsAreReadIntoMemoryAndTheScrubStillChecksTheirFiles() async throws {
        let keys = randomKeys(1_000, seed: 28)
        let segments = try writeSegments(keys, advertiser: "small", version: 1, parts: 2)
        _ = try await admin.publish(PublishRequest(advertiserID: "small", version: 1, segments: segments), options: asAdmin)
        XCTAssertEqual(catalog.memoryMaps, 0)
        XCTAssertTrue(try XCTUnwrap(catalog.current("small")).segments.allSatisfy { $0.mapping.isCopy })
        let reply = try await match.match(MatchRequest(advertiserID: "small", hash: Data(keys[999].bytes)), options: asClient)
        XCTAssertTrue(reply.matched)
        let clean = await catalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(clean, [])
        try damage(segments[1].path)
        let found = await catalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(found, ["small"], "rot in the file under a good copy is found")
        XCTAssertTrue(catalog.damage("small")?.reason.contains("key checksum mismatch") == true)
    }

    /// ListServed pages, so its answer never outgrows a frame.
    func testListServedPages() async throws {
        for advertiser in ["a", "b", "c", "d", "e"] { _ = try await publish(randomKeys(5, seed: 27), advertiser: advertiser, version: 1) }
        var seen: [String] = []
        var request = ListServedRequest()
        request.limit = 2
        var pages = 0
        repeat {
            let response = try await admin.listServed(request, options: asAdmin)
            seen += response.lists.map(\.advertiserID)
            request.afterAdvertiserID = response.nextAfterAdvertiserID
            pages += 1
        } while !request.afterAdvertiserID.isEmpty && pages < 10
        XCTAssertEqual(seen, ["a", "b", "c", "d", "e"])
        XCTAssertEqual(pages, 3)
    }

    /// The background scrub finds a segment that rots after it went live
    /// and takes its version out of service; the rest keep serving.
    func testScrubFindsASegmentDamagedWhileLive() async throws {
        let segments = try writeSegments(randomKeys(300, seed: 23), advertiser: "acme", version: 2, parts: 3)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 2, segments: segments), options: asAdmin)
        let beta = randomKeys(30, seed: 24)
        _ = try await publish(beta, advertiser: "beta", version: 1)
        let clean = await catalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(clean, [])
        try damage(segments[1].path)
        var paused: [Duration] = []
        let found = await catalog.scrub(bytesPerSecond: 1_000_000) { paused.append($0) }
        XCTAssertEqual(found, ["acme"])
        XCTAssertEqual(catalog.damage("acme")?.version, 2)
        XCTAssertFalse(paused.isEmpty, "the scrub never paused: its rate is unbounded")
        await assertStatus(.unavailable) {
            _ = try await self.match.match(MatchRequest(advertiserID: "acme", hash: Data(count: 16)), options: self.asClient)
        }
        let reply = try await match.match(MatchRequest(advertiserID: "beta", hash: Data(beta[0].bytes)), options: asClient)
        XCTAssertTrue(reply.matched)
    }

    /// A publish appends a line of constant size to the manifest log,
    /// however many advertisers are served; a restart replays it; the log is
    /// compacted into the snapshot once it outgrows it.
    func testPublishCostDoesNotGrowWithAdvertisers() async throws {
        let log = root.appendingPathComponent("match-manifest.log")
        func size(_ url: URL) -> Int { ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? Int) ?? 0 }
        var appended: [Int] = []
        var batch: [PublishRequest] = []
        for i in 0..<2_000 {
            let advertiser = String(format: "adv%05d", i)
            let segments = try writeSegments([Key16(hi: UInt64(i), lo: 1)], advertiser: advertiser, version: 1)
            if i < 1_990 {
                batch.append(PublishRequest(advertiserID: advertiser, version: 1, segments: segments))
                if batch.count == 500 {
                    let results = try await admin.publishMany(PublishManyRequest(publications: batch), options: asAdmin).results
                    XCTAssertEqual(results.map(\.code), Array(repeating: 0, count: 500))
                    batch = []
                }
                continue
            }
            if i == 1_990 {
                _ = try await admin.publishMany(PublishManyRequest(publications: batch), options: asAdmin)
                XCTAssertEqual(catalog.advertisers.count, 1_990)
            }
            let before = size(log)
            _ = try await admin.publish(PublishRequest(advertiserID: advertiser, version: 1, segments: segments), options: asAdmin)
            appended.append(size(log) - before)
        }
        // The first ten advertisers' republish costs the same as the last ten's.
        let small = try writeSegments([Key16(hi: 1, lo: 2)], advertiser: "adv00000", version: 2)
        let before = size(log)
        _ = try await admin.publish(PublishRequest(advertiserID: "adv00000", version: 2, segments: small), options: asAdmin)
        let first = size(log) - before
        XCTAssertTrue(appended.allSatisfy { $0 > 0 && $0 < 200 && abs($0 - first) < 8 }, "bytes per publish: \(appended) against \(first)")

        stopServer()
        try await startServer()
        XCTAssertEqual(catalog.advertisers.count, 2_000)
        XCTAssertEqual(catalog.current("adv00000")?.version, 2)
    }

    /// PublishMany: each publication succeeds or fails on its own, with a
    /// typed `stale` for a version older than the live one.
    func testPublishManyAnswersEachPublication() async throws {
        _ = try await publish(randomKeys(10, seed: 30), advertiser: "old", version: 5)
        let fresh = try writeSegments(randomKeys(10, seed: 31), advertiser: "new", version: 1)
        let stale = try writeSegments(randomKeys(10, seed: 32), advertiser: "old", version: 3)
        let wrong = try writeSegments(randomKeys(10, seed: 33), advertiser: "other", version: 1)
        let results = try await admin.publishMany(PublishManyRequest(publications: [
            PublishRequest(advertiserID: "new", version: 1, segments: fresh),
            PublishRequest(advertiserID: "old", version: 3, segments: stale),
            PublishRequest(advertiserID: "mismatch", version: 1, segments: wrong),
        ]), options: asAdmin).results
        XCTAssertEqual(results.map(\.code), [0, UInt32(RPCStatusCode.failedPrecondition.rawValue), UInt32(RPCStatusCode.invalidArgument.rawValue)])
        XCTAssertEqual(results.map(\.stale), [false, true, false])
        XCTAssertEqual(catalog.advertisers, ["new": 1, "old": 5])
    }

    /// A crash in the middle of an append leaves a torn last line: it is
    /// dropped, and the next append starts a line of its own.
    func testATornManifestLineIsDropped() async throws {
        let keys = randomKeys(20, seed: 34)
        _ = try await publish(keys, advertiser: "acme", version: 1)
        stopServer()
        let handle = try FileHandle(forWritingTo: root.appendingPathComponent("match-manifest.log"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"advertiser":"acme","segments":["segm"#.utf8))
        try handle.close()
        try await startServer()
        XCTAssertEqual(catalog.advertisers, ["acme": 1])
        _ = try await publish(randomKeys(20, seed: 35), advertiser: "beta", version: 1)
        stopServer()
        try await startServer()
        XCTAssertEqual(catalog.advertisers, ["acme": 1, "beta": 1])
    }

    func testRestartReloadsTheNewestVersions() async throws {
        let a = randomKeys(500, seed: 11)
        _ = try await publish(randomKeys(500, seed: 12), advertiser: "acme", version: 1)
        _ = try await publish(a, advertiser: "acme", version: 2)
        _ = try await publish(randomKeys(50, seed: 13), advertiser: "beta", version: 7)
        _ = try await publish(randomKeys(50, seed: 14), advertiser: "gone", version: 1)
        let removed = try await admin.unpublish(UnpublishRequest(advertiserID: "gone"), options: asAdmin)
        XCTAssertEqual(removed.removedVersion, 1)

        stopServer()
        try await startServer()

        XCTAssertEqual(catalog.advertisers, ["acme": 2, "beta": 7])
        let reply = try await match.match(MatchRequest(advertiserID: "acme", hash: Data(a[0].bytes)), options: asClient)
        XCTAssertTrue(reply.matched)
        XCTAssertEqual(reply.version, 2)
        await assertStatus(.notFound) { _ = try await self.match.match(MatchRequest(advertiserID: "gone", hash: Data(count: 16)), options: self.asClient) }
    }

    /// Writes `keys` in `parts` key ranges as slots of one pack file, as merges do.
    private func writePack(_ keys: [Key16], advertiser: String, version: UInt64, parts: Int) throws -> [SegmentRef] {
        let sorted = Array(Set(keys)).sorted()
        let path = "segments/\(advertiser)/\(version)/merged.pack"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(path).deletingLastPathComponent(), withIntermediateDirectories: true)
        let chunk = (sorted.count + parts - 1) / parts
        return try (0..<parts).map { part in
            let range = Array(sorted[min(sorted.count, part * chunk)..<min(sorted.count, (part + 1) * chunk)])
            let slot = try PackFile.reserve(at: root.appendingPathComponent(path).path,
                                            capacity: SegmentFormat.fileSize(forKeys: range.count))
            let writer = try SegmentWriter(slot: slot, advertiserID: advertiser, version: version, estimatedKeys: range.count)
            try range.withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
            let sealed = try writer.seal()
            try sealed.commit()
            let slice = try XCTUnwrap(sealed.slice)
            return SegmentRef(path: path, keyCount: UInt64(range.count), offset: UInt64(slice.offset), length: UInt64(slice.length))
        }
    }

    /// A version of many segments in one pack is one map, however many
    /// segments; the map count stays one per version through a restart.
    func testAPackedVersionIsOneMapAndSurvivesARestart() async throws {
        let keys = randomKeys(4_000, seed: 60)
        let segments = try writePack(keys, advertiser: "acme", version: 1, parts: 16)
        _ = try await admin.publish(PublishRequest(advertiserID: "acme", version: 1, segments: segments), options: asAdmin)
        _ = try await publish(randomKeys(100, seed: 61), advertiser: "beta", version: 3, parts: 3)
        XCTAssertEqual(catalog.current("acme")?.segments.count, 16)
        XCTAssertEqual(catalog.memoryMaps, 1, "one map for the pack; beta's small files are read into memory")

        stopServer()
        try await startServer()
        XCTAssertEqual(catalog.advertisers, ["acme": 1, "beta": 3])
        XCTAssertEqual(catalog.memoryMaps, 1)
        let reply = try await match.matchMany(MatchManyRequest(advertiserID: "acme", hashes: data(keys + randomKeys(50, seed: 62))), options: asClient)
        let hits = reply.matches
        XCTAssertEqual(hits, Array(repeating: true, count: keys.count) + Array(repeating: false, count: 50))

        // A slice that does not hold the segment it claims is refused by name.
        var wrong = try writePack(randomKeys(300, seed: 63), advertiser: "acme", version: 2, parts: 2)
        wrong[1].offset += 4096
        await assertStatus(.failedPrecondition) {
            _ = try await self.admin.publish(PublishRequest(advertiserID: "acme", version: 2, segments: wrong), options: self.asAdmin)
        }
        XCTAssertEqual(catalog.advertisers["acme"], 1, "the previous version keeps serving")
    }
}
