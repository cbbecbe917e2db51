import DataLake
import Foundation
@_spi(Testing) @testable import IngestCoordinator
import PostgresSQL
import PostgresTestSupport
import RosterAPI
import RosterInProcess
import RosterRPC
import SegmentStore
import SQLDatabase
import SQLite
import TestSupport
import XCTest

/// A match server no test here reaches.
private struct NoMatchServer: RPCClientTransport {
    func unary<Request: ProtoMessage, Response: ProtoMessage>(_ method: RPCMethodDescriptor, request: Request,
                                                                options: CallOptions) async throws -> Response {
        throw RPCError(.unavailable, "no match server in this test")
    }
}

/// The coordinator's core over a real catalog: its handlers reach the
/// catalog off the cooperative pool, reads beside writes, and every
/// failure answers the status its error says.
final class CoordinatorCoreTests: XCTestCase {
    private var cleanups: [() -> Void] = []
    private var folder: URL!

    override func setUp() {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("roster-core-\(UUID().uuidString)")
    }

    override func tearDown() {
        for cleanup in cleanups.reversed() { cleanup() }
        cleanups = []
        try? FileManager.default.removeItem(at: folder)
    }

    private func coordinator(_ catalog: IngestCatalog) -> CoordinatorService {
        CoordinatorService(catalog: catalog, lake: LocalFolderLake(root: folder.appendingPathComponent("lake")),
                           store: LocalSegmentStorage(root: folder.appendingPathComponent("store")),
                           publisher: MatchServerPublisher(admin: MatchAdmin.Client(transport: NoMatchServer())),
                           configuration: CoordinatorConfiguration(scanInterval: nil))
    }

    private func context(_ method: RPCMethodDescriptor) -> RPCContext {
        RPCContext(method: method, metadata: [:], deadline: nil, peer: "test")
    }

