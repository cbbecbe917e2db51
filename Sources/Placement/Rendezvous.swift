import Foundation

/// Which match servers of a tier hold an advertiser's list: rendezvous
/// (highest-random-weight) hashing, so that every coordinator and client
/// computes the same owners from the same node list, with nothing to share
/// but that list, and adding or removing a node moves only its own share of
/// advertisers.
///
/// The rule, exactly (for reimplementation in another language):
///
/// 1. For node `n` and advertiser `a`, `h = fnv1a64(utf8(n.id) ‖ 0x00 ‖ utf8(a))`
///    (FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3),
///    then mixed with SplitMix64's finaliser:
///    `h ^= h >> 30; h *= 0xbf58476d1ce4e5b9; h ^= h >> 27; h *= 0x94d049bb133111eb; h ^= h >> 31`
///    (wrapping multiplication).
/// 2. `u = (Double(h >> 11) + 0.5) / 2^53`, in (0, 1).
/// 3. `score = n.weight / -ln(u)`: with weights, node `n` is first for a
///    share `weight / Σ weights` of advertisers (the weighted form of
///    rendezvous hashing, as in Schindelhauer & Schomaker's "Weighted
///    distributed hash tables").
/// 4. Owners are the nodes by score, highest first; equal scores by node id.
///    The first `replicas` are the advertiser's owners, in the order a client
///    tries them.
public enum Rendezvous {
    /// The score of `node` for `key`: the larger, the more the node wants it.
    public static func score(node: String, weight: Double, key: String) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in node.utf8 {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01b3
        }
        h = h &* 0x0000_0100_0000_01b3 // the separator byte 0x00: h ^= 0, then multiply
        for byte in key.utf8 {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01b3
        }
        h ^= h >> 30
        h = h &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 27
        h = h &* 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        let u = (Double(h >> 11) + 0.5) / 9_007_199_254_740_992 // 2^53
        return weight / -log(u)
    }

    /// `nodes` ordered for `key`, best first; `replicas` of them (all when nil).
    public static func rank<Node: PlacementNode>(_ nodes: [Node], for key: String, replicas: Int? = nil) -> [Node] {
        let ranked = nodes.map { (node: $0, score: score(node: $0.placementID, weight: $0.placementWeight, key: key)) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.node.placementID < $1.node.placementID }
            .map(\.node)
        guard let replicas else { return ranked }
        return Array(ranked.prefix(max(0, replicas)))
    }
}

/// A node rendezvous hashing can place keys on: a stable name and a weight
/// (> 0; a node of weight 2 takes twice the share of one of weight 1).
public protocol PlacementNode {
    var placementID: String { get }
    var placementWeight: Double { get }
}
