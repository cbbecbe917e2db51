/// `# HELP` lines for the metric families Roster's services record through
/// swift-metrics, whose API carries no help text. Prometheus (and
/// `promtool check metrics`) expects one for every family; the exposition is
/// annotated on its way out, so the families stay defined where they are
/// recorded.
enum MetricsHelp {
    static let texts: [String: String] = [
        "roster_rpc_server_calls_total": "RPC calls finished, by method and status code.",
        "roster_rpc_server_inflight_calls": "RPC calls being served now.",
        "roster_rpc_server_connections": "Client connections open now.",
        "roster_rpc_server_call_duration_seconds": "Time to serve an RPC call, by method (inline calls: one in 16 is timed).",
        "roster_catalog_transactions_total": "Catalog transactions, by kind (read, write).",
        "roster_catalog_transaction_duration_seconds": "Time a catalog transaction took, by kind.",
        "roster_worker_tasks_total": "Ingest tasks a worker finished, by kind (parse, merge) and outcome (done, failed).",
        "roster_worker_parsed_bytes_total": "Bytes of list files a worker parsed.",
        "roster_worker_parsed_keys_total": "Valid keys a worker parsed.",
        "roster_worker_invalid_lines_total": "Lines a worker found invalid.",
        "roster_worker_lease_failures_total": "Times a worker could not lease work from its coordinator.",
        "roster_worker_report_retries_total": "Reports a worker sent again because no coordinator could take them yet (within the task's lease).",
        "roster_worker_outage_retries_total": "Times a worker retried a task because the lake or segment store could not be reached (no attempt spent).",
        "roster_ingest_lease_expiries_total": "Leases that ran out before their worker reported (a worker died or stalled).",
        "roster_ingest_task_attempts_total": "Attempts at ingest tasks (each lease is one), by kind.",
        "roster_ingest_time_to_live_seconds": "Time from a file's submission to its version going live.",
    ]

    /// Adds a `# HELP` line before each family's `# TYPE` line that has none.
    static func annotate(_ exposition: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(exposition.count + 4096)
        var previousWasHelp = false
        for line in exposition.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.starts(with: "# TYPE ".utf8), !previousWasHelp {
                let name = String(decoding: line.dropFirst(7).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                let text = texts[name] ?? "Roster metric \(name)."
                out.append(contentsOf: "# HELP \(name) \(text)\n".utf8)
            }
            previousWasHelp = line.starts(with: "# HELP ".utf8)
            out.append(contentsOf: line)
            out.append(UInt8(ascii: "\n"))
        }
        if exposition.last != UInt8(ascii: "\n"), !out.isEmpty { out.removeLast() }
        return out
    }
}
