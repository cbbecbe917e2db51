import DataLake
import Foundation
@_spi(Testing) import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import TestSupport
import Synchronization
import XCTest

/// What an outside review found in ingest (issue 12): half-written files
/// going live, deleted files reviving older ones, ids that cannot be
/// served, links out of the lake.
final class IngestHardeningTests: XCTestCase {
    var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    func start(workers: Int = 1) async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        for i in 0..<workers { harness.startWorker(id: "w\(i)") }
    }

    func lines(_ keys: [Key16]) -> [UInt8] { Array(keys.map { ReferenceParser.hex($0) + "\n" }.joined().utf8) }

    func versions(_ advertiser: String) async throws -> [FileStatus] {
        var request = ListFilesRequest()
        request.advertiserID = advertiser
        return try await harness.adminClient.listFiles(request).files
    }

    /// A list truncated in place while it was being ingested is not queued
    /// again until it has been quiet for the settle time: the empty file in
    /// between never goes live, and the old members keep answering.
    func testAFileChangedDuringIngestWaitsToSettleBeforeItIsQueuedAgain() async throws {
        try await start(workers: 0)
        let old = ReferenceParser.randomKeys(300, seed: 1)
        harness.startWorker(id: "w")
        let v1 = try await harness.waitForFile(try await harness.submit(try harness.drop(lines(old), advertiser: "acme", name: "list.txt")).version)
        XCTAssertEqual(v1.state, .live)
        await harness.stopWorkers()

        let new = ReferenceParser.randomKeys(200, seed: 2)
        let path = try harness.drop(lines(new), advertiser: "acme", name: "list.txt")
        let v2 = try await harness.submit(path)
        try harness.drop([], advertiser: "acme", name: "list.txt") // truncated mid-write
        harness.startWorker(id: "w")
        let abandoned = try await harness.waitForFile(v2.version)
        XCTAssertEqual(abandoned.state, .superseded)
        // Publish-loop ticks come every 30 ms: several pass, nothing is queued.
        try await Task.sleep(for: .milliseconds(200))
        let meanwhile = try await versions("acme")
        XCTAssertEqual(meanwhile.map(\.version).max(), v2.version, "queued again before it settled: \(meanwhile.map(\.state))")
        XCTAssertEqual(harness.matchCatalog.current("acme")?.version, v1.version)
        let stillServed = try await harness.matched("acme", old)
        XCTAssertTrue(stillServed.allSatisfy { $0 }, "the old members still answer")

        // The writer finishes; once quiet for the settle time it is queued and served whole.
        try harness.drop(lines(new), advertiser: "acme", name: "list.txt")
        harness.advanceClock(by: 2)
        try await waitUntilAsync { try await self.versions("acme").contains { $0.version > v2.version && $0.state == .live } }
        let hits = try await harness.matched("acme", new)
        XCTAssertTrue(hits.allSatisfy { $0 })
    }

    /// A file rewritten after its blocks were read, before its version was
    /// published, is not published: what would go live is not the file.
    func testAVersionIsNotPublishedWhenItsFileChangedAfterItWasRead() async throws {
        try await start(workers: 0)
        let keys = ReferenceParser.randomKeys(100, seed: 3)
        let path = try harness.drop(lines(keys), advertiser: "late", name: "list.txt")
        // Held back: no match server answers the publish until the file has changed.
        harness.stopMatchServer()
        let submitted = try await harness.submit(path)
        harness.startWorker(id: "w")
        try await waitUntilAsync { try await self.harness.fileStatus(submitted.version)?.state == .publishing }
        try harness.drop(lines(ReferenceParser.randomKeys(100, seed: 4)), advertiser: "late", name: "list.txt")
        let ended = try await harness.waitForFile(submitted.version)
        XCTAssertEqual(ended.state, .superseded)
        XCTAssertTrue(ended.error.contains("changed after it was read"), ended.error)
    }

    /// Deleting an advertiser's newest file does not bring back an older
    /// one that was never served: a list is replaced only by a newer file.
    func testDeletingTheNewestFileDoesNotReviveAnOlderOne() async throws {
        try await start()
        let lake = harness.lakeRoot.appendingPathComponent("many")
        var newest: [Key16] = []
        for i in 0..<5 {
            newest = ReferenceParser.randomKeys(50, seed: UInt64(10 + i))
            try harness.drop(lines(newest), advertiser: "many", name: "list-\(i).txt")
        }
        harness.advanceClock(by: 2)
        let queued = try await harness.coordinator.scanLake()
        XCTAssertEqual(queued.map(\.path), ["many/list-4.txt"])
        let live = try await harness.waitForFile(queued[0].version)
        XCTAssertEqual(live.state, .live)

        try FileManager.default.removeItem(at: lake.appendingPathComponent("list-4.txt"))
        harness.advanceClock(by: 2)
        let after = try await harness.coordinator.scanLake()
        XCTAssertEqual(after.map(\.path), [], "an older file was queued after the newest was deleted")
        XCTAssertEqual(harness.matchCatalog.current("many")?.version, live.version)

        // A file dropped later still replaces the list.
        try harness.drop(lines(newest), advertiser: "many", name: "list-0-again.txt")
        harness.advanceClock(by: 2)
        let again = try await harness.coordinator.scanLake()
        XCTAssertEqual(again.map(\.path), ["many/list-0-again.txt"])
    }

    /// An advertiser id longer than segments can hold is refused at the
    /// door: by submit with INVALID_ARGUMENT, by the scan with a rejected
    /// entry in status, never parsed.
    func testAnAdvertiserIDTooLongIsRefusedBeforeAnyWork() async throws {
        try await start()
        let long = String(repeating: "a", count: 70)
        let path = try harness.drop(lines(ReferenceParser.randomKeys(10, seed: 5)), advertiser: long, name: "list.txt")
        do {
            _ = try await harness.submit(path)
            XCTFail("submitted")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument)
            XCTAssertTrue(error.message.contains("70 bytes long; at most 64"), error.message)
        }
        harness.advanceClock(by: 2)
        let scanned = try await harness.coordinator.scanLake()
        XCTAssertEqual(scanned.count, 0)
        let status = try await harness.adminClient.status(StatusRequest())
        let refused = try XCTUnwrap(status.files.first { $0.advertiserID == long })
        XCTAssertEqual(refused.state, .rejected)
        XCTAssertTrue(refused.error.contains("at most 64"), refused.error)
        XCTAssertEqual(status.tasksQueued + status.tasksLeased, 0)
        _ = try await harness.coordinator.scanLake()
        let entries = try await versions(long)
        XCTAssertEqual(entries.count, 1, "refused once, not at every scan")
    }

    /// A link in the lake to a file outside it is never read: not listed,
    /// refused by submit with a clear error. Links inside the lake are followed.
    func testLinksOutOfTheLakeAreNotFollowed() async throws {
        try await start()
        let outside = harness.root.appendingPathComponent("secret.txt")
        try Data(lines(ReferenceParser.randomKeys(5, seed: 6))).write(to: outside)
        let folder = harness.lakeRoot.appendingPathComponent("evil")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent("passwd").path, withDestinationPath: outside.path)
        try FileManager.default.createSymbolicLink(atPath: harness.lakeRoot.appendingPathComponent("outer").path,
                                                   withDestinationPath: harness.root.path)
        let inside = ReferenceParser.randomKeys(20, seed: 7)
        try harness.drop(lines(inside), advertiser: "good", name: "real.txt")
        try FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent("inner").path,
                                                   withDestinationPath: harness.lakeRoot.appendingPathComponent("good/real.txt").path)

        let lake = LocalFolderLake(root: harness.lakeRoot)
        let listed = try await lake.list(prefix: "", after: nil, limit: 100).map(\.path)
        XCTAssertEqual(listed, ["evil/inner", "good/real.txt"])
        do {
            _ = try await lake.read("evil/passwd", offset: 0, length: 10, ifMatch: nil)
            XCTFail("read a file outside the lake")
        } catch {
            guard case .outsideLake = error else { return XCTFail("\(error)") }
        }
        do {
            _ = try await harness.submit("evil/passwd")
            XCTFail("submitted a link out of the lake")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument)
            XCTAssertTrue(error.message.contains("outside the lake"), error.message)
        }
        let linked = try await harness.waitForFile(try await harness.submit("evil/inner").version)
        XCTAssertEqual(linked.state, .live)
        let served = try await harness.matched("evil", inside)
        XCTAssertTrue(served.allSatisfy { $0 })
    }
}

