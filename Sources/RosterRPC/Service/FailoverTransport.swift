import Synchronization

/// Calls to one of several interchangeable servers — coordinators sharing
/// a catalog, of which one leads at a time — moving to the next when one
/// answers UNAVAILABLE (a standby, a server shutting down) or cannot be
/// reached (which transports report as UNAVAILABLE), and, when asked to,
/// when one does not answer within the call's deadline (a paused or cut-off
/// leader: the process is there, its port accepts, nothing answers).
///
/// Each call starts at the server that answered last, and tries each
/// server at most once; the last UNAVAILABLE is what the caller sees when
/// none answers. Retrying on another server is safe for what it is used
/// for: a standby refuses a write before doing anything, and the
/// coordinator's writes are idempotent or fenced by lease tokens (a report
/// sent twice is accepted once).
public final class FailoverTransport<Transport: RPCClientTransport>: RPCClientTransport, Sendable {
    public let transports: [Transport]
    /// The statuses that send a call on to the next server.
    public let failover: Set<RPCStatusCode>
    private let current = Mutex(0)

    /// `failover`: UNAVAILABLE always; add DEADLINE_EXCEEDED for callers
    /// that give each call a short deadline (workers, nodes, the CLI), so
    /// that a leader that stops answering is left after one deadline.
    public init(_ transports: [Transport], failover: Set<RPCStatusCode> = [.unavailable]) {
        precondition(!transports.isEmpty, "FailoverTransport needs at least one transport")
        self.transports = transports
        self.failover = failover.union([.unavailable])
    }

    /// The index of the server calls go to first.
    public var preferred: Int { current.withLock { $0 } }

    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: RPCMethodDescriptor, request: Request, options: CallOptions
    ) async throws -> Response {
        let start = current.withLock { $0 }
        var last: RPCError?
        for step in 0..<transports.count {
            let index = (start + step) % transports.count
            do {
                let response: Response = try await transports[index].unary(method, request: request, options: options)
                if step > 0 { current.withLock { $0 = index } }
                return response
            } catch let error as RPCError where failover.contains(error.code) {
                last = error
            }
        }
        throw last!
    }
}