    /// A statement that takes seconds on one connection (a long report, a
    /// slow disk) holds up neither Status, which reads on another, nor a
    /// worker's heartbeat, which writes on the writer's: nothing waits on
    /// one lock, and no thread of the cooperative pool waits on PostgreSQL.
    func testASlowStatementStallsNeitherStatusNorAHeartbeat() async throws {
        let writer = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let catalog = try IngestCatalog(database: writer, readers: [try PostgresDatabase(url: writer.url), try PostgresDatabase(url: writer.url)])
        let service = coordinator(catalog)
        let slowStarted = ContinuousClock.now
        let slow = Task { try await catalog.perform { try $0.sleepInRead(seconds: 3) } }
        // Until PostgreSQL itself says the slow statement is running.
        let observer = try PostgresDatabase(url: writer.url)
        try await waitUntilAsync(timeout: .seconds(10)) {
            try observer.rows("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%'") { $0.int("n") }
                .first == 1
        }

        let started = ContinuousClock.now
        let status = try await service.admin.status(StatusRequest(), context: context(IngestAdmin.Method.status))
        let readTook = ContinuousClock.now - started
        _ = try await service.taskQueue.heartbeat(HeartbeatRequest(workerID: "w"), context: context(TaskQueue.Method.heartbeat))
        let bothTook = ContinuousClock.now - started
        XCTAssertEqual(status.filesInFlight, 0)
        XCTAssertLessThan(readTook, .seconds(1), "Status waited for the slow statement")
        XCTAssertLessThan(bothTook, .milliseconds(1500), "the heartbeat waited for the slow statement")
        try await slow.value
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - slowStarted, .seconds(3), "the statement was slow")
    }

    /// The same on SQLite: a read holding a reader connection leaves the
    /// other reader and the writer free.
    func testASlowReadOnSQLiteStallsNeitherStatusNorAHeartbeat() async throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let catalog = try IngestCatalog(path: folder.appendingPathComponent("catalog.sqlite").path)
        let service = coordinator(catalog)
        let slow = Task { try await catalog.perform { try $0.sleepInRead(seconds: 2) } }
        try await Task.sleep(for: .milliseconds(200)) // the sleep itself gives no sign it started
        let started = ContinuousClock.now
        _ = try await service.admin.status(StatusRequest(), context: context(IngestAdmin.Method.status))
        _ = try await service.taskQueue.heartbeat(HeartbeatRequest(workerID: "w"), context: context(TaskQueue.Method.heartbeat))
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1), "a call waited for the slow read")
        try await slow.value
    }

    /// Every `IngestError` answers its documented status (docs/INGEST.md,
    /// "Errors"), whichever handler throws it.
    func testEveryIngestErrorAnswersItsDocumentedStatus() {
        let cases: [(IngestError, RPCStatusCode)] = [
            (.invalidPath("acme"), .invalidArgument), (.invalidArgument("weight must be > 0"), .invalidArgument),
            (.failedPrecondition("segments gone"), .failedPrecondition), (.notFound("no advertiser 'x'"), .notFound),
            (.unavailable("the catalog cannot be reached"), .unavailable), (.database("syntax error"), .internal),
        ]
        for (error, code) in cases {
            XCTAssertEqual(error.rpcError.code, code, "\(error)")
            if code != .internal { XCTAssertEqual(error.rpcError.message, error.description, "the message travels as it is") }
        }
        XCTAssertFalse(IngestError.database("relation \"files\" does not exist").rpcError.message.contains("files"),
                       "an internal detail stays in the log")
    }

    /// What an engine raised is UNAVAILABLE when the database could not be
    /// reached or take the write now, and INTERNAL when it refused a statement.
    func testEngineErrorsAreUnavailableOnlyWhenTransient() {
        let transient: [any SQLEngineError] = [
            SQLError(engine: .postgres, code: "08006", message: "connection lost"),
            SQLError(engine: .postgres, code: "57P01", message: "terminating connection due to administrator command"),
            SQLError(engine: .postgres, code: "57014", message: "no answer within 45 seconds"),
            SQLError(engine: .postgres, code: "?", message: "connection refused"),
            SQLError(engine: .postgres, code: "connectionError", message: "Connection refused (errno: 111)"),
            SQLError(engine: .postgres, code: "55P03", message: "lock timeout"),
            SQLiteError(code: 13, message: "database or disk is full"), SQLiteError(code: 5, message: "database is locked"),
            SQLiteError(code: 10 | (4 << 8), message: "disk I/O error"),
        ]
        for error in transient {
            XCTAssertEqual(IngestError.catalog(error, location: "db").rpcError.code, .unavailable, error.message)
        }
        let refused: [any SQLEngineError] = [
            SQLError(engine: .postgres, code: "23505", message: "duplicate key"), SQLError(engine: .postgres, code: "42P01", message: "no relation"),
            SQLiteError(code: 19, message: "constraint failed"), SQLiteError(code: 1, message: "no such table"),
        ]
        for error in refused {
            XCTAssertEqual(IngestError.catalog(error, location: "db").rpcError.code, .internal, error.message)
        }
    }

    /// PostgreSQL down: a read and a write answer UNAVAILABLE naming the
    /// catalog, through the same executor every transport uses, not
    /// INTERNAL; once it is back, the same calls answer.
    func testACatalogThatCannotBeReachedIsUnavailableNotInternal() async throws {
        let writer = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let catalog = try IngestCatalog(database: writer, readers: [try PostgresDatabase(url: writer.url)])
        let transport = try InProcessTransport(services: coordinator(catalog).services)
        let admin = IngestAdmin.Client(transport: transport), tasks = TaskQueue.Client(transport: transport)
        try PostgresTestServer.halt()
        let read = await assertStatus(.unavailable) { _ = try await admin.listFiles(ListFilesRequest()) }
        XCTAssertTrue(read?.message.contains("the catalog postgres://") == true && read?.message.contains("cannot be reached") == true,
                      read?.message ?? "")
        let write = await assertStatus(.unavailable) { _ = try await tasks.heartbeat(HeartbeatRequest(workerID: "w")) }
        XCTAssertTrue(write?.message.contains("cannot be reached") == true, write?.message ?? "")
        try PostgresTestServer.resume()
        try await waitUntilAsync(timeout: .seconds(30)) {
            guard (try? await admin.listFiles(ListFilesRequest())) != nil else { return false }
            return (try? await tasks.heartbeat(HeartbeatRequest(workerID: "w"))) != nil
        }
    }
}