extension IngestHardeningTests {
    /// A live list whose segment rots on disk is found by the match
    /// server's scrub, reported by Status, and rebuilt from its lake file
    /// by the coordinator with no one touching the lake.
    func testADamagedLiveListIsReportedAndRebuiltFromItsFile() async throws {
        try await start()
        let keys = ReferenceParser.randomKeys(500, seed: 40)
        let v1 = try await harness.waitForFile(try await harness.submit(try harness.drop(lines(keys), advertiser: "rot", name: "list.txt")).version)
        XCTAssertEqual(v1.state, .live)
        let segment = try XCTUnwrap(harness.matchCatalog.current("rot")?.segments.first)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: segment.mapping.path))
        let end = segment.slice.map { $0.offset + $0.length } ?? bytes.count
        bytes[end - 1] ^= 0xFF // the segment's last key
        try bytes.write(to: URL(fileURLWithPath: segment.mapping.path))

        let found = await harness.matchCatalog.scrub(bytesPerSecond: 0)
        XCTAssertEqual(found, ["rot"])
        await harness.coordinator.reconcile()
        let during = try await harness.adminClient.status(StatusRequest())
        XCTAssertTrue(during.problems.contains { $0.contains("rot: the match server found version \(v1.version) damaged") },
                      "\(during.problems)")
        let old = try XCTUnwrap(during.files.first { $0.version == v1.version })
        XCTAssertEqual(old.state, .failed)
        XCTAssertTrue(old.error.contains("key checksum mismatch"), old.error)

        try await waitUntilAsync { try await self.versions("rot").contains { $0.version > v1.version && $0.state == .live } }
        let served = try await harness.matched("rot", keys)
        XCTAssertTrue(served.allSatisfy { $0 }, "the rebuilt list serves every key")
        let after = try await harness.adminClient.status(StatusRequest())
        XCTAssertEqual(after.problems, [], "the problem is cleared once the rebuilt version is live")
        await harness.coordinator.reconcile()
        let settled = try await versions("rot")
        XCTAssertEqual(settled.count, 2, "a served list is not rebuilt again")
    }

    /// A catalog that cannot be written (its disk is full) is named in
    /// Status, not only in the log, and the problem clears once writes work.
    func testACatalogThatCannotBeWrittenShowsInStatus() async throws {
        try await start(workers: 0)
        let catalog = harness.coordinator.catalog
        try catalog.execute("PRAGMA max_page_count = 1") // no page beyond those it has
        var path = ""
        var refused = false
        for i in 0..<200 where !refused {
            path = try harness.drop(lines(ReferenceParser.randomKeys(10, seed: 41)), advertiser: "full\(i)", name: "list.txt")
            do { _ = try await harness.submit(path) } catch { refused = true }
        }
        XCTAssertTrue(refused, "200 submissions fitted in a full catalog")
        let status = try await harness.adminClient.status(StatusRequest())
        XCTAssertTrue(status.problems.contains { $0.contains("cannot be written") && $0.contains("full") }, "\(status.problems)")
        try catalog.execute("PRAGMA max_page_count = 1000000")
        _ = try await harness.submit(path)
        let recovered = try await harness.adminClient.status(StatusRequest())
        XCTAssertFalse(recovered.problems.contains { $0.contains("cannot be written") }, "\(recovered.problems)")
    }
}

