import Foundation
import Logging
import ServiceLifecycle

/// The coordinator's background loops, each a `Service` of its own in the
/// service group: it runs until cancelled or shut down gracefully (which
/// cancels its sleep at once), and only the leader's do any work (a
/// standby's wait for it to lead).

/// Campaigns every third of the lease; logs each change of role.
public struct ElectionLoop: Service {
    let core: CoordinatorCore
    let election: CoordinatorConfiguration.Election

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await loop() }
    }

    private func loop() async throws {
        var leading = false
        var known = false // whether the role was logged yet
        let lease = election.lease / .seconds(1)
        while !Task.isCancelled {
            do {
                let address = core.advertisedAddress ?? election.address
                let now = core.clock()
                let leader = try await core.db { [election] in try $0.campaign(holder: election.holder, address: address, lease: lease, now: now) }
                let leads = leader.holder == election.holder
                // Taking part again clears an earlier failure at once, whatever the role.
                core.problem("leader", nil)
                if leads != leading || !known {
                    leading = leads
                    known = true
                    if leads {
                        core.logger.notice("leading", metadata: ["token": "\(leader.token)", "address": "\(address)"])
                        core.wake.yield()
                        core.work.notify()
                    } else {
                        core.logger.notice("standing by", metadata: ["leader": "\(leader.address)"])
                    }
                }
            } catch {
                if leading { core.logger.error("cannot renew the lead; standing by", metadata: ["error": "\(error)"]) }
                leading = false
                core.problem("leader", "cannot take part in the election: \(error)")
            }
            try? await Task.sleep(for: election.lease / 3)
        }
        if leading { _ = try? await core.db { [election] in try $0.resign(holder: election.holder) } }
    }
}

/// Looks for new files in the lake, paced so that scans use a small share of a core.
public struct ScanLoop: Service {
    let core: CoordinatorCore
    let interval: Duration

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await loop() }
    }

    private func loop() async throws {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            if core.isLeader {
                do { _ = try await core.sharedScan(report: false).value } catch {
                    core.logger.warning("scan failed", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: IngestPolicy.scanPause(after: ContinuousClock.now - started, interval: interval))
        }
    }
}

/// Publishes merged versions (and requeues files that settled) whenever a
/// report wakes it, and at least every `publishInterval`, so that a
/// publish that failed is retried without a wake-up.
public struct PublishLoop: Service {
    let core: CoordinatorCore

    public func run() async throws {
        core.wake.yield()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: core.configuration.publishInterval)
                    core.wake.yield()
                }
            }
            await withGracefulShutdownHandler {
                for await _ in core.wakeups {
                    if Task.isCancelled || Task.isShuttingDownGracefully { break }
                    await core.requeueSettled()
                    await core.publishPending()
                }
            } onGracefulShutdown: {
                core.wake.finish()
            }
            group.cancelAll()
        }
    }
}

/// Deletes what no version needs any more, every `publishInterval`.
public struct CollectLoop: Service {
    let core: CoordinatorCore

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await loop() }
    }

    private func loop() async throws {
        while !Task.isCancelled {
            await core.collectGarbage()
            try? await Task.sleep(for: core.configuration.publishInterval)
        }
    }
}

/// Keeps what the match servers serve in line with the catalog (the
/// publisher's `maintain`): rebuilds what one lost, places lists on a tier.
public struct ReconcileLoop: Service {
    let core: CoordinatorCore

    public func run() async throws {
        await cancelWhenGracefulShutdown { await core.publisher.maintain(core: core) }
    }
}
