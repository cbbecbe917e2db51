import Foundation
import PostgresTestSupport
import RosterClient
import XCTest

/// `roster coordinator --catalog postgres://…` as users run it.
final class PostgresCatalogEndToEndTests: XCTestCase {
    private var root: URL!
    private var services: [RosterService] = []

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-pg-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for service in services { service.stop(SIGKILL) }
        try? FileManager.default.removeItem(at: root)
    }

    func testACoordinatorOnPostgreSQLIngestsAndServesAList() throws {
        var cleanups: [() -> Void] = []
        defer { cleanups.forEach { $0() } }
        let database = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let data = root.path
        let matchServer = try RosterService(["match-server", "--no-auth", "--data", data, "--listen", "127.0.0.1:0"])
        services.append(matchServer)
        let match = String(try matchServer.waitForLine("match server listening on").split(separator: ";")[0])
        let coordinator = try RosterService(["coordinator", "--no-auth", "--data", data, "--catalog", database.url, "--match", match,
                                             "--listen", "127.0.0.1:0", "--block-size", "2048", "--scan-interval", "0.2"])
        services.append(coordinator)
        let line = try coordinator.waitForLine("coordinator listening on")
        XCTAssertTrue(line.contains("catalog postgres://"), line)
        let address = String(line.split(separator: ";")[0])
        let worker = try RosterService(["worker", "--data", data, "--coordinator", address, "--log-level", "error"])
        services.append(worker)

        let members = (0..<2_000).map { "user\($0)@example.com" }
        let folder = root.appendingPathComponent("lake/acme")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(("email_md5\n" + members.map { MemberHash(email: $0).hex + "\n" }.joined()).utf8)
            .write(to: folder.appendingPathComponent(".m.tmp"))
        try FileManager.default.moveItem(at: folder.appendingPathComponent(".m.tmp"), to: folder.appendingPathComponent("members.txt"))
        try eventually(timeout: 60, "the list to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[1_999]]).status == 0
        }
        let status = try RosterBinary.run(["status", "--coordinator", address])
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("live"), status.stdout)
    }

    func testAnUnreachableCatalogIsOneClearError() throws {
        let result = try RosterBinary.run(["coordinator", "--no-auth", "--data", root.path, "--listen", "127.0.0.1:0",
                                           "--catalog", "postgres://roster@127.0.0.1:1/roster"])
        XCTAssertEqual(result.status, 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(errors.count, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("cannot connect to postgres://roster@127.0.0.1:1/roster"), result.stderr)
    }
}
