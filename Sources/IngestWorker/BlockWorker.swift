import DataLake
import Foundation
import HashParsing
import Logging
import Metrics
import RosterAPI
import RosterRPC
import SegmentStore
import ServiceLifecycle
import Synchronization

/// A stateless ingest worker: it pulls tasks from the coordinator, does
/// them, and reports back, all through the generated `TaskQueue.Client`.
///
/// Parse tasks read one block's lines from the lake into keys and write
/// them as a run, grouped by key range (`RunFormat`), under a name unique
/// to the attempt. Merge tasks merge one key range of a version's runs into
/// a segment. A heartbeat renews the leases of running tasks; a task whose
/// lease is lost is cancelled here, and its output is simply never
/// reported, so a slow or partitioned worker cannot corrupt a version.
///
/// Faults are waited out, not counted against the file: every call to the
/// coordinator has a short deadline and moves to the next coordinator when
/// one does not answer (its transport, a `FailoverTransport`, follows the
/// leader); a report the coordinators cannot take now is sent again, to
/// whoever leads, until the task's lease ends; and a lake or segment store
/// that cannot be reached (`LakeError.unavailable`, an `OutageError`) is
/// retried with backoff while the lease is held, so an outage of the object
/// store spends none of the task's attempts.
public final class BlockWorker<Transport: RPCClientTransport>: Service, Sendable {
    public struct Configuration: Sendable {
        /// The name the coordinator knows this worker by (unique per process).
        public var id: String
        /// Tasks this worker runs at once.
        public var slots: Int
        /// Wait between polls when there is no work (doubling up to `maxIdlePoll`).
        public var idlePoll: Duration
        public var maxIdlePoll: Duration
        public var parser: BlockParser
        /// Bytes of keys a merge holds at once, twice over (the keys and a
        /// sort buffer). A range with more keys is sorted externally, in
        /// chunks of this size (see `RunMerger`).
        public var mergeMemoryLimit: Int

        /// A slot keeps its key array and scratch buffer between tasks up to
        /// this size each (larger ones, from a crowded merge range, are freed).
        public var retainedMemoryPerBuffer = 128 << 20
        /// How long a lease request may wait at the coordinator for work to
        /// appear (long poll): idle workers then pick up new work at once
        /// without polling.
        public var longPollMilliseconds: UInt32 = 2000
        /// Sent as `authorization: Bearer <token>` on every coordinator call.
        public var token: String?
        /// The deadline of a heartbeat or a report (a lease request gets its
        /// long poll on top): a coordinator that has not answered by then is
        /// taken as gone for this call, and the next one is asked.
        public var callTimeout: Duration = .seconds(2)
        /// The longest wait between retries of a task whose lake or store
        /// cannot be reached.
        public var maxOutageBackoff: Duration = .seconds(5)

        public init(id: String = "worker-\(ProcessInfo.processInfo.hostName)-\(getpid())", slots: Int = 1,
                    idlePoll: Duration = .milliseconds(20), maxIdlePoll: Duration = .milliseconds(250),
                    parser: BlockParser = BlockParser(), mergeMemoryLimit: Int = 512 << 20) {
            self.mergeMemoryLimit = mergeMemoryLimit
            self.id = id
            self.slots = max(1, slots)
            self.idlePoll = idlePoll
            self.maxIdlePoll = maxIdlePoll
            self.parser = parser
        }
    }

    private struct Held {
        var token: String
        var cancel: @Sendable () -> Void
        /// When the lease ends as this worker last heard: its grant, then
        /// each heartbeat the coordinator took, plus the lease length.
        var expires: ContinuousClock.Instant
        /// The coordinator said the lease is no longer this worker's.
        var lost = false
    }

    public let configuration: Configuration
    private let coordinator: TaskQueue.Client<Transport>
    private let lake: any DataLake
    private let store: any SegmentStorage
    private let logger: Logger
    private let held = Mutex<[UInt64: Held]>([:])
    private let leaseMilliseconds = Atomic<UInt32>(10_000)
    private let completed = Atomic<Int>(0)
    /// The hash type of files this worker has parsed blocks of, by path and
    /// etag: a worker given several blocks of one file reads its head once
    /// (an object store's GET per block saved). Bounded: cleared when full.
    private let hashKinds = Mutex<[String: HashKind]>([:])
    private static var hashKindCacheLimit: Int { 1_024 }

