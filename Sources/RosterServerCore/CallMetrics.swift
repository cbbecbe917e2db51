import CoreMetrics
import Metrics
import RosterRPC
import Synchronization

/// The server's metrics, created once so the hot path only increments.
///
/// - `roster_rpc_server_calls_total{method, code}`: calls finished, by status.
/// - `roster_rpc_server_call_duration_seconds{method}`: handler latency; for
///   inline methods (about a microsecond each) one call in 16 is timed.
/// - `roster_rpc_server_inflight_calls`: async calls running now.
/// - `roster_rpc_server_connections`: open connections.
package final class ServerMetrics: Sendable {
    private let unknown: Counter
    package let inFlight: Meter
    package let connections: Meter
    /// Connection handlers not yet deinitialised. Not exported: a test uses it
    /// to prove that a closed connection leaves nothing behind.
    package let liveHandlers = Atomic<Int>(0)

    package init() {
        unknown = Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", "unknown"), ("code", "UNIMPLEMENTED")])
        inFlight = Meter(label: "roster_rpc_server_inflight_calls")
        connections = Meter(label: "roster_rpc_server_connections")
    }

    package func unknownMethod() { unknown.increment() }
}

/// One method's call counters (one per status code) and duration timer.
package final class MethodMetrics: Sendable {
    @usableFromInline let calls: [Counter]
    @usableFromInline let duration: Timer

    init(_ descriptor: RPCMethodDescriptor) {
        let name = descriptor.description
        // allCases is in raw-value order from 0, so a code indexes the array.
        calls = RPCStatusCode.allCases.map {
            Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", name), ("code", $0.description)])
        }
        duration = Timer(label: "roster_rpc_server_call_duration_seconds", dimensions: [("method", name)],
                         preferredDisplayUnit: .seconds)
    }

    /// Counts a finished call, and times it when given how long it took
    /// (each transport reads its own clock: the TCP server NIO's, so that
    /// timing one call in 16 costs no trip into the concurrency runtime).
    @inlinable
    package func finished(code: RPCStatusCode, nanoseconds: Int64?) {
        calls[Int(code.rawValue)].increment()
        if let nanoseconds { duration.recordNanoseconds(nanoseconds) }
    }

    /// Counts the `count` calls of a run (`RPCServerMethod.run`) that
    /// succeeded, and records the run's mean time per call `samples` times:
    /// once for each call in 16 the run holds, so a run is timed as often
    /// as its calls would have been one by one.
    @inlinable
    package func succeeded(count: Int, meanNanoseconds: Int64?, samples: Int) {
        if count > 0 { calls[Int(RPCStatusCode.ok.rawValue)].increment(by: Int64(count)) }
        guard let meanNanoseconds else { return }
        for _ in 0..<samples { duration.recordNanoseconds(meanNanoseconds) }
    }
}
