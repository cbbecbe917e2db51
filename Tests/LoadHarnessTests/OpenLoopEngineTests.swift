import Foundation
import LoadHarness
import RosterAPI
import RosterRPC
import RosterServer
import RosterTransport
import Synchronization
import XCTest

/// A match server for the engine: answers every key as a member when its
/// first byte is odd, after `delay`; with `serial`, one call at a time.
private struct OddMatch: MatchService.Handler {
    let delay: Duration
    var serial = false
    let state = State()

    final class State: Sendable {
        let busyUntil = Mutex(ContinuousClock.now)
        let arrivals = Mutex<[ContinuousClock.Instant]>([])
    }

    func match(_ request: MatchRequest, context: RPCContext) async throws -> MatchResponse {
        state.arrivals.withLock { $0.append(.now) }
        if serial {
            let done = state.busyUntil.withLock { busy -> ContinuousClock.Instant in
                busy = max(busy, .now) + delay
                return busy
            }
            try await Task.sleep(until: done, clock: .continuous)
        } else if delay > .zero {
            try await Task.sleep(for: delay)
        }
        return MatchResponse(matched: request.hash.first.map { $0 & 1 == 1 } ?? false, version: 1)
    }

    func matchMany(_ request: MatchManyRequest, context: RPCContext) async throws -> MatchManyResponse {
        let keys = request.hashes.count / 16
        var bitmap = Data(count: (keys + 7) / 8)
        for i in 0..<keys where request.hashes[request.hashes.startIndex + i * 16] & 1 == 1 { bitmap[i / 8] |= 1 << UInt8(i % 8) }
        return MatchManyResponse(matched: bitmap, count: UInt32(keys), version: 1)
    }

    func matchAdvertisers(_ request: MatchAdvertisersRequest, context: RPCContext) async throws -> MatchAdvertisersResponse {
        throw RPCError(.unimplemented, "not here")
    }
}

final class OpenLoopEngineTests: XCTestCase {
    private func serve(_ handler: OddMatch) async throws -> RPCServer {
        let server = try RPCServer(configuration: .init(drainTimeout: .milliseconds(100)), services: [handler])
        try await server.start()
        return server
    }

    private func stop(_ server: RPCServer) async {
        server.drain()
        await server.waitUntilClosed()
    }

    private func requests(count: Int) -> [OpenLoopEngine.Request] {
        (0..<count).map { j in
            OpenLoopEngine.Request(method: MatchService.Method.match,
                                          message: MatchRequest(advertiserID: "a", hash: Data([UInt8(j & 0xFF)] + [UInt8](repeating: 0, count: 15))))
        }
    }

    private let inspectMatch: OpenLoopEngine.Inspect = { request, message in
        let matched = (try? MatchResponse(decoding: message))?.matched ?? false
        return .init(hits: matched ? 1 : 0, misses: matched ? 0 : 1, wrong: matched != (request & 1 == 1))
    }

