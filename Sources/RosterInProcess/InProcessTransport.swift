import Logging
import RosterRPC
import RosterServerCore

/// Hosts services and calls them in this process, with no sockets: a
/// generated client over an `InProcessTransport` reaches the same handlers,
/// through the same route table, interceptors, deadlines and status mapping
/// as over TCP (`RPCServer`), so service tests need no port.
///
/// Requests and responses are encoded and decoded as on the wire, so a
/// message that would not survive the trip fails here too; only the framing
/// and the connection (flow control, drain, idle timeouts) are left out,
/// and those are tested on their own.
public final class InProcessTransport: RPCClientTransport {
    private let executor: ServerRPCExecutor
    /// How long a call may take when its options name no timeout (nil: no limit).
    public let defaultTimeout: Duration?

    public init(services: [any RPCService], defaultTimeout: Duration? = .seconds(30),
                logger: Logger = Logger(label: "roster.rpc.inprocess")) throws(RPCServerError) {
        self.executor = try ServerRPCExecutor(services: services, logger: logger)
        self.defaultTimeout = defaultTimeout
    }

    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: RPCMethodDescriptor, request: Request, options: CallOptions
    ) async throws -> Response {
        let route = try executor.route(method.id)
        let timeout = options.timeout ?? defaultTimeout
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let context = RPCContext(method: route.descriptor, metadata: options.metadata, deadline: deadline, peer: "in-process")
        let started = ContinuousClock.now
        let bytes = request.serializedBytes()
        let response: [UInt8]
        do {
            try executor.admit(route, context)
            switch route.method.body {
            case .inline(let body):
                var written: [UInt8] = []
                try bytes.withUnsafeBytes { request in
                    try body(request, context) { size, encode in
                        written = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                            encode(UnsafeMutableRawBufferPointer(buffer))
                            count = size
                        }
                    }
                }
                response = written
            case .async(let decode):
                let run = try bytes.withUnsafeBytes { try executor.prepareAsync(decode, request: $0) }
                response = try await Self.run(run, context: context, deadline: deadline, timeout: timeout).serializedBytes()
            }
        } catch {
            throw executor.failed(route, error: error, peer: context.peer, nanoseconds: (ContinuousClock.now - started).wholeNanoseconds)
        }
        executor.succeeded(route, nanoseconds: (ContinuousClock.now - started).wholeNanoseconds)
        return try Response(serializedBytes: response)
    }

    /// Runs an async handler until it answers or its deadline passes; at
    /// the deadline the handler's task is cancelled and the call fails with
    /// DEADLINE_EXCEEDED, as over TCP.
    private static func run(_ body: @escaping RPCServerMethod.AsyncBody, context: RPCContext,
                            deadline: ContinuousClock.Instant?, timeout: Duration?) async throws -> any ProtoMessage {
        guard let deadline, let timeout else { return try await body(context) }
        return try await withThrowingTaskGroup(of: (any ProtoMessage)?.self) { group in
            group.addTask { try await body(context) }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else {
                throw RPCError(.deadlineExceeded, "deadline exceeded after \(timeout.wholeMilliseconds) ms")
            }
            return response
        }
    }
}

