import Foundation
import IngestCoordinator
import RosterAPI
import RosterRPC
import SegmentStore
import SQLite
import TestSupport
import XCTest

/// Workers that die, coordinators that are killed, tasks that keep failing.
final class IngestFaultTests: XCTestCase {
    private var harness: IngestHarness!

    override func tearDown() async throws {
        await harness?.shutdown()
        harness = nil
    }

    private func lines(_ keys: [Key16]) -> [UInt8] { Array(keys.map { ReferenceParser.hex($0) + "\n" }.joined().utf8) }

    private func lease(_ worker: String, max: UInt32 = 1) async throws -> LeaseTasksResponse {
        var request = LeaseTasksRequest()
        request.workerID = worker
        request.max = max
        return try await harness.taskClient.leaseTasks(request)
    }

    /// A worker leases a block and dies: its lease expires, another worker
    /// does the block, and the dead worker's late report is ignored.
    func testBlockOfADeadWorkerRunsAgainAndItsLateReportIsIgnored() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy(lease: 0.4))
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let keys = ReferenceParser.randomKeys(1000, seed: 40)
        let id = try await harness.submit(try harness.drop(lines(keys), advertiser: "dead", name: "f.txt")).version

        let dead = try await lease("doomed", max: 3)
        XCTAssertEqual(dead.tasks.count, 3)
        XCTAssertEqual(dead.tasks.map(\.start), [0, 4096, 8192], "blocks in order, first block first")
        XCTAssertEqual(dead.leaseMs, 400)

        harness.startWorker(id: "alive")
        let status = try await harness.waitForFile(id)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.keys, 1000, "no block counted twice")
        XCTAssertEqual(status.distinctKeys, 1000)
        let hits = try await harness.matched("dead", keys)
        XCTAssertTrue(hits.allSatisfy { $0 })

        // The dead worker wakes up and reports: ignored, nothing changes.
        var late = CompleteTaskRequest()
        late.workerID = "doomed"
        late.taskID = dead.tasks[0].taskID
        late.leaseToken = dead.tasks[0].leaseToken
        late.keys = 999_999
        let answer = try await harness.taskClient.completeTask(late)
        XCTAssertFalse(answer.accepted)
        let after = try await harness.fileStatus(id)
        XCTAssertEqual(after?.keys, 1000)
        XCTAssertEqual(after?.state, .live)
    }

    /// An idle worker's lease request waits at the coordinator and gets work
    /// as soon as it is submitted.
    func testLongPollLeaseReturnsAsSoonAsWorkArrives() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let empty = try await harness.taskClient.leaseTasks(LeaseTasksRequest(workerID: "idle", max: 1, waitMs: 100))
        XCTAssertEqual(empty.tasks.count, 0, "nothing to do: the wait ends empty")

        let client = harness.taskClient
        let started = ContinuousClock.now
        async let waiting = client.leaseTasks(LeaseTasksRequest(workerID: "idle", max: 1, waitMs: 5000))
        try await Task.sleep(for: .milliseconds(200))
        _ = try await harness.submit(try harness.drop(lines(ReferenceParser.randomKeys(10, seed: 45)), advertiser: "lp", name: "f.txt"))
        let leased = try await waiting
        XCTAssertEqual(leased.tasks.count, 1)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3), "woken by the submission, not by the timeout")
    }

    /// With tokens configured, the coordinator refuses calls without one,
    /// and a worker presenting its worker token ingests as usual while an
    /// operator submits with the operator's.
    func testCoordinatorTokensAreRequiredWhenConfigured() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator(access: CoordinatorAccess(operatorTokens: ["op"], workerTokens: ["s3cret"]))
        await assertStatus(.unauthenticated) { _ = try await self.lease("no-token") }
        var wrong = CallOptions.defaults
        wrong.metadata["authorization"] = "Bearer guess"
        await assertStatus(.unauthenticated) { _ = try await self.harness.adminClient.status(StatusRequest(), options: wrong) }

        harness.callOptions.metadata["authorization"] = "Bearer op"
        harness.startWorker(id: "trusted", token: "s3cret")
        let keys = ReferenceParser.randomKeys(100, seed: 46)
        let status = try await harness.waitForFile(try await harness.submit(try harness.drop(lines(keys), advertiser: "tok", name: "f.txt")).version)
        XCTAssertEqual(status.state, .live)
        XCTAssertEqual(status.distinctKeys, 100)
    }

    func testHeartbeatKeepsALeaseAndReportsLostOnes() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy(lease: 0.3))
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        _ = try await harness.submit(try harness.drop(lines(ReferenceParser.randomKeys(300, seed: 41)), advertiser: "hb", name: "f.txt"))
        let held = try await lease("keeper", max: 2).tasks
        XCTAssertEqual(held.count, 2)
        var beat = HeartbeatRequest()
        beat.workerID = "keeper"
        beat.taskIDs = [held[0].taskID]
        beat.leaseTokens = [held[0].leaseToken]
        for _ in 0..<5 {
            try await Task.sleep(for: .milliseconds(100))
            let response = try await harness.taskClient.heartbeat(beat)
            XCTAssertEqual(response.lostTaskIDs, [])
        }
        // Task 1 was renewed for 500 ms; task 2 expired and was leased again.
        let other = try await lease("other", max: 5).tasks
        XCTAssertTrue(other.contains { $0.taskID == held[1].taskID })
        XCTAssertFalse(other.contains { $0.taskID == held[0].taskID })
        beat.taskIDs = [held[1].taskID]
        beat.leaseTokens = [held[1].leaseToken]
        let lost = try await harness.taskClient.heartbeat(beat)
        XCTAssertEqual(lost.lostTaskIDs, [held[1].taskID])
    }

    /// A block that fails on every attempt fails its version, with the
    /// error; the previous version keeps serving.
    func testVersionFailsAfterMaxAttemptsAndThePreviousKeepsServing() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let good = ReferenceParser.randomKeys(200, seed: 42)
        harness.startWorker(id: "w")
        let v1 = try await harness.waitForFile(try await harness.submit(try harness.drop(lines(good), advertiser: "flaky", name: "1.txt")).version)
        XCTAssertEqual(v1.state, .live)
        await harness.stopWorkers()

        let v2 = try await harness.submit(try harness.drop(lines(ReferenceParser.randomKeys(50, seed: 43)), advertiser: "flaky", name: "2.txt"))
        for attempt in 1...4 {
            let leased = try await lease("breaker")
            let task = try XCTUnwrap(leased.tasks.first)
            XCTAssertEqual(task.attempt, UInt32(attempt))
            var failure = FailTaskRequest()
            failure.workerID = "breaker"
            failure.taskID = task.taskID
            failure.leaseToken = task.leaseToken
            failure.error = "disk full (attempt \(attempt))"
            let answer = try await harness.taskClient.failTask(failure)
            XCTAssertTrue(answer.accepted)
            // Retries back off: the next attempt is handed out only later.
            let early = try await lease("breaker")
            XCTAssertEqual(early.tasks.count, 0, "leased again during the backoff")
            harness.advanceClock(by: 70)
        }
        let failed = try await harness.waitForFile(v2.version)
        XCTAssertEqual(failed.state, .failed)
        XCTAssertTrue(failed.error.contains("block 0 failed 4 times; last: disk full (attempt 4)"), failed.error)
        let nothing = try await lease("breaker")
        XCTAssertEqual(nothing.tasks.count, 0, "a failed version hands out no more work")
        XCTAssertEqual(harness.matchCatalog.current("flaky")?.version, v1.version)
        let hits = try await harness.matched("flaky", good)
        XCTAssertTrue(hits.allSatisfy { $0 })
    }

    /// Runs are not synced, so a crash can lose one after its block was
    /// reported. Here one run vanishes and another is cut short before the
    /// merges read them: the merge names both, their blocks are parsed
    /// again, and the version goes live with every key, counted once.
    func testRunsLostBeforeTheMergeAreParsedAgain() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let keys = ReferenceParser.randomKeys(1000, seed: 50)
        let store = LosingStorage(LocalSegmentStorage(root: harness.storeRoot), lose: "/block-1-", damage: "/block-4-")
        harness.startWorker(id: "w", store: store)
        let id = try await harness.submit(try harness.drop(lines(keys), advertiser: "lossy", name: "f.txt")).version
        let status = try await harness.waitForFile(id)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(store.harmed, 2, "one run lost, one damaged")
        XCTAssertEqual(status.keys, 1000, "the blocks parsed again replace their counts")
        XCTAssertEqual(status.distinctKeys, 1000)
        XCTAssertEqual(status.blocksDone, status.blocksTotal)
        XCTAssertEqual(status.mergesDone, status.mergesTotal)
        XCTAssertEqual(status.mergesTotal, 4)
        let hits = try await harness.matched("lossy", keys)
        XCTAssertTrue(hits.allSatisfy { $0 })
        let strangers = try await harness.matched("lossy", ReferenceParser.randomKeys(500, seed: 51))
        XCTAssertFalse(strangers.contains(true))

        // The catalog's record of attempts, read straight from its database.
        let db = try Database(path: harness.catalogPath)
        let attempts = try db.rows("""
            SELECT CASE t.kind WHEN 1 THEN 'block ' ELSE 'merge ' END || t.seq, a.outcome, a.error
            FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.file_id = ? ORDER BY a.task_id, a.attempt
            """, id) { (label: $0.string(0), outcome: $0.string(1), error: $0.string(2)) }
        XCTAssertEqual(attempts.filter { $0.label == "block 1" }.count, 2, "block 1 parsed twice")
        XCTAssertEqual(attempts.filter { $0.label == "block 4" }.count, 2, "block 4 parsed twice")
        XCTAssertEqual(attempts.filter { $0.label == "block 2" }.count, 1)
        XCTAssertEqual(Set(attempts.filter { $0.label.hasPrefix("merge") }.map(\.label)).count, 4, "no merge task added twice")
        let merges = attempts.filter { $0.label == "merge 0" }
        XCTAssertEqual(merges.map(\.outcome), ["failed", "done"])
        XCTAssertTrue(merges[0].error.contains("cannot read 2 run(s)"), merges[0].error)
    }

    /// The coordinator is stopped abruptly mid-ingest; a new one on the same
    /// catalog finishes the job with the same result.
    func testCoordinatorRestartedMidIngestReachesTheSameResult() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy(lease: 0.5))
        try await harness.startMatchServer()
        try await harness.startCoordinator()
        let keys = ReferenceParser.randomKeys(4000, seed: 44)
        let id = try await harness.submit(try harness.drop(lines(keys), advertiser: "restart", name: "f.txt")).version
        // Some blocks are leased by a worker that never reports: after the
        // restart their leases still stand until they expire.
        let orphaned = try await lease("vanished", max: 5)
        XCTAssertEqual(orphaned.tasks.count, 5)
        harness.startWorker(id: "w1")
        try await waitUntil(timeout: .seconds(10)) {
            (try? self.blocksDone(id)) ?? 0 >= 10
        }
        await harness.stopWorkers()
        await harness.killCoordinator()

        try await harness.startCoordinator()
        harness.startWorker(id: "w2")
        harness.startWorker(id: "w3")
        let status = try await harness.waitForFile(id)
        XCTAssertEqual(status.state, .live, status.error)
        XCTAssertEqual(status.keys, 4000)
        XCTAssertEqual(status.distinctKeys, 4000)
        let hits = try await harness.matched("restart", keys)
        XCTAssertTrue(hits.allSatisfy { $0 })
    }

    private func blocksDone(_ id: UInt64) throws -> UInt32 {
        try harness.coordinator.catalog.files(advertiser: nil, states: [], limit: 100, now: Date().timeIntervalSince1970)
            .first { $0.version == id }?.blocksDone ?? 0
    }
}

