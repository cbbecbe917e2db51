import DataLake
import Foundation
import Logging
import RosterAPI
import RosterRPC

/// `IngestAdmin`, the operators' service: submit and scan, watch, weigh,
/// roll back and delete. Operator tokens call everything, viewer tokens
/// the reads (`CoordinatorAccess`). Failures are typed errors that know
/// their status (`IngestError`, `LakeError` through `lakeError`): nothing
/// here picks a code.
public struct IngestAdminHandler: IngestAdmin.Handler {
    public let core: CoordinatorCore

    public init(core: CoordinatorCore) { self.core = core }

    public var interceptors: [any RPCInterceptor] { core.configuration.access.adminChecks }

    public func submitFile(_ request: SubmitFileRequest, context: RPCContext) async throws -> SubmitFileResponse {
        try await core.asLeader {
            let object: LakeObject
            do throws(LakeError) {
                object = try await core.lake.head(request.path)
            } catch {
                throw Self.lakeError(error)
            }
            guard let advertiser = object.advertiserID else {
                throw IngestError.invalidArgument("\(request.path): files go in an advertiser's folder: <advertiser-id>/<file>")
            }
            if let problem = IngestPolicy.problem(withAdvertiserID: advertiser) {
                throw IngestError.invalidArgument("\(request.path): \(problem)")
            }
            let now = core.clock()
            let submission = try await core.db { try $0.submit(object, now: now) }
            if submission.queued {
                core.work.notify()
                core.logger.info("submitted", metadata: ["path": "\(object.path)", "version": "\(submission.version)", "bytes": "\(object.size)"])
            }
            var response = SubmitFileResponse()
            response.version = submission.version
            response.advertiserID = submission.advertiserID
            response.queued = submission.queued
            response.state = submission.state
            return response
        }
    }

    /// A lake failure as the caller sees it: a path that is not there or not
    /// valid is the caller's; anything else is the lake's, for now.
    static func lakeError(_ error: LakeError) -> RPCError {
        switch error {
        case .notFound(let path): RPCError(.notFound, "\(path): no such file in the lake")
        case .invalidPath(let path): RPCError(.invalidArgument, "\(path): not a valid lake path (<advertiser-id>/<file>)")
        case .outsideLake: RPCError(.invalidArgument, error.description)
        case .changed, .io, .unavailable: RPCError(.unavailable, "cannot reach the lake: \(error)")
        }
    }

    public func status(_ request: StatusRequest, context: RPCContext) async throws -> StatusResponse {
        try await core.currentStatus(limit: request.limit == 0 ? 50 : Int(min(request.limit, 1_000)))
    }