extension IngestHardeningTests {
    /// A temporary segment left by a worker killed mid-write is deleted once
    /// its version is live; the served segments stay.
    func testStrayFilesBesideALiveVersionsSegmentsAreCollected() async throws {
        try await start(workers: 0)
        let keys = ReferenceParser.randomKeys(300, seed: 50)
        let submitted = try await harness.submit(try harness.drop(lines(keys), advertiser: "gc", name: "list.txt"))
        let folder = harness.storeRoot.appendingPathComponent("segments/gc/\(submitted.version)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let stray = folder.appendingPathComponent("part-0-a1-deadbeef.seg.tmp-4242-17")
        try Data(repeating: 7, count: 100).write(to: stray)
        harness.startWorker(id: "w")
        let live = try await harness.waitForFile(submitted.version)
        XCTAssertEqual(live.state, .live)
        try await waitUntil { !FileManager.default.fileExists(atPath: stray.path) }
        let served = try XCTUnwrap(harness.matchCatalog.current("gc")).segments.map(\.mapping.path)
        XCTAssertFalse(served.isEmpty)
        for path in served { XCTAssertTrue(FileManager.default.fileExists(atPath: path), path) }
        let hits = try await harness.matched("gc", keys)
        XCTAssertTrue(hits.allSatisfy { $0 })
    }
}

extension IngestHardeningTests {
    /// A match server at its budget of memory maps refuses a version with
    /// RESOURCE_EXHAUSTED: the version stays pending (not failed), Status
    /// says why, and it goes live by itself once maps are freed, here by
    /// another advertiser's list shrinking to one read into memory.
    func testAVersionRefusedAtTheMapBudgetWaitsAndGoesLiveWhenMapsFree() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer(mapBudget: 1)
        try await harness.startCoordinator()
        harness.startWorker(id: "w")
        // 5,000 keys in 4 merges: one pack of about 100 KB, which is mapped.
        let a = try await harness.waitForFile(try await harness.submit(
            try harness.drop(lines(ReferenceParser.randomKeys(5_000, seed: 70)), advertiser: "a", name: "big.txt")).version)
        XCTAssertEqual(a.state, .live)
        XCTAssertEqual(harness.matchCatalog.memoryMaps, 1)