    public init(configuration: Configuration, coordinator: TaskQueue.Client<Transport>, lake: any DataLake,
                store: any SegmentStorage, logger: Logger = Logger(label: "roster.worker")) {
        self.configuration = configuration
        self.coordinator = coordinator
        self.lake = lake
        self.store = store
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
    }

    /// A heartbeat's or a report's options: the worker's token and a short deadline.
    private var options: CallOptions {
        CallOptions(timeout: configuration.callTimeout).bearer(configuration.token)
    }

    /// Tasks this worker has finished and reported.
    public var tasksCompleted: Int { completed.load(ordering: .relaxed) }

    /// Pulls and runs tasks until cancelled or, under swift-service-lifecycle,
    /// until graceful shutdown (the tasks in hand are finished first).
    public func run() async throws {
        MemoryTuning.returnLargeBuffersToTheSystem()
        await withTaskGroup(of: Void.self) { group in
            for slot in 0..<configuration.slots {
                group.addTask { await self.slotLoop(slot) }
            }
            group.addTask { await self.heartbeatLoop() }
            await group.next()
            group.cancelAll()
        }
    }

    private var stopping: Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    private func slotLoop(_ slot: Int) async {
        let memory = SlotMemory()
        var syncing: Task<Void, Never>?
        var idle = configuration.idlePoll
        var unreachable = false
        // One id per lease until a coordinator answers it: sent again after a
        // failure, it brings back what a leader leased to this call and died
        // before saying (rather than leaving it to expire unworked).
        var requestID: String?
        while !stopping {
            let tasks: [IngestTask]
            do {
                var request = LeaseTasksRequest()
                request.workerID = configuration.id
                request.max = 1
                request.waitMs = configuration.longPollMilliseconds
                if requestID == nil { requestID = Self.newRequestID() }
                request.requestID = requestID!
                let leasedAt = ContinuousClock.now
                var leaseOptions = options
                leaseOptions.timeout = .milliseconds(Int64(configuration.longPollMilliseconds)) + configuration.callTimeout
                let response = try await coordinator.leaseTasks(request, options: leaseOptions)
                requestID = nil
                if response.leaseMs > 0 { leaseMilliseconds.store(response.leaseMs, ordering: .relaxed) }
                tasks = response.tasks
                let expires = leasedAt + .milliseconds(Int64(leaseMilliseconds.load(ordering: .relaxed)))
                for task in tasks { held.withLock { $0[task.taskID] = Held(token: task.leaseToken, cancel: {}, expires: expires) } }
                if unreachable {
                    unreachable = false
                    logger.notice("leasing from the coordinator again", metadata: ["slot": "\(slot)"])
                }
            } catch {
                if !stopping { WorkerMetrics.leaseFailures.increment() }
                // Said once per outage at the default level; each retry at debug.
                if !unreachable && !stopping {
                    unreachable = true
                    logger.warning("cannot lease from the coordinator; retrying", metadata: ["slot": "\(slot)", "error": "\(error)"])
                } else {
                    logger.debug("cannot lease", metadata: ["error": "\(error)"])
                }
                tasks = []
            }
            if tasks.isEmpty {
                await syncing?.value
                syncing = nil
                try? await Task.sleep(for: idle)
                idle = min(idle * 2, configuration.maxIdlePoll)
                continue
            }
            idle = configuration.idlePoll
            for task in tasks {
                let committing = await perform(task, memory: memory)
                memory.trim(toAtMost: configuration.retainedMemoryPerBuffer)
                // At most one segment syncing per slot: the previous one has
                // had a whole task's time.
                await syncing?.value
                syncing = committing
            }
        }
        await syncing?.value
    }

