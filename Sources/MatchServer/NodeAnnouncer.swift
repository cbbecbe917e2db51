import Foundation
import Logging
import RosterAPI
import RosterRPC
import ServiceLifecycle

/// Makes a match server a node of a tier: registers it with the coordinator
/// (`RegisterNode`) when it starts and then every heartbeat interval the
/// coordinator asks for, so that the coordinator places advertisers on it
/// and takes them elsewhere when it stops being heard from.
///
/// Each process start is a new incarnation: the coordinator then compares
/// what the node still serves with its catalog before trusting it with any
/// advertiser (docs/SERVING.md).
public struct NodeAnnouncer<Transport: RPCClientTransport>: Service {
    public struct Configuration: Sendable {
        public var nodeID: String
        /// Where clients and the coordinator reach this server.
        public var address: String
        public var weight: Double
        /// Sent as `authorization: Bearer <token>` to the coordinator.
        public var token: String?

        public init(nodeID: String, address: String, weight: Double = 1, token: String? = nil) {
            self.nodeID = nodeID
            self.address = address
            self.weight = weight
            self.token = token
        }
    }

    public let configuration: Configuration
    public let incarnation: String
    private let coordinator: Tier.Client<Transport>
    private let catalog: MatchCatalog
    private let logger: Logger

    public init(configuration: Configuration, coordinator: Tier.Client<Transport>, catalog: MatchCatalog,
                incarnation: String = UUID().uuidString, logger: Logger = Logger(label: "roster.match.node")) {
        self.configuration = configuration
        self.coordinator = coordinator
        self.catalog = catalog
        self.incarnation = incarnation
        self.logger = logger
    }

    /// The registration as sent now.
    public func request() -> RegisterNodeRequest {
        var request = RegisterNodeRequest()
        request.nodeID = configuration.nodeID
        request.address = configuration.address
        request.weight = configuration.weight
        request.incarnation = incarnation
        let served = catalog.advertisers
        request.advertisersServed = UInt32(clamping: served.count)
        request.bytesServed = UInt64(served.keys.reduce(0) { $0 + (catalog.current($1)?.keyCount ?? 0) * 16 })
        return request
    }

    /// Registers once; returns the interval the coordinator asks for.
    ///
    /// The call's deadline is one heartbeat interval (at least half a
    /// second): a coordinator that does not answer by then (paused, cut off)
    /// is left for the next one (the transport follows the leader), so a
    /// node stays registered with whoever leads, not stuck on a silent one.
    public func announce(timeout: Duration = .seconds(1)) async throws -> Duration {
        let options = CallOptions(timeout: max(timeout, .milliseconds(500))).bearer(configuration.token)
        let response = try await coordinator.registerNode(request(), options: options)
        return .milliseconds(max(100, Int64(response.heartbeatIntervalMs == 0 ? 1_000 : response.heartbeatIntervalMs)))
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var registered = false
            var failing = false
            var interval = Duration.seconds(1)
            while !Task.isCancelled {
                do {
                    interval = try await announce(timeout: interval)
                    if !registered || failing {
                        logger.notice("registered with the coordinator", metadata: [
                            "node": "\(configuration.nodeID)", "address": "\(configuration.address)"])
                    }
                    registered = true
                    failing = false
                } catch {
                    // Once per outage, not once a second.
                    if !failing { logger.warning("cannot register with the coordinator; retrying", metadata: ["error": "\(error)"]) }
                    failing = true
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
