import DataLake
import Foundation
import IngestCoordinator
import Logging
import MatchServer
import RosterAPI
import RosterRPC
import SegmentStore
import TestSupport
import XCTest

/// Delta files end to end: `+`/`-` lines applied on top of the live list as
/// overlays (the base never re-read), in order of arrival, through
/// rollbacks, restarts and compaction, against an oracle.
final class DeltaTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func start(policy: IngestPolicy = IngestHarness.testPolicy(), keepRetired: Int = 0, workers: Int = 2) async throws {
        harness = try IngestHarness(policy: policy)
        try await harness.startMatchServer()
        try await harness.startCoordinator(keepRetiredVersions: keepRetired)
        for i in 0..<workers { harness.startWorker(id: "w\(i)") }
    }

    /// A policy that never compacts, unless a test says otherwise.
    static func policy(maxOverlays: Int = 100, compactionShare: Double = 100) -> IngestPolicy {
        var policy = IngestHarness.testPolicy()
        policy.maxOverlays = maxOverlays
        policy.compactionShare = compactionShare
        policy.maxShrink = 1
        return policy
    }

    static func list(_ keys: some Sequence<Key16>) -> [UInt8] {
        Array(keys.map { ReferenceParser.hex($0) + "\n" }.joined().utf8)
    }

    /// A delta's text: its changes in order, `true` for `+`.
    static func delta(_ changes: [(Key16, Bool)], header: String? = "op_md5") -> [UInt8] {
        var text = header.map { $0 + "\n" } ?? ""
        for (i, (key, adds)) in changes.enumerated() {
            let line = (adds ? "+" : "-") + ReferenceParser.hex(key, uppercase: i % 3 == 0)
            text += i % 4 == 1 ? "  \(line)\r\n" : "\(line)\n"
        }
        return Array(text.utf8)
    }

    /// What the list is after `changes`, the last change of a key winning.
    static func apply(_ changes: [(Key16, Bool)], to list: Set<Key16>) -> Set<Key16> {
        var out = list
        for (key, adds) in changes {
            if adds { out.insert(key) } else { out.remove(key) }
        }
        return out
    }

    @discardableResult
    private func ingest(_ contents: [UInt8], advertiser: String = "acme", name: String) async throws -> FileStatus {
        let submitted = try await harness.submit(try harness.drop(contents, advertiser: advertiser, name: name))
        return try await harness.waitForFile(submitted.version)
    }

    /// Every key of the advertiser's served list, by Export, in pages.
    private func export(_ advertiser: String = "acme") async throws -> (keys: [Key16], version: UInt64) {
        let admin = MatchAdmin.Client(transport: harness.matchLink)
        var keys: [Key16] = []
        var request = ExportRequest(advertiserID: advertiser, limit: 97)
        var version: UInt64 = 0
        while true {
            let page = try await admin.export(request)
            version = page.version
            request.version = page.version
            keys += stride(from: 0, to: page.hashes.count, by: 16).map { Key16(bytes: page.hashes[$0..<$0 + 16])! }
            guard !page.nextAfter.isEmpty else { return (keys, version) }
            request.after = page.nextAfter
        }
    }

    /// The served list answers exactly `expected` over `asked`, by MatchMany,
    /// Match and Export.
    private func assertServes(_ expected: Set<Key16>, asking asked: [Key16], version: UInt64,
                              file: StaticString = #filePath, line: UInt = #line) async throws {
        let answers = try await harness.matched("acme", asked)
        let wrong = zip(asked, answers).filter { expected.contains($0.0) != $0.1 }
        XCTAssertTrue(wrong.isEmpty, "\(wrong.count) of \(asked.count) keys answered wrongly", file: file, line: line)
        for key in asked.prefix(40) {
            let answer = try await harness.matchClient.match(MatchRequest(advertiserID: "acme", hash: Data(key.bytes)))
            XCTAssertEqual(answer.matched, expected.contains(key), file: file, line: line)
            XCTAssertEqual(answer.version, version, file: file, line: line)
        }
        let exported = try await export()
        XCTAssertEqual(exported.version, version, file: file, line: line)
        XCTAssertEqual(exported.keys, expected.sorted(), "the export is the list exactly", file: file, line: line)
    }

    func testDeltasAddAndRemoveOnTopOfTheLiveListInOrderOfArrival() async throws {
        try await start(policy: Self.policy())
        let base = ReferenceParser.randomKeys(1200, seed: 1)
        let fresh = ReferenceParser.randomKeys(300, seed: 2)
        let strangers = ReferenceParser.randomKeys(200, seed: 3)
        let list = try await ingest(Self.list(base), name: "members.txt")
        XCTAssertEqual(list.state, .live, list.error)
        XCTAssertEqual(list.kind, .list)
        var oracle = Set(base)
        let asked = base + fresh + strangers

        // Adds, removes, a remove then an add (a member at the end), an add
        // then a remove (not one), a member added again, a stranger removed.
        var changes: [(Key16, Bool)] = fresh.prefix(100).map { ($0, true) } + base.prefix(150).map { ($0, false) }
        changes += base.prefix(10).map { ($0, true) }
        changes += fresh.suffix(10).map { ($0, true) } + fresh.suffix(10).map { ($0, false) }
        changes += base.suffix(20).map { ($0, true) } + strangers.prefix(20).map { ($0, false) }
        let first = try await ingest(Self.delta(changes), name: "2026-12-06.delta")
        XCTAssertEqual(first.state, .live, first.error)
        XCTAssertEqual(first.kind, .delta)
        XCTAssertEqual(first.baseVersion, list.version, "applied on the live list")
        XCTAssertEqual(first.invalidLines, 0)
        XCTAssertEqual(first.lines, UInt64(changes.count + 1), "every line counted once, not once per overlay segment")
        let last = Dictionary(changes, uniquingKeysWith: { $1 })
        let (adds, removes) = (last.values.filter { $0 }.count, last.values.filter { !$0 }.count)
        XCTAssertEqual(Int(first.distinctKeys), 1200 + adds - removes, "estimated as the base's keys plus adds less removes")
        oracle = Self.apply(changes, to: oracle)
        try await assertServes(oracle, asking: asked, version: first.version)
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.count, 1)

        // Two deltas dropped between two scans: both queued, oldest first,
        // the second on top of the first.
        let second: [(Key16, Bool)] = fresh.dropFirst(100).prefix(50).map { ($0, true) } + fresh.prefix(30).map { ($0, false) }
        let third: [(Key16, Bool)] = fresh.prefix(10).map { ($0, true) } + base.dropFirst(200).prefix(40).map { ($0, false) }
        try harness.drop(Self.delta(second), advertiser: "acme", name: "2026-12-07.delta")
        try await Task.sleep(for: .milliseconds(20))
        try harness.drop(Self.delta(third, header: nil), advertiser: "acme", name: "2026-12-08.delta")
        harness.advanceClock(by: 60)
        let scan = try await harness.adminClient.scan(ScanRequest())
        XCTAssertEqual(scan.queued.map(\.path), ["acme/2026-12-07.delta", "acme/2026-12-08.delta"])
        guard scan.queued.count == 2 else { return }
        let secondStatus = try await harness.waitForFile(scan.queued[0].version)
        let thirdStatus = try await harness.waitForFile(scan.queued[1].version)
        XCTAssertEqual(thirdStatus.state, .live, thirdStatus.error)
        XCTAssertEqual(secondStatus.state, .retired)
        XCTAssertEqual(secondStatus.baseVersion, first.version)
        XCTAssertEqual(thirdStatus.baseVersion, secondStatus.version)
        oracle = Self.apply(third, to: Self.apply(second, to: oracle))
        try await assertServes(oracle, asking: asked, version: thirdStatus.version)
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.map(\.version),
                       [first.version, secondStatus.version, thirdStatus.version])

        // Garbage collection keeps every segment the live chain names:
        // the retired base and deltas, whatever --keep-versions says.
        await harness.coordinator.collectGarbage()
        try await assertServes(oracle, asking: asked, version: thirdStatus.version)

        // A restart serves the same layers from the manifest.
        try await harness.startMatchServer()
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.count, 3)
        try await assertServes(oracle, asking: asked, version: thirdStatus.version)

        // A full file replaces everything, overlays included.
        let replaced = try await ingest(Self.list(fresh.prefix(70)), name: "members-2.txt")
        XCTAssertEqual(replaced.state, .live, replaced.error)
        try await assertServes(Set(fresh.prefix(70)), asking: asked, version: replaced.version)
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.count, 0)
    }

    /// Past the policy's overlays, the coordinator compacts the layers into
    /// one new base from the segments alone: the same members, no overlays,
    /// and later deltas go on top of it. Garbage collection then removes
    /// the compacted layers' segments.
    func testOverlaysPastTheLimitAreCompactedIntoANewBase() async throws {
        try await start(policy: Self.policy(maxOverlays: 2))
        let base = ReferenceParser.randomKeys(900, seed: 11)
        let fresh = ReferenceParser.randomKeys(300, seed: 12)
        let asked = base + fresh + ReferenceParser.randomKeys(100, seed: 13)
        let list = try await ingest(Self.list(base), name: "members.txt")
        var oracle = Set(base)
        var deltas: [FileStatus] = []
        for i in 0..<3 {
            let changes: [(Key16, Bool)] = fresh[(i * 50)..<(i * 50 + 50)].map { ($0, true) } + base[(i * 30)..<(i * 30 + 30)].map { ($0, false) }
            oracle = Self.apply(changes, to: oracle)
            deltas.append(try await ingest(Self.delta(changes), name: "d\(i).delta"))
            XCTAssertEqual(deltas.last?.state, .live, deltas.last?.error ?? "")
        }
        // The third delta made three overlays, one more than allowed: a
        // compaction version follows it.
        var compaction: FileStatus?
        for _ in 0..<2_000 where compaction?.state != .live {
            compaction = try await harness.adminClient.listFiles(ListFilesRequest(advertiserID: "acme", limit: 1)).files.first
            if compaction?.kind != .compaction { compaction = nil }
            try await Task.sleep(for: .milliseconds(10))
        }
        let compacted = try XCTUnwrap(compaction, "a compaction went live")
        XCTAssertEqual(compacted.baseVersion, deltas[2].version, "it compacts the live delta's layers")
        XCTAssertEqual(Int(compacted.distinctKeys), oracle.count, "and counts the members exactly")
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.count, 0)
        try await assertServes(oracle, asking: asked, version: compacted.version)

        // The compacted layers are collected (--keep-versions 0); the new
        // base serves on, and a delta goes on top of it.
        // Each pass frees one layer (a base is kept while a delta on it is).
        for _ in 0..<5 { await harness.coordinator.collectGarbage() }
        for version in [list.version] + deltas.map(\.version) {
            let folder = harness.storeRoot.appendingPathComponent("segments/acme/\(version)")
            XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [], [], "version \(version)'s segments are collected")
        }
        let after: [(Key16, Bool)] = base.suffix(10).map { ($0, false) } + fresh.suffix(10).map { ($0, true) }
        let next = try await ingest(Self.delta(after), name: "d9.delta")
        XCTAssertEqual(next.baseVersion, compacted.version)
        try await assertServes(Self.apply(after, to: oracle), asking: asked, version: next.version)
    }

    /// A delta goes on whatever the versions that arrived before it leave
    /// live: a list file in flight when it arrives goes live first. A list
    /// file that arrives after a delta still in flight replaces it.
    func testADeltaRacingAListFileKeepsTheOrderOfArrival() async throws {
        try await start(policy: Self.policy(), workers: 0)
        let first = ReferenceParser.randomKeys(500, seed: 21), second = ReferenceParser.randomKeys(500, seed: 22)
        let asked = first + second
        // No workers yet: the list, then the delta, are queued together.
        let listVersion = try await harness.submit(try harness.drop(Self.list(first), advertiser: "acme", name: "a.txt")).version
        let changes: [(Key16, Bool)] = first.prefix(50).map { ($0, false) } + second.prefix(50).map { ($0, true) }
        let deltaVersion = try await harness.submit(try harness.drop(Self.delta(changes), advertiser: "acme", name: "b.delta")).version
        for i in 0..<2 { harness.startWorker(id: "w\(i)") }
        let delta = try await harness.waitForFile(deltaVersion)
        XCTAssertEqual(delta.state, .live, delta.error)
        XCTAssertEqual(delta.baseVersion, listVersion, "the delta waited for the list that arrived before it")
        try await assertServes(Self.apply(changes, to: Set(first)), asking: asked, version: deltaVersion)

        // A delta, then a list file, queued together: the list replaces
        // everything, the delta included.
        await harness.stopWorkers()
        let late = try await harness.submit(try harness.drop(Self.delta(second.suffix(20).map { ($0, true) }), advertiser: "acme", name: "c.delta")).version
        let full = try await harness.submit(try harness.drop(Self.list(second), advertiser: "acme", name: "d.txt")).version
        for i in 0..<2 { harness.startWorker(id: "v\(i)") }
        let replaced = try await harness.waitForFile(full)
        XCTAssertEqual(replaced.state, .live, replaced.error)
        let superseded = try await harness.waitForFile(late)
        XCTAssertEqual(superseded.state, .superseded)
        try await assertServes(Set(second), asking: asked, version: full)
    }

    /// A rollback serves an earlier version, and a delta goes on top of
    /// the version rolled back to; a delta version can be rolled back to
    /// (its base's segments kept with it).
    func testDeltasAndRollbacks() async throws {
        try await start(policy: Self.policy(), keepRetired: 3)
        let a = ReferenceParser.randomKeys(400, seed: 31), b = ReferenceParser.randomKeys(400, seed: 32)
        let asked = a + b
        let listA = try await ingest(Self.list(a), name: "a.txt")
        let listB = try await ingest(Self.list(b), name: "b.txt")
        XCTAssertEqual(listB.state, .live)
        _ = try await harness.adminClient.rollback(RollbackRequest(advertiserID: "acme", version: listA.version))
        try await assertServes(Set(a), asking: asked, version: listA.version)

        let changes: [(Key16, Bool)] = a.prefix(40).map { ($0, false) } + b.prefix(40).map { ($0, true) }
        let delta = try await ingest(Self.delta(changes), name: "c.delta")
        XCTAssertEqual(delta.baseVersion, listA.version, "on the version rolled back to, not the newest file")
        let onA = Self.apply(changes, to: Set(a))
        try await assertServes(onA, asking: asked, version: delta.version)

        // Back to B, then to the delta version again: its overlay and its base serve.
        _ = try await harness.adminClient.rollback(RollbackRequest(advertiserID: "acme", version: listB.version))
        try await assertServes(Set(b), asking: asked, version: listB.version)
        await harness.coordinator.collectGarbage()
        _ = try await harness.adminClient.rollback(RollbackRequest(advertiserID: "acme", version: delta.version))
        try await assertServes(onA, asking: asked, version: delta.version)
    }

    /// A list held by the shrink guard never holds a delta back: a newer
    /// delta supersedes it, as any newer file would, and goes on the list
    /// that serves.
    func testADeltaSupersedesAHeldList() async throws {
        try await start()
        let keys = ReferenceParser.randomKeys(500, seed: 61)
        let list = try await ingest(Self.list(keys), name: "a.txt")
        let held = try await ingest(Self.list(keys.prefix(10)), name: "b.txt")
        XCTAssertEqual(held.state, .held)
        let changes: [(Key16, Bool)] = [(keys[0], false)] + ReferenceParser.randomKeys(3, seed: 62).map { ($0, true) }
        let delta = try await ingest(Self.delta(changes), name: "c.delta")
        XCTAssertEqual(delta.state, .live, delta.error)
        XCTAssertEqual(delta.baseVersion, list.version)
        let superseded = try await harness.fileStatus(held.version)
        XCTAssertEqual(superseded?.state, .superseded)
        try await assertServes(Self.apply(changes, to: Set(keys)), asking: keys + changes.map(\.0), version: delta.version)
    }

    /// A delta with no list under it makes one (compacted at once into a
    /// plain list); a delta with too many bad lines is rejected, one too
    /// large refused with advice, one of another hash type fails: the live
    /// list serves on through each.
    func testDeltasOnNoListAndBadDeltas() async throws {
        var policy = Self.policy()
        policy.maxDeltaBytes = 4_000
        try await start(policy: policy)
        let keys = ReferenceParser.randomKeys(60, seed: 41)
        let made = try await ingest(Self.delta(keys.map { ($0, true) }), name: "a.delta")
        XCTAssertEqual(made.state, .live, made.error)
        XCTAssertEqual(made.baseVersion, 0, "on no list")
        var compaction: FileStatus?
        for _ in 0..<2_000 where compaction?.state != .live {
            compaction = try await harness.adminClient.listFiles(ListFilesRequest(advertiserID: "acme", limit: 1)).files.first
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(compaction?.kind, .compaction)
        let live = try XCTUnwrap(compaction).version
        try await assertServes(Set(keys), asking: keys + ReferenceParser.randomKeys(20, seed: 42), version: live)

        var bad = Self.delta(keys.prefix(10).map { ($0, false) })
        bad += Array("nonsense\n+xyz\n".utf8)
        let rejected = try await ingest(bad, name: "b.delta")
        XCTAssertEqual(rejected.state, .rejected)
        XCTAssertTrue(rejected.error.contains("2 of 13 lines are invalid"), rejected.error)

        let large = try await ingest(Self.delta(ReferenceParser.randomKeys(200, seed: 43).map { ($0, true) }), name: "c.delta")
        XCTAssertEqual(large.state, .rejected)
        XCTAssertTrue(large.error.contains("over the limit of 4000 bytes for deltas: drop the whole list as a new file instead"), large.error)

        let sha = Array(keys.prefix(5).map { "-" + ReferenceParser.hex($0) + ReferenceParser.hex($0) + "\n" }.joined().utf8)
        let wrongType = try await ingest(sha, name: "d.delta")
        XCTAssertEqual(wrongType.state, .failed)
        XCTAssertEqual(wrongType.hashType, .sha256)
        XCTAssertTrue(wrongType.error.contains("a delta of SHA-256 hashes (version \(wrongType.version)) cannot change a list of MD5 hashes"), wrongType.error)
        try await assertServes(Set(keys), asking: keys, version: live)
    }

    /// A compaction never holds a delta back: a delta dropped while one
    /// runs goes live at once on the live version, and the compaction, once
    /// done, is applied beneath it (the same version number, one overlay
    /// instead of three), after which the compacted layers are collected.
    func testADeltaDuringACompactionGoesLiveAtOnceAndTheCompactionGoesBeneathIt() async throws {
        harness = try IngestHarness(policy: Self.policy(maxOverlays: 1))
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        // A compaction's segment reads (`localFile`) wait at the gate.
        let gate = Gate()
        let gated = InterceptingStore(inner: LocalSegmentStorage(root: harness.storeRoot), beforeLocalFile: { _ in try await gate.pass() })
        for i in 0..<2 { harness.startWorker(id: "w\(i)", store: gated) }
        let base = ReferenceParser.randomKeys(600, seed: 51), fresh = ReferenceParser.randomKeys(200, seed: 52)
        let asked = base + fresh
        _ = try await ingest(Self.list(base), name: "members.txt")
        var oracle = Set(base)
        var deltas: [FileStatus] = []
        for i in 0..<2 {
            let changes: [(Key16, Bool)] = fresh[(i * 40)..<(i * 40 + 40)].map { ($0, true) } + base[(i * 20)..<(i * 20 + 20)].map { ($0, false) }
            oracle = Self.apply(changes, to: oracle)
            deltas.append(try await ingest(Self.delta(changes), name: "d\(i).delta"))
        }
        // Two overlays, one more than allowed: a compaction started, and is
        // held at its first read of a segment.
        try await eventually { gate.waiting }
        let changes: [(Key16, Bool)] = fresh.suffix(30).map { ($0, true) } + base.suffix(30).map { ($0, false) }
        oracle = Self.apply(changes, to: oracle)
        let third = try await ingest(Self.delta(changes), name: "d2.delta")
        XCTAssertEqual(third.state, .live, third.error)
        XCTAssertEqual(third.baseVersion, deltas[1].version, "on the live delta, not after the compaction")
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.count, 3)
        try await assertServes(oracle, asking: asked, version: third.version)

        gate.open()
        try await eventually { try await self.harness.fileStatus(third.version)?.baseVersion != deltas[1].version }
        let compaction = try await harness.adminClient.listFiles(ListFilesRequest(advertiserID: "acme")).files.first { $0.kind == .compaction }
        XCTAssertEqual(compaction?.state, .retired, "it serves as the base beneath the live delta")
        XCTAssertEqual(compaction?.baseVersion, deltas[1].version, "it compacted the layers up to the second delta")
        let rebased = try await harness.fileStatus(third.version)
        XCTAssertEqual(rebased?.baseVersion, compaction?.version)
        XCTAssertEqual(harness.matchCatalog.current("acme")?.layers.overlays.map(\.version), [third.version], "one overlay left")
        try await assertServes(oracle, asking: asked, version: third.version)

        for _ in 0..<5 { await harness.coordinator.collectGarbage() }
        for version in deltas.map(\.version) {
            let folder = harness.storeRoot.appendingPathComponent("segments/acme/\(version)")
            XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [], [], "version \(version)'s segments are collected")
        }
        try await harness.startMatchServer()
        try await assertServes(oracle, asking: asked, version: third.version)
    }

    private func eventually(_ condition: @escaping () async throws -> Bool) async throws {
        for _ in 0..<2_000 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTFail("timed out")
    }
}

/// A gate a test opens: calls wait at it until then.
final class Gate: @unchecked Sendable {
    private let lock = NSLock()
    private var isOpen = false
    private var entered = false

    /// Whether a call is waiting at the gate.
    var waiting: Bool { lock.withLock { entered && !isOpen } }
    func open() { lock.withLock { isOpen = true } }

    func pass() async throws {
        lock.withLock { entered = true }
        while !lock.withLock({ isOpen }) { try await Task.sleep(for: .milliseconds(5)) }
    }
}
