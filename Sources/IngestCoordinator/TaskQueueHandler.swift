import Foundation
import Logging
import RosterAPI
import RosterRPC

/// `TaskQueue`, the workers' service: the pull protocol (leases, heartbeats,
/// reports). Worker tokens only (`CoordinatorAccess`).
public struct TaskQueueHandler: TaskQueue.Handler {
    public let core: CoordinatorCore

    public init(core: CoordinatorCore) { self.core = core }

    public var interceptors: [any RPCInterceptor] { core.configuration.access.taskQueueChecks }

    private var leaseMs: UInt32 { UInt32(clamping: core.catalog.policy.lease.wholeMilliseconds) }

    public func leaseTasks(_ request: LeaseTasksRequest, context: RPCContext) async throws -> LeaseTasksResponse {
        try await core.asLeader {
            guard !request.workerID.isEmpty else { throw IngestError.invalidArgument("worker_id is empty") }
            var response = LeaseTasksResponse()
            let most = Int(min(max(request.max, 1), 64))
            let lease = { @Sendable (now: Double) in
                try await core.db { try $0.lease(worker: request.workerID, max: most, now: now, request: request.requestID) }
            }
            var seen = core.work.generation
            response.tasks = try await lease(core.clock())
            // Long poll: wait for work to appear rather than have idle workers poll.
            let deadline = ContinuousClock.now + .milliseconds(Int(min(request.waitMs, 10_000)))
            while response.tasks.isEmpty && ContinuousClock.now < deadline && !Task.isCancelled {
                // Re-check at least once a second: leases expire without a
                // signal. Work that appeared while this call looked is not missed.
                await core.work.wait(timeout: min(.seconds(1), deadline - ContinuousClock.now), since: seen)
                seen = core.work.generation
                response.tasks = try await lease(core.clock())
            }
            response.leaseMs = leaseMs
            return response
        }
    }

    public func heartbeat(_ request: HeartbeatRequest, context: RPCContext) async throws -> HeartbeatResponse {
        try await core.asLeader {
            guard request.taskIDs.count == request.leaseTokens.count else {
                throw IngestError.invalidArgument("task_ids and lease_tokens differ in length")
            }
            var response = HeartbeatResponse()
            let now = core.clock()
            response.lostTaskIDs = try await core.db {
                try $0.heartbeat(worker: request.workerID, tasks: Array(zip(request.taskIDs, request.leaseTokens)), now: now)
            }
            response.leaseMs = leaseMs
            return response
        }
    }

    public func completeTask(_ request: CompleteTaskRequest, context: RPCContext) async throws -> CompleteTaskResponse {
        try await core.asLeader {
            let now = core.clock()
            let progress = try await core.db { try $0.complete(request, now: now) }
            if progress == nil {
                core.logger.info("ignored a report for a lease no longer held", metadata: ["task": "\(request.taskID)", "worker": "\(request.workerID)"])
            }
            if case .held(let reason)? = progress {
                IngestMetrics.versionsHeld.increment()
                core.logger.warning("a new version was held, not published; the live list keeps serving: roster approve publishes it",
                                    metadata: ["task": "\(request.taskID)", "reason": "\(reason)"])
            }
            if progress == .readyToPublish || progress == .rejected { core.wake.yield() }
            if progress == .merging { core.work.notify() }
            var response = CompleteTaskResponse()
            response.accepted = progress != nil
            return response
        }
    }

    public func failTask(_ request: FailTaskRequest, context: RPCContext) async throws -> FailTaskResponse {
        try await core.asLeader {
            let now = core.clock()
            let outcome = try await core.db { try $0.fail(request, now: now) }
            var response = FailTaskResponse()
            response.accepted = outcome != .ignored
            switch outcome {
            case .fileChanged(let path):
                core.logger.warning("file changed during ingest; it is queued again once it has settled", metadata: ["path": "\(path)"])
                core.watchUntilSettled(path)
            case .failed:
                core.logger.error("version failed", metadata: ["task": "\(request.taskID)", "error": "\(request.error)"])
                core.wake.yield()
            case .retrying:
                core.work.notify()
            case .ignored:
                break
            }
            return response
        }
    }
}
