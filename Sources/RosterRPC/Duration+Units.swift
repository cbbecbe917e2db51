/// The one place a `Duration` becomes a number. Configuration and flags are
/// `Duration`s (`--lease 30s`); the catalog keeps time as seconds, the wire
/// carries whole milliseconds, metrics and the load harness count
/// nanoseconds and microseconds: each reads it here, rounding toward zero.
extension Duration {
    /// Seconds as a number, for what keeps time in seconds (the catalog's
    /// clock) and figures printed.
    package var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// Milliseconds as a number, for figures printed (latencies).
    package var ms: Double { seconds * 1000 }

    /// Whole milliseconds: the wire's deadlines, messages and logs.
    package var wholeMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }

    /// Whole microseconds: latency histograms.
    package var wholeMicroseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }

    /// Whole nanoseconds: metrics, and schedules kept in nanoseconds.
    package var wholeNanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