/// A segment store that loses one run and truncates another the first time
/// a merge asks for them, as a crash before they reached the disk would.
final class LosingStorage: SegmentStorage, @unchecked Sendable {
    private let base: LocalSegmentStorage
    private let lose: String
    private let damage: String
    private let lock = NSLock()
    private var done: Set<String> = []

    init(_ base: LocalSegmentStorage, lose: String, damage: String) {
        self.base = base
        self.lose = lose
        self.damage = damage
    }

    var harmed: Int { lock.withLock { done.count } }

    func prepareWrite(_ path: String) throws -> String { try base.prepareWrite(path) }
    func commit(_ path: String) async throws { try await base.commit(path) }
    func removeAll(under prefix: String) async throws { try await base.removeAll(under: prefix) }
    func list(under prefix: String) async throws -> [String] { try await base.list(under: prefix) }
    func remove(_ path: String) async throws { try await base.remove(path) }

    func localFile(_ path: String) async throws -> String {
        let local = try await base.localFile(path)
        guard let harm = [lose, damage].first(where: { path.contains($0) }),
              lock.withLock({ done.insert(harm).inserted }) else { return local }
        if harm == lose {
            try FileManager.default.removeItem(atPath: local)
        } else {
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: local))
            try handle.truncate(atOffset: try handle.seekToEnd() - 16)
            try handle.close()
        }
        return local
    }
}
