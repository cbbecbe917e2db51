import ArgumentParser
import Foundation
import IngestCoordinator
import IngestWorker
import Logging
import MatchServer
import RosterAPI
import RosterClient
import RosterMetrics
import RosterTLS
import ServiceLifecycle

struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run the whole system on this machine: coordinator, workers and match server on a local data folder.",
        discussion: """
            Files dropped into <data>/lake/<advertiser-id>/ are ingested (the folder is
            scanned every --scan-interval) and served. Ctrl-C shuts everything down
            cleanly.

            Tokens are off unless ROSTER_CLIENT_TOKENS / ROSTER_ADMIN_TOKENS (match
            server) or the coordinator's (ROSTER_OPERATOR_TOKENS, ROSTER_VIEWER_TOKENS,
            ROSTER_WORKER_TOKENS) are set; dev's own workers use the first worker token.

            Examples:
              roster dev
              roster dev --data /tmp/roster --workers 4 --match-port 0
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var ingest: IngestOptions
    @OptionGroup var matchOptions: MatchOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "Block workers to run.")
    var workers: Int = 2

    @Option(help: "Port of the match server (0: any free port).")
    var matchPort: Int = Defaults.match.port

    @Option(help: "Port of the coordinator (0: any free port).")
    var coordinatorPort: Int = Defaults.coordinator.port

    @OptionGroup var metricsOptions: MetricsOptions

    func validate() throws {
        guard workers >= 0 && workers <= 64 else { throw ValidationError("--workers must be between 0 and 64") }
    }

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "roster.dev")
        // dev always serves its page: the status page, metrics and health.
        let metrics = try await metricsOptions.start(tls: nil, default: Endpoint(host: "127.0.0.1", port: 7480))
        try data.createFolders()
        let backends = try Backends.open(data, logger: Logger(label: "roster.s3"))
        try await backends.check(logger: logger)
        var services: [any Service] = metrics.map { [$0] } ?? []
        // Local development: tokens only if the environment names some.
        var access = AccessPolicy.fromEnvironment()
        if access.clientTokens.isEmpty && access.adminTokens.isEmpty { access = .open }
        let (matchServer, matchCatalog) = try ServiceFactory.matchServer(
            store: backends.storeFolder, segments: backends.remoteStore, endpoint: Endpoint(host: "127.0.0.1", port: matchPort), access: access,
            options: matchOptions, logger: Logger(label: "roster.match"))
        let match = try await ServiceFactory.start(matchServer, "match server")
        services.append(Scrubber(catalog: matchCatalog, bytesPerSecond: matchOptions.bytesPerSecond))
        let adminToken = access.adminTokens.first
        let coordinatorAccess = try CoordinatorAccess.checked(noAuth: false, tier: false, development: true)
        let (coordinatorServer, coordinator, _) = try ServiceFactory.coordinator(
            data: data, backends: backends, ingest: ingest, endpoint: Endpoint(host: "127.0.0.1", port: coordinatorPort), match: match,
            adminToken: adminToken, access: coordinatorAccess, logger: Logger(label: "roster.coordinator"))
        if let metrics {
            StatusPage.serve(on: metrics, coordinator: coordinator)
            ServiceGauges.coordinator(metrics, coordinator)
            ServiceGauges.matchServer(metrics, matchCatalog)
        }
        let coordinatorAddress = try await ServiceFactory.start(coordinatorServer, "coordinator")
        services += [matchServer, coordinatorServer] + coordinator.loops
        for i in 0..<workers {
            let (worker, _) = ServiceFactory.worker(id: "dev-worker-\(i)", slots: 1, coordinator: Endpoints([coordinatorAddress]),
                                                    token: coordinatorAccess.workerTokens.first, backends: backends, logger: Logger(label: "roster.worker"))
            services.append(worker)
        }
        print("""
            roster dev is running.
              lake:         \(backends.description.lake)/<advertiser-id>/<file>
              store:        \(backends.description.store)
              catalog:      \(data.catalogPath)
              match server: \(match)
              coordinator:  \(coordinatorAddress)
              workers:      \(workers)
              status page:  \(metrics.map { "\($0.url)/" } ?? "off")   (metrics at /metrics, health at /healthz and /readyz)

            Drop a file:  mkdir -p \(data.lakeURL.path)/acme && mv members.txt \(data.lakeURL.path)/acme/   (written elsewhere first)
            Watch it:     roster status --watch --coordinator \(coordinatorAddress)
            Query it:     roster match --match \(match) --advertiser acme --email someone@example.com
            Load-test:    roster load --match \(match) --advertiser acme --rate 10000 --duration 30s
            Stop:         Ctrl-C
            """)
        flushOutput()
        metrics?.ready()
        try await ServiceFactory.runUntilSignalled(services, logger: logger)
        try? await backends.shutdown(logger: logger)
        print("roster dev stopped.")
    }
}

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the ingest coordinator: catalog, scheduling, leases, publishing.",
        discussion: """
            Each audience presents its own tokens (comma-separated; docs/OPERATIONS.md):
              ROSTER_OPERATOR_TOKENS  operators: every IngestAdmin call (required)
              ROSTER_VIEWER_TOKENS    dashboards: IngestAdmin's reads only
              ROSTER_WORKER_TOKENS    block workers: TaskQueue only (required)
              ROSTER_NODE_TOKENS      a tier's match servers: Tier.RegisterNode
              ROSTER_CLIENT_TOKENS    applications: Tier.Placement
            (node and client tokens are required with --replicas). --no-auth turns
            every check off (local development only).

            Examples:
              ROSTER_OPERATOR_TOKENS=o1 ROSTER_WORKER_TOKENS=w1 \\
                roster coordinator --data /srv/roster --match 10.0.0.5:7401
              roster coordinator --no-auth --listen 127.0.0.1:7400 --lease 1m
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var ingest: IngestOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "Address to listen on.")
    var listen: Endpoint = Endpoint(host: "0.0.0.0", port: Defaults.coordinator.port)

    @Option(help: "The match server to publish to.")
    var match: Endpoint = Defaults.match

    @Option(help: "Admin token for the match server (default: $ROSTER_ADMIN_TOKEN).")
    var adminToken: String? = ProcessInfo.processInfo.environment["ROSTER_ADMIN_TOKEN"]

    @Flag(help: "Accept calls without a token (local development only).")
    var noAuth = false

    @Option(help: ArgumentHelp(
        "The address workers and clients reach this coordinator at (default: the listen address; this host's name when listening on all interfaces).",
        discussion: "Coordinators on one PostgreSQL catalog elect a leader; standbys name it to callers."))
    var advertise: Endpoint?

    @Option(help: "How long a leader's lease lasts on a PostgreSQL catalog (10s): a standby takes over at most a lease and a third after the leader stops.")
    var leaderLease: DurationArgument = DurationArgument(argument: "10s")!

    @OptionGroup var metricsOptions: MetricsOptions

    @OptionGroup var tier: TierOptions

    @OptionGroup(title: "TLS (serving)") var tlsServer: TLSServerOptions

    @OptionGroup(title: "TLS (calls to match servers; default: as this coordinator serves)") var tlsClient: TLSClientOptions

    func run() async throws {
        logging.bootstrap()
        guard leaderLease.duration >= .seconds(1) else { throw CLIError("--leader-lease must be at least 1 second") }
        try tier.validate()
        let tlsFiles = try tlsServer.files(serving: "coordinator")
        let tls = try tlsFiles?.sources()
        let clientTLS = try tlsClient.clientTLS(following: tlsFiles)
        // Before the catalog and server make their counters; a busy port fails here.
        let metrics = try await metricsOptions.start(tls: tls?.metrics)
        let access = try CoordinatorAccess.checked(noAuth: noAuth, tier: tier.replicas > 0, development: false)
        try data.createFolders()
        let logger = Logger(label: "roster.coordinator")
        let backends = try Backends.open(data, logger: Logger(label: "roster.s3"))
        try await backends.check(logger: logger)
        // On a shared (PostgreSQL) catalog, coordinators elect a leader.
        let election = data.catalogIsPostgres ? CoordinatorConfiguration.Election(
            holder: "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            address: (advertise ?? listen).description, lease: leaderLease.duration) : nil
        let (server, service, _) = try ServiceFactory.coordinator(
            data: data, backends: backends, ingest: ingest, endpoint: listen, match: match,
            tls: tls?.rpc, clientTLS: clientTLS, adminToken: adminToken,
            access: access, election: election, tier: tier.replicas > 0 ? tier : nil, logger: logger)
        if noAuth { logger.warning("coordinator token checks are OFF: anyone who can connect may submit files and lease work") }
        if let metrics {
            StatusPage.serve(on: metrics, coordinator: service)
            ServiceGauges.coordinator(metrics, service)
        }
        let address = try await ServiceFactory.start(server, "coordinator")
        if let advertise {
            service.advertise(advertise.description)
        } else {
            let host = listen.host == "0.0.0.0" || listen.host == "::" ? ProcessInfo.processInfo.hostName : listen.host
            service.advertise(Endpoint(host: host, port: address.port).description)
        }
        print("coordinator listening on \(address); \(tlsFiles.description); catalog \(data.catalogPath); lake \(backends.description.lake); store \(backends.description.store)\(metrics.map { "; status page \($0.url)/, metrics \($0.url)/metrics" } ?? "")")
        flushOutput()
        // Ready: the catalog is open and the server listens.
        metrics?.ready()
        let reloader = TLSReloader(sources: tls.map { [$0.rpc, $0.metrics] } ?? [], clients: clientTLS.map { [$0] } ?? [], logger: logger)
        try await ServiceFactory.runUntilSignalled([server] + service.loops + [reloader] + (metrics.map { [$0] } ?? []), logger: logger)
        try? await backends.shutdown(logger: logger)
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a stateless block worker that pulls tasks from a coordinator.",
        discussion: """
            Examples:
              ROSTER_WORKER_TOKEN=w1 roster worker --coordinator 10.0.0.4:7400 \\
                --lake /mnt/lake --store /mnt/store
              roster worker --slots 2
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "The coordinator to pull tasks from, or several sharing a catalog (a:7400,b:7400): the worker follows the leader.")
    var coordinator: Endpoints = Endpoints([Defaults.coordinator])

    @Option(help: "Tasks to run at once.")
    var slots: Int = 1

    @Option(help: "This worker's name (default: worker-<host>-<pid>).")
    var id: String?

    @Option(help: "Worker token to present to the coordinator's TaskQueue (default: $ROSTER_WORKER_TOKEN).")
    var token: String? = ProcessInfo.processInfo.environment["ROSTER_WORKER_TOKEN"]

    @OptionGroup(title: "TLS (calls to the coordinator)") var tls: TLSClientOptions
    @OptionGroup var metricsOptions: MetricsOptions

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "roster.worker")
        let clientTLS = try tls.clientTLS()
        let metrics = try await metricsOptions.start(tls: nil)
        try data.createFolders()
        let backends = try Backends.open(data, logger: Logger(label: "roster.s3"))
        try await backends.check(logger: logger)
        let (worker, _) = ServiceFactory.worker(
            id: id ?? "worker-\(ProcessInfo.processInfo.hostName)-\(getpid())", slots: max(1, slots),
            coordinator: coordinator, tls: clientTLS, token: token, backends: backends, logger: logger)
        print("worker \(worker.configuration.id) pulling from \(coordinator); lake \(backends.description.lake); store \(backends.description.store)\(metrics.map { "; metrics \($0.url)/metrics" } ?? "")")
        flushOutput()
        metrics?.ready()
        let reloader = TLSReloader(sources: [], clients: clientTLS.map { [$0] } ?? [], logger: logger)
        try await ServiceFactory.runUntilSignalled([worker, reloader] + (metrics.map { [$0] } ?? []), logger: logger)
        try? await backends.shutdown(logger: logger)
    }
}

struct MatchServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "match-server",
        abstract: "Run a match server over a segment store.",
        discussion: """
            Tokens come from ROSTER_CLIENT_TOKENS and ROSTER_ADMIN_TOKENS
            (comma-separated); both are required unless --no-auth is given.

            Examples:
              roster match-server --store /mnt/store --listen 0.0.0.0:7401
              ROSTER_CLIENT_TOKENS=abc ROSTER_ADMIN_TOKENS=xyz roster match-server
              roster match-server --no-auth --listen 127.0.0.1:0
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var matchOptions: MatchOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "Address to listen on.")
    var listen: Endpoint = Endpoint(host: "0.0.0.0", port: Defaults.match.port)

    @OptionGroup var metricsOptions: MetricsOptions

    @Flag(help: "Serve without token checks (local development only).")
    var noAuth = false

    @Option(help: ArgumentHelp("Join a coordinator's tier under this stable name (with --coordinator).",
                               discussion: "Placement hashes the name: a node keeps its advertisers across restarts and address changes."))
    var nodeID: String?

    @Option(help: "The coordinator(s) to register with as a node of the tier (a:7400,b:7400).")
    var coordinator: Endpoints?

    @Option(help: "The address clients and the coordinator reach this server at (default: the listen address; this host's name when listening on all interfaces).")
    var advertise: Endpoint?

    @Option(help: "This node's share of advertisers against the others' (> 0).")
    var weight: Double = 1

    @Option(help: "Node token to register with the coordinator's Tier (default: $ROSTER_NODE_TOKEN).")
    var nodeToken: String? = ProcessInfo.processInfo.environment["ROSTER_NODE_TOKEN"]

    @OptionGroup(title: "TLS (serving)") var tlsServer: TLSServerOptions

    @OptionGroup(title: "TLS (calls to the coordinator; default: as this server serves)") var tlsClient: TLSClientOptions

    func run() async throws {
        logging.bootstrap()
        let tlsFiles = try tlsServer.files(serving: "match server")
        let tls = try tlsFiles?.sources()
        let clientTLS = try tlsClient.clientTLS(following: tlsFiles)
        if (nodeID == nil) != (coordinator == nil) { throw CLIError("--node-id and --coordinator go together: a node of a tier needs both") }
        if let nodeID, nodeID.isEmpty || nodeID.contains("/") { throw CLIError("--node-id must be a non-empty name without '/'") }
        guard weight > 0 else { throw CLIError("--weight must be > 0") }
        try data.createFolders()
        let logger = Logger(label: "roster.match")
        var access = AccessPolicy.fromEnvironment()
        if noAuth {
            access = .open
        } else if access.clientTokens.isEmpty || access.adminTokens.isEmpty {
            throw CLIError("set ROSTER_CLIENT_TOKENS and ROSTER_ADMIN_TOKENS (comma-separated), or pass --no-auth for local development")
        }
        let metrics = try await metricsOptions.start(tls: tls?.metrics)
        var services: [any Service] = metrics.map { [$0] } ?? []
        let backends = try Backends.open(data, logger: Logger(label: "roster.s3"))
        try await backends.check(logger: logger)
        // Nodes of a tier may share one store folder: each keeps its own
        // manifest, in a folder named after it.
        let manifestFolder = nodeID.map { data.dataURL.appendingPathComponent("nodes/\($0)") }
        let (server, catalog) = try ServiceFactory.matchServer(
            store: backends.storeFolder, manifestFolder: manifestFolder, segments: backends.remoteStore, endpoint: listen, tls: tls?.rpc,
            access: access,
            options: matchOptions, logger: logger)
        if let metrics { ServiceGauges.matchServer(metrics, catalog) }
        let address = try await ServiceFactory.start(server, "match server")
        print("match server listening on \(address); \(tlsFiles.description); serving \(catalog.advertisers.count) advertisers from \(backends.description.store)\(metrics.map { "; metrics \($0.url)/metrics" } ?? "")")
        flushOutput()
        // Ready: the manifest is loaded and its segments mapped.
        metrics?.ready()
        services += [server, Scrubber(catalog: catalog, bytesPerSecond: matchOptions.bytesPerSecond),
                     TLSReloader(sources: tls.map { [$0.rpc, $0.metrics] } ?? [], clients: clientTLS.map { [$0] } ?? [], logger: logger)]
        if let nodeID, let coordinator {
            let host = listen.host == "0.0.0.0" || listen.host == "::" ? ProcessInfo.processInfo.hostName : listen.host
            let reachable = advertise ?? Endpoint(host: host, port: address.port)
            let transport = FailoverTransport(coordinator.all.map { RPCClient(host: $0.host, port: $0.port, configuration: .init(tls: clientTLS)) },
                                              failover: [.unavailable, .deadlineExceeded])
            services.append(NodeAnnouncer(configuration: .init(nodeID: nodeID, address: reachable.description, weight: weight, token: nodeToken),
                                          coordinator: Tier.Client(transport: transport), catalog: catalog,
                                          logger: Logger(label: "roster.match.node")))
        }
        try await ServiceFactory.runUntilSignalled(services, logger: logger)
        try? await backends.shutdown(logger: logger)
    }
}

