import Foundation
import NIOCore
import ObjectStorage
import RosterAPI
import RosterClient
import S3TestSupport
import Synchronization
import XCTest

/// The services as separate processes that share no folder — each has a
/// data folder of its own — and meet only in a bucket of a real
/// S3-compatible server: the lake and the segment store are both there.
final class ObjectStorageEndToEndTests: ServicesTestCase {
    override class var folderPrefix: String { "roster-s3-e2e" }
    private var client: S3Client?

    override func tearDown() async throws {
        try? await client?.shutdown()
    }

    private func listFile(_ emails: [String]) -> String {
        "email_md5\n" + emails.map { MemberHash(email: $0).hex + "\n" }.joined()
    }

    func testListsInABucketAreIngestedAndServedByProcessesSharingNoFolder() async throws {
        let (server, s3, base, environment) = try bucket("e2e")
        let (match, coordinator) = try startServices(endpoint: server.endpoint, base: base, environment: environment, workers: false)
        let firstWorker = try startWorker("worker-1", coordinator: coordinator, base: base, environment: environment)

        // 6,000 members, about 200 KB: some 50 blocks, each a run uploaded, then merges.
        let members = (0..<6_000).map { "user\($0)@example.com" }
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(members)))
        func blocksDone() throws -> Int {
            let result = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "{}"])
            guard result.status == 0, case .array(let files)? = try JSONValue(parsing: result.stdout)["files"],
                  case .number(let done)? = files.first?["blocksDone"] else { return -1 }
            return Int(done) ?? -1
        }
        // A worker killed mid-ingest (SIGKILL, uploads in flight) leaves no
        // half-written object behind as done: its leases expire, another
        // worker redoes them, and every member is served.
        try eventually("some blocks to be done") { try blocksDone() >= 3 }
        firstWorker.stop(SIGKILL)
        _ = try startWorker("worker-2", coordinator: coordinator, base: base, environment: environment)
        try eventually(timeout: 60, "the list to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[5_999]]).status == 0
        }
        let hashes = root.appendingPathComponent("hashes.txt")
        try Data(members.map { MemberHash(email: $0).hex }.joined(separator: "\n").utf8).write(to: hashes)
        let all = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--file", hashes.path])
        XCTAssertTrue(all.stderr.contains("6000 of 6000 are members of acme"), all.stderr)

        // A new list replaces it; the old version's runs leave the bucket, and
        // its segments stay for a rollback (--keep-versions, default 1).
        // 500 for 6,000 would be held by the shrink guard: this advertiser's
        // list may shrink that far (its own limit, set as an operator would).
        let replacement = (10_000..<10_500).map { "user\($0)@example.com" }
        let allowed = try RosterBinary.run(["max-shrink", "--coordinator", coordinator, "--advertiser", "acme", "100%"])
        XCTAssertEqual(allowed.status, 0, allowed.stderr)
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(replacement)))
        try eventually(timeout: 60, "the replacement to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", replacement[0]]).status == 0
        }
        XCTAssertEqual(try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[0]]).status, 3)
        let live = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", replacement[1]])
        let version = live.stdout.split(separator: " ").last.map { $0.filter(\.isNumber) } ?? ""
        var left: [String] = []
        for _ in 0..<300 {
            left = try await s3.listAll(prefix: "store/").map(\.key)
            if !left.isEmpty, !left.contains(where: { $0.hasPrefix("store/runs/") }) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertFalse(left.contains { $0.hasPrefix("store/runs/") }, "runs of merged versions are collected: \(left)")
        XCTAssertTrue(left.contains { $0.hasPrefix("store/segments/acme/1/") }, "the retired version's segments are kept: \(left)")
        XCTAssertTrue(left.contains { $0.hasPrefix("store/segments/acme/\(version)/") }, "the live version stays: \(left)")
        // The match server keeps only what it serves in its own folder.
        let cached = FileManager.default.enumerator(atPath: root.appendingPathComponent("match/store/segments").path)?
            .compactMap { $0 as? String }.filter { $0.hasSuffix(".seg") } ?? []
        XCTAssertFalse(cached.contains { $0.hasPrefix("acme/1/") }, "retired segments leave the match server's cache: \(cached)")
        XCTAssertFalse(cached.isEmpty, "\(version)")
        // A rollback fetches the kept segments from the bucket again and serves them.
        let back = try RosterBinary.run(["rollback", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(back.status, 0, back.stderr)
        XCTAssertEqual(try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[0]]).status, 0)
        XCTAssertEqual(try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", replacement[0]]).status, 3)
    }

    /// A prefix of the test bucket for test `name`: the server, a client
    /// of it (closed after the test), the prefix as services name it, and
    /// the credentials they read from their environment.
    private func bucket(_ name: String) throws -> (server: (endpoint: String, key: String, secret: String, bucket: String), s3: S3Client,
                                                  base: String, environment: [String: String]) {
        let server = try S3TestServer.endpoint()
        let configuration = try S3TestServer.configuration(name)
        let s3 = S3Client(configuration)
        client = s3
        return (server, s3, "s3://\(configuration.bucket)/\(configuration.prefix)",
                ["AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret, "AWS_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": server.endpoint])
    }

    /// Kills the match server (SIGKILL: a crash) and starts one at its
    /// address with the data folder `folder` (its own, kept; or a new one:
    /// an empty host), waiting until it listens.
    private func replaceMatchServer(at match: String, base: String, environment: [String: String], folder: String) throws {
        let old = try XCTUnwrap(services.first { $0.process.arguments?.contains("match-server") == true && $0.process.isRunning })
        XCTAssertEqual(old.stop(SIGKILL), SIGKILL)
        let replacement = try RosterService(["match-server", "--no-auth", "--plaintext", "--listen", match, "--store", base + "store"]
                                            + data(folder), environment: environment)
        services.append(replacement)
        _ = try replacement.waitForLine("match server listening on")
    }

    private func buckets(_ base: String) -> [String] { ["--lake", base + "lake", "--store", base + "store"] }
    private func data(_ name: String) -> [String] { ["--data", root.appendingPathComponent(name).path] }

    /// Starts a match server, a coordinator and (unless `workers` is false) a
    /// worker, each with a folder of its own, whose object store is reached
    /// at `endpoint` (the server, or a `FaultProxy` in front of it).
    private func startServices(endpoint: String, base: String, environment: [String: String], maxAttempts: Int = 4,
                               workers: Bool = true, coordinatorFlags: [String] = []) throws -> (match: String, coordinator: String) {
        var environment = environment
        environment["AWS_ENDPOINT_URL"] = endpoint
        let matchServer = try RosterService(["match-server", "--no-auth", "--plaintext", "--listen", "127.0.0.1:0", "--store", base + "store"]
                                            + data("match"), environment: environment)
        services.append(matchServer)
        let match = String(try matchServer.waitForLine("match server listening on").split(separator: ";")[0])
        let coordinator = try RosterService(["coordinator", "--no-auth", "--plaintext", "--listen", "127.0.0.1:0", "--match", match,
                                             "--block-size", "4096", "--scan-interval", "0.2", "--lease", "2",
                                             "--max-attempts", String(maxAttempts)] + coordinatorFlags + buckets(base) + data("coordinator"),
                                            environment: environment)
        services.append(coordinator)
        let address = String(try coordinator.waitForLine("coordinator listening on").split(separator: ";")[0])
        if workers { _ = try startWorker("worker", coordinator: address, base: base, environment: environment) }
        return (match, address)
    }

    private func startWorker(_ name: String, coordinator: String, base: String, environment: [String: String]) throws -> RosterService {
        let worker = try RosterService(["worker", "--coordinator", coordinator, "--log-level", "error", "--slots", "2"]
                                       + buckets(base) + data(name), environment: environment)
        services.append(worker)
        return worker
    }

    func testIngestCompletesThroughAFlakyObjectStore() async throws {
        let (server, s3, base, environment) = try bucket("flaky")
        // Every 4th request 503 SlowDown, every 9th a 500, every 11th
        // dropped, every 13th with its body cut off, every 7th slow.
        let proxy = try FaultProxy(upstream: server.endpoint) { index, _, _ in
            index % 4 == 3 ? .slowDown : index % 9 == 8 ? .internalError : index % 11 == 10 ? .drop
                : index % 13 == 12 ? .cutBody : index % 7 == 6 ? .slowBody : .none
        }
        defer { Task { try? await proxy.shutdown() } }
        let (match, _) = try startServices(
            endpoint: proxy.endpoint, base: base, environment: environment)
        let members = (0..<3_000).map { "user\($0)@example.com" }
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(members)))
        try eventually(timeout: 60, "the list to be served through the faults") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[2_999]]).status == 0
        }
        let hashes = root.appendingPathComponent("hashes.txt")
        try Data(members.map { MemberHash(email: $0).hex }.joined(separator: "\n").utf8).write(to: hashes)
        let all = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--file", hashes.path])
        XCTAssertTrue(all.stderr.contains("3000 of 3000 are members of acme"), all.stderr)
        XCTAssertGreaterThan(proxy.injected.filter { $0 != .none }.count, 10)
    }

    /// A permanent refusal (403: these credentials may not read the list)
    /// is a failed attempt, said in words; the version fails once they are
    /// spent. (A 503 or a refused connection is an outage instead: below.)
    func testAnUnreadableListFailsItsVersionWithAClearErrorAndNothingIsServed() async throws {
        let (server, s3, base, environment) = try bucket("unreadable")
        // Reads of the lake's objects always answer 403; everything else works.
        let proxy = try FaultProxy(upstream: server.endpoint) { _, method, uri in
            method == .GET && uri.contains("/lake/") && !uri.contains("list-type") ? .status(403, code: "AccessDenied") : .none
        }
        defer { Task { try? await proxy.shutdown() } }
        let (match, coordinator) = try startServices(
            endpoint: proxy.endpoint, base: base, environment: environment,
            maxAttempts: 2)
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(["a@example.com"])))
        var error = ""
        try eventually(timeout: 60, "the version to fail") {
            let result = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "{}"])
            guard result.status == 0, case .array(let files)? = try JSONValue(parsing: result.stdout)["files"],
                  let file = files.first, file["state"] == .string("FILE_STATE_FAILED") else { return false }
            if case .string(let text)? = file["error"] { error = text }
            return true
        }
        XCTAssertTrue(error.contains("HTTP 403 AccessDenied") && error.contains("lake/acme/members.txt"), error)
        let served = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", "a@example.com"])
        XCTAssertNotEqual(served.status, 0, "nothing is served for a failed version")
    }

    /// The object store goes away mid-ingest (every connection dropped) for
    /// several seconds, with one attempt allowed per task: nothing fails,
    /// the workers wait it out holding their leases, and the list goes live
    /// by itself once the store is back.
    func testAnOutageOfTheObjectStoreFailsNothingAndIngestResumesByItself() async throws {
        let (server, s3, base, environment) = try bucket("outage")
        let down = Mutex(false)
        let proxy = try FaultProxy(upstream: server.endpoint) { _, _, _ in down.withLock { $0 } ? .drop : .none }
        defer { Task { try? await proxy.shutdown() } }
        let (match, coordinator) = try startServices(
            endpoint: proxy.endpoint, base: base, environment: environment,
            maxAttempts: 1)
        let members = (0..<3_000).map { "user\($0)@example.com" }
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(members)))
        let submitted = try RosterBinary.run(["submit", "--coordinator", coordinator, "acme/members.txt"])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        down.withLock { $0 = true }
        let dropsBefore = proxy.injected.filter { $0 == .drop }.count
        try eventually(timeout: 30, "the workers to meet the outage") { proxy.injected.filter { $0 == .drop }.count >= dropsBefore + 10 }
        try await Task.sleep(for: .seconds(4))
        let during = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "{}"])
        XCTAssertFalse(during.stdout.contains("FILE_STATE_FAILED"), "an outage failed the version: \(during.stdout)")
        down.withLock { $0 = false }
        try eventually(timeout: 60, "the list to go live once the store is back") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[2_999]]).status == 0
        }
        let files = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "{}"])
        XCTAssertTrue(files.stdout.contains("FILE_STATE_LIVE") && !files.stdout.contains("FILE_STATE_FAILED"), files.stdout)
    }

    /// The match server's host is replaced by an empty one (no manifest, no
    /// segments on its disk): the coordinator publishes every live version
    /// to it again, and it fetches their segments from the bucket — the
    /// same versions, nothing re-ingested, nothing deleted that they need.
    /// A delta dropped into the bucket goes on top of the list as an
    /// overlay: the match server keeps the base's files it still serves
    /// from (they are the new version's too), and a restart of the match
    /// server serves base and overlay again from its own folder.
    func testADeltaInABucketGoesOnTopOfTheListAndSurvivesARestart() async throws {
        let (server, s3, base, environment) = try bucket("delta")
        let (match, _) = try startServices(endpoint: server.endpoint, base: base, environment: environment)
        let members = (0..<2_000).map { "user\($0)@example.com" }
        func isMember(_ email: String) throws -> Bool {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", email]).status == 0
        }
        // The list and a delta put back to back, most likely in the same
        // second (an object store's times are whole seconds): the delta is
        // taken after the list, and goes on it.
        try await s3.put("lake/acme/members.txt", body: ByteBuffer(string: listFile(members)))
        let delta = "+" + MemberHash(email: "new@example.com").hex + "\n-" + MemberHash(email: members[7]).hex + "\n"
        try await s3.put("lake/acme/2026-12-06.delta", body: ByteBuffer(string: delta))
        try eventually(timeout: 60, "the delta to be served") { try isMember("new@example.com") }
        XCTAssertTrue(try isMember(members[1_999]))
        XCTAssertFalse(try isMember(members[7]), "removed by the delta")
        XCTAssertTrue(try isMember(members[8]), "the base serves on beneath the overlay")

        try replaceMatchServer(at: match, base: base, environment: environment, folder: "match")
        // At once, from its own folder: a reload that lost a file would
        // answer UNAVAILABLE until the coordinator rebuilt the version.
        XCTAssertTrue(try isMember("new@example.com"))
        XCTAssertFalse(try isMember(members[7]))
        XCTAssertTrue(try isMember(members[1_000]))
    }

    func testAMatchServerOnAnEmptyHostServesEveryLiveVersionFromTheStore() async throws {
        let (server, s3, base, environment) = try bucket("empty-host")
        let (match, coordinator) = try startServices(endpoint: server.endpoint, base: base, environment: environment,
                                                     coordinatorFlags: ["--reconcile-interval", "0.5s"])
        let advertisers = ["a1", "a2", "a3"]
        var members: [String: [String]] = [:]
        for advertiser in advertisers {
            members[advertiser] = (0..<500).map { "\(advertiser)-user\($0)@example.com" }
            try await s3.put("lake/\(advertiser)/members.txt", body: ByteBuffer(string: listFile(members[advertiser]!)))
        }
        func served(_ advertiser: String) throws -> Bool {
            try RosterBinary.run(["match", "--match", match, "--advertiser", advertiser, "--email", members[advertiser]![499]]).status == 0
        }
        try eventually(timeout: 60, "every list to be served") { try advertisers.allSatisfy(served) }
        let before = try RosterBinary.run(["advertisers", "--coordinator", coordinator, "--json"]).stdout

        // The host dies; a new one with an empty disk takes its address.
        try replaceMatchServer(at: match, base: base, environment: environment, folder: "empty-host")
        try eventually(timeout: 60, "every list to be served by the new host") { try advertisers.allSatisfy(served) }
        let after = try RosterBinary.run(["advertisers", "--coordinator", coordinator, "--json"]).stdout
        XCTAssertEqual(after, before, "the same live versions, none rebuilt")
        for advertiser in advertisers {
            let all = try RosterBinary.run(["match", "--match", match, "--advertiser", advertiser, "--email", members[advertiser]![0]])
            XCTAssertEqual(all.status, 0, all.stderr)
        }
    }

    func testWrongCredentialsStopAServiceAtStartWithOneClearLine() throws {
        let server = try S3TestServer.endpoint()
        let result = try RosterBinary.run(
            ["worker", "--lake", "s3://\(server.bucket)/x", "--store", "s3://\(server.bucket)/y", "--s3-endpoint", server.endpoint,
             "--data", root.path],
            environment: ["AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": "wrong"])
        XCTAssertEqual(result.status, 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(errors.count, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("SignatureDoesNotMatch") && result.stderr.contains("secret key"), result.stderr)
        let missing = try RosterBinary.run(
            ["match-server", "--no-auth", "--plaintext", "--store", "s3://no-such-bucket-roster/y", "--s3-endpoint", server.endpoint, "--data", root.path],
            environment: ["AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("NoSuchBucket") && missing.stderr.contains("create the bucket"), missing.stderr)
    }
}
