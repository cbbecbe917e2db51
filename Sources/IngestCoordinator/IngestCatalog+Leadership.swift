import Foundation
import SQLDatabase

/// Who leads the coordinators that share a catalog (one PostgreSQL database).
public struct Leadership: Sendable, Equatable {
    /// The leader's name (unique per process: a restart is a new holder).
    public var holder: String
    /// Where the leader takes calls (`host:port`), for standbys to name.
    public var address: String
    /// Grows with every change of leader: the fencing token.
    public var token: Int64
    /// When the lease ends unless renewed (seconds since 1970).
    public var expires: Double

    public init(holder: String, address: String, token: Int64, expires: Double) {
        self.holder = holder
        self.address = address
        self.token = token
        self.expires = expires
    }
}

/// A write by a coordinator that no longer leads: refused, and nothing of it
/// was written. Its callers answer UNAVAILABLE naming the leader.
public struct NotLeader: Error, Sendable, CustomStringConvertible {
    public var leader: Leadership?
    public var description: String {
        leader.map { "this coordinator is not the leader; the leader is \($0.holder) at \($0.address)" }
            ?? "this coordinator is not the leader; none is elected yet"
    }
}

/// Leader election by a lease row with a fencing token.
///
/// Rules (docs/INGEST.md, "Several coordinators"):
/// - One row holds the leader's name, address, token and lease end. A
///   coordinator campaigns every third of the lease: the holder extends its
///   lease; anyone else takes the row only once the lease has ended, adding
///   one to the token.
/// - Every write transaction of the leader begins by reading the row under
///   the catalog's write lock and checking its own name and token; another
///   holder or token refuses the whole transaction (`NotLeader`). So a
///   leader paused past its lease (a stopped process, a long GC, a cut
///   link) that wakes up cannot change anything: the new leader took the
///   row, with a new token, before writing.
/// - Campaigns and checks run in the catalog's serialised write
///   transactions, so two coordinators never both take the row.
/// - Lease times are the coordinators' clocks: they must agree to well
///   within a lease (NTP). A leader whose clock runs slow keeps writing at
///   most until another takes the row; fencing holds whatever the clocks say.
extension IngestCatalog {
    func checkFence(_ fence: (holder: String, token: Int64)?) throws {
        let current = try leaderRow(database)
        guard let fence, let current, current.holder == fence.holder, current.token == fence.token else {
            throw NotLeader(leader: current)
        }
    }

    private func leaderRow(_ db: any SQLDatabase) throws -> Leadership? {
        try db.rows("SELECT holder, address, token, expires FROM leader WHERE id = 1") {
            Leadership(holder: $0.string("holder"), address: $0.string("address"), token: $0.int("token"), expires: $0.double("expires"))
        }.first
    }

    /// Tries to become, or stay, the leader as `holder` at `address`, with a
    /// lease of `lease` seconds from `now`. Returns who leads afterwards; if
    /// it is `holder`, this catalog's writes are fenced with its token from
    /// now on, and if not, they are refused until it leads again.
    @discardableResult
    public func campaign(holder: String, address: String, lease: Double, now: Double) throws -> Leadership {
        lock.lock()
        defer { lock.unlock() }
        elected = true
        let result = try database.transaction { () throws -> Leadership in
            let current = try leaderRow(database)
            if let current, current.expires > now, current.holder != holder {
                return current
            }
            if let current, current.holder == holder, current.expires > now, current.token == fence?.token {
                try database.run("UPDATE leader SET expires = ?, address = ? WHERE id = 1 AND token = ?", now + lease, address, current.token)
                return Leadership(holder: holder, address: address, token: current.token, expires: now + lease)
            }
            let token = (current?.token ?? 0) + 1
            if current == nil {
                try database.run("INSERT INTO leader(id, holder, address, token, expires) VALUES (1, ?, ?, ?, ?)", holder, address, token, now + lease)
            } else {
                try database.run("UPDATE leader SET holder = ?, address = ?, token = ?, expires = ? WHERE id = 1", holder, address, token, now + lease)
            }
            return Leadership(holder: holder, address: address, token: token, expires: now + lease)
        }
        let before = fence?.token
        fence = result.holder == holder ? (holder, result.token) : nil
        // A new leader's first ranking is its own, and the leases nobody
        // could renew while there was no leader get their length again.
        if let now = fence?.token, now != before {
            ranking = nil
            leaseGraceDue = true
        }
        return result
    }

    /// Gives up the lead (a clean shutdown), so a standby need not wait for the lease.
    public func resign(holder: String) throws {
        lock.lock()
        defer { lock.unlock() }
        guard let token = fence?.token else { return }
        fence = nil
        try database.transaction {
            try database.run("UPDATE leader SET expires = 0 WHERE id = 1 AND holder = ? AND token = ?", holder, token)
        }
    }

    /// Who leads, as the catalog says now.
    public func leader() throws -> Leadership? {
        try read { try leaderRow($0) }
    }

    /// Whether this catalog's writes are fenced with a token it holds.
    public var isLeading: Bool { lock.withLock { fence != nil } }
}
