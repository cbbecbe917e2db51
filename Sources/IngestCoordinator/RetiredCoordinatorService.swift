import RosterAPI
import RosterRPC

/// Service id 3, `roster.v1.Coordinator`, which served every audience with
/// one token, is retired: each of its old method ids answers UNIMPLEMENTED
/// at once, naming the method that replaces it and the token it needs, so
/// that a client built before the split learns what to do rather than
/// seeing an unknown id (or waiting).
public struct RetiredCoordinatorService: RPCService {
    public init() {}

    /// The old methods: (number, name, its replacement, the token it needs).
    static let replacements: [(UInt32, String, String, String)] = [
        (1, "SubmitFile", "IngestAdmin/SubmitFile", "an operator"), (2, "Status", "IngestAdmin/Status", "an operator or viewer"),
        (3, "ListFiles", "IngestAdmin/ListFiles", "an operator or viewer"), (4, "Scan", "IngestAdmin/Scan", "an operator"),
        (5, "SetWeight", "IngestAdmin/SetWeight", "an operator"),
        (6, "ListAdvertisers", "IngestAdmin/ListAdvertisers", "an operator or viewer"),
        (7, "Rollback", "IngestAdmin/Rollback", "an operator"), (8, "DeleteAdvertiser", "IngestAdmin/DeleteAdvertiser", "an operator"),
        (10, "LeaseTasks", "TaskQueue/LeaseTasks", "a worker"), (11, "Heartbeat", "TaskQueue/Heartbeat", "a worker"),
        (12, "CompleteTask", "TaskQueue/CompleteTask", "a worker"), (13, "FailTask", "TaskQueue/FailTask", "a worker"),
        (20, "RegisterNode", "Tier/RegisterNode", "a node"), (21, "Placement", "Tier/Placement", "a client"),
    ]

    public var methods: [RPCServerMethod] {
        Self.replacements.map { number, name, replacement, token in
            let error = RPCError(.unimplemented, "roster.v1.Coordinator/\(name) is retired: the coordinator serves each audience apart; "
                + "call roster.v1.\(replacement) with \(token) token (docs/OPERATIONS.md)")
            return RPCServerMethod(RPCMethodDescriptor(service: "roster.v1.Coordinator", method: name, id: 3 << 16 | number),
                                   body: .inline { _, _, _ in throw error })
        }
    }
}
