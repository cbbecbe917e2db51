import DataLake
import Foundation
import HashParsing
import IngestCoordinator
import IngestWorker
import Logging
import MatchServer
import RosterAPI
import RosterRPC
import RosterInProcess
import SegmentStore
import TestSupport
import Synchronization
import XCTest

/// The whole ingest path in one test process: a lake folder, a match
/// server, a coordinator and workers, talking only through the generated
/// clients, in process (`InProcessTransport`, no ports). A service that is
/// stopped answers UNAVAILABLE, as an unreachable server would, and a
/// coordinator started again is reached by the same clients.
final class IngestHarness: @unchecked Sendable {
    let root: URL
    let lakeRoot: URL
    let storeRoot: URL
    let catalogPath: String
    let policy: IngestPolicy
    var matchCatalog: MatchCatalog!
    /// What the match server's clients reach: nil while it is stopped.
    let matchLink = Link(name: "match server")
    var coordinator: CoordinatorService!
    /// What the coordinator's clients (tests, workers) reach.
    let coordinatorLink = Link(name: "coordinator")
    var coordinatorTask: Task<Void, Error>?
    var workerTasks: [Task<Void, Error>] = []
    /// Seconds added to the wall clock the coordinator reads: tests move
    /// time forward (past a retry backoff, say) without waiting.
    let clock = ShiftedClock()

    final class ShiftedClock: Sendable {
        private let offset = Mutex<Double>(0)
        func advance(by seconds: Double) { offset.withLock { $0 += seconds } }
        func now() -> Double { Date().timeIntervalSince1970 + offset.withLock { $0 } }
    }

    /// A service's address, in process: the transport to it while it runs,
    /// UNAVAILABLE while it does not.
    final class Link: RPCClientTransport, Sendable {
        let name: String
        private let target = Mutex<InProcessTransport?>(nil)

        init(name: String) { self.name = name }

        func attach(_ services: [any RPCService]) throws {
            let transport = try InProcessTransport(services: services, logger: Logger(label: "test.\(name)"))
            target.withLock { $0 = transport }
        }

        func detach() { target.withLock { $0 = nil } }

        func unary<Request: ProtoMessage, Response: ProtoMessage>(
            _ method: RPCMethodDescriptor, request: Request, options: CallOptions
        ) async throws -> Response {
            guard let transport = target.withLock({ $0 }) else { throw RPCError(.unavailable, "cannot connect to the \(name): stopped") }
            return try await transport.unary(method, request: request, options: options)
        }
    }

    func advanceClock(by seconds: Double) {
        clock.advance(by: seconds)
    }

    init(policy: IngestPolicy) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-ingest-\(UUID().uuidString)")
        lakeRoot = root.appendingPathComponent("lake")
        storeRoot = root.appendingPathComponent("store")
        catalogPath = root.appendingPathComponent("catalog.sqlite").path
        for url in [lakeRoot, storeRoot] { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        self.policy = policy
    }

    static func testPolicy(blockSize: Int64 = 4096, lease: Double = 5) -> IngestPolicy {
        var policy = IngestPolicy()
        policy.blockSize = blockSize
        policy.lease = .milliseconds(Int64(lease * 1000))
        policy.mergeTargetBytes = 2048
        policy.maxMergeTasks = 4
        return policy
    }

    func startMatchServer(mapBudget: Int? = nil) async throws {
        matchCatalog = try MatchCatalog(root: storeRoot, mapBudget: mapBudget, logger: Logger(label: "test.match"))
        try matchLink.attach([MatchHandler(catalog: matchCatalog, access: .open), AdminHandler(catalog: matchCatalog, access: .open)])
    }

    /// The match server stops answering (its catalog stays, as its files would).
    func stopMatchServer() {
        matchLink.detach()
    }

