import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC
import SegmentStore
import ServiceLifecycle

/// The ingest coordinator put together: one core (`CoordinatorCore`), the
/// three services it serves by audience (`IngestAdmin` for operators,
/// `TaskQueue` for workers, `Tier` for match servers and applications) and
/// its background loops (election, scan, publish, collect, reconcile).
///
/// Host `services` on a server and run `loops` in a service group (or run
/// this, which runs them all until cancelled or shut down).
public final class CoordinatorService: Service, Sendable {
    public let core: CoordinatorCore
    public let admin: IngestAdminHandler
    public let taskQueue: TaskQueueHandler
    public let tier: TierHandler

    public init(catalog: IngestCatalog, lake: any DataLake, store: any SegmentStorage, publisher: any Publisher,
                configuration: CoordinatorConfiguration = .init(), logger: Logger = Logger(label: "roster.coordinator"),
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        core = CoordinatorCore(catalog: catalog, lake: lake, store: store, publisher: publisher, configuration: configuration,
                               logger: logger, clock: clock)
        admin = IngestAdminHandler(core: core)
        taskQueue = TaskQueueHandler(core: core)
        tier = TierHandler(core: core)
    }

    public var catalog: IngestCatalog { core.catalog }

    /// The RPC services, one per audience, each with its own token check,
    /// and the retired all-audience service's ids, which say what replaced them.
    public var services: [any RPCService] { [admin, taskQueue, tier, RetiredCoordinatorService()] }

    /// The background loops, each its own `Service`.
    public var loops: [any Service] {
        var loops: [any Service] = []
        if let election = core.configuration.election { loops.append(ElectionLoop(core: core, election: election)) }
        loops.append(PublishLoop(core: core))
        loops.append(CollectLoop(core: core))
        loops.append(ReconcileLoop(core: core))
        if let interval = core.configuration.scanInterval { loops.append(ScanLoop(core: core, interval: interval)) }
        return loops
    }

    /// Runs every loop until cancelled or graceful shutdown.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            for loop in loops { group.addTask { try? await loop.run() } }
            await group.waitForAll()
        }
    }

    // Shortcuts for tests and the status page.
    public func advertise(_ address: String) { core.advertise(address) }
    public var isLeader: Bool { core.isLeader }
    public func problemLines() -> [String] { core.problemLines() }
    public func currentStatus(limit: Int) async throws -> StatusResponse { try await core.currentStatus(limit: limit) }
    public func operations(limit: Int) async throws -> IngestCatalog.Operations { try await core.operations(limit: limit) }
    public func queue(limit: Int) async throws -> [IngestCatalog.Operations.Queued] { try await core.queue(limit: limit) }
    public func scanLake(report: Bool = true) async throws -> [FileStatus] { try await core.scanLake(report: report) }
    public func publishPending() async { await core.publishPending() }
    public func collectGarbage() async { await core.collectGarbage() }
    public func reconcile() async { await core.publisher.reconcile(core: core) }
    @_spi(Testing) public var scanLookupCount: Int { core.scanLookupCount }
}
