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

/// Who may call which methods of a service, by the role of the caller's
/// token: each token belongs to one or more roles ("operator", "viewer",
/// "worker", …), and each method names the roles that may call it.
///
/// A call without a token, or with one no role knows, is UNAUTHENTICATED; a
/// known token whose roles may not call the method is PERMISSION_DENIED,
/// saying which role it would need, so that a misconfigured client learns
/// what is wrong rather than that its token is "unknown".
public struct RoleCheck: RPCInterceptor {
    /// Each token's roles.
    public let roles: [String: Set<String>]
    /// The roles that may call each method, by method name.
    public let permitted: [String: Set<String>]
    /// The roles that may call a method `permitted` does not name.
    public let otherwise: Set<String>

    /// - Parameters:
    ///   - tokens: each role's tokens, by role name.
    ///   - permitted: for each method name, the roles that may call it.
    ///   - otherwise: the roles that may call the service's other methods.
    public init(tokens: [String: Set<String>], permitted: [String: Set<String>] = [:], otherwise: Set<String>) {
        var roles: [String: Set<String>] = [:]
        for (role, set) in tokens {
            for token in set { roles[token, default: []].insert(role) }
        }
        self.roles = roles
        self.permitted = permitted
        self.otherwise = otherwise
    }

    func allowed(_ method: String) -> Set<String> { permitted[method] ?? otherwise }

    public func intercept(_ context: RPCContext) throws(RPCError) {
        let allowed = allowed(context.method.method)
        let needed = Self.article(allowed.sorted().joined(separator: " or "))
        guard let token = context.bearerToken else {
            throw RPCError(.unauthenticated, "\(context.method) needs \(needed) token (authorization: Bearer <token>)")
        }
        guard let held = roles[token] else {
            throw RPCError(.unauthenticated, "unknown token; \(context.method) needs \(needed) token")
        }
        guard held.isDisjoint(with: allowed) else { return }
        throw RPCError(.permissionDenied, "\(Self.article(held.sorted().joined(separator: "/"))) token cannot call \(context.method): it needs \(needed) token")
    }

    /// "an operator", "a worker".
    static func article(_ noun: String) -> String {
        ("aeiou".contains(noun.first ?? "x") ? "an " : "a ") + noun
    }
}
