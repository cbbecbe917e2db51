import DataLake
import Foundation
import HashParsing
@_spi(Testing) import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import Synchronization
import TestSupport
import XCTest

/// Faults that say nothing about a file — a coordinator that cannot take a
/// report for a while, a lake or store that cannot be reached — are waited
/// out: no lease expires for them and no attempt is spent on them.
final class IngestOutageTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func lines(_ keys: [Key16]) -> [UInt8] { Array(keys.map { ReferenceParser.hex($0) + "\n" }.joined().utf8) }

    /// The coordinator's link as a worker sees it, with reports refused
    /// (as a standby refuses them, naming another leader) while `refusing`.
    final class RefusingLink: RPCClientTransport, Sendable {
        let inner: IngestHarness.Link
        let refusing = Mutex(true)
        let refusals = Atomic<Int>(0)

        init(_ inner: IngestHarness.Link) { self.inner = inner }

        func unary<Request: ProtoMessage, Response: ProtoMessage>(
            _ method: RPCMethodDescriptor, request: Request, options: CallOptions
        ) async throws -> Response {
            if method == TaskQueue.Method.completeTask, refusing.withLock({ $0 }) {
                refusals.add(1, ordering: .relaxed)
                throw RPCError(.unavailable, "this coordinator is a standby; the leader is 10.0.0.9:7400")
            }
            return try await inner.unary(method, request: request, options: options)
        }
    }

    /// A report refused for two seconds — four times as long as a worker
    /// used to keep trying — is sent again until it is taken, well within
    /// its five-second lease: the file goes live and no lease expires.
    func testAReportIsSentAgainUntilALeaderTakesItWithinItsLease() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy(blockSize: 1 << 20, lease: 5))
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let link = RefusingLink(harness.coordinatorLink)
        harness.startWorker(id: "w", transport: link)
        let keys = ReferenceParser.randomKeys(200, seed: 2901)
        let submitted = try await harness.submit(try harness.drop(lines(keys), advertiser: "acme", name: "list.txt"))
        try await waitUntilAsync { link.refusals.load(ordering: .relaxed) >= 1 }
        let refusedAt = ContinuousClock.now
        try await Task.sleep(for: .seconds(2))
        link.refusing.withLock { $0 = false }
        let status = try await harness.waitForFile(submitted.version)
        XCTAssertEqual(status.state, .live)
        XCTAssertLessThan(ContinuousClock.now - refusedAt, .seconds(4), "live once a report was taken, not after the lease ran out")
        XCTAssertGreaterThan(link.refusals.load(ordering: .relaxed), 5, "the report was tried again for the whole two seconds")
        XCTAssertEqual(try harness.coordinator.catalog.expiredAttempts(), 0, "no lease expired: no worker died")
        let served = try await harness.matched("acme", keys)
        XCTAssertTrue(served.allSatisfy { $0 })
    }

    struct StoreDown: OutageError {
        var isTransient: Bool { true }
    }

    /// A lake and a segment store that cannot be reached while `down`, as
    /// an object store is during an outage.
    final class Outage: @unchecked Sendable {
        let lakeDown = Mutex(true)
        let storeDown = Mutex(false)
        let refusals = Atomic<Int>(0)
        let storeRefusals = Atomic<Int>(0)

        func check(_ path: String) throws(LakeError) {
            if lakeDown.withLock({ $0 }) {
                refusals.add(1, ordering: .relaxed)
                throw .unavailable(path: path, reason: "connection refused (errno: 111)")
            }
        }
    }

    struct OutageLake: DataLake {
        let inner: LocalFolderLake
        let outage: Outage

        func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject] {
            try await inner.list(prefix: prefix, after: after, limit: limit)
        }
        func head(_ path: String) async throws(LakeError) -> LakeObject { try await inner.head(path) }
        func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8] {
            try outage.check(path)
            return try await inner.read(path, offset: offset, length: length, ifMatch: etag)
        }
        func read(_ path: String, offset: Int64, into buffer: UnsafeMutableRawBufferPointer, ifMatch etag: String?) async throws(LakeError) -> Int {
            try outage.check(path)
            return try await inner.read(path, offset: offset, into: buffer, ifMatch: etag)
        }
    }

    /// With one attempt allowed per task, a lake and store that cannot be
    /// reached for a while fail nothing: the worker waits the outage out
    /// holding its leases, and the version goes live when they return.
    func testAnOutageOfTheLakeAndStoreSpendsNoAttempt() async throws {
        var policy = IngestHarness.testPolicy(blockSize: 1024, lease: 5)
        policy.maxAttempts = 1
        harness = try IngestHarness(policy: policy)
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let outage = Outage()
        harness.startWorker(id: "w", transport: harness.coordinatorLink,
                            lake: OutageLake(inner: LocalFolderLake(root: harness.lakeRoot), outage: outage),
                            store: InterceptingStore(inner: LocalSegmentStorage(root: harness.storeRoot), beforeCommit: { _ in
                                if outage.storeDown.withLock({ $0 }) {
                                    outage.storeRefusals.add(1, ordering: .relaxed)
                                    throw StoreDown()
                                }
                            }))
        let keys = ReferenceParser.randomKeys(300, seed: 2902)
        let submitted = try await harness.submit(try harness.drop(lines(keys), advertiser: "acme", name: "list.txt"))
        // First the lake cannot be read...
        try await waitUntilAsync { outage.refusals.load(ordering: .relaxed) >= 3 }
        // ...then the store cannot take what was parsed.
        outage.storeDown.withLock { $0 = true }
        outage.lakeDown.withLock { $0 = false }
        try await waitUntilAsync { outage.storeRefusals.load(ordering: .relaxed) >= 3 }
        let during = try await harness.fileStatus(submitted.version)
        XCTAssertNotEqual(during?.state, .failed, "an outage is not a bad file")
        outage.storeDown.withLock { $0 = false }
        let status = try await harness.waitForFile(submitted.version, timeout: .seconds(30))
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(try harness.coordinator.catalog.expiredAttempts(), 0)
        let served = try await harness.matched("acme", keys)
        XCTAssertTrue(served.allSatisfy { $0 })
    }

    /// A lake whose listing is slow (very many folders, a slow object store).
    final class SlowListingLake: DataLake {
        let inner: LocalFolderLake
        let listings = Atomic<Int>(0)

        init(inner: LocalFolderLake) { self.inner = inner }

        func list(prefix: String, after: String?, limit: Int) async throws(LakeError) -> [LakeObject] {
            listings.add(1, ordering: .relaxed)
            try? await Task.sleep(for: .milliseconds(600))
            return try await inner.list(prefix: prefix, after: after, limit: limit)
        }
        func head(_ path: String) async throws(LakeError) -> LakeObject { try await inner.head(path) }
        func read(_ path: String, offset: Int64, length: Int, ifMatch etag: String?) async throws(LakeError) -> [UInt8] {
            try await inner.read(path, offset: offset, length: length, ifMatch: etag)
        }
    }

    /// A scan longer than the call may wait answers in time with its
    /// progress and goes on in the background; a second Scan joins it
    /// rather than starting another, and the file is queued once.
    func testAScanLongerThanItsCallAnswersWithProgressAndFinishesInTheBackground() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        let lake = SlowListingLake(inner: LocalFolderLake(root: harness.lakeRoot))
        try await harness.startCoordinator(lake: lake, scanAnswerWithin: .milliseconds(100))
        _ = try harness.drop(lines(ReferenceParser.randomKeys(20, seed: 2903)), advertiser: "acme", name: "list.txt")
        try await Task.sleep(for: .milliseconds(1100)) // the file settles
        let started = ContinuousClock.now
        let first = try await harness.adminClient.scan(ScanRequest(), options: harness.callOptions)
        XCTAssertLessThan(ContinuousClock.now - started, .milliseconds(500), "answered within its bound, not after the listing")
        XCTAssertTrue(first.inProgress)
        XCTAssertEqual(first.queued, [])
        let second = try await harness.adminClient.scan(ScanRequest(), options: harness.callOptions)
        XCTAssertTrue(second.inProgress, "joined the running scan")
        XCTAssertEqual(lake.listings.load(ordering: .relaxed), 1, "one scan, not two")
        try await waitUntilAsync { try await self.harness.adminClient.listFiles(ListFilesRequest()).files.count == 1 }
        XCTAssertEqual(lake.listings.load(ordering: .relaxed), 1, "the background scan queued it")
        let files = try await harness.adminClient.listFiles(ListFilesRequest()).files
        XCTAssertEqual(files.count, 1, "queued once")
    }
}
