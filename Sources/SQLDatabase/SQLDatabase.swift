/// The catalog's view of a relational database: statements with `?`
/// placeholders in, rows read by column name out, transactions, numbered
/// migrations. Two engines implement it — SQLite (`SQLite`, the embedded
/// default) and PostgreSQL (`PostgresSQL`) — so the catalog's SQL is written
/// once, in the subset both speak (`INSERT … ON CONFLICT`, `RETURNING`), and
/// only the schema's migrations are written per engine.
public protocol SQLDatabase: AnyObject {
    var engine: SQLEngine { get }
    /// Where the database is, for messages: a file path, or host/database.
    var location: String { get }
    /// Runs a statement, calling `row` for each result row.
    func query(_ sql: String, arguments: [SQLBindable], row: (any SQLRow) throws -> Void) throws
    /// Runs a statement that returns no rows; returns the rows it changed.
    @discardableResult
    func run(_ sql: String, arguments: [SQLBindable]) throws -> Int
    /// Runs `body` in one transaction that takes the write lock at once:
    /// all of it commits or none of it.
    func transaction<T>(_ body: () throws -> T) throws -> T
    /// Applies the migrations after the current schema version, each in its
    /// own transaction with the version bump; a schema newer than this
    /// program is refused.
    func migrate(_ migrations: [String]) throws
    /// The schema version: how many migrations have been applied.
    var schemaVersion: Int { get throws }
}

public enum SQLEngine: String, Sendable {
    case sqlite
    case postgres
}

extension SQLDatabase {
    public func query(_ sql: String, _ arguments: SQLBindable..., row: (any SQLRow) throws -> Void) throws {
        try query(sql, arguments: arguments, row: row)
    }

    /// Runs a statement and maps its rows.
    public func rows<T>(_ sql: String, _ arguments: SQLBindable..., map: (any SQLRow) throws -> T) throws -> [T] {
        try rows(sql, arguments: arguments, map: map)
    }

    public func rows<T>(_ sql: String, arguments: [SQLBindable], map: (any SQLRow) throws -> T) throws -> [T] {
        var out: [T] = []
        try query(sql, arguments: arguments) { out.append(try map($0)) }
        return out
    }

    @discardableResult
    public func run(_ sql: String, _ arguments: SQLBindable...) throws -> Int {
        try run(sql, arguments: arguments)
    }
}

/// One result row. Columns by name (as the query's SELECT names them, or
/// its `AS` alias) or by index; by index is for one-column queries
/// (`SELECT COUNT(*)`). Numbers convert between the integer, real and
/// decimal types an engine may answer with (PostgreSQL's `SUM` of integers
/// is a decimal), and NULL reads as 0 or "" unless asked with `isNull`.
public protocol SQLRow {
    func int(_ index: Int) -> Int64
    func double(_ index: Int) -> Double
    func string(_ index: Int) -> String
    func isNull(_ index: Int) -> Bool
    /// The index of the column named `name`; asking for a column the query
    /// does not return is a programming error and stops the process.
    func index(of name: String) -> Int
}

extension SQLRow {
    public func int(_ name: String) -> Int64 { int(index(of: name)) }
    public func double(_ name: String) -> Double { double(index(of: name)) }
    public func string(_ name: String) -> String { string(index(of: name)) }
    public func isNull(_ name: String) -> Bool { isNull(index(of: name)) }
    /// nil when the column is NULL.
    public func optionalDouble(_ name: String) -> Double? {
        let i = index(of: name)
        return isNull(i) ? nil : double(i)
    }
}

/// A value bound to a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

public protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension Int: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .integer(self) } }
extension UInt64: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(bitPattern: self)) } }
extension UInt32: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .real(self) } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .integer(self ? 1 : 0) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// An error the database engine itself raised (not the catalog's logic):
/// what the catalog reports as "cannot be written".
public protocol SQLEngineError: Error {
    /// What the engine said, with the statement.
    var message: String { get }
}

/// A database error from either engine: what it said, with the statement.
public struct SQLError: SQLEngineError, CustomStringConvertible, Sendable {
    public var engine: SQLEngine
    /// The engine's code: SQLite's result code, or PostgreSQL's SQLSTATE.
    public var code: String
    public var message: String

    public init(engine: SQLEngine, code: String, message: String) {
        self.engine = engine
        self.code = code
        self.message = message
    }

    public var description: String { "\(engine == .sqlite ? "sqlite" : "postgresql") error \(code): \(message)" }
}