    func startCoordinator(access: CoordinatorAccess = .open, store: (any SegmentStorage)? = nil,
                          tier: TierSettings? = nil, connect: (@Sendable (String) -> MatchAdmin.Client<Link>)? = nil,
                          keepRetiredVersions: Int = 0, lake: (any DataLake)? = nil, scanAnswerWithin: Duration = .seconds(8)) async throws {
        let catalog = try IngestCatalog(path: catalogPath, policy: policy)
        var configuration = CoordinatorConfiguration(scanInterval: nil, publishInterval: .milliseconds(30), access: access)
        configuration.keepRetiredVersions = keepRetiredVersions
        configuration.scanAnswerWithin = scanAnswerWithin
        let publisher: any Publisher = if let tier, let connect {
            TierPublisher(settings: tier, connect: connect)
        } else {
            MatchServerPublisher(admin: MatchAdmin.Client(transport: matchLink))
        }
        coordinator = CoordinatorService(
            catalog: catalog, lake: lake ?? LocalFolderLake(root: lakeRoot), store: store ?? LocalSegmentStorage(root: storeRoot),
            publisher: publisher, configuration: configuration, clock: { [clock] in clock.now() })
        try coordinatorLink.attach(coordinator.services)
        let service = coordinator!
        coordinatorTask = Task { try await service.run() }
    }

    /// Stops the coordinator abruptly: it stops answering and its loops
    /// stop; nothing is flushed or handed over (the catalog is all that remains).
    func killCoordinator() async {
        coordinatorLink.detach()
        coordinatorTask?.cancel()
        _ = try? await coordinatorTask?.value
        coordinator = nil
    }

    /// The coordinator's three services, as an operator, a worker and a tier reach them.
    var adminClient: IngestAdmin.Client<Link> { IngestAdmin.Client(transport: coordinatorLink) }
    var taskClient: TaskQueue.Client<Link> { TaskQueue.Client(transport: coordinatorLink) }
    var tierClient: Tier.Client<Link> { Tier.Client(transport: coordinatorLink) }
    var matchClient: MatchService.Client<Link> { MatchService.Client(transport: matchLink) }

    @discardableResult
    func startWorker(id: String, parser: BlockParser = BlockParser(chunkSize: 1000), token: String? = nil,
                     store: (any SegmentStorage)? = nil) -> BlockWorker<Link> {
        var configuration = BlockWorker<Link>.Configuration(id: id, idlePoll: .milliseconds(5), maxIdlePoll: .milliseconds(20), parser: parser)
        configuration.token = token
        let worker = BlockWorker(
            configuration: configuration,
            coordinator: TaskQueue.Client(transport: coordinatorLink),
            lake: LocalFolderLake(root: lakeRoot), store: store ?? LocalSegmentStorage(root: storeRoot))
        workerTasks.append(Task { try await worker.run() })
        return worker
    }

    /// A worker reaching the coordinator through `transport` (a link with
    /// faults of the test's making), reading `lake` and writing `store`.
    func startWorker<Transport: RPCClientTransport>(id: String, transport: Transport, lake: (any DataLake)? = nil,
                                                     store: (any SegmentStorage)? = nil) {
        var configuration = BlockWorker<Transport>.Configuration(id: id, idlePoll: .milliseconds(5), maxIdlePoll: .milliseconds(20),
                                                                 parser: BlockParser(chunkSize: 1000))
        configuration.maxOutageBackoff = .milliseconds(200)
        let worker = BlockWorker(configuration: configuration, coordinator: TaskQueue.Client(transport: transport),
                                 lake: lake ?? LocalFolderLake(root: lakeRoot), store: store ?? LocalSegmentStorage(root: storeRoot))
        workerTasks.append(Task { try await worker.run() })
    }

    func stopWorkers() async {
        for task in workerTasks { task.cancel() }
        for task in workerTasks { _ = try? await task.value }
        workerTasks = []
    }

    func shutdown() async {
        await stopWorkers()
        if coordinator != nil { await killCoordinator() }
        stopMatchServer()
        try? FileManager.default.removeItem(at: root)
    }

    /// Writes a file into the lake at `<advertiser>/<name>`; returns its lake path.
    @discardableResult
    func drop(_ contents: [UInt8], advertiser: String, name: String) throws -> String {
        let folder = lakeRoot.appendingPathComponent(advertiser)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(contents).write(to: folder.appendingPathComponent(name))
        return "\(advertiser)/\(name)"
    }

    /// Options carrying `token` as a bearer token, for coordinators started with caller tokens.
    var callOptions = CallOptions.defaults

