import CoreMetrics
import Metrics
import NIOCore
import RosterRPC
import RosterTransport
import Synchronization

/// A hosted method with its metrics, resolved once so that a call costs one
/// table lookup and no dictionary or label work.
final class Route: Sendable {
    let method: RPCServerMethod
    let metrics: MethodMetrics
    /// The service's checks (`RPCService.interceptors`), run before the handler.
    let interceptors: [any RPCInterceptor]

    init(method: RPCServerMethod, metrics: MethodMetrics, interceptors: [any RPCInterceptor]) {
        self.method = method
        self.metrics = metrics
        self.interceptors = interceptors
    }

    var descriptor: RPCMethodDescriptor { method.descriptor }

    @inline(__always)
    func intercept(_ context: RPCContext) throws(RPCError) {
        for interceptor in interceptors { try interceptor.intercept(context) }
    }
}

/// The dispatch table, built once from the hosted services: an array indexed
/// by service id and method number (ids are small and dense), so a call costs
/// one indexed lookup, not a hashed one.
struct RouteTable: Sendable {
    private let services: [[Route?]]

    init(services hosted: [any RPCService]) throws(RPCServerError) {
        var services: [[Route?]] = []
        for service in hosted {
            let interceptors = service.interceptors
            for method in service.methods {
                let id = method.descriptor.id
                let serviceID = Int(id >> 16), number = Int(id & 0xFFFF)
                while services.count <= serviceID { services.append([]) }
                while services[serviceID].count <= number { services[serviceID].append(nil) }
                if let existing = services[serviceID][number] {
                    throw .duplicateMethodID(id, existing.descriptor, method.descriptor)
                }
                services[serviceID][number] = Route(method: method, metrics: MethodMetrics(method.descriptor), interceptors: interceptors)
            }
        }
        self.services = services
    }

    @inline(__always)
    func route(_ id: UInt32) -> Route? {
        let service = Int(id >> 16), number = Int(id & 0xFFFF)
        guard service < services.count, number < services[service].count else { return nil }
        return services[service][number]
    }
}

/// A mistake in how a server was put together.
public enum RPCServerError: Error, Sendable, CustomStringConvertible {
    case duplicateMethodID(UInt32, RPCMethodDescriptor, RPCMethodDescriptor)
    case notStarted

    public var description: String {
        switch self {
        case .duplicateMethodID(let id, let a, let b):
            return "method id 0x\(String(id, radix: 16)) is served by both \(a) and \(b)"
        case .notStarted:
            return "the server has not been started"
        }
    }
}

/// The server's metrics, created once so the hot path only increments.
///
/// - `roster_rpc_server_calls_total{method, code}`: calls finished, by status.
/// - `roster_rpc_server_call_duration_seconds{method}`: handler latency; for
///   inline methods (about a microsecond each) one call in 16 is timed.
/// - `roster_rpc_server_inflight_calls`: async calls running now.
/// - `roster_rpc_server_connections`: open connections.
final class ServerMetrics: Sendable {
    private let unknown: Counter
    let inFlight: Meter
    let connections: Meter
    /// Connection handlers not yet deinitialised. Not exported: a test uses it
    /// to prove that a closed connection leaves nothing behind.
    let liveHandlers = Atomic<Int>(0)

    init() {
        unknown = Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", "unknown"), ("code", "UNIMPLEMENTED")])
        inFlight = Meter(label: "roster_rpc_server_inflight_calls")
        connections = Meter(label: "roster_rpc_server_connections")
    }

    func unknownMethod() { unknown.increment() }
}

/// One method's call counters (one per status code) and duration timer.
final class MethodMetrics: Sendable {
    private let calls: [Counter]
    private let duration: Timer

    init(_ descriptor: RPCMethodDescriptor) {
        let name = descriptor.description
        // allCases is in raw-value order from 0, so a code indexes the array.
        calls = RPCStatusCode.allCases.map {
            Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", name), ("code", $0.description)])
        }
        duration = Timer(label: "roster_rpc_server_call_duration_seconds", dimensions: [("method", name)],
                         preferredDisplayUnit: .seconds)
    }

    /// Counts a finished call; times it if it was started with a clock reading.
    func finished(code: RPCStatusCode, since start: NIODeadline?) {
        calls[Int(code.rawValue)].increment()
        if let start { duration.recordNanoseconds((NIODeadline.now() - start).nanoseconds) }
    }
}