    func testEveryScheduledCallIsSentAnsweredAndInspected() async throws {
        let server = try await serve(OddMatch(delay: .zero))
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: server.localAddress!.port!,
                                                         schedule: RateSchedule(rate: 2000, duration: .milliseconds(500)), connections: 3))
        let report = try await engine.run(requests: requests(count: 10), inspect: inspectMatch)
        XCTAssertEqual(report.calls, 1000)
        XCTAssertEqual(report.ok, 1000)
        XCTAssertEqual(report.sent, 1000)
        XCTAssertEqual(report.unsent, 0)
        XCTAssertEqual(report.errorCount, 0)
        XCTAssertEqual(report.hits, 500, "requests 1, 3, 5, ... ask odd keys")
        XCTAssertEqual(report.misses, 500)
        XCTAssertEqual(report.wrongAnswers, 0)
        XCTAssertTrue(report.heldRate, report.shortfall ?? "")
        XCTAssertNotNil(report.harnessMicrosecondsPerCall)
        await stop(server)
    }

    /// As in LoadGeneratorTests: a server that serves one call per 10 ms, asked
    /// for one per 5 ms. Latency from the intended times shows the queue.
    func testQueueingDelayIsNotHidden() async throws {
        let server = try await serve(OddMatch(delay: .milliseconds(10), serial: true))
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: server.localAddress!.port!,
                                                         schedule: RateSchedule(rate: 200, duration: .seconds(1)), grace: .seconds(5)))
        let report = try await engine.run(requests: requests(count: 4))
        XCTAssertEqual(report.calls, 200)
        XCTAssertGreaterThan(report.percentile(50), .milliseconds(300), "the queue shows in the median")
        XCTAssertGreaterThan(report.max, .milliseconds(800))
        await stop(server)
    }

    /// Asked for far more than the server can answer, the run still ends on
    /// time: sending stops at the schedule's end, replies are awaited for the
    /// grace period, and the rest count as DEADLINE_EXCEEDED.
    func testTheDurationIsHonouredAtAnUnreachableRate() async throws {
        let server = try await serve(OddMatch(delay: .milliseconds(50), serial: true))
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: server.localAddress!.port!,
                                                         schedule: RateSchedule(rate: 5000, duration: .seconds(1)), maxInFlight: 100_000,
                                                         grace: .milliseconds(500)))
        let started = ContinuousClock.now
        let report = try await engine.run(requests: requests(count: 4))
        let took = ContinuousClock.now - started
        XCTAssertLessThan(took, .milliseconds(1500 + 1000), "the duration and the grace, within a second")
        XCTAssertGreaterThanOrEqual(took, .milliseconds(1400))
        XCTAssertEqual(report.sent + report.unsent, 5000)
        XCTAssertLessThan(report.calls, 40, "about one answer per 50 ms")
        XCTAssertEqual(report.errors[.deadlineExceeded], report.sent - report.calls, "every unanswered call is a timeout")
        XCTAssertFalse(report.heldRate)
        XCTAssertTrue(report.harnessHeld, "the harness sent everything on time")
        XCTAssertTrue(report.shortfall?.contains("before the run ended (p99") == true && report.shortfall?.hasSuffix("the server ran out") == true,
                      report.shortfall ?? "")
        await stop(server)
    }

    /// A staircase: 200 calls/s for 300 ms, then 1,000 for 300 ms; the server
    /// sees the calls arrive on those steps.
    func testAStaircaseStepsAtTheRightTimes() async throws {
        let handler = OddMatch(delay: .zero)
        let server = try await serve(handler)
        let schedule = try RateSchedule(parsing: "200:1000:step=800/300ms", duration: .seconds(1))
        XCTAssertEqual(schedule.steps.map(\.rate), [200, 1000])
        XCTAssertEqual(schedule.totalCalls, 60 + 300)
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: server.localAddress!.port!, schedule: schedule, connections: 2))
        let report = try await engine.run(requests: requests(count: 2))
        XCTAssertEqual(report.calls, 360)
        let arrivals = handler.state.arrivals.withLock { $0 }
        XCTAssertEqual(arrivals.count, 360)
        let first = arrivals[0]
        let inFirstStep = arrivals.filter { $0 - first < .milliseconds(290) }.count
        let inSecondStep = arrivals.filter { $0 - first >= .milliseconds(310) }.count
        // Allow a few calls either side for pacing (0.5 ms) and scheduling.
        XCTAssertEqual(Double(inFirstStep), 58, accuracy: 4, "about 200/s for the first 290 ms")
        XCTAssertEqual(Double(inSecondStep), 290, accuracy: 12, "about 1,000/s from 310 ms")
        await stop(server)
    }

    func testMatchManyKeysAreCountedAsHitsAndMisses() async throws {
        let server = try await serve(OddMatch(delay: .zero))
        var hashes = Data()
        for key in 0..<10 { hashes.append(contentsOf: [UInt8(key)] + [UInt8](repeating: 0, count: 15)) }
        let payload = OpenLoopEngine.Request(method: MatchService.Method.matchMany, message: MatchManyRequest(advertiserID: "a", hashes: hashes))
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: server.localAddress!.port!,
                                                         schedule: RateSchedule(rate: 1000, duration: .milliseconds(100)), keysPerCall: 10))
        let report = try await engine.run(requests: [payload]) { _, message in
            guard let response = try? MatchManyResponse(decoding: message) else { return .init(hits: 0, misses: 0, wrong: true) }
            let hits = (0..<Int(response.count)).filter(response.isMatched).count
            return .init(hits: hits, misses: Int(response.count) - hits)
        }
        XCTAssertEqual(report.calls, 100)
        XCTAssertEqual(report.hits, 500)
        XCTAssertEqual(report.misses, 500)
        XCTAssertEqual(report.wrongAnswers, 0)
        await stop(server)
    }

    func testAnUnreachableServerFailsBeforeTheRun() async throws {
        let engine = OpenLoopEngine(configuration: .init(host: "127.0.0.1", port: 1, schedule: RateSchedule(rate: 10, duration: .seconds(1))))
        do {
            _ = try await engine.run(requests: requests(count: 1))
            XCTFail("ran against nothing")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.message.hasPrefix("cannot connect to 127.0.0.1:1"), error.message)
        }
    }

    func testScheduleSyntax() throws {
        XCTAssertEqual(try RateSchedule(parsing: "5000", duration: .seconds(2)).totalCalls, 10_000)
        let ramp = try RateSchedule(parsing: "1000:3000:step=1000/5s", duration: .seconds(1))
        XCTAssertEqual(ramp.steps.map(\.rate), [1000, 2000, 3000])
        XCTAssertEqual(ramp.duration, .seconds(15))
        var hint = 0
        XCTAssertEqual(ramp.offset(ofCall: 5000, hint: &hint), 5_000_000_000, "the first call of the second step starts it")
        XCTAssertEqual(ramp.offset(ofCall: 5001, hint: &hint), 5_000_500_000)
        XCTAssertEqual(try RateSchedule(parsing: "3000:1000:step=1000/1s", duration: .seconds(1)).steps.map(\.rate), [3000, 2000, 1000])
        for (bad, message) in [("0", "'0' is not a rate"), ("fast", "'fast' is not a rate"), ("1:2:3", "the third part is step="),
                               ("1:2:step=1/soon", "'soon' is not a duration"), ("1:2", "is not a rate (5000) or a staircase")] {
            XCTAssertThrowsError(try RateSchedule(parsing: bad, duration: .seconds(1))) { error in
                XCTAssertTrue("\(error)".contains(message), "\(bad): \(error)")
            }
        }
    }
}
