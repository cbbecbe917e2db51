import ArgumentParser
import DataLake
import Foundation
import IngestCoordinator
import IngestWorker
import Logging
import MatchServer
import PostgresSQL
import RosterAPI
import RosterClient
import RosterMetrics
import RosterServer
import RosterTLS
import SegmentStore
import ServiceLifecycle

/// The data folder of one deployment: `lake/`, `store/` (runs, segments and
/// the match manifest) and `catalog.sqlite`, each overridable.
struct DataOptions: ParsableArguments {
    @Option(help: "The data folder (lake, segment store, catalog).")
    var data: String = ProcessInfo.processInfo.environment["ROSTER_DATA"] ?? "./roster-data"

    @Option(help: "The lake: a folder <lake>/<advertiser-id>/<file>, or s3://bucket/prefix (default: <data>/lake).")
    var lake: String?

    @Option(help: ArgumentHelp(
        "The segment store shared by workers and match servers: a folder, or s3://bucket/prefix (default: <data>/store).",
        discussion: "With s3:// the folder <data>/store holds this host's files being written and the copies it reads."))
    var store: String?

    @Option(help: ArgumentHelp(
        "The coordinator's catalog: a SQLite file, or postgres://user@host[:port]/database (default: <data>/catalog.sqlite).",
        discussion: "The password of a PostgreSQL catalog comes from the address or from PGPASSWORD."))
    var catalog: String?

    @OptionGroup var s3: S3Options

    var dataURL: URL { URL(fileURLWithPath: data).standardizedFileURL }
    var lakeIsS3: Bool { lake?.hasPrefix("s3://") == true }
    var storeIsS3: Bool { store?.hasPrefix("s3://") == true }
    var lakeURL: URL {
        lake.flatMap { lakeIsS3 ? nil : URL(fileURLWithPath: $0).standardizedFileURL } ?? dataURL.appendingPathComponent("lake")
    }
    /// The store folder, or for an object store this host's folder of its files.
    var storeFolderURL: URL {
        store.flatMap { storeIsS3 ? nil : URL(fileURLWithPath: $0).standardizedFileURL } ?? dataURL.appendingPathComponent("store")
    }
    var catalogIsPostgres: Bool { catalog.map { $0.hasPrefix("postgres://") || $0.hasPrefix("postgresql://") } ?? false }
    var catalogPath: String { catalogIsPostgres ? catalog! : catalog ?? dataURL.appendingPathComponent("catalog.sqlite").path }

    func createFolders() throws {
        for url in [dataURL] + (lakeIsS3 ? [] : [lakeURL]) + [storeFolderURL] {
            do {
                try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            } catch {
                throw CLIError("cannot create \(url.path): \(error.localizedDescription)")
            }
        }
    }
}

/// The coordinator's policy knobs as flags.
struct IngestOptions: ParsableArguments {
    @Option(help: "Block size in bytes (default 64 MiB); a file of fewer than 8 blocks is cut into 8, of at least 4 MiB.")
    var blockSize: Int64 = 64 << 20

    @Option(help: "Bytes of keys per merge task (default 32 MiB): a version's merges split the key space into about size / this many ranges.")
    var mergeBytes: Int64 = 32 << 20

    @Option(help: "Lease length (30s, 2m; a bare number is seconds); workers renew at a third of it.")
    var lease: DurationArgument = DurationArgument(argument: "30s")!

    @Option(help: "Failed or expired attempts of one task before its file version fails.")
    var maxAttempts: Int = 4

    @Option(help: "Largest fraction of invalid lines a file may have (0.001 = 0.1%).")
    var invalidThreshold: Double = 0.001

    @Option(help: "Time between lake scans (2s, 1m; 0: scan only on submit or Scan).")
    var scanInterval: DurationArgument = DurationArgument(argument: "2s")!

    @Option(help: ArgumentHelp(
        "How long a lake file must go unmodified before a scan takes it (default: 1s for a folder, 0 for an object store).",
        discussion: "A file still being written in place must not be read half-written. A lake whose files appear whole (an object store's, or a folder's when every file is renamed into place, as the lake's rules ask) can take them at once: a delta then serves within a scan interval of its drop."))
    var settleTime: DurationArgument?

