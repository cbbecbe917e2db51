/// How many calls per second to send, over time: one rate held for a
/// duration, or a staircase of rates to find where a server's latency bends.
///
/// Syntax (`roster load --rate`):
/// - `5000` — 5,000 calls/s for the run's `--duration`;
/// - `1000:20000:step=1000/5s` — 1,000 calls/s for 5 s, then 2,000 for 5 s,
///   … up to 20,000 for 5 s (a ramp down, `20000:1000:step=1000/5s`, works too).
///
/// Call `g` (from 0) is intended at `offset(ofCall: g)` after the start:
/// within a step of rate `r` that began at `t` with `c` calls before it, at
/// `t + (g - c) / r`. The schedule is the same whatever the server does
/// (open loop), and latencies are measured from these times.
public struct RateSchedule: Sendable, Equatable, CustomStringConvertible {
    public struct Step: Sendable, Equatable {
        public var rate: Double
        public var duration: Duration
        public init(rate: Double, duration: Duration) {
            self.rate = rate
            self.duration = duration
        }
    }

    public private(set) var steps: [Step]
    /// Calls before each step, and each step's start (nanoseconds).
    private var callsBefore: [Int]
    private var startNanos: [Int64]
    /// Calls in the whole schedule.
    public private(set) var totalCalls: Int

    public init(steps: [Step]) {
        self.steps = steps
        var calls = 0
        var start: Int64 = 0
        callsBefore = []
        startNanos = []
        for step in steps {
            callsBefore.append(calls)
            startNanos.append(start)
            calls += Int((step.rate * step.duration.seconds).rounded())
            start += step.duration.wholeNanoseconds
        }
        totalCalls = calls
    }

    /// One rate for `duration`.
    public init(rate: Double, duration: Duration) {
        self.init(steps: [Step(rate: rate, duration: duration)])
    }

    /// Parses the syntax above; `duration` is the length of a constant rate.
    /// Throws a one-line reason.
    public init(parsing text: String, duration: Duration) throws(ScheduleError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func rate(_ s: String) throws(ScheduleError) -> Double {
            guard let r = Double(s), r.isFinite, r > 0, r <= 10_000_000 else {
                throw ScheduleError("'\(s)' is not a rate: give calls per second, more than 0 and at most 10,000,000")
            }
            return r
        }
        switch parts.count {
        case 1:
            self.init(rate: try rate(parts[0]), duration: duration)
        case 3:
            let (from, to) = (try rate(parts[0]), try rate(parts[1]))
            let spec = parts[2]
            guard spec.hasPrefix("step="), let slash = spec.firstIndex(of: "/") else {
                throw ScheduleError("'\(text)': the third part is step=<calls/s>/<duration>, as in 1000:20000:step=1000/5s")
            }
            let by = try rate(String(spec[spec.index(spec.startIndex, offsetBy: 5)..<slash]))
            guard let hold = Self.duration(String(spec[spec.index(after: slash)...])) else {
                throw ScheduleError("'\(spec[spec.index(after: slash)...])' is not a duration: use 5s, 500ms or 1m")
            }
            var steps: [Step] = []
            var r = from
            let direction: Double = to >= from ? 1 : -1
            while (to - r) * direction >= -1e-9 {
                steps.append(Step(rate: r, duration: hold))
                r += by * direction
                guard steps.count <= 10_000 else { throw ScheduleError("'\(text)' has more than 10,000 steps") }
            }
            self.init(steps: steps)
        default:
            throw ScheduleError("'\(text)' is not a rate (5000) or a staircase (1000:20000:step=1000/5s)")
        }
    }

    /// `30s`, `500ms`, `2m`, or plain seconds.
    public static func duration(_ text: String) -> Duration? {
        for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0)] where text.hasSuffix(suffix) {
            guard let n = Double(text.dropLast(suffix.count)), n > 0, n.isFinite else { return nil }
            return .nanoseconds(Int64(n * scale * 1e9))
        }
        guard let n = Double(text), n > 0, n.isFinite else { return nil }
        return .nanoseconds(Int64(n * 1e9))
    }

    /// The schedule's length.
    public var duration: Duration { .nanoseconds(startNanos.last.map { $0 + (steps.last?.duration.wholeNanoseconds ?? 0) } ?? 0) }

    /// When call `g` is intended, in nanoseconds after the start. `hint` is
    /// the step the previous lookup found (calls are asked for in order).
    public func offset(ofCall g: Int, hint: inout Int) -> Int64 {
        var s = min(hint, steps.count - 1)
        while s + 1 < steps.count && callsBefore[s + 1] <= g { s += 1 }
        while s > 0 && callsBefore[s] > g { s -= 1 }
        hint = s
        return startNanos[s] + Int64(Double(g - callsBefore[s]) * 1e9 / steps[s].rate)
    }

    /// The rate asked for at `offset` nanoseconds after the start (0 after the end).
    public func rate(at offset: Int64) -> Double {
        for (i, step) in steps.enumerated().reversed() where offset >= startNanos[i] {
            return offset < startNanos[i] + step.duration.wholeNanoseconds ? step.rate : 0
        }
        return 0
    }

    /// The mean rate over the whole schedule.
    public var meanRate: Double { duration.seconds > 0 ? Double(totalCalls) / duration.seconds : 0 }

    public var description: String {
        guard steps.count > 1, let first = steps.first, let last = steps.last else {
            return String(format: "%.0f calls/s", steps.first?.rate ?? 0)
        }
        return String(format: "%.0f to %.0f calls/s in %d steps of %.1f s", first.rate, last.rate, steps.count, first.duration.seconds)
    }
}

public struct ScheduleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