    public func listFiles(_ request: ListFilesRequest, context: RPCContext) async throws -> ListFilesResponse {
        var response = ListFilesResponse()
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1_000))
        let now = core.clock()
        response.files = try await core.db {
            try $0.files(advertiser: request.advertiserID, states: request.states, limit: limit, before: request.beforeVersion, now: now)
        }
        if response.files.count == limit, let last = response.files.last { response.nextBeforeVersion = last.version }
        return response
    }

    public func listAdvertisers(_ request: ListAdvertisersRequest, context: RPCContext) async throws -> ListAdvertisersResponse {
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1_000))
        var response = ListAdvertisersResponse()
        response.advertisers = try await core.db { try $0.advertisers(after: request.afterAdvertiserID, limit: limit) }
        if response.advertisers.count == limit, let last = response.advertisers.last { response.nextAfterAdvertiserID = last.advertiserID }
        return response
    }

    public func scan(_ request: ScanRequest, context: RPCContext) async throws -> ScanResponse {
        try await core.asLeader {
            do {
                return try await core.scanNow(within: core.configuration.scanAnswerWithin)
            } catch let error as LakeError {
                throw RPCError(.unavailable, "cannot scan the lake: \(error)")
            }
        }
    }

    public func setWeight(_ request: SetWeightRequest, context: RPCContext) async throws -> SetWeightResponse {
        try await core.asLeader {
            guard !request.advertiserID.isEmpty else { throw IngestError.invalidArgument("advertiser_id is empty") }
            try await core.db { try $0.setWeight(advertiser: request.advertiserID, weight: request.weight) }
            return SetWeightResponse()
        }
    }

    /// Serves a retired version again: the publisher swaps it in (no
    /// re-ingest) and the catalog records it live and the version it
    /// replaced retired, both kept for another rollback.
    public func rollback(_ request: RollbackRequest, context: RPCContext) async throws -> RollbackResponse {
        try await core.asLeader {
            guard !request.advertiserID.isEmpty else { throw IngestError.invalidArgument("advertiser_id is empty") }
            let keep = core.configuration.keepRetiredVersions
            let (target, live) = try await core.db {
                try $0.rollbackTarget(advertiser: request.advertiserID, version: request.version, keepRetired: keep)
            }
            let previous = try await core.publisher.rollback(to: target, live: live, core: core)
            core.logger.notice("rolled back", metadata: ["advertiser": "\(target.advertiserID)", "version": "\(target.version)", "previous": "\(previous)"])
            return RollbackResponse(version: target.version, previousVersion: previous)
        }
    }

    /// Publishes a version the shrink guard held: the catalog moves it to
    /// publishing and the publish loop makes it live, as any other.
    public func approve(_ request: ApproveRequest, context: RPCContext) async throws -> ApproveResponse {
        try await core.asLeader {
            guard !request.advertiserID.isEmpty else { throw IngestError.invalidArgument("advertiser_id is empty") }
            let approval = try await core.db { try $0.approve(advertiser: request.advertiserID, version: request.version) }
            core.logger.notice("approved a held version", metadata: [
                "advertiser": "\(request.advertiserID)", "version": "\(approval.version)", "keys": "\(approval.keys)", "live_keys": "\(approval.liveKeys)",
            ])
            core.wake.yield()
            return ApproveResponse(version: approval.version, keys: approval.keys, liveKeys: approval.liveKeys)
        }
    }

    public func setMaxShrink(_ request: SetMaxShrinkRequest, context: RPCContext) async throws -> SetMaxShrinkResponse {
        try await core.asLeader {
            guard !request.advertiserID.isEmpty else { throw IngestError.invalidArgument("advertiser_id is empty") }
            let value: Double? = request.useDefault ? nil : request.maxShrink
            try await core.db { try $0.setMaxShrink(advertiser: request.advertiserID, maxShrink: value) }
            core.logger.notice("set an advertiser's shrink guard", metadata: [
                "advertiser": "\(request.advertiserID)", "max_shrink": "\(value.map { "\($0)" } ?? "default")",
            ])
            return SetMaxShrinkResponse()
        }
    }

    /// Deletes an advertiser: the catalog first (so nothing republishes it
    /// and garbage collection removes its data), then the match servers
    /// stop serving it. One that cannot be told now is told later (the
    /// publisher's reconcile unpublishes what a deleted advertiser still has served).
    public func deleteAdvertiser(_ request: DeleteAdvertiserRequest, context: RPCContext) async throws -> DeleteAdvertiserResponse {
        try await core.asLeader {
            guard !request.advertiserID.isEmpty else { throw IngestError.invalidArgument("advertiser_id is empty") }
            let now = core.clock()
            let deleted = try await core.db { try $0.deleteAdvertiser(request.advertiserID, now: now) }
            core.logger.notice("deleted an advertiser", metadata: ["advertiser": "\(request.advertiserID)", "live": "\(deleted.live ?? 0)"])
            try await core.publisher.unpublish(advertiser: request.advertiserID, core: core)
            return DeleteAdvertiserResponse(removedVersion: deleted.live ?? 0, versions: UInt32(deleted.versions))
        }
    }
}