    @Option(help: "Earlier versions of each advertiser whose segments are kept besides the live one's, which `roster rollback` can serve again at once (0: none).")
    var keepVersions: Int = 1

    @Option(help: "Time between comparisons of what the match server serves with the catalog (10s; a list it lost or found damaged is rebuilt, a deleted one unpublished).")
    var reconcileInterval: DurationArgument = DurationArgument(argument: "10s")!

    @Option(help: ArgumentHelp(
        "How much smaller than the live list a new version may be and still go live without approval (50%, 0.5; 100%: off).",
        discussion: "A version with fewer keys (an empty or truncated file) is held: the live list keeps serving until `roster approve`. `roster max-shrink` sets one advertiser's own."))
    var maxShrink: ShareArgument = ShareArgument(argument: "50%")!

    func policy() throws -> IngestPolicy {
        guard keepVersions >= 0 else { throw CLIError("--keep-versions must be 0 or more") }
        guard reconcileInterval.duration > .zero else { throw CLIError("--reconcile-interval must be positive") }
        guard blockSize >= 1024 else { throw CLIError("--block-size must be at least 1024 bytes") }
        guard mergeBytes >= 1024 else { throw CLIError("--merge-bytes must be at least 1024 bytes") }
        guard lease.duration > .zero else { throw CLIError("--lease must be positive") }
        guard maxAttempts >= 1 else { throw CLIError("--max-attempts must be at least 1") }
        guard (0...1).contains(invalidThreshold) else { throw CLIError("--invalid-threshold must be between 0 and 1") }
        var policy = IngestPolicy()
        policy.blockSize = blockSize
        policy.mergeTargetBytes = mergeBytes
        policy.lease = lease.duration
        policy.maxAttempts = maxAttempts
        policy.invalidThreshold = invalidThreshold
        policy.maxShrink = maxShrink.share
        return policy
    }

    var scanDuration: Duration? { scanInterval.duration > .zero ? scanInterval.duration : nil }
}

/// The match server's background checksum scrub and its budget of memory maps.
struct MatchOptions: ParsableArguments {
    @Option(help: "MB per second of live segments the match server re-verifies in the background (0: off).")
    var scrubRate: Double = 32

    @Option(help: ArgumentHelp(
        "Memory maps the served lists may hold (default: vm.max_map_count less 5,000).",
        discussion: "A version that would take the server past it is refused with RESOURCE_EXHAUSTED and published later."))
    var maxMaps: Int?

    func validate() throws {
        guard scrubRate >= 0, scrubRate.isFinite else { throw ValidationError("--scrub-rate must be 0 or more MB/s") }
        if let maxMaps, maxMaps < 0 { throw ValidationError("--max-maps must be 0 or more") }
    }

    var bytesPerSecond: Int { Int(scrubRate * 1_000_000) }
}

enum ServiceFactory {
    static func matchServer(store: URL, manifestFolder: URL? = nil, segments: (any SegmentStorage)? = nil, endpoint: Endpoint,
                            tls: TLSContextSource? = nil, access: AccessPolicy, options: MatchOptions,
                            logger: Logger) throws -> (RPCServer, MatchCatalog) {
        let catalog: MatchCatalog
        do {
            catalog = try MatchCatalog(root: store, manifestFolder: manifestFolder, mapBudget: options.maxMaps, logger: logger)
        } catch {
            throw CLIError("cannot load the match manifest in \(store.path): \(error)")
        }
        // MatchHandler logs the warning if token checks are off.
        let server = try RPCServer(
            configuration: .init(host: endpoint.host, port: endpoint.port, tls: tls),
            services: [MatchHandler(catalog: catalog, access: access, logger: logger), AdminHandler(catalog: catalog, access: access, store: segments)],
            logger: logger)
        return (server, catalog)
    }

