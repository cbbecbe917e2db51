import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import SQLDatabase
import Synchronization

/// The catalog's database on PostgreSQL, through postgres-nio: one
/// connection, used by one caller at a time (the catalog serialises), with
/// the same synchronous interface as SQLite.
///
/// Synchronous on purpose: the catalog's transactions are short (a lease, a
/// report) and already run one at a time under the catalog's lock, as they
/// do on SQLite, where every call blocks on the disk. Each statement waits
/// for postgres-nio's event loop, never running on it, so nothing deadlocks.
///
/// Transactions take a transaction-scoped advisory lock first, so that
/// writers of one catalog are serialised across connections and processes
/// exactly as SQLite's `BEGIN IMMEDIATE` serialises them: the catalog's
/// logic (read, decide, write) assumes it. A lost connection is reopened on
/// the next statement outside a transaction; one lost inside fails that
/// transaction, which the server rolls back.
///
/// A process stopped in the middle of a transaction (SIGSTOP, a stall)
/// would hold the write lock and freeze every other writer — a standby
/// could never take over. So each session is ended by the server once it
/// has sat idle inside a transaction longer than `idleInTransaction`
/// (PostgreSQL's `idle_in_transaction_session_timeout`), which rolls the
/// transaction back and frees the lock; a waiting writer gives up after
/// `lock_timeout` (30 s) and tries again.
public final class PostgresDatabase: SQLDatabase, @unchecked Sendable {
    public var engine: SQLEngine { .postgres }
    public let location: String
    /// The address this database was opened with.
    public let url: String
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private var connection: PostgresConnection?
    /// The open connection's statement in flight, failed by its closing.
    private var pending: Pending?
    private var inTransaction = false
    private let idleInTransaction: Duration
    /// How long one statement may take, its lock wait (up to 30 s) included,
    /// before the connection is taken for lost.
    private let statementTimeout: Duration
    /// A constant of this program: the advisory lock of catalog writes.
    static let writeLock: Int64 = 0x526F_7374_6572 // "Roster"

