/// What the server runtime needs to know of one generated method, and what a
/// client sends on the wire to name it.
public struct RPCMethodDescriptor: Sendable, Hashable, CustomStringConvertible {
    /// The fully qualified service name, e.g. `roster.v1.MatchService`.
    public let service: String
    /// The method name as written in the schema, e.g. `MatchMany`.
    public let method: String
    /// The number the wire protocol carries: `serviceID << 16 | methodNumber`.
    public let id: UInt32

    public init(service: String, method: String, id: UInt32) {
        self.service = service
        self.method = method
        self.id = id
    }

    /// `roster.v1.MatchService/MatchMany`, the form logs and metrics use.
    public var description: String { "\(service)/\(method)" }
}

/// Key/value pairs that travel with a call: an auth token, a trace id.
///
/// Keys are compared exactly; lower-case ASCII keys are the convention.
public struct Metadata: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    public var entries: [(key: String, value: String)] { storage.map { ($0.key, $0.value) } }
    @usableFromInline var storage: [Entry]

    @usableFromInline
    struct Entry: Sendable, Hashable {
        var key: String
        var value: String
    }

    public init() { storage = [] }

    public init(dictionaryLiteral elements: (String, String)...) {
        storage = elements.map { Entry(key: $0.0, value: $0.1) }
    }

    /// The first value stored under `key`.
    public subscript(key: String) -> String? {
        get { storage.first { $0.key == key }?.value }
        set {
            storage.removeAll { $0.key == key }
            if let newValue { storage.append(Entry(key: key, value: newValue)) }
        }
    }

    public mutating func append(_ value: String, forKey key: String) {
        storage.append(Entry(key: key, value: value))
    }

    public var isEmpty: Bool { storage.isEmpty }
    public var count: Int { storage.count }
}

/// Per-call settings a client chooses.
public struct CallOptions: Sendable {
    /// How long the call may take, measured by the server from receipt;
    /// `nil` means the transport's default.
    public var timeout: Duration?
    public var metadata: Metadata

    public init(timeout: Duration? = nil, metadata: Metadata = [:]) {
        self.timeout = timeout
        self.metadata = metadata
    }

    public static let defaults = CallOptions()
}

/// What a handler knows about the call it is serving.
public struct RPCContext: Sendable {
    public let method: RPCMethodDescriptor
    public let metadata: Metadata
    /// When the call must be answered by, on the server's monotonic clock.
    public let deadline: ContinuousClock.Instant?
    /// The remote address, for logs.
    public let peer: String

    public init(method: RPCMethodDescriptor, metadata: Metadata, deadline: ContinuousClock.Instant?, peer: String) {
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
    }
}

/// One method as the server runtime dispatches it: request bytes in, a
/// response message out.
///
/// A handler that never suspends (a lookup in memory) is `inline`: the runtime
/// runs it on the connection's event loop with no task hop. Anything that
/// awaits is `async`: the request is decoded on the event loop, then the
/// handler runs in a task.
public struct RPCServerMethod: Sendable {
    /// Receives an inline handler's response: its encoded size, then a
    /// function that writes exactly that many bytes into the space given.
    /// The transport writes the response straight into its send buffer, so
    /// the response is never boxed or copied on the way.
    public typealias ResponseSink = (_ size: Int, _ encode: (UnsafeMutableRawBufferPointer) -> Void) -> Void
    /// Decodes the request, runs the handler, and passes the response to the
    /// sink (once, as its last step, and only if the handler succeeded).
    public typealias InlineBody = @Sendable (UnsafeRawBufferPointer, RPCContext, ResponseSink) throws -> Void
    public typealias AsyncBody = @Sendable (RPCContext) async throws -> any ProtoMessage
    public typealias Decoder = @Sendable (UnsafeRawBufferPointer) throws -> AsyncBody

