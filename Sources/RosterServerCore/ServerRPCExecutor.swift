import Logging
import RosterRPC

/// What every transport does with one call, written once (as grpc-swift 2's
/// `ServerRPCExecutor`): find its route, admit it through the route's
/// interceptors, decode an async handler's request, and turn a failure into
/// the status it answers, counted in the route's metrics. (An inline
/// handler is called in place, straight from the transport's buffer into
/// its send buffer, `RPCServerMethod.inline`.) The TCP server (`ServerConnectionHandler`) and the
/// in-process transport differ only in where a call's bytes come from and
/// go, and in how a deadline is kept (an event-loop timer, a task race).
///
/// What a call touches is `@inlinable`, as `Route` is: a single `Match` is
/// about a microsecond of work, and a call into this module for each step
/// would show in it.
package struct ServerRPCExecutor: Sendable {
    @usableFromInline package let routes: RouteTable
    @usableFromInline package let logger: Logger

    package init(routes: RouteTable, logger: Logger) {
        self.routes = routes
        self.logger = logger
    }

    package init(services: [any RPCService], logger: Logger) throws(RPCServerError) {
        self.init(routes: try RouteTable(services: services), logger: logger)
    }

    /// The route for a wire method id, or the UNIMPLEMENTED the call answers.
    @inlinable
    package func route(_ id: UInt32) throws(RPCError) -> Route {
        guard let route = routes.route(id) else { throw Self.unknownMethod(id) }
        return route
    }

    /// The answer to a method id no hosted service has.
    package static func unknownMethod(_ id: UInt32) -> RPCError {
        RPCError(.unimplemented, "unknown method id 0x\(String(id, radix: 16))")
    }

    /// Runs the route's interceptors (its service's token checks) on the
    /// call, before its request is decoded; throwing refuses it.
    @inlinable
    package func admit(_ route: Route, _ context: RPCContext) throws(RPCError) {
        if route.hasInterceptors { try route.intercept(context) }
    }

    /// Decodes an admitted async call's request: what the transport runs in
    /// a task, under the call's deadline.
    @inlinable
    package func prepareAsync(_ decode: RPCServerMethod.Decoder, request: UnsafeRawBufferPointer) throws -> RPCServerMethod.AsyncBody {
        try decode(request)
    }

    /// Records a call that ended without an answer from its handler
    /// (cancelled, or its deadline passed before it could run).
    @inlinable
    package func ended(_ route: Route, code: RPCStatusCode, nanoseconds: Int64?) {
        route.metrics.finished(code: code, nanoseconds: nanoseconds)
    }

    /// Records a call that succeeded (timed when given how long it took).
    @inlinable
    package func succeeded(_ route: Route, nanoseconds: Int64?) {
        route.metrics.finished(code: .ok, nanoseconds: nanoseconds)
    }

    /// Records the calls of a run that succeeded (`MethodMetrics.succeeded`).
    @inlinable
    package func succeeded(_ route: Route, count: Int, meanNanoseconds: Int64?, samples: Int) {
        route.metrics.succeeded(count: count, meanNanoseconds: meanNanoseconds, samples: samples)
    }

    /// The status a call that failed with `error` answers (the one mapping,
    /// `RPCError.answering`), recorded in the route's metrics.
    package func failed(_ route: Route, error: any Error, peer: String, nanoseconds: Int64?) -> RPCError {
        let status = RPCError.answering(error, method: route.descriptor, peer: peer, logger: logger)
        route.metrics.finished(code: status.code, nanoseconds: nanoseconds)
        return status
    }
}
