import Foundation
import RosterAPI
import RosterClient
import TestSupport
import XCTest

/// Every link over mutual TLS, as users run it, in separate processes on
/// loopback: a coordinator and a match server (a node of its tier) serving
/// mutual TLS, a worker and the CLI presenting client certificates. Then the
/// ways to get it wrong, an independent TLS client (openssl s_client), the
/// metrics port over HTTPS, and a certificate reloaded on SIGHUP.
final class TLSEndToEndTests: ServicesTestCase {
    override class var folderPrefix: String { "roster-tls-e2e" }

    func testEveryLinkOverMutualTLSAndACertificateReloadedOnSIGHUP() async throws {
        let certificates = try TestCertificates()
        let data = root.path
        // The match server's own copies, replaced in place for the reload.
        let (pem, key) = (root.appendingPathComponent("match.pem").path, root.appendingPathComponent("match.key").path)
        try FileManager.default.copyItem(atPath: certificates.certificate("server"), toPath: pem)
        try FileManager.default.copyItem(atPath: certificates.key("server"), toPath: key)
        let ca = certificates.certificate("ca")
        let serving = { (pem: String, key: String) in ["--tls-cert", pem, "--tls-key", key, "--tls-ca", ca] }
        let client = ["--ca", ca, "--cert", certificates.certificate("client"), "--key", certificates.key("client")]

        let coordinator = try RosterService(["coordinator", "--no-auth", "--data", data, "--listen", "127.0.0.1:0", "--block-size", "2048",
                                             "--scan-interval", "0.2", "--replicas", "1", "--node-heartbeat", "0.2"]
                                            + serving(certificates.certificate("server"), certificates.key("server")))
        services.append(coordinator)
        let coordinatorLine = try coordinator.waitForLine("coordinator listening on")
        XCTAssertTrue(coordinatorLine.contains("; mutual TLS;"), coordinatorLine)
        let address = String(coordinatorLine.split(separator: ";")[0])
        let metricsPort = try freePort()
        let node = try RosterService(["match-server", "--no-auth", "--data", data, "--listen", "127.0.0.1:0", "--node-id", "n1",
                                      "--coordinator", address, "--metrics", "127.0.0.1:\(metricsPort)"] + serving(pem, key))
        services.append(node)
        let match = String(try node.waitForLine("match server listening on").split(separator: ";")[0])
        services.append(try RosterService(["worker", "--data", data, "--coordinator", address, "--log-level", "error"] + client))

        // A list goes live through every link: worker → coordinator, node → coordinator, coordinator → node.
        let members = (0..<300).map { "user\($0)@example.com" }
        let folder = root.appendingPathComponent("lake/acme")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(members.map { MemberHash(email: $0).hex + "\n" }.joined().utf8).write(to: folder.appendingPathComponent(".m.tmp"))
        try FileManager.default.moveItem(at: folder.appendingPathComponent(".m.tmp"), to: folder.appendingPathComponent("members.txt"))
        func ask(_ email: String, _ extra: [String] = []) throws -> RosterBinary.Result {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", email, "--timeout", "3"] + extra)
        }
        try eventually(timeout: 60, "the list to be served over TLS") { try ask(members[7], client).status == 0 }
        XCTAssertEqual(try ask("stranger@example.com", client).status, 3)
        let tier = try RosterBinary.run(["match", "--tier", "--coordinator", address, "--advertiser", "acme", "--email", members[1]] + client)
        XCTAssertEqual(tier.status, 0, tier.stderr)
        let status = try RosterBinary.run(["status", "--coordinator", address] + client)
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("live"), status.stdout)
        let load = try RosterBinary.run(["load", "--match", match, "--advertiser", "acme", "--rate", "200", "--duration", "1s"] + client)
        XCTAssertEqual(load.status, 0, load.stderr)

        // Refused, each in one line the user reads.
        let noCertificate = try ask(members[7], ["--ca", ca])
        XCTAssertEqual(noCertificate.status, 78, "UNAVAILABLE: 64 + 14")
        XCTAssertEqual(noCertificate.stderr, "Error: match failed: UNAVAILABLE: \(match) requires a client certificate (mutual TLS): give one with --cert and --key\n")
        try eventually(timeout: 10, "the server to log the refusal") { node.stderr.contains("it sent no client certificate, and this server requires one") }
        let plaintext = try ask(members[7])
        XCTAssertEqual(plaintext.status, 78)
        XCTAssertTrue(plaintext.stderr.hasSuffix("this server requires TLS: connect with TLS (roster: --tls, and --ca to trust its certificate)\n"), plaintext.stderr)
        let untrusted = try ask(members[7], ["--tls", "--cert", certificates.certificate("client"), "--key", certificates.key("client")])
        XCTAssertTrue(untrusted.stderr.contains("was refused: it is not signed by a trusted CA"), untrusted.stderr)

