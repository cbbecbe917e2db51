import IngestCoordinator
import MatchServer
import RosterAPI
import RosterClient
import RosterMetrics

/// Gauges read from a service's own state at each scrape (docs/OPERATIONS.md):
/// what the coordinator's catalog holds, and what a match server serves.
enum ServiceGauges {
    static let fileStates: [FileState] = [.queued, .parsing, .merging, .held, .publishing, .live, .failed, .rejected, .superseded, .retired]

    static func coordinator(_ endpoint: MetricsEndpoint, _ service: CoordinatorService) {
        endpoint.beforeScrape {
            let status = try await service.currentStatus(limit: 1)
            for state in fileStates {
                endpoint.gauge("roster_ingest_files", help: "File versions in the catalog, by state.", labels: [("state", state.name)])
                    .set(Double(status.filesByState[state.name] ?? 0))
            }
            let tasks = "Tasks of versions in flight, by state (queued: waiting for a worker; leased: being worked on)."
            endpoint.gauge("roster_ingest_tasks", help: tasks, labels: [("state", "queued")]).set(Double(status.tasksQueued))
            endpoint.gauge("roster_ingest_tasks", help: tasks, labels: [("state", "leased")]).set(Double(status.tasksLeased))
            endpoint.gauge("roster_ingest_workers", help: "Workers seen in the last three lease lengths.").set(Double(status.workersSeen))
            endpoint.gauge("roster_ingest_advertisers_live", help: "Advertisers with a live list.").set(Double(status.advertisersLive))
            endpoint.gauge("roster_ingest_problems", help: "Problems Status reports now (each needs attention).").set(Double(status.problems.count))
            let queue = try await service.queue(limit: 10_000)
            endpoint.gauge("roster_ingest_queue_files", help: "Files with tasks a worker may lease now (the queue by priority).")
                .set(Double(queue.count))
            endpoint.gauge("roster_ingest_queue_top_score", help: "The priority score of the file workers lease next (0: none waiting).")
                .set(queue.first?.score ?? 0)
        }
    }

    static func matchServer(_ endpoint: MetricsEndpoint, _ catalog: MatchCatalog) {
        endpoint.beforeScrape {
            let served = catalog.served()
            var keys = 0
            for entry in served where entry.version != 0 { keys += catalog.current(entry.advertiser)?.keyCount ?? 0 }
            endpoint.gauge("roster_match_lists", help: "Advertisers' lists this match server serves.")
                .set(Double(served.filter { $0.version != 0 }.count))
            endpoint.gauge("roster_match_keys", help: "Keys in the lists this match server serves.").set(Double(keys))
            endpoint.gauge("roster_match_damaged_lists", help: "Lists this server found damaged (not served until a newer version).")
                .set(Double(served.filter { $0.damage != nil }.count))
            endpoint.gauge("roster_match_memory_maps", help: "Memory maps the served segments hold.").set(Double(catalog.memoryMaps))
        }
    }
}
