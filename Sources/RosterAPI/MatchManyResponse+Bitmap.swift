import Foundation

extension MatchManyResponse {
    /// Whether hash `index` of the request is a member: bit `index % 8` of
    /// byte `index / 8` of `matched`, least significant first
    /// (docs/PROTOCOL.md). An index past the bitmap is not a member.
    public func isMatched(_ index: Int) -> Bool {
        guard index >= 0, index >> 3 < matched.count else { return false }
        return (matched[matched.startIndex + index >> 3] >> UInt8(index & 7)) & 1 == 1
    }

    /// One answer per hash of the request, in its order.
    public var matches: [Bool] {
        (0..<Int(count)).map(isMatched)
    }
}
