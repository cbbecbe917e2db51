import Foundation
import IngestCoordinator
import Logging
import MatchServer
import Placement
import RosterAPI
import RosterClient
import RosterRPC
import SegmentStore
import Synchronization
import TestSupport
import XCTest

/// A tier of match servers in one process: nodes register with the
/// coordinator, lists are placed on two of them, a client routes by the
/// coordinator's placement, and nodes die, come back and join while every
/// answer is checked against the lists.
final class TierTests: XCTestCase {
    private var harness: IngestHarness!
    private var nodes: [String: TierTestNode] = [:]
    private var router: TierRouter<IngestHarness.Link, IngestHarness.Link>!
    /// Every link a node was ever reached at, by address (unattached: UNAVAILABLE).
    private let links = TransportCache { IngestHarness.Link(name: $0) }

    /// One match server of the tier: its own manifest folder on the shared store.
    final class TierTestNode: @unchecked Sendable {
        let id: String
        let link: IngestHarness.Link
        var catalog: MatchCatalog!
        var announcer: Task<Void, Error>?

        init(id: String, link: IngestHarness.Link) {
            self.id = id
            self.link = link
        }
    }

    override func setUp() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy(blockSize: 1024))
        let links = self.links
        try await harness.startCoordinator(tier: TierSettings(replicas: 2, heartbeatInterval: .milliseconds(100)),
                                           connect: { address in MatchAdmin.Client(transport: links(address)) }, keepRetiredVersions: 1)
        router = TierRouter(coordinator: harness.tierClient, configuration: .init(timeout: .seconds(2))) { address in
            links(address)
        }
    }

    override func tearDown() async throws {
        for node in nodes.values { stop(node) }
        await harness.shutdown()
    }

    /// Starts (or restarts, as a new incarnation) node `id`.
    private func start(_ id: String) throws {
        let node = nodes[id] ?? TierTestNode(id: id, link: links("\(id):7401"))
        nodes[id] = node
        node.catalog = try MatchCatalog(root: harness.storeRoot, manifestFolder: harness.root.appendingPathComponent("nodes/\(id)"),
                                        logger: Logger(label: "test.\(id)"))
        try node.link.attach([MatchHandler(catalog: node.catalog, access: .open), AdminHandler(catalog: node.catalog, access: .open)])
        let announcer = NodeAnnouncer(configuration: .init(nodeID: id, address: "\(id):7401"),
                                      coordinator: harness.tierClient, catalog: node.catalog)
        node.announcer = Task { try await announcer.run() }
    }

    /// The node stops answering and stops its heartbeats, as if killed.
    private func stop(_ node: TierTestNode) {
        node.link.detach()
        node.announcer?.cancel()
    }

    private func status() async throws -> [TierNode] {
        try await harness.adminClient.status(StatusRequest()).nodes
    }

    private var debugAt = ContinuousClock.now
    private var advertisers: [String] { (0..<16).map { "adv\($0)" } }
    private var members: [String: [Key16]] = [:]

    /// 16 advertisers of 40 members each, all live.
    private func ingest() async throws {
        for (i, advertiser) in advertisers.enumerated() {
            let keys = ReferenceParser.randomKeys(40, seed: UInt64(100 + i))
            members[advertiser] = keys
            let path = try harness.drop(Array(keys.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: advertiser, name: "m.txt")
            let submitted = try await harness.submit(path)
            XCTAssertTrue(submitted.queued)
        }
        try await waitUntilAsync(timeout: .seconds(60)) {
            let files = try await self.harness.adminClient.listFiles(ListFilesRequest()).files
            return files.count == 16 && files.allSatisfy { $0.state == .live }
        }
    }

    /// Every member of every advertiser matches and a stranger does not,
    /// through the router: no wrong answer, whatever the tier is doing.
    private func assertEveryAnswerIsRight(file: StaticString = #filePath, line: UInt = #line) async throws {
        let stranger = ReferenceParser.randomKeys(1, seed: 9_999)[0]
        // First (so that a server that just died is met here, not already
        // suspected by the calls below): one hash against every advertiser
        // at once, split by placement.
        let asked = advertisers + ["ghost", advertisers[0]]
        for key in [stranger] + advertisers.prefix(4).map({ members[$0]![0] }) {
            let answers = try await router.matchAdvertisers(hash: Data(key.bytes), advertisers: asked)
            let expected = asked.map { advertiser -> Bool? in members[advertiser].map { $0.contains(key) } }
            XCTAssertEqual(answers, expected, file: file, line: line)
        }
        for advertiser in advertisers {
            for key in members[advertiser]!.prefix(5) {
                let answer = try await router.match(advertiser: advertiser, hash: Data(key.bytes))
                XCTAssertTrue(answer.matched, "\(advertiser) member", file: file, line: line)
            }
            let strangerAnswer = try await router.match(advertiser: advertiser, hash: Data(stranger.bytes))
            XCTAssertFalse(strangerAnswer.matched, file: file, line: line)
            let many = try await router.matchMany(advertiser: advertiser, hashes: Data(members[advertiser]!.flatMap(\.bytes)))
            XCTAssertEqual(many.matchedCount, 40, file: file, line: line)
        }
    }

    /// Each advertiser is held by exactly its two owners among the healthy
    /// `live` nodes (a node that is down stays listed, last, until it returns).
    private func assertPlaced(on live: [String], file: StaticString = #filePath, line: UInt = #line) async throws {
        let placement = try await harness.tierClient.placement(PlacementRequest(advertiserIDs: advertisers))
        let tierNodes = live.map { IDNode(placementID: $0) }
        for placed in placement.advertisers {
            let owners = Set(Rendezvous.rank(tierNodes, for: placed.advertiserID, replicas: 2).map(\.placementID))
            let holders = Set(placed.nodes.map { placement.nodes[Int($0)] }.filter(\.healthy).map(\.nodeID))
            XCTAssertEqual(holders, owners, placed.advertiserID, file: file, line: line)
        }
        for (id, node) in nodes where live.contains(id) {
            let expected = Set(advertisers.filter { Rendezvous.rank(tierNodes, for: $0, replicas: 2).contains { $0.placementID == id } })
            XCTAssertEqual(Set(node.catalog.advertisers.keys), expected, "what \(id) serves", file: file, line: line)
        }
    }

    private struct IDNode: PlacementNode {
        var placementID: String
        var placementWeight: Double { 1 }
    }

    /// Waits until the coordinator has settled the tier on `live`.
    private func waitForPlacement(on live: [String]) async throws {
        let tierNodes = live.map { IDNode(placementID: $0) }
        try await waitUntilAsync(timeout: .seconds(30)) {
            let placement = try await self.harness.tierClient.placement(PlacementRequest(advertiserIDs: self.advertisers))
            let placed = placement.advertisers.allSatisfy { placed in
                Set(placed.nodes.map { placement.nodes[Int($0)] }.filter(\.healthy).map(\.nodeID))
                    == Set(Rendezvous.rank(tierNodes, for: placed.advertiserID, replicas: 2).map(\.placementID))
            }
            let served = self.nodes.filter { live.contains($0.key) }.allSatisfy { id, node in
                Set(node.catalog.advertisers.keys)
                    == Set(self.advertisers.filter { Rendezvous.rank(tierNodes, for: $0, replicas: 2).contains { $0.placementID == id } })
            }
            if !(placed && served) && ContinuousClock.now > self.debugAt {
                self.debugAt = ContinuousClock.now + .seconds(5)
                print("DEBUG placement", placement.advertisers.map { "\($0.advertiserID)@\($0.version):\($0.nodes.map { placement.nodes[Int($0)].nodeID })" },
                      "served", self.nodes.mapValues { $0.catalog.advertisers.keys.sorted() })
            }
            return placed && served
        }
    }

    /// A rollback and a delete in a tier: the catalog changes first, the
    /// restored version is swapped in on both owners over the newer one (the
    /// publish says it is a rollback), and a deleted advertiser leaves every node.
    func testARollbackAndADeleteReachTheNodesOfTheTier() async throws {
        for id in ["m1", "m2", "m3"] { try start(id) }
        try await waitUntilAsync { try await self.status().filter(\.healthy).count == 3 }
        harness.startWorker(id: "w1")
        try await ingest()
        try await waitForPlacement(on: ["m1", "m2", "m3"])
        let newer = ReferenceParser.randomKeys(40, seed: 777)
        let path = try harness.drop(Array(newer.map { ReferenceParser.hex($0) + "\n" }.joined().utf8), advertiser: "adv0", name: "m2.txt")
        let submitted = try await harness.submit(path)
        try await waitUntilAsync(timeout: .seconds(30)) {
            try await self.router.match(advertiser: "adv0", hash: Data(newer[0].bytes)).matched
        }
        // Nodes serve a version a moment before the catalog records it live
        // (and the one before it retired, which is what a rollback serves).
        let live = try await harness.waitForFile(submitted.version)
        XCTAssertEqual(live.state, .live)
        let back = try await harness.adminClient.rollback(RollbackRequest(advertiserID: "adv0"))
        XCTAssertEqual(back.previousVersion, submitted.version)
        let owners = nodes.values.filter { $0.catalog.current("adv0") != nil }
        XCTAssertEqual(owners.count, 2, "two owners")
        for node in owners { XCTAssertEqual(node.catalog.current("adv0")?.version, back.version, "\(node.id) serves the restored version") }
        let old = try await router.match(advertiser: "adv0", hash: Data(members["adv0"]![0].bytes))
        XCTAssertTrue(old.matched)
        XCTAssertEqual(old.version, back.version)
        let gone = try await router.match(advertiser: "adv0", hash: Data(newer[0].bytes))
        XCTAssertFalse(gone.matched)
        try await assertEveryAnswerIsRight()

        let deleted = try await harness.adminClient.deleteAdvertiser(DeleteAdvertiserRequest(advertiserID: "adv1"))
        XCTAssertGreaterThan(deleted.removedVersion, 0)
        for node in nodes.values { XCTAssertNil(node.catalog.current("adv1"), "\(node.id) no longer serves adv1") }
        let placement = try await harness.tierClient.placement(PlacementRequest(advertiserIDs: ["adv1"]))
        XCTAssertTrue(placement.advertisers.allSatisfy { $0.version == 0 || $0.nodes.isEmpty }, "\(placement)")
    }

    /// Deltas in a tier: each goes live on its list's owners as an overlay
    /// (their chains published whole), is compacted, and a node that was
    /// down meanwhile serves the newest version when it returns.
    func testDeltasAndTheirCompactionsReachTheOwnersOfEachList() async throws {
        for id in ["d1", "d2", "d3"] { try start(id) }
        try await waitUntilAsync { try await self.status().filter(\.healthy).count == 3 }
        harness.startWorker(id: "w1")
        try await ingest()
        try await waitForPlacement(on: ["d1", "d2", "d3"])
        // Three deltas for each of four advertisers: one member out, one in;
        // each names 2 of 40 keys (5%), so every second one is compacted.
        let down = nodes["d3"]!
        for round in 0..<3 {
            if round == 1 { stop(down) }
            var versions: [String: UInt64] = [:]
            for (index, advertiser) in advertisers.prefix(4).enumerated() {
                let added = ReferenceParser.randomKeys(1, seed: UInt64(5_000 + round * 100 + index))[0]
                let removed = members[advertiser]![round]
                let text = "+\(ReferenceParser.hex(added))\n-\(ReferenceParser.hex(removed))\n"
                let path = try harness.drop(Array(text.utf8), advertiser: advertiser, name: "r\(round).delta")
                versions[advertiser] = try await harness.submit(path).version
                members[advertiser] = members[advertiser]!.filter { $0 != removed } + [added]
            }
            for (advertiser, version) in versions {
                let status = try await harness.waitForFile(version)
                XCTAssertTrue([.live, .retired].contains(status.state), "\(advertiser): \(status.state) \(status.error)")
            }
            // Members now number 40 again, the removed one last of its round.
            try await waitUntilAsync(timeout: .seconds(30)) {
                for advertiser in self.advertisers.prefix(4) {
                    let last = self.members[advertiser]!.last!
                    guard try await self.router.match(advertiser: advertiser, hash: Data(last.bytes)).matched else { return false }
                }
                return true
            }
            try await assertEveryAnswerIsRight()
        }
        let compactions = try await harness.adminClient.listFiles(ListFilesRequest(limit: 1_000)).files.filter { $0.kind == .compaction }
        XCTAssertFalse(compactions.isEmpty, "deltas past 10% of a list's keys were compacted")
        try start("d3")
        try await waitForPlacement(on: ["d1", "d2", "d3"])
        try await assertEveryAnswerIsRight()
        for advertiser in advertisers.prefix(4) {
            let live = try await harness.adminClient.listAdvertisers(ListAdvertisersRequest()).advertisers.first { $0.advertiserID == advertiser }!.liveVersion
            for node in nodes.values where node.catalog.current(advertiser) != nil {
                XCTAssertEqual(node.catalog.current(advertiser)?.version, live, "\(node.id) serves \(advertiser)'s live version")
            }
        }
    }

    func testListsArePlacedOnTwoNodesAndClientsFollowThemThroughDeathsReturnsAndJoins() async throws {
        for id in ["n1", "n2", "n3"] { try start(id) }
        try await waitUntilAsync { try await self.status().filter(\.healthy).count == 3 }
        harness.startWorker(id: "w1")
        try await ingest()
        try await waitForPlacement(on: ["n1", "n2", "n3"])
        try await assertPlaced(on: ["n1", "n2", "n3"])
        try await assertEveryAnswerIsRight()
        let placementCalls = router.placementCallCount
        try await assertEveryAnswerIsRight()
        XCTAssertEqual(router.placementCallCount, placementCalls, "placements are cached")

        // n1 dies: calls move to the other holder at once, before the
        // coordinator notices; then its lists are copied to their new owners.
        stop(nodes["n1"]!)
        try await assertEveryAnswerIsRight()
        harness.advanceClock(by: 1) // past three heartbeats: n1 is down
        try await waitForPlacement(on: ["n2", "n3"])
        try await assertEveryAnswerIsRight()
        let statuses = try await status()
        XCTAssertEqual(statuses.first { $0.nodeID == "n1" }?.healthy, false)

        // n1 comes back (a new incarnation, with its old manifest): it is
        // checked, gets its share back, and the others drop what is no
        // longer theirs; nothing else moves.
        try start("n1")
        try await waitForPlacement(on: ["n1", "n2", "n3"])
        try await assertPlaced(on: ["n1", "n2", "n3"])
        try await assertEveryAnswerIsRight()

        // A fourth node joins: only the advertisers it now owns move, and
        // every answer stays right while they do.
        var before: [String: Set<String>] = [:]
        for advertiser in advertisers {
            before[advertiser] = Set(nodes.keys.filter { nodes[$0]!.catalog.advertisers[advertiser] != nil })
        }
        try start("n4")
        try await assertEveryAnswerIsRight()
        try await waitForPlacement(on: ["n1", "n2", "n3", "n4"])
        try await assertEveryAnswerIsRight()
        for advertiser in advertisers {
            let now = Set(nodes.keys.filter { nodes[$0]!.catalog.advertisers[advertiser] != nil })
            if now != before[advertiser] {
                XCTAssertTrue(now.contains("n4"), "\(advertiser) moved between old nodes: \(before[advertiser]!) → \(now)")
                XCTAssertEqual(now.intersection(before[advertiser]!).count, 1, "\(advertiser) kept one of its old holders")
            }
        }
    }
}