        let bKeys = ReferenceParser.randomKeys(5_000, seed: 71)
        let b = try await harness.submit(try harness.drop(lines(bKeys), advertiser: "b", name: "big.txt"))
        try await waitUntilAsync {
            try await self.harness.adminClient.status(StatusRequest()).problems.contains { $0.contains("memory map") }
        }
        let waiting = try await harness.fileStatus(b.version)
        XCTAssertEqual(waiting?.state, .publishing, "refused for a limit, not failed")
        XCTAssertNil(harness.matchCatalog.current("b"))

        // a's new list is small: read into memory, it frees a's map. (Much
        // smaller: a's own shrink guard lets it through without approval.)
        _ = try await harness.adminClient.setMaxShrink(SetMaxShrinkRequest(advertiserID: "a", maxShrink: 1))
        let small = try await harness.waitForFile(try await harness.submit(
            try harness.drop(lines(ReferenceParser.randomKeys(100, seed: 72)), advertiser: "a", name: "small.txt")).version)
        XCTAssertEqual(small.state, .live)
        let live = try await harness.waitForFile(b.version)
        XCTAssertEqual(live.state, .live)
        let hits = try await harness.matched("b", bKeys)
        XCTAssertTrue(hits.allSatisfy { $0 })
        XCTAssertEqual(harness.matchCatalog.memoryMaps, 1)
        try await waitUntilAsync { try await self.harness.adminClient.status(StatusRequest()).problems.isEmpty }
    }
}

/// The local store, except that making a pack durable fails while `failing` is set.
final class UnsyncableStore: SegmentStorage, @unchecked Sendable {
    let base: LocalSegmentStorage
    let failing = Mutex(true)
    let syncs = Mutex<[String]>([])

    init(root: URL) { base = LocalSegmentStorage(root: root) }

    func prepareWrite(_ path: String) throws -> String { try base.prepareWrite(path) }
    func commit(_ path: String) async throws { try await base.commit(path) }
    func localFile(_ path: String) async throws -> String { try await base.localFile(path) }
    func removeAll(under prefix: String) async throws { try await base.removeAll(under: prefix) }
    func list(under prefix: String) async throws -> [String] { try await base.list(under: prefix) }
    func remove(_ path: String) async throws { try await base.remove(path) }
    func reserveSlot(in path: String, capacity: Int) throws -> PackSlot? { try base.reserveSlot(in: path, capacity: capacity) }
    func makeDurable(_ path: String) async throws {
        if failing.withLock({ $0 }) { throw SegmentError(path, "fdatasync failed: Input/output error") }
        syncs.withLock { $0.append(path) }
        try await base.makeDurable(path)
    }
}

extension IngestHardeningTests {
    /// A version's pack is made durable before it is published: while that
    /// fails, the version waits (not failed) and Status says why.
    func testAPackIsMadeDurableBeforeItsVersionIsPublished() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        let store = UnsyncableStore(root: harness.storeRoot)
        try await harness.startMatchServer()
        try await harness.startCoordinator(store: store)
        harness.startWorker(id: "w")
        let keys = ReferenceParser.randomKeys(2_000, seed: 80)
        let submitted = try await harness.submit(try harness.drop(lines(keys), advertiser: "sync", name: "list.txt"))
        try await waitUntilAsync {
            try await self.harness.adminClient.status(StatusRequest()).problems.contains { $0.contains("cannot make segments durable") }
        }
        let waiting = try await harness.fileStatus(submitted.version)
        XCTAssertEqual(waiting?.state, .publishing)
        XCTAssertNil(harness.matchCatalog.current("sync"), "nothing is published before its pack is durable")
        store.failing.withLock { $0 = false }
        let live = try await harness.waitForFile(submitted.version, timeout: .seconds(30))
        XCTAssertEqual(live.state, .live)
        XCTAssertEqual(store.syncs.withLock { $0 }.first, "segments/sync/\(submitted.version)/merged.pack")
    }
}