    static func coordinator(data: DataOptions, backends: Backends, ingest: IngestOptions, endpoint: Endpoint, match: Endpoint,
                            tls: TLSContextSource? = nil, clientTLS: ClientTLS? = nil, adminToken: String?, access: CoordinatorAccess,
                            election: CoordinatorConfiguration.Election? = nil, tier: TierOptions? = nil,
                            logger: Logger) throws -> (RPCServer, CoordinatorService, RPCClient) {
        let catalog: IngestCatalog
        do {
            let policy = try ingest.policy()
            if data.catalogIsPostgres {
                // A session stalled inside a transaction is ended within a
                // lease, so a standby is never locked out by a paused leader.
                let idle = election?.lease ?? .seconds(5)
                let open = { try PostgresDatabase(url: data.catalogPath, idleInTransaction: idle, logger: logger) }
                // The writer, and two connections for reads (status, lists)
                // that never wait for a write.
                catalog = try IngestCatalog(database: try open(), readers: [try open(), try open()], policy: policy)
            } else {
                catalog = try IngestCatalog(path: data.catalogPath, policy: policy)
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("cannot open the catalog \(data.catalogPath): \(error)")
        }
        let matchClient = RPCClient(host: match.host, port: match.port, configuration: .init(tls: clientTLS))
        let publisher: any Publisher
        if let tier {
            // One connection pool per node address, made on first use.
            let clients = TransportCache { RPCClient(address: $0, configuration: .init(tls: clientTLS)) }
            publisher = TierPublisher(settings: TierSettings(replicas: tier.replicas, quorum: tier.quorum, heartbeatInterval: tier.nodeHeartbeat.duration),
                                      token: adminToken) { address in MatchAdmin.Client(transport: clients(address)) }
        } else {
            publisher = MatchServerPublisher(admin: MatchAdmin.Client(transport: matchClient), token: adminToken)
        }
        var configuration = CoordinatorConfiguration(scanInterval: ingest.scanDuration, reconcileInterval: ingest.reconcileInterval.duration,
                                                     access: access)
        configuration.election = election
        configuration.keepRetiredVersions = ingest.keepVersions
        // An object store's objects appear whole: nothing to wait for.
        configuration.scanSettleTime = ingest.settleTime?.duration ?? (backends.lakeFilesAppearWhole ? .zero : .seconds(1))
        let service = CoordinatorService(catalog: catalog, lake: backends.lake, store: backends.store, publisher: publisher,
                                         configuration: configuration, logger: logger)
        let server = try RPCServer(configuration: .init(host: endpoint.host, port: endpoint.port, tls: tls), services: service.services, logger: logger)
        return (server, service, matchClient)
    }

    static func worker(id: String, slots: Int, coordinator: Endpoints, tls: ClientTLS? = nil, token: String?, backends: Backends,
                       logger: Logger) -> (BlockWorker<FailoverTransport<RPCClient>>, FailoverTransport<RPCClient>) {
        let client = FailoverTransport(coordinator.all.map { RPCClient(host: $0.host, port: $0.port, configuration: .init(tls: tls)) },
                                       failover: [.unavailable, .deadlineExceeded])
        var configuration = BlockWorker<FailoverTransport<RPCClient>>.Configuration(id: id, slots: slots)
        configuration.token = token
        let worker = BlockWorker(
            configuration: configuration, coordinator: TaskQueue.Client(transport: client),
            lake: backends.lake, store: backends.store, logger: logger)
        return (worker, client)
    }


    /// Starts `server` now, so that its address (port 0 resolved) can be printed.
    static func start(_ server: RPCServer, _ what: String) async throws -> Endpoint {
        do {
            try await server.start()
        } catch {
            let text = "\(error)"
            let reason = text.contains("errno: 98") || text.contains("Address already in use")
                ? "the port is in use (another process listens there: choose another port)" : text
            throw CLIError("cannot start the \(what) on \(server.configuration.host):\(server.configuration.port): \(reason)")
        }
        let address = server.localAddress
        return Endpoint(host: server.configuration.host, port: address?.port ?? server.configuration.port)
    }

    /// Runs `services` until SIGINT or SIGTERM, then shuts them down gracefully (in reverse order).
    static func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
