/// Tokens travel as the `authorization` metadata entry, `Bearer <token>`,
/// as in HTTP and gRPC. These two helpers are the only places that spell it.
extension CallOptions {
    /// These options with `token` as the caller's bearer token (unchanged when nil).
    public func bearer(_ token: String?) -> CallOptions {
        guard let token else { return self }
        var options = self
        options.metadata["authorization"] = "Bearer \(token)"
        return options
    }
}

extension RPCContext {
    /// The caller's bearer token, if the call carries one.
    public var bearerToken: String? {
        guard let header = metadata["authorization"], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst(7))
    }
}
