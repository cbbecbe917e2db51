import Foundation
import LoadHarness
import RosterAPI
import RosterRPC
import RosterServer
import RosterTransport
import Synchronization
import XCTest

/// A match server that answers slowly: each call takes `delay`, and with
/// `serial` only one call is served at a time, so a queue builds up when
/// calls arrive faster than 1/delay.
private struct SlowMatch: MatchService.Handler {
    let delay: Duration
    let serial: Bool
    let gate = Gate()

    final class Gate: Sendable {
        let busyUntil = Mutex(ContinuousClock.now)
    }

    func match(_ request: MatchRequest, context: RPCContext) async throws -> MatchResponse {
        if serial {
            // Reserve the next free slot of the single "server thread".
            let done = gate.busyUntil.withLock { busy -> ContinuousClock.Instant in
                busy = max(busy, ContinuousClock.now) + delay
                return busy
            }
            try await Task.sleep(until: done, clock: .continuous)
        } else {
            try await Task.sleep(for: delay)
        }
        return MatchResponse(matched: true, version: 1)
    }

    func matchMany(_ request: MatchManyRequest, context: RPCContext) async throws -> MatchManyResponse {
        throw RPCError(.unimplemented, "not here")
    }

    func matchAdvertisers(_ request: MatchAdvertisersRequest, context: RPCContext) async throws -> MatchAdvertisersResponse {
        throw RPCError(.unimplemented, "not here")
    }
}

final class LoadGeneratorTests: XCTestCase {
    private func run(_ handler: SlowMatch, rate: Double, seconds: Double, concurrency: Int) async throws -> LoadReport {
        let server = try RPCServer(configuration: .init(drainTimeout: .milliseconds(100)), services: [handler])
        try await server.start()
        let client = RPCClient(address: server.localAddress!)
        let stub = MatchService.Client(transport: client)
        let generator = LoadGenerator(configuration: .init(rate: rate, duration: .milliseconds(Int64(seconds * 1000)), concurrency: concurrency))
        let ticks = Mutex(0)
        let report = await generator.run(onTick: { _ in ticks.withLock { $0 += 1 } }) { _ in
            _ = try await stub.match(MatchRequest(advertiserID: "a", hash: Data(count: 16)))
        }
        await client.close()
        server.drain()
        await server.waitUntilClosed()
        XCTAssertGreaterThanOrEqual(ticks.withLock { $0 }, Int(seconds) - 1, "a line of stats each second")
        return report
    }

    /// A server that keeps up: latencies are its service time, the rate is held.
    func testFastEnoughServerShowsItsServiceTime() async throws {
        let report = try await run(SlowMatch(delay: .milliseconds(3), serial: false), rate: 200, seconds: 1.5, concurrency: 100)
        XCTAssertEqual(report.calls, 300)
        XCTAssertEqual(report.errorCount, 0)
        XCTAssertGreaterThanOrEqual(report.percentile(50), .milliseconds(3), "never less than the service time")
        XCTAssertLessThan(report.percentile(50), .milliseconds(100))
        XCTAssertTrue(report.heldRate, report.shortfall ?? "")
        XCTAssertNil(report.shortfall)
    }

    /// Calls arrive every 5 ms; the server serves one per 10 ms. A closed
    /// loop would report ~10 ms per call; measured from the intended send
    /// times, call i waits about 5 ms × i, so the median is hundreds of ms.
    func testQueueingDelayIsNotHidden() async throws {
        let report = try await run(SlowMatch(delay: .milliseconds(10), serial: true), rate: 200, seconds: 1, concurrency: 1000)
        XCTAssertEqual(report.calls, 200)
        XCTAssertGreaterThan(report.percentile(50), .milliseconds(300), "the queue shows in the median")
        XCTAssertGreaterThan(report.max, .milliseconds(800), "the last call waited for the 199 before it")
        XCTAssertLessThan(report.max, .milliseconds(2000))
    }

    /// With one call in flight the sender itself falls behind: the wait for a
    /// free slot counts as latency, and the report says the rate was not held.
    func testSenderThatFallsBehindSaysSo() async throws {
        let report = try await run(SlowMatch(delay: .milliseconds(10), serial: false), rate: 200, seconds: 1, concurrency: 1)
        XCTAssertEqual(report.calls, 200)
        XCTAssertFalse(report.heldRate)
        XCTAssertGreaterThan(report.maxLag, .milliseconds(500))
        XCTAssertGreaterThan(report.percentile(99), .milliseconds(500))
        XCTAssertTrue(report.shortfall?.hasPrefix("could not hold 200 calls/s") ?? false, report.shortfall ?? "nil")
    }

    func testHgrmFileListsPercentiles() async throws {
        let report = try await run(SlowMatch(delay: .milliseconds(1), serial: false), rate: 100, seconds: 1, concurrency: 10)
        XCTAssertTrue(report.hgrm.contains("Value"), report.hgrm)
        XCTAssertTrue(report.hgrm.contains("Percentile"), report.hgrm)
    }
}
