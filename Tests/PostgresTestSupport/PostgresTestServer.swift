import Foundation
import PostgresSQL
import XCTest

/// The PostgreSQL server the tests talk to: a cluster started by
/// `scripts/postgres-test-server.sh` (which `.ci/run` runs), found through
/// `ROSTER_TEST_POSTGRES_URL`.
public enum PostgresTestServer {
    /// The server's address, or a skip (a failure under `CI=true`, or with
    /// `ROSTER_REQUIRE_POSTGRES=1`) when there is none.
    public static func url() throws -> String {
        let env = ProcessInfo.processInfo.environment
        guard let url = env["ROSTER_TEST_POSTGRES_URL"] else {
            let message = "no PostgreSQL test server: run `eval \"$(bash scripts/postgres-test-server.sh start)\"` first"
            if env["CI"] == "true" || env["ROSTER_REQUIRE_POSTGRES"] == "1" {
                XCTFail(message + " (required under CI=true)")
                throw XCTSkip("failed: " + message)
            }
            throw XCTSkip(message)
        }
        return url
    }

    /// A database of its own for one test, dropped after it.
    public static func freshDatabase(cleanups: inout [() -> Void]) throws -> PostgresDatabase {
        let url = try url()
        let admin = try PostgresDatabase(url: url)
        let name = "t_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20))"
        try admin.execute("CREATE DATABASE \(name)")
        var components = URLComponents(string: url)!
        components.path = "/" + name
        let database = try PostgresDatabase(url: components.string!)
        cleanups.append { [weak database] in
            _ = database
            try? admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        }
        return database
    }
}