    func submit(_ path: String) async throws -> SubmitFileResponse {
        var request = SubmitFileRequest()
        request.path = path
        return try await adminClient.submitFile(request, options: callOptions)
    }

    func fileStatus(_ id: UInt64) async throws -> FileStatus? {
        var request = ListFilesRequest()
        request.limit = 10_000
        return try await adminClient.listFiles(request, options: callOptions).files.first { $0.version == id }
    }

    /// Waits until file `id` reaches one of `states` (or any terminal state) and returns its status.
    func waitForFile(_ id: UInt64, timeout: Duration = .seconds(20)) async throws -> FileStatus {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = try await fileStatus(id), [.live, .held, .failed, .rejected, .superseded, .retired].contains(status.state) {
                return status
            }
            if ContinuousClock.now > deadline {
                let status = try await fileStatus(id)
                throw HarnessError.timeout("file \(id) stuck in \(String(describing: status?.state)) (\(status?.blocksDone ?? 0)/\(status?.blocksTotal ?? 0) blocks)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Asks the match server about every key in `keys`, in batches.
    func matched(_ advertiser: String, _ keys: [Key16]) async throws -> [Bool] {
        var out: [Bool] = []
        for start in stride(from: 0, to: keys.count, by: 5000) {
            let batch = keys[start..<min(keys.count, start + 5000)]
            var request = MatchManyRequest()
            request.advertiserID = advertiser
            request.hashes = Data(batch.flatMap(\.bytes))
            let response = try await matchClient.matchMany(request)
            out += (0..<batch.count).map(response.isMatched)
        }
        return out
    }
}

enum HarnessError: Error { case timeout(String) }

/// An independent reading of a member file: the reference the served set
/// is compared with. Deliberately simple (String-based), unlike the parser.
enum ReferenceParser {
    static func keys(_ contents: [UInt8]) -> Set<Key16> {
        var out = Set<Key16>()
        var bytes = contents[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        // Split on bytes: as a String, "\r\n" is one Character and would not split on "\n".
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            let trimmed = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.count == 32, trimmed.allSatisfy(\.isHexDigit) else { continue }
            var bytes: [UInt8] = []
            var index = trimmed.startIndex
            for _ in 0..<16 {
                let next = trimmed.index(index, offsetBy: 2)
                bytes.append(UInt8(trimmed[index..<next], radix: 16)!)
                index = next
            }
            out.insert(Key16(bytes: bytes)!)
        }
        return out
    }

    static func hex(_ key: Key16, uppercase: Bool = false) -> String {
        let s = key.bytes.map { String(format: "%02x", $0) }.joined()
        return uppercase ? s.uppercased() : s
    }

    static func randomKeys(_ n: Int, seed: UInt64) -> [Key16] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    }
}

/// The local store with a hook before the calls a test interferes with:
/// `commit` (an upload) and `localFile` (a whole-file read, as a
/// compaction's; runs are read by `localRun`). A hook that throws fails the
/// call; one that waits holds it.
struct InterceptingStore: SegmentStorage {
    let inner: LocalSegmentStorage
    var beforeCommit: @Sendable (String) async throws -> Void = { _ in }
    var beforeLocalFile: @Sendable (String) async throws -> Void = { _ in }

    func prepareWrite(_ path: String) throws -> String { try inner.prepareWrite(path) }
    func commit(_ path: String) async throws {
        try await beforeCommit(path)
        try await inner.commit(path)
    }
    func localFile(_ path: String) async throws -> String {
        try await beforeLocalFile(path)
        return try await inner.localFile(path)
    }
    func removeAll(under prefix: String) async throws { try await inner.removeAll(under: prefix) }
    func list(under prefix: String) async throws -> [String] { try await inner.list(under: prefix) }
    func remove(_ path: String) async throws { try await inner.remove(path) }
    func reserveSlot(in path: String, capacity: Int) throws -> PackSlot? { try inner.reserveSlot(in: path, capacity: capacity) }
    func makeDurable(_ path: String) async throws { try await inner.makeDurable(path) }
    func localRun(_ path: String, low: UInt64, high: UInt64) async throws -> String { try await inner.localRun(path, low: low, high: high) }
    func discardLocal(_ localPath: String) async { await inner.discardLocal(localPath) }
}
