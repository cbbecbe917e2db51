import Foundation
import PostgresSQL
import TestSupport
import XCTest

/// The PostgreSQL server the tests talk to: a cluster started by
/// `scripts/postgres-test-server.sh` (which `.ci/run` runs), found through
/// `ROSTER_TEST_POSTGRES_URL`.
public enum PostgresTestServer {
    /// The server's address, or a skip (a failure under `CI=true`, or with
    /// `ROSTER_REQUIRE_POSTGRES=1`) when there is none.
    public static func url() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["ROSTER_TEST_POSTGRES_URL"] else {
            throw missingDependency("no PostgreSQL test server: run `eval \"$(bash scripts/postgres-test-server.sh start)\"` first",
                                    requireVariable: "ROSTER_REQUIRE_POSTGRES")
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

    /// Stops the test server (a fast shutdown, which ends every session) and
    /// keeps its data, for tests of an outage; `resume()` starts it again.
    public static func halt() throws { try script("halt") }

    public static func resume() throws { try script("resume") }

    private static func script(_ command: String) throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/postgres-test-server.sh").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [path, command]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "PostgresTestServer", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "postgres-test-server.sh \(command) failed"])
        }
    }
}