/// A coordinator's tier of match servers (docs/SERVING.md).
struct TierOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Publish to a tier of match servers that register with this coordinator, each list on this many of them (0: publish to --match only).",
        discussion: "Start each match server with --node-id and --coordinator."))
    var replicas: Int = 0

    @Option(help: "Copies a version needs before it goes live (default: a majority of --replicas; never more than the healthy owners).")
    var quorum: Int?

    @Option(help: "Time between a node's heartbeats (1s); a node not heard from for three is down.")
    var nodeHeartbeat: DurationArgument = DurationArgument(argument: "1s")!

    func validate() throws {
        guard replicas >= 0 else { throw CLIError("--replicas must be 0 (no tier) or more") }
        if let quorum, quorum < 1 || quorum > max(1, replicas) { throw CLIError("--quorum must be between 1 and --replicas") }
        guard nodeHeartbeat.duration >= .milliseconds(100) else { throw CLIError("--node-heartbeat must be at least 0.1 seconds") }
    }
}

/// Where a service serves Prometheus metrics, `/healthz` and `/readyz`.
struct MetricsOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve Prometheus metrics, /healthz and /readyz (and a coordinator's status page at /) at this address: host:port, or a port on 127.0.0.1 (off by default; roster dev: 127.0.0.1:7480).",
        discussion: "0.0.0.0:9100 serves every interface; over HTTPS when the service serves TLS."))
    var metrics: Endpoint?

    /// The earlier spelling: a port on 127.0.0.1.
    @Option(help: .hidden)
    var metricsPort: Int?

    var address: Endpoint? { metrics ?? metricsPort.map { Endpoint(host: "127.0.0.1", port: $0) } }

    /// Installs the metrics system and binds the endpoint now, before the
    /// service starts: a port in use is one `Error:` line at start-up, not a
    /// failure later inside a running service group.
    func start(tls: TLSContextSource?, default fallback: Endpoint? = nil) async throws -> MetricsEndpoint? {
        guard let address = address ?? fallback else { return nil }
        let endpoint = MetricsEndpoint(registry: MetricsEndpoint.bootstrapMetricsSystem(), host: address.host, port: address.port, tls: tls)
        do {
            try await endpoint.start()
        } catch {
            throw CLIError("\(error)")
        }
        return endpoint
    }
}

