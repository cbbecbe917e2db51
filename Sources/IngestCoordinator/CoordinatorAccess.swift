import Foundation
import Logging
import RosterAPI
import RosterRPC

/// Who may call what on the coordinator: one set of tokens per audience,
/// each able to make only its own audience's calls (docs/OPERATIONS.md has
/// the table).
///
/// | service | method | roles |
/// | --- | --- | --- |
/// | `IngestAdmin` | Status, ListFiles, ListAdvertisers | operator, viewer |
/// | `IngestAdmin` | SubmitFile, Scan, SetWeight, Rollback, DeleteAdvertiser | operator |
/// | `TaskQueue` | every method | worker |
/// | `Tier` | RegisterNode | node |
/// | `Tier` | Placement | client (the token applications match with), node |
public struct CoordinatorAccess: Sendable {
    /// Operators: everything `IngestAdmin` offers (`ROSTER_OPERATOR_TOKENS`).
    public var operatorTokens: Set<String>
    /// Dashboards and read-only tools: `IngestAdmin`'s reads (`ROSTER_VIEWER_TOKENS`).
    public var viewerTokens: Set<String>
    /// Block workers: `TaskQueue` (`ROSTER_WORKER_TOKENS`).
    public var workerTokens: Set<String>
    /// Match servers of a tier: `Tier.RegisterNode` (`ROSTER_NODE_TOKENS`).
    public var nodeTokens: Set<String>
    /// Applications: `Tier.Placement` (`ROSTER_CLIENT_TOKENS`, the same
    /// tokens match servers take for `Match`).
    public var clientTokens: Set<String>
    /// Local development only: every call is allowed.
    public var disabled: Bool

    public init(operatorTokens: Set<String> = [], viewerTokens: Set<String> = [], workerTokens: Set<String> = [],
                nodeTokens: Set<String> = [], clientTokens: Set<String> = [], disabled: Bool = false) {
        self.operatorTokens = operatorTokens
        self.viewerTokens = viewerTokens
        self.workerTokens = workerTokens
        self.nodeTokens = nodeTokens
        self.clientTokens = clientTokens
        self.disabled = disabled
    }

    /// No checks at all (`roster dev`, tests).
    public static let open = CoordinatorAccess(disabled: true)

    /// The environment variables each role's tokens come from (comma-separated).
    public static let variables: [(role: String, variable: String)] = [
        ("operator", "ROSTER_OPERATOR_TOKENS"), ("viewer", "ROSTER_VIEWER_TOKENS"), ("worker", "ROSTER_WORKER_TOKENS"),
        ("node", "ROSTER_NODE_TOKENS"), ("client", "ROSTER_CLIENT_TOKENS"),
    ]

    /// Tokens from the environment (`variables`).
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> CoordinatorAccess {
        func tokens(_ name: String) -> Set<String> {
            Set((environment[name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        return CoordinatorAccess(operatorTokens: tokens("ROSTER_OPERATOR_TOKENS"), viewerTokens: tokens("ROSTER_VIEWER_TOKENS"),
                                 workerTokens: tokens("ROSTER_WORKER_TOKENS"), nodeTokens: tokens("ROSTER_NODE_TOKENS"),
                                 clientTokens: tokens("ROSTER_CLIENT_TOKENS"))
    }

    /// Whether no role has a token (and checks are not explicitly off).
    public var isEmpty: Bool {
        operatorTokens.isEmpty && viewerTokens.isEmpty && workerTokens.isEmpty && nodeTokens.isEmpty && clientTokens.isEmpty
    }

    private var roles: [String: Set<String>] {
        ["operator": operatorTokens, "viewer": viewerTokens, "worker": workerTokens, "node": nodeTokens, "client": clientTokens]
    }

    /// `IngestAdmin`'s methods a viewer may call: those that change nothing.
    public static let readOnlyAdminMethods: Set<String> = ["Status", "ListFiles", "ListAdvertisers"]

    /// The check on `IngestAdmin`: operators call everything, viewers the reads.
    public var adminChecks: [any RPCInterceptor] {
        disabled ? [] : [RoleCheck(tokens: roles, permitted: Dictionary(uniqueKeysWithValues: Self.readOnlyAdminMethods.map { ($0, ["operator", "viewer"]) }),
                                   otherwise: ["operator"])]
    }

    /// The check on `TaskQueue`: workers only.
    public var taskQueueChecks: [any RPCInterceptor] {
        disabled ? [] : [RoleCheck(tokens: roles, otherwise: ["worker"])]
    }

    /// The check on `Tier`: nodes register; clients (and nodes) read placement.
    public var tierChecks: [any RPCInterceptor] {
        disabled ? [] : [RoleCheck(tokens: roles, permitted: ["Placement": ["client", "node"]], otherwise: ["node"])]
    }
}
