import Metrics
import RosterAPI

/// The coordinator's `roster_ingest_*` counters and timers (docs/OPERATIONS.md),
/// recorded where the catalog changes; gauges of its state (files and tasks
/// by state, the queue) are read from the catalog at each scrape instead.
enum IngestMetrics {
    /// Leases that ran out before their worker reported (a worker died or stalled).
    static let leaseExpiries = Counter(label: "roster_ingest_lease_expiries_total")

    /// Attempts at tasks (each lease is one), by kind.
    static func attempts(_ kind: TaskKind) -> Counter {
        Counter(label: "roster_ingest_task_attempts_total", dimensions: [("kind", "\(kind)")])
    }

    /// Versions the shrink guard held instead of publishing (they show as
    /// `roster_ingest_files{state="held"}` until approved or replaced).
    static let versionsHeld = Counter(label: "roster_ingest_versions_held_total")

    /// Compactions queued: a version made by deltas rewritten as one base.
    static let compactions = Counter(label: "roster_ingest_compactions_total")

    /// From a file's submission to its version going live.
    static let timeToLive = Timer(label: "roster_ingest_time_to_live_seconds", preferredDisplayUnit: .seconds)
}

extension Timer {
    func recordSeconds(_ seconds: Double) { recordNanoseconds(Int64(seconds * 1e9)) }
}
