import Foundation
import Histogram
import RosterRPC
import Synchronization

/// Open-loop load: calls start on a fixed schedule, whatever the server does.
///
/// Call i is *intended* to start at `start + i / rate`. Its latency is
/// measured from that intended time, not from when it was actually sent, so
/// when the server (or this process) falls behind, the time calls spend
/// waiting to be sent is counted — the queueing delay a closed loop hides
/// ("coordinated omission"). Calls wait for a free slot when `concurrency`
/// are in flight; that wait is counted too.
public struct LoadGenerator: Sendable {
    public struct Configuration: Sendable {
        public var rate: Double
        public var duration: Duration
        /// At most this many calls in flight.
        public var concurrency: Int
        /// Keys per call (for keys/s).
        public var keysPerCall: Int

        public init(rate: Double, duration: Duration, concurrency: Int = 256, keysPerCall: Int = 1) {
            self.rate = rate
            self.duration = duration
            self.concurrency = max(1, concurrency)
            self.keysPerCall = max(1, keysPerCall)
        }
    }

    /// One second of the run, for live output.
    public struct Tick: Sendable {
        public var second: Int
        public var calls: Int
        public var errors: Int
        public var p50: Duration
        public var p99: Duration
        public var inFlight: Int
        /// How far behind schedule the sender is.
        public var lag: Duration
        /// The rate the schedule asked for in this second.
        public var asked: Double = 0
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Runs the load; `call(i)` makes call number i and throws on failure.
    public func run(onTick: @escaping @Sendable (Tick) -> Void = { _ in },
                    call: @escaping @Sendable (Int) async throws -> Void) async -> LoadReport {
        let state = Recorder()
        let total = Int((configuration.rate * configuration.duration.seconds).rounded())
        let interval = 1.0 / configuration.rate
        let clock = ContinuousClock()
        let start = clock.now
        let slots = AsyncSemaphore(configuration.concurrency)
        var maxLag = Duration.zero

        let ticker = Task {
            var second = 0
            while !Task.isCancelled {
                try? await Task.sleep(until: start + .seconds(second + 1), clock: clock)
                if Task.isCancelled { break }
                second += 1
                let tick = state.state.withLock { s -> Tick in
                    defer { s.interval.reset(); s.intervalCalls = 0; s.intervalErrors = 0 }
                    return Tick(second: second, calls: s.intervalCalls, errors: s.intervalErrors,
                                p50: .microseconds(Int64(s.interval.valueAtPercentile(50))),
                                p99: .microseconds(Int64(s.interval.valueAtPercentile(99))), inFlight: s.inFlight, lag: s.lag)
                }
                var asked = tick
                asked.asked = configuration.rate
                state.state.withLock { $0.timeline.append(asked) }
                onTick(asked)
            }
        }

        // Discarding: 300,000 finished calls must not pile up as results.
        await withDiscardingTaskGroup { group in
            for i in 0..<total {
                let intended = start + .seconds(Double(i) * interval)
                let now = clock.now
                if intended > now {
                    try? await Task.sleep(until: intended, clock: clock)
                } else {
                    let lag = now - intended
                    if lag > maxLag { maxLag = lag }
                    state.state.withLock { $0.lag = lag }
                }
                await slots.acquire()
                state.state.withLock { $0.inFlight += 1 }
                group.addTask {
                    var code: RPCStatusCode?
                    var wrong = false
                    do {
                        try await call(i)
                    } catch let error as RPCError {
                        code = error.code
                    } catch is WrongAnswer {
                        wrong = true
                    } catch {
                        code = .unknown
                    }
                    let finished = clock.now
                    slots.release()
                    state.state.withLock { $0.record(finished - intended, error: code, wrong: wrong, at: finished - start) }
                }
            }
        }
        let elapsed = clock.now - start
        ticker.cancel()
        _ = await ticker.value
        return state.state.withLock { s in
            LoadReport(asked: configuration.rate, duration: configuration.duration, elapsed: elapsed, calls: s.calls,
                       keysPerCall: configuration.keysPerCall, errors: s.errors, histogram: s.histogram, maxLag: maxLag,
                       wrongAnswers: s.wrong, errorWindow: s.firstError.map { ($0, s.lastError ?? $0) },
                       ok: s.calls - s.errors.values.reduce(0, +), timeline: s.timeline)
        }
    }

    private final class Recorder: Sendable {
        let state = Mutex(State())
    }

    private struct State {
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var interval = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        var calls = 0
        var intervalCalls = 0
        var intervalErrors = 0
        var errors: [RPCStatusCode: Int] = [:]
        var inFlight = 0
        var lag = Duration.zero

        var wrong = 0
        var timeline: [Tick] = []
        var firstError: Duration?
        var lastError: Duration?

