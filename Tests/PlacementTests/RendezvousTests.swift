import Placement
import XCTest

private struct Node: PlacementNode, Equatable {
    var placementID: String
    var placementWeight: Double = 1
}

final class RendezvousTests: XCTestCase {
    private let advertisers = (0..<10_000).map { "adv\($0)" }

    private func owners(_ nodes: [Node], replicas: Int) -> [String: [String]] {
        Dictionary(uniqueKeysWithValues: advertisers.map { ($0, Rendezvous.rank(nodes, for: $0, replicas: replicas).map(\.placementID)) })
    }

    /// The rule is a file format: other implementations must get these
    /// numbers (docs/SERVING.md). They come from an independent reading of
    /// the documented steps (a few lines of Python); a change here changes
    /// every advertiser's owners.
    func testScoresMatchAnIndependentImplementation() {
        let nodes = ["n1", "n2", "n3", "n4"].map { Node(placementID: $0) }
        let expected: [String: (order: [String], scores: [Double])] = [
            "acme": (["n4", "n2", "n1", "n3"], [4.264229594025, 6.111068278256, 1.068084387659, 8.859334284557]),
            "adv1": (["n4", "n1", "n2", "n3"], [1.422541464284, 0.948608296359, 0.278929558694, 4.340207936734]),
            "zeta": (["n3", "n4", "n1", "n2"], [0.408873798331, 0.379092805953, 0.494857498206, 0.441229737218]),
        ]
        for (key, want) in expected {
            XCTAssertEqual(Rendezvous.rank(nodes, for: key).map(\.placementID), want.order, key)
            for (node, score) in zip(nodes, want.scores) {
                XCTAssertEqual(Rendezvous.score(node: node.placementID, weight: 1, key: key), score, accuracy: 1e-9, "\(key) \(node)")
            }
        }
        XCTAssertEqual(Rendezvous.score(node: "n1", weight: 2, key: "acme"), 2 * Rendezvous.score(node: "n1", weight: 1, key: "acme"),
                       accuracy: 1e-12)
    }

    func testReplicasAreDistinctNodesInRankOrder() {
        let nodes = (1...3).map { Node(placementID: "n\($0)") }
        for (advertiser, list) in owners(nodes, replicas: 2) {
            XCTAssertEqual(list.count, 2)
            XCTAssertEqual(Set(list).count, 2, advertiser)
            XCTAssertEqual(list, Array(Rendezvous.rank(nodes, for: advertiser).map(\.placementID).prefix(2)))
        }
        XCTAssertEqual(Rendezvous.rank(nodes, for: "x", replicas: 5).count, 3, "never more owners than nodes")
    }

    /// Each node is first for about a third of the advertisers.
    func testLoadIsEven() {
        let nodes = (1...3).map { Node(placementID: "n\($0)") }
        var first: [String: Int] = [:]
        for list in owners(nodes, replicas: 1).values { first[list[0], default: 0] += 1 }
        for node in nodes { XCTAssertEqual(Double(first[node.placementID] ?? 0), 3_333, accuracy: 300, "\(first)") }
    }

    /// A node of weight 2 among two of weight 1 is first for about half.
    func testWeightsSetShares() {
        let nodes = [Node(placementID: "big", placementWeight: 2), Node(placementID: "a"), Node(placementID: "b")]
        let big = owners(nodes, replicas: 1).values.filter { $0[0] == "big" }.count
        XCTAssertEqual(Double(big), 5_000, accuracy: 300)
    }

    /// Adding a fourth node to three (two replicas each) moves only the
    /// advertisers the new node now owns: about a quarter of owner slots,
    /// and no advertiser moves between the old nodes.
    func testAddingANodeMovesOnlyItsShare() {
        let three = (1...3).map { Node(placementID: "n\($0)") }
        let four = three + [Node(placementID: "n4")]
        let before = owners(three, replicas: 2), after = owners(four, replicas: 2)
        var moved = 0
        for advertiser in advertisers {
            let old = Set(before[advertiser]!), new = Set(after[advertiser]!)
            if old != new {
                moved += 1
                XCTAssertTrue(new.contains("n4"), "\(advertiser) moved between old nodes: \(old) → \(new)")
                XCTAssertEqual(old.intersection(new).count, 1, "one replica stays where it was")
            }
        }
        // n4 takes 2 of 4 slots' share: each advertiser gains n4 with probability 1/2.
        XCTAssertEqual(Double(moved), 5_000, accuracy: 300)
        let slotsMoved = Double(moved) / Double(advertisers.count * 2)
        XCTAssertEqual(slotsMoved, 0.25, accuracy: 0.02, "a quarter of the replicas move")
    }

    /// Removing a node moves only the advertisers it held.
    func testRemovingANodeMovesOnlyItsAdvertisers() {
        let three = (1...3).map { Node(placementID: "n\($0)") }
        let before = owners(three, replicas: 2), after = owners(Array(three.prefix(2)), replicas: 2)
        for advertiser in advertisers where !before[advertiser]!.contains("n3") {
            XCTAssertEqual(before[advertiser], after[advertiser])
        }
    }
}
