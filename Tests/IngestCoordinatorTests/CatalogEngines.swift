import Foundation
import IngestCoordinator
import PostgresSQL
import PostgresTestSupport
import SQLDatabase
import SQLite
import XCTest

/// A test case whose catalog lives in one engine or the other: the SQLite
/// classes open a temporary file, their PostgreSQL subclasses a fresh
/// database on the test server (`scripts/postgres-test-server.sh`, which
/// `.ci/run` starts). The same tests run on both.
protocol CatalogEngine: AnyObject {
    var cleanups: [() -> Void] { get set }
    func makeDatabase() throws -> any SQLDatabase
}

extension CatalogEngine {
    func makeCatalog(policy: IngestPolicy = IngestPolicy()) throws -> IngestCatalog {
        try IngestCatalog(database: try makeDatabase(), policy: policy)
    }

    func sqliteDatabase() throws -> any SQLDatabase {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString).sqlite").path
        cleanups.append {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        return try Database(path: path)
    }

    func postgresDatabase() throws -> any SQLDatabase {
        try PostgresTestServer.freshDatabase(cleanups: &cleanups)
    }
}


