import Foundation
import RosterAPI
import SQLDatabase

/// `IngestCatalog`: the serving tier — match servers (nodes) as they
/// registered, and which live versions each holds (docs/SERVING.md).
extension IngestCatalog {

    /// A node as the catalog knows it.
    public struct Node: Sendable, Equatable {
        public var id: String
        public var address: String
        public var weight: Double
        public var incarnation: String
        public var lastSeen: Double
        /// What it serves was compared with the catalog since it last started.
        public var checked: Bool
        /// It said it is shutting down.
        public var leaving: Bool
        public var bytesServed: UInt64

        /// Heard from within `timeout` seconds of `now`, checked, and not leaving:
        /// a node placement may give advertisers to.
        public func isHealthy(now: Double, timeout: Double) -> Bool {
            checked && !leaving && now - lastSeen <= timeout
        }
    }

    /// Records a node's registration or heartbeat. Returns true when the node
    /// is new or restarted (another incarnation): what it holds is then
    /// unknown, so its holdings are forgotten and it is unchecked until the
    /// coordinator has compared what it serves (`markChecked`).
    @discardableResult
    public func registerNode(_ request: RegisterNodeRequest, now: Double) throws -> Bool {
        guard !request.nodeID.isEmpty else { throw IngestError.invalidArgument("node_id is empty") }
        guard !request.address.isEmpty else { throw IngestError.invalidArgument("address is empty") }
        let weight = request.weight == 0 ? 1 : request.weight
        guard weight > 0, weight.isFinite else { throw IngestError.invalidArgument("weight must be > 0") }
        return try write { db in
            let known = try db.rows("SELECT incarnation FROM nodes WHERE id = ?", request.nodeID) { $0.string("incarnation") }.first
            if known == request.incarnation {
                try db.run("UPDATE nodes SET address = ?, weight = ?, last_seen = ?, leaving = ?, bytes_served = ? WHERE id = ?",
                           request.address, weight, now, request.leaving, UInt64(request.bytesServed), request.nodeID)
                return false
            }
            try db.run("DELETE FROM holdings WHERE node_id = ?", request.nodeID)
            try db.run("""
                INSERT INTO nodes(id, address, weight, incarnation, registered_at, last_seen, checked, leaving, bytes_served)
                VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)
                ON CONFLICT(id) DO UPDATE SET address = excluded.address, weight = excluded.weight, incarnation = excluded.incarnation,
                    registered_at = excluded.registered_at, last_seen = excluded.last_seen, checked = 0, leaving = excluded.leaving,
                    bytes_served = excluded.bytes_served
                """, request.nodeID, request.address, weight, request.incarnation, now, now, request.leaving, UInt64(request.bytesServed))
            return true
        }
    }

    /// The node `id` was compared with the catalog (incarnation `incarnation`):
    /// it may be given advertisers. A node that restarted meanwhile stays unchecked.
    public func markChecked(node id: String, incarnation: String) throws {
        try write { db in
            try db.run("UPDATE nodes SET checked = 1 WHERE id = ? AND incarnation = ?", id, incarnation)
        }
    }

    public func nodes() throws -> [Node] {
        try read { db in
            try db.rows("SELECT id, address, weight, incarnation, last_seen, checked, leaving, bytes_served FROM nodes ORDER BY id") { row in
                Node(id: row.string("id"), address: row.string("address"), weight: row.double("weight"),
                     incarnation: row.string("incarnation"), lastSeen: row.double("last_seen"), checked: row.int("checked") != 0,
                     leaving: row.int("leaving") != 0, bytesServed: UInt64(row.int("bytes_served")))
            }
        }
    }

    /// Runs `sql`, whose one `IN (?)` takes `values`, a slice at a time: a
    /// statement's parameters are limited (SQLite: 32,766).
    func query(_ db: any SQLDatabase, _ sql: String, in values: [SQLBindable], row: (any SQLRow) throws -> Void) throws {
        for start in stride(from: 0, to: values.count, by: 500) {
            let slice = Array(values[start..<min(values.count, start + 500)])
            let marks = slice.map { _ in "?" }.joined(separator: ", ")
            try db.query(sql.replacingOccurrences(of: "IN (?)", with: "IN (\(marks))"), arguments: slice, row: row)
        }
    }

    /// Which nodes hold each of `files` whole, by file.
    public func holders(of files: [UInt64]) throws -> [UInt64: Set<String>] {
        try read { db in
            var out: [UInt64: Set<String>] = [:]
            try query(db, "SELECT file_id, node_id FROM holdings WHERE file_id IN (?)", in: files) { row in
                out[UInt64(row.int("file_id")), default: []].insert(row.string("node_id"))
            }
            return out
        }
    }

    /// How many live versions each node holds (for status).
    public func liveHoldingCounts() throws -> [String: Int] {
        try read { db in
            var out: [String: Int] = [:]
            try db.query("""
                SELECT h.node_id, COUNT(*) AS n FROM holdings h JOIN files f ON f.id = h.file_id WHERE f.state = ? GROUP BY h.node_id
                """, FileState.live) { row in out[row.string("node_id")] = Int(row.int("n")) }
            return out
        }
    }

    /// `node` holds `files` whole (it answered their Publish, or listed them
    /// when checked). Versions that ended since are not recorded.
    public func recordHoldings(node: String, files: [UInt64], now: Double) throws {
        guard !files.isEmpty else { return }
        try write { db in
            for file in files {
                try db.run("""
                    INSERT INTO holdings(file_id, node_id, since) SELECT id, ?, ? FROM files WHERE id = ? AND state IN \(FileState.sqlList(.publishing, .live))
                    ON CONFLICT(file_id, node_id) DO NOTHING
                    """, node, now, file)
            }
        }
    }

    /// `node` no longer holds `files` (they were moved off it).
    public func dropHoldings(node: String, files: [UInt64]) throws {
        guard !files.isEmpty else { return }
        try write { db in
            for file in files { try db.run("DELETE FROM holdings WHERE file_id = ? AND node_id = ?", file, node) }
        }
    }

    /// Holdings of versions that are no longer live or publishing: kept
    /// only until the version ends, since placement reads live versions.
    public func forgetEndedHoldings() throws {
        try write { db in
            try db.run("""
                DELETE FROM holdings WHERE file_id IN
                    (SELECT h.file_id FROM holdings h JOIN files f ON f.id = h.file_id WHERE f.state NOT IN \(FileState.sqlList(.publishing, .live)))
                """)
        }
    }

    /// The live version of each of `advertisers` (0 for none).
    public func liveVersions(of advertisers: [String]) throws -> [String: UInt64] {
        try read { db in
            var out: [String: UInt64] = [:]
            try query(db, "SELECT id, live_file_id FROM advertisers WHERE id IN (?) AND live_file_id IS NOT NULL", in: advertisers) { row in
                out[row.string("id")] = UInt64(row.int("live_file_id"))
            }
            return out
        }
    }
}