        // An independent client: openssl's handshake, certificate check and ALPN.
        let handshake = try sClient(match, ca: ca, certificates: certificates)
        XCTAssertTrue(handshake.contains("ALPN protocol: roster/1"), handshake)
        XCTAssertTrue(handshake.contains("Verify return code: 0 (ok)"), handshake)
        XCTAssertTrue(handshake.contains("subject=CN = localhost\n"), handshake)

        // Metrics over HTTPS (a scraper with a client certificate), and plain HTTP told so.
        let scraped = try curl(["--cacert", ca, "--cert", certificates.certificate("client"), "--key", certificates.key("client"),
                                "https://127.0.0.1:\(metricsPort)/metrics"])
        XCTAssertTrue(scraped.contains("# TYPE"), scraped)
        let plainScrape = try curl(["http://127.0.0.1:\(metricsPort)/metrics"])
        XCTAssertTrue(plainScrape.contains("this port serves HTTPS"), plainScrape)

        // SIGHUP: new connections get the renewed certificate; one opened before keeps working.
        let tls = try ClientTLS(files: ClientTLSFiles(trustRoots: ca, certificateChain: certificates.certificate("client"),
                                                      privateKey: certificates.key("client")))
        let parts = match.split(separator: ":")
        let open = MatchClient(host: String(parts[0]), port: Int(parts[1])!, tls: tls)
        let before = try await open.isMember(advertiser: "acme", hash: MemberHash(email: members[3]))
        XCTAssertTrue(before)
        for (from, to) in [(certificates.certificate("server-2"), pem), (certificates.key("server-2"), key)] {
            try FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        kill(node.process.processIdentifier, SIGHUP)
        try eventually(timeout: 10, "the reload to be logged") { node.stderr.contains("reloaded TLS certificates") }
        XCTAssertTrue(node.stderr.contains("certificate=CN=localhost (renewed)"), String(node.stderr.suffix(500)))
        XCTAssertTrue(try sClient(match, ca: ca, certificates: certificates).contains("subject=CN = localhost (renewed)\n"))
        let after = try await open.isMember(advertiser: "acme", hash: MemberHash(email: members[4]))
        XCTAssertTrue(after, "the connection opened before the reload still answers")
        XCTAssertEqual(try ask(members[7], client).status, 0)

        // A bad certificate on SIGHUP is refused in one line; the last good one serves on.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: pem))
        kill(node.process.processIdentifier, SIGHUP)
        try eventually(timeout: 10, "the failed reload to be logged") {
            node.stderr.contains("TLS reload failed, still serving the previous certificate: \(pem) holds no PEM certificate")
        }
        XCTAssertEqual(try ask(members[7], client).status, 0)
        await open.rpc.close()
    }

    func testAnExpiredOrMismatchedCertificateStopsTheStartInOneLine() throws {
        let certificates = try TestCertificates()
        let expired = try RosterBinary.run(["match-server", "--no-auth", "--data", root.path, "--listen", "127.0.0.1:0",
                                            "--tls-cert", certificates.certificate("expired"), "--tls-key", certificates.key("expired")])
        XCTAssertEqual(expired.status, 1)
        XCTAssertEqual(expired.stderr, "Error: TLS: the certificate in \(certificates.certificate("expired")) expired on 2020-01-02T00:00:00Z\n")
        let mismatched = try RosterBinary.run(["coordinator", "--no-auth", "--data", root.path, "--listen", "127.0.0.1:0",
                                               "--tls-cert", certificates.certificate("server"), "--tls-key", certificates.key("client")])
        XCTAssertEqual(mismatched.status, 1)
        XCTAssertEqual(mismatched.stderr, "Error: TLS: the private key in \(certificates.key("client")) does not match the certificate in \(certificates.certificate("server"))\n")
    }

    /// `openssl s_client` asking for ALPN roster/1 with a client certificate; its output.
    private func sClient(_ address: String, ca: String, certificates: TestCertificates) throws -> String {
        try output(TestCertificates.openssl, ["s_client", "-connect", address, "-alpn", "roster/1", "-CAfile", ca,
                                              "-cert", certificates.certificate("client"), "-key", certificates.key("client")], input: "")
    }

    private func curl(_ arguments: [String]) throws -> String {
        try output("/usr/bin/curl", ["-s", "-S", "--max-time", "5"] + arguments, input: nil)
    }

    private func output(_ executable: String, _ arguments: [String], input: String?) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = input == nil ? FileHandle.nullDevice : Pipe()
        try process.run()
        if let pipe = process.standardInput as? Pipe { try pipe.fileHandleForWriting.close() }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