extension CoordinatorAccess {
    /// The coordinator's tokens from the environment, checked: every
    /// audience that must be able to call has tokens, and the retired
    /// one-token-for-all variable is refused rather than ignored.
    /// `development`: `roster dev`, where no tokens at all means checks off.
    static func checked(noAuth: Bool, tier: Bool, development: Bool,
                        environment: [String: String] = ProcessInfo.processInfo.environment) throws -> CoordinatorAccess {
        if let old = environment["ROSTER_COORDINATOR_TOKENS"], !old.isEmpty {
            throw CLIError("ROSTER_COORDINATOR_TOKENS is retired: the coordinator takes one token set per audience, "
                + "ROSTER_OPERATOR_TOKENS, ROSTER_VIEWER_TOKENS, ROSTER_WORKER_TOKENS, ROSTER_NODE_TOKENS and ROSTER_CLIENT_TOKENS (docs/OPERATIONS.md)")
        }
        if noAuth { return .open }
        let access = CoordinatorAccess.fromEnvironment(environment)
        if development && access.operatorTokens.isEmpty && access.viewerTokens.isEmpty && access.workerTokens.isEmpty && access.nodeTokens.isEmpty {
            return .open
        }
        var missing = ["ROSTER_OPERATOR_TOKENS": access.operatorTokens, "ROSTER_WORKER_TOKENS": access.workerTokens]
        if tier {
            missing["ROSTER_NODE_TOKENS"] = access.nodeTokens
            missing["ROSTER_CLIENT_TOKENS"] = access.clientTokens
        }
        let unset = missing.filter { $0.value.isEmpty }.keys.sorted()
        guard unset.isEmpty else {
            throw CLIError("set \(unset.joined(separator: " and ")) (comma-separated tokens; docs/OPERATIONS.md), or pass --no-auth for local development")
        }
        return access
    }
}
