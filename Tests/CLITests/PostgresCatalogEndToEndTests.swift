import Foundation
import PostgresSQL
import PostgresTestSupport
import RosterAPI
import RosterClient
import XCTest

/// `roster coordinator --catalog postgres://…` as users run it.
final class PostgresCatalogEndToEndTests: ServicesTestCase {
    override class var folderPrefix: String { "roster-pg-e2e" }

    func testACoordinatorOnPostgreSQLIngestsAndServesAList() throws {
        var cleanups: [() -> Void] = []
        defer { cleanups.forEach { $0() } }
        let database = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let data = root.path
        let matchServer = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"])
        services.append(matchServer)
        let match = String(try matchServer.waitForLine("match server listening on").split(separator: ";")[0])
        let coordinator = try RosterService(["coordinator", "--no-auth", "--plaintext", "--data", data, "--catalog", database.url, "--match", match,
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
        let result = try RosterBinary.run(["coordinator", "--no-auth", "--plaintext", "--data", root.path, "--listen", "127.0.0.1:0",
                                           "--catalog", "postgres://roster@127.0.0.1:1/roster"])
        XCTAssertEqual(result.status, 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(errors.count, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("cannot connect to postgres://roster@127.0.0.1:1/roster"), result.stderr)
    }
}

/// Two coordinators on one PostgreSQL catalog: one leads, the other stands
/// by; the leader is killed mid-ingest and the standby finishes the list.
final class CoordinatorFailoverTests: ServicesTestCase {
    override class var folderPrefix: String { "roster-failover" }

    private func listFiles(_ coordinators: String) throws -> [JSONValue] {
        let result = try RosterBinary.run(["call", "--coordinator", coordinators, "IngestAdmin.ListFiles", "{}"])
        guard result.status == 0, case .array(let files)? = try JSONValue(parsing: result.stdout)["files"] else { return [] }
        return files
    }

    func testTheStandbyTakesOverWhenTheLeaderIsKilledMidIngest() throws {
        try failover(.killLeader(.parsing))
    }

    func testTheStandbyTakesOverWhenTheLeaderIsKilledMidMerge() throws {
        try failover(.killLeader(.merging))
    }

    /// The match server is stopped (SIGSTOP) as the merges run, so the
    /// leader's Publish call hangs with the version in `publishing`; the
    /// leader is killed there; the standby publishes it once the match
    /// server is continued.
    func testTheStandbyTakesOverWhenTheLeaderIsKilledMidPublish() throws {
        try failover(.killLeader(.publishing))
    }

    /// The leader is stopped (SIGSTOP) past its lease; the standby takes
    /// over and, with workers leaving the silent leader after one short
    /// deadline, the list goes live while the old leader is still stopped;
    /// continued (SIGCONT), it finds its token gone, writes nothing and
    /// stands by.
    func testALeaderPausedPastItsLeaseStepsDownWhenItWakes() throws {
        try failover(.pauseLeader)
    }

    /// PostgreSQL itself goes away mid-ingest (a fast shutdown ends every
    /// session) and comes back: meanwhile Status still answers, from memory,
    /// naming the outage; both coordinators reconnect, one leads, and the
    /// list goes live with every key counted once and no lease expired.
    func testCoordinatorsRideOutAPostgreSQLRestart() throws {
        try failover(.restartPostgres)
    }

    enum Moment { case parsing, merging, publishing }
    enum Disruption { case killLeader(Moment), pauseLeader, restartPostgres }

    private func failover(_ disruption: Disruption) throws {
        var cleanups: [() -> Void] = []
        defer { cleanups.forEach { $0() } }
        let database = try PostgresTestServer.freshDatabase(cleanups: &cleanups)
        let data = root.path
        let matchServer = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"])
        services.append(matchServer)
        let match = String(try matchServer.waitForLine("match server listening on").split(separator: ";")[0])
        func coordinator() throws -> (RosterService, String) {
            // Many small merges (--merge-bytes 1024), so the merge phase lasts
            // long enough to be caught and killed in, on a loaded machine too.
            // Task leases (10 s) outlast a takeover (at most a leader lease
            // and a third, under 3 s) and the PostgreSQL restart: a lease
            // that expires here is a report that was lost.
            let process = try RosterService(["coordinator", "--no-auth", "--plaintext", "--data", data, "--catalog", database.url, "--match", match,
                                             "--listen", "127.0.0.1:0", "--block-size", "1024", "--scan-interval", "0",
                                             "--lease", "10s", "--leader-lease", "2s", "--merge-bytes", "1024"])
            services.append(process)
            return (process, String(try process.waitForLine("coordinator listening on").split(separator: ";")[0]))
        }
        let (first, a) = try coordinator()
        try eventually("the first coordinator to lead") { first.stderr.contains("leading") }
        let (second, b) = try coordinator()
        try eventually("the second to stand by") { second.stderr.contains("standing by") }
        let both = "\(a),\(b)"

        // A standby refuses writes, naming the leader; it answers reads.
        let members = (0..<6_000).map { "user\($0)@example.com" } // ~200 KB: some 200 blocks of 1 KiB
        let folder = root.appendingPathComponent("lake/big")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(("email_md5\n" + members.map { MemberHash(email: $0).hex + "\n" }.joined()).utf8).write(to: folder.appendingPathComponent("all.txt"))
        let refused = try RosterBinary.run(["submit", "--coordinator", b, "big/all.txt"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("standby") && refused.stderr.contains(a), refused.stderr)
        XCTAssertEqual(try RosterBinary.run(["status", "--coordinator", b]).status, 0, "a standby answers reads")

        // Clients given both addresses find the leader.
        let submitted = try RosterBinary.run(["submit", "--coordinator", "\(b),\(a)", "big/all.txt"])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        for i in 0..<2 {
            services.append(try RosterService(["worker", "--data", data, "--coordinator", both, "--id", "w\(i)", "--log-level", "error"]))
        }
        func blocksDone() throws -> Int {
            guard case .number(let done)? = try listFiles(both).first?["blocksDone"] else { return -1 }
            return Int(done) ?? -1
        }
        func state() throws -> JSONValue? { try listFiles(both).first?["state"] }
        switch disruption {
        case .killLeader(.parsing), .pauseLeader, .restartPostgres:
            try eventually("some blocks to be done") { try blocksDone() >= 5 }
        case .killLeader(.merging):
            try eventually(timeout: 60, "the merges to start") { try state() == .string("FILE_STATE_MERGING") }
        case .killLeader(.publishing):
            try eventually(timeout: 60, "the merges to start") { try state() == .string("FILE_STATE_MERGING") }
            kill(matchServer.process.processIdentifier, SIGSTOP)
            try eventually(timeout: 60, "the leader to be publishing") { try state() == .string("FILE_STATE_PUBLISHING") }
        }
        let disrupted = Date()
        // Times either coordinator has logged taking the lead.
        func leads() -> Int { first.stderr.components(separatedBy: "leading").count + second.stderr.components(separatedBy: "leading").count - 2 }
        var leadsBeforeOutage = 0
        switch disruption {
        case .killLeader:
            XCTAssertEqual(first.stop(SIGKILL), SIGKILL)
        case .pauseLeader:
            kill(first.process.processIdentifier, SIGSTOP)
        case .restartPostgres:
            // Whichever leads by now: on a loaded machine the lead may have
            // passed to the second coordinator already (a renewal late past
            // the 2-s lease), which is itself a failover done right.
            leadsBeforeOutage = leads()
            try PostgresTestServer.halt()
            defer { try? PostgresTestServer.resume() }
            do {
                try eventually(timeout: 30, "the leader to lose its catalog") {
                    first.stderr.contains("cannot renew the lead") || second.stderr.contains("cannot renew the lead")
                }
            } catch {
                print("first coordinator:\n\(first.stderr.suffix(2_000))\nsecond coordinator:\n\(second.stderr.suffix(2_000))")
                throw error
            }
            // Status answers through the outage, from memory, saying why.
            let status = try RosterBinary.run(["status", "--coordinator", both])
            XCTAssertEqual(status.status, 0, "Status answers during a catalog outage: \(status.stderr)")
            XCTAssertTrue(status.stdout.contains("cannot be reached"), status.stdout)
            try PostgresTestServer.resume()
        }
        if case .restartPostgres = disruption {
            try eventually(timeout: 30, "a coordinator to lead again") { leads() > leadsBeforeOutage }
            XCTAssertTrue(first.process.isRunning && second.process.isRunning, "both coordinators outlive the outage")
        } else {
            try eventually(timeout: 30, "the standby to lead") { second.stderr.contains("leading") }
            let takeover = Date().timeIntervalSince(disrupted)
            XCTAssertLessThan(takeover, 10, "took over in \(takeover) s")
        }
        if case .pauseLeader = disruption {
            // Workers left the silent leader after one deadline: the list goes
            // live under the new leader while the old one is still stopped.
            try eventually(timeout: 60, "the list to go live during the pause") {
                try RosterBinary.run(["match", "--match", match, "--advertiser", "big", "--email", members[5_999]]).status == 0
            }
            XCTAssertEqual(try String(contentsOfFile: "/proc/\(first.process.processIdentifier)/stat", encoding: .utf8)
                .split(separator: " ")[2], "T", "the old leader is still stopped")
        }
        switch disruption {
        case .pauseLeader:
            kill(first.process.processIdentifier, SIGCONT)
            // Its next write or campaign finds the new token: it stands by.
            try eventually(timeout: 30, "the old leader to stand by") {
                first.stderr.contains("standing by") || first.stderr.contains("cannot renew the lead")
            }
            XCTAssertTrue(first.process.isRunning, "the old leader keeps running, as a standby")
        case .killLeader(.publishing):
            kill(matchServer.process.processIdentifier, SIGCONT)
        default:
            break
        }
        try eventually(timeout: 90, "the list to go live under the new leader") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "big", "--email", members[5_999]]).status == 0
        }
        let hashes = root.appendingPathComponent("hashes.txt")
        try Data(members.map { MemberHash(email: $0).hex }.joined(separator: "\n").utf8).write(to: hashes)
        let all = try RosterBinary.run(["match", "--match", match, "--advertiser", "big", "--file", hashes.path])
        XCTAssertTrue(all.stderr.contains("6000 of 6000 are members of big"), all.stderr)
        let file = try XCTUnwrap(listFiles(both).first)
        XCTAssertEqual(file["distinctKeys"], .string("6000"))
        XCTAssertEqual(file["keys"], .string("6000"), "no block counted twice")
        // No worker died: every report reached a leader within its lease,
        // and a takeover or an outage cost no lease.
        if case .pauseLeader = disruption { return } // calls in flight to the stopped leader are lost with it
        let catalog = try PostgresDatabase(url: database.url)
        let expired = try catalog.rows("SELECT COUNT(*) AS n FROM attempts WHERE outcome = 'expired'") { $0.int("n") }.first
        XCTAssertEqual(expired, 0, "leases expired although no worker died")
    }
}