        mutating func record(_ latency: Duration, error: RPCStatusCode?, wrong isWrong: Bool = false, at offset: Duration = .zero) {
            let micros = UInt64(max(1, latency.wholeMicroseconds))
            _ = histogram.record(micros)
            _ = interval.record(micros)
            calls += 1
            intervalCalls += 1
            inFlight -= 1
            if isWrong { wrong += 1 }
            if let error {
                errors[error, default: 0] += 1
                intervalErrors += 1
                if firstError == nil { firstError = offset }
                lastError = max(lastError ?? offset, offset)
            }
        }
    }
}

/// What a run achieved.
/// Thrown by a call whose answer was checked and found wrong (a member
/// said not to be, say): counted apart from errors, in `wrongAnswers`.
public struct WrongAnswer: Error, Sendable {
    public var detail: String
    public init(_ detail: String) { self.detail = detail }
}

public struct LoadReport: Sendable {
    public var asked: Double
    public var duration: Duration
    public var elapsed: Duration
    public var calls: Int
    public var keysPerCall: Int
    public var errors: [RPCStatusCode: Int]
    /// Latencies in microseconds, from each call's intended start.
    public var histogram: Histogram<UInt64>
    /// The furthest the sender fell behind its schedule.
    public var maxLag: Duration
    /// Calls whose answer the caller checked and found wrong.
    public var wrongAnswers: Int = 0
    /// When the first and the last failed call ended, from the start: the
    /// failover window when a server is killed mid-run.
    public var errorWindow: (first: Duration, last: Duration)?
    /// Calls answered OK.
    public var ok: Int = 0
    /// Keys that matched and keys that did not, over the successful replies
    /// the caller inspected (MatchMany counts each key of a batch).
    public var hits: Int = 0
    public var misses: Int = 0
    /// Calls sent, and calls the schedule asked for that the harness could
    /// not send before it ended (the open-loop engine only).
    public var sent: Int = 0
    public var unsent: Int = 0
    /// Times due calls waited for a place in flight (the in-flight cap,
    /// `--concurrency`): the server answered too slowly to keep the rate.
    public var inFlightCapWaits: Int = 0
    /// CPU (user and system) this process used for the run, when measured.
    public var harnessCPU: Duration?
    /// Each second of the run, as the live line showed it.
    public var timeline: [LoadGenerator.Tick] = []

    /// The harness's own CPU per call, in microseconds.
    public var harnessMicrosecondsPerCall: Double? {
        harnessCPU.map { Double($0.wholeMicroseconds) / Double(Swift.max(1, calls)) }
    }

    public var callsPerSecond: Double { Double(calls) / elapsed.seconds }
    public var keysPerSecond: Double { callsPerSecond * Double(keysPerCall) }
    public var errorCount: Int { errors.values.reduce(0, +) }

    public func percentile(_ p: Double) -> Duration { .microseconds(Int64(histogram.valueAtPercentile(p))) }
    public var max: Duration { .microseconds(Int64(histogram.max)) }

    /// Whether the asked rate was held: every call sent within 100 ms of its
    /// slot and the run finished within 10% (or 1 s) of its duration.
    public var heldRate: Bool {
        harnessHeld && serverAnswered && elapsed < duration + Swift.max(.seconds(1), duration / 10)
    }

    /// The harness sent every call, none more than 100 ms late.
    public var harnessHeld: Bool { unsent == 0 && maxLag < .milliseconds(100) }

    /// The server answered (99% of) what was sent before the run ended
    /// (the open-loop engine counts what was sent; the task-per-call
    /// generator always waits for every answer).
    public var serverAnswered: Bool { sent == 0 || Double(calls) >= 0.99 * Double(sent) }

    /// The verdict in plain words when the rate was not held.
    public var shortfall: String? {
        guard !heldRate else { return nil }
        if !harnessHeld && inFlightCapWaits > 0 {
            return String(format: "could not hold %.0f calls/s: achieved %.0f; the server answered too slowly: calls waited for one of the "
                          + "in-flight places (--concurrency) %d times, up to %.0f ms (latencies include that wait)",
                          asked, callsPerSecond, inFlightCapWaits, maxLag.ms)
        }
        if !harnessHeld {
            var reason = String(format: "the harness fell up to %.0f ms behind its schedule (latencies include that wait)", maxLag.ms)
            if unsent > 0 { reason += "; \(unsent) calls were never sent" }
            if let total = harnessCPU, total.seconds >= 0.9 * elapsed.seconds {
                reason += String(format: "; it used %.0f%% of a core: the harness ran out of CPU", 100 * total.seconds / elapsed.seconds)
            }
            return String(format: "could not hold %.0f calls/s: achieved %.0f; ", asked, callsPerSecond) + reason
        }
        if !serverAnswered {
            return String(format: "could not hold %.0f calls/s: the server answered %d of %d calls before the run ended "
                          + "(p99 %.1f ms): the server ran out", asked, calls, sent, percentile(99).ms)
        }
        return String(format: "could not hold %.0f calls/s: the run took %.1f s for %.1f s of schedule", asked, elapsed.seconds, duration.seconds)
    }

    /// The `.hgrm` percentile distribution (values in milliseconds), as HdrHistogram tools read it.
    public var hgrm: String {
        var out = ""
        histogram.outputPercentileDistribution(to: &out, outputValueUnitScalingRatio: 1000)
        return out
    }
}


/// A counting semaphore for tasks: waiting suspends, never blocks a thread.
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(available: count)) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.available > 0 {
                    s.available -= 1
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.available += 1
                return nil
            }
            return s.waiters.removeFirst()
        }
        waiter?.resume()
    }
}