    /// A lease call's id: random, 16 hex digits.
    static func newRequestID() -> String {
        var g = SystemRandomNumberGenerator()
        return String(format: "%016llx", g.next() as UInt64)
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            let interval = Duration.milliseconds(max(10, Int(leaseMilliseconds.load(ordering: .relaxed)) / 3))
            try? await Task.sleep(for: interval)
            let current = held.withLock { $0.map { ($0.key, $0.value.token) } }
            guard !current.isEmpty else { continue }
            var request = HeartbeatRequest()
            request.workerID = configuration.id
            request.taskIDs = current.map(\.0)
            request.leaseTokens = current.map(\.1)
            let sent = ContinuousClock.now
            guard let response = try? await coordinator.heartbeat(request, options: options) else { continue }
            let lost = Set(response.lostTaskIDs)
            let renewed = sent + .milliseconds(Int64(response.leaseMs > 0 ? response.leaseMs : leaseMilliseconds.load(ordering: .relaxed)))
            held.withLock { held in
                for id in request.taskIDs where !lost.contains(id) {
                    if let expires = held[id]?.expires { held[id]?.expires = max(expires, renewed) }
                }
            }
            for id in lost {
                logger.warning("lease lost; abandoning task", metadata: ["task": "\(id)"])
                let entry = held.withLock { held -> Held? in
                    held[id]?.lost = true
                    return held[id]
                }
                entry?.cancel()
            }
        }
    }

    /// Runs one task and reports its outcome.
    ///
    /// A merge's segment still has to reach the disk (`UncommittedSegment`):
    /// that is disk time, not CPU time, so it is synced and reported in the
    /// returned background task while the slot goes on to its next task.
    /// The lease is held, and renewed by the heartbeat, until the report.
    func perform(_ task: IngestTask, memory: SlotMemory) async -> Task<Void, Never>? {
        do {
            let (report, segment) = try await whileOutage(task) { () async throws -> (CompleteTaskRequest, UncommittedSegment?) in
                let work = Task { try await self.execute(task, memory: memory) }
                self.held.withLock { $0[task.taskID]?.cancel = { work.cancel() } }
                return try await withTaskCancellationHandler { try await work.value } onCancel: { work.cancel() }
            }
            guard let segment else {
                await complete(task, report)
                return nil
            }
            return Task {
                do {
                    try segment.commit()
                    try await self.whileOutage(task) {
                        try await self.store.commit(report.outputPath.isEmpty ? task.outputPath : report.outputPath)
                    }
                    await self.complete(task, report)
                } catch where self.isLost(task) {
                    segment.discard()
                    self.release(task)
                } catch {
                    segment.discard()
                    await self.fail(task, error)
                }
            }
        } catch where error is CancellationError || Task.isCancelled || isLost(task) {
            // The lease was lost or the worker is stopping: say nothing; the
            // lease expires and the coordinator hands the task out again.
            release(task)
        } catch {
            await fail(task, error)
        }
        return nil
    }

    /// Whether `error` says the lake or the store cannot be reached now,
    /// rather than anything about the task's data.
    static func isOutage(_ error: any Error) -> Bool {
        if case .unavailable? = error as? LakeError { return true }
        return (error as? any OutageError)?.isTransient == true
    }

    /// Runs `body` again, with backoff, for as long as it fails because the
    /// lake or store cannot be reached and the lease is still this
    /// worker's (the heartbeat keeps renewing it meanwhile).
    private func whileOutage<T>(_ task: IngestTask, _ body: () async throws -> T) async throws -> T {
        var delay = Duration.milliseconds(200)
        var said = false
        while true {
            do {
                let result = try await body()
                if said { logger.notice("the lake and store answer again; task resumed", metadata: ["task": "\(task.taskID)"]) }
                return result
            } catch where Self.isOutage(error) && !isLost(task) && !Task.isCancelled {
                WorkerMetrics.outageRetries.increment()
                if !said {
                    logger.warning("cannot reach the lake or store; retrying while the lease is held (not a failed attempt)",
                                   metadata: ["task": "\(task.taskID)", "error": "\(error)"])
                    said = true
                }
                try await Task.sleep(for: delay)
                delay = min(delay * 2, configuration.maxOutageBackoff)
            }
        }
    }

    private func isLost(_ task: IngestTask) -> Bool {
        held.withLock { $0[task.taskID]?.lost ?? true }
    }

    private func release(_ task: IngestTask) {
        held.withLock { _ = $0.removeValue(forKey: task.taskID) }
    }

    private func complete(_ task: IngestTask, _ report: CompleteTaskRequest) async {
        defer { release(task) }
        if task.kind != .merge {
            WorkerMetrics.bytes.increment(by: Int64(report.bytes))
            WorkerMetrics.keys.increment(by: Int64(report.keys))
            WorkerMetrics.invalid.increment(by: Int64(report.invalidByKind.values.reduce(0, +)))
        }
        var report = report
        report.workerID = configuration.id
        report.taskID = task.taskID
        report.leaseToken = task.leaseToken
        do {
            let accepted = try await untilLeaseEnds(task) { try await self.coordinator.completeTask(report, options: self.options).accepted }
            if accepted { completed.add(1, ordering: .relaxed) }
            WorkerMetrics.task(task.kind, accepted ? "done" : "refused").increment()
            logger.debug("task done", metadata: ["task": "\(task.taskID)", "accepted": "\(accepted)"])
        } catch {
            // The coordinator is unreachable: the lease expires and the task runs again.
            logger.warning("cannot report a finished task", metadata: ["task": "\(task.taskID)", "error": "\(error)"])
        }
    }

    private func fail(_ task: IngestTask, _ error: any Error) async {
        defer { release(task) }
        var failure = FailTaskRequest()
        failure.workerID = configuration.id
        failure.taskID = task.taskID
        failure.leaseToken = task.leaseToken
        if let lakeError = error as? LakeError, case .changed = lakeError { failure.fileChanged = true }
        if let lost = error as? RunsLost { failure.lostRuns = lost.runs }
        failure.error = "\(error)"
        logger.warning("task failed", metadata: ["task": "\(task.taskID)", "error": "\(error)"])
        WorkerMetrics.task(task.kind, "failed").increment()
        _ = try? await untilLeaseEnds(task) { try await self.coordinator.failTask(failure, options: self.options) }
    }

    /// Sends a report until a coordinator takes it or the task's lease ends
    /// (after which the report would be ignored anyway): a refusal by a
    /// standby, a coordinator that cannot be reached or does not answer in
    /// time, or a catalog that cannot be written now is tried again, with
    /// backoff up to a second, on whichever coordinator leads by then.
    private func untilLeaseEnds<T>(_ task: IngestTask, _ body: () async throws -> T) async throws -> T {
        var delay = Duration.milliseconds(50)
        while true {
            do { return try await body() } catch let error as RPCError where [.unavailable, .deadlineExceeded].contains(error.code) {
                let expires = held.withLock { $0[task.taskID]?.expires } ?? .now
                guard ContinuousClock.now + delay < expires else { throw error }
                WorkerMetrics.reportRetries.increment()
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    /// Does a task; a merge's segment is returned sealed but not yet committed.
    private func execute(_ task: IngestTask, memory: SlotMemory) async throws -> (CompleteTaskRequest, UncommittedSegment?) {
        switch task.kind {
        case .parse: return (try await parse(task, memory: memory), nil)
        case .merge: return try await merge(task, memory: memory)
        case .whole: return try await whole(task, memory: memory)
        case .delta: return try await delta(task)
        case .compact: return try await compact(task)
        default: throw RPCError(.invalidArgument, "unknown task kind \(task.kind.rawValue)")
        }
    }

    /// Reads the task's block into `memory.keys`, after finding the file's
    /// hash type from its head (as every block of the file does).
    private func parseKeys(_ task: IngestTask, memory: SlotMemory) async throws -> (BlockStats, HashKind) {
        let object = LakeObject(path: task.lakePath, size: Int64(task.end), etag: task.etag, modified: Date(timeIntervalSince1970: 0))
        let kind = try await hashKind(of: object)
        memory.keys.removeAll(keepingCapacity: true)
        memory.keys.reserveCapacity(Int(task.end - task.start) / (kind.hexDigits + 1) + 16)
        let stats = try await configuration.parser.parse(
            lake, object: object, block: BlockRange(start: Int64(task.start), end: Int64(task.end)), hashKind: kind, into: &memory.keys)
        try Task.checkCancellation()
        return (stats, kind)
    }

    /// The type of `object`'s hashes (`HashSniffer`), read once per file version.
    private func hashKind(of object: LakeObject) async throws -> HashKind {
        let name = object.path + "\u{0}" + object.etag
        if let known = hashKinds.withLock({ $0[name] }) { return known }
        let kind = try await HashSniffer.detect(lake, object: object)
        hashKinds.withLock {
            if $0.count >= Self.hashKindCacheLimit { $0.removeAll(keepingCapacity: true) }
            $0[name] = kind
        }
        return kind
    }

    /// A file of one block: parsed, sorted and written as its one segment,
    /// with no run and no merge task (a 10 KB list costs one lease, not two).
    private func whole(_ task: IngestTask, memory: SlotMemory) async throws -> (CompleteTaskRequest, UncommittedSegment) {
        let (stats, kind) = try await parseKeys(task, memory: memory)
        let sorted = memory.keys.withUnsafeBufferPointer {
            KeySorter.sortAndDeduplicate($0, low: 0, significantBits: 64, in: memory.scratch)
        }
        let local = try store.prepareWrite(task.outputPath)
        let writer = try SegmentWriter(path: local, advertiserID: task.advertiserID, version: task.version, estimatedKeys: sorted.count,
                                       hashKind: kind)
        let segment: UncommittedSegment
        do {
            try writer.append(contentsOf: sorted)
            segment = try writer.seal()
        } catch {
            writer.discard()
            throw error
        }
        var report = Self.report(stats, kind: kind, task: task)
        report.outputKeys = UInt64(sorted.count)
        return (report, segment)
    }

    /// A delta file, read whole (the coordinator refuses one too large for
    /// that), written as one overlay segment: the keys it adds, or those it
    /// removes (`task.removes`). The adds task reports the lines; the
    /// removes task reads the same lines and reports none, so the file's
    /// counts are not doubled.
    private func delta(_ task: IngestTask) async throws -> (CompleteTaskRequest, UncommittedSegment) {
        let size = Int(task.end - task.start)
        let bytes = try await lake.read(task.lakePath, offset: Int64(task.start), length: size, ifMatch: task.etag)
        guard bytes.count == size else { throw LakeError.io(path: task.lakePath, reason: "read \(bytes.count) of \(size) bytes: the file is shorter than when it was listed") }
        let parsed = bytes.withUnsafeBytes { DeltaParser.parse($0) }
        try Task.checkCancellation()
        let keys = task.removes ? parsed.removes : parsed.adds
        let local = try store.prepareWrite(task.outputPath)
        let writer = try SegmentWriter(path: local, advertiserID: task.advertiserID, version: task.version, estimatedKeys: keys.count,
                                       hashKind: parsed.hashKind, role: task.removes ? .removes : .adds)
        let segment: UncommittedSegment
        do {
            try keys.withUnsafeBufferPointer { try writer.append(contentsOf: $0) }
            segment = try writer.seal()
        } catch {
            writer.discard()
            throw error
        }
        var report = task.removes ? CompleteTaskRequest() : Self.report(parsed.stats, kind: parsed.hashKind, task: task)
        report.hashType = HashType(rawValue: parsed.hashKind.wireValue)
        report.outputKeys = UInt64(keys.count)
        return (report, segment)
    }

    /// A compaction: the list the task's segments make (a base and the
    /// overlays of deltas on it, `LayeredList`) written as one new base
    /// segment. Reads segments only, streaming; never the lake.
    private func compact(_ task: IngestTask) async throws -> (CompleteTaskRequest, UncommittedSegment) {
        var segments: [Segment] = []
        var fetched: [String: String] = [:]
        defer { let store = store, local = Array(fetched.values); Task { for path in local { await store.discardLocal(path) } } }
        var mappings: [String: FileMapping] = [:]
        for ref in task.segments {
            let local: String
            if let known = fetched[ref.path] { local = known } else {
                local = try await store.localFile(ref.path)
                fetched[ref.path] = local
            }
            let mapping = try mappings[local] ?? FileMapping(path: local)
            mappings[local] = mapping
            let slice = ref.length == 0 ? nil : SegmentLocation.Slice(offset: Int(clamping: ref.offset), length: Int(clamping: ref.length))
            let segment = try Segment(in: mapping, slice: slice, checks: .everything)
            guard segment.info.advertiserID == task.advertiserID else {
                throw SegmentError(ref.path, "belongs to advertiser '\(segment.info.advertiserID)', not '\(task.advertiserID)'")
            }
            segments.append(segment)
        }
        let list = LayeredList(segments)
        let kind = HashKind(wireValue: task.hashType.rawValue) ?? .md5
        let local = try store.prepareWrite(task.outputPath)
        let writer = try SegmentWriter(path: local, advertiserID: task.advertiserID, version: task.version,
                                       estimatedKeys: max(list.base.keyCount, 0) + list.overlays.reduce(0) { $0 + $1.adds.keyCount },
                                       hashKind: kind)
        var written = 0
        let segment: UncommittedSegment
        do {
            try list.forEachKey(after: nil) { key in
                try writer.append(key)
                written += 1
                if written & 0xFFFFF == 0, Task.isCancelled { throw CancellationError() }
                return true
            }
            segment = try writer.seal()
        } catch {
            writer.discard()
            throw error
        }
        logger.debug("compacted", metadata: ["task": "\(task.taskID)", "overlays": "\(list.overlays.count)", "keys": "\(written)"])
        var report = CompleteTaskRequest()
        report.outputKeys = UInt64(written)
        return (report, segment)
    }

    private func parse(_ task: IngestTask, memory: SlotMemory) async throws -> CompleteTaskRequest {
        let clock = ContinuousClock()
        let started = clock.now
        let (stats, kind) = try await parseKeys(task, memory: memory)
        let parsed = clock.now
        let local = try store.prepareWrite(task.outputPath)
        // Not synced: a run lives only until its version is merged, and one
        // that a crash loses is found by the merge and its block parsed
        // again (`RunsLost`). Syncing each run cost up to a third of the
        // parse phase (docs/INGEST.md).
        let keyCount = try memory.keys.withUnsafeBufferPointer {
            try RunWriter.write($0, partitionBits: Int(task.partitionBits), version: task.version, to: local,
                                durable: false, scratch: memory.scratch)
        }
        try await store.commit(task.outputPath)
        logger.debug("parsed block", metadata: [
            "task": "\(task.taskID)", "bytes": "\(task.end - task.start)", "keys": "\(stats.keys)",
            "parse_ms": "\((parsed - started).wholeMilliseconds)", "write_ms": "\((clock.now - parsed).wholeMilliseconds)",
        ])

        var report = Self.report(stats, kind: kind, task: task)
        report.outputKeys = UInt64(keyCount)
        return report
    }

    /// A parsed block's counts, as the coordinator records them.
    private static func report(_ stats: BlockStats, kind: HashKind, task: IngestTask) -> CompleteTaskRequest {
        var report = CompleteTaskRequest()
        report.hashType = HashType(rawValue: kind.wireValue)
        report.lines = UInt64(stats.lines)
        report.keys = UInt64(stats.keys)
        report.skipped = UInt64(stats.skipped)
        report.bytes = task.end - task.start
        report.invalidByKind = Dictionary(uniqueKeysWithValues: stats.invalid.map { ($0.key.rawValue, UInt64($0.value)) })
        report.invalidSamples = stats.samples.map {
            var line = InvalidLine()
            line.line = UInt64($0.lineInBlock)
            line.kind = $0.kind.rawValue
            return line
        }
        return report
    }

    private func merge(_ task: IngestTask, memory: SlotMemory) async throws -> (CompleteTaskRequest, UncommittedSegment) {
        let clock = ContinuousClock()
        let started = clock.now
        // Only what this merge reads: from an object store, its partitions of
        // each run, fetched a few runs at a time (each is a handful of small
        // requests whose latency would otherwise add up run after run).
        var fetched: [Int: String] = [:]
        defer { let store = store, local = Array(fetched.values); Task { for path in local { await store.discardLocal(path) } } }
        let (store, low, high) = (self.store, task.keyLow, task.keyHigh)
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var next = 0
            func start() {
                let index = next, run = task.runs[index]
                next += 1
                group.addTask { (index, try await store.localRun(run, low: low, high: high)) }
            }
            while next < min(task.runs.count, 8) { start() }
            while let (index, path) = try await group.next() {
                fetched[index] = path
                if next < task.runs.count { start() }
            }
        }
        let paths = task.runs.indices.map { fetched[$0]! }
        do {
            return try await merge(task, runs: paths, memory: memory, started: started)
        } catch let error as RunMerger.RunUnreadable {
            // A run is missing or damaged: say which (checking the others'
            // headers too, since a crash loses several), so their blocks are
            // parsed again.
            let lost = zip(task.runs, paths).enumerated()
                .filter { $0.offset == error.run || (try? RunFile(path: $0.element.1)) == nil }.map(\.element.0)
            throw RunsLost(runs: lost, reason: error.reason)
        }
    }

    private func merge(_ task: IngestTask, runs paths: [String], memory: SlotMemory, started: ContinuousClock.Instant) async throws
        -> (CompleteTaskRequest, UncommittedSegment) {
        let clock = ContinuousClock()
        let covered = try RunMerger.keysCovering(runPaths: paths, low: task.keyLow, high: task.keyHigh)
        // Unique to this attempt: the segment's own file, or where a large
        // range's scratch files go when the segment goes into a pack slot.
        let local = try store.prepareWrite(task.outputPath)
        let capacity = SegmentFormat.fileSize(forKeys: covered)
        // A coordinator that predates hash types sends none: its files are MD5.
        let kind = HashKind(wireValue: task.hashType.rawValue) ?? .md5
        let writer: SegmentWriter
        if !task.packPath.isEmpty, let slot = try store.reserveSlot(in: task.packPath, capacity: capacity) {
            writer = try SegmentWriter(slot: slot, advertiserID: task.advertiserID, version: task.version, estimatedKeys: covered,
                                       hashKind: kind)
        } else {
            writer = try SegmentWriter(path: local, advertiserID: task.advertiserID, version: task.version, estimatedKeys: covered,
                                       hashKind: kind)
        }
        let written: Int
        let segment: UncommittedSegment
        do {
            written = try RunMerger.merge(runPaths: paths, low: task.keyLow, high: task.keyHigh, coveredKeys: covered,
                                          memoryLimit: configuration.mergeMemoryLimit, scratch: local, into: writer,
                                          keys: &memory.keys, buffer: memory.scratch, isCancelled: { Task.isCancelled })
            segment = try writer.seal()
        } catch {
            writer.discard()
            throw error
        }
        logger.debug("merged", metadata: ["task": "\(task.taskID)", "runs": "\(paths.count)", "keys": "\(written)",
                                          "ms": "\((clock.now - started).wholeMilliseconds)"])
        var report = CompleteTaskRequest()
        report.outputKeys = UInt64(written)
        if let slice = segment.slice {
            report.outputPath = task.packPath
            report.outputOffset = UInt64(slice.offset)
            report.outputLength = UInt64(slice.length)
        }
        return (report, segment)
    }
}

/// A merge could not read some of its runs.
struct RunsLost: Error, CustomStringConvertible {
    /// The runs, as the task named them.
    var runs: [String]
    var reason: SegmentError

    var description: String { "cannot read \(runs.count) run(s), to be parsed again: \(reason)" }
}

/// What a slot keeps from task to task: the keys of a block or a merge
/// range, and a scratch buffer for a run image or a sort (`ScratchBuffer`
/// says why). A slot runs one task at a time, hence the unchecked `Sendable`.
final class SlotMemory: @unchecked Sendable {
    var keys: [Key16] = []
    let scratch = ScratchBuffer()

    /// Frees a buffer larger than `limit` bytes.
    func trim(toAtMost limit: Int) {
        if keys.capacity * MemoryLayout<Key16>.stride > limit { keys = [] }
        scratch.shrink(toAtMost: limit)
    }
}


/// `roster_worker_*` (docs/OPERATIONS.md): tasks by kind and outcome, and what parsing read.
enum WorkerMetrics {
    static func task(_ kind: TaskKind, _ outcome: String) -> Counter {
        Counter(label: "roster_worker_tasks_total", dimensions: [("kind", "\(kind)"), ("outcome", outcome)])
    }
    static let bytes = Counter(label: "roster_worker_parsed_bytes_total")
    static let keys = Counter(label: "roster_worker_parsed_keys_total")
    static let invalid = Counter(label: "roster_worker_invalid_lines_total")
    static let leaseFailures = Counter(label: "roster_worker_lease_failures_total")
    static let reportRetries = Counter(label: "roster_worker_report_retries_total")
    static let outageRetries = Counter(label: "roster_worker_outage_retries_total")
}