/// Status and ListFiles at scale: summarised and paged, never the whole catalog.
final class StatusPagingTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
    }

    func testStatusIsSummarisedAndListFilesPagesThroughEveryFile() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let catalog = harness.coordinator.catalog
        for i in 0..<250 {
            _ = try catalog.submit(LakeObject(path: "adv\(i)/list.txt", size: 10, etag: "e", modified: Date(timeIntervalSince1970: 0)), now: 0)
        }
        var request = StatusRequest()
        request.limit = 30
        let status = try await harness.adminClient.status(request)
        XCTAssertEqual(status.files.count, 30)
        XCTAssertEqual(status.files.map(\.version), Array(1...30), "the oldest in flight first")
        XCTAssertEqual(status.filesInFlight, 250)
        XCTAssertEqual(status.filesByState["queued"], 250)
        let defaulted = try await harness.adminClient.status(StatusRequest())
        XCTAssertEqual(defaulted.files.count, 50)

        var seen: [UInt64] = []
        var page = ListFilesRequest()
        page.limit = 100
        var pages = 0
        repeat {
            let response = try await harness.adminClient.listFiles(page)
            seen += response.files.map(\.version)
            page.beforeVersion = response.nextBeforeVersion
            pages += 1
        } while page.beforeVersion != 0 && pages < 10
        XCTAssertEqual(pages, 3)
        XCTAssertEqual(seen, Array((1...250).reversed()), "every file once, newest first")
        page = ListFilesRequest()
        page.limit = 1_000_000
        let capped = try await harness.adminClient.listFiles(page)
        XCTAssertEqual(capped.files.count, 250)
        XCTAssertEqual(capped.nextBeforeVersion, 0)
    }
}

/// Scanning many advertisers: pages of the lake in one pass, and no catalog
/// work for folders that did not change.
final class ScanCostTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
    }

    func testLakePagesFollowPathOrderAcrossFolders() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-lake-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        // "a/" sorts after "a-b/" and "a.c/": folder order must follow path order.
        for (folder, files) in [("a", ["1", "2", "3"]), ("a-b", ["x"]), ("a.c", ["y", "z"]), ("ab", ["q"]), ("b", ["r"])] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
            for file in files { try Data("x".utf8).write(to: root.appendingPathComponent("\(folder)/\(file)")) }
        }
        let lake = LocalFolderLake(root: root)
        let all = try await lake.list(prefix: "", after: nil, limit: 100).map(\.path)
        XCTAssertEqual(all, all.sorted())
        XCTAssertEqual(all.count, 8)
        for size in 1...4 {
            var paged: [String] = []
            var after: String?
            while true {
                let page = try await lake.list(prefix: "", after: after, limit: size).map(\.path)
                paged += page
                guard page.count == size else { break }
                after = page.last
            }
            XCTAssertEqual(paged, all, "pages of \(size)")
        }
        let prefixed = try await lake.list(prefix: "a.c/", after: nil, limit: 100).map(\.path)
        XCTAssertEqual(prefixed, ["a.c/y", "a.c/z"])
    }

    /// 2,000 advertiser folders: the first scan looks each up once; a scan
    /// of the unchanged lake looks up none; a changed folder is looked up again.
    func testAScanOfAnUnchangedLakeMakesNoCatalogLookups() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        for i in 0..<2_000 {
            try harness.drop(Array("0123456789abcdef0123456789abcdef\n".utf8), advertiser: String(format: "t%05d", i), name: "list.txt")
        }
        harness.advanceClock(by: 2)
        _ = try await harness.coordinator.scanLake(report: false)
        XCTAssertEqual(harness.coordinator.scanLookupCount, 2_000)
        let status = try await harness.adminClient.status(StatusRequest())
        XCTAssertEqual(status.filesInFlight, 2_000)
        _ = try await harness.coordinator.scanLake(report: false)
        XCTAssertEqual(harness.coordinator.scanLookupCount, 2_000, "an unchanged lake was looked up again")
        try harness.drop(Array("ffffffffffffffffffffffffffffffff\n".utf8), advertiser: "t00007", name: "list.txt")
        harness.advanceClock(by: 2)
        _ = try await harness.coordinator.scanLake(report: false)
        XCTAssertEqual(harness.coordinator.scanLookupCount, 2_001)
    }
}

extension ScanCostTests {
    /// Background scans of a large lake cost at most 2% of a core: the
    /// pause after a scan is the interval, or fifty times the scan's time.
    func testScanPauseBoundsItsShareOfACore() {
        XCTAssertEqual(IngestPolicy.scanPause(after: .milliseconds(10), interval: .seconds(2)), .seconds(2))
        XCTAssertEqual(IngestPolicy.scanPause(after: .milliseconds(150), interval: .seconds(2)), .milliseconds(7500))
        XCTAssertEqual(IngestPolicy.scanPause(after: .seconds(20), interval: .seconds(2)), .seconds(60), "a new file is seen within a minute")
    }
}
