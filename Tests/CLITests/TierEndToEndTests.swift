import Foundation
import RosterAPI
import RosterClient
import XCTest

/// A tier as users run it, in separate processes on loopback: a coordinator
/// with `--replicas 2`, three match servers that join it with `--node-id`,
/// a worker; `roster match --tier` finds the list through the placement and
/// keeps answering when a match server is killed.
final class TierEndToEndTests: ServicesTestCase {
    override class var folderPrefix: String { "roster-tier-e2e" }

    func testATierServesThroughTheDeathOfAMatchServer() throws {
        let data = root.path
        let coordinator = try RosterService(["coordinator", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0", "--block-size", "2048",
                                             "--scan-interval", "0.2", "--replicas", "2", "--node-heartbeat", "0.2"])
        services.append(coordinator)
        let address = String(try coordinator.waitForLine("coordinator listening on").split(separator: ";")[0])
        var nodes: [String: RosterService] = [:]
        for id in ["n1", "n2", "n3"] {
            let node = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0",
                                          "--node-id", id, "--coordinator", address])
            services.append(node)
            _ = try node.waitForLine("match server listening on")
            nodes[id] = node
        }
        services.append(try RosterService(["worker", "--data", data, "--coordinator", address, "--log-level", "error"]))
        try eventually("three healthy nodes") {
            let status = try RosterBinary.run(["status", "--coordinator", address])
            return status.stdout.components(separatedBy: " ok ").count == 4
        }

        let members = (0..<500).map { "user\($0)@example.com" }
        let folder = root.appendingPathComponent("lake/acme")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(members.map { MemberHash(email: $0).hex + "\n" }.joined().utf8).write(to: folder.appendingPathComponent(".m.tmp"))
        try FileManager.default.moveItem(at: folder.appendingPathComponent(".m.tmp"), to: folder.appendingPathComponent("members.txt"))
        func ask(_ email: String) throws -> Int32 {
            try RosterBinary.run(["match", "--tier", "--coordinator", address, "--advertiser", "acme", "--email", email, "--timeout", "3"]).status
        }
        try eventually(timeout: 60, "the list to be served by the tier") { try ask(members[499]) == 0 }
        XCTAssertEqual(try ask("stranger@example.com"), 3)
        func askAcross(_ email: String) throws -> String {
            try RosterBinary.run(["match", "--tier", "--coordinator", address, "--advertisers", "acme,ghost", "--email", email, "--timeout", "3"]).stdout
        }
        XCTAssertEqual(try askAcross(members[7]), "acme\tmember\nghost\tno list\n")

        // Which two nodes hold it, from the placement; kill the first.
        let placement = try RosterBinary.run(["call", "--coordinator", address, "Tier.Placement", #"{"advertiserIds": ["acme"]}"#])
        XCTAssertEqual(placement.status, 0, placement.stderr)
        let json = try JSONValue(parsing: placement.stdout)
        guard case .array(let listed)? = json["nodes"], case .array(let placed)? = json["advertisers"],
              case .array(let holders)? = placed.first?["nodes"] else { return XCTFail(placement.stdout) }
        XCTAssertEqual(holders.count, 2, placement.stdout)
        let firstIndex: Int
        switch holders.first { case .number(let n)?: firstIndex = Int(n) ?? 0; default: firstIndex = 0 }
        guard case .string(let victim)? = listed[firstIndex]["nodeId"] else { return XCTFail(placement.stdout) }
        XCTAssertEqual(nodes[victim]!.stop(SIGKILL), SIGKILL)
        // At once, before the coordinator notices: the other holder answers.
        XCTAssertEqual(try askAcross(members[0]), "acme\tmember\nghost\tno list\n")
        XCTAssertEqual(try ask(members[0]), 0)
        XCTAssertEqual(try ask("stranger@example.com"), 3)
        // The coordinator sees it down and places the list on the third node.
        try eventually(timeout: 30, "the status to show the node down") {
            try RosterBinary.run(["status", "--coordinator", address]).stdout.contains("DOWN")
        }
        try eventually(timeout: 30, "two healthy holders again") {
            let again = try RosterBinary.run(["call", "--coordinator", address, "Tier.Placement", #"{"advertiserIds": ["acme"]}"#])
            guard case .array(let listed)? = try JSONValue(parsing: again.stdout)["nodes"],
                  case .array(let placed)? = try JSONValue(parsing: again.stdout)["advertisers"],
                  case .array(let holders)? = placed.first?["nodes"] else { return false }
            let healthy = holders.filter { holder in
                guard case .number(let n) = holder, let i = Int(n) else { return false }
                return listed[i]["healthy"] == .bool(true)
            }
            return healthy.count == 2
        }
        XCTAssertEqual(try ask(members[250]), 0)
    }
}