    /// `url`: `postgres://user[:password]@host[:port]/database`
    /// (the password may also come from `PGPASSWORD`).
    public init(url: String, idleInTransaction: Duration = .seconds(5), statementTimeout: Duration = .seconds(45),
                logger: Logger = Logger(label: "roster.postgres")) throws {
        self.idleInTransaction = idleInTransaction
        self.statementTimeout = statementTimeout
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
              let host = components.host, !host.isEmpty else {
            throw SQLError(engine: .postgres, code: "config", message: "'\(url)' is not a postgres://user@host[:port]/database address")
        }
        let database = String(components.path.drop { $0 == "/" })
        let user = components.user ?? ProcessInfo.processInfo.environment["PGUSER"] ?? "postgres"
        let password = components.password ?? ProcessInfo.processInfo.environment["PGPASSWORD"]
        configuration = PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: password,
            database: database.isEmpty ? user : database, tls: .disable)
        self.url = url
        location = "postgres://\(user)@\(host):\(components.port ?? 5432)/\(database.isEmpty ? user : database)"
        self.logger = logger
        _ = try connected()
    }

    deinit {
        if let connection { try? connection.close().wait() }
    }

    private func connected() throws -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        guard !inTransaction else {
            throw SQLError(engine: .postgres, code: "08006", message: "the connection to \(location) was lost during a transaction")
        }
        do {
            let opened = try PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration,
                                                        id: 1, logger: logger).wait()
            connection = opened
            // One callback for the connection's life, not one a statement:
            // whatever statement is waiting when the connection closes fails then.
            let pending = Pending(lost: SQLError(engine: .postgres, code: Pending.lostCode,
                                                 message: "the connection to \(location) closed before answering"))
            self.pending = pending
            opened.closeFuture.whenComplete { _ in pending.connectionClosed() }
            let idle = max(1, Int64(idleInTransaction / .milliseconds(1)))
            _ = try opened.query(PostgresQuery(unsafeSQL: "SET idle_in_transaction_session_timeout = \(idle)"), logger: logger).wait()
            _ = try opened.query(PostgresQuery(unsafeSQL: "SET lock_timeout = 30000"), logger: logger).wait()
            return opened
        } catch {
            throw Self.error(error, context: "cannot connect to \(location)")
        }
    }

    static func error(_ error: any Error, context: String) -> SQLError {
        if let error = error as? SQLError { return error }
        if let psql = error as? PSQLError {
            let code = psql.serverInfo?[.sqlState] ?? "\(psql.code)"
            let message = psql.serverInfo?[.message] ?? psql.underlying.map { "\($0)" } ?? "\(psql.code)"
            return SQLError(engine: .postgres, code: code, message: "\(message) (\(context))")
        }
        return SQLError(engine: .postgres, code: "?", message: "\(error) (\(context))")
    }

    /// `?` placeholders become `$1`, `$2`, …; text in quotes is left alone.
    static func numbered(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var n = 0
        var quoted = false
        for c in sql {
            if c == "'" { quoted.toggle() }
            if c == "?" && !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }

    private func execute(_ sql: String, _ arguments: [SQLBindable]) throws -> PostgresQueryResult {
        var binds = PostgresBindings(capacity: arguments.count)
        for argument in arguments {
            switch argument.sqlValue {
            case .null: binds.appendNull()
            case .integer(let v): binds.append(v)
            case .real(let v): binds.append(v)
            case .text(let v): binds.append(v)
            case .blob(let v): binds.append(ByteBuffer(bytes: v))
            }
        }
        let query = PostgresQuery(unsafeSQL: Self.numbered(sql), binds: binds)
        let connection = try connected()
        // A link cut without a reset (a host gone, a dropped route) would
        // leave the answer pending forever, and the catalog's lock with it:
        // past `statementTimeout` the connection is closed, which fails the
        // statement, and the next one outside a transaction reconnects.
        //
        // The wait is on a promise of our own, which the deadline fails
        // whatever the connection does: a statement sent on a connection
        // that is already closing might never be answered at all.
        let timeout = SQLError(engine: .postgres, code: "57014", message: "no answer from \(location) within \(statementTimeout) (\(sql))")
        let answer = connection.eventLoop.makePromise(of: PostgresQueryResult.self)
        let deadline = connection.eventLoop.scheduleTask(in: .nanoseconds(Int64(statementTimeout / .nanoseconds(1)))) {
            answer.fail(timeout) // a no-op if the answer came first
            let _: EventLoopFuture<Void> = connection.close()
        }
        defer { deadline.cancel() }
        // And the connection's closing fails it at once: a session the
        // server ends (a shutdown, an administrator) as a statement is sent
        // may leave that statement unanswered by postgres-nio, and waiting
        // out the timeout would hold the catalog, and with it the leader's
        // renewals, far past the lead's lease.
        pending?.owe(answer, closed: connection.isClosed)
        defer { pending?.answered() }
        connection.query(query, logger: logger).cascade(to: answer)
        do {
            return try answer.futureResult.wait()
        } catch let error as SQLError where error.code == Pending.lostCode || (error.code == timeout.code && error.message == timeout.message) {
            // Closed or taken for lost: the next statement outside a transaction reconnects.
            self.connection = nil
            throw error
        } catch {
            throw Self.error(error, context: sql)
        }
    }

    public func query(_ sql: String, arguments: [SQLBindable], row: (any SQLRow) throws -> Void) throws {
        for result in try execute(sql, arguments) { try row(Row(result.makeRandomAccess(), sql: sql)) }
    }

    @discardableResult
    public func run(_ sql: String, arguments: [SQLBindable]) throws -> Int {
        try execute(sql, arguments).metadata.rows ?? 0
    }

    /// Runs statements without parameters, separated by `;` at the ends of
    /// lines (a migration's several, say), one after the other.
    public func execute(_ sql: String) throws {
        for statement in sql.components(separatedBy: ";\n") + [] {
            let trimmed = statement.trimmingCharacters(in: .whitespacesAndNewlines)
            let text = trimmed.hasSuffix(";") ? String(trimmed.dropLast()) : trimmed
            if !text.isEmpty { _ = try execute(text, []) }
        }
    }

    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        inTransaction = true
        defer { inTransaction = false }
        do {
            _ = try execute("SELECT pg_advisory_xact_lock(\(Self.writeLock))", [])
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            inTransaction = false
            try? execute("ROLLBACK")
            throw error
        }
    }

    public var schemaVersion: Int {
        get throws {
            try execute("CREATE TABLE IF NOT EXISTS roster_schema(version BIGINT NOT NULL)")
            return try recordedVersion()
        }
    }

    private func recordedVersion() throws -> Int {
        Int(try rows("SELECT COALESCE(MAX(version), 0) AS version FROM roster_schema") { $0.int(0) }.first ?? 0)
    }

    public func migrate(_ migrations: [String]) throws {
        _ = try schemaVersion // creates roster_schema
        try transaction {
            // Under the write lock: two coordinators starting at once migrate once.
            let current = try recordedVersion()
            guard current <= migrations.count else {
                throw SQLError(engine: .postgres, code: "schema",
                               message: "\(location) has schema version \(current); this program knows only up to \(migrations.count)")
            }
            for (i, sql) in migrations.enumerated() where i >= current {
                try execute(sql)
                try run("INSERT INTO roster_schema(version) VALUES (?)", i + 1)
            }
        }
    }

    /// One row, its cells converted by their PostgreSQL type.
    struct Row: SQLRow {
        let cells: PostgresRandomAccessRow
        let sql: String

        init(_ cells: PostgresRandomAccessRow, sql: String) {
            self.cells = cells
            self.sql = sql
        }

        func index(of name: String) -> Int {
            for i in 0..<cells.count where cells[i].columnName == name { return i }
            preconditionFailure("no column named \(name) in: \(sql)")
        }

        func isNull(_ index: Int) -> Bool { cells[index].bytes == nil }

        func int(_ index: Int) -> Int64 {
            let cell = cells[index]
            guard cell.bytes != nil else { return 0 }
            switch cell.dataType {
            case .int2, .int4, .int8: return (try? cell.decode(Int64.self)) ?? 0
            case .float4, .float8: return Int64((try? cell.decode(Double.self)) ?? 0)
            case .numeric: return (try? cell.decode(Decimal.self)).map { NSDecimalNumber(decimal: $0).int64Value } ?? 0
            case .bool: return (try? cell.decode(Bool.self)) == true ? 1 : 0
            default: return Int64((try? cell.decode(String.self)) ?? "") ?? 0
            }
        }

        func double(_ index: Int) -> Double {
            let cell = cells[index]
            guard cell.bytes != nil else { return 0 }
            switch cell.dataType {
            case .float4, .float8: return (try? cell.decode(Double.self)) ?? 0
            case .int2, .int4, .int8: return Double((try? cell.decode(Int64.self)) ?? 0)
            case .numeric: return (try? cell.decode(Decimal.self)).map { NSDecimalNumber(decimal: $0).doubleValue } ?? 0
            default: return Double((try? cell.decode(String.self)) ?? "") ?? 0
            }
        }

        func string(_ index: Int) -> String {
            let cell = cells[index]
            guard cell.bytes != nil else { return "" }
            switch cell.dataType {
            case .int2, .int4, .int8: return String(int(index))
            case .float4, .float8, .numeric: return String(double(index))
            default: return (try? cell.decode(String.self)) ?? ""
            }
        }
    }
}

/// The statement a connection has in flight, if any, so that the
/// connection's closing can fail it. Set and cleared by the caller's thread
/// around each statement; the close callback runs on the connection's event
/// loop, hence the lock.
private final class Pending: Sendable {
    /// SQLSTATE connection_failure.
    static let lostCode = "08006"
    /// What a statement the connection cannot answer fails with.
    private let lost: SQLError
    private let state = Mutex<(answer: EventLoopPromise<PostgresQueryResult>?, closed: Bool)>((nil, false))

    init(lost: SQLError) { self.lost = lost }

    /// `answer` is owed now; if the connection has closed already (`closed`,
    /// or its callback ran), it fails at once.
    func owe(_ answer: EventLoopPromise<PostgresQueryResult>, closed: Bool) {
        let failNow = state.withLock {
            $0.answer = answer
            return $0.closed || closed
        }
        if failNow { answer.fail(lost) }
    }

    func answered() { state.withLock { $0.answer = nil } }

    /// The connection closed: the statement in flight fails (a no-op if it
    /// was answered first), and so does any sent later.
    func connectionClosed() {
        let answer = state.withLock { state in
            state.closed = true
            let answer = state.answer
            state.answer = nil
            return answer
        }
        answer?.fail(lost)
    }
}
