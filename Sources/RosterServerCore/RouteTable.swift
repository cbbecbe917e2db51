import RosterRPC

/// A hosted method with its metrics, resolved once so that a call costs one
/// table lookup and no dictionary or label work.
///
/// What a call touches is `@inlinable`: the route is read on every call, in
/// the transports' modules, and a call into this module for each field
/// measurably slowed single Match calls.
package final class Route: Sendable {
    @usableFromInline package let method: RPCServerMethod
    @usableFromInline package let metrics: MethodMetrics
    /// The service's checks (`RPCService.interceptors`), run before the handler.
    @usableFromInline package let interceptors: [any RPCInterceptor]

    init(method: RPCServerMethod, metrics: MethodMetrics, interceptors: [any RPCInterceptor]) {
        self.method = method
        self.metrics = metrics
        self.interceptors = interceptors
    }

    @inlinable
    package var descriptor: RPCMethodDescriptor { method.descriptor }

    @inlinable
    package var hasInterceptors: Bool { !interceptors.isEmpty }

    @inlinable
    package func intercept(_ context: RPCContext) throws(RPCError) {
        for interceptor in interceptors { try interceptor.intercept(context) }
    }
}

/// The dispatch table, built once from the hosted services: an array indexed
/// by service id and method number (ids are small and dense), so a call costs
/// one indexed lookup, not a hashed one.
package struct RouteTable: Sendable {
    @usableFromInline let services: [[Route?]]

    package init(services hosted: [any RPCService]) throws(RPCServerError) {
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

    @inlinable
    package func route(_ id: UInt32) -> Route? {
        let service = Int(id >> 16), number = Int(id & 0xFFFF)
        guard service < services.count, number < services[service].count else { return nil }
        return services[service][number]
    }
}

/// A mistake in how a server was put together.
public enum RPCServerError: Error, Sendable, CustomStringConvertible {
    case duplicateMethodID(UInt32, RPCMethodDescriptor, RPCMethodDescriptor)

    public var description: String {
        switch self {
        case .duplicateMethodID(let id, let a, let b):
            return "method id 0x\(String(id, radix: 16)) is served by both \(a) and \(b)"
        }
    }
}