    /// Answers a run of calls to one inline method that arrived together
    /// (in one read, with the same head: the same deadline and metadata),
    /// each exactly as the method's `InlineBody` would, in order: `answer`
    /// (a `ResponseSink`) or `fail` once per request, each time for the
    /// next one. What the calls share is done once: the transport admits
    /// the run once, and the handler may resolve what they name once and
    /// overlap their work (the lookups of a run of single `Match` calls
    /// wait on memory together, as a batch's do).
    ///
    /// Why: a single `Match` is well under a microsecond of real work, and
    /// a client that pipelines them sends dozens in one packet. Answered
    /// one by one, each paid the whole per-call toll (head, route, context,
    /// token check, handler lookup, metrics) and a cache miss of its own.
    public typealias InlineRunBody = @Sendable (
        _ requests: UnsafeBufferPointer<UnsafeRawBufferPointer>, _ context: RPCContext,
        _ answer: ResponseSink, _ fail: (any Error) -> Void
    ) -> Void

    public enum Body: Sendable {
        case inline(InlineBody)
        case async(Decoder)
    }

    public let descriptor: RPCMethodDescriptor
    public let body: Body
    /// How an inline method answers a run of calls, if it can do better
    /// than its `body` once per call; transports that see one call at a
    /// time (in process) use `body` alone, so both must answer alike.
    public let run: InlineRunBody?

    public init(_ descriptor: RPCMethodDescriptor, body: Body, run: InlineRunBody? = nil) {
        self.descriptor = descriptor
        self.body = body
        self.run = run
    }

    /// A method whose handler runs inline on the event loop.
    ///
    /// Inlinable so that it is specialised where the generated code names the
    /// concrete request and response types: decoding and encoding then run
    /// without generic metadata lookups or witness-table calls.
    @inlinable
    public static func inline<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: RPCMethodDescriptor,
        _ handler: @escaping @Sendable (Request, RPCContext) throws -> Response
    ) -> RPCServerMethod {
        RPCServerMethod(descriptor, body: .inline { bytes, context, sink in
            let response = try handler(try Request(decoding: bytes), context)
            let size = response.serializedSize
            sink(size) { buffer in
                let written = response.encode(into: buffer)
                assert(written == size, "serializedSize disagrees with encode(to:)")
            }
        })
    }

    /// A method whose handler may suspend.
    @inlinable
    public static func async<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: RPCMethodDescriptor,
        _ handler: @escaping @Sendable (Request, RPCContext) async throws -> Response
    ) -> RPCServerMethod {
        RPCServerMethod(descriptor, body: .async { bytes in
            let request = try Request(decoding: bytes)
            return { context in try await handler(request, context) }
        })
    }
}

/// A service implementation the server can host: generated protocols provide
/// `methods` from the handler functions a type implements.
public protocol RPCService: Sendable {
    var methods: [RPCServerMethod] { get }
    /// Checks that run before every method of the service, in order
    /// (authentication, say). They belong to the service, not to each
    /// handler, so a method added later cannot forget them. None by default.
    var interceptors: [any RPCInterceptor] { get }
}

extension RPCService {
    public var interceptors: [any RPCInterceptor] { [] }
}

/// A check the server runs on a call before its handler: before the request
/// is even decoded, so a caller that may not call learns that first, and
/// pays no decoding. Throwing answers the call with the error; the handler
/// never runs.
///
/// Interceptors run on the connection's event loop for every call: they
/// must not block. Their answer must depend on the context alone (the
/// method, metadata, deadline and peer): a run of calls that share all of
/// those (`RPCServerMethod.InlineRunBody`) is admitted once for all.
public protocol RPCInterceptor: Sendable {
    func intercept(_ context: RPCContext) throws(RPCError)
}

/// What a generated client calls: something that can carry one unary call.
public protocol RPCClientTransport: Sendable {
    func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: RPCMethodDescriptor, request: Request, options: CallOptions
    ) async throws -> Response
}
