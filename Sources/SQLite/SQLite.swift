import CSQLite
import Foundation
@_exported import SQLDatabase

/// An SQLite failure: the result code, and SQLite's message with the statement.
public struct SQLiteError: SQLEngineError, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "sqlite error \(code): \(message)" }
}

/// One result row; columns by name (as the query's SELECT names them, or
/// its `AS` alias) or by index.
///
/// By name reads better and survives a column added to a SELECT; by index
/// is for one-column queries (`SELECT COUNT(*)`). Asking for a column the
/// query does not return is a programming error and stops the process with
/// the column and the query named.
public struct Row: SQLRow {
    fileprivate let statement: OpaquePointer

    public func int(_ i: Int) -> Int64 { sqlite3_column_int64(statement, Int32(i)) }
    public func double(_ i: Int) -> Double { sqlite3_column_double(statement, Int32(i)) }
    public func isNull(_ i: Int) -> Bool { sqlite3_column_type(statement, Int32(i)) == SQLITE_NULL }
    public func string(_ i: Int) -> String {
        guard let p = sqlite3_column_text(statement, Int32(i)) else { return "" }
        return String(cString: p)
    }

    /// A linear search: rows have a handful of columns, and comparing a few
    /// short C strings is cheaper than building a dictionary per statement.
    public func index(of name: String) -> Int {
        let count = sqlite3_column_count(statement)
        let found = name.withCString { wanted -> Int32? in
            for i in 0..<count where strcmp(sqlite3_column_name(statement, i), wanted) == 0 { return i }
            return nil
        }
        guard let found else {
            preconditionFailure("no column named \(name) in: \(String(cString: sqlite3_sql(statement)))")
        }
        return Int(found)
    }
}

/// One SQLite connection, used from one thread at a time (the owner serialises).
///
/// A deliberately thin layer: SQL in, rows out, typed errors, prepared
/// statements cached by text. Opened in WAL mode with `synchronous=NORMAL`:
/// a committed transaction survives the process being killed (SIGKILL) at
/// any point, and the database stays consistent through a power cut, which
/// may only lose the last transactions (the coordinator's work is idempotent,
/// so it redoes them). `FULL` would fsync on every commit, which under heavy
/// ingest I/O costs tens of milliseconds a transaction.
public final class Database: SQLDatabase {
    public var engine: SQLEngine { .sqlite }
    public var location: String { path }
    private var handle: OpaquePointer?
    private var cache: [String: OpaquePointer] = [:]
    public let path: String

    public init(path: String) throws(SQLiteError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw SQLiteError(code: rc, message: "cannot open \(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, 5000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
    }

    deinit {
        for statement in cache.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    private func error(_ rc: Int32, _ sql: String) -> SQLiteError {
        SQLiteError(code: rc, message: "\(String(cString: sqlite3_errmsg(handle))) in: \(sql)")
    }

    /// Runs one or more statements that return no rows and take no parameters.
    public func execute(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "error"
            sqlite3_free(message)
            throw SQLiteError(code: rc, message: "\(text) in: \(sql)")
        }
    }

    private func prepared(_ sql: String, _ arguments: [SQLBindable]) throws(SQLiteError) -> OpaquePointer {
        let statement: OpaquePointer
        if let cached = cache[sql] {
            statement = cached
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        } else {
            var s: OpaquePointer?
            let rc = sqlite3_prepare_v2(handle, sql, -1, &s, nil)
            guard rc == SQLITE_OK, let s else { throw error(rc, sql) }
            cache[sql] = s
            statement = s
        }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, argument) in arguments.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch argument.sqlValue {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .integer(let v): rc = sqlite3_bind_int64(statement, index, v)
            case .real(let v): rc = sqlite3_bind_double(statement, index, v)
            case .text(let v): rc = sqlite3_bind_text(statement, index, v, -1, transient)
            case .blob(let v): rc = v.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), transient) }
            }
            guard rc == SQLITE_OK else { throw error(rc, sql) }
        }
        return statement
    }

    /// Runs a statement, calling `row` for each result row.
    public func query(_ sql: String, arguments: [SQLBindable], row: (any SQLRow) throws -> Void) throws {
        let statement = try prepared(sql, arguments)
        defer { count(statement); sqlite3_reset(statement) }
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            try row(Row(statement: statement))
        }
    }

    /// Runs a statement that returns no rows; returns the rows it changed.
    @discardableResult
    public func run(_ sql: String, arguments: [SQLBindable]) throws(SQLiteError) -> Int {
        let statement = try prepared(sql, arguments)
        defer { count(statement); sqlite3_reset(statement) }
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw error(rc, sql) }
        return Int(sqlite3_changes(handle))
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Virtual-machine steps of every statement run on this connection: the
    /// work SQLite did, counted exactly (not timed), so a test can tell a
    /// statement that reads a handful of rows from one that reads them all.
    public private(set) var steps: Int64 = 0

    private func count(_ statement: OpaquePointer) {
        steps += Int64(sqlite3_stmt_status(statement, SQLITE_STMTSTATUS_VM_STEP, 1))
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: all of it commits or none of it.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// The schema version (`PRAGMA user_version`).
    public var schemaVersion: Int {
        get throws { try rows("PRAGMA user_version") { Int($0.int(0)) }.first ?? 0 }
    }

    /// Applies the migrations after the current `user_version`, each in its
    /// own transaction with the version bump, so a crash never leaves a
    /// half-migrated catalog. A catalog newer than this program is refused.
    public func migrate(_ migrations: [String]) throws {
        let current = try schemaVersion
        guard current <= migrations.count else {
            throw SQLiteError(code: SQLITE_ERROR, message: "\(path) has schema version \(current); this program knows only up to \(migrations.count)")
        }
        for (i, sql) in migrations.enumerated() where i >= current {
            try transaction {
                try execute(sql)
                try execute("PRAGMA user_version = \(i + 1)")
            }
        }
    }
}
