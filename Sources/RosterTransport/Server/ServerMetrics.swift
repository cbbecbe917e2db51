import CoreMetrics
import Metrics
import NIOCore
import RosterRPC

/// The dispatch table: method id → method, built once from the hosted services.
struct MethodRouter: Sendable {
    let methods: [UInt32: RPCServerMethod]

    init(services: [any RPCService]) throws(RPCServerError) {
        var methods: [UInt32: RPCServerMethod] = [:]
        for service in services {
            for method in service.methods {
                if let existing = methods[method.descriptor.id] {
                    throw .duplicateMethodID(method.descriptor.id, existing.descriptor, method.descriptor)
                }
                methods[method.descriptor.id] = method
            }
        }
        self.methods = methods
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
/// - `roster_rpc_server_call_duration_seconds{method}`: handler latency.
/// - `roster_rpc_server_inflight_calls`: async calls running now.
/// - `roster_rpc_server_connections`: open connections.
final class ServerMetrics: Sendable {
    private let calls: [UInt32: [Counter]]
    private let durations: [UInt32: Timer]
    private let unknown: Counter
    let inFlight: Meter
    let connections: Meter

    init(router: MethodRouter) {
        var calls: [UInt32: [Counter]] = [:]
        var durations: [UInt32: Timer] = [:]
        for (id, method) in router.methods {
            let name = method.descriptor.description
            calls[id] = RPCStatusCode.allCases.map {
                Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", name), ("code", $0.description)])
            }
            durations[id] = Timer(label: "roster_rpc_server_call_duration_seconds", dimensions: [("method", name)],
                                  preferredDisplayUnit: .seconds)
        }
        self.calls = calls
        self.durations = durations
        unknown = Counter(label: "roster_rpc_server_calls_total", dimensions: [("method", "unknown"), ("code", "UNIMPLEMENTED")])
        inFlight = Meter(label: "roster_rpc_server_inflight_calls")
        connections = Meter(label: "roster_rpc_server_connections")
    }

    func finished(_ method: RPCMethodDescriptor, code: RPCStatusCode, since start: NIODeadline) {
        // allCases is in raw-value order from 0, so the code indexes the array.
        calls[method.id]?[Int(code.rawValue)].increment()
        durations[method.id]?.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }

    func unknownMethod() { unknown.increment() }
}
